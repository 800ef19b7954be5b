"""The `fastcnn` command line, run as a user runs it (`python -m fastcnn ...` in a subprocess, from
a directory outside the source tree), the README's operator table, and the shipped example model's
accuracy."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastcnn
from fastcnn import cli

from helpers import assert_close, fastcnn_env

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
ONNX = str(MODELS / "lenet5_digits.onnx")
FCNN = str(MODELS / "lenet5_digits.fcnn")
SAMPLES = str(MODELS / "digits_samples.npz")
README = ROOT / "README.md"
MIN_ACCURACY = 0.97     # the shipped model gets 357/360 = 99.2% on the held-out digits 0-7


@pytest.fixture
def run_cli(tmp_path):
    def run(*args, expect=0):
        r = subprocess.run([sys.executable, "-m", "fastcnn", *map(str, args)], cwd=tmp_path,
                           env=fastcnn_env(), capture_output=True, text=True, timeout=300)
        assert r.returncode == expect, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
        assert "Traceback" not in r.stderr, r.stderr
        if expect == 2 and args and args[0] != "--bogus":
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("fastcnn: error: "), r.stderr
        return r
    return run


def accuracy_line(text):
    m = re.search(r"accuracy: (\d+)/(\d+) = ([\d.]+)% top-1", text)
    assert m, text
    return int(m.group(1)), int(m.group(2))


# ----------------------------------------------------------------------------- run
def test_run_main_job(run_cli):
    out = run_cli("run", FCNN, SAMPLES).stdout
    hits, n = accuracy_line(out)
    assert n == 360 and hits / n >= MIN_ACCURACY
    assert "8 labels: 0, 1, 2, 3, 4, 5, 6, 7" in out
    assert "'x' float32 [360, 1, 32, 32]" in out
    assert "softmax applied" in out and "(labels from 'y')" in out
    rows = [line for line in out.splitlines() if re.match(r"\s+\d+\s+\d\s+(ok|WRONG)\s", line)]
    assert len(rows) == 10  # the first few predictions, top-3 each
    assert all(len(re.findall(r"\d \(\d\.\d{3}\)", r)) == 3 for r in rows)


def test_run_onnx_with_options(run_cli):
    out = run_cli("run", ONNX, SAMPLES, "-k", "1", "--threads", "1", "--show", "2",
                  "--batch", "7").stdout
    assert "; 1 thread\n" in out and "first 2 of 360" in out and "top-1 (probability)" in out
    hits, n = accuracy_line(out)
    assert hits / n >= MIN_ACCURACY


def test_run_all_ten_digits_notes_unknown_classes(run_cli):
    out = run_cli("run", FCNN, SAMPLES, "--x-key", "x_test", "--show", "0").stdout
    hits, n = accuracy_line(out)
    assert n == 450 and "(labels from 'y_test')" in out
    assert "90 of the 450 labels name classes this 8-class model does not have" in out
    assert hits <= 360


def test_run_npy_without_labels_and_probability_outputs(run_cli, tmp_path):
    x = np.load(SAMPLES)["x"][:4]
    np.save(tmp_path / "four.npy", x)
    out = run_cli("run", FCNN, tmp_path / "four.npy", "-k", "2").stdout
    assert "accuracy" not in out and "top-2" in out
    np.save(tmp_path / "one.npy", x[0])  # a single sample without its batch axis
    assert "ran 1 samples" in run_cli("run", FCNN, tmp_path / "one.npy").stdout


def test_run_model_whose_batch_is_fixed_to_1(run_cli, tmp_path):
    # a dynamic batch the graph cannot run (a Reshape to [1, -1] baked in by a tracer): load
    # fixes it to 1 with a warning, printed as one line of the tool's; `run` then feeds the
    # samples one at a time (it failed at load before; a file that declares batch 1 failed at
    # the first call of 4 samples)
    from helpers import onnx_model, save_onnx
    helper = pytest.importorskip("onnx").helper
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Reshape", ["x", "s"], ["f"]),
             helper.make_node("Gemm", ["f", "w"], ["y"], transB=1)]
    w = rng.standard_normal((3, 8)).astype(np.float32)
    path = save_onnx(onnx_model(nodes, {"x": ("N", 2, 4)}, ["y"], {"s": np.array([1, -1], np.int64), "w": w}),
                     str(tmp_path))
    x = rng.standard_normal((4, 2, 4)).astype(np.float32)
    np.save(tmp_path / "four.npy", x)
    r = run_cli("run", path, tmp_path / "four.npy", "-k", "1")
    assert r.stderr.startswith("fastcnn: warning: ") and "the batch is fixed to 1" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "ran 4 samples" in r.stdout and "output 'y' [4, 3]" in r.stdout
    best = (x.reshape(4, 8) @ w.T).argmax(1)
    rows = re.findall(r"^\s+(\d)\s+(\d) \(", r.stdout, re.M)
    assert [(int(i), int(c)) for i, c in rows] == list(enumerate(best))
    # a file that declares batch 1 itself (torch.onnx.export's default, a static shape) too
    static = save_onnx(onnx_model(nodes, {"x": (1, 2, 4)}, ["y"], {"s": np.array([1, -1], np.int64), "w": w}),
                       str(tmp_path))
    r = run_cli("run", static, tmp_path / "four.npy", "-k", "1")
    assert r.stderr == "" and "ran 4 samples" in r.stdout
    rows = re.findall(r"^\s+(\d)\s+(\d) \(", r.stdout, re.M)
    assert [(int(i), int(c)) for i, c in rows] == list(enumerate(best))


def test_probabilities_are_detected_not_softmaxed_twice():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 5.0]], np.float32)
    probs, applied = cli.as_probabilities(logits)
    assert applied and np.allclose(probs.sum(1), 1) and probs[0].argmax() == 0
    again, applied2 = cli.as_probabilities(probs.astype(np.float32))
    assert not applied2 and np.allclose(again, probs, atol=1e-6)
    almost, applied3 = cli.as_probabilities(np.array([[0.5, 0.4]], np.float32))  # sums to 0.9
    assert applied3


def test_pick_samples_key_rules():
    a = {"x": 1, "y": 2, "x_test": 3, "y_test": 4, "input": 5}
    assert cli.pick_samples(a, ["input"]) == ({"input": ("input", 5)}, ("y", 2))
    del a["input"]
    assert cli.pick_samples(a, ["input"]) == ({"input": ("x", 1)}, ("y", 2))
    assert cli.pick_samples(a, ["input"], x_key="x_test") == ({"input": ("x_test", 3)}, ("y_test", 4))
    assert cli.pick_samples(a, ["input"], y_key="y_test")[1] == ("y_test", 4)
    assert cli.pick_samples({"x_test": 3}, ["input"])[1] is None


@pytest.mark.parametrize("args, match", [
    (["run", FCNN, "/no/such.npz"], "no such file"),
    (["run", FCNN, SAMPLES, "--x-key", "nope"], "no input array 'nope'"),
    (["run", FCNN, SAMPLES, "--y-key", "nope"], "no label array 'nope'"),
    (["run", FCNN, SAMPLES, "--threads", "0"], "num_threads"),
    (["run", FCNN, ONNX], "cannot read as .npy/.npz"),
    (["run", "/no/model.onnx", SAMPLES], "no such file"),
    (["info", str(MODELS / "README.md")], "not a valid ONNX model"),
    (["run", FCNN, SAMPLES, "-k", "0"], "-k must be"),
    (["run", FCNN, SAMPLES, "--batch", "-3"], "--batch"),
    (["bench", FCNN, "--runs", "0"], "--runs"),
    (["bench", FCNN, "--shape", "1,x"], "--shape"),
])
def test_errors_are_one_line_and_exit_2(run_cli, args, match):
    assert match in run_cli(*args, expect=2).stderr


def test_wrong_input_shape_is_an_input_error(run_cli, tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((2, 1, 28, 28), np.float32))
    err = run_cli("run", FCNN, tmp_path / "bad.npy", expect=2).stderr
    assert "[2, 1, 28, 28]" in err and "[N, 1, 32, 32]" in err


def test_corrupt_model_exit_2(run_cli, tmp_path):
    data = bytearray(Path(FCNN).read_bytes())
    data[5000] ^= 1
    (tmp_path / "bad.fcnn").write_bytes(bytes(data))
    assert "checksum mismatch" in run_cli("info", tmp_path / "bad.fcnn", expect=2).stderr


def test_usage_errors_exit_2(run_cli):
    r = run_cli("--bogus", expect=2)
    assert "usage:" in r.stderr
    assert fastcnn.__version__ in run_cli("--version").stdout


# ----------------------------------------------------------------------------- info
def test_info(run_cli):
    out = run_cli("info", FCNN).stdout
    for text in ("input  float32 [N, 1, 32, 32]", "logits  float32 [N, 8]",
                 "labels: 8 classes: 0, 1, 2, 3, 4, 5, 6, 7", "preprocessing:",
                 "parameters: 61,536", "FLOPs (batch 1): ", "activation arena (batch 1): ",
                 "naive sum of activations"):
        assert text in out, text
    layers = re.findall(r"^\s+\d+\s+(\S+)\s+(\w+)\s+(\[[^\]]*\])\s+(kernel|view|folded)$", out, re.M)
    ops = [op for _, op, _, _ in layers]
    assert ops.count("Conv") == 2 and ops.count("MaxPool") == 2 and ops[-1] == "Gemm"
    assert layers[0][2] == "[N, 6, 28, 28]" and layers[-1][2] == "[N, 8]"
    flops = int(re.search(r"FLOPs \(batch 1\): ([\d,]+)", out).group(1).replace(",", ""))
    convs = 2 * (6 * 28 * 28 * 25 + 16 * 10 * 10 * 150)      # multiply-adds of the two convs
    dense = 2 * (400 * 120 + 120 * 84 + 84 * 8)
    assert convs + dense <= flops <= 1.2 * (convs + dense)


def test_info_onnx(run_cli):
    pytest.importorskip("onnx")
    out = run_cli("info", ONNX).stdout
    assert "parameters: 61,536" in out and "labels: 8 classes" in out


def test_info_lists_unsupported_nodes(run_cli, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["x"], ["a"], name="first"),
             helper.make_node("Hardmax", ["a"], ["y"], name="strange")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.save(proto, tmp_path / "m.onnx")
    r = run_cli("info", tmp_path / "m.onnx", expect=2)
    assert re.search(r"strange\s+Hardmax\s+UNSUPPORTED", r.stdout)
    assert re.search(r"first\s+Relu\s*$", r.stdout, re.M)
    assert "Hardmax" in r.stderr


def test_info_lists_unsupported_nodes_of_fcnn(run_cli, tmp_path):
    from fastcnn.format import fcnn
    from fastcnn.ir.graph import Graph, Node, TensorSpec

    g = Graph("g", [TensorSpec("x", (None, 3))], [TensorSpec("y", (None, 3))],
              [Node("Relu", "ok", ["x"], ["a"]), Node("Frobnicate", "odd", ["a"], ["y"])]).check()
    fcnn.save(g, str(tmp_path / "m.fcnn"))
    r = run_cli("info", tmp_path / "m.fcnn", expect=2)
    assert re.search(r"odd\s+Frobnicate\s+UNSUPPORTED <- error", r.stdout)
    assert "x  float32 [N, 3]" in r.stdout


# ----------------------------------------------------------------------------- convert
def test_convert_with_labels(run_cli, tmp_path):
    pytest.importorskip("onnx")
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven"]
    (tmp_path / "labels.txt").write_text("\n".join(names) + "\n\n")
    out = run_cli("convert", ONNX, tmp_path / "m.fcnn", "--labels", tmp_path / "labels.txt").stdout
    assert "wrote" in out and "8 labels" in out
    with fastcnn.load(tmp_path / "m.fcnn") as m:
        assert m.labels == names
    run_out = run_cli("run", tmp_path / "m.fcnn", SAMPLES, "--show", "1").stdout
    assert "8 labels: zero, one" in run_out
    (tmp_path / "labels.json").write_text(json.dumps(names))
    run_cli("convert", FCNN, tmp_path / "m2.fcnn", "--labels", tmp_path / "labels.json")
    with fastcnn.load(tmp_path / "m2.fcnn") as m:
        assert m.labels == names


def test_convert_errors(run_cli, tmp_path):
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    err = run_cli("convert", FCNN, tmp_path / "m.fcnn", "--labels", tmp_path / "three.txt", expect=2).stderr
    assert "3 labels" in err and "8 classes" in err
    assert not (tmp_path / "m.fcnn").exists()
    assert "cannot read labels" in run_cli("convert", FCNN, tmp_path / "m.fcnn", "--labels",
                                           tmp_path / "none.txt", expect=2).stderr
    assert "cannot write" in run_cli("convert", FCNN, tmp_path / "no" / "m.fcnn", expect=2).stderr


# ----------------------------------------------------------------------------- bench
def test_bench(run_cli):
    out = run_cli("bench", FCNN, "--runs", "3", "--warmup", "1", "--batch", "4", "--threads", "1").stdout
    assert "input [4, 1, 32, 32]" in out and "1 thread;" in out
    assert re.search(r"3 runs: median [\d.]+ ms.*; [\d,.]+ images/s", out)


# ----------------------------------------------------------------------------- ops and README
def test_ops_plain_and_markdown(run_cli):
    plain = run_cli("ops").stdout
    assert re.search(r"^Conv\s+yes\s+kernel\s", plain, re.M)
    assert re.search(r"^Shape\s+yes\s+fold-only\s", plain, re.M)
    md = run_cli("ops", "--markdown").stdout
    assert md == cli.ops_markdown()
    assert "| Conv | yes | kernel |" in md and "| MinPool | - | kernel |" in md
    from fastcnn.ir.ops import OPS
    for op in OPS:
        assert f"| {op} |" in md, op


def test_readme_operator_table_is_current():
    text = README.read_text(encoding="utf-8")
    start = text.index(cli.OPS_BEGIN) + len(cli.OPS_BEGIN)
    end = text.index(cli.OPS_END)
    assert text[start:end].strip() == cli.ops_markdown().strip(), (
        "README.md's operator table is out of date: run `python -m fastcnn ops --update README.md`")


def test_ops_update_rewrites_only_the_table(run_cli, tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{cli.OPS_BEGIN}\nold table\n{cli.OPS_END}\noutro\n")
    assert "updated" in run_cli("ops", "--update", doc).stdout
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{cli.OPS_END}\noutro\n")
    assert "old table" not in text and "| Conv |" in text
    assert "already up to date" in run_cli("ops", "--update", doc).stdout
    (tmp_path / "plain.md").write_text("no markers")
    assert "markers" in run_cli("ops", "--update", tmp_path / "plain.md", expect=2).stderr


# ----------------------------------------------------------------------------- the shipped model
def test_shipped_onnx_and_fcnn_agree_and_reach_the_quoted_accuracy():
    pytest.importorskip("onnx")
    d = np.load(SAMPLES)
    x, y = d["x"], d["y"]
    with fastcnn.load(ONNX) as a, fastcnn.load(FCNN) as b:
        ya, yb = a(x), b(x)
    assert np.array_equal(ya, yb)
    acc = float((yb.argmax(1) == y).mean())
    quoted = re.search(r"accuracy: (\d+)/360 = ", README.read_text(encoding="utf-8"))
    assert quoted, "README.md quotes no accuracy line"
    assert acc >= MIN_ACCURACY
    assert acc * 360 >= int(quoted.group(1)) - 1, "accuracy fell below the README's figure"
    try:
        import onnxruntime as ort
    except ImportError:
        return
    want = ort.InferenceSession(ONNX, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert_close(yb, want)
    assert float((want.argmax(1) == y).mean()) == acc


def test_samples_layout():
    d = np.load(SAMPLES)
    assert d["x"].dtype == np.float32 and d["x"].shape[1:] == (1, 32, 32)
    assert set(d["y"].tolist()) == set(range(8)) and set(d["y_test"].tolist()) == set(range(10))
    assert set(d["y_new"].tolist()) == set(range(10)) and (d["y_new"] >= 8).sum() >= 48
    assert -1.0 <= d["x_test"].min() and d["x_test"].max() <= 1.0
    # x/y are the 0-7 part of the test split; x_new shares no image with the test split
    assert len(d["x"]) == (d["y_test"] < 8).sum()
    test_rows = {row.tobytes() for row in d["x_test"]}
    assert all(row.tobytes() in test_rows for row in d["x"])
    assert not any(row.tobytes() in test_rows for row in d["x_new"])


def test_console_script_runs_the_readme_command(tmp_path):
    script = shutil.which("fastcnn", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the fastcnn script is not installed (in-place build)")
    r = subprocess.run([script, "run", FCNN, SAMPLES], cwd=tmp_path, env=fastcnn_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    hits, n = accuracy_line(r.stdout)
    assert hits / n >= MIN_ACCURACY

"""The benchmark tools: zoo models build, load in fastcnn and match onnxruntime; FLOP counts,
caching, the profiler and a quick run of bench/run.py work. Correctness only, never timings."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import assert_close

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import fastcnn  # noqa: E402

from bench_support import BENCH_DIR, TEST_SIZE, load_bench_module, zoo  # noqa: E402
from bench_support import ort_run as _ort_run  # noqa: E402

flops = load_bench_module("flops")


@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_zoo_model_matches_onnxruntime(name, zoo_files, threads):
    model = fastcnn.load(zoo_files[name], num_threads=threads)
    for batch in (1, 2):
        x = zoo.sample_input(name, batch, seed=batch, size=TEST_SIZE[name])
        got = model.run(None, {zoo.INPUT_NAME: x})[0]
        ref = _ort_run(zoo_files[name], x)
        assert got.shape == (batch, 1000 if name in zoo.RESIZABLE else 10)
        assert np.isfinite(ref).all() and np.abs(ref).max() > 0.1, "degenerate model output"
        assert_close(got, ref, f"{name} batch {batch}")


@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_zoo_model_structure(name, zoo_files):
    m = onnx.load(zoo_files[name])
    onnx.checker.check_model(m)
    opset = {o.domain: o.version for o in m.opset_import}[""]
    assert opset >= 13
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value"), "batch must be dynamic"
    ops = [n.op_type for n in m.graph.node]
    expected = {  # (Conv, BatchNormalization, Gemm, Add, Clip) in the standard topologies
        "lenet5": (2, 0, 3, 0, 0),
        "edge_cnn": (3, 3, 1, 0, 0),
        "resnet18": (20, 20, 1, 8, 0),
        "mobilenetv2": (52, 52, 1, 10, 35),
        "efficientnet_b0": (81, 49, 1, 9, 0),
    }[name]
    assert tuple(ops.count(op) for op in ("Conv", "BatchNormalization", "Gemm", "Add", "Clip")) == expected
    # BN stays a separate node after every Conv it normalises, so folding has work to do.
    consumers = {}
    for n in m.graph.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n.op_type)
    if expected[1]:
        conv_outs = [n.output[0] for n in m.graph.node if n.op_type == "Conv"]
        assert sum(consumers.get(o) == ["BatchNormalization"] for o in conv_outs) == expected[1]
    # Non-trivial BN statistics: no identity normalisation hiding in the weights.
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "BatchNormalization":
            gamma, beta, mean, var = (inits[x] for x in n.input[1:])
            assert gamma.std() > 0.05 and beta.std() > 0.01 and mean.std() > 0.01 and var.std() > 0.05


def test_flops_of_full_size_models_match_published_counts():
    # torchvision lists ResNet-18 at 1.81 GMACs and MobileNetV2 at 0.30 GMACs for 224x224.
    assert flops.onnx_flops(zoo.build("resnet18"), (1, 3, 224, 224)) == 2 * 1_814_073_344
    mb = flops.onnx_flops(zoo.build("mobilenetv2"), (1, 3, 224, 224))
    assert 2 * 299e6 < mb < 2 * 302e6
    # LeNet-5 by hand: conv1 6*28*28*25, conv2 16*10*10*150, dense 400*120 + 120*84 + 84*10
    lenet = 6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 400 * 120 + 120 * 84 + 84 * 10
    assert flops.onnx_flops(zoo.build("lenet5"), (3, 1, 28, 28)) == 2 * 3 * lenet


def test_flop_rules_on_small_cases():
    # grouped conv: out (2, 4, 3, 3), each output uses c_in/group=2 channels of a 3x3 kernel
    assert flops.node_flops("Conv", {"group": 2}, [(2, 4, 5, 5), (4, 2, 3, 3)], [(2, 4, 3, 3)]) == 2 * 72 * 18
    assert flops.node_flops("Gemm", {"transA": 1}, [(7, 5), (7, 3)], [(5, 3)]) == 2 * 5 * 3 * 7
    assert flops.node_flops("Gemm", {}, [(5, 7), (7, 3)], [(5, 3)]) == 2 * 5 * 3 * 7
    assert flops.node_flops("MatMul", {}, [(2, 5, 7), (7, 3)], [(2, 5, 3)]) == 2 * 30 * 7
    assert flops.node_flops("Relu", {}, [(5, 7)], [(5, 7)]) == 0


def test_fastcnn_layer_flops_equal_onnx_count(zoo_files):
    model = fastcnn.load(zoo_files["edge_cnn"])
    layers = flops.fastcnn_layers(model, (3, 3, 32, 32))
    assert sum(f for f, _, _ in layers.values()) == flops.onnx_flops(zoo_files["edge_cnn"], (3, 3, 32, 32))


def test_ensure_reuses_matching_file_and_rebuilds_stale_one(tmp_path):
    path = zoo.ensure("lenet5", str(tmp_path))
    stamp = os.stat(path).st_mtime_ns
    assert zoo.ensure("lenet5", str(tmp_path)) == path
    assert os.stat(path).st_mtime_ns == stamp, "a file with a matching hash must be reused"
    with open(path + ".hash", "w") as f:
        f.write("stale\n")
    with open(path, "wb") as f:
        f.write(b"not an onnx file")
    zoo.ensure("lenet5", str(tmp_path))
    onnx.checker.check_model(onnx.load(path))
    with open(path + ".hash") as f:
        assert f.read().strip() == zoo.builder_hash("lenet5")


def test_builds_are_deterministic():
    a, b = zoo.build("edge_cnn"), zoo.build("edge_cnn")
    assert a.SerializeToString() == b.SerializeToString()


def test_profile_accounts_for_every_step(zoo_files):
    profile = load_bench_module("profile_model")
    model = fastcnn.load(zoo_files["lenet5"], num_threads=1)
    plan = model.plan_for([(2, 1, 28, 28)])
    layers, run_ms, reps = profile.profile(model, (2, 1, 28, 28), seconds=0.0, min_reps=2)
    assert reps == 2 and run_ms > 0
    assert len(layers) == len({n.name for n in plan.step_nodes})
    assert [r["ms"] for r in layers] == sorted((r["ms"] for r in layers), reverse=True)
    assert sum(r["flops"] for r in layers) == flops.onnx_flops(zoo_files["lenet5"], (2, 1, 28, 28))
    lines = profile.table(layers, sum(r["ms"] for r in layers), top=3)
    assert len(lines) == 2 + 3 and "Conv" in "".join(lines)


def test_peak_rss_child_does_not_inherit_parent_peak(zoo_files):
    # Linux carries ru_maxrss over fork+exec; peak_rss.py must report the child's own peak.
    code = ("import numpy as np, subprocess, sys\n"
            "big = np.ones(400 * 2**20 // 8)\n"
            f"print(subprocess.run([sys.executable, {os.path.join(BENCH_DIR, 'peak_rss.py')!r}, 'ort', "
            f"{zoo_files['lenet5']!r}, '--shape', '1,1,28,28'], capture_output=True, text=True, "
            "check=True).stdout)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rss = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0 < rss["import_mib"] <= rss["peak_mib"] < 350


def test_run_quick_lenet5(tmp_path):
    report = tmp_path / "report.md"
    from helpers import fastcnn_env
    out = subprocess.run([sys.executable, os.path.join(BENCH_DIR, "run.py"), "--quick", "--models", "lenet5",
                          "--out", str(report)], capture_output=True, text=True, timeout=300,
                         env=fastcnn_env(), cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    text = report.read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| lenet5 |")]
    assert len(rows) == 2 * 2 + 1, text  # batch 1/16 x threads 1/2, plus the load/memory row
    assert "FAIL" not in text
    assert "GFLOP/s on 1 thread" in text

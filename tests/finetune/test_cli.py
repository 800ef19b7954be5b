"""`python -m fastcnn.finetune.cli` (the `fastcnn finetune` command) run as a subprocess on an
.npz and on a folder of PNG images."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastcnn
from helpers import fastcnn_env, ir_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fastcnn.finetune.cli", *map(str, args)],
                          capture_output=True, text=True, env=fastcnn_env(), timeout=300,
                          cwd=os.path.dirname(ROOT))


def image_model(path, channels, labels=None, n_classes=2):
    rng = np.random.default_rng(0)
    nodes = [("Conv", ["x", "Wc", "Bc"], ["c"], {"pads": [1, 1, 1, 1]}), ("Relu", ["c"], ["r"]),
             ("GlobalAveragePool", ["r"], ["g"]), ("Flatten", ["g"], ["f"]),
             ("Gemm", ["f", "W", "B"], ["z"]), ("Softmax", ["z"], ["p"])]
    inits = {"Wc": (rng.normal(size=(6, channels, 3, 3)) * 0.5).astype(np.float32),
             "Bc": np.zeros(6, np.float32), "W": (rng.normal(size=(6, n_classes)) * 0.5).astype(np.float32),
             "B": np.zeros(n_classes, np.float32)}
    model = ir_model(nodes, {"x": (None, channels, 8, 8)}, ["p"], inits,
                     metadata={"labels": labels} if labels else None)
    model.save(path)
    return path


def test_npz(tmp_path):
    model = image_model(tmp_path / "m.fcnn", 1)
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 12)
    x = (rng.normal(size=(36, 1, 8, 8)) + y[:, None, None, None]).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    out = tmp_path / "out.fcnn"
    r = run_cli(model, "--data", tmp_path / "d.npz", "--classes", 3, "--epochs", 4, "-o", out,
                "--val-split", 0.25, "--lr", 0.05)
    assert r.returncode == 0, r.stderr
    assert "validation (9 samples): loss" in r.stdout and "accuracy" in r.stdout
    assert "epoch 4/4" in r.stderr  # per-epoch progress on stderr
    tuned = fastcnn.load(out)
    assert tuned.outputs[0].shape == (None, 3)
    assert tuned.run(None, {"x": x[:5]})[0].shape == (5, 3)


def _png_folder(root, classes, size, mode):
    from PIL import Image
    colors = {"cat": (250, 20, 20), "dog": (20, 250, 20), "eel": (20, 20, 250)}
    rng = np.random.default_rng(2)
    for name in classes:
        os.makedirs(root / name)
        for i in range(6):
            base = np.array(colors[name], np.float64)
            img = np.clip(base + rng.normal(scale=20, size=size + (3,)), 0, 255).astype(np.uint8)
            Image.fromarray(img, "RGB").convert(mode).save(root / name / f"{i}.png")
    (root / "cat" / "notes.txt").write_text("not an image")


@pytest.mark.parametrize("channels", [3, 1])
def test_image_folder(tmp_path, channels):
    pytest.importorskip("PIL")
    model = image_model(tmp_path / "m.fcnn", channels, labels=["cat", "dog"])
    _png_folder(tmp_path / "imgs", ["eel", "dog", "cat"], (11, 13), "RGB" if channels == 3 else "L")
    out = tmp_path / "out.fcnn"
    r = run_cli(model, "--data", tmp_path / "imgs", "--epochs", 3, "-o", out, "--val-split", 0.2,
                "--mean", "0.5", "--std", "0.25", "--no-progress", "--channel-order", "BGR")
    assert r.returncode == 0, r.stderr
    assert "(2 -> 3 classes)" in r.stdout and "validation (4 samples)" in r.stdout
    assert r.stderr == ""  # --no-progress: nothing on stderr
    tuned = fastcnn.load(out)
    assert tuned.labels == ["cat", "dog", "eel"]  # existing labels keep their index, eel is new


def test_errors_exit_nonzero_with_a_message(tmp_path):
    model = image_model(tmp_path / "m.fcnn", 1)
    r = run_cli(model, "--data", tmp_path / "missing.npz", "-o", tmp_path / "o.fcnn")
    assert r.returncode == 2 and "no such file or folder" in r.stderr
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 1, 8, 8), np.float32), labels=np.zeros(4))
    r = run_cli(model, "--data", tmp_path / "bad.npz", "-o", tmp_path / "o.fcnn")
    assert r.returncode == 2 and "expected arrays 'x' and 'y'" in r.stderr
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 1, 8, 8), np.float32), y=np.array([0, 1, 2, 3]))
    r = run_cli(model, "--data", tmp_path / "d.npz", "--classes", 2, "-o", tmp_path / "o.fcnn")
    assert r.returncode == 2 and "labels up to 3" in r.stderr
    assert not (tmp_path / "o.fcnn").exists()


def test_add_parser_registers_the_command():
    import argparse
    from fastcnn.finetune import cli
    parser = argparse.ArgumentParser(prog="fastcnn")
    sub = parser.add_subparsers(dest="command")
    cli.add_parser(sub)
    args = parser.parse_args(["finetune", "m.onnx", "--data", "d.npz", "--classes", "10",
                              "--epochs", "5", "-o", "out.fcnn", "--size", "28x32"])
    assert args.func is cli.main and args.classes == 10 and args.size == (28, 32)


def test_readme_main_job_adds_digits_8_and_9(tmp_path):
    """The README's first command, through the main CLI: accuracy before and after on held-out data."""
    models = os.path.join(ROOT, "models")
    samples = os.path.join(models, "digits_samples.npz")
    env = fastcnn_env()
    out = tmp_path / "lenet10.fcnn"
    r = subprocess.run([sys.executable, "-m", "fastcnn", "finetune",
                        os.path.join(models, "lenet5_digits.fcnn"), "--data", samples,
                        "--x-key", "x_new", "--y-key", "y_new", "--classes", "10",
                        "--train-layers", "3", "--lr", "1e-4", "--epochs", "60", "--batch-size", "16",
                        "--class-weights", "balanced", "--val-split", "0", "--eval", samples,
                        "-o", str(out), "--no-progress"],
                       capture_output=True, text=True, env=env, timeout=300, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    before = [l for l in r.stdout.splitlines() if l.startswith("held-out before")]
    after = [l for l in r.stdout.splitlines() if l.startswith("held-out after")]
    assert before and "added classes: 0.00%" in before[0]
    added = float(after[0].split("added classes: ")[1].rstrip("%)"))
    assert added >= 90.0
    assert fastcnn.load(out).labels == [str(d) for d in range(10)]

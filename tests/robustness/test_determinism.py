"""The same input gives bit-identical outputs on every run, with 1 or 2 threads, and in a fresh
process: kernels split work across threads by output element (each output is summed in one fixed
order by one thread), never by splitting a sum.

Across batch sizes results are equal within the project tolerance, and bit-identical for every
op but the dense layers: Gemm/MatMul pick their kernel by the number of rows (a single row takes
a matrix-vector path that sums in another order), so a sample can differ in the last bits
depending on the batch it is part of (BATCH_SENSITIVE)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastcnn
from helpers import assert_close, ir_model, rand

MODELS = Path(__file__).resolve().parents[2] / "models"
RNG = np.random.default_rng(2024)


def _graphs():
    """name -> (nodes, inputs, initializers, input shape) covering the reducing kernels: conv
    (direct, grouped, 1-D), gemm, batched matmul, pools, softmax, reductions, normalisations."""
    r = RNG
    return {
        "conv": ([("Conv", ["x", "w", "b"], ["c"], {"pads": [1, 2, 1, 0], "strides": [1, 2]}),
                  ("Relu", ["c"], ["y"])], {"w": rand(r, 13, 5, 3, 3), "b": rand(r, 13)}, (3, 5, 17, 19)),
        "grouped conv": ([("Conv", ["x", "w"], ["y"], {"group": 5, "dilations": [2, 2], "pads": [2, 2, 2, 2]})],
                         {"w": rand(r, 10, 1, 3, 3)}, (2, 5, 15, 11)),
        "conv1d": ([("Conv", ["x", "w"], ["y"], {"pads": [3, 3]})], {"w": rand(r, 7, 4, 7)}, (3, 4, 101)),
        "gemm": ([("Gemm", ["x", "w", "b"], ["y"], {"transB": 1, "alpha": 0.7})],
                 {"w": rand(r, 33, 300), "b": rand(r, 33)}, (37, 300)),
        "batched matmul": ([("MatMul", ["x", "x2"], ["y"])], {"x2": rand(r, 1, 64, 29)}, (3, 31, 64)),
        "pools": ([("AveragePool", ["x"], ["a"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
                   ("MaxPool", ["a"], ["m"], {"kernel_shape": [2, 2], "strides": [2, 2]}),
                   ("GlobalAveragePool", ["m"], ["y"])], {}, (3, 6, 20, 21)),
        "softmax and reductions": ([("Softmax", ["x"], ["s"], {"axis": 1}),
                                    ("ReduceSum", ["s", "ax"], ["y"], {"keepdims": 0})],
                                   {"ax": np.array([2, 3], np.int64)}, (4, 9, 13, 17)),
        "normalisations": ([("LayerNormalization", ["x", "g"], ["l"], {"axis": -2}),
                            ("InstanceNormalization", ["l", "s", "b"], ["y"])],
                           {"g": rand(r, 13, 17), "s": rand(r, 9), "b": rand(r, 9)}, (3, 9, 13, 17)),
    }


GRAPHS = _graphs()
BATCH_SENSITIVE = {"gemm"}  # kernel chosen by row count, see the module docstring


@pytest.mark.parametrize("name", list(GRAPHS))
def test_op_graphs_are_bit_identical_across_runs_threads_and_batches(name):
    nodes, inits, shape = GRAPHS[name]
    x = rand(np.random.default_rng(7), *shape)
    outs, singles = [], []
    for threads in (1, 2, 1, 2):
        m = ir_model(nodes, {"x": (None,) + shape[1:]}, ["y"], inits, num_threads=threads)
        for _ in range(2):
            outs.append(m(x))
        singles.append(np.concatenate([m(x[i:i + 1]) for i in range(len(x))]))
    for o in outs[1:] + singles[1:]:
        assert o.dtype == outs[0].dtype and o.shape == outs[0].shape
    for o in outs[1:]:
        assert np.array_equal(o, outs[0]), f"max difference {np.abs(o - outs[0]).max():.3g}"
    for o in singles[1:]:
        assert np.array_equal(o, singles[0]), f"max difference {np.abs(o - singles[0]).max():.3g}"
    # a sample's result does not depend on the other samples of its batch
    if name in BATCH_SENSITIVE:
        assert_close(singles[0], outs[0])
    else:
        assert np.array_equal(singles[0], outs[0]), f"max difference {np.abs(singles[0] - outs[0]).max():.3g}"


def _lenet_outputs(threads):
    data = np.load(MODELS / "digits_samples.npz")
    with fastcnn.load(str(MODELS / "lenet5_digits.fcnn"), num_threads=threads) as m:
        return [m(data["x"]) for _ in range(3)] + [m(data["x"][:7])]


def test_shipped_model_is_bit_identical_across_runs_and_threads():
    a = _lenet_outputs(1)
    b = _lenet_outputs(2)
    for o in a[1:3] + b[:3]:
        assert np.array_equal(o, a[0])
    assert np.array_equal(a[3], b[3])
    assert_close(a[3], a[0][:7])  # another batch size: equal within tolerance (dense layers)


def test_shipped_model_is_bit_identical_in_a_fresh_process(tmp_path):
    want = _lenet_outputs(2)[0]
    out = tmp_path / "out.npy"
    code = ("import sys, numpy as np, fastcnn\n"
            "d = np.load(sys.argv[1])\n"
            "m = fastcnn.load(sys.argv[2], num_threads=2)\n"
            "np.save(sys.argv[3], m(d['x']))\n")
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastcnn.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    r = subprocess.run([sys.executable, "-c", code, str(MODELS / "digits_samples.npz"),
                        str(MODELS / "lenet5_digits.fcnn"), str(out)], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(out), want)


def test_onnx_and_fcnn_copies_agree_bit_for_bit():
    pytest.importorskip("onnx")
    data = np.load(MODELS / "digits_samples.npz")
    with fastcnn.load(str(MODELS / "lenet5_digits.onnx"), num_threads=2) as a, \
            fastcnn.load(str(MODELS / "lenet5_digits.fcnn"), num_threads=1) as b:
        assert np.array_equal(a(data["x"]), b(data["x"]))

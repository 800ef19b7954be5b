"""The worked examples of DESIGN.md, each through a one-node graph."""
import numpy as np
import pytest

import fastcnn
from helpers import onnx_model, run_fastcnn_onnx
from oputil import node, run_op
from reference import conv2d_loops, out_size


def test_conv_cross_correlation_worked_example():
    x = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.float32).reshape(1, 1, 3, 3)
    w = np.array([[1, 2], [3, 4]], np.float32).reshape(1, 1, 2, 2)
    got = run_op("Conv", {"x": x}, consts={"w": w})[0]
    assert got[0, 0].tolist() == [[37, 47], [67, 77]]
    flipped = run_op("Conv", {"x": x}, consts={"w": w[:, :, ::-1, ::-1].copy()})[0]
    assert flipped[0, 0].tolist() == [[23, 33], [53, 63]]
    assert conv2d_loops(x[0, 0], w[0, 0]).tolist() == [[37, 47], [67, 77]]
    onnx_got = run_fastcnn_onnx(onnx_model([node("Conv", ["x", "w"])], {"x": x.shape}, ["y"], {"w": w}, opset=13), {"x": x})
    assert onnx_got[0][0, 0].tolist() == [[37, 47], [67, 77]]


def test_pool_worked_examples():
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
    a = {"kernel_shape": [2, 2], "strides": [2, 2]}
    assert run_op("MaxPool", {"x": x}, a)[0][0, 0].tolist() == [[6, 8], [14, 16]]
    assert run_op("AveragePool", {"x": x}, a)[0][0, 0].tolist() == [[3.5, 5.5], [11.5, 13.5]]
    assert run_op("MinPool", {"x": x}, a)[0][0, 0].tolist() == [[1, 3], [9, 11]]


@pytest.mark.parametrize("w,k,s,pb,pe,d,ceil", [(7, 3, 2, 1, 1, 1, 0), (7, 3, 2, 1, 1, 1, 1), (5, 2, 2, 1, 1, 1, 1),
                                                (9, 3, 3, 0, 2, 2, 0), (3, 5, 1, 1, 1, 1, 0), (6, 1, 4, 0, 0, 1, 1)])
def test_output_size_formula(w, k, s, pb, pe, d, ceil):
    """floor((W + pb + pe - d*(K-1) - 1) / S) + 1 (ceil with ceil_mode, last window starting
    inside the input or the begin padding)."""
    x = np.zeros((1, 1, 1, w), np.float32)
    got = run_op("MaxPool", {"x": x}, {"kernel_shape": [1, k], "strides": [1, s], "pads": [0, pb, 0, pe],
                                        "dilations": [1, d], "ceil_mode": ceil})[0]
    assert got.shape[-1] == out_size(w, k, s, pb, pe, d, bool(ceil))

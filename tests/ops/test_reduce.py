"""Reduce* at run time (ReduceStep chains over non-adjacent axes) and the ONNX axes forms
(attribute before opset 13/18, input after), against numpy and onnxruntime."""
import numpy as np
import pytest

import fastcnn
from fastcnn._kernels import reduce as reduce_kernels
from helpers import assert_close, rand
from oputil import node, onnx_vs_ort, run_op
from reference import reduce

RNG = np.random.default_rng(2024)
OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
       "ReduceSumSquare", "ReduceLogSumExp"]
AXES = [[1], [0], [3], [2, 3], [1, 3], [0, 2], [-1, 0], [0, 1, 2, 3], [1, 2, 3], None]


def _x(op, *shape):
    lo, hi = (0.7, 1.3) if op == "ReduceProd" else (-2, 2)
    return rand(RNG, *shape, lo=lo, hi=hi)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("axes", AXES, ids=str)
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce(op, axes, keepdims, threads):
    x = _x(op, 3, 13, 3, 5)
    consts = {"a": np.array(axes, np.int64)} if axes is not None else {}
    got = run_op(op, {"x": x}, {"keepdims": keepdims}, consts=consts, threads=threads)[0]
    assert_close(got, reduce(x, op, axes, bool(keepdims)), f"{op} {axes}")


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("axes", [[1], [2, 3], [0, 2], [3]], ids=str)
def test_reduce_large_parallel(op, axes, threads):
    x = _x(op, 3, 13, 33, 35) if op != "ReduceProd" else _x(op, 3, 13, 33, 35) ** 0.01
    got = run_op(op, {"x": x}, consts={"a": np.array(axes, np.int64)}, threads=threads)[0]
    assert_close(got, reduce(x, op, axes))


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax", "ReduceL2"])
def test_reduce_layouts(op, layout):
    x = _x(op, 3, 13, 3, 5)
    got = run_op(op, {"x": x}, consts={"a": np.array([1, 3], np.int64)}, layout=layout)[0]
    assert_close(got, reduce(x, op, [1, 3]))


def test_reduce_wide_inner_blocks():
    # inner > the kernel's 256-column block, and not a multiple of it
    x = rand(RNG, 2, 7, 600)
    for op in OPS[:4]:
        got = run_op(op, {"x": x}, consts={"a": np.array([1], np.int64)})[0]
        assert_close(got, reduce(x, op, [1]), op)


@pytest.mark.parametrize("op", OPS)
def test_reduce_nan_propagates(op):
    x = _x(op, 2, 3, 4)
    x[1, 2, 3] = np.nan
    x[0, 0, 0] = np.inf if op not in ("ReduceProd",) else 2.0
    got = run_op(op, {"x": x}, consts={"a": np.array([2], np.int64)})[0]
    ref = reduce(x, op, [2])
    assert np.isnan(got[1, 2, 0])
    assert_close(got, ref)


def test_reduce_over_size_one_axes():
    x = rand(RNG, 3, 1, 5, 1)
    for op in OPS:
        got = run_op(op, {"x": x}, {"keepdims": 0}, consts={"a": np.array([1, 3], np.int64)})[0]
        assert_close(got, reduce(x, op, [1, 3], False), op)


def test_noop_with_empty_axes():
    x = rand(RNG, 3, 13, 3, 5)
    got = run_op("ReduceSum", {"x": x}, {"noop_with_empty_axes": 1})[0]
    assert_close(got, x)
    got = run_op("ReduceSum", {"x": x}, {"noop_with_empty_axes": 1}, consts={"a": np.zeros(0, np.int64)})[0]
    assert_close(got, x)
    got = run_op("ReduceSum", {"x": x}, {"keepdims": 0}, consts={"a": np.zeros(0, np.int64)})[0]
    assert_close(got, reduce(x, "ReduceSum", None, False))


@pytest.mark.parametrize("op", OPS)
def test_reduce_vs_onnxruntime_opsets(op):
    x = _x(op, 3, 13, 3, 5)
    for opset in (11, 13, 18):
        axes_as_input = opset >= 18 or (opset >= 13 and op == "ReduceSum")
        if axes_as_input:
            n, inits = node(op, ["x", "a"], keepdims=0), {"a": np.array([1, 3], np.int64)}
        else:
            n, inits = node(op, ["x"], axes=[1, 3], keepdims=0), {}
        got, ref = onnx_vs_ort(n, {"x": x}, inits, opset=opset)
        assert_close(got[0], ref[0], f"{op} opset {opset}")
    got, ref = onnx_vs_ort(node(op, ["x"]), {"x": x}, opset=13)   # no axes: all of them
    assert_close(got[0], ref[0], f"{op} all axes")


def test_reduce_bad_axes():
    with pytest.raises(fastcnn.GraphError, match=r"node 'reducesum0' \(ReduceSum\): axes=4 is out of range for rank 4"):
        run_op("ReduceSum", {"x": rand(RNG, 3, 13, 3, 5)}, consts={"a": np.array([1, 4], np.int64)})


def test_reduce_max_over_empty_axis_is_refused():
    from fastcnn.ir.graph import Graph, Node, TensorSpec
    from fastcnn.ir.infer import infer_graph
    g = Graph("t", [], [TensorSpec("y", ())], [Node("ReduceMax", "r", ["x", "a"], ["y"])],
              {"x": np.zeros((2, 0), np.float32), "a": np.array([1], np.int64)})
    with pytest.raises(fastcnn.GraphError, match=r"cannot take ReduceMax over an empty axis of \[2, 0\]"):
        infer_graph(g, {})


@pytest.mark.parametrize("kind,expect", [("SUM", 0.0), ("MEAN", np.nan), ("PROD", 1.0), ("L2", 0.0),
                                         ("LOGSUMEXP", -np.inf)])
def test_reduce_step_empty_length(kind, expect):
    """A zero-length reduction writes the identity and reads nothing."""
    out = np.full(6, 7.0, np.float32)
    step = reduce_kernels.ReduceStep(np.zeros(0, np.float32), out, 2, 0, 3, reduce_kernels.REDUCE_CODES[kind])
    step()
    assert np.array_equal(out, np.full(6, expect, np.float32), equal_nan=True)


def test_reduce_step_checks_sizes():
    with pytest.raises(ValueError, match="ReduceStep"):
        reduce_kernels.ReduceStep(np.zeros(10, np.float32), np.zeros(2, np.float32), 2, 3, 1, 0)


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin", "ReduceLogSumExp", "ReduceSum", "ReduceProd", "ReduceL2"])
@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 8, 9])
def test_reduce_contiguous_rows_every_nan_position(op, length):
    """inner == 1 takes the unrolled row path: a NaN (or inf) in any lane or in the tail counts."""
    for pos in range(length):
        for special in (np.nan, np.inf, -np.inf):
            x = rand(RNG, 2, length, lo=0.5, hi=1.5)
            x[1, pos] = special
            got = run_op(op, {"x": x}, consts={"a": np.array([1], np.int64)})[0]
            assert_close(got, reduce(x, op, [1]), f"{op} length {length} pos {pos} {special}")

"""Pooling: MaxPool, MinPool, AveragePool, LpPool, Global{Average,Max,Lp}Pool against the numpy
references (odd shapes, padding, ceil_mode, dilations, 1 and 2 threads, any input layout,
NaN/Inf) and against onnxruntime; invalid attributes raise GraphError naming node and values."""
import numpy as np
import pytest

import fastcnn
from helpers import assert_close, rand
from oputil import node, onnx_vs_ort, run_op
from reference import global_pool, pool1d, pool2d

RNG = np.random.default_rng(1234)
OPS = {"max": "MaxPool", "min": "MinPool", "avg": "AveragePool", "lp": "LpPool"}


def pool_attrs(kernel, stride=None, pads=None, dilation=None, ceil_mode=0, **extra):
    a = {"kernel_shape": list(kernel)}
    if stride is not None:
        a["strides"] = list(stride)
    if pads is not None:
        a["pads"] = list(pads)
    if dilation is not None:
        a["dilations"] = list(dilation)
    if ceil_mode:
        a["ceil_mode"] = 1
    a.update(extra)
    return a


# ---------------------------------------------------------------------- DESIGN worked examples
def test_worked_examples_4x4_window2_stride2():
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
    a = pool_attrs((2, 2), (2, 2))
    assert run_op("MaxPool", {"x": x}, a)[0][0, 0].tolist() == [[6, 8], [14, 16]]
    assert run_op("AveragePool", {"x": x}, a)[0][0, 0].tolist() == [[3.5, 5.5], [11.5, 13.5]]
    assert run_op("MinPool", {"x": x}, a)[0][0, 0].tolist() == [[1, 3], [9, 11]]
    # and the references agree with the same numbers
    assert pool2d(x, "max", (2, 2))[0, 0].tolist() == [[6, 8], [14, 16]]
    assert pool2d(x, "min", (2, 2))[0, 0].tolist() == [[1, 3], [9, 11]]


# (shape, kernel, stride, pads (top, left, bottom, right), dilation, ceil_mode)
GEOMETRIES = [
    ((3, 13, 3, 5), (2, 2), (1, 1), (0, 0, 0, 0), (1, 1), 0),
    ((3, 13, 3, 5), (3, 3), (3, 4), (1, 1, 1, 1), (1, 1), 0),      # stride > kernel
    ((2, 5, 7, 6), (3, 2), (2, 2), (2, 1, 0, 1), (1, 1), 1),       # asymmetric pads, ceil
    ((1, 2, 5, 5), (2, 2), (2, 2), (1, 1, 1, 1), (1, 1), 1),       # ceil: last window dropped
    ((1, 3, 5, 5), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 1),       # ceil: partial last window
    ((2, 3, 8, 9), (3, 3), (2, 2), (1, 1, 1, 1), (2, 2), 0),       # dilation
    ((2, 3, 9, 8), (2, 3), (3, 1), (1, 2, 0, 2), (3, 2), 1),       # dilation + ceil
    ((3, 13, 1, 1), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 0),      # 1x1 image
    ((3, 13, 3, 5), (3, 5), (1, 1), (0, 0, 0, 0), (1, 1), 0),      # window = whole image
    ((1, 1, 3, 5), (3, 3), (5, 5), (2, 2, 2, 2), (1, 1), 1),       # pads = kernel - 1
]


def geometry_id(g):
    shape, k, s, p, d, c = g
    return f"{'x'.join(map(str, shape))}_k{k[0]}{k[1]}_s{s[0]}{s[1]}_p{''.join(map(str, p))}_d{d[0]}{d[1]}_c{c}"


@pytest.mark.parametrize("geo", GEOMETRIES, ids=geometry_id)
@pytest.mark.parametrize("kind", ["max", "min", "avg", "avg_include_pad", "lp1", "lp2", "lp3"])
def test_pool2d_matches_reference(geo, kind, threads):
    shape, k, s, p, d, ceil = geo
    x = rand(RNG, *shape, lo=-3, hi=3)
    extra, ref_kw = {}, {}
    base = kind
    if kind == "avg_include_pad":
        base, extra["count_include_pad"], ref_kw["count_include_pad"] = "avg", 1, True
    if kind.startswith("lp"):
        base, extra["p"], ref_kw["p"] = "lp", int(kind[2]), int(kind[2])
    if base == "avg" and d != (1, 1):
        extra["dilations"] = list(d)
    a = pool_attrs(k, s, p, d if base != "avg" else None, ceil, **extra)
    got = run_op(OPS[base], {"x": x}, a, threads=threads)[0]
    ref = pool2d(x, base, k, s, p, d, bool(ceil), **ref_kw)
    assert_close(got, ref, f"{kind} {geometry_id(geo)}")


@pytest.mark.parametrize("kind", ["max", "min", "avg", "lp"])
def test_pool2d_large_runs_parallel_path(kind, threads):
    # more than 32768 window taps: the kernel splits (n, c) planes across threads
    x = rand(RNG, 3, 13, 33, 35)
    a = pool_attrs((3, 3), (2, 2), (1, 1, 1, 1), ceil_mode=1)
    got = run_op(OPS[kind], {"x": x}, a, threads=threads)[0]
    assert_close(got, pool2d(x, kind, (3, 3), (2, 2), (1, 1, 1, 1), ceil_mode=True))


@pytest.mark.parametrize("kind", ["max", "avg", "lp"])
def test_pool2d_input_layouts(kind, layout):
    x = rand(RNG, 3, 13, 6, 7)
    a = pool_attrs((3, 2), (2, 3), (1, 0, 1, 1))
    got = run_op(OPS[kind], {"x": x}, a, layout=layout)[0]
    assert_close(got, pool2d(x, kind, (3, 2), (2, 3), (1, 0, 1, 1)))


@pytest.mark.parametrize("kind", ["max", "min", "avg", "lp"])
def test_pool1d(kind, threads):
    x = rand(RNG, 3, 13, 11)
    a = pool_attrs((3,), (2,), (1, 2), ceil_mode=1)
    got = run_op(OPS[kind], {"x": x}, a, threads=threads)[0]
    assert_close(got, pool1d(x, kind, 3, 2, (1, 2), ceil_mode=True))


@pytest.mark.parametrize("kind", ["max", "min", "avg", "lp"])
def test_pool_nan_and_inf_propagate(kind):
    x = rand(RNG, 1, 2, 6, 6)
    x[0, 0, 0, 0] = np.nan
    x[0, 0, 3, 4] = np.inf
    x[0, 1, 5, 5] = -np.inf
    x[0, 1, 2, 2] = np.nan
    got = run_op(OPS[kind], {"x": x}, pool_attrs((2, 2), (2, 2)))[0]
    ref = pool2d(x, kind, (2, 2), (2, 2))
    assert np.isnan(got[0, 0, 0, 0]) and np.isnan(got[0, 1, 1, 1])
    assert_close(got, ref)


@pytest.mark.parametrize("op,kind", [("GlobalAveragePool", "avg"), ("GlobalMaxPool", "max"),
                                     ("GlobalLpPool", "lp")])
@pytest.mark.parametrize("shape", [(3, 13, 3, 5), (3, 13, 7), (2, 3, 1, 1), (2, 5, 70, 50)])
def test_global_pool(op, kind, shape, threads):
    x = rand(RNG, *shape)
    got = run_op(op, {"x": x}, threads=threads)[0]
    assert_close(got, global_pool(x, kind))


@pytest.mark.parametrize("p", [1, 2, 3])
def test_global_lp_pool_p(p, layout):
    x = rand(RNG, 3, 13, 3, 5)
    got = run_op("GlobalLpPool", {"x": x}, {"p": p}, layout=layout)[0]
    assert_close(got, global_pool(x, "lp", p))


def test_global_pool_nan_propagates():
    x = rand(RNG, 2, 3, 4, 4)
    x[1, 2, 3, 3] = np.nan
    x[0, 0, 0, 0] = np.inf
    for op, kind in (("GlobalAveragePool", "avg"), ("GlobalMaxPool", "max"), ("GlobalLpPool", "lp")):
        got = run_op(op, {"x": x})[0]
        assert np.isnan(got[1, 2, 0, 0]), op
        assert_close(got, global_pool(x, kind), op)


# ---------------------------------------------------------------------- onnxruntime
ORT_CASES = [
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1), 12),
    ("MaxPool", dict(kernel_shape=[2, 3], strides=[3, 1], pads=[1, 0, 0, 2], dilations=[2, 2]), 12),
    ("MaxPool", dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER", strides=[2, 2]), 12),
    ("MaxPool", dict(kernel_shape=[2, 2], auto_pad="SAME_LOWER"), 12),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), 11),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1), 11),
    ("AveragePool", dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1], ceil_mode=1), 11),
    ("AveragePool", dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1], ceil_mode=1,
                         count_include_pad=1), 11),
    ("AveragePool", dict(kernel_shape=[2, 2], strides=[1, 2], pads=[1, 1, 1, 1], dilations=[2, 1]), 19),
    ("AveragePool", dict(kernel_shape=[2, 2], auto_pad="VALID", strides=[3, 3]), 11),
    ("AveragePool", dict(kernel_shape=[2, 3], strides=[1, 2], pads=[1, 1, 1, 2], dilations=[2, 2],
                         count_include_pad=1), 19),
    ("AveragePool", dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 1, 1, 1], dilations=[2, 1],
                         count_include_pad=1, ceil_mode=1), 19),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER", count_include_pad=1), 11),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[2, 2, 2, 2], dilations=[2, 2], ceil_mode=1), 12),
    ("LpPool", dict(kernel_shape=[2, 2], strides=[2, 2], p=2), 11),
    ("LpPool", dict(kernel_shape=[3, 2], strides=[1, 2], pads=[1, 1, 1, 0], p=3), 11),
    ("LpPool", dict(kernel_shape=[2, 2], strides=[2, 1], p=1, dilations=[1, 2], ceil_mode=1), 18),
]


@pytest.mark.parametrize("op,attrs,opset", ORT_CASES, ids=lambda v: str(v) if not isinstance(v, dict) else
                         "_".join(f"{k}{v[k]}" for k in sorted(v)).replace(" ", ""))
def test_pool_vs_onnxruntime(op, attrs, opset):
    x = rand(RNG, 3, 13, 7, 9)
    got, ref = onnx_vs_ort(node(op, ["x"], **attrs), {"x": x}, opset=opset)
    assert_close(got[0], ref[0], op)


@pytest.mark.parametrize("op,attrs", [("MaxPool", dict(kernel_shape=[3], strides=[2], pads=[1, 1])),
                                      ("AveragePool", dict(kernel_shape=[4], strides=[3], pads=[2, 1],
                                                           count_include_pad=1, ceil_mode=1)),
                                      ("GlobalAveragePool", {}), ("GlobalMaxPool", {}),
                                      ("GlobalLpPool", dict(p=3))])
def test_pool1d_and_global_vs_onnxruntime(op, attrs):
    for shape in ((3, 13, 11), (3, 13, 3, 5)):
        if "kernel_shape" in attrs and len(shape) == 4:
            continue
        x = rand(RNG, *shape)
        got, ref = onnx_vs_ort(node(op, ["x"], **attrs), {"x": x}, opset=13)
        assert_close(got[0], ref[0], f"{op} {shape}")


# ---------------------------------------------------------------------- invalid attributes
def _graph_error(op, shape, attrs, match):
    x = np.zeros(shape, np.float32)
    with pytest.raises(fastcnn.GraphError, match=match) as e:
        run_op(op, {"x": x}, attrs)
    msg = str(e.value)
    assert f"({op})" in msg and "node '" in msg
    return msg


def test_stride_zero_is_refused():
    msg = _graph_error("MaxPool", (1, 2, 5, 5), pool_attrs((2, 2), (0, 1)), r"strides \[0, 1\]")
    assert "maxpool0" in msg


def test_kernel_larger_than_padded_input():
    _graph_error("AveragePool", (1, 2, 3, 5), pool_attrs((5, 2), pads=(1, 0, 0, 0)),
                 r"kernel \[5, 2\].*larger than the padded input: spatial dims \[3, 5\], pads \[1, 0, 0, 0\]")


def test_pads_not_smaller_than_kernel():
    _graph_error("MaxPool", (1, 2, 5, 5), pool_attrs((2, 2), pads=(2, 0, 0, 0)),
                 r"pads \[2, 0, 0, 0\] must be smaller than kernel_shape \[2, 2\]")


def test_dilated_window_wholly_in_padding():
    _graph_error("MaxPool", (1, 1, 2, 2), pool_attrs((2, 2), pads=(1, 1, 1, 1), dilation=(3, 3)),
                 r"covers only padding")


def test_wrong_rank_and_attribute_lengths():
    _graph_error("MaxPool", (1, 2, 3, 4, 5), pool_attrs((2, 2, 2)), r"must have rank 3 or 4, got rank 5")
    _graph_error("MaxPool", (1, 2, 5, 5), pool_attrs((2, 2), (1, 1, 1)), r"strides \[1, 1, 1\] must have 2 values")
    _graph_error("MaxPool", (1, 2, 5, 5), pool_attrs((2,)), r"kernel_shape has 1 dims \[2\]")
    _graph_error("MaxPool", (1, 2, 5, 5), pool_attrs((2, 2), pads=(1, 1)), r"pads \[1, 1\] must have 4 values")
    _graph_error("LpPool", (1, 2, 5, 5), pool_attrs((2, 2), p=0), r"p must be between 1 and 64, got 0")
    _graph_error("GlobalLpPool", (1, 2, 5, 5), {"p": 99}, r"p must be between 1 and 64, got 99")
    _graph_error("GlobalAveragePool", (2, 5), {}, r"must be \(N, C, spatial...\), got shape \[2, 5\]")
    _graph_error("MaxPool", (1, 2, 5, 5), pool_attrs((2, 2), auto_pad="SAME"), r"auto_pad must be")


def test_missing_kernel_shape_is_refused():
    _graph_error("MaxPool", (1, 2, 5, 5), {}, r"attribute 'kernel_shape' is required")

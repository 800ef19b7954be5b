"""Randomised geometries (hypothesis): pooling windows, slices, pads and reductions drawn at
random, fastcnn against the numpy references. Invalid draws must raise a FastCNNError, never
crash or return garbage."""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import fastcnn  # noqa: E402
from helpers import assert_close  # noqa: E402
from oputil import run_op  # noqa: E402
from reference import onnx_slice, out_size, pad, pool2d, reduce  # noqa: E402

# derandomize: the same examples every run (CI stays reproducible); raise max_examples to explore
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
RNG = np.random.default_rng(3)


@SETTINGS
@given(h=st.integers(1, 7), w=st.integers(1, 7), kh=st.integers(1, 4), kw=st.integers(1, 4),
       sh=st.integers(1, 4), sw=st.integers(1, 4), dh=st.integers(1, 3), dw=st.integers(1, 3),
       pads=st.lists(st.integers(0, 3), min_size=4, max_size=4), ceil=st.booleans(),
       kind=st.sampled_from(["max", "min", "avg", "avg_pad", "lp"]))
def test_random_pool_geometry(h, w, kh, kw, sh, sw, dh, dw, pads, ceil, kind):
    x = RNG.uniform(-2, 2, (2, 3, h, w)).astype(np.float32)
    op = {"max": "MaxPool", "min": "MinPool", "avg": "AveragePool", "avg_pad": "AveragePool", "lp": "LpPool"}[kind]
    attrs = {"kernel_shape": [kh, kw], "strides": [sh, sw], "pads": pads, "dilations": [dh, dw],
             "ceil_mode": int(ceil)}
    if kind == "avg_pad":
        attrs["count_include_pad"] = 1
    pt, pl, pb, pr = pads
    valid = (max(pt, pb) < kh and max(pl, pr) < kw
             and out_size(h, kh, sh, pt, pb, dh, ceil) >= 1 and out_size(w, kw, sw, pl, pr, dw, ceil) >= 1)
    if valid:   # every window must reach the input
        for size, k, s, d, p0, o in ((h, kh, sh, dh, pt, out_size(h, kh, sh, pt, pb, dh, ceil)),
                                     (w, kw, sw, dw, pl, out_size(w, kw, sw, pl, pr, dw, ceil))):
            valid &= all(any(0 <= i * s - p0 + t * d < size for t in range(k)) for i in range(o))
    if not valid:
        with pytest.raises(fastcnn.GraphError):
            run_op(op, {"x": x}, attrs)
        return
    got = run_op(op, {"x": x}, attrs)[0]
    ref = pool2d(x, "avg" if kind == "avg_pad" else kind, (kh, kw), (sh, sw), pads, (dh, dw), ceil,
                 count_include_pad=kind == "avg_pad")
    assert_close(got, ref)


@SETTINGS
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), data=st.data())
def test_random_slice(shape, data):
    x = RNG.uniform(-1, 1, shape).astype(np.float32)
    r = len(shape)
    axes = data.draw(st.lists(st.integers(-r, r - 1), min_size=1, max_size=r, unique_by=lambda a: a % r))
    big = st.integers(-8, 8) | st.sampled_from([-2 ** 63, 2 ** 63 - 1, 2 ** 62, -2 ** 62])
    starts = [data.draw(big) for _ in axes]
    ends = [data.draw(big) for _ in axes]
    steps = [data.draw(st.integers(-3, 3).filter(bool)) for _ in axes]
    ref = onnx_slice(x, starts, ends, axes, steps)
    consts = {"s": np.array(starts, np.int64), "e": np.array(ends, np.int64), "a": np.array(axes, np.int64),
              "t": np.array(steps, np.int64)}
    if ref.size == 0:
        from fastcnn.ir.graph import Graph, Node, TensorSpec, ValueType
        from fastcnn.ir.infer import infer_graph
        g = Graph("t", [TensorSpec("x", x.shape)], [TensorSpec("y", ())],
                  [Node("Slice", "n", ["x", "s", "e", "a", "t"], ["y"])], consts)
        assert infer_graph(g, {"x": ValueType(x.shape, "float32")}).types["y"].shape == ref.shape
        return
    assert_close(run_op("Slice", {"x": x}, consts=consts)[0], ref)


@SETTINGS
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), data=st.data(),
       mode=st.sampled_from(["constant", "reflect", "edge", "wrap"]))
def test_random_pad(shape, data, mode):
    x = RNG.uniform(-1, 1, shape).astype(np.float32)
    pads = data.draw(st.lists(st.integers(-3, 7), min_size=2 * len(shape), max_size=2 * len(shape)))
    r = len(shape)
    kept = [shape[a] - max(-pads[a], 0) - max(-pads[a + r], 0) for a in range(r)]
    grow = [max(pads[a], 0) + max(pads[a + r], 0) for a in range(r)]
    valid = all(shape[a] + pads[a] + pads[a + r] >= 0 for a in range(r))
    if mode == "reflect":
        valid &= all(not grow[a] or max(pads[a], pads[a + r]) <= kept[a] - 1 for a in range(r))
    if mode in ("edge", "wrap"):
        valid &= all(not grow[a] or kept[a] > 0 for a in range(r))
    consts = {"p": np.array(pads, np.int64)}
    if not valid:
        with pytest.raises(fastcnn.GraphError):
            run_op("Pad", {"x": x}, {"mode": mode}, consts=consts)
        return
    ref = pad(x, pads, mode)
    if ref.size == 0:
        return
    assert_close(run_op("Pad", {"x": x}, {"mode": mode}, consts=consts)[0], ref)


@SETTINGS
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=5), data=st.data(),
       op=st.sampled_from(["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceLogSumExp"]),
       keep=st.booleans())
def test_random_reduce(shape, data, op, keep):
    x = RNG.uniform(-2, 2, shape).astype(np.float32)
    r = len(shape)
    axes = data.draw(st.lists(st.integers(-r, r - 1), min_size=1, max_size=r, unique_by=lambda a: a % r))
    got = run_op(op, {"x": x}, {"keepdims": int(keep)}, consts={"a": np.array(axes, np.int64)})[0]
    assert_close(got, reduce(x, op, axes, keep))


@SETTINGS
@given(shapes=st.lists(st.lists(st.integers(1, 4), min_size=0, max_size=6), min_size=2, max_size=2), data=st.data(),
       op=st.sampled_from(["Add", "Sub", "Mul", "Max", "PRelu"]))
def test_random_broadcast(shapes, data, op):
    # make the two shapes broadcastable by setting clashing dims to 1 on a random side
    a, b = list(shapes[0]), list(shapes[1])
    for k in range(1, min(len(a), len(b)) + 1):
        if a[-k] != b[-k] and a[-k] != 1 and b[-k] != 1:
            if data.draw(st.booleans()):
                a[-k] = 1
            else:
                b[-k] = 1
    if op == "PRelu":   # the slope broadcasts to x only
        b = [1 if (k > len(a) or a[-k] != d) else d for k, d in zip(range(len(b), 0, -1), b)][-len(a):] if a else []
    xa = RNG.uniform(-2, 2, a).astype(np.float32)
    xb = RNG.uniform(-2, 2, b).astype(np.float32)
    got = run_op(op, {"a": xa, "b": xb})[0]
    fa, fb = xa.astype(np.float64), xb.astype(np.float64)
    ref = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Max": np.maximum,
           "PRelu": lambda x, s: np.where(x < 0, x * s, x)}[op](fa, fb)
    assert_close(got, ref)


@SETTINGS
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=5), data=st.data())
def test_random_transpose_and_concat(shape, data):
    x = RNG.uniform(-1, 1, shape).astype(np.float32)
    perm = data.draw(st.permutations(range(len(shape))))
    assert_close(run_op("Transpose", {"x": x}, {"perm": list(perm)})[0], np.transpose(x, perm))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    other = list(shape)
    other[axis] = data.draw(st.integers(0, 3))
    y = RNG.uniform(-1, 1, other).astype(np.float32)
    feeds = {"x": x, "z": y} if y.size else {"x": x}
    consts = {} if y.size else {"z": y}
    got = run_op("Concat", feeds, {"axis": axis}, consts=consts, order=["x", "z"])[0]
    assert_close(got, np.concatenate([x, y], axis=axis))

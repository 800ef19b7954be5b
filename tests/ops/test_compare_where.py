"""Where whose condition is a comparison of float tensors computed at run time: the fused
Where (A, B, X, Y, compare) against numpy, and the ONNX spellings that reach it
(passes/compare_where.py) against onnxruntime: Where over Greater/Less/..., through Not, and a
comparison cast to float32."""
import os

import numpy as np
import pytest

import fastcnn
from helpers import onnx_model, rand, run_ort, save_onnx
from oputil import node, run_op, with_specials

RNG = np.random.default_rng(17)

COMPARES = {"Equal": np.equal, "Less": np.less, "Greater": np.greater,
            "LessOrEqual": np.less_equal, "GreaterOrEqual": np.greater_equal}

SHAPES = [
    [(3, 7, 4, 5)] * 4,
    [(3, 7, 4, 5), (), (3, 7, 4, 5), (7, 1, 1)],         # threshold; per-channel Y
    [(1, 7, 1, 5), (3, 1, 4, 1), (5,), (3, 7, 4, 5)],    # all four broadcast differently
    [(2, 1, 3, 1, 2, 1), (1, 4, 1, 5, 1, 3), (1,), (2, 4, 3, 5, 2, 3)],   # six dims, no merging
    [(3, 7, 33, 35), (7, 1, 1), (3, 7, 33, 35), ()],      # large enough for both threads
]


def _operands(shapes):
    a, b, x, y = (rand(RNG, *s, lo=-2, hi=2) for s in shapes)
    a = with_specials(a) if a.size >= 8 else a
    # exact ties, so Equal and the *OrEqual comparisons see both outcomes
    b = np.round(b * 2) / 2
    a = np.round(a * 2) / 2 if a.size < 8 else np.where(np.isfinite(a), np.round(a * 2) / 2, a)
    return [np.asarray(v, np.float32) for v in (a, b, x, y)]


@pytest.mark.parametrize("compare", list(COMPARES))
@pytest.mark.parametrize("shapes", SHAPES, ids=lambda s: "_".join(str(list(d)) for d in s))
def test_fused_where_against_numpy(compare, shapes, threads):
    a, b, x, y = _operands(shapes)
    got = run_op("Where", {"a": a, "b": b, "p": x, "q": y}, attrs={"compare": compare},
                 threads=threads)[0]
    ref = np.where(COMPARES[compare](a, b), x, y)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)   # a selection: the same bits


def test_fused_where_constant_operands_and_layouts(layout):
    a = with_specials(rand(RNG, 2, 6, 5, 4))
    y = rand(RNG, 6, 1, 1)
    got = run_op("Where", {"a": a}, consts={"b": np.float32(0.5), "p": np.float32(-1), "q": y},
                 order=["a", "b", "p", "q"], attrs={"compare": "LessOrEqual"}, layout=layout)[0]
    np.testing.assert_array_equal(got, np.where(a <= 0.5, np.float32(-1), np.broadcast_to(y, a.shape)))


def test_fused_where_of_two_constants_compares_them_exactly():
    # int64 values 2**24 and 2**24 + 1 are equal in float32: the comparison of two constants is
    # made in their own dtype while planning
    a = np.array([2**24 + 1, 5, -3], np.int64)
    b = np.array([2**24, 5, 4], np.int64)
    p = rand(RNG, 2, 3)
    got = run_op("Where", {"p": p}, consts={"a": a, "b": b, "q": np.float32(-7)},
                 order=["a", "b", "p", "q"], attrs={"compare": "Greater"})[0]
    np.testing.assert_array_equal(got, np.where(a > b, p, np.float32(-7)))


@pytest.mark.parametrize("attrs, n_in, message", [
    ({"compare": "NotEqual"}, 4, r"compare must be one of Equal, Less, Greater, LessOrEqual, GreaterOrEqual, got 'NotEqual'"),
    ({"compare": "Less"}, 3, r"with compare 'Less' Where takes 4 inputs \(A, B, X, Y\), got 3"),
    ({}, 4, r"Where takes 3 inputs \(condition, X, Y\), got 4"),
])
def test_fused_where_attribute_errors(attrs, n_in, message):
    feeds = {k: rand(RNG, 2, 3) for k in "abpq"[:n_in]}
    with pytest.raises(fastcnn.GraphError, match=message):
        run_op("Where", feeds, attrs=attrs)


def test_fused_where_of_shapes_that_do_not_broadcast():
    with pytest.raises(fastcnn.GraphError, match=r"cannot be broadcast together"):
        run_op("Where", {"a": rand(RNG, 2, 3), "b": rand(RNG, 3), "p": rand(RNG, 4), "q": rand(RNG, 2, 3)},
               attrs={"compare": "Less"})


# ----------------------------------------------------------------------------- as exported
def _helper():
    return pytest.importorskip("onnx").helper


def _consts(**values):
    return {k: np.asarray(v, np.float32) for k, v in values.items()}


def _graph_ops(path):
    m = fastcnn.load(path)
    return [n.op for n in m.graph.nodes], m


def _check_against_ort(tmp_path, nodes, inits, x_shape=(2, 6, 5, 4), outputs=("y",)):
    model = onnx_model(nodes, {"x": ("N",) + x_shape[1:]}, list(outputs), inits, opset=17)
    path = save_onnx(model, str(tmp_path))
    ops, m = _graph_ops(path)
    x = with_specials(rand(RNG, *x_shape, lo=-30, hi=30))
    x.reshape(-1)[8:12] = [20.0, -20.0, 0.5, 0.0]   # on the thresholds below
    for batch in (x_shape[0], 1):
        got = m.run(None, {"x": x[:batch]})
        ref = run_ort(model, {"x": x[:batch]})
        for g, r in zip(got, ref):
            assert g.shape == r.shape
            np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-6, equal_nan=True)
    return ops


def test_softplus_as_the_dynamo_exporter_writes_it(tmp_path):
    # F.softplus(x) (beta 1, threshold 20) from torch.onnx.export(dynamo=True)
    n = lambda *a, **k: node(*a, **k)  # noqa: E731
    nodes = [n("Greater", ["x", "t"], ["gt"]), n("Softplus", ["x"], ["sp"]), n("Where", ["gt", "x", "sp"], ["y"])]
    ops = _check_against_ort(tmp_path, nodes, _consts(t=20.0))
    assert "Greater" not in ops and ops.count("Where") == 1
    # the fused Where in a .fcnn file
    fcnn = str(tmp_path / "softplus.fcnn")
    fastcnn.convert(str(tmp_path / [f for f in os.listdir(tmp_path) if f.endswith(".onnx")][0]), fcnn)
    x = rand(RNG, 3, 6, 5, 4, lo=-30, hi=30)
    want = np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))
    np.testing.assert_allclose(fastcnn.load(fcnn).run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-6)


def test_torch_where_leaky_and_not(tmp_path, monkeypatch):
    nodes = [node("Less", ["x", "zero"], ["lt"]), node("Not", ["lt"], ["ge"]),
             node("Mul", ["x", "slope"], ["m"]), node("Where", ["ge", "x", "m"], ["y"])]
    ops = _check_against_ort(tmp_path, nodes, _consts(zero=0.0, slope=0.1))
    assert "Less" not in ops and "Not" not in ops
    # a batch split over two threads, one part each (the fused Where computes per sample)
    from fastcnn.runtime import batch_split
    monkeypatch.setattr(batch_split, "MIN_PART_FLOPS", 0)
    m = fastcnn.load(str(tmp_path / [f for f in os.listdir(tmp_path) if f.endswith(".onnx")][0]), num_threads=2)
    assert m._choose_split(((8, 6, 5, 4),), 2) is not None
    x = rand(RNG, 8, 6, 5, 4, lo=-3, hi=3)
    np.testing.assert_array_equal(m.run(None, {"x": x})[0], np.where(x >= 0, x, x * np.float32(0.1)))


def test_comparison_cast_to_a_float_mask(tmp_path):
    TensorProto = pytest.importorskip("onnx").TensorProto
    nodes = [node("GreaterOrEqual", ["x", "half"], ["ge"]), node("Cast", ["ge"], ["mask"], to=TensorProto.FLOAT),
             node("Mul", ["x", "mask"], ["y"]),
             # a NaN mask: Equal(x, x) is false only for NaN
             node("Equal", ["x", "x"], ["eq"]), node("Not", ["eq"], ["isnan"]),
             node("Cast", ["isnan"], ["y2"], to=TensorProto.FLOAT)]
    ops = _check_against_ort(tmp_path, nodes, _consts(half=0.5), outputs=("y", "y2"))
    assert "Cast" not in ops and "Equal" not in ops and ops.count("Where") == 2


def test_comparison_read_by_two_wheres_and_per_channel_thresholds(tmp_path):
    t = rand(RNG, 6, 1, 1, lo=-5, hi=5)
    nodes = [node("Greater", ["x", "t"], ["gt"]), node("Where", ["gt", "x", "t"], ["a"]),
             node("Where", ["gt", "t", "x"], ["b"]), node("Sub", ["a", "b"], ["y"])]
    ops = _check_against_ort(tmp_path, nodes, {"t": t})
    assert "Greater" not in ops and ops.count("Where") == 2


def test_comparison_another_node_reads_is_still_refused(tmp_path):
    # the And reads the bool too: the comparison stays, and a bool tensor at run time is refused
    nodes = [node("Greater", ["x", "t"], ["gt"]), node("Less", ["x", "u"], ["lt"]), node("And", ["gt", "lt"], ["both"]),
             node("Where", ["gt", "x", "t"], ["a"]), node("Where", ["both", "a", "t"], ["y"])]
    model = onnx_model(nodes, {"x": (2, 3)}, ["y"], _consts(t=0.0, u=1.0), opset=17)
    with pytest.raises(fastcnn.UnsupportedOpError, match=r"computes the bool tensor 'gt' at run time"):
        fastcnn.load(save_onnx(model, str(tmp_path)))


def test_comparison_of_constants_folds_and_a_constant_mask_runs(tmp_path):
    # the comparison folds to a constant bool; the Where over it runs as mask > 0 (it could
    # only be folded before: "Where can only be evaluated on constants")
    nodes = [node("Greater", ["t", "u"], ["gt"]), node("Where", ["gt", "x", "t"], ["y"])]
    model = onnx_model(nodes, {"x": (2, 3)}, ["y"], _consts(t=[1.0, -1.0, 2.0], u=0.0), opset=17)
    path = save_onnx(model, str(tmp_path))
    ops, m = _graph_ops(path)
    x = rand(RNG, 2, 3)
    np.testing.assert_array_equal(m.run(None, {"x": x})[0], run_ort(model, {"x": x})[0])
    assert "Greater" not in ops and all(n.attrs.get("compare", "") == "" for n in m.graph.nodes)

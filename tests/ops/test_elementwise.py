"""Elementwise math: Add/Sub/Mul/Div/Pow/Max/Min with numpy broadcasting, variadic Sum/Mean/
Max/Min, and the unary math ops (Exp, Log, Sqrt, Neg, Abs, Reciprocal, Floor, Ceil, Round, Erf,
Sign), against numpy and onnxruntime, including the opset < 7 `broadcast`/`axis` form."""
import numpy as np
import pytest

import fastcnn
from helpers import assert_close, onnx_model, rand, run_fastcnn_onnx
from oputil import node, onnx_vs_ort, run_op, with_specials
from reference import ACTIVATIONS

RNG = np.random.default_rng(5)

BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide,
          "Pow": np.power, "Max": np.maximum, "Min": np.minimum}

SHAPE_PAIRS = [
    ((3, 13, 3, 5), (3, 13, 3, 5)),
    ((3, 13, 3, 5), (13, 1, 1)),      # per-channel
    ((3, 13, 3, 5), (3, 5)),          # trailing dims
    ((1, 13, 1, 5), (3, 1, 3, 1)),    # both sides broadcast
    ((3, 13, 3, 5), ()),              # scalar
    ((5,), (3, 13, 3, 5)),            # first operand smaller
    ((13, 1, 5), (3, 13, 3, 1)),
    ((2, 1, 3, 1, 2, 1), (1, 4, 1, 5, 1, 3)),  # six dims that do not merge
]


def _operands(op, sa, sb):
    a, b = rand(RNG, *sa, lo=-3, hi=3), rand(RNG, *sb, lo=-3, hi=3)
    if op == "Pow":
        a = np.abs(a) + 0.1          # real powers of positive bases
    if op == "Div":
        b = np.where(np.abs(b) < 0.1, 0.5, b).astype(np.float32)
    return a, b


def _ref(op, a, b):
    with np.errstate(all="ignore"):
        return BINARY[op](np.asarray(a, np.float64), np.asarray(b, np.float64))


@pytest.mark.parametrize("op", list(BINARY))
@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=lambda s: f"{list(s[0])}_{list(s[1])}")
def test_binary_broadcast_runtime_operands(op, shapes, threads):
    a, b = _operands(op, *shapes)
    got = run_op(op, {"a": a, "b": b}, threads=threads)[0]
    assert_close(got, _ref(op, a, b), op)


@pytest.mark.parametrize("op", list(BINARY))
@pytest.mark.parametrize("const_first", [False, True])
def test_binary_with_constant_operand(op, const_first, layout):
    a, b = _operands(op, (3, 13, 3, 5), (13, 1, 1))
    if const_first:
        got = run_op(op, {"b": a}, consts={"a": b}, order=["a", "b"], layout=layout)[0]
        ref = _ref(op, b, a)
    else:
        got = run_op(op, {"a": a}, consts={"b": b}, order=["a", "b"], layout=layout)[0]
        ref = _ref(op, a, b)
    assert_close(got, ref)


@pytest.mark.parametrize("op", list(BINARY))
def test_binary_large_parallel(op, threads):
    a, b = _operands(op, (3, 13, 33, 35), (13, 33, 1))
    assert_close(run_op(op, {"a": a, "b": b}, threads=threads)[0], _ref(op, a, b))


@pytest.mark.parametrize("op", list(BINARY))
def test_binary_vs_onnxruntime(op):
    for sa, sb in SHAPE_PAIRS[:7]:
        a, b = _operands(op, sa, sb)
        got, ref = onnx_vs_ort(node(op, ["a", "b"]), {"a": a, "b": b}, opset=14)
        assert_close(got[0], ref[0], f"{op} {sa} {sb}")


def test_nan_inf_and_division_by_zero():
    a = np.array([np.nan, 1, -1, 0, np.inf, -np.inf, 2, 3], np.float32)
    b = np.array([1, 0, 0, 0, 1, np.inf, np.nan, -np.inf], np.float32)
    for op in BINARY:
        got = run_op(op, {"a": a, "b": b})[0]
        assert_close(got, _ref(op, a, b), op)
    got = run_op("Max", {"a": a, "b": b})[0]
    assert np.isnan(got[0]) and np.isnan(got[6]), "Max propagates NaN from either side"


def test_pow_negative_base():
    a = np.array([-2, -2, -8, -1.5, 0, 2], np.float32)
    b = np.array([2, 3, 1 / 3, 0.5, -1, 0.5], np.float32)
    got = run_op("Pow", {"a": a, "b": b})[0]
    ref = _ref("Pow", a, b)   # non-integer powers of negative bases are NaN, as in C and numpy
    assert np.isnan(got[2]) and np.isnan(got[3]) and got[4] == np.inf
    assert_close(got, ref)


def test_pow_with_integer_constant_exponent():
    """PyTorch exports x ** 2 with an int64 exponent."""
    x = rand(RNG, 3, 13, 3, 5)
    got = run_op("Pow", {"x": x}, consts={"e": np.array(2, np.int64)})[0]
    assert_close(got, np.asarray(x, np.float64) ** 2)
    got, ref = onnx_vs_ort(node("Pow", ["x", "e"]), {"x": x}, {"e": np.array(3, np.int64)}, opset=15)
    assert_close(got[0], ref[0])


@pytest.mark.parametrize("op", ["Sum", "Mean", "Max", "Min"])
@pytest.mark.parametrize("n_inputs", [1, 2, 3, 4])
def test_variadic(op, n_inputs, threads):
    shapes = [(3, 13, 3, 5), (13, 1, 1), (3, 1, 3, 5), (5,)][:n_inputs]
    xs = {f"x{i}": rand(RNG, *s) for i, s in enumerate(shapes)}
    got = run_op(op, xs, threads=threads)[0]
    vals = [np.asarray(v, np.float64) for v in xs.values()]
    ref = np.broadcast_to(vals[0], np.broadcast_shapes(*[v.shape for v in vals])).copy()
    for v in vals[1:]:
        ref = {"Sum": np.add, "Mean": np.add, "Max": np.maximum, "Min": np.minimum}[op](ref, v)
    if op == "Mean":
        ref = ref / n_inputs
    assert_close(got, ref)
    got2, ort = onnx_vs_ort(node(op, list(xs)), xs, opset=13)
    assert_close(got2[0], ort[0], "onnxruntime")


def test_variadic_same_tensor_twice():
    x = rand(RNG, 3, 13, 3, 5)
    got = run_op("Sum", {"x": x}, order=["x", "x", "x"])[0]
    assert_close(got, 3 * np.asarray(x, np.float64))
    got = run_op("Add", {"x": x}, order=["x", "x"])[0]
    assert_close(got, 2 * np.asarray(x, np.float64))


def test_chain_reuses_buffers_in_place():
    """Relu -> Add -> Mul: the elementwise steps write into their input's buffer when it dies;
    results must not change."""
    from helpers import ir_model
    x = rand(RNG, 3, 13, 3, 5)
    c = rand(RNG, 13, 1, 1)
    m = ir_model([("Relu", ["x"], ["r"]), ("Add", ["r", "c"], ["s"]), ("Mul", ["s", "s"], ["y"])],
                 {"x": x.shape}, ["y"], {"c": c})
    ref = (np.maximum(x.astype(np.float64), 0) + c) ** 2
    assert_close(m.run(None, {"x": x})[0], ref)


# ---------------------------------------------------------------------- opset < 7 broadcasting
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("b_shape,axis", [((13,), 1), ((13, 3), 1), ((3, 5), 2), ((3,), 0),
                                          ((5,), None), ((5,), 3), ((3, 5), -2)])
@pytest.mark.parametrize("b_const", [True, False])
def test_legacy_broadcast_opset6(op, b_shape, axis, b_const):
    """broadcast=1 with axis: B's dims line up with A's starting at `axis`."""
    a = rand(RNG, 3, 13, 3, 5)
    b = rand(RNG, *b_shape, lo=0.5, hi=2)
    attrs = {"broadcast": 1} if axis is None else {"broadcast": 1, "axis": axis}
    n = node(op, ["a", "b"], **attrs)
    inputs = {"a": a.shape} if b_const else {"a": a.shape, "b": b.shape}
    model = onnx_model([n], inputs, ["y"], {"b": b} if b_const else {}, opset=6)
    feeds = {"a": a} if b_const else {"a": a, "b": b}
    got = run_fastcnn_onnx(model, feeds)[0]
    start = (axis % 4) if axis is not None else 4 - len(b_shape)
    b_aligned = b.reshape(b_shape + (1,) * (4 - start - len(b_shape)))
    assert_close(got, _ref(op, a, b_aligned))


def test_legacy_broadcast_axis_out_of_range():
    model = onnx_model([node("Add", ["a", "b"], broadcast=1, axis=3)], {"a": (2, 3, 4, 5), "b": (4, 5)},
                       ["y"], opset=6)
    with pytest.raises(fastcnn.FastCNNError, match=r"node 'Add_0' \(Add\): legacy broadcast axis=3 does not fit input ranks 4 and 2"):
        run_fastcnn_onnx(model, {"a": np.zeros((2, 3, 4, 5), np.float32), "b": np.zeros((4, 5), np.float32)})


# ---------------------------------------------------------------------- unary math
UNARY_MATH = ["Exp", "Log", "Sqrt", "Neg", "Abs", "Reciprocal", "Floor", "Ceil", "Round", "Erf", "Sign"]


def _unary_ref(op, x):
    with np.errstate(all="ignore"):
        return ACTIVATIONS[op](np.asarray(x, np.float64))


@pytest.mark.parametrize("op", UNARY_MATH)
def test_unary_math(op, threads):
    x = rand(RNG, 3, 13, 33, 35, lo=-4, hi=4)
    x.reshape(-1)[:6] = [0.5, 1.5, 2.5, -0.5, -2.5, 0.0]   # Round: half to even
    if op in ("Log", "Sqrt"):
        x = np.abs(x) + np.float32(0.01)
    assert_close(run_op(op, {"x": x}, threads=threads)[0], _unary_ref(op, x), op)


@pytest.mark.parametrize("op", UNARY_MATH)
def test_unary_math_specials_and_layouts(op, layout):
    x = with_specials(rand(RNG, 2, 13, 3, lo=-3, hi=3))   # Log/Sqrt of negatives are NaN
    got = run_op(op, {"x": x}, layout=layout)[0]
    assert np.isnan(got.reshape(-1)[0])
    assert_close(got, _unary_ref(op, x), op)


@pytest.mark.parametrize("op", UNARY_MATH)
def test_unary_math_vs_onnxruntime(op):
    x = rand(RNG, 3, 13, 3, 5, lo=-4, hi=4)
    if op in ("Log", "Sqrt"):
        x = np.abs(x) + np.float32(0.01)
    got, ref = onnx_vs_ort(node(op, ["x"]), {"x": x}, opset=13)
    assert_close(got[0], ref[0], op)


def test_round_is_half_to_even():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999, -2.5001], np.float32)
    assert run_op("Round", {"x": x})[0].tolist() == [0, 2, 2, -0.0, -2, 2, -3]


def test_fold_only_op_at_run_time_is_refused():
    with pytest.raises(fastcnn.UnsupportedOpError,
                       match=r"node 'mod0' \(Mod\) has inputs known only at run time, but Mod can only be evaluated on constants"):
        run_op("Mod", {"a": rand(RNG, 2, 3), "b": rand(RNG, 2, 3)})


def test_shapes_that_do_not_broadcast():
    with pytest.raises(fastcnn.GraphError,
                       match=r"node 'add0' \(Add\): shapes \[3, 13, 3, 5\], \[4\] cannot be broadcast together"):
        run_op("Add", {"a": rand(RNG, 3, 13, 3, 5), "b": rand(RNG, 4)})


def test_more_than_six_broadcast_dims_is_unsupported():
    a, b = rand(RNG, 2, 1, 2, 1, 2, 1, 2), rand(RNG, 1, 2, 1, 2, 1, 2, 1)
    with pytest.raises(fastcnn.UnsupportedOpError, match=r"\(Add\): broadcasting over more than 6 dims"):
        run_op("Add", {"a": a, "b": b})

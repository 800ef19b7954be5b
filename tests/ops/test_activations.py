"""Activations: every standalone activation, PRelu, Softmax/LogSoftmax (any axis, opset < 13
coercion) against the numpy references and onnxruntime, with NaN/Inf, 1 and 2 threads and any
input layout."""
import numpy as np
import pytest

import fastcnn
from helpers import assert_close, rand
from oputil import node, onnx_vs_ort, run_op, with_specials
from reference import ACTIVATIONS, hardswish_loops, prelu, softmax

RNG = np.random.default_rng(77)

# op, attributes, reference, ONNX opset that has the op
CASES = [
    ("Relu", {}, ACTIVATIONS["Relu"], 14),
    ("LeakyRelu", {}, ACTIVATIONS["LeakyRelu"], 16),
    ("LeakyRelu", {"alpha": 0.3}, lambda x: ACTIVATIONS["LeakyRelu"](x, 0.3), 16),
    ("PReluScalar", {}, None, 16),
    ("Elu", {"alpha": 0.7}, lambda x: ACTIVATIONS["Elu"](x, 0.7), 6),
    ("Selu", {}, ACTIVATIONS["Selu"], 6),
    ("Selu", {"alpha": 1.2, "gamma": 0.8}, lambda x: ACTIVATIONS["Selu"](x, 1.2, 0.8), 6),
    ("Celu", {"alpha": 0.5}, lambda x: ACTIVATIONS["Celu"](x, 0.5), 12),
    ("ThresholdedRelu", {"alpha": 0.3}, lambda x: ACTIVATIONS["ThresholdedRelu"](x, 0.3), 10),
    ("Clip", {"min": -0.5, "max": 0.8}, lambda x: ACTIVATIONS["Clip"](x, -0.5, 0.8), 6),
    ("Clip", {"min": 0.0, "max": 6.0}, lambda x: ACTIVATIONS["Clip"](x, 0, 6), 6),   # ReLU6
    ("Clip", {"min": 0.5}, lambda x: ACTIVATIONS["Clip"](x, 0.5), 6),
    ("Clip", {"min": 1.0, "max": -1.0}, lambda x: np.minimum(np.maximum(x, 1.0), -1.0), 6),
    ("Sigmoid", {}, ACTIVATIONS["Sigmoid"], 13),
    ("Tanh", {}, ACTIVATIONS["Tanh"], 13),
    ("HardSigmoid", {}, ACTIVATIONS["HardSigmoid"], 6),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, lambda x: ACTIVATIONS["HardSigmoid"](x, 0.3, 0.4), 6),
    ("HardSwish", {}, hardswish_loops, 14),
    ("Softplus", {}, ACTIVATIONS["Softplus"], 1),
    ("Softsign", {}, ACTIVATIONS["Softsign"], 1),
    ("Gelu", {}, ACTIVATIONS["Gelu"], 20),
    ("Gelu", {"approximate": "tanh"}, ACTIVATIONS["GeluTanh"], 20),
    ("Mish", {}, ACTIVATIONS["Mish"], 18),
]


def case_id(c):
    return c[0] + "".join(f"_{k}{v}" for k, v in sorted(c[1].items()))


def _run(op, attrs, x, **kw):
    if op == "PReluScalar":
        return run_op("PRelu", {"x": x}, consts={"s": np.array([0.25], np.float32)}, **kw)[0]
    return run_op(op, {"x": x}, attrs, **kw)[0]


def _ref(op, ref, x):
    if op == "PReluScalar":
        return prelu(x, 0.25)
    with np.errstate(all="ignore"):
        return ref(np.asarray(x, np.float64))


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("shape", [(3, 13, 3, 5), (3, 13, 33, 35)], ids=["small", "parallel"])
def test_activation_matches_reference(case, shape, threads):
    op, attrs, ref, _ = case
    x = rand(RNG, *shape, lo=-5, hi=5)
    assert_close(_run(op, attrs, x, threads=threads), _ref(op, ref, x), case_id(case))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_activation_nan_inf(case):
    op, attrs, ref, _ = case
    x = with_specials(rand(RNG, 2, 13, 3))
    got = _run(op, attrs, x)
    assert np.isnan(got.reshape(-1)[0]), "NaN in must give NaN out"
    assert_close(got, _ref(op, ref, x), case_id(case))


@pytest.mark.parametrize("case", CASES[:6], ids=case_id)
def test_activation_input_layouts(case, layout):
    op, attrs, ref, _ = case
    x = rand(RNG, 3, 13, 3, 5, lo=-3, hi=3)
    assert_close(_run(op, attrs, x, layout=layout), _ref(op, ref, x))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_activation_vs_onnxruntime(case):
    op, attrs, _, opset = case
    x = rand(RNG, 3, 13, 3, 5, lo=-5, hi=5)
    if op == "PReluScalar":
        n, inits = node("PRelu", ["x", "s"]), {"s": np.array([0.25], np.float32)}
    elif op == "Clip":
        # opset 11+: bounds are inputs; test the attribute form at opset 6 and the input form
        n, inits = node("Clip", ["x"], **attrs), {}
        if attrs.get("min", -np.inf) <= attrs.get("max", np.inf):  # onnxruntime refuses it at opset 6
            got, ref = onnx_vs_ort(n, {"x": x}, inits, opset=6)
            assert_close(got[0], ref[0], "Clip opset 6")
        ins = ["x", "lo" if "min" in attrs else "", "hi" if "max" in attrs else ""]
        inits = {k: np.array(attrs[a], np.float32) for k, a in (("lo", "min"), ("hi", "max")) if a in attrs}
        n, opset = node("Clip", ins), 13
    else:
        n, inits = node(op, ["x"], **attrs), {}
    got, ref = onnx_vs_ort(n, {"x": x}, inits, opset=opset)
    assert_close(got[0], ref[0], case_id(case))


# ---------------------------------------------------------------------- PRelu
@pytest.mark.parametrize("slope_shape", [(13, 1, 1), (1,), (5,), (3, 5), (1, 13, 3, 5), (13, 3, 1)])
def test_prelu_broadcast_slopes(slope_shape, threads):
    x = rand(RNG, 3, 13, 3, 5)
    s = rand(RNG, *slope_shape, lo=-0.5, hi=1)
    got = run_op("PRelu", {"x": x}, consts={"s": s}, threads=threads)[0]
    assert_close(got, prelu(x, s), str(slope_shape))
    got, ref = onnx_vs_ort(node("PRelu", ["x", "s"]), {"x": x}, {"s": s}, opset=16)
    assert_close(got[0], ref[0], f"ort {slope_shape}")


def test_prelu_slope_at_run_time(layout):
    x, s = rand(RNG, 3, 13, 3, 5), rand(RNG, 13, 1, 1)
    got = run_op("PRelu", {"x": x, "s": s}, layout=layout)[0]
    assert_close(got, prelu(x, s))


def test_prelu_slope_that_does_not_broadcast_is_refused():
    with pytest.raises(fastcnn.GraphError, match=r"slope 's' shape \[4\] does not broadcast to input \[3, 13, 3, 5\]"):
        run_op("PRelu", {"x": rand(RNG, 3, 13, 3, 5)}, consts={"s": rand(RNG, 4)})


@pytest.mark.parametrize("rank", [3, 4, 5])
def test_prelu_opset6_per_channel_slope(rank):
    """Before opset 7 a (C,) slope applies along axis 1 whatever the rank."""
    shape = (2, 3, 4, 5, 6)[:rank]
    x, s = rand(RNG, *shape), rand(RNG, 3)
    from helpers import onnx_model, run_fastcnn_onnx
    got = run_fastcnn_onnx(onnx_model([node("PRelu", ["x", "s"])], {"x": shape}, ["y"], {"s": s}, opset=6), {"x": x})
    assert_close(got[0], prelu(x, s.reshape((3,) + (1,) * (rank - 2))))


# ---------------------------------------------------------------------- Softmax / LogSoftmax
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [-1, 0, 1, 2, 3, -3])
def test_softmax_any_axis(op, axis, threads):
    x = rand(RNG, 3, 13, 3, 5, lo=-4, hi=4)
    got = run_op(op, {"x": x}, {"axis": axis}, threads=threads)[0]
    assert_close(got, softmax(x, axis, log=op == "LogSoftmax"))


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_large_parallel_and_layouts(op, threads, layout):
    x = rand(RNG, 3, 13, 33, 35, lo=-50, hi=50)
    got = run_op(op, {"x": x}, {"axis": 1}, threads=threads, layout=layout)[0]
    assert_close(got, softmax(x, 1, log=op == "LogSoftmax"))


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_extremes(op):
    x = rand(RNG, 4, 6)
    x[0] = [1e4, -1e4, 3e3, 0, 1, 2]          # no overflow
    x[1, 2] = np.nan                            # NaN row
    x[2, :3] = -np.inf                          # masked entries get probability 0
    got = run_op(op, {"x": x}, {"axis": -1})[0]
    ref = softmax(np.where(np.isinf(x), x, x).astype(np.float64), -1, log=op == "LogSoftmax")
    assert np.isnan(got[1]).all()
    assert_close(got, ref)
    if op == "Softmax":
        assert (got[2, :3] == 0).all()


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset,axis", [(11, 1), (11, 2), (11, -1), (11, 0), (13, 1), (13, -2), (6, 1)])
def test_softmax_opsets_vs_onnxruntime(op, opset, axis):
    """Before opset 13 the input is coerced to 2-D at `axis` and each row normalised."""
    x = rand(RNG, 3, 4, 5, lo=-3, hi=3)
    got, ref = onnx_vs_ort(node(op, ["x"], axis=axis), {"x": x}, opset=opset)
    assert_close(got[0], ref[0])
    if opset < 13:
        a = axis % 3
        rows = x.reshape(int(np.prod(x.shape[:a])), -1)
        assert_close(got[0], softmax(rows, -1, log=op == "LogSoftmax").reshape(x.shape))


def test_softmax_bad_axis_is_refused():
    with pytest.raises(fastcnn.GraphError, match=r"node 'softmax0' \(Softmax\): axis=4 is out of range for rank 4"):
        run_op("Softmax", {"x": rand(RNG, 3, 13, 3, 5)}, {"axis": 4})


def test_celu_alpha_zero_is_refused():
    with pytest.raises(fastcnn.GraphError, match=r"\(Celu\): alpha must not be 0"):
        run_op("Celu", {"x": rand(RNG, 2, 3)}, {"alpha": 0.0})


# ---------------------------------------------------------------------- accuracy of the fast paths
GRID = np.concatenate([np.linspace(-100, 100, 200001), np.linspace(-1, 1, 100001),
                       np.linspace(-1e-3, 1e-3, 1001), [0.0, -0.0, 0.25, -0.25, 87.3, -87.3, 88.8, -88.8, 1e-30]])


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh", "Softplus", "Mish", "Swish"])
def test_transcendental_activations_within_a_few_ulp(op):
    """The exp-based kernels (no libm, vectorised) against float64: relative error below 4e-7
    (a few float32 ulp) over [-100, 100] and near 0, wherever |result| > 1e-30 (exp(-|x|)
    flushes to 0 below 2^-126, so x * exp(x) for x < -87 is 0 instead of a value < 1e-36)."""
    from reference import swish
    x = GRID.astype(np.float32)
    ref = swish(x) if op == "Swish" else ACTIVATIONS[op](x.astype(np.float64))
    got = run_op(op, {"x": x})[0]
    normal = np.abs(ref) > 1e-30
    rel = np.abs(got[normal] - ref[normal]) / np.abs(ref[normal])
    assert rel.max() < 4e-7, f"{op}: max relative error {rel.max():.3g} at x = {x[normal][rel.argmax()]}"
    assert np.abs(got[~normal]).max(initial=0) < 1e-30

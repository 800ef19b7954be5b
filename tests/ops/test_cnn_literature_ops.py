"""fastcnn operators from the CNN literature that ONNX lacks: Maxout, StochasticPool (inference
form) and Swish, against the numpy references (odd shapes, 1 and 2 threads, layouts, NaN) and
their validation errors. Swish also against onnxruntime through its ONNX spelling x*Sigmoid(x)."""
import numpy as np
import pytest

import fastcnn
from helpers import assert_close, ir_model, rand
from oputil import node, onnx_vs_ort, run_op, with_specials
from reference import maxout, pool1d, pool2d, swish

RNG = np.random.default_rng(31)


# ---------------------------------------------------------------------- Maxout
@pytest.mark.parametrize("shape,pieces", [((3, 13 * 2, 3, 5), 2), ((2, 12, 7), 3), ((3, 5, 4, 4), 5),
                                          ((2, 7, 3, 3), 1), ((4, 12), 4), ((3, 40, 30, 30), 4)])
def test_maxout_matches_reference(shape, pieces, threads):
    x = rand(RNG, *shape)
    got = run_op("Maxout", {"x": x}, {"pieces": pieces}, threads=threads)[0]
    assert got.shape == (shape[0], shape[1] // pieces) + shape[2:]
    assert_close(got, maxout(x, pieces))


def test_maxout_worked_example():
    x = np.array([[[1.0], [5.0], [-2.0], [3.0], [0.5], [-1.0]]], np.float32)   # (1, 6, 1)
    assert run_op("Maxout", {"x": x}, {"pieces": 2})[0].ravel().tolist() == [5.0, 3.0, 0.5]
    assert run_op("Maxout", {"x": x}, {"pieces": 3})[0].ravel().tolist() == [5.0, 3.0]


def test_maxout_nan_and_layouts(layout):
    x = with_specials(rand(RNG, 2, 8, 3, 3))
    got = run_op("Maxout", {"x": x}, {"pieces": 4}, layout=layout)[0]
    assert np.isnan(got[0, 0, 0, 0])
    assert_close(got, maxout(x, 4))


@pytest.mark.parametrize("pieces,msg", [(3, r"pieces=3 must be >= 1 and divide the 8 channels of 'x'"),
                                        (0, r"pieces=0 must be >= 1")])
def test_maxout_bad_pieces_are_refused(pieces, msg):
    with pytest.raises(fastcnn.GraphError, match=r"node 'maxout0' \(Maxout\): " + msg):
        run_op("Maxout", {"x": rand(RNG, 2, 8, 3)}, {"pieces": pieces})


def test_maxout_needs_pieces():
    with pytest.raises(fastcnn.GraphError, match=r"attribute 'pieces' is required"):
        run_op("Maxout", {"x": rand(RNG, 2, 8, 3)})


# ---------------------------------------------------------------------- StochasticPool
GEOMETRIES = [
    ((3, 13, 3, 5), (2, 2), (1, 1), (0, 0, 0, 0), 0),
    ((3, 13, 3, 5), (3, 3), (3, 4), (1, 1, 1, 1), 0),       # stride > kernel
    ((2, 5, 7, 6), (3, 2), (2, 2), (2, 1, 0, 1), 1),        # asymmetric pads, ceil
    ((1, 3, 5, 5), (2, 2), (2, 2), (0, 0, 0, 0), 1),        # ceil: partial last window
    ((3, 4, 1, 1), (1, 1), (1, 1), (0, 0, 0, 0), 0),
    ((2, 6, 33, 35), (3, 3), (2, 2), (1, 1, 1, 1), 0),      # parallel path
]


@pytest.mark.parametrize("geo", GEOMETRIES, ids=lambda g: "x".join(map(str, g[0])) + f"_k{g[1]}_s{g[2]}_c{g[4]}")
def test_stochastic_pool_matches_reference(geo, threads):
    shape, k, s, p, ceil = geo
    x = rand(RNG, *shape, lo=-1, hi=2)      # a third of the values are negative: they weigh 0
    attrs = {"kernel_shape": list(k), "strides": list(s), "pads": list(p), "ceil_mode": ceil}
    got = run_op("StochasticPool", {"x": x}, attrs, threads=threads)[0]
    assert_close(got, pool2d(x, "stochastic", k, s, p, ceil_mode=bool(ceil)))


def test_stochastic_pool_worked_example():
    """Window [1, 3, -2, 0]: weights a/sum(a+) over the non-negative values, so the result is
    (1*1 + 3*3) / (1 + 3) = 2.5. An all-non-positive window gives 0."""
    x = np.array([[[[1, 3, -1, -2], [-2, 0, -3, 0]]]], np.float32)
    got = run_op("StochasticPool", {"x": x}, {"kernel_shape": [2, 2], "strides": [2, 2]})[0]
    assert got.ravel().tolist() == [2.5, 0.0]


def test_stochastic_pool_1d_auto_pad_and_layouts(layout):
    x = rand(RNG, 3, 5, 11, lo=-1, hi=2)
    got = run_op("StochasticPool", {"x": x}, {"kernel_shape": [3], "strides": [2], "auto_pad": "SAME_UPPER"},
                 layout=layout)[0]
    # SAME_UPPER: out = ceil(11 / 2) = 6, total padding (6-1)*2 + 3 - 11 = 2 split 1 / 1
    assert_close(got, pool1d(x, "stochastic", 3, 2, (1, 1)))


def test_stochastic_pool_nan_propagates():
    x = rand(RNG, 1, 2, 4, 4, lo=0.1, hi=1)
    x[0, 0, 0, 0] = np.nan
    got = run_op("StochasticPool", {"x": x}, {"kernel_shape": [2, 2], "strides": [2, 2]})[0]
    assert np.isnan(got[0, 0, 0, 0]) and not np.isnan(got[0, 0, 1, 1]) and not np.isnan(got[0, 1]).any()


@pytest.mark.parametrize("attrs,msg", [
    ({"kernel_shape": [2, 2], "count_include_pad": 1}, r"unknown attribute\(s\) 'count_include_pad'"),
    ({"kernel_shape": [2, 2], "dilations": [2, 2]}, r"unknown attribute\(s\) 'dilations'"),
    ({"kernel_shape": [2, 2], "pads": [2, 0, 0, 0]}, r"pads \[2, 0, 0, 0\] must be smaller than kernel_shape"),
    ({"kernel_shape": [5, 5]}, r"kernel \[5, 5\] \(dilations \[1, 1\]\) is larger than the padded input"),
])
def test_stochastic_pool_bad_attributes_are_refused(attrs, msg):
    with pytest.raises(fastcnn.GraphError, match=r"\(StochasticPool\): " + msg):
        run_op("StochasticPool", {"x": rand(RNG, 1, 2, 4, 4)}, attrs)


# ---------------------------------------------------------------------- Swish
@pytest.mark.parametrize("alpha", [1.0, 1.702, 0.5, -0.3])
def test_swish_matches_reference(alpha, threads):
    x = rand(RNG, 3, 13, 33, 35, lo=-8, hi=8)
    got = run_op("Swish", {"x": x}, {"alpha": alpha}, threads=threads)[0]
    assert_close(got, swish(x, alpha))


def test_swish_default_is_silu_and_specials(layout):
    x = with_specials(rand(RNG, 3, 13, 3, 5, lo=-90, hi=90))
    got = run_op("Swish", {"x": x}, layout=layout)[0]
    # NaN -> NaN, inf -> inf, -inf -> NaN (-inf * 0, as the unfused x * Sigmoid(x) gives)
    assert np.isnan(got.ravel()[0]) and got.ravel()[1] == np.inf and np.isnan(got.ravel()[2])
    assert_close(got, swish(x))


def test_swish_folds_on_constants():
    c = rand(RNG, 4, 5)
    m = ir_model([("Swish", ["c"], ["s"], {"alpha": 2.0}), ("Add", ["x", "s"], ["y"], {})],
                 {"x": (4, 5)}, ["y"], {"c": c})
    assert [n.op for n in m.graph.nodes] == ["Add"]
    x = rand(RNG, 4, 5)
    assert_close(m.run(None, {"x": x})[0], x + swish(c, 2.0))


@pytest.mark.parametrize("opset", [7, 13])
def test_silu_as_exported_vs_onnxruntime(opset):
    """PyTorch writes SiLU as Mul(x, Sigmoid(x)); fastcnn runs it as one Swish."""
    x = rand(RNG, 3, 13, 3, 5, lo=-6, hi=6)
    got, ref = onnx_vs_ort([node("Sigmoid", ["x"], ["s"]), node("Mul", ["x", "s"])], {"x": x}, opset=opset)
    assert_close(got[0], ref[0])
    assert_close(got[0], swish(x))


@pytest.mark.parametrize("alpha", [1.0, 1.7])
def test_swish_as_conv_and_gemm_epilogue(alpha, threads):
    """The form fastcnn.nn emits: activation="Swish" with activation_alpha on Conv and Gemm."""
    from reference import conv2d, gemm
    x, w, b = rand(RNG, 3, 5, 6, 7), rand(RNG, 4, 5, 3, 3), rand(RNG, 4)
    epi = {"activation": "Swish", "activation_alpha": alpha}
    got = run_op("Conv", {"x": x}, {"pads": [1, 1, 1, 1], **epi}, consts={"w": w, "b": b}, threads=threads)[0]
    assert_close(got, swish(conv2d(x, w, b, pads=(1, 1, 1, 1)), alpha))
    a, wm, c = rand(RNG, 3, 13), rand(RNG, 13, 6), rand(RNG, 6)
    got = run_op("Gemm", {"a": a}, epi, consts={"w": wm, "c": c}, threads=threads)[0]
    assert_close(got, swish(gemm(a, wm, c), alpha))

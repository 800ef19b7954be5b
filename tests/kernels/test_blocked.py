"""NCHW8c ("blocked") kernels (fastcnn/_kernels/blocked.pyx) against the numpy reference, and
the planner's layout assignment (fastcnn/runtime/blocking.py) through whole graphs: blocked and
all-NCHW plans of the same model agree, model inputs and outputs stay NCHW, and a tensor is
blocked only where every consumer can read it so."""
import numpy as np
import pytest

from act_reference import apply
from helpers import assert_close, ir_model, rand
from reference import conv2d, out_size, pool2d

from fastcnn._kernels import blocked as bk
from fastcnn._kernels.eltwise import ACT_CODES
from fastcnn._kernels.gemm import pack_b_panels
from fastcnn.runtime import k_conv
from fastcnn.runtime import plan as plan_module

RNG = np.random.default_rng(88)


def to_blocked(x):
    """Independent numpy NCHW -> NCHW8c (same shape, permuted bytes)."""
    n, c = x.shape[:2]
    hw = int(np.prod(x.shape[2:]))
    return np.ascontiguousarray(x.reshape(n, c // 8, 8, hw).transpose(0, 1, 3, 2)).reshape(x.shape)


def from_blocked(y):
    n, c = y.shape[:2]
    hw = int(np.prod(y.shape[2:]))
    return np.ascontiguousarray(y.reshape(n, c // 8, hw, 8).transpose(0, 1, 3, 2)).reshape(y.shape)


@pytest.mark.parametrize("shape", [(1, 8, 1, 1), (2, 16, 5, 7), (1, 24, 3, 3), (3, 32, 9, 11)])
def test_reorder_both_ways(shape, threads):
    x = rand(RNG, *shape)
    out = np.full_like(x, np.nan)
    n, c = shape[:2]
    hw = shape[2] * shape[3]
    step = bk.ReorderStep(x.reshape(-1), out.reshape(-1), n, c, hw, True)
    step.num_threads = threads
    step()
    assert np.array_equal(out, to_blocked(x))
    back = np.full_like(x, np.nan)
    bk.ReorderStep(out.reshape(-1), back.reshape(-1), n, c, hw, False)()
    assert np.array_equal(back, x)


def test_reorder_refuses_bad_shapes():
    x = np.zeros(12 * 4, np.float32)
    with pytest.raises(ValueError):
        bk.ReorderStep(x, x.copy(), 1, 12, 4)
    with pytest.raises(ValueError):
        bk.ReorderStep(x, np.zeros(8, np.float32), 1, 16, 3)


# (n, c_in, c_out, h, w): panels of 16 and a last panel of 8, tiles of 6 pixels and remainders,
# last 24 channels in 4x24 tiles (c_out 24, 40, 56: 15, 20 and 49 pixels leave 3, 0 and 1),
# a band's last 1 or 2 pixels in 2x16 tiles (49 and 8 pixels), several K blocks (kc = 16
# below), one-pixel images
POINTWISE = [(1, 8, 8, 1, 1), (2, 16, 24, 5, 3), (1, 40, 16, 7, 7), (3, 24, 40, 4, 5),
             (1, 32, 56, 7, 7), (2, 16, 32, 4, 2), (1, 96, 144, 14, 14),
             (1, 8, 1280 // 8, 2, 9)]


@pytest.mark.parametrize("n,c_in,c_out,h,w", POINTWISE)
@pytest.mark.parametrize("act", ["", "Relu", "Clip", "HardSwish", "LeakyRelu", "HardSigmoid",
                                 "Sigmoid", "Tanh"])
def test_pointwise_blocked(n, c_in, c_out, h, w, act, threads):
    x, wt = rand(RNG, n, c_in, h, w), rand(RNG, c_out, c_in, 1, 1)
    b, res = rand(RNG, c_out), rand(RNG, n, c_out, h, w)
    out = np.full((n, c_out, h, w), np.nan, np.float32)
    alpha, beta = {"Clip": (0.0, 1.5), "LeakyRelu": (0.2, 0.0),
                   "HardSigmoid": (0.3, 0.4)}.get(act, (0.0, 0.0))
    step = bk.PointwiseBlockedStep(to_blocked(x).reshape(-1),
                                   pack_b_panels(wt.reshape(c_out, c_in).T),
                                   bk.pad_bias16(b, c_out), to_blocked(res).reshape(-1),
                                   out.reshape(-1), n, c_in, c_out, h * w, ACT_CODES[act], alpha,
                                   beta, kc=16)
    step.num_threads = threads
    step()
    ref = conv2d(x, wt, b) + res
    assert_close(from_blocked(out), apply(act, ref, alpha, beta) if act else ref)


@pytest.mark.parametrize("n,c_in,c_out,h,w", [
    (1, 64, 96, 14, 14),    # 2.4M multiply-adds, 3 bands: a range of channel panels per thread
    (1, 64, 88, 14, 14),    # the same with 5 panels of 16 and one of 8 (ranges of 2 and 4)
    (1, 64, 56, 14, 14),    # 3 panels and one of 8: the 4x24 pair split over threads or not
    (1, 16, 48, 33, 31),    # 11 bands of 96 pixels: contiguous band ranges per thread (static)
    (3, 16, 48, 16, 16),    # 9 bands over 3 images
])
def test_pointwise_blocked_bit_identical_threads(n, c_in, c_out, h, w):
    x, wt, b = rand(RNG, n, c_in, h, w), rand(RNG, c_out, c_in, 1, 1), rand(RNG, c_out)
    outs = []
    for nt in (1, 2):
        out = np.zeros((n, c_out, h, w), np.float32)
        step = bk.PointwiseBlockedStep(to_blocked(x).reshape(-1),
                                       pack_b_panels(wt.reshape(c_out, c_in).T),
                                       bk.pad_bias16(b, c_out), None, out.reshape(-1), n, c_in,
                                       c_out, h * w, ACT_CODES["Relu"], 0.0, 0.0, 32)
        step.num_threads = nt
        step()
        outs.append(out)
    assert np.array_equal(outs[0], outs[1])
    assert_close(from_blocked(outs[0]), np.maximum(conv2d(x, wt, b), 0))


def test_pointwise_blocked_validation():
    x = np.zeros(16 * 4, np.float32)
    wp = pack_b_panels(np.zeros((16, 8), np.float32))
    with pytest.raises(ValueError):   # channels not a multiple of 8
        bk.PointwiseBlockedStep(np.zeros(12 * 4, np.float32), wp, None, None,
                                np.zeros(8 * 4, np.float32), 1, 12, 8, 4)
    with pytest.raises(ValueError):   # packed weights of another shape (c_in 8, not 16)
        bk.PointwiseBlockedStep(x, pack_b_panels(np.zeros((8, 8), np.float32)), None, None,
                                np.zeros(8 * 4, np.float32), 1, 16, 8, 4)
    bk.PointwiseBlockedStep(x, wp, None, None, np.zeros(8 * 4, np.float32), 1, 16, 8, 4)  # fits
    with pytest.raises(ValueError):   # bias not padded to 16
        bk.PointwiseBlockedStep(np.zeros(16 * 4, np.float32), pack_b_panels(np.zeros((16, 8), np.float32)),
                                np.zeros(8, np.float32), None, np.zeros(8 * 4, np.float32), 1, 16, 8, 4)
    with pytest.raises(ValueError):   # kc not a multiple of 8
        bk.PointwiseBlockedStep(np.zeros(16 * 4, np.float32), pack_b_panels(np.zeros((16, 8), np.float32)),
                                None, None, np.zeros(8 * 4, np.float32), 1, 16, 8, 4, kc=12)


# (n, c, h, w, kernel, strides, pads (t, l, b, r), dilations)
DEPTHWISE = [
    (1, 8, 7, 7, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),       # narrow rows: repeated pixels
    (2, 16, 14, 14, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    (1, 8, 5, 3, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    (1, 24, 20, 37, (5, 3), (2, 1), (2, 1, 2, 1), (1, 2)),    # dilation, stride along h only
    (1, 8, 9, 40, (3, 3), (3, 3), (0, 2, 1, 1), (1, 1)),      # stride 3
    (1, 8, 1, 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),       # one pixel
    (3, 8, 12, 30, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1)),     # no padding
    (1, 16, 11, 19, (2, 4), (1, 2), (3, 3, 2, 4), (2, 1)),    # pads beyond the kernel
    (1, 8, 40, 9, (35, 1), (1, 1), (0, 0, 0, 0), (1, 1)),     # ring taller than RING_MAX
    (2, 16, 6, 11, (3, 3), (3, 3), (1, 1, 1, 1), (1, 1)),     # narrow rows, stride 3 (> kernel)
    (1, 8, 9, 13, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),      # narrow rows, stride 2
    (1, 16, 17, 21, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),    # 5 wide: columns reused, last group shifted
    (2, 8, 23, 29, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1)),     # 5 wide, stride 2
    (1, 8, 6, 12, (3, 5), (1, 1), (1, 2, 1, 2), (1, 1)),      # 5 wide, 3 tall
    (2, 16, 7, 7, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),      # 5 wide, rows narrower than a group
    (1, 8, 13, 13, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1)),     # the same at stride 2
]


@pytest.mark.parametrize("w_out,s", [(1, 1), (7, 1), (7, 2), (4, 3), (8, 1), (30, 2)])
def test_depthwise_rings_hold_a_whole_group(w_out, s):
    """row3x3_narrow computes a row narrower than DW_PIXELS (8) as a whole group whose extra
    lanes read the ring row's zero padding: both rings must be that wide (else the last ring
    row's group reads past the scratch), and at least as wide as the padded input row."""
    w_in = (w_out - 1) * s + 1
    shape_in, shape_out = (1, 16, 5, w_in), (1, 16, 5, w_out)
    _, wp = bk.depthwise_ring(shape_in, shape_out, (3, 3), (s, s), (1, 1), (1, 1))
    wp_e, row = bk.expand_depthwise_ring(shape_in, shape_out, (s, s), (1, 1))
    need = max(1 + w_in, (max(w_out, 8) - 1) * s + 3)
    assert wp == wp_e == need and row == 16 * need


@pytest.mark.parametrize("case", DEPTHWISE, ids=lambda c: f"{c[:4]}_k{c[4]}_s{c[5]}_p{c[6]}_d{c[7]}")
@pytest.mark.parametrize("ring", [True, False])
def test_depthwise_blocked(case, ring, threads):
    n, c, h, w, k, s, p, d = case
    x, wt, b = rand(RNG, n, c, h, w), rand(RNG, c, 1, *k), rand(RNG, c)
    ho, wo = out_size(h, k[0], s[0], p[0], p[2], d[0]), out_size(w, k[1], s[1], p[1], p[3], d[1])
    res = rand(RNG, n, c, ho, wo)
    out = np.full((n, c, ho, wo), np.nan, np.float32)
    slots = max(1, threads)
    work = np.zeros(slots * bk.depthwise_blocked_scratch((n, c, h, w), (n, c, ho, wo), k, s, p[:2], d) + 1,
                    np.float32)
    step = bk.DepthwiseBlockedStep(to_blocked(x).reshape(-1), bk.pack_depthwise_blocked(wt), b,
                                   to_blocked(res).reshape(-1), out.reshape(-1), (n, c, h, w),
                                   (n, c, ho, wo), k, s, p[:2], d, ACT_CODES["Clip"], -0.5, 1.0,
                                   work, slots, ring)
    step.num_threads = threads
    step()
    assert_close(from_blocked(out), np.clip(conv2d(x, wt, b, s, p, d, c) + res, -0.5, 1.0))


FIVE_WIDE = [c for c in DEPTHWISE if c[4][1] == 5]


@pytest.mark.parametrize("case", FIVE_WIDE, ids=lambda c: f"{c[:4]}_k{c[4]}_s{c[5]}")
@pytest.mark.parametrize("act", ["", "Swish"])
def test_depthwise_blocked_5_wide_rows_match_the_generic_loop(case, act, threads):
    """The 5-wide row function (ring) and the generic tap loop (no ring) give the same bits,
    and the values of the reference, with no clipping to hide a wrong sum: unactivated, and
    with SiLU (EfficientNet's) after a residual."""
    n, c, h, w, k, s, p, d = case
    x, wt, b = rand(RNG, n, c, h, w), rand(RNG, c, 1, *k), rand(RNG, c)
    ho, wo = out_size(h, k[0], s[0], p[0], p[2], d[0]), out_size(w, k[1], s[1], p[1], p[3], d[1])
    res = rand(RNG, n, c, ho, wo)
    slots = max(1, threads)
    work = np.zeros(slots * bk.depthwise_blocked_scratch((n, c, h, w), (n, c, ho, wo), k, s, p[:2], d) + 1,
                    np.float32)
    outs = []
    for ring in (True, False):
        out = np.full((n, c, ho, wo), np.nan, np.float32)
        step = bk.DepthwiseBlockedStep(to_blocked(x).reshape(-1), bk.pack_depthwise_blocked(wt), b,
                                       to_blocked(res).reshape(-1), out.reshape(-1), (n, c, h, w),
                                       (n, c, ho, wo), k, s, p[:2], d, ACT_CODES[act], 1.0, 0.0,
                                       work, slots, ring)
        step.num_threads = threads
        step()
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])
    ref = conv2d(x, wt, b, s, p, d, c) + res
    assert_close(from_blocked(outs[0]), apply(act, ref, 1.0, 0.0) if act else ref)


# Pre-activation values at the activations' edges: signed zeros, the HardSigmoid/HardSwish knees
# (+-3, +-2.5 for alpha 0.2) and their float neighbours, tiny and huge magnitudes, inf and NaN,
# and where the sigmoid's exp changes regime.
EDGES = np.array([0.0, -0.0, 3.0, -3.0, np.nextafter(3, 0), np.nextafter(-3, 0), np.nextafter(3, 4),
                  np.nextafter(-3, -4), 2.5, -2.5, 1e-30, -1e-30, 1e-40, -1e-40, 3e38, -3e38, 0.5,
                  -0.5, 7.0, -7.0, 1.0, np.inf, -np.inf, np.nan,
                  # sigmoid: exp's range limit (-87.34), its neighbours and the reduction steps
                  87.3, -87.3, 88.0, -88.0, 87.33654, -87.33654, 16.0, -16.0, 0.34657, -0.34657,
                  1e-3, -1e-3], np.float32)
EPILOGUE_ACTS = [("Relu", 0.0, 0.0), ("LeakyRelu", 0.1, 0.0), ("LeakyRelu", -1.5, 0.0),
                 ("LeakyRelu", 0.0, 0.0), ("Clip", -0.5, 0.75), ("HardSigmoid", 0.2, 0.5),
                 ("HardSigmoid", 1 / 6, 0.5), ("HardSwish", 0.0, 0.0), ("Sigmoid", 0.0, 0.0),
                 ("Swish", 1.0, 0.0)]


def assert_same_floats(got, want):
    """Bit for bit up to NaN payloads: equal values, NaN where NaN, equal signs of zeros."""
    np.testing.assert_array_equal(got, want)
    real = ~np.isnan(want)     # a NaN's sign bit means nothing
    assert np.array_equal(np.signbit(got[real]), np.signbit(want[real]))


@pytest.mark.parametrize("name,alpha,beta", EPILOGUE_ACTS)
def test_vector_epilogues_equal_the_scalar_activations(name, alpha, beta):
    """The activations fused into the blocked kernels' stores (act_vec on eight lanes, or the
    act_span fallback) give exactly the values of the standalone activation (eltwise.unary, one
    float at a time) on the same pre-activation values, edges included."""
    from fastcnn._kernels.eltwise import unary
    code = ACT_CODES[name]
    # depthwise 1x1, weight 1, no bias: the pre-activation is x + 0 (-0.0 turns into 0.0)
    n, c, h, w = 1, 16, 2, 9     # rows of 9: one group of 8 pixels and a narrow rest
    x = np.resize(EDGES, n * c * h * w).reshape(n, c, h, w)
    wt = np.ones((c, 1, 1, 1), np.float32)
    outs = []
    for act in (0, code):
        out = np.full(x.size, np.nan, np.float32)
        bk.DepthwiseBlockedStep(to_blocked(x).reshape(-1), bk.pack_depthwise_blocked(wt), None,
                                None, out, x.shape, x.shape, (1, 1), (1, 1), (0, 0), (1, 1),
                                act, alpha, beta)()
        outs.append(out)
    want = np.empty_like(outs[0])
    unary(outs[0], want, code, alpha, beta)
    assert_same_floats(outs[1], want)
    # pointwise, weights picking one input channel each: out[co] = x[co % 8] exactly (finite
    # values only: 0 * inf would be NaN)
    finite = EDGES[np.isfinite(EDGES)]
    x = np.resize(finite, 8 * 13).reshape(1, 8, 1, 13)
    wt = np.zeros((24, 8), np.float32)
    wt[np.arange(24), np.arange(24) % 8] = 1.0
    outs = []
    for act in (0, code):
        out = np.full(24 * 13, np.nan, np.float32)
        bk.PointwiseBlockedStep(to_blocked(x).reshape(-1), pack_b_panels(wt.T), None, None, out,
                                1, 8, 24, 13, act, alpha, beta)()
        outs.append(out)
    want = np.empty_like(outs[0])
    unary(outs[0], want, code, alpha, beta)
    assert_same_floats(outs[1], want)


@pytest.mark.parametrize("n,c,h,w", [
    (1, 96, 28, 28),    # 6.8M multiply-adds, 9 input bands: row halves per thread (static)
    (1, 96, 14, 14),    # 3 input bands, 12 channel blocks: a range of blocks per thread
    (1, 56, 16, 18),    # 3 input bands, 7 blocks: blocks and row halves scheduled dynamically
    (3, 16, 21, 19),    # 15 input bands over 3 images (static)
])
def test_depthwise_blocked_bit_identical_threads(n, c, h, w):
    x, wt, b = rand(RNG, n, c, h, w), rand(RNG, c, 1, 3, 3), rand(RNG, c)
    outs = []
    for nt in (1, 2):
        out = np.zeros((n, c, h, w), np.float32)
        step = bk.DepthwiseBlockedStep(to_blocked(x).reshape(-1), bk.pack_depthwise_blocked(wt), b,
                                       None, out.reshape(-1), (n, c, h, w), (n, c, h, w), (3, 3),
                                       (1, 1), (1, 1), (1, 1), 0, 0.0, 0.0, None, 2)
        step.num_threads = nt
        step()
        outs.append(out)
    assert np.array_equal(outs[0], outs[1])
    assert_close(from_blocked(outs[1]), conv2d(x, wt, b, (1, 1), (1, 1, 1, 1), (1, 1), c))


def aligned_nan(size, offset=0):
    """A float32 array of `size` NaNs starting `offset` floats past a 64-byte boundary."""
    raw = np.full(size + 32, np.nan, np.float32)
    start = (-raw.ctypes.data // 4) % 16 + offset
    return raw[start:start + size]


@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("n,c_in,c_out,h,w,act", [(2, 16, 24, 5, 3, "Clip"),
                                                  (1, 40, 16, 7, 7, "HardSwish"),
                                                  (3, 24, 40, 4, 5, "")])
def test_pointwise_blocked_stream(n, c_in, c_out, h, w, act, offset, threads):
    """Non-temporal stores (large outputs) write the same bits as cached stores; an output not
    32-byte aligned falls back to cached stores."""
    x, wt = rand(RNG, n, c_in, h, w), rand(RNG, c_out, c_in, 1, 1)
    b, res = rand(RNG, c_out), rand(RNG, n, c_out, h, w)
    alpha, beta = (0.0, 1.5) if act == "Clip" else (0.0, 0.0)
    outs = []
    for stream in (False, True):
        out = aligned_nan(n * c_out * h * w, offset)
        step = bk.PointwiseBlockedStep(to_blocked(x).reshape(-1),
                                       pack_b_panels(wt.reshape(c_out, c_in).T),
                                       bk.pad_bias16(b, c_out), to_blocked(res).reshape(-1), out,
                                       n, c_in, c_out, h * w, ACT_CODES[act], alpha, beta, 16,
                                       stream)
        assert step.stream == (stream and offset == 0)
        step.num_threads = threads
        step()
        outs.append(out)
    assert np.array_equal(outs[0], outs[1])
    ref = conv2d(x, wt, b) + res
    assert_close(from_blocked(outs[1].reshape(n, c_out, h, w)),
                 apply(act, ref, alpha, beta) if act else ref)


@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("case", [DEPTHWISE[0], DEPTHWISE[1], DEPTHWISE[3]],
                         ids=lambda c: f"{c[:4]}_k{c[4]}_s{c[5]}")
@pytest.mark.parametrize("act", ["Clip", "HardSwish"])
def test_depthwise_blocked_stream(case, act, offset, threads):
    n, c, h, w, k, s, p, d = case
    x, wt, b = rand(RNG, n, c, h, w), rand(RNG, c, 1, *k), rand(RNG, c)
    ho, wo = out_size(h, k[0], s[0], p[0], p[2], d[0]), out_size(w, k[1], s[1], p[1], p[3], d[1])
    alpha, beta = (-0.5, 1.0) if act == "Clip" else (0.0, 0.0)
    outs = []
    for stream in (False, True):
        out = aligned_nan(n * c * ho * wo, offset)
        step = bk.DepthwiseBlockedStep(to_blocked(x).reshape(-1), bk.pack_depthwise_blocked(wt), b,
                                       None, out, (n, c, h, w), (n, c, ho, wo), k, s, p[:2], d,
                                       ACT_CODES[act], alpha, beta, None, 2, True, stream)
        assert step.stream == (stream and offset == 0)
        step.num_threads = threads
        step()
        outs.append(out)
    assert np.array_equal(outs[0], outs[1])
    ref = conv2d(x, wt, b, s, p, d, c)
    assert_close(from_blocked(outs[1].reshape(n, c, ho, wo)), apply(act, ref, alpha, beta))


# (n, c, h, w, kernel, stride, pads (top, left, bottom, right), dilation): the common 2x2/2 and
# 3x3/2 pad 1, a window larger than the stride, stride > kernel, padding on every side with
# stride 1, dilation, rows narrower and wider than 8 output pixels
MAXPOOL = [(2, 16, 16, 16, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1)),
           (1, 8, 13, 11, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
           (3, 24, 9, 20, (3, 2), (1, 1), (0, 1, 2, 0), (1, 1)),
           (1, 8, 10, 10, (2, 2), (3, 3), (0, 0, 0, 0), (1, 1)),
           (1, 16, 5, 6, (2, 3), (1, 1), (1, 2, 1, 2), (1, 1)),
           (2, 8, 12, 17, (3, 3), (1, 2), (1, 1, 1, 1), (2, 2)),
           (1, 8, 10, 11, (3, 3), (2, 2), (0, 0, 0, 0), (1, 1), True),   # ceil_mode: last window
                                                                      # past the input
           # inputs large enough for two threads, which split the rows of few planes (evenly,
           # and 23 output rows in 4 ranges)
           (1, 32, 32, 32, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1)),
           (1, 16, 45, 47, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1))]


@pytest.mark.parametrize("case", MAXPOOL, ids=lambda c: f"{c[:4]}_k{c[4]}_s{c[5]}_p{c[6]}_d{c[7]}")
@pytest.mark.parametrize("out_blocked", [True, False])
def test_maxpool_blocked(case, out_blocked, threads):
    n, c, h, w, kernel, stride, pads, dil = case[:8]
    x = rand(RNG, n, c, h, w)
    x[0, 1, 1, 1] = np.nan      # NaN propagates, as in the NCHW kernel (every case reads it)
    x[n - 1, c - 1, h // 2, w - 3] = np.nan     # and in windows away from the edges, where
    x[0, c // 2, h - 2, w // 2 + 1] = np.nan    # whole groups of eight take the fast path
    x[0, 0, h // 2, 1:w:3] = np.inf
    ref = pool2d(x, "max", kernel, stride, pads, dil, ceil_mode=case[8:] == (True,))
    ref = ref.astype(np.float32)
    h_out, w_out = ref.shape[2:]
    out = np.full(n * c * h_out * w_out, 7.0, np.float32)
    step = bk.MaxPoolBlockedStep(to_blocked(x).reshape(-1), out, (n, c, h, w),
                                 (n, c, h_out, w_out), kernel, stride, pads[:2], dil, out_blocked)
    step.num_threads = threads
    step()
    got = out.reshape(n, c, h_out, w_out)
    got = from_blocked(got) if out_blocked else got
    assert np.array_equal(np.isnan(got), np.isnan(ref)) and np.isnan(ref).any()
    assert np.array_equal(got, ref, equal_nan=True)


def test_maxpool_blocked_refuses_bad_shapes():
    x = np.zeros(8 * 16, np.float32)
    with pytest.raises(ValueError):
        bk.MaxPoolBlockedStep(x, np.zeros(8 * 3, np.float32), (1, 8, 4, 4), (1, 8, 2, 2), (2, 2),
                              (2, 2), (0, 0), (1, 1), True)
    bk.MaxPoolBlockedStep(x, np.zeros(8 * 4, np.float32), (1, 8, 4, 4), (1, 8, 2, 2), (2, 2),
                          (2, 2), (0, 0), (1, 1), True)   # fits
    with pytest.raises(ValueError):
        bk.MaxPoolBlockedStep(np.zeros(12 * 16, np.float32), np.zeros(12 * 4, np.float32),
                              (1, 12, 4, 4), (1, 12, 2, 2), (2, 2), (2, 2), (0, 0), (1, 1), True)
    with pytest.raises(ValueError):
        bk.MaxPoolBlockedStep(x, np.zeros(8 * 4, np.float32), (1, 8, 4, 4), (1, 8, 2, 2), (0, 2),
                              (2, 2), (0, 0), (1, 1), True)


# (channels of the first and second conv, input size, last conv's kernel, the step that runs the
# second conv): the tile kernel (its output "c" blocked for the second pool) or Winograd (NCHW)
@pytest.mark.parametrize("c1,c2,h,w,kernel,conv2_step", [(16, 32, 20, 22, 3, "ConvTileStep"),
                                                          (32, 64, 32, 32, 1, "ConvWinogradStep")])
def test_conv_then_maxpool_runs_blocked(monkeypatch, c1, c2, h, w, kernel, conv2_step, threads):
    """A conv the tile kernel runs stores blocked for the max pool after it, which writes NCHW
    for the NCHW conv that reads it; a conv Winograd would run keeps NCHW. Same values as the
    plan with every tensor NCHW. (With the conv + pool fusion off: the 2x2 pools would join
    their convs, tests/kernels/test_conv_pool.py.)"""
    monkeypatch.setattr(k_conv, "FUSE_CONV_POOL", False)
    rng = np.random.default_rng(9)
    w_ = lambda *s: (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)
    consts = {"w1": w_(c1, 3, 3, 3), "b1": rand(rng, c1), "w2": w_(c2, c1, 3, 3),
              "b2": rand(rng, c2), "w3": w_(8, c2, kernel, kernel)}
    nodes = [("Conv", ["x", "w1", "b1"], ["a"], dict(pads=[1, 1, 1, 1], activation="Relu")),
             ("MaxPool", ["a"], ["p"], dict(kernel_shape=[2, 2], strides=[2, 2])),
             ("Conv", ["p", "w2", "b2"], ["c"], dict(pads=[1, 1, 1, 1], activation="Relu")),
             ("MaxPool", ["c"], ["q"], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
             ("Conv", ["q", "w3"], ["y"], {})]
    x = rand(RNG, 2, 3, h, w)
    model = ir_model(nodes, {"x": x.shape}, ["y"], consts, num_threads=threads)
    plan = model.plan_for([x.shape])
    kinds = [type(s).__name__ for s in plan.steps]
    assert "a" in plan.blocked and "p" not in plan.blocked
    assert kinds[:2] == ["ConvTileStep", "MaxPoolBlockedStep"]
    assert kinds[2] == conv2_step
    assert ("c" in plan.blocked) == (kinds[2] != "ConvWinogradStep")
    assert_close(model.run(None, {"x": x})[0], _nchw_reference(nodes, consts, x, ["y"])[0])


@pytest.mark.parametrize("n,c,h,w", [(1, 8, 1, 1), (2, 24, 7, 5), (3, 16, 1, 9)])
def test_global_avg_blocked(n, c, h, w):
    x = rand(RNG, n, c, h, w)
    out = np.full((n, c), np.nan, np.float32)
    bk.GlobalAvgBlockedStep(to_blocked(x).reshape(-1), out.reshape(-1), n, c, h * w)()
    assert_close(out, x.astype(np.float64).mean(axis=(2, 3)))


# (n, c_in, c_out, h, w, k, strides, pads (t, l, b, r), dilations): the stem-like conv from an
# NCHW input to a blocked output (K = c_in*k_h*k_w padded to 8; bands of rows; 8x8 transposes)
TO_BLOCKED = [
    (1, 3, 32, 23, 25, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),    # MobileNet stem shape, K = 27
    (2, 3, 16, 9, 8, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1)),      # ResNet stem shape, K = 147
    (1, 5, 24, 11, 40, (3, 2), (1, 3), (0, 2, 1, 1), (2, 1)),    # dilation, odd K = 30
    (1, 16, 8, 4, 4, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),      # K = 16, 16 pixels
    (1, 64, 40, 30, 30, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),   # K = 576: one-row bands
    (3, 6, 8, 7, 5, (3, 3), (1, 1), (2, 2, 2, 2), (1, 1)),       # 8 channels: 12-pixel tiles
]


@pytest.mark.parametrize("case", TO_BLOCKED, ids=lambda c: f"{c[:5]}_k{c[5]}_s{c[6]}")
def test_conv_gemm_to_blocked(case, threads):
    from fastcnn._kernels import conv_gemm
    n, c_in, c_out, h, w, k, s, p, d = case
    x, wt, b = rand(RNG, n, c_in, h, w), rand(RNG, c_out, c_in, *k), rand(RNG, c_out)
    ho, wo = out_size(h, k[0], s[0], p[0], p[2], d[0]), out_size(w, k[1], s[1], p[1], p[3], d[1])
    out = np.full((n, c_out, ho, wo), np.nan, np.float32)
    slots = max(1, threads)
    step = conv_gemm.ConvGemmToBlockedStep(
        x, conv_gemm.pack_blocked_out(wt), bk.pad_bias16(b, c_out), out.reshape(-1), c_out, ho,
        wo, s, p[:2], d, k[0], k[1], ACT_CODES["Relu"], 0.0, 0.0, None, slots)
    step.num_threads = threads
    step()
    assert_close(from_blocked(out), np.maximum(conv2d(x, wt, b, s, p, d), 0))


@pytest.mark.parametrize("case", TO_BLOCKED, ids=lambda c: f"{c[:5]}_k{c[5]}_s{c[6]}")
@pytest.mark.parametrize("act,alpha,beta", [("Clip", 0.0, 6.0), ("LeakyRelu", 0.1, 0.0),
                                            ("Sigmoid", 0.0, 0.0)])
def test_conv_tile_to_blocked(case, act, alpha, beta, threads):
    """ConvTileStep storing NCHW8c (the planner's NCHW -> blocked conv): each pixel's channel
    block straight from the tile; streamed stores give the same bits, and fall back when the
    output is not 32-byte aligned."""
    from fastcnn._kernels import conv_tile
    n, c_in, c_out, h, w, k, s, p, d = case
    x, wt, b = rand(RNG, n, c_in, h, w), rand(RNG, c_out, c_in, *k), rand(RNG, c_out)
    ho, wo = out_size(h, k[0], s[0], p[0], p[2], d[0]), out_size(w, k[1], s[1], p[1], p[3], d[1])
    slots = max(1, threads)
    size = conv_tile.tile_scratch(x.shape, wt.shape, (n, c_out, ho, wo), s, p[:2], d)
    outs = []
    for stream, offset in ((False, 0), (True, 0), (True, 1)):
        out = aligned_nan(n * c_out * ho * wo, offset)
        step = conv_tile.ConvTileStep(
            x, conv_tile.pack_tile_weights(wt), b, None, out.reshape(n, c_out, ho, wo), s, p[:2],
            d, k[0], k[1], ACT_CODES[act], alpha, beta,
            np.full(size * slots, np.nan, np.float32) if size else None, slots, True, stream)
        assert step.stream == (stream and offset == 0)
        step.num_threads = threads
        step()
        outs.append(out.reshape(n, c_out, ho, wo))
    assert np.array_equal(outs[0], outs[1], equal_nan=True)
    assert np.array_equal(outs[0], outs[2], equal_nan=True)
    assert_close(from_blocked(outs[0]), apply(act, conv2d(x, wt, b, s, p, d), alpha, beta))


def test_conv_tile_to_blocked_refuses_what_it_cannot_store():
    from fastcnn._kernels import conv_tile
    x = np.zeros((1, 3, 8, 8), np.float32)
    wt = conv_tile.pack_tile_weights(np.zeros((12, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match="blocked"):   # 12 channels: no whole blocks
        conv_tile.ConvTileStep(x, wt, None, None, np.zeros((1, 12, 6, 6), np.float32), (1, 1),
                               (0, 0), (1, 1), 3, 3, 0, 0.0, 0.0, None, 1, True)
    wt = conv_tile.pack_tile_weights(np.zeros((16, 3, 3, 3), np.float32))
    out = np.zeros((1, 16, 6, 6), np.float32)
    with pytest.raises(ValueError, match="blocked"):   # a residual
        conv_tile.ConvTileStep(x, wt, None, out.copy(), out, (1, 1), (0, 0), (1, 1), 3, 3, 0, 0.0,
                               0.0, None, 1, True)


# ----------------------------------------------------------------------------- through the planner
def _inverted_residual_graph(c_in=16, expand=48, c_out=16, size=9, stride=1):
    """stem conv (NCHW input) -> expand 1x1 -> depthwise 3x3 -> project 1x1 (+ residual) ->
    GAP -> flatten: every tensor but the input, the GAP and the flatten may be blocked."""
    rng = np.random.default_rng(5)
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)
    consts = {"ws": w(c_in, 3, 3, 3), "bs": rand(rng, c_in), "we": w(expand, c_in, 1, 1),
              "be": rand(rng, expand), "wd": w(expand, 1, 3, 3), "bd": rand(rng, expand),
              "wp": w(c_out, expand, 1, 1), "bp": rand(rng, c_out)}
    nodes = [
        ("Conv", ["x", "ws", "bs"], ["s"], dict(pads=[1, 1, 1, 1], strides=[2, 2], activation="Relu")),
        ("Conv", ["s", "we", "be"], ["e"], dict(activation="Clip", activation_alpha=0.0, activation_beta=6.0)),
        ("Conv", ["e", "wd", "bd"], ["d"], dict(pads=[1, 1, 1, 1], strides=[stride] * 2, group=expand,
                                                activation="Clip", activation_alpha=0.0, activation_beta=6.0)),
        ("Conv", ["d", "wp", "bp"] + (["s"] if stride == 1 and c_in == c_out else []), ["p"], {}),
        ("GlobalAveragePool", ["p"], ["g"], {}),
        ("Flatten", ["g"], ["y"], {}),
    ]
    return nodes, consts


@pytest.mark.parametrize("stride", [1, 2])
def test_blocked_plan_matches_nchw_plan(stride, threads):
    nodes, consts = _inverted_residual_graph(stride=stride)
    x = rand(RNG, 2, 3, 17, 18)
    model = ir_model(nodes, {"x": (None, 3, 17, 18)}, ["y"], consts, num_threads=threads)
    plan = model.plan_for([x.shape])
    assert {"s", "e", "d", "p"} <= set(plan.blocked)
    assert "x" not in plan.blocked and "y" not in plan.blocked and "g" not in plan.blocked
    got = model.run(None, {"x": x})[0]
    plan_module.BLOCKED_LAYOUTS = False
    try:
        plain_model = ir_model(nodes, {"x": (None, 3, 17, 18)}, ["y"], consts, num_threads=threads)
        assert not plain_model.plan_for([x.shape]).blocked
        ref = plain_model.run(None, {"x": x})[0]
    finally:
        plan_module.BLOCKED_LAYOUTS = True
    assert_close(got, ref)


def _nchw_reference(nodes, consts, x, outputs):
    """The graph's outputs with blocked layouts switched off (every tensor NCHW)."""
    plan_module.BLOCKED_LAYOUTS = False
    try:
        plain = ir_model(nodes, {"x": x.shape}, outputs, consts)
        assert not plain.plan_for().blocked
        return plain.run(None, {"x": x})
    finally:
        plan_module.BLOCKED_LAYOUTS = True


@pytest.mark.parametrize("c_in,step", [(3, "ConvTileStep"), (520, "ConvGemmToBlockedStep")])
def test_nchw_to_blocked_conv_kernels(c_in, step):
    """An NCHW input conv with a blocked output runs the tiled kernel (storing NCHW8c), or the
    GEMM into the blocked layout when K = c_in*9 passes the tiles' limit (4608). (Stride 2: a
    conv Winograd would run stays NCHW, test_conv_then_maxpool_runs_blocked.)"""
    rng = np.random.default_rng(8)
    consts = {"w": rand(rng, 16, c_in, 3, 3) * np.float32(0.1), "b": rand(rng, 16),
              "w2": rand(rng, 16, 16, 1, 1), "b2": rand(rng, 16)}
    nodes = [("Conv", ["x", "w", "b"], ["s"], dict(pads=[1, 1, 1, 1], strides=[2, 2],
                                                  activation="Relu")),
             ("Conv", ["s", "w2", "b2"], ["p"], {}), ("GlobalAveragePool", ["p"], ["y"], {})]
    x = rand(RNG, 1, c_in, 6, 7)
    model = ir_model(nodes, {"x": x.shape}, ["y"], consts)
    plan = model.plan_for()
    assert "s" in plan.blocked and type(plan.steps[0]).__name__ == step
    assert_close(model.run(None, {"x": x})[0], _nchw_reference(nodes, consts, x, ["y"])[0])


def test_tensor_read_by_an_nchw_op_stays_nchw():
    """The expand output also feeds a Relu (no blocked kernel): it stays NCHW, and so does the
    stem output (a pointwise conv with a blocked input must give a blocked output); the
    depthwise conv reads NCHW and gives blocked, the project conv stays blocked."""
    nodes, consts = _inverted_residual_graph(stride=2)
    nodes = nodes[:2] + [("Relu", ["e"], ["r"], {})] + nodes[2:] + [("ReduceMean", ["r"], ["m"], dict(keepdims=0))]
    x = rand(RNG, 1, 3, 17, 18)
    model = ir_model(nodes, {"x": (1, 3, 17, 18)}, ["y", "m"], consts)
    plan = model.plan_for()
    assert not {"s", "e", "r", "g"} & set(plan.blocked)
    assert {"d", "p"} <= set(plan.blocked)
    ref = _nchw_reference(nodes, consts, x, ["y", "m"])
    for a, b in zip(model.run(None, {"x": x}), ref):
        assert_close(a, b)


def test_residual_with_an_nchw_producer_unblocks_the_conv():
    """The residual of the project conv is NCHW (it also feeds a Relu): the project output, and
    so the depthwise output it reads, stay NCHW too."""
    nodes, consts = _inverted_residual_graph(stride=1)
    nodes = nodes + [("Relu", ["s"], ["r"], {}), ("ReduceMean", ["r"], ["m"], dict(keepdims=0))]
    model = ir_model(nodes, {"x": (1, 3, 17, 18)}, ["y", "m"], consts)
    plan = model.plan_for()
    assert not {"s", "d", "p"} & set(plan.blocked)
    x = rand(RNG, 1, 3, 17, 18)
    ref = _nchw_reference(nodes, consts, x, ["y", "m"])
    for a, b in zip(model.run(None, {"x": x}), ref):
        assert_close(a, b)


def test_graph_outputs_and_odd_channels_stay_nchw():
    rng = np.random.default_rng(2)
    consts = {"w1": rand(rng, 12, 3, 3, 3), "w2": rand(rng, 12, 12, 1, 1), "w3": rand(rng, 16, 12, 1, 1)}
    nodes = [("Conv", ["x", "w1"], ["a"], dict(pads=[1, 1, 1, 1])),      # 12 channels: never
             ("Conv", ["a", "w2"], ["b"], {}),
             ("Conv", ["b", "w3"], ["c"], {})]                              # a model output
    model = ir_model(nodes, {"x": (1, 3, 6, 6)}, ["c"], consts)
    assert not model.plan_for().blocked


def test_grouped_conv_to_blocked_through_reorder(threads):
    """A grouped conv reading NCHW and giving a blocked output runs its NCHW algorithm into
    scratch, then a reorder step."""
    rng = np.random.default_rng(7)
    consts = {"wg": rand(rng, 16, 8, 3, 3), "bg": rand(rng, 16), "wp": rand(rng, 24, 16, 1, 1)}
    nodes = [("Conv", ["x", "wg", "bg"], ["a"], dict(pads=[1, 1, 1, 1], group=2, activation="Relu")),
             ("Conv", ["a", "wp"], ["b"], {}),
             ("GlobalAveragePool", ["b"], ["y"], {})]
    x = rand(RNG, 2, 16, 9, 11)
    model = ir_model(nodes, {"x": (2, 16, 9, 11)}, ["y"], consts, num_threads=threads)
    plan = model.plan_for()
    assert {"a", "b"} <= set(plan.blocked)
    assert "ReorderStep" in {type(s).__name__ for s in plan.steps}
    a = np.maximum(conv2d(x, consts["wg"], consts["bg"], pads=(1, 1, 1, 1), group=2), 0)
    ref = conv2d(a, consts["wp"], None).mean(axis=(2, 3), keepdims=True)
    assert_close(model.run(None, {"x": x})[0], ref)


def test_large_blocked_outputs_stream(monkeypatch, threads):
    """Blocked convs whose output reaches k_conv.STREAM_MIN_BYTES write it with non-temporal
    stores (arena tensors are aligned, so they all can) and give the NCHW plan's results."""
    from fastcnn.runtime import k_conv
    # the smallest blocked output (2 x 16 x 9 x 9 floats): every blocked conv streams
    monkeypatch.setattr(k_conv, "STREAM_MIN_BYTES", 2 * 16 * 9 * 9 * 4)
    nodes, consts = _inverted_residual_graph(stride=1)
    x = rand(RNG, 2, 3, 17, 18)
    model = ir_model(nodes, {"x": x.shape}, ["y"], consts, num_threads=threads)
    streamed = [(type(s).__name__, s.stream) for s in model.plan_for().steps
                if type(s).__name__ in ("PointwiseBlockedStep", "DepthwiseBlockedStep")]
    assert sorted(streamed) == [("DepthwiseBlockedStep", True), ("PointwiseBlockedStep", True),
                                ("PointwiseBlockedStep", True)]
    assert_close(model.run(None, {"x": x})[0], _nchw_reference(nodes, consts, x, ["y"])[0])


def test_per_thread_scratch_is_whole_cache_lines():
    """Each thread's scratch slot spans whole 64-byte lines (16 floats), so no two threads write
    one line (false sharing made the 2-thread depthwise slower than 1 thread)."""
    from fastcnn._kernels import conv_dw, conv_gemm, conv_vec, winograd
    for shape_in, shape_out, k, s in [((1, 8, 7, 7), (1, 8, 7, 7), (3, 3), (1, 1)),
                                      ((1, 8, 112, 112), (1, 8, 56, 56), (3, 3), (2, 2)),
                                      ((1, 8, 9, 5), (1, 8, 5, 3), (3, 3), (2, 2))]:
        assert bk.depthwise_blocked_scratch(shape_in, shape_out, k, s, (1, 1), (1, 1)) % 16 == 0
    assert conv_dw.depthwise_scratch(7, 7, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1) % 16 == 0
    assert conv_dw.depthwise_scratch(13, 11, 6, 5, 3, 3, 2, 2, 0, 1, 1, 1) % 16 == 0
    assert conv_vec.vec_scratch(6, 14, 14, 10, 5, 1, 0, 1, 1) % 16 == 0
    assert conv_vec.vec_scratch(3, 9, 13, 5, 3, 2, 1, 1, 1) % 16 == 0
    assert winograd.winograd_scratch(4, 13, 7) % 16 == 0 and winograd.winograd_scratch(2, 5, 3) % 16 == 0
    assert conv_gemm.gemm_to_blocked_slot(27, 13, 7) % 16 == 0
    for mode in (1, 2):
        assert conv_gemm.gemm_conv_slot(40, 123, 9, 7, mode) % 16 == 0


@pytest.mark.parametrize("n,c,h,w,per_image", [(1, 8, 1, 1, True), (2, 24, 7, 5, True), (3, 16, 4, 9, False),
                                               (2, 64, 17, 16, True)])
def test_channel_scale_blocked(n, c, h, w, per_image, threads):
    x = rand(RNG, n, c, h, w)
    s = rand(RNG, n if per_image else 1, c)
    out = np.full(x.size, np.nan, np.float32)
    step = bk.ChannelScaleBlockedStep(to_blocked(x).reshape(-1), s.reshape(-1), out, n, c, h * w, per_image)
    step.num_threads = threads
    step()
    assert_close(from_blocked(out.reshape(x.shape)), x * s[:, :, None, None])
    inplace = to_blocked(x).reshape(-1).copy()      # out may be x
    bk.ChannelScaleBlockedStep(inplace, s.reshape(-1), inplace, n, c, h * w, per_image)()
    np.testing.assert_array_equal(inplace, out)


def test_channel_scale_blocked_refuses_bad_shapes():
    x = np.zeros(2 * 16 * 6, np.float32)
    with pytest.raises(ValueError):
        bk.ChannelScaleBlockedStep(x, np.zeros(16, np.float32), x, 2, 16, 6, True)   # s for one image
    with pytest.raises(ValueError):
        bk.ChannelScaleBlockedStep(x[:12 * 6 * 2], np.zeros(12, np.float32), x[:12 * 6 * 2], 2, 12, 6, False)


def _squeeze_excite_graph(gate_first=False):
    """expand 1x1 -> depthwise 3x3 -> squeeze-and-excitation (GAP, 1x1 conv + ReLU, 1x1 conv +
    Sigmoid, Mul) -> project 1x1 -> 1x1 conv -> GAP -> flatten."""
    rng = np.random.default_rng(9)
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)
    consts = {"we": w(32, 8, 1, 1), "be": rand(rng, 32), "wd": w(32, 1, 3, 3), "bd": rand(rng, 32),
              "w1": w(8, 32, 1, 1), "b1": rand(rng, 8), "w2": w(32, 8, 1, 1), "b2": rand(rng, 32),
              "wp": w(16, 32, 1, 1), "bp": rand(rng, 16)}
    nodes = [
        ("Conv", ["x", "we", "be"], ["e"], dict(activation="Relu")),
        ("Conv", ["e", "wd", "bd"], ["d"], dict(pads=[1, 1, 1, 1], group=32, activation="Relu")),
        ("GlobalAveragePool", ["d"], ["g"], {}),
        ("Conv", ["g", "w1", "b1"], ["r"], dict(activation="Relu")),
        ("Conv", ["r", "w2", "b2"], ["gate"], dict(activation="Sigmoid")),
        ("Mul", ["gate", "d"] if gate_first else ["d", "gate"], ["se"], {}),
        ("Conv", ["se", "wp", "bp"], ["p"], {}),
        ("Conv", ["p", "wp2", "bp2"], ["q"], {}),
        ("GlobalAveragePool", ["q"], ["q1"], {}),
        ("Flatten", ["q1"], ["y"], {}),
    ]
    consts.update(wp2=w(8, 16, 1, 1), bp2=rand(rng, 8))
    return nodes, consts


@pytest.mark.parametrize("gate_first", [False, True])
def test_squeeze_excite_block_runs_blocked(gate_first, threads):
    """The Mul of squeeze-and-excitation reads and writes blocked tensors, so the convs around
    it stay blocked; a Mul of two full tensors does not."""
    nodes, consts = _squeeze_excite_graph(gate_first)
    x = rand(RNG, 2, 8, 9, 10)
    model = ir_model(nodes, {"x": (None, 8, 9, 10)}, ["y"], consts, num_threads=threads)
    plan = model.plan_for([x.shape])
    assert {"e", "d", "se", "p"} <= set(plan.blocked)
    kinds = [type(s).__name__ for s in plan.steps]
    assert kinds.count("ChannelScaleBlockedStep") == 1
    assert_close(model.run(None, {"x": x})[0], _nchw_reference(nodes, consts, x, ["y"])[0])
    square = nodes[:5] + [("Mul", ["d", "d"], ["se"], {})] + nodes[6:]
    model = ir_model(square, {"x": (None, 8, 9, 10)}, ["y"], consts, num_threads=threads)
    assert "se" not in model.plan_for([x.shape]).blocked
    assert_close(model.run(None, {"x": x})[0], _nchw_reference(square, consts, x, ["y"])[0])

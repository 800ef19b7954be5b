"""Convolution algorithms (fastcnn/_kernels/conv*.pyx, winograd.pyx) against the direct kernel and
the numpy reference, and the algorithm choice of fastcnn/runtime/k_conv.py through the planner."""
import zlib

import numpy as np
import pytest

from act_reference import ACT_CASES, apply
from helpers import assert_close, ir_model, onnx_model, rand, run_fastcnn_onnx, run_ort
from reference import conv2d, out_size

from fastcnn._kernels import conv as direct
from fastcnn._kernels import conv_dw, conv_gemm, conv_tile, conv_vec, winograd
from fastcnn._kernels.eltwise import ACT_CODES
from fastcnn.runtime import k_conv


class Case:
    """One conv layer: x (n, c_in, h, w), weights (c_out, c_in/group, k_h, k_w)."""

    def __init__(self, n, c_in, h, w, c_out, k, strides=(1, 1), pads=(0, 0, 0, 0),
                 dilations=(1, 1), group=1):
        self.n, self.c_in, self.h, self.w, self.c_out = n, c_in, h, w, c_out
        self.k, self.strides, self.pads, self.dilations, self.group = k, strides, pads, dilations, group
        self.h_out = out_size(h, k[0], strides[0], pads[0], pads[2], dilations[0])
        self.w_out = out_size(w, k[1], strides[1], pads[1], pads[3], dilations[1])

    def __repr__(self):
        return (f"n{self.n}_c{self.c_in}_{self.h}x{self.w}_to{self.c_out}_k{self.k[0]}x{self.k[1]}"
                f"_s{self.strides[0]}{self.strides[1]}_p{''.join(map(str, self.pads))}"
                f"_d{self.dilations[0]}{self.dilations[1]}_g{self.group}")

    def data(self, seed, residual=False, scale=1.0):
        rng = np.random.default_rng(seed)
        x = rand(rng, self.n, self.c_in, self.h, self.w) * np.float32(scale)
        wt = rand(rng, self.c_out, self.c_in // self.group, *self.k)
        b = rand(rng, self.c_out)
        res = rand(rng, self.n, self.c_out, self.h_out, self.w_out) if residual else None
        return x, wt, b, res

    def reference(self, x, wt, b, res=None):
        y = conv2d(x, wt, b, self.strides, self.pads, self.dilations, self.group)
        return y + res if res is not None else y

    @property
    def out_shape(self):
        return (self.n, self.c_out, self.h_out, self.w_out)


def run_algorithm(algo, case, x, wt, b, res=None, act="", alpha=0.0, beta=0.0, threads=1):
    """The kernel `algo` on one case; returns out (filled with NaN first: every value is written)."""
    out = np.full(case.out_shape, np.nan, np.float32)
    code = ACT_CODES[act]
    pads2 = case.pads[:2]
    if algo == "direct":
        direct.conv2d_direct(x, wt, b, out, case.strides, pads2, case.dilations, case.group, code,
                             alpha, beta, res, threads)
    elif algo.startswith("gemm"):   # the automatic B layout, or forced 16-pixel panels / bands
        pointwise = (case.k == (1, 1) and case.strides == (1, 1) and case.pads == (0, 0, 0, 0))
        mode = {"gemm": None, "gemm_panels": "panels", "gemm_band": "band"}[algo]
        conv_gemm.conv2d_gemm(x, wt, b, out, case.strides, pads2, case.dilations, case.group,
                              code, alpha, beta, res, kc=64, num_threads=threads,
                              mode=None if pointwise else mode)
    elif algo == "vecdirect":
        conv_vec.conv2d_vec(x, wt, b, out, case.strides, pads2, case.dilations, case.group, code,
                            alpha, beta, res, threads)
    elif algo == "tile":
        conv_tile.conv2d_tile(x, wt, b, out, case.strides, pads2, case.dilations, code, alpha, beta,
                              res, threads)
    elif algo == "depthwise":
        conv_dw.conv2d_depthwise(x, wt, b, out, case.strides, pads2, case.dilations, code, alpha,
                                 beta, res, threads)
    elif algo in ("winograd2", "winograd4"):
        winograd.conv2d_winograd(x, wt, b, out, pads2, int(algo[-1]), code, alpha, beta, res,
                                 threads)
    else:
        raise ValueError(algo)
    return out


def applies(algo, case):
    if algo in ("direct", "gemm", "gemm_panels", "gemm_band", "vecdirect"):
        return True
    if algo == "depthwise":
        return case.group == case.c_in == case.c_out
    if algo == "tile":
        return case.group == 1
    return (case.k == (3, 3) and case.strides == (1, 1) and case.dilations == (1, 1)
            and case.group == 1)


ALGOS = ["direct", "gemm", "gemm_panels", "gemm_band", "vecdirect", "tile", "depthwise",
         "winograd2", "winograd4"]

CASES = [
    Case(1, 13, 3, 5, 7, (3, 3), pads=(1, 1, 1, 1)),                    # 13 channels, 3x5 image
    Case(3, 13, 11, 9, 16, (3, 3), pads=(0, 2, 1, 0)),                  # batch 3, asymmetric pads
    Case(2, 6, 9, 11, 4, (2, 3), (2, 3), (4, 4, 4, 4), (2, 1), 2),      # groups, pad > kernel
    Case(1, 8, 7, 7, 8, (1, 1), (3, 3)),                                # stride > kernel
    Case(2, 13, 5, 7, 29, (1, 1)),                                      # pointwise
    Case(1, 1, 5, 5, 3, (1, 1)),                                        # K = 1
    Case(1, 64, 17, 23, 40, (3, 3), pads=(1, 1, 1, 1)),                 # Winograd-sized
    Case(2, 5, 12, 31, 6, (3, 3), pads=(3, 0, 2, 5)),                   # pads beyond the 3x3
    Case(1, 3, 30, 30, 16, (7, 7), (2, 2), (3, 3, 3, 3)),               # ResNet stem shape
    Case(2, 16, 9, 13, 20, (2, 3), (3, 2), (4, 5, 3, 4), (2, 1)),       # 16 channels, pad > kernel
    Case(1, 4, 6, 5, 8, (3, 3), (1, 1), (0, 0, 0, 0), (2, 2)),          # dilation
    Case(2, 8, 20, 45, 8, (3, 3), pads=(1, 1, 1, 1), group=8),          # depthwise s1, wide rows
    Case(1, 3, 9, 62, 3, (3, 3), pads=(1, 0, 1, 0), group=3),           # rows of 32 + 28 outputs
    Case(1, 4, 19, 77, 12, (3, 3), (2, 2), (1, 1, 1, 1), group=4),      # depthwise x3 multiplier, s2
    Case(1, 6, 16, 70, 6, (5, 5), (1, 2), (2, 2, 2, 2), (1, 2), 6),     # depthwise 5x5, dilated
    Case(3, 5, 9, 9, 5, (3, 3), (3, 3), (1, 1, 1, 1), group=5),         # depthwise stride 3
    Case(1, 12, 8, 10, 6, (3, 3), pads=(1, 1, 1, 1), group=3),          # grouped 3x3
    Case(1, 3, 1, 50, 5, (1, 3), pads=(0, 1, 0, 1)),                    # a 1-D conv as 2-D
    Case(1, 8, 20, 150, 12, (3, 3), pads=(1, 1, 1, 1)),                 # GEMM: 1-row bands, 2 K blocks
    Case(2, 9, 25, 131, 10, (3, 3), (2, 2), (1, 2, 1, 0)),               # GEMM: 3-row bands, s2
    # depthwise, one filter per channel: MobileNet planes and the narrow-plane edge cases
    Case(2, 7, 7, 7, 7, (3, 3), pads=(1, 1, 1, 1), group=7),            # 7x7: rows spill
    Case(1, 5, 14, 14, 5, (3, 3), (2, 2), (1, 1, 1, 1), group=5),       # narrow s2: even loads
    Case(1, 3, 13, 40, 3, (3, 3), (2, 2), (0, 1, 1, 1), group=3),       # wide s2: phase split
    Case(3, 4, 5, 3, 4, (3, 3), pads=(1, 1, 1, 1), group=4),            # 3 outputs per row
    Case(1, 3, 6, 1, 3, (3, 1), pads=(1, 0, 1, 0), group=3),            # 1 output per row
    Case(1, 4, 23, 11, 4, (2, 4), (3, 1), (2, 0, 0, 3), (1, 2), 4),     # pads, stride, dilation
    Case(1, 2, 17, 33, 2, (5, 5), (2, 3), (2, 2, 2, 2), group=2),       # stride 3 along w
]


@pytest.mark.parametrize("algo,case", [(a, c) for a in ALGOS for c in CASES if applies(a, c)],
                         ids=lambda v: v if isinstance(v, str) else repr(v))
def test_algorithm_matches_reference_and_direct(algo, case, threads):
    x, wt, b, res = case.data(seed=zlib.crc32(repr(case).encode()), residual=True)
    got = run_algorithm(algo, case, x, wt, b, res, "Relu", threads=threads)
    assert_close(got, np.maximum(case.reference(x, wt, b, res), 0), f"{algo} vs reference")
    ref_direct = run_algorithm("direct", case, x, wt, b, res, "Relu")
    assert_close(got, ref_direct, f"{algo} vs direct")
    # without bias, residual or activation
    got = run_algorithm(algo, case, x, wt, None, None, threads=threads)
    assert_close(got, case.reference(x, wt, None), f"{algo} plain vs reference")


FUSION_CASES = {
    "direct": Case(1, 5, 6, 7, 7, (3, 3), pads=(1, 1, 1, 1)),
    "gemm": Case(1, 5, 6, 7, 7, (3, 3), pads=(1, 1, 1, 1)),
    "gemm_panels": Case(1, 5, 6, 7, 7, (3, 3), pads=(1, 1, 1, 1)),
    "gemm_band": Case(1, 5, 6, 7, 7, (3, 3), pads=(1, 1, 1, 1)),
    "vecdirect": Case(1, 4, 5, 45, 4, (3, 3), pads=(1, 1, 1, 1), group=4),
    "tile": Case(2, 5, 6, 7, 21, (3, 3), pads=(1, 1, 1, 1)),   # 16 + 5 channels, 7 tiles
    "depthwise": Case(2, 4, 7, 7, 4, (3, 3), pads=(1, 1, 1, 1), group=4),
    "winograd2": Case(1, 5, 6, 7, 7, (3, 3), pads=(1, 1, 1, 1)),
    "winograd4": Case(1, 5, 6, 7, 7, (3, 3), pads=(1, 1, 1, 1)),
}


@pytest.mark.parametrize("name,alpha,beta", ACT_CASES)
@pytest.mark.parametrize("algo", ALGOS)
def test_fused_activation(algo, name, alpha, beta, threads):
    """Fused act(conv + bias + residual) == the reference activation of the unfused output of
    the same algorithm (same pre-activation values)."""
    case = FUSION_CASES[algo]
    x, wt, b, res = case.data(seed=5, residual=True, scale=0.5)
    plain = run_algorithm(algo, case, x, wt, b, res, threads=threads)
    fused = run_algorithm(algo, case, x, wt, b, res, name, alpha, beta, threads=threads)
    assert_close(fused, apply(name, plain, alpha, beta), f"{algo} {name}")


@pytest.mark.parametrize("algo", ALGOS)
def test_bit_identical_one_and_two_threads(algo):
    """Each case has over 2M multiply-adds, so two threads really run (ukernel.pxd
    MIN_MACS_PER_THREAD), in each way the kernels split work: many tiles, panels or bands (in
    contiguous ranges per thread), or few of them so that threads share rows (GEMM) or phases
    of a block (Winograd). No split changes any
    value's summation order."""
    cases = [Case(2, 32, 28, 30, 24, (3, 3), pads=(1, 1, 1, 1)),
             Case(1, 128, 5, 6, 140, (3, 3), pads=(1, 1, 1, 1)),
             Case(1, 96, 14, 14, 64, (3, 3), pads=(1, 1, 1, 1)),
             Case(2, 16, 56, 52, 24, (3, 3), pads=(1, 1, 1, 1))]   # many blocks: static split
    if algo == "vecdirect":
        cases = [Case(2, 64, 56, 60, 64, (3, 3), pads=(1, 1, 1, 1), group=64),
                 Case(2, 32, 90, 80, 96, (3, 3), (2, 2), (1, 1, 1, 1), group=32)]
    if algo == "tile":   # a last panel of 8 channels (12-pixel tiles), one image split
        cases += [Case(1, 40, 23, 29, 24, (3, 3), pads=(1, 1, 1, 1))]
    if algo == "depthwise":
        cases = [Case(2, 64, 56, 60, 64, (3, 3), pads=(1, 1, 1, 1), group=64),
                 Case(2, 96, 28, 28, 96, (3, 3), (2, 2), (1, 1, 1, 1), group=96),
                 Case(3, 300, 7, 7, 300, (3, 3), pads=(1, 1, 1, 1), group=300)]
    for case in cases:
        x, wt, b, res = case.data(seed=9, residual=True)
        one = run_algorithm(algo, case, x, wt, b, res, "Relu", threads=1)
        two = run_algorithm(algo, case, x, wt, b, res, "Relu", threads=2)
        assert np.array_equal(one, two), repr(case)
        assert_close(two, np.maximum(case.reference(x, wt, b, res), 0), repr(case))


@pytest.mark.parametrize("algo", ["gemm", "gemm_band"])
def test_gemm_bands_that_do_not_divide_among_threads(algo):
    """Three bands of output rows (kc 64, 40-pixel rows: 6 rows a band) on two threads: each
    band's rows are split in two parts so both threads get the same work; same bits as one
    thread."""
    case = Case(1, 16, 36, 80, 24, (3, 3), (2, 2), (1, 1, 1, 1))
    assert conv_gemm.gemm_band_rows(64, 18, 40) == 6
    x, wt, b, res = case.data(seed=4, residual=True)
    one = run_algorithm(algo, case, x, wt, b, res, "Relu", threads=1)
    two = run_algorithm(algo, case, x, wt, b, res, "Relu", threads=2)
    assert np.array_equal(one, two)
    assert_close(two, np.maximum(case.reference(x, wt, b, res), 0))


@pytest.mark.parametrize("m", [2, 4])
def test_winograd_precision_on_realistic_magnitudes(m):
    """ResNet-like layer: post-ReLU activations up to ~8, He-initialised weights, 256 channels.
    F(4,3) rounds more than F(2,3); both must stay within the project tolerance."""
    rng = np.random.default_rng(21)
    case = Case(1, 256, 14, 14, 64, (3, 3), pads=(1, 1, 1, 1))
    x = np.maximum(rng.normal(0.0, 2.5, (1, 256, 14, 14)), 0).astype(np.float32)
    wt = rng.normal(0.0, np.sqrt(2.0 / (256 * 9)), (64, 256, 3, 3)).astype(np.float32)
    b = rand(rng, 64)
    got = run_algorithm(f"winograd{m}", case, x, wt, b)
    ref = case.reference(x, wt, b)
    assert_close(got, ref, f"F({m},3)")
    # and well inside it: a tenth of the tolerance
    assert np.abs(got - ref).max() <= 0.1 * (1e-4 + 1e-3 * np.abs(ref).max())


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("threads", [1, 2])
def test_winograd_nonfinite_stays_in_receptive_field(m, threads):
    """A NaN or Inf input reaches every output of its Winograd tile through the transforms; those
    outputs are recomputed directly, so exactly the outputs a direct conv makes non-finite are
    non-finite (and with the same value class), and the rest match the reference."""
    case = Case(2, 5, 11, 13, 7, (3, 3), pads=(1, 1, 1, 1))
    x, wt, b, res = case.data(31, residual=True)
    x[0, 2, 4, 6] = np.nan
    x[1, 0, 0, 12] = np.inf        # a corner: tiles clipped at the edges
    x[1, 4, 7, 3] = -np.inf
    res[1, 6, 2, 2] = np.nan       # a residual NaN in tiles whose own outputs are finite
    got = run_algorithm(f"winograd{m}", case, x, wt, b, res, act="Relu", threads=threads)
    ref = np.maximum(case.reference(x, wt, b) + res, 0)
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    assert np.array_equal(np.isposinf(got), np.isposinf(ref))
    assert np.isnan(ref).sum() > 0 and np.isposinf(ref).sum() > 0
    finite = np.isfinite(ref)
    assert_close(got[finite], ref[finite], f"F({m},3) finite outputs")


@pytest.mark.parametrize("m", [2, 4])
def test_winograd_with_a_weight_scale_recomputes_from_the_weights_as_read(m):
    """A conv whose weights are W * s per output channel (a folded BatchNormalization: the plan
    keeps W and s, not the product): the step gets U of the scaled weights, and recomputes the
    outputs its transforms made non-finite from W and s; those match a direct conv with the
    scaled weights, and with s all ones the bits equal the step given the weights alone."""
    case = Case(2, 5, 11, 13, 7, (3, 3), pads=(1, 1, 1, 1))
    x, wt, b, _ = case.data(33)
    scale = np.random.default_rng(34).uniform(-3.0, 3.0, 7)      # signs flip some channels
    x[0, 2, 4, 6] = np.nan
    x[1, 0, 0, 12] = np.inf
    x[1, 3, 9, 1] = 3e38                                          # overflows in the transforms
    scaled = (wt.astype(np.float64) * scale[:, None, None, None]).astype(np.float32)

    def step_out(up, weights, weight_scale):
        out = np.full(case.out_shape, np.nan, np.float32)
        work = np.full(winograd.winograd_scratch(m, 5, 7), np.nan, np.float32)
        winograd.ConvWinogradStep(x, up, b, None, out, (1, 1), m, 0, 0.0, 0.0, work, 1, weights,
                                  None, weight_scale)()
        return out

    got = step_out(winograd.winograd_weights(scaled, m), wt, scale)
    with np.errstate(over="ignore"):
        ref = case.reference(x, scaled, b).astype(np.float32)   # beyond float32's range: Inf
    for test in (np.isnan, np.isposinf, np.isneginf):
        assert np.array_equal(test(got), test(ref)), test.__name__
    assert (~np.isfinite(ref)).sum() > 0
    finite = np.isfinite(ref)
    assert_close(got[finite], ref[finite], f"F({m},3) with a weight scale")
    up = winograd.winograd_weights(wt, m)
    assert np.array_equal(step_out(up, wt, np.ones(7)), step_out(up, wt, None), equal_nan=True)
    with pytest.raises(ValueError, match="weight_scale"):
        step_out(up, wt, np.ones(6))
    with pytest.raises(ValueError, match="weight_scale"):
        step_out(up, None, np.ones(7))


@pytest.mark.parametrize("m", [2, 4])
def test_winograd_weights_scale_as_they_transform_from_any_byte(m):
    """winograd_weights(w, scale) from weights at an odd byte offset (an .onnx file's, read in
    place) has the bits of transforming the scaled copy conv_weights makes; without a scale,
    those of an aligned copy; and U = G (w * s) G^T within float32 rounding of a float64 einsum.
    13 output channels: two full 6-row panels and one of a single row."""
    from fastcnn.ir.weights import conv_weights
    rng = np.random.default_rng(41)
    w = rng.standard_normal((13, 11, 3, 3)).astype(np.float32)
    scale = rng.uniform(-2.0, 2.0, 13)
    buf = np.zeros(w.nbytes + 3, np.uint8)
    buf[3:] = w.reshape(-1).view(np.uint8)
    odd = buf[3:].view(np.float32).reshape(w.shape)
    assert not odd.flags.aligned
    got = winograd.winograd_weights(odd, m, 2, scale)
    assert np.array_equal(got, winograd.winograd_weights(conv_weights(w, scale), m))
    assert np.array_equal(winograd.winograd_weights(odd, m), winograd.winograd_weights(w.copy(), m))
    g = np.array(winograd.WINOGRAD_MATRICES[m]["G"], np.float64)
    ws = w.astype(np.float64) * scale[:, None, None, None]
    u = np.einsum("ik,ockl,jl->ijoc", g, ws, g).reshape((m + 2) ** 2, 13, 11)
    a = (m + 2) ** 2
    unpacked = got.transpose(0, 1, 3, 2).reshape(a, -1, 11)[:, :13]
    assert np.allclose(unpacked, u, rtol=1e-5, atol=1e-5)
    assert not got[:, 2, :, 1:].any()   # the last panel's rows past c_out are zero
    with pytest.raises(ValueError, match="scale values"):
        winograd.winograd_weights(w, m, 1, scale[:12])


def test_winograd_weight_transform():
    """G w G^T then the input/output transforms reproduce a 1-D correlation exactly in float64."""
    for m, mats in winograd.WINOGRAD_MATRICES.items():
        bt, g, at = (np.array(mats[k], np.float64) for k in ("BT", "G", "AT"))
        rng = np.random.default_rng(m)
        d, f = rng.standard_normal(m + 2), rng.standard_normal(3)
        y = at @ ((g @ f) * (bt @ d))
        assert np.allclose(y, [d[i:i + 3] @ f for i in range(m)], atol=1e-12)


def test_step_validation():
    x = np.zeros((1, 4, 5, 5), np.float32)
    out = np.zeros((1, 6, 5, 5), np.float32)
    w = np.zeros((6, 4, 3, 3), np.float32)
    with pytest.raises(ValueError):  # packed panels of another layer
        conv_gemm.ConvGemmStep(x, conv_gemm.pack_a_panels(np.zeros((7, 4, 3, 3), np.float32), 1),
                               None, None, out, (1, 1), (1, 1), (1, 1), 1, 3, 3)
    with pytest.raises(ValueError):  # work too small
        conv_gemm.ConvGemmStep(x, conv_gemm.pack_a_panels(w, 1), None, None, out, (1, 1), (1, 1),
                               (1, 1), 1, 3, 3, 0, 0.0, 0.0, 64, np.zeros(10, np.float32), 1)
    with pytest.raises(ValueError):  # wrong m
        winograd.ConvWinogradStep(x, winograd.winograd_weights(w, 4), None, None, out, (1, 1), 3)
    with pytest.raises(ValueError):  # residual shape
        winograd.ConvWinogradStep(x, winograd.winograd_weights(w, 4), None,
                                  np.zeros((1, 6, 5, 4), np.float32), out, (1, 1), 4)
    with pytest.raises(ValueError):  # channels and group do not fit
        conv_vec.ConvVecStep(x, np.zeros((8, 2, 3, 3), np.float32), None, None,
                             np.zeros((1, 8, 5, 5), np.float32), (1, 1), (1, 1), (1, 1), 4)
    with pytest.raises(ValueError):  # bias size
        conv_vec.ConvVecStep(x, np.zeros((4, 1, 3, 3), np.float32), np.zeros(3, np.float32),
                             None, np.zeros((1, 4, 5, 5), np.float32), (1, 1), (1, 1), (1, 1), 4)
    with pytest.raises(ValueError):  # work too small
        conv_vec.ConvVecStep(x, np.zeros((4, 1, 3, 3), np.float32), None, None,
                             np.zeros((1, 4, 5, 5), np.float32), (1, 1), (1, 1), (1, 1), 4, 0,
                             0.0, 0.0, np.zeros(8, np.float32), 1)
    tile_w = conv_tile.pack_tile_weights(w)
    with pytest.raises(ValueError):  # packed weights of a 3x2 kernel
        conv_tile.ConvTileStep(x, conv_tile.pack_tile_weights(np.zeros((6, 4, 3, 2), np.float32)),
                               None, None, out, (1, 1), (1, 1), (1, 1), 3, 3)
    with pytest.raises(ValueError):  # bias size
        conv_tile.ConvTileStep(x, tile_w, np.zeros(5, np.float32), None, out, (1, 1), (1, 1),
                               (1, 1), 3, 3)
    with pytest.raises(ValueError):  # residual shape
        conv_tile.ConvTileStep(x, tile_w, None, np.zeros((1, 6, 5, 4), np.float32), out, (1, 1),
                               (1, 1), (1, 1), 3, 3)
    with pytest.raises(ValueError):  # work too small for the padded image
        conv_tile.ConvTileStep(x, tile_w, None, None, out, (1, 1), (1, 1), (1, 1), 3, 3, 0, 0.0,
                               0.0, np.zeros(4 * 7 * 7 - 1, np.float32), 1)
    with pytest.raises(ValueError):  # batch sizes differ
        conv_tile.ConvTileStep(x, tile_w, None, None, np.zeros((2, 6, 5, 5), np.float32), (1, 1),
                               (1, 1), (1, 1), 3, 3)
    with pytest.raises(ValueError):  # output size the geometry does not give
        conv_tile.ConvTileStep(x, tile_w, None, None, np.zeros((1, 6, 0, 5), np.float32), (1, 1),
                               (1, 1), (1, 1), 3, 3)
    dw_out = np.zeros((1, 4, 5, 5), np.float32)
    with pytest.raises(ValueError):  # a channel multiplier: not one filter per channel
        conv_dw.ConvDepthwiseStep(x, np.zeros((8, 1, 3, 3), np.float32), None, None,
                                  np.zeros((1, 8, 5, 5), np.float32), (1, 1), (1, 1), (1, 1))
    with pytest.raises(ValueError):  # bias size
        conv_dw.ConvDepthwiseStep(x, np.zeros((4, 1, 3, 3), np.float32), np.zeros(3, np.float32),
                                  None, dw_out, (1, 1), (1, 1), (1, 1))
    with pytest.raises(ValueError):  # residual shape
        conv_dw.ConvDepthwiseStep(x, np.zeros((4, 1, 3, 3), np.float32), None,
                                  np.zeros((1, 4, 5, 4), np.float32), dw_out, (1, 1), (1, 1), (1, 1))
    with pytest.raises(ValueError):  # work too small
        conv_dw.ConvDepthwiseStep(x, np.zeros((4, 1, 3, 3), np.float32), None, None, dw_out,
                                  (1, 1), (1, 1), (1, 1), 0, 0.0, 0.0, np.zeros(8, np.float32), 1)


def test_tile_ranges_of_one_image_on_two_threads():
    """One image on two threads is split in contiguous tile ranges; a tile stores 8 pixels per
    row only when the 2 past it are this task's (its next tile rewrites them), so the threads
    never write each other's pixels: every run, into a NaN-filled output, gives the same bits."""
    case = Case(1, 24, 15, 17, 40, (3, 3), pads=(1, 1, 1, 1))   # 255 pixels: 43 tiles, 3 panels
    x, wt, b, res = case.data(seed=12, residual=True)
    first = run_algorithm("tile", case, x, wt, b, res, "Relu", threads=1)
    assert_close(first, np.maximum(case.reference(x, wt, b, res), 0))
    for _ in range(20):
        assert np.array_equal(run_algorithm("tile", case, x, wt, b, res, "Relu", threads=2), first)


# padded convs of 8 channels or more: the tile step copies the image channels-last
CHANNELS_LAST_CASES = [
    Case(1, 64, 28, 28, 128, (3, 3), (2, 2), (1, 1, 1, 1)),          # ResNet's stride 2
    Case(2, 13, 11, 9, 21, (3, 3), pads=(0, 2, 1, 0)),              # 8 + 5 channels, 16 + 5 out
    Case(1, 16, 9, 13, 24, (2, 3), (3, 2), (4, 5, 3, 4), (2, 1)),   # pads, stride > kernel, dilation
    Case(3, 9, 25, 19, 10, (5, 5), (2, 2), (2, 2, 2, 2)),           # 9 channels, batch 3
    Case(1, 8, 1, 17, 16, (1, 3), pads=(0, 1, 0, 1)),               # one row
    Case(2, 8, 10, 12, 16, (3, 3), (1, 1), (2, 2, 2, 2), (1, 2)),   # dilated along w
]


def _tile_step_run(case, x, wt, b, res, channels_last, threads, blocked=False):
    """ConvTileStep with ReLU into a NaN-filled output, its scratch NaN-filled too (in a plan
    it holds other steps' data); returns the output, NCHW (a blocked one is reordered)."""
    out = np.full(case.out_shape, np.nan, np.float32)
    slots = max(1, threads)
    size = conv_tile.tile_scratch(x.shape, wt.shape, out.shape, case.strides, case.pads[:2],
                                  case.dilations)
    step = conv_tile.ConvTileStep(x, conv_tile.pack_tile_weights(wt, None, channels_last), b,
                                  None if blocked else res, out, case.strides, case.pads[:2],
                                  case.dilations, case.k[0], case.k[1], ACT_CODES["Relu"], 0.0,
                                  0.0, np.full(size * slots, np.nan, np.float32), slots,
                                  blocked, channels_last=channels_last)
    assert step.channels_last == channels_last
    step.num_threads = threads
    step()
    if blocked:   # (n, c/8, h, w, 8) -> (n, c, h, w)
        n, c, h, w = out.shape
        out = out.reshape(n, c // 8, h, w, 8).transpose(0, 1, 4, 2, 3).reshape(n, c, h, w)
    return out


@pytest.mark.parametrize("case", CHANNELS_LAST_CASES, ids=repr)
def test_tile_channels_last_matches_reference(case, threads):
    """The channels-last copy (K in the order kh, kw, ci) gives the numpy conv, with a residual
    and into a blocked output, as the planes do; the planner's rule picks it for these convs."""
    x, wt, b, res = case.data(seed=zlib.crc32(repr(case).encode()), residual=True)
    assert conv_tile.tile_channels_last(x.shape, wt.shape, case.out_shape, case.strides,
                                        case.pads[:2], case.dilations)
    want = np.maximum(case.reference(x, wt, b, res), 0)
    for channels_last in (True, False):
        got = _tile_step_run(case, x, wt, b, res, channels_last, threads)
        assert_close(got, want, f"channels_last={channels_last}")
    if case.c_out % 8 == 0:
        got = _tile_step_run(case, x, wt, b, None, True, threads, blocked=True)
        assert_close(got, np.maximum(case.reference(x, wt, b), 0), "blocked")
    one = _tile_step_run(case, x, wt, b, res, True, 1)
    assert np.array_equal(_tile_step_run(case, x, wt, b, res, True, 2), one)


def test_tile_channels_last_rule_and_refusal():
    """Channels-last only where the image is copied anyway (padding read) with 8 channels or
    more: not the 3-channel stem, not an unpadded conv (read in place), which refuses it."""
    rule = conv_tile.tile_channels_last
    assert rule((1, 64, 56, 56), (128, 64, 3, 3), (1, 128, 28, 28), (2, 2), (1, 1), (1, 1))
    assert not rule((1, 3, 224, 224), (64, 3, 7, 7), (1, 64, 112, 112), (2, 2), (3, 3), (1, 1))
    assert not rule((1, 64, 56, 56), (128, 64, 1, 1), (1, 128, 28, 28), (2, 2), (0, 0), (1, 1))
    assert not rule((1, 7, 9, 9), (8, 7, 3, 3), (1, 8, 9, 9), (1, 1), (1, 1), (1, 1))
    # no padding, but the windows read past the image's right edge (stride 2 over 8 columns)
    assert rule((1, 8, 3, 8), (8, 8, 1, 3), (1, 8, 3, 4), (1, 2), (0, 0), (1, 1))
    x = np.zeros((1, 16, 6, 6), np.float32)
    w = np.zeros((16, 16, 3, 3), np.float32)
    with pytest.raises(ValueError, match="channels-last"):
        conv_tile.ConvTileStep(x, conv_tile.pack_tile_weights(w, None, True), None, None,
                               np.zeros((1, 16, 4, 4), np.float32), (1, 1), (0, 0), (1, 1), 3, 3,
                               channels_last=True)


def test_pack_tile_weights_channels_last_order():
    """Channels-last panels hold W (c_out, kh, kw, ci) flattened: the weight of tap (kh, kw)
    and input channel ci at K index (kh * k_w + kw) * c_in + ci, channel j of panel j // 16."""
    rng = np.random.default_rng(6)
    w = rng.standard_normal((21, 5, 2, 3)).astype(np.float32)
    got = conv_tile.pack_tile_weights(w, None, True)
    assert got.shape == (2, 30, 16)
    for j, ci, kh, kw in ((0, 0, 0, 0), (3, 4, 1, 2), (20, 2, 0, 1), (17, 4, 1, 0)):
        assert got[j // 16, (kh * 3 + kw) * 5 + ci, j % 16] == w[j, ci, kh, kw]
    assert not got[1, :, 5:].any()     # channels past 21: zero


@pytest.mark.parametrize("case", [c for c in CASES if applies("depthwise", c)], ids=repr)
def test_depthwise_bit_identical_to_vecdirect(case, threads):
    """Both sum bias then the taps (kh, kw) in order with one FMA each: the same floats."""
    x, wt, b, res = case.data(seed=11, residual=True)
    got = run_algorithm("depthwise", case, x, wt, b, res, "Clip", 0.0, 1.0, threads=threads)
    assert np.array_equal(got, run_algorithm("vecdirect", case, x, wt, b, res, "Clip", 0.0, 1.0))


# ----------------------------------------------------------------------------- through the planner
def _conv_model(case, wt, b, residual, act, threads, alpha=0.0):
    attrs = dict(strides=list(case.strides), pads=list(case.pads), dilations=list(case.dilations),
                 group=case.group, activation=act, activation_alpha=alpha)
    ins = ["x", "w", "b"] + (["r"] if residual else [])
    shapes = {"x": (case.n, case.c_in, case.h, case.w)}
    if residual:
        shapes["r"] = case.out_shape
    return ir_model([("Conv", ins, ["y"], attrs)], shapes, ["y"], {"w": wt, "b": b},
                    num_threads=threads)


def _planned_algorithm(model):
    plan = next(iter(model._plans.values()))[0]
    return type(plan.steps[0]).__name__


STEP_OF = {"direct": "ConvDirectStep", "gemm": "ConvGemmStep", "vecdirect": "ConvVecStep",
           "tile": "ConvTileStep", "depthwise": "ConvDepthwiseStep",
           "winograd2": "ConvWinogradStep", "winograd4": "ConvWinogradStep"}

PLANNER_CASES = [
    (Case(1, 64, 28, 28, 64, (3, 3), pads=(1, 1, 1, 1)), "winograd4"),
    (Case(1, 64, 28, 28, 128, (1, 1)), "gemm"),
    (Case(1, 32, 28, 28, 32, (3, 3), pads=(1, 1, 1, 1), group=32), "depthwise"),
    (Case(1, 960, 7, 7, 960, (3, 3), pads=(1, 1, 1, 1), group=960), "depthwise"),
    (Case(1, 96, 28, 28, 96, (3, 3), (2, 2), (1, 1, 1, 1), group=96), "depthwise"),
    (Case(1, 8, 20, 20, 16, (3, 3), pads=(1, 1, 1, 1), group=8), "vecdirect"),
    (Case(1, 3, 64, 64, 16, (7, 7), (2, 2), (3, 3, 3, 3)), "tile"),     # K = 147: tiles
    (Case(1, 64, 28, 28, 128, (3, 3), (2, 2), (1, 1, 1, 1)), "tile"),    # ResNet's stride 2
    (Case(1, 64, 28, 28, 128, (1, 1), (2, 2)), "gemm"),                  # ResNet's downsample
    (Case(1, 16, 64, 64, 32, (3, 3), (3, 3)), "tile"),                   # unpadded, 3x3 stride 3
    (Case(1, 600, 9, 9, 32, (3, 3), (2, 2), (1, 1, 1, 1)), "gemm"),      # K = 5400: GEMM
    (Case(3, 13, 11, 9, 16, (3, 3), pads=(0, 2, 1, 0)), None),
    (Case(2, 6, 9, 11, 4, (2, 3), (2, 3), (4, 4, 4, 4), (2, 1), 2), None),
    (Case(1, 1, 32, 32, 6, (5, 5)), None),                               # LeNet-5 conv1
    (Case(1, 6, 14, 14, 16, (5, 5)), "tile"),                            # LeNet-5 conv2
]


@pytest.fixture
def restore_force():
    yield
    k_conv.FORCE_ALGORITHM = None


@pytest.mark.parametrize("case,expected", PLANNER_CASES, ids=lambda v: repr(v))
def test_planner_choice_matches_direct(case, expected, threads, restore_force):
    x, wt, b, res = case.data(seed=3, residual=True)
    k_conv.FORCE_ALGORITHM = None
    chosen_model = _conv_model(case, wt, b, True, "Relu", threads)
    chosen = chosen_model.run(None, {"x": x, "r": res})[0]
    if expected is not None:
        assert _planned_algorithm(chosen_model) == STEP_OF[expected]
    k_conv.FORCE_ALGORITHM = "direct"
    direct_model = _conv_model(case, wt, b, True, "Relu", threads)
    assert _planned_algorithm(direct_model) == "ConvDirectStep"
    assert_close(chosen, direct_model.run(None, {"x": x, "r": res})[0], "chosen vs direct")
    assert_close(chosen, np.maximum(case.reference(x, wt, b, res), 0), "chosen vs reference")


@pytest.mark.parametrize("algo", list(k_conv.ALGORITHMS))
def test_forced_algorithm_through_planner(algo, restore_force):
    case = Case(2, 8, 10, 13, 8, (3, 3), pads=(1, 1, 1, 1),
                group=8 if algo in ("vecdirect", "depthwise") else 1)
    x, wt, b, _ = case.data(seed=4)
    k_conv.FORCE_ALGORITHM = algo
    model = _conv_model(case, wt, b, False, "LeakyRelu", 2, alpha=0.1)
    assert _planned_algorithm(model) == STEP_OF[algo]
    assert_close(model.run(None, {"x": x})[0], apply("LeakyRelu", case.reference(x, wt, b), 0.1))


def test_forced_algorithm_falls_back_when_not_applicable(restore_force):
    k_conv.FORCE_ALGORITHM = "winograd4"
    case = Case(1, 4, 9, 9, 4, (5, 5), pads=(2, 2, 2, 2))
    x, wt, b, _ = case.data(seed=6)
    model = _conv_model(case, wt, b, False, "", 1)
    assert _planned_algorithm(model) != "ConvWinogradStep"
    assert_close(model.run(None, {"x": x})[0], case.reference(x, wt, b))


def test_unknown_forced_algorithm_is_refused(restore_force):
    k_conv.FORCE_ALGORITHM = "fft"
    case = Case(1, 2, 5, 5, 2, (3, 3))
    _, wt, b, _ = case.data(seed=1)
    with pytest.raises(Exception, match="unknown conv algorithm"):
        _conv_model(case, wt, b, False, "", 1)


def test_plans_share_packed_weights():
    """Two input shapes -> two plans of one model; the packed weights are made once."""
    case = Case(1, 16, 12, 12, 16, (3, 3), pads=(1, 1, 1, 1))
    _, wt, b, _ = case.data(seed=2)
    model = ir_model([("Conv", ["x", "w", "b"], ["y"], dict(pads=[1, 1, 1, 1]))],
                     {"x": (None, 16, 12, 12)}, ["y"], {"w": wt, "b": b})
    rng = np.random.default_rng(0)
    for n in (1, 3):
        x = rand(rng, n, 16, 12, 12)
        assert_close(model.run(None, {"x": x})[0], case.reference(x, wt, b))
    packed = [k for k in model._cache if k[1] in ("winograd", "gemm_panels")]
    assert len(packed) == 1


def test_conv_vs_onnxruntime():
    pytest.importorskip("onnx")
    from onnx import helper
    rng = np.random.default_rng(8)
    x, w, b = rand(rng, 2, 16, 15, 17), rand(rng, 24, 16, 3, 3), rand(rng, 24)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])
    model = onnx_model([node], {"x": x.shape}, ["y"], {"w": w, "b": b})
    assert_close(run_fastcnn_onnx(model, {"x": x}, num_threads=2)[0], run_ort(model, {"x": x})[0])


# ----------------------------------------------------------------------------- random geometries
from hypothesis import given, settings, strategies as st  # noqa: E402


@st.composite
def geometries(draw):
    group = draw(st.sampled_from([1, 1, 2, 3]))
    depthwise = draw(st.booleans())
    c_in = draw(st.integers(1, 5)) * group
    if depthwise:
        group = c_in
        c_out = c_in * draw(st.integers(1, 3))
    else:
        c_out = draw(st.integers(1, 4)) * group
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 4)) for _ in range(4))
    h = draw(st.integers(max(1, dil[0] * (k[0] - 1) + 1 - pads[0] - pads[2]), 12))
    w = draw(st.integers(max(1, dil[1] * (k[1] - 1) + 1 - pads[1] - pads[3]), 75))
    return Case(draw(st.integers(1, 2)), c_in, h, w, c_out, k, strides, pads, dil, group)


@settings(max_examples=120, deadline=None, derandomize=True)
@given(geometries())
def test_random_geometries(case):
    """Every applicable algorithm on random shapes (odd widths exercise every row tail)."""
    x, wt, b, res = case.data(seed=1, residual=True)
    ref = np.maximum(case.reference(x, wt, b, res), 0)
    for algo in ALGOS:
        if applies(algo, case):
            assert_close(run_algorithm(algo, case, x, wt, b, res, "Relu"), ref, f"{algo} {case!r}")


def test_small_network_vs_onnxruntime(threads):
    """Stem conv, a residual block (3x3 convs, BatchNorm, Add, Relu: fused by the passes into
    Conv epilogues), a depthwise + pointwise pair, global pooling and a dense head, against
    onnxruntime: every conv algorithm meets the importer and the passes."""
    pytest.importorskip("onnx")
    from onnx import helper
    rng = np.random.default_rng(17)
    inits, nodes = {}, []

    def conv(name, x, c_in, c_out, k, stride=1, group=1, bn=True, relu=True):
        inits[name + "_w"] = (rng.standard_normal((c_out, c_in // group, k, k))
                              * np.sqrt(2.0 / (c_in // group * k * k))).astype(np.float32)
        inits[name + "_b"] = rand(rng, c_out, lo=-0.1, hi=0.1)
        nodes.append(helper.make_node("Conv", [x, name + "_w", name + "_b"], [name], pads=[k // 2] * 4,
                                      strides=[stride] * 2, group=group, kernel_shape=[k, k]))
        out = name
        if bn:
            for p, v in (("s", rand(rng, c_out, lo=0.5, hi=1.5)), ("o", rand(rng, c_out, lo=-0.2, hi=0.2)),
                         ("m", rand(rng, c_out, lo=-0.2, hi=0.2)), ("v", rand(rng, c_out, lo=0.5, hi=1.5))):
                inits[f"{name}_bn{p}"] = v
            nodes.append(helper.make_node("BatchNormalization", [out] + [f"{name}_bn{p}" for p in "somv"],
                                          [name + "_bn"]))
            out = name + "_bn"
        if relu:
            nodes.append(helper.make_node("Relu", [out], [name + "_r"]))
            out = name + "_r"
        return out

    y = conv("stem", "x", 3, 16, 7, stride=2)
    a = conv("b1", y, 16, 16, 3)
    b = conv("b2", a, 16, 16, 3, relu=False)
    nodes.append(helper.make_node("Add", [b, y], ["res"]))
    nodes.append(helper.make_node("Relu", ["res"], ["res_r"]))
    d = conv("dw", "res_r", 16, 16, 3, stride=2, group=16)
    p = conv("pw", d, 16, 32, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [p], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    inits["fc_w"], inits["fc_b"] = rand(rng, 10, 32), rand(rng, 10)
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1))
    model = onnx_model(nodes, {"x": (2, 3, 64, 64)}, ["logits", "res_r"], inits)
    x = rand(rng, 2, 3, 64, 64)
    got = run_fastcnn_onnx(model, {"x": x}, num_threads=threads)
    ref = run_ort(model, {"x": x})
    for g, r, name in zip(got, ref, ("logits", "residual block")):
        assert_close(g, r, name)

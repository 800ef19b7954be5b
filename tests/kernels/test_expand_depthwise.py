"""The fused expand + depthwise kernel (blocked.ExpandDepthwiseBlockedStep) against numpy and
against the two blocked steps it replaces, and the planner's choice of the pairs it runs
(k_conv.fuse_expand_depthwise) through whole graphs."""
import re

import numpy as np
import pytest

from act_reference import apply
from helpers import assert_close, ir_model, rand
from reference import conv2d, out_size
from test_blocked import aligned_nan, from_blocked, to_blocked

from fastcnn._kernels import blocked as bk
from fastcnn._kernels import conv_tile
from fastcnn._kernels.eltwise import ACT_CODES
from fastcnn._kernels.gemm import pack_b_panels
from fastcnn.runtime import k_conv
from fastcnn.runtime import plan as plan_module

RNG = np.random.default_rng(61)

# (n, c_in, c_e, h, w, stride, pads (t, l, b, r))
CASES = [
    (1, 8, 16, 1, 1, 1, (1, 1, 1, 1)),       # one pixel
    (2, 16, 32, 9, 13, 1, (1, 1, 1, 1)),     # batch 2, odd sizes, a row of 2 tiles and 1 pixel
    (1, 24, 48, 11, 7, 2, (1, 1, 1, 1)),     # stride 2, output rows narrower than 8 pixels
    (3, 8, 16, 5, 17, 2, (0, 1, 1, 0)),      # asymmetric pads
    (1, 8, 32, 13, 14, 4, (1, 1, 1, 1)),     # stride > kernel
    (1, 8, 16, 4, 5, 1, (4, 3, 4, 3)),       # pads beyond the kernel: rows without any tap
    (1, 128, 16, 7, 9, 1, (1, 1, 1, 1)),     # 16 K blocks of 8, one panel
    (2, 16, 96, 30, 29, 2, (1, 1, 1, 1)),    # MobileNet-like, 6 panels
]


def _shapes(case):
    n, c_in, c_e, h, w, s, p = case
    ho, wo = out_size(h, 3, s, p[0], p[2]), out_size(w, 3, s, p[1], p[3])
    return (n, c_in, h, w), (n, c_e, ho, wo)


def _step(x, we, be, wd, bd, case, acts, threads, slots=None):
    """Run the fused step on NCHW arrays; returns the NCHW output."""
    n, c_in, c_e, h, w, s, p = case
    shape_in, shape_out = _shapes(case)
    (act_e, ae, be_), (act_d, ad, bd_) = acts
    slots = slots or max(1, threads)
    # NaN scratch: the ring's padding must be zeroed by the step (plan scratch is shared)
    work = np.full(slots * bk.expand_depthwise_scratch(shape_in, shape_out, (s, s), p[:2]),
                   np.nan, np.float32)
    out = np.full(shape_out, np.nan, np.float32)
    step = bk.ExpandDepthwiseBlockedStep(
        to_blocked(x).reshape(-1), pack_b_panels(we.reshape(c_e, c_in).T),
        None if be is None else bk.pad_bias16(be, c_e), bk.pack_depthwise_blocked(wd), bd,
        out.reshape(-1), shape_in, shape_out, (s, s), p[:2], ACT_CODES[act_e], ae, be_,
        ACT_CODES[act_d], ad, bd_, work, slots)
    step.num_threads = threads
    step()
    return from_blocked(out)


def _weights(case, bias=True):
    n, c_in, c_e, h, w, s, p = case
    x = rand(RNG, n, c_in, h, w)
    we = (rand(RNG, c_e, c_in, 1, 1) / np.sqrt(c_in)).astype(np.float32)
    wd = rand(RNG, c_e, 1, 3, 3)
    return x, we, rand(RNG, c_e) if bias else None, wd, rand(RNG, c_e) if bias else None


ACTS = [(("Clip", 0.0, 6.0), ("Clip", 0.0, 6.0)), (("Relu", 0.0, 0.0), ("", 0.0, 0.0)),
        (("HardSwish", 0.0, 0.0), ("LeakyRelu", 0.1, 0.0)), (("", 0.0, 0.0), ("Sigmoid", 0.0, 0.0))]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[:5]}_s{c[5]}_p{c[6]}")
@pytest.mark.parametrize("acts", ACTS, ids=lambda a: f"{a[0][0] or 'none'}-{a[1][0] or 'none'}")
def test_expand_depthwise_matches_numpy(case, acts, threads):
    n, c_in, c_e, h, w, s, p = case
    x, we, be, wd, bd = _weights(case)
    got = _step(x, we, be, wd, bd, case, acts, threads)
    (act_e, ae, be_), (act_d, ad, bd_) = acts
    e = conv2d(x, we, be)
    e = apply(act_e, e, ae, be_) if act_e else e
    ref = conv2d(e, wd, bd, (s, s), p, (1, 1), c_e)
    assert_close(got, apply(act_d, ref, ad, bd_) if act_d else ref)


def test_expand_depthwise_without_biases():
    case = CASES[1]
    x, we, _, wd, _ = _weights(case, bias=False)
    got = _step(x, we, None, wd, None, case, ACTS[1], 1)
    assert_close(got, conv2d(np.maximum(conv2d(x, we), 0), wd, None, (1, 1), case[6], (1, 1), case[2]))


@pytest.mark.parametrize("case", [CASES[1], CASES[2], CASES[3], CASES[7]],
                         ids=lambda c: f"{c[:5]}_s{c[5]}")
def test_expand_depthwise_bit_identical_to_the_two_steps(case):
    """The same sums as PointwiseBlockedStep (one K block) then DepthwiseBlockedStep (ring), for
    1, 2 and 3 threads (3 threads over 2 or 3 images: rows split, borders recomputed)."""
    n, c_in, c_e, h, w, s, p = case
    shape_in, shape_out = _shapes(case)
    x, we, be, wd, bd = _weights(case)
    clip = ACT_CODES["Clip"]
    e = np.zeros(n * c_e * h * w, np.float32)
    bk.PointwiseBlockedStep(to_blocked(x).reshape(-1), pack_b_panels(we.reshape(c_e, c_in).T),
                            bk.pad_bias16(be, c_e), None, e, n, c_in, c_e, h * w, clip, 0.0, 6.0,
                            kc=c_in)()
    two = np.zeros(int(np.prod(shape_out)), np.float32)
    work = np.zeros(bk.depthwise_blocked_scratch(shape_in[:1] + (c_e,) + shape_in[2:], shape_out,
                                                 (3, 3), (s, s), p[:2], (1, 1)), np.float32)
    bk.DepthwiseBlockedStep(e, bk.pack_depthwise_blocked(wd), bd, None, two,
                            shape_in[:1] + (c_e,) + shape_in[2:], shape_out, (3, 3), (s, s), p[:2],
                            (1, 1), clip, 0.0, 6.0, work, 1, True)()
    for nt in (1, 2, 3):
        got = _step(x, we, be, wd, bd, case, ACTS[0], nt, slots=3)
        assert np.array_equal(to_blocked(got).reshape(-1), two), nt


# (case, c_out, kc_p): the project's tiles: 6x16 (c_out 16, 32), the last 24 channels in 4x24
# (24; 40 = 16 + 24), a lone panel of 8 in 12x8 (8); several K blocks (kc_p 16, 64 of 96)
PROJECT = [(CASES[1], 16, 16), (CASES[1], 24, 256), (CASES[2], 40, 16), (CASES[3], 8, 256),
           (CASES[7], 32, 64), (CASES[0], 24, 16)]


def _project_step(x, we, be, wd, bd, wp, bp, res, case, c_out, kc_p, threads, slots=None,
                  act_p=("", 0.0, 0.0)):
    n, c_in, c_e, h, w, s, p = case
    shape_in, shape_out = _shapes(case)
    slots = slots or max(1, threads)
    work = np.full(slots * bk.expand_depthwise_scratch(shape_in, shape_out, (s, s), p[:2], True),
                   np.nan, np.float32)
    out = np.full((n, c_out) + shape_out[2:], np.nan, np.float32)
    clip = ACT_CODES["Clip"]
    step = bk.ExpandDepthwiseBlockedStep(
        to_blocked(x).reshape(-1), pack_b_panels(we.reshape(c_e, c_in).T), bk.pad_bias16(be, c_e),
        bk.pack_depthwise_blocked(wd), bd, out.reshape(-1), shape_in, shape_out, (s, s), p[:2],
        clip, 0.0, 6.0, clip, 0.0, 6.0, work, slots, False,
        pack_b_panels(wp.reshape(c_out, c_e).T), None if bp is None else bk.pad_bias16(bp, c_out),
        None if res is None else to_blocked(res).reshape(-1), c_out, ACT_CODES[act_p[0]],
        act_p[1], act_p[2], kc_p)
    step.num_threads = threads
    step()
    return from_blocked(out)


def _project_weights(case, c_out):
    n, c_e = case[0], case[2]
    ho, wo = _shapes(case)[1][2:]
    return (rand(RNG, c_out, c_e, 1, 1) / np.sqrt(c_e)).astype(np.float32), rand(RNG, c_out), \
        rand(RNG, n, c_out, ho, wo)


@pytest.mark.parametrize("case,c_out,kc_p", PROJECT, ids=lambda v: str(v))
def test_expand_depthwise_project_matches_numpy(case, c_out, kc_p, threads):
    n, c_in, c_e, h, w, s, p = case
    x, we, be, wd, bd = _weights(case)
    wp, bp, res = _project_weights(case, c_out)
    got = _project_step(x, we, be, wd, bd, wp, bp, res, case, c_out, kc_p, threads,
                        act_p=("HardSwish", 0.0, 0.0))
    e = np.clip(conv2d(x, we, be), 0, 6)
    d = np.clip(conv2d(e, wd, bd, (s, s), p, (1, 1), c_e), 0, 6)
    assert_close(got, apply("HardSwish", conv2d(d, wp, bp) + res))
    got = _project_step(x, we, be, wd, bd, wp, None, None, case, c_out, kc_p, threads)
    assert_close(got, conv2d(d, wp))


@pytest.mark.parametrize("case,c_out,kc_p", [PROJECT[0], PROJECT[2], PROJECT[4]], ids=lambda v: str(v))
def test_expand_depthwise_project_bit_identical_to_the_three_steps(case, c_out, kc_p):
    n, c_in, c_e, h, w, s, p = case
    shape_in, shape_out = _shapes(case)
    x, we, be, wd, bd = _weights(case)
    wp, bp, res = _project_weights(case, c_out)
    d = np.zeros(int(np.prod(shape_out)), np.float32)
    clip = ACT_CODES["Clip"]
    bk.ExpandDepthwiseBlockedStep(
        to_blocked(x).reshape(-1), pack_b_panels(we.reshape(c_e, c_in).T), bk.pad_bias16(be, c_e),
        bk.pack_depthwise_blocked(wd), bd, d, shape_in, shape_out, (s, s), p[:2], clip, 0.0, 6.0,
        clip, 0.0, 6.0)()
    three = np.zeros((n, c_out) + shape_out[2:], np.float32)
    bk.PointwiseBlockedStep(d, pack_b_panels(wp.reshape(c_out, c_e).T), bk.pad_bias16(bp, c_out),
                            to_blocked(res).reshape(-1), three.reshape(-1), n, c_e, c_out,
                            shape_out[2] * shape_out[3], kc=kc_p)()
    for nt in (1, 2, 3):
        got = _project_step(x, we, be, wd, bd, wp, bp, res, case, c_out, kc_p, nt, slots=3)
        assert np.array_equal(to_blocked(got), three), nt


@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("project", [False, True])
def test_expand_depthwise_stream(offset, project, threads):
    """stream=True writes the output (the depthwise's, or the project's last K block) with
    non-temporal stores when it is 32-byte aligned, never the ring or the row buffer: the same
    bits as stream=False; an unaligned output is written normally."""
    case = CASES[7]
    n, c_in, c_e, h, w, s, p = case
    shape_in, shape_out = _shapes(case)
    x, we, be, wd, bd = _weights(case)
    c_out = 32 if project else c_e
    wp, bp, res = _project_weights(case, c_out)
    clip = ACT_CODES["Clip"]
    outs = []
    for stream in (False, True):
        out = aligned_nan(n * c_out * shape_out[2] * shape_out[3], offset)
        work = np.full(2 * bk.expand_depthwise_scratch(shape_in, shape_out, (s, s), p[:2], project),
                       np.nan, np.float32)
        extra = dict(wpj=pack_b_panels(wp.reshape(c_out, c_e).T), bias_p=bk.pad_bias16(bp, c_out),
                     residual=to_blocked(res).reshape(-1), c_out=c_out, kc_p=64) if project else {}
        step = bk.ExpandDepthwiseBlockedStep(
            to_blocked(x).reshape(-1), pack_b_panels(we.reshape(c_e, c_in).T),
            bk.pad_bias16(be, c_e), bk.pack_depthwise_blocked(wd), bd, out, shape_in, shape_out,
            (s, s), p[:2], clip, 0.0, 6.0, clip, 0.0, 6.0, work, 2, stream, **extra)
        assert step.stream == (stream and offset == 0)
        step.num_threads = threads
        step()
        outs.append(out.copy())
    assert np.array_equal(outs[0], outs[1])
    e = np.clip(conv2d(x, we, be), 0, 6)
    d = np.clip(conv2d(e, wd, bd, (s, s), p, (1, 1), c_e), 0, 6)
    ref = conv2d(d, wp, bp) + res if project else d
    assert_close(from_blocked(outs[1].reshape((n, c_out) + shape_out[2:])), ref)


# ----------------------------------------------------------------------------- depthwise + project
# No expand (we=None): the ring holds copies of x's rows, c_e = c_in (8k channels, not only 16k).
# (n, c, c, h, w, stride, pads), c_out, kc_p
DW_PROJECT = [
    ((1, 8, 8, 1, 1, 1, (1, 1, 1, 1)), 16, 256),       # one pixel, one block of 8
    ((2, 24, 24, 9, 13, 1, (1, 1, 1, 1)), 24, 256),    # batch 2, odd sizes, 3 blocks, 4x24 tiles
    ((1, 32, 32, 11, 7, 2, (1, 1, 1, 1)), 16, 16),     # stride 2, narrow rows, 2 K blocks
    ((3, 16, 16, 5, 17, 2, (0, 1, 1, 0)), 8, 256),     # asymmetric pads, a lone panel of 8
    ((1, 8, 8, 13, 14, 4, (1, 1, 1, 1)), 40, 256),     # stride > kernel
    ((1, 16, 16, 4, 5, 1, (4, 3, 4, 3)), 16, 256),     # pads beyond the kernel
    ((2, 32, 32, 30, 29, 1, (1, 1, 1, 1)), 16, 256),   # MobileNetV2's first block, smaller
]


def _dw_project_step(x, wd, bd, wp, bp, res, case, c_out, kc_p, threads, slots=None,
                     stream=False, out=None):
    n, c, _, h, w, s, p = case
    shape_in, shape_out = _shapes(case)
    slots = slots or max(1, threads)
    work = np.full(slots * bk.expand_depthwise_scratch(shape_in, shape_out, (s, s), p[:2], True),
                   np.nan, np.float32)
    if out is None:
        out = np.full(n * c_out * shape_out[2] * shape_out[3], np.nan, np.float32)
    clip = ACT_CODES["Clip"]
    step = bk.ExpandDepthwiseBlockedStep(
        to_blocked(x).reshape(-1), None, None, bk.pack_depthwise_blocked(wd), bd, out,
        shape_in, shape_out, (s, s), p[:2], 0, 0.0, 0.0, clip, 0.0, 6.0, work, slots, stream,
        pack_b_panels(wp.reshape(c_out, c).T), None if bp is None else bk.pad_bias16(bp, c_out),
        None if res is None else to_blocked(res).reshape(-1), c_out, 0, 0.0, 0.0, kc_p)
    assert not step.expand and step.project
    step.num_threads = threads
    step()
    return step, from_blocked(out.reshape((n, c_out) + shape_out[2:]))


@pytest.mark.parametrize("case,c_out,kc_p", DW_PROJECT, ids=lambda v: str(v))
def test_depthwise_project_matches_numpy(case, c_out, kc_p, threads):
    n, c, _, h, w, s, p = case
    x, _, _, wd, bd = _weights(case)
    wp, bp, res = _project_weights(case, c_out)
    d = np.clip(conv2d(x, wd, bd, (s, s), p, (1, 1), c), 0, 6)
    _, got = _dw_project_step(x, wd, bd, wp, bp, res, case, c_out, kc_p, threads)
    assert_close(got, conv2d(d, wp, bp) + res)
    d = conv2d(x, wd, None, (s, s), p, (1, 1), c)
    got = _dw_project_step(x, wd, None, wp, None, None, case, c_out, kc_p, threads)[1]
    assert_close(got, conv2d(np.clip(d, 0, 6), wp))


@pytest.mark.parametrize("case,c_out,kc_p", [DW_PROJECT[1], DW_PROJECT[2], DW_PROJECT[3],
                                             DW_PROJECT[6]], ids=lambda v: str(v))
def test_depthwise_project_bit_identical_to_the_two_steps(case, c_out, kc_p):
    """The same sums as DepthwiseBlockedStep (ring) then PointwiseBlockedStep, for 1, 2 and 3
    threads (rows split, borders copied twice)."""
    n, c, _, h, w, s, p = case
    shape_in, shape_out = _shapes(case)
    x, _, _, wd, bd = _weights(case)
    wp, bp, res = _project_weights(case, c_out)
    d = np.zeros(int(np.prod(shape_out)), np.float32)
    work = np.zeros(bk.depthwise_blocked_scratch(shape_in, shape_out, (3, 3), (s, s), p[:2],
                                                 (1, 1)), np.float32)
    bk.DepthwiseBlockedStep(to_blocked(x).reshape(-1), bk.pack_depthwise_blocked(wd), bd, None, d,
                            shape_in, shape_out, (3, 3), (s, s), p[:2], (1, 1),
                            ACT_CODES["Clip"], 0.0, 6.0, work, 1, True)()
    two = np.zeros(n * c_out * shape_out[2] * shape_out[3], np.float32)
    bk.PointwiseBlockedStep(d, pack_b_panels(wp.reshape(c_out, c).T), bk.pad_bias16(bp, c_out),
                            to_blocked(res).reshape(-1), two, n, c, c_out,
                            shape_out[2] * shape_out[3], kc=kc_p)()
    for nt in (1, 2, 3):
        got = _dw_project_step(x, wd, bd, wp, bp, res, case, c_out, kc_p, nt, slots=3)[1]
        assert np.array_equal(to_blocked(got).reshape(-1), two), nt


@pytest.mark.parametrize("offset", [0, 1])
def test_depthwise_project_stream(offset, threads):
    """stream=True: the project's output in non-temporal stores when aligned, same bits."""
    case, c_out, kc_p = DW_PROJECT[6]
    n, c, _, h, w, s, p = case
    ho, wo = _shapes(case)[1][2:]
    x, _, _, wd, bd = _weights(case)
    wp, bp, res = _project_weights(case, c_out)
    outs = []
    for stream in (False, True):
        out = aligned_nan(n * c_out * ho * wo, offset)
        step, got = _dw_project_step(x, wd, bd, wp, bp, res, case, c_out, kc_p, threads,
                                     stream=stream, out=out)
        assert step.stream == (stream and offset == 0)
        outs.append(got)
    assert np.array_equal(outs[0], outs[1])


def test_depthwise_project_validation():
    n, c, h, w = 1, 24, 9, 13
    x = np.zeros(n * c * h * w, np.float32)
    wd = bk.pack_depthwise_blocked(np.zeros((c, 1, 3, 3), np.float32))
    wp = pack_b_panels(np.zeros((c, 16), np.float32))
    out = np.zeros(n * 16 * h * w, np.float32)
    good = dict(shape_in=(n, c, h, w), shape_out=(n, c, h, w), strides=(1, 1), pads=(1, 1))
    bk.ExpandDepthwiseBlockedStep(x, None, None, wd, None, out, **good, wpj=wp, c_out=16)  # fits
    with pytest.raises(ValueError, match="without an expand"):    # a depthwise conv alone
        bk.ExpandDepthwiseBlockedStep(x, None, None, wd, None, np.zeros_like(x), **good)
    with pytest.raises(ValueError, match="without an expand"):    # c_e != c_in
        bk.ExpandDepthwiseBlockedStep(x, None, None, wd, None, out, (n, c, h, w), (n, 16, h, w),
                                      (1, 1), (1, 1), wpj=wp, c_out=16)
    with pytest.raises(ValueError, match="bias"):                 # an expand bias, no expand
        bk.ExpandDepthwiseBlockedStep(x, None, bk.pad_bias16(np.zeros(c, np.float32), c), wd,
                                      None, out, **good, wpj=wp, c_out=16)
    with pytest.raises(ValueError, match="channels"):             # 20 channels: not 8k
        bk.ExpandDepthwiseBlockedStep(np.zeros(20 * h * w, np.float32), None, None, wd, None, out,
                                      (n, 20, h, w), (n, 20, h, w), (1, 1), (1, 1), wpj=wp,
                                      c_out=16)


# ----------------------------------------------------------------------------- stem + depthwise + project
# The depthwise conv's input computed by a tile conv on an NCHW image (a row-producing
# conv_tile.ConvTileStep): (n, c_x, h_x, w_x, stem kernel, stem stride, stem pads (t, l, b, r),
# c (16k), dw stride, c_out)
STEM = [
    (1, 3, 32, 30, 3, 2, (1, 1, 1, 1), 32, 1, 16),    # MobileNetV2's stem, smaller
    (2, 3, 17, 23, 3, 2, (1, 1, 1, 1), 16, 2, 24),    # odd sizes, batch 2, stride-2 depthwise
    (1, 2, 9, 14, 3, 1, (0, 0, 0, 0), 16, 1, 8),      # no padding: the stem reads x in place
    (3, 4, 11, 8, 5, 1, (2, 1, 2, 3), 32, 1, 40),     # 5x5, asymmetric pads, batch 3
    (1, 3, 6, 6, 3, 3, (4, 4, 4, 4), 16, 1, 16),      # stem pads beyond its kernel, stride > kernel
    (2, 8, 13, 11, 3, 2, (1, 1, 1, 1), 16, 1, 16),    # 8 channels: a channels-last copy
    (1, 12, 10, 19, 3, 1, (1, 2, 1, 0), 32, 2, 8),    # 8 + 4 channels, rows of 8 + 8 + 3
]


def _stem_step(x, ws, bs, wd, bd, wp, bp, res, case, threads, slots=None, out=None):
    """The fused stem + depthwise + project step on NCHW arrays (stem ReLU, depthwise ReLU6,
    project none): returns the NCHW output."""
    n, cx, hx, wx, k, ss, sp, c, ds, c_out = case
    e_shape, d_shape = _stem_parts_shapes(case)
    slots = slots or max(1, threads)
    cl = conv_tile.tile_channels_last(x.shape, ws.shape, e_shape, (ss, ss), sp[:2], (1, 1))
    assert cl == (cx >= 8)
    stem = conv_tile.ConvTileStep(x, conv_tile.pack_tile_weights(ws, None, cl), bs, None, None,
                                  (ss, ss), sp[:2], (1, 1), k, k, ACT_CODES["Relu"], 0.0, 0.0,
                                  rows_of=e_shape, channels_last=cl)
    pad = conv_tile.tile_scratch(x.shape, ws.shape, e_shape, (ss, ss), sp[:2], (1, 1))
    assert pad == stem.pad_size
    work = np.full(slots * bk.expand_depthwise_scratch(e_shape, d_shape, (ds, ds), (1, 1), True,
                                                       pad), np.nan, np.float32)
    if out is None:
        out = np.full(n * c_out * d_shape[2] * d_shape[3], np.nan, np.float32)
    step = bk.ExpandDepthwiseBlockedStep(
        x.reshape(-1), None, None, bk.pack_depthwise_blocked(wd), bd, out, e_shape, d_shape,
        (ds, ds), (1, 1), 0, 0.0, 0.0, ACT_CODES["Clip"], 0.0, 6.0, work, slots, False,
        pack_b_panels(wp.reshape(c_out, c).T), None if bp is None else bk.pad_bias16(bp, c_out),
        None if res is None else to_blocked(res).reshape(-1), c_out, 0, 0.0, 0.0, 256, stem)
    assert step.has_stem
    step.num_threads = threads
    step()
    return from_blocked(out.reshape((n, c_out) + d_shape[2:]))


def _stem_parts_shapes(case):
    n, cx, hx, wx, k, ss, sp, c, ds, c_out = case
    hs, wsz = out_size(hx, k, ss, sp[0], sp[2]), out_size(wx, k, ss, sp[1], sp[3])
    return (n, c, hs, wsz), (n, c, out_size(hs, 3, ds, 1, 1), out_size(wsz, 3, ds, 1, 1))


def _stem_weights(case):
    n, cx, hx, wx, k, ss, sp, c, ds, c_out = case
    e_shape, d_shape = _stem_parts_shapes(case)
    x = rand(RNG, n, cx, hx, wx)
    ws = (rand(RNG, c, cx, k, k) / np.sqrt(cx * k * k)).astype(np.float32)
    wd = rand(RNG, c, 1, 3, 3)
    wp = (rand(RNG, c_out, c, 1, 1) / np.sqrt(c)).astype(np.float32)
    return (x, ws, rand(RNG, c), wd, rand(RNG, c), wp, rand(RNG, c_out),
            rand(RNG, n, c_out, *d_shape[2:]))


@pytest.mark.parametrize("case", STEM, ids=lambda c: str(c))
def test_stem_depthwise_project_matches_numpy(case, threads):
    n, cx, hx, wx, k, ss, sp, c, ds, c_out = case
    x, ws, bs, wd, bd, wp, bp, res = _stem_weights(case)
    got = _stem_step(x, ws, bs, wd, bd, wp, bp, res, case, threads)
    e = np.maximum(conv2d(x, ws, bs, (ss, ss), sp), 0)
    d = np.clip(conv2d(e, wd, bd, (ds, ds), (1, 1, 1, 1), (1, 1), c), 0, 6)
    assert_close(got, conv2d(d, wp, bp) + res)
    got = _stem_step(x, ws, bs, wd, bd, wp, None, None, case, threads)
    assert_close(got, conv2d(d, wp))


@pytest.mark.parametrize("case", STEM, ids=lambda c: str(c))
def test_stem_depthwise_project_bit_identical_to_the_three_steps(case):
    """The bits of ConvTileStep storing blocked (in the same layout, planes or channels-last),
    DepthwiseBlockedStep and PointwiseBlockedStep, for 1, 2 and 3 threads (image rows split:
    border stem rows computed twice)."""
    n, cx, hx, wx, k, ss, sp, c, ds, c_out = case
    e_shape, d_shape = _stem_parts_shapes(case)
    x, ws, bs, wd, bd, wp, bp, res = _stem_weights(case)
    e = np.zeros(e_shape, np.float32)
    cl = conv_tile.tile_channels_last(x.shape, ws.shape, e_shape, (ss, ss), sp[:2], (1, 1))
    conv_tile.ConvTileStep(x, conv_tile.pack_tile_weights(ws, None, cl), bs, None, e, (ss, ss),
                           sp[:2], (1, 1), k, k, ACT_CODES["Relu"], 0.0, 0.0,
                           np.zeros(max(1, conv_tile.tile_scratch(x.shape, ws.shape, e_shape,
                                                                  (ss, ss), sp[:2], (1, 1))),
                                    np.float32), 1, True, channels_last=cl)()
    d = np.zeros(int(np.prod(d_shape)), np.float32)
    work = np.zeros(bk.depthwise_blocked_scratch(e_shape, d_shape, (3, 3), (ds, ds), (1, 1),
                                                 (1, 1)), np.float32)
    bk.DepthwiseBlockedStep(e.reshape(-1), bk.pack_depthwise_blocked(wd), bd, None, d, e_shape,
                            d_shape, (3, 3), (ds, ds), (1, 1), (1, 1), ACT_CODES["Clip"], 0.0,
                            6.0, work, 1, True)()
    three = np.zeros(n * c_out * d_shape[2] * d_shape[3], np.float32)
    bk.PointwiseBlockedStep(d, pack_b_panels(wp.reshape(c_out, c).T), bk.pad_bias16(bp, c_out),
                            to_blocked(res).reshape(-1), three, n, c, c_out,
                            d_shape[2] * d_shape[3])()
    for nt in (1, 2, 3):
        got = _stem_step(x, ws, bs, wd, bd, wp, bp, res, case, nt, slots=3)
        assert np.array_equal(to_blocked(got).reshape(-1), three), nt


def test_stem_validation():
    case = STEM[0]
    n, cx, hx, wx, k, ss, sp, c, ds, c_out = case
    e_shape, d_shape = _stem_parts_shapes(case)
    x = np.zeros((n, cx, hx, wx), np.float32)
    wt = conv_tile.pack_tile_weights(np.zeros((c, cx, 3, 3), np.float32))
    args = (x, wt, None, None, None, (2, 2), (1, 1), (1, 1), 3, 3)
    stem = conv_tile.ConvTileStep(*args, rows_of=e_shape)
    stem()                                                   # a row producer: runs nothing
    assert stem.rows_only and stem.rows_shape() == e_shape
    with pytest.raises(ValueError, match="row producer"):    # no rows_of
        conv_tile.ConvTileStep(*args)
    with pytest.raises(ValueError, match="row producer"):    # 24 channels: not 16k
        conv_tile.ConvTileStep(x, conv_tile.pack_tile_weights(np.zeros((24, cx, 3, 3), np.float32)),
                               None, None, None, (2, 2), (1, 1), (1, 1), 3, 3,
                               rows_of=(n, 24) + e_shape[2:])
    with pytest.raises(ValueError, match="row producer"):    # a residual
        conv_tile.ConvTileStep(x, wt, None, np.zeros(e_shape, np.float32), None, (2, 2), (1, 1),
                               (1, 1), 3, 3, rows_of=e_shape)
    wd = bk.pack_depthwise_blocked(np.zeros((c, 1, 3, 3), np.float32))
    wp = pack_b_panels(np.zeros((c, c_out), np.float32))
    out = np.zeros(n * c_out * d_shape[2] * d_shape[3], np.float32)
    good = dict(shape_in=e_shape, shape_out=d_shape, strides=(1, 1), pads=(1, 1), wpj=wp,
                c_out=c_out)
    bk.ExpandDepthwiseBlockedStep(x.reshape(-1), None, None, wd, None, out, **good, stem=stem)
    with pytest.raises(ValueError, match="stem"):            # and an expand
        bk.ExpandDepthwiseBlockedStep(x.reshape(-1), pack_b_panels(np.zeros((c, c), np.float32)),
                                      None, wd, None, out, **good, stem=stem)
    with pytest.raises(ValueError, match="stem"):            # a stem that stores its output
        e = np.zeros(e_shape, np.float32)
        bk.ExpandDepthwiseBlockedStep(
            x.reshape(-1), None, None, wd, None, out, **good,
            stem=conv_tile.ConvTileStep(x, wt, None, None, e, (2, 2), (1, 1), (1, 1), 3, 3,
                                        work=np.zeros(4096, np.float32)))
    with pytest.raises(ValueError, match="stem"):            # its rows are not e's
        other = conv_tile.ConvTileStep(np.zeros((n, cx, hx - 2, wx), np.float32), wt, None, None, None, (2, 2), (1, 1),
                                       (1, 1), 3, 3, rows_of=(n, c, e_shape[2] - 1, e_shape[3]))
        bk.ExpandDepthwiseBlockedStep(x.reshape(-1), None, None, wd, None, out, **good,
                                      stem=other)


def test_info_lists_the_fused_convs_as_kernels(tmp_path, capsys):
    """`fastcnn info` marks every conv of a fused node as run by a kernel."""
    from fastcnn import cli
    nodes, consts = _mobile_block()
    model = ir_model(nodes, {"x": (None, 3, 56, 58)}, ["y"], consts)
    assert _fused_names(model, (1, 3, 56, 58))
    model.save(tmp_path / "m.fcnn")
    assert cli.main(["info", str(tmp_path / "m.fcnn")]) == 0
    rows = re.findall(r"^\s+\d+\s+(\S+)\s+(\w+)\s+\[[^\]]*\]\s+(kernel|view|folded)$",
                      capsys.readouterr().out, re.M)
    assert [how for _, op, how in rows if op == "Conv"] == ["kernel"] * 4


def test_expand_depthwise_validation():
    case = CASES[1]
    n, c_in, c_e, h, w, s, p = case
    shape_in, shape_out = _shapes(case)
    x = np.zeros(n * c_in * h * w, np.float32)
    out = np.zeros(int(np.prod(shape_out)), np.float32)
    we = pack_b_panels(np.zeros((c_in, c_e), np.float32))
    wd = bk.pack_depthwise_blocked(np.zeros((c_e, 1, 3, 3), np.float32))
    good = dict(shape_in=shape_in, shape_out=shape_out, strides=(s, s), pads=p[:2])
    bk.ExpandDepthwiseBlockedStep(x, we, None, wd, None, out, **good)  # fits
    with pytest.raises(ValueError, match="channels"):    # 24 expanded channels: not 16k
        bk.ExpandDepthwiseBlockedStep(x, pack_b_panels(np.zeros((c_in, 24), np.float32)), None,
                                      bk.pack_depthwise_blocked(np.zeros((24, 1, 3, 3), np.float32)),
                                      None, np.zeros(n * 24 * 9 * 13, np.float32), shape_in,
                                      (n, 24, 9, 13), (1, 1), (1, 1))
    with pytest.raises(ValueError, match="sizes"):       # x one image short
        bk.ExpandDepthwiseBlockedStep(x[:c_in * h * w], we, None, wd, None, out, **good)
    with pytest.raises(ValueError, match="1x1 weights"):
        bk.ExpandDepthwiseBlockedStep(x, pack_b_panels(np.zeros((8, c_e), np.float32)), None, wd,
                                      None, out, **good)
    with pytest.raises(ValueError, match="depthwise weights"):
        bk.ExpandDepthwiseBlockedStep(x, we, None, np.ascontiguousarray(wd[:, :4]), None, out, **good)
    with pytest.raises(ValueError, match="bias"):
        bk.ExpandDepthwiseBlockedStep(x, we, None, wd, np.zeros(c_e - 8, np.float32), out, **good)
    with pytest.raises(ValueError, match="work"):
        bk.ExpandDepthwiseBlockedStep(x, we, None, wd, None, out, **good,
                                      work=np.zeros(16, np.float32), slots=1)
    with pytest.raises(ValueError, match="geometry"):
        bk.ExpandDepthwiseBlockedStep(x, we, None, wd, None, out, shape_in, shape_out, (0, 1), (1, 1))
    wp = pack_b_panels(np.zeros((c_e, 24), np.float32))
    out24 = np.zeros(n * 24 * 9 * 13, np.float32)
    bk.ExpandDepthwiseBlockedStep(x, we, None, wd, None, out24, **good, wpj=wp, c_out=24)  # fits
    with pytest.raises(ValueError, match="project channels"):
        bk.ExpandDepthwiseBlockedStep(x, we, None, wd, None, out24, **good, wpj=wp, c_out=20)
    with pytest.raises(ValueError, match="sizes"):      # out sized for the depthwise output
        bk.ExpandDepthwiseBlockedStep(x, we, None, wd, None, out, **good, wpj=wp, c_out=24)
    with pytest.raises(ValueError, match="project weights"):
        bk.ExpandDepthwiseBlockedStep(x, we, None, wd, None, out24, **good, wpj=wp[:1].copy(),
                                      c_out=24)
    with pytest.raises(ValueError, match="residual"):
        bk.ExpandDepthwiseBlockedStep(x, we, None, wd, None, out24, **good, wpj=wp, c_out=24,
                                      residual=out24[:-8])
    with pytest.raises(ValueError, match="residual"):   # a residual without a project
        bk.ExpandDepthwiseBlockedStep(x, we, None, wd, None, out, **good, residual=out)


# ----------------------------------------------------------------------------- through the planner
def _mobile_block(c_in=16, expand=96, size=56, dw_kernel=3, dw_dilation=1, extra=(),
                  residual=None):
    """stem 3x3 s2 (NCHW input -> blocked) -> expand 1x1 + Clip -> depthwise + Clip -> project
    1x1 -> GAP -> flatten; `extra` nodes appended (they may read "e"); residual "expand" or
    "depthwise": that conv's output plus another 1x1 conv of the stem's (fused as its residual)."""
    rng = np.random.default_rng(9)
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)
    k = dw_kernel
    consts = {"ws": w(c_in, 3, 3, 3), "bs": rand(rng, c_in), "we": w(expand, c_in, 1, 1),
              "be": rand(rng, expand), "wd": w(expand, 1, k, k), "bd": rand(rng, expand),
              "wp": w(16, expand, 1, 1), "bp": rand(rng, 16)}
    pad = (k - 1) * dw_dilation // 2
    relu6 = dict(activation="Clip", activation_alpha=0.0, activation_beta=6.0)
    nodes = [
        ("Conv", ["x", "ws", "bs"], ["s"], dict(pads=[1, 1, 1, 1], strides=[2, 2], activation="Relu")),
        ("Conv", ["s", "we", "be"], ["e"], relu6),
        ("Conv", ["e", "wd", "bd"], ["d"], dict(pads=[pad] * 4, strides=[2, 2], group=expand,
                                                dilations=[dw_dilation] * 2, **relu6)),
        ("Conv", ["d", "wp", "bp"], ["p"], {}),
        ("GlobalAveragePool", ["p"], ["g"], {}),
        ("Flatten", ["g"], ["y"], {}),
    ] + list(extra)
    if residual:
        at = 1 if residual == "expand" else 2
        op, ins, outs, attrs = nodes[at]
        attrs = {k: v for k, v in attrs.items() if not k.startswith("activation")}
        consts["wr"] = w(expand, c_in, 1, 1)
        # r from kernels that read and write blocked tensors (so the stem output stays blocked);
        # the Add is fused into the later of its two producers: the conv under test
        make_r = [("Conv", ["s", "wr"], ["r"], {})] if residual == "expand" else [
            ("Conv", ["s", "wr"], ["r0"], {}),
            ("MaxPool", ["r0"], ["r"], dict(kernel_shape=[2, 2], strides=[2, 2]))]
        nodes[at:at + 1] = make_r + [(op, ins, ["pre"], attrs),
                            ("Add", ["pre", "r"], ["sum"], {}),
                            ("Relu", ["sum"], outs, {})]
    return nodes, consts


def _fused_names(model, shape):
    return [n.name for n in model.plan_for([shape]).step_nodes
            if isinstance(n, k_conv.ExpandDepthwiseNode)]


def _unfused(monkeypatch, nodes, consts, x, outputs, threads):
    monkeypatch.setattr(k_conv, "FUSE_EXPAND_DEPTHWISE", False)
    try:
        m = ir_model(nodes, {"x": x.shape}, outputs, consts, num_threads=threads)
        assert not _fused_names(m, x.shape)
        return m.run(None, {"x": x})
    finally:
        monkeypatch.setattr(k_conv, "FUSE_EXPAND_DEPTHWISE", True)


@pytest.mark.parametrize("batch", [1, 3])
def test_planner_fuses_expand_and_depthwise(monkeypatch, batch, threads):
    """56x58 input, 28x29 after the stem: the expand + depthwise pair runs as one step, with
    the bits of the two steps and (loosely) the numpy reference; a strided input view too."""
    nodes, consts = _mobile_block()
    big = rand(RNG, batch, 3, 56, 116)
    x = big[:, :, :, ::2]                     # not contiguous
    model = ir_model(nodes, {"x": x.shape}, ["y"], consts, num_threads=threads, split_batch=False)
    plan = model.plan_for([x.shape])
    assert _fused_names(model, x.shape) == ["conv1+conv2"]
    assert "ExpandDepthwiseBlockedStep" in {type(s).__name__ for s in plan.steps}
    assert "e" not in {o for n in plan.step_nodes for o in n.outputs}
    got = model.run(None, {"x": x})[0]
    assert np.array_equal(got, _unfused(monkeypatch, nodes, consts, np.ascontiguousarray(x),
                                        ["y"], threads)[0])
    c = consts
    s = np.maximum(conv2d(x, c["ws"], c["bs"], (2, 2), (1, 1, 1, 1)), 0)
    e = np.clip(conv2d(s, c["we"], c["be"]), 0, 6)
    d = np.clip(conv2d(e, c["wd"], c["bd"], (2, 2), (1, 1, 1, 1), (1, 1), 96), 0, 6)
    ref = conv2d(d, c["wp"], c["bp"]).mean(axis=(2, 3))
    assert_close(got, ref)


@pytest.mark.parametrize("residual", [False, True])
def test_planner_fuses_the_project_conv(monkeypatch, residual, threads):
    """With FUSE_PROJECT_MIN_PIXELS lowered to the block's 14x15 output, the project 1x1 conv
    joins the pair (with its residual, the stem's output through a 1x1 conv and a max pool):
    same bits as the three convs apart."""
    monkeypatch.setattr(k_conv, "FUSE_PROJECT_MIN_PIXELS", 14 * 15)
    nodes, consts = _mobile_block()
    if residual:
        consts["wr"] = rand(RNG, 16, 16, 1, 1)
        nodes[3:4] = [("Conv", ["s", "wr"], ["r0"], {}),
                      ("MaxPool", ["r0"], ["r"], dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 1])),
                      nodes[3][:2] + (["pre"], {}), ("Add", ["pre", "r"], ["p"], {})]
    x = rand(RNG, 2, 3, 56, 58)
    model = ir_model(nodes, {"x": x.shape}, ["y"], consts, num_threads=threads)
    fused = [n for n in model.plan_for([x.shape]).step_nodes if isinstance(n, k_conv.ExpandDepthwiseNode)]
    assert len(fused) == 1 and len(fused[0].parts) == 3 and len(fused[0].inputs) == 1 + residual
    got = model.run(None, {"x": x})[0]
    assert np.array_equal(got, _unfused(monkeypatch, nodes, consts, x, ["y"], threads)[0])
    monkeypatch.setattr(k_conv, "FUSE_PROJECT_MIN_PIXELS", 14 * 15 + 1)
    again = ir_model(nodes, {"x": x.shape}, ["y"], consts, num_threads=threads)
    assert [len(n.parts) for n in again.plan_for([x.shape]).step_nodes
            if isinstance(n, k_conv.ExpandDepthwiseNode)] == [2]
    assert np.array_equal(again.run(None, {"x": x})[0], got)


def test_planner_uses_each_conv_once(monkeypatch, threads):
    """MobileNetV1-style pointwise / depthwise alternation: each pointwise conv could be the
    project of one depthwise conv and the expand of the next; it joins one fused node only, and
    the plan computes what the convs apart do."""
    monkeypatch.setattr(k_conv, "FUSE_PROJECT_MIN_PIXELS", 1)
    monkeypatch.setattr(k_conv, "FUSE_MIN_PIXELS", 1)
    rng = np.random.default_rng(12)
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)
    consts, nodes, prev = {"ws": w(16, 3, 3, 3)}, [], "s"
    nodes.append(("Conv", ["x", "ws"], ["s"], dict(pads=[1, 1, 1, 1], strides=[2, 2], activation="Relu")))
    for i in range(4):
        consts[f"p{i}"], consts[f"d{i}"] = w(32, 16 if i == 0 else 32, 1, 1), w(32, 1, 3, 3)
        nodes += [("Conv", [prev, f"p{i}"], [f"e{i}"], dict(activation="Relu")),
                  ("Conv", [f"e{i}", f"d{i}"], [f"o{i}"], dict(pads=[1, 1, 1, 1], group=32,
                                                                activation="Relu"))]
        prev = f"o{i}"
    consts["pl"] = w(16, 32, 1, 1)
    nodes += [("Conv", [prev, "pl"], ["l"], {}), ("GlobalAveragePool", ["l"], ["y"], {})]
    x = rand(RNG, 1, 3, 20, 22)
    model = ir_model(nodes, {"x": x.shape}, ["y"], consts, num_threads=threads)
    parts = [m.name for n in model.plan_for([x.shape]).step_nodes for m in plan_module.graph_nodes(n)]
    assert len(parts) == len(set(parts)) == len(nodes)
    # expand chains first (pointwise convs join as expands, not as projects of depthwise
    # pairs), then the last depthwise conv, whose 1x1 conv no chain took, with it
    fused = [(type(n).__name__, n.name) for n in model.plan_for([x.shape]).step_nodes
             if isinstance(n, k_conv.FusedNode)]
    assert fused == [("ExpandDepthwiseNode", "conv1+conv2+conv3"),
                     ("ExpandDepthwiseNode", "conv5+conv6+conv7"),
                     ("DepthwiseProjectNode", "conv8+conv9")]
    assert np.array_equal(model.run(None, {"x": x})[0],
                          _unfused(monkeypatch, nodes, consts, x, ["y"], threads)[0])


def _second_reader(t):
    """Nodes that read tensor t too: a 2x2 max pool (blocked) and its global average "mg"."""
    return [("MaxPool", [t], ["m"], dict(kernel_shape=[2, 2], strides=[2, 2])),
            ("GlobalAveragePool", ["m"], ["mg"], {})]


@pytest.mark.parametrize("why", ["two readers", "graph output", "5x5", "dilation", "wide input",
                                 "expand residual", "depthwise residual", "small image"])
def test_planner_leaves_other_pairs_apart(monkeypatch, why):
    """Pairs that do not qualify keep their two steps (and give the same results)."""
    kw, outputs, size = {}, ["y"], 56
    if why == "two readers":    # a blocked max pool also reads the expand output
        kw["extra"], outputs = _second_reader("e"), ["y", "mg"]
    elif why == "graph output":
        outputs = ["y", "e"]
    elif why == "5x5":
        kw["dw_kernel"] = 5
    elif why == "dilation":
        kw["dw_dilation"] = 2
    elif why == "wide input":   # 136 input channels: more than one K block (PW_KC_MAX)
        kw["c_in"] = 136
    elif why != "small image":   # a residual Add fused into the expand or depthwise conv
        kw["residual"] = why.split()[0]
    else:
        size = 54               # 27x27 after the stem: below FUSE_MIN_PIXELS
    nodes, consts = _mobile_block(**kw)
    if "residual" in why:
        assert any(len(n.inputs) > 3 and n.inputs[3] for n in ir_model(
            nodes, {"x": (1, 3, size, size)}, outputs, consts).graph.nodes)
    x = rand(RNG, 1, 3, size, size)
    model = ir_model(nodes, {"x": x.shape}, outputs, consts)
    assert not _fused_names(model, x.shape)
    plan = model.plan_for([x.shape])
    if why == "two readers":
        assert "e" in plan.blocked
    monkeypatch.setattr(k_conv, "FUSE_MIN_PIXELS", 1)
    again = ir_model(nodes, {"x": x.shape}, outputs, consts)
    assert bool(_fused_names(again, x.shape)) == (why == "small image")
    for a, b in zip(again.run(None, {"x": x}), model.run(None, {"x": x})):
        assert np.array_equal(a, b)


def _dw_block(c=16, residual=False, extra=(), dw_input="s", c_x=3):
    """stem 3x3 s2 (c_x -> c channels, blocked) -> 3x3 depthwise + Clip -> project 1x1 (+ a
    residual: the stem's output through another 1x1 conv) -> GAP -> flatten."""
    rng = np.random.default_rng(10)
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)
    consts = {"ws": w(c, c_x, 3, 3), "bs": rand(rng, c), "wd": w(c, 1, 3, 3), "bd": rand(rng, c),
              "wp": w(16, c, 1, 1), "bp": rand(rng, 16), "wr": w(16, c, 1, 1)}
    nodes = [
        ("Conv", ["x", "ws", "bs"], ["s"], dict(pads=[1, 1, 1, 1], strides=[2, 2], activation="Relu")),
        ("Conv", [dw_input, "wd", "bd"], ["d"], dict(pads=[1, 1, 1, 1], group=c, activation="Clip",
                                                     activation_alpha=0.0, activation_beta=6.0)),
        ("Conv", ["d", "wp", "bp"], ["pre" if residual else "p"], {}),
        ("GlobalAveragePool", ["p"], ["g"], {}),
        ("Flatten", ["g"], ["y"], {}),
    ] + list(extra)
    if residual:
        # r before the depthwise conv: the Add is fused into the later of its producers
        nodes[1:1] = [("Conv", ["s", "wr"], ["r"], {})]
        nodes[4:4] = [("Add", ["pre", "r"], ["p"], {})]
    return nodes, consts


def _dw_project_nodes(model, shape):
    return [n for n in model.plan_for([shape]).step_nodes
            if isinstance(n, k_conv.DepthwiseProjectNode)]


@pytest.mark.parametrize("stem", [True, False])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("c", [16, 24])
def test_planner_fuses_depthwise_and_project(monkeypatch, stem, residual, c, threads):
    """A depthwise conv after the stem (no expand to join) and its project 1x1 conv run as one
    step once the depthwise output has FUSE_PROJECT_MIN_PIXELS pixels (28x29 here): its output
    is not stored, the bits are those of the convs apart, numpy agrees. The stem (a tile conv
    from the NCHW input) joins them when FUSE_STEM, it has 16k channels (not 24) and the
    depthwise conv alone reads its output (not with the residual's 1x1 conv)."""
    monkeypatch.setattr(k_conv, "FUSE_PROJECT_MIN_PIXELS", 28 * 29)
    monkeypatch.setattr(k_conv, "FUSE_STEM", stem)
    nodes, consts = _dw_block(c, residual)
    x = rand(RNG, 2, 3, 56, 58)
    model = ir_model(nodes, {"x": x.shape}, ["y"], consts, num_threads=threads)
    fused = _dw_project_nodes(model, x.shape)
    joined = stem and c == 16 and not residual
    assert [len(n.parts) for n in fused] == [2 + joined] and len(fused[0].inputs) == 1 + residual
    assert fused[0].inputs[0] == ("x" if joined else "s")
    plan = model.plan_for([x.shape])
    outputs = {o for n in plan.step_nodes for o in n.outputs}
    assert "d" not in outputs and ("s" in outputs) != joined
    assert "ExpandDepthwiseBlockedStep" in {type(st).__name__ for st in plan.steps}
    got = model.run(None, {"x": x})[0]
    monkeypatch.setattr(k_conv, "FUSE_DEPTHWISE_PROJECT", False)
    apart = ir_model(nodes, {"x": x.shape}, ["y"], consts, num_threads=threads)
    assert not _dw_project_nodes(apart, x.shape)
    assert np.array_equal(got, apart.run(None, {"x": x})[0])
    k = consts
    s = np.maximum(conv2d(x, k["ws"], k["bs"], (2, 2), (1, 1, 1, 1)), 0)
    d = np.clip(conv2d(s, k["wd"], k["bd"], (1, 1), (1, 1, 1, 1), (1, 1), c), 0, 6)
    p = conv2d(d, k["wp"], k["bp"]) + (conv2d(s, k["wr"]) if residual else 0)
    assert_close(got, p.mean(axis=(2, 3)))


@pytest.mark.parametrize("why", ["small image", "two readers", "graph output", "switched off",
                                 "nchw input"])
def test_planner_leaves_depthwise_and_project_apart(monkeypatch, why):
    """A depthwise output under FUSE_PROJECT_MIN_PIXELS, read by another node too, or a graph
    output, or a depthwise conv reading an NCHW tensor (the graph's input: its output blocked
    for the project, its input not) keeps the two steps (with the same results)."""
    monkeypatch.setattr(k_conv, "FUSE_PROJECT_MIN_PIXELS", 28 * 29 + (why == "small image"))
    kw, outputs, x = {}, ["y"], rand(RNG, 1, 3, 56, 58)
    if why == "two readers":
        kw["extra"], outputs = _second_reader("d"), ["y", "mg"]
    elif why == "graph output":
        outputs = ["y", "d"]
    elif why == "switched off":
        monkeypatch.setattr(k_conv, "FUSE_DEPTHWISE_PROJECT", False)
    elif why == "nchw input":
        kw["dw_input"], x = "x", rand(RNG, 1, 16, 28, 29)
    nodes, consts = _dw_block(**kw)
    if why == "nchw input":
        nodes = nodes[1:]                       # no stem
    model = ir_model(nodes, {"x": x.shape}, outputs, consts)
    assert not _dw_project_nodes(model, x.shape)
    monkeypatch.setattr(k_conv, "FUSE_PROJECT_MIN_PIXELS", 1)
    monkeypatch.setattr(k_conv, "FUSE_DEPTHWISE_PROJECT", True)
    again = ir_model(nodes, {"x": x.shape}, outputs, consts)
    assert bool(_dw_project_nodes(again, x.shape)) == (why in ("small image", "switched off"))
    for a, b in zip(again.run(None, {"x": x}), model.run(None, {"x": x})):
        assert np.array_equal(a, b)


def test_planner_keeps_a_gemm_stem_apart(monkeypatch):
    """A stem whose reduction is too long for the tile kernel (520 x 3 x 3 > TILE_MAX_K: the
    GEMM conv stores blocked) stays a step of its own; the depthwise conv and project fuse."""
    monkeypatch.setattr(k_conv, "FUSE_PROJECT_MIN_PIXELS", 1)
    nodes, consts = _dw_block(c_x=520)
    x = rand(RNG, 1, 520, 12, 14)
    model = ir_model(nodes, {"x": x.shape}, ["y"], consts)
    assert [len(n.parts) for n in _dw_project_nodes(model, x.shape)] == [2]
    k = consts
    s = np.maximum(conv2d(x, k["ws"], k["bs"], (2, 2), (1, 1, 1, 1)), 0)
    d = np.clip(conv2d(s, k["wd"], k["bd"], (1, 1), (1, 1, 1, 1), (1, 1), 16), 0, 6)
    assert_close(model.run(None, {"x": x})[0], conv2d(d, k["wp"], k["bp"]).mean(axis=(2, 3)))


@pytest.mark.parametrize("size,threads_,streamed", [(28, 2, True), (28, 1, False), (56, 2, False),
                                                    (52, 2, False), (50, 2, True)])
def test_depthwise_output_streamed_when_every_thread_reads_it(size, threads_, streamed):
    """On 2 threads, a depthwise conv whose output the pointwise conv after it reads with its
    channels split between the threads (14x14 here: few pixel bands) writes it with
    non-temporal stores; not on 1 thread, nor from 26x26 (8 bands of 96 pixels: the pointwise
    conv splits pixels there; 25x25 makes 7). Same bits in every case."""
    nodes, consts = _dw_block()
    x = rand(RNG, 1, 3, size, size)
    model = ir_model(nodes, {"x": x.shape}, ["y"], consts, num_threads=threads_)
    plan = model.plan_for([x.shape])
    (dw,) = [s for s in plan.steps if type(s).__name__ == "DepthwiseBlockedStep"]
    assert dw.stream == streamed
    assert bk.pointwise_splits_channels(1, (size // 2) ** 2, threads_) == streamed
    one = ir_model(nodes, {"x": x.shape}, ["y"], consts, num_threads=1)
    assert np.array_equal(model.run(None, {"x": x})[0], one.run(None, {"x": x})[0])

"""prepare for Conv: picks the algorithm for the layer's geometry, packs the weights once.

Algorithms (kernels in fastcnn/_kernels/):
    direct      conv.pyx        plain loops; the reference, and the fallback for anything else
    gemm        conv_gemm.pyx   im2col packed straight into micro-kernel panels + packed GEMM,
                                per group; a 1x1 stride-1 unpadded conv reads x in place (no im2col);
                                small single-threaded layers build their whole im2col matrix once
    vecdirect   conv_vec.pyx    direct, vectorised along output rows: depthwise layers with a channel
                                multiplier and layers with few output channels (LeNet sizes)
    tile        conv_tile.pyx   direct, 6-pixel x 16-channel register tiles reading the input in
                                place (no im2col to pack): group 1, K = c_in*k_h*k_w <= 4608
    depthwise   conv_dw.pyx     one filter per channel: padded plane, 8 output vectors per pass
    winograd2   winograd.pyx    F(2x2, 3x3): 3x3, stride 1, dilation 1, group 1
    winograd4   winograd.pyx    F(4x4, 3x3): same conditions, 2.25x fewer multiplies than F(2,3)

Every applicable algorithm gets a cost estimate (cycles on one core, from the padded work each
one really does and per-element costs measured with bench/kernels.py); the cheapest wins.
`FORCE_ALGORITHM` (or the environment variable FASTCNN_CONV_ALGORITHM) overrides the choice for
tests and benchmarks when the forced algorithm applies to the layer. Every path fuses the bias,
the residual input (input 4) and the activation.

1-D convolutions run as 2-D with height 1 (views, no copies).

Blocked layouts (runtime/blocking.py, fastcnn/_kernels/blocked.pyx): `conv_layouts` lets a 2-D
conv give an NCHW8c output when it reads an NCHW8c input as a pointwise (1x1 stride-1) or
depthwise conv (`blocked_pointwise`, `blocked_depthwise`), or when it reads an NCHW input and
has no residual: group 1 stores NCHW8c directly (`tile_to_blocked`, or `gemm_to_blocked` for
K > TILE_MAX_K), other groups run any algorithm above into scratch, then a reorder. The residual
input always has the output's layout.
"""
from __future__ import annotations

import os

import numpy as np

from fastcnn._kernels import conv as conv_kernels
from fastcnn._kernels import blocked, conv_dw, conv_gemm, conv_tile, conv_vec, winograd
from fastcnn._kernels.gemm import k_block
from fastcnn.ir.geometry import window_geometry
from fastcnn.ir.weights import conv_weights, weight_scale_of
from fastcnn.runtime.k_dense import scratch_slots
from fastcnn.runtime.k_eltwise import activation_code
from fastcnn.runtime.prepare import Prepared

# Test/bench override: an algorithm name, or None for the cost-based choice.
FORCE_ALGORITHM = None

# Cost model constants, in cycles of one core (2 FMA units x 8 lanes), fitted to single-thread
# timings of bench/kernels.py layers (ResNet, MobileNet, LeNet shapes) on the development machine.
# Only the ranking matters: they choose between algorithms, they predict no timing.
PEAK_MACS_PER_CYCLE = 16.0
GEMM_EFFICIENCY = 0.9            # micro-kernel share of peak on full tiles
IM2COL_CYCLES_PER_RUN = 10.0     # packing one K row of a 16-pixel panel, per output-row run
WINOGRAD_INPUT_CYCLES = {2: 20.0, 4: 40.0}    # per tile and input channel: gather + B^T d B
WINOGRAD_OUTPUT_CYCLES = {2: 15.0, 4: 35.0}   # per tile and output channel: A^T M A + scatter
VEC_CYCLES_PER_TAP = 1.2         # one 8-output vector times one filter tap
VEC_COPY_CYCLES_PER_FLOAT = 0.25 # the padded, phase-split copy of a task's input planes
VEC_CO_CHUNK = 8                 # output channels per task (conv_vec.pyx CO_CHUNK)
VEC_CYCLES_PER_TASK_ROW = 80.0   # per task and output row: phase copy setup, row dispatch (fitted
                                 # on depthwise planes 7x7 to 112x112, one task per channel)
DIRECT_MACS_PER_CYCLE = 0.7
TILE_CYCLES_PER_K = 6.3          # tile: one K step of a 6x16 tile (12 FMAs, 9 loads)
TILE_CYCLES_PER_STORE = 80.0     # tile: two 8x8 transposes and 16 row stores per tile
TILE_COPY_CYCLES_PER_FLOAT = 1.0 # tile: the zero-padded copy of an image, per task
TILE_STRIDED_IN_PLACE = 2.0      # tile: K steps of an unpadded strided 1x1 conv, which reads
                                 # x in place: each step a new plane, half of each line used
                                 # (ResNet-18's downsample convs took 1.8-2x the cycles of
                                 # TILE_CYCLES_PER_K in the model; the GEMM conv runs them 5-25%
                                 # faster there). Not for larger kernels: their steps walk a
                                 # row (3x3 stride 2 or 3 alone: the tile 3-50% faster)
TILE_MAX_K = 4608                # tile: a 16-channel weight panel of K floats stays in L2
                                 # (512 x 3x3: every ResNet-18 conv; ResNet-18 b1 and b16 2%
                                 # faster than with the GEMM above K = 512)
DW_CYCLES_PER_TAP = 0.6          # depthwise: one 8-output vector times one filter tap
DW_COPY_CYCLES_PER_FLOAT = 0.25  # depthwise: the padded copy of a plane
DW_CYCLES_PER_PLANE = 100.0      # depthwise: per-plane setup and epilogue
# Blocked conv outputs of at least this many bytes (half the 16 MB last-level cache of the
# development machine, and more than most edge CPUs have) are written with non-temporal stores.
STREAM_MIN_BYTES = 8 << 20
# Blocked pointwise convs take K blocks of at most PW_KC_MAX channels: a band's 96-pixel block
# of x then stays in L2 with fewer lines in flight when x comes from L3 (MobileNetV2 b16: 1%
# faster than 256; 576->96 at 14x14 alone 5-20%; b1 unchanged). Those with at most
# NARROW_PW_CHANNELS output channels take K blocks of NARROW_PW_KC.
PW_KC_MAX = 128
NARROW_PW_CHANNELS = 32
NARROW_PW_KC = 64
# Winograd's per-thread buffers grow with the channels; beyond this they leave the caches.
WINOGRAD_MAX_CHANNELS = 1024


class _GeomCtx:
    """Adapter so window_geometry can report errors through a PrepareContext."""

    def __init__(self, p):
        self.fail = p.fail


class _NoFail:
    """window_geometry context for a layout rule: the node was validated already."""

    @staticmethod
    def fail(msg):
        raise ValueError(msg)


def conv_params(p):
    """Resolved 2-D geometry for a Conv node: dict with kernel, strides, dilations,
    pads (top, left, bottom, right), group, activation code/params, and 4-D shapes."""
    return _conv_params(_GeomCtx(p), p.in_types[0].shape, p.in_types[1].shape,
                        p.out_types[0].shape, p.attrs)


def _conv_params(ctx, x, w, y, a):
    geo = window_geometry(ctx, x[2:], w[2:], a["strides"], a["pads"], a["dilations"], a["auto_pad"])
    if len(x) == 3:
        kernel, strides, dil = (1,) + geo.kernel, (1,) + geo.strides, (1,) + geo.dilations
        pads = (0, geo.pads[0], 0, geo.pads[1])
        x4, w4, y4 = (x[0], x[1], 1, x[2]), (w[0], w[1], 1, w[2]), (y[0], y[1], 1, y[2])
    else:
        kernel, strides, dil = geo.kernel, geo.strides, geo.dilations
        pads = geo.pads
        x4, w4, y4 = x, w, y
    return dict(kernel=kernel, strides=strides, dilations=dil, pads=pads, group=a["group"],
                act=activation_code(a["activation"]), alpha=a["activation_alpha"],
                beta=a["activation_beta"], x4=x4, w4=w4, y4=y4)


def conv_flops(cp) -> int:
    n, c_out, h_out, w_out = cp["y4"]
    _, cig, k_h, k_w = cp["w4"]
    return 2 * n * c_out * h_out * w_out * cig * k_h * k_w


def _ceil(a, b):
    return -(-a // b)


def _is_pointwise(cp):
    return (cp["kernel"] == (1, 1) and cp["strides"] == (1, 1) and cp["pads"] == (0, 0, 0, 0)
            and cp["x4"][2:] == cp["y4"][2:])


# ----------------------------------------------------------------------------- cost model
def _cost_direct(cp):
    return conv_flops(cp) / 2 / DIRECT_MACS_PER_CYCLE


def _cost_gemm(cp):
    n, c_out, h_out, w_out = cp["y4"]
    _, cig, k_h, k_w = cp["w4"]
    g = cp["group"]
    k = cig * k_h * k_w
    panels = n * g * _ceil(h_out * w_out, 16)
    macs = panels * 16 * _ceil(c_out // g, 6) * 6 * k
    runs = 0.0 if _is_pointwise(cp) else 1.0 + 16.0 / w_out  # output rows a panel touches
    return (macs / (PEAK_MACS_PER_CYCLE * GEMM_EFFICIENCY)
            + panels * k * runs * IM2COL_CYCLES_PER_RUN)


def _cost_vecdirect(cp):
    n, c_out, h_out, w_out = cp["y4"]
    _, cig, k_h, k_w = cp["w4"]
    c_in, h_in, w_in = cp["x4"][1:]
    g, s = cp["group"], cp["strides"][1]
    chunks = n * g * _ceil(c_out // g, VEC_CO_CHUNK)
    taps = n * c_out * h_out * _ceil(w_out, 8) * cig * k_h * k_w
    copied = chunks * cig * h_in * s * max(_ceil(cp["pads"][1] + w_in, s), _ceil(w_out, 8) * 8)
    return (taps * VEC_CYCLES_PER_TAP + copied * VEC_COPY_CYCLES_PER_FLOAT
            + chunks * h_out * VEC_CYCLES_PER_TASK_ROW)


def _tile_applies(cp):
    _, cig, k_h, k_w = cp["w4"]
    return cp["group"] == 1 and cig * k_h * k_w <= TILE_MAX_K


def _cost_tile(cp):
    n, c_out, h_out, w_out = cp["y4"]
    _, cig, k_h, k_w = cp["w4"]
    c_in, h_in, w_in = cp["x4"][1:]
    k = cig * k_h * k_w
    tiles = n * _ceil(h_out * w_out, 6)
    panels = c_out // 16 + (c_out % 16 > 8)     # full 6x16 tiles
    half = c_out % 16 and c_out % 16 <= 8       # a last panel of <= 8 channels: 12x8 tiles
    padded = any(cp["pads"]) * n * c_in * (h_in + k_h) * (w_in + k_w)
    per_k = TILE_CYCLES_PER_K
    if not padded and cp["strides"] != (1, 1) and (k_h, k_w) == (1, 1):
        per_k *= TILE_STRIDED_IN_PLACE
    return ((tiles * panels + _ceil(tiles, 2) * half) * (k * per_k + TILE_CYCLES_PER_STORE)
            + padded * TILE_COPY_CYCLES_PER_FLOAT)


def _depthwise_applies(cp):
    c_in, c_out = cp["x4"][1], cp["y4"][1]
    return cp["group"] == c_in == c_out


def _cost_depthwise(cp):
    n, c, h_out, w_out = cp["y4"]
    _, h_in, w_in = cp["x4"][1:]
    k_h, k_w = cp["kernel"]
    chunks = _ceil(h_out * (1 if w_out < 8 else _ceil(w_out, 8)), 8) * 8
    copied = (h_in + 2) * (w_in + 8)
    return n * c * (chunks * k_h * k_w * DW_CYCLES_PER_TAP + copied * DW_COPY_CYCLES_PER_FLOAT
                    + DW_CYCLES_PER_PLANE)


def _cost_winograd(cp, m):
    n, c_out, h_out, w_out = cp["y4"]
    c_in = cp["x4"][1]
    tiles = _ceil(n * _ceil(h_out, m) * _ceil(w_out, m), 16) * 16
    a2 = (m + 2) ** 2
    macs = tiles * a2 * _ceil(c_out, 6) * 6 * c_in
    return (macs / (PEAK_MACS_PER_CYCLE * GEMM_EFFICIENCY)
            + tiles * (c_in * WINOGRAD_INPUT_CYCLES[m] + c_out * WINOGRAD_OUTPUT_CYCLES[m]))


def _winograd_applies(cp):
    c_out, c_in = cp["y4"][1], cp["x4"][1]
    return (cp["kernel"] == (3, 3) and cp["strides"] == (1, 1) and cp["dilations"] == (1, 1)
            and cp["group"] == 1 and c_in <= WINOGRAD_MAX_CHANNELS
            and c_out <= WINOGRAD_MAX_CHANNELS)


# name -> (applies(cp), cost(cp))
ALGORITHMS = {
    "direct": (lambda cp: True, _cost_direct),
    "gemm": (lambda cp: True, _cost_gemm),
    "vecdirect": (lambda cp: True, _cost_vecdirect),
    "tile": (_tile_applies, _cost_tile),
    "depthwise": (_depthwise_applies, _cost_depthwise),
    "winograd2": (_winograd_applies, lambda cp: _cost_winograd(cp, 2)),
    "winograd4": (_winograd_applies, lambda cp: _cost_winograd(cp, 4)),
}


def choose_algorithm(cp) -> str:
    """The cheapest applicable algorithm, or the forced one when it applies."""
    forced = FORCE_ALGORITHM or os.environ.get("FASTCNN_CONV_ALGORITHM") or None
    if forced is not None and forced not in ALGORITHMS:
        raise ValueError(f"unknown conv algorithm {forced!r}; known: {', '.join(ALGORITHMS)}")
    if forced is not None and ALGORITHMS[forced][0](cp):
        return forced
    costs = {name: cost(cp) for name, (applies, cost) in ALGORITHMS.items() if applies(cp)}
    return min(costs, key=costs.get)


# ----------------------------------------------------------------------------- binders
def _bind_direct(p, cp, w4, bias):
    def bind(x, y, res, scratch):
        return conv_kernels.ConvDirectStep(x, w4.kept(), bias, res, y, cp["strides"], cp["pads"][:2],
                                           cp["dilations"], cp["group"], cp["act"], cp["alpha"],
                                           cp["beta"])
    return bind, 0


def _bind_gemm(p, cp, w4, bias):
    g = cp["group"]
    ap = p.cached(("gemm_panels", g), lambda: conv_gemm.pack_a_panels(w4(), g))
    _, cig, k_h, k_w = cp["w4"]
    kc = k_block(cig * k_h * k_w)
    slots = scratch_slots(p)
    n, c_out, h_out, w_out = cp["y4"]
    size = conv_gemm.gemm_conv_scratch(kc, slots, n, c_out, cig * k_h * k_w, h_out, w_out,
                                       _is_pointwise(cp))

    def bind(x, y, res, scratch):
        return conv_gemm.ConvGemmStep(x, ap, bias, res, y, cp["strides"], cp["pads"][:2],
                                      cp["dilations"], g, k_h, k_w, cp["act"], cp["alpha"],
                                      cp["beta"], kc, scratch[:size], slots)
    return bind, size


def _bind_vecdirect(p, cp, w4, bias):
    slots = scratch_slots(p)
    c_in, h_in, w_in = cp["x4"][1:]
    size = slots * conv_vec.vec_scratch(c_in, h_in, w_in, cp["y4"][3], cp["w4"][3],
                                        cp["strides"][1], cp["pads"][1], cp["dilations"][1],
                                        cp["group"])

    def bind(x, y, res, scratch):
        return conv_vec.ConvVecStep(x, w4.kept(), bias, res, y, cp["strides"], cp["pads"][:2],
                                    cp["dilations"], cp["group"], cp["act"], cp["alpha"],
                                    cp["beta"], scratch[:size], slots)
    return bind, size


def _bind_tile(p, cp, w4, bias, blocked_out=False, pool=False, rows=False):
    """The tile kernel into an NCHW output, or (blocked_out) into an NCHW8c one, or (pool)
    into the NCHW output of a 2x2 stride-2 max pool of its output (ConvPoolNode), or (rows)
    as the row producer of a DepthwiseProjectNode's stem (no output, no scratch of its own:
    the size returned is then the padded image's floats per thread, which its user holds)."""
    geom = (cp["x4"], cp["w4"], cp["y4"], cp["strides"], cp["pads"][:2], cp["dilations"])
    channels_last = conv_tile.tile_channels_last(*geom)
    wt = p.cached(("tile_panels", channels_last), lambda: w4.panels(channels_last))
    slots = 1 if rows else scratch_slots(p)
    size = slots * conv_tile.tile_scratch(*geom, pool)
    k_h, k_w = cp["kernel"]
    stream = blocked_out and _stream_output(cp)
    pool_hw = cp["y4"][2:] if pool else None

    def bind(x, y, res, scratch):
        if rows:
            return conv_tile.ConvTileStep(x, wt, bias, None, None, cp["strides"], cp["pads"][:2],
                                          cp["dilations"], k_h, k_w, cp["act"], cp["alpha"],
                                          cp["beta"], rows_of=cp["y4"],
                                          channels_last=channels_last)
        return conv_tile.ConvTileStep(x, wt, bias, res, y, cp["strides"], cp["pads"][:2],
                                      cp["dilations"], k_h, k_w, cp["act"], cp["alpha"],
                                      cp["beta"], scratch[:size] if size else None, slots,
                                      blocked_out, stream, pool_hw, channels_last=channels_last)
    return bind, size


def _bind_depthwise(p, cp, w4, bias):
    slots = scratch_slots(p)
    _, h_in, w_in = cp["x4"][1:]
    _, _, h_out, w_out = cp["y4"]
    geo = (h_in, w_in, h_out, w_out) + cp["kernel"] + cp["strides"] + cp["pads"][:2] + cp["dilations"]
    size = slots * conv_dw.depthwise_scratch(*geo)

    def bind(x, y, res, scratch):
        return conv_dw.ConvDepthwiseStep(x, w4.kept(), bias, res, y, cp["strides"], cp["pads"][:2],
                                         cp["dilations"], cp["act"], cp["alpha"], cp["beta"],
                                         scratch[:size], slots)
    return bind, size


def _winograd_binder(m):
    def make(p, cp, w4, bias, pool=False):
        """pool: y is the output of a 2x2 stride-2 max pool of the conv's (ConvPoolNode)."""
        def transformed():
            # scaled as they are transformed, from the weights as the graph holds them (read
            # in place, bytewise): no scaled copy of them is made (ResNet-18: 38 MB to write)
            w, scale = w4.unscaled()
            return winograd.winograd_weights(w, m, p.num_threads, scale, p.alloc)

        up = p.cached(("winograd", m), transformed)
        slots = scratch_slots(p)
        size = slots * winograd.winograd_scratch(m, cp["x4"][1], cp["y4"][1])
        pool_hw = cp["y4"][2:] if pool else None

        def bind(x, y, res, scratch):
            # the step keeps the weights as read and their scale, to recompute the outputs
            # its transforms made non-finite: no scaled copy stays beside the packed one
            w, scale = w4.unscaled()
            return winograd.ConvWinogradStep(x, up, bias, res, y, cp["pads"][:2], m, cp["act"],
                                             cp["alpha"], cp["beta"], scratch[:size], slots,
                                             w, pool_hw, scale)
        return bind, size
    return make


BINDERS = {
    "direct": _bind_direct,
    "gemm": _bind_gemm,
    "vecdirect": _bind_vecdirect,
    "tile": _bind_tile,
    "depthwise": _bind_depthwise,
    "winograd2": _winograd_binder(2),
    "winograd4": _winograd_binder(4),
}


# ----------------------------------------------------------------------------- blocked layouts
def _blocked_kind(x, w, y, attrs):
    """'pointwise', 'depthwise' or None: the blocked kernel that runs this conv on an NCHW8c
    input (x, w, y: 4-D shapes)."""
    geo = window_geometry(_NoFail, x[2:], w[2:], attrs["strides"], attrs["pads"],
                          attrs["dilations"], attrs["auto_pad"])
    group, c_in, c_out = attrs["group"], x[1], y[1]
    if c_in % 8 or c_out % 8:
        return None
    if (group == 1 and geo.kernel == (1, 1) and geo.strides == (1, 1)
            and not any(geo.pads) and x[2:] == y[2:]):
        return "pointwise"
    if group == c_in == c_out and w[1] == 1:
        return "depthwise"
    return None


def conv_layouts(node, in_types, out_types, attrs, in_blocked, out_blocked) -> bool:
    """Layout rule (runtime/blocking.py): which NCHW8c inputs/outputs this Conv can run with."""
    x_b, y_b = in_blocked[0], out_blocked[0]
    has_res = len(node.inputs) > 3 and bool(node.inputs[3])
    if has_res and in_blocked[3] != y_b:
        return False
    if not y_b:
        return not x_b
    if len(out_types[0].shape) != 4:
        return False
    if not x_b:
        if has_res:
            return False
        # a group-1 conv stores blocked with the tile or GEMM kernel: not when Winograd would
        # run it on NCHW (the edge CNN's 64->128 layer feeding a max pool: 21% slower blocked)
        cp = _conv_params(_NoFail, in_types[0].shape, in_types[1].shape, out_types[0].shape,
                          attrs)
        return cp["group"] != 1 or not choose_algorithm(cp).startswith("winograd")
    return _blocked_kind(in_types[0].shape, in_types[1].shape, out_types[0].shape,
                         attrs) is not None


def _stream_output(cp) -> bool:
    """Write this blocked conv's output with non-temporal stores: it is larger than
    STREAM_MIN_BYTES, so its lines leave the caches before the next layer reads them, and a
    cached store would only add a read of each line from memory (MobileNetV2 at batch 16:
    about 7% faster on 2 threads, bench/run.py)."""
    n, c_out, h_out, w_out = cp["y4"]
    return n * c_out * h_out * w_out * 4 >= STREAM_MIN_BYTES


def _read_by_every_thread(p, cp) -> bool:
    """Write this depthwise conv's output with non-temporal stores too when the plan runs on
    several threads and a pointwise conv reading it would split its channels between them (few
    pixel bands: 14x14 and 7x7 at batch 1), so each thread reads all of it: then, the next run,
    a cached store to a line the other core read must first take that line back from it, which
    on this VM costs what a read from memory does (MobileNetV2's 14x14 depthwise convs: 39 ->
    87 us in the model on 2 threads, against 36 when called twice in a row; the whole model at
    batch 1 on 2 threads 4% faster with them streamed)."""
    n, _, h_out, w_out = cp["y4"]
    return p.num_threads > 1 and blocked.pointwise_splits_channels(n, h_out * w_out, p.num_threads)


def _pointwise_kc(c_in, c_out) -> int:
    """The K block of a blocked pointwise conv (PW_KC_MAX; NARROW_PW_KC for narrow outputs)."""
    kc = (k_block(c_in, PW_KC_MAX) + 7) // 8 * 8
    if c_out <= NARROW_PW_CHANNELS:
        # one or two channel panels re-read each 96-pixel block of x: with 64 channels at a
        # time it stays in L1 between them (MobileNetV2 b16: 2-3% faster; b1 unchanged)
        kc = min(kc, NARROW_PW_KC)
    return kc


def _packed_pointwise(p, cp, w4, bias):
    """(W^T in 16-channel panels, bias padded to 16 or None) of a blocked 1x1 conv, packed once
    per model: the unfused step and the fused one share them."""
    c_out = cp["y4"][1]
    wp = p.cached("blocked_pw", w4.panels)
    b16 = p.cached("blocked_bias16", lambda: blocked.pad_bias16(bias, c_out)) if bias is not None else None
    return wp, b16


def _packed_depthwise(p, w4):
    """The blocked depthwise weights (c//8, k_h*k_w, 8), packed once per model."""
    return p.cached("blocked_dw", lambda: blocked.pack_depthwise_blocked(w4()))


def _prepare_blocked(p, cp, kind, w4, bias):
    """Conv from an NCHW8c input to an NCHW8c output."""
    n, c_out, h_out, w_out = cp["y4"]
    c_in = cp["x4"][1]
    has_res = len(p.node.inputs) > 3 and bool(p.node.inputs[3])
    act, alpha, beta = cp["act"], cp["alpha"], cp["beta"]
    if kind == "pointwise":
        wp, b16 = _packed_pointwise(p, cp, w4, bias)
        kc = _pointwise_kc(c_in, c_out)

        def bind(ins, outs, scratch):
            return blocked.PointwiseBlockedStep(
                ins[0].reshape(-1), wp, b16, ins[3].reshape(-1) if has_res else None,
                outs[0].reshape(-1), n, c_in, c_out, h_out * w_out, act, alpha, beta, kc,
                _stream_output(cp))
        size = 0
    else:
        wb = _packed_depthwise(p, w4)
        geo = (cp["x4"], cp["y4"], cp["kernel"], cp["strides"], cp["pads"][:2], cp["dilations"])
        slots = scratch_slots(p)
        size = slots * blocked.depthwise_blocked_scratch(*geo)

        def bind(ins, outs, scratch):
            return blocked.DepthwiseBlockedStep(
                ins[0].reshape(-1), wb, bias, ins[3].reshape(-1) if has_res else None,
                outs[0].reshape(-1), *geo, act, alpha, beta, scratch[:size], slots, True,
                _stream_output(cp) or _read_by_every_thread(p, cp))
    return Prepared(bind, scratch=size, flops=conv_flops(cp),
                    notes={"algorithm": "blocked_" + kind})


def _prepare_to_blocked(p, cp):
    """Group-1 conv from an NCHW input to an NCHW8c output: conv_tile.ConvTileStep storing
    blocked (each tile row is one pixel's channel blocks: no transpose), or
    conv_gemm.ConvGemmToBlockedStep for reductions too long for the tiles."""
    n, c_out, h_out, w_out = cp["y4"]
    _, c_in, k_h, k_w = cp["w4"]
    if _tile_applies(cp):
        bind_tile, size = _bind_tile(p, cp, *_weights(p, cp), blocked_out=True)

        def bind(ins, outs, scratch):
            return bind_tile(ins[0].reshape(cp["x4"]), outs[0].reshape(cp["y4"]), None, scratch)

        return Prepared(bind, scratch=size, flops=conv_flops(cp),
                        notes={"algorithm": "tile_to_blocked"})
    w4, _ = _weights(p, cp)
    wp = p.cached("to_blocked_panels", lambda: conv_gemm.pack_blocked_out(w4()))
    b16 = (p.cached("blocked_bias16", lambda: blocked.pad_bias16(p.const_f32(2), c_out))
           if p.const(2) is not None else None)
    slots = scratch_slots(p)
    size = slots * conv_gemm.gemm_to_blocked_slot(c_in * k_h * k_w, h_out, w_out)

    def bind(ins, outs, scratch):
        return conv_gemm.ConvGemmToBlockedStep(
            ins[0].reshape(cp["x4"]), wp, b16, outs[0].reshape(-1), c_out, h_out, w_out,
            cp["strides"], cp["pads"][:2], cp["dilations"], k_h, k_w, cp["act"], cp["alpha"],
            cp["beta"], scratch[:size], slots)

    return Prepared(bind, scratch=size, flops=conv_flops(cp), notes={"algorithm": "gemm_to_blocked"})


class _ConvWeights:
    """A conv's weights as contiguous, aligned (c_out, c_in/group, k_h, k_w) float32 arrays,
    its weight_scale applied (ir/weights.py).

    w4():          for packing: a new array each call where the weights are scaled (or the
                   graph's are not aligned), dropped once packed (the packed copy is cached),
                   so no second copy of the weights stays beside the packed one.
    w4.panels(channels_last=False): W^T in 16-channel panels (conv_tile.pack_tile_weights),
                   scaled as they are packed, from the weights as the graph holds them; K in
                   the order (kh, kw, ci) for a channels-last tile step.
    w4.kept():     for steps that read the weights at run time: one array per model.
    w4.unscaled(): (weights as the graph holds them, scale (c_out,) float64 or None); the
                   weights may view an .onnx file at any byte offset (importers/onnx.py):
                   for numpy and readers that read them bytewise only."""

    def __init__(self, p, cp):
        self._p, self._shape = p, cp["w4"]
        self._scale = weight_scale_of(p.attrs)

    def unscaled(self):
        p, shape = self._p, self._shape
        return p.cached("w4_unscaled", lambda: np.ascontiguousarray(p.const(1), np.float32).reshape(shape)), \
            self._scale

    def __call__(self):
        w, scale = self.unscaled()
        return np.require(w, requirements=("C", "A")) if scale is None else conv_weights(w, scale)

    def panels(self, channels_last=False):
        # the weights are read in place (bytewise) and scaled while packed: neither an aligned
        # nor a scaled copy of them is made (MobileNetV2's 1x1 convs: 8.5 MB less to write;
        # reordered for a channels-last tile step, they are copied once in that order)
        w, scale = self.unscaled()
        return conv_tile.pack_tile_weights(w, scale, channels_last, self._p.alloc,
                                           self._p.num_threads)

    def kept(self):
        return self._p.cached("w4", self)


def _weights(p, cp):
    """(w4, bias): the weights (_ConvWeights) and the bias (c_out,) or None."""
    bias = p.cached("bias", lambda: p.const_f32(2)) if p.const(2) is not None else None
    return _ConvWeights(p, cp), bias


def prepare_conv(p):
    cp = conv_params(p)
    if p.blocked_in(0):
        kind = _blocked_kind(cp["x4"], cp["w4"], cp["y4"], p.attrs)
        return _prepare_blocked(p, cp, kind, *_weights(p, cp))
    if p.blocked_out(0) and cp["group"] == 1:
        return _prepare_to_blocked(p, cp)
    algorithm = choose_algorithm(cp)
    w4, bias = _weights(p, cp)
    has_res = len(p.node.inputs) > 3 and bool(p.node.inputs[3])
    bind_algo, scratch = BINDERS[algorithm](p, cp, w4, bias)
    if p.blocked_out(0):
        # NCHW input, NCHW8c output (no residual: conv_layouts): the algorithm writes an NCHW
        # copy at the start of the scratch, then a reorder
        n, c_out, h_out, w_out = cp["y4"]
        y_size = (n * c_out * h_out * w_out + 15) // 16 * 16

        def bind_reorder(ins, outs, scratch_view):
            y_plain = scratch_view[:n * c_out * h_out * w_out].reshape(cp["y4"])
            conv = bind_algo(ins[0].reshape(cp["x4"]), y_plain, None, scratch_view[y_size:])
            return [conv, blocked.ReorderStep(y_plain.reshape(-1), outs[0].reshape(-1), n, c_out,
                                              h_out * w_out, True)]

        return Prepared(bind_reorder, scratch=scratch + y_size, flops=conv_flops(cp),
                        notes={"algorithm": algorithm + "+reorder"})

    def bind(ins, outs, scratch_view):
        x = ins[0].reshape(cp["x4"])
        y = outs[0].reshape(cp["y4"])
        res = ins[3].reshape(cp["y4"]) if has_res else None
        return bind_algo(x, y, res, scratch_view)

    return Prepared(bind, scratch=scratch, flops=conv_flops(cp), notes={"algorithm": algorithm})


# ----------------------------------------------------------------------------- expand + depthwise
# A 1x1 conv whose only reader is a 3x3 depthwise conv (MobileNet's expand -> depthwise) runs with
# it as one ExpandDepthwiseBlockedStep when its image has at least FUSE_MIN_PIXELS pixels: the
# expanded tensor then no longer makes a round trip through memory (alone, 1 thread: 112x112
# 16->96 with the stride-2 depthwise 1.02 -> 0.77 ms, 56x56 24->144 0.61 -> 0.53; 2 threads
# 0.60 -> 0.41). At 14x14 it fits in L2 anyway, and the row tasks of 2 threads recompute a
# fifth of the 1x1 conv on their borders (0.106 -> 0.118 ms).
# The 1x1 conv reading the depthwise output alone ("project") joins them when that output has
# at least FUSE_PROJECT_MIN_PIXELS pixels: at 56x56 (MobileNetV2 blocks 2 and 3) 5-8% faster
# than the pair and the project apart, at 28x28 1-4% slower (a row of 28 pixels makes short
# tiles for the project, and d would stay in L2 anyway).
# A depthwise conv with no 1x1 conv before it to join (MobileNetV2's first block, after the
# stem) runs with its project on the same terms (a DepthwiseProjectNode), its ring filled with
# copies of its input rows: MobileNetV2 (32 channels at 112x112) 1-2% faster at batch 1, 0-1%
# at batch 16, on 1 and 2 threads. When its input comes from a conv on an NCHW tensor that
# stores blocked with the tile kernel (the stem), that conv joins too: it computes its output
# rows straight into the ring, so the 32 x 112 x 112 stem output is never stored either (batch
# 1, 1 thread: stem 0.45 ms + pair 0.42 -> 0.80; the whole model 1.7-2.7% faster than with
# neither fusion, 2 threads 1.2-2.3%, batch 16 1-5%).
FUSE_EXPAND_DEPTHWISE = True
FUSE_DEPTHWISE_PROJECT = True
FUSE_STEM = True
FUSE_MIN_PIXELS = 28 * 28
FUSE_PROJECT_MIN_PIXELS = 48 * 48


class FusedNode:
    """Graph nodes (`parts`, in order) that the planner runs as one step: named after all of
    them, reading `inputs` at run time and writing the last part's outputs (the tensors between
    the parts are never stored). A subclass gives `prepare(*contexts)`: the Prepared for its
    step from the parts' PrepareContexts, in order. op "Conv": every kind starts with a conv."""

    op = "Conv"

    def __init__(self, parts, inputs):
        self.parts = tuple(parts)
        self.name = "+".join(n.name for n in self.parts)
        self.inputs = list(inputs)
        self.outputs = list(self.parts[-1].outputs)

    def __repr__(self):
        return f"{type(self).__name__}{self.parts!r}"


class ExpandDepthwiseNode(FusedNode):
    """A 1x1 conv `pw`, the depthwise conv `dw` reading its output and optionally the 1x1 conv
    `pj` reading dw's output: inputs pw's input (and pj's residual)."""

    def __init__(self, pw, dw, pj=None):
        super().__init__((pw, dw) if pj is None else (pw, dw, pj),
                         [pw.inputs[0]] + ([pj.inputs[3]] if pj is not None and _residual(pj) else []))

    def prepare(self, pe, pd, pp=None):
        return prepare_expand_depthwise(pe, pd, pp)


class DepthwiseProjectNode(FusedNode):
    """A depthwise conv `dw` and the 1x1 conv `pj` reading its output, optionally after the
    tile conv `stem` producing dw's input: inputs stem's or dw's input (and pj's residual)."""

    def __init__(self, dw, pj, stem=None):
        self.has_stem = stem is not None
        first = stem if self.has_stem else dw
        super().__init__(((stem,) if self.has_stem else ()) + (dw, pj),
                         [first.inputs[0]] + ([pj.inputs[3]] if _residual(pj) else []))

    def prepare(self, *contexts):
        ps, pd, pp = contexts if self.has_stem else (None,) + contexts
        return prepare_expand_depthwise(None, pd, pp, ps)


def _residual(node) -> bool:
    return len(node.inputs) > 3 and bool(node.inputs[3])


def _plain_blocked_conv(node, types, attrs, kind, tensor, blocked, residual=False):
    """(x, w, y) shapes of a Conv that runs the blocked kernel `kind` ('pointwise' or
    'depthwise') with `tensor` blocked and no residual unless `residual`; else None. (Its
    weights and bias are constants: the planner refuses others.)"""
    if node.op != "Conv" or len(node.outputs) != 1 or tensor not in blocked:
        return None
    if _residual(node) and not residual:
        return None
    x, w, y = types[node.inputs[0]].shape, types[node.inputs[1]].shape, types[node.outputs[0]].shape
    if len(x) != 4 or _blocked_kind(x, w, y, attrs) != kind:
        return None
    return x, w, y


def _fusable_expand(node, types, attrs, blocked) -> bool:
    """A blocked pointwise conv with at most PW_KC_MAX input channels (one K block: the same
    sums as PointwiseBlockedStep) and 16k outputs, on an image of FUSE_MIN_PIXELS or more."""
    shapes = _plain_blocked_conv(node, types, attrs, "pointwise", node.inputs[0], blocked)
    if shapes is None:
        return False
    x, _, y = shapes
    return x[1] <= PW_KC_MAX and y[1] % 16 == 0 and x[2] * x[3] >= FUSE_MIN_PIXELS


def _fusable_depthwise(node, types, attrs, blocked) -> bool:
    """A blocked 3x3 depthwise conv with dilation 1."""
    shapes = _plain_blocked_conv(node, types, attrs, "depthwise", node.outputs[0], blocked)
    if shapes is None:
        return False
    cp = _conv_params(_NoFail, *shapes, attrs)
    return cp["kernel"] == (3, 3) and cp["dilations"] == (1, 1)


def _fusable_project(node, types, attrs, blocked) -> bool:
    """A blocked pointwise conv (a residual allowed) on an image of FUSE_PROJECT_MIN_PIXELS."""
    shapes = _plain_blocked_conv(node, types, attrs, "pointwise", node.outputs[0], blocked,
                                 residual=True)
    return shapes is not None and shapes[0][2] * shapes[0][3] >= FUSE_PROJECT_MIN_PIXELS


def _readers_and_producers(run_nodes):
    """(tensor -> the nodes reading it, tensor -> the node writing it as its first output)."""
    readers = {}
    for node in run_nodes:
        for x in node.inputs:
            if x:
                readers.setdefault(x, []).append(node)
    return readers, {node.outputs[0]: node for node in run_nodes if node.outputs}


def fuse_expand_depthwise(graph, run_nodes, inferred, blocked) -> list:
    """run_nodes with each (expand 1x1 conv, 3x3 depthwise conv[, project 1x1 conv]) chain that
    qualifies replaced by an ExpandDepthwiseNode at its last conv's place, and each (depthwise,
    project) pair whose depthwise conv has no expand to join by a DepthwiseProjectNode: each
    intermediate tensor is blocked (so not a graph output, runtime/blocking.py) and read by the
    next conv alone."""
    if not FUSE_EXPAND_DEPTHWISE:
        return run_nodes
    types, attrs = inferred.types, inferred.attrs
    readers, producer = _readers_and_producers(run_nodes)

    def only_reader(t):
        r = readers.get(t, [])
        return r[0] if t in blocked and len(r) == 1 else None

    def project_of(dw):
        """The 1x1 conv that alone reads dw's output and may join it, or None."""
        pj = only_reader(dw.outputs[0])
        if pj is None or pj.inputs[0] != dw.outputs[0] or not _fusable_project(
                pj, types, attrs[pj.name], blocked):
            return None
        return pj

    fused, dropped, used = {}, set(), set()
    for node in run_nodes:
        t = node.inputs[0] if node.inputs else ""
        pw = producer.get(t)
        # a conv joins one fused node at most (MobileNetV1's pointwise convs are the project of
        # one depthwise conv and the expand of the next)
        if (pw is None or pw.name in used or only_reader(t) is not node
                or not _fusable_depthwise(node, types, attrs[node.name], blocked)
                or not _fusable_expand(pw, types, attrs[pw.name], blocked)):
            continue
        pj = project_of(node)
        fused[(pj or node).name] = ExpandDepthwiseNode(pw, node, pj)
        dropped.update([pw.name] + ([node.name] if pj is not None else []))
        used.update(n.name for n in fused[(pj or node).name].parts)
    # then the depthwise convs left, with a project no fused node took (as the expand of the
    # next depthwise conv it saves more: MobileNetV1 2-3% slower when the pairs came first)
    for node in run_nodes if FUSE_DEPTHWISE_PROJECT else ():
        if node.name in used or not _fusable_depthwise(node, types, attrs[node.name], blocked):
            continue
        pj = project_of(node)
        if pj is None or pj.name in used or node.inputs[0] not in blocked:
            continue
        stem = producer.get(node.inputs[0])
        # a stem: a conv from an NCHW input that stores blocked with the tile kernel
        if not (FUSE_STEM and stem is not None and only_reader(node.inputs[0]) is node
                and _nchw_conv_kind(stem, types, attrs[stem.name], blocked) == "tile"):
            stem = None
        fused[pj.name] = DepthwiseProjectNode(node, pj, stem)
        dropped.update(n.name for n in fused[pj.name].parts[:-1])
        used.update(n.name for n in fused[pj.name].parts)
    return [fused.get(node.name, node) for node in run_nodes if node.name not in dropped]


def prepare_expand_depthwise(pe, pd, pp=None, ps=None):
    """Prepared for an ExpandDepthwiseNode: pe, pd (, pp) the PrepareContexts of its convs; pe
    None for a DepthwiseProjectNode (pd, pp, and ps its stem's or None)."""
    cpd = conv_params(pd)
    w4d, bias_d = _weights(pd, cpd)
    c_e = cpd["y4"][1]
    wd = _packed_depthwise(pd, w4d)
    slots = scratch_slots(pd)
    flops = conv_flops(cpd)
    # without an expand: no 1x1 weights, and its input is the depthwise conv's
    we, b16, act_e, x4 = None, None, (0, 0.0, 0.0), cpd["x4"]
    if pe is not None:
        cpe = conv_params(pe)
        we, b16 = _packed_pointwise(pe, cpe, *_weights(pe, cpe))
        act_e, x4 = (cpe["act"], cpe["alpha"], cpe["beta"]), cpe["x4"]
        flops += conv_flops(cpe)
    geo = (x4, cpd["y4"], cpd["strides"], cpd["pads"][:2])
    stem_pad, bind_stem = 0, None
    if ps is not None:
        cps = conv_params(ps)
        bind_stem, stem_pad = _bind_tile(ps, cps, *_weights(ps, cps), rows=True)
        flops += conv_flops(cps)
    size = slots * blocked.expand_depthwise_scratch(*geo, pp is not None, stem_pad)
    project, last = {}, cpd
    if pp is not None:
        last = cpp = conv_params(pp)
        wpj, bias_p = _packed_pointwise(pp, cpp, *_weights(pp, cpp))
        c_out = cpp["y4"][1]
        project = dict(
            wpj=wpj, bias_p=bias_p, c_out=c_out, act_p=cpp["act"], alpha_p=cpp["alpha"], beta_p=cpp["beta"],
            kc_p=_pointwise_kc(c_e, c_out))
        flops += conv_flops(cpp)

    def bind(ins, outs, scratch):
        extra = dict(project)
        if len(ins) > 1:
            extra["residual"] = ins[1].reshape(-1)
        if bind_stem is not None:
            extra["stem"] = bind_stem(ins[0].reshape(cps["x4"]), None, None, None)
        return blocked.ExpandDepthwiseBlockedStep(
            ins[0].reshape(-1), we, b16, wd, bias_d, outs[0].reshape(-1), *geo, *act_e,
            cpd["act"], cpd["alpha"], cpd["beta"], scratch[:size], slots, _stream_output(last),
            **extra)
    kind = ("blocked_expand_depthwise" if pe is not None
            else "tile_blocked_depthwise" if ps is not None else "blocked_depthwise")
    return Prepared(bind, scratch=size, flops=flops,
                    notes={"algorithm": kind + ("_project" if pp else "")})


# ----------------------------------------------------------------------------- conv + max pool
# A conv (activation fused) whose only reader is a 2x2 stride-2 max pool, as in VGG-style edge
# CNNs, pools its output as it computes it, so that output is never stored and the pool is not
# a step of its own: a Winograd conv pools each output tile as it is finished
# (winograd.ConvWinogradStep, pool_hw); a tile conv that would store blocked for the pool
# computes a few output rows of a panel at a time and pools them (conv_tile.ConvTileStep,
# pool_hw). On 2 threads the pool was the costliest part of a small layer: it read rows the
# other core had just written.
FUSE_CONV_POOL = True


class ConvPoolNode(FusedNode):
    """A conv `conv` and the 2x2 stride-2 max pool `pool` reading its output: input the conv's
    input."""

    def __init__(self, conv, pool):
        super().__init__((conv, pool), [conv.inputs[0]])

    def prepare(self, pc, pp):
        return prepare_conv_pool(pc, pp)


def _pool_2x2(node, types, attrs) -> bool:
    """A 2-D MaxPool with a 2x2 window, stride 2, no padding, dilation 1 and floor sizes (the
    graph checks allow no Indices output)."""
    x, y = types[node.inputs[0]].shape, types[node.outputs[0]].shape
    if len(x) != 4:
        return False
    try:
        geo = window_geometry(_NoFail, x[2:], attrs["kernel_shape"], attrs["strides"],
                              attrs["pads"], attrs.get("dilations", []), attrs["auto_pad"],
                              attrs.get("ceil_mode", 0))
    except ValueError:
        return False
    return (tuple(geo.kernel) == (2, 2) and tuple(geo.strides) == (2, 2)
            and tuple(geo.dilations) == (1, 1) and not any(geo.pads)
            and tuple(y) == (x[0], x[1], x[2] // 2, x[3] // 2))


def _nchw_conv_kind(node, types, attrs, blocked):
    """How a Conv without a residual, on an NCHW input, runs, for the fusions that compute its
    output inside another step (a max pool after it, `fuse_conv_pool`; a depthwise conv after
    it, as a stem, `fuse_expand_depthwise`): 'winograd' when the cost model runs it by
    Winograd (conv_layouts then keeps its output NCHW), 'tile' when it stores blocked with the
    tile kernel (prepare_conv's choice from NCHW to NCHW8c where _tile_applies) and has 16k
    output channels; else None. (Its weights are constants: the planner refuses others.)"""
    if node.op != "Conv" or len(node.outputs) != 1 or _residual(node) or node.inputs[0] in blocked:
        return None
    x, w, y = types[node.inputs[0]].shape, types[node.inputs[1]].shape, types[node.outputs[0]].shape
    if len(x) != 4:
        return None
    cp = _conv_params(_NoFail, x, w, y, attrs)
    if node.outputs[0] in blocked:
        return "tile" if _tile_applies(cp) and y[1] % 16 == 0 else None
    return "winograd" if choose_algorithm(cp).startswith("winograd") else None


def fuse_conv_pool(graph, run_nodes, inferred, blocked) -> list:
    """run_nodes with each (conv, 2x2 stride-2 max pool) pair whose conv `_nchw_conv_kind` names
    replaced by a ConvPoolNode at the pool's place, when the conv's output is read by the pool
    alone and is not a graph output, and the pool's output is NCHW."""
    if not FUSE_CONV_POOL:
        return run_nodes
    types, attrs = inferred.types, inferred.attrs
    readers, producer = _readers_and_producers(run_nodes)
    graph_outputs = {t.name for t in graph.outputs}
    fused, dropped = {}, set()
    for node in run_nodes:
        if node.op != "MaxPool":
            continue
        t = node.inputs[0]
        conv = producer.get(t)
        if (conv is None or isinstance(conv, FusedNode) or t in graph_outputs
                or readers.get(t) != [node] or node.outputs[0] in blocked
                or not _pool_2x2(node, types, attrs[node.name])
                or _nchw_conv_kind(conv, types, attrs[conv.name], blocked) is None):
            continue
        fused[node.name] = ConvPoolNode(conv, node)
        dropped.add(conv.name)
    return [fused.get(node.name, node) for node in run_nodes if node.name not in dropped]


def prepare_conv_pool(pc, pp):
    """Prepared for a ConvPoolNode: pc, pp the PrepareContexts of its conv and its pool."""
    cp = conv_params(pc)
    w4, bias = _weights(pc, cp)
    if pc.blocked_out(0):     # the tile kernel (_nchw_conv_kind)
        algorithm = "tile"
        bind_conv, size = _bind_tile(pc, cp, w4, bias, pool=True)
    else:
        algorithm = choose_algorithm(cp)
        bind_conv, size = _winograd_binder(4 if algorithm == "winograd4" else 2)(
            pc, cp, w4, bias, pool=True)
    y4 = pp.out_types[0].shape

    def bind(ins, outs, scratch):
        return bind_conv(ins[0].reshape(cp["x4"]), outs[0].reshape(y4), None, scratch)

    n, c, h, w = cp["y4"]
    return Prepared(bind, scratch=size, flops=conv_flops(cp) + n * c * (h // 2) * (w // 2) * 4,
                    notes={"algorithm": algorithm + "+maxpool"})

"""prepare for Resize: per-axis tap tables for the last two axes, then one `ResizeStep`.

X is viewed as (outer, h, w) (the shape function allows resizing the last two axes only; a rank-1
input is (1, 1, w)). Each resized axis becomes a table of source indices and weights, computed
here in float32 in the same order of operations as onnxruntime, so that nearest-neighbour
rounding at exact half-way points picks the same pixel:

- source coordinate of output index o (coordinate_transformation_mode), with scale the axis
  scale (given, or out/in from sizes); an axis whose scale is exactly 1 maps o to o;
- nearest: one tap, rounded per nearest_mode and clamped to [0, in-1];
- linear: two taps around the coordinate clamped to [0, in-1];
- cubic: four taps floor(x)-1 .. floor(x)+2 with Keys weights (cubic_coeff_a), indices clamped
  to the edge, or with exclude_outside those outside get weight 0 and the rest are renormalised;
- tf_crop_and_resize: an output whose coordinate falls outside [0, in-1] takes
  extrapolation_value.
An output with the input's shape is the input unchanged (as in onnxruntime).
"""
from __future__ import annotations

import math

import numpy as np

from fastcnn import config
from fastcnn._kernels.resize import ResizeStep
from fastcnn.errors import ResourceLimitError
from fastcnn.ir.opspec import NodeContext
from fastcnn.ir.shapes import resize_params
from fastcnn.runtime.prepare import Prepared

F32 = np.float32
HALF = F32(0.5)
# bytes of tap tables per output index of one axis, at most: 4 taps of int64 index, float32
# weight (and float64 temporaries while building), plus the inside flag
TABLE_BYTES_PER_INDEX = 4 * (8 + 4 + 8) + 1
TIE_EPS = 1e-6


def _coord_half_pixel_symmetric(o, s, in_len, out_len):
    # onnxruntime mixes float and double here; the final value is rounded to float32
    output_width = F32(s * F32(in_len))
    adjustment = F32(F32(out_len) / output_width)
    offset = F32(F32(F32(in_len) / F32(2)) * F32(F32(1) - adjustment))
    return (np.float64(offset) + (o.astype(np.float64) + 0.5) / np.float64(s) - 0.5).astype(F32)


def _coord_crop(o, in_len, out_len, roi):
    start, end = F32(roi[0]), F32(roi[1])
    if out_len > 1:
        span = F32(in_len - 1)
        return start * span + (o * F32(end - start) * span) / F32(out_len - 1)
    return np.full(o.shape, F32(0.5 * float(start + end) * (in_len - 1)), F32)


# coordinate_transformation_mode -> f(o (float32 output indices), scale, in_len, out_len, roi)
COORDINATES = {
    "asymmetric": lambda o, s, n, m, roi: o / s,
    "half_pixel": lambda o, s, n, m, roi: (o + HALF) / s - HALF,
    "pytorch_half_pixel": lambda o, s, n, m, roi: (o + HALF) / s - HALF if m > 1 else np.zeros_like(o),
    "tf_half_pixel_for_nn": lambda o, s, n, m, roi: (o + HALF) / s,
    "align_corners": lambda o, s, n, m, roi: (o * F32(n - 1)) / F32(m - 1) if m > 1 else np.zeros_like(o),
    "half_pixel_symmetric": lambda o, s, n, m, roi: _coord_half_pixel_symmetric(o, s, n, m),
    "tf_crop_and_resize": lambda o, s, n, m, roi: _coord_crop(o, n, m, roi),
}


def _round_half_away(x):
    # std::round; float64 holds every float32 exactly, so |x| + 0.5 does not round up wrongly
    x = x.astype(np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _nearest(x, mode, scale):
    """Input index (before clamping) of float32 coordinates x for one nearest_mode. The round_*
    modes treat a coordinate within TIE_EPS of a half-way point as half-way (as onnxruntime does:
    a scale like 1/3 in float32 puts intended ties an ulp or two off)."""
    if mode in ("round_prefer_floor", "round_prefer_ceil"):
        x64 = x.astype(np.float64)
        low = np.floor(x64)
        tie = np.abs(x64 - low - 0.5) <= TIE_EPS
        pick = low if mode == "round_prefer_floor" else low + 1
        return np.where(tie, pick, _round_half_away(x))
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    return np.ceil(x) if scale < 1 else np.trunc(x)   # floor_up_ceil_down


def _cubic_weights(t, a):
    """Keys weights of taps floor(x)-1 .. floor(x)+2 for fraction t (float32 arrays)."""
    a = F32(a)
    one, two, three, four, five, eight = (F32(v) for v in (1, 2, 3, 4, 5, 8))
    d0, d2, d3 = t + one, one - t, two - t
    return np.stack([
        ((a * d0 - five * a) * d0 + eight * a) * d0 - four * a,
        ((a + two) * t - (a + three)) * t * t + one,
        ((a + two) * d2 - (a + three)) * d2 * d2 + one,
        ((a * d3 - five * a) * d3 + eight * a) * d3 - four * a,
    ], axis=1).astype(F32)


def axis_taps(attrs, in_len, out_len, scale, roi):
    """Tap table of one axis: (idx (out_len, t) int64, wt (out_len, t) float32,
    inside (out_len,) uint8)."""
    mode = attrs["mode"]
    o = np.arange(out_len, dtype=F32)
    ctm = attrs["coordinate_transformation_mode"]
    x = o.copy() if scale == 1.0 else COORDINATES[ctm](o, F32(scale), in_len, out_len, roi).astype(F32)
    if ctm == "tf_crop_and_resize":
        inside = ((x >= 0) & (x <= F32(in_len - 1))).astype(np.uint8)
    else:
        inside = np.ones(out_len, np.uint8)
    last = in_len - 1
    if mode == "nearest":
        idx = np.clip(_nearest(x, attrs["nearest_mode"], scale), 0, last).astype(np.int64)
        return idx[:, None], np.ones((out_len, 1), F32), inside
    if mode == "linear":
        xc = np.clip(x, F32(0), F32(last))
        i1 = np.minimum(xc.astype(np.int64), last)
        i2 = np.minimum(i1 + 1, last)
        w1 = np.abs(xc - i1.astype(F32))   # weight of i2
        w2 = np.abs(xc - i2.astype(F32))   # weight of i1
        same = i1 == i2
        w1[same] = w2[same] = HALF
        return np.stack([i1, i2], 1), np.stack([w2, w1], 1).astype(F32), inside
    base = np.floor(x)
    wt = _cubic_weights((x - base).astype(F32), attrs["cubic_coeff_a"])
    taps = base.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :]
    if attrs["exclude_outside"]:
        wt = np.where((taps < 0) | (taps > last), F32(0), wt)
        total = wt.sum(axis=1, keepdims=True, dtype=F32)
        wt = wt / np.where(total == 0, F32(1), total)
    return np.clip(taps, 0, last), wt.astype(F32), inside


def identity_taps(n):
    """Tap table mapping each of n output indices to the same input index."""
    return np.arange(n, dtype=np.int64)[:, None], np.ones((n, 1), F32), np.ones(n, np.uint8)


def integer_upscale(taps, in_len) -> int:
    """k when a nearest tap table repeats every input index k times in order, else 0."""
    idx, _, inside = taps
    out_len = idx.shape[0]
    if idx.shape[1] != 1 or in_len == 0 or out_len % in_len or not inside.all():
        return 0
    k = out_len // in_len
    return k if np.array_equal(idx[:, 0], np.arange(out_len) // k) else 0


def prepare_resize(p):
    ctx = NodeContext(p.node, p.attrs, p.in_types, p.in_consts, p.where)
    rp = resize_params(ctx)
    x = p.in_types[0].shape
    if tuple(rp.out) == tuple(x) and p.const(0) is None:
        return Prepared(alias=True)          # (a constant input is copied by identity tables)
    x3 = (1,) * (3 - len(x)) + tuple(x[-3:]) if len(x) < 3 else \
        (math.prod(x[:-2]), x[-2], x[-1])
    y3 = x3[:-2] + (tuple(rp.out[-2:]) if len(x) >= 2 else (1, rp.out[-1]))
    r = len(x)
    table_bytes = (y3[1] + y3[2]) * TABLE_BYTES_PER_INDEX
    if table_bytes > config.memory_limit():
        raise ResourceLimitError(f"{p.where}: node '{p.node.name}' (Resize): its tap tables for "
                                 f"an output of {list(rp.out)} would need {table_bytes:,} bytes, "
                                 f"more than the memory limit of {config.memory_limit():,} bytes")
    if tuple(rp.out) == tuple(x):
        h, w = identity_taps(x3[1]), identity_taps(x3[2])
    else:
        h = axis_taps(p.attrs, x[-2], rp.out[-2], rp.scales[-2], rp.roi[-2]) if r >= 2 else identity_taps(1)
        w = axis_taps(p.attrs, x[-1], rp.out[-1], rp.scales[-1], rp.roi[-1])
    ev = float(p.attrs["extrapolation_value"])
    taps = h[0].shape[1] * w[0].shape[1]
    # bilinear: a cache of two interpolated source rows per thread (the step uses at most as
    # many threads as it has caches)
    cache = 2 * y3[2] * max(1, p.num_threads) if taps == 4 and h[0].shape[1] == 2 else 0

    rep_w = integer_upscale(w, x3[2])

    def bind(ins, outs, scratch):
        return ResizeStep(ins[0].reshape(x3), outs[0].reshape(y3), *h, *w, ev,
                          scratch[:cache] if cache else None, rep_w)

    size = int(np.prod(rp.out, dtype=np.int64))
    return Prepared(bind, scratch=cache, flops=2 * size * taps, notes={"taps": taps})

"""Sliding-window geometry shared by convolution and pooling: output sizes and resolved padding.

Output size along one axis (DESIGN worked example):
    floor((W + pad_begin + pad_end - dilation*(K-1) - 1) / S) + 1      (ceil with ceil_mode)
With ceil_mode a last window that would start inside the end padding is dropped (PyTorch and
onnxruntime agree on this).
"""
from __future__ import annotations

from dataclasses import dataclass

MAX_DIM = 1 << 31  # any dimension, kernel, stride or pad beyond this is refused as absurd


@dataclass(frozen=True)
class WindowGeometry:
    """Resolved window parameters for r spatial axes (r = 1 or 2 here).

    kernel, strides, dilations, out: r ints each; pads: 2r ints [begin..., end...] (ONNX order).
    """

    kernel: tuple
    strides: tuple
    dilations: tuple
    pads: tuple
    out: tuple

    @property
    def rank(self):
        return len(self.kernel)


def window_geometry(ctx, in_spatial, kernel, strides, pads, dilations, auto_pad="NOTSET",
                    ceil_mode=0, what="kernel") -> WindowGeometry:
    """Validate window attributes against the input's spatial dims and compute the output dims.

    ctx: NodeContext (for errors). in_spatial, kernel: r ints. strides/dilations: r ints or empty
    (= ones). pads: 2r ints or empty (= zeros). auto_pad: NOTSET, VALID, SAME_UPPER, SAME_LOWER.
    """
    key = (tuple(in_spatial), tuple(kernel), tuple(strides), tuple(pads), tuple(dilations),
           auto_pad, ceil_mode)
    geo = _KNOWN.get(key)
    if geo is None:
        geo = _window_geometry(ctx, *key, what)
        if len(_KNOWN) >= _KNOWN_MAX:
            _KNOWN.clear()
        _KNOWN[key] = geo
    return geo


# Geometries already worked out (valid ones only: a refusal is raised again each time). A
# model's windows are asked for several times while it loads: by each type inference, by the
# layout planner and by the kernel's preparation.
_KNOWN = {}
_KNOWN_MAX = 4096


def _window_geometry(ctx, in_spatial, kernel, strides, pads, dilations, auto_pad, ceil_mode,
                     what) -> WindowGeometry:
    r = len(in_spatial)
    kernel = tuple(int(k) for k in kernel)
    strides = strides or (1,) * r
    dilations = dilations or (1,) * r
    pads = pads or (0,) * (2 * r)
    if len(kernel) != r:
        ctx.fail(f"{what}_shape has {len(kernel)} dims {list(kernel)} but the input has {r} "
                 f"spatial dims {list(in_spatial)}")
    if len(strides) != r:
        ctx.fail(f"strides {list(strides)} must have {r} values")
    if len(dilations) != r:
        ctx.fail(f"dilations {list(dilations)} must have {r} values")
    if len(pads) != 2 * r:
        ctx.fail(f"pads {list(pads)} must have {2 * r} values (begin..., end...)")
    for name, vals, lo in (("kernel_shape", kernel, 1), ("strides", strides, 1),
                           ("dilations", dilations, 1), ("pads", pads, 0)):
        for v in vals:
            if not lo <= v < MAX_DIM:
                ctx.fail(f"{name} {list(vals)} must hold values >= {lo}")
    if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        ctx.fail(f"auto_pad must be NOTSET, VALID, SAME_UPPER or SAME_LOWER, got {auto_pad!r}")
    out, begin, end = [], [], []
    for a in range(r):
        x, k, s, d = in_spatial[a], kernel[a], strides[a], dilations[a]
        eff = d * (k - 1) + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-x // s)
            total = max(0, (o - 1) * s + eff - x)
            small = total // 2
            pb, pe = (small, total - small) if auto_pad == "SAME_UPPER" else (total - small, small)
        elif auto_pad == "VALID":
            pb = pe = 0
            o = (x - eff) // s + 1 if x >= eff else 0
        else:
            pb, pe = pads[a], pads[a + r]
            span = x + pb + pe - eff
            if span < 0:
                o = 0
            elif ceil_mode:
                o = -(-span // s) + 1
                if (o - 1) * s >= x + pb:
                    o -= 1
            else:
                o = span // s + 1
        if o < 1:
            ctx.fail(f"{what} {list(kernel)} (dilations {list(dilations)}) is larger than the "
                     f"padded input: spatial dims {list(in_spatial)}, pads {list(pads)}")
        out.append(o)
        begin.append(pb)
        end.append(pe)
    return WindowGeometry(kernel, strides, dilations, tuple(begin + end), tuple(out))


def transposed_window_geometry(ctx, in_spatial, kernel, strides, pads, dilations, auto_pad,
                               output_padding, output_shape) -> WindowGeometry:
    """Validate ConvTranspose attributes and compute its output dims and begin/end padding.

    The unpadded ("natural") output of one axis is s*(in-1) + output_padding + d*(k-1) + 1;
    padding then crops it. output_shape (r ints) fixes the output and derives the padding:
    total = natural - out, begin = total//2 with SAME_UPPER, else total - total//2. SAME_UPPER /
    SAME_LOWER aim at out = in*s (total clamped at 0, split the same way); VALID crops nothing.
    These are onnxruntime's rules; output_padding must be smaller than the stride (onnxruntime
    refuses more, as the input size could then not be recovered from the output).
    """
    r = len(in_spatial)
    kernel = tuple(int(k) for k in kernel)
    strides = tuple(strides) if strides else (1,) * r
    dilations = tuple(dilations) if dilations else (1,) * r
    pads = tuple(pads) if pads else (0,) * (2 * r)
    output_padding = tuple(output_padding) if output_padding else (0,) * r
    if len(kernel) != r:
        ctx.fail(f"kernel_shape has {len(kernel)} dims {list(kernel)} but the input has {r} "
                 f"spatial dims {list(in_spatial)}")
    for name, vals, n in (("strides", strides, r), ("dilations", dilations, r),
                          ("pads", pads, 2 * r), ("output_padding", output_padding, r)):
        if len(vals) != n:
            ctx.fail(f"{name} {list(vals)} must have {n} values")
    if output_shape and len(output_shape) != r:
        ctx.fail(f"output_shape {list(output_shape)} must have {r} values (the spatial dims)")
    for name, vals, lo in (("kernel_shape", kernel, 1), ("strides", strides, 1),
                           ("dilations", dilations, 1), ("pads", pads, 0),
                           ("output_padding", output_padding, 0),
                           ("output_shape", output_shape or (1,), 1)):
        for v in vals:
            if not lo <= v < MAX_DIM:
                ctx.fail(f"{name} {list(vals)} must hold values >= {lo}")
    if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        ctx.fail(f"auto_pad must be NOTSET, VALID, SAME_UPPER or SAME_LOWER, got {auto_pad!r}")
    out, begin, end = [], [], []
    for a in range(r):
        x, k, s, d, op = in_spatial[a], kernel[a], strides[a], dilations[a], output_padding[a]
        if op >= s:
            ctx.fail(f"output_padding {list(output_padding)} must be smaller than strides "
                     f"{list(strides)}")
        natural = s * (x - 1) + op + d * (k - 1) + 1
        if output_shape:
            o = output_shape[a]
            total = natural - o
            if total < 0:
                ctx.fail(f"output_shape {list(output_shape)} is larger than the transposed "
                         f"convolution can produce on spatial axis {a} ({natural} for input "
                         f"{x}, kernel {k}, stride {s}, dilation {d}, output_padding {op})")
            pb = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            total = max(0, natural - x * s)
            pb = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            o = natural - total
        elif auto_pad == "VALID":
            pb, o = 0, natural
        else:
            pb = pads[a]
            o = natural - pads[a] - pads[a + r]
        if o < 1:
            ctx.fail(f"pads {list(pads)} crop the whole output of spatial axis {a} (the "
                     f"unpadded output has {natural} positions)")
        out.append(o)
        begin.append(pb)
        end.append(natural - pb - o)
    return WindowGeometry(kernel, strides, dilations, tuple(begin + end), tuple(out))

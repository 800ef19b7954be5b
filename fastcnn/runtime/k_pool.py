"""prepare for pooling ops (windowed and global). 1-D pooling runs as 2-D with height 1."""
from __future__ import annotations

from fastcnn._kernels import blocked as pool_kernels_blocked
from fastcnn._kernels import pool as pool_kernels
from fastcnn.ir.geometry import window_geometry
from fastcnn.runtime.prepare import Prepared


class _GeomCtx:
    """Lets window_geometry report errors through a PrepareContext (the shape function has
    already validated the same attributes, so this only re-derives the numbers)."""

    def __init__(self, p):
        self.fail = p.fail


def prepare_pool(p):
    """x (n, c, h_in, w_in) or (n, c, w_in) -> out (n, c, h_out, w_out) / (n, c, w_out)."""
    a = p.attrs
    x, y = p.in_types[0].shape, p.out_types[0].shape
    geo = window_geometry(_GeomCtx(p), x[2:], a["kernel_shape"], a["strides"], a["pads"],
                          a.get("dilations", []), a["auto_pad"], a.get("ceil_mode", 0))
    if len(x) == 3:
        kernel, strides, dil = (1,) + geo.kernel, (1,) + geo.strides, (1,) + geo.dilations
        pads = (0, geo.pads[0], 0, geo.pads[1])
        x4, y4 = (x[0], x[1], 1, x[2]), (y[0], y[1], 1, y[2])
    else:
        kernel, strides, dil, pads, x4, y4 = geo.kernel, geo.strides, geo.dilations, geo.pads, x, y
    kind = pool_kernels.POOL_CODES[p.node.op]
    include_pad = bool(a.get("count_include_pad", 0))
    power = float(a.get("p", 2))
    size = 1
    for d in y:
        size *= d
    if p.blocked_in(0):
        out_blocked = p.blocked_out(0)

        def bind_blocked(ins, outs, scratch):
            return pool_kernels_blocked.MaxPoolBlockedStep(
                ins[0].reshape(-1), outs[0].reshape(-1), x4, y4, kernel, strides, pads[:2], dil,
                out_blocked)

        return Prepared(bind_blocked, flops=size * kernel[0] * kernel[1])

    def bind(ins, outs, scratch):
        return pool_kernels.Pool2dStep(ins[0].reshape(x4), outs[0].reshape(y4), kind, kernel,
                                       strides, pads, dil, include_pad, power)

    return Prepared(bind, flops=size * kernel[0] * kernel[1])


def pool_layouts(node, in_types, out_types, attrs, in_blocked, out_blocked) -> bool:
    """Layout rule (runtime/blocking.py): a 2-D MaxPool without an Indices output reads an NCHW8c
    input and writes NCHW8c or NCHW (blocked.MaxPoolBlockedStep): a conv that stores blocked
    (no transposes: a 3->32 conv at 32x32 and batch 16 takes 0.52 ms instead of 0.70) hands its
    output to the pool, which turns it back to NCHW as it writes."""
    if not in_blocked[0]:
        return not out_blocked[0]
    has_indices = len(node.outputs) > 1 and bool(node.outputs[1])
    return node.op == "MaxPool" and len(in_types[0].shape) == 4 and not has_indices


def global_pool_layouts(node, in_types, out_types, attrs, in_blocked, out_blocked) -> bool:
    """Layout rule (runtime/blocking.py): GlobalAveragePool reads an NCHW8c input of a 2-D image
    and gives NCHW (its (n, c, 1, 1) output has the same bytes either way)."""
    return not out_blocked[0] and (not in_blocked[0] or len(in_types[0].shape) == 4)


def prepare_global_pool(p):
    """x (n, c, spatial...) viewed as (n*c, prod(spatial)) -> out (n*c,)."""
    x = p.in_types[0].shape
    if p.blocked_in(0):
        n, c, h, w = x

        def bind_blocked(ins, outs, scratch):
            return pool_kernels_blocked.GlobalAvgBlockedStep(ins[0].reshape(-1), outs[0].reshape(-1),
                                                            n, c, h * w)

        return Prepared(bind_blocked, flops=n * c * h * w)
    rows = x[0] * x[1]
    cols = 1
    for d in x[2:]:
        cols *= d
    kind = pool_kernels.POOL_CODES[p.node.op]
    power = float(p.attrs.get("p", 2))

    def bind(ins, outs, scratch):
        return pool_kernels.GlobalPoolStep(ins[0].reshape(rows, cols), outs[0].reshape(rows), kind, power)

    return Prepared(bind, flops=rows * cols)

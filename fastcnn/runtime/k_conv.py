"""prepare for Conv: picks the algorithm for the layer's geometry, packs the weights once.

1-D convolutions run as 2-D with height 1 (views, no copies).
"""
from __future__ import annotations

import numpy as np

from fastcnn._kernels import conv as conv_kernels
from fastcnn.ir.geometry import window_geometry
from fastcnn.runtime.k_eltwise import activation_code
from fastcnn.runtime.prepare import Prepared


class _GeomCtx:
    """Adapter so window_geometry can report errors through a PrepareContext."""

    def __init__(self, p):
        self.fail = p.fail


def conv_params(p):
    """Resolved 2-D geometry for a Conv node: dict with kernel, strides, dilations,
    pads (top, left, bottom, right), group, activation code/params, and 4-D shapes."""
    x = p.in_types[0].shape
    w = p.in_types[1].shape
    y = p.out_types[0].shape
    a = p.attrs
    geo = window_geometry(_GeomCtx(p), x[2:], w[2:], a["strides"], a["pads"], a["dilations"], a["auto_pad"])
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


def prepare_conv(p):
    cp = conv_params(p)
    w4 = p.cached("w4", lambda: np.ascontiguousarray(p.const_f32(1).reshape(cp["w4"])))
    bias = p.cached("bias", lambda: p.const_f32(2)) if p.const(2) is not None else None
    has_res = len(p.node.inputs) > 3 and bool(p.node.inputs[3])

    def bind(ins, outs, scratch):
        x = ins[0].reshape(cp["x4"])
        y = outs[0].reshape(cp["y4"])
        res = ins[3].reshape(cp["y4"]) if has_res else None
        return conv_kernels.ConvDirectStep(x, w4, bias, res, y, cp["strides"], cp["pads"][:2],
                                           cp["dilations"], cp["group"], cp["act"], cp["alpha"],
                                           cp["beta"])

    return Prepared(bind, flops=conv_flops(cp))

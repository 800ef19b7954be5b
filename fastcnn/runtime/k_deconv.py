"""prepare for ConvTranspose: GEMM + col2im, or the direct loop when the column buffer would be
too large. 1-D transposed convolutions run as 2-D with height 1 (views, no copies)."""
from __future__ import annotations

import numpy as np

from fastcnn.config import physical_cores

from fastcnn._kernels import deconv as deconv_kernels
from fastcnn.ir.opspec import NodeContext
from fastcnn.ir.shapes import conv_transpose_geometry
from fastcnn.runtime.k_eltwise import activation_code
from fastcnn.runtime.prepare import Prepared

# Above this many floats of column buffer (cog*k_h*k_w*h_in*w_in) the direct loop runs instead
# of GEMM + col2im: scratch is shared by the plan but still memory the user pays for.
MAX_COL_FLOATS = 1 << 24


def deconv_params(p) -> dict:
    """Resolved 2-D geometry of a ConvTranspose node: kernel, strides, dilations, pads (top,
    left), group, activation, and the 4-D shapes of x, w and y."""
    ctx = NodeContext(p.node, p.attrs, p.in_types, p.in_consts, p.where)
    geo, _, _, _, group = conv_transpose_geometry(ctx)
    x, w, y = p.in_types[0].shape, p.in_types[1].shape, p.out_types[0].shape
    if len(x) == 3:
        kernel, strides, dil = (1,) + geo.kernel, (1,) + geo.strides, (1,) + geo.dilations
        pads = (0, geo.pads[0])
        x4, w4, y4 = (x[0], x[1], 1, x[2]), (w[0], w[1], 1, w[2]), (y[0], y[1], 1, y[2])
    else:
        kernel, strides, dil, pads = geo.kernel, geo.strides, geo.dilations, geo.pads[:2]
        x4, w4, y4 = x, w, y
    a = p.attrs
    return dict(kernel=kernel, strides=strides, dilations=dil, pads=pads, group=group,
                act=activation_code(a["activation"]), alpha=a["activation_alpha"],
                beta=a["activation_beta"], x4=x4, w4=w4, y4=y4)


def prepare_conv_transpose(p):
    dp = deconv_params(p)
    n, c_in, h_in, w_in = dp["x4"]
    _, cog, k_h, k_w = dp["w4"]
    group = dp["group"]
    col = cog * k_h * k_w * h_in * w_in
    use_gemm = col <= MAX_COL_FLOATS
    w4 = p.cached("w4", lambda: np.ascontiguousarray(p.const_f32(1).reshape(dp["w4"])))
    wt = p.cached("wt", lambda: deconv_kernels.pack_weights(w4, group)) if use_gemm else None
    bias = p.cached("bias", lambda: p.const_f32(2)) if p.const(2) is not None else None
    common = (dp["strides"], dp["pads"], dp["dilations"], group, dp["act"], dp["alpha"], dp["beta"])

    # GEMM workspace for every thread the step may ever use (set_num_threads can raise it)
    slots = max(p.num_threads, physical_cores())
    work = slots * deconv_kernels.WORK_PER_THREAD
    col_floats = max(col, 1)

    def bind(ins, outs, scratch):
        x = ins[0].reshape(dp["x4"])
        y = outs[0].reshape(dp["y4"])
        if use_gemm:
            return deconv_kernels.ConvTransposeGemmStep(
                x, wt, bias, y, scratch[:col_floats], (k_h, k_w), *common,
                work=scratch[col_floats:col_floats + work], slots=slots)
        return deconv_kernels.ConvTransposeDirectStep(x, w4, bias, y, *common)

    flops = 2 * n * c_in * h_in * w_in * cog * k_h * k_w
    return Prepared(bind, scratch=col_floats + work if use_gemm else 0, flops=flops,
                    notes={"algorithm": "gemm+col2im" if use_gemm else "direct"})

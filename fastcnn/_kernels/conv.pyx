"""Convolution kernels, NCHW.

`conv2d_direct` is the plain loop every faster algorithm is tested against; it handles every
case (groups, dilation, asymmetric padding, stride > kernel) and is used when nothing faster
applies. 1-D convolutions run as 2-D with a height of 1.
"""
from cython.parallel cimport prange

from fastcnn._kernels.step cimport Step
from fastcnn._kernels.act cimport apply_act
from fastcnn._kernels.convgeom cimport ConvGeom, make_geom, check_geom, shape4


cdef void conv2d_direct_kernel(const float[:, :, :, ::1] x, const float[:, :, :, ::1] w,
                               const float[::1] bias, const float[:, :, :, ::1] residual,
                               float[:, :, :, ::1] out, ConvGeom g, int num_threads) noexcept nogil:
    """out[n, co, oh, ow] = act(bias[co] + residual[n, co, oh, ow] +
         sum_{ci in group(co), kh, kw} x[n, ci, oh*s_h - pad_top + kh*d_h, ow*s_w - pad_left + kw*d_w]
                                       * w[co, ci - group_start, kh, kw])
    x: (n, c_in, h_in, w_in); w: (c_out, c_in/group, k_h, k_w); out: (n, c_out, h_out, w_out)."""
    cdef Py_ssize_t job, b, co, cig = g.c_in // g.group, cog = g.c_out // g.group, ci0, ci
    cdef Py_ssize_t oh, ow, kh, kw, ih, iw
    cdef float acc
    for job in prange(g.n * g.c_out, num_threads=num_threads, schedule="static"):
        b = job // g.c_out
        co = job % g.c_out
        ci0 = (co // cog) * cig
        for oh in range(g.h_out):
            for ow in range(g.w_out):
                acc = bias[co] if g.has_bias else 0.0
                for ci in range(cig):
                    for kh in range(g.k_h):
                        ih = oh * g.stride_h - g.pad_top + kh * g.dil_h
                        if ih < 0 or ih >= g.h_in:
                            continue
                        for kw in range(g.k_w):
                            iw = ow * g.stride_w - g.pad_left + kw * g.dil_w
                            if iw < 0 or iw >= g.w_in:
                                continue
                            acc = acc + x[b, ci0 + ci, ih, iw] * w[co, ci, kh, kw]
                if g.has_residual:
                    acc = acc + residual[b, co, oh, ow]
                out[b, co, oh, ow] = apply_act(acc, g.act, g.alpha, g.beta)


cdef class ConvDirectStep(Step):
    """Direct convolution (see conv2d_direct_kernel). All arrays 4-D NCHW, C-contiguous."""
    cdef const float[:, :, :, ::1] x
    cdef const float[:, :, :, ::1] w
    cdef const float[::1] bias
    cdef const float[:, :, :, ::1] residual
    cdef float[:, :, :, ::1] out
    cdef ConvGeom g

    def __init__(self, const float[:, :, :, ::1] x, const float[:, :, :, ::1] w, bias, residual,
                 float[:, :, :, ::1] out, strides, pads, dilations, Py_ssize_t group,
                 int act=0, float alpha=0.0, float beta=0.0):
        self.x, self.w, self.out = x, w, out
        self.g = make_geom(shape4(x), shape4(w), shape4(out), strides,
                           pads, dilations, group, act, alpha, beta, bias is not None,
                           residual is not None)
        check_geom(self.g, w.shape[1])
        self.bias = bias if bias is not None else _EMPTY1
        self.residual = residual if residual is not None else _EMPTY4
        if self.g.has_bias and self.bias.shape[0] != self.g.c_out:
            raise ValueError("ConvDirectStep: bias size")
        if self.g.has_residual and shape4(self.residual) != shape4(out):
            raise ValueError("ConvDirectStep: residual shape")

    cdef void run(self) noexcept nogil:
        conv2d_direct_kernel(self.x, self.w, self.bias, self.residual, self.out, self.g,
                             self.num_threads)


import numpy as np
_EMPTY1 = np.zeros(1, np.float32)
_EMPTY4 = np.zeros((1, 1, 1, 1), np.float32)


def conv2d_direct(x, w, bias, out, strides=(1, 1), pads=(0, 0), dilations=(1, 1), group=1,
                  act=0, alpha=0.0, beta=0.0, residual=None, num_threads=1):
    """Direct NCHW convolution into `out` (tests and fallback). pads = (pad_top, pad_left); the
    bottom/right padding is implied by out's shape."""
    s = ConvDirectStep(x, w, bias, residual, out, strides, pads, dilations, group, act, alpha, beta)
    s.num_threads = num_threads
    s()

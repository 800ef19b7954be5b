"""Transposed convolution (ONNX ConvTranspose), NCHW.

    out[b, co, oh, ow] = act(bias[co] + sum x[b, ci, ih, iw] * w[ci, co - g*cog, kh, kw])
    over ci in co's group g and (ih, iw, kh, kw) with oh = ih*stride_h - pad_top + kh*dil_h,
    ow = iw*stride_w - pad_left + kw*dil_w.

x: (n, c_in, h_in, w_in); w: (c_in, c_out/group, k_h, k_w); out: (n, c_out, h_out, w_out).
cig = c_in/group input and cog = c_out/group output channels per group. The bottom/right
padding only shortens the output, so the kernels need pad_top/pad_left and out's shape.

Two kernels over the same geometry, tested against each other:
- `deconv_gemm_kernel`: per sample and group, one GEMM
      col (cog*k_h*k_w, h_in*w_in) = wt[g] (cog*k_h*k_w, cig) @ x[b, group g] (cig, h_in*w_in)
  with wt[g] = w[group g] transposed (packed once), then col2im adds each row of col into the
  output plane it belongs to. Output channels are independent, so col2im runs in parallel
  over them without write conflicts.
- `deconv_direct_kernel`: the plain gather loop over output positions (the reference, and the
  fallback when the column buffer would be too large).
1-D transposed convolutions run as 2-D with a height of 1.
"""
from cython.parallel cimport prange

from fastcnn._kernels.step cimport Step, threads_for
from fastcnn._kernels.act cimport apply_act, act_span, ACT_NONE
from fastcnn._kernels.gemm cimport sgemm_plain_work, SGEMM_WORK_PER_THREAD

WORK_PER_THREAD = SGEMM_WORK_PER_THREAD  # floats of GEMM workspace a thread needs

import numpy as np


cdef struct DeconvGeom:
    Py_ssize_t n, c_in, h_in, w_in, c_out, h_out, w_out
    Py_ssize_t k_h, k_w, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, group
    int act
    float alpha, beta
    bint has_bias


cdef inline void deconv_gemm(const float *a, Py_ssize_t lda, const float *b, Py_ssize_t ldb,
                             float *c, Py_ssize_t ldc, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,
                             float *work, int num_threads) noexcept nogil:
    """c (m, n) = a (m, k) @ b (k, n), row-major with leading dims in elements, on the blocked
    micro-kernel GEMM (work: WORK_PER_THREAD floats per thread). The only GEMM call here."""
    sgemm_plain_work(a, lda, b, ldb, c, ldc, m, k, n, work, num_threads)


cdef inline Py_ssize_t floor_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """floor(a / b) for b > 0 (C division truncates toward zero)."""
    if a >= 0:
        return a // b
    return -((-a + b - 1) // b)


cdef inline void tap_range(Py_ssize_t out_len, Py_ssize_t in_len, Py_ssize_t stride,
                           Py_ssize_t offset, Py_ssize_t *lo, Py_ssize_t *hi) noexcept nogil:
    """Input indices i in [lo, hi) with 0 <= i*stride + offset < out_len, offset being
    k*dil - pad_begin of one kernel tap."""
    cdef Py_ssize_t a = -floor_div(offset, stride)               # ceil(-offset / stride)
    cdef Py_ssize_t b = floor_div(out_len - 1 - offset, stride) + 1
    lo[0] = a if a > 0 else 0
    hi[0] = b if b < in_len else in_len
    if hi[0] < lo[0]:
        hi[0] = lo[0]


cdef void col2im_plane(const float *col, float *plane, const DeconvGeom *g) noexcept nogil:
    """plane (h_out, w_out) += col (k_h*k_w, h_in*w_in) scattered: row (kh, kw), column
    (ih, iw) lands at (ih*stride_h - pad_top + kh*dil_h, iw*stride_w - pad_left + kw*dil_w)."""
    cdef Py_ssize_t kh, kw, ih, iw, ih_lo, ih_hi, iw_lo, iw_hi, oh, ow0, hw = g.h_in * g.w_in
    cdef const float *row
    cdef const float *src
    cdef float *dst
    for kh in range(g.k_h):
        tap_range(g.h_out, g.h_in, g.stride_h, kh * g.dil_h - g.pad_top, &ih_lo, &ih_hi)
        for kw in range(g.k_w):
            tap_range(g.w_out, g.w_in, g.stride_w, kw * g.dil_w - g.pad_left, &iw_lo, &iw_hi)
            if iw_hi == iw_lo:
                continue
            row = col + (kh * g.k_w + kw) * hw
            ow0 = iw_lo * g.stride_w - g.pad_left + kw * g.dil_w
            for ih in range(ih_lo, ih_hi):
                oh = ih * g.stride_h - g.pad_top + kh * g.dil_h
                src = row + ih * g.w_in
                dst = plane + oh * g.w_out + ow0
                if g.stride_w == 1:
                    for iw in range(iw_lo, iw_hi):
                        dst[iw - iw_lo] += src[iw]
                else:
                    for iw in range(iw_lo, iw_hi):
                        dst[(iw - iw_lo) * g.stride_w] += src[iw]


cdef void finish_plane(float *plane, Py_ssize_t size, const DeconvGeom *g) noexcept nogil:
    """The activation epilogue over one finished output plane."""
    cdef Py_ssize_t i
    if g.act == ACT_NONE:
        return
    act_span(plane, plane, size, g.act, g.alpha, g.beta)


cdef void deconv_gemm_kernel(const float[:, :, :, ::1] x, const float[:, :, ::1] wt,
                             const float[::1] bias, float[:, :, :, ::1] out, float *col,
                             float *work, const DeconvGeom *g, int num_threads) noexcept nogil:
    """See the module docstring. wt: (group, cog*k_h*k_w, cig); col: cog*k_h*k_w*h_in*w_in
    floats of scratch; work: WORK_PER_THREAD floats per thread for the GEMM."""
    cdef Py_ssize_t cig = g.c_in // g.group, cog = g.c_out // g.group
    cdef Py_ssize_t hw = g.h_in * g.w_in, kk = g.k_h * g.k_w, plane = g.h_out * g.w_out
    cdef Py_ssize_t b, gi, co, i
    cdef float *dst
    cdef float v
    cdef int nt = threads_for(cog * (plane + kk * hw), num_threads) if cog > 1 else 1
    for b in range(g.n):
        for gi in range(g.group):
            deconv_gemm(&wt[gi, 0, 0], cig, &x[b, gi * cig, 0, 0], hw, col, hw, cog * kk, cig, hw,
                        work, num_threads)
            for co in prange(cog, num_threads=nt, schedule="static"):
                dst = &out[b, gi * cog + co, 0, 0]
                v = bias[gi * cog + co] if g.has_bias else 0.0
                for i in range(plane):
                    dst[i] = v
                col2im_plane(col + co * kk * hw, dst, g)
                finish_plane(dst, plane, g)


cdef void deconv_direct_kernel(const float[:, :, :, ::1] x, const float[:, :, :, ::1] w,
                               const float[::1] bias, float[:, :, :, ::1] out,
                               const DeconvGeom *g, int num_threads) noexcept nogil:
    """The gather form: each output position sums the taps whose input index is a whole
    multiple of the stride and inside the input."""
    cdef Py_ssize_t cig = g.c_in // g.group, cog = g.c_out // g.group
    cdef Py_ssize_t job, b, co, gi, cl, ci, oh, ow, kh, kw, th, tw, ih, iw
    cdef float acc
    cdef int nt = threads_for(g.n * g.c_out * g.h_out * g.w_out * cig * g.k_h * g.k_w, num_threads)
    for job in prange(g.n * g.c_out, num_threads=nt, schedule="static"):
        b = job // g.c_out
        co = job % g.c_out
        gi = co // cog
        cl = co % cog
        for oh in range(g.h_out):
            for ow in range(g.w_out):
                acc = bias[co] if g.has_bias else 0.0
                for ci in range(gi * cig, (gi + 1) * cig):
                    for kh in range(g.k_h):
                        th = oh + g.pad_top - kh * g.dil_h
                        if th < 0 or th % g.stride_h != 0:
                            continue
                        ih = th // g.stride_h
                        if ih >= g.h_in:
                            continue
                        for kw in range(g.k_w):
                            tw = ow + g.pad_left - kw * g.dil_w
                            if tw < 0 or tw % g.stride_w != 0:
                                continue
                            iw = tw // g.stride_w
                            if iw >= g.w_in:
                                continue
                            acc = acc + x[b, ci, ih, iw] * w[ci, cl, kh, kw]
                out[b, co, oh, ow] = apply_act(acc, g.act, g.alpha, g.beta)


_EMPTY1 = np.zeros(1, np.float32)


cdef DeconvGeom make_geom(tuple x_shape, tuple out_shape, Py_ssize_t cog, kernel, strides, pads,
                          dilations, Py_ssize_t group, int act, float alpha, float beta,
                          bias) except *:
    """Fill and check the geometry (the last line of defence for direct use from Python)."""
    cdef DeconvGeom g
    g.n, g.c_in, g.h_in, g.w_in = x_shape
    _, g.c_out, g.h_out, g.w_out = out_shape
    g.k_h, g.k_w = kernel
    g.stride_h, g.stride_w = strides
    g.pad_top, g.pad_left = pads[0], pads[1]
    g.dil_h, g.dil_w = dilations
    g.group = group
    g.act, g.alpha, g.beta = act, alpha, beta
    g.has_bias = bias is not None
    if out_shape[0] != x_shape[0]:
        raise ValueError("deconv: batch sizes differ")
    if g.group < 1 or g.c_in % g.group or cog * g.group != g.c_out:
        raise ValueError("deconv: channels and group do not fit")
    if min(g.k_h, g.k_w, g.stride_h, g.stride_w, g.dil_h, g.dil_w, g.h_in, g.w_in) < 1:
        raise ValueError("deconv: bad kernel, stride, dilation or input size")
    if g.pad_top < 0 or g.pad_left < 0 or g.h_out < 1 or g.w_out < 1:
        raise ValueError("deconv: bad padding or empty output")
    if g.has_bias and len(bias) != g.c_out:
        raise ValueError("deconv: bias size")
    return g


cdef class ConvTransposeGemmStep(Step):
    """GEMM + col2im transposed convolution (see the module docstring).

    x (n, c_in, h_in, w_in); wt (group, cog*k_h*k_w, cig) packed weights; bias (c_out,) or
    None; out (n, c_out, h_out, w_out); col: scratch of at least cog*k_h*k_w*h_in*w_in floats;
    kernel (k_h, k_w), strides, pads (top, left), dilations; work: GEMM workspace of
    slots*WORK_PER_THREAD floats (threads are capped at slots)."""
    cdef const float[:, :, :, ::1] x
    cdef const float[:, :, ::1] wt
    cdef const float[::1] bias
    cdef float[:, :, :, ::1] out
    cdef float[::1] col
    cdef float[::1] work
    cdef Py_ssize_t slots
    cdef DeconvGeom g

    def __init__(self, const float[:, :, :, ::1] x, const float[:, :, ::1] wt, bias,
                 float[:, :, :, ::1] out, float[::1] col, kernel, strides, pads, dilations,
                 Py_ssize_t group, int act=0, float alpha=0.0, float beta=0.0,
                 float[::1] work=None, Py_ssize_t slots=1):
        cdef Py_ssize_t cog = out.shape[1] // group if group > 0 else 0
        self.g = make_geom((x.shape[0], x.shape[1], x.shape[2], x.shape[3]),
                           (out.shape[0], out.shape[1], out.shape[2], out.shape[3]), cog, kernel,
                           strides, pads, dilations, group, act, alpha, beta, bias)
        if (wt.shape[0] != group or wt.shape[1] != cog * self.g.k_h * self.g.k_w
                or wt.shape[2] != self.g.c_in // group):
            raise ValueError("ConvTransposeGemmStep: packed weights do not fit the geometry")
        if col.shape[0] < cog * self.g.k_h * self.g.k_w * self.g.h_in * self.g.w_in:
            raise ValueError("ConvTransposeGemmStep: column buffer too small")
        if slots < 1:
            raise ValueError("ConvTransposeGemmStep: slots must be >= 1")
        if work is None:
            work = np.empty(slots * WORK_PER_THREAD, np.float32)
        if work.shape[0] < slots * WORK_PER_THREAD:
            raise ValueError("ConvTransposeGemmStep: GEMM workspace too small")
        self.x, self.wt, self.out, self.col, self.work, self.slots = x, wt, out, col, work, slots
        self.bias = bias if bias is not None else _EMPTY1

    cdef void run(self) noexcept nogil:
        cdef int nt = self.num_threads if self.num_threads < self.slots else <int>self.slots
        deconv_gemm_kernel(self.x, self.wt, self.bias, self.out, &self.col[0], &self.work[0],
                           &self.g, nt)


cdef class ConvTransposeDirectStep(Step):
    """Direct transposed convolution. x (n, c_in, h_in, w_in); w (c_in, c_out/group, k_h, k_w);
    bias (c_out,) or None; out (n, c_out, h_out, w_out); pads (top, left)."""
    cdef const float[:, :, :, ::1] x
    cdef const float[:, :, :, ::1] w
    cdef const float[::1] bias
    cdef float[:, :, :, ::1] out
    cdef DeconvGeom g

    def __init__(self, const float[:, :, :, ::1] x, const float[:, :, :, ::1] w, bias,
                 float[:, :, :, ::1] out, strides, pads, dilations, Py_ssize_t group,
                 int act=0, float alpha=0.0, float beta=0.0):
        self.g = make_geom((x.shape[0], x.shape[1], x.shape[2], x.shape[3]),
                           (out.shape[0], out.shape[1], out.shape[2], out.shape[3]), w.shape[1],
                           (w.shape[2], w.shape[3]), strides, pads, dilations, group, act, alpha,
                           beta, bias)
        if w.shape[0] != self.g.c_in:
            raise ValueError("ConvTransposeDirectStep: weights do not fit the input")
        self.x, self.w, self.out = x, w, out
        self.bias = bias if bias is not None else _EMPTY1

    cdef void run(self) noexcept nogil:
        deconv_direct_kernel(self.x, self.w, self.bias, self.out, &self.g, self.num_threads)


def pack_weights(w, Py_ssize_t group):
    """w (c_in, cog, k_h, k_w) -> wt (group, cog*k_h*k_w, cig): each group's weights as the
    left GEMM operand (row = (output channel, kh, kw), column = input channel)."""
    w = np.asarray(w, np.float32)
    c_in, cog, k_h, k_w = w.shape
    cig = c_in // group
    wt = w.reshape(group, cig, cog * k_h * k_w).transpose(0, 2, 1)
    return np.ascontiguousarray(wt)


def conv_transpose2d(x, w, bias, out, strides=(1, 1), pads=(0, 0), dilations=(1, 1), group=1,
                     act=0, alpha=0.0, beta=0.0, algorithm="gemm", num_threads=1):
    """Transposed convolution into `out` with either kernel (tests). pads = (pad_top,
    pad_left); out's shape sets the output size."""
    if algorithm == "gemm":
        k_h, k_w = w.shape[2], w.shape[3]
        col = np.empty(max(1, w.shape[1] * k_h * k_w * x.shape[2] * x.shape[3]), np.float32)
        s = ConvTransposeGemmStep(x, pack_weights(w, group), bias, out, col, (k_h, k_w), strides,
                                  pads, dilations, group, act, alpha, beta)
    else:
        s = ConvTransposeDirectStep(x, w, bias, out, strides, pads, dilations, group, act, alpha, beta)
    s.num_threads = num_threads
    s()

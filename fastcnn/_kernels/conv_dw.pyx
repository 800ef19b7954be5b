"""Depthwise convolution (one input channel per output channel: group == c_in, any channel
multiplier c_out/c_in), NCHW, direct and vectorised over the output width.

    out[b, co, oh, ow] = act(bias[co] + residual[b, co, oh, ow]
                             + sum_{kh, kw} x[b, co // mult, ih, iw] * w[co, 0, kh, kw])
    ih = oh*stride_h - pad_top + kh*dil_h, iw = ow*stride_w - pad_left + kw*dil_w

Each output row is cut into an interior, where every tap of the row lies inside the input and
8 outputs are computed per vector (stride 1: plain loads; stride 2: even-lane loads), and the
edges, computed one value at a time with bounds checks (the interior fuses multiply and add, the
edges round twice; which columns are interior depends only on the geometry). 3x3 filters take the
same code with the filter size known to the compiler (fully unrolled taps).

Threads pick (image, channel) planes dynamically: results do not depend on the thread count.
"""
from cython.parallel cimport prange

from fastcnn._kernels.step cimport Step
from fastcnn._kernels.act cimport apply_act
from fastcnn._kernels.simd cimport *
from fastcnn._kernels.simd_extra cimport vf8_load_even
from fastcnn._kernels.ukernel cimport MIN_MACS_PER_THREAD, act_is_vector, act_vec
from fastcnn._kernels.convgeom cimport ConvGeom, make_geom, check_geom, shape4

import numpy as np



cdef inline void dw_store(float *o, vf8 v, const float *res, Py_ssize_t at, const ConvGeom *g,
                          bint vec_act) noexcept nogil:
    """o[0:8] = act(v + res[at:at+8]) (res may be NULL)."""
    cdef Py_ssize_t i
    if res != NULL:
        v = vf8_add(v, vf8_load(res + at))
    if vec_act:
        vf8_store(o, act_vec(v, g.act, g.alpha, g.beta))
    else:
        vf8_store(o, v)
        for i in range(8):
            o[i] = apply_act(o[i], g.act, g.alpha, g.beta)


cdef inline void dw_plane(const float *xc, const float *wk, float bias, const float *res,
                          float *oc, const ConvGeom *g, Py_ssize_t k_h, Py_ssize_t k_w,
                          Py_ssize_t sw) noexcept nogil:
    """One output plane oc (h_out, w_out) from one input plane xc (h_in, w_in) and filter wk
    (k_h, k_w); res: residual plane or NULL. k_h, k_w, sw are passed as constants by the fast
    paths so the compiler specialises the loops."""
    cdef Py_ssize_t oh, ow, kh, kw, ih, iw, ow_lo, ow_hi, ow_vec_hi, span
    cdef Py_ssize_t w_in = g.w_in, h_in = g.h_in, dw = g.dil_w, pl = g.pad_left
    cdef const float *xr
    cdef float acc
    cdef vf8 v0, v1, v2, v3, wv
    cdef bint vec_act = act_is_vector(g.act, g.alpha, g.beta)
    # Interior columns [ow_lo, ow_hi): every tap in range (iw = ow*sw - pl + kw*dw in [0, w_in)
    # for all kw); for stride 2 also the 16th float of the last tap's even-lane read.
    span = (k_w - 1) * dw
    ow_lo = (pl + sw - 1) // sw
    if sw == 1:
        ow_hi = w_in - span + pl
    elif sw == 2:
        ow_hi = (w_in + pl - span) // 2 if w_in + pl - span > 0 else 0
    else:
        ow_hi = 0
    ow_hi = min(ow_hi, g.w_out)
    if ow_hi < ow_lo:
        ow_hi = ow_lo = min(ow_lo, g.w_out)
    for oh in range(g.h_out):
        # scalar left edge [0, ow_lo)
        for ow in range(ow_lo):
            acc = bias
            for kh in range(k_h):
                ih = oh * g.stride_h - g.pad_top + kh * g.dil_h
                if ih < 0 or ih >= h_in:
                    continue
                for kw in range(k_w):
                    iw = ow * sw - pl + kw * dw
                    if iw >= 0 and iw < w_in:
                        acc = acc + xc[ih * w_in + iw] * wk[kh * k_w + kw]
            if res != NULL:
                acc = acc + res[oh * g.w_out + ow]
            oc[oh * g.w_out + ow] = apply_act(acc, g.act, g.alpha, g.beta)
        ow = ow_lo
        ow_vec_hi = ow_lo + (ow_hi - ow_lo) // 8 * 8
        # 32 outputs at a time: four independent FMA chains hide the FMA latency
        while ow + 32 <= ow_vec_hi:
            v0 = vf8_set1(bias)
            v1 = v0
            v2 = v0
            v3 = v0
            for kh in range(k_h):
                ih = oh * g.stride_h - g.pad_top + kh * g.dil_h
                if ih < 0 or ih >= h_in:
                    continue
                xr = xc + ih * w_in + ow * sw - pl
                for kw in range(k_w):
                    wv = vf8_set1(wk[kh * k_w + kw])
                    if sw == 1:
                        v0 = vf8_fmadd(vf8_load(xr + kw * dw), wv, v0)
                        v1 = vf8_fmadd(vf8_load(xr + kw * dw + 8), wv, v1)
                        v2 = vf8_fmadd(vf8_load(xr + kw * dw + 16), wv, v2)
                        v3 = vf8_fmadd(vf8_load(xr + kw * dw + 24), wv, v3)
                    else:
                        v0 = vf8_fmadd(vf8_load_even(xr + kw * dw), wv, v0)
                        v1 = vf8_fmadd(vf8_load_even(xr + kw * dw + 16), wv, v1)
                        v2 = vf8_fmadd(vf8_load_even(xr + kw * dw + 32), wv, v2)
                        v3 = vf8_fmadd(vf8_load_even(xr + kw * dw + 48), wv, v3)
            dw_store(oc + oh * g.w_out + ow, v0, res, oh * g.w_out + ow, g, vec_act)
            dw_store(oc + oh * g.w_out + ow + 8, v1, res, oh * g.w_out + ow + 8, g, vec_act)
            dw_store(oc + oh * g.w_out + ow + 16, v2, res, oh * g.w_out + ow + 16, g, vec_act)
            dw_store(oc + oh * g.w_out + ow + 24, v3, res, oh * g.w_out + ow + 24, g, vec_act)
            ow = ow + 32
        while ow < ow_vec_hi:
            v0 = vf8_set1(bias)
            for kh in range(k_h):
                ih = oh * g.stride_h - g.pad_top + kh * g.dil_h
                if ih < 0 or ih >= h_in:
                    continue
                xr = xc + ih * w_in + ow * sw - pl
                for kw in range(k_w):
                    wv = vf8_set1(wk[kh * k_w + kw])
                    if sw == 1:
                        v0 = vf8_fmadd(vf8_load(xr + kw * dw), wv, v0)
                    else:
                        v0 = vf8_fmadd(vf8_load_even(xr + kw * dw), wv, v0)
            dw_store(oc + oh * g.w_out + ow, v0, res, oh * g.w_out + ow, g, vec_act)
            ow = ow + 8
        # scalar right edge [ow_vec_hi, w_out)
        for ow in range(ow_vec_hi, g.w_out):
            acc = bias
            for kh in range(k_h):
                ih = oh * g.stride_h - g.pad_top + kh * g.dil_h
                if ih < 0 or ih >= h_in:
                    continue
                for kw in range(k_w):
                    iw = ow * sw - pl + kw * dw
                    if iw >= 0 and iw < w_in:
                        acc = acc + xc[ih * w_in + iw] * wk[kh * k_w + kw]
            if res != NULL:
                acc = acc + res[oh * g.w_out + ow]
            oc[oh * g.w_out + ow] = apply_act(acc, g.act, g.alpha, g.beta)


cdef class ConvDepthwiseStep(Step):
    """Depthwise conv (see module docstring). x (n, c_in, h_in, w_in); w (c_out, 1, k_h, k_w)
    with c_out a multiple of c_in (group == c_in); bias (c_out,) or None; residual like out or
    None; out (n, c_out, h_out, w_out)."""
    cdef const float[:, :, :, ::1] x
    cdef const float[:, :, :, ::1] w
    cdef const float[::1] bias
    cdef const float[:, :, :, ::1] residual
    cdef float[:, :, :, ::1] out
    cdef ConvGeom g

    def __init__(self, const float[:, :, :, ::1] x, const float[:, :, :, ::1] w, bias, residual,
                 float[:, :, :, ::1] out, strides, pads, dilations, int act=0, float alpha=0.0,
                 float beta=0.0):
        self.x, self.w, self.out = x, w, out
        self.g = make_geom(shape4(x), shape4(w), shape4(out), strides, pads, dilations,
                           x.shape[1], act, alpha, beta, bias is not None, residual is not None)
        check_geom(self.g, w.shape[1])
        if w.shape[1] != 1:
            raise ValueError("ConvDepthwiseStep: not a depthwise weight")
        self.bias = bias if bias is not None else np.zeros(1, np.float32)
        self.residual = residual if residual is not None else np.zeros((1, 1, 1, 1), np.float32)
        if self.g.has_bias and self.bias.shape[0] != self.g.c_out:
            raise ValueError("ConvDepthwiseStep: bias size")
        if self.g.has_residual and shape4(self.residual) != shape4(out):
            raise ValueError("ConvDepthwiseStep: residual shape")

    cdef void plane(self, Py_ssize_t task) noexcept nogil:
        """Output plane `task` = (image, channel)."""
        cdef Py_ssize_t img, co, mult = self.g.c_out // self.g.c_in
        cdef const float *xc
        cdef const float *wk
        cdef const float *res
        cdef float *oc
        cdef float b
        cdef ConvGeom *g = &self.g
        img = task // g.c_out
        co = task % g.c_out
        xc = &self.x[img, co // mult, 0, 0]
        wk = &self.w[co, 0, 0, 0]
        oc = &self.out[img, co, 0, 0]
        res = &self.residual[img, co, 0, 0] if g.has_residual else NULL
        b = self.bias[co] if g.has_bias else 0.0
        if g.k_h == 3 and g.k_w == 3 and g.stride_w == 1:
            dw_plane(xc, wk, b, res, oc, g, 3, 3, 1)
        elif g.k_h == 3 and g.k_w == 3 and g.stride_w == 2:
            dw_plane(xc, wk, b, res, oc, g, 3, 3, 2)
        elif g.stride_w == 1:
            dw_plane(xc, wk, b, res, oc, g, g.k_h, g.k_w, 1)
        elif g.stride_w == 2:
            dw_plane(xc, wk, b, res, oc, g, g.k_h, g.k_w, 2)
        else:
            dw_plane(xc, wk, b, res, oc, g, g.k_h, g.k_w, g.stride_w)

    cdef void run(self) noexcept:
        cdef Py_ssize_t total = self.g.n * self.g.c_out, t
        cdef Py_ssize_t macs = total * self.g.h_out * self.g.w_out * self.g.k_h * self.g.k_w
        cdef Py_ssize_t nt = min(<Py_ssize_t>max(1, self.num_threads), max(1, macs // MIN_MACS_PER_THREAD), total)
        if total == 0:
            return
        with nogil:
            if nt <= 1:
                for t in range(total):
                    self.plane(t)
            else:
                for t in prange(total, num_threads=nt, schedule="dynamic"):
                    self.plane(t)


def conv2d_depthwise(x, w, bias, out, strides=(1, 1), pads=(0, 0), dilations=(1, 1), act=0,
                     alpha=0.0, beta=0.0, residual=None, num_threads=1):
    """Depthwise NCHW convolution into `out` (tests and bench); arguments as conv2d_direct."""
    s = ConvDepthwiseStep(x, w, bias, residual, out, strides, pads, dilations, act, alpha, beta)
    s.num_threads = num_threads
    s()

"""Resize over the last two axes: x (outer, h_in, w_in) -> out (outer, h_out, w_out).

Every interpolation mode is separable, so the Python side resolves each axis into a tap table
while planning (coordinate transformation, rounding, clamping, cubic weights):
    idx_h (h_out, t_h), wt_h (h_out, t_h), inside_h (h_out,)     (likewise for w)
and the kernel computes
    out[c, oh, ow] = sum_a sum_b wt_h[oh, a] * wt_w[ow, b] * x[c, idx_h[oh, a], idx_w[ow, b]]
or `extrapolation` where inside_h[oh] or inside_w[ow] is 0 (tf_crop_and_resize outside the
input). Taps per axis: 1 (nearest: a plain copy), 2 (linear) or 4 (cubic).
"""
from cython.parallel cimport prange

from fastcnn._kernels.step cimport Step

import numpy as np


cdef void resize_kernel(const float[:, :, ::1] x, float[:, :, ::1] out,
                        const long long[:, ::1] idx_h, const float[:, ::1] wt_h,
                        const unsigned char[::1] inside_h, const long long[:, ::1] idx_w,
                        const float[:, ::1] wt_w, const unsigned char[::1] inside_w,
                        float extrapolation, int num_threads) noexcept nogil:
    cdef Py_ssize_t outer = out.shape[0], h_out = out.shape[1], w_out = out.shape[2]
    cdef Py_ssize_t t_h = idx_h.shape[1], t_w = idx_w.shape[1]
    cdef Py_ssize_t r, c, oh, ow, a, b
    cdef const float *src
    cdef float *dst
    cdef float acc, s
    cdef int nt = num_threads if outer * h_out * w_out * t_h * t_w >= 32768 else 1
    for r in prange(outer * h_out, num_threads=nt, schedule="static"):
        c = r // h_out
        oh = r % h_out
        dst = &out[c, oh, 0]
        if not inside_h[oh]:
            for ow in range(w_out):
                dst[ow] = extrapolation
            continue
        if t_h == 1 and t_w == 1:
            src = &x[c, idx_h[oh, 0], 0]
            for ow in range(w_out):
                dst[ow] = src[idx_w[ow, 0]] if inside_w[ow] else extrapolation
            continue
        for ow in range(w_out):
            if not inside_w[ow]:
                dst[ow] = extrapolation
                continue
            acc = 0.0
            for a in range(t_h):
                src = &x[c, idx_h[oh, a], 0]
                s = 0.0
                for b in range(t_w):
                    s = s + wt_w[ow, b] * src[idx_w[ow, b]]
                acc = acc + wt_h[oh, a] * s
            dst[ow] = acc


cdef class ResizeStep(Step):
    """out (outer, h_out, w_out) from x (outer, h_in, w_in) through per-axis tap tables (see the
    module docstring). Indices are checked against x here; the kernel reads without checks."""
    cdef const float[:, :, ::1] x
    cdef float[:, :, ::1] out
    cdef const long long[:, ::1] idx_h
    cdef const float[:, ::1] wt_h
    cdef const unsigned char[::1] inside_h
    cdef const long long[:, ::1] idx_w
    cdef const float[:, ::1] wt_w
    cdef const unsigned char[::1] inside_w
    cdef float extrapolation

    def __init__(self, const float[:, :, ::1] x, float[:, :, ::1] out, idx_h, wt_h, inside_h,
                 idx_w, wt_w, inside_w, float extrapolation=0.0):
        for name, idx, wt, inside, n_out, n_in in (
                ("h", idx_h, wt_h, inside_h, out.shape[1], x.shape[1]),
                ("w", idx_w, wt_w, inside_w, out.shape[2], x.shape[2])):
            idx, wt, inside = np.asarray(idx), np.asarray(wt), np.asarray(inside)
            if idx.ndim != 2 or idx.shape[0] != n_out or not 1 <= idx.shape[1] <= 4:
                raise ValueError(f"ResizeStep: idx_{name} must be ({n_out}, 1..4), got {idx.shape}")
            if wt.shape != idx.shape or inside.shape != (n_out,):
                raise ValueError(f"ResizeStep: wt_{name}/inside_{name} do not match idx_{name}")
            if idx.size and (idx.min() < 0 or idx.max() >= n_in):
                raise ValueError(f"ResizeStep: idx_{name} outside [0, {n_in})")
        if out.shape[0] != x.shape[0]:
            raise ValueError("ResizeStep: x and out differ in their leading size")
        self.x, self.out = x, out
        self.idx_h, self.wt_h, self.inside_h = idx_h, wt_h, inside_h
        self.idx_w, self.wt_w, self.inside_w = idx_w, wt_w, inside_w
        self.extrapolation = extrapolation

    cdef void run(self) noexcept:
        if self.out.shape[0] == 0 or self.out.shape[1] == 0 or self.out.shape[2] == 0:
            return
        with nogil:
            resize_kernel(self.x, self.out, self.idx_h, self.wt_h, self.inside_h, self.idx_w,
                          self.wt_w, self.inside_w, self.extrapolation, self.num_threads)

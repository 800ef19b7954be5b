"""Resize over the last two axes: x (outer, h_in, w_in) -> out (outer, h_out, w_out).

Every interpolation mode is separable, so the Python side resolves each axis into a tap table
while planning (coordinate transformation, rounding, clamping, cubic weights):
    idx_h (h_out, t_h), wt_h (h_out, t_h), inside_h (h_out,)     (likewise for w)
and the kernels compute
    out[c, oh, ow] = sum_a sum_b wt_h[oh, a] * wt_w[ow, b] * x[c, idx_h[oh, a], idx_w[ow, b]]
or `extrapolation` where inside_h[oh] or inside_w[ow] is 0 (tf_crop_and_resize outside the
input). Taps per axis: 1 (nearest), 2 (linear) or 4 (cubic).

Three loops over the same tables:
- nearest (1 x 1 taps): a gather per output (a plain repeat when the w table is an integer
  upscale); an output row whose source row is the previous row's is a copy of it;
- 2 x 2 taps (bilinear): each source row is first interpolated along w into a per-thread row
  cache (two slots), so consecutive output rows sharing source rows only blend cached rows;
- any other taps (cubic): the double sum per output.
The nearest and bilinear loops run channel planes in parallel (rows of one plane depend on each
other through the copies and the cache); the generic loop runs rows in parallel.
"""
from cython.parallel cimport prange, threadid
from libc.string cimport memcpy

from fastcnn._kernels.step cimport Step, threads_for

import numpy as np


cdef struct Tables:
    const long long *idx_h
    const float *wt_h
    const unsigned char *in_h
    const long long *idx_w
    const float *wt_w
    const unsigned char *in_w
    Py_ssize_t t_h, t_w
    Py_ssize_t rep_w        # > 0: nearest along w is idx_w[ow] = ow // rep_w, all inside
    float extrapolation


cdef inline void fill(float *dst, Py_ssize_t n, float v) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        dst[i] = v


cdef void nearest_plane(const float *x, float *out, Py_ssize_t h_out, Py_ssize_t w_out,
                        Py_ssize_t w_in, const Tables *t) noexcept nogil:
    """One channel plane, 1 x 1 taps."""
    cdef Py_ssize_t oh, ow
    cdef const float *src
    cdef float *dst
    for oh in range(h_out):
        dst = out + oh * w_out
        if not t.in_h[oh]:
            fill(dst, w_out, t.extrapolation)
        elif oh > 0 and t.in_h[oh - 1] and t.idx_h[oh] == t.idx_h[oh - 1]:
            memcpy(dst, dst - w_out, w_out * sizeof(float))
        else:
            src = x + t.idx_h[oh] * w_in
            if t.rep_w == 2:
                for ow in range(w_in):
                    dst[2 * ow] = src[ow]
                    dst[2 * ow + 1] = src[ow]
            elif t.rep_w > 0:
                for ow in range(w_out):
                    dst[ow] = src[ow // t.rep_w]
            else:
                for ow in range(w_out):
                    dst[ow] = src[t.idx_w[ow]] if t.in_w[ow] else t.extrapolation


cdef void interp_row(const float *src, float *dst, Py_ssize_t w_out, const Tables *t) noexcept nogil:
    """dst[ow] = wt_w[ow, 0] * src[idx_w[ow, 0]] + wt_w[ow, 1] * src[idx_w[ow, 1]]."""
    cdef Py_ssize_t ow
    for ow in range(w_out):
        dst[ow] = t.wt_w[2 * ow] * src[t.idx_w[2 * ow]] + t.wt_w[2 * ow + 1] * src[t.idx_w[2 * ow + 1]]


cdef void bilinear_plane(const float *x, float *out, Py_ssize_t h_out, Py_ssize_t w_out,
                         Py_ssize_t w_in, float *cache, const Tables *t) noexcept nogil:
    """One channel plane, 2 x 2 taps. cache: 2 * w_out floats (two interpolated source rows)."""
    cdef Py_ssize_t oh, ow, a, y, held[2]
    cdef float *rows[2]
    cdef float *dst
    cdef float w0, w1
    cdef int slot, used
    held[0] = -1
    held[1] = -1
    for oh in range(h_out):
        dst = out + oh * w_out
        if not t.in_h[oh]:
            fill(dst, w_out, t.extrapolation)
            continue
        used = -1
        for a in range(2):
            y = t.idx_h[2 * oh + a]
            if held[0] == y:
                slot = 0
            elif held[1] == y:
                slot = 1
            else:
                # overwrite the slot this output row does not need for its other source row
                if a == 0:
                    slot = 1 if held[0] == t.idx_h[2 * oh + 1] else 0
                else:
                    slot = 1 - used
                held[slot] = y
                interp_row(x + y * w_in, cache + slot * w_out, w_out, t)
            rows[a] = cache + slot * w_out
            used = slot
        w0 = t.wt_h[2 * oh]
        w1 = t.wt_h[2 * oh + 1]
        for ow in range(w_out):
            dst[ow] = w0 * rows[0][ow] + w1 * rows[1][ow] if t.in_w[ow] else t.extrapolation


cdef void generic_row(const float *x, float *dst, Py_ssize_t oh, Py_ssize_t w_out,
                      Py_ssize_t w_in, const Tables *t) noexcept nogil:
    """One output row of any tap counts (x: the channel plane)."""
    cdef Py_ssize_t ow, a, b
    cdef const float *src
    cdef float acc, s
    if not t.in_h[oh]:
        fill(dst, w_out, t.extrapolation)
        return
    for ow in range(w_out):
        if not t.in_w[ow]:
            dst[ow] = t.extrapolation
            continue
        acc = 0.0
        for a in range(t.t_h):
            src = x + t.idx_h[oh * t.t_h + a] * w_in
            s = 0.0
            for b in range(t.t_w):
                s = s + t.wt_w[ow * t.t_w + b] * src[t.idx_w[ow * t.t_w + b]]
            acc = acc + t.wt_h[oh * t.t_h + a] * s
        dst[ow] = acc


cdef void resize_kernel(const float *x, float *out, Py_ssize_t outer, Py_ssize_t h_in,
                        Py_ssize_t w_in, Py_ssize_t h_out, Py_ssize_t w_out, float *cache,
                        int cache_slots, const Tables *t, int num_threads) noexcept nogil:
    cdef Py_ssize_t c, r
    cdef int nt = threads_for(outer * h_out * w_out * t.t_h * t.t_w, num_threads)
    if t.t_h == 1 and t.t_w == 1:
        for c in prange(outer, num_threads=nt, schedule="static"):
            nearest_plane(x + c * h_in * w_in, out + c * h_out * w_out, h_out, w_out, w_in, t)
    elif t.t_h == 2 and t.t_w == 2:
        if nt > cache_slots:
            nt = cache_slots
        for c in prange(outer, num_threads=nt, schedule="static"):
            bilinear_plane(x + c * h_in * w_in, out + c * h_out * w_out, h_out, w_out, w_in,
                           cache + threadid() * 2 * w_out, t)
    else:
        for r in prange(outer * h_out, num_threads=nt, schedule="static"):
            generic_row(x + (r // h_out) * h_in * w_in, out + r * w_out, r % h_out, w_out, w_in, t)


cdef class ResizeStep(Step):
    """out (outer, h_out, w_out) from x (outer, h_in, w_in) through per-axis tap tables (see the
    module docstring). Indices are checked against x here; the kernels read without checks.
    cache: scratch for the bilinear row cache, 2 * w_out floats per thread it may use."""
    cdef const float[:, :, ::1] x
    cdef float[:, :, ::1] out
    cdef const long long[:, ::1] idx_h
    cdef const float[:, ::1] wt_h
    cdef const unsigned char[::1] inside_h
    cdef const long long[:, ::1] idx_w
    cdef const float[:, ::1] wt_w
    cdef const unsigned char[::1] inside_w
    cdef float[::1] cache
    cdef int cache_slots
    cdef Tables t

    def __init__(self, const float[:, :, ::1] x, float[:, :, ::1] out, idx_h, wt_h, inside_h,
                 idx_w, wt_w, inside_w, float extrapolation=0.0, float[::1] cache=None,
                 Py_ssize_t rep_w=0):
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
        if cache is None:
            cache = np.zeros(max(1, 2 * out.shape[2]), np.float32)
        self.cache = cache
        self.cache_slots = cache.shape[0] // max(1, 2 * out.shape[2])
        if self.idx_h.shape[1] == 2 and self.idx_w.shape[1] == 2 and self.cache_slots < 1:
            raise ValueError("ResizeStep: the row cache needs 2 * w_out floats")
        self.t.t_h, self.t.t_w = self.idx_h.shape[1], self.idx_w.shape[1]
        if rep_w and not (self.t.t_w == 1 and out.shape[2] == rep_w * x.shape[2]
                          and np.array_equal(np.asarray(idx_w)[:, 0], np.arange(out.shape[2]) // rep_w)
                          and np.asarray(inside_w).all()):
            raise ValueError("ResizeStep: rep_w does not describe the w table")
        self.t.rep_w = rep_w
        self.t.extrapolation = extrapolation

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t outer = self.out.shape[0], h_out = self.out.shape[1], w_out = self.out.shape[2]
        if outer == 0 or h_out == 0 or w_out == 0:
            return
        self.t.idx_h = &self.idx_h[0, 0]
        self.t.wt_h = &self.wt_h[0, 0]
        self.t.in_h = &self.inside_h[0]
        self.t.idx_w = &self.idx_w[0, 0]
        self.t.wt_w = &self.wt_w[0, 0]
        self.t.in_w = &self.inside_w[0]
        resize_kernel(&self.x[0, 0, 0], &self.out[0, 0, 0], outer, self.x.shape[1],
                      self.x.shape[2], h_out, w_out, &self.cache[0], self.cache_slots,
                      &self.t, self.num_threads)

"""Normalisation kernels, NCHW (any number of spatial dims flattened into `inner`).

- ChannelAffineStep: out = act(x * scale[c] + shift[c]) — inference BatchNormalization when it
  could not be folded into a conv, and any per-channel affine.
- LRNStep: local response normalisation across channels.
- InstanceNormStep: per (sample, channel) mean/variance over space.
- LayerNormStep: per row mean/variance over the trailing `inner` elements.
"""
from cython.parallel cimport prange
from libc.math cimport sqrtf, powf

from fastcnn._kernels.step cimport Step, threads_for
from fastcnn._kernels.act cimport act_span


cdef class ChannelAffineStep(Step):
    """x, out: (n, c, inner); out = act(x * scale[c] + shift[c])."""
    cdef const float[:, :, ::1] x
    cdef float[:, :, ::1] out
    cdef const float[::1] scale
    cdef const float[::1] shift
    cdef int act
    cdef float alpha, beta

    def __init__(self, const float[:, :, ::1] x, float[:, :, ::1] out, const float[::1] scale,
                 const float[::1] shift, int act=0, float alpha=0.0, float beta=0.0):
        if (x.shape[0], x.shape[1], x.shape[2]) != (out.shape[0], out.shape[1], out.shape[2]) or scale.shape[0] != x.shape[1] or shift.shape[0] != x.shape[1]:
            raise ValueError("ChannelAffineStep: shapes do not fit")
        self.x, self.out, self.scale, self.shift = x, out, scale, shift
        self.act, self.alpha, self.beta = act, alpha, beta

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t n = self.x.shape[0], c = self.x.shape[1], inner = self.x.shape[2]
        cdef Py_ssize_t job, b, ch, i
        cdef float s, t
        cdef int nt = threads_for(n * c * inner, self.num_threads)
        for job in prange(n * c, num_threads=nt, schedule="static"):
            b = job // c
            ch = job % c
            s = self.scale[ch]
            t = self.shift[ch]
            for i in range(inner):
                self.out[b, ch, i] = self.x[b, ch, i] * s + t
            if inner > 0:
                act_span(&self.out[b, ch, 0], &self.out[b, ch, 0], inner, self.act,
                         self.alpha, self.beta)


cdef class LRNStep(Step):
    """x, out: (n, c, inner). out = x / (bias + alpha/size * sum_{window} x^2)^beta, window of
    `size` channels centred on c: [c - floor((size-1)/2), c + ceil((size-1)/2)] (ONNX)."""
    cdef const float[:, :, ::1] x
    cdef float[:, :, ::1] out
    cdef Py_ssize_t size
    cdef float alpha, beta, bias

    def __init__(self, const float[:, :, ::1] x, float[:, :, ::1] out, Py_ssize_t size,
                 float alpha, float beta, float bias):
        if (x.shape[0], x.shape[1], x.shape[2]) != (out.shape[0], out.shape[1], out.shape[2]) or size < 1:
            raise ValueError("LRNStep: shapes do not fit")
        self.x, self.out, self.size = x, out, size
        self.alpha, self.beta, self.bias = alpha, beta, bias

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t n = self.x.shape[0], c = self.x.shape[1], inner = self.x.shape[2]
        cdef Py_ssize_t job, b, ch, i, j, lo, hi
        cdef Py_ssize_t before = (self.size - 1) // 2, after = self.size - 1 - (self.size - 1) // 2
        cdef float s, v
        cdef int nt = threads_for(n * c * inner * self.size, self.num_threads)
        for job in prange(n * c, num_threads=nt, schedule="static"):
            b = job // c
            ch = job % c
            lo = ch - before
            if lo < 0:
                lo = 0
            hi = ch + after
            if hi > c - 1:
                hi = c - 1
            for i in range(inner):
                s = 0.0
                for j in range(lo, hi + 1):
                    v = self.x[b, j, i]
                    s = s + v * v
                self.out[b, ch, i] = self.x[b, ch, i] / powf(self.bias + self.alpha / self.size * s, self.beta)


cdef class InstanceNormStep(Step):
    """x, out: (n, c, inner). out = (x - mean) / sqrt(var + eps) * scale[c] + shift[c], with
    mean/var over `inner` for each (n, c). Statistics accumulate in double."""
    cdef const float[:, :, ::1] x
    cdef float[:, :, ::1] out
    cdef const float[::1] scale
    cdef const float[::1] shift
    cdef float eps

    def __init__(self, const float[:, :, ::1] x, float[:, :, ::1] out, const float[::1] scale,
                 const float[::1] shift, float eps):
        if (x.shape[0], x.shape[1], x.shape[2]) != (out.shape[0], out.shape[1], out.shape[2]) or scale.shape[0] != x.shape[1] or shift.shape[0] != x.shape[1]:
            raise ValueError("InstanceNormStep: shapes do not fit")
        self.x, self.out, self.scale, self.shift, self.eps = x, out, scale, shift, eps

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t n = self.x.shape[0], c = self.x.shape[1], inner = self.x.shape[2]
        cdef Py_ssize_t job, b, ch, i
        cdef double mean, var, d
        cdef float inv, s, t
        cdef int nt = threads_for(n * c * inner, self.num_threads)
        if inner == 0:
            return
        for job in prange(n * c, num_threads=nt, schedule="static"):
            b = job // c
            ch = job % c
            mean = 0.0
            for i in range(inner):
                mean = mean + self.x[b, ch, i]
            mean = mean / inner
            var = 0.0
            for i in range(inner):
                d = self.x[b, ch, i] - mean
                var = var + d * d
            var = var / inner
            inv = 1.0 / sqrtf(<float>var + self.eps)
            s = self.scale[ch] * inv
            t = self.shift[ch] - <float>mean * s
            for i in range(inner):
                self.out[b, ch, i] = self.x[b, ch, i] * s + t


cdef class LayerNormStep(Step):
    """x, out: (rows, inner). out = (x - mean) / sqrt(var + eps) * scale + shift per row;
    scale, shift: (inner,) (already broadcast by the caller)."""
    cdef const float[:, ::1] x
    cdef float[:, ::1] out
    cdef const float[::1] scale
    cdef const float[::1] shift
    cdef float eps

    def __init__(self, const float[:, ::1] x, float[:, ::1] out, const float[::1] scale,
                 const float[::1] shift, float eps):
        if (x.shape[0], x.shape[1]) != (out.shape[0], out.shape[1]) or scale.shape[0] != x.shape[1] or shift.shape[0] != x.shape[1]:
            raise ValueError("LayerNormStep: shapes do not fit")
        self.x, self.out, self.scale, self.shift, self.eps = x, out, scale, shift, eps

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t rows = self.x.shape[0], inner = self.x.shape[1], r, i
        cdef double mean, var, d
        cdef float inv
        cdef int nt = threads_for(rows * inner, self.num_threads)
        if inner == 0:
            return
        for r in prange(rows, num_threads=nt, schedule="static"):
            mean = 0.0
            for i in range(inner):
                mean = mean + self.x[r, i]
            mean = mean / inner
            var = 0.0
            for i in range(inner):
                d = self.x[r, i] - mean
                var = var + d * d
            var = var / inner
            inv = 1.0 / sqrtf(<float>var + self.eps)
            for i in range(inner):
                self.out[r, i] = (self.x[r, i] - <float>mean) * inv * self.scale[i] + self.shift[i]

"""Pooling kernels, NCHW: windowed max/min/average/Lp/stochastic and global average/max/Lp.

Windows follow the convolution geometry (kernel, stride, dilation, pads). Positions in the
padding are skipped; the average's divisor is either the number of real positions
(count_include_pad=0) or the number of positions inside the padded input (count_include_pad=1;
with ceil_mode a window may run past the end padding, and those positions never count).
1-D pooling runs as 2-D with a height of 1.
"""
from cython.parallel cimport prange
from libc.math cimport powf, sqrtf, fabsf, INFINITY

from fastcnn._kernels.step cimport Step

cdef enum:
    POOL_MAX = 0
    POOL_MIN = 1
    POOL_AVG = 2
    POOL_LP = 3
    POOL_STOCHASTIC = 4

POOL_CODES = {"MaxPool": POOL_MAX, "MinPool": POOL_MIN, "AveragePool": POOL_AVG,
              "LpPool": POOL_LP, "StochasticPool": POOL_STOCHASTIC,
              "GlobalMaxPool": POOL_MAX, "GlobalAveragePool": POOL_AVG, "GlobalLpPool": POOL_LP}


cdef struct PoolGeom:
    Py_ssize_t k_h, k_w, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right, dil_h, dil_w
    int kind
    bint count_include_pad
    float p


cdef inline float lp_pow(float v, float p) noexcept nogil:
    if p == 2:
        return v * v
    if p == 1:
        return fabsf(v)
    return powf(fabsf(v), p)


cdef inline float lp_root(float s, float p) noexcept nogil:
    if p == 2:
        return sqrtf(s)
    if p == 1:
        return s
    return powf(s, 1.0 / p)


cdef void pool2d_kernel(const float[:, :, :, ::1] x, float[:, :, :, ::1] out, PoolGeom g,
                        int num_threads) noexcept nogil:
    """x: (n, c, h_in, w_in) -> out: (n, c, h_out, w_out), one window per output position."""
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], h_in = x.shape[2], w_in = x.shape[3]
    cdef Py_ssize_t h_out = out.shape[2], w_out = out.shape[3]
    cdef Py_ssize_t job, b, ch, oh, ow, kh, kw, ih, iw, h0, w0, count, hend, wend, ph, pw
    cdef float acc, v, wsum
    cdef int nt = num_threads if n * c * h_out * w_out * g.k_h * g.k_w >= 32768 else 1
    for job in prange(n * c, num_threads=nt, schedule="static"):
        b = job // c
        ch = job % c
        for oh in range(h_out):
            h0 = oh * g.stride_h - g.pad_top
            for ow in range(w_out):
                w0 = ow * g.stride_w - g.pad_left
                count = 0
                wsum = 0.0
                if g.kind == POOL_MAX:
                    acc = -INFINITY
                elif g.kind == POOL_MIN:
                    acc = INFINITY
                else:
                    acc = 0.0
                for kh in range(g.k_h):
                    ih = h0 + kh * g.dil_h
                    if ih < 0 or ih >= h_in:
                        continue
                    for kw in range(g.k_w):
                        iw = w0 + kw * g.dil_w
                        if iw < 0 or iw >= w_in:
                            continue
                        v = x[b, ch, ih, iw]
                        count = count + 1
                        if g.kind == POOL_MAX:
                            if v > acc or v != v:
                                acc = v
                        elif g.kind == POOL_MIN:
                            if v < acc or v != v:
                                acc = v
                        elif g.kind == POOL_AVG:
                            acc = acc + v
                        elif g.kind == POOL_LP:
                            acc = acc + lp_pow(v, g.p)
                        else:  # stochastic pooling at inference: sum(v^2) / sum(v) for v >= 0
                            if v > 0:
                                acc = acc + v * v
                                wsum = wsum + v
                            elif v != v:
                                acc = v
                if g.kind == POOL_AVG:
                    if g.count_include_pad:
                        # positions inside the padded input, clipped at its end
                        hend = h0 + (g.k_h - 1) * g.dil_h
                        wend = w0 + (g.k_w - 1) * g.dil_w
                        ph = 0
                        for kh in range(g.k_h):
                            if h0 + kh * g.dil_h < h_in + g.pad_bottom:
                                ph = ph + 1
                        pw = 0
                        for kw in range(g.k_w):
                            if w0 + kw * g.dil_w < w_in + g.pad_right:
                                pw = pw + 1
                        count = ph * pw
                    acc = acc / count if count > 0 else 0.0
                elif g.kind == POOL_LP:
                    acc = lp_root(acc, g.p)
                elif g.kind == POOL_STOCHASTIC:
                    if acc == acc:
                        acc = acc / wsum if wsum > 0 else 0.0
                out[b, ch, oh, ow] = acc


cdef class Pool2dStep(Step):
    """Windowed pooling of x (n, c, h_in, w_in) into out (n, c, h_out, w_out)."""
    cdef const float[:, :, :, ::1] x
    cdef float[:, :, :, ::1] out
    cdef PoolGeom g

    def __init__(self, const float[:, :, :, ::1] x, float[:, :, :, ::1] out, int kind, kernel,
                 strides, pads, dilations, bint count_include_pad=False, float p=2.0):
        """pads: (top, left, bottom, right)."""
        self.x, self.out = x, out
        self.g.k_h, self.g.k_w = kernel
        self.g.stride_h, self.g.stride_w = strides
        self.g.pad_top, self.g.pad_left, self.g.pad_bottom, self.g.pad_right = pads
        self.g.dil_h, self.g.dil_w = dilations
        self.g.kind, self.g.count_include_pad, self.g.p = kind, count_include_pad, p
        if x.shape[0] != out.shape[0] or x.shape[1] != out.shape[1]:
            raise ValueError("Pool2dStep: batch/channels differ")
        if min(self.g.k_h, self.g.k_w, self.g.stride_h, self.g.stride_w, self.g.dil_h, self.g.dil_w) < 1:
            raise ValueError("Pool2dStep: bad window")

    cdef void run(self) noexcept:
        with nogil:
            pool2d_kernel(self.x, self.out, self.g, self.num_threads)


cdef void global_pool_kernel(const float[:, ::1] x, float[::1] out, int kind, float p,
                             int num_threads) noexcept nogil:
    """x: (n*c, spatial) -> out: (n*c,), reduce each row."""
    cdef Py_ssize_t rows = x.shape[0], cols = x.shape[1], r, i
    cdef float acc, v
    cdef int nt = num_threads if rows * cols >= 32768 else 1
    for r in prange(rows, num_threads=nt, schedule="static"):
        if kind == POOL_MAX:
            acc = -INFINITY
            for i in range(cols):
                v = x[r, i]
                if v > acc or v != v:
                    acc = v
        elif kind == POOL_MIN:
            acc = INFINITY
            for i in range(cols):
                v = x[r, i]
                if v < acc or v != v:
                    acc = v
        elif kind == POOL_AVG:
            acc = 0.0
            for i in range(cols):
                acc = acc + x[r, i]
            acc = acc / cols
        else:
            acc = 0.0
            for i in range(cols):
                acc = acc + lp_pow(x[r, i], p)
            acc = lp_root(acc, p)
        out[r] = acc


cdef class GlobalPoolStep(Step):
    """Global pooling: x (n*c, spatial) -> out (n*c,)."""
    cdef const float[:, ::1] x
    cdef float[::1] out
    cdef int kind
    cdef float p

    def __init__(self, const float[:, ::1] x, float[::1] out, int kind, float p=2.0):
        if out.shape[0] != x.shape[0]:
            raise ValueError("GlobalPoolStep: sizes")
        self.x, self.out, self.kind, self.p = x, out, kind, p

    cdef void run(self) noexcept:
        with nogil:
            global_pool_kernel(self.x, self.out, self.kind, self.p, self.num_threads)

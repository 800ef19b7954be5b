"""Direct convolution vectorised along output rows, NCHW: depthwise layers (group == c_in, any
channel multiplier) and layers too small for the packed GEMM to pay off (few output channels).

    out[b, co, oh, ow] = act(bias[co] + residual[b, co, oh, ow]
                             + sum_{ci, kh, kw} x[b, g*cig + ci, ih, iw] * w[co, ci, kh, kw])
    g = co // cog, ih = oh*stride_h - pad_top + kh*dil_h, iw = ow*stride_w - pad_left + kw*dil_w

A task is (image, group, chunk of up to CO_CHUNK output channels). It first copies the group's
cig input planes into per-thread scratch, zero-padded left and right and split by column phase:
phase row r of input row ih holds padded columns r, r + s, r + 2s, ... (s = stride_w), so the
taps of 8 consecutive outputs are 8 consecutive floats of one phase row for any stride. Then every
output row is computed 8 (or 32) outputs at a time in registers, summing the taps in the order
(ci, kh, kw) after the bias; rows of taps outside the input (top/bottom padding) are skipped. The
last chunk of a row that is not a multiple of 8 is computed whole and stored in part.

Tasks do not depend on the thread count and threads pick them dynamically: results are
bit-identical for any number of threads.
"""
from cython.parallel cimport prange, threadid

from fastcnn._kernels.step cimport Step
from fastcnn._kernels.act cimport act_span, ACT_NONE, ACT_IDENTITY
from fastcnn._kernels.simd cimport *
from fastcnn._kernels.simd_extra cimport vf8_split_even_odd
from fastcnn._kernels.ukernel cimport team, whole_lines, act_is_vector, act_vec, act_scalar
from fastcnn._kernels.convgeom cimport ConvGeom, make_geom, check_geom, shape4

import numpy as np

cdef enum:
    CO_CHUNK = 8     # output channels per task (each task copies its input planes once)


cdef inline Py_ssize_t phase_width(Py_ssize_t w_out, Py_ssize_t k_w, Py_ssize_t dil_w,
                                   Py_ssize_t stride_w, Py_ssize_t pad_left,
                                   Py_ssize_t w_in) noexcept nogil:
    """Floats per phase row, a multiple of 8: the reads of the last (rounded-up) chunk of 8
    outputs, and every input column, fit."""
    cdef Py_ssize_t need = (w_out + 7) // 8 * 8 + ((k_w - 1) * dil_w) // stride_w
    cdef Py_ssize_t cols = (pad_left + w_in + stride_w - 1) // stride_w
    return (max(need, cols) + 7) // 8 * 8


cdef inline void copy_phases(const float *x, float *dst, Py_ssize_t rows, Py_ssize_t w_in,
                             Py_ssize_t pl, Py_ssize_t s, Py_ssize_t wq,
                             float *row) noexcept nogil:
    """x (rows, w_in) -> dst (rows, s, wq): dst[r, ph, q] = x[r, q*s + ph - pl] (0 outside x).
    dst rows are wq floats (a multiple of 8, with pl + w_in <= s*wq) apart. row: s*wq + 8
    floats of scratch.

    With stride s > 1 each input row is first copied, zero-padded, into `row` (s*wq padded
    columns), then split into its s phases: stride 2 with one shuffle pass, larger strides one
    float at a time."""
    cdef Py_ssize_t r, ph, q
    cdef const float *xr
    cdef float *d
    cdef float *t
    cdef vf8 even, odd
    if s > 1:
        vf8_zero_fill(row, s * wq + 8)
    for r in range(rows):
        xr = x + r * w_in
        d = dst + r * s * wq
        # stride 1: straight into the phase row; otherwise into `row`, whose padding columns
        # stay zero (only [pl, pl + w_in) is ever written)
        t = d if s == 1 else row
        if s == 1:
            vf8_zero_fill(d, pl)
            vf8_zero_fill(d + pl + w_in, wq - pl - w_in)
        q = 0
        while q + 8 <= w_in:
            vf8_store(t + pl + q, vf8_load(xr + q))
            q = q + 8
        while q < w_in:
            t[pl + q] = xr[q]
            q = q + 1
        if s == 2:
            q = 0
            while q < wq:
                vf8_split_even_odd(row + 2 * q, &even, &odd)
                vf8_store(d + q, even)
                vf8_store(d + wq + q, odd)
                q = q + 8
        elif s > 2:
            for ph in range(s):
                for q in range(wq):
                    d[ph * wq + q] = row[q * s + ph]


cdef inline void epilogue8(float *o, vf8 v, const float *res, Py_ssize_t lanes,
                           const ConvGeom *g, bint vec_act) noexcept nogil:
    """o[0:lanes] = act(v + res[0:lanes]) (res may be NULL); lanes <= 8."""
    cdef float tmp[8]
    cdef Py_ssize_t i
    if lanes == 8:
        if res != NULL:
            v = vf8_add(v, vf8_load(res))
        if vec_act:
            vf8_store(o, act_vec(v, g.act, g.alpha, g.beta))
            return
        vf8_store(o, v)
        act_span(o, o, 8, g.act, g.alpha, g.beta)
        return
    vf8_store(tmp, v)
    for i in range(lanes):
        o[i] = act_scalar(tmp[i] + res[i] if res != NULL else tmp[i], g.act, g.alpha, g.beta)


# Filter shapes with their own compiled copy of the block kernel (constants known to the compiler)
ctypedef struct Depthwise3x3S1:
    char unused
ctypedef struct Depthwise3x3S2:
    char unused
ctypedef struct Kernel5x5S1:
    char unused
ctypedef struct AnyShape:
    char unused

ctypedef fused Shape:
    Depthwise3x3S1
    Depthwise3x3S2
    Kernel5x5S1
    AnyShape

# Register blocks: rows x 8-float chunks of output computed together (independent FMA chains)
ctypedef struct Rows2Chunks4:
    char unused
ctypedef struct Rows2Chunks2:
    char unused
ctypedef struct Rows2Chunks1:
    char unused
ctypedef struct Rows4Chunks1:
    char unused
ctypedef struct Rows1Chunks4:
    char unused
ctypedef struct Rows1Chunks1:
    char unused

ctypedef fused Block:
    Rows2Chunks4
    Rows2Chunks2
    Rows2Chunks1
    Rows4Chunks1
    Rows1Chunks4
    Rows1Chunks1


cdef void conv_block(const Shape *shape, const Block *block, const float *xp, const float *wk,
                     float bias, const float *res, float *oc, const ConvGeom *g,
                     Py_ssize_t cig_, const Py_ssize_t *tap_off, Py_ssize_t wq, Py_ssize_t oh,
                     Py_ssize_t ow, Py_ssize_t kh_lo, Py_ssize_t kh_hi,
                     Py_ssize_t last_lanes) noexcept nogil:
    """Output rows [oh, oh + R) x columns [ow, ow + 8*C) of one plane (R, C from `block`), all
    rows having the taps kh in [kh_lo, kh_hi) inside the input; the last chunk of each row stores
    `last_lanes` (<= 8) values. Inputs as conv_plane."""
    cdef Py_ssize_t cig, k_h, k_w, s, R, C
    cdef Py_ssize_t ci, kh, kw, r, c, o, i, h_in = g.h_in, row_step = g.stride_h
    cdef vf8 acc[8]
    cdef vf8 wv
    cdef const float *xr
    cdef const float *wr
    cdef bint vec_act = act_is_vector(g.act, g.alpha, g.beta)
    if Shape is Depthwise3x3S1:
        cig, k_h, k_w, s = 1, 3, 3, 1
    elif Shape is Depthwise3x3S2:
        cig, k_h, k_w, s = 1, 3, 3, 2
    elif Shape is Kernel5x5S1:
        cig, k_h, k_w, s = cig_, 5, 5, 1
    else:
        cig, k_h, k_w, s = cig_, g.k_h, g.k_w, g.stride_w
    if Block is Rows2Chunks4:
        R, C = 2, 4
    elif Block is Rows2Chunks2:
        R, C = 2, 2
    elif Block is Rows2Chunks1:
        R, C = 2, 1
    elif Block is Rows4Chunks1:
        R, C = 4, 1
    elif Block is Rows1Chunks4:
        R, C = 1, 4
    else:
        R, C = 1, 1
    for i in range(R * C):
        acc[i] = vf8_set1(bias)
    for ci in range(cig):
        for kh in range(kh_lo, kh_hi):
            wr = wk + (ci * k_h + kh) * k_w
            xr = xp + ((ci * h_in + oh * row_step - g.pad_top + kh * g.dil_h) * s) * wq + ow
            for kw in range(k_w):
                if Shape is AnyShape:
                    o = tap_off[kw]
                else:
                    o = ((kw * g.dil_w) % s) * wq + (kw * g.dil_w) // s
                wv = vf8_set1(wr[kw])
                for r in range(R):
                    for c in range(C):
                        acc[r * C + c] = vf8_fmadd(vf8_load(xr + r * row_step * s * wq + o + 8 * c),
                                                   wv, acc[r * C + c])
    if vec_act and last_lanes == 8:
        # full chunks, vector activation: simple unrolled stores (the common case)
        if res == NULL and (g.act == ACT_NONE or g.act == ACT_IDENTITY):
            for r in range(R):
                for c in range(C):
                    vf8_store(oc + (oh + r) * g.w_out + ow + 8 * c, acc[r * C + c])
        else:
            for r in range(R):
                for c in range(C):
                    i = (oh + r) * g.w_out + ow + 8 * c
                    wv = acc[r * C + c]
                    if res != NULL:
                        wv = vf8_add(wv, vf8_load(res + i))
                    vf8_store(oc + i, act_vec(wv, g.act, g.alpha, g.beta))
        return
    for r in range(R):
        for c in range(C):
            i = (oh + r) * g.w_out + ow + 8 * c
            epilogue8(oc + i, acc[r * C + c], res + i if res != NULL else NULL,
                      last_lanes if c == C - 1 else 8, g, vec_act)


cdef void conv_plane(const Shape *shape, const float *xp, const float *wk, float bias,
                     const float *res, float *oc, const ConvGeom *g, Py_ssize_t cig,
                     const Py_ssize_t *tap_off, Py_ssize_t wq) noexcept nogil:
    """One output plane oc (h_out, w_out) from the phase-split input planes xp
    (cig, h_in, s, wq) and the filter wk (cig, k_h, k_w). tap_off[kw]: offset of tap kw in
    a phase-split row ((kw*dil_w % s)*wq + kw*dil_w // s).

    Rows whose taps all lie inside the input go in pairs (wide planes) or fours (narrow ones) so
    that 8 or 4 FMA chains run side by side; edge rows go one at a time with their own taps."""
    cdef Py_ssize_t oh, ow, ih, kh_lo, kh_hi, full_lo, full_hi, rows
    cdef Py_ssize_t w_out = g.w_out, dh = g.dil_h, h_in = g.h_in, sh = g.stride_h
    cdef Py_ssize_t span = (g.k_h - 1) * dh
    # rows with every tap inside: 0 <= oh*sh - pt and oh*sh - pt + span < h_in
    full_lo = (g.pad_top + sh - 1) // sh
    full_hi = (h_in - 1 - span + g.pad_top) // sh + 1 if h_in - 1 - span + g.pad_top >= 0 else 0
    full_hi = min(full_hi, g.h_out)
    oh = 0
    while oh < g.h_out:
        if oh >= full_lo and oh < full_hi:
            kh_lo, kh_hi = 0, g.k_h
            rows = full_hi - oh
        else:
            # taps kh with 0 <= oh*sh - pad_top + kh*dh < h_in
            ih = oh * sh - g.pad_top
            kh_lo = (-ih + dh - 1) // dh if ih < 0 else 0
            kh_hi = min(g.k_h, (h_in - ih + dh - 1) // dh) if ih < h_in else 0
            rows = 1
        if w_out >= 32 and rows >= 2:
            ow = 0
            while ow + 32 <= w_out:
                conv_block(shape, <Rows2Chunks4 *>NULL, xp, wk, bias, res, oc, g, cig, tap_off,
                           wq, oh, ow, kh_lo, kh_hi, 8)
                ow = ow + 32
            while ow < w_out:   # the last 1..31 columns
                if w_out - ow > 8:
                    conv_block(shape, <Rows2Chunks2 *>NULL, xp, wk, bias, res, oc, g, cig,
                               tap_off, wq, oh, ow, kh_lo, kh_hi, min(8, w_out - ow - 8))
                    ow = ow + 16
                else:
                    conv_block(shape, <Rows2Chunks1 *>NULL, xp, wk, bias, res, oc, g, cig,
                               tap_off, wq, oh, ow, kh_lo, kh_hi, w_out - ow)
                    ow = ow + 8
            oh = oh + 2
        elif rows >= 4:
            ow = 0
            while ow < w_out:
                conv_block(shape, <Rows4Chunks1 *>NULL, xp, wk, bias, res, oc, g, cig, tap_off,
                           wq, oh, ow, kh_lo, kh_hi, min(8, w_out - ow))
                ow = ow + 8
            oh = oh + 4
        else:
            ow = 0
            while ow + 32 <= w_out:
                conv_block(shape, <Rows1Chunks4 *>NULL, xp, wk, bias, res, oc, g, cig, tap_off,
                           wq, oh, ow, kh_lo, kh_hi, 8)
                ow = ow + 32
            while ow < w_out:
                conv_block(shape, <Rows1Chunks1 *>NULL, xp, wk, bias, res, oc, g, cig, tap_off,
                           wq, oh, ow, kh_lo, kh_hi, min(8, w_out - ow))
                ow = ow + 8
            oh = oh + 1


cdef class ConvVecStep(Step):
    """Row-vectorised direct conv (module docstring). x (n, c_in, h_in, w_in);
    w (c_out, c_in/group, k_h, k_w); bias (c_out,) or None; residual like out or None;
    out (n, c_out, h_out, w_out); work: at least slots * `vec_scratch(...)` floats."""
    cdef const float[:, :, :, ::1] x
    cdef const float[:, :, :, ::1] w
    cdef const float[::1] bias
    cdef const float[:, :, :, ::1] residual
    cdef float[:, :, :, ::1] out
    cdef float[::1] work
    cdef ConvGeom g
    cdef Py_ssize_t cig, cog, chunks, wq, slot_size, slots
    cdef Py_ssize_t[::1] tap_off

    def __init__(self, const float[:, :, :, ::1] x, const float[:, :, :, ::1] w, bias, residual,
                 float[:, :, :, ::1] out, strides, pads, dilations, Py_ssize_t group,
                 int act=0, float alpha=0.0, float beta=0.0, float[::1] work=None,
                 Py_ssize_t slots=1):
        self.x, self.w, self.out = x, w, out
        self.g = make_geom(shape4(x), shape4(w), shape4(out), strides, pads, dilations, group,
                           act, alpha, beta, bias is not None, residual is not None)
        check_geom(self.g, w.shape[1])
        self.cig = self.g.c_in // group
        self.cog = self.g.c_out // group
        self.chunks = (self.cog + CO_CHUNK - 1) // CO_CHUNK
        self.bias = bias if bias is not None else np.zeros(1, np.float32)
        self.residual = residual if residual is not None else np.zeros((1, 1, 1, 1), np.float32)
        if self.g.has_bias and self.bias.shape[0] != self.g.c_out:
            raise ValueError("ConvVecStep: bias size")
        if self.g.has_residual and shape4(self.residual) != shape4(out):
            raise ValueError("ConvVecStep: residual shape")
        self.wq = phase_width(self.g.w_out, self.g.k_w, self.g.dil_w, self.g.stride_w,
                              self.g.pad_left, self.g.w_in)
        self.tap_off = np.array([(k * self.g.dil_w % self.g.stride_w) * self.wq
                                 + k * self.g.dil_w // self.g.stride_w
                                 for k in range(self.g.k_w)], np.intp)
        self.slot_size = vec_scratch(x.shape[1], x.shape[2], x.shape[3], out.shape[3], w.shape[3],
                                     strides[1], pads[1], dilations[1], group)
        if slots < 1:
            raise ValueError("ConvVecStep: slots must be >= 1")
        self.slots = slots
        self.work = work if work is not None else np.zeros(self.slot_size * slots, np.float32)
        if self.work.shape[0] < self.slot_size * slots:
            raise ValueError("ConvVecStep: work too small")

    cdef void task(self, Py_ssize_t task, float *xp) noexcept nogil:
        """(image, group, output channel chunk) `task`; xp: this thread's scratch."""
        cdef ConvGeom *g = &self.g
        cdef Py_ssize_t img, grp, chunk, co, co_end, s = g.stride_w
        cdef const float *wk
        cdef const float *res
        cdef const Py_ssize_t *off = &self.tap_off[0]
        cdef float *oc
        cdef float b
        img = task // (g.group * self.chunks)
        grp = (task // self.chunks) % g.group
        chunk = task % self.chunks
        copy_phases(&self.x[img, grp * self.cig, 0, 0], xp, self.cig * g.h_in, g.w_in,
                    g.pad_left, s, self.wq, xp + self.cig * g.h_in * s * self.wq)
        co_end = min(self.cog, (chunk + 1) * CO_CHUNK) + grp * self.cog
        for co in range(grp * self.cog + chunk * CO_CHUNK, co_end):
            wk = &self.w[co, 0, 0, 0]
            res = &self.residual[img, co, 0, 0] if g.has_residual else NULL
            b = self.bias[co] if g.has_bias else 0.0
            oc = &self.out[img, co, 0, 0]
            if self.cig == 1 and g.k_h == 3 and g.k_w == 3 and s == 1:
                conv_plane(<Depthwise3x3S1 *>NULL, xp, wk, b, res, oc, g, 1, off, self.wq)
            elif self.cig == 1 and g.k_h == 3 and g.k_w == 3 and s == 2:
                conv_plane(<Depthwise3x3S2 *>NULL, xp, wk, b, res, oc, g, 1, off, self.wq)
            elif g.k_h == 5 and g.k_w == 5 and s == 1:
                conv_plane(<Kernel5x5S1 *>NULL, xp, wk, b, res, oc, g, self.cig, off, self.wq)
            else:
                conv_plane(<AnyShape *>NULL, xp, wk, b, res, oc, g, self.cig, off, self.wq)

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t total = self.g.n * self.g.group * self.chunks, t
        cdef Py_ssize_t macs = (self.g.n * self.g.c_out * self.g.h_out * self.g.w_out * self.cig
                                * self.g.k_h * self.g.k_w)
        cdef Py_ssize_t nt = team(self.num_threads, self.slots, macs, total)
        cdef float *work = &self.work[0]
        cdef Py_ssize_t stride = self.slot_size
        if total == 0:
            return
        if nt <= 1:
            for t in range(total):
                self.task(t, work)
        else:
            for t in prange(total, num_threads=nt, schedule="dynamic"):
                self.task(t, work + threadid() * stride)


def vec_scratch(Py_ssize_t c_in, Py_ssize_t h_in, Py_ssize_t w_in, Py_ssize_t w_out,
                Py_ssize_t k_w, Py_ssize_t stride_w, Py_ssize_t pad_left, Py_ssize_t dil_w,
                Py_ssize_t group):
    """Floats of scratch one thread needs: the phase-split planes of one group's input and one
    padded row."""
    cdef Py_ssize_t wq = phase_width(w_out, k_w, dil_w, stride_w, pad_left, w_in)
    return whole_lines(((c_in // group) * h_in + 1) * stride_w * wq + 8)


def conv2d_vec(x, w, bias, out, strides=(1, 1), pads=(0, 0), dilations=(1, 1), group=1, act=0,
               alpha=0.0, beta=0.0, residual=None, num_threads=1):
    """Row-vectorised direct NCHW convolution into `out` (tests and bench); arguments as
    conv2d_direct."""
    slots = max(1, num_threads)
    s = ConvVecStep(x, w, bias, residual, out, strides, pads, dilations, group, act, alpha, beta,
                    None, slots)
    s.num_threads = num_threads
    s()

"""Convolution as packed GEMM on NCHW, per image b and group g:

    out[b, g*cog:(g+1)*cog] (cog, h_out*w_out) = W_g (cog, K) @ B (K, h_out*w_out)
    K = cig*k_h*k_w, k = (ci*k_h + kh)*k_w + kw;  B[k, oh*w_out + ow] = x[b, g*cig + ci, ih, iw]
    ih = oh*stride_h - pad_top + kh*dil_h, iw = ow*stride_w - pad_left + kw*dil_w (0 outside x)

W_g is packed once at load into 6-row panels (group, ceil(cog/6), K, 6) (`pack_a_panels`). B is
never materialised: each 16-pixel column panel of each K block is written by `pack_im2col`
straight into per-thread scratch in the packed (kc, 16) layout and multiplied by every row panel
at once. A 1x1 stride-1 unpadded conv (pointwise) reads B in place: it is x[b] (c_in, h*w).

Work is the list of (image, group, column panel) tasks, each running every K block (with few
panels, each task is also cut into row ranges); threads pick tasks dynamically, and every output
value is computed the same way whatever thread runs it (bit-identical results for any thread
count).
"""
from cython.parallel cimport prange, threadid

from fastcnn._kernels.step cimport Step
from fastcnn._kernels.convgeom cimport ConvGeom, make_geom, check_geom, shape4
from fastcnn._kernels.simd cimport vf8_load, vf8_store
from fastcnn._kernels.simd_extra cimport vf8_load_even
from fastcnn._kernels.ukernel cimport (MIN_MACS_PER_THREAD, MR, NR, Epilogue, ukernel_6x16,
                                       pack_b_edge)

import numpy as np



cdef inline void copy_run(float *d, const float *xg, const ConvGeom *g, Py_ssize_t ci,
                          Py_ssize_t ih, Py_ssize_t iw0, Py_ssize_t length) noexcept nogil:
    """d[u] = x_g[ci, ih, iw0 + u*stride_w] for u < length, 0 outside the input: one output-row
    run of an im2col row (xg points at the group's first input channel)."""
    cdef Py_ssize_t u, lo, hi, sw = g.stride_w, w_in = g.w_in
    cdef const float *xrow
    if ih < 0 or ih >= g.h_in:
        for u in range(length):
            d[u] = 0.0
        return
    xrow = xg + (ci * g.h_in + ih) * w_in
    # valid u: 0 <= iw0 + u*sw < w_in (no division for the common strides)
    if sw == 1:
        lo = 0 if iw0 >= 0 else -iw0
        hi = w_in - iw0
    elif sw == 2:
        lo = 0 if iw0 >= 0 else (1 - iw0) >> 1
        hi = (w_in - iw0 + 1) >> 1 if iw0 < w_in else 0
    else:
        lo = 0 if iw0 >= 0 else (-iw0 + sw - 1) // sw
        hi = (w_in - iw0 + sw - 1) // sw if iw0 < w_in else 0
    lo = min(lo, length)
    hi = max(lo, min(hi, length))
    for u in range(lo):
        d[u] = 0.0
    u = lo
    if sw == 1:
        while u + 8 <= hi:
            vf8_store(d + u, vf8_load(xrow + iw0 + u))
            u = u + 8
        while u < hi:
            d[u] = xrow[iw0 + u]
            u = u + 1
    elif sw == 2:
        # the even-lane read touches one float past the 8th value: keep it in the row
        while u + 8 <= hi and iw0 + 2 * u + 15 < w_in:
            vf8_store(d + u, vf8_load_even(xrow + iw0 + 2 * u))
            u = u + 8
        while u < hi:
            d[u] = xrow[iw0 + 2 * u]
            u = u + 1
    else:
        while u < hi:
            d[u] = xrow[iw0 + u * sw]
            u = u + 1
    for u in range(hi, length):
        d[u] = 0.0


cdef void pack_im2col(const float *xg, const ConvGeom *g, Py_ssize_t k0, Py_ssize_t kc,
                      Py_ssize_t j0, Py_ssize_t nr, float *dst) noexcept nogil:
    """dst (kc, NR): dst[p, t] = B[k0 + p, j0 + t] of one image and group (xg points at the
    group's first input channel), 0 for t >= nr. Columns are grouped in runs lying in one output
    row, so each (k, run) is one bounds-clipped (strided) row copy."""
    cdef Py_ssize_t run_t[NR]
    cdef Py_ssize_t run_len[NR]
    cdef Py_ssize_t run_ih[NR]
    cdef Py_ssize_t run_iw[NR]
    cdef Py_ssize_t nruns = 0, t = 0, j = j0, oh, ow, length, q, p, u
    cdef Py_ssize_t ci, kh, kw, khw = g.k_h * g.k_w
    cdef float *d
    while t < nr:
        oh = j // g.w_out
        ow = j - oh * g.w_out
        length = min(nr - t, g.w_out - ow)
        run_t[nruns] = t
        run_len[nruns] = length
        run_ih[nruns] = oh * g.stride_h - g.pad_top
        run_iw[nruns] = ow * g.stride_w - g.pad_left
        nruns = nruns + 1
        t = t + length
        j = j + length
    ci = k0 // khw
    kh = (k0 - ci * khw) // g.k_w
    kw = k0 - ci * khw - kh * g.k_w
    for p in range(kc):
        d = dst + p * NR
        for q in range(nruns):
            copy_run(d + run_t[q], xg, g, ci, run_ih[q] + kh * g.dil_h,
                     run_iw[q] + kw * g.dil_w, run_len[q])
        for u in range(nr, NR):
            d[u] = 0.0
        kw = kw + 1
        if kw == g.k_w:
            kw = 0
            kh = kh + 1
            if kh == g.k_h:
                kh = 0
                ci = ci + 1


cdef void im2col_whole(const float *xg, const float *x_end, const ConvGeom *g, Py_ssize_t K,
                       Py_ssize_t ldb, float *dst) noexcept nogil:
    """dst (K, ldb) = B of one image and group, row-major (columns [h_out*w_out, ldb) zero;
    dst holds 16 floats of slack after K*ldb): one run per output row and K row, for small
    images where 16-pixel panels would cut many rows into short runs. x_end: end of x's data.

    A stride-1 run of at most 16 outputs lying wholly inside its input row is copied as two
    vectors of 16 floats: the overshoot lands where the next run (or the zero tail) is written
    afterwards."""
    cdef Py_ssize_t k, ci = 0, kh = 0, kw = 0, oh, u, ih, iw0, hw = g.h_out * g.w_out
    cdef bint short_rows = g.stride_w == 1 and g.w_out <= 16
    cdef const float *src
    cdef float *d
    for k in range(K):
        d = dst + k * ldb
        iw0 = kw * g.dil_w - g.pad_left
        for oh in range(g.h_out):
            ih = oh * g.stride_h - g.pad_top + kh * g.dil_h
            src = xg + (ci * g.h_in + ih) * g.w_in + iw0
            if (short_rows and ih >= 0 and ih < g.h_in and iw0 >= 0 and iw0 + g.w_out <= g.w_in
                    and src + 16 <= x_end):
                vf8_store(d + oh * g.w_out, vf8_load(src))
                vf8_store(d + oh * g.w_out + 8, vf8_load(src + 8))
            else:
                copy_run(d + oh * g.w_out, xg, g, ci, ih, iw0, g.w_out)
        for u in range(hw, ldb):
            d[u] = 0.0
        kw = kw + 1
        if kw == g.k_w:
            kw = 0
            kh = kh + 1
            if kh == g.k_h:
                kh = 0
                ci = ci + 1


cdef class ConvGemmStep(Step):
    """out = act(conv(x, W) + bias + residual) as packed GEMM (see the module docstring).

    x (n, c_in, h_in, w_in); ap: W packed (group, ceil(cog/6), K, 6); bias (c_out,) or None;
    residual like out or None; out (n, c_out, h_out, w_out). kc: K block. work: scratch of at
    least `gemm_conv_scratch(...)` floats; at most `slots` threads run. allow_whole=False packs
    16-pixel panels even for a small layer (tests)."""
    cdef const float[:, :, :, ::1] x
    cdef const float[:, :, :, ::1] ap
    cdef const float[::1] bias
    cdef const float[:, :, :, ::1] residual
    cdef float[:, :, :, ::1] out
    cdef float[::1] work
    cdef ConvGeom g
    cdef Py_ssize_t kc, slots, cig, cog, K, mpanels, hw_in, hw_out, ppi, whole
    cdef bint pointwise

    def __init__(self, const float[:, :, :, ::1] x, const float[:, :, :, ::1] ap, bias, residual,
                 float[:, :, :, ::1] out, strides, pads, dilations, Py_ssize_t group,
                 Py_ssize_t k_h, Py_ssize_t k_w, int act=0, float alpha=0.0, float beta=0.0,
                 Py_ssize_t kc=256, float[::1] work=None, Py_ssize_t slots=1,
                 bint allow_whole=True):
        self.x, self.ap, self.out = x, ap, out
        self.g = make_geom(shape4(x), (out.shape[1], x.shape[1] // group if group > 0 else 0, k_h, k_w),
                           shape4(out), strides, pads, dilations, group, act, alpha, beta,
                           bias is not None, residual is not None)
        check_geom(self.g, self.g.c_in // group)
        self.cig = self.g.c_in // group
        self.cog = self.g.c_out // group
        self.K = self.cig * k_h * k_w
        self.mpanels = (self.cog + MR - 1) // MR
        if shape4(ap) != (group, self.mpanels, self.K, MR):
            raise ValueError("ConvGemmStep: packed weights do not fit")
        if kc < 1 or slots < 1:
            raise ValueError("ConvGemmStep: kc and slots must be >= 1")
        self.kc, self.slots = kc, slots
        self.bias = bias if bias is not None else np.zeros(1, np.float32)
        self.residual = residual if residual is not None else np.zeros((1, 1, 1, 1), np.float32)
        if self.g.has_bias and self.bias.shape[0] != self.g.c_out:
            raise ValueError("ConvGemmStep: bias size")
        if self.g.has_residual and shape4(self.residual) != shape4(out):
            raise ValueError("ConvGemmStep: residual shape")
        self.hw_in = self.g.h_in * self.g.w_in
        self.hw_out = self.g.h_out * self.g.w_out
        self.ppi = (self.hw_out + NR - 1) // NR
        self.pointwise = (k_h == 1 and k_w == 1 and self.g.stride_h == 1 and self.g.stride_w == 1
                          and self.g.pad_top == 0 and self.g.pad_left == 0
                          and self.g.h_out == self.g.h_in and self.g.w_out == self.g.w_in)
        self.whole = whole_im2col_floats(self.g.n, self.g.c_out, self.K, self.g.h_out,
                                         self.g.w_out, self.pointwise) if allow_whole else 0
        size = gemm_conv_scratch(kc, slots, self.g.n, self.g.c_out, self.K, self.g.h_out,
                                 self.g.w_out, self.pointwise)
        self.work = work if work is not None else np.zeros(size, np.float32)
        if self.work.shape[0] < size:
            raise ValueError("ConvGemmStep: work too small")

    cdef void task(self, Py_ssize_t task, Py_ssize_t mp0, Py_ssize_t mp1, float *work,
                   const float *whole) noexcept nogil:
        """One (image, group, column panel) task, row panels [mp0, mp1) of the group, all K
        blocks: out[img, group rows, 16 pixels]. whole: the task's im2col matrix already built
        by im2col_whole (K, ppi*16), or NULL to pack the panel into `work`."""
        cdef Py_ssize_t pc, kc, img, grp, jp, j, nr, mp, i, ldb
        cdef const float *xg
        cdef const float *bpanel
        cdef float *cbase
        cdef Epilogue epi
        cdef ConvGeom *g = &self.g
        img = task // (g.group * self.ppi)
        grp = (task // self.ppi) % g.group
        jp = task % self.ppi
        j = jp * NR
        nr = min(NR, self.hw_out - j)
        xg = &self.x[img, grp * self.cig, 0, 0]
        cbase = &self.out[img, grp * self.cog, 0, 0]
        epi.bias_row = &self.bias[grp * self.cog] if g.has_bias else NULL
        epi.bias_col = NULL
        epi.addend = &self.residual[img, grp * self.cog, 0, 0] if g.has_residual else NULL
        epi.ld_addend = self.hw_out
        epi.act, epi.alpha, epi.beta = g.act, g.alpha, g.beta
        pc = 0
        while pc < self.K:
            kc = min(self.kc, self.K - pc)
            if whole != NULL:
                bpanel = whole + pc * self.ppi * NR + j
                ldb = self.ppi * NR
            elif self.pointwise and nr == NR:
                bpanel = xg + pc * self.hw_in + j
                ldb = self.hw_in
            elif self.pointwise:
                pack_b_edge(xg + pc * self.hw_in + j, self.hw_in, kc, nr, work)
                bpanel = work
                ldb = NR
            else:
                pack_im2col(xg, g, pc, kc, j, nr, work)
                bpanel = work
                ldb = NR
            for mp in range(mp0, mp1):
                i = mp * MR
                ukernel_6x16(kc, &self.ap[grp, mp, pc, 0], 1, MR, bpanel, ldb,
                             cbase + i * self.hw_out + j, self.hw_out, min(MR, self.cog - i),
                             nr, pc > 0, &epi if pc + kc == self.K else NULL, i, j)
            pc = pc + kc

    cdef void run(self) noexcept:
        cdef Py_ssize_t tasks = self.g.n * self.g.group * self.ppi, t, total, chunks = 1, c
        cdef Py_ssize_t macs = self.g.n * self.g.c_out * self.hw_out * self.K
        cdef Py_ssize_t nt = max(1, min(<Py_ssize_t>self.num_threads, self.slots))
        cdef float *work = &self.work[0]
        cdef Py_ssize_t stride = self.kc * NR
        nt = min(nt, max(1, macs // MIN_MACS_PER_THREAD))
        if tasks == 0:
            return
        if nt > 1 and tasks < 4 * nt:
            # few column panels (small images): also split the rows, each part packing its own B
            chunks = min(self.mpanels, (4 * nt + tasks - 1) // tasks)
        total = tasks * chunks
        nt = min(nt, total)
        with nogil:
            if nt <= 1 and self.whole > 0:
                # small layer: one im2col matrix per image and group, one run per output row
                for t in range(tasks):
                    if t % self.ppi == 0:
                        im2col_whole(&self.x[t // (self.g.group * self.ppi),
                                             (t // self.ppi) % self.g.group * self.cig, 0, 0],
                                     &self.x[0, 0, 0, 0] + self.g.n * self.g.c_in * self.hw_in,
                                     &self.g, self.K, self.ppi * NR, work + stride)
                    self.task(t, 0, self.mpanels, work, work + stride)
            elif nt <= 1:
                for t in range(tasks):
                    self.task(t, 0, self.mpanels, work, NULL)
            else:
                # dynamic: a thread slowed by another process does not hold the others up
                for t in prange(total, num_threads=nt, schedule="dynamic"):
                    c = t % chunks
                    self.task(t // chunks, c * self.mpanels // chunks,
                              (c + 1) * self.mpanels // chunks, work + threadid() * stride, NULL)


cdef enum:
    WHOLE_IM2COL_MAX_FLOATS = 32768   # the whole im2col matrix stays in L2


cpdef Py_ssize_t whole_im2col_floats(Py_ssize_t n, Py_ssize_t c_out, Py_ssize_t K,
                                     Py_ssize_t h_out, Py_ssize_t w_out, bint pointwise):
    """Floats of the whole-matrix im2col buffer a small layer uses (0: the layer packs panels).
    Small: single-threaded (under 2 * MIN_MACS_PER_THREAD multiply-adds) with an im2col matrix
    of at most WHOLE_IM2COL_MAX_FLOATS; pointwise convs need no im2col at all."""
    cdef Py_ssize_t ldb = (h_out * w_out + NR - 1) // NR * NR
    if pointwise or K * ldb > WHOLE_IM2COL_MAX_FLOATS:
        return 0
    if n * c_out * h_out * w_out * K >= 2 * <Py_ssize_t>MIN_MACS_PER_THREAD:
        return 0
    return K * ldb + NR


def gemm_conv_scratch(Py_ssize_t kc, Py_ssize_t slots, Py_ssize_t n, Py_ssize_t c_out,
                      Py_ssize_t K, Py_ssize_t h_out, Py_ssize_t w_out, bint pointwise):
    """Floats of scratch a ConvGemmStep needs: a kc x 16 panel per thread slot, then the
    whole-matrix im2col of a small layer."""
    return slots * kc * NR + whole_im2col_floats(n, c_out, K, h_out, w_out, pointwise)


def pack_a_panels(w, Py_ssize_t group):
    """Pack conv weights W (c_out, cig, k_h, k_w) for the micro-kernel: (group, ceil(cog/6), K, 6)
    with K = cig*k_h*k_w and the rows of each panel interleaved (zero rows pad the last panel)."""
    w = np.asarray(w, np.float32)
    c_out = w.shape[0]
    cog = c_out // group
    k = int(np.prod(w.shape[1:]))
    mp = (cog + MR - 1) // MR
    a = np.zeros((group, mp * MR, k), np.float32)
    a[:, :cog] = w.reshape(group, cog, k)
    return np.ascontiguousarray(a.reshape(group, mp, MR, k).transpose(0, 1, 3, 2))


def conv2d_gemm(x, w, bias, out, strides=(1, 1), pads=(0, 0), dilations=(1, 1), group=1, act=0,
                alpha=0.0, beta=0.0, residual=None, kc=256, num_threads=1, allow_whole=True):
    """Packed-GEMM NCHW convolution into `out` (tests and bench); arguments as conv2d_direct."""
    k_h, k_w = w.shape[2], w.shape[3]
    slots = max(1, num_threads)
    s = ConvGemmStep(x, pack_a_panels(w, group), bias, residual, out, strides, pads, dilations,
                     group, k_h, k_w, act, alpha, beta, kc, None, slots, allow_whole)
    s.num_threads = num_threads
    s()

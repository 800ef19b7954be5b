"""Convolution as packed GEMM on NCHW, per image b and group g:

    out[b, g*cog:(g+1)*cog] (cog, h_out*w_out) = W_g (cog, K) @ B (K, h_out*w_out)
    K = cig*k_h*k_w, k = (ci*k_h + kh)*k_w + kw;  B[k, oh*w_out + ow] = x[b, g*cig + ci, ih, iw]
    ih = oh*stride_h - pad_top + kh*dil_h, iw = ow*stride_w - pad_left + kw*dil_w (0 outside x)

W_g is packed once at load into 6-row panels (group, ceil(cog/6), K, 6) (`pack_a_panels`). B is
built per thread, one K block at a time, in one of these ways (MODE_*):

    pointwise  a 1x1 stride-1 unpadded conv reads B in place: it is x[b] (c_in, h*w)
    band       a band of whole output rows: B[k0:k0+kc, band] row-major (kc, ldb) with one
               (strided, bounds-clipped) run per K row and output row, so the per-run cost is
               paid once per output row instead of once per 16 pixels; every 16-pixel panel of
               the band is then multiplied by every row panel
    panels     each 16-pixel column panel packed (kc, 16) on its own (`pack_im2col`)
    whole      a small single-threaded layer builds its whole im2col matrix once per image

Work is the list of (image, group, band or column panel) tasks, each running every K block (with
few tasks, each is also cut into row ranges); threads pick tasks dynamically, and every output
value is computed the same way whatever thread runs it (bit-identical results for any thread
count).
"""
from cython.parallel cimport prange, threadid

from fastcnn._kernels.step cimport Step
from fastcnn._kernels.convgeom cimport ConvGeom, make_geom, check_geom, shape4
from fastcnn._kernels.simd cimport vf8_load, vf8_store
from fastcnn._kernels.simd_extra cimport vf8_load_even
from fastcnn._kernels.ukernel cimport (MIN_MACS_PER_THREAD, MR, NR, Epilogue, ukernel_6x16,
                                       pack_b_edge, SplitEpilogue, ukernel_6x16_blk, whole_lines,
                                       finish_kind)
from fastcnn._kernels.simd_extra cimport vf8_transpose8

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


cdef void im2col_band(const float *xg, const float *x_end, const ConvGeom *g, Py_ssize_t k0,
                      Py_ssize_t kc, Py_ssize_t oh0, Py_ssize_t oh1, Py_ssize_t ldb,
                      float *dst) noexcept nogil:
    """dst (kc, ldb): dst[p, (oh - oh0)*w_out + ow] = B[k0 + p, oh*w_out + ow] of one image and
    group for output rows [oh0, oh1), columns [(oh1 - oh0)*w_out, ldb) zero; dst holds 16
    floats of slack after kc*ldb. One run per K row and output row. x_end: end of x's data.

    A stride-1 run of at most 16 outputs lying wholly inside its input row is copied as two
    vectors of 16 floats: the overshoot lands where the next run (or the zero tail) is written
    afterwards."""
    cdef Py_ssize_t khw = g.k_h * g.k_w, ci, kh, kw, p, oh, u, ih, iw0
    cdef Py_ssize_t cols = (oh1 - oh0) * g.w_out
    cdef bint short_rows = g.stride_w == 1 and g.w_out <= 16
    cdef const float *src
    cdef float *d
    ci = k0 // khw
    kh = (k0 - ci * khw) // g.k_w
    kw = k0 - ci * khw - kh * g.k_w
    for p in range(kc):
        d = dst + p * ldb
        iw0 = kw * g.dil_w - g.pad_left
        for oh in range(oh0, oh1):
            ih = oh * g.stride_h - g.pad_top + kh * g.dil_h
            src = xg + (ci * g.h_in + ih) * g.w_in + iw0
            if (short_rows and ih >= 0 and ih < g.h_in and iw0 >= 0 and iw0 + g.w_out <= g.w_in
                    and src + 16 <= x_end):
                vf8_store(d + (oh - oh0) * g.w_out, vf8_load(src))
                vf8_store(d + (oh - oh0) * g.w_out + 8, vf8_load(src + 8))
            else:
                copy_run(d + (oh - oh0) * g.w_out, xg, g, ci, ih, iw0, g.w_out)
        for u in range(cols, ldb):
            d[u] = 0.0
        kw = kw + 1
        if kw == g.k_w:
            kw = 0
            kh = kh + 1
            if kh == g.k_h:
                kh = 0
                ci = ci + 1


cdef enum:
    MODE_POINTWISE = 0
    MODE_PANELS = 1
    MODE_BAND = 2
    MODE_WHOLE = 3
    WHOLE_IM2COL_MAX_FLOATS = 32768   # the whole im2col matrix stays in L2
    BAND_FLOATS = 16384               # a band's K block (64 KB) stays in L2
    A_BLOCK_FLOATS = 49152            # a task's weight K block up to 192 KB stays in L2 too

GEMM_CONV_MODES = {"pointwise": MODE_POINTWISE, "panels": MODE_PANELS, "band": MODE_BAND,
                   "whole": MODE_WHOLE}


cdef class ConvGemmStep(Step):
    """out = act(conv(x, W) + bias + residual) as packed GEMM (see the module docstring).

    x (n, c_in, h_in, w_in); ap: W packed (group, ceil(cog/6), K, 6); bias (c_out,) or None;
    residual like out or None; out (n, c_out, h_out, w_out). kc: K block. work: scratch of at
    least `gemm_conv_scratch(...)` floats; at most `slots` threads run. mode: None for the
    automatic choice (`gemm_conv_mode`), or a name of GEMM_CONV_MODES (tests; ValueError if it
    does not apply)."""
    cdef const float[:, :, :, ::1] x
    cdef const float[:, :, :, ::1] ap
    cdef const float[::1] bias
    cdef const float[:, :, :, ::1] residual
    cdef float[:, :, :, ::1] out
    cdef float[::1] work
    cdef ConvGeom g
    cdef Py_ssize_t kc, slots, cig, cog, K, mpanels, hw_in, hw_out, ppi, band_rows, bands, ldb
    cdef Py_ssize_t slot_size
    cdef readonly int mode

    def __init__(self, const float[:, :, :, ::1] x, const float[:, :, :, ::1] ap, bias, residual,
                 float[:, :, :, ::1] out, strides, pads, dilations, Py_ssize_t group,
                 Py_ssize_t k_h, Py_ssize_t k_w, int act=0, float alpha=0.0, float beta=0.0,
                 Py_ssize_t kc=256, float[::1] work=None, Py_ssize_t slots=1, str mode=None):
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
        pointwise = (k_h == 1 and k_w == 1 and self.g.stride_h == 1 and self.g.stride_w == 1
                     and self.g.pad_top == 0 and self.g.pad_left == 0
                     and self.g.h_out == self.g.h_in and self.g.w_out == self.g.w_in)
        auto = gemm_conv_mode(self.g.n, self.g.c_out, self.K, self.g.h_out, self.g.w_out,
                              pointwise, kc)
        if mode is None:
            self.mode = auto
        else:
            self.mode = GEMM_CONV_MODES.get(mode, -1)
            if self.mode < 0 or (self.mode == MODE_POINTWISE) != pointwise:
                raise ValueError(f"ConvGemmStep: mode {mode!r} does not apply")
        self.band_rows = gemm_band_rows(kc, self.g.h_out, self.g.w_out)
        self.bands = (self.g.h_out + self.band_rows - 1) // self.band_rows
        self.ldb = (self.band_rows * self.g.w_out + NR - 1) // NR * NR
        self.slot_size = gemm_conv_slot(kc, self.K, self.g.h_out, self.g.w_out, self.mode)
        size = gemm_conv_scratch(kc, slots, self.g.n, self.g.c_out, self.K, self.g.h_out,
                                 self.g.w_out, pointwise, mode)
        self.work = work if work is not None else np.zeros(size, np.float32)
        if self.work.shape[0] < size:
            raise ValueError("ConvGemmStep: work too small")

    cdef void task(self, Py_ssize_t task, Py_ssize_t mp0, Py_ssize_t mp1, float *work,
                   const float *whole) noexcept nogil:
        """One (image, group, column panel) task, row panels [mp0, mp1) of the group, all K
        blocks: out[img, group rows, 16 pixels]. whole: the task's im2col matrix already built
        by im2col_band (K, ppi*16), or NULL to pack the panel into `work`."""
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
        self.epilogue(&epi, img, grp)
        pc = 0
        while pc < self.K:
            kc = min(self.kc, self.K - pc)
            if whole != NULL:
                bpanel = whole + pc * self.ppi * NR + j
                ldb = self.ppi * NR
            elif self.mode == MODE_POINTWISE and nr == NR:
                bpanel = xg + pc * self.hw_in + j
                ldb = self.hw_in
            elif self.mode == MODE_POINTWISE:
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

    cdef inline void epilogue(self, Epilogue *epi, Py_ssize_t img, Py_ssize_t grp) noexcept nogil:
        """The fused epilogue of one image and group (row index = channel in the group)."""
        epi.bias_row = &self.bias[grp * self.cog] if self.g.has_bias else NULL
        epi.bias_col = NULL
        epi.addend = &self.residual[img, grp * self.cog, 0, 0] if self.g.has_residual else NULL
        epi.ld_addend = self.hw_out
        epi.act, epi.alpha, epi.beta = self.g.act, self.g.alpha, self.g.beta

    cdef void band_task(self, Py_ssize_t task, Py_ssize_t mp0, Py_ssize_t mp1,
                        float *work) noexcept nogil:
        """One (image, group, band of output rows) task, row panels [mp0, mp1), all K blocks:
        each K block's im2col band is built in `work` (kc, ldb) and every 16-pixel panel of it
        multiplied by the row panels."""
        cdef ConvGeom *g = &self.g
        cdef Py_ssize_t img, grp, band, oh0, oh1, j0, npix, pc, kc, jp, nr, mp, i
        cdef const float *xg
        cdef const float *x_end = &self.x[0, 0, 0, 0] + g.n * g.c_in * self.hw_in
        cdef float *cbase
        cdef Epilogue epi
        img = task // (g.group * self.bands)
        grp = (task // self.bands) % g.group
        band = task % self.bands
        oh0 = band * self.band_rows
        oh1 = min(g.h_out, oh0 + self.band_rows)
        j0 = oh0 * g.w_out
        npix = (oh1 - oh0) * g.w_out
        xg = &self.x[img, grp * self.cig, 0, 0]
        cbase = &self.out[img, grp * self.cog, 0, 0] + j0
        self.epilogue(&epi, img, grp)
        pc = 0
        while pc < self.K:
            kc = min(self.kc, self.K - pc)
            im2col_band(xg, x_end, g, pc, kc, oh0, oh1, self.ldb, work)
            if (mp1 - mp0) * MR * kc > A_BLOCK_FLOATS:
                # the weights' K block would not stay in L2 across the pixel panels: take each
                # 6-row panel once (it stays in L1) over the whole band (in L2) instead
                for mp in range(mp0, mp1):
                    i = mp * MR
                    for jp in range((npix + NR - 1) // NR):
                        ukernel_6x16(kc, &self.ap[grp, mp, pc, 0], 1, MR, work + jp * NR,
                                     self.ldb, cbase + i * self.hw_out + jp * NR, self.hw_out,
                                     min(MR, self.cog - i), min(NR, npix - jp * NR), pc > 0,
                                     &epi if pc + kc == self.K else NULL, i, j0 + jp * NR)
            else:
                for jp in range((npix + NR - 1) // NR):
                    nr = min(NR, npix - jp * NR)
                    for mp in range(mp0, mp1):
                        i = mp * MR
                        ukernel_6x16(kc, &self.ap[grp, mp, pc, 0], 1, MR, work + jp * NR,
                                     self.ldb, cbase + i * self.hw_out + jp * NR, self.hw_out,
                                     min(MR, self.cog - i), nr, pc > 0,
                                     &epi if pc + kc == self.K else NULL, i, j0 + jp * NR)
            pc = pc + kc

    cdef void run(self) noexcept nogil:
        cdef bint band = self.mode == MODE_BAND
        cdef Py_ssize_t tasks = self.g.n * self.g.group * (self.bands if band else self.ppi)
        cdef Py_ssize_t macs = self.g.n * self.g.c_out * self.hw_out * self.K
        cdef Py_ssize_t nt = max(1, min(<Py_ssize_t>self.num_threads, self.slots))
        cdef Py_ssize_t t, total, chunks = 1, c
        cdef float *work = &self.work[0]
        cdef Py_ssize_t stride = self.slot_size
        nt = min(nt, max(1, macs // MIN_MACS_PER_THREAD))
        if tasks == 0:
            return
        if nt > 1 and tasks < 4 * nt and tasks % nt:
            # few tasks that do not divide evenly among the threads (one band; 3 bands on 2
            # threads, ResNet-18's 14x14 stride-2 conv): also split the rows nt ways, each part
            # building its own B, so every thread gets the same work
            chunks = min(self.mpanels, nt)
        total = tasks * chunks
        nt = min(nt, total)
        if self.mode == MODE_WHOLE:
            # small layer, one thread: one im2col matrix per image and group
            for t in range(tasks):
                if t % self.ppi == 0:
                    im2col_band(&self.x[t // (self.g.group * self.ppi),
                                        (t // self.ppi) % self.g.group * self.cig, 0, 0],
                                &self.x[0, 0, 0, 0] + self.g.n * self.g.c_in * self.hw_in,
                                &self.g, 0, self.K, 0, self.g.h_out, self.ppi * NR,
                                work + self.kc * NR)
                self.task(t, 0, self.mpanels, work, work + self.kc * NR)
        elif nt <= 1:
            for t in range(tasks):
                if band:
                    self.band_task(t, 0, self.mpanels, work)
                else:
                    self.task(t, 0, self.mpanels, work, NULL)
        elif chunks == 1:
            # enough tasks: contiguous ranges of them per thread (static), so a thread's
            # output rows are about the ones its counterpart in the next layer reads, from
            # its own caches (ResNet-18 batch 16 on 2 threads: 5-10% faster with the same
            # split in Winograd). The cost: a thread slowed by another process holds the
            # others up until the step ends.
            for t in prange(total, num_threads=nt, schedule="static"):
                if band:
                    self.band_task(t, 0, self.mpanels, work + threadid() * stride)
                else:
                    self.task(t, 0, self.mpanels, work + threadid() * stride, NULL)
        else:
            # few tasks, rows split too: dynamic balances the uneven parts
            for t in prange(total, num_threads=nt, schedule="dynamic"):
                c = t % chunks
                if band:
                    self.band_task(t // chunks, c * self.mpanels // chunks,
                                   (c + 1) * self.mpanels // chunks,
                                   work + threadid() * stride)
                else:
                    self.task(t // chunks, c * self.mpanels // chunks,
                              (c + 1) * self.mpanels // chunks,
                              work + threadid() * stride, NULL)


cpdef Py_ssize_t whole_im2col_floats(Py_ssize_t n, Py_ssize_t c_out, Py_ssize_t K,
                                     Py_ssize_t h_out, Py_ssize_t w_out, bint pointwise):
    """Floats of the whole-matrix im2col buffer a small layer uses (0: the layer does not).
    Small: single-threaded (under 2 * MIN_MACS_PER_THREAD multiply-adds) with an im2col matrix
    of at most WHOLE_IM2COL_MAX_FLOATS; pointwise convs need no im2col at all."""
    cdef Py_ssize_t ldb = (h_out * w_out + NR - 1) // NR * NR
    if pointwise or K * ldb > WHOLE_IM2COL_MAX_FLOATS:
        return 0
    if n * c_out * h_out * w_out * K >= 2 * <Py_ssize_t>MIN_MACS_PER_THREAD:
        return 0
    return K * ldb + NR


cpdef int gemm_conv_mode(Py_ssize_t n, Py_ssize_t c_out, Py_ssize_t K, Py_ssize_t h_out,
                         Py_ssize_t w_out, bint pointwise, Py_ssize_t kc):
    """How B is built (module docstring): pointwise in place, whole for small single-threaded
    layers, else bands of output rows."""
    if pointwise:
        return MODE_POINTWISE
    if whole_im2col_floats(n, c_out, K, h_out, w_out, pointwise) > 0:
        return MODE_WHOLE
    return MODE_BAND


cpdef Py_ssize_t gemm_band_rows(Py_ssize_t kc, Py_ssize_t h_out, Py_ssize_t w_out):
    """Output rows per band: a K block of the band holds at most BAND_FLOATS (one row at least)."""
    return max(1, min(h_out, BAND_FLOATS // max(1, kc * w_out)))


cpdef Py_ssize_t gemm_conv_slot(Py_ssize_t kc, Py_ssize_t K, Py_ssize_t h_out, Py_ssize_t w_out,
                                int mode):
    """Floats of per-thread scratch: a kc x 16 panel, or a band's K block (kc, ldb) + slack."""
    cdef Py_ssize_t ldb
    if mode == MODE_BAND:
        ldb = (gemm_band_rows(kc, h_out, w_out) * w_out + NR - 1) // NR * NR
        return whole_lines(kc * ldb + NR)
    return whole_lines(kc * NR)


def gemm_conv_scratch(Py_ssize_t kc, Py_ssize_t slots, Py_ssize_t n, Py_ssize_t c_out,
                      Py_ssize_t K, Py_ssize_t h_out, Py_ssize_t w_out, bint pointwise,
                      str mode=None):
    """Floats of scratch a ConvGemmStep needs: per thread slot a panel or a band, then the
    whole-matrix im2col of a small layer. mode: as ConvGemmStep."""
    cdef int m = (gemm_conv_mode(n, c_out, K, h_out, w_out, pointwise, kc) if mode is None
                  else GEMM_CONV_MODES.get(mode, MODE_PANELS))
    if m == MODE_WHOLE:
        return kc * NR + K * ((h_out * w_out + NR - 1) // NR * NR) + NR
    return slots * gemm_conv_slot(kc, K, h_out, w_out, m)


cdef class ConvGemmToBlockedStep(Step):
    """Group-1 conv from an NCHW input to an NCHW8c output (runtime/blocking.py), as a GEMM
    with pixels as rows: per band of output rows, the im2col band B (Kp, pixels) is built as
    in MODE_BAND, transposed 8x8 at a time into A (pixels, Kp) (Kp = K rounded up to 8, zero
    rows), and every 6-pixel tile times every 16-channel panel of W^T (ukernel_6x16_blk) is
    stored straight into the blocked output. No residual.

    x (n, c_in, h_in, w_in); wp: W^T (Kp, c_out) packed in 16-column panels (`pack_blocked_out`);
    bias16: (ceil(c_out/16)*16,) or None; out: flat blocked (n, c_out, h_out, w_out); work: at
    least slots * `gemm_to_blocked_slot(...)` floats."""
    cdef const float[:, :, :, ::1] x
    cdef const float[:, :, ::1] wp
    cdef const float[::1] bias
    cdef float[::1] out
    cdef float[::1] work
    cdef ConvGeom g
    cdef Py_ssize_t K, Kp, panels, band_rows, bands, ldb, slot_size, slots, hw_out
    cdef bint has_bias
    cdef int fin

    def __init__(self, const float[:, :, :, ::1] x, const float[:, :, ::1] wp, bias16,
                 float[::1] out, Py_ssize_t c_out, Py_ssize_t h_out, Py_ssize_t w_out, strides,
                 pads, dilations, Py_ssize_t k_h, Py_ssize_t k_w, int act=0, float alpha=0.0,
                 float beta=0.0, float[::1] work=None, Py_ssize_t slots=1):
        self.x, self.wp, self.out = x, wp, out
        self.g = make_geom(shape4(x), (c_out, x.shape[1], k_h, k_w), (x.shape[0], c_out, h_out, w_out),
                           strides, pads, dilations, 1, act, alpha, beta, bias16 is not None,
                           False)
        check_geom(self.g, x.shape[1])
        if c_out % 8 or out.shape[0] != x.shape[0] * c_out * h_out * w_out:
            raise ValueError("ConvGemmToBlockedStep: output must be blocked, c_out a multiple of 8")
        self.fin = finish_kind(act, alpha, beta)
        self.K = x.shape[1] * k_h * k_w
        self.Kp = (self.K + 7) // 8 * 8
        self.panels = (c_out + NR - 1) // NR
        if wp.shape[0] != self.panels or wp.shape[1] != self.Kp or wp.shape[2] != NR:
            raise ValueError("ConvGemmToBlockedStep: packed weights do not fit")
        self.has_bias = bias16 is not None
        self.bias = bias16 if bias16 is not None else np.zeros(1, np.float32)
        if self.has_bias and self.bias.shape[0] < self.panels * NR:
            raise ValueError("ConvGemmToBlockedStep: bias must be padded to 16 channels")
        self.hw_out = h_out * w_out
        self.band_rows = to_blocked_band_rows(self.K, h_out, w_out)
        self.bands = (h_out + self.band_rows - 1) // self.band_rows
        self.ldb = (self.band_rows * w_out + 7) // 8 * 8
        self.slot_size = gemm_to_blocked_slot(self.K, h_out, w_out)
        if slots < 1:
            raise ValueError("ConvGemmToBlockedStep: slots must be >= 1")
        self.slots = slots
        self.work = work if work is not None else np.zeros(self.slot_size * slots, np.float32)
        if self.work.shape[0] < self.slot_size * slots:
            raise ValueError("ConvGemmToBlockedStep: work too small")

    cdef void task(self, Py_ssize_t img, Py_ssize_t band, Py_ssize_t jp0, Py_ssize_t jp1,
                   float *work) noexcept nogil:
        cdef ConvGeom *g = &self.g
        cdef Py_ssize_t oh0 = band * self.band_rows, oh1, npix, p, q, kb, jp, mr, Kp = self.Kp
        cdef Py_ssize_t ldb = self.ldb, cb_out = g.c_out // 8
        cdef float *t = work
        cdef float *a = work + Kp * ldb + NR
        cdef float *ob
        cdef SplitEpilogue epi
        oh1 = min(g.h_out, oh0 + self.band_rows)
        npix = (oh1 - oh0) * g.w_out
        im2col_band(&self.x[img, 0, 0, 0], &self.x[0, 0, 0, 0] + g.n * g.c_in * g.h_in * g.w_in,
                    g, 0, self.K, oh0, oh1, ldb, t)
        for q in range(self.K * ldb, Kp * ldb):
            t[q] = 0.0
        # A (pixels, Kp) = B^T, 8x8 blocks
        p = 0
        while p < npix:
            for kb in range(0, Kp, 8):
                vf8_transpose8(t + kb * ldb + p, ldb, a + p * Kp + kb, Kp)
            p = p + 8
        ob = &self.out[0] + (img * cb_out * self.hw_out + oh0 * g.w_out) * 8
        epi.res = NULL
        epi.act, epi.alpha, epi.beta, epi.fin = g.act, g.alpha, g.beta, self.fin
        epi.stream = False
        for jp in range(jp0, jp1):
            epi.bias = &self.bias[jp * NR] if self.has_bias else NULL
            p = 0
            while p < npix:
                mr = min(MR, npix - p)
                ukernel_6x16_blk(Kp // 8, a + p * Kp, Kp, 8, &self.wp[jp, 0, 0],
                                 ob + (2 * jp * self.hw_out + p) * 8, 8, self.hw_out * 8, mr,
                                 jp * NR + NR <= g.c_out, False, &epi)
                p = p + MR

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t tasks = self.g.n * self.bands, chunks = 1, total, t, c
        cdef Py_ssize_t macs = self.g.n * self.g.c_out * self.hw_out * self.K
        cdef Py_ssize_t nt = max(1, min(<Py_ssize_t>self.num_threads, self.slots))
        cdef float *work = &self.work[0]
        cdef Py_ssize_t stride = self.slot_size
        nt = min(nt, max(1, macs // MIN_MACS_PER_THREAD))
        if tasks == 0:
            return
        if nt > 1 and tasks < 4 * nt:
            chunks = min(self.panels, (4 * nt + tasks - 1) // tasks)
        total = tasks * chunks
        nt = min(nt, total)
        if nt <= 1:
            for t in range(tasks):
                self.task(t // self.bands, t % self.bands, 0, self.panels, work)
        elif chunks == 1:
            # contiguous row bands per thread, as the blocked steps that read the output
            # split them (blocked.pyx, LOCAL_BANDS_PER_THREAD)
            for t in prange(tasks, num_threads=nt, schedule="static"):
                self.task(t // self.bands, t % self.bands, 0, self.panels,
                          work + threadid() * stride)
        else:
            for t in prange(total, num_threads=nt, schedule="dynamic"):
                c = t % chunks
                self.task((t // chunks) // self.bands, (t // chunks) % self.bands,
                          c * self.panels // chunks, (c + 1) * self.panels // chunks,
                          work + threadid() * stride)


cpdef Py_ssize_t to_blocked_band_rows(Py_ssize_t K, Py_ssize_t h_out, Py_ssize_t w_out):
    """Output rows per band of ConvGemmToBlockedStep: B and A of a band hold at most
    2*BAND_FLOATS (one row at least)."""
    cdef Py_ssize_t kp = (K + 7) // 8 * 8
    return max(1, min(h_out, BAND_FLOATS // max(1, kp * w_out)))


cpdef Py_ssize_t gemm_to_blocked_slot(Py_ssize_t K, Py_ssize_t h_out, Py_ssize_t w_out):
    """Floats of per-thread scratch of ConvGemmToBlockedStep: B (Kp, ldb) + slack, A (ldb, Kp)."""
    cdef Py_ssize_t kp = (K + 7) // 8 * 8
    cdef Py_ssize_t ldb = (to_blocked_band_rows(K, h_out, w_out) * w_out + 7) // 8 * 8
    return whole_lines(2 * kp * ldb + NR)


def pack_blocked_out(w):
    """W (c_out, c_in, k_h, k_w) -> W^T (Kp, c_out) zero-padded to Kp = K rounded up to 8 rows,
    in 16-column panels (ceil(c_out/16), Kp, 16)."""
    from fastcnn._kernels.gemm import pack_b_panels
    w = np.asarray(w, np.float32)
    c_out = w.shape[0]
    k = int(np.prod(w.shape[1:]))
    kp = (k + 7) // 8 * 8
    wt = np.zeros((kp, c_out), np.float32)
    wt[:k] = w.reshape(c_out, k).T
    return pack_b_panels(wt)


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
                alpha=0.0, beta=0.0, residual=None, kc=256, num_threads=1, mode=None):
    """Packed-GEMM NCHW convolution into `out` (tests and bench); arguments as conv2d_direct."""
    k_h, k_w = w.shape[2], w.shape[3]
    slots = max(1, num_threads)
    s = ConvGemmStep(x, pack_a_panels(w, group), bias, residual, out, strides, pads, dilations,
                     group, k_h, k_w, act, alpha, beta, kc, None, slots, mode)
    s.num_threads = num_threads
    s()

"""Kernels on NCHW8c ("blocked") tensors: the channels of a pixel come in blocks of 8, so each
(pixel, block) is one vector and convolutions over channels need no gathers or edge handling.

    blocked index of (b, c, p):  ((b * (C // 8) + c // 8) * pixels + p) * 8 + c % 8
    (C a multiple of 8; pixels = h*w; the tensor has the bytes of its NCHW shape)

The planner (runtime/blocking.py) blocks a tensor only when its producer and every consumer run
one of these kernels; model inputs and outputs stay NCHW.

    ReorderStep             NCHW <-> NCHW8c (8x8 transposes)
    PointwiseBlockedStep    1x1 stride-1 conv: GEMM with pixels as rows (ukernel_6x16_blk; the
                            last 24 channels ukernel_4x24_blk, a last 8 ukernel_12x8_blk)
    DepthwiseBlockedStep    one filter per channel, any kernel/stride/padding/dilation
    ExpandDepthwiseBlockedStep  a 1x1 conv and the 3x3 depthwise conv reading its output, the
                            1x1 conv's output computed row by row into the depthwise ring
    MaxPoolBlockedStep      max pool, any window, to NCHW8c or NCHW
    GlobalAvgBlockedStep    global average pool -> (n, C) (the NCHW (n, C, 1, 1) bytes)

Work splits never change a value's summation order: results are bit-identical for any thread
count.
"""
from cython.parallel cimport prange, threadid

from fastcnn._kernels.step cimport Step, threads_for
from fastcnn._kernels.simd cimport *
from fastcnn._kernels.simd_extra cimport vf8_transpose8, vf8_max_nan, vf8_nan_seen, vf8_nan_where
from libc.math cimport INFINITY
from fastcnn._kernels.conv_tile cimport ConvTileStep
from fastcnn._kernels.ukernel cimport (NR, team, whole_lines, SplitEpilogue, ukernel_6x16_blk,
                                       ukernel_12x8_blk, ukernel_4x24_blk, ukernel_2x16_blk,
                                       FIN_NONE, FIN_CLIP, finish_kind, put8, finish8)

import numpy as np

from fastcnn._kernels.gemm import pad_bias16   # (here for the callers that packed with blocked)

cdef enum:
    RING_MAX = 32       # depthwise: most padded input rows a task keeps
    TILE = 6            # pixels per micro-kernel tile (MR)
    BAND_TILES = 16     # tiles per pointwise task: a (96 pixels, kc) block of A stays in L2
    DW_PIXELS = 8       # depthwise: output pixels computed together (independent FMA chains)
    # With at least this many 96-pixel bands per thread, pointwise and depthwise steps split the
    # pixels statically, in contiguous ranges in the same order, so each thread mostly reads
    # what it wrote in the previous layer: on VMs whose two vCPUs sit on different cores, data
    # from the other core's cache costs about what DRAM does (MobileNetV2 batch 1 and 16 on 2
    # threads: 8-11% faster in that state, the same otherwise). Below it, dynamic scheduling
    # over bands and channel panels keeps the threads balanced.
    LOCAL_BANDS_PER_THREAD = 4
    # Max pool: one input float read counts as this many multiply-adds of work when it decides
    # how many threads to use (reading, not comparing, is most of a small pool's time)
    POOL_MACS_PER_READ = 16


cdef inline Py_ssize_t pixel_bands(Py_ssize_t hw) noexcept nogil:
    """Pointwise tasks per image: bands of TILE * BAND_TILES pixels."""
    return (hw + TILE * BAND_TILES - 1) // (TILE * BAND_TILES)


cpdef bint pointwise_splits_channels(Py_ssize_t n, Py_ssize_t hw, Py_ssize_t threads) noexcept nogil:
    """Whether PointwiseBlockedStep on n images of hw pixels splits its output channels, not
    its pixels, between `threads` threads (too few pixel bands: every thread then reads every
    input channel)."""
    return threads > 1 and n * pixel_bands(hw) < LOCAL_BANDS_PER_THREAD * threads


cdef inline void copy_floats(const float *s, float *d, Py_ssize_t n) noexcept nogil:
    """d[0:n] = s[0:n], n a multiple of 8."""
    cdef Py_ssize_t i = 0
    while i < n:
        vf8_store(d + i, vf8_load(s + i))
        i = i + 8


# ----------------------------------------------------------------------------- reorder
cdef void to_blocked(const float *x, float *y, Py_ssize_t c, Py_ssize_t hw) noexcept nogil:
    """One image: x (c, hw) NCHW -> y (c//8, hw, 8)."""
    cdef Py_ssize_t cb, p, i
    cdef const float *xs
    cdef float *ys
    for cb in range(c // 8):
        xs = x + cb * 8 * hw
        ys = y + cb * hw * 8
        p = 0
        while p + 8 <= hw:
            vf8_transpose8(xs + p, hw, ys + p * 8, 8)
            p = p + 8
        while p < hw:
            for i in range(8):
                ys[p * 8 + i] = xs[i * hw + p]
            p = p + 1


cdef void from_blocked(const float *x, float *y, Py_ssize_t c, Py_ssize_t hw) noexcept nogil:
    """One image: x (c//8, hw, 8) -> y (c, hw) NCHW."""
    cdef Py_ssize_t cb, p, i
    cdef const float *xs
    cdef float *ys
    for cb in range(c // 8):
        xs = x + cb * hw * 8
        ys = y + cb * 8 * hw
        p = 0
        while p + 8 <= hw:
            vf8_transpose8(xs + p * 8, 8, ys + p, hw)
            p = p + 8
        while p < hw:
            for i in range(8):
                ys[i * hw + p] = xs[p * 8 + i]
            p = p + 1


cdef class ReorderStep(Step):
    """x (n, c, hw) -> out, both flat: NCHW to NCHW8c (to_blocked) or back; c % 8 == 0."""
    cdef const float[::1] x
    cdef float[::1] out
    cdef Py_ssize_t n, c, hw
    cdef bint forward

    def __init__(self, const float[::1] x, float[::1] out, Py_ssize_t n, Py_ssize_t c,
                 Py_ssize_t hw, bint to_blocked=True):
        if c % 8 or n < 0 or hw < 0 or x.shape[0] != n * c * hw or out.shape[0] != n * c * hw:
            raise ValueError("ReorderStep: shapes do not fit")
        self.x, self.out, self.n, self.c, self.hw, self.forward = x, out, n, c, hw, to_blocked

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t b, size = self.c * self.hw
        cdef int nt = team(self.num_threads, self.n, self.n * size * 8, self.n)
        if size == 0 or self.n == 0:
            return
        if nt <= 1:
            for b in range(self.n):
                if self.forward:
                    to_blocked(&self.x[b * size], &self.out[b * size], self.c, self.hw)
                else:
                    from_blocked(&self.x[b * size], &self.out[b * size], self.c, self.hw)
        else:
            for b in prange(self.n, num_threads=nt, schedule="static"):
                if self.forward:
                    to_blocked(&self.x[b * size], &self.out[b * size], self.c, self.hw)
                else:
                    from_blocked(&self.x[b * size], &self.out[b * size], self.c, self.hw)


def reorder(x, bint to_blocked=True):
    """NCHW (n, c, h, w) float32 -> NCHW8c with the same shape (tests), or back."""
    x = np.ascontiguousarray(x, np.float32)
    out = np.empty_like(x)
    n, c = x.shape[0], x.shape[1]
    hw = x.size // max(1, n * c)
    ReorderStep(x.reshape(-1), out.reshape(-1), n, c, hw, to_blocked)()
    return out


# ----------------------------------------------------------------------------- pointwise
ctypedef void (*Tile4x24)(Py_ssize_t kb, const float *a, Py_ssize_t a_rs, Py_ssize_t a_bs,
                          const float *b0, const float *b1, float *c, Py_ssize_t ldc,
                          Py_ssize_t c_blk, Py_ssize_t mr, bint accumulate,
                          const SplitEpilogue *epi) noexcept nogil


cdef void tile4x24_call(Py_ssize_t kb, const float *a, Py_ssize_t a_rs, Py_ssize_t a_bs,
                        const float *b0, const float *b1, float *c, Py_ssize_t ldc,
                        Py_ssize_t c_blk, Py_ssize_t mr, bint accumulate,
                        const SplitEpilogue *epi) noexcept nogil:
    """ukernel_4x24_blk compiled on its own, called through a pointer the step holds: inlined
    into the pointwise task loop, its sixteen live vectors changed the register allocation of
    the 6x16 tiles beside it (the expand layers 2-4% slower), and it spilled itself."""
    ukernel_4x24_blk(kb, a, a_rs, a_bs, b0, b1, c, ldc, c_blk, mr, accumulate, epi)


cdef inline Py_ssize_t pw_panel_span(Py_ssize_t jp, Py_ssize_t jp1, Py_ssize_t panels,
                                     Py_ssize_t c_out, Py_ssize_t *rows) noexcept nogil:
    """The tile for the channels of panel jp (of [.., jp1)): returns the panels it covers and
    sets *rows. The last 24 channels (a full panel and a half one) go in 4x24 tiles, where 6x16
    and 12x8 tiles would run the half panel at 13 loads per 12 FMAs (144->24 and 96->24 at
    56x56: 7-12% faster); a last panel of 8 in 12x8 tiles; the others in 6x16 tiles."""
    if jp + 2 == panels and jp + 1 < jp1 and c_out % NR == 8:
        rows[0] = 4
        return 2
    rows[0] = 2 * TILE if jp * NR + NR > c_out else TILE
    return 1


cdef inline void pw_tile(Tile4x24 tile4x24, Py_ssize_t span, Py_ssize_t rows, Py_ssize_t kb,
                         const float *a, Py_ssize_t a_bs, const float *b0, const float *b1,
                         float *c, Py_ssize_t c_blk, Py_ssize_t mr, bint accumulate,
                         const SplitEpilogue *epi) noexcept nogil:
    """One tile of a blocked pointwise conv as chosen by pw_panel_span: C (mr pixels, the span's
    channels) (+)= A (mr pixels, 8*kb channels) @ B; A's pixels 8 floats apart and K blocks a_bs
    apart, C's pixels 8 apart and channel blocks c_blk apart; b0 (and b1 for a 4x24 tile) the
    panels' rows for this K block. A 6-row tile's last one or two pixels run in 2x16."""
    if span == 2:
        tile4x24(kb, a, 8, a_bs, b0, b1, c, 8, c_blk, mr, accumulate, epi)
    elif rows == 2 * TILE:
        ukernel_12x8_blk(kb, a, 8, a_bs, b0, c, 8, mr, accumulate, epi)
    elif mr <= 2:
        ukernel_2x16_blk(kb, a, 8, a_bs, b0, c, 8, c_blk, mr, True, accumulate, epi)
    else:
        ukernel_6x16_blk(kb, a, 8, a_bs, b0, c, 8, c_blk, mr, True, accumulate, epi)


cdef class PointwiseBlockedStep(Step):
    """1x1 stride-1 unpadded conv on blocked tensors:
    out[b, co, p] = act(sum_ci x[b, ci, p] * w[co, ci] + bias[co] + residual[b, co, p]).

    x: flat blocked (n, c_in, hw); wp: W^T packed in 16-channel panels (ceil(c_out/16), c_in,
    16) (gemm.pack_b_panels); bias: (ceil(c_out/16)*16,) zero-padded, or None; residual and out:
    flat blocked (n, c_out, hw). kc: K block (a multiple of 8). Tasks: (image, band of 96
    pixels, range of channel panels). stream: write out with non-temporal stores (for outputs
    too large to stay cached until the next layer; ignored unless out is 32-byte aligned; the
    `stream` attribute tells whether it is on)."""
    cdef const float[::1] x
    cdef const float[:, :, ::1] wp
    cdef const float[::1] bias
    cdef const float[::1] residual
    cdef float[::1] out
    cdef Py_ssize_t n, c_in, c_out, hw, kc, panels, bands
    cdef Tile4x24 tile4x24
    cdef bint has_bias, has_res
    cdef readonly bint stream
    cdef int act, fin
    cdef float alpha, beta

    def __init__(self, const float[::1] x, const float[:, :, ::1] wp, bias, residual,
                 float[::1] out, Py_ssize_t n, Py_ssize_t c_in, Py_ssize_t c_out, Py_ssize_t hw,
                 int act=0, float alpha=0.0, float beta=0.0, Py_ssize_t kc=256,
                 bint stream=False):
        self.panels = (c_out + NR - 1) // NR
        self.tile4x24 = tile4x24_call
        if c_in % 8 or c_out % 8 or c_in < 8 or c_out < 8 or hw < 1 or n < 0:
            raise ValueError("PointwiseBlockedStep: channels must be positive multiples of 8")
        if x.shape[0] != n * c_in * hw or out.shape[0] != n * c_out * hw:
            raise ValueError("PointwiseBlockedStep: x/out sizes")
        if wp.shape[0] != self.panels or wp.shape[1] != c_in or wp.shape[2] != NR:
            raise ValueError("PointwiseBlockedStep: packed weights do not fit")
        if kc < 8 or kc % 8:
            raise ValueError("PointwiseBlockedStep: kc must be a positive multiple of 8")
        self.x, self.wp, self.out = x, wp, out
        self.has_bias, self.has_res = bias is not None, residual is not None
        self.bias = bias if bias is not None else np.zeros(1, np.float32)
        self.residual = residual if residual is not None else np.zeros(1, np.float32)
        if self.has_bias and self.bias.shape[0] < self.panels * NR:
            raise ValueError("PointwiseBlockedStep: bias must be padded to 16 channels")
        if self.has_res and self.residual.shape[0] != out.shape[0]:
            raise ValueError("PointwiseBlockedStep: residual size")
        self.n, self.c_in, self.c_out, self.hw, self.kc = n, c_in, c_out, hw, kc
        self.bands = pixel_bands(hw)
        # non-temporal stores need 32-byte aligned vectors (arena tensors are 64-byte aligned)
        self.stream = stream and n > 0 and (<size_t>&out[0]) % 32 == 0
        self.act, self.alpha, self.beta = act, alpha, beta
        self.fin = finish_kind(act, alpha, beta)

    cdef void task(self, Py_ssize_t img, Py_ssize_t band, Py_ssize_t jp0,
                   Py_ssize_t jp1) noexcept nogil:
        """Pixels of `band` of image `img`, channel panels [jp0, jp1), every K block."""
        cdef Py_ssize_t hw = self.hw, p0, p1, p, pc, kcc, jp, mr, off, span, rows
        cdef const float *xb = &self.x[img * self.c_in * hw]
        cdef float *ob = &self.out[img * self.c_out * hw]
        cdef const float *rb = &self.residual[img * self.c_out * hw] if self.has_res else NULL
        cdef SplitEpilogue epi
        cdef bint last
        cdef const char *nxt
        cdef Py_ssize_t nxt_bytes, pf_at, pf_step, tiles
        p0 = band * TILE * BAND_TILES
        p1 = min(hw, p0 + TILE * BAND_TILES)
        epi.act, epi.alpha, epi.beta, epi.fin = self.act, self.alpha, self.beta, self.fin
        epi.stream = self.stream
        pc = 0
        while pc < self.c_in:
            kcc = min(self.kc, self.c_in - pc)
            last = pc + kcc == self.c_in
            jp = jp0
            while jp < jp1:
                epi.bias = &self.bias[jp * NR] if self.has_bias else NULL
                span = pw_panel_span(jp, jp1, self.panels, self.c_out, &rows)
                # The weights of the next panel (or K block) are fetched while this one runs, a
                # share before each tile: with small images (7x7, 14x14) every panel's weights
                # are read by few tiles, and waiting for them from L3 or memory cost 10-15% of
                # those layers (MobileNetV2 b1: 2-3% of the run; a burst of prefetches at the
                # panel start was 3-6% slower than none).
                nxt = NULL
                nxt_bytes = 0
                if jp + span < jp1:
                    nxt = <const char *>&self.wp[jp + span, pc, 0]
                    nxt_bytes = kcc * NR * 4
                elif not last:
                    nxt = <const char *>&self.wp[jp0, pc + kcc, 0]
                    nxt_bytes = min(self.kc, self.c_in - pc - kcc) * NR * 4
                tiles = (p1 - p0 + rows - 1) // rows
                pf_step = (nxt_bytes // 64 + tiles - 1) // tiles * 64
                pf_at = 0
                p = p0
                while p < p1:
                    prefetch_share(nxt, pf_at, pf_at + pf_step, nxt_bytes)
                    pf_at = pf_at + pf_step
                    mr = min(rows, p1 - p)
                    off = (jp * 2 * hw + p) * 8
                    epi.res = rb + off if rb != NULL else NULL
                    pw_tile(self.tile4x24, span, rows, kcc // 8, xb + (pc * hw + p * 8), hw * 8,
                            &self.wp[jp, pc, 0], &self.wp[jp + span - 1, pc, 0], ob + off,
                            hw * 8, mr, pc > 0, &epi if last else NULL)
                    p = p + rows
                jp = jp + span
            pc = pc + kcc
        if self.stream:
            vf8_store_fence()

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t tasks = self.n * self.bands, jchunks = 1, total, t, c, img, band
        cdef Py_ssize_t macs = self.n * self.hw * self.c_in * self.c_out
        cdef int nt = team(self.num_threads, 1 << 20, macs, self.n * self.bands * self.panels)
        if tasks == 0:
            return
        if pointwise_splits_channels(self.n, self.hw, nt):
            # few pixel bands (7x7 and 14x14 images): split the channel panels instead
            jchunks = min(self.panels, (4 * nt + tasks - 1) // tasks)
        total = tasks * jchunks
        if nt <= 1:
            for t in range(tasks):
                self.task(t // self.bands, t % self.bands, 0, self.panels)
        elif jchunks == 1:
            # enough bands: each thread takes a contiguous range of them (see LOCAL_BANDS_...)
            for t in prange(tasks, num_threads=nt, schedule="static"):
                self.task(t // self.bands, t % self.bands, 0, self.panels)
        elif self.panels >= nt:
            # Thread c computes the c-th range of output channels for every pixel, and the
            # depthwise conv that reads them splits its channels the same way (run below):
            # the data stays in one core's cache (MobileNetV2 b1, 2 threads: 5-6% faster
            # than dynamic (band, panel range) tasks).
            for c in prange(nt, num_threads=nt, schedule="static"):
                for t in range(tasks):
                    self.task(t // self.bands, t % self.bands, c * self.panels // nt,
                              (c + 1) * self.panels // nt)
        else:
            for t in prange(total, num_threads=nt, schedule="dynamic"):
                c = t % jchunks
                img = (t // jchunks) // self.bands
                band = (t // jchunks) % self.bands
                self.task(img, band, c * self.panels // jchunks,
                          (c + 1) * self.panels // jchunks)


# ----------------------------------------------------------------------------- depthwise
cdef inline void taps3(const float *xr, const float *w, Py_ssize_t step8, vf8 *acc) noexcept nogil:
    """acc[u] += sum_kw xr[u*step8 + kw*8] * w[kw*8] for kw = 0, 1, 2 in order (one filter row
    of a 3-wide, dilation-1 kernel for DW_PIXELS pixels)."""
    cdef vf8 w0 = vf8_load(w), w1 = vf8_load(w + 8), w2 = vf8_load(w + 16)
    cdef Py_ssize_t u
    for u in range(DW_PIXELS):
        acc[u] = vf8_fmadd(vf8_load(xr + u * step8), w0, acc[u])
        acc[u] = vf8_fmadd(vf8_load(xr + u * step8 + 8), w1, acc[u])
        acc[u] = vf8_fmadd(vf8_load(xr + u * step8 + 16), w2, acc[u])


cdef inline void column5(vf8 xv, const vf8 *wt, vf8 *acc, Py_ssize_t j) noexcept nogil:
    """acc[j - kw] += xv * wt[kw] for the taps kw = 0..4 whose pixel j - kw is in the group
    (xv: input column j of a stride-1 row; j is a constant where it is inlined)."""
    cdef Py_ssize_t kw
    for kw in range(5):
        if 0 <= j - kw < DW_PIXELS:
            acc[j - kw] = vf8_fmadd(xv, wt[kw], acc[j - kw])


cdef inline void taps5_s1(const float *xr, const float *w, vf8 *acc) noexcept nogil:
    """acc[u] += sum_kw xr[(u + kw)*8] * w[kw*8] for kw = 0..4 in order (one filter row of a
    5-wide, stride-1, dilation-1 kernel for DW_PIXELS = 8 pixels). Each input column is loaded
    once and multiplied into every sum it feeds (12 loads for 40 multiply-adds, against 40):
    the eight sums, five weights and the column fit in the 16 vector registers, while loading
    per tap let gcc merge the loads itself and spill (25% slower). The twelve columns are
    written out so that every index is a constant whatever gcc's unrolling limits decide (a
    loop over them ran 1.5x slower or not, depending on how its body was phrased). Columns go
    left to right, so each sum still adds its taps in the order kw. (The same for 3-wide rows
    gained nothing.)"""
    cdef vf8 wt[5]
    wt[0], wt[1], wt[2] = vf8_load(w), vf8_load(w + 8), vf8_load(w + 16)
    wt[3], wt[4] = vf8_load(w + 24), vf8_load(w + 32)
    column5(vf8_load(xr), wt, acc, 0)
    column5(vf8_load(xr + 8), wt, acc, 1)
    column5(vf8_load(xr + 16), wt, acc, 2)
    column5(vf8_load(xr + 24), wt, acc, 3)
    column5(vf8_load(xr + 32), wt, acc, 4)
    column5(vf8_load(xr + 40), wt, acc, 5)
    column5(vf8_load(xr + 48), wt, acc, 6)
    column5(vf8_load(xr + 56), wt, acc, 7)
    column5(vf8_load(xr + 64), wt, acc, 8)
    column5(vf8_load(xr + 72), wt, acc, 9)
    column5(vf8_load(xr + 80), wt, acc, 10)
    column5(vf8_load(xr + 88), wt, acc, 11)


cdef inline void taps5_s2(const float *xr, const float *w, vf8 *acc) noexcept nogil:
    """acc[u] += sum_kw xr[(2*u + kw)*8] * w[kw*8] for kw = 0..4 in order (a 5-wide filter row
    at stride 2). One tap at a time for all pixels: with few columns shared between pixels,
    loading per tap keeps one weight and the eight sums in registers."""
    cdef vf8 wv
    cdef Py_ssize_t u, kw
    for kw in range(5):
        wv = vf8_load(w + kw * 8)
        for u in range(DW_PIXELS):
            acc[u] = vf8_fmadd(vf8_load(xr + u * 16 + kw * 8), wv, acc[u])


cdef inline void taps3x3(const float *const *rows, Py_ssize_t kh_lo, Py_ssize_t kh_hi,
                         Py_ssize_t g0, const float *wk, Py_ssize_t step8,
                         vf8 *acc) noexcept nogil:
    """acc[u] += the taps of filter rows [kh_lo, kh_hi) for the group of DW_PIXELS pixels from
    output column g0 (rows[kh]: padded input row, column iw at iw + pad_left), in the order
    (kh, kw). Strides 1 and 2 run with constant offsets: a runtime stride needs a register per
    pixel offset, which spilled (14x14 stride 1 12% slower)."""
    cdef Py_ssize_t kh
    if step8 == 8:
        for kh in range(kh_lo, kh_hi):
            taps3(rows[kh] + g0 * 8, wk + kh * 24, 8, acc)
    elif step8 == 16:
        for kh in range(kh_lo, kh_hi):
            taps3(rows[kh] + g0 * 16, wk + kh * 24, 16, acc)
    else:
        for kh in range(kh_lo, kh_hi):
            taps3(rows[kh] + g0 * step8, wk + kh * 24, step8, acc)


cdef void row3x3_narrow(const float *const *rows, Py_ssize_t kh_lo, Py_ssize_t kh_hi,
                        const float *wk, vf8 vb, Py_ssize_t w_out, Py_ssize_t step8,
                        float *orow, const float *rrow, int fin, vf8 lo, vf8 hi, int act,
                        float alpha, float beta, bint stream) noexcept nogil:
    """row3x3 for a row narrower than a group (w_out < DW_PIXELS): one group from the row's
    start, its extra lanes reading the ring's zero padding (the rings are wide enough for a
    whole group) and not stored."""
    cdef vf8 acc[DW_PIXELS]
    cdef Py_ssize_t u
    for u in range(DW_PIXELS):
        acc[u] = vb
    taps3x3(rows, kh_lo, kh_hi, 0, wk, step8, acc)
    for u in range(w_out):
        finish8(acc[u], orow + u * 8, rrow + u * 8 if rrow != NULL else NULL, fin, lo, hi, act,
                alpha, beta, stream)


cdef void row3x3(const float *const *rows, Py_ssize_t kh_lo, Py_ssize_t kh_hi,
                 const float *wk, vf8 vb, Py_ssize_t w_out, Py_ssize_t step8, float *orow,
                 const float *rrow, int fin, vf8 lo, vf8 hi, int act, float alpha,
                 float beta, bint stream) noexcept nogil:
    """One output row (w_out >= DW_PIXELS) of a 3x3, dilation-1 depthwise conv from padded
    rows (rows[kh]: the padded input row of tap row kh, column iw at iw + pad_left): groups of
    DW_PIXELS pixels, the last one shifted left to end at the row's end."""
    cdef vf8 acc[DW_PIXELS]
    cdef Py_ssize_t g0 = 0, u
    while g0 < w_out:
        if g0 + DW_PIXELS > w_out:
            g0 = w_out - DW_PIXELS
        for u in range(DW_PIXELS):
            acc[u] = vb
        taps3x3(rows, kh_lo, kh_hi, g0, wk, step8, acc)
        if rrow == NULL and fin == FIN_CLIP:
            for u in range(DW_PIXELS):
                put8(orow + (g0 + u) * 8, vf8_min(vf8_max(acc[u], lo), hi), stream)
        elif rrow == NULL and fin == FIN_NONE:
            for u in range(DW_PIXELS):
                put8(orow + (g0 + u) * 8, acc[u], stream)
        else:
            for u in range(DW_PIXELS):
                finish8(acc[u], orow + (g0 + u) * 8, rrow + (g0 + u) * 8 if rrow != NULL else NULL,
                        fin, lo, hi, act, alpha, beta, stream)
        g0 = g0 + DW_PIXELS


cdef void row5(const float *const *rows, Py_ssize_t kh_lo, Py_ssize_t kh_hi, const float *wk,
               vf8 vb, Py_ssize_t w_out, Py_ssize_t sw, float *orow, const float *rrow, int fin,
               vf8 lo, vf8 hi, int act, float alpha, float beta, bint stream) noexcept nogil:
    """One output row of a 5-wide, dilation-1 depthwise conv at stride sw (1 or 2) from padded
    rows (rows[kh] as in row3x3): groups of DW_PIXELS pixels, the last one shifted left to end
    at the row's end; a row narrower than a group is one group from its start whose extra
    lanes read the ring's zero padding (the rings are wide enough for a whole group) and are
    not stored. Its own function, as row3x3: taps5_s1's register allocation inside the generic
    loop of DepthwiseBlockedStep.plane changed with unrelated edits there (20% either way)."""
    cdef vf8 acc[DW_PIXELS]
    cdef Py_ssize_t g0 = 0, u, kh, count = min(w_out, DW_PIXELS)
    while g0 < w_out:
        if g0 + DW_PIXELS > w_out:
            g0 = max(0, w_out - DW_PIXELS)
        for u in range(DW_PIXELS):
            acc[u] = vb
        for kh in range(kh_lo, kh_hi):
            if sw == 1:
                taps5_s1(rows[kh] + g0 * 8, wk + kh * 40, acc)
            else:
                taps5_s2(rows[kh] + g0 * 16, wk + kh * 40, acc)
        for u in range(count):
            finish8(acc[u], orow + (g0 + u) * 8, rrow + (g0 + u) * 8 if rrow != NULL else NULL,
                    fin, lo, hi, act, alpha, beta, stream)
        g0 = g0 + DW_PIXELS


def window_args(str who, x_size, out_size, shape_in, shape_out, kernel, strides, pads,
                dilations):
    """The checked geometry of a windowed op on blocked tensors (depthwise conv, max pool):
    (n, c, h_in, w_in, h_out, w_out, k_h, k_w, sh, sw, pt, pl, dh, dw). shape_in/shape_out:
    (n, c, h, w); pads (top, left); x_size/out_size: the flat buffers' lengths."""
    n, c, h_in, w_in = shape_in
    n2, c2, h_out, w_out = shape_out
    k_h, k_w = kernel
    sh, sw = strides
    pt, pl = pads[0], pads[1]
    dh, dw = dilations
    if n2 != n or c2 != c or c % 8 or c < 8 or n < 0:
        raise ValueError(f"{who}: channels must be a positive multiple of 8")
    if min(k_h, k_w, sh, sw, dh, dw) < 1 or min(pt, pl) < 0:
        raise ValueError(f"{who}: bad kernel/stride/dilation/pads")
    if min(h_in, w_in, h_out, w_out) < 1:
        raise ValueError(f"{who}: empty image")
    if x_size != n * c * h_in * w_in or out_size != n * c * h_out * w_out:
        raise ValueError(f"{who}: x/out sizes")
    return n, c, h_in, w_in, h_out, w_out, k_h, k_w, sh, sw, pt, pl, dh, dw


cdef class DepthwiseBlockedStep(Step):
    """Depthwise conv (one filter per channel) on blocked tensors, any kernel, stride, padding
    and dilation: out[b, c, oh, ow] = act(bias[c] + residual + sum_{kh, kw} x[b, c, ih, iw] *
    w[c, kh, kw]) over the taps inside the input, summed in the order (kh, kw).

    x: flat blocked (n, c, h_in, w_in); wb: (c//8, k_h*k_w, 8) (`pack_depthwise_blocked`);
    bias (c,) or None; residual and out: flat blocked (n, c, h_out, w_out); work: at least
    slots * `depthwise_blocked_scratch(...)` floats (0 with ring=False).

    Each output row goes in groups of DW_PIXELS pixels (the last group shifted left to end at
    the row's end, or repeating the last pixel in rows narrower than a group: recomputed values
    are identical), each group with DW_PIXELS independent FMA chains. The input rows a group
    reads come from a per-thread ring of zero-padded row copies (each input row copied once per
    task), so every tap is a plain load; with ring=False (tests, or a ring too tall) groups at
    the left/right edge read a zero vector for taps outside the row instead. stream: as in
    PointwiseBlockedStep."""
    cdef const float[::1] x
    cdef const float[:, :, ::1] wb
    cdef const float[::1] bias
    cdef const float[::1] residual
    cdef float[::1] out
    cdef float[::1] work
    cdef Py_ssize_t n, c, h_in, w_in, h_out, w_out, k_h, k_w, sh, sw, pt, pl, dh, dw
    cdef Py_ssize_t ow_lo, ow_hi, ring_rows, wp, slot_size, slots
    cdef Py_ssize_t in_bands
    cdef Py_ssize_t[::1] ring_slot     # input row ih -> its ring slot, ih % ring_rows
    cdef bint has_bias, has_res, ring
    cdef readonly bint stream
    cdef int act
    cdef float alpha, beta

    def __init__(self, const float[::1] x, const float[:, :, ::1] wb, bias, residual,
                 float[::1] out, shape_in, shape_out, kernel, strides, pads, dilations,
                 int act=0, float alpha=0.0, float beta=0.0, float[::1] work=None,
                 Py_ssize_t slots=1, bint ring=True, bint stream=False):
        """shape_in (n, c, h_in, w_in), shape_out (n, c, h_out, w_out), pads (top, left)."""
        (self.n, self.c, self.h_in, self.w_in, self.h_out, self.w_out, self.k_h, self.k_w,
         self.sh, self.sw, self.pt, self.pl, self.dh, self.dw) = window_args(
            "DepthwiseBlockedStep", x.shape[0], out.shape[0], shape_in, shape_out, kernel,
            strides, pads, dilations)
        if wb.shape[0] != self.c // 8 or wb.shape[1] != self.k_h * self.k_w or wb.shape[2] != 8:
            raise ValueError("DepthwiseBlockedStep: packed weights do not fit")
        if slots < 1:
            raise ValueError("DepthwiseBlockedStep: slots must be >= 1")
        self.x, self.wb, self.out = x, wb, out
        self.stream = stream and self.n > 0 and (<size_t>&out[0]) % 32 == 0
        # the pointwise producer of x splits it statically when it has this many bands
        self.in_bands = self.n * pixel_bands(self.h_in * self.w_in)
        self.has_bias, self.has_res = bias is not None, residual is not None
        self.bias = bias if bias is not None else np.zeros(1, np.float32)
        self.residual = residual if residual is not None else np.zeros(1, np.float32)
        if self.has_bias and self.bias.shape[0] != self.c:
            raise ValueError("DepthwiseBlockedStep: bias size")
        if self.has_res and self.residual.shape[0] != out.shape[0]:
            raise ValueError("DepthwiseBlockedStep: residual size")
        self.act, self.alpha, self.beta = act, alpha, beta
        # interior columns: every tap inside the row (0 <= ow*sw - pl, last tap < w_in)
        span = (self.k_w - 1) * self.dw
        self.ow_lo = min(self.w_out, (self.pl + self.sw - 1) // self.sw)
        hi = (self.w_in - 1 - span + self.pl) // self.sw + 1 if self.w_in - 1 - span + self.pl >= 0 else 0
        self.ow_hi = max(self.ow_lo, min(self.w_out, hi))
        self.ring_rows, self.wp = depthwise_ring(shape_in, shape_out, kernel, strides, pads,
                                                 dilations)
        self.ring = ring and self.ring_rows > 0
        self.ring_slot = np.arange(max(1, self.h_in), dtype=np.intp) % max(1, self.ring_rows)
        self.slot_size = whole_lines(self.ring_rows * self.wp * 8) if self.ring else 0
        self.slots = slots
        self.work = work if work is not None else np.zeros(max(1, self.slot_size * slots), np.float32)
        if self.work.shape[0] < self.slot_size * slots:
            raise ValueError("DepthwiseBlockedStep: work too small")

    cdef void plane(self, Py_ssize_t img, Py_ssize_t cb, Py_ssize_t oh0, Py_ssize_t oh1,
                    float *ring) noexcept nogil:
        """Output rows [oh0, oh1) of channel block cb of image img; ring: this thread's row
        ring (ring_rows rows of wp pixels), or NULL for the zero-vector edges."""
        cdef Py_ssize_t plane = img * (self.c // 8) + cb
        cdef const float *xb = &self.x[plane * self.h_in * self.w_in * 8]
        cdef float *ob = &self.out[plane * self.h_out * self.w_out * 8]
        cdef const float *rb = (&self.residual[plane * self.h_out * self.w_out * 8]
                                if self.has_res else NULL)
        cdef const float *wk = &self.wb[cb, 0, 0]
        cdef vf8 vb = vf8_load(&self.bias[cb * 8]) if self.has_bias else vf8_zero()
        cdef vf8 acc[DW_PIXELS]
        cdef Py_ssize_t px[DW_PIXELS]
        cdef Py_ssize_t pofs[DW_PIXELS]
        cdef const float *src[DW_PIXELS]
        cdef Py_ssize_t slot_row[RING_MAX]
        cdef float zero8[8]
        cdef vf8 wv
        cdef const float *xr
        cdef const float *rows[RING_MAX]
        cdef Py_ssize_t oh, g0, ih0, ih, iw, kh, kw, kh_lo, kh_hi, u, slot, w_out = self.w_out
        cdef Py_ssize_t step8 = self.sw * 8, dw8 = self.dw * 8, k_w = self.k_w, w_in = self.w_in
        cdef Py_ssize_t sw = self.sw, pl = self.pl, dw = self.dw, ow_lo = self.ow_lo
        cdef Py_ssize_t ow_hi = self.ow_hi, wp8 = self.wp * 8, nring = self.ring_rows
        cdef int act = self.act, fin = finish_kind(self.act, self.alpha, self.beta)
        cdef float alpha = self.alpha, beta = self.beta
        cdef vf8 lo = vf8_set1(alpha), hi = vf8_set1(beta)
        cdef float *orow
        cdef const float *rrow
        cdef bint inside, three = k_w == 3 and dw == 1
        cdef bint five = k_w == 5 and dw == 1 and sw <= 2
        cdef bint ring3x3 = three and self.k_h == 3
        cdef bint stream = self.stream
        cdef const Py_ssize_t *ring_slot = &self.ring_slot[0]
        vf8_store(zero8, vf8_zero())
        if ring != NULL:
            # padding columns stay zero: row copies write only [pl, pl + w_in)
            vf8_zero_fill(ring, nring * wp8)
            for slot in range(nring):
                slot_row[slot] = -1
        for oh in range(oh0, oh1):
            ih0 = oh * self.sh - self.pt
            # taps kh with 0 <= ih0 + kh*dh < h_in
            kh_lo = (-ih0 + self.dh - 1) // self.dh if ih0 < 0 else 0
            # (no integer division per row: an idiv per row and tap was a fifth of a 14x14 layer)
            if ih0 >= self.h_in:
                kh_hi = 0
            elif self.dh == 1:
                kh_hi = min(self.k_h, self.h_in - ih0)
            else:
                kh_hi = min(self.k_h, (self.h_in - ih0 + self.dh - 1) // self.dh)
            if ring != NULL:
                for kh in range(kh_lo, kh_hi):
                    ih = ih0 + kh * self.dh
                    slot = ring_slot[ih]
                    if slot_row[slot] != ih:
                        copy_floats(xb + ih * w_in * 8, ring + slot * wp8 + pl * 8, w_in * 8)
                        slot_row[slot] = ih
                    rows[kh] = ring + slot * wp8
                if ring3x3 and w_out >= DW_PIXELS:
                    row3x3(rows, kh_lo, kh_hi, wk, vb, w_out, step8, ob + oh * w_out * 8,
                           rb + oh * w_out * 8 if rb != NULL else NULL, fin, lo, hi, act, alpha,
                           beta, stream)
                    continue
                if ring3x3:
                    row3x3_narrow(rows, kh_lo, kh_hi, wk, vb, w_out, step8, ob + oh * w_out * 8,
                                  rb + oh * w_out * 8 if rb != NULL else NULL, fin, lo, hi, act,
                                  alpha, beta, stream)
                    continue
                if five:
                    row5(rows, kh_lo, kh_hi, wk, vb, w_out, sw, ob + oh * w_out * 8,
                         rb + oh * w_out * 8 if rb != NULL else NULL, fin, lo, hi, act, alpha,
                         beta, stream)
                    continue
            g0 = 0
            while g0 < w_out:
                if g0 + DW_PIXELS > w_out:
                    g0 = max(0, w_out - DW_PIXELS)
                for u in range(DW_PIXELS):
                    px[u] = min(g0 + u, w_out - 1)
                    pofs[u] = (px[u] - g0) * step8   # (lanes past a narrow row repeat its end)
                    acc[u] = vb
                inside = ring != NULL or (g0 >= ow_lo and g0 + DW_PIXELS <= ow_hi)
                for kh in range(kh_lo, kh_hi):
                    if inside:
                        if ring != NULL:   # padded row: column iw at iw + pl
                            xr = rows[kh] + g0 * step8
                        else:
                            xr = xb + ((ih0 + kh * self.dh) * w_in + g0 * sw - pl) * 8
                        if three and w_out >= DW_PIXELS:
                            if sw == 1:
                                taps3(xr, wk + kh * 24, 8, acc)
                            else:
                                taps3(xr, wk + kh * 24, step8, acc)
                            continue
                        for kw in range(k_w):
                            wv = vf8_load(wk + (kh * k_w + kw) * 8)
                            for u in range(DW_PIXELS):
                                acc[u] = vf8_fmadd(vf8_load(xr + pofs[u] + kw * dw8), wv, acc[u])
                    else:
                        xr = xb + (ih0 + kh * self.dh) * w_in * 8
                        for kw in range(k_w):
                            wv = vf8_load(wk + (kh * k_w + kw) * 8)
                            for u in range(DW_PIXELS):
                                iw = px[u] * sw - pl + kw * dw
                                src[u] = xr + iw * 8 if 0 <= iw < w_in else zero8
                            for u in range(DW_PIXELS):
                                acc[u] = vf8_fmadd(vf8_load(src[u]), wv, acc[u])
                orow = ob + oh * w_out * 8
                rrow = rb + oh * w_out * 8 if rb != NULL else NULL
                for u in range(DW_PIXELS):
                    finish8(acc[u], orow + px[u] * 8, rrow + px[u] * 8 if rrow != NULL else NULL,
                            fin, lo, hi, act, alpha, beta, stream)
                g0 = g0 + DW_PIXELS
        if stream:
            vf8_store_fence()

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t planes = self.n * (self.c // 8), t, parts = 1
        cdef Py_ssize_t macs = planes * 8 * self.h_out * self.w_out * self.k_h * self.k_w
        # a depthwise multiply-add costs about four of a GEMM's (loads, not FMAs, bound it), and
        # its input, written by a 2-thread pointwise conv, is half in the other core's cache
        cdef int nt = team(self.num_threads, self.slots, 4 * macs, planes * self.h_out)
        cdef float *work = &self.work[0]
        cdef Py_ssize_t stride = self.slot_size
        if planes == 0:
            return
        if nt > 1 and planes < 4 * nt:
            parts = min(self.h_out, (4 * nt + planes - 1) // planes)   # split rows too
        cdef Py_ssize_t cb = self.c // 8, lparts = min(self.h_out, nt)
        if nt <= 1:
            for t in range(planes):
                self.plane(t // (self.c // 8), t % (self.c // 8), 0, self.h_out,
                           work if self.ring else NULL)
        elif self.in_bands >= LOCAL_BANDS_PER_THREAD * nt:
            # tasks ordered (image, row part, channel block), split statically: thread i
            # reads about the pixels thread i of a pointwise producer wrote, and writes the
            # ones thread i of a pointwise consumer reads (see LOCAL_BANDS_PER_THREAD)
            for t in prange(self.n * lparts * cb, num_threads=nt, schedule="static"):
                self.plane(t // (lparts * cb), t % cb,
                           ((t // cb) % lparts) * self.h_out // lparts,
                           ((t // cb) % lparts + 1) * self.h_out // lparts,
                           work + threadid() * stride if self.ring else NULL)
        elif parts == 1:
            # few bands, enough channel blocks: contiguous block ranges per thread, as the
            # pointwise producer splits its channels
            for t in prange(planes, num_threads=nt, schedule="static"):
                self.plane(t // (self.c // 8), t % (self.c // 8), 0, self.h_out,
                           work + threadid() * stride if self.ring else NULL)
        else:
            for t in prange(planes * parts, num_threads=nt, schedule="dynamic"):
                self.plane((t // parts) // (self.c // 8), (t // parts) % (self.c // 8),
                           (t % parts) * self.h_out // parts,
                           (t % parts + 1) * self.h_out // parts,
                           work + threadid() * stride if self.ring else NULL)


def depthwise_ring(shape_in, shape_out, kernel, strides, pads, dilations):
    """(ring_rows, wp): padded input rows a task keeps (every row one output row reads), and
    pixels per padded row (input column iw at iw + pad_left; the last group's last tap fits);
    (0, 0) when the ring would be taller than RING_MAX rows."""
    _, _, h_in, w_in = shape_in
    _, _, h_out, w_out = shape_out
    rows = (kernel[0] - 1) * dilations[0] + 1
    if rows > RING_MAX:
        return 0, 0
    # (a row narrower than a group is computed as a whole group: the ring holds its taps)
    wp = max(pads[1] + w_in,
             (max(w_out, DW_PIXELS) - 1) * strides[1] + (kernel[1] - 1) * dilations[1] + 1)
    return rows, wp


def depthwise_blocked_scratch(shape_in, shape_out, kernel, strides, pads, dilations):
    """Floats of scratch one thread needs: the row ring."""
    rows, wp = depthwise_ring(shape_in, shape_out, kernel, strides, pads, dilations)
    return whole_lines(rows * wp * 8)


def pack_depthwise_blocked(w):
    """w (c, 1, k_h, k_w) -> (c//8, k_h*k_w, 8): the 8 channels of a block side by side per tap."""
    w = np.asarray(w, np.float32)
    c, _, k_h, k_w = w.shape
    return np.ascontiguousarray(w.reshape(c // 8, 8, k_h * k_w).transpose(0, 2, 1))


# ----------------------------------------------------------------------------- expand + depthwise
cdef class ExpandDepthwiseBlockedStep(Step):
    """A 1x1 conv and the 3x3 depthwise conv that reads its output, on blocked tensors, with the
    1x1 conv's output ("e") never stored whole:

        e[b, c, ih, iw]   = act_e(bias_e[c] + sum_ci x[b, ci, ih, iw] * w_e[c, ci])
        out[b, c, oh, ow] = act_d(bias_d[c] + sum_{kh, kw} e[b, c, oh*sh - pt + kh,
                                                         ow*sw - pl + kw] * w_d[c, kh, kw])

    (taps outside e are zero), and when `wpj` is given the 1x1 conv that reads d (the depthwise
    output, "project"), d not stored either:

        out[b, co, oh, ow] = act_p(bias_p[co] + residual[b, co, oh, ow]
                                   + sum_c d[b, c, oh, ow] * w_p[co, c])

    x: flat blocked (n, c_in, h, w); we: W_e^T packed in 16-channel panels (c_e/16, c_in, 16),
    or None for no expand (e = x, c_e = c_in, a multiple of 8 only; then wpj is required: the
    depthwise conv and its project, MobileNet's first block); bias_e: (c_e,) or None;
    stem: with we None, a row-producing conv_tile.ConvTileStep (rows_of = shape_in) whose
    output is e (MobileNetV2's stem, depthwise conv and project: e = stem(x) never stored);
    x is then unused (the stem reads its own input) and c_e % 16 == 0; wd: (c_e/8, 9, 8)
    (`pack_depthwise_blocked`); bias_d: (c_e,) or None; wpj: W_p^T packed (ceil(c_out/16),
    c_e, 16) or None; bias_p: padded to 16 channels (`pad_bias16`) or None; residual: flat
    blocked like out, or None; kc_p: the project's K block; out: flat blocked (n, c_e, h_out,
    w_out), or (n, c_out, h_out, w_out) with wpj; work: at least slots *
    `expand_depthwise_scratch(...)` floats. c_e % 16 == 0 (with an expand), c_out % 8 == 0.

    A task (image, range of output rows) keeps the zero-padded rows of e that its output rows
    read in a ring of three rows of every channel (the depthwise step's ring, filled by the 1x1
    conv instead of a copy), computing each row when first needed: e stays in this core's L2
    instead of making a round trip through memory (MobileNetV2's 96 x 112 x 112 e is 4.8 MB).
    Row tasks that split an image recompute the e rows on their border. Without an expand the
    ring rows are copies of x's rows, as DepthwiseBlockedStep's ring; with a stem, its output
    rows (ConvTileStep.rows_blocked: the bits of the stem storing blocked), the input rows the
    task's stem rows read padded once per task into the slot's end. The arithmetic is
    PointwiseBlockedStep's with one K block (the same tile kernels and epilogue) followed by
    DepthwiseBlockedStep's ring path and, with a project, PointwiseBlockedStep's on each output
    row of d (kept in a per-thread row buffer) with its K blocks: results are bit-identical to
    running the steps apart."""
    cdef const float[::1] x
    cdef const float[:, :, ::1] we
    cdef const float[::1] bias_e
    cdef const float[:, :, ::1] wd
    cdef const float[::1] bias_d
    cdef const float[:, :, ::1] wpj
    cdef const float[::1] bias_p
    cdef const float[::1] residual
    cdef float[::1] out
    cdef float[::1] work
    cdef Py_ssize_t n, c_in, c_e, h, w, h_out, w_out, sh, sw, pt, pl, wp, row_size, slot_size
    cdef Py_ssize_t slots, c_out, panels_p, kc_p, ring_size
    cdef bint has_bias_e, has_bias_d, has_bias_p, has_res
    cdef readonly bint project, expand
    cdef readonly bint stream
    cdef int act_e, fin_e, act_d, fin_d, act_p, fin_p
    cdef float alpha_e, beta_e, alpha_d, beta_d, alpha_p, beta_p
    cdef Tile4x24 tile4x24
    cdef ConvTileStep stem
    cdef readonly bint has_stem
    cdef Py_ssize_t stem_off, stem_k

    def __init__(self, const float[::1] x, we, bias_e,
                 const float[:, :, ::1] wd, bias_d, float[::1] out, shape_in, shape_out,
                 strides, pads, int act_e=0, float alpha_e=0.0, float beta_e=0.0,
                 int act_d=0, float alpha_d=0.0, float beta_d=0.0, float[::1] work=None,
                 Py_ssize_t slots=1, bint stream=False, wpj=None, bias_p=None, residual=None,
                 Py_ssize_t c_out=0, int act_p=0, float alpha_p=0.0, float beta_p=0.0,
                 Py_ssize_t kc_p=256, ConvTileStep stem=None):
        """shape_in (n, c_in, h, w), shape_out (n, c_e, h_out, w_out) (the depthwise output's
        shape, also with a project), pads (top, left)."""
        n, c_in, h, w = shape_in
        n2, c_e, h_out, w_out = shape_out
        sh, sw = strides
        pt, pl = pads[0], pads[1]
        self.expand = we is not None
        if not self.expand and (c_e != c_in or wpj is None):
            raise ValueError("ExpandDepthwiseBlockedStep: without an expand, c_e == c_in and a project")
        self.has_stem = stem is not None
        if self.has_stem and (self.expand or not stem.rows_only or c_e % NR
                              or tuple(stem.rows_shape()) != (n, c_e, h, w)):
            raise ValueError("ExpandDepthwiseBlockedStep: a stem needs no expand and a row "
                             "producer of shape_in (16k channels)")
        if n2 != n or n < 0 or c_in % 8 or c_in < 8 or (self.expand and (c_e % NR or c_e < NR)):
            raise ValueError("ExpandDepthwiseBlockedStep: channels must be multiples of 8 (in) and 16")
        # any sizes and pads are safe: rows of e outside [0, h) are never computed (their taps
        # are skipped), columns outside [0, w) are the ring's zero padding (wp covers the last
        # output's taps)
        if min(h, w, h_out, w_out, sh, sw) < 1 or min(pt, pl) < 0:
            raise ValueError("ExpandDepthwiseBlockedStep: bad geometry")
        self.project = wpj is not None
        if not self.project:
            c_out = c_e
        elif c_out % 8 or c_out < 8 or kc_p < 8 or kc_p % 8:
            raise ValueError("ExpandDepthwiseBlockedStep: project channels must be a multiple of 8")
        if ((x.shape[0] != n * c_in * h * w and not self.has_stem)
                or out.shape[0] != n * c_out * h_out * w_out):
            raise ValueError("ExpandDepthwiseBlockedStep: x/out sizes")
        self.c_out, self.kc_p, self.panels_p = c_out, kc_p, (c_out + NR - 1) // NR
        self.wpj = wpj if self.project else np.zeros((1, 1, NR), np.float32)
        if self.project and (self.wpj.shape[0] != self.panels_p or self.wpj.shape[1] != c_e
                             or self.wpj.shape[2] != NR):
            raise ValueError("ExpandDepthwiseBlockedStep: packed project weights do not fit")
        self.has_bias_p, self.has_res = bias_p is not None, residual is not None
        self.bias_p = bias_p if bias_p is not None else np.zeros(1, np.float32)
        self.residual = residual if residual is not None else np.zeros(1, np.float32)
        if (self.has_bias_p and self.bias_p.shape[0] < self.panels_p * NR) or (
                self.has_res and self.residual.shape[0] != out.shape[0]) or (
                not self.project and (self.has_bias_p or self.has_res)):
            raise ValueError("ExpandDepthwiseBlockedStep: project bias or residual size")
        self.tile4x24 = tile4x24_call
        self.act_p, self.alpha_p, self.beta_p = act_p, alpha_p, beta_p
        self.fin_p = finish_kind(act_p, alpha_p, beta_p)
        self.we = we if self.expand else np.zeros((1, 1, NR), np.float32)
        if self.expand and (self.we.shape[0] != c_e // NR or self.we.shape[1] != c_in
                            or self.we.shape[2] != NR):
            raise ValueError("ExpandDepthwiseBlockedStep: packed 1x1 weights do not fit")
        if wd.shape[0] != c_e // 8 or wd.shape[1] != 9 or wd.shape[2] != 8:
            raise ValueError("ExpandDepthwiseBlockedStep: packed depthwise weights do not fit")
        if slots < 1:
            raise ValueError("ExpandDepthwiseBlockedStep: slots must be >= 1")
        self.has_bias_e, self.has_bias_d = bias_e is not None, bias_d is not None
        self.bias_e = bias_e if bias_e is not None else np.zeros(1, np.float32)
        self.bias_d = bias_d if bias_d is not None else np.zeros(1, np.float32)
        if ((self.has_bias_e and (self.bias_e.shape[0] < c_e or not self.expand))
                or (self.has_bias_d and self.bias_d.shape[0] != c_e)):
            raise ValueError("ExpandDepthwiseBlockedStep: bias sizes")
        self.x, self.wd, self.out = x, wd, out
        self.n, self.c_in, self.c_e, self.h, self.w = n, c_in, c_e, h, w
        self.h_out, self.w_out, self.sh, self.sw, self.pt, self.pl = h_out, w_out, sh, sw, pt, pl
        self.wp, self.row_size = expand_depthwise_ring(shape_in, shape_out, strides, pads)
        self.ring_size = whole_lines(3 * self.row_size)
        self.stem = stem
        self.stem_k = stem.K if stem is not None else 0
        self.stem_off = expand_depthwise_scratch(shape_in, shape_out, strides, pads, self.project)
        self.slot_size = expand_depthwise_scratch(shape_in, shape_out, strides, pads,
                                                  self.project, stem.pad_size if stem else 0)
        self.slots = slots
        self.work = work if work is not None else np.zeros(self.slot_size * slots, np.float32)
        if self.work.shape[0] < self.slot_size * slots:
            raise ValueError("ExpandDepthwiseBlockedStep: work too small")
        self.stream = stream and n > 0 and (<size_t>&out[0]) % 32 == 0
        self.act_e, self.alpha_e, self.beta_e = act_e, alpha_e, beta_e
        self.fin_e = finish_kind(act_e, alpha_e, beta_e)
        self.act_d, self.alpha_d, self.beta_d = act_d, alpha_d, beta_d
        self.fin_d = finish_kind(act_d, alpha_d, beta_d)

    cdef void expand_row(self, Py_ssize_t img, Py_ssize_t ih, float *dst,
                         const float *src) noexcept nogil:
        """Row ih of e for image img into dst (c_e/8 blocks of wp padded pixels, column iw at
        iw + pl): every 16-channel panel, 6-pixel tiles (a row's last one or two in 2x16);
        without an expand, a copy of x's row, or the stem's row computed from src."""
        cdef Py_ssize_t hw = self.h * self.w, wp8 = self.wp * 8, jp, p, mr, cb
        cdef const float *xr
        cdef SplitEpilogue epi
        if self.has_stem:
            self.stem.rows_blocked(src, ih, dst + self.pl * 8, wp8)
            return
        xr = &self.x[img * self.c_in * hw + ih * self.w * 8]
        if not self.expand:
            for cb in range(self.c_e // 8):
                copy_floats(xr + cb * hw * 8, dst + cb * wp8 + self.pl * 8, self.w * 8)
            return
        epi.act, epi.alpha, epi.beta, epi.fin = self.act_e, self.alpha_e, self.beta_e, self.fin_e
        epi.stream = False
        epi.res = NULL
        for jp in range(self.c_e // NR):
            epi.bias = &self.bias_e[jp * NR] if self.has_bias_e else NULL
            p = 0
            while p < self.w:
                mr = min(TILE, self.w - p)
                if mr <= 2:
                    ukernel_2x16_blk(self.c_in // 8, xr + p * 8, 8, hw * 8, &self.we[jp, 0, 0],
                                     dst + jp * 2 * wp8 + (self.pl + p) * 8, 8, wp8, mr, True,
                                     False, &epi)
                else:
                    ukernel_6x16_blk(self.c_in // 8, xr + p * 8, 8, hw * 8, &self.we[jp, 0, 0],
                                     dst + jp * 2 * wp8 + (self.pl + p) * 8, 8, wp8, mr, True,
                                     False, &epi)
                p = p + TILE

    cdef void task(self, Py_ssize_t img, Py_ssize_t oh0, Py_ssize_t oh1, float *ring) noexcept nogil:
        """Output rows [oh0, oh1) of image img, every channel; ring: this thread's 3 rows of e."""
        cdef Py_ssize_t cbs = self.c_e // 8, wp8 = self.wp * 8, w_out = self.w_out
        cdef Py_ssize_t slot_row[3]
        cdef Py_ssize_t slot_of[3]
        cdef const float *rows[3]
        cdef Py_ssize_t oh, ih0, ih, kh, kh_lo, kh_hi, slot, cb
        cdef int fin = self.fin_d
        cdef vf8 lo = vf8_set1(self.alpha_d), hi = vf8_set1(self.beta_d), vb
        # the depthwise output (without a project: out holds d)
        cdef float *ob = &self.out[img * self.c_e * self.h_out * w_out] if not self.project else NULL
        cdef float *buf = ring + self.ring_size      # the project's row of d
        cdef float *orow
        cdef Py_ssize_t o_blk = self.h_out * w_out * 8
        cdef bint stream = self.stream and not self.project
        cdef const float *src = NULL
        if self.has_stem:    # pad the input rows of the stem rows [ih0, ih) the task reads
            ih0 = max(0, oh0 * self.sh - self.pt)
            ih = min(self.h, (oh1 - 1) * self.sh - self.pt + 3)
            if ih > ih0:
                src = self.stem.image_src(img, ring + self.stem_off, ih0, ih)
        # padding columns stay zero: expand_row writes only [pl, pl + w)
        vf8_zero_fill(ring, 3 * self.row_size)
        for slot in range(3):
            slot_row[slot] = -1
        for oh in range(oh0, oh1):
            ih0 = oh * self.sh - self.pt
            kh_lo = -ih0 if ih0 < 0 else 0
            kh_hi = min(3, self.h - ih0)
            for kh in range(kh_lo, kh_hi):
                ih = ih0 + kh
                slot = ih % 3
                if slot_row[slot] != ih:
                    self.expand_row(img, ih, ring + slot * self.row_size, src)
                    slot_row[slot] = ih
                slot_of[kh] = slot
            for cb in range(cbs):
                for kh in range(kh_lo, kh_hi):
                    rows[kh] = ring + slot_of[kh] * self.row_size + cb * wp8
                vb = vf8_load(&self.bias_d[cb * 8]) if self.has_bias_d else vf8_zero()
                orow = buf + cb * w_out * 8 if self.project else ob + cb * o_blk + oh * w_out * 8
                if w_out >= DW_PIXELS:
                    row3x3(rows, kh_lo, kh_hi, &self.wd[cb, 0, 0], vb, w_out, self.sw * 8,
                           orow, NULL, fin, lo, hi, self.act_d, self.alpha_d, self.beta_d, stream)
                else:
                    row3x3_narrow(rows, kh_lo, kh_hi, &self.wd[cb, 0, 0], vb, w_out,
                                  self.sw * 8, orow, NULL, fin, lo, hi, self.act_d, self.alpha_d,
                                  self.beta_d, stream)
            if self.project:
                self.project_row(img, oh, buf)
        if self.stream:
            vf8_store_fence()

    cdef void project_row(self, Py_ssize_t img, Py_ssize_t oh, const float *buf) noexcept nogil:
        """Output row oh of image img from the row of d in buf (c_e/8 blocks of w_out pixels):
        PointwiseBlockedStep's K blocks, panels and tiles over the row's pixels."""
        cdef Py_ssize_t w_out = self.w_out, hw_o = self.h_out * self.w_out
        cdef Py_ssize_t pc, kcc, jp, span, rows, p, mr, off
        cdef float *ob = &self.out[img * self.c_out * hw_o]
        cdef const float *rb = &self.residual[img * self.c_out * hw_o] if self.has_res else NULL
        cdef SplitEpilogue epi
        cdef bint last
        epi.act, epi.alpha, epi.beta, epi.fin = self.act_p, self.alpha_p, self.beta_p, self.fin_p
        epi.stream = self.stream
        pc = 0
        while pc < self.c_e:
            kcc = min(self.kc_p, self.c_e - pc)
            last = pc + kcc == self.c_e
            jp = 0
            while jp < self.panels_p:
                epi.bias = &self.bias_p[jp * NR] if self.has_bias_p else NULL
                span = pw_panel_span(jp, self.panels_p, self.panels_p, self.c_out, &rows)
                p = 0
                while p < w_out:
                    mr = min(rows, w_out - p)
                    off = (jp * 2 * hw_o + oh * w_out + p) * 8
                    epi.res = rb + off if rb != NULL else NULL
                    pw_tile(self.tile4x24, span, rows, kcc // 8, buf + pc * w_out + p * 8,
                            w_out * 8, &self.wpj[jp, pc, 0], &self.wpj[jp + span - 1, pc, 0],
                            ob + off, hw_o * 8, mr, pc > 0, &epi if last else NULL)
                    p = p + rows
                jp = jp + span
            pc = pc + kcc

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t macs = self.n * self.c_e * (
            self.h * self.w * (self.c_in * self.expand + self.stem_k)
            + (9 + self.c_out * self.project) * self.h_out * self.w_out)
        cdef int nt = team(self.num_threads, self.slots, macs, self.n * self.h_out)
        cdef Py_ssize_t parts = 1, t
        cdef float *work = &self.work[0]
        if self.n == 0:
            return
        if nt > 1 and self.n % nt:
            parts = min(self.h_out, nt)   # split each image's rows: every thread gets a share
        if nt <= 1:
            for t in range(self.n):
                self.task(t, 0, self.h_out, work)
        else:
            # contiguous (image, rows) ranges per thread, in pixel order, as the pointwise
            # steps around it split their bands (LOCAL_BANDS_PER_THREAD)
            for t in prange(self.n * parts, num_threads=nt, schedule="static"):
                self.task(t // parts, (t % parts) * self.h_out // parts,
                          (t % parts + 1) * self.h_out // parts,
                          work + threadid() * self.slot_size)


def expand_depthwise_ring(shape_in, shape_out, strides, pads):
    """(wp, row_size): padded pixels per ring row of ExpandDepthwiseBlockedStep (column iw at
    iw + pad_left; the last output's last tap fits) and floats per row of every channel."""
    _, _, h, w = shape_in
    _, c_e, _, w_out = shape_out
    wp = max(pads[1] + w, (max(w_out, DW_PIXELS) - 1) * strides[1] + 3)   # (row3x3_narrow)
    return wp, c_e * wp


def expand_depthwise_scratch(shape_in, shape_out, strides, pads, bint project=False,
                             Py_ssize_t stem_pad=0):
    """Floats of scratch one thread of ExpandDepthwiseBlockedStep needs: its ring of 3 rows,
    with a project the row buffer of d, with a stem its padded input (stem_pad floats, the
    stem's `pad_size`)."""
    ring = whole_lines(3 * expand_depthwise_ring(shape_in, shape_out, strides, pads)[1])
    return (ring + (whole_lines(shape_out[1] * shape_out[3]) if project else 0)
            + whole_lines(stem_pad))


# ----------------------------------------------------------------------------- max pool
cdef class MaxPoolBlockedStep(Step):
    """Max pool of a blocked x (n, c, h_in, w_in): out[b, c, oh, ow] = the NaN-propagating max of
    x[b, c, oh*sh - pt + kh*dh, ow*sw - pl + kw*dw] over the taps inside the input (-inf when
    there is none), as pool.Pool2dStep computes it on NCHW. out: flat blocked (n, c, h_out,
    w_out) when out_blocked, else NCHW: eight output pixels at a time are transposed into the
    eight channel rows (the reorder the NCHW consumer would otherwise run as its own step)."""
    cdef const float[::1] x
    cdef float[::1] out
    cdef Py_ssize_t n, c, h_in, w_in, h_out, w_out, k_h, k_w, sh, sw, pt, pl, dh, dw
    cdef bint out_blocked

    def __init__(self, const float[::1] x, float[::1] out, shape_in, shape_out, kernel, strides,
                 pads, dilations, bint out_blocked):
        """shape_in (n, c, h_in, w_in), shape_out (n, c, h_out, w_out), pads (top, left)."""
        (self.n, self.c, self.h_in, self.w_in, self.h_out, self.w_out, self.k_h, self.k_w,
         self.sh, self.sw, self.pt, self.pl, self.dh, self.dw) = window_args(
            "MaxPoolBlockedStep", x.shape[0], out.shape[0], shape_in, shape_out, kernel,
            strides, pads, dilations)
        self.x, self.out, self.out_blocked = x, out, out_blocked

    cdef void plane(self, Py_ssize_t b, Py_ssize_t cb, Py_ssize_t oh0,
                    Py_ssize_t oh1) noexcept nogil:
        """Output rows [oh0, oh1) of channel block cb of image b."""
        cdef Py_ssize_t hw_in = self.h_in * self.w_in, hw_out = self.h_out * self.w_out
        cdef Py_ssize_t cbs = self.c // 8, oh, ow0, u, cnt, kh, kw, ih, iw, j
        cdef Py_ssize_t step = self.sw * 8, span = (self.k_w - 1) * self.dw
        cdef const float *xb = &self.x[(b * cbs + cb) * hw_in * 8]
        cdef const float *xr
        cdef float *ob
        cdef vf8 acc[8]
        cdef vf8 seen[8]
        cdef vf8 xv
        cdef float t[64]
        cdef vf8 ninf = vf8_set1(-INFINITY)
        for oh in range(oh0, oh1):
            ow0 = 0
            while ow0 < self.w_out:
                cnt = min(8, self.w_out - ow0)
                for u in range(8):
                    acc[u] = ninf
                iw = ow0 * self.sw - self.pl     # first input column of the group's first window
                if cnt == 8 and iw >= 0 and iw + 7 * self.sw + span < self.w_in:
                    # eight whole windows across: a fixed count gcc keeps in registers, and a
                    # plain max plus one compare that remembers NaNs (the blend that makes each
                    # max NaN-propagating cost a fifth of the ResNet stem's pool)
                    for j in range(0, 8, 4):
                        for u in range(4):
                            seen[u] = vf8_zero()
                        for kh in range(self.k_h):
                            ih = oh * self.sh - self.pt + kh * self.dh
                            if ih < 0 or ih >= self.h_in:
                                continue
                            for kw in range(self.k_w):
                                xr = xb + (ih * self.w_in + iw + kw * self.dw + j * self.sw) * 8
                                for u in range(4):
                                    xv = vf8_load(xr + u * step)
                                    acc[j + u] = vf8_max(acc[j + u], xv)
                                    seen[u] = vf8_nan_seen(seen[u], xv)
                        for u in range(4):
                            acc[j + u] = vf8_nan_where(acc[j + u], seen[u])
                else:
                    for kh in range(self.k_h):
                        ih = oh * self.sh - self.pt + kh * self.dh
                        if ih < 0 or ih >= self.h_in:
                            continue
                        for kw in range(self.k_w):
                            for u in range(cnt):
                                iw = (ow0 + u) * self.sw - self.pl + kw * self.dw
                                if 0 <= iw < self.w_in:
                                    acc[u] = vf8_max_nan(acc[u], vf8_load(xb + (ih * self.w_in + iw) * 8))
                if self.out_blocked:
                    ob = &self.out[((b * cbs + cb) * hw_out + oh * self.w_out + ow0) * 8]
                    for u in range(cnt):
                        vf8_store(ob + u * 8, acc[u])
                else:
                    # pixel u's 8 channels -> channel j's row: out[b, 8*cb + j, oh, ow0 + u]
                    ob = &self.out[(b * self.c + cb * 8) * hw_out + oh * self.w_out + ow0]
                    for u in range(cnt):
                        vf8_store(t + u * 8, acc[u])
                    if cnt == 8:
                        vf8_transpose8(t, 8, ob, hw_out)
                    else:
                        for j in range(8):
                            for u in range(cnt):
                                ob[j * hw_out + u] = t[u * 8 + j]
                ow0 = ow0 + 8

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t planes = self.n * (self.c // 8), parts = 1, t, p
        # The work is the taps, or reading the input when that costs more: a pool reads what
        # the threads of the step before wrote, and on one thread half of it crosses from the
        # other core's cache (the edge CNN's first pool, 128 KB: 8 us on 1 thread alone, 21 us
        # after a 2-thread conv; 13 us on 2 threads, each reading the rows it wrote)
        cdef int nt = team(self.num_threads, 1 << 20,
                           max(planes * self.h_out * self.w_out * self.k_h * self.k_w * 8,
                               planes * 8 * self.h_in * self.w_in * POOL_MACS_PER_READ),
                           planes * self.h_out)
        if planes == 0:
            return
        if nt > 1 and planes < 4 * nt:
            parts = min(self.h_out, (4 * nt + planes - 1) // planes)   # split rows too
        if nt <= 1:
            for t in range(planes):
                self.plane(t // (self.c // 8), t % (self.c // 8), 0, self.h_out)
        else:
            # row ranges outer: a thread takes the same rows of every plane, as the conv
            # before it wrote them
            for t in prange(planes * parts, num_threads=nt, schedule="static"):
                p = t % planes
                self.plane(p // (self.c // 8), p % (self.c // 8),
                           (t // planes) * self.h_out // parts,
                           (t // planes + 1) * self.h_out // parts)


# ----------------------------------------------------------------------------- channel scale
cdef class ChannelScaleBlockedStep(Step):
    """out = x * s with s broadcast over the pixels: x and out flat blocked (n, c, hw), s (n, c)
    or (1, c) contiguous (one factor per image and channel, or per channel): the
    squeeze-and-excitation scaling of MobileNetV3 and EfficientNet, on blocked tensors so the
    convolutions around it stay blocked. out may be x."""
    cdef const float[::1] x
    cdef const float[::1] s
    cdef float[::1] out
    cdef Py_ssize_t n, c, hw, s_step

    def __init__(self, const float[::1] x, const float[::1] s, float[::1] out, Py_ssize_t n,
                 Py_ssize_t c, Py_ssize_t hw, bint per_image):
        if c % 8 or hw < 1 or x.shape[0] != n * c * hw or out.shape[0] != n * c * hw or \
                s.shape[0] != (n if per_image else 1) * c:
            raise ValueError("ChannelScaleBlockedStep: shapes do not fit")
        self.x, self.s, self.out, self.n, self.c, self.hw = x, s, out, n, c, hw
        self.s_step = c if per_image else 0

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t blocks = self.n * (self.c // 8), t, p, base
        cdef int nt = threads_for(blocks * self.hw * 8, self.num_threads)
        cdef vf8 f
        if blocks == 0:
            return
        for t in prange(blocks, num_threads=nt, schedule="static"):
            f = vf8_load(&self.s[(t // (self.c // 8)) * self.s_step + (t % (self.c // 8)) * 8])
            base = t * self.hw * 8
            for p in range(self.hw):
                vf8_store(&self.out[base + p * 8], vf8_mul(vf8_load(&self.x[base + p * 8]), f))


# ----------------------------------------------------------------------------- global pool
cdef class GlobalAvgBlockedStep(Step):
    """out (n, c) = mean over the hw pixels of x, flat blocked (n, c, hw); pixels summed in
    order per lane, then divided by hw."""
    cdef const float[::1] x
    cdef float[::1] out
    cdef Py_ssize_t n, c, hw

    def __init__(self, const float[::1] x, float[::1] out, Py_ssize_t n, Py_ssize_t c,
                 Py_ssize_t hw):
        if c % 8 or hw < 1 or x.shape[0] != n * c * hw or out.shape[0] != n * c:
            raise ValueError("GlobalAvgBlockedStep: shapes do not fit")
        self.x, self.out, self.n, self.c, self.hw = x, out, n, c, hw

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t blocks = self.n * (self.c // 8), t, p
        cdef vf8 s, d
        if blocks == 0:
            return
        d = vf8_set1(<float>self.hw)
        for t in range(blocks):
            s = vf8_zero()
            for p in range(self.hw):
                s = vf8_add(s, vf8_load(&self.x[(t * self.hw + p) * 8]))
            vf8_store(&self.out[t * 8], vf8_div(s, d))

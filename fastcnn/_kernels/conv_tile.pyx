"""Direct convolution in register tiles of 6 output pixels x 16 output channels that read the
input in place (an implicit im2col), NCHW input, group 1, output NCHW or NCHW8c ("blocked").
The cost model picks it where packing the GEMM conv's im2col panels costs about as much as its
multiply-adds: short reductions K = c_in*k_h*k_w (LeNet's 6->16 5x5, the 3-channel stems) and
strided convs (ResNet-18's stride-2 3x3 and 1x1 convs), up to K = 4608.

    x_pad:  the image zero-padded to (c_in, hp, wp) (x itself when no padding is read)
    base[p] = (oh*stride_h)*wp + ow*stride_w          output pixel p = oh*w_out + ow
    off[k]  = ci*hp*wp + kh*dil_h*wp + kw*dil_w       k = (ci*k_h + kh)*k_w + kw
    tile:   acc[u, 0:16] = bias[j0:j0+16] + sum_k x_pad[base[p0+u] + off[k]] * wt[k, j0:j0+16]
            for u < 6 (pixels p0..p0+5), the K terms in order

    channels-last (a padded image of 8 channels or more, `tile_channels_last`): the copy is
    (hp, wp, c_in), base[p] as above times c_in, off[k] = (kh*dil_h*wp + kw*dil_w)*c_in + ci
    for k = (kh*k_w + kw)*c_in + ci, and the weights are packed in that order of K.

Each K step is two weight loads, six broadcasts of input values and twelve FMAs, as in the GEMM
micro-kernel. A last panel of at most 8 channels (LeNet's 6, a 24-channel layer's second panel)
runs 12-pixel x 8-channel tiles instead: one weight load, twelve broadcasts, twelve FMAs.

NCHW output: the tile is transposed 8x8 per half, so that each row holds consecutive pixels of
one output plane, and the residual, the activation and the store run on those rows as vectors:
8 floats at a time when the ones past the tile belong to this task's next tile (which rewrites
them), else only the tile's own pixels. Blocked output: each tile row is one pixel's channel
block, stored as it is (streamed for large outputs); no residual.

Tasks are (image, contiguous range of tiles, range of channel panels); a task first copies its
image zero-padded into the thread's scratch when the layer reads padding. Weights of more than
PANEL_OUTER_BYTES are walked one panel at a time over the task's tiles, so the panel stays in
L2. Every output sums its terms in one order: results are bit-identical for any thread count.
"""
from cython.parallel cimport prange, threadid
from libc.math cimport INFINITY

from fastcnn._kernels.step cimport Step
from fastcnn._kernels.simd cimport *
from fastcnn._kernels.simd_extra cimport vf8_transpose8, vf8_nan_seen, vf8_nan_where
from fastcnn._kernels.act cimport act_span
from fastcnn._kernels.ukernel cimport (team, whole_lines, FIN_SCALAR, finish_kind, finish_vec,
                                       finish8)
from fastcnn._kernels.convgeom cimport ConvGeom, make_geom, check_geom, shape4

import numpy as np

from fastcnn._kernels.gemm import pack_bt_panels, pad_bias16

cdef enum:
    TP = 6              # pixels per tile
    TC = 16             # output channels per tile (two vectors)
    TASKS_PER_THREAD = 2   # with few images, tasks per thread (balance against overhead)
    MIN_RANGE_TILES = 8    # tiles in a task's range at least, when one image is split
    PANEL_OUTER_BYTES = 131072   # weights beyond this: panel-outer loop
    POOL_PAIRS = 3      # with a pool: conv row pairs per chunk (6 rows: whole 6-pixel tiles)
    PREFETCH_AHEAD = 16     # NCHW store: floats ahead in each channel row to prefetch (a line)
    CHANNELS_LAST_MIN = 8   # input channels at least for a channels-last copy


def pack_tile_weights(w, scale=None, bint channels_last=False, alloc=None, int num_threads=1):
    """w (c_out, c_in, k_h, k_w) -> (ceil(c_out/16), K, 16): W^T in 16-channel panels, the
    channels past c_out zero (gemm.pack_bt_panels of the (c_out, K) matrix; the blocked
    pointwise step reads the same layout), K in the order (ci, kh, kw), or (kh, kw, ci) for a
    step that reads a channels-last copy (`tile_channels_last`). w may view a model file at
    any byte offset; scale: None or (c_out,) float64, a folded BatchNormalization's, applied
    as the weights are packed. alloc: where the panels' memory comes from (gemm.packed_array);
    num_threads: threads that may pack (gemm.pack_bt_panels)."""
    w = np.asarray(w)
    cols = None
    if channels_last:
        # packed column (kh, kw, ci) reads column (ci, kh, kw) of the weights as they are
        c_in, k_h, k_w = w.shape[1:]
        cols = np.arange(c_in * k_h * k_w, dtype=np.int64).reshape(c_in, k_h, k_w)
        cols = cols.transpose(1, 2, 0).reshape(-1)
    return pack_bt_panels(w.reshape(w.shape[0], -1), scale, cols, alloc, num_threads)


cdef inline void padded_extent(const ConvGeom *g, Py_ssize_t *hp, Py_ssize_t *wp) noexcept nogil:
    """Rows and columns of the padded image the outputs read (padding past the input included)."""
    hp[0] = max(g.pad_top + g.h_in, (g.h_out - 1) * g.stride_h + (g.k_h - 1) * g.dil_h + 1)
    wp[0] = max(g.pad_left + g.w_in, (g.w_out - 1) * g.stride_w + (g.k_w - 1) * g.dil_w + 1)


cdef inline bint reads_padding(const ConvGeom *g, Py_ssize_t hp, Py_ssize_t wp) noexcept nogil:
    """Whether the outputs read past the image ((hp, wp) from padded_extent): the step then
    reads a zero-padded copy of it (in planes or channels-last), else the image in place."""
    return hp != g.h_in or wp != g.w_in


def tile_channels_last(x_shape, w_shape, out_shape, strides, pads, dilations):
    """Whether ConvTileStep should copy the image channels-last, (hp, wp, c_in), rather than
    as planes: when it copies the image anyway (the conv reads padding) and a tap's channels
    fill a vector (c_in >= 8). A 6-pixel tile then reads each window row as one run of
    k_w * c_in floats in the order of K, which the prefetchers follow; as planes it reads a
    few floats from each of c_in * k_h rows. ResNet-18's stride-2 3x3 convs at batch 1, in
    the model (bench/profile_model.py, two alternations): 8-16% faster each on 1 thread, 4-8%
    on 2. Unpadded convs read the image in place (a 1x1 stride-2 conv copied channels-last
    was slower: 34 -> 25 GFLOP/s), the 3-channel stems have runs of 3 floats."""
    cdef ConvGeom g = make_geom(tuple(x_shape), tuple(w_shape), tuple(out_shape), strides, pads,
                                dilations, 1, 0, 0.0, 0.0, False, False)
    cdef Py_ssize_t hp, wp
    padded_extent(&g, &hp, &wp)
    return reads_padding(&g, hp, wp) and g.c_in >= CHANNELS_LAST_MIN


def tile_scratch(x_shape, w_shape, out_shape, strides, pads, dilations, bint pool=False):
    """Floats of scratch one thread needs: the zero-padded image (0 when no padding is read)
    and, with a max pool after the conv (out_shape: the conv's output), 2 * POOL_PAIRS output
    rows of a 16-channel panel."""
    cdef ConvGeom g = make_geom(tuple(x_shape), tuple(w_shape), tuple(out_shape), strides, pads,
                                dilations, 1, 0, 0.0, 0.0, False, False)
    cdef Py_ssize_t hp, wp
    padded_extent(&g, &hp, &wp)
    rows = whole_lines(2 * POOL_PAIRS * g.w_out * TC) if pool else 0
    if not reads_padding(&g, hp, wp):
        return rows
    # in Python integers: padding from an absurd dilation makes the product overflow
    # Py_ssize_t (a fuzzed file: 3 x 2e9 x 2e9), and a wrapped size got past the memory limit
    padded = <object>g.c_in * <object>hp * <object>wp
    return (padded + 15) // 16 * 16 + rows


cdef inline void tile6x16(const float *x, const Py_ssize_t *base, Py_ssize_t mr,
                          const Py_ssize_t *off, Py_ssize_t K, const float *wt, const float *bias,
                          float *t) noexcept nogil:
    """t[u*16 + j] = bias[j] + sum_k x[base[u] + off[k]] * wt[k*16 + j] for u < 6; pixels
    u >= mr repeat pixel mr-1 (the caller does not store them)."""
    cdef vf8 b0 = vf8_load(bias), b1 = vf8_load(bias + 8), av
    cdef vf8 c00 = b0, c01 = b1, c10 = b0, c11 = b1, c20 = b0, c21 = b1
    cdef vf8 c30 = b0, c31 = b1, c40 = b0, c41 = b1, c50 = b0, c51 = b1
    cdef const float *x0 = x + base[0]
    cdef const float *x1 = x + base[1 if mr > 1 else mr - 1]
    cdef const float *x2 = x + base[2 if mr > 2 else mr - 1]
    cdef const float *x3 = x + base[3 if mr > 3 else mr - 1]
    cdef const float *x4 = x + base[4 if mr > 4 else mr - 1]
    cdef const float *x5 = x + base[5 if mr > 5 else mr - 1]
    cdef Py_ssize_t k, o
    for k in range(K):
        o = off[k]
        b0 = vf8_load(wt)
        b1 = vf8_load(wt + 8)
        av = vf8_set1(x0[o])
        c00 = vf8_fmadd(av, b0, c00)
        c01 = vf8_fmadd(av, b1, c01)
        av = vf8_set1(x1[o])
        c10 = vf8_fmadd(av, b0, c10)
        c11 = vf8_fmadd(av, b1, c11)
        av = vf8_set1(x2[o])
        c20 = vf8_fmadd(av, b0, c20)
        c21 = vf8_fmadd(av, b1, c21)
        av = vf8_set1(x3[o])
        c30 = vf8_fmadd(av, b0, c30)
        c31 = vf8_fmadd(av, b1, c31)
        av = vf8_set1(x4[o])
        c40 = vf8_fmadd(av, b0, c40)
        c41 = vf8_fmadd(av, b1, c41)
        av = vf8_set1(x5[o])
        c50 = vf8_fmadd(av, b0, c50)
        c51 = vf8_fmadd(av, b1, c51)
        wt = wt + TC
    vf8_store(t, c00)
    vf8_store(t + 8, c01)
    vf8_store(t + 16, c10)
    vf8_store(t + 24, c11)
    vf8_store(t + 32, c20)
    vf8_store(t + 40, c21)
    vf8_store(t + 48, c30)
    vf8_store(t + 56, c31)
    vf8_store(t + 64, c40)
    vf8_store(t + 72, c41)
    vf8_store(t + 80, c50)
    vf8_store(t + 88, c51)


cdef inline void tile12x8(const float *x, const Py_ssize_t *base, Py_ssize_t mr,
                          const Py_ssize_t *off, Py_ssize_t K, const float *wt, const float *bias,
                          float *t) noexcept nogil:
    """tile6x16 for a last panel of at most 8 channels: t[u*8 + j] = bias[j] + sum_k
    x[base[u] + off[k]] * wt[k*16 + j] for u < 12, j < 8 (the first half of each 16-wide
    weight row): twelve FMA chains where a 6x16 tile would compute 8 zero channels. Pixels
    u >= mr repeat pixel mr-1."""
    cdef vf8 b = vf8_load(bias)
    cdef vf8 c0 = b, c1 = b, c2 = b, c3 = b, c4 = b, c5 = b, c6 = b, c7 = b, c8 = b, c9 = b
    cdef vf8 c10 = b, c11 = b
    cdef const float *xs[12]
    cdef Py_ssize_t k, o, u
    for u in range(12):
        xs[u] = x + base[u if u < mr else mr - 1]
    for k in range(K):
        o = off[k]
        b = vf8_load(wt)
        c0 = vf8_fmadd(vf8_set1(xs[0][o]), b, c0)
        c1 = vf8_fmadd(vf8_set1(xs[1][o]), b, c1)
        c2 = vf8_fmadd(vf8_set1(xs[2][o]), b, c2)
        c3 = vf8_fmadd(vf8_set1(xs[3][o]), b, c3)
        c4 = vf8_fmadd(vf8_set1(xs[4][o]), b, c4)
        c5 = vf8_fmadd(vf8_set1(xs[5][o]), b, c5)
        c6 = vf8_fmadd(vf8_set1(xs[6][o]), b, c6)
        c7 = vf8_fmadd(vf8_set1(xs[7][o]), b, c7)
        c8 = vf8_fmadd(vf8_set1(xs[8][o]), b, c8)
        c9 = vf8_fmadd(vf8_set1(xs[9][o]), b, c9)
        c10 = vf8_fmadd(vf8_set1(xs[10][o]), b, c10)
        c11 = vf8_fmadd(vf8_set1(xs[11][o]), b, c11)
        wt = wt + TC
    vf8_store(t, c0)
    vf8_store(t + 8, c1)
    vf8_store(t + 16, c2)
    vf8_store(t + 24, c3)
    vf8_store(t + 32, c4)
    vf8_store(t + 40, c5)
    vf8_store(t + 48, c6)
    vf8_store(t + 56, c7)
    vf8_store(t + 64, c8)
    vf8_store(t + 72, c9)
    vf8_store(t + 80, c10)
    vf8_store(t + 88, c11)


cdef inline void tile_step(ConvTileStep self, const float *src, float *t, float *rows,
                           float *o, const float *r, Py_ssize_t ti, Py_ssize_t tile0,
                           Py_ssize_t jp, Py_ssize_t p_end) noexcept nogil:
    """ConvTileStep's tile ti of channel panel jp, computed and stored (the task's buffers and
    pointers; the task's tiles start at tile0 and its pixels end at p_end). A function, not a
    method: methods of a class declared in a .pxd are called through its vtable, and this one
    must inline into the task loop (LeNet-5 1.4% slower otherwise). A panel of at most 8
    channels goes 12 pixels at a time: tiles ti and ti + 1 when ti - tile0 is even."""
    cdef Py_ssize_t p0 = ti * TP, hw = self.hw, nc = min(TC, self.g.c_out - jp * TC), mr
    cdef float *oj = o + jp * TC * hw + p0
    cdef const float *rj = r + jp * TC * hw + p0 if r != NULL else NULL
    if nc <= 8:
        if (ti - tile0) % 2:
            return
        mr = min(2 * TP, p_end - p0)
        tile12x8(src, &self.base[p0], mr, &self.off[0], self.K, &self.wt[jp, 0, 0],
                 &self.bias16[jp * TC], t)
        if self.blocked_out:
            self.store_blocked(t, 8, o + (2 * jp * hw + p0) * 8, mr)
            return
        self.store_block(t, 8, oj, rj, nc, min(8, mr), False, rows)
        if mr > 8:
            self.store_block(t + 64, 8, oj + 8, rj + 8 if rj != NULL else NULL, nc, mr - 8,
                             p0 + 16 <= p_end, rows)
        return
    mr = min(TP, hw - p0)
    tile6x16(src, &self.base[p0], mr, &self.off[0], self.K, &self.wt[jp, 0, 0],
             &self.bias16[jp * TC], t)
    if self.blocked_out:
        self.store_blocked(t, TC, o + (2 * jp * hw + p0) * 8, mr)
        self.store_blocked(t + 8, TC, o + ((2 * jp + 1) * hw + p0) * 8, mr)
        return
    self.store_block(t, TC, oj, rj, 8, mr, p0 + 8 <= p_end, rows)
    self.store_block(t + 8, TC, oj + 8 * hw, rj + 8 * hw if rj != NULL else NULL, nc - 8, mr,
                     p0 + 8 <= p_end, rows)


cdef class ConvTileStep(Step):
    """Direct group-1 conv in 6x16 register tiles (module docstring). x (n, c_in, h_in, w_in);
    wt: `pack_tile_weights(w, scale, channels_last)` (ceil(c_out/16), K, 16); bias (c_out,) or
    None; residual like out or None; out (n, c_out, h_out, w_out), NCHW, or NCHW8c when
    blocked_out (c_out % 8 == 0, no residual); work: at least slots * `tile_scratch(...)`
    floats (None when that is 0). channels_last: the padded copy is (hp, wp, c_in) and wt's K
    in the order (kh, kw, ci) (only for a conv that reads padding; `tile_channels_last`).
    stream: non-temporal stores for a blocked output (ignored unless out is 32-byte aligned;
    the `stream` attribute tells whether it is on).

    pool_hw = (h_out, w_out): the conv's output size, when a 2x2 stride-2 max pool (no
    padding, floor) follows the activation: out is then the pooled (n, c_out, h_out // 2,
    w_out // 2), NCHW, and the conv's output is never stored (c_out % 16 == 0, no residual).
    A task computes up to 2 * POOL_PAIRS conv rows of a panel into its scratch (as the blocked
    output stores them: their pixels in 6-pixel tiles, with none wasted when the rows hold a
    multiple of 6), pools them and stores the pooled rows, with blocked.MaxPoolBlockedStep's
    arithmetic (a plain max over the window in row-major order from -inf, NaN where a value
    was NaN) and its transposing NCHW store: the bits of the conv storing blocked and that
    pool. (The few lines of that store are written again here rather than shared with
    blocked.pyx, where shared helpers have changed what gcc inlines in the pointwise kernels
    and made them slower; not measured for this one.)

    rows_of = (n, c_out, h_out, w_out) with out None: the step only produces rows for a fused
    step (blocked.ExpandDepthwiseBlockedStep's stem), which calls `image_src` and
    `rows_blocked`; run() does nothing. Needs c_out % 16 == 0, no residual, no stream.

    (Attributes and methods are declared in conv_tile.pxd.)"""

    def __init__(self, const float[:, :, :, ::1] x, const float[:, :, ::1] wt, bias, residual,
                 float[:, :, :, ::1] out, strides, pads, dilations, Py_ssize_t k_h,
                 Py_ssize_t k_w, int act=0, float alpha=0.0, float beta=0.0,
                 float[::1] work=None, Py_ssize_t slots=1, bint blocked_out=False,
                 bint stream=False, pool_hw=None, rows_of=None, bint channels_last=False):
        cdef Py_ssize_t c_out, oh, ow, ci, kh, kw, c_in = x.shape[1]
        self.rows_only = out is None
        if self.rows_only:
            if (rows_of is None or len(rows_of) != 4 or rows_of[1] % TC or residual is not None
                    or stream or pool_hw is not None):
                raise ValueError("ConvTileStep: a row producer needs rows_of with c_out % 16 "
                                 "== 0, no residual, stream or pool")
            out = np.zeros((rows_of[0], rows_of[1], 1, 1), np.float32)  # (only its shape[:2])
            blocked_out = True
        c_out = out.shape[1]
        self.x, self.wt, self.out = x, wt, out
        self.pool = pool_hw is not None
        conv_shape = tuple(rows_of) if self.rows_only else shape4(out)
        if self.pool:
            conv_shape = (out.shape[0], c_out, pool_hw[0], pool_hw[1])
            if (residual is not None or blocked_out or c_out % TC or pool_hw[0] < 2
                    or pool_hw[1] < 2 or out.shape[2] != pool_hw[0] // 2
                    or out.shape[3] != pool_hw[1] // 2):
                raise ValueError("ConvTileStep: a pool needs an NCHW output of half the conv's "
                                 "size, c_out % 16 == 0 and no residual")
        self.h_pool, self.w_pool = out.shape[2], out.shape[3]
        self.g = make_geom(shape4(x), (c_out, x.shape[1], k_h, k_w), conv_shape, strides, pads,
                           dilations, 1, act, alpha, beta, bias is not None,
                           residual is not None)
        check_geom(self.g, x.shape[1])
        if out.shape[0] != x.shape[0]:
            raise ValueError("ConvTileStep: batch sizes differ")
        if blocked_out and (c_out % 8 or residual is not None):
            raise ValueError("ConvTileStep: a blocked output needs c_out % 8 == 0, no residual")
        self.blocked_out = blocked_out
        # non-temporal stores need 32-byte aligned vectors (arena tensors are 64-byte aligned)
        self.stream = (stream and blocked_out and out.shape[0] > 0
                       and (<size_t>&out[0, 0, 0, 0]) % 32 == 0)
        self.K = x.shape[1] * k_h * k_w
        self.panels = (c_out + TC - 1) // TC
        if wt.shape[0] != self.panels or wt.shape[1] != self.K or wt.shape[2] != TC:
            raise ValueError("ConvTileStep: packed weights do not fit")
        if bias is not None and len(bias) != c_out:
            raise ValueError("ConvTileStep: bias size")
        self.bias16 = pad_bias16(bias, c_out)
        self.residual = residual if residual is not None else np.zeros((1, 1, 1, 1), np.float32)
        if self.g.has_residual and shape4(self.residual) != shape4(out):
            raise ValueError("ConvTileStep: residual shape")
        padded_extent(&self.g, &self.hp, &self.wp)
        # weights beyond a quarter of L2 would be read again from L3 for every tile: go panel
        # by panel instead (one panel stays in L2 while the task's tiles pass over it)
        self.panel_outer = self.K * self.panels * TC * 4 > PANEL_OUTER_BYTES
        self.fin = finish_kind(act, alpha, beta)
        self.padded = reads_padding(&self.g, self.hp, self.wp)
        if channels_last and not self.padded:
            raise ValueError("ConvTileStep: a channels-last copy is made only of a padded image")
        self.channels_last = channels_last
        cdef Py_ssize_t c_step = c_in if channels_last else 1   # floats from one pixel to the next
        self.hw = self.g.h_out * self.g.w_out
        self.tiles = (self.hw + TP - 1) // TP
        # base[pixel]: where its window starts in the padded image; off[k]: each tap's offset
        # from there, k = (ci, kh, kw), or (kh, kw, ci) channels-last (plain loops: numpy's
        # meshgrid cost ~80 us per step at load)
        self.base = np.empty(self.hw, np.intp)
        self.off = np.empty(self.K, np.intp)
        for oh in range(self.g.h_out):
            for ow in range(self.g.w_out):
                self.base[oh * self.g.w_out + ow] = (oh * self.g.stride_h * self.wp
                                                     + ow * self.g.stride_w) * c_step
        for ci in range(self.g.c_in):
            for kh in range(k_h):
                for kw in range(k_w):
                    if channels_last:
                        self.off[(kh * k_w + kw) * c_in + ci] = ((kh * self.g.dil_h * self.wp
                                                                  + kw * self.g.dil_w) * c_in + ci)
                    else:
                        self.off[(ci * k_h + kh) * k_w + kw] = ((ci * self.hp + kh * self.g.dil_h) * self.wp
                                                                + kw * self.g.dil_w)
        self.pad_size = whole_lines(self.g.c_in * self.hp * self.wp) if self.padded else 0
        self.slot_size = self.pad_size + (whole_lines(2 * POOL_PAIRS * self.g.w_out * TC)
                                          if self.pool else 0)
        if slots < 1:
            raise ValueError("ConvTileStep: slots must be >= 1")
        self.slots = slots
        if self.slot_size and not self.rows_only:   # (a row producer pads into its user's)
            self.work = work if work is not None else np.zeros(self.slot_size * slots, np.float32)
            if self.work.shape[0] < self.slot_size * slots:
                raise ValueError("ConvTileStep: work too small")

    cdef void pad_image(self, Py_ssize_t img, float *xp, Py_ssize_t pr0,
                        Py_ssize_t pr1) noexcept nogil:
        """Rows [pr0, pr1) of xp (c_in, hp, wp), or (hp, wp, c_in) channels-last, = image img
        of x at (pad_top, pad_left), zeros around it (a task splitting one image pads only the
        rows its tiles read: at batch 1 on 2 threads every task copied the whole image, and
        the stem ran slower than on 1)."""
        cdef ConvGeom *g = &self.g
        cdef Py_ssize_t ci, r, c, wp = self.wp, right = wp - g.pad_left - g.w_in
        cdef Py_ssize_t z0, z1, r0, r1, c_in = g.c_in, plane = g.h_in * g.w_in
        cdef float *d
        cdef const float *xs
        # padded rows [pr0, pr1): zero rows above the image, image rows, zero rows below
        r0 = max(pr0, g.pad_top)
        r1 = min(pr1, g.pad_top + g.h_in)
        if self.channels_last:
            z1 = min(pr1, g.pad_top)
            if z1 > pr0:
                vf8_zero_fill(xp + pr0 * wp * c_in, (z1 - pr0) * wp * c_in)
            z0 = max(pr0, g.pad_top + g.h_in)
            if pr1 > z0:
                vf8_zero_fill(xp + z0 * wp * c_in, (pr1 - z0) * wp * c_in)
            for r in range(r0, r1):
                # row r: pixels of c_in floats; 8 channels x 8 pixels transposed at a time
                d = xp + r * wp * c_in
                vf8_zero_fill(d, g.pad_left * c_in)
                vf8_zero_fill(d + (g.pad_left + g.w_in) * c_in, right * c_in)
                d = d + g.pad_left * c_in
                xs = &self.x[img, 0, r - g.pad_top, 0]
                z0 = 0
                while z0 + 8 <= c_in:
                    c = 0
                    while c + 8 <= g.w_in:
                        vf8_transpose8(xs + z0 * plane + c, plane, d + c * c_in + z0, c_in)
                        c = c + 8
                    for c in range(c, g.w_in):
                        for z1 in range(8):
                            d[c * c_in + z0 + z1] = xs[(z0 + z1) * plane + c]
                    z0 = z0 + 8
                for ci in range(z0, c_in):
                    for c in range(g.w_in):
                        d[c * c_in + ci] = xs[ci * plane + c]
            return
        for ci in range(g.c_in):
            d = xp + ci * self.hp * wp
            z1 = min(pr1, g.pad_top)
            if z1 > pr0:
                vf8_zero_fill(d + pr0 * wp, (z1 - pr0) * wp)
            z0 = max(pr0, g.pad_top + g.h_in)
            if pr1 > z0:
                vf8_zero_fill(d + z0 * wp, (pr1 - z0) * wp)
            for r in range(r0, r1):
                d = xp + (ci * self.hp + r) * wp
                xs = &self.x[img, ci, r - g.pad_top, 0]
                for c in range(g.pad_left):
                    d[c] = 0.0
                d = d + g.pad_left
                for c in range(g.w_in):
                    d[c] = xs[c]
                for c in range(g.w_in, g.w_in + right):
                    d[c] = 0.0

    def rows_shape(self):
        """(n, c_out, h_out, w_out): the conv's output (what rows_blocked produces)."""
        return (self.g.n, self.g.c_out, self.g.h_out, self.g.w_out)

    cdef const float *image_src(self, Py_ssize_t img, float *xp, Py_ssize_t oh0,
                                Py_ssize_t oh1) noexcept nogil:
        """Where the tiles of output rows [oh0, oh1) of image img read: xp (this thread's
        scratch) with the padded rows they read filled in, or x's image when no padding is
        read."""
        cdef ConvGeom *g = &self.g
        if not self.padded:
            return &self.x[img, 0, 0, 0]
        self.pad_image(img, xp, oh0 * g.stride_h,
                       min(self.hp, (oh1 - 1) * g.stride_h + (g.k_h - 1) * g.dil_h + 1))
        return xp

    cdef void rows_blocked(self, const float *src, Py_ssize_t oh, float *dst,
                           Py_ssize_t block_stride) noexcept nogil:
        """Output row oh (activation applied) from src (`image_src`) into dst: channel block cb
        at dst + cb * block_stride, pixel ow at + ow * 8."""
        cdef Py_ssize_t jp
        for jp in range(self.panels):
            self.pixels_blocked(src, oh * self.g.w_out, self.g.w_out, jp,
                                dst + 2 * jp * block_stride, block_stride)

    cdef void pixels_blocked(self, const float *src, Py_ssize_t p0, Py_ssize_t count,
                             Py_ssize_t jp, float *dst, Py_ssize_t block_stride) noexcept nogil:
        """Output pixels [p0, p0 + count) (row-major, rows may be crossed: base[] places each
        pixel) of channel panel jp, activation applied, as a blocked output holds them: its
        first 8 channels at dst + u * 8 for pixel p0 + u, the next 8 at dst + block_stride +
        u * 8. 6-pixel tiles: the sums of `task` (one order per output, whatever the tiling)."""
        cdef float t[96]
        cdef Py_ssize_t p = 0, mr
        while p < count:
            mr = min(TP, count - p)
            tile6x16(src, &self.base[p0 + p], mr, &self.off[0], self.K, &self.wt[jp, 0, 0],
                     &self.bias16[jp * TC], t)
            self.store_blocked(t, TC, dst + p * 8, mr)
            self.store_blocked(t + 8, TC, dst + block_stride + p * 8, mr)
            p = p + TP

    cdef void store_blocked(self, const float *t, Py_ssize_t ldt, float *o,
                            Py_ssize_t count) noexcept nogil:
        """Blocked output: pixel u's 8 channels (t + u*ldt) with the activation to o + u*8, for
        u < count (each pixel's channel block is one vector: no transpose)."""
        cdef ConvGeom *g = &self.g
        cdef Py_ssize_t u
        cdef vf8 lo = vf8_set1(g.alpha), hi = vf8_set1(g.beta)
        for u in range(count):
            finish8(vf8_load(t + u * ldt), o + u * 8, NULL, self.fin, lo, hi, g.act, g.alpha,
                    g.beta, self.stream)

    cdef void store_block(self, const float *t, Py_ssize_t ldt, float *o, const float *r,
                          Py_ssize_t nc, Py_ssize_t count, bint wide,
                          float *rows) noexcept nogil:
        """One 8x8 block of a tile: t row u (pixel u, from 0) holds channels 0..7 at t + u*ldt.
        Transposed, then channel j's first `count` pixels are stored at o + j*hw with the
        residual (r + j*hw, or r NULL) and the activation, for j < nc. A row is stored as one
        vector when count is 8 or `wide` (the floats past `count` are rewritten later by this
        task); else value by value. rows: 64 floats."""
        cdef ConvGeom *g = &self.g
        cdef Py_ssize_t j, u, hw = self.hw
        cdef float *oj
        cdef vf8 v, lo = vf8_set1(g.alpha), hi = vf8_set1(g.beta)
        cdef int fin = self.fin
        cdef bint vec = wide or count == 8
        vf8_transpose8(t, ldt, rows, 8)
        for j in range(nc):
            oj = o + j * hw
            # a tile writes a few floats into each of 16 planes: ask for each plane's next line
            # now, or the stores wait for it when the next tile gets there (a 7x7 stride-2
            # 3->64 stem storing NCHW: 14% faster on 1 and 2 threads; ResNet-18's stride-2 3x3
            # convs 1-4%). A hint past the end of out does not fault.
            prefetch_line(oj + PREFETCH_AHEAD)
            v = vf8_load(rows + j * 8)
            if r != NULL:
                if vec:
                    v = vf8_add(v, vf8_load(r + j * hw))
                else:
                    for u in range(count):
                        rows[j * 8 + u] = rows[j * 8 + u] + r[j * hw + u]
                    v = vf8_load(rows + j * 8)
            v = finish_vec(v, fin, lo, hi, g.act, g.alpha, g.beta)
            if vec:
                vf8_store(oj, v)
                if fin == FIN_SCALAR:
                    act_span(oj, oj, count, g.act, g.alpha, g.beta)
            else:
                vf8_store(rows + j * 8, v)
                if fin == FIN_SCALAR:
                    act_span(rows + j * 8, rows + j * 8, count, g.act, g.alpha, g.beta)
                for u in range(count):
                    oj[u] = rows[j * 8 + u]

    cdef void task(self, Py_ssize_t img, Py_ssize_t tile0, Py_ssize_t tile1, Py_ssize_t jp0,
                   Py_ssize_t jp1, float *xp) noexcept nogil:
        """Tiles [tile0, tile1) of image img, channel panels [jp0, jp1); xp: this thread's
        scratch."""
        cdef float t[128]
        cdef float rows[64]
        cdef const float *src
        cdef float *o = &self.out[img, 0, 0, 0]
        cdef const float *r = &self.residual[img, 0, 0, 0] if self.g.has_residual else NULL
        cdef Py_ssize_t ti, jp, p_end = min(self.hw, tile1 * TP)
        vf8_zero_fill(t + 96, 32)     # the rows past a tile's 6 (or 12) pixels
        src = self.image_src(img, xp, tile0 * TP // self.g.w_out, (p_end - 1) // self.g.w_out + 1)
        if self.panel_outer:
            for jp in range(jp0, jp1):
                for ti in range(tile0, tile1):
                    tile_step(self, src, t, rows, o, r, ti, tile0, jp, p_end)
        else:
            for ti in range(tile0, tile1):
                for jp in range(jp0, jp1):
                    tile_step(self, src, t, rows, o, r, ti, tile0, jp, p_end)
        if self.stream:
            vf8_store_fence()

    cdef void pool_task(self, Py_ssize_t img, Py_ssize_t pr0, Py_ssize_t pr1,
                        float *slot) noexcept nogil:
        """Pooled rows [pr0, pr1) of image img, every channel (pool_hw). slot: this thread's
        scratch, the padded image (when padding is read) then the conv rows of a chunk of
        POOL_PAIRS pooled rows, one panel, as the blocked output holds them: (8-channel block,
        2 * POOL_PAIRS * w_out pixels, 8)."""
        cdef ConvGeom *g = &self.g
        cdef Py_ssize_t w_out = g.w_out, hw_p = self.h_pool * self.w_pool, pr, jp, q0, q1
        cdef Py_ssize_t cap = 2 * POOL_PAIRS * w_out
        cdef Py_ssize_t cb, pc0, cnt, u, j
        cdef float tt[64]
        cdef float *rows = slot + self.pad_size
        cdef const float *r0
        cdef const float *r1
        cdef const float *src
        cdef float *o
        cdef vf8 acc, seen, v
        src = self.image_src(img, slot, 2 * pr0, 2 * pr1)
        q0 = pr0
        while q0 < pr1:
            q1 = min(pr1, q0 + POOL_PAIRS)
            for jp in range(self.panels):
                # the chunk's conv rows: 2 * w_out pixels a pooled row
                self.pixels_blocked(src, 2 * q0 * w_out, 2 * (q1 - q0) * w_out, jp, rows,
                                    cap * 8)
                for pr in range(q0, q1):
                    for cb in range(2):
                        r0 = rows + (cb * cap + 2 * (pr - q0) * w_out) * 8
                        r1 = r0 + w_out * 8
                        # pooled pixel pc of channel c: out[img, c, pr, pc]; plane stride hw_p
                        o = &self.out[img, jp * TC + cb * 8, pr, 0]
                        pc0 = 0
                        while pc0 < self.w_pool:
                            cnt = min(8, self.w_pool - pc0)
                            for u in range(cnt):
                                acc = vf8_set1(-INFINITY)
                                seen = vf8_zero()
                                for j in range(4):
                                    v = vf8_load((r0 if j < 2 else r1)
                                                 + (2 * (pc0 + u) + j % 2) * 8)
                                    acc = vf8_max(acc, v)
                                    seen = vf8_nan_seen(seen, v)
                                vf8_store(tt + u * 8, vf8_nan_where(acc, seen))
                            if cnt == 8:
                                vf8_transpose8(tt, 8, o + pc0, hw_p)
                            else:
                                for j in range(8):
                                    for u in range(cnt):
                                        o[j * hw_p + pc0 + u] = tt[u * 8 + j]
                            pc0 = pc0 + 8
            q0 = q1

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t n = self.g.n, per_img, rp, cp, tasks, t, img, q, part, c
        cdef Py_ssize_t macs = n * self.hw * self.K * self.g.c_out
        cdef int nt
        cdef float *w0 = NULL
        if n == 0 or self.rows_only:   # (a row producer has no work array)
            return
        if self.slot_size:
            w0 = &self.work[0]
        nt = team(self.num_threads, self.slots if self.slot_size else self.num_threads, macs,
                  n * self.tiles * self.panels)
        if self.pool:
            # (image, range of pooled rows) tasks, contiguous per thread; every image's rows
            # split when the images do not go round the threads
            rp = 1 if nt == 1 or n % nt == 0 else min(self.h_pool, nt)
            if nt <= 1:
                for t in range(n):
                    self.pool_task(t, 0, self.h_pool, w0)
            else:
                for t in prange(n * rp, num_threads=nt, schedule="static"):
                    self.pool_task(t // rp, (t % rp) * self.h_pool // rp,
                                   (t % rp + 1) * self.h_pool // rp,
                                   w0 + threadid() * self.slot_size)
            return
        # Whole images per task when there are enough of them (one padded copy each). Else each
        # image in rp contiguous tile ranges of at least MIN_RANGE_TILES tiles, times cp
        # ranges of channel panels when there are too few tiles for that (7x7 outputs).
        per_img = 1 if nt == 1 or n >= TASKS_PER_THREAD * nt else (
            (TASKS_PER_THREAD * nt + n - 1) // n)
        rp = max(1, min(per_img, self.tiles // MIN_RANGE_TILES))
        cp = max(1, min(self.panels, per_img // rp))
        tasks = n * rp * cp
        if nt <= 1:
            for t in range(tasks):
                img, q = t // (rp * cp), t % (rp * cp)
                part, c = q // cp, q % cp
                self.task(img, part * self.tiles // rp, (part + 1) * self.tiles // rp,
                          c * self.panels // cp, (c + 1) * self.panels // cp, w0)
        else:
            for t in prange(tasks, num_threads=nt, schedule="static"):
                img = t // (rp * cp)
                q = t % (rp * cp)
                part = q // cp
                c = q % cp
                self.task(img, part * self.tiles // rp, (part + 1) * self.tiles // rp,
                          c * self.panels // cp, (c + 1) * self.panels // cp,
                          w0 + threadid() * self.slot_size if w0 != NULL else NULL)


def conv2d_tile(x, w, bias, out, strides=(1, 1), pads=(0, 0), dilations=(1, 1), act=0,
                alpha=0.0, beta=0.0, residual=None, num_threads=1):
    """Tiled direct NCHW convolution (group 1) into `out` (tests and bench); arguments as
    conv2d_direct. The scratch starts as NaN: in a plan it holds other steps' data, and the
    padded copy must write every float it reads."""
    slots = max(1, num_threads)
    size = tile_scratch(x.shape, w.shape, out.shape, strides, pads, dilations)
    cl = tile_channels_last(x.shape, w.shape, out.shape, strides, pads, dilations)
    s = ConvTileStep(x, pack_tile_weights(w, None, cl), bias, residual, out, strides, pads,
                     dilations, w.shape[2], w.shape[3], act, alpha, beta,
                     np.full(size * slots, np.nan, np.float32) if size else None, slots,
                     channels_last=cl)
    s.num_threads = num_threads
    s()

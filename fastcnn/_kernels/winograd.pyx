"""Winograd convolution F(m x m, 3 x 3) for 3x3, stride-1, dilation-1, group-1 convs, NCHW.

m = 4 (F(4,3): 6x6 input tiles, 36 transform positions) or m = 2 (F(2,3): 4x4 tiles, 16).
With a = m + 2 and tile t = (image b, tile row th, tile column tw) reading the a x a input patch
d = x[b, ci, th*m - pad_top :+ a, tw*m - pad_left :+ a] (zeros outside x):

    V[pos, ci, t]  = (B^T d B)[pos]                    input transform, pos = 0 .. a*a - 1
    M[pos, co, t]  = sum_ci U[pos, co, ci] V[pos, ci, t]    one GEMM per position
    Y[co, t]       = A^T M[:, co, t] A                 (m x m outputs of tile t)
    out[b, co, th*m + i, tw*m + j] = act(Y[i, j] + bias[co] + residual[...])  (clipped at edges)

U = G w G^T is computed once at load (`winograd_weights`, float64, then packed as micro-kernel row
panels). Tiles are processed in blocks of 16 (one micro-kernel column panel): for each block, the
input transform writes V straight into packed-B layout (a*a, c_in, 16), the 6x16 micro-kernel runs
a*a GEMMs into M (a*a, c_out rounded up to 6, 16), and the output transform applies the epilogue
and scatters the tiles. Transforms are vectorised over 8 tiles. Threads pick blocks dynamically
or, when there are too few blocks to go round (7x7 or 14x14 images at batch 1), share each block
phase by phase (input channels, GEMM panels, output channels). Every value is computed the same
way in any block and thread: results are bit-identical whatever the thread count.
"""
from cython.parallel cimport parallel, prange, threadid
from libc.string cimport memcpy

from fastcnn._kernels.step cimport Step
from fastcnn._kernels.unaligned cimport load_f32
from fastcnn._kernels.simd cimport *
from fastcnn._kernels.simd_extra cimport vf8_max_nan
from fastcnn._kernels.ukernel cimport (MIN_MACS_PER_THREAD, MR, NR, ukernel_6x16, act_scalar,
                                       FIN_SCALAR, finish_kind, finish_vec, whole_lines)
from fastcnn._kernels.convgeom cimport ConvGeom, make_geom, check_geom, shape4

import numpy as np

from fastcnn._kernels.gemm import packed_array


# Transform matrices (Lavin & Gray 2015), points 0, +-1, +-2 (F(4,3)) and 0, +-1 (F(2,3)).
WINOGRAD_MATRICES = {
    4: dict(
        BT=[[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        G=[[1.0 / 4.0, 0.0, 0.0], [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
           [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0], [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
           [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0], [0.0, 0.0, 1.0]],
        AT=[[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
    2: dict(
        BT=[[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        G=[[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
        AT=[[1, 1, 1, 0], [0, 1, -1, -1]]),
}


# ----------------------------------------------------------------------------- 1-D transforms
# Each applies one matrix of WINOGRAD_MATRICES to a column of vectors (8 tiles per vector) and
# stores the results at o, o + s, o + 2s, ... (floats).
cdef inline void bt6(vf8 d0, vf8 d1, vf8 d2, vf8 d3, vf8 d4, vf8 d5, float *o,
                     Py_ssize_t s) noexcept nogil:
    cdef vf8 a, b
    vf8_store(o, vf8_fmadd(vf8_set1(4.0), d0, vf8_fmadd(vf8_set1(-5.0), d2, d4)))
    a = vf8_add(d1, d2)
    b = vf8_add(d3, d4)
    vf8_store(o + s, vf8_fmadd(vf8_set1(-4.0), a, b))
    a = vf8_sub(d1, d2)
    b = vf8_sub(d4, d3)
    vf8_store(o + 2 * s, vf8_fmadd(vf8_set1(4.0), a, b))
    a = vf8_sub(d3, d1)
    b = vf8_sub(d4, d2)
    vf8_store(o + 3 * s, vf8_fmadd(vf8_set1(2.0), a, b))
    vf8_store(o + 4 * s, vf8_fmadd(vf8_set1(-2.0), a, b))
    vf8_store(o + 5 * s, vf8_fmadd(vf8_set1(4.0), d1, vf8_fmadd(vf8_set1(-5.0), d3, d5)))


cdef inline void at6(vf8 m0, vf8 m1, vf8 m2, vf8 m3, vf8 m4, vf8 m5, float *o,
                     Py_ssize_t s) noexcept nogil:
    cdef vf8 a = vf8_add(m1, m2), b = vf8_sub(m1, m2), c = vf8_add(m3, m4), d = vf8_sub(m3, m4)
    vf8_store(o, vf8_add(vf8_add(m0, a), c))
    vf8_store(o + s, vf8_fmadd(vf8_set1(2.0), d, b))
    vf8_store(o + 2 * s, vf8_fmadd(vf8_set1(4.0), c, a))
    vf8_store(o + 3 * s, vf8_add(vf8_fmadd(vf8_set1(8.0), d, b), m5))


cdef inline void bt4(vf8 d0, vf8 d1, vf8 d2, vf8 d3, float *o, Py_ssize_t s) noexcept nogil:
    vf8_store(o, vf8_sub(d0, d2))
    vf8_store(o + s, vf8_add(d1, d2))
    vf8_store(o + 2 * s, vf8_sub(d2, d1))
    vf8_store(o + 3 * s, vf8_sub(d1, d3))


cdef inline void at4(vf8 m0, vf8 m1, vf8 m2, vf8 m3, float *o, Py_ssize_t s) noexcept nogil:
    vf8_store(o, vf8_add(vf8_add(m0, m1), m2))
    vf8_store(o + s, vf8_sub(vf8_sub(m1, m2), m3))


cdef inline void input_transform(const float *d, float *tmp, float *v, Py_ssize_t vs,
                                 Py_ssize_t a) noexcept nogil:
    """d (a*a, 16) -> v[pos*vs + lane] = (B^T d B)[pos] for 16 lanes; tmp: a*a*8 floats."""
    cdef Py_ssize_t h, c, i, r
    cdef const float *p
    for h in range(0, NR, 8):
        if a == 6:
            for c in range(6):
                p = d + c * NR + h
                bt6(vf8_load(p), vf8_load(p + 6 * NR), vf8_load(p + 12 * NR), vf8_load(p + 18 * NR),
                    vf8_load(p + 24 * NR), vf8_load(p + 30 * NR), tmp + c * 8, 48)
            for i in range(6):
                p = tmp + i * 48
                bt6(vf8_load(p), vf8_load(p + 8), vf8_load(p + 16), vf8_load(p + 24),
                    vf8_load(p + 32), vf8_load(p + 40), v + i * 6 * vs + h, vs)
        else:
            for c in range(4):
                p = d + c * NR + h
                bt4(vf8_load(p), vf8_load(p + 4 * NR), vf8_load(p + 8 * NR), vf8_load(p + 12 * NR),
                    tmp + c * 8, 32)
            for i in range(4):
                p = tmp + i * 32
                bt4(vf8_load(p), vf8_load(p + 8), vf8_load(p + 16), vf8_load(p + 24),
                    v + i * 4 * vs + h, vs)


cdef inline void move_rect(const float *src, Py_ssize_t s_row, Py_ssize_t s_col, float *dst,
                           Py_ssize_t d_row, Py_ssize_t d_col, Py_ssize_t rows, Py_ssize_t cols,
                           bint accumulate) noexcept nogil:
    """dst[i*d_row + j*d_col] (+)= src[i*s_row + j*s_col] for i < rows, j < cols."""
    cdef Py_ssize_t i, j
    for i in range(rows):
        for j in range(cols):
            if accumulate:
                dst[i * d_row + j * d_col] += src[i * s_row + j * s_col]
            else:
                dst[i * d_row + j * d_col] = src[i * s_row + j * s_col]


cdef inline void move_block(const float *src, Py_ssize_t s_row, Py_ssize_t s_col, float *dst,
                            Py_ssize_t d_row, Py_ssize_t d_col, Py_ssize_t rows, Py_ssize_t cols,
                            bint accumulate) noexcept nogil:
    """move_rect, with the whole patches and tiles (6x6, 4x4, 2x2) at literal sizes, so that gcc
    unrolls them, and the rows of the other blocks up to 6 wide (patches and tiles clipped at an
    edge) at a literal length: loops over a runtime size cost more than the copies (they were
    most of the input gather of the edge CNN's 8x8 layer, where 12 of 16 patches are clipped)."""
    if rows == cols == 6:
        move_rect(src, s_row, s_col, dst, d_row, d_col, 6, 6, accumulate)
    elif rows == cols == 4:
        move_rect(src, s_row, s_col, dst, d_row, d_col, 4, 4, accumulate)
    elif rows == cols == 2:
        move_rect(src, s_row, s_col, dst, d_row, d_col, 2, 2, accumulate)
    elif cols == 6:
        move_rect(src, s_row, s_col, dst, d_row, d_col, rows, 6, accumulate)
    elif cols == 5:
        move_rect(src, s_row, s_col, dst, d_row, d_col, rows, 5, accumulate)
    elif cols == 4:
        move_rect(src, s_row, s_col, dst, d_row, d_col, rows, 4, accumulate)
    elif cols == 3:
        move_rect(src, s_row, s_col, dst, d_row, d_col, rows, 3, accumulate)
    else:
        move_rect(src, s_row, s_col, dst, d_row, d_col, rows, cols, accumulate)


cdef inline void output_transform(const float *mm, Py_ssize_t ms, float *tmp, float *y,
                                  Py_ssize_t a, float bias) noexcept nogil:
    """mm[pos*ms + lane] (a*a positions, 16 lanes) -> y (m*m, 16) = A^T M A + bias."""
    cdef Py_ssize_t h, c, i, j, m = a - 2
    cdef const float *p
    cdef vf8 vb = vf8_set1(bias)
    for h in range(0, NR, 8):
        if a == 6:
            for c in range(6):
                p = mm + c * ms + h
                at6(vf8_load(p), vf8_load(p + 6 * ms), vf8_load(p + 12 * ms), vf8_load(p + 18 * ms),
                    vf8_load(p + 24 * ms), vf8_load(p + 30 * ms), tmp + c * 8, 48)
            for i in range(4):
                p = tmp + i * 48
                at6(vf8_load(p), vf8_load(p + 8), vf8_load(p + 16), vf8_load(p + 24),
                    vf8_load(p + 32), vf8_load(p + 40), y + i * 4 * NR + h, NR)
        else:
            for c in range(4):
                p = mm + c * ms + h
                at4(vf8_load(p), vf8_load(p + 4 * ms), vf8_load(p + 8 * ms), vf8_load(p + 12 * ms),
                    tmp + c * 8, 32)
            for i in range(2):
                p = tmp + i * 32
                at4(vf8_load(p), vf8_load(p + 8), vf8_load(p + 16), vf8_load(p + 24),
                    y + i * 2 * NR + h, NR)
        for i in range(m * m):
            vf8_store(y + i * NR + h, vf8_add(vf8_load(y + i * NR + h), vb))


cdef extern from *:
    """
    /* An orphaned barrier: binds to the enclosing parallel region (a no-op without OpenMP). */
    static void fastcnn_omp_barrier(void) {
    #ifdef _OPENMP
        _Pragma("omp barrier")
    #endif
    }
    """
    void omp_barrier "fastcnn_omp_barrier" () noexcept nogil


cdef enum:
    # V (a*a x c_in x 16 floats) up to this size is transformed by every thread of a few-block
    # layer rather than shared: the edge CNN's 64->128 at 8x8 (64 KB) and 32->64 at 16x16
    # (72 KB); ResNet-18's 256- and 512-channel layers at batch 1 (512+ KB) keep sharing V,
    # which no longer fits in L2 twice beside U
    OWN_BLOCK_V_BYTES = 131072


cdef struct Lanes:
    Py_ssize_t count           # tiles in this block (16 but in the last block)
    Py_ssize_t img[NR]
    Py_ssize_t ih[NR]          # input row of the patch's top-left corner (may be negative)
    Py_ssize_t iw[NR]
    bint inside[NR]            # the whole a x a patch lies inside x
    Py_ssize_t r0[NR]          # patch rows [r0, r1) and columns [c0, c1) lie inside x
    Py_ssize_t r1[NR]
    Py_ssize_t c0[NR]
    Py_ssize_t c1[NR]
    Py_ssize_t pofs[NR]        # with a pool: the tile's first pooled output in out[:, 0]
    Py_ssize_t prows[NR]       # and the pooled rows and columns of the tile that out keeps
    Py_ssize_t pcols[NR]


cdef class ConvWinogradStep(Step):
    """3x3 stride-1 conv by Winograd F(m,3) (module docstring). x (n, c_in, h_in, w_in);
    up: U packed (a*a, ceil(c_out/6), c_in, 6) from `winograd_weights`; bias (c_out,) or None;
    residual like out or None; out (n, c_out, h_out, w_out); work: at least
    slots * `winograd_scratch(m, c_in, c_out)` floats. weights (c_out, c_in, 3, 3), or None:
    outputs the transforms made non-finite are recomputed from them directly (they need not
    be aligned: read bytewise); weight_scale
    (c_out,) float64 or None: the conv's weights are weights * weight_scale[co] (up is made
    from the scaled ones), for a conv whose scaled weights are not kept (ir/weights.py).

    pool_hw = (h_out, w_out): the conv's output size, when a 2x2 stride-2 max pool (no
    padding, floor) follows the activation: out is then the pooled (n, c_out, h_out // 2,
    w_out // 2) and the conv's output is never stored. m is even, so every pooling window lies
    in one output tile: each tile is pooled as it is finished (max of the window's four values
    in row-major order, NaN-propagating, as pool.Pool2dStep computes it: the same bits as the
    two steps). No residual."""
    cdef const float[:, ::1] xf     # x as (n*c_in, h_in*w_in)
    cdef const float[:, :, :, ::1] up
    cdef const float[:, :, :, ::1] w    # original weights, for outputs Winograd made non-finite
    cdef const double[::1] w_scale      # the weights are w * w_scale[co] (has_scale)
    cdef bint has_w, has_scale
    cdef int fin                        # finish_kind of the activation (FIN_SCALAR: not vector)
    cdef const float[::1] bias
    cdef const float[:, :, :, ::1] residual
    cdef float[:, :, :, ::1] out
    cdef float[::1] work
    cdef ConvGeom g
    cdef readonly Py_ssize_t m          # output tile size: F(m x m, 3 x 3)
    cdef readonly bint pool             # a 2x2 stride-2 max pool follows: out is pooled
    cdef Py_ssize_t h_pool, w_pool      # out's size with a pool
    cdef Py_ssize_t a, mrows, tiles_h, tiles_w, tiles, blocks, slot_size, slots, v_size, m_size

    def __init__(self, const float[:, :, :, ::1] x, const float[:, :, :, ::1] up, bias, residual,
                 float[:, :, :, ::1] out, pads, Py_ssize_t m, int act=0, float alpha=0.0,
                 float beta=0.0, float[::1] work=None, Py_ssize_t slots=1, weights=None,
                 pool_hw=None, weight_scale=None):
        if m not in (2, 4):
            raise ValueError("ConvWinogradStep: m must be 2 or 4")
        self.pool = pool_hw is not None
        conv_shape = shape4(out)
        if self.pool:
            conv_shape = (out.shape[0], out.shape[1], pool_hw[0], pool_hw[1])
            if (residual is not None or pool_hw[0] < 2 or pool_hw[1] < 2
                    or out.shape[2] != pool_hw[0] // 2 or out.shape[3] != pool_hw[1] // 2):
                raise ValueError("ConvWinogradStep: pooled output shape (or a residual with a pool)")
        self.h_pool, self.w_pool = out.shape[2], out.shape[3]
        self.g = make_geom(shape4(x), (out.shape[1], x.shape[1], 3, 3), conv_shape, (1, 1), pads,
                           (1, 1), 1, act, alpha, beta, bias is not None, residual is not None)
        check_geom(self.g, x.shape[1])
        self.m, self.a = m, m + 2
        self.mrows = (self.g.c_out + MR - 1) // MR * MR
        if shape4(up) != (self.a * self.a, self.mrows // MR, self.g.c_in, MR):
            raise ValueError("ConvWinogradStep: transformed weights do not fit")
        self.has_w = weights is not None
        self.fin = finish_kind(act, alpha, beta)
        self.w = weights if weights is not None else np.zeros((1, 1, 1, 1), np.float32)
        if self.has_w and shape4(self.w) != (self.g.c_out, self.g.c_in, 3, 3):
            raise ValueError("ConvWinogradStep: weights shape")
        self.has_scale = weight_scale is not None
        self.w_scale = weight_scale if weight_scale is not None else np.ones(1, np.float64)
        if self.has_scale and (not self.has_w or self.w_scale.shape[0] != self.g.c_out):
            raise ValueError("ConvWinogradStep: weight_scale needs the weights and c_out values")
        self.xf = np.asarray(x).reshape(self.g.n * self.g.c_in, self.g.h_in * self.g.w_in)
        self.up, self.out = up, out
        self.bias = bias if bias is not None else np.zeros(1, np.float32)
        self.residual = residual if residual is not None else np.zeros((1, 1, 1, 1), np.float32)
        if self.g.has_bias and self.bias.shape[0] != self.g.c_out:
            raise ValueError("ConvWinogradStep: bias size")
        if self.g.has_residual and shape4(self.residual) != shape4(out):
            raise ValueError("ConvWinogradStep: residual shape")
        if out.shape[0] != x.shape[0]:
            raise ValueError("ConvWinogradStep: batch sizes differ")
        self.tiles_h = (self.g.h_out + m - 1) // m
        self.tiles_w = (self.g.w_out + m - 1) // m
        self.tiles = self.g.n * self.tiles_h * self.tiles_w
        self.blocks = (self.tiles + NR - 1) // NR
        self.slot_size = winograd_scratch(m, self.g.c_in, self.g.c_out)
        self.v_size = self.a * self.a * self.g.c_in * NR
        self.m_size = self.a * self.a * self.mrows * NR
        self.slots = slots
        if slots < 1:
            raise ValueError("ConvWinogradStep: slots must be >= 1")
        self.work = work if work is not None else np.zeros(self.slot_size * slots, np.float32)
        if self.work.shape[0] < self.slot_size * slots:
            raise ValueError("ConvWinogradStep: work too small")

    cdef Lanes lanes_of(self, Py_ssize_t blk) noexcept nogil:
        """Where the 16 tiles of block `blk` are: image, input patch origin, the part of the
        patch inside x and, with a pool, the place of the tile's pooled outputs."""
        cdef Py_ssize_t l, t, th, tw, oh, ow, a = self.a
        cdef Lanes lanes
        cdef Lanes *ln = &lanes
        ln.count = min(NR, self.tiles - blk * NR)
        for l in range(ln.count):
            t = blk * NR + l
            ln.img[l] = t // (self.tiles_h * self.tiles_w)
            th = (t // self.tiles_w) % self.tiles_h
            tw = t % self.tiles_w
            ln.ih[l] = th * self.m - self.g.pad_top
            ln.iw[l] = tw * self.m - self.g.pad_left
            ln.r0[l] = min(a, max(0, -ln.ih[l]))
            ln.r1[l] = max(ln.r0[l], min(a, self.g.h_in - ln.ih[l]))
            ln.c0[l] = min(a, max(0, -ln.iw[l]))
            ln.c1[l] = max(ln.c0[l], min(a, self.g.w_in - ln.iw[l]))
            ln.inside[l] = (ln.r0[l] == 0 and ln.r1[l] == a and ln.c0[l] == 0 and ln.c1[l] == a)
            if self.pool:
                oh = (ln.ih[l] + self.g.pad_top) // 2
                ow = (ln.iw[l] + self.g.pad_left) // 2
                ln.prows[l] = max(0, min(self.m // 2, self.h_pool - oh))
                ln.pcols[l] = max(0, min(self.m // 2, self.w_pool - ow))
                ln.pofs[l] = (ln.img[l] * self.g.c_out * self.h_pool + oh) * self.w_pool + ow
        return lanes

    cdef void clear_patches(self, const Lanes *ln, float *d) noexcept nogil:
        """Zero the lanes of d (a*a, 16) that `input_channels` does not fill whole: lanes past
        the block's tiles and patches reaching outside x. Their cells outside x are the same for
        every channel, so d is cleared once per block, not once per channel."""
        cdef Py_ssize_t l, pos, aa = self.a * self.a
        for l in range(NR):
            if l >= ln.count or not ln.inside[l]:
                for pos in range(aa):
                    d[pos * NR + l] = 0.0

    cdef void input_channels(self, const Lanes *ln, Py_ssize_t ci0, Py_ssize_t ci1, float *v,
                             float *d, float *tmp) noexcept nogil:
        """Phase 1, channels [ci0, ci1): gather the a x a patches of the 16 tiles into d
        (a*a, 16), then V[pos, ci, :] = (B^T d B)[pos] into v (a*a, c_in, 16). d's cells
        outside x must be zero (`clear_patches`): only the cells inside x are written."""
        cdef Py_ssize_t a = self.a, c_in = self.g.c_in, w_in = self.g.w_in, ci, l
        cdef const float *xc
        for ci in range(ci0, ci1):
            for l in range(ln.count):
                xc = &self.xf[ln.img[l] * c_in + ci, 0]
                if ln.inside[l]:
                    move_block(xc + ln.ih[l] * w_in + ln.iw[l], w_in, 1, d + l, a * NR, NR,
                               a, a, False)
                else:
                    move_block(xc + (ln.ih[l] + ln.r0[l]) * w_in + ln.iw[l] + ln.c0[l], w_in, 1,
                               d + (ln.r0[l] * a + ln.c0[l]) * NR + l, a * NR, NR,
                               ln.r1[l] - ln.r0[l], ln.c1[l] - ln.c0[l], False)
            input_transform(d, tmp, v + ci * NR, c_in * NR, a)

    cdef void gemm_items(self, Py_ssize_t i0, Py_ssize_t i1, const float *v,
                         float *mm) noexcept nogil:
        """Phase 2, items [i0, i1) of (position, 6-row panel):
        M[pos, panel rows] (6, 16) = U[pos, panel] (6, c_in) @ V[pos] (c_in, 16)."""
        cdef Py_ssize_t item, pos, mp, panels = self.mrows // MR, c_in = self.g.c_in
        for item in range(i0, i1):
            pos = item // panels
            mp = item - pos * panels
            ukernel_6x16(c_in, &self.up[pos, mp, 0, 0], 1, MR, v + pos * c_in * NR, NR,
                         mm + (pos * self.mrows + mp * MR) * NR, NR, MR, NR, False, NULL, 0, 0)

    cdef float direct_at(self, Py_ssize_t b, Py_ssize_t co, Py_ssize_t oh,
                         Py_ssize_t ow) noexcept nogil:
        """out[b, co, oh, ow] before residual and activation, by the direct sum (bias added;
        the weights scaled by w_scale[co], once, after the sum). The sum is in double: values
        the transforms overflowed on are large, and a float sum could overflow before the
        scale brings it back."""
        cdef Py_ssize_t ci, kh, kw, ih, iw
        cdef double acc = 0.0
        cdef const float *xc
        for ci in range(self.g.c_in):
            xc = &self.xf[b * self.g.c_in + ci, 0]
            for kh in range(3):
                ih = oh - self.g.pad_top + kh
                if ih < 0 or ih >= self.g.h_in:
                    continue
                for kw in range(3):
                    iw = ow - self.g.pad_left + kw
                    if iw >= 0 and iw < self.g.w_in:
                        # weights viewing an .onnx file may start anywhere (protobuf places
                        # raw_data at any byte): read each as bytes
                        acc = acc + <double>load_f32(&self.w[co, ci, kh, kw]) * xc[ih * self.g.w_in + iw]
        if self.has_scale:
            acc = acc * self.w_scale[co]
        if self.g.has_bias:
            acc = acc + self.bias[co]
        return <float>acc

    cdef void pool_store(self, const Lanes *ln, Py_ssize_t co, const float *y,
                         float *pb) noexcept nogil:
        """Channel co of the block's finished tiles y (m*m, 16 lanes), max pooled 2x2 with
        stride 2 into out: pooled pixel (i, j) of a tile is the NaN-propagating max of its
        outputs (2i, 2j), (2i, 2j+1), (2i+1, 2j), (2i+1, 2j+1), in that order. pb: (m/2)^2 * 16
        floats. Windows past the pooled output (an odd last row or column) are dropped."""
        cdef Py_ssize_t m = self.m, q = self.m // 2, i, j, h, l
        cdef const float *p
        cdef float *oc = &self.out[0, co, 0, 0]
        for i in range(q):
            for j in range(q):
                p = y + (2 * i * m + 2 * j) * NR
                for h in range(0, NR, 8):
                    vf8_store(pb + (i * q + j) * NR + h, vf8_max_nan(vf8_max_nan(vf8_max_nan(
                        vf8_load(p + h), vf8_load(p + NR + h)), vf8_load(p + m * NR + h)),
                        vf8_load(p + (m + 1) * NR + h)))
        # the places come from lanes_of (computed once per block, not per channel); F(2,3)
        # pools each tile to one value
        for l in range(ln.count):
            if q == 1:
                if ln.prows[l] > 0 and ln.pcols[l] > 0:
                    oc[ln.pofs[l]] = pb[l]
            else:
                move_block(pb + l, q * NR, NR, oc + ln.pofs[l], self.w_pool, 1, ln.prows[l],
                           ln.pcols[l], False)

    cdef void output_channels(self, const Lanes *ln, Py_ssize_t co0, Py_ssize_t co1,
                              const float *mm, float *tmp, float *y) noexcept nogil:
        """Phase 3, channels [co0, co1): Y = A^T M A + bias, residual, activation, scattered to
        the tiles' places in out (clipped at the bottom/right edges)."""
        cdef ConvGeom *g = &self.g
        cdef Py_ssize_t m = self.m, co, l, i, j, k, oh, ow
        cdef float *oc
        cdef const float *rc
        cdef float val
        cdef vf8 spread, lo = vf8_set1(g.alpha), hi = vf8_set1(g.beta)
        # finite tiles (self.fin, chosen at plan time, is a vector finish): the residual is
        # added into y, the finish runs on y's vectors and the scatter only copies (a scalar
        # activation and a finiteness test per value were a third of the edge CNN's 64->128
        # layer at 8x8, a fifth of ResNet-18's 64->64 at 56x56)
        for co in range(co0, co1):
            if co + 1 < co1 and not self.pool:
                # the next channel's rows of these tiles, asked for now: each channel's tiles
                # write m rows of a new plane, and the stores waited for those lines
                # (ResNet-18's 56x56 convs 3-7% faster, 28x28 2-5%; the model 2%)
                l = 0
                while l < ln.count:     # a line holds the rows of 16 // m tiles side by side
                    oh = ln.ih[l] + g.pad_top
                    ow = ln.iw[l] + g.pad_left
                    for i in range(min(m, g.h_out - oh)):
                        prefetch_line(&self.out[ln.img[l], co + 1, oh + i, ow])
                    l = l + 16 // m
            output_transform(mm + co * NR, self.mrows * NR, tmp, y, self.a,
                             self.bias[co] if g.has_bias else 0.0)
            if self.fin != FIN_SCALAR:
                spread = vf8_zero()    # sums v - v: NaN in a lane that met a NaN or an Inf
                for k in range(0, m * m * NR, 8):
                    spread = vf8_add(spread, vf8_sub(vf8_load(y + k), vf8_load(y + k)))
                if not self.has_w or vf8_hsum(spread) == 0.0:   # lanes are 0 or NaN
                    if g.has_residual:
                        for l in range(ln.count):
                            oh = ln.ih[l] + g.pad_top
                            ow = ln.iw[l] + g.pad_left
                            move_block(&self.residual[ln.img[l], co, oh, ow], g.w_out, 1,
                                       y + l, m * NR, NR, min(m, g.h_out - oh),
                                       min(m, g.w_out - ow), True)
                    for k in range(0, m * m * NR, 8):
                        vf8_store(y + k, finish_vec(vf8_load(y + k), self.fin, lo, hi, g.act,
                                                    g.alpha, g.beta))
                    if self.pool:
                        self.pool_store(ln, co, y, tmp)
                        continue
                    for l in range(ln.count):
                        oh = ln.ih[l] + g.pad_top
                        ow = ln.iw[l] + g.pad_left
                        move_block(y + l, m * NR, NR, &self.out[ln.img[l], co, oh, ow], g.w_out,
                                   1, min(m, g.h_out - oh), min(m, g.w_out - ow), False)
                    continue
            for l in range(ln.count):
                oh = ln.ih[l] + g.pad_top
                ow = ln.iw[l] + g.pad_left
                oc = &self.out[ln.img[l], co, 0, 0] if not self.pool else NULL
                rc = &self.residual[ln.img[l], co, 0, 0] if g.has_residual else NULL
                for i in range(min(m, g.h_out - oh)):
                    for j in range(min(m, g.w_out - ow)):
                        val = y[(i * m + j) * NR + l]
                        if self.has_w and val - val != 0.0:
                            # NaN/Inf in a tile's input reaches all m*m outputs of the tile
                            # through the transforms (and large values can overflow there):
                            # a non-finite output is recomputed directly, so NaN/Inf spread
                            # only over each input's receptive field, as in a direct conv
                            val = self.direct_at(ln.img[l], co, oh + i, ow + j)
                        if rc != NULL:
                            val = val + rc[(oh + i) * g.w_out + ow + j]
                        if self.pool:    # finished in place, pooled below
                            y[(i * m + j) * NR + l] = act_scalar(val, g.act, g.alpha, g.beta)
                        else:
                            oc[(oh + i) * g.w_out + ow + j] = act_scalar(val, g.act, g.alpha,
                                                                         g.beta)
            if self.pool:
                self.pool_store(ln, co, y, tmp)

    cdef void block(self, Py_ssize_t blk, Py_ssize_t p0, Py_ssize_t p1,
                    float *work) noexcept nogil:
        """Tiles [blk*16, blk*16 + 16) of the (image, tile row, tile column) list, output
        channel panels [p0, p1) (6 channels each), one thread with its own scratch slot."""
        cdef Lanes ln
        cdef float *v = work
        cdef float *mm = v + self.v_size
        cdef float *d = mm + self.m_size
        cdef float *tmp = d + self.a * self.a * NR
        cdef float *y = tmp + self.a * self.a * 8
        cdef Py_ssize_t pos, panels = self.mrows // MR
        ln = self.lanes_of(blk)
        self.clear_patches(&ln, d)
        self.input_channels(&ln, 0, self.g.c_in, v, d, tmp)
        if p0 == 0 and p1 == panels:
            self.gemm_items(0, self.a * self.a * panels, v, mm)
        else:
            for pos in range(self.a * self.a):
                self.gemm_items(pos * panels + p0, pos * panels + p1, v, mm)
        self.output_channels(&ln, p0 * MR, min(p1 * MR, self.g.c_out), mm, tmp, y)

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t total = self.blocks, t, blk, i, tid
        cdef Py_ssize_t macs = self.tiles * self.a * self.a * self.g.c_in * self.g.c_out
        cdef Py_ssize_t nt = min(<Py_ssize_t>max(1, self.num_threads), self.slots,
                                 max(1, macs // MIN_MACS_PER_THREAD))
        cdef Py_ssize_t panels = self.mrows // MR, items = self.a * self.a * panels
        cdef float *work = &self.work[0]
        cdef Py_ssize_t stride = self.slot_size
        cdef float *own
        cdef Lanes ln
        if total == 0:
            return
        if nt <= 1:
            for t in range(total):
                self.block(t, 0, panels, work)
        elif total < 4 * nt and total % nt != 0 and panels >= 2 * nt \
                and self.v_size * sizeof(float) <= OWN_BLOCK_V_BYTES:
            # few blocks with a small V: every thread transforms the whole block into its
            # own V and computes its own range of output channels, with no barrier and
            # nothing crossing between the cores but the input (read by both). The ranges
            # are prange's iterations, not thread ids: OpenMP may give the region fewer
            # threads than asked (OMP_THREAD_LIMIT, OMP_DYNAMIC), and every range must run.
            for i in prange(nt, num_threads=nt, schedule="static"):
                for blk in range(total):
                    self.block(blk, i * panels // nt, (i + 1) * panels // nt,
                               work + threadid() * stride)
        elif total >= 4 * nt or total % nt == 0:
            # enough blocks to keep every thread busy: threads take contiguous ranges of
            # whole blocks (static), so each mostly reads input rows its counterpart in the
            # previous layer wrote, from its own caches (ResNet-18 on 2 threads: batch 1
            # 5-7%, batch 16 about 10% faster than dynamic)
            for t in prange(total, num_threads=<int>min(nt, total), schedule="static"):
                self.block(t, 0, panels, work + threadid() * stride)
        else:
            # few blocks (small images at batch 1): the threads share each block, phase by
            # phase, with V and M in the first slot and their own patch/tile buffers
            with parallel(num_threads=nt):
                tid = threadid()
                own = work + tid * stride + self.v_size + self.m_size
                for blk in range(total):
                    ln = self.lanes_of(blk)   # assigned here: private to each thread
                    self.clear_patches(&ln, own)
                    # (Cython's prange inside parallel() ends without a barrier: add them)
                    for i in prange(self.g.c_in, schedule="static"):
                        self.input_channels(&ln, i, i + 1, work, own,
                                            own + self.a * self.a * NR)
                    omp_barrier()
                    for i in prange(items, schedule="static"):
                        self.gemm_items(i, i + 1, work, work + self.v_size)
                    omp_barrier()
                    for i in prange(self.g.c_out, schedule="static"):
                        self.output_channels(&ln, i, i + 1, work + self.v_size,
                                             own + self.a * self.a * NR,
                                             own + self.a * self.a * (NR + 8))
                    omp_barrier()   # V and M are rewritten by the next block


def winograd_scratch(Py_ssize_t m, Py_ssize_t c_in, Py_ssize_t c_out):
    """Floats of scratch one thread needs for F(m,3): V, M, a patch, a row temp and the tile."""
    cdef Py_ssize_t a = m + 2, mrows = (c_out + MR - 1) // MR * MR
    return whole_lines(a * a * (c_in + mrows) * NR + a * a * NR + a * a * 8 + m * m * NR)


cdef enum:
    TRANSFORM_CB = 8    # input channels per transform chunk: 48 (channel, row) pairs
    TRANSFORM_Q = 48    # TRANSFORM_CB * MR


cdef void transform_panel(const unsigned char *w, Py_ssize_t c_out, Py_ssize_t c_in,
                          const double *scale, const double[:, ::1] g,
                          float[:, :, :, ::1] packed, Py_ssize_t p, Py_ssize_t a) noexcept nogil:
    """packed[:, p] = G w[6p : 6p+6] G^T (float64 sums, rounded once), rows past c_out zero.
    w: the bytes of (c_out, c_in, 3, 3) float32 weights at any byte offset (read bytewise);
    scale: NULL or c_out values, each weight then float32(w * scale[o]) before the transform
    (the bits of the scaled copy `ir.weights.conv_weights` makes).
    packed[pos, p] is one contiguous run over (input channel, panel row) pairs, so the
    transform works on chunks of 8 channels x 6 rows = 48 pairs with the pair innermost:
    every loop below runs over q in [0, nq) and vectorises (a scalar loop per pair was ~5x
    slower and was most of the load time of a small model)."""
    cdef double wt[9][TRANSFORM_Q]    # wt[k*3 + l][q] = w[o, c, k, l], q = (c - c0)*6 + r
    cdef double t[6][3][TRANSFORM_Q]  # t[i][l] = sum_k G[i, k] wt[k*3 + l]
    cdef double g0, g1, g2
    cdef float* dst
    cdef float v[9]
    cdef Py_ssize_t r, o, c, c0, cb, nc, nq, q, i, j, k, l
    for cb in range((c_in + TRANSFORM_CB - 1) // TRANSFORM_CB):
        c0 = cb * TRANSFORM_CB
        nc = min(TRANSFORM_CB, c_in - c0)
        nq = nc * MR
        for c in range(nc):
            for r in range(MR):
                o = p * MR + r
                q = c * MR + r
                if o < c_out:
                    memcpy(v, w + ((o * c_in + c0 + c) * 9) * sizeof(float), 9 * sizeof(float))
                    if scale != NULL:
                        for k in range(9):
                            v[k] = <float>(<double>v[k] * scale[o])
                    for k in range(9):
                        wt[k][q] = v[k]
                else:
                    for k in range(9):
                        wt[k][q] = 0.0
        for i in range(a):                   # t = G w  (a x 3 per pair)
            g0 = g[i, 0]
            g1 = g[i, 1]
            g2 = g[i, 2]
            for l in range(3):
                for q in range(nq):
                    t[i][l][q] = g0 * wt[l][q] + g1 * wt[3 + l][q] + g2 * wt[6 + l][q]
        for i in range(a):                   # U = t G^T  (a x a per pair)
            for j in range(a):
                g0 = g[j, 0]
                g1 = g[j, 1]
                g2 = g[j, 2]
                dst = &packed[i * a + j, p, c0, 0]
                for q in range(nq):
                    dst[q] = <float>(t[i][0][q] * g0 + t[i][1][q] * g1 + t[i][2][q] * g2)


def winograd_weights(w, Py_ssize_t m, int num_threads=1, scale=None, alloc=None):
    """U = G w G^T for w (c_out, c_in, 3, 3), packed as micro-kernel row panels per position:
    (a*a, ceil(c_out/6), c_in, 6), pos = row*a + column of the transformed a x a tile.
    Sums in float64, rounded once; 6-channel panels are split over `num_threads` threads
    (ResNet-18's 85 MB of transformed weights: about 20 ms, against 600 ms for a float64 einsum).
    w: float32, C-contiguous, at any byte offset (weights viewing an .onnx file are read in
    place, bytewise); anything else is converted first. scale: None, or (c_out,) float64 (a
    folded BatchNormalization's) applied to each weight, rounded to float32, before the
    transform: the bits of transforming `ir.weights.conv_weights(w, scale)`, with no scaled
    copy of the weights in between. alloc: where U's memory comes from (gemm.packed_array)."""
    cdef Py_ssize_t a = m + 2, p, mp, c_out, c_in
    G = np.ascontiguousarray(WINOGRAD_MATRICES[m]["G"], np.float64)
    if not (isinstance(w, np.ndarray) and w.dtype == np.float32 and w.flags.c_contiguous):
        w = np.ascontiguousarray(w, np.float32)
    cdef const double[:, ::1] gv = G
    if w.ndim != 4 or w.shape[2] != 3 or w.shape[3] != 3 or G.shape[0] != a:
        raise ValueError("winograd_weights: 3x3 weights and m = 2 or 4")
    c_out, c_in = w.shape[0], w.shape[1]
    cdef const double[::1] sc
    cdef const double *scp = NULL
    if scale is not None:
        sc = np.ascontiguousarray(scale, np.float64).reshape(-1)
        if sc.shape[0] != c_out:
            raise ValueError(f"winograd_weights: {sc.shape[0]} scale values for {c_out} channels")
        if c_out:
            scp = &sc[0]
    mp = (c_out + MR - 1) // MR
    packed = packed_array((a * a, mp, c_in, MR), alloc)
    if c_out == 0 or c_in == 0:
        return packed
    cdef const unsigned char[::1] raw = w.reshape(-1).view(np.uint8)
    cdef const unsigned char *src = &raw[0]
    cdef float[:, :, :, ::1] pv = packed
    cdef int nt = max(1, min(num_threads, <int>mp))
    with nogil:
        for p in prange(mp, num_threads=nt, schedule="dynamic"):
            transform_panel(src, c_out, c_in, scp, gv, pv, p, a)
    return packed


def conv2d_winograd(x, w, bias, out, pads=(0, 0), m=4, act=0, alpha=0.0, beta=0.0,
                    residual=None, num_threads=1):
    """Winograd F(m,3) NCHW convolution into `out` (tests and bench); 3x3, stride 1."""
    slots = max(1, num_threads)
    s = ConvWinogradStep(x, winograd_weights(w, m), bias, residual, out, pads, m, act, alpha,
                         beta, None, slots, np.ascontiguousarray(w, np.float32))
    s.num_threads = num_threads
    s()

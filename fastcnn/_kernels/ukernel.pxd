# Register-tile micro-kernels shared by the packed GEMM, the GEMM convolutions and Winograd.
#
# Every fast dense/conv path ends in `ukernel_6x16` (or `ukernel_1x16` for single-row GEMV):
#   C[0:mr, 0:nr] (+)= A[0:mr, 0:kc] @ B[0:kc, 0:nr]      mr <= MR = 6, nr <= NR = 16
# with A read through two strides (element (r, p) at a[r*a_rs + p*a_ks]; packed weight panels
# have a_rs = 1, a_ks = MR, a plain row-major matrix a_rs = lda, a_ks = 1) and B read as rows of
# NR floats (row p at b + p*ldb; a packed panel has ldb = NR). Rows r >= mr of A are never read:
# their pointers are clamped to row mr-1, so an unpacked A may end at row mr. B must always have
# NR readable floats per row (the callers pack partial column panels with zero padding).
#
# The epilogue of the last K block is fused into the store:
#   C = act(acc [+ C] + bias_row[i] + bias_col[j] + addend[i, j])
# ReLU, Clip, LeakyRelu, HardSigmoid, HardSwish, Sigmoid, Swish and none are applied on vectors
# (act_vec); other activations by `act_span` on the stored tile.
# The order of the additions never depends on the thread count, so results are bit-identical
# however the callers split the work, as long as they split at tile boundaries.
from fastcnn._kernels.simd cimport *
from fastcnn._kernels.simd_math cimport vf8_sigmoid
from fastcnn._kernels.act cimport (apply_act, act_span, leaky_f, ACT_NONE, ACT_IDENTITY, ACT_RELU, ACT_CLIP,
                                  ACT_LEAKY, ACT_HARDSIGMOID, ACT_HARDSWISH, ACT_SIGMOID, ACT_SWISH)

cdef enum:
    MR = 6
    NR = 16
    # Work below this many multiply-adds per thread (~6 us on one core) runs on fewer threads:
    # starting a parallel region costs a few microseconds while the workers spin (fastcnn's
    # GOMP_SPINCOUNT keeps them spinning through an inference). 1M (the former value) kept
    # LeNet's and the edge CNN's layers on one thread: LeNet-5 at batch 16 and 2 threads went
    # from 0.51 to 0.37 ms per run with 256K.
    MIN_MACS_PER_THREAD = 262144



cdef inline Py_ssize_t whole_lines(Py_ssize_t floats) noexcept nogil:
    """`floats` rounded up to whole 64-byte lines (16 floats): the size of every per-thread
    scratch slot, so no two threads ever write one cache line (a shared line bounced between
    the cores made the 2-thread depthwise slower than 1 thread)."""
    return (floats + 15) // 16 * 16


cdef inline int team(Py_ssize_t requested, Py_ssize_t slots, Py_ssize_t work,
                     Py_ssize_t tasks) noexcept nogil:
    """Threads for `work` multiply-adds split in `tasks`: none beyond the slots (per-thread
    scratch areas), the tasks or what the work pays for (MIN_MACS_PER_THREAD per thread)."""
    return <int>max(1, min(requested, slots, tasks, work // MIN_MACS_PER_THREAD))

cdef struct Epilogue:
    const float *bias_row   # (rows of C,) one value per row (conv: output channel) or NULL
    const float *bias_col   # (cols of C,) one value per column (dense: output feature) or NULL
    const float *addend     # same index space as C, row stride ld_addend, or NULL (residual)
    Py_ssize_t ld_addend
    int act
    float alpha, beta


cdef inline bint act_is_vector(int act, float alpha, float beta) noexcept nogil:
    """True when `act` is applied on vectors by `act_vec` (same results as apply_act)."""
    return (act == ACT_NONE or act == ACT_IDENTITY or act == ACT_RELU or act == ACT_LEAKY
            or act == ACT_HARDSIGMOID or act == ACT_HARDSWISH or act == ACT_SIGMOID
            or act == ACT_SWISH or (act == ACT_CLIP and alpha <= beta))


cdef inline float act_scalar(float v, int act, float alpha, float beta) noexcept nogil:
    """apply_act with the common cases (none, ReLU, LeakyRelu) inline: apply_act is a long chain
    of tests that the compiler keeps as a call."""
    if act == ACT_NONE or act == ACT_IDENTITY:
        return v
    if act == ACT_RELU:
        return 0.0 if v < 0 else v
    if act == ACT_LEAKY:
        return leaky_f(v, alpha)
    return apply_act(v, act, alpha, beta)


cdef inline vf8 hardsigmoid_vec(vf8 v, float alpha, float beta) noexcept nogil:
    """hardsigmoid_f on eight lanes: clip(alpha*v + beta, 0, 1), NaN stays NaN. A multiply
    then an add, both rounded, as the scalar code (built with -std=c99, which keeps gcc from
    contracting it into an FMA): the same bits."""
    cdef vf8 t = vf8_add(vf8_mul(vf8_set1(alpha), v), vf8_set1(beta))
    return vf8_min(vf8_max(t, vf8_zero()), vf8_set1(1.0))


cdef inline vf8 act_vec(vf8 v, int act, float alpha, float beta) noexcept nogil:
    # vf8_max/min return their first operand when it is NaN, as the scalar apply_act does,
    # and max(-0.0, 0.0) gives -0.0 there too; LeakyRelu selects on v < 0 as leaky_f does.
    if act == ACT_RELU:
        return vf8_max(v, vf8_zero())
    if act == ACT_CLIP:
        return vf8_min(vf8_max(v, vf8_set1(alpha)), vf8_set1(beta))
    if act == ACT_LEAKY:
        return vf8_select_lt0(v, vf8_mul(vf8_set1(alpha), v), v)
    if act == ACT_HARDSIGMOID:
        return hardsigmoid_vec(v, alpha, beta)
    if act == ACT_HARDSWISH:
        return vf8_mul(v, hardsigmoid_vec(v, <float>(1.0 / 6.0), <float>0.5))
    if act == ACT_SIGMOID:
        return vf8_sigmoid(v)
    if act == ACT_SWISH:
        return vf8_mul(v, vf8_sigmoid(vf8_mul(vf8_set1(alpha), v)))
    return v


# How a direct kernel finishes a stored vector, chosen once per step by finish_kind: the common
# activations inline, the other vector ones through act_vec, the rest by act_span after the store.
cdef enum:
    FIN_NONE = 0     # store as is
    FIN_RELU = 1
    FIN_CLIP = 2     # min(max(v, lo), hi)
    FIN_SCALAR = 3   # act_span on the stored floats
    FIN_VEC = 4      # act_vec (LeakyRelu, HardSigmoid, HardSwish, Sigmoid, Swish)


cdef inline int finish_kind(int act, float alpha, float beta) noexcept nogil:
    if not act_is_vector(act, alpha, beta):
        return FIN_SCALAR
    if act == ACT_RELU:
        return FIN_RELU
    if act == ACT_CLIP:
        return FIN_CLIP
    if act == ACT_NONE or act == ACT_IDENTITY:
        return FIN_NONE
    return FIN_VEC


cdef inline vf8 finish_vec(vf8 v, int fin, vf8 lo, vf8 hi, int act, float alpha,
                           float beta) noexcept nogil:
    """The vector part of a finish: v after ReLU, Clip (bounds lo/hi as vectors) or act_vec;
    unchanged for FIN_NONE and FIN_SCALAR."""
    if fin == FIN_RELU:
        return vf8_max(v, vf8_zero())
    if fin == FIN_CLIP:
        return vf8_min(vf8_max(v, lo), hi)
    if fin == FIN_VEC:
        return act_vec(v, act, alpha, beta)
    return v


cdef inline void put8(float *o, vf8 v, bint stream) noexcept nogil:
    """o[0:8] = v; stream: a non-temporal store (o 32-byte aligned)."""
    if stream:
        vf8_stream(o, v)
    else:
        vf8_store(o, v)


cdef inline void finish8(vf8 v, float *o, const float *r, int fin, vf8 lo, vf8 hi, int act,
                         float alpha, float beta, bint stream) noexcept nogil:
    """o[0:8] = act(v + r[0:8]) (r may be NULL); lo/hi: the clip bounds as vectors; stream: see
    put8 (not with FIN_SCALAR, which reads o back)."""
    if r != NULL:
        v = vf8_add(v, vf8_load(r))
    put8(o, finish_vec(v, fin, lo, hi, act, alpha, beta), stream and fin != FIN_SCALAR)
    if fin == FIN_SCALAR:
        act_span(o, o, 8, act, alpha, beta)


cdef inline void store_row16(float *c, vf8 v0, vf8 v1, bint accumulate, const Epilogue *epi,
                             Py_ssize_t i, Py_ssize_t j, bint vec_act) noexcept nogil:
    """One full 16-wide row of a tile: c[0:16] = epilogue(v [+ c]); (i, j) index bias/addend."""
    cdef vf8 t
    cdef const float *ad
    if accumulate:
        v0 = vf8_add(v0, vf8_load(c))
        v1 = vf8_add(v1, vf8_load(c + 8))
    if epi != NULL:
        if epi.bias_row != NULL:
            t = vf8_set1(epi.bias_row[i])
            v0 = vf8_add(v0, t)
            v1 = vf8_add(v1, t)
        if epi.bias_col != NULL:
            v0 = vf8_add(v0, vf8_load(epi.bias_col + j))
            v1 = vf8_add(v1, vf8_load(epi.bias_col + j + 8))
        if epi.addend != NULL:
            ad = epi.addend + i * epi.ld_addend + j
            v0 = vf8_add(v0, vf8_load(ad))
            v1 = vf8_add(v1, vf8_load(ad + 8))
        if vec_act:
            v0 = act_vec(v0, epi.act, epi.alpha, epi.beta)
            v1 = act_vec(v1, epi.act, epi.alpha, epi.beta)
    vf8_store(c, v0)
    vf8_store(c + 8, v1)


cdef inline void store_partial(const float *tile, float *c, Py_ssize_t ldc, Py_ssize_t mr,
                               Py_ssize_t nr, bint accumulate, const Epilogue *epi,
                               Py_ssize_t i0, Py_ssize_t j0) noexcept nogil:
    """Edge tile: c[r, j] = epilogue(tile[r*NR + j] [+ c[r, j]]) for r < mr, j < nr."""
    cdef Py_ssize_t r, j
    cdef float v
    for r in range(mr):
        for j in range(nr):
            v = tile[r * NR + j]
            if accumulate:
                v = v + c[r * ldc + j]
            if epi != NULL:
                if epi.bias_row != NULL:
                    v = v + epi.bias_row[i0 + r]
                if epi.bias_col != NULL:
                    v = v + epi.bias_col[j0 + j]
                if epi.addend != NULL:
                    v = v + epi.addend[(i0 + r) * epi.ld_addend + j0 + j]
                v = act_scalar(v, epi.act, epi.alpha, epi.beta)
            c[r * ldc + j] = v


cdef inline void act_tile(float *c, Py_ssize_t ldc, Py_ssize_t mr, Py_ssize_t nr,
                          const Epilogue *epi) noexcept nogil:
    cdef Py_ssize_t r
    for r in range(mr):
        act_span(c + r * ldc, c + r * ldc, nr, epi.act, epi.alpha, epi.beta)


cdef inline void ukernel_6x16(Py_ssize_t kc, const float *a, Py_ssize_t a_rs, Py_ssize_t a_ks,
                              const float *b, Py_ssize_t ldb, float *c, Py_ssize_t ldc,
                              Py_ssize_t mr, Py_ssize_t nr, bint accumulate,
                              const Epilogue *epi, Py_ssize_t i0, Py_ssize_t j0) noexcept nogil:
    """C (mr, nr) at c (row stride ldc) (+)= A (mr, kc) @ B (kc, NR); epilogue when epi != NULL.
    (i0, j0): position of the tile in the epilogue's bias/addend index space. kc >= 1."""
    cdef vf8 c00 = vf8_zero(), c01 = vf8_zero(), c10 = vf8_zero(), c11 = vf8_zero()
    cdef vf8 c20 = vf8_zero(), c21 = vf8_zero(), c30 = vf8_zero(), c31 = vf8_zero()
    cdef vf8 c40 = vf8_zero(), c41 = vf8_zero(), c50 = vf8_zero(), c51 = vf8_zero()
    cdef vf8 b0, b1, av
    cdef const float *a0 = a
    cdef const float *a1 = a + (1 if mr > 1 else 0) * a_rs
    cdef const float *a2 = a + (2 if mr > 2 else mr - 1) * a_rs
    cdef const float *a3 = a + (3 if mr > 3 else mr - 1) * a_rs
    cdef const float *a4 = a + (4 if mr > 4 else mr - 1) * a_rs
    cdef const float *a5 = a + (5 if mr > 5 else mr - 1) * a_rs
    cdef Py_ssize_t p
    cdef bint vec_act
    cdef float tile[MR * NR]
    for p in range(kc):
        b0 = vf8_load(b)
        b1 = vf8_load(b + 8)
        av = vf8_set1(a0[0])
        c00 = vf8_fmadd(av, b0, c00)
        c01 = vf8_fmadd(av, b1, c01)
        av = vf8_set1(a1[0])
        c10 = vf8_fmadd(av, b0, c10)
        c11 = vf8_fmadd(av, b1, c11)
        av = vf8_set1(a2[0])
        c20 = vf8_fmadd(av, b0, c20)
        c21 = vf8_fmadd(av, b1, c21)
        av = vf8_set1(a3[0])
        c30 = vf8_fmadd(av, b0, c30)
        c31 = vf8_fmadd(av, b1, c31)
        av = vf8_set1(a4[0])
        c40 = vf8_fmadd(av, b0, c40)
        c41 = vf8_fmadd(av, b1, c41)
        av = vf8_set1(a5[0])
        c50 = vf8_fmadd(av, b0, c50)
        c51 = vf8_fmadd(av, b1, c51)
        a0 += a_ks
        a1 += a_ks
        a2 += a_ks
        a3 += a_ks
        a4 += a_ks
        a5 += a_ks
        b += ldb
    if mr == MR and nr == NR:
        vec_act = epi == NULL or act_is_vector(epi.act, epi.alpha, epi.beta)
        store_row16(c, c00, c01, accumulate, epi, i0, j0, vec_act)
        store_row16(c + ldc, c10, c11, accumulate, epi, i0 + 1, j0, vec_act)
        store_row16(c + 2 * ldc, c20, c21, accumulate, epi, i0 + 2, j0, vec_act)
        store_row16(c + 3 * ldc, c30, c31, accumulate, epi, i0 + 3, j0, vec_act)
        store_row16(c + 4 * ldc, c40, c41, accumulate, epi, i0 + 4, j0, vec_act)
        store_row16(c + 5 * ldc, c50, c51, accumulate, epi, i0 + 5, j0, vec_act)
        if not vec_act:
            act_tile(c, ldc, MR, NR, epi)
        return
    vf8_store(tile, c00)
    vf8_store(tile + 8, c01)
    vf8_store(tile + 16, c10)
    vf8_store(tile + 24, c11)
    vf8_store(tile + 32, c20)
    vf8_store(tile + 40, c21)
    vf8_store(tile + 48, c30)
    vf8_store(tile + 56, c31)
    vf8_store(tile + 64, c40)
    vf8_store(tile + 72, c41)
    vf8_store(tile + 80, c50)
    vf8_store(tile + 88, c51)
    store_partial(tile, c, ldc, mr, nr, accumulate, epi, i0, j0)


cdef inline void ukernel_1x16(Py_ssize_t kc, const float *a, Py_ssize_t a_ks, const float *b,
                              Py_ssize_t ldb, float *c, Py_ssize_t nr, bint accumulate,
                              const Epilogue *epi, Py_ssize_t i0, Py_ssize_t j0) noexcept nogil:
    """One row: c[0:nr] (+)= a (kc,) @ B (kc, NR) (GEMV panel), epilogue when epi != NULL.
    Four independent accumulator pairs hide the FMA latency; their sum order is fixed."""
    cdef vf8 s0 = vf8_zero(), s1 = vf8_zero(), t0 = vf8_zero(), t1 = vf8_zero()
    cdef vf8 u0 = vf8_zero(), u1 = vf8_zero(), w0 = vf8_zero(), w1 = vf8_zero(), av
    cdef Py_ssize_t p, k4 = kc - kc % 4
    cdef float tile[NR]
    cdef bint vec_act
    p = 0
    while p < k4:
        av = vf8_set1(a[0])
        s0 = vf8_fmadd(av, vf8_load(b), s0)
        s1 = vf8_fmadd(av, vf8_load(b + 8), s1)
        av = vf8_set1(a[a_ks])
        t0 = vf8_fmadd(av, vf8_load(b + ldb), t0)
        t1 = vf8_fmadd(av, vf8_load(b + ldb + 8), t1)
        av = vf8_set1(a[2 * a_ks])
        u0 = vf8_fmadd(av, vf8_load(b + 2 * ldb), u0)
        u1 = vf8_fmadd(av, vf8_load(b + 2 * ldb + 8), u1)
        av = vf8_set1(a[3 * a_ks])
        w0 = vf8_fmadd(av, vf8_load(b + 3 * ldb), w0)
        w1 = vf8_fmadd(av, vf8_load(b + 3 * ldb + 8), w1)
        a += 4 * a_ks
        b += 4 * ldb
        p = p + 4
    while p < kc:
        av = vf8_set1(a[0])
        s0 = vf8_fmadd(av, vf8_load(b), s0)
        s1 = vf8_fmadd(av, vf8_load(b + 8), s1)
        a += a_ks
        b += ldb
        p = p + 1
    s0 = vf8_add(vf8_add(s0, t0), vf8_add(u0, w0))
    s1 = vf8_add(vf8_add(s1, t1), vf8_add(u1, w1))
    if nr == NR:
        vec_act = epi == NULL or act_is_vector(epi.act, epi.alpha, epi.beta)
        store_row16(c, s0, s1, accumulate, epi, i0, j0, vec_act)
        if not vec_act:
            act_tile(c, NR, 1, NR, epi)
        return
    vf8_store(tile, s0)
    vf8_store(tile + 8, s1)
    store_partial(tile, c, NR, 1, nr, accumulate, epi, i0, j0)


cdef inline void pack_b_edge(const float *b, Py_ssize_t ldb, Py_ssize_t kc, Py_ssize_t nr,
                             float *dst) noexcept nogil:
    """dst (kc, NR) = B[0:kc, 0:nr] zero-padded to NR columns (a partial column panel)."""
    cdef Py_ssize_t p, j
    for p in range(kc):
        for j in range(nr):
            dst[p * NR + j] = b[p * ldb + j]
        for j in range(nr, NR):
            dst[p * NR + j] = 0.0


# ----------------------------------------------------------------------------- blocked layouts
# NCHW8c ("blocked") tensors hold channel c of pixel p at ((c // 8)*pixels + p)*8 + c % 8, so
# a pixel's 8 channels of one block are one vector. The pointwise conv on them is a GEMM with
# pixels as rows and output channels as columns: C (pixels, c_out) = A (pixels, c_in) @ W^T,
# with A read in 8-wide K blocks and each row of C stored as two 8-channel vectors in two blocks.

cdef struct SplitEpilogue:
    const float *bias   # the tile's columns (channels: 16, or 24 for 4x24 tiles), or NULL
    const float *res    # residual at the same offsets as C (row r, block f), or NULL
    int act
    float alpha, beta
    int fin             # finish_kind(act, alpha, beta), chosen once by the step
    bint stream         # store with non-temporal stores (C 32-byte aligned, not re-read soon)


cdef inline bint fin_inline(const SplitEpilogue *epi) noexcept nogil:
    """True when a blocked tile's finish is none, ReLU or Clip (or there is no epilogue): the
    kernels then store a full tile straight from their registers with put_fin, which saves
    store_tile_blk's loop (about 60 cycles a tile, half of a 24-channel K block's FMAs)."""
    return epi == NULL or epi.fin == FIN_NONE or epi.fin == FIN_RELU or epi.fin == FIN_CLIP


cdef inline vf8 with_addends(float *c, Py_ssize_t off, vf8 v, bint accumulate,
                             const SplitEpilogue *epi, Py_ssize_t bias_off) noexcept nogil:
    """v [+ c[off:off+8]] [+ bias[bias_off:]] [+ residual[off:]]: a blocked store's additions
    before the activation, in the order every blocked kernel uses."""
    if accumulate:
        v = vf8_add(v, vf8_load(c + off))
    if epi != NULL:
        if epi.bias != NULL:
            v = vf8_add(v, vf8_load(epi.bias + bias_off))
        if epi.res != NULL:
            v = vf8_add(v, vf8_load(epi.res + off))
    return v


cdef inline void put_fin(float *c, Py_ssize_t off, vf8 v, bint accumulate,
                         const SplitEpilogue *epi, Py_ssize_t bias_off, vf8 lo,
                         vf8 hi) noexcept nogil:
    """c[off:off+8] = finish(with_addends(...)) for the finishes fin_inline accepts (none,
    ReLU, Clip with bounds lo/hi), streamed when epi.stream. Written out here rather than
    through finish_vec, whose act_vec makes it too large for gcc to inline per vector."""
    v = with_addends(c, off, v, accumulate, epi, bias_off)
    if epi != NULL:
        if epi.fin == FIN_CLIP:
            v = vf8_min(vf8_max(v, lo), hi)
        elif epi.fin == FIN_RELU:
            v = vf8_max(v, vf8_zero())
        if epi.stream:
            vf8_stream(c + off, v)
            return
    vf8_store(c + off, v)


cdef inline void clip_bounds(const SplitEpilogue *epi, vf8 *lo, vf8 *hi) noexcept nogil:
    """The Clip bounds of epi as vectors (unused for other finishes)."""
    if epi != NULL and epi.fin == FIN_CLIP:
        lo[0] = vf8_set1(epi.alpha)
        hi[0] = vf8_set1(epi.beta)
    else:
        lo[0] = vf8_zero()
        hi[0] = vf8_zero()


cdef inline void store_tile_blk(const vf8 *t, Py_ssize_t mr, Py_ssize_t nb, float *c,
                                Py_ssize_t ldc, Py_ssize_t c_blk, bint accumulate,
                                const SplitEpilogue *epi) noexcept nogil:
    """Store a blocked tile: t[r*nb + f] (rows r < mr, channel blocks f < nb) to
    c + r*ldc + f*c_blk, with the epilogue when epi != NULL (bias epi.bias[8f:8f+8], residual at
    the same offset from epi.res), finished by finish8. One call per tile (partial tiles, and
    finishes other than none/ReLU/Clip): the kernels hand their accumulators over in an array,
    where a store helper per vector was a call per vector (gcc does not inline it into the
    large task loops) that also spilled every accumulator around it."""
    cdef Py_ssize_t r, f, off
    cdef vf8 lo, hi, v
    cdef int fin = epi.fin if epi != NULL else FIN_NONE
    clip_bounds(epi, &lo, &hi)
    if fin_inline(epi) and not (epi != NULL and epi.stream):
        # none, ReLU, Clip: the loop with the finish chosen outside it
        for r in range(mr):
            for f in range(nb):
                off = r * ldc + f * c_blk
                v = with_addends(c, off, t[r * nb + f], accumulate, epi, 8 * f)
                if fin == FIN_CLIP:
                    v = vf8_min(vf8_max(v, lo), hi)
                elif fin == FIN_RELU:
                    v = vf8_max(v, vf8_zero())
                vf8_store(c + off, v)
        return
    for r in range(mr):
        for f in range(nb):
            off = r * ldc + f * c_blk
            v = with_addends(c, off, t[r * nb + f], accumulate, epi, 8 * f)
            finish8(v, c + off, NULL, fin, lo, hi, epi.act, epi.alpha, epi.beta, epi.stream)


cdef inline void ukernel_6x16_blk(Py_ssize_t kb, const float *a, Py_ssize_t a_rs,
                                  Py_ssize_t a_bs, const float *b, float *c, Py_ssize_t ldc,
                                  Py_ssize_t c_hi, Py_ssize_t mr, bint two, bint accumulate,
                                  const SplitEpilogue *epi) noexcept nogil:
    """C (mr, 16 or 8) (+)= A (mr, 8*kb) @ B (8*kb, 16), epilogue when epi != NULL (kb >= 1).

    A in 8-wide K blocks: element (r, 8*q + t) at a[r*a_rs + q*a_bs + t] (rows r >= mr are never
    read). B: packed rows of 16 floats (ldb = 16, zero columns past the real ones). C row r:
    columns 0..7 at c + r*ldc, columns 8..15 at c + r*ldc + c_hi, stored only when `two`.
    Each output sums its K terms in order, whatever the tile position: bit-identical results
    for any split of the rows or columns."""
    cdef vf8 c00 = vf8_zero(), c01 = vf8_zero(), c10 = vf8_zero(), c11 = vf8_zero()
    cdef vf8 c20 = vf8_zero(), c21 = vf8_zero(), c30 = vf8_zero(), c31 = vf8_zero()
    cdef vf8 c40 = vf8_zero(), c41 = vf8_zero(), c50 = vf8_zero(), c51 = vf8_zero()
    cdef vf8 b0, b1, av
    cdef const float *a0 = a
    cdef const float *a1 = a + (1 if mr > 1 else 0) * a_rs
    cdef const float *a2 = a + (2 if mr > 2 else mr - 1) * a_rs
    cdef const float *a3 = a + (3 if mr > 3 else mr - 1) * a_rs
    cdef const float *a4 = a + (4 if mr > 4 else mr - 1) * a_rs
    cdef const float *a5 = a + (5 if mr > 5 else mr - 1) * a_rs
    cdef Py_ssize_t q, t
    cdef vf8 lo, hi
    cdef vf8 tile[12]
    for q in range(kb):
        for t in range(8):
            b0 = vf8_load_held(b)
            b1 = vf8_load_held(b + 8)
            av = vf8_set1(a0[t])
            c00 = vf8_fmadd(av, b0, c00)
            c01 = vf8_fmadd(av, b1, c01)
            av = vf8_set1(a1[t])
            c10 = vf8_fmadd(av, b0, c10)
            c11 = vf8_fmadd(av, b1, c11)
            av = vf8_set1(a2[t])
            c20 = vf8_fmadd(av, b0, c20)
            c21 = vf8_fmadd(av, b1, c21)
            av = vf8_set1(a3[t])
            c30 = vf8_fmadd(av, b0, c30)
            c31 = vf8_fmadd(av, b1, c31)
            av = vf8_set1(a4[t])
            c40 = vf8_fmadd(av, b0, c40)
            c41 = vf8_fmadd(av, b1, c41)
            av = vf8_set1(a5[t])
            c50 = vf8_fmadd(av, b0, c50)
            c51 = vf8_fmadd(av, b1, c51)
            b += NR
        a0 += a_bs
        a1 += a_bs
        a2 += a_bs
        a3 += a_bs
        a4 += a_bs
        a5 += a_bs
    if two and mr == 6 and fin_inline(epi):
        clip_bounds(epi, &lo, &hi)
        put_fin(c, 0, c00, accumulate, epi, 0, lo, hi)
        put_fin(c, c_hi, c01, accumulate, epi, 8, lo, hi)
        put_fin(c, ldc, c10, accumulate, epi, 0, lo, hi)
        put_fin(c, ldc + c_hi, c11, accumulate, epi, 8, lo, hi)
        put_fin(c, 2 * ldc, c20, accumulate, epi, 0, lo, hi)
        put_fin(c, 2 * ldc + c_hi, c21, accumulate, epi, 8, lo, hi)
        put_fin(c, 3 * ldc, c30, accumulate, epi, 0, lo, hi)
        put_fin(c, 3 * ldc + c_hi, c31, accumulate, epi, 8, lo, hi)
        put_fin(c, 4 * ldc, c40, accumulate, epi, 0, lo, hi)
        put_fin(c, 4 * ldc + c_hi, c41, accumulate, epi, 8, lo, hi)
        put_fin(c, 5 * ldc, c50, accumulate, epi, 0, lo, hi)
        put_fin(c, 5 * ldc + c_hi, c51, accumulate, epi, 8, lo, hi)
        return
    if two:
        tile[0], tile[1], tile[2], tile[3], tile[4], tile[5] = c00, c01, c10, c11, c20, c21
        tile[6], tile[7], tile[8], tile[9], tile[10], tile[11] = c30, c31, c40, c41, c50, c51
        store_tile_blk(tile, mr, 2, c, ldc, c_hi, accumulate, epi)
    else:
        tile[0], tile[1], tile[2], tile[3], tile[4], tile[5] = c00, c10, c20, c30, c40, c50
        store_tile_blk(tile, mr, 1, c, ldc, c_hi, accumulate, epi)


cdef inline void ukernel_2x16_blk(Py_ssize_t kb, const float *a, Py_ssize_t a_rs,
                                  Py_ssize_t a_bs, const float *b, float *c, Py_ssize_t ldc,
                                  Py_ssize_t c_hi, Py_ssize_t mr, bint two, bint accumulate,
                                  const SplitEpilogue *epi) noexcept nogil:
    """ukernel_6x16_blk for a band's last one or two pixels (mr <= 2): a 6-row tile would cost
    them as much as six (a 7x7 image is 8 tiles of 6 and one pixel: 9% of those layers).
    Same arguments and the same K order, so the same bits."""
    cdef vf8 c00 = vf8_zero(), c01 = vf8_zero(), c10 = vf8_zero(), c11 = vf8_zero()
    cdef vf8 b0, b1, av
    cdef const float *a0 = a
    cdef const float *a1 = a + (1 if mr > 1 else 0) * a_rs
    cdef Py_ssize_t q, t
    cdef vf8 tile[4]
    for q in range(kb):
        for t in range(8):
            b0 = vf8_load(b)
            b1 = vf8_load(b + 8)
            av = vf8_set1(a0[t])
            c00 = vf8_fmadd(av, b0, c00)
            c01 = vf8_fmadd(av, b1, c01)
            av = vf8_set1(a1[t])
            c10 = vf8_fmadd(av, b0, c10)
            c11 = vf8_fmadd(av, b1, c11)
            b += NR
        a0 += a_bs
        a1 += a_bs
    if two:
        tile[0], tile[1], tile[2], tile[3] = c00, c01, c10, c11
        store_tile_blk(tile, mr, 2, c, ldc, c_hi, accumulate, epi)
    else:
        tile[0], tile[1] = c00, c10
        store_tile_blk(tile, mr, 1, c, ldc, c_hi, accumulate, epi)


cdef inline void ukernel_12x8_blk(Py_ssize_t kb, const float *a, Py_ssize_t a_rs,
                                  Py_ssize_t a_bs, const float *b, float *c, Py_ssize_t ldc,
                                  Py_ssize_t mr, bint accumulate,
                                  const SplitEpilogue *epi) noexcept nogil:
    """ukernel_6x16_blk for a last panel of 8 columns: C (mr <= 12, 8) (+)= A (mr, 8*kb) @
    B (8*kb, 8), with B rows read 16 floats apart (a packed panel's first half). Twelve rows
    keep twelve FMA chains busy where a 6x16 tile would compute 8 zero columns."""
    cdef vf8 c0 = vf8_zero(), c1 = vf8_zero(), c2 = vf8_zero(), c3 = vf8_zero()
    cdef vf8 c4 = vf8_zero(), c5 = vf8_zero(), c6 = vf8_zero(), c7 = vf8_zero()
    cdef vf8 c8 = vf8_zero(), c9 = vf8_zero(), c10 = vf8_zero(), c11 = vf8_zero()
    cdef vf8 b0, v1
    cdef const float *ar[12]
    cdef Py_ssize_t q, t, r
    cdef vf8 lo, hi
    cdef vf8 tile[12]
    for r in range(12):
        ar[r] = a + (r if r < mr else mr - 1) * a_rs
    for q in range(kb):
        for t in range(8):
            b0 = vf8_load(b)
            c0 = vf8_fmadd(vf8_set1(ar[0][t]), b0, c0)
            c1 = vf8_fmadd(vf8_set1(ar[1][t]), b0, c1)
            c2 = vf8_fmadd(vf8_set1(ar[2][t]), b0, c2)
            c3 = vf8_fmadd(vf8_set1(ar[3][t]), b0, c3)
            c4 = vf8_fmadd(vf8_set1(ar[4][t]), b0, c4)
            c5 = vf8_fmadd(vf8_set1(ar[5][t]), b0, c5)
            c6 = vf8_fmadd(vf8_set1(ar[6][t]), b0, c6)
            c7 = vf8_fmadd(vf8_set1(ar[7][t]), b0, c7)
            c8 = vf8_fmadd(vf8_set1(ar[8][t]), b0, c8)
            c9 = vf8_fmadd(vf8_set1(ar[9][t]), b0, c9)
            c10 = vf8_fmadd(vf8_set1(ar[10][t]), b0, c10)
            c11 = vf8_fmadd(vf8_set1(ar[11][t]), b0, c11)
            b += NR
        for r in range(12):
            ar[r] = ar[r] + a_bs
    if mr == 12 and fin_inline(epi):
        clip_bounds(epi, &lo, &hi)
        put_fin(c, 0, c0, accumulate, epi, 0, lo, hi)
        put_fin(c, ldc, c1, accumulate, epi, 0, lo, hi)
        put_fin(c, 2 * ldc, c2, accumulate, epi, 0, lo, hi)
        put_fin(c, 3 * ldc, c3, accumulate, epi, 0, lo, hi)
        put_fin(c, 4 * ldc, c4, accumulate, epi, 0, lo, hi)
        put_fin(c, 5 * ldc, c5, accumulate, epi, 0, lo, hi)
        put_fin(c, 6 * ldc, c6, accumulate, epi, 0, lo, hi)
        put_fin(c, 7 * ldc, c7, accumulate, epi, 0, lo, hi)
        put_fin(c, 8 * ldc, c8, accumulate, epi, 0, lo, hi)
        put_fin(c, 9 * ldc, c9, accumulate, epi, 0, lo, hi)
        put_fin(c, 10 * ldc, c10, accumulate, epi, 0, lo, hi)
        put_fin(c, 11 * ldc, c11, accumulate, epi, 0, lo, hi)
        return
    tile[0], tile[1], tile[2], tile[3], tile[4], tile[5] = c0, c1, c2, c3, c4, c5
    tile[6], tile[7], tile[8], tile[9], tile[10], tile[11] = c6, c7, c8, c9, c10, c11
    store_tile_blk(tile, mr, 1, c, ldc, 0, accumulate, epi)


cdef inline void ukernel_4x24_blk(Py_ssize_t kb, const float *a, Py_ssize_t a_rs,
                                  Py_ssize_t a_bs, const float *b0, const float *b1, float *c,
                                  Py_ssize_t ldc, Py_ssize_t c_blk, Py_ssize_t mr,
                                  bint accumulate, const SplitEpilogue *epi) noexcept nogil:
    """C (mr <= 4, 24) (+)= A (mr, 8*kb) @ B (8*kb, 24), epilogue when epi != NULL (kb >= 1).

    A as in ukernel_6x16_blk. B: two packed panels of 16 columns, rows at b0 + 16*p (columns
    0..15) and b1 + 16*p (16..23: the first half of the b1 panel). C: columns 8f..8f+7 of row r
    at c + f*c_blk + r*ldc (three channel blocks of a blocked tensor); epi.bias holds the 24
    columns' biases. Four rows by three vectors keep twelve FMA chains at seven loads a step,
    where a 6x16 tile and a 12x8 tile for the last 8 columns need thirteen per twelve FMAs on
    the 8-column part. Sums in K order as the other kernels: any split gives the same bits."""
    cdef vf8 c00 = vf8_zero(), c01 = vf8_zero(), c02 = vf8_zero()
    cdef vf8 c10 = vf8_zero(), c11 = vf8_zero(), c12 = vf8_zero()
    cdef vf8 c20 = vf8_zero(), c21 = vf8_zero(), c22 = vf8_zero()
    cdef vf8 c30 = vf8_zero(), c31 = vf8_zero(), c32 = vf8_zero()
    cdef vf8 w0, w1, w2, av
    cdef const float *a0 = a
    cdef const float *a1 = a + (1 if mr > 1 else 0) * a_rs
    cdef const float *a2 = a + (2 if mr > 2 else mr - 1) * a_rs
    cdef const float *a3 = a + (3 if mr > 3 else mr - 1) * a_rs
    cdef Py_ssize_t q, t
    cdef vf8 lo, hi
    cdef vf8 tile[12]
    for q in range(kb):
        for t in range(8):
            w0 = vf8_load_held(b0)
            w1 = vf8_load_held(b0 + 8)
            w2 = vf8_load(b1)      # folded into its four FMAs: 15 live vectors, no spills
            av = vf8_set1(a0[t])
            c00 = vf8_fmadd(av, w0, c00)
            c01 = vf8_fmadd(av, w1, c01)
            c02 = vf8_fmadd(av, w2, c02)
            av = vf8_set1(a1[t])
            c10 = vf8_fmadd(av, w0, c10)
            c11 = vf8_fmadd(av, w1, c11)
            c12 = vf8_fmadd(av, w2, c12)
            av = vf8_set1(a2[t])
            c20 = vf8_fmadd(av, w0, c20)
            c21 = vf8_fmadd(av, w1, c21)
            c22 = vf8_fmadd(av, w2, c22)
            av = vf8_set1(a3[t])
            c30 = vf8_fmadd(av, w0, c30)
            c31 = vf8_fmadd(av, w1, c31)
            c32 = vf8_fmadd(av, w2, c32)
            b0 += NR
            b1 += NR
        a0 += a_bs
        a1 += a_bs
        a2 += a_bs
        a3 += a_bs
    if mr == 4 and fin_inline(epi):
        clip_bounds(epi, &lo, &hi)
        put_fin(c, 0, c00, accumulate, epi, 0, lo, hi)
        put_fin(c, c_blk, c01, accumulate, epi, 8, lo, hi)
        put_fin(c, 2 * c_blk, c02, accumulate, epi, 16, lo, hi)
        put_fin(c, ldc, c10, accumulate, epi, 0, lo, hi)
        put_fin(c, ldc + c_blk, c11, accumulate, epi, 8, lo, hi)
        put_fin(c, ldc + 2 * c_blk, c12, accumulate, epi, 16, lo, hi)
        put_fin(c, 2 * ldc, c20, accumulate, epi, 0, lo, hi)
        put_fin(c, 2 * ldc + c_blk, c21, accumulate, epi, 8, lo, hi)
        put_fin(c, 2 * ldc + 2 * c_blk, c22, accumulate, epi, 16, lo, hi)
        put_fin(c, 3 * ldc, c30, accumulate, epi, 0, lo, hi)
        put_fin(c, 3 * ldc + c_blk, c31, accumulate, epi, 8, lo, hi)
        put_fin(c, 3 * ldc + 2 * c_blk, c32, accumulate, epi, 16, lo, hi)
        return
    tile[0], tile[1], tile[2] = c00, c01, c02
    tile[3], tile[4], tile[5] = c10, c11, c12
    tile[6], tile[7], tile[8] = c20, c21, c22
    tile[9], tile[10], tile[11] = c30, c31, c32
    store_tile_blk(tile, mr, 3, c, ldc, c_blk, accumulate, epi)


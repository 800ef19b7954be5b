"""Dense kernels: C = act(A @ B + bias + addend), row-major float32.

`sgemm_rows` (and `DenseStep`) is the plain reference kernel: a row of A times B, vectorised over
N. The fast path `gemm_blocked` (`PackedDenseStep`, `BatchedMatMulStep`) runs the register-tile
micro-kernels of `ukernel.pxd`. Its tasks are single 16-column panels (or single 6-row panels
when there are few columns), each running

    for each K block of kc rows:   (one row, GEMV: the whole K at once)
      for each 16-column panel:    (its kc x 16 B panel stays in L1)
        for each 6-row panel:      ukernel_6x16 (one row: ukernel_1x16), epilogue on the last block

B is either pre-packed at load (constant weights: panels (ceil(n/16), k, 16), zero-padded) or a
plain row-major matrix read in place (only its last, partial panel is copied into scratch). A is
always read in place (row-major, row stride lda). Threads pick tasks dynamically; every output
element is computed the same way whatever the thread count: results are bit-identical between
1 and 2 threads.
"""
cimport cython
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from cython.parallel cimport prange, threadid

from fastcnn._kernels.unaligned cimport load_f32

from fastcnn._kernels.step cimport Step
from fastcnn._kernels.act cimport act_span
from fastcnn._kernels.simd cimport *
from fastcnn._kernels.ukernel cimport (MIN_MACS_PER_THREAD, MR, NR, Epilogue, ukernel_6x16,
                                       ukernel_1x16, pack_b_edge)

import numpy as np

# columns of W^T packed at a time by pack_bt_panels (64 output lines of 64 bytes: 4 KiB of L1)
cdef enum:
    PACK_QB = 64
    # panel columns (16 floats each) a packing thread gets at least (256 KB of panels): less is
    # not worth a thread's start
    PACK_MIN_COLUMNS_PER_THREAD = 4096


cdef void sgemm_rows(const float *a, Py_ssize_t lda, const float *b, Py_ssize_t ldb,
                     float *c, Py_ssize_t ldc, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,
                     bint accumulate, int num_threads) noexcept nogil:
    """c (m, n) [+]= a (m, k) @ b (k, n); leading dims in elements. Threads split the rows."""
    cdef Py_ssize_t i, p, j, n8 = n - n % 8
    cdef const float *arow
    cdef const float *brow
    cdef float *crow
    cdef float av
    cdef vf8 va
    cdef int nt = num_threads if m * k * n >= 65536 and m >= 2 else 1
    for i in prange(m, num_threads=nt, schedule="static"):
        crow = c + i * ldc
        arow = a + i * lda
        if not accumulate:
            for j in range(n):
                crow[j] = 0.0
        for p in range(k):
            av = arow[p]
            brow = b + p * ldb
            va = vf8_set1(av)
            j = 0
            while j < n8:
                vf8_store(crow + j, vf8_fmadd(va, vf8_load(brow + j), vf8_load(crow + j)))
                j = j + 8
            for j in range(n8, n):
                crow[j] = crow[j] + av * brow[j]


cdef void epilogue(float *c, Py_ssize_t ldc, Py_ssize_t m, Py_ssize_t n, const float *bias,
                   const float *addend, Py_ssize_t ld_add, int act, float alpha, float beta) noexcept nogil:
    """c[i, j] = act(c[i, j] + bias[j] + addend[i, j]) (bias/addend may be NULL)."""
    cdef Py_ssize_t i, j
    cdef float v
    for i in range(m):
        for j in range(n):
            v = c[i * ldc + j]
            if bias != NULL:
                v = v + bias[j]
            if addend != NULL:
                v = v + addend[i * ld_add + j]
            c[i * ldc + j] = v
        act_span(c + i * ldc, c + i * ldc, n, act, alpha, beta)


cdef class DenseStep(Step):
    """out (m, n) = act(x (m, k) @ w (k, n) + bias (n,) + addend (m, n)).

    bias and addend are optional (None). Gemm's alpha/beta/transB are folded into w, bias and
    addend when the plan is built."""
    cdef const float[:, ::1] x
    cdef const float[:, ::1] w
    cdef const float[::1] bias
    cdef const float[:, ::1] addend
    cdef float[:, ::1] out
    cdef bint has_bias, has_addend
    cdef int act
    cdef float alpha, beta

    def __init__(self, const float[:, ::1] x, const float[:, ::1] w, bias, addend,
                 float[:, ::1] out, int act=0, float alpha=0.0, float beta=0.0):
        cdef Py_ssize_t m = x.shape[0], k = x.shape[1], n = w.shape[1]
        if w.shape[0] != k or out.shape[0] != m or out.shape[1] != n:
            raise ValueError("DenseStep: shapes do not fit")
        self.x, self.w, self.out = x, w, out
        self.has_bias = bias is not None
        self.has_addend = addend is not None
        self.bias = bias if bias is not None else np.zeros(1, np.float32)
        self.addend = addend if addend is not None else np.zeros((1, 1), np.float32)
        if self.has_bias and self.bias.shape[0] != n:
            raise ValueError("DenseStep: bias size")
        if self.has_addend and (self.addend.shape[0] != m or self.addend.shape[1] != n):
            raise ValueError("DenseStep: addend shape")
        self.act, self.alpha, self.beta = act, alpha, beta

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t m = self.x.shape[0], k = self.x.shape[1], n = self.w.shape[1], i, j
        if m == 0 or n == 0:
            return
        if k == 0:
            for i in range(m):
                for j in range(n):
                    self.out[i, j] = 0.0
        else:
            sgemm_rows(&self.x[0, 0], k, &self.w[0, 0], n, &self.out[0, 0], n, m, k, n, False,
                       self.num_threads)
        epilogue(&self.out[0, 0], n, m, n, &self.bias[0] if self.has_bias else NULL,
                 &self.addend[0, 0] if self.has_addend else NULL, n, self.act, self.alpha,
                 self.beta)


# ----------------------------------------------------------------------------- blocked GEMM
cdef struct GemmJob:
    Py_ssize_t m, n, k
    const float *a          # A (m, k), row stride lda
    Py_ssize_t lda
    const float *bp         # packed B (ceil(n/NR), k, NR), or NULL: plain B below
    const float *b          # plain B (k, n), row stride ldb
    Py_ssize_t ldb
    float *c                # C (m, n), row stride ldc
    Py_ssize_t ldc
    Py_ssize_t kc           # K block
    const Epilogue *epi     # applied after the last K block (NULL: plain C = A @ B)


cdef void gemm_block(const GemmJob *g, Py_ssize_t ip0, Py_ssize_t ip1, Py_ssize_t jp0,
                     Py_ssize_t jp1, float *work) noexcept nogil:
    """C rows [ip0*MR, min(ip1*MR, m)) x columns [jp0*NR, min(jp1*NR, n)) of the job.
    work: kc*NR floats for a partial panel of a plain B (unused, may be NULL, with packed B)."""
    cdef Py_ssize_t pc, kc, jp, ip, i, j, mr, nr, ldbp
    cdef Py_ssize_t kc_max = g.k if g.m == 1 and g.bp != NULL else g.kc
    cdef const float *bpanel
    cdef const Epilogue *epi
    # one row (GEMV, memory-bound): stream each packed panel once, whole, without K blocks
    pc = 0
    while pc < g.k:
        kc = min(kc_max, g.k - pc)
        epi = g.epi if pc + kc == g.k else NULL
        for jp in range(jp0, jp1):
            j = jp * NR
            nr = min(NR, g.n - j)
            if g.bp != NULL:
                bpanel = g.bp + (jp * g.k + pc) * NR
                ldbp = NR
            elif nr == NR:
                bpanel = g.b + pc * g.ldb + j
                ldbp = g.ldb
            else:
                pack_b_edge(g.b + pc * g.ldb + j, g.ldb, kc, nr, work)
                bpanel = work
                ldbp = NR
            if g.m == 1:
                ukernel_1x16(kc, g.a + pc, 1, bpanel, ldbp, g.c + j, nr, pc > 0, epi, 0, j)
            else:
                for ip in range(ip0, ip1):
                    i = ip * MR
                    mr = min(MR, g.m - i)
                    ukernel_6x16(kc, g.a + i * g.lda + pc, g.lda, 1, bpanel, ldbp,
                                 g.c + i * g.ldc + j, g.ldc, mr, nr, pc > 0, epi, i, j)
        pc = pc + kc


cdef void gemm_blocked(const GemmJob *g, float *work, Py_ssize_t work_stride,
                       int num_threads) noexcept nogil:
    """Run a job on up to num_threads threads (thread t uses work + t*work_stride; work may be
    NULL when B is packed).

    Tasks are single 16-column panels (all rows), or single 6-row panels (all columns) when there
    are few column panels; threads pick tasks dynamically, so a thread delayed by another process
    on this core does not hold the others up. Small jobs (under MIN_MACS_PER_THREAD multiply-adds
    per thread) run on the calling thread: waking a thread costs microseconds."""
    cdef Py_ssize_t mp = (g.m + MR - 1) // MR, np_ = (g.n + NR - 1) // NR, task, total
    cdef int nt = num_threads
    cdef bint split_cols
    if g.m == 0 or g.n == 0:
        return
    if g.m * g.n * g.k < <Py_ssize_t>MIN_MACS_PER_THREAD * nt:
        nt = <int>max(1, g.m * g.n * g.k // MIN_MACS_PER_THREAD)
    split_cols = np_ >= 2 * nt or np_ >= mp
    total = np_ if split_cols else mp
    if nt > total:
        nt = <int>total
    if nt <= 1:
        gemm_block(g, 0, mp, 0, np_, work)
        return
    for task in prange(total, num_threads=nt, schedule="dynamic"):
        if split_cols:
            gemm_block(g, 0, mp, task, task + 1, work + threadid() * work_stride)
        else:
            gemm_block(g, task, task + 1, 0, np_, work + threadid() * work_stride)


cdef void sgemm_plain_work(const float *a, Py_ssize_t lda, const float *b, Py_ssize_t ldb,
                           float *c, Py_ssize_t ldc, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,
                           float *work, int num_threads) noexcept nogil:
    """c (m, n) = a (m, k) @ b (k, n) with the blocked register-tile GEMM, B read in place (the
    path BatchedMatMulStep runs). work: SGEMM_WORK_PER_THREAD floats per thread."""
    cdef GemmJob job
    cdef Py_ssize_t i, j
    cdef int nt = num_threads if num_threads > 1 else 1
    if m == 0 or n == 0:
        return
    if k == 0:
        for i in range(m):
            for j in range(n):
                c[i * ldc + j] = 0.0
        return
    job.m, job.n, job.k = m, n, k
    job.kc = k if k < SGEMM_KC else SGEMM_KC
    job.a, job.lda = a, lda
    job.b, job.ldb = b, ldb
    job.bp = NULL
    job.c, job.ldc = c, ldc
    job.epi = NULL
    gemm_blocked(&job, work, SGEMM_WORK_PER_THREAD, nt)


cdef void sgemm_plain(const float *a, Py_ssize_t lda, const float *b, Py_ssize_t ldb,
                      float *c, Py_ssize_t ldc, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,
                      int num_threads) noexcept nogil:
    """sgemm_plain_work with its own workspace, for callers outside plans (fine-tuning): the
    buffer is allocated per call; the row kernel runs if that fails."""
    cdef int nt = num_threads if num_threads > 1 else 1
    cdef float *work = <float *>malloc(SGEMM_WORK_PER_THREAD * nt * sizeof(float))
    if work == NULL:
        sgemm_rows(a, lda, b, ldb, c, ldc, m, k, n, False, num_threads)
        return
    sgemm_plain_work(a, lda, b, ldb, c, ldc, m, k, n, work, nt)
    free(work)


cdef inline Py_ssize_t clamp_threads(int requested, Py_ssize_t slots) noexcept nogil:
    """Threads a step may use: its scratch holds `slots` per-thread work areas."""
    return max(1, min(<Py_ssize_t>requested, slots))


cdef class PackedDenseStep(Step):
    """out (m, n) = act(x (m, k) @ W (k, n) + bias (n,) + addend (m, n)) with W packed at load
    as panels (ceil(n/16), k, 16) (see `pack_b_panels`). bias and addend are optional (None).
    kc: K block. Needs no scratch."""
    cdef const float[:, ::1] x
    cdef const float[:, :, ::1] wp
    cdef const float[::1] bias
    cdef const float[:, ::1] addend
    cdef float[:, ::1] out
    cdef Epilogue epi
    cdef GemmJob job

    def __init__(self, const float[:, ::1] x, const float[:, :, ::1] wp, bias, addend,
                 float[:, ::1] out, int act=0, float alpha=0.0, float beta=0.0,
                 Py_ssize_t kc=256):
        cdef Py_ssize_t m = x.shape[0], k = x.shape[1], n = out.shape[1]
        if (wp.shape[0] != (n + NR - 1) // NR or wp.shape[1] != k or wp.shape[2] != NR
                or out.shape[0] != m):
            raise ValueError("PackedDenseStep: shapes do not fit")
        if kc < 1:
            raise ValueError("PackedDenseStep: kc must be >= 1")
        self.x, self.wp, self.out = x, wp, out
        self.bias = bias if bias is not None else np.zeros(1, np.float32)
        self.addend = addend if addend is not None else np.zeros((1, 1), np.float32)
        if bias is not None and self.bias.shape[0] != n:
            raise ValueError("PackedDenseStep: bias size")
        if addend is not None and (self.addend.shape[0] != m or self.addend.shape[1] != n):
            raise ValueError("PackedDenseStep: addend shape")
        self.epi.bias_row = NULL
        self.epi.bias_col = &self.bias[0] if bias is not None else NULL
        self.epi.addend = &self.addend[0, 0] if addend is not None else NULL
        self.epi.ld_addend = n
        self.epi.act, self.epi.alpha, self.epi.beta = act, alpha, beta
        self.job.m, self.job.n, self.job.k = m, n, k
        self.job.a = &x[0, 0] if m and k else NULL
        self.job.lda = k
        self.job.bp = &wp[0, 0, 0] if k and n else NULL
        self.job.b = NULL
        self.job.ldb = 0
        self.job.c = &out[0, 0] if m and n else NULL
        self.job.ldc = n
        self.job.kc = kc
        self.job.epi = &self.epi

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t i, j
        if self.job.m == 0 or self.job.n == 0:
            return
        if self.job.k == 0:
            for i in range(self.job.m):
                for j in range(self.job.n):
                    self.out[i, j] = 0.0
            epilogue(&self.out[0, 0], self.job.n, self.job.m, self.job.n, self.epi.bias_col,
                     self.epi.addend, self.job.n, self.epi.act, self.epi.alpha, self.epi.beta)
        else:
            gemm_blocked(&self.job, NULL, 0, max(1, self.num_threads))


cdef class BatchedMatMulStep(Step):
    """For each t: c[c_off[t] : + m*n] (m, n) = a[a_off[t] :] (m, k) @ b[b_off[t] :] (k, n).
    Offsets (elements) were computed and bounds-checked by the caller (numpy broadcasting).
    work: scratch of at least slots*kc*16 floats (partial column panels of b)."""
    cdef const float[::1] a
    cdef const float[::1] b
    cdef float[::1] c
    cdef const long long[::1] a_off
    cdef const long long[::1] b_off
    cdef const long long[::1] c_off
    cdef float[::1] work
    cdef Py_ssize_t m, k, n, kc, slots

    def __init__(self, const float[::1] a, const float[::1] b, float[::1] c,
                 const long long[::1] a_off, const long long[::1] b_off,
                 const long long[::1] c_off, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,
                 Py_ssize_t kc=256, float[::1] work=None, Py_ssize_t slots=1):
        cdef Py_ssize_t t
        if a_off.shape[0] != b_off.shape[0] or a_off.shape[0] != c_off.shape[0]:
            raise ValueError("BatchedMatMulStep: offset arrays differ in length")
        if kc < 1 or slots < 1:
            raise ValueError("BatchedMatMulStep: kc and slots must be >= 1")
        self.a, self.b, self.c = a, b, c
        self.a_off, self.b_off, self.c_off = a_off, b_off, c_off
        self.m, self.k, self.n, self.kc, self.slots = m, k, n, kc, slots
        self.work = work if work is not None else np.zeros(kc * NR * slots, np.float32)
        if self.work.shape[0] < kc * NR * slots:
            raise ValueError("BatchedMatMulStep: work too small")
        for t in range(a_off.shape[0]):
            if (a_off[t] < 0 or a_off[t] + m * k > a.shape[0] or b_off[t] < 0
                    or b_off[t] + k * n > b.shape[0] or c_off[t] < 0 or c_off[t] + m * n > c.shape[0]):
                raise ValueError("BatchedMatMulStep: offsets out of range")

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t t, i
        cdef GemmJob job
        if self.m == 0 or self.n == 0:
            return
        job.m, job.n, job.k, job.kc = self.m, self.n, self.k, self.kc
        job.lda, job.ldb, job.ldc = self.k, self.n, self.n
        job.bp = NULL
        job.epi = NULL
        for t in range(self.a_off.shape[0]):
            if self.k == 0:
                for i in range(self.m * self.n):
                    self.c[self.c_off[t] + i] = 0.0
            else:
                job.a = &self.a[self.a_off[t]]
                job.b = &self.b[self.b_off[t]]
                job.c = &self.c[self.c_off[t]]
                gemm_blocked(&job, &self.work[0], self.kc * NR,
                             <int>clamp_threads(self.num_threads, self.slots))


def pad_bias16(bias, Py_ssize_t c_out):
    """bias (c_out,) zero-padded to a multiple of 16 (the split epilogue reads 16 per panel)."""
    out = np.zeros((c_out + NR - 1) // NR * NR, np.float32)
    if bias is not None:
        out[:c_out] = bias
    return out


cdef inline int _pack_threads(int requested, Py_ssize_t panels, Py_ssize_t k) noexcept:
    """Threads to pack `panels` panels of k rows on: one per panel range once there is enough
    to share (a panel row is 64 bytes; PACK_MIN_COLUMNS_PER_THREAD rows a thread at least)."""
    return <int>max(1, min(requested, panels * k // PACK_MIN_COLUMNS_PER_THREAD))


def _packable(a, not_2d: str):
    """a as the packers read it: a C-contiguous 2-D float32 array, a itself when it is one (at
    any byte offset: read bytewise), else a converted copy; ValueError(not_2d) otherwise."""
    if isinstance(a, np.ndarray) and a.dtype == np.float32 and a.ndim == 2 and a.flags.c_contiguous:
        return a
    a = np.ascontiguousarray(a, np.float32)
    if a.ndim != 2:
        raise ValueError(not_2d)
    return a


def pack_b_panels(b, alloc=None, int num_threads=1):
    """Pack B (k, n) for the micro-kernels: panels (ceil(n/16), k, 16), columns past n zero
    (panel j, row q holds B[q, 16j:16j+16]).

    b: float32, C-contiguous, starting at any byte (weights viewing an .onnx file are read in
    place, bytewise); anything else is converted first. alloc: where the panels' memory comes
    from (`packed_array`). num_threads: panels are packed on up to this many threads (each
    panel by one: the same bits for any count)."""
    b = _packable(b, "pack_b_panels: b must be 2-D (k, n)")
    cdef Py_ssize_t k = b.shape[0], n = b.shape[1], np_ = (n + NR - 1) // NR
    out = packed_array((np_, k, NR), alloc)
    if n == 0 or k == 0:
        return out
    cdef const unsigned char[::1] raw = b.reshape(-1).view(np.uint8)
    cdef const unsigned char *src = &raw[0]
    cdef float[:, :, ::1] o = out
    cdef Py_ssize_t j, q, cols
    cdef float *panel
    cdef int nt = _pack_threads(num_threads, np_, k)
    with nogil:
        for j in prange(np_, num_threads=nt, schedule="static"):
            cols = min(<Py_ssize_t>NR, n - j * NR)
            panel = &o[j, 0, 0]
            # each row of the panel is one run of B's row: 64 bytes copied as they are
            for q in range(k):
                memcpy(panel + q * NR, src + (q * n + j * NR) * sizeof(float), cols * sizeof(float))
                if cols < NR:
                    memset(panel + q * NR + cols, 0, (NR - cols) * sizeof(float))
    return out


def packed_array(shape, alloc=None):
    """A new float32 array of `shape` for a packer to fill: np.empty, or alloc(shape) where the
    packer is given an allocator (a model's runtime.weight_pool.WeightPool). What alloc returns
    is checked to be a writeable, C-contiguous float32 array of that shape: packers write it
    without bounds checks."""
    shape = tuple(shape)
    if alloc is None:
        return np.empty(shape, np.float32)
    out = alloc(shape)
    if not (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == shape
            and out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(f"packed_array: the allocator returned "
                         f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}, "
                         f"not a writeable C-contiguous float32 array of shape {shape}")
    return out


cdef void _pack_panel(const unsigned char *src, Py_ssize_t n, Py_ssize_t k, Py_ssize_t r0,
                      const double *scale, const long long *cols, float *panel) noexcept nogil:
    """Panel (k, NR) of pack_bt_panels from rows r0.. of bt (n, k), bt starting at any byte:
    panel[q, t] = bt[r0 + t, cols[q] or q] * scale[r0 + t], rows past n zero. The branches are
    decided once per row, so the common loops (no permutation) are plain strided copies."""
    cdef Py_ssize_t rows = min(<Py_ssize_t>NR, n - r0), q0, q1, q, t
    cdef const unsigned char *row
    cdef double s
    cdef float *line
    # PACK_QB columns at a time: the PACK_QB output lines (16 floats each) stay in L1 while
    # the panel's rows fill them, and each row is read sequentially
    q0 = 0
    while q0 < k:
        q1 = min(k, q0 + PACK_QB)
        for t in range(rows):
            row = src + (r0 + t) * k * sizeof(float)
            line = panel + t
            if cols != NULL:
                if scale != NULL:
                    s = scale[r0 + t]
                    for q in range(q0, q1):
                        line[q * NR] = <float>(<double>load_f32(row + cols[q] * sizeof(float)) * s)
                else:
                    for q in range(q0, q1):
                        line[q * NR] = load_f32(row + cols[q] * sizeof(float))
            elif scale != NULL:
                s = scale[r0 + t]
                for q in range(q0, q1):
                    line[q * NR] = <float>(<double>load_f32(row + q * sizeof(float)) * s)
            else:
                for q in range(q0, q1):
                    line[q * NR] = load_f32(row + q * sizeof(float))
        for t in range(rows, NR):
            for q in range(q0, q1):
                panel[q * NR + t] = 0.0
        q0 = q1


def pack_bt_panels(bt, scale=None, cols=None, alloc=None, int num_threads=1):
    """pack_b_panels(bt.T) for B given transposed, bt (n, k) (conv and dense weights W (c_out,
    c_in) are B^T): panels (ceil(n/16), k, 16), columns past n zero.

    bt: float32, C-contiguous, starting at any byte (weights viewing an .onnx file are read in
    place, bytewise); anything else is converted first. scale: None, or (n,) float64 applied
    per row as it is packed, each product rounded once from double (the bits of
    ir/weights.conv_weights: a folded BatchNorm's weights, with no scaled copy in between).
    cols: None, or (k,) int64, a permutation of range(k): packed column q is bt's column
    cols[q] (a conv's K reordered for a channels-last step, with no reordered copy).
    alloc: where the panels' memory comes from (`packed_array`). num_threads: panels are
    packed on up to this many threads (each panel by one: the same bits for any count)."""
    bt = _packable(bt, "pack_bt_panels: bt must be 2-D (n, k)")
    cdef Py_ssize_t n = bt.shape[0], k = bt.shape[1], np_ = (n + NR - 1) // NR
    cdef const double[::1] sc
    cdef bint scaled = scale is not None
    if scaled:
        sc = np.ascontiguousarray(scale, np.float64).reshape(-1)
        if sc.shape[0] != n:
            raise ValueError(f"pack_bt_panels: {sc.shape[0]} scale values for {n} rows")
    cdef const long long[::1] cv
    cdef bint permuted = cols is not None
    if permuted:
        cv = np.ascontiguousarray(cols, np.int64).reshape(-1)
        if cv.shape[0] != k or not np.array_equal(np.sort(cv), np.arange(k)):
            raise ValueError(f"pack_bt_panels: cols must be a permutation of range({k})")
    out = packed_array((np_, k, NR), alloc)
    if n == 0 or k == 0:
        return out
    cdef const unsigned char[::1] raw = bt.reshape(-1).view(np.uint8)
    cdef const unsigned char *src = &raw[0]
    cdef float[:, :, ::1] o = out
    cdef const double *scp = &sc[0] if scaled else NULL
    cdef const long long *cvp = &cv[0] if permuted else NULL
    cdef Py_ssize_t j
    cdef int nt = _pack_threads(num_threads, np_, k)
    with nogil:
        for j in prange(np_, num_threads=nt, schedule="static"):
            _pack_panel(src, n, k, j * NR, scp, cvp, &o[j, 0, 0])
    return out


def k_block(Py_ssize_t k, Py_ssize_t kc_max=256):
    """K block size: at most kc_max (a kc x 16 B panel stays in L1), blocks of equal size."""
    cdef Py_ssize_t blocks
    if k <= 0:
        return 1
    blocks = (k + kc_max - 1) // kc_max
    return (k + blocks - 1) // blocks


def sgemm_packed(const float[:, ::1] a, b, float[:, ::1] c, bias=None, addend=None, int act=0,
                 float alpha=0.0, float beta=0.0, bint prepack=True, Py_ssize_t kc=0,
                 int num_threads=1):
    """c (m, n) = act(a (m, k) @ b (k, n) + bias (n,) + addend (m, n)) with the blocked kernel
    (tests and bench). prepack: pack b into panels first (else b is read in place)."""
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1], n = c.shape[1]
    b = np.ascontiguousarray(b, np.float32)
    if b.shape != (k, n) or c.shape[0] != m:
        raise ValueError("sgemm_packed: shapes do not fit")
    kc = kc or k_block(k)
    if prepack:
        s = PackedDenseStep(a, pack_b_panels(b), bias, addend, c, act, alpha, beta, kc)
    else:
        if bias is not None or addend is not None or act:
            raise ValueError("sgemm_packed: epilogue needs prepack")
        s = BatchedMatMulStep(np.ascontiguousarray(a).reshape(-1), b.reshape(-1),
                              np.asarray(c).reshape(-1), np.zeros(1, np.int64),
                              np.zeros(1, np.int64), np.zeros(1, np.int64), m, k, n, kc,
                              np.zeros(kc * NR * max(num_threads, 1), np.float32),
                              max(num_threads, 1))
    s.num_threads = num_threads
    s()


def sgemm(const float[:, ::1] a, const float[:, ::1] b, float[:, ::1] c, bint accumulate=False,
          int num_threads=1):
    """c (m, n) [+]= a (m, k) @ b (k, n) with the row kernel (tests)."""
    if a.shape[1] != b.shape[0] or c.shape[0] != a.shape[0] or c.shape[1] != b.shape[1]:
        raise ValueError("sgemm: shapes do not fit")
    if a.shape[0] and b.shape[1] and a.shape[1]:
        with nogil:
            sgemm_rows(&a[0, 0], a.shape[1], &b[0, 0], b.shape[1], &c[0, 0], c.shape[1],
                       a.shape[0], a.shape[1], b.shape[1], accumulate, num_threads)

# Dense kernels other modules may cimport (declarations only; definitions in gemm.pyx).

# c (m, n) [+]= a (m, k) @ b (k, n), row-major float32; lda/ldb/ldc are row strides in elements.
# Threads split the rows of c. Training (train.pyx) routes every product through this.
cdef void sgemm_rows(const float *a, Py_ssize_t lda, const float *b, Py_ssize_t ldb,
                     float *c, Py_ssize_t ldc, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,
                     bint accumulate, int num_threads) noexcept nogil

cdef enum:
    SGEMM_KC = 256                          # K block of the plain-B GEMM
    SGEMM_WORK_PER_THREAD = 256 * 16        # floats of workspace a thread needs (SGEMM_KC * NR)

# c (m, n) = a (m, k) @ b (k, n) with the blocked micro-kernel GEMM inference uses for operands
# computed at run time (B read in place); work holds SGEMM_WORK_PER_THREAD floats per thread.
cdef void sgemm_plain_work(const float *a, Py_ssize_t lda, const float *b, Py_ssize_t ldb,
                           float *c, Py_ssize_t ldc, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,
                           float *work, int num_threads) noexcept nogil

# The same with a workspace allocated per call (for callers outside plans: fine-tuning).
cdef void sgemm_plain(const float *a, Py_ssize_t lda, const float *b, Py_ssize_t ldb,
                      float *c, Py_ssize_t ldc, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,
                      int num_threads) noexcept nogil

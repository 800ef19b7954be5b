# Declarations of gemm.pyx's C-level kernels for other kernel modules (cimport only).
cdef void sgemm_rows(const float *a, Py_ssize_t lda, const float *b, Py_ssize_t ldb,
                     float *c, Py_ssize_t ldc, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,
                     bint accumulate, int num_threads) noexcept nogil

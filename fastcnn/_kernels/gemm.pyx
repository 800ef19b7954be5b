"""Dense kernels: C = act(A @ B + bias + addend), row-major float32.

`sgemm_rows` is the plain reference-grade kernel (row of A times B, vectorised over N); the
packed, cache-blocked micro-kernel path lives beside it and is tested against it.
"""
cimport cython
from cython.parallel cimport prange

from fastcnn._kernels.step cimport Step
from fastcnn._kernels.act cimport apply_act
from fastcnn._kernels.simd cimport *

import numpy as np


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
            c[i * ldc + j] = apply_act(v, act, alpha, beta)


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

    cdef void run(self) noexcept:
        cdef Py_ssize_t m = self.x.shape[0], k = self.x.shape[1], n = self.w.shape[1], i, j
        if m == 0 or n == 0:
            return
        with nogil:
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


cdef class BatchedMatMulStep(Step):
    """For each t: c[c_off[t] : + m*n] (m, n) = a[a_off[t] :] (m, k) @ b[b_off[t] :] (k, n).
    Offsets (elements) were computed and bounds-checked by the caller (numpy broadcasting)."""
    cdef const float[::1] a
    cdef const float[::1] b
    cdef float[::1] c
    cdef const long long[::1] a_off
    cdef const long long[::1] b_off
    cdef const long long[::1] c_off
    cdef Py_ssize_t m, k, n

    def __init__(self, const float[::1] a, const float[::1] b, float[::1] c,
                 const long long[::1] a_off, const long long[::1] b_off,
                 const long long[::1] c_off, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n):
        cdef Py_ssize_t t
        self.a, self.b, self.c = a, b, c
        self.a_off, self.b_off, self.c_off = a_off, b_off, c_off
        self.m, self.k, self.n = m, k, n
        for t in range(a_off.shape[0]):
            if (a_off[t] < 0 or a_off[t] + m * k > a.shape[0] or b_off[t] < 0
                    or b_off[t] + k * n > b.shape[0] or c_off[t] < 0 or c_off[t] + m * n > c.shape[0]):
                raise ValueError("BatchedMatMulStep: offsets out of range")

    cdef void run(self) noexcept:
        cdef Py_ssize_t t, i
        if self.m == 0 or self.n == 0:
            return
        with nogil:
            for t in range(self.a_off.shape[0]):
                if self.k == 0:
                    for i in range(self.m * self.n):
                        self.c[self.c_off[t] + i] = 0.0
                else:
                    sgemm_rows(&self.a[self.a_off[t]], self.k, &self.b[self.b_off[t]], self.n,
                               &self.c[self.c_off[t]], self.n, self.m, self.k, self.n, False,
                               self.num_threads)


def sgemm(const float[:, ::1] a, const float[:, ::1] b, float[:, ::1] c, bint accumulate=False,
          int num_threads=1):
    """c (m, n) [+]= a (m, k) @ b (k, n) with the row kernel (tests)."""
    if a.shape[1] != b.shape[0] or c.shape[0] != a.shape[0] or c.shape[1] != b.shape[1]:
        raise ValueError("sgemm: shapes do not fit")
    if a.shape[0] and b.shape[1] and a.shape[1]:
        with nogil:
            sgemm_rows(&a[0, 0], a.shape[1], &b[0, 0], b.shape[1], &c[0, 0], c.shape[1],
                       a.shape[0], a.shape[1], b.shape[1], accumulate, num_threads)

"""Reduction kernels: out (outer, inner) = reduce over the middle axis of x (outer, length, inner).

Reductions over several axes run as a chain of these steps (the Python side merges adjacent
axes first), e.g. ReduceL2 over axes (1, 3) of (n, c, h, w) = SUMSQUARE over w, then SQRT_SUM
over c. Sums accumulate in double. NaN propagates through every kind (max/min included).
Empty reductions (length 0) give the identity of the reduction: 0 for sums, 1 for the
product, NaN for the mean, -inf for log-sum-exp (max/min over empty axes are refused while
planning).
"""
from cython.parallel cimport prange
from libc.math cimport expf, exp, log, sqrt, fabs, INFINITY, NAN
from libc.stdint cimport int64_t

from fastcnn._kernels.step cimport Step, threads_for

cdef enum:
    RED_SUM = 0
    RED_MEAN = 1
    RED_MAX = 2
    RED_MIN = 3
    RED_PROD = 4
    RED_L1 = 5          # sum |x|
    RED_SUMSQUARE = 6   # sum x^2
    RED_L2 = 7          # sqrt(sum x^2)
    RED_LOGSUMEXP = 8   # log(sum exp(x)), computed as m + log(sum exp(x - m))
    RED_SQRT_SUM = 9    # sqrt(sum x): the last link of a chained L2

REDUCE_CODES = {"SUM": RED_SUM, "MEAN": RED_MEAN, "MAX": RED_MAX, "MIN": RED_MIN,
                "PROD": RED_PROD, "L1": RED_L1, "SUMSQUARE": RED_SUMSQUARE, "L2": RED_L2,
                "LOGSUMEXP": RED_LOGSUMEXP, "SQRT_SUM": RED_SQRT_SUM}

cdef enum:
    # Width of the column block one task handles (its accumulators live on the stack).
    BLOCK = 256


cdef inline double pre(double v, int kind) noexcept nogil:
    if kind == RED_L1:
        return fabs(v)
    if kind == RED_SUMSQUARE or kind == RED_L2:
        return v * v
    return v


cdef inline double empty_value(int kind) noexcept nogil:
    if kind == RED_PROD:
        return 1.0
    if kind == RED_MEAN:
        return NAN
    if kind == RED_LOGSUMEXP:
        return -INFINITY
    return 0.0


cdef void reduce_block(const float *x, float *out, Py_ssize_t length, Py_ssize_t inner,
                       Py_ssize_t cols, int kind) noexcept nogil:
    """One (outer index, column block): x points at x[o, 0, i0], out at out[o, i0];
    reduces `cols` <= BLOCK columns over `length` rows spaced `inner` apart."""
    cdef double acc[BLOCK]
    cdef double mx[BLOCK]
    cdef Py_ssize_t j, i
    cdef double v, m
    if length == 0:
        for i in range(cols):
            out[i] = <float>empty_value(kind)
        return
    if kind == RED_MAX or kind == RED_MIN:
        for i in range(cols):
            acc[i] = x[i]
        for j in range(1, length):
            for i in range(cols):
                v = x[j * inner + i]
                if kind == RED_MAX:
                    if v > acc[i] or v != v:
                        if acc[i] == acc[i]:
                            acc[i] = v
                else:
                    if v < acc[i] or v != v:
                        if acc[i] == acc[i]:
                            acc[i] = v
        for i in range(cols):
            out[i] = <float>acc[i]
        return
    if kind == RED_LOGSUMEXP:
        for i in range(cols):
            mx[i] = x[i]
        for j in range(1, length):
            for i in range(cols):
                v = x[j * inner + i]
                if (v > mx[i] or v != v) and mx[i] == mx[i]:
                    mx[i] = v
        for i in range(cols):
            acc[i] = 0.0
        for j in range(length):
            for i in range(cols):
                m = mx[i]
                if m == m and m != INFINITY and m != -INFINITY:
                    acc[i] += exp(x[j * inner + i] - m)
        for i in range(cols):
            m = mx[i]
            # NaN, +inf and an all -inf column are their own answer
            out[i] = <float>(m + log(acc[i]) if (m == m and m != INFINITY and m != -INFINITY) else m)
        return
    if kind == RED_PROD:
        for i in range(cols):
            acc[i] = 1.0
        for j in range(length):
            for i in range(cols):
                acc[i] *= x[j * inner + i]
    else:
        for i in range(cols):
            acc[i] = 0.0
        for j in range(length):
            for i in range(cols):
                acc[i] += pre(x[j * inner + i], kind)
    for i in range(cols):
        out[i] = <float>finish(acc[i], length, kind)


cdef inline double finish(double v, Py_ssize_t length, int kind) noexcept nogil:
    if kind == RED_MEAN:
        return v / length
    if kind == RED_L2 or kind == RED_SQRT_SUM:
        return sqrt(v)
    return v


cdef double reduce_row(const float *x, Py_ssize_t n, int kind) noexcept nogil:
    """Reduce n >= 1 contiguous values (the inner == 1 case). Four independent accumulators
    hide the add latency (the order of a float sum is not fixed by ONNX)."""
    cdef double a0, a1, a2, a3, m
    cdef float v0, v1, v2, v3, f0, f1, f2, f3
    cdef Py_ssize_t j, n4 = n - n % 4
    cdef bint nan = False
    if kind == RED_MAX or kind == RED_MIN or kind == RED_LOGSUMEXP:
        f0 = f1 = f2 = f3 = x[0]
        if kind == RED_MIN:
            for j in range(0, n4, 4):
                v0, v1, v2, v3 = x[j], x[j + 1], x[j + 2], x[j + 3]
                nan = nan | (v0 != v0) | (v1 != v1) | (v2 != v2) | (v3 != v3)
                f0 = v0 if v0 < f0 else f0
                f1 = v1 if v1 < f1 else f1
                f2 = v2 if v2 < f2 else f2
                f3 = v3 if v3 < f3 else f3
            for j in range(n4, n):
                nan = nan | (x[j] != x[j])
                f0 = x[j] if x[j] < f0 else f0
            f0 = f0 if f0 < f1 else f1
            f2 = f2 if f2 < f3 else f3
            f0 = f0 if f0 < f2 else f2
        else:
            for j in range(0, n4, 4):
                v0, v1, v2, v3 = x[j], x[j + 1], x[j + 2], x[j + 3]
                nan = nan | (v0 != v0) | (v1 != v1) | (v2 != v2) | (v3 != v3)
                f0 = v0 if v0 > f0 else f0
                f1 = v1 if v1 > f1 else f1
                f2 = v2 if v2 > f2 else f2
                f3 = v3 if v3 > f3 else f3
            for j in range(n4, n):
                nan = nan | (x[j] != x[j])
                f0 = x[j] if x[j] > f0 else f0
            f0 = f0 if f0 > f1 else f1
            f2 = f2 if f2 > f3 else f3
            f0 = f0 if f0 > f2 else f2
        if nan or f0 != f0:     # NaN propagates (x[0] may be the NaN)
            return NAN
        if kind != RED_LOGSUMEXP:
            return f0
        m = f0
        if m == INFINITY or m == -INFINITY:
            return m
        a0 = a1 = a2 = a3 = 0.0
        for j in range(0, n4, 4):
            a0 += exp(x[j] - m)
            a1 += exp(x[j + 1] - m)
            a2 += exp(x[j + 2] - m)
            a3 += exp(x[j + 3] - m)
        for j in range(n4, n):
            a0 += exp(x[j] - m)
        return m + log((a0 + a1) + (a2 + a3))
    if kind == RED_PROD:
        a0 = a1 = a2 = a3 = 1.0
        for j in range(0, n4, 4):
            a0 *= x[j]
            a1 *= x[j + 1]
            a2 *= x[j + 2]
            a3 *= x[j + 3]
        for j in range(n4, n):
            a0 *= x[j]
        return (a0 * a1) * (a2 * a3)
    a0 = a1 = a2 = a3 = 0.0
    if kind == RED_L1:
        for j in range(0, n4, 4):
            a0 += fabs(x[j])
            a1 += fabs(x[j + 1])
            a2 += fabs(x[j + 2])
            a3 += fabs(x[j + 3])
        for j in range(n4, n):
            a0 += fabs(x[j])
    elif kind == RED_SUMSQUARE or kind == RED_L2:
        for j in range(0, n4, 4):
            a0 += <double>x[j] * x[j]
            a1 += <double>x[j + 1] * x[j + 1]
            a2 += <double>x[j + 2] * x[j + 2]
            a3 += <double>x[j + 3] * x[j + 3]
        for j in range(n4, n):
            a0 += <double>x[j] * x[j]
    else:
        for j in range(0, n4, 4):
            a0 += x[j]
            a1 += x[j + 1]
            a2 += x[j + 2]
            a3 += x[j + 3]
        for j in range(n4, n):
            a0 += x[j]
    return finish((a0 + a1) + (a2 + a3), n, kind)


cdef void reduce_kernel(const float *x, float *out, Py_ssize_t outer, Py_ssize_t length,
                        Py_ssize_t inner, int kind, int num_threads) noexcept nogil:
    """x: (outer, length, inner) C-contiguous -> out: (outer, inner)."""
    cdef Py_ssize_t blocks = (inner + BLOCK - 1) // BLOCK
    cdef Py_ssize_t task, o, b, i0, cols
    cdef int nt = threads_for(outer * length * inner, num_threads) if outer * blocks > 1 else 1
    if inner == 1 and length > 0:
        for o in prange(outer, num_threads=nt, schedule="static"):
            out[o] = <float>reduce_row(x + o * length, length, kind)
        return
    for task in prange(outer * blocks, num_threads=nt, schedule="static"):
        o = task // blocks
        b = task % blocks
        i0 = b * BLOCK
        cols = inner - i0
        if cols > BLOCK:
            cols = BLOCK
        reduce_block(x + o * length * inner + i0, out + o * inner + i0, length, inner, cols, kind)


cdef class ReduceStep(Step):
    """out (outer * inner,) = reduce `kind` of x (outer * length * inner,) over `length`."""
    cdef const float[::1] x
    cdef float[::1] out
    cdef Py_ssize_t outer, length, inner
    cdef int kind

    def __init__(self, const float[::1] x, float[::1] out, Py_ssize_t outer, Py_ssize_t length,
                 Py_ssize_t inner, int kind):
        if outer < 0 or length < 0 or inner < 0:
            raise ValueError("ReduceStep: negative size")
        if x.shape[0] != outer * length * inner or out.shape[0] != outer * inner:
            raise ValueError(f"ReduceStep: x has {x.shape[0]} elements and out {out.shape[0]}; "
                             f"expected {outer}*{length}*{inner} and {outer}*{inner}")
        if not 0 <= kind <= RED_SQRT_SUM:
            raise ValueError(f"ReduceStep: unknown kind {kind}")
        self.x, self.out = x, out
        self.outer, self.length, self.inner, self.kind = outer, length, inner, kind

    cdef void run(self) noexcept nogil:
        cdef const float *xp = NULL
        if self.out.shape[0] == 0:
            return
        if self.x.shape[0] > 0:
            xp = &self.x[0]
        reduce_kernel(xp, &self.out[0], self.outer, self.length, self.inner, self.kind,
                      self.num_threads)


# ----------------------------------------------------------------------------- arg max / min
cdef void arg_one(const float *x, int64_t *out, Py_ssize_t length, Py_ssize_t inner,
                  bint is_max, bint last) noexcept nogil:
    """out[0] = the index of the largest (is_max) or smallest of x[0], x[inner], ...,
    x[(length-1)*inner]: the first of equal values, or the last one (`last`). A NaN ranks
    above everything, as in numpy: the first NaN, or the last with `last`."""
    cdef Py_ssize_t j, idx = 0
    cdef float best = x[0], v
    cdef bint nan = best != best
    for j in range(1, length):
        v = x[j * inner]
        if nan:
            if last and v != v:
                idx = j
        elif v != v:
            nan = True
            idx = j
        elif (v > best if is_max else v < best) or (last and v == best):
            best = v
            idx = j
    out[0] = idx


cdef class ArgReduceStep(Step):
    """out (outer, inner) int64 = argmax or argmin of x (outer, length, inner) float32 over the
    middle axis; both flat and C-contiguous; length >= 1."""
    cdef const float[::1] x
    cdef int64_t[::1] out
    cdef Py_ssize_t outer, length, inner
    cdef bint is_max, last

    def __init__(self, const float[::1] x, int64_t[::1] out, Py_ssize_t outer,
                 Py_ssize_t length, Py_ssize_t inner, bint is_max, bint last=False):
        if outer < 0 or length < 1 or inner < 0:
            raise ValueError("ArgReduceStep: dims must be >= 0 and the reduced length >= 1")
        if x.shape[0] != outer * length * inner or out.shape[0] != outer * inner:
            raise ValueError("ArgReduceStep: sizes do not match")
        self.x, self.out = x, out
        self.outer, self.length, self.inner = outer, length, inner
        self.is_max, self.last = is_max, last

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t t, total = self.outer * self.inner, o, i
        cdef int nt = threads_for(total * self.length, self.num_threads)
        if total == 0:
            return
        for t in prange(total, num_threads=nt, schedule="static"):
            o = t // self.inner
            i = t % self.inner
            arg_one(&self.x[o * self.length * self.inner + i], &self.out[t], self.length,
                    self.inner, self.is_max, self.last)


# ----------------------------------------------------------------------------- top k
cdef inline bint topk_better(float a, int64_t ia, float b, int64_t ib, bint largest) noexcept nogil:
    """Whether (a, at index ia) ranks before (b, at ib): NaN before every number (as ArgMax and
    ArgMin pick it), then the larger (largest) or smaller value, then the lower index."""
    cdef bint na = a != a, nb = b != b
    if na or nb:
        return na and (not nb or ia < ib)
    if a != b:
        return a > b if largest else a < b
    return ia < ib


cdef void topk_sift(float *v, int64_t *ix, Py_ssize_t s, Py_ssize_t at, Py_ssize_t n,
                    bint largest) noexcept nogil:
    """Sift entry `at` down a heap of n entries (stride s) whose root ranks last."""
    cdef Py_ssize_t child, worst
    cdef float tv
    cdef int64_t ti
    while True:
        child = 2 * at + 1
        if child >= n:
            return
        worst = child
        if child + 1 < n and topk_better(v[worst * s], ix[worst * s], v[(child + 1) * s],
                                         ix[(child + 1) * s], largest):
            worst = child + 1
        if not topk_better(v[at * s], ix[at * s], v[worst * s], ix[worst * s], largest):
            return
        tv, ti = v[at * s], ix[at * s]
        v[at * s], ix[at * s] = v[worst * s], ix[worst * s]
        v[worst * s], ix[worst * s] = tv, ti
        at = worst


cdef void topk_one(const float *x, float *v, int64_t *ix, Py_ssize_t length, Py_ssize_t k,
                   Py_ssize_t s, bint largest) noexcept nogil:
    """The k best of x[0], x[s], ..., x[(length-1)*s] into v and ix (stride s), best first:
    a heap of k entries whose root ranks last replaces its root with each better element
    (length log k), then is sorted in place."""
    cdef Py_ssize_t j, n
    cdef float tv
    cdef int64_t ti
    for j in range(k):
        v[j * s] = x[j * s]
        ix[j * s] = j
    for j in range(k // 2 - 1, -1, -1):
        topk_sift(v, ix, s, j, k, largest)
    for j in range(k, length):
        if topk_better(x[j * s], j, v[0], ix[0], largest):
            v[0] = x[j * s]
            ix[0] = j
            topk_sift(v, ix, s, 0, k, largest)
    # the entry that ranks last goes to the end, one at a time: best first
    n = k
    while n > 1:
        n -= 1
        tv, ti = v[0], ix[0]
        v[0], ix[0] = v[n * s], ix[n * s]
        v[n * s], ix[n * s] = tv, ti
        topk_sift(v, ix, s, 0, n, largest)


cdef class TopKStep(Step):
    """values (outer, k, inner) float32 and indices (outer, k, inner) int64 = the k largest (or
    smallest) of x (outer, length, inner) along the middle axis, best first; all flat and
    C-contiguous; 0 <= k <= length."""
    cdef const float[::1] x
    cdef float[::1] values
    cdef int64_t[::1] indices
    cdef Py_ssize_t outer, length, inner, k
    cdef bint largest

    def __init__(self, const float[::1] x, float[::1] values, int64_t[::1] indices,
                 Py_ssize_t outer, Py_ssize_t length, Py_ssize_t inner, Py_ssize_t k,
                 bint largest):
        if outer < 0 or inner < 0 or not 0 <= k <= length:
            raise ValueError("TopKStep: dims must be >= 0 and 0 <= k <= length")
        if x.shape[0] != outer * length * inner or values.shape[0] != outer * k * inner \
                or indices.shape[0] != values.shape[0]:
            raise ValueError("TopKStep: sizes do not match")
        self.x, self.values, self.indices = x, values, indices
        self.outer, self.length, self.inner, self.k = outer, length, inner, k
        self.largest = largest

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t t, total = self.outer * self.inner, o, i, out_at
        cdef int nt = threads_for(total * self.length, self.num_threads)
        if total == 0 or self.k == 0:
            return
        for t in prange(total, num_threads=nt, schedule="static"):
            o = t // self.inner
            i = t % self.inner
            out_at = o * self.k * self.inner + i
            topk_one(&self.x[o * self.length * self.inner + i], &self.values[out_at],
                     &self.indices[out_at], self.length, self.k, self.inner, self.largest)

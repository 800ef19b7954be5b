"""Elementwise kernels: unary activations/math, broadcasting binary ops, softmax.

Layouts: unary works on flat C-contiguous buffers; binary ops take an output of up to 6 dims
(collapsed by the caller) and per-input element strides (0 on broadcast dims); softmax views its
input as (outer, axis_len, inner).
"""
cimport cython
from cython.parallel cimport prange
from libc.math cimport expf, logf, powf, INFINITY
from libc.stdint cimport int64_t

from fastcnn._kernels.step cimport PARALLEL_MIN, Step, threads_for
from fastcnn._kernels.act cimport *

ACT_CODES = {
    "": ACT_NONE, "Relu": ACT_RELU, "LeakyRelu": ACT_LEAKY, "Clip": ACT_CLIP,
    "Sigmoid": ACT_SIGMOID, "Tanh": ACT_TANH, "HardSigmoid": ACT_HARDSIGMOID,
    "HardSwish": ACT_HARDSWISH, "Elu": ACT_ELU, "Selu": ACT_SELU, "Celu": ACT_CELU,
    "ThresholdedRelu": ACT_THRESHOLDED, "Softplus": ACT_SOFTPLUS, "Softsign": ACT_SOFTSIGN,
    "Exp": ACT_EXP, "Log": ACT_LOG, "Sqrt": ACT_SQRT, "Reciprocal": ACT_RECIPROCAL,
    "Erf": ACT_ERF, "Neg": ACT_NEG, "Abs": ACT_ABS, "Sign": ACT_SIGN, "Floor": ACT_FLOOR,
    "Ceil": ACT_CEIL, "Round": ACT_ROUND, "Gelu": ACT_GELU, "GeluTanh": ACT_GELU_TANH,
    "Mish": ACT_MISH, "Identity": ACT_IDENTITY, "Swish": ACT_SWISH,
}

# Binary operation codes
cdef enum:
    BIN_ADD = 0
    BIN_SUB = 1
    BIN_MUL = 2
    BIN_DIV = 3
    BIN_POW = 4
    BIN_MAX = 5
    BIN_MIN = 6
    BIN_PRELU = 7

BINARY_CODES = {"Add": BIN_ADD, "Sub": BIN_SUB, "Mul": BIN_MUL, "Div": BIN_DIV, "Pow": BIN_POW,
                "Max": BIN_MAX, "Min": BIN_MIN, "PRelu": BIN_PRELU}

# ----------------------------------------------------------------------------- unary
cdef void unary_kernel(const float *x, float *out, Py_ssize_t n, int kind, float alpha,
                       float beta, int num_threads) noexcept nogil:
    """out[i] = act(x[i]) for i < n (x may equal out)."""
    cdef Py_ssize_t chunk, c, lo, hi, nchunks
    cdef int nt = threads_for(n, num_threads)
    if nt <= 1:
        act_span(x, out, n, kind, alpha, beta)
        return
    chunk = 4096
    nchunks = (n + chunk - 1) // chunk
    for c in prange(nchunks, num_threads=nt, schedule="static"):
        lo = c * chunk
        hi = lo + chunk
        if hi > n:
            hi = n
        act_span(x + lo, out + lo, hi - lo, kind, alpha, beta)


cdef class UnaryStep(Step):
    """out = act(x) elementwise. x, out: flat float32 (n,), C-contiguous; may alias."""
    cdef const float[::1] x
    cdef float[::1] out
    cdef int kind
    cdef float alpha, beta

    def __init__(self, const float[::1] x, float[::1] out, int kind, float alpha=0.0, float beta=0.0):
        if x.shape[0] != out.shape[0]:
            raise ValueError("UnaryStep: x and out differ in size")
        self.x = x
        self.out = out
        self.kind = kind
        self.alpha = alpha
        self.beta = beta

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t n = self.out.shape[0]
        if n == 0:
            return
        unary_kernel(&self.x[0], &self.out[0], n, self.kind, self.alpha, self.beta, self.num_threads)


def unary(const float[::1] x, float[::1] out, int kind, float alpha=0.0, float beta=0.0,
          int num_threads=1):
    """Apply activation `kind` (see ACT_CODES) to x (n,) into out (n,)."""
    if x.shape[0] != out.shape[0]:
        raise ValueError("x and out differ in size")
    if x.shape[0]:
        with nogil:
            unary_kernel(&x[0], &out[0], x.shape[0], kind, alpha, beta, num_threads)


cdef class IndexToFloatStep(Step):
    """out = float32(x): the int64 indices an ArgMax or ArgMin computed at run time, cast
    (exact below 2**24, as any float32). x, out: flat, C-contiguous, of one size."""
    cdef const int64_t[::1] x
    cdef float[::1] out

    def __init__(self, const int64_t[::1] x, float[::1] out):
        if x.shape[0] != out.shape[0]:
            raise ValueError("IndexToFloatStep: x and out differ in size")
        self.x, self.out = x, out

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t i
        for i in range(self.out.shape[0]):
            self.out[i] = <float>self.x[i]


# ----------------------------------------------------------------------------- binary broadcast
cdef inline float binary_op(float a, float b, int op) noexcept nogil:
    if op == BIN_ADD:
        return a + b
    elif op == BIN_SUB:
        return a - b
    elif op == BIN_MUL:
        return a * b
    elif op == BIN_DIV:
        return a / b
    elif op == BIN_POW:
        return powf(a, b)
    elif op == BIN_MAX:
        return a if (a != a or a > b) else b
    elif op == BIN_MIN:
        return a if (a != a or a < b) else b
    else:  # BIN_PRELU: a is x, b is the slope
        return a * b if a < 0 else a


cdef class BinaryStep(Step):
    """out[idx] = a[idx . a_strides] (op) b[idx . b_strides] over an output of up to 6 dims.

    shape: output dims, outermost first (padded with leading 1s to 6). a_strides, b_strides:
    element strides (0 on broadcast dims). out is C-contiguous. Offsets were checked by the caller.
    """
    cdef const float[::1] a
    cdef const float[::1] b
    cdef float[::1] out
    cdef Py_ssize_t shape[6]
    cdef Py_ssize_t sa[6]
    cdef Py_ssize_t sb[6]
    cdef int op

    def __init__(self, const float[::1] a, const float[::1] b, float[::1] out, shape, a_strides,
                 b_strides, int op):
        cdef int k, pad = 6 - len(shape)
        cdef Py_ssize_t total = 1, last_a = 0, last_b = 0
        if pad < 0:
            raise ValueError("BinaryStep: more than 6 dims")
        self.a = a
        self.b = b
        self.out = out
        self.op = op
        if len(a_strides) != len(shape) or len(b_strides) != len(shape):
            raise ValueError("BinaryStep: strides and shape differ in length")
        for k in range(6):
            self.shape[k] = 1 if k < pad else shape[k - pad]
            self.sa[k] = 0 if k < pad else a_strides[k - pad]
            self.sb[k] = 0 if k < pad else b_strides[k - pad]
        # The kernel reads without bounds checks: every address it can touch must be inside.
        for k in range(6):
            if self.shape[k] < 0 or self.sa[k] < 0 or self.sb[k] < 0:
                raise ValueError("BinaryStep: negative dim or stride")
            total *= self.shape[k]
            last_a += (self.shape[k] - 1) * self.sa[k]
            last_b += (self.shape[k] - 1) * self.sb[k]
        if total != out.shape[0]:
            raise ValueError(f"BinaryStep: shape {list(shape)} has {total} elements, out has {out.shape[0]}")
        if total and (last_a >= a.shape[0] or last_b >= b.shape[0]):
            raise ValueError("BinaryStep: strides reach past an input buffer")

    cdef void run(self) noexcept nogil:
        if self.out.shape[0] == 0:
            return
        binary_kernel(&self.a[0], &self.b[0], &self.out[0], self.shape, self.sa, self.sb,
                      self.op, self.num_threads)


cdef void binary_rows(const float *a, const float *b, float *o, Py_ssize_t n, Py_ssize_t sa,
                      Py_ssize_t sb, int op) noexcept nogil:
    cdef Py_ssize_t i
    if sa == 1 and sb == 1:
        if op == BIN_ADD:
            for i in range(n):
                o[i] = a[i] + b[i]
        elif op == BIN_MUL:
            for i in range(n):
                o[i] = a[i] * b[i]
        else:
            for i in range(n):
                o[i] = binary_op(a[i], b[i], op)
    elif sa == 1 and sb == 0:
        if op == BIN_ADD:
            for i in range(n):
                o[i] = a[i] + b[0]
        elif op == BIN_MUL:
            for i in range(n):
                o[i] = a[i] * b[0]
        else:
            for i in range(n):
                o[i] = binary_op(a[i], b[0], op)
    else:
        for i in range(n):
            o[i] = binary_op(a[i * sa], b[i * sb], op)


cdef void binary_kernel(const float *a, const float *b, float *out, Py_ssize_t *shape,
                        Py_ssize_t *sa, Py_ssize_t *sb, int op, int num_threads) noexcept nogil:
    # Rows are the innermost dim; the five outer dims are flattened into `rows` and decoded.
    cdef Py_ssize_t inner = shape[5]
    cdef Py_ssize_t rows = shape[0] * shape[1] * shape[2] * shape[3] * shape[4]
    cdef Py_ssize_t r, rem, i0, i1, i2, i3, i4, oa, ob
    cdef int nt = threads_for(rows * inner, num_threads)
    for r in prange(rows, num_threads=nt, schedule="static"):
        rem = r
        i4 = rem % shape[4]
        rem = rem // shape[4]
        i3 = rem % shape[3]
        rem = rem // shape[3]
        i2 = rem % shape[2]
        rem = rem // shape[2]
        i1 = rem % shape[1]
        i0 = rem // shape[1]
        oa = i0 * sa[0] + i1 * sa[1] + i2 * sa[2] + i3 * sa[3] + i4 * sa[4]
        ob = i0 * sb[0] + i1 * sb[1] + i2 * sb[2] + i3 * sb[3] + i4 * sb[4]
        binary_rows(a + oa, b + ob, out + r * inner, inner, sa[5], sb[5], op)


# ----------------------------------------------------------------------------- compare-select
# Comparison codes of SelectStep (IEEE: every comparison with a NaN is false, as numpy's)
cdef enum:
    CMP_EQUAL = 0
    CMP_LESS = 1
    CMP_GREATER = 2
    CMP_LESS_EQUAL = 3
    CMP_GREATER_EQUAL = 4

COMPARE_CODES = {"Equal": CMP_EQUAL, "Less": CMP_LESS, "Greater": CMP_GREATER,
                 "LessOrEqual": CMP_LESS_EQUAL, "GreaterOrEqual": CMP_GREATER_EQUAL}


cdef inline bint compare_op(float a, float b, int cmp) noexcept nogil:
    if cmp == CMP_EQUAL:
        return a == b
    elif cmp == CMP_LESS:
        return a < b
    elif cmp == CMP_GREATER:
        return a > b
    elif cmp == CMP_LESS_EQUAL:
        return a <= b
    else:
        return a >= b


cdef class SelectStep(Step):
    """out[idx] = x[idx] if a[idx] (cmp) b[idx] else y[idx], each input read at its own element
    strides (0 on broadcast dims) over an output of up to 6 dims: ONNX Where whose condition is a
    comparison of two float tensors, with no bool tensor in between.

    inputs: (a, b, x, y) flat float32 buffers; shape: output dims, outermost first (padded with
    leading 1s to 6); strides: one list per input. out is C-contiguous."""
    cdef const float[::1] a
    cdef const float[::1] b
    cdef const float[::1] x
    cdef const float[::1] y
    cdef float[::1] out
    cdef Py_ssize_t shape[6]
    cdef Py_ssize_t st[4][6]
    cdef int cmp

    def __init__(self, const float[::1] a, const float[::1] b, const float[::1] x,
                 const float[::1] y, float[::1] out, shape, strides, int cmp):
        cdef int k, j, pad = 6 - len(shape)
        cdef Py_ssize_t total = 1, last
        cdef Py_ssize_t sizes[4]
        if pad < 0:
            raise ValueError("SelectStep: more than 6 dims")
        if len(strides) != 4 or any(len(s) != len(shape) for s in strides):
            raise ValueError("SelectStep: four stride lists as long as the shape")
        if not CMP_EQUAL <= cmp <= CMP_GREATER_EQUAL:
            raise ValueError(f"SelectStep: unknown comparison code {cmp}")
        self.a, self.b, self.x, self.y, self.out, self.cmp = a, b, x, y, out, cmp
        sizes[0], sizes[1], sizes[2], sizes[3] = a.shape[0], b.shape[0], x.shape[0], y.shape[0]
        for k in range(6):
            self.shape[k] = 1 if k < pad else shape[k - pad]
            if self.shape[k] < 0:
                raise ValueError("SelectStep: negative dim")
            total *= self.shape[k]
        if total != out.shape[0]:
            raise ValueError(f"SelectStep: shape {list(shape)} has {total} elements, out has {out.shape[0]}")
        # The kernel reads without bounds checks: every address it can touch must be inside.
        for j in range(4):
            last = 0
            for k in range(6):
                self.st[j][k] = 0 if k < pad else strides[j][k - pad]
                if self.st[j][k] < 0:
                    raise ValueError("SelectStep: negative stride")
                last += (self.shape[k] - 1) * self.st[j][k]
            if total and last >= sizes[j]:
                raise ValueError("SelectStep: strides reach past an input buffer")

    cdef void row(self, Py_ssize_t r) noexcept nogil:
        """Output row r (the innermost dim); the five outer dims are flattened into rows."""
        cdef Py_ssize_t rem = r, inner = self.shape[5]
        cdef Py_ssize_t idx[5]
        cdef Py_ssize_t off[4]
        cdef int j, k
        for k in range(4, -1, -1):
            idx[k] = rem % self.shape[k]
            rem = rem // self.shape[k]
        for j in range(4):
            off[j] = 0
            for k in range(5):
                off[j] += idx[k] * self.st[j][k]
        select_row(&self.a[off[0]], &self.b[off[1]], &self.x[off[2]], &self.y[off[3]],
                   &self.out[r * inner], inner, self.st[0][5], self.st[1][5], self.st[2][5],
                   self.st[3][5], self.cmp)

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t rows = self.shape[0] * self.shape[1] * self.shape[2] * self.shape[3] * self.shape[4]
        cdef Py_ssize_t r
        cdef int nt
        if self.out.shape[0] == 0:
            return
        nt = threads_for(rows * self.shape[5], self.num_threads)
        for r in prange(rows, num_threads=nt, schedule="static"):
            self.row(r)


cdef void select_row(const float *a, const float *b, const float *x, const float *y, float *o,
                     Py_ssize_t n, Py_ssize_t sa, Py_ssize_t sb, Py_ssize_t sx, Py_ssize_t sy,
                     int cmp) noexcept nogil:
    cdef Py_ssize_t i
    if sa == 1 and sb == 0 and sx == 1:
        # torch.where(x > c, x, f(x)) and its kind: a threshold on the tensor it keeps
        for i in range(n):
            o[i] = x[i] if compare_op(a[i], b[0], cmp) else y[i * sy]
    else:
        for i in range(n):
            o[i] = x[i * sx] if compare_op(a[i * sa], b[i * sb], cmp) else y[i * sy]


# ----------------------------------------------------------------------------- softmax
cdef void softmax_kernel(const float *x, float *out, Py_ssize_t outer, Py_ssize_t length,
                         Py_ssize_t inner, bint log, int num_threads) noexcept nogil:
    """x, out: (outer, length, inner) C-contiguous; softmax (or log-softmax) over `length`."""
    cdef Py_ssize_t o, j, i, base
    cdef float m, s, v, ls
    cdef int nt = threads_for(outer * length * inner, num_threads)
    for o in prange(outer * inner, num_threads=nt, schedule="static"):
        base = (o // inner) * length * inner + (o % inner)
        m = -INFINITY
        for j in range(length):
            v = x[base + j * inner]
            if v > m or v != v:
                m = v
        s = 0
        for j in range(length):
            s = s + expf(x[base + j * inner] - m)
        if log:
            ls = logf(s)
            for j in range(length):
                out[base + j * inner] = x[base + j * inner] - m - ls
        else:
            s = 1.0 / s
            for j in range(length):
                out[base + j * inner] = expf(x[base + j * inner] - m) * s


cdef class SoftmaxStep(Step):
    """Softmax or log-softmax of x (outer, length, inner) over the middle axis, into out."""
    cdef const float[::1] x
    cdef float[::1] out
    cdef Py_ssize_t outer, length, inner
    cdef bint log

    def __init__(self, const float[::1] x, float[::1] out, Py_ssize_t outer, Py_ssize_t length,
                 Py_ssize_t inner, bint log):
        if x.shape[0] != outer * length * inner or out.shape[0] != x.shape[0]:
            raise ValueError("SoftmaxStep: sizes do not match")
        self.x, self.out = x, out
        self.outer, self.length, self.inner, self.log = outer, length, inner, log

    cdef void run(self) noexcept nogil:
        if self.out.shape[0] == 0:
            return
        softmax_kernel(&self.x[0], &self.out[0], self.outer, self.length, self.inner,
                       self.log, self.num_threads)

# Scalar activation functions shared by every kernel (standalone activations and fused epilogues).
# Codes are part of no file format: the Python side gets them from `eltwise.ACT_CODES`.
from libc.math cimport expf, tanhf, logf, sqrtf, fabsf, floorf, ceilf, rintf, erff, log1pf, expm1f
from fastcnn._kernels.simd cimport vf8, vf8_set1, vf8_load, vf8_store, vf8_mul
from fastcnn._kernels.simd_math cimport vf8_sigmoid

cdef enum:
    ACT_NONE = 0
    ACT_RELU = 1
    ACT_LEAKY = 2          # alpha
    ACT_CLIP = 3           # alpha = min, beta = max
    ACT_SIGMOID = 4
    ACT_TANH = 5
    ACT_HARDSIGMOID = 6    # alpha, beta
    ACT_HARDSWISH = 7
    ACT_ELU = 8            # alpha
    ACT_SELU = 9           # alpha, beta = gamma
    ACT_CELU = 10          # alpha
    ACT_THRESHOLDED = 11   # alpha
    ACT_SOFTPLUS = 12
    ACT_SOFTSIGN = 13
    ACT_EXP = 14
    ACT_LOG = 15
    ACT_SQRT = 16
    ACT_RECIPROCAL = 17
    ACT_ERF = 18
    ACT_NEG = 19
    ACT_ABS = 20
    ACT_SIGN = 21
    ACT_FLOOR = 22
    ACT_CEIL = 23
    ACT_ROUND = 24
    ACT_GELU = 25
    ACT_GELU_TANH = 26
    ACT_MISH = 27
    ACT_IDENTITY = 28
    ACT_SWISH = 29         # x * sigmoid(alpha * x)   (alpha = 1: SiLU)
    ACT_COUNT = 30


# exp_neg_abs(v): exp(-|v|) in (0, 1] within 1 ulp, NaN for NaN, without branches or libm calls
# so that loops over it vectorise: -|v| = n*ln2 + r with |r| <= ln2/2, e^r by a degree-6
# polynomial, 2^n written into the exponent bits (below -87.34 the result flushes to 0).
# sigmoidf(v): (v >= 0 ? 1 : e) / (1 + e) with e = exp_neg_abs(v): never exp of a large
# positive number, both sides computed then selected, so no branch. Single precision
# throughout. Written once, in C (simd_math.h's f32_exp_neg_abs and f32_sigmoid, always
# inlined: a Cython wrapper around them was left as a call per element), beside the vector
# version the epilogues use, which must give the same bits.
cdef extern from "simd_math.h" nogil:
    float exp_neg_abs "f32_exp_neg_abs" (float v)
    float sigmoidf "f32_sigmoid" (float v)


cdef inline float log1p_unit(float e) noexcept nogil:
    """log(1 + e) for e in [0, 1] (NaN for NaN): 2*atanh(s) with s = e/(2+e) in [0, 1/3], by its
    odd series to s^13 (relative error < 1e-7, none of log1p's cancellation for small e)."""
    cdef float s = e / (<float>2.0 + e)
    cdef float s2 = s * s
    cdef float p = <float>(1.0 / 13.0)
    p = p * s2 + <float>(1.0 / 11.0)
    p = p * s2 + <float>(1.0 / 9.0)
    p = p * s2 + <float>(1.0 / 7.0)
    p = p * s2 + <float>(1.0 / 5.0)
    p = p * s2 + <float>(1.0 / 3.0)
    p = p * s2 + <float>1.0
    return <float>2.0 * s * p


cdef inline float softplusf(float v) noexcept nogil:
    # log(1 + exp(v)) without overflow: max(v, 0) + log1p(exp(-|v|))
    return (v if v > 0 else <float>0.0) + log1p_unit(exp_neg_abs(v))


cdef inline float tanh_fast(float v) noexcept nogil:
    """tanh without libm: (1 - e)/(1 + e) * sign with e = exp(-2|v|) for |v| >= 0.25, where the
    subtraction loses little; below, the odd Taylor series to v^9 (error < 3e-9). Both are
    computed and one selected, so loops over it vectorise."""
    cdef float a = fabsf(v)
    cdef float e = exp_neg_abs(<float>2.0 * v)
    cdef float big = (<float>1.0 - e) / (<float>1.0 + e)
    cdef float v2 = v * v
    cdef float small = <float>(62.0 / 2835.0)
    small = small * v2 - <float>(17.0 / 315.0)
    small = small * v2 + <float>(2.0 / 15.0)
    small = small * v2 - <float>(1.0 / 3.0)
    small = (small * v2 + <float>1.0) * v
    big = -big if v < 0 else big
    return small if a < <float>0.25 else big


cdef inline float mishf(float v) noexcept nogil:
    """x * tanh(softplus(x)) = x * n / (n + 2) with n = e^x (e^x + 2), in terms of e = exp(-|x|)
    so nothing overflows: x < 0: n = e (e + 2); x >= 0: x / (1 + 2e^2 / (1 + 2e))."""
    cdef float e = exp_neg_abs(v)
    cdef float n = e * (e + <float>2.0)
    cdef float neg = v * n / (n + <float>2.0)
    cdef float pos = v / (<float>1.0 + <float>2.0 * e * e / (<float>1.0 + <float>2.0 * e))
    return neg if v < 0 else pos


cdef inline float swishf(float v, float alpha) noexcept nogil:
    # x * sigmoid(alpha * x); SiLU for alpha = 1
    return v * sigmoidf(alpha * v)


# The piecewise-linear activations get small functions of their own too: a loop calling one
# of these always inlines it and vectorises, whatever the inliner decides about apply_act.
cdef inline float relu_f(float v) noexcept nogil:
    return <float>0.0 if v < 0 else v


cdef inline float leaky_f(float v, float alpha) noexcept nogil:
    return alpha * v if v < 0 else v


cdef inline float clip_f(float v, float lo, float hi) noexcept nogil:
    # max then min, as numpy.clip/ONNX: lo > hi gives hi everywhere; NaN stays NaN
    cdef float t = lo if v < lo else v
    return hi if t > hi else t


cdef inline float hardsigmoid_f(float v, float alpha, float beta) noexcept nogil:
    cdef float t = alpha * v + beta
    return <float>0.0 if t < 0 else (<float>1.0 if t > 1 else t)


cdef inline float hardswish_f(float v) noexcept nogil:
    # x * clip(x/6 + 1/2, 0, 1)
    return v * hardsigmoid_f(v, <float>(1.0 / 6.0), <float>0.5)


cdef inline float apply_act(float v, int kind, float alpha, float beta) noexcept nogil:
    """One activation on one value. NaN propagates through every branch (IEEE semantics)."""
    if kind == ACT_NONE or kind == ACT_IDENTITY:
        return v
    elif kind == ACT_RELU:
        return relu_f(v)
    elif kind == ACT_LEAKY:
        return leaky_f(v, alpha)
    elif kind == ACT_CLIP:
        return clip_f(v, alpha, beta)
    elif kind == ACT_SIGMOID:
        return sigmoidf(v)
    elif kind == ACT_TANH:
        return tanh_fast(v)
    elif kind == ACT_HARDSIGMOID:
        return hardsigmoid_f(v, alpha, beta)
    elif kind == ACT_HARDSWISH:
        return hardswish_f(v)
    elif kind == ACT_ELU:
        return alpha * expm1f(v) if v < 0 else v
    elif kind == ACT_SELU:
        return beta * (alpha * expm1f(v) if v <= 0 else v)
    elif kind == ACT_CELU:
        return alpha * expm1f(v / alpha) if v < 0 else v
    elif kind == ACT_THRESHOLDED:
        return v if v > alpha else (v if v != v else 0.0)
    elif kind == ACT_SOFTPLUS:
        return softplusf(v)
    elif kind == ACT_SOFTSIGN:
        return v / (1.0 + fabsf(v))
    elif kind == ACT_EXP:
        return expf(v)
    elif kind == ACT_LOG:
        return logf(v)
    elif kind == ACT_SQRT:
        return sqrtf(v)
    elif kind == ACT_RECIPROCAL:
        return 1.0 / v
    elif kind == ACT_ERF:
        return erff(v)
    elif kind == ACT_NEG:
        return -v
    elif kind == ACT_ABS:
        return fabsf(v)
    elif kind == ACT_SIGN:
        return 1.0 if v > 0 else (-1.0 if v < 0 else v)
    elif kind == ACT_FLOOR:
        return floorf(v)
    elif kind == ACT_CEIL:
        return ceilf(v)
    elif kind == ACT_ROUND:
        return rintf(v)   # round half to even in the default rounding mode, as ONNX specifies
    elif kind == ACT_GELU:
        return 0.5 * v * (1.0 + erff(v * 0.7071067811865476))
    elif kind == ACT_GELU_TANH:
        return 0.5 * v * (1.0 + tanhf(0.7978845608028654 * (v + 0.044715 * v * v * v)))
    elif kind == ACT_MISH:
        return mishf(v)
    elif kind == ACT_SWISH:
        return swishf(v, alpha)
    return v


cdef inline void sigmoid_inplace(float *out, Py_ssize_t n, bint swish, float alpha) noexcept nogil:
    """out[i] = sigmoid(out[i]), or out[i] * sigmoid(alpha * out[i]) (swish), for i < n: eight
    lanes at a time by vf8_sigmoid, the tail by sigmoidf (the same bits). Written with the
    vector function because gcc's vectorisation of the scalar loop ran 1.5x slower."""
    cdef Py_ssize_t i = 0
    cdef vf8 v, a = vf8_set1(alpha)
    if swish:
        while i + 8 <= n:
            v = vf8_load(out + i)
            vf8_store(out + i, vf8_mul(v, vf8_sigmoid(vf8_mul(a, v))))
            i = i + 8
        while i < n:
            out[i] = swishf(out[i], alpha)
            i = i + 1
    else:
        while i + 8 <= n:
            vf8_store(out + i, vf8_sigmoid(vf8_load(out + i)))
            i = i + 8
        while i < n:
            out[i] = sigmoidf(out[i])
            i = i + 1


cdef inline void act_inplace(float *out, Py_ssize_t n, int kind, float alpha,
                             float beta) noexcept nogil:
    """out[i] = apply_act(out[i]) for i < n. The common activations get a loop each calling
    their own small inline function, so there is no per-element dispatch and the loop
    vectorises (sigmoid, swish, tanh included: their functions have no branches or libm calls);
    the others go through apply_act. In place because loops reading and writing one pointer
    vectorise, while two pointers that may be equal make the compiler fall back to scalar code."""
    cdef Py_ssize_t i
    if kind == ACT_NONE or kind == ACT_IDENTITY:
        pass
    elif kind == ACT_RELU:
        for i in range(n):
            out[i] = relu_f(out[i])
    elif kind == ACT_SIGMOID or kind == ACT_SWISH:
        sigmoid_inplace(out, n, kind == ACT_SWISH, alpha)
    elif kind == ACT_HARDSWISH:
        for i in range(n):
            out[i] = hardswish_f(out[i])
    elif kind == ACT_TANH:
        for i in range(n):
            out[i] = tanh_fast(out[i])
    elif kind == ACT_SOFTPLUS:
        for i in range(n):
            out[i] = softplusf(out[i])
    elif kind == ACT_MISH:
        for i in range(n):
            out[i] = mishf(out[i])
    elif kind == ACT_HARDSIGMOID:
        for i in range(n):
            out[i] = hardsigmoid_f(out[i], alpha, beta)
    elif kind == ACT_CLIP:
        for i in range(n):
            out[i] = clip_f(out[i], alpha, beta)
    elif kind == ACT_LEAKY:
        for i in range(n):
            out[i] = leaky_f(out[i], alpha)
    else:
        for i in range(n):
            out[i] = apply_act(out[i], kind, alpha, beta)


cdef enum:
    ACT_CHUNK = 1024     # floats copied then activated together: the copy stays in L1


cdef inline void act_span(const float *x, float *out, Py_ssize_t n, int kind, float alpha,
                          float beta) noexcept nogil:
    """out[i] = apply_act(x[i]) for i < n (x may equal out): act_inplace on out, after copying
    x in chunks of ACT_CHUNK floats (one pass over memory). Conv/GEMM epilogues use it on
    stored rows for the activations act_vec does not cover."""
    cdef Py_ssize_t c0, c1, i
    if x == out:
        act_inplace(out, n, kind, alpha, beta)
        return
    c0 = 0
    while c0 < n:
        c1 = min(n, c0 + ACT_CHUNK)
        for i in range(c0, c1):
            out[i] = x[i]
        act_inplace(out + c0, c1 - c0, kind, alpha, beta)
        c0 = c1

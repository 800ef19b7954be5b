# Scalar activation functions shared by every kernel (standalone activations and fused epilogues).
# Codes are part of no file format: the Python side gets them from `eltwise.ACT_CODES`.
from libc.math cimport expf, tanhf, logf, sqrtf, fabsf, floorf, ceilf, rintf, erff, log1pf, expm1f

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


cdef inline float softplusf(float v) noexcept nogil:
    # log(1 + exp(v)) without overflow: max(v, 0) + log1p(exp(-|v|))
    return (v if v > 0 else 0.0) + log1pf(expf(-fabsf(v)))


cdef inline float sigmoidf(float v) noexcept nogil:
    # stable for large |v|: never evaluates exp of a large positive number
    cdef float e
    if v >= 0:
        return 1.0 / (1.0 + expf(-v))
    e = expf(v)
    return e / (1.0 + e)


cdef inline float apply_act(float v, int kind, float alpha, float beta) noexcept nogil:
    """One activation on one value. NaN propagates through every branch (IEEE semantics)."""
    cdef float t
    if kind == ACT_NONE or kind == ACT_IDENTITY:
        return v
    elif kind == ACT_RELU:
        return 0.0 if v < 0 else v
    elif kind == ACT_LEAKY:
        return alpha * v if v < 0 else v
    elif kind == ACT_CLIP:
        # max then min, as numpy.clip/ONNX: min > max gives max everywhere; NaN stays NaN
        t = alpha if v < alpha else v
        return beta if t > beta else t
    elif kind == ACT_SIGMOID:
        return sigmoidf(v)
    elif kind == ACT_TANH:
        return tanhf(v)
    elif kind == ACT_HARDSIGMOID:
        t = alpha * v + beta
        return 0.0 if t < 0 else (1.0 if t > 1 else t)
    elif kind == ACT_HARDSWISH:
        t = v * (1.0 / 6.0) + 0.5
        return v * (0.0 if t < 0 else (1.0 if t > 1 else t))
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
        return v * tanhf(softplusf(v))
    elif kind == ACT_SWISH:
        return v * sigmoidf(alpha * v)
    return v

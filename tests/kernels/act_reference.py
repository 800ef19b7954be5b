"""Independent float64 numpy references for the activations Conv/Gemm fuse (ONNX definitions),
and the (name, alpha, beta) cases the kernel tests run. Never calls fastcnn."""
from __future__ import annotations

import math

import numpy as np

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _softplus(x):
    return np.logaddexp(0.0, x)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


# name -> f(x, alpha, beta), x float64
ACTIVATIONS = {
    "": lambda x, a, b: x,
    "Identity": lambda x, a, b: x,
    "Relu": lambda x, a, b: np.maximum(x, 0.0),
    "LeakyRelu": lambda x, a, b: np.where(x < 0, a * x, x),
    "Clip": lambda x, a, b: np.minimum(np.maximum(x, a), b),
    "Sigmoid": lambda x, a, b: _sigmoid(x),
    "Tanh": lambda x, a, b: np.tanh(x),
    "HardSigmoid": lambda x, a, b: np.clip(a * x + b, 0.0, 1.0),
    "HardSwish": lambda x, a, b: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "Elu": lambda x, a, b: np.where(x < 0, a * np.expm1(np.minimum(x, 0.0)), x),
    "Selu": lambda x, a, b: b * np.where(x <= 0, a * np.expm1(np.minimum(x, 0.0)), x),
    "Celu": lambda x, a, b: np.maximum(x, 0.0) + np.minimum(0.0, a * np.expm1(np.minimum(x, 0.0) / a)),
    "ThresholdedRelu": lambda x, a, b: np.where(x > a, x, 0.0),
    "Softplus": lambda x, a, b: _softplus(x),
    "Softsign": lambda x, a, b: x / (1.0 + np.abs(x)),
    "Exp": lambda x, a, b: np.exp(x),
    "Log": lambda x, a, b: np.log(np.where(x < 0, np.nan, x)),
    "Sqrt": lambda x, a, b: np.sqrt(np.where(x < 0, np.nan, x)),
    "Reciprocal": lambda x, a, b: 1.0 / x,
    "Erf": lambda x, a, b: _erf(x),
    "Neg": lambda x, a, b: -x,
    "Abs": lambda x, a, b: np.abs(x),
    "Sign": lambda x, a, b: np.sign(x),
    "Floor": lambda x, a, b: np.floor(x),
    "Ceil": lambda x, a, b: np.ceil(x),
    "Round": lambda x, a, b: np.round(x),
    "Gelu": lambda x, a, b: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "GeluTanh": lambda x, a, b: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3))),
    "Mish": lambda x, a, b: x * np.tanh(_softplus(x)),
    "Swish": lambda x, a, b: x * _sigmoid(a * x),
}

# (name, alpha, beta) for every fusable activation, with non-default parameters where they exist
ACT_CASES = [
    ("", 0.0, 0.0), ("Identity", 0.0, 0.0), ("Relu", 0.0, 0.0), ("LeakyRelu", 0.1, 0.0),
    ("Clip", -0.5, 0.75), ("Clip", 0.0, 6.0), ("Sigmoid", 0.0, 0.0), ("Tanh", 0.0, 0.0),
    ("HardSigmoid", 0.2, 0.5), ("HardSwish", 0.0, 0.0), ("Elu", 0.7, 0.0),
    ("Selu", 1.6732632, 1.0507010), ("Celu", 1.3, 0.0), ("ThresholdedRelu", 0.4, 0.0),
    ("Softplus", 0.0, 0.0), ("Softsign", 0.0, 0.0), ("Exp", 0.0, 0.0), ("Log", 0.0, 0.0),
    ("Sqrt", 0.0, 0.0), ("Reciprocal", 0.0, 0.0), ("Erf", 0.0, 0.0), ("Neg", 0.0, 0.0),
    ("Abs", 0.0, 0.0), ("Sign", 0.0, 0.0), ("Floor", 0.0, 0.0), ("Ceil", 0.0, 0.0),
    ("Round", 0.0, 0.0), ("Gelu", 0.0, 0.0), ("GeluTanh", 0.0, 0.0), ("Mish", 0.0, 0.0),
    ("Swish", 1.0, 0.0), ("Swish", 1.702, 0.0),
]


def apply(name, x, alpha=0.0, beta=0.0):
    """The activation on x (computed in float64, returned as float64)."""
    with np.errstate(all="ignore"):
        return ACTIVATIONS[name](np.asarray(x, np.float64), alpha, beta)

"""Layers of `fastcnn.nn`: each knows its weight shapes, its output shape and the IR nodes it
emits. Shapes are per sample, NCHW without the batch: (C, H, W) for images, (features,) after
Flatten or a global pool.

Weight layouts (as PyTorch stores them):
    Conv2D       weight (C_out, C_in/groups, kH, kW), bias (C_out,)
    Dense        weight (out, in), bias (out,)          -- y = x @ weight.T + bias, like nn.Linear
    BatchNorm2D  weight (C,), bias (C,), running_mean (C,), running_var (C,)
    PReLU        weight (C,)
"""
from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod

from fastcnn.errors import FastCNNError

# activation name -> list of (op, attrs) applied in order, or a builder for composites
ACTIVATIONS = {
    "relu": [("Relu", {})], "relu6": [("Clip", {"min": 0.0, "max": 6.0})],
    "leaky_relu": [("LeakyRelu", {"alpha": 0.01})], "elu": [("Elu", {"alpha": 1.0})], "selu": [("Selu", {})],
    "gelu": [("Gelu", {})], "sigmoid": [("Sigmoid", {})], "hard_sigmoid": [("HardSigmoid", {})],
    "tanh": [("Tanh", {})], "softplus": [("Softplus", {})], "softsign": [("Softsign", {})],
    "hard_swish": [("HardSwish", {})], "mish": [("Mish", {})], "softmax": [("Softmax", {"axis": 1})],
    "log_softmax": [("LogSoftmax", {"axis": 1})], "linear": [],
}
# LeCun (1998): f(a) = 1.7159 tanh(2a/3), the squashing function of LeNet-5
LECUN_A, LECUN_S = 1.7159, 2.0 / 3.0


def _pair(v, what, lo=1):
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        v = (v, v)
    if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(
            isinstance(x, numbers.Integral) and not isinstance(x, bool) and lo <= x < 1 << 31 for x in v):
        raise FastCNNError(f"{what} must be an int >= {lo} or a pair of them, got {v!r:.60}")
    return (int(v[0]), int(v[1]))


def _out(size, k, s, pb, pe, d=1, ceil_mode=False):
    span = size + pb + pe - d * (k - 1) - 1
    if span < 0:
        return 0
    if ceil_mode:
        o = -(-span // s) + 1
        return o - 1 if (o - 1) * s >= size + pb else o
    return span // s + 1


class Layer(ABC):
    """Base class. `prefix` is the stem of auto-generated names (conv -> conv1, conv2, ...).
    Subclasses implement `emit`; the others have defaults for weightless, shape-keeping layers."""

    prefix = "layer"

    def __init__(self, name=None):
        if name is not None and (not isinstance(name, str) or not name or "." in name):
            raise FastCNNError(f"layer name must be a non-empty string without '.', got {name!r}")
        self.name = name

    def describe(self) -> str:
        return type(self).__name__

    def weight_shapes(self, in_shape) -> dict:
        """role -> shape of this layer's weights for an input of per-sample shape in_shape."""
        return {}

    def output_shape(self, in_shape) -> tuple:
        return tuple(in_shape)

    @abstractmethod
    def emit(self, e, x: str, in_shape, weights: dict) -> str:
        """Add this layer's nodes through the graph builder `e` (weights by `e.weight(self,
        role)`), reading tensor `x` of per-sample shape in_shape (C, H, W or features); return
        the name of the output tensor."""

    def fail(self, msg):
        raise FastCNNError(f"layer '{self.name}' ({type(self).__name__}): {msg}")

    def _image(self, in_shape):
        if len(in_shape) != 3:
            self.fail(f"expects an image input (C, H, W), got {tuple(in_shape)}")
        return in_shape


def emit_activation(layer, e, x, activation, base):
    """IR nodes for `activation` (a name from ACTIVATIONS, 'lecun_tanh', 'swish', or None)."""
    if activation is None or activation == "linear":
        return x
    if activation == "lecun_tanh":
        s = e.emit("Mul", [x, e.const(f"{base}/s", LECUN_S)], f"{base}/scaled")
        t = e.emit("Tanh", [s], f"{base}/tanh")
        return e.emit("Mul", [t, e.const(f"{base}/a", LECUN_A)], base)
    if activation == "swish":
        return e.emit("Mul", [x, e.emit("Sigmoid", [x], f"{base}/sigmoid")], base)
    if activation not in ACTIVATIONS:
        layer.fail(f"unknown activation {activation!r}; use one of "
                   f"{', '.join(sorted(ACTIVATIONS) + ['lecun_tanh', 'swish'])}")
    for op, attrs in ACTIVATIONS[activation]:
        x = e.emit(op, [x], base, attrs)
    return x


def _check_activation(layer, activation):
    if activation not in (None, "lecun_tanh", "swish") and activation not in ACTIVATIONS:
        raise FastCNNError(f"unknown activation {activation!r}; use one of "
                           f"{', '.join(sorted(ACTIVATIONS) + ['lecun_tanh', 'swish'])}")
    return activation


# ----------------------------------------------------------------------------- convolution, dense
class Conv2D(Layer):
    """2-D convolution (cross-correlation). padding: an int, (pad_h, pad_w), "valid" or "same"."""

    prefix = "conv"

    def __init__(self, filters, kernel_size, strides=1, padding=0, dilation=1, groups=1, bias=True,
                 activation=None, name=None):
        super().__init__(name)
        self.filters = _pair(filters, "filters")[0]
        self.kernel = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.dilation = _pair(dilation, "dilation")
        self.groups = _pair(groups, "groups")[0]
        if padding in ("valid", "same"):
            self.padding = padding
        else:
            self.padding = _pair(padding, "padding", lo=0)
        self.bias = bool(bias)
        self.activation = _check_activation(self, activation)

    def describe(self):
        return (f"Conv2D({self.filters}, {self.kernel[0]}x{self.kernel[1]}, stride {self.strides[0]}"
                f"{'' if self.strides[0] == self.strides[1] else 'x' + str(self.strides[1])}"
                f"{', ' + self.activation if self.activation else ''})")

    def _pads(self, h, w):
        if self.padding == "valid":
            return 0, 0, 0, 0
        if self.padding == "same":
            out = []
            for size, k, s, d in ((h, self.kernel[0], self.strides[0], self.dilation[0]),
                                  (w, self.kernel[1], self.strides[1], self.dilation[1])):
                total = max((-(-size // s) - 1) * s + d * (k - 1) + 1 - size, 0)
                out.append((total // 2, total - total // 2))
            return out[0][0], out[1][0], out[0][1], out[1][1]
        return self.padding[0], self.padding[1], self.padding[0], self.padding[1]

    def weight_shapes(self, in_shape):
        c = self._image(in_shape)[0]
        if c % self.groups or self.filters % self.groups:
            self.fail(f"groups={self.groups} must divide the input channels ({c}) and filters ({self.filters})")
        shapes = {"weight": (self.filters, c // self.groups) + self.kernel}
        if self.bias:
            shapes["bias"] = (self.filters,)
        return shapes

    def output_shape(self, in_shape):
        c, h, w = self._image(in_shape)
        pt, pl, pb, pr = self._pads(h, w)
        oh = _out(h, self.kernel[0], self.strides[0], pt, pb, self.dilation[0])
        ow = _out(w, self.kernel[1], self.strides[1], pl, pr, self.dilation[1])
        if oh < 1 or ow < 1:
            self.fail(f"kernel {self.kernel} does not fit the padded input {tuple(in_shape)}")
        return (self.filters, oh, ow)

    def emit(self, e, x, in_shape, weights):
        pads = self._pads(*in_shape[1:])
        attrs = {"kernel_shape": list(self.kernel), "strides": list(self.strides),
                 "dilations": list(self.dilation), "group": self.groups, "pads": list(pads)}
        ins = [x, e.weight(self, "weight")] + ([e.weight(self, "bias")] if self.bias else [])
        y = e.emit("Conv", ins, self.name, attrs)
        return emit_activation(self, e, y, self.activation, f"{self.name}/act")


class Dense(Layer):
    """Fully connected: y = x @ weight.T + bias, weight (out, in) as PyTorch's nn.Linear."""

    prefix = "dense"

    def __init__(self, units, bias=True, activation=None, name=None):
        super().__init__(name)
        self.units = _pair(units, "units")[0]
        self.bias = bool(bias)
        self.activation = _check_activation(self, activation)

    def describe(self):
        return f"Dense({self.units}{', ' + self.activation if self.activation else ''})"

    def _features(self, in_shape):
        if len(in_shape) != 1:
            self.fail(f"expects a flat input (features,), got {tuple(in_shape)}: add Flatten() before it")
        return in_shape[0]

    def weight_shapes(self, in_shape):
        shapes = {"weight": (self.units, self._features(in_shape))}
        if self.bias:
            shapes["bias"] = (self.units,)
        return shapes

    def output_shape(self, in_shape):
        self._features(in_shape)
        return (self.units,)

    def emit(self, e, x, in_shape, weights):
        ins = [x, e.weight(self, "weight")] + ([e.weight(self, "bias")] if self.bias else [])
        y = e.emit("Gemm", ins, self.name, {"transB": 1})
        return emit_activation(self, e, y, self.activation, f"{self.name}/act")


# ----------------------------------------------------------------------------- pooling
class _Pool(Layer):
    prefix = "pool"
    op = ""

    def __init__(self, pool_size, strides=None, padding=0, ceil_mode=False, name=None):
        super().__init__(name)
        self.kernel = _pair(pool_size, "pool_size")
        self.strides = self.kernel if strides is None else _pair(strides, "strides")
        self.padding = _pair(padding, "padding", lo=0)
        if any(p >= k for p, k in zip(self.padding, self.kernel)):
            raise FastCNNError(f"padding {self.padding} must be smaller than pool_size {self.kernel}")
        self.ceil_mode = bool(ceil_mode)

    def describe(self):
        return f"{type(self).__name__}({self.kernel[0]}x{self.kernel[1]}, stride {self.strides[0]})"

    def output_shape(self, in_shape):
        c, h, w = self._image(in_shape)
        oh = _out(h, self.kernel[0], self.strides[0], self.padding[0], self.padding[0], 1, self.ceil_mode)
        ow = _out(w, self.kernel[1], self.strides[1], self.padding[1], self.padding[1], 1, self.ceil_mode)
        if oh < 1 or ow < 1:
            self.fail(f"window {self.kernel} does not fit the input {tuple(in_shape)}")
        return (c, oh, ow)

    def attrs(self):
        p = self.padding
        return {"kernel_shape": list(self.kernel), "strides": list(self.strides),
                "pads": [p[0], p[1], p[0], p[1]], "ceil_mode": int(self.ceil_mode)}

    def emit(self, e, x, in_shape, weights):
        return e.emit(self.op, [x], self.name, self.attrs())


class MaxPool2D(_Pool):
    """Maximum over each window."""
    op = "MaxPool"


class MinPool2D(_Pool):
    """Minimum over each window (morphological erosion; min pooling)."""
    op = "MinPool"


class AvgPool2D(_Pool):
    """Mean over each window; padded positions are not counted unless count_include_pad."""
    op = "AveragePool"

    def __init__(self, pool_size, strides=None, padding=0, ceil_mode=False, count_include_pad=False, name=None):
        super().__init__(pool_size, strides, padding, ceil_mode, name)
        self.count_include_pad = bool(count_include_pad)

    def attrs(self):
        return {**super().attrs(), "count_include_pad": int(self.count_include_pad)}


class L2Pool2D(_Pool):
    """sqrt(sum of squares) over each window (L2 pooling, LpPool with p=2)."""
    op = "LpPool"

    def attrs(self):
        return {**super().attrs(), "p": 2}


class StochasticPool2D(_Pool):
    """Stochastic pooling at inference (Zeiler & Fergus 2013): the probability-weighted average
    sum(a*a)/sum(a) of the non-negative activations of each window (0 when they sum to 0)."""
    op = "StochasticPool"


class _GlobalPool(Layer):
    prefix = "pool"
    op = ""

    def output_shape(self, in_shape):
        return (self._image(in_shape)[0],)

    def emit(self, e, x, in_shape, weights):
        y = e.emit(self.op, [x], f"{self.name}/pool")
        return e.emit("Flatten", [y], self.name, {"axis": 1})


class GlobalAvgPool2D(_GlobalPool):
    """Mean over all positions: (C, H, W) -> (C,)."""
    op = "GlobalAveragePool"


class GlobalMaxPool2D(_GlobalPool):
    """Maximum over all positions: (C, H, W) -> (C,)."""
    op = "GlobalMaxPool"


# ----------------------------------------------------------------------------- other layers
class Maxout(Layer):
    """Maxout (Goodfellow et al. 2013): channel (or feature) c of the output is the maximum of
    input channels c*pieces .. c*pieces + pieces - 1."""

    prefix = "maxout"

    def __init__(self, pieces, name=None):
        super().__init__(name)
        self.pieces = _pair(pieces, "pieces")[0]

    def describe(self):
        return f"Maxout({self.pieces} pieces)"

    def output_shape(self, in_shape):
        if in_shape[0] % self.pieces:
            self.fail(f"{in_shape[0]} channels are not divisible by pieces={self.pieces}")
        return (in_shape[0] // self.pieces,) + tuple(in_shape[1:])

    def emit(self, e, x, in_shape, weights):
        return e.emit("Maxout", [x], self.name, {"pieces": self.pieces})


class LRN(Layer):
    """Local response normalisation across channels (Krizhevsky et al. 2012):
    x / (k + alpha/size * sum of x^2 over `size` neighbouring channels)^beta."""

    prefix = "lrn"

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=1.0, name=None):
        super().__init__(name)
        self.size = _pair(size, "size")[0]
        self.alpha, self.beta, self.k = float(alpha), float(beta), float(k)

    def output_shape(self, in_shape):
        return self._image(in_shape)

    def emit(self, e, x, in_shape, weights):
        return e.emit("LRN", [x], self.name, {"size": self.size, "alpha": self.alpha, "beta": self.beta,
                                              "bias": self.k})


class BatchNorm2D(Layer):
    """Inference batch normalisation per channel with stored statistics (folded into the
    preceding convolution when compiled)."""

    prefix = "bn"

    def __init__(self, eps=1e-5, name=None):
        super().__init__(name)
        self.eps = float(eps)

    def weight_shapes(self, in_shape):
        c = self._image(in_shape)[0]
        return {"weight": (c,), "bias": (c,), "running_mean": (c,), "running_var": (c,)}

    def output_shape(self, in_shape):
        return self._image(in_shape)

    def emit(self, e, x, in_shape, weights):
        ins = [x] + [e.weight(self, r) for r in ("weight", "bias", "running_mean", "running_var")]
        return e.emit("BatchNormalization", ins, self.name, {"epsilon": self.eps})


class Flatten(Layer):
    """(C, H, W) -> (C*H*W,) in C, H, W order."""

    prefix = "flatten"

    def output_shape(self, in_shape):
        return (math.prod(in_shape),)

    def emit(self, e, x, in_shape, weights):
        return e.emit("Flatten", [x], self.name, {"axis": 1})


class Activation(Layer):
    """An activation by name: relu, tanh, lecun_tanh (1.7159 tanh(2x/3)), sigmoid, softmax
    (over channels/features), ..."""

    prefix = "act"

    def __init__(self, activation, name=None):
        super().__init__(name)
        self.activation = _check_activation(self, activation)

    def describe(self):
        return f"Activation({self.activation})"

    def emit(self, e, x, in_shape, weights):
        y = emit_activation(self, e, x, self.activation, self.name)
        return y if y != x else e.emit("Identity", [x], self.name)


class PReLU(Layer):
    """x if x >= 0 else weight[c] * x, one learned slope per channel."""

    prefix = "prelu"

    def weight_shapes(self, in_shape):
        return {"weight": (in_shape[0],)}

    def emit(self, e, x, in_shape, weights):
        slope = e.const(f"{self.name}/slope", weights["weight"].reshape((-1,) + (1,) * (len(in_shape) - 1)))
        return e.emit("PRelu", [x, slope], self.name)


class Dropout(Layer):
    """Identity at inference."""

    prefix = "dropout"

    def __init__(self, rate=0.5, name=None):
        super().__init__(name)
        self.rate = float(rate)

    def emit(self, e, x, in_shape, weights):
        return e.emit("Identity", [x], self.name)

"""Keras 3 operations called on Keras tensors in a functional model (`x + 3.0`,
`keras.ops.mean(x, axis=(1, 2))`, `keras.ops.hard_sigmoid(x)`).

Keras 3 records such a call in the model config like a layer whose module is
`keras.src.ops.<numpy|nn|math>` and whose class is the operation's (`Add`, `Mean`, `Relu6`):
its config holds the operation's options, its call arguments tensors and constants (numbers,
arrays stored as `__numpy__` lists). Keras' own applications use them: MobileNetV3's
hard_sigmoid is `relu6(x + 3.0) * (1.0 / 6.0)`. They are data like layers: nothing is executed.

Each converter is `fn(layer: Layer, args: list) -> list[KTensor]`, args being the positional
call arguments with Keras tensors as KTensors and constants as float32 arrays (lists of tensors,
as Concatenate takes, stay lists). Class names such as Add or Concatenate are also layer classes;
the module tells them apart (`is_operation`).
"""
from __future__ import annotations

import numbers
import re

import numpy as np

from fastcnn.importers.keras.activations import COMMON, KERAS3
from fastcnn.importers.keras.builder import KTensor, identity_perm, keras_const
from fastcnn.importers.keras.layer import Layer
from fastcnn.importers.keras.layers import (INT64_MAX, INT64_MIN, LAYERS, _fmt, _norm_axes,
                                            broadcast_shapes, reshape_to, slice_axes, softmax_layer)
from fastcnn.importers.keras.layers import concatenate as concatenate_layer

OPS_MODULE = re.compile(r"^keras\.(src\.)?ops(\.|$)")


def is_operation(entry) -> bool:
    """Whether a model config entry is a Keras 3 operation rather than a layer.

    .keras files name the module. Keras 3's legacy .h5 drops it: a class only OPERATIONS knows is
    an operation; for a class that is also a layer, the call tells them apart (a merge layer
    takes one list of tensors, the Add/Multiply/... operation two arguments; the Reshape
    operation's option is newshape, the layer's target_shape). Concatenate and Softmax compute the
    same either way, with the same option: the layer converts them."""
    if not isinstance(entry, dict):
        return False
    module = entry.get("module")
    if module is not None:
        return isinstance(module, str) and OPS_MODULE.match(module) is not None
    cls = entry.get("class_name")
    if cls not in OPERATIONS:
        return False
    if cls not in LAYERS:
        return True
    if cls == "Reshape":
        return isinstance(entry.get("config"), dict) and "newshape" in entry["config"]
    if cls in ("Concatenate", "Softmax"):
        return False
    nodes = entry.get("inbound_nodes")
    return isinstance(nodes, list) and any(
        isinstance(n, dict) and isinstance(n.get("args"), list)
        and not (len(n["args"]) == 1 and isinstance(n["args"][0], list)) for n in nodes)


def _only_tensor(layer: Layer, args) -> KTensor:
    if len(args) != 1:
        layer.refuse(f"takes one tensor argument here, got {len(args)} arguments")
    if not isinstance(args[0], KTensor):
        layer.fail(f"its argument must be a tensor, got {type(args[0]).__name__}")
    return args[0]


# ----------------------------------------------------------------------------- elementwise
def binary(op):
    """x (op) y for two tensors of one rank, or a tensor and a constant (either side): numpy
    broadcasting on Keras axes."""
    def convert(layer: Layer, args):
        if len(args) != 2:
            layer.fail(f"expects 2 arguments, got {len(args)}")
        x, y = args
        b = layer.b
        if isinstance(x, KTensor) and isinstance(y, KTensor):
            if x.rank != y.rank:
                layer.refuse(f"tensors of different ranks {_fmt(x.shape)} and {_fmt(y.shape)} are "
                             f"not supported")
            y = b.to_perm(y, x.perm)
            shape = broadcast_shapes(layer, [x.shape, y.shape])
            return [KTensor(b.emit(op, [x.value, y.value], layer.base), shape, x.perm)]
        t = x if isinstance(x, KTensor) else y
        other = y if t is x else x
        if not isinstance(t, KTensor) or not isinstance(other, (numbers.Real, np.ndarray)):
            layer.fail(f"expects a tensor and a tensor or a constant, got {type(x).__name__} and "
                       f"{type(y).__name__}")
        c = np.asarray(other, np.float32)
        if c.ndim > t.rank or (c.ndim == t.rank and c.shape[0] != 1):
            layer.refuse(f"a constant of shape {list(c.shape)} beside a tensor of shape "
                         f"{_fmt(t.shape)} would broadcast over the batch")
        shape = broadcast_shapes(layer, [t.shape, c.shape])
        cname = b.const(f"{layer.base}/const", keras_const(c, t))
        ins = [t.value, cname] if t is x else [cname, t.value]
        return [KTensor(b.emit(op, ins, layer.base), shape, t.perm)]
    return convert


def unary(op, **attrs):
    def convert(layer: Layer, args):
        return [layer.b.unary(op, _only_tensor(layer, args), layer.base, attrs)]
    return convert


def square(layer: Layer, args):
    x = _only_tensor(layer, args)
    return [KTensor(layer.b.emit("Mul", [x.value, x.value], layer.base), x.shape, x.perm)]


def activation(name):
    """An operation computing the Keras 3 activation `name` (keras.ops.nn), no options."""
    fn = KERAS3[name]

    def convert(layer: Layer, args):
        return [fn(layer.b, _only_tensor(layer, args), layer.base)]
    return convert


def gelu(layer: Layer, args):
    approx = layer.flag("approximate", True)    # keras.ops.gelu's default is the tanh form
    return [COMMON["gelu"](layer.b, _only_tensor(layer, args), layer.base, approx)]


def with_number(op, key, default, attr):
    """An activation operation with one numeric option (LeakyRelu's negative_slope, Elu's alpha)."""
    def convert(layer: Layer, args):
        return [layer.b.unary(op, _only_tensor(layer, args), layer.base, {attr: layer.number(key, default)})]
    return convert


def clip(layer: Layer, args):
    x = _only_tensor(layer, args)
    lo, hi = layer.number("x_min"), layer.number("x_max")
    return [layer.b.unary("Clip", x, layer.base, {"min": lo, "max": hi})]


def softmax(op):
    def convert(layer: Layer, args):
        return softmax_layer(layer, [_only_tensor(layer, args)], op)
    return convert


# ----------------------------------------------------------------------------- reductions
def reduce(op):
    """Mean/Max/Min/Sum over non-batch Keras axes, keepdims or not."""
    def convert(layer: Layer, args):
        x = _only_tensor(layer, args)
        if layer.get("axis", None) is None:
            layer.refuse("reducing over every axis (axis=None) takes the batch axis in")
        axes = sorted(_norm_axes(layer, "axis", x.rank))
        keep = layer.flag("keepdims", False)
        if "initial" in layer.cfg and layer.get("initial") is not None:
            layer.refuse(f"initial={layer.cfg['initial']!r:.40} is not supported")
        b = layer.b
        y = b.emit(op, [x.value, b.ints(f"{layer.base}/axes", sorted(x.ir_axis(a) for a in axes))],
                   layer.base, {"keepdims": int(keep)})
        if keep:
            return [KTensor(y, tuple(1 if i in axes else d for i, d in enumerate(x.shape)), x.perm)]
        # the IR keeps the other axes in its order; renumber the Keras axes they hold
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        perm = tuple(p - sum(a < p for a in axes) for p in x.perm if p not in axes)
        return [KTensor(y, shape, perm)]
    return convert


# ----------------------------------------------------------------------------- shapes
def reshape(layer: Layer, args):
    """keras.ops.reshape(x, newshape): newshape names the batch too, which must stay: -1 first,
    or None (`(ops.shape(x)[0], -1)` in a functional model) with at most one -1 after it."""
    x = _only_tensor(layer, args)
    new = layer.get("newshape")
    if not isinstance(new, (list, tuple)) or len(new) < 2 or new[0] not in (-1, None) or \
            (new[0] == -1 and -1 in new[1:]):
        layer.refuse(f"newshape {new!r:.80} must keep the batch as its first dim (-1 or None) and "
                     f"give the others")
    return [reshape_to(layer, x, list(new[1:]), "newshape")]


def transpose(layer: Layer, args):
    """keras.ops.transpose with the batch axis kept first: only the description changes."""
    x = _only_tensor(layer, args)
    axes = layer.get("axes", None)
    if not isinstance(axes, (list, tuple)) or sorted(axes) != list(range(x.rank)) or axes[0] != 0:
        layer.refuse(f"axes {axes!r:.60} must be a permutation of 0..{x.rank - 1} keeping the "
                     f"batch axis 0 first")
    return [x.transposed(tuple(int(a) for a in axes))]


def get_item(layer: Layer, args):
    """x[key]: slices (any step), integer indices, None (a new axis) and one Ellipsis, as numpy
    reads them; the batch axis must be kept whole. One Slice on x as laid out, then the
    integer-indexed axes squeezed and the new ones inserted in Keras order."""
    if len(args) != 2 or not isinstance(args[0], KTensor):
        layer.fail("expects a tensor and an index")
    x, key = args
    key = list(key) if isinstance(key, (list, tuple)) else [key]
    for k in key:
        if not (k is None or k is Ellipsis or isinstance(k, slice)
                or (isinstance(k, numbers.Integral) and not isinstance(k, bool))):
            layer.refuse(f"index {k!r:.40} is not supported (slices, integers, None and ... are)")
    if key.count(Ellipsis) > 1:
        layer.fail("an index can have a single Ellipsis")
    used = sum(1 for k in key if k is not None and k is not Ellipsis)
    if used > x.rank:
        layer.fail(f"{used} indices for a rank-{x.rank} tensor")
    if Ellipsis in key:
        i = key.index(Ellipsis)
        key[i:i + 1] = [slice(None)] * (x.rank - used)
    key += [slice(None)] * (x.rank - sum(1 for k in key if k is not None))
    ranges = {}                    # Keras axis -> (start, stop, step), ONNX Slice's encoding
    drop, new, a, out_axis = [], [], 0, 0
    for k in key:
        if k is None:
            new.append(out_axis)
            out_axis += 1
            continue
        d = x.shape[a]
        if isinstance(k, slice):
            if a == 0 and k != slice(None):
                layer.refuse(f"slicing the batch axis ({k}) is not supported")
            step = 1 if k.step is None else k.step
            if step == 0:
                layer.fail("a slice step must not be 0")
            if k != slice(None):
                ranges[a] = ((0 if step > 0 else INT64_MAX) if k.start is None else k.start,
                             (INT64_MAX if step > 0 else INT64_MIN) if k.stop is None else k.stop, step)
            out_axis += 1
        else:
            if a == 0:
                layer.refuse("indexing the batch axis is not supported")
            if d is not None and not -d <= k < d:
                layer.fail(f"index {k} is out of range for axis {a} of size {d}")
            k = k % d if d is not None else k
            ranges[a] = (k, INT64_MAX if k == -1 else k + 1, 1)
            drop.append(a)
        a += 1
    t = x
    if ranges:
        t = slice_axes(layer, x, ranges, layer.base if not drop and not new else f"{layer.base}/slice")
    if drop:
        t = _drop_axes(layer, t, drop, layer.base if not new else f"{layer.base}/squeeze")
    if new:
        t = _insert_axes(layer, t, new, layer.base)
    if t is x:
        t = layer.b.unary("Identity", x, layer.base)
    return [t]


def _drop_axes(layer: Layer, x: KTensor, axes, base: str) -> KTensor:
    """x without its size-1 Keras `axes` (a Squeeze in Keras order)."""
    x = layer.b.keras_order(x)
    y = layer.b.emit("Squeeze", [x.value, layer.b.ints(f"{base}/axes", sorted(axes))], base)
    shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    return KTensor(y, shape, identity_perm(len(shape)))


def _insert_axes(layer: Layer, x: KTensor, axes, base: str) -> KTensor:
    """x with size-1 axes at `axes` of the result (an Unsqueeze in Keras order)."""
    x = layer.b.keras_order(x)
    y = layer.b.emit("Unsqueeze", [x.value, layer.b.ints(f"{base}/axes", sorted(axes))], base)
    shape = list(x.shape)
    for a in sorted(axes):
        shape.insert(a, 1)
    return KTensor(y, tuple(shape), identity_perm(len(shape)))


def expand_dims(layer: Layer, args):
    x = layer.b.keras_order(_only_tensor(layer, args))
    v = layer.get("axis")
    r = x.rank + 1
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not -r <= v < r or v % r == 0:
        layer.fail(f"'axis'={v!r:.40} is not a non-batch axis of the rank-{r} result")
    return [_insert_axes(layer, x, [int(v) % r], layer.base)]


def squeeze(layer: Layer, args):
    x = layer.b.keras_order(_only_tensor(layer, args))
    v = layer.get("axis", None)
    if v is None:
        axes = [i for i, d in enumerate(x.shape) if i and d == 1]
        if any(d is None for d in x.shape[1:]):
            layer.refuse(f"squeezing every size-1 axis of {_fmt(x.shape)} needs every dim known")
    else:
        axes = [v] if isinstance(v, numbers.Integral) and not isinstance(v, bool) else v
        if not isinstance(axes, (list, tuple)) or not all(
                isinstance(a, numbers.Integral) and not isinstance(a, bool) and -x.rank <= a < x.rank
                for a in axes):
            layer.fail(f"'axis'={v!r:.40} is not valid for a rank-{x.rank} tensor")
        axes = sorted({int(a) % x.rank for a in axes})
        if any(a == 0 or x.shape[a] != 1 for a in axes):
            layer.fail(f"'axis'={v!r:.40}: every squeezed axis must be a non-batch axis of size 1 "
                       f"in {_fmt(x.shape)}")
    if not axes:
        return [layer.b.unary("Identity", x, layer.base)]
    return [_drop_axes(layer, x, axes, layer.base)]


def concatenate(layer: Layer, args):
    if len(args) != 1 or not isinstance(args[0], (list, tuple)) or not args[0] or \
            not all(isinstance(t, KTensor) for t in args[0]):
        layer.refuse("takes one list of tensors here")
    return concatenate_layer(layer, list(args[0]))   # the same config key: axis


# ----------------------------------------------------------------------------- the whitelist
OPERATIONS = {
    # keras.ops.numpy, elementwise
    "Add": binary("Add"), "Subtract": binary("Sub"), "Multiply": binary("Mul"),
    "Divide": binary("Div"), "TrueDivide": binary("Div"), "Maximum": binary("Max"),
    "Minimum": binary("Min"), "Power": binary("Pow"),
    "Negative": unary("Neg"), "Absolute": unary("Abs"), "Abs": unary("Abs"), "Sqrt": unary("Sqrt"),
    "Square": square, "Exp": unary("Exp"), "Log": unary("Log"), "Tanh": unary("Tanh"),
    "Reciprocal": unary("Reciprocal"), "Floor": unary("Floor"), "Ceil": unary("Ceil"),
    "Sign": unary("Sign"), "Clip": clip,
    # keras.ops.numpy, reductions and shapes
    "Mean": reduce("ReduceMean"), "Max": reduce("ReduceMax"), "Min": reduce("ReduceMin"),
    "Sum": reduce("ReduceSum"),
    "Reshape": reshape, "Transpose": transpose, "ExpandDims": expand_dims, "Squeeze": squeeze,
    "Concatenate": concatenate, "GetItem": get_item,
    # keras.ops.nn and keras.ops.math
    "Relu": activation("relu"), "Relu6": activation("relu6"), "Sigmoid": activation("sigmoid"),
    "HardSigmoid": activation("hard_sigmoid"), "HardSilu": activation("hard_silu"),
    "Silu": activation("silu"), "Selu": activation("selu"), "Softplus": activation("softplus"),
    "Softsign": activation("softsign"), "HardTanh": activation("hard_tanh"),
    "LogSigmoid": activation("log_sigmoid"), "TanhShrink": activation("tanh_shrink"),
    "Gelu": gelu, "LeakyRelu": with_number("LeakyRelu", "negative_slope", 0.2, "alpha"),
    "Elu": with_number("Elu", "alpha", 1.0, "alpha"), "Celu": with_number("Celu", "alpha", 1.0, "alpha"),
    "Softmax": softmax("Softmax"), "LogSoftmax": softmax("LogSoftmax"),
    "Erf": unary("Erf"),
}

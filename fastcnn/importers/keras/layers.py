"""Converters for the Keras layer classes fastcnn accepts (the whitelist is `LAYERS`).

Each converter is `fn(layer: Layer, xs: list[KTensor]) -> list[KTensor]`. Keras kernels are
HWIO (spatial..., C_in, C_out) whatever the data_format; they become fastcnn's OIHW here.
Convolution-like layers take their input channels-first (`Builder.channels_first` for
channels_last layers) and hand their output on in that layout; elementwise layers keep the
layout they get; layers defined on the Keras axis order (Flatten, Reshape, Dense on non-channel
axes) ask for it explicitly.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from fastcnn.importers.keras.activations import apply_activation
from fastcnn.importers.keras.builder import (KTensor, channels_first_perm, identity_perm,
                                             keras_const)
from fastcnn.importers.keras.layer import Layer

INT64_MAX, INT64_MIN = (1 << 63) - 1, -(1 << 63)   # open slice ends, as ONNX Slice takes them
KERAS_EPSILON = 1e-7   # keras.backend.epsilon(), used by Normalization


# ----------------------------------------------------------------------------- helpers
def _one(layer: Layer, xs):
    if len(xs) != 1:
        layer.fail(f"expects one input, got {len(xs)}")
    return xs[0]


def _spatial_input(layer: Layer, xs, rank: int):
    """(x in NC+spatial IR layout, data_format, c_in, spatial Keras dims) for a rank-D layer."""
    x = _one(layer, xs)
    if x.rank != rank + 2:
        layer.fail(f"expects a rank-{rank + 2} input (batch, {rank} spatial dims, channels), "
                   f"got shape {_fmt(x.shape)}")
    df = layer.data_format()
    if df == "channels_last":
        x_ir = layer.b.channels_first(x)
        c, spatial = x.shape[-1], x.shape[1:-1]
    else:
        x_ir = layer.b.keras_order(x)
        c, spatial = x.shape[1], x.shape[2:]
    return x_ir, df, c, tuple(spatial)


def _spatial_output(value: str, df: str, n, c, spatial) -> KTensor:
    """The KTensor of an IR (N, C, *spatial) value produced for a layer of data_format df."""
    if df == "channels_last":
        shape = (n,) + tuple(spatial) + (c,)
        return KTensor(value, shape, channels_first_perm(len(shape)))
    shape = (n, c) + tuple(spatial)
    return KTensor(value, shape, identity_perm(len(shape)))


def _fmt(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def slice_axes(layer: Layer, x: KTensor, ranges: dict, base: str) -> KTensor:
    """One Slice of x as it is laid out: ranges maps Keras axes to (start, stop, step) as
    Python's slice reads them (INT64_MAX / INT64_MIN for open ends); other axes are kept.
    Dims of unknown size stay unknown."""
    b = layer.b
    cols = zip(*((start, stop, x.ir_axis(a), step) for a, (start, stop, step) in sorted(ranges.items())))
    ins = [x.value] + [b.ints(f"{base}/{n}", list(v)) for n, v in zip(("starts", "ends", "axes", "steps"), cols)]
    shape = tuple(d if i not in ranges or d is None else len(range(*slice(*ranges[i]).indices(d)))
                  for i, d in enumerate(x.shape))
    return KTensor(b.emit("Slice", ins, base), shape, x.perm)


def _out_len(size, k, s, d, padding):
    """Keras output length of a convolution/pooling window along one axis."""
    if size is None:
        return None
    eff = d * (k - 1) + 1
    if padding == "same":
        return -(-size // s)
    if padding == "causal":
        return (size - 1) // s + 1
    return (size - eff) // s + 1 if size >= eff else 0


def _window(layer: Layer, rank: int):
    k = layer.ints("kernel_size", rank)
    s = layer.ints("strides", rank, 1)
    d = layer.ints("dilation_rate", rank, 1)
    if any(x > 1 for x in d) and any(x > 1 for x in s):
        layer.refuse(f"strides {list(s)} together with dilation_rate {list(d)} (Keras itself "
                     f"does not allow both)")
    return k, s, d


def _padding(layer: Layer, allowed=("valid", "same")) -> str:
    return layer.choice("padding", allowed, "valid")


def _conv_node(layer: Layer, x_ir: str, w, b, k, s, d, padding, group, base) -> str:
    attrs = {"kernel_shape": list(k), "strides": list(s), "dilations": list(d), "group": group,
             "auto_pad": "SAME_UPPER" if padding == "same" else "VALID"}
    inputs = [x_ir, layer.b.const(f"{base}/weight", w)]
    if b is not None:
        inputs.append(layer.b.const(f"{base}/bias", b))
    return layer.b.emit("Conv", inputs, base, attrs)


def _causal_pad(layer: Layer, x_ir: str, k, d, base) -> str:
    """Left-pad the time axis of an IR (N, C, T) value by dilation*(k-1) (Conv1D causal)."""
    pads = layer.b.ints(f"{base}/pads", [0, 0, d[0] * (k[0] - 1), 0, 0, 0])
    return layer.b.emit("Pad", [x_ir, pads], f"{base}/causal_pad")


def _keras_shape_dims(layer: Layer, c, what="channels"):
    if c is None:
        layer.fail(f"the number of input {what} must be known (got None)")
    return int(c)


def _hwio_to_oihw(kernel, rank):
    return np.ascontiguousarray(np.transpose(kernel, (rank + 1, rank) + tuple(range(rank))))


# ----------------------------------------------------------------------------- convolutions
def conv(rank):
    def convert(layer: Layer, xs):
        x_ir, df, c_in, spatial = _spatial_input(layer, xs, rank)
        c_in = _keras_shape_dims(layer, c_in)
        filters = layer.ints("filters", 1)[0]
        k, s, d = _window(layer, rank)
        padding = _padding(layer, ("valid", "same", "causal") if rank == 1 else ("valid", "same"))
        groups = layer.ints("groups", 1, 1)[0]
        if c_in % groups or filters % groups:
            layer.fail(f"groups={groups} must divide the input channels ({c_in}) and filters ({filters})")
        use_bias = layer.flag("use_bias", True)
        spec = [("kernel", k + (c_in // groups, filters))] + ([("bias", (filters,))] if use_bias else [])
        w = layer.weights(spec)
        base = layer.base
        x = x_ir.value
        if padding == "causal":
            x, padding = _causal_pad(layer, x, k, d, base), "valid"
            spatial = tuple(None if t is None else t + d[0] * (k[0] - 1) for t in spatial)
        y = _conv_node(layer, x, _hwio_to_oihw(w["kernel"], rank), w.get("bias"), k, s, d, padding,
                       groups, base)
        out = tuple(_out_len(t, ki, si, di, padding) for t, ki, si, di in zip(spatial, k, s, d))
        t = _spatial_output(y, df, xs[0].shape[0], filters, out)
        return [apply_activation(layer, t, layer.get("activation", None), f"{base}/act")]
    return convert


def _depthwise_weight(kernel, rank):
    """Keras (spatial..., C_in, M) -> fastcnn (C_in*M, 1, spatial...): output channel c*M + m."""
    c, m = kernel.shape[rank], kernel.shape[rank + 1]
    w = np.transpose(kernel, (rank, rank + 1) + tuple(range(rank)))
    return np.ascontiguousarray(w.reshape((c * m, 1) + kernel.shape[:rank]))


def depthwise(rank):
    def convert(layer: Layer, xs):
        x_ir, df, c_in, spatial = _spatial_input(layer, xs, rank)
        c_in = _keras_shape_dims(layer, c_in)
        m = layer.ints("depth_multiplier", 1, 1)[0]
        k, s, d = _window(layer, rank)
        padding = _padding(layer)
        use_bias = layer.flag("use_bias", True)
        spec = [("depthwise_kernel", k + (c_in, m))] + ([("bias", (c_in * m,))] if use_bias else [])
        w = layer.weights(spec)
        base = layer.base
        y = _conv_node(layer, x_ir.value, _depthwise_weight(w["depthwise_kernel"], rank), w.get("bias"),
                       k, s, d, padding, c_in, base)
        out = tuple(_out_len(t, ki, si, di, padding) for t, ki, si, di in zip(spatial, k, s, d))
        t = _spatial_output(y, df, xs[0].shape[0], c_in * m, out)
        return [apply_activation(layer, t, layer.get("activation", None), f"{base}/act")]
    return convert


def separable(rank):
    def convert(layer: Layer, xs):
        x_ir, df, c_in, spatial = _spatial_input(layer, xs, rank)
        c_in = _keras_shape_dims(layer, c_in)
        filters = layer.ints("filters", 1)[0]
        m = layer.ints("depth_multiplier", 1, 1)[0]
        k, s, d = _window(layer, rank)
        padding = _padding(layer)
        use_bias = layer.flag("use_bias", True)
        spec = [("depthwise_kernel", k + (c_in, m)), ("pointwise_kernel", (1,) * rank + (c_in * m, filters))]
        spec += [("bias", (filters,))] if use_bias else []
        w = layer.weights(spec)
        base = layer.base
        dw = _conv_node(layer, x_ir.value, _depthwise_weight(w["depthwise_kernel"], rank), None,
                        k, s, d, padding, c_in, f"{base}/depthwise")
        y = _conv_node(layer, dw, _hwio_to_oihw(w["pointwise_kernel"], rank), w.get("bias"),
                       (1,) * rank, (1,) * rank, (1,) * rank, "valid", 1, base)
        out = tuple(_out_len(t, ki, si, di, padding) for t, ki, si, di in zip(spatial, k, s, d))
        t = _spatial_output(y, df, xs[0].shape[0], filters, out)
        return [apply_activation(layer, t, layer.get("activation", None), f"{base}/act")]
    return convert


def _deconv_geometry(size, k, s, d, padding, output_padding):
    """(out length, pad_begin, pad_end, output_padding) of a Keras transposed convolution along
    one axis, as TensorFlow computes it: the output length from Keras' deconv_output_length, the
    begin padding from the forward convolution of that length (SAME or VALID)."""
    eff = d * (k - 1) + 1
    if output_padding is None:
        rest = max(eff - s, 0) if padding == "valid" else 0   # out - in*s
        out_minus = rest
    else:
        pad = eff // 2 if padding == "same" else 0
        out_minus = eff - 2 * pad + output_padding - s        # out - in*s
    # out = in*s + out_minus; forward SAME padding of that length does not depend on `in`
    if padding == "same":
        r = out_minus + s                                      # out - (in-1)*s
        total = max((-(-r // s) - 1) * s + eff - r, 0)
        pb = total // 2
    else:
        pb = 0
    pe = eff - s - pb - out_minus                              # s*(in-1) + eff - pb - out
    op = 0
    if pe < 0:
        op, pe = -pe, 0
    out = None if size is None else size * s + out_minus
    return out, pb, pe, op


def conv_transpose(rank):
    def convert(layer: Layer, xs):
        x_ir, df, c_in, spatial = _spatial_input(layer, xs, rank)
        c_in = _keras_shape_dims(layer, c_in)
        filters = layer.ints("filters", 1)[0]
        k, s, d = _window(layer, rank)
        padding = _padding(layer)
        if layer.ints("groups", 1, 1)[0] != 1:
            layer.refuse("groups > 1 is not supported for transposed convolutions")
        op_cfg = layer.get("output_padding", None)
        ops_ = [None] * rank if op_cfg is None else layer.ints("output_padding", rank, lo=0)
        use_bias = layer.flag("use_bias", True)
        spec = [("kernel", k + (filters, c_in))] + ([("bias", (filters,))] if use_bias else [])
        w = layer.weights(spec)
        geo = [_deconv_geometry(t, ki, si, di, padding, oi)
               for t, ki, si, di, oi in zip(spatial, k, s, d, ops_)]
        if any(g[3] >= max(si, di) for g, si, di in zip(geo, s, d)):
            layer.refuse(f"output_padding {list(ops_)} must be smaller than strides {list(s)}")
        base = layer.base
        # Keras (spatial..., C_out, C_in) -> ONNX ConvTranspose (C_in, C_out, spatial...)
        wt = np.ascontiguousarray(np.transpose(w["kernel"], (rank + 1, rank) + tuple(range(rank))))
        attrs = {"kernel_shape": list(k), "strides": list(s), "dilations": list(d), "group": 1,
                 "pads": [g[1] for g in geo] + [g[2] for g in geo],
                 "output_padding": [g[3] for g in geo]}
        inputs = [x_ir.value, layer.b.const(f"{base}/weight", wt)]
        if use_bias:
            inputs.append(layer.b.const(f"{base}/bias", w["bias"]))
        y = layer.b.emit("ConvTranspose", inputs, base, attrs)
        t = _spatial_output(y, df, xs[0].shape[0], filters, tuple(g[0] for g in geo))
        return [apply_activation(layer, t, layer.get("activation", None), f"{base}/act")]
    return convert


# ----------------------------------------------------------------------------- dense
def dense(layer: Layer, xs):
    x = _one(layer, xs)
    if x.rank < 2:
        layer.fail(f"expects an input of rank >= 2, got shape {_fmt(x.shape)}")
    units = layer.ints("units", 1)[0]
    c_in = _keras_shape_dims(layer, x.shape[-1], "features")
    use_bias = layer.flag("use_bias", True)
    w = layer.weights([("kernel", (c_in, units))] + ([("bias", (units,))] if use_bias else []))
    b, base = layer.b, layer.base
    shape = x.shape[:-1] + (units,)
    if x.rank == 2:
        inputs = [x.value, b.const(f"{base}/weight", w["kernel"])]
        if use_bias:
            inputs.append(b.const(f"{base}/bias", w["bias"]))
        t = KTensor(b.emit("Gemm", inputs, base), shape, (0, 1))
    elif x.rank in (3, 4) and x.perm == channels_first_perm(x.rank):
        # channels already on IR axis 1: a 1x1 convolution over them, layout kept
        wk = np.ascontiguousarray(w["kernel"].T.reshape((units, c_in) + (1,) * (x.rank - 2)))
        y = _conv_node(layer, x.value, wk, w.get("bias"), (1,) * (x.rank - 2), (1,) * (x.rank - 2),
                       (1,) * (x.rank - 2), "valid", 1, base)
        t = KTensor(y, shape, x.perm)
    else:
        x = b.keras_order(x)
        y = b.emit("MatMul", [x.value, b.const(f"{base}/weight", w["kernel"])],
                   f"{base}/matmul" if use_bias else base)
        if use_bias:
            y = b.emit("Add", [y, b.const(f"{base}/bias", w["bias"])], base)
        t = KTensor(y, shape, x.perm)
    return [apply_activation(layer, t, layer.get("activation", None), f"{base}/act")]


# ----------------------------------------------------------------------------- reshaping
def flatten(layer: Layer, xs):
    x = _one(layer, xs)
    df = layer.data_format()
    if x.rank < 2:
        layer.fail(f"expects an input of rank >= 2, got shape {_fmt(x.shape)}")
    # Keras flattens in its own axis order; channels_first first moves channels last
    order = identity_perm(x.rank) if df == "channels_last" or x.rank < 3 else \
        (0,) + tuple(range(2, x.rank)) + (1,)
    x = layer.b.to_perm(x, order)
    n = None if any(d is None for d in x.shape[1:]) else math.prod(x.shape[1:])
    return [KTensor(layer.b.emit("Flatten", [x.value], layer.base, {"axis": 1}), (x.shape[0], n), (0, 1))]


def reshape(layer: Layer, xs):
    return [reshape_to(layer, _one(layer, xs), layer.get("target_shape"), "target_shape")]


def reshape_to(layer: Layer, x: KTensor, target, key) -> KTensor:
    """x reshaped (in Keras axis order) to (batch, *target); target: positive ints, at most one
    -1 (the config entry `key`, for messages)."""
    x = layer.b.keras_order(x)
    if not isinstance(target, (list, tuple)) or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and (d == -1 or d >= 1)
            for d in target) or list(target).count(-1) > 1:
        layer.fail(f"{key} must be a list of positive ints with at most one -1, got {target!r:.80}")
    target = [int(d) for d in target]
    known = None if any(d is None for d in x.shape[1:]) else math.prod(x.shape[1:])
    out = list(target)
    if known is not None:
        rest = math.prod(d for d in target if d != -1)
        if -1 in target:
            if rest == 0 or known % rest:
                layer.fail(f"cannot reshape {_fmt(x.shape)} to (batch, {', '.join(map(str, target))})")
            out[target.index(-1)] = known // rest
        elif rest != known:
            layer.fail(f"cannot reshape {_fmt(x.shape)} to (batch, {', '.join(map(str, target))})")
    else:
        out = [None if d == -1 else d for d in target]
    shape_c = layer.b.ints(f"{layer.base}/shape", [0] + target)
    y = layer.b.emit("Reshape", [x.value, shape_c], layer.base)
    return KTensor(y, (x.shape[0],) + tuple(out), identity_perm(len(out) + 1))


def permute(layer: Layer, xs):
    x = _one(layer, xs)
    dims = layer.get("dims")
    if not isinstance(dims, (list, tuple)) or sorted(dims) != list(range(1, x.rank)):
        layer.fail(f"dims {dims!r:.60} must be a permutation of 1..{x.rank - 1}")
    return [x.transposed((0,) + tuple(int(d) for d in dims))]


# ----------------------------------------------------------------------------- pooling
def pool(rank, op):
    def convert(layer: Layer, xs):
        x_ir, df, c, spatial = _spatial_input(layer, xs, rank)
        k = layer.ints("pool_size", rank)
        s = layer.get("strides", None)
        s = k if s is None else layer.ints("strides", rank)
        padding = _padding(layer)
        attrs = {"kernel_shape": list(k), "strides": list(s),
                 "auto_pad": "SAME_UPPER" if padding == "same" else "VALID"}
        y = layer.b.emit(op, [x_ir.value], layer.base, attrs)
        out = tuple(_out_len(t, ki, si, 1, padding) for t, ki, si in zip(spatial, k, s))
        return [_spatial_output(y, df, xs[0].shape[0], c, out)]
    return convert


def global_pool(rank, op):
    def convert(layer: Layer, xs):
        x_ir, df, c, spatial = _spatial_input(layer, xs, rank)
        keepdims = layer.flag("keepdims", False)
        y = layer.b.emit(op, [x_ir.value], layer.base if keepdims else f"{layer.base}/pool")
        n = xs[0].shape[0]
        if keepdims:
            return [_spatial_output(y, df, n, c, (1,) * rank)]
        return [KTensor(layer.b.emit("Flatten", [y], layer.base, {"axis": 1}), (n, c), (0, 1))]
    return convert


# ----------------------------------------------------------------------------- normalisation
def _norm_axes(layer: Layer, key, rank, default=-1) -> tuple:
    v = layer.get(key, default)
    axes = [v] if isinstance(v, numbers.Integral) and not isinstance(v, bool) else v
    if not isinstance(axes, (list, tuple)) or not axes or not all(
            isinstance(a, numbers.Integral) and not isinstance(a, bool) and -rank <= a < rank for a in axes):
        layer.fail(f"'{key}'={v!r:.60} is not a valid axis list for a rank-{rank} input")
    axes = tuple(int(a) % rank for a in axes)
    if 0 in axes or len(set(axes)) != len(axes):
        layer.fail(f"'{key}'={v!r:.60} must not name the batch axis or repeat an axis")
    return axes


def _along(vec, axis, rank):
    """A 1-D vector as a Keras-rank constant varying along `axis` (batch axis included)."""
    shape = [1] * rank
    shape[axis] = vec.shape[0]
    return np.asarray(vec, np.float64).reshape(shape)


def batchnorm(layer: Layer, xs):
    x = _one(layer, xs)
    axes = _norm_axes(layer, "axis", x.rank)
    if len(axes) != 1:
        layer.refuse(f"normalising over several axes {list(axes)} is not supported")
    axis = axes[0]
    c = _keras_shape_dims(layer, x.shape[axis], f"dims on axis {axis}")
    eps = layer.number("epsilon", 1e-3)
    scale, center = layer.flag("scale", True), layer.flag("center", True)
    spec = ([("gamma", (c,))] if scale else []) + ([("beta", (c,))] if center else []) + \
        [("moving_mean", (c,)), ("moving_variance", (c,))]
    w = layer.weights(spec)
    gamma = w.get("gamma", np.ones(c, np.float32))
    beta = w.get("beta", np.zeros(c, np.float32))
    b, base = layer.b, layer.base
    if x.ir_axis(axis) == 1:
        ins = [x.value] + [b.const(f"{base}/{r}", v) for r, v in
                           (("gamma", gamma), ("beta", beta), ("mean", w["moving_mean"]),
                            ("variance", w["moving_variance"]))]
        return [KTensor(b.emit("BatchNormalization", ins, base, {"epsilon": eps}), x.shape, x.perm)]
    s = gamma.astype(np.float64) / np.sqrt(w["moving_variance"].astype(np.float64) + eps)
    shift = beta - w["moving_mean"] * s
    y = b.binary_const("Mul", x, _along(s, axis, x.rank), f"{base}/scale")
    return [b.binary_const("Add", y, _along(shift, axis, x.rank), base)]


def layernorm(layer: Layer, xs):
    x = _one(layer, xs)
    axes = _norm_axes(layer, "axis", x.rank)
    if list(axes) != sorted(axes):
        layer.refuse(f"axis {list(layer.cfg.get('axis'))} is not in increasing order")
    if layer.flag("rms_scaling", False):
        layer.refuse("rms_scaling=True is not supported")
    dims = tuple(_keras_shape_dims(layer, x.shape[a], f"dims on axis {a}") for a in axes)
    eps = layer.number("epsilon", 1e-3)
    scale, center = layer.flag("scale", True), layer.flag("center", True)
    w = layer.weights(([("gamma", dims)] if scale else []) + ([("beta", dims)] if center else []))
    b, base = layer.b, layer.base
    bshape = [1] * x.rank
    for a, dim in zip(axes, dims):
        bshape[a] = dim
    gamma = w["gamma"].reshape(bshape) if scale else None
    beta = w["beta"].reshape(bshape) if center else None
    if axes == tuple(range(axes[0], x.rank)):
        x = b.keras_order(x)
        g = gamma if gamma is not None else np.ones(bshape, np.float32)
        ins = [x.value, b.const(f"{base}/gamma", g.reshape(dims))]
        if beta is not None:
            ins.append(b.const(f"{base}/beta", beta.reshape(dims)))
        y = b.emit("LayerNormalization", ins, base, {"axis": axes[0], "epsilon": eps})
        return [KTensor(y, x.shape, x.perm)]
    # other axis sets: mean and variance with reductions, in whatever layout x has
    ir_axes = b.ints(f"{base}/axes", sorted(x.ir_axis(a) for a in axes))
    mean = b.emit("ReduceMean", [x.value, ir_axes], f"{base}/mean")
    dev = b.emit("Sub", [x.value, mean], f"{base}/dev")
    sq = b.emit("Mul", [dev, dev], f"{base}/sq")
    var = b.emit("ReduceMean", [sq, ir_axes], f"{base}/var")
    std = b.emit("Sqrt", [b.emit("Add", [var, b.const(f"{base}/eps", np.float32(eps))], f"{base}/var_eps")],
                 f"{base}/std")
    y = KTensor(b.emit("Div", [dev, std], f"{base}/norm"), x.shape, x.perm)
    if gamma is not None:
        y = b.binary_const("Mul", y, gamma, f"{base}/gamma")
    if beta is not None:
        y = b.binary_const("Add", y, beta, f"{base}/beta")
    return [y]


def normalization(layer: Layer, xs):
    x = _one(layer, xs)
    axis_cfg = layer.get("axis", -1)
    keep = () if axis_cfg is None or axis_cfg == [] else _norm_axes(layer, "axis", x.rank)
    keep = tuple(sorted(keep))
    dims = tuple(_keras_shape_dims(layer, x.shape[a], f"dims on axis {a}") for a in keep)
    mean_cfg, var_cfg = layer.get("mean", None), layer.get("variance", None)
    invert = layer.flag("invert", False)
    if (mean_cfg is None) != (var_cfg is None):
        layer.fail("mean and variance must be given together")
    bshape = [1] * x.rank
    for a, dim in zip(keep, dims):
        bshape[a] = dim
    if mean_cfg is not None:
        try:
            mean = np.asarray(mean_cfg, np.float64)
            var = np.asarray(var_cfg, np.float64)
        except (TypeError, ValueError):
            layer.fail("mean and variance must be numbers or nested lists of numbers")
        if mean.shape != var.shape or mean.ndim > len(keep):
            layer.fail(f"mean shape {list(mean.shape)} and variance shape {list(var.shape)} do not "
                       f"fit the kept axes {list(keep)}")
        # align their dims with the kept axes from the right, then broadcast (as Keras does)
        expanded = [1] * x.rank
        for i in range(1, mean.ndim + 1):
            expanded[keep[-i]] = mean.shape[-i]
        try:
            mean = np.broadcast_to(mean.reshape(expanded), bshape)
            var = np.broadcast_to(var.reshape(expanded), bshape)
        except ValueError:
            layer.fail(f"mean shape {list(mean.shape)} does not broadcast to {bshape}")
    else:
        w = layer.weights([("mean", dims), ("variance", dims), ("count", ())])
        mean = w["mean"].astype(np.float64).reshape(bshape)
        var = w["variance"].astype(np.float64).reshape(bshape)
    std = np.maximum(np.sqrt(np.maximum(var, 0)), KERAS_EPSILON)
    b, base = layer.b, layer.base
    if invert:
        y = b.binary_const("Mul", x, std, f"{base}/scale")
        return [b.binary_const("Add", y, mean, base)]
    y = b.binary_const("Mul", x, 1.0 / std, f"{base}/scale")
    return [b.binary_const("Add", y, -mean / std, base)]


def rescaling(layer: Layer, xs):
    x = _one(layer, xs)
    scale, offset = layer.get("scale"), layer.get("offset", 0.0)
    try:
        scale = np.asarray(scale, np.float64)
        offset = np.asarray(offset, np.float64)
    except (TypeError, ValueError):
        layer.fail(f"scale {scale!r:.40} and offset {offset!r:.40} must be numbers or lists of numbers")
    for name, v in (("scale", scale), ("offset", offset)):
        if v.dtype.kind not in "fiu" or v.ndim > x.rank:
            layer.fail(f"{name} must be a number or a list of numbers, got {v!r:.60}")
        tail = x.shape[x.rank - v.ndim:] if v.ndim else ()
        if any(d != 1 and k is not None and d != k for d, k in zip(v.shape, tail)):
            layer.fail(f"{name} shape {list(v.shape)} does not broadcast to {_fmt(x.shape)}")
    y = x if np.all(scale == 1) else layer.b.binary_const("Mul", x, scale, f"{layer.base}/scale")
    if np.all(offset == 0):
        return [y] if y is not x else [layer.b.unary("Identity", x, layer.base)]
    return [layer.b.binary_const("Add", y, offset, layer.base)]


# ----------------------------------------------------------------------------- activations
def activation_layer(layer: Layer, xs):
    x = _one(layer, xs)
    y = apply_activation(layer, x, layer.get("activation"), layer.base)
    return [y if y is not x else layer.b.unary("Identity", x, layer.base)]


def relu_layer(layer: Layer, xs):
    x = _one(layer, xs)
    mx = layer.get("max_value", None)
    mx = None if mx is None else layer.number("max_value")
    slope = layer.number("negative_slope", 0.0)
    th = layer.number("threshold", 0.0)
    if (mx is not None and mx < 0) or slope < 0:
        layer.fail(f"max_value ({mx}) and negative_slope ({slope}) must be >= 0")
    b, base = layer.b, layer.base
    if th == 0 and slope == 0:
        return [b.unary("Relu", x, base) if mx is None else b.unary("Clip", x, base, {"min": 0.0, "max": mx})]
    if th == 0 and mx is None:
        return [b.unary("LeakyRelu", x, base, {"alpha": slope})]
    # Keras: (x if x > threshold else 0), clipped to [0, max_value] when given,
    # minus negative_slope * relu(threshold - x)
    pos = b.unary("ThresholdedRelu", x, f"{base}/pos", {"alpha": th}) if th else b.unary("Relu", x, f"{base}/pos")
    if mx is not None:
        pos = b.unary("Clip", pos, f"{base}/clip", {"min": 0.0, "max": mx})
    if slope == 0:
        return [pos]
    below = b.binary_const("Sub", x, np.float32(th), f"{base}/shift")          # x - t
    neg = b.unary("Relu", b.unary("Neg", below, f"{base}/neg"), f"{base}/neg_relu")  # relu(t - x)
    scaled = b.binary_const("Mul", neg, np.float32(slope), f"{base}/neg_scaled")
    return [KTensor(b.emit("Sub", [pos.value, scaled.value], base), x.shape, x.perm)]


def leaky_relu(layer: Layer, xs):
    x = _one(layer, xs)
    slope = layer.number("negative_slope") if "negative_slope" in layer.cfg else layer.number("alpha", 0.3)
    return [layer.b.unary("LeakyRelu", x, layer.base, {"alpha": slope})]


def elu(layer: Layer, xs):
    return [layer.b.unary("Elu", _one(layer, xs), layer.base, {"alpha": layer.number("alpha", 1.0)})]


def thresholded_relu(layer: Layer, xs):
    return [layer.b.unary("ThresholdedRelu", _one(layer, xs), layer.base, {"alpha": layer.number("theta", 1.0)})]


def softmax_layer(layer: Layer, xs, op="Softmax"):
    """Softmax over the config's axis (one, not the batch); also the Softmax and LogSoftmax
    operations (op), whose option is the same."""
    x = _one(layer, xs)
    axes = _norm_axes(layer, "axis", x.rank)
    if len(axes) != 1:
        layer.refuse(f"softmax over several axes {list(axes)} is not supported")
    return [layer.b.unary(op, x, layer.base, {"axis": x.ir_axis(axes[0])})]


def prelu(layer: Layer, xs):
    x = _one(layer, xs)
    shared = layer.get("shared_axes", None)
    shared = [] if shared is None else ([shared] if isinstance(shared, int) else shared)
    if not all(isinstance(a, int) and 1 <= a < x.rank for a in shared):
        layer.fail(f"shared_axes {shared!r:.60} must be axes 1..{x.rank - 1}")
    shape = [1 if i + 1 in shared else _keras_shape_dims(layer, d, f"dims on axis {i + 1}")
             for i, d in enumerate(x.shape[1:])]
    w = layer.weights([("alpha", tuple(shape))])
    slope = layer.b.const(f"{layer.base}/slope", keras_const(w["alpha"], x))
    return [KTensor(layer.b.emit("PRelu", [x.value, slope], layer.base), x.shape, x.perm)]


def layer_scale(layer: Layer, xs):
    """keras.applications' ConvNeXt LayerScale: x * gamma, one learned factor per channel (the
    last Keras axis, projection_dim values)."""
    x = _one(layer, xs)
    dim = layer.ints("projection_dim", 1)[0]
    layer.number("init_values", 0.0)   # gamma's initial value: the stored gamma replaces it
    if _keras_shape_dims(layer, x.shape[-1], "channels") != dim:
        layer.fail(f"projection_dim {dim} does not match the input's {x.shape[-1]} channels")
    w = layer.weights([("gamma", (dim,))])
    return [layer.b.binary_const("Mul", x, w["gamma"], layer.base)]


def identity_layer(layer: Layer, xs):
    """Dropout, noise, regularisation and random augmentation layers: nothing happens at
    inference, whatever their options (rate, noise_shape, factor, data_format, ...)."""
    layer.ignore_options()
    return [_one(layer, xs)]


# ----------------------------------------------------------------------------- padding, cropping, resizing
def _pairs(layer: Layer, key, rank):
    """Keras padding/cropping spec -> [(begin, end), ...] per spatial axis. Accepted: an int
    (same everywhere), one int per axis (symmetric), one (begin, end) pair per axis; for 1-D
    also a bare (begin, end) pair."""
    v = layer.get(key)

    def is_int(e):
        return isinstance(e, numbers.Integral) and not isinstance(e, bool)

    if is_int(v):
        v = [[v, v]] * rank
    elif rank == 1 and isinstance(v, (list, tuple)) and len(v) == 2 and all(map(is_int, v)):
        v = [v]
    elif isinstance(v, (list, tuple)) and len(v) == rank and all(map(is_int, v)):
        v = [[e, e] for e in v]
    if not (isinstance(v, (list, tuple)) and len(v) == rank and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(is_int(e) and 0 <= e < 1 << 31 for e in p)
            for p in v)):
        layer.fail(f"'{key}' must be an int, {rank} ints or {rank} pairs of non-negative ints, got "
                   f"{layer.cfg.get(key)!r:.80}")
    return [(int(p[0]), int(p[1])) for p in v]


def _spatial_axes(layer: Layer, x: KTensor, rank: int):
    if x.rank != rank + 2:
        layer.fail(f"expects a rank-{rank + 2} input, got shape {_fmt(x.shape)}")
    return list(range(1, rank + 1)) if layer.data_format() == "channels_last" else list(range(2, rank + 2))


def zero_padding(rank):
    def convert(layer: Layer, xs):
        x = _one(layer, xs)
        pairs = _pairs(layer, "padding", rank)
        axes = _spatial_axes(layer, x, rank)
        begin, end = [0] * x.rank, [0] * x.rank
        shape = list(x.shape)
        for a, (pb, pe) in zip(axes, pairs):
            ia = x.ir_axis(a)
            begin[ia], end[ia] = pb, pe
            shape[a] = None if shape[a] is None else shape[a] + pb + pe
        pads = layer.b.ints(f"{layer.base}/pads", begin + end)
        return [KTensor(layer.b.emit("Pad", [x.value, pads], layer.base), tuple(shape), x.perm)]
    return convert


def cropping(rank):
    def convert(layer: Layer, xs):
        x = _one(layer, xs)
        pairs = _pairs(layer, "cropping", rank)
        axes = _spatial_axes(layer, x, rank)
        for a, (cb, ce) in zip(axes, pairs):
            if x.shape[a] is not None and cb + ce >= x.shape[a]:
                layer.fail(f"cropping {cb}+{ce} removes all {x.shape[a]} positions of axis {a}")
        ranges = {a: (cb, -ce if ce else INT64_MAX, 1) for a, (cb, ce) in zip(axes, pairs)}
        return [slice_axes(layer, x, ranges, layer.base)]
    return convert


def _resize_to(layer: Layer, x_ir: str, size, mode: str, base: str) -> str:
    """Resize an IR (N, C, H, W) value to `size` (h, w) as Keras' image resize computes it
    without antialiasing: bilinear with half-pixel centers; nearest taking floor((o + 0.5) *
    in / out), TensorFlow's half-pixel nearest (PyTorch's nearest-exact)."""
    attrs = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"} if mode == "bilinear" else \
        {"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn", "nearest_mode": "floor"}
    attrs["axes"] = [2, 3]
    return layer.b.emit("Resize", [x_ir, "", "", layer.b.ints(f"{base}/sizes", list(size))], base, attrs)


def _static_spatial(layer: Layer, spatial, what):
    if any(d is None for d in spatial):
        layer.refuse(f"{what} needs the input's height and width known, got {list(spatial)}")
    return spatial


def resizing(layer: Layer, xs):
    """Keras' Resizing: bilinear or nearest, optionally cropping the input's centre to the
    target's aspect ratio first (crop_to_aspect_ratio)."""
    x_ir, df, c, spatial = _spatial_input(layer, xs, 2)
    size = (layer.ints("height", 1)[0], layer.ints("width", 1)[0])
    mode = layer.choice("interpolation", ("nearest", "bilinear"), "bilinear")
    if layer.flag("antialias", False):
        layer.refuse("antialias=True is not supported")
    if layer.flag("pad_to_aspect_ratio", False):
        layer.refuse("pad_to_aspect_ratio=True is not supported")
    layer.get("fill_mode", None), layer.get("fill_value", None)   # pad_to_aspect_ratio's only
    src = x_ir.value
    if layer.flag("crop_to_aspect_ratio", False):
        h, w = _static_spatial(layer, spatial, "crop_to_aspect_ratio")
        ch, cw = min(h, int(w * size[0] / size[1])), min(w, int(h * size[1] / size[0]))
        src = _crop_hw(layer, x_ir, (h - ch) // 2, (w - cw) // 2, ch, cw, f"{layer.base}/crop")
    y = _resize_to(layer, src, size, mode, layer.base)
    return [_spatial_output(y, df, xs[0].shape[0], c, size)]


def center_crop(layer: Layer, xs):
    """Keras' CenterCrop of an input at least as large as the target: rows and columns from
    (h - height) // 2 and (w - width) // 2."""
    x_ir, df, c, spatial = _spatial_input(layer, xs, 2)
    size = (layer.ints("height", 1)[0], layer.ints("width", 1)[0])
    h, w = _static_spatial(layer, spatial, "CenterCrop")
    if h < size[0] or w < size[1]:
        layer.refuse(f"an input of {h}x{w} smaller than the {size[0]}x{size[1]} crop (Keras "
                     f"resizes it) is not supported")
    y = _crop_hw(layer, x_ir, (h - size[0]) // 2, (w - size[1]) // 2, size[0], size[1], layer.base)
    return [_spatial_output(y, df, xs[0].shape[0], c, size)]


def _crop_hw(layer: Layer, x_ir: KTensor, top: int, left: int, h: int, w: int, base: str) -> str:
    """Rows top..top+h and columns left..left+w of x_ir, laid out (N, C, H, W) in the IR."""
    return slice_axes(layer, x_ir, {x_ir.perm[2]: (top, top + h, 1), x_ir.perm[3]: (left, left + w, 1)},
                      base).value


def unit_normalization(layer: Layer, xs):
    """Keras' UnitNormalization: x / sqrt(max(sum(x^2 over axis), 1e-12))."""
    x = _one(layer, xs)
    axes = _norm_axes(layer, "axis", x.rank)
    b, base = layer.b, layer.base
    ss = b.emit("ReduceSumSquare", [x.value, b.ints(f"{base}/axes", sorted(x.ir_axis(a) for a in axes))],
                f"{base}/sum_squares", {"keepdims": 1})
    floor = b.emit("Max", [ss, b.const(f"{base}/eps", np.array(1e-12, np.float32))], f"{base}/floor")
    norm = b.emit("Sqrt", [floor], f"{base}/norm")
    return [KTensor(b.emit("Div", [x.value, norm], base), x.shape, x.perm)]


def upsampling2d(layer: Layer, xs):
    x_ir, df, c, spatial = _spatial_input(layer, xs, 2)
    size = layer.ints("size", 2)
    mode = layer.choice("interpolation", ("nearest", "bilinear"), "nearest")
    attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"} \
        if mode == "nearest" else {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
    scales = layer.b.const(f"{layer.base}/scales", np.array([1, 1, size[0], size[1]], np.float32))
    y = layer.b.emit("Resize", [x_ir.value, "", scales], layer.base, attrs)
    out = tuple(None if t is None else t * f for t, f in zip(spatial, size))
    return [_spatial_output(y, df, xs[0].shape[0], c, out)]


# ----------------------------------------------------------------------------- merging
def _aligned(layer: Layer, xs, min_inputs=2):
    if len(xs) < min_inputs:
        layer.fail(f"expects at least {min_inputs} inputs, got {len(xs)}")
    ranks = {x.rank for x in xs}
    if len(ranks) != 1:
        layer.refuse(f"inputs of different ranks {[_fmt(x.shape) for x in xs]} are not supported")
    first = xs[0]
    return [first] + [layer.b.to_perm(x, first.perm) for x in xs[1:]]


def _merged_shape(layer: Layer, xs):
    return broadcast_shapes(layer, [x.shape for x in xs])


def broadcast_shapes(layer: Layer, shapes) -> tuple:
    """numpy's broadcast of Keras shapes (aligned on the last axis; None: unknown), failing on
    dims that cannot agree."""
    rank = max(len(s) for s in shapes)
    out = []
    for dims in zip(*((1,) * (rank - len(s)) + tuple(s) for s in shapes)):
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            layer.fail(f"input shapes {[_fmt(s) for s in shapes]} do not match")
        out.append(known.pop() if known else (None if None in dims else 1))
    return tuple(out)


def merge(op, variadic_op=None, exactly=None):
    """Elementwise merge: `op` chained over the inputs, or one `variadic_op` node."""
    def convert(layer: Layer, xs):
        xs = _aligned(layer, xs)
        if exactly is not None and len(xs) != exactly:
            layer.fail(f"expects exactly {exactly} inputs, got {len(xs)}")
        shape = _merged_shape(layer, xs)
        b = layer.b
        if variadic_op is not None and (op is None or len(xs) > 2):
            v = b.emit(variadic_op, [x.value for x in xs], layer.base)
        else:
            v = xs[0].value
            for i, x in enumerate(xs[1:]):
                v = b.emit(op, [v, x.value], layer.base if i == len(xs) - 2 else f"{layer.base}/{i}")
        return [KTensor(v, shape, xs[0].perm)]
    return convert


def concatenate(layer: Layer, xs):
    xs = _aligned(layer, xs, 1)
    r = xs[0].rank
    axis = layer.get("axis", -1)
    if not isinstance(axis, int) or isinstance(axis, bool) or not -r <= axis < r or axis % r == 0:
        layer.fail(f"axis {axis!r:.40} is not valid for rank-{r} inputs (batch axis excluded)")
    axis %= r
    shape = list(xs[0].shape)
    for x in xs[1:]:
        for i in range(r):
            if i != axis and None not in (x.shape[i], shape[i]) and x.shape[i] != shape[i]:
                layer.fail(f"input shapes {[_fmt(t.shape) for t in xs]} differ outside axis {axis}")
    total = [x.shape[axis] for x in xs]
    shape[axis] = None if None in total else sum(total)
    y = layer.b.emit("Concat", [x.value for x in xs], layer.base, {"axis": xs[0].ir_axis(axis)})
    return [KTensor(y, tuple(shape), xs[0].perm)]


# ----------------------------------------------------------------------------- the whitelist
LAYERS = {
    "Conv1D": conv(1), "Conv2D": conv(2),
    "DepthwiseConv1D": depthwise(1), "DepthwiseConv2D": depthwise(2),
    "SeparableConv1D": separable(1), "SeparableConv2D": separable(2),
    "Conv1DTranspose": conv_transpose(1), "Conv2DTranspose": conv_transpose(2),
    "Dense": dense,
    "Flatten": flatten, "Reshape": reshape, "Permute": permute,
    "MaxPooling1D": pool(1, "MaxPool"), "MaxPooling2D": pool(2, "MaxPool"),
    "AveragePooling1D": pool(1, "AveragePool"), "AveragePooling2D": pool(2, "AveragePool"),
    "GlobalAveragePooling1D": global_pool(1, "GlobalAveragePool"),
    "GlobalAveragePooling2D": global_pool(2, "GlobalAveragePool"),
    "GlobalMaxPooling1D": global_pool(1, "GlobalMaxPool"),
    "GlobalMaxPooling2D": global_pool(2, "GlobalMaxPool"),
    "BatchNormalization": batchnorm, "LayerNormalization": layernorm,
    "Normalization": normalization, "Rescaling": rescaling,
    "Activation": activation_layer, "ReLU": relu_layer, "LeakyReLU": leaky_relu, "PReLU": prelu,
    "ELU": elu, "ThresholdedReLU": thresholded_relu, "Softmax": softmax_layer,
    "LayerScale": layer_scale,
    "Dropout": identity_layer, "SpatialDropout1D": identity_layer, "SpatialDropout2D": identity_layer,
    "SpatialDropout3D": identity_layer, "GaussianNoise": identity_layer, "GaussianDropout": identity_layer,
    "AlphaDropout": identity_layer, "ActivityRegularization": identity_layer,
    "Resizing": resizing, "CenterCrop": center_crop, "UnitNormalization": unit_normalization,
    "ZeroPadding1D": zero_padding(1), "ZeroPadding2D": zero_padding(2),
    "Cropping1D": cropping(1), "Cropping2D": cropping(2),
    "UpSampling2D": upsampling2d,
    "Add": merge("Add", "Sum"), "Subtract": merge("Sub", exactly=2), "Multiply": merge("Mul"),
    "Average": merge(None, "Mean"), "Maximum": merge("Max", "Max"), "Minimum": merge("Min", "Min"),
    "Concatenate": concatenate,
}
# Random augmentation layers: identity at inference in Keras 2 and 3 (RandomCrop is not: Keras 2
# resizes and crops at inference, Keras 3 passes the input through)
LAYERS.update({name: identity_layer for name in (
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomContrast", "RandomTranslation",
    "RandomBrightness", "RandomHeight", "RandomWidth", "RandomColorDegeneration",
    "RandomColorJitter", "RandomElasticTransform", "RandomErasing", "RandomGaussianBlur",
    "RandomGrayscale", "RandomHue", "RandomInvert", "RandomPerspective", "RandomPosterization",
    "RandomSaturation", "RandomSharpness", "RandomShear", "Solarization", "AugMix", "CutMix",
    "MixUp", "RandAugment")})
# Keras 1/2 aliases of the same layers
LAYERS.update({
    "Convolution1D": LAYERS["Conv1D"], "Convolution2D": LAYERS["Conv2D"],
    "MaxPool1D": LAYERS["MaxPooling1D"], "MaxPool2D": LAYERS["MaxPooling2D"],
    "AvgPool1D": LAYERS["AveragePooling1D"], "AvgPool2D": LAYERS["AveragePooling2D"],
    "GlobalAvgPool1D": LAYERS["GlobalAveragePooling1D"], "GlobalAvgPool2D": LAYERS["GlobalAveragePooling2D"],
    "GlobalMaxPool1D": LAYERS["GlobalMaxPooling1D"], "GlobalMaxPool2D": LAYERS["GlobalMaxPooling2D"],
    "SeparableConvolution2D": LAYERS["SeparableConv2D"], "Convolution2DTranspose": LAYERS["Conv2DTranspose"],
})

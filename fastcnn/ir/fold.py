"""numpy evaluation of operators whose inputs are known while planning (constant folding).

These run on initializers and on shape arithmetic (Shape -> Gather -> Concat -> Reshape chains
exported by PyTorch and Paddle). `fold(ctx, values) -> list[np.ndarray]`; shapes were already
validated by the op's shape function, so these only compute.
"""
from __future__ import annotations

import math

import numpy as np

from fastcnn.ir import shapes


def _v(values, i):
    return values[i] if i < len(values) else None


def _float_fn(fn):
    """Wrap a numpy float function; computes in float64 then returns the input's dtype."""
    def fold(ctx, values):
        x = values[0]
        with np.errstate(all="ignore"):
            return [np.asarray(fn(x.astype(np.float64), ctx.attrs)).astype(x.dtype)]
    return fold


def _erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x) if x.size else x


UNARY = {
    "Relu": lambda x, a: np.maximum(x, 0),
    "LeakyRelu": lambda x, a: np.where(x >= 0, x, a["alpha"] * x),
    "Elu": lambda x, a: np.where(x > 0, x, a["alpha"] * np.expm1(x)),
    "Selu": lambda x, a: a["gamma"] * np.where(x > 0, x, a["alpha"] * np.expm1(x)),
    "Celu": lambda x, a: np.where(x < 0, a["alpha"] * np.expm1(x / a["alpha"]), x),
    "ThresholdedRelu": lambda x, a: np.where(x <= a["alpha"], 0, x),  # NaN stays NaN
    "Clip": lambda x, a: np.minimum(np.maximum(x, a["min"]), a["max"]),
    "Sigmoid": lambda x, a: 1 / (1 + np.exp(-x)),
    "Tanh": lambda x, a: np.tanh(x),
    "HardSigmoid": lambda x, a: np.clip(a["alpha"] * x + a["beta"], 0, 1),
    "HardSwish": lambda x, a: x * np.clip(x / 6 + 0.5, 0, 1),
    "Softplus": lambda x, a: np.logaddexp(0, x),
    "Softsign": lambda x, a: x / (1 + np.abs(x)),
    "Exp": lambda x, a: np.exp(x),
    "Log": lambda x, a: np.log(x),
    "Sqrt": lambda x, a: np.sqrt(x),
    "Reciprocal": lambda x, a: 1 / x,
    "Erf": lambda x, a: _erf(x),
    "Gelu": lambda x, a: (0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
                          if a["approximate"] == "tanh" else 0.5 * x * (1 + _erf(x / np.sqrt(2)))),
    "Mish": lambda x, a: x * np.tanh(np.logaddexp(0, x)),
    "Swish": lambda x, a: x / (1 + np.exp(-a["alpha"] * x)),
}


def unary(ctx, values):
    x = values[0]
    op = ctx.node.op
    if op in ("Neg", "Abs", "Sign", "Floor", "Ceil", "Round"):
        fn = {"Neg": np.negative, "Abs": np.abs, "Sign": np.sign, "Floor": np.floor,
              "Ceil": np.ceil, "Round": np.round}[op]
        return [fn(x).astype(x.dtype)]
    if op == "Clip" and x.dtype.kind in "iu":
        lo, hi = ctx.attrs["min"], ctx.attrs["max"]
        return [np.clip(x, max(lo, np.iinfo(x.dtype).min), min(hi, np.iinfo(x.dtype).max)).astype(x.dtype)]
    return _float_fn(UNARY[op])(ctx, values)


def _int_div(a, b):
    # ONNX integer division truncates toward zero (C semantics), numpy floors.
    q = np.abs(a) // np.where(b == 0, 1, np.abs(b))
    return np.where((a < 0) != (b < 0), -q, q)


def broadcast(ctx, values):
    op = ctx.node.op
    xs = [v for v in values if v is not None]
    dtype = xs[0].dtype
    with np.errstate(all="ignore"):
        if op == "Add":
            r = xs[0] + xs[1]
        elif op == "Sub":
            r = xs[0] - xs[1]
        elif op == "Mul":
            r = xs[0] * xs[1]
        elif op == "Div":
            r = _int_div(xs[0], xs[1]) if dtype.kind in "iu" else xs[0] / xs[1]
        elif op == "Mod":
            r = np.fmod(xs[0], xs[1]) if ctx.attrs.get("fmod") else np.mod(xs[0], xs[1])
        elif op == "Pow":
            r = np.power(xs[0].astype(np.float64), xs[1].astype(np.float64))
        elif op in ("Sum", "Mean"):
            r = xs[0]
            for x in xs[1:]:
                r = r + x
            if op == "Mean":
                r = r / len(xs)
        elif op == "Max":
            r = xs[0]
            for x in xs[1:]:
                r = np.maximum(r, x)
        elif op == "Min":
            r = xs[0]
            for x in xs[1:]:
                r = np.minimum(r, x)
        elif op == "PRelu":
            r = np.where(xs[0] < 0, xs[0] * xs[1], xs[0])
        else:
            raise KeyError(op)
    return [np.asarray(r).astype(dtype)]


COMPARE = {"Equal": np.equal, "Less": np.less, "Greater": np.greater,
           "LessOrEqual": np.less_equal, "GreaterOrEqual": np.greater_equal,
           "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor}


def compare(ctx, values):
    return [COMPARE[ctx.node.op](values[0], values[1])]


def logical_not(ctx, values):
    return [np.logical_not(values[0])]


def where(ctx, values):
    compare = ctx.attrs["compare"]
    if compare:
        return [np.where(COMPARE[compare](values[0], values[1]), values[2], values[3])]
    return [np.where(values[0], values[1], values[2])]


def identity(ctx, values):
    return [values[0]]


def flatten(ctx, values):
    t = shapes.flatten(ctx)[0]
    return [values[0].reshape(t.shape)]


def reshape(ctx, values):
    t = shapes.reshape(ctx)[0]
    return [values[0].reshape(t.shape)]


def transpose(ctx, values):
    x = values[0]
    perm = ctx.attrs["perm"] or list(range(x.ndim))[::-1]
    return [np.ascontiguousarray(np.transpose(x, perm))]


def squeeze(ctx, values):
    return [values[0].reshape(shapes.squeeze(ctx)[0].shape)]


def unsqueeze(ctx, values):
    return [values[0].reshape(shapes.unsqueeze(ctx)[0].shape)]


def concat(ctx, values):
    axis = ctx.axis(ctx.attrs["axis"], values[0].ndim)
    return [np.concatenate(values, axis=axis)]


def split(ctx, values):
    axis, sizes = shapes.split_sizes(ctx)
    return np.split(values[0], np.cumsum(sizes)[:-1], axis=axis)


def slice_(ctx, values):
    starts, stops, steps, _ = shapes.slice_params(ctx)
    idx = tuple(slice(a, None if (c < 0 and b < 0) else b, c) for a, b, c in zip(starts, stops, steps))
    return [np.ascontiguousarray(values[0][idx])]


def pad(ctx, values):
    begin, end = shapes.pad_amounts(ctx)
    x = values[0]
    mode = ctx.attrs["mode"]
    if mode == "constant":
        # out[i] = x[i - begin] where that is inside x, else the value (this also covers pads
        # that crop more than one side holds: out has x + begin + end elements)
        cv = values[2].reshape(-1)[0] if len(values) > 2 and values[2] is not None else 0
        out = np.full(tuple(d + b + e for d, b, e in zip(x.shape, begin, end)), cv, dtype=x.dtype)
        dst, src = [], []
        for d, b, e in zip(x.shape, begin, end):
            lo = max(b, 0)
            n = max(0, min(d + b, d + b + e) - lo)
            dst.append(slice(lo, lo + n))
            src.append(slice(lo - b, lo - b + n))
        out[tuple(dst)] = x[tuple(src)]
        return [out]
    # negative pads crop first (the shape function checked that something is left to copy)
    crop = tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(zip(begin, end)))
    widths = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    return [np.pad(x[crop], widths, mode=mode)]


def expand(ctx, values):
    t = shapes.expand(ctx)[0]
    return [np.ascontiguousarray(np.broadcast_to(values[0], t.shape))]


def tile(ctx, values):
    return [np.tile(values[0], ctx.const_ints(1, "repeats"))]


def gather(ctx, values):
    axis = ctx.axis(ctx.attrs["axis"], values[0].ndim)
    return [np.take(values[0], values[1].astype(np.int64), axis=axis)]


def depth_to_space(ctx, values):
    x = values[0]
    n, c, h, w = x.shape
    b = ctx.attrs["blocksize"]
    if ctx.attrs["mode"] == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return [y.reshape(n, c // (b * b), h * b, w * b)]


def space_to_depth(ctx, values):
    x = values[0]
    n, c, h, w = x.shape
    b = ctx.attrs["blocksize"]
    y = x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    return [y.reshape(n, c * b * b, h // b, w // b)]


def reduce(ctx, values):
    x = values[0]
    axes = ctx.const_ints(1, "axes") if len(values) > 1 and values[1] is not None else []
    if not axes:
        if ctx.attrs["noop_with_empty_axes"]:
            return [x]
        axes = list(range(x.ndim))
    axes = tuple(sorted({ctx.axis(a, x.ndim, "axes") for a in axes}))
    keep = bool(ctx.attrs["keepdims"])
    op = ctx.node.op
    xf = x.astype(np.float64) if x.dtype.kind == "f" else x
    with np.errstate(all="ignore"):
        r = {
            "ReduceMean": lambda: np.mean(xf, axis=axes, keepdims=keep),
            "ReduceSum": lambda: np.sum(xf, axis=axes, keepdims=keep),
            "ReduceMax": lambda: np.max(xf, axis=axes, keepdims=keep),
            "ReduceMin": lambda: np.min(xf, axis=axes, keepdims=keep),
            "ReduceProd": lambda: np.prod(xf, axis=axes, keepdims=keep),
            "ReduceL1": lambda: np.sum(np.abs(xf), axis=axes, keepdims=keep),
            "ReduceL2": lambda: np.sqrt(np.sum(xf * xf, axis=axes, keepdims=keep)),
            "ReduceSumSquare": lambda: np.sum(xf * xf, axis=axes, keepdims=keep),
            "ReduceLogSumExp": lambda: np.log(np.sum(np.exp(xf), axis=axes, keepdims=keep)),
        }[op]()
    return [np.asarray(r).astype(x.dtype)]


def argreduce(ctx, values):
    x = values[0]
    axis = ctx.axis(ctx.attrs["axis"], x.ndim)
    fn = np.argmax if ctx.node.op == "ArgMax" else np.argmin
    if ctx.attrs["select_last_index"]:
        r = x.shape[axis] - 1 - fn(np.flip(x, axis=axis), axis=axis)
    else:
        r = fn(x, axis=axis)
    if ctx.attrs["keepdims"]:
        r = np.expand_dims(r, axis)
    return [r.astype(np.int64)]


def topk_order(x: np.ndarray, axis: int, largest: bool) -> np.ndarray:
    """Indices sorting x along axis best first: largest (or smallest) values first, NaN before
    every number (as ArgMax and ArgMin pick it), equal values in index order."""
    nan = np.isnan(x) if x.dtype.kind == "f" else np.zeros(x.shape, bool)
    key = np.where(nan, 0, x)
    if largest:
        key = -key if x.dtype.kind == "f" else np.invert(key) if x.dtype.kind in "iu" else ~key
    # lexsort: the last key is the primary one; stable, so ties stay in index order
    moved = [np.moveaxis(a, axis, -1) for a in (key, ~nan)]
    order = np.lexsort((moved[0], moved[1]), axis=-1)
    return np.moveaxis(order, -1, axis)


def topk(ctx, values):
    x = values[0]
    axis = ctx.axis(ctx.attrs["axis"], x.ndim)
    k = int(np.asarray(values[1]).reshape(-1)[0])
    idx = np.take(topk_order(x, axis, bool(ctx.attrs["largest"])), np.arange(k), axis=axis)
    return [np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64)]


def shape_of(ctx, values):
    shape = ctx.shape(0)
    n = shapes.shape_of(ctx)[0].shape[0]
    start = ctx.attrs["start"]
    start = start + len(shape) if start < 0 else start
    start = min(max(start, 0), len(shape))
    return [np.array(shape[start:start + n], dtype=np.int64)]


def size_of(ctx, values):
    return [np.array(ctx.type(0).size, dtype=np.int64)]


def cast(ctx, values):
    x = values[0]
    to = np.dtype(ctx.attrs["to"])
    with np.errstate(all="ignore"):
        if to.kind in "iu" and x.dtype.kind == "f":
            # Truncate toward zero, NaN -> 0, saturate out-of-range values (ONNX leaves them
            # undefined). The bounds are compared in float64 and written as integers: float
            # rounding of 2**31-1 or 2**63-1 would otherwise wrap around.
            info = np.iinfo(to)
            t = np.nan_to_num(np.trunc(x.astype(np.float64)), nan=0.0)
            high, low = t >= float(info.max), t <= float(info.min)
            out = np.where(high | low, 0.0, t).astype(to)
            out[high] = info.max
            out[low] = info.min
            return [out]
        return [x.astype(to)]


def constant_of_shape(ctx, values):
    t = shapes.constant_of_shape(ctx)[0]
    return [np.full(t.shape, ctx.attrs["value"], dtype=t.dtype)]


def range_(ctx, values):
    t = shapes.range_(ctx)[0]
    start, delta = values[0].reshape(-1)[0], values[2].reshape(-1)[0]
    return [(start + delta * np.arange(t.shape[0])).astype(t.dtype)]


def nonzero(ctx, values):
    return [np.array(np.nonzero(values[0]), dtype=np.int64).reshape(values[0].ndim, -1)]


def softmax(ctx, values):
    x = values[0].astype(np.float64)
    axis = ctx.axis(ctx.attrs["axis"], x.ndim)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    s = e / e.sum(axis=axis, keepdims=True)
    if ctx.node.op == "LogSoftmax":
        s = np.log(s)
    return [s.astype(values[0].dtype)]

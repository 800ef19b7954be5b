"""Shape functions: `fn(ctx: NodeContext) -> list[ValueType]`, one per operator family.

Each function validates everything its kernel will rely on (ranks, dims, dtypes, attribute values,
constant inputs) and raises GraphError/UnsupportedOpError naming the node otherwise. Semantics
are ONNX's (opset 13+ forms; importers convert older forms).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fastcnn.ir.geometry import MAX_DIM, transposed_window_geometry, window_geometry
from fastcnn.ir.graph import ValueType
from fastcnn.ir.opspec import NodeContext, broadcast_shapes, check_dtype_name, product

F32 = "float32"
# Activations that Conv/Gemm can apply in their epilogue (attribute `activation`).
FUSABLE_ACTIVATIONS = ("", "Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid",
                       "HardSwish", "Elu", "Swish", "Mish", "Softplus")


def _same(ctx: NodeContext, i=0, dtype=None):
    t = ctx.type(i)
    return ValueType(t.shape, dtype or t.dtype)


def _check_activation(ctx: NodeContext):
    act = ctx.attrs.get("activation", "")
    if act not in FUSABLE_ACTIVATIONS:
        ctx.fail(f"activation {act!r} cannot be fused; use one of {', '.join(FUSABLE_ACTIVATIONS[1:])}")


# ----------------------------------------------------------------------------- convolution
def conv_geometry(ctx: NodeContext):
    """Validate a Conv node. Returns (geometry, n, c_in, c_out, group).

    X: (n, c_in, *spatial) with 1 or 2 spatial dims; W: (c_out, c_in/group, *kernel), constant;
    B: (c_out,) optional, constant; residual (4th input, fused Add): same shape as the output.
    """
    ctx.expect_float(0, 1, 2, 3)
    ctx.expect_rank(0, (3, 4), "X: (N, C, W) or (N, C, H, W)")
    x, w = ctx.shape(0), ctx.shape(1)
    if len(w) != len(x):
        ctx.fail(f"weight '{ctx.name(1)}' has rank {len(w)} shape {list(w)}; expected rank {len(x)} "
                 f"to match input '{ctx.name(0)}' {list(x)}")
    ctx.const(1, "weights")
    n, c_in = x[0], x[1]
    c_out, c_per_group = w[0], w[1]
    group = ctx.attrs["group"]
    if group < 1:
        ctx.fail(f"group must be >= 1, got {group}")
    if c_in % group or c_per_group * group != c_in:
        ctx.fail(f"input '{ctx.name(0)}' has {c_in} channels but weight '{ctx.name(1)}' {list(w)} "
                 f"with group={group} expects {c_per_group * group}")
    if c_out % group:
        ctx.fail(f"output channels {c_out} are not divisible by group={group}")
    kernel = ctx.attrs["kernel_shape"] or list(w[2:])
    if list(kernel) != list(w[2:]):
        ctx.fail(f"kernel_shape {list(kernel)} does not match weight shape {list(w)}")
    if ctx.has(2):
        ctx.const(2, "bias")
        if ctx.shape(2) != (c_out,):
            ctx.fail(f"bias '{ctx.name(2)}' has shape {list(ctx.shape(2))}; expected [{c_out}]")
    scale = ctx.attrs.get("weight_scale")
    if scale is not None and len(scale) and len(scale) != c_out:
        ctx.fail(f"weight_scale has {len(scale)} values; expected one per output channel ({c_out})")
    _check_activation(ctx)
    geo = window_geometry(ctx, x[2:], kernel, ctx.attrs["strides"], ctx.attrs["pads"],
                          ctx.attrs["dilations"], ctx.attrs["auto_pad"])
    return geo, n, c_in, c_out, group


def conv(ctx: NodeContext):
    geo, n, c_in, c_out, group = conv_geometry(ctx)
    out = (n, c_out) + geo.out
    if ctx.has(3) and ctx.shape(3) != out:
        ctx.fail(f"residual input '{ctx.name(3)}' has shape {list(ctx.shape(3))}; expected {list(out)}")
    return [ValueType(out, F32)]


def conv_transpose_geometry(ctx: NodeContext):
    """Validate a ConvTranspose node. Returns (geometry, n, c_in, c_out, group).

    X: (n, c_in, *spatial) with 1 or 2 spatial dims; W: (c_in, c_out/group, *kernel), constant;
    B: (c_out,) optional, constant. geometry.pads are the resolved [begin..., end...]."""
    ctx.expect_float(0, 1, 2)
    ctx.expect_rank(0, (3, 4), "X: (N, C, W) or (N, C, H, W)")
    x, w = ctx.shape(0), ctx.shape(1)
    if len(w) != len(x):
        ctx.fail(f"weight '{ctx.name(1)}' has rank {len(w)} shape {list(w)}; expected rank {len(x)} "
                 f"to match input '{ctx.name(0)}' {list(x)}")
    ctx.const(1, "weights")
    n, c_in = x[0], x[1]
    if min(x[1:]) < 1:
        ctx.fail(f"input '{ctx.name(0)}' has an empty channel or spatial axis {list(x)}")
    group = ctx.attrs["group"]
    if group < 1:
        ctx.fail(f"group must be >= 1, got {group}")
    if w[0] != c_in:
        ctx.fail(f"weight '{ctx.name(1)}' {list(w)} (C_in, C_out/group, kernel...) is for {w[0]} "
                 f"input channels but input '{ctx.name(0)}' has {c_in}")
    if c_in % group:
        ctx.fail(f"input '{ctx.name(0)}' has {c_in} channels, not divisible by group={group}")
    c_out = w[1] * group
    kernel = ctx.attrs["kernel_shape"] or list(w[2:])
    if list(kernel) != list(w[2:]):
        ctx.fail(f"kernel_shape {list(kernel)} does not match weight shape {list(w)}")
    if ctx.has(2):
        ctx.const(2, "bias")
        if ctx.shape(2) != (c_out,):
            ctx.fail(f"bias '{ctx.name(2)}' has shape {list(ctx.shape(2))}; expected [{c_out}]")
    _check_activation(ctx)
    a = ctx.attrs
    geo = transposed_window_geometry(ctx, x[2:], kernel, a["strides"], a["pads"], a["dilations"],
                                     a["auto_pad"], a["output_padding"], a["output_shape"])
    return geo, n, c_in, c_out, group


def conv_transpose(ctx: NodeContext):
    geo, n, _, c_out, _ = conv_transpose_geometry(ctx)
    return [ValueType((n, c_out) + geo.out, F32)]


# ----------------------------------------------------------------------------- pooling
def pool_geometry(ctx: NodeContext):
    """Validate a windowed pooling node over X: (n, c, *spatial), 1 or 2 spatial dims."""
    ctx.expect_float(0)
    ctx.expect_rank(0, (3, 4), "X: (N, C, W) or (N, C, H, W)")
    x = ctx.shape(0)
    a = ctx.attrs
    geo = window_geometry(ctx, x[2:], a["kernel_shape"], a["strides"], a["pads"],
                          a.get("dilations", []), a["auto_pad"], a.get("ceil_mode", 0))
    r = geo.rank
    for i in range(r):
        if geo.pads[i] >= geo.kernel[i] or geo.pads[i + r] >= geo.kernel[i]:
            # As onnxruntime: a window lying wholly in the padding has no defined max/min/average.
            ctx.fail(f"pads {list(geo.pads)} must be smaller than kernel_shape {list(geo.kernel)}")
    empty = empty_window(x[2:], geo)
    if empty is not None:
        axis, pos = empty
        ctx.fail(f"with dilations {list(geo.dilations)} the window of output position {pos} on "
                 f"spatial axis {axis} covers only padding (spatial dims {list(x[2:])}, "
                 f"kernel_shape {list(geo.kernel)}, pads {list(geo.pads)})")
    if ctx.node.op == "LpPool" and not 1 <= a["p"] <= 64:
        ctx.fail(f"p must be between 1 and 64, got {a['p']}")
    if a.get("storage_order", 0) not in (0, 1):
        ctx.fail("storage_order must be 0 or 1")
    return geo


def empty_window(in_spatial, geo):
    """(axis, output index) of the first window with no tap inside the input, else None.

    A window starting at st >= 0 has its first tap inside (the geometry keeps st < size), so
    only windows starting in the begin padding can miss the input, and only when dilated: the
    first tap at or after 0 is k0 = ceil(-st / d), which must exist and be < size.
    """
    for a in range(geo.rank):
        k, s, d, pb, size = geo.kernel[a], geo.strides[a], geo.dilations[a], geo.pads[a], in_spatial[a]
        if d == 1:
            continue
        for o in range(min(geo.out[a], -(-pb // s))):
            st = o * s - pb
            k0 = -(-(-st) // d)
            if k0 >= k or st + k0 * d >= size:
                return a, o
    return None


def pool(ctx: NodeContext):
    geo = pool_geometry(ctx)
    x = ctx.shape(0)
    return [ValueType(x[:2] + geo.out, F32)]


def maxout(ctx: NodeContext):
    """X (n, c*pieces, ...) -> (n, c, ...): out[:, j] = max(X[:, j*pieces : (j+1)*pieces])."""
    ctx.expect_float(0)
    x = ctx.shape(0)
    k = ctx.attrs["pieces"]
    if len(x) < 2:
        ctx.fail(f"input '{ctx.name(0)}' must be (N, C, ...), got shape {list(x)}")
    if k < 1 or x[1] % k:
        ctx.fail(f"pieces={k} must be >= 1 and divide the {x[1]} channels of '{ctx.name(0)}'")
    return [ValueType((x[0], x[1] // k) + x[2:], F32)]


def global_pool(ctx: NodeContext):
    ctx.expect_float(0)
    if ctx.rank(0) < 3:
        ctx.fail(f"input '{ctx.name(0)}' must be (N, C, spatial...), got shape {list(ctx.shape(0))}")
    if ctx.node.op == "GlobalLpPool" and not 1 <= ctx.attrs["p"] <= 64:
        ctx.fail(f"p must be between 1 and 64, got {ctx.attrs['p']}")
    x = ctx.shape(0)
    if product(x[2:]) == 0:
        ctx.fail(f"input '{ctx.name(0)}' has an empty spatial extent {list(x)}")
    return [ValueType(x[:2] + (1,) * (len(x) - 2), F32)]


# ----------------------------------------------------------------------------- resize
RESIZE_MODES = ("nearest", "linear", "cubic")
RESIZE_COORDINATES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                      "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize")
# floor_up_ceil_down: Resize-10/Upsample's rounding (not an ONNX value; the importer emits it):
# truncate on an upsampled axis, ceil on a downsampled one.
RESIZE_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "floor_up_ceil_down")
RESIZE_POLICIES = ("stretch", "not_larger", "not_smaller")


@dataclass(frozen=True)
class ResizeParams:
    """A Resize node resolved for one input shape, per axis of X: out (output dims), scales
    (float32 values as runtimes use them: given, or out/in from sizes) and roi ((start, end)
    in normalised coordinates; (0, 1) unless tf_crop_and_resize)."""

    out: tuple
    scales: tuple
    roi: tuple


def _optional_const(ctx: NodeContext, i: int, what: str):
    """Input i's constant value, or None when the input is omitted or an empty tensor."""
    if not ctx.has(i):
        return None
    v = ctx.const(i, what)
    return None if v.size == 0 else v


def _f32(v) -> float:
    return float(np.float32(v))


def resize_params(ctx: NodeContext) -> ResizeParams:
    """Validate a Resize node (X, roi?, scales?, sizes?; opset-19 attributes) and resolve it.

    Output dims, as onnxruntime computes them: floor(float32(scale) * in) for scales; sizes as
    given with scale = out/in, or with keep_aspect_ratio_policy one scale min/max(out/in) over
    the listed axes and out = round(scale * in). Only the last two axes (H, W) may be resized;
    the others must keep their size with scale 1 (and roi [0, 1])."""
    ctx.expect_float(0)
    a = ctx.attrs
    for name, allowed in (("mode", RESIZE_MODES), ("coordinate_transformation_mode", RESIZE_COORDINATES),
                          ("nearest_mode", RESIZE_NEAREST), ("keep_aspect_ratio_policy", RESIZE_POLICIES)):
        if a[name] not in allowed:
            ctx.fail(f"{name} must be one of {', '.join(allowed)}, got {a[name]!r}")
    if a["exclude_outside"] not in (0, 1):
        ctx.fail(f"exclude_outside must be 0 or 1, got {a['exclude_outside']}")
    if a["exclude_outside"] and a["mode"] != "cubic":
        ctx.fail(f"exclude_outside=1 applies to mode 'cubic' only (mode is {a['mode']!r})")
    for name in ("cubic_coeff_a", "extrapolation_value"):
        if not math.isfinite(a[name]):
            ctx.fail(f"{name} must be finite, got {a[name]}")
    x = ctx.shape(0)
    r = len(x)
    if r == 0:
        ctx.fail(f"input '{ctx.name(0)}' must have rank >= 1")
    axes = [ctx.axis(v, r, "axes") for v in a["axes"]] if a["axes"] else list(range(r))
    if len(set(axes)) != len(axes):
        ctx.fail(f"axes {a['axes']} repeat an axis")
    scales = _optional_const(ctx, 2, "scales")
    sizes = _optional_const(ctx, 3, "sizes")
    if (scales is None) == (sizes is None):
        ctx.fail("exactly one of the inputs scales and sizes must be given (and non-empty)")
    given = scales if scales is not None else sizes
    if given.ndim != 1 or given.size != len(axes):
        ctx.fail(f"{'scales' if scales is not None else 'sizes'} {given.reshape(-1)[:8].tolist()} "
                 f"must hold {len(axes)} values, one per {'axis' if not a['axes'] else 'listed axis'}")
    out, full_scales = list(x), [1.0] * r
    if scales is not None:
        if scales.dtype.kind != "f":
            ctx.fail(f"scales must be floats, got {scales.dtype}")
        for ax, s in zip(axes, scales.astype(np.float32).tolist()):
            if not (s > 0 and math.isfinite(s)):
                ctx.fail(f"scales {scales.tolist()} must be positive and finite")
            full_scales[ax] = s
            out[ax] = int(np.float32(s) * np.float32(x[ax]))   # float32 product, truncated
    else:
        if sizes.dtype.kind not in "iu":
            ctx.fail(f"sizes must be integers, got {sizes.dtype}")
        for ax, d in zip(axes, sizes.tolist()):
            if not 0 <= d < MAX_DIM:
                ctx.fail(f"sizes {sizes.tolist()} must be non-negative")
            if x[ax] == 0 and d != 0:
                ctx.fail(f"axis {ax} of '{ctx.name(0)}' is empty and cannot be resized to {d}")
            out[ax] = int(d)
            full_scales[ax] = _f32(np.float32(d) / np.float32(x[ax])) if x[ax] else 1.0
        policy = a["keep_aspect_ratio_policy"]
        if policy != "stretch":
            pick = min if policy == "not_larger" else max
            common = pick(full_scales[ax] for ax in axes)
            for ax in axes:
                full_scales[ax] = common
                out[ax] = int(math.floor(float(np.float32(common) * np.float32(x[ax])) + 0.5))
    roi = [(0.0, 1.0)] * r
    if a["coordinate_transformation_mode"] == "tf_crop_and_resize":
        rv = _optional_const(ctx, 1, "roi")
        if rv is None or rv.ndim != 1 or rv.size != 2 * len(axes) or rv.dtype.kind != "f":
            ctx.fail(f"tf_crop_and_resize needs roi with {2 * len(axes)} float values "
                     f"[starts..., ends...], got "
                     f"{None if rv is None else rv.reshape(-1)[:8].tolist()}")
        vals = rv.astype(np.float32).tolist()
        if not all(math.isfinite(v) for v in vals):
            ctx.fail(f"roi {vals} must be finite")
        for k, ax in enumerate(axes):
            roi[ax] = (vals[k], vals[k + len(axes)])
    for ax in range(max(0, r - 2)):
        if out[ax] != x[ax] or full_scales[ax] != 1.0 or roi[ax] != (0.0, 1.0):
            ctx.unsupported(f"resizing axis {ax} ({x[ax]} -> {out[ax]}, scale {full_scales[ax]:g}"
                            f"{', roi ' + str(list(roi[ax])) if roi[ax] != (0.0, 1.0) else ''}): "
                            f"fastcnn resizes only the last two axes (H and W of NCHW)")
    return ResizeParams(tuple(out), tuple(full_scales), tuple(roi))


def resize(ctx: NodeContext):
    return [ValueType(resize_params(ctx).out, F32)]


# ----------------------------------------------------------------------------- dense
def gemm(ctx: NodeContext):
    """Y = alpha * A' @ B' + beta * C; A' = A or A.T (transA), B' likewise; C broadcasts to (M, N)."""
    ctx.expect_float(0, 1, 2)
    ctx.expect_rank(0, 2, "A")
    ctx.expect_rank(1, 2, "B")
    a, b = ctx.shape(0), ctx.shape(1)
    m, k = (a[1], a[0]) if ctx.attrs["transA"] else a
    k2, n = (b[1], b[0]) if ctx.attrs["transB"] else b
    if k != k2:
        ctx.fail(f"inner dimensions differ: A {list(a)} (transA={ctx.attrs['transA']}) and "
                 f"B {list(b)} (transB={ctx.attrs['transB']}) give K={k} and K={k2}")
    if ctx.has(2):
        c = ctx.shape(2)
        if len(c) > 2 or broadcast_shapes(ctx, [c, (m, n)]) != (m, n):
            ctx.fail(f"C '{ctx.name(2)}' shape {list(c)} does not broadcast to [{m}, {n}]")
    _check_activation(ctx)
    return [ValueType((m, n), F32)]


def matmul(ctx: NodeContext):
    """numpy.matmul semantics: 1-D operands are promoted, leading dims broadcast."""
    ctx.expect_float(0, 1)
    a, b = ctx.shape(0), ctx.shape(1)
    if not a or not b:
        ctx.fail("MatMul operands must have rank >= 1")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        ctx.fail(f"inner dimensions differ: {list(a)} @ {list(b)}")
    batch = broadcast_shapes(ctx, [a2[:-2], b2[:-2]])
    out = batch + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return [ValueType(out, F32)]


# ----------------------------------------------------------------------------- normalisation
def _channel_params(ctx: NodeContext, first: int, last: int, c: int):
    for i in range(first, last + 1):
        if not ctx.has(i):
            ctx.fail(f"input {i} is required")
        if ctx.shape(i) != (c,):
            ctx.fail(f"'{ctx.name(i)}' has shape {list(ctx.shape(i))}; expected [{c}] (one per channel)")


def batchnorm(ctx: NodeContext):
    ctx.expect_float()
    if ctx.rank(0) < 2:
        ctx.fail(f"input '{ctx.name(0)}' must be (N, C, ...), got {list(ctx.shape(0))}")
    if ctx.attrs["training_mode"]:
        ctx.unsupported("training_mode=1 (fastcnn runs BatchNormalization in inference mode)")
    if not ctx.attrs["epsilon"] >= 0:
        ctx.fail(f"epsilon must be >= 0, got {ctx.attrs['epsilon']}")
    _channel_params(ctx, 1, 4, ctx.shape(0)[1])
    return [_same(ctx)]


def instancenorm(ctx: NodeContext):
    ctx.expect_float()
    if ctx.rank(0) < 3:
        ctx.fail(f"input '{ctx.name(0)}' must be (N, C, spatial...), got {list(ctx.shape(0))}")
    _channel_params(ctx, 1, 2, ctx.shape(0)[1])
    return [_same(ctx)]


def layernorm(ctx: NodeContext):
    ctx.expect_float()
    x = ctx.shape(0)
    axis = ctx.axis(ctx.attrs["axis"], len(x))
    norm = x[axis:]
    for i in (1, 2):
        if ctx.has(i) and broadcast_shapes(ctx, [ctx.shape(i), norm]) != norm:
            ctx.fail(f"'{ctx.name(i)}' shape {list(ctx.shape(i))} does not broadcast to {list(norm)}")
    return [_same(ctx)]


def lrn(ctx: NodeContext):
    ctx.expect_float()
    if ctx.rank(0) < 3:
        ctx.fail(f"input '{ctx.name(0)}' must be (N, C, spatial...), got {list(ctx.shape(0))}")
    if ctx.attrs["size"] < 1:
        ctx.fail(f"size must be >= 1, got {ctx.attrs['size']}")
    return [_same(ctx)]


# ----------------------------------------------------------------------------- elementwise
def unary(ctx: NodeContext):
    """Same shape and dtype out as in. Runtime kernels exist for float32 only.
    (Clip with min > max is valid ONNX: every value becomes max.)"""
    if ctx.node.op == "Celu" and ctx.attrs["alpha"] == 0:
        ctx.fail("alpha must not be 0 (Celu divides by it)")
    for name in ("alpha", "beta", "gamma", "min", "max"):
        v = ctx.attrs.get(name)
        if v is not None and v != v:
            ctx.fail(f"attribute {name} is NaN")
    return [_same(ctx)]


def unary_float(ctx: NodeContext):
    ctx.expect_float(0)
    return unary(ctx)


def softmax(ctx: NodeContext):
    ctx.expect_float(0)
    if ctx.rank(0) == 0:
        ctx.fail("input must have rank >= 1")
    ctx.axis(ctx.attrs["axis"], ctx.rank(0))
    return [_same(ctx)]


def prelu(ctx: NodeContext):
    ctx.expect_float(0, 1)
    x, s = ctx.shape(0), ctx.shape(1)
    fits = len(s) <= len(x) and all(d in (1, xd) for d, xd in zip(s[::-1], x[::-1]))
    if not fits:
        ctx.fail(f"slope '{ctx.name(1)}' shape {list(s)} does not broadcast to input {list(x)}")
    return [_same(ctx)]


def _common_dtype(ctx: NodeContext):
    dts = {ctx.dtype(i) for i in range(ctx.n_inputs) if ctx.has(i)}
    if len(dts) != 1:
        ctx.fail(f"inputs have different dtypes {sorted(dts)}")
    return dts.pop()


def broadcast(ctx: NodeContext):
    """Add, Sub, Mul, Div, Pow, Max, Min, Sum, Mean: numpy broadcasting over all inputs."""
    for i in range(ctx.n_inputs):
        ctx.type(i)  # every operand is required (an omitted "" input is refused here)
    if ctx.node.op == "Pow":
        dtype = ctx.dtype(0)  # exponent may have another type
    else:
        dtype = _common_dtype(ctx)
    shapes = [ctx.shape(i) for i in range(ctx.n_inputs) if ctx.has(i)]
    return [ValueType(broadcast_shapes(ctx, shapes), dtype)]


def compare(ctx: NodeContext):
    """Equal, Less, Greater, ...: broadcast, bool output."""
    ctx.type(0), ctx.type(1)  # both operands are required
    if ctx.node.op not in ("And", "Or", "Xor"):
        _common_dtype(ctx)
    return [ValueType(broadcast_shapes(ctx, [ctx.shape(0), ctx.shape(1)]), "bool")]


# Where's `compare` attribute: the comparison its condition was (passes/compare_where.py)
WHERE_COMPARES = ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual")


def where(ctx: NodeContext):
    """ONNX Where (condition, X, Y); with `compare` set, Where (A, B, X, Y) whose condition is
    A (compare) B, the comparison fused into it so no bool tensor exists at run time."""
    compare = ctx.attrs["compare"]
    if compare:
        if compare not in WHERE_COMPARES:
            ctx.fail(f"compare must be one of {', '.join(WHERE_COMPARES)}, got '{compare}'")
        if ctx.n_inputs != 4:
            ctx.fail(f"with compare '{compare}' Where takes 4 inputs (A, B, X, Y), got {ctx.n_inputs}")
        if ctx.dtype(0) != ctx.dtype(1) or ctx.dtype(0) == "bool":
            ctx.fail(f"A and B must be numbers of one dtype, got {ctx.dtype(0)} and {ctx.dtype(1)}")
        selected = (2, 3)
    else:
        if ctx.n_inputs != 3:
            ctx.fail(f"Where takes 3 inputs (condition, X, Y), got {ctx.n_inputs}")
        if ctx.dtype(0) != "bool":
            ctx.fail(f"condition '{ctx.name(0)}' must be bool, got {ctx.dtype(0)}")
        selected = (1, 2)
    x, y = selected
    if ctx.dtype(x) != ctx.dtype(y):
        ctx.fail(f"X and Y have different dtypes {ctx.dtype(x)} and {ctx.dtype(y)}")
    shapes = [ctx.shape(i) for i in range(ctx.n_inputs)]
    return [ValueType(broadcast_shapes(ctx, shapes), ctx.dtype(x))]


def logical_not(ctx: NodeContext):
    if ctx.dtype(0) != "bool":
        ctx.fail(f"input must be bool, got {ctx.dtype(0)}")
    return [_same(ctx)]


# ----------------------------------------------------------------------------- tensor layout
def identity(ctx: NodeContext):
    return [_same(ctx)]


def dropout(ctx: NodeContext):
    if len(ctx.node.outputs) > 1 and ctx.node.outputs[1]:
        ctx.unsupported("the mask output of Dropout is not supported (inference only)")
    return [_same(ctx), ValueType(ctx.shape(0), "bool")]


def flatten(ctx: NodeContext):
    x = ctx.shape(0)
    axis = ctx.axis(ctx.attrs["axis"], len(x), allow_end=True)
    return [ValueType((product(x[:axis]), product(x[axis:])), ctx.dtype(0))]


def reshape_target(ctx: NodeContext, x, spec, allowzero=0) -> tuple:
    """Resolve a Reshape shape (0 = copy the input dim unless allowzero, -1 = infer)."""
    out, infer_at = [], None
    for i, d in enumerate(spec):
        if d == -1:
            if infer_at is not None:
                ctx.fail(f"shape {spec} has more than one -1")
            infer_at = i
            out.append(1)
        elif d == 0 and not allowzero:
            if i >= len(x):
                ctx.fail(f"shape {spec} copies dim {i} (0) but the input has rank {len(x)}")
            out.append(x[i])
        elif d < 0 or d >= MAX_DIM:
            ctx.fail(f"shape {spec} has an invalid dim {d}")
        else:
            out.append(d)
    total = product(x)
    if infer_at is not None:
        rest = product(out)
        if rest == 0 or total % rest:
            ctx.fail(f"cannot reshape {list(x)} ({total} elements) to {spec}")
        out[infer_at] = total // rest
    if product(out) != total:
        ctx.fail(f"cannot reshape {list(x)} ({total} elements) to {spec} ({product(out)} elements)")
    return tuple(out)


def reshape(ctx: NodeContext):
    spec = ctx.const_ints(1, "shape")
    return [ValueType(reshape_target(ctx, ctx.shape(0), spec, ctx.attrs["allowzero"]), ctx.dtype(0))]


def transpose(ctx: NodeContext):
    x = ctx.shape(0)
    perm = ctx.attrs["perm"] or list(range(len(x)))[::-1]
    if sorted(perm) != list(range(len(x))):
        ctx.fail(f"perm {perm} is not a permutation of the {len(x)} axes of {list(x)}")
    return [ValueType(tuple(x[p] for p in perm), ctx.dtype(0))]


def squeeze(ctx: NodeContext):
    x = ctx.shape(0)
    if ctx.has(1):
        axes = {ctx.axis(a, len(x), "axes") for a in ctx.const_ints(1, "axes")}
        for a in axes:
            if x[a] != 1:
                ctx.fail(f"cannot squeeze axis {a} of shape {list(x)}: its size is not 1")
    else:
        axes = {i for i, d in enumerate(x) if d == 1}
    return [ValueType(tuple(d for i, d in enumerate(x) if i not in axes), ctx.dtype(0))]


def unsqueeze(ctx: NodeContext):
    x = ctx.shape(0)
    axes_in = ctx.const_ints(1, "axes")
    rank = len(x) + len(axes_in)
    axes = sorted(ctx.axis(a, rank, "axes") for a in axes_in)
    if len(set(axes)) != len(axes):
        ctx.fail(f"axes {axes_in} repeat an axis")
    out, it = [], iter(x)
    for i in range(rank):
        out.append(1 if i in axes else next(it))
    return [ValueType(tuple(out), ctx.dtype(0))]


def concat(ctx: NodeContext):
    shapes = [ctx.shape(i) for i in range(ctx.n_inputs)]
    dtype = _common_dtype(ctx)
    rank = len(shapes[0])
    axis = ctx.axis(ctx.attrs["axis"], rank)
    for s, name in zip(shapes, ctx.node.inputs):
        if len(s) != rank or any(s[i] != shapes[0][i] for i in range(rank) if i != axis):
            ctx.fail(f"input '{name}' shape {list(s)} does not match {list(shapes[0])} "
                     f"except on axis {axis}")
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    return [ValueType(tuple(out), dtype)]


def split_sizes(ctx: NodeContext):
    """Resolve a Split node to (axis, sizes)."""
    x = ctx.shape(0)
    axis = ctx.axis(ctx.attrs["axis"], len(x))
    n_out = len(ctx.node.outputs)
    if ctx.has(1):
        sizes = ctx.const_ints(1, "split")
        if len(sizes) != n_out or sum(sizes) != x[axis] or min(sizes) < 0:
            ctx.fail(f"split {sizes} must have {n_out} non-negative sizes summing to {x[axis]}")
    else:
        parts = ctx.attrs["num_outputs"] or n_out
        if parts != n_out:
            ctx.fail(f"num_outputs={parts} but the node has {n_out} outputs")
        chunk = -(-x[axis] // parts)
        sizes = [min(chunk, max(0, x[axis] - chunk * i)) for i in range(parts)]
        if ctx.attrs["num_outputs"] == 0 and x[axis] % parts:
            ctx.fail(f"axis {axis} of size {x[axis]} does not split evenly into {parts} outputs")
    return axis, sizes


def split(ctx: NodeContext):
    x = ctx.shape(0)
    axis, sizes = split_sizes(ctx)
    return [ValueType(x[:axis] + (s,) + x[axis + 1:], ctx.dtype(0)) for s in sizes]


def onnx_slice_range(start, end, step, dim):
    """(start, stop, step) for range() after ONNX Slice's clamping: negative indices count from
    the end; then starts/ends are clamped to [0, dim] for positive steps, and to [0, dim-1] /
    [-1, dim-1] for negative steps. (Python's slice.indices differs: it turns a start below
    -dim with a negative step into -1, an empty slice, where ONNX clamps it to 0.)"""
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return min(max(start, 0), dim), min(max(end, 0), dim), step
    return min(max(start, 0), dim - 1), min(max(end, -1), dim - 1), step


def slice_params(ctx: NodeContext):
    """Resolve a Slice node to per-axis (start, stop, step) with numpy-style clamping.

    Returns (starts, stops, steps, out_shape) over all axes of the input.
    """
    x = ctx.shape(0)
    starts = ctx.const_ints(1, "starts")
    ends = ctx.const_ints(2, "ends")
    axes = ctx.const_ints(3, "axes") if ctx.has(3) else list(range(len(starts)))
    steps = ctx.const_ints(4, "steps") if ctx.has(4) else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        ctx.fail(f"starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in length")
    r = len(x)
    full = [(0, d, 1) for d in x]
    seen = set()
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = ctx.axis(a, r, "axes")
        if a in seen:
            ctx.fail(f"axes {axes} repeat axis {a}")
        seen.add(a)
        if st == 0:
            ctx.fail("steps must not be 0")
        full[a] = onnx_slice_range(s, e, st, x[a])
    out = tuple(len(range(*t)) for t in full)
    return [t[0] for t in full], [t[1] for t in full], [t[2] for t in full], out


def slice_(ctx: NodeContext):
    return [ValueType(slice_params(ctx)[3], ctx.dtype(0))]


def pad_amounts(ctx: NodeContext):
    """Resolve a Pad node to (begin, end) per axis of the input (may be negative: cropping)."""
    x = ctx.shape(0)
    pads = ctx.const_ints(1, "pads")
    r = len(x)
    axes = [ctx.axis(a, r, "axes") for a in ctx.const_ints(3, "axes")] if ctx.has(3) else list(range(r))
    if len(pads) != 2 * len(axes):
        ctx.fail(f"pads {pads} must have {2 * len(axes)} values")
    begin, end = [0] * r, [0] * r
    for k, a in enumerate(axes):
        begin[a], end[a] = pads[k], pads[k + len(axes)]
    mode = ctx.attrs["mode"]
    if mode not in ("constant", "reflect", "edge", "wrap"):
        ctx.fail(f"mode must be constant, reflect, edge or wrap, got {mode!r}")
    for a in range(r):
        if x[a] + begin[a] + end[a] < 0 or max(begin[a], end[a]) >= MAX_DIM:
            ctx.fail(f"pads {pads} are invalid for shape {list(x)}: axis {a} of size {x[a]} "
                     f"would get {x[a] + begin[a] + end[a]} elements")
        # negative pads crop first; reflect/edge/wrap then copy from what is left
        kept = x[a] - max(-begin[a], 0) - max(-end[a], 0)
        grow = max(begin[a], 0) + max(end[a], 0)
        if mode == "reflect" and grow and max(begin[a], end[a]) > kept - 1:
            ctx.fail(f"reflect padding {begin[a]},{end[a]} on axis {a} must be smaller than the "
                     f"axis (size {kept})")
        if mode in ("edge", "wrap") and grow and kept <= 0:
            ctx.fail(f"{mode} padding of axis {a}, which is empty")
    if ctx.has(2) and ctx.type(2).size != 1:
        ctx.fail("constant_value must be a scalar")
    return begin, end


def pad(ctx: NodeContext):
    x = ctx.shape(0)
    begin, end = pad_amounts(ctx)
    return [ValueType(tuple(d + b + e for d, b, e in zip(x, begin, end)), ctx.dtype(0))]


def expand(ctx: NodeContext):
    shape = ctx.const_ints(1, "shape")
    if any(d < 0 for d in shape):
        ctx.fail(f"shape {shape} has negative dims")
    return [ValueType(broadcast_shapes(ctx, [ctx.shape(0), tuple(shape)]), ctx.dtype(0))]


def tile(ctx: NodeContext):
    x = ctx.shape(0)
    reps = ctx.const_ints(1, "repeats")
    if len(reps) != len(x) or any(r < 0 for r in reps):
        ctx.fail(f"repeats {reps} must have {len(x)} non-negative values")
    return [ValueType(tuple(d * r for d, r in zip(x, reps)), ctx.dtype(0))]


def gather(ctx: NodeContext):
    x = ctx.shape(0)
    if len(x) == 0:
        ctx.fail("data must have rank >= 1")
    axis = ctx.axis(ctx.attrs["axis"], len(x))
    if ctx.dtype(1) not in ("int64", "int32"):
        ctx.fail(f"indices must be int64 or int32, got {ctx.dtype(1)}")
    if ctx.is_const(1):
        idx = ctx.in_consts[1]
        if idx.size and (idx.min() < -x[axis] or idx.max() >= x[axis]):
            ctx.fail(f"indices {idx.reshape(-1)[:8].tolist()} are out of range for axis {axis} of size {x[axis]}")
    elif not ctx.is_const(0):
        ctx.unsupported("indices computed at run time are not supported")
    return [ValueType(x[:axis] + ctx.shape(1) + x[axis + 1:], ctx.dtype(0))]


def depth_to_space(ctx: NodeContext):
    ctx.expect_rank(0, 4, "(N, C, H, W)")
    n, c, h, w = ctx.shape(0)
    b = ctx.attrs["blocksize"]
    if b < 1 or c % (b * b):
        ctx.fail(f"channels {c} must be divisible by blocksize^2 = {b}^2")
    if ctx.node.op == "DepthToSpace" and ctx.attrs["mode"] not in ("DCR", "CRD"):
        ctx.fail(f"mode must be DCR or CRD, got {ctx.attrs['mode']!r}")
    return [ValueType((n, c // (b * b), h * b, w * b), ctx.dtype(0))]


def space_to_depth(ctx: NodeContext):
    ctx.expect_rank(0, 4, "(N, C, H, W)")
    n, c, h, w = ctx.shape(0)
    b = ctx.attrs["blocksize"]
    if b < 1 or h % b or w % b:
        ctx.fail(f"spatial dims {h}x{w} must be divisible by blocksize {b}")
    return [ValueType((n, c * b * b, h // b, w // b), ctx.dtype(0))]


def reduce(ctx: NodeContext):
    """ReduceMean/Max/Min/Sum/Prod/L1/L2/SumSquare/LogSumExp (axes as input, opset 18 form)."""
    x = ctx.shape(0)
    axes = ctx.const_ints(1, "axes") if ctx.has(1) else []
    if not axes:
        if ctx.attrs["noop_with_empty_axes"]:
            return [_same(ctx)]
        axes = list(range(len(x)))
    axes = {ctx.axis(a, len(x), "axes") for a in axes}
    if ctx.node.op in ("ReduceMax", "ReduceMin") and any(x[a] == 0 for a in axes):
        ctx.fail(f"cannot take {ctx.node.op} over an empty axis of {list(x)}")
    if ctx.attrs["keepdims"]:
        out = tuple(1 if i in axes else d for i, d in enumerate(x))
    else:
        out = tuple(d for i, d in enumerate(x) if i not in axes)
    return [ValueType(out, ctx.dtype(0))]


def argreduce(ctx: NodeContext):
    x = ctx.shape(0)
    axis = ctx.axis(ctx.attrs["axis"], len(x))
    if x[axis] == 0:
        ctx.fail(f"cannot take {ctx.node.op} over an empty axis")
    out = x[:axis] + ((1,) if ctx.attrs["keepdims"] else ()) + x[axis + 1:]
    return [ValueType(out, "int64")]


def topk(ctx: NodeContext):
    """TopK (x, k): the k largest (or smallest) along an axis, values and int64 indices."""
    x = ctx.shape(0)
    if not x:
        ctx.fail("input must have rank >= 1")
    axis = ctx.axis(ctx.attrs["axis"], len(x))
    k = ctx.const_ints(1, "k")
    if len(k) != 1:
        ctx.fail(f"k must hold one value, got {len(k)}")
    k = k[0]
    if not 0 <= k <= x[axis]:
        ctx.fail(f"k={k} is out of range for an axis of {x[axis]}")
    out = x[:axis] + (k,) + x[axis + 1:]
    return [ValueType(out, ctx.dtype(0)), ValueType(out, "int64")]


# ----------------------------------------------------------------------------- shape arithmetic
def shape_of(ctx: NodeContext):
    r = ctx.rank(0)
    start, end = ctx.attrs["start"], ctx.attrs.get("end")
    n = len(range(*slice(start, end if end is not None and end != 2 ** 62 else None).indices(r)))
    return [ValueType((n,), "int64")]


def size_of(ctx: NodeContext):
    return [ValueType((), "int64")]


def cast(ctx: NodeContext):
    return [_same(ctx, 0, check_dtype_name(ctx, ctx.attrs["to"]))]


def constant_of_shape(ctx: NodeContext):
    shape = ctx.const_ints(0, "shape")
    if any(d < 0 or d >= MAX_DIM for d in shape):
        ctx.fail(f"shape {shape} has invalid dims")
    return [ValueType(tuple(shape), check_dtype_name(ctx, ctx.attrs["dtype"]))]


def range_(ctx: NodeContext):
    vals = [ctx.const(i, name) for i, name in enumerate(("start", "limit", "delta"))]
    for i, v in enumerate(vals):
        if v.size != 1:
            ctx.fail(f"input {i} must be a scalar")
    start, limit, delta = (v.reshape(-1)[0] for v in vals)
    if delta == 0:
        ctx.fail("delta must not be 0")
    n = max(int(np.ceil((float(limit) - float(start)) / float(delta))), 0)
    if n >= MAX_DIM:
        ctx.fail(f"range of {n} elements is too large")
    return [ValueType((n,), _common_dtype(ctx))]


def nonzero(ctx: NodeContext):
    v = ctx.const(0, "input (NonZero has a data-dependent shape)")
    return [ValueType((v.ndim, int(np.count_nonzero(v))), "int64")]

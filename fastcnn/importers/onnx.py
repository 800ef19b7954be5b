"""ONNX importer: ModelProto -> Graph.

One converter per ONNX operator (`CONVERTERS`), each taking the node's attributes with ONNX's
names and returning IR nodes in fastcnn's canonical form (opset-13+ semantics: axes, pads, shapes
and split sizes as inputs; Clip bounds as attributes; legacy broadcasting resolved). Converters
that only rename or filter attributes are declared in `DIRECT` with the ONNX attributes they
understand; any other attribute is refused rather than silently ignored.

Needs the `onnx` package (extra `fastcnn[onnx]`) for protobuf parsing only.
"""
from __future__ import annotations

import os

import numpy as np

from fastcnn.errors import FastCNNError, ModelFileError, UnsupportedOpError
from fastcnn.ir.graph import Graph, Node, TensorSpec

# ONNX TensorProto element type -> numpy dtype name
ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32",
               7: "int64", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}
SUPPORTED_OPSETS = range(1, 23)
EXTERNAL = 1   # TensorProto.DataLocation: the tensor's bytes are in another file


class ImportContext:
    """State shared by the converters while one graph is imported."""

    def __init__(self, where: str, opset: int):
        self.where = where
        self.opset = opset
        self.initializers = {}   # name -> np.ndarray
        self.nodes = []
        self.inputs = []         # TensorSpec of the graph inputs
        self.consumed = set()    # every tensor name some node or graph output reads
        self._names = set()
        self._ranks = {}

    def rank(self, node, name: str) -> int:
        """Rank of tensor `name`, inferred over the nodes converted so far (legacy opset-6
        broadcasting needs it). Raises UnsupportedOpError when it cannot be known."""
        if name in self.initializers:
            return self.initializers[name].ndim
        for t in self.inputs:
            if t.name == name:
                return len(t.shape)
        if name not in self._ranks:
            from fastcnn.ir.graph import ValueType
            from fastcnn.ir.infer import infer_graph
            g = Graph("partial", self.inputs, [], list(self.nodes), self.initializers,
                      source=self.where)
            types = {t.name: ValueType(tuple(1 if d is None else d for d in t.shape), t.dtype)
                     for t in self.inputs}
            try:
                inferred = infer_graph(g.check(), types, max_tensor_bytes=1 << 62)
            except FastCNNError as e:
                self.unsupported(node, f"cannot infer the rank of input '{name}' ({e})")
            self._ranks.update({k: len(t.shape) for k, t in inferred.types.items()})
        if name not in self._ranks:
            self.unsupported(node, f"cannot infer the rank of input '{name}'")
        return self._ranks[name]

    def unsqueeze_trailing(self, node, name: str, count: int) -> str:
        """`name` with `count` trailing axes of size 1 appended (a constant is reshaped)."""
        if count <= 0:
            return name
        v = self.const(name)
        if v is not None:
            return self.add_const(f"{node.name}_{name}_aligned", v.reshape(v.shape + (1,) * count))
        r = self.rank(node, name)
        axes = self.add_const(f"{node.name}_axes", np.arange(r, r + count, dtype=np.int64))
        out = self.fresh(f"{node.name}_{name}_aligned")
        self.emit("Unsqueeze", self.fresh(f"{node.name}_align"), [name, axes], [out])
        return out

    def fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self._names or name in self.initializers:
            k += 1
            name = f"{base}__{k}"
        self._names.add(name)
        return name

    def const(self, name):
        """The constant value of a tensor name, or None."""
        return self.initializers.get(name) if name else None

    def add_const(self, base: str, value) -> str:
        name = self.fresh(base)
        self.initializers[name] = np.asarray(value)
        return name

    def emit(self, op, name, inputs, outputs, attrs=None):
        self.nodes.append(Node(op, name, list(inputs), list(outputs), dict(attrs or {})))

    def unsupported(self, node, msg):
        raise UnsupportedOpError(f"{self.where}: node '{node.name}' ({node.op_type}): {msg}")

    def fail(self, node, msg):
        raise ModelFileError(f"{self.where}: node '{node.name}' ({node.op_type}): {msg}")


# ----------------------------------------------------------------------------- attribute parsing
# AttributeProto.AttributeType values (onnx.proto); compared as ints, as the enum's class
# attributes cost a lookup each on every attribute of every node
ATTR_FLOAT, ATTR_INT, ATTR_STRING, ATTR_TENSOR = 1, 2, 3, 4
ATTR_FLOATS, ATTR_INTS, ATTR_STRINGS = 6, 7, 8


def _attr_value(ctx, node, a):
    t = a.type
    if t == ATTR_INTS:
        return [int(v) for v in a.ints]
    if t == ATTR_INT:
        return int(a.i)
    if t == ATTR_FLOAT:
        return float(a.f)
    if t == ATTR_FLOATS:
        return [float(v) for v in a.floats]
    if t == ATTR_STRING:
        return a.s.decode("utf-8", "replace")
    if t == ATTR_STRINGS:
        return [s.decode("utf-8", "replace") for s in a.strings]
    if t == ATTR_TENSOR:
        return _tensor_to_array(ctx, a.t, f"attribute '{a.name}' of node '{node.name}'")
    ctx.unsupported(node, f"attribute '{a.name}' has a type fastcnn does not read ({t})")


# data type -> the little-endian dtype its raw_data holds, and the dtype fastcnn keeps it as
# (computed once: np.dtype and newbyteorder cost microseconds, per initializer per load)
_RAW_DTYPES = {code: np.dtype(name).newbyteorder("<") for code, name in ONNX_DTYPES.items()}
_KEPT_DTYPES = {code: np.dtype({"float16": "float32", "float64": "float32", "uint16": "int64",
                                "uint32": "int64", "uint64": "int64"}.get(name, name))
                for code, name in ONNX_DTYPES.items()}


def _tensor_to_array(ctx, tensor, what, file_raw=None) -> np.ndarray:
    """The array of a TensorProto, read-only. file_raw: its raw_data, a view of the mapped
    file, where the message was parsed without it (`import_file`): the array then views the
    file where its values are the file's bytes (little-endian, a dtype fastcnn keeps), like a
    .fcnn file's weights; otherwise it owns its memory (no view into the message)."""
    code = tensor.data_type
    raw_dtype = _RAW_DTYPES.get(code)
    if raw_dtype is None:
        raise UnsupportedOpError(f"{ctx.where}: {what}: tensor element type {code} "
                                 f"is not supported")
    if tensor.data_location == EXTERNAL:  # must have been loaded by onnx's helper
        raise ModelFileError(f"{ctx.where}: {what}: external tensor data was not found next to the model")
    dims = list(tensor.dims)
    count = 1
    for d in dims:
        if d < 0:
            raise ModelFileError(f"{ctx.where}: {what}: negative dimension in {dims}")
        count *= d
    # raw_data is read out of the message once (each read copies it): numpy_helper.to_array
    # would read it again, and its array would need a copy to let go of the protobuf
    raw = file_raw if file_raw is not None else \
        tensor.raw_data if tensor.HasField("raw_data") else None
    itemsize = raw_dtype.itemsize
    if raw is not None:
        if len(raw) % itemsize:
            raise ModelFileError(f"{ctx.where}: {what}: raw_data of {len(raw)} bytes is not a whole "
                                 f"number of {raw_dtype.name} values")
        stored = len(raw) // itemsize   # where raw_data is set, it is the values (as in onnx)
    else:
        stored = max(len(tensor.float_data), len(tensor.int32_data), len(tensor.int64_data),
                     len(tensor.double_data), len(tensor.uint64_data))
    # A file cannot justify more elements than it stores: check before numpy allocates.
    if count != stored:
        raise ModelFileError(f"{ctx.where}: {what}: shape {dims} needs {count} elements but the "
                             f"file stores {stored}")
    try:
        if raw is not None:   # little-endian values; the array views this bytes object
            arr = np.frombuffer(raw, raw_dtype, count).reshape(dims)
        else:                 # the typed fields (float_data, int64_data, ...): a new array
            from fastcnn.importers.onnx_schema import require_onnx
            arr = np.array(require_onnx().numpy_helper.to_array(tensor), copy=True)
    except Exception as e:  # malformed protobuf content
        raise ModelFileError(f"{ctx.where}: {what}: cannot decode tensor ({e})") from None
    kept = _KEPT_DTYPES[code]
    if arr.dtype != kept:   # big-endian machine, float16/float64, unsigned wider than a byte
        arr = arr.astype(kept)
    arr.setflags(write=False)
    return arr


def _attrs(ctx, node) -> dict:
    out = {}
    for a in node.attribute:
        name = a.name
        if type(name) is not str:
            raise _not_text(ctx.where, f"an attribute name of node {node.name!r}", name)
        out[name] = _attr_value(ctx, node, a)
    return out


# ----------------------------------------------------------------------------- converters
def _check_known(ctx, node, attrs, known):
    extra = sorted(set(attrs) - set(known))
    if extra:
        ctx.unsupported(node, f"attribute(s) {', '.join(extra)} not supported")


def direct(op=None, known=(), rename=None, drop=()):
    """Converter for ops whose ONNX form is the IR form. `known`: attributes passed through,
    `drop`: attributes understood and ignored (no effect at inference)."""
    rename = rename or {}

    def convert(ctx, node, attrs):
        _check_known(ctx, node, attrs, tuple(known) + tuple(drop) + tuple(rename))
        out = {rename.get(k, k): v for k, v in attrs.items() if k not in drop}
        ctx.emit(op or node.op_type, node.name, node.input, node.output, out)
    return convert


def _axes_to_input(attr_name="axes", min_opset=13):
    """Squeeze/Unsqueeze/Reduce*/Split: before `min_opset` the list was an attribute."""
    def convert(ctx, node, attrs, op=None, extra=()):
        inputs = list(node.input)
        if attr_name in attrs:
            inputs = inputs[:1] + [ctx.add_const(f"{node.name}_{attr_name}", np.array(attrs.pop(attr_name), np.int64))]
        return inputs, attrs
    return convert


def conv_squeeze(ctx, node, attrs):
    inputs, attrs = _axes_to_input()(ctx, node, attrs)
    _check_known(ctx, node, attrs, ())
    ctx.emit(node.op_type, node.name, inputs, node.output)


def conv_topk(ctx, node, attrs):
    """TopK: before opset 10, k was an attribute (and largest/sorted did not exist)."""
    inputs = list(node.input)
    if "k" in attrs:
        inputs = inputs[:1] + [ctx.add_const(f"{node.name}_k", np.array([attrs.pop("k")], np.int64))]
    _check_known(ctx, node, attrs, ("axis", "largest", "sorted"))
    ctx.emit("TopK", node.name, inputs, node.output, attrs)


def conv_reduce(ctx, node, attrs):
    inputs = list(node.input)
    if "axes" in attrs:
        inputs = inputs[:1] + [ctx.add_const(f"{node.name}_axes", np.array(attrs.pop("axes"), np.int64))]
    _check_known(ctx, node, attrs, ("keepdims", "noop_with_empty_axes"))
    ctx.emit(node.op_type, node.name, inputs, node.output, attrs)


def conv_split(ctx, node, attrs):
    inputs = list(node.input)
    if "split" in attrs:
        inputs = inputs[:1] + [ctx.add_const(f"{node.name}_split", np.array(attrs.pop("split"), np.int64))]
    _check_known(ctx, node, attrs, ("axis", "num_outputs"))
    ctx.emit("Split", node.name, inputs, node.output, attrs)


def conv_reshape(ctx, node, attrs):
    inputs = list(node.input)
    if "shape" in attrs:  # opset < 5
        inputs = inputs[:1] + [ctx.add_const(f"{node.name}_shape", np.array(attrs.pop("shape"), np.int64))]
    _check_known(ctx, node, attrs, ("allowzero",))
    attrs.pop("consumed_inputs", None)
    ctx.emit("Reshape", node.name, inputs, node.output, attrs)


def conv_slice(ctx, node, attrs):
    inputs = list(node.input)
    if "starts" in attrs:  # opset < 10
        inputs = inputs[:1]
        inputs.append(ctx.add_const(f"{node.name}_starts", np.array(attrs.pop("starts"), np.int64)))
        inputs.append(ctx.add_const(f"{node.name}_ends", np.array(attrs.pop("ends"), np.int64)))
        if "axes" in attrs:
            inputs.append(ctx.add_const(f"{node.name}_axes", np.array(attrs.pop("axes"), np.int64)))
    _check_known(ctx, node, attrs, ())
    ctx.emit("Slice", node.name, inputs, node.output)


def conv_pad(ctx, node, attrs):
    inputs = list(node.input)
    mode = attrs.pop("mode", "constant")
    if "pads" in attrs or "paddings" in attrs:  # opset < 11
        pads = attrs.pop("pads", None) or attrs.pop("paddings")
        value = attrs.pop("value", 0.0)
        inputs = inputs[:1] + [ctx.add_const(f"{node.name}_pads", np.array(pads, np.int64)),
                               ctx.add_const(f"{node.name}_value", np.array(value, np.float32))]
    _check_known(ctx, node, attrs, ())
    ctx.emit("Pad", node.name, inputs, node.output, {"mode": mode})


def conv_clip(ctx, node, attrs):
    attrs.pop("consumed_inputs", None)  # opset 1
    lo, hi = attrs.pop("min", -np.inf), attrs.pop("max", np.inf)
    for i, key in ((1, "min"), (2, "max")):
        if len(node.input) > i and node.input[i]:
            v = ctx.const(node.input[i])
            if v is None:
                ctx.unsupported(node, f"{key} must be a constant")
            if key == "min":
                lo = float(np.asarray(v).reshape(-1)[0])
            else:
                hi = float(np.asarray(v).reshape(-1)[0])
    _check_known(ctx, node, attrs, ())
    ctx.emit("Clip", node.name, node.input[:1], node.output, {"min": float(lo), "max": float(hi)})


def conv_softmax(ctx, node, attrs):
    _check_known(ctx, node, attrs, ("axis",))
    if ctx.opset >= 13:
        ctx.emit(node.op_type, node.name, node.input, node.output, {"axis": attrs.get("axis", -1)})
        return
    # Before opset 13: the input is coerced to 2-D at `axis` (default 1) and normalised per row.
    axis = attrs.get("axis", 1)
    flat = ctx.fresh(f"{node.name}_2d")
    soft = ctx.fresh(f"{node.name}_rows")
    shape = ctx.fresh(f"{node.name}_shape")
    ctx.emit("Flatten", ctx.fresh(f"{node.name}_flatten"), node.input[:1], [flat], {"axis": axis})
    ctx.emit(node.op_type, node.name, [flat], [soft], {"axis": 1})
    ctx.emit("Shape", ctx.fresh(f"{node.name}_shapeof"), node.input[:1], [shape])
    ctx.emit("Reshape", ctx.fresh(f"{node.name}_restore"), [soft, shape], node.output)


def conv_batchnorm(ctx, node, attrs):
    if attrs.pop("spatial", 1) != 1:
        ctx.unsupported(node, "spatial=0 (per-activation statistics)")
    if attrs.get("training_mode", 0) or (ctx.opset < 7 and attrs.get("is_test", 0) == 0 and
                                         any(o in ctx.consumed for o in node.output[1:] if o)):
        ctx.unsupported(node, "training mode")
    attrs.pop("is_test", None)
    attrs.pop("consumed_inputs", None)
    if any(o in ctx.consumed for o in node.output[1:] if o):
        ctx.unsupported(node, "running mean/variance outputs (training mode)")
    _check_known(ctx, node, attrs, ("epsilon", "momentum", "training_mode"))
    ctx.emit("BatchNormalization", node.name, node.input, node.output[:1], attrs)


def conv_dropout(ctx, node, attrs):
    attrs.pop("consumed_inputs", None)  # opset 1
    attrs.pop("is_test", None)
    attrs.pop("ratio", None)
    if len(node.input) > 2 and node.input[2]:
        tm = ctx.const(node.input[2])
        if tm is None or bool(np.asarray(tm).reshape(-1)[0]):
            ctx.unsupported(node, "training_mode=True")
    _check_known(ctx, node, attrs, ("seed",))
    outputs = node.output[:1]
    if len(node.output) > 1 and node.output[1] in ctx.consumed:
        outputs = node.output[:2]  # the shape function refuses a mask that is used
    ctx.emit("Dropout", node.name, node.input[:1], outputs, attrs)


def conv_maxpool(ctx, node, attrs):
    if len(node.output) > 1 and node.output[1] in ctx.consumed:
        ctx.unsupported(node, "the Indices output")
    _check_known(ctx, node, attrs, ("kernel_shape", "strides", "pads", "dilations", "ceil_mode",
                                    "auto_pad", "storage_order"))
    ctx.emit(node.op_type, node.name, node.input, node.output[:1], attrs)


def conv_lppool(ctx, node, attrs):
    if "p" in attrs:
        p = attrs["p"]
        if float(p) != int(p):
            ctx.unsupported(node, f"non-integer p={p}")
        attrs["p"] = int(p)
    _check_known(ctx, node, attrs, ("kernel_shape", "strides", "pads", "dilations", "ceil_mode",
                                    "auto_pad", "p"))
    ctx.emit(node.op_type, node.name, node.input, node.output, attrs)


def conv_global_lp(ctx, node, attrs):
    if "p" in attrs:
        attrs["p"] = int(attrs["p"])
    _check_known(ctx, node, attrs, ("p",))
    ctx.emit(node.op_type, node.name, node.input, node.output, attrs)


def _legacy_broadcast(ctx, node, attrs):
    """Before opset 7, Add/Mul/... with broadcast=1 align B's dims with A's starting at `axis`
    (default: B's dims are A's trailing dims, as numpy). B gets trailing 1-dims so that numpy
    broadcasting gives the same result. Returns the inputs."""
    inputs = list(node.input)
    attrs.pop("consumed_inputs", None)
    axis = attrs.pop("axis", None)
    if attrs.pop("broadcast", 0) and axis is not None:
        rank_a = ctx.rank(node, inputs[0])
        rank_b = ctx.rank(node, inputs[1])
        if not -rank_a <= axis < rank_a or (axis % rank_a) + rank_b > rank_a:
            ctx.fail(node, f"legacy broadcast axis={axis} does not fit input ranks {rank_a} and {rank_b}")
        inputs[1] = ctx.unsqueeze_trailing(node, inputs[1], rank_a - axis % rank_a - rank_b)
    return inputs


def conv_binary(ctx, node, attrs):
    inputs = _legacy_broadcast(ctx, node, attrs)
    _check_known(ctx, node, attrs, ("fmod",))
    ctx.emit(node.op_type, node.name, inputs, node.output, attrs)


def conv_variadic(ctx, node, attrs):
    attrs.pop("consumed_inputs", None)
    _check_known(ctx, node, attrs, ())
    ctx.emit(node.op_type, node.name, node.input, node.output)


def conv_unary(known=()):
    def convert(ctx, node, attrs):
        attrs.pop("consumed_inputs", None)
        _check_known(ctx, node, attrs, known)
        ctx.emit(node.op_type, node.name, node.input, node.output, attrs)
    return convert


def conv_gemm(ctx, node, attrs):
    """Gemm with constant B (and C) stays a Gemm (packed weights, fused epilogue). A B or C
    computed at run time is rewritten as MatMul (+ Mul by alpha) + Add (of beta * C)."""
    attrs.pop("broadcast", None)  # opset < 7: C always broadcasts in the IR
    _check_known(ctx, node, attrs, ("alpha", "beta", "transA", "transB"))
    inputs = list(node.input) + [""] * (3 - len(node.input))
    a_name, b_name, c_name = inputs[:3]
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    c_runtime = bool(c_name) and beta != 0.0 and ctx.const(c_name) is None
    if ctx.const(b_name) is not None and not c_runtime:
        ctx.emit("Gemm", node.name, node.input, node.output, attrs)
        return
    out = node.output[0]
    add_c = bool(c_name) and beta != 0.0
    y = ctx.fresh(f"{node.name}_ab") if add_c else out
    if ctx.const(b_name) is not None:
        ctx.emit("Gemm", node.name, [a_name, b_name], [y],
                 {k: v for k, v in attrs.items() if k != "beta"})
    else:
        for i, key in ((0, "transA"), (1, "transB")):
            if attrs.get(key, 0):
                t = ctx.fresh(f"{node.name}_{key}")
                ctx.emit("Transpose", ctx.fresh(f"{node.name}_{key}"), [inputs[i]], [t], {"perm": [1, 0]})
                inputs[i] = t
        if alpha != 1.0:
            ab = ctx.fresh(f"{node.name}_matmul")
            ctx.emit("MatMul", node.name, inputs[:2], [ab])
            ctx.emit("Mul", ctx.fresh(f"{node.name}_alpha"),
                     [ab, ctx.add_const(f"{node.name}_alpha", np.array(alpha, np.float32))], [y])
        else:
            ctx.emit("MatMul", node.name, inputs[:2], [y])
    if add_c:
        c = c_name
        if beta != 1.0:
            c = ctx.fresh(f"{node.name}_betac")
            ctx.emit("Mul", ctx.fresh(f"{node.name}_beta"),
                     [c_name, ctx.add_const(f"{node.name}_beta", np.array(beta, np.float32))], [c])
        ctx.emit("Add", ctx.fresh(f"{node.name}_addc"), [y, c], [out])


def conv_cast(ctx, node, attrs):
    to = attrs.get("to")
    if isinstance(to, str):  # opset < 6 stored a type name
        name = to.lower()
        to_name = {"float": "float32", "double": "float64", "int32": "int32", "int64": "int64",
                   "bool": "bool", "float16": "float16", "uint8": "uint8", "int8": "int8"}.get(name)
    else:
        to_name = ONNX_DTYPES.get(to)
    if to_name is None:
        ctx.unsupported(node, f"cast to element type {to!r}")
    attrs.pop("saturate", None)
    _check_known(ctx, node, {k: v for k, v in attrs.items() if k != "to"}, ())
    ctx.emit("Cast", node.name, node.input, node.output, {"to": to_name})


def conv_constant(ctx, node, attrs):
    if len(attrs) != 1:
        ctx.fail(node, "Constant needs exactly one value attribute")
    (key, v), = attrs.items()
    if key in ("value",):
        if not isinstance(v, np.ndarray):   # a value attribute of another type than TENSOR
            ctx.fail(node, f"Constant's 'value' must be a tensor attribute, got {type(v).__name__} "
                           f"{v!r:.40}")
        arr = v
    elif key == "value_float":
        arr = np.array(v, np.float32)
    elif key == "value_floats":
        arr = np.array(v, np.float32)
    elif key == "value_int":
        arr = np.array(v, np.int64)
    elif key == "value_ints":
        arr = np.array(v, np.int64)
    else:
        ctx.unsupported(node, f"Constant with attribute {key}")
    arr = np.asarray(arr)
    arr.setflags(write=False)
    ctx.initializers[node.output[0]] = arr


def conv_constant_of_shape(ctx, node, attrs):
    v = attrs.pop("value", None)
    _check_known(ctx, node, attrs, ())
    if v is None:
        value, dtype = 0.0, "float32"
    else:
        value, dtype = float(np.asarray(v).reshape(-1)[0]), np.asarray(v).dtype.name
    ctx.emit("ConstantOfShape", node.name, node.input, node.output, {"value": value, "dtype": dtype})


def conv_flatten(ctx, node, attrs):
    _check_known(ctx, node, attrs, ("axis",))
    ctx.emit("Flatten", node.name, node.input, node.output, attrs)


def conv_concat(ctx, node, attrs):
    _check_known(ctx, node, attrs, ("axis",))
    ctx.emit("Concat", node.name, node.input, node.output, {"axis": attrs.get("axis", 1)})


_RESIZE_ATTRS = ("mode", "coordinate_transformation_mode", "nearest_mode", "cubic_coeff_a",
                 "exclude_outside", "extrapolation_value", "axes", "keep_aspect_ratio_policy")
# Resize-10 and Upsample sample at x_out / scale and round it down when upsampling, up when
# downsampling (onnxruntime's rule; their specifications leave the rounding open).
_LEGACY_RESIZE = {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor_up_ceil_down"}


def conv_resize(ctx, node, attrs):
    """Resize-10 (X, scales) and Resize-11..19 (X, roi, scales, sizes) -> IR Resize."""
    if attrs.pop("antialias", 0):
        ctx.unsupported(node, "antialias=1 (anti-aliased downsampling)")
    inputs = list(node.input)
    if ctx.opset < 11:
        _check_known(ctx, node, attrs, ("mode",))
        if len(inputs) != 2:
            ctx.fail(node, f"Resize-10 takes X and scales, got {len(inputs)} inputs")
        ctx.emit("Resize", node.name, [inputs[0], "", inputs[1]], node.output,
                 {"mode": attrs.get("mode", "nearest"), **_LEGACY_RESIZE})
        return
    _check_known(ctx, node, attrs, _RESIZE_ATTRS)
    ctx.emit("Resize", node.name, inputs, node.output, attrs)


def conv_upsample(ctx, node, attrs):
    """Upsample-1 (height_scale/width_scale), -7 (scales attribute), -9 (scales input) -> IR
    Resize with the legacy coordinates (x_out / scale) and rounding."""
    mode = attrs.pop("mode", "nearest")
    mode = "linear" if mode == "bilinear" else mode   # Upsample-1 spelling
    inputs = list(node.input[:1])
    if "scales" in attrs:
        inputs.append(ctx.add_const(f"{node.name}_scales", np.array(attrs.pop("scales"), np.float32)))
    elif "height_scale" in attrs or "width_scale" in attrs:
        hs, ws = attrs.pop("height_scale", 1.0), attrs.pop("width_scale", 1.0)
        inputs.append(ctx.add_const(f"{node.name}_scales", np.array([1, 1, hs, ws], np.float32)))
    elif len(node.input) > 1:
        inputs.append(node.input[1])
    else:
        ctx.fail(node, "Upsample needs scales")
    _check_known(ctx, node, attrs, ())
    ctx.emit("Resize", node.name, [inputs[0], "", inputs[1]], node.output, {"mode": mode, **_LEGACY_RESIZE})


def conv_prelu(ctx, node, attrs):
    inputs = list(node.input)
    attrs.pop("consumed_inputs", None)
    _check_known(ctx, node, attrs, ())
    if ctx.opset < 7:
        # Before opset 7 a slope of shape (C,) applies per channel (axis 1) of X (N, C, ...).
        slope = ctx.const(inputs[1])
        size = slope.size if slope is not None else None
        if ctx.rank(node, inputs[1]) == 1 and size != 1:
            inputs[1] = ctx.unsqueeze_trailing(node, inputs[1], ctx.rank(node, inputs[0]) - 2)
    ctx.emit("PRelu", node.name, inputs, node.output)


_WINDOW = ("kernel_shape", "strides", "pads", "auto_pad")
CONVERTERS = {
    "Conv": direct(known=_WINDOW + ("dilations", "group")),
    "ConvTranspose": direct(known=_WINDOW + ("dilations", "group", "output_padding", "output_shape")),
    "Gemm": conv_gemm,
    "MatMul": direct(),
    "MaxPool": conv_maxpool,
    "AveragePool": direct(known=_WINDOW + ("ceil_mode", "count_include_pad", "dilations")),
    "LpPool": conv_lppool,
    "GlobalAveragePool": direct(),
    "GlobalMaxPool": direct(),
    "GlobalLpPool": conv_global_lp,
    "BatchNormalization": conv_batchnorm,
    "InstanceNormalization": direct(known=("epsilon",), drop=("consumed_inputs",)),
    "LayerNormalization": direct(known=("axis", "epsilon", "stash_type")),
    "LRN": direct(known=("size", "alpha", "beta", "bias")),
    "Relu": conv_unary(),
    "LeakyRelu": conv_unary(("alpha",)),
    "PRelu": conv_prelu,
    "Elu": conv_unary(("alpha",)),
    "Selu": conv_unary(("alpha", "gamma")),
    "Celu": conv_unary(("alpha",)),
    "ThresholdedRelu": conv_unary(("alpha",)),
    "Clip": conv_clip,
    "Sigmoid": conv_unary(),
    "Tanh": conv_unary(),
    "HardSigmoid": conv_unary(("alpha", "beta")),
    "HardSwish": conv_unary(),
    "Softplus": conv_unary(),
    "Softsign": conv_unary(),
    "Gelu": conv_unary(("approximate",)),
    "Mish": conv_unary(),
    "Softmax": conv_softmax,
    "LogSoftmax": conv_softmax,
    "Exp": conv_unary(), "Log": conv_unary(), "Sqrt": conv_unary(), "Reciprocal": conv_unary(),
    "Erf": conv_unary(), "Neg": conv_unary(), "Abs": conv_unary(), "Sign": conv_unary(),
    "Floor": conv_unary(), "Ceil": conv_unary(), "Round": conv_unary(), "Not": conv_unary(),
    "Add": conv_binary, "Sub": conv_binary, "Mul": conv_binary, "Div": conv_binary,
    "Pow": conv_binary, "Mod": conv_binary,
    "Equal": conv_binary, "Less": conv_binary, "Greater": conv_binary,
    "LessOrEqual": conv_binary, "GreaterOrEqual": conv_binary,
    "And": conv_binary, "Or": conv_binary, "Xor": conv_binary,
    "Sum": conv_variadic, "Mean": conv_variadic, "Max": conv_variadic, "Min": conv_variadic,
    "Where": direct(),
    "Identity": direct(),
    "Dropout": conv_dropout,
    "Flatten": conv_flatten,
    "Reshape": conv_reshape,
    "Squeeze": conv_squeeze,
    "Unsqueeze": conv_squeeze,
    "Transpose": direct(known=("perm",)),
    "Concat": conv_concat,
    "Split": conv_split,
    "Slice": conv_slice,
    "Pad": conv_pad,
    "Expand": direct(),
    "Tile": direct(),
    "Gather": direct(known=("axis",)),
    "Resize": conv_resize,
    "Upsample": conv_upsample,
    "DepthToSpace": direct(known=("blocksize", "mode")),
    "SpaceToDepth": direct(known=("blocksize",)),
    "ReduceMean": conv_reduce, "ReduceSum": conv_reduce, "ReduceMax": conv_reduce,
    "ReduceMin": conv_reduce, "ReduceProd": conv_reduce, "ReduceL1": conv_reduce,
    "ReduceL2": conv_reduce, "ReduceSumSquare": conv_reduce, "ReduceLogSumExp": conv_reduce,
    "ArgMax": direct(known=("axis", "keepdims", "select_last_index")),
    "TopK": conv_topk,
    "ArgMin": direct(known=("axis", "keepdims", "select_last_index")),
    "Shape": direct(known=("start", "end")),
    "Size": direct(),
    "Cast": conv_cast,
    "Constant": conv_constant,
    "ConstantOfShape": conv_constant_of_shape,
    "Range": direct(),
    "NonZero": direct(),
}


# ----------------------------------------------------------------------------- graph import
def _value_spec(ctx, vi, is_input):
    t = vi.type
    if not t.HasField("tensor_type"):
        raise UnsupportedOpError(f"{ctx.where}: graph {'input' if is_input else 'output'} "
                                 f"'{vi.name}' is not a tensor")
    tt = t.tensor_type
    dtype = ONNX_DTYPES.get(tt.elem_type, f"onnx-type-{tt.elem_type}")
    if is_input and tt.elem_type not in ONNX_DTYPES:
        raise UnsupportedOpError(f"{ctx.where}: graph input '{vi.name}' has ONNX element type "
                                 f"{tt.elem_type}, which fastcnn does not support (fastcnn "
                                 f"models take float32 inputs)")
    if not tt.HasField("shape"):
        if is_input:
            raise UnsupportedOpError(f"{ctx.where}: graph input '{vi.name}' has no shape; fastcnn "
                                     f"needs at least its rank")
        return TensorSpec(vi.name, (), dtype)
    dims = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(None)
    return TensorSpec(vi.name, tuple(dims), dtype, "NCHW" if len(dims) == 4 else "")


CONVERTER_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError,
                    ZeroDivisionError)


def _not_text(where: str, what: str, value):
    """The error for a name that protobuf handed out as bytes (invalid UTF-8)."""
    return ModelFileError(f"{where}: {what} {value!r:.80} is not valid UTF-8 text")


def _check_text(model, where: str) -> None:
    """Every name the importer reads must be text: protobuf hands out invalid UTF-8 in a string
    field as bytes, which would otherwise surface as a TypeError deep in a converter. This checks
    the model's and the graph's own strings; the names of initializers, nodes and attributes are
    checked where import_model reads them (reading a protobuf field costs about a microsecond:
    a second walk over every node was a tenth of MobileNetV2's import)."""
    g = model.graph
    for what, v in (("the producer name", model.producer_name),
                    ("the producer version", model.producer_version), ("the graph name", g.name)):
        if not isinstance(v, str):
            raise _not_text(where, what, v)
    for o in model.opset_import:
        if not isinstance(o.domain, str):
            raise _not_text(where, "an opset domain", o.domain)
    for vi in list(g.input) + list(g.output):
        if not isinstance(vi.name, str):
            raise _not_text(where, "a graph input/output name", vi.name)
    for p in model.metadata_props:
        if not isinstance(p.key, str) or not isinstance(p.value, str):
            raise _not_text(where, "a metadata entry", p.key)


def _check_node_text(node, inputs: list, outputs: list, where: str) -> None:
    """Raise where a node's name, operator, domain or tensor names are not text (_check_text)."""
    for what, v in (("a node name", node.name), ("an operator type", node.op_type),
                    ("an operator domain", node.domain)):
        if type(v) is not str:
            raise _not_text(where, what, v)
    for v in inputs + outputs:
        if type(v) is not str:
            raise _not_text(where, f"a tensor name of node {node.name!r}", v)


# op -> the inputs that may stay at any byte offset (_copy_misaligned)
READ_IN_PLACE = {"Conv": (1,), "Gemm": (1,), "BatchNormalization": (1, 2, 3, 4)}


def _copy_misaligned(ctx) -> None:
    """Arrays viewing the file at an offset that is not a multiple of their item size (protobuf
    puts raw_data at any byte) become aligned copies, as C code may assume alignment when it
    reads them; except those only in READ_IN_PLACE slots. The weights of Conv and Gemm nodes
    (input 1) reach C code only through packers that read them bytewise (k_conv's
    _ConvWeights, the Gemm's pack_bt_panels with transB) or through aligned copies
    (PrepareContext.const_f32, conv_weights), and the Winograd step's recompute reads Conv
    weights bytewise. So the weights of a CNN and of its classifier stay in the file (no copy
    beside their packed form) while the rest is safe for any kernel. A BatchNormalization's
    parameters are only ever read by numpy, as float64 copies (its folding into a conv, its
    kernel's affine): MobileNetV2's 208 of them cost 0.6 ms to copy."""
    in_place, elsewhere = set(), set()
    for n in ctx.nodes:
        slots = READ_IN_PLACE.get(n.op, ())
        for i, x in enumerate(n.inputs):
            (in_place if i in slots else elsewhere).add(x)
    for name, arr in ctx.initializers.items():
        if not arr.flags.aligned and (name in elsewhere or name not in in_place):
            copy = np.array(arr)   # a new, aligned array
            copy.setflags(write=False)
            ctx.initializers[name] = copy


def import_model(model, where: str = "model", raw_data=None) -> Graph:
    """Convert an onnx.ModelProto into a Graph (not yet checked or optimised). raw_data: the
    initializers' raw bytes where `import_file` parsed the message without them (_RawData)."""
    _check_text(model, where)
    opset = None
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            opset = int(o.version)
    if opset is None:
        opset = 1 if not model.opset_import else None
    if opset is None:
        raise UnsupportedOpError(f"{where}: the model uses no standard ONNX opset "
                                 f"({', '.join(o.domain for o in model.opset_import)})")
    if opset not in SUPPORTED_OPSETS:
        raise UnsupportedOpError(f"{where}: ONNX opset {opset} is not supported "
                                 f"(fastcnn reads opsets {SUPPORTED_OPSETS.start} to {SUPPORTED_OPSETS.stop - 1})")
    g = model.graph
    ctx = ImportContext(where, opset)
    for i, t in enumerate(g.initializer):
        name = t.name
        if type(name) is not str:
            raise _not_text(where, "an initializer name", name)
        if not name:
            raise ModelFileError(f"{where}: an initializer has no name")
        raw = raw_data.of(i) if raw_data is not None else None
        ctx.initializers[name] = _tensor_to_array(ctx, t, f"initializer '{name}'", raw)
        ctx._names.add(name)
    for t in g.sparse_initializer:
        raise UnsupportedOpError(f"{where}: sparse initializers are not supported")
    # Old exporters list initializers among the graph inputs: those are weights, not inputs.
    inputs = [_value_spec(ctx, vi, True) for vi in g.input if vi.name not in ctx.initializers]
    ctx.inputs = inputs
    for n in g.node:
        reads, writes = list(n.input), list(n.output)
        _check_node_text(n, reads, writes, where)
        ctx._names.update(writes)
        ctx._names.add(n.name)
        ctx.consumed.update(x for x in reads if x)
    ctx.consumed.update(vi.name for vi in g.output)
    for i, n in enumerate(g.node):
        if n.domain not in ("", "ai.onnx"):
            raise UnsupportedOpError(f"{where}: node '{n.name}' uses operator '{n.op_type}' from "
                                     f"domain '{n.domain}', which fastcnn does not support")
        conv = CONVERTERS.get(n.op_type)
        if conv is None:
            from fastcnn.ir.ops import OPS
            raise UnsupportedOpError(
                f"{where}: node '{n.name or f'#{i}'}' uses ONNX operator '{n.op_type}', which "
                f"fastcnn does not support. Supported ONNX operators: {', '.join(sorted(CONVERTERS))}")
        if not n.name:
            n.name = ctx.fresh(f"{n.op_type}_{i}")
        try:
            conv(ctx, n, _attrs(ctx, n))
        except FastCNNError:
            raise
        except CONVERTER_ERRORS as e:
            # A converter tripping over an attribute of the wrong type or an absurd value is a
            # bad file, never a crash (converters trust the ONNX schema; the file may not).
            raise ModelFileError(f"{where}: node '{n.name}' ({n.op_type}): invalid attributes or "
                                 f"inputs ({type(e).__name__}: {str(e)[:200]})") from None
    _copy_misaligned(ctx)
    outputs = [_value_spec(ctx, vi, False) for vi in g.output]
    metadata = {"producer": f"{model.producer_name} {model.producer_version}".strip(),
                "source_format": "onnx", "onnx_opset": opset}
    for prop in model.metadata_props:
        if prop.key == "labels":
            metadata["labels"] = [s for s in prop.value.split("\n") if s] if "\n" in prop.value \
                else prop.value.split(",")
        else:
            metadata.setdefault("onnx_metadata", {})[prop.key] = prop.value
    return Graph(g.name or os.path.basename(where), inputs, outputs, ctx.nodes, ctx.initializers,
                 metadata, source=where)


def import_file(path: str) -> Graph:
    """Read an .onnx file into a Graph (`import_file_mapped`; the arrays that view the file
    keep its mapping alive). Raises ModelFileError for unreadable files."""
    graph, mapped = import_file_mapped(path)
    if mapped is not None:
        mapped.close()   # unmapped when the last array viewing it goes
    return graph


def import_file_mapped(path: str):
    """Read an .onnx file into a Graph: (graph, MappedFile or None).

    The file is mapped, and parsed with protobuf without the initializers' raw_data
    (`onnx_wire.split_raw_data`); each weight is an array viewing its bytes in the mapping
    (`_tensor_to_array`), as a .fcnn file's are: nothing is copied, and the weights the
    planner packs need not stay resident (`MappedFile.release_pages`). A file whose wire data
    that walk refuses is parsed whole by `onnx.load`, as before (its error names the problem);
    its arrays are then copies and the MappedFile None. The file must not change while its
    graph is in use (a mapped .fcnn the same)."""
    import mmap
    from fastcnn.format.mapping import MappedFile
    from fastcnn.importers import onnx_schema
    schema = onnx_schema.messages()   # before the file: a missing onnx package is no file error
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read ({e.strerror or e})") from None
    if size == 0:
        raise ModelFileError(f"{path}: empty file")
    mapped = None
    try:
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        pass   # not a regular file (a pipe, /dev/stdin): onnx.load reads it
    resources = MappedFile(None, mapped) if mapped is not None else None
    try:
        try:
            model, raw_data = _parse_file(schema, path, mapped)
        except Exception as e:  # protobuf DecodeError, external data errors, ...
            raise ModelFileError(f"{path}: not a valid ONNX model ({type(e).__name__}: "
                                 f"{str(e)[:200]})") from None
        if not model.HasField("graph"):
            raise ModelFileError(f"{path}: the ONNX file has no graph")
        graph = import_model(model, path, raw_data)
    except BaseException:
        if resources is not None:
            resources.close()
        raise
    if raw_data is None and resources is not None:
        resources.close()   # parsed by onnx.load: nothing views the file
        resources = None
    return graph, resources


def _parse_file(schema, path: str, mapped):
    """(ModelProto, _RawData or None): from the mapped file, parsed without the initializers'
    raw_data, where the wire walk takes it; else parsed whole by onnx.load. schema: the module
    with ONNX's message classes (`onnx_schema.messages`)."""
    from fastcnn.importers import onnx_schema, onnx_wire
    if mapped is not None:
        try:
            stripped, spans = onnx_wire.split_raw_data(mapped)
        except onnx_wire.WireError:
            pass   # protobuf parses it, or says what is wrong with it
        else:
            model = schema.ModelProto.FromString(stripped)
            # a tensor whose data is in another file names it in an external_data entry keyed
            # "location"; without those bytes the walk over every tensor message (1 ms for
            # MobileNetV2) has nothing to find (a tensor marked external without a location
            # is refused when it is read: _tensor_to_array)
            external = b"location" in stripped
            del stripped
            if external and any(t.data_location == EXTERNAL for t in _all_tensors(model)):
                onnx_schema.require_onnx().load_external_data_for_model(
                    model, os.path.dirname(path) or ".")
            return model, _RawData(mapped, spans)
    return onnx_schema.require_onnx().load(path), None


def _all_tensors(model):
    """Every TensorProto of the model where onnx's external-data loader looks for them: the
    initializers and attribute tensors of the graph, of its subgraphs, and of the functions."""
    def of_graph(g):
        yield from g.initializer
        yield from of_nodes(g.node)

    def of_nodes(nodes):
        for n in nodes:
            for a in n.attribute:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors
                if a.HasField("g"):
                    yield from of_graph(a.g)
                for sub in a.graphs:
                    yield from of_graph(sub)

    yield from of_graph(model.graph)
    for f in model.functions:
        yield from of_nodes(f.node)


class _RawData:
    """The graph initializers' raw_data left in the mapped file: spans[i] = (offset, length)
    of initializer i's bytes, or None (onnx_wire.split_raw_data)."""

    def __init__(self, mapped, spans):
        self.mapped = mapped
        self.spans = spans

    def of(self, i: int):
        """Initializer i's raw_data as a memoryview of the file, or None."""
        span = self.spans[i] if i < len(self.spans) else None
        return None if span is None else memoryview(self.mapped)[span[0]:span[0] + span[1]]

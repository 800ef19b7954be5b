"""Walk a Keras model config (Sequential or Functional, nested models included) and convert
every layer call with the `LAYERS` table, every Keras 3 operation call (`x + 3.0`,
`keras.ops.mean`) with the `OPERATIONS` table.

The config is JSON data. A layer is converted only if its class is in the whitelist and comes
from a Keras module; Lambda, TFOpLambda and custom layers are refused by name. Nothing from the
file is ever executed or unpickled.
"""
from __future__ import annotations

import math
import numbers
import re

import numpy as np

from fastcnn.errors import ModelFileError, UnsupportedOpError
from fastcnn.importers.keras.builder import Builder, KTensor, identity_perm
from fastcnn.importers.keras.layer import Layer, policy_name
from fastcnn.importers.keras.layers import LAYERS
from fastcnn.importers.keras.operations import OPERATIONS, is_operation
from fastcnn.ir.graph import Graph, TensorSpec

MODEL_CLASSES = ("Sequential", "Functional", "Model")
INPUT_CLASSES = ("InputLayer",)
KERAS_MODULE = re.compile(r"^(keras|tf_keras|tensorflow\.keras|tensorflow\.python\.keras)(\.|$)")
MAX_NESTING = 32
CODE_LAYERS = {
    "Lambda": "a Lambda layer holds Python code",
    "TFOpLambda": "a TFOpLambda layer stands for a raw TensorFlow operation called on a Keras tensor",
    "SlicingOpLambda": "a SlicingOpLambda layer stands for a TensorFlow slicing operation",
}
INPUT_DTYPES = ("float32", "float16", "float64", "bfloat16", "uint8", "int8", "uint16", "int16",
                "int32", "int64")


def to_snake_case(name: str) -> str:
    """Keras' naming.to_snake_case: the per-class key of a layer in .keras weight files."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


class Importer:
    """Converts one Keras model config into a Graph.

    where: file name for messages; keras3: the file was written by Keras 3 (activation
    semantics); root_scope: the weight store's scope of the top-level model.
    """

    def __init__(self, where: str, keras3: bool):
        self.where = where
        self.keras3 = keras3
        self.builder = Builder(where)
        self.data_format = "channels_last"

    # -------------------------------------------------------------- entry point
    def model_class(self, entry: dict) -> str:
        """The top-level model's class; refuses anything but Sequential/Functional."""
        cls = entry.get("class_name") if isinstance(entry, dict) else None
        if cls not in MODEL_CLASSES:
            raise UnsupportedOpError(f"{self.where}: the top-level model is a {str(cls)[:60]!r}; fastcnn "
                                     f"loads Sequential and Functional models (a subclassed Model holds "
                                     f"Python code)")
        return self.class_of(entry, "the model")

    def convert(self, entry: dict, root_scope) -> Graph:
        cls = self.model_class(entry)
        cfg = self.config_of(entry, "the model")
        if _uses_channels_first(cfg):
            self.data_format = "channels_first"
        outputs, out_names = self.run_model(cls, cfg, root_scope, None, "", 0)
        b = self.builder
        specs = []
        for t, name in zip(outputs, out_names):
            t = b.keras_order(t)
            b.nodes.append(_identity(t.value, name))
            specs.append(TensorSpec(name, tuple(t.shape), "float32", self._layout(t.rank)))
        graph = Graph(str(cfg.get("name") or "keras_model"), b.inputs, specs, b.nodes, b.initializers,
                      {"producer": "keras", "keras_layout": self.data_format}, source=self.where)
        return graph

    def _layout(self, rank: int) -> str:
        if rank != 4:
            return ""
        return "NHWC" if self.data_format == "channels_last" else "NCHW"

    # -------------------------------------------------------------- config access
    def class_of(self, entry, what) -> str:
        if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
            raise ModelFileError(f"{self.where}: {what}: config entry has no class_name")
        cls = entry["class_name"]
        name = self._entry_name(entry)
        module = entry.get("module")
        registered = entry.get("registered_name")
        custom = (module is not None and not (isinstance(module, str) and KERAS_MODULE.match(module))) or \
            (registered is not None and registered != cls)
        if is_operation(entry):
            if cls not in OPERATIONS:
                raise UnsupportedOpError(f"{self.where}: layer '{name}': the Keras operation {cls!r:.60} "
                                         f"({module}) is not supported; fastcnn loads these operations: "
                                         f"{', '.join(sorted(OPERATIONS))}")
            return cls
        if cls in CODE_LAYERS:
            raise UnsupportedOpError(f"{self.where}: layer '{name}' ({cls}): {CODE_LAYERS[cls]}; fastcnn "
                                     f"never runs code stored in a model file. Rebuild the model "
                                     f"with built-in layers (e.g. Rescaling, Activation, Reshape)")
        if custom or (cls not in LAYERS and cls not in MODEL_CLASSES and cls not in INPUT_CLASSES):
            kind = f"custom layer (registered as {registered!r}, module {module!r})" if custom else "layer class"
            raise UnsupportedOpError(f"{self.where}: layer '{name}' ({cls}): {kind} is not supported; "
                                     f"fastcnn loads built-in Keras layers only: "
                                     f"{', '.join(sorted(set(LAYERS) | set(MODEL_CLASSES)))}")
        return cls

    def config_of(self, entry, what) -> dict:
        cfg = entry.get("config")
        if not isinstance(cfg, dict):
            raise ModelFileError(f"{self.where}: {what}: config of '{self._entry_name(entry)}' is not a mapping")
        return cfg

    @staticmethod
    def _entry_name(entry) -> str:
        cfg = entry.get("config") if isinstance(entry, dict) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) and isinstance(cfg, dict):
            name = cfg.get("name")
        return name if isinstance(name, str) else "?"

    # -------------------------------------------------------------- models
    def run_model(self, cls, cfg, scope, inputs, prefix, depth):
        """Convert a Sequential/Functional config. inputs: KTensors bound to its inputs, or None
        for the top-level model (graph inputs are created). Returns (outputs, output names)."""
        if depth > MAX_NESTING:
            raise ModelFileError(f"{self.where}: models nested more than {MAX_NESTING} deep")
        layers = cfg.get("layers")
        if not isinstance(layers, list):
            raise ModelFileError(f"{self.where}: model '{cfg.get('name')}' has no layer list")
        if cls == "Sequential":
            return self.run_sequential(cfg, layers, scope, inputs, prefix, depth)
        return self.run_functional(cfg, layers, scope, inputs, prefix, depth)

    def _input_from_config(self, name: str, cfg: dict, what: str) -> KTensor:
        shape = None
        for key in ("batch_shape", "batch_input_shape"):
            if cfg.get(key) is not None:
                shape = cfg[key]
                break
        if shape is None and cfg.get("build_input_shape") is not None:
            shape = cfg["build_input_shape"]
        if not isinstance(shape, (list, tuple)) or len(shape) < 2 or not all(
                d is None or (isinstance(d, numbers.Integral) and not isinstance(d, bool) and 1 <= d < 1 << 31)
                for d in shape):
            raise ModelFileError(f"{self.where}: {what}: input shape unknown or invalid ({shape!r:.80}); "
                                 f"the model must have been built with a known input shape")
        dtype = policy_name(cfg.get("dtype")) or "float32"
        if dtype not in INPUT_DTYPES:
            raise UnsupportedOpError(f"{self.where}: input '{name}' has dtype {dtype!r}; fastcnn takes "
                                     f"numeric inputs (fed as float32)")
        if cfg.get("sparse") or cfg.get("ragged"):
            raise UnsupportedOpError(f"{self.where}: input '{name}' is sparse or ragged")
        shape = (None,) + tuple(None if d is None else int(d) for d in shape[1:])
        b = self.builder
        value = b.fresh(name)
        b.inputs.append(TensorSpec(value, shape, "float32", self._layout(len(shape))))
        return KTensor(value, shape, identity_perm(len(shape)))

    def run_sequential(self, cfg, entries, scope, inputs, prefix, depth):
        name = str(cfg.get("name") or "sequential")
        if not entries:
            raise ModelFileError(f"{self.where}: Sequential model '{name}' has no layers")
        first = entries[0]
        body = entries
        if isinstance(first, dict) and first.get("class_name") == "InputLayer":
            body = entries[1:]
            in_cfg, in_name = self.config_of(first, name), self._entry_name(first)
        else:
            in_cfg = dict(self.config_of(first, name)) if isinstance(first, dict) else {}
            if cfg.get("build_input_shape") is not None and not in_cfg.get("batch_input_shape"):
                in_cfg["build_input_shape"] = cfg["build_input_shape"]
            in_name = f"{name}_input"
        if inputs is None:
            x = self._input_from_config(in_name, in_cfg, f"Sequential model '{name}'")
        else:
            if len(inputs) != 1:
                raise ModelFileError(f"{self.where}: Sequential model '{name}' called on {len(inputs)} inputs")
            x = inputs[0]
        counters = {}
        last = self._entry_name(body[-1]) if body else in_name
        out_name = self._output_name(prefix + last, depth)
        for entry in body:
            cls = self.class_of(entry, f"model '{name}'")
            lname = self._entry_name(entry)
            key = _path_key(counters, cls)
            outs = self.call_layer(entry, cls, lname, key, scope, [x], prefix, 0, depth)
            if len(outs) != 1:
                raise ModelFileError(f"{self.where}: layer '{lname}' in Sequential model '{name}' has "
                                     f"{len(outs)} outputs")
            x = outs[0]
        return [x], [out_name]

    def run_functional(self, cfg, entries, scope, inputs, prefix, depth):
        name = str(cfg.get("name") or "model")
        in_refs = _refs(cfg.get("input_layers"), self.where, "input_layers")
        out_refs = _refs(cfg.get("output_layers"), self.where, "output_layers")
        if inputs is not None and len(inputs) != len(in_refs):
            raise ModelFileError(f"{self.where}: model '{name}' has {len(in_refs)} inputs but is called "
                                 f"on {len(inputs)}")
        tensors = {}     # (layer name, node index, tensor index) -> KTensor
        pending = []     # [entry, cls, name, path key, node index, node data]
        counters, seen = {}, set()
        for entry in entries:
            cls = self.class_of(entry, f"model '{name}'")
            lname = self._entry_name(entry)
            if lname in seen:
                raise ModelFileError(f"{self.where}: model '{name}' has two layers named '{lname}'")
            seen.add(lname)
            # operations are not layers: they hold no weights and take no weight-file key
            key = None if is_operation(entry) else _path_key(counters, cls)
            if cls == "InputLayer":
                ref = (lname, 0, 0)
                if inputs is None:
                    tensors[ref] = self._input_from_config(lname, self.config_of(entry, lname), f"input '{lname}'")
                elif ref in in_refs:
                    tensors[ref] = inputs[in_refs.index(ref)]
                continue
            nodes = entry.get("inbound_nodes")
            if not isinstance(nodes, list):
                raise ModelFileError(f"{self.where}: layer '{lname}' has no inbound_nodes list")
            for k, node in enumerate(nodes):
                pending.append((entry, cls, lname, key, k, node))
        for ref in in_refs:
            if ref not in tensors:
                raise ModelFileError(f"{self.where}: model '{name}': input {list(ref)} is not an InputLayer")
        names = [self._output_name(prefix + r[0] + (f"_{r[1]}" if r[1] else "") + (f"_{r[2]}" if r[2] else ""),
                                   depth) for r in out_refs]
        while pending:
            left = []
            for item in pending:
                entry, cls, lname, key, k, node = item
                refs = _node_inputs(node, self.where, lname)
                xs = [_lookup(tensors, r, entries) for r in refs]
                if any(x is None for x in xs):
                    left.append(item)
                    continue
                outs = self.call_layer(entry, cls, lname, key, scope, xs, prefix, k, depth, node)
                for i, t in enumerate(outs):
                    tensors[(lname, k, i)] = t
            if len(left) == len(pending):
                entry, cls, lname, key, k, node = left[0]
                missing = [list(r) for r in _node_inputs(node, self.where, lname)
                           if _lookup(tensors, r, entries) is None]
                raise ModelFileError(f"{self.where}: layer '{lname}' ({cls}) call {k} reads "
                                     f"{missing}, which no layer produces (or the graph has a cycle)")
            pending = left
        outputs = []
        for ref in out_refs:
            t = _lookup(tensors, ref, entries)
            if t is None:
                raise ModelFileError(f"{self.where}: model '{name}': output {list(ref)} is not produced "
                                     f"by any layer")
            outputs.append(t)
        return outputs, names

    def _output_name(self, name: str, depth: int) -> str:
        """The top-level model's outputs are named after their layers: reserve those names
        before any other value can take them."""
        return self.builder.fresh(name) if depth == 0 else name

    # -------------------------------------------------------------- one layer call
    def call_layer(self, entry, cls, lname, key, scope, xs, prefix, k, depth, node=None):
        """Convert call k of a layer (or operation) on the KTensors xs; node: the call's
        inbound node (an operation's constant arguments are read from it)."""
        cfg = self.config_of(entry, lname)
        if cls in MODEL_CLASSES:
            if not hasattr(entry, "get") or "layers" not in cfg:
                raise ModelFileError(f"{self.where}: nested model '{lname}' has no layer list")
            outs, _ = self.run_model(cls, cfg, scope.nested(key, lname), xs,
                                     f"{prefix}{lname}{f'_{k}' if k else ''}/", depth + 1)
            return outs
        if cls == "InputLayer":
            raise ModelFileError(f"{self.where}: InputLayer '{lname}' is called on a tensor")
        memo = {}

        def fetch():
            if "w" not in memo:
                memo["w"] = scope.layer_weights(key, lname)
            return memo["w"]

        layer = self._layer_cache(entry, cls, cfg, lname, fetch)
        layer.base = f"{prefix}{lname}{f'_{k}' if k else ''}"
        if is_operation(entry):
            outs = OPERATIONS[cls](layer, _call_args(node, xs, self.where, lname))
        else:
            outs = LAYERS[cls](layer, xs)
        layer.check_config()
        return outs

    def _layer_cache(self, entry, cls, cfg, lname, fetch):
        """One Layer per config entry: a layer called several times reads its weights once."""
        cache = self.__dict__.setdefault("_layers", {})
        if id(entry) not in cache:
            cache[id(entry)] = (entry, Layer(self, cls, cfg, lname, fetch))
        return cache[id(entry)][1]


# ----------------------------------------------------------------------------- helpers
def _identity(src: str, dst: str):
    from fastcnn.ir.graph import Node
    return Node("Identity", f"{dst}/output", [src], [dst], {})  # removed by the passes


def _path_key(counters: dict, cls: str) -> str:
    """The .keras weight-file key of the next layer of class `cls` in a model's layer list."""
    snake = to_snake_case(cls)
    if snake in counters:
        counters[snake] += 1
        return f"{snake}_{counters[snake]}"
    counters[snake] = 0
    return snake


def _is_ref(r) -> bool:
    return isinstance(r, (list, tuple)) and len(r) in (3, 4) and isinstance(r[0], str) and \
        all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0 for v in r[1:3])


def _refs(spec, where, what):
    """input_layers/output_layers: one [name, node, tensor] triple, a list of them, or a dict."""
    if isinstance(spec, dict):
        spec = list(spec.values())
    if _is_ref(spec):
        spec = [spec]
    if not isinstance(spec, list) or not spec or not all(_is_ref(r) for r in spec):
        raise ModelFileError(f"{where}: model config has an invalid '{what}' entry: {spec!r:.100}")
    return [(r[0], int(r[1]), int(r[2])) for r in spec]


class _TensorAt:
    """Where a call's i-th input tensor stands among its arguments (`_parse_call`)."""
    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index


def _parse_call(node, where, lname):
    """(refs, args) of one layer call: the (layer, node, tensor) references it reads, in
    argument order, and its positional arguments with each Keras tensor replaced by
    _TensorAt(i) (tuples as lists, other values as stored; None for a Keras 2 call).

    Keras 2: a list of [layer, node, tensor, kwargs]. Keras 3: {"args": [...], "kwargs": {...}}
    whose Keras tensors are {"class_name": "__keras_tensor__", "config": {"keras_history": [...]}}.
    """
    if isinstance(node, list):
        if not all(_is_ref(r) for r in node):
            raise ModelFileError(f"{where}: layer '{lname}': invalid inbound node {node!r:.100}")
        return [(r[0], int(r[1]), int(r[2])) for r in node], None
    if not isinstance(node, dict):
        raise ModelFileError(f"{where}: layer '{lname}': invalid inbound node {node!r:.100}")
    refs = []

    def walk(v, in_kwargs):
        if isinstance(v, dict):
            cfg = v.get("config") if isinstance(v.get("config"), dict) else {}
            if v.get("class_name") == "__keras_tensor__":
                hist = cfg.get("keras_history")
                if not _is_ref(hist):
                    raise ModelFileError(f"{where}: layer '{lname}': invalid keras_history {hist!r:.80}")
                if in_kwargs:
                    raise UnsupportedOpError(f"{where}: layer '{lname}' takes a tensor as a keyword "
                                             f"argument (mask, attention...), which fastcnn does not support")
                refs.append((hist[0], int(hist[1]), int(hist[2])))
                return _TensorAt(len(refs) - 1)
            if v.get("class_name") == "__tuple__":
                return walk(cfg.get("value"), in_kwargs)
            return {k: walk(x, in_kwargs) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, in_kwargs) for x in v]
        return v

    args = walk(node.get("args", []), False)
    walk(node.get("kwargs", {}), True)
    if not refs:
        raise ModelFileError(f"{where}: layer '{lname}': a call without input tensors")
    return refs, args


def _node_inputs(node, where, lname):
    """The (layer, node, tensor) references a layer call reads, in argument order."""
    return _parse_call(node, where, lname)[0]


def _call_args(node, xs, where, lname):
    """The positional arguments of a Keras 3 call: its Keras tensors replaced by xs (the
    tensors `_node_inputs` listed), numbers kept, `__numpy__` arrays as float32 arrays,
    `__slice__`/`__ellipsis__` as slice/Ellipsis, lists and tuples as lists. Keyword arguments
    and other values are refused."""
    _, args = _parse_call(node, where, lname)
    if args is None:
        raise ModelFileError(f"{where}: layer '{lname}': an operation's call must be a Keras 3 "
                             f"inbound node, got {node!r:.80}")
    if node.get("kwargs"):
        raise UnsupportedOpError(f"{where}: layer '{lname}': keyword arguments "
                                 f"{sorted(node['kwargs'])!r:.80} of an operation call are not supported")

    def index(v):
        if v is None or (isinstance(v, numbers.Integral) and not isinstance(v, bool) and abs(v) < 1 << 62):
            return v
        raise ModelFileError(f"{where}: layer '{lname}': slice bound {v!r:.40} is not an integer")

    def build(v):
        if isinstance(v, _TensorAt):
            return xs[v.index]
        if isinstance(v, dict):
            cls, cfg = v.get("class_name"), v.get("config")
            cfg = cfg if isinstance(cfg, dict) else {}
            if cls == "__numpy__":
                return _constant(cfg.get("value"), where, lname)
            if cls == "__slice__":
                return slice(index(cfg.get("start")), index(cfg.get("stop")), index(cfg.get("step")))
            if cls == "__ellipsis__":
                return Ellipsis
            raise UnsupportedOpError(f"{where}: layer '{lname}': an argument of class {cls!r:.40} "
                                     f"is not supported")
        if isinstance(v, list):
            return [build(x) for x in v]
        if v is None or (isinstance(v, numbers.Integral) and not isinstance(v, bool) and abs(v) < 1 << 62) \
                or (isinstance(v, float) and math.isfinite(v)):
            return v
        raise UnsupportedOpError(f"{where}: layer '{lname}': argument {v!r:.60} is not supported "
                                 f"(tensors, numbers, arrays and indices are)")

    args = build(args)
    if not isinstance(args, list):
        raise ModelFileError(f"{where}: layer '{lname}': invalid call arguments {node.get('args')!r:.80}")
    return args


def _constant(value, where, lname):
    """A numeric constant (a number or a rectangular nested list) as a float32 array."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        arr = None
    if arr is None or not np.all(np.isfinite(arr)):
        raise ModelFileError(f"{where}: layer '{lname}': constant argument {value!r:.60} is not a "
                             f"finite number or a rectangular array of them")
    return arr.astype(np.float32)


def _lookup(tensors, ref, entries):
    t = tensors.get(ref)
    if t is None and ref[1] > 0:
        # Keras 2 numbers the calls of a nested Functional model from 1 (its own creation node
        # is call 0) in some versions; accept the shifted reference when the exact one is absent
        shifted = (ref[0], ref[1] - 1, ref[2])
        if shifted in tensors and (ref[0], ref[1], ref[2]) not in tensors and any(
                isinstance(e, dict) and e.get("class_name") in MODEL_CLASSES and Importer._entry_name(e) == ref[0]
                for e in entries):
            t = tensors[shifted]
    return t


def _uses_channels_first(cfg) -> bool:
    """True when some layer of the model (nested ones included) is channels_first."""
    stack = [cfg]
    while stack:
        c = stack.pop()
        if isinstance(c, dict):
            if c.get("data_format") == "channels_first":
                return True
            stack.extend(v for v in c.values() if isinstance(v, (dict, list)))
        elif isinstance(c, list):
            stack.extend(v for v in c if isinstance(v, (dict, list)))
    return False

"""`Sequential`: a stack of `fastcnn.nn` layers, weights loaded from arrays, compiled into a
normal fastcnn `Model`."""
from __future__ import annotations

import os

import numpy as np

from fastcnn.errors import FastCNNError
from fastcnn.ir.graph import Graph, Node, TensorSpec
from fastcnn.nn.layers import Layer


class _Emitter:
    """Collects IR nodes and initializers while a Sequential is compiled."""

    def __init__(self, weights):
        self.nodes, self.initializers, self._used = [], {}, {"input", "output"}
        self._weights = weights

    def fresh(self, base):
        name, k = base, 0
        while name in self._used:
            k += 1
            name = f"{base}_{k}"
        self._used.add(name)
        return name

    def const(self, base, value):
        name = self.fresh(base)
        arr = np.asarray(value, np.float32)
        arr.setflags(write=False)
        self.initializers[name] = arr
        return name

    def weight(self, layer, role):
        key = f"{layer.name}.{role}"
        self._used.add(key)
        self.initializers[key] = self._weights[key]
        return key

    def emit(self, op, inputs, base, attrs=None):
        out = self.fresh(base)
        self.nodes.append(Node(op, self.fresh(f"{base}/{op}"), list(inputs), [out], dict(attrs or {})))
        return out


class Sequential:
    """A stack of layers applied in order to one NCHW input.

    layers:      fastcnn.nn layers; unnamed ones get names from their kind: conv1, pool1, dense1...
    input_shape: per-sample input shape, e.g. (1, 32, 32) for 32x32 grey images (C, H, W).
    Weights are named "<layer>.weight", "<layer>.bias" (see fastcnn.nn.layers for their layouts).
    """

    def __init__(self, layers, input_shape, name="net"):
        if not isinstance(layers, (list, tuple)) or not layers:
            raise FastCNNError("Sequential needs a non-empty list of layers")
        self.name = name
        try:
            self.input_shape = tuple(int(d) for d in input_shape)
        except (TypeError, ValueError):
            raise FastCNNError(f"input_shape must be a tuple of ints, got {input_shape!r:.60}") from None
        if not self.input_shape or any(d < 1 for d in self.input_shape):
            raise FastCNNError(f"input_shape must hold positive dims, got {input_shape!r:.60}")
        counters, names = {}, set()
        for layer in layers:
            if not isinstance(layer, Layer):
                raise FastCNNError(f"{layer!r:.60} is not a fastcnn.nn layer")
        for layer in layers:
            if layer.name is not None:
                if layer.name in names:
                    raise FastCNNError(f"two layers are named '{layer.name}'")
                names.add(layer.name)
        for layer in layers:
            if layer.name is None:
                k = counters.get(layer.prefix, 0)
                while True:
                    k += 1
                    if f"{layer.prefix}{k}" not in names:
                        break
                counters[layer.prefix] = k
                layer.name = f"{layer.prefix}{k}"
                names.add(layer.name)
        self.layers = list(layers)
        # shapes through the stack, validated now: a bad stack fails where it is built
        self.shapes = [self.input_shape]
        for layer in self.layers:
            layer.weight_shapes(self.shapes[-1])
            self.shapes.append(tuple(layer.output_shape(self.shapes[-1])))
        self._weights = {}

    # -------------------------------------------------------------- weights
    def weight_shapes(self) -> dict:
        """{"conv1.weight": (6, 1, 5, 5), ...}: every weight the network needs, in layer order."""
        out = {}
        for layer, shape in zip(self.layers, self.shapes):
            for role, s in layer.weight_shapes(shape).items():
                out[f"{layer.name}.{role}"] = tuple(s)
        return out

    def _owner(self, key):
        layer = key.split(".", 1)[0]
        for lay in self.layers:
            if lay.name == layer:
                return f"layer '{lay.name}' ({type(lay).__name__})"
        return f"'{key}'"

    def load_weights(self, weights, strict: bool = True) -> "Sequential":
        """Load weights from a dict name -> array, or from an .npz file path (read without
        pickle). strict: every weight must be given (else only the given ones are loaded; the
        rest must come from later calls before compile). Raises FastCNNError naming the layer,
        the expected and the actual shapes; extra names are refused."""
        where = "weights"
        if isinstance(weights, (str, os.PathLike)):
            where = os.fspath(weights)
            try:
                with np.load(where, allow_pickle=False) as npz:
                    weights = {k: npz[k] for k in npz.files}
            except (OSError, ValueError) as e:
                raise FastCNNError(f"{where}: cannot read weights ({e})") from None
        if not isinstance(weights, dict):
            raise FastCNNError(f"weights must be a dict name -> array or an .npz path, got "
                               f"{type(weights).__name__}")
        expected = self.weight_shapes()
        extra = [k for k in weights if k not in expected]
        if extra:
            raise FastCNNError(f"{where}: unknown weight(s) {', '.join(map(repr, extra[:8]))}; the network's "
                               f"weights are {', '.join(expected)}")
        missing = [k for k in expected if k not in weights]
        if strict and missing:
            raise FastCNNError(f"{where}: missing weight(s): " + "; ".join(
                f"{k} {list(expected[k])} for {self._owner(k)}" for k in missing))
        loaded = {}
        for key, value in weights.items():
            try:
                arr = np.asarray(value)
            except Exception:
                arr = None
            if arr is None or arr.dtype.kind not in "fiub":
                raise FastCNNError(f"{where}: {self._owner(key)}: '{key}' is not a numeric array")
            if arr.shape != expected[key]:
                raise FastCNNError(f"{where}: {self._owner(key)}: '{key}' has shape {list(arr.shape)}; "
                                   f"expected {list(expected[key])}")
            arr = np.array(arr, np.float32)
            arr.setflags(write=False)
            loaded[key] = arr
        self._weights.update(loaded)
        return self

    # -------------------------------------------------------------- building
    def to_graph(self) -> Graph:
        """The network as a fastcnn Graph (input 'input' (N, *input_shape), output 'output')."""
        missing = [k for k in self.weight_shapes() if k not in self._weights]
        if missing:
            raise FastCNNError("weights not loaded: " + "; ".join(
                f"{k} {list(self.weight_shapes()[k])} for {self._owner(k)}" for k in missing)
                + " (use net.load_weights)")
        e = _Emitter(self._weights)
        x = "input"
        for layer, shape in zip(self.layers, self.shapes):
            x = layer.emit(e, x, shape, {r: self._weights[f"{layer.name}.{r}"] for r in layer.weight_shapes(shape)})
        e.nodes.append(Node("Identity", "output/identity", [x], ["output"], {}))
        layout = "NCHW" if len(self.input_shape) == 3 else ""
        return Graph(self.name, [TensorSpec("input", (None,) + self.input_shape, "float32", layout)],
                     [TensorSpec("output", (None,) + self.shapes[-1], "float32")], e.nodes, e.initializers,
                     {"producer": "fastcnn.nn"}, source=self.name).check()

    def compile(self, num_threads=None, passes: bool = True):
        """A fastcnn Model (run, save, fine-tune) computing this network with the loaded weights."""
        from fastcnn.model import Model
        from fastcnn.passes import run_pipeline
        g = self.to_graph()
        return Model(run_pipeline(g) if passes else g, num_threads=num_threads)

    def summary(self) -> str:
        """A table of layers, output shapes and parameter counts."""
        rows = [("layer", "kind", "output shape", "params")]
        total = 0
        for layer, shape_in, shape_out in zip(self.layers, self.shapes, self.shapes[1:]):
            n = sum(int(np.prod(s)) for s in layer.weight_shapes(shape_in).values())
            total += n
            rows.append((layer.name, layer.describe(), str(tuple(shape_out)), str(n)))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [f"{self.name}: input {self.input_shape}"]
        for i, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) if j < 3 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
            if i == 0:
                lines.append("-" * (sum(widths) + 6))
        lines.append(f"total parameters: {total}")
        return "\n".join(lines)

    def __repr__(self):
        return f"<fastcnn.nn.Sequential {self.name!r}: {len(self.layers)} layers, input {self.input_shape}>"

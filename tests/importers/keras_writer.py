"""Write Keras model files with h5py, zipfile and json only (no Keras, no TensorFlow), laid out
as Keras writes them, for the importer tests.

    net = Net("keras")                       # "h5": Keras 2 .h5; "keras": Keras 3 .keras
    net = Net("h5", version="3.15.1")        # Keras 3's legacy .h5 (no module names)
    x = net.input("img", (8, 8, 3))
    y = net.add("Conv2D", "conv", [x], weights=[("kernel", k), ("bias", b)], filters=4, ...)
    net.save(path, [y])

`Net.sequential(...)` writes a Sequential model instead. Layer configs are given as keyword
arguments exactly as they appear in a Keras config. Weights are (short name, array) in Keras'
storage order (trainable first).
"""
from __future__ import annotations

import io
import json
import zipfile

import h5py
import numpy as np

# snake-cased class names, as Keras 3 keys layers in model.weights.h5 (written out by hand)
SNAKE = {"Conv2D": "conv2d", "Conv1D": "conv1d", "Dense": "dense", "BatchNormalization": "batch_normalization",
         "DepthwiseConv2D": "depthwise_conv2d", "SeparableConv2D": "separable_conv2d",
         "Conv2DTranspose": "conv2d_transpose", "PReLU": "p_re_lu", "LayerNormalization": "layer_normalization",
         "Normalization": "normalization", "Functional": "functional", "Sequential": "sequential",
         "LayerScale": "layer_scale"}
VERSIONS = {"h5": "2.13.1", "keras": "3.3.3"}


class Net:
    def __init__(self, fmt: str, name: str = "model", version: str | None = None):
        assert fmt in ("h5", "keras")
        self.fmt = fmt
        self.name = name
        self.version = version or VERSIONS[fmt]
        self.entries = []          # layer config entries, in order
        self.weights = {}          # layer name -> [(short name, array)]
        self.nested = {}           # layer name -> Net
        self.inputs = []
        self.calls = {}            # layer name -> number of calls so far
        self.ops = set()           # names of operation entries (not layers: no weights)

    @property
    def keras3(self) -> bool:
        """Keras 3 configs (call nodes with args, DTypePolicy, batch_shape)."""
        return self.fmt == "keras" or not self.version.startswith(("1.", "2."))

    @property
    def modules(self) -> bool:
        """Config entries name their module (.keras only: Keras 3's legacy .h5 drops them)."""
        return self.fmt == "keras"

    # -------------------------------------------------------------- building
    def _entry(self, cls, name, cfg):
        entry = {"class_name": cls, "config": {"name": name, "trainable": True, **cfg}, "name": name}
        if self.keras3:
            entry["config"].setdefault("dtype", {"module": "keras", "class_name": "DTypePolicy",
                                                 "config": {"name": "float32"}, "registered_name": None})
            if self.modules:
                entry.update({"module": "keras.layers", "registered_name": None})
        else:
            entry["config"].setdefault("dtype", "float32")
        return entry

    def input(self, name, shape):
        key = "batch_shape" if self.keras3 else "batch_input_shape"
        entry = self._entry("InputLayer", name, {key: [None, *shape], "sparse": False, "ragged": False})
        entry["config"].pop("trainable")
        entry["inbound_nodes"] = []
        self.entries.append(entry)
        self.inputs.append(name)
        return (name, 0, 0)

    def _node(self, refs):
        if not self.keras3:
            return [[r[0], r[1], r[2], {}] for r in refs]
        kts = [{"class_name": "__keras_tensor__",
                "config": {"shape": None, "dtype": "float32", "keras_history": list(r)}} for r in refs]
        return {"args": [kts[0] if len(kts) == 1 else kts], "kwargs": {}}

    def add(self, cls, name, inputs, weights=(), module="keras.layers", **cfg):
        entry = self._entry(cls, name, cfg)
        if self.modules:
            entry["module"] = module
        entry["inbound_nodes"] = [self._node(inputs)]
        self.entries.append(entry)
        self.weights[name] = [(n, np.asarray(a, np.float32)) for n, a in weights]
        self.calls[name] = 1
        return (name, 0, 0)

    def op(self, cls, name, args, module="keras.src.ops.numpy", **cfg):
        """A Keras 3 operation called in the model (`x + 3.0`, keras.ops.mean(x, ...)): args are
        the call's positional arguments, tensors as the refs input/add/op return, constants as
        numbers or numpy arrays (written as Keras writes them), lists as lists."""
        assert self.keras3, "operations are Keras 3"
        entry = {"class_name": cls, "config": {"name": name, **cfg}, "name": name,
                 "inbound_nodes": [{"args": [self._arg(a) for a in args], "kwargs": {}}]}
        if self.modules:
            entry.update({"module": module, "registered_name": cls})
        self.entries.append(entry)
        self.ops.add(name)
        self.calls[name] = 1
        return (name, 0, 0)

    def _arg(self, a):
        if isinstance(a, tuple) and len(a) == 3 and isinstance(a[0], str):
            return {"class_name": "__keras_tensor__",
                    "config": {"shape": None, "dtype": "float32", "keras_history": list(a)}}
        if isinstance(a, list):
            return [self._arg(x) for x in a]
        if isinstance(a, np.ndarray):
            return {"class_name": "__numpy__", "config": {"value": a.tolist(), "dtype": str(a.dtype)}}
        if isinstance(a, slice):
            return {"class_name": "__slice__", "config": {"start": a.start, "stop": a.stop, "step": a.step}}
        if a is Ellipsis:
            return {"class_name": "__ellipsis__", "config": {}}
        return a

    def call_again(self, name, inputs):
        """Call an existing layer (or nested model) once more: a shared layer."""
        entry = next(e for e in self.entries if e["name"] == name)
        entry["inbound_nodes"].append(self._node(inputs))
        self.calls[name] += 1
        return (name, self.calls[name] - 1, 0)

    def add_model(self, inner: "Net", inputs, outputs):
        """Use `inner` (a Functional Net, same format) as a layer."""
        entry = {"class_name": "Functional", "config": inner.model_config(outputs)["config"],
                 "name": inner.name, "inbound_nodes": [self._node(inputs)]}
        if self.modules:
            entry.update({"module": "keras.src.models.functional", "registered_name": "Functional"})
        self.entries.append(entry)
        self.nested[inner.name] = inner
        self.calls[inner.name] = 1
        return (inner.name, 0, 0)

    # -------------------------------------------------------------- configs
    def model_config(self, outputs, sequential=False):
        if sequential:
            cfg = {"name": self.name, "layers": [{k: v for k, v in e.items() if k not in ("inbound_nodes", "name")}
                                                for e in self.entries]}
            out = {"class_name": "Sequential", "config": cfg}
            if self.modules:
                out.update({"module": "keras", "registered_name": None})
            return out
        refs = [list(r) for r in outputs]
        ins = [[n, 0, 0] for n in self.inputs]
        if self.keras3:
            ins = ins[0] if len(ins) == 1 else ins
            refs = refs[0] if len(refs) == 1 else refs
        cfg = {"name": self.name, "trainable": True, "layers": self.entries, "input_layers": ins,
               "output_layers": refs}
        out = {"class_name": "Functional", "config": cfg}
        if self.modules:
            out.update({"module": "keras.src.models.functional", "registered_name": "Functional"})
        return out

    # -------------------------------------------------------------- weights
    def _layer_weight_names(self, lname, prefix=""):
        """(Keras 2 / Keras 3 legacy) dataset names of a layer's weights in its h5 group."""
        if self.keras3:
            return [f"{prefix}{lname}/{n}" for n, _ in self.weights[lname]]
        return [f"{prefix}{lname}/{n}:0" for n, _ in self.weights[lname]]

    def _all_weights(self, prefix=""):
        """[(name, array)] of every weight of this Net (nested ones included), Keras order:
        trainable first across layers (as a nested model's group lists them)."""
        train, rest = [], []
        for e in self.entries:
            n = e["name"]
            if n in self.nested:
                sub = self.nested[n]._all_weights(f"{prefix}{n}/" if self.keras3 else prefix)
                train.extend(sub)
            elif n in self.weights:
                for (short, arr), full in zip(self.weights[n], self._layer_weight_names(n, prefix)):
                    (rest if short.startswith("moving_") else train).append((full, arr))
        return train + rest

    def _write_h5_weights(self, group):
        layers = [e for e in self.entries if e["name"] not in self.ops]   # as model.layers
        group.attrs["layer_names"] = np.array([e["name"].encode() for e in layers])
        group.attrs["keras_version"] = self.version.encode()
        group.attrs["backend"] = b"tensorflow"
        for e in layers:
            n = e["name"]
            g = group.create_group(n)
            if n in self.nested:
                entries = self.nested[n]._all_weights(f"{n}/" if self.keras3 else "")
            else:
                entries = list(zip(self._layer_weight_names(n) if n in self.weights else [],
                                   [a for _, a in self.weights.get(n, [])]))
            g.attrs["weight_names"] = np.array([w.encode() for w, _ in entries]) if entries else np.array([], "S1")
            for w, a in entries:
                g.create_dataset(w, data=a)

    def _write_v3_weights(self, h5, path, sequential=False):
        counters = {}
        for e in self.entries:
            if (sequential and e["class_name"] == "InputLayer") or e["name"] in self.ops:
                continue
            snake = SNAKE.get(e["class_name"], e["class_name"].lower())
            counters[snake] = counters.get(snake, -1) + 1
            key = snake if counters[snake] == 0 else f"{snake}_{counters[snake]}"
            lpath = f"{path}layers/{key}"
            n = e["name"]
            if n in self.nested:
                self.nested[n]._write_v3_weights(h5, f"{lpath}/")
                continue
            g = h5.create_group(f"{lpath}/vars")
            for i, (_, a) in enumerate(self.weights.get(n, [])):
                g.create_dataset(str(i), data=a)

    # -------------------------------------------------------------- saving
    def save(self, path, outputs=(), sequential=False):
        cfg = self.model_config(outputs, sequential)
        path = str(path)
        if self.fmt == "h5":
            with h5py.File(path, "w") as f:
                f.attrs["model_config"] = json.dumps(cfg).encode()
                f.attrs["keras_version"] = self.version.encode()
                f.attrs["backend"] = b"tensorflow"
                self._write_h5_weights(f.create_group("model_weights"))
        else:
            buf = io.BytesIO()
            with h5py.File(buf, "w") as h5:
                h5.create_group("vars")
                self._write_v3_weights(h5, "", sequential)
            with zipfile.ZipFile(path, "w") as zf:
                zf.writestr("metadata.json", json.dumps({"keras_version": self.version}))
                zf.writestr("config.json", json.dumps(cfg))
                zf.writestr("model.weights.h5", buf.getvalue())
        return path

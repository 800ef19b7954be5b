"""Keras importer: `.h5` (Keras 2 / tf.keras, and Keras 3's legacy HDF5) and `.keras` (Keras 3
zip archives) -> Graph. Needs h5py (extra `fastcnn[keras]`), never TensorFlow or Keras.

File layouts read here:
- HDF5: root attribute `model_config` (JSON {"class_name", "config"}), `keras_version`; group
  `model_weights` with attribute `layer_names` and one group per layer whose attribute
  `weight_names` lists its datasets (paths relative to the group) in Keras' storage order,
  trainable weights first. A nested model's group holds all its layers' weights, their names
  carrying the inner layer names.
- .keras: zip with `config.json` (the serialized model), `metadata.json` (`keras_version`) and
  `model.weights.h5`, where a layer's weights are datasets `vars/0`, `vars/1`, ... under
  `layers/<key>`; <key> is the snake-cased class name, numbered `_1`, `_2`... among the layers of
  the same class in the model's layer list; nested models repeat the pattern below their key.

Keras tensors are NHWC; the graph computes NCHW inside (see builder.py). Model inputs and 4-D
outputs stay NHWC, exactly as the Keras model takes and returns them.
"""
from __future__ import annotations

import io
import json
import os
import zipfile

from fastcnn.errors import FastCNNError, ModelFileError
from fastcnn.importers.keras.hdf5_check import check_global_heaps

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
MAX_CONFIG_BYTES = 64 << 20


def _require_h5py():
    try:
        import h5py
    except ImportError:
        raise FastCNNError("reading Keras files needs the h5py package: pip install 'fastcnn[keras]'") from None
    return h5py


def import_file(path) -> "Graph":  # noqa: F821
    """Read a Keras .h5 or .keras file into a Graph (inputs NHWC for channels_last models)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(8)
    try:
        if head.startswith(HDF5_MAGIC):
            return _import_h5(path)
        if zipfile.is_zipfile(path):
            return _import_keras_zip(path)
    except FastCNNError:
        raise
    except RecursionError:
        raise ModelFileError(f"{path}: the model config is nested too deeply") from None
    except (OSError, KeyError, ValueError, TypeError, AttributeError, IndexError, zipfile.BadZipFile,
            EOFError, RuntimeError) as e:
        raise ModelFileError(f"{path}: corrupt or unreadable Keras file ({type(e).__name__}: {e})") from None
    raise ModelFileError(f"{path}: not a Keras file (neither HDF5 nor a zip archive)")


def _keras3(version, default: bool) -> bool:
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    if isinstance(version, str) and version[:1].isdigit():
        return int(version.split(".")[0]) >= 3
    return default


def _parse_config(path, text, what):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str):
        raise ModelFileError(f"{path}: {what} is not text")
    if len(text) > MAX_CONFIG_BYTES:
        raise ModelFileError(f"{path}: {what} is larger than {MAX_CONFIG_BYTES >> 20} MB")
    try:
        cfg = json.loads(text)
    except ValueError as e:
        raise ModelFileError(f"{path}: {what} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ModelFileError(f"{path}: {what} is not a JSON object")
    return cfg


# ----------------------------------------------------------------------------- HDF5
def _attr_list(group, name):
    """A list-of-strings attribute, including Keras' chunked form name0, name1, ..."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, k = [], 0
        while f"{name}{k}" in group.attrs:
            values.extend(group.attrs[f"{name}{k}"])
            k += 1
    out = []
    for v in values:
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        if not isinstance(v, str):
            v = str(v)
        out.append(v)
    return out


class H5Scope:
    """Weights of the layers of a model saved in HDF5: one group per top-level layer."""

    def __init__(self, group, where):
        self.group = group
        self.where = where

    def _entries(self, lname):
        if lname not in self.group:
            return []
        g = self.group[lname]
        out = []
        for wname in _attr_list(g, "weight_names"):
            if wname not in g:
                raise ModelFileError(f"{self.where}: layer '{lname}': weight '{wname}' is listed but "
                                     f"missing from the file")
            out.append((wname, g[wname]))
        return out

    def layer_weights(self, key, lname):
        return self._entries(lname)

    def nested(self, key, lname):
        return NamedScope(self._entries(lname), self.where, lname)


class NamedScope:
    """Weights of the layers of a nested model in HDF5: picked by the inner layer's name, which
    appears as a component of each weight's path ('inner/dense/kernel', 'dense/kernel:0')."""

    def __init__(self, entries, where, model_name):
        self.entries = entries
        self.where = where
        self.model_name = model_name

    def _pick(self, lname):
        return [(n, d) for n, d in self.entries if lname in n.split("/")[:-1]]

    def layer_weights(self, key, lname):
        return self._pick(lname)

    def nested(self, key, lname):
        return NamedScope(self._pick(lname), self.where, lname)


def _import_h5(path):
    import mmap
    h5py = _require_h5py()
    from fastcnn.importers.keras.model import Importer
    with open(path, "rb") as raw, mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        check_global_heaps(mapped, path)   # before the HDF5 library walks them (hdf5_check.py)
    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs:
            if "layer_names" in f.attrs or "layers" in f or "vars" in f:
                raise ModelFileError(f"{path}: a weights-only Keras file (model.save_weights); fastcnn "
                                     f"needs the whole model (model.save) to know the architecture")
            raise ModelFileError(f"{path}: an HDF5 file without a Keras model_config attribute")
        cfg = _parse_config(path, f.attrs["model_config"], "model_config")
        version = f.attrs.get("keras_version")
        if "model_weights" in f:
            weights = f["model_weights"]
            version = version if version is not None else weights.attrs.get("keras_version")
        else:
            weights = f   # Keras 1 wrote the layer groups at the root
        imp = Importer(path, _keras3(version, default=False))
        graph = imp.convert(cfg, H5Scope(weights, path))
    graph.metadata["keras_version"] = _version_text(version)
    return graph


# ----------------------------------------------------------------------------- .keras
class V3Scope:
    """Weights in a Keras 3 `model.weights.h5`: `<path>/layers/<key>/vars/<i>`."""

    def __init__(self, h5, path, where):
        self.h5 = h5
        self.path = path
        self.where = where

    def _child(self, key):
        return f"{self.path}/layers/{key}" if self.path else f"layers/{key}"

    def layer_weights(self, key, lname):
        path = self._child(key)
        if path not in self.h5 and not self.path and f"_layer_checkpoint_dependencies/{key}" in self.h5:
            path = f"_layer_checkpoint_dependencies/{key}"   # Keras 2.13-2.15 .keras files
        if path not in self.h5 or "vars" not in self.h5[path]:
            return []
        group = self.h5[path]["vars"]
        names = list(group.keys())
        if not all(n.isdigit() for n in names) or sorted(int(n) for n in names) != list(range(len(names))):
            raise ModelFileError(f"{self.where}: layer '{lname}': weights at '{path}/vars' are not "
                                 f"numbered 0..{len(names) - 1} ({names[:8]})")
        return [(f"{path}/vars/{i}", group[str(i)]) for i in range(len(names))]

    def nested(self, key, lname):
        return V3Scope(self.h5, self._child(key), self.where)


def _import_keras_zip(path):
    from fastcnn.importers.keras.model import Importer
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        if "config.json" not in names:
            if names and all(n.endswith(".npy") for n in names):
                raise ModelFileError(f"{path}: a NumPy .npz archive, not a Keras model; arrays of "
                                     f"weights load into a network built with fastcnn.nn "
                                     f"(net.load_weights({os.path.basename(path)!r}))")
            raise ModelFileError(f"{path}: a zip archive without config.json: not a Keras .keras file "
                                 f"(members: {', '.join(names[:6])}{'...' if len(names) > 6 else ''})")
        for member in ("config.json", "metadata.json"):
            if member in names and zf.getinfo(member).file_size > MAX_CONFIG_BYTES:
                raise ModelFileError(f"{path}: {member} is larger than {MAX_CONFIG_BYTES >> 20} MB")
        cfg = _parse_config(path, zf.read("config.json"), "config.json")
        version = None
        if "metadata.json" in names:
            version = _parse_config(path, zf.read("metadata.json"), "metadata.json").get("keras_version")
        if "model.weights.h5" not in names:
            extra = " (weights stored as .npz, which fastcnn does not read)" if "model.weights.npz" in names else ""
            raise ModelFileError(f"{path}: the archive has no model.weights.h5{extra}")
        # A zip bomb must not inflate into memory: stored weights may compress well (zeros),
        # but not beyond what a real archive does.
        inflated, archive = zf.getinfo("model.weights.h5").file_size, os.path.getsize(path)
        if inflated > max(MAX_CONFIG_BYTES, 16 * archive):
            raise ModelFileError(f"{path}: model.weights.h5 would inflate to {inflated:,} bytes "
                                 f"from a {archive:,}-byte archive; refused")
        data = zf.read("model.weights.h5")
    h5py = _require_h5py()
    imp = Importer(path, _keras3(version, default=True))
    imp.model_class(cfg)   # refuse a subclassed model before reading any weights
    check_global_heaps(data, f"{path}: model.weights.h5")
    with h5py.File(io.BytesIO(data), "r") as h5:
        graph = imp.convert(cfg, V3Scope(h5, "", path))
    graph.metadata["keras_version"] = _version_text(version)
    return graph


def _version_text(version) -> str:
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    return str(version) if version is not None else ""

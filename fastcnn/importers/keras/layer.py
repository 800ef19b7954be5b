"""`Layer`: one Keras layer's config, read as data, with its weights and error helpers.

Every config key a converter reads is recorded. After conversion, keys nobody read are checked:
known-harmless keys (initializers, regularizers, constraints, training-only settings) are
ignored, an unread key whose value is off (None, False, 0, empty) is ignored too (a newer Keras
adding an option that is not in use), and any other unread key is refused: fastcnn would
otherwise silently compute something else than the model.
"""
from __future__ import annotations

import numbers

import numpy as np

from fastcnn.errors import ModelFileError, UnsupportedOpError

MISSING = object()

# Config keys that never change what a layer computes at inference.
IGNORED_KEYS = {
    "name", "trainable", "dtype", "autocast", "batch_input_shape", "batch_shape", "input_shape",
    "input_dim", "synchronized", "momentum", "renorm_momentum", "seed", "rate", "noise_shape",
    "stddev", "l1", "l2", "build_config", "supports_masking",
}
IGNORED_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
# Dtype policies whose variables are float32; fastcnn computes them in float32.
FLOAT_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def _is_off(value) -> bool:
    return value is None or value is False or (isinstance(value, (str, list, dict, tuple)) and not value) \
        or (isinstance(value, numbers.Number) and not isinstance(value, bool) and value == 0)


def policy_name(dtype) -> str | None:
    """The dtype policy name of a layer config's 'dtype' entry (a string or a serialized
    DTypePolicy), or None when absent."""
    if dtype is None or isinstance(dtype, str):
        return dtype
    if isinstance(dtype, dict):
        cfg = dtype.get("config")
        if isinstance(cfg, dict) and isinstance(cfg.get("name"), str):
            return cfg["name"]
    return repr(dtype)[:80]


class Layer:
    """A Keras layer being converted.

    cls: class name; cfg: its config dict; name: layer name; fetch_weights: callable returning the
    layer's stored weights as a list of (name, dataset) in storage order.
    """

    def __init__(self, importer, cls: str, cfg: dict, name: str, fetch_weights):
        self.imp = importer
        self.b = importer.builder
        self.cls = cls
        self.cfg = cfg
        self.name = name
        self._fetch = fetch_weights
        self._read = set()
        self._weights = {}
        self.base = name   # prefix of the IR names of this call (set per call by the walker)

    # -------------------------------------------------------------- errors
    @property
    def where(self) -> str:
        return f"{self.imp.where}: layer '{self.name}' ({self.cls})"

    def refuse(self, msg: str):
        raise UnsupportedOpError(f"{self.where}: {msg}")

    def fail(self, msg: str):
        raise ModelFileError(f"{self.where}: {msg}")

    # -------------------------------------------------------------- config
    def get(self, key: str, default=MISSING):
        self._read.add(key)
        if key in self.cfg:
            return self.cfg[key]
        if default is MISSING:
            self.fail(f"config has no '{key}'")
        return default

    def flag(self, key: str, default: bool) -> bool:
        v = self.get(key, default)
        if not isinstance(v, bool):
            self.fail(f"'{key}' must be true or false, got {v!r:.60}")
        return v

    def number(self, key: str, default=MISSING) -> float:
        v = self.get(key, default)
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or v != v:
            self.fail(f"'{key}' must be a number, got {v!r:.60}")
        return float(v)

    def ints(self, key: str, n: int, default=MISSING, lo: int = 1) -> tuple:
        """An int or a list of n ints (kernel_size, strides, ...), each >= lo."""
        v = self.get(key, default)
        if isinstance(v, numbers.Integral) and not isinstance(v, bool):
            v = [v] * n
        if not isinstance(v, (list, tuple)) or len(v) != n or \
                not all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in v):
            self.fail(f"'{key}' must be an int or a list of {n} ints, got {v!r:.80}")
        if any(x < lo or x >= 1 << 31 for x in v):
            self.fail(f"'{key}' values must be >= {lo}, got {list(v)}")
        return tuple(int(x) for x in v)

    def choice(self, key: str, options, default=MISSING) -> str:
        v = self.get(key, default)
        if isinstance(v, str):
            v = v.lower()
        if v not in options:
            self.refuse(f"{key}={v!r:.60} is not supported (supported: {', '.join(map(str, options))})")
        return v

    def ignore_options(self) -> None:
        """Every config option of this layer is irrelevant at inference."""
        self._read.update(self.cfg)

    def data_format(self) -> str:
        v = self.get("data_format", None)
        if v is None:
            return "channels_last"
        if v not in ("channels_last", "channels_first"):
            self.fail(f"data_format must be channels_last or channels_first, got {v!r:.60}")
        return v

    def check_config(self) -> None:
        """Refuse unread config keys that are switched on (see module docstring), and dtype
        policies that are not float32 variables."""
        policy = policy_name(self.cfg.get("dtype"))
        if policy is not None and policy not in FLOAT_POLICIES:
            self.refuse(f"dtype policy {policy!r} is not supported (fastcnn computes in float32; "
                        f"supported policies: {', '.join(FLOAT_POLICIES)})")
        for key, value in self.cfg.items():
            if key in self._read or key in IGNORED_KEYS or key.endswith(IGNORED_SUFFIXES):
                continue
            if not _is_off(value):
                self.refuse(f"config option {key}={value!r:.80} is not supported")

    # -------------------------------------------------------------- weights
    def weights(self, spec) -> dict:
        """Read this layer's weights. spec: list of (role, expected Keras shape) in storage order
        (trainable weights first, as Keras stores them). Returns role -> float32 array.
        Raises ModelFileError naming the layer, the weight, expected and actual shapes."""
        key = tuple((r, tuple(s)) for r, s in spec)
        if key not in self._weights:
            self._weights[key] = self._read_weights(spec)
        return self._weights[key]

    def _read_weights(self, spec) -> dict:
        stored = self._fetch()
        if len(stored) != len(spec):
            want = ", ".join(f"{r} {list(s)}" for r, s in spec) or "none"
            have = ", ".join(f"'{n}' {list(d.shape)}" for n, d in stored) or "none"
            self.fail(f"expected {len(spec)} weight(s) ({want}) but the file has {len(stored)} "
                      f"({have})")
        out = {}
        for (role, shape), (name, data) in zip(spec, stored):
            shape = tuple(int(d) for d in shape)
            got = tuple(getattr(data, "shape", ()))
            if got != shape:
                self.fail(f"weight '{name}' ({role}) has shape {list(got)}; expected {list(shape)}")
            kind = np.dtype(getattr(data, "dtype", np.float32)).kind
            if kind not in "fiu":
                self.fail(f"weight '{name}' ({role}) has dtype {data.dtype}; expected float32")
            try:
                arr = np.array(data[()] if hasattr(data, "id") else data, dtype=np.float32)
            except Exception as e:  # h5py raises many kinds on corrupt data
                self.fail(f"cannot read weight '{name}' ({role}): {e}")
            if arr.shape != shape:
                self.fail(f"weight '{name}' ({role}) has shape {list(arr.shape)}; expected {list(shape)}")
            arr.setflags(write=False)
            out[role] = arr
        return out

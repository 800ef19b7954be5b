"""The frozen trunk: run it on input batches and shape its output as the head's input rows.

Rows per sample: 1 for a dense head, (features (N, k)); for a 1x1-conv head with an activation
before its pool, one row per spatial position: (N, C, *spatial) -> (N * positions, C), sample-major.
"""
from __future__ import annotations

import numpy as np

from fastcnn.errors import FineTuneError
from fastcnn.finetune.graphs import trunk_graph
from fastcnn.finetune.head import HeadSpec
from fastcnn.model import Model

FEATURE_BATCH = 64


def check_inputs(x, spec, where: str, what: str = "x") -> np.ndarray:
    """x as a float32 array shaped like the model input `spec` (TensorSpec), any batch size."""
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise FineTuneError(f"{where}: {what} must be a numeric array ({e})") from None
    expect = "[" + ", ".join("N" if d is None else str(d) for d in spec.shape) + "]"
    if arr.ndim != len(spec.shape) or any(d is not None and d != a
                                          for d, a in zip(spec.shape[1:], arr.shape[1:])):
        raise FineTuneError(f"{where}: {what} has shape {list(arr.shape)}; the model input "
                            f"'{spec.name}' takes {expect} (any number of samples N)"
                            + (f", layout {spec.layout}" if spec.layout else ""))
    if arr.shape[0] == 0:
        raise FineTuneError(f"{where}: {what} holds no samples")
    if not np.all(np.isfinite(arr)):
        raise FineTuneError(f"{where}: {what} contains NaN or infinity")
    return arr


def run_batched(model: Model, x: np.ndarray, output: str, batch_size: int) -> np.ndarray:
    """model's output `output` for every sample of x, in batches. A model whose batch dimension
    is fixed gets exactly that many samples per call (the last call padded with zeros)."""
    fixed = model.inputs[0].shape[0]
    step = fixed if isinstance(fixed, int) else max(1, int(batch_size))
    name = model.inputs[0].name
    parts = []
    for start in range(0, x.shape[0], step):
        chunk = x[start:start + step]
        if isinstance(fixed, int) and chunk.shape[0] < fixed:
            pad = np.zeros((fixed - chunk.shape[0],) + chunk.shape[1:], np.float32)
            chunk = np.concatenate([chunk, pad])
            parts.append(model.run([output], {name: chunk})[0][:x.shape[0] - start])
        else:
            parts.append(model.run([output], {name: np.ascontiguousarray(chunk)})[0])
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


class Trunk:
    """Everything before the head, as a Model of its own (None when the head reads the model
    input directly)."""

    def __init__(self, model: Model, spec: HeadSpec, num_threads: int):
        self.spec = spec
        self.input = model.inputs[0]
        self.where = model.graph.where()
        g = trunk_graph(model.graph, spec)
        self.model = Model(g, num_threads=num_threads) if g is not None else None
        self.width = spec.layers[0].in_features

    @property
    def rows_per_sample(self) -> int:
        return self.spec.positions

    def rows(self, x: np.ndarray, batch_size: int = FEATURE_BATCH) -> np.ndarray:
        """x (N, *input shape) float32 -> head input rows (N * rows_per_sample, k) float32."""
        if self.model is None:
            feats = x
        else:
            feats = run_batched(self.model, x, self.spec.features, batch_size)
        n = feats.shape[0]
        if self.spec.pool_features:
            feats = feats.reshape(n, feats.shape[1], -1).mean(axis=2)
        elif self.spec.positions > 1:
            feats = np.moveaxis(feats.reshape(n, feats.shape[1], -1), 1, 2)
        return np.ascontiguousarray(feats.reshape(n * self.spec.positions, self.width),
                                    dtype=np.float32)

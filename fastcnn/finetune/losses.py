"""Losses: target checking in Python, value and gradient in one Cython kernel each.

Every loss reads the head's output (b, n): the last dense layer after its activation (and, for a
1x1-conv head, after the global pool), before any Softmax/LogSoftmax that follows in the model;
the model keeps that softmax at inference. Sigmoid cross-entropy reads the pre-activation logits
when the last layer's activation is itself a Sigmoid (the stable fused form).

    softmax_cross_entropy  y: class indices (N,) int        mean over samples (class-weighted)
    sigmoid_cross_entropy  y: (N, n) 0/1 (or probabilities)  mean over all N*n entries
    mse                    y: (N, n) float, or indices (N,) taken as one-hot  mean over N*n
"""
from __future__ import annotations

import numpy as np

from fastcnn._kernels import train as kernels
from fastcnn.errors import FineTuneError


def _int_labels(y, n, what):
    y = np.asarray(y)
    if y.ndim != 1:
        raise FineTuneError(f"{what}: expected class indices of shape (N,), got shape {list(y.shape)}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise FineTuneError(f"{what}: class indices must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= n):
        raise FineTuneError(f"{what}: class indices must be in [0, {n}) for a {n}-class head; got "
                            f"values from {int(y.min())} to {int(y.max())} (raise num_classes?)")
    return np.ascontiguousarray(y)


def _matrix(y, n, what, unit=False):
    y = np.asarray(y)
    if y.ndim != 2 or y.shape[1] != n:
        raise FineTuneError(f"{what}: expected targets of shape (N, {n}), got shape {list(y.shape)}")
    y = np.ascontiguousarray(y, np.float32)
    if not np.all(np.isfinite(y)):
        raise FineTuneError(f"{what}: targets contain NaN or infinity")
    if unit and y.size and (y.min() < 0 or y.max() > 1):
        raise FineTuneError(f"{what}: multi-label targets must lie in [0, 1] (a 0/1 matrix); got "
                            f"values from {float(y.min())} to {float(y.max())}")
    return y


class SoftmaxCrossEntropy:
    name = "softmax_cross_entropy"

    def targets(self, y, n, what="y"):
        return _int_labels(y, n, what)

    def value_and_grad(self, out, targets, class_weights, grad, num_threads):
        return kernels.softmax_cross_entropy(out, targets, class_weights, grad, num_threads)

    def correct(self, out, targets):
        """(number right, number judged): argmax against the class index."""
        return int(np.count_nonzero(np.argmax(out, axis=1) == targets)), len(targets)


class SigmoidCrossEntropy:
    name = "sigmoid_cross_entropy"

    def targets(self, y, n, what="y"):
        return _matrix(y, n, what, unit=True)

    def value_and_grad(self, out, targets, class_weights, grad, num_threads):
        return kernels.sigmoid_cross_entropy(out, targets, class_weights, grad, num_threads)

    def correct(self, out, targets):
        """Per-label accuracy: logit > 0 against target > 0.5."""
        return int(np.count_nonzero((out > 0) == (targets > 0.5))), targets.size


class MeanSquaredError:
    name = "mse"

    def targets(self, y, n, what="y"):
        y = np.asarray(y)
        if y.ndim == 1:
            labels = _int_labels(y, n, what)
            onehot = np.zeros((len(labels), n), np.float32)
            onehot[np.arange(len(labels)), labels] = 1.0
            return onehot
        return _matrix(y, n, what)

    def value_and_grad(self, out, targets, class_weights, grad, num_threads):
        return kernels.mean_squared_error(out, targets, class_weights, grad, num_threads)

    def correct(self, out, targets):
        """Argmax agreement, when the targets are one-hot rows; None otherwise."""
        if not np.all((targets == 0) | (targets == 1)) or not np.all(targets.sum(axis=1) == 1):
            return None
        return int(np.count_nonzero(np.argmax(out, axis=1) == np.argmax(targets, axis=1))), len(targets)


LOSSES = {cls.name: cls for cls in (SoftmaxCrossEntropy, SigmoidCrossEntropy, MeanSquaredError)}


def class_weight_vector(class_weights, targets, n) -> np.ndarray:
    """class_weights: None, "balanced" or a sequence of n non-negative numbers -> (n,) float32
    (empty for None). "balanced" gives count-inverse weights N / (n * count_c) (classes absent
    from the data get 1)."""
    if class_weights is None:
        return np.zeros(0, np.float32)
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise FineTuneError(f"class_weights must be None, 'balanced' or {n} numbers, got "
                                f"{class_weights!r}")
        counts = (np.bincount(targets, minlength=n) if targets.ndim == 1
                  else (targets > 0.5).sum(axis=0)).astype(np.float64)
        total = counts.sum()
        w = np.where(counts > 0, total / (n * np.maximum(counts, 1)), 1.0)
        return w.astype(np.float32)
    w = np.asarray(class_weights, np.float64).reshape(-1)
    if w.shape[0] != n or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise FineTuneError(f"class_weights must hold {n} finite non-negative numbers (one per "
                            f"class), got {list(np.asarray(class_weights).reshape(-1))[:12]}")
    return w.astype(np.float32)

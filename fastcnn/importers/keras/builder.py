"""IR emission for the Keras importer, and the layout of every Keras tensor.

Keras tensors are channels-last (N, H, W, C); fastcnn's kernels compute NCHW. Rather than
transposing around every layer, each Keras tensor is a `KTensor` that records how its IR value is
laid out: the IR value is `np.transpose(keras_tensor, perm)`. A layer states the layout it needs
(`Builder.to_perm`); a Transpose is emitted only when the tensor is not already in it, and at most
once per (tensor, layout). Layers that do not care (activations, padding, cropping, Permute) keep
whatever layout they receive, so a channels-last network runs NCHW from its first convolution to
its last, with one Transpose after the input and one before a Flatten or a 4-D output.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastcnn.ir.graph import Node


@dataclass(frozen=True)
class KTensor:
    """One Keras tensor.

    value: IR value name.
    shape: Keras shape, batch first; None for a dynamic dim.
    perm:  IR value = transpose(Keras tensor, perm); IR axis i holds Keras axis perm[i].
    """

    value: str
    shape: tuple
    perm: tuple

    @property
    def rank(self) -> int:
        return len(self.shape)

    def ir_axis(self, keras_axis: int) -> int:
        """The IR axis holding Keras axis `keras_axis` (negative counts from the end)."""
        return self.perm.index(keras_axis % self.rank)

    def ir_shape(self) -> tuple:
        return tuple(self.shape[p] for p in self.perm)

    def transposed(self, q) -> "KTensor":
        """This tensor as Keras' transpose(x, q) sees it (q keeps the batch axis 0 first): the
        IR value does not move, only its description in Keras axes changes."""
        inv_q = [q.index(i) for i in range(self.rank)]
        return KTensor(self.value, tuple(self.shape[a] for a in q), tuple(inv_q[p] for p in self.perm))


def identity_perm(rank: int) -> tuple:
    return tuple(range(rank))


def channels_first_perm(rank: int) -> tuple:
    """Keras channels-last (N, *spatial, C) seen as IR (N, C, *spatial)."""
    return (0, rank - 1) + tuple(range(1, rank - 1))


def keras_const(value, t: KTensor) -> np.ndarray:
    """A constant given in Keras axis order that broadcasts against `t` (numpy rules, aligned
    on the trailing Keras axes), laid out like t's IR value: float32, full rank."""
    v = np.asarray(value, np.float32)
    v = v.reshape((1,) * (t.rank - v.ndim) + v.shape)
    return np.ascontiguousarray(np.transpose(v, t.perm))


class Builder:
    """Accumulates IR nodes, initializers and graph inputs while a Keras model is converted."""

    def __init__(self, where: str):
        self.where = where
        self.nodes = []
        self.initializers = {}
        self.inputs = []
        self._used = set()         # value names
        self._node_names = set()
        self._transposed = {}   # (value, perm) -> KTensor already emitted

    # -------------------------------------------------------------- names
    def reserve(self, name: str) -> None:
        self._used.add(name)

    def fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self._used:
            k += 1
            name = f"{base}_{k}"
        self._used.add(name)
        return name

    # -------------------------------------------------------------- emission
    def const(self, base: str, array) -> str:
        name = self.fresh(base)
        arr = np.asarray(array)
        arr.setflags(write=False)
        self.initializers[name] = arr
        return name

    def ints(self, base: str, values) -> str:
        return self.const(base, np.asarray(values, np.int64).reshape(-1))

    def emit(self, op: str, inputs, base: str, attrs=None, n_out: int = 1):
        """Append a node; returns its output value name (or the list of names when n_out > 1)."""
        outs = [self.fresh(base if n_out == 1 else f"{base}_{i}") for i in range(n_out)]
        name, k = base, 0
        while name in self._node_names:
            k += 1
            name = f"{base}_{k}"
        self._node_names.add(name)
        self.nodes.append(Node(op, name, list(inputs), outs, dict(attrs or {})))
        return outs[0] if n_out == 1 else outs

    # -------------------------------------------------------------- layout
    def to_perm(self, t: KTensor, perm) -> KTensor:
        """`t` with its IR value laid out as transpose(Keras tensor, perm)."""
        perm = tuple(perm)
        if t.perm == perm:
            return t
        key = (t.value, perm)
        if key not in self._transposed:
            # ir_old axis j holds Keras axis t.perm[j]; the new IR axis i holds Keras axis perm[i]
            q = [t.perm.index(p) for p in perm]
            out = self.emit("Transpose", [t.value], f"{t.value}/transpose", {"perm": q})
            self._transposed[key] = KTensor(out, t.shape, perm)
        return self._transposed[key]

    def keras_order(self, t: KTensor) -> KTensor:
        return self.to_perm(t, identity_perm(t.rank))

    def channels_first(self, t: KTensor) -> KTensor:
        return self.to_perm(t, channels_first_perm(t.rank))

    def unary(self, op: str, t: KTensor, base: str, attrs=None) -> KTensor:
        """An elementwise op: the layout is kept."""
        return KTensor(self.emit(op, [t.value], base, attrs), t.shape, t.perm)

    def binary_const(self, op: str, t: KTensor, value, base: str) -> KTensor:
        """t (op) constant, the constant given in Keras axis order (broadcast from the right)."""
        c = self.const(f"{base}/const", keras_const(value, t))
        return KTensor(self.emit(op, [t.value, c], base), t.shape, t.perm)

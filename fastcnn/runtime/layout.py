"""Small helpers to express tensor ops as strided walks over flat buffers."""
from __future__ import annotations

import numpy as np


def c_strides(shape) -> list:
    """Element strides of a C-contiguous array of `shape`."""
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def flat(a: np.ndarray) -> np.ndarray:
    """1-D view of a C-contiguous array (no copy)."""
    return a.reshape(-1)


def collapse(shape, *stride_lists):
    """Merge adjacent dims that are contiguous in every stride list; drop size-1 dims.

    Returns (shape, [strides...]) with at least one dim. Used to keep strided walks short."""
    dims = [(d, [s[i] for s in stride_lists]) for i, d in enumerate(shape) if d != 1]
    if not dims:
        return [1], [[0] for _ in stride_lists]
    out = [dims[0]]
    for d, st in dims[1:]:
        pd, pst = out[-1]
        if all(ps == s * d for ps, s in zip(pst, st)):
            out[-1] = (pd * d, st)
        else:
            out.append((d, st))
    return [d for d, _ in out], [[st[k] for _, st in out] for k in range(len(stride_lists))]


def broadcast_strides(in_shape, out_shape) -> list:
    """Element strides to read a C-contiguous `in_shape` array broadcast to `out_shape`."""
    strides = c_strides(in_shape)
    pad = len(out_shape) - len(in_shape)
    out = []
    for k, d in enumerate(out_shape):
        j = k - pad
        if j < 0 or in_shape[j] == 1:
            out.append(0)
        else:
            out.append(strides[j])
    return out

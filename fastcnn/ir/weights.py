"""Weights scaled per output channel: how a folded BatchNormalization's scale becomes weights.

A Conv's `weight_scale` attribute (one value per output channel, from passes/batchnorm.py) says
its weights are W * weight_scale[c]: the graph keeps W as it was read (for an .onnx file, the
file's own bytes, mapped) and the scaled weights are made where they are packed, a layer at a
time, and dropped once packed; the packer into 16-channel panels (conv_tile.pack_tile_weights:
1x1 and tile convs) applies the scale as it packs, with the same rounding, and makes no scaled
copy. Scaling every layer at once in the pass held a second copy of all the weights beside the
packed ones (ResNet-18: 45 MiB of 200 at its peak).
"""
from __future__ import annotations

import numpy as np


def scaled(w, per, alpha=1.0) -> np.ndarray:
    """w * per (* alpha), per broadcasting over w, as a new float32 array: products in float64,
    rounded once. numpy casts block by block, with no float64 copy of w (ResNet-18's folding
    took 1.5x as long with one); an alpha other than 1 (a Gemm's) is applied in float64 too."""
    if alpha != 1.0:
        return (np.multiply(w, per, dtype=np.float64) * alpha).astype(np.float32)
    out = np.empty(np.broadcast_shapes(w.shape, per.shape), np.float32)
    np.multiply(w, per, out=out, dtype=np.float64, casting="same_kind")
    return out


def weight_scale_of(attrs) -> np.ndarray | None:
    """A Conv's weight_scale as (c_out,) float64, or None when it has none (absent or empty).
    The attribute is a list of floats (a graph built by hand or read from a file) or, as the
    BatchNorm pass writes it, a read-only float64 array: no list of Python floats to build and
    check again at every inference (MobileNetV2: 17k values, 1 ms a check)."""
    s = attrs.get("weight_scale")
    if s is None or len(s) == 0:
        return None
    return np.asarray(s, np.float64)


def frozen_scale(values) -> np.ndarray:
    """values as a new read-only float64 array: how a pass stores a weight_scale (attributes
    are shared between copies of a graph, so none may change in place)."""
    a = np.array(values, np.float64).reshape(-1)
    a.flags.writeable = False
    return a


def conv_weights(w, weight_scale) -> np.ndarray:
    """A Conv's weights W (c_out, c_in/group, *kernel) with its weight_scale (c_out values, or
    empty) applied: W itself when there is no scale, else a new float32 array."""
    if weight_scale is None or len(weight_scale) == 0:
        return w
    scale = np.ascontiguousarray(weight_scale, np.float64)
    if w.dtype == np.float32 and w.flags.c_contiguous and scale.shape == (w.shape[0],):
        from fastcnn._kernels.copy import scale_rows   # the same bits, in one pass
        return scale_rows(w.reshape(w.shape[0], -1), scale).reshape(w.shape)
    return scaled(w, scale.reshape((w.shape[0],) + (1,) * (w.ndim - 1)))


def without_weight_scales(graph):
    """A copy of `graph` whose Convs carry their scaled weights and no weight_scale (for a file
    format or a consumer that reads weights as they are); `graph` itself if none has one."""
    if not any(n.op == "Conv" and weight_scale_of(n.attrs) is not None for n in graph.nodes):
        return graph
    g = graph.copy()
    used = g.used_names()
    replaced = set()
    for node in g.nodes:
        scale = weight_scale_of(node.attrs) if node.op == "Conv" else None
        if scale is not None:
            w = np.asarray(g.initializers[node.inputs[1]])
            name = g.add_initializer(f"{node.name}_w_folded", conv_weights(w, scale), used)
            replaced.add(node.inputs[1])
            node.inputs = [node.inputs[0], name] + list(node.inputs[2:])
            del node.attrs["weight_scale"]
    still_read = {x for n in g.nodes for x in n.inputs} | {t.name for t in g.outputs}
    for name in replaced - still_read:
        del g.initializers[name]
    g.passes_applied = graph.passes_applied
    return g

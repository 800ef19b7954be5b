"""Fold a zero Pad into the convolution or average pool that reads it:

    Conv(Pad(x, pads, 0))                              -> Conv(x, pads = pads + conv's pads)
    AveragePool(Pad(x, pads, 0), count_include_pad=1)  -> AveragePool(x, pads = pads + pool's)

when the Pad is constant-mode with value 0 (or none), pads only the spatial axes, by amounts
>= 0, and the window node is its only reader. TensorFlow's 'same' convolutions with stride 2
pad asymmetrically, so Keras models (ZeroPadding2D before a strided conv, as MobileNetV2/V3 and
ResNet50 from keras.applications have) and tf2onnx exports carry such a Pad: it copied the whole
activation once more (a quarter of Keras' MobileNetV3Small at batch 1). The window kernels take
any asymmetric padding.
"""
from __future__ import annotations

import numpy as np

from fastcnn.ir.graph import Graph
from fastcnn.passes.analysis import readers_index, scalar_const, single_consumer


def _spatial_pads(graph: Graph, pad) -> list | None:
    """The Pad's (begin..., end...) amounts over the spatial axes of an (N, C, *spatial) input,
    when it is a zero constant pad of those axes only; else None."""
    if pad.attrs.get("mode", "constant") != "constant" or len(pad.inputs) < 2:
        return None
    amounts = graph.initializers.get(pad.inputs[1])
    if amounts is None or np.ndim(amounts) != 1 or np.size(amounts) % 2:
        return None
    if len(pad.inputs) > 2 and pad.inputs[2] and scalar_const(graph, pad.inputs[2]) != 0.0:
        return None
    amounts = [int(v) for v in np.asarray(amounts)]
    k = len(amounts) // 2
    axes = list(range(k))
    if len(pad.inputs) > 3 and pad.inputs[3]:
        given = graph.initializers.get(pad.inputs[3])
        if given is None or np.ndim(given) != 1 or np.size(given) != k or any(int(a) < 0 for a in given):
            return None   # negative axes need the rank: such a Pad stays as it is
        axes = [int(a) for a in given]
    begin, end = dict(zip(axes, amounts[:k])), dict(zip(axes, amounts[k:]))
    if any(v < 0 for v in amounts) or any(begin.get(a, 0) or end.get(a, 0) for a in (0, 1)):
        return None
    rank = max(axes + [1]) + 1 if len(pad.inputs) > 3 and pad.inputs[3] else k
    spatial = range(2, rank)
    return [begin.get(a, 0) for a in spatial] + [end.get(a, 0) for a in spatial]


def _foldable(node) -> bool:
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return False
    if node.op == "Conv":
        return True
    return node.op == "AveragePool" and int(node.attrs.get("count_include_pad", 0)) == 1


def fold_pad_into_window(graph: Graph) -> Graph:
    if not any(n.op == "Pad" for n in graph.nodes):
        return graph
    g = graph.copy()
    readers = readers_index(g)
    removed = set()
    for pad in g.nodes:
        if pad.op != "Pad":
            continue
        reader = single_consumer(g, pad.outputs[0], readers)
        if reader is None or reader.op not in ("Conv", "AveragePool") or reader.inputs[0] != pad.outputs[0] \
                or not _foldable(reader):
            continue
        amounts = _spatial_pads(g, pad)
        if amounts is None or not 1 <= len(amounts) // 2 <= 2:
            continue
        own = [0] * len(amounts) if reader.attrs.get("auto_pad", "NOTSET") == "VALID" else \
            list(reader.attrs.get("pads") or [0] * len(amounts))
        if len(own) != len(amounts):
            continue
        reader.inputs[0] = pad.inputs[0]
        reader.attrs["pads"] = [a + b for a, b in zip(own, amounts)]
        reader.attrs["auto_pad"] = "NOTSET"
        removed.add(id(pad))
    if not removed:
        return graph
    g.nodes = [n for n in g.nodes if id(n) not in removed]
    return g

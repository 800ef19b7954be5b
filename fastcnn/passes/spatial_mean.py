"""Spatial means as global average pools:

    ReduceMean(x, axes=[2, ..., r-1], keepdims=1)   -> GlobalAveragePool(x)
    ReduceMean(x, axes=[2, ..., r-1], keepdims=0)   -> Flatten(GlobalAveragePool(x), axis=1)

for x of rank 3 or 4 (N, C, *spatial). PyTorch's dynamo exporter writes AdaptiveAvgPool2d(1) and
x.mean((2, 3)) this way (the TorchScript exporter wrote GlobalAveragePool). The pool reads a
blocked conv output directly, and the fine-tuner knows a 1x1 conv before it as a
SqueezeNet-style head.
"""
from __future__ import annotations

import numpy as np

from fastcnn.ir.graph import Graph, Node
from fastcnn.passes.analysis import specimens_or_none


def _spatial_mean(graph: Graph, node, ranks) -> bool:
    """Whether `node` is a ReduceMean over exactly the axes after the channels."""
    if node.op != "ReduceMean" or len(node.inputs) != 2:
        return False
    r = ranks.get(node.inputs[0])
    axes = graph.initializers.get(node.inputs[1])
    if r not in (3, 4) or axes is None or np.ndim(axes) != 1:
        return False
    return sorted(int(a) % r for a in np.asarray(axes)) == list(range(2, r))


def spatial_mean_to_pool(graph: Graph) -> Graph:
    if not any(n.op == "ReduceMean" for n in graph.nodes):
        return graph
    found = specimens_or_none(graph)
    if found is None:
        return graph
    ranks = {k: len(t.shape) for k, t in found[0].types.items()}
    if not any(_spatial_mean(graph, n, ranks) for n in graph.nodes):
        return graph
    g = graph.copy()
    used = g.used_names()
    nodes = []
    for node in g.nodes:
        if not _spatial_mean(g, node, ranks):
            nodes.append(node)
        elif int(node.attrs.get("keepdims", 1)):
            nodes.append(Node("GlobalAveragePool", node.name, [node.inputs[0]], list(node.outputs), {}))
        else:
            pooled = g.unique_name(f"{node.outputs[0]}/pooled", used)
            nodes.append(Node("GlobalAveragePool", g.unique_name(f"{node.name}/pool", used), [node.inputs[0]],
                              [pooled], {}))
            nodes.append(Node("Flatten", node.name, [pooled], list(node.outputs), {"axis": 1}))
    g.nodes = nodes
    return g

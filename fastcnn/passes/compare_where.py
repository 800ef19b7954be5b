"""Fuse a comparison computed at run time into the Where, or the Cast to float32, that reads it:

    Where(Greater(a, b), x, y)          -> Where(a, b, x, y, compare="Greater")
    Where(Not(Less(a, b)), x, y)        -> Where(a, b, y, x, compare="Less")
    Cast(Greater(a, b), to=float32)     -> Where(a, b, 1, 0, compare="Greater")
    Cast(Not(Greater(a, b)), float32)   -> Where(a, b, 0, 1, compare="Greater")

fastcnn runs float32 tensors only, so a bool tensor computed at run time was refused: these are
how exporters write x > t ? x : f(x) (torch.where; F.softplus's threshold under torch.onnx's
dynamo exporter) and 0/1 masks. With the comparison inside the Where no bool tensor is left.
Swapping x and y for a Not is exact for NaN too (a comparison with NaN is false either way).
A comparison something else also reads stays for that reader (and is refused at run time as
before); one nothing reads any more goes with the dead nodes. Comparisons of constants were
folded before this pass; one left (too large to fold) folds as the fused Where.
"""
from __future__ import annotations

import numpy as np

from fastcnn.ir.graph import Graph
from fastcnn.ir.shapes import WHERE_COMPARES


def _frozen(value: float) -> np.ndarray:
    """A read-only float32 scalar, as initializers are."""
    v = np.array(value, np.float32)
    v.setflags(write=False)
    return v


def _comparison(graph: Graph, producers: dict, value: str):
    """(compare, a, b, negated) when `value` is a comparison of two values, through any number
    of Not nodes; else None. producers: `graph.producers()`."""
    def producer(name):
        i = producers.get(name)
        return graph.nodes[i] if i is not None else None

    negated = False
    node = producer(value)
    while node is not None and node.op == "Not" and len(node.inputs) == 1:
        negated = not negated
        node = producer(node.inputs[0])
    if node is None or node.op not in WHERE_COMPARES or len(node.inputs) != 2 or not all(node.inputs):
        return None
    return node.op, node.inputs[0], node.inputs[1], negated


def fuse_compare_where(graph: Graph) -> Graph:
    if not any(n.op in WHERE_COMPARES for n in graph.nodes):
        return graph
    producers = graph.producers()
    targets = []
    for i, node in enumerate(graph.nodes):
        if node.op == "Where" and not node.attrs.get("compare") and len(node.inputs) == 3:
            found = _comparison(graph, producers, node.inputs[0])
        elif node.op == "Cast" and node.attrs.get("to") == "float32" and len(node.inputs) == 1:
            found = _comparison(graph, producers, node.inputs[0])
        else:
            continue
        if found is not None:
            targets.append((i, found))
    if not targets:
        return graph
    g = graph.copy()
    one = zero = None
    for i, (compare, a, b, negated) in targets:
        node = g.nodes[i]
        if node.op == "Where":
            x, y = node.inputs[1], node.inputs[2]
        else:
            if one is None:
                one = g.add_initializer(f"{node.name}_one", _frozen(1.0))
                zero = g.add_initializer(f"{node.name}_zero", _frozen(0.0))
            x, y = one, zero
        if negated:
            x, y = y, x
        node.op = "Where"
        node.inputs = [a, b, x, y]
        node.attrs = {"compare": compare}
    return g

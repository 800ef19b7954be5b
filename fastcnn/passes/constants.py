"""Constant folding at load: evaluate every node whose inputs do not depend on the runtime
inputs and replace its outputs by initializers.

Values that depend only on shapes which are the same for every batch size (e.g. Shape of a
weight, or Shape of an activation without dynamic dims) fold too; shape arithmetic that depends
on the dynamic batch is left to the planner, which folds it per input shape.
"""
from __future__ import annotations

import numpy as np

from fastcnn.ir.graph import Graph
from fastcnn.passes.analysis import specimens_or_none

# A folded tensor may grow at most this much beyond the constants it is computed from
# (ConstantOfShape, Expand and Tile can make huge tensors from tiny inputs; keep those lazy).
GROWTH_ALLOWANCE = 1 << 16


def fold_constants(graph: Graph) -> Graph:
    from fastcnn.ir.ops import OPS

    if not _may_fold(graph, OPS):
        return graph
    specimens = specimens_or_none(graph)
    if specimens is None:
        return graph
    a, b = specimens
    g = graph.copy()
    static = set(g.initializers)
    keep = []
    for node in g.nodes:
        spec = OPS.get(node.op)
        ins = [x for x in node.inputs if x]
        if spec is None or spec.fold is None:
            keep.append(node)
            continue
        if spec.fold_on_types:
            ok = all(a.types[x] == b.types[x] for x in ins)
        else:
            ok = all(x in static for x in ins)
        outs = [o for o in node.outputs if o]
        if not ok or not all(o in a.consts and o in b.consts for o in outs):
            keep.append(node)
            continue
        in_bytes = sum(np.asarray(g.initializers[x]).nbytes for x in ins if x in g.initializers)
        out_bytes = sum(a.consts[o].nbytes for o in outs)
        if out_bytes > in_bytes + GROWTH_ALLOWANCE:
            keep.append(node)
            continue
        for o in outs:
            v = np.array(a.consts[o], copy=True)
            v.setflags(write=False)
            g.initializers[o] = v
            static.add(o)
    g.nodes = keep
    return g


def _may_fold(graph: Graph, ops) -> bool:
    """Whether some node may fold: a folding op whose inputs are all initializers, or one that
    folds on types (Shape, Size). A node's inputs become static only when a node before it
    folds, so when no node qualifies on the initializers alone none folds at all, and the two
    specimen inferences (most of this pass's time on a CNN without shape arithmetic) are not
    needed."""
    static = graph.initializers
    for node in graph.nodes:
        spec = ops.get(node.op)
        if spec is None or spec.fold is None:
            continue
        if spec.fold_on_types or all(x in static for x in node.inputs if x):
            return True
    return False

"""Remove layout transposes that cancel or can be absorbed into weights.

- Transpose(Transpose(x, p1), p2) becomes one Transpose(x, p1[p2]); an identity permutation
  becomes an Identity (removed by `remove_identities`).
- Transpose(x, p) -> Flatten(axis=1) -> Gemm/MatMul with a constant B, where p keeps the batch
  axis first: the flattened transpose is a fixed permutation of x's flattened features, so the
  rows of B are permuted instead and Flatten reads x directly. This is what a channels-last model
  (Keras) computing NCHW inside needs before its classifier: Flatten in (H, W, C) order.
"""
from __future__ import annotations

import numpy as np

from fastcnn.ir.graph import Graph
from fastcnn.passes.analysis import infer_specimens, single_consumer


def _perm(node):
    """The node's permutation when it is a valid one, else None (left for inference to refuse)."""
    p = node.attrs.get("perm")
    if not p or not isinstance(p, (list, tuple)) or sorted(p) != list(range(len(p))):
        return None
    return list(p)


def _compose_transposes(g: Graph, ranks: dict) -> bool:
    producers = {o: n for n in g.nodes for o in n.outputs if o}
    changed = False
    for node in g.nodes:
        if node.op != "Transpose" or _perm(node) is None or ranks.get(node.inputs[0]) != len(_perm(node)):
            continue
        src = producers.get(node.inputs[0])
        if src is not None and src.op == "Transpose" and _perm(src) is not None and \
                ranks.get(src.inputs[0]) == len(_perm(src)) == len(_perm(node)):
            p1, p2 = _perm(src), _perm(node)
            node.inputs = [src.inputs[0]]
            node.attrs = {"perm": [p1[i] for i in p2]}
            changed = True
        if _perm(node) == list(range(len(_perm(node)))):
            node.op, node.attrs = "Identity", {}
            changed = True
    return changed


def _fold_into_dense(g: Graph) -> bool:
    producers = {o: n for n in g.nodes for o in n.outputs if o}
    inferred = None
    for dense in g.nodes:
        if dense.op not in ("Gemm", "MatMul") or (dense.op == "Gemm" and dense.attrs.get("transA", 0)):
            continue
        flat = producers.get(dense.inputs[0])
        if flat is None or flat.op != "Flatten" or flat.attrs.get("axis", 1) != 1 or \
                single_consumer(g, flat.outputs[0]) is not dense or dense.inputs[1] == flat.outputs[0]:
            continue
        tr = producers.get(flat.inputs[0])
        if tr is None or tr.op != "Transpose" or _perm(tr) is None or _perm(tr)[0] != 0 or \
                single_consumer(g, tr.outputs[0]) is not flat:
            continue
        b = g.initializers.get(dense.inputs[1])
        if b is None or np.ndim(b) != 2:
            continue
        if inferred is None:
            inferred = infer_specimens(g)
        t1, t2 = (inf.types.get(tr.inputs[0]) for inf in inferred)
        if t1 is None or t1.shape[1:] != t2.shape[1:]:
            continue   # feature dims must not depend on the batch
        feat = t1.shape[1:]
        k = int(np.prod(feat, dtype=np.int64))
        trans_b = dense.op == "Gemm" and dense.attrs.get("transB", 0)
        if (b.shape[1] if trans_b else b.shape[0]) != k:
            continue
        # flatten(transpose(x))[j] == flatten(x)[src[j]]
        src = np.arange(k).reshape(feat).transpose([p - 1 for p in _perm(tr)[1:]]).reshape(-1)
        b_new = np.empty_like(np.asarray(b))
        if trans_b:
            b_new[:, src] = b
        else:
            b_new[src] = b
        dense.inputs = [dense.inputs[0], g.add_initializer(f"{dense.name}_b_untransposed", b_new)] + \
            list(dense.inputs[2:])
        flat.inputs = [tr.inputs[0]]
        g.nodes.remove(tr)
        return True
    return False


def fold_transposes(graph: Graph) -> Graph:
    if not any(n.op == "Transpose" for n in graph.nodes):
        return graph
    g = graph.copy()
    a, _ = infer_specimens(g)
    ranks = {k: len(t.shape) for k, t in a.types.items()}
    while _compose_transposes(g, ranks) or _fold_into_dense(g):
        pass
    return g

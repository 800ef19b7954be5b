"""Remove Identity and inference-mode Dropout nodes by rewiring their consumers."""
from __future__ import annotations

from fastcnn.ir.graph import Graph


def remove_identities(graph: Graph) -> Graph:
    if not any(n.op in ("Identity", "Dropout") for n in graph.nodes):
        return graph
    g = graph.copy()
    outputs = {t.name for t in g.outputs}
    inputs = {t.name for t in g.inputs}
    producers = g.producers()
    rename = {}
    keep = []
    for node in g.nodes:
        node.inputs = [rename.get(x, x) for x in node.inputs]
        if node.op not in ("Identity", "Dropout") or (len(node.outputs) > 1 and node.outputs[1]) \
                or not node.inputs[0] or not node.outputs[0]:  # malformed: infer reports it
            keep.append(node)
            continue
        src, dst = node.inputs[0], node.outputs[0]
        if dst not in outputs:
            rename[dst] = src
            continue
        # dst is a graph output: rename the producer's output instead, if that is possible
        if src in producers and src not in outputs and src not in inputs:
            rename[src] = dst
            for k in keep:
                k.inputs = [dst if x == src else x for x in k.inputs]
                k.outputs = [dst if x == src else x for x in k.outputs]
            continue
        keep.append(node)
    for node in keep:
        node.inputs = [rename.get(x, x) for x in node.inputs]
    g.nodes = keep
    return g

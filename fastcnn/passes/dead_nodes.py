"""Remove nodes whose outputs are never used, and initializers nobody reads."""
from __future__ import annotations

from fastcnn.ir.graph import Graph


def remove_dead_nodes(graph: Graph) -> Graph:
    needed = {t.name for t in graph.outputs}
    keep = []   # indices of the nodes kept, last first
    for i in range(len(graph.nodes) - 1, -1, -1):
        node = graph.nodes[i]
        if any(o and o in needed for o in node.outputs):
            keep.append(i)
            needed.update(x for x in node.inputs if x)
    if len(keep) == len(graph.nodes) and all(k in needed for k in graph.initializers):
        return graph
    g = graph.copy()
    g.nodes = [g.nodes[i] for i in reversed(keep)]
    g.initializers = {k: v for k, v in g.initializers.items() if k in needed}
    return g

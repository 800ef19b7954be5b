"""Remove nodes whose outputs are never used, and initializers nobody reads."""
from __future__ import annotations

from fastcnn.ir.graph import Graph


def remove_dead_nodes(graph: Graph) -> Graph:
    g = graph.copy()
    needed = {t.name for t in g.outputs}
    keep = []
    for node in reversed(g.nodes):
        if any(o and o in needed for o in node.outputs):
            keep.append(node)
            needed.update(x for x in node.inputs if x)
    g.nodes = keep[::-1]
    g.initializers = {k: v for k, v in g.initializers.items() if k in needed}
    return g

"""Graph passes. Each is a pure function Graph -> Graph (the input graph is not modified);
PIPELINE runs them in order. Every pass is tested by running the graph before and after."""
from __future__ import annotations

from fastcnn.passes.dead_nodes import remove_dead_nodes
from fastcnn.passes.identity import remove_identities

PIPELINE = [
    remove_identities,
    remove_dead_nodes,
]


def run_pipeline(graph, passes=None):
    """Apply `passes` (default PIPELINE) in order and return the new, checked graph."""
    for p in PIPELINE if passes is None else passes:
        graph = p(graph)
    return graph.check()

"""Graph passes. Each is a pure function Graph -> Graph (the input graph is not modified): a
changed copy, or the input itself when the pass finds nothing to do (a copy and a check per
pass were 40% of LeNet-5's pipeline). PIPELINE runs them in order. Every pass is tested by
running the graph before and after."""
from __future__ import annotations

from fastcnn.passes.batchnorm import fold_batchnorm
from fastcnn.passes.compare_where import fuse_compare_where
from fastcnn.passes.constants import fold_constants
from fastcnn.passes.dead_nodes import remove_dead_nodes
from fastcnn.passes.fusion import fuse_activation, fuse_residual_add
from fastcnn.passes.identity import remove_identities
from fastcnn.passes.pad_conv import fold_pad_into_window
from fastcnn.passes.spatial_mean import spatial_mean_to_pool
from fastcnn.passes.swish import fuse_swish
from fastcnn.passes.transposes import fold_transposes

PIPELINE = [
    fold_transposes,
    remove_identities,
    fold_constants,
    fuse_compare_where,
    spatial_mean_to_pool,
    fold_pad_into_window,
    remove_dead_nodes,
    fold_batchnorm,
    fuse_swish,
    # activations right after a conv first, and the folded BatchNormalizations' parameters
    # dropped: the residual fusion infers types (twice) on what is left (MobileNetV2: 65 of
    # 100 nodes, 110 of 314 initializers); then the activations after a fused residual Add
    fuse_activation,
    remove_dead_nodes,
    fuse_residual_add,
    fuse_activation,
    remove_dead_nodes,
]


# Names the default pipeline: a .fcnn saved from its output records it, and loading such a file
# skips the (idempotent) passes. Change the prefix when a pass changes what it produces.
PIPELINE_ID = "fastcnn-passes-1:" + ",".join(p.__name__ for p in PIPELINE)


def run_pipeline(graph, passes=None):
    """Apply `passes` (default PIPELINE) in order and return the new, checked graph.
    Operators, input/output counts and attribute kinds are checked first, so passes can index
    a node's inputs without guarding against a malformed file. The default pipeline marks its
    result (`graph.passes_applied = PIPELINE_ID`; copies of the graph are unmarked)."""
    from fastcnn.passes.analysis import check_structure
    check_structure(graph)
    # the pipeline's own checked (sorted) copy: passes read the node order, and one that has
    # nothing to do hands back what it was given, so the result is never the caller's graph
    graph = graph.copy().check()
    for p in PIPELINE if passes is None else passes:
        result = p(graph)
        if result is not graph:
            graph = result.check()
    if passes is None:
        graph.passes_applied = PIPELINE_ID
    return graph

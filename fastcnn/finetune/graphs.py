"""Cut a classifier graph at its head: the frozen trunk as a graph of its own, and the whole graph
again with the head's weights (and class count) replaced after training."""
from __future__ import annotations

import numpy as np

from fastcnn.errors import FastCNNError, FineTuneError
from fastcnn.finetune.head import HeadSpec
from fastcnn.ir.graph import Graph, TensorSpec
from fastcnn.ir.infer import infer_graph
from fastcnn.passes.analysis import specimen_types
from fastcnn.passes.dead_nodes import remove_dead_nodes


def trunk_graph(graph: Graph, spec: HeadSpec) -> Graph | None:
    """The graph computing the head's input features from the model inputs, or None when the
    features are the model input itself (a model that is only a head)."""
    if spec.features in {t.name for t in graph.inputs}:
        return None
    g = graph.copy()
    g.outputs = [TensorSpec(spec.features, (None,) + tuple(spec.feature_shape))]
    g.name = f"{graph.name}_trunk"
    return remove_dead_nodes(g).check()


def _bias_like(graph: Graph, node, bias: np.ndarray):
    """The bias in the shape the Add's original constant had: (n,) or (1, n)."""
    for x in node.inputs:
        c = graph.initializers.get(x)
        if c is not None and np.asarray(c).ndim == 2:
            return bias.reshape(1, -1)
    return bias


def _retarget_tail_reshapes(g: Graph, spec: HeadSpec, old_n: int, new_n: int) -> None:
    """A Reshape between the head and the output that states the class count ([0, 1000] after
    Keras' MobileNet conv head: (N, 1000, 1, 1) -> (N, 1000)) gets the new one. Only a shape of
    the batch (0 or -1 first), the class count once and size-1 dims otherwise: the tensor is a
    class vector per sample, whatever the count."""
    if old_n == new_n or old_n == 1:
        return
    nodes = {n.name: n for n in g.nodes}
    for node in (nodes[name] for name in spec.tail_nodes):
        if node.op == "Reshape" and len(node.inputs) > 1 and node.inputs[1] in g.initializers:
            shape = np.asarray(g.initializers[node.inputs[1]])
            rest = list(shape.reshape(-1)[1:]) if shape.ndim == 1 and shape.size > 1 else None
            if rest is not None and shape[0] in (0, -1) and rest.count(old_n) == 1 and \
                    all(d in (1, old_n) for d in rest):
                new = shape.copy()
                new[1:][new[1:] == old_n] = new_n
                node.inputs = [node.inputs[0], g.add_initializer(f"{node.name}_shape", new)]


def tuned_graph(graph: Graph, spec: HeadSpec, weights, biases, labels=None) -> Graph:
    """`graph` with each head layer's weight and bias replaced.

    weights[i] (k, n) and biases[i] (n,) are in training layout; they are written back in the
    layout the node uses (Gemm: B or B^T as transB says, alpha and beta reset to 1; MatMul: (k, n)
    and the Add's bias (n,) or (1, n); Conv: (n, C, 1, 1)). labels: list of class names stored
    as metadata["labels"], or None to drop them. Raises FineTuneError if the graph no longer
    type-checks (e.g. a Reshape after the head hard-codes the old class count)."""
    g = graph.copy()
    nodes = {n.name: n for n in g.nodes}
    for layer, w, b in zip(spec.layers, weights, biases):
        w = np.ascontiguousarray(w, np.float32)
        b = np.ascontiguousarray(b, np.float32)
        node = nodes[layer.node]
        if layer.kind == "gemm":
            stored = w.T if node.attrs.get("transB", 0) else w
            wname = g.add_initializer(f"{node.name}_weight", np.ascontiguousarray(stored))
            bname = g.add_initializer(f"{node.name}_bias", b)
            node.inputs = [node.inputs[0], wname, bname]
            node.attrs["alpha"] = 1.0
            node.attrs["beta"] = 1.0
        elif layer.kind == "matmul":
            node.inputs[1] = g.add_initializer(f"{node.name}_weight", w)
            if layer.has_bias:
                add = nodes[layer.bias_node]
                j = 0 if add.inputs[1] == node.outputs[0] else 1
                add.inputs[j] = g.add_initializer(f"{add.name}_bias", _bias_like(graph, add, b))
        else:  # conv1x1: (k, n) -> (n, C, 1, ...)
            ones = (1,) * layer.spatial_rank
            stored = np.ascontiguousarray(w.T).reshape(w.shape[1], w.shape[0], *ones)
            wname = g.add_initializer(f"{node.name}_weight", stored)
            bname = g.add_initializer(f"{node.name}_bias", b)
            node.inputs = [node.inputs[0], wname, bname]
            node.attrs.pop("weight_scale", None)   # the trained weights are the scaled ones
    _retarget_tail_reshapes(g, spec, spec.layers[-1].out_features, np.shape(weights[-1])[1])
    g.metadata = dict(graph.metadata)
    if labels is None:
        g.metadata.pop("labels", None)
    else:
        g.metadata["labels"] = [str(x) for x in labels]
    g = remove_dead_nodes(g).check()
    try:
        one = infer_graph(g, specimen_types(g, 1)).types
        two = infer_graph(g, specimen_types(g, 2)).types
    except FastCNNError as e:
        raise FineTuneError(f"{graph.where()}: the graph does not accept the new head "
                            f"({spec.layers[-1].weight.shape[1]} -> {np.shape(weights[-1])[1]} "
                            f"classes): {e}") from None
    # Output specs as the model reports them: None where the dimension follows the batch.
    g.outputs = [TensorSpec(t.name, tuple(a if a == b else None for a, b in
                                          zip(one[t.name].shape, two[t.name].shape)),
                            t.dtype, t.layout) for t in g.outputs]
    return g

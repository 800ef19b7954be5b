"""Fuse what follows a Conv/ConvTranspose/Gemm into its epilogue: a residual Add (Conv only) and
then an activation. One pass over the output instead of two or three.

    Conv -> Add(conv, z) -> Relu     becomes    Conv(x, W, B, z, activation="Relu")
    Gemm -> Clip(0, 6)               becomes    Gemm(..., activation="Clip", alpha=0, beta=6)
"""
from __future__ import annotations

from fastcnn.ir.graph import Graph
from fastcnn.ir.shapes import FUSABLE_ACTIVATIONS
from fastcnn.passes.analysis import readers_index, single_consumer, specimens_or_none

# activation op -> (attribute giving activation_alpha, attribute giving activation_beta, defaults)
ACTIVATION_PARAMS = {
    "Relu": (None, None), "LeakyRelu": ("alpha", None), "Clip": ("min", "max"),
    "Sigmoid": (None, None), "Tanh": (None, None), "HardSigmoid": ("alpha", "beta"),
    "HardSwish": (None, None), "Elu": ("alpha", None), "Swish": ("alpha", None),
    "Mish": (None, None), "Softplus": (None, None),
}
ACTIVATION_DEFAULTS = {("LeakyRelu", "alpha"): 0.01, ("Clip", "min"): float("-inf"),
                       ("Clip", "max"): float("inf"), ("HardSigmoid", "alpha"): 0.2,
                       ("HardSigmoid", "beta"): 0.5, ("Elu", "alpha"): 1.0, ("Swish", "alpha"): 1.0}
EPILOGUE_OPS = ("Conv", "ConvTranspose", "Gemm")


def fuse_residual_add(graph: Graph) -> Graph:
    """Conv (no activation, no residual yet) whose only consumer is Add(conv, z) with z of the
    same shape, z computed before the Conv: z becomes the Conv's 4th input."""
    order = {}
    for i, n in enumerate(graph.nodes):
        for o in n.outputs:
            order[o] = i
    inits = set(graph.initializers)
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    candidates = []   # (conv index, add index, z): the structure fits; the shapes are checked below
    taken = set()
    readers = readers_index(graph)
    for i, node in enumerate(graph.nodes):
        if node.op != "Conv" or node.attrs.get("activation") or len(node.inputs) > 3:
            continue
        nxt = single_consumer(graph, node.outputs[0], readers)
        if nxt is None or nxt.op != "Add" or len(nxt.inputs) != 2 or id(nxt) in taken:
            continue
        z = nxt.inputs[1] if nxt.inputs[0] == node.outputs[0] else nxt.inputs[0]
        if z == node.outputs[0] or z in inits:
            continue
        if order.get(z, -1) >= i:  # z must exist before the conv runs
            continue
        candidates.append((i, index[id(nxt)], z))
        taken.add(id(nxt))
    if not candidates:
        return graph   # no inference needed (LeNet-5, plain conv stacks)
    specimens = specimens_or_none(graph)
    if specimens is None:
        return graph
    a, b = specimens
    g = graph.copy()
    remove = set()
    for i, k, z in candidates:
        node, nxt = g.nodes[i], g.nodes[k]
        y = node.outputs[0]
        if a.types[z] != a.types[y] or b.types[z] != b.types[y]:
            continue
        node.inputs = list(node.inputs) + [""] * (3 - len(node.inputs)) + [z]
        node.outputs = [nxt.outputs[0]]
        remove.add(k)
    if not remove:
        return graph
    g.nodes = [n for i, n in enumerate(g.nodes) if i not in remove]
    return g


def fuse_activation(graph: Graph) -> Graph:
    """Conv/ConvTranspose/Gemm without an activation whose only consumer is a fusable activation."""
    if not any(n.op in ACTIVATION_PARAMS for n in graph.nodes):
        return graph
    g = graph.copy()
    remove = set()
    # rewiring below moves an activation's output to its producer and drops the activation at
    # the end: who reads each value does not change, so the index stays right
    readers = readers_index(g)
    for node in g.nodes:
        if node.op not in EPILOGUE_OPS or node.attrs.get("activation"):
            continue
        nxt = single_consumer(g, node.outputs[0], readers)
        if nxt is None or nxt.op not in ACTIVATION_PARAMS or nxt.op not in FUSABLE_ACTIVATIONS:
            continue
        pa, pb = ACTIVATION_PARAMS[nxt.op]
        node.attrs["activation"] = nxt.op
        if pa:
            node.attrs["activation_alpha"] = float(nxt.attrs.get(pa, ACTIVATION_DEFAULTS[(nxt.op, pa)]))
        if pb:
            node.attrs["activation_beta"] = float(nxt.attrs.get(pb, ACTIVATION_DEFAULTS[(nxt.op, pb)]))
        node.outputs = [nxt.outputs[0]]
        remove.add(id(nxt))
    if not remove:
        return graph
    g.nodes = [n for n in g.nodes if id(n) not in remove]
    return g

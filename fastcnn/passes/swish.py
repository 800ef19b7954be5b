"""Fuse "x times a function of x" activations that exporters spell out into one unary op:

    Mul(x, Sigmoid(x))                              -> Swish(x)               (SiLU; EfficientNet)
    Mul(x, Sigmoid(Mul(x, a)))                      -> Swish(x, alpha=a)      (Keras swish(beta))
    Mul(x, HardSigmoid(x, alpha=1/6, beta=1/2))     -> HardSwish(x)           (PyTorch opset < 14)
    Mul(x, Mul(Clip(Add(x, 3), 0, 6), 1/6))         -> HardSwish(x)           (Keras MobileNetV3)
    Mul(x, Div(Clip(Add(x, 3), 0, 6), 6))           -> HardSwish(x)
    Mul(x, Tanh(Softplus(x)))                       -> Mish(x)                (PyTorch opset < 18)

Mul's operands may come in either order, as may a constant's. Every node of the chain must
feed only the next one, so nothing else needs its output. One pass over the data instead of
two to four, and the result can then be fused into a producing Conv's epilogue.
"""
from __future__ import annotations

import numpy as np

from fastcnn.ir.graph import Graph, Node
from fastcnn.passes.analysis import readers_index, scalar_const, single_consumer


def _close(a, b):
    return a is not None and abs(a - b) <= 1e-6 * max(1.0, abs(b))


def _unary(op, check=lambda node: True):
    """Step of a chain: a unary `op` whose attributes pass `check`. Returns (input, params)."""
    def match(graph, node):
        if node.op != op or len(node.inputs) != 1 or not check(node):
            return None
        return node.inputs[0], {}
    return match


def _with_const(op, want=None, param=None):
    """Step: binary `op` of the data and a scalar constant (either side for Add/Mul, second for
    Div), equal to `want` or, with `param`, recorded under that name."""
    def match(graph, node):
        if node.op != op or len(node.inputs) != 2:
            return None
        sides = ((0, 1), (1, 0)) if op in ("Add", "Mul") else ((0, 1),)
        for d, c in sides:
            v = scalar_const(graph, node.inputs[c])
            if v is None or node.inputs[d] in graph.initializers:
                continue
            if param is not None:
                return node.inputs[d], {param: v}
            if _close(v, want):
                return node.inputs[d], {}
        return None
    return match


def _hard_sigmoid_sixth(node):
    a = node.attrs
    return _close(float(a.get("alpha", 0.2)), 1 / 6) and _close(float(a.get("beta", 0.5)), 0.5)


def _clip_0_6(node):
    return float(node.attrs.get("min", -np.inf)) == 0.0 and float(node.attrs.get("max", np.inf)) == 6.0


# fused op, chain steps from the Mul's second operand back towards x
PATTERNS = [
    ("HardSwish", [_with_const("Mul", 1 / 6), _unary("Clip", _clip_0_6), _with_const("Add", 3.0)]),
    ("HardSwish", [_with_const("Div", 6.0), _unary("Clip", _clip_0_6), _with_const("Add", 3.0)]),
    ("Swish", [_unary("Sigmoid"), _with_const("Mul", param="alpha")]),
    ("Swish", [_unary("Sigmoid")]),
    ("HardSwish", [_unary("HardSigmoid", _hard_sigmoid_sixth)]),
    ("Mish", [_unary("Tanh"), _unary("Softplus")]),
]


def _match(graph, producers, readers, x, y, steps):
    """Nodes of the chain computing y from x (Mul's other operand), and collected parameters."""
    chain, params, value = [], {}, y
    for step in steps:
        node = producers.get(value)
        if node is None:
            return None
        got = step(graph, node)
        if got is None:
            return None
        nxt = single_consumer(graph, value, readers)
        if nxt is None:
            return None
        chain.append(node)
        value, p = got
        params.update(p)
    return (chain, params) if value == x else None


def fuse_swish(graph: Graph) -> Graph:
    if not any(n.op == "Mul" for n in graph.nodes):
        return graph
    g = graph.copy()
    producers = {o: n for n in g.nodes for o in n.outputs if o}
    readers = readers_index(g)   # nodes are replaced only at the end
    removed, replaced = set(), {}
    for mul in g.nodes:
        if mul.op != "Mul" or len(mul.inputs) != 2 or id(mul) in removed:
            continue
        for x, y in ((mul.inputs[0], mul.inputs[1]), (mul.inputs[1], mul.inputs[0])):
            if x in g.initializers or x == y:
                continue
            hit = None
            for fused, steps in PATTERNS:
                found = _match(g, producers, readers, x, y, steps)
                if found is not None and not any(id(n) in removed for n in found[0]):
                    hit = fused, found
                    break
            if hit is None:
                continue
            fused, (chain, params) = hit
            removed.update(id(n) for n in chain)
            replaced[id(mul)] = Node(fused, mul.name, [x], list(mul.outputs), params)
            break
    g.nodes = [replaced.get(id(n), n) for n in g.nodes if id(n) not in removed]
    return g

"""Fold inference BatchNormalization (and constant per-channel Mul/Add) into the preceding Conv
or Gemm, so the normalisation costs nothing at run time.

Conv W (c_out, ...), B (c_out,) followed by BN with s = scale / sqrt(var + eps):
    W' = W * s[:, None, None, None],   B' = (B - mean) * s + bias
(for a Conv, W stays and s goes into its weight_scale attribute: ir/weights.py)
Gemm (y = A @ B' + C over columns) followed by BN over axis 1 of (N, n): same per column.
"""
from __future__ import annotations

import numpy as np

from fastcnn.ir.graph import Graph
from fastcnn.ir.opspec import MAX_ATTR_LIST
from fastcnn.ir.weights import conv_weights, frozen_scale, scaled as _scaled, weight_scale_of
from fastcnn.passes.analysis import readers_index, single_consumer


# the consumers folded into a conv or dense layer: BatchNormalization, and binary ops with a
# constant per-channel operand
AFFINE_OPS = ("Mul", "Add", "Sub")
FOLDABLE = ("BatchNormalization",) + AFFINE_OPS


def _const(g, name):
    return g.initializers.get(name) if name else None


def _per_channel(v, c, rank):
    """A constant that broadcasts as one value per channel of an (N, c, ...) tensor, as (c,)."""
    v = np.asarray(v)
    if v.size == 1:
        return np.full(c, float(v.reshape(-1)[0]), np.float64)
    shape = v.shape
    if len(shape) > rank:
        return None
    full = (1,) * (rank - len(shape)) + shape
    if full[1] != c or any(d != 1 for i, d in enumerate(full) if i != 1):
        return None
    return v.reshape(c).astype(np.float64)


def _conv_like(node):
    return (node.op in ("Conv", "ConvTranspose") and not node.attrs.get("activation")
            and len(node.inputs) <= 3)


def _gemm_like(node):
    return node.op == "Gemm" and not node.attrs.get("activation") and not node.attrs.get("transA", 0)


def _out_channels(g, node):
    """Output channels of a conv or dense node with constant weights, or None (weights not
    constant, or of a rank the op does not take: left to type inference to refuse)."""
    w = _const(g, node.inputs[1])
    if w is None or (w.ndim != 2 if node.op == "Gemm" else w.ndim < 3):
        return None
    if node.op == "Conv":
        return w.shape[0]
    if node.op == "ConvTranspose":  # W (c_in, c_out/group, ...)
        return w.shape[1] * node.attrs.get("group", 1)
    return w.shape[0] if node.attrs.get("transB", 0) else w.shape[1]


def _well_formed(g, node, c) -> bool:
    """Whether what folding reads of node fits its c output channels: the bias, a
    ConvTranspose's group, a weight_scale already there. The passes may run before any type
    inference (they infer only when they need types), so a graph that does not fit is left as
    it is, for type inference to refuse naming the tensor or attribute at fault."""
    b_in = node.inputs[2] if len(node.inputs) > 2 else ""
    b = np.shape(_const(g, b_in)) if b_in else None
    if node.op == "Gemm":
        # C broadcasts over (M, N): a scalar, (N,), (1, N), (M, N), with N == c or 1
        return b is None or (len(b) <= 2 and (len(b) == 0 or b[-1] in (1, c)))
    if b is not None and b != (c,):
        return False
    if node.op == "ConvTranspose":
        group = node.attrs.get("group", 1)
        return group >= 1 and _const(g, node.inputs[1]).shape[0] % group == 0
    old = weight_scale_of(node.attrs)
    return old is None or len(old) == c


def _apply(g, node, scale, shift, used):
    """Replace node's weights/bias by scale*W and scale*B + shift (per output channel); used:
    the graph's names (Graph.used_names), kept up to date."""
    w = np.asarray(g.initializers[node.inputs[1]])
    c = scale.shape[0]
    w2 = None   # a Conv keeps its weights: the scale is applied when they are packed
    if node.op in ("Conv", "ConvTranspose"):
        if node.op == "Conv" and c > MAX_ATTR_LIST:   # too long for an attribute: scaled now
            w2 = conv_weights(w, scale)
        elif node.op == "Conv":
            old = weight_scale_of(node.attrs)
            node.attrs["weight_scale"] = frozen_scale(scale if old is None else scale * old)
        else:  # W (c_in, c_out/group, k...): output channel gi*cog + j is W[group gi rows, j]
            group = node.attrs.get("group", 1)
            cig, cog = w.shape[0] // group, w.shape[1]
            per = scale.reshape(group, 1, cog, *(1,) * (w.ndim - 2))
            w2 = _scaled(w.reshape(group, cig, cog, *w.shape[2:]), per).reshape(w.shape)
        b_in = node.inputs[2] if len(node.inputs) > 2 else ""
        b = np.asarray(_const(g, b_in), np.float64) if b_in else np.zeros(c)
        b2 = b * scale + shift
    else:  # Gemm: Y = alpha * A @ B' + beta * C; columns are output channels
        alpha, beta = node.attrs.get("alpha", 1.0), node.attrs.get("beta", 1.0)
        w2 = _scaled(w, scale.reshape(c, 1) if node.attrs.get("transB", 0) else scale.reshape(1, c),
                     alpha)
        b_in = node.inputs[2] if len(node.inputs) > 2 else ""
        cb = np.asarray(_const(g, b_in), np.float64) * beta if b_in else np.zeros(c)
        b2 = np.broadcast_to(cb, np.broadcast_shapes(cb.shape, (c,))) * scale + shift
        node.attrs["alpha"] = 1.0
        node.attrs["beta"] = 1.0
    wn = node.inputs[1] if w2 is None else g.add_initializer(f"{node.name}_w_folded", w2, used)
    bn = g.add_initializer(f"{node.name}_b_folded", np.ascontiguousarray(b2, dtype=np.float32), used)
    node.inputs = [node.inputs[0], wn, bn]


def fold_batchnorm(graph: Graph) -> Graph:
    """A copy of `graph` with every foldable BatchNormalization and constant per-channel Mul,
    Add or Sub folded into the conv or dense layer before it (module docstring); the graph
    itself when there is none."""
    if not any(n.op in FOLDABLE for n in graph.nodes):
        return graph
    g = graph.copy()
    used = g.used_names()   # gathered once: two new names per fold
    readers = readers_index(g)
    folded = set()          # ids of the consumers taken in, dropped from the graph at the end
    for node in g.nodes:
        # a node that took its consumer in is tried again (a BatchNormalization, then a Mul)
        while id(node) not in folded and _fold_consumer(g, node, used, readers, folded):
            pass
    if not folded:
        return graph
    g.nodes = [n for n in g.nodes if id(n) not in folded]
    return g


def _fold_consumer(g, node, used, readers, folded) -> bool:
    """Fold the only consumer of node's output into node when node is a conv or dense layer
    with constant weights and the consumer a BatchNormalization or a constant per-channel Mul,
    Add or Sub; returns whether it did."""
    if not (_conv_like(node) or _gemm_like(node)):
        return False
    if _const(g, node.inputs[1]) is None or (len(node.inputs) > 2 and node.inputs[2]
                                             and _const(g, node.inputs[2]) is None):
        return False
    nxt = single_consumer(g, node.outputs[0], readers)
    if nxt is None:
        return False
    c = _out_channels(g, node)
    if c is None or not _well_formed(g, node, c):
        return False
    rank = 2 if node.op == "Gemm" else None
    scale = shift = None
    if nxt.op == "BatchNormalization" and nxt.inputs[0] == node.outputs[0]:
        params = [_const(g, x) for x in nxt.inputs[1:5]]
        if any(p is None for p in params) or nxt.attrs.get("training_mode", 0):
            return False
        gamma, beta, mean, var = (np.asarray(p, np.float64).reshape(-1) for p in params)
        if any(p.shape[0] != c for p in (gamma, beta, mean, var)):
            return False  # left to type inference, which names the parameter that does not fit
        eps = nxt.attrs.get("epsilon", 1e-5)
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
    elif nxt.op in AFFINE_OPS and len(nxt.inputs) == 2:
        other = nxt.inputs[1] if nxt.inputs[0] == node.outputs[0] else nxt.inputs[0]
        if nxt.op == "Sub" and other == nxt.inputs[0]:
            return False  # const - conv: not a per-channel affine of the conv output
        v = _const(g, other)
        if v is None:
            return False
        r = rank or (len(_const(g, node.inputs[1]).shape))
        per = _per_channel(v, c, r)
        if per is None:
            return False
        if nxt.op == "Mul":
            scale, shift = per, np.zeros(c)
        elif nxt.op == "Add":
            scale, shift = np.ones(c), per
        else:
            scale, shift = np.ones(c), -per
    else:
        return False
    _apply(g, node, scale, shift, used)
    node.outputs = [nxt.outputs[0]]
    folded.add(id(nxt))
    for x in set(nxt.inputs):   # nxt reads nothing any more (by identity: Node's == compares fields)
        if x:
            readers[x] = [r for r in readers[x] if r is not nxt]
    return True

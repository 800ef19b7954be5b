"""Find the trainable head of a classifier graph.

A head is a chain of dense layers ending at a model output, possibly followed by "tail" ops that
do not depend on its weights (Softmax, LogSoftmax, Flatten, Reshape, a Transpose that only
moves size-1 axes, ...). A dense layer is one of

    Gemm(x, B, C)                              (fused activation allowed)
    MatMul(x, W) [-> Add(., bias)]             (W a constant 2-D matrix, x (N, k))
    Conv 1x1 (W (n, C, 1, 1)) -> GlobalAveragePool   (SqueezeNet-style; the last layer only)
    Conv 1x1 on a 1x1 map (N, C, 1, 1)           (Keras' MobileNets after pooling with keepdims)

each optionally followed by a standalone activation with a known gradient. `find_head` walks back
from the output (or starts at a node the user names) and returns a `HeadSpec`; weights come out
in training layout: W (k, n) in-features by out-features, bias (n,).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fastcnn.errors import FineTuneError
from fastcnn.ir.graph import Graph
from fastcnn.ir.infer import infer_graph
from fastcnn.ir.weights import conv_weights
from fastcnn.passes.analysis import specimen_types
from fastcnn.passes.fusion import ACTIVATION_DEFAULTS, ACTIVATION_PARAMS

# Activations a trainable layer may carry (train.pyx has their gradients).
TRAINABLE_ACTIVATIONS = ("", "Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid",
                         "HardSwish", "Elu")
# Ops between the head and the model output that do not depend on the head's weights.
TAIL_OPS = ("Softmax", "LogSoftmax", "Flatten", "Reshape", "Squeeze", "Identity", "Dropout")
# Ops that may sit between two dense layers when they leave the tensor as it is.
PASS_THROUGH_OPS = ("Flatten", "Reshape", "Squeeze", "Identity", "Dropout")
DENSE_OPS = ("Gemm", "MatMul", "Conv")


@dataclass
class LayerSpec:
    """One trainable layer as found in the graph.

    kind:       "gemm", "matmul" or "conv1x1" (before a global average pool, or on a 1x1 map).
    node:       name of the node holding the weight (Gemm, MatMul or Conv).
    bias_node:  name of the Add holding the bias of a MatMul ("" otherwise).
    act_node:   name of a standalone activation node after the layer ("" if fused or none).
    weight:     (k, n) float32, in-features by out-features.
    bias:       (n,) float32 (zeros when the layer has none).
    has_bias:   False for a MatMul without Add: its bias stays zero and is not trained.
    activation: "" or an op name from TRAINABLE_ACTIVATIONS; alpha, beta its parameters.
    input:      the value the layer reads;  output: the value after its activation (and pooling).
    """

    kind: str
    node: str
    weight: np.ndarray
    bias: np.ndarray
    has_bias: bool
    input: str
    output: str
    activation: str = ""
    alpha: float = 0.0
    beta: float = 0.0
    bias_node: str = ""
    act_node: str = ""
    spatial_rank: int = 0     # conv1x1: the number of spatial dims of its weight
    pooled: bool = False      # conv1x1 before a global average pool: output is the pooled value

    @property
    def in_features(self) -> int:
        return self.weight.shape[0]

    @property
    def out_features(self) -> int:
        return self.weight.shape[1]


@dataclass
class HeadSpec:
    """The head of a classifier.

    layers:        trainable layers, first to last.
    features:      the value the frozen trunk produces (layers[0].input).
    feature_shape: its per-sample shape: (k,) for dense heads, (C, *spatial) for 1x1-conv heads.
    positions:     1, or the number of spatial positions a 1x1-conv head runs on before its
                   global average pool (when an activation sits between them).
    pool_features: a 1x1-conv head without activation: pooling commutes with it, so the trunk's
                   features are averaged over space first and the conv is a dense layer.
    output:        the model output the head feeds.
    tail:          ops after the head up to that output, e.g. ["Softmax"].
    tail_nodes:    the names of those nodes, in the same order.
    """

    layers: list
    features: str
    feature_shape: tuple
    output: str
    positions: int = 1
    pool_features: bool = False
    tail: list = field(default_factory=list)
    tail_nodes: list = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return self.layers[-1].out_features

    @property
    def has_softmax(self) -> bool:
        return any(op in ("Softmax", "LogSoftmax") for op in self.tail)


class _GraphView:
    """Producers, consumers, constants and types of a graph (dynamic dims = 1)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.where = graph.where()
        inferred = infer_graph(graph, specimen_types(graph, 1))
        self.types = inferred.types
        self.consts = inferred.consts
        self.nodes = {n.name: n for n in graph.nodes}
        self.producer = {o: n for n in graph.nodes for o in n.outputs if o}
        self.readers = {}
        for n in graph.nodes:
            for x in n.inputs:
                if x:
                    self.readers.setdefault(x, []).append(n)
        self.output_names = [t.name for t in graph.outputs]

    def const(self, value):
        return self.consts.get(value) if value else None

    def only_reader(self, value):
        """The node reading `value` when it is the only reader and `value` is no model output."""
        readers = self.readers.get(value, [])
        if value in self.output_names or len(readers) != 1 or readers[0].inputs.count(value) != 1:
            return None
        return readers[0]

    def fail(self, message):
        raise FineTuneError(f"{self.where}: {message}")


def _activation_of_node(node):
    """(name, alpha, beta) of a standalone activation node, or None if it is not trainable."""
    if node.op not in TRAINABLE_ACTIVATIONS or node.op not in ACTIVATION_PARAMS:
        return None
    pa, pb = ACTIVATION_PARAMS[node.op]
    alpha = float(node.attrs.get(pa, ACTIVATION_DEFAULTS[(node.op, pa)])) if pa else 0.0
    beta = float(node.attrs.get(pb, ACTIVATION_DEFAULTS[(node.op, pb)])) if pb else 0.0
    return node.op, alpha, beta


def _bias_vector(view, value, n):
    """A constant that adds one value per output column of an (N, n) tensor, as (n,) float32."""
    c = view.const(value)
    if c is None:
        return None
    c = np.asarray(c)
    if c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1) or c.size not in (1, n):
        return None
    return np.ascontiguousarray(np.broadcast_to(c.reshape(-1).astype(np.float32), (n,)))


def _dense_at(view, value):
    """The dense layer (without activation) whose output is `value`, or None."""
    node = view.producer.get(value)
    if node is None:
        return None
    if node.op == "Gemm":
        a = node.attrs
        w = view.const(node.inputs[1])
        if w is None or w.ndim != 2 or a.get("transA", 0):
            return None
        w = np.asarray(w, np.float32)
        w = w.T if a.get("transB", 0) else w
        w = w * np.float32(a.get("alpha", 1.0))
        n = w.shape[1]
        has_c = len(node.inputs) > 2 and bool(node.inputs[2])
        bias = np.zeros(n, np.float32)
        if has_c:
            c = _bias_vector(view, node.inputs[2], n)
            if c is None:
                return None
            bias = c * np.float32(a.get("beta", 1.0))
        return _with_fused_activation(LayerSpec("gemm", node.name, np.ascontiguousarray(w), bias, True,
                                                node.inputs[0], value), node)
    if node.op == "Conv":
        return _conv1x1(view, node, value, pixel=True)
    if node.op == "MatMul":
        w = view.const(node.inputs[1])
        x = node.inputs[0]
        if w is None or w.ndim != 2 or len(view.types[x].shape) != 2:
            return None
        w = np.ascontiguousarray(w, np.float32)
        return LayerSpec("matmul", node.name, w, np.zeros(w.shape[1], np.float32), False, x, value)
    if node.op == "Add" and len(node.inputs) == 2:
        for i in (0, 1):
            mm = view.producer.get(node.inputs[i])
            if mm is None or mm.op != "MatMul" or view.only_reader(node.inputs[i]) is not node:
                continue
            inner = _dense_at(view, node.inputs[i])
            if inner is None:
                continue
            bias = _bias_vector(view, node.inputs[1 - i], inner.out_features)
            if bias is None:
                continue
            inner.bias, inner.has_bias, inner.bias_node, inner.output = bias, True, node.name, value
            return inner
    return None


def _layer_at(view, value):
    """The dense layer, with its activation, whose output is `value`, or None."""
    node = view.producer.get(value)
    if node is None:
        return None
    act = _activation_of_node(node)
    if act is not None:
        inner = _dense_at(view, node.inputs[0])
        if inner is None or inner.activation or view.only_reader(node.inputs[0]) is not node:
            return None
        inner.activation, inner.alpha, inner.beta = act
        inner.act_node, inner.output = node.name, value
        return inner
    return _dense_at(view, value)


def _conv_head_at(view, value):
    """A 1x1 Conv [-> activation] -> GlobalAveragePool whose pooled output is `value`, or None."""
    gap = view.producer.get(value)
    if gap is None or gap.op != "GlobalAveragePool":
        return None
    conv_out = gap.inputs[0]
    node = view.producer.get(conv_out)
    if node is None or view.only_reader(conv_out) is not gap:
        return None
    act, act_node = None, ""
    if node.op != "Conv":
        a = _activation_of_node(node)
        if a is None:
            return None
        act, act_node = a, node.name
        inner_out = node.inputs[0]
        node = view.producer.get(inner_out)
        if node is None or node.op != "Conv" or view.only_reader(inner_out) is not view.nodes[act_node]:
            return None
    layer = _conv1x1(view, node, value, pixel=False)
    if layer is None or (node.attrs.get("activation") and act_node):
        return None
    layer.act_node, layer.pooled = act_node, True
    if act_node:
        layer.activation, layer.alpha, layer.beta = act
    return layer


def _conv1x1(view, node, value, pixel):
    """A Conv node with a 1x1 kernel, no groups, keeping the spatial size, as a LayerSpec whose
    output is `value` (with its fused activation), or None. pixel: its input must be a 1x1 map
    (one position: a dense layer as it stands); else any map (a global average pool follows)."""
    w = view.const(node.inputs[1])
    x = node.inputs[0]
    xt, yt = view.types[x].shape, view.types[node.outputs[0]].shape
    if (w is None or len(node.inputs) > 3 or node.attrs.get("group", 1) != 1 or w.ndim != len(xt)
            or w.ndim < 3 or any(d != 1 for d in w.shape[2:]) or tuple(xt[2:]) != tuple(yt[2:])
            or (pixel and any(d != 1 for d in xt[2:]))):
        return None
    n, c = w.shape[:2]
    w = conv_weights(np.asarray(w, np.float32), node.attrs.get("weight_scale"))   # a folded BN's
    weight = np.ascontiguousarray(w.reshape(n, c).T)
    bias = np.zeros(n, np.float32)
    if len(node.inputs) > 2 and node.inputs[2]:
        b = view.const(node.inputs[2])
        if b is None:
            return None
        bias = np.ascontiguousarray(np.asarray(b, np.float32).reshape(n))
    return _with_fused_activation(LayerSpec("conv1x1", node.name, weight, bias, True, x, value,
                                            spatial_rank=w.ndim - 2), node)


def _with_fused_activation(layer, node):
    """layer with the activation a pass fused into its Gemm or Conv node (if any)."""
    if node.attrs.get("activation"):
        layer.activation = node.attrs["activation"]
        layer.alpha = float(node.attrs.get("activation_alpha", 0.0))
        layer.beta = float(node.attrs.get("activation_beta", 0.0))
    return layer


def _unit_transpose(view, node) -> bool:
    """A Transpose that moves only size-1 axes: the data stays in the same order (Keras'
    channels-last view of an (N, C, 1, 1) map)."""
    p = node.attrs.get("perm")
    shape = view.types[node.inputs[0]].shape
    if node.op != "Transpose" or not isinstance(p, (list, tuple)) or sorted(p) != list(range(len(shape))):
        return False
    moved = [a for a in p if shape[a] != 1]
    return moved == sorted(moved)


def _describe(node):
    return f"'{node.name}' ({node.op})"


def _auto_head(view):
    """Walk back from the first model output through tail ops to the last dense layer.
    Returns (layer, output, tail nodes in order)."""
    out = view.output_names[0]
    value, tail = out, []
    while True:
        layer = _layer_at(view, value) or _conv_head_at(view, value)
        if layer is not None:
            return layer, out, tail
        node = view.producer.get(value)
        if node is None:
            view.fail(f"no trainable head found: walking back from output '{out}'"
                      f"{' through ' + ', '.join(n.op for n in tail) if tail else ''} reached '{value}', "
                      f"which no node computes. A head is a Gemm, a MatMul with a constant 2-D "
                      f"weight (+ Add bias), or a 1x1 Conv before GlobalAveragePool")
        if node.op not in TAIL_OPS and not _unit_transpose(view, node):
            view.fail(f"no trainable head found: walking back from output '{out}'"
                      f"{' through ' + ', '.join(n.op for n in tail) if tail else ''} reached node "
                      f"{_describe(node)}, which is neither a dense layer (Gemm, MatMul with a "
                      f"constant 2-D weight (+ Add bias), 1x1 Conv before GlobalAveragePool or on a 1x1 map) nor "
                      f"one of {', '.join(TAIL_OPS)}; name the head with head=...")
        tail.insert(0, node)
        value = node.inputs[0]


def _named_head(view, name):
    """The layer whose weight (or bias Add) node is called `name`, and the output it feeds."""
    node = view.nodes.get(name)
    if node is None:
        dense = [n.name for n in view.graph.nodes if n.op in DENSE_OPS]
        view.fail(f"head={name!r}: no node of that name; dense/conv nodes are: "
                  f"{', '.join(dense) if dense else 'none'}")
    # Follow the node forward to the end of its layer: bias Add, activation, global pool.
    value = node.outputs[0]
    steps = ("Add", "activation", "GlobalAveragePool")
    for step in steps:
        nxt = view.only_reader(value)
        if nxt is None:
            break
        if (step == "Add" and nxt.op == "Add" and node.op == "MatMul") or \
                (step == "activation" and _activation_of_node(nxt) is not None) or \
                (step == "GlobalAveragePool" and nxt.op == "GlobalAveragePool" and node.op == "Conv"):
            value = nxt.outputs[0]
    layer = (_conv_head_at(view, value) if node.op == "Conv" else None) or _layer_at(view, value)
    if layer is None or name not in (layer.node, layer.bias_node):
        view.fail(f"head={name!r}: node {_describe(node)} is not a trainable layer (a Gemm, a "
                  f"MatMul with a constant 2-D weight (+ Add bias) on (N, k) input, or a 1x1 "
                  f"Conv followed by GlobalAveragePool or on a 1x1 map)")
    # Which model output does it feed, and through what?
    for out in view.output_names:
        tail, v = [], out
        while v != value:
            p = view.producer.get(v)
            if p is None or not p.inputs:
                break
            tail.insert(0, p)
            v = p.inputs[0]
        if v == value:
            return layer, out, tail
    view.fail(f"head={name!r}: node {_describe(node)} does not feed any model output through "
              f"its first input chain ({', '.join(view.output_names)})")


def _earlier_layer(view, value):
    """The dense layer producing `value` (skipping ops that leave the tensor unchanged), else
    the node that stands in the way (None for a model input)."""
    while True:
        layer = _layer_at(view, value)
        if layer is not None:
            return layer
        node = view.producer.get(value)
        if (node is None or node.op not in PASS_THROUGH_OPS
                or view.types[node.inputs[0]] != view.types[value]):
            return node
        value = node.inputs[0]


def find_head(graph: Graph, head: str | None = None, train_layers: int = 1) -> HeadSpec:
    """The classifier head of `graph` with its last `train_layers` dense layers.

    head: None to detect the last dense layer automatically, or the name of its node (Gemm,
    MatMul, the MatMul's bias Add, or a 1x1 Conv). Raises FineTuneError when there is none."""
    view = _GraphView(graph)
    if head is None:
        last, output, tail = _auto_head(view)
    else:
        last, output, tail = _named_head(view, head)
    layers = [last]
    if last.pooled and train_layers > 1:
        view.fail(f"train_layers={train_layers}: the head '{last.node}' is a 1x1 Conv before a "
                  f"global average pool; only that one layer can be trained (the layers before it "
                  f"are convolutions)")
    while len(layers) < train_layers:
        found = _earlier_layer(view, layers[0].input)
        if not isinstance(found, LayerSpec):
            where = (f"node {_describe(found)}" if found is not None
                     else f"model input '{layers[0].input}'")
            view.fail(f"train_layers={train_layers}: found {len(layers)} dense layer(s) "
                      f"({', '.join(l.node for l in layers)}); before '{layers[0].node}' comes "
                      f"{where}, which is not a dense layer with a trainable activation "
                      f"({', '.join(a for a in TRAINABLE_ACTIVATIONS if a)})")
        if found.out_features != layers[0].in_features:
            view.fail(f"layer '{found.node}' gives {found.out_features} features but "
                      f"'{layers[0].node}' takes {layers[0].in_features}")
        layers.insert(0, found)
    for layer in layers:
        if layer.activation not in TRAINABLE_ACTIVATIONS:
            view.fail(f"layer '{layer.node}' has activation {layer.activation}, which fine-tuning "
                      f"has no gradient for ({', '.join(a for a in TRAINABLE_ACTIVATIONS if a)})")
    features = layers[0].input
    fshape = tuple(view.types[features].shape[1:])
    spec = HeadSpec(layers, features, fshape, output, tail=[n.op for n in tail],
                    tail_nodes=[n.name for n in tail])
    if last.pooled:
        positions = int(np.prod(fshape[1:], dtype=np.int64))
        if last.activation == "" and positions > 1:
            spec.pool_features = True  # mean(conv(x)) == conv(mean(x)): pool once, in the trunk
        else:
            spec.positions = positions
    return spec

"""Facts about a graph that passes need: value types (for a specimen batch), which values are
static (independent of the runtime inputs), and use counts."""
from __future__ import annotations

import numpy as np

from fastcnn.ir.graph import Graph, ValueType
from fastcnn.ir.infer import infer_graph


def specimen_types(graph: Graph, fill: int) -> dict:
    return {t.name: ValueType(tuple(fill if d is None else d for d in t.shape), t.dtype)
            for t in graph.inputs}


def infer_specimens(graph: Graph):
    """Infer with dynamic dims = 1 and = 2. Returns (inferred_1, inferred_2); equal when the
    graph has no dynamic dims."""
    a = infer_graph(graph, specimen_types(graph, 1))
    dynamic = any(d is None for t in graph.inputs for d in t.shape)
    # attributes resolve without shapes (opspec.resolve_attrs: types and defaults): the second
    # specimen reuses the first's and redoes only the shapes (a third of an inference)
    b = infer_graph(graph, specimen_types(graph, 2), attrs=a.attrs) if dynamic else a
    return a, b


def specimens_or_none(graph: Graph):
    """infer_specimens, or None when the graph has dynamic dims besides the batch and the
    specimen sizes do not fit it (a head that only accepts 224x224, say): such a graph is valid,
    its shapes are checked per input shape when it runs, and passes that need specimen types
    leave it as it is. With only a dynamic batch, a failure is the graph's error and raises."""
    from fastcnn.errors import FastCNNError
    try:
        return infer_specimens(graph)
    except FastCNNError:
        if not any(d is None for t in graph.inputs for d in t.shape[1:]):
            raise
        check_structure(graph)  # what no input shape can fix is still refused here
        return None


def check_structure(graph: Graph) -> None:
    """The checks of infer_graph that do not depend on shapes: every operator known, input and
    output counts in range, attributes of the right kinds, initializers of the IR's element
    types. Raises like infer_graph."""
    from fastcnn.errors import GraphError, UnsupportedOpError
    from fastcnn.ir.infer import initializer_type, supported_ops_text
    from fastcnn.ir.ops import OPS
    from fastcnn.ir.opspec import resolve_attrs

    where = graph.where()
    for name, arr in graph.initializers.items():
        initializer_type(where, name, arr)
    for node in graph.nodes:
        spec = OPS.get(node.op)
        if spec is None:
            raise UnsupportedOpError(f"{where}: node '{node.name}' uses operator '{node.op}', which "
                                     f"fastcnn does not support. Supported operators: "
                                     f"{supported_ops_text()}")
        (lo, hi), (olo, ohi) = spec.inputs, spec.outputs
        if len(node.inputs) < lo or (hi is not None and len(node.inputs) > hi) or \
                not olo <= len(node.outputs) <= ohi:
            raise GraphError(f"{where}: node '{node.name}' ({node.op}) has {len(node.inputs)} "
                             f"inputs and {len(node.outputs)} outputs; {node.op} takes {lo} to "
                             f"{hi if hi is not None else 'any number of'} inputs and produces "
                             f"{olo} to {ohi} outputs")
        resolve_attrs(node, spec, where)


def use_counts(graph: Graph) -> dict:
    """value -> number of node inputs reading it, plus one per graph output naming it."""
    counts = {}
    for n in graph.nodes:
        for x in n.inputs:
            if x:
                counts[x] = counts.get(x, 0) + 1
    for t in graph.outputs:
        counts[t.name] = counts.get(t.name, 0) + 1
    return counts


def readers_index(graph: Graph) -> dict:
    """value -> the nodes reading it, a node once per input slot that names the value."""
    index = {}
    for n in graph.nodes:
        for x in n.inputs:
            if x:
                index.setdefault(x, []).append(n)
    return index


def single_consumer(graph: Graph, value: str, readers: dict | None = None):
    """The only node reading `value` if exactly one node reads it once and it is no graph output.

    readers: `readers_index(graph)`, for a pass that asks about every node: each question then
    costs a lookup instead of a scan of all nodes (a pass over n nodes was O(n^2): 1 of the 1.9
    s loading a 3200-node model). A pass that rewires nodes while it asks keeps it up to date."""
    if any(t.name == value for t in graph.outputs):
        return None
    if readers is None:
        found = [n for n in graph.nodes for x in n.inputs if x == value]
    else:
        found = readers.get(value, ())
    return found[0] if len(found) == 1 else None


def scalar_const(graph: Graph, name: str):
    """The value of a one-element float initializer `name`, else None."""
    v = graph.initializers.get(name)
    if v is None or np.size(v) != 1 or np.asarray(v).dtype.kind != "f":
        return None
    return float(np.asarray(v).reshape(-1)[0])

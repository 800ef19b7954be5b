"""Type inference and constant propagation over a whole graph.

Given concrete input shapes, `infer_graph` walks the nodes in topological order, validates every
node (arity, attributes, shapes, dtypes: the op's shape function does this) and computes every
tensor's `ValueType`. Tensors whose value is known while planning (initializers, and outputs of
foldable ops whose inputs are known, such as Shape -> Gather -> Concat chains) get their value
computed with numpy. Kernels only ever run on what is left.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastcnn import config
from fastcnn.errors import FastCNNError, GraphError, ResourceLimitError, UnsupportedOpError
from fastcnn.ir.graph import DTYPES, Graph, ValueType, dtype_name
from fastcnn.ir.opspec import NodeContext, resolve_attrs

# Folded tensors larger than this stay runtime tensors (folding must not blow up memory).
FOLD_MAX_BYTES = 64 << 20


@dataclass
class Inferred:
    """Result of `infer_graph`.

    types:  value name -> ValueType, for every value in the graph.
    consts: value name -> numpy array, for every value known while planning.
    attrs:  node name -> attributes with defaults filled in (validated).
    """

    types: dict
    consts: dict
    attrs: dict


def initializer_type(where: str, name: str, arr) -> ValueType:
    """The ValueType of an initializer; UnsupportedOpError naming it when it is not an array of
    one of the IR's element types (DTYPES). Passes compute with initializers before any type
    inference (BatchNorm folding converts them to float64), so check_structure asks too."""
    dtype = dtype_name(arr.dtype) if isinstance(arr, np.ndarray) else None
    if dtype not in _IR_DTYPES:
        raise UnsupportedOpError(f"{where}: initializer '{name}' has element type "
                                 f"{getattr(arr, 'dtype', type(arr).__name__)}; fastcnn tensors "
                                 f"are {', '.join(DTYPES)}")
    return ValueType(tuple(arr.shape), dtype)


_IR_DTYPES = frozenset(DTYPES)


def _filled_bytes(t: ValueType) -> int:
    """The bytes of t with every zero dimension taken as 1."""
    return ValueType(tuple(d or 1 for d in t.shape), t.dtype).nbytes


def supported_ops_text() -> str:
    from fastcnn.ir.ops import OPS
    return ", ".join(sorted(OPS))


def infer_graph(graph: Graph, input_types: dict, *, fold: bool = True,
                max_tensor_bytes: int | None = None, attrs: dict | None = None) -> Inferred:
    """Infer the type of every value of `graph` for the given input types.

    input_types: graph input name -> ValueType with concrete dims (the caller substitutes the
    dynamic ones). attrs: `Inferred.attrs` of an earlier inference of this same graph, whose
    attributes are then not validated again. Raises GraphError / UnsupportedOpError /
    ResourceLimitError naming the node.
    """
    from fastcnn.ir.ops import OPS

    where = graph.where()
    limit = config.memory_limit() if max_tensor_bytes is None else max_tensor_bytes
    types, consts, attrs_by_node = {}, {}, {}
    for spec in graph.inputs:
        if spec.name not in input_types:
            raise GraphError(f"{where}: no type given for graph input '{spec.name}'")
        t = input_types[spec.name]
        types[spec.name] = ValueType(tuple(int(d) for d in t.shape), t.dtype)
    for name, arr in graph.initializers.items():
        types[name] = initializer_type(where, name, arr)
        consts[name] = arr

    for node in graph.nodes:
        spec = OPS.get(node.op)
        if spec is None:
            raise UnsupportedOpError(
                f"{where}: node '{node.name}' uses operator '{node.op}', which fastcnn does not "
                f"support. Supported operators: {supported_ops_text()}")
        lo, hi = spec.inputs
        n_in = len(node.inputs)
        if n_in < lo or (hi is not None and n_in > hi):
            want = f"{lo}" if lo == hi else f"{lo} to {hi if hi is not None else 'any number of'}"
            raise GraphError(f"{where}: node '{node.name}' ({node.op}) has {n_in} inputs; "
                             f"{node.op} takes {want}")
        olo, ohi = spec.outputs
        if not olo <= len(node.outputs) <= ohi:
            raise GraphError(f"{where}: node '{node.name}' ({node.op}) has {len(node.outputs)} "
                             f"outputs; {node.op} produces {olo} to {ohi}")
        node_attrs = attrs.get(node.name) if attrs is not None else None
        if node_attrs is None:
            node_attrs = resolve_attrs(node, spec, where)
        attrs_by_node[node.name] = node_attrs
        in_types = [types[x] if x else None for x in node.inputs]
        in_consts = [consts.get(x) if x else None for x in node.inputs]
        ctx = NodeContext(node, node_attrs, in_types, in_consts, where)
        try:
            out_types = spec.infer(ctx)
        except FastCNNError:
            raise
        except (ValueError, TypeError, IndexError, KeyError, OverflowError, ZeroDivisionError) as e:
            # A shape function tripping over absurd data is still a graph error, never a crash.
            raise GraphError(f"{where}: node '{node.name}' ({node.op}): invalid attributes or "
                             f"shapes ({type(e).__name__}: {e})") from None
        if len(out_types) < len(node.outputs):
            raise GraphError(f"{where}: node '{node.name}' ({node.op}) declares "
                             f"{len(node.outputs)} outputs but produces {len(out_types)}")
        out_types = out_types[:len(node.outputs)]
        for name, t in zip(node.outputs, out_types):
            if any(d < 0 for d in t.shape):
                raise GraphError(f"{where}: node '{node.name}' ({node.op}): output '{name}' would "
                                 f"have a negative dimension {list(t.shape)}")
            if t.nbytes > limit:
                raise ResourceLimitError(
                    f"{where}: node '{node.name}' ({node.op}): output '{name}' would need "
                    f"{t.nbytes:,} bytes ({t}), more than the memory limit of {limit:,} bytes "
                    f"(fastcnn.set_memory_limit, FASTCNN_MEMORY_LIMIT)")
            if 0 in t.shape and _filled_bytes(t) > limit:
                # empty, but numpy cannot even describe the shape (its other dimensions
                # multiply past what an array may hold): no view of the arena takes it
                raise ResourceLimitError(
                    f"{where}: node '{node.name}' ({node.op}): output '{name}' has the shape "
                    f"{list(t.shape)}: empty, but its other dimensions would hold "
                    f"{_filled_bytes(t):,} bytes, more than the memory limit of {limit:,} bytes "
                    f"(fastcnn.set_memory_limit, FASTCNN_MEMORY_LIMIT)")
            if name:
                types[name] = t
        if not fold or spec.fold is None:
            continue
        if not spec.fold_on_types and not all(c is not None for x, c in zip(node.inputs, in_consts) if x):
            continue
        if sum(t.nbytes for t in out_types) > FOLD_MAX_BYTES:
            continue
        try:
            values = spec.fold(ctx, in_consts)
        except FastCNNError:
            raise
        except (ValueError, TypeError, IndexError, KeyError, OverflowError, ZeroDivisionError,
                FloatingPointError) as e:
            raise GraphError(f"{where}: node '{node.name}' ({node.op}): cannot evaluate constant "
                             f"inputs ({type(e).__name__}: {e})") from None
        if values is None:
            continue
        for name, t, v in zip(node.outputs, out_types, values):
            v = np.asarray(v)
            if dtype_name(v.dtype) != t.dtype:
                v = v.astype(t.dtype)
            if tuple(v.shape) != t.shape:
                raise GraphError(f"{where}: node '{node.name}' ({node.op}): folded value of "
                                 f"'{name}' has shape {list(v.shape)}, inferred {list(t.shape)}")
            if name:
                consts[name] = v
    return Inferred(types, consts, attrs_by_node)

"""Model FLOPs counted from the graph: 2 * multiply-accumulates of every conv and dense layer.

Elementwise ops, pooling and normalisation are not counted (they are memory-bound and small next
to the convs), so GFLOP/s figures compare with a matmul peak. The rules take ONNX semantics,
which fastcnn's IR shares, so one table serves both the ONNX file (run.py) and fastcnn's graph
after its passes (profile_model.py).
"""
from __future__ import annotations

import numpy as np


def _prod(dims) -> int:
    return int(np.prod([int(d) for d in dims], dtype=np.int64))


def conv_flops(attrs, in_shapes, out_shapes) -> int:
    """x (n, c_in, *spatial), w (c_out, c_in/group, *kernel) -> y (n, c_out, *spatial_out):
    each output element takes c_in/group * prod(kernel) MACs."""
    return 2 * _prod(out_shapes[0]) * _prod(in_shapes[1][1:])


def gemm_flops(attrs, in_shapes, out_shapes) -> int:
    """A (m, k) or (k, m) with transA, y (m, n): m*n*k MACs."""
    a = in_shapes[0]
    k = a[0] if attrs.get("transA", 0) else a[1]
    return 2 * _prod(out_shapes[0]) * int(k)


def matmul_flops(attrs, in_shapes, out_shapes) -> int:
    """A (..., m, k) @ B (..., k, n) -> (..., m, n); a 1-D A is a row of k."""
    return 2 * _prod(out_shapes[0]) * int(in_shapes[0][-1])


FLOP_RULES = {"Conv": conv_flops, "Gemm": gemm_flops, "MatMul": matmul_flops}


def node_flops(op: str, attrs: dict, in_shapes, out_shapes) -> int:
    """FLOPs of one node (0 for ops that are not conv/dense)."""
    rule = FLOP_RULES.get(op)
    return rule(attrs, in_shapes, out_shapes) if rule else 0


def onnx_flops(model, input_shape) -> int:
    """Total conv/dense FLOPs of an ONNX model (ModelProto or path) for one input of
    `input_shape` (concrete, batch included), using onnx's shape inference."""
    import onnx
    from onnx import helper, shape_inference

    if isinstance(model, str):
        model = onnx.load(model)
    model = onnx.ModelProto.FromString(model.SerializeToString())  # keep the caller's copy intact
    graph = model.graph
    init_names = {t.name for t in graph.initializer}
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    runtime_inputs = [i for i in graph.input if i.name not in init_names]
    if len(runtime_inputs) != 1:
        raise ValueError(f"onnx_flops expects one runtime input, got {len(runtime_inputs)}")
    dims = runtime_inputs[0].type.tensor_type.shape.dim
    for d, v in zip(dims, input_shape):
        d.Clear()
        d.dim_value = int(v)
    shapes[runtime_inputs[0].name] = tuple(int(v) for v in input_shape)
    inferred = shape_inference.infer_shapes(model, strict_mode=True)
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            shapes[vi.name] = tuple(d.dim_value for d in t.shape.dim)
    total = 0
    for node in graph.node:
        if node.op_type not in FLOP_RULES:
            continue
        try:
            ins = [shapes[x] for x in node.input if x]
            outs = [shapes[node.output[0]]]
        except KeyError as e:
            raise ValueError(f"onnx_flops: no inferred shape for {e} (node '{node.name}')") from None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        total += node_flops(node.op_type, attrs, ins, outs)
    return total


def fastcnn_layers(model, input_shape) -> dict:
    """Per node of a loaded fastcnn Model's graph (after its passes, so a Conv with a folded
    BatchNormalization counts once), for one input of `input_shape`:
    node name -> (flops, output shape, attributes with defaults filled in)."""
    from fastcnn.ir.graph import ValueType
    from fastcnn.ir.infer import infer_graph

    graph = model.graph
    types = {graph.inputs[0].name: ValueType(tuple(int(d) for d in input_shape), "float32")}
    inferred = infer_graph(graph, types)
    out = {}
    for node in graph.nodes:
        attrs = inferred.attrs.get(node.name, node.attrs)
        ins = [inferred.types[x].shape for x in node.inputs if x]
        outs = [inferred.types[o].shape for o in node.outputs if o]
        out[node.name] = (node_flops(node.op, attrs, ins, outs), outs[0] if outs else (), attrs)
    return out

"""Run one operator through fastcnn (IR graph or ONNX file) and through onnxruntime.

    run_op("Relu", {"x": x})                      -> fastcnn output of a one-node IR graph
    run_op("Add", {"a": a}, consts={"b": b}, order=["a", "b"])
    onnx_vs_ort(onnx_node, {"x": x}, inits, opset) -> (fastcnn outputs, onnxruntime outputs)

Inputs in `feeds` are runtime graph inputs (so the kernel runs, nothing is folded); `consts`
become initializers. `layout` re-lays the fed arrays (Fortran order, strided views) without
changing their values.
"""
from __future__ import annotations

import numpy as np
import pytest

from helpers import ir_model, onnx_model, run_fastcnn_onnx, run_ort


def relayout(x: np.ndarray, layout: str) -> np.ndarray:
    """The same values as x in another memory layout: "C", "F" or "strided" (step 2 on the
    last axis of a larger buffer)."""
    if x.ndim == 0:
        return x
    if layout == "C":
        return np.ascontiguousarray(x)
    if layout == "F":
        return np.asfortranarray(x)
    big = np.full(x.shape[:-1] + (2 * x.shape[-1],), np.nan, x.dtype)
    big[..., ::2] = x
    view = big[..., ::2]
    assert not view.flags.c_contiguous or x.shape[-1] <= 1
    return view


def run_op(op, feeds, attrs=None, consts=None, order=None, outputs=("y",), threads=1,
           layout="C", passes=True):
    """Run a one-node IR graph. order: the node's input names in slot order ("" for omitted),
    default feeds then consts. Returns the list of outputs."""
    consts = consts or {}
    order = list(order) if order is not None else list(feeds) + list(consts)
    m = ir_model([(op, order, list(outputs), attrs or {})],
                 {k: v.shape for k, v in feeds.items()}, list(outputs), consts,
                 num_threads=threads, passes=passes)
    return m.run(None, {k: relayout(np.asarray(v, np.float32), layout) for k, v in feeds.items()})


def onnx_vs_ort(nodes, feeds, inits=None, opset=17, outputs=("y",), threads=1):
    """Build an ONNX model from NodeProtos and run it in fastcnn and onnxruntime."""
    if not isinstance(nodes, (list, tuple)):
        nodes = [nodes]
    model = onnx_model(list(nodes), {k: v.shape for k, v in feeds.items()}, list(outputs),
                       inits or {}, opset=opset)
    ref = run_ort(model, feeds)
    got = run_fastcnn_onnx(model, feeds, num_threads=threads)
    return got, ref


def node(op, inputs, outputs=("y",), **attrs):
    onnx = pytest.importorskip("onnx")
    return onnx.helper.make_node(op, list(inputs), list(outputs), **attrs)


def with_specials(x: np.ndarray) -> np.ndarray:
    """x with NaN, +inf, -inf, 0, -0 and huge values written at its first positions."""
    x = np.array(x, np.float32, copy=True)
    flat = x.reshape(-1)
    specials = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 1e-30]
    flat[:len(specials)] = specials[:flat.size]
    return x

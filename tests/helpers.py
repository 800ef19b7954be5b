"""Helpers for building small graphs and comparing fastcnn with references.

- `ir_model(nodes, inputs, outputs, initializers)`: a Model straight from IR nodes (no onnx needed).
- `onnx_model(nodes, inputs, outputs, initializers, opset)`: an onnx ModelProto via onnx.helper.
- `run_fastcnn_onnx(model_proto, feeds)`: load the proto with fastcnn and run it.
- `run_ort(model_proto, feeds)`: onnxruntime's outputs (the test is skipped without onnxruntime).
- `assert_close(got, ref)`: the project tolerance, max|d| <= 1e-4 + 1e-3 * max|ref|.
- `fastcnn_env()`, `run_isolated(code, cwd)`: a child interpreter importing this fastcnn.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

import fastcnn
from fastcnn.ir.graph import Graph, Node, TensorSpec
from fastcnn.model import Model


def tolerance(ref) -> float:
    ref = np.asarray(ref, np.float64)
    finite = ref[np.isfinite(ref)]
    return 1e-4 + 1e-3 * (float(np.abs(finite).max()) if finite.size else 0.0)


def assert_close(got, ref, what=""):
    got = np.asarray(got)
    ref = np.asarray(ref)
    assert got.shape == ref.shape, f"{what} shape {got.shape} != reference {ref.shape}"
    same_nan = np.isnan(got) == np.isnan(ref)
    assert same_nan.all(), f"{what} NaN positions differ"
    mask = ~np.isnan(ref)
    g, r = got[mask].astype(np.float64), ref[mask].astype(np.float64)
    inf = np.isinf(r)
    assert (g[inf] == r[inf]).all(), f"{what} infinities differ"
    if (~inf).any():
        err = float(np.abs(g[~inf] - r[~inf]).max())
        tol = tolerance(r[~inf])
        assert err <= tol, f"{what} max abs error {err:.3g} > tolerance {tol:.3g}"


def rand(rng, *shape, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, size=shape).astype(np.float32)


def ir_model(nodes, inputs, outputs, initializers=None, num_threads=1, passes=True, metadata=None,
             split_batch=True):
    """Build and check a Graph from IR pieces and return a Model.

    nodes: list of Node or (op, inputs, outputs, attrs) tuples; inputs: dict name -> shape
    (None for dynamic dims); outputs: list of names; initializers: dict name -> array."""
    built = []
    for i, n in enumerate(nodes):
        if not isinstance(n, Node):
            op, ins, outs = n[:3]
            attrs = n[3] if len(n) > 3 else {}
            n = Node(op, f"{op.lower()}{i}", list(ins), list(outs), dict(attrs))
        built.append(n)
    g = Graph("test", [TensorSpec(k, tuple(v)) for k, v in inputs.items()],
              [TensorSpec(o, ()) for o in outputs], built,
              {k: np.asarray(v) for k, v in (initializers or {}).items()}, metadata or {}, source="test")
    g.check()
    if passes:
        from fastcnn.passes import run_pipeline
        g = run_pipeline(g)
    return Model(g, num_threads=num_threads, split_batch=split_batch)


def onnx_model(nodes, inputs, outputs, initializers=None, opset=17):
    """nodes: onnx NodeProtos; inputs/outputs: dict name -> shape (None dims allowed) or list of
    names for outputs (shape unknown); initializers: dict name -> numpy array."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    ins = [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v)) for k, v in inputs.items()]
    if isinstance(outputs, dict):
        outs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v) if v is not None else None)
                for k, v in outputs.items()]
    else:
        outs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, None) for k in outputs]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()]
    graph = helper.make_graph(nodes, "test", ins, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    return model


def save_onnx(model, directory=None) -> str:
    import onnx
    fd, path = tempfile.mkstemp(suffix=".onnx", dir=directory)
    os.close(fd)
    onnx.save(model, path)
    return path


def run_fastcnn_onnx(model, feeds, num_threads=1):
    path = save_onnx(model)
    try:
        m = fastcnn.load(path, num_threads=num_threads)
        return m.run(None, feeds)
    finally:
        os.unlink(path)


def run_ort(model, feeds):
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def fastcnn_env(extra_paths=()) -> dict:
    """Environment for a child interpreter that imports the same fastcnn as this test run (the
    installed package in CI, the in-place build during development), never the source tree by
    accident. Run children with cwd outside the checkout."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastcnn.__file__)))
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([root, *extra_paths] + rest)
    return env


def run_isolated(code: str, cwd, env=None, timeout=120):
    """Run `code` (dedented) in a fresh interpreter with `env` (default fastcnn_env()); cwd
    outside the source tree, so an unbuilt checkout is never imported by accident."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=str(cwd),
                          env=fastcnn_env() if env is None else env, capture_output=True,
                          text=True, timeout=timeout)

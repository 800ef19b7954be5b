"""fold_transposes: graphs give the same outputs before and after, and the transposes are gone."""
import numpy as np
import pytest

from fastcnn.ir.graph import Graph, Node, TensorSpec
from fastcnn.model import Model
from fastcnn.passes import run_pipeline
from fastcnn.passes.transposes import fold_transposes
from helpers import assert_close


def _graph(nodes, inputs, outputs, inits):
    g = Graph("t", [TensorSpec(k, v) for k, v in inputs.items()], [TensorSpec(o, ()) for o in outputs],
              [Node(op, f"n{i}", ins, outs, attrs) for i, (op, ins, outs, attrs) in enumerate(nodes)],
              {k: np.asarray(v) for k, v in inits.items()}, source="t")
    return g.check()


def _run(g, feeds):
    return Model(g, num_threads=1).run(None, feeds)


def _ops(g):
    return [n.op for n in g.nodes]


@pytest.mark.parametrize("perm", [[0, 2, 3, 1], [0, 3, 1, 2], [0, 1, 3, 2], [0, 3, 2, 1]])
@pytest.mark.parametrize("dense", ["Gemm", "GemmT", "MatMul"])
def test_transpose_flatten_dense_folds(perm, dense, threads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    w = rng.standard_normal((120, 7)).astype(np.float32)
    op, attrs, b = ("Gemm", {"transB": 1}, w.T.copy()) if dense == "GemmT" else (dense, {}, w)
    g = _graph([("Transpose", ["x"], ["t"], {"perm": perm}), ("Flatten", ["t"], ["f"], {"axis": 1}),
                (op, ["f", "w"], ["y"], attrs)], {"x": (None, 4, 5, 6)}, ["y"], {"w": b})
    ref = np.transpose(x, perm).reshape(3, -1).astype(np.float64) @ w
    folded = run_pipeline(g)
    assert "Transpose" not in _ops(folded)
    assert_close(Model(folded, num_threads=threads).run(None, {"x": x})[0], ref)
    assert_close(_run(g, {"x": x})[0], ref)


def test_transpose_pairs_cancel_and_compose():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    g = _graph([("Transpose", ["x"], ["a"], {"perm": [0, 2, 3, 1]}), ("Transpose", ["a"], ["b"], {"perm": [0, 3, 1, 2]}),
                ("Relu", ["b"], ["c"], {}), ("Transpose", ["c"], ["d"], {"perm": [0, 2, 3, 1]}),
                ("Transpose", ["d"], ["e"], {"perm": [0, 2, 1, 3]})],
               {"x": (None, 3, 4, 5)}, ["c", "e"], {})
    out = run_pipeline(g)
    assert _ops(out).count("Transpose") == 1     # x -> relu needs none; relu -> e needs one
    got = _run(out, {"x": x})
    assert_close(got[0], np.maximum(x, 0))
    assert_close(got[1], np.transpose(np.maximum(x, 0), (0, 3, 2, 1)))


def test_not_folded_when_the_transpose_is_shared_or_batch_moves():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    w = rng.standard_normal((12, 2)).astype(np.float32)
    g = _graph([("Transpose", ["x"], ["t"], {"perm": [0, 2, 1]}), ("Flatten", ["t"], ["f"], {"axis": 1}),
                ("Gemm", ["f", "w"], ["y"], {}), ("Relu", ["t"], ["r"], {})],
               {"x": (2, 3, 4)}, ["y", "r"], {"w": w})
    out = fold_transposes(g)
    assert "Transpose" in _ops(out)
    got = _run(run_pipeline(g), {"x": x})
    assert_close(got[0], np.transpose(x, (0, 2, 1)).reshape(2, -1) @ w)
    g2 = _graph([("Transpose", ["x"], ["t"], {"perm": [1, 0, 2]}), ("Flatten", ["t"], ["f"], {"axis": 1}),
                 ("Gemm", ["f", "w2"], ["y"], {})], {"x": (2, 3, 4)}, ["y"], {"w2": rng.standard_normal((8, 2)).astype(np.float32)})
    assert "Transpose" in _ops(fold_transposes(g2))

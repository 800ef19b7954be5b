"""TopK: the k largest or smallest values and their int64 indices along an axis, computed at
run time and folded, against a reference written here (NaN first, equal values in index order)
and against onnxruntime (opsets 9, 11 and 13, ties, batches split over threads, an empty
batch); k out of range or unknown while planning is refused."""
import numpy as np
import pytest

import fastcnn
from fastcnn.runtime import batch_split
from helpers import rand, run_ort, save_onnx
from oputil import run_op

RNG = np.random.default_rng(29)


def _reference(x, k, axis, largest):
    """Per position along `axis`, indices ordered by (NaN first, value, index)."""
    xm = np.moveaxis(x, axis, -1)
    flat = xm.reshape(-1, xm.shape[-1])
    idx = np.empty((flat.shape[0], k), np.int64)
    for r, row in enumerate(flat):
        order = sorted(range(len(row)), key=lambda j: (not np.isnan(row[j]),
                                                      0 if np.isnan(row[j]) else (-row[j] if largest else row[j]), j))
        idx[r] = order[:k]
    idx = np.moveaxis(idx.reshape(xm.shape[:-1] + (k,)), -1, axis)
    return np.take_along_axis(x, idx, axis=axis), idx


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("largest", [1, 0])
@pytest.mark.parametrize("k", [0, 1, 3, 7])
def test_run_time_against_the_reference(axis, largest, k, threads):
    x = np.round(rand(RNG, 7, 9, 7, lo=-3, hi=3))   # few distinct values: ties everywhere
    x.reshape(-1)[[0, 5, 40, 41, 300]] = [np.nan, np.inf, np.nan, -np.inf, np.nan]
    values, indices = run_op("TopK", {"x": x}, consts={"k": np.array([k], np.int64)},
                             attrs={"axis": axis, "largest": largest}, outputs=("v", "i"), threads=threads)
    want_v, want_i = _reference(x, k, axis, largest)
    assert indices.dtype == np.int64 and values.shape == want_v.shape
    np.testing.assert_array_equal(indices, want_i)
    np.testing.assert_array_equal(values, want_v)


def test_long_rows_on_two_threads():
    x = rand(RNG, 64, 1000)
    values, indices = run_op("TopK", {"x": x}, consts={"k": np.array([5], np.int64)}, outputs=("v", "i"),
                             threads=2)
    want = np.argsort(-x, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(indices, want)
    np.testing.assert_array_equal(values, np.take_along_axis(x, want, 1))


def test_folded_when_its_input_is_constant():
    from fastcnn.ir.fold import topk
    from fastcnn.ir.graph import Node

    class Ctx:
        node = Node("TopK", "t", ["c", "k"], ["v", "i"])
        attrs = {"axis": 0, "largest": 0, "sorted": 1}

        @staticmethod
        def axis(a, rank):
            return a % rank
    c = np.array([[2.0, np.nan], [2.0, 1.0], [-1.0, 3.0]], np.float32)
    v, i = topk(Ctx, [c, np.array([2], np.int64)])
    want_v, want_i = _reference(c, 2, 0, False)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_array_equal(v, want_v)


@pytest.mark.parametrize("k, message", [
    (np.array([10], np.int64), r"k=10 is out of range for an axis of 9"),
    (np.array([-1], np.int64), r"k=-1 is out of range"),
    (np.array([1, 2], np.int64), r"k must hold one value, got 2"),
])
def test_bad_k_is_refused(k, message):
    with pytest.raises(fastcnn.GraphError, match=message):
        run_op("TopK", {"x": rand(RNG, 4, 9)}, consts={"k": k}, outputs=("v", "i"))


def test_k_known_only_at_run_time_is_refused():
    with pytest.raises(fastcnn.UnsupportedOpError, match=r"input 1 \('k'\) \(k\) must be a constant"):
        run_op("TopK", {"x": rand(RNG, 4, 9), "k": rand(RNG, 1)}, outputs=("v", "i"))


def _onnx_topk(opset, k, axis, largest, x_shape=("N", 6, 12), read_indices=None):
    onnx = pytest.importorskip("onnx")
    h, TensorProto = onnx.helper, onnx.TensorProto
    attrs = {"axis": axis}
    if opset >= 11:
        attrs["largest"] = largest
    inits = []
    if opset < 10:
        attrs["k"] = k
        ins = ["x"]
    else:
        ins = ["x", "k"]
        inits.append(onnx.numpy_helper.from_array(np.array([k], np.int64), "k"))
    nodes = [h.make_node("TopK", ins, ["v", "i"], **attrs)]
    outs = [h.make_tensor_value_info("v", TensorProto.FLOAT, None)]
    if read_indices is None:
        outs.append(h.make_tensor_value_info("i", TensorProto.INT64, None))
    else:
        attrs = {"to": TensorProto.FLOAT} if read_indices == "Cast" else {"axis": -1}
        nodes.append(h.make_node(read_indices, ["i"] if read_indices == "Cast" else ["i", "i"], ["j"], **attrs))
        outs.append(h.make_tensor_value_info("j", TensorProto.FLOAT, None))
    graph = h.make_graph(nodes, "topk", [h.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))], outs, inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    model.ir_version = 7
    return model


@pytest.mark.parametrize("opset, k, axis, largest", [(13, 5, -1, 1), (13, 3, 1, 0), (11, 12, 2, 1),
                                                     (9, 4, 1, 1), (13, 0, -1, 1)])
def test_against_onnxruntime(opset, k, axis, largest, tmp_path, monkeypatch):
    model = _onnx_topk(opset, k, axis, largest)
    m = fastcnn.load(save_onnx(model, str(tmp_path)), num_threads=2)
    monkeypatch.setattr(batch_split, "MIN_PART_FLOPS", 0)   # a part per thread, however small
    assert (m._choose_split(((16, 6, 12),), 2) is not None) == (axis != 0)
    for batch in (1, 16, 0):   # 16 on two threads runs in parts (TopK not along the batch)
        x = np.round(rand(RNG, batch, 6, 12, lo=-4, hi=4))   # ties
        got, want = m.run(None, {"x": x}), run_ort(model, {"x": x})
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(g, w)


def test_indices_cast_to_float_and_refused_elsewhere(tmp_path):
    model = _onnx_topk(13, 3, -1, 1, read_indices="Cast")
    m = fastcnn.load(save_onnx(model, str(tmp_path)))
    x = rand(RNG, 2, 6, 12)
    np.testing.assert_array_equal(m.run(None, {"x": x})[1], run_ort(model, {"x": x})[1])
    bad = _onnx_topk(13, 3, -1, 1, read_indices="Concat")
    with pytest.raises(fastcnn.UnsupportedOpError,
                       match=r"node '\w*' \(Concat\) reads the int64 tensor 'i', computed at run time"):
        fastcnn.load(save_onnx(bad, str(tmp_path)))

"""ArgMax and ArgMin computed at run time: int64 class indices as a graph output, through a view
(Squeeze, Reshape, ...) or cast to float32, against numpy and onnxruntime: every axis, keepdims,
select_last_index, ties and NaN, batches split over threads and an empty batch; any other
reader of the indices is refused before anything runs."""
import numpy as np
import pytest

import fastcnn
from fastcnn.runtime import batch_split
from helpers import rand, run_ort, save_onnx
from oputil import node, run_op, with_specials

RNG = np.random.default_rng(23)


def _numpy(op, x, axis, keepdims, last):
    fn = np.argmax if op == "ArgMax" else np.argmin
    r = x.shape[axis] - 1 - fn(np.flip(x, axis), axis) if last else fn(x, axis)
    return np.expand_dims(r, axis) if keepdims else r


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis", [0, 1, 3, -1])
@pytest.mark.parametrize("keepdims, last", [(1, 0), (0, 0), (1, 1), (0, 1)])
def test_against_numpy_with_ties_and_nan(op, axis, keepdims, last, threads):
    x = np.round(rand(RNG, 3, 9, 5, 7, lo=-2, hi=2))   # few distinct values: many ties
    x = with_specials(x)                                # NaN, infinities, -0.0 at the front
    x[1, 2, 3] = np.nan                                 # a NaN inside a reduced run too
    got = run_op(op, {"x": x}, attrs={"axis": axis, "keepdims": keepdims, "select_last_index": last},
                 threads=threads)[0]
    want = _numpy(op, x, axis, keepdims, last)
    assert got.dtype == np.int64 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_large_input_on_two_threads():
    x = rand(RNG, 4, 21, 64, 64)
    got = run_op("ArgMax", {"x": x}, attrs={"axis": 1, "keepdims": 0}, threads=2)[0]
    np.testing.assert_array_equal(got, np.argmax(x, 1))


def _segmenter(tail, inits=None, y_type="int64"):
    """Conv 3 -> 5 classes on a dynamic batch, then `tail` (nodes from 'c') writing 'y'."""
    onnx = pytest.importorskip("onnx")
    h, TensorProto = onnx.helper, onnx.TensorProto
    w = rand(RNG, 5, 3, 3, 3, lo=-1, hi=1)
    nodes = [node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])] + tail
    elem = TensorProto.INT64 if y_type == "int64" else TensorProto.FLOAT
    graph = h.make_graph(nodes, "seg", [h.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 10])],
                         [h.make_tensor_value_info("y", elem, None)],
                         [onnx.numpy_helper.from_array(v, k) for k, v in {"w": w, **(inits or {})}.items()])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("case", ["segmentation", "squeezed", "cast"])
def test_as_exported_against_onnxruntime(case, tmp_path, monkeypatch):
    if case == "segmentation":     # a segmentation map
        model = _segmenter([node("ArgMax", ["c"], ["y"], axis=1, keepdims=0)])
    elif case == "squeezed":       # keepdims, then a view
        model = _segmenter([node("ArgMax", ["c"], ["a"], axis=1), node("Squeeze", ["a", "one"], ["y"])],
                           {"one": np.array([1], np.int64)})
    else:                          # argmin(...).float()
        model = _segmenter([node("ReduceMean", ["c"], ["m"], axes=[2, 3], keepdims=0),
                            node("ArgMin", ["m"], ["a"], axis=-1, select_last_index=1),
                            node("Cast", ["a"], ["y"], to=1)], y_type="float32")
    path = save_onnx(model, str(tmp_path))
    m = fastcnn.load(path, num_threads=2)
    monkeypatch.setattr(batch_split, "MIN_PART_FLOPS", 0)   # a part per thread, however small
    assert m._choose_split(((16, 3, 12, 10),), 2) is not None
    for batch in (1, 16, 0):   # 16 on two threads runs in parts; 0 runs nothing
        x = rand(RNG, batch, 3, 12, 10)
        got, want = m.run(None, {"x": x})[0], run_ort(model, {"x": x})[0]
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert m.outputs[0].dtype == str(want.dtype)


def test_any_other_reader_of_the_indices_is_refused(tmp_path):
    TensorProto = pytest.importorskip("onnx").TensorProto
    model = _segmenter([node("ArgMax", ["c"], ["a"], axis=1), node("Cast", ["a"], ["i"], to=TensorProto.INT32),
                        node("Cast", ["i"], ["y"], to=1)], y_type="float32")
    with pytest.raises(fastcnn.UnsupportedOpError,
                       match=r"node 'Cast_\d+' \(Cast\) reads the int64 tensor 'a', computed at run time"):
        fastcnn.load(save_onnx(model, str(tmp_path)))

"""ONNX importer: opset variants of the same op agree, initializers listed as inputs are weights,
dynamic batch stays dynamic, unsupported ops/domains and bad files raise clear errors."""
import os
import warnings

import numpy as np
import pytest

import fastcnn
from helpers import assert_close, onnx_model, rand, run_fastcnn_onnx, run_ort, save_onnx

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

RNG = np.random.default_rng(11)
I64 = np.int64


def N(op, ins, outs=("y",), **attrs):
    return helper.make_node(op, list(ins), list(outs), **attrs)


# Each family: one input x (3, 4, 5, 6) and a list of (opset, nodes, initializers) that all
# compute the same function.
X_SHAPE = (3, 4, 5, 6)
VARIANTS = {
    "Softmax_last_axis": [(11, [N("Softmax", ["x"], axis=3)], {}), (13, [N("Softmax", ["x"], axis=-1)], {}),
                          (6, [N("Softmax", ["x"], axis=3)], {}), (21, [N("Softmax", ["x"], axis=-1)], {})],
    "LogSoftmax_axis1_flat": [(11, [N("LogSoftmax", ["x"], axis=1)], {}),
                              (13, [N("Reshape", ["x", "s"], ["f"]), N("LogSoftmax", ["f"], ["g"], axis=1),
                                    N("Reshape", ["g", "s2"])], {"s": np.array([3, -1], I64),
                                                                 "s2": np.array(X_SHAPE, I64)})],
    "ReduceMean_axes": [(11, [N("ReduceMean", ["x"], axes=[1, 3], keepdims=1)], {}),
                        (13, [N("ReduceMean", ["x"], axes=[-3, -1])], {}),
                        (18, [N("ReduceMean", ["x", "a"])], {"a": np.array([1, 3], I64)}),
                        (21, [N("ReduceMean", ["x", "a"])], {"a": np.array([1, 3], I64)})],
    "ReduceSum_axes": [(11, [N("ReduceSum", ["x"], axes=[2], keepdims=0)], {}),
                       (13, [N("ReduceSum", ["x", "a"], keepdims=0)], {"a": np.array([2], I64)})],
    "Squeeze_Unsqueeze": [(11, [N("Unsqueeze", ["x"], ["u"], axes=[0, 3]), N("Squeeze", ["u"], axes=[0])], {}),
                          (13, [N("Unsqueeze", ["x", "a"], ["u"]), N("Squeeze", ["u", "b"])],
                           {"a": np.array([0, 3], I64), "b": np.array([0], I64)})],
    "Split": [(11, [N("Split", ["x"], ["a", "b"], axis=1, split=[1, 3]), N("Sub", ["b", "a"])], {}),
              (13, [N("Split", ["x", "s"], ["a", "b"], axis=1), N("Sub", ["b", "a"])], {"s": np.array([1, 3], I64)}),
              (18, [N("Split", ["x", "s"], ["a", "b"], axis=1), N("Sub", ["b", "a"])], {"s": np.array([1, 3], I64)})],
    "Clip": [(6, [N("Clip", ["x"], min=-0.5, max=0.25)], {}),
             (11, [N("Clip", ["x", "lo", "hi"])], {"lo": np.array(-0.5, np.float32), "hi": np.array(0.25, np.float32)}),
             (13, [N("Clip", ["x", "lo", "hi"])], {"lo": np.array(-0.5, np.float32), "hi": np.array(0.25, np.float32)})],
    "Pad": [(2, [N("Pad", ["x"], pads=[0, 0, 1, 2, 0, 0, 2, 1], mode="edge")], {}),
            (11, [N("Pad", ["x", "p"], mode="edge")], {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], I64)}),
            (18, [N("Pad", ["x", "p", "", "a"], mode="edge")], {"p": np.array([1, 2, 2, 1], I64), "a": np.array([2, 3], I64)}),
            (21, [N("Pad", ["x", "p"], mode="edge")], {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], I64)})],
    "Slice": [(9, [N("Slice", ["x"], starts=[1, -1], ends=[3, 0], axes=[1, 3])], {}),
              (10, [N("Slice", ["x", "s", "e", "a"])], {"s": np.array([1, -1], I64), "e": np.array([3, 0], I64),
                                                          "a": np.array([1, 3], I64)}),
              (13, [N("Slice", ["x", "s", "e", "a", "t"])], {"s": np.array([1, 5], I64), "e": np.array([3, 0], I64),
                                                              "a": np.array([1, -1], I64), "t": np.array([1, 1], I64)})],
    "Reshape_Flatten": [(5, [N("Reshape", ["x", "s"])], {"s": np.array([3, -1], I64)}),
                        (9, [N("Flatten", ["x"], axis=1)], {}),
                        (14, [N("Reshape", ["x", "s"], allowzero=0)], {"s": np.array([0, -1], I64)}),
                        (21, [N("Flatten", ["x"], axis=-3)], {})],
    "Dropout": [(7, [N("Dropout", ["x"], ["d"], ratio=0.3), N("Relu", ["d"])], {}),
                (12, [N("Dropout", ["x", "r"], ["d", "mask"]), N("Relu", ["d"])], {"r": np.array(0.3, np.float32)}),
                (13, [N("Relu", ["x"])], {})],
    "BatchNorm": [(7, [N("BatchNormalization", ["x", "sc", "b", "m", "v"], epsilon=1e-3)], None),
                  (9, [N("BatchNormalization", ["x", "sc", "b", "m", "v"], epsilon=1e-3)], None),
                  (15, [N("BatchNormalization", ["x", "sc", "b", "m", "v"], epsilon=1e-3)], None)],
    "Gemm_runtime_B": [(6, [N("Flatten", ["x"], ["f"]), N("Gemm", ["f", "f", "c"], alpha=0.5, beta=2.0, transB=1,
                                                             broadcast=1)], {"c": np.ones(3, np.float32)}),
                       (13, [N("Flatten", ["x"], ["f"]), N("Transpose", ["f"], ["ft"], perm=[1, 0]),
                             N("MatMul", ["f", "ft"], ["m"]), N("Mul", ["m", "h"], ["mh"]), N("Add", ["mh", "c2"])],
                        {"h": np.array(0.5, np.float32), "c2": np.full(3, 2.0, np.float32)})],
    "MaxPool_unused_indices": [(12, [N("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2])], {}),
                               (12, [N("MaxPool", ["x"], kernel_shape=[2, 2])], {})],
}
BN = {"sc": rand(RNG, 4, lo=0.5, hi=2), "b": rand(RNG, 4), "m": rand(RNG, 4), "v": rand(RNG, 4, lo=0.2, hi=2)}


@pytest.mark.parametrize("family", list(VARIANTS))
def test_opset_variants_agree(family):
    x = rand(RNG, *X_SHAPE)
    results = []
    for opset, nodes, inits in VARIANTS[family]:
        inits = BN if inits is None else inits
        model = onnx_model(nodes, {"x": X_SHAPE}, ["y"], inits, opset=opset)
        got = run_fastcnn_onnx(model, {"x": x})[0]
        results.append(got)
        if opset >= 7:
            assert_close(got, run_ort(model, {"x": x})[0], f"{family} opset {opset} vs onnxruntime")
    for opset_result in results[1:]:
        assert_close(opset_result, results[0], family)


# ---------------------------------------------------------------------- inputs and initializers
def test_initializers_listed_as_inputs_are_weights(tmp_path):
    w = rand(RNG, 4, 1, 1)
    graph = helper.make_graph(
        [N("Mul", ["x", "w"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 3, 3]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)])
    model.ir_version = 3
    m = fastcnn.load(save_onnx(model, str(tmp_path)))
    assert [t.name for t in m.inputs] == ["x"]
    x = rand(RNG, 2, 4, 3, 3)
    assert_close(m.run(None, {"x": x})[0], x * w)


def _small_cnn(batch="N"):
    w = rand(RNG, 6, 3, 3, 3, lo=-0.3, hi=0.3)
    b = rand(RNG, 6)
    fc = rand(RNG, 5, 6)
    nodes = [N("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]), N("Relu", ["c"], ["r"]),
             N("MaxPool", ["r"], ["p"], kernel_shape=[2, 2]), N("GlobalAveragePool", ["p"], ["g"]),
             N("Flatten", ["g"], ["f"]), N("Gemm", ["f", "fc"], ["z"], transB=1), N("Softmax", ["z"], axis=-1)]
    return onnx_model(nodes, {"x": (batch, 3, 9, 11)}, ["y"], {"w": w, "b": b, "fc": fc}, opset=13)


def test_dynamic_batch_stays_dynamic(tmp_path):
    model = _small_cnn()
    m = fastcnn.load(save_onnx(model, str(tmp_path)))
    assert m.inputs[0].shape == (None, 3, 9, 11)
    assert m.outputs[0].shape[0] is None
    for n in (1, 5):
        x = rand(RNG, n, 3, 9, 11)
        got = m.run(None, {"x": x})[0]
        assert got.shape == (n, 5)
        assert_close(got, run_ort(model, {"x": x})[0], f"batch {n}")


def test_dim_param_and_unknown_dims_are_dynamic(tmp_path):
    graph = helper.make_graph([N("Relu", ["x"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    m = fastcnn.load(save_onnx(model, str(tmp_path)))
    assert m.inputs[0].shape == (None, 3)
    assert m.run(None, {"x": -np.ones((4, 3), np.float32)})[0].tolist() == [[0, 0, 0]] * 4


def _traced_batch_one(batch="N"):
    """_small_cnn's layers as a tracer writes them when it bakes in the batch it traced with
    (x.view(1, -1)) while the input still declares a dynamic batch."""
    w = rand(RNG, 6, 3, 3, 3, lo=-0.3, hi=0.3)
    fc = rand(RNG, 5, 6 * 5 * 6)
    nodes = [N("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]), N("Relu", ["c"], ["r"]),
             N("Reshape", ["r", "s"], ["f"]), N("Gemm", ["f", "fc"], ["y"], transB=1)]
    return onnx_model(nodes, {"x": (batch, 3, 9, 11)}, ["y"],
                      {"w": w, "fc": fc, "s": np.array([1, -1], I64)}, opset=13)


def test_dynamic_batch_the_graph_cannot_run_is_fixed_to_1(tmp_path):
    # loading checks a dynamic batch at 1 and 2; this graph only runs at 1: it loaded with a
    # GraphError about batch 2 (a batch nobody asked for), where onnxruntime loads it
    model = _traced_batch_one()
    path = save_onnx(model, str(tmp_path))
    with pytest.warns(fastcnn.BatchFixedWarning, match=r"input 'x' declares a dynamic batch.*"
                      r"\(Gemm\): inner dimensions differ: A \[1, 360\].*fixed to 1"):
        m = fastcnn.load(path)
    assert m.inputs[0].shape == (1, 3, 9, 11) and m.outputs[0].shape == (1, 5)
    x = rand(RNG, 1, 3, 9, 11)
    assert_close(m.run(None, {"x": x})[0], run_ort(model, {"x": x})[0])
    with pytest.raises(fastcnn.InputError, match=r"shape \[2, 3, 9, 11\].*expected float32 \[1, 3, 9, 11\]"):
        m.run(None, {"x": rand(RNG, 2, 3, 9, 11)})
    # convert writes the graph with the batch fixed; that file loads without a warning
    out = str(tmp_path / "fixed.fcnn")
    with pytest.warns(fastcnn.BatchFixedWarning):
        fastcnn.convert(path, out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m2 = fastcnn.load(out)
    assert m2.inputs[0].shape == (1, 3, 9, 11)
    assert_close(m2.run(None, {"x": x})[0], run_ort(model, {"x": x})[0])


def test_graph_that_runs_at_no_batch_keeps_its_error(tmp_path):
    # Reshape to [7, -1] fails at batch 1 as at 2: the error is the graph's, with no warning
    # and no fixed batch tried in its place
    nodes = [N("Relu", ["x"], ["r"]), N("Reshape", ["r", "s"])]
    model = onnx_model(nodes, {"x": ("N", 4)}, ["y"], {"s": np.array([7, -1], I64)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _load_error(model, tmp_path, fastcnn.GraphError, "cannot reshape [1, 4]")


# ---------------------------------------------------------------------- errors
def _load_error(model, tmp_path, cls, *patterns):
    path = save_onnx(model, str(tmp_path))
    with pytest.raises(cls) as e:
        fastcnn.load(path)
    msg = str(e.value)
    for p in patterns:
        assert p in msg, f"{p!r} not in {msg!r}"
    assert path in msg
    return msg


def test_unsupported_op_names_op_node_and_supported_ops(tmp_path):
    model = onnx_model([N("Relu", ["x"], ["r"]), helper.make_node("Einsum", ["r"], ["y"], name="my_einsum", equation="ij->ji")],
                       {"x": (2, 3)}, ["y"], opset=13)
    msg = _load_error(model, tmp_path, fastcnn.UnsupportedOpError, "'Einsum'", "'my_einsum'",
                      "Supported ONNX operators:", "Conv", "MaxPool", "ReduceMean")


def test_unsupported_domain(tmp_path):
    model = onnx_model([helper.make_node("FusedConv", ["x"], ["y"], name="fc", domain="com.microsoft")],
                       {"x": (1, 2, 3, 3)}, ["y"], opset=13)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    _load_error(model, tmp_path, fastcnn.UnsupportedOpError, "'FusedConv'", "'fc'", "domain 'com.microsoft'")


def test_unsupported_attribute_value(tmp_path):
    model = onnx_model([N("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2]), N("Cast", ["i"], ["z"], to=1)],
                       {"x": (1, 2, 4, 4)}, ["y", "z"], opset=12)
    _load_error(model, tmp_path, fastcnn.UnsupportedOpError, "the Indices output")


def test_opset_out_of_range(tmp_path):
    model = onnx_model([N("Relu", ["x"])], {"x": (2, 3)}, ["y"], opset=13)
    model.opset_import[0].version = 99
    _load_error(model, tmp_path, fastcnn.UnsupportedOpError, "ONNX opset 99 is not supported")


def test_corrupt_truncated_and_empty_files(tmp_path):
    good = save_onnx(_small_cnn(1), str(tmp_path))
    data = open(good, "rb").read()
    cases = {"truncated.onnx": data[: len(data) // 2], "garbage.onnx": bytes(RNG.integers(0, 256, 4000, dtype=np.uint8)),
             "empty.onnx": b"", "text.onnx": b"this is not a model\n" * 20}
    for name, content in cases.items():
        path = os.path.join(str(tmp_path), name)
        with open(path, "wb") as f:
            f.write(content)
        with pytest.raises(fastcnn.ModelFileError) as e:
            fastcnn.load(path)
        assert path in str(e.value), name
    with pytest.raises(fastcnn.ModelFileError, match="no such file"):
        fastcnn.load(os.path.join(str(tmp_path), "missing.onnx"))


def test_initializer_with_inconsistent_size(tmp_path):
    model = onnx_model([N("Add", ["x", "w"])], {"x": (2, 3)}, ["y"], {"w": np.ones((2, 3), np.float32)}, opset=13)
    model.graph.initializer[0].dims[:] = [4, 3]
    _load_error(model, tmp_path, fastcnn.ModelFileError, "initializer 'w'", "shape [4, 3] needs 12 elements but the file stores 6")


@pytest.mark.parametrize("elem,name", [(TensorProto.DOUBLE, "float64"), (TensorProto.INT64, "int64"),
                                       (TensorProto.FLOAT16, "float16")])
def test_input_with_wrong_element_type(tmp_path, elem, name):
    graph = helper.make_graph([N("Relu", ["x"])], "g", [helper.make_tensor_value_info("x", elem, [2, 3])],
                              [helper.make_tensor_value_info("y", elem, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    _load_error(model, tmp_path, fastcnn.UnsupportedOpError, "input 'x' has dtype " + name,
                "fastcnn models take float32 inputs")


def test_input_without_shape_is_refused(tmp_path):
    graph = helper.make_graph([N("Relu", ["x"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    _load_error(model, tmp_path, fastcnn.UnsupportedOpError, "graph input 'x' has no shape")


def test_graph_error_names_file_and_node(tmp_path):
    model = onnx_model([helper.make_node("Transpose", ["x"], ["y"], name="tr", perm=[0, 0])], {"x": (2, 3)}, ["y"], opset=13)
    _load_error(model, tmp_path, fastcnn.GraphError, "node 'tr' (Transpose)", "perm [0, 0] is not a permutation")


@pytest.mark.parametrize("opset", [9, 11, 13])
def test_pytorch_view_batch_minus_one_folds(tmp_path, opset):
    """torch: x.view(x.size(0), -1) exports Shape -> Gather -> Unsqueeze -> Concat -> Reshape with
    Constant nodes; it must load with a dynamic batch and run for any batch."""
    def const(name, value):
        return N("Constant", [], [name], value=numpy_helper.from_array(np.array(value, I64)))
    if opset >= 13:
        unsq = [const("ax", [0]), N("Unsqueeze", ["n", "ax"], ["n1"])]
    else:
        unsq = [N("Unsqueeze", ["n"], ["n1"], axes=[0])]
    nodes = [N("Relu", ["x"], ["r"]), N("Shape", ["r"], ["s"]), const("zero", 0),
             N("Gather", ["s", "zero"], ["n"], axis=0), *unsq, const("m1", [-1]),
             N("Concat", ["n1", "m1"], ["t"], axis=0), N("Reshape", ["r", "t"], ["f"]),
             N("Gemm", ["f", "w", "c"], transB=1)]
    w = rand(RNG, 7, 60)
    model = onnx_model(nodes, {"x": ("batch", 3, 4, 5)}, ["y"], {"w": w, "c": np.zeros(7, np.float32)}, opset=opset)
    m = fastcnn.load(save_onnx(model, str(tmp_path)))
    assert m.inputs[0].shape == (None, 3, 4, 5)
    assert m.outputs[0].shape == (None, 7)
    for n in (1, 5):
        x = rand(RNG, n, 3, 4, 5)
        got = m.run(None, {"x": x})[0]
        assert_close(got, np.maximum(x, 0).reshape(n, 60) @ w.T.astype(np.float64))
        assert_close(got, run_ort(model, {"x": x})[0])


INITIALIZER_VALUES = {
    "float32": np.array([[1.5, -2.25, 3e-39], [np.inf, -0.0, 7.0]], np.float32),
    "float16": np.array([0.5, -65504.0, 6e-8], np.float16),
    "float64": np.array([1.0 / 3.0, -1e30], np.float64),
    "int64": np.array([-(2 ** 62), 7, 0], np.int64),
    "int32": np.array([[-5], [2 ** 30]], np.int32),
    "uint8": np.array([0, 255, 17], np.uint8),
    "bool": np.array([True, False, True]),
    "scalar": np.array(2.5, np.float32),
    "empty": np.zeros((0, 3), np.float32),
}


@pytest.mark.parametrize("stored", ["raw_data", "typed fields"])
@pytest.mark.parametrize("kind", list(INITIALIZER_VALUES))
def test_initializer_values_from_raw_data_and_typed_fields(kind, stored):
    """Each element type reads back the values the file holds, whether stored as raw_data or in
    the typed repeated fields, as a read-only array that refers to no protobuf memory."""
    from fastcnn.importers import onnx as onnx_importer
    value = INITIALIZER_VALUES[kind]
    if stored == "raw_data":
        t = numpy_helper.from_array(value, "w")
        assert t.HasField("raw_data")
    else:
        t = helper.make_tensor("w", helper.np_dtype_to_tensor_dtype(value.dtype), value.shape,
                               value.reshape(-1).tolist())
        assert not t.HasField("raw_data")
    model = onnx_model([N("Identity", ["x"])], {"x": (2, 3)}, ["y"], {}, opset=13)
    model.graph.initializer.append(t)
    g = onnx_importer.import_model(model, "m.onnx")
    del model, t
    got = g.initializers["w"]
    expected = {"float16": value.astype(np.float32), "float64": value.astype(np.float32)}.get(
        kind, value)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert not got.flags.writeable
    owner = got
    while isinstance(owner, np.ndarray) and owner.base is not None:
        owner = owner.base
    assert isinstance(owner, (np.ndarray, bytes)), type(owner)


def test_initializer_raw_data_of_a_partial_value(tmp_path):
    """raw_data whose length is not a whole number of values is a bad file, not a short array
    (one stray byte after two float32 values)."""
    model = onnx_model([N("Add", ["x", "w"])], {"x": (2,)}, ["y"], {"w": np.ones(2, np.float32)}, opset=13)
    t = model.graph.initializer[0]
    t.raw_data = t.raw_data + b"\x00"
    _load_error(model, tmp_path, fastcnn.ModelFileError, "initializer 'w'",
                "raw_data of 9 bytes is not a whole number of float32 values")

"""Constant folding while planning: fold functions against numpy, folded and runtime results of
the same op agree, and PyTorch/Paddle-style shape subgraphs (Shape -> Gather -> Unsqueeze ->
Concat -> Reshape, ConstantOfShape, Range, Equal/Where, Cast) fold per input shape so a dynamic
batch stays dynamic."""
import numpy as np
import pytest

import fastcnn
from fastcnn.ir.graph import Graph, Node, TensorSpec, ValueType
from fastcnn.ir.infer import infer_graph
from helpers import assert_close, onnx_model, rand, run_fastcnn_onnx, run_ort, save_onnx
from oputil import node, run_op
from reference import ACTIVATIONS, onnx_slice, pad

RNG = np.random.default_rng(8)
I64 = np.int64


def fold(op, consts, attrs=None, n_out=1):
    """Fold one node whose inputs are all constants; returns its output values."""
    names = list(consts)
    outs = [f"y{i}" for i in range(n_out)]
    g = Graph("t", [], [TensorSpec(o, ()) for o in outs], [Node(op, "n", names, outs, attrs or {})],
              {k: np.asarray(v) for k, v in consts.items()})
    inferred = infer_graph(g, {})
    return [inferred.consts[o] for o in outs]


UNARY_FOLDS = ["Relu", "LeakyRelu", "Elu", "Selu", "Celu", "ThresholdedRelu", "Sigmoid", "Tanh",
               "HardSigmoid", "HardSwish", "Softplus", "Softsign", "Gelu", "Mish", "Exp", "Log",
               "Sqrt", "Neg", "Abs", "Reciprocal", "Floor", "Ceil", "Round", "Erf", "Sign"]


@pytest.mark.parametrize("op", UNARY_FOLDS)
def test_unary_fold_matches_reference_and_kernel(op):
    x = rand(RNG, 3, 13, 3, 5, lo=-4, hi=4)
    if op in ("Log", "Sqrt"):
        x = np.abs(x) + np.float32(0.01)
    folded = fold(op, {"x": x})[0]
    assert folded.dtype == np.float32
    with np.errstate(all="ignore"):
        assert_close(folded, ACTIVATIONS[op](x.astype(np.float64)), "fold vs reference")
    assert_close(folded, run_op(op, {"x": x})[0], "fold vs kernel")


def test_fold_clip_softmax_prelu_and_binary():
    x = rand(RNG, 3, 13, 3, 5, lo=-3, hi=3)
    s = rand(RNG, 13, 1, 1)
    assert_close(fold("Clip", {"x": x}, {"min": -1.0, "max": 0.5})[0], np.clip(x, -1, 0.5))
    assert_close(fold("Softmax", {"x": x}, {"axis": 1})[0], run_op("Softmax", {"x": x}, {"axis": 1})[0])
    assert_close(fold("LogSoftmax", {"x": x}, {"axis": -1})[0], run_op("LogSoftmax", {"x": x}, {"axis": -1})[0])
    assert_close(fold("PRelu", {"x": x, "s": s})[0], np.where(x < 0, x * s, x))
    for op, fn in (("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply), ("Div", np.divide),
                   ("Max", np.maximum), ("Min", np.minimum)):
        assert_close(fold(op, {"a": x, "b": s})[0], fn(x, s), op)
    assert_close(fold("Mean", {"a": x, "b": s, "c": x})[0], (2 * x + s) / 3)


def test_fold_integer_arithmetic_is_onnx_not_numpy():
    a = np.array([7, -7, 7, -7], I64)
    b = np.array([2, 2, -2, -2], I64)
    assert fold("Div", {"a": a, "b": b})[0].tolist() == [3, -3, -3, 3]          # truncates
    assert fold("Mod", {"a": a, "b": b})[0].tolist() == [1, 1, -1, -1]         # sign of divisor
    assert fold("Mod", {"a": a, "b": b}, {"fmod": 1})[0].tolist() == [1, -1, 1, -1]
    assert fold("Clip", {"a": a}, {"min": -3.0, "max": 5.0})[0].tolist() == [5, -3, 5, -3]


def test_fold_cast():
    x = np.array([1.7, -1.7, np.nan, 1e20, -1e20, 0.5], np.float32)
    assert fold("Cast", {"x": x}, {"to": "int32"})[0].tolist() == [1, -1, 0, 2 ** 31 - 1, -2 ** 31, 0]
    assert fold("Cast", {"x": np.array([0, 2, -1], I64)}, {"to": "bool"})[0].tolist() == [False, True, True]
    assert fold("Cast", {"x": np.array([3, 4], I64)}, {"to": "float32"})[0].dtype == np.float32


def test_fold_comparisons_where_not():
    a, b = np.array([1, 2, 3], I64), np.array([3, 2, 1], I64)
    assert fold("Equal", {"a": a, "b": b})[0].tolist() == [False, True, False]
    assert fold("Less", {"a": a, "b": b})[0].tolist() == [True, False, False]
    assert fold("GreaterOrEqual", {"a": a, "b": b})[0].tolist() == [False, True, True]
    assert fold("Greater", {"a": a, "b": b})[0].tolist() == [False, False, True]
    assert fold("LessOrEqual", {"a": a, "b": b})[0].tolist() == [True, True, False]
    p, q = np.array([True, True, False]), np.array([True, False, False])
    assert fold("Or", {"p": p, "q": q})[0].tolist() == [True, True, False]
    assert fold("Xor", {"p": p, "q": q})[0].tolist() == [False, True, False]
    cond = np.array([True, False, True])
    assert fold("Where", {"c": cond, "a": a, "b": b})[0].tolist() == [1, 2, 3]
    assert fold("Not", {"c": cond})[0].tolist() == [False, True, False]
    assert fold("And", {"c": cond, "d": np.array([True, True, False])})[0].tolist() == [True, False, False]


def test_fold_shape_size_range_constant_of_shape_nonzero_argmax():
    x = np.zeros((3, 13, 3, 5), np.float32)
    assert fold("Shape", {"x": x})[0].tolist() == [3, 13, 3, 5]
    assert fold("Shape", {"x": x}, {"start": 1, "end": -1})[0].tolist() == [13, 3]
    assert fold("Shape", {"x": x}, {"start": -2})[0].tolist() == [3, 5]
    assert int(fold("Size", {"x": x})[0]) == 585
    assert fold("Range", {"a": np.array(1, I64), "b": np.array(10, I64), "c": np.array(3, I64)})[0].tolist() == [1, 4, 7]
    assert_close(fold("Range", {"a": np.array(1.0, np.float32), "b": np.array(-1.0, np.float32),
                                "c": np.array(-0.5, np.float32)})[0], [1, 0.5, 0, -0.5])
    c = fold("ConstantOfShape", {"s": np.array([2, 3], I64)}, {"value": 7.0, "dtype": "int64"})[0]
    assert c.dtype == np.int64 and c.tolist() == [[7] * 3] * 2
    assert fold("NonZero", {"x": np.array([[0, 1], [2, 0]], np.float32)})[0].tolist() == [[0, 1], [1, 0]]
    v = np.array([[1, 5, 5], [7, 7, 2]], np.float32)
    assert fold("ArgMax", {"v": v}, {"axis": 1})[0].tolist() == [[1], [0]]
    assert fold("ArgMax", {"v": v}, {"axis": 1, "select_last_index": 1, "keepdims": 0})[0].tolist() == [2, 1]
    assert fold("ArgMin", {"v": v}, {"axis": 0, "keepdims": 0})[0].tolist() == [0, 0, 1]


def test_fold_data_movement():
    x = rand(RNG, 3, 13, 3, 5)
    p = [0, 1, 1, 0, 0, 0, -1, 3]
    assert_close(fold("Pad", {"x": x, "p": np.array(p, I64)}, {"mode": "reflect"})[0], pad(x, p, "reflect"))
    assert_close(fold("Slice", {"x": x, "s": np.array([-1, 4], I64), "e": np.array([-2 ** 63, 0], I64),
                                "a": np.array([1, 3], I64), "t": np.array([-2, -3], I64)})[0],
                 onnx_slice(x, [-1, 4], [-2 ** 63, 0], [1, 3], [-2, -3]))
    parts = fold("Split", {"x": x, "s": np.array([3, 10], I64)}, {"axis": 1}, n_out=2)
    assert_close(np.concatenate(parts, axis=1), x)
    assert_close(fold("Transpose", {"x": x}, {"perm": [0, 3, 1, 2]})[0], x.transpose(0, 3, 1, 2))
    assert_close(fold("Tile", {"x": x, "r": np.array([1, 2, 1, 3], I64)})[0], np.tile(x, [1, 2, 1, 3]))
    assert_close(fold("Gather", {"x": x, "i": np.array([[4, -1]], I64)}, {"axis": 1})[0], np.take(x, [[4, -1]], axis=1))
    from reference import reduce
    assert_close(fold("ReduceL2", {"x": x, "a": np.array([1, 3], I64)})[0], reduce(x, "ReduceL2", [1, 3]))


def test_runtime_op_on_int_tensor_is_refused():
    """Integer tensors must be computable while planning."""
    from helpers import ir_model
    with pytest.raises(fastcnn.UnsupportedOpError, match=r"computes the int64 tensor 'i' at run time; fastcnn runs float32 tensors only"):
        m = ir_model([("Cast", ["x"], ["i"], {"to": "int64"}), ("Cast", ["i"], ["y"], {"to": "float32"})],
                     {"x": (2, 3)}, ["y"])
        m.run(None, {"x": np.zeros((2, 3), np.float32)})


# ---------------------------------------------------------------------- dynamic batch shape graphs
def _pytorch_flatten_model():
    """x (N, 3, 4, 5) -> Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])) -> (N, 60),
    plus ConstantOfShape/Range/Equal/Where/Cast arithmetic on the same shapes."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, I64))),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        # PyTorch's "0 means copy" guard: Where(Equal(target, 0), shape[:2], target)
        helper.make_node("Equal", ["target", "zeros2"], ["is0"]),
        helper.make_node("Slice", ["shape", "s0", "s2"], ["head"]),
        helper.make_node("Where", ["is0", "head", "target"], ["target2"]),
        helper.make_node("Reshape", ["x", "target2"], ["flat"]),
        # a (N, 60) tensor of ones from ConstantOfShape, and Range over the feature dim
        helper.make_node("Shape", ["flat"], ["fshape"]),
        helper.make_node("ConstantOfShape", ["fshape"], ["ones"],
                         value=numpy_helper.from_array(np.array([1.0], np.float32))),
        helper.make_node("Gather", ["fshape", "one"], ["f"], axis=0),
        helper.make_node("Range", ["zero", "f", "one"], ["r"]),
        helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["flat", "ones"], ["prod"]),
        helper.make_node("Add", ["prod", "rf"], ["y"]),
    ]
    inits = {"ax0": np.array([0], I64), "minus1": np.array([-1], I64), "zeros2": np.zeros(2, I64),
             "s0": np.array([0], I64), "s2": np.array([2], I64), "one": np.array(1, I64)}
    graph = helper.make_graph(nodes, "flat", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 60])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_pytorch_shape_subgraph_keeps_batch_dynamic(tmp_path):
    model = _pytorch_flatten_model()
    path = save_onnx(model, str(tmp_path))
    m = fastcnn.load(path)
    assert m.inputs[0].shape == (None, 3, 4, 5)
    assert m.outputs[0].shape == (None, 60)
    for n in (1, 5, 2):
        x = rand(RNG, n, 3, 4, 5)
        got = m.run(None, {"x": x})[0]
        ref = x.reshape(n, 60) + np.arange(60, dtype=np.float32)
        assert_close(got, ref, f"batch {n}")
        assert_close(got, run_ort(model, {"x": x})[0], f"onnxruntime batch {n}")
    # the shape arithmetic was folded: only the float ops run as kernels
    plan = m.plan_for([(5, 3, 4, 5)])
    assert {node.op for node in plan.step_nodes} <= {"Mul", "Add"}


def test_paddle_style_slice_of_shape(tmp_path):
    """Paddle exports Shape -> Slice -> Concat -> Reshape."""
    x = rand(RNG, 2, 6, 4)
    nodes = [node("Shape", ["x"], ["s"]), node("Slice", ["s", "st", "en"], ["n"]),
             node("Concat", ["n", "rest"], ["t"], axis=0), node("Reshape", ["x", "t"], ["y"])]
    model = onnx_model(nodes, {"x": ("B", 6, 4)}, ["y"],
                       {"st": np.array([0], I64), "en": np.array([1], I64), "rest": np.array([3, 8], I64)}, opset=13)
    m = fastcnn.load(save_onnx(model, str(tmp_path)))
    assert m.inputs[0].shape[0] is None
    for n in (1, 4):
        xn = rand(RNG, n, 6, 4)
        assert_close(m.run(None, {"x": xn})[0], xn.reshape(n, 3, 8))

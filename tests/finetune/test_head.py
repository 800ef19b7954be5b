"""Head detection on several graph shapes, the trunk cut, and writing the trained head back.

Each detected head is checked by value: the tuned model's output must equal the trunk's
features pushed through the tuner's weights by an independent numpy forward (train_reference),
so a weight written back in the wrong layout (transB, conv (n, C, 1, 1), (1, n) bias) fails."""
import numpy as np
import pytest

import fastcnn
from fastcnn.errors import FineTuneError
from fastcnn.finetune.head import find_head
from helpers import ir_model, onnx_model, save_onnx
import train_reference as ref


def rnd(rng, *shape, scale=0.5):
    return (rng.normal(size=shape) * scale).astype(np.float32)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def expected_output(tuner, x, tail_softmax):
    """numpy: trunk features (fastcnn's trunk) -> head layers (tuner weights) -> softmax."""
    rows = tuner.trunk.rows(np.asarray(x, np.float32))
    layers = [(w, b, l.activation, l.alpha, l.beta)
              for (w, b), l in zip(tuner.get_weights(), tuner.spec.layers)]
    out, _ = ref.forward(layers, rows, tuner.spec.positions)
    return softmax(out) if tail_softmax else out


def train_a_little(tuner, x, n_classes, rng):
    y = rng.integers(0, n_classes, x.shape[0])
    tuner.fit(x, y, epochs=2, batch_size=4, progress=False)


def check_head(model, x, rng, *, tail_softmax, num_classes=None, **kw):
    """Detect, train briefly, and compare the tuned model with the numpy forward."""
    before = model.run(None, {model.inputs[0].name: x})[0]
    tuner = fastcnn.FineTuner(model, num_classes=num_classes, lr=0.05, **kw)
    if num_classes is None:
        # untouched head: the tuned model reproduces the original exactly
        np.testing.assert_allclose(tuner.predict(x), before, atol=1e-5)
    train_a_little(tuner, x, tuner.num_classes, rng)
    got = tuner.predict(x)
    want = expected_output(tuner, x, tail_softmax)
    assert got.shape == (x.shape[0], tuner.num_classes)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)
    c = min(got.shape[1], before.shape[1])
    assert np.abs(got[:, :c] - before[:, :c]).max() > 1e-4  # training changed something
    return tuner


def conv_trunk(rng, c_in=3, c=5):
    """Conv 3x3 -> Relu -> GlobalAveragePool -> Flatten: (N, c_in, 6, 7) -> (N, c)."""
    nodes = [("Conv", ["x", "Wc", "Bc"], ["c"], {"pads": [1, 1, 1, 1]}), ("Relu", ["c"], ["r"]),
             ("GlobalAveragePool", ["r"], ["g"]), ("Flatten", ["g"], ["f"])]
    inits = {"Wc": rnd(rng, c, c_in, 3, 3), "Bc": rnd(rng, c)}
    return nodes, inits


def test_gemm_softmax_after_conv_trunk():
    rng = np.random.default_rng(0)
    nodes, inits = conv_trunk(rng)
    nodes += [("Gemm", ["f", "W", "B"], ["z"], {"transB": 1}), ("Softmax", ["z"], ["p"])]
    inits.update(W=rnd(rng, 3, 5), B=rnd(rng, 3))
    model = ir_model(nodes, {"x": (None, 3, 6, 7)}, ["p"], inits)
    spec = find_head(model.graph)
    assert [l.node for l in spec.layers] == ["gemm4"] and spec.tail == ["Softmax"]
    np.testing.assert_array_equal(spec.layers[0].weight, inits["W"].T)  # training layout (k, n)
    assert spec.features == "f" and spec.feature_shape == (5,)
    x = rnd(rng, 6, 3, 6, 7, scale=1.0)
    tuner = check_head(model, x, rng, tail_softmax=True)
    # the trunk is a model of its own whose output is the head input
    assert tuner.trunk.model.outputs[0].name == "f"
    check_head(model, x, rng, tail_softmax=True, num_classes=5)


@pytest.mark.parametrize("bias_shape", [(4,), (1, 4)])
def test_matmul_add_without_softmax(bias_shape):
    rng = np.random.default_rng(1)
    nodes = [("MatMul", ["x", "W"], ["m"]), ("Add", ["m", "B"], ["z"])]
    inits = {"W": rnd(rng, 6, 4), "B": rnd(rng, *bias_shape)}
    model = ir_model(nodes, {"x": (None, 6)}, ["z"], inits)
    spec = find_head(model.graph)
    assert spec.layers[0].kind == "matmul" and spec.layers[0].bias_node == "add1"
    assert spec.tail == [] and not spec.has_softmax
    x = rnd(rng, 7, 6, scale=1.0)
    tuner = check_head(model, x, rng, tail_softmax=False)
    check_head(model, x, rng, tail_softmax=False, num_classes=6)
    # the bias keeps its rank when written back
    bias = [v for k, v in tuner.model.graph.initializers.items() if v.ndim == len(bias_shape) and v.shape[-1] == 4]
    assert bias


def test_matmul_without_bias_trains_weights_only():
    rng = np.random.default_rng(2)
    model = ir_model([("MatMul", ["x", "W"], ["z"]), ("Softmax", ["z"], ["p"])], {"x": (None, 5)},
                     ["p"], {"W": rnd(rng, 5, 3)})
    tuner = check_head(model, rnd(rng, 8, 5, scale=1.0), rng, tail_softmax=True)
    assert not tuner.spec.layers[0].has_bias
    assert np.all(tuner.get_weights()[0][1] == 0)


@pytest.mark.parametrize("passes", [True, False])
def test_flatten_gemm_relu_gemm_two_layers(passes):
    rng = np.random.default_rng(3)
    nodes = [("Flatten", ["x"], ["f"]), ("Gemm", ["f", "W1", "B1"], ["h"]), ("Relu", ["h"], ["r"]),
             ("Gemm", ["r", "W2", "B2"], ["z"], {"transB": 1, "alpha": 0.5, "beta": 2.0}),
             ("Softmax", ["z"], ["p"])]
    inits = {"W1": rnd(rng, 12, 7), "B1": rnd(rng, 7), "W2": rnd(rng, 4, 7), "B2": rnd(rng, 4)}
    model = ir_model(nodes, {"x": (None, 3, 2, 2)}, ["p"], inits, passes=passes)
    spec = find_head(model.graph, train_layers=2)
    assert [l.activation for l in spec.layers] == ["Relu", ""]
    assert spec.layers[0].act_node == ("" if passes else "relu2")  # fused by the passes or not
    np.testing.assert_allclose(spec.layers[1].weight, inits["W2"].T * 0.5)  # alpha folded in
    np.testing.assert_allclose(spec.layers[1].bias, inits["B2"] * 2.0)      # beta folded in
    x = rnd(rng, 9, 3, 2, 2, scale=1.0)
    tuner = check_head(model, x, rng, tail_softmax=True, train_layers=2)
    w_first_before = spec.layers[0].weight
    assert np.abs(tuner.get_weights()[0][0] - w_first_before).max() > 1e-4  # layer 1 trained too
    check_head(model, x, rng, tail_softmax=True, train_layers=2, num_classes=6)
    # one trainable layer: the first Gemm belongs to the frozen trunk
    one = fastcnn.FineTuner(model, train_layers=1)
    assert [l.node for l in one.spec.layers] == [spec.layers[1].node]


@pytest.mark.parametrize("act", ["Relu", ""])
def test_squeezenet_style_conv1x1_global_pool(act):
    rng = np.random.default_rng(4)
    nodes = [("Conv", ["x", "Wc", "Bc"], ["c"], {"pads": [1, 1, 1, 1]}), ("Relu", ["c"], ["r"]),
             ("Conv", ["r", "W1", "B1"], ["k"])]
    last = "k"
    if act:
        nodes.append(("Relu", ["k"], ["kr"]))
        last = "kr"
    nodes += [("GlobalAveragePool", [last], ["g"]), ("Flatten", ["g"], ["f"]), ("Softmax", ["f"], ["p"])]
    inits = {"Wc": rnd(rng, 6, 3, 3, 3), "Bc": rnd(rng, 6), "W1": rnd(rng, 4, 6, 1, 1), "B1": rnd(rng, 4)}
    model = ir_model(nodes, {"x": (None, 3, 5, 3)}, ["p"], inits)
    spec = find_head(model.graph)
    layer = spec.layers[0]
    assert layer.kind == "conv1x1" and layer.activation == act
    assert spec.tail == ["Flatten", "Softmax"]
    np.testing.assert_array_equal(layer.weight, inits["W1"].reshape(4, 6).T)
    if act:
        assert spec.positions == 15 and not spec.pool_features  # per-position rows, pooled after
    else:
        assert spec.positions == 1 and spec.pool_features       # pooling commutes: pooled first
    x = rnd(rng, 5, 3, 5, 3, scale=1.0)
    check_head(model, x, rng, tail_softmax=True)
    check_head(model, x, rng, tail_softmax=True, num_classes=7)
    with pytest.raises(FineTuneError, match="1x1 Conv"):
        fastcnn.FineTuner(model, train_layers=2)


def test_conv1x1_head_with_a_folded_batchnorm():
    """1x1 Conv -> BatchNormalization -> GlobalAveragePool: the pass leaves the conv's weights
    and gives it the BN's scale (weight_scale); the head trains the scaled weights, and the
    tuned graph's conv holds them, with no scale left to apply twice."""
    rng = np.random.default_rng(14)
    nodes = [("Conv", ["x", "Wc", "Bc"], ["c"], {"pads": [1, 1, 1, 1]}), ("Relu", ["c"], ["r"]),
             ("Conv", ["r", "W1", "B1"], ["k"]),
             ("BatchNormalization", ["k", "g", "b", "m", "v"], ["n"], {"epsilon": 1e-3}),
             ("GlobalAveragePool", ["n"], ["gp"]), ("Flatten", ["gp"], ["f"]), ("Softmax", ["f"], ["p"])]
    inits = {"Wc": rnd(rng, 6, 3, 3, 3), "Bc": rnd(rng, 6), "W1": rnd(rng, 4, 6, 1, 1),
             "B1": rnd(rng, 4), "g": rnd(rng, 4) + 2.0, "b": rnd(rng, 4), "m": rnd(rng, 4),
             "v": np.abs(rnd(rng, 4)) + 0.5}
    model = ir_model(nodes, {"x": (None, 3, 5, 3)}, ["p"], inits)
    head = next(n for n in model.graph.nodes if n.name == "conv2")
    s = inits["g"].astype(np.float64) / np.sqrt(inits["v"].astype(np.float64) + 1e-3)
    assert np.allclose(head.attrs["weight_scale"], s)
    layer = find_head(model.graph).layers[0]
    want = (inits["W1"].reshape(4, 6) * s[:, None]).T
    np.testing.assert_allclose(layer.weight, want, rtol=1e-6)
    x = rnd(rng, 5, 3, 5, 3, scale=1.0)
    tuner = check_head(model, x, rng, tail_softmax=True)   # predict runs the tuned graph
    tuned = next(n for n in tuner.model.graph.nodes if n.name == "conv2")
    assert "weight_scale" not in tuned.attrs
    check_head(model, x, rng, tail_softmax=True, num_classes=6)


def test_user_named_head_and_its_errors():
    rng = np.random.default_rng(5)
    nodes = [("Gemm", ["x", "W1", "B1"], ["h"], {}), ("Relu", ["h"], ["r"]),
             ("Gemm", ["r", "W2", "B2"], ["z"]), ("Softmax", ["z"], ["p"])]
    nodes = [fastcnn.ir.graph.Node(op, name, ins, outs, attrs) for (op, ins, outs, attrs), name in
             zip([n if len(n) == 4 else n + ({},) for n in nodes], ["fc1", "relu", "fc3", "soft"])]
    inits = {"W1": rnd(rng, 6, 5), "B1": rnd(rng, 5), "W2": rnd(rng, 5, 3), "B2": rnd(rng, 3)}
    model = ir_model(nodes, {"x": (None, 6)}, ["p"], inits)
    assert find_head(model.graph, head="fc3").layers[0].node == "fc3"
    # naming the hidden layer: its output feeds the output through fc3, which is not a tail op
    spec = find_head(model.graph, head="fc1")
    assert spec.layers[0].node == "fc1" and spec.layers[0].activation == "Relu"
    assert spec.tail == ["Gemm", "Softmax"]
    with pytest.raises(FineTuneError, match="no node of that name.*fc1, fc3"):
        find_head(model.graph, head="fc9")
    with pytest.raises(FineTuneError, match="not a trainable layer"):
        find_head(model.graph, head="soft")
    check_head(model, rnd(rng, 6, 6, scale=1.0), rng, tail_softmax=True, head="fc3")


def test_old_opset_softmax_with_shape_branch_via_onnx(tmp_path):
    """opset 11 Softmax is imported as Flatten -> Softmax -> Reshape(Shape(z)): a side branch
    reads the head's output; the class count still changes cleanly."""
    from onnx import helper
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["z"], name="fc", transB=1),
             helper.make_node("Softmax", ["z"], ["p"], name="sm")]
    proto = onnx_model(nodes, {"x": [None, 8]}, ["p"], {"W": rnd(rng, 3, 8), "B": rnd(rng, 3)}, opset=11)
    path = save_onnx(proto, str(tmp_path))
    model = fastcnn.load(path)
    spec = find_head(model.graph)
    assert spec.layers[0].node == "fc" and "Softmax" in spec.tail
    check_head(model, rnd(rng, 5, 8, scale=1.0), rng, tail_softmax=True, num_classes=5)


def test_no_head_is_a_clear_error():
    rng = np.random.default_rng(7)
    nodes = [("Conv", ["x", "Wc", "Bc"], ["c"], {"pads": [1, 1, 1, 1]}), ("Relu", ["c"], ["r"])]
    model = ir_model(nodes, {"x": (None, 3, 4, 4)}, ["r"], {"Wc": rnd(rng, 2, 3, 3, 3), "Bc": rnd(rng, 2)})
    with pytest.raises(FineTuneError, match=r"no trainable head found.*'conv0' \(Conv\)"):
        fastcnn.FineTuner(model)
    # a runtime (non-constant) weight is no head either
    model2 = ir_model([("MatMul", ["x", "x2"], ["z"])], {"x": (None, 3), "x2": (3, 2)}, ["z"])
    with pytest.raises(FineTuneError, match="one input"):
        fastcnn.FineTuner(model2)


def test_train_layers_beyond_the_dense_chain_is_a_clear_error():
    rng = np.random.default_rng(8)
    nodes, inits = conv_trunk(rng)
    nodes += [("Gemm", ["f", "W", "B"], ["z"]), ("Softmax", ["z"], ["p"])]
    inits.update(W=rnd(rng, 5, 3), B=rnd(rng, 3))
    model = ir_model(nodes, {"x": (None, 3, 6, 7)}, ["p"], inits)
    with pytest.raises(FineTuneError, match=r"train_layers=2: found 1 dense layer.*'flatten3' \(Flatten\)"):
        fastcnn.FineTuner(model, train_layers=2)


def test_untrainable_activation_is_refused():
    rng = np.random.default_rng(9)
    nodes = [("Gemm", ["x", "W1", "B1"], ["h"]), ("Softplus", ["h"], ["s"]),
             ("Gemm", ["s", "W2", "B2"], ["z"])]
    inits = {"W1": rnd(rng, 4, 4), "B1": rnd(rng, 4), "W2": rnd(rng, 4, 2), "B2": rnd(rng, 2)}
    model = ir_model(nodes, {"x": (None, 4)}, ["z"], inits)
    assert fastcnn.FineTuner(model).spec.layers[0].node == "gemm2"
    with pytest.raises(FineTuneError, match="Softplus"):
        fastcnn.FineTuner(model, train_layers=2)


def test_reshape_hard_coding_the_class_count_is_reported():
    rng = np.random.default_rng(10)
    nodes = [("Gemm", ["x", "W", "B"], ["z"]), ("Reshape", ["z", "shape"], ["p"])]
    inits = {"W": rnd(rng, 4, 3), "B": rnd(rng, 3), "shape": np.array([1, 3], np.int64)}
    model = ir_model(nodes, {"x": (1, 4)}, ["p"], inits)
    fastcnn.FineTuner(model)  # same class count: fine
    with pytest.raises(FineTuneError, match="does not accept the new head"):
        fastcnn.FineTuner(model, num_classes=5)


def gap_trunk(rng, c_in=3, c=6):
    """Conv 3x3 -> Relu -> GlobalAveragePool kept 4-D: (N, c_in, 5, 4) -> (N, c, 1, 1), as Keras'
    GlobalAveragePooling2D(keepdims=True) leaves it for its MobileNet heads."""
    nodes = [("Conv", ["x", "Wc", "Bc"], ["c"], {"pads": [1, 1, 1, 1]}), ("Relu", ["c"], ["r"]),
             ("GlobalAveragePool", ["r"], ["g"])]
    return nodes, {"Wc": rnd(rng, c, c_in, 3, 3), "Bc": rnd(rng, c)}


@pytest.mark.parametrize("passes", [True, False])
def test_keras_mobilenetv3_style_convs_on_a_1x1_map(passes):
    """GAP (keepdims) -> 1x1 Conv + HardSwish -> 1x1 Conv -> Transpose to channels-last ->
    Flatten -> Softmax (keras.applications' MobileNetV3): both convs are dense layers on one
    position; the Transpose only moves size-1 axes."""
    rng = np.random.default_rng(11)
    nodes, inits = gap_trunk(rng)
    nodes += [("Conv", ["g", "W1", "B1"], ["h"]), ("HardSwish", ["h"], ["hs"]),
              ("Conv", ["hs", "W2", "B2"], ["z"]), ("Transpose", ["z"], ["t"], {"perm": [0, 2, 3, 1]}),
              ("Flatten", ["t"], ["f"]), ("Softmax", ["f"], ["p"])]
    inits.update(W1=rnd(rng, 8, 6, 1, 1), B1=rnd(rng, 8), W2=rnd(rng, 4, 8, 1, 1), B2=rnd(rng, 4))
    model = ir_model(nodes, {"x": (None, 3, 5, 4)}, ["p"], inits, passes=passes)
    spec = find_head(model.graph, train_layers=2)
    assert [l.kind for l in spec.layers] == ["conv1x1", "conv1x1"]
    assert [l.activation for l in spec.layers] == ["HardSwish", ""]
    assert spec.tail[-2:] == ["Flatten", "Softmax"] and spec.positions == 1 and not spec.pool_features
    np.testing.assert_array_equal(spec.layers[1].weight, inits["W2"].reshape(4, 8).T)
    x = rnd(rng, 6, 3, 5, 4, scale=1.0)
    check_head(model, x, rng, tail_softmax=True)
    check_head(model, x, rng, tail_softmax=True, train_layers=2)
    tuner = check_head(model, x, rng, tail_softmax=True, train_layers=2, num_classes=7)
    assert tuner.model.outputs[0].shape == (None, 7)


def test_keras_mobilenet_style_reshape_takes_the_new_class_count():
    """keras.applications' MobileNet: 1x1 Conv on the pooled map -> Reshape((classes,)) ->
    Softmax. The Reshape states the class count ([0, 4]): a new count rewrites it."""
    rng = np.random.default_rng(12)
    nodes, inits = gap_trunk(rng)
    nodes += [("Conv", ["g", "W", "B"], ["z"]), ("Transpose", ["z"], ["t"], {"perm": [0, 2, 3, 1]}),
              ("Reshape", ["t", "shape"], ["rs"]), ("Softmax", ["rs"], ["p"])]
    inits.update(W=rnd(rng, 4, 6, 1, 1), B=rnd(rng, 4), shape=np.array([0, 4], np.int64))
    model = ir_model(nodes, {"x": (None, 3, 5, 4)}, ["p"], inits)
    x = rnd(rng, 5, 3, 5, 4, scale=1.0)
    check_head(model, x, rng, tail_softmax=True)
    tuner = check_head(model, x, rng, tail_softmax=True, num_classes=9)
    assert tuner.model.run(None, {"x": x})[0].shape == (5, 9)


def test_a_transpose_that_moves_data_is_not_a_tail():
    """After a dense layer, a Transpose that reorders non-unit axes changes which output is which
    class: no head is taken through it."""
    rng = np.random.default_rng(13)
    nodes = [("Gemm", ["x", "W", "B"], ["z"]), ("Reshape", ["z", "shape"], ["r"]),
             ("Transpose", ["r"], ["t"], {"perm": [0, 2, 1]}), ("Flatten", ["t"], ["p"])]
    inits = {"W": rnd(rng, 5, 6), "B": rnd(rng, 6), "shape": np.array([0, 2, 3], np.int64)}
    model = ir_model(nodes, {"x": (None, 5)}, ["p"], inits, passes=False)
    with pytest.raises(FineTuneError, match="Transpose"):
        find_head(model.graph)


def test_a_1x1_conv_on_a_larger_map_without_pooling_is_not_a_head():
    """A 1x1 Conv over 2x3 positions feeding Flatten is a convolution, not a dense layer."""
    rng = np.random.default_rng(14)
    nodes = [("Conv", ["x", "W", "B"], ["z"]), ("Flatten", ["z"], ["p"])]
    model = ir_model(nodes, {"x": (None, 3, 2, 3)}, ["p"], {"W": rnd(rng, 4, 3, 1, 1), "B": rnd(rng, 4)})
    with pytest.raises(FineTuneError, match="no trainable head"):
        find_head(model.graph)

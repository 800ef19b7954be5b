"""fastcnn.nn: networks built in Python, weights from arrays, compared with numpy references."""
import numpy as np
import pytest

import fastcnn
import reference as R
from fastcnn.errors import FastCNNError
from fastcnn.ir.ops import OPS
from fastcnn.nn import (LRN, Activation, AvgPool2D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten,
                        GlobalAvgPool2D, GlobalMaxPool2D, L2Pool2D, Maxout, MaxPool2D, MinPool2D, PReLU,
                        Sequential, StochasticPool2D)
from helpers import assert_close

# LeNet-5 (LeCun et al. 1998), table I: which S2 maps (columns) feed each C3 map (rows)
C3_TABLE = np.array([
    [1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1],
    [1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1],
    [1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 1, 1],
    [0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 1, 0, 1, 1],
    [0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1, 0, 1],
    [0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1]], np.float32).T   # (16 C3 maps, 6 S2 maps)


def lenet5():
    return Sequential([
        Conv2D(6, 5, activation="lecun_tanh", name="c1"),     # 32x32 -> 6 x 28x28
        AvgPool2D(2, name="s2"),                              # -> 6 x 14x14
        Conv2D(16, 5, activation="lecun_tanh", name="c3"),    # -> 16 x 10x10
        AvgPool2D(2, name="s4"),                              # -> 16 x 5x5
        Conv2D(120, 5, activation="lecun_tanh", name="c5"),   # -> 120 x 1x1
        Flatten(),
        Dense(84, activation="lecun_tanh", name="f6"),
        Dense(10, name="output"),
    ], input_shape=(1, 32, 32), name="lenet5")


def lecun_tanh(x):
    return 1.7159 * np.tanh(2.0 / 3.0 * x)


def random_weights(net, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(s) * scale).astype(np.float32) for k, s in net.weight_shapes().items()}


def test_lenet5_matches_numpy(threads):
    net = lenet5()
    w = random_weights(net)
    w["c3.weight"] = w["c3.weight"] * C3_TABLE[:, :, None, None]   # the 1998 partial connections
    model = net.load_weights(w).compile(num_threads=threads)
    x = np.random.default_rng(1).uniform(-1, 1, (3, 1, 32, 32)).astype(np.float32)
    h = lecun_tanh(R.conv2d(x, w["c1.weight"], w["c1.bias"]))
    h = R.pool2d(h, "avg", (2, 2))
    h = lecun_tanh(R.conv2d(h, w["c3.weight"], w["c3.bias"]))
    h = R.pool2d(h, "avg", (2, 2))
    h = lecun_tanh(R.conv2d(h, w["c5.weight"], w["c5.bias"])).reshape(3, 120)
    h = lecun_tanh(R.gemm(h, w["f6.weight"], w["f6.bias"], trans_b=True))
    ref = R.gemm(h, w["output.weight"], w["output.bias"], trans_b=True)
    assert_close(model(x), ref)
    assert model.inputs[0].shape == (None, 1, 32, 32) and model.outputs[0].shape == (None, 10)


def test_names_shapes_and_summary():
    net = Sequential([Conv2D(4, 3), MaxPool2D(2), Conv2D(5, 3, padding="same", bias=False), Flatten(),
                      Dense(3), Dense(2, name="head")], input_shape=(2, 9, 9))
    assert [l.name for l in net.layers] == ["conv1", "pool1", "conv2", "flatten1", "dense1", "head"]
    assert net.weight_shapes() == {"conv1.weight": (4, 2, 3, 3), "conv1.bias": (4,), "conv2.weight": (5, 4, 3, 3),
                                   "dense1.weight": (3, 45), "dense1.bias": (3,), "head.weight": (2, 3),
                                   "head.bias": (2,)}
    text = net.summary()
    assert "conv2" in text and "(5, 3, 3)" in text and "total parameters: 402" in text


@pytest.mark.parametrize("layer,kind", [(MaxPool2D(3, 2, padding=1), "max"), (MinPool2D(2), "min"),
                                        (AvgPool2D(3, 2, padding=1), "avg"),
                                        (AvgPool2D(3, 2, padding=1, count_include_pad=True), "avg_pad"),
                                        (L2Pool2D((2, 3), (1, 2)), "lp"),
                                        (MaxPool2D(2, 2, ceil_mode=True), "max_ceil")])
def test_pooling(layer, kind, threads):
    net = Sequential([layer], input_shape=(3, 7, 8))
    x = np.random.default_rng(2).standard_normal((2, 3, 7, 8)).astype(np.float32)
    got = net.compile(num_threads=threads)(x)
    p = layer.padding
    ref = R.pool2d(x, kind.split("_")[0], layer.kernel, layer.strides, (p[0], p[1], p[0], p[1]),
                   ceil_mode=layer.ceil_mode, count_include_pad=kind == "avg_pad")
    assert_close(got, ref)


@pytest.mark.skipif("StochasticPool" not in OPS, reason="StochasticPool not merged yet")
def test_stochastic_pool():
    net = Sequential([StochasticPool2D(2)], input_shape=(2, 6, 6))
    x = np.random.default_rng(3).standard_normal((2, 2, 6, 6)).astype(np.float32)
    assert_close(net.compile()(x), R.pool2d(x, "stochastic", (2, 2)))


@pytest.mark.skipif("Maxout" not in OPS, reason="Maxout not merged yet")
def test_maxout():
    net = Sequential([Conv2D(6, 1, bias=False), Maxout(3), Flatten(), Dense(4), Maxout(2)], input_shape=(2, 3, 3))
    w = random_weights(net)
    x = np.random.default_rng(4).standard_normal((2, 2, 3, 3)).astype(np.float32)
    h = R.conv2d(x, w["conv1.weight"]).reshape(2, 2, 3, 3, 3).max(axis=2).reshape(2, -1)
    h = R.gemm(h, w["dense1.weight"], w["dense1.bias"], trans_b=True).reshape(2, 2, 2).max(axis=2)
    assert_close(net.load_weights(w).compile()(x), h)


def test_lrn_batchnorm_prelu_activations(threads):
    net = Sequential([Conv2D(5, 3, padding=1), LRN(3, alpha=0.01, beta=0.75, k=2.0), BatchNorm2D(eps=1e-3),
                      PReLU(), Dropout(0.3), GlobalMaxPool2D(), Activation("softmax")], input_shape=(3, 6, 5))
    w = random_weights(net, seed=5)
    w["bn1.running_var"] = np.abs(w["bn1.running_var"]) + 0.5
    x = np.random.default_rng(6).standard_normal((2, 3, 6, 5)).astype(np.float32)
    h = R.conv2d(x, w["conv1.weight"], w["conv1.bias"], pads=(1, 1, 1, 1))
    h = R.lrn(h, 3, 0.01, 0.75, 2.0)
    h = R.batchnorm(h, w["bn1.weight"], w["bn1.bias"], w["bn1.running_mean"], w["bn1.running_var"], 1e-3)
    h = R.prelu(h, w["prelu1.weight"].reshape(-1, 1, 1))
    ref = R.softmax(h.max(axis=(2, 3)), axis=1)
    assert_close(net.load_weights(w).compile(num_threads=threads)(x), ref)


@pytest.mark.parametrize("name,fn", [("relu", lambda v: np.maximum(v, 0)), ("tanh", np.tanh),
                                     ("sigmoid", lambda v: 1 / (1 + np.exp(-v))), ("swish", lambda v: v / (1 + np.exp(-v))),
                                     ("lecun_tanh", lecun_tanh), ("log_softmax", lambda v: R.softmax(v, 1, log=True)),
                                     ("relu6", lambda v: np.clip(v, 0, 6)), ("elu", lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0))))])
def test_activation_names(name, fn):
    net = Sequential([Dense(4, activation=name)], input_shape=(3,))
    w = random_weights(net, scale=2.0)
    x = np.random.default_rng(7).standard_normal((5, 3)).astype(np.float32)
    assert_close(net.load_weights(w).compile()(x), fn(R.gemm(x, w["dense1.weight"], w["dense1.bias"], trans_b=True)))


def test_load_from_npz_and_save_fcnn(tmp_path):
    net = Sequential([Conv2D(3, 3, strides=2, padding="same"), GlobalAvgPool2D(), Dense(2)], input_shape=(2, 7, 7))
    w = random_weights(net)
    path = str(tmp_path / "w.npz")
    np.savez(path, **w)
    model = net.load_weights(path).compile()
    x = np.random.default_rng(8).standard_normal((2, 2, 7, 7)).astype(np.float32)
    y = model(x)
    h = R.conv2d(x, w["conv1.weight"], w["conv1.bias"], (2, 2), (1, 1, 1, 1)).mean(axis=(2, 3))
    assert_close(y, R.gemm(h, w["dense1.weight"], w["dense1.bias"], trans_b=True))
    model.save(str(tmp_path / "net.fcnn"))
    assert_close(fastcnn.load(str(tmp_path / "net.fcnn"))(x), y)


def test_weight_errors_name_the_layer(tmp_path):
    net = Sequential([Conv2D(6, 5), Flatten(), Dense(10)], input_shape=(1, 8, 8))
    w = random_weights(net)
    bad = dict(w, **{"conv1.weight": np.zeros((6, 1, 5, 4))})
    with pytest.raises(FastCNNError, match=r"layer 'conv1' \(Conv2D\): 'conv1.weight' has shape \[6, 1, 5, 4\]; "
                                           r"expected \[6, 1, 5, 5\]"):
        net.load_weights(bad)
    with pytest.raises(FastCNNError, match=r"missing weight\(s\): dense1.bias \[10\] for layer 'dense1' \(Dense\)"):
        net.load_weights({k: v for k, v in w.items() if k != "dense1.bias"})
    with pytest.raises(FastCNNError, match=r"unknown weight\(s\) 'conv2.weight'"):
        net.load_weights(dict(w, **{"conv2.weight": np.zeros(3)}))
    with pytest.raises(FastCNNError, match="not a numeric array"):
        net.load_weights(dict(w, **{"conv1.bias": np.array(["a"] * 6)}))
    net.load_weights({"conv1.weight": w["conv1.weight"]}, strict=False)
    with pytest.raises(FastCNNError, match=r"weights not loaded: conv1.bias \[6\] for layer 'conv1'"):
        net.compile()
    obj = str(tmp_path / "pickled.npz")
    np.savez(obj, **{"conv1.weight": np.array([object()], dtype=object)})
    with pytest.raises(FastCNNError, match="cannot read weights"):
        net.load_weights(obj)


def test_construction_errors():
    with pytest.raises(FastCNNError, match=r"layer 'dense1' \(Dense\): expects a flat input.*Flatten"):
        Sequential([Conv2D(2, 3), Dense(3)], input_shape=(1, 5, 5))
    with pytest.raises(FastCNNError, match="two layers are named 'a'"):
        Sequential([Conv2D(2, 3, name="a"), Conv2D(2, 3, name="a")], input_shape=(1, 9, 9))
    with pytest.raises(FastCNNError, match=r"layer 'conv2' \(Conv2D\): kernel \(5, 5\) does not fit"):
        Sequential([Conv2D(2, 3), Conv2D(2, 5)], input_shape=(1, 5, 5))
    with pytest.raises(FastCNNError, match="unknown activation 'relu7'"):
        Conv2D(2, 3, activation="relu7")
    with pytest.raises(FastCNNError, match="groups=2 must divide"):
        Sequential([Conv2D(3, 1, groups=2)], input_shape=(4, 2, 2))
    with pytest.raises(FastCNNError, match="not divisible by pieces=4"):
        Sequential([Maxout(4)], input_shape=(6, 2, 2))

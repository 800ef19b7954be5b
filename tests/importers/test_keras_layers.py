"""Keras importer, layer by layer: files written with h5py/zipfile as Keras 2 (.h5) and Keras 3
(.keras) write them (tests/importers/keras_writer.py), known random weights, NHWC inputs, outputs
compared with numpy references (tests/reference.py, NCHW, transposed here)."""
import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
pytest.importorskip("h5py")

import fastcnn  # noqa: E402
import reference as R  # noqa: E402
from fastcnn.errors import ModelFileError  # noqa: E402
from fastcnn.ir.ops import OPS  # noqa: E402
from helpers import assert_close  # noqa: E402
from keras_writer import Net  # noqa: E402

FORMATS = ["h5", "keras"]
needs_resize = pytest.mark.skipif("Resize" not in OPS, reason="Resize not merged yet")
needs_convt = pytest.mark.skipif("ConvTranspose" not in OPS, reason="ConvTranspose not merged yet")


def rng(seed=0):
    return np.random.default_rng(seed)


def rnd(*shape, seed=0, lo=-1.0, hi=1.0):
    return rng(seed).uniform(lo, hi, shape).astype(np.float32)


def nchw(x):
    return np.transpose(x, (0, 3, 1, 2))


def nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def tf_pads(size, k, s, d, padding):
    """(begin, end) as TensorFlow pads a 'same' window; (0, 0) for 'valid'."""
    if padding == "valid":
        return 0, 0
    eff = d * (k - 1) + 1
    out = -(-size // s)
    total = max((out - 1) * s + eff - size, 0)
    return total // 2, total - total // 2


def conv_ref(x, kernel, bias, strides=(1, 1), padding="valid", dilation=(1, 1), groups=1):
    """Keras Conv2D on NHWC x with an HWIO kernel."""
    h, w = x.shape[1:3]
    ph = tf_pads(h, kernel.shape[0], strides[0], dilation[0], padding)
    pw = tf_pads(w, kernel.shape[1], strides[1], dilation[1], padding)
    y = R.conv2d(nchw(x), np.transpose(kernel, (3, 2, 0, 1)), bias, strides, (ph[0], pw[0], ph[1], pw[1]),
                 dilation, groups)
    return nhwc(y)


def load_run(net, tmp_path, outputs, feeds, sequential=False, threads=1):
    path = net.save(tmp_path / f"model.{net.fmt}", outputs, sequential)
    m = fastcnn.load(path, num_threads=threads)
    return m, m.run(None, feeds)


# ----------------------------------------------------------------------------- convolutions
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("padding,strides,dilation,groups,use_bias", [
    ("same", (1, 1), (1, 1), 1, True), ("valid", (2, 3), (1, 1), 1, True),
    ("same", (2, 2), (1, 1), 1, False), ("same", (1, 1), (2, 3), 1, True),
    ("valid", (1, 1), (1, 1), 3, True)])
def test_conv2d(fmt, tmp_path, threads, padding, strides, dilation, groups, use_bias):
    net = Net(fmt)
    x = net.input("img", (9, 11, 6))
    k = rnd(3, 2, 6 // groups, 9, seed=1)
    b = rnd(9, seed=2)
    ws = [("kernel", k)] + ([("bias", b)] if use_bias else [])
    y = net.add("Conv2D", "conv2d", [x], ws, filters=9, kernel_size=[3, 2], strides=list(strides),
                padding=padding, data_format="channels_last", dilation_rate=list(dilation), groups=groups,
                activation="relu", use_bias=use_bias)
    xv = rnd(3, 9, 11, 6, seed=3)
    m, (got,) = load_run(net, tmp_path, [y], {"img": xv}, threads=threads)
    assert m.inputs[0].layout == "NHWC" and m.inputs[0].shape == (None, 9, 11, 6)
    ref = np.maximum(conv_ref(xv, k, b if use_bias else None, strides, padding, dilation, groups), 0)
    assert_close(got, ref)


@pytest.mark.parametrize("fmt", FORMATS)
def test_depthwise_and_separable(fmt, tmp_path):
    net = Net(fmt)
    x = net.input("img", (7, 8, 3))
    dk, db = rnd(3, 3, 3, 2, seed=1), rnd(6, seed=2)
    y = net.add("DepthwiseConv2D", "dw", [x], [("depthwise_kernel", dk), ("bias", db)], kernel_size=[3, 3],
                strides=[2, 1], padding="same", depth_multiplier=2, activation="linear", use_bias=True,
                dilation_rate=[1, 1])
    sk, pk, sb = rnd(3, 3, 6, 1, seed=4), rnd(1, 1, 6, 5, seed=5), rnd(5, seed=6)
    z = net.add("SeparableConv2D", "sep", [y], [("depthwise_kernel", sk), ("pointwise_kernel", pk), ("bias", sb)],
                filters=5, kernel_size=[3, 3], strides=[1, 1], padding="valid", depth_multiplier=1,
                activation="tanh", use_bias=True, dilation_rate=[1, 1])
    xv = rnd(2, 7, 8, 3, seed=3)
    _, (got,) = load_run(net, tmp_path, [z], {"img": xv})
    # depthwise = grouped conv with one group per input channel; output channel c*M + m
    w_dw = np.transpose(dk, (2, 3, 0, 1)).reshape(6, 1, 3, 3)
    ph, pw = tf_pads(7, 3, 2, 1, "same"), tf_pads(8, 3, 1, 1, "same")
    y1 = R.conv2d(nchw(xv), w_dw, db, (2, 1), (ph[0], pw[0], ph[1], pw[1]), group=3)
    y2 = R.conv2d(y1, np.transpose(sk, (2, 3, 0, 1)).reshape(6, 1, 3, 3), None, group=6)
    y3 = R.conv2d(y2, np.transpose(pk, (3, 2, 0, 1)), sb)
    assert_close(got, nhwc(np.tanh(y3)))


def conv_transpose_ref(x, kernel, bias, s, padding, output_padding=None):
    """TensorFlow's conv2d_transpose (Keras Conv2DTranspose) by scattering every input pixel,
    NHWC x, kernel (kh, kw, c_out, c_in). Output length from Keras' deconv_output_length, begin
    padding from the SAME/VALID forward convolution of that length."""
    n, h, w, _ = x.shape
    kh, kw, c_out, _ = kernel.shape

    def length(size, k):
        if output_padding is None:
            return size * s + max(k - s, 0) if padding == "valid" else size * s
        pad = k // 2 if padding == "same" else 0
        return (size - 1) * s + k - 2 * pad + output_padding

    oh, ow = length(h, kh), length(w, kw)
    pt = tf_pads(oh, kh, s, 1, padding)[0]
    pl = tf_pads(ow, kw, s, 1, padding)[0]
    y = np.zeros((n, oh, ow, c_out))
    for i in range(h):
        for j in range(w):
            for a in range(kh):
                for b in range(kw):
                    r, c = i * s + a - pt, j * s + b - pl
                    if 0 <= r < oh and 0 <= c < ow:
                        y[:, r, c] += x[:, i, j] @ kernel[a, b].T
    return y + bias


@needs_convt
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("padding,s,k,op", [("valid", 2, 3, None), ("same", 2, 3, None), ("same", 2, 4, None),
                                            ("valid", 3, 2, None), ("same", 3, 2, None), ("same", 2, 3, 1)])
def test_conv2d_transpose(fmt, tmp_path, padding, s, k, op):
    net = Net(fmt)
    x = net.input("img", (5, 4, 3))
    kern, b = rnd(k, k, 2, 3, seed=1), rnd(2, seed=2)
    y = net.add("Conv2DTranspose", "convt", [x], [("kernel", kern), ("bias", b)], filters=2, kernel_size=[k, k],
                strides=[s, s], padding=padding, output_padding=None if op is None else [op, op],
                activation="linear", use_bias=True, dilation_rate=[1, 1])
    xv = rnd(2, 5, 4, 3, seed=3)
    _, (got,) = load_run(net, tmp_path, [y], {"img": xv})
    assert_close(got, conv_transpose_ref(xv, kern, b, s, padding, op))


# ----------------------------------------------------------------------------- dense, flatten, reshape
@pytest.mark.parametrize("fmt", FORMATS)
def test_flatten_dense_hwc_order(fmt, tmp_path, threads):
    """Flatten after a convolution flattens in Keras' (H, W, C) order."""
    net = Net(fmt)
    x = net.input("img", (5, 4, 3))
    k, b = rnd(3, 3, 3, 6, seed=1), rnd(6, seed=2)
    y = net.add("Conv2D", "conv2d", [x], [("kernel", k), ("bias", b)], filters=6, kernel_size=[3, 3],
                strides=[1, 1], padding="same", activation="linear", use_bias=True, dilation_rate=[1, 1])
    f = net.add("Flatten", "flatten", [y])
    dk, db = rnd(120, 7, seed=4), rnd(7, seed=5)
    z = net.add("Dense", "dense", [f], [("kernel", dk), ("bias", db)], units=7, activation="softmax",
                use_bias=True)
    xv = rnd(3, 5, 4, 3, seed=3)
    m, (got,) = load_run(net, tmp_path, [z], {"img": xv}, threads=threads)
    conv = conv_ref(xv, k, b, padding="same")
    ref = R.softmax(R.gemm(conv.reshape(3, -1), dk, db), axis=-1)
    assert_close(got, ref)
    assert m.outputs[0].name == "dense"
    # one Transpose for the NHWC input; the one before Flatten went into the Dense weights
    assert [n.op for n in m.graph.nodes].count("Transpose") == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_dense_on_nd_inputs(fmt, tmp_path):
    """Dense applies to the last axis: of a 4-D conv output (the channels) and of a 3-D input."""
    net = Net(fmt)
    x = net.input("img", (4, 5, 3))
    seq = net.input("seq", (6, 4))
    k, b = rnd(3, 3, 3, 5, seed=1), rnd(5, seed=2)
    c = net.add("Conv2D", "conv2d", [x], [("kernel", k), ("bias", b)], filters=5, kernel_size=[3, 3],
                strides=[1, 1], padding="same", activation="linear", use_bias=True, dilation_rate=[1, 1])
    d1k, d1b = rnd(5, 2, seed=3), rnd(2, seed=4)
    d1 = net.add("Dense", "dense", [c], [("kernel", d1k), ("bias", d1b)], units=2, activation="linear",
                 use_bias=True)
    d0k, d0b = rnd(3, 4, seed=9), rnd(4, seed=10)
    d0 = net.add("Dense", "dense_in", [x], [("kernel", d0k), ("bias", d0b)], units=4, activation="relu",
                 use_bias=True)
    d2k = rnd(4, 3, seed=5)
    d2 = net.add("Dense", "dense_seq", [seq], [("kernel", d2k)], units=3, activation="linear", use_bias=False)
    xv, sv = rnd(2, 4, 5, 3, seed=6), rnd(2, 6, 4, seed=7)
    m, (g1, g0, g2) = load_run(net, tmp_path, [d1, d0, d2], {"img": xv, "seq": sv})
    assert_close(g1, conv_ref(xv, k, b, padding="same") @ d1k + d1b)
    assert_close(g0, np.maximum(xv.astype(np.float64) @ d0k + d0b, 0))
    assert_close(g2, sv.astype(np.float64) @ d2k)
    assert m.outputs[0].layout == "NHWC" and m.outputs[0].shape == (None, 4, 5, 2)


@pytest.mark.parametrize("fmt", FORMATS)
def test_reshape_permute(fmt, tmp_path):
    net = Net(fmt)
    x = net.input("img", (4, 6, 2))
    k = rnd(1, 1, 2, 3, seed=1)
    c = net.add("Conv2D", "conv2d", [x], [("kernel", k)], filters=3, kernel_size=[1, 1], strides=[1, 1],
                padding="valid", activation="linear", use_bias=False, dilation_rate=[1, 1])
    p = net.add("Permute", "permute", [c], dims=[3, 1, 2])          # (3, 4, 6)
    r = net.add("Reshape", "reshape", [p], target_shape=[12, -1])   # (12, 6)
    p2 = net.add("Permute", "permute_1", [c], dims=[2, 1, 3])       # (6, 4, 3)
    xv = rnd(2, 4, 6, 2, seed=2)
    _, (g1, g2) = load_run(net, tmp_path, [r, p2], {"img": xv})
    conv = conv_ref(xv, k, None)
    assert_close(g1, np.transpose(conv, (0, 3, 1, 2)).reshape(2, 12, 6))
    assert_close(g2, np.transpose(conv, (0, 2, 1, 3)))


# ----------------------------------------------------------------------------- pooling
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cls,kind", [("MaxPooling2D", "max"), ("AveragePooling2D", "avg")])
@pytest.mark.parametrize("padding,pool,strides", [("valid", (2, 2), None), ("same", (3, 2), (2, 3)),
                                                  ("same", (2, 2), (1, 1))])
def test_pooling(fmt, tmp_path, cls, kind, padding, pool, strides):
    net = Net(fmt)
    x = net.input("img", (7, 8, 5))
    y = net.add(cls, "pool", [x], pool_size=list(pool), strides=None if strides is None else list(strides),
                padding=padding, data_format="channels_last")
    xv = rnd(3, 7, 8, 5, seed=1)
    _, (got,) = load_run(net, tmp_path, [y], {"img": xv})
    s = strides or pool
    ph, pw = tf_pads(7, pool[0], s[0], 1, padding), tf_pads(8, pool[1], s[1], 1, padding)
    ref = R.pool2d(nchw(xv), kind, pool, s, (ph[0], pw[0], ph[1], pw[1]))
    assert_close(got, nhwc(ref))


@pytest.mark.parametrize("fmt", FORMATS)
def test_global_pooling(fmt, tmp_path):
    net = Net(fmt)
    x = net.input("img", (5, 3, 4))
    a = net.add("GlobalAveragePooling2D", "gap", [x], data_format="channels_last", keepdims=False)
    b = net.add("GlobalMaxPooling2D", "gmp", [x], data_format="channels_last", keepdims=True)
    xv = rnd(2, 5, 3, 4, seed=1)
    m, (ga, gb) = load_run(net, tmp_path, [a, b], {"img": xv})
    assert_close(ga, xv.mean(axis=(1, 2)))
    assert_close(gb, xv.max(axis=(1, 2), keepdims=True))
    assert m.outputs[1].shape == (None, 1, 1, 4)


# ----------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False), (False, False)])
def test_batchnorm(fmt, tmp_path, center, scale):
    net = Net(fmt)
    x = net.input("img", (4, 3, 5))
    g, b, mu, var = rnd(5, seed=1), rnd(5, seed=2), rnd(5, seed=3), rnd(5, seed=4, lo=0.2, hi=2)
    ws = ([("gamma", g)] if scale else []) + ([("beta", b)] if center else []) + \
        [("moving_mean", mu), ("moving_variance", var)]
    y = net.add("BatchNormalization", "bn", [x], ws, axis=[3] if fmt == "h5" else -1, epsilon=0.01,
                center=center, scale=scale, momentum=0.99)
    # also over axis 1 (H) of the same input, which is not the channel axis
    g2, m2, v2 = rnd(4, seed=5), rnd(4, seed=6), rnd(4, seed=7, lo=0.2, hi=2)
    z = net.add("BatchNormalization", "bn_h", [x], [("gamma", g2), ("moving_mean", m2), ("moving_variance", v2)],
                axis=1, epsilon=0.001, center=False, scale=True)
    xv = rnd(2, 4, 3, 5, seed=8)
    _, (gy, gz) = load_run(net, tmp_path, [y, z], {"img": xv})
    gam = g if scale else np.ones(5)
    bet = b if center else np.zeros(5)
    assert_close(gy, (xv - mu) / np.sqrt(var + 0.01) * gam + bet)
    sh = (1, 4, 1, 1)
    assert_close(gz, (xv - m2.reshape(sh)) / np.sqrt(v2.reshape(sh) + 0.001) * g2.reshape(sh))


@pytest.mark.parametrize("fmt", FORMATS)
def test_layernorm(fmt, tmp_path):
    net = Net(fmt)
    x = net.input("img", (3, 4, 5))
    k = rnd(1, 1, 5, 5, seed=9)
    c = net.add("Conv2D", "conv2d", [x], [("kernel", k)], filters=5, kernel_size=[1, 1], strides=[1, 1],
                padding="valid", activation="linear", use_bias=False, dilation_rate=[1, 1])
    g, b = rnd(5, seed=1), rnd(5, seed=2)
    y = net.add("LayerNormalization", "ln", [c], [("gamma", g), ("beta", b)], axis=-1, epsilon=1e-3,
                center=True, scale=True)
    g2 = rnd(3, 4, seed=3)
    z = net.add("LayerNormalization", "ln_hw", [c], [("gamma", g2)], axis=[1, 2], epsilon=1e-5,
                center=False, scale=True)
    xv = rnd(2, 3, 4, 5, seed=4)
    _, (gy, gz) = load_run(net, tmp_path, [y, z], {"img": xv})
    cv = conv_ref(xv, k, None)
    mu, var = cv.mean(-1, keepdims=True), cv.var(-1, keepdims=True)
    assert_close(gy, (cv - mu) / np.sqrt(var + 1e-3) * g + b)
    mu, var = cv.mean((1, 2), keepdims=True), cv.var((1, 2), keepdims=True)
    assert_close(gz, (cv - mu) / np.sqrt(var + 1e-5) * g2[None, :, :, None])


@pytest.mark.parametrize("fmt", FORMATS)
def test_rescaling_and_normalization(fmt, tmp_path):
    net = Net(fmt)
    x = net.input("img", (3, 4, 3))
    r = net.add("Rescaling", "rescaling", [x], scale=1 / 255.0, offset=-0.5)
    mean, var = [0.1, 0.2, -0.3], [2.0, 0.5, 1e-20]
    n1 = net.add("Normalization", "norm_cfg", [r], axis=-1, mean=mean, variance=var, invert=False)
    wm, wv = rnd(3, seed=1), rnd(3, seed=2, lo=0.1, hi=3)
    n2 = net.add("Normalization", "normalization", [x], [("mean", wm), ("variance", wv), ("count", np.float32(7))],
                 axis=-1, mean=None, variance=None, invert=False)
    n3 = net.add("Normalization", "norm_inv", [x], axis=None, mean=0.5, variance=4.0, invert=True)
    xv = rng(3).uniform(0, 255, (2, 3, 4, 3)).astype(np.float32)
    _, (g1, g2, g3) = load_run(net, tmp_path, [n1, n2, n3], {"img": xv})
    rv = xv.astype(np.float64) / 255.0 - 0.5
    assert_close(g1, (rv - np.array(mean)) / np.maximum(np.sqrt(var), 1e-7))
    assert_close(g2, (xv - wm) / np.sqrt(wv))
    assert_close(g3, 0.5 + xv.astype(np.float64) * 2.0)


# ----------------------------------------------------------------------------- activations
KERAS_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.2 * x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0))),
    "gelu": lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2))),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "swish": lambda x: x / (1 + np.exp(-x)),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "hard_swish": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "hard_silu": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "softmax": lambda x: R.softmax(x, axis=-1),
    "log_softmax": lambda x: R.softmax(x, axis=-1, log=True),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "tanh": np.tanh,
    "exponential": np.exp,
    "linear": lambda x: x,
    "mish": lambda x: x * np.tanh(np.log1p(np.exp(x))),
    "hard_tanh": lambda x: np.clip(x, -1, 1),
    "celu": lambda x: np.maximum(x, 0) + np.minimum(0, np.expm1(np.minimum(x, 0))),
    "tanh_shrink": lambda x: x - np.tanh(x),
    "log_sigmoid": lambda x: -np.log1p(np.exp(-x)),
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_activation(fmt, tmp_path):
    net = Net(fmt)
    x = net.input("img", (3, 4, 6))
    outs = [net.add("Activation", f"act_{name}", [x], activation=name) for name in KERAS_ACTIVATIONS]
    xv = rnd(2, 3, 4, 6, seed=1, lo=-4, hi=4)
    _, got = load_run(net, tmp_path, outs, {"img": xv})
    for name, g in zip(KERAS_ACTIVATIONS, got):
        assert_close(g, KERAS_ACTIVATIONS[name](xv.astype(np.float64)), name)


@pytest.mark.parametrize("fmt", FORMATS)
def test_gelu_exact_and_approximate(fmt, tmp_path):
    """'gelu' is exact; KerasHub's registered gelu_approximate is the tanh form."""
    net = Net(fmt)
    x = net.input("x", (9,))
    exact = net.add("Activation", "exact", [x], activation="gelu")
    approx = net.add("Activation", "approx", [x], activation={
        "module": "keras_hub.src.utils.keras_utils", "class_name": "function", "config": "gelu_approximate",
        "registered_name": "keras_hub>gelu_approximate"})
    approx2 = net.add("Activation", "approx2", [x], activation="keras_nlp>gelu_approximate")
    xv = rnd(2, 9, seed=1, lo=-4, hi=4)
    _, (ge, ga, ga2) = load_run(net, tmp_path, [exact, approx, approx2], {"x": xv})
    assert_close(ge, R.ACTIVATIONS["Gelu"](xv.astype(np.float64)))
    tanh_form = R.ACTIVATIONS["GeluTanh"](xv.astype(np.float64))
    assert_close(ga, tanh_form)
    assert_close(ga2, tanh_form)
    assert np.abs(tanh_form - R.ACTIVATIONS["Gelu"](xv.astype(np.float64))).max() > 1e-4   # they differ


@pytest.mark.parametrize("fmt,version,alpha", [("h5", "2.13.1", 0.2), ("keras", "3.3.3", 1 / 6),
                                               ("h5", "3.1.0", 1 / 6), ("keras", "2.15.0", 0.2)])
def test_hard_sigmoid_follows_the_keras_version(fmt, version, alpha, tmp_path):
    net = Net(fmt, version=version)
    x = net.input("x", (7,))
    y = net.add("Activation", "hs", [x], activation="hard_sigmoid")
    xv = rnd(2, 7, seed=1, lo=-4, hi=4)
    _, (got,) = load_run(net, tmp_path, [y], {"x": xv})
    assert_close(got, np.clip(alpha * xv + 0.5, 0, 1))


@pytest.mark.parametrize("fmt", FORMATS)
def test_activation_layers(fmt, tmp_path):
    net = Net(fmt)
    x = net.input("img", (3, 4, 5))
    k = rnd(1, 1, 5, 5, seed=9)
    c = net.add("Conv2D", "conv2d", [x], [("kernel", k)], filters=5, kernel_size=[1, 1], strides=[1, 1],
                padding="valid", activation="linear", use_bias=False, dilation_rate=[1, 1])
    relu_cfgs = [dict(max_value=None, negative_slope=0.0, threshold=0.0),
                 dict(max_value=1.5, negative_slope=0.0, threshold=0.0),
                 dict(max_value=None, negative_slope=0.3, threshold=0.0),
                 dict(max_value=2.0, negative_slope=0.1, threshold=0.4),
                 dict(max_value=None, negative_slope=0.0, threshold=-0.5)]
    outs = [net.add("ReLU", f"relu_{i}", [c], **cfg) for i, cfg in enumerate(relu_cfgs)]
    leaky_cfg = {"negative_slope": 0.25} if fmt == "keras" else {"alpha": 0.25}
    outs.append(net.add("LeakyReLU", "leaky", [c], **leaky_cfg))
    outs.append(net.add("ELU", "elu", [c], alpha=0.7))
    outs.append(net.add("Softmax", "softmax_c", [c], axis=-1))
    outs.append(net.add("Softmax", "softmax_h", [c], axis=1))
    a1 = rnd(1, 1, 5, seed=2)
    outs.append(net.add("PReLU", "p_re_lu", [c], [("alpha", a1)], shared_axes=[1, 2]))
    a2 = rnd(3, 4, 5, seed=3)
    outs.append(net.add("PReLU", "p_re_lu_1", [c], [("alpha", a2)], shared_axes=None))
    for i, cls in enumerate(["Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
                             "ActivityRegularization"]):
        outs.append(net.add(cls, f"noop_{i}", [c], rate=0.5, seed=None))
    xv = rnd(2, 3, 4, 5, seed=4, lo=-2, hi=2)
    _, got = load_run(net, tmp_path, outs, {"img": xv})
    cv = conv_ref(xv, k, None)

    def keras_relu(v, max_value, negative_slope, threshold):
        pos = np.where(v > threshold, v, 0.0)
        if max_value is not None:
            pos = np.clip(pos, 0, max_value)
        return pos - negative_slope * np.maximum(threshold - v, 0)

    refs = [keras_relu(cv, **cfg) for cfg in relu_cfgs]
    refs += [np.where(cv >= 0, cv, 0.25 * cv), np.where(cv > 0, cv, 0.7 * np.expm1(np.minimum(cv, 0))),
             R.softmax(cv, -1), R.softmax(cv, 1), np.where(cv < 0, cv * a1, cv), np.where(cv < 0, cv * a2, cv)]
    refs += [cv] * 5
    for i, (g, r) in enumerate(zip(got, refs)):
        assert_close(g, r, f"output {i}")


@pytest.mark.parametrize("fmt", FORMATS)
def test_convnext_layer_scale(fmt, tmp_path):
    """keras.applications' ConvNeXt LayerScale: x * gamma along the channels, after a layer that
    leaves the tensor channels-first in the IR and before one that reads Keras order."""
    net = Net(fmt)
    x = net.input("img", (3, 4, 5))
    k = rnd(1, 1, 5, 5, seed=9)
    c = net.add("Conv2D", "conv2d", [x], [("kernel", k)], filters=5, kernel_size=[1, 1], strides=[1, 1],
                padding="valid", activation="linear", use_bias=False, dilation_rate=[1, 1])
    gamma = rnd(5, seed=10)
    module = "keras.src.applications.convnext" if fmt == "keras" else "keras.applications.convnext"
    s = net.add("LayerScale", "layer_scale", [c], [("gamma", gamma)], module=module, init_values=1e-6,
                projection_dim=5)
    out = net.add("Flatten", "flatten", [s])
    xv = rnd(2, 3, 4, 5, seed=4)
    _, (got,) = load_run(net, tmp_path, [out], {"img": xv})
    assert_close(got, (conv_ref(xv, k, None) * gamma).reshape(2, -1))


@pytest.mark.parametrize("fmt", FORMATS)
def test_layer_scale_checks_its_channels(fmt, tmp_path):
    net = Net(fmt)
    x = net.input("img", (3, 4, 5))
    s = net.add("LayerScale", "layer_scale", [x], [("gamma", rnd(4))], init_values=1e-6, projection_dim=4)
    path = net.save(tmp_path / f"m.{fmt}", [s])
    with pytest.raises(ModelFileError, match="projection_dim 4 does not match the input's 5 channels"):
        fastcnn.load(path)


# ----------------------------------------------------------------------------- padding, cropping, resizing
@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_padding_and_cropping(fmt, tmp_path):
    net = Net(fmt)
    x = net.input("img", (5, 6, 2))
    k = rnd(1, 1, 2, 3, seed=1)
    c = net.add("Conv2D", "conv2d", [x], [("kernel", k)], filters=3, kernel_size=[1, 1], strides=[1, 1],
                padding="valid", activation="linear", use_bias=False, dilation_rate=[1, 1])
    p = net.add("ZeroPadding2D", "pad", [c], padding=[[1, 2], [0, 3]], data_format="channels_last")
    q = net.add("ZeroPadding2D", "pad_sym", [x], padding=1, data_format="channels_last")
    r = net.add("Cropping2D", "crop", [p], cropping=[[2, 0], [1, 2]], data_format="channels_last")
    s = net.add("Cropping2D", "crop_x", [x], cropping=[1, 2], data_format="channels_last")
    xv = rnd(2, 5, 6, 2, seed=2)
    _, (gp, gq, gr, gs) = load_run(net, tmp_path, [p, q, r, s], {"img": xv})
    cv = conv_ref(xv, k, None)
    pv = np.pad(cv, ((0, 0), (1, 2), (0, 3), (0, 0)))
    assert_close(gp, pv)
    assert_close(gq, np.pad(xv, ((0, 0), (1, 1), (1, 1), (0, 0))))
    assert_close(gr, pv[:, 2:, 1:-2])
    assert_close(gs, xv[:, 1:-1, 2:-2])


def bilinear_half_pixel(x, fh, fw, size=None):
    """NHWC bilinear resize with half-pixel centres (tf.image.resize, antialias off): by the
    factors (fh, fw), or to size (out_h, out_w)."""
    n, h, w, c = x.shape
    out_h, out_w = size or (h * fh, w * fw)

    def axis_weights(size, out_len):
        out = np.zeros((out_len, size))
        for o in range(out_len):
            src = min(max((o + 0.5) * size / out_len - 0.5, 0), size - 1)
            lo = int(math.floor(src))
            hi = min(lo + 1, size - 1)
            out[o, lo] += 1 - (src - lo)
            out[o, hi] += src - lo
        return out

    return np.einsum("ph,nhwc,qw->npqc", axis_weights(h, out_h), x.astype(np.float64), axis_weights(w, out_w))


def nearest_half_pixel(x, size):
    """NHWC nearest resize as tf.image.resize computes it: source floor((o + 0.5) * in / out)."""
    h, w = x.shape[1:3]
    rows = np.minimum(np.floor((np.arange(size[0]) + 0.5) * h / size[0]).astype(int), h - 1)
    cols = np.minimum(np.floor((np.arange(size[1]) + 0.5) * w / size[1]).astype(int), w - 1)
    return x[:, rows][:, :, cols]


@needs_resize
@pytest.mark.parametrize("fmt", FORMATS)
def test_upsampling(fmt, tmp_path):
    net = Net(fmt)
    x = net.input("img", (3, 4, 2))
    a = net.add("UpSampling2D", "up", [x], size=[2, 3], interpolation="nearest", data_format="channels_last")
    b = net.add("UpSampling2D", "up_bilinear", [x], size=[2, 2], interpolation="bilinear",
                data_format="channels_last")
    xv = rnd(2, 3, 4, 2, seed=1)
    _, (ga, gb) = load_run(net, tmp_path, [a, b], {"img": xv})
    assert_close(ga, np.repeat(np.repeat(xv, 2, axis=1), 3, axis=2))
    assert_close(gb, bilinear_half_pixel(xv, 2, 2))


@needs_resize
@pytest.mark.parametrize("fmt", FORMATS)
def test_resizing_center_crop_and_unit_normalization(fmt, tmp_path):
    net = Net(fmt)
    x = net.input("img", (6, 4, 2))
    cfgs = [dict(height=9, width=7, interpolation="bilinear"), dict(height=4, width=3, interpolation="bilinear"),
            dict(height=9, width=7, interpolation="nearest"), dict(height=4, width=3, interpolation="nearest"),
            dict(height=2, width=2, interpolation="bilinear", crop_to_aspect_ratio=True),
            dict(height=3, width=5, interpolation="nearest", crop_to_aspect_ratio=True),
            dict(height=5, width=4, interpolation="nearest", crop_to_aspect_ratio=True)]
    outs = [net.add("Resizing", f"resizing_{i}", [x], **cfg) for i, cfg in enumerate(cfgs)]
    outs.append(net.add("CenterCrop", "center_crop", [x], height=3, width=2))
    outs.append(net.add("UnitNormalization", "unit_norm", [x], axis=-1))
    outs.append(net.add("UnitNormalization", "unit_norm_hw", [x], axis=[1, 2]))
    xv = rnd(2, 6, 4, 2, seed=5)
    _, got = load_run(net, tmp_path, outs, {"img": xv})

    def resize(v, cfg):
        size = (cfg["height"], cfg["width"])
        if cfg.get("crop_to_aspect_ratio"):
            h, w = v.shape[1:3]
            ch, cw = min(h, int(w * size[0] / size[1])), min(w, int(h * size[1] / size[0]))
            v = v[:, (h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
        if cfg["interpolation"] == "bilinear":
            return bilinear_half_pixel(v, 0, 0, size)
        return nearest_half_pixel(v, size)

    refs = [resize(xv, cfg) for cfg in cfgs]
    refs.append(xv[:, 1:4, 1:3])
    refs.append(xv / np.sqrt(np.maximum((xv.astype(np.float64) ** 2).sum(-1, keepdims=True), 1e-12)))
    refs.append(xv / np.sqrt(np.maximum((xv.astype(np.float64) ** 2).sum((1, 2), keepdims=True), 1e-12)))
    for i, (g, r) in enumerate(zip(got, refs)):
        assert_close(g, r, f"output {i}")


@pytest.mark.parametrize("fmt", FORMATS)
def test_random_augmentation_layers_pass_through(fmt, tmp_path):
    """Keras' data augmentation layers (often inside the model, as Keras' tutorials put them)
    do nothing at inference."""
    net = Net(fmt)
    x = net.input("img", (5, 4, 3))
    y = net.add("RandomFlip", "flip", [x], mode="horizontal", seed=None)
    y = net.add("RandomRotation", "rotation", [y], factor=0.1, fill_mode="reflect", interpolation="bilinear")
    y = net.add("RandomZoom", "zoom", [y], height_factor=0.2, width_factor=None)
    y = net.add("RandomContrast", "contrast", [y], factor=0.3)
    y = net.add("RandomTranslation", "translation", [y], height_factor=0.1, width_factor=0.1)
    xv = rnd(2, 5, 4, 3, seed=6)
    _, (got,) = load_run(net, tmp_path, [y], {"img": xv})
    assert_close(got, xv)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cls,cfg,words", [
    ("RandomCrop", dict(height=2, width=2), "RandomCrop"),             # Keras 2 crops at inference
    ("Resizing", dict(height=3, width=3, interpolation="bicubic"), "bicubic"),
    ("Resizing", dict(height=3, width=3, interpolation="bilinear", antialias=True), "antialias"),
    ("CenterCrop", dict(height=8, width=2), "smaller"),
])
def test_resizing_layers_refused(fmt, tmp_path, cls, cfg, words):
    net = Net(fmt)
    x = net.input("img", (6, 4, 2))
    y = net.add(cls, "the_layer", [x], **cfg)
    path = net.save(tmp_path / f"m.{fmt}", [y])
    with pytest.raises(fastcnn.UnsupportedOpError, match=words):
        fastcnn.load(path)


# ----------------------------------------------------------------------------- merging
@pytest.mark.parametrize("fmt", FORMATS)
def test_merge_layers(fmt, tmp_path, threads):
    net = Net(fmt)
    x = net.input("img", (3, 4, 2))
    k1, k2 = rnd(1, 1, 2, 2, seed=1), rnd(3, 3, 2, 2, seed=2)
    a = net.add("Conv2D", "conv2d", [x], [("kernel", k1)], filters=2, kernel_size=[1, 1], strides=[1, 1],
                padding="valid", activation="linear", use_bias=False, dilation_rate=[1, 1])
    b = net.add("Conv2D", "conv2d_1", [x], [("kernel", k2)], filters=2, kernel_size=[3, 3], strides=[1, 1],
                padding="same", activation="linear", use_bias=False, dilation_rate=[1, 1])
    outs = [net.add("Add", "add3", [a, b, x]), net.add("Subtract", "sub", [x, a]),
            net.add("Multiply", "mul", [a, b, x]), net.add("Average", "avg", [a, b]),
            net.add("Maximum", "max", [a, b, x]), net.add("Minimum", "min", [b, x]),
            net.add("Concatenate", "cat", [a, x, b], axis=-1), net.add("Concatenate", "cat_h", [a, x], axis=1)]
    xv = rnd(2, 3, 4, 2, seed=3)
    _, got = load_run(net, tmp_path, outs, {"img": xv}, threads=threads)
    av, bv = conv_ref(xv, k1, None), conv_ref(xv, k2, None, padding="same")
    refs = [av + bv + xv, xv - av, av * bv * xv, (av + bv) / 2, np.maximum(np.maximum(av, bv), xv),
            np.minimum(bv, xv), np.concatenate([av, xv, bv], -1), np.concatenate([av, xv], 1)]
    for i, (g, r) in enumerate(zip(got, refs)):
        assert_close(g, r, f"output {i}")


# ----------------------------------------------------------------------------- models
@pytest.mark.parametrize("fmt", FORMATS)
def test_sequential(fmt, tmp_path):
    net = Net(fmt, name="sequential")
    net.input("input_1", (6, 6, 1))
    k, b = rnd(3, 3, 1, 4, seed=1), rnd(4, seed=2)
    net.add("Conv2D", "conv2d", [], [("kernel", k), ("bias", b)], filters=4, kernel_size=[3, 3], strides=[1, 1],
            padding="valid", activation="relu", use_bias=True, dilation_rate=[1, 1])
    net.add("MaxPooling2D", "max_pooling2d", [], pool_size=[2, 2], strides=[2, 2], padding="valid")
    net.add("Flatten", "flatten", [])
    dk, db = rnd(16, 3, seed=3), rnd(3, seed=4)
    net.add("Dense", "dense", [], [("kernel", dk), ("bias", db)], units=3, activation="softmax", use_bias=True)
    xv = rnd(4, 6, 6, 1, seed=5)
    m, (got,) = load_run(net, tmp_path, [], {"input_1": xv}, sequential=True)
    conv = np.maximum(conv_ref(xv, k, b), 0)
    pooled = nhwc(R.pool2d(nchw(conv), "max", (2, 2)))
    assert_close(got, R.softmax(pooled.reshape(4, -1) @ dk + db, -1))
    assert [t.name for t in m.outputs] == ["dense"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_sequential_without_input_layer(fmt, tmp_path):
    """Keras 2 Sequential models built with input_shape= have no InputLayer: the first layer
    carries batch_input_shape."""
    net = Net(fmt, name="sequential")
    dk, db = rnd(5, 2, seed=1), rnd(2, seed=2)
    net.add("Dense", "dense", [], [("kernel", dk), ("bias", db)], units=2, activation="tanh", use_bias=True,
            batch_input_shape=[None, 5])
    xv = rnd(3, 5, seed=3)
    m, (got,) = load_run(net, tmp_path, [], {"sequential_input": xv}, sequential=True)
    assert_close(got, np.tanh(xv @ dk + db))


@pytest.mark.parametrize("fmt", FORMATS)
def test_functional_shared_input_branches_multiple_outputs(fmt, tmp_path):
    net = Net(fmt)
    x = net.input("img", (6, 5, 3))
    side = net.input("side", (4,))
    k1, k2 = rnd(3, 3, 3, 4, seed=1), rnd(1, 1, 3, 4, seed=2)
    a = net.add("Conv2D", "conv_a", [x], [("kernel", k1)], filters=4, kernel_size=[3, 3], strides=[1, 1],
                padding="same", activation="relu", use_bias=False, dilation_rate=[1, 1])
    b = net.add("Conv2D", "conv_b", [x], [("kernel", k2)], filters=4, kernel_size=[1, 1], strides=[1, 1],
                padding="same", activation="sigmoid", use_bias=False, dilation_rate=[1, 1])
    s = net.add("Add", "add", [a, b])
    g = net.add("GlobalAveragePooling2D", "gap", [s], keepdims=False)
    cat = net.add("Concatenate", "cat", [g, side], axis=-1)
    dk, db = rnd(8, 2, seed=3), rnd(2, seed=4)
    d = net.add("Dense", "head", [cat], [("kernel", dk), ("bias", db)], units=2, activation="linear", use_bias=True)
    xv, sv = rnd(2, 6, 5, 3, seed=5), rnd(2, 4, seed=6)
    m, (gd, gs) = load_run(net, tmp_path, [d, s], {"img": xv, "side": sv})
    sref = np.maximum(conv_ref(xv, k1, None, padding="same"), 0) + 1 / (1 + np.exp(-conv_ref(xv, k2, None)))
    assert_close(gs, sref)
    assert_close(gd, np.concatenate([sref.mean(axis=(1, 2)), sv], -1) @ dk + db)
    assert [t.name for t in m.inputs] == ["img", "side"]
    assert [t.name for t in m.outputs] == ["head", "add"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_nested_model_called_twice(fmt, tmp_path):
    inner = Net(fmt, name="branch")
    xi = inner.input("branch_in", (4, 4, 2))
    k, b = rnd(3, 3, 2, 3, seed=1), rnd(3, seed=2)
    c = inner.add("Conv2D", "conv2d", [xi], [("kernel", k), ("bias", b)], filters=3, kernel_size=[3, 3],
                  strides=[1, 1], padding="valid", activation="relu", use_bias=True, dilation_rate=[1, 1])
    bg, bb, bm, bv = rnd(3, seed=3), rnd(3, seed=4), rnd(3, seed=5), rnd(3, seed=6, lo=0.5, hi=1.5)
    n = inner.add("BatchNormalization", "batch_normalization", [c],
                  [("gamma", bg), ("beta", bb), ("moving_mean", bm), ("moving_variance", bv)],
                  axis=-1, epsilon=1e-3, center=True, scale=True)
    f = inner.add("Flatten", "flatten", [n])
    net = Net(fmt)
    x1, x2 = net.input("left", (4, 4, 2)), net.input("right", (4, 4, 2))
    y1 = net.add_model(inner, [x1], [f])
    y2 = net.call_again("branch", [x2])
    dk = rnd(12, 2, seed=7)
    d = net.add("Dense", "dense", [y1], [("kernel", dk)], units=2, activation="linear", use_bias=False)
    d2 = net.call_again("dense", [y2])
    out = net.add("Subtract", "subtract", [d, d2])
    l1, r1 = rnd(2, 4, 4, 2, seed=8), rnd(2, 4, 4, 2, seed=9)
    _, (got,) = load_run(net, tmp_path, [out], {"left": l1, "right": r1})

    def branch(v):
        cv = np.maximum(conv_ref(v, k, b), 0)
        return ((cv - bm) / np.sqrt(bv + 1e-3) * bg + bb).reshape(len(v), -1)

    assert_close(got, branch(l1) @ dk - branch(r1) @ dk)


@pytest.mark.parametrize("fmt", FORMATS)
def test_channels_first_model(fmt, tmp_path):
    net = Net(fmt)
    x = net.input("img", (3, 6, 7))
    k, b = rnd(3, 3, 3, 4, seed=1), rnd(4, seed=2)
    c = net.add("Conv2D", "conv2d", [x], [("kernel", k), ("bias", b)], filters=4, kernel_size=[3, 3],
                strides=[1, 1], padding="same", data_format="channels_first", activation="linear",
                use_bias=True, dilation_rate=[1, 1])
    p = net.add("MaxPooling2D", "pool", [c], pool_size=[2, 2], strides=[2, 2], padding="valid",
                data_format="channels_first")
    f = net.add("Flatten", "flatten", [p], data_format="channels_first")
    xv = rnd(2, 3, 6, 7, seed=3)
    m, (gc, gf) = load_run(net, tmp_path, [c, f], {"img": xv})
    assert m.inputs[0].layout == "NCHW"
    cv = R.conv2d(xv, np.transpose(k, (3, 2, 0, 1)), b, pads=(1, 1, 1, 1))
    assert_close(gc, cv)
    # Keras' Flatten(data_format="channels_first") moves the channels last before flattening
    assert_close(gf, nhwc(R.pool2d(cv, "max", (2, 2))).reshape(2, -1))


@pytest.mark.parametrize("fmt", FORMATS)
def test_batch_sizes_and_dynamic_spatial_dims(fmt, tmp_path):
    """A fully convolutional model with unknown height and width runs on several sizes."""
    net = Net(fmt)
    x = net.input("img", (None, None, 2))
    k = rnd(3, 3, 2, 3, seed=1)
    c = net.add("Conv2D", "conv2d", [x], [("kernel", k)], filters=3, kernel_size=[3, 3], strides=[2, 2],
                padding="same", activation="linear", use_bias=False, dilation_rate=[1, 1])
    path = net.save(tmp_path / f"m.{fmt}", [c])
    m = fastcnn.load(path, num_threads=1)
    for shape in [(1, 5, 7, 2), (3, 8, 3, 2)]:
        xv = rnd(*shape, seed=2)
        assert_close(m.run(None, {"img": xv})[0], conv_ref(xv, k, None, (2, 2), "same"))

"""Keras 3 operations in functional models (`x + 3.0`, keras.ops.mean, keras.ops.hard_sigmoid):
files written as Keras 3 writes them, .keras (modules named) and the legacy .h5 (no modules:
the call tells an Add operation from an Add layer), outputs against numpy written here.
Inputs go through a convolution first, so the operations see channels-first IR tensors whose
Keras axes they must map."""
import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
pytest.importorskip("h5py")

import fastcnn  # noqa: E402
from fastcnn.errors import FastCNNError, ModelFileError, UnsupportedOpError  # noqa: E402
from helpers import assert_close  # noqa: E402
from keras_writer import Net  # noqa: E402

FORMATS = ["keras", "h5v3"]


def net_of(fmt):
    return Net("keras") if fmt == "keras" else Net("h5", version="3.15.1")


def rnd(*shape, seed=0, lo=-1.0, hi=1.0):
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)


def conv1x1(net, x, c_in, c_out, seed=1, name="conv"):
    """A 1x1 Conv2D (channels-last in Keras, channels-first in fastcnn's IR); returns (ref, kernel)."""
    k = rnd(1, 1, c_in, c_out, seed=seed)
    y = net.add("Conv2D", name, [x], [("kernel", k)], filters=c_out, kernel_size=[1, 1], strides=[1, 1],
                padding="valid", activation="linear", use_bias=False, dilation_rate=[1, 1])
    return y, k


def conv_ref(xv, k):
    return np.einsum("nhwc,cd->nhwd", xv, k[0, 0])


def run(net, tmp_path, outs, feeds, threads=1):
    path = net.save(tmp_path / f"model.{'keras' if net.fmt == 'keras' else 'h5'}", outs)
    m = fastcnn.load(path, num_threads=threads)
    return m.run(None, feeds)


def relu6(v):
    return np.clip(v, 0, 6)


# ----------------------------------------------------------------------------- arithmetic
@pytest.mark.parametrize("fmt", FORMATS)
def test_arithmetic_with_constants_and_tensors(fmt, tmp_path, threads):
    net = net_of(fmt)
    x = net.input("img", (5, 6, 3))
    c, k = conv1x1(net, x, 3, 4)
    scale = rnd(4, seed=5, lo=0.5, hi=2.0)
    grid = rnd(5, 1, 4, seed=6)
    outs = [net.op("Add", "add", [c, 3.0]),
            net.op("Subtract", "subtract", [1.0, c]),                 # the constant first
            net.op("TrueDivide", "true_divide", [c, 2.0]),
            net.op("Divide", "divide", [4.0, net.op("Add", "add_1", [net.op("Absolute", "abs", [c]), 1.0])]),
            net.op("Multiply", "multiply", [c, scale]),               # per channel (__numpy__)
            net.op("Add", "add_2", [c, grid]),                        # per row and channel
            net.op("Multiply", "multiply_1", [c, net.op("Sigmoid", "sigmoid", [c], module="keras.src.ops.nn")]),
            net.op("Maximum", "maximum", [c, 0.25]),
            net.op("Minimum", "minimum", [c, net.op("Mean", "mean", [c], axis=[1, 2], keepdims=True)]),
            net.op("Power", "power", [c, 2]),
            net.op("Power", "power_1", [net.op("Add", "add_3", [net.op("Absolute", "abs_1", [c]), 0.5]), c])]
    xv = rnd(2, 5, 6, 3, seed=3)
    cv = conv_ref(xv, k)
    refs = [cv + 3, 1 - cv, cv / 2, 4 / (np.abs(cv) + 1), cv * scale, cv + grid, cv / (1 + np.exp(-cv)),
            np.maximum(cv, 0.25), np.minimum(cv, cv.mean(axis=(1, 2), keepdims=True)), cv ** 2,
            (np.abs(cv) + 0.5) ** cv]
    got = run(net, tmp_path, outs, {"img": xv}, threads)
    for i, (g, r) in enumerate(zip(got, refs)):
        assert_close(g, r, f"output {i}")


@pytest.mark.parametrize("fmt", FORMATS)
def test_mobilenetv3_hard_sigmoid_beside_merge_layers(fmt, tmp_path):
    """MobileNetV3 as keras.applications writes it: hard_sigmoid(x) = ReLU(6)(x + 3.0) * (1/6)
    (operations) gating x with a Multiply layer, and an Add layer for the residual. In the
    legacy .h5 the Add and Multiply operations and layers share class names and no module."""
    net = net_of(fmt)
    x = net.input("img", (4, 4, 8))
    c, k = conv1x1(net, x, 8, 8)
    a = net.op("Add", "add", [c, 3.0])
    r = net.add("ReLU", "re_lu", [a], max_value=6.0, negative_slope=0.0, threshold=0.0)
    g = net.op("Multiply", "multiply", [r, 1.0 / 6.0])
    gated = net.add("Multiply", "multiply_1", [c, g])            # the layer
    out = net.add("Add", "add_1", [x, gated])                    # the layer
    xv = rnd(3, 4, 4, 8, seed=2, lo=-5, hi=5)
    (got,) = run(net, tmp_path, [out], {"img": xv})
    cv = conv_ref(xv, k)
    assert_close(got, xv + cv * relu6(cv + 3) / 6)


# ----------------------------------------------------------------------------- unary and activations
def _gelu_tanh(v):
    return 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3)))


UNARY = [  # (class, module, config, numpy reference)
    ("Negative", "numpy", {}, lambda v: -v),
    ("Absolute", "numpy", {}, np.abs),
    ("Sqrt", "numpy", {}, lambda v: np.sqrt(np.abs(v))),          # fed |v|: see the test
    ("Square", "numpy", {}, np.square),
    ("Exp", "numpy", {}, np.exp),
    ("Log", "numpy", {}, lambda v: np.log(np.abs(v))),
    ("Tanh", "numpy", {}, np.tanh),
    ("Reciprocal", "numpy", {}, lambda v: 1 / np.abs(v)),
    ("Floor", "numpy", {}, np.floor),
    ("Ceil", "numpy", {}, np.ceil),
    ("Sign", "numpy", {}, np.sign),
    ("Clip", "numpy", {"x_min": -0.5, "x_max": 0.75}, lambda v: np.clip(v, -0.5, 0.75)),
    ("Relu", "nn", {}, lambda v: np.maximum(v, 0)),
    ("Relu6", "nn", {}, relu6),
    ("Sigmoid", "nn", {}, lambda v: 1 / (1 + np.exp(-v))),
    ("HardSigmoid", "nn", {}, lambda v: relu6(v + 3) / 6),
    ("HardSilu", "nn", {}, lambda v: v * relu6(v + 3) / 6),
    ("Silu", "nn", {}, lambda v: v / (1 + np.exp(-v))),
    ("Gelu", "nn", {"approximate": True}, _gelu_tanh),
    ("Gelu", "nn", {"approximate": False},
     lambda v: 0.5 * v * (1 + np.vectorize(math.erf)(v / np.sqrt(2)))),
    ("LeakyRelu", "nn", {"negative_slope": 0.1}, lambda v: np.where(v > 0, v, 0.1 * v)),
    ("Elu", "nn", {"alpha": 0.5}, lambda v: np.where(v > 0, v, 0.5 * (np.exp(v) - 1))),
    ("Selu", "nn", {}, lambda v: 1.0507009873554805 * np.where(v > 0, v, 1.6732632423543772 * (np.exp(v) - 1))),
    ("Softplus", "nn", {}, lambda v: np.log1p(np.exp(v))),
    ("Softsign", "nn", {}, lambda v: v / (1 + np.abs(v))),
    ("HardTanh", "nn", {}, lambda v: np.clip(v, -1, 1)),
    ("LogSigmoid", "nn", {}, lambda v: -np.log1p(np.exp(-v))),
    ("Softmax", "nn", {"axis": -1}, lambda v: np.exp(v) / np.exp(v).sum(-1, keepdims=True)),
    ("Softmax", "nn", {"axis": 2}, lambda v: np.exp(v) / np.exp(v).sum(2, keepdims=True)),
    ("LogSoftmax", "nn", {"axis": 1}, lambda v: v - np.log(np.exp(v).sum(1, keepdims=True))),
    ("Erf", "math", {}, np.vectorize(math.erf)),
]


@pytest.mark.parametrize("fmt", FORMATS)
def test_unary_operations(fmt, tmp_path):
    net = net_of(fmt)
    x = net.input("img", (3, 5, 2))
    c, k = conv1x1(net, x, 2, 4)
    pos = net.op("Absolute", "absolute", [c])
    outs = []
    for i, (cls, mod, cfg, _) in enumerate(UNARY):
        src = pos if cls in ("Sqrt", "Log", "Reciprocal") else c
        outs.append(net.op(cls, f"{cls.lower()}_{i}", [src], module=f"keras.src.ops.{mod}", **cfg))
    xv = rnd(2, 3, 5, 2, seed=4, lo=-3, hi=3)
    cv = conv_ref(xv, k)
    got = run(net, tmp_path, outs, {"img": xv})
    for (cls, _, cfg, ref), g in zip(UNARY, got):
        assert_close(g, ref(cv).astype(np.float32), f"{cls} {cfg}")


# ----------------------------------------------------------------------------- reductions and shapes
@pytest.mark.parametrize("fmt", FORMATS)
def test_reductions_then_layers_in_keras_order(fmt, tmp_path):
    """Reductions drop Keras axes of a channels-first IR tensor: what follows (Dense, Flatten)
    must still see the Keras order."""
    net = net_of(fmt)
    x = net.input("img", (4, 5, 3))
    c, k = conv1x1(net, x, 3, 6)
    gap = net.op("Mean", "mean", [c], axis=[1, 2], keepdims=False)              # (N, 6)
    wd = rnd(6, 2, seed=7)
    dense = net.add("Dense", "dense", [gap], [("kernel", wd)], units=2, activation="linear", use_bias=False)
    mx = net.op("Max", "max", [c], axis=-1, keepdims=False)                    # (N, 4, 5)
    flat = net.add("Flatten", "flatten", [mx])
    sm = net.op("Sum", "sum", [c], axis=1, keepdims=False)                     # (N, 5, 6)
    flat_s = net.add("Flatten", "flatten_1", [sm])
    mn = net.op("Min", "min", [c], axis=[2, -1], keepdims=True)                # (N, 4, 1, 1)
    xv = rnd(2, 4, 5, 3, seed=8)
    cv = conv_ref(xv, k)
    got = run(net, tmp_path, [dense, flat, flat_s, mn], {"img": xv})
    refs = [cv.mean(axis=(1, 2)) @ wd, cv.max(-1).reshape(2, -1), cv.sum(1).reshape(2, -1),
            cv.min(axis=(2, 3), keepdims=True)]
    for i, (g, r) in enumerate(zip(got, refs)):
        assert_close(g, r, f"output {i}")


@pytest.mark.parametrize("fmt", FORMATS)
def test_reshape_transpose_expand_squeeze_concatenate(fmt, tmp_path):
    net = net_of(fmt)
    x = net.input("img", (4, 5, 3))
    c, k = conv1x1(net, x, 3, 2)
    r = net.op("Reshape", "reshape", [c], newshape=[-1, 20, 2])               # Keras order
    r2 = net.op("Reshape", "reshape_1", [c], newshape=[None, -1])             # (ops.shape(x)[0], -1)
    t = net.op("Transpose", "transpose", [c], axes=[0, 3, 1, 2])              # (N, 2, 4, 5)
    t_flat = net.add("Flatten", "flatten", [t])
    e = net.op("ExpandDims", "expand_dims", [net.op("Mean", "mean", [c], axis=[1, 2])], axis=1)  # (N, 1, 2)
    s = net.op("Squeeze", "squeeze", [net.op("Mean", "mean_1", [c], axis=[2], keepdims=True)], axis=2)  # (N, 4, 2)
    cat = net.op("Concatenate", "concatenate", [[c, x, c]], axis=-1)          # (N, 4, 5, 7)
    xv = rnd(3, 4, 5, 3, seed=9)
    cv = conv_ref(xv, k)
    got = run(net, tmp_path, [r, r2, t_flat, e, s, cat], {"img": xv})
    refs = [cv.reshape(3, 20, 2), cv.reshape(3, -1), np.transpose(cv, (0, 3, 1, 2)).reshape(3, -1),
            cv.mean(axis=(1, 2))[:, None, :], cv.mean(axis=2), np.concatenate([cv, xv, cv], -1)]
    for i, (g, r_) in enumerate(zip(got, refs)):
        assert_close(g, r_, f"output {i}")


KEYS = [  # x[key] on a (N, 4, 5, 6) tensor, as Keras 3 stores the key
    [slice(None), slice(1, 3)],
    [Ellipsis, slice(None, 2)],
    [slice(None), 2],
    [slice(None), slice(None, None, 2), slice(1, -1)],
    [slice(None), None, 3],
    [slice(None), slice(-3, None), slice(None), slice(1, 2)],
    [slice(None), slice(None, None, -1), -1, slice(5, 0, -2)],
    [slice(None), -2, Ellipsis, None, 0],
]


@pytest.mark.parametrize("fmt", FORMATS)
def test_get_item(fmt, tmp_path):
    """Slicing and indexing (`x[..., :2]`, `x[:, 2]`, `x[:, None, 3]`, negative steps) on a
    channels-first IR tensor, then Flatten (Keras order)."""
    net = net_of(fmt)
    x = net.input("img", (4, 5, 3))
    c, k = conv1x1(net, x, 3, 6)
    outs = [net.add("Flatten", f"flatten_{i}", [net.op("GetItem", f"get_item_{i}", [c, key])])
            for i, key in enumerate(KEYS)]
    xv = rnd(2, 4, 5, 3, seed=11)
    cv = conv_ref(xv, k)
    got = run(net, tmp_path, outs, {"img": xv})
    for key, g in zip(KEYS, got):
        assert_close(g, cv[tuple(key)].reshape(2, -1), f"{key}")


# ----------------------------------------------------------------------------- refusals
def _one_op(fmt, tmp_path, cls, args_of, module="keras.src.ops.numpy", kwargs=None, **cfg):
    net = net_of(fmt)
    x = net.input("img", (4, 5, 3))
    y = net.op(cls, "the_op", args_of(x), module=module, **cfg)
    if kwargs:
        net.entries[-1]["inbound_nodes"][0]["kwargs"] = kwargs
    path = net.save(tmp_path / f"model.{'keras' if fmt == 'keras' else 'h5'}", [y])
    return lambda: fastcnn.load(path)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case,error,words", [
    ("mean over every axis", UnsupportedOpError, "axis=None"),
    ("mean over the batch", ModelFileError, "batch axis"),
    ("transpose moving the batch", UnsupportedOpError, "batch axis 0 first"),
    ("unknown operation", UnsupportedOpError, "Matmul"),
    ("keyword arguments", UnsupportedOpError, "keyword arguments"),
    ("string argument", UnsupportedOpError, "'same'"),
    ("constant over the batch", UnsupportedOpError, "broadcast over the batch"),
    ("reshape fixing the batch", UnsupportedOpError, "keep the batch"),
    ("ragged constant", ModelFileError, "rectangular"),
    ("shapes that do not broadcast", ModelFileError, "do not match"),
    ("softmax over the batch", FastCNNError, "batch axis"),   # (the Softmax layer's check in .h5)
    ("slicing the batch", UnsupportedOpError, "batch axis"),
    ("index out of range", ModelFileError, "out of range"),
    ("float slice bound", ModelFileError, "not an integer"),
])
def test_operations_refused_with_a_message(fmt, tmp_path, case, error, words):
    args = lambda x: [x]  # noqa: E731
    cls, cfg, module, kwargs = "Mean", {}, "keras.src.ops.numpy", None
    if case == "mean over every axis":
        cfg = {"axis": None}
    elif case == "mean over the batch":
        cfg = {"axis": [0, 1]}
    elif case == "transpose moving the batch":
        cls, cfg = "Transpose", {"axes": [1, 0, 2, 3]}
    elif case == "unknown operation":
        cls, args = "Matmul", (lambda x: [x, x])
    elif case == "keyword arguments":
        cls, args, kwargs = "Add", (lambda x: [x, 1.0]), {"dtype": "float32"}
    elif case == "string argument":
        cls, args = "Add", (lambda x: [x, "same"])
    elif case == "constant over the batch":
        cls, args = "Add", (lambda x: [x, np.ones((2, 4, 5, 3), np.float32)])
    elif case == "reshape fixing the batch":
        cls, cfg = "Reshape", {"newshape": [2, 60]}
    elif case == "ragged constant":
        net = net_of(fmt)
        x = net.input("img", (4, 5, 3))
        y = net.op("Add", "the_op", [x, 1.0])
        net.entries[-1]["inbound_nodes"][0]["args"][1] = {"class_name": "__numpy__",
                                                          "config": {"value": [[1.0, 2.0], [3.0]]}}
        path = net.save(tmp_path / f"model.{'keras' if fmt == 'keras' else 'h5'}", [y])
        with pytest.raises(error) as e:
            fastcnn.load(path)
        assert words in str(e.value) and "the_op" in str(e.value)
        return
    elif case == "shapes that do not broadcast":
        cls, args = "Add", (lambda x: [x, np.ones((4, 2), np.float32)])
    elif case == "softmax over the batch":
        cls, cfg, module = "Softmax", {"axis": 0}, "keras.src.ops.nn"
    elif case == "slicing the batch":
        cls, args = "GetItem", (lambda x: [x, [slice(0, 1)]])
    elif case == "index out of range":
        cls, args = "GetItem", (lambda x: [x, [slice(None), 7]])
    elif case == "float slice bound":
        cls, args = "GetItem", (lambda x: [x, [slice(None), slice(0.5, 2)]])
    load = _one_op(fmt, tmp_path, cls, args, module=module, kwargs=kwargs, **cfg)
    with pytest.raises(error) as e:
        load()
    assert words in str(e.value), str(e.value)
    assert "the_op" in str(e.value)

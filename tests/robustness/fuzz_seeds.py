"""Seed model files for mutation fuzzing: small valid models that together use most operators.

Every seed loads and runs in fastcnn (a test checks this), so mutations start from files that
reach deep into the importer, shape inference, planning and the kernels.

- `onnx_seeds()`: name -> serialized ONNX bytes (needs the onnx package).
- `fcnn_seeds(tmp_dir)`: name -> .fcnn bytes, the ONNX seeds converted with and without passes.
- `h5_seeds(tmp_dir)`: name -> Keras .h5 / .keras bytes written with h5py (Keras 2 HDF5 layout and
  the Keras 3 zip layout), for the Keras importer.
"""
from __future__ import annotations

import io
import json
import os
import re
import zipfile

import numpy as np


# ----------------------------------------------------------------------------- ONNX
def _onnx_model(nodes, inputs, outputs, inits, opset=17):
    from onnx import TensorProto, helper, numpy_helper

    ins = [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v)) for k, v in inputs.items()]
    outs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, None) for k in outputs]
    init = [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]
    graph = helper.make_graph(nodes, "seed", ins, outs, init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="fuzz-seed")
    model.ir_version = min(model.ir_version, 10)
    return model


def _w(rng, *shape):
    return rng.uniform(-1, 1, size=shape).astype(np.float32)


def _i64(*v):
    return np.array(v, dtype=np.int64)


def onnx_seed_models() -> dict:
    """name -> onnx.ModelProto."""
    from onnx import helper

    N = helper.make_node
    rng = np.random.default_rng(1234)
    seeds = {}

    # A LeNet-like CNN: conv with pads/strides, BN, pools, grouped dilated conv, dense head.
    seeds["cnn"] = _onnx_model(
        [N("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], strides=[1, 1]),
         N("BatchNormalization", ["c1", "g", "be", "mu", "var"], ["bn"], name="bn", epsilon=1e-3),
         N("Relu", ["bn"], ["r1"], name="relu1"),
         N("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
         N("Conv", ["p1", "w2"], ["c2"], name="conv2", group=2, dilations=[2, 1], pads=[2, 1, 2, 1]),
         N("Clip", ["c2"], ["r2"], name="relu6", min=0.0, max=6.0),
         N("AveragePool", ["r2"], ["p2"], name="pool2", kernel_shape=[3, 3], strides=[2, 2],
           pads=[1, 1, 1, 1], count_include_pad=1, ceil_mode=1),
         N("GlobalAveragePool", ["p2"], ["gp"], name="gap"),
         N("Flatten", ["gp"], ["f"], name="flat"),
         N("Gemm", ["f", "fw", "fb"], ["logits"], name="fc", transB=1, alpha=0.5),
         N("Softmax", ["logits"], ["y"], name="softmax", axis=1)],
        {"x": [None, 3, 9, 7]}, ["y"],
        {"w1": _w(rng, 4, 3, 3, 3), "b1": _w(rng, 4), "g": _w(rng, 4) + 2, "be": _w(rng, 4),
         "mu": _w(rng, 4), "var": np.abs(_w(rng, 4)) + 0.5, "w2": _w(rng, 6, 2, 3, 3),
         "fw": _w(rng, 5, 6), "fb": _w(rng, 5)})

    # PyTorch-style shape arithmetic: x.view(x.size(0), -1) @ W + b, ConstantOfShape, Range.
    seeds["shapes"] = _onnx_model(
        [N("Shape", ["x"], ["s"], name="shape"),
         N("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
         N("Unsqueeze", ["n", "ax0"], ["n1"], name="unsq"),
         N("Concat", ["n1", "minus1"], ["newshape"], name="cat", axis=0),
         N("Reshape", ["x", "newshape"], ["flat"], name="reshape"),
         N("MatMul", ["flat", "wm"], ["mm"], name="matmul"),
         N("Add", ["mm", "bm"], ["h"], name="add"),
         N("Shape", ["h"], ["hs"], name="shape2", start=1),
         N("ConstantOfShape", ["hs"], ["ones"], name="cos",
           value=helper.make_tensor("v", 1, [1], [1.0])),
         N("Mul", ["h", "ones"], ["h2"], name="mul"),
         N("Range", ["r0", "r1", "r2"], ["rng"], name="range"),
         N("Cast", ["rng"], ["rngf"], name="cast", to=1),
         N("Add", ["h2", "rngf"], ["h3"], name="add2"),
         N("ReduceMean", ["h3", "ax1"], ["y"], name="mean", keepdims=1),
         N("Sigmoid", ["h3"], ["y2"], name="sig")],
        {"x": [None, 2, 3, 4]}, ["y", "y2"],
        {"zero": np.array(0, np.int64), "ax0": _i64(0), "minus1": _i64(-1), "wm": _w(rng, 24, 5),
         "bm": _w(rng, 5), "r0": np.array(0.0, np.float32), "r1": np.array(5.0, np.float32),
         "r2": np.array(1.0, np.float32), "ax1": _i64(1)})

    # Data movement: Transpose, Pad (reflect), Slice with steps, Split, Concat, DepthToSpace,
    # SpaceToDepth, Tile, Expand, Squeeze.
    seeds["tensor"] = _onnx_model(
        [N("Transpose", ["x"], ["t"], name="transpose", perm=[0, 1, 3, 2]),
         N("Pad", ["t", "pads"], ["p"], name="pad", mode="reflect"),
         N("Slice", ["p", "st", "en", "axs", "sp"], ["sl"], name="slice"),
         N("Split", ["sl", "split"], ["a", "b"], name="split", axis=1),
         N("Concat", ["b", "a", "a", "b"], ["cat"], name="concat", axis=1),
         N("DepthToSpace", ["cat"], ["d2s"], name="d2s", blocksize=2, mode="CRD"),
         N("SpaceToDepth", ["d2s"], ["s2d"], name="s2d", blocksize=2),
         N("Tile", ["s2d", "reps"], ["tile"], name="tile"),
         N("Expand", ["bias", "eshape"], ["bias_e"], name="expand"),
         N("Add", ["tile", "bias_e"], ["sum"], name="add"),
         N("ReduceMax", ["sum", "raxes"], ["rm"], name="rmax", keepdims=0),
         N("Unsqueeze", ["rm", "uax"], ["y"], name="unsqueeze")],
        {"x": [2, 4, 6, 5]}, ["y"],
        {"pads": _i64(0, 0, 1, 2, 0, 0, 1, 2), "st": _i64(0, -1), "en": _i64(4, -100),
         "axs": _i64(1, 3), "sp": _i64(1, -2), "split": _i64(1, 3), "reps": _i64(1, 1, 2, 1),
         "bias": _w(rng, 1, 1, 1), "eshape": _i64(1, 8, 1, 1), "raxes": _i64(-1),
         "uax": _i64(2)})

    # Normalisations, elementwise math with broadcasting, pooling variants, Where on constants.
    seeds["norm"] = _onnx_model(
        [N("InstanceNormalization", ["x", "isc", "ib"], ["in"], name="inorm", epsilon=1e-4),
         N("LRN", ["in"], ["lrn"], name="lrn", size=3),
         N("LayerNormalization", ["lrn", "lsc", "lb"], ["ln"], name="lnorm", axis=-1),
         N("LeakyRelu", ["ln"], ["lr"], name="leaky", alpha=0.2),
         N("LpPool", ["lr"], ["lp"], name="lppool", kernel_shape=[2, 2], p=2),
         N("MaxPool", ["lp"], ["mp"], name="mpool", kernel_shape=[2, 2], dilations=[1, 2],
           pads=[0, 1, 0, 1]),
         N("Equal", ["c1", "c2"], ["eq"], name="eq"),
         N("Where", ["eq", "c1f", "c2f"], ["wh"], name="where"),
         N("Mul", ["mp", "wh"], ["mu"], name="mul"),
         N("PRelu", ["mu", "slope"], ["pr"], name="prelu"),
         N("Pow", ["pr", "two"], ["pw"], name="pow"),
         N("Sqrt", ["pw"], ["sq"], name="sqrt"),
         N("Div", ["sq", "three"], ["dv"], name="div"),
         N("Sub", ["dv", "wh"], ["sb"], name="sub"),
         N("Max", ["sb", "dv", "mu"], ["mx"], name="max"),
         N("GlobalMaxPool", ["mx"], ["gm"], name="gmp"),
         N("Squeeze", ["gm", "sqax"], ["y"], name="squeeze")],
        {"x": [None, 3, 6, 8]}, ["y"],
        {"isc": _w(rng, 3), "ib": _w(rng, 3), "lsc": _w(rng, 8), "lb": _w(rng, 8),
         "c1": _i64(1, 2, 3).reshape(3, 1, 1), "c2": _i64(1, 0, 3).reshape(3, 1, 1), "c1f": _w(rng, 3).reshape(3, 1, 1),
         "c2f": _w(rng, 3).reshape(3, 1, 1), "slope": _w(rng, 3, 1, 1),
         "two": np.array(2.0, np.float32), "three": np.array(3.0, np.float32),
         "sqax": _i64(2, 3)})

    # A 1-D convolutional net with a residual add and activations fused by the passes.
    seeds["conv1d"] = _onnx_model(
        [N("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[2, 2], kernel_shape=[5]),
         N("Tanh", ["c1"], ["t1"], name="tanh"),
         N("Conv", ["t1", "w2", "b2"], ["c2"], name="conv2", auto_pad="SAME_UPPER", strides=[1]),
         N("Add", ["c2", "t1"], ["res"], name="residual"),
         N("HardSwish", ["res"], ["hs"], name="hswish"),
         N("Conv", ["hs", "w3"], ["c3"], name="dw", group=4, strides=[2], pads=[1, 1]),
         N("ReduceSum", ["c3", "rax"], ["rs"], name="rsum", keepdims=0),
         N("Gemm", ["rs", "gw"], ["g"], name="gemm"),
         N("LogSoftmax", ["g"], ["y"], name="lsm", axis=-1)],
        {"x": [None, 2, 11]}, ["y"],
        {"w1": _w(rng, 4, 2, 5), "b1": _w(rng, 4), "w2": _w(rng, 4, 4, 3), "b2": _w(rng, 4),
         "w3": _w(rng, 4, 1, 3), "rax": _i64(2), "gw": _w(rng, 4, 3)})

    # An EfficientNet-style block as exporters write it: a zero Pad before a strided conv (TF
    # 'same'), SiLU as Sigmoid * x, a depthwise conv, squeeze-and-excitation with ReduceMean
    # (the dynamo exporter's pooling) and a Mul on the blocked tensor, then a spatial mean.
    seeds["mbconv"] = _onnx_model(
        [N("Pad", ["x", "zpads"], ["xp"], name="pad"),
         N("Conv", ["xp", "ws", "bs"], ["c"], name="stem", strides=[2, 2], kernel_shape=[3, 3]),
         N("Sigmoid", ["c"], ["cs"], name="stem_sig"),
         N("Mul", ["c", "cs"], ["a"], name="stem_silu"),
         N("Conv", ["a", "wd", "bd"], ["d"], name="dw", group=16, pads=[1, 1, 1, 1]),
         N("Relu", ["d"], ["dr"], name="dw_relu"),
         N("ReduceMean", ["dr", "hw"], ["g"], name="se_mean", keepdims=1),
         N("Conv", ["g", "w1", "b1"], ["g1"], name="se_reduce"),
         N("Relu", ["g1"], ["g2"], name="se_relu"),
         N("Conv", ["g2", "w2", "b2"], ["g3"], name="se_expand"),
         N("Sigmoid", ["g3"], ["gate"], name="se_gate"),
         N("Mul", ["dr", "gate"], ["se"], name="se_scale"),
         N("Conv", ["se", "wp"], ["pj"], name="project"),
         N("ReduceMean", ["pj", "nhw"], ["m"], name="mean", keepdims=0),
         N("Gemm", ["m", "gw", "gb"], ["y"], name="fc", transB=1)],
        {"x": [None, 3, 12, 11]}, ["y"],
        {"zpads": _i64(0, 0, 0, 0, 0, 0, 1, 1), "ws": _w(rng, 16, 3, 3, 3), "bs": _w(rng, 16),
         "wd": _w(rng, 16, 1, 3, 3), "bd": _w(rng, 16), "hw": _i64(2, 3), "w1": _w(rng, 8, 16, 1, 1),
         "b1": _w(rng, 8), "w2": _w(rng, 16, 8, 1, 1), "b2": _w(rng, 16), "wp": _w(rng, 8, 16, 1, 1),
         "nhw": _i64(-1, -2), "gw": _w(rng, 4, 8), "gb": _w(rng, 4)}, opset=18)

    # Old opset forms the importer rewrites (attributes that became inputs, legacy broadcast).
    seeds["legacy"] = _onnx_model(
        [N("Reshape", ["x"], ["r"], name="reshape", shape=[-1, 12]),
         N("Add", ["r", "b"], ["a"], name="add", broadcast=1, axis=1),
         N("Unsqueeze", ["a"], ["u"], name="unsq", axes=[2]),
         N("Pad", ["u"], ["p"], name="pad", pads=[0, 0, 1, 0, 0, 2], mode="constant", value=0.5),
         N("Slice", ["p"], ["s"], name="slice", starts=[1], ends=[3], axes=[2]),
         N("Split", ["s"], ["s1", "s2"], name="split", axis=1, split=[5, 7]),
         N("Concat", ["s2", "s1"], ["c"], name="concat", axis=1),
         N("Dropout", ["c"], ["d"], name="dropout", ratio=0.5),
         N("Identity", ["d"], ["i"], name="identity"),
         N("Softmax", ["i"], ["y"], name="softmax", axis=1)],
        {"x": [None, 3, 4]}, ["y"], {"b": _w(rng, 12)}, opset=9)
    return seeds


def onnx_seeds() -> dict:
    """name -> serialized ONNX model bytes."""
    return {k: m.SerializeToString() for k, m in onnx_seed_models().items()}


# ----------------------------------------------------------------------------- .fcnn
def fcnn_seeds(tmp_dir: str) -> dict:
    """name -> .fcnn bytes: each ONNX seed converted after the graph passes and as imported
    (the latter keeps BatchNormalization, Identity-like nodes and unfused activations)."""
    import fastcnn
    from fastcnn.format import fcnn
    from fastcnn.loading import read_graph

    out = {}
    for name, data in onnx_seeds().items():
        src = os.path.join(tmp_dir, f"seed_{name}.onnx")
        with open(src, "wb") as f:
            f.write(data)
        dst = os.path.join(tmp_dir, f"seed_{name}.fcnn")
        fastcnn.convert(src, dst, metadata={"labels": ["a", "b", "c"], "note": {"k": [1, 2.5, None]}})
        with open(dst, "rb") as f:
            out[name] = f.read()
        graph, _ = read_graph(src)
        raw = os.path.join(tmp_dir, f"seed_{name}_raw.fcnn")
        fcnn.save(graph.check(), raw)
        with open(raw, "rb") as f:
            out[name + "_raw"] = f.read()
    return out


# ----------------------------------------------------------------------------- Keras
def _keras_layers(rng):
    """A small Keras functional CNN as (config layers, weights per layer name)."""
    def layer(cls, name, inbound, **cfg):
        cfg = {"name": name, "trainable": True, "dtype": "float32", **cfg}
        nodes = [[[i, 0, 0, {}] for i in inbound]] if inbound else []
        return {"class_name": cls, "config": cfg, "name": name, "inbound_nodes": nodes}

    layers = [
        layer("InputLayer", "input_1", [], batch_input_shape=[None, 8, 8, 3], sparse=False,
              ragged=False),
        layer("Conv2D", "conv", ["input_1"], filters=4, kernel_size=[3, 3], strides=[1, 1],
              padding="same", data_format="channels_last", dilation_rate=[1, 1], groups=1,
              activation="relu", use_bias=True),
        layer("BatchNormalization", "bn", ["conv"], axis=[3], momentum=0.99, epsilon=0.001,
              center=True, scale=True),
        layer("MaxPooling2D", "pool", ["bn"], pool_size=[2, 2], padding="valid", strides=[2, 2],
              data_format="channels_last"),
        layer("DepthwiseConv2D", "dw", ["pool"], kernel_size=[3, 3], strides=[1, 1],
              padding="valid", depth_multiplier=1, data_format="channels_last",
              dilation_rate=[1, 1], activation="linear", use_bias=False),
        layer("Flatten", "flatten", ["dw"], data_format="channels_last"),
        layer("Dropout", "drop", ["flatten"], rate=0.5),
        layer("Dense", "dense", ["drop"], units=3, activation="softmax", use_bias=True),
    ]
    weights = {
        "conv": [("kernel:0", _w(rng, 3, 3, 3, 4)), ("bias:0", _w(rng, 4))],
        "bn": [("gamma:0", _w(rng, 4) + 2), ("beta:0", _w(rng, 4)), ("moving_mean:0", _w(rng, 4)),
               ("moving_variance:0", np.abs(_w(rng, 4)) + 0.5)],
        "dw": [("depthwise_kernel:0", _w(rng, 3, 3, 4, 1))],
        "dense": [("kernel:0", _w(rng, 16, 3)), ("bias:0", _w(rng, 3))],
    }
    return layers, weights


def _keras3_ops_layers(rng):
    """A Keras 3 functional CNN calling operations on Keras tensors (x + 3.0, relu6, a
    __numpy__ constant, mean, x[:, 1:3], reshape), as (config layers, weights per layer)."""
    def tensor(name):
        return {"class_name": "__keras_tensor__",
                "config": {"shape": None, "dtype": "float32", "keras_history": [name, 0, 0]}}

    def entry(cls, name, args, module="keras.layers", **cfg):
        e = {"module": module, "class_name": cls, "config": {"name": name, **cfg},
             "registered_name": cls if module.startswith("keras.src.ops") else None, "name": name,
             "inbound_nodes": [{"args": args, "kwargs": {}}] if args else []}
        return e

    policy = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
              "registered_name": None}
    numpy_ops, nn_ops = "keras.src.ops.numpy", "keras.src.ops.nn"
    layers = [
        entry("InputLayer", "input_1", None, batch_shape=[None, 8, 8, 3], dtype="float32",
              sparse=False, ragged=False),
        entry("Conv2D", "conv", [tensor("input_1")], trainable=True, dtype=policy, filters=4,
              kernel_size=[3, 3], strides=[1, 1], padding="same", data_format="channels_last",
              dilation_rate=[1, 1], groups=1, activation="linear", use_bias=True),
        entry("Add", "add", [tensor("conv"), 3.0], module=numpy_ops),
        entry("Relu6", "relu6", [tensor("add")], module=nn_ops),
        entry("Multiply", "multiply", [tensor("relu6"),
                                       {"class_name": "__numpy__",
                                        "config": {"value": [0.5, 1.0, 1.5, 2.0], "dtype": "float32"}}],
              module=numpy_ops),
        entry("GetItem", "get_item", [tensor("multiply"),
                                      [{"class_name": "__slice__", "config": {"start": None, "stop": None, "step": None}},
                                       {"class_name": "__slice__", "config": {"start": 1, "stop": 7, "step": 2}}]],
              module=numpy_ops),
        entry("Mean", "mean", [tensor("get_item")], module=numpy_ops, axis=[1, 2], keepdims=False),
        entry("Reshape", "reshape", [tensor("mean")], module=numpy_ops, newshape=[-1, 2, 2]),
        entry("Flatten", "flatten", [tensor("reshape")], trainable=True, dtype=policy,
              data_format="channels_last"),
        entry("Dense", "dense", [tensor("flatten")], trainable=True, dtype=policy, units=3,
              activation="softmax", use_bias=True),
    ]
    weights = {"conv": [("kernel", _w(rng, 3, 3, 3, 4)), ("bias", _w(rng, 4))],
               "dense": [("kernel", _w(rng, 4, 3)), ("bias", _w(rng, 3))]}
    return layers, weights


def keras_config(layers) -> dict:
    return {"class_name": "Functional",
            "config": {"name": "model", "layers": layers,
                       "input_layers": [["input_1", 0, 0]], "output_layers": [["dense", 0, 0]]}}


def layer_names(config, weights) -> list:
    """Layer names in config order (Functional layers carry "name", Sequential ones only
    config.name), then any layer with weights the config does not list."""
    names = []
    try:
        layers = config["config"]["layers"]
    except (KeyError, TypeError):
        layers = []
    for lay in layers if isinstance(layers, list) else []:
        if isinstance(lay, dict):
            n = lay.get("name")
            if not isinstance(n, str) and isinstance(lay.get("config"), dict):
                n = lay["config"].get("name")
            if isinstance(n, str) and n and "/" not in n and n not in names:
                names.append(n)
    return names + [n for n in weights if n not in names]


def write_keras_h5(path: str, config: dict, weights: dict, version: str = "2.15.0") -> None:
    """Keras 2 HDF5 layout (also Keras 3's legacy .h5): attrs model_config (JSON),
    keras_version, backend; group model_weights/<layer>/<layer>/<weight> with layer_names /
    weight_names attributes."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = version
        f.attrs["backend"] = "tensorflow"
        mw = f.create_group("model_weights")
        names = layer_names(config, weights)
        mw.attrs["layer_names"] = np.array([n.encode() for n in names])
        mw.attrs["backend"] = "tensorflow"
        mw.attrs["keras_version"] = version
        for n in names:
            g = mw.create_group(n)
            ws = weights.get(n, [])
            g.attrs["weight_names"] = np.array([f"{n}/{w}".encode() for w, _ in ws])
            for w, arr in ws:
                g.create_dataset(f"{n}/{w}", data=arr)


def snake_case(name: str) -> str:
    """Keras' to_snake_case: Conv2D -> conv2d, BatchNormalization -> batch_normalization."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def keras3_keys(config) -> dict:
    """layer name -> its key under `layers/` in a Keras 3 model.weights.h5: the snake-cased class
    name, numbered _1, _2, ... among the layers of the same class."""
    keys, seen = {}, {}
    try:
        layers = config["config"]["layers"]
    except (KeyError, TypeError):
        return keys
    for lay in layers if isinstance(layers, list) else []:
        if not isinstance(lay, dict) or not isinstance(lay.get("class_name"), str):
            continue
        n = lay.get("name")
        if not isinstance(n, str) and isinstance(lay.get("config"), dict):
            n = lay["config"].get("name")
        base = snake_case(lay["class_name"])
        k = seen.get(base, 0)
        seen[base] = k + 1
        if isinstance(n, str):
            keys.setdefault(n, base if k == 0 else f"{base}_{k}")
    return keys


def write_keras_v3(path: str, config: dict, weights: dict) -> None:
    """Keras 3 .keras zip: config.json, metadata.json, model.weights.h5 with
    layers/<key>/vars/<i> datasets (key: see keras3_keys)."""
    import h5py

    keys = keras3_keys(config)
    buf = io.BytesIO()
    with h5py.File(buf, "w") as h:
        layers = h.create_group("layers")
        for n, ws in weights.items():
            key = keys.get(n, n)
            if key in layers:
                continue
            v = layers.create_group(key).create_group("vars")
            for i, (_, arr) in enumerate(ws):
                v.create_dataset(str(i), data=arr)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.3.3", "date_saved": "2024"}))
        z.writestr("config.json", json.dumps(config))
        z.writestr("model.weights.h5", buf.getvalue())


def h5_seeds(tmp_dir: str) -> dict:
    """name -> bytes of Keras model files (.h5 and .keras)."""
    rng = np.random.default_rng(99)
    layers, weights = _keras_layers(rng)
    cfg = keras_config(layers)
    out = {}
    p = os.path.join(tmp_dir, "seed_keras.h5")
    write_keras_h5(p, cfg, weights)
    with open(p, "rb") as f:
        out["functional.h5"] = f.read()
    seq = {"class_name": "Sequential",
           "config": {"name": "sequential", "layers": [
               {"class_name": lay["class_name"], "config": lay["config"]} for lay in layers]}}
    p = os.path.join(tmp_dir, "seed_seq.h5")
    write_keras_h5(p, seq, weights)
    with open(p, "rb") as f:
        out["sequential.h5"] = f.read()
    p = os.path.join(tmp_dir, "seed_keras.keras")
    write_keras_v3(p, cfg, weights)
    with open(p, "rb") as f:
        out["functional.keras"] = f.read()
    # Keras 3 operations: .keras names their modules, the legacy .h5 drops them
    ops_layers, ops_weights = _keras3_ops_layers(rng)
    ops_cfg = {"module": "keras.src.models.functional", "class_name": "Functional",
               "registered_name": "Functional",
               "config": {"name": "model", "layers": ops_layers, "input_layers": ["input_1", 0, 0],
                          "output_layers": ["dense", 0, 0]}}
    p = os.path.join(tmp_dir, "seed_ops.keras")
    write_keras_v3(p, ops_cfg, ops_weights)
    with open(p, "rb") as f:
        out["operations.keras"] = f.read()
    legacy = json.loads(json.dumps(ops_cfg))
    for lay in legacy["config"]["layers"]:
        lay.pop("module", None)
        lay.pop("registered_name", None)
    p = os.path.join(tmp_dir, "seed_ops.h5")
    write_keras_h5(p, legacy, {n: [(f"{w}", a) for w, a in ws] for n, ws in ops_weights.items()},
                   version="3.15.1")
    with open(p, "rb") as f:
        out["operations.h5"] = f.read()
    return out


def seed_files(target: str, tmp_dir: str) -> dict:
    """name -> bytes for a fuzz target ('fcnn', 'onnx' or 'h5')."""
    if target == "onnx":
        return {k + ".onnx": v for k, v in onnx_seeds().items()}
    if target == "fcnn":
        return {k + ".fcnn": v for k, v in fcnn_seeds(tmp_dir).items()}
    if target == "h5":
        return h5_seeds(tmp_dir)
    raise ValueError(f"unknown target {target!r}")

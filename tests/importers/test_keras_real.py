"""Models built and saved by Keras itself (when it is installed, with any backend), loaded by
fastcnn from both .h5 and .keras, outputs compared with Keras' own predictions.

Not a dependency: skipped without keras. Weights are randomised (BatchNormalization variances
kept positive) so that every weight matters."""
import importlib.util
import os

import numpy as np
import pytest

if "KERAS_BACKEND" not in os.environ:
    for _backend, _module in (("torch", "torch"), ("jax", "jax"), ("tensorflow", "tensorflow")):
        if importlib.util.find_spec(_module) is not None:
            os.environ["KERAS_BACKEND"] = _backend
            break
keras = pytest.importorskip("keras")

import fastcnn  # noqa: E402
from fastcnn.ir.ops import OPS  # noqa: E402
from helpers import assert_close  # noqa: E402

layers = keras.layers


def _run_graph_with_ort(graph, feeds):
    """Run an imported (not yet planned) Graph with onnxruntime: its nodes use ONNX semantics,
    so this checks the importer's attributes for ops fastcnn does not run yet."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    nodes = [helper.make_node(n.op, n.inputs, n.outputs, name=n.name, **n.attrs) for n in graph.nodes]
    ins = [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.shape)) for t in graph.inputs]
    outs = [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, None) for t in graph.outputs]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in graph.initializers.items()]
    model = helper.make_model(helper.make_graph(nodes, "g", ins, outs, inits),
                              opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _randomise(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _randomise(layer, seed + 1)
            continue
        ws = []
        for w in layer.get_weights():
            v = rng.uniform(-0.6, 0.6, w.shape).astype(w.dtype)
            ws.append(v)
        if isinstance(layer, layers.BatchNormalization):
            ws[-1] = np.abs(ws[-1]) + 0.5
        if isinstance(layer, layers.Normalization):
            continue
        layer.set_weights(ws)


def _check(model, tmp_path, inputs, seed=0):
    _randomise(model, seed)
    feeds = inputs if isinstance(inputs, list) else [inputs]
    ref = model.predict(feeds if len(feeds) > 1 else feeds[0], verbose=0)
    ref = ref if isinstance(ref, (list, tuple)) else [ref]
    for ext in ("keras", "h5"):
        path = str(tmp_path / f"m.{ext}")
        model.save(path)
        from fastcnn.importers.keras import import_file
        graph = import_file(path)
        names = [t.name for t in graph.inputs]
        if any(n.op not in OPS for n in graph.nodes):
            # an op of the IR contracts not merged yet: check the imported graph with onnxruntime
            got = _run_graph_with_ort(graph, dict(zip(names, feeds)))
        else:
            m = fastcnn.load(path, num_threads=1)
            got = m.run(None, dict(zip(names, feeds)))
        assert len(got) == len(ref)
        for g, r in zip(got, ref):
            assert_close(g, np.asarray(r), f"{ext}")


def _x(*shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_sequential_cnn(tmp_path):
    model = keras.Sequential([
        keras.Input((13, 11, 3)),
        layers.Conv2D(5, 3, strides=2, padding="same", activation="relu"),
        layers.BatchNormalization(),
        layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"),
        layers.SeparableConv2D(4, 3, padding="same", activation="swish"),
        layers.ZeroPadding2D(((1, 0), (2, 1))),
        layers.Cropping2D(((0, 1), (1, 0))),
        layers.MaxPooling2D(2, padding="same"),
        layers.AveragePooling2D(2, strides=1, padding="same"),
        layers.Flatten(),
        layers.Dense(7, activation="gelu"),
        layers.Dropout(0.5),
        layers.Dense(3, activation="softmax"),
    ])
    _check(model, tmp_path, _x(3, 13, 11, 3))


def test_functional_branches_and_outputs(tmp_path):
    inp = keras.Input((8, 9, 4), name="image")
    a = layers.Conv2D(6, 3, padding="same", dilation_rate=2, name="a")(inp)
    b = layers.Conv2D(6, 1, groups=2, use_bias=False, name="b")(inp)
    s = layers.Add()([a, b])
    p = layers.PReLU(shared_axes=[1, 2])(s)
    m = layers.Multiply()([p, layers.LeakyReLU(0.2)(a)])
    c = layers.Concatenate()([m, layers.ELU(0.7)(b), layers.ReLU(6.0, 0.1, 0.3)(s)])
    c = layers.Subtract()([c, layers.Concatenate(axis=-1)([a, a, b])])
    c = layers.Average()([c, layers.Maximum()([c, layers.Minimum()([c, c])])])
    d = layers.Dense(5)(c)                        # Dense on a 4-D tensor: the channels
    ln = layers.LayerNormalization()(d)
    g = layers.GlobalMaxPooling2D(keepdims=True)(ln)
    out1 = layers.Softmax(axis=1)(layers.Permute((3, 1, 2))(ln))
    flat = layers.Flatten()(layers.Reshape((9, 8, 5))(ln))
    out2 = layers.Dense(3, activation="sigmoid")(flat)
    model = keras.Model(inp, [out1, out2, g, ln])
    _check(model, tmp_path, _x(2, 8, 9, 4))


def test_activations_and_preprocessing(tmp_path):
    inp = keras.Input((5, 6, 3))
    x = layers.Rescaling(1 / 2.0, offset=-0.25)(inp)
    x = layers.Normalization(mean=[0.1, -0.2, 0.3], variance=[1.5, 0.5, 2.0])(x)
    outs = []
    for act in ("relu", "relu6", "elu", "selu", "gelu", "sigmoid", "hard_sigmoid", "swish", "silu",
                "hard_swish", "softmax", "softplus", "softsign", "tanh", "exponential", "linear",
                "leaky_relu", "mish", "log_softmax"):
        outs.append(layers.Activation(act, name=f"act_{act}")(x))
    outs.append(layers.LayerNormalization(axis=[1, 2, 3])(x))
    outs.append(layers.BatchNormalization(axis=1)(x))
    model = keras.Model(inp, outs)
    _check(model, tmp_path, _x(2, 5, 6, 3))


def test_adapted_normalization_and_inference_noops(tmp_path):
    inp = keras.Input((4, 5, 3))
    norm = layers.Normalization()
    norm.adapt(_x(16, 4, 5, 3, seed=3) * 3 + 1)
    x = norm(inp)
    x = layers.SpatialDropout2D(0.3)(x)
    x = layers.GaussianNoise(0.5)(x)
    x = layers.GaussianDropout(0.2)(x)
    x = layers.AlphaDropout(0.1)(x)
    x = layers.ActivityRegularization(l1=0.1)(x)
    x = layers.DepthwiseConv2D(2, activation="hard_silu")(x)
    out = layers.Conv1D(3, 2)(layers.Reshape((12, 3))(x))
    model = keras.Model(inp, [out, layers.Conv1DTranspose(2, 3, strides=2)(out)])
    _check(model, tmp_path, _x(2, 4, 5, 3))


def test_channels_first(tmp_path):
    model = keras.Sequential([
        keras.Input((3, 10, 9)),
        layers.Conv2D(4, 3, data_format="channels_first", activation="tanh"),
        layers.MaxPooling2D(2, data_format="channels_first"),
        layers.GlobalAveragePooling2D(data_format="channels_first"),
        layers.Dense(2),
    ])
    _check(model, tmp_path, _x(2, 3, 10, 9))


def test_nested_and_shared_models(tmp_path):
    inner = keras.Sequential([keras.Input((6,)), layers.Dense(4, activation="relu"),
                              layers.BatchNormalization(), layers.Dense(3)], name="inner")
    fin = keras.Input((5, 5, 2))
    fout = layers.GlobalAveragePooling2D()(layers.Conv2D(6, 3, name="fconv")(fin))
    branch = keras.Model(fin, fout, name="branch")
    x1 = keras.Input((5, 5, 2), name="left")
    x2 = keras.Input((5, 5, 2), name="right")
    y1 = inner(branch(x1))
    y2 = inner(branch(x2))                       # the same nested models called twice
    model = keras.Model([x1, x2], [layers.Add()([y1, y2]), y1])
    _check(model, tmp_path, [_x(3, 5, 5, 2), _x(3, 5, 5, 2, seed=2)])


def test_conv1d_family(tmp_path):
    model = keras.Sequential([
        keras.Input((17, 3)),
        layers.Conv1D(4, 3, padding="causal", dilation_rate=2, activation="relu"),
        layers.SeparableConv1D(5, 3, padding="same"),
        layers.MaxPooling1D(2),
        layers.ZeroPadding1D((1, 2)),
        layers.Cropping1D((2, 0)),
        layers.AveragePooling1D(3, strides=2, padding="same"),
        layers.GlobalAveragePooling1D(),
    ])
    _check(model, tmp_path, _x(2, 17, 3))


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_upsampling(tmp_path, interpolation):
    model = keras.Sequential([keras.Input((4, 5, 3)), layers.UpSampling2D((2, 3), interpolation=interpolation),
                              layers.Conv2D(2, 1)])
    _check(model, tmp_path, _x(2, 4, 5, 3))


@pytest.mark.parametrize("padding,strides,kernel,output_padding", [
    ("valid", 2, 3, None), ("same", 2, 3, None), ("same", 2, 4, None), ("valid", 3, 2, None),
    ("same", 3, 2, None), ("same", 2, 3, 1), ("valid", 2, 3, 1)])
def test_conv_transpose(tmp_path, padding, strides, kernel, output_padding):
    model = keras.Sequential([keras.Input((5, 4, 3)),
                              layers.Conv2DTranspose(2, kernel, strides=strides, padding=padding,
                                                     output_padding=output_padding)])
    _check(model, tmp_path, _x(2, 5, 4, 3))


def test_keras_operations_in_a_functional_model(tmp_path):
    """Keras 3 records arithmetic and keras.ops calls on Keras tensors as operations (module
    keras.src.ops.*; in .h5 without a module), constants among their arguments."""
    ops = keras.ops
    inp = keras.Input((6, 5, 4))
    c = layers.Conv2D(4, 1)(inp)
    a = (c + 3.0) * (1.0 / 6.0)
    b = 1.0 - ops.relu6(a) / 2.0 + ops.sigmoid(c) * c
    m = ops.maximum(b, ops.mean(b, axis=[1, 2], keepdims=True))
    h = ops.hard_silu(m) - ops.square(m) + ops.sqrt(ops.abs(m)) + ops.exp(-m) \
        + m * np.linspace(0.5, 2.0, 4).astype("float32")
    r = ops.reshape(h, (-1, 6 * 5 * 4))
    out1 = ops.softmax(ops.concatenate([r, r ** 2], axis=-1), axis=-1)
    out2 = ops.clip(ops.transpose(h, (0, 3, 1, 2)), -1.0, 1.0)
    out3 = ops.sum(ops.gelu(h), axis=1) + ops.max(ops.leaky_relu(h, 0.1), axis=1)
    out4 = ops.min(h, axis=-1, keepdims=True) * ops.expand_dims(ops.expand_dims(ops.mean(h, axis=[1, 2]), 1), 1)
    out5 = layers.Concatenate()([layers.Flatten()(h[:, ::2, -1]), layers.Flatten()(h[..., None, 1:3, 0])])
    model = keras.Model(inp, [out1, out2, out3, out4, out5])
    _check(model, tmp_path, _x(2, 6, 5, 4))


@pytest.mark.parametrize("name,size", [("MobileNetV3Small", 64), ("ConvNeXtTiny", 32)])
def test_keras_applications(tmp_path, name, size):
    """keras.applications models that use operations (MobileNetV3's hard_sigmoid) and
    application layers (ConvNeXt's LayerScale)."""
    model = getattr(keras.applications, name)(input_shape=(size, size, 3), weights=None, classes=10)
    x = np.random.default_rng(0).uniform(0, 255, (4, size, size, 3)).astype(np.float32)
    _check(model, tmp_path, x)
    # its head fine-tunes to a new class count (MobileNetV3: 1x1 convs on the pooled map)
    tuner = fastcnn.FineTuner(fastcnn.load(str(tmp_path / "m.keras")), num_classes=3, seed=0)
    tuner.fit(x, np.array([0, 1, 2, 1]), epochs=1, batch_size=2, progress=False)
    assert tuner.predict(x).shape == (4, 3)

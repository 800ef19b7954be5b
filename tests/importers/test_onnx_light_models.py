"""Whole classic networks: the onnx wheel's `backend/test/data/light` models are the ONNX model
zoo's DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet and SqueezeNet graphs with every
weight replaced by ConstantOfShape(shape) of one value. Here each weight becomes a seeded random
initializer of that shape (He-style scale, positive BatchNormalization scales and variances)
so that the outputs mean something, and fastcnn must match onnxruntime on the full network.

AlexNet, VGG-19 and ZFNet-512 of that folder feed a Reshape's target shape as an int64 graph
input; fastcnn runs float32 graph inputs only, so they are left out.

All six run by default (about 10 s in all with the GEMM/Winograd convolutions); FASTCNN_TEST_ZOO=0
skips the four large ones (Inception v1/v2, DenseNet-121, ResNet-50) for a quick local run."""
import glob
import os

import numpy as np
import pytest

import fastcnn
from helpers import assert_close, save_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import numpy_helper  # noqa: E402

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
MODELS = ["shufflenet", "squeezenet", "inception_v2", "inception_v1", "densenet121", "resnet50"]
LARGE = {"inception_v2", "inception_v1", "densenet121", "resnet50"}
RUN_LARGE = os.environ.get("FASTCNN_TEST_ZOO", "1") != "0"
# BatchNormalization inputs that must stay positive (scale, variance)
POSITIVE_BN_INPUTS = (1, 4)


def with_random_weights(model, seed):
    """`model` with every ConstantOfShape(initializer) replaced by a random initializer."""
    rng = np.random.default_rng(seed)
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    positive = {n.input[i] for n in g.node if n.op_type == "BatchNormalization"
                for i in POSITIVE_BN_INPUTS if i < len(n.input)}
    keep, shapes_used = [], set()
    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in inits:
            shape = tuple(int(d) for d in numpy_helper.to_array(inits[n.input[0]]))
            out = n.output[0]
            if out in positive:
                v = rng.uniform(0.5, 1.5, shape)
            elif len(shape) >= 2:
                v = rng.uniform(-1, 1, shape) * np.sqrt(3.0 / np.prod(shape[1:]))
            else:
                v = rng.uniform(-0.1, 0.1, shape)
            g.initializer.append(numpy_helper.from_array(v.astype(np.float32), out))
            shapes_used.add(n.input[0])
        else:
            keep.append(n)
    del g.node[:]
    g.node.extend(keep)
    still_read = {x for n in keep for x in n.input}
    for name in shapes_used - still_read:
        g.initializer.remove(inits[name])
    inputs = [vi for vi in g.input if vi.name not in shapes_used - still_read]
    del g.input[:]
    g.input.extend(inputs)
    return model


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[pytest.mark.slow, pytest.mark.skipif(not RUN_LARGE, reason="large network skipped by FASTCNN_TEST_ZOO=0")])
    if n in LARGE else n for n in MODELS])
def test_light_model_with_random_weights_vs_onnxruntime(name):
    path = os.path.join(LIGHT, f"light_{name}.onnx")
    if not os.path.exists(path):
        pytest.skip(f"{path} is not in this onnx wheel")
    model = with_random_weights(onnx.load(path), seed=len(name))
    inits = {t.name for t in model.graph.initializer}
    (x_info,) = [vi for vi in model.graph.input if vi.name not in inits]
    shape = [d.dim_value for d in x_info.type.tensor_type.shape.dim]
    x = np.random.default_rng(1).uniform(0, 1, shape).astype(np.float32)
    tmp = save_onnx(model)
    try:
        m = fastcnn.load(tmp, num_threads=2)
        got = m.run(None, {x_info.name: x})
    finally:
        os.unlink(tmp)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {x_info.name: x})
    for g, r in zip(got, ref):
        assert np.std(r) > 0, "the reference output is constant: the weights did not vary"
        assert_close(g, r, name)


def test_the_left_out_models_need_an_int64_input():
    """(AlexNet stands for the three: they share the int64 shape input.)"""
    path = os.path.join(LIGHT, "light_bvlc_alexnet.onnx")
    if os.path.exists(path):
        with pytest.raises(fastcnn.UnsupportedOpError, match=r"ConstantOfShape.*known only at run time"):
            fastcnn.load(path)


def test_every_light_model_is_covered():
    names = {os.path.basename(p)[6:-5] for p in glob.glob(os.path.join(LIGHT, "light_*.onnx"))}
    assert names <= set(MODELS) | {"bvlc_alexnet", "vgg19", "zfnet512"}, sorted(names)

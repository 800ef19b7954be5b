"""Keras importer: bad, unsupported or dangerous files give clear fastcnn errors naming the layer,
and nothing stored in a file is ever executed."""
import json
import os
import sys
import zipfile

import h5py
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fastcnn  # noqa: E402
from fastcnn.errors import FastCNNError, ModelFileError, UnsupportedOpError  # noqa: E402
from keras_writer import Net  # noqa: E402

FORMATS = ["h5", "keras"]


def _dense_net(fmt, kernel_shape=(4, 3), **extra):
    net = Net(fmt)
    x = net.input("x", (4,))
    y = net.add("Dense", "dense", [x], [("kernel", np.ones(kernel_shape)), ("bias", np.zeros(3))], units=3,
                activation="linear", use_bias=True, **extra)
    return net, y


@pytest.mark.parametrize("fmt", FORMATS)
def test_lambda_is_refused_and_never_run(fmt, tmp_path):
    marker = tmp_path / "executed"
    code = f"open({str(marker)!r}, 'w').write('pwned')"
    net = Net(fmt)
    x = net.input("x", (4,))
    y = net.add("Lambda", "my_lambda", [x], function={"class_name": "__lambda__",
                                                      "config": {"code": code, "defaults": None}},
                output_shape=None, arguments={})
    path = net.save(tmp_path / f"m.{fmt}", [y])
    with pytest.raises(UnsupportedOpError, match=r"layer 'my_lambda' \(Lambda\).*never runs code"):
        fastcnn.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cls,module,registered,match", [
    ("TFOpLambda", None, None, "TFOpLambda"),
    ("MyLayer", "__main__", "Custom>MyLayer", "MyLayer"),
    ("Dense", "my_package.layers", "Custom>Dense", "custom layer"),
    ("Attention", None, None, "Attention"),
])
def test_unsupported_layer_classes(fmt, tmp_path, cls, module, registered, match):
    net = Net(fmt)
    x = net.input("x", (4,))
    y = net.add(cls, "odd", [x], units=3)
    entry = net.entries[-1]
    if module is not None:
        entry["module"] = module
        entry["registered_name"] = registered
    path = net.save(tmp_path / f"m.{fmt}", [y])
    with pytest.raises(UnsupportedOpError, match=match) as e:
        fastcnn.load(path)
    assert "'odd'" in str(e.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_custom_activation_function_refused(fmt, tmp_path):
    net, y = _dense_net(fmt)
    net.entries[-1]["config"]["activation"] = {"module": "builtins", "class_name": "function",
                                               "config": "my_act", "registered_name": "function"}
    path = net.save(tmp_path / f"m.{fmt}", [y])
    with pytest.raises(UnsupportedOpError, match=r"'dense' \(Dense\).*custom Python function"):
        fastcnn.load(path)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("key,value,match", [
    ("activation", "sparsemax", "activation 'sparsemax' is not supported"),
    ("dtype", "int8_from_float32", "dtype policy"),
    ("lora_rank", 4, "lora_rank"),
])
def test_semantic_config_options_refused(fmt, tmp_path, key, value, match):
    net, y = _dense_net(fmt)
    net.entries[-1]["config"][key] = value
    path = net.save(tmp_path / f"m.{fmt}", [y])
    with pytest.raises(UnsupportedOpError, match=match):
        fastcnn.load(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_harmless_and_disabled_options_accepted(fmt, tmp_path):
    net, y = _dense_net(fmt, kernel_regularizer={"class_name": "L2", "config": {"l2": 0.01}},
                        activity_regularizer={"class_name": "L1", "config": {"l1": 0.1}},
                        quantization_config=None, lora_rank=None, dtype="mixed_float16")
    path = net.save(tmp_path / f"m.{fmt}", [y])
    out = fastcnn.load(path).run(None, {"x": np.ones((1, 4), np.float32)})[0]
    np.testing.assert_allclose(out, np.full((1, 3), 4.0))


@pytest.mark.parametrize("fmt", FORMATS)
def test_conv_padding_causal_2d_refused(fmt, tmp_path):
    net = Net(fmt)
    x = net.input("x", (5, 5, 1))
    y = net.add("Conv2D", "conv2d", [x], [("kernel", np.ones((3, 3, 1, 2)))], filters=2, kernel_size=[3, 3],
                padding="causal", use_bias=False)
    path = net.save(tmp_path / f"m.{fmt}", [y])
    with pytest.raises(UnsupportedOpError, match=r"'conv2d' \(Conv2D\): padding='causal'"):
        fastcnn.load(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_weight_shape_mismatch(fmt, tmp_path):
    net, y = _dense_net(fmt, kernel_shape=(5, 3))
    path = net.save(tmp_path / f"m.{fmt}", [y])
    with pytest.raises(ModelFileError, match=r"'dense' \(Dense\): weight .* has shape \[5, 3\]; expected \[4, 3\]"):
        fastcnn.load(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_weights(fmt, tmp_path):
    net, y = _dense_net(fmt)
    net.weights["dense"] = net.weights["dense"][:1]
    path = net.save(tmp_path / f"m.{fmt}", [y])
    with pytest.raises(ModelFileError, match=r"'dense' \(Dense\): expected 2 weight\(s\) \(kernel \[4, 3\], "
                                             r"bias \[3\]\) but the file has 1"):
        fastcnn.load(path)


def test_listed_weight_missing_from_h5(tmp_path):
    net, y = _dense_net("h5")
    path = net.save(tmp_path / "m.h5", [y])
    with h5py.File(path, "a") as f:
        del f["model_weights/dense/dense/bias:0"]
    with pytest.raises(ModelFileError, match="'dense/bias:0' is listed but missing"):
        fastcnn.load(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_input_reference_and_cycle(fmt, tmp_path):
    net, y = _dense_net(fmt)
    node = net.entries[-1]["inbound_nodes"][0]
    if fmt == "h5":
        node[0][0] = "nowhere"
    else:
        node["args"][0]["config"]["keras_history"][0] = "nowhere"
    path = net.save(tmp_path / f"m.{fmt}", [y])
    with pytest.raises(ModelFileError, match=r"layer 'dense' \(Dense\) call 0 reads \[\['nowhere', 0, 0\]\]"):
        fastcnn.load(path)


def test_weights_only_h5(tmp_path):
    path = str(tmp_path / "w.h5")
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"dense"])
        f.create_group("dense")
    with pytest.raises(ModelFileError, match="weights-only"):
        fastcnn.load(path)


def test_plain_hdf5_file(tmp_path):
    path = str(tmp_path / "data.h5")
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ModelFileError, match="without a Keras model_config"):
        fastcnn.load(path)


@pytest.mark.parametrize("content", [b"\x89HDF\r\n\x1a\n" + b"\x00" * 40, b"\x89HDF\r\n\x1a\n"])
def test_corrupt_h5(tmp_path, content):
    path = tmp_path / "bad.h5"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="bad.h5"):
        fastcnn.load(str(path))


def test_truncated_files(tmp_path):
    for fmt in FORMATS:
        net, y = _dense_net(fmt)
        path = net.save(tmp_path / f"m.{fmt}", [y])
        data = open(path, "rb").read()
        for cut in (len(data) // 3, len(data) - 20):
            bad = tmp_path / f"cut.{fmt}"
            bad.write_bytes(data[:cut])
            with pytest.raises(FastCNNError):
                fastcnn.load(str(bad))


def test_npz_is_not_a_keras_file(tmp_path):
    path = str(tmp_path / "weights.npz")
    np.savez(path, w=np.zeros(3))
    with pytest.raises(ModelFileError, match=r"NumPy \.npz archive.*fastcnn\.nn"):
        fastcnn.load(path)


def test_zip_without_config(tmp_path):
    path = str(tmp_path / "m.keras")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ModelFileError, match="without config.json"):
        fastcnn.load(path)


@pytest.mark.parametrize("config", [b"{not json", b"[1, 2]", json.dumps({"class_name": "Functional"}).encode(),
                                    json.dumps({"class_name": "Functional", "config": {"layers": []}}).encode(),
                                    b"[" * 100000 + b"]" * 100000])
def test_bad_configs(tmp_path, config):
    path = str(tmp_path / "m.keras")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", config)
        zf.writestr("model.weights.h5", b"")
    with pytest.raises(ModelFileError):
        fastcnn.load(path)


def test_subclassed_model_refused(tmp_path):
    path = str(tmp_path / "m.keras")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", json.dumps({"module": "__main__", "class_name": "MyModel", "config": {},
                                               "registered_name": "MyModel"}))
        zf.writestr("model.weights.h5", b"")
    with pytest.raises(UnsupportedOpError, match="MyModel"):
        fastcnn.load(path)


def test_convert_cli(tmp_path):
    """`fastcnn convert model.h5 model.fcnn` works through the CLI, outputs unchanged."""
    from fastcnn.cli import main
    net, y = _dense_net("h5")
    net.weights["dense"] = [("kernel", np.arange(12, dtype=np.float32).reshape(4, 3)), ("bias", np.ones(3))]
    src = net.save(tmp_path / "m.h5", [y])
    dst = str(tmp_path / "m.fcnn")
    assert main(["convert", src, dst]) in (0, None)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    a = fastcnn.load(src).run(None, {"x": x})[0]
    b = fastcnn.load(dst).run(None, {"x": x})[0]
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(a, x @ np.arange(12).reshape(4, 3) + 1, rtol=1e-5)

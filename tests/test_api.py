"""The public API as a user meets it: load, inputs/outputs, run like onnxruntime, save, convert,
build_info, thread settings, and loading .fcnn files without the onnx package."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import fastcnn
from fastcnn.errors import FastCNNError, InputError

from helpers import assert_close, run_isolated

MODELS = Path(__file__).resolve().parents[1] / "models"
ONNX = MODELS / "lenet5_digits.onnx"
FCNN = MODELS / "lenet5_digits.fcnn"
SAMPLES = MODELS / "digits_samples.npz"
LABELS = [str(i) for i in range(8)]


@pytest.fixture(scope="module")
def samples():
    with np.load(SAMPLES) as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(params=["fcnn", "onnx"])
def model(request):
    if request.param == "onnx":
        pytest.importorskip("onnx")
    m = fastcnn.load(FCNN if request.param == "fcnn" else ONNX, num_threads=1)
    yield m
    m.close()


def test_public_names():
    for name in ("load", "convert", "Model", "build_info", "set_num_threads", "FastCNNError",
                 "ModelFileError", "UnsupportedOpError", "GraphError", "InputError",
                 "ResourceLimitError", "__version__"):
        assert hasattr(fastcnn, name), name
    assert issubclass(fastcnn.ModelFileError, fastcnn.FastCNNError)


def test_inputs_and_outputs_specs(model):
    (inp,), (out,) = model.inputs, model.outputs
    assert (inp.name, inp.shape, inp.dtype) == ("input", (None, 1, 32, 32), "float32")
    assert (out.name, out.shape, out.dtype) == ("logits", (None, 8), "float32")
    assert model.get_inputs() == model.inputs and model.get_outputs() == model.outputs
    assert model.labels == LABELS
    assert "None" in repr(inp)


def test_run_returns_a_list_of_new_arrays_like_onnxruntime(model, samples):
    x = samples["x"][:5]
    outs = model.run(None, {"input": x})
    assert isinstance(outs, list) and len(outs) == 1
    y = outs[0]
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (5, 8)
    assert y.flags.writeable and y.flags.c_contiguous
    named = model.run(["logits"], {"input": x})
    assert np.array_equal(named[0], y)
    # Results are fresh arrays: a later call (other data, same shape) must not change them.
    kept = y.copy()
    other = model.run(None, {"input": samples["x"][5:10]})[0]
    assert np.array_equal(y, kept) and not np.shares_memory(y, other)
    y[:] = 0  # and writing to a result does not disturb the model
    assert np.array_equal(model.run(None, {"input": x})[0], kept)


def test_call_is_run_of_the_single_input(model, samples):
    x = samples["x"][:4]
    assert np.array_equal(model(x), model.run(None, {"input": x})[0])


def test_predictions_match_onnxruntime(samples):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(ONNX), providers=["CPUExecutionProvider"])
    x = samples["x_test"]
    want = sess.run(None, {"input": x})[0]
    with fastcnn.load(FCNN, num_threads=2) as m:
        got = m.run(None, {"input": x})[0]
    assert_close(got, want)
    assert np.array_equal(got.argmax(1), want.argmax(1))


def test_non_contiguous_and_batch_sizes(model, samples):
    x = samples["x"][:6]
    want = model(x)
    strided = np.asfortranarray(x)
    assert np.array_equal(model(strided), want)
    every_other = samples["x"][:12:2]
    assert np.array_equal(model(every_other), model(np.ascontiguousarray(every_other)))
    # The planner chooses kernels per batch size, so other batch sizes agree to rounding only.
    for n in (1, 3, 6):
        np.testing.assert_allclose(model(x[:n]), want[:n], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("feed, match", [
    ({"input": np.zeros((2, 1, 32, 32), np.float64)}, "float32"),
    ({"input": np.zeros((2, 1, 28, 28), np.float32)}, r"expected float32 \[N, 1, 32, 32\]"),
    ({"input": np.zeros((1, 32, 32), np.float32)}, "shape"),
    ({"image": np.zeros((2, 1, 32, 32), np.float32)}, "missing input"),
    ({"input": [[0.0]]}, "numpy"),
])
def test_bad_inputs_raise_input_error(model, feed, match):
    with pytest.raises(InputError, match=match):
        model.run(None, feed)


def test_empty_batch_gives_empty_outputs(model):
    """As onnxruntime: a batch of 0 is valid and gives outputs with a batch of 0."""
    out = model.run(None, {"input": np.zeros((0, 1, 32, 32), np.float32)})
    assert [o.shape for o in out] == [(0, 8)]


def test_unknown_output_name(model, samples):
    with pytest.raises(InputError, match="unknown output"):
        model.run(["probs"], {"input": samples["x"][:1]})


def test_save_and_convert(tmp_path, samples):
    x = samples["x"][:7]
    with fastcnn.load(FCNN, num_threads=1) as m:
        want = m(x)
        m.save(tmp_path / "copy.fcnn")
    with fastcnn.load(str(tmp_path / "copy.fcnn"), num_threads=1) as m:
        assert np.array_equal(m(x), want) and m.labels == LABELS
    pytest.importorskip("onnx")
    fastcnn.convert(ONNX, tmp_path / "conv.fcnn", metadata={"labels": list("abcdefgh"), "author": "t"})
    with fastcnn.load(tmp_path / "conv.fcnn", num_threads=1) as m:
        assert np.array_equal(m(x), want)
        assert m.labels == list("abcdefgh") and m.metadata["author"] == "t"


def test_build_info_keys():
    info = fastcnn.build_info()
    for key in ("compiler", "cflags", "openmp", "simd", "default_threads", "version"):
        assert key in info, key
    assert isinstance(info["openmp"], bool)
    assert isinstance(info["default_threads"], int) and info["default_threads"] >= 1
    assert "-ffast-math" not in info["cflags"]
    assert info["version"] == fastcnn.__version__


def test_set_num_threads_sets_the_default_for_later_loads():
    try:
        fastcnn.set_num_threads(1)
        with fastcnn.load(FCNN) as m:
            assert m.num_threads == 1
        fastcnn.set_num_threads(2)
        with fastcnn.load(FCNN) as m:
            assert m.num_threads == 2
            m.set_num_threads(1)
            assert m.num_threads == 1
    finally:
        fastcnn.set_num_threads(None)
    assert fastcnn.build_info()["default_threads"] >= 1


@pytest.mark.parametrize("bad", [0, -1, 1025, "2", 2.0, True, None])
def test_invalid_thread_counts_are_refused(bad):
    if bad is None:  # None means "automatic" for the global default, but not for a model
        with fastcnn.load(FCNN) as m, pytest.raises(FastCNNError, match="num_threads"):
            m.set_num_threads(bad)
        return
    with pytest.raises(FastCNNError, match="num_threads"):
        fastcnn.set_num_threads(bad)
    with pytest.raises(FastCNNError, match="num_threads"):
        fastcnn.load(FCNN, num_threads=bad)


def test_one_and_two_threads_give_identical_results(samples):
    x = samples["x_test"]
    with fastcnn.load(FCNN, num_threads=1) as one, fastcnn.load(FCNN, num_threads=2) as two:
        for n in (1, 5, len(x)):
            assert np.array_equal(one(x[:n]), two(x[:n])), n


BLOCK_ONNX = """
    import sys
    class BlockOnnx:
        def find_spec(self, name, path=None, target=None):
            if name == "onnx" or name.startswith("onnx.") or name.startswith("onnxruntime"):
                raise ImportError(f"blocked for this test: {name}")
            return None
    sys.meta_path.insert(0, BlockOnnx())
    import numpy as np, fastcnn
"""


def test_fcnn_loads_and_runs_without_the_onnx_package(tmp_path, samples):
    code = BLOCK_ONNX + f"""
    m = fastcnn.load({str(FCNN)!r})
    x = np.load({str(SAMPLES)!r})["x"]
    acc = float((m(x).argmax(1) == np.load({str(SAMPLES)!r})["y"]).mean())
    assert "onnx" not in sys.modules, sorted(k for k in sys.modules if "onnx" in k)
    print("accuracy", acc)
    """
    r = run_isolated(code, tmp_path)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.split()[-1]) > 0.95


def test_onnx_without_the_onnx_package_is_a_clear_error(tmp_path):
    code = BLOCK_ONNX + f"""
    try:
        fastcnn.load({str(ONNX)!r})
    except fastcnn.FastCNNError as e:
        print("ERROR", e)
    """
    r = run_isolated(code, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ERROR") and "pip install" in r.stdout and "onnx" in r.stdout


def test_model_repr_and_metadata(model):
    text = repr(model)
    assert "input[N, 1, 32, 32]" in text and "logits[N, 8]" in text
    assert model.metadata["source_format"] == "onnx"   # both were made from the torch export
    if str(model.graph.source).endswith(".fcnn"):
        assert "nearest-neighbour" in model.metadata["preprocessing"]

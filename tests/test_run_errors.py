"""Model.run input validation: every message names the input and gives the expected and actual
dtype and shape (and the model's inputs when names are wrong)."""
import numpy as np
import pytest

import fastcnn
from helpers import ir_model


@pytest.fixture(scope="module")
def model():
    return ir_model([("Add", ["image", "bias"], ["y"])], {"image": (None, 3, 4, 4), "bias": (3, 1, 1)}, ["y"])


def feed(n=2):
    return {"image": np.zeros((n, 3, 4, 4), np.float32), "bias": np.zeros((3, 1, 1), np.float32)}


def _err(model, f, *parts):
    with pytest.raises(fastcnn.InputError) as e:
        model.run(None, f)
    msg = str(e.value)
    for p in parts:
        assert p in msg, f"{p!r} not in {msg!r}"
    return msg


def test_valid_feed_runs(model):
    f = feed(3)
    f["bias"][:] = 1.5
    assert model.run(None, f)[0].shape == (3, 3, 4, 4)
    assert (model.run(["y"], f)[0] == 1.5).all()


def test_missing_input(model):
    f = feed()
    del f["bias"]
    _err(model, f, "missing input(s) 'bias'", "the model's inputs are 'image' float32 [N, 3, 4, 4], 'bias' float32 [3, 1, 1]")


def test_unknown_input(model):
    f = feed()
    f["Image"] = f["image"]
    _err(model, f, "unknown input(s) 'Image'", "'image' float32 [N, 3, 4, 4]")


def test_missing_and_unknown_together(model):
    f = {"img": np.zeros((1, 3, 4, 4), np.float32), "bias": np.zeros((3, 1, 1), np.float32)}
    _err(model, f, "missing input(s) 'image'", "unknown input(s) 'img'")


def test_wrong_rank(model):
    f = feed()
    f["image"] = np.zeros((3, 4, 4), np.float32)
    _err(model, f, "input 'image'", "has shape [3, 4, 4] (float32)", "expected float32 [N, 3, 4, 4]")


def test_wrong_shape(model):
    f = feed()
    f["image"] = np.zeros((2, 3, 4, 5), np.float32)
    _err(model, f, "input 'image' has shape [2, 3, 4, 5] (float32); expected float32 [N, 3, 4, 4]")
    f = feed()
    f["bias"] = np.zeros((3, 1, 2), np.float32)
    _err(model, f, "input 'bias' has shape [3, 1, 2] (float32); expected float32 [3, 1, 1]")


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int64, np.uint8, bool])
def test_wrong_dtype(model, dtype):
    f = feed()
    f["image"] = f["image"].astype(dtype)
    _err(model, f, "input 'image' has dtype", f"{np.dtype(dtype)} shape [2, 3, 4, 4]",
         "expected float32 [N, 3, 4, 4]", "astype(np.float32)")


def test_python_list_instead_of_array(model):
    f = feed()
    f["bias"] = [[[0.0]], [[0.0]], [[0.0]]]
    _err(model, f, "input 'bias' must be a numpy.ndarray, got list", "expected float32 [3, 1, 1]")


def test_not_a_dict(model):
    with pytest.raises(fastcnn.InputError, match="inputs must be a dict of name -> numpy array, got list"):
        model.run(None, [feed()["image"]])


def test_empty_input(model):
    f = feed()
    f["image"] = np.zeros((0, 3, 4, 4), np.float32)
    assert model.run(None, f)[0].shape == (0, 3, 4, 4)  # an empty batch: empty outputs
    f["bias"] = np.zeros((3, 1, 0), np.float32)
    _err(model, f, "input 'bias' has shape [3, 1, 0] (float32); expected float32 [3, 1, 1]")


def test_unknown_output_name(model):
    with pytest.raises(fastcnn.InputError, match=r"unknown output name\(s\) 'z'; the model's outputs are 'y'"):
        model.run(["z"], feed())


def test_call_on_multi_input_model(model):
    with pytest.raises(fastcnn.InputError, match="the model has 2 inputs"):
        model(feed()["image"])


def test_non_contiguous_and_fortran_inputs_are_accepted(model):
    f = feed()
    big = np.arange(2 * 3 * 4 * 8, dtype=np.float32).reshape(2, 3, 4, 8)
    f["image"] = big[..., ::2]
    f["bias"] = np.asfortranarray(np.arange(3, dtype=np.float32).reshape(3, 1, 1))
    got = model.run(None, f)[0]
    assert np.array_equal(got, big[..., ::2] + np.arange(3, dtype=np.float32).reshape(3, 1, 1))


def test_model_without_inputs_runs():
    """A graph of constants only (no runtime inputs: a fuzzed file was one) runs with an empty
    feed and returns its values (Model.run looked at the first input's batch size and raised
    IndexError)."""
    k = np.array([[-1.0, 2.0], [3.0, -4.0]], np.float32)
    for passes in (True, False):
        m = ir_model([("Relu", ["k"], ["y"])], {}, ["y"], {"k": k}, passes=passes)
        assert m.inputs == []
        np.testing.assert_array_equal(m.run(None, {})[0], np.maximum(k, 0))


def test_conv_whose_padding_would_overflow_the_scratch_size():
    """A 3x3 conv with dilation 1e9 and the padding that keeps 8x8 (a fuzzed Keras file): the
    tile kernel's padded image would be 3 x 2e9 x 2e9 floats. Its size overflowed Py_ssize_t and
    a wrapped value reached the step ('work too small', a ValueError); now the size is exact and
    the plan is refused by the memory limit."""
    d = 10 ** 9
    w = np.ones((4, 3, 3, 3), np.float32)
    with pytest.raises(fastcnn.ResourceLimitError, match="memory limit"):
        ir_model([("Conv", ["x", "w"], ["y"], {"dilations": [d, d], "pads": [d, d, d, d]})],
                 {"x": (1, 3, 8, 8)}, ["y"], {"w": w})

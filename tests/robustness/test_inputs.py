"""Arrays given to Model.run: every layout works, every wrong array is an InputError, an empty
batch gives empty outputs, a batch too large for the memory limit is a ResourceLimitError raised
before anything big is allocated, and NaN/Inf flow through as IEEE arithmetic says.

(Messages for wrong rank, shape, dtype and names are checked word by word in
tests/test_run_errors.py; here each kind of input is exercised against a real CNN.)
"""
from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import fastcnn
import reference
from helpers import assert_close, ir_model, rand

MB = 1 << 20
RNG = np.random.default_rng(77)
W1 = rand(RNG, 6, 3, 3, 3)
B1 = rand(RNG, 6)
W2 = rand(RNG, 6 * 4 * 4, 5)


def cnn(num_threads=1, spatial=(8, 8), split_batch=True):
    """Conv 3->6 (pad 1) -> Relu -> MaxPool 2 -> Flatten -> MatMul -> Softmax; batch dynamic."""
    nodes = [("Conv", ["x", "w1", "b1"], ["c"], {"pads": [1, 1, 1, 1]}),
             ("Relu", ["c"], ["r"], {}),
             ("MaxPool", ["r"], ["p"], {"kernel_shape": [2, 2], "strides": [2, 2]}),
             ("Flatten", ["p"], ["f"], {}),
             ("MatMul", ["f", "w2"], ["m"], {}),
             ("Softmax", ["m"], ["y"], {"axis": 1})]
    return ir_model(nodes, {"x": (None, 3) + tuple(spatial)}, ["y", "c"],
                    {"w1": W1, "b1": B1, "w2": W2}, num_threads=num_threads,
                    split_batch=split_batch)


def cnn_reference(x):
    c = reference.conv2d(x.astype(np.float64), W1, B1, pads=(1, 1, 1, 1))
    p = reference.pool2d(np.maximum(c, 0), "max", (2, 2), (2, 2))
    return reference.softmax(p.reshape(len(x), -1) @ W2, axis=1), c


@pytest.fixture(scope="module")
def model():
    return cnn()


# ----------------------------------------------------------------------------- layouts
def _layouts(x):
    ro = x.copy()
    ro.setflags(write=False)
    wide = np.zeros(x.shape[:-1] + (x.shape[-1] * 3,), np.float32)
    wide[..., ::3] = x
    rev = np.ascontiguousarray(x[..., ::-1])[..., ::-1]
    mm_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fastcnn-input-{os.getpid()}.npy")
    np.save(mm_path, x)
    mm = np.load(mm_path, mmap_mode="r")
    os.unlink(mm_path)
    return {
        "C": x, "Fortran": np.asfortranarray(x), "strided": wide[..., ::3], "read-only": ro,
        "negative strides": rev, "transposed view": np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2),
        "read-only memmap": mm, "masked array": np.ma.masked_array(x),
    }


@pytest.mark.parametrize("layout", ["C", "Fortran", "strided", "read-only", "negative strides",
                                    "transposed view", "read-only memmap", "masked array"])
def test_any_layout_gives_the_same_result(model, layout):
    x = rand(RNG, 3, 3, 8, 8)
    arr = _layouts(x)[layout]
    assert np.array_equal(arr, x)
    y, c = model.run(None, {"x": arr})
    ref_y, ref_c = cnn_reference(x)
    assert_close(y, ref_y)
    assert_close(c, ref_c)
    assert np.array_equal(y, model.run(["y"], {"x": x})[0])  # bit-identical across layouts


def test_broadcast_view_with_zero_strides(model):
    one = rand(RNG, 1, 3, 8, 8)
    x = np.broadcast_to(one, (4, 3, 8, 8))  # read-only, stride 0 on the batch
    y = model.run(["y"], {"x": x})[0]
    assert np.array_equal(y, model.run(["y"], {"x": np.ascontiguousarray(x)})[0])
    assert_close(y, np.repeat(cnn_reference(one)[0], 4, axis=0))


def test_outputs_are_fresh_arrays_the_caller_owns(model):
    x = rand(RNG, 2, 3, 8, 8)
    y1 = model.run(["y"], {"x": x})[0]
    keep = y1.copy()
    y1[:] = 123.0                      # writing into a result must not touch the model
    x2 = rand(RNG, 2, 3, 8, 8)
    y2 = model.run(["y"], {"x": x2})[0]
    assert not np.shares_memory(y1, y2)
    assert np.array_equal(model.run(["y"], {"x": x})[0], keep)


# ----------------------------------------------------------------------------- wrong inputs
@pytest.mark.parametrize("bad,words", [
    (np.zeros((2, 3, 8, 8), np.float64), ["dtype float64", "x.astype(np.float32)"]),
    (np.zeros((2, 3, 8, 8), ">f4"), ["dtype >f4"]),
    (np.zeros((2, 3, 8, 8), np.float16), ["dtype float16"]),
    (np.zeros((3, 8, 8), np.float32), ["shape [3, 8, 8]", "expected float32 [N, 3, 8, 8]"]),
    (np.zeros((2, 3, 8, 9), np.float32), ["shape [2, 3, 8, 9]"]),
    (np.zeros((2, 4, 8, 8), np.float32), ["shape [2, 4, 8, 8]"]),
    (np.float32(1.0), ["must be a numpy.ndarray, got float32"]),
    ([[0.0]], ["must be a numpy.ndarray, got list"]),
    (np.zeros((2, 3, 8, 8), object), ["dtype object"]),
])
def test_wrong_arrays_are_input_errors(model, bad, words):
    with pytest.raises(fastcnn.InputError) as e:
        model.run(None, {"x": bad})
    for w in words:
        assert w in str(e.value)
    # the model is unharmed
    x = rand(RNG, 1, 3, 8, 8)
    assert_close(model.run(["y"], {"x": x})[0], cnn_reference(x)[0])


def test_missing_and_extra_names(model):
    with pytest.raises(fastcnn.InputError, match="missing input"):
        model.run(None, {})
    with pytest.raises(fastcnn.InputError, match="unknown input"):
        model.run(None, {"x": rand(RNG, 1, 3, 8, 8), "extra": rand(RNG, 1)})
    with pytest.raises(fastcnn.InputError, match="unknown output"):
        model.run(["nope"], {"x": rand(RNG, 1, 3, 8, 8)})


# ----------------------------------------------------------------------------- empty batch
def test_empty_batch_gives_empty_outputs(model):
    """As onnxruntime: a batch of 0 returns outputs with a 0 batch dim; no kernel runs."""
    y, c = model.run(None, {"x": np.zeros((0, 3, 8, 8), np.float32)})
    assert y.shape == (0, 5) and y.dtype == np.float32
    assert c.shape == (0, 6, 8, 8)
    y2 = model.run(["y"], {"x": np.zeros((0, 3, 8, 8), np.float32)})[0]
    assert y2.shape == (0, 5)
    x = rand(RNG, 2, 3, 8, 8)
    assert_close(model.run(["y"], {"x": x})[0], cnn_reference(x)[0])


def test_empty_batch_matches_onnxruntime_on_pytorch_style_flatten(tmp_path):
    """x.view(x.size(0), -1): the batch reaches Reshape through Shape/Gather/Concat."""
    pytest.importorskip("onnx")
    from onnx import helper
    from helpers import onnx_model, run_ort, save_onnx

    N = helper.make_node
    nodes = [N("Shape", ["x"], ["s"]), N("Gather", ["s", "zero"], ["n"], axis=0),
             N("Unsqueeze", ["n", "ax"], ["n1"]), N("Concat", ["n1", "m1"], ["shape"], axis=0),
             N("Reshape", ["x", "shape"], ["f"]), N("MatMul", ["f", "w"], ["y"])]
    inits = {"zero": np.array(0, np.int64), "ax": np.array([0], np.int64),
             "m1": np.array([-1], np.int64), "w": rand(RNG, 12, 4)}
    proto = onnx_model(nodes, {"x": [None, 3, 2, 2]}, ["y"], inits, opset=13)
    m = fastcnn.load(save_onnx(proto, str(tmp_path)))
    empty = np.zeros((0, 3, 2, 2), np.float32)
    got = m.run(None, {"x": empty})[0]
    assert got.shape == (0, 4)
    try:
        ref = run_ort(proto, {"x": empty})[0]
    except Exception:  # noqa: BLE001 - some onnxruntime versions refuse the -1 with 0 elements
        return
    assert got.shape == ref.shape


def test_empty_non_batch_dim_is_an_input_error():
    m = cnn(spatial=(8, None))
    with pytest.raises(fastcnn.InputError, match="only a dynamic batch dimension may be 0"):
        m.run(None, {"x": np.zeros((1, 3, 8, 0), np.float32)})


def test_empty_batch_with_a_reduction_over_the_batch_is_refused():
    m = ir_model([("ReduceSum", ["x", "ax"], ["y"], {"keepdims": 0})], {"x": (None, 3)}, ["y"],
                 {"ax": np.array([0], np.int64)})
    with pytest.raises(fastcnn.InputError, match="does not scale with the batch"):
        m.run(None, {"x": np.zeros((0, 3), np.float32)})
    assert np.array_equal(m.run(None, {"x": np.ones((2, 3), np.float32)})[0], [2, 2, 2])


def test_zero_fixed_dim_in_a_model_is_refused_at_load():
    with pytest.raises(fastcnn.GraphError, match="every fixed dimension must be at least 1"):
        ir_model([("Relu", ["x"], ["y"])], {"x": (1, 0, 3)}, ["y"])


# ----------------------------------------------------------------------------- huge batches
@pytest.fixture
def limit():
    fastcnn.set_memory_limit(32 * MB)
    yield 32 * MB
    fastcnn.set_memory_limit(None)


def _peak_of(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("lazy", [False, True], ids=["planned-at-load", "planned-at-first-run"])
def test_batch_over_the_limit_fails_before_allocating(limit, lazy):
    """Conv 3->6 on (B, 3, 8, 8): B=20000 needs 46 MB of activations at the conv (each tensor
    alone is under the 32 MB limit, so the per-tensor check passes: the plan's total refuses).
    Nothing near that size may be allocated before the error, and no weight is packed.
    (split_batch=False: otherwise the batch runs in chunks that fit, the next test.)"""
    m = cnn(spatial=(8, None) if lazy else (8, 8), split_batch=False)
    x = np.zeros((20000, 3, 8, 8), np.float32)  # 15 MB input, made before measuring
    packed_before = len(m._cache)
    err = []

    def run():
        try:
            m.run(None, {"x": x})
        except fastcnn.ResourceLimitError as e:
            err.append(e)

    peak = _peak_of(run)
    assert err, "no ResourceLimitError"
    msg = str(err[0])
    assert "memory limit of 33,554,432 bytes" in msg and "set_memory_limit" in msg
    assert "[20000, 3, 8, 8]" in msg
    assert peak < 2 * MB, f"{peak / MB:.1f} MB allocated before refusing"
    assert len(m._cache) == packed_before, "weights were packed for a plan that cannot run"
    # and the model still runs a batch that fits
    small = rand(RNG, 2, 3, 8, 8)
    assert_close(m.run(["y"], {"x": small})[0], cnn_reference(small)[0])


@pytest.mark.parametrize("threads", [1, 2])
def test_batch_over_the_limit_runs_in_chunks_that_fit(limit, threads):
    """The batch of the test above, with split_batch (the default): its samples are
    independent, so it runs in chunks whose activations fit the limit together."""
    m = cnn(num_threads=threads)
    x = np.zeros((20000, 3, 8, 8), np.float32)
    x[::997] = rand(RNG, len(x[::997]), 3, 8, 8)
    y, c = m.run(None, {"x": x})
    runs = m._splits[((20000, 3, 8, 8),), threads]
    assert sum(k[0][0] for run in runs for k in run) == 20000
    assert len(runs) == threads and all(len(run) > 1 for run in runs)
    largest = max(k[0][0] for run in runs for k in run)
    # the single-threaded plans the chunks ran on (a model's own plans are keyed by shape alone);
    # the chunk's kernels differ from batch 1's (Winograd, with more scratch, from 4 samples)
    key = ((largest, 3, 8, 8),)
    plan = (m._plans.get(("single",) + key) or m._plans[key])[0]
    assert plan.num_threads == 1 and m.plan_for([(1, 3, 8, 8)]).scratch_bytes < plan.scratch_bytes
    assert threads * (plan.arena_bytes + plan.scratch_bytes) <= limit
    ref_y, ref_c = cnn_reference(x[::997])
    assert_close(y[::997], ref_y)
    assert_close(c[::997], ref_c)


def test_single_tensor_over_the_limit_fails_before_allocating(limit):
    """Tile x4096 of a small input: the output alone exceeds the limit (shape inference)."""
    m = ir_model([("Tile", ["x", "r"], ["y"])], {"x": (None, 4, 8, 8)}, ["y"],
                 {"r": np.array([1, 1, 64, 64], np.int64)})
    x = np.ones((64, 4, 8, 8), np.float32)
    err = []

    def run():
        try:
            m(x)
        except fastcnn.ResourceLimitError as e:
            err.append(e)

    peak = _peak_of(run)
    assert err and "output 'y' would need 268,435,456 bytes" in str(err[0])
    assert peak < 2 * MB


def test_memory_limit_from_the_environment(tmp_path):
    code = ("import numpy as np, fastcnn, sys\n"
            "sys.path.insert(0, sys.argv[1])\n"
            "from helpers import ir_model\n"
            "m = ir_model([('Relu', ['x'], ['y'])], {'x': (None, 1024)}, ['y'])\n"
            "print(fastcnn.config.memory_limit())\n"
            "m(np.ones((100, 1024), np.float32))\n"
            "try:\n"
            "    m(np.ones((2000, 1024), np.float32))\n"
            "except fastcnn.ResourceLimitError as e:\n"
            "    print('refused', 'FASTCNN_MEMORY_LIMIT' in str(e))\n")
    env = dict(os.environ, FASTCNN_MEMORY_LIMIT="4M")
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastcnn.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code, tests_dir], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(4 << 20), "refused", "True"]


def test_set_memory_limit_rejects_nonsense():
    for bad in (0, -1, 1.5, "1G", True):
        with pytest.raises(fastcnn.FastCNNError):
            fastcnn.set_memory_limit(bad)


# ----------------------------------------------------------------------------- NaN / Inf
# NaN, infinities, signed zeros, denormals and large values whose float32 sums do not overflow
SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 1e-45], np.float32)


def _with_specials(shape, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, *shape)
    flat = x.reshape(-1)
    idx = rng.choice(flat.size, size=flat.size // 5, replace=False)
    flat[idx] = rng.choice(SPECIALS, size=idx.size)
    return x


def _spreads_within_tiles(model, shape) -> bool:
    """A Winograd convolution transforms whole input tiles, so a NaN or Inf in one pixel makes
    every output of its tile NaN, including outputs whose window does not cover that pixel."""
    return any("Winograd" in type(s).__name__ for s in model.plan_for([shape]).steps)


@pytest.mark.parametrize("threads", [1, 2])
def test_nan_and_inf_propagate_like_ieee_arithmetic(threads):
    """Conv, Relu, MaxPool, MatMul, Softmax on inputs with NaN, +-Inf, signed zeros and
    denormals: no crash, and the NaN/Inf positions of the float64 reference (numpy semantics: a
    NaN anywhere in a window or a sum makes the result NaN). With a Winograd convolution a NaN
    or Inf may also spread to the other outputs of its tile; never is one lost (turned finite),
    and every output the reference has finite is either that value or non-finite."""
    m = cnn(num_threads=threads)
    x = _with_specials((4, 3, 8, 8), 5)
    y, c = m.run(None, {"x": x})
    with np.errstate(all="ignore"):
        ref_y, ref_c = (r.astype(np.float32) for r in cnn_reference(x))
    if not _spreads_within_tiles(m, x.shape):
        assert_close(c, ref_c)
        assert_close(y, ref_y)
        return
    for got, ref in ((c, ref_c), (y, ref_y)):
        assert not (np.isfinite(got) & ~np.isfinite(ref)).any(), "a NaN or Inf was lost"
        both = np.isfinite(got) & np.isfinite(ref)
        assert_close(got[both], ref[both])
        assert np.array_equal(got[np.isinf(got) & np.isinf(ref)], ref[np.isinf(got) & np.isinf(ref)])


@pytest.mark.parametrize("op,attrs", [("Sigmoid", {}), ("Tanh", {}), ("Exp", {}), ("Relu", {}),
                                      ("LeakyRelu", {"alpha": 0.1}), ("Softmax", {"axis": -1}),
                                      ("Elu", {"alpha": 1.0}), ("HardSwish", {}), ("Log", {}),
                                      ("Sqrt", {}), ("Reciprocal", {}), ("Abs", {}), ("Neg", {})])
def test_unary_ops_on_special_values(op, attrs):
    """NaN in gives NaN out, Inf gives the limit, and nothing crashes (numpy float64 reference)."""
    x = np.concatenate([SPECIALS, -SPECIALS, rand(RNG, 16)]).reshape(2, 16)
    y = ir_model([(op, ["x"], ["y"], attrs)], {"x": (2, 16)}, ["y"])(x)
    xd = x.astype(np.float64)
    with np.errstate(all="ignore"):
        ref = {
            "Sigmoid": lambda: 1 / (1 + np.exp(-xd)), "Tanh": lambda: np.tanh(xd), "Exp": lambda: np.exp(xd),
            "Relu": lambda: np.where(np.isnan(xd), np.nan, np.maximum(xd, 0)),
            "LeakyRelu": lambda: np.where(xd >= 0, xd, 0.1 * xd),
            "Softmax": lambda: reference.softmax(xd, axis=-1),
            "Elu": lambda: np.where(xd > 0, xd, np.expm1(xd)),
            "HardSwish": lambda: xd * np.clip(xd / 6 + 0.5, 0, 1),
            "Log": lambda: np.log(xd), "Sqrt": lambda: np.sqrt(xd), "Reciprocal": lambda: 1 / xd,
            "Abs": lambda: np.abs(xd), "Neg": lambda: -xd,
        }[op]().astype(np.float32)
    assert np.array_equal(np.isnan(y), np.isnan(ref)), f"{op}: NaN positions {x[np.isnan(y) != np.isnan(ref)]}"
    fin = np.isfinite(ref)
    assert np.array_equal(y[~fin & ~np.isnan(ref)], ref[~fin & ~np.isnan(ref)])
    assert_close(y[fin], ref[fin])

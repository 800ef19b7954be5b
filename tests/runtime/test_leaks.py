"""No leaks over a long-running process: inference after inference keeps the RSS flat, and loading
and closing models (.onnx and .fcnn, successfully or not) gives back file handles, mappings and
memory. A longer soak: python tests/robustness/fuzz_campaign.py --target leaks --seconds N.
"""
from __future__ import annotations

import gc
import os

import numpy as np
import pytest

import fastcnn
from helpers import ir_model, rand, save_onnx

MB = 1 << 20
pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_growths(step, windows: int = 3) -> list:
    """RSS growth over each of `windows` runs of step(), after gc. A leak grows the RSS in every
    window; the allocator (arenas, a new heap segment, pools of the rest of the test session)
    grows it once in a while. So the tests assert on the smallest growth, which a real leak of
    a few bytes per call still pushes past the limit."""
    growths = []
    for _ in range(windows):
        gc.collect()
        before = rss()
        step()
        gc.collect()
        growths.append(rss() - before)
    return growths


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def mappings_of(path: str) -> int:
    real = os.path.realpath(path)
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if line.rstrip().endswith(real))


def tiny_model(threads=1):
    rng = np.random.default_rng(0)
    nodes = [("Conv", ["x", "w", "b"], ["c"], {"pads": [1, 1, 1, 1]}),
             ("Relu", ["c"], ["r"]), ("GlobalAveragePool", ["r"], ["g"]),
             ("Flatten", ["g"], ["f"]), ("Gemm", ["f", "fw"], ["y"], {"transB": 1})]
    inits = {"w": rand(rng, 4, 2, 3, 3), "b": rand(rng, 4), "fw": rand(rng, 3, 4)}
    return ir_model(nodes, {"x": (None, 2, 5, 5)}, ["y"], inits, num_threads=threads)


def tiny_onnx(directory) -> str:
    pytest.importorskip("onnx")
    from onnx import helper
    from helpers import onnx_model
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    return save_onnx(onnx_model(nodes, {"x": [None, 2, 5, 5]}, ["y"], {"w": rand(rng, 3, 2, 3, 3)}),
                     str(directory))


def test_ten_thousand_inferences_keep_rss_flat():
    m = tiny_model()
    xs = [rand(np.random.default_rng(i), 1 + i % 3, 2, 5, 5) for i in range(3)]
    for i in range(500):  # warm up: plans for the three batch sizes, allocator pools
        m(xs[i % 3])

    def step():
        for i in range(5000):
            m(xs[i % 3])
    grown = rss_growths(step)
    assert min(grown) < 2 * MB, f"RSS grew {[g / MB for g in grown]} MB per 5,000 inferences"


def test_failing_calls_do_not_leak():
    m = tiny_model()
    bad = [{"x": np.zeros((1, 2, 5, 5), np.float64)}, {"x": np.zeros((1, 2, 5), np.float32)},
           {"y": np.zeros((1, 2, 5, 5), np.float32)}]
    for i in range(300):
        with pytest.raises(fastcnn.InputError):
            m.run(None, bad[i % 3])

    def step():
        for i in range(3000):
            with pytest.raises(fastcnn.InputError):
                m.run(None, bad[i % 3])
    grown = rss_growths(step)
    assert min(grown) < 4 * MB, f"RSS grew {[g / MB for g in grown]} MB per 3,000 failed calls"


@pytest.mark.parametrize("fmt", ["onnx", "fcnn"])
def test_load_close_cycles_release_files_maps_and_memory(fmt, tmp_path):
    path = tiny_onnx(tmp_path)
    if fmt == "fcnn":
        fcnn_path = str(tmp_path / "tiny.fcnn")
        fastcnn.convert(path, fcnn_path)
        path = fcnn_path
    x = rand(np.random.default_rng(2), 2, 2, 5, 5)
    for _ in range(100):  # warm up: a fresh process's heap grows over the first few hundred loads
        with fastcnn.load(path, num_threads=1) as m:
            m(x)
    gc.collect()
    fds, maps = open_fds(), mappings_of(path)
    assert maps == 0

    def step():
        for i in range(50):
            if i % 2:
                with fastcnn.load(path, num_threads=1) as m:
                    m(x)
            else:
                m = fastcnn.load(path, num_threads=1)
                m(x)
                m.close()
                with pytest.raises(fastcnn.FastCNNError, match="closed"):
                    m(x)
            # released at close, without waiting for the garbage collector
            assert open_fds() == fds, f"cycle {i}: file handles {open_fds()} != {fds}"
            assert mappings_of(path) == 0, f"cycle {i}: {path} still mapped after close()"
    grown = rss_growths(step, windows=4)
    assert min(grown) < 4 * MB, f"RSS grew {[g / MB for g in grown]} MB per 50 load/close cycles"


def test_an_unclosed_model_releases_its_file_when_collected(tmp_path):
    path = str(tmp_path / "m.fcnn")
    fastcnn.convert(tiny_onnx(tmp_path), path)
    fds = open_fds()
    m = fastcnn.load(path)
    m(rand(np.random.default_rng(3), 1, 2, 5, 5))
    assert mappings_of(path) == 1
    del m
    gc.collect()
    assert open_fds() == fds and mappings_of(path) == 0


def test_failed_loads_release_files(tmp_path):
    good = str(tmp_path / "good.fcnn")
    fastcnn.convert(tiny_onnx(tmp_path), good)
    data = bytearray(open(good, "rb").read())
    data[-20] ^= 1
    bad = tmp_path / "bad.fcnn"
    bad.write_bytes(bytes(data))
    fds = open_fds()
    for _ in range(50):
        with pytest.raises(fastcnn.ModelFileError, match="checksum"):
            fastcnn.load(str(bad))
    assert open_fds() == fds and mappings_of(str(bad)) == 0

"""Pooling fast paths (fastcnn/_kernels/pool.pyx) against the reference loop of the same module
and the numpy reference: the vectorised interior (stride 1 and 2 loads, scalar other strides),
bounds-checked edges, every padding/ceil combination, NaN/Inf, 1 and 2 threads, and the
vectorised global max/min/average rows."""
import numpy as np
import pytest

from helpers import assert_close, rand
from reference import global_pool, out_size, pool2d

from fastcnn._kernels import pool as pk

RNG = np.random.default_rng(77)
KINDS = {"max": pk.POOL_CODES["MaxPool"], "min": pk.POOL_CODES["MinPool"],
         "avg": pk.POOL_CODES["AveragePool"]}


def run_pool(x, kind, k, s, pads, ceil=False, include_pad=False, path=None, threads=1):
    n, c, h, w = x.shape
    ho = out_size(h, k[0], s[0], pads[0], pads[2], 1, ceil)
    wo = out_size(w, k[1], s[1], pads[1], pads[3], 1, ceil)
    out = np.full((n, c, ho, wo), np.nan, np.float32)   # every value must be written
    step = pk.Pool2dStep(x, out, KINDS[kind], k, s, pads, (1, 1), include_pad, 2.0, path)
    step.num_threads = threads
    step()
    return out


# (shape, kernel, stride, pads (top, left, bottom, right), ceil_mode)
FAST_GEOMETRIES = [
    ((1, 6, 28, 28), (2, 2), (2, 2), (0, 0, 0, 0), 0),      # LeNet
    ((1, 32, 32, 32), (2, 2), (2, 2), (0, 0, 0, 0), 0),     # edge CNN
    ((1, 5, 37, 41), (3, 3), (2, 2), (1, 1, 1, 1), 0),      # ResNet stem pool, odd sizes
    ((2, 3, 17, 35), (3, 3), (2, 2), (1, 1, 1, 1), 1),      # ceil: partial last window
    ((2, 3, 19, 33), (2, 2), (2, 2), (0, 0, 0, 0), 1),
    ((3, 2, 9, 40), (3, 3), (1, 1), (1, 1, 1, 1), 0),       # stride 1, vector interior
    ((1, 3, 11, 29), (2, 3), (1, 1), (0, 2, 1, 0), 0),      # asymmetric
    ((1, 3, 13, 50), (3, 2), (3, 3), (1, 1, 1, 0), 1),      # stride 3: scalar interior
    ((1, 2, 8, 8), (5, 5), (2, 2), (2, 2, 2, 2), 0),        # mostly edges
    ((1, 2, 3, 5), (3, 5), (1, 1), (0, 0, 0, 0), 0),        # window = image
    ((1, 4, 6, 70), (1, 1), (2, 2), (0, 0, 0, 0), 0),       # 1x1 window, subsampling
    ((2, 3, 7, 18), (2, 2), (2, 2), (1, 1, 1, 1), 1),       # pads on every side, ceil
]


def geo_id(g):
    shape, k, s, p, c = g
    return f"{'x'.join(map(str, shape))}_k{k[0]}{k[1]}_s{s[0]}{s[1]}_p{''.join(map(str, p))}_c{c}"


@pytest.mark.parametrize("geo", FAST_GEOMETRIES, ids=geo_id)
@pytest.mark.parametrize("kind", ["max", "min", "avg", "avg_include_pad"])
def test_fast_path_matches_reference_loop(geo, kind, threads):
    shape, k, s, p, ceil = geo
    x = rand(RNG, *shape, lo=-3, hi=3)
    base = "avg" if kind.startswith("avg") else kind
    inc = kind == "avg_include_pad"
    got = run_pool(x, base, k, s, p, bool(ceil), inc, path="fast", threads=threads)
    slow = run_pool(x, base, k, s, p, bool(ceil), inc, path="reference")
    ref = pool2d(x, base, k, s, p, (1, 1), bool(ceil), count_include_pad=inc)
    assert_close(got, ref, f"{kind} {geo_id(geo)}")
    # the same taps in the same order: bit-identical to the reference loop
    np.testing.assert_array_equal(got, slow)


@pytest.mark.parametrize("geo", FAST_GEOMETRIES, ids=geo_id)
@pytest.mark.parametrize("kind", ["max", "min"])
def test_two_phase_matches_reference_loop(geo, kind, threads):
    shape, k, s, p, ceil = geo
    x = rand(RNG, *shape, lo=-3, hi=3)
    got = run_pool(x, kind, k, s, p, bool(ceil), path="two_phase", threads=threads)
    np.testing.assert_array_equal(got, run_pool(x, kind, k, s, p, bool(ceil), path="reference"))
    assert_close(got, pool2d(x, kind, k, s, p, (1, 1), bool(ceil)), f"{kind} {geo_id(geo)}")


def test_default_path_is_the_fastest_that_applies():
    x = rand(RNG, 1, 2, 8, 8)
    out = np.zeros((1, 2, 4, 4), np.float32)
    for kind, path in (("max", "two_phase"), ("min", "two_phase"), ("avg", "fast")):
        step = pk.Pool2dStep(x, out, KINDS[kind], (2, 2), (2, 2), (0, 0, 0, 0), (1, 1))
        assert step.path_name == path
    lp = pk.Pool2dStep(x, out, pk.POOL_CODES["LpPool"], (2, 2), (2, 2), (0, 0, 0, 0), (1, 1))
    assert lp.path_name == "reference"
    with pytest.raises(ValueError, match="does not apply"):
        pk.Pool2dStep(x, out, KINDS["avg"], (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), path="two_phase")
    with pytest.raises(ValueError, match="does not apply"):
        pk.Pool2dStep(x, np.zeros((1, 2, 3, 3), np.float32), KINDS["max"], (2, 2), (2, 2),
                      (0, 0, 0, 0), (2, 2), path="fast")


def test_two_phase_wide_rows_fall_back():
    # a row wider than the two-phase buffer: the fast path runs instead, same results
    x = rand(RNG, 1, 2, 4, 2100)
    got = run_pool(x, "max", (2, 3), (1, 1), (0, 1, 0, 1))
    assert_close(got, pool2d(x, "max", (2, 3), (1, 1), (0, 1, 0, 1)))
    with pytest.raises(ValueError, match="does not apply"):
        run_pool(x, "max", (2, 3), (1, 1), (0, 1, 0, 1), path="two_phase")


@pytest.mark.parametrize("path", ["fast", "two_phase"])
@pytest.mark.parametrize("kind", ["max", "min"])
@pytest.mark.parametrize("geo", [FAST_GEOMETRIES[1], FAST_GEOMETRIES[2], FAST_GEOMETRIES[5],
                                 FAST_GEOMETRIES[4]], ids=geo_id)
def test_fast_paths_nan_and_inf(kind, geo, path):
    shape, k, s, p, ceil = geo
    x = rand(RNG, *shape)
    flat = x.reshape(-1)
    idx = RNG.choice(flat.size, size=12, replace=False)
    flat[idx[:4]] = np.nan
    flat[idx[4:8]] = np.inf
    flat[idx[8:]] = -np.inf
    got = run_pool(x, kind, k, s, p, bool(ceil), path=path)
    slow = run_pool(x, kind, k, s, p, bool(ceil), path="reference")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(slow))
    ref = pool2d(x, kind, k, s, p, (1, 1), bool(ceil))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    ok = ~np.isnan(ref)
    np.testing.assert_array_equal(got[ok], ref[ok].astype(np.float32))


def test_parallel_planes_bit_identical():
    # over a million taps: the planes are split across threads
    x = rand(RNG, 2, 24, 112, 112)
    for path in ("fast", "two_phase"):
        one = run_pool(x, "max", (3, 3), (2, 2), (1, 1, 1, 1), path=path, threads=1)
        two = run_pool(x, "max", (3, 3), (2, 2), (1, 1, 1, 1), path=path, threads=2)
        np.testing.assert_array_equal(one, two)
        assert_close(one, pool2d(x, "max", (3, 3), (2, 2), (1, 1, 1, 1)))


@pytest.mark.parametrize("kind", ["max", "min", "avg"])
@pytest.mark.parametrize("cols", [1, 7, 8, 9, 31, 32, 33, 49, 100, 3136])
def test_global_rows(kind, cols, threads):
    rows = 300 if cols >= 1000 else 13
    x = rand(RNG, rows, cols, lo=-2, hi=3)
    out = np.full(rows, np.nan, np.float32)
    step = pk.GlobalPoolStep(x, out, KINDS[kind])
    step.num_threads = threads
    step()
    if kind == "min":   # (no GlobalMinPool op, so no reference function)
        ref = x.astype(np.float64).min(axis=1)
    else:
        ref = global_pool(x.reshape(rows, 1, cols), kind).reshape(rows)
    assert_close(out, ref, f"{kind} cols {cols}")


@pytest.mark.parametrize("kind", ["max", "min", "avg"])
def test_global_rows_nan(kind):
    x = rand(RNG, 4, 50)
    x[1, 3] = np.nan      # in a vector
    x[2, 49] = np.nan     # in the tail
    x[3, 0] = np.inf
    out = np.zeros(4, np.float32)
    pk.GlobalPoolStep(x, out, KINDS[kind])()
    assert np.isnan(out[1]) and np.isnan(out[2]) and not np.isnan(out[0])

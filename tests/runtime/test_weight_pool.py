"""The memory packed weights live in (runtime/weight_pool.py): arrays as np.empty's, apart,
advised for huge pages, alive as long as an array views them; packers given the pool's allocator
write the same bits, and refuse an allocator that returns something they cannot fill."""
from __future__ import annotations

import gc
import sys

import numpy as np
import pytest

from helpers import assert_close, ir_model, rand
from fastcnn._kernels import gemm, winograd
from fastcnn.runtime import weight_pool
from fastcnn.runtime.weight_pool import ALIGN, MIN_POOLED_BYTES, WeightPool

pooled = pytest.mark.skipif(not weight_pool.HUGE_PAGES_ADVISABLE,
                            reason="the pool hands out np.empty arrays on this platform")

MB = 1 << 20


def _chunk_addresses(pool):
    return [(c.ctypes.data, c.ctypes.data + c.size) for c, _ in pool._chunks]


@pooled
def test_arrays_are_apart_aligned_and_first_fit(monkeypatch):
    """Arrays of several sizes (a chunk of 4 MB here) get 64-byte-aligned, disjoint memory; one
    that does not fit what a chunk has left opens a new chunk, and a later smaller one goes into
    the first chunk's tail; small arrays come from np.empty."""
    monkeypatch.setattr(weight_pool, "CHUNK_BYTES", 4 * MB)
    pool = WeightPool()
    shapes = [(250, 1000), (700, 1000), (2 * MB // 4 + 5,), (70, 1000), (5, 7)]
    arrays = [pool.empty(s) for s in shapes]
    chunks = _chunk_addresses(pool)
    assert len(chunks) == 2, "the 2 MB array does not fit the first chunk's 0.4 MB left"
    for a, s in zip(arrays, shapes):
        assert a.shape == s and a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable
    assert all(a.ctypes.data % ALIGN == 0 for a in arrays[:4])
    for i, a in enumerate(arrays):
        a[...] = i
    for i, a in enumerate(arrays):
        assert (a == i).all(), "arrays overlap"
    inside = [[lo <= a.ctypes.data < hi for lo, hi in chunks] for a in arrays]
    assert inside[:4] == [[True, False], [True, False], [False, True], [True, False]]
    assert not any(inside[4]), "a 140-byte array comes from np.empty"
    assert all(lo % weight_pool.HUGE_PAGE == 0 for lo, _ in chunks)


@pooled
def test_a_small_model_gets_no_pool(monkeypatch):
    """Below MIN_MODEL_BYTES of weights every array comes from np.empty (a 2 MB page would cost
    more than the faults it saves); at it, arrays of MIN_POOLED_BYTES and more are pooled. A
    model's pool is sized by its initializers."""
    small = WeightPool(weight_pool.MIN_MODEL_BYTES - 1)
    a = small.empty((MIN_POOLED_BYTES,))
    assert not small._chunks and a.shape == (MIN_POOLED_BYTES,)
    big = WeightPool(weight_pool.MIN_MODEL_BYTES)
    big.empty((MIN_POOLED_BYTES,))
    assert len(big._chunks) == 1
    monkeypatch.setattr(weight_pool, "MIN_POOLED_BYTES", 0)
    rng = np.random.default_rng(1)
    model = ir_model([("Conv", ["x", "w"], ["y"], {})], {"x": (1, 64, 8, 8)}, ["y"],
                     {"w": rand(rng, 64, 64, 1, 1)})
    model.run(None, {"x": rand(rng, 1, 64, 8, 8)})
    assert not model._weight_pool._chunks, "16 KB of weights: no pool"


@pooled
def test_chunks_are_advised_for_huge_pages():
    """The kernel records the advice on the chunk's mapping (VmFlags 'hg' in smaps): whether it
    backs it with huge pages is the system's choice."""
    if not sys.platform.startswith("linux"):
        pytest.skip("smaps is Linux's")
    pool = WeightPool()
    a = pool.empty((MIN_POOLED_BYTES // 4,))
    addr = a.ctypes.data
    flags = None
    with open("/proc/self/smaps") as f:
        inside = False
        for line in f:
            head = line.split()[0]
            if "-" in head and all(c in "0123456789abcdef-" for c in head):
                lo, hi = (int(v, 16) for v in head.split("-"))
                inside = lo <= addr < hi
            elif inside and line.startswith("VmFlags:"):
                flags = line.split()[1:]
                break
    assert flags is not None and "hg" in flags


@pooled
def test_memory_lives_as_long_as_an_array_views_it():
    pool = WeightPool()
    a = pool.empty((512, 1024))
    a[...] = 3.0
    del pool
    gc.collect()
    filler = [np.full(1 << 18, 7.0, np.float32) for _ in range(8)]   # reuse freed memory, if any
    assert (a == 3.0).all()
    del filler


def test_packers_write_the_same_bits_into_pool_memory():
    """pack_bt_panels (scaled, permuted columns), pack_b_panels and winograd_weights into the
    pool's arrays: the same bits as into np.empty's."""
    rng = np.random.default_rng(3)
    pool = WeightPool()
    bt = rand(rng, 1000, 300)
    scale = rng.uniform(0.5, 2.0, 1000)
    cols = rng.permutation(300)
    want = gemm.pack_bt_panels(bt, scale, cols)
    got = gemm.pack_bt_panels(bt, scale, cols, alloc=pool.empty)
    assert np.array_equal(got, want) and got.nbytes >= MIN_POOLED_BYTES
    b = rand(rng, 300, 1000)   # B (k, n), as a MatMul holds it
    assert np.array_equal(gemm.pack_b_panels(b, alloc=pool.empty, num_threads=2), gemm.pack_b_panels(b))
    w = rand(rng, 64, 48, 3, 3)
    want = winograd.winograd_weights(w, 4, 2, scale[:64])
    got = winograd.winograd_weights(w, 4, 2, scale[:64], alloc=pool.empty)
    assert np.array_equal(got, want)
    if weight_pool.HUGE_PAGES_ADVISABLE:
        lo, hi = _chunk_addresses(pool)[0]
        assert lo <= got.ctypes.data < hi


@pytest.mark.parametrize("bad", ["shape", "dtype", "strided", "readonly", "list"])
def test_packers_refuse_an_allocator_returning_what_they_cannot_fill(bad):
    def alloc(shape):
        if bad == "shape":
            return np.empty(shape[:-1] + (shape[-1] - 1,), np.float32)
        if bad == "dtype":
            return np.empty(shape, np.float64)
        if bad == "strided":
            return np.empty(shape[:-1] + (2 * shape[-1],), np.float32)[..., ::2]
        if bad == "readonly":
            a = np.empty(shape, np.float32)
            a.setflags(write=False)
            return a
        return [0.0]

    bt = np.ones((20, 30), np.float32)
    with pytest.raises(ValueError, match="not a writeable C-contiguous float32 array"):
        gemm.pack_bt_panels(bt, alloc=alloc)
    with pytest.raises(ValueError, match="not a writeable C-contiguous float32 array"):
        winograd.winograd_weights(np.ones((8, 4, 3, 3), np.float32), 2, alloc=alloc)
    with pytest.raises(ValueError, match="not a writeable C-contiguous float32 array"):
        gemm.pack_b_panels(bt, alloc=alloc)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_model_packed_into_the_pool_computes_as_the_reference(monkeypatch, threads):
    """Every packed weight of a model in the pool (MIN_POOLED_BYTES 0): a Winograd conv with a
    folded BatchNormalization, a 1x1 conv, a stride-2 tile conv and a dense layer, against numpy
    written here, batch 1 and 3."""
    monkeypatch.setattr(weight_pool, "MIN_POOLED_BYTES", 0)
    monkeypatch.setattr(weight_pool, "MIN_MODEL_BYTES", 0)
    rng = np.random.default_rng(5)
    c = 24
    inits = {"w1": rand(rng, c, 8, 3, 3), "g": rand(rng, c, lo=0.5, hi=1.5), "b": rand(rng, c),
             "m": rand(rng, c), "v": rand(rng, c, lo=0.5, hi=2.0), "w2": rand(rng, 16, c, 1, 1),
             "w3": rand(rng, 32, 16, 3, 3), "wd": rand(rng, 10, 32 * 4 * 4), "bd": rand(rng, 10)}
    nodes = [("Conv", ["x", "w1"], ["c1"], {"pads": [1, 1, 1, 1]}),
             ("BatchNormalization", ["c1", "g", "b", "m", "v"], ["n1"], {}),
             ("Relu", ["n1"], ["r1"], {}),
             ("Conv", ["r1", "w2"], ["c2"], {}),
             ("Conv", ["c2", "w3"], ["c3"], {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
             ("Flatten", ["c3"], ["f"], {}),
             ("Gemm", ["f", "wd", "bd"], ["y"], {"transB": 1})]
    model = ir_model(nodes, {"x": (None, 8, 8, 8)}, ["y"], inits, num_threads=threads)

    def conv(x, w, pad, stride=1):
        n, _, h, wd = x.shape
        k = w.shape[2]
        xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
        out = np.zeros((n, w.shape[0], ho, wo))
        for i in range(k):
            for j in range(k):
                patch = xp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
                out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
        return out

    for n in (1, 3):
        x = rand(rng, n, 8, 8, 8).astype(np.float64)
        p = {k: v.astype(np.float64) for k, v in inits.items()}
        c1 = conv(x, p["w1"], 1)
        s = p["g"] / np.sqrt(p["v"] + 1e-5)
        r1 = np.maximum((c1 - p["m"][:, None, None]) * s[:, None, None] + p["b"][:, None, None], 0)
        c3 = conv(conv(r1, p["w2"], 0), p["w3"], 1, 2)
        want = c3.reshape(n, -1) @ p["wd"].T + p["bd"]
        assert_close(model.run(None, {"x": x.astype(np.float32)})[0], want)
    if weight_pool.HUGE_PAGES_ADVISABLE:
        chunks = _chunk_addresses(model._weight_pool)
        packed = [v for v in model._cache.values() if isinstance(v, np.ndarray)]
        assert packed and any(lo <= a.ctypes.data < hi for a in packed for lo, hi in chunks)
        del packed
        if sys.platform.startswith("linux"):
            # closing the model unmaps its chunks (the address range leaves /proc/self/maps)
            model.close()
            gc.collect()
            with open("/proc/self/maps") as f:
                spans = [tuple(int(v, 16) for v in line.split()[0].split("-")) for line in f]
            assert not any(lo < hi2 and lo2 < hi for lo, hi in chunks for lo2, hi2 in spans)

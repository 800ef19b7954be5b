"""One Model shared by many Python threads gives exactly the serial results; thread counts can
change between calls; no OpenMP thread keeps spinning after `run` returns; several models and
batch sizes in many threads (plans evicted while others run); close() while other threads run."""
import resource
import threading
import time

import numpy as np
import pytest

from helpers import ir_model, rand


def small_cnn(threads=2):
    rng = np.random.default_rng(3)
    inits = {"w1": rand(rng, 8, 3, 3, 3), "b1": rand(rng, 8), "w2": rand(rng, 8 * 8 * 8, 10)}
    nodes = [("Conv", ["x", "w1", "b1"], ["c"], {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
             ("Relu", ["c"], ["r"], {}),
             ("Flatten", ["r"], ["f"], {}),
             ("MatMul", ["f", "w2"], ["m"], {}),
             ("Softmax", ["m"], ["y"], {"axis": 1})]
    return ir_model(nodes, {"x": (None, 3, 16, 16)}, ["y"], inits, num_threads=threads)


@pytest.mark.parametrize("parts", [False, True], ids=["layers-split", "batch-parts"])
def test_eight_python_threads_match_serial_runs(monkeypatch, parts):
    if parts:   # batches of 2 and 3 run as one part per thread (runtime/batch_split.py)
        from fastcnn.runtime import batch_split
        monkeypatch.setattr(batch_split, "MIN_PART_FLOPS", 0)
    m = small_cnn()
    rng = np.random.default_rng(4)
    xs = [rand(rng, 1 + i % 3, 3, 16, 16) for i in range(24)]
    serial = [m(x) for x in xs]
    assert (m._splits.get((((2, 3, 16, 16),), 2)) is not None) == parts
    results = [None] * len(xs)
    errors = []

    def work(k):
        try:
            for rep in range(5):
                for i in range(k, len(xs), 8):
                    results[i] = m(xs[i])
                    if not np.array_equal(results[i], serial[i]):
                        errors.append((k, rep, i))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    for r, s in zip(results, serial):
        assert np.array_equal(r, s)


def test_thread_count_changes_between_and_during_calls():
    m = small_cnn(threads=1)
    x = rand(np.random.default_rng(5), 2, 3, 16, 16)
    ref = m(x)
    stop = threading.Event()

    def flip():
        n = 1
        while not stop.is_set():
            n = 3 - n
            m.set_num_threads(n)

    t = threading.Thread(target=flip)
    t.start()
    try:
        for _ in range(200):
            assert np.array_equal(m(x), ref)
    finally:
        stop.set()
        t.join()
    m.set_num_threads(2)
    assert m.num_threads == 2 and np.array_equal(m(x), ref)


def test_cpu_goes_idle_after_run():
    m = small_cnn(threads=2)
    x = rand(np.random.default_rng(6), 16, 3, 16, 16)
    for _ in range(20):
        m(x)
    time.sleep(0.05)  # OpenMP may spin briefly (GOMP_SPINCOUNT) before sleeping
    before = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(1.0)
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # generous bound: a spinning worker would burn ~1 s of CPU here
    assert used < 0.25, f"process used {used:.2f} s of CPU while idle"


# ----------------------------------------------------------------------------- several models
def other_models():
    """Three models of different kinds, each with a dynamic batch."""
    rng = np.random.default_rng(8)
    pool = ir_model([("MaxPool", ["x"], ["p"], {"kernel_shape": [2, 2], "strides": [2, 2]}),
                     ("Flatten", ["p"], ["y"])], {"x": (None, 3, 16, 16)}, ["y"], num_threads=2)
    dense = ir_model([("Flatten", ["x"], ["f"]), ("Gemm", ["f", "w", "b"], ["g"], {"transB": 1}),
                      ("Tanh", ["g"], ["y"])], {"x": (None, 3, 16, 16)}, ["y"],
                     {"w": rand(rng, 7, 768), "b": rand(rng, 7)}, num_threads=1)
    return [small_cnn(threads=2), pool, dense]


def test_several_models_many_threads_mixed_batches_with_plan_eviction():
    """6 threads run 3 models on 12 batch sizes in random order: more shapes than a model caches
    plans for (MAX_CACHED_SHAPES), so plans are evicted while other threads run theirs. Every
    result equals the serial one, bit for bit."""
    import fastcnn.model as model_mod

    models = other_models()
    rng = np.random.default_rng(9)
    sizes = list(range(1, 13))
    assert len(sizes) > model_mod.MAX_CACHED_SHAPES
    xs = {n: rand(rng, n, 3, 16, 16) for n in sizes}
    serial = {(k, n): m(xs[n]) for k, m in enumerate(models) for n in sizes}
    errors = []

    def work(seed):
        r = np.random.default_rng(seed)
        try:
            for _ in range(60):
                k, n = int(r.integers(len(models))), int(r.choice(sizes))
                got = models[k](xs[n])
                if not np.array_equal(got, serial[(k, n)]):
                    errors.append(("mismatch", k, n))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    ts = [threading.Thread(target=work, args=(s,)) for s in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:5]
    for m in models:
        assert len(m._plans) <= model_mod.MAX_CACHED_SHAPES


def test_close_while_other_threads_run(tmp_path):
    """close() from one thread while others call run(): each call either returns the right
    result or raises FastCNNError('... closed'); nothing crashes, and calls after close fail.
    The model is a .fcnn file (weights mapped from the file), the riskiest case."""
    import fastcnn

    m0 = small_cnn(threads=2)
    path = str(tmp_path / "m.fcnn")
    m0.save(path)
    x = rand(np.random.default_rng(10), 3, 3, 16, 16)
    want = m0(x)
    for trial in range(5):
        m = fastcnn.load(path, num_threads=2)
        done, closed_errors, wrong, other = [0], [0], [], []
        started = threading.Barrier(4)

        def work():
            started.wait()
            while True:
                try:
                    got = m(x)
                except fastcnn.FastCNNError as e:
                    if "closed" in str(e):
                        closed_errors[0] += 1
                        return
                    other.append(repr(e))
                    return
                except Exception as e:  # pragma: no cover - reported below
                    other.append(repr(e))
                    return
                if not np.array_equal(got, want):
                    wrong.append(trial)
                done[0] += 1

        ts = [threading.Thread(target=work) for _ in range(3)]
        for t in ts:
            t.start()
        started.wait()
        time.sleep(0.02 * (trial + 1))
        m.close()
        for t in ts:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in ts)
        assert not wrong and not other, (wrong, other)
        assert closed_errors[0] == 3
        with pytest.raises(fastcnn.FastCNNError, match="closed"):
            m(x)
        m.close()  # closing twice is harmless


def test_load_run_close_in_parallel_threads(tmp_path):
    """Threads that each load, run and close their own copy of the same files."""
    import fastcnn

    m0 = small_cnn(threads=1)
    path = str(tmp_path / "m.fcnn")
    m0.save(path)
    x = rand(np.random.default_rng(11), 2, 3, 16, 16)
    want = m0(x)
    errors = []

    def work():
        try:
            for _ in range(8):
                with fastcnn.load(path, num_threads=1) as m:
                    if not np.array_equal(m(x), want):
                        errors.append("mismatch")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:3]

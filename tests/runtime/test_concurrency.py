"""One Model shared by many Python threads gives exactly the serial results; thread counts can
change between calls; no OpenMP thread keeps spinning after `run` returns."""
import resource
import threading
import time

import numpy as np

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


def test_eight_python_threads_match_serial_runs():
    m = small_cnn()
    rng = np.random.default_rng(4)
    xs = [rand(rng, 1 + i % 3, 3, 16, 16) for i in range(24)]
    serial = [m(x) for x in xs]
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

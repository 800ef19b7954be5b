"""A batch run as parts, one single-threaded plan per thread, and parts run in chunks
(fastcnn/runtime/batch_split.py): they give the whole batch's outputs; graphs whose nodes mix
samples, or compute with the batch size, run whole; a failing part releases its plan; part and
chunk sizes."""
import os
import time

import numpy as np
import pytest

from fastcnn import config
from fastcnn.runtime import batch_split
from fastcnn.runtime.batch_split import part_sizes
from helpers import assert_close, ir_model, rand


@pytest.fixture
def split_small(monkeypatch):
    """Let graphs of any size run as parts (the real threshold keeps tiny ones whole)."""
    monkeypatch.setattr(batch_split, "MIN_PART_FLOPS", 0)


def conv_inits(rng, c_in=3, c_out=8):
    return {"w": rand(rng, c_out, c_in, 3, 3), "b": rand(rng, c_out)}


def split_of(m, x):
    return m._splits.get(((tuple(x.shape),), m.num_threads), "not decided")


def whole_batch(nodes, inputs, outputs, inits, x):
    """Outputs of the graph run on 1 thread (never split), and of each sample alone."""
    m1 = ir_model(nodes, inputs, outputs, inits, num_threads=1, split_batch=False)
    return m1(x), np.concatenate([m1(x[i:i + 1]) for i in range(x.shape[0])])


PER_SAMPLE = {
    "conv-pool-gemm-softmax": (
        lambda r: ([("Conv", ["x", "w", "b"], ["c"], {"pads": [1, 1, 1, 1]}),
                    ("Relu", ["c"], ["r"]),
                    ("MaxPool", ["r"], ["p"], {"kernel_shape": [2, 2], "strides": [2, 2]}),
                    ("Flatten", ["p"], ["f"]),
                    ("Gemm", ["f", "g", "gb"], ["m"], {"transB": 1}),
                    ("Softmax", ["m"], ["y"], {"axis": 1})],
                   {**conv_inits(r), "g": rand(r, 10, 8 * 4 * 4), "gb": rand(r, 1, 10)})),
    "residual-concat-transpose": (
        lambda r: ([("Conv", ["x", "w", "b"], ["c"], {"pads": [1, 1, 1, 1]}),
                    ("Conv", ["c", "w2"], ["d"], {"pads": [1, 1, 1, 1]}),
                    ("Add", ["c", "d"], ["s"]),
                    ("Mul", ["s", "k"], ["t"]),
                    ("Concat", ["t", "c"], ["u"], {"axis": 1}),
                    ("Transpose", ["u"], ["y"], {"perm": [0, 2, 3, 1]})],
                   {**conv_inits(r), "w2": rand(r, 8, 8, 3, 3), "k": rand(r, 1, 8, 1, 1)})),
    "slice-pad-reduce": (
        lambda r: ([("Slice", ["x", "st", "en", "ax"], ["s"]),
                    ("Pad", ["s", "pads"], ["p"], {"mode": "reflect"}),
                    ("ReduceMean", ["p", "rax"], ["y"], {"keepdims": 1})],
                   {"st": np.array([1, 0], np.int64), "en": np.array([3, 9], np.int64),
                    "ax": np.array([1, 3], np.int64),
                    "pads": np.array([0, 0, 1, 2, 0, 0, 1, 0], np.int64),
                    "rax": np.array([2], np.int64)})),
    # x.view(x.size(0), -1): the target shape holds the batch size, and differs per part
    "flatten-by-shape": (
        lambda r: ([("Shape", ["x"], ["sh"]),
                    ("Gather", ["sh", "zero"], ["n"], {"axis": 0}),
                    ("Unsqueeze", ["n", "zax"], ["n1"]),
                    ("Concat", ["n1", "minus1"], ["target"], {"axis": 0}),
                    ("Reshape", ["x", "target"], ["f"]),
                    ("LayerNormalization", ["f", "ln_s", "ln_b"], ["y"], {"axis": -1})],
                   {"zero": np.array(0, np.int64), "zax": np.array([0], np.int64),
                    "minus1": np.array([-1], np.int64), "ln_s": rand(r, 3 * 9 * 9),
                    "ln_b": rand(r, 3 * 9 * 9)})),
}


@pytest.mark.parametrize("graph", sorted(PER_SAMPLE))
@pytest.mark.parametrize("batch, threads", [(4, 2), (5, 2), (16, 2), (7, 3)])
def test_parts_give_the_whole_batch(split_small, graph, batch, threads):
    r = np.random.default_rng(batch * 10 + threads)
    nodes, inits = PER_SAMPLE[graph](r)
    m = ir_model(nodes, {"x": (None, 3, 9, 9)}, ["y"], inits, num_threads=threads)
    # a strided view: parts slice the caller's array as it is
    x = rand(r, batch, 3, 9, 18)[:, :, :, ::2]
    got = m(x)
    parts = split_of(m, x)
    assert parts is not None and parts != "not decided"
    assert [sum(k[0][0] for k in run) for run in parts] == part_sizes(batch, threads)
    whole, alone = whole_batch(nodes, {"x": (None, 3, 9, 9)}, ["y"], inits, x)
    np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, alone, rtol=1e-5, atol=1e-6)
    assert np.array_equal(m(x), got)   # the same parts again


def test_parts_with_two_inputs_and_two_outputs(split_small):
    r = np.random.default_rng(1)
    inits = conv_inits(r)
    nodes = [("Conv", ["x", "w", "b"], ["c"], {"pads": [1, 1, 1, 1]}),
             ("Add", ["c", "z"], ["y1"]),
             ("GlobalAveragePool", ["y1"], ["y2"])]
    inputs = {"x": (None, 3, 6, 6), "z": (None, 8, 6, 6)}
    m = ir_model(nodes, inputs, ["y1", "y2"], inits, num_threads=2)
    feed = {"x": rand(r, 6, 3, 6, 6), "z": rand(r, 6, 8, 6, 6)}
    y2, y1 = m.run(["y2", "y1"], feed)
    assert m._splits[((6, 3, 6, 6), (6, 8, 6, 6)), 2] is not None
    ref1, ref2 = ir_model(nodes, inputs, ["y1", "y2"], inits, num_threads=1,
                          split_batch=False).run(None, feed)
    np.testing.assert_allclose(y1, ref1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y2, ref2, rtol=1e-5, atol=1e-6)


MIXING = {
    "softmax over the batch": [("Softmax", ["x"], ["y"], {"axis": 0})],
    "reduce over the batch": [("ReduceMean", ["x", "ax0"], ["y"], {"keepdims": 1})],
    "reduce over everything": [("ReduceSum", ["x"], ["r"], {"keepdims": 1}),
                               ("Sub", ["x", "r"], ["y"])],
    "transpose moving the batch": [("Transpose", ["x"], ["t"], {"perm": [1, 0, 2, 3]}),
                                   ("Softmax", ["t"], ["s"], {"axis": 1}),
                                   ("Transpose", ["s"], ["y"], {"perm": [1, 0, 2, 3]})],
    "slice along the batch": [("Slice", ["x", "one", "big", "ax0"], ["s"]),
                              ("Pad", ["s", "pad0"], ["y"])],
    "pad along the batch": [("Pad", ["x", "pad_shift"], ["y"])],
    "gather along the batch": [("Gather", ["x", "rev"], ["y"], {"axis": 0})],
    "concat along the batch": [("Concat", ["x", "x"], ["c"], {"axis": 0}),
                               ("Slice", ["c", "one", "big", "ax0"], ["y"])],
    "layernorm over the batch": [("LayerNormalization", ["x", "ln4", "ln4"], ["y"], {"axis": 0})],
    # these keep the batch dimension's size: only the op rules refuse them
    "layernorm over the batch, broadcast scale": [
        ("LayerNormalization", ["x", "ln1", "ln1"], ["y"], {"axis": 0})],
    "batch reversed by a slice": [("Slice", ["x", "minus1", "most_negative", "ax0", "minus1"],
                                   ["y"])],
    # the batch size itself enters the arithmetic: each part would scale by its own size
    "batch size as a value": [("Shape", ["x"], ["sh"]),
                              ("Gather", ["sh", "zero"], ["n"], {"axis": 0}),
                              ("Cast", ["n"], ["nf"], {"to": "float32"}),
                              ("Mul", ["x", "nf"], ["y"])],
}


@pytest.mark.parametrize("case", sorted(MIXING))
def test_graphs_that_mix_samples_run_whole(split_small, case):
    batch = 4
    r = np.random.default_rng(7)
    inits = {"ax0": np.array([0], np.int64), "one": np.array([1], np.int64),
             "big": np.array([batch], np.int64), "zero": np.array(0, np.int64),
             "pad0": np.array([1, 0, 0, 0, 0, 0, 0, 0], np.int64),
             "pad_shift": np.array([-1, 0, 0, 0, 1, 0, 0, 0], np.int64),
             "rev": np.array([3, 2, 1, 0], np.int64),
             "ln4": rand(r, batch, 2, 5, 5), "ln1": rand(r, 1),
             "minus1": np.array([-1], np.int64),
             "most_negative": np.array([-2 ** 63], np.int64)}
    nodes = MIXING[case]
    used = {i for n in nodes for i in n[1]}
    inits = {k: v for k, v in inits.items() if k in used}
    # with a static batch, passes fold Shape into a constant (and the graph is per-sample)
    inputs = {"x": (None if case == "batch size as a value" else batch, 2, 5, 5)}
    m = ir_model(nodes, inputs, ["y"], inits, num_threads=2)
    x = rand(r, batch, 2, 5, 5)
    got = m(x)
    assert split_of(m, x) is None
    ref = ir_model(nodes, inputs, ["y"], inits, num_threads=1, split_batch=False)(x)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_constant_varying_along_the_batch_runs_whole(split_small):
    r = np.random.default_rng(8)
    k = rand(r, 4, 2, 1, 1)   # one scale per sample of a static batch of 4
    nodes = [("Mul", ["x", "k"], ["y"])]
    m = ir_model(nodes, {"x": (4, 2, 3, 3)}, ["y"], {"k": k}, num_threads=2)
    x = rand(r, 4, 2, 3, 3)
    np.testing.assert_allclose(m(x), x * k, rtol=1e-6)
    assert split_of(m, x) is None


def test_small_parts_run_whole():
    r = np.random.default_rng(9)
    nodes = [("Conv", ["x", "w", "b"], ["y"], {"pads": [1, 1, 1, 1]})]
    m = ir_model(nodes, {"x": (None, 3, 6, 6)}, ["y"], conv_inits(r), num_threads=2)
    x = rand(r, 4, 3, 6, 6)   # 2 x 7 kMAC per part, far below MIN_PART_FLOPS
    m(x)
    assert split_of(m, x) is None
    m1 = ir_model(nodes, {"x": (None, 3, 6, 6)}, ["y"], conv_inits(r), num_threads=1)
    assert m1(x).shape == (4, 8, 6, 6) and split_of(m1, x) is None   # one chunk: whole


def test_a_failing_part_raises_and_releases_its_plans(split_small, monkeypatch):
    from fastcnn.runtime.plan import Plan
    r = np.random.default_rng(10)
    nodes = [("Conv", ["x", "w", "b"], ["y"], {"pads": [1, 1, 1, 1]})]
    m = ir_model(nodes, {"x": (None, 3, 6, 6)}, ["y"], conv_inits(r), num_threads=2)
    x = rand(r, 4, 3, 6, 6)
    good = m(x)
    real = Plan.feed
    calls = []

    def flaky(self, feed):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("part failed")
        real(self, feed)

    monkeypatch.setattr(Plan, "feed", flaky)
    with pytest.raises(MemoryError, match="part failed"):
        m(x)
    monkeypatch.setattr(Plan, "feed", real)
    # every plan was released: the next calls run (a held lock would block them for good)
    for _ in range(3):
        assert np.array_equal(m(x), good)
    assert all(not p.lock.locked() for pool in m._plans.values() for p in pool)


def _two_part_model(r, max_concurrent=4):
    from fastcnn.model import Model
    nodes = [("Conv", ["x", "w", "b"], ["c"], {"pads": [1, 1, 1, 1]}), ("Relu", ["c"], ["y"])]
    m = ir_model(nodes, {"x": (None, 3, 6, 6)}, ["y"], conv_inits(r), num_threads=2)
    return Model(m.graph, num_threads=2, max_concurrent=max_concurrent)


def test_one_chunk_per_thread_runs_steps_only_on_the_threads(split_small, monkeypatch):
    """Parts of one chunk each: this thread feeds and collects, the threads get step lists
    (batch_split.run_step_lists); the outputs are those of the parts run as threads that each
    feed their own plan (the path of several chunks per thread), bit for bit."""
    from fastcnn.model import Model
    r = np.random.default_rng(12)
    m = _two_part_model(r)
    x = rand(r, 6, 3, 6, 6)
    lists = []
    real = batch_split.run_step_lists
    monkeypatch.setattr(batch_split, "run_step_lists", lambda ls: (lists.append(len(ls)), real(ls)))
    got = m(x)
    assert lists == [2] and [len(run) for run in split_of(m, x)] == [1, 1]
    monkeypatch.setattr(Model, "_run_one_chunk_each", lambda *a: False)
    assert np.array_equal(got, m(x)) and lists == [2]
    assert_close(got, whole_batch([("Conv", ["x", "w", "b"], ["c"], {"pads": [1, 1, 1, 1]}),
                                   ("Relu", ["c"], ["y"])], {"x": (None, 3, 6, 6)}, ["y"],
                                  {k: m.graph.initializers[k] for k in ("w", "b")}, x)[0])
    assert all(not p.lock.locked() for pool in m._plans.values() for p in pool)


def test_one_chunk_per_thread_with_a_busy_plan_waits_its_turn(split_small):
    """Another call holds one of the two part plans (max_concurrent=2, so no third is
    built): the call does not wait while holding the other (two such calls would wait for
    each other); its parts run as threads taking plans in turn, and the outputs are right."""
    r = np.random.default_rng(13)
    m = _two_part_model(r, max_concurrent=2)
    x = rand(r, 6, 3, 6, 6)
    good = m(x)
    pool = m._plans[("single", (3, 3, 6, 6))]
    assert len(pool) == 2
    busy = pool[1]
    busy.lock.acquire()
    try:
        assert np.array_equal(m(x), good)
        assert busy.lock.locked() and not pool[0].lock.locked()
    finally:
        busy.lock.release()
    assert np.array_equal(m(x), good)


def test_run_step_lists_runs_every_list():
    """Each sequence's steps in order, the sequences on threads at once; one OpenMP gives no
    thread runs after another. Anything but Steps is refused when the sequence is made (before
    a step runs), anything but StepSeqs by run_step_lists."""
    from fastcnn._kernels.eltwise import UnaryStep
    from fastcnn._kernels.step import Step, StepSeq, run_step_lists

    r = np.random.default_rng(14)
    xs = [rand(r, 1000) for _ in range(3)]
    mids = [np.empty(1000, np.float32) for _ in xs]
    outs = [np.empty(1000, np.float32) for _ in xs]
    from fastcnn._kernels.eltwise import ACT_CODES
    lists = [[UnaryStep(x, mid, ACT_CODES["Relu"]), UnaryStep(mid, out, ACT_CODES["Neg"])]
             for x, mid, out in zip(xs, mids, outs)]
    run_step_lists([StepSeq(steps) for steps in lists])
    for x, out in zip(xs, outs):
        assert np.array_equal(out, -np.maximum(x, 0))
    run_step_lists([])
    run_step_lists([StepSeq([]), StepSeq(lists[0])])
    with pytest.raises(TypeError, match="item 1 of a step list is a str"):
        StepSeq([Step(), "not a step"])
    with pytest.raises(TypeError):
        run_step_lists([tuple(lists[0])])


def test_cpu_goes_idle_after_split_runs(split_small):
    import resource
    r = np.random.default_rng(11)
    nodes = [("Conv", ["x", "w", "b"], ["y"], {"pads": [1, 1, 1, 1]})]
    m = ir_model(nodes, {"x": (None, 3, 32, 32)}, ["y"], conv_inits(r), num_threads=2)
    x = rand(r, 8, 3, 32, 32)
    for _ in range(20):
        m(x)
    assert split_of(m, x) is not None
    time.sleep(0.05)
    before = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(0.5)
    after = resource.getrusage(resource.RUSAGE_SELF)
    busy = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert busy < 0.1, f"{busy:.3f} s of CPU used while idle"


@pytest.mark.parametrize("batch, threads, want", [
    (1, 2, None), (2, 1, None), (2, 2, [1, 1]), (3, 2, None), (4, 2, [2, 2]), (5, 2, [3, 2]),
    (16, 2, [8, 8]), (5, 3, None), (7, 3, [3, 2, 2]), (2, 4, None)])
def test_part_sizes(batch, threads, want):
    assert part_sizes(batch, threads) == want


def test_lower_rank_input_broadcast_across_the_batch_runs_whole(split_small):
    # z (n,) against x (n, 2) lines z up with x's second axis: out[i, j] = x[i, j] + z[j]
    # (valid for n = 2). Parts of one sample would add z[i] instead.
    nodes = [("Add", ["x", "z"], ["y"])]
    inputs = {"x": (None, 2), "z": (None,)}
    m = ir_model(nodes, inputs, ["y"], num_threads=2)
    x = np.array([[1, 2], [3, 4]], np.float32)
    z = np.array([10, 20], np.float32)
    np.testing.assert_array_equal(m.run(None, {"x": x, "z": z})[0], x + z)
    assert m._splits[((2, 2), (2,)), 2] is None


def test_split_batch_false_runs_whole(split_small, tmp_path):
    import fastcnn
    r = np.random.default_rng(12)
    nodes = [("Conv", ["x", "w", "b"], ["y"], {"pads": [1, 1, 1, 1]})]
    m = ir_model(nodes, {"x": (None, 3, 6, 6)}, ["y"], conv_inits(r))
    path = str(tmp_path / "conv.fcnn")
    m.save(path)
    x = rand(r, 4, 3, 6, 6)
    with fastcnn.load(path, num_threads=2, split_batch=False) as whole, \
            fastcnn.load(path, num_threads=2) as parts:
        assert np.array_equal(whole(x), m(x))
        assert split_of(whole, x) == "not decided"
        np.testing.assert_allclose(parts(x), m(x), rtol=1e-5, atol=1e-6)
        assert split_of(parts, x) is not None


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_parts_run_in_a_forked_child(split_small):
    import os
    r = np.random.default_rng(14)
    nodes = [("Conv", ["x", "w", "b"], ["y"], {"pads": [1, 1, 1, 1]})]
    m = ir_model(nodes, {"x": (None, 3, 8, 8)}, ["y"], conv_inits(r), num_threads=2)
    x = rand(r, 4, 3, 8, 8)
    ref = m(x)   # the parent's worker threads exist now; the child has none of them
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os._exit(0 if np.array_equal(m(x), ref) else 3)
        except BaseException:
            os._exit(4)
    deadline = time.time() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.time() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung running a split batch")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("threads, batch, want", [(1, 5, [[2, 2, 1]]), (2, 5, [[2, 1], [2]]),
                                                  (2, 8, [[2, 2], [2, 2]])])
def test_chunks_when_the_activations_outgrow_the_cache(monkeypatch, threads, batch, want):
    # a cache that holds the arenas of 2 samples per thread beside the weights: chunks of 2
    r = np.random.default_rng(15)
    nodes = [("Conv", ["x", "w", "b"], ["c"], {"pads": [1, 1, 1, 1]}),
             ("Relu", ["c"], ["r"]),
             ("Conv", ["r", "w2"], ["y"], {"pads": [1, 1, 1, 1]})]
    inits = {**conv_inits(r), "w2": rand(r, 4, 8, 3, 3)}
    m = ir_model(nodes, {"x": (None, 3, 12, 12)}, ["y"], inits, num_threads=threads)
    arena = m.plan_for([(1, 3, 12, 12)]).arena_bytes
    monkeypatch.setattr(batch_split, "MIN_PART_FLOPS", 0)
    weights = m._packed_weight_bytes()
    assert 0 < weights <= 2 * arena * threads   # held whole: at most half the cache
    monkeypatch.setattr(config, "last_level_cache_bytes", lambda: 2 * arena * threads + weights)
    x = rand(r, batch, 3, 12, 12)
    got = m(x)
    assert [[k[0][0] for k in run] for run in split_of(m, x)] == want
    # kernels are chosen per shape (Winograd for some batch sizes): compare within the
    # project tolerance, and exactly with the same chunks run one by one
    whole, alone = whole_batch(nodes, {"x": (None, 3, 12, 12)}, ["y"], inits, x)
    assert_close(got, alone)
    assert_close(got, whole)
    m1 = ir_model(nodes, {"x": (None, 3, 12, 12)}, ["y"], inits, num_threads=1, split_batch=False)
    at, pieces = 0, []
    for run in split_of(m, x):
        for k in run:
            pieces.append(m1(x[at:at + k[0][0]]))
            at += k[0][0]
    assert np.array_equal(got, np.concatenate(pieces))


@pytest.mark.parametrize("weights, arena, traffic, threads, cache, limit, want", [
    (21.7, 1.34, 10.4, 1, 32, 16, 8),  # MobileNetV2, one thread: 11 fit beside the weights, as 8 + 8
    (21.7, 1.34, 10.4, 2, 32, 8, 4),   # the same, parts of 8 on two threads: 5 fit, as 4 + 4
    (21.7, 1.34, 10.4, 1, 64, 16, 16),  # a larger cache holds the whole batch
    (85, 3.8, 10.8, 1, 32, 16, 16),    # ResNet-18: 4 would fit; re-reading 85 MB costs more
    (85, 3.8, 10.8, 2, 32, 8, 8),      # the same on two threads: whole parts
    (14, 6, 27, 1, 16, 8, 1),          # one image's activations fill what the weights leave
    (2, 0.16, 0.3, 2, 16, 8, 8),       # a small model fits whole
    (1, 100, 1, 1, 16, 8, 8),          # spilling costs less than re-reading weights: whole
    (0, 1, 1, 1, 16, 8, 8),            # no weights, nothing spills: a tie, the larger chunk
    (0, 1, 1, 1, 5, 8, 4),             # 5 fit: two chunks of 4, not 5 and 3
])
def test_chunk_size(weights, arena, traffic, threads, cache, limit, want):
    mb = 1 << 20
    assert batch_split.chunk_size(int(weights * mb), int(arena * mb), int(traffic * mb), threads,
                                  cache * mb, limit) == want


@pytest.fixture(params=["openmp", "python workers"])
def at_once_path(request, monkeypatch):
    """run_at_once on OpenMP's threads, and on the Python workers a forked child uses (forced
    here by making this process look like a child)."""
    if request.param == "python workers":
        monkeypatch.setattr(batch_split, "_IMPORT_PID", -1)
    return request.param


def test_run_at_once_runs_the_functions_together(at_once_path):
    """Each function runs once, all at the same time: the first waits for an event only the
    second sets (run one after the other, it would time out)."""
    import threading
    if at_once_path == "openmp" and (os.environ.get("OMP_THREAD_LIMIT", "").strip() == "1"
                                     or os.environ.get("OMP_DYNAMIC", "").lower() in ("true", "1")):
        pytest.skip("OpenMP may not give this process a second thread (run_at_once then runs "
                    "the functions one after the other: test_fewer_openmp_threads.py)")
    ready, ran = threading.Event(), []

    def first():
        ran.append(("first", ready.wait(5)))

    def second():
        ran.append(("second", True))
        ready.set()

    t0 = time.perf_counter()
    batch_split.run_at_once([first, second])
    assert sorted(ran) == [("first", True), ("second", True)]
    assert time.perf_counter() - t0 < 4


def test_run_at_once_raises_after_every_function_ended(at_once_path):
    ended = []

    def fails():
        raise ValueError("part 1")

    def slow():
        time.sleep(0.05)
        ended.append("slow")

    with pytest.raises(ValueError, match="part 1"):
        batch_split.run_at_once([slow, fails])
    assert ended == ["slow"]
    ended.clear()
    with pytest.raises(ValueError, match="part 1"):   # a later function still running
        batch_split.run_at_once([lambda: None, fails, slow])
    assert ended == ["slow"]


def test_run_at_once_inside_itself_runs_everything():
    """Nested, OpenMP gives the inner call one thread: the functions it got no thread for run
    on the caller afterwards."""
    ran = []
    batch_split.run_at_once([lambda: batch_split.run_at_once([lambda: ran.append(1),
                                                              lambda: ran.append(2),
                                                              lambda: ran.append(3)]),
                             lambda: ran.append(4)])
    assert sorted(ran) == [1, 2, 3, 4]

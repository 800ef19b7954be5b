"""Arena planning: buffers alive at the same time never overlap, and reuse makes the arena
smaller than the naive sum."""
import numpy as np
from hypothesis import given, settings, strategies as st

from helpers import assert_close, ir_model, rand
from fastcnn.runtime.memory import ALIGN, plan_offsets


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 20), st.integers(0, 10)),
                min_size=1, max_size=30))
def test_offsets_never_overlap_for_intersecting_lifetimes(specs):
    buffers = [(size, first, first + length) for size, first, length in specs]
    offsets, total = plan_offsets(buffers)
    for i, (si, fi, li) in enumerate(buffers):
        assert offsets[i] % ALIGN == 0 and offsets[i] + si <= total
        for j, (sj, fj, lj) in enumerate(buffers[:i]):
            if not (li < fj or lj < fi):
                assert offsets[i] + si <= offsets[j] or offsets[j] + sj <= offsets[i]


def test_chain_reuses_memory_and_stays_correct():
    rng = np.random.default_rng(1)
    nodes, prev = [], "x"
    for i in range(8):
        nodes.append(("Sigmoid" if i % 2 else "Tanh", [prev], [f"t{i}"], {}))
        prev = f"t{i}"
    m = ir_model(nodes, {"x": (2, 3, 40, 40)}, [prev])
    plan = m.plan_for()
    assert plan.arena_bytes < plan.naive_bytes / 3
    x = rand(rng, 2, 3, 40, 40)
    ref = x.astype(np.float64)
    for i in range(8):
        ref = 1 / (1 + np.exp(-ref)) if i % 2 else np.tanh(ref)
    assert_close(m(x), ref)


def test_inplace_does_not_clobber_a_value_still_needed():
    rng = np.random.default_rng(2)
    # r is read by both Relu (could run in place) and the final Add: in-place must not happen.
    nodes = [("Relu", ["x"], ["r"], {}), ("Sigmoid", ["r"], ["s"], {}), ("Add", ["r", "s"], ["y"], {})]
    m = ir_model(nodes, {"x": (3, 17)}, ["y"])
    x = rand(rng, 3, 17)
    r = np.maximum(x, 0).astype(np.float64)
    assert_close(m(x), r + 1 / (1 + np.exp(-r)))

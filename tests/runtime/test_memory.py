"""Arena planning: buffers alive at the same time never overlap, and reuse makes the arena
smaller than the naive sum."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from helpers import assert_close, ir_model, rand
from fastcnn.runtime.memory import ALIGN, plan_offsets, private_offsets


@pytest.mark.parametrize("planner", [plan_offsets, private_offsets])
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 20), st.integers(0, 10)),
                min_size=1, max_size=30))
def test_offsets_never_overlap_for_intersecting_lifetimes(planner, specs):
    """private_offsets: never overlap at all."""
    buffers = [(size, first, first + length) for size, first, length in specs]
    offsets, total = planner(buffers)
    for i, (si, fi, li) in enumerate(buffers):
        assert offsets[i] % ALIGN == 0 and offsets[i] + si <= total
        for j, (sj, fj, lj) in enumerate(buffers[:i]):
            if not (li < fj or lj < fi) or planner is private_offsets:
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


def residual_chain():
    """Conv-ReLU pairs with residual adds on 16x128x128: activations of 1 MB each, 2+ MB in
    all, so a plan for 2 threads gives every tensor its own region."""
    rng = np.random.default_rng(5)
    nodes, inits, prev = [], {}, "x"
    for i in range(4):
        inits[f"w{i}"] = rand(rng, 16, 16, 3, 3, lo=-0.2, hi=0.2)
        nodes += [("Conv", [prev, f"w{i}"], [f"c{i}"], {"pads": [1, 1, 1, 1]}),
                  ("Relu", [f"c{i}"], [f"r{i}"], {}),
                  ("Add", [f"r{i}", prev], [f"a{i}"], {})]
        prev = f"a{i}"
    return nodes, inits, prev


def test_multithreaded_plans_give_tensors_private_regions():
    from fastcnn.runtime import plan as plan_module
    nodes, inits, out = residual_chain()
    x = rand(np.random.default_rng(6), 1, 16, 128, 128)
    one = ir_model(nodes, {"x": (None, 16, 128, 128)}, [out], inits, num_threads=1)
    two = ir_model(nodes, {"x": (None, 16, 128, 128)}, [out], inits, num_threads=2)
    p1, p2 = one.plan_for(), two.plan_for()
    assert p1.arena_bytes == p1.reused_bytes > plan_module.PRIVATE_MIN_BYTES
    assert p2.reused_bytes == p1.arena_bytes and p2.arena_bytes > 2 * p2.reused_bytes
    assert p2.arena_bytes <= p2.naive_bytes + 64 * len(nodes)
    # same kernels, same order of sums: bit-identical whatever the layout
    assert np.array_equal(two(x), one(x))


def test_private_regions_only_within_their_bounds(monkeypatch):
    from fastcnn.runtime import plan as plan_module
    nodes, inits, out = residual_chain()
    monkeypatch.setattr(plan_module, "PRIVATE_MAX_BYTES", 1 << 20)   # the private arena: 8+ MB
    big = ir_model(nodes, {"x": (None, 16, 128, 128)}, [out], inits, num_threads=2).plan_for()
    assert big.arena_bytes == big.reused_bytes
    small = [("Relu", ["x"], ["r"]), ("Sigmoid", ["r"], ["s"]), ("Add", ["r", "s"], ["y"])]
    p = ir_model(small, {"x": (3, 17)}, ["y"], num_threads=2).plan_for()
    assert p.arena_bytes == p.reused_bytes   # 600 bytes: stays in L2 anyway


def test_batch_parts_run_on_plans_that_reuse(monkeypatch):
    from fastcnn.runtime import batch_split
    monkeypatch.setattr(batch_split, "MIN_PART_FLOPS", 0)
    nodes, inits, out = residual_chain()
    m = ir_model(nodes, {"x": (None, 16, 128, 128)}, [out], inits, num_threads=2)
    x = rand(np.random.default_rng(7), 2, 16, 128, 128)
    got = m(x)
    singles = [p for k, pool in m._plans.items() if k[0] == "single" for p in pool]
    assert singles and all(p.arena_bytes == p.reused_bytes for p in singles)
    whole = m.plan_for([(1, 16, 128, 128)])
    assert whole.arena_bytes > whole.reused_bytes
    m1 = ir_model(nodes, {"x": (None, 16, 128, 128)}, [out], inits, num_threads=1)
    assert np.array_equal(got, np.concatenate([m1(x[:1]), m1(x[1:])]))


def test_scaled_weights_stay_only_where_a_step_reads_them():
    """Convs followed by BatchNormalization (weights scaled per output channel when packed,
    ir/weights.py): a conv whose kernel packs its weights (Winograd, tile, GEMM panels) keeps
    no scaled copy beside the packed one; a step that reads weights while it runs (a depthwise
    conv's) keeps one, the scaled weights. Outputs as without the passes, batch 1 and 4."""
    from fastcnn._kernels import conv as direct, conv_dw, conv_vec
    from fastcnn.runtime.plan import graph_nodes
    rng = np.random.default_rng(12)

    def bn(name, c):
        return {f"{name}_g": rand(rng, c, lo=0.5, hi=1.5), f"{name}_b": rand(rng, c),
                f"{name}_m": rand(rng, c), f"{name}_v": rand(rng, c, lo=0.2, hi=2.0)}

    nodes = [("Conv", ["x", "w1"], ["c1"], {"pads": [1, 1, 1, 1]}),
             ("BatchNormalization", ["c1", "a_g", "a_b", "a_m", "a_v"], ["n1"], {}),
             ("Relu", ["n1"], ["r1"], {}),
             ("Conv", ["r1", "wd"], ["c2"], {"pads": [1, 1, 1, 1], "group": 16}),
             ("BatchNormalization", ["c2", "d_g", "d_b", "d_m", "d_v"], ["n2"], {}),
             ("Conv", ["n2", "w3"], ["c3"], {}),
             ("BatchNormalization", ["c3", "p_g", "p_b", "p_m", "p_v"], ["y"], {})]
    inits = {"w1": rand(rng, 16, 16, 3, 3), "wd": rand(rng, 16, 1, 3, 3), "w3": rand(rng, 8, 16, 1, 1),
             **bn("a", 16), **bn("d", 16), **bn("p", 8)}
    for threads in (1, 2):
        model = ir_model(nodes, {"x": (None, 16, 12, 12)}, ["y"], inits, num_threads=threads)
        plain = ir_model(nodes, {"x": (None, 16, 12, 12)}, ["y"], inits, passes=False)
        for n in (1, 4):
            x = rand(rng, n, 16, 12, 12)
            assert_close(model.run(None, {"x": x})[0], plain.run(None, {"x": x})[0])
        convs = {nd.name: nd for nd in model.graph.nodes if nd.op == "Conv"}
        assert all(len(nd.attrs.get("weight_scale", ())) for nd in convs.values())
        readers = set()   # convs run by steps that read their weights while running
        for plans in model._plans.values():
            for plan in plans:
                for step, node in zip(plan.steps, plan.step_nodes):
                    if isinstance(step, (direct.ConvDirectStep, conv_vec.ConvVecStep,
                                         conv_dw.ConvDepthwiseStep)):
                        readers.update(nd.name for nd in graph_nodes(node))
        kept = {key[0] for key in model._cache if key[-1] == "w4"}
        assert kept == readers & set(convs)
        for name in kept:
            # numpy in the test: the weights as given times gamma / sqrt(var + eps) of the
            # conv's BatchNormalization, float64 products rounded once
            w_name, bn_name = {"conv0": ("w1", "a"), "conv3": ("wd", "d"), "conv5": ("w3", "p")}[name]
            w = inits[w_name].astype(np.float64)
            s = inits[f"{bn_name}_g"].astype(np.float64) / np.sqrt(inits[f"{bn_name}_v"].astype(np.float64) + 1e-5)
            want = (w * s[:, None, None, None]).astype(np.float32)
            assert np.array_equal(model._cache[(name, "w4")], want)
        assert kept, "the depthwise conv's step reads its weights while it runs"
        assert set(convs) - kept   # the 3x3 and the 1x1 conv pack theirs


def test_inputs_no_step_reads_take_no_arena_space():
    """An input no node reads, and one read only by a Shape the planner folds, are validated
    when fed but get no place in the arena: the arena is the used input's and the output's."""
    rng = np.random.default_rng(7)
    nodes = [("Shape", ["big"], ["s"], {}), ("Reshape", ["x", "s2"], ["flat"], {}),
             ("Sigmoid", ["flat"], ["y"], {}), ("Gather", ["s", "zero"], ["n"], {})]
    m = ir_model(nodes, {"x": (3, 4, 5), "big": (3, 1000, 64), "unused": (2, 4096, 16)}, ["y", "n"],
                 {"s2": np.array([3, 20], np.int64), "zero": np.array(0, np.int64)})
    plan = m.plan_for()
    assert plan.input_views["unused"] is None and plan.input_views["big"] is None
    used = 3 * 4 * 5 * 4
    assert plan.arena_bytes <= 2 * (used + 64) and plan.naive_bytes <= 3 * used   # x, its view, y
    x = rand(rng, 3, 4, 5)
    y, n = m.run(None, {"x": x, "big": rand(rng, 3, 1000, 64), "unused": rand(rng, 2, 4096, 16)})
    assert_close(y, 1 / (1 + np.exp(-x.reshape(3, 20).astype(np.float64))))
    assert int(n) == 3
    # still validated: a wrong shape for an input nothing reads is the caller's error
    from fastcnn.errors import InputError
    with pytest.raises(InputError, match="unused"):
        m.run(None, {"x": x, "big": rand(rng, 3, 1000, 64), "unused": rand(rng, 2, 4096, 15)})


def test_an_input_that_is_an_output_keeps_its_place():
    rng = np.random.default_rng(8)
    m = ir_model([("Relu", ["x"], ["y"], {})], {"x": (2, 3), "z": (4, 5)}, ["y", "z"])
    assert m.plan_for().input_views["z"] is not None
    x, z = rand(rng, 2, 3), rand(rng, 4, 5)
    y, z_out = m.run(None, {"x": x, "z": z})
    assert_close(y, np.maximum(x, 0))
    np.testing.assert_array_equal(z_out, z)

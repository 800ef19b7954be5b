"""A conv with the 2x2 stride-2 max pool after it run as one step (winograd.ConvWinogradStep
and conv_tile.ConvTileStep with pool_hw) against numpy and against the two steps it replaces,
and the planner's choice of the pairs it fuses (k_conv.fuse_conv_pool) through whole graphs."""
import numpy as np
import pytest

from act_reference import apply
from helpers import assert_close, ir_model, rand
from reference import conv2d, pool2d

from fastcnn._kernels import blocked as bk
from fastcnn._kernels import conv_tile as ct
from fastcnn._kernels import pool as pk
from fastcnn._kernels import winograd
from fastcnn._kernels.eltwise import ACT_CODES
from fastcnn.runtime import k_conv

RNG = np.random.default_rng(83)

# (n, c_in, c_out, h, w, pads (top, left, bottom, right), m)
CASES = [
    (1, 32, 64, 16, 16, (1, 1, 1, 1), 4),    # the edge CNN's block 2: one block of 16 tiles
    (1, 64, 128, 8, 8, (1, 1, 1, 1), 2),     # its block 3
    (2, 8, 13, 9, 11, (1, 1, 1, 1), 2),      # batch 2, odd sizes: the last row/column dropped
    (3, 5, 7, 7, 6, (1, 1, 1, 1), 4),        # tiles clipped at both edges, 3 images
    (1, 6, 12, 5, 9, (0, 0, 0, 0), 4),       # no padding: 3x7 conv output, pooled 1x3
    (1, 4, 6, 4, 4, (3, 2, 3, 2), 2),        # pads beyond the kernel: border rows of bias only
    (2, 16, 24, 30, 26, (1, 1, 1, 1), 4),    # many blocks (threads take whole blocks)
    (1, 3, 8, 2, 3, (1, 1, 1, 1), 2),        # the smallest: a 2x3 conv output, one pooled pixel
]
ACTS = [("Relu", 0.0, 0.0), ("", 0.0, 0.0), ("LeakyRelu", 0.1, 0.0), ("Clip", 0.0, 6.0),
        ("Sigmoid", 0.0, 0.0)]


def _conv_shape(case):
    n, c_in, c_out, h, w, p, m = case
    return n, c_out, h + p[0] + p[2] - 2, w + p[1] + p[3] - 2


def _data(case):
    n, c_in, c_out, h, w, p, m = case
    x = rand(RNG, n, c_in, h, w)
    wt = (rand(RNG, c_out, c_in, 3, 3) / np.sqrt(9 * c_in)).astype(np.float32)
    return x, wt, rand(RNG, c_out)


def _run(x, wt, b, case, act, threads, pool=True, out=None):
    """The Winograd step (pooled when `pool`) on NCHW arrays; returns its output."""
    n, c_in, c_out, h, w, p, m = case
    conv = _conv_shape(case)
    if out is None:
        shape = (n, c_out, conv[2] // 2, conv[3] // 2) if pool else conv
        out = np.full(shape, np.nan, np.float32)
    slots = max(1, threads)
    work = np.full(slots * winograd.winograd_scratch(m, c_in, c_out), np.nan, np.float32)
    step = winograd.ConvWinogradStep(x, winograd.winograd_weights(wt, m), b, None, out, p[:2], m,
                                     ACT_CODES[act[0]], act[1], act[2], work, slots, wt,
                                     conv[2:] if pool else None)
    step.num_threads = threads
    step()
    return out


def _pool_step(y):
    """pool.Pool2dStep's 2x2 stride-2 max pool of y: what the unfused plan runs."""
    n, c, h, w = y.shape
    out = np.empty((n, c, h // 2, w // 2), np.float32)
    pk.Pool2dStep(np.ascontiguousarray(y), out, pk.POOL_CODES["MaxPool"], (2, 2), (2, 2),
                  (0, 0, 0, 0), (1, 1))()
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[:5]}_p{c[5]}_F{c[6]}")
@pytest.mark.parametrize("act", ACTS, ids=lambda a: a[0] or "none")
def test_conv_pool_matches_numpy(case, act, threads):
    x, wt, b = _data(case)
    n, c_in, c_out, h, w, p, m = case
    ref = pool2d(apply(act[0], conv2d(x, wt, b, (1, 1), p), act[1], act[2]), "max", (2, 2))
    got = _run(x, wt, b, case, act, threads)
    assert got.shape == ref.shape
    assert_close(got, ref)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[:5]}_p{c[5]}_F{c[6]}")
@pytest.mark.parametrize("threads_", [1, 2, 3])
def test_conv_pool_bit_identical_to_the_two_steps(case, threads_):
    """The pooled step gives the bits of the conv step followed by the pool step (ReLU: many
    ties at zero), for any thread count (3 threads: blocks and phases split unevenly)."""
    x, wt, b = _data(case)
    act = ACTS[0]
    apart = _pool_step(_run(x, wt, b, case, act, threads_, pool=False))
    assert np.array_equal(_run(x, wt, b, case, act, threads_), apart)


@pytest.mark.parametrize("where", ["inf", "nan", "huge"])
def test_conv_pool_non_finite(where, threads):
    """Tiles with a NaN, an Inf or values that overflow the transforms take the scalar path
    (outputs recomputed directly): pooled, they match the two steps bit for bit, NaN included."""
    case = CASES[2]
    x, wt, b = _data(case)
    x[1, 3, 4, 5] = {"inf": np.inf, "nan": np.nan, "huge": 3e38}[where]
    for act in (ACTS[1], ACTS[4]):    # vector finish and scalar finish (Sigmoid)
        got = _run(x, wt, b, case, act, threads)
        apart = _pool_step(_run(x, wt, b, case, act, threads, pool=False))
        np.testing.assert_array_equal(got, apart)
        if act == ACTS[1] and where != "huge":
            assert not np.isfinite(got).all()


def test_conv_pool_validation():
    case = CASES[2]
    n, c_in, c_out, h, w, p, m = case
    x, wt, b = _data(case)
    conv = _conv_shape(case)
    up = winograd.winograd_weights(wt, m)
    pooled = np.zeros((n, c_out, conv[2] // 2, conv[3] // 2), np.float32)
    bad = [
        dict(out=np.zeros((n, c_out, conv[2] // 2 + 1, conv[3] // 2), np.float32)),  # rows
        dict(out=np.zeros((n, c_out, conv[2] // 2, conv[3] // 2 - 1), np.float32)),  # columns
        dict(out=np.zeros((n + 1, c_out, conv[2] // 2, conv[3] // 2), np.float32)),  # batch
        dict(residual=pooled.copy()),                                             # a residual
        dict(pool_hw=(1, conv[3])),                                               # < 2 rows
    ]
    for kw in bad:
        args = dict(out=pooled, residual=None, pool_hw=conv[2:])
        args.update(kw)
        with pytest.raises(ValueError):
            winograd.ConvWinogradStep(x, up, b, args["residual"], args["out"], p[:2], m, 0, 0.0,
                                      0.0, None, 1, wt, args["pool_hw"])


# ----------------------------------------------------------------------------- tile kernel
# (n, c_in, c_out, h, w, kernel, stride, pads (top, left, bottom, right))
TILE_CASES = [
    (1, 3, 32, 32, 32, 3, 1, (1, 1, 1, 1)),     # the edge CNN's block 1
    (2, 3, 16, 9, 11, 3, 1, (1, 1, 1, 1)),      # batch 2, odd sizes: last row/column dropped
    (3, 5, 48, 13, 10, 5, 2, (2, 2, 2, 2)),     # 3 images, stride 2, 5x5, three panels
    (1, 4, 16, 7, 8, 3, 1, (0, 0, 0, 0)),       # no padding read: no padded copy
    (1, 2, 16, 6, 5, 3, 3, (1, 2, 1, 2)),       # stride > kernel, asymmetric
    (1, 3, 16, 4, 4, 3, 1, (4, 3, 4, 3)),       # pads beyond the kernel: rows of bias only
    (1, 3, 32, 2, 2, 1, 1, (0, 0, 0, 0)),       # a 2x2 output: one pooled pixel
    (2, 8, 32, 20, 35, 3, 1, (1, 1, 1, 1)),     # rows of 35: 5 tiles and a 5-pixel one
]


def _tile_conv_shape(case):
    n, c_in, c_out, h, w, k, s, p = case
    return n, c_out, (h + p[0] + p[2] - k) // s + 1, (w + p[1] + p[3] - k) // s + 1


def _tile_data(case):
    n, c_in, c_out, h, w, k, s, p = case
    x = rand(RNG, n, c_in, h, w)
    wt = (rand(RNG, c_out, c_in, k, k) / np.sqrt(k * k * c_in)).astype(np.float32)
    return x, wt, rand(RNG, c_out)


def _tile_run(x, wt, b, case, act, threads, pool=True, channels_last=None):
    """ConvTileStep pooled (NCHW output) or, without pool, storing blocked; returns NCHW.
    channels_last: None for the planner's rule (conv_tile.tile_channels_last)."""
    n, c_in, c_out, h, w, k, s, p = case
    conv = _tile_conv_shape(case)
    if channels_last is None:
        channels_last = ct.tile_channels_last(x.shape, wt.shape, conv, (s, s), p[:2], (1, 1))
    slots = max(1, threads)
    size = ct.tile_scratch(x.shape, wt.shape, conv, (s, s), p[:2], (1, 1), pool)
    out = np.full((n, c_out, conv[2] // 2, conv[3] // 2) if pool else conv, np.nan, np.float32)
    step = ct.ConvTileStep(x, ct.pack_tile_weights(wt, None, channels_last), b, None, out,
                           (s, s), p[:2], (1, 1), k, k, ACT_CODES[act[0]], act[1], act[2],
                           np.full(size * slots, np.nan, np.float32) if size else None, slots,
                           not pool, False, conv[2:] if pool else None,
                           channels_last=channels_last)
    step.num_threads = threads
    step()
    return out


@pytest.mark.parametrize("case", TILE_CASES, ids=lambda c: f"{c[:5]}_k{c[5]}_s{c[6]}_p{c[7]}")
@pytest.mark.parametrize("act", ACTS, ids=lambda a: a[0] or "none")
def test_tile_conv_pool_matches_numpy(case, act, threads):
    x, wt, b = _tile_data(case)
    n, c_in, c_out, h, w, k, s, p = case
    ref = pool2d(apply(act[0], conv2d(x, wt, b, (s, s), p), act[1], act[2]), "max", (2, 2))
    got = _tile_run(x, wt, b, case, act, threads)
    assert got.shape == ref.shape
    assert_close(got, ref)
    if c_in >= 8 and any(p):   # the planes too, where the rule picks the channels-last copy
        assert_close(_tile_run(x, wt, b, case, act, threads, channels_last=False), ref)


def _tile_apart(x, wt, b, case, act, threads):
    """The conv storing blocked, then blocked.MaxPoolBlockedStep to NCHW: the unfused plan."""
    blocked_y = _tile_run(x, wt, b, case, act, threads, pool=False)
    n, c, h, w = blocked_y.shape
    out = np.full((n, c, h // 2, w // 2), np.nan, np.float32)
    step = bk.MaxPoolBlockedStep(blocked_y.reshape(-1), out.reshape(-1), blocked_y.shape,
                                 out.shape, (2, 2), (2, 2), (0, 0), (1, 1), False)
    step.num_threads = threads
    step()
    return out


@pytest.mark.parametrize("case", TILE_CASES, ids=lambda c: f"{c[:5]}_k{c[5]}_s{c[6]}_p{c[7]}")
@pytest.mark.parametrize("threads_", [1, 2, 3])
def test_tile_conv_pool_bit_identical_to_the_two_steps(case, threads_):
    x, wt, b = _tile_data(case)
    assert np.array_equal(_tile_run(x, wt, b, case, ACTS[0], threads_),
                          _tile_apart(x, wt, b, case, ACTS[0], threads_))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_tile_conv_pool_non_finite(value, threads):
    """A NaN or an Inf in the input reaches the pooled windows it touches, as in the two steps."""
    case = TILE_CASES[1]
    x, wt, b = _tile_data(case)
    x[1, 2, 4, 5] = value
    got = _tile_run(x, wt, b, case, ACTS[1], threads)
    np.testing.assert_array_equal(got, _tile_apart(x, wt, b, case, ACTS[1], threads))
    assert not np.isfinite(got).all()


def test_tile_conv_pool_validation():
    case = TILE_CASES[1]
    n, c_in, c_out, h, w, k, s, p = case
    x, wt, b = _tile_data(case)
    conv = _tile_conv_shape(case)
    pooled = np.zeros((n, c_out, conv[2] // 2, conv[3] // 2), np.float32)
    wp = ct.pack_tile_weights(wt)
    bad = [
        dict(out=np.zeros((n, c_out, conv[2] // 2 + 1, conv[3] // 2), np.float32)),
        dict(out=np.zeros((n, c_out, conv[2] // 2, conv[3] // 2 + 1), np.float32)),
        dict(residual=pooled.copy()),
        dict(blocked_out=True),
        dict(pool_hw=(conv[2], 1)),
    ]
    for kw in bad:
        a = dict(out=pooled, residual=None, blocked_out=False, pool_hw=conv[2:])
        a.update(kw)
        with pytest.raises(ValueError):
            ct.ConvTileStep(x, wp, b, a["residual"], a["out"], (s, s), p[:2], (1, 1), k, k, 0,
                            0.0, 0.0, None, 1, a["blocked_out"], False, a["pool_hw"])
    # 24 channels: a last panel of 8 (12x8 tiles) is not pooled
    w24 = rand(RNG, 24, c_in, k, k)
    with pytest.raises(ValueError):
        ct.ConvTileStep(x, ct.pack_tile_weights(w24), None, None,
                        np.zeros((n, 24, conv[2] // 2, conv[3] // 2), np.float32), (s, s),
                        p[:2], (1, 1), k, k, 0, 0.0, 0.0, None, 1, False, False, conv[2:])


# ----------------------------------------------------------------------------- planner
def _edge_block(pool=None, conv=None, extra=(), c_mid=32, c_in=16):
    """x (c_in channels) -> conv 3x3 (Relu; Winograd with 16 input channels, the tile kernel
    storing blocked with 3) to c_mid channels -> MaxPool 2x2 s2 -> conv 3x3 (Relu) -> GAP:
    `pool` / `conv` attributes override the first pool's / conv's; `extra` nodes are appended."""
    rng = np.random.default_rng(5)
    consts = {"w1": (rng.standard_normal((c_mid, c_in, 3, 3)) / np.sqrt(9 * c_in)).astype(np.float32),
              "b1": rand(rng, c_mid),
              "w2": (rng.standard_normal((16, c_mid, 3, 3)) / 17).astype(np.float32)}
    c_attrs = dict(pads=[1, 1, 1, 1], activation="Relu")
    c_attrs.update(conv or {})
    p_attrs = dict(kernel_shape=[2, 2], strides=[2, 2])
    p_attrs.update(pool or {})
    nodes = [("Conv", ["x", "w1", "b1"], ["c"], c_attrs),
             ("MaxPool", ["c"], ["p"], p_attrs),
             ("Conv", ["p", "w2"], ["d"], dict(pads=[1, 1, 1, 1], activation="Relu")),
             ("GlobalAveragePool", ["d"], ["y"], {})] + list(extra)
    return nodes, consts


def _fused(model, shape):
    return [n.name for n in model.plan_for([shape]).step_nodes if isinstance(n, k_conv.ConvPoolNode)]


def _numpy_block(x, c, p_attrs=None):
    y = np.maximum(conv2d(x, c["w1"], c["b1"], (1, 1), (1, 1, 1, 1)), 0)
    p = pool2d(y, "max", (2, 2))
    return np.maximum(conv2d(p, c["w2"], None, (1, 1), (1, 1, 1, 1)), 0).mean(axis=(2, 3),
                                                                          keepdims=True)


@pytest.mark.parametrize("batch,size", [(1, 16), (3, 17), (2, 30)])
def test_planner_fuses_conv_and_pool(monkeypatch, batch, size, threads):
    """The conv + pool pair runs as one step; the conv's output is gone from the plan; the bits
    are those of the plan with the fusion off, and the numpy reference holds (a strided input
    view too)."""
    nodes, consts = _edge_block()
    big = rand(RNG, batch, 16, size, 2 * size)
    x = big[:, :, :, ::2]
    model = ir_model(nodes, {"x": x.shape}, ["y"], consts, num_threads=threads, split_batch=False)
    plan = model.plan_for([x.shape])
    assert _fused(model, x.shape) == ["conv0+maxpool1"]
    assert "c" not in {o for n in plan.step_nodes for o in n.outputs}
    assert [s.pool for s in plan.steps if type(s).__name__ == "ConvWinogradStep"][0]
    got = model.run(None, {"x": x})[0]
    assert_close(got, _numpy_block(x, consts))
    monkeypatch.setattr(k_conv, "FUSE_CONV_POOL", False)
    apart = ir_model(nodes, {"x": x.shape}, ["y"], consts, num_threads=threads, split_batch=False)
    assert not _fused(apart, x.shape)
    assert np.array_equal(apart.run(None, {"x": x})[0], got)


def test_info_lists_the_fused_conv_and_pool_as_kernels(tmp_path, capsys):
    """`fastcnn info` marks the conv and the pool of a fused node as run by a kernel."""
    import re
    from fastcnn import cli
    nodes, consts = _edge_block()
    model = ir_model(nodes, {"x": (1, 16, 16, 16)}, ["y"], consts)
    assert _fused(model, (1, 16, 16, 16))
    model.save(tmp_path / "m.fcnn")
    assert cli.main(["info", str(tmp_path / "m.fcnn")]) == 0
    rows = re.findall(r"^\s+\d+\s+(\S+)\s+(\w+)\s+\[[^\]]*\]\s+(kernel|view|folded)$",
                      capsys.readouterr().out, re.M)
    assert [(op, how) for _, op, how in rows if op in ("Conv", "MaxPool")] == [
        ("Conv", "kernel"), ("MaxPool", "kernel"), ("Conv", "kernel")]


@pytest.mark.parametrize("why", ["two readers", "graph output", "1x1 window", "stride 1",
                                 "stride 3", "dilation", "padding", "ceil mode", "strided conv",
                                 "conv residual", "average pool"])
def test_planner_leaves_other_pairs_apart(why):
    """Pairs that do not qualify keep their two steps, and compute what numpy does. Sizes are
    chosen so that the pool's output has half the conv's rows and columns (as a fused one
    would) whenever the pool's attributes allow it: each case fails one rule alone."""
    kw, outputs, size = {}, ["y"], 16
    if why == "two readers":
        kw["extra"] = [("GlobalAveragePool", ["c"], ["cg"], {})]
        outputs = ["y", "cg"]
    elif why == "graph output":
        outputs = ["y", "c"]
    elif why == "1x1 window":
        kw["pool"] = dict(kernel_shape=[1, 1])
    elif why == "stride 1":
        kw["pool"] = dict(strides=[1, 1])
    elif why == "stride 3":     # 30x5 -> 15x2, windows at columns 0 and 3
        kw["pool"], size = dict(strides=[2, 3]), (30, 5)
    elif why == "dilation":     # 17x17 -> 8x8
        kw["pool"], size = dict(dilations=[2, 2]), 17
    elif why == "padding":
        kw["pool"] = dict(pads=[0, 0, 1, 1])
    elif why == "ceil mode":
        kw["pool"], size = dict(ceil_mode=1), 15
    elif why == "strided conv":  # not Winograd; 12 channels: its output stays NCHW
        kw["conv"], kw["c_mid"] = dict(strides=[2, 2]), 12
    nodes, consts = _edge_block(**kw)
    if why == "average pool":
        nodes[1] = ("AveragePool", ["c"], ["p"], dict(kernel_shape=[2, 2], strides=[2, 2]))
    elif why == "conv residual":
        consts["wr"] = consts["w1"][:, :, 1:2, 1:2].copy()
        nodes[0:1] = [("Conv", ["x", "wr"], ["r"], {}),
                      ("Conv", ["x", "w1", "b1"], ["pre"], dict(pads=[1, 1, 1, 1])),
                      ("Add", ["pre", "r"], ["sum"], {}), ("Relu", ["sum"], ["c"], {})]
    x = rand(RNG, 1, 16, *(size if isinstance(size, tuple) else (size, size)))
    model = ir_model(nodes, {"x": x.shape}, outputs, consts)
    if why == "conv residual":
        assert any(len(n.inputs) > 3 and n.inputs[3] for n in model.graph.nodes)
    assert not _fused(model, x.shape)
    c = consts
    conv = kw.get("conv", {})
    y = conv2d(x, c["w1"], c["b1"], tuple(conv.get("strides", (1, 1))), (1, 1, 1, 1))
    if why == "conv residual":
        y = y + conv2d(x, c["wr"])
    y = np.maximum(y, 0)
    pa = dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0], ceil_mode=0,
              dilations=[1, 1])
    pa.update(kw.get("pool", {}))
    p = pool2d(y, "avg" if why == "average pool" else "max", tuple(pa["kernel_shape"]),
               tuple(pa["strides"]), (pa["pads"][0], pa["pads"][1], pa["pads"][2], pa["pads"][3]),
               tuple(pa["dilations"]), ceil_mode=bool(pa["ceil_mode"]))
    ref = np.maximum(conv2d(p, c["w2"], None, (1, 1), (1, 1, 1, 1)), 0).mean(axis=(2, 3),
                                                                         keepdims=True)
    got = model.run(None, {"x": x})
    assert_close(got[0], ref)
    if why == "graph output":
        assert_close(got[1], y)


def test_planner_pool_after_a_fused_expand_depthwise():
    """A max pool reading the output of a fused expand + depthwise node (blocked, no plain
    conv) is left alone, and the plan computes what numpy does."""
    rng = np.random.default_rng(8)
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)
    c = {"ws": w(16, 3, 3, 3), "we": w(32, 16, 1, 1), "wd": w(32, 1, 3, 3)}
    nodes = [("Conv", ["x", "ws"], ["s"], dict(pads=[1, 1, 1, 1], strides=[2, 2], activation="Relu")),
             ("Conv", ["s", "we"], ["e"], dict(activation="Relu")),
             ("Conv", ["e", "wd"], ["d"], dict(pads=[1, 1, 1, 1], group=32, activation="Relu")),
             ("MaxPool", ["d"], ["p"], dict(kernel_shape=[2, 2], strides=[2, 2])),
             ("GlobalAveragePool", ["p"], ["y"], {})]
    x = rand(RNG, 1, 3, 56, 60)
    model = ir_model(nodes, {"x": x.shape}, ["y"], c)
    planned = model.plan_for([x.shape]).step_nodes
    assert any(isinstance(n, k_conv.ExpandDepthwiseNode) for n in planned)
    assert not _fused(model, x.shape)
    s = np.maximum(conv2d(x, c["ws"], None, (2, 2), (1, 1, 1, 1)), 0)
    e = np.maximum(conv2d(s, c["we"]), 0)
    d = np.maximum(conv2d(e, c["wd"], None, (1, 1), (1, 1, 1, 1), (1, 1), 32), 0)
    assert_close(model.run(None, {"x": x})[0], pool2d(d, "max", (2, 2)).mean(axis=(2, 3), keepdims=True))


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (2, 3, 17, 20), (3, 3, 9, 30)])
def test_planner_fuses_tile_conv_and_pool(monkeypatch, shape, threads):
    """A 3-channel conv that stores blocked for its max pool (the tile kernel) runs with the
    pool as one step: the bits of the plan with the fusion off, and the numpy reference."""
    nodes, consts = _edge_block(c_in=3)
    x = rand(RNG, *shape)
    model = ir_model(nodes, {"x": x.shape}, ["y"], consts, num_threads=threads, split_batch=False)
    plan = model.plan_for([x.shape])
    assert _fused(model, x.shape) == ["conv0+maxpool1"]
    assert [s.pool for s in plan.steps if type(s).__name__ == "ConvTileStep"] == [True]
    got = model.run(None, {"x": x})[0]
    assert_close(got, _numpy_block(x, consts))
    monkeypatch.setattr(k_conv, "FUSE_CONV_POOL", False)
    apart = ir_model(nodes, {"x": x.shape}, ["y"], consts, num_threads=threads, split_batch=False)
    assert "MaxPoolBlockedStep" in {type(s).__name__ for s in apart.plan_for([x.shape]).steps}
    assert np.array_equal(apart.run(None, {"x": x})[0], got)


@pytest.mark.parametrize("why", ["24 channels", "blocked pool output", "blocked conv input",
                                 "long reduction", "grouped conv"])
def test_planner_leaves_other_blocked_pairs_apart(why):
    """Convs storing blocked for their pool that the pooled tile step does not run (each fails
    one rule of _nchw_conv_kind or fuse_conv_pool) keep their two steps, with numpy's results."""
    kw, shape, tail = dict(c_in=3), (1, 3, 16, 16), None
    if why == "24 channels":
        kw["c_mid"] = 24
    elif why == "long reduction":      # K = 520 * 9 > TILE_MAX_K: the GEMM kernel stores blocked
        kw["c_in"], kw["conv"], shape = 520, dict(strides=[2, 2]), (1, 520, 12, 12)
    elif why == "grouped conv":
        kw["c_in"], kw["conv"], shape = 4, dict(group=2), (1, 4, 16, 16)
    nodes, consts = _edge_block(**kw)
    if why == "grouped conv":
        consts["w1"] = consts["w1"][:, :2].copy()
    if why == "blocked pool output":   # a 1x1 conv (blocked kernel) reads the pool
        consts["w2"] = consts["w2"][:, :, 1:2, 1:2].copy()
        nodes[2] = ("Conv", ["p", "w2"], ["d"], dict(activation="Relu"))
    if why == "blocked conv input":    # a stem storing blocked for a 1x1 conv, which pools
        consts["w0"] = rand(RNG, 16, 3, 3, 3)
        consts["w1"] = consts["w1"][:, :, 1:2, 1:2].repeat(6, axis=1)[:, :16].copy()
        nodes = [("Conv", ["x", "w0"], ["s"], dict(pads=[1, 1, 1, 1], activation="Relu")),
                 ("Conv", ["s", "w1", "b1"], ["c"], dict(activation="Relu"))] + nodes[1:]
    x = rand(RNG, *shape)
    model = ir_model(nodes, {"x": x.shape}, ["y"], consts)
    plan = model.plan_for([x.shape])
    assert "c" in plan.blocked
    assert not _fused(model, x.shape)
    c = consts
    if why == "blocked conv input":
        s = np.maximum(conv2d(x, c["w0"], None, (1, 1), (1, 1, 1, 1)), 0)
        y = np.maximum(conv2d(s, c["w1"], c["b1"]), 0)
    else:
        stride = (2, 2) if why == "long reduction" else (1, 1)
        y = np.maximum(conv2d(x, c["w1"], c["b1"], stride, (1, 1, 1, 1), (1, 1),
                              2 if why == "grouped conv" else 1), 0)
    p = pool2d(y, "max", (2, 2))
    pad = (0, 0, 0, 0) if why == "blocked pool output" else (1, 1, 1, 1)
    ref = np.maximum(conv2d(p, c["w2"], None, (1, 1), pad), 0).mean(axis=(2, 3), keepdims=True)
    assert_close(model.run(None, {"x": x})[0], ref)

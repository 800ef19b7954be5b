"""Layout and data movement: Concat, Flatten, Reshape, Transpose, Squeeze/Unsqueeze, Pad, Identity/
Dropout, Split, Slice, Expand, Tile, Gather, DepthToSpace/SpaceToDepth, against numpy references
and onnxruntime (several opsets where the ONNX form changed)."""
import numpy as np
import pytest

import fastcnn
from helpers import assert_close, ir_model, rand
from oputil import node, onnx_vs_ort, run_op
from reference import depth_to_space, onnx_slice, pad, space_to_depth

RNG = np.random.default_rng(31)
I64 = np.int64


def x4(*shape):
    shape = shape or (3, 13, 3, 5)
    return rand(RNG, *shape)


# ---------------------------------------------------------------------- Concat
@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -3])
def test_concat(axis, threads, layout):
    base = [3, 13, 3, 5]
    shapes = []
    for k in (2, 1, 4):
        s = list(base)
        s[axis % 4] = k
        shapes.append(tuple(s))
    xs = {f"x{i}": rand(RNG, *s) for i, s in enumerate(shapes)}
    got = run_op("Concat", xs, {"axis": axis}, threads=threads, layout=layout)[0]
    assert_close(got, np.concatenate(list(xs.values()), axis=axis))


def test_concat_with_constant_and_empty_inputs():
    a = x4()
    c = rand(RNG, 3, 2, 3, 5)
    e = np.zeros((3, 0, 3, 5), np.float32)
    got = run_op("Concat", {"a": a}, {"axis": 1}, consts={"c": c, "e": e}, order=["c", "a", "e"])[0]
    assert_close(got, np.concatenate([c, a], axis=1))
    got, ref = onnx_vs_ort(node("Concat", ["c", "a"], axis=1), {"a": a}, {"c": c}, opset=13)
    assert_close(got[0], ref[0])


def test_concat_mismatch_is_refused():
    with pytest.raises(fastcnn.GraphError, match=r"input 'b' shape \[3, 13, 4, 5\] does not match \[3, 13, 3, 5\] except on axis 1"):
        run_op("Concat", {"a": x4(), "b": x4(3, 13, 4, 5)}, {"axis": 1})


# ---------------------------------------------------------------------- Flatten / Reshape
@pytest.mark.parametrize("axis", [0, 1, 2, 3, 4, -1, -4])
def test_flatten(axis):
    x = x4()
    a = axis % 5 if axis >= 0 else axis + 4
    got = run_op("Flatten", {"x": x}, {"axis": axis})[0]
    assert got.shape == (int(np.prod(x.shape[:a])), int(np.prod(x.shape[a:])))
    assert_close(got, x.reshape(got.shape))
    got, ref = onnx_vs_ort(node("Flatten", ["x"], axis=axis), {"x": x}, opset=13)
    assert_close(got[0], ref[0])


@pytest.mark.parametrize("shape,expect", [([0, 0, -1], (3, 13, 15)), ([-1], (585,)), ([3, -1, 5], (3, 39, 5)),
                                          ([0, 195], (3, 195)), ([-1, 0, 1, 3, 5], (1, 13, 1, 3, 5))])
def test_reshape(shape, expect, layout):
    x = x4()
    if shape[0] == -1 and len(shape) == 5:
        x = x4(3, 13, 3, 5)
        expect = (3, 13, 1, 3, 5)
    got = run_op("Reshape", {"x": x}, consts={"s": np.array(shape, I64)}, layout=layout)[0]
    assert got.shape == expect
    assert_close(got, x.reshape(expect))


def test_reshape_allowzero():
    x = np.zeros((0, 4), np.float32)
    from fastcnn.ir.graph import Graph, Node, TensorSpec
    from fastcnn.ir.infer import infer_graph
    from fastcnn.ir.graph import ValueType
    g = Graph("t", [], [TensorSpec("y", ())], [Node("Reshape", "r", ["x", "s"], ["y"], {"allowzero": 1})],
              {"x": x, "s": np.array([4, 0], I64)})
    assert infer_graph(g, {}).types["y"].shape == (4, 0)
    g.nodes[0].attrs["allowzero"] = 0   # 0 copies the input dim: [4, 4] != 0 elements
    with pytest.raises(fastcnn.GraphError, match=r"cannot reshape \[0, 4\]"):
        infer_graph(g, {})


def test_reshape_opset5_and_opset14_vs_onnxruntime():
    x = x4()
    for opset in (5, 13, 14):
        got, ref = onnx_vs_ort(node("Reshape", ["x", "s"]), {"x": x}, {"s": np.array([0, -1, 5], I64)}, opset=opset)
        assert_close(got[0], ref[0], f"opset {opset}")


@pytest.mark.parametrize("shape,match", [([7, -1], r"cannot reshape \[3, 13, 3, 5\] \(585 elements\) to \[7, -1\]"),
                                         ([-1, -1], r"has more than one -1"),
                                         ([2, 2], r"to \[2, 2\] \(4 elements\)"),
                                         ([-2, 3], r"invalid dim -2")])
def test_reshape_errors(shape, match):
    with pytest.raises(fastcnn.GraphError, match=r"node 'reshape0' \(Reshape\): .*" + match):
        run_op("Reshape", {"x": x4()}, consts={"s": np.array(shape, I64)})


# ---------------------------------------------------------------------- Transpose
@pytest.mark.parametrize("perm", [None, [0, 2, 3, 1], [0, 3, 1, 2], [1, 0, 2, 3], [3, 2, 1, 0], [0, 1, 2, 3]])
def test_transpose(perm, threads, layout):
    x = x4(3, 13, 33, 35) if perm == [0, 2, 3, 1] else x4()
    attrs = {} if perm is None else {"perm": perm}
    got = run_op("Transpose", {"x": x}, attrs, threads=threads, layout=layout)[0]
    assert_close(got, np.transpose(x, perm))
    got, ref = onnx_vs_ort(node("Transpose", ["x"], **attrs), {"x": x}, opset=13)
    assert_close(got[0], ref[0])


def test_transpose_six_dims():
    x = rand(RNG, 2, 3, 1, 4, 2, 3)
    got = run_op("Transpose", {"x": x}, {"perm": [5, 3, 0, 2, 4, 1]})[0]
    assert_close(got, np.transpose(x, [5, 3, 0, 2, 4, 1]))


@pytest.mark.parametrize("perm", [[0, 1, 2], [0, 1, 2, 2], [0, 1, 2, 4]])
def test_bad_perm_is_refused(perm):
    with pytest.raises(fastcnn.GraphError, match=rf"node 'transpose0' \(Transpose\): perm {perm} is not a permutation".replace("[", r"\[").replace("]", r"\]")):
        run_op("Transpose", {"x": x4()}, {"perm": perm})


# ---------------------------------------------------------------------- Squeeze / Unsqueeze
def test_squeeze_unsqueeze():
    x = x4(3, 1, 5, 1)
    assert run_op("Squeeze", {"x": x})[0].shape == (3, 5)
    assert run_op("Squeeze", {"x": x}, consts={"a": np.array([-1], I64)})[0].shape == (3, 1, 5)
    got = run_op("Unsqueeze", {"x": x}, consts={"a": np.array([0, -1, 3], I64)})[0]
    assert got.shape == (1, 3, 1, 1, 5, 1, 1)
    assert_close(got.reshape(-1), x.reshape(-1))
    for opset in (11, 13):
        if opset == 11:
            n1, n2, inits = node("Squeeze", ["x"], axes=[1]), node("Unsqueeze", ["x"], axes=[0, 4]), {}
        else:
            n1, n2 = node("Squeeze", ["x", "a"]), node("Unsqueeze", ["x", "b"])
            inits = {"a": np.array([1], I64), "b": np.array([0, 4], I64)}
        for n in (n1, n2):
            ins = {k: v for k, v in inits.items() if k in n.input}
            got, ref = onnx_vs_ort(n, {"x": x}, ins, opset=opset)
            assert got[0].shape == ref[0].shape
            assert_close(got[0], ref[0])


def test_squeeze_errors():
    with pytest.raises(fastcnn.GraphError, match=r"cannot squeeze axis 2 of shape \[3, 1, 5, 1\]: its size is not 1"):
        run_op("Squeeze", {"x": x4(3, 1, 5, 1)}, consts={"a": np.array([2], I64)})
    with pytest.raises(fastcnn.GraphError, match=r"axes=4 is out of range for rank 4"):
        run_op("Squeeze", {"x": x4(3, 1, 5, 1)}, consts={"a": np.array([4], I64)})
    with pytest.raises(fastcnn.GraphError, match=r"axes \[0, 0\] repeat an axis"):
        run_op("Unsqueeze", {"x": x4()}, consts={"a": np.array([0, 0], I64)})


# ---------------------------------------------------------------------- Identity / Dropout
def test_identity_and_dropout_are_removed():
    x = x4()
    m = ir_model([("Identity", ["x"], ["a"]), ("Dropout", ["a"], ["b"]), ("Relu", ["b"], ["y"])],
                 {"x": x.shape}, ["y"])
    assert [n.op for n in m.graph.nodes] == ["Relu"]
    assert_close(m.run(None, {"x": x})[0], np.maximum(x, 0))
    m = ir_model([("Identity", ["x"], ["y"])], {"x": x.shape}, ["y"], passes=False)
    assert_close(m.run(None, {"x": x})[0], x)


# ---------------------------------------------------------------------- Pad
PAD_CASES = [
    [0, 0, 1, 2, 0, 0, 2, 1],
    [0, 1, 2, 0, 1, 0, 0, 3],
    [0, 0, -1, 2, 0, 0, 1, -2],     # negative pads crop
    [1, 0, 0, 0, 0, 2, 0, 0],
    [0, 0, 0, 0, 0, 0, 0, 0],
]


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", PAD_CASES, ids=lambda p: "_".join(map(str, p)))
def test_pad(mode, pads, threads):
    x = x4()
    consts = {"p": np.array(pads, I64)}
    order = ["x", "p"]
    if mode == "constant":
        consts["v"] = np.array(1.5, np.float32)
        order.append("v")
    got = run_op("Pad", {"x": x}, {"mode": mode}, consts=consts, order=order, threads=threads)[0]
    assert_close(got, pad(x, pads, mode, 1.5))


@pytest.mark.parametrize("mode", ["edge", "wrap"])
def test_pad_wider_than_input(mode, layout):
    x = x4(2, 3, 2, 3)
    pads = [0, 0, 5, 7, 0, 0, 4, 8]
    got = run_op("Pad", {"x": x}, {"mode": mode}, consts={"p": np.array(pads, I64)}, layout=layout)[0]
    assert_close(got, pad(x, pads, mode))


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_vs_onnxruntime_opsets(mode):
    x = x4()
    pads = [0, 0, 1, 2, 0, 0, 2, 1]
    for opset in (2, 11, 18, 19):
        if mode == "wrap" and opset < 19:
            continue
        if opset == 2:
            n, inits = node("Pad", ["x"], mode=mode, pads=pads), {}
        elif opset == 18:   # axes input
            n = node("Pad", ["x", "p", "", "a"], mode=mode)
            inits = {"p": np.array([1, 2, 2, 1], I64), "a": np.array([2, -1], I64)}
        else:
            n, inits = node("Pad", ["x", "p"], mode=mode), {"p": np.array(pads, I64)}
        got, ref = onnx_vs_ort(n, {"x": x}, inits, opset=opset)
        assert_close(got[0], ref[0], f"{mode} opset {opset}")


def test_pad_errors():
    with pytest.raises(fastcnn.GraphError, match=r"reflect padding 3,0 on axis 2 must be smaller than the axis \(size 3\)"):
        run_op("Pad", {"x": x4()}, {"mode": "reflect"}, consts={"p": np.array([0, 0, 3, 0, 0, 0, 0, 0], I64)})
    with pytest.raises(fastcnn.GraphError, match=r"pads \[0, 0, 1\] must have 8 values"):
        run_op("Pad", {"x": x4()}, consts={"p": np.array([0, 0, 1], I64)})
    with pytest.raises(fastcnn.GraphError, match=r"mode must be constant, reflect, edge or wrap, got 'mirror'"):
        run_op("Pad", {"x": x4()}, {"mode": "mirror"}, consts={"p": np.zeros(8, I64)})
    with pytest.raises(fastcnn.GraphError, match=r"axis 2 of size 3 would get -1 elements"):
        run_op("Pad", {"x": x4()}, consts={"p": np.array([0, 0, -2, 0, 0, 0, -2, 0], I64)})
    with pytest.raises(fastcnn.GraphError, match=r"edge padding of axis 2, which is empty"):
        run_op("Pad", {"x": x4()}, {"mode": "edge"}, consts={"p": np.array([0, 0, -3, 0, 0, 0, 1, 0], I64)})


# ---------------------------------------------------------------------- Split
@pytest.mark.parametrize("axis,sizes", [(1, [3, 10]), (1, [13]), (3, [1, 1, 3]), (-2, [1, 0, 2]), (0, None)])
def test_split(axis, sizes, threads):
    x = x4()
    n = len(sizes) if sizes else 3
    outs = [f"y{i}" for i in range(n)]
    consts = {"s": np.array(sizes, I64)} if sizes else {}
    got = run_op("Split", {"x": x}, {"axis": axis}, consts=consts, outputs=outs, threads=threads)
    ref = np.split(x, np.cumsum(sizes)[:-1] if sizes else 3, axis=axis)
    for g, r in zip(got, ref):
        assert_close(g, r)


def test_split_num_outputs_uneven_and_opsets():
    x = x4()
    got = run_op("Split", {"x": x}, {"axis": 1, "num_outputs": 4}, outputs=["a", "b", "c", "d"])
    assert [g.shape[1] for g in got] == [4, 4, 4, 1]
    assert_close(np.concatenate(got, axis=1), x)
    for opset, n, inits in [(11, node("Split", ["x"], ["a", "b"], axis=1, split=[5, 8]), {}),
                            (13, node("Split", ["x", "s"], ["a", "b"], axis=1), {"s": np.array([5, 8], I64)}),
                            (18, node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2), {})]:
        got, ref = onnx_vs_ort(n, {"x": x}, inits, opset=opset, outputs=("a", "b"))
        for g, r in zip(got, ref):
            assert_close(g, r, f"opset {opset}")


def test_split_errors():
    with pytest.raises(fastcnn.GraphError, match=r"split \[3, 9\] must have 2 non-negative sizes summing to 13"):
        run_op("Split", {"x": x4()}, {"axis": 1}, consts={"s": np.array([3, 9], I64)}, outputs=["a", "b"])
    with pytest.raises(fastcnn.GraphError, match=r"axis 1 of size 13 does not split evenly into 2 outputs"):
        run_op("Split", {"x": x4()}, {"axis": 1}, outputs=["a", "b"])


# ---------------------------------------------------------------------- Slice
SLICES = [
    ([0], [2], [1], [1]),
    ([1, -1], [100, -100], [1, 3], [2, -1]),        # clamping, negative step
    ([-1], [-2 ** 63], [2], [-1]),                   # reverse the whole axis
    ([12, 4], [0, 1], [1, -1], [-3, -2]),
    ([2 ** 62], [2 ** 63 - 1], [0], [1]),            # empty
    ([0, 0, 0, 0], [3, 13, 3, 5], [0, 1, 2, 3], [2, 5, 2, 4]),
]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICES)
def test_slice(starts, ends, axes, steps, threads, layout):
    x = x4()
    consts = {"s": np.array(starts, I64), "e": np.array(ends, I64), "a": np.array(axes, I64),
              "t": np.array(steps, I64)}
    ref = onnx_slice(x, starts, ends, axes, steps)
    if ref.size == 0:
        from fastcnn.ir.infer import infer_graph
        from fastcnn.ir.graph import Graph, Node, TensorSpec, ValueType
        g = Graph("t", [TensorSpec("x", x.shape)], [TensorSpec("y", ())],
                  [Node("Slice", "s0", ["x", "s", "e", "a", "t"], ["y"])], consts)
        assert infer_graph(g, {"x": ValueType(x.shape, "float32")}).types["y"].shape == ref.shape
        return
    got = run_op("Slice", {"x": x}, consts=consts, threads=threads, layout=layout)[0]
    assert_close(got, ref)
    got, ort = onnx_vs_ort(node("Slice", ["x", "s", "e", "a", "t"]), {"x": x}, consts, opset=13)
    assert_close(got[0], ort[0])


def test_slice_opset1_attributes_vs_onnxruntime():
    x = x4()
    got, ref = onnx_vs_ort(node("Slice", ["x"], starts=[1, 0], ends=[3, -1], axes=[1, 3]), {"x": x}, opset=9)
    assert_close(got[0], ref[0])
    assert_close(got[0], x[:, 1:3, :, 0:-1])


def test_slice_errors():
    c = {"s": np.array([0], I64), "e": np.array([2], I64), "a": np.array([1], I64), "t": np.array([0], I64)}
    with pytest.raises(fastcnn.GraphError, match=r"\(Slice\): steps must not be 0"):
        run_op("Slice", {"x": x4()}, consts=c)
    c["t"], c["a"] = np.array([1], I64), np.array([7], I64)
    with pytest.raises(fastcnn.GraphError, match=r"axes=7 is out of range for rank 4"):
        run_op("Slice", {"x": x4()}, consts=c)


def test_slice_with_runtime_starts_is_unsupported():
    with pytest.raises(fastcnn.FastCNNError, match=r"input 1 \('s'\) \(starts\) must be a constant"):
        m = ir_model([("Cast", ["f"], ["s"], {"to": "int64"}), ("Slice", ["x", "s", "e"], ["y"])],
                     {"x": (3, 4), "f": (1,)}, ["y"], {"e": np.array([2], I64)})
        m.run(None, {"x": x4(3, 4), "f": np.zeros(1, np.float32)})


# ---------------------------------------------------------------------- Expand / Tile
@pytest.mark.parametrize("xs,shape", [((13, 1, 1), [3, 13, 3, 5]), ((3, 1, 5), [2, 1, 4, 1]),
                                      ((1,), [3, 5]), ((3, 13, 3, 5), [1])])
def test_expand(xs, shape, layout):
    x = rand(RNG, *xs)
    got = run_op("Expand", {"x": x}, consts={"s": np.array(shape, I64)}, layout=layout)[0]
    assert_close(got, x * np.ones(shape, np.float32))
    got, ref = onnx_vs_ort(node("Expand", ["x", "s"]), {"x": x}, {"s": np.array(shape, I64)}, opset=13)
    assert_close(got[0], ref[0])


@pytest.mark.parametrize("reps", [[1, 1, 1, 1], [2, 1, 3, 2], [1, 3, 1, 1], [1, 1, 1, 4], [1, 0, 2, 1]])
def test_tile(reps, threads):
    x = x4()
    got = run_op("Tile", {"x": x}, consts={"r": np.array(reps, I64)}, threads=threads)[0]
    assert_close(got, np.tile(x, reps))
    if 0 not in reps:
        got, ref = onnx_vs_ort(node("Tile", ["x", "r"]), {"x": x}, {"r": np.array(reps, I64)}, opset=13)
        assert_close(got[0], ref[0])


def test_tile_wrong_repeats():
    with pytest.raises(fastcnn.GraphError, match=r"repeats \[2, 2\] must have 4 non-negative values"):
        run_op("Tile", {"x": x4()}, consts={"r": np.array([2, 2], I64)})


# ---------------------------------------------------------------------- Gather
@pytest.mark.parametrize("axis,idx", [(0, [2, 0, 2]), (1, [[0, 12], [-1, 5]]), (3, 4), (-1, [-5]), (2, np.zeros((0,), I64))])
def test_gather(axis, idx, layout):
    x = x4()
    idx = np.array(idx, I64)
    got = run_op("Gather", {"x": x}, {"axis": axis}, consts={"i": idx}, layout=layout)[0]
    assert_close(got, np.take(x, idx, axis=axis))
    if idx.size:
        got, ref = onnx_vs_ort(node("Gather", ["x", "i"], axis=axis), {"x": x}, {"i": idx}, opset=13)
        assert_close(got[0], ref[0])


def test_gather_index_out_of_range():
    with pytest.raises(fastcnn.GraphError, match=r"indices \[0, 13\] are out of range for axis 1 of size 13"):
        run_op("Gather", {"x": x4()}, {"axis": 1}, consts={"i": np.array([0, 13], I64)})


# ---------------------------------------------------------------------- DepthToSpace / SpaceToDepth
@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize("b", [1, 2, 3])
def test_depth_to_space(mode, b, threads):
    x = x4(3, 4 * b * b, 3, 5)
    got = run_op("DepthToSpace", {"x": x}, {"blocksize": b, "mode": mode}, threads=threads)[0]
    assert_close(got, depth_to_space(x, b, mode))
    got, ref = onnx_vs_ort(node("DepthToSpace", ["x"], blocksize=b, mode=mode), {"x": x}, opset=13)
    assert_close(got[0], ref[0])


@pytest.mark.parametrize("b", [1, 2, 3])
def test_space_to_depth(b, layout):
    x = x4(3, 13, 3 * b, 2 * b)
    got = run_op("SpaceToDepth", {"x": x}, {"blocksize": b}, layout=layout)[0]
    assert_close(got, space_to_depth(x, b))
    got, ref = onnx_vs_ort(node("SpaceToDepth", ["x"], blocksize=b), {"x": x}, opset=13)
    assert_close(got[0], ref[0])
    back = run_op("DepthToSpace", {"x": space_to_depth(x, b)}, {"blocksize": b, "mode": "DCR"})[0]
    assert_close(back, x)


def test_depth_space_errors():
    with pytest.raises(fastcnn.GraphError, match=r"channels 13 must be divisible by blocksize\^2 = 2\^2"):
        run_op("DepthToSpace", {"x": x4()}, {"blocksize": 2})
    with pytest.raises(fastcnn.GraphError, match=r"spatial dims 3x5 must be divisible by blocksize 2"):
        run_op("SpaceToDepth", {"x": x4()}, {"blocksize": 2})
    with pytest.raises(fastcnn.GraphError, match=r"mode must be DCR or CRD, got 'XYZ'"):
        run_op("DepthToSpace", {"x": x4(1, 4, 2, 2)}, {"blocksize": 2, "mode": "XYZ"})


def test_copy_ops_parallel_path(threads):
    """Tensors above the copy kernel's 65536-element threshold split the walk across threads."""
    x = x4(3, 13, 65, 35)
    checks = [
        (run_op("Transpose", {"x": x}, {"perm": [0, 2, 3, 1]}, threads=threads)[0], x.transpose(0, 2, 3, 1)),
        (run_op("Concat", {"a": x, "b": x[:, :2].copy()}, {"axis": 1}, threads=threads)[0],
         np.concatenate([x, x[:, :2]], axis=1)),
        (run_op("Slice", {"x": x}, consts={"s": np.array([-1], I64), "e": np.array([-2 ** 63], I64),
                                           "a": np.array([2], I64), "t": np.array([-2], I64)}, threads=threads)[0],
         x[:, :, ::-2]),
        (run_op("Pad", {"x": x}, {"mode": "reflect"}, consts={"p": np.array([0, 0, 3, 2, 0, 0, 1, 4], I64)},
                threads=threads)[0], pad(x, [0, 0, 3, 2, 0, 0, 1, 4], "reflect")),
        (run_op("Tile", {"x": x}, consts={"r": np.array([1, 2, 1, 2], I64)}, threads=threads)[0], np.tile(x, [1, 2, 1, 2])),
        (run_op("Expand", {"x": x[:1]}, consts={"s": np.array([3, 13, 65, 35], I64)}, threads=threads)[0],
         np.broadcast_to(x[:1], x.shape)),
    ]
    for got, ref in checks:
        assert_close(got, ref)


def test_slice_negative_step_start_below_minus_dim_clamps_to_zero():
    """ONNX clamps a start < -dim to 0 for negative steps (Python's slice.indices would give an
    empty slice): found by the randomised tests."""
    x = x4(2, 3)
    consts = {"s": np.array([-5], I64), "e": np.array([-2 ** 63], I64), "a": np.array([1], I64),
              "t": np.array([-1], I64)}
    got = run_op("Slice", {"x": x}, consts=consts)[0]
    assert_close(got, x[:, :1])
    got, ref = onnx_vs_ort(node("Slice", ["x", "s", "e", "a", "t"]), {"x": x}, consts, opset=13)
    assert_close(got[0], ref[0])


def test_constant_pad_cropping_more_than_one_side_holds():
    x = x4(2, 3, 4)
    pads = [0, -4, 1, 0, 5, 0]      # axis 1: 3 - 4 + 5 = 4 elements, none from x
    got = run_op("Pad", {"x": x}, consts={"p": np.array(pads, I64), "v": np.array(2.0, np.float32)},
                 order=["x", "p", "v"])[0]
    assert_close(got, pad(x, pads, "constant", 2.0))
    assert (got == 2.0).all() and got.shape == (2, 4, 5)

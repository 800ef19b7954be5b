"""Every pass is checked by running the graph before and after it on the same input."""
import re

import numpy as np
import pytest

from helpers import assert_close, ir_model, rand
from fastcnn.errors import GraphError
from fastcnn.ir.graph import Graph, Node, TensorSpec
from fastcnn.model import Model
from fastcnn.passes import (PIPELINE, fold_batchnorm, fold_constants, fuse_activation,
                            fuse_residual_add, remove_dead_nodes, remove_identities, run_pipeline)

RNG = np.random.default_rng(7)


def graph(nodes, inputs, outputs, inits):
    built = [Node(op, f"{op.lower()}{i}", list(ins), list(outs), dict(attrs))
             for i, (op, ins, outs, attrs) in enumerate(nodes)]
    return Graph("t", [TensorSpec(k, tuple(v)) for k, v in inputs.items()],
                 [TensorSpec(o, ()) for o in outputs], built, inits, source="t").check()


def run(g, feeds, threads=1):
    return Model(g, num_threads=threads).run(None, feeds)


def bn_params(c, prefix):
    return {f"{prefix}_s": rand(RNG, c, lo=0.5, hi=1.5), f"{prefix}_b": rand(RNG, c),
            f"{prefix}_m": rand(RNG, c), f"{prefix}_v": rand(RNG, c, lo=0.2, hi=2.0)}


def resnet_block():
    c = 5
    inits = {"w1": rand(RNG, c, c, 3, 3), "w2": rand(RNG, c, c, 3, 3), "b2": rand(RNG, c),
             **bn_params(c, "bn1"), **bn_params(c, "bn2")}
    nodes = [
        ("Conv", ["x", "w1"], ["c1"], {"pads": [1, 1, 1, 1]}),
        ("BatchNormalization", ["c1", "bn1_s", "bn1_b", "bn1_m", "bn1_v"], ["n1"], {"epsilon": 1e-3}),
        ("Relu", ["n1"], ["r1"], {}),
        ("Conv", ["r1", "w2", "b2"], ["c2"], {"pads": [1, 1, 1, 1]}),
        ("BatchNormalization", ["c2", "bn2_s", "bn2_b", "bn2_m", "bn2_v"], ["n2"], {}),
        ("Add", ["n2", "x"], ["s"], {}),
        ("Relu", ["s"], ["y"], {}),
    ]
    return graph(nodes, {"x": (None, c, 7, 6)}, ["y"], inits)


def test_pipeline_on_resnet_block_matches_unoptimised(threads):
    g = resnet_block()
    x = rand(RNG, 3, 5, 7, 6)
    before = run(g, {"x": x}, threads)[0]
    opt = run_pipeline(g)
    assert [n.op for n in opt.nodes] == ["Conv", "Conv"]
    assert opt.nodes[0].attrs["activation"] == "Relu"
    assert opt.nodes[1].inputs[3] == "x" and opt.nodes[1].attrs["activation"] == "Relu"
    after = run(opt, {"x": x}, threads)[0]
    assert_close(after, before)


@pytest.mark.parametrize("follow", ["bn", "mul", "add", "sub"])
def test_fold_affine_into_conv(follow):
    c = 4
    inits = {"w": rand(RNG, c, 3, 3, 3), "k": rand(RNG, 1, c, 1, 1), **bn_params(c, "bn")}
    nxt = {"bn": ("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["y"], {}),
           "mul": ("Mul", ["k", "c"], ["y"], {}),
           "add": ("Add", ["c", "k"], ["y"], {}),
           "sub": ("Sub", ["c", "k"], ["y"], {})}[follow]
    g = graph([("Conv", ["x", "w"], ["c"], {"strides": [2, 2]}), nxt], {"x": (2, 3, 9, 8)}, ["y"], inits)
    x = rand(RNG, 2, 3, 9, 8)
    opt = fold_batchnorm(g).check()
    assert [n.op for n in opt.nodes] == ["Conv"]
    assert_close(run(opt, {"x": x})[0], run(g, {"x": x})[0])


def test_fold_a_chain_of_affines_into_each_conv():
    """Conv -> BN -> Mul -> Add -> Sub, twice in a row: every affine folds into its conv (the
    pass tries a conv again after each fold), and the second conv's chain as well."""
    c = 4
    inits = {"w1": rand(RNG, c, 3, 3, 3), "w2": rand(RNG, c, c, 1, 1), "k1": rand(RNG, 1, c, 1, 1),
             "k2": rand(RNG, c, 1, 1), "k3": rand(RNG, 1, c, 1, 1), **bn_params(c, "bn"),
             **bn_params(c, "bo")}

    def chain(i, bn):
        return [("BatchNormalization", [f"c{i}", f"{bn}_s", f"{bn}_b", f"{bn}_m", f"{bn}_v"],
                 [f"n{i}"], {}),
                ("Mul", [f"n{i}", "k1"], [f"m{i}"], {}), ("Add", ["k2", f"m{i}"], [f"a{i}"], {}),
                ("Sub", [f"a{i}", "k3"], [f"s{i}"], {})]
    g = graph([("Conv", ["x", "w1"], ["c1"], {"pads": [1, 1, 1, 1]}), *chain(1, "bn"),
               ("Relu", ["s1"], ["r"], {}), ("Conv", ["r", "w2"], ["c2"], {}), *chain(2, "bo"),
               ("Identity", ["s2"], ["y"], {})], {"x": (2, 3, 6, 5)}, ["y"], inits)
    x = rand(RNG, 2, 3, 6, 5)
    opt = fold_batchnorm(g).check()
    assert [n.op for n in opt.nodes] == ["Conv", "Relu", "Conv", "Identity"]
    assert_close(run(opt, {"x": x})[0], run(g, {"x": x})[0])


def test_folded_conv_keeps_its_weights_and_a_scale():
    """Conv -> BN -> Mul: the conv keeps its weight array (no scaled copy made in the pass) and
    carries the product of the scales, per output channel, in float64 (weight_scale); the
    graph with the scales applied to the weights (.fcnn writes that) computes the same."""
    from fastcnn.ir.weights import without_weight_scales
    c = 4
    inits = {"w": rand(RNG, c, 3, 3, 3), "k": rand(RNG, 1, c, 1, 1), **bn_params(c, "bn")}
    g = graph([("Conv", ["x", "w"], ["c"], {"pads": [1, 1, 1, 1]}),
               ("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["n"], {"epsilon": 1e-3}),
               ("Mul", ["n", "k"], ["y"], {})], {"x": (2, 3, 6, 5)}, ["y"], inits)
    opt = fold_batchnorm(g).check()
    conv, = opt.nodes
    assert opt.initializers[conv.inputs[1]] is inits["w"]
    f64 = {k: v.astype(np.float64) for k, v in inits.items()}
    want = f64["bn_s"] / np.sqrt(f64["bn_v"] + 1e-3) * f64["k"].reshape(c)
    assert np.allclose(conv.attrs["weight_scale"], want, rtol=1e-15, atol=0)
    x = rand(RNG, 2, 3, 6, 5)
    assert_close(run(opt, {"x": x})[0], run(g, {"x": x})[0])
    plain = without_weight_scales(opt)
    pconv, = plain.nodes
    assert "weight_scale" not in pconv.attrs and "weight_scale" in conv.attrs   # a copy
    assert "w" not in plain.initializers                                          # not kept twice
    assert np.array_equal(plain.initializers[pconv.inputs[1]],
                          (f64["w"] * want[:, None, None, None]).astype(np.float32))
    assert np.array_equal(run(plain, {"x": x})[0], run(opt, {"x": x})[0])


def test_a_conv_with_more_channels_than_an_attribute_holds_is_scaled_in_the_pass():
    """4097 output channels: one weight_scale value each would pass MAX_ATTR_LIST, so the pass
    scales the weights itself (a new array, no attribute); the output is the same."""
    from fastcnn.ir.opspec import MAX_ATTR_LIST
    c = MAX_ATTR_LIST + 1
    inits = {"w": rand(RNG, c, 2, 1, 1), **bn_params(c, "bn")}
    g = graph([("Conv", ["x", "w"], ["c"], {}),
               ("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["y"], {})],
              {"x": (1, 2, 2, 1)}, ["y"], inits)
    opt = fold_batchnorm(g).check()
    conv, = opt.nodes
    assert "weight_scale" not in conv.attrs and conv.inputs[1] != "w"
    x = rand(RNG, 1, 2, 2, 1)
    assert_close(run(opt, {"x": x})[0], run(g, {"x": x})[0])


@pytest.mark.parametrize("as_array", [False, True])
def test_a_weight_scale_of_another_length_is_refused(as_array):
    from fastcnn.ir.weights import frozen_scale
    scale = frozen_scale([1.0, 2.0]) if as_array else [1.0, 2.0]
    g = graph([("Conv", ["x", "w"], ["y"], {"weight_scale": scale})], {"x": (1, 3, 5, 5)},
              ["y"], {"w": rand(RNG, 4, 3, 3, 3)})
    with pytest.raises(GraphError, match="weight_scale has 2 values; expected one per output channel"):
        Model(g)


def test_the_pass_writes_a_weight_scale_as_a_read_only_array():
    """The BatchNorm pass stores a conv's scale as a read-only float64 array (not 17k Python
    floats to check at every inference, MobileNetV2's); attribute checks take it as it is and
    JSON gets a list. An array that could change, or of another type or rank, is refused like
    any bad attribute, and a list (a file's, a hand-built graph's) still works."""
    import json
    c = 3
    inits = {"w": rand(RNG, c, 2, 3, 3), **bn_params(c, "bn")}
    g = graph([("Conv", ["x", "w"], ["c"], {"pads": [1, 1, 1, 1]}),
               ("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["y"], {})],
              {"x": (2, 2, 5, 4)}, ["y"], inits)
    opt = fold_batchnorm(g).check()
    conv, = opt.nodes
    scale = conv.attrs["weight_scale"]
    assert type(scale) is np.ndarray and scale.dtype == np.float64 and scale.shape == (c,)
    assert not scale.flags.writeable
    assert json.loads(json.dumps(conv.to_json()))["attrs"]["weight_scale"] == scale.tolist()
    from fastcnn.ir.ops import OPS
    from fastcnn.ir.opspec import resolve_attrs
    assert resolve_attrs(conv, OPS["Conv"], "t")["weight_scale"] is scale
    x = rand(RNG, 2, 2, 5, 4)
    want = run(g, {"x": x})[0]
    for ok in (scale, scale.tolist()):
        conv.attrs["weight_scale"] = ok
        assert_close(run(opt, {"x": x})[0], want)
    for bad in (scale.copy(), scale.astype(np.float32), scale.reshape(1, c)):
        conv.attrs["weight_scale"] = bad
        with pytest.raises(GraphError, match="attribute 'weight_scale' must be"):
            resolve_attrs(conv, OPS["Conv"], "t")


@pytest.mark.parametrize("short", ["bn_b", "bn_m", "bn_v"])
def test_bn_with_a_parameter_of_another_length_is_left_to_inference(short):
    """A BatchNormalization whose beta, mean or var does not have one value per channel (a bad
    file: the fuzzer's) is not folded (it was a numpy broadcast error inside the pass); type
    inference then refuses it with a FastCNNError naming the node."""
    import fastcnn
    c = 4
    inits = {"w": rand(RNG, c, 3, 3, 3), **bn_params(c, "bn")}
    inits[short] = rand(RNG, 2)
    g = graph([("Conv", ["x", "w"], ["c"], {}),
               ("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["y"], {})],
              {"x": (1, 3, 6, 6)}, ["y"], inits)
    assert [n.op for n in fold_batchnorm(g).nodes] == ["Conv", "BatchNormalization"]
    with pytest.raises(fastcnn.FastCNNError, match="batchnormalization1"):
        Model(run_pipeline(g))


BAD_LAYERS = {
    # name: (layer op, attrs, weights, bias or None, BN channels, input shape, what inference says)
    "conv bias too long": ("Conv", {}, (4, 3, 3, 3), (5,), 4, (1, 3, 6, 6), "bias 'b' has shape [5]; expected [4]"),
    "conv bias 2-D": ("Conv", {}, (4, 3, 3, 3), (4, 1), 4, (1, 3, 6, 6), "bias 'b' has shape [4, 1]; expected [4]"),
    "gemm C of other columns": ("Gemm", {"transB": 1}, (4, 3), (3,), 4, (2, 3), "cannot be broadcast"),
    "convT group 0": ("ConvTranspose", {"group": 0}, (3, 4, 3, 3), None, 0, (1, 3, 6, 6), "group must be >= 1"),
    "convT group not dividing": ("ConvTranspose", {"group": 2}, (3, 4, 3, 3), None, 8, (1, 3, 6, 6),
                                 "not divisible"),
    "conv weight_scale of other length": ("Conv", {"weight_scale": [1.0, 2.0]}, (4, 3, 3, 3), None, 4,
                                          (1, 3, 6, 6), "weight_scale has 2 values"),
}


@pytest.mark.parametrize("dynamic_hw", [False, True])
@pytest.mark.parametrize("case", sorted(BAD_LAYERS))
def test_bn_after_a_layer_that_does_not_fit_is_left_to_inference(case, dynamic_hw):
    """A conv or dense layer whose bias, group or weight_scale does not fit its output channels
    (a bad file), followed by a BatchNormalization: the passes may run before any type inference
    (nothing to fold or fuse here), so the fold must leave the pair alone (it was a numpy error,
    not a FastCNNError, inside the pass); inference then refuses it naming the original tensor
    or attribute. With dynamic height and width that happens at the first run."""
    import fastcnn
    op, attrs, w_shape, b_shape, c, x_shape, message = BAD_LAYERS[case]
    inits = {"w": rand(RNG, *w_shape), **bn_params(c, "bn")} if c else \
        {"w": rand(RNG, *w_shape), **{k: np.zeros(0, np.float32) for k in bn_params(1, "bn")}}
    ins = ["x", "w"]
    if b_shape is not None:
        inits["b"] = rand(RNG, *b_shape)
        ins.append("b")
    g = graph([(op, ins, ["c"], attrs),
               ("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["y"], {})],
              {"x": x_shape}, ["y"], inits)
    assert [n.op for n in fold_batchnorm(g).nodes] == [op, "BatchNormalization"]
    if dynamic_hw and len(x_shape) == 4:
        g.inputs = [TensorSpec("x", (None, x_shape[1], None, None))]
        model = Model(run_pipeline(g))
        with pytest.raises(fastcnn.FastCNNError, match=re.escape(message)):
            model.run(None, {"x": rand(RNG, *x_shape)})
    else:
        with pytest.raises(fastcnn.FastCNNError, match=re.escape(message)):
            Model(run_pipeline(g))


def test_bn_after_a_dense_layer_with_1d_weights_is_left_to_inference():
    """A Gemm whose B is not 2-D (a bad file: the fuzzer's) followed by a BN: not folded (the
    pass indexed a missing axis), refused by type inference with the node named."""
    import fastcnn
    inits = {"w": rand(RNG, 6), **bn_params(6, "bn")}
    g = graph([("Gemm", ["x", "w"], ["g"], {}),
               ("BatchNormalization", ["g", "bn_s", "bn_b", "bn_m", "bn_v"], ["y"], {})],
              {"x": (3, 6)}, ["y"], inits)
    assert [n.op for n in fold_batchnorm(g).nodes] == ["Gemm", "BatchNormalization"]
    with pytest.raises(fastcnn.FastCNNError, match="gemm0"):
        Model(run_pipeline(g))


def test_sub_with_constant_first_is_not_folded():
    inits = {"w": rand(RNG, 2, 3, 1, 1), "k": rand(RNG, 1, 2, 1, 1)}
    g = graph([("Conv", ["x", "w"], ["c"], {}), ("Sub", ["k", "c"], ["y"], {})],
              {"x": (1, 3, 4, 4)}, ["y"], inits)
    assert [n.op for n in fold_batchnorm(g).nodes] == ["Conv", "Sub"]


def test_fold_batchnorm_into_gemm():
    inits = {"w": rand(RNG, 6, 10), "c": rand(RNG, 6), **bn_params(6, "bn")}
    g = graph([("Gemm", ["x", "w", "c"], ["g"], {"transB": 1, "alpha": 0.5, "beta": 2.0}),
               ("BatchNormalization", ["g", "bn_s", "bn_b", "bn_m", "bn_v"], ["y"], {})],
              {"x": (3, 10)}, ["y"], inits)
    x = rand(RNG, 3, 10)
    opt = fold_batchnorm(g).check()
    assert [n.op for n in opt.nodes] == ["Gemm"]
    assert_close(run(opt, {"x": x})[0], run(g, {"x": x})[0])


def test_bn_not_folded_when_conv_output_is_shared():
    c = 3
    inits = {"w": rand(RNG, c, c, 1, 1), **bn_params(c, "bn")}
    g = graph([("Conv", ["x", "w"], ["c"], {}),
               ("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["n"], {}),
               ("Add", ["n", "c"], ["y"], {})], {"x": (1, c, 4, 4)}, ["y"], inits)
    opt = fold_batchnorm(g).check()
    assert [n.op for n in opt.nodes] == ["Conv", "BatchNormalization", "Add"]


@pytest.mark.parametrize("act,attrs", [("Relu", {}), ("LeakyRelu", {"alpha": 0.3}),
                                       ("Clip", {"min": 0.0, "max": 6.0}), ("Clip", {"max": 0.5}),
                                       ("Sigmoid", {}), ("Tanh", {}), ("HardSigmoid", {"alpha": 0.3}),
                                       ("HardSwish", {}), ("Elu", {"alpha": 0.7})])
@pytest.mark.parametrize("producer", ["Conv", "Gemm"])
def test_fuse_activation(producer, act, attrs):
    if producer == "Conv":
        inits = {"w": rand(RNG, 4, 3, 3, 3, lo=-3, hi=3), "b": rand(RNG, 4)}
        first = ("Conv", ["x", "w", "b"], ["c"], {"pads": [0, 1, 2, 1]})
        shape = (2, 3, 6, 5)
    else:
        inits = {"w": rand(RNG, 7, 4, lo=-3, hi=3), "b": rand(RNG, 4)}
        first = ("Gemm", ["x", "w", "b"], ["c"], {})
        shape = (3, 7)
    g = graph([first, (act, ["c"], ["y"], attrs)], {"x": shape}, ["y"], inits)
    x = rand(RNG, *shape, lo=-2, hi=2)
    opt = fuse_activation(g).check()
    assert [n.op for n in opt.nodes] == [producer]
    assert_close(run(opt, {"x": x})[0], run(g, {"x": x})[0])


def test_residual_not_fused_when_shapes_differ_or_operand_is_later():
    inits = {"w": rand(RNG, 2, 2, 1, 1), "z": rand(RNG, 1, 2, 1, 1)}
    # broadcast addend (a constant): stays an Add
    g = graph([("Conv", ["x", "w"], ["c"], {}), ("Add", ["c", "z"], ["y"], {})],
              {"x": (1, 2, 3, 3)}, ["y"], inits)
    assert [n.op for n in fuse_residual_add(g).nodes] == ["Conv", "Add"]


def test_fold_constants_and_dynamic_shape_subgraph():
    # y = Reshape(x, Concat(Shape(x)[0:1], [-1])) with a dynamic batch: the Shape chain stays
    # (folded per plan), while a chain of pure constants folds at load.
    inits = {"a": np.array([2.0, 3.0], np.float32), "b": np.array([1.0, 1.0], np.float32),
             "zero": np.array([0], np.int64), "one": np.array([1], np.int64),
             "minus1": np.array([-1], np.int64)}
    nodes = [("Add", ["a", "b"], ["ab"], {}),
             ("Shape", ["x"], ["s"], {}),
             ("Slice", ["s", "zero", "one"], ["n"], {}),
             ("Concat", ["n", "minus1"], ["shape"], {"axis": 0}),
             ("Reshape", ["x", "shape"], ["r"], {}),
             ("Mul", ["r", "ab"], ["y"], {})]
    g = graph(nodes, {"x": (None, 2, 1)}, ["y"], inits)
    opt = fold_constants(g).check()
    assert "Add" not in [n.op for n in opt.nodes] and "Shape" in [n.op for n in opt.nodes]
    m = Model(run_pipeline(g), num_threads=1)
    assert m.outputs[0].shape == (None, 2)
    for batch in (1, 4):
        x = rand(RNG, batch, 2, 1)
        assert_close(m(x), x.reshape(batch, 2) * np.array([3.0, 4.0], np.float32))


def test_fold_constants_folds_a_shape_chain_with_no_constant_only_node():
    """Static shapes: Shape(x) folds on types, and the Slice and Concat after it then fold,
    though no node starts with initializers alone (the pass's pre-check must see Shape)."""
    inits = {"zero": np.array([0], np.int64), "one": np.array([1], np.int64),
             "minus1": np.array([-1], np.int64)}
    nodes = [("Shape", ["x"], ["s"], {}),
             ("Slice", ["s", "zero", "one"], ["n"], {}),
             ("Concat", ["n", "minus1"], ["shape"], {"axis": 0}),
             ("Reshape", ["x", "shape"], ["y"], {})]
    g = graph(nodes, {"x": (3, 2, 2)}, ["y"], inits)
    opt = fold_constants(g).check()
    assert [n.op for n in opt.nodes] == ["Reshape"]
    assert np.array_equal(opt.initializers[opt.nodes[0].inputs[1]], [3, -1])
    x = rand(RNG, 3, 2, 2)
    assert np.array_equal(run(opt, {"x": x})[0], x.reshape(3, 4))


def test_identity_and_dropout_removed_even_before_outputs():
    inits = {"w": rand(RNG, 3, 3)}
    g = graph([("Identity", ["x"], ["i"], {}), ("MatMul", ["i", "w"], ["m"], {}),
               ("Dropout", ["m"], ["y"], {})], {"x": (2, 3)}, ["y"], inits)
    opt = run_pipeline(g)
    assert [n.op for n in opt.nodes] == ["MatMul"] and opt.outputs[0].name == "y"
    x = rand(RNG, 2, 3)
    assert_close(run(opt, {"x": x})[0], x @ inits["w"])


def test_identity_of_input_as_output_is_kept():
    g = graph([("Identity", ["x"], ["y"], {})], {"x": (2, 3)}, ["y"], {})
    opt = run_pipeline(g)
    x = rand(RNG, 2, 3)
    assert np.array_equal(run(opt, {"x": x})[0], x)


def test_dead_nodes_removed():
    inits = {"w": rand(RNG, 3, 3)}
    g = graph([("MatMul", ["x", "w"], ["unused"], {}), ("Relu", ["x"], ["y"], {})],
              {"x": (2, 3)}, ["y"], inits)
    opt = remove_dead_nodes(g)
    assert [n.op for n in opt.nodes] == ["Relu"] and not opt.initializers


def test_fuse_compare_where_leaves_its_input_and_computes_the_same():
    """Where over Not(Greater) and a Cast of the same Greater to float32 become fused Wheres
    (x and y swapped for the Not); the input graph is unchanged, the comparison and the Not go
    with the dead nodes, and the result is numpy's (the graph before cannot run: bool tensors)."""
    from fastcnn.passes import fuse_compare_where
    t = np.array([0.25, -1, 0, 2, np.nan], np.float32)
    g = graph([("Greater", ["x", "t"], ["gt"], {}), ("Not", ["gt"], ["le"], {}),
               ("Where", ["le", "x", "t"], ["a"], {}), ("Cast", ["gt"], ["m"], {"to": "float32"}),
               ("Add", ["a", "m"], ["y"], {})], {"x": (3, 5)}, ["y"], {"t": t})
    before = [(n.op, list(n.inputs), list(n.outputs), dict(n.attrs)) for n in g.nodes]
    opt = fuse_compare_where(g).check()
    assert [(n.op, n.inputs, n.outputs, n.attrs) for n in g.nodes] == before
    opt = remove_dead_nodes(opt).check()
    assert [(n.op, n.attrs) for n in opt.nodes] == [("Where", {"compare": "Greater"})] * 2 + [("Add", {})]
    assert opt.nodes[0].inputs[:2] == ["x", "t"] and opt.nodes[0].inputs[2:] == ["t", "x"]
    x = rand(RNG, 3, 5)
    x[0, :3] = [np.nan, 0.25, -1]
    ref = np.where(~(x > t), x, t) + (x > t).astype(np.float32)
    np.testing.assert_array_equal(run(opt, {"x": x})[0], ref)


def test_passes_do_not_modify_their_input():
    g = resnet_block()
    snapshot = [(n.op, list(n.inputs), list(n.outputs), dict(n.attrs)) for n in g.nodes]
    for p in PIPELINE:
        p(g)
    assert snapshot == [(n.op, list(n.inputs), list(n.outputs), dict(n.attrs)) for n in g.nodes]


@pytest.mark.parametrize("group", [1, 2])
def test_fold_batchnorm_into_conv_transpose(group):
    c_in, cog = 4, 3
    inits = {"w": rand(RNG, c_in, cog, 3, 3), "b": rand(RNG, cog * group), **bn_params(cog * group, "bn")}
    g = graph([("ConvTranspose", ["x", "w", "b"], ["c"], {"strides": [2, 2], "group": group}),
               ("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["y"], {})],
              {"x": (2, c_in, 5, 4)}, ["y"], inits)
    x = rand(RNG, 2, c_in, 5, 4)
    opt = fold_batchnorm(g).check()
    assert [n.op for n in opt.nodes] == ["ConvTranspose"]
    assert_close(run(opt, {"x": x})[0], run(g, {"x": x})[0])


def test_single_consumer_with_the_readers_index_answers_as_the_scan():
    """A value read once by one node, twice by one node (Add(x, x)), by two nodes, by none, and
    a graph output read by a node: the index lookup and the scan of all nodes agree, and the
    answers are the expected ones (written out here)."""
    from fastcnn.passes.analysis import readers_index, single_consumer
    g = graph([("Relu", ["x"], ["a"], {}),
               ("Add", ["a", "a"], ["b"], {}),        # a: read twice by one node
               ("Relu", ["b"], ["c"], {}),
               ("Sigmoid", ["b"], ["d"], {}),         # b: read by two nodes
               ("Relu", ["c"], ["e"], {}),            # c: read once
               ("Tanh", ["d"], ["f"], {})],           # d: read once, and a graph output
              {"x": (1, 4)}, ["e", "f", "d"], {})
    readers = readers_index(g)
    want = {"x": "relu0", "a": None, "b": None, "c": "relu4", "d": None, "e": None, "f": None}
    for value, name in want.items():
        scanned = single_consumer(g, value)
        indexed = single_consumer(g, value, readers)
        assert scanned is indexed
        assert (scanned.name if scanned is not None else None) == name, value


def test_a_pass_with_nothing_to_do_returns_its_input_and_the_pipeline_a_new_graph():
    """Each pass given a graph it has nothing to do on hands back the graph itself, unchanged;
    one with work returns a changed copy and leaves its input as it was. run_pipeline works on
    its own sorted copy: its result is never the caller's graph, and the caller's graph (here
    with its nodes out of order, which the residual fusion's order test must not see) is not
    touched, the result the same as from the sorted graph."""
    from fastcnn.passes import fold_transposes, fuse_swish
    plain = graph([("Relu", ["x"], ["y"], {})], {"x": (1, 4)}, ["y"], {})
    for p in PIPELINE:
        assert p(plain) is plain, p.__name__
    assert [(n.op, n.inputs, n.outputs) for n in plain.nodes] == [("Relu", ["x"], ["y"])]
    done = run_pipeline(plain)
    assert done is not plain and plain.passes_applied is None

    g = resnet_block()
    step = g
    for p in (fold_batchnorm, fuse_residual_add, fuse_activation, remove_dead_nodes):
        before = [(n.op, list(n.inputs), list(n.outputs), dict(n.attrs)) for n in step.nodes]
        out = p(step)
        assert out is not step, f"{p.__name__} has work on the block"
        assert [(n.op, n.inputs, n.outputs, n.attrs) for n in step.nodes] == before, p.__name__
        step = out.check()
    shuffled = Graph("t", g.inputs, g.outputs, [n.copy() for n in reversed(g.nodes)], g.initializers)
    order = [n.name for n in shuffled.nodes]
    a, b = run_pipeline(g), run_pipeline(shuffled)
    assert [n.name for n in shuffled.nodes] == order, "the caller's graph is not sorted in place"
    assert [(n.op, n.inputs, n.outputs) for n in a.nodes] == [(n.op, n.inputs, n.outputs) for n in b.nodes]
    assert [n.op for n in a.nodes] == ["Conv", "Conv"] and len(a.nodes[1].inputs) == 4
    x = rand(RNG, 2, 5, 7, 6)
    assert_close(run(b, {"x": x})[0], run(g, {"x": x})[0])


@pytest.mark.parametrize("bad", [np.array(["CRD"]), np.array([1 + 2j]), [1.0, 2.0]])
def test_an_initializer_of_another_element_type_is_refused_before_the_passes(bad):
    """check_structure (run_pipeline's first step) refuses an initializer that is not an array
    of the IR's element types, naming it: the BatchNorm folding converts parameters to float64
    before any type inference."""
    from fastcnn.errors import UnsupportedOpError
    c = 4
    nodes = [("Conv", ["x", "w"], ["c"], {}),
             ("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], {})]
    ones = np.ones(c, np.float32)
    g = graph(nodes, {"x": (1, 3, 5, 5)}, ["y"],
              {"w": rand(RNG, c, 3, 3, 3), "s": bad, "b": ones, "m": ones, "v": ones})
    with pytest.raises(UnsupportedOpError, match="initializer 's' has element type"):
        run_pipeline(g)


@pytest.mark.parametrize("bad", [np.array(["CRD"]), np.array([1 + 2j])])
def test_an_initializer_of_another_element_type_is_refused_without_the_passes(bad):
    """Type inference refuses it the same way (ir.infer.initializer_type): a graph loaded with
    the passes off, or a Model built from a graph directly, names the initializer too."""
    from fastcnn.errors import UnsupportedOpError
    ones = np.ones(4, np.float32)
    g = graph([("Conv", ["x", "w"], ["c"], {}), ("Mul", ["c", "s"], ["y"], {})],
              {"x": (1, 3, 5, 5)}, ["y"], {"w": rand(RNG, 4, 3, 3, 3), "s": bad})
    with pytest.raises(UnsupportedOpError, match="initializer 's' has element type"):
        Model(g)

"""ConvTranspose: the GEMM + col2im kernel and the direct kernel against each other and against the
numpy scatter reference (odd shapes, groups, dilations, strides larger than the kernel, padding
larger than the kernel, output_padding, 1-D), against onnxruntime for every way ONNX sets the
output size (pads, output_shape, auto_pad, output_padding), and its validation errors."""
import numpy as np
import pytest

import fastcnn
from fastcnn._kernels import deconv
from fastcnn.runtime import k_deconv
from helpers import assert_close, ir_model, rand
from oputil import node, onnx_vs_ort, run_op
from reference import conv_transpose2d, conv_transpose_out_size

RNG = np.random.default_rng(2024)

# (x shape, c_out/group, kernel, stride, pads (top, left, bottom, right), dilation, group, output_padding)
GEOMETRIES = [
    ((1, 1, 3, 3), 1, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1, (0, 0)),
    ((3, 13, 3, 5), 7, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, (1, 1)),
    ((2, 6, 5, 4), 4, (2, 3), (3, 2), (0, 1, 2, 0), (1, 2), 2, (2, 1)),
    ((2, 6, 4, 4), 1, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 6, (0, 1)),      # depthwise
    ((1, 4, 3, 5), 3, (2, 2), (4, 5), (0, 0, 0, 0), (1, 1), 1, (3, 0)),      # stride > kernel
    ((2, 3, 4, 3), 2, (3, 2), (1, 1), (3, 2, 2, 2), (2, 2), 1, (0, 0)),      # pads > kernel
    ((1, 2, 1, 1), 5, (4, 4), (2, 2), (0, 0, 0, 0), (1, 1), 1, (0, 0)),      # 1x1 input
    ((2, 8, 6, 7), 3, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 4, (1, 0)),      # 1x1 kernel, strided
]


def geometry_id(g):
    xs, cog, k, s, p, d, grp, op = g
    return (f"{'x'.join(map(str, xs))}_co{cog * grp}_k{k[0]}{k[1]}_s{s[0]}{s[1]}_p{''.join(map(str, p))}"
            f"_d{d[0]}{d[1]}_g{grp}_op{op[0]}{op[1]}")


def out_hw(g):
    xs, _, k, s, p, d, _, op = g
    return tuple(conv_transpose_out_size(xs[2 + a], k[a], s[a], p[a], p[a + 2], d[a], op[a]) for a in range(2))


def weights(g):
    xs, cog, k, *_ = g
    return rand(RNG, xs[1], cog, *k), rand(RNG, cog * g[6])


def attrs_of(g, **extra):
    _, _, k, s, p, d, grp, op = g
    return dict(strides=list(s), pads=list(p), dilations=list(d), group=grp, output_padding=list(op), **extra)


# ---------------------------------------------------------------------- worked example
def test_worked_example_scatter_by_hand():
    """2x2 input, 2x2 kernel of ones, stride 1: each input adds itself to a 2x2 patch.
    Stride 2 puts the patches side by side without overlap."""
    x = np.array([[[[1, 2], [3, 4]]]], np.float32)
    w = np.ones((1, 1, 2, 2), np.float32)
    y = run_op("ConvTranspose", {"x": x}, consts={"w": w})[0]
    assert y[0, 0].tolist() == [[1, 3, 2], [4, 10, 6], [3, 7, 4]]
    y2 = run_op("ConvTranspose", {"x": x}, {"strides": [2, 2]}, consts={"w": w})[0]
    assert y2[0, 0].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    assert conv_transpose2d(x, w)[0, 0].tolist() == [[1, 3, 2], [4, 10, 6], [3, 7, 4]]


# ---------------------------------------------------------------------- kernels vs reference
@pytest.mark.parametrize("algorithm", ["gemm", "direct"])
@pytest.mark.parametrize("geo", GEOMETRIES, ids=geometry_id)
def test_kernels_match_reference(geo, algorithm, threads):
    xs, cog, k, s, p, d, grp, op = geo
    x = rand(RNG, *xs)
    w, b = weights(geo)
    ho, wo = out_hw(geo)
    out = np.full((xs[0], cog * grp, ho, wo), np.nan, np.float32)
    deconv.conv_transpose2d(x, w, b, out, s, p[:2], d, grp, algorithm=algorithm, num_threads=threads)
    assert_close(out, conv_transpose2d(x, w, b, s, p[:2], d, grp, (ho, wo)), geometry_id(geo))


@pytest.mark.parametrize("geo", GEOMETRIES, ids=geometry_id)
def test_gemm_and_direct_kernels_agree(geo):
    xs, cog, k, s, p, d, grp, op = geo
    x = rand(RNG, *xs, lo=-3, hi=3)
    w, b = weights(geo)
    ho, wo = out_hw(geo)
    outs = []
    for algorithm in ("gemm", "direct"):
        out = np.empty((xs[0], cog * grp, ho, wo), np.float32)
        deconv.conv_transpose2d(x, w, None, out, s, p[:2], d, grp, act=1, algorithm=algorithm)
        outs.append(out)
    assert_close(outs[0], outs[1])
    assert (outs[0] >= 0).all()   # act=1: the ReLU epilogue ran


@pytest.mark.parametrize("geo", GEOMETRIES, ids=geometry_id)
def test_op_matches_reference(geo, threads):
    xs, cog, k, s, p, d, grp, op = geo
    x = rand(RNG, *xs)
    w, b = weights(geo)
    got = run_op("ConvTranspose", {"x": x}, attrs_of(geo), consts={"w": w, "b": b}, threads=threads)[0]
    assert_close(got, conv_transpose2d(x, w, b, s, p[:2], d, grp, out_hw(geo)))


def test_direct_fallback_when_the_column_buffer_is_large(monkeypatch, threads):
    geo = GEOMETRIES[2]
    xs, cog, k, s, p, d, grp, op = geo
    monkeypatch.setattr(k_deconv, "MAX_COL_FLOATS", 0)
    x = rand(RNG, *xs)
    w, b = weights(geo)
    m = ir_model([("ConvTranspose", ["x", "w", "b"], ["y"], attrs_of(geo))], {"x": xs}, ["y"],
                 {"w": w, "b": b}, num_threads=threads)
    assert m.plan_for().scratch_bytes < 64 * 4
    assert_close(m.run(None, {"x": x})[0], conv_transpose2d(x, w, b, s, p[:2], d, grp, out_hw(geo)))


def test_large_layer_runs_parallel_paths(threads):
    """Above the kernels' parallel thresholds (GEMM rows, col2im channels)."""
    x = rand(RNG, 3, 16, 20, 20)
    w, b = rand(RNG, 16, 12, 4, 4), rand(RNG, 12)
    got = run_op("ConvTranspose", {"x": x}, {"strides": [2, 2], "pads": [1, 1, 1, 1]},
                 consts={"w": w, "b": b}, threads=threads)[0]
    assert got.shape == (3, 12, 40, 40)
    assert_close(got, conv_transpose2d(x, w, b, (2, 2), (1, 1), out_hw=(40, 40)))


def test_input_layouts(layout):
    geo = GEOMETRIES[1]
    xs, cog, k, s, p, d, grp, op = geo
    x = rand(RNG, *xs)
    w, b = weights(geo)
    got = run_op("ConvTranspose", {"x": x}, attrs_of(geo), consts={"w": w, "b": b}, layout=layout)[0]
    assert_close(got, conv_transpose2d(x, w, b, s, p[:2], d, grp, out_hw(geo)))


@pytest.mark.parametrize("case", [
    dict(kernel=3, stride=2, pads=(1, 1), dil=1, group=1, op=1),
    dict(kernel=4, stride=3, pads=(0, 2), dil=2, group=3, op=2),
    dict(kernel=1, stride=1, pads=(0, 0), dil=1, group=1, op=0),
])
def test_1d(case, threads):
    x = rand(RNG, 3, 6, 11)
    k, s, (pb, pe), d, grp, op = (case[n] for n in ("kernel", "stride", "pads", "dil", "group", "op"))
    w, b = rand(RNG, 6, 5, k), rand(RNG, 5 * grp)
    attrs = dict(strides=[s], pads=[pb, pe], dilations=[d], group=grp, output_padding=[op])
    got = run_op("ConvTranspose", {"x": x}, attrs, consts={"w": w, "b": b}, threads=threads)[0]
    wo = conv_transpose_out_size(11, k, s, pb, pe, d, op)
    ref = conv_transpose2d(x[:, :, None, :], w[:, :, None, :], b, (1, s), (0, pb), (1, d), grp, (1, wo))
    assert_close(got, ref[:, :, 0, :])


def test_nan_and_inf_propagate():
    x = rand(RNG, 1, 2, 3, 3)
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 0, 0] = np.inf
    w = np.abs(rand(RNG, 2, 1, 2, 2)) + 0.1
    got = run_op("ConvTranspose", {"x": x}, consts={"w": w})[0]
    ref = conv_transpose2d(x, w)
    assert np.isnan(got[0, 0, 1:3, 1:3]).all() and np.isposinf(got[0, 0, 0, 0])
    assert_close(got, ref)


# ---------------------------------------------------------------------- vs onnxruntime
ORT_CASES = [
    dict(strides=[2, 2]),
    dict(strides=[2, 3], pads=[1, 0, 2, 1], group=2, dilations=[2, 1]),
    dict(strides=[2, 2], output_padding=[1, 1], group=2),
    dict(strides=[2, 2], output_shape=[9, 14]),
    dict(strides=[2, 2], output_shape=[10, 13], output_padding=[1, 0]),
    dict(strides=[3, 2], output_shape=[13, 13], auto_pad="SAME_UPPER"),
    dict(strides=[3, 2], auto_pad="SAME_LOWER"),
    dict(strides=[3, 2], auto_pad="SAME_UPPER", group=2),
    dict(strides=[2, 2], auto_pad="SAME_UPPER", output_padding=[1, 1]),
    dict(strides=[2, 1], auto_pad="VALID", dilations=[1, 2]),
    dict(strides=[4, 4], auto_pad="SAME_LOWER", kernel_shape=[3, 3]),     # natural size < in*stride
    dict(pads=[3, 2, 1, 2], dilations=[2, 2]),
]


@pytest.mark.parametrize("attrs", ORT_CASES, ids=lambda a: "_".join(f"{k}{v}" for k, v in a.items()))
@pytest.mark.parametrize("with_bias", [True, False])
def test_vs_onnxruntime(attrs, with_bias):
    x = rand(RNG, 3, 6, 5, 7)
    w, b = rand(RNG, 6, 4, 3, 3), rand(RNG, 4 * attrs.get("group", 1))
    ins = ["x", "w", "b"] if with_bias else ["x", "w"]
    got, ref = onnx_vs_ort(node("ConvTranspose", ins, **attrs), {"x": x}, {"w": w, "b": b} if with_bias else {"w": w})
    assert_close(got[0], ref[0])


@pytest.mark.parametrize("attrs", [dict(strides=[2]), dict(strides=[3], pads=[1, 2], output_padding=[2]),
                                   dict(strides=[2], auto_pad="SAME_UPPER", dilations=[2])])
def test_1d_vs_onnxruntime(attrs):
    x = rand(RNG, 2, 4, 9)
    got, ref = onnx_vs_ort(node("ConvTranspose", ["x", "w", "b"], **attrs), {"x": x},
                           {"w": rand(RNG, 4, 3, 4), "b": rand(RNG, 3)})
    assert_close(got[0], ref[0])


@pytest.mark.parametrize("opset", [1, 11, 17])
def test_opsets_vs_onnxruntime(opset):
    x = rand(RNG, 1, 3, 4, 4)
    got, ref = onnx_vs_ort(node("ConvTranspose", ["x", "w"], strides=[2, 2], pads=[1, 1, 0, 0]),
                           {"x": x}, {"w": rand(RNG, 3, 2, 3, 3)}, opset=opset)
    assert_close(got[0], ref[0])


def test_activation_fused_into_the_epilogue(threads):
    x = rand(RNG, 2, 5, 4, 6)
    w, b = rand(RNG, 5, 3, 3, 3), rand(RNG, 3)
    m = ir_model([("ConvTranspose", ["x", "w", "b"], ["t"], {"strides": [2, 2]}),
                  ("LeakyRelu", ["t"], ["y"], {"alpha": 0.2})], {"x": x.shape}, ["y"],
                 {"w": w, "b": b}, num_threads=threads)
    assert [n.op for n in m.graph.nodes] == ["ConvTranspose"]
    assert m.graph.nodes[0].attrs["activation"] == "LeakyRelu"
    ref = conv_transpose2d(x, w, b, (2, 2))
    assert_close(m.run(None, {"x": x})[0], np.where(ref >= 0, ref, 0.2 * ref))


# ---------------------------------------------------------------------- validation
BAD = [
    ({"strides": [2, 2], "output_padding": [2, 0]}, (6, 4, 3, 3), r"output_padding \[2, 0\] must be smaller than strides \[2, 2\]"),
    ({"strides": [2, 2], "output_shape": [12, 12]}, (6, 4, 3, 3), r"output_shape \[12, 12\] is larger than"),
    ({"output_shape": [1, 1, 7, 9]}, (6, 4, 3, 3), r"output_shape \[1, 1, 7, 9\] must have 2 values"),
    ({"pads": [3, 0, 3, 0]}, (6, 4, 3, 3), r"pads \[3, 0, 3, 0\] crop the whole output of spatial axis 0"),
    ({}, (5, 4, 3, 3), r"weight 'w' \[5, 4, 3, 3\] \(C_in, C_out/group, kernel...\) is for 5 input channels but input 'x' has 6"),
    ({"group": 4}, (6, 4, 3, 3), r"input 'x' has 6 channels, not divisible by group=4"),
    ({"kernel_shape": [2, 2]}, (6, 4, 3, 3), r"kernel_shape \[2, 2\] does not match weight shape"),
    ({"strides": [0, 1]}, (6, 4, 3, 3), r"strides \[0, 1\] must hold values >= 1"),
    ({"auto_pad": "SAME"}, (6, 4, 3, 3), r"auto_pad must be NOTSET, VALID, SAME_UPPER or SAME_LOWER"),
    ({"activation": "Softmax"}, (6, 4, 3, 3), r"activation 'Softmax' cannot be fused"),
]


@pytest.mark.parametrize("attrs,wshape,msg", BAD, ids=[b[2][:30] for b in BAD])
def test_invalid_attributes_are_refused(attrs, wshape, msg):
    with pytest.raises(fastcnn.GraphError, match=r"node 'convtranspose0' \(ConvTranspose\): " + msg):
        run_op("ConvTranspose", {"x": rand(RNG, 1, 6, 3, 4)}, attrs, consts={"w": rand(RNG, *wshape)})


def test_bias_of_the_wrong_size_is_refused():
    with pytest.raises(fastcnn.GraphError, match=r"bias 'b' has shape \[3\]; expected \[4\]"):
        run_op("ConvTranspose", {"x": rand(RNG, 1, 6, 3, 4)}, consts={"w": rand(RNG, 6, 4, 3, 3), "b": rand(RNG, 3)})


def test_weights_computed_at_run_time_are_refused():
    with pytest.raises(fastcnn.UnsupportedOpError, match=r"input 1 \('w'\) \(weights\) must be a constant"):
        run_op("ConvTranspose", {"x": rand(RNG, 1, 6, 3, 4), "w": rand(RNG, 6, 4, 3, 3)})


def test_step_refuses_mismatched_buffers():
    x = rand(RNG, 1, 4, 3, 3)
    w = rand(RNG, 4, 2, 3, 3)
    out = np.empty((1, 2, 5, 5), np.float32)
    with pytest.raises(ValueError, match="column buffer too small"):
        deconv.ConvTransposeGemmStep(x, deconv.pack_weights(w, 1), None, out, np.empty(10, np.float32),
                                     (3, 3), (1, 1), (0, 0), (1, 1), 1)
    with pytest.raises(ValueError, match="packed weights do not fit"):
        deconv.ConvTransposeGemmStep(x, deconv.pack_weights(w, 2), None, out, np.empty(1000, np.float32),
                                     (3, 3), (1, 1), (0, 0), (1, 1), 1)
    with pytest.raises(ValueError, match="channels and group"):
        deconv.ConvTransposeDirectStep(x, w, None, out, (1, 1), (0, 0), (1, 1), 3)

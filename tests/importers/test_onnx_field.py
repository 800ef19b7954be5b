"""Graphs as exporters write them (torch.onnx.export, tf2onnx/keras2onnx, paddle2onnx), built with
onnx.helper and seeded weights, each run by fastcnn and onnxruntime at batch 1 and 3 with a
dynamic batch dimension: the blocks of MobileNetV3, EfficientNet, ShuffleNet, DenseNet,
Inception, SqueezeNet, AlexNet, Xception, a U-Net/FCN head, and the shape arithmetic exporters
emit around them. Each test also checks that the graph runs the way it should (activations
fused, shape subgraphs folded, nothing left that only folds)."""
import numpy as np
import pytest

import fastcnn
from helpers import assert_close, save_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


class Builder:
    """Appends ONNX nodes with seeded weights; every helper returns its output's name."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.k = [], {}, 0

    def name(self, base):
        self.k += 1
        return f"{base}_{self.k}"

    def const(self, value, base="c"):
        n = self.name(base)
        self.inits[n] = np.asarray(value)
        return n

    def op(self, op_type, inputs, n_out=1, **attrs):
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.name(op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x, c_in, c_out, k, stride=1, pad=None, group=1, bias=True, dilation=1):
        pad = (k - 1) // 2 * dilation if pad is None else pad
        fan_in = c_in // group * k * k
        w = self.rng.uniform(-1, 1, (c_out, c_in // group, k, k)) * np.sqrt(3.0 / fan_in)
        ins = [x, self.const(w.astype(np.float32), "w")]
        if bias:
            ins.append(self.const(self.rng.uniform(-0.1, 0.1, c_out).astype(np.float32), "b"))
        return self.op("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4,
                       group=group, dilations=[dilation, dilation])

    def bn(self, x, c):
        p = [self.rng.uniform(0.5, 1.5, c), self.rng.uniform(-0.2, 0.2, c), self.rng.uniform(-0.2, 0.2, c),
             self.rng.uniform(0.5, 1.5, c)]
        return self.op("BatchNormalization", [x] + [self.const(v.astype(np.float32), "bn") for v in p], epsilon=1e-3)

    def model(self, x_shape, outputs, opset=13, x_name="x"):
        ins = [helper.make_tensor_value_info(x_name, TensorProto.FLOAT, list(x_shape))]
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        inits = [numpy_helper.from_array(v, k) for k, v in self.inits.items()]
        m = helper.make_model(helper.make_graph(self.nodes, "field", ins, outs, inits),
                              opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8
        return m


def run_both(model, batches=(1, 3), shape=None, threads=2):
    """Run `model` (dynamic batch) in onnxruntime and fastcnn at each batch size; returns the
    fastcnn Model for structural checks."""
    import os
    path = save_onnx(model)
    try:
        m = fastcnn.load(path, num_threads=threads)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        rng = np.random.default_rng(5)
        for b in batches:
            x = rng.uniform(-1, 1, [b] + dims[1:]).astype(np.float32)
            ref = sess.run(None, {model.graph.input[0].name: x})
            got = m.run(None, {model.graph.input[0].name: x})
            assert len(got) == len(ref)
            for g, r in zip(got, ref):
                assert_close(g, r, f"batch {b}")
        return m
    finally:
        os.unlink(path)


def runtime_ops(m, batch=1):
    """Operators that run as kernels for a given batch (folded and view-only nodes left out)."""
    plan = m.plan_for([(batch,) + tuple(m.inputs[0].shape[1:])])
    return [n.op for n in plan.step_nodes]


def hard_swish(b, x, spelled):
    if spelled == "op":
        return b.op("HardSwish", [x])
    if spelled == "hardsigmoid":          # PyTorch before opset 14
        return b.op("Mul", [x, b.op("HardSigmoid", [x], alpha=1 / 6, beta=0.5)])
    six = b.op("Clip", [b.op("Add", [x, b.const(np.float32(3))]), b.const(np.float32(0)), b.const(np.float32(6))])
    return b.op("Mul", [x, b.op("Mul", [six, b.const(np.float32(1 / 6))])])   # Keras, through tf2onnx


def swish(b, x):
    return b.op("Mul", [x, b.op("Sigmoid", [x])])


# ---------------------------------------------------------------------- MobileNetV3
@pytest.mark.parametrize("spelled,opset", [("op", 14), ("hardsigmoid", 13), ("relu6", 13)])
def test_mobilenetv3_block_hardswish_and_squeeze_excitation(spelled, opset):
    """expand 1x1 -> BN -> hard-swish -> depthwise 3x3 -> BN -> hard-swish -> SE (global pool,
    1x1, ReLU, 1x1, HardSigmoid, per-channel Mul) -> project 1x1 -> BN -> residual Add."""
    b = Builder(1)
    c, e = 16, 48
    x = "x"
    h = hard_swish(b, b.bn(b.conv(x, c, e, 1, bias=False), e), spelled)
    h = hard_swish(b, b.bn(b.conv(h, e, e, 3, group=e, bias=False), e), spelled)
    s = b.op("GlobalAveragePool", [h])
    s = b.op("Relu", [b.conv(s, e, 12, 1)])
    s = b.op("HardSigmoid", [b.conv(s, 12, e, 1)], alpha=1 / 6, beta=0.5)
    h = b.op("Mul", [h, s])
    y = b.op("Add", [b.bn(b.conv(h, e, c, 1, bias=False), c), x])
    m = run_both(b.model((None, c, 13, 11), [y], opset=opset))
    ops = runtime_ops(m)
    assert "HardSwish" not in ops and "BatchNormalization" not in ops     # fused into the convs
    assert ops.count("Conv") == 5 and ops.count("Mul") == 1


# ---------------------------------------------------------------------- EfficientNet
def test_efficientnet_mbconv_with_swish():
    b = Builder(2)
    c, e = 8, 32
    x = "x"
    h = swish(b, b.bn(b.conv(x, c, e, 1, bias=False), e))
    h = swish(b, b.bn(b.conv(h, e, e, 5, group=e, bias=False), e))
    s = swish(b, b.conv(b.op("GlobalAveragePool", [h]), e, 4, 1))
    s = b.op("Sigmoid", [b.conv(s, 4, e, 1)])
    h = b.op("Mul", [h, s])
    y = b.op("Add", [b.bn(b.conv(h, e, c, 1, bias=False), c), x])
    m = run_both(b.model((None, c, 15, 15), [y]))
    ops = runtime_ops(m)
    assert ops.count("Conv") == 5 and "Sigmoid" not in ops and "Swish" not in ops
    assert [n.attrs.get("activation") for n in m.graph.nodes if n.op == "Conv"].count("Swish") == 3


# ---------------------------------------------------------------------- ShuffleNet
def shape_dims(b, x, axes, opset=13):
    """Unsqueezed dims of Shape(x), as PyTorch writes x.size(i) (Unsqueeze's axes became an
    input at opset 13)."""
    shape = b.op("Shape", [x])
    dims = [b.op("Gather", [shape, b.const(np.int64(a))], axis=0) for a in axes]
    if opset >= 13:
        return [b.op("Unsqueeze", [d, b.const(np.array([0]))]) for d in dims]
    return [b.op("Unsqueeze", [d], axes=[0]) for d in dims]


def test_shufflenet_v2_split_and_channel_shuffle_with_dynamic_batch():
    """Split in two, one branch 1x1 -> depthwise 3x3 -> 1x1, Concat, then the channel shuffle
    x.view(n, 2, c/2, h, w).transpose(1, 2).reshape(n, -1, h, w) with n read from Shape(x)."""
    b = Builder(3)
    c = 16
    left, right = b.op("Split", ["x", b.const(np.array([8, 8]))], n_out=2, axis=1)
    r = b.op("Relu", [b.bn(b.conv(right, 8, 8, 1, bias=False), 8)])
    r = b.bn(b.conv(r, 8, 8, 3, group=8, bias=False), 8)
    r = b.op("Relu", [b.bn(b.conv(r, 8, 8, 1, bias=False), 8)])
    cat = b.op("Concat", [left, r], axis=1)
    n, h, w = shape_dims(b, cat, (0, 2, 3))
    five = b.op("Concat", [n, b.const(np.array([2, c // 2])), h, w], axis=0)
    t = b.op("Transpose", [b.op("Reshape", [cat, five])], perm=[0, 2, 1, 3, 4])
    four = b.op("Concat", [n, b.const(np.array([-1])), h, w], axis=0)
    y = b.op("Reshape", [t, four])
    m = run_both(b.model((None, c, 9, 7), [y]))
    assert not {"Shape", "Gather", "Unsqueeze"} & set(runtime_ops(m, 3))


# ---------------------------------------------------------------------- DenseNet
def test_densenet_block_concat_chain_and_transition():
    b = Builder(4)
    c, g = 12, 6
    feats = ["x"]
    for i in range(3):
        inp = feats[0] if len(feats) == 1 else b.op("Concat", feats, axis=1)
        cin = c + g * i
        h = b.conv(b.op("Relu", [b.bn(inp, cin)]), cin, 4 * g, 1, bias=False)
        h = b.conv(b.op("Relu", [b.bn(h, 4 * g)]), 4 * g, g, 3, bias=False)
        feats.append(h)
    cat = b.op("Concat", feats, axis=1)
    t = b.conv(b.op("Relu", [b.bn(cat, c + 3 * g)]), c + 3 * g, 15, 1, bias=False)
    y = b.op("AveragePool", [t], kernel_shape=[2, 2], strides=[2, 2])
    run_both(b.model((None, c, 10, 9), [y]))


# ---------------------------------------------------------------------- Inception
def test_inception_block_branches():
    b = Builder(5)
    c = 10
    br1 = b.op("Relu", [b.conv("x", c, 8, 1)])
    br2 = b.op("Relu", [b.conv(b.op("Relu", [b.conv("x", c, 6, 1)]), 6, 8, 3)])
    br3 = b.op("Relu", [b.conv(b.op("Relu", [b.conv("x", c, 4, 1)]), 4, 6, 5)])
    pool = b.op("MaxPool", ["x"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    br4 = b.op("Relu", [b.conv(pool, c, 5, 1)])
    y = b.op("Concat", [br1, br2, br3, br4], axis=1)
    m = run_both(b.model((None, c, 11, 13), [y]))
    assert "Relu" not in runtime_ops(m)


# ---------------------------------------------------------------------- SqueezeNet
def test_squeezenet_fire_module():
    b = Builder(6)
    sq = b.op("Relu", [b.conv("x", 24, 6, 1)])
    e1 = b.op("Relu", [b.conv(sq, 6, 16, 1)])
    e3 = b.op("Relu", [b.conv(sq, 6, 16, 3)])
    y = b.op("MaxPool", [b.op("Concat", [e1, e3], axis=1)], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    run_both(b.model((None, 24, 13, 13), [y]))


# ---------------------------------------------------------------------- AlexNet / ZFNet
@pytest.mark.parametrize("opset", [9, 13])
def test_alexnet_lrn_stack(opset):
    """conv 11x11/4 -> ReLU -> LRN -> max pool, grouped conv 5x5 -> ReLU -> LRN -> max pool,
    flatten -> Gemm -> ReLU -> Dropout -> Gemm -> Softmax."""
    b = Builder(7)
    h = b.op("Relu", [b.conv("x", 3, 16, 11, stride=4, pad=2)])
    h = b.op("MaxPool", [b.op("LRN", [h], size=5, alpha=1e-4, beta=0.75, bias=1.0)], kernel_shape=[3, 3], strides=[2, 2])
    h = b.op("Relu", [b.conv(h, 16, 24, 5, group=2)])
    h = b.op("MaxPool", [b.op("LRN", [h], size=5, alpha=1e-4, beta=0.75, bias=2.0)], kernel_shape=[3, 3], strides=[2, 2])
    f = b.op("Flatten", [h], axis=1)
    w1 = b.const((b.rng.uniform(-1, 1, (32, 24 * 4 * 4)) * 0.05).astype(np.float32))
    g = b.op("Relu", [b.op("Gemm", [f, w1, b.const(np.zeros(32, np.float32))], transB=1)])
    if opset < 12:
        g = b.op("Dropout", [g], ratio=0.5)
    else:
        g = b.op("Dropout", [g])
    w2 = b.const((b.rng.uniform(-1, 1, (10, 32)) * 0.2).astype(np.float32))
    y = b.op("Softmax", [b.op("Gemm", [g, w2, b.const(np.zeros(10, np.float32))], transB=1)], axis=1)
    m = run_both(b.model((None, 3, 79, 79), [y], opset=opset))
    assert runtime_ops(m).count("LRN") == 2


# ---------------------------------------------------------------------- Xception
def test_xception_separable_convs_with_strided_residual():
    b = Builder(8)
    c, d = 8, 16
    h = b.bn(b.conv(b.conv("x", c, c, 3, group=c, bias=False), c, d, 1, bias=False), d)
    h = b.op("Relu", [h])
    h = b.bn(b.conv(b.conv(h, d, d, 3, group=d, bias=False), d, d, 1, bias=False), d)
    h = b.op("MaxPool", [h], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    res = b.bn(b.conv("x", c, d, 1, stride=2, bias=False), d)
    y = b.op("Add", [h, res])
    run_both(b.model((None, c, 12, 11), [y]))


# ---------------------------------------------------------------------- U-Net / FCN head
@pytest.mark.parametrize("coord", ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"])
def test_unet_head_with_conv_transpose_and_resize(coord):
    """Encoder (two strided convs), decoder ConvTranspose 2x2/2 concatenated with the skip,
    bilinear Resize back to the input's size read from Shape(x) (an FCN head), per-pixel
    classes through a 1x1 conv and Softmax over the channels."""
    b = Builder(9)
    e1 = b.op("Relu", [b.conv("x", 3, 8, 3, stride=2)])
    e2 = b.op("Relu", [b.conv(e1, 8, 16, 3, stride=2)])
    wt = (b.rng.uniform(-1, 1, (16, 8, 2, 2)) * 0.3).astype(np.float32)
    up = b.op("Relu", [b.op("ConvTranspose", [e2, b.const(wt), b.const(np.zeros(8, np.float32))],
                            strides=[2, 2], kernel_shape=[2, 2])])
    d1 = b.op("Relu", [b.conv(b.op("Concat", [up, e1], axis=1), 16, 8, 3)])
    hw = b.op("Slice", [b.op("Shape", ["x"]), b.const(np.array([2])), b.const(np.array([4]))])
    nc = b.op("Slice", [b.op("Shape", [d1]), b.const(np.array([0])), b.const(np.array([2]))])
    sizes = b.op("Concat", [nc, hw], axis=0)
    full = b.op("Resize", [d1, "", "", sizes], mode="linear", coordinate_transformation_mode=coord)
    y = b.op("Softmax", [b.conv(full, 8, 4, 1)], axis=1)
    m = run_both(b.model((None, 3, 16, 12), [y]))
    ops = runtime_ops(m, 3)
    assert {"ConvTranspose", "Resize"} <= set(ops) and "Relu" not in ops and "Shape" not in ops


def test_fpn_nearest_upsample_scale_factor():
    """YOLO/FPN: F.interpolate(scale_factor=2, mode='nearest') at opset 11 is
    Resize(x, roi=[], scales=[1, 1, 2, 2]) with asymmetric coordinates and floor rounding."""
    b = Builder(10)
    p5 = b.op("Relu", [b.conv("x", 8, 8, 3, stride=2)])
    up = b.op("Resize", [p5, b.const(np.array([], np.float32)), b.const(np.array([1, 1, 2, 2], np.float32))],
              mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    y = b.op("Add", [up, b.conv("x", 8, 8, 1)])
    run_both(b.model((None, 8, 10, 14), [y], opset=11))


# ---------------------------------------------------------------------- activations and shapes
def test_gelu_as_erf_subgraph():
    """PyTorch before opset 20: 0.5 * x * (1 + erf(x / sqrt(2)))."""
    b = Builder(11)
    h = b.conv("x", 6, 6, 3)
    e = b.op("Erf", [b.op("Div", [h, b.const(np.float32(np.sqrt(2)))])])
    y = b.op("Mul", [b.op("Mul", [h, b.op("Add", [e, b.const(np.float32(1))])]), b.const(np.float32(0.5))])
    run_both(b.model((None, 6, 7, 5), [y]))


def test_flatten_through_shape_gather_unsqueeze_concat_reshape():
    """x.view(x.size(0), -1) as PyTorch exports it, then Gemm."""
    b = Builder(12)
    h = b.op("GlobalAveragePool", [b.op("Relu", [b.conv("x", 5, 7, 3)])])
    (n,) = shape_dims(b, h, (0,))
    flat = b.op("Reshape", [h, b.op("Concat", [n, b.const(np.array([-1]))], axis=0)])
    y = b.op("Gemm", [flat, b.const(b.rng.uniform(-1, 1, (7, 3)).astype(np.float32))])
    m = run_both(b.model((None, 5, 6, 6), [y]))
    assert runtime_ops(m, 3) == ["Conv", "GlobalAveragePool", "Gemm"]


def test_expand_with_constantofshape_equal_where_chain():
    """torch's expand(n, -1, -1, -1) at opsets 9-12: the -1s are replaced by the input's dims
    through ConstantOfShape -> Mul -> Equal -> Where, then Expand; plus a Range/Cast chain."""
    b = Builder(13)
    (n,) = shape_dims(b, "x", (0,), opset=11)
    target = b.op("Concat", [n, b.const(np.array([-1, -1, -1]))], axis=0)
    ones = b.op("ConstantOfShape", [b.const(np.array([4]))], value=numpy_helper.from_array(np.array([1], np.int64)))
    minus = b.op("Mul", [ones, b.const(np.array(-1, np.int64))])
    is_minus = b.op("Equal", [target, minus])
    shape = b.op("Where", [is_minus, ones, target])
    bias = b.const(b.rng.uniform(-1, 1, (1, 4, 1, 1)).astype(np.float32))
    expanded = b.op("Expand", [bias, shape])
    rng_idx = b.op("Cast", [b.op("Range", [b.const(np.array(0, np.int64)), b.const(np.array(4, np.int64)),
                                           b.const(np.array(1, np.int64))])], to=TensorProto.FLOAT)
    scale = b.op("Reshape", [rng_idx, b.const(np.array([1, 4, 1, 1]))])
    y = b.op("Add", [b.op("Mul", ["x", scale]), expanded])
    m = run_both(b.model((None, 4, 3, 5), [y], opset=11))
    assert set(runtime_ops(m, 3)) <= {"Mul", "Add", "Expand"}


def test_mish_and_softplus_as_exported():
    b = Builder(14)
    h = b.conv("x", 4, 6, 3)
    y = b.op("Mul", [h, b.op("Tanh", [b.op("Softplus", [h])])])
    z = b.op("Softplus", [b.conv(y, 6, 6, 1)])
    m = run_both(b.model((None, 4, 8, 8), [z]))
    assert runtime_ops(m) == ["Conv", "Conv"]   # Mish and Softplus run in the conv epilogues


# ---------------------------------------------------------------------- more heads and layers
@pytest.mark.parametrize("opset", [13, 18])
def test_keras_nhwc_squeeze_excitation_with_reduce_mean(opset):
    """tf2onnx: the NHWC input is transposed to NCHW, global pooling is ReduceMean over (2, 3)
    with keepdims (axes an attribute before opset 18, an input from 18), the block ends with a
    transpose back to NHWC."""
    b = Builder(15)
    x = b.op("Transpose", ["x"], perm=[0, 3, 1, 2])
    h = b.op("Relu", [b.conv(x, 6, 12, 3)])
    if opset < 18:
        s = b.op("ReduceMean", [h], axes=[2, 3], keepdims=1)
    else:
        s = b.op("ReduceMean", [h, b.const(np.array([2, 3]))], keepdims=1)
    s = b.op("Sigmoid", [b.conv(b.op("Relu", [b.conv(s, 12, 4, 1)]), 4, 12, 1)])
    y = b.op("Transpose", [b.op("Mul", [h, s])], perm=[0, 2, 3, 1])
    run_both(b.model((None, 9, 7, 6), [y], opset=opset))


@pytest.mark.parametrize("mode", ["CRD", "DCR"])
def test_subpixel_upsampling_depth_to_space(mode):
    """ESPCN: conv to C*r^2 channels then DepthToSpace (PyTorch's PixelShuffle is CRD, TF's
    depth_to_space DCR)."""
    b = Builder(16)
    h = b.op("Tanh", [b.conv("x", 3, 12, 3)])
    y = b.op("DepthToSpace", [b.conv(h, 12, 4 * 3, 3)], blocksize=2, mode=mode)
    run_both(b.model((None, 3, 7, 9), [y]))


def test_yolov2_reorg_space_to_depth_and_concat():
    b = Builder(17)
    fine = b.op("LeakyRelu", [b.conv("x", 4, 8, 3)], alpha=0.1)
    coarse = b.op("LeakyRelu", [b.conv(fine, 8, 16, 3, stride=2)], alpha=0.1)
    y = b.op("Concat", [b.op("SpaceToDepth", [fine], blocksize=2), coarse], axis=1)
    run_both(b.model((None, 4, 10, 12), [y]))


def test_ssd_l2_normalization():
    """SSD's L2Norm: x / (sqrt(sum over channels of x^2) + eps) * per-channel scale."""
    b = Builder(18)
    h = b.op("Relu", [b.conv("x", 3, 10, 3)])
    norm = b.op("Sqrt", [b.op("ReduceSum", [b.op("Pow", [h, b.const(np.float32(2))]), b.const(np.array([1]))],
                              keepdims=1)])
    y = b.op("Mul", [b.op("Div", [h, b.op("Add", [norm, b.const(np.float32(1e-10))])]),
                     b.const(b.rng.uniform(5, 20, (1, 10, 1, 1)).astype(np.float32))])
    run_both(b.model((None, 3, 8, 8), [y]))


def test_style_transfer_instance_norm_reflect_pad_and_upsample():
    b = Builder(19)
    h = b.op("Pad", ["x", b.const(np.array([0, 0, 2, 2, 0, 0, 2, 2]))], mode="reflect")
    h = b.op("Relu", [b.op("InstanceNormalization", [b.conv(h, 3, 8, 5, pad=0), b.const(b.rng.uniform(0.5, 1.5, 8).astype(np.float32)),
                                                     b.const(b.rng.uniform(-0.2, 0.2, 8).astype(np.float32))])])
    up = b.op("Resize", [h, "", b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest",
              coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    y = b.op("Tanh", [b.conv(up, 8, 3, 3)])
    run_both(b.model((None, 3, 11, 9), [y]))


def test_yolo_detection_head_decoding():
    """YOLOv3-style decoding with the grid built from Range/Reshape/Tile/Concat (all folded):
    xy = (sigmoid(t_xy) + grid) * stride, wh = exp(t_wh) * anchors, conf = sigmoid(t_c)."""
    b = Builder(20)
    gh, gw, na = 5, 6, 2
    p = b.conv("x", 6, na * 5, 1)                                    # (n, na*5, gh, gw)
    p = b.op("Reshape", [p, b.const(np.array([-1, na, 5, gh, gw]))])
    txy = b.op("Slice", [p, b.const(np.array([0])), b.const(np.array([2])), b.const(np.array([2]))])
    twh = b.op("Slice", [p, b.const(np.array([2])), b.const(np.array([4])), b.const(np.array([2]))])
    tc = b.op("Slice", [p, b.const(np.array([4])), b.const(np.array([5])), b.const(np.array([2]))])
    xs = b.op("Cast", [b.op("Range", [b.const(np.array(0, np.int64)), b.const(np.array(gw, np.int64)),
                                      b.const(np.array(1, np.int64))])], to=TensorProto.FLOAT)
    ys = b.op("Cast", [b.op("Range", [b.const(np.array(0, np.int64)), b.const(np.array(gh, np.int64)),
                                      b.const(np.array(1, np.int64))])], to=TensorProto.FLOAT)
    gx = b.op("Tile", [b.op("Reshape", [xs, b.const(np.array([1, 1, 1, 1, gw]))]), b.const(np.array([1, 1, 1, gh, 1]))])
    gy = b.op("Tile", [b.op("Reshape", [ys, b.const(np.array([1, 1, 1, gh, 1]))]), b.const(np.array([1, 1, 1, 1, gw]))])
    grid = b.op("Concat", [gx, gy], axis=2)                          # (1, 1, 2, gh, gw)
    xy = b.op("Mul", [b.op("Add", [b.op("Sigmoid", [txy]), grid]), b.const(np.float32(8))])
    anchors = b.const(np.array([10, 13, 33, 23], np.float32).reshape(1, na, 2, 1, 1))
    wh = b.op("Mul", [b.op("Exp", [twh]), anchors])
    y = b.op("Concat", [xy, wh, b.op("Sigmoid", [tc])], axis=2)
    m = run_both(b.model((None, 6, gh, gw), [y]))
    assert not {"Range", "Tile", "Cast"} & set(runtime_ops(m, 3))


def test_elementwise_math_chain():
    """Log/Exp/Neg/Abs/Reciprocal/Floor/Ceil/Sqrt/Pow as they appear in losses and
    normalisations exported into inference graphs."""
    b = Builder(21)
    h = b.conv("x", 3, 4, 3)
    a = b.op("Log", [b.op("Add", [b.op("Abs", [h]), b.const(np.float32(1))])])
    e = b.op("Exp", [b.op("Neg", [b.op("Abs", [h])])])
    r = b.op("Reciprocal", [b.op("Add", [b.op("Mul", [h, h]), b.const(np.float32(2))])])
    q = b.op("Sub", [b.op("Ceil", [b.op("Mul", [h, b.const(np.float32(3.3))])]),
                     b.op("Floor", [b.op("Mul", [h, b.const(np.float32(2.7))])])])
    s = b.op("Pow", [b.op("Sqrt", [b.op("Add", [e, r])]), b.const(np.float32(1.5))])
    y = b.op("Sum", [a, q, s])
    run_both(b.model((None, 3, 6, 7), [y]))


# ---------------------------------------------------------------------- existing ops, exporter forms
INT64_MAX, INT64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min


def test_torch_slicing_forms():
    """x[:, :, 1:] (ends INT64_MAX), torch.flip(x, [3]) (step -1 from -1 to INT64_MIN),
    x[..., ::2] and a negative axis."""
    b = Builder(22)
    h = b.conv("x", 4, 6, 3)
    crop = b.op("Slice", [h, b.const(np.array([1])), b.const(np.array([INT64_MAX])), b.const(np.array([2]))])
    flip = b.op("Slice", [crop, b.const(np.array([-1])), b.const(np.array([INT64_MIN])), b.const(np.array([3])),
                          b.const(np.array([-1]))])
    every2 = b.op("Slice", [flip, b.const(np.array([0])), b.const(np.array([INT64_MAX])), b.const(np.array([-1])),
                            b.const(np.array([2]))])
    run_both(b.model((None, 4, 7, 9), [every2]))


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_torch_chunk_split_forms(opset):
    """torch.chunk(x, 3, dim=1) on 10 channels: sizes 4, 4, 2 (an attribute before opset 13, an
    input from 13, num_outputs from 18)."""
    b = Builder(23)
    h = b.op("Relu", [b.conv("x", 3, 10, 3)])
    if opset < 13:
        parts = b.op("Split", [h], n_out=3, axis=1, split=[4, 4, 2])
    elif opset < 18:
        parts = b.op("Split", [h, b.const(np.array([4, 4, 2]))], n_out=3, axis=1)
    else:
        parts = b.op("Split", [h], n_out=3, axis=1, num_outputs=3)
    y = b.op("Concat", [parts[2], parts[0], parts[1]], axis=-3)
    run_both(b.model((None, 3, 6, 5), [y], opset=opset))


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_reductions_as_exported(opset):
    """ReduceMean/ReduceMax/ReduceSum over channels and space with keepdims 0 and 1, axes as an
    attribute or (ReduceSum from 13, all from 18) an input."""
    b = Builder(24)
    h = b.conv("x", 3, 6, 3)

    def red(op, axes, keep):
        if opset >= 18 or (op == "ReduceSum" and opset >= 13):
            return b.op(op, [h, b.const(np.array(axes))], keepdims=keep)
        return b.op(op, [h], axes=axes, keepdims=keep)
    mean = red("ReduceMean", [2, 3], 1)
    mx = red("ReduceMax", [1], 1)
    sm = red("ReduceSum", [-1, -2], 0)
    y = b.op("Add", [b.op("Add", [b.op("Mul", [h, mean]), mx]), b.op("Unsqueeze", [sm], axes=[2, 3])
                     if opset < 13 else b.op("Unsqueeze", [sm, b.const(np.array([2, 3]))])])
    run_both(b.model((None, 3, 5, 6), [y], opset=opset))


def test_pad_tile_expand_gather_as_exported():
    """Pad with pads and value as inputs (opset 11+), Tile, Expand to a shape read from another
    tensor, Gather of channels with a negative index."""
    b = Builder(25)
    h = b.op("Relu", [b.conv("x", 3, 4, 3)])
    padded = b.op("Pad", [h, b.const(np.array([0, 0, 1, 2, 0, 0, 2, 1])), b.const(np.float32(0.5))], mode="constant")
    tiled = b.op("Tile", [b.op("GlobalMaxPool", [padded]), b.const(np.array([1, 1, 9, 10]))])
    expanded = b.op("Expand", [b.const(np.float32(0.25).reshape(1, 1, 1, 1)), b.op("Shape", [padded])])
    picked = b.op("Gather", [padded, b.const(np.array([3, -1, 0]))], axis=1)
    y = b.op("Concat", [b.op("Add", [tiled, expanded]), picked], axis=1)
    run_both(b.model((None, 3, 6, 7), [y]))


@pytest.mark.parametrize("batch_dims", ["static", "dynamic"])
def test_torch_interpolate_size_through_float_shape_arithmetic(batch_dims):
    """F.interpolate(scale_factor=1.5, recompute_scale_factor=True) at opset 11: sizes =
    Concat(Shape(x)[:2], Cast(Floor(Cast(Shape(x)[2:], float) * 1.5), int64))."""
    b = Builder(26)
    h = b.op("Relu", [b.conv("x", 3, 5, 3)])
    shape = b.op("Shape", [h])
    nc = b.op("Slice", [shape, b.const(np.array([0])), b.const(np.array([2]))])
    hw = b.op("Cast", [b.op("Slice", [shape, b.const(np.array([2])), b.const(np.array([4]))])], to=TensorProto.FLOAT)
    new_hw = b.op("Cast", [b.op("Floor", [b.op("Mul", [hw, b.const(np.array([1.5, 1.5], np.float32))])])],
                  to=TensorProto.INT64)
    sizes = b.op("Concat", [nc, new_hw], axis=0)
    y = b.op("Resize", [h, b.const(np.array([], np.float32)), b.const(np.array([], np.float32)), sizes],
             mode="linear", coordinate_transformation_mode="pytorch_half_pixel")
    m = run_both(b.model((None if batch_dims == "dynamic" else 3, 3, 7, 9), [y], opset=11),
                 batches=(1, 3) if batch_dims == "dynamic" else (3,))
    assert runtime_ops(m, 3) == ["Conv", "Resize"]


def test_yolov5_focus_slices_and_silu_head():
    """YOLOv5: Focus (x[..., ::2, ::2] and its three shifts concatenated), Conv + SiLU,
    nearest upsample, and the box decode (sigmoid * 2 - 0.5 + grid, (sigmoid * 2)^2 * anchor)."""
    b = Builder(27)

    def s2(x, h0, w0):
        return b.op("Slice", [x, b.const(np.array([h0, w0])), b.const(np.array([INT64_MAX, INT64_MAX])),
                              b.const(np.array([2, 3])), b.const(np.array([2, 2]))])
    focus = b.op("Concat", [s2("x", 0, 0), s2("x", 1, 0), s2("x", 0, 1), s2("x", 1, 1)], axis=1)
    h = swish(b, b.bn(b.conv(focus, 12, 16, 3, bias=False), 16))
    up = b.op("Resize", [h, b.const(np.array([], np.float32)), b.const(np.array([1, 1, 2, 2], np.float32))],
              mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    p = b.op("Sigmoid", [b.conv(up, 16, 6, 1)])
    xy = b.op("Sub", [b.op("Mul", [p, b.const(np.float32(2))]), b.const(np.float32(0.5))])
    wh = b.op("Mul", [b.op("Pow", [b.op("Mul", [p, b.const(np.float32(2))]), b.const(np.float32(2))]),
                      b.const(b.rng.uniform(5, 30, (1, 6, 1, 1)).astype(np.float32))])
    y = b.op("Concat", [xy, wh], axis=1)
    m = run_both(b.model((None, 3, 12, 14), [y]))
    assert runtime_ops(m).count("Sigmoid") == 0      # fused into the 1x1 conv's epilogue

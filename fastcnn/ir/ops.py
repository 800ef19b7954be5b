"""The operator table: every operator the IR accepts, with its shape function and folder.

A test checks that every entry here either has a runtime kernel (`fastcnn.runtime.kernels`) or
is marked fold-only (evaluated while planning, never at run time), and that each is tested.
"""
from __future__ import annotations

from fastcnn.ir import fold, shapes
from fastcnn.ir.opspec import Attr, OpSpec

INF = float("inf")

_WINDOW = {
    "kernel_shape": Attr("ints"), "strides": Attr("ints", []), "pads": Attr("ints", []),
    "auto_pad": Attr("str", "NOTSET"),
}
_EPILOGUE = {"activation": Attr("str", ""), "activation_alpha": Attr("float", 0.0),
             "activation_beta": Attr("float", 0.0)}
_CONV = {**_WINDOW, "kernel_shape": Attr("ints", []), "dilations": Attr("ints", []),
         "group": Attr("int", 1), **_EPILOGUE}
_MAXPOOL = {**_WINDOW, "dilations": Attr("ints", []), "ceil_mode": Attr("int", 0),
            "storage_order": Attr("int", 0)}
_AVGPOOL = {**_WINDOW, "dilations": Attr("ints", []), "ceil_mode": Attr("int", 0),
            "count_include_pad": Attr("int", 0)}
_CONV_TRANSPOSE = {**_CONV, "output_padding": Attr("ints", []), "output_shape": Attr("ints", [])}
_STOCHASTIC = {**_WINDOW, "ceil_mode": Attr("int", 0)}
_RESIZE = {"mode": Attr("str", "nearest"), "coordinate_transformation_mode": Attr("str", "half_pixel"),
           "nearest_mode": Attr("str", "round_prefer_floor"), "cubic_coeff_a": Attr("float", -0.75),
           "exclude_outside": Attr("int", 0), "extrapolation_value": Attr("float", 0.0),
           "axes": Attr("ints", []), "keep_aspect_ratio_policy": Attr("str", "stretch")}
_REDUCE = {"keepdims": Attr("int", 1), "noop_with_empty_axes": Attr("int", 0)}


def _unary(doc, attrs=None, float_only=True):
    return OpSpec(shapes.unary_float if float_only else shapes.unary, fold.unary,
                  attrs=attrs or {}, doc=doc)


def _binary(doc, n=(2, 2)):
    return OpSpec(shapes.broadcast, fold.broadcast, inputs=n, doc=doc)


RUNTIME_COMPARE_DOC = ("constant folding; at run time only as the condition of a Where, or cast to "
                       "float32 (fused into a Where)")


ARG_DOC = "int64 output; at run time for a graph output, a Cast to float32 or a view of either"


def _compare(doc):
    return OpSpec(shapes.compare, fold.compare, inputs=(2, 2), doc=doc)


def _reduce(doc):
    return OpSpec(shapes.reduce, fold.reduce, inputs=(1, 2), attrs=_REDUCE, doc=doc)


OPS = {
    # --- convolution and dense
    # weight_scale: the weights are W * weight_scale[c] per output channel c (a folded
    # BatchNormalization: passes/batchnorm.py), applied when the weights are packed
    "Conv": OpSpec(shapes.conv, None, inputs=(2, 4), attrs={**_CONV, "weight_scale": Attr("floats", [])},
                   doc="1-D/2-D, any stride, dilation, padding, groups/depthwise; fused bias, "
                       "activation and residual add"),
    "ConvTranspose": OpSpec(shapes.conv_transpose, None, inputs=(2, 3), attrs=_CONV_TRANSPOSE,
                            doc="1-D/2-D, strides, pads, output_padding, output_shape, dilations, "
                                "groups, auto_pad; fused bias and activation"),
    "Gemm": OpSpec(shapes.gemm, None, inputs=(2, 3),
                   attrs={"alpha": Attr("float", 1.0), "beta": Attr("float", 1.0),
                          "transA": Attr("int", 0), "transB": Attr("int", 0), **_EPILOGUE},
                   doc="alpha, beta, transA/transB, broadcast C; fused activation"),
    "MatMul": OpSpec(shapes.matmul, None, inputs=(2, 2), doc="numpy matmul semantics, batched"),
    # --- pooling
    "MaxPool": OpSpec(shapes.pool, None, attrs=_MAXPOOL, doc="pads, strides, dilations, ceil_mode"),
    "MinPool": OpSpec(shapes.pool, None, attrs=_MAXPOOL, doc="fastcnn op: minimum over each window"),
    "AveragePool": OpSpec(shapes.pool, None, attrs=_AVGPOOL, doc="count_include_pad 0/1, ceil_mode"),
    "LpPool": OpSpec(shapes.pool, None, attrs={**_WINDOW, "dilations": Attr("ints", []),
                                               "ceil_mode": Attr("int", 0), "p": Attr("int", 2)},
                     doc="(sum |x|^p)^(1/p) over each window; p=2 is L2 pooling"),
    "StochasticPool": OpSpec(shapes.pool, None, attrs=_STOCHASTIC,
                             doc="fastcnn op: stochastic pooling at inference, sum(a^2)/sum(a) over "
                                 "the non-negative values of each window (0 if that sum is 0)"),
    "Maxout": OpSpec(shapes.maxout, None, attrs={"pieces": Attr("int")},
                     doc="fastcnn op: (N, C*pieces, ...) -> (N, C, ...), max over each group of "
                         "`pieces` consecutive channels"),
    "GlobalAveragePool": OpSpec(shapes.global_pool, None, doc="mean over all spatial positions"),
    "GlobalMaxPool": OpSpec(shapes.global_pool, None, doc="max over all spatial positions"),
    "GlobalLpPool": OpSpec(shapes.global_pool, None, attrs={"p": Attr("int", 2)}, doc="Lp norm over space"),
    # --- normalisation
    "BatchNormalization": OpSpec(shapes.batchnorm, None, inputs=(5, 5), outputs=(1, 1),
                                 attrs={"epsilon": Attr("float", 1e-5), "momentum": Attr("float", 0.9),
                                        "training_mode": Attr("int", 0)},
                                 doc="inference mode; folded into the preceding conv/dense"),
    "InstanceNormalization": OpSpec(shapes.instancenorm, None, inputs=(3, 3),
                                    attrs={"epsilon": Attr("float", 1e-5)}, doc="per sample and channel"),
    "LayerNormalization": OpSpec(shapes.layernorm, None, inputs=(2, 3),
                                 attrs={"axis": Attr("int", -1), "epsilon": Attr("float", 1e-5),
                                        "stash_type": Attr("int", 1)}, doc="over the trailing axes"),
    "LRN": OpSpec(shapes.lrn, None, attrs={"size": Attr("int"), "alpha": Attr("float", 1e-4),
                                           "beta": Attr("float", 0.75), "bias": Attr("float", 1.0)},
                  doc="local response normalisation across channels"),
    # --- activations
    "Relu": _unary("max(x, 0)", float_only=False),
    "LeakyRelu": _unary("x if x >= 0 else alpha*x", {"alpha": Attr("float", 0.01)}),
    "PRelu": OpSpec(shapes.prelu, fold.broadcast, inputs=(2, 2), doc="learned slope, broadcast"),
    "Elu": _unary("x if x > 0 else alpha*(exp(x)-1)", {"alpha": Attr("float", 1.0)}),
    "Selu": _unary("gamma*(x if x > 0 else alpha*(exp(x)-1))",
                   {"alpha": Attr("float", 1.6732632423543772), "gamma": Attr("float", 1.0507009873554805)}),
    "Celu": _unary("max(0,x) + min(0, alpha*(exp(x/alpha)-1))", {"alpha": Attr("float", 1.0)}),
    "ThresholdedRelu": _unary("x if x > alpha else 0", {"alpha": Attr("float", 1.0)}),
    "Clip": _unary("min(max(x, min), max); ReLU6 is Clip(0, 6)",
                   {"min": Attr("float", -INF), "max": Attr("float", INF)}, float_only=False),
    "Sigmoid": _unary("1/(1+exp(-x))"),
    "Tanh": _unary("tanh(x)"),
    "HardSigmoid": _unary("clip(alpha*x+beta, 0, 1)", {"alpha": Attr("float", 0.2), "beta": Attr("float", 0.5)}),
    "HardSwish": _unary("x*clip(x/6+1/2, 0, 1)"),
    "Softplus": _unary("log(1+exp(x))"),
    "Softsign": _unary("x/(1+|x|)"),
    "Gelu": _unary("x*Phi(x), exact or tanh approximation", {"approximate": Attr("str", "none")}),
    "Mish": _unary("x*tanh(softplus(x))"),
    "Swish": _unary("x*sigmoid(alpha*x) (SiLU for alpha=1); fused from Mul(x, Sigmoid(x))",
                    {"alpha": Attr("float", 1.0)}),
    "Softmax": OpSpec(shapes.softmax, fold.softmax, attrs={"axis": Attr("int", -1)}, doc="any axis"),
    "LogSoftmax": OpSpec(shapes.softmax, fold.softmax, attrs={"axis": Attr("int", -1)}, doc="any axis"),
    # --- elementwise math
    "Exp": _unary("exp(x)"),
    "Log": _unary("log(x)"),
    "Sqrt": _unary("sqrt(x)"),
    "Reciprocal": _unary("1/x"),
    "Erf": _unary("erf(x)"),
    "Neg": _unary("-x", float_only=False),
    "Abs": _unary("|x|", float_only=False),
    "Sign": _unary("sign(x)", float_only=False),
    "Floor": _unary("floor(x)"),
    "Ceil": _unary("ceil(x)"),
    "Round": _unary("round half to even"),
    "Add": _binary("numpy broadcasting"),
    "Sub": _binary("numpy broadcasting"),
    "Mul": _binary("numpy broadcasting"),
    "Div": _binary("numpy broadcasting"),
    "Pow": _binary("numpy broadcasting"),
    "Mod": OpSpec(shapes.broadcast, fold.broadcast, inputs=(2, 2), attrs={"fmod": Attr("int", 0)},
                  doc="constant folding only"),
    "Sum": _binary("variadic, broadcasting", (1, None)),
    "Mean": _binary("variadic, broadcasting", (1, None)),
    "Max": _binary("variadic, broadcasting", (1, None)),
    "Min": _binary("variadic, broadcasting", (1, None)),
    "Equal": _compare(RUNTIME_COMPARE_DOC),
    "Less": _compare(RUNTIME_COMPARE_DOC),
    "Greater": _compare(RUNTIME_COMPARE_DOC),
    "LessOrEqual": _compare(RUNTIME_COMPARE_DOC),
    "GreaterOrEqual": _compare(RUNTIME_COMPARE_DOC),
    "And": _compare("constant folding only"),
    "Or": _compare("constant folding only"),
    "Xor": _compare("constant folding only"),
    "Not": OpSpec(shapes.logical_not, fold.logical_not, doc="constant folding only"),
    "Where": OpSpec(shapes.where, fold.where, inputs=(3, 4), attrs={"compare": Attr("str", "")},
                    doc="constant folding; at run time when its condition is a comparison of float "
                        "tensors (fused: `compare` and inputs a, b, x, y)"),
    # --- layout and data movement
    "Identity": OpSpec(shapes.identity, fold.identity, doc="removed"),
    "Dropout": OpSpec(shapes.dropout, fold.identity, inputs=(1, 3), outputs=(1, 2),
                      attrs={"seed": Attr("int", 0)}, doc="inference: identity, removed"),
    "Flatten": OpSpec(shapes.flatten, fold.flatten, attrs={"axis": Attr("int", 1)}, doc="a view"),
    "Reshape": OpSpec(shapes.reshape, fold.reshape, inputs=(2, 2), attrs={"allowzero": Attr("int", 0)},
                      doc="0 and -1 in the shape; a view"),
    "Squeeze": OpSpec(shapes.squeeze, fold.squeeze, inputs=(1, 2), doc="a view"),
    "Unsqueeze": OpSpec(shapes.unsqueeze, fold.unsqueeze, inputs=(2, 2), doc="a view"),
    "Transpose": OpSpec(shapes.transpose, fold.transpose, attrs={"perm": Attr("ints", [])}, doc="any rank"),
    "Concat": OpSpec(shapes.concat, fold.concat, inputs=(1, None), attrs={"axis": Attr("int")}, doc="any axis"),
    "Split": OpSpec(shapes.split, fold.split, inputs=(1, 2), outputs=(1, 1024),
                    attrs={"axis": Attr("int", 0), "num_outputs": Attr("int", 0)}, doc="any axis"),
    "Slice": OpSpec(shapes.slice_, fold.slice_, inputs=(3, 5), doc="constant starts/ends/axes/steps"),
    "Pad": OpSpec(shapes.pad, fold.pad, inputs=(2, 4), attrs={"mode": Attr("str", "constant")},
                  doc="constant, reflect, edge, wrap"),
    "Expand": OpSpec(shapes.expand, fold.expand, inputs=(2, 2), doc="broadcast to a constant shape"),
    "Tile": OpSpec(shapes.tile, fold.tile, inputs=(2, 2), doc="constant repeats"),
    "Gather": OpSpec(shapes.gather, fold.gather, inputs=(2, 2), attrs={"axis": Attr("int", 0)},
                     doc="constant indices"),
    "Resize": OpSpec(shapes.resize, None, inputs=(1, 4), attrs=_RESIZE,
                     doc="nearest (every nearest_mode), linear, cubic over H and W; every "
                         "coordinate_transformation_mode; scales or sizes, axes, keep_aspect_ratio_policy"),
    "DepthToSpace": OpSpec(shapes.depth_to_space, fold.depth_to_space,
                           attrs={"blocksize": Attr("int"), "mode": Attr("str", "DCR")}, doc="DCR and CRD"),
    "SpaceToDepth": OpSpec(shapes.space_to_depth, fold.space_to_depth,
                           attrs={"blocksize": Attr("int")}, doc=""),
    "ReduceMean": _reduce("any axes, keepdims; over the spatial axes, a GlobalAveragePool"),
    "ReduceSum": _reduce("any axes, keepdims"),
    "ReduceMax": _reduce("any axes, keepdims"),
    "ReduceMin": _reduce("any axes, keepdims"),
    "ReduceProd": _reduce("any axes, keepdims"),
    "ReduceL1": _reduce("any axes, keepdims"),
    "ReduceL2": _reduce("any axes, keepdims"),
    "ReduceSumSquare": _reduce("any axes, keepdims"),
    "ReduceLogSumExp": _reduce("any axes, keepdims"),
    "ArgMax": OpSpec(shapes.argreduce, fold.argreduce,
                     attrs={"axis": Attr("int", 0), "keepdims": Attr("int", 1),
                            "select_last_index": Attr("int", 0)}, doc=ARG_DOC),
    "ArgMin": OpSpec(shapes.argreduce, fold.argreduce,
                     attrs={"axis": Attr("int", 0), "keepdims": Attr("int", 1),
                            "select_last_index": Attr("int", 0)}, doc=ARG_DOC),
    "TopK": OpSpec(shapes.topk, fold.topk, inputs=(2, 2), outputs=(2, 2),
                   attrs={"axis": Attr("int", -1), "largest": Attr("int", 1), "sorted": Attr("int", 1)},
                   doc="k constant; values, and int64 indices for a graph output, a Cast to float32 "
                       "or a view; equal values in index order, NaN first"),
    # --- shape arithmetic (always folded while planning)
    "Shape": OpSpec(shapes.shape_of, fold.shape_of, fold_on_types=True,
                    attrs={"start": Attr("int", 0), "end": Attr("int", 2 ** 62)}, doc="folded"),
    "Size": OpSpec(shapes.size_of, fold.size_of, fold_on_types=True, doc="folded"),
    "Cast": OpSpec(shapes.cast, fold.cast, attrs={"to": Attr("str")}, doc="float32 to float32 at run time"),
    "ConstantOfShape": OpSpec(shapes.constant_of_shape, fold.constant_of_shape,
                              attrs={"value": Attr("float", 0.0), "dtype": Attr("str", "float32")},
                              doc="folded"),
    "Range": OpSpec(shapes.range_, fold.range_, inputs=(3, 3), doc="folded"),
    "NonZero": OpSpec(shapes.nonzero, fold.nonzero, doc="folded"),
}

"""The kernel table: operator -> prepare function (see `fastcnn.runtime.prepare`).

Operators of `fastcnn.ir.ops.OPS` missing here are fold-only: they are evaluated while planning
when their inputs are known (shape arithmetic, comparisons) and refused if they would have to run.
"""
from __future__ import annotations

from fastcnn.runtime import (k_conv, k_deconv, k_dense, k_eltwise, k_norm, k_pool, k_reduce,
                             k_resize, k_tensor)

KERNELS = {
    "Conv": k_conv.prepare_conv,
    "ConvTranspose": k_deconv.prepare_conv_transpose,
    "Gemm": k_dense.prepare_gemm,
    "MatMul": k_dense.prepare_matmul,
    "MaxPool": k_pool.prepare_pool,
    "MinPool": k_pool.prepare_pool,
    "AveragePool": k_pool.prepare_pool,
    "LpPool": k_pool.prepare_pool,
    "StochasticPool": k_pool.prepare_pool,
    "Maxout": k_reduce.prepare_maxout,
    "ArgMax": k_reduce.prepare_argreduce,
    "ArgMin": k_reduce.prepare_argreduce,
    "TopK": k_reduce.prepare_topk,
    "GlobalAveragePool": k_pool.prepare_global_pool,
    "GlobalMaxPool": k_pool.prepare_global_pool,
    "GlobalLpPool": k_pool.prepare_global_pool,
    "BatchNormalization": k_norm.prepare_batchnorm,
    "InstanceNormalization": k_norm.prepare_instancenorm,
    "LayerNormalization": k_norm.prepare_layernorm,
    "LRN": k_norm.prepare_lrn,
    "Softmax": k_eltwise.prepare_softmax,
    "LogSoftmax": k_eltwise.prepare_softmax,
    "PRelu": k_eltwise.prepare_binary,
    "Add": k_eltwise.prepare_binary,
    "Sub": k_eltwise.prepare_binary,
    "Mul": k_eltwise.prepare_binary,
    "Div": k_eltwise.prepare_binary,
    "Pow": k_eltwise.prepare_binary,
    "Sum": k_eltwise.prepare_binary,
    "Mean": k_eltwise.prepare_binary,
    "Max": k_eltwise.prepare_binary,
    "Where": k_eltwise.prepare_where,
    "Min": k_eltwise.prepare_binary,
    "Identity": k_tensor.prepare_alias,
    "Dropout": k_tensor.prepare_alias,
    "Flatten": k_tensor.prepare_alias,
    "Reshape": k_tensor.prepare_alias,
    "Squeeze": k_tensor.prepare_alias,
    "Unsqueeze": k_tensor.prepare_alias,
    "Transpose": k_tensor.prepare_transpose,
    "Concat": k_tensor.prepare_concat,
    "Split": k_tensor.prepare_split,
    "Slice": k_tensor.prepare_slice,
    "Pad": k_tensor.prepare_pad,
    "Expand": k_tensor.prepare_expand,
    "Tile": k_tensor.prepare_tile,
    "Gather": k_tensor.prepare_gather,
    "Resize": k_resize.prepare_resize,
    "DepthToSpace": k_tensor.prepare_depth_to_space,
    "SpaceToDepth": k_tensor.prepare_depth_to_space,
}
for _op in k_reduce.CHAINS:
    KERNELS[_op] = k_reduce.prepare_reduce
for _op in k_eltwise.UNARY_PARAMS:
    if _op not in KERNELS:
        KERNELS[_op] = k_eltwise.prepare_unary
KERNELS["Gelu"] = k_eltwise.prepare_unary
KERNELS["Cast"] = k_eltwise.prepare_unary

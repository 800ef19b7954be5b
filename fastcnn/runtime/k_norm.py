"""prepare for normalisation ops."""
from __future__ import annotations

import numpy as np

from fastcnn._kernels import norm as norm_kernels
from fastcnn.runtime.prepare import Prepared


def _nci(shape):
    inner = 1
    for d in shape[2:]:
        inner *= d
    return (shape[0], shape[1], inner)


def prepare_batchnorm(p):
    """Inference BatchNormalization as a per-channel affine (when it was not folded into a conv)."""
    eps = p.attrs["epsilon"]

    def make():
        scale, bias, mean, var = (np.asarray(p.const(i), np.float64) for i in range(1, 5))
        s = scale / np.sqrt(var + eps)
        return s.astype(np.float32), (bias - mean * s).astype(np.float32)

    for i in range(1, 5):
        if p.const(i) is None:
            p.unsupported("BatchNormalization with statistics computed at run time")
    scale, shift = p.cached("affine", make)
    shape = _nci(p.in_types[0].shape)

    def bind(ins, outs, scratch):
        return norm_kernels.ChannelAffineStep(ins[0].reshape(shape), outs[0].reshape(shape), scale, shift)

    return Prepared(bind, inplace=0, flops=2 * p.out_types[0].size)


def prepare_lrn(p):
    a = p.attrs
    shape = _nci(p.in_types[0].shape)

    def bind(ins, outs, scratch):
        return norm_kernels.LRNStep(ins[0].reshape(shape), outs[0].reshape(shape), a["size"],
                                    a["alpha"], a["beta"], a["bias"])

    return Prepared(bind, flops=p.out_types[0].size * (a["size"] + 4))


def prepare_instancenorm(p):
    for i in (1, 2):
        if p.const(i) is None:
            p.unsupported("InstanceNormalization with scale/bias computed at run time")
    scale, shift = p.const_f32(1), p.const_f32(2)
    shape = _nci(p.in_types[0].shape)

    def bind(ins, outs, scratch):
        return norm_kernels.InstanceNormStep(ins[0].reshape(shape), outs[0].reshape(shape),
                                             scale, shift, p.attrs["epsilon"])

    return Prepared(bind, flops=5 * p.out_types[0].size)


def prepare_layernorm(p):
    x = p.in_types[0].shape
    axis = p.attrs["axis"] % len(x)
    inner = int(np.prod(x[axis:], dtype=np.int64))
    rows = int(np.prod(x[:axis], dtype=np.int64))
    norm_shape = x[axis:]
    for i in (1, 2):
        if len(p.node.inputs) > i and p.node.inputs[i] and p.const(i) is None:
            p.unsupported("LayerNormalization with scale/bias computed at run time")
    scale = np.ascontiguousarray(np.broadcast_to(p.const_f32(1), norm_shape).reshape(-1))
    shift = (np.ascontiguousarray(np.broadcast_to(p.const_f32(2), norm_shape).reshape(-1))
             if len(p.node.inputs) > 2 and p.node.inputs[2] else np.zeros(inner, np.float32))

    def bind(ins, outs, scratch):
        return norm_kernels.LayerNormStep(ins[0].reshape(rows, inner), outs[0].reshape(rows, inner),
                                          scale, shift, p.attrs["epsilon"])

    return Prepared(bind, flops=5 * p.out_types[0].size)

"""prepare for Gemm and MatMul.

Constant weights (Gemm's B, MatMul's 2-D constant B) are packed once at load into micro-kernel
column panels and run by `PackedDenseStep` with bias, addend and activation fused. MatMul with
operands computed at run time runs `BatchedMatMulStep` (the same micro-kernels reading A and B in
place). `DenseStep` (the plain row kernel) stays as the reference the tests compare with.
"""
from __future__ import annotations

import numpy as np

from fastcnn import config
from fastcnn._kernels import gemm as gemm_kernels
from fastcnn.runtime.k_eltwise import activation_code
from fastcnn.runtime.prepare import Prepared

NR = 16  # micro-kernel column panel width (ukernel.pxd)


def scratch_slots(p) -> int:
    """Per-thread scratch areas a step reserves: enough for the plan's threads and for every
    physical core (the thread count may be raised after planning; more threads than slots run
    as many as there are slots)."""
    return max(1, p.num_threads, config.physical_cores())


def prepare_gemm(p):
    """Y (m, n) = act(alpha * A' @ B' + beta * C). B and C constant: alpha folded into the packed
    B, beta*C into a bias row (n,) or a full (m, n) addend. Runtime B/C are copied per call."""
    a = p.attrs
    m, n = p.out_types[0].shape
    k = p.in_types[0].shape[0] if a["transA"] else p.in_types[0].shape[1]
    alpha, beta = a["alpha"], a["beta"]
    act = activation_code(a["activation"])
    b_const = p.const(1)
    if b_const is None:
        p.unsupported("Gemm with weights computed at run time (B must be a constant)")

    def make_wp():
        # panels from W as stored: B^T (n, k) with transB (PyTorch's Linear), else B (k, n)
        alpha32 = np.float32(alpha)
        if a["transB"]:
            # read as the graph holds them (bytewise: any byte offset) with alpha applied as
            # they are packed, so no scaled temporary is made: the float32 alpha times a
            # float32 weight is exact in float64, so rounding it once gives the bits of the
            # float32 product w * alpha32. The weights may view an .onnx file at an odd
            # offset (importers/onnx._copy_misaligned): the packer reads them bytewise.
            return gemm_kernels.pack_bt_panels(p.const(1), None if alpha == 1.0 else np.full(n, alpha32),
                                               alloc=p.alloc, num_threads=p.num_threads)
        # B is read in place too (bytewise); with an alpha, scaled first
        w = p.const(1) if alpha == 1.0 else p.const_f32(1) * alpha32
        return gemm_kernels.pack_b_panels(w, p.alloc, p.num_threads)

    wp = p.cached(("panels", alpha, a["transB"]), make_wp)
    bias, addend_const, addend_runtime = None, None, False
    if len(p.node.inputs) > 2 and p.node.inputs[2] and beta != 0.0:
        c = p.const(2)
        if c is None:
            addend_runtime = True
        else:
            c = np.asarray(c, np.float32) * np.float32(beta)
            if c.ndim == 2 and c.shape[0] != 1:
                addend_const = np.ascontiguousarray(np.broadcast_to(c, (m, n)))
            else:
                bias = np.ascontiguousarray(np.broadcast_to(c.reshape(-1) if c.size > 1 else c.reshape(()), (n,)))
    if addend_runtime:
        p.unsupported("Gemm with C computed at run time")
    transA = a["transA"]

    def bind(ins, outs, scratch):
        x = ins[0]
        steps = []
        if transA:
            from fastcnn._kernels.copy import CopyStep
            xt = scratch[:m * k].reshape(m, k)
            steps.append(CopyStep(x.reshape(-1), xt.reshape(-1), [m, k], 0, [1, m], 0, [k, 1]))
            x = xt
        steps.append(gemm_kernels.PackedDenseStep(x, wp, bias, addend_const, outs[0], act,
                                                  a["activation_alpha"], a["activation_beta"],
                                                  gemm_kernels.k_block(k)))
        return steps

    return Prepared(bind, scratch=m * k if transA else 0, flops=2 * m * n * k)


def prepare_matmul(p):
    """numpy.matmul semantics. A constant B with a 2-D shape becomes a DenseStep over the
    flattened leading dims of A; otherwise a batched step walks broadcast offsets."""
    sa, sb = p.in_types[0].shape, p.in_types[1].shape
    out_shape = p.out_types[0].shape
    a2 = (1,) + sa if len(sa) == 1 else sa
    b2 = sb + (1,) if len(sb) == 1 else sb
    m, k, n = a2[-2], a2[-1], b2[-1]
    batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    flops = 2 * int(np.prod(batch, dtype=np.int64)) * m * n * k
    if p.const(1) is not None and len(b2) == 2:
        # read in place, at any byte offset (gemm.pack_b_panels)
        wp = p.cached("panels", lambda: gemm_kernels.pack_b_panels(np.asarray(p.const(1)).reshape(k, n),
                                                                   p.alloc, p.num_threads))
        rows = int(np.prod(a2[:-1], dtype=np.int64))

        def bind(ins, outs, scratch):
            x = np.ascontiguousarray(ins[0], np.float32).reshape(rows, k)
            return gemm_kernels.PackedDenseStep(x, wp, None, None, outs[0].reshape(rows, n),
                                                kc=gemm_kernels.k_block(k))

        return Prepared(bind, flops=flops)

    a_batch = np.broadcast_to(np.arange(int(np.prod(a2[:-2], dtype=np.int64)), dtype=np.int64)
                              .reshape(a2[:-2]), batch).reshape(-1) * (m * k)
    b_batch = np.broadcast_to(np.arange(int(np.prod(b2[:-2], dtype=np.int64)), dtype=np.int64)
                              .reshape(b2[:-2]), batch).reshape(-1) * (k * n)
    c_batch = np.arange(a_batch.shape[0], dtype=np.int64) * (m * n)
    kc = gemm_kernels.k_block(k)
    slots = scratch_slots(p)

    def bind(ins, outs, scratch):
        a_arr = np.ascontiguousarray(ins[0], np.float32).reshape(-1)
        b_arr = np.ascontiguousarray(ins[1], np.float32).reshape(-1)
        return gemm_kernels.BatchedMatMulStep(a_arr, b_arr, outs[0].reshape(-1),
                                              np.ascontiguousarray(a_batch),
                                              np.ascontiguousarray(b_batch), c_batch, m, k, n,
                                              kc, scratch[:slots * kc * NR], slots)

    return Prepared(bind, scratch=slots * kc * NR, flops=flops)

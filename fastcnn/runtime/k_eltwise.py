"""prepare functions for elementwise ops: unary activations and math, broadcasting binary and
variadic ops, PRelu, Softmax/LogSoftmax, float32 Cast, Where on a fused comparison."""
from __future__ import annotations

import numpy as np

from fastcnn._kernels import blocked, eltwise
from fastcnn.runtime.layout import broadcast_strides, c_strides, collapse, flat
from fastcnn.runtime.prepare import Prepared

# ONNX op -> (activation code name, alpha attr, beta attr)
UNARY_PARAMS = {
    "Relu": ("Relu", None, None), "LeakyRelu": ("LeakyRelu", "alpha", None),
    "Elu": ("Elu", "alpha", None), "Selu": ("Selu", "alpha", "gamma"), "Celu": ("Celu", "alpha", None),
    "ThresholdedRelu": ("ThresholdedRelu", "alpha", None), "Clip": ("Clip", "min", "max"),
    "Sigmoid": ("Sigmoid", None, None), "Tanh": ("Tanh", None, None),
    "HardSigmoid": ("HardSigmoid", "alpha", "beta"), "HardSwish": ("HardSwish", None, None),
    "Softplus": ("Softplus", None, None), "Softsign": ("Softsign", None, None),
    "Mish": ("Mish", None, None), "Swish": ("Swish", "alpha", None), "Exp": ("Exp", None, None), "Log": ("Log", None, None),
    "Sqrt": ("Sqrt", None, None), "Reciprocal": ("Reciprocal", None, None), "Erf": ("Erf", None, None),
    "Neg": ("Neg", None, None), "Abs": ("Abs", None, None), "Sign": ("Sign", None, None),
    "Floor": ("Floor", None, None), "Ceil": ("Ceil", None, None), "Round": ("Round", None, None),
    "Identity": ("Identity", None, None), "Dropout": ("Identity", None, None),
    "Cast": ("Identity", None, None),
}


def activation_code(name: str) -> int:
    return eltwise.ACT_CODES[name]


def prepare_unary(p):
    op = p.node.op
    if op == "Gelu":
        code = eltwise.ACT_CODES["GeluTanh" if p.attrs["approximate"] == "tanh" else "Gelu"]
        alpha = beta = 0.0
    else:
        name, a, b = UNARY_PARAMS[op]
        code = eltwise.ACT_CODES[name]
        alpha = float(p.attrs[a]) if a else 0.0
        beta = float(p.attrs[b]) if b else 0.0
    if op == "Cast" and p.attrs["to"] != "float32":
        p.unsupported(f"casting to {p.attrs['to']} at run time")
    if op == "Cast" and p.in_types[0].dtype == "int64":
        # the indices of an ArgMax or ArgMin computed at run time (runtime/plan.py)
        def bind_indices(ins, outs, scratch):
            return eltwise.IndexToFloatStep(flat(ins[0]), flat(outs[0]))
        return Prepared(bind_indices, flops=p.out_types[0].size)

    def bind(ins, outs, scratch):
        return eltwise.UnaryStep(flat(np.asarray(ins[0], np.float32)), flat(outs[0]), code, alpha, beta)

    return Prepared(bind, inplace=0, flops=p.out_types[0].size)


def _broadcast_walk(arrays, shape) -> tuple:
    """(dims, per-array element strides) to read each C-contiguous array of `arrays` broadcast
    to `shape`, with the dims every array walks contiguously merged (`layout.collapse`)."""
    cshape, strides = collapse(shape, *[broadcast_strides(a.shape, shape) for a in arrays],
                               c_strides(shape))
    if len(cshape) > 6:
        raise ValueError("broadcast over more than 6 non-mergeable dims")
    return cshape, strides[:len(arrays)]


def _binary_step(a, b, out, op_code):
    """A BinaryStep computing out = a (op) b with numpy broadcasting (a, b: arrays)."""
    a = np.ascontiguousarray(a, np.float32)
    b = np.ascontiguousarray(b, np.float32)
    cshape, (csa, csb) = _broadcast_walk((a, b), out.shape)
    return eltwise.BinaryStep(flat(a), flat(b), flat(out), cshape, csa, csb, op_code)


def _channel_scale_operands(in_types, out_type):
    """(i, j) when in_types are an (N, C, H, W) tensor i and an (N or 1, C, 1, 1) factor j (the
    output having i's shape), else None."""
    if len(in_types) != 2 or any(t is None for t in in_types) or out_type is None:
        return None
    for i, j in ((0, 1), (1, 0)):
        big, small = in_types[i].shape, in_types[j].shape
        if len(big) == 4 and big == out_type.shape and len(small) == 4 and \
                small[0] in (1, big[0]) and small[1] == big[1] and small[2:] == (1, 1):
            return i, j
    return None


def scale_layouts(node, in_types, out_types, attrs, in_blocked, out_blocked) -> bool:
    """Layout rule (runtime/blocking.py): Mul of an (N, C, H, W) tensor by an (N or 1, C, 1, 1)
    factor, either order (squeeze-and-excitation), reads and writes the tensor blocked or not;
    the factor's bytes are the same in either layout. Any other Mul is NCHW only."""
    if not any(in_blocked) and not any(out_blocked):
        return True
    pair = _channel_scale_operands(in_types, out_types[0] if out_types else None)
    return pair is not None and in_blocked[pair[0]] == out_blocked[0]


def _prepare_channel_scale(p, big, small):
    """out = x * s on blocked tensors (blocked.ChannelScaleBlockedStep)."""
    n, c, h, w = p.out_types[0].shape
    per_image = p.in_types[small].shape[0] != 1

    const = p.const(small) is not None

    def bind(ins, outs, scratch):
        s = ins[small]
        if const:
            s = np.ascontiguousarray(s, np.float32)   # fixed: converted once, here
        elif not s.flags.c_contiguous:
            # the step reads the factor in place at every run: a copy made here would go stale
            raise ValueError("channel scale: the factor's buffer is not contiguous")
        return blocked.ChannelScaleBlockedStep(ins[big].reshape(-1), s.reshape(-1), outs[0].reshape(-1), n, c,
                                               h * w, per_image)

    return Prepared(bind, inplace=big, flops=p.out_types[0].size)


def prepare_binary(p):
    """Add/Sub/Mul/Div/Pow/Max/Min/Sum/Mean/PRelu; variadic ops chain binary steps into out.
    A Mul by a per-channel factor on a blocked tensor runs as a channel scale."""
    op = p.node.op
    if op == "Mul" and p.blocked_out(0):
        big, small = _channel_scale_operands(p.in_types, p.out_types[0])
        return _prepare_channel_scale(p, big, small)
    n_in = len(p.node.inputs)
    if len(p.out_types[0].shape) > 6:
        p.unsupported("broadcasting over more than 6 dims")
    if op in ("Sum", "Mean"):
        code = eltwise.BINARY_CODES["Add"]
    else:
        code = eltwise.BINARY_CODES[op]
    # A constant operand of another numeric type (Pow's int64 exponent) is converted to float32
    # in bind; runtime tensors are float32 (the planner refuses anything else).

    def bind(ins, outs, scratch):
        out = outs[0]
        arrs = [np.asarray(x, np.float32) for x in ins]
        if n_in == 1:
            steps = [eltwise.UnaryStep(flat(np.broadcast_to(arrs[0], out.shape).copy()
                                            if arrs[0].shape != out.shape else arrs[0]),
                                       flat(out), eltwise.ACT_CODES["Identity"])]
        else:
            steps = [_binary_step(arrs[0], arrs[1], out, code)]
            for x in arrs[2:]:
                steps.append(_binary_step(out, x, out, code))
        if op == "Mean" and n_in > 1:
            steps.append(_binary_step(out, np.array(1.0 / n_in, np.float32), out,
                                      eltwise.BINARY_CODES["Mul"]))
        return steps

    # in place is safe for the first input when it already has the output's shape
    inplace = 0 if p.in_types[0].shape == p.out_types[0].shape and n_in <= 2 else None
    return Prepared(bind, inplace=inplace, flops=p.out_types[0].size * max(1, n_in - 1))


def prepare_where(p):
    """Where (A, B, X, Y) with `compare`: out = X where A (compare) B else Y, all four broadcast
    to the output (passes/compare_where.py fuses a comparison in). Where (condition, X, Y) with
    a constant condition (a mask known while planning) runs as condition > 0 on a float32 copy of
    it. A bool condition computed at run time is refused before it gets here (every bool tensor
    at run time is)."""
    compare = p.attrs["compare"]
    shape = p.out_types[0].shape
    if len(shape) > 6:
        p.unsupported("broadcasting over more than 6 dims")
    mask = None
    if compare and p.const(0) is not None and p.const(1) is not None:
        # both compared tensors known (a comparison too large to fold): compared here, in their
        # own dtype (int64 values past 2**24 would not survive float32)
        from fastcnn.ir.fold import COMPARE
        mask = COMPARE[compare](p.const(0), p.const(1))
    elif not compare:
        mask = p.const(0)
        if mask is None:
            p.unsupported("a condition computed at run time that is not a comparison of float tensors")
    if mask is not None:
        mask = np.asarray(mask, np.float32)
        compare = "Greater"
    code = eltwise.COMPARE_CODES[compare]

    def bind(ins, outs, scratch):
        if mask is not None:
            operands = [mask, np.zeros((), np.float32)] + list(ins[-2:])
        else:
            operands = ins
        arrs = [np.ascontiguousarray(x, np.float32) for x in operands]
        cshape, strides = _broadcast_walk(arrs, shape)
        return eltwise.SelectStep(*[flat(a) for a in arrs], flat(outs[0]), cshape, strides, code)

    return Prepared(bind, flops=p.out_types[0].size)


def prepare_softmax(p):
    shape = p.in_types[0].shape
    axis = p.attrs["axis"] % len(shape)
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    log = p.node.op == "LogSoftmax"

    def bind(ins, outs, scratch):
        return eltwise.SoftmaxStep(flat(ins[0]), flat(outs[0]), outer, shape[axis], inner, log)

    return Prepared(bind, flops=3 * p.out_types[0].size)

"""prepare for Reduce* ops: a chain of ReduceStep (x (outer, length, inner) -> (outer, inner)).

Reduced axes are merged with their reduced neighbours and kept axes with kept neighbours, so the
input becomes alternating kept/reduced groups; each reduced group is one step, innermost first,
with the intermediates in scratch. Every chained reduction is exact: the mean of equal-sized
means, the max of maxes, log-sum-exp of log-sum-exps, sqrt of a sum of sums of squares.
"""
from __future__ import annotations

import numpy as np

from fastcnn._kernels import reduce as reduce_kernels
from fastcnn.ir.opspec import NodeContext, product
from fastcnn.runtime.layout import flat
from fastcnn.runtime.prepare import Prepared

# op -> (kind of the first step, kind of the middle steps, kind of the last step)
CHAINS = {
    "ReduceSum": ("SUM", "SUM", "SUM"),
    "ReduceMean": ("MEAN", "MEAN", "MEAN"),
    "ReduceMax": ("MAX", "MAX", "MAX"),
    "ReduceMin": ("MIN", "MIN", "MIN"),
    "ReduceProd": ("PROD", "PROD", "PROD"),
    "ReduceL1": ("L1", "SUM", "SUM"),
    "ReduceSumSquare": ("SUMSQUARE", "SUM", "SUM"),
    "ReduceL2": ("SUMSQUARE", "SUM", "SQRT_SUM"),
    "ReduceLogSumExp": ("LOGSUMEXP", "LOGSUMEXP", "LOGSUMEXP"),
}
SINGLE = {"ReduceL2": "L2"}  # a one-step chain of these uses its own kind


def reduce_axes(p) -> list:
    """Sorted reduced axes of a Reduce node, or [] when it is a no-op (noop_with_empty_axes)."""
    x = p.in_types[0].shape
    ctx = NodeContext(p.node, p.attrs, p.in_types, p.in_consts, p.where)
    axes = ctx.const_ints(1, "axes") if ctx.has(1) else []
    if not axes:
        if p.attrs["noop_with_empty_axes"]:
            return []
        axes = list(range(len(x)))
    return sorted({ctx.axis(a, len(x), "axes") for a in axes})


def reduce_groups(shape, axes):
    """Merge (dim, reduced?) runs: [(size, reduced), ...], size-1 dims dropped (they change
    nothing), at least one group."""
    groups = []
    for k, d in enumerate(shape):
        red = k in axes
        if d == 1:
            continue
        if groups and groups[-1][1] == red:
            groups[-1] = (groups[-1][0] * d, red)
        else:
            groups.append((d, red))
    return groups


def prepare_reduce(p):
    op = p.node.op
    x = p.in_types[0].shape
    axes = reduce_axes(p)
    if not axes:
        return Prepared(alias=True)
    groups = reduce_groups(x, set(axes))
    # (outer, length, inner) of each step, innermost reduced group first
    links = []
    sizes = [d for d, _ in groups]
    for g in range(len(groups) - 1, -1, -1):
        d, red = groups[g]
        if not red:
            continue
        outer = product(sizes[:g])
        inner = product(sizes[g + 1:])
        links.append((outer, d, inner))
        sizes[g] = 1
    if not links:
        # every reduced axis has size 1 (or the input is empty along no reduced axis):
        # the result is the elementwise first step applied to x, as a length-1 reduction
        links.append((1, 1, product(x)))
    first, middle, last = CHAINS[op]
    if len(links) == 1:
        kinds = [SINGLE.get(op, first)]
    else:
        kinds = [first] + [middle] * (len(links) - 2) + [last]
    codes = [reduce_kernels.REDUCE_CODES[k] for k in kinds]
    inter = [o * i for o, _, i in links[:-1]]  # intermediate sizes, in scratch
    scratch = sum(inter)
    flops = sum(o * d * i for o, d, i in links)

    def bind(ins, outs, scratch_buf):
        steps, src, off = [], flat(ins[0]), 0
        for k, ((outer, length, inner), code) in enumerate(zip(links, codes)):
            if k == len(links) - 1:
                dst = flat(outs[0])
            else:
                dst = scratch_buf[off:off + outer * inner]
                off += outer * inner
            steps.append(reduce_kernels.ReduceStep(src, dst, outer, length, inner, code))
            src = dst
        return steps

    return Prepared(bind, scratch=scratch, flops=flops)


def prepare_maxout(p):
    """Maxout: x (n, c*pieces, spatial...) viewed as (n*c, pieces, spatial) -> out (n*c, spatial),
    the maximum over each group of `pieces` consecutive channels (NaN propagates)."""
    x = p.in_types[0].shape
    k = p.attrs["pieces"]
    outer = x[0] * (x[1] // k)
    inner = product(x[2:])

    def bind(ins, outs, scratch):
        return reduce_kernels.ReduceStep(flat(ins[0]), flat(outs[0]), outer, k, inner,
                                         reduce_kernels.REDUCE_CODES["MAX"])

    return Prepared(bind, flops=outer * k * inner)


def _around(shape, axis: int) -> tuple:
    """(outer, length, inner): `shape` viewed as three dims around `axis`."""
    return product(shape[:axis]), shape[axis], product(shape[axis + 1:])


def prepare_argreduce(p):
    """ArgMax / ArgMin at run time: an int64 tensor, which a graph output, a Cast to float32
    or a view of either may read (runtime/plan.py refuses any other reader). x viewed as
    (outer, length, inner) around the axis; keepdims only changes the output's shape."""
    shape = p.in_types[0].shape
    axis = p.attrs["axis"] % len(shape)   # in range: checked by the shape function
    outer, length, inner = _around(shape, axis)
    is_max = p.node.op == "ArgMax"
    last = bool(p.attrs["select_last_index"])

    def bind(ins, outs, scratch):
        return reduce_kernels.ArgReduceStep(flat(ins[0]), flat(outs[0]), outer, length, inner,
                                            is_max, last)

    return Prepared(bind, flops=product(shape))


def prepare_topk(p):
    """TopK at run time (k constant): values float32, indices int64 (runtime/plan.py lets a
    graph output, a Cast to float32 or a view read them). x viewed as (outer, length, inner)
    around the axis; the result is sorted whatever `sorted` says (ONNX leaves the order free)."""
    shape = p.in_types[0].shape
    axis = p.attrs["axis"] % len(shape)   # in range: checked by the shape function
    outer, length, inner = _around(shape, axis)
    k = p.out_types[0].shape[axis]
    largest = bool(p.attrs["largest"])

    def bind(ins, outs, scratch):
        # an omitted output (an empty name) has no arena view: the step writes its own array
        values = outs[0] if outs[0] is not None else np.empty(p.out_types[0].shape, np.float32)
        indices = outs[1] if len(outs) > 1 and outs[1] is not None else \
            np.empty(p.out_types[0].shape, np.int64)
        return reduce_kernels.TopKStep(flat(ins[0]), flat(values), flat(indices), outer,
                                       length, inner, k, largest)

    return Prepared(bind, flops=product(shape) * max(1, k.bit_length()))

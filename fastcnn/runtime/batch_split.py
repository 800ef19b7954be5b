"""Running a batch as independent parts, one thread each.

A plan splits each layer's work over the threads, so on 2 threads every layer reads what the
other core wrote a layer before, and the activations cross between the cores' caches at every
step. On the small models this costs more than the second core gives: the edge CNN at batch 16
runs each of its steps 1.8-1.97x faster on 2 threads than on 1, and the whole model 1.1x. When
every node computes each sample from that sample alone, the batch can instead be cut into one
part per thread, each run from the first layer to the last by its own single-threaded plan, so
a part's activations stay in one core's caches (edge CNN batch 16 on 2 threads: 2.24 -> 1.35 ms;
MobileNetV2 89 -> 78 ms).

`independent_samples` decides, from the inferred graph at the full batch and at a part's batch,
whether output row i is computed from input row i alone by the same function at both sizes;
`part_sizes` decides how to cut a batch. `fastcnn.model.Model.run` uses both.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from fastcnn._kernels import step as _step
from fastcnn._kernels.step import run_on_threads
from fastcnn.ir.infer import Inferred
from fastcnn.ir.opspec import NodeContext

# Below this many FLOPs per part, handing a part to another thread costs more than it saves:
# LeNet-5 on 2 threads gains at batch 16 (parts of 6.8 MFLOP, 0.29 -> 0.19-0.20 ms) and lost
# at batch 8 (3.4 MFLOP: 0.098 ms whole, 0.116 in parts) when the parts passed the GIL between
# their steps. They no longer do (`run_step_lists`): batch 8 then took 0.145 ms whole and
# 0.136 in parts in one run, batch 4 went either way between runs: the threshold stays.
MIN_PART_FLOPS = 5_000_000

# ops that keep the batch dimension's size and work along the axis their attribute `axis`
# names: it must not be the batch (a LayerNormalization scale may broadcast over it)
_AXIS_OP = frozenset(["Softmax", "LogSoftmax", "LayerNormalization", "ArgMax", "ArgMin", "TopK"])
# constant inputs that may differ between batch sizes (a target shape holding the batch); the
# output's shape check covers them
_SHAPE_INPUTS = frozenset([("Reshape", 1), ("Expand", 1)])

_op_kinds = None


def _kinds():
    """Op -> how it treats the batch, from the kernel table (runtime/kernels.py), so that an op
    added there is classified with the kernel that runs it:
    "sample": computes each sample from that sample alone, whatever its attributes (convs,
    pools, normalisations, unary ops, views);
    "broadcast": elementwise with broadcasting; every runtime input must have the output's rank;
    "resizes": can mix samples only by changing the size of dim 0 (a reduction, concat, split,
    gather, tile or transpose across the batch, a Gemm with transA), which the shape checks of
    `independent_samples` refuse: the output would not hold `batch` rows at the full size and
    `part_batch` rows at the part's;
    other ops have a rule in `_rule_holds` or are refused."""
    global _op_kinds
    if _op_kinds is None:
        from fastcnn.runtime import (k_conv, k_deconv, k_dense, k_eltwise, k_norm, k_pool,
                                     k_reduce, k_resize, k_tensor)
        from fastcnn.runtime.kernels import KERNELS
        by_prepare = {k_eltwise.prepare_binary: "broadcast", k_eltwise.prepare_where: "broadcast"}
        for prep in (k_conv.prepare_conv, k_deconv.prepare_conv_transpose, k_pool.prepare_pool,
                     k_pool.prepare_global_pool, k_norm.prepare_batchnorm,
                     k_norm.prepare_instancenorm, k_norm.prepare_lrn, k_resize.prepare_resize,
                     k_tensor.prepare_depth_to_space, k_eltwise.prepare_unary,
                     k_reduce.prepare_maxout,
                     # views: row i of the output is row i of the input when both keep the
                     # batch as dim 0, which the shape checks establish
                     k_tensor.prepare_alias, k_tensor.prepare_expand):
            by_prepare[prep] = "sample"
        for prep in (k_reduce.prepare_reduce, k_tensor.prepare_concat, k_tensor.prepare_split,
                     k_tensor.prepare_gather, k_tensor.prepare_tile, k_tensor.prepare_transpose,
                     k_dense.prepare_gemm, k_dense.prepare_matmul):
            by_prepare[prep] = "resizes"
        _op_kinds = {op: by_prepare[prep] for op, prep in KERNELS.items() if prep in by_prepare}
    return _op_kinds


def part_sizes(batch: int, threads: int):
    """Sizes of the parts a batch is cut into, one per thread (the first parts one larger when
    the batch does not divide), or None when the batch is not worth cutting: fewer samples than
    threads, or an uneven cut of fewer than two samples per thread (3 samples on 2 threads wait
    for the part of 2, where splitting each layer would share all 3)."""
    if threads < 2 or batch < threads:
        return None
    if batch % threads and batch < 2 * threads:
        return None
    q, r = divmod(batch, threads)
    return [q + 1] * r + [q] * (threads - r)


def _rule_holds(node, ctx: NodeContext, rank: int) -> bool:
    """The op-specific part of `independent_samples` for one node at one batch size: does the
    node leave dim 0 (the batch) alone? rank: rank of the node's first input. Only ops that
    keep dim 0's size need a rule; the others are refused by the shape checks if they touch it."""
    op = node.op
    if _kinds().get(op) is not None:
        return True
    if op in _AXIS_OP:
        return ctx.attrs["axis"] % rank != 0
    if op == "Slice":   # e.g. x[::-1] or x[1:] + x[:1] keep the size, not the order
        from fastcnn.ir.shapes import slice_params
        starts, stops, steps, _ = slice_params(ctx)
        return (starts[0], stops[0], steps[0]) == (0, ctx.shape(0)[0], 1)
    if op == "Pad":     # begin -1, end +1 keeps the size and shifts the samples
        from fastcnn.ir.shapes import pad_amounts
        begin, end = pad_amounts(ctx)
        return begin[0] == 0 and end[0] == 0
    return False


def independent_samples(graph, full: Inferred, part: Inferred, batch: int, part_batch: int):
    """None when running `graph` on parts of `part_batch` samples and stacking the outputs gives
    the outputs of the whole batch of `batch` samples; otherwise the reason it would not.

    full / part: the graph inferred at the two batch sizes. Every graph input and output and
    every tensor computed at run time must keep the batch as dim 0 with the same other dims at
    both sizes; every node computed at run time must be an op that leaves dim 0 alone
    (`_rule_holds`) with constant inputs that do not vary along the batch and are the same at
    both sizes (a constant derived from the batch size, such as Shape -> Mul, would make a
    part compute something else). A constant with one row per sample (a Mul by a (batch, ...)
    array, a Gemm bias of batch rows) does not broadcast to a part's size: the caller's
    inference at that size fails, and the batch runs whole."""
    where = graph.where()

    def batched(name):
        a, b = full.types[name].shape, part.types[name].shape
        return len(a) >= 1 and a[0] == batch and b[:1] == (part_batch,) and a[1:] == b[1:]

    for t in graph.inputs:
        if not batched(t.name):
            return f"input '{t.name}' does not have the batch as its first dimension"
    for t in graph.outputs:
        if t.name in full.consts or t.name in part.consts or not batched(t.name):
            return f"output '{t.name}' does not have the batch as its first dimension"
    for node in graph.nodes:
        outs = [o for o in node.outputs if o]
        if all(o in full.consts for o in outs):
            continue   # folded while planning
        if any(o in full.consts or o in part.consts or not batched(o) for o in outs):
            return f"node '{node.name}' ({node.op}): an output does not keep the batch"
        rank = None
        out_rank = len(full.types[outs[0]].shape)
        for i, x in enumerate(node.inputs):
            if not x:
                continue
            if x in full.consts:
                a, b = full.consts[x], part.consts.get(x)
                if (node.op, i) in _SHAPE_INPUTS:
                    continue
                if b is None or a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
                    return f"node '{node.name}' ({node.op}): constant '{x}' depends on the batch"
                if node.op == "MatMul" and i == 1 and a.ndim > 2:
                    return f"node '{node.name}' (MatMul): a stack of weights '{x}'"
            else:
                if not batched(x):
                    return f"node '{node.name}' ({node.op}): input '{x}' does not keep the batch"
                if node.op in ("Gemm", "MatMul") and i == 1:
                    return f"node '{node.name}' ({node.op}): both operands carry the batch"
                # broadcasting aligns trailing dims: a runtime input of lower rank would put
                # its batch against another axis of the output
                if (_kinds().get(node.op) == "broadcast" or node.op in ("Expand", "Gemm")) \
                        and len(full.types[x].shape) != out_rank:
                    return f"node '{node.name}' ({node.op}): input '{x}' broadcasts across the batch"
            if rank is None:
                rank = len(full.types[x].shape)
        if rank is None:
            return f"node '{node.name}' ({node.op}) computes from constants at run time"
        for inf in (full, part):
            ctx = NodeContext(node, inf.attrs[node.name],
                              [inf.types[x] if x else None for x in node.inputs],
                              [inf.consts.get(x) if x else None for x in node.inputs], where)
            if not _rule_holds(node, ctx, rank):
                return f"node '{node.name}' ({node.op}) works along the batch dimension"
    return None


class Runs(list):
    """How a batch runs as chunks: self[j] lists the shape keys of the chunks thread j runs,
    one after the other; spans[j] the same chunks as (shape key, first sample, end sample) and
    batch their total, worked out once when the split is decided, not at every call."""

    def __init__(self, runs):
        super().__init__(runs)
        self.spans, at = [], 0
        for run in runs:
            self.spans.append([])
            for key in run:
                self.spans[-1].append((key, at, at + key[0][0]))
                at += key[0][0]
        self.batch = at


_pool = None   # (pid, ThreadPoolExecutor): a forked child's workers for the parts after the first
_pool_lock = threading.Lock()
_IMPORT_PID = os.getpid()


def run_at_once(fns) -> None:
    """Call every function of fns (no arguments) at once, fns[0] on the calling thread, and
    return when all have returned (raising the first exception one raised, after all ended).
    On OpenMP's threads (step.run_on_threads), which are awake between calls, where a Python
    worker takes 30 us or more to wake (LeNet-5 at batch 16 on 2 threads 6% faster); in a
    forked child on Python workers (`submit`), as libgomp's threads do not survive a fork and
    a team started there hangs."""
    if os.getpid() == _IMPORT_PID:
        run_on_threads(list(fns))
        return
    others = []
    try:
        others = [submit(fn) for fn in fns[1:]]
    finally:
        try:
            fns[0]()
        finally:
            # every worker ends before an exception leaves (theirs after the caller's)
            wait(others)
            for f in others:
                f.result()


def run_step_lists(seqs) -> None:
    """Run each StepSeq of `seqs` (plans' `step_seq`) at once, one per thread, and return when
    all have ended: on OpenMP's threads without the GIL (`step.run_step_lists`), in a forked
    child on Python workers (`run_at_once`)."""
    if os.getpid() == _IMPORT_PID:
        _step.run_step_lists(list(seqs))
        return
    run_at_once([seq.run for seq in seqs])


def submit(fn, *args):
    """Run fn(*args) on a Python worker thread (`run_at_once` in a forked child); returns its
    Future. Idle workers wait on a queue and use no CPU. A forked child gets its own workers:
    the parent's threads do not exist there."""
    global _pool
    pool = _pool
    if pool is None or pool[0] != os.getpid():
        with _pool_lock:
            if _pool is None or _pool[0] != os.getpid():
                _pool = (os.getpid(), ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2),
                                                         thread_name_prefix="fastcnn-part"))
            pool = _pool
    return pool[1].submit(fn, *args)


def chunk_size(weight_bytes: int, arena_per_sample: int, traffic_per_sample: int, threads: int,
               cache: int, limit: int) -> int:
    """Samples a single-threaded plan should run at a time, at most `limit`.

    Each chunk reads every weight once (weight_bytes / c per sample); the activations of a
    chunk stay in the shared cache when the threads' chunks fit in it together beside the
    weights streaming through (c * arena_per_sample * threads + min(weight_bytes, cache / 2)
    <= cache), and otherwise cost a trip to memory (traffic_per_sample: every tensor's bytes,
    written and read). The c with the least of the two per sample, the larger on a tie; then
    as many chunks of equal size as that needs (chunks of 4 and 4, not 5 and 3).
    Measured on a 32 MiB L3: MobileNetV2 at batch 16 (21.7 MB of packed weights, 1.3 MB of
    arena and 10 MB of tensors per image) ran in chunks of 8 on one thread 166 -> 158 ms and
    of 4 on two 109 -> 104 ms against the whole batch (part); ResNet-18 (85 MB of Winograd
    weights, 3.8 MB of arena) whole 457 ms against 467 in chunks of 8 on one thread, and on two
    threads whole parts (the weights alone leave too little cache for the activations)."""
    weights_held = min(weight_bytes, cache // 2)
    best, best_cost = limit, None
    for c in range(limit, 0, -1):
        spills = c * arena_per_sample * threads + weights_held > cache
        cost = weight_bytes / c + (traffic_per_sample if spills else 0)
        if best_cost is None or cost < best_cost:
            best, best_cost = c, cost
    chunks = -(-limit // best)
    return -(-limit // chunks)

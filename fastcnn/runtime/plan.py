"""Build a plan: choose kernels, pack weights, lay out one arena, bind the steps.

Runs once per distinct set of input shapes (the model caches plans). After `build_plan` returns,
running the model only copies the inputs in, runs the steps and copies the outputs out.
"""
from __future__ import annotations

import threading

import numpy as np

from fastcnn._kernels.step import StepSeq
from fastcnn.errors import ResourceLimitError, UnsupportedOpError
from fastcnn.ir.graph import Graph
from fastcnn.ir.infer import Inferred
from fastcnn.runtime.blocking import assign_layouts
from fastcnn.runtime.k_conv import FusedNode, fuse_conv_pool, fuse_expand_depthwise
from fastcnn.runtime.memory import ALIGN, plan_offsets, private_offsets
from fastcnn.runtime.prepare import PrepareContext, Prepared


# Store eligible activations NCHW8c (runtime/blocking.py); False: every tensor NCHW (tests, bench).
BLOCKED_LAYOUTS = True

# A plan for several threads gives every tensor a region of its own, instead of reusing the
# regions of dead ones, when the reused arena exceeds PRIVATE_MIN_BYTES (it would not stay in a
# core's L2 anyway) and the private one stays within PRIVATE_MAX_BYTES. A reused region was last
# written by whichever thread covered that range of the dead tensor; when the other core writes
# it, each line crosses between the cores, which costs the most where they share no cache.
# This VM has two 2-thread states (the hypervisor's placement, switching within minutes). A/B
# against reuse, rounds sorted by state: in the one it was in for 220 of 223 rounds (and 90% in
# an earlier measurement), MobileNetV2 b1 on 2 threads 6.77 -> 6.00 ms, ResNet-18 17.83 ->
# 16.66; in the other 4.96 -> 5.20 and 15.24 -> 15.47 (the larger footprint costs cache). The
# edge CNN (0.16 MB) was slower with private regions in both and keeps reuse; single-threaded
# plans (1 thread, batch parts and chunks) always reuse.
PRIVATE_MIN_BYTES = 1 << 20
PRIVATE_MAX_BYTES = 64 << 20


def graph_nodes(node) -> tuple:
    """The graph nodes a planned node (an entry of `Plan.step_nodes`) runs: the parts of a
    fused node (k_conv.FusedNode), else the node itself."""
    return node.parts if isinstance(node, FusedNode) else (node,)


def aligned_empty(nbytes: int) -> np.ndarray:
    """A uint8 array of `nbytes` whose data pointer is 64-byte aligned."""
    raw = np.empty(nbytes + ALIGN, dtype=np.uint8)
    start = (-raw.ctypes.data) % ALIGN
    return raw[start:start + nbytes]


class Plan:
    """A prepared execution of a graph for fixed input shapes.

    input_views:  graph input name -> arena view the input is copied into, or None for an
                  input no step reads (it has no place in the arena; `feed` skips it).
    outputs:      per graph output, an arena view (or a constant array for folded outputs).
    steps:        Step objects, run in order; step_seq: the same as a StepSeq, what runs;
                  step_nodes: per step, the node it runs (a graph node, or a fused node whose
                  graph nodes `graph_nodes` gives).
    blocked:      names of the tensors stored NCHW8c (runtime/blocking.py).
    arena_bytes:  activation arena size; naive_bytes: sum of all activation sizes (no reuse);
                  reused_bytes: the arena size with reuse (arena_bytes unless the plan gave its
                  tensors private regions, see PRIVATE_MIN_BYTES).
    lock:         held while the plan's buffers are in use by one call.
    """

    def __init__(self, input_views, outputs, steps, step_nodes, arena, scratch, arena_bytes,
                 naive_bytes, num_threads, flops, blocked=frozenset(), reused_bytes=None):
        self.input_views = input_views
        self.outputs = outputs
        self.steps = steps
        self.step_seq = StepSeq(steps)   # checked once; what runs
        self.step_nodes = step_nodes
        self.arena = arena
        self.scratch = scratch
        self.arena_bytes = arena_bytes
        self.naive_bytes = naive_bytes
        self.reused_bytes = arena_bytes if reused_bytes is None else reused_bytes
        self.scratch_bytes = scratch.nbytes
        self.num_threads = num_threads
        self.flops = flops
        self.blocked = frozenset(blocked)
        self.lock = threading.Lock()

    def set_num_threads(self, n: int):
        from fastcnn._kernels.step import set_step_threads
        set_step_threads(self.steps, n)
        self.num_threads = n

    def feed(self, feed: dict) -> None:
        """Copy the inputs into the arena. feed: name -> validated float32 array of the
        planned shape (any strides). The caller holds `self.lock`; `self.step_seq.run()`
        computes, `outputs_into` collects."""
        views = self.input_views
        for name, arr in feed.items():
            view = views[name]
            if view is not None:
                view[...] = arr

    def outputs_into(self, outs: list) -> None:
        """Copy the outputs of the last run into `outs` (arrays of the outputs' shapes)."""
        for dst, v in zip(outs, self.outputs):
            dst[...] = v

    def run(self, feed: dict) -> list:
        """feed: name -> validated float32 array of the planned shape. Returns fresh output arrays.
        The caller holds `self.lock`."""
        self.feed(feed)
        self.step_seq.run()
        return [v.copy() for v in self.outputs]

    def run_into(self, feed: dict, outs: list) -> None:
        """Like `run`, but copies the outputs into `outs` (arrays of the outputs' shapes)."""
        self.feed(feed)
        self.step_seq.run()
        self.outputs_into(outs)


def _check_lower_bound(graph: Graph, types: dict, consts: dict, memory_limit: int) -> None:
    """Refuse a plan that cannot fit before any kernel is prepared (preparing packs weights and
    sizes scratch): while a node runs, its runtime inputs and outputs are all in the arena,
    except that output 0 may share the buffer of an input of the same size (a view or an
    in-place kernel, as build_plan lays them out). A batch far over the limit fails here,
    having allocated nothing."""
    need, at = 0, None
    for node in graph.nodes:
        ins = [types[x].nbytes for x in set(node.inputs) if x and x not in consts and x in types]
        outs = [types[o].nbytes for o in node.outputs if o and o not in consts and o in types]
        if not outs:
            continue  # folded while planning
        live = sum(ins) + sum(outs)
        first = types[node.outputs[0]].nbytes if node.outputs[0] in types else -1
        if node.outputs[0] not in consts and first in ins:
            live -= first
        if live > need:
            need, at = live, node
    if need > memory_limit:
        raise ResourceLimitError(
            f"{graph.where()}: running with input shapes "
            f"{ {t.name: list(types[t.name].shape) for t in graph.inputs} } needs at least "
            f"{need:,} bytes of activations (node '{at.name}' ({at.op})), more than the memory "
            f"limit of {memory_limit:,} bytes (fastcnn.set_memory_limit, FASTCNN_MEMORY_LIMIT)")


# release_weights runs once this many bytes of constants were read (a madvise per node costs
# ~0.3 ms on a 47 MB mapping; this bounds what stays resident beyond the packed copies)
RELEASE_EVERY_BYTES = 8 << 20
# ops whose int64 result may be computed at run time, for a graph output or a Cast to float32
# to read (a classifier's or a segmentation net's class indices; argmax(...).float())
RUNTIME_INDEX_OPS = ("ArgMax", "ArgMin", "TopK")
# ops that may read such indices: views of them (their kernels move no data)
INDEX_VIEW_OPS = ("Flatten", "Reshape", "Squeeze", "Unsqueeze")


def _casts_to_float(node) -> bool:
    return node.op == "Cast" and node.attrs.get("to") == "float32"


def build_plan(graph: Graph, inferred: Inferred, num_threads: int, cache: dict,
               memory_limit: int, release_weights=None, weight_pool=None) -> Plan:
    """Prepare every runtime node of `graph` (already checked and inferred for concrete shapes).
    cache and weight_pool: the model's packed weights, and the memory they are packed into
    (runtime/weight_pool.py; None: np.empty).
    release_weights: None, or called after each node is prepared to drop the model file's
    resident pages (a mapped .fcnn): packing copies most weights (Winograd, GEMM panels), and
    without this the originals would stay resident beside the copies, all at once (ResNet-18:
    peak RSS of load + one image 184 -> 148 MiB). Pages read in place come back on use."""
    from fastcnn._kernels.step import Step
    from fastcnn.runtime.kernels import KERNELS

    where = graph.where()
    types, consts = inferred.types, inferred.consts
    _check_lower_bound(graph, types, consts, memory_limit)
    run_nodes = []
    indices = set()   # int64 tensors computed at run time (RUNTIME_INDEX_OPS and views of them)
    for node in graph.nodes:
        if not any(o and o not in consts for o in node.outputs):
            continue  # folded while planning
        read = [x for x in node.inputs if x in indices]
        if read and node.op in INDEX_VIEW_OPS and node.inputs[0] in indices:
            indices.update(o for o in node.outputs if o)   # a view of them: int64 as well
            run_nodes.append(node)
            continue
        if read and not _casts_to_float(node):
            raise UnsupportedOpError(
                f"{where}: node '{node.name}' ({node.op}) reads the int64 tensor '{read[0]}', "
                f"computed at run time; fastcnn runs float32 tensors only (an ArgMax, ArgMin or "
                f"TopK index at run time can give a graph output, a Cast to float32 or a view of either)")
        for o in node.outputs:
            if not o or o in consts or types[o].dtype == "float32":
                continue
            if node.op in RUNTIME_INDEX_OPS:
                indices.add(o)
                continue
            raise UnsupportedOpError(
                f"{where}: node '{node.name}' ({node.op}) computes the {types[o].dtype} tensor "
                f"'{o}' at run time; fastcnn runs float32 tensors only (integer and bool "
                f"tensors must be computable while planning, from constants and shapes; an "
                f"ArgMax, ArgMin or TopK index may give a graph output or a Cast to float32)")
        if node.op not in KERNELS:
            raise UnsupportedOpError(
                f"{where}: node '{node.name}' ({node.op}) has inputs known only at run time, but "
                f"{node.op} can only be evaluated on constants in fastcnn")
        run_nodes.append(node)
    blocked = assign_layouts(graph, run_nodes, inferred, inferred.attrs) if BLOCKED_LAYOUTS else set()
    run_nodes = fuse_expand_depthwise(graph, run_nodes, inferred, blocked)
    run_nodes = fuse_conv_pool(graph, run_nodes, inferred, blocked)

    def context(node):
        return PrepareContext(node, inferred.attrs[node.name],
                              [types[x] if x else None for x in node.inputs],
                              [types[o] if o else None for o in node.outputs],
                              [consts.get(x) if x else None for x in node.inputs],
                              num_threads, cache, where,
                              [bool(x) and x in blocked for x in node.inputs],
                              [bool(o) and o in blocked for o in node.outputs], weight_pool)

    preps = []
    touched = 0   # bytes of constants read since the file's pages were last released
    for node in run_nodes:
        ctxs = [context(m) for m in graph_nodes(node)]
        # a fused node prepares itself from its parts' contexts
        preps.append(node.prepare(*ctxs) if isinstance(node, FusedNode)
                     else KERNELS[node.op](ctxs[0]))
        if release_weights is not None:
            touched += sum(c.nbytes for p in ctxs for c in p.in_consts if c is not None)
            if touched >= RELEASE_EVERY_BYTES:
                release_weights()
                touched = 0
    if release_weights is not None and touched:
        release_weights()

    # --- buffer groups: aliases (views) and in-place outputs share their input's buffer
    end = len(run_nodes)
    last_use = {}
    for s, node in enumerate(run_nodes):
        for x in node.inputs:
            if x and x not in consts:
                last_use[x] = s
    for t in graph.outputs:
        if t.name not in consts:
            last_use[t.name] = end
    base, members = {}, {}
    first = {}
    for t in graph.inputs:
        if t.name not in last_use:
            # read by no step (unused, or only by nodes folded for this shape) and no output:
            # validated when fed, but given no arena space (a (batch, 1048576, 4) input no
            # node reads took 16 MB per sample)
            continue
        base[t.name] = t.name
        members[t.name] = [t.name]
        first[t.name] = 0
    for s, (node, prep) in enumerate(zip(run_nodes, preps)):
        for k, o in enumerate(node.outputs):
            if not o or o in consts:
                continue
            b = None
            if k == 0 and prep.alias:
                b = base[node.inputs[0]]
            elif k == 0 and prep.inplace is not None:
                x = node.inputs[prep.inplace]
                if x and x not in consts:
                    cand = base[x]
                    if (max(last_use.get(u, first[cand]) for u in members[cand]) == s
                            and types[cand].nbytes == types[o].nbytes):
                        b = cand
            if b is None:
                b = o
                members[o] = []
                first[o] = s
            base[o] = b
            members[b].append(o)

    groups = list(members)
    spans = [(types[b].nbytes, first[b], max(last_use.get(u, first[b]) for u in members[b]))
             for b in groups]
    offsets, arena_bytes = plan_offsets(spans)
    reused_bytes = arena_bytes
    naive = sum(types[v].nbytes for v in base)
    scratch_elems = max([p.scratch for p in preps] + [0])
    if num_threads > 1 and arena_bytes > PRIVATE_MIN_BYTES:
        private, private_bytes = private_offsets(spans)
        if private_bytes <= min(PRIVATE_MAX_BYTES, memory_limit - scratch_elems * 4):
            offsets, arena_bytes = private, private_bytes
    total = arena_bytes + scratch_elems * 4
    if total > memory_limit:
        raise ResourceLimitError(
            f"{where}: running with input shapes "
            f"{ {t.name: list(types[t.name].shape) for t in graph.inputs} } needs {total:,} bytes "
            f"of activations and scratch, more than the memory limit of {memory_limit:,} bytes "
            f"(fastcnn.set_memory_limit, FASTCNN_MEMORY_LIMIT)")
    arena = aligned_empty(max(arena_bytes, ALIGN))
    scratch = aligned_empty(max(scratch_elems, 16) * 4).view(np.float32)
    group_offset = dict(zip(groups, offsets))

    def view(v):
        t = types[v]
        off = group_offset[base[v]]
        # float32, or int64 for the indices RUNTIME_INDEX_OPS compute (the only other dtype
        # the checks above let run)
        return arena[off:off + t.nbytes].view(t.dtype).reshape(t.shape)

    steps, step_nodes, flops = [], [], 0
    for node, prep in zip(run_nodes, preps):
        flops += prep.flops
        if prep.alias or prep.bind is None:
            continue
        ins = [None if not x else (consts[x] if x in consts else view(x)) for x in node.inputs]
        outs = [view(o) if o and o not in consts else None for o in node.outputs]
        made = prep.bind(ins, outs, scratch)
        for st in (made if isinstance(made, (list, tuple)) else [made]):
            if st is None:
                continue
            if not isinstance(st, Step):
                raise TypeError(f"kernel for {node.op} returned {type(st).__name__}, not a Step")
            if not st.name:
                st.name = node.name
            st.num_threads = num_threads
            steps.append(st)
            step_nodes.append(node)

    input_views = {t.name: view(t.name) if t.name in base else None for t in graph.inputs}
    outputs = []
    for t in graph.outputs:
        if t.name in consts:
            outputs.append(np.asarray(consts[t.name]))
        else:
            outputs.append(view(t.name))
    return Plan(input_views, outputs, steps, step_nodes, arena, scratch, arena_bytes, naive,
                num_threads, flops, blocked, reused_bytes)

"""`Model`: a loaded graph plus its cached plans. The API mirrors onnxruntime's InferenceSession.

Concurrency: every plan owns its activation memory and is used by one call at a time. A call that
finds every plan for its input shapes busy builds another (up to `max_concurrent` per shape,
sharing the packed weights) and beyond that waits for one, so calls from several Python threads
are safe and give exactly the results of serial calls.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np

from fastcnn import config
from fastcnn.errors import FastCNNError, InputError, ResourceLimitError
from fastcnn.ir.graph import Graph, TensorSpec, ValueType
from fastcnn.ir.infer import infer_graph
from fastcnn.runtime import batch_split
from fastcnn.runtime.plan import Plan, build_plan
from fastcnn.runtime.weight_pool import WeightPool

MAX_CACHED_SHAPES = 8
_F32 = np.dtype(np.float32)


def _with_batch(shapes: tuple, n: int) -> tuple:
    """Input shapes `shapes` with the batch (dim 0 of every input) set to n."""
    return tuple((n,) + tuple(shape[1:]) for shape in shapes)


def _feed_part(plan: Plan, feed: dict, start: int, end: int) -> None:
    """Copy samples [start, end) of every input into the plan of a batch part, which runs
    on one thread."""
    if plan.num_threads != 1:
        plan.set_num_threads(1)
    plan.feed({name: x[start:end] for name, x in feed.items()})


def _specimen_types(graph: Graph, fill: int) -> dict:
    """Input types with every dynamic dim replaced by `fill`."""
    return {t.name: ValueType(tuple(fill if d is None else d for d in t.shape), t.dtype)
            for t in graph.inputs}


class Model:
    """A runnable model. Create it with `fastcnn.load` (or `fastcnn.nn`, or `FineTuner.model`).

    inputs / outputs: lists of TensorSpec (name, shape with None for dynamic dims, dtype).
    metadata: dict from the model file (class labels under "labels", producer, ...).

    Threads: a batch runs either whole, each layer's work split over the threads, or, with
    `split_batch` (the default), as one part per thread, each part on its own single-threaded
    plan from the first layer to the last. Parts are used when the graph computes every sample
    from that sample alone (runtime/batch_split.py checks each node), the batch gives every
    thread a sample (two, if it does not divide evenly) and a part has at least
    `batch_split.MIN_PART_FLOPS` of work. A part's activations then stay in one core's caches
    (batch 16 on 2 threads: edge CNN 1.6x faster, LeNet-5 1.25x, MobileNetV2 1.12x). A part,
    or on one thread the batch, runs in chunks of fewer samples when its activations would
    not stay in the last-level cache and re-reading the weights per chunk costs less
    (`batch_split.chunk_size`: MobileNetV2 at batch 16, 5% faster). Kernels are chosen per
    shape, so a sample's result can differ in the last bits between a part and the whole
    batch: with split_batch=False results are bit-identical for any number of threads.
    """

    def __init__(self, graph: Graph, num_threads: int | None = None, max_concurrent: int = 4,
                 split_batch: bool = True, _resources=None):
        self._graph = graph
        self._threads = config.check_threads(num_threads) if num_threads is not None else config.default_threads()
        self._cache = {}
        # memory of the packed weights in _cache
        self._weight_pool = WeightPool(sum(a.nbytes for a in graph.initializers.values()))
        self._plans = OrderedDict()  # shape key -> list[Plan]
        self._empty = {}             # shape key with an empty batch -> output arrays
        self._splits = {}            # (shape key, threads) -> batch_split.Runs, or None
        self._split_batch = bool(split_batch)
        self._lock = threading.Lock()
        self._max_concurrent = max(1, int(max_concurrent))
        self._resources = _resources  # e.g. an mmap to close
        self._closed = False
        self._first_inferred = None   # (shape key, memory limit, Inferred) from _output_specs
        self.inputs = list(graph.inputs)
        # (name, rank, ((axis, dim), ...) for the static dims): what _check_feed compares
        self._input_checks = [(t.name, len(t.shape), tuple((i, d) for i, d in enumerate(t.shape) if d is not None))
                              for t in self.inputs]
        for t in self.inputs:
            if any(d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 1)
                   for d in t.shape):
                from fastcnn.errors import GraphError
                raise GraphError(f"{graph.where()}: input '{t.name}' declares the shape "
                                 f"{list(t.shape)}; every fixed dimension must be at least 1")
            if t.dtype != "float32":
                from fastcnn.errors import UnsupportedOpError
                raise UnsupportedOpError(f"{graph.where()}: input '{t.name}' has dtype {t.dtype}; "
                                         f"fastcnn models take float32 inputs")
        # Only the batch dim may be dynamic for the eager checks below: a dynamic height or
        # width has no representative value, so such models are validated on first run.
        self._static_but_batch = all(d is not None for t in self.inputs for d in t.shape[1:])
        self.outputs = self._output_specs()
        if self._static_but_batch:
            # Build (and cache) the plan for batch 1 now: every node is validated and every
            # weight packed at load, not at the first run.
            self._get_plan(tuple(tuple(1 if d is None else d for d in t.shape)
                                 for t in self.inputs))[1].lock.release()

    # ------------------------------------------------------------------ introspection
    @property
    def graph(self) -> Graph:
        return self._graph

    @property
    def metadata(self) -> dict:
        return self._graph.metadata

    @property
    def labels(self):
        return self._graph.metadata.get("labels")

    @property
    def num_threads(self) -> int:
        return self._threads

    def _output_specs(self):
        g = self._graph
        if not self._static_but_batch:
            # Structure only (operators, arities, attributes); shapes are known once real
            # inputs arrive.
            from fastcnn.passes.analysis import check_structure
            check_structure(g)
            return [TensorSpec(t.name, tuple(None for _ in t.shape) if t.shape else (), t.dtype, t.layout)
                    for t in g.outputs]
        first = infer_graph(g, _specimen_types(g, 1), max_tensor_bytes=config.memory_limit())
        # the batch-1 plan built next at load infers these same types: keep them for it
        self._first_inferred = (tuple(first.types[t.name].shape for t in g.inputs),
                                config.memory_limit(), first)
        t1 = first.types
        dynamic = any(d is None for t in g.inputs for d in t.shape)
        # the attributes were validated by the first inference: the second only redoes shapes
        t2 = infer_graph(g, _specimen_types(g, 2), attrs=first.attrs).types if dynamic else t1
        specs = []
        for t in g.outputs:
            a, b = t1[t.name], t2[t.name]
            shape = tuple(x if x == y else None for x, y in zip(a.shape, b.shape)) \
                if len(a.shape) == len(b.shape) else (None,) * len(a.shape)
            specs.append(TensorSpec(t.name, shape, a.dtype, t.layout))
        return specs

    def get_inputs(self):
        """onnxruntime-style alias of `inputs`."""
        return self.inputs

    def get_outputs(self):
        """onnxruntime-style alias of `outputs`."""
        return self.outputs

    # ------------------------------------------------------------------ running
    def set_num_threads(self, n: int) -> None:
        """Change the number of threads used by later calls (safe between and during calls)."""
        n = config.check_threads(n)
        with self._lock:
            self._threads = n
            plans = [p for pool in self._plans.values() for p in pool]
        for p in plans:
            with p.lock:
                p.set_num_threads(n)

    def _check_feed(self, input_feed) -> tuple:
        """Validate the feed; return (feed, key, empty) where key is the tuple of input shapes
        and empty tells whether some input has a batch of 0.

        The common case (right names, float32 arrays of acceptable shapes, no zero dims) costs a
        few dict and tuple operations; messages are only built on the error path."""
        if isinstance(input_feed, dict) and len(input_feed) == len(self.inputs):
            shapes = []
            for name, rank, static in self._input_checks:
                x = input_feed.get(name)
                if type(x) is not np.ndarray or x.dtype is not _F32:
                    break
                xs = x.shape
                if len(xs) != rank or 0 in xs:
                    break
                for i, d in static:
                    if xs[i] != d:
                        break
                else:
                    shapes.append(xs)
                    continue
                break
            else:
                return input_feed, tuple(shapes), False
        feed, key = self._feed_error(input_feed)
        return feed, key, any(len(shape) and shape[0] == 0 for shape in key)

    def _feed_error(self, input_feed):
        """The slow path: raise the InputError that describes what is wrong with `input_feed`,
        or return (feed, shapes) for valid feeds the fast path does not take (an empty batch,
        ndarray subclasses such as np.memmap)."""
        where = self._graph.where()
        feed, shapes = {}, []
        if not isinstance(input_feed, dict):
            raise InputError(f"{where}: inputs must be a dict of name -> numpy array, got "
                             f"{type(input_feed).__name__}")
        names = [t.name for t in self.inputs]
        missing = [n for n in names if n not in input_feed]
        extra = [n for n in input_feed if n not in names]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing input(s) {', '.join(map(repr, missing))}")
            if extra:
                parts.append(f"unknown input(s) {', '.join(map(repr, map(str, extra)))}")
            raise InputError(f"{where}: {'; '.join(parts)}; the model's inputs are "
                             f"{', '.join(f'{t.name!r} {t.dtype} {_fmt_shape(t.shape)}' for t in self.inputs)}")
        for t in self.inputs:
            x = input_feed[t.name]
            # every message states what was expected and what was given: dtype and shape
            expected = f"expected float32 {_fmt_shape(t.shape)}" + (f" ({t.layout})" if t.layout else "")
            if not isinstance(x, np.ndarray):
                raise InputError(f"{where}: input '{t.name}' must be a numpy.ndarray, got "
                                 f"{type(x).__name__}; {expected} (use np.asarray(x, np.float32))")
            if x.dtype != np.float32:
                raise InputError(f"{where}: input '{t.name}' has dtype {x.dtype} shape "
                                 f"{list(x.shape)}; {expected} (convert with x.astype(np.float32))")
            if x.ndim != len(t.shape) or any(d is not None and d != a for d, a in zip(t.shape, x.shape)):
                raise InputError(f"{where}: input '{t.name}' has shape {list(x.shape)} (float32); "
                                 f"{expected}")
            if x.size == 0 and (t.shape[0] is not None or x.shape[0] != 0 or 0 in x.shape[1:]):
                raise InputError(f"{where}: input '{t.name}' is empty (shape {list(x.shape)}); "
                                 f"only a dynamic batch dimension may be 0, every other "
                                 f"dimension must be at least 1")
            feed[t.name] = x
            shapes.append(tuple(x.shape))
        return feed, tuple(shapes)

    def _get_plan(self, shapes, single=False, wait=True):
        """Return (key, plan) with plan.lock held by the caller. single: a plan to run on one
        thread (a batch part or chunk): on a multi-threaded model it is cached apart from the
        whole-batch plans, whose arena layout is made for several threads (runtime/plan.py,
        PRIVATE_MIN_BYTES). wait=False: (key, None) where the call would wait for a busy plan
        (every plan of the shape taken and `max_concurrent` of them built)."""
        threads = 1 if single else self._threads
        key = ("single",) + shapes if threads != self._threads else shapes
        pool = self._plans.get(key)  # lock-free fast path (dict reads are atomic)
        if pool is not None and not self._closed:
            for p in pool:
                if p.lock.acquire(blocking=False):
                    if self._closed:  # closed while we took it
                        p.lock.release()
                        break
                    return key, p
        with self._lock:
            if self._closed:
                raise FastCNNError(f"{self._graph.where()}: the model is closed")
            pool = self._plans.get(key)
            if pool is not None:
                self._plans.move_to_end(key)
                for p in pool:
                    if p.lock.acquire(blocking=False):
                        return key, p
                if len(pool) >= self._max_concurrent:
                    waiting = pool[0]
                else:
                    waiting = None
            else:
                waiting = None
        if waiting is not None:
            if not wait:
                return key, None
            waiting.lock.acquire()
            return key, waiting
        plan = self._build(shapes, threads)
        plan.lock.acquire()
        with self._lock:
            if self._closed:  # closed while this plan was built: run this call, keep nothing
                return key, plan
            pool = self._plans.setdefault(key, [])
            pool.append(plan)
            self._plans.move_to_end(key)
            while len(self._plans) > MAX_CACHED_SHAPES:
                self._plans.popitem(last=False)
        return key, plan

    def _infer(self, shapes, limit, attrs=None):
        """infer_graph for these input shapes (float32 inputs)."""
        g = self._graph
        return infer_graph(g, {t.name: ValueType(s, "float32") for t, s in zip(g.inputs, shapes)},
                           max_tensor_bytes=limit, attrs=attrs)

    def _build(self, key, threads) -> Plan:
        g = self._graph
        limit = config.memory_limit()
        first, self._first_inferred = self._first_inferred, None
        if first is not None and first[0] == key and first[1] == limit:
            inferred = first[2]
        else:
            inferred = self._infer(key, limit)
        return build_plan(g, inferred, threads, self._cache, limit,
                          getattr(self._resources, "release_pages", None), self._weight_pool)

    def run(self, output_names, input_feed, run_options=None) -> list:
        """Run the model. output_names: None for all outputs, or a list of output names.
        input_feed: dict input name -> float32 numpy array (any strides). Returns a list of new
        numpy arrays, one per requested output."""
        feed, key, empty = self._check_feed(input_feed)
        picks = None
        if output_names is not None:
            if isinstance(output_names, str):
                output_names = [output_names]
            index = {t.name: i for i, t in enumerate(self.outputs)}
            unknown = [n for n in output_names if n not in index]
            if unknown:
                raise InputError(f"{self._graph.where()}: unknown output name(s) "
                                 f"{', '.join(map(repr, unknown))}; the model's outputs are "
                                 f"{', '.join(repr(t.name) for t in self.outputs)}")
            picks = [index[n] for n in output_names]
        if empty:
            outs = self._empty_outputs(key)
            return [np.array(o, copy=True) for o in (outs if picks is None else [outs[i] for i in picks])]
        if self._split_batch and key and key[0] and key[0][0] > 1:
            runs = self._splits.get((key, self._threads), False)
            if runs is False:
                runs = self._choose_split(key, self._threads)
            if runs is not None:
                outs = self._run_parts(feed, runs)
                return outs if picks is None else [outs[i] for i in picks]
        _, plan = self._get_plan(key)
        try:
            if plan.num_threads != self._threads:
                plan.set_num_threads(self._threads)
            outs = plan.run(feed)
        finally:
            plan.lock.release()
        return outs if picks is None else [outs[i] for i in picks]

    def _choose_split(self, key, threads):
        """How calls with input shapes `key` on `threads` threads run (runtime/batch_split.py):
        None to run the batch whole, or `batch_split.Runs`: per thread, the shape keys of the
        chunks it runs one after the other on single-threaded plans: on several threads one
        part of the batch per thread, and a part (or, on one thread, the batch) in chunks when
        its activations would not stay cached (`batch_split.chunk_size`). The answer is
        remembered; deciding uses the batch-1 plan's sizes and builds no other plan, unless
        the memory limit bounds the chunks (`_chunk_that_fits`)."""
        batch = key[0][0] if key[0] else 0
        decision = None
        if batch >= 2 and all(len(shape) and shape[0] == batch for shape in key) \
                and threads <= self._max_concurrent:
            try:
                decision = self._split_for(key, batch, threads)
            except FastCNNError:
                decision = None   # the whole batch runs (and reports its own errors) as one plan
        with self._lock:
            self._splits[(key, threads)] = decision
            while len(self._splits) > 2 * MAX_CACHED_SHAPES:
                self._splits.pop(next(iter(self._splits)))
        return decision

    def _split_for(self, key, batch, threads):
        """`_choose_split` for a batch of `batch` samples leading every input; may raise
        FastCNNError (a shape that cannot run), which the caller turns into None."""
        g = self._graph
        limit = config.memory_limit()
        sizes = batch_split.part_sizes(batch, threads) if threads > 1 else [batch]
        if sizes is None:
            return None
        # sizes per sample from the whole batch-1 plan (built at load); reused_bytes is the
        # arena of a single-threaded plan
        _, one = self._get_plan(_with_batch(key, 1))
        one.lock.release()
        if threads > 1 and one.flops * sizes[-1] < batch_split.MIN_PART_FLOPS:
            return None
        c = batch_split.chunk_size(self._packed_weight_bytes(), one.reused_bytes,
                                   one.naive_bytes, threads, config.last_level_cache_bytes(),
                                   sizes[0])
        # chunks that fit the memory limit together, where the whole batch would not
        fit = max(1, (limit - threads * one.scratch_bytes) // max(1, threads * one.reused_bytes))
        if fit < c:
            c = self._chunk_that_fits(key, fit, threads, limit)
        runs = [[c] * (n // c) + ([n % c] if n % c else []) for n in sizes]
        if threads == 1 and len(runs[0]) == 1:
            return None   # one chunk: the whole batch
        full = self._infer(key, limit)
        for n in {n for run in runs for n in run}:
            part = self._infer(_with_batch(key, n), limit, full.attrs)
            if batch_split.independent_samples(g, full, part, batch, n) is not None:
                return None
        return batch_split.Runs([[_with_batch(key, n) for n in run] for run in runs])

    def _packed_weight_bytes(self) -> int:
        """Bytes of the weights packed so far (Winograd, GEMM panels): what each chunk of a
        batch reads once (`batch_split.chunk_size`)."""
        return sum(a.nbytes for v in self._cache.values()
                   for a in (v if isinstance(v, (tuple, list)) else (v,))
                   if isinstance(a, np.ndarray))

    def _chunk_that_fits(self, key, c, threads, limit) -> int:
        """The largest chunk of at most c samples whose single-threaded plans, one per thread,
        fit `limit` together. c comes from the batch-1 plan's sizes, which can fall short:
        kernels are chosen per shape (a conv runs Winograd from 4 samples, with more scratch
        than batch 1's tile kernel), so the chunk's own plan is built (the run uses it) and c
        lowered to what its arena per sample and its scratch allow."""
        while c > 1:
            try:
                _, plan = self._get_plan(_with_batch(key, c), single=True)
            except ResourceLimitError:
                c = c * 3 // 4   # this chunk alone is over the limit: try a smaller one
                continue
            plan.lock.release()
            if threads * (plan.arena_bytes + plan.scratch_bytes) <= limit:
                return c
            per_sample = -(-plan.arena_bytes // c)
            c = min(c - 1, max(1, (limit // threads - plan.scratch_bytes) // per_sample))
        return 1

    def _run_parts(self, feed, runs) -> list:
        """Run the batch of `feed` as consecutive chunks (`batch_split.Runs`): thread j runs
        the chunks of runs.spans[j] one after the other, each on a single-threaded plan writing
        into slices of the outputs. Thread 0 is the calling thread."""
        _, first = self._get_plan(runs[0][0], single=True)
        outs = [np.empty((runs.batch,) + v.shape[1:], v.dtype) for v in first.outputs]
        if all(len(spans) == 1 for spans in runs.spans) and \
                self._run_one_chunk_each(feed, runs, first, outs):
            return outs

        def run_chunks(spans, plan=None):
            for k, s, e in spans:
                if plan is None:
                    _, plan = self._get_plan(k, single=True)
                try:
                    _feed_part(plan, feed, s, e)
                    plan.step_seq.run()
                    plan.outputs_into([o[s:e] for o in outs])
                finally:
                    plan.lock.release()
                plan = None

        batch_split.run_at_once([lambda: run_chunks(runs.spans[0], first)] + [
            (lambda spans=spans: run_chunks(spans)) for spans in runs.spans[1:]])
        return outs

    def _run_one_chunk_each(self, feed, runs, first, outs) -> bool:
        """`_run_parts` where each thread runs one chunk: this thread feeds every part's plan
        and collects every output, and the threads only run steps, none of them taking the
        GIL (`batch_split.run_step_lists`). Holds `first` (locked) and takes a plan per other
        part without waiting; where one is busy (other calls at once) it returns False, with
        only `first` still held, and the caller runs the parts as threads that each take
        their own plan."""
        plans = [first]
        give_back_first = False
        try:
            for spans in runs.spans[1:]:
                _, plan = self._get_plan(spans[0][0], single=True, wait=False)
                if plan is None:
                    give_back_first = True
                    return False
                plans.append(plan)
            for plan, ((_, s, e),) in zip(plans, runs.spans):
                _feed_part(plan, feed, s, e)
            batch_split.run_step_lists([plan.step_seq for plan in plans])
            for plan, ((_, s, e),) in zip(plans, runs.spans):
                plan.outputs_into([o[s:e] for o in outs])
            return True
        finally:
            for plan in plans[1:] if give_back_first else plans:
                plan.lock.release()

    def _empty_outputs(self, key) -> list:
        """Outputs for a batch of 0 (as onnxruntime: empty arrays), no kernel runs.

        The graph is inferred with the empty batch dims set to 1 and to 2: an output dim that
        doubles is proportional to the batch and becomes 0, a dim that stays is kept. An output
        with no such dim would need a value computed from no data (a reduction over the batch),
        which is refused unless it is a constant."""
        with self._lock:
            if self._closed:
                raise FastCNNError(f"{self._graph.where()}: the model is closed")
            cached = self._empty.get(key)
        if cached is not None:
            return cached
        g = self._graph
        where = g.where()
        limit = config.memory_limit()

        def infer(fill):
            types = {t.name: ValueType(tuple(fill if (i == 0 and d == 0) else d
                                             for i, d in enumerate(shape)), "float32")
                     for t, shape in zip(g.inputs, key)}
            return infer_graph(g, types, max_tensor_bytes=limit)

        one, two = infer(1), infer(2)
        outs = []
        for t in g.outputs:
            a, b = one.types[t.name], two.types[t.name]
            if len(a.shape) != len(b.shape) or any(y not in (x, 2 * x) for x, y in zip(a.shape, b.shape)):
                raise InputError(f"{where}: an empty batch is not supported by this model: output "
                                 f"'{t.name}' has shape {list(a.shape)} for batch 1 and "
                                 f"{list(b.shape)} for batch 2")
            shape = tuple(0 if y == 2 * x and x != y else x for x, y in zip(a.shape, b.shape))
            if 0 not in shape:
                if t.name not in one.consts:
                    raise InputError(f"{where}: an empty batch is not supported by this model: "
                                     f"output '{t.name}' {list(shape)} does not scale with the "
                                     f"batch, and its value would be computed from no data")
                outs.append(np.asarray(one.consts[t.name]))
            else:
                outs.append(np.empty(shape, dtype=a.dtype))
        with self._lock:
            self._empty[key] = outs
            while len(self._empty) > MAX_CACHED_SHAPES:
                self._empty.pop(next(iter(self._empty)))
        return outs

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run a single-input model on `x` and return its first output."""
        if len(self.inputs) != 1:
            raise InputError(f"{self._graph.where()}: the model has {len(self.inputs)} inputs; "
                             f"use model.run(None, {{name: array, ...}})")
        return self.run(None, {self.inputs[0].name: x})[0]

    def plan_for(self, shapes=None) -> Plan:
        """The plan for the given input shapes (default: dynamic dims = 1), for inspection."""
        key = tuple(tuple(shapes[i]) if shapes else tuple(1 if d is None else d for d in t.shape)
                    for i, t in enumerate(self.inputs))
        _, plan = self._get_plan(key)
        plan.lock.release()
        return plan

    # ------------------------------------------------------------------ saving, closing
    def save(self, path) -> None:
        """Write the model (graph after passes, weights, metadata) to a .fcnn file atomically."""
        from fastcnn.format import fcnn
        if self._closed:
            raise FastCNNError(f"{self._graph.where()}: the model is closed; load it again to save it")
        fcnn.save(self._graph, os.fspath(path))

    def close(self) -> None:
        """Release plans, packed weights and the model file mapping. The model cannot run after."""
        with self._lock:
            self._closed = True
            self._plans.clear()
            self._cache.clear()
            self._weight_pool.release()
            self._empty.clear()
            self._splits.clear()
            res, self._resources = self._resources, None
        self._graph = Graph(self._graph.name, self._graph.inputs, self._graph.outputs,
                            source=self._graph.source, metadata=self._graph.metadata)
        if res is not None:
            res.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        ins = ", ".join(f"{t.name}{_fmt_shape(t.shape)}" for t in self.inputs)
        outs = ", ".join(f"{t.name}{_fmt_shape(t.shape)}" for t in self.outputs)
        return f"<fastcnn.Model {self._graph.where()!r}: ({ins}) -> ({outs}), {self._threads} threads>"


def _fmt_shape(shape) -> str:
    """[N, 3, 224, 224]: N for a dynamic batch, ? for other dynamic dims."""
    return "[" + ", ".join(("N" if i == 0 else "?") if d is None else str(d)
                           for i, d in enumerate(shape)) + "]"

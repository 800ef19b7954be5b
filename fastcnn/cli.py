"""The `fastcnn` command line: info | run | convert | bench | ops.

Argument parsing and printing only: models are loaded, run, planned and converted by the library
(`fastcnn.load`, `Model.run`, `Model.plan_for`, `fastcnn.convert`), and the operator table is read
from `fastcnn.ir.ops.OPS`, `fastcnn.importers.onnx.CONVERTERS` and `fastcnn.runtime.kernels.KERNELS`.

Exit codes: 0 success, 2 for any FastCNNError (one line on stderr, no traceback) and for bad
command-line arguments (argparse), 130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

from fastcnn.errors import FastCNNError, InputError

PROB_TOL = 1e-3            # rows summing to 1 within this (and in [0, 1]) count as probabilities
DEFAULT_RUN_BATCH = 256
OPS_BEGIN = "<!-- ops-table:begin (generated: fastcnn ops, Markdown) -->"
OPS_END = "<!-- ops-table:end -->"


# ----------------------------------------------------------------------------- small helpers
def _fmt_shape(shape) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


def _fmt_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _fmt_count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f}"


def _table(rows, header) -> list:
    """Left-aligned text columns."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _threads(n):
    if n is None:
        return None
    from fastcnn import config
    return config.check_threads(n)


# ----------------------------------------------------------------------------- info
def _shapes_by_value(graph) -> tuple:
    """(types at batch 1, consts at batch 1, value name -> shape with None for dims that change
    with the dynamic input dims)."""
    from fastcnn.ir.graph import ValueType
    from fastcnn.ir.infer import infer_graph

    def at(fill):
        return infer_graph(graph, {t.name: ValueType(tuple(fill if d is None else d for d in t.shape),
                                                     t.dtype) for t in graph.inputs})

    one = at(1)
    dynamic = {}
    if any(d is None for t in graph.inputs for d in t.shape):
        try:
            two = at(2).types
        except FastCNNError:  # e.g. a Reshape to a fixed batch: the model only runs at size 1
            two = one.types
        for name, t in one.types.items():
            u = two.get(name, t)
            if len(u.shape) == len(t.shape):
                dynamic[name] = tuple(a if a == b else None for a, b in zip(t.shape, u.shape))
    return one, dynamic


def _print_io(graph_or_model):
    print("inputs:")
    for t in graph_or_model.inputs:
        lay = f" {t.layout}" if t.layout else ""
        print(f"  {t.name}  {t.dtype} {_fmt_shape(t.shape)}{lay}")
    print("outputs:")
    for t in graph_or_model.outputs:
        print(f"  {t.name}  {t.dtype} {_fmt_shape(t.shape)}")


def _print_metadata(metadata: dict):
    labels = metadata.get("labels")
    if labels:
        shown = ", ".join(labels[:20]) + (", ..." if len(labels) > 20 else "")
        print(f"labels: {len(labels)} classes: {shown}")
    else:
        print("labels: none (predictions are shown as class indices)")
    for key, value in metadata.items():
        if key != "labels":
            text = value if isinstance(value, str) else repr(value)
            print(f"{key}: {text if len(text) <= 300 else text[:300] + '...'}")


def _param_count(graph) -> tuple:
    floats = [a for a in graph.initializers.values() if a.dtype.kind == "f"]
    return sum(int(a.size) for a in floats), sum(int(a.nbytes) for a in floats)


def cmd_info(args) -> int:
    import fastcnn
    from fastcnn.errors import GraphError, UnsupportedOpError
    from fastcnn.runtime.plan import graph_nodes

    try:
        model = fastcnn.load(args.model, num_threads=_threads(args.threads))
    except (UnsupportedOpError, GraphError) as e:
        _info_unrunnable(args.model, e)
        raise
    with model:
        g = model.graph
        print(f"model: {args.model} ({_fmt_bytes(os.path.getsize(args.model))}), graph '{g.name}'")
        _print_io(model)
        _print_metadata(model.metadata)
        inferred, dynamic = _shapes_by_value(g)
        plan = model.plan_for()
        stepped = {id(m) for n in plan.step_nodes for m in graph_nodes(n)}
        rows = []
        for i, node in enumerate(g.nodes):
            shapes = " ".join(_fmt_shape(dynamic.get(o, inferred.types[o].shape)) for o in node.outputs if o)
            if all(o in inferred.consts for o in node.outputs if o):
                how = "folded"
            elif id(node) in stepped:
                how = "kernel"
            else:
                how = "view"
            rows.append((i, node.name, node.op, shapes, how))
        print(f"layers ({len(g.nodes)}; kernel = runs, view = no copy, folded = computed while "
              f"planning):")
        for line in _table(rows, ("#", "node", "op", "output shape", "runs as")):
            print("  " + line)
        n_params, n_bytes = _param_count(g)
        print(f"parameters: {n_params:,} ({_fmt_bytes(n_bytes)})")
        print(f"FLOPs (batch 1): {plan.flops:,} ({_fmt_count(plan.flops)})")
        print(f"activation arena (batch 1): {_fmt_bytes(plan.reused_bytes)} "
              f"(naive sum of activations {_fmt_bytes(plan.naive_bytes)}), "
              f"scratch {_fmt_bytes(plan.scratch_bytes)}")
        if plan.arena_bytes != plan.reused_bytes:
            print(f"  on {plan.num_threads} threads every tensor has its own region: "
                  f"{_fmt_bytes(plan.arena_bytes)} (no core writes over what the other wrote)")
        print(f"steps: {len(plan.steps)}, threads: {model.num_threads}")
    return 0


def _onnx_nodes(path) -> list:
    """(name, op, supported) of an ONNX file's nodes, read without converting them."""
    from fastcnn.importers.onnx import CONVERTERS
    import onnx

    proto = onnx.load(path, load_external_data=False)
    return [(n.name or f"#{i}", n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}",
             n.domain in ("", "ai.onnx") and n.op_type in CONVERTERS)
            for i, n in enumerate(proto.graph.node)]


def _info_unrunnable(path, error):
    """List the nodes of a model fastcnn cannot run, marking the operators it does not support."""
    from fastcnn.ir.ops import OPS
    from fastcnn.loading import detect_format, read_graph
    from fastcnn.runtime.kernels import KERNELS

    print(f"model: {path} (cannot run, see the error below)")
    try:
        graph, resources = read_graph(path)
    except FastCNNError:
        graph = resources = None
    if graph is not None:
        try:
            _print_io(graph)
            _print_metadata(graph.metadata)
            rows = []
            for i, node in enumerate(graph.nodes):
                if node.op not in OPS:
                    mark = "UNSUPPORTED"
                elif node.op not in KERNELS:
                    mark = "fold-only (constant inputs)"
                else:
                    mark = ""
                if f"'{node.name}'" in str(error):
                    mark = (mark + " <- error").strip()
                rows.append((i, node.name, node.op, mark))
        finally:
            if resources is not None:
                resources.close()
    elif detect_format(path) == "onnx":
        try:
            nodes = _onnx_nodes(path)
        except Exception:  # onnx missing or unreadable: the error line below says enough
            nodes = []
        rows = []
        for i, (name, op, ok) in enumerate(nodes):
            mark = "" if ok else "UNSUPPORTED"
            if f"'{name}'" in str(error):
                mark = (mark + " <- error").strip()
            rows.append((i, name, op, mark))
    else:
        rows = []
    if rows:
        print(f"nodes ({len(rows)}):")
        for line in _table(rows, ("#", "node", "op", "")):
            print("  " + line)
    sys.stdout.flush()


# ----------------------------------------------------------------------------- run
def _read_array_file(path) -> dict:
    """name -> array of a .npy (name 'x') or .npz file."""
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except Exception as e:  # bad zip, bad header, pickled objects, a directory, ...
        raise InputError(f"{path}: cannot read as .npy/.npz ({type(e).__name__}: {e})") from None
    if isinstance(data, np.ndarray):
        return {"x": data}
    try:
        return {k: data[k] for k in data.files}
    except Exception as e:
        raise InputError(f"{path}: cannot read as .npz ({type(e).__name__}: {e})") from None
    finally:
        data.close()


def pick_samples(arrays: dict, input_names, x_key=None, y_key=None) -> tuple:
    """Choose the input and label arrays of an .npy/.npz file.

    Inputs: `x_key` if given; else the model's input name, then "x", then "x_test" (a model with
    several inputs takes each from the key of its name). Labels: `y_key` if given; else the input
    key with its leading "x" replaced by "y" (x -> y, x_test -> y_test), then "y".
    Returns ({input name: (key, array)}, (key, labels) or None).
    """
    path_keys = ", ".join(sorted(arrays)) or "none"
    feeds = {}
    if len(input_names) > 1:
        for name in input_names:
            if name not in arrays:
                raise InputError(f"the model has inputs {', '.join(input_names)}; the file has "
                                 f"arrays {path_keys}")
            feeds[name] = (name, arrays[name])
        x_used = None
    else:
        candidates = [x_key] if x_key else [input_names[0], "x", "x_test"]
        x_used = next((k for k in candidates if k in arrays), None)
        if x_used is None:
            raise InputError(f"no input array {' or '.join(map(repr, candidates))} in the file "
                             f"(it has {path_keys}); choose one with --x-key")
        feeds[input_names[0]] = (x_used, arrays[x_used])
    if y_key:
        if y_key not in arrays:
            raise InputError(f"no label array {y_key!r} in the file (it has {path_keys})")
        y_used = y_key
    else:
        guesses = (["y" + x_used[1:]] if x_used and x_used.startswith("x") else []) + ["y"]
        y_used = next((k for k in guesses if k in arrays), None)
    return feeds, ((y_used, arrays[y_used]) if y_used else None)


def as_probabilities(scores: np.ndarray) -> tuple:
    """(N, C) scores -> (probabilities, softmax_applied).

    Rows already in [0, 1] and summing to 1 (within PROB_TOL) are kept as they are (the model
    ends in Softmax); anything else is taken as logits and softmax is applied over the classes.
    Either way the ranking of the classes is the model's own."""
    s = scores.astype(np.float64)
    if np.all(np.isfinite(s)) and s.min() >= 0 and s.max() <= 1 and \
            np.all(np.abs(s.sum(axis=1) - 1) <= PROB_TOL):
        return s, False
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True), True


def _label_indices(y: np.ndarray, n: int, labels) -> np.ndarray:
    """Labels as class indices (N,): integer labels, one-hot / score rows, or label strings."""
    if y.ndim == 2 and y.shape[0] == n:
        return y.argmax(axis=1)
    y = y.reshape(-1)
    if y.shape[0] != n:
        raise InputError(f"{y.shape[0]} labels for {n} samples")
    if y.dtype.kind in "iu":
        return y.astype(np.int64)
    if y.dtype.kind in "US" and labels:
        index = {s: i for i, s in enumerate(labels)}
        return np.array([index.get(str(s), -1) for s in y], np.int64)
    if y.dtype.kind == "f" and np.all(y == np.round(y)):
        return y.astype(np.int64)
    raise InputError(f"labels of dtype {y.dtype} are neither class indices nor the model's labels")


def cmd_run(args) -> int:
    import fastcnn

    if args.k < 1 or args.batch < 0:
        raise InputError("-k must be at least 1 and --batch at least 0")
    arrays = _read_array_file(args.input)
    model = fastcnn.load(args.model, num_threads=_threads(args.threads))
    with model:
        names = [t.name for t in model.inputs]
        feeds, labelled = pick_samples(arrays, names, args.x_key, args.y_key)
        batch_of = {}
        for spec in model.inputs:
            key, x = feeds[spec.name]
            if x.dtype.kind not in "fiub":
                raise InputError(f"{args.input}['{key}'] has dtype {x.dtype}; expected numbers")
            x = np.asarray(x, dtype=np.float32)
            if x.ndim == len(spec.shape) - 1:  # one sample without its batch axis
                x = x[None]
            feeds[spec.name] = (key, x)
            batch_of[spec.name] = x.shape[0]
        n = next(iter(batch_of.values()))
        if len(set(batch_of.values())) != 1:
            raise InputError(f"the inputs have different sample counts {batch_of}")
        labels = model.labels
        desc = ", ".join(f"'{k}' float32 {list(x.shape)}" for k, x in feeds.values())
        if labels:
            shown = ", ".join(labels[:10]) + (", ..." if len(labels) > 10 else "")
            print(f"model: {args.model}, {len(labels)} labels: {shown}")
        else:
            print(f"model: {args.model} (no labels: classes are shown by index)")
        print(f"input: {args.input} {desc}; {_plural(model.num_threads, 'thread')}")

        step = args.batch if args.batch else n
        if all(spec.shape and spec.shape[0] == 1 for spec in model.inputs):
            step = 1   # a graph of batch 1 (exported so, or fixed so at load) takes a sample a call
        t0 = time.perf_counter()
        chunks = []
        for start in range(0, n, step):
            chunks.append(model.run([model.outputs[0].name],
                                    {name: x[start:start + step] for name, (_, x) in feeds.items()})[0])
        elapsed = time.perf_counter() - t0
        out = np.concatenate(chunks, axis=0)
        print(f"ran {n} samples in {elapsed * 1e3:.1f} ms, planning included "
              f"(`fastcnn bench` measures speed)")

        if out.ndim > 2 and all(d == 1 for d in out.shape[2:]):
            out = out.reshape(out.shape[0], out.shape[1])
        name = model.outputs[0].name
        if out.ndim != 2:
            print(f"output '{name}' {list(out.shape)}: not (samples, classes); first values: "
                  f"{np.array2string(out.reshape(-1)[:8], precision=4)}")
            return 0
        probs, applied = as_probabilities(out)
        classes = out.shape[1]
        print(f"output '{name}' {list(out.shape)}: " +
              ("logits; softmax applied to show probabilities" if applied else "probabilities"))
        k = max(1, min(args.k, classes))
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        truth = _label_indices(labelled[1], n, labels) if labelled else None

        def name_of(c):
            return labels[c] if labels and 0 <= c < len(labels) else str(c)

        show = n if args.show < 0 else min(args.show, n)
        if show:
            rows = []
            for i in range(show):
                preds = "  ".join(f"{name_of(int(c))} ({probs[i, c]:.3f})" for c in top[i])
                row = [i]
                if truth is not None:
                    row += [name_of(int(truth[i])), "ok" if top[i, 0] == truth[i] else "WRONG"]
                rows.append(tuple(row + [preds]))
            head = ("#",) + (("true", "") if truth is not None else ()) + (f"top-{k} (probability)",)
            print(f"predictions{f' (first {show} of {n})' if show < n else ''}:")
            for line in _table(rows, head):
                print("  " + line)
        if truth is not None:
            hits = int((top[:, 0] == truth).sum())
            line = f"accuracy: {hits}/{n} = {100 * hits / n:.2f}% top-1"
            if k > 1:
                hits_k = int((top == truth[:, None]).any(axis=1).sum())
                line += f", {100 * hits_k / n:.2f}% top-{k}"
            print(line + f" (labels from '{labelled[0]}')")
            outside = int(((truth < 0) | (truth >= classes)).sum())
            if outside:
                print(f"note: {outside} of the {n} labels name classes this {classes}-class model "
                      f"does not have (they count as wrong)")
    return 0


# ----------------------------------------------------------------------------- convert
def _read_labels(path) -> list:
    """Labels from a text file (one per line, blank lines ignored) or a JSON list of strings."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read labels ({getattr(e, 'strerror', None) or e})") from None
    if text.lstrip().startswith("["):
        try:
            labels = json.loads(text)
        except ValueError as e:
            raise InputError(f"{path}: not a JSON list of labels ({e})") from None
        if not isinstance(labels, list) or not all(isinstance(s, str) for s in labels):
            raise InputError(f"{path}: the JSON labels must be a list of strings")
    else:
        labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise InputError(f"{path}: no labels in the file")
    return labels


def cmd_convert(args) -> int:
    import fastcnn

    metadata = {}
    if args.labels:
        labels = _read_labels(args.labels)
        with fastcnn.load(args.src, num_threads=1) as m:
            out = m.outputs[0]
            classes = out.shape[-1] if out.shape else None
        if classes is not None and classes != len(labels):
            raise InputError(f"{args.labels} has {len(labels)} labels but output '{out.name}' "
                             f"{_fmt_shape(out.shape)} of {args.src} has {classes} classes")
        metadata["labels"] = labels
    fastcnn.convert(args.src, args.dst, passes=not args.no_passes, metadata=metadata)
    with fastcnn.load(args.dst, num_threads=1) as m:
        n_params, _ = _param_count(m.graph)
        print(f"wrote {args.dst} ({os.path.getsize(args.dst):,} bytes): {len(m.graph.nodes)} nodes, "
              f"{n_params:,} parameters" + (f", {len(m.labels)} labels" if m.labels else ""))
    return 0


# ----------------------------------------------------------------------------- bench
def _bench_shapes(model, batch, shape_arg) -> dict:
    if shape_arg:
        if len(model.inputs) != 1:
            raise InputError("--shape works for single-input models only")
        try:
            shape = tuple(int(s) for s in shape_arg.split(","))
        except ValueError:
            raise InputError(f"--shape must be comma-separated integers, got {shape_arg!r}") from None
        return {model.inputs[0].name: shape}
    shapes = {}
    for t in model.inputs:
        dims = list(t.shape)
        if dims and dims[0] is None:
            dims[0] = batch
        if any(d is None for d in dims):
            raise InputError(f"input '{t.name}' {_fmt_shape(t.shape)} has dynamic dimensions "
                             f"besides the batch; give the full shape with --shape")
        shapes[t.name] = tuple(dims)
    return shapes


def cmd_bench(args) -> int:
    import fastcnn

    if args.runs < 1 or args.batch < 1 or args.warmup < 0:
        raise InputError("--runs and --batch must be at least 1, --warmup at least 0")
    model = fastcnn.load(args.model, num_threads=_threads(args.threads))
    with model:
        shapes = _bench_shapes(model, args.batch, args.shape)
        rng = np.random.default_rng(0)
        feed = {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in shapes.items()}
        images = next(iter(shapes.values()))[0] if shapes else 1
        t0 = time.perf_counter()
        model.run(None, feed)  # builds the plan for these shapes
        first = time.perf_counter() - t0
        for _ in range(args.warmup):
            model.run(None, feed)
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            model.run(None, feed)
            times.append(time.perf_counter() - t0)
        t = np.array(times)
        med = float(np.median(t))
        info = fastcnn.build_info()
        print(f"model: {args.model}; input {', '.join(f'{k} {list(v)}' for k, v in shapes.items())}; "
              f"{_plural(model.num_threads, 'thread')}; kernels {info.get('simd', '?')}"
              f"{', OpenMP' if info.get('openmp') else ', no OpenMP'}")
        print(f"first run (plan + run): {first * 1e3:.3f} ms")
        print(f"{args.runs} runs: median {med * 1e3:.3f} ms, min {t.min() * 1e3:.3f} ms, "
              f"p90 {np.percentile(t, 90) * 1e3:.3f} ms; {images / med:,.1f} images/s")
    return 0


# ----------------------------------------------------------------------------- ops
def ops_rows() -> list:
    """(operator, ONNX import, how it runs, notes) for every operator fastcnn knows."""
    from fastcnn.importers.onnx import CONVERTERS
    from fastcnn.ir.ops import OPS
    from fastcnn.runtime.kernels import KERNELS

    rows = []
    for op in sorted(set(OPS) | set(CONVERTERS), key=str.lower):
        onnx = "yes" if op in CONVERTERS else "-"
        if op not in OPS:
            runs, doc = "import", "converted by the ONNX importer (no IR operator)"
        else:
            runs = "kernel" if op in KERNELS else "fold-only"
            doc = OPS[op].doc
        rows.append((op, onnx, runs, doc))
    return rows


OPS_LEGEND = ("kernel: runs at run time in a Cython kernel. fold-only: evaluated while planning, "
              "when its inputs are constants or shapes (shape arithmetic); refused if it would have "
              "to run on data. import: handled by the ONNX importer. ONNX `-`: a fastcnn operator "
              "with no ONNX counterpart.")


def ops_markdown() -> str:
    """The supported-operator table as Markdown (the README's copy is checked against it)."""
    rows = ops_rows()
    kernels = sum(r[2] == "kernel" for r in rows)
    lines = [f"{len(rows)} operators, {kernels} with a run-time kernel. {OPS_LEGEND}", "",
             "| Operator | ONNX | Runs as | Notes |", "|---|---|---|---|"]
    for op, onnx, runs, doc in rows:
        lines.append(f"| {op} | {onnx} | {runs} | {doc.replace('|', chr(92) + '|')} |")
    return "\n".join(lines) + "\n"


def replace_between_markers(text: str, body: str) -> str:
    """`text` with everything between OPS_BEGIN and OPS_END replaced by `body`."""
    try:
        start = text.index(OPS_BEGIN) + len(OPS_BEGIN)
        end = text.index(OPS_END, start)
    except ValueError:
        raise InputError(f"the file has no '{OPS_BEGIN}' ... '{OPS_END}' markers") from None
    return text[:start] + "\n" + body + text[end:]


def cmd_ops(args) -> int:
    if args.update:
        try:
            with open(args.update, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise InputError(f"{args.update}: cannot read ({e.strerror or e})") from None
        new = replace_between_markers(text, ops_markdown())
        if new != text:
            with open(args.update, "w", encoding="utf-8") as f:
                f.write(new)
        print(f"{args.update}: operator table {'updated' if new != text else 'already up to date'}")
        return 0
    if args.markdown:
        sys.stdout.write(ops_markdown())
        return 0
    rows = ops_rows()
    for line in _table(rows, ("operator", "onnx", "runs as", "notes")):
        print(line)
    print()
    print(OPS_LEGEND)
    return 0


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from fastcnn import __version__

    parser = argparse.ArgumentParser(
        prog="fastcnn", description="fastcnn: run, inspect, convert and benchmark CNN models "
                                    "(.onnx, .fcnn, Keras .h5/.keras).")
    parser.add_argument("--version", action="version", version=f"fastcnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="layers, shapes, parameters, FLOPs, memory, labels of a model")
    p.add_argument("model", help="model file")
    p.add_argument("--threads", type=int, help="threads (default: fastcnn's default)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "run", help="classify the samples of an .npy/.npz file; accuracy if it has labels",
        description="Run MODEL on the samples in INPUT and print the top-k classes of its first "
                    "output. Scores that are "
                    "already probabilities (rows in [0,1] summing to 1) are shown as they are; "
                    "otherwise they are logits and softmax is applied for display (the ranking "
                    "is unchanged). Input keys: --x-key, else the model's input name, 'x', "
                    "'x_test'. Labels: --y-key, else the input key with 'x' -> 'y', else 'y'.")
    p.add_argument("model", help="model file")
    p.add_argument("input", help=".npy file (one array) or .npz file")
    p.add_argument("-k", type=int, default=3, help="classes shown per sample (default 3)")
    p.add_argument("--threads", type=int, help="threads (default: fastcnn's default)")
    p.add_argument("--x-key", help="npz key of the input samples")
    p.add_argument("--y-key", help="npz key of the labels (class indices or label strings)")
    p.add_argument("--show", type=int, default=10,
                   help="predictions printed (default 10; -1 for all)")
    p.add_argument("--batch", type=int, default=DEFAULT_RUN_BATCH,
                   help=f"samples per model call (default {DEFAULT_RUN_BATCH}; 0 for all at once)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("convert", help="write any supported model file as .fcnn")
    p.add_argument("src", help="model file (.onnx, .fcnn, Keras .h5/.keras)")
    p.add_argument("dst", help=".fcnn file to write (atomically)")
    p.add_argument("--labels", help="class labels: a text file with one per line, or a JSON list")
    p.add_argument("--no-passes", action="store_true", help="store the graph as imported")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("bench", help="median latency and images/s of fastcnn on random input")
    p.add_argument("model", help="model file")
    p.add_argument("--batch", type=int, default=1, help="batch size for a dynamic batch (default 1)")
    p.add_argument("--threads", type=int, help="threads (default: fastcnn's default)")
    p.add_argument("--runs", type=int, default=50, help="timed runs (default 50)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--shape", help="full input shape, e.g. 1,3,224,224 (dynamic dims besides the batch)")
    p.set_defaults(func=cmd_bench)

    from fastcnn.finetune import cli as finetune_cli
    finetune_cli.add_parser(sub)

    p = sub.add_parser("ops", help="the supported operator table")
    p.add_argument("--markdown", action="store_true", help="as a Markdown table (as in README.md)")
    p.add_argument("--update", metavar="FILE",
                   help=f"rewrite the table between the '{OPS_BEGIN}' / end markers of FILE")
    p.set_defaults(func=cmd_ops)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line of the tool's own, not Python's source-line report."""
    sys.stdout.flush()
    print(f"fastcnn: warning: {message}", file=sys.stderr)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():   # restores the process's warning display after
            warnings.showwarning = _show_warning
            return args.func(args)
    except FastCNNError as e:
        sys.stdout.flush()
        print(f"fastcnn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastcnn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fastcnn ops | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


if __name__ == "__main__":
    sys.exit(main())

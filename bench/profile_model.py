"""Per-layer time of fastcnn on one model, slowest first, to guide optimisation.

    python bench/profile_model.py resnet18 --batch 1 --threads 2
    python bench/profile_model.py path/to/model.onnx --batch 4 --seconds 5 --top 20

MODEL is a zoo name (bench/zoo.py builds it if needed) or a model file. The model's plan for the
input shape is run step by step with `fastcnn._kernels.step.run_steps_timed`, which adds each
step's wall time to its own slot; every repetition gets its own row and the table shows per-layer
medians. Steps that belong to one graph node (`plan.step_nodes`) are summed into one layer.
GFLOP/s counts 2 * MACs of conv and dense layers (bench/flops.py) on fastcnn's graph after its
passes, so a Conv with a folded BatchNormalization is one layer.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _paths import use_fastcnn  # noqa: E402

use_fastcnn()

import zoo  # noqa: E402
from flops import fastcnn_layers  # noqa: E402


def describe(op: str, attrs: dict, out_shape) -> str:
    """A short geometry note for the layers worth optimising (conv kernels, strides, groups)."""
    if op == "Conv":
        k = "x".join(map(str, attrs.get("kernel_shape") or [])) or "?"
        st = attrs.get("strides") or [1]
        note = f"k{k} s{st[0]}"
        if attrs.get("group", 1) != 1:
            note += f" g{attrs['group']}"
        act = attrs.get("activation")
        if act:
            note += f" +{act}"
        return note
    return ""


def profile(model, input_shape, seconds: float, min_reps: int = 3):
    """Time every step of the model's plan for `input_shape`.

    Returns (layers, run_ms, reps): layers is a list of dicts (name, op, steps, ms, flops,
    shape, note), slowest first, with per-layer median milliseconds over the repetitions;
    run_ms is the median over runs of the total of all steps; reps the number of runs."""
    from fastcnn._kernels.step import run_steps_timed
    from fastcnn.runtime.plan import graph_nodes

    plan = model.plan_for([tuple(input_shape)])
    info = fastcnn_layers(model, input_shape)
    x = np.random.default_rng(0).standard_normal(input_shape, dtype=np.float32)
    input_name = model.inputs[0].name
    n_steps = len(plan.steps)
    rows = []
    with plan.lock:
        # One untimed pass: first-touch page faults of the arena and scratch land here.
        np.copyto(plan.input_views[input_name], x)
        run_steps_timed(plan.steps, np.zeros(n_steps))
        end = time.perf_counter() + seconds
        while len(rows) < min_reps or time.perf_counter() < end:
            # Steps may overwrite the input's buffer once it is dead: feed it again each time.
            np.copyto(plan.input_views[input_name], x)
            row = np.zeros(n_steps)
            run_steps_timed(plan.steps, row)
            rows.append(row)
    per_rep = np.array(rows)  # (reps, steps) seconds

    groups = {}  # node name -> step indices, in plan order
    for i, node in enumerate(plan.step_nodes):
        groups.setdefault(node.name, []).append(i)
    layers = []
    for name, idx in groups.items():
        node = plan.step_nodes[idx[0]]
        # a fused node counts its parts' FLOPs and shows the last one's shape
        parts = [info.get(m.name, (0, (), m.attrs)) for m in graph_nodes(node)]
        flops, shape, attrs = sum(f for f, _, _ in parts), parts[-1][1], parts[-1][2]
        layers.append({
            "name": name, "op": node.op, "ms": float(np.median(per_rep[:, idx].sum(axis=1))) * 1e3,
            "steps": ", ".join(sorted({type(plan.steps[i]).__name__ for i in idx})),
            "flops": flops, "shape": shape, "note": describe(node.op, attrs, shape)})
    layers.sort(key=lambda r: -r["ms"])
    return layers, float(np.median(per_rep.sum(axis=1))) * 1e3, len(rows)


def table(layers, total_ms: float, top: int | None) -> list:
    """Markdown rows, slowest layer first; % and cum % are shares of `total_ms`."""
    head = ["#", "layer", "op", "step", "geometry", "output", "ms", "%", "cum %", "MFLOP", "GFLOP/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    cum = 0.0
    for k, r in enumerate(layers[:top] if top else layers, 1):
        pct = 100 * r["ms"] / total_ms if total_ms else 0.0
        cum += pct
        gflops = f"{r['flops'] / (r['ms'] * 1e-3) / 1e9:.2f}" if r["flops"] and r["ms"] > 0 else ""
        mflop = f"{r['flops'] / 1e6:.1f}" if r["flops"] else ""
        lines.append("| " + " | ".join(map(str, [
            k, r["name"], r["op"], r["steps"], r["note"], "x".join(map(str, r["shape"])),
            f"{r['ms']:.3f}", f"{pct:.1f}", f"{cum:.1f}", mflop, gflops])) + " |")
    return lines


def by_op(layers, total_ms: float) -> list:
    """Time and FLOPs summed per operator type."""
    ops = {}
    for r in layers:
        ms, fl, n = ops.get(r["op"], (0.0, 0, 0))
        ops[r["op"]] = (ms + r["ms"], fl + r["flops"], n + 1)
    lines = ["| op | layers | ms | % | GFLOP/s |", "|---|---|---|---|---|"]
    for op, (ms, fl, n) in sorted(ops.items(), key=lambda kv: -kv[1][0]):
        gf = f"{fl / (ms * 1e-3) / 1e9:.2f}" if fl and ms > 0 else ""
        lines.append(f"| {op} | {n} | {ms:.3f} | {100 * ms / total_ms:.1f} | {gf} |")
    return lines


def main(argv=None):
    """Command line: load the model, profile it, print the Markdown tables."""
    ap = argparse.ArgumentParser(description="per-layer time of fastcnn, slowest first")
    ap.add_argument("model", help=f"zoo model ({', '.join(zoo.MODELS)}) or a model file path")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=3.0, help="time to spend repeating (at least 3 runs)")
    ap.add_argument("--top", type=int, help="show only the N slowest layers")
    args = ap.parse_args(argv)
    import fastcnn

    if args.model in zoo.MODELS:
        path = zoo.ensure(args.model)
        shape = zoo.input_shape(args.model, args.batch)
    else:
        path = args.model
        shape = None
    model = fastcnn.load(path, num_threads=args.threads)
    if len(model.inputs) != 1:
        ap.error(f"{path}: profile_model.py handles single-input models; this one has {len(model.inputs)}")
    if shape is None:
        dims = model.inputs[0].shape
        if any(d is None for d in dims[1:]):
            ap.error(f"{path}: input shape {dims} has dynamic dims besides the batch")
        shape = (args.batch if dims[0] is None else dims[0], *dims[1:])
    layers, run_ms, reps = profile(model, shape, args.seconds)
    total_flops = sum(r["flops"] for r in layers)
    layer_ms = sum(r["ms"] for r in layers)  # the % columns are shares of this
    print(f"# fastcnn profile: {os.path.basename(path)}, input {list(shape)}, {args.threads} thread(s)")
    print()
    print(f"median run (all steps) {run_ms:.3f} ms over {reps} runs; sum of layer medians "
          f"{layer_ms:.3f} ms; {total_flops / 1e9:.3f} GFLOP (conv + dense) "
          f"-> {total_flops / (run_ms * 1e-3) / 1e9:.2f} GFLOP/s overall")
    print()
    print("\n".join(table(layers, layer_ms, args.top)))
    print()
    print("\n".join(by_op(layers, layer_ms)))


if __name__ == "__main__":
    main()

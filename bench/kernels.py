"""Single-layer benchmark of fastcnn's convolution and dense kernels against onnxruntime.

    python bench/kernels.py [--reps N] [--quick]

Prints Markdown tables:
- the numpy float32 matmul peak (np.dot of 1024x1024, median) with 1 and 2 BLAS threads, each
  measured in a fresh process (matmul_peak.py), the yardstick run.py uses;
- GFLOP/s for single conv layers, batch 1, 1 and 2 threads: fastcnn with the algorithm its
  planner picks, fastcnn forced to each other applicable algorithm, and onnxruntime running the
  same one-node ONNX model (intra_op_num_threads set). "kernel only" runs the planned step
  without Model.run's input/output copies (the copies weigh on layers with megabyte outputs). FLOPs are those of a direct convolution,
  2*N*C_out*H_out*W_out*C_in/group*KH*KW, whatever the algorithm (Winograd does fewer);
- microseconds per call for LeNet-5-sized layers (per-call overhead dominates there).

Both engines run through their public API (fastcnn.load(...).run, InferenceSession.run, default
session settings apart from the thread count) on the same input, taking turns in blocks of 5 runs
(the first run of a block untimed). Medians are reported, plus the ratio of the two engines' best
runs, which is steadier when other processes load the machine. This machine is shared: compare
ratios measured in the same run, not absolute numbers across runs.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _paths import use_fastcnn  # noqa: E402

use_fastcnn()

import fastcnn  # noqa: E402
from fastcnn._kernels.step import run_steps  # noqa: E402
from fastcnn.runtime import k_conv  # noqa: E402
from matmul_peak import peak_in_subprocess  # noqa: E402

THREADS = (1, 2)

# name, (c_in, h, w), (c_out, k, stride, pad, group)
CONV_LAYERS = [
    ("3x3 64->64 56x56", (64, 56, 56), (64, 3, 1, 1, 1)),
    ("1x1 64->256 56x56", (64, 56, 56), (256, 1, 1, 0, 1)),
    ("dw 3x3 32ch 112x112", (32, 112, 112), (32, 3, 1, 1, 32)),
    ("dw 3x3 144ch 56x56", (144, 56, 56), (144, 3, 1, 1, 144)),
    ("dw 3x3 s2 144ch 56x56", (144, 56, 56), (144, 3, 2, 1, 144)),
    ("7x7 s2 3->64 224x224", (3, 224, 224), (64, 7, 2, 3, 1)),
    ("3x3 128->128 28x28", (128, 28, 28), (128, 3, 1, 1, 1)),
    ("3x3 256->256 14x14", (256, 14, 14), (256, 3, 1, 1, 1)),
    ("3x3 512->512 7x7", (512, 7, 7), (512, 3, 1, 1, 1)),
]
TINY_LAYERS = [
    ("LeNet conv1 1->6 5x5 32x32", "conv", (1, 32, 32), (6, 5, 1, 0, 1)),
    ("LeNet conv2 6->16 5x5 14x14", "conv", (6, 14, 14), (16, 5, 1, 0, 1)),
    ("LeNet dense 400->120", "dense", (400,), (120,)),
]


def _save(model) -> str:
    import onnx
    fd, path = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    onnx.save(model, path)
    return path


def conv_model(x_shape, c_out, k, stride, pad, group, rng):
    """A one-node ONNX Conv (+ bias, fused nothing) on a (1, c_in, h, w) input."""
    from onnx import TensorProto, helper, numpy_helper
    c_in = x_shape[0]
    w = (rng.standard_normal((c_out, c_in // group, k, k)) / np.sqrt(c_in // group * k * k)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32) * np.float32(0.1)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], strides=[stride] * 2,
                            pads=[pad] * 4, group=group)
    graph = helper.make_graph([node], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *x_shape])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 10)
    h_out = (x_shape[1] + 2 * pad - k) // stride + 1
    w_out = (x_shape[2] + 2 * pad - k) // stride + 1
    flops = 2 * c_out * h_out * w_out * (c_in // group) * k * k
    return model, flops


def dense_model(k, n, rng):
    from onnx import TensorProto, helper, numpy_helper
    w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    graph = helper.make_graph([node], "dense",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 10)
    return model, 2 * k * n


def ort_session(model, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def fastcnn_model(path, threads, algorithm=None):
    k_conv.FORCE_ALGORITHM = algorithm
    try:
        return fastcnn.load(path, num_threads=threads)
    finally:
        k_conv.FORCE_ALGORITHM = None


STEP_ALGORITHM = {"ConvDirectStep": "direct", "ConvGemmStep": "gemm",
                  "ConvVecStep": "vecdirect", "ConvTileStep": "tile",
                  "ConvDepthwiseStep": "depthwise", "PackedDenseStep": "packed gemm",
                  "DenseStep": "row gemm"}


def chosen_algorithm(model) -> str:
    """The algorithm of the model's (single) compute step."""
    plan = next(iter(model._plans.values()))[0]
    step = plan.steps[0]
    name = type(step).__name__
    if name == "ConvWinogradStep":
        return f"winograd{step.m}"
    return STEP_ALGORITHM.get(name, name)


def time_turns(runners, reps, min_seconds=0.0, block=5):
    """runners: zero-argument callables. In every round each runner runs `block` times in a row,
    in turn; the first run of each block is not timed (a thread pool still spinning from the
    previous engine, cold caches). Rounds repeat until every runner has `reps` timings and
    `min_seconds` have passed. Returns per-runner (median, best) seconds."""
    for r in runners:  # warm-up: first-call allocations, page faults, thread pools
        r()
    times = [[] for _ in runners]
    start = time.perf_counter()
    while len(times[0]) < reps or time.perf_counter() - start < min_seconds:
        for t, r in zip(times, runners):
            r()
            for _ in range(block - 1):
                t0 = time.perf_counter()
                r()
                t.append(time.perf_counter() - t0)
    return [(float(np.median(t)), float(np.min(t))) for t in times]


def numpy_peak(seconds: float = 1.5) -> dict:
    """threads -> median GFLOP/s of np.dot on 1024x1024 float32, each thread count measured in a
    fresh process with the BLAS threads fixed before numpy loads (matmul_peak.py, as run.py
    does). In this process numpy's BLAS already runs on every core: without threadpoolctl the
    "1 thread" figure was a 2-thread one (151 GFLOP/s), and every 1-thread "% of numpy peak"
    was understated by half."""
    return {nt: peak_in_subprocess(nt, seconds) for nt in THREADS}


def conv_table(reps, peak, layers, rng, direct):
    print("\n## Single conv layers, batch 1 (GFLOP/s, direct-conv FLOPs)\n")
    print("| layer | threads | fastcnn algorithm | fastcnn | onnxruntime | fastcnn / ort "
          "| best-run ratio | % of numpy peak | fastcnn kernel only | other fastcnn algorithms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, x_shape, (c_out, k, stride, pad, group) in layers:
        model, flops = conv_model(x_shape, c_out, k, stride, pad, group, rng)
        path = _save(model)
        x = rng.standard_normal((1, *x_shape)).astype(np.float32)
        try:
            for nt in THREADS:
                chosen = fastcnn_model(path, nt)
                others = {}
                for algo in k_conv.ALGORITHMS:
                    if algo == "direct" and not direct:
                        continue
                    m = fastcnn_model(path, nt, algo)
                    label = chosen_algorithm(m)
                    if label != chosen_algorithm(chosen):  # forced ones that do not apply fall back
                        others.setdefault(label, m)
                sess = ort_session(model, nt)
                steps = next(iter(chosen._plans.values()))[0].steps
                runners = [lambda: chosen.run(None, {"x": x}), lambda: sess.run(None, {"x": x}),
                           lambda: run_steps(steps)]
                runners += [(lambda mm: lambda: mm.run(None, {"x": x}))(m) for m in others.values()]
                t = time_turns(runners, reps)
                g = [flops / med / 1e9 for med, _ in t]
                best = [flops / b / 1e9 for _, b in t]
                other = ", ".join(f"{k} {v:.1f}" for k, v in zip(others, g[3:]))
                print(f"| {name} | {nt} | {chosen_algorithm(chosen)} | {g[0]:.1f} | {g[1]:.1f} "
                      f"| {g[0] / g[1]:.2f} | {best[0] / best[1]:.2f} "
                      f"| {100 * g[0] / peak[nt]:.0f}% | {g[2]:.1f} | {other} |", flush=True)
        finally:
            os.unlink(path)


def tiny_table(reps, layers, rng):
    print("\n## Tiny layers, batch 1 (microseconds per call, median)\n")
    print("| layer | threads | fastcnn algorithm | fastcnn us | onnxruntime us | fastcnn / ort time "
          "| best-run ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, kind, x_shape, params in layers:
        if kind == "conv":
            model, _ = conv_model(x_shape, *params, rng)
        else:
            model, _ = dense_model(x_shape[0], params[0], rng)
        path = _save(model)
        x = rng.standard_normal((1, *x_shape)).astype(np.float32)
        try:
            for nt in THREADS:
                m = fastcnn_model(path, nt)
                sess = ort_session(model, nt)
                t = time_turns([lambda: m.run(None, {"x": x}), lambda: sess.run(None, {"x": x})],
                               reps, min_seconds=0.5)
                (fm, fb), (om, ob) = t
                print(f"| {name} | {nt} | {chosen_algorithm(m)} | {fm * 1e6:.1f} "
                      f"| {om * 1e6:.1f} | {fm / om:.2f} | {fb / ob:.2f} |", flush=True)
        finally:
            os.unlink(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=30, help="repetitions per layer (default 30)")
    ap.add_argument("--quick", action="store_true", help="only the layers the brief targets")
    ap.add_argument("--direct", action="store_true",
                    help="also time the direct reference kernel (slow: ~1 GFLOP/s)")
    args = ap.parse_args()
    import onnxruntime
    rng = np.random.default_rng(0)
    info = fastcnn.build_info()
    print(f"# fastcnn kernel benchmark\n\nfastcnn {info['version']} ({info['simd']}, "
          f"OpenMP {info['openmp']}), onnxruntime {onnxruntime.__version__}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs, {args.reps} repetitions, medians")
    peak = numpy_peak(0.3 if args.quick else 1.5)
    print("\n## numpy float32 matmul peak (np.dot 1024x1024, median, a fresh process per thread count)\n")
    print("| threads | GFLOP/s |\n|---|---|")
    for nt in THREADS:
        print(f"| {nt} | {peak[nt]:.1f} |")
    layers = CONV_LAYERS[:6] if args.quick else CONV_LAYERS
    conv_table(args.reps, peak, layers, rng, args.direct)
    tiny_table(max(args.reps, 200), TINY_LAYERS, rng)


if __name__ == "__main__":
    main()

"""Peak resident memory of a fresh process that loads one model and runs one input.

    python bench/peak_rss.py fastcnn bench/zoo/resnet18.onnx --shape 1,3,224,224 --threads 2
    python bench/peak_rss.py ort     bench/zoo/resnet18.onnx --shape 1,3,224,224 --threads 2
    python bench/peak_rss.py openvino bench/zoo/resnet18.onnx --shape 1,3,224,224 --threads 2

The engines: fastcnn, ort, and the others of bench/engines.py (openvino, ncnn, torch) when installed.

Prints one JSON line {"engine", "import_mib", "peak_mib"}: the process's resident-memory
high-water mark after importing numpy and the engine, and after loading the model and running it
once. The difference is what the model costs; the total is what a user's process needs. run.py
starts one such process per engine so the figures do not include each other.

On Linux the high-water mark is read from VmHWM in /proc/self/status, not from
getrusage(RUSAGE_SELF).ru_maxrss: the kernel carries ru_maxrss over fork and exec, so a child
started by a big parent (the benchmark process holding every model) reports the parent's peak.
VmHWM belongs to the address space that exec creates and starts from zero. Elsewhere ru_maxrss
is the fallback.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys


def maxrss_mib() -> float:
    """Peak resident memory of this process image so far, MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0 if sys.platform != "darwin" else kib / (1024.0 * 1024.0)  # macOS: bytes


def main(argv=None):
    """Command line: load, run once, print the memory high-water marks as JSON."""
    ap = argparse.ArgumentParser(description="peak RSS of load + one run")
    ap.add_argument("engine", choices=("fastcnn", "ort", "openvino", "ncnn", "torch"))
    ap.add_argument("path", help="model file (.onnx, or .fcnn for fastcnn)")
    ap.add_argument("--shape", required=True, help="input shape, comma separated, e.g. 1,3,224,224")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--input", default="input", help="input name")
    args = ap.parse_args(argv)
    shape = tuple(int(d) for d in args.shape.split(","))

    import numpy as np
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    if args.engine == "fastcnn":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from _paths import use_fastcnn
        use_fastcnn()
        import fastcnn
        imported = maxrss_mib()
        model = fastcnn.load(args.path, num_threads=args.threads)
        y = model.run(None, {args.input: x})[0]
    elif args.engine != "ort":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import engines
        __import__(args.engine)   # the engine's own import counts as "after import", as ort's
        imported = maxrss_mib()
        runner = engines.open_engine(args.engine, args.path, args.threads, shape)
        y = runner(x)
    else:
        import onnxruntime as ort
        imported = maxrss_mib()
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(args.path, so, providers=["CPUExecutionProvider"])
        y = sess.run(None, {args.input: x})[0]
    if not np.isfinite(y).all():
        raise SystemExit(f"{args.engine}: non-finite output")
    print(json.dumps({"engine": args.engine, "import_mib": imported, "peak_mib": maxrss_mib()}))


if __name__ == "__main__":
    main()

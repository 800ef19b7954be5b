"""Load times of engines in a fresh process: the median of `--reps` loads of each, taking turns.

    python bench/load_time.py bench/zoo/resnet18.onnx --fcnn /tmp/resnet18.fcnn --threads 2 \
        --engines fastcnn-onnx fastcnn-fcnn ort
    python bench/load_time.py bench/zoo/resnet18.onnx --threads 2 --shape 1,3,224,224 --engines openvino

Prints one JSON line {engine: seconds}. run.py starts one such process for fastcnn and
onnxruntime together and one per other engine (bench/engines.py), so a load never runs in a
process whose heap and threads another engine's libraries have shaped (with torch, OpenVINO
and ncnn imported beside them, fastcnn's and onnxruntime's ResNet-18 loads took 10-50% longer
in one run, in a pattern that changed between runs).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _paths import use_fastcnn  # noqa: E402

use_fastcnn()

LOADERS = ("fastcnn-onnx", "fastcnn-fcnn", "ort", "openvino", "ncnn", "torch")


def loaders(names, path: str, fcnn_path, threads: int, shape) -> dict:
    """name -> a function loading the model with that engine and returning the loaded object."""
    import engines
    from run import ort_session
    out = {}
    for name in names:
        if name in ("fastcnn-onnx", "fastcnn-fcnn"):
            import fastcnn
            p = path if name == "fastcnn-onnx" else fcnn_path
            if p is None:
                raise SystemExit("fastcnn-fcnn needs --fcnn")
            out[name] = (lambda p: lambda: fastcnn.load(p, num_threads=threads))(p)
        elif name == "ort":
            out[name] = lambda: ort_session(path, threads, True)
        else:
            if shape is None:
                raise SystemExit(f"{name} needs --shape")
            engines.open_engine(name, path, threads, shape).close()   # ncnn: convert first
            out[name] = (lambda name: lambda: engines.open_engine(name, path, threads, shape))(name)
    return out


def main(argv=None):
    """Command line: time the loads, print {engine: median seconds} as JSON."""
    ap = argparse.ArgumentParser(description="median load time per engine, in this fresh process")
    ap.add_argument("path", help="the .onnx file")
    ap.add_argument("--fcnn", help="the same model as .fcnn (for fastcnn-fcnn)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shape", help="input shape, comma separated (the other engines prepare for it)")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--engines", nargs="+", choices=LOADERS, required=True)
    args = ap.parse_args(argv)
    shape = tuple(int(d) for d in args.shape.split(",")) if args.shape else None
    from run import median_seconds
    fns = loaders(args.engines, args.path, args.fcnn, args.threads, shape)
    print(json.dumps(median_seconds(fns, args.reps)))


if __name__ == "__main__":
    main()

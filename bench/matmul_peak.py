"""numpy's float32 matmul speed, the yardstick for "% of peak" in bench/run.py.

    python bench/matmul_peak.py --threads 2 [--seconds 1.5] [--size 1024]

Prints one JSON line {"threads", "size", "gflops", "reps"}: the median GFLOP/s of
np.dot(a, b) on (size, size) float32 matrices. The BLAS thread count is fixed through the
environment before numpy is imported (OPENBLAS/OMP/MKL_NUM_THREADS), so run.py measures each thread
count in a fresh process: that needs no threadpoolctl and leaves no BLAS threads behind in the
benchmark process.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def measure(size: int, seconds: float) -> tuple:
    """(median GFLOP/s, reps) of np.dot on (size, size) float32 in this process."""
    import numpy as np
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty((size, size), np.float32)
    for _ in range(3):
        np.dot(a, b, out=out)
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        t0 = time.perf_counter()
        np.dot(a, b, out=out)
        times.append(time.perf_counter() - t0)
    return 2.0 * size ** 3 / float(np.median(times)) / 1e9, len(times)


def peak_in_subprocess(threads: int, seconds: float = 1.5, size: int = 1024) -> float:
    """GFLOP/s of numpy matmul with `threads` BLAS threads, measured in a fresh process."""
    cmd = [sys.executable, os.path.abspath(__file__), "--threads", str(threads),
           "--seconds", str(seconds), "--size", str(size)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["gflops"])


def main(argv=None):
    """Command line: fix the BLAS threads, then measure and print JSON."""
    ap = argparse.ArgumentParser(description="numpy float32 matmul GFLOP/s")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args(argv)
    if "numpy" in sys.modules:
        raise SystemExit("matmul_peak must set the BLAS threads before numpy is imported")
    for var in THREAD_VARS:
        os.environ[var] = str(args.threads)
    gflops, reps = measure(args.size, args.seconds)
    print(json.dumps({"threads": args.threads, "size": args.size, "gflops": gflops, "reps": reps}))


if __name__ == "__main__":
    main()

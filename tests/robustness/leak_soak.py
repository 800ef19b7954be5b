"""Long leak soak (run by `fuzz_campaign.py --target leaks --seconds N`): for N seconds, mixes
inference on the shipped LeNet model (batch sizes 1..9, 1 and 2 threads), load/run/close cycles
of its .onnx and .fcnn files, failing loads of a corrupt copy, and failing calls. It prints the
RSS, open file handles and mappings of the model files as it goes, and fails when, after a warm-up
tenth of the time, the RSS grew more than 16 MB or any handle or mapping was not given back.
"""
from __future__ import annotations

import gc
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

MB = 1 << 20
MODELS = Path(__file__).resolve().parents[2] / "models"


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def mapped(paths) -> int:
    real = {os.path.realpath(p) for p in paths}
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if line.split()[-1] in real)


def main(seconds: float) -> int:
    import fastcnn

    tmp = tempfile.mkdtemp(prefix="fastcnn-soak-")
    try:
        onnx_path = shutil.copy(MODELS / "lenet5_digits.onnx", tmp)
        fcnn_path = shutil.copy(MODELS / "lenet5_digits.fcnn", tmp)
        data = bytearray(Path(fcnn_path).read_bytes())
        data[len(data) // 2] ^= 1
        bad_path = os.path.join(tmp, "corrupt.fcnn")
        Path(bad_path).write_bytes(bytes(data))
        x = np.load(MODELS / "digits_samples.npz")["x"]
        resident = fastcnn.load(fcnn_path, num_threads=2)
        counts = {"inferences": 0, "loads": 0, "failed loads": 0, "failed calls": 0}
        start = time.monotonic()
        warm_until = start + seconds / 10
        base = None
        last_print = start
        i = 0
        while time.monotonic() - start < seconds:
            i += 1
            n = 1 + i % 9
            resident.set_num_threads(1 + i % 2)
            resident(x[:n])
            counts["inferences"] += 1
            if i % 50 == 0:
                path = onnx_path if i % 100 else fcnn_path
                with fastcnn.load(path, num_threads=1) as m:
                    m(x[:2])
                counts["loads"] += 1
            if i % 97 == 0:
                try:
                    fastcnn.load(bad_path)
                except fastcnn.ModelFileError:
                    counts["failed loads"] += 1
            if i % 31 == 0:
                try:
                    resident.run(None, {"input": x[:2].astype(np.float64)})
                except fastcnn.InputError:
                    counts["failed calls"] += 1
            now = time.monotonic()
            if base is None and now >= warm_until:
                gc.collect()
                base = (rss(), fds(), mapped([onnx_path, bad_path]))
            if now - last_print >= 10:
                last_print = now
                print(f"  {now - start:5.0f} s  rss {rss() / MB:7.1f} MB  fds {fds()}  "
                      f"maps {mapped([onnx_path, fcnn_path, bad_path])}  {counts}", flush=True)
        gc.collect()
        end = (rss(), fds(), mapped([onnx_path, bad_path]))
        resident.close()
        del resident
        gc.collect()
        left = mapped([onnx_path, fcnn_path, bad_path])
        grown = end[0] - base[0]
        print(f"leak soak: {seconds:.0f} s, {counts}; after warm-up RSS {base[0] / MB:.1f} -> "
              f"{end[0] / MB:.1f} MB ({grown / MB:+.1f} MB), fds {base[1]} -> {end[1]}, "
              f"mappings left after close {left}")
        ok = grown < 16 * MB and end[1] <= base[1] and end[2] == 0 and left == 0
        print("leak soak:", "no leak" if ok else "LEAK")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

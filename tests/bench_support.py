"""What the tests of bench/ share: bench modules imported from the checkout, the zoo models'
test sizes and an onnxruntime reference. The zoo files themselves are the `zoo_files` fixture
(tests/bench/conftest.py)."""
from __future__ import annotations

import importlib.util
import os
import sys

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.join(REPO_DIR, "bench")


def load_bench_module(name: str):
    """Import bench/<name>.py under a private name. bench/ goes on sys.path only while it loads
    (its modules import their siblings), so bench/profile_model.py never shadows the stdlib module."""
    saved = list(sys.path)
    sys.path.insert(0, BENCH_DIR)
    try:
        spec = importlib.util.spec_from_file_location(f"fastcnn_bench_{name}",
                                                      os.path.join(BENCH_DIR, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module   # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path[:] = saved


zoo = load_bench_module("zoo")

# Test sizes: the big networks at 32x32 (same weights, all stages down to 1x1), so the
# naive kernels finish in well under a second.
TEST_SIZE = {"lenet5": None, "edge_cnn": None, "resnet18": 32, "mobilenetv2": 32,
             "efficientnet_b0": 32}


def ort_run(path, x, threads=1):
    """onnxruntime's first output of the model at `path` for input x (the zoo's input name)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {zoo.INPUT_NAME: x})[0]

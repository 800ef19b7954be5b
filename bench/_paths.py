"""Make `import fastcnn` find the installed package, or else this checkout's in-place build.

Putting the checkout first on sys.path would shadow an installed fastcnn with the source tree,
which has no compiled kernels after a plain `pip install .`."""
import os
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)


def use_fastcnn():
    if BENCH_DIR not in sys.path:
        sys.path.insert(0, BENCH_DIR)
    try:
        import fastcnn  # noqa: F401
    except ImportError:
        for name in [m for m in sys.modules if m == "fastcnn" or m.startswith("fastcnn.")]:
            del sys.modules[name]
        sys.path.insert(0, REPO_DIR)

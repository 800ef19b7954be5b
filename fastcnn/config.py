"""Process-wide settings: default thread count and the memory limit.

Threads are resolved here and nowhere else (DESIGN rule 7); kernels receive the number.
"""
from __future__ import annotations

import os
import threading

_lock = threading.Lock()

# How long an idle OpenMP worker spins before it sleeps, unless the user chose a wait policy.
# libgomp's default (300,000 spins, about 10 ms here) keeps a core busy long after `run`
# returns, and on a shared CPU that spinning starves other work. Too short a spin is worse:
# a worker that fell asleep between two layers (or at a barrier) is woken through the kernel,
# which on this virtual machine costs up to hundreds of microseconds per wake-up (measured with
# bench/profile_model.py at 2 threads: edge CNN 1.40 ms per image with 2,000 spins, 0.37 ms
# with 30,000; MobileNetV2 14.8 ms vs 7.9 ms). 30,000 spins last about 2 ms: workers stay awake
# through a whole inference and go idle about 2 ms after it (tests/runtime/test_concurrency.py).
DEFAULT_GOMP_SPINCOUNT = "30000"


def configure_openmp_env() -> str:
    """Set GOMP_SPINCOUNT before libgomp loads, unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set.
    Returns a description of the policy in effect (reported by fastcnn.build_info())."""
    if "OMP_WAIT_POLICY" in os.environ:
        return f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} (user)"
    if "GOMP_SPINCOUNT" in os.environ:
        return f"GOMP_SPINCOUNT={os.environ['GOMP_SPINCOUNT']} (user)"
    os.environ["GOMP_SPINCOUNT"] = DEFAULT_GOMP_SPINCOUNT
    return f"GOMP_SPINCOUNT={DEFAULT_GOMP_SPINCOUNT} (fastcnn default)"


OPENMP_WAIT = configure_openmp_env()
_default_threads: int | None = None
_memory_limit: int | None = None


_cores_seen = None   # (allowed CPU set, physical cores) of the last call


def physical_cores() -> int:
    """Physical cores this process may run on (hyperthread siblings count once)."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 1))
    global _cores_seen
    key = frozenset(allowed)
    if _cores_seen is not None and _cores_seen[0] == key:
        return _cores_seen[1]   # planning asks per node: read sysfs once per CPU set
    cores = set()
    try:
        for cpu in allowed:
            path = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
            with open(path + "core_id") as f:
                core = f.read().strip()
            with open(path + "physical_package_id") as f:
                pkg = f.read().strip()
            cores.add((pkg, core))
    except OSError:
        return max(1, len(allowed))
    n = max(1, min(len(cores), len(allowed)))
    _cores_seen = (key, n)
    return n


_llc_bytes = None


def last_level_cache_bytes() -> int:
    """Size of the largest CPU cache (Linux sysfs, read once; 16 MiB, a common L3, where
    unknown)."""
    global _llc_bytes
    if _llc_bytes is None:
        size = 16 << 20
        try:
            base = "/sys/devices/system/cpu/cpu0/cache"
            sizes = []
            for d in os.listdir(base):
                if d.startswith("index"):
                    with open(os.path.join(base, d, "size")) as f:
                        text = f.read().strip()
                    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
                    sizes.append(int(text.rstrip("KMG")) * mult)
            if sizes:
                size = max(sizes)
        except (OSError, ValueError):
            pass
        _llc_bytes = size
    return _llc_bytes


def default_threads() -> int:
    """Thread count used when a model is loaded with num_threads=None.

    Order: fastcnn.set_num_threads(), then FASTCNN_NUM_THREADS, then OMP_NUM_THREADS, then the
    number of physical cores.
    """
    if _default_threads is not None:
        return _default_threads
    for var in ("FASTCNN_NUM_THREADS", "OMP_NUM_THREADS"):
        v = os.environ.get(var, "").split(",")[0].strip()
        if v.isdigit() and int(v) > 0:
            return int(v)
    return physical_cores()


def set_num_threads(n: int | None) -> None:
    """Set the default thread count for models loaded afterwards (None: back to automatic)."""
    global _default_threads
    if n is not None:
        n = check_threads(n)
    with _lock:
        _default_threads = n


def check_threads(n) -> int:
    from fastcnn.errors import FastCNNError

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1024:
        raise FastCNNError(f"num_threads must be an int from 1 to 1024, got {n!r}")
    return n


def _total_ram() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def memory_limit() -> int:
    """Most bytes one plan (activations and scratch) or one tensor may use.

    Default: FASTCNN_MEMORY_LIMIT (bytes, or with a K/M/G suffix) if set, else half the RAM.
    """
    if _memory_limit is not None:
        return _memory_limit
    v = os.environ.get("FASTCNN_MEMORY_LIMIT", "").strip().upper()
    if v:
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(v[-1], 1)
        digits = v[:-1] if v[-1] in "KMG" else v
        if digits.isdigit():
            return int(digits) * mult
    return _total_ram() // 2


def set_memory_limit(nbytes: int | None) -> None:
    """Set the memory limit in bytes (None: back to the default)."""
    global _memory_limit
    from fastcnn.errors import FastCNNError

    if nbytes is not None and (isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes <= 0):
        raise FastCNNError(f"memory limit must be a positive int (bytes), got {nbytes!r}")
    with _lock:
        _memory_limit = nbytes

"""Runs model files through fastcnn in a child process and classifies what happened.

The parent (`Runner`) writes one request per case to a long-lived worker interpreter and reads
one JSON line back. A segfault, an abort or a hang only kills the worker: the parent records the
case as a finding and starts a new worker. Per case the worker reports:

- outcome "ok" (loaded and ran), "error" (a FastCNNError with a message: the expected way to
  refuse a bad file) or "finding" (any other exception type, an empty message, or a memory
  bound exceeded);
- peak Python-level allocation during the case (tracemalloc: numpy's buffers are traced too);
- growth of the worker's peak RSS (`peak_rss_bytes`) beyond its baseline, which catches
  allocations tracemalloc cannot see (protobuf, HDF5, mmap'd pages touched).

The bound for a case is max(64 MB, 4 x file size) on top of the activation memory limit the
worker sets (fastcnn.set_memory_limit(LIMIT)), so a file whose graph is valid but large is refused
with ResourceLimitError instead of counting against the file-size bound. The worker also lowers
RLIMIT_AS, so a runaway allocation fails fast (as a MemoryError finding) instead of thrashing the
shared machine.
"""
from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

MB = 1 << 20
ACTIVATION_LIMIT = 32 * MB          # fastcnn.set_memory_limit in the worker
ADDRESS_SPACE_HEADROOM = 3 << 30    # RLIMIT_AS above the worker's size after imports
CASE_TIMEOUT = 30.0                 # seconds: a case taking longer is a hang


def peak_rss_bytes() -> int:
    """This process's resident-memory high-water mark. VmHWM from /proc/self/status where it
    exists: it starts from zero in a new program, where ru_maxrss carries the parent's peak over
    fork and exec (a worker started by a big test process would not see growth below that)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024   # kB
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_bound(file_size: int) -> int:
    """Most bytes loading (and running once) a file of `file_size` bytes may allocate."""
    return max(64 * MB, 4 * file_size) + ACTIVATION_LIMIT


# ----------------------------------------------------------------------------- worker side
def _inputs_for(model, rng):
    """Random float32 inputs for a loaded model: dynamic dims 1 (2 for a dynamic batch, so the
    batch-dynamic path is exercised), None when they would not fit the activation limit."""
    import numpy as np
    feeds = {}
    for t in model.inputs:
        shape = tuple((2 if i == 0 else 1) if d is None else d for i, d in enumerate(t.shape))
        n = 1
        for d in shape:
            n *= d
        if n * 4 > ACTIVATION_LIMIT:
            return None
        # float32 drawn directly: a float64 draw and its cast (3x the input) counted against
        # the file's memory bound as if fastcnn had allocated them
        feeds[t.name] = rng.standard_normal(shape, dtype=np.float32)
    return feeds


def run_case(path: str, run: bool = True, trace: bool = True) -> dict:
    """Load `path` with fastcnn (and run it once when it loads); classify the outcome.
    trace: measure the peak Python-level allocation with tracemalloc (5x slower)."""
    import traceback
    import tracemalloc

    import numpy as np

    import fastcnn
    from fastcnn.errors import FastCNNError

    size = os.path.getsize(path)
    UNRAISABLE.clear()
    if trace:
        tracemalloc.start(1)
    base = tracemalloc.get_traced_memory()[0]
    res = {"outcome": "ok", "detail": ""}
    model = None
    try:
        model = fastcnn.load(path)
        if run:
            feeds = _inputs_for(model, np.random.default_rng(0))
            if feeds is not None:
                outs = model.run(None, feeds)
                res["detail"] = "ran: " + ", ".join(str(list(o.shape)) for o in outs)
    except FastCNNError as e:
        msg = str(e)
        if not msg.strip():
            res = {"outcome": "finding", "kind": "EmptyMessage", "detail": type(e).__name__}
        else:
            res = {"outcome": "error", "kind": type(e).__name__, "detail": msg[:500]}
    except BaseException as e:  # noqa: BLE001 - everything else is what we are looking for
        if isinstance(e, KeyboardInterrupt):
            raise
        tb = traceback.extract_tb(e.__traceback__)
        where = [f"{os.path.basename(f.filename)}:{f.lineno}:{f.name}" for f in tb[-4:]]
        res = {"outcome": "finding", "kind": type(e).__name__,
               "detail": f"{type(e).__name__}: {str(e)[:300]}", "where": where,
               "traceback": "".join(traceback.format_exception(type(e), e, e.__traceback__))[-4000:]}
    finally:
        if model is not None:
            try:
                model.close()
            except BaseException as e:  # noqa: BLE001
                res = {"outcome": "finding", "kind": "CloseFailed", "detail": repr(e)[:300]}
        model = None
    if UNRAISABLE and res["outcome"] != "finding":
        # an exception a kernel could not raise (noexcept, nogil): with the debug build's
        # bounds checks this is an out-of-bounds access that the release build would not see
        res = {"outcome": "finding", "kind": "Unraisable", "detail": UNRAISABLE[0][:300]}
    peak = tracemalloc.get_traced_memory()[1] - base if trace else 0
    if trace:
        tracemalloc.stop()
    res["peak"] = peak
    res["size"] = size
    if peak > memory_bound(size) and res["outcome"] != "finding":
        res.update(outcome="finding", kind="MemoryBound",
                   detail=f"peak Python allocation {peak / MB:.1f} MB for a {size} byte file "
                          f"(bound {memory_bound(size) / MB:.0f} MB); was: {res.get('detail', '')[:200]}")
    return res


UNRAISABLE = []


def _record_unraisable(u):
    UNRAISABLE.append(f"{u.exc_type.__name__}: {u.exc_value} (in {u.object!r:.80})")


def _set_address_space_limit():
    import resource
    try:
        with open("/proc/self/statm") as f:
            vsz = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return
    limit = vsz + ADDRESS_SPACE_HEADROOM
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):
        pass


def worker_main():
    """Read {"path": ..., "run": bool} lines on stdin, answer one JSON line each on stdout."""
    import resource
    import warnings

    warnings.simplefilter("ignore")
    sys.unraisablehook = _record_unraisable
    import numpy  # noqa: F401
    import fastcnn
    try:
        import onnx  # noqa: F401
    except ImportError:
        pass
    try:
        import h5py  # noqa: F401
    except ImportError:
        pass
    fastcnn.set_memory_limit(ACTIVATION_LIMIT)
    fastcnn.set_num_threads(int(os.environ.get("FUZZ_THREADS", "1")))
    # Warm up (first import of every module, first plan) before measuring the RSS baseline.
    warm = os.environ.get("FUZZ_WARMUP")
    if warm:
        run_case(warm)
    _set_address_space_limit()
    rss0 = peak_rss_bytes()
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints must not corrupt the protocol
    for line in sys.stdin:
        req = json.loads(line)
        res = run_case(req["path"], req.get("run", True), req.get("trace", True))
        rss = peak_rss_bytes()
        res["rss_growth"] = rss - rss0
        restart = False
        if rss - rss0 > memory_bound(res["size"]):
            if res["outcome"] != "finding":
                res.update(outcome="finding", kind="RSSBound",
                           detail=f"peak RSS grew {(rss - rss0) / MB:.0f} MB for a {res['size']} "
                                  f"byte file; was: {res.get('detail', '')[:200]}")
            restart = True  # the peak is a high-water mark: a fresh worker measures anew
        res["restart"] = restart
        out.write(json.dumps(res) + "\n")
        out.flush()
        if restart:
            return


# ----------------------------------------------------------------------------- parent side
@dataclass
class Result:
    outcome: str                  # ok | error | finding
    kind: str = ""
    detail: str = ""
    peak: int = 0
    rss_growth: int = 0
    extra: dict = field(default_factory=dict)

    def signature(self) -> str:
        where = self.extra.get("where") or []
        return f"{self.kind}|{'|'.join(where[-2:])}" if where else f"{self.kind}|{self.detail[:60]}"


def fastcnn_env() -> dict:
    """Environment for a worker that imports the same fastcnn as this process."""
    import fastcnn
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastcnn.__file__)))
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([root, here] + rest)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class Runner:
    """A worker interpreter that survives nothing but is replaced after every crash."""

    def __init__(self, workdir: str, timeout: float = CASE_TIMEOUT, warmup: str | None = None,
                 threads: int = 1):
        self.workdir = workdir
        self.timeout = timeout
        self.env = fastcnn_env()
        if warmup:
            self.env["FUZZ_WARMUP"] = warmup
        self.env["FUZZ_THREADS"] = str(threads)
        self.proc = None
        self.restarts = 0
        self.fresh = True

    def _start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import fuzz_runner; fuzz_runner.worker_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            cwd=self.workdir, env=self.env, text=True, bufsize=1)
        self.restarts += 1

    def _kill(self):
        if self.proc is not None:
            try:
                self.proc.kill()
            except OSError:
                pass
            self.proc.wait()
            for s in (self.proc.stdin, self.proc.stdout):
                try:
                    s.close()
                except OSError:
                    pass
            self.proc = None

    def close(self):
        self._kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def run(self, path: str, run: bool = True, trace: bool = True) -> Result:
        res = self._run(path, run, trace)
        if res.kind == "RSSBound" and not self.fresh:
            # the peak only grows: confirm in a fresh worker that this case alone does it
            self._kill()
            res = self._run(path, run, trace)
        return res

    def _run(self, path: str, run: bool, trace: bool) -> Result:
        self.fresh = self.proc is None or self.proc.poll() is not None
        if self.fresh:
            self._kill()
            self._start()
        try:
            self.proc.stdin.write(json.dumps({"path": path, "run": run, "trace": trace}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._died()
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._kill()
                return Result("finding", "Hang", f"no answer within {self.timeout:.0f} s")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 1.0))
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    return self._died()
                d = json.loads(line)
                if d.get("restart"):
                    self._kill()
                return Result(d["outcome"], d.get("kind", ""), d.get("detail", ""),
                              d.get("peak", 0), d.get("rss_growth", 0),
                              {k: d[k] for k in ("where", "traceback") if k in d})
            if self.proc.poll() is not None:
                return self._died()

    def _died(self) -> Result:
        code = self.proc.wait() if self.proc is not None else None
        self._kill()
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return Result("finding", f"Crash-{name}", f"the worker died with signal {name}")
        return Result("finding", "WorkerExit", f"the worker exited with status {code}")


def save_finding(folder: str, target: str, data: bytes, label: str, res: Result, ext: str) -> str:
    """Write the crashing input and a note next to it; returns the input's path."""
    os.makedirs(folder, exist_ok=True)
    digest = hashlib.sha1(data).hexdigest()[:12]
    base = os.path.join(folder, f"{target}-{res.kind}-{digest}")
    with open(base + ext, "wb") as f:
        f.write(data)
    with open(base + ".txt", "w") as f:
        f.write(f"target: {target}\nmutation: {label}\nkind: {res.kind}\ndetail: {res.detail}\n"
                f"peak: {res.peak}\nrss_growth: {res.rss_growth}\n")
        if res.extra.get("traceback"):
            f.write("\n" + res.extra["traceback"])
    return base + ext

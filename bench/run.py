"""Benchmark fastcnn against onnxruntime on the zoo models, in one run, engines taking turns;
also OpenVINO, ncnn and PyTorch when they are installed (bench/engines.py).

    python bench/run.py                                  # every model, batch 1 and 16, 1 and 2 threads
    python bench/run.py --models lenet5 edge_cnn --quick # smoke test, a few seconds
    python bench/run.py --models resnet18 --batches 1 --threads 2 --ort-spinning both
    python bench/run.py --engines none                   # fastcnn and onnxruntime only

Writes a Markdown report to bench/results/<date>_<time>.md (or --out) and prints it. See
bench/README.md for what each column means. Exit status 1 when fastcnn's output differs from
onnxruntime's by more than the project tolerance on any row (the report flags it as FAIL).

fastcnn is imported from this repository (the in-place build), whatever else is installed.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _paths import use_fastcnn  # noqa: E402

use_fastcnn()

import engines  # noqa: E402
import zoo  # noqa: E402
from flops import onnx_flops  # noqa: E402
from matmul_peak import peak_in_subprocess  # noqa: E402


@dataclass
class Settings:
    """How long to measure.

    row_seconds:     target time per (model, batch, threads) row, all engines together.
    turn_seconds:    timed calls per engine turn (a block of consecutive calls, at least one).
    idle_window, idle_max: between turns, wait until this process used less than 10% of one
                     CPU over `idle_window` (the previous engine's threads stopped spinning),
                     giving up after `idle_max`.
    settle_seconds:  untimed calls at the start of each turn (re-warm caches after the other
                     engine and the idle wait); skipped when one call is longer than 30x this.
    min_rounds:      turns per engine at least, unless that would exceed `max_row_seconds`.
    quiet_wait, quiet_threshold: before each row, wait up to `quiet_wait` s for other processes
                     to use under `quiet_threshold` % of the machine (a shared machine's bursts).
    """
    row_seconds: float = 3.0
    turn_seconds: float = 0.15
    idle_window: float = 0.005
    idle_max: float = 0.25
    settle_seconds: float = 0.005
    warmup_seconds: float = 0.3
    min_rounds: int = 3
    max_row_seconds: float = 180.0
    load_reps: int = 9
    peak_seconds: float = 1.5
    quiet_wait: float = 30.0
    quiet_threshold: float = 25.0

    @classmethod
    def quick(cls):
        """Short settings for smoke tests: figures are rough."""
        return cls(row_seconds=0.3, turn_seconds=0.03, warmup_seconds=0.02, min_rounds=1,
                   max_row_seconds=30.0, load_reps=2, peak_seconds=0.3, quiet_wait=0.0)


@dataclass
class Timing:
    """One engine on one row: per-call wall times (s) and the idle waits after its turns (s)."""
    times: list = field(default_factory=list)
    spin_down: list = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median seconds per call."""
        return float(np.median(self.times))

    @property
    def p10(self) -> float:
        """The 10th percentile: close to the speed without interference from other processes."""
        return float(np.percentile(self.times, 10))

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median: how much the calls scattered."""
        q1, q3 = np.percentile(self.times, [25, 75])
        return float((q3 - q1) / np.median(self.times))


class MachineLoad:
    """CPU time used by *other* processes while measuring, as a share of all CPUs.

    Busy time of the whole machine comes from /proc/stat (user, nice, system, irq, softirq,
    steal: steal is time the hypervisor gave our virtual CPUs to someone else); this process's
    own CPU time (all its threads) is subtracted. None where /proc/stat does not exist."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        tick = os.sysconf("SC_CLK_TCK")
        return ((user + nice + system + irq + softirq + steal) / tick, time.process_time(),
                time.perf_counter())

    def others_percent(self):
        """Others' share of all CPUs since construction, in %, or None."""
        end = self._sample()
        if self.start is None or end is None:
            return None
        busy = end[0] - self.start[0]
        own = end[1] - self.start[1]
        wall = end[2] - self.start[2]
        return min(100.0, max(0.0, 100.0 * (busy - own) / (wall * (os.cpu_count() or 1))))


def wait_for_quiet_machine(max_wait: float, threshold: float, probe: float = 1.0):
    """Before a row: sleep in `probe`-second windows until other processes use less than
    `threshold` % of the machine over one window, or `max_wait` seconds pass.
    Returns (seconds waited, others' % in the last window or None without /proc/stat)."""
    start = time.perf_counter()
    others = None
    while True:
        load = MachineLoad()
        time.sleep(probe)
        others = load.others_percent()
        waited = time.perf_counter() - start
        if others is None or others < threshold or waited + probe > max_wait:
            return waited, others


# ----------------------------------------------------------------------------- engines
def ort_session(path: str, threads: int, spinning: bool):
    """An onnxruntime CPU session with `threads` intra-op threads, no inter-op parallelism and
    default graph optimisations; `spinning` sets session.intra_op.allow_spinning."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_variants(mode: str) -> list:
    """[(engine name, allow_spinning)] for --ort-spinning on/off/both."""
    return {"on": [("ort", True)], "off": [("ort", False)],
            "both": [("ort", True), ("ort-nospin", False)]}[mode]


# ----------------------------------------------------------------------------- timing
def warm_up(fn, seconds: float) -> tuple:
    """Call `fn` at least once and until `seconds` have passed (at most 50 calls).
    Returns (first call's result, fastest call in seconds)."""
    first, best, calls = None, float("inf"), 0
    start = time.perf_counter()
    while calls == 0 or (time.perf_counter() - start < seconds and calls < 50):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
        if calls == 0:
            first = out
        calls += 1
    return first, best


def wait_until_idle(window: float, limit: float) -> float:
    """Sleep until this process uses under 10% of one CPU during `window` seconds, i.e. no
    thread of the engine that just ran is still spinning (onnxruntime's pool with
    allow_spinning=1 keeps a core busy for tens of ms after a call; OpenMP workers spin too).
    Returns how long the process stayed busy: the seconds waited before the quiet window
    (0 when it was idle at once; about `limit` when it never went quiet)."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        c0 = time.process_time()
        t0 = time.perf_counter()
        time.sleep(window)
        if time.process_time() - c0 < 0.1 * window:
            return t0 - start
    return time.perf_counter() - start


def time_interleaved(fns: dict, estimates: dict, s: Settings) -> dict:
    """Time every engine in `fns` (name -> zero-argument callable) in alternating turns
    A B A B ..., so machine noise falls on all of them alike. A turn is: wait until the
    previous engine's threads are idle, untimed settle calls (short calls only), then about
    s.turn_seconds (or a tenth of the slowest engine's call) of timed consecutive calls (at
    least one).
    `estimates`: name -> seconds per call (from the warm-up). Returns name -> Timing."""
    # A fast engine next to a very slow one gets longer turns (a tenth of the slow call) so it
    # collects more than one call per round for the same small share of the row's time.
    turn = max(s.turn_seconds, 0.1 * max(estimates.values()))
    blocks = {k: max(1, int(round(turn / max(est, 1e-9)))) for k, est in estimates.items()}
    per_round = sum(max(est, turn) for est in estimates.values())
    min_rounds = s.min_rounds
    while min_rounds > 1 and min_rounds * per_round > s.max_row_seconds:
        min_rounds -= 1
    timings = {k: Timing() for k in fns}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        rounds, previous = 0, None
        while rounds < min_rounds or time.perf_counter() - start < s.row_seconds:
            for name, fn in fns.items():
                waited = wait_until_idle(s.idle_window, s.idle_max)
                if previous is not None:
                    timings[previous].spin_down.append(waited)
                if estimates[name] < 30 * s.settle_seconds:
                    t_settle = time.perf_counter()
                    fn()
                    while time.perf_counter() - t_settle < s.settle_seconds:
                        fn()
                times = timings[name].times
                for _ in range(blocks[name]):
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
                previous = name
            rounds += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    return timings


def tolerance(ref: np.ndarray) -> float:
    """The project tolerance: 1e-4 + 1e-3 * max|ref|."""
    return 1e-4 + 1e-3 * float(np.abs(ref).max())


def max_abs_diff(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| in float64; inf for a shape mismatch or a NaN/inf difference."""
    if got.shape != ref.shape:
        return float("inf")
    d = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    return float(d.max()) if np.isfinite(d).all() else float("inf")


# ----------------------------------------------------------------------------- rows
def open_others(others, name: str, path: str, threads: int, log) -> dict:
    """engine -> Runner (bench/engines.py) of each engine in `others` that can run this model;
    one that cannot is logged and left out."""
    runners = {}
    for eng in others:
        try:
            runners[eng] = engines.open_engine(eng, path, threads, zoo.input_shape(name, 1))
        except engines.UnsupportedModel as e:
            log(f"  ({eng} skipped on {name}: {e})")
    return runners


def bench_model(name: str, batches, threads_list, s: Settings, ort_mode: str, others, log) -> list:
    """Time fastcnn, onnxruntime and the `others` (bench/engines.py names) on every
    (threads, batch) of one zoo model. Returns rows."""
    import fastcnn
    path = zoo.ensure(name)
    flops_per_image = onnx_flops(path, zoo.input_shape(name, 1))
    rows = []
    for threads in threads_list:
        fc = fastcnn.load(path, num_threads=threads)
        sessions = {eng: ort_session(path, threads, spin) for eng, spin in ort_variants(ort_mode)}
        runners = open_others(others, name, path, threads, log)
        for batch in batches:
            feed = {zoo.INPUT_NAME: zoo.sample_input(name, batch)}
            fns = {"fastcnn": lambda: fc.run(None, feed)[0]}
            for eng, sess in sessions.items():
                fns[eng] = (lambda sess: lambda: sess.run(None, feed)[0])(sess)
            x = feed[zoo.INPUT_NAME]
            for eng, runner in runners.items():
                fns[eng] = (lambda runner: lambda: runner(x))(runner)
            if s.quiet_wait > 0:
                waited, busy = wait_for_quiet_machine(s.quiet_wait, s.quiet_threshold)
                if busy is not None and busy >= s.quiet_threshold:
                    log(f"  (machine still busy after {waited:.0f} s: others use {busy:.0f}% of the CPUs)")
            outputs, estimates = {}, {}
            for eng, fn in fns.items():
                outputs[eng], estimates[eng] = warm_up(fn, s.warmup_seconds)
            ref = outputs["ort"]
            load = MachineLoad()
            timings = time_interleaved(fns, estimates, s)
            row = {"model": name, "batch": batch, "threads": threads,
                   "flops": flops_per_image * batch,
                   "ms": {k: t.median * 1e3 for k, t in timings.items()},
                   "p10_ms": {k: t.p10 * 1e3 for k, t in timings.items()},
                   "spread": {k: t.spread for k, t in timings.items()},
                   "calls": {k: len(t.times) for k, t in timings.items()},
                   "spin_down_ms": {k: float(np.median(t.spin_down)) * 1e3 if t.spin_down else None
                                    for k, t in timings.items()},
                   "others": load.others_percent(),
                   "diff": max_abs_diff(outputs["fastcnn"], ref), "tol": tolerance(ref),
                   # the other engines checked as fastcnn is: a wrong output makes a time moot
                   "other_diff": {k: max_abs_diff(outputs[k], ref) for k in runners}}
            row["ok"] = row["diff"] <= row["tol"]
            rows.append(row)
            log(row_line(row))
        fc.close()
        for runner in runners.values():
            runner.close()
        del sessions, runners
        gc.collect()
    return rows


def engines_that_ran(rows, others) -> list:
    """The engines of `others` that opened the model in bench_model (an engine that cannot run
    it, UnsupportedModel, has no output in its rows), in `others`' order."""
    ran = {k for r in rows for k in r.get("other_diff", {})}
    return [e for e in others if e in ran]


def best_other(r):
    """(engine, median ms) of the fastest other engine (bench/engines.py) on row r whose output
    matched onnxruntime's, or None."""
    ok = [(r["ms"][k], k) for k, d in r.get("other_diff", {}).items() if d <= r["tol"]]
    if not ok:
        return None
    ms, eng = min(ok)
    return eng, ms


def row_line(r) -> str:
    """One progress line for a finished row."""
    ms = "  ".join(f"{k} {fmt_ms(v)} ms" for k, v in r["ms"].items())
    flag = "ok" if r["ok"] else "FAIL"
    best = best_other(r)
    vs_best = f"  vs {best[0]} {r['ms']['fastcnn'] / best[1]:.2f}" if best else ""
    wrong = "".join(f"  {k} WRONG OUTPUT (diff {d:.2g})" for k, d in r.get("other_diff", {}).items()
                    if d > r["tol"])
    return (f"  {r['model']} batch {r['batch']} threads {r['threads']}: {ms}  "
            f"ratio {r['ms']['fastcnn'] / r['ms']['ort']:.2f}{vs_best}  diff {r['diff']:.2g} {flag}{wrong}")


def median_seconds(fns: dict, reps: int, block: int = 3) -> dict:
    """label -> median wall time of `fn()` over `reps` calls (rounded up to whole blocks), for
    each fn of `fns`. The engines take turns a block at a time, the order rotating each round,
    so a minute of the machine's slower state falls on every engine alike; each block starts
    with an untimed call, so every timed call follows a call of the same engine. Calls taking
    turns one by one were unfair to onnxruntime: its ResNet-18 session creation right after a
    fastcnn load took 135-166 ms against 68-90 after its own (26,800 page faults instead of
    3,500: the memory its previous session freed had gone to fastcnn's load), fastcnn's 47-55 ms
    either way (its packed weights go to fresh huge pages every time). Closes what each call
    returns."""
    labels = list(fns)

    def call(label, times=None):
        gc.collect()
        t0 = time.perf_counter()
        obj = fns[label]()
        if times is not None:
            times.append(time.perf_counter() - t0)
        close = getattr(obj, "close", None)
        if close:
            close()
        del obj

    times = {label: [] for label in labels}
    for r in range(-(-reps // block)):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            call(label)   # warm file cache, lazy imports, the engine's own memory
            for _ in range(block):
                call(label, times[label])
    return {label: float(np.median(v)) for label, v in times.items()}


def load_times_in_child(names, path: str, fcnn_path: str, threads: int, shape, reps: int) -> dict:
    """engine -> median load seconds, measured by load_time.py in a fresh process."""
    cmd = [sys.executable, os.path.join(BENCH_DIR, "load_time.py"), path, "--fcnn", fcnn_path,
           "--threads", str(threads), "--shape", ",".join(map(str, shape)), "--reps", str(reps),
           "--engines", *names]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"load_time.py {' '.join(names)} {path} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def load_and_memory(name: str, threads: int, s: Settings, fcnn_dir: str, others, log) -> dict:
    """Load times (median of s.load_reps, warm file cache) and peak RSS of a fresh process that
    loads the model and runs one image, for fastcnn from .onnx, fastcnn from .fcnn, ort and
    each engine of `others`, the ones bench_model ran on this model (`engines_that_ran`;
    loading: preparing for batch 1). The
    loads run in fresh processes too (load_time.py): fastcnn's and onnxruntime's taking turns
    in one, each other engine in its own."""
    import fastcnn
    path = zoo.ensure(name)
    fcnn_path = os.path.join(fcnn_dir, f"{name}.fcnn")
    t0 = time.perf_counter()
    fastcnn.convert(path, fcnn_path)
    convert_s = time.perf_counter() - t0
    shape1 = zoo.input_shape(name, 1)
    times = load_times_in_child(["fastcnn-onnx", "fastcnn-fcnn", "ort"], path, fcnn_path, threads,
                                shape1, s.load_reps)
    load = {"fastcnn (.onnx)": times["fastcnn-onnx"], "fastcnn (.fcnn)": times["fastcnn-fcnn"],
            "ort": times["ort"]}
    for eng in others:
        load.update(load_times_in_child([eng], path, fcnn_path, threads, shape1, s.load_reps))
    shape = ",".join(map(str, shape1))
    rss = {}
    for label in load:
        engine, p = {"fastcnn (.onnx)": ("fastcnn", path),
                     "fastcnn (.fcnn)": ("fastcnn", fcnn_path)}.get(label, (label, path))
        cmd = [sys.executable, os.path.join(BENCH_DIR, "peak_rss.py"), engine, p, "--shape", shape,
               "--threads", str(threads), "--input", zoo.INPUT_NAME]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise RuntimeError(f"peak_rss.py {engine} {p} failed:\n{out.stderr}")
        rss[label] = json.loads(out.stdout.strip().splitlines()[-1])
    result = {"model": name, "threads": threads, "load_s": load, "rss": rss, "convert_s": convert_s,
              "onnx_mb": os.path.getsize(path) / 1e6, "fcnn_mb": os.path.getsize(fcnn_path) / 1e6}
    log(f"  {name}: load " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in load.items())
        + "; peak RSS " + ", ".join(f"{k} {v['peak_mib']:.0f} MiB" for k, v in rss.items()))
    return result


# ----------------------------------------------------------------------------- report
def fmt_ms(v: float) -> str:
    """Milliseconds with three or four significant digits."""
    if v < 1:
        return f"{v:.3f}"
    if v < 100:
        return f"{v:.2f}"
    return f"{v:.0f}"


def fmt_rate(v: float) -> str:
    """Three significant digits without an exponent (0.153, 15.3, 1530)."""
    if v < 10:
        return f"{v:.3g}" if v >= 0.001 else f"{v:.1e}"
    return f"{v:.3g}" if v < 1000 else f"{v:.0f}"


def environment(ort_mode: str, others=()) -> list:
    """Lines describing the machine and software, for the report header."""
    import fastcnn
    import onnxruntime as ort
    info = fastcnn.build_info()
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", REPO_DIR, "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    env_vars = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                           "FASTCNN_NUM_THREADS") if k in os.environ}
    spin = {"on": "allow_spinning=1 (onnxruntime's default)", "off": "allow_spinning=0",
            "both": "`ort` allow_spinning=1 (default), `ort-nospin` allow_spinning=0"}[ort_mode]
    return [
        f"- machine: {cpu}, {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.2f} at start",
        f"- fastcnn {info.get('version')} at commit {commit or '?'} ({os.path.dirname(fastcnn.__file__)}), "
        f"build: {', '.join(f'{k}={v}' for k, v in info.items() if k not in ('version', 'memory_limit'))}",
        f"- onnxruntime {ort.__version__} (CPUExecutionProvider, intra_op_num_threads=N, "
        f"inter_op_num_threads=1, {spin}); numpy {np.__version__}; Python {platform.python_version()}",
        f"- environment: {env_vars or 'no thread variables set'}",
    ] + ([f"- other engines (bench/engines.py): " + "; ".join(
        f"{engines.version(e)} ({OTHER_HOW[e]})" for e in others)] if others else [])


OTHER_HOW = {"openvino": "CPU plugin on the .onnx file, compiled per input shape, LATENCY hint, "
                         "1 stream, INFERENCE_NUM_THREADS=N, f32",
             "ncnn": "pnnx's float32 conversion of the .onnx file, fp16/bf16 off, num_threads=N, "
                     "one image per extractor",
             "torch": "eager, the graph as torch.nn modules, Conv-BN fused by torch.fx, "
                      "inference_mode, set_num_threads(N)"}


def _pair(a, b, fmt) -> str:
    return f"{fmt(a)} / {fmt(b)}"


def _opt(fmt):
    return lambda v: "-" if v is None else fmt(v)


def timing_table(rows, peaks) -> list:
    """Markdown rows: medians and ratio first, then throughput, efficiency, correctness and
    the figures that say how much to trust the row (p10, spread, calls, spin-down, load)."""
    extra = [k for k in rows[0]["ms"] if k not in ("fastcnn", "ort")] if rows else []
    with_others = any(r.get("other_diff") for r in rows)
    head = ["model", "batch", "thr", "fastcnn ms", "ort ms", *[f"{k} ms" for k in extra], "fastcnn/ort",
            *(["fastcnn / best other"] if with_others else []),
            "img/s fastcnn / ort", "GFLOP/s fastcnn / ort", "% peak fastcnn / ort",
            "max diff (tol)", "p10 ms fastcnn / ort", "spread", "calls", "spin-down ms",
            "others' CPU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        ms = r["ms"]
        gf = {k: r["flops"] / (v * 1e-3) / 1e9 for k, v in ms.items()}
        peak = peaks.get(r["threads"])
        pct = {k: 100 * v / peak if peak else None for k, v in gf.items()}
        check = f"{r['diff']:.1e} ({r['tol']:.1e})" if r["ok"] else \
            f"**FAIL {r['diff']:.2e} > {r['tol']:.1e}**"
        check += "".join(f"; **{k} wrong: {d:.1e}**" for k, d in r.get("other_diff", {}).items()
                         if d > r["tol"])
        best = best_other(r)
        vs_best = [f"{ms['fastcnn'] / best[1]:.2f} ({best[0]})" if best else "-"] if with_others else []
        cells = [r["model"], r["batch"], r["threads"], fmt_ms(ms["fastcnn"]), fmt_ms(ms["ort"]),
                 *[fmt_ms(ms[k]) for k in extra], f"{ms['fastcnn'] / ms['ort']:.2f}", *vs_best,
                 _pair(r["batch"] / ms["fastcnn"] * 1e3, r["batch"] / ms["ort"] * 1e3, fmt_rate),
                 _pair(gf["fastcnn"], gf["ort"], fmt_rate),
                 _pair(pct["fastcnn"], pct["ort"], _opt(lambda v: f"{v:.1f}")), check,
                 _pair(r["p10_ms"]["fastcnn"], r["p10_ms"]["ort"], fmt_ms),
                 _pair(r["spread"]["fastcnn"], r["spread"]["ort"], lambda v: f"{100 * v:.0f}%"),
                 _pair(r["calls"]["fastcnn"], r["calls"]["ort"], str),
                 _pair(r["spin_down_ms"]["fastcnn"], r["spin_down_ms"]["ort"], _opt(lambda v: f"{v:.0f}")),
                 _opt(lambda v: f"{v:.0f}%")(r["others"])]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return lines


def memory_table(mems) -> list:
    """Markdown rows of load times, peak RSS and file sizes, one per model; a column pair per
    other engine measured on any model."""
    others = []
    for m in mems:
        others += [k for k in m["load_s"] if k not in ("fastcnn (.onnx)", "fastcnn (.fcnn)", "ort")
                   and k not in others]
    head = ["model", "thr", "load ms fastcnn .onnx", "load ms fastcnn .fcnn", "load ms ort",
            *[f"load ms {k}" for k in others], "convert ms",
            "peak RSS MiB fastcnn .onnx", "peak RSS MiB fastcnn .fcnn", "peak RSS MiB ort",
            *[f"peak RSS MiB {k}" for k in others],
            "after import MiB fastcnn / ort", "file MB .onnx / .fcnn"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for m in mems:
        ld, rss = m["load_s"], m["rss"]
        cells = [m["model"], m["threads"], f"{ld['fastcnn (.onnx)'] * 1e3:.1f}",
                 f"{ld['fastcnn (.fcnn)'] * 1e3:.1f}", f"{ld['ort'] * 1e3:.1f}",
                 *[f"{ld[k] * 1e3:.1f}" if k in ld else "-" for k in others],
                 f"{m['convert_s'] * 1e3:.0f}",
                 f"{rss['fastcnn (.onnx)']['peak_mib']:.0f}", f"{rss['fastcnn (.fcnn)']['peak_mib']:.0f}",
                 f"{rss['ort']['peak_mib']:.0f}",
                 *[f"{rss[k]['peak_mib']:.0f}" if k in rss else "-" for k in others],
                 f"{rss['fastcnn (.fcnn)']['import_mib']:.0f} / {rss['ort']['import_mib']:.0f}",
                 f"{m['onnx_mb']:.1f} / {m['fcnn_mb']:.1f}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return lines


def report(rows, mems, peaks, env_lines, elapsed) -> str:
    """The whole Markdown report: failure banner, environment, timing and memory tables."""
    failures = [r for r in rows if not r["ok"]]
    out = [f"# fastcnn vs onnxruntime, {datetime.datetime.now():%Y-%m-%d %H:%M}", ""]
    if failures:
        out += [f"**CORRECTNESS FAILURE: fastcnn differs from onnxruntime beyond tolerance on "
                f"{len(failures)} row(s): "
                + ", ".join(f"{r['model']} b{r['batch']} t{r['threads']}" for r in failures) + "**", ""]
    out += env_lines
    out += [f"- command: `{' '.join([os.path.relpath(sys.argv[0], REPO_DIR)] + sys.argv[1:])}`"
            f" ({elapsed:.0f} s, load average {os.getloadavg()[0]:.2f} at the end)", ""]
    if rows:
        out += ["## Inference time (median per call, engines interleaved)", ""]
        out += timing_table(rows, peaks) + [""]
    if mems:
        out += ["## Load time (median, warm file cache, a fresh process per engine group) and peak "
                "memory (fresh process, load + one image)", ""]
        out += memory_table(mems) + [""]
    out += ["See bench/README.md for how each figure is measured."]
    return "\n".join(out) + "\n"


def main(argv=None):
    """Command line; returns the exit status (1 on a correctness failure)."""
    ap = argparse.ArgumentParser(description="fastcnn vs onnxruntime on the zoo models")
    ap.add_argument("--models", nargs="+", default=list(zoo.MODELS), choices=list(zoo.MODELS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--quick", action="store_true", help="few repetitions (smoke test)")
    ap.add_argument("--row-seconds", type=float,
                    help="target measuring time per row, all engines together (default 3 for "
                         "fastcnn and onnxruntime, 0.3 with --quick, and half that more per "
                         "other engine)")
    ap.add_argument("--wait-quiet", type=float, metavar="S",
                    help="before each row, wait up to S seconds (default 30, 0 with --quick) "
                         "for other processes to use under 25%% of the CPUs")
    ap.add_argument("--ort-spinning", choices=("on", "off", "both"), default="on",
                    help="onnxruntime session.intra_op.allow_spinning (default on: its default)")
    ap.add_argument("--engines", nargs="+", metavar="ENGINE",
                    choices=(*engines.OTHER_ENGINES, "none"),
                    help="other engines to time beside fastcnn and onnxruntime: "
                         f"{', '.join(engines.OTHER_ENGINES)}, or none (default: those installed)")
    ap.add_argument("--no-memory", action="store_true", help="skip load time and peak RSS")
    ap.add_argument("--out", help="report path (default bench/results/<date>_<time>.md)")
    args = ap.parse_args(argv)
    s = Settings.quick() if args.quick else Settings()
    if args.row_seconds is not None:
        s.row_seconds = args.row_seconds
    if args.wait_quiet is not None:
        s.quiet_wait = args.wait_quiet
    if args.engines is None:
        others = [e for e in engines.OTHER_ENGINES if engines.missing(e) is None]
    else:
        others = [e for e in args.engines if e != "none"]
        unavailable = [f"{e} ({engines.missing(e)})" for e in others if engines.missing(e)]
        if unavailable:
            ap.error(f"cannot run {', '.join(unavailable)}")
    if args.row_seconds is None:
        # the row's time is shared by its engines: each other engine adds its share, so
        # fastcnn and onnxruntime keep as many calls as they have alone
        s.row_seconds *= (2 + len(others)) / 2

    def log(msg):
        print(msg, flush=True)

    started = time.perf_counter()
    log(f"numpy matmul peak (threads {', '.join(map(str, args.threads))}) ...")
    if s.quiet_wait > 0:
        wait_for_quiet_machine(s.quiet_wait, s.quiet_threshold)
    peak_runs = [{t: peak_in_subprocess(t, s.peak_seconds) for t in sorted(set(args.threads))}]
    env_lines = environment(args.ort_spinning, others)
    rows, mems = [], []
    with tempfile.TemporaryDirectory(prefix="fastcnn-bench-") as fcnn_dir:
        for name in args.models:
            log(f"{name}: {onnx_flops(zoo.ensure(name), zoo.input_shape(name, 1)) / 1e9:.3f} GFLOP per image")
            model_rows = bench_model(name, args.batches, args.threads, s, args.ort_spinning,
                                     others, log)
            rows += model_rows
            if not args.no_memory:
                mems.append(load_and_memory(name, max(args.threads), s, fcnn_dir,
                                            engines_that_ran(model_rows, others), log))
    # The matmul peak is measured again at the end and the higher figure is the yardstick: a
    # burst of other work during one measurement would otherwise inflate every "% peak".
    log("numpy matmul peak again ...")
    peak_runs.append({t: peak_in_subprocess(t, s.peak_seconds) for t in peak_runs[0]})
    peaks = {t: max(run[t] for run in peak_runs) for t in peak_runs[0]}
    env_lines.append("- numpy float32 1024x1024 matmul peak (higher of start / end): " + ", ".join(
        f"{peaks[t]:.1f} GFLOP/s on {t} thread{'s' if t > 1 else ''} "
        f"({peak_runs[0][t]:.1f} / {peak_runs[1][t]:.1f})" for t in sorted(peaks)))
    text = report(rows, mems, peaks, env_lines, time.perf_counter() - started)
    out = args.out or os.path.join(BENCH_DIR, "results", f"{datetime.datetime.now():%Y-%m-%d_%H%M%S}.md")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    print()
    print(text)
    print(f"written to {out}")
    if any(not r["ok"] for r in rows):
        print("CORRECTNESS FAILURE: fastcnn differs from onnxruntime beyond tolerance (see report)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Mutation-fuzzing campaign against fastcnn's model loaders, and a long leak soak.

    python tests/robustness/fuzz_campaign.py --target fcnn|onnx|h5|all --seconds N
        [--seed S] [--findings DIR] [--threads T]
    python tests/robustness/fuzz_campaign.py --target leaks --seconds N

Each execution mutates a seed model (tests/robustness/fuzz_seeds.py) with fuzz_mutators.py and
loads it, then runs it once, in a worker process (fuzz_runner.py): a crash or hang kills only
the worker. Every outcome must be a loaded model or a FastCNNError with a message, within the
memory bound. Findings (crashes, hangs, other exception types, memory over the bound) are saved
with a note in --findings (default ./fuzz-findings). Mutants that load are added to the corpus,
so later mutations start from them. The test suite runs a fixed-seed sample of the same loop
(tests/robustness/test_fuzz_*.py).

The h5 target needs the Keras importer (fastcnn/importers/keras); without it it is skipped.
Exit status: 0 when there were no findings, 1 otherwise.
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fuzz_mutators  # noqa: E402
import fuzz_runner  # noqa: E402
import fuzz_seeds  # noqa: E402

TARGETS = ("fcnn", "onnx", "h5")
MAX_CORPUS = 300


def keras_importer_available() -> bool:
    try:
        return importlib.util.find_spec("fastcnn.importers.keras") is not None
    except ImportError:
        return False


def target_available(target: str) -> tuple:
    """(available, reason)."""
    need = {"onnx": "onnx", "h5": "h5py", "fcnn": "onnx"}[target]  # .fcnn seeds come from ONNX
    if importlib.util.find_spec(need) is None:
        return False, f"the {need} package is not installed"
    if target == "h5" and not keras_importer_available():
        return False, "the Keras importer (fastcnn.importers.keras) is not present"
    return True, ""


def _ext(target: str, name: str) -> str:
    return os.path.splitext(name)[1] if target == "h5" else "." + target


class Report:
    def __init__(self, target):
        self.target = target
        self.executions = 0
        self.outcomes = collections.Counter()
        self.error_kinds = collections.Counter()
        self.findings = {}      # signature -> (saved path or None, Result, label)
        self.finding_count = 0
        self.max_peak = 0
        self.max_peak_case = None
        self.max_rss_growth = 0
        self.seconds = 0.0
        self.corpus = 0
        self.mutator_errors = 0
        self.traced = 0

    def text(self) -> str:
        rate = self.executions / self.seconds if self.seconds else 0.0
        lines = [f"target {self.target}: {self.executions} executions in {self.seconds:.0f} s "
                 f"({rate:.1f}/s), corpus {self.corpus}, mutator errors {self.mutator_errors}",
                 "  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())),
                 "  refused with: " + ", ".join(f"{k} {v}" for k, v in self.error_kinds.most_common()),
                 f"  largest Python peak {self.max_peak / fuzz_runner.MB:.1f} MB "
                 f"({self.traced} cases traced), largest RSS "
                 f"growth {self.max_rss_growth / fuzz_runner.MB:.1f} MB",
                 f"  findings: {self.finding_count} ({len(self.findings)} distinct)"]
        if self.max_peak_case:
            label, outcome, kind, detail, size = self.max_peak_case
            lines.insert(4, f"  largest peak from a {size} byte file ({label[:80]}): {outcome} "
                            f"{kind} {detail[:120]}")
        for sig, (path, res, label) in self.findings.items():
            lines.append(f"    {res.kind}: {res.detail[:160]}")
            lines.append(f"      mutation {label[:120]}; input {path}")
        return "\n".join(lines)


def corpus_drop(corpus, name, data, seed_names):
    """Forget a mutant the mutators cannot handle (seeds stay)."""
    if len(corpus) > len(seed_names):
        try:
            corpus.remove((name, data))
        except ValueError:
            pass


def fuzz(target: str, *, cases: int | None = None, seconds: float | None = None, seed: int = 0,
         workdir: str, findings_dir: str | None = None, threads: int = 1, log=None,
         timeout: float = fuzz_runner.CASE_TIMEOUT, trace_every: int = 4,
         byte_level: bool = True) -> Report:
    """Run `cases` executions (or for `seconds`) of target 'fcnn', 'onnx' or 'h5'.
    trace_every: measure Python allocations with tracemalloc on every n-th case (0: never);
    the peak RSS is checked on every case. byte_level=False: no raw byte corruption of HDF5
    containers (see fuzz_mutators.mutate_h5)."""
    rng = random.Random(seed)
    seeds = fuzz_seeds.seed_files(target, workdir)
    names = sorted(seeds)
    seed_paths = {}
    for n in names:
        p = os.path.join(workdir, "seed-" + n)
        with open(p, "wb") as f:
            f.write(seeds[n])
        seed_paths[n] = p
    corpus = [(n, seeds[n]) for n in names]
    report = Report(target)
    start = time.monotonic()
    scratch = os.path.join(workdir, "mutate-scratch")
    with fuzz_runner.Runner(workdir, timeout=timeout, warmup=seed_paths[names[0]],
                            threads=threads) as runner:
        for n in names:  # the seeds themselves load and run
            res = runner.run(seed_paths[n])
            if res.outcome != "ok":
                raise RuntimeError(f"seed {n} does not load cleanly: {res.kind} {res.detail}")
        last_log = start
        while True:
            if cases is not None and report.executions >= cases:
                break
            if seconds is not None and time.monotonic() - start >= seconds:
                break
            name, data = corpus[rng.randrange(len(corpus))]
            ext = _ext(target, name)
            try:
                mutant, label = fuzz_mutators.mutate(target, data, rng, scratch + ext, byte_level)
            except Exception:  # noqa: BLE001 - a mutator tripping over an odd mutant
                report.mutator_errors += 1
                corpus_drop(corpus, name, data, names)
                continue
            path = os.path.join(workdir, "case" + ext)
            with open(path, "wb") as f:
                f.write(mutant)
            trace = trace_every > 0 and report.executions % trace_every == 0
            res = runner.run(path, trace=trace)
            report.executions += 1
            report.traced += trace
            report.outcomes[res.outcome] += 1
            if res.peak > report.max_peak:
                report.max_peak = res.peak
                report.max_peak_case = (label, res.outcome, res.kind, res.detail[:200], len(mutant))
                if findings_dir:
                    os.makedirs(findings_dir, exist_ok=True)
                    with open(os.path.join(findings_dir, f"{target}-largest-peak{ext}"), "wb") as f:
                        f.write(mutant)
            report.max_rss_growth = max(report.max_rss_growth, res.rss_growth)
            if res.outcome == "error":
                report.error_kinds[res.kind] += 1
            elif res.outcome == "ok" and len(corpus) < MAX_CORPUS and mutant not in (d for _, d in corpus):
                corpus.append((name, mutant))
            elif res.outcome == "finding":
                report.finding_count += 1
                sig = res.signature()
                if sig not in report.findings:
                    saved = None
                    if findings_dir:
                        saved = fuzz_runner.save_finding(findings_dir, target, mutant, label, res, ext)
                    report.findings[sig] = (saved, res, label)
                    if log:
                        log(f"[{target}] finding {res.kind}: {res.detail[:200]} ({label[:100]})")
            now = time.monotonic()
            if log and now - last_log > 60:
                last_log = now
                log(f"[{target}] {report.executions} executions, {dict(report.outcomes)}")
    report.seconds = time.monotonic() - start
    report.corpus = len(corpus)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, choices=TARGETS + ("all", "leaks"))
    ap.add_argument("--seconds", type=float, default=60.0, help="per target")
    ap.add_argument("--seed", type=int, default=None, help="default: from the clock")
    ap.add_argument("--findings", default="fuzz-findings", help="folder for crashing inputs")
    ap.add_argument("--threads", type=int, default=1, help="kernel threads in the worker")
    ap.add_argument("--trace-every", type=int, default=4,
                    help="tracemalloc on every n-th case (0: never; it makes a case 5x slower)")
    args = ap.parse_args(argv)
    if args.target == "leaks":
        import leak_soak
        return leak_soak.main(args.seconds)
    seed = args.seed if args.seed is not None else int(time.time())
    targets = TARGETS if args.target == "all" else (args.target,)
    total = 0
    for target in targets:
        ok, why = target_available(target)
        if not ok:
            print(f"target {target}: skipped ({why})")
            continue
        with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as tmp:
            print(f"target {target}: seed {seed}, {args.seconds:.0f} s", flush=True)
            rep = fuzz(target, seconds=args.seconds, seed=seed, workdir=tmp,
                       findings_dir=os.path.abspath(args.findings), threads=args.threads,
                       trace_every=args.trace_every,
                       log=lambda s: print(s, flush=True))
        print(rep.text(), flush=True)
        total += rep.finding_count
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())

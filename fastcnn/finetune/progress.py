"""Per-epoch progress: a tqdm bar when tqdm is installed (the `image` extra), else one plain
line per epoch. Both write to stderr, so stdout stays for results."""
from __future__ import annotations

import sys
import time


def _fmt(metrics: dict) -> str:
    parts = []
    for key, value in metrics.items():
        if value is None:
            continue
        parts.append(f"{key} {value:.2%}" if key.endswith("accuracy") else f"{key} {value:.4f}")
    return "  ".join(parts)


class EpochBar:
    """One epoch's bar: update() per batch, close(metrics) at the end."""

    def __init__(self, epoch: int, epochs: int, batches: int, enabled: bool, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.label = f"epoch {epoch}/{epochs}"
        self.start = time.perf_counter()
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=batches, desc=self.label, unit="batch", file=self.stream,
                                leave=True, dynamic_ncols=True)

    def update(self, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)

    def close(self, metrics: dict) -> None:
        if not self.enabled:
            return
        text = _fmt(metrics)
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.close()
        else:
            seconds = time.perf_counter() - self.start
            print(f"{self.label}  {text}  ({seconds:.2f} s)", file=self.stream, flush=True)

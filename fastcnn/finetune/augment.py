"""Seeded image augmentation for fine-tuning: random horizontal flip and random shift.

Works on a batch of images in the model's layout (NCHW, or NHWC when the input says so). A shift
moves the image by up to `shift` pixels (an int) or that fraction of each side (a float < 1) in
each direction, filling the uncovered border with zeros.
"""
from __future__ import annotations

import numpy as np

from fastcnn.errors import FineTuneError

DEFAULT = {"flip": True, "shift": 0.1}
KEYS = ("flip", "shift")


def parse_augment(augment) -> dict | None:
    """None/False: no augmentation; True: flip and a 10% shift; a dict with keys flip (bool)
    and shift (pixels as an int, or a fraction of the side as a float < 1)."""
    if augment is None or augment is False:
        return None
    if augment is True:
        return dict(DEFAULT)
    if not isinstance(augment, dict) or any(k not in KEYS for k in augment):
        raise FineTuneError(f"augment must be None, True or a dict with keys {KEYS}, got {augment!r}")
    cfg = {"flip": bool(augment.get("flip", False)), "shift": augment.get("shift", 0)}
    s = cfg["shift"]
    if isinstance(s, bool) or not isinstance(s, (int, float)) or s < 0 or (isinstance(s, float) and s >= 1):
        raise FineTuneError(f"augment shift must be pixels (int >= 0) or a fraction in [0, 1), got {s!r}")
    if not cfg["flip"] and not s:
        return None
    return cfg


class Augmenter:
    """Random flips and shifts of image batches (N, C, H, W) or (N, H, W, C)."""

    def __init__(self, config: dict, input_spec, seed_sequence):
        if len(input_spec.shape) != 4:
            raise FineTuneError(f"augmentation needs image input (N, C, H, W) or (N, H, W, C); the "
                                f"model input '{input_spec.name}' has rank {len(input_spec.shape)}")
        self.h_axis, self.w_axis = (1, 2) if input_spec.layout == "NHWC" else (2, 3)
        self.flip = config["flip"]
        self.shift = config["shift"]
        self.rng = np.random.default_rng(seed_sequence)

    def _pixels(self, side: int) -> int:
        s = self.shift
        return int(round(s * side)) if isinstance(s, float) else min(int(s), side - 1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """A new array: each image flipped with probability 1/2 and shifted at random."""
        out = np.array(x, dtype=np.float32, copy=True)
        n = out.shape[0]
        ha, wa = self.h_axis, self.w_axis
        if self.flip:
            flips = self.rng.random(n) < 0.5
            out[flips] = np.flip(out[flips], axis=wa)
        sy, sx = self._pixels(out.shape[ha]), self._pixels(out.shape[wa])
        if sy or sx:
            dys = self.rng.integers(-sy, sy + 1, n)
            dxs = self.rng.integers(-sx, sx + 1, n)
            src = out.copy()
            for i in range(n):
                out[i] = _shifted(src[i], int(dys[i]), int(dxs[i]), ha - 1, wa - 1)
        return out


def _shifted(img, dy, dx, ha, wa):
    """img moved down by dy and right by dx (negative: up/left), zero-filled."""
    res = np.zeros_like(img)
    h, w = img.shape[ha], img.shape[wa]
    src = [slice(None)] * img.ndim
    dst = [slice(None)] * img.ndim
    src[ha], dst[ha] = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
    src[wa], dst[wa] = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
    res[tuple(dst)] = img[tuple(src)]
    return res

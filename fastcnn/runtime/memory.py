"""Arena layout: place every activation buffer at an offset so that buffers alive at the same
time never overlap (greedy by size, as TFLite's arena planner does)."""
from __future__ import annotations

ALIGN = 64


def align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan_offsets(buffers):
    """buffers: list of (nbytes, first_step, last_step), lifetimes inclusive.

    Returns (offsets, arena_bytes). Larger buffers are placed first, each at the lowest
    64-byte-aligned offset that does not overlap a placed buffer whose lifetime intersects.
    """
    order = sorted(range(len(buffers)), key=lambda i: (-buffers[i][0], buffers[i][1]))
    placed = []  # (offset, end, first, last)
    offsets = [0] * len(buffers)
    total = 0
    for i in order:
        size, first, last = buffers[i]
        size = align(max(size, 1))
        busy = sorted((o, e) for o, e, f, l in placed if not (l < first or f > last))
        offset = 0
        for o, e in busy:
            if offset + size <= o:
                break
            offset = max(offset, e)
        offsets[i] = offset
        placed.append((offset, offset + size, first, last))
        total = max(total, offset + size)
    return offsets, total


def private_offsets(buffers):
    """buffers as for `plan_offsets`; every buffer gets a region of its own, in order of first
    use. Returns (offsets, arena_bytes)."""
    order = sorted(range(len(buffers)), key=lambda i: (buffers[i][1], i))
    offsets = [0] * len(buffers)
    total = 0
    for i in order:
        offsets[i] = total
        total += align(max(buffers[i][0], 1))
    return offsets, total

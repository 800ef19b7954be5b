"""Memory for one model's packed weights, in transparent huge pages where Linux offers them.

Loading a model writes every packed weight into memory the process has not used before
(Winograd transforms and GEMM panels: ResNet-18 93 MB, MobileNetV2 13 MB). Such memory is mapped
on first write, one 4 KB page per fault, and a fault is slow in a virtual machine: 2-5 us on the
test machine, where a ResNet-18 load took 8,800 of them (20-45 ms of it). In a region advised
MADV_HUGEPAGE, Linux maps a 2 MB page per fault instead (THP in "madvise" mode, most
distributions' default; numpy advises its own arrays of 4 MB and more, not the smaller panels).
The pool reserves address space in chunks, advises it, and hands out 64-byte-aligned arrays from
it; pages are backed only as they are written. A chunk is unmapped when the pool and the last
array viewing it are gone (numpy keeps the mapping alive through each array's base).

Cost: the last, partly written huge page of each chunk (at most 2 MB of resident memory), so a
model whose weights are smaller than MIN_MODEL_BYTES packs into malloc's memory instead (the
edge CNN's 0.4 MB: a 2 MB page cost it 2 MB of memory and 2% of its load time). Where the system
has no THP, the advice is ignored and the pool behaves like np.empty.
"""
from __future__ import annotations

import math
import mmap
import sys
import threading

import numpy as np

HUGE_PAGE = 2 << 20
CHUNK_BYTES = 64 << 20         # address space reserved at a time (a larger array gets its own)
MIN_POOLED_BYTES = 256 << 10   # smaller arrays come from malloc, whose heap reuses freed memory
MIN_MODEL_BYTES = 4 << 20      # a model with fewer bytes of weights gets no pool
ALIGN = 64

# MAP_PRIVATE: a shared anonymous mapping is shmem, which THP's "madvise" mode leaves alone
HUGE_PAGES_ADVISABLE = sys.platform.startswith("linux") and hasattr(mmap, "MADV_HUGEPAGE") \
    and hasattr(mmap, "MAP_PRIVATE") and hasattr(mmap, "MAP_ANONYMOUS")


class WeightPool:
    """Hands out arrays for packed weights (`empty`), for the life of the arrays.

    An array goes into the first chunk with room for it (first fit: the space an array larger
    than what a chunk has left would waste is filled by later, smaller ones). Thread-safe: plans
    for two input shapes may be built at the same time."""

    def __init__(self, model_bytes: int | None = None):
        """model_bytes: the size of the model's weights as stored, when known: below
        MIN_MODEL_BYTES every array comes from np.empty."""
        self._lock = threading.Lock()
        self._chunks = []   # [uint8 array over a chunk, from a 2 MB boundary; bytes handed out]
        self._enabled = HUGE_PAGES_ADVISABLE and (model_bytes is None or model_bytes >= MIN_MODEL_BYTES)

    def empty(self, shape, dtype=np.float32) -> np.ndarray:
        """An uninitialised, C-contiguous, writeable array of `shape` (as np.empty)."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < MIN_POOLED_BYTES or not self._enabled:
            return np.empty(shape, dtype)
        with self._lock:
            entry = next((e for e in self._chunks if e[1] + nbytes <= e[0].size), None)
            if entry is None:
                chunk = _new_chunk(max(CHUNK_BYTES, nbytes))
                if chunk is None:
                    return np.empty(shape, dtype)
                entry = [chunk, 0]
                self._chunks.append(entry)
            chunk, start = entry
            entry[1] = (start + nbytes + ALIGN - 1) // ALIGN * ALIGN
            return chunk[start:start + nbytes].view(dtype).reshape(shape)

    def release(self) -> None:
        """Let go of the chunks: each is unmapped once no array views it (Model.close); later
        arrays come from new chunks."""
        with self._lock:
            self._chunks = []


def _new_chunk(nbytes: int):
    """A uint8 array over `nbytes` (rounded up to 2 MB) of fresh address space starting at a
    2 MB boundary, advised MADV_HUGEPAGE; None where it cannot be mapped."""
    size = -(-nbytes // HUGE_PAGE) * HUGE_PAGE
    try:
        # one huge page more than needed, to start at a boundary (unused address space costs
        # no memory)
        mapping = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except (OSError, ValueError, OverflowError):
        return None
    whole = np.frombuffer(mapping, np.uint8)
    skip = -whole.ctypes.data % HUGE_PAGE
    try:
        mapping.madvise(mmap.MADV_HUGEPAGE, skip, size)
    except OSError:
        pass   # a kernel without THP: 4 KB pages, as np.empty's
    return whole[skip:skip + size]

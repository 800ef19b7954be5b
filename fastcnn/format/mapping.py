"""A model file mapped read-only, whose weights are arrays viewing the mapping (.fcnn, .onnx)."""
from __future__ import annotations

import mmap


class MappedFile:
    """Keeps a model file's read-only mapping alive while its arrays are in use."""

    def __init__(self, f, mm):
        self._f = f
        self._mm = mm

    def release_pages(self):
        """Let the kernel drop this process's resident pages of the file (they stay in the
        page cache): after planning, most weights live on in packed copies (Winograd, GEMM
        panels), and the ones still read in place come back on first use. Linux only; a no-op
        elsewhere."""
        mm = self._mm
        if mm is not None and hasattr(mmap, "MADV_DONTNEED"):
            try:
                mm.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError):
                pass

    def close(self):
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                # Arrays still view the mapping (the caller kept references): it is unmapped
                # when the last of them goes away.
                pass
        f, self._f = self._f, None
        if f is not None:
            f.close()

"""Data movement: one strided copy kernel serves Transpose, Slice, Concat, Split, Expand, Tile,
DepthToSpace/SpaceToDepth and Pad; plus fill and gather, and `scale_rows` (a copy of a conv's
weights scaled per output channel, made while planning).

The Python side expresses each op as "iterate over `shape` (up to 8 dims), read
src[src_offset + i . src_strides], write dst[dst_offset + i . dst_strides]" with element strides
(negative for reversed slices, 0 for broadcast) and checks, before building the step, that every
address touched lies inside both buffers.
"""
from cython.parallel cimport prange

import numpy as np

from fastcnn._kernels.step cimport Step
from fastcnn._kernels.unaligned cimport load_f32

cdef enum:
    MAXD = 8


cdef void strided_copy(const float *src, float *dst, const Py_ssize_t *shape,
                       const Py_ssize_t *ss, const Py_ssize_t *ds, int num_threads) noexcept nogil:
    """Copy over an 8-dim index space; the last dim is the inner loop."""
    cdef Py_ssize_t outer = 1, r, rem, k, so, do, i, n = shape[MAXD - 1]
    cdef Py_ssize_t s_in = ss[MAXD - 1], d_in = ds[MAXD - 1]
    cdef Py_ssize_t idx
    cdef int nt
    for k in range(MAXD - 1):
        outer *= shape[k]
    nt = num_threads if outer * n >= 65536 and outer >= num_threads else 1
    for r in prange(outer, num_threads=nt, schedule="static"):
        rem = r
        so = 0
        do = 0
        for k in range(MAXD - 2, -1, -1):
            idx = rem % shape[k]
            rem = rem // shape[k]
            so = so + idx * ss[k]
            do = do + idx * ds[k]
        if s_in == 1 and d_in == 1:
            for i in range(n):
                dst[do + i] = src[so + i]
        else:
            for i in range(n):
                dst[do + i * d_in] = src[so + i * s_in]


def _bounds(Py_ssize_t offset, shape, strides):
    """(lowest, highest) element index touched by a strided walk."""
    cdef Py_ssize_t lo = offset, hi = offset
    for d, s in zip(shape, strides):
        if d == 0:
            return None
        if s > 0:
            hi += (d - 1) * s
        else:
            lo += (d - 1) * s
    return lo, hi


cdef class CopyStep(Step):
    """dst[dst_offset + i . dst_strides] = src[src_offset + i . src_strides] for i in shape."""
    cdef const float[::1] src
    cdef float[::1] dst
    cdef Py_ssize_t so, do
    cdef Py_ssize_t shape[MAXD]
    cdef Py_ssize_t ss[MAXD]
    cdef Py_ssize_t ds[MAXD]
    cdef bint empty

    def __init__(self, const float[::1] src, float[::1] dst, shape, Py_ssize_t src_offset,
                 src_strides, Py_ssize_t dst_offset, dst_strides):
        cdef int k, pad = MAXD - len(shape)
        if pad < 0 or len(src_strides) != len(shape) or len(dst_strides) != len(shape):
            raise ValueError("CopyStep: bad rank")
        self.src, self.dst = src, dst
        self.so, self.do = src_offset, dst_offset
        for k in range(MAXD):
            self.shape[k] = 1 if k < pad else shape[k - pad]
            self.ss[k] = 0 if k < pad else src_strides[k - pad]
            self.ds[k] = 0 if k < pad else dst_strides[k - pad]
        sb = _bounds(src_offset, shape, src_strides)
        db = _bounds(dst_offset, shape, dst_strides)
        self.empty = sb is None
        if not self.empty and (sb[0] < 0 or sb[1] >= src.shape[0] or db[0] < 0 or db[1] >= dst.shape[0]):
            raise ValueError(f"CopyStep: walk {list(shape)} leaves its buffers "
                             f"(src {sb} of {src.shape[0]}, dst {db} of {dst.shape[0]})")

    cdef void run(self) noexcept nogil:
        if self.empty:
            return
        strided_copy(&self.src[self.so], &self.dst[self.do], self.shape, self.ss, self.ds,
                     self.num_threads)


cdef class FillStep(Step):
    """dst[:] = value (a flat float32 buffer)."""
    cdef float[::1] dst
    cdef float value

    def __init__(self, float[::1] dst, float value):
        self.dst = dst
        self.value = value

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t i, n = self.dst.shape[0]
        for i in range(n):
            self.dst[i] = self.value


cdef class GatherStep(Step):
    """out (outer, n_idx, inner) = src (outer, axis_len, inner)[:, idx, :]; idx checked in range."""
    cdef const float[::1] src
    cdef float[::1] out
    cdef const long long[::1] idx
    cdef Py_ssize_t outer, axis_len, inner

    def __init__(self, const float[::1] src, float[::1] out, const long long[::1] idx,
                 Py_ssize_t outer, Py_ssize_t axis_len, Py_ssize_t inner):
        cdef Py_ssize_t k
        if src.shape[0] != outer * axis_len * inner or out.shape[0] != outer * idx.shape[0] * inner:
            raise ValueError("GatherStep: sizes do not match")
        for k in range(idx.shape[0]):
            if not 0 <= idx[k] < axis_len:
                raise ValueError("GatherStep: index out of range")
        self.src, self.out, self.idx = src, out, idx
        self.outer, self.axis_len, self.inner = outer, axis_len, inner

    cdef void run(self) noexcept nogil:
        cdef Py_ssize_t o, j, i, n = self.idx.shape[0], s, d
        for o in range(self.outer):
            for j in range(n):
                s = (o * self.axis_len + self.idx[j]) * self.inner
                d = (o * n + j) * self.inner
                for i in range(self.inner):
                    self.out[d + i] = self.src[s + i]


def scale_rows(src, const double[::1] scale):
    """A new (rows, cols) float32 array: out[i, j] = float(double(src[i, j]) * scale[i]), the
    product numpy's float64 multiply rounds once (ir/weights.scaled), a conv's weights
    (c_out, c_in/group * k_h * k_w) scaled per output channel. src: a C-contiguous
    (rows, cols) float32 array that may start at any byte (weights viewing an .onnx file):
    read bytewise. One pass, no float64 copy (numpy's casting multiply took 28 ms for
    ResNet-18's 45 MB)."""
    if src.dtype != np.float32 or src.ndim != 2 or not src.flags.c_contiguous:
        raise ValueError("scale_rows: src must be a C-contiguous 2-D float32 array")
    cdef Py_ssize_t rows = src.shape[0], cols = src.shape[1], i, j
    if scale.shape[0] != rows:
        raise ValueError("scale_rows: one scale per row")
    out = np.empty((rows, cols), np.float32)
    if rows == 0 or cols == 0:
        return out
    cdef const unsigned char[::1] raw = src.reshape(-1).view(np.uint8)
    cdef float[:, ::1] o = out
    cdef const unsigned char *p = &raw[0]
    cdef double s
    with nogil:
        for i in range(rows):
            s = scale[i]
            for j in range(cols):
                o[i, j] = <float>(<double>load_f32(p + (i * cols + j) * sizeof(float)) * s)
    return out

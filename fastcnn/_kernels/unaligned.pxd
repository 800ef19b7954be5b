# Reading float32 values that may start at any byte: weights viewing an .onnx file sit where
# protobuf put their raw_data, and C may assume a float* is 4-byte aligned.

from libc.string cimport memcpy


cdef inline float load_f32(const void *p) noexcept nogil:
    """The float32 at p, at any byte alignment. A value returned, not written through a
    pointer to the caller's variable: inside prange the caller's assignment keeps it private."""
    cdef float v
    memcpy(&v, p, sizeof(float))
    return v

# Lane shuffles beyond simd.pxd (see simd_extra.h).
from fastcnn._kernels.simd cimport vf8

cdef extern from "simd_extra.h" nogil:
    vf8 vf8_load_even(const float *p)
    void vf8_split_even_odd(const float *p, vf8 *even, vf8 *odd)
    vf8 vf8_max_nan(vf8 a, vf8 b)
    vf8 vf8_min_nan(vf8 a, vf8 b)
    vf8 vf8_nan_seen(vf8 seen, vf8 x)
    vf8 vf8_nan_where(vf8 a, vf8 seen)
    float f32_max_nan(float a, float b)
    float f32_min_nan(float a, float b)
    void vf8_transpose8(const float *src, long src_stride, float *dst, long dst_stride)

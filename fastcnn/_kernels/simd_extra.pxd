# Lane shuffles beyond simd.pxd (see simd_extra.h).
from fastcnn._kernels.simd cimport vf8

cdef extern from "simd_extra.h" nogil:
    vf8 vf8_load_even(const float *p)
    void vf8_split_even_odd(const float *p, vf8 *even, vf8 *odd)

# Sigmoid on eight lanes, the same bits as act.pxd's sigmoidf (see simd_math.h).
from fastcnn._kernels.simd cimport vf8

cdef extern from "simd_math.h" nogil:
    vf8 vf8_sigmoid(vf8 v)

# The tile conv step, declared for the fused steps that compute its output rows themselves
# (blocked.ExpandDepthwiseBlockedStep with a stem: `image_src`, then `rows_blocked` per row).
from fastcnn._kernels.step cimport Step
from fastcnn._kernels.convgeom cimport ConvGeom


cdef class ConvTileStep(Step):
    cdef const float[:, :, :, ::1] x
    cdef const float[:, :, ::1] wt
    cdef float[::1] bias16
    cdef const float[:, :, :, ::1] residual
    cdef float[:, :, :, ::1] out
    cdef float[::1] work
    cdef ConvGeom g
    cdef Py_ssize_t K, panels, hp, wp, hw, tiles, slot_size, slots
    cdef bint padded, panel_outer, blocked_out
    cdef readonly bint channels_last
    cdef readonly bint stream
    cdef readonly bint pool
    cdef readonly bint rows_only
    cdef readonly Py_ssize_t pad_size
    cdef Py_ssize_t h_pool, w_pool
    cdef int fin
    cdef Py_ssize_t[::1] base
    cdef Py_ssize_t[::1] off

    cdef void pad_image(self, Py_ssize_t img, float *xp, Py_ssize_t pr0,
                        Py_ssize_t pr1) noexcept nogil
    cdef const float *image_src(self, Py_ssize_t img, float *xp, Py_ssize_t oh0,
                                Py_ssize_t oh1) noexcept nogil
    cdef void rows_blocked(self, const float *src, Py_ssize_t oh, float *dst,
                           Py_ssize_t block_stride) noexcept nogil
    cdef void pixels_blocked(self, const float *src, Py_ssize_t p0, Py_ssize_t count,
                             Py_ssize_t jp, float *dst, Py_ssize_t block_stride) noexcept nogil
    cdef void store_blocked(self, const float *t, Py_ssize_t ldt, float *o,
                            Py_ssize_t count) noexcept nogil
    cdef void store_block(self, const float *t, Py_ssize_t ldt, float *o, const float *r,
                          Py_ssize_t nc, Py_ssize_t count, bint wide,
                          float *rows) noexcept nogil
    cdef void task(self, Py_ssize_t img, Py_ssize_t tile0, Py_ssize_t tile1, Py_ssize_t jp0,
                   Py_ssize_t jp1, float *xp) noexcept nogil
    cdef void pool_task(self, Py_ssize_t img, Py_ssize_t pr0, Py_ssize_t pr1,
                        float *slot) noexcept nogil

# Eight-lane float vectors (AVX2/FMA or a portable fallback); see simd.h.
cdef extern from "simd.h" nogil:
    const char *FASTCNN_SIMD_NAME
    int FASTCNN_HAVE_AVX2
    ctypedef struct vf8:
        pass
    vf8 vf8_zero()
    vf8 vf8_set1(float v)
    vf8 vf8_load(const float *p)
    vf8 vf8_load_held(const float *p)
    void vf8_store(float *p, vf8 v)
    void vf8_stream(float *p, vf8 v)
    void vf8_store_fence()
    vf8 vf8_fmadd(vf8 a, vf8 b, vf8 c)
    vf8 vf8_add(vf8 a, vf8 b)
    vf8 vf8_sub(vf8 a, vf8 b)
    vf8 vf8_mul(vf8 a, vf8 b)
    vf8 vf8_div(vf8 a, vf8 b)
    vf8 vf8_max(vf8 a, vf8 b)
    vf8 vf8_min(vf8 a, vf8 b)
    vf8 vf8_select_lt0(vf8 v, vf8 neg, vf8 pos)
    float vf8_hsum(vf8 v)
    void prefetch_line(const void *p)


cdef inline void vf8_zero_fill(float *d, Py_ssize_t n) noexcept nogil:
    """d[0:n] = 0, eight lanes at a time."""
    cdef Py_ssize_t i = 0
    cdef vf8 z = vf8_zero()
    while i + 8 <= n:
        vf8_store(d + i, z)
        i = i + 8
    while i < n:
        d[i] = 0.0
        i = i + 1


cdef inline void prefetch_share(const char *base, Py_ssize_t lo, Py_ssize_t hi,
                                Py_ssize_t size) noexcept nogil:
    """Prefetch the lines of base[lo:min(hi, size)] (lo, hi multiples of 64 from base): one
    share of a block the next piece of work reads, issued before each step of the current one."""
    while lo < hi and lo < size:
        prefetch_line(base + lo)
        lo = lo + 64

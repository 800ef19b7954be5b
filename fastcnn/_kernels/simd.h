/* Eight-lane float vectors for the kernels, with one spelling for every CPU.
 *
 * With AVX2+FMA enabled at compile time (setup.py builds with -march=native) `vf8` is __m256 and
 * each function is one instruction. Otherwise it is a plain struct of eight floats and the same
 * functions are scalar loops the compiler may auto-vectorise (SSE, NEON): slower, same results
 * up to FMA rounding. The Cython kernels only ever use these names.
 */
#ifndef FASTCNN_SIMD_H
#define FASTCNN_SIMD_H

/* a hint to bring the line holding p into the caches (no effect on results; none without gcc/clang) */
#if defined(__GNUC__)
static inline void prefetch_line(const void *p) { __builtin_prefetch(p, 0, 3); }
#else
static inline void prefetch_line(const void *p) { (void)p; }
#endif

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define FASTCNN_SIMD_NAME "avx2+fma"
#define FASTCNN_HAVE_AVX2 1
typedef __m256 vf8;
static inline vf8 vf8_zero(void) { return _mm256_setzero_ps(); }
static inline vf8 vf8_set1(float v) { return _mm256_set1_ps(v); }
static inline vf8 vf8_load(const float *p) { return _mm256_loadu_ps(p); }
static inline void vf8_store(float *p, vf8 v) { _mm256_storeu_ps(p, v); }
/* a load kept in a register: the empty asm hides the value's origin, so gcc cannot fold the load
 * into each FMA that uses it (it does so when a tile needs every register, turning one load
 * per vector into one per FMA) */
static inline vf8 vf8_load_held(const float *p) {
    __m256 v = _mm256_loadu_ps(p);
    __asm__("" : "+x"(v));
    return v;
}
/* non-temporal store: p 32-byte aligned; vf8_store_fence() before others read the data */
static inline void vf8_stream(float *p, vf8 v) { _mm256_stream_ps(p, v); }
static inline void vf8_store_fence(void) { _mm_sfence(); }
static inline vf8 vf8_fmadd(vf8 a, vf8 b, vf8 c) { return _mm256_fmadd_ps(a, b, c); }
static inline vf8 vf8_add(vf8 a, vf8 b) { return _mm256_add_ps(a, b); }
static inline vf8 vf8_sub(vf8 a, vf8 b) { return _mm256_sub_ps(a, b); }
static inline vf8 vf8_mul(vf8 a, vf8 b) { return _mm256_mul_ps(a, b); }
static inline vf8 vf8_div(vf8 a, vf8 b) { return _mm256_div_ps(a, b); }
/* max/min written so a NaN in `a` propagates (IEEE-style), like the scalar reference loops */
static inline vf8 vf8_max(vf8 a, vf8 b) { return _mm256_max_ps(b, a); }
static inline vf8 vf8_min(vf8 a, vf8 b) { return _mm256_min_ps(b, a); }
/* lanes where v < 0 (ordered: NaN is not) from neg, the others from pos */
static inline vf8 vf8_select_lt0(vf8 v, vf8 neg, vf8 pos) {
    return _mm256_blendv_ps(pos, neg, _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ));
}
static inline float vf8_hsum(vf8 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}
#else
#define FASTCNN_SIMD_NAME "generic"
#define FASTCNN_HAVE_AVX2 0
typedef struct { float v[8]; } vf8;
static inline vf8 vf8_zero(void) { vf8 r; for (int i = 0; i < 8; i++) r.v[i] = 0.0f; return r; }
static inline vf8 vf8_set1(float x) { vf8 r; for (int i = 0; i < 8; i++) r.v[i] = x; return r; }
static inline vf8 vf8_load(const float *p) { vf8 r; for (int i = 0; i < 8; i++) r.v[i] = p[i]; return r; }
static inline void vf8_store(float *p, vf8 a) { for (int i = 0; i < 8; i++) p[i] = a.v[i]; }
static inline vf8 vf8_load_held(const float *p) { return vf8_load(p); }
static inline void vf8_stream(float *p, vf8 a) { vf8_store(p, a); }
static inline void vf8_store_fence(void) { }
static inline vf8 vf8_fmadd(vf8 a, vf8 b, vf8 c) { vf8 r; for (int i = 0; i < 8; i++) r.v[i] = a.v[i] * b.v[i] + c.v[i]; return r; }
static inline vf8 vf8_add(vf8 a, vf8 b) { vf8 r; for (int i = 0; i < 8; i++) r.v[i] = a.v[i] + b.v[i]; return r; }
static inline vf8 vf8_sub(vf8 a, vf8 b) { vf8 r; for (int i = 0; i < 8; i++) r.v[i] = a.v[i] - b.v[i]; return r; }
static inline vf8 vf8_mul(vf8 a, vf8 b) { vf8 r; for (int i = 0; i < 8; i++) r.v[i] = a.v[i] * b.v[i]; return r; }
static inline vf8 vf8_div(vf8 a, vf8 b) { vf8 r; for (int i = 0; i < 8; i++) r.v[i] = a.v[i] / b.v[i]; return r; }
static inline vf8 vf8_max(vf8 a, vf8 b) { vf8 r; for (int i = 0; i < 8; i++) r.v[i] = (a.v[i] < b.v[i]) ? b.v[i] : a.v[i]; return r; }
static inline vf8 vf8_min(vf8 a, vf8 b) { vf8 r; for (int i = 0; i < 8; i++) r.v[i] = (a.v[i] > b.v[i]) ? b.v[i] : a.v[i]; return r; }
static inline vf8 vf8_select_lt0(vf8 v, vf8 neg, vf8 pos) { vf8 r; for (int i = 0; i < 8; i++) r.v[i] = (v.v[i] < 0.0f) ? neg.v[i] : pos.v[i]; return r; }
static inline float vf8_hsum(vf8 a) { float s = 0.0f; for (int i = 0; i < 8; i++) s += a.v[i]; return s; }
#endif

#endif

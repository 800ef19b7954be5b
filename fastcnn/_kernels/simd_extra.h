/* Lane shuffles the conv kernels need beyond simd.h, with the same AVX2 / portable split.
 *
 * vf8_load_even(p): (p[0], p[2], ..., p[14]) -- the stride-2 row read of a depthwise conv.
 * Reads p[0..15] (the caller guarantees 16 readable floats).
 * vf8_split_even_odd(p, even, odd): even = (p[0], p[2], ..., p[14]), odd = (p[1], ..., p[15]).
 * vf8_max_nan(a, b) / vf8_min_nan(a, b): lane-wise max/min that is NaN when either lane is NaN
 * (what the scalar pooling loops compute; plain vf8_max lets a NaN in b through as a).
 * vf8_nan_seen(seen, x): all-ones lanes (a NaN) where seen or x is NaN, zero elsewhere; starting
 * from zero it remembers, in one compare per value, whether a lane met a NaN.
 * vf8_nan_where(a, seen): a, with NaN in the lanes where seen is NaN (after vf8_nan_seen).
 * f32_max_nan(a, b) / f32_min_nan(a, b): the same on one float, without branches (a branch per
 * value mispredicts half the time on real data).
 * vf8_transpose8(src, src_stride, dst, dst_stride): dst row j = column j of the 8x8 block whose
 * row i is src + i*src_stride (the reorders between NCHW and NCHW8c).
 */
#ifndef FASTCNN_SIMD_EXTRA_H
#define FASTCNN_SIMD_EXTRA_H
#include <math.h>
#include "simd.h"

#if FASTCNN_HAVE_AVX2
static inline vf8 vf8_load_even(const float *p) {
    __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
    /* (a0 a2 b0 b2 | a4 a6 b4 b6) -> (a0 a2 a4 a6 b0 b2 b4 b6) */
    __m256 s = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), _MM_SHUFFLE(3, 1, 2, 0)));
}
static inline void vf8_split_even_odd(const float *p, vf8 *even, vf8 *odd) {
    __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
    __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    __m256 o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    *even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
    *odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0)));
}
static inline vf8 vf8_max_nan(vf8 a, vf8 b) {
    /* max_ps(b, a) returns a when either is NaN; then put b back where b is NaN */
    return _mm256_blendv_ps(_mm256_max_ps(b, a), b, _mm256_cmp_ps(b, b, _CMP_UNORD_Q));
}
static inline vf8 vf8_min_nan(vf8 a, vf8 b) {
    return _mm256_blendv_ps(_mm256_min_ps(b, a), b, _mm256_cmp_ps(b, b, _CMP_UNORD_Q));
}
static inline vf8 vf8_nan_seen(vf8 seen, vf8 x) { return _mm256_cmp_ps(seen, x, _CMP_UNORD_Q); }
static inline vf8 vf8_nan_where(vf8 a, vf8 seen) { return _mm256_or_ps(a, seen); }
static inline float f32_max_nan(float a, float b) {
    __m128 va = _mm_set_ss(a), vb = _mm_set_ss(b);
    return _mm_cvtss_f32(_mm_blendv_ps(_mm_max_ss(vb, va), vb, _mm_cmpunord_ss(vb, vb)));
}
static inline float f32_min_nan(float a, float b) {
    __m128 va = _mm_set_ss(a), vb = _mm_set_ss(b);
    return _mm_cvtss_f32(_mm_blendv_ps(_mm_min_ss(vb, va), vb, _mm_cmpunord_ss(vb, vb)));
}
static inline void vf8_transpose8(const float *src, long src_stride, float *dst, long dst_stride) {
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + src_stride);
    __m256 r2 = _mm256_loadu_ps(src + 2 * src_stride), r3 = _mm256_loadu_ps(src + 3 * src_stride);
    __m256 r4 = _mm256_loadu_ps(src + 4 * src_stride), r5 = _mm256_loadu_ps(src + 5 * src_stride);
    __m256 r6 = _mm256_loadu_ps(src + 6 * src_stride), r7 = _mm256_loadu_ps(src + 7 * src_stride);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(dst + dst_stride, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(dst + 2 * dst_stride, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(dst + 3 * dst_stride, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(dst + 4 * dst_stride, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(dst + 5 * dst_stride, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(dst + 6 * dst_stride, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(dst + 7 * dst_stride, _mm256_permute2f128_ps(u3, u7, 0x31));
}
#else
static inline vf8 vf8_load_even(const float *p) {
    vf8 r; for (int i = 0; i < 8; i++) r.v[i] = p[2 * i]; return r;
}
static inline void vf8_split_even_odd(const float *p, vf8 *even, vf8 *odd) {
    for (int i = 0; i < 8; i++) { even->v[i] = p[2 * i]; odd->v[i] = p[2 * i + 1]; }
}
static inline vf8 vf8_max_nan(vf8 a, vf8 b) {
    vf8 r; for (int i = 0; i < 8; i++) r.v[i] = (b.v[i] > a.v[i] || b.v[i] != b.v[i]) ? b.v[i] : a.v[i]; return r;
}
static inline vf8 vf8_min_nan(vf8 a, vf8 b) {
    vf8 r; for (int i = 0; i < 8; i++) r.v[i] = (b.v[i] < a.v[i] || b.v[i] != b.v[i]) ? b.v[i] : a.v[i]; return r;
}
static inline vf8 vf8_nan_seen(vf8 seen, vf8 x) {
    vf8 r; for (int i = 0; i < 8; i++) r.v[i] = (seen.v[i] != seen.v[i] || x.v[i] != x.v[i]) ? NAN : 0.0f; return r;
}
static inline vf8 vf8_nan_where(vf8 a, vf8 seen) {
    vf8 r; for (int i = 0; i < 8; i++) r.v[i] = (seen.v[i] != seen.v[i]) ? NAN : a.v[i]; return r;
}
static inline void vf8_transpose8(const float *src, long src_stride, float *dst, long dst_stride) {
    float t[64];
    for (int i = 0; i < 8; i++) for (int j = 0; j < 8; j++) t[j * 8 + i] = src[i * src_stride + j];
    for (int j = 0; j < 8; j++) for (int i = 0; i < 8; i++) dst[j * dst_stride + i] = t[j * 8 + i];
}
static inline float f32_max_nan(float a, float b) { return (b > a || b != b) ? b : a; }
static inline float f32_min_nan(float a, float b) { return (b < a || b != b) ? b : a; }
#endif

#endif

/* Lane shuffles the conv kernels need beyond simd.h, with the same AVX2 / portable split.
 *
 * vf8_load_even(p): (p[0], p[2], ..., p[14]) -- the stride-2 row read of a depthwise conv.
 * Reads p[0..15] (the caller guarantees 16 readable floats).
 * vf8_split_even_odd(p, even, odd): even = (p[0], p[2], ..., p[14]), odd = (p[1], ..., p[15]).
 */
#ifndef FASTCNN_SIMD_EXTRA_H
#define FASTCNN_SIMD_EXTRA_H
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
#else
static inline vf8 vf8_load_even(const float *p) {
    vf8 r; for (int i = 0; i < 8; i++) r.v[i] = p[2 * i]; return r;
}
static inline void vf8_split_even_odd(const float *p, vf8 *even, vf8 *odd) {
    for (int i = 0; i < 8; i++) { even->v[i] = p[2 * i]; odd->v[i] = p[2 * i + 1]; }
}
#endif

#endif

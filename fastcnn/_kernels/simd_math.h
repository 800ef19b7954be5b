/* Logistic sigmoid on eight lanes, for the activation epilogues (ukernel.pxd's act_vec).
 *
 * f32_exp_neg_abs(v) is the one scalar definition of exp(-|v|) (act.pxd's exp_neg_abs calls
 * it). vf8_sigmoid(v) computes, lane by lane, exactly what act.pxd's scalar sigmoidf does,
 * operation for operation (each a*b+c of the polynomial is one fused multiply-add in both when
 * the build targets FMA, F32_MADD, and a multiply then an add in both otherwise; the build
 * contracts nothing else: -std=c99), so a fused epilogue and the standalone activation give
 * the same bits:
 *   e = exp(-|v|) by exp_neg_abs (range reduction to n*ln2 + r, Cephes' degree-6 polynomial,
 *       2^n in the exponent bits, 0 below -87.34, NaN for NaN)
 *   r = 1 / (1 + e);  sigmoid = v >= 0 ? r : e*r
 * Keep the two in step: tests/kernels/test_blocked.py compares them on edge values.
 */
#ifndef FASTCNN_SIMD_MATH_H
#define FASTCNN_SIMD_MATH_H
#include "simd.h"
#include <math.h>

/* a*b + c of exp's polynomial: one rounding where the target has FMA (a chain of five fused
 * steps instead of ten dependent ones: the epilogues of SiLU convs were half sigmoid) */
#if defined(__FMA__)
#define F32_MADD(a, b, c) fmaf((a), (b), (c))
#define VF8_MADD(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#else
#define F32_MADD(a, b, c) ((a) * (b) + (c))
#define VF8_MADD(a, b, c) _mm256_add_ps(_mm256_mul_ps((a), (b)), (c))
#endif

#if defined(__GNUC__)
#define FASTCNN_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define FASTCNN_ALWAYS_INLINE static inline
#endif

/* exp(-|v|): the scalar definition act.pxd's exp_neg_abs uses (see act.pxd for the method).
 * Always inlined: a call per element would keep the activation loops from vectorising. */
FASTCNN_ALWAYS_INLINE float f32_exp_neg_abs(float v) {
    const float lo = -87.33654f;
    float x = -fabsf(v);
    float xc = x < lo ? lo : x;                      /* NaN stays NaN */
    float n = floorf(F32_MADD(xc, 1.4426950408889634f, 0.5f));
    float r = F32_MADD(n, 2.12194440e-4f, F32_MADD(-n, 0.693359375f, xc));
    float p = 1.9875691500e-4f;
    union { float f; int i; } scale;
    p = F32_MADD(p, r, 1.3981999507e-3f);
    p = F32_MADD(p, r, 8.3334519073e-3f);
    p = F32_MADD(p, r, 4.1665795894e-2f);
    p = F32_MADD(p, r, 1.6666665459e-1f);
    p = F32_MADD(p, r, 5.0000001201e-1f);
    p = F32_MADD(p, r * r, r) + 1.0f;
    scale.i = ((int)(n == n ? n : 0.0f) + 127) << 23;
    return x < lo ? 0.0f : p * scale.f;
}

#if FASTCNN_HAVE_AVX2
FASTCNN_ALWAYS_INLINE vf8 vf8_exp_neg_abs(vf8 v) {
    const __m256 lo = _mm256_set1_ps(-87.33654f);
    __m256 x = _mm256_or_ps(v, _mm256_set1_ps(-0.0f));                 /* -|v| */
    __m256 below = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    __m256 xc = _mm256_max_ps(lo, x);                                   /* NaN stays NaN */
    __m256 n = _mm256_floor_ps(VF8_MADD(xc, _mm256_set1_ps(1.4426950408889634f), _mm256_set1_ps(0.5f)));
    __m256 r = VF8_MADD(n, _mm256_set1_ps(2.12194440e-4f),
                        VF8_MADD(_mm256_sub_ps(_mm256_setzero_ps(), n), _mm256_set1_ps(0.693359375f), xc));
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = VF8_MADD(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = VF8_MADD(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = VF8_MADD(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = VF8_MADD(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = VF8_MADD(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_add_ps(VF8_MADD(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    /* NaN lanes: p is NaN, so any scale gives NaN (cvtt of NaN is defined here, unlike C's cast) */
    __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(below, _mm256_mul_ps(p, _mm256_castsi256_ps(bits)));
}
static inline vf8 vf8_sigmoid(vf8 v) {
    __m256 e = vf8_exp_neg_abs(v);
    __m256 r = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    __m256 neg = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NGE_UQ);    /* !(v >= 0): NaN too */
    return _mm256_blendv_ps(r, _mm256_mul_ps(e, r), neg);
}
#else
static inline vf8 vf8_sigmoid(vf8 v) {
    vf8 out;
    for (int i = 0; i < 8; i++) {
        float e = f32_exp_neg_abs(v.v[i]);
        float r = 1.0f / (1.0f + e);
        out.v[i] = v.v[i] >= 0 ? r : e * r;
    }
    return out;
}
#endif

#endif

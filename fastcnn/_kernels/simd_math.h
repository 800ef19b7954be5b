/* Logistic sigmoid on eight lanes, for the activation epilogues (ukernel.pxd's act_vec).
 *
 * f32_exp_neg_abs(v) and f32_sigmoid(v) are the one scalar definition of exp(-|v|) and of the
 * sigmoid (act.pxd's exp_neg_abs and sigmoidf call them). vf8_sigmoid(v) computes, lane by
 * lane, exactly what f32_sigmoid does, operation for operation (each a*b+c of the polynomial
 * is one fused multiply-add in both when the build targets FMA, F32_MADD, and a multiply then
 * an add in both otherwise; the build contracts nothing else: -std=c99), so a fused epilogue
 * and the standalone activation give the same bits:
 *   e = exp(-|v|) by exp_neg_abs (range reduction to n*ln2 + r, a degree-6 polynomial,
 *       2^n in the exponent bits, 0 below -87.34, NaN for NaN)
 *   sigmoid = (v >= 0 ? 1 : e) / (1 + e)
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

/* exp(-|v|) = 2^n * e^r with -|v| = n*ln2 + r, |r| <= ln2/2 (see act.pxd for the contract).
 * n is rounded to nearest by adding 1.5*2^23 + 127 ("magic"): the sum's low mantissa bits are
 * then n + 127, so shifting its bits left by 23 writes 2^n (no floor, no conversion). e^r is
 * 1 + r*p(r), p of degree 5 fitted to e^r's relative error on [-ln2/2, ln2/2] (least squares
 * on 4001 Chebyshev points, reweighted towards the largest errors until they level out, as
 * Lawson's algorithm does; 2e-9 before rounding the coefficients to float32, far below
 * float32's rounding), evaluated as s + (r*s)*p so the scale costs one multiply.
 * Arguments below -87.34 (2^n would be subnormal) give 0; NaN gives NaN. Max error 0.8 ulp
 * against float64 (the Cephes form this replaced: 0.7 ulp, 1.5x the time).
 * Always inlined: a call per element would keep the activation loops from vectorising. */
#define EXP_LO (-87.33654f)
#define EXP_MAGIC 0x1.8000FEp23f
#define EXP_LOG2E 1.4426950408889634f
#define EXP_LN2_HI 0.693359375f      /* ln2 = HI - LO, HI with 9 significant bits: n*HI is exact */
#define EXP_LN2_LO 2.12194440e-4f
#define EXP_C6 0x1.6aeff4p-10f
#define EXP_C5 0x1.1267aep-7f
#define EXP_C4 0x1.555818p-5f
#define EXP_C3 0x1.55541ap-3f
#define EXP_C2 0x1.fffffcp-2f
#define EXP_C1 1.0f

FASTCNN_ALWAYS_INLINE float f32_exp_neg_abs(float v) {
    float x = -fabsf(v);
    float xc = x < EXP_LO ? EXP_LO : x;              /* NaN stays NaN */
    float t = F32_MADD(xc, EXP_LOG2E, EXP_MAGIC);
    float n = t - EXP_MAGIC;
    float r = F32_MADD(n, EXP_LN2_LO, F32_MADD(-n, EXP_LN2_HI, xc));
    union { float f; unsigned int i; } s;
    s.f = t;
    s.i <<= 23;
    float p = EXP_C6;
    p = F32_MADD(p, r, EXP_C5);
    p = F32_MADD(p, r, EXP_C4);
    p = F32_MADD(p, r, EXP_C3);
    p = F32_MADD(p, r, EXP_C2);
    p = F32_MADD(p, r, EXP_C1);
    float e = F32_MADD(r * s.f, p, s.f);
    return x < EXP_LO ? 0.0f : e;
}

/* sigmoid(v) = num / (1 + e) with e = exp(-|v|), num = 1 for v >= 0 and e below (never exp of
 * a large positive number; one division) */
FASTCNN_ALWAYS_INLINE float f32_sigmoid(float v) {
    float e = f32_exp_neg_abs(v);
    return (v >= 0 ? 1.0f : e) / (1.0f + e);
}

#if FASTCNN_HAVE_AVX2
FASTCNN_ALWAYS_INLINE vf8 vf8_exp_neg_abs(vf8 v) {
    const __m256 lo = _mm256_set1_ps(EXP_LO), magic = _mm256_set1_ps(EXP_MAGIC);
    __m256 x = _mm256_or_ps(v, _mm256_set1_ps(-0.0f));                 /* -|v| */
    __m256 below = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    __m256 xc = _mm256_max_ps(lo, x);                                   /* NaN stays NaN */
    __m256 t = VF8_MADD(xc, _mm256_set1_ps(EXP_LOG2E), magic);
    __m256 n = _mm256_sub_ps(t, magic);
    __m256 r = VF8_MADD(n, _mm256_set1_ps(EXP_LN2_LO),
                        VF8_MADD(_mm256_sub_ps(_mm256_setzero_ps(), n), _mm256_set1_ps(EXP_LN2_HI), xc));
    __m256 s = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t), 23));
    __m256 p = _mm256_set1_ps(EXP_C6);
    p = VF8_MADD(p, r, _mm256_set1_ps(EXP_C5));
    p = VF8_MADD(p, r, _mm256_set1_ps(EXP_C4));
    p = VF8_MADD(p, r, _mm256_set1_ps(EXP_C3));
    p = VF8_MADD(p, r, _mm256_set1_ps(EXP_C2));
    p = VF8_MADD(p, r, _mm256_set1_ps(EXP_C1));
    /* NaN lanes: r is NaN, so e is NaN whatever s holds */
    return _mm256_andnot_ps(below, VF8_MADD(_mm256_mul_ps(r, s), p, s));
}
static inline vf8 vf8_sigmoid(vf8 v) {
    __m256 e = vf8_exp_neg_abs(v);
    __m256 neg = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NGE_UQ);    /* !(v >= 0): NaN too */
    __m256 num = _mm256_blendv_ps(_mm256_set1_ps(1.0f), e, neg);
    return _mm256_div_ps(num, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}
#else
static inline vf8 vf8_sigmoid(vf8 v) {
    vf8 out;
    for (int i = 0; i < 8; i++)
        out.v[i] = f32_sigmoid(v.v[i]);
    return out;
}
#endif

#endif

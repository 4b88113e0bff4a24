/* Internal declarations shared by ldpc_decode.c and ldpc_side.c (not cdef:
 * lives in src/, not include/). */
#ifndef QPP_LDPC_INTERNAL_H
#define QPP_LDPC_INTERNAL_H

#include <string.h>

#include "qpp_ldpc.h"

struct qpp_ldpc_code {
    uint32_t n, m;
    size_t n_edges;
    uint32_t max_row_deg;
    uint32_t *row_ptr;      /* m + 1 */
    uint32_t *col_idx;      /* n_edges, row-major */
    /* Quasi-cyclic structure (z = 0: none). Base matrix mb x nb of z x z
     * circulants: base row i holds blk_col[blk_ptr[i] .. blk_ptr[i+1]) with
     * shifts blk_shift[..]; check i*z + l meets variable j*z + (l + s) mod z. */
    uint32_t z, mb, nb, max_blk_deg;
    uint32_t *blk_ptr;      /* mb + 1 */
    uint32_t *blk_col;      /* base edges */
    uint32_t *blk_shift;    /* base edges */
};

/* QC sum-product state of one frame (see ldpc_qc.c for the layouts): the int16
 * decoder uses r/post, the int8 decoder r8/post8; the other pair stays NULL. */
typedef struct {
    int16_t *r;             /* base edges * z check-to-variable messages, lane-major per base edge */
    int16_t *post;          /* nb * (z + 16) posterior LLRs, each block padded by a copy of its first 16 */
    int8_t *r8;             /* int8 decoder: base edges * z messages, as r */
    int16_t *post8;         /* int8 decoder: nb * (z + 64) int16 posteriors, each block padded by its first 64 */
} ldpc_qc_state;

typedef struct {
    int16_t *q;             /* max_blk_deg * z variable-to-check messages of one layer */
    int16_t *fw;            /* max_blk_deg * z forward boxplus partials of one layer */
    int16_t *m1, *m2, *arg, *sg;  /* z each */
    int16_t *synmask;       /* m: 0 or -1 per check */
    int8_t *q8;             /* int8 decoder: max_blk_deg * max(z, 256) of q (and |q| on the SIMD paths) */
    uint8_t *fw8;           /* int8 decoder: max_blk_deg * max(z, 128) forward partials */
    uint8_t *bw8;           /* z */
    int8_t *sg8, *synmask8; /* z, m */
    uint64_t *hard, *chk;   /* words(n), words(m) */
    /* ldpc_qc_run also stops once the unsatisfied count is above (1 - rel_permille / 1000) times
     * its value rel_window (1..15) iterations before; rel_window 0 = off (ldpc_side.c sets it) */
    uint32_t rel_window, rel_permille;
} ldpc_qc_ws;

/* int8 = 0: the int16 decoder's state, 1: the int8 decoder's. */
int ldpc_qc_state_init(ldpc_qc_state *st, const qpp_ldpc_code *c, int int8);
int ldpc_qc_state_live(const ldpc_qc_state *st);
/* Wipes (the posteriors describe the key) and frees. */
void ldpc_qc_state_free(ldpc_qc_state *st, const qpp_ldpc_code *c);
/* Fresh start from int16 channel LLRs (units 1/QPP_LDPC_QC_LLR_ONE; the int8 state
 * converts them to its unit, +-QPP_LDPC_QC_LLR_MAX to +-QPP_LDPC_QC8_LLR_MAX). */
void ldpc_qc_state_load(const qpp_ldpc_code *c, ldpc_qc_state *st, const int16_t *llr);
/* Variable v became known (value bit): add a certain LLR to its posterior, saturated.
 * Call ldpc_qc_state_refresh once after the last one. */
void ldpc_qc_state_fix(const qpp_ldpc_code *c, ldpc_qc_state *st, uint32_t v, unsigned bit);
void ldpc_qc_state_refresh(const qpp_ldpc_code *c, ldpc_qc_state *st);
int ldpc_qc_ws_init(ldpc_qc_ws *ws, const qpp_ldpc_code *c);
void ldpc_qc_ws_free(ldpc_qc_ws *ws);
void ldpc_qc_run(const qpp_ldpc_code *c, const uint64_t *syn, uint32_t max_iter, uint32_t stall,
                 ldpc_qc_state *st, ldpc_qc_ws *ws, uint64_t *out,
                 uint32_t *iterations, int *matched);

typedef struct {
    float *r;               /* check-to-variable message per edge */
    float *post;            /* posterior LLR per variable */
    float *q;               /* variable-to-check messages of the current row */
    float *t;               /* BP scratch: tanh and prefix products of the row */
    uint64_t *hard;         /* hard decision, n bits */
    uint64_t *chk;          /* syndrome of the hard decision, m bits */
} ldpc_ws;

int ldpc_ws_init(ldpc_ws *ws, const qpp_ldpc_code *c);
void ldpc_ws_free(ldpc_ws *ws);
void ldpc_syndrome_raw(const qpp_ldpc_code *c, const uint64_t *x, uint64_t *syn);
void ldpc_qc_syndrome(const qpp_ldpc_code *c, const uint64_t *x, uint64_t *syn);
int ldpc_decode_ws(const qpp_ldpc_code *c, const float *llr, const uint64_t *syn,
                   uint32_t max_iter, uint32_t stall, int algorithm, float scale,
                   uint64_t *out, float *llr_out, uint32_t *iterations, int *matched, ldpc_ws *ws);

int ldpc_decode_batch_raw(const qpp_ldpc_code *c, uint32_t lanes, const float *llr, const uint64_t *syn,
                          uint32_t max_iter, uint32_t stall, uint64_t *out, uint32_t *iterations, int *matched);

/* Sum-product arithmetic. tanh(q/2) = 1 - 2 / (e^q + 1) and
 * 2 atanh(p) = log((1 + p) / (1 - p)), with e^x and log x evaluated by the
 * same short polynomials in the portable and the AVX2 path (identical
 * operation order, no FMA contraction under -std=c99), so both give
 * bit-identical results. Relative error of either is below 2e-7.
 *
 * e^x = 2^t, t = x log2 e = i + f with i = round(t) (by adding and
 * subtracting 1.5 * 2^23, the same in both paths), |f| <= 1/2:
 * 2^f by its Taylor series to degree 6 (remainder < 1.2e-7).
 * log x = e ln 2 + log m, m in [sqrt(1/2), sqrt 2): log m = 2 atanh(s),
 * s = (m - 1)/(m + 1), |s| < 0.172, series to s^9 (remainder < 1e-8). */
#define XC1 0.693147180559945f
#define XC2 0.240226506959101f
#define XC3 0.0555041086648216f
#define XC4 0.00961812910762848f
#define XC5 0.00133335581464284f
#define XC6 0.000154035303933816f
#define LOG2E 1.44269504088896f
#define LN2 0.693147180559945f
#define RND 12582912.0f                  /* 1.5 * 2^23 */

static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float ldpc_th_half(float q)
{
    float x = q > 30.0f ? 30.0f : (q < -30.0f ? -30.0f : q);
    float t = x * LOG2E;
    float i = (t + RND) - RND;          /* round to nearest even, |t| < 2^22 */
    float f = t - i;
    float p = XC6 * f + XC5;
    p = p * f + XC4;
    p = p * f + XC3;
    p = p * f + XC2;
    p = p * f + XC1;
    p = p * f + 1.0f;
    float e = p * u2f((uint32_t)((int32_t)i + 127) << 23);
    return 1.0f - 2.0f / (e + 1.0f);
}

static inline float ldpc_atanh2(float p)
{
    float x = (1.0f + p) / (1.0f - p);
    uint32_t u = f2u(x);
    int32_t ex = (int32_t)(u >> 23) - 127;
    float m = u2f((u & 0x7FFFFFu) | 0x3F800000u);
    if (m > 1.41421356f) {
        m = m * 0.5f;
        ex += 1;
    }
    float s = (m - 1.0f) / (m + 1.0f);
    float z = s * s;
    float poly = z * (1.0f / 9.0f) + (1.0f / 7.0f);
    poly = poly * z + (1.0f / 5.0f);
    poly = poly * z + (1.0f / 3.0f);
    poly = poly * z + 1.0f;
    return (float)ex * LN2 + 2.0f * s * poly;
}

#define LDPC_P_LIM 0.9999999f

static inline float ldpc_clamp_p(float p)
{
    return p > LDPC_P_LIM ? LDPC_P_LIM : (p < -LDPC_P_LIM ? -LDPC_P_LIM : p);
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>

__attribute__((target("avx2"))) static inline __m256 ldpc_th_half8(__m256 q)
{
    __m256 x = _mm256_min_ps(_mm256_max_ps(q, _mm256_set1_ps(-30.0f)), _mm256_set1_ps(30.0f));
    __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(LOG2E));
    __m256 i = _mm256_sub_ps(_mm256_add_ps(t, _mm256_set1_ps(RND)), _mm256_set1_ps(RND));
    __m256 f = _mm256_sub_ps(t, i);
    __m256 p = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(XC6), f), _mm256_set1_ps(XC5));
    p = _mm256_add_ps(_mm256_mul_ps(p, f), _mm256_set1_ps(XC4));
    p = _mm256_add_ps(_mm256_mul_ps(p, f), _mm256_set1_ps(XC3));
    p = _mm256_add_ps(_mm256_mul_ps(p, f), _mm256_set1_ps(XC2));
    p = _mm256_add_ps(_mm256_mul_ps(p, f), _mm256_set1_ps(XC1));
    p = _mm256_add_ps(_mm256_mul_ps(p, f), _mm256_set1_ps(1.0f));
    __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(i), _mm256_set1_epi32(127)), 23);
    __m256 e = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, one)));
}

__attribute__((target("avx2"))) static inline __m256 ldpc_atanh2_8(__m256 pv)
{
    __m256 one = _mm256_set1_ps(1.0f);
    __m256 x = _mm256_div_ps(_mm256_add_ps(one, pv), _mm256_sub_ps(one, pv));
    __m256i u = _mm256_castps_si256(x);
    __m256i ex = _mm256_sub_epi32(_mm256_srli_epi32(u, 23), _mm256_set1_epi32(127));
    __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFF)),
                                                   _mm256_set1_epi32(0x3F800000)));
    __m256 big = _mm256_cmp_ps(m, _mm256_set1_ps(1.41421356f), _CMP_GT_OQ);
    m = _mm256_blendv_ps(m, _mm256_mul_ps(m, _mm256_set1_ps(0.5f)), big);
    ex = _mm256_sub_epi32(ex, _mm256_castps_si256(big));        /* mask is -1 where true */
    __m256 s = _mm256_div_ps(_mm256_sub_ps(m, one), _mm256_add_ps(m, one));
    __m256 z = _mm256_mul_ps(s, s);
    __m256 poly = _mm256_add_ps(_mm256_mul_ps(z, _mm256_set1_ps(1.0f / 9.0f)), _mm256_set1_ps(1.0f / 7.0f));
    poly = _mm256_add_ps(_mm256_mul_ps(poly, z), _mm256_set1_ps(1.0f / 5.0f));
    poly = _mm256_add_ps(_mm256_mul_ps(poly, z), _mm256_set1_ps(1.0f / 3.0f));
    poly = _mm256_add_ps(_mm256_mul_ps(poly, z), one);
    return _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(ex), _mm256_set1_ps(LN2)),
                         _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(2.0f), s), poly));
}

#endif

#endif

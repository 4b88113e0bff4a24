/* Toeplitz hash by an additive FFT over GF(2^64), for the large sizes.
 *
 * Method (Chen, Cheng, Kuo, Li, Yang, "Multiplying boolean polynomials with
 * Frobenius partitions in additive fast Fourier transform", arXiv 1803.11301,
 * built on Lin, Chung, Han, "Novel polynomial basis and its application to
 * Reed-Solomon erasure codes", FOCS 2014 (LCH), and Gao & Mateer, "Additive fast
 * Fourier transforms over finite fields", IEEE TIT 56(12), 2010):
 *   1. cut each GF(2) polynomial into 32-bit pieces and read every piece as an
 *      element of GF(2^64) = GF(2)[z]/(z^64 + z^4 + z^3 + z + 1) in polynomial
 *      basis; a product of two pieces has degree <= 62, so sums of such
 *      products are never reduced and the field result IS the GF(2)[z] result;
 *   2. the pieces are the coefficients of a polynomial in y = x^32 over
 *      GF(2^64); convert it from the monomial basis to the LCH "novel" basis
 *      X_j = prod_{bit i of j} s_i(y), where s_i is the subspace polynomial of
 *      span(beta_0..beta_{i-1}) for the Cantor basis beta (beta_0 = 1,
 *      beta_i^2 + beta_i = beta_{i-1}). Then s_i = (y^2 + y) composed i times
 *      = sum_{t subset of i} y^(2^t) (binom(i, t) mod 2 by Lucas' theorem) has
 *      0/1 coefficients and s_i(beta_i) = 1, so no normalisation is needed and
 *      the conversion (repeated division by s_i) is XORs only;
 *   3. LCH FFT: evaluate at the 2^k points omega_u = sum_{bit j of u} beta_j.
 *      Writing D = D0 + s_r D1 for a block of 2^(r+1) coefficients whose points
 *      start at omega_p, s_r(omega_p + omega_u) is c = s_r(omega_p) for u < 2^r
 *      and c + 1 above, so the butterfly is D0 += c D1; D1 += D0, and with
 *      s_r(beta_j) = beta_(j-r) the twiddle is c = omega_(p >> r);
 *   4. multiply pointwise, inverse FFT, convert back to the monomial basis, and
 *      fold the 63-bit piece products into bits (piece m sits at bit 32 m).
 * The product is exact when its length in pieces is <= 2^k. Only the middle
 * n_out bits are needed, which is used by cutting the key into `blocks` pieces:
 * each block's product with its seed segment carries the output at the same
 * offset, so the blocks are summed in the transform domain and inverted once
 * (2b + 1 transforms of a smaller size; b chosen by a cost model: at n_in = 10^6,
 * n_out = n_in / 4 it takes b = 3 and 2^15 points instead of b = 1 and 2^17).
 *
 * Kernels: AVX-512 VPCLMULQDQ (8 GF(2^64) products per step, levels 0-2 fused
 * in registers), PCLMULQDQ on SSE (2 per step), portable C; all bit-identical.
 * No global mutable state: the Cantor basis is a constant table (checked on
 * every call), twiddle tables live in the per-call plan.
 */
/* madvise(MADV_HUGEPAGE) is a Linux extension outside _POSIX_C_SOURCE. */
#define _DEFAULT_SOURCE 1
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "qpp_common.h"
#include "gf2x_internal.h"

#if defined(__GNUC__) && defined(__x86_64__)
#define QPP_HAVE_X86 1
#include <immintrin.h>
#else
#define QPP_HAVE_X86 0
#endif

/* z^64 = z^4 + z^3 + z + 1 */
static inline uint64_t gf64_reduce(uint64_t lo, uint64_t hi)
{
    uint64_t o = (hi >> 63) ^ (hi >> 61) ^ (hi >> 60);
    hi ^= o;
    return lo ^ hi ^ (hi << 1) ^ (hi << 3) ^ (hi << 4);
}

static inline uint64_t gf64_mul_portable(uint64_t a, uint64_t b)
{
    uint64_t lo, hi;
    qpp_clmul64_portable(a, b, &lo, &hi);
    return gf64_reduce(lo, hi);
}

/* Square a field element (portable; setup only). */
static uint64_t gf64_sqr(uint64_t a) { return gf64_mul_portable(a, a); }

/* Cantor basis of GF(2^64) (modulus z^64 + z^4 + z^3 + z + 1): beta_0 = 1,
 * beta_i^2 + beta_i = beta_(i-1) (Cantor 1989; Gao & Mateer 2010 sec. IV), each
 * the root with bit 0 clear, found once by solving that GF(2)-linear system.
 * plan_init re-checks the relation on every call, so a corrupted table fails
 * loudly (QPP_ERR_INTERNAL) instead of giving a wrong hash. */
enum { NBETA = 40 };
static const uint64_t CANTOR_BETA[NBETA] = {
    UINT64_C(0x0000000000000001), UINT64_C(0x19c9369f278adc02), UINT64_C(0xa181e7d66f5ff794),
    UINT64_C(0x5db84357ce785d08), UINT64_C(0xb973d466f5c9d0ca), UINT64_C(0x521ac889831a075e),
    UINT64_C(0x033ce8beddc8a656), UINT64_C(0xb5846c4e07b91010), UINT64_C(0x4087b8cbb37a32ec),
    UINT64_C(0x00d0d3888c0ae17c), UINT64_C(0xafd5ac70237f2222), UINT64_C(0xe3f5af99cc3aaaf8),
    UINT64_C(0x5a1db3b16a0b58b8), UINT64_C(0x09947c54fe7ee248), UINT64_C(0x0e8eaf0e0068f544),
    UINT64_C(0xa2a113500b4b4f5a), UINT64_C(0xe96f9805d6ce0bb0), UINT64_C(0x53496f8b5c9edd4c),
    UINT64_C(0xad325cb6f4ac2a9e), UINT64_C(0x4a8dcf8bd7ede826), UINT64_C(0xa3e9c552b6434210),
    UINT64_C(0x5fa92ad9c9bc7ed0), UINT64_C(0xa389f910cd7734de), UINT64_C(0xe916f3dfca4609d8),
    UINT64_C(0xf89578714bd28f96), UINT64_C(0x564dda59237a3352), UINT64_C(0xad33bc6cc75aed38),
    UINT64_C(0x57a3104fcd0e5f34), UINT64_C(0xb0f502e4cd60039a), UINT64_C(0xeb42e79f91f49f8c),
    UINT64_C(0x54e5bf3774b3f850), UINT64_C(0xb66864e6ec14b4d2), UINT64_C(0xed57ce778f0d6244),
    UINT64_C(0x523aaf9d6148ba24), UINT64_C(0xa8fcbfaac14940c6), UINT64_C(0xe503eacfcef77780),
    UINT64_C(0xf3746c7b5183a372), UINT64_C(0xec50d77d2f416218), UINT64_C(0xf9cdf54569fe87e6),
    UINT64_C(0xe576269915705e2c),
};

typedef struct {
    unsigned k;          /* transform length 2^k */
    uint64_t beta[NBETA]; /* Cantor basis, beta[0] = 1 */
    uint64_t tlo[1024];  /* twiddle of block index g = tlo[g & 1023] ^ thi[g >> 10] */
    uint64_t *thi;
} plan_t;

static inline uint64_t twiddle(const plan_t *pl, size_t g) { return pl->tlo[g & 1023] ^ pl->thi[g >> 10]; }

static int plan_init(plan_t *pl, unsigned k)
{
    pl->k = k;
    if (CANTOR_BETA[0] != 1)
        return QPP_ERR_INTERNAL;
    for (unsigned i = 0; i < NBETA; i++) {
        pl->beta[i] = CANTOR_BETA[i];
        if (i > 0 && (gf64_sqr(CANTOR_BETA[i]) ^ CANTOR_BETA[i]) != CANTOR_BETA[i - 1])
            return QPP_ERR_INTERNAL;
    }
    /* twiddle(g) = omega_(2g) = sum over bits b of g of beta[b + 1] */
    for (size_t g = 0; g < 1024; g++) {
        uint64_t w = 0;
        for (unsigned b = 0; b < 10; b++)
            if ((g >> b) & 1)
                w ^= pl->beta[b + 1];
        pl->tlo[g] = w;
    }
    size_t nhi = ((size_t)1 << k) / 2 / 1024 + 1;
    pl->thi = malloc(nhi * sizeof *pl->thi);
    if (!pl->thi)
        return QPP_ERR_NOMEM;
    for (size_t g = 0; g < nhi; g++) {
        uint64_t w = 0;
        for (unsigned b = 0; b < 29; b++)
            if ((g >> b) & 1)
                w ^= pl->beta[b + 11];
        pl->thi[g] = w;
    }
    return QPP_OK;
}

/* ---- butterflies ------------------------------------------------------- */

/* Multiplication by a fixed c is GF(2)-linear: tab[k][v] = c * (v << 8k), so a
 * product is 8 lookups. Worth building (2048 XORs) for blocks of >= 1024. */
typedef struct {
    uint64_t t[8][256];
} mulc_tab_t;

static void mulc_build(mulc_tab_t *m, uint64_t c)
{
    uint64_t v = c; /* c * z^(8k + i) */
    for (unsigned k = 0; k < 8; k++) {
        m->t[k][0] = 0;
        for (unsigned i = 0; i < 8; i++) {
            unsigned b = 1u << i;
            for (unsigned u = 0; u < b; u++)
                m->t[k][b + u] = m->t[k][u] ^ v;
            v = (v << 1) ^ ((v >> 63) ? UINT64_C(0x1b) : 0);
        }
    }
}

static inline uint64_t mulc(const mulc_tab_t *m, uint64_t x)
{
    return m->t[0][x & 255] ^ m->t[1][(x >> 8) & 255] ^ m->t[2][(x >> 16) & 255] ^
           m->t[3][(x >> 24) & 255] ^ m->t[4][(x >> 32) & 255] ^ m->t[5][(x >> 40) & 255] ^
           m->t[6][(x >> 48) & 255] ^ m->t[7][x >> 56];
}

enum { MULC_MIN_H = 1024 };

/* Forward butterfly on one block: d0[j] += c d1[j]; d1[j] += d0[j]. */
static void bfly_fwd_portable(uint64_t *d0, uint64_t *d1, size_t h, uint64_t c)
{
    if (c == 0) {
        for (size_t j = 0; j < h; j++)
            d1[j] ^= d0[j];
        return;
    }
    if (h >= MULC_MIN_H) {
        mulc_tab_t m;
        mulc_build(&m, c);
        for (size_t j = 0; j < h; j++) {
            d0[j] ^= mulc(&m, d1[j]);
            d1[j] ^= d0[j];
        }
        return;
    }
    for (size_t j = 0; j < h; j++) {
        d0[j] ^= gf64_mul_portable(c, d1[j]);
        d1[j] ^= d0[j];
    }
}

static void bfly_inv_portable(uint64_t *d0, uint64_t *d1, size_t h, uint64_t c)
{
    if (c == 0) {
        for (size_t j = 0; j < h; j++)
            d1[j] ^= d0[j];
        return;
    }
    if (h >= MULC_MIN_H) {
        mulc_tab_t m;
        mulc_build(&m, c);
        for (size_t j = 0; j < h; j++) {
            d1[j] ^= d0[j];
            d0[j] ^= mulc(&m, d1[j]);
        }
        return;
    }
    for (size_t j = 0; j < h; j++) {
        d1[j] ^= d0[j];
        d0[j] ^= gf64_mul_portable(c, d1[j]);
    }
}

#if QPP_HAVE_X86
/* Two GF(2^64) products: lanes of b times lanes of c. */
__attribute__((target("pclmul,sse4.1")))
static inline __m128i gf64_mul2(__m128i b, __m128i c)
{
    __m128i p0 = _mm_clmulepi64_si128(b, c, 0x00);
    __m128i p1 = _mm_clmulepi64_si128(b, c, 0x11);
    __m128i lo = _mm_unpacklo_epi64(p0, p1), hi = _mm_unpackhi_epi64(p0, p1);
    __m128i o = _mm_xor_si128(_mm_xor_si128(_mm_srli_epi64(hi, 63), _mm_srli_epi64(hi, 61)),
                              _mm_srli_epi64(hi, 60));
    hi = _mm_xor_si128(hi, o);
    __m128i r = _mm_xor_si128(lo, hi);
    r = _mm_xor_si128(r, _mm_slli_epi64(hi, 1));
    r = _mm_xor_si128(r, _mm_slli_epi64(hi, 3));
    return _mm_xor_si128(r, _mm_slli_epi64(hi, 4));
}

__attribute__((target("pclmul,sse4.1")))
static void bfly_fwd_pclmul(uint64_t *d0, uint64_t *d1, size_t h, uint64_t c)
{
    if (h < 2 || c == 0) {
        bfly_fwd_portable(d0, d1, h, c);
        return;
    }
    __m128i cc = _mm_set1_epi64x((long long)c);
    for (size_t j = 0; j < h; j += 2) {
        __m128i b = _mm_loadu_si128((const __m128i *)(d1 + j));
        __m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(d0 + j)), gf64_mul2(b, cc));
        _mm_storeu_si128((__m128i *)(d0 + j), a);
        _mm_storeu_si128((__m128i *)(d1 + j), _mm_xor_si128(b, a));
    }
}

__attribute__((target("pclmul,sse4.1")))
static void bfly_inv_pclmul(uint64_t *d0, uint64_t *d1, size_t h, uint64_t c)
{
    if (h < 2 || c == 0) {
        bfly_inv_portable(d0, d1, h, c);
        return;
    }
    __m128i cc = _mm_set1_epi64x((long long)c);
    for (size_t j = 0; j < h; j += 2) {
        __m128i a = _mm_loadu_si128((const __m128i *)(d0 + j));
        __m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(d1 + j)), a);
        _mm_storeu_si128((__m128i *)(d1 + j), b);
        _mm_storeu_si128((__m128i *)(d0 + j), _mm_xor_si128(a, gf64_mul2(b, cc)));
    }
}

/* Level 0 (blocks of 2, a twiddle per block), two blocks per step. */
__attribute__((target("pclmul,sse4.1")))
static void level0_fwd_pclmul(uint64_t *d, size_t n, size_t g0, const plan_t *pl)
{
    for (size_t i = 0; i < n; i += 4) {
        size_t g = g0 + i / 2;
        __m128i x = _mm_loadu_si128((const __m128i *)(d + i));     /* d0[g], d1[g] */
        __m128i y = _mm_loadu_si128((const __m128i *)(d + i + 2)); /* d0[g+1], d1[g+1] */
        __m128i a = _mm_unpacklo_epi64(x, y), b = _mm_unpackhi_epi64(x, y);
        __m128i cc = _mm_set_epi64x((long long)twiddle(pl, g + 1), (long long)twiddle(pl, g));
        a = _mm_xor_si128(a, gf64_mul2(b, cc));
        b = _mm_xor_si128(b, a);
        _mm_storeu_si128((__m128i *)(d + i), _mm_unpacklo_epi64(a, b));
        _mm_storeu_si128((__m128i *)(d + i + 2), _mm_unpackhi_epi64(a, b));
    }
}

__attribute__((target("pclmul,sse4.1")))
static void level0_inv_pclmul(uint64_t *d, size_t n, size_t g0, const plan_t *pl)
{
    for (size_t i = 0; i < n; i += 4) {
        size_t g = g0 + i / 2;
        __m128i x = _mm_loadu_si128((const __m128i *)(d + i));
        __m128i y = _mm_loadu_si128((const __m128i *)(d + i + 2));
        __m128i a = _mm_unpacklo_epi64(x, y), b = _mm_unpackhi_epi64(x, y);
        __m128i cc = _mm_set_epi64x((long long)twiddle(pl, g + 1), (long long)twiddle(pl, g));
        b = _mm_xor_si128(b, a);
        a = _mm_xor_si128(a, gf64_mul2(b, cc));
        _mm_storeu_si128((__m128i *)(d + i), _mm_unpacklo_epi64(a, b));
        _mm_storeu_si128((__m128i *)(d + i + 2), _mm_unpackhi_epi64(a, b));
    }
}

__attribute__((target("pclmul,sse4.1")))
static void pointwise_pclmul(uint64_t *acc, const uint64_t *a, const uint64_t *b, size_t n, int add)
{
    for (size_t i = 0; i < n; i += 2) {
        __m128i x = _mm_loadu_si128((const __m128i *)(a + i));
        __m128i y = _mm_loadu_si128((const __m128i *)(b + i));
        __m128i p = gf64_mul2(x, y);
        if (add)
            p = _mm_xor_si128(p, _mm_loadu_si128((const __m128i *)(acc + i)));
        _mm_storeu_si128((__m128i *)(acc + i), p);
    }
}

/* AVX-512 + VPCLMULQDQ: eight GF(2^64) products per step (4 per clmul instruction). */
#define QPP_AVX512_TARGET __attribute__((target("avx512f,avx512vl,avx512bw,vpclmulqdq,pclmul")))

QPP_AVX512_TARGET
static inline __m512i gf64_mul8(__m512i b, __m512i c)
{
    __m512i p0 = _mm512_clmulepi64_epi128(b, c, 0x00);
    __m512i p1 = _mm512_clmulepi64_epi128(b, c, 0x11);
    __m512i lo = _mm512_unpacklo_epi64(p0, p1), hi = _mm512_unpackhi_epi64(p0, p1);
    __m512i o = _mm512_ternarylogic_epi64(_mm512_srli_epi64(hi, 63), _mm512_srli_epi64(hi, 61),
                                          _mm512_srli_epi64(hi, 60), 0x96);
    hi = _mm512_xor_si512(hi, o);
    __m512i r = _mm512_ternarylogic_epi64(lo, hi, _mm512_slli_epi64(hi, 1), 0x96);
    return _mm512_ternarylogic_epi64(r, _mm512_slli_epi64(hi, 3), _mm512_slli_epi64(hi, 4), 0x96);
}

QPP_AVX512_TARGET
static void bfly_fwd_avx512(uint64_t *d0, uint64_t *d1, size_t h, uint64_t c)
{
    if (h < 8 || c == 0) {
        bfly_fwd_pclmul(d0, d1, h, c);
        return;
    }
    __m512i cc = _mm512_set1_epi64((long long)c);
    for (size_t j = 0; j < h; j += 8) {
        __m512i b = _mm512_loadu_si512(d1 + j);
        __m512i a = _mm512_xor_si512(_mm512_loadu_si512(d0 + j), gf64_mul8(b, cc));
        _mm512_storeu_si512(d0 + j, a);
        _mm512_storeu_si512(d1 + j, _mm512_xor_si512(b, a));
    }
}

QPP_AVX512_TARGET
static void bfly_inv_avx512(uint64_t *d0, uint64_t *d1, size_t h, uint64_t c)
{
    if (h < 8 || c == 0) {
        bfly_inv_pclmul(d0, d1, h, c);
        return;
    }
    __m512i cc = _mm512_set1_epi64((long long)c);
    for (size_t j = 0; j < h; j += 8) {
        __m512i a = _mm512_loadu_si512(d0 + j);
        __m512i b = _mm512_xor_si512(_mm512_loadu_si512(d1 + j), a);
        _mm512_storeu_si512(d1 + j, b);
        _mm512_storeu_si512(d0 + j, _mm512_xor_si512(a, gf64_mul8(b, cc)));
    }
}

QPP_AVX512_TARGET
static void pointwise_avx512(uint64_t *acc, const uint64_t *a, const uint64_t *b, size_t n, int add)
{
    if (n < 8) {
        pointwise_pclmul(acc, a, b, n, add);
        return;
    }
    for (size_t i = 0; i < n; i += 8) {
        __m512i p = gf64_mul8(_mm512_loadu_si512(a + i), _mm512_loadu_si512(b + i));
        if (add)
            p = _mm512_xor_si512(p, _mm512_loadu_si512(acc + i));
        _mm512_storeu_si512(acc + i, p);
    }
}


/* Levels 2, 1, 0 (h = 4, 2, 1) fused, on groups of 16 values held in two
 * registers: per level, the 8 "upper" operands of the butterflies are gathered
 * into A and their partners (index + h) into B with one permute each. */
typedef struct {
    __m512i ia[3], ib[3], wx[3], wy[3];
} low3_perm_t;

QPP_AVX512_TARGET
static void low3_perm_init(low3_perm_t *pm)
{
    for (unsigned lv = 0; lv < 3; lv++) {
        unsigned h = 1u << lv, alist[8], pos[16];
        long long ia[8], ib[8], wx[8], wy[8];
        unsigned m = 0;
        for (unsigned e = 0; e < 16; e++)
            if ((e & h) == 0) {
                pos[e] = m;
                alist[m++] = e;
            }
        for (unsigned i = 0; i < 8; i++) {
            ia[i] = alist[i];
            ib[i] = alist[i] + h;
        }
        for (unsigned e = 0; e < 16; e++) {
            long long v = (e & h) == 0 ? (long long)pos[e] : 8 + (long long)pos[e - h];
            if (e < 8)
                wx[e] = v;
            else
                wy[e - 8] = v;
        }
        pm->ia[lv] = _mm512_loadu_si512(ia);
        pm->ib[lv] = _mm512_loadu_si512(ib);
        pm->wx[lv] = _mm512_loadu_si512(wx);
        pm->wy[lv] = _mm512_loadu_si512(wy);
    }
}

/* Twiddles of the 8 butterflies at level lv in the group at global point P. */
QPP_AVX512_TARGET
static inline __m512i low3_twiddles(const plan_t *pl, size_t P, unsigned lv)
{
    if (lv == 0) {
        size_t g0 = P >> 1; /* multiple of 8, so the 8 table entries are contiguous */
        return _mm512_xor_si512(_mm512_loadu_si512(pl->tlo + (g0 & 1023)),
                                _mm512_set1_epi64((long long)pl->thi[g0 >> 10]));
    }
    if (lv == 1) {
        size_t g0 = P >> 2;
        long long t0 = (long long)twiddle(pl, g0), t1 = (long long)twiddle(pl, g0 + 1);
        long long t2 = (long long)twiddle(pl, g0 + 2), t3 = (long long)twiddle(pl, g0 + 3);
        return _mm512_set_epi64(t3, t3, t2, t2, t1, t1, t0, t0);
    }
    size_t g0 = P >> 3;
    long long t0 = (long long)twiddle(pl, g0), t1 = (long long)twiddle(pl, g0 + 1);
    return _mm512_set_epi64(t1, t1, t1, t1, t0, t0, t0, t0);
}

QPP_AVX512_TARGET
static void low3_fwd_avx512(uint64_t *d, size_t n, size_t p, const plan_t *pl)
{
    low3_perm_t pm;
    low3_perm_init(&pm);
    for (size_t q = 0; q < n; q += 16) {
        __m512i x = _mm512_loadu_si512(d + q), y = _mm512_loadu_si512(d + q + 8);
        for (int lv = 2; lv >= 0; lv--) {
            __m512i a = _mm512_permutex2var_epi64(x, pm.ia[lv], y);
            __m512i b = _mm512_permutex2var_epi64(x, pm.ib[lv], y);
            a = _mm512_xor_si512(a, gf64_mul8(b, low3_twiddles(pl, p + q, (unsigned)lv)));
            b = _mm512_xor_si512(b, a);
            x = _mm512_permutex2var_epi64(a, pm.wx[lv], b);
            y = _mm512_permutex2var_epi64(a, pm.wy[lv], b);
        }
        _mm512_storeu_si512(d + q, x);
        _mm512_storeu_si512(d + q + 8, y);
    }
}

QPP_AVX512_TARGET
static void low3_inv_avx512(uint64_t *d, size_t n, size_t p, const plan_t *pl)
{
    low3_perm_t pm;
    low3_perm_init(&pm);
    for (size_t q = 0; q < n; q += 16) {
        __m512i x = _mm512_loadu_si512(d + q), y = _mm512_loadu_si512(d + q + 8);
        for (unsigned lv = 0; lv < 3; lv++) {
            __m512i a = _mm512_permutex2var_epi64(x, pm.ia[lv], y);
            __m512i b = _mm512_permutex2var_epi64(x, pm.ib[lv], y);
            b = _mm512_xor_si512(b, a);
            a = _mm512_xor_si512(a, gf64_mul8(b, low3_twiddles(pl, p + q, lv)));
            x = _mm512_permutex2var_epi64(a, pm.wx[lv], b);
            y = _mm512_permutex2var_epi64(a, pm.wy[lv], b);
        }
        _mm512_storeu_si512(d + q, x);
        _mm512_storeu_si512(d + q + 8, y);
    }
}

static int have_avx512_clmul(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("vpclmulqdq");
}
#endif

/* fast: 0 portable, 1 PCLMULQDQ (SSE), 2 AVX-512 VPCLMULQDQ. */
int qpp_toeplitz_afft_kernel(int fast)
{
#if QPP_HAVE_X86
    /* AVX-512 kernels only when the AVX2 paths are enabled too (qpp_cpu_disable). */
    if (fast && (qpp_cpu_features() & QPP_CPU_AVX2) && have_avx512_clmul())
        return 2;
#endif
    return fast ? 1 : 0;
}

static void bfly_fwd(uint64_t *d0, uint64_t *d1, size_t h, uint64_t c, int fast)
{
#if QPP_HAVE_X86
    if (fast == 2) { bfly_fwd_avx512(d0, d1, h, c); return; }
    if (fast) { bfly_fwd_pclmul(d0, d1, h, c); return; }
#endif
    (void)fast;
    bfly_fwd_portable(d0, d1, h, c);
}

static void bfly_inv(uint64_t *d0, uint64_t *d1, size_t h, uint64_t c, int fast)
{
#if QPP_HAVE_X86
    if (fast == 2) { bfly_inv_avx512(d0, d1, h, c); return; }
    if (fast) { bfly_inv_pclmul(d0, d1, h, c); return; }
#endif
    (void)fast;
    bfly_inv_portable(d0, d1, h, c);
}

/* ---- FFT over a block -------------------------------------------------- */

/* A block of 2^(r+1) values starting at global point index p; levels r .. 0. */
enum { ITER_LOG = 12 }; /* blocks of <= 2^12 words (32 KiB) run level by level in cache */

static void fft_block(uint64_t *d, size_t p, unsigned r, const plan_t *pl, int fast)
{
    size_t n = (size_t)2 << r;
    if (r + 1 > ITER_LOG) {
        size_t h = n / 2;
        bfly_fwd(d, d + h, h, twiddle(pl, p >> (r + 1)), fast);
        fft_block(d, p, r - 1, pl, fast);
        fft_block(d + h, p + h, r - 1, pl, fast);
        return;
    }
    for (int lv = (int)r; lv >= 0; lv--) {
        size_t h = (size_t)1 << lv;
#if QPP_HAVE_X86
        if (fast == 2 && lv == 2 && n >= 16) {
            low3_fwd_avx512(d, n, p, pl);
            break;
        }
        if (fast && lv == 0 && n >= 4) {
            level0_fwd_pclmul(d, n, p >> 1, pl);
            continue;
        }
#endif
        for (size_t q = 0; q < n; q += 2 * h)
            bfly_fwd(d + q, d + q + h, h, twiddle(pl, (p + q) >> (lv + 1)), fast);
    }
}

static void ifft_block(uint64_t *d, size_t p, unsigned r, const plan_t *pl, int fast)
{
    size_t n = (size_t)2 << r;
    if (r + 1 > ITER_LOG) {
        size_t h = n / 2;
        ifft_block(d, p, r - 1, pl, fast);
        ifft_block(d + h, p + h, r - 1, pl, fast);
        bfly_inv(d, d + h, h, twiddle(pl, p >> (r + 1)), fast);
        return;
    }
    unsigned lv0 = 0;
#if QPP_HAVE_X86
    if (fast == 2 && r >= 2 && n >= 16) {
        low3_inv_avx512(d, n, p, pl);
        lv0 = 3;
    }
#endif
    for (unsigned lv = lv0; lv <= r; lv++) {
        size_t h = (size_t)1 << lv;
#if QPP_HAVE_X86
        if (fast && lv == 0 && n >= 4) {
            level0_inv_pclmul(d, n, p >> 1, pl);
            continue;
        }
#endif
        for (size_t q = 0; q < n; q += 2 * h)
            bfly_inv(d + q, d + q + h, h, twiddle(pl, (p + q) >> (lv + 1)), fast);
    }
}

/* ---- basis conversion (monomial <-> novel), XORs only ------------------- */

#define QPP_INLINE static inline __attribute__((always_inline))

/* Offsets 2^t of the lower terms of s_r(y) = y^h + sum_{t proper subset of r} y^(2^t). */
QPP_INLINE unsigned sr_terms(unsigned r, size_t *offs)
{
    unsigned nt = 0;
    for (unsigned t = 0; t < r; t++)
        if ((t & ~r) == 0)
            offs[nt++] = (size_t)1 << t;
    return nt;
}

/* One division step on a block of 2h = 2^(r+1) values: d = d0 + s_r(y) d1 (in place,
 * quotient into the top half). Sequentially it is: for i = 2h-1 down to h,
 * d[i - h + 2^t] ^= d[i] for every lower term. Every write lands at least
 * c = h - max(2^t) >= h/2 below its source, so chunks of c sources (taken from
 * the top) are free of hazards and each term is one vectorisable XOR stream. */
QPP_INLINE void div_step_top(uint64_t *d, unsigned r, size_t top)
{
    size_t h = (size_t)1 << r, offs[32];
    unsigned nt = sr_terms(r, offs);
    if (nt == 0)
        return;
    size_t c = h - offs[nt - 1];
    for (size_t hi = top; hi > h;) {
        size_t lo = hi - c < h ? h : hi - c;
        for (unsigned u = 0; u < nt; u++) {
            uint64_t *dst = d + offs[u] - h;
            for (size_t i = lo; i < hi; i++)
                dst[i] ^= d[i];
        }
        hi = lo;
    }
}

QPP_INLINE void div_step(uint64_t *d, unsigned r) { div_step_top(d, r, (size_t)2 << r); }

/* Inverse of div_step: d = d0 + s_r(y) d1 multiplied out; chunks from the bottom. */
QPP_INLINE void mul_step(uint64_t *d, unsigned r)
{
    size_t h = (size_t)1 << r, offs[32];
    unsigned nt = sr_terms(r, offs);
    if (nt == 0)
        return;
    size_t c = h - offs[nt - 1];
    for (size_t lo = h; lo < 2 * h;) {
        size_t hi = lo + c > 2 * h ? 2 * h : lo + c;
        for (unsigned u = 0; u < nt; u++) {
            uint64_t *dst = d + offs[u] - h;
            for (size_t i = lo; i < hi; i++)
                dst[i] ^= d[i];
        }
        lo = hi;
    }
}

/* All division steps of levels r .. 1 over a block of 2^(r+1) values (parents
 * first); levels 1-4 are unrolled with constant offsets. */
QPP_INLINE void to_novel_levels(uint64_t *d, unsigned r)
{
    size_t n = (size_t)2 << r;
    for (unsigned lv = r; lv >= 1; lv--) {
        switch (lv) {
        case 1: for (size_t q = 0; q < n; q += 4) div_step(d + q, 1); break;
        case 2: for (size_t q = 0; q < n; q += 8) div_step(d + q, 2); break;
        case 3: for (size_t q = 0; q < n; q += 16) div_step(d + q, 3); break;
        case 4: for (size_t q = 0; q < n; q += 32) div_step(d + q, 4); break;
        default: for (size_t q = 0; q < n; q += (size_t)2 << lv) div_step(d + q, lv); break;
        }
    }
}

QPP_INLINE void from_novel_levels(uint64_t *d, unsigned r)
{
    size_t n = (size_t)2 << r;
    for (unsigned lv = 1; lv <= r; lv++) {
        switch (lv) {
        case 1: for (size_t q = 0; q < n; q += 4) mul_step(d + q, 1); break;
        case 2: for (size_t q = 0; q < n; q += 8) mul_step(d + q, 2); break;
        case 3: for (size_t q = 0; q < n; q += 16) mul_step(d + q, 3); break;
        case 4: for (size_t q = 0; q < n; q += 32) mul_step(d + q, 4); break;
        default: for (size_t q = 0; q < n; q += (size_t)2 << lv) mul_step(d + q, lv); break;
        }
    }
}

/* The same code compiled twice: generic x86-64/arm64, and for AVX-512 (wider XORs). */
static void div_step_gen(uint64_t *d, unsigned r, size_t top) { div_step_top(d, r, top); }
static void mul_step_gen(uint64_t *d, unsigned r) { mul_step(d, r); }
static void to_novel_levels_gen(uint64_t *d, unsigned r) { to_novel_levels(d, r); }
static void from_novel_levels_gen(uint64_t *d, unsigned r) { from_novel_levels(d, r); }
#if QPP_HAVE_X86
/* AVX-512 division / multiplication steps for h >= 16: chunks are cut to
 * multiples of 8 words, one XOR stream per term (fusing the terms per source
 * vector was slower: overlapping misaligned stores defeat store forwarding). */
/* All blocks of 2^(r+1) words in d[0 .. n), r >= 4 (h >= 16); in each block only
 * the first `top` words may be nonzero (rounded up to 8: XORing zeros is harmless). */
QPP_AVX512_TARGET static void div_blocks_512(uint64_t *d, size_t n, unsigned r, size_t top)
{
    size_t h = (size_t)1 << r, offs[32];
    unsigned nt = sr_terms(r, offs);
    if (nt == 0)
        return;
    size_t c = (h - offs[nt - 1]) & ~(size_t)7;
    top = (top + 7) & ~(size_t)7;
    for (size_t q = 0; q < n; q += 2 * h) {
        uint64_t *b = d + q;
        for (size_t hi = top; hi > h;) {
            size_t lo = hi - c < h ? h : hi - c;
            for (unsigned u = 0; u < nt; u++) {
                uint64_t *dst = b + offs[u] - h;
                for (size_t i = lo; i < hi; i += 8)
                    _mm512_storeu_si512(dst + i, _mm512_xor_si512(_mm512_loadu_si512(dst + i),
                                                                  _mm512_loadu_si512(b + i)));
            }
            hi = lo;
        }
    }
}

QPP_AVX512_TARGET static void mul_blocks_512(uint64_t *d, size_t n, unsigned r)
{
    size_t h = (size_t)1 << r, offs[32];
    unsigned nt = sr_terms(r, offs);
    if (nt == 0)
        return;
    size_t c = (h - offs[nt - 1]) & ~(size_t)7;
    for (size_t q = 0; q < n; q += 2 * h) {
        uint64_t *b = d + q;
        for (size_t lo = h; lo < 2 * h;) {
            size_t hi = lo + c > 2 * h ? 2 * h : lo + c;
            for (unsigned u = 0; u < nt; u++) {
                uint64_t *dst = b + offs[u] - h;
                for (size_t i = lo; i < hi; i += 8)
                    _mm512_storeu_si512(dst + i, _mm512_xor_si512(_mm512_loadu_si512(dst + i),
                                                                  _mm512_loadu_si512(b + i)));
            }
            lo = hi;
        }
    }
}

QPP_AVX512_TARGET static void div_step_512(uint64_t *d, unsigned r, size_t top)
{
    if (r < 4)
        div_step_top(d, r, top);
    else
        div_blocks_512(d, (size_t)2 << r, r, top);
}

QPP_AVX512_TARGET static void mul_step_512(uint64_t *d, unsigned r)
{
    if (r < 4)
        mul_step(d, r);
    else
        mul_blocks_512(d, (size_t)2 << r, r);
}

/* Levels 3..1 of a conversion act on each group of 16 values as one fixed 0/1
 * matrix. Its columns come from running the scalar steps on the 16 unit
 * "vectors" 1 << j (bit j of output i says whether input j is XORed into it);
 * then every group is 16 broadcasts and 32 masked XORs, instead of the scalar
 * chains of dependent XORs (several times slower). */
typedef struct {
    __mmask8 mx[16], my[16];
} lin16_t;

static void lin16_init(lin16_t *m, int inverse)
{
    uint64_t v[16];
    for (unsigned j = 0; j < 16; j++)
        v[j] = UINT64_C(1) << j;
    if (inverse)
        from_novel_levels(v, 3);
    else
        to_novel_levels(v, 3);
    for (unsigned j = 0; j < 16; j++) {
        unsigned x = 0, y = 0;
        for (unsigned i = 0; i < 8; i++) {
            x |= (unsigned)((v[i] >> j) & 1) << i;
            y |= (unsigned)((v[8 + i] >> j) & 1) << i;
        }
        m->mx[j] = (__mmask8)x;
        m->my[j] = (__mmask8)y;
    }
}

QPP_AVX512_TARGET static void lin16_apply(uint64_t *d, size_t n, const lin16_t *m)
{
    for (size_t q = 0; q < n; q += 16) {
        __m512i x = _mm512_setzero_si512(), y = _mm512_setzero_si512();
        for (unsigned j = 0; j < 16; j++) {
            __m512i b = _mm512_set1_epi64((long long)d[q + j]);
            x = _mm512_mask_xor_epi64(x, m->mx[j], x, b);
            y = _mm512_mask_xor_epi64(y, m->my[j], y, b);
        }
        _mm512_storeu_si512(d + q, x);
        _mm512_storeu_si512(d + q + 8, y);
    }
}

QPP_AVX512_TARGET static void to_novel_levels_512(uint64_t *d, unsigned r)
{
    if (r < 4) {
        to_novel_levels(d, r);
        return;
    }
    size_t n = (size_t)2 << r;
    for (unsigned lv = r; lv >= 4; lv--)
        div_blocks_512(d, n, lv, (size_t)2 << lv);
    lin16_t m;
    lin16_init(&m, 0);
    lin16_apply(d, n, &m);
}

QPP_AVX512_TARGET static void from_novel_levels_512(uint64_t *d, unsigned r)
{
    if (r < 4) {
        from_novel_levels(d, r);
        return;
    }
    size_t n = (size_t)2 << r;
    lin16_t m;
    lin16_init(&m, 1);
    lin16_apply(d, n, &m);
    for (unsigned lv = 4; lv <= r; lv++)
        mul_blocks_512(d, n, lv);
}
#define CONV_PICK(name, fast) ((fast) == 2 ? name##_512 : name##_gen)
#else
#define CONV_PICK(name, fast) name##_gen
#endif

enum { CONV_ITER_LOG = 13 }; /* blocks of <= 2^13 words convert level by level in cache */

/* Monomial -> novel basis for 2^(r+1) coefficients of which only the first
 * `support` may be nonzero: divide by s_r, then convert both halves. The
 * quotient has support - h nonzero words, so zero tails are never touched;
 * full blocks of <= 2^CONV_ITER_LOG words go level by level in cache. */
static void to_novel(uint64_t *d, unsigned r, size_t support, int fast)
{
    size_t h = (size_t)1 << r;
    if (support == 0)
        return;
    if (support <= h) {
        if (r > 0)
            to_novel(d, r - 1, support, fast);
        return;
    }
    if (r + 1 > CONV_ITER_LOG || support < 2 * h) {
        CONV_PICK(div_step, fast)(d, r, support);
        if (r > 0) {
            to_novel(d, r - 1, h, fast);
            to_novel(d + h, r - 1, support - h, fast);
        }
        return;
    }
    CONV_PICK(to_novel_levels, fast)(d, r);
}

static void from_novel(uint64_t *d, unsigned r, int fast)
{
    size_t h = (size_t)1 << r;
    if (r + 1 > CONV_ITER_LOG) {
        from_novel(d, r - 1, fast);
        from_novel(d + h, r - 1, fast);
        CONV_PICK(mul_step, fast)(d, r);
        return;
    }
    CONV_PICK(from_novel_levels, fast)(d, r);
}

/* ---- driver ------------------------------------------------------------ */

/* Working arrays: 2 MiB aligned and marked for transparent huge pages, since
 * first-touch page faults cost as much as a transform pass at 10^8 bits. */
static uint64_t *work_alloc(size_t words)
{
    size_t bytes = words * sizeof(uint64_t);
    void *p = NULL;
    if (bytes >= ((size_t)1 << 21)) {
        bytes = (bytes + ((size_t)1 << 21) - 1) & ~(((size_t)1 << 21) - 1);
        if (posix_memalign(&p, (size_t)1 << 21, bytes) != 0)
            return NULL;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
        (void)madvise(p, bytes, MADV_HUGEPAGE);
#endif
        return p;
    }
    return malloc(bytes ? bytes : 8);
}

/* Bits [pos, pos + 64) of the nbits-bit polynomial src; bits outside [0, nbits) read as 0. */
static uint64_t get64(const uint64_t *src, size_t nbits, int64_t pos)
{
    if (pos >= (int64_t)nbits || pos <= -64)
        return 0;
    uint64_t v;
    if (pos < 0) {
        v = get64(src, nbits, 0) << (unsigned)(-pos);
    } else {
        size_t w = (size_t)pos / 64;
        unsigned sh = (unsigned)((size_t)pos % 64);
        v = src[w] >> sh;
        if (sh && (w + 1) * 64 < nbits)
            v |= src[w + 1] << (64 - sh);
    }
    if (pos + 64 > (int64_t)nbits)
        v &= (UINT64_C(1) << (unsigned)((int64_t)nbits - pos)) - 1;
    return v;
}

/* dst[0 .. n) = 32-bit pieces of bits [start, start + len) of src (nbits bits), zero-padded. */
static void load_pieces(uint64_t *dst, size_t n, const uint64_t *src, size_t nbits, int64_t start,
                        size_t len)
{
    size_t nw = (len + 63) / 64;
    for (size_t w = 0; w < nw; w++) {
        uint64_t v = get64(src, nbits, start + (int64_t)(64 * w));
        if (w == nw - 1 && len % 64)
            v &= (UINT64_C(1) << (len % 64)) - 1;
        dst[2 * w] = v & 0xffffffffu;
        dst[2 * w + 1] = v >> 32;
    }
    memset(dst + 2 * nw, 0, (n - 2 * nw) * sizeof *dst);
}

static unsigned log2_ceil(size_t x)
{
    unsigned k = 0;
    while (((size_t)1 << k) < x)
        k++;
    return k;
}

/* Transform size for key blocks of L bits: pieces of the seed segment (L + n_out - 1
 * bits) plus pieces of the key block, rounded to even piece counts. */
static unsigned afft_log_size(size_t L, size_t n_out)
{
    size_t ps = 2 * ((L + n_out - 1 + 63) / 64), pk = 2 * ((L + 63) / 64);
    unsigned k = log2_ceil(ps + pk - 1);
    return k < 2 ? 2 : k;
}

enum { MAX_BLOCKS = 8 };

/* Key blocks that minimise the work: with b blocks there are 2b + 1 transforms of
 * size 2^k(b), each ~ (k + 3) 2^k steps (butterflies plus basis conversion). */
static unsigned afft_blocks(size_t n_in, size_t n_out)
{
    unsigned best = 1;
    double best_cost = 0;
    for (unsigned b = 1; b <= MAX_BLOCKS && b <= n_in; b++) {
        size_t L = (n_in + b - 1) / b;
        unsigned k = afft_log_size(L, n_out);
        double cost = (2.0 * b + 1) * (double)((size_t)1 << k) * (k + 3);
        if (b == 1 || cost < best_cost) {
            best = b;
            best_cost = cost;
        }
    }
    return best;
}

/* out = bits [n_in - 1, n_in - 1 + n_out) of seed * key, as a sum over key blocks
 * [o, o + L): block products s[sigma .. sigma + L + n_out - 1) * k[o .. o + L) with
 * sigma = n_in - o - L all have the wanted output at bits [L - 1, L - 1 + n_out), so
 * they are summed in the transform domain and inverted once. */
int qpp_toeplitz_afft(const uint64_t *key, size_t n_in, const uint64_t *seed, size_t n_out,
                      uint64_t *out, unsigned blocks, int fast)
{
    if (blocks == 0)
        blocks = afft_blocks(n_in, n_out);
    fast = qpp_toeplitz_afft_kernel(fast);
    if (blocks > n_in)
        return QPP_ERR_LENGTH;
    size_t L = (n_in + blocks - 1) / blocks, n_seed = n_in + n_out - 1;
    unsigned k = afft_log_size(L, n_out);
    if (k > 36)
        return QPP_ERR_LENGTH;
    size_t n = (size_t)1 << k, narr = blocks > 1 ? 3 : 2;
    size_t ps = 2 * ((L + n_out - 1 + 63) / 64), pk = 2 * ((L + 63) / 64);
    plan_t pl;
    pl.thi = NULL;
    uint64_t *work = work_alloc(narr * n);
    int st = QPP_ERR_NOMEM;
    if (!work)
        goto done;
    st = plan_init(&pl, k);
    if (st != QPP_OK)
        goto done;
    uint64_t *A = work, *B = work + n, *acc = blocks > 1 ? work + 2 * n : A;
    for (unsigned bi = 0; bi < blocks && (size_t)bi * L < n_in; bi++) { /* L b may pass n_in */
        size_t o = (size_t)bi * L;
        size_t len = o + L <= n_in ? L : n_in - o;
        int64_t sigma = (int64_t)n_in - (int64_t)o - (int64_t)L;
        load_pieces(A, n, seed, n_seed, sigma, L + n_out - 1);
        load_pieces(B, n, key, n_in, (int64_t)o, len);
        to_novel(A, k - 1, ps, fast);
        to_novel(B, k - 1, pk, fast);
        fft_block(A, 0, k - 1, &pl, fast);
        fft_block(B, 0, k - 1, &pl, fast);
#if QPP_HAVE_X86
        if (fast == 2)
            pointwise_avx512(acc, A, B, n, bi > 0);
        else if (fast)
            pointwise_pclmul(acc, A, B, n, bi > 0);
        else
#endif
        if (bi == 0)
            for (size_t i = 0; i < n; i++)
                acc[i] = gf64_mul_portable(A[i], B[i]);
        else
            for (size_t i = 0; i < n; i++)
                acc[i] ^= gf64_mul_portable(A[i], B[i]);
    }
    ifft_block(acc, 0, k - 1, &pl, fast);
    from_novel(acc, k - 1, fast);
    /* Fold pieces into words: word w = C[2w] ^ C[2w+1] << 32 ^ C[2w-1] >> 32,
     * for the words covering [L - 1, L - 1 + n_out); B is free again. */
    {
        size_t start = L - 1, w0 = start / 64, w1 = (start + n_out) / 64 + 1;
        if (w1 > n / 2)
            w1 = n / 2;
        for (size_t w = w0; w < w1; w++) {
            uint64_t v = acc[2 * w] ^ (acc[2 * w + 1] << 32);
            if (w > 0)
                v ^= acc[2 * w - 1] >> 32;
            B[w - w0] = v;
        }
        qpp_gf2x_extract(out, B, w1 - w0, start % 64, n_out);
    }
    st = QPP_OK;
done:
    /* The arrays held key pieces, their transforms and the output: wipe them. */
    if (work)
        qpp_gf2x_wipe(work, narr * n * sizeof *work);
    free(work);
    free(pl.thi);
    return st;
}

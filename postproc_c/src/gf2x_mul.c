/* Carry-less (GF(2)[x]) multiplication of word arrays: a PCLMULQDQ or portable
 * 64x64 base, schoolbook up to KARA_BASE words, Karatsuba above
 * (Karatsuba & Ofman 1962; the word-level layout follows Brent, Gaudry, Thome,
 * Zimmermann, "Faster multiplication in GF(2)[x]", ANTS 2008, sec. 2).
 * Used by the Toeplitz hash for small and medium sizes; toeplitz_afft.c takes
 * over above the measured crossover. No global state; reentrant.
 */
#include <stdlib.h>
#include <string.h>

#include "qpp_common.h"
#include "gf2x_internal.h"

#if defined(__GNUC__) && defined(__x86_64__)
#define QPP_HAVE_X86 1
#include <immintrin.h>
#else
#define QPP_HAVE_X86 0
#endif

enum { KARA_BASE = 12 };

/* Kept as the name the Toeplitz code calls; the wipe itself is qpp_memzero
 * (common.c), which the compiler cannot drop before free(). */
void qpp_gf2x_wipe(void *p, size_t bytes)
{
    qpp_memzero(p, bytes);
}

void qpp_clmul64_portable(uint64_t a, uint64_t b, uint64_t *lo, uint64_t *hi)
{
    /* 4-bit windows of b; the table holds a*u for u < 16 as 67-bit values. */
    uint64_t tl[16], th[16];
    tl[0] = 0; th[0] = 0;
    tl[1] = a; th[1] = 0;
    for (int u = 2; u < 16; u += 2) {
        tl[u] = tl[u >> 1] << 1;
        th[u] = (th[u >> 1] << 1) | (tl[u >> 1] >> 63);
        tl[u + 1] = tl[u] ^ a;
        th[u + 1] = th[u];
    }
    uint64_t rl = 0, rh = 0;
    for (int s = 60; s >= 0; s -= 4) {
        /* r = r * x^4 + a * window */
        rh = (rh << 4) | (rl >> 60);
        rl <<= 4;
        unsigned w = (unsigned)(b >> s) & 15u;
        rl ^= tl[w];
        rh ^= th[w];
    }
    *lo = rl;
    *hi = rh;
}

static void base_portable(uint64_t *c, const uint64_t *a, const uint64_t *b, size_t n)
{
    memset(c, 0, 2 * n * sizeof *c);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            uint64_t lo, hi;
            qpp_clmul64_portable(a[i], b[j], &lo, &hi);
            c[i + j] ^= lo;
            c[i + j + 1] ^= hi;
        }
}

#if QPP_HAVE_X86
__attribute__((target("pclmul,sse4.1")))
static void base_pclmul(uint64_t *c, const uint64_t *a, const uint64_t *b, size_t n)
{
    /* Row by row: acc[i + j] collects a[i] * b[j] as 128-bit values at odd/even
     * word offsets kept in two accumulators per output pair. */
    __m128i acc[2 * KARA_BASE + 1];
    for (size_t i = 0; i < 2 * n + 1; i++)
        acc[i] = _mm_setzero_si128();
    for (size_t i = 0; i < n; i++) {
        __m128i ai = _mm_cvtsi64_si128((long long)a[i]);
        for (size_t j = 0; j < n; j++) {
            __m128i bj = _mm_cvtsi64_si128((long long)b[j]);
            acc[i + j] = _mm_xor_si128(acc[i + j], _mm_clmulepi64_si128(ai, bj, 0x00));
        }
    }
    /* acc[m] is a 128-bit value at word offset m. */
    uint64_t carry = 0;
    for (size_t m = 0; m < 2 * n; m++) {
        uint64_t lo = (uint64_t)_mm_cvtsi128_si64(acc[m]);
        uint64_t hi = (uint64_t)_mm_extract_epi64(acc[m], 1);
        c[m] = lo ^ carry;
        carry = hi;
    }
}
#endif

static void base_mul(uint64_t *c, const uint64_t *a, const uint64_t *b, size_t n, int fast)
{
#if QPP_HAVE_X86
    if (fast) {
        base_pclmul(c, a, b, n);
        return;
    }
#endif
    (void)fast;
    base_portable(c, a, b, n);
}

/* c[0 .. 2n) = a * b, both n words; t: scratch of kara_scratch(n) words. */
static void kara(uint64_t *c, const uint64_t *a, const uint64_t *b, size_t n, uint64_t *t, int fast)
{
    if (n <= KARA_BASE) {
        base_mul(c, a, b, n, fast);
        return;
    }
    size_t h = (n + 1) / 2, l = n - h;
    uint64_t *ta = t, *tb = t + h, *tm = t + 2 * h, *rest = t + 4 * h;
    kara(c, a, b, h, rest, fast);                 /* a0 b0 -> c[0, 2h) */
    kara(c + 2 * h, a + h, b + h, l, rest, fast); /* a1 b1 -> c[2h, 2n) */
    for (size_t i = 0; i < l; i++) {
        ta[i] = a[i] ^ a[h + i];
        tb[i] = b[i] ^ b[h + i];
    }
    for (size_t i = l; i < h; i++) {
        ta[i] = a[i];
        tb[i] = b[i];
    }
    kara(tm, ta, tb, h, rest, fast);              /* (a0 + a1)(b0 + b1) */
    for (size_t i = 0; i < 2 * h; i++)
        tm[i] ^= c[i];
    for (size_t i = 0; i < 2 * l; i++)
        tm[i] ^= c[2 * h + i];
    for (size_t i = 0; i < 2 * h; i++)
        c[h + i] ^= tm[i];                        /* middle term at x^(64h) */
}

static size_t kara_scratch(size_t n)
{
    size_t s = 0;
    while (n > KARA_BASE) {
        size_t h = (n + 1) / 2;
        s += 4 * h;
        n = h;
    }
    return s;
}

size_t qpp_gf2x_mul_scratch_words(size_t na, size_t nb)
{
    size_t m = na < nb ? na : nb;
    return 4 * m + kara_scratch(m) + 16;
}

void qpp_gf2x_mul(uint64_t *c, const uint64_t *a, size_t na, const uint64_t *b, size_t nb,
                  uint64_t *scratch, int fast)
{
    if (na < nb) {
        const uint64_t *t = a; a = b; b = t;
        size_t tn = na; na = nb; nb = tn;
    }
    if (nb == 0) {
        memset(c, 0, na * sizeof *c);
        return;
    }
    if (na == nb) {
        kara(c, a, b, na, scratch, fast);
        return;
    }
    /* Unbalanced: slices of a as long as b, then the short remainder. */
    uint64_t *tmp = scratch, *rest = scratch + 2 * nb;
    memset(c, 0, (na + nb) * sizeof *c);
    size_t off = 0;
    for (; off + nb <= na; off += nb) {
        kara(tmp, a + off, b, nb, rest, fast);
        for (size_t i = 0; i < 2 * nb; i++)
            c[off + i] ^= tmp[i];
    }
    size_t r = na - off;
    if (r) {
        qpp_gf2x_mul(tmp, b, nb, a + off, r, rest, fast);
        for (size_t i = 0; i < nb + r; i++)
            c[off + i] ^= tmp[i];
    }
}

void qpp_gf2x_extract(uint64_t *out, const uint64_t *p, size_t np, size_t start, size_t nbits)
{
    size_t nw = (nbits + 63) / 64, w0 = start / 64;
    unsigned sh = (unsigned)(start % 64);
    for (size_t q = 0; q < nw; q++) {
        size_t w = w0 + q;
        uint64_t lo = w < np ? p[w] : 0;
        uint64_t hi = w + 1 < np ? p[w + 1] : 0;
        out[q] = sh ? (lo >> sh) | (hi << (64 - sh)) : lo;
    }
    if (nbits % 64)
        out[nw - 1] &= (UINT64_C(1) << (nbits % 64)) - 1;
}

/* Copy the low nbits bits of src into a fresh buffer of words_for(nbits) words. */
static uint64_t *masked_copy(const uint64_t *src, size_t nbits)
{
    size_t nw = (nbits + 63) / 64;
    uint64_t *d = malloc(nw * sizeof *d);
    if (!d)
        return NULL;
    memcpy(d, src, nw * sizeof *d);
    if (nbits % 64)
        d[nw - 1] &= (UINT64_C(1) << (nbits % 64)) - 1;
    return d;
}

int qpp_gf2x_kara_mul_range(const uint64_t *a, size_t na_bits, const uint64_t *b, size_t nb_bits,
                            size_t start, size_t nbits, uint64_t *out, int fast)
{
    size_t na = (na_bits + 63) / 64, nb = (nb_bits + 63) / 64;
    uint64_t *ca = masked_copy(a, na_bits), *cb = masked_copy(b, nb_bits);
    uint64_t *p = malloc((na + nb) * sizeof *p);
    uint64_t *s = malloc(qpp_gf2x_mul_scratch_words(na, nb) * sizeof *s);
    int st = QPP_ERR_NOMEM;
    size_t ns = qpp_gf2x_mul_scratch_words(na, nb);
    if (ca && cb && p && s) {
        qpp_gf2x_mul(p, ca, na, cb, nb, s, fast);
        qpp_gf2x_extract(out, p, na + nb, start, nbits);
        st = QPP_OK;
    }
    /* Key bits, the product (the output) and key-derived scratch: wipe before free. */
    if (ca) qpp_gf2x_wipe(ca, na * sizeof *ca);
    if (cb) qpp_gf2x_wipe(cb, nb * sizeof *cb);
    if (p) qpp_gf2x_wipe(p, (na + nb) * sizeof *p);
    if (s) qpp_gf2x_wipe(s, ns * sizeof *s);
    free(ca); free(cb); free(p); free(s);
    return st;
}

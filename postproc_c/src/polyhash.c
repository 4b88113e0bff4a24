/* Polynomial hash over GF(2^64).
 *
 * Field: GF(2)[x] / (x^64 + x^4 + x^3 + x + 1), an irreducible pentanomial
 * (Seroussi, "Table of low-weight binary irreducible polynomials", HP Labs
 * HPL-98-135, 1998: degree 64 -> 4,3,1); an element is a uint64 whose bit j is
 * the coefficient of x^j.
 *
 * Message -> blocks: an n-bit message is L = ceil(n / 64) words m_0 .. m_{L-1}
 * (bit i in bit i % 64 of word i / 64, the unused high bits of m_{L-1} set to
 * zero), followed by one length block m_L = n. Tag, by Horner's rule:
 *     h = 0;  for j = 0 .. L:  h = (h + m_j) * k
 *     tag = sum_{j=0..L} m_j k^{L+1-j}.
 * Two different messages (of any lengths up to n bits) give different
 * polynomials in k of degree <= L + 1 without constant term (the k^1
 * coefficient is the length, so different lengths differ there; equal
 * lengths differ in some m_j), so they collide for at most L + 1 keys:
 * Pr_k[collision] <= (ceil(n/64) + 1) / 2^64 for a uniform key
 * (the polynomial-evaluation hash of Wegman & Carter 1981 / Bierbrauer et al.
 * 1994; same construction as GHASH/POLYVAL, over a 64-bit field).
 *
 * Fast path (x86-64 PCLMULQDQ): 4-way aggregated Horner, i.e. per 4 blocks
 *     h = (h + m_0) k^4 + m_1 k^3 + m_2 k^2 + m_3 k
 * with four unreduced carry-less products XORed and one reduction (as in
 * Gueron & Kounavis, "Intel carry-less multiplication instruction and its
 * usage for computing the GCM mode", 2010, sec. "aggregated reduction").
 * Portable path: a constant-time shift-and-mask multiply (no table indexed by
 * key or message bits, since both are secret). Both give identical tags.
 */
#include <string.h>

#include "qpp_hash.h"

#if defined(__GNUC__) && defined(__x86_64__)
#define QPP_HAVE_X86 1
#include <immintrin.h>
#endif

/* Reduce hi * x^64 + lo modulo x^64 + x^4 + x^3 + x + 1. */
static uint64_t gf64_reduce(uint64_t hi, uint64_t lo)
{
    /* hi * (x^4 + x^3 + x + 1): low 64 bits and the (up to 4) bits above. */
    uint64_t t = hi ^ (hi << 1) ^ (hi << 3) ^ (hi << 4);
    uint64_t o = (hi >> 63) ^ (hi >> 61) ^ (hi >> 60);
    t ^= o ^ (o << 1) ^ (o << 3) ^ (o << 4);   /* o < 16: this fold cannot overflow */
    return lo ^ t;
}

/* Constant-time carry-less multiply and reduce. */
static uint64_t gf64_mul_portable(uint64_t a, uint64_t b)
{
    uint64_t lo = a & ((uint64_t)0 - (b & 1)), hi = 0;
    for (int i = 1; i < 64; i++) {
        uint64_t m = (uint64_t)0 - ((b >> i) & 1);
        lo ^= (a << i) & m;
        hi ^= (a >> (64 - i)) & m;
    }
    return gf64_reduce(hi, lo);
}

uint64_t qpp_gf64_mul(uint64_t a, uint64_t b) { return gf64_mul_portable(a, b); }

static int host_is_le(void)
{
    const uint16_t one = 1;
    unsigned char c;
    memcpy(&c, &one, 1);
    return c == 1;
}

/* Word j of the block stream: native words (bits API) or little-endian bytes. */
static uint64_t load_word(const unsigned char *p, int le_bytes)
{
    uint64_t x;
    if (le_bytes && !host_is_le()) {
        x = 0;
        for (int i = 0; i < 8; i++)
            x |= (uint64_t)p[i] << (8 * i);
        return x;
    }
    memcpy(&x, p, 8);
    return x;
}

static uint64_t horner_portable(uint64_t h, const unsigned char *p, size_t nw, uint64_t k, int le_bytes)
{
    for (size_t j = 0; j < nw; j++)
        h = gf64_mul_portable(h ^ load_word(p + 8 * j, le_bytes), k);
    return h;
}

#ifdef QPP_HAVE_X86
__attribute__((target("pclmul,sse4.1")))
static __m128i clmul_reduce(__m128i prod)
{
    const __m128i poly = _mm_cvtsi64_si128(27);               /* x^4 + x^3 + x + 1 */
    __m128i r = _mm_clmulepi64_si128(prod, poly, 0x01);       /* hi(prod) * poly, <= 68 bits */
    __m128i r2 = _mm_clmulepi64_si128(r, poly, 0x01);         /* hi(r) * poly, < 8 bits */
    return _mm_xor_si128(_mm_xor_si128(prod, r), r2);         /* low 64 bits are the result */
}

__attribute__((target("pclmul,sse4.1")))
static uint64_t gf64_mul_pclmul(uint64_t a, uint64_t b)
{
    __m128i p = _mm_clmulepi64_si128(_mm_cvtsi64_si128((long long)a), _mm_cvtsi64_si128((long long)b), 0x00);
    return (uint64_t)_mm_cvtsi128_si64(clmul_reduce(p));
}

/* x86 is little-endian, so native words and little-endian bytes read alike. */
__attribute__((target("pclmul,sse4.1")))
static uint64_t horner_pclmul(uint64_t h, const unsigned char *p, size_t nw, uint64_t k)
{
    uint64_t k2 = gf64_mul_pclmul(k, k), k3 = gf64_mul_pclmul(k2, k), k4 = gf64_mul_pclmul(k3, k);
    const __m128i k43 = _mm_set_epi64x((long long)k3, (long long)k4);   /* low k^4, high k^3 */
    const __m128i k21 = _mm_set_epi64x((long long)k, (long long)k2);    /* low k^2, high k^1 */
    __m128i hv = _mm_cvtsi64_si128((long long)h);
    size_t j = 0;
    for (; j + 4 <= nw; j += 4) {
        __m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(p + 8 * j)), hv);
        __m128i b = _mm_loadu_si128((const __m128i *)(p + 8 * j + 16));
        __m128i s = _mm_xor_si128(_mm_clmulepi64_si128(a, k43, 0x00), _mm_clmulepi64_si128(a, k43, 0x11));
        s = _mm_xor_si128(s, _mm_clmulepi64_si128(b, k21, 0x00));
        s = _mm_xor_si128(s, _mm_clmulepi64_si128(b, k21, 0x11));
        hv = _mm_move_epi64(clmul_reduce(s));                      /* keep the low word only */
    }
    h = (uint64_t)_mm_cvtsi128_si64(hv);
    for (; j < nw; j++) {
        uint64_t w;
        memcpy(&w, p + 8 * j, 8);
        h = gf64_mul_pclmul(h ^ w, k);
    }
    return h;
}
#endif

static uint64_t horner(uint64_t h, const unsigned char *p, size_t nw, uint64_t k, int le_bytes)
{
#ifdef QPP_HAVE_X86
    if (qpp_cpu_features() & QPP_CPU_PCLMUL)
        return horner_pclmul(h, p, nw, k);
#endif
    return horner_portable(h, p, nw, k, le_bytes);
}

/* The last (masked) block and the length block, through the same path. */
static uint64_t finish(uint64_t h, uint64_t last, int have_last, uint64_t n_bits, uint64_t k)
{
    unsigned char buf[16];
    size_t nw = 0;
    if (have_last) {
        memcpy(buf, &last, 8);
        nw++;
    }
    memcpy(buf + 8 * nw, &n_bits, 8);
    nw++;
    return horner(h, buf, nw, k, 0);
}

int qpp_poly_hash(const uint64_t *words, size_t n_words, uint64_t n_bits, uint64_t key, uint64_t *tag)
{
    if (!tag)
        return QPP_ERR_NULL;
    if (n_words != n_bits / 64 + (n_bits % 64 != 0))
        return QPP_ERR_LENGTH;
    if (n_words && !words)
        return QPP_ERR_NULL;
    uint64_t h = 0, last = 0;
    if (n_words) {
        h = horner(0, (const unsigned char *)words, n_words - 1, key, 0);
        last = words[n_words - 1];
        if (n_bits % 64)
            last &= ((uint64_t)1 << (n_bits % 64)) - 1;
    }
    *tag = finish(h, last, n_words != 0, n_bits, key);
    return QPP_OK;
}

int qpp_poly_hash_bytes(const uint8_t *data, size_t len, uint64_t key, uint64_t *tag)
{
    if (!tag)
        return QPP_ERR_NULL;
    if (len && !data)
        return QPP_ERR_NULL;
    if ((uint64_t)len > UINT64_MAX / 8)
        return QPP_ERR_LENGTH;
    size_t full = len / 8, rest = len % 8;
    uint64_t h = horner(0, data, full, key, 1), last = 0;
    for (size_t i = 0; i < rest; i++)
        last |= (uint64_t)data[8 * full + i] << (8 * i);
    if (rest)
        *tag = finish(h, last, 1, 8 * (uint64_t)len, key);
    else
        *tag = finish(h, 0, 0, 8 * (uint64_t)len, key);
    return QPP_OK;
}

static uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* The tag into t[8]; key and pad copies and the hash wiped here. */
static int wc_tag8(const uint8_t *data, size_t len, const uint8_t *key8, const uint8_t *pad8, uint8_t t[8])
{
    uint64_t k = load_le64(key8), h = 0;
    int st = qpp_poly_hash_bytes(data, len, k, &h);
    if (st == QPP_OK) {
        uint64_t v = h ^ load_le64(pad8);
        for (int i = 0; i < 8; i++)
            t[i] = (uint8_t)(v >> (8 * i));
        qpp_memzero(&v, sizeof v);
    }
    qpp_memzero(&k, sizeof k);
    qpp_memzero(&h, sizeof h);
    return st;
}

int qpp_wc_tag(const uint8_t *data, size_t len, const uint8_t *key8, const uint8_t *pad8, uint8_t *tag_out)
{
    if (!key8 || !pad8 || !tag_out)
        return QPP_ERR_NULL;
    return wc_tag8(data, len, key8, pad8, tag_out);
}

int qpp_wc_verify(const uint8_t *data, size_t len, const uint8_t *key8, const uint8_t *pad8,
                  const uint8_t *tag8)
{
    if (!key8 || !pad8 || !tag8)
        return QPP_ERR_NULL;
    uint8_t t[8];
    int st = wc_tag8(data, len, key8, pad8, t);
    if (st != QPP_OK) {
        qpp_memzero(t, sizeof t);
        return st;
    }
    unsigned diff = 0;
    for (int i = 0; i < 8; i++)          /* constant time: every byte, no early exit */
        diff |= (unsigned)(t[i] ^ tag8[i]);
    qpp_memzero(t, sizeof t);
    return diff == 0;
}

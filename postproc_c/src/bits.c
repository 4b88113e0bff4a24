/* pack/unpack of 0/1 bytes <-> LSB-first 64-bit words.
 *
 * Portable path: 8 bytes at a time with multiply tricks (no per-bit loop).
 * Pack: x = 8 bytes b0..b7 (each 0/1, b0 lowest), x * 0x0102040810204080 puts
 * b_i at bit 56 + i; all partial products land on distinct bit positions, so
 * no carries disturb the top byte. Unpack: spread one byte into eight with
 * (b * 0x0101..01) & 0x8040201008040201, then turn each nonzero byte into 1 by
 * adding 0x7f (bit 7 set iff the byte was nonzero, never a carry out).
 * AVX2 path: 32 bytes per movemask (pack) and per shuffle/compare (unpack).
 * Both paths give identical output; qpp_cpu_disable(QPP_CPU_AVX2) forces the
 * portable one for tests.
 */
#include <string.h>

#include "qpp_bits.h"

#if defined(__GNUC__) && defined(__x86_64__)
#define QPP_HAVE_X86 1
#include <immintrin.h>
#endif

static const uint64_t ONES8 = 0x0101010101010101ULL;

static uint64_t load64(const uint8_t *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

/* 8 bytes (little-endian order b0..b7 as they lie in memory) -> 8 bits. */
static unsigned pack8(const uint8_t *p)
{
    uint64_t x = 0;
    /* Assemble in memory order so the result is the same on any endianness. */
    for (int i = 0; i < 8; i++)
        x |= (uint64_t)p[i] << (8 * i);
    return (unsigned)((x * 0x0102040810204080ULL) >> 56);
}

static int pack_portable(const uint8_t *bits, size_t n, uint64_t *words, size_t n_words)
{
    size_t full = n / 64, w, j;
    uint64_t bad = 0;
    for (w = 0; w < full; w++) {
        const uint8_t *p = bits + 64 * w;
        uint64_t out = 0;
        for (j = 0; j < 8; j++) {
            bad |= load64(p + 8 * j) & ~ONES8;
            out |= (uint64_t)pack8(p + 8 * j) << (8 * j);
        }
        words[w] = out;
    }
    if (full < n_words) {
        uint64_t out = 0;
        for (j = 64 * full; j < n; j++) {
            bad |= bits[j] & ~1u;
            out |= (uint64_t)(bits[j] & 1u) << (j - 64 * full);
        }
        words[full] = out;
    }
    return bad ? QPP_ERR_VALUE : QPP_OK;
}

#ifdef QPP_HAVE_X86
__attribute__((target("avx2")))
static int pack_avx2(const uint8_t *bits, size_t n, uint64_t *words, size_t n_words)
{
    size_t full = n / 64, w;
    const __m256i notone = _mm256_set1_epi8((char)0xFE);
    __m256i bad = _mm256_setzero_si256();
    for (w = 0; w < full; w++) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(bits + 64 * w));
        __m256i b = _mm256_loadu_si256((const __m256i *)(bits + 64 * w + 32));
        bad = _mm256_or_si256(bad, _mm256_and_si256(_mm256_or_si256(a, b), notone));
        uint32_t lo = (uint32_t)_mm256_movemask_epi8(_mm256_slli_epi16(a, 7));
        uint32_t hi = (uint32_t)_mm256_movemask_epi8(_mm256_slli_epi16(b, 7));
        words[w] = (uint64_t)lo | ((uint64_t)hi << 32);
    }
    int st = _mm256_testz_si256(bad, bad) ? QPP_OK : QPP_ERR_VALUE;
    if (full < n_words) {
        int st2 = pack_portable(bits + 64 * full, n - 64 * full, words + full, n_words - full);
        if (st2 != QPP_OK)
            st = st2;
    }
    return st;
}
#endif

int qpp_pack_bits(const uint8_t *bits, size_t n, uint64_t *words, size_t n_words, size_t *bad_index)
{
    if (n_words != n / 64 + (n % 64 != 0))
        return QPP_ERR_LENGTH;
    if (n == 0)
        return QPP_OK;
    if (!bits || !words)
        return QPP_ERR_NULL;
    int st;
#ifdef QPP_HAVE_X86
    if (qpp_cpu_features() & QPP_CPU_AVX2)
        st = pack_avx2(bits, n, words, n_words);
    else
#endif
        st = pack_portable(bits, n, words, n_words);
    if (st == QPP_ERR_VALUE) {
        /* Error path only: find the first offending byte, and leave no half-packed key behind. */
        size_t i = 0;
        while (i < n && bits[i] <= 1)
            i++;
        if (bad_index)
            *bad_index = i;
        memset(words, 0, n_words * sizeof *words);
    }
    return st;
}

static int host_is_le(void)
{
    const uint16_t one = 1;
    unsigned char c;
    memcpy(&c, &one, 1);
    return c == 1;   /* a compile-time constant after optimisation */
}

static void unpack_word_portable(uint64_t w, uint8_t *out, size_t nbits)
{
    uint8_t tmp[64];
    uint8_t *dst = nbits == 64 ? out : tmp;
    for (int j = 0; j < 8; j++) {
        uint64_t b = (w >> (8 * j)) & 0xFF;
        uint64_t y = (b * ONES8) & 0x8040201008040201ULL;
        y = ((y + 0x7F7F7F7F7F7F7F7FULL) >> 7) & ONES8;
        if (host_is_le()) {
            memcpy(dst + 8 * j, &y, 8);
        } else {
            for (int i = 0; i < 8; i++)   /* store in memory order */
                dst[8 * j + i] = (uint8_t)(y >> (8 * i));
        }
    }
    if (dst == tmp)
        memcpy(out, tmp, nbits);
}

static void unpack_portable(const uint64_t *words, size_t n, uint8_t *bits)
{
    size_t full = n / 64, w;
    for (w = 0; w < full; w++)
        unpack_word_portable(words[w], bits + 64 * w, 64);
    if (n % 64)
        unpack_word_portable(words[full], bits + 64 * full, n % 64);
}

#ifdef QPP_HAVE_X86
__attribute__((target("avx2")))
static void unpack_avx2(const uint64_t *words, size_t n, uint8_t *bits)
{
    size_t full = n / 64, w;
    /* Byte k of the result takes byte k / 8 of the 32-bit value (shuffle is per 128-bit lane). */
    const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i one = _mm256_set1_epi8(1);
    for (w = 0; w < full; w++) {
        uint64_t x = words[w];
        __m256i lo = _mm256_set1_epi32((int)(uint32_t)x);
        __m256i hi = _mm256_set1_epi32((int)(uint32_t)(x >> 32));
        lo = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(lo, shuf), sel), sel), one);
        hi = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(hi, shuf), sel), sel), one);
        _mm256_storeu_si256((__m256i *)(bits + 64 * w), lo);
        _mm256_storeu_si256((__m256i *)(bits + 64 * w + 32), hi);
    }
    if (n % 64)
        unpack_word_portable(words[full], bits + 64 * full, n % 64);
}
#endif

int qpp_unpack_bits(const uint64_t *words, size_t n_words, size_t n, uint8_t *bits)
{
    if (n_words != n / 64 + (n % 64 != 0))
        return QPP_ERR_LENGTH;
    if (n == 0)
        return QPP_OK;
    if (!bits || !words)
        return QPP_ERR_NULL;
#ifdef QPP_HAVE_X86
    if (qpp_cpu_features() & QPP_CPU_AVX2) {
        unpack_avx2(words, n, bits);
        return QPP_OK;
    }
#endif
    unpack_portable(words, n, bits);
    return QPP_OK;
}

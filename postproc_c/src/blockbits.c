/* A block's sifted events kept packed. See qpp_blockbits.h.
 *
 * Why: the node used to keep each frame's sifted events as bytes, concatenate
 * them per block and split them by basis (three whole-block copies, ~30 MB per
 * 2^22-bit block of fresh memory the kernel had to fault in and zero), then pack
 * the key again for Cascade, verification and privacy amplification. Appending
 * each frame straight into packed planes touches 1/8 of the memory once.
 */
#include "qpp_blockbits.h"

/* One output plane being appended to: whole words are stored as they fill. */
typedef struct {
    uint64_t *w;
    size_t word;      /* index of the word being filled */
    unsigned bit;     /* bits already in acc, 0..63 */
    uint64_t acc;
} plane;

static void plane_open(plane *p, uint64_t *w, size_t pos)
{
    p->w = w;
    p->word = pos >> 6;
    p->bit = (unsigned)(pos & 63u);
    /* keep the bits already appended in the partial word, drop whatever is above them */
    p->acc = p->bit ? (w[p->word] & ((UINT64_C(1) << p->bit) - 1)) : 0;
}

/* Append the k low bits of v (0 <= k <= 64; bits of v above k are zero). */
static inline void plane_bits(plane *p, uint64_t v, unsigned k)
{
    unsigned nb = p->bit + k;
    p->acc |= v << p->bit;
    if (nb >= 64) {
        p->w[p->word++] = p->acc;
        p->acc = p->bit ? v >> (64 - p->bit) : 0;
        nb -= 64;
    }
    p->bit = nb;
}

static void plane_close(const plane *p)
{
    if (p->bit)
        p->w[p->word] = p->acc;    /* bits above the count are zero */
}

typedef struct {
    plane zb, zl, zh, xb, xl, xh;
} planes;

/* Events [i, n) one at a time, without branches on the (random) basis. */
static void append_each(planes *P, const uint8_t *basis, const uint8_t *bits, const uint8_t *intensity,
                        size_t i, size_t n)
{
    for (; i < n; i++) {
        uint64_t x = basis[i], z = x ^ 1u, v = bits[i], c = intensity[i];
        plane_bits(&P->zb, v & z, (unsigned)z);
        plane_bits(&P->zl, c & z, (unsigned)z);
        plane_bits(&P->zh, (c >> 1) & z, (unsigned)z);
        plane_bits(&P->xb, v & x, (unsigned)x);
        plane_bits(&P->xl, c & x, (unsigned)x);
        plane_bits(&P->xh, (c >> 1) & x, (unsigned)x);
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <string.h>
#include <immintrin.h>
#define QPP_HAVE_BMI2_PATH 1

/* Eight bytes of 0/1 (little-endian load: byte j = event j) -> eight bits, bit j = byte j.
 * (Each byte's bit 0 lands on bit 56 + j of the product and no two terms share a bit,
 * so there are no carries.) */
static inline uint64_t gather8(const uint8_t *p, uint64_t sel)
{
    uint64_t x;
    memcpy(&x, p, 8);
    return (((x >> sel) & UINT64_C(0x0101010101010101)) * UINT64_C(0x0102040810204080)) >> 56;
}

/* 64 events per step: four 64-bit masks (basis, bit, intensity lo, hi), then each basis's
 * bits compressed with pext and appended as one run. */
__attribute__((target("bmi2,popcnt")))
static size_t append_bmi2(planes *P, const uint8_t *basis, const uint8_t *bits, const uint8_t *intensity,
                          size_t n)
{
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        uint64_t B = 0, V = 0, L = 0, H = 0, Z;
        unsigned j, nz;
        for (j = 0; j < 8; j++) {
            B |= gather8(basis + i + 8 * j, 0) << (8 * j);
            V |= gather8(bits + i + 8 * j, 0) << (8 * j);
            L |= gather8(intensity + i + 8 * j, 0) << (8 * j);
            H |= gather8(intensity + i + 8 * j, 1) << (8 * j);
        }
        Z = ~B;
        nz = (unsigned)_mm_popcnt_u64(Z);
        plane_bits(&P->zb, _pext_u64(V, Z), nz);
        plane_bits(&P->zl, _pext_u64(L, Z), nz);
        plane_bits(&P->zh, _pext_u64(H, Z), nz);
        plane_bits(&P->xb, _pext_u64(V, B), 64 - nz);
        plane_bits(&P->xl, _pext_u64(L, B), 64 - nz);
        plane_bits(&P->xh, _pext_u64(H, B), 64 - nz);
    }
    return i;
}
#endif

int qpp_block_append(const uint8_t *basis, const uint8_t *bits, const uint8_t *intensity, size_t n,
                     uint64_t *z_bits, uint64_t *z_lo, uint64_t *z_hi, size_t z_cap, size_t *n_z,
                     uint64_t *x_bits, uint64_t *x_lo, uint64_t *x_hi, size_t x_cap, size_t *n_x,
                     size_t *bad_index)
{
    size_t i, nz = 0, done = 0;
    unsigned bad = 0;
    planes P;
    if (!n_z || !n_x)
        return QPP_ERR_NULL;
    if (n == 0)
        return QPP_OK;
    if (!basis || !bits || !intensity || !z_bits || !z_lo || !z_hi || !x_bits || !x_lo || !x_hi)
        return QPP_ERR_NULL;
    /* validate and count first (a loop without exits, which the compiler vectorizes), so an
     * error or an overflow writes nothing */
    for (i = 0; i < n; i++) {
        bad |= (unsigned)((basis[i] | bits[i]) & 0xFEu) | (unsigned)(intensity[i] > 2);
        nz += basis[i] == 0;
    }
    if (bad) {
        for (i = 0; i < n && (basis[i] | bits[i]) <= 1 && intensity[i] <= 2; i++)
            ;
        if (bad_index) *bad_index = i;
        return QPP_ERR_VALUE;
    }
    if (*n_z > z_cap || nz > z_cap - *n_z || *n_x > x_cap || n - nz > x_cap - *n_x)
        return QPP_ERR_LENGTH;
    plane_open(&P.zb, z_bits, *n_z);
    plane_open(&P.zl, z_lo, *n_z);
    plane_open(&P.zh, z_hi, *n_z);
    plane_open(&P.xb, x_bits, *n_x);
    plane_open(&P.xl, x_lo, *n_x);
    plane_open(&P.xh, x_hi, *n_x);
#ifdef QPP_HAVE_BMI2_PATH
    if (qpp_cpu_features() & QPP_CPU_BMI2)
        done = append_bmi2(&P, basis, bits, intensity, n);
#endif
    append_each(&P, basis, bits, intensity, done, n);
    plane_close(&P.zb);
    plane_close(&P.zl);
    plane_close(&P.zh);
    plane_close(&P.xb);
    plane_close(&P.xl);
    plane_close(&P.xh);
    *n_z += nz;
    *n_x += n - nz;
    return QPP_OK;
}

/* Portable population count (SWAR; Hacker's Delight, Fig. 5-2): no libgcc call, no
 * CPU dispatch, and this runs over a block's planes once. */
static inline uint64_t popc(uint64_t x)
{
    x = x - ((x >> 1) & UINT64_C(0x5555555555555555));
    x = (x & UINT64_C(0x3333333333333333)) + ((x >> 2) & UINT64_C(0x3333333333333333));
    x = (x + (x >> 4)) & UINT64_C(0x0F0F0F0F0F0F0F0F);
    return (x * UINT64_C(0x0101010101010101)) >> 56;
}

int qpp_block_class_counts(const uint64_t *lo, const uint64_t *hi, const uint64_t *a,
                           const uint64_t *b, size_t n_bits, uint64_t *counts, uint64_t *errors)
{
    size_t nw = (n_bits + 63) / 64, w;
    uint64_t last = (n_bits % 64) ? ((UINT64_C(1) << (n_bits % 64)) - 1) : ~UINT64_C(0);
    uint64_t c0 = 0, c1 = 0, c2 = 0, e0 = 0, e1 = 0, e2 = 0;
    int with_err = a != NULL && b != NULL;
    if (!counts || (nw && (!lo || !hi)) || (with_err && !errors))
        return QPP_ERR_NULL;
    for (w = 0; w < nw; w++) {
        uint64_t m = (w + 1 == nw) ? last : ~UINT64_C(0);
        uint64_t l = lo[w] & m, h = hi[w] & m, k0 = m & ~l & ~h;
        if (l & h)
            return QPP_ERR_VALUE;
        c0 += popc(k0);
        c1 += popc(l);
        c2 += popc(h);
        if (with_err) {
            uint64_t d = (a[w] ^ b[w]) & m;
            e0 += popc(d & k0);
            e1 += popc(d & l);
            e2 += popc(d & h);
        }
    }
    counts[0] = c0;
    counts[1] = c1;
    counts[2] = c2;
    if (with_err) {
        errors[0] = e0;
        errors[1] = e1;
        errors[2] = e2;
    }
    return QPP_OK;
}

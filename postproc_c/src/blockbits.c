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

/* The block's six planes (Z key bits and class, X bits and class) appended from n_z / n_x. */
static void planes_open(planes *P, uint64_t *z_bits, uint64_t *z_lo, uint64_t *z_hi, size_t n_z,
                        uint64_t *x_bits, uint64_t *x_lo, uint64_t *x_hi, size_t n_x)
{
    plane_open(&P->zb, z_bits, n_z);
    plane_open(&P->zl, z_lo, n_z);
    plane_open(&P->zh, z_hi, n_z);
    plane_open(&P->xb, x_bits, n_x);
    plane_open(&P->xl, x_lo, n_x);
    plane_open(&P->xh, x_hi, n_x);
}

static void planes_close(const planes *P)
{
    plane_close(&P->zb);
    plane_close(&P->zl);
    plane_close(&P->zh);
    plane_close(&P->xb);
    plane_close(&P->xl);
    plane_close(&P->xh);
}

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
    planes_open(&P, z_bits, z_lo, z_hi, *n_z, x_bits, x_lo, x_hi, *n_x);
#ifdef QPP_HAVE_BMI2_PATH
    if (qpp_cpu_features() & QPP_CPU_BMI2)
        done = append_bmi2(&P, basis, bits, intensity, n);
#endif
    append_each(&P, basis, bits, intensity, done, n);
    planes_close(&P);
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

int qpp_plane_append_bytes(const uint8_t *src, size_t n, uint64_t *w, size_t cap, size_t *pos,
                           size_t *bad_index)
{
    size_t i;
    unsigned bad = 0;
    plane p;
    if (!pos)
        return QPP_ERR_NULL;
    if (n == 0)
        return QPP_OK;
    if (!src || !w)
        return QPP_ERR_NULL;
    for (i = 0; i < n; i++)
        bad |= src[i];
    if (bad > 1) {
        for (i = 0; src[i] <= 1; i++)
            ;
        if (bad_index) *bad_index = i;
        return QPP_ERR_VALUE;
    }
    if (*pos > cap || n > cap - *pos)
        return QPP_ERR_LENGTH;
    plane_open(&p, w, *pos);
    for (i = 0; i < n; i++)
        plane_bits(&p, src[i], 1);
    plane_close(&p);
    *pos += n;
    return QPP_OK;
}

/* k bits (0..64) of the packed stream w from bit pos; reads no word past the last one holding
 * a requested bit. */
static inline uint64_t read_bits(const uint64_t *w, size_t pos, unsigned k)
{
    size_t q = pos >> 6;
    unsigned r = (unsigned)(pos & 63u);
    uint64_t v;
    if (k == 0)
        return 0;
    v = w[q] >> r;
    if (r && r + k > 64)
        v |= w[q + 1] << (64 - r);
    return k == 64 ? v : v & ((UINT64_C(1) << k) - 1);
}

static inline unsigned popc_u(uint64_t x) { return (unsigned)popc(x); }

/* Per-class counts of 64 (or fewer: the masks say which) events from their masks. */
static inline void class_add(uint64_t *c, uint64_t sel, uint64_t AB, uint64_t LO, uint64_t HI)
{
    uint64_t i0 = ~LO & ~HI, z = sel & ~AB, x = sel & AB;
    c[0] += popc_u(z & i0);
    c[1] += popc_u(z & LO);
    c[2] += popc_u(z & HI);
    c[3] += popc_u(x & i0);
    c[4] += popc_u(x & LO);
    c[5] += popc_u(x & HI);
}

/* Portable pext (Hacker's Delight's compress, one bit at a time): only for the tails and
 * the portable path, bit-identical to the instruction. */
static inline uint64_t compress(uint64_t v, uint64_t m)
{
    uint64_t out = 0;
    unsigned k = 0;
    while (m) {
        uint64_t low = m & (~m + 1);
        out |= (uint64_t)((v & low) != 0) << k++;
        m ^= low;
    }
    return out;
}

/* 64 (or the last n < 64) events of Alice's frame: the four pattern bits of each event as
 * masks (bit j = event j), then the outputs as runs. PEXT is the compress function: the
 * instruction (target bmi2) or the portable loop. */
#define ALICE_CHUNK(PEXT, POPC)                                                                 \
    do {                                                                                        \
        uint64_t M = ~(AB ^ BB) & valid, nm = POPC(M), Z = M & ~AB, X = M & AB;                 \
        unsigned nz = (unsigned)POPC(Z);                                                        \
        plane_bits(&mt, M, cnt);                                                                \
        plane_bits(&ml, PEXT(LO, M), (unsigned)nm);                                            \
        plane_bits(&mh, PEXT(HI, M), (unsigned)nm);                                            \
        plane_bits(&P.zb, PEXT(BT, Z), nz);                                                     \
        plane_bits(&P.zl, PEXT(LO, Z), nz);                                                     \
        plane_bits(&P.zh, PEXT(HI, Z), nz);                                                     \
        plane_bits(&P.xb, PEXT(BT, X), (unsigned)nm - nz);                                      \
        plane_bits(&P.xl, PEXT(LO, X), (unsigned)nm - nz);                                      \
        plane_bits(&P.xh, PEXT(HI, X), (unsigned)nm - nz);                                      \
        class_add(det, valid, AB, LO, HI);                                                      \
        class_add(sif, M, AB, LO, HI);                                                          \
        bad3 |= LO & HI;                                                                        \
        zt += nz;                                                                               \
        mt_n += nm;                                                                             \
    } while (0)

typedef struct {
    const uint64_t *basis_w, *bit_w, *lo_w, *hi_w;
} pattern4;

/* Gather the pattern bits of events [i, i + cnt) into masks. */
static inline void alice_gather(const pattern4 *pt, const uint32_t *slots, size_t i, unsigned cnt,
                                uint64_t *AB, uint64_t *BT, uint64_t *LO, uint64_t *HI)
{
    uint64_t ab = 0, bt = 0, lo = 0, hi = 0;
    unsigned j;
    for (j = 0; j < cnt; j++) {
        uint32_t s = slots[i + j];
        size_t w = s >> 6;
        unsigned sh = s & 63u;
        ab |= ((pt->basis_w[w] >> sh) & 1u) << j;
        bt |= ((pt->bit_w[w] >> sh) & 1u) << j;
        lo |= ((pt->lo_w[w] >> sh) & 1u) << j;
        hi |= ((pt->hi_w[w] >> sh) & 1u) << j;
    }
    *AB = ab;
    *BT = bt;
    *LO = lo;
    *HI = hi;
}

/* Alice's events [0, n) chunk by chunk; one definition for both paths, which differ only in the
 * compress and popcount (and, for the instructions, in the function's target attribute). */
#define ALICE_CHUNKS_FN(NAME, PEXT, POPC)                                                           \
    static void NAME(const pattern4 *pt, const uint32_t *slots, const uint64_t *bob_w, size_t bob_pos, \
                     size_t n, planes *Pp, plane *mtp, plane *mlp, plane *mhp, uint64_t *det,      \
                     uint64_t *sif, uint64_t *bad3p, size_t *ztp, size_t *mtnp)                    \
    {                                                                                           \
        planes P = *Pp;                                                                         \
        plane mt = *mtp, ml = *mlp, mh = *mhp;                                                  \
        uint64_t bad3 = 0;                                                                      \
        size_t i, zt = 0, mt_n = 0;                                                             \
        for (i = 0; i < n; i += 64) {                                                           \
            unsigned cnt = n - i >= 64 ? 64 : (unsigned)(n - i);                                \
            uint64_t valid = cnt == 64 ? ~UINT64_C(0) : ((UINT64_C(1) << cnt) - 1);             \
            uint64_t AB, BT, LO, HI, BB = read_bits(bob_w, bob_pos + i, cnt);                   \
            alice_gather(pt, slots, i, cnt, &AB, &BT, &LO, &HI);                                \
            ALICE_CHUNK(PEXT, POPC);                                                            \
        }                                                                                       \
        *Pp = P;                                                                                \
        *mtp = mt;                                                                              \
        *mlp = ml;                                                                              \
        *mhp = mh;                                                                              \
        *bad3p = bad3;                                                                          \
        *ztp = zt;                                                                              \
        *mtnp = mt_n;                                                                           \
    }

#ifdef QPP_HAVE_BMI2_PATH
#define PEXT_I(v, m) _pext_u64((v), (m))
#define POPC_I(v) (uint64_t)_mm_popcnt_u64(v)
__attribute__((target("bmi2,popcnt")))
ALICE_CHUNKS_FN(alice_chunks_bmi2, PEXT_I, POPC_I)
#endif

ALICE_CHUNKS_FN(alice_chunks_portable, compress, popc)

int qpp_sift_alice_block(const uint64_t *basis_w, const uint64_t *bit_w, const uint64_t *int_lo_w,
                         const uint64_t *int_hi_w, uint64_t frame_len,
                         const uint32_t *slots, const uint64_t *bob_basis_w, size_t bob_pos, size_t n,
                         uint64_t *match_w, size_t match_cap, size_t *match_pos,
                         uint64_t *mlo_w, uint64_t *mhi_w, size_t m_cap, size_t *m_pos,
                         uint64_t *z_bits, uint64_t *z_lo, uint64_t *z_hi, size_t z_cap, size_t *n_z,
                         uint64_t *x_bits, uint64_t *x_lo, uint64_t *x_hi, size_t x_cap, size_t *n_x,
                         uint64_t *detections, uint64_t *sifted, size_t *bad_index)
{
    uint64_t det[6] = {0}, sif[6] = {0}, bad3 = 0, unsorted = 0;
    size_t i, zt = 0, mt_n = 0;
    uint32_t prev;
    pattern4 pt;
    planes P;
    plane mt, ml, mh;
    int k;
    if (!match_pos || !m_pos || !n_z || !n_x || !detections || !sifted)
        return QPP_ERR_NULL;
    if (n == 0) {
        for (k = 0; k < 6; k++)
            detections[k] = sifted[k] = 0;
        return QPP_OK;
    }
    if (!basis_w || !bit_w || !int_lo_w || !int_hi_w || !slots || !bob_basis_w || !match_w || !mlo_w
        || !mhi_w || !z_bits || !z_lo || !z_hi || !x_bits || !x_lo || !x_hi)
        return QPP_ERR_NULL;
    if (*match_pos > match_cap || n > match_cap - *match_pos || *m_pos > m_cap || n > m_cap - *m_pos
        || *n_z > z_cap || n > z_cap - *n_z || *n_x > x_cap || n > x_cap - *n_x)
        return QPP_ERR_LENGTH;
    /* slots strictly increasing and inside the frame, before any read: a loop without exits or
     * carried values, which the compiler vectorizes (then only the last slot needs the range) */
    for (i = 1; i < n; i++)
        unsorted |= (uint64_t)(slots[i] <= slots[i - 1]);
    prev = slots[n - 1];
    if (unsorted || (uint64_t)prev >= frame_len) {
        for (i = 0; i < n; i++) {
            if (i > 0 && slots[i] <= slots[i - 1]) {
                if (bad_index) *bad_index = i;
                return QPP_ERR_UNSORTED;
            }
            if ((uint64_t)slots[i] >= frame_len) {
                if (bad_index) *bad_index = i;
                return QPP_ERR_RANGE;
            }
        }
    }
    pt.basis_w = basis_w;
    pt.bit_w = bit_w;
    pt.lo_w = int_lo_w;
    pt.hi_w = int_hi_w;
    plane_open(&mt, match_w, *match_pos);
    plane_open(&ml, mlo_w, *m_pos);
    plane_open(&mh, mhi_w, *m_pos);
    planes_open(&P, z_bits, z_lo, z_hi, *n_z, x_bits, x_lo, x_hi, *n_x);
#ifdef QPP_HAVE_BMI2_PATH
    if (qpp_cpu_features() & QPP_CPU_BMI2)
        alice_chunks_bmi2(&pt, slots, bob_basis_w, bob_pos, n, &P, &mt, &ml, &mh, det, sif, &bad3, &zt, &mt_n);
    else
#endif
        alice_chunks_portable(&pt, slots, bob_basis_w, bob_pos, n, &P, &mt, &ml, &mh, det, sif, &bad3, &zt,
                              &mt_n);
    if (bad3) {
        for (i = 0; i < n; i++) {
            uint32_t s = slots[i];
            if ((int_lo_w[s >> 6] & int_hi_w[s >> 6]) >> (s & 63u) & 1u)
                break;
        }
        if (bad_index) *bad_index = i;
        return QPP_ERR_VALUE;
    }
    plane_close(&mt);
    plane_close(&ml);
    plane_close(&mh);
    planes_close(&P);
    *match_pos += n;
    *m_pos += mt_n;
    *n_z += zt;
    *n_x += mt_n - zt;
    for (k = 0; k < 6; k++) {
        detections[k] = det[k];
        sifted[k] = sif[k];
    }
    return QPP_OK;
}

/* 64 (or the last cnt) of Bob's announced events: basis and bit masks, compressed to the
 * matched ones, then split by basis with the classes Alice sent. */
#define BOB_CHUNK(PEXT, POPC)                                                                   \
    do {                                                                                        \
        uint64_t M = read_bits(match_w, match_pos + i, cnt);                                    \
        unsigned nm = (unsigned)POPC(M), nz;                                                    \
        uint64_t mb, mv, lo, hi, zs;                                                            \
        if (nm > m_avail - used)                                                                \
            return QPP_ERR_LENGTH;                                                              \
        mb = PEXT(BA, M);                                                                       \
        mv = PEXT(BV, M);                                                                       \
        lo = read_bits(mlo_w, m_pos + used, nm);                                                \
        hi = read_bits(mhi_w, m_pos + used, nm);                                                \
        if (lo & hi) {                                                                          \
            if (bad_index) *bad_index = i;                                                      \
            return QPP_ERR_VALUE;                                                               \
        }                                                                                       \
        zs = ~mb & (nm == 64 ? ~UINT64_C(0) : ((UINT64_C(1) << nm) - 1));                       \
        nz = (unsigned)POPC(zs);                                                                \
        plane_bits(&P.zb, PEXT(mv, zs), nz);                                                    \
        plane_bits(&P.zl, PEXT(lo, zs), nz);                                                    \
        plane_bits(&P.zh, PEXT(hi, zs), nz);                                                    \
        plane_bits(&P.xb, PEXT(mv, mb), nm - nz);                                               \
        plane_bits(&P.xl, PEXT(lo, mb), nm - nz);                                               \
        plane_bits(&P.xh, PEXT(hi, mb), nm - nz);                                               \
        used += nm;                                                                             \
        zt += nz;                                                                               \
    } while (0)

/* Bytes of 0/1 of events [i, i + cnt) as a mask (bit j = event j). */
static inline uint64_t bytes_mask(const uint8_t *p, size_t i, unsigned cnt)
{
    uint64_t m = 0;
    unsigned j;
    for (j = 0; j < cnt; j++)
        m |= (uint64_t)(p[i + j] & 1u) << j;
    return m;
}

#ifdef QPP_HAVE_BMI2_PATH
__attribute__((target("bmi2,popcnt")))
static int bob_chunks_bmi2(const uint8_t *basis, const uint8_t *bits, size_t n, const uint64_t *match_w,
                           size_t match_pos, const uint64_t *mlo_w, const uint64_t *mhi_w, size_t m_pos,
                           size_t m_avail, planes *Pp, size_t *usedp, size_t *ztp, size_t *bad_index)
{
    planes P = *Pp;
    size_t i, used = 0, zt = 0;
    for (i = 0; i < n; i += 64) {
        unsigned cnt = n - i >= 64 ? 64 : (unsigned)(n - i);
        uint64_t BA = 0, BV = 0;
        if (cnt == 64) {
            unsigned j;
            for (j = 0; j < 8; j++) {
                BA |= gather8(basis + i + 8 * j, 0) << (8 * j);
                BV |= gather8(bits + i + 8 * j, 0) << (8 * j);
            }
        } else {
            BA = bytes_mask(basis, i, cnt);
            BV = bytes_mask(bits, i, cnt);
        }
        BOB_CHUNK(PEXT_I, POPC_I);
    }
    *Pp = P;
    *usedp = used;
    *ztp = zt;
    return QPP_OK;
}
#endif

static int bob_chunks_portable(const uint8_t *basis, const uint8_t *bits, size_t n, const uint64_t *match_w,
                               size_t match_pos, const uint64_t *mlo_w, const uint64_t *mhi_w, size_t m_pos,
                               size_t m_avail, planes *Pp, size_t *usedp, size_t *ztp, size_t *bad_index)
{
    planes P = *Pp;
    size_t i, used = 0, zt = 0;
    for (i = 0; i < n; i += 64) {
        unsigned cnt = n - i >= 64 ? 64 : (unsigned)(n - i);
        uint64_t BA = bytes_mask(basis, i, cnt), BV = bytes_mask(bits, i, cnt);
        BOB_CHUNK(compress, popc);
    }
    *Pp = P;
    *usedp = used;
    *ztp = zt;
    return QPP_OK;
}

int qpp_sift_bob_block(const uint8_t *basis, const uint8_t *bits, size_t n,
                       const uint64_t *match_w, size_t match_pos,
                       const uint64_t *mlo_w, const uint64_t *mhi_w, size_t m_pos, size_t m_avail,
                       size_t *m_used,
                       uint64_t *z_bits, uint64_t *z_lo, uint64_t *z_hi, size_t z_cap, size_t *n_z,
                       uint64_t *x_bits, uint64_t *x_lo, uint64_t *x_hi, size_t x_cap, size_t *n_x,
                       size_t *bad_index)
{
    size_t i, used = 0, zt = 0;
    unsigned bad = 0;
    planes P;
    int st;
    if (!m_used || !n_z || !n_x)
        return QPP_ERR_NULL;
    *m_used = 0;
    if (n == 0)
        return QPP_OK;
    if (!basis || !bits || !match_w || !z_bits || !z_lo || !z_hi || !x_bits || !x_lo || !x_hi
        || (m_avail && (!mlo_w || !mhi_w)))
        return QPP_ERR_NULL;
    if (*n_z > z_cap || n > z_cap - *n_z || *n_x > x_cap || n > x_cap - *n_x)
        return QPP_ERR_LENGTH;
    for (i = 0; i < n; i++)
        bad |= basis[i] | bits[i];
    if (bad > 1) {
        for (i = 0; (basis[i] | bits[i]) <= 1; i++)
            ;
        if (bad_index) *bad_index = i;
        return QPP_ERR_VALUE;
    }
    planes_open(&P, z_bits, z_lo, z_hi, *n_z, x_bits, x_lo, x_hi, *n_x);
#ifdef QPP_HAVE_BMI2_PATH
    if (qpp_cpu_features() & QPP_CPU_BMI2)
        st = bob_chunks_bmi2(basis, bits, n, match_w, match_pos, mlo_w, mhi_w, m_pos, m_avail, &P, &used, &zt,
                             bad_index);
    else
#endif
        st = bob_chunks_portable(basis, bits, n, match_w, match_pos, mlo_w, mhi_w, m_pos, m_avail, &P, &used,
                                 &zt, bad_index);
    if (st != QPP_OK)
        return st;
    planes_close(&P);
    *m_used = used;
    *n_z += zt;
    *n_x += used - zt;
    return QPP_OK;
}

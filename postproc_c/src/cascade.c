/* Cascade reconciliation: Alice is a parity oracle, Bob runs the passes.
 *
 * References:
 *  [BS93] G. Brassard, L. Salvail, "Secret-key reconciliation by public
 *         discussion", EUROCRYPT '93 (the original protocol: k1 = 0.73/p,
 *         k_i = 2 k_{i-1}, four passes, BINARY bisection, cascade effect).
 *  [MM15] J. Martinez-Mateo, C. Pacher, M. Peev, A. Ciurana, V. Martin,
 *         "Demystifying the information reconciliation protocol Cascade",
 *         QIC 15 (2015), arXiv:1407.3257. Sec. 2 (protocol and efficiency
 *         f = leaked/(n h(p))), Sec. 4-5 (optimizations: block reuse i.e. the
 *         smallest already disclosed sub-block containing a corrected bit is
 *         bisected instead of its top-level block; parity inference; block-size
 *         schedule). The paper's tables could not be retrieved here: the
 *         variant QPP_CASCADE_OPT starts from opt. (8) as public implementations
 *         state it (two measured changes, see qpp_cascade_block_sizes);
 *         QPP_CASCADE_OPT_WAVES uses a schedule measured with waves
 *         (bench/cascade_tune.py): k1 = the largest power of two <= 1/p,
 *         k2 = max(4 k1, 64), k3 = n/4, then thirteen passes of n/2.
 *
 * Two measured changes to the optimized protocol (both Bob-side only: Alice
 * answers whatever is asked, the message layout is unchanged):
 *  - Waves (QPP_CASCADE_OPT_WAVES only): the odd top-level blocks of a pass
 *    >= 2 are bisected `wave` at a time (qpp_cascade_wave), the next ones once
 *    those and their cascades have ended, as in the sequential protocol of
 *    [BS93]/[MM15]. Pairs of errors that share a block of an earlier pass then
 *    cost one bisection in this pass plus the (shorter) one the cascade starts
 *    in the earlier pass, instead of two bisections in this pass that end in
 *    the same round. Measured at 2^14 bits, 2 % (before the known-bit change):
 *    all at once, best k2 (256) f = 1.057; waves of 4 with k2 = 128, f = 1.0465
 *    (2.4x the round trips); waves of 1, 1.044. Blocks still waiting that
 *    turned even are skipped. QPP_CASCADE_OPT bisects all at once: each round
 *    trip costs the link an authentication tag from its pad pool, and the
 *    engine's block budget (tests/test_engine.py) does not fit 2-5x the rounds.
 *  - Known bits (both optimized variants): a single-bit node's parity,
 *    disclosed or inferred from disclosed parities, is Alice's bit itself; Bob records these bits (akn,
 *    aval) and, before asking for a left child, infers the children's parities
 *    when either child (at most 8 bits) consists of such bits only. Nothing
 *    is asked, so nothing is disclosed: the leakage count (Alice's reply bits)
 *    stays exact. Measured at 2^14 bits with waves: f 1.058 -> 1.044 at 8 %,
 *    1.047 -> 1.044 at 2 %; QPP_CASCADE_OPT (512 frames per point) at 2^16
 *    1.044/1.043/1.045/1.056 -> 1.043/1.041/1.038/1.042 at 1/2/5/8 %, at
 *    2^14 1.060/1.057/1.057/1.065 -> 1.060/1.056/1.049/1.052.
 * Data structures (per pass j):
 *  - pos_j[i]: position of key bit i in pass order (inv_j the inverse; 16-bit
 *    entries for frames of at most 2^16 bits, else 32-bit); pass 0 is the
 *    identity (errors are i.i.d., a first shuffle buys nothing);
 *  - copy_j: the key packed in pass order, so a range of a pass is a range of
 *    words: parities are XORs of words and one popcount parity, never per bit;
 *    Alice also keeps prefix parities of copy_j, so any range costs O(1).
 *    Both sides gather copy_j through inv_j a word at a time (AVX2 gathers of
 *    8 bits where the CPU has them, a portable loop otherwise, same words);
 *    measured (callgrind, 2^22 bits in 2^16-bit frames, 2 %, waves) this cut
 *    the copies from 164M to 51M instructions per block (the per-set-bit
 *    scatter it replaced was 23 % of all instructions). Alice needs pos_j only
 *    to build the masks below and frees it then;
 *  - each top-level block is the root of an implicit binary tree (heap index h,
 *    node [s, s+len) splits into ceil(len/2) | floor(len/2)); Bob keeps bitmaps
 *    known/err/pend over node ids (block * cap2 + h): known = Alice's parity
 *    was disclosed or inferred, err = current parity difference Alice^Bob.
 *    Flipping bit i toggles err along the known nodes of the path to pos_j[i]
 *    in each pass (O(passes * log k)), which is the cascade effect without any
 *    rescan: the deepest odd known node is queued for bisection.
 *  - passes with at most 4 top-level blocks (k >= n/4: passes 3-14 of opt.
 *    (8)) are "lazy": their top-level parities come from per-block membership
 *    masks (popcount of key & mask), the copy in pass order is built only when
 *    a bisection first enters the pass, and Bob keeps their node bits in a
 *    small hash table instead of a 6n-bit bitmap (the roots' bits beside it,
 *    in rbits); a flip through a lazy pass with nothing known below its roots
 *    and no copy finds its block from the masks and toggles that root only;
 *  - speed (bench/test_bench_cascade.py, callgrind instruction counts as the
 *    guide on this shared machine): the bitmap passes' node bits are read and
 *    written a word at a time, the hot pass fields share a cache line, and the
 *    16-bit shuffles draw two steps per xoshiro output; 700M -> 462M
 *    instructions per 2^22-bit block (2^16-bit frames, 2 %, waves), messages
 *    bit-identical (the Python reference in tests/test_cascade.py checks them);
 *  - one object holds a block cut into frames; shuffles depend only on (seed,
 *    pass, frame length) and are shared by all frames of that length; each
 *    round, every frame's requests go into one message.
 * Passes run in order within a frame (the next pass's bisections start when no
 * request of the current one is outstanding): overlapping bisections was
 * measured to save rounds but to cost leakage. In the optimized variant the
 * top-level parities of every pass are asked in the opening request (the same
 * bits the sequential protocol discloses, so no extra leakage), which saves one
 * round trip per pass.
 * Leakage convention ([MM15] Sec. 2): the parity bits Alice discloses.
 * Bob's messages carry only positions (which ranges he wants), no key bits.
 * Inferred parities (right child = parent ^ left; last top-level block of a
 * pass >= 2 from the total parity) are not requested and cost nothing.
 *
 * Shuffles: xoshiro256** seeded with splitmix64(seed ^ golden*(pass+1)),
 * Fisher-Yates with 32-bit multiply-shift bounded draws, two per output
 * (bias < n/2^32, irrelevant for a public shuffle; n < 2^31). Both sides derive the same shuffles from
 * the shared seed.
 *
 * The verification hash is a polynomial over GF(2^61 - 1) of the key's 32-bit
 * chunks at a point r that Alice draws afresh (verify_key) after the errors
 * are fixed: distinct keys collide with probability <= (n/32 + 1)/2^61.
 */
#include "qpp_cascade.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#define QPP_HAVE_X86 1
#include <immintrin.h>
#endif

typedef struct {
    uint32_t pass, block, h, start, len;
} node_t;

/* Shuffles of one frame length, shared by every frame of that length. */
typedef struct {
    size_t n;
    int w16;                  /* n <= 65536: positions stored as uint16 (half the memory) */
    void *pos[QPP_CASCADE_MAX_PASSES], *inv[QPP_CASCADE_MAX_PASSES];
    uint64_t *mask[QPP_CASCADE_MAX_PASSES];   /* lazy passes: membership of blocks 0..nb-2 */
    int ready[QPP_CASCADE_MAX_PASSES];
} shuf_t;

/* pos_j[i] and inv_j[q] of a shuffle, whatever the entry width. */
static inline uint32_t spos(const shuf_t *S, uint32_t j, size_t i)
{
    return S->w16 ? ((const uint16_t *)S->pos[j])[i] : ((const uint32_t *)S->pos[j])[i];
}
static inline uint32_t sinv(const shuf_t *S, uint32_t j, size_t q)
{
    return S->w16 ? ((const uint16_t *)S->inv[j])[q] : ((const uint32_t *)S->inv[j])[q];
}

typedef struct {
    /* what bob_flip and the bisections read, in the first cache line */
    uint32_t k, nblocks, cap2;
    int kshift;               /* log2(k) when k is a power of two, else -1 */
    int c2shift;              /* log2(cap2) */
    int lazy;                 /* few blocks: top-level parities from shared masks, copy built
                                 only when a bisection first needs it */
    int started;
    uint64_t *copy;           /* key in pass order (materialized passes); == key for pass 0 */
    uint64_t *nodes;          /* Bob: node bitmaps known/err/pend interleaved per word,
                                 so one node's three bits share a cache line */
    size_t hcount;            /* hash entries; 0: no node below a root is known (bob_flip's
                                 fast path) */
    uint64_t *hkeys;          /* Bob, lazy passes: the same three bits in a hash table of */
    uint8_t *hval;            /* node ids (few nodes of these big trees are ever known) */
    size_t hcap;
    uint8_t rbits[4];         /* Bob, lazy passes: the three bits of each root (nblocks <= 4) */
    int ready;
    uint64_t *prefix;         /* Alice: prefix parities of copy */
    uint64_t *rerr;           /* Bob, opt passes after pass 1: Alice's top-level parities
                                 (a bit per block), prefetched, used when the pass starts */
    int *oom;                 /* the frame's flag: a hash insert failed, reported by the next feed */
} pass_t;

typedef struct {
    size_t n, nw, off;        /* bits, words, first word in the object's key */
    uint32_t npasses, cur;
    pass_t p[QPP_CASCADE_MAX_PASSES];
    uint64_t *key;            /* slice of the object's key (Bob: corrected in place) */
    shuf_t *sh;
    int total_parity, top, finished, inconsistent;   /* top: pass cur's top level requested */
    node_t *act; size_t nact, cact;
    node_t *req; size_t nreq, creq;
    node_t *wait; size_t nwait, cwait, wpos;   /* opt passes >= 2: odd top-level blocks
                                                  not yet released (see release_wait) */
    uint32_t wave;            /* how many of them are released at a time */
    uint64_t *akn, *aval;     /* Bob, opt: bits of Alice's key that her disclosed parities
                                 fix (a single-bit node's parity), and their values */
    uint32_t expect_bits;
    uint64_t flips;
    int oom;                  /* a hash insert of one of its passes failed */
} frame_t;

enum { B_WAIT_REPLY = 1, B_WAIT_VERIFY, B_DONE, A_SERVE, A_DONE };

struct qpp_cascade {
    int role, variant, state;
    size_t n, nw;
    uint64_t seed, verify_key;
    uint64_t *key;
    uint32_t nframes, nsh;
    frame_t *f;
    shuf_t sh[2];
    uint8_t *out; size_t out_len, out_cap; int has_out;
    uint32_t seq;             /* Bob: seq of the outstanding request; Alice: next expected */
    uint64_t expect_bits;     /* Bob: parity bits the outstanding reply must carry */
    uint64_t parity_bits, verify_bits, sent, received;
    int success;
};

/* ---------- small helpers ---------- */

static inline int getb(const uint64_t *w, size_t i) { return (int)((w[i >> 6] >> (i & 63)) & 1u); }
static inline void flipb(uint64_t *w, size_t i) { w[i >> 6] ^= (uint64_t)1 << (i & 63); }
static inline void setb(uint64_t *w, size_t i, int v)
{
    uint64_t m = (uint64_t)1 << (i & 63);
    if (v) w[i >> 6] |= m; else w[i >> 6] &= ~m;
}
static inline int par64(uint64_t x) { return __builtin_parityll(x); }
/* Both optimized variants share the protocol; they differ in schedule and waves. */
static inline int is_opt(int variant) { return variant == QPP_CASCADE_OPT || variant == QPP_CASCADE_OPT_WAVES; }

static inline void put32(uint8_t *b, uint32_t v)
{
    b[0] = (uint8_t)v; b[1] = (uint8_t)(v >> 8); b[2] = (uint8_t)(v >> 16); b[3] = (uint8_t)(v >> 24);
}
static inline uint32_t get32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static inline void put64(uint8_t *b, uint64_t v) { put32(b, (uint32_t)v); put32(b + 4, (uint32_t)(v >> 32)); }
static inline uint64_t get64(const uint8_t *b) { return (uint64_t)get32(b) | (uint64_t)get32(b + 4) << 32; }

/* Parity of bits [s, s+len) of a packed array, len >= 1: XOR of words, one parity. */
static int range_parity(const uint64_t *w, size_t s, size_t len)
{
    size_t e = s + len - 1, ws = s >> 6, we = e >> 6;
    uint64_t lo = ~(uint64_t)0 << (s & 63), hi = ~(uint64_t)0 >> (63 - (e & 63));
    if (ws == we) return par64(w[ws] & lo & hi);
    uint64_t x = w[ws] & lo;
    for (size_t k = ws + 1; k < we; k++) x ^= w[k];
    return par64(x ^ (w[we] & hi));
}

/* prefix bit i = parity of bits [0, i]. */
static void prefix_parities(const uint64_t *w, size_t nw, uint64_t *out)
{
    uint64_t carry = 0;
    for (size_t k = 0; k < nw; k++) {
        uint64_t x = w[k];
        x ^= x << 1; x ^= x << 2; x ^= x << 4; x ^= x << 8; x ^= x << 16; x ^= x << 32;
        if (carry) x = ~x;
        out[k] = x;
        carry = x >> 63;
    }
}

static inline int prefix_range(const uint64_t *pp, size_t s, size_t len)
{
    int a = getb(pp, s + len - 1);
    return s ? a ^ getb(pp, s - 1) : a;
}

/* ---------- PRNG and shuffles ---------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t xoshiro(uint64_t s[4])
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t; s[3] = rotl(s[3], 45);
    return r;
}

/* Fisher-Yates draw for step i: two 32-bit draws per xoshiro output (high half
 * first), j = (d * i) >> 32. */
static inline size_t shuffle_draw(uint64_t s[4], uint64_t *r, int *half, size_t i)
{
    uint32_t d;
    if (!*half) { *r = xoshiro(s); d = (uint32_t)(*r >> 32); *half = 1; }
    else { d = (uint32_t)*r; *half = 0; }
    return (size_t)(((uint64_t)d * i) >> 32);
}

enum { SHUF_AHEAD = 32 };   /* swaps drawn (and their targets prefetched) ahead */

static void shuffle_positions(uint64_t seed, unsigned pass, uint32_t *pos, size_t n)
{
    uint64_t x = seed ^ (0x9E3779B97F4A7C15ULL * ((uint64_t)pass + 1)), s[4];
    for (int i = 0; i < 4; i++) s[i] = splitmix64(&x);
    for (size_t i = 0; i < n; i++) pos[i] = (uint32_t)i;
    /* The swap targets depend on the generator only, not on pos, so they are drawn
     * SHUF_AHEAD steps early and their cache lines prefetched: at 2^21+ positions each
     * swap is otherwise a cache miss waited for in turn (same permutation either way). */
    uint64_t r = 0;
    int half = 0;
    size_t ring[SHUF_AHEAD], next = n;          /* next: the step whose target is drawn next */
    for (size_t k = 0; k < SHUF_AHEAD && next > 1; k++, next--) {
        ring[k] = shuffle_draw(s, &r, &half, next);
        __builtin_prefetch(&pos[ring[k]], 1);
    }
    for (size_t i = n, k = 0; i > 1; i--, k = (k + 1) & (SHUF_AHEAD - 1)) {
        size_t j = ring[k];
        uint32_t t = pos[i - 1]; pos[i - 1] = pos[j]; pos[j] = t;
        if (next > 1) {
            ring[k] = shuffle_draw(s, &r, &half, next--);
            __builtin_prefetch(&pos[ring[k]], 1);
        }
    }
}

/* The same permutation in 16-bit entries (n <= 65536): identical draws and swaps.
 * The table fits in L2, so no prefetch ring: two steps per xoshiro output (the
 * high half for step i, the low half for step i - 1, as shuffle_draw does). */
static void shuffle_positions16(uint64_t seed, unsigned pass, uint16_t *pos, size_t n)
{
    uint64_t x = seed ^ (0x9E3779B97F4A7C15ULL * ((uint64_t)pass + 1)), s[4];
    for (int i = 0; i < 4; i++) s[i] = splitmix64(&x);
    for (size_t i = 0; i < n; i++) pos[i] = (uint16_t)i;
    size_t i = n;
    for (; i > 2; i -= 2) {
        uint64_t r = xoshiro(s);
        size_t j = (size_t)(((r >> 32) * (uint64_t)i) >> 32);
        uint16_t t = pos[i - 1]; pos[i - 1] = pos[j]; pos[j] = t;
        j = (size_t)(((r & 0xFFFFFFFFu) * (uint64_t)(i - 1)) >> 32);
        t = pos[i - 2]; pos[i - 2] = pos[j]; pos[j] = t;
    }
    if (i == 2) {
        uint64_t r = xoshiro(s);
        size_t j = (size_t)(((r >> 32) * 2u) >> 32);
        uint16_t t = pos[1]; pos[1] = pos[j]; pos[j] = t;
    }
}

int qpp_cascade_permutation(uint64_t seed, unsigned pass, uint32_t *pos, size_t n)
{
    if (!pos) return QPP_ERR_NULL;
    if (n == 0 || n > 0xFFFFFFFFu) return QPP_ERR_LENGTH;
    shuffle_positions(seed, pass, pos, n);
    return QPP_OK;
}

/* ---------- verification hash ---------- */

static const uint64_t P61 = ((uint64_t)1 << 61) - 1;

static inline uint64_t mulmod61(uint64_t a, uint64_t b)
{
    unsigned __int128 z = (unsigned __int128)a * b;
    uint64_t r = (uint64_t)(z & P61) + (uint64_t)(z >> 61);
    r = (r & P61) + (r >> 61);
    return r >= P61 ? r - P61 : r;
}

uint64_t qpp_cascade_hash(const uint64_t *w, size_t n, uint64_t r)
{
    uint64_t h = 0;
    size_t chunks = (n + 31) / 32;
    r %= P61;
    for (size_t t = 0; t < chunks; t++) {
        uint64_t c = (w[t >> 1] >> ((t & 1) * 32)) & 0xFFFFFFFFu;
        size_t lo = t * 32;
        if (lo + 32 > n) c &= ((uint64_t)1 << (n - lo)) - 1;
        h = mulmod61(h + c, r);
    }
    return mulmod61(h + (uint64_t)(n & 0xFFFFFFFFu), r);
}

/* ---------- schedule ---------- */

int qpp_cascade_block_sizes(int variant, size_t n, double qber, uint32_t *sizes, size_t cap,
                            size_t *npasses)
{
    if (!sizes || !npasses) return QPP_ERR_NULL;
    if (n == 0 || n > 0x7FFFFFFFu) return QPP_ERR_LENGTH;
    if (!(qber >= 0.0 && qber < 0.5)) return QPP_ERR_VALUE;
    double p = qber < 1e-5 ? 1e-5 : qber;
    double k[QPP_CASCADE_MAX_PASSES];
    size_t np;
    if (variant == QPP_CASCADE_OPT) {
        /* [MM15] opt. (8) as public implementations state it, with two changes
         * measured here (bench/, exact errors, 192-768 frames per point; sizes
         * clamped to the frame), all odd blocks of a pass bisected at once:
         *  - k1 = 2^round(alpha) = the largest power of two <= 1/p (0.5-1
         *    expected errors per block) instead of 2^ceil(alpha): at 2^16 bits
         *    f 1.0446 -> 1.0420 (1 %), 1.0589 -> 1.0564 (8 %), 2 % within
         *    0.001, 5 % unchanged, and 37-48 % fewer messages at 1, 2, 8 %;
         *  - frames below 2^16 bits halve k2: short frames need shorter
         *    pass-2 blocks: at 2^14, f 1.078 -> 1.061 (1 %), 1.065 -> 1.058
         *    (2 %), 1.056 -> 1.057 (5 %), 1.074 -> 1.065 (8 %).
         * alpha = log2(1/p) - 1/2, k2 = 2^ceil((alpha + 12)/2), k3 = 4096,
         * k_i = n/2 for i >= 4, 14 passes, as in opt. (8). With waves
         * (QPP_CASCADE_OPT_WAVES) shorter k2 measured better, see below. */
        double alpha = log2(1.0 / p) - 0.5;
        int e2 = (int)ceil((alpha + 12.0) / 2.0);
        np = 14;
        k[0] = ldexp(1.0, (int)floor(log2(1.0 / p)));
        k[1] = ldexp(1.0, n < ((size_t)1 << 16) ? e2 - 1 : e2);
        k[2] = 4096.0;
        for (size_t j = 3; j < np; j++) k[j] = ceil((double)n / 2.0);
    } else if (variant == QPP_CASCADE_OPT_WAVES) {
        /* Measured here, not taken from [MM15]'s tables (which could not be
         * retrieved): `python -m bench.cascade_tune grid` (exact errors,
         * 1024 frames per candidate at 2^14, 512 at 2^16, with the waves of
         * qpp_cascade_wave) over k1 in {P/2, P, 2P}, k2 = m k1 with m in
         * {2, 4, 8}, k3 in {n/8, n/4} (2^14) or {4096, n/4} (2^16):
         *  - k1 = P, the largest power of two <= 1/p (0.5-1 expected errors
         *    per block; [MM15] opt. (8): 2^ceil(log2(1/p) - 1/2)); non-powers
         *    of two measured worse (a block of 2^m - r bits costs about the
         *    bisection bits of 2^m but more top-level parities): at 2^14, 2 %,
         *    k1 = 28/30/32/36 gave f = 1.068/1.064/1.057/1.061;
         *  - k2 = max(4 P, 64): best of the grid at 1, 2, 5 % (4 P) and 8 %
         *    (64 = 8 P) at both lengths; with waves (qpp_cascade_wave) pairs left
         *    by pass 1 are resolved through the cascade rather than by
         *    bisecting both of their pass-2 blocks, which favours shorter k2
         *    than without (k2 = 512 at 2^16 / 256 at 2^14, 2 %, before);
         *  - k3 = n/4 (2^14: n/4 vs n/8 within 0.002; 2^16: n/4 vs 4096 0.001
         *    better), then n/2 blocks, 16 passes in all: each pass of n/2
         *    costs one parity and finds a leftover error pattern with
         *    probability about 1/2 (BICONF-like). Measured at 2^14, 1 % (the
         *    worst point), 3072 frames: 11.5 % of frames keep errors after
         *    pass 3, 6.2 % after one n/2 pass, 1.4 % after 3, 0.2 % after 6;
         *    with 11 such passes the bench saw 2/3072 frame errors on one key
         *    set and 0/6144 on another, so 13 are used (2 parities more per
         *    frame, f + 0.0015 at 2^14, 1 %), for FER <= 1e-3 with margin. */
        double P = ldexp(1.0, (int)floor(log2(1.0 / p)));
        np = 16;
        k[0] = P;
        k[1] = 4.0 * P < 64.0 ? 64.0 : 4.0 * P;
        k[2] = ceil((double)n / 4.0) < k[1] ? k[1] : ceil((double)n / 4.0);
        for (size_t j = 3; j < np; j++) k[j] = ceil((double)n / 2.0);
    } else if (variant == QPP_CASCADE_ORIGINAL) {
        /* [BS93]: k1 = 0.73/p, doubling, four passes. */
        np = 4;
        k[0] = ceil(0.73 / p);
        for (size_t j = 1; j < np; j++) k[j] = 2.0 * k[j - 1];
    } else {
        return QPP_ERR_VALUE;
    }
    if (cap < np) return QPP_ERR_LENGTH;
    for (size_t j = 0; j < np; j++) {
        double v = k[j] < 1.0 ? 1.0 : k[j];
        sizes[j] = v >= (double)n ? (uint32_t)n : (uint32_t)v;
    }
    *npasses = np;
    return QPP_OK;
}

/* Wave size: the waste of bisecting several odd blocks at once grows with the
 * number of blocks in flight (pairs split over two of them are bisected twice),
 * the leakage with n h(p); so wave = n h(p) / 1024 keeps the loss in f about
 * constant (~0.002, measured with bench/cascade_tune.py wave at 2^14 and 2^16)
 * and the number of rounds about constant too. */
uint32_t qpp_cascade_wave(int variant, size_t n, double qber)
{
    if (variant != QPP_CASCADE_OPT_WAVES) return 0xFFFFFFFFu;
    double p = qber < 1e-5 ? 1e-5 : qber > 0.5 ? 0.5 : qber;
    double h = -p * log2(p) - (1.0 - p) * log2(1.0 - p);
    double w = floor((double)n * h / 1024.0);
    return w < 1.0 ? 1u : w > 1e9 ? 1000000000u : (uint32_t)w;
}

/* ---------- object ---------- */

/* Frees a pass; the caller has wiped its key-derived buffers (wipe_pass). */
static void pass_free(pass_t *P, const uint64_t *key)
{
    if (P->copy != key) free(P->copy);
    free(P->prefix); free(P->nodes); free(P->hkeys); free(P->hval); free(P->rerr);
    P->rerr = NULL;
    P->copy = P->prefix = P->nodes = P->hkeys = NULL;
    P->hval = NULL;
    P->ready = 0;
}

/* Frees frame F's per-pass tables and Bob's bookkeeping (wiped first), keeping its
 * key slice and counters: called when the frame has finished (Bob), when the run
 * has (Alice's FINISH) and by qpp_cascade_free, so a block's memory goes back to
 * the allocator as soon as its frames are done, not when the object is freed. */
static void frame_release(frame_t *F)
{
    for (uint32_t j = 0; j < F->npasses; j++) {
        pass_t *P = &F->p[j];
        /* key bits (copy), their parities (prefix), parity differences
         * Alice^Bob (node bits): wiped so no dead-store elimination drops it */
        if (P->copy && P->copy != F->key) qpp_memzero(P->copy, F->nw * sizeof(uint64_t));
        if (P->prefix) qpp_memzero(P->prefix, F->nw * sizeof(uint64_t));
        if (P->nodes) {
            size_t bits = (size_t)P->nblocks * P->cap2;
            qpp_memzero(P->nodes, 3 * ((bits + 63) / 64) * sizeof(uint64_t));
        }
        if (P->hval) qpp_memzero(P->hval, P->hcap);
        qpp_memzero(P->rbits, sizeof P->rbits);
        if (P->rerr) qpp_memzero(P->rerr, ((P->nblocks + 63) / 64) * sizeof(uint64_t));
        pass_free(P, F->key);
        P->hcap = P->hcount = 0;
    }
    if (F->aval) qpp_memzero(F->aval, F->nw * sizeof(uint64_t));
    if (F->akn) qpp_memzero(F->akn, F->nw * sizeof(uint64_t));
    free(F->act); free(F->req); free(F->wait); free(F->akn); free(F->aval);
    F->act = F->req = F->wait = NULL;
    F->akn = F->aval = NULL;
    F->nact = F->cact = F->nreq = F->creq = F->nwait = F->cwait = F->wpos = 0;
}

/* Frees the shared shuffle tables (public: derived from the seed only). */
static void shuffles_release(qpp_cascade *c)
{
    for (uint32_t s = 0; s < 2; s++)
        for (int j = 0; j < QPP_CASCADE_MAX_PASSES; j++) {
            free(c->sh[s].pos[j]); free(c->sh[s].inv[j]); free(c->sh[s].mask[j]);
            c->sh[s].pos[j] = c->sh[s].inv[j] = NULL;
            c->sh[s].mask[j] = NULL;
            c->sh[s].ready[j] = 0;
        }
}

void qpp_cascade_free(qpp_cascade *c)
{
    if (!c) return;
    if (c->f) {
        for (uint32_t t = 0; t < c->nframes; t++) frame_release(&c->f[t]);
        free(c->f);
    }
    shuffles_release(c);
    if (c->key) qpp_memzero(c->key, c->nw * sizeof *c->key);
    free(c->key);
    if (c->out) qpp_memzero(c->out, c->out_cap);
    free(c->out);
    free(c);
}

/* Shuffle tables of pass j for one frame length (built once, shared). */
static int shuf_ready(qpp_cascade *c, frame_t *F, uint32_t j)
{
    shuf_t *S = F->sh;
    if (S->ready[j] || j == 0) return QPP_OK;
    size_t n = S->n, nw = (n + 63) / 64;
    pass_t *P = &F->p[j];
    S->w16 = n <= 65536;
    size_t esz = S->w16 ? sizeof(uint16_t) : sizeof(uint32_t);
    S->pos[j] = malloc(n * esz);
    if (!S->pos[j]) goto nomem;
    if (S->w16) shuffle_positions16(c->seed, j, S->pos[j], n);
    else shuffle_positions(c->seed, j, S->pos[j], n);
    {   /* inv: Bob maps pass positions back to bits; both gather pass copies */
        S->inv[j] = malloc(n * esz);
        if (!S->inv[j]) goto nomem;
        if (S->w16) {                    /* 128 KiB: fits in L2, no prefetch needed */
            const uint16_t *pos = S->pos[j];
            uint16_t *inv = S->inv[j];
            for (size_t i = 0; i < n; i++) inv[pos[i]] = (uint16_t)i;
        } else {
            const uint32_t *pos = S->pos[j];
            uint32_t *inv = S->inv[j];
            size_t i = 0;
            for (; i + SHUF_AHEAD < n; i++) {        /* scattered stores: prefetched ahead */
                __builtin_prefetch(&inv[pos[i + SHUF_AHEAD]], 1);
                inv[pos[i]] = (uint32_t)i;
            }
            for (; i < n; i++) inv[pos[i]] = (uint32_t)i;
        }
    }
    if (P->lazy && P->nblocks > 1) {
        /* block b = pass positions [b k, (b+1) k); nblocks <= 4, so compare, not divide */
        size_t nm = P->nblocks - 1;
        uint32_t k = P->k;
        S->mask[j] = calloc(nm * nw, sizeof(uint64_t));
        if (!S->mask[j]) goto nomem;
        /* 64 positions at a time: one 0/1 byte per position (a loop gcc
         * vectorizes), then 8 bytes to 8 bits by one multiply: byte t of x lands
         * at bit 56 + t of x * 0x0102040810204080 (distinct bits, no carries). */
        for (size_t o = 0; o < nm; o++) {
            uint64_t *m = S->mask[j] + o * nw;
            uint32_t lo = (uint32_t)o * k;
            for (size_t w = 0; w < nw; w++) {
                uint8_t by[64];
                size_t i0 = w << 6, cnt = n - i0 < 64 ? n - i0 : 64;
                if (cnt < 64) memset(by, 0, sizeof by);
                if (S->w16) {
                    const uint16_t *ps = (const uint16_t *)S->pos[j] + i0;
                    for (size_t t = 0; t < cnt; t++) by[t] = (uint8_t)((uint32_t)ps[t] - lo < k);
                } else {
                    const uint32_t *ps = (const uint32_t *)S->pos[j] + i0;
                    for (size_t t = 0; t < cnt; t++) by[t] = (uint8_t)(ps[t] - lo < k);
                }
                uint64_t a = 0;
                for (int g = 0; g < 8; g++) {
                    uint64_t x = 0;
                    for (int t = 7; t >= 0; t--) x = x << 8 | by[8 * g + t];   /* one load (gcc) */
                    a |= ((x * 0x0102040810204080ULL) >> 56) << (8 * g);
                }
                m[w] = a;
            }
        }
    }
    if (c->role == QPP_CASCADE_ALICE) {   /* she gathers through inv; pos served the masks */
        free(S->pos[j]);
        S->pos[j] = NULL;
    }
    S->ready[j] = 1;
    return QPP_OK;
nomem:
    free(S->pos[j]); free(S->inv[j]); free(S->mask[j]);
    S->pos[j] = S->inv[j] = NULL; S->mask[j] = NULL;
    return QPP_ERR_NOMEM;
}

/* copy = key in pass order: bit q of copy = key bit inv[q], gathered a word at a
 * time (each output word is written once; the key, at most 8 KiB for 2^16-bit
 * frames, stays in L1). n bits, nw words; unused high bits of the last word 0. */
static void gather_portable(const uint64_t *key, const shuf_t *S, uint32_t j, size_t n,
                            uint64_t *copy)
{
    size_t nw = (n + 63) / 64;
    for (size_t w = 0; w < nw; w++) {
        size_t q0 = w << 6, cnt = n - q0 < 64 ? n - q0 : 64;
        uint64_t x = 0;
        if (S->w16) {
            const uint16_t *iv = (const uint16_t *)S->inv[j] + q0;
            for (size_t t = 0; t < cnt; t++) x |= (uint64_t)getb(key, iv[t]) << t;
        } else {
            const uint32_t *iv = (const uint32_t *)S->inv[j] + q0;
            for (size_t t = 0; t < cnt; t++) x |= (uint64_t)getb(key, iv[t]) << t;
        }
        copy[w] = x;
    }
}

#ifdef QPP_HAVE_X86
/* The same with AVX2 gathers: 8 positions per gather of the key's 32-bit words
 * (x86 is little-endian: key bit i is bit i%32 of 32-bit word i/32), a variable
 * shift brings each bit to the sign position, movemask packs 8 bits. */
__attribute__((target("avx2")))
static void gather_avx2(const uint64_t *key, const shuf_t *S, uint32_t j, size_t n,
                        uint64_t *copy)
{
    const int *kw = (const int *)(const void *)key;
    const __m256i m31 = _mm256_set1_epi32(31);
    size_t full = n / 64;
    for (size_t w = 0; w < full; w++) {
        uint64_t x = 0;
        for (int g = 0; g < 8; g++) {
            size_t q = (w << 6) + 8 * (size_t)g;
            __m256i idx = S->w16
                ? _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)S->inv[j] + q)))
                : _mm256_loadu_si256((const __m256i *)((const uint32_t *)S->inv[j] + q));
            __m256i v = _mm256_i32gather_epi32(kw, _mm256_srli_epi32(idx, 5), 4);
            v = _mm256_sllv_epi32(v, _mm256_sub_epi32(m31, _mm256_and_si256(idx, m31)));
            x |= (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(v)) << (8 * g);
        }
        copy[w] = x;
    }
    if (full * 64 < n) {   /* the last, partial word */
        uint64_t x = 0;
        for (size_t q = full * 64; q < n; q++) x |= (uint64_t)getb(key, sinv(S, j, q)) << (q & 63);
        copy[full] = x;
    }
}
#endif

/* Frame F's pass j in pass order: Bob's copy of his current key, Alice's copy and
 * prefix parities. Lazy passes build it on first use by a bisection. */
static int pass_copy(qpp_cascade *c, frame_t *F, uint32_t j)
{
    pass_t *P = &F->p[j];
    if (P->copy) return QPP_OK;
    size_t nw = F->nw;
    if (j == 0) {
        P->copy = F->key;
    } else {
        P->copy = malloc(nw * sizeof *P->copy);
        if (!P->copy) return QPP_ERR_NOMEM;
#ifdef QPP_HAVE_X86
        if (qpp_cpu_features() & QPP_CPU_AVX2) gather_avx2(F->key, F->sh, j, F->n, P->copy);
        else
#endif
            gather_portable(F->key, F->sh, j, F->n, P->copy);
    }
    if (c->role == QPP_CASCADE_ALICE) {
        P->prefix = malloc(nw * sizeof *P->prefix);
        if (!P->prefix) {
            if (P->copy != F->key) { qpp_memzero(P->copy, nw * sizeof *P->copy); free(P->copy); }
            P->copy = NULL;
            return QPP_ERR_NOMEM;
        }
        prefix_parities(P->copy, nw, P->prefix);
    }
    return QPP_OK;
}

/* Shuffle tables, Bob's node bitmaps and (unless lazy) the copy of pass j. */
static int pass_ready(qpp_cascade *c, frame_t *F, uint32_t j)
{
    pass_t *P = &F->p[j];
    if (P->ready) return QPP_OK;
    int st = shuf_ready(c, F, j);
    if (st) return st;
    if (!P->lazy && (st = pass_copy(c, F, j))) return st;
    if (c->role == QPP_CASCADE_BOB) {
        size_t bits = (size_t)P->nblocks * P->cap2, words = (bits + 63) / 64;
        if (P->lazy) {
            P->hcap = 256;
            P->hkeys = malloc(P->hcap * sizeof *P->hkeys);
            P->hval = calloc(P->hcap, 1);
            if (!P->hkeys || !P->hval) {
                free(P->hkeys); free(P->hval); P->hkeys = NULL; P->hval = NULL;
                return QPP_ERR_NOMEM;
            }
            memset(P->hkeys, 0xFF, P->hcap * sizeof *P->hkeys);
        } else {
            P->nodes = calloc(3 * words, sizeof(uint64_t));
            if (!P->nodes) return QPP_ERR_NOMEM;
        }
    }
    P->ready = 1;
    return QPP_OK;
}

static int ensure_out(qpp_cascade *c, size_t len)
{
    if (len <= c->out_cap) return QPP_OK;
    size_t cap = c->out_cap ? c->out_cap : 256;
    while (cap < len) cap *= 2;
    uint8_t *b = malloc(cap);
    if (!b) return QPP_ERR_NOMEM;
    if (c->out) { qpp_memzero(c->out, c->out_cap); free(c->out); }
    c->out = b; c->out_cap = cap;
    return QPP_OK;
}

static void header(qpp_cascade *c, int type, uint32_t seq, uint32_t count)
{
    uint8_t *b = c->out;
    put32(b, QPP_CASCADE_MAGIC);
    b[4] = QPP_CASCADE_VERSION; b[5] = (uint8_t)type; b[6] = (uint8_t)c->variant; b[7] = 0;
    put32(b + 8, seq); put32(b + 12, count);
}

static int push_node(node_t **arr, size_t *n, size_t *cap, node_t x)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        node_t *a = realloc(*arr, nc * sizeof *a);
        if (!a) return QPP_ERR_NOMEM;
        *arr = a; *cap = nc;
    }
    (*arr)[(*n)++] = x;
    return QPP_OK;
}

/* Alice sends every top-level parity except, in opt passes >= 2, the last block's
 * (inferred by Bob from the total parity learnt in pass 1: [MM15] parity inference). */
static uint32_t top_bits(const qpp_cascade *c, const frame_t *F, uint32_t j)
{
    uint32_t nb = F->p[j].nblocks;
    return (is_opt(c->variant) && j > 0) ? nb - 1 : nb;
}

static int build_request(qpp_cascade *c);

/* Parity bits the top-level request of F carries: in the optimized variant every
 * pass's top level goes in the opening request (see frame_advance), in the
 * original only the current pass's. */
static uint32_t top_request_bits(const qpp_cascade *c, const frame_t *F)
{
    if (!is_opt(c->variant)) return top_bits(c, F, F->cur);
    uint32_t b = 0;
    for (uint32_t j = 0; j < F->npasses; j++) b += top_bits(c, F, j);
    return b;
}

int qpp_cascade_create(qpp_cascade **out, int role, int variant, const uint64_t *key_words,
                       size_t n_bits, double qber, uint64_t seed, uint64_t verify_key,
                       size_t frame_bits, const uint32_t *sizes_in, size_t npasses_in)
{
    if (!out) return QPP_ERR_NULL;
    *out = NULL;
    if (!key_words) return QPP_ERR_NULL;
    if (role != QPP_CASCADE_ALICE && role != QPP_CASCADE_BOB) return QPP_ERR_VALUE;
    if (!is_opt(variant) && variant != QPP_CASCADE_ORIGINAL) return QPP_ERR_VALUE;
    if (npasses_in > QPP_CASCADE_MAX_PASSES || (npasses_in && !sizes_in)) return QPP_ERR_LENGTH;
    for (size_t j = 0; j < npasses_in; j++)
        if (sizes_in[j] == 0) return QPP_ERR_VALUE;
    if (!(qber >= 0.0 && qber < 0.5)) return QPP_ERR_VALUE;
    if (n_bits == 0 || n_bits > 0x7FFFFFFFu) return QPP_ERR_LENGTH;
    if (frame_bits == 0 || frame_bits > n_bits) frame_bits = n_bits;
    /* Frames of (nearly) equal length, word aligned, at most 65535 of them. */
    size_t nf = (n_bits + frame_bits - 1) / frame_bits;
    if (nf > 0xFFFF) return QPP_ERR_LENGTH;
    size_t flen = (n_bits + nf - 1) / nf;
    if (nf > 1) flen = (flen + 63) & ~(size_t)63;
    nf = (n_bits + flen - 1) / flen;
    if (flen > ((size_t)1 << 30)) return QPP_ERR_LENGTH;   /* node ids and heap indices stay in range */

    qpp_cascade *c = calloc(1, sizeof *c);
    if (!c) return QPP_ERR_NOMEM;
    c->role = role; c->variant = variant; c->n = n_bits; c->nw = (n_bits + 63) / 64;
    c->seed = seed; c->verify_key = verify_key;
    c->key = malloc(c->nw * sizeof *c->key);
    c->f = calloc(nf, sizeof *c->f);
    if (!c->key || !c->f) { qpp_cascade_free(c); return QPP_ERR_NOMEM; }
    c->nframes = (uint32_t)nf;
    memcpy(c->key, key_words, c->nw * sizeof *c->key);
    if (n_bits & 63) c->key[c->nw - 1] &= ((uint64_t)1 << (n_bits & 63)) - 1;
    for (size_t t = 0; t < nf; t++) {
        frame_t *F = &c->f[t];
        size_t lo = t * flen, n = n_bits - lo < flen ? n_bits - lo : flen;
        F->n = n; F->nw = (n + 63) / 64; F->off = lo / 64; F->key = c->key + F->off;
        uint32_t s = 0;
        while (s < c->nsh && c->sh[s].n != n) s++;
        if (s == c->nsh) c->sh[c->nsh++].n = n;
        F->sh = &c->sh[s];
        F->wave = qpp_cascade_wave(variant, n, qber);
        uint32_t sizes[QPP_CASCADE_MAX_PASSES];
        size_t np;
        int st = qpp_cascade_block_sizes(variant, n, qber, sizes, QPP_CASCADE_MAX_PASSES, &np);
        if (st) { qpp_cascade_free(c); return st; }
        if (npasses_in) {   /* caller's schedule, clamped to the frame */
            np = npasses_in;
            for (size_t j = 0; j < np; j++) sizes[j] = sizes_in[j] < n ? sizes_in[j] : (uint32_t)n;
        }
        F->npasses = (uint32_t)np;
        for (size_t j = 0; j < np; j++) {
            pass_t *P = &F->p[j];
            P->k = sizes[j];
            P->nblocks = (uint32_t)((n + sizes[j] - 1) / sizes[j]);
            uint32_t K = 1;
            while (K < P->k) K <<= 1;
            P->cap2 = 2 * K;
            P->c2shift = __builtin_ctz(P->cap2);
            P->oom = &F->oom;
            P->lazy = j > 0 && P->nblocks <= 4;
            P->kshift = (P->k & (P->k - 1)) ? -1 : __builtin_ctz(P->k);
        }
    }
    if (role == QPP_CASCADE_ALICE) {
        c->state = A_SERVE;
    } else {
        /* Bob opens with the top-level parities of pass 1 of every frame (optimized
         * variant: of every pass, see frame_advance). */
        for (uint32_t t = 0; t < c->nframes; t++) {
            frame_t *F = &c->f[t];
            int st = pass_ready(c, F, 0);
            if (!st && is_opt(variant)) {
                F->akn = calloc(F->nw, sizeof(uint64_t));
                F->aval = calloc(F->nw, sizeof(uint64_t));
                if (!F->akn || !F->aval) st = QPP_ERR_NOMEM;
            }
            for (uint32_t j = 1; !st && is_opt(variant) && j < F->npasses; j++) {
                pass_t *P = &F->p[j];
                P->rerr = calloc((P->nblocks + 63) / 64, sizeof(uint64_t));
                if (!P->rerr) st = QPP_ERR_NOMEM;
            }
            if (st) { qpp_cascade_free(c); return st; }
            F->cur = 0; F->top = 1; F->expect_bits = top_request_bits(c, F);
        }
        c->seq = 0;
        int st = build_request(c);
        if (st) { qpp_cascade_free(c); return st; }
    }
    *out = c;
    return QPP_OK;
}

int qpp_cascade_set_wave(qpp_cascade *c, uint32_t wave)
{
    if (!c) return QPP_ERR_NULL;
    if (wave == 0) return QPP_ERR_VALUE;
    if (c->role != QPP_CASCADE_BOB || c->received) return QPP_ERR_STATE;
    for (uint32_t t = 0; t < c->nframes; t++) c->f[t].wave = wave;
    return QPP_OK;
}

size_t qpp_cascade_pending(const qpp_cascade *c) { return (c && c->has_out) ? c->out_len : 0; }

int qpp_cascade_done(const qpp_cascade *c)
{
    if (!c) return QPP_ERR_NULL;
    return (c->state == A_DONE && !c->has_out) || c->state == B_DONE;
}

int qpp_cascade_next(qpp_cascade *c, uint8_t *buf, size_t cap, size_t *len)
{
    if (!c || !len) return QPP_ERR_NULL;
    *len = 0;
    if (!c->has_out) return QPP_OK;
    if (!buf) return QPP_ERR_NULL;
    if (cap < c->out_len) return QPP_ERR_LENGTH;
    memcpy(buf, c->out, c->out_len);
    *len = c->out_len;
    c->has_out = 0;
    c->sent++;
    if (c->state == A_DONE || c->state == B_DONE) memset(c->out, 0, c->out_cap);
    return QPP_OK;
}

/* Parity of top-level block b of frame F, pass j, from F's key: blocks
 * 0..nb-2 of a lazy pass by popcount of key & mask, the last one from the
 * total parity. Word operations only. */
static int top_parity(const frame_t *F, uint32_t j, uint32_t b);

/* The parities of every top-level block of a lazy pass in one sweep over the key
 * (bit b of the result = block b's parity; the last = total ^ the others). */
static unsigned top_parities(const frame_t *F, uint32_t j)
{
    const pass_t *P = &F->p[j];
    const uint64_t *m = F->sh->mask[j];
    size_t nw = F->nw;
    uint64_t x0 = 0, x1 = 0, x2 = 0, t = 0;
    uint32_t nm = P->nblocks - 1;
    for (size_t w = 0; w < nw; w++) {
        uint64_t k = F->key[w];
        t ^= k;
        if (nm > 0) x0 ^= k & m[w];
        if (nm > 1) x1 ^= k & m[nw + w];
        if (nm > 2) x2 ^= k & m[2 * nw + w];
    }
    unsigned p0 = (unsigned)par64(x0), p1 = (unsigned)par64(x1), p2 = (unsigned)par64(x2);
    unsigned last = (unsigned)par64(t) ^ p0 ^ p1 ^ p2;
    return ((p0 | p1 << 1 | p2 << 2) & ((1u << nm) - 1)) | last << nm;
}

static int top_parity(const frame_t *F, uint32_t j, uint32_t b)
{
    const pass_t *P = &F->p[j];
    uint64_t x = 0;
    if (b + 1 < P->nblocks) {
        const uint64_t *m = F->sh->mask[j] + (size_t)b * F->nw;
        for (size_t w = 0; w < F->nw; w++) x ^= F->key[w] & m[w];
        return par64(x);
    }
    const uint64_t *m = F->sh->mask[j];
    for (size_t w = 0; w < F->nw; w++) {
        uint64_t y = F->key[w];
        for (uint32_t o = 0; o + 1 < P->nblocks; o++) y &= ~m[(size_t)o * F->nw + w];
        x ^= y;
    }
    return par64(x);
}

/* ---------- Alice ---------- */

static int alice_feed(qpp_cascade *c, int type, uint32_t seq, uint32_t count,
                      const uint8_t *pl, size_t plen)
{
    if (c->state != A_SERVE || c->has_out) return QPP_ERR_STATE;
    if (seq != c->seq) return QPP_ERR_MESSAGE;
    if (type == QPP_CASCADE_MSG_FINISH) {
        if (count != 0 || plen != 0) return QPP_ERR_MESSAGE;
        int st = ensure_out(c, QPP_CASCADE_HEADER_BYTES + 16);
        if (st) return st;
        uint64_t r = c->verify_key % (P61 - 1) + 1;
        header(c, QPP_CASCADE_MSG_VERIFY, seq, 2);
        put64(c->out + 16, r);
        put64(c->out + 24, qpp_cascade_hash(c->key, c->n, r));
        c->out_len = 32; c->has_out = 1;
        c->verify_bits = QPP_CASCADE_VERIFY_BITS;
        c->received++; c->seq++;
        c->success = 1;
        c->state = A_DONE;
        for (uint32_t t = 0; t < c->nframes; t++) frame_release(&c->f[t]);
        shuffles_release(c);
        return QPP_OK;
    }
    if (type != QPP_CASCADE_MSG_REQUEST) return QPP_ERR_MESSAGE;
    if (plen != (size_t)count * QPP_CASCADE_ITEM_BYTES) return QPP_ERR_MESSAGE;
    /* Validate every item before touching anything. */
    uint64_t bits = 0;
    for (uint32_t t = 0; t < count; t++) {
        const uint8_t *it = pl + (size_t)t * QPP_CASCADE_ITEM_BYTES;
        uint32_t j = it[0], kind = it[1], fr = (uint32_t)it[2] | (uint32_t)it[3] << 8;
        uint32_t start = get32(it + 4), len = get32(it + 8);
        if (fr >= c->nframes || j >= c->f[fr].npasses) return QPP_ERR_MESSAGE;
        if (kind == 1) {
            if (start || len) return QPP_ERR_MESSAGE;
            bits += top_bits(c, &c->f[fr], j);
        } else if (kind == 0) {
            if (len == 0 || (uint64_t)start + len > c->f[fr].n) return QPP_ERR_MESSAGE;
            bits += 1;
        } else {
            return QPP_ERR_MESSAGE;
        }
    }
    if (bits > 2 * (uint64_t)c->n + 64) return QPP_ERR_MESSAGE;
    const frame_t *lastF = NULL;
    uint32_t lastj = 0;
    for (uint32_t t = 0; t < count; t++) {
        const uint8_t *it = pl + (size_t)t * QPP_CASCADE_ITEM_BYTES;
        frame_t *F = &c->f[(uint32_t)it[2] | (uint32_t)it[3] << 8];
        if (F == lastF && it[0] == lastj && it[1] == 0) continue;   /* runs of one pass: checked */
        int st = pass_ready(c, F, it[0]);
        if (!st && it[1] == 0) st = pass_copy(c, F, it[0]);
        if (st) return st;
        if (it[1] == 0) { lastF = F; lastj = it[0]; }
    }
    size_t nbytes = (size_t)((bits + 7) / 8);
    int st = ensure_out(c, QPP_CASCADE_HEADER_BYTES + nbytes);
    if (st) return st;
    uint8_t *o = c->out + QPP_CASCADE_HEADER_BYTES;
    memset(o, 0, nbytes);
    size_t b = 0;
    for (uint32_t t = 0; t < count; t++) {
        const uint8_t *it = pl + (size_t)t * QPP_CASCADE_ITEM_BYTES;
        const frame_t *F = &c->f[(uint32_t)it[2] | (uint32_t)it[3] << 8];
        uint32_t j = it[0];
        const pass_t *P = &F->p[j];
        if (it[1] == 1) {
            uint32_t nb = top_bits(c, F, j);
            for (uint32_t blk = 0; blk < nb; blk++, b++) {
                size_t s = (size_t)blk * P->k, len = F->n - s < P->k ? F->n - s : P->k;
                int x = P->prefix ? prefix_range(P->prefix, s, len) : top_parity(F, j, blk);
                if (x) o[b >> 3] |= (uint8_t)(1u << (b & 7));
            }
        } else {
            if (t + 8 < count) {   /* the prefix word of an item 8 ahead: a cache miss */
                const uint8_t *iu = it + 8 * QPP_CASCADE_ITEM_BYTES;
                const pass_t *Q = &c->f[(uint32_t)iu[2] | (uint32_t)iu[3] << 8].p[iu[0]];
                if (Q->prefix) __builtin_prefetch(&Q->prefix[(get32(iu + 4) + get32(iu + 8) - 1) >> 6]);
            }
            size_t s = get32(it + 4), len = get32(it + 8);
            if (prefix_range(P->prefix, s, len)) o[b >> 3] |= (uint8_t)(1u << (b & 7));
            b++;
        }
    }
    header(c, QPP_CASCADE_MSG_REPLY, seq, (uint32_t)bits);
    c->out_len = QPP_CASCADE_HEADER_BYTES + nbytes; c->has_out = 1;
    c->parity_bits += bits;
    c->received++; c->seq++;
    return QPP_OK;
}

/* ---------- Bob ---------- */

/* Node bit f (0 = known, 1 = err, 2 = pend) of node id: a bitmap, or for lazy
 * passes an open-addressing table (linear probing, load <= 1/2, no deletes). */
#define HEMPTY (~(uint64_t)0)

static inline size_t hslot(const pass_t *P, uint64_t id)
{
    size_t mask = P->hcap - 1, i = (size_t)((id * 0x9E3779B97F4A7C15ULL) >> 40) & mask;
    while (P->hkeys[i] != HEMPTY && P->hkeys[i] != id) i = (i + 1) & mask;
    return i;
}

static int hgrow(pass_t *P)
{
    size_t cap = P->hcap * 2;
    uint64_t *k = malloc(cap * sizeof *k);
    uint8_t *v = calloc(cap, 1);
    if (!k || !v) { free(k); free(v); return QPP_ERR_NOMEM; }
    memset(k, 0xFF, cap * sizeof *k);
    uint64_t *ok = P->hkeys;
    uint8_t *ov = P->hval;
    size_t ocap = P->hcap;
    P->hkeys = k; P->hval = v; P->hcap = cap;
    for (size_t i = 0; i < ocap; i++)
        if (ok[i] != HEMPTY) { size_t j = hslot(P, ok[i]); k[j] = ok[i]; v[j] = ov[i]; }
    qpp_memzero(ov, ocap);
    free(ok); free(ov);
    return QPP_OK;
}

/* Slot of id, inserted if absent (NULL when out of memory: P->oom is set). */
static uint8_t *hget_slot(pass_t *P, uint64_t id)
{
    size_t i = hslot(P, id);
    if (P->hkeys[i] == id) return &P->hval[i];
    if (2 * (P->hcount + 1) > P->hcap) {
        if (hgrow(P)) { *P->oom = 1; return NULL; }
        i = hslot(P, id);
    }
    P->hkeys[i] = id; P->hval[i] = 0; P->hcount++;
    return &P->hval[i];
}

/* Lazy passes keep their roots' bits in rbits, the rest in the hash table. */
static inline int is_root(const pass_t *P, size_t id) { return (id & (P->cap2 - 1)) == 1; }

static inline int nget(const pass_t *P, int f, size_t id)
{
    if (P->nodes) return (int)((P->nodes[3 * (id >> 6) + f] >> (id & 63)) & 1u);
    if (is_root(P, id)) return (P->rbits[id >> P->c2shift] >> f) & 1;
    size_t i = hslot(P, id);
    return P->hkeys[i] == id ? (P->hval[i] >> f) & 1 : 0;
}

static inline void nflip(pass_t *P, int f, size_t id)
{
    if (P->nodes) { P->nodes[3 * (id >> 6) + f] ^= (uint64_t)1 << (id & 63); return; }
    uint8_t *v = is_root(P, id) ? &P->rbits[id >> P->c2shift] : hget_slot(P, id);
    if (v) *v ^= (uint8_t)(1u << f);
}

static inline void nset(pass_t *P, int f, size_t id, int v)
{
    if (P->nodes) {
        uint64_t m = (uint64_t)1 << (id & 63), *w = &P->nodes[3 * (id >> 6) + f];
        if (v) *w |= m; else *w &= ~m;
        return;
    }
    if (!v && !nget(P, f, id)) return;
    uint8_t *s = is_root(P, id) ? &P->rbits[id >> P->c2shift] : hget_slot(P, id);
    if (s) { if (v) *s |= (uint8_t)(1u << f); else *s &= (uint8_t)~(1u << f); }
}

/* All three bits of node id: known | err << 1 | pend << 2 (one lookup). */
static inline unsigned nbits(const pass_t *P, size_t id)
{
    if (P->nodes) {
        const uint64_t *w = &P->nodes[3 * (id >> 6)];
        unsigned b = (unsigned)(id & 63);
        return (unsigned)((w[0] >> b) & 1u) | (unsigned)((w[1] >> b) & 1u) << 1
               | (unsigned)((w[2] >> b) & 1u) << 2;
    }
    if (is_root(P, id)) return P->rbits[id >> P->c2shift];
    size_t i = hslot(P, id);
    return P->hkeys[i] == id ? P->hval[i] : 0u;
}

static inline uint32_t blk_of(const pass_t *P, uint32_t q)
{
    return P->kshift >= 0 ? q >> P->kshift : q / P->k;
}

static inline size_t nid(const pass_t *P, uint32_t block, uint32_t h)
{
    return (size_t)block * P->cap2 + h;
}

static inline node_t child(node_t x, int right)
{
    uint32_t half = (x.len + 1) / 2;
    node_t y = x;
    if (!right) { y.h = 2 * x.h; y.len = half; }
    else { y.h = 2 * x.h + 1; y.start = x.start + half; y.len = x.len - half; }
    return y;
}

static inline node_t root(const frame_t *F, uint32_t j, uint32_t b)
{
    const pass_t *P = &F->p[j];
    node_t x;
    x.pass = j; x.block = b; x.h = 1; x.start = b * P->k;
    x.len = (uint32_t)(F->n - x.start < P->k ? F->n - x.start : P->k);
    return x;
}

/* Bob's parity of a node; the pass copy must exist. */
static inline int bob_parity(const frame_t *F, node_t x)
{
    return range_parity(F->p[x.pass].copy, x.start, x.len);
}

/* Correct bit i of frame F and propagate: toggle err along the known nodes of
 * every started pass; queue the deepest odd one ([MM15] block reuse) or, in the
 * original protocol, the odd top-level block ([BS93]). */
static int bob_flip(frame_t *F, size_t i, int variant)
{
    /* With honest parities every flip fixes a real error, so flips <= n; more
     * means a corrupted (well-formed) reply: stop and let the hash say no. */
    if (F->flips >= F->n) { F->inconsistent = 1; return QPP_OK; }
    flipb(F->key, i);
    F->flips++;
    for (uint32_t j = 0; j <= F->cur && j < F->npasses; j++) {   /* started => j <= cur */
        pass_t *P = &F->p[j];
        if (!P->started) continue;
        if (!P->nodes && P->hcount == 0 && !P->copy) {
            /* Lazy pass, nothing known below the roots, no copy: the block of bit i
             * from the shared masks (no shuffle lookup), toggle its root. */
            uint32_t b = P->nblocks - 1;
            for (uint32_t o = 0; o + 1 < P->nblocks; o++)
                if (getb(F->sh->mask[j] + (size_t)o * F->nw, i)) { b = o; break; }
            uint8_t *r = &P->rbits[b];
            if (!(*r & 1)) continue;
            *r ^= 2;
            if (*r & 2) {
                int st = push_node(&F->act, &F->nact, &F->cact, root(F, j, b));
                if (st) return st;
            }
            continue;
        }
        uint32_t q = j ? spos(F->sh, j, i) : (uint32_t)i;
        if (P->copy && P->copy != F->key) flipb(P->copy, q);
        node_t x = root(F, j, blk_of(P, q)), best = x;
        int have = 0;
        if (P->nodes) {   /* bitmap: the known and err words of a node side by side */
            size_t base = nid(P, x.block, 0);
            for (;;) {
                size_t id = base + x.h;
                uint64_t *w = &P->nodes[3 * (id >> 6)], m = (uint64_t)1 << (id & 63);
                if (!(w[0] & m)) break;
                w[1] ^= m;
                if (w[1] & m) { best = x; have = 1; }
                if (x.len == 1) break;
                node_t l = child(x, 0);
                x = q < l.start + l.len ? l : child(x, 1);
            }
        } else {
            for (;;) {
                size_t id = nid(P, x.block, x.h);
                if (!nget(P, 0, id)) break;
                nflip(P, 1, id);
                if (nget(P, 1, id)) { best = x; have = 1; }
                if (x.len == 1) break;
                node_t l = child(x, 0);
                x = q < l.start + l.len ? l : child(x, 1);
            }
        }
        if (variant == QPP_CASCADE_ORIGINAL) {
            best = root(F, j, blk_of(P, q));
            have = nget(P, 1, nid(P, best.block, 1));
        }
        if (have) {
            int st = push_node(&F->act, &F->nact, &F->cact, best);
            if (st) return st;
        }
    }
    return QPP_OK;
}

/* The original protocol keeps no sub-block parities once a bisection ends:
 * clear the whole tree below the root of the leaf's block. */
static void clear_bits(pass_t *P, int f, size_t s, size_t e)
{
    if (!P->nodes) {
        for (size_t i = 0; i < P->hcap; i++)
            if (P->hkeys[i] != HEMPTY && P->hkeys[i] >= s && P->hkeys[i] < e)
                P->hval[i] &= (uint8_t)~(1u << f);
        return;
    }
    while (s < e && (s & 63)) { nset(P, f, s, 0); s++; }
    while (s + 64 <= e) { P->nodes[3 * (s >> 6) + f] = 0; s += 64; }
    while (s < e) { nset(P, f, s, 0); s++; }
}

static void forget_block(frame_t *F, node_t leaf)
{
    pass_t *P = &F->p[leaf.pass];
    size_t base = nid(P, leaf.block, 0);
    clear_bits(P, 0, base + 2, base + P->cap2);
    clear_bits(P, 1, base + 2, base + P->cap2);
}

/* Run every active bisection of F as far as known parities allow; then decide
 * what F asks next: left-child parities, the next pass, or nothing (finished). */
/* A single-bit node's parity (disclosed, or inferred from disclosed ones) is
 * Alice's bit itself: Bob records it (opt), so no later bisection asks for it. */
static inline size_t bit_of(const frame_t *F, node_t x)
{
    return x.pass ? sinv(F->sh, x.pass, x.start) : x.start;
}

/* 1 when every bit of node x (at most KNOWN_MAX_LEN bits) has a known Alice
 * value: *e = parity difference Alice^Bob of x, from those values. */
enum { KNOWN_MAX_LEN = 8 };
static int known_err(const frame_t *F, node_t x, int *e)
{
    if (x.len > KNOWN_MAX_LEN) return 0;
    int d = 0;
    for (uint32_t t = 0; t < x.len; t++) {
        size_t i = x.pass ? sinv(F->sh, x.pass, x.start + t) : x.start + t;
        if (!getb(F->akn, i)) return 0;
        d ^= getb(F->aval, i) ^ getb(F->key, i);
    }
    *e = d;
    return 1;
}

static inline void reveal(frame_t *F, node_t x, int e)
{
    if (x.len != 1 || !F->akn) return;
    size_t i = bit_of(F, x);
    setb(F->akn, i, 1);
    setb(F->aval, i, getb(F->key, i) ^ e);
}

static int run_active(qpp_cascade *c, frame_t *F)
{
    size_t w = 0;
    int st;
    for (size_t a = 0; a < F->nact && !F->inconsistent; a++) {
        node_t x = F->act[a];
        pass_t *P = &F->p[x.pass];
        size_t id = nid(P, x.block, x.h);
        if ((nbits(P, id) & 3u) != 3u) continue;   /* known and odd, or dropped */
        int keep = 0;
        for (;;) {
            if (x.len == 1) {
                size_t i = x.pass ? sinv(F->sh, x.pass, x.start) : x.start;
                if ((st = bob_flip(F, i, c->variant))) return st;
                if (c->variant == QPP_CASCADE_ORIGINAL) forget_block(F, x);
                break;
            }
            node_t l = child(x, 0), r = child(x, 1);
            size_t lid = nid(P, l.block, l.h);
            unsigned lb = nbits(P, lid);
            if (lb & 1u) {
                x = (lb & 2u) ? l : r;
                continue;
            }
            /* Another entry already waits at this node: it will resolve it, drop this one. */
            if (lb & 4u) break;
            if (F->akn && r.len <= KNOWN_MAX_LEN) {   /* r.len <= l.len */
                /* Alice's bit of a single-bit child is known from earlier parities:
                 * both children's parities follow, nothing is asked. */
                size_t rid = lid + 1;
                int ex = nget(P, 1, nid(P, x.block, x.h)), have = 0, e = 0;
                if (known_err(F, l, &e)) {
                    have = 1;
                } else if (known_err(F, r, &e)) {
                    e ^= ex;
                    have = 1;
                }
                if (have) {
                    nset(P, 0, lid, 1); nset(P, 1, lid, e);
                    nset(P, 0, rid, 1); nset(P, 1, rid, e ^ ex);
                    reveal(F, l, e);
                    reveal(F, r, e ^ ex);
                    continue;
                }
            }
            nset(P, 2, lid, 1);
            if ((st = push_node(&F->req, &F->nreq, &F->creq, x))) return st;
            keep = 1;
            break;
        }
        if (keep) F->act[w++] = x;
    }
    F->nact = w;
    return QPP_OK;
}

/* Pass j becomes current (opt): its tables and copy from Bob's key as it is now,
 * err of each top-level block from Alice's prefetched parity, odd blocks queued. */
static int start_bisections(qpp_cascade *c, frame_t *F, uint32_t j)
{
    pass_t *P = &F->p[j];
    int st = pass_ready(c, F, j);
    if (st) return st;
    P->started = 1;
    unsigned tp = (!P->copy && P->lazy) ? top_parities(F, j) : 0;
    for (uint32_t b = 0; b < P->nblocks; b++) {
        int e = getb(P->rerr, b) ^ (P->copy ? bob_parity(F, root(F, j, b))
                                   : P->lazy ? (int)((tp >> b) & 1u) : top_parity(F, j, b));
        nset(P, 0, nid(P, b, 1), 1);
        nset(P, 1, nid(P, b, 1), e);
        if (e) {
            int st = push_node(&F->wait, &F->nwait, &F->cwait, root(F, j, b));
            if (st) return st;
        }
    }
    qpp_memzero(P->rerr, ((P->nblocks + 63) / 64) * sizeof(uint64_t));
    return F->oom ? QPP_ERR_NOMEM : QPP_OK;
}

/* Run every active bisection of F as far as known parities allow; then decide
 * what F asks next: left-child parities, the next pass, or nothing (finished).
 *
 * Optimized variant: the top-level parities of every pass came in the opening
 * reply, and the err bits of their blocks follow every flip since; a pass's
 * bisections still start only when the previous pass has ended (as if its top
 * level were asked then: same blocks, same parities, same requests), so the
 * prefetch saves one round trip per pass at no leakage (every pass's top level
 * is disclosed in full in any case). */
static int release_wait(frame_t *F)
{
    while (F->wpos < F->nwait && F->nact < F->wave) {
        node_t x = F->wait[F->wpos++];
        pass_t *P = &F->p[x.pass];
        size_t id = nid(P, x.block, x.h);
        if (!nget(P, 0, id) || !nget(P, 1, id)) continue;   /* turned even meanwhile */
        int st = push_node(&F->act, &F->nact, &F->cact, x);
        if (st) return st;
    }
    if (F->wpos == F->nwait) F->wpos = F->nwait = 0;
    return QPP_OK;
}

static int frame_advance(qpp_cascade *c, frame_t *F)
{
    int st;
    for (;;) {
        if ((st = run_active(c, F))) return st;
        if (F->inconsistent || F->nreq) break;
        if (F->nact) return QPP_ERR_INTERNAL;
        if (F->nwait) {
            if ((st = release_wait(F))) return st;
            continue;
        }
        if (F->cur + 1 >= F->npasses || !is_opt(c->variant)) break;
        F->cur++;
        if ((st = start_bisections(c, F, F->cur))) return st;
    }
    if (F->inconsistent) {
        F->nact = F->nreq = F->nwait = F->wpos = 0;
        F->top = 0; F->finished = 1; F->expect_bits = 0;
        return QPP_OK;
    }
    if (F->nact && !F->nreq) return QPP_ERR_INTERNAL;
    /* The next pass's bisections start once every bisection and cascade of this
     * one has ended: starting them earlier saves round trips but costs leakage
     * (measured: overlapping when <= 3 requests remain cut rounds by a third and
     * raised f by 0.01-0.015; full overlap doubled f). The original variant asks
     * the next pass's top level now. */
    if (!is_opt(c->variant) && F->cur + 1 < F->npasses && !F->nreq) {
        if ((st = pass_ready(c, F, F->cur + 1))) return st;
        F->cur++;
        F->top = 1;
    }
    F->expect_bits = (F->top ? top_request_bits(c, F) : 0) + (uint32_t)F->nreq;
    if (!F->top && !F->nreq) F->finished = 1;
    return QPP_OK;
}

/* One REQUEST with the items of every frame still running, or FINISH. */
static int build_request(qpp_cascade *c)
{
    size_t items = 0;
    uint64_t bits = 0;
    for (uint32_t t = 0; t < c->nframes; t++) {
        const frame_t *F = &c->f[t];
        items += (F->top ? (is_opt(c->variant) ? F->npasses : 1) : 0) + F->nreq;
        bits += F->expect_bits;
    }
    int st;
    if (!items) {
        if ((st = ensure_out(c, QPP_CASCADE_HEADER_BYTES))) return st;
        header(c, QPP_CASCADE_MSG_FINISH, c->seq, 0);
        c->out_len = QPP_CASCADE_HEADER_BYTES; c->has_out = 1;
        c->expect_bits = 0;
        c->state = B_WAIT_VERIFY;
        shuffles_release(c);
        return QPP_OK;
    }
    size_t len = QPP_CASCADE_HEADER_BYTES + items * QPP_CASCADE_ITEM_BYTES;
    if ((st = ensure_out(c, len))) return st;
    header(c, QPP_CASCADE_MSG_REQUEST, c->seq, (uint32_t)items);
    uint8_t *o = c->out + QPP_CASCADE_HEADER_BYTES;
    for (uint32_t t = 0; t < c->nframes; t++) {
        const frame_t *F = &c->f[t];
        if (F->top) {
            uint32_t j0 = F->cur, j1 = is_opt(c->variant) ? F->npasses : F->cur + 1;
            for (uint32_t j = j0; j < j1; j++, o += QPP_CASCADE_ITEM_BYTES) {
                memset(o, 0, QPP_CASCADE_ITEM_BYTES);
                o[0] = (uint8_t)j; o[1] = 1; o[2] = (uint8_t)t; o[3] = (uint8_t)(t >> 8);
            }
        }
        for (size_t r = 0; r < F->nreq; r++, o += QPP_CASCADE_ITEM_BYTES) {
            node_t l = child(F->req[r], 0);
            o[0] = (uint8_t)l.pass; o[1] = 0; o[2] = (uint8_t)t; o[3] = (uint8_t)(t >> 8);
            put32(o + 4, l.start); put32(o + 8, l.len);
        }
    }
    c->out_len = len; c->has_out = 1;
    c->expect_bits = bits;
    c->state = B_WAIT_REPLY;
    return QPP_OK;
}

static inline int reply_bit(const uint8_t *pl, uint64_t b) { return (pl[b >> 3] >> (b & 7)) & 1; }

/* Consume F's share of a reply starting at bit b0. */
static int frame_consume(qpp_cascade *c, frame_t *F, const uint8_t *pl, uint64_t b0)
{
    if (F->top) {
        uint32_t j1 = is_opt(c->variant) ? F->npasses : F->cur + 1;
        for (uint32_t j = F->cur; j < j1; j++) {   /* pass 0 first: total parity for the rest */
            uint32_t sent = top_bits(c, F, j);
            pass_t *P = &F->p[j];
            int par = 0;
            if (j == F->cur) P->started = 1;
            for (uint32_t b = 0; b < P->nblocks; b++) {
                int a = b < sent ? reply_bit(pl, b0 + b) : F->total_parity ^ par;
                par ^= a;
                if (j > F->cur) {   /* opt: kept until pass j starts (start_bisections) */
                    if (a) flipb(P->rerr, b);
                    continue;
                }
                node_t x = root(F, j, b);
                size_t id = nid(P, b, 1);
                int e = a ^ (P->copy ? bob_parity(F, x) : top_parity(F, j, b));
                nset(P, 0, id, 1);
                nset(P, 1, id, e);
                if (e) {
                    int st = push_node(&F->act, &F->nact, &F->cact, x);
                    if (st) return st;
                }
            }
            if (j == 0) F->total_parity = par;
            b0 += sent;
        }
        F->top = 0;
    }
    {
        for (size_t t = 0; t < F->nreq; t++) {
            node_t x = F->req[t], l = child(x, 0), r = child(x, 1);
            pass_t *P = &F->p[x.pass];
            if (t + 8 < F->nreq) {          /* the node words of a request 8 ahead: cache misses */
                node_t y = F->req[t + 8];
                const pass_t *Q = &F->p[y.pass];
                if (Q->nodes) __builtin_prefetch(&Q->nodes[3 * (nid(Q, y.block, y.h) >> 6)], 1);
            }
            size_t id = nid(P, x.block, x.h), lid = nid(P, l.block, l.h), rid = lid + 1;
            int e, ex, st;
            if (P->nodes) {
                /* bitmap (copy present): l and r share a word (lid is even) */
                uint64_t *wx = &P->nodes[3 * (id >> 6)], mx = (uint64_t)1 << (id & 63);
                uint64_t *wl = &P->nodes[3 * (lid >> 6)], ml = (uint64_t)1 << (lid & 63), mr = ml << 1;
                wl[2] &= ~ml;
                if (!(wx[0] & mx)) continue;   /* forgotten meanwhile (original variant) */
                e = reply_bit(pl, b0 + t) ^ bob_parity(F, l);
                ex = (wx[1] & mx) != 0;
                wl[0] |= ml | mr;
                wl[1] = (wl[1] & ~(ml | mr)) | (e ? ml : 0) | ((e ^ ex) ? mr : 0);
            } else {
                nset(P, 2, lid, 0);
                if (!nget(P, 0, id)) continue;   /* forgotten meanwhile (original variant) */
                if ((st = pass_copy(c, F, x.pass))) return st;
                e = reply_bit(pl, b0 + t) ^ bob_parity(F, l);
                ex = nget(P, 1, id);
                nset(P, 0, lid, 1); nset(P, 1, lid, e);
                nset(P, 0, rid, 1); nset(P, 1, rid, e ^ ex);
            }
            reveal(F, l, e);
            reveal(F, r, e ^ ex);
            /* x turned even while its request was in flight (a cascade flip inside
             * it); if its halves are odd, each holds an error: bisect both. */
            if (!ex && e && is_opt(c->variant)) {
                if ((st = push_node(&F->act, &F->nact, &F->cact, l))) return st;
                if ((st = push_node(&F->act, &F->nact, &F->cact, r))) return st;
            }
        }
        F->nreq = 0;
    }
    int st = frame_advance(c, F);
    if (F->oom) return QPP_ERR_NOMEM;
    return st;
}

static int bob_feed(qpp_cascade *c, int type, uint32_t seq, uint32_t count,
                    const uint8_t *pl, size_t plen)
{
    if (c->has_out || c->state == B_DONE) return QPP_ERR_STATE;
    if (seq != c->seq) return QPP_ERR_MESSAGE;
    if (c->state == B_WAIT_VERIFY) {
        if (type != QPP_CASCADE_MSG_VERIFY || count != 2 || plen != 16) return QPP_ERR_MESSAGE;
        uint64_t r = get64(pl), h = get64(pl + 8);
        if (r == 0 || r >= P61 || h >= P61) return QPP_ERR_MESSAGE;
        int any_bad = 0;
        for (uint32_t t = 0; t < c->nframes; t++) any_bad |= c->f[t].inconsistent;
        c->success = !any_bad && qpp_cascade_hash(c->key, c->n, r) == h;
        c->verify_bits = QPP_CASCADE_VERIFY_BITS;
        c->received++;
        c->state = B_DONE;
        return QPP_OK;
    }
    if (type != QPP_CASCADE_MSG_REPLY || count != c->expect_bits) return QPP_ERR_MESSAGE;
    if (plen != ((size_t)count + 7) / 8) return QPP_ERR_MESSAGE;
    if ((count & 7) && (pl[plen - 1] >> (count & 7))) return QPP_ERR_MESSAGE;
    uint64_t b = 0;
    for (uint32_t t = 0; t < c->nframes; t++) {
        frame_t *F = &c->f[t];
        if (F->finished) continue;
        uint32_t nb = F->expect_bits;
        int st = frame_consume(c, F, pl, b);
        if (st) return st;
        if (F->finished) frame_release(F);
        b += nb;
    }
    c->parity_bits += count;
    c->received++;
    c->seq++;
    return build_request(c);
}

int qpp_cascade_feed(qpp_cascade *c, const uint8_t *msg, size_t len)
{
    if (!c || !msg) return QPP_ERR_NULL;
    if (len < QPP_CASCADE_HEADER_BYTES) return QPP_ERR_MESSAGE;
    if (get32(msg) != QPP_CASCADE_MAGIC || msg[4] != QPP_CASCADE_VERSION || msg[7] != 0
        || msg[6] != (uint8_t)c->variant)
        return QPP_ERR_MESSAGE;
    int type = msg[5];
    uint32_t seq = get32(msg + 8), count = get32(msg + 12);
    const uint8_t *pl = msg + QPP_CASCADE_HEADER_BYTES;
    size_t plen = len - QPP_CASCADE_HEADER_BYTES;
    if (c->role == QPP_CASCADE_ALICE) return alice_feed(c, type, seq, count, pl, plen);
    return bob_feed(c, type, seq, count, pl, plen);
}

int qpp_cascade_result(const qpp_cascade *c, uint64_t *key_out, size_t n_words, qpp_cascade_stats *st)
{
    if (!c || !st) return QPP_ERR_NULL;
    if (key_out) {
        if (n_words < c->nw) return QPP_ERR_LENGTH;
        memcpy(key_out, c->key, c->nw * sizeof *key_out);
        memset(key_out + c->nw, 0, (n_words - c->nw) * sizeof *key_out);
    }
    memset(st, 0, sizeof *st);
    st->parity_bits = c->parity_bits;
    st->verify_bits = c->verify_bits;
    st->leaked_bits = c->parity_bits + c->verify_bits;
    st->messages_sent = c->sent;
    st->messages_received = c->received;
    st->frames = c->nframes;
    for (uint32_t t = 0; t < c->nframes; t++) {
        st->flips += c->f[t].flips;
        st->inconsistent |= c->f[t].inconsistent;
        if (c->f[t].npasses > st->passes) st->passes = c->f[t].npasses;
    }
    st->success = c->success;
    st->done = (c->state == A_DONE && !c->has_out) || c->state == B_DONE;
    return QPP_OK;
}

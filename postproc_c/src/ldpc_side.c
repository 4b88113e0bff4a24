/* One side (Alice or Bob) of rate-adaptive / blind LDPC syndrome
 * reconciliation as a state machine over byte messages.
 *
 * Rate adaptation (Elkouss, Martinez-Mateo, Martin, QIC 11 (2011) 226,
 * Eq. (3)-(4)): each n-bit frame of a mother code of rate R0 carries
 * k = n - d key bits; of the d = p + s adaptation positions, s are shortened
 * (value known to Bob) and p punctured (Alice's private random bits), giving
 * the effective rate R = (R0 - sigma) / (1 - pi - sigma), pi = p/n,
 * sigma = s/n. Blind reconciliation (Martinez-Mateo, Elkouss, Martin, QIC 12
 * (2012) 791, Sec. 3): when Bob's decoder fails, Alice reveals the values of
 * the next reveal_step punctured bits, turning them into shortened ones, and
 * Bob decodes again, until it succeeds or nothing is left to reveal.
 *
 * Leakage of a frame that ends with p punctured positions: the syndrome
 * (m bits) minus the p bits of Alice's private randomness it also has to
 * carry, leak = m - p (the numerator of f = (1 - R)/h(q) times the k key
 * bits: (1 - R) k = m - p, Elkouss 2011 Eq. (4)); every revealed bit lowers p
 * by one and so costs one bit. Padding of a short last frame is shortened to
 * 0 and costs nothing.
 *
 * Decoders: QPP_LDPC_BP batches 8 frames per AVX2 float lane set and decodes
 * every blind round from scratch; QPP_LDPC_QC_BP (QC codes) decodes frame by
 * frame with the int16 lane decoder of ldpc_qc.c (QPP_LDPC_QC_BP8: its int8-message
 * variant, 1 byte per edge) and keeps each undecided
 * frame's messages and posteriors (2 bytes per edge + 2 per bit, ~0.9 MB per
 * frame of the n = 2^16 codes) until the frame is decided, so a blind round
 * continues where the last one stopped (decode_pending_qc). Padding, shortened
 * and revealed bits enter that decoder as +-QPP_LDPC_QC_LLR_MAX. An attempt that
 * still has bits to reveal stops early on Bob's own rules (config stall,
 * rel_window / rel_permille, first_iter / retry_iter; they change which rounds
 * a frame needs, never the message format); the last chance runs to max_iter.
 *
 * Message layout (all integers little-endian), header of 24 bytes:
 *   0  'Q' 'L' 'D' 'P'   magic
 *   4  u8  version = 1
 *   5  u8  type (enum qpp_ldpc_msg_type)
 *   6  u16 reserved = 0
 *   8  u32 sequence number of the sender (0, 1, 2, ... per direction)
 *  12  u32 code tag (both sides' config.code_tag must match)
 *  16  u32 count (frames described by the payload)
 *  20  u32 payload length in bytes (= message length - 24)
 * Payloads:
 *   SYNDROME: u32 n, u32 m, u32 d, u32 n_short, u32 reveal_step, u32 0,
 *             u64 key_bits, then count = n_frames syndromes of words(m) u64
 *             each (LSB-first bits, unused high bits zero).
 *   STATUS:   count = n_frames bytes, enum qpp_ldpc_frame_status per frame.
 *   REVEAL:   count = frames still RETRY, each words(delta) u64 holding the
 *             values of the next delta = min(step, punctured left) positions.
 * Every field is checked against the receiver's own state before anything is
 * changed; a refused message leaves the side as it was.
 */
#include <stdlib.h>
#include <string.h>

#include "qpp_ldpc.h"
#include "ldpc_internal.h"

enum { ST_A_SEND_SYN, ST_A_WAIT_STATUS, ST_A_SEND_REVEAL, ST_B_WAIT_SYN, ST_B_DECODE, ST_B_WAIT_REVEAL,
       ST_DONE };

static const float BIG_LLR = 1000.0f;   /* a known (shortened/revealed) bit */
/* the lane decoders of ldpc_qc.c, int16 and int8 */
#define IS_QC(a) ((a) == QPP_LDPC_QC_BP || (a) == QPP_LDPC_QC_BP8)

struct qpp_ldpc_side {
    const qpp_ldpc_code *code;          /* borrowed: the caller keeps it alive */
    int role, state;
    struct qpp_ldpc_config cfg;
    uint32_t n, m, d, k, frames;
    size_t nw, mw;
    uint64_t key_bits;
    uint32_t *pos;                      /* d adaptation positions */
    uint32_t *keypos;                   /* k key positions, increasing */
    uint64_t *kmask;                    /* nw words: bit v set when v is a key position */
    uint64_t *x;                        /* frames * nw: Alice's word / Bob's known values */
    uint64_t *y;                        /* Bob: frames * nw, his noisy word */
    uint64_t *dec;                      /* Bob: frames * nw, decoder output */
    uint64_t *syn;                      /* frames * mw */
    uint8_t *status;                    /* per frame */
    uint32_t *fixed;                    /* per frame: adaptation positions known to Bob */
    float *llr;                         /* Bob: n */
    ldpc_ws ws;
    /* Bob: inputs and outputs of one batch of up to 8 frames (sum-product decodes 8 at once) */
    float *bllr;                        /* 8 * n */
    uint64_t *bsyn, *bout;              /* 8 * mw, 8 * nw */
    /* Bob, QPP_LDPC_QC_BP: int16 channel LLRs of one frame, decoder scratch, and per frame the
     * decoder state kept between blind rounds (r == NULL until its first attempt; freed, after
     * wiping, once the frame is decided) with the adaptation count it was last decoded with. */
    int16_t *qllr;
    ldpc_qc_ws qws;
    ldpc_qc_state *qst;
    uint32_t *qfixed;
    uint32_t seq_out, seq_in, messages, rounds;
    uint64_t iterations;
};

static size_t wfor(size_t bits) { return (bits + 63) / 64; }
static unsigned getbit(const uint64_t *w, uint64_t i) { return (unsigned)(w[i >> 6] >> (i & 63)) & 1u; }
static void setbit(uint64_t *w, uint64_t i, unsigned b)
{
    w[i >> 6] = (w[i >> 6] & ~(UINT64_C(1) << (i & 63))) | ((uint64_t)(b & 1u) << (i & 63));
}
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }

/* Key layout a word at a time: frame word w holds the next popcount(kmask[w]) key bits at the
 * set bits of kmask[w] (deposit), and gives them back in that order (extract). The BMI2 path
 * does a word with one pdep/pext; the portable path walks the set bits; both give the same bits
 * (tests/test_ldpc_side_kat.py runs both). Bits are read from / written to a packed stream at a
 * bit offset; write_bits ORs into a zeroed stream. */
static uint64_t read_bits(const uint64_t *src, uint64_t off, unsigned cnt)
{
    if (cnt == 0)
        return 0;
    unsigned b = (unsigned)(off & 63);
    uint64_t v = src[off >> 6] >> b;
    if (b && b + cnt > 64)
        v |= src[(off >> 6) + 1] << (64 - b);
    return cnt < 64 ? v & ((UINT64_C(1) << cnt) - 1) : v;
}

static void write_bits(uint64_t *dst, uint64_t off, uint64_t v, unsigned cnt)
{
    if (cnt == 0)
        return;
    unsigned b = (unsigned)(off & 63);
    dst[off >> 6] |= v << b;
    if (b && b + cnt > 64)
        dst[(off >> 6) + 1] |= v >> (64 - b);
}

static unsigned popcount64(uint64_t x)
{
    x = x - ((x >> 1) & UINT64_C(0x5555555555555555));
    x = (x & UINT64_C(0x3333333333333333)) + ((x >> 2) & UINT64_C(0x3333333333333333));
    x = (x + (x >> 4)) & UINT64_C(0x0F0F0F0F0F0F0F0F);
    return (unsigned)((x * UINT64_C(0x0101010101010101)) >> 56);
}

/* The lowest cnt set bits of m. */
static uint64_t low_set_bits(uint64_t m, unsigned cnt)
{
    uint64_t r = 0;
    for (unsigned i = 0; i < cnt && m; i++) {
        r |= m & -m;
        m &= m - 1;
    }
    return r;
}

static uint64_t pdep_portable(uint64_t v, uint64_t m)
{
    uint64_t r = 0;
    for (; m; m &= m - 1, v >>= 1)
        r |= (v & 1) ? (m & -m) : 0;
    return r;
}

static uint64_t pext_portable(uint64_t v, uint64_t m)
{
    uint64_t r = 0;
    for (unsigned i = 0; m; m &= m - 1, i++)
        r |= (uint64_t)((v & (m & -m)) != 0) << i;
    return r;
}

/* The loop both directions share: the set bits of mask word by word, nbits of them in all (a
 * short last frame's padding left out); STEP sees word w, its bits m in use and their count c,
 * and the stream position off. */
#define MASK_WALK(POPC, STEP)                                                                      \
    for (size_t w = 0; w < nw && nbits; w++) {                                                     \
        uint64_t m = mask[w];                                                                      \
        unsigned c = (unsigned)POPC(m);                                                            \
        if (c > nbits) {                                                                           \
            c = (unsigned)nbits;                                                                   \
            m = low_set_bits(m, c);                                                                \
        }                                                                                          \
        STEP;                                                                                      \
        off += c;                                                                                  \
        nbits -= c;                                                                                \
    }
/* dst (nw zeroed words) <- the nbits key bits of src from bit off, at the set bits of mask in
 * order; spare mask bits (a short last frame's padding) stay 0. */
#define DEPOSIT_FN(NAME, PDEP, POPC)                                                              \
    static void NAME(const uint64_t *mask, size_t nw, const uint64_t *src, uint64_t off,         \
                     uint64_t nbits, uint64_t *dst)                                                \
    {                                                                                              \
        MASK_WALK(POPC, dst[w] |= PDEP(read_bits(src, off, c), m))                                 \
    }
/* dst (zeroed stream) from bit off <- the bits of src at the set bits of mask, nbits of them. */
#define EXTRACT_FN(NAME, PEXT, POPC)                                                              \
    static void NAME(const uint64_t *mask, size_t nw, const uint64_t *src, uint64_t *dst,        \
                     uint64_t off, uint64_t nbits)                                                 \
    {                                                                                              \
        MASK_WALK(POPC, write_bits(dst, off, PEXT(src[w], m), c))                                  \
    }
DEPOSIT_FN(deposit_portable, pdep_portable, popcount64)
EXTRACT_FN(extract_portable, pext_portable, popcount64)
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_BMI2_LAYOUT 1
#define PDEP_I(v, m) _pdep_u64((v), (m))
#define PEXT_I(v, m) _pext_u64((v), (m))
#define POPC_I(v) _mm_popcnt_u64(v)
__attribute__((target("bmi2,popcnt"))) DEPOSIT_FN(deposit_bmi2, PDEP_I, POPC_I)
__attribute__((target("bmi2,popcnt"))) EXTRACT_FN(extract_bmi2, PEXT_I, POPC_I)
#endif

static void deposit(const uint64_t *mask, size_t nw, const uint64_t *src, uint64_t off, uint64_t nbits,
                    uint64_t *dst)
{
#ifdef HAVE_BMI2_LAYOUT
    if (qpp_cpu_features() & QPP_CPU_BMI2) {
        deposit_bmi2(mask, nw, src, off, nbits, dst);
        return;
    }
#endif
    deposit_portable(mask, nw, src, off, nbits, dst);
}

static void extract(const uint64_t *mask, size_t nw, const uint64_t *src, uint64_t *dst, uint64_t off,
                    uint64_t nbits)
{
#ifdef HAVE_BMI2_LAYOUT
    if (qpp_cpu_features() & QPP_CPU_BMI2) {
        extract_bmi2(mask, nw, src, dst, off, nbits);
        return;
    }
#endif
    extract_portable(mask, nw, src, dst, off, nbits);
}

/* Key bits carried by frame f (the last one may be short). */
static uint32_t frame_keylen(const qpp_ldpc_side *s, uint32_t f)
{
    uint64_t start = (uint64_t)f * s->k;
    uint64_t left = s->key_bits - start;
    return left < s->k ? (uint32_t)left : s->k;
}

static uint32_t delta_now(const qpp_ldpc_side *s, uint32_t f)
{
    uint32_t left = s->d - s->fixed[f];
    return left < s->cfg.reveal_step ? left : s->cfg.reveal_step;
}

static uint32_t count_retry(const qpp_ldpc_side *s)
{
    uint32_t c = 0;
    for (uint32_t f = 0; f < s->frames; f++)
        c += s->status[f] == QPP_LDPC_FRAME_RETRY;
    return c;
}

/* Wipe and release frame f's QC decoder state (its posteriors describe the key). */
static void qc_drop(qpp_ldpc_side *s, uint32_t f)
{
    ldpc_qc_state_free(&s->qst[f], s->code);        /* wipes */
}

void qpp_ldpc_side_free(qpp_ldpc_side *s)
{
    if (!s)
        return;
    /* Wipe key-bearing buffers before release. */
    if (s->x)
        qpp_memzero(s->x, (size_t)s->frames * s->nw * sizeof *s->x);
    if (s->y)
        qpp_memzero(s->y, (size_t)s->frames * s->nw * sizeof *s->y);
    if (s->dec)
        qpp_memzero(s->dec, (size_t)s->frames * s->nw * sizeof *s->dec);
    free(s->pos);
    free(s->keypos);
    free(s->kmask);
    free(s->x);
    free(s->y);
    free(s->dec);
    free(s->syn);
    free(s->status);
    free(s->fixed);
    free(s->llr);
    if (s->qst)
        for (uint32_t f = 0; f < s->frames; f++)
            qc_drop(s, f);
    free(s->qst);
    free(s->qfixed);
    if (s->qllr)
        qpp_memzero(s->qllr, (size_t)s->n * sizeof *s->qllr);
    free(s->qllr);
    if (s->qws.hard) {                  /* decoder scratch holds Bob's tentative key */
        size_t lane = (size_t)s->code->max_blk_deg * s->code->z;
        qpp_memzero(s->qws.hard, s->nw * sizeof *s->qws.hard);
        qpp_memzero(s->qws.q, lane * sizeof *s->qws.q);
        qpp_memzero(s->qws.fw, lane * sizeof *s->qws.fw);
        qpp_memzero(s->qws.m1, 4 * (size_t)s->code->z * sizeof *s->qws.m1);
    }
    ldpc_qc_ws_free(&s->qws);
    free(s->bllr);
    free(s->bsyn);
    free(s->bout);
    ldpc_ws_free(&s->ws);
    free(s);
}

int qpp_ldpc_side_create(qpp_ldpc_side **out, const qpp_ldpc_code *code, int role,
                         const uint64_t *key, size_t key_words, uint64_t key_bits,
                         const uint32_t *positions, uint32_t n_pos,
                         const uint64_t *punct, size_t punct_words,
                         const struct qpp_ldpc_config *cfg)
{
    if (!out || !code || !key || !cfg || (n_pos && !positions))
        return QPP_ERR_NULL;
    *out = NULL;
    if (role != QPP_LDPC_ALICE && role != QPP_LDPC_BOB)
        return QPP_ERR_VALUE;
    uint32_t n = code->n;
    if (n_pos >= n || key_bits == 0 || key_words < wfor(key_bits))
        return QPP_ERR_LENGTH;
    uint32_t k = n - n_pos;
    uint64_t frames64 = (key_bits + k - 1) / k;
    /* every message must fit its u32 payload length */
    if (frames64 > 1000000 || frames64 * wfor(code->m) * 8 + QPP_LDPC_SYN_PREFIX > 0x7fffffffu)
        return QPP_ERR_LENGTH;
    uint32_t frames = (uint32_t)frames64;
    if (role == QPP_LDPC_ALICE) {
        if (n_pos && !punct)
            return QPP_ERR_NULL;
        if (punct_words < wfor((uint64_t)frames * n_pos))
            return QPP_ERR_LENGTH;
    }
    if (cfg->n_short > n_pos || cfg->max_iter > 100000 || cfg->stall > 100000 || cfg->first_iter > 100000 ||
        cfg->retry_iter > 100000 || cfg->rel_window > 15 || cfg->rel_permille > 1000)
        return QPP_ERR_VALUE;
    if (cfg->algorithm != QPP_LDPC_MINSUM && cfg->algorithm != QPP_LDPC_BP && !IS_QC(cfg->algorithm))
        return QPP_ERR_VALUE;
    if (IS_QC(cfg->algorithm) && !code->z)
        return QPP_ERR_VALUE;               /* the lane decoders need a QC code */
    if (!(cfg->scale > 0.0f && cfg->scale <= 1.0f) || !(cfg->channel_llr > 0.0f && cfg->channel_llr < 100.0f))
        return QPP_ERR_VALUE;

    qpp_ldpc_side *s = calloc(1, sizeof *s);
    if (!s)
        return QPP_ERR_NOMEM;
    s->code = code;
    s->role = role;
    s->cfg = *cfg;
    s->n = n;
    s->m = code->m;
    s->d = n_pos;
    s->k = k;
    s->frames = frames;
    s->nw = wfor(n);
    s->mw = wfor(code->m);
    s->key_bits = key_bits;
    s->state = role == QPP_LDPC_ALICE ? ST_A_SEND_SYN : ST_B_WAIT_SYN;
    size_t fw = (size_t)frames * s->nw;
    s->pos = malloc((n_pos ? n_pos : 1) * sizeof *s->pos);
    s->keypos = malloc((size_t)k * sizeof *s->keypos);
    s->kmask = malloc(s->nw * sizeof *s->kmask);
    s->x = calloc(fw, sizeof *s->x);
    s->syn = calloc((size_t)frames * s->mw, sizeof *s->syn);
    s->status = calloc(frames, 1);
    s->fixed = calloc(frames, sizeof *s->fixed);
    uint8_t *used = calloc(n, 1);
    int st = QPP_ERR_NOMEM;
    if (!s->pos || !s->keypos || !s->kmask || !s->x || !s->syn || !s->status || !s->fixed || !used)
        goto fail;
    if (role == QPP_LDPC_BOB && IS_QC(cfg->algorithm)) {
        s->y = calloc(fw, sizeof *s->y);
        s->dec = calloc(fw, sizeof *s->dec);
        s->qllr = malloc((size_t)n * sizeof *s->qllr);
        s->qst = calloc(frames, sizeof *s->qst);
        s->qfixed = calloc(frames, sizeof *s->qfixed);
        if (!s->y || !s->dec || !s->qllr || !s->qst || !s->qfixed || ldpc_qc_ws_init(&s->qws, code) != QPP_OK)
            goto fail;
    } else if (role == QPP_LDPC_BOB) {
        s->y = calloc(fw, sizeof *s->y);
        s->dec = calloc(fw, sizeof *s->dec);
        s->llr = malloc((size_t)n * sizeof *s->llr);
        if (!s->y || !s->dec || !s->llr || ldpc_ws_init(&s->ws, code) != QPP_OK)
            goto fail;
        s->bllr = malloc((size_t)8 * n * sizeof *s->bllr);
        s->bsyn = malloc((size_t)8 * s->mw * sizeof *s->bsyn);
        s->bout = malloc((size_t)8 * s->nw * sizeof *s->bout);
        if (!s->bllr || !s->bsyn || !s->bout)
            goto fail;
    }
    for (uint32_t j = 0; j < n_pos; j++) {
        if (positions[j] >= n) {
            st = QPP_ERR_RANGE;
            goto fail;
        }
        if (used[positions[j]]) {
            st = QPP_ERR_VALUE;
            goto fail;
        }
        used[positions[j]] = 1;
        s->pos[j] = positions[j];
    }
    memset(s->kmask, 0, s->nw * sizeof *s->kmask);
    for (uint32_t v = 0, i = 0; v < n; v++)
        if (!used[v]) {
            s->keypos[i++] = v;
            s->kmask[v >> 6] |= UINT64_C(1) << (v & 63);
        }
    free(used);
    used = NULL;

    /* Lay the key (and Alice's punctured values) into the frames. */
    uint64_t *w = role == QPP_LDPC_ALICE ? s->x : s->y;
    for (uint32_t f = 0; f < frames; f++) {
        uint64_t *fr = w + (size_t)f * s->nw;
        deposit(s->kmask, s->nw, key, (uint64_t)f * k, frame_keylen(s, f), fr);
        if (role == QPP_LDPC_ALICE)
            for (uint32_t j = cfg->n_short; j < n_pos; j++)
                setbit(fr, s->pos[j], getbit(punct, (uint64_t)f * n_pos + j));
        s->fixed[f] = cfg->n_short;
    }
    if (role == QPP_LDPC_ALICE)
        for (uint32_t f = 0; f < frames; f++)
            ldpc_syndrome_raw(code, s->x + (size_t)f * s->nw, s->syn + (size_t)f * s->mw);
    *out = s;
    return QPP_OK;
fail:
    free(used);
    qpp_ldpc_side_free(s);
    return st;
}

uint32_t qpp_ldpc_side_frames(const qpp_ldpc_side *s) { return s ? s->frames : 0; }
int qpp_ldpc_side_done(const qpp_ldpc_side *s) { return s && s->state == ST_DONE; }

static size_t payload_len(const qpp_ldpc_side *s, int type)
{
    switch (type) {
    case QPP_LDPC_MSG_SYNDROME:
        return QPP_LDPC_SYN_PREFIX + (size_t)s->frames * s->mw * 8;
    case QPP_LDPC_MSG_STATUS:
        return s->frames;
    case QPP_LDPC_MSG_REVEAL: {
        size_t tot = 0;
        for (uint32_t f = 0; f < s->frames; f++)
            if (s->status[f] == QPP_LDPC_FRAME_RETRY)
                tot += wfor(delta_now(s, f)) * 8;
        return tot;
    }
    default:
        return 0;
    }
}

size_t qpp_ldpc_side_pending(const qpp_ldpc_side *s)
{
    if (!s)
        return 0;
    switch (s->state) {
    case ST_A_SEND_SYN:
        return QPP_LDPC_MSG_HEADER + payload_len(s, QPP_LDPC_MSG_SYNDROME);
    case ST_A_SEND_REVEAL:
        return QPP_LDPC_MSG_HEADER + payload_len(s, QPP_LDPC_MSG_REVEAL);
    case ST_B_DECODE:
        return QPP_LDPC_MSG_HEADER + payload_len(s, QPP_LDPC_MSG_STATUS);
    default:
        return 0;
    }
}

static void write_header(uint8_t *b, int type, uint32_t seq, uint32_t tag, uint32_t count, uint32_t plen)
{
    memcpy(b, "QLDP", 4);
    b[4] = 1;
    b[5] = (uint8_t)type;
    b[6] = b[7] = 0;
    put32(b + 8, seq);
    put32(b + 12, tag);
    put32(b + 16, count);
    put32(b + 20, plen);
}

/* Bob: channel LLRs of frame f with what he now knows. */
static void frame_llr(const qpp_ldpc_side *s, uint32_t f, float *llr)
{
    const uint64_t *yf = s->y + (size_t)f * s->nw, *kf = s->x + (size_t)f * s->nw;
    uint32_t kl = frame_keylen(s, f);
    for (uint32_t i = 0; i < s->k; i++) {
        uint32_t v = s->keypos[i];
        if (i < kl)
            llr[v] = getbit(yf, v) ? -s->cfg.channel_llr : s->cfg.channel_llr;
        else
            llr[v] = BIG_LLR;                 /* padding of a short frame: known 0 */
    }
    for (uint32_t j = 0; j < s->d; j++) {
        uint32_t v = s->pos[j];
        if (j < s->fixed[f])
            llr[v] = getbit(kf, v) ? -BIG_LLR : BIG_LLR;
        else
            llr[v] = 0.0f;                    /* punctured: no information */
    }
}

/* Bob, QC decoder: int16 channel LLRs of frame f (units 1/QPP_LDPC_QC_LLR_ONE). */
static void frame_llr_qc(const qpp_ldpc_side *s, uint32_t f, int16_t *llr)
{
    const uint64_t *yf = s->y + (size_t)f * s->nw, *kf = s->x + (size_t)f * s->nw;
    uint32_t kl = frame_keylen(s, f);
    float lf = s->cfg.channel_llr * (float)QPP_LDPC_QC_LLR_ONE + 0.5f;
    int16_t L = (int16_t)(lf > 32767.0f ? 32767 : (lf < 1.0f ? 1 : (int32_t)lf));
    /* every bit from Bob's word first, eight at a time from a table of the 256 byte values
     * (adaptation positions hold 0 there and are set below), then the padding key positions of a
     * short last frame: known 0 */
    int16_t tbl[256][8];
    for (unsigned v = 0; v < 256; v++)
        for (unsigned b = 0; b < 8; b++)
            tbl[v][b] = (v >> b) & 1 ? (int16_t)-L : L;
    uint32_t full = s->n / 8;
    for (uint32_t i = 0; i < full; i++)         /* bits 8i .. 8i+7, whatever the byte order */
        memcpy(llr + (size_t)i * 8, tbl[(yf[i >> 3] >> (8 * (i & 7))) & 0xFF], sizeof tbl[0]);
    for (uint32_t v = full * 8; v < s->n; v++)
        llr[v] = getbit(yf, v) ? (int16_t)-L : L;
    for (uint32_t i = kl; i < s->k; i++)
        llr[s->keypos[i]] = QPP_LDPC_QC_LLR_MAX;
    for (uint32_t j = 0; j < s->d; j++) {
        uint32_t v = s->pos[j];
        if (j < s->fixed[f])
            llr[v] = getbit(kf, v) ? -QPP_LDPC_QC_LLR_MAX : QPP_LDPC_QC_LLR_MAX;
        else
            llr[v] = 0;
    }
}

static void settle(qpp_ldpc_side *s, uint32_t f, int ok, uint32_t it)
{
    s->iterations += it;
    if (ok)
        s->status[f] = QPP_LDPC_FRAME_OK;
    else if (s->cfg.reveal_step == 0 || s->fixed[f] >= s->d)
        s->status[f] = QPP_LDPC_FRAME_FAILED;
    /* else stays RETRY */
}

static int decode_batch(qpp_ldpc_side *s, const uint32_t *idx, uint32_t cnt)
{
    uint32_t its[8];
    int ok[8];
    for (uint32_t l = 0; l < cnt; l++) {
        frame_llr(s, idx[l], s->bllr + (size_t)l * s->n);
        memcpy(s->bsyn + (size_t)l * s->mw, s->syn + (size_t)idx[l] * s->mw, s->mw * sizeof *s->bsyn);
    }
    int st = ldpc_decode_batch_raw(s->code, cnt, s->bllr, s->bsyn, s->cfg.max_iter, s->cfg.stall, s->bout,
                                   its, ok);
    if (st)
        return st;
    for (uint32_t l = 0; l < cnt; l++) {
        memcpy(s->dec + (size_t)idx[l] * s->nw, s->bout + (size_t)l * s->nw, s->nw * sizeof *s->dec);
        settle(s, idx[l], ok[l], its[l]);
    }
    return QPP_OK;
}

/* Bob, QC decoder: a frame's first attempt starts from its channel LLRs; a
 * later one (blind round) continues from the previous attempt's messages and
 * posteriors, with each newly revealed bit's value added to its posterior
 * (post = llr + sum of messages, and the revealed bit's llr went from 0 to
 * +-max), instead of decoding from scratch (the warm start of Kiktenko et
 * al., "Symmetric blind information reconciliation for QKD", Phys. Rev. A 95
 * (2017) 052301, Sec. III, which reuses the unsuccessful decoding's state). */
static int decode_pending_qc(qpp_ldpc_side *s)
{
    const qpp_ldpc_code *c = s->code;
    for (uint32_t f = 0; f < s->frames; f++) {
        if (s->status[f] != QPP_LDPC_FRAME_RETRY)
            continue;
        ldpc_qc_state *st = &s->qst[f];
        int live = ldpc_qc_state_live(st);
        uint32_t cap = live ? s->cfg.retry_iter : s->cfg.first_iter;
        if (!live) {
            if (ldpc_qc_state_init(st, c, s->cfg.algorithm == QPP_LDPC_QC_BP8) != QPP_OK)
                return QPP_ERR_NOMEM;
            frame_llr_qc(s, f, s->qllr);
            ldpc_qc_state_load(c, st, s->qllr);
        } else {
            const uint64_t *kf = s->x + (size_t)f * s->nw;
            for (uint32_t j = s->qfixed[f]; j < s->fixed[f]; j++)
                ldpc_qc_state_fix(c, st, s->pos[j], getbit(kf, s->pos[j]));
            ldpc_qc_state_refresh(c, st);
        }
        s->qfixed[f] = s->fixed[f];
        uint32_t it = 0;
        int ok = 0;
        /* the last chance (nothing left to reveal) runs to max_iter: a stall there would turn a
         * slow convergence into a frame error */
        uint32_t stall = s->fixed[f] >= s->d ? 0 : s->cfg.stall;
        int more = s->cfg.reveal_step && s->fixed[f] < s->d;   /* a later round can still help */
        uint32_t max_iter = more && cap && cap < s->cfg.max_iter ? cap : s->cfg.max_iter;
        s->qws.rel_window = more ? s->cfg.rel_window : 0;
        s->qws.rel_permille = s->cfg.rel_permille;
        ldpc_qc_run(c, s->syn + (size_t)f * s->mw, max_iter, stall, st, &s->qws,
                    s->dec + (size_t)f * s->nw, &it, &ok);
        settle(s, f, ok, it);
        if (s->status[f] != QPP_LDPC_FRAME_RETRY)
            qc_drop(s, f);
    }
    return QPP_OK;
}

/* Bob: decode every RETRY frame with what he now knows. Sum-product runs 8
 * frames per batch; min-sum one frame at a time. Frames decided before an
 * allocation failure keep their result; a retry decodes only the rest. */
static int decode_pending(qpp_ldpc_side *s)
{
    if (IS_QC(s->cfg.algorithm))
        return decode_pending_qc(s);
    uint32_t idx[8], cnt = 0;
    for (uint32_t f = 0; f < s->frames; f++) {
        if (s->status[f] != QPP_LDPC_FRAME_RETRY)
            continue;
        if (s->cfg.algorithm == QPP_LDPC_BP) {
            idx[cnt++] = f;
            if (cnt == 8) {
                int st = decode_batch(s, idx, cnt);
                if (st)
                    return st;
                cnt = 0;
            }
            continue;
        }
        uint32_t it = 0;
        int ok = 0;
        frame_llr(s, f, s->llr);
        ldpc_decode_ws(s->code, s->llr, s->syn + (size_t)f * s->mw, s->cfg.max_iter, s->cfg.stall,
                       s->cfg.algorithm, s->cfg.scale, s->dec + (size_t)f * s->nw, NULL, &it, &ok, &s->ws);
        settle(s, f, ok, it);
    }
    if (cnt == 1) {                     /* a lone frame: the row-vectorized single decoder is faster */
        uint32_t it = 0;
        int ok = 0;
        frame_llr(s, idx[0], s->llr);
        ldpc_decode_ws(s->code, s->llr, s->syn + (size_t)idx[0] * s->mw, s->cfg.max_iter, s->cfg.stall,
                       s->cfg.algorithm, s->cfg.scale, s->dec + (size_t)idx[0] * s->nw, NULL, &it, &ok, &s->ws);
        settle(s, idx[0], ok, it);
        return QPP_OK;
    }
    return cnt ? decode_batch(s, idx, cnt) : QPP_OK;
}

int qpp_ldpc_side_next(qpp_ldpc_side *s, uint8_t *buf, size_t cap, size_t *len)
{
    if (!s || !buf || !len)
        return QPP_ERR_NULL;
    size_t need = qpp_ldpc_side_pending(s);
    if (need == 0)
        return QPP_ERR_STATE;
    if (cap < need)
        return QPP_ERR_LENGTH;
    if (s->state == ST_B_DECODE) {
        int st = decode_pending(s);     /* only RETRY frames; decided ones are final */
        if (st)
            return st;
    }
    size_t plen = need - QPP_LDPC_MSG_HEADER;
    uint8_t *p = buf + QPP_LDPC_MSG_HEADER;
    if (s->state == ST_A_SEND_SYN) {
        write_header(buf, QPP_LDPC_MSG_SYNDROME, s->seq_out, s->cfg.code_tag, s->frames, (uint32_t)plen);
        put32(p, s->n);
        put32(p + 4, s->m);
        put32(p + 8, s->d);
        put32(p + 12, s->cfg.n_short);
        put32(p + 16, s->cfg.reveal_step);
        put32(p + 20, 0);
        put64(p + 24, s->key_bits);
        p += QPP_LDPC_SYN_PREFIX;
        for (size_t i = 0; i < (size_t)s->frames * s->mw; i++, p += 8)
            put64(p, s->syn[i]);
        s->state = ST_A_WAIT_STATUS;
    } else if (s->state == ST_A_SEND_REVEAL) {
        uint32_t cnt = count_retry(s);
        write_header(buf, QPP_LDPC_MSG_REVEAL, s->seq_out, s->cfg.code_tag, cnt, (uint32_t)plen);
        for (uint32_t f = 0; f < s->frames; f++) {
            if (s->status[f] != QPP_LDPC_FRAME_RETRY)
                continue;
            uint32_t dl = delta_now(s, f);
            size_t ww = wfor(dl);
            const uint64_t *fr = s->x + (size_t)f * s->nw;
            for (size_t wi = 0; wi < ww; wi++) {
                uint64_t word = 0;
                for (uint32_t b = 0; b < 64 && wi * 64 + b < dl; b++)
                    word |= (uint64_t)getbit(fr, s->pos[s->fixed[f] + wi * 64 + b]) << b;
                put64(p, word);
                p += 8;
            }
            s->fixed[f] += dl;
        }
        s->rounds++;
        s->state = ST_A_WAIT_STATUS;
    } else {                            /* ST_B_DECODE */
        write_header(buf, QPP_LDPC_MSG_STATUS, s->seq_out, s->cfg.code_tag, s->frames, (uint32_t)plen);
        memcpy(p, s->status, s->frames);
        s->state = count_retry(s) ? ST_B_WAIT_REVEAL : ST_DONE;
    }
    s->seq_out++;
    s->messages++;
    *len = need;
    return QPP_OK;
}

static int check_pad(uint64_t word, uint32_t used_bits)
{
    return used_bits >= 64 || (word >> used_bits) == 0;
}

int qpp_ldpc_side_feed(qpp_ldpc_side *s, const uint8_t *msg, size_t len)
{
    if (!s || !msg)
        return QPP_ERR_NULL;
    if (len < QPP_LDPC_MSG_HEADER || memcmp(msg, "QLDP", 4) != 0 || msg[4] != 1 || msg[6] || msg[7])
        return QPP_ERR_MESSAGE;
    int type = msg[5];
    uint32_t seq = get32(msg + 8), tag = get32(msg + 12), count = get32(msg + 16), plen = get32(msg + 20);
    if ((size_t)plen != len - QPP_LDPC_MSG_HEADER || seq != s->seq_in || tag != s->cfg.code_tag)
        return QPP_ERR_MESSAGE;
    const uint8_t *p = msg + QPP_LDPC_MSG_HEADER;
    uint32_t mpad = s->m & 63 ? s->m & 63 : 64;

    if (type == QPP_LDPC_MSG_SYNDROME && s->state == ST_B_WAIT_SYN) {
        if (count != s->frames || (size_t)plen != payload_len(s, QPP_LDPC_MSG_SYNDROME))
            return QPP_ERR_MESSAGE;
        if (get32(p) != s->n || get32(p + 4) != s->m || get32(p + 8) != s->d ||
            get32(p + 12) != s->cfg.n_short || get32(p + 16) != s->cfg.reveal_step || get32(p + 20) != 0 ||
            get64(p + 24) != s->key_bits)
            return QPP_ERR_MESSAGE;
        const uint8_t *q = p + QPP_LDPC_SYN_PREFIX;
        for (uint32_t f = 0; f < s->frames; f++)
            if (!check_pad(get64(q + ((size_t)f * s->mw + s->mw - 1) * 8), mpad))
                return QPP_ERR_MESSAGE;
        /* valid: commit */
        for (size_t i = 0; i < (size_t)s->frames * s->mw; i++)
            s->syn[i] = get64(q + 8 * i);
        s->state = ST_B_DECODE;
    } else if (type == QPP_LDPC_MSG_STATUS && s->state == ST_A_WAIT_STATUS) {
        if (count != s->frames || plen != s->frames)
            return QPP_ERR_MESSAGE;
        uint32_t retry = 0;
        for (uint32_t f = 0; f < s->frames; f++) {
            uint8_t v = p[f];
            if (v > QPP_LDPC_FRAME_FAILED)
                return QPP_ERR_MESSAGE;
            /* a decided frame stays decided; RETRY only while something is left to reveal */
            if (s->seq_in > 0 && s->status[f] != QPP_LDPC_FRAME_RETRY && v != s->status[f])
                return QPP_ERR_MESSAGE;
            if (v == QPP_LDPC_FRAME_RETRY && (s->cfg.reveal_step == 0 || s->fixed[f] >= s->d))
                return QPP_ERR_MESSAGE;
            if (v == QPP_LDPC_FRAME_FAILED && s->status[f] == QPP_LDPC_FRAME_RETRY &&
                s->cfg.reveal_step && s->fixed[f] < s->d)
                return QPP_ERR_MESSAGE;     /* Bob may only give up with nothing left */
            retry += v == QPP_LDPC_FRAME_RETRY;
        }
        memcpy(s->status, p, s->frames);
        s->state = retry ? ST_A_SEND_REVEAL : ST_DONE;
    } else if (type == QPP_LDPC_MSG_REVEAL && s->state == ST_B_WAIT_REVEAL) {
        if (count != count_retry(s) || (size_t)plen != payload_len(s, QPP_LDPC_MSG_REVEAL))
            return QPP_ERR_MESSAGE;
        const uint8_t *q = p;
        for (uint32_t f = 0; f < s->frames; f++) {
            if (s->status[f] != QPP_LDPC_FRAME_RETRY)
                continue;
            uint32_t dl = delta_now(s, f);
            size_t ww = wfor(dl);
            uint32_t pad = dl & 63 ? dl & 63 : 64;
            if (!check_pad(get64(q + (ww - 1) * 8), pad))
                return QPP_ERR_MESSAGE;
            q += ww * 8;
        }
        q = p;
        for (uint32_t f = 0; f < s->frames; f++) {
            if (s->status[f] != QPP_LDPC_FRAME_RETRY)
                continue;
            uint32_t dl = delta_now(s, f);
            size_t ww = wfor(dl);
            uint64_t *kf = s->x + (size_t)f * s->nw;
            for (uint32_t b = 0; b < dl; b++)
                setbit(kf, s->pos[s->fixed[f] + b], (unsigned)(get64(q + (b >> 6) * 8) >> (b & 63)));
            s->fixed[f] += dl;
            q += ww * 8;
        }
        s->rounds++;
        s->state = ST_B_DECODE;
    } else {
        return QPP_ERR_MESSAGE;             /* wrong type for this state, or unknown type */
    }
    s->seq_in++;
    s->messages++;
    return QPP_OK;
}

int qpp_ldpc_side_result(const qpp_ldpc_side *s, uint64_t *key, size_t key_words,
                         uint64_t *leaked_bits, uint32_t *frames_ok, uint32_t *messages,
                         uint32_t *rounds, uint64_t *iterations)
{
    if (!s || !key || !leaked_bits || !frames_ok || !messages || !rounds || !iterations)
        return QPP_ERR_NULL;
    if (s->state != ST_DONE)
        return QPP_ERR_STATE;
    if (key_words < wfor(s->key_bits))
        return QPP_ERR_LENGTH;
    memset(key, 0, wfor(s->key_bits) * sizeof *key);
    uint64_t leak = 0;
    uint32_t ok = 0;
    for (uint32_t f = 0; f < s->frames; f++) {
        uint32_t p = s->d - s->fixed[f];
        leak += s->m > p ? s->m - p : 0;
        ok += s->status[f] == QPP_LDPC_FRAME_OK;
        const uint64_t *src;
        if (s->role == QPP_LDPC_ALICE)
            src = s->x + (size_t)f * s->nw;
        else if (s->status[f] == QPP_LDPC_FRAME_OK)
            src = s->dec + (size_t)f * s->nw;
        else
            src = s->y + (size_t)f * s->nw;   /* failed: hand back Bob's own bits */
        extract(s->kmask, s->nw, src, key, (uint64_t)f * s->k, frame_keylen(s, f));
    }
    *leaked_bits = leak;
    *frames_ok = ok;
    *messages = s->messages;
    *rounds = s->rounds;
    *iterations = s->iterations;
    return QPP_OK;
}

int qpp_ldpc_side_frame_info(const qpp_ldpc_side *s, uint32_t frame, int *status, uint32_t *n_punct_left)
{
    if (!s || !status || !n_punct_left)
        return QPP_ERR_NULL;
    if (frame >= s->frames)
        return QPP_ERR_RANGE;
    *status = s->status[frame];
    *n_punct_left = s->d - s->fixed[frame];
    return QPP_OK;
}

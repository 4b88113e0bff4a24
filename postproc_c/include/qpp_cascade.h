/* Cascade information reconciliation as a transport-free state machine per side.
 *
 * One object holds a whole block split into frames (word-aligned, nearly equal
 * lengths, at most 65535); each frame is an independent Cascade run, and every
 * round carries the requests of all frames still running in one message.
 *
 * Alice (the side whose key is kept) is a parity oracle: she answers Bob's
 * parity requests and counts every parity bit she discloses. Bob drives the
 * protocol: top-level block parities of each pass, then BINARY bisection of odd
 * blocks, level by level, with every request of a level of all blocks in flight
 * in one message (optimized variant: the odd blocks of a pass >= 2 a wave at a
 * time, see qpp_cascade_wave), and the cascade effect through per-pass index
 * structures. Bob never asks for a parity he can infer from earlier replies.
 *
 * Message layout (all integers little-endian), header 16 bytes:
 *   0  u32 magic  0x43534351 ("QCSC")
 *   4  u8  version (1)
 *   5  u8  type    (enum qpp_cascade_msg)
 *   6  u8  variant (enum qpp_cascade_variant; both sides must agree)
 *   7  u8  reserved, 0
 *   8  u32 seq     Bob's requests count 0,1,2,...; a reply carries its request's seq
 *  12  u32 count   number of items (REQUEST), parity bits (REPLY), 0 (FINISH), 2 (VERIFY)
 * Payload:
 *   REQUEST: count items of 12 bytes: u8 pass, u8 kind (0 = range, 1 = every
 *            top-level block of the pass but, in opt passes >= 2, the last one),
 *            u16 frame, u32 start, u32 len (positions in the frame's pass order;
 *            start = len = 0 for kind 1). Items are in frame order. Optimized
 *            variant: Bob's first request holds a kind-1 item for every pass of
 *            every frame (pass order), later requests only kind 0; a pass's
 *            bisections start when the previous pass has ended. Original: one
 *            kind-1 item per frame when it starts a pass.
 *   REPLY:   ceil(count/8) bytes, the parity bits in request order, bit t in
 *            byte t/8 at bit t%8; unused high bits of the last byte are 0.
 *   FINISH:  empty (Bob has run every pass; asks for the verification hash).
 *   VERIFY:  u64 r (hash key, drawn by Alice), u64 h (polynomial hash of her key).
 * A message whose length, magic, version, type, variant, seq, count, items or
 * padding bits are wrong is refused with QPP_ERR_MESSAGE and changes nothing.
 */
#ifndef QPP_CASCADE_H
#define QPP_CASCADE_H

#include "qpp_common.h"

enum qpp_cascade_variant {
    QPP_CASCADE_OPT = 0,       /* Martinez-Mateo et al. 2015, opt. (8) schedule, block reuse,
                                  known-bit inference; every odd block of a pass at once */
    QPP_CASCADE_ORIGINAL = 1,  /* Brassard-Salvail 1993: k1 = 0.73/p, doubling, 4 passes */
    QPP_CASCADE_OPT_WAVES = 2  /* as OPT with a measured schedule and odd blocks of passes
                                  >= 2 in waves: lower f, 2-5x the round trips */
};

enum qpp_cascade_role {
    QPP_CASCADE_ALICE = 0,
    QPP_CASCADE_BOB = 1
};

enum qpp_cascade_msg {
    QPP_CASCADE_MSG_REQUEST = 1,
    QPP_CASCADE_MSG_REPLY = 2,
    QPP_CASCADE_MSG_FINISH = 3,
    QPP_CASCADE_MSG_VERIFY = 4
};

enum qpp_cascade_const {
    QPP_CASCADE_MAGIC = 0x43534351,
    QPP_CASCADE_VERSION = 1,
    QPP_CASCADE_HEADER_BYTES = 16,
    QPP_CASCADE_ITEM_BYTES = 12,
    QPP_CASCADE_MAX_PASSES = 32,
    QPP_CASCADE_VERIFY_BITS = 64
};

typedef struct qpp_cascade qpp_cascade;

typedef struct {
    uint64_t leaked_bits;     /* parity_bits + verify_bits: every bit Alice disclosed */
    uint64_t parity_bits;     /* parity bits in REPLY messages */
    uint64_t verify_bits;     /* bits of the verification hash (VERIFY message) */
    uint64_t messages_sent;
    uint64_t messages_received;
    uint64_t flips;           /* bits Bob corrected */
    uint32_t passes;          /* passes of the schedule */
    uint32_t frames;          /* frames the block was split into */
    int success;              /* 1: verification hash matched (Bob), or Bob's FINISH received (Alice) */
    int done;
    int inconsistent;         /* Bob: replies contradicted each other; the run stopped early */
} qpp_cascade_stats;

/* Block sizes of the schedule for n bits at this QBER: writes *npasses sizes. */
QPP_WUR int qpp_cascade_block_sizes(int variant, size_t n_bits, double qber,
                                    uint32_t *sizes, size_t cap, size_t *npasses);

/* Create one side. key_words: n_bits packed LSB first (unused high bits ignored).
 * seed: shared by both sides (shuffles). verify_key: Alice's fresh random hash key
 * (ignored for Bob). frame_bits: target frame length (0 = one frame; frames are at
 * most 2^30 bits and at most 65535 per object); both sides
 * must pass the same n_bits, qber, variant, seed and frame_bits. sizes/npasses:
 * an explicit block-size schedule (NULL/0 = the variant's own, see
 * qpp_cascade_block_sizes), for experiments; sizes are clamped to each frame. */
QPP_WUR int qpp_cascade_create(qpp_cascade **out, int role, int variant,
                               const uint64_t *key_words, size_t n_bits, double qber,
                               uint64_t seed, uint64_t verify_key, size_t frame_bits,
                               const uint32_t *sizes, size_t npasses);
void qpp_cascade_free(qpp_cascade *c);

/* How many odd top-level blocks of a pass >= 2 Bob bisects at a time (the rest
 * wait until those and their cascades have ended) for frames of frame_bits bits
 * at this QBER: n h(p)/1024 for QPP_CASCADE_OPT_WAVES, UINT32_MAX (all at once)
 * for the other variants. */
uint32_t qpp_cascade_wave(int variant, size_t frame_bits, double qber);
/* Bob only, before his first reply: override the wave (>= 1), for experiments.
 * Alice's answers do not depend on it. */
QPP_WUR int qpp_cascade_set_wave(qpp_cascade *c, uint32_t wave);

/* 1 when this side has finished (Alice: her VERIFY was taken), 0 otherwise. */
int qpp_cascade_done(const qpp_cascade *c);
/* Size in bytes of the next outgoing message, 0 when there is none. */
size_t qpp_cascade_pending(const qpp_cascade *c);
/* Copy the next outgoing message into buf (cap bytes) and consume it; *len = 0 if none. */
QPP_WUR int qpp_cascade_next(qpp_cascade *c, uint8_t *buf, size_t cap, size_t *len);
/* Consume one incoming message; refused (nothing changed) with a negative status. */
QPP_WUR int qpp_cascade_feed(qpp_cascade *c, const uint8_t *msg, size_t len);
/* Statistics so far; key_out (n_words words, may be NULL) receives the side's key. */
QPP_WUR int qpp_cascade_result(const qpp_cascade *c, uint64_t *key_out, size_t n_words,
                               qpp_cascade_stats *st);

/* The shuffle of one pass: pos[i] = position of key bit i in pass order (for tests). */
QPP_WUR int qpp_cascade_permutation(uint64_t seed, unsigned pass, uint32_t *pos, size_t n);
/* The verification hash of a packed key under hash key r (for tests). */
uint64_t qpp_cascade_hash(const uint64_t *key_words, size_t n_bits, uint64_t r);

#endif

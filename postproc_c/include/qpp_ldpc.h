/* LDPC syndrome reconciliation: code object, syndrome, decoder, and the
 * per-side protocol state machine (rate adaptation by puncturing/shortening,
 * blind reveal rounds). See postproc_c/src/ldpc_decode.c and ldpc_side.c.
 *
 * Also cdef text for cffi: enums only, no macros except QPP_WUR.
 */
#ifndef QPP_LDPC_H
#define QPP_LDPC_H

#include "qpp_common.h"

/* ---- code ------------------------------------------------------------- */

/* Opaque parity-check matrix H (m x n), stored by rows and by columns. */
typedef struct qpp_ldpc_code qpp_ldpc_code;

enum qpp_ldpc_limits {
    QPP_LDPC_MAX_N = 1048576,       /* frame length limit (bits) */
    QPP_LDPC_MAX_DEGREE = 4096,     /* check or variable degree limit */
    QPP_LDPC_MSG_HEADER = 24,       /* bytes of every message header */
    QPP_LDPC_SYN_PREFIX = 32        /* bytes of the SYNDROME payload before the syndromes */
};

enum qpp_ldpc_algorithm {
    QPP_LDPC_MINSUM = 0,            /* layered normalized min-sum (scale = normalization) */
    QPP_LDPC_BP = 1,                /* layered sum-product (tanh rule) */
    QPP_LDPC_QC_BP = 2,             /* QC codes only: layered sum-product on int16 LLRs (boxplus
                                       with a table correction), vectorized over the z lanes of a
                                       circulant; blind rounds continue from the previous round */
    QPP_LDPC_QC_BP8 = 3             /* QC_BP with int8 messages and check arithmetic (int16
                                       posteriors): twice the lanes per vector */
};

enum qpp_ldpc_qc_limits {
    QPP_LDPC_QC_LLR_ONE = 256,      /* int16 LLR units per nat in the QC decoder */
    QPP_LDPC_QC_LLR_MAX = 32767,    /* saturation bound of QC LLRs and posteriors (symmetric) */
    QPP_LDPC_QC_MSG_MAX = 8191,     /* bound of the QC check-to-variable messages */
    QPP_LDPC_QC_MAX_Z = 4096,
    QPP_LDPC_QC8_LLR_ONE = 8,       /* LLR units per nat in the int8 QC decoder (int16 posteriors) */
    QPP_LDPC_QC8_Q_MAX = 127,       /* its bound of the variable-to-check messages (int8) */
    QPP_LDPC_QC8_MSG_MAX = 127      /* its bound of the check-to-variable messages (int8) */
};

/* Build H from CSR rows: row r holds col_idx[row_ptr[r] .. row_ptr[r+1]).
 * Columns in a row must be < n and distinct; every row and column needs
 * degree >= 1. The arrays are copied. */
int qpp_ldpc_code_create(qpp_ldpc_code **out, uint32_t n, uint32_t m,
                         const uint32_t *row_ptr, const uint32_t *col_idx, size_t n_edges) QPP_WUR;
void qpp_ldpc_code_free(qpp_ldpc_code *code);

/* Quasi-cyclic H from a base matrix of mb x nb circulants of size z
 * (z a multiple of 16, <= QPP_LDPC_QC_MAX_Z): base row i holds the
 * circulants blk_col[blk_ptr[i] .. blk_ptr[i+1]) (distinct, < nb) with shifts
 * blk_shift[..] (< z); check i*z + l meets variable blk_col*z + (l + shift)
 * mod z. The CSR form (rows i*z + l, entries in base order) is built too, so
 * every other function works on it. */
int qpp_ldpc_code_create_qc(qpp_ldpc_code **out, uint32_t z, uint32_t mb, uint32_t nb,
                            const uint32_t *blk_ptr, const uint32_t *blk_col, const uint32_t *blk_shift,
                            size_t n_blk) QPP_WUR;
/* Circulant size of a QC code, 0 for a code built by qpp_ldpc_code_create. */
uint32_t qpp_ldpc_code_z(const qpp_ldpc_code *code);
uint32_t qpp_ldpc_code_n(const qpp_ldpc_code *code);
uint32_t qpp_ldpc_code_m(const qpp_ldpc_code *code);
size_t qpp_ldpc_code_edges(const qpp_ldpc_code *code);

/* syn = H x (mod 2). x: n bits packed (x_words >= words(n)); syn: m bits
 * (syn_words >= words(m)); unused high bits of syn's last word are zeroed. */
int qpp_ldpc_syndrome(const qpp_ldpc_code *code, const uint64_t *x, size_t x_words,
                      uint64_t *syn, size_t syn_words) QPP_WUR;

/* Decode: find x with H x = syn closest to the channel LLRs llr[0..n)
 * (llr > 0 means bit 0 more likely). Layered schedule over the rows in
 * order, early stop when the hard decision satisfies the syndrome.
 * out: n bits of the hard decision; *iterations: iterations run;
 * *matched: 1 if H out == syn, else 0 (status is still QPP_OK).
 * llr_out (may be NULL): posterior LLRs, n floats. */
int qpp_ldpc_decode(const qpp_ldpc_code *code, const float *llr, const uint64_t *syn, size_t syn_words,
                    uint32_t max_iter, int algorithm, float scale,
                    uint64_t *out, size_t out_words, float *llr_out,
                    uint32_t *iterations, int *matched) QPP_WUR;

/* Sum-product decode of lanes (1..8) frames at once, 8 frames per AVX2
 * vector. llr: lanes * n floats (frame l at l*n); syn: lanes * words(m);
 * out: lanes * words(n); iterations, matched: lanes entries. Each frame's
 * result is bit-identical to qpp_ldpc_decode(..., QPP_LDPC_BP, ...) with the
 * same max_iter on that frame alone (stall 0); stall > 0 stops a frame after
 * that many iterations without a new minimum of unsatisfied checks. */
int qpp_ldpc_decode_batch(const qpp_ldpc_code *code, uint32_t lanes, const float *llr, const uint64_t *syn,
                          size_t syn_words, uint32_t max_iter, uint32_t stall,
                          uint64_t *out, size_t out_words, uint32_t *iterations, int *matched) QPP_WUR;

/* Layered sum-product on a QC code in saturated int16 arithmetic
 * (QPP_LDPC_QC_BP): llr[0..n) channel LLRs in units of 1/QPP_LDPC_QC_LLR_ONE
 * (> 0: bit 0 more likely), |llr| <= QPP_LDPC_QC_LLR_MAX. Check update by
 * forward-backward boxplus with a 16-entry correction table (ldpc_qc.c).
 * Base rows are the layers, in order. Early
 * stop when the hard decision satisfies syn; stall as in the batch decoder.
 * post_out (may be NULL): n posterior LLRs. Bit-identical on the AVX-512BW,
 * the AVX2 and the portable path. */
int qpp_ldpc_decode_qc(const qpp_ldpc_code *code, const int16_t *llr, const uint64_t *syn, size_t syn_words,
                       uint32_t max_iter, uint32_t stall,
                       uint64_t *out, size_t out_words, int16_t *post_out,
                       uint32_t *iterations, int *matched) QPP_WUR;

/* The same decoder with int8 messages and check arithmetic (QPP_LDPC_QC_BP8):
 * llr and the int16 posteriors in units of 1/QPP_LDPC_QC8_LLR_ONE nat, |llr| <=
 * QPP_LDPC_QC_LLR_MAX (the bound: a known bit); post_out (may be NULL): n
 * posteriors. Bit-identical on the AVX-512BW (z a multiple of 64), AVX2 (z a
 * multiple of 32) and portable paths. */
int qpp_ldpc_decode_qc8(const qpp_ldpc_code *code, const int16_t *llr, const uint64_t *syn, size_t syn_words,
                        uint32_t max_iter, uint32_t stall,
                        uint64_t *out, size_t out_words, int16_t *post_out,
                        uint32_t *iterations, int *matched) QPP_WUR;

/* ---- protocol side ---------------------------------------------------- */

typedef struct qpp_ldpc_side qpp_ldpc_side;

enum qpp_ldpc_role { QPP_LDPC_ALICE = 0, QPP_LDPC_BOB = 1 };

enum qpp_ldpc_msg_type {
    QPP_LDPC_MSG_SYNDROME = 1,      /* Alice -> Bob: parameters + syndromes of every frame */
    QPP_LDPC_MSG_STATUS = 2,        /* Bob -> Alice: one byte per frame */
    QPP_LDPC_MSG_REVEAL = 3         /* Alice -> Bob: values of the next punctured bits */
};

enum qpp_ldpc_frame_status {
    QPP_LDPC_FRAME_RETRY = 0,       /* not decoded, wants a reveal */
    QPP_LDPC_FRAME_OK = 1,          /* syndrome matched */
    QPP_LDPC_FRAME_FAILED = 2       /* not decoded, nothing left to reveal */
};

struct qpp_ldpc_config {
    uint32_t n_short;               /* positions[0 .. n_short) shortened from the start (value 0) */
    uint32_t reveal_step;           /* punctured bits revealed per failed round; 0 = one-way */
    uint32_t max_iter;              /* decoder iterations per attempt */
    uint32_t stall;                 /* stop an attempt after this many iterations without a new
                                       minimum of unsatisfied checks; 0 = run to max_iter */
    int algorithm;                  /* enum qpp_ldpc_algorithm */
    float scale;                    /* min-sum normalization (ignored by BP) */
    float channel_llr;              /* log((1-q)/q) for the key bits */
    uint32_t code_tag;              /* identifies the code; both sides must agree */
    uint32_t first_iter;            /* Bob, QC blind: cap on a frame's first attempt while it has
                                       bits left to reveal; 0 = max_iter */
    uint32_t retry_iter;            /* Bob, QC blind: the same for its later attempts */
    uint32_t rel_window;            /* Bob, QC blind: also stop such an attempt once the unsatisfied */
    uint32_t rel_permille;          /* count fell by less than rel_permille / 1000 over the last
                                       rel_window (1..15) iterations; 0 = off */
};

/* positions[0..n_pos): the d = n_pos rate-adaptation positions of each frame
 * (distinct, < n); the rest of the frame, in increasing order, carries key
 * bits. Frames hold k = n - d key bits; the last frame may hold fewer, its
 * spare key positions are shortened to 0. key: key_bits packed bits.
 * Alice passes punct: n_frames * d bits (frame f at bits f*d ..), her private
 * random values for the punctured positions (positions < n_short are forced
 * to 0); Bob passes NULL/0. The key and punct arrays are copied. */
int qpp_ldpc_side_create(qpp_ldpc_side **out, const qpp_ldpc_code *code, int role,
                         const uint64_t *key, size_t key_words, uint64_t key_bits,
                         const uint32_t *positions, uint32_t n_pos,
                         const uint64_t *punct, size_t punct_words,
                         const struct qpp_ldpc_config *config) QPP_WUR;
void qpp_ldpc_side_free(qpp_ldpc_side *side);

/* Number of frames the key is split into. */
uint32_t qpp_ldpc_side_frames(const qpp_ldpc_side *side);

/* Size in bytes of the next outgoing message, 0 if none is ready. */
size_t qpp_ldpc_side_pending(const qpp_ldpc_side *side);
/* Write the next outgoing message into buf (cap >= pending); *len = bytes
 * written. May run the decoder (Bob). Returns QPP_ERR_STATE if none ready. */
int qpp_ldpc_side_next(qpp_ldpc_side *side, uint8_t *buf, size_t cap, size_t *len) QPP_WUR;
/* Consume one incoming message. A malformed, truncated, out-of-order or
 * mismatched message returns QPP_ERR_MESSAGE and leaves the side unchanged. */
int qpp_ldpc_side_feed(qpp_ldpc_side *side, const uint8_t *msg, size_t len) QPP_WUR;
int qpp_ldpc_side_done(const qpp_ldpc_side *side);

/* Result once done: key (key_bits packed; Bob's corrected key, Alice's own),
 * leaked bits, frames decoded, frames total, messages sent+received,
 * reveal rounds, decoder iterations summed. */
int qpp_ldpc_side_result(const qpp_ldpc_side *side, uint64_t *key, size_t key_words,
                         uint64_t *leaked_bits, uint32_t *frames_ok, uint32_t *messages,
                         uint32_t *rounds, uint64_t *iterations) QPP_WUR;
/* Per-frame status (enum qpp_ldpc_frame_status) and punctured count left. */
int qpp_ldpc_side_frame_info(const qpp_ldpc_side *side, uint32_t frame, int *status,
                             uint32_t *n_punct_left) QPP_WUR;

#endif

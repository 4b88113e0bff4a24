/* BB84 sifting, split the way the two nodes split it. See src/sift.c.
 * Also cdef text for cffi (see qpp_common.h).
 *
 * Count arrays are indexed basis * 3 + intensity (basis 0 = Z, 1 = X;
 * intensity 0 = signal, 1 = decoy, 2 = vacuum/second decoy): QPP_SIFT_CLASSES
 * entries.
 */
#ifndef QPP_SIFT_H
#define QPP_SIFT_H

#include "qpp_common.h"

enum qpp_sift_const {
    QPP_SIFT_BASES = 2,
    QPP_SIFT_INTENSITIES = 3,
    QPP_SIFT_CLASSES = 6,
    QPP_SIFT_MAX_CLICK = 15          /* click masks use bits 0..3 (H, V, D, A) */
};

/* Bob's counters (qpp_sift_bob counts[] indices). */
enum qpp_sift_bob_count {
    QPP_SIFT_BOB_Z = 0,              /* events announced in Z */
    QPP_SIFT_BOB_X = 1,              /* events announced in X */
    QPP_SIFT_BOB_SQUASHED_Z = 2,     /* of those, double clicks H+V given a random bit */
    QPP_SIFT_BOB_SQUASHED_X = 3,     /* of those, double clicks D+A given a random bit */
    QPP_SIFT_BOB_CROSS = 4,          /* clicks in both bases: dropped, not announced */
    QPP_SIFT_BOB_NCOUNTS = 5
};

/* Bob's step. Events (slots strictly increasing, each < frame_len; clicks 1..15)
 * -> the n_out announced events: out_slots, out_basis (0 = Z, 1 = X) and his
 * secret out_bits (0/1). Output arrays need room for n events. A double click
 * within one basis takes the next bit of the random bit stream rng (bit r is bit
 * r % 64 of rng[r / 64]; rng_bits available); *rng_used is set to the number
 * consumed. counts[QPP_SIFT_BOB_NCOUNTS] is filled.
 * Errors (outputs then undefined, *bad_index = offending event):
 * QPP_ERR_UNSORTED, QPP_ERR_RANGE (slot >= frame_len), QPP_ERR_VALUE (click
 * mask 0 or > 15), QPP_ERR_LENGTH (random bits exhausted). */
QPP_WUR int qpp_sift_bob(const uint64_t *slots, const uint8_t *clicks, size_t n, uint64_t frame_len,
                         const uint64_t *rng, uint64_t rng_bits,
                         uint64_t *out_slots, uint8_t *out_basis, uint8_t *out_bits, size_t *n_out,
                         uint64_t *rng_used, uint64_t *counts, size_t *bad_index);

/* Alice's step. Bob's announcement (slots strictly increasing, < frame_len;
 * bases 0/1) and her frame pattern (per slot basis 0/1, bit 0/1, intensity
 * 0..2; only the announced slots are read and checked) -> match[i] = 1 when
 * Alice's basis at slots[i] equals bob_basis[i], else 0; the n_sifted matched
 * events compacted into out_slots (may be NULL: not written), out_basis,
 * out_bits (Alice's), out_intensity.
 * detections[c] counts announced events by Alice's (basis, intensity) class c,
 * sifted[c] the matched ones. Errors: QPP_ERR_UNSORTED, QPP_ERR_RANGE,
 * QPP_ERR_VALUE (a bob_basis, or a pattern value at an announced slot, out of
 * domain), with *bad_index = the offending announced event. */
QPP_WUR int qpp_sift_alice(const uint64_t *slots, const uint8_t *bob_basis, size_t n,
                           const uint8_t *basis, const uint8_t *bit, const uint8_t *intensity,
                           uint64_t frame_len,
                           uint8_t *match, uint64_t *out_slots, uint8_t *out_basis, uint8_t *out_bits,
                           uint8_t *out_intensity, size_t *n_sifted,
                           uint64_t *detections, uint64_t *sifted, size_t *bad_index);

/* Bob's second step: compact his announced events (slots, basis, bits) to
 * those with match[i] == 1 (Alice's mask); *n_kept is their number.
 * out_slots may be NULL (slots then not written).
 * QPP_ERR_VALUE (*bad_index = i) for a match value other than 0/1. */
QPP_WUR int qpp_sift_bob_keep(const uint8_t *match, size_t n, const uint64_t *slots, const uint8_t *basis,
                              const uint8_t *bits, uint64_t *out_slots, uint8_t *out_basis,
                              uint8_t *out_bits, size_t *n_kept, size_t *bad_index);

/* Error counts on a disclosed subset: for each i, class basis[i] * 3 +
 * intensity[i]; compared[c] += 1, errors[c] += (a_bits[i] != b_bits[i]).
 * QPP_ERR_VALUE (*bad_index = i) for a bit, basis or intensity out of domain. */
QPP_WUR int qpp_sift_error_counts(const uint8_t *a_bits, const uint8_t *b_bits, const uint8_t *basis,
                                  const uint8_t *intensity, size_t n,
                                  uint64_t *errors, uint64_t *compared, size_t *bad_index);

/* Slots sent per (basis, intensity) class over a whole frame pattern. */
QPP_WUR int qpp_sift_frame_counts(const uint8_t *basis, const uint8_t *intensity, size_t n,
                                  uint64_t *counts, size_t *bad_index);

#endif

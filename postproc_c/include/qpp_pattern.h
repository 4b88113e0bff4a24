/* Alice's frame pattern held packed, read only at Bob's announced slots.
 * Also cdef text for cffi (see qpp_common.h).
 *
 * A pattern of frame_len slots is four bit planes of ceil(frame_len / 64)
 * words each (LSB first, as every packed array of the core): basis (0 = Z,
 * 1 = X), bit, and the intensity class as two planes (class = lo | hi << 1,
 * 0..2). Held this way a 2^20-slot frame is 512 KiB instead of 3 MiB, and
 * sifting reads the pattern at the announced events only, never the whole frame.
 */
#ifndef QPP_PATTERN_H
#define QPP_PATTERN_H

#include "qpp_common.h"

/* Gather the pattern at slots[0..n): out_basis, out_bit, out_intensity (one
 * byte per event). Slots need not be sorted. QPP_ERR_RANGE (*bad_index = i)
 * for slots[i] >= frame_len, QPP_ERR_VALUE (*bad_index = i) for an intensity
 * class 3 at slots[i]; outputs are then undefined. */
QPP_WUR int qpp_pattern_gather(const uint64_t *basis_w, const uint64_t *bit_w, const uint64_t *int_lo_w,
                               const uint64_t *int_hi_w, uint64_t frame_len,
                               const uint64_t *slots, size_t n,
                               uint8_t *out_basis, uint8_t *out_bit, uint8_t *out_intensity,
                               size_t *bad_index);

/* Slots per (basis, intensity) class, counts[basis * 3 + intensity] (6
 * entries, QPP_SIFT_CLASSES), over the whole packed pattern: popcounts of
 * word-wise plane combinations. QPP_ERR_VALUE if some slot has class 3. */
QPP_WUR int qpp_pattern_counts(const uint64_t *basis_w, const uint64_t *int_lo_w, const uint64_t *int_hi_w,
                               uint64_t frame_len, uint64_t *counts);

/* Alice's sifting step (as qpp_sift_alice) straight from the packed pattern and
 * Bob's announcement with 32-bit slots (frames of at most 2^32 slots): slots
 * strictly increasing and < frame_len, bob_basis 0/1. match[i] = 1 when her
 * basis at slots[i] equals bob_basis[i]; the n_sifted matched events compacted
 * into out_basis, out_bits (hers), out_intensity; detections[6] / sifted[6]
 * are set (not added to) per class basis * 3 + intensity. Errors, with
 * *bad_index = the event: QPP_ERR_UNSORTED, QPP_ERR_RANGE, QPP_ERR_VALUE (a
 * bob_basis > 1 or an intensity class 3 in the pattern). */
QPP_WUR int qpp_pattern_sift_alice(const uint64_t *basis_w, const uint64_t *bit_w, const uint64_t *int_lo_w,
                                   const uint64_t *int_hi_w, uint64_t frame_len,
                                   const uint32_t *slots, const uint8_t *bob_basis, size_t n,
                                   uint8_t *match, uint8_t *out_basis, uint8_t *out_bits,
                                   uint8_t *out_intensity, size_t *n_sifted,
                                   uint64_t *detections, uint64_t *sifted, size_t *bad_index);

/* The slots of SIFT_ANNOUNCE on the wire as 16-bit gaps (link.node): frames
 * laid end to end, frame f holding counts[f] strictly increasing slots;
 * gaps[i] = slots[i] - slots[i - 1] inside a frame, a frame's first slot as it
 * is. QPP_ERR_RANGE (*bad_index = i) when some gap or first slot does not fit
 * 16 bits or slots do not increase (the caller then sends the slots instead);
 * QPP_ERR_LENGTH when the counts add up to more than n. */
QPP_WUR int qpp_slot_gaps16(const uint64_t *slots, size_t n, const uint64_t *counts, size_t n_frames,
                            uint16_t *gaps, size_t *bad_index);

/* One frame's slots back from its gaps: slots[i] = gaps[0] + ... + gaps[i].
 * QPP_ERR_RANGE (*bad_index = i) when the sum reaches 2^32. (A zero gap after
 * the first gives slots that do not increase; sifting refuses those.) */
QPP_WUR int qpp_slots_from_gaps16(const uint16_t *gaps, size_t n, uint32_t *slots, size_t *bad_index);

/* A block's sifted events split by basis in one pass (link.node): for each
 * event i in order, bits[i] and intensity[i] go to z_bits/z_intensity when
 * basis[i] == 0, else to x_bits/x_intensity; *n_z and *n_x are the counts.
 * The Z outputs have room for z_cap events, the X outputs for x_cap:
 * QPP_ERR_LENGTH when either would overflow (outputs then undefined). */
QPP_WUR int qpp_split_by_basis(const uint8_t *basis, const uint8_t *bits, const uint8_t *intensity, size_t n,
                               uint8_t *z_bits, uint8_t *z_intensity, size_t z_cap,
                               uint8_t *x_bits, uint8_t *x_intensity, size_t x_cap,
                               size_t *n_z, size_t *n_x);

#endif

/* A block's sifted events kept packed, appended one frame at a time (link.node).
 * Also cdef text for cffi (see qpp_common.h).
 *
 * A block is six bit planes, LSB first as every packed array of the core: for
 * the Z basis the key bits, and the intensity class as two planes (class =
 * lo | hi << 1, 0..2); the same three for the X basis (the test bits). A
 * 2^22-bit block is then 1.5 MiB of Z planes instead of 8 MiB of bytes, and
 * verification, privacy amplification and Cascade read the key plane as is.
 */
#ifndef QPP_BLOCKBITS_H
#define QPP_BLOCKBITS_H

#include "qpp_common.h"

/* Append n sifted events in order: event i goes to the Z planes (z_bits, z_lo,
 * z_hi) at bit *n_z when basis[i] == 0, else to the X planes at bit *n_x, and
 * that count is advanced. z_cap / x_cap: bits the planes hold (whole words:
 * ceil(cap / 64)). Bits of a plane below the old count are kept, bits at and
 * above the new count in its last word are zero on return, words after it are
 * not touched. Errors, nothing written: QPP_ERR_VALUE (*bad_index = i) for a
 * basis or bit > 1 or an intensity > 2; QPP_ERR_LENGTH when either basis would
 * pass its capacity. */
QPP_WUR int qpp_block_append(const uint8_t *basis, const uint8_t *bits, const uint8_t *intensity, size_t n,
                             uint64_t *z_bits, uint64_t *z_lo, uint64_t *z_hi, size_t z_cap, size_t *n_z,
                             uint64_t *x_bits, uint64_t *x_lo, uint64_t *x_hi, size_t x_cap, size_t *n_x,
                             size_t *bad_index);

/* Per intensity class c = lo | hi << 1 over the first n_bits bits of the planes:
 * counts[c] (3 entries) = bits of class c; when a and b are both given,
 * errors[c] = bits of class c where a and b differ (errors may then not be NULL;
 * with a or b NULL errors is not written). Unused high bits of the last word are
 * ignored. QPP_ERR_VALUE when some bit has class 3 (lo and hi both set). */
QPP_WUR int qpp_block_class_counts(const uint64_t *lo, const uint64_t *hi, const uint64_t *a,
                                   const uint64_t *b, size_t n_bits, uint64_t *counts, uint64_t *errors);

/* Append the n bytes src (each 0 or 1) to the plane w at bit *pos (advanced by n); w holds cap
 * bits. Bits above the new *pos in its last word are zero. QPP_ERR_VALUE (*bad_index = i) for
 * a byte > 1, QPP_ERR_LENGTH past cap; nothing is written then. */
QPP_WUR int qpp_plane_append_bytes(const uint8_t *src, size_t n, uint64_t *w, size_t cap, size_t *pos,
                                   size_t *bad_index);

/* Alice's sifting of one frame straight into packed outputs (link.node): as
 * qpp_pattern_sift_alice, reading her packed pattern (planes basis_w, bit_w, int_lo_w,
 * int_hi_w of frame_len slots) at Bob's n announced slots (uint32, strictly increasing,
 * < frame_len) with his bases packed (bit bob_pos + i of bob_basis_w is event i's), but
 * writing no bytes per event: the match mask (1 = same basis) is appended to match_w at
 * *match_pos, the matched events' intensity classes to mlo_w / mhi_w at *m_pos (the
 * SIFT_MATCH message's planes), and the matched events (her basis, bit, class) to the
 * block's planes as qpp_block_append does. match_cap, m_cap, z_cap, x_cap: bits the planes
 * hold; each must have room for n more (QPP_ERR_LENGTH otherwise). detections[6] and
 * sifted[6] are set per class basis * 3 + intensity. Errors (positions and counts are then
 * not advanced; plane bits past them may have changed), *bad_index = the event:
 * QPP_ERR_UNSORTED, QPP_ERR_RANGE, QPP_ERR_VALUE (intensity class 3 in the pattern). */
QPP_WUR int qpp_sift_alice_block(const uint64_t *basis_w, const uint64_t *bit_w, const uint64_t *int_lo_w,
                                 const uint64_t *int_hi_w, uint64_t frame_len,
                                 const uint32_t *slots, const uint64_t *bob_basis_w, size_t bob_pos, size_t n,
                                 uint64_t *match_w, size_t match_cap, size_t *match_pos,
                                 uint64_t *mlo_w, uint64_t *mhi_w, size_t m_cap, size_t *m_pos,
                                 uint64_t *z_bits, uint64_t *z_lo, uint64_t *z_hi, size_t z_cap, size_t *n_z,
                                 uint64_t *x_bits, uint64_t *x_lo, uint64_t *x_hi, size_t x_cap, size_t *n_x,
                                 uint64_t *detections, uint64_t *sifted, size_t *bad_index);

/* Bob's second sifting step of one frame into the block's planes (link.node): his n
 * announced events (basis 0/1 and his bit 0/1, one byte each), Alice's match mask for them
 * (bits match_pos .. match_pos + n - 1 of match_w) and the intensity classes of the matched
 * ones in order (bits m_pos.. of mlo_w / mhi_w, m_avail of them from m_pos on): each
 * matched event is appended to the Z or X planes as qpp_block_append does, and *m_used is
 * set to the number matched. Errors (counts not advanced): QPP_ERR_VALUE (*bad_index = i:
 * a basis or bit > 1; for a class 3, the first event of its group of 64), QPP_ERR_LENGTH (more matches than m_avail, or no room
 * for n more bits in a plane). */
QPP_WUR int qpp_sift_bob_block(const uint8_t *basis, const uint8_t *bits, size_t n,
                               const uint64_t *match_w, size_t match_pos,
                               const uint64_t *mlo_w, const uint64_t *mhi_w, size_t m_pos, size_t m_avail,
                               size_t *m_used,
                               uint64_t *z_bits, uint64_t *z_lo, uint64_t *z_hi, size_t z_cap, size_t *n_z,
                               uint64_t *x_bits, uint64_t *x_lo, uint64_t *x_hi, size_t x_cap, size_t *n_x,
                               size_t *bad_index);

#endif

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

#endif

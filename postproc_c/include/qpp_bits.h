/* Packing 0/1 bytes into 64-bit words (LSB first) and back.
 *
 * Bit i of the message is bit i % 64 of word i / 64; the unused high bits of
 * the last word are written as zero and ignored on input. Also cdef text for
 * cffi (see qpp_common.h).
 */
#ifndef QPP_BITS_H
#define QPP_BITS_H

#include "qpp_common.h"

/* Pack n bytes, each 0 or 1, into n_words = ceil(n / 64) words.
 * QPP_ERR_VALUE if a byte is neither 0 nor 1 (*bad_index = its index, may be NULL);
 * QPP_ERR_LENGTH if n_words != ceil(n / 64). words is written only on success. */
QPP_WUR int qpp_pack_bits(const uint8_t *bits, size_t n, uint64_t *words, size_t n_words,
                          size_t *bad_index);

/* Unpack the first n bits of n_words = ceil(n / 64) words into n bytes 0/1. */
QPP_WUR int qpp_unpack_bits(const uint64_t *words, size_t n_words, size_t n, uint8_t *bits);

#endif

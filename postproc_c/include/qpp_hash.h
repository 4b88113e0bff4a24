/* Polynomial hash over GF(2^64) (epsilon-almost-universal) for error
 * verification and Wegman-Carter authentication. See src/polyhash.c for the
 * exact definition. Also cdef text for cffi (see qpp_common.h).
 */
#ifndef QPP_HASH_H
#define QPP_HASH_H

#include "qpp_common.h"

enum qpp_poly_hash_const {
    QPP_POLY_HASH_TAG_BYTES = 8,       /* a tag is one GF(2^64) element */
    QPP_POLY_HASH_POLY_LOW = 27        /* x^64 + x^4 + x^3 + x + 1: the low terms, 0x1B */
};

/* Hash the first n_bits bits of words (n_words = ceil(n_bits / 64), LSB first;
 * unused high bits of the last word are ignored) under key; tag out. */
QPP_WUR int qpp_poly_hash(const uint64_t *words, size_t n_words, uint64_t n_bits, uint64_t key,
                          uint64_t *tag);

/* The same hash of a byte string: identical to qpp_poly_hash of its bits
 * (byte i = bits 8i..8i+7, LSB first) with n_bits = 8 * len. */
QPP_WUR int qpp_poly_hash_bytes(const uint8_t *data, size_t len, uint64_t key, uint64_t *tag);

/* One multiplication in GF(2^64) mod x^64 + x^4 + x^3 + x + 1 (for tests). */
uint64_t qpp_gf64_mul(uint64_t a, uint64_t b);

#endif

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

/* Wegman-Carter tag of a byte string: qpp_poly_hash_bytes(data, key) XOR pad, with the
 * 64-bit key and one-time pad read from the caller's 8-byte buffers (little-endian) and
 * the tag written to tag_out (8 bytes, little-endian). Secrets stay in memory the caller
 * can wipe (no integer of a language runtime holds them); the hash value and the copies
 * of key and pad on this function's stack are wiped before it returns. */
QPP_WUR int qpp_wc_tag(const uint8_t *data, size_t len, const uint8_t *key8, const uint8_t *pad8,
                       uint8_t *tag_out);

/* Check a received Wegman-Carter tag (8 bytes): 1 if it is the tag of data under key8 and
 * pad8, 0 if not, compared in constant time; the expected tag never leaves this function
 * (wiped before it returns). Negative status on a NULL argument. */
QPP_WUR int qpp_wc_verify(const uint8_t *data, size_t len, const uint8_t *key8, const uint8_t *pad8,
                          const uint8_t *tag8);

/* One multiplication in GF(2^64) mod x^64 + x^4 + x^3 + x + 1 (for tests). */
uint64_t qpp_gf64_mul(uint64_t a, uint64_t b);

#endif

/* Internal GF(2)[x] arithmetic shared by toeplitz.c (not part of the cffi API:
 * this header lives in src/, so build_ffi.py never hands it to cdef).
 *
 * Polynomials are packed 64 coefficients per uint64_t, least significant
 * coefficient first. `fast` selects the PCLMULQDQ code (the caller checks
 * qpp_cpu_features()); fast = 0 is the portable C99 path, bit-identical.
 */
#ifndef QPP_GF2X_INTERNAL_H
#define QPP_GF2X_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Zero `bytes` bytes at p in a way the compiler cannot drop (key-derived working
 * buffers are wiped before they are freed, as sodium_memzero does). */
void qpp_gf2x_wipe(void *p, size_t bytes);

/* Scratch words qpp_gf2x_mul needs for operands of na and nb words. */
size_t qpp_gf2x_mul_scratch_words(size_t na, size_t nb);

/* c[0 .. na+nb) = a * b (Karatsuba over 64-bit words, schoolbook base case).
 * c must not overlap a, b or scratch. */
void qpp_gf2x_mul(uint64_t *c, const uint64_t *a, size_t na, const uint64_t *b, size_t nb,
                  uint64_t *scratch, int fast);

/* Portable 64x64 -> 128 carry-less multiply. */
void qpp_clmul64_portable(uint64_t a, uint64_t b, uint64_t *lo, uint64_t *hi);

/* Toeplitz hash (contract of qpp_toeplitz_hash, arguments already checked) by the
 * additive FFT over GF(2^64); blocks = number of key blocks (0 = chosen by cost).
 * Returns QPP_OK, QPP_ERR_NOMEM or QPP_ERR_LENGTH. */
int qpp_toeplitz_afft(const uint64_t *key, size_t n_in, const uint64_t *seed, size_t n_out,
                      uint64_t *out, unsigned blocks, int fast);

/* Kernel the additive FFT runs for a given `fast` flag: 0 portable, 1 PCLMULQDQ,
 * 2 AVX-512 VPCLMULQDQ. */
int qpp_toeplitz_afft_kernel(int fast);

/* out[0 .. words_for(nbits)) = bits [start, start + nbits) of a * b (a has na_bits
 * bits, b nb_bits; bits above those in the last word are ignored), by Karatsuba.
 * Returns QPP_OK or QPP_ERR_NOMEM. */
int qpp_gf2x_kara_mul_range(const uint64_t *a, size_t na_bits, const uint64_t *b, size_t nb_bits,
                            size_t start, size_t nbits, uint64_t *out, int fast);

/* out[q] = bits [start + 64q, start + 64q + 64) of p (p has np words; bits past
 * the end read as 0), nbits bits in all, unused high bits of the last word zeroed. */
void qpp_gf2x_extract(uint64_t *out, const uint64_t *p, size_t np, size_t start, size_t nbits);

#endif

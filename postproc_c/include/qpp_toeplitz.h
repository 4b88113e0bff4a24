/* Toeplitz hashing for privacy amplification.
 *
 * out = T k over GF(2), where T is the n_out x n_in Toeplitz matrix built from a
 * seed s of n_in + n_out - 1 bits: bit i of out is the parity over j of
 * s[i - j + n_in - 1] & k[j], i.e. bits n_in - 1 .. n_in + n_out - 2 of the GF(2)
 * polynomial product s * k. Bits are packed 64 per word, LSB first; the caller
 * gives key[words(n_in)], seed[words(n_in + n_out - 1)], out[words(n_out)].
 * Bits above n_in (n_in + n_out - 1) in the last key (seed) word are ignored;
 * unused high bits of the last out word are written as 0.
 */
#ifndef QPP_TOEPLITZ_H
#define QPP_TOEPLITZ_H

#include "qpp_common.h"

/* Algorithm choice: AUTO picks by size (the measured crossover); the others
 * force one method, for tests that check both against each other. */
enum qpp_toeplitz_method {
    QPP_TOEPLITZ_AUTO = 0,
    QPP_TOEPLITZ_KARATSUBA = 1,
    QPP_TOEPLITZ_AFFT = 2
};

/* Largest n_in accepted (bits). */
enum { QPP_TOEPLITZ_MAX_BITS = 1073741824 };

/* 1 <= n_out <= n_in <= QPP_TOEPLITZ_MAX_BITS, else QPP_ERR_LENGTH; NULL pointers
 * give QPP_ERR_NULL; QPP_ERR_NOMEM if working memory cannot be allocated (the FFT
 * method uses at most three arrays of 2^k words, 2^k < (2 n_in + n_out) / 16 + 8,
 * about 100 MB at n_in = 10^8, n_out = n_in / 4; Karatsuba about 14 n_in / 8 bytes). */
int qpp_toeplitz_hash(const uint64_t *key, size_t n_in, const uint64_t *seed, size_t n_out,
                      uint64_t *out) QPP_WUR;

int qpp_toeplitz_hash_method(const uint64_t *key, size_t n_in, const uint64_t *seed, size_t n_out,
                             uint64_t *out, int method) QPP_WUR;

/* The additive-FFT method with the key cut into `blocks` pieces (0 = chosen by
 * cost, else 1 .. min(64, n_in); QPP_ERR_VALUE otherwise). Same result for every
 * block count; exposed so tests can check that. */
int qpp_toeplitz_hash_afft(const uint64_t *key, size_t n_in, const uint64_t *seed, size_t n_out,
                           uint64_t *out, unsigned blocks) QPP_WUR;

/* Field-multiply kernel the FFT method uses now: QPP_TOEPLITZ_PORTABLE,
 * QPP_TOEPLITZ_PCLMUL (SSE, 2 products per step) or QPP_TOEPLITZ_VPCLMUL512
 * (AVX-512 VPCLMULQDQ, 8 per step; needs the AVX2 feature bit enabled too). */
enum qpp_toeplitz_kernel {
    QPP_TOEPLITZ_PORTABLE = 0,
    QPP_TOEPLITZ_PCLMUL = 1,
    QPP_TOEPLITZ_VPCLMUL512 = 2
};
int qpp_toeplitz_kernel(void);

/* Input size (bits of n_in) from which AUTO uses the additive FFT. */
size_t qpp_toeplitz_afft_threshold(void);

#endif

/* Toeplitz hash (privacy amplification): argument checks and the choice
 * between Karatsuba (gf2x_mul.c) and the additive FFT (toeplitz_afft.c).
 * See qpp_toeplitz.h for the exact definition and postproc_c/toeplitz.py for
 * why these methods. No global state; reentrant.
 */
#include "qpp_common.h"
#include "qpp_toeplitz.h"
#include "gf2x_internal.h"

/* Measured crossover (bench/test_bench_toeplitz.py and the docstring of
 * postproc_c/toeplitz.py): below this n_in Karatsuba is faster. */
enum { AFFT_THRESHOLD_BITS = 20000 };

size_t qpp_toeplitz_afft_threshold(void) { return AFFT_THRESHOLD_BITS; }

int qpp_toeplitz_kernel(void)
{
    return qpp_toeplitz_afft_kernel((qpp_cpu_features() & QPP_CPU_PCLMUL) != 0);
}

static int check_args(const uint64_t *key, size_t n_in, const uint64_t *seed, size_t n_out,
                      const uint64_t *out)
{
    if (!key || !seed || !out)
        return QPP_ERR_NULL;
    if (n_in < 1 || n_out < 1 || n_out > n_in || n_in > (size_t)QPP_TOEPLITZ_MAX_BITS)
        return QPP_ERR_LENGTH;
    return QPP_OK;
}

int qpp_toeplitz_hash_afft(const uint64_t *key, size_t n_in, const uint64_t *seed, size_t n_out,
                           uint64_t *out, unsigned blocks)
{
    int st = check_args(key, n_in, seed, n_out, out);
    if (st != QPP_OK)
        return st;
    if (blocks > 64 || blocks > n_in)
        return QPP_ERR_VALUE;
    return qpp_toeplitz_afft(key, n_in, seed, n_out, out, blocks,
                             (qpp_cpu_features() & QPP_CPU_PCLMUL) != 0);
}

int qpp_toeplitz_hash_method(const uint64_t *key, size_t n_in, const uint64_t *seed, size_t n_out,
                             uint64_t *out, int method)
{
    int st = check_args(key, n_in, seed, n_out, out);
    if (st != QPP_OK)
        return st;
    if (method < QPP_TOEPLITZ_AUTO || method > QPP_TOEPLITZ_AFFT)
        return QPP_ERR_VALUE;
    int fast = (qpp_cpu_features() & QPP_CPU_PCLMUL) != 0;
    size_t n_seed = n_in + n_out - 1;
    if (method == QPP_TOEPLITZ_AUTO)
        method = n_in >= AFFT_THRESHOLD_BITS ? QPP_TOEPLITZ_AFFT : QPP_TOEPLITZ_KARATSUBA;
    if (method == QPP_TOEPLITZ_AFFT)
        return qpp_toeplitz_afft(key, n_in, seed, n_out, out, 0, fast);
    return qpp_gf2x_kara_mul_range(seed, n_seed, key, n_in, n_in - 1, n_out, out, fast);
}

int qpp_toeplitz_hash(const uint64_t *key, size_t n_in, const uint64_t *seed, size_t n_out,
                      uint64_t *out)
{
    return qpp_toeplitz_hash_method(key, n_in, seed, n_out, out, QPP_TOEPLITZ_AUTO);
}

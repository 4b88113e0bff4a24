/* Status text, version stamp, run-time CPU-feature selection and the wipe. */
#define _DEFAULT_SOURCE 1   /* explicit_bzero in glibc's <string.h> under -std=c99 */
#include "qpp_common.h"

#include <string.h>

#ifndef QPP_VERSION
#error "QPP_VERSION must be defined by the build (postproc_c/build_ffi.py)"
#endif

const char *qpp_strerror(int status)
{
    switch (status) {
    case QPP_OK: return "ok";
    case QPP_ERR_NULL: return "null pointer argument";
    case QPP_ERR_LENGTH: return "invalid or inconsistent length";
    case QPP_ERR_VALUE: return "element value out of domain";
    case QPP_ERR_UNSORTED: return "slot indices not strictly increasing";
    case QPP_ERR_RANGE: return "index outside the frame";
    case QPP_ERR_NOMEM: return "out of memory";
    case QPP_ERR_STATE: return "call not valid in the current state";
    case QPP_ERR_MESSAGE: return "malformed, truncated or out-of-order message";
    case QPP_ERR_DECODE: return "decoding did not converge";
    case QPP_ERR_INTERNAL: return "internal error";
    default: return "unknown status";
    }
}

const char *qpp_version(void) { return QPP_VERSION; }

/* The feature mask is detected once; the only shared state is this read-mostly
 * word, set before any worker runs, so the core stays reentrant. */
static unsigned detected_features(void)
{
    unsigned f = 0;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1"))
        f |= QPP_CPU_PCLMUL;
    if (__builtin_cpu_supports("avx2"))
        f |= QPP_CPU_AVX2;
    if (__builtin_cpu_supports("popcnt"))
        f |= QPP_CPU_POPCNT;
    if ((f & QPP_CPU_AVX2) && __builtin_cpu_supports("avx512bw"))   /* libgcc also checks the OS saves zmm */
        f |= QPP_CPU_AVX512BW;
    if (__builtin_cpu_supports("bmi2"))
        f |= QPP_CPU_BMI2;
#endif
    return f;
}

static volatile unsigned disabled_mask = 0;

unsigned qpp_cpu_features(void) { return detected_features() & ~disabled_mask; }

void qpp_cpu_disable(unsigned disable_mask) { disabled_mask = disable_mask; }

#if (defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 25))) || \
    defined(__OpenBSD__) || defined(__FreeBSD__) || defined(__NetBSD__)
#define QPP_HAVE_EXPLICIT_BZERO 1
#else
/* A function pointer read through volatile: the compiler cannot prove the
 * callee is memset, so it cannot drop the stores as dead before a free().
 * Defined only where it is used, so no unused-variable warning elsewhere. */
static void *(*const volatile memzero_memset)(void *, int, size_t) = memset;
#endif

void qpp_memzero(void *p, size_t n)
{
    if (!p || !n) return;
#ifdef QPP_HAVE_EXPLICIT_BZERO
    explicit_bzero(p, n);
#else
    memzero_memset(p, 0, n);
#endif
#if defined(__GNUC__)
    /* The buffer's memory is "used" here, after the stores. */
    __asm__ __volatile__("" : : "r"(p) : "memory");
#endif
}

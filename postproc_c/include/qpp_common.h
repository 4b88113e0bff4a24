/* Status codes, version and CPU-feature report shared by every part of the C core.
 *
 * This header is also cdef text for cffi: build_ffi.py drops preprocessor lines
 * and the QPP_WUR marker before handing it to cdef, so declarations here must
 * be plain C that cffi's parser understands (enums, not #define constants).
 */
#ifndef QPP_COMMON_H
#define QPP_COMMON_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define QPP_WUR __attribute__((warn_unused_result))
#else
#define QPP_WUR
#endif

/* Every function returns QPP_OK (0) or one of these negative codes. */
enum qpp_status {
    QPP_OK = 0,
    QPP_ERR_NULL = -1,        /* a required pointer is NULL */
    QPP_ERR_LENGTH = -2,      /* a length is zero, too large or inconsistent */
    QPP_ERR_VALUE = -3,       /* an element has a value outside its domain (e.g. a bit not 0/1) */
    QPP_ERR_UNSORTED = -4,    /* slot indices not strictly increasing */
    QPP_ERR_RANGE = -5,       /* an index lies outside the frame */
    QPP_ERR_NOMEM = -6,       /* allocation failed */
    QPP_ERR_STATE = -7,       /* call not valid in the object's current state */
    QPP_ERR_MESSAGE = -8,     /* malformed, truncated or out-of-order message */
    QPP_ERR_DECODE = -9,      /* decoding did not converge */
    QPP_ERR_INTERNAL = -10    /* an internal invariant failed (a bug: please report) */
};

/* Text for a status code; never NULL, static storage. */
const char *qpp_strerror(int status);

/* Version the core was built as; the Python package refuses a mismatch. */
const char *qpp_version(void);

/* Bit mask of CPU fast paths this process selected at run time (QPP_CPU_*). */
enum qpp_cpu_feature {
    QPP_CPU_PCLMUL = 1,
    QPP_CPU_AVX2 = 2,
    QPP_CPU_POPCNT = 4,
    QPP_CPU_AVX512BW = 8,           /* only with AVX2 (a path that needs it needs both) */
    QPP_CPU_BMI2 = 16               /* pext: blockbits.c appends 64 sifted events per step */
};
unsigned qpp_cpu_features(void);

/* Force the portable paths (for tests that compare against the fast ones).
 * disable_mask is a QPP_CPU_* mask of features to ignore; 0 restores them.
 * Not thread-safe against concurrent calls in flight: set it before work starts. */
void qpp_cpu_disable(unsigned disable_mask);

/* Overwrite n bytes at p with zeros in a way the compiler cannot drop as a dead
 * store (explicit_bzero where the C library has it, else memset through a
 * volatile function pointer plus a compiler barrier). Every buffer the core
 * allocated that held key bits goes through this before free(). p may be NULL
 * when n is 0. */
void qpp_memzero(void *p, size_t n);

#endif

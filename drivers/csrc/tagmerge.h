/* k-way merge of already-sorted int64 streams, each carrying a uint8 label.
 *
 * This header is both the C declaration and the cffi cdef text (build_tagmerge.py
 * drops preprocessor lines and comments), so it holds declarations only.
 */
#ifndef TAGMERGE_H
#define TAGMERGE_H

#include <stddef.h>
#include <stdint.h>

enum tm_status {
    TM_OK = 0,
    TM_ERR_NULL = -1,     /* a required pointer is NULL */
    TM_ERR_UNSORTED = -2, /* a source stream is not in non-decreasing order */
    TM_ERR_TOO_MANY = -3, /* more streams than TM_MAX_STREAMS */
    TM_ERR_RANGE = -4     /* a value is out of the allowed range, or a result overflows */
};

/* TM_SPARSE_RATIO: a stream with at most 1/TM_SPARSE_RATIO of all entries is inserted, not merged */
enum { TM_ABI_VERSION = 3, TM_MAX_STREAMS = 64, TM_SPARSE_RATIO = 32 };

int tm_abi_version(void);

/* Merge k sorted streams src[s][0 .. n[s]) into out_t[0 .. sum n) in
 * non-decreasing order; out_label[i] = label[s] of the stream the value came
 * from. Equal values keep stream order (stream 0 first): the merge is stable.
 * scratch_t / scratch_label: caller buffers of sum n entries (may be NULL when
 * k <= 2). On TM_ERR_UNSORTED, *bad_stream is the stream index and nothing in
 * out_* is meaningful. Pure function of its arguments: reentrant, no allocation. */
int tm_merge_i64(size_t k, const int64_t *const *src, const int64_t *n, const uint8_t *label,
                 int64_t *out_t, uint8_t *out_label, int64_t *scratch_t, uint8_t *scratch_label,
                 int64_t *bad_stream);

/* Check interleaved (value, index) uint64 pairs in one pass: every value
 * < value_limit, every index < index_limit, indices non-decreasing. Returns
 * TM_OK, TM_ERR_RANGE or TM_ERR_UNSORTED with *bad the first offending pair
 * (the first pair out of order for TM_ERR_UNSORTED). */
int tm_check_pairs(const uint64_t *pairs, int64_t n, uint64_t value_limit, uint64_t index_limit,
                   int64_t *bad);

/* out[i] = index_i * scale + value_i for interleaved (value, index) pairs
 * already checked by tm_check_pairs; TM_ERR_RANGE (*bad = the pair) if a
 * result would not fit int64. scale >= 1. */
int tm_pairs_affine(const uint64_t *pairs, int64_t n, int64_t scale, int64_t *out, int64_t *bad);

#endif

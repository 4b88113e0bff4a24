/* Internal declarations shared by ldpc_decode.c and ldpc_side.c (not cdef:
 * lives in src/, not include/). */
#ifndef QPP_LDPC_INTERNAL_H
#define QPP_LDPC_INTERNAL_H

#include "qpp_ldpc.h"

struct qpp_ldpc_code {
    uint32_t n, m;
    size_t n_edges;
    uint32_t max_row_deg;
    uint32_t *row_ptr;      /* m + 1 */
    uint32_t *col_idx;      /* n_edges, row-major */
};

typedef struct {
    float *r;               /* check-to-variable message per edge */
    float *post;            /* posterior LLR per variable */
    float *q;               /* variable-to-check messages of the current row */
    float *t;               /* BP scratch: tanh and prefix products of the row */
    uint64_t *hard;         /* hard decision, n bits */
    uint64_t *chk;          /* syndrome of the hard decision, m bits */
} ldpc_ws;

int ldpc_ws_init(ldpc_ws *ws, const qpp_ldpc_code *c);
void ldpc_ws_free(ldpc_ws *ws);
void ldpc_syndrome_raw(const qpp_ldpc_code *c, const uint64_t *x, uint64_t *syn);
int ldpc_decode_ws(const qpp_ldpc_code *c, const float *llr, const uint64_t *syn,
                   uint32_t max_iter, uint32_t stall, int algorithm, float scale,
                   uint64_t *out, float *llr_out, uint32_t *iterations, int *matched, ldpc_ws *ws);

#endif

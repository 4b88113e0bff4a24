/* Batched sum-product decoding: up to 8 frames of the same code at once, one
 * frame per float lane, so every edge update is one 8-wide vector operation
 * and the row's prefix/suffix products no longer form a scalar chain.
 *
 * Layout: posteriors post8[v * 8 + lane], messages r8[e * 8 + lane]. Each
 * lane runs exactly the arithmetic of the single-frame layered decoder in
 * ldpc_decode.c (same polynomial tanh/atanh, same operation order, same
 * stopping rule per lane), so lane l's output is bit-identical to decoding
 * frame l alone; tests/test_ldpc.py checks this for the AVX2 and the
 * portable path. A lane that has stopped keeps being computed (its results
 * are frozen when it stops); unused lanes hold an all-zero frame that is
 * satisfied from the start.
 */
#include <stdlib.h>
#include <string.h>

#include "qpp_ldpc.h"
#include "ldpc_internal.h"

#define LANES 8

static size_t wfor(size_t bits) { return (bits + 63) / 64; }

typedef struct {
    float *q, *th, *pre;    /* row scratch: max_row_deg * LANES each */
} row_ws;

static void layer8_portable(const qpp_ldpc_code *c, const uint8_t *synmask, float *r8, float *post8,
                            row_ws *w)
{
    const uint32_t *col = c->col_idx;
    for (uint32_t row = 0; row < c->m; row++) {
        uint32_t beg = c->row_ptr[row], deg = c->row_ptr[row + 1] - beg;
        for (uint32_t i = 0; i < deg; i++) {
            const float *pv = post8 + (size_t)col[beg + i] * LANES;
            const float *rv = r8 + (size_t)(beg + i) * LANES;
            for (int l = 0; l < LANES; l++) {
                float qe = pv[l] - rv[l];
                w->q[i * LANES + l] = qe;
                w->th[i * LANES + l] = ldpc_th_half(qe);
            }
        }
        for (int l = 0; l < LANES; l++) {
            float acc = ((synmask[row] >> l) & 1) ? -1.0f : 1.0f;
            for (uint32_t i = 0; i < deg; i++) {
                w->pre[i * LANES + l] = acc;
                acc *= w->th[i * LANES + l];
            }
            float suffix = 1.0f;
            for (uint32_t k = deg; k-- > 0;) {
                float p = w->pre[k * LANES + l] * suffix;
                suffix *= w->th[k * LANES + l];
                w->pre[k * LANES + l] = ldpc_clamp_p(p);
            }
        }
        for (uint32_t i = 0; i < deg; i++) {
            float *pv = post8 + (size_t)col[beg + i] * LANES;
            float *rv = r8 + (size_t)(beg + i) * LANES;
            for (int l = 0; l < LANES; l++) {
                float re = ldpc_atanh2(w->pre[i * LANES + l]);
                rv[l] = re;
                pv[l] = w->q[i * LANES + l] + re;
            }
        }
    }
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define HAVE_AVX2_PATH 1

__attribute__((target("avx2"))) static void layer8_avx2(const qpp_ldpc_code *c, const uint8_t *synmask,
                                                        float *r8, float *post8, row_ws *w)
{
    const uint32_t *col = c->col_idx;
    const __m256 lim = _mm256_set1_ps(LDPC_P_LIM), nlim = _mm256_set1_ps(-LDPC_P_LIM);
    const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    for (uint32_t row = 0; row < c->m; row++) {
        uint32_t beg = c->row_ptr[row], deg = c->row_ptr[row + 1] - beg;
        for (uint32_t i = 0; i < deg; i++) {
            __m256 qv = _mm256_sub_ps(_mm256_loadu_ps(post8 + (size_t)col[beg + i] * LANES),
                                      _mm256_loadu_ps(r8 + (size_t)(beg + i) * LANES));
            _mm256_storeu_ps(w->q + i * LANES, qv);
            _mm256_storeu_ps(w->th + i * LANES, ldpc_th_half8(qv));
        }
        /* syndrome sign per lane: -1 where the lane's bit is set */
        __m256i hit = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(synmask[row]), lane_bit), lane_bit);
        __m256 acc = _mm256_blendv_ps(_mm256_set1_ps(1.0f), _mm256_set1_ps(-1.0f), _mm256_castsi256_ps(hit));
        for (uint32_t i = 0; i < deg; i++) {
            _mm256_storeu_ps(w->pre + i * LANES, acc);
            acc = _mm256_mul_ps(acc, _mm256_loadu_ps(w->th + i * LANES));
        }
        __m256 suffix = _mm256_set1_ps(1.0f);
        for (uint32_t k = deg; k-- > 0;) {
            __m256 p = _mm256_mul_ps(_mm256_loadu_ps(w->pre + k * LANES), suffix);
            suffix = _mm256_mul_ps(suffix, _mm256_loadu_ps(w->th + k * LANES));
            /* same as the scalar p > lim ? lim : (p < -lim ? -lim : p) for non-NaN p */
            p = _mm256_blendv_ps(p, lim, _mm256_cmp_ps(p, lim, _CMP_GT_OQ));
            p = _mm256_blendv_ps(p, nlim, _mm256_cmp_ps(p, nlim, _CMP_LT_OQ));
            __m256 re = ldpc_atanh2_8(p);
            _mm256_storeu_ps(r8 + (size_t)(beg + k) * LANES, re);
            _mm256_storeu_ps(post8 + (size_t)col[beg + k] * LANES,
                             _mm256_add_ps(_mm256_loadu_ps(w->q + k * LANES), re));
        }
    }
}
#endif

/* Per-lane unsatisfied-check counts of the current hard decisions. */
static void count_unsat(const qpp_ldpc_code *c, const uint8_t *synmask, const float *post8, uint8_t *sign,
                        uint32_t *bad)
{
    for (uint32_t v = 0; v < c->n; v++) {
        unsigned m = 0;
        for (int l = 0; l < LANES; l++)
            m |= (unsigned)(post8[(size_t)v * LANES + l] < 0.0f) << l;
        sign[v] = (uint8_t)m;
    }
    memset(bad, 0, LANES * sizeof *bad);
    for (uint32_t row = 0; row < c->m; row++) {
        unsigned par = synmask[row];
        for (uint32_t e = c->row_ptr[row]; e < c->row_ptr[row + 1]; e++)
            par ^= sign[c->col_idx[e]];
        for (int l = 0; l < LANES; l++)
            bad[l] += (par >> l) & 1u;
    }
}

static void extract(const qpp_ldpc_code *c, const uint8_t *sign, int lane, uint64_t *out)
{
    memset(out, 0, wfor(c->n) * sizeof *out);
    for (uint32_t v = 0; v < c->n; v++)
        out[v >> 6] |= (uint64_t)((sign[v] >> lane) & 1u) << (v & 63);
}

int qpp_ldpc_decode_batch(const qpp_ldpc_code *code, uint32_t lanes, const float *llr, const uint64_t *syn,
                          size_t syn_words, uint32_t max_iter, uint32_t stall,
                          uint64_t *out, size_t out_words, uint32_t *iterations, int *matched)
{
    if (!code || !llr || !syn || !out || !iterations || !matched)
        return QPP_ERR_NULL;
    if (lanes == 0 || lanes > LANES)
        return QPP_ERR_LENGTH;
    size_t mw = wfor(code->m), nw = wfor(code->n);
    if (syn_words < lanes * mw || out_words < lanes * nw)
        return QPP_ERR_LENGTH;
    if (max_iter > 100000 || stall > 100000)
        return QPP_ERR_VALUE;
    for (size_t i = 0; i < (size_t)lanes * code->n; i++)
        if (!(llr[i] >= -1e6f && llr[i] <= 1e6f))
            return QPP_ERR_VALUE;
    return ldpc_decode_batch_raw(code, lanes, llr, syn, max_iter, stall, out, iterations, matched);
}

int ldpc_decode_batch_raw(const qpp_ldpc_code *c, uint32_t lanes, const float *llr, const uint64_t *syn,
                          uint32_t max_iter, uint32_t stall, uint64_t *out, uint32_t *iterations, int *matched)
{
    size_t mw = wfor(c->m), nw = wfor(c->n);
    float *r8 = calloc(c->n_edges * LANES, sizeof *r8);
    float *post8 = malloc((size_t)c->n * LANES * sizeof *post8);
    uint8_t *synmask = calloc(c->m, 1);
    uint8_t *sign = malloc(c->n);
    row_ws w;
    w.q = malloc((size_t)c->max_row_deg * LANES * sizeof *w.q);
    w.th = malloc((size_t)c->max_row_deg * LANES * sizeof *w.th);
    w.pre = malloc((size_t)c->max_row_deg * LANES * sizeof *w.pre);
    int st = QPP_ERR_NOMEM;
    if (!r8 || !post8 || !synmask || !sign || !w.q || !w.th || !w.pre)
        goto done;
    for (uint32_t v = 0; v < c->n; v++)
        for (uint32_t l = 0; l < LANES; l++)
            post8[(size_t)v * LANES + l] = l < lanes ? llr[(size_t)l * c->n + v] : 1000.0f;
    for (uint32_t l = 0; l < lanes; l++)
        for (uint32_t row = 0; row < c->m; row++)
            synmask[row] |= (uint8_t)(((syn[l * mw + (row >> 6)] >> (row & 63)) & 1u) << l);
    int avx2 = (qpp_cpu_features() & QPP_CPU_AVX2) != 0;
    (void)avx2;
    uint32_t bad[LANES], best[LANES], since[LANES];
    int active[LANES];
    count_unsat(c, synmask, post8, sign, bad);
    uint32_t it = 0, n_active = 0;
    for (uint32_t l = 0; l < LANES; l++) {
        best[l] = bad[l];
        since[l] = 0;
        active[l] = l < lanes && bad[l] && it < max_iter;
        n_active += (uint32_t)active[l];
        if (l < lanes && !active[l]) {
            extract(c, sign, (int)l, out + l * nw);
            iterations[l] = it;
            matched[l] = bad[l] == 0;
        }
    }
    while (n_active) {
#ifdef HAVE_AVX2_PATH
        if (avx2)
            layer8_avx2(c, synmask, r8, post8, &w);
        else
#endif
            layer8_portable(c, synmask, r8, post8, &w);
        it++;
        count_unsat(c, synmask, post8, sign, bad);
        n_active = 0;
        for (uint32_t l = 0; l < lanes; l++) {
            if (!active[l])
                continue;
            if (bad[l] < best[l]) {
                best[l] = bad[l];
                since[l] = 0;
            } else {
                since[l]++;
            }
            /* the single-frame loop condition of ldpc_decode_ws, per lane */
            if (bad[l] && it < max_iter && !(stall && since[l] >= stall)) {
                n_active++;
                continue;
            }
            active[l] = 0;
            extract(c, sign, (int)l, out + l * nw);
            iterations[l] = it;
            matched[l] = bad[l] == 0;
        }
    }
    st = QPP_OK;
done:
    free(r8);
    free(post8);
    free(synmask);
    free(sign);
    free(w.q);
    free(w.th);
    free(w.pre);
    return st;
}

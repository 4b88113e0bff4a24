/* LDPC parity-check matrix, syndrome and decoder for syndrome-based
 * (Slepian-Wolf) reconciliation.
 *
 * The decoder works on the coset {x : H x = s}: a check whose syndrome bit is
 * 1 flips the sign of its outgoing messages. Schedule: layered (row-serial,
 * "turbo decoding message passing"), which converges in about half the
 * iterations of flooding and needs only one message array (check-to-variable,
 * one float per edge) plus the posterior LLRs. Check update either
 * normalized min-sum (Chen & Fossorier 2002: r = scale * prod(sign) * min|q|)
 * or sum-product with the tanh rule (r = 2 atanh(prod tanh(q/2)), Eq. (2.10)
 * of Richardson & Urbanke, Modern Coding Theory; e^x and log x by short
 * polynomials, AVX2 over 8 edges of a row when the CPU has it). Early stop
 * as soon as the hard decision satisfies the syndrome.
 *
 * Float arithmetic is plain IEEE single precision in a fixed order (no
 * -ffast-math), so tests/test_ldpc.py reproduces the min-sum output exactly
 * with a numpy float32 reference.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "qpp_ldpc.h"
#include "ldpc_internal.h"

static size_t wfor(size_t bits) { return (bits + 63) / 64; }

int qpp_ldpc_code_create(qpp_ldpc_code **out, uint32_t n, uint32_t m,
                         const uint32_t *row_ptr, const uint32_t *col_idx, size_t n_edges)
{
    if (!out || !row_ptr || !col_idx)
        return QPP_ERR_NULL;
    *out = NULL;
    if (n == 0 || n > QPP_LDPC_MAX_N || m == 0 || m > n || n_edges == 0 ||
        n_edges > (size_t)n * QPP_LDPC_MAX_DEGREE)
        return QPP_ERR_LENGTH;
    if (row_ptr[0] != 0 || row_ptr[m] != n_edges)
        return QPP_ERR_LENGTH;
    uint32_t max_deg = 0;
    for (uint32_t r = 0; r < m; r++) {
        if (row_ptr[r + 1] <= row_ptr[r])
            return QPP_ERR_LENGTH;      /* empty row or decreasing pointer */
        uint32_t deg = row_ptr[r + 1] - row_ptr[r];
        if (deg > QPP_LDPC_MAX_DEGREE)
            return QPP_ERR_LENGTH;
        if (deg > max_deg)
            max_deg = deg;
    }
    qpp_ldpc_code *c = calloc(1, sizeof *c);
    if (!c)
        return QPP_ERR_NOMEM;
    c->n = n;
    c->m = m;
    c->n_edges = n_edges;
    c->max_row_deg = max_deg;
    c->row_ptr = malloc(((size_t)m + 1) * sizeof *c->row_ptr);
    c->col_idx = malloc(n_edges * sizeof *c->col_idx);
    uint32_t *mark = malloc((size_t)n * sizeof *mark);
    if (!c->row_ptr || !c->col_idx || !mark) {
        free(mark);
        qpp_ldpc_code_free(c);
        return QPP_ERR_NOMEM;
    }
    memcpy(c->row_ptr, row_ptr, ((size_t)m + 1) * sizeof *row_ptr);
    /* Each column at most once per row: mark[v] holds row+1 of its last use. */
    memset(mark, 0, (size_t)n * sizeof *mark);
    for (uint32_t r = 0; r < m; r++) {
        for (uint32_t e = row_ptr[r]; e < row_ptr[r + 1]; e++) {
            uint32_t v = col_idx[e];
            if (v >= n || mark[v] == r + 1) {
                free(mark);
                qpp_ldpc_code_free(c);
                return v >= n ? QPP_ERR_RANGE : QPP_ERR_VALUE;
            }
            mark[v] = r + 1;
            c->col_idx[e] = v;
        }
    }
    free(mark);
    *out = c;
    return QPP_OK;
}

void qpp_ldpc_code_free(qpp_ldpc_code *code)
{
    if (!code)
        return;
    free(code->row_ptr);
    free(code->col_idx);
    free(code->blk_ptr);
    free(code->blk_col);
    free(code->blk_shift);
    free(code);
}

uint32_t qpp_ldpc_code_n(const qpp_ldpc_code *code) { return code ? code->n : 0; }
uint32_t qpp_ldpc_code_m(const qpp_ldpc_code *code) { return code ? code->m : 0; }
size_t qpp_ldpc_code_edges(const qpp_ldpc_code *code) { return code ? code->n_edges : 0; }

void ldpc_syndrome_raw(const qpp_ldpc_code *c, const uint64_t *x, uint64_t *syn)
{
    if (c->z && c->z % 64 == 0) {
        ldpc_qc_syndrome(c, x, syn);
        return;
    }
    size_t mw = wfor(c->m);
    memset(syn, 0, mw * sizeof *syn);
    for (uint32_t r = 0; r < c->m; r++) {
        uint64_t p = 0;
        for (uint32_t e = c->row_ptr[r]; e < c->row_ptr[r + 1]; e++) {
            uint32_t v = c->col_idx[e];
            p ^= x[v >> 6] >> (v & 63);
        }
        syn[r >> 6] |= (p & 1) << (r & 63);
    }
}

int qpp_ldpc_syndrome(const qpp_ldpc_code *code, const uint64_t *x, size_t x_words,
                      uint64_t *syn, size_t syn_words)
{
    if (!code || !x || !syn)
        return QPP_ERR_NULL;
    if (x_words < wfor(code->n) || syn_words < wfor(code->m))
        return QPP_ERR_LENGTH;
    ldpc_syndrome_raw(code, x, syn);
    return QPP_OK;
}

int ldpc_ws_init(ldpc_ws *ws, const qpp_ldpc_code *c)
{
    ws->r = malloc(c->n_edges * sizeof *ws->r);
    ws->post = malloc((size_t)c->n * sizeof *ws->post);
    ws->q = malloc((size_t)c->max_row_deg * sizeof *ws->q);
    ws->t = malloc(2 * (size_t)c->max_row_deg * sizeof *ws->t);
    ws->hard = malloc(wfor(c->n) * sizeof *ws->hard);
    ws->chk = malloc(wfor(c->m) * sizeof *ws->chk);
    if (!ws->r || !ws->post || !ws->q || !ws->t || !ws->hard || !ws->chk) {
        ldpc_ws_free(ws);
        return QPP_ERR_NOMEM;
    }
    return QPP_OK;
}

void ldpc_ws_free(ldpc_ws *ws)
{
    free(ws->r);
    free(ws->post);
    free(ws->q);
    free(ws->t);
    free(ws->hard);
    free(ws->chk);
    memset(ws, 0, sizeof *ws);
}

static void hard_decision(const float *post, uint32_t n, uint64_t *hard)
{
    size_t nw = wfor(n);
    memset(hard, 0, nw * sizeof *hard);
    for (uint32_t v = 0; v < n; v++)
        hard[v >> 6] |= (uint64_t)(post[v] < 0.0f) << (v & 63);
}

static unsigned popcount64(uint64_t x)
{
    x = x - ((x >> 1) & UINT64_C(0x5555555555555555));
    x = (x & UINT64_C(0x3333333333333333)) + ((x >> 2) & UINT64_C(0x3333333333333333));
    x = (x + (x >> 4)) & UINT64_C(0x0F0F0F0F0F0F0F0F);
    return (unsigned)((x * UINT64_C(0x0101010101010101)) >> 56);
}

/* Number of checks the hard decision leaves unsatisfied (0 = syndrome matched). */
static uint32_t unsatisfied(const qpp_ldpc_code *c, const uint64_t *hard, const uint64_t *syn, uint64_t *chk)
{
    ldpc_syndrome_raw(c, hard, chk);
    size_t mw = wfor(c->m);
    uint64_t last = (c->m & 63) ? ((UINT64_C(1) << (c->m & 63)) - 1) : ~UINT64_C(0);
    uint32_t bad = 0;
    for (size_t i = 0; i + 1 < mw; i++)
        bad += popcount64(chk[i] ^ syn[i]);
    return bad + popcount64((chk[mw - 1] ^ syn[mw - 1]) & last);
}

/* One layered min-sum pass over all rows. */
static void layer_minsum(const qpp_ldpc_code *c, const uint64_t *syn, float scale, ldpc_ws *ws)
{
    float *restrict r = ws->r, *restrict post = ws->post, *restrict q = ws->q;
    const uint32_t *restrict col = c->col_idx;
    for (uint32_t row = 0; row < c->m; row++) {
        uint32_t beg = c->row_ptr[row], end = c->row_ptr[row + 1];
        unsigned sgn = (unsigned)(syn[row >> 6] >> (row & 63)) & 1u;
        float min1 = INFINITY, min2 = INFINITY;
        uint32_t arg = 0;
        for (uint32_t e = beg; e < end; e++) {
            float qe = post[col[e]] - r[e];
            q[e - beg] = qe;
            sgn ^= (unsigned)(qe < 0.0f);
            float a = fabsf(qe);
            if (a < min1) {
                min2 = min1;
                min1 = a;
                arg = e;
            } else if (a < min2) {
                min2 = a;
            }
        }
        float m1 = scale * min1, m2 = scale * min2;
        for (uint32_t e = beg; e < end; e++) {
            float qe = q[e - beg];
            float mag = (e == arg) ? m2 : m1;
            unsigned s = sgn ^ (unsigned)(qe < 0.0f);
            float re = s ? -mag : mag;
            r[e] = re;
            post[col[e]] = qe + re;
        }
    }
}

/* Row products excluding each edge: p_i = sign * prod_{j != i} th_j, clamped.
 * Prefix/suffix products (no division, so a zero tanh is exact). */
static inline void row_products(float *restrict th, float *restrict pre, uint32_t deg, float sgn)
{
    float acc = sgn;
    for (uint32_t i = 0; i < deg; i++) {
        pre[i] = acc;
        acc *= th[i];
    }
    float suffix = 1.0f;
    for (uint32_t k = deg; k-- > 0;) {
        float p = pre[k] * suffix;
        suffix *= th[k];
        pre[k] = ldpc_clamp_p(p);
    }
}

/* One layered sum-product pass (portable). */
static void layer_bp(const qpp_ldpc_code *c, const uint64_t *syn, ldpc_ws *ws)
{
    float *restrict r = ws->r, *restrict post = ws->post, *restrict q = ws->q;
    float *restrict th = ws->t, *restrict pre = ws->t + c->max_row_deg;
    const uint32_t *restrict col = c->col_idx;
    for (uint32_t row = 0; row < c->m; row++) {
        uint32_t beg = c->row_ptr[row], deg = c->row_ptr[row + 1] - beg;
        float sgn = ((syn[row >> 6] >> (row & 63)) & 1) ? -1.0f : 1.0f;
        for (uint32_t i = 0; i < deg; i++) {
            float qe = post[col[beg + i]] - r[beg + i];
            q[i] = qe;
            th[i] = ldpc_th_half(qe);
        }
        row_products(th, pre, deg, sgn);
        for (uint32_t i = 0; i < deg; i++) {
            float re = ldpc_atanh2(pre[i]);
            r[beg + i] = re;
            post[col[beg + i]] = q[i] + re;
        }
    }
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define HAVE_AVX2_PATH 1

/* One layered sum-product pass, 8 edges of a row per AVX2 vector. */
__attribute__((target("avx2"))) static void layer_bp_avx2(const qpp_ldpc_code *c, const uint64_t *syn,
                                                          ldpc_ws *ws)
{
    float *restrict r = ws->r, *restrict post = ws->post, *restrict q = ws->q;
    float *restrict th = ws->t, *restrict pre = ws->t + c->max_row_deg;
    const uint32_t *restrict col = c->col_idx;
    for (uint32_t row = 0; row < c->m; row++) {
        uint32_t beg = c->row_ptr[row], deg = c->row_ptr[row + 1] - beg;
        float sgn = ((syn[row >> 6] >> (row & 63)) & 1) ? -1.0f : 1.0f;
        uint32_t i = 0;
        for (; i + 8 <= deg; i += 8) {
            __m256i idx = _mm256_loadu_si256((const __m256i *)(col + beg + i));
            __m256 qv = _mm256_sub_ps(_mm256_i32gather_ps(post, idx, 4), _mm256_loadu_ps(r + beg + i));
            _mm256_storeu_ps(q + i, qv);
            _mm256_storeu_ps(th + i, ldpc_th_half8(qv));
        }
        for (; i < deg; i++) {
            float qe = post[col[beg + i]] - r[beg + i];
            q[i] = qe;
            th[i] = ldpc_th_half(qe);
        }
        row_products(th, pre, deg, sgn);
        for (i = 0; i + 8 <= deg; i += 8) {
            __m256 re = ldpc_atanh2_8(_mm256_loadu_ps(pre + i));
            _mm256_storeu_ps(r + beg + i, re);
            _mm256_storeu_ps(th + i, _mm256_add_ps(_mm256_loadu_ps(q + i), re));
        }
        for (; i < deg; i++) {
            float re = ldpc_atanh2(pre[i]);
            r[beg + i] = re;
            th[i] = q[i] + re;
        }
        for (i = 0; i < deg; i++)            /* columns of a row are distinct: order-free */
            post[col[beg + i]] = th[i];
    }
}
#endif

int ldpc_decode_ws(const qpp_ldpc_code *c, const float *llr, const uint64_t *syn,
                   uint32_t max_iter, uint32_t stall, int algorithm, float scale,
                   uint64_t *out, float *llr_out, uint32_t *iterations, int *matched, ldpc_ws *ws)
{
    if (llr) {                  /* fresh start; NULL: continue from ws->post / ws->r (warm) */
        memcpy(ws->post, llr, (size_t)c->n * sizeof *llr);
        memset(ws->r, 0, c->n_edges * sizeof *ws->r);
    }
    uint32_t it = 0, since_best = 0;
    int avx2 = (qpp_cpu_features() & QPP_CPU_AVX2) != 0;
    (void)avx2;
    hard_decision(ws->post, c->n, ws->hard);
    uint32_t bad = unsatisfied(c, ws->hard, syn, ws->chk), best = bad;
    /* stall > 0: give up once the unsatisfied-check count has not reached a new
     * minimum for `stall` iterations (a decoder stuck in a trapping set or
     * oscillating rarely recovers; blind rounds then reveal more instead). */
    while (bad && it < max_iter && !(stall && since_best >= stall)) {
        if (algorithm == QPP_LDPC_BP) {
#ifdef HAVE_AVX2_PATH
            if (avx2)
                layer_bp_avx2(c, syn, ws);
            else
#endif
                layer_bp(c, syn, ws);
        } else
            layer_minsum(c, syn, scale, ws);
        it++;
        hard_decision(ws->post, c->n, ws->hard);
        bad = unsatisfied(c, ws->hard, syn, ws->chk);
        if (bad < best) {
            best = bad;
            since_best = 0;
        } else {
            since_best++;
        }
    }
    int ok = bad == 0;
    memcpy(out, ws->hard, wfor(c->n) * sizeof *out);
    if (llr_out)
        memcpy(llr_out, ws->post, (size_t)c->n * sizeof *llr_out);
    *iterations = it;
    *matched = ok;
    return QPP_OK;
}

int qpp_ldpc_decode(const qpp_ldpc_code *code, const float *llr, const uint64_t *syn, size_t syn_words,
                    uint32_t max_iter, int algorithm, float scale,
                    uint64_t *out, size_t out_words, float *llr_out,
                    uint32_t *iterations, int *matched)
{
    if (!code || !llr || !syn || !out || !iterations || !matched)
        return QPP_ERR_NULL;
    if (syn_words < wfor(code->m) || out_words < wfor(code->n))
        return QPP_ERR_LENGTH;
    if (algorithm != QPP_LDPC_MINSUM && algorithm != QPP_LDPC_BP)
        return QPP_ERR_VALUE;
    if (!(scale > 0.0f && scale <= 1.0f) || max_iter > 100000)
        return QPP_ERR_VALUE;
    for (uint32_t v = 0; v < code->n; v++)
        if (!(llr[v] >= -1e6f && llr[v] <= 1e6f))   /* also refuses NaN */
            return QPP_ERR_VALUE;
    ldpc_ws ws;
    memset(&ws, 0, sizeof ws);
    int st = ldpc_ws_init(&ws, code);
    if (st)
        return st;
    st = ldpc_decode_ws(code, llr, syn, max_iter, 0, algorithm, scale, out, llr_out, iterations, matched, &ws);
    ldpc_ws_free(&ws);
    return st;
}

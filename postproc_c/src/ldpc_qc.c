/* Quasi-cyclic LDPC codes: construction from a base matrix of circulants,
 * word-rotation syndrome, and a layered sum-product decoder in saturated
 * integer arithmetic that runs the z lanes of a circulant together: int16
 * throughout (QPP_LDPC_QC_BP) or int8 messages with int16 posteriors
 * (QPP_LDPC_QC_BP8, the protocol default; its section follows the int16 one).
 *
 * Why this shape: in a QC code the z checks of one base row touch disjoint
 * variables (one per circulant, rotated by its shift), so they form one
 * layer and update all at once: every edge operation below is one
 * element-wise operation over z contiguous int16 lanes, 16 per AVX2 vector,
 * with no gathers (the layout of GPU/CPU QKD decoders such as Mao et al.,
 * "High-throughput and low-cost LDPC reconciliation for quantum key
 * distribution", Quantum Inf. Process. 21 (2022); the layered schedule of
 * Hocevar, "A reduced complexity decoder architecture via layered decoding of
 * LDPC codes", SiPS 2004).
 *
 * Why sum-product and not min-sum: the high-rate codes have checks of degree
 * 30-51, where min|q| overestimates the true check message many times over
 * (29 inputs of 3.9 nat: BP gives 0.6 nat, min-sum 3.9); measured, normalized
 * min-sum (any factor 0.5-0.9) did not decode the rate-0.8 code at QBER 2 %
 * (f = 1.41) where BP needs 7 iterations. The check update here is exact BP
 * in the log domain: the pairwise "boxplus"
 *   |a [+] b| = min(a, b) + ln(1 + e^-(a+b)) - ln(1 + e^-|a-b|)
 * (Hu, Eleftheriou, Arnold, Dholakia, "Efficient implementations of the
 * sum-product algorithm for decoding LDPC codes", Globecom 2001, Eq. (9)-(10)),
 * with the correction ln(1 + e^-x) from a 16-entry table of quarter-nat steps
 * (one pshufb per lookup), run forward and backward over the row so each
 * edge gets the boxplus of all the others (3 boxplus per edge).
 *
 * Arithmetic (identical on both paths, so they agree bit for bit; LLR unit
 * 1/256 nat):
 *   q    = clamp(post - r, -32767, 32767)
 *   mag  = forward/backward boxplus of the other |q| of the row, floored at 0
 *   r'   = sign-corrected min(mag, 8191): (mag ^ s) - s, s = 0 or -1
 *   post = clamp(q + r', -32767, 32767)
 *
 * Layouts:
 *   r    : base edge e (in base-row order) holds z int16 at r[e * z + l],
 *          the message from check i*z + l to variable col*z + (l + s) mod z.
 *   post : variable block j at post[j * (z + 16)], z int16 in order, then a
 *          copy of its first 16 values, so a 16-lane load starting at any
 *          rotation (l + s) mod z with l a multiple of 16 stays in bounds.
 *   Syndrome and hard decisions: packed bits, LSB first, like every other
 *   bit array here.
 *
 * Speed (rate-0.91 code, python -m bench -k "ldpc and kernel"): each layer
 * runs its row chunk by chunk (layer4_avx2: four 16-lane chunks side by side;
 * layer64_avx512 with AVX-512BW: two 32-lane chunks, wrapped rotations by
 * masked loads/stores; a generic one-chunk AVX2 layer when z is not a
 * multiple of 64), so parities and boxplus partials stay in registers. About
 * 50 vector ALU operations per 16 edges, of which 3 boxplus x 13; 3(d - 2)
 * boxplus per row is the minimum for a forward-backward pass. Measured
 * in-process against the edge-major AVX2 loop this replaced (best of 40,
 * load 5-7): 0.35 (AVX-512BW) and 0.40 (AVX2) against 0.45-0.47 ns per
 * edge-iteration; more under contention (the old loop streamed 2 x 36 KB
 * of q and partials per row through L1).
 *
 * Measured and rejected: dropping the ln(1 + e^-(a+b)) term (7-operation
 * boxplus, 1.16x faster per edge) made blind decoding need 2-9 % more
 * iterations and raised f by 0.003-0.014 at QBER 1-8 % (same frames);
 * skipping converged checks does not pay, as checks reach high reliability
 * only in the last one or two iterations of a decode; branch-free masked
 * rotation loads (slower: 0.41 against 0.35); eight chunks side by side
 * (register spills); counting unsatisfied checks from the int16 posteriors
 * instead of packed hard decisions (no faster).
 *
 * ---- int8 decoder (QPP_LDPC_QC_BP8, ldpc.py algorithm "qc8") ----
 * The same schedule and forward-backward boxplus, with the check side in
 * bytes: 64 lanes per AVX-512 vector, 32 per AVX2 vector, 9 byte operations
 * per boxplus against 13 word operations.
 *
 * Arithmetic (all three paths, bit for bit; LLR unit 1/8 nat):
 *   q8   = clamp(post - r, +-127)                     int8, 127 = 15.9 nat
 *   mag  = forward/backward boxplus of the other |q8| of the row (below)
 *   r'   = sign-corrected mag                         int8, <= 127 (no cap
 *          needed: a boxplus never exceeds its inputs)
 *   post = clamp(post + (r' - r), +-32767)            int16, by the change
 * boxplus8(a, b) = max(min(a, b) + T[ceil((a+b)/2)] - T[ceil(|a-b|/2)], 0),
 * T = round(8 ln(1 + e^-x)) at the middle of each 2-unit (quarter-nat) step,
 * {6, 5, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1, 0, 0, 0, 0}, 0 from index 16 on. In
 * SIMD: s = pavgb(a, b); ceil(|a-b|/2) = s - min(a, b) (a+b and |a-b| have
 * the same parity); indices + 112 saturating, so pshufb reads 0 from 16 on
 * (bit 7 set) and the table entry from its low 4 bits otherwise; min(a, b)
 * + T saturating, - T saturating at 0 (the floor). T does not increase, so
 * the result never exceeds min(a, b) <= 127.
 * The posterior stays int16 (range 4096 nat, known bits at +-32767 are
 * certain) and is updated by the message change, not rebuilt from q8: q8 is
 * clamped far below the posterior, and q8 + r' would wear a strong posterior
 * down. SIMD: q = post - r in int16 (r widened by vpmovsxbw), packed to
 * bytes with saturation (packsswb, then the qwords put back in lane order);
 * r' - r widened the same way. One 64-lane (AVX-512) or 32-lane (AVX2)
 * chunk reads its rotated posteriors through a 64-value pad (copy of the
 * block's first 64), like the int16 AVX2 layer does with 16.
 *
 * Layouts: r8: base edge e holds z int8 at r8[e * z + l] (as r); post8: block
 * j at post8[j * (z + 64)], z int16 then a copy of the first 64.
 * Paths: AVX-512BW needs z % 64 == 0 (two 64-lane chunks side by side, a
 * single one for the last 64 when z % 128 == 64), AVX2 z % 32 == 0 (four,
 * two or one 32-lane chunks), else the portable path.
 *
 * Units, measured (blind, 18 blocks of 2^20 bits per QBER, the same blocks;
 * python -m bench.ldpc_frames --qber 0.01 0.02 0.05 0.08 --blocks 18
 * --algorithm qc qc8; f, frames lost of 72, iterations per frame):
 *   int16             1.123 0 62.5 | 1.088 0 55.4 | 1.093 0 77.8 | 1.091 0 53.2
 *   int8, 1/8 nat     1.126 0 66.6 | 1.089 0 58.7 | 1.096 0 73.7 | 1.092 0 55.1
 *   same, |r| <= 63,
 *   q8 from the post
 *   clamped first     1.126 0 67.2 | 1.091 0 59.8 | 1.096 0 75.2 | 1.093 0 57.0
 * One-way (ldpc, 2^17-bit frames, --method ldpc): at f 1.25 (the link's)
 * no frame lost by either at 1/2/5/8 % (162-180 frames each); at f 1.2 and
 * QBER 1 % int8 lost 1 of 324, int16 none.
 * Rejected (2 and 5 %, 4 blocks, same blocks; int16: 1.086 / 1.094):
 *   int8 posteriors (post = clamp(q8 + r')): 1/8 nat (posterior range 15.9
 *   nat) diverges, every frame lost even at f 3 on the mother code: a
 *   degree-32 variable's sum of messages saturates and the clamped sum then
 *   drifts from channel + messages (an int16 decoder clamped to the same
 *   range fails alike, so it is the range, not the resolution); 1/4 nat
 *   (31.75 nat, |r| <= 31, 16-entry table at 1-unit steps) f 1.100 / 1.105
 *   with 1 frame of 16 lost at 2 %, 72 iterations against 52; 1/5 nat 1.096
 *   / 1.106, a frame lost at each; 1/6 nat 1.130 / 1.110, 7 and 2 lost.
 *   int16 posteriors at 1/16 nat (q8 <= 7.9 nat, |r| <= 3.9 nat): every
 *   frame lost, with the table at 1/8-nat steps (ends at 2 nat) and with one
 *   at quarter-nat steps (two more pavgb per boxplus; 1 and 2 %, 18 blocks):
 *   the check side's range is too small there, not the table.
 *   Tables at 1/8 nat (1 and 2 %, 18 blocks): larger tail entries
 *   {6,5,4,4,3,2,2,2,1,1,1,1,1,1,1,0} f 1.142 / 1.116 (94 / 100
 *   iterations), {6,5,4,4,3,3,2,2,2,1,1,1,1,1,1,1} lost every frame at 2 %,
 *   smaller {6,5,4,3,2,2,1,1,1,1,1,0,...} 1.140 / 1.096; the rounded table
 *   above 1.126 / 1.091 (the long chains make the tail entries matter).
 * Speed, in the same process against int16 (rate-0.91 code, 20 iterations of
 * a frame that never decodes, best of 10, load 2.5): n = 2^16 (z = 256)
 * AVX-512BW 0.225 against 0.351 ns per edge-iteration (1.56x), AVX2 0.255
 * against 0.392 (1.54x); n = 294,912 (z = 1152, the link's blind frame)
 * 0.236 against 0.351 (1.49x), AVX2 0.280 against 0.417 (1.49x); runs at a
 * busier moment (load 4-5) gave 0.30-0.34 against 0.37-0.50. Prefetch of the
 * next 128-lane group's rows: no change (0.229-0.235 both ways).
 * About 64 vector operations per chunk (64 lanes AVX-512, 32 AVX2; 24
 * forward, 40 backward, 3 x 9 of them boxplus) against about 50 per 16
 * int16 lanes (AVX2) or 32 (AVX-512): 1.5x fewer per edge. Zen 4 runs
 * 512-bit operations as two 256-bit halves, so AVX-512 gains little over
 * AVX2 here. ldpc-blind at QBER 2 %, whole protocol, interleaved A/B block
 * by block (python -m bench.ldpc_frames --ab ldpc-blind --qber 0.02
 * --algorithm qc qc8): 6.82 -> 9.38 Mb/s (16 blocks, load 2.1; with |r|
 * <= 63: 4.21 -> 6.27 at load 4.6, 5.99 -> 8.72 at 4.7); one-way (--ab
 * ldpc, f 1.2): 21.8 -> 24.8 Mb/s (its 11 iterations per frame leave the
 * decoder a smaller share). The kernel group of python -m bench (load 2.2,
 * mean of 25): 0.229 against 0.355 ns (AVX-512BW), 0.261 against 0.401
 * (AVX2), 11.4 against 11.7 (portable); PyPI ldpc BpDecoder 71 ns (310x).
 * Found with perf on the way: the pad fix-up's memcpy of
 * variable length compiled to rep movsq (17 % of the layer time) and a
 * full load after a masked store is not store-forwarded (9 %): both now
 * vector copies blended in registers.
 */
#include <stdlib.h>
#include <string.h>

#include "qpp_ldpc.h"
#include "ldpc_internal.h"

#define PAD 16
#define SAT 32767
/* Check messages are capped well below the posterior bound: a posterior that
 * saturated at SAT still leaves q = post - r >= SAT - RMAX, so a bit whose
 * evidence overflowed int16 keeps a strong, correctly signed extrinsic value
 * (with |r| up to SAT, post - r could fall to ~0 and a check could flip even a
 * shortened bit). 8191 = 32 nat: probabilities below 1e-14 are all alike. */
#define RMAX QPP_LDPC_QC_MSG_MAX

static size_t wfor(size_t bits) { return (bits + 63) / 64; }

int qpp_ldpc_code_create_qc(qpp_ldpc_code **out, uint32_t z, uint32_t mb, uint32_t nb,
                            const uint32_t *blk_ptr, const uint32_t *blk_col, const uint32_t *blk_shift,
                            size_t n_blk)
{
    if (!out || !blk_ptr || !blk_col || !blk_shift)
        return QPP_ERR_NULL;
    *out = NULL;
    if (z == 0 || z % 16 || z > QPP_LDPC_QC_MAX_Z || mb == 0 || nb == 0 || mb > nb || n_blk == 0 ||
        (uint64_t)z * nb > QPP_LDPC_MAX_N || n_blk > (size_t)mb * nb)
        return QPP_ERR_LENGTH;
    if (blk_ptr[0] != 0 || blk_ptr[mb] != n_blk)
        return QPP_ERR_LENGTH;
    uint32_t maxdeg = 0;
    for (uint32_t i = 0; i < mb; i++) {
        if (blk_ptr[i + 1] <= blk_ptr[i])
            return QPP_ERR_LENGTH;
        if (blk_ptr[i + 1] - blk_ptr[i] > maxdeg)
            maxdeg = blk_ptr[i + 1] - blk_ptr[i];
    }
    for (size_t e = 0; e < n_blk; e++)
        if (blk_col[e] >= nb || blk_shift[e] >= z)
            return QPP_ERR_RANGE;
    /* A circulant column at most once per base row: the decoder reads a layer's
     * posteriors before writing any, which is only exact when they are disjoint. */
    uint32_t *mark = calloc(nb, sizeof *mark);
    if (!mark)
        return QPP_ERR_NOMEM;
    for (uint32_t i = 0; i < mb; i++)
        for (uint32_t e = blk_ptr[i]; e < blk_ptr[i + 1]; e++) {
            if (mark[blk_col[e]] == i + 1) {
                free(mark);
                return QPP_ERR_VALUE;
            }
            mark[blk_col[e]] = i + 1;
        }
    free(mark);
    uint32_t n = z * nb, m = z * mb;
    size_t edges = n_blk * z;
    uint32_t *row_ptr = malloc(((size_t)m + 1) * sizeof *row_ptr);
    uint32_t *col_idx = malloc(edges * sizeof *col_idx);
    if (!row_ptr || !col_idx) {
        free(row_ptr);
        free(col_idx);
        return QPP_ERR_NOMEM;
    }
    size_t pos = 0;
    row_ptr[0] = 0;
    for (uint32_t i = 0; i < mb; i++)
        for (uint32_t l = 0; l < z; l++) {
            for (uint32_t e = blk_ptr[i]; e < blk_ptr[i + 1]; e++) {
                uint32_t v = l + blk_shift[e];
                col_idx[pos++] = blk_col[e] * z + (v >= z ? v - z : v);
            }
            row_ptr[i * z + l + 1] = (uint32_t)pos;
        }
    qpp_ldpc_code *c = NULL;
    int st = qpp_ldpc_code_create(&c, n, m, row_ptr, col_idx, edges);   /* also refuses repeated circulants */
    free(row_ptr);
    free(col_idx);
    if (st)
        return st;
    c->blk_ptr = malloc(((size_t)mb + 1) * sizeof *c->blk_ptr);
    c->blk_col = malloc(n_blk * sizeof *c->blk_col);
    c->blk_shift = malloc(n_blk * sizeof *c->blk_shift);
    if (!c->blk_ptr || !c->blk_col || !c->blk_shift) {
        qpp_ldpc_code_free(c);
        return QPP_ERR_NOMEM;
    }
    memcpy(c->blk_ptr, blk_ptr, ((size_t)mb + 1) * sizeof *blk_ptr);
    memcpy(c->blk_col, blk_col, n_blk * sizeof *blk_col);
    memcpy(c->blk_shift, blk_shift, n_blk * sizeof *blk_shift);
    c->z = z;
    c->mb = mb;
    c->nb = nb;
    c->max_blk_deg = maxdeg;
    *out = c;
    return QPP_OK;
}

uint32_t qpp_ldpc_code_z(const qpp_ldpc_code *code) { return code ? code->z : 0; }

/* Bits bs .. bs + 63 of the 128-bit (hi:lo), 0 <= bs < 64 (bs = 0: lo; no shift by 64). */
static inline uint64_t funnel(uint64_t lo, uint64_t hi, uint32_t bs)
{
    return (lo >> bs) | ((hi << (63 - bs)) << 1);
}

/* syn = H x for z a multiple of 64: base row i's z checks are the XOR of its
 * circulants' variable blocks rotated by their shifts (bit l of the rotated
 * block = bit (l + s) mod z of the block), a few word shifts per circulant.
 * Word w of a rotation by s = 64 ws + bs reads words w + ws and w + ws + 1 (mod
 * W); the loop runs in the two stretches where that index does not wrap, and the
 * one word where it does, so it has no branch per word (the decoders count
 * unsatisfied checks with it every iteration: it was 6 % of a one-way block). */
void ldpc_qc_syndrome(const qpp_ldpc_code *c, const uint64_t *x, uint64_t *syn)
{
    uint32_t W = c->z / 64;
    memset(syn, 0, wfor(c->m) * sizeof *syn);
    for (uint32_t i = 0; i < c->mb; i++) {
        uint64_t *acc = syn + (size_t)i * W;
        for (uint32_t e = c->blk_ptr[i]; e < c->blk_ptr[i + 1]; e++) {
            const uint64_t *xb = x + (size_t)c->blk_col[e] * W;
            uint32_t s = c->blk_shift[e], ws = s >> 6, bs = s & 63;   /* s < z (checked at create) */
            uint32_t k = W - ws;                 /* words w < k read xb[w + ws] (no wrap) */
            for (uint32_t w = 0; w + 1 < k; w++)
                acc[w] ^= funnel(xb[w + ws], xb[w + ws + 1], bs);
            acc[k - 1] ^= funnel(xb[W - 1], xb[0], bs);
            for (uint32_t w = k; w < W; w++)     /* reads xb[w - k], xb[w - k + 1 <= ws] */
                acc[w] ^= funnel(xb[w - k], xb[w - k + 1], bs);
        }
    }
}

#define PAD8 64
#define QMAX8 QPP_LDPC_QC8_Q_MAX       /* bound of q on the int8 check side */
#define RMAX8 QPP_LDPC_QC8_MSG_MAX
typedef char qpp_rmax8_is_qmax8[RMAX8 == QMAX8 ? 1 : -1];    /* the SIMD paths apply no cap */

int ldpc_qc_state_init(ldpc_qc_state *st, const qpp_ldpc_code *c, int int8)
{
    size_t n_blk = c->blk_ptr[c->mb];
    memset(st, 0, sizeof *st);
    if (int8) {
        st->r8 = malloc(n_blk * c->z * sizeof *st->r8);
        st->post8 = malloc((size_t)c->nb * (c->z + PAD8) * sizeof *st->post8);
        if (st->r8 && st->post8)
            return QPP_OK;
    } else {
        st->r = malloc(n_blk * c->z * sizeof *st->r);
        st->post = malloc((size_t)c->nb * (c->z + PAD) * sizeof *st->post);
        if (st->r && st->post)
            return QPP_OK;
    }
    ldpc_qc_state_free(st, c);
    return QPP_ERR_NOMEM;
}

int ldpc_qc_state_live(const ldpc_qc_state *st) { return st->r != NULL || st->r8 != NULL; }

void ldpc_qc_state_free(ldpc_qc_state *st, const qpp_ldpc_code *c)
{
    size_t n_blk = c->blk_ptr[c->mb];
    if (st->post)
        qpp_memzero(st->post, (size_t)c->nb * (c->z + PAD) * sizeof *st->post);
    if (st->r)
        qpp_memzero(st->r, n_blk * c->z * sizeof *st->r);
    if (st->post8)
        qpp_memzero(st->post8, (size_t)c->nb * (c->z + PAD8) * sizeof *st->post8);
    if (st->r8)
        qpp_memzero(st->r8, n_blk * c->z * sizeof *st->r8);
    free(st->r);
    free(st->post);
    free(st->r8);
    free(st->post8);
    memset(st, 0, sizeof *st);
}

/* Rewrite every block's pad from its first values. */
void ldpc_qc_state_refresh(const qpp_ldpc_code *c, ldpc_qc_state *st)
{
    for (uint32_t j = 0; j < c->nb; j++) {
        if (st->post) {
            int16_t *pv = st->post + (size_t)j * (c->z + PAD);
            memcpy(pv + c->z, pv, PAD * sizeof *pv);
        } else {
            int16_t *pv = st->post8 + (size_t)j * (c->z + PAD8);
            memcpy(pv + c->z, pv, (c->z < PAD8 ? c->z : PAD8) * sizeof *pv);
        }
    }
}

/* LLR in 1/256 nat -> the int8 decoder's unit (1/QPP_LDPC_QC8_LLR_ONE nat), rounded half
 * away from zero; the bound (a known bit) stays the bound. One row of z values, written so
 * the compiler vectorizes it: selects instead of branches, and an unsigned division by the
 * constant 256 (a shift) where the signed one was a division per value. As a scalar loop this
 * was a quarter of the CPU time of a one-way block at f 2 (perf; the kernel another quarter). */
static void llr_row_to_unit8(const int16_t *restrict in, int16_t *restrict out, uint32_t z)
{
    for (uint32_t l = 0; l < z; l++) {
        int32_t v = in[l];
        uint32_t a = (uint32_t)(v < 0 ? -v : v);
        int32_t m = (int32_t)((a * QPP_LDPC_QC8_LLR_ONE + QPP_LDPC_QC_LLR_ONE / 2) / QPP_LDPC_QC_LLR_ONE);
        m = a >= SAT ? SAT : m;
        out[l] = (int16_t)(v < 0 ? -m : m);
    }
}

/* Fresh start: post = channel LLRs, r = 0. */
void ldpc_qc_state_load(const qpp_ldpc_code *c, ldpc_qc_state *st, const int16_t *llr)
{
    size_t n_edges = (size_t)c->blk_ptr[c->mb] * c->z;
    if (st->post) {
        memset(st->r, 0, n_edges * sizeof *st->r);
        for (uint32_t j = 0; j < c->nb; j++)
            memcpy(st->post + (size_t)j * (c->z + PAD), llr + (size_t)j * c->z, c->z * sizeof *llr);
    } else {
        memset(st->r8, 0, n_edges);
        for (uint32_t j = 0; j < c->nb; j++)
            llr_row_to_unit8(llr + (size_t)j * c->z, st->post8 + (size_t)j * (c->z + PAD8), c->z);
    }
    ldpc_qc_state_refresh(c, st);
}

static void state_load8(const qpp_ldpc_code *c, ldpc_qc_state *st, const int16_t *llr)
{
    memset(st->r8, 0, (size_t)c->blk_ptr[c->mb] * c->z);
    for (uint32_t j = 0; j < c->nb; j++)
        memcpy(st->post8 + (size_t)j * (c->z + PAD8), llr + (size_t)j * c->z, c->z * sizeof *llr);
    ldpc_qc_state_refresh(c, st);
}

void ldpc_qc_state_fix(const qpp_ldpc_code *c, ldpc_qc_state *st, uint32_t v, unsigned bit)
{
    uint32_t blk = v / c->z, lane = v % c->z;
    if (st->post) {
        int16_t *p = st->post + (size_t)blk * (c->z + PAD) + lane;
        int32_t t = (int32_t)*p + (bit ? -QPP_LDPC_QC_LLR_MAX : QPP_LDPC_QC_LLR_MAX);
        *p = (int16_t)(t > SAT ? SAT : (t < -SAT ? -SAT : t));
    } else {
        int16_t *p = st->post8 + (size_t)blk * (c->z + PAD8) + lane;
        int32_t t = (int32_t)*p + (bit ? -SAT : SAT);
        *p = (int16_t)(t > SAT ? SAT : (t < -SAT ? -SAT : t));
    }
}

int ldpc_qc_ws_init(ldpc_qc_ws *ws, const qpp_ldpc_code *c)
{
    memset(ws, 0, sizeof *ws);
    size_t deg = c->max_blk_deg;
    /* the portable path keeps deg x z values of q; the AVX2 path deg x 64 of q and of |q| */
    ws->q = malloc(deg * (c->z > 128 ? c->z : 128) * sizeof *ws->q);
    ws->fw = malloc(deg * c->z * sizeof *ws->fw);
    ws->m1 = malloc(4 * (size_t)c->z * sizeof *ws->m1);
    ws->synmask = malloc((size_t)c->m * sizeof *ws->synmask);
    /* int8: the portable path deg x z of q and of the partials; SIMD deg x 128 of q, |q|, partials */
    ws->q8 = malloc(deg * (c->z > 256 ? c->z : 256));
    ws->fw8 = malloc(deg * (c->z > 128 ? c->z : 128));
    ws->bw8 = malloc(c->z);
    ws->sg8 = malloc(c->z);
    ws->synmask8 = malloc(c->m);
    ws->hard = malloc(wfor(c->n) * sizeof *ws->hard);
    ws->chk = malloc(wfor(c->m) * sizeof *ws->chk);
    if (!ws->q || !ws->fw || !ws->m1 || !ws->synmask || !ws->q8 || !ws->fw8 || !ws->bw8 || !ws->sg8 ||
        !ws->synmask8 || !ws->hard || !ws->chk) {
        ldpc_qc_ws_free(ws);
        return QPP_ERR_NOMEM;
    }
    ws->m2 = ws->m1 + c->z;
    ws->arg = ws->m2 + c->z;
    ws->sg = ws->arg + c->z;
    return QPP_OK;
}

void ldpc_qc_ws_free(ldpc_qc_ws *ws)
{
    free(ws->q);
    free(ws->fw);
    free(ws->m1);
    free(ws->synmask);
    free(ws->q8);
    free(ws->fw8);
    free(ws->bw8);
    free(ws->sg8);
    free(ws->synmask8);
    free(ws->hard);
    free(ws->chk);
    memset(ws, 0, sizeof *ws);
}

static inline int16_t clamp16(int32_t x) { return (int16_t)(x > SAT ? SAT : (x < -SAT ? -SAT : x)); }

/* ln(1 + e^-x) in LLR units for x in [i/4, (i+1)/4) nat, taken at the middle;
 * 0 from 3.75 nat on (Hu et al. 2001, Sec. 3: the correction term of the
 * Jacobian logarithm from a small table). */
static const int16_t CORR[16] = {162, 134, 110, 89, 72, 58, 46, 37, 29, 23, 18, 14, 11, 9, 7, 0};

/* |a boxplus b| for magnitudes a, b >= 0:
 * min(a, b) + ln(1 + e^-(a+b)) - ln(1 + e^-|a-b|), floored at 0. */
static inline int16_t boxplus(int16_t a, int16_t b)
{
    int32_t s = ((int32_t)a + b) >> 6, d = (a > b ? a - b : b - a) >> 6;
    int32_t m = (a < b ? a : b) + CORR[s > 15 ? 15 : s] - CORR[d > 15 ? 15 : d];
    return (int16_t)(m < 0 ? 0 : m);
}

/* One iteration: every base row as one layer, z lanes at once (portable).
 * Magnitudes of the check messages by forward-backward boxplus over the
 * row (fw[k] = |q_0| [+] ... [+] |q_{k-1}|), signs by parity. */
static void layers_portable(const qpp_ldpc_code *c, ldpc_qc_state *st, ldpc_qc_ws *ws)
{
    const uint32_t z = c->z, zp = z + PAD;
    int16_t *sg = ws->sg, *bw = ws->m1;
    for (uint32_t i = 0; i < c->mb; i++) {
        uint32_t beg = c->blk_ptr[i], deg = c->blk_ptr[i + 1] - beg;
        const int16_t *sm = ws->synmask + (size_t)i * z;
        for (uint32_t l = 0; l < z; l++)
            sg[l] = sm[l];
        for (uint32_t k = 0; k < deg; k++) {
            uint32_t e = beg + k, s = c->blk_shift[e];
            const int16_t *pv = st->post + (size_t)c->blk_col[e] * zp;
            const int16_t *re = st->r + (size_t)e * z;
            int16_t *qk = ws->q + (size_t)k * z, *fk = ws->fw + (size_t)k * z;
            const int16_t *fp = ws->fw + (size_t)(k - 1) * z, *qp = ws->q + (size_t)(k - 1) * z;
            for (uint32_t l = 0; l < z; l++) {
                uint32_t v = l + s >= z ? l + s - z : l + s;
                int16_t qv = clamp16((int32_t)pv[v] - re[l]);
                qk[l] = qv;
                sg[l] ^= (int16_t)-(qv < 0);
                if (k == 1)
                    fk[l] = (int16_t)(qp[l] < 0 ? -qp[l] : qp[l]);
                else if (k > 1)
                    fk[l] = boxplus(fp[l], (int16_t)(qp[l] < 0 ? -qp[l] : qp[l]));
            }
        }
        for (uint32_t kk = deg; kk-- > 0;) {
            uint32_t e = beg + kk, s = c->blk_shift[e];
            int16_t *pv = st->post + (size_t)c->blk_col[e] * zp;
            int16_t *re = st->r + (size_t)e * z;
            const int16_t *qk = ws->q + (size_t)kk * z, *fk = ws->fw + (size_t)kk * z;
            for (uint32_t l = 0; l < z; l++) {
                uint32_t v = l + s >= z ? l + s - z : l + s;
                int16_t aq = (int16_t)(qk[l] < 0 ? -qk[l] : qk[l]);
                int16_t mag;
                if (deg == 1)
                    mag = SAT;                      /* a lone variable: the check fixes it */
                else if (kk == deg - 1)
                    mag = fk[l];
                else if (kk == 0)
                    mag = bw[l];
                else
                    mag = boxplus(fk[l], bw[l]);
                if (kk == deg - 1)
                    bw[l] = aq;
                else if (kk > 0)
                    bw[l] = boxplus(bw[l], aq);
                if (mag > RMAX)
                    mag = RMAX;
                int16_t sn = (int16_t)(sg[l] ^ (int16_t)-(qk[l] < 0));
                int16_t rv = (int16_t)((mag ^ sn) - sn);
                re[l] = rv;
                pv[v] = clamp16((int32_t)qk[l] + rv);
            }
            memcpy(pv + z, pv, PAD * sizeof *pv);
        }
    }
}

static void hard_portable(const qpp_ldpc_code *c, const int16_t *post, uint64_t *hard)
{
    memset(hard, 0, wfor(c->n) * sizeof *hard);
    for (uint32_t j = 0; j < c->nb; j++) {
        const int16_t *pv = post + (size_t)j * (c->z + PAD);
        for (uint32_t l = 0; l < c->z; l++) {
            uint32_t v = j * c->z + l;
            hard[v >> 6] |= (uint64_t)(pv[l] < 0) << (v & 63);
        }
    }
}

/* ---- int8 decoder (QPP_LDPC_QC_BP8) ------------------------------------------------ */

static inline int8_t clamp8(int32_t x) { return (int8_t)(x > QMAX8 ? QMAX8 : (x < -QMAX8 ? -QMAX8 : x)); }

/* Correction table of the int8 boxplus: round(8 ln(1 + e^-x)) (1/8 nat) at the middle of
 * each quarter-nat step, index ceil(x / 2) for x in 1/8 nat; 0 from index 16 on. Written
 * for QPP_LDPC_QC8_LLR_ONE = 8 (the header comment lists the units and tables tried). */
#define TABLE8_BYTES 6, 5, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1, 0, 0, 0, 0
typedef char qpp_unit8_matches_table[QPP_LDPC_QC8_LLR_ONE == 8 ? 1 : -1];
static const int8_t CORR8[16] = {TABLE8_BYTES};

/* |a boxplus b| for magnitudes 0 <= a, b <= 127, floored at 0; never above min(a, b), as
 * CORR8 does not increase. */
static inline uint8_t boxplus8(uint8_t a, uint8_t b)
{
    uint32_t s = ((uint32_t)a + b + 1) >> 1, d = ((uint32_t)(a > b ? a - b : b - a) + 1) >> 1;
    int32_t m = (a < b ? a : b) + (s < 16 ? CORR8[s] : 0) - (d < 16 ? CORR8[d] : 0);
    return (uint8_t)(m < 0 ? 0 : m);
}

/* layers_portable with int8 q and messages (bound QMAX8; a boxplus never exceeds its inputs,
 * so the messages need no cap of their own) and int16 posteriors updated by r' - r. */
static void layers8_portable(const qpp_ldpc_code *c, ldpc_qc_state *st, ldpc_qc_ws *ws)
{
    const uint32_t z = c->z, zp = z + PAD8;
    int8_t *sg = ws->sg8;
    uint8_t *bw = ws->bw8;
    for (uint32_t i = 0; i < c->mb; i++) {
        uint32_t beg = c->blk_ptr[i], deg = c->blk_ptr[i + 1] - beg;
        memcpy(sg, ws->synmask8 + (size_t)i * z, z);
        for (uint32_t k = 0; k < deg; k++) {
            uint32_t e = beg + k, s = c->blk_shift[e];
            const int16_t *pv = st->post8 + (size_t)c->blk_col[e] * zp;
            const int8_t *re = st->r8 + (size_t)e * z;
            int8_t *qk = ws->q8 + (size_t)k * z;
            uint8_t *fk = ws->fw8 + (size_t)k * z;
            const uint8_t *fp = ws->fw8 + (size_t)(k - 1) * z;
            const int8_t *qp = ws->q8 + (size_t)(k - 1) * z;
            for (uint32_t l = 0; l < z; l++) {
                uint32_t v = l + s >= z ? l + s - z : l + s;
                int8_t qv = clamp8((int32_t)pv[v] - re[l]);
                qk[l] = qv;
                sg[l] ^= (int8_t)-(qv < 0);
                if (k == 1)
                    fk[l] = (uint8_t)(qp[l] < 0 ? -qp[l] : qp[l]);
                else if (k > 1)
                    fk[l] = boxplus8(fp[l], (uint8_t)(qp[l] < 0 ? -qp[l] : qp[l]));
            }
        }
        for (uint32_t kk = deg; kk-- > 0;) {
            uint32_t e = beg + kk, s = c->blk_shift[e];
            int16_t *pv = st->post8 + (size_t)c->blk_col[e] * zp;
            int8_t *re = st->r8 + (size_t)e * z;
            const int8_t *qk = ws->q8 + (size_t)kk * z;
            const uint8_t *fk = ws->fw8 + (size_t)kk * z;
            for (uint32_t l = 0; l < z; l++) {
                uint32_t v = l + s >= z ? l + s - z : l + s;
                uint8_t aq = (uint8_t)(qk[l] < 0 ? -qk[l] : qk[l]), mag;
                if (deg == 1)
                    mag = QMAX8;
                else if (kk == deg - 1)
                    mag = fk[l];
                else if (kk == 0)
                    mag = bw[l];
                else
                    mag = boxplus8(fk[l], bw[l]);
                if (kk == deg - 1)
                    bw[l] = aq;
                else if (kk > 0)
                    bw[l] = boxplus8(bw[l], aq);
                int8_t sn = (int8_t)(sg[l] ^ (int8_t)-(qk[l] < 0));
                int8_t rv = (int8_t)((int8_t)(mag ^ sn) - sn);
                pv[v] = clamp16((int32_t)pv[v] + ((int32_t)rv - re[l]));
                re[l] = rv;
            }
            memcpy(pv + z, pv, (z < PAD8 ? z : PAD8) * sizeof *pv);
        }
    }
}

static void hard8_portable(const qpp_ldpc_code *c, const int16_t *post, uint64_t *hard)
{
    memset(hard, 0, wfor(c->n) * sizeof *hard);
    for (uint32_t j = 0; j < c->nb; j++) {
        const int16_t *pv = post + (size_t)j * (c->z + PAD8);
        for (uint32_t l = 0; l < c->z; l++) {
            uint32_t v = j * c->z + l;
            hard[v >> 6] |= (uint64_t)(pv[l] < 0) << (v & 63);
        }
    }
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define HAVE_AVX2_QC 1

__attribute__((target("avx2"))) static inline __m256i boxplus16(__m256i a, __m256i b, __m256i tbl)
{
    const __m256i top = _mm256_set1_epi16(15);
    __m256i s = _mm256_min_epi16(_mm256_srli_epi16(_mm256_add_epi16(a, b), 6), top);  /* a + b < 2^16 */
    __m256i d = _mm256_min_epi16(_mm256_srli_epi16(_mm256_abs_epi16(_mm256_sub_epi16(a, b)), 6), top);
    /* Table lookup by pshufb on the low byte of each lane. The high byte of an index is 0, so
     * both lookups carry the same CORR[0] in their high byte, and it cancels in cs - cd
     * (16-bit wraparound): no masking needed. */
    __m256i cs = _mm256_shuffle_epi8(tbl, s);
    __m256i cd = _mm256_shuffle_epi8(tbl, d);
    __m256i m = _mm256_add_epi16(_mm256_min_epi16(a, b), _mm256_sub_epi16(cs, cd));
    return _mm256_max_epi16(m, _mm256_setzero_si256());
}

#define LD(p) _mm256_loadu_si256((const __m256i *)(p))
#define ST(p, v) _mm256_storeu_si256((__m256i *)(p), (v))
#define TABLE _mm256_setr_epi8((char)162, (char)134, 110, 89, 72, 58, 46, 37, 29, 23, 18, 14, 11, 9, 7, 0, \
                               (char)162, (char)134, 110, 89, 72, 58, 46, 37, 29, 23, 18, 14, 11, 9, 7, 0)
#define NCMAX 4                         /* 16-lane chunks run side by side (scratch sizing) */

/* One layer (base row i), NC chunks of 16 lanes at a time (layer4_avx2 below is the
 * same with NC = 4 unrolled by hand; this generic form runs codes whose z is not a
 * multiple of 64, one chunk at a time). Same arithmetic as layers_portable in another
 * order: the z checks of a layer are independent (their variables are disjoint), so
 * each chunk runs its whole row, forward then backward, with the sign parity and the
 * running forward and backward boxplus in registers. q, |q| and the forward partials
 * (deg x 16 x NC values each) stay in L1. One chunk alone is latency-bound (the
 * boxplus chain: measured 0.82 ns per edge-iteration against 0.44 for the edge-major
 * loop it replaced); four side by side overlap their chains.
 *
 * Signs: sx accumulates syndrome mask ^ q over the row (only bit 15 is meaningful), so
 * bit 15 of sx ^ q is the sign of the outgoing message, applied by psignw (its
 * operand or 1 is never 0).
 *
 * Posterior reads that straddle a block's end read the pad, which mirrors positions
 * 0..15 as they were when the layer started: those positions are read and written in
 * this layer only by the straddling chunk itself (each block appears once per layer
 * and the chunks of one rotation are disjoint), so the pad is never stale when read;
 * after the layer each block's straddled positions are copied back from the pad and
 * the pad refreshed. */
__attribute__((target("avx2"), always_inline)) static inline void
layer_avx2(const qpp_ldpc_code *c, ldpc_qc_state *st, ldpc_qc_ws *ws, uint32_t i, const int NC)
{
    const uint32_t z = c->z, zp = z + PAD;
    int16_t *qb = ws->q, *ab = ws->q + (size_t)c->max_blk_deg * 16 * NCMAX, *fb = ws->fw;
    const __m256i lo = _mm256_set1_epi16(-SAT), vsat = _mm256_set1_epi16(SAT), vrmax = _mm256_set1_epi16(RMAX);
    const __m256i one = _mm256_set1_epi16(1), tbl = TABLE;
    uint32_t beg = c->blk_ptr[i], deg = c->blk_ptr[i + 1] - beg;
    const uint32_t *cols = c->blk_col + beg, *shifts = c->blk_shift + beg;
    const int16_t *rbase = st->r + (size_t)beg * z;
    for (uint32_t l0 = 0; l0 < z; l0 += 16 * (uint32_t)NC) {
        __m256i sx[NCMAX], f[NCMAX], ap[NCMAX];
        for (int j = 0; j < NC; j++) {
            sx[j] = LD(ws->synmask + (size_t)i * z + l0 + 16 * (uint32_t)j);
            f[j] = ap[j] = _mm256_setzero_si256();
        }
        for (uint32_t k = 0; k < deg; k++) {
            const int16_t *pv = st->post + (size_t)cols[k] * zp;
            for (int j = 0; j < NC; j++) {
                uint32_t l = l0 + 16 * (uint32_t)j, v = l + shifts[k];
                v = v >= z ? v - z : v;
                __m256i q = _mm256_max_epi16(_mm256_subs_epi16(LD(pv + v), LD(rbase + (size_t)k * z + l)), lo);
                ST(qb + 16 * (NC * k + j), q);
                sx[j] = _mm256_xor_si256(sx[j], q);
                if (k == 1)
                    f[j] = ap[j];
                else if (k > 1)
                    f[j] = boxplus16(f[j], ap[j], tbl);
                ST(fb + 16 * (NC * k + j), f[j]);
                ap[j] = _mm256_abs_epi16(q);
                ST(ab + 16 * (NC * k + j), ap[j]);
            }
        }
        __m256i *bw = ap;                   /* starts as |q| of the last edge */
        for (uint32_t kk = deg; kk-- > 0;) {
            int16_t *pv = st->post + (size_t)cols[kk] * zp;
            int16_t *re = st->r + (size_t)(beg + kk) * z;
            for (int j = 0; j < NC; j++) {
                uint32_t l = l0 + 16 * (uint32_t)j, v = l + shifts[kk];
                v = v >= z ? v - z : v;
                __m256i q = LD(qb + 16 * (NC * kk + j)), mag;
                if (deg == 1)
                    mag = vsat;
                else if (kk == deg - 1)
                    mag = LD(fb + 16 * (NC * kk + j));
                else if (kk == 0)
                    mag = bw[j];
                else {
                    mag = boxplus16(LD(fb + 16 * (NC * kk + j)), bw[j], tbl);
                    bw[j] = boxplus16(bw[j], LD(ab + 16 * (NC * kk + j)), tbl);
                }
                mag = _mm256_min_epi16(mag, vrmax);
                __m256i rv = _mm256_sign_epi16(mag, _mm256_or_si256(_mm256_xor_si256(sx[j], q), one));
                ST(re + l, rv);
                /* may run into the pad: positions z.. stand for 0.. and are copied back below */
                ST(pv + v, _mm256_max_epi16(_mm256_adds_epi16(q, rv), lo));
            }
        }
    }
    for (uint32_t k = 0; k < deg; k++) {
        int16_t *pv = st->post + (size_t)cols[k] * zp;
        uint32_t b = shifts[k] & 15;        /* the chunk straddling the end wrote positions 0..b-1 in the pad */
        if (b)
            memcpy(pv, pv + z, b * sizeof *pv);
        memcpy(pv + z, pv, PAD * sizeof *pv);
    }
}

/* Rotation start of a 16-lane chunk: lane l of base edge with shift s reads position (l + s) mod z. */
#define ROT(l, s, z) ((l) + (s) >= (z) ? (l) + (s) - (z) : (l) + (s))

/* Four chunks side by side (z a multiple of 64): layer_avx2 unrolled by hand, so the
 * parities and the running boxplus of the four chunks live in registers and the
 * addressing is computed once per edge (the generic loop spilled and recomputed it). */
__attribute__((target("avx2"))) static void layer4_avx2(const qpp_ldpc_code *c, ldpc_qc_state *st, ldpc_qc_ws *ws,
                                                        uint32_t i)
{
    const uint32_t z = c->z, zp = z + PAD;
    int16_t *qb = ws->q, *ab = ws->q + (size_t)c->max_blk_deg * 16 * NCMAX, *fb = ws->fw;
    const __m256i lo = _mm256_set1_epi16(-SAT), vrmax = _mm256_set1_epi16(RMAX), one = _mm256_set1_epi16(1);
    const __m256i tbl = TABLE;
    uint32_t beg = c->blk_ptr[i], deg = c->blk_ptr[i + 1] - beg;
    const uint32_t *cols = c->blk_col + beg, *shifts = c->blk_shift + beg;
    int16_t *post = st->post, *rb = st->r + (size_t)beg * z;
    for (uint32_t l0 = 0; l0 < z; l0 += 64) {
        const int16_t *sm = ws->synmask + (size_t)i * z + l0;
        __m256i x0 = LD(sm), x1 = LD(sm + 16), x2 = LD(sm + 32), x3 = LD(sm + 48);
        __m256i f0 = _mm256_setzero_si256(), f1 = f0, f2 = f0, f3 = f0, a0 = f0, a1 = f0, a2 = f0, a3 = f0;
        for (uint32_t k = 0; k < deg; k++) {
            const int16_t *pv = post + (size_t)cols[k] * zp, *re = rb + (size_t)k * z + l0;
            uint32_t s = shifts[k];
            int16_t *qk = qb + 64 * k, *ak = ab + 64 * k, *fk = fb + 64 * k;
            __m256i q0 = _mm256_max_epi16(_mm256_subs_epi16(LD(pv + ROT(l0, s, z)), LD(re)), lo);
            __m256i q1 = _mm256_max_epi16(_mm256_subs_epi16(LD(pv + ROT(l0 + 16, s, z)), LD(re + 16)), lo);
            __m256i q2 = _mm256_max_epi16(_mm256_subs_epi16(LD(pv + ROT(l0 + 32, s, z)), LD(re + 32)), lo);
            __m256i q3 = _mm256_max_epi16(_mm256_subs_epi16(LD(pv + ROT(l0 + 48, s, z)), LD(re + 48)), lo);
            ST(qk, q0); ST(qk + 16, q1); ST(qk + 32, q2); ST(qk + 48, q3);
            x0 = _mm256_xor_si256(x0, q0); x1 = _mm256_xor_si256(x1, q1);
            x2 = _mm256_xor_si256(x2, q2); x3 = _mm256_xor_si256(x3, q3);
            if (k == 1) {
                f0 = a0; f1 = a1; f2 = a2; f3 = a3;
            } else if (k > 1) {
                f0 = boxplus16(f0, a0, tbl); f1 = boxplus16(f1, a1, tbl);
                f2 = boxplus16(f2, a2, tbl); f3 = boxplus16(f3, a3, tbl);
            }
            ST(fk, f0); ST(fk + 16, f1); ST(fk + 32, f2); ST(fk + 48, f3);
            a0 = _mm256_abs_epi16(q0); a1 = _mm256_abs_epi16(q1);
            a2 = _mm256_abs_epi16(q2); a3 = _mm256_abs_epi16(q3);
            ST(ak, a0); ST(ak + 16, a1); ST(ak + 32, a2); ST(ak + 48, a3);
        }
        /* a* now hold |q| of the last edge: the backward partials start there */
        for (uint32_t kk = deg; kk-- > 0;) {
            int16_t *pv = post + (size_t)cols[kk] * zp, *re = rb + (size_t)kk * z + l0;
            uint32_t s = shifts[kk];
            const int16_t *qk = qb + 64 * kk, *ak = ab + 64 * kk, *fk = fb + 64 * kk;
            __m256i m0, m1, m2, m3;
            if (deg == 1) {
                m0 = m1 = m2 = m3 = _mm256_set1_epi16(SAT);
            } else if (kk == deg - 1) {
                m0 = LD(fk); m1 = LD(fk + 16); m2 = LD(fk + 32); m3 = LD(fk + 48);
            } else if (kk == 0) {
                m0 = a0; m1 = a1; m2 = a2; m3 = a3;
            } else {
                m0 = boxplus16(LD(fk), a0, tbl); m1 = boxplus16(LD(fk + 16), a1, tbl);
                m2 = boxplus16(LD(fk + 32), a2, tbl); m3 = boxplus16(LD(fk + 48), a3, tbl);
                a0 = boxplus16(a0, LD(ak), tbl); a1 = boxplus16(a1, LD(ak + 16), tbl);
                a2 = boxplus16(a2, LD(ak + 32), tbl); a3 = boxplus16(a3, LD(ak + 48), tbl);
            }
#define OUT(m, x, qoff, v)                                                                          \
            do {                                                                                    \
                __m256i q_ = LD(qk + (qoff));                                                       \
                __m256i r_ = _mm256_sign_epi16(_mm256_min_epi16(m, vrmax),                          \
                                               _mm256_or_si256(_mm256_xor_si256(x, q_), one));      \
                ST(re + (qoff), r_);                                                                \
                ST(pv + (v), _mm256_max_epi16(_mm256_adds_epi16(q_, r_), lo));                      \
            } while (0)
            OUT(m0, x0, 0, ROT(l0, s, z));
            OUT(m1, x1, 16, ROT(l0 + 16, s, z));
            OUT(m2, x2, 32, ROT(l0 + 32, s, z));
            OUT(m3, x3, 48, ROT(l0 + 48, s, z));
#undef OUT
        }
    }
    for (uint32_t k = 0; k < deg; k++) {
        int16_t *pv = post + (size_t)cols[k] * zp;
        uint32_t b = shifts[k] & 15;        /* the chunk straddling the end wrote positions 0..b-1 in the pad */
        if (b)
            memcpy(pv, pv + z, b * sizeof *pv);
        memcpy(pv + z, pv, PAD * sizeof *pv);
    }
}

/* AVX-512BW: layer4_avx2 with 32-lane chunks, two side by side. Wrapped rotations
 * load and store their two parts under lane masks (no pad reads), so the pad is only
 * refreshed after the layer. Same arithmetic, bit-identical. */
#define LD5(p) _mm512_loadu_si512((const void *)(p))
#define ST5(p, v) _mm512_storeu_si512((void *)(p), (v))

__attribute__((target("avx512bw"))) static inline __m512i boxplus32(__m512i a, __m512i b, __m512i tbl)
{
    const __m512i top = _mm512_set1_epi16(15);
    __m512i s = _mm512_min_epi16(_mm512_srli_epi16(_mm512_add_epi16(a, b), 6), top);
    __m512i d = _mm512_min_epi16(_mm512_srli_epi16(_mm512_abs_epi16(_mm512_sub_epi16(a, b)), 6), top);
    __m512i cs = _mm512_shuffle_epi8(tbl, s);
    __m512i cd = _mm512_shuffle_epi8(tbl, d);
    __m512i m = _mm512_add_epi16(_mm512_min_epi16(a, b), _mm512_sub_epi16(cs, cd));
    return _mm512_max_epi16(m, _mm512_setzero_si512());
}

/* positions v .. v+31 of a block (mod z), v < z */
__attribute__((target("avx512bw"))) static inline __m512i rot_load(const int16_t *pv, uint32_t v, uint32_t z)
{
    if (v + 32 <= z)
        return LD5(pv + v);
    __mmask32 m1 = (__mmask32)((UINT32_C(1) << (z - v)) - 1);
    __m512i a = _mm512_maskz_loadu_epi16(m1, pv + v);
    /* lanes z - v .. 31 hold positions 0 ..: address pv + v - z, only unmasked lanes touched */
    __m512i b = _mm512_maskz_loadu_epi16((__mmask32)~m1, (const void *)((uintptr_t)pv - (uintptr_t)(z - v) * sizeof *pv));
    return _mm512_or_si512(a, b);
}

__attribute__((target("avx512bw"))) static inline void rot_store(int16_t *pv, uint32_t v, uint32_t z, __m512i x)
{
    if (v + 32 <= z) {
        ST5(pv + v, x);
        return;
    }
    __mmask32 m1 = (__mmask32)((UINT32_C(1) << (z - v)) - 1);
    _mm512_mask_storeu_epi16(pv + v, m1, x);
    _mm512_mask_storeu_epi16((void *)((uintptr_t)pv - (uintptr_t)(z - v) * sizeof *pv), (__mmask32)~m1, x);
}

__attribute__((target("avx512bw"))) static void layer64_avx512(const qpp_ldpc_code *c, ldpc_qc_state *st,
                                                              ldpc_qc_ws *ws, uint32_t i)
{
    const uint32_t z = c->z, zp = z + PAD;
    int16_t *qb = ws->q, *ab = ws->q + (size_t)c->max_blk_deg * 16 * NCMAX, *fb = ws->fw;
    const __m512i lo = _mm512_set1_epi16(-SAT), vrmax = _mm512_set1_epi16(RMAX), zero = _mm512_setzero_si512();
    const __m512i tbl = _mm512_broadcast_i32x4(_mm_setr_epi8((char)162, (char)134, 110, 89, 72, 58, 46, 37, 29, 23,
                                                             18, 14, 11, 9, 7, 0));
    uint32_t beg = c->blk_ptr[i], deg = c->blk_ptr[i + 1] - beg;
    const uint32_t *cols = c->blk_col + beg, *shifts = c->blk_shift + beg;
    int16_t *post = st->post, *rb = st->r + (size_t)beg * z;
    for (uint32_t l0 = 0; l0 < z; l0 += 64) {
        const int16_t *sm = ws->synmask + (size_t)i * z + l0;
        __m512i x0 = LD5(sm), x1 = LD5(sm + 32);
        __m512i f0 = zero, f1 = zero, a0 = zero, a1 = zero;
        for (uint32_t k = 0; k < deg; k++) {
            const int16_t *pv = post + (size_t)cols[k] * zp, *re = rb + (size_t)k * z + l0;
            uint32_t s = shifts[k];
            int16_t *qk = qb + 64 * k, *ak = ab + 64 * k, *fk = fb + 64 * k;
            __m512i q0 = _mm512_max_epi16(_mm512_subs_epi16(rot_load(pv, ROT(l0, s, z), z), LD5(re)), lo);
            __m512i q1 = _mm512_max_epi16(_mm512_subs_epi16(rot_load(pv, ROT(l0 + 32, s, z), z), LD5(re + 32)), lo);
            ST5(qk, q0); ST5(qk + 32, q1);
            x0 = _mm512_xor_si512(x0, q0); x1 = _mm512_xor_si512(x1, q1);
            if (k == 1) {
                f0 = a0; f1 = a1;
            } else if (k > 1) {
                f0 = boxplus32(f0, a0, tbl); f1 = boxplus32(f1, a1, tbl);
            }
            ST5(fk, f0); ST5(fk + 32, f1);
            a0 = _mm512_abs_epi16(q0); a1 = _mm512_abs_epi16(q1);
            ST5(ak, a0); ST5(ak + 32, a1);
        }
        for (uint32_t kk = deg; kk-- > 0;) {
            int16_t *pv = post + (size_t)cols[kk] * zp, *re = rb + (size_t)kk * z + l0;
            uint32_t s = shifts[kk];
            const int16_t *qk = qb + 64 * kk, *ak = ab + 64 * kk, *fk = fb + 64 * kk;
            __m512i m0, m1;
            if (deg == 1) {
                m0 = m1 = _mm512_set1_epi16(SAT);
            } else if (kk == deg - 1) {
                m0 = LD5(fk); m1 = LD5(fk + 32);
            } else if (kk == 0) {
                m0 = a0; m1 = a1;
            } else {
                m0 = boxplus32(LD5(fk), a0, tbl); m1 = boxplus32(LD5(fk + 32), a1, tbl);
                a0 = boxplus32(a0, LD5(ak), tbl); a1 = boxplus32(a1, LD5(ak + 32), tbl);
            }
            __m512i qa = LD5(qk), qc = LD5(qk + 32);
            m0 = _mm512_min_epi16(m0, vrmax);
            m1 = _mm512_min_epi16(m1, vrmax);
            /* negate where bit 15 of sx ^ q is set */
            __m512i r0 = _mm512_mask_sub_epi16(m0, _mm512_movepi16_mask(_mm512_xor_si512(x0, qa)), zero, m0);
            __m512i r1 = _mm512_mask_sub_epi16(m1, _mm512_movepi16_mask(_mm512_xor_si512(x1, qc)), zero, m1);
            ST5(re, r0); ST5(re + 32, r1);
            rot_store(pv, ROT(l0, s, z), z, _mm512_max_epi16(_mm512_adds_epi16(qa, r0), lo));
            rot_store(pv, ROT(l0 + 32, s, z), z, _mm512_max_epi16(_mm512_adds_epi16(qc, r1), lo));
        }
    }
    for (uint32_t k = 0; k < deg; k++) {
        int16_t *pv = post + (size_t)cols[k] * zp;
        memcpy(pv + z, pv, PAD * sizeof *pv);
    }
}

__attribute__((target("avx2"))) static void layers_avx2(const qpp_ldpc_code *c, ldpc_qc_state *st, ldpc_qc_ws *ws,
                                                        int w512)
{
    for (uint32_t i = 0; i < c->mb; i++) {
        if (c->z % 64 == 0 && w512)
            layer64_avx512(c, st, ws, i);
        else if (c->z % 64 == 0)
            layer4_avx2(c, st, ws, i);
        else
            layer_avx2(c, st, ws, i, 1);
    }
}

__attribute__((target("avx2"))) static void hard_avx2(const qpp_ldpc_code *c, const int16_t *post, uint64_t *hard)
{
    memset(hard, 0, wfor(c->n) * sizeof *hard);
    for (uint32_t j = 0; j < c->nb; j++) {
        const int16_t *pv = post + (size_t)j * (c->z + PAD);
        for (uint32_t l = 0; l < c->z; l += 16) {
            __m256i p = _mm256_packs_epi16(_mm256_loadu_si256((const __m256i *)(pv + l)), _mm256_setzero_si256());
            p = _mm256_permute4x64_epi64(p, 0xD8);
            uint64_t bits = (uint32_t)_mm256_movemask_epi8(p) & 0xFFFFu;
            uint32_t v = j * c->z + l;
            hard[v >> 6] |= bits << (v & 63);
        }
    }
}
#endif

#ifdef HAVE_AVX2_QC
/* int8 SIMD layers: 32 lanes per AVX2 vector, 64 per AVX-512BW vector; up to 128 lanes (a
 * group) run their whole row side by side, like layer_avx2. The boxplus in 11 unsigned byte
 * operations: indices by pavgb (ceil(x / 2)), pushed to >= 128 from 16 on by an unsigned
 * saturating add of 112, so pshufb returns 0 there (bit 7 of the index) and its low 4 bits
 * index CORR8 below; min(a, b) + cs saturated above, - cd saturated at 0 (the floor). */
#define GROUP8 128                      /* lanes of one group (scratch sizing in ldpc_qc_ws_init) */

__attribute__((target("avx2"))) static inline __m256i boxplus8x32(__m256i a, __m256i b, __m256i tbl, __m256i c112)
{
    /* s = ceil((a + b) / 2); ceil(|a - b| / 2) = s - min(a, b), as a + b and |a - b| have the
     * same parity */
    __m256i mn = _mm256_min_epu8(a, b), s = _mm256_avg_epu8(a, b);
    __m256i d = _mm256_adds_epu8(_mm256_sub_epi8(s, mn), c112);
    s = _mm256_adds_epu8(s, c112);
    __m256i m = _mm256_adds_epu8(mn, _mm256_shuffle_epi8(tbl, s));
    return _mm256_subs_epu8(m, _mm256_shuffle_epi8(tbl, d));
}

/* NC chunks of 32 lanes from lane l0 of base row i (z a multiple of 32). Posterior reads and
 * writes that straddle a block's end use the 64-byte pad as layer_avx2 does with its 16. */
__attribute__((target("avx2"), always_inline)) static inline void
group8_avx2(const qpp_ldpc_code *c, ldpc_qc_state *st, ldpc_qc_ws *ws, uint32_t i, uint32_t l0, const int NC)
{
    const uint32_t z = c->z, zp = z + PAD8;
    int8_t *qb = ws->q8, *ab = ws->q8 + (size_t)c->max_blk_deg * GROUP8;
    uint8_t *fb = ws->fw8;
    const __m256i lo = _mm256_set1_epi8(-QMAX8), vrmax = _mm256_set1_epi8(RMAX8), one = _mm256_set1_epi8(1);
    const __m256i lo16 = _mm256_set1_epi16(-SAT);
    const __m256i tbl = _mm256_setr_epi8(TABLE8_BYTES, TABLE8_BYTES), c112 = _mm256_set1_epi8(112);
    uint32_t beg = c->blk_ptr[i], deg = c->blk_ptr[i + 1] - beg;
    const uint32_t *cols = c->blk_col + beg, *shifts = c->blk_shift + beg;
    const int8_t *rbase = st->r8 + (size_t)beg * z;
    __m256i sx[4], f[4], ap[4];
    for (int j = 0; j < NC; j++) {
        sx[j] = LD(ws->synmask8 + (size_t)i * z + l0 + 32 * (uint32_t)j);
        f[j] = ap[j] = _mm256_setzero_si256();
    }
    for (uint32_t k = 0; k < deg; k++) {
        const int16_t *pv = st->post8 + (size_t)cols[k] * zp;
        for (int j = 0; j < NC; j++) {
            uint32_t l = l0 + 32 * (uint32_t)j;
            const int16_t *pp = pv + ROT(l, shifts[k], z);
            const int8_t *rp = rbase + (size_t)k * z + l;
            /* q = post - r in int16, packed to int8 with saturation (per 128-bit lane, so the
             * qwords are put back in order), -128 raised to -127 */
            __m256i q0 = _mm256_subs_epi16(LD(pp), _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)rp)));
            __m256i q1 = _mm256_subs_epi16(LD(pp + 16),
                                           _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(rp + 16))));
            __m256i q = _mm256_max_epi8(_mm256_permute4x64_epi64(_mm256_packs_epi16(q0, q1), 0xD8), lo);
            ST(qb + 32 * (NC * k + j), q);
            sx[j] = _mm256_xor_si256(sx[j], q);
            if (k == 1)
                f[j] = ap[j];
            else if (k > 1)
                f[j] = boxplus8x32(f[j], ap[j], tbl, c112);
            ST(fb + 32 * (NC * k + j), f[j]);
            ap[j] = _mm256_abs_epi8(q);
            ST(ab + 32 * (NC * k + j), ap[j]);
        }
    }
    __m256i *bw = ap;                       /* starts as |q| of the last edge */
    for (uint32_t kk = deg; kk-- > 0;) {
        int16_t *pv = st->post8 + (size_t)cols[kk] * zp;
        int8_t *re = st->r8 + (size_t)(beg + kk) * z;
        for (int j = 0; j < NC; j++) {
            uint32_t l = l0 + 32 * (uint32_t)j;
            __m256i q = LD(qb + 32 * (NC * kk + j)), mag;
            if (deg == 1)
                mag = vrmax;
            else if (kk == deg - 1)
                mag = LD(fb + 32 * (NC * kk + j));
            else if (kk == 0)
                mag = bw[j];
            else {
                mag = boxplus8x32(LD(fb + 32 * (NC * kk + j)), bw[j], tbl, c112);
                bw[j] = boxplus8x32(bw[j], LD(ab + 32 * (NC * kk + j)), tbl, c112);
            }
            /* mag <= 127 = RMAX8 already (a boxplus never exceeds its inputs) */
            __m256i rv = _mm256_sign_epi8(mag, _mm256_or_si256(_mm256_xor_si256(sx[j], q), one));
            /* post += r' - r in int16 (|r' - r| <= 254) */
            __m256i d0 = _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(rv)),
                                          _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(re + l))));
            __m256i d1 = _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(rv, 1)),
                                          _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(re + l + 16))));
            ST(re + l, rv);
            int16_t *pp = pv + ROT(l, shifts[kk], z);
            ST(pp, _mm256_max_epi16(_mm256_adds_epi16(LD(pp), d0), lo16));
            ST(pp + 16, _mm256_max_epi16(_mm256_adds_epi16(LD(pp + 16), d1), lo16));
        }
    }
}

/* After a layer: each block's straddling chunk wrote positions 0..b-1 into the pad (b = shift
 * mod the chunk width); copy them back, then refresh the pad. Vector copies: the memcpy calls
 * of variable size became rep movsq here, which took 17 % of the layer time (perf). */
__attribute__((target("avx2"))) static void pad8_fix_avx2(const qpp_ldpc_code *c, ldpc_qc_state *st, uint32_t i)
{
    const uint32_t z = c->z;
    const __m256i idx0 = _mm256_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m256i idx1 = _mm256_add_epi16(idx0, _mm256_set1_epi16(16));
    for (uint32_t e = c->blk_ptr[i]; e < c->blk_ptr[i + 1]; e++) {
        int16_t *pv = st->post8 + (size_t)c->blk_col[e] * (z + PAD8);
        uint32_t b = c->blk_shift[e] & 31;
        if (b) {
            __m256i bv = _mm256_set1_epi16((int16_t)b);
            ST(pv, _mm256_blendv_epi8(LD(pv), LD(pv + z), _mm256_cmpgt_epi16(bv, idx0)));
            ST(pv + 16, _mm256_blendv_epi8(LD(pv + 16), LD(pv + z + 16), _mm256_cmpgt_epi16(bv, idx1)));
        }
        for (uint32_t k = 0; k < (z < PAD8 ? z : PAD8); k += 16)
            ST(pv + z + k, LD(pv + k));
    }
}

__attribute__((target("avx512bw"))) static void pad8_fix_avx512(const qpp_ldpc_code *c, ldpc_qc_state *st, uint32_t i)
{
    const uint32_t z = c->z;                /* a multiple of 64 */
    for (uint32_t e = c->blk_ptr[i]; e < c->blk_ptr[i + 1]; e++) {
        int16_t *pv = st->post8 + (size_t)c->blk_col[e] * (z + PAD8);
        uint32_t b = c->blk_shift[e] & 63;
        /* blend in registers: a full load right after a masked store to the same address
         * is not store-forwarded (9 % of the layer time, perf) */
        __mmask32 m0 = b >= 32 ? ~(__mmask32)0 : (__mmask32)((UINT32_C(1) << b) - 1);
        __mmask32 m1 = b > 32 ? (__mmask32)((UINT32_C(1) << (b - 32)) - 1) : 0;
        __m512i v0 = _mm512_mask_mov_epi16(LD5(pv), m0, LD5(pv + z));
        __m512i v1 = _mm512_mask_mov_epi16(LD5(pv + 32), m1, LD5(pv + z + 32));
        ST5(pv, v0);
        ST5(pv + 32, v1);
        ST5(pv + z, v0);
        ST5(pv + z + 32, v1);
    }
}

__attribute__((target("avx2"))) static void layers8_avx2(const qpp_ldpc_code *c, ldpc_qc_state *st, ldpc_qc_ws *ws)
{
    for (uint32_t i = 0; i < c->mb; i++) {
        uint32_t l0 = 0;
        for (; l0 + 128 <= c->z; l0 += 128)
            group8_avx2(c, st, ws, i, l0, 4);
        if (l0 + 64 <= c->z) {
            group8_avx2(c, st, ws, i, l0, 2);
            l0 += 64;
        }
        if (l0 < c->z)
            group8_avx2(c, st, ws, i, l0, 1);
        pad8_fix_avx2(c, st, i);
    }
}

__attribute__((target("avx512bw"))) static inline __m512i boxplus8x64(__m512i a, __m512i b, __m512i tbl, __m512i c112)
{
    /* s = ceil((a + b) / 2); ceil(|a - b| / 2) = s - min(a, b), as a + b and |a - b| have the
     * same parity */
    __m512i mn = _mm512_min_epu8(a, b), s = _mm512_avg_epu8(a, b);
    __m512i d = _mm512_adds_epu8(_mm512_sub_epi8(s, mn), c112);
    s = _mm512_adds_epu8(s, c112);
    __m512i m = _mm512_adds_epu8(mn, _mm512_shuffle_epi8(tbl, s));
    return _mm512_subs_epu8(m, _mm512_shuffle_epi8(tbl, d));
}

/* group8_avx2 with NC chunks of 64 lanes (z a multiple of 64); signs applied by a mask
 * subtract (AVX-512 has no vpsignb). */
__attribute__((target("avx512bw"), always_inline)) static inline void
group8_avx512(const qpp_ldpc_code *c, ldpc_qc_state *st, ldpc_qc_ws *ws, uint32_t i, uint32_t l0, const int NC)
{
    const uint32_t z = c->z, zp = z + PAD8;
    int8_t *qb = ws->q8, *ab = ws->q8 + (size_t)c->max_blk_deg * GROUP8;
    uint8_t *fb = ws->fw8;
    const __m512i lo = _mm512_set1_epi8(-QMAX8), vrmax = _mm512_set1_epi8(RMAX8), zero = _mm512_setzero_si512();
    const __m512i lo16 = _mm512_set1_epi16(-SAT), order = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
    const __m512i tbl = _mm512_broadcast_i32x4(_mm_setr_epi8(TABLE8_BYTES)), c112 = _mm512_set1_epi8(112);
    uint32_t beg = c->blk_ptr[i], deg = c->blk_ptr[i + 1] - beg;
    const uint32_t *cols = c->blk_col + beg, *shifts = c->blk_shift + beg;
    const int8_t *rbase = st->r8 + (size_t)beg * z;
    __m512i sx[2], f[2], ap[2];
    for (int j = 0; j < NC; j++) {
        sx[j] = LD5(ws->synmask8 + (size_t)i * z + l0 + 64 * (uint32_t)j);
        f[j] = ap[j] = zero;
    }
    for (uint32_t k = 0; k < deg; k++) {
        const int16_t *pv = st->post8 + (size_t)cols[k] * zp;
        for (int j = 0; j < NC; j++) {
            uint32_t l = l0 + 64 * (uint32_t)j;
            const int16_t *pp = pv + ROT(l, shifts[k], z);
            const int8_t *rp = rbase + (size_t)k * z + l;
            __m512i q0 = _mm512_subs_epi16(LD5(pp), _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)rp)));
            __m512i q1 = _mm512_subs_epi16(LD5(pp + 32),
                                           _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(rp + 32))));
            __m512i q = _mm512_max_epi8(_mm512_permutexvar_epi64(order, _mm512_packs_epi16(q0, q1)), lo);
            ST5(qb + 64 * (NC * k + j), q);
            sx[j] = _mm512_xor_si512(sx[j], q);
            if (k == 1)
                f[j] = ap[j];
            else if (k > 1)
                f[j] = boxplus8x64(f[j], ap[j], tbl, c112);
            ST5(fb + 64 * (NC * k + j), f[j]);
            ap[j] = _mm512_abs_epi8(q);
            ST5(ab + 64 * (NC * k + j), ap[j]);
        }
    }
    __m512i *bw = ap;
    for (uint32_t kk = deg; kk-- > 0;) {
        int16_t *pv = st->post8 + (size_t)cols[kk] * zp;
        int8_t *re = st->r8 + (size_t)(beg + kk) * z;
        for (int j = 0; j < NC; j++) {
            uint32_t l = l0 + 64 * (uint32_t)j;
            __m512i q = LD5(qb + 64 * (NC * kk + j)), mag;
            if (deg == 1)
                mag = vrmax;
            else if (kk == deg - 1)
                mag = LD5(fb + 64 * (NC * kk + j));
            else if (kk == 0)
                mag = bw[j];
            else {
                mag = boxplus8x64(LD5(fb + 64 * (NC * kk + j)), bw[j], tbl, c112);
                bw[j] = boxplus8x64(bw[j], LD5(ab + 64 * (NC * kk + j)), tbl, c112);
            }
            __m512i rv = _mm512_mask_sub_epi8(mag, _mm512_movepi8_mask(_mm512_xor_si512(sx[j], q)), zero, mag);
            __m512i d0 = _mm512_sub_epi16(_mm512_cvtepi8_epi16(_mm512_castsi512_si256(rv)),
                                          _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(re + l))));
            __m512i d1 = _mm512_sub_epi16(_mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64(rv, 1)),
                                          _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(re + l + 32))));
            ST5(re + l, rv);
            int16_t *pp = pv + ROT(l, shifts[kk], z);
            ST5(pp, _mm512_max_epi16(_mm512_adds_epi16(LD5(pp), d0), lo16));
            ST5(pp + 32, _mm512_max_epi16(_mm512_adds_epi16(LD5(pp + 32), d1), lo16));
        }
    }
}

__attribute__((target("avx512bw"))) static void layers8_avx512(const qpp_ldpc_code *c, ldpc_qc_state *st,
                                                              ldpc_qc_ws *ws)
{
    for (uint32_t i = 0; i < c->mb; i++) {
        uint32_t l0 = 0;
        for (; l0 + 128 <= c->z; l0 += 128)
            group8_avx512(c, st, ws, i, l0, 2);
        if (l0 < c->z)
            group8_avx512(c, st, ws, i, l0, 1);
        pad8_fix_avx512(c, st, i);
    }
}

__attribute__((target("avx2"))) static void hard8_avx2(const qpp_ldpc_code *c, const int16_t *post, uint64_t *hard)
{
    memset(hard, 0, wfor(c->n) * sizeof *hard);
    for (uint32_t j = 0; j < c->nb; j++) {
        const int16_t *pv = post + (size_t)j * (c->z + PAD8);
        for (uint32_t l = 0; l < c->z; l += 32) {
            __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi16(LD(pv + l), LD(pv + l + 16)), 0xD8);
            uint64_t bits = (uint32_t)_mm256_movemask_epi8(p);
            uint32_t v = j * c->z + l;
            hard[v >> 6] |= bits << (v & 63);
        }
    }
}
#endif

static unsigned popcount64(uint64_t x)
{
    x = x - ((x >> 1) & UINT64_C(0x5555555555555555));
    x = (x & UINT64_C(0x3333333333333333)) + ((x >> 2) & UINT64_C(0x3333333333333333));
    x = (x + (x >> 4)) & UINT64_C(0x0F0F0F0F0F0F0F0F);
    return (unsigned)((x * UINT64_C(0x0101010101010101)) >> 56);
}

/* CPU path of a run: 2 = AVX-512BW, 1 = AVX2, 0 = portable (the int8 SIMD layers need z a
 * multiple of 64 / 32 and fall back otherwise). */
static int qc_path(const qpp_ldpc_code *c, const ldpc_qc_state *st)
{
    unsigned feat = qpp_cpu_features();
    int avx2 = (feat & QPP_CPU_AVX2) != 0, w512 = avx2 && (feat & QPP_CPU_AVX512BW) != 0;
    if (st->post)
        return w512 ? 2 : avx2;
    if (w512 && c->z % 64 == 0)
        return 2;
    return avx2 && c->z % 32 == 0;
}

static uint32_t qc_unsatisfied(const qpp_ldpc_code *c, const ldpc_qc_state *st, ldpc_qc_ws *ws,
                               const uint64_t *syn, int path)
{
#ifdef HAVE_AVX2_QC
    if (path && st->post)
        hard_avx2(c, st->post, ws->hard);
    else if (path)
        hard8_avx2(c, st->post8, ws->hard);
    else
#endif
    if (st->post)
        hard_portable(c, st->post, ws->hard);
    else
        hard8_portable(c, st->post8, ws->hard);
    (void)path;
    ldpc_syndrome_raw(c, ws->hard, ws->chk);
    size_t mw = wfor(c->m);
    uint64_t last = (c->m & 63) ? ((UINT64_C(1) << (c->m & 63)) - 1) : ~UINT64_C(0);
    uint32_t bad = 0;
    for (size_t i = 0; i + 1 < mw; i++)
        bad += popcount64(ws->chk[i] ^ syn[i]);
    return bad + popcount64((ws->chk[mw - 1] ^ syn[mw - 1]) & last);
}

static void qc_iteration(const qpp_ldpc_code *c, ldpc_qc_state *st, ldpc_qc_ws *ws, int path)
{
#ifdef HAVE_AVX2_QC
    if (path && st->post)
        layers_avx2(c, st, ws, path == 2);
    else if (path == 2)
        layers8_avx512(c, st, ws);
    else if (path)
        layers8_avx2(c, st, ws);
    else
#endif
    if (st->post)
        layers_portable(c, st, ws);
    else
        layers8_portable(c, st, ws);
}

/* Decode from the state as it is (fresh after ldpc_qc_state_load, or warm:
 * the previous attempt's messages with updated channel values). */
void ldpc_qc_run(const qpp_ldpc_code *c, const uint64_t *syn, uint32_t max_iter, uint32_t stall,
                 ldpc_qc_state *st, ldpc_qc_ws *ws, uint64_t *out,
                 uint32_t *iterations, int *matched)
{
    for (uint32_t r = 0; r < c->m; r++) {
        int8_t b = (int8_t)-(int8_t)((syn[r >> 6] >> (r & 63)) & 1);
        ws->synmask[r] = b;
        ws->synmask8[r] = b;
    }
    int path = qc_path(c, st);
    uint32_t it = 0, since_best = 0;
    uint32_t bad = qc_unsatisfied(c, st, ws, syn, path), best = bad;
    uint32_t hist[16], win = ws->rel_window < 16 ? ws->rel_window : 15;   /* unsatisfied, by it % 16 */
    hist[0] = bad;
    while (bad && it < max_iter && !(stall && since_best >= stall)) {
        qc_iteration(c, st, ws, path);
        it++;
        bad = qc_unsatisfied(c, st, ws, syn, path);
        if (bad < best) {
            best = bad;
            since_best = 0;
        } else {
            since_best++;
        }
        if (win && it >= win && (uint64_t)bad * 1000 > (uint64_t)hist[(it - win) & 15] * (1000 - ws->rel_permille))
            break;
        hist[it & 15] = bad;
    }
    memcpy(out, ws->hard, wfor(c->n) * sizeof *out);
    *iterations = it;
    *matched = bad == 0;
}

static int decode_args(const qpp_ldpc_code *code, const void *llr, const uint64_t *syn, size_t syn_words,
                       uint32_t max_iter, uint32_t stall, const uint64_t *out, size_t out_words,
                       const uint32_t *iterations, const int *matched)
{
    if (!code || !llr || !syn || !out || !iterations || !matched)
        return QPP_ERR_NULL;
    if (!code->z)
        return QPP_ERR_VALUE;
    if (syn_words < wfor(code->m) || out_words < wfor(code->n))
        return QPP_ERR_LENGTH;
    if (max_iter > 100000 || stall > 100000)
        return QPP_ERR_VALUE;
    return QPP_OK;
}

int qpp_ldpc_decode_qc(const qpp_ldpc_code *code, const int16_t *llr, const uint64_t *syn, size_t syn_words,
                       uint32_t max_iter, uint32_t stall,
                       uint64_t *out, size_t out_words, int16_t *post_out,
                       uint32_t *iterations, int *matched)
{
    int rc = decode_args(code, llr, syn, syn_words, max_iter, stall, out, out_words, iterations, matched);
    if (rc)
        return rc;
    for (uint32_t v = 0; v < code->n; v++)
        if (llr[v] < -SAT)
            return QPP_ERR_VALUE;       /* -32768 has no positive counterpart */
    ldpc_qc_state st = {0};
    ldpc_qc_ws ws;
    rc = ldpc_qc_state_init(&st, code, 0);
    if (rc)
        return rc;
    rc = ldpc_qc_ws_init(&ws, code);
    if (rc) {
        ldpc_qc_state_free(&st, code);
        return rc;
    }
    ldpc_qc_state_load(code, &st, llr);
    ldpc_qc_run(code, syn, max_iter, stall, &st, &ws, out, iterations, matched);
    if (post_out)
        for (uint32_t j = 0; j < code->nb; j++)
            memcpy(post_out + (size_t)j * code->z, st.post + (size_t)j * (code->z + PAD), code->z * sizeof *post_out);
    ldpc_qc_ws_free(&ws);
    ldpc_qc_state_free(&st, code);
    return QPP_OK;
}

int qpp_ldpc_decode_qc8(const qpp_ldpc_code *code, const int16_t *llr, const uint64_t *syn, size_t syn_words,
                        uint32_t max_iter, uint32_t stall,
                        uint64_t *out, size_t out_words, int16_t *post_out,
                        uint32_t *iterations, int *matched)
{
    int rc = decode_args(code, llr, syn, syn_words, max_iter, stall, out, out_words, iterations, matched);
    if (rc)
        return rc;
    for (uint32_t v = 0; v < code->n; v++)
        if (llr[v] < -SAT)
            return QPP_ERR_VALUE;
    ldpc_qc_state st = {0};
    ldpc_qc_ws ws;
    rc = ldpc_qc_state_init(&st, code, 1);
    if (rc)
        return rc;
    rc = ldpc_qc_ws_init(&ws, code);
    if (rc) {
        ldpc_qc_state_free(&st, code);
        return rc;
    }
    state_load8(code, &st, llr);
    ldpc_qc_run(code, syn, max_iter, stall, &st, &ws, out, iterations, matched);
    if (post_out)
        for (uint32_t j = 0; j < code->nb; j++)
            memcpy(post_out + (size_t)j * code->z, st.post8 + (size_t)j * (code->z + PAD8),
                   code->z * sizeof *post_out);
    ldpc_qc_ws_free(&ws);
    ldpc_qc_state_free(&st, code);
    return QPP_OK;
}

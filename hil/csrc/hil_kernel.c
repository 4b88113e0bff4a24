/* The HIL link model's per-frame hot path (see hil_kernel.h and hil/model.py).
 *
 * One pass over the frame in slot order. The next event of each source is kept
 * as a position: photon candidates (a Bernoulli(p_max) process by geometric
 * skips, thinned by the class's outcome table), each detector's dark counts (a
 * Bernoulli(p_dark) process by geometric skips) and a min-heap of pending
 * afterpulses. Geometric gaps: floor(E / lambda) + 1 with E ~ Exp(1) by
 * inversion and lambda = -log(1 - p) is exactly Geometric(p) (Devroye,
 * Non-Uniform Random Variate Generation, 1986, sec. X.2; thinning: Lewis and
 * Shedler, Naval Res. Logistics Q. 26, 1979). At each slot with any hit the
 * detectors apply the non-paralyzable dead time in order (Mueller, Nucl.
 * Instrum. Methods 112, 1973); a registered click spawns an afterpulse with its
 * detector's probability after dead time + Exp(tau) (Itzler et al., J. Mod.
 * Opt. 58, 2011, sec. 4), and afterpulses are clicks like any other, so they
 * afterpulse in turn. Random numbers: xoshiro256** (Blackman and Vigna, ACM
 * TOMS 47, 2021, article 36) seeded by the caller from the frame's numpy stream.
 */
#include "hil_kernel.h"

#include <math.h>
#include <string.h>

#define NONE INT64_MIN
#define FAR (INT64_MAX / 8)

struct rng {
    uint64_t s[4];
};

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t next64(struct rng *r)
{
    uint64_t *s = r->s;
    const uint64_t out = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* uniform in [0, 1) with 53 random bits */
static inline double unif(struct rng *r) { return (double)(next64(r) >> 11) * 0x1.0p-53; }

/* Exp(1) by inversion; 1 - u lies in (0, 1] */
static inline double expo(struct rng *r) { return -log(1.0 - unif(r)); }

/* N(0, 1) by the ziggurat method with 128 layers (Marsaglia and Tsang, J. Stat. Softw. 5(8), 2000),
 * with the layer index and the abscissa from separate bits (Doornik, "An improved ziggurat method
 * to generate normal random samples", 2005). zig: x[0..128] then ratio x[i+1]/x[i] [0..127]
 * (hil.kernel.ziggurat_tables); ~98.8 % of draws take the first branch. */
enum { ZIG_LAYERS = 128 };
static const double ZIG_R = 3.442619855899;

static double normal_slow(struct rng *r, const double *zig, int i, double u);

static inline double normal(struct rng *r, const double *zig)
{
    uint64_t b = next64(r);
    int i = (int)(b & (ZIG_LAYERS - 1));
    double u = 2.0 * ((double)(b >> 11) * 0x1.0p-53) - 1.0;
    if (fabs(u) < zig[ZIG_LAYERS + 1 + i])
        return u * zig[i];
    return normal_slow(r, zig, i, u);
}

/* the wedges and the tail (about 1.2 % of draws), then fresh draws until one is accepted */
static double normal_slow(struct rng *r, const double *zig, int i, double u)
{
    const double *x = zig, *ratio = zig + ZIG_LAYERS + 1;
    for (int first = 1;; first = 0) {
        if (!first) {
            uint64_t b = next64(r);
            i = (int)(b & (ZIG_LAYERS - 1));
            u = 2.0 * ((double)(b >> 11) * 0x1.0p-53) - 1.0;
            if (fabs(u) < ratio[i])
                return u * x[i];
        }
        if (i == 0) {                       /* the tail beyond R (Marsaglia 1964) */
            double t, y;
            do {
                t = -log(1.0 - unif(r)) / ZIG_R;
                y = -log(1.0 - unif(r));
            } while (y + y < t * t);
            return u < 0.0 ? -(ZIG_R + t) : ZIG_R + t;
        }
        double z = u * x[i];
        double f0 = exp(-0.5 * (x[i] * x[i] - z * z));
        double f1 = exp(-0.5 * (x[i + 1] * x[i + 1] - z * z));
        if (f1 + unif(r) * (f0 - f1) < 1.0)
            return z;
    }
}

/* 1 / lambda for geometric gaps of a Bernoulli(p) process; 0 when p >= 1, < 0 when p <= 0 */
static double inv_rate(double p)
{
    if (!(p > 0.0))
        return -1.0;
    if (p >= 1.0)
        return 0.0;
    return -1.0 / log1p(-p);
}

/* next success after pos; FAR when there is none */
static inline int64_t geo_next(struct rng *r, int64_t pos, double ir)
{
    if (ir < 0.0)
        return FAR;
    double g = expo(r) * ir;
    if (g >= (double)FAR)
        return FAR;
    int64_t nxt = pos + (int64_t)g + 1;
    return nxt > FAR ? FAR : nxt;
}

/* rint() for round-to-nearest-even without a libm call: adding and removing 2^52 leaves the
 * integer part rounded by the FPU's default mode (exact for |x| < 2^52; rint beyond) */
static inline double round_even(double x)
{
    if (x >= 0x1p52 || x <= -0x1p52)
        return rint(x);
    return x >= 0.0 ? (x + 0x1p52) - 0x1p52 : (x - 0x1p52) + 0x1p52;
}

/* Walker's alias draw: bucket floor(u k), kept with probability thr, else its alias */
static inline int64_t alias_draw(const double *thr, const int32_t *alias, int32_t k, int64_t row, double u)
{
    double x = u * k;
    int64_t i = (int64_t)x;
    if (i >= k)
        i = k - 1;
    int64_t j = row * k + i;
    int64_t a = alias[j];                   /* both loaded: the select compiles to a cmov */
    return (x - (double)i) < thr[j] ? i : a;
}

enum { GAP_TABLE = 256 };

/* Next success after pos from the alias table of P(gap = 1..GAP_TABLE) and P(gap > GAP_TABLE):
 * the tail outcome adds GAP_TABLE and draws again, which is exact by the geometric law's
 * memorylessness (Devroye 1986, sec. X.2; Walker 1977 for the table). */
static inline int64_t gap_next(struct rng *r, int64_t pos, const double *thr, const int32_t *alias, int32_t k)
{
    for (;;) {
        int64_t o = alias_draw(thr, alias, k, 0, unif(r));
        if (o < GAP_TABLE)
            return pos + o + 1;
        pos += GAP_TABLE;
        if (pos >= FAR)
            return FAR;
    }
}

static inline int64_t floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/* the same arithmetic, in the same order, as LinkModel._timestamps_from (exact test) */
static inline int64_t stamp(const struct hil_frame_params *p, int64_t s, int d, int noise, double z,
                            double un)
{
    double off = z * p->sig_ps[d + 4 * noise];
    off += p->delay_ps[d];
    off += (double)s * p->period_ps;
    if (noise)
        off += (un - 0.5) * p->period_ps;
    if (p->rate != 1.0)
        off *= p->rate;
    off += p->frac_shift_ps;
    int64_t t = (int64_t)round_even(off) + p->base_ps;
    if (p->resolution_ps > 1)
        t = floordiv(t, p->resolution_ps) * p->resolution_ps;
    return t;
}

static inline int64_t slot_class(const struct hil_frame_params *p, const uint8_t *basis, const uint8_t *bit,
                                 const uint8_t *intensity, int64_t s)
{
    int64_t c = ((int64_t)intensity[s] << 2) | ((int64_t)basis[s] << 1) | bit[s];
    if (p->nseg > 1)
        c += (s * p->nseg / p->n_slots) * 12;
    if (s >= p->switch_slot)
        c += p->switch_offset;
    return c;
}

static inline int dead_ok(int64_t last, int64_t s, int64_t dead)
{
    return last == NONE || dead <= 1 || s - last >= dead;
}

/* min-heap of int64 keys */
static inline void heap_push(int64_t *h, int64_t *n, int64_t key)
{
    int64_t i = (*n)++;
    while (i > 0) {
        int64_t up = (i - 1) / 2;
        if (h[up] <= key)
            break;
        h[i] = h[up];
        i = up;
    }
    h[i] = key;
}

static inline int64_t heap_pop(int64_t *h, int64_t *n)
{
    int64_t top = h[0];
    int64_t last = h[--(*n)];
    int64_t i = 0, m = *n;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= m)
            break;
        if (c + 1 < m && h[c + 1] < h[c])
            c++;
        if (h[c] >= last)
            break;
        h[i] = h[c];
        i = c;
    }
    if (m > 0)
        h[i] = last;
    return top;
}

/* Photon candidates in batches: positions first (geometric gaps), then one alias draw each,
 * then the clicking ones kept; the batch's loads are independent, so they overlap. */
enum { SIG_BATCH = 256 };

struct sigsrc {
    int64_t pos, end;
    int done, gap_tab;
    double ir;
    const double *gthr;
    const int32_t *galias;
    int32_t gk;
    const double *thr;
    const int32_t *alias;
    int32_t k1;
    int32_t n, i;                           /* clicking candidates buffered, next one */
    int64_t slot[SIG_BATCH];
    uint8_t mask[SIG_BATCH], code[SIG_BATCH];
};

static void sig_refill(struct sigsrc *q, struct rng *r, const struct hil_frame_params *p, const uint8_t *basis,
                       const uint8_t *bit, const uint8_t *intensity, int64_t *ncand)
{
    int64_t cand[SIG_BATCH];
    double u[SIG_BATCH];
    q->n = q->i = 0;
    while (q->n == 0 && !q->done) {
        int m = 0;
        int64_t pos = q->pos;
        while (m < SIG_BATCH) {
            pos = q->gap_tab ? gap_next(r, pos, q->gthr, q->galias, q->gk) : geo_next(r, pos, q->ir);
            if (pos >= q->end) {
                q->done = 1;
                break;
            }
            cand[m++] = pos;
        }
        q->pos = pos;
        *ncand += m;
        for (int j = 0; j < m; j++)
            u[j] = unif(r);
        int k = 0;
        const int64_t kk = q->k1 - 1;
        for (int j = 0; j < m; j++) {
            int64_t o = alias_draw(q->thr, q->alias, q->k1, slot_class(p, basis, bit, intensity, cand[j]), u[j]);
            q->slot[k] = cand[j];
            q->mask[k] = (uint8_t)(o % 15 + 1);
            q->code[k] = (uint8_t)(o / 15);
            k += o < kk;
        }
        q->n = k;
    }
}

/* Stable insertion sort of the tags by time: clicks come in slot order and differ from time
 * order only by detector delays and jitter, so each tag moves a few places. Gives up (returns
 * 0, the arrays still a permutation) past a budget of moves, for the caller to sort. */
static int64_t sort_tags(int64_t *t, uint8_t *ch, int64_t *src, int64_t n)
{
    int64_t budget = 64 * n + 4096;
    for (int64_t i = 1; i < n; i++) {
        int64_t ti = t[i];
        if (t[i - 1] <= ti)
            continue;
        uint8_t ci = ch[i];
        int64_t si = src[i], j = i;
        while (j > 0 && t[j - 1] > ti) {
            t[j] = t[j - 1];
            ch[j] = ch[j - 1];
            src[j] = src[j - 1];
            j--;
        }
        t[j] = ti;
        ch[j] = ci;
        src[j] = si;
        budget -= i - j;
        if (budget < 0)
            return 0;
    }
    return 1;
}

static int check_params(const struct hil_frame_params *p, int64_t n_classes)
{
    if (p->n_slots < 0 || p->signal_end > p->n_slots || p->nseg < 1 || p->n_e < 1 || p->k1 < 2 ||
        p->switch_offset < 0 || n_classes < 12L * p->nseg + (p->switch_slot < p->n_slots ? p->switch_offset : 0) || !(p->period_ps > 0.0) || !(p->p_max >= 0.0))
        return HIL_ERR_VALUE;
    for (int d = 0; d < 4; d++)
        if (!(p->p_dark[d] >= 0.0) || !(p->ap_prob[d] >= 0.0) || !(p->ap_prob[d] < 1.0) ||
            !(p->ap_tau_ps[d] >= 0.0) || !(p->ap_dead_ps[d] >= 0.0))
            return HIL_ERR_VALUE;
    return HIL_OK;
}

int hil_run_frame(const struct hil_frame_params *p, const uint64_t *seed,
                  const uint8_t *basis, const uint8_t *bit, const uint8_t *intensity,
                  const double *thr, const int32_t *alias, const double *cum_quiet, int64_t n_classes,
                  const double *zig, int64_t *last_click,
                  const int64_t *ap_in, int64_t n_ap_in,
                  int64_t *heap, int64_t heap_cap,
                  int64_t *ev_slot, uint8_t *ev_det, uint8_t *ev_noise, int64_t *ev_time,
                  int64_t ev_cap, int64_t *n_ev, int64_t *tag_t, uint8_t *tag_ch, int64_t *tag_src,
                  int64_t *sl_slot, uint8_t *sl_mask, uint8_t *sl_code, int64_t *n_sl,
                  int64_t *ap_out, int64_t ap_cap, int64_t *n_ap_out, int64_t *counts)
{
    if (!p || !seed || !thr || !alias || !cum_quiet || !zig || !last_click || !heap || !ev_slot ||
        !ev_det || !ev_noise || !ev_time || !n_ev || !tag_t || !tag_ch || !tag_src || !sl_slot || !sl_mask || !sl_code || !n_sl ||
        !ap_out || !n_ap_out || !counts || (n_ap_in > 0 && !ap_in) ||
        (p->n_slots > 0 && (!basis || !bit || !intensity)))
        return HIL_ERR_NULL;
    if (n_ap_in < 0 || heap_cap < n_ap_in || ev_cap < 0 || ap_cap < 0)
        return HIL_ERR_LENGTH;
    int st = check_params(p, n_classes);
    if (st != HIL_OK)
        return st;
    if ((seed[0] | seed[1] | seed[2] | seed[3]) == 0)
        return HIL_ERR_VALUE;

    struct rng r;
    memcpy(r.s, seed, sizeof r.s);
    const int64_t n = p->n_slots;
    const int64_t sig_end = p->signal_end;
    const int32_t k1 = p->k1, n_e = p->n_e;
    int64_t cnt[HIL_N_COUNTERS] = {0};
    int64_t last[4];
    memcpy(last, last_click, sizeof last);

    int64_t nh = 0;
    for (int64_t i = 0; i < n_ap_in; i++) {
        if (ap_in[i] < 0)
            return HIL_ERR_VALUE;
        heap_push(heap, &nh, ap_in[i]);
    }

    /* photon candidates: gaps from an alias table of Geometric(p_max) when p_max is large
     * enough for the table to cover most gaps, else by inversion (see gap_next) */
    const double ir_sig = inv_rate(p->p_max);
    double gthr[GAP_TABLE + 1];
    int32_t galias[GAP_TABLE + 1], gscratch[2 * (GAP_TABLE + 1)];
    int32_t gk = 0;
    const int gap_tab = p->p_max >= 1.0 / 64 && p->p_max < 1.0;
    if (gap_tab) {
        double probs[GAP_TABLE + 1], q = p->p_max, keep = 1.0;
        gk = GAP_TABLE + 1;
        for (int j = 0; j < GAP_TABLE; j++) {
            probs[j] = keep * q;            /* P(gap = j + 1) = (1 - p)^j p */
            keep *= 1.0 - q;
        }
        probs[GAP_TABLE] = keep;            /* P(gap > GAP_TABLE) = (1 - p)^GAP_TABLE */
        st = hil_alias_build(probs, 1, gk, gthr, galias, gscratch);
        if (st != HIL_OK)
            return st;
    }
    struct sigsrc q = {.pos = -1, .end = sig_end, .done = sig_end <= 0 || !(p->p_max > 0.0),
                       .gap_tab = gap_tab, .ir = ir_sig, .gthr = gthr, .galias = galias, .gk = gk,
                       .thr = thr, .alias = alias, .k1 = k1};
    sig_refill(&q, &r, p, basis, bit, intensity, &cnt[HIL_N_CANDIDATES]);

    double ir_dark[4];
    int64_t dark_pos[4];
    for (int d = 0; d < 4; d++) {
        ir_dark[d] = inv_rate(p->p_dark[d]);
        dark_pos[d] = geo_next(&r, -1, ir_dark[d]);
    }

    int64_t ne = 0, ns = 0, next_noise = FAR;
    int noise_dirty = 1;
    for (;;) {
        const int64_t sig_s = q.i < q.n ? q.slot[q.i] : FAR;
        if (noise_dirty) {                  /* earliest dark count or pending afterpulse */
            next_noise = nh > 0 ? heap[0] / 4 : FAR;
            for (int d = 0; d < 4; d++)
                if (dark_pos[d] < next_noise)
                    next_noise = dark_pos[d];
            noise_dirty = 0;
        }
        const int64_t s = sig_s < next_noise ? sig_s : next_noise;
        if (s >= n)
            break;
        int smask = 0, code = 0, nmask = 0;
        if (next_noise == s)
            noise_dirty = 1;
        if (sig_s == s) {
            smask = q.mask[q.i];
            code = q.code[q.i];
            cnt[HIL_N_SIGNAL_SLOTS]++;
            if (++q.i == q.n)
                sig_refill(&q, &r, p, basis, bit, intensity, &cnt[HIL_N_CANDIDATES]);
        }
        const int blind = s >= p->blind_from;
        for (int d = 0; d < 4; d++)
            if (dark_pos[d] == s) {
                if (!blind) {
                    nmask |= 1 << d;
                    cnt[HIL_N_NOISE_RAW]++;
                }
                dark_pos[d] = geo_next(&r, s, ir_dark[d]);
            }
        while (nh > 0 && heap[0] / 4 == s) {
            int64_t key = heap_pop(heap, &nh);
            if (!blind) {
                nmask |= 1 << (int)(key & 3);
                cnt[HIL_N_NOISE_RAW]++;
                cnt[HIL_N_AFTERPULSES]++;
            }
        }
        int hit = smask | nmask, kept = 0;
        while (hit) {
            int d = hit & 1 ? 0 : hit & 2 ? 1 : hit & 4 ? 2 : 3;   /* lowest set bit */
            hit &= hit - 1;
            if (!dead_ok(last[d], s, p->dead_slots[d])) {
                cnt[HIL_N_DEAD_LOST]++;
                continue;
            }
            if (ne >= ev_cap)
                return HIL_ERR_CAPACITY;
            last[d] = s;
            kept |= 1 << d;
            int noise = !(smask >> d & 1);
            double z = normal(&r, zig);
            double un = noise ? unif(&r) : 0.0;
            ev_slot[ne] = s;
            ev_det[ne] = (uint8_t)d;
            ev_noise[ne] = (uint8_t)noise;
            ev_time[ne] = tag_t[ne + 1] = stamp(p, s, d, noise, z, un);
            tag_ch[ne + 1] = (uint8_t)(d + 1);
            tag_src[ne + 1] = ne + 1;
            ne++;
            if (!blind && p->ap_prob[d] > 0.0 && unif(&r) < p->ap_prob[d]) {
                double delay = p->ap_dead_ps[d] + (p->ap_tau_ps[d] > 0.0 ? p->ap_tau_ps[d] * expo(&r) : 0.0);
                double ds = ceil(delay / p->period_ps);
                int64_t step = ds < 1.0 ? 1 : (ds >= (double)(FAR / 8) ? FAR / 8 : (int64_t)ds);
                if (nh >= heap_cap)
                    return HIL_ERR_CAPACITY;
                heap_push(heap, &nh, (s + step) * 4 + d);
                noise_dirty = 1;
            }
        }
        if (kept) {
            if (!smask && n_e > 1) {
                const double *cq = cum_quiet + slot_class(p, basis, bit, intensity, s) * n_e;
                double u = unif(&r);
                int e = 0;
                while (e < n_e - 1 && u >= cq[e])
                    e++;
                code = e;
            }
            sl_slot[ns] = s;
            sl_mask[ns] = (uint8_t)kept;
            sl_code[ns] = (uint8_t)code;
            ns++;
        }
    }
    if (nh > ap_cap)
        return HIL_ERR_CAPACITY;
    for (int64_t i = 0; i < nh; i++)
        ap_out[i] = heap[i] - 4 * n;            /* relative to the next frame's start */
    *n_ap_out = nh;
    *n_ev = ne;
    tag_t[0] = p->sync_ps;
    tag_ch[0] = 0;
    tag_src[0] = 0;
    cnt[HIL_N_TAGS_SORTED] = sort_tags(tag_t, tag_ch, tag_src, ne + 1);
    *n_sl = ns;
    memcpy(last_click, last, sizeof last);
    for (int d = 0; d < 4; d++)
        if (last_click[d] != NONE)
            last_click[d] -= n;                 /* relative to the next frame's start */
    memcpy(counts, cnt, sizeof cnt);
    return HIL_OK;
}

int hil_alias_build(const double *probs, int64_t n_rows, int32_t k, double *thr, int32_t *alias,
                    int32_t *scratch)
{
    if (n_rows < 0 || k < 1)
        return HIL_ERR_LENGTH;
    if (n_rows > 0 && (!probs || !thr || !alias || !scratch))
        return HIL_ERR_NULL;
    for (int64_t row = 0; row < n_rows; row++) {
        const double *q = probs + row * k;
        double *t = thr + row * k;
        int32_t *a = alias + row * k;
        int32_t *small = scratch, *large = scratch + k;
        int32_t ns = 0, nl = 0;
        double sum = 0.0;
        for (int32_t i = 0; i < k; i++) {
            if (!(q[i] >= 0.0) || !(q[i] <= 1e300))
                return HIL_ERR_VALUE;
            sum += q[i];
        }
        if (!(sum > 0.0)) {                 /* no mass: always the last outcome */
            for (int32_t i = 0; i < k; i++) {
                t[i] = 0.0;
                a[i] = k - 1;
            }
            continue;
        }
        for (int32_t i = 0; i < k; i++) {
            t[i] = q[i] * k / sum;
            a[i] = i;
            if (t[i] < 1.0)
                small[ns++] = i;
            else
                large[nl++] = i;
        }
        while (ns > 0 && nl > 0) {
            int32_t s = small[--ns], l = large[nl - 1];
            a[s] = l;                       /* bucket s: s with t[s], else l */
            t[l] -= 1.0 - t[s];
            if (t[l] < 1.0) {
                nl--;
                small[ns++] = l;
            }
        }
        while (nl > 0)                      /* rounding leftovers are full buckets */
            t[large[--nl]] = 1.0;
        while (ns > 0)
            t[small[--ns]] = 1.0;
    }
    return HIL_OK;
}

int hil_alias_draw(const double *thr, const int32_t *alias, int32_t k, int64_t n_rows, const int64_t *cls,
                   const double *u, int64_t n, int64_t *out)
{
    if (n < 0 || k < 1 || n_rows < 0)
        return HIL_ERR_LENGTH;
    if (n > 0 && (!thr || !alias || !cls || !u || !out))
        return HIL_ERR_NULL;
    for (int64_t i = 0; i < n; i++) {
        if (cls[i] < 0 || cls[i] >= n_rows || !(u[i] >= 0.0 && u[i] < 1.0))
            return HIL_ERR_VALUE;
        out[i] = alias_draw(thr, alias, k, cls[i], u[i]);
    }
    return HIL_OK;
}

int hil_dead_time(const int64_t *slot, const uint8_t *det, int64_t n, const int64_t *dead_slots,
                  int64_t *last_click, uint8_t *keep)
{
    if (n < 0)
        return HIL_ERR_LENGTH;
    if (!dead_slots || !last_click || (n > 0 && (!slot || !det || !keep)))
        return HIL_ERR_NULL;
    int64_t last[4];
    memcpy(last, last_click, sizeof last);
    for (int64_t i = 0; i < n; i++) {
        int d = det[i];
        if (d > 3 || (i > 0 && slot[i] < slot[i - 1]))
            return HIL_ERR_VALUE;
        keep[i] = (uint8_t)dead_ok(last[d], slot[i], dead_slots[d]);
        if (keep[i])
            last[d] = slot[i];
    }
    memcpy(last_click, last, sizeof last);
    return HIL_OK;
}

int hil_timestamps(const struct hil_frame_params *p, const int64_t *slot, const uint8_t *det,
                   const uint8_t *noise, const double *z, const double *unoise, int64_t n, int64_t *out)
{
    if (n < 0)
        return HIL_ERR_LENGTH;
    if (!p || (n > 0 && (!slot || !det || !noise || !z || !unoise || !out)))
        return HIL_ERR_NULL;
    for (int64_t i = 0; i < n; i++) {
        if (det[i] > 3 || noise[i] > 1)
            return HIL_ERR_VALUE;
        out[i] = stamp(p, slot[i], det[i], noise[i], z[i], unoise[i]);
    }
    return HIL_OK;
}

int hil_normals(const uint64_t *seed, const double *zig, int64_t n, double *out)
{
    if (n < 0)
        return HIL_ERR_LENGTH;
    if (!seed || !zig || (n > 0 && !out))
        return HIL_ERR_NULL;
    if ((seed[0] | seed[1] | seed[2] | seed[3]) == 0)
        return HIL_ERR_VALUE;
    struct rng r;
    memcpy(r.s, seed, sizeof r.s);
    for (int64_t i = 0; i < n; i++)
        out[i] = normal(&r, zig);
    return HIL_OK;
}

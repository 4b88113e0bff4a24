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
 * TOMS 47, 2021, article 36) seeded by the caller from the frame's numpy stream;
 * the timing jitter comes from a second stream, the same generator jumped 2^128
 * draws ahead (their jump polynomial), so the timestamps are a separate tight
 * pass over the frame's clicks after the slot-order pass.
 *
 * Cost per click is what matters (the target is clicks per second), so:
 * outcome and gap draws are packed alias tables (one 64-bit load and one
 * compare per draw, see hil_alias_pack), one 64-bit random word serves a
 * candidate's gap (high half) and its outcome (low half), slots with only photon
 * clicks take a short path, and dead time is applied without a branch.
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

/* advance 2^128 draws: a stream that does not overlap the first (Blackman and Vigna 2021, sec. 4.2) */
static void jump(struct rng *r)
{
    static const uint64_t J[4] = {0x180ec6d33cfd0abaULL, 0xd5a61266f0c9392cULL, 0xa9582618e03fc9aaULL,
                                  0x39abdc4529b1661cULL};
    uint64_t t[4] = {0, 0, 0, 0};
    for (int i = 0; i < 4; i++)
        for (int b = 0; b < 64; b++) {
            if (J[i] & (UINT64_C(1) << b))
                for (int w = 0; w < 4; w++)
                    t[w] ^= r->s[w];
            next64(r);
        }
    memcpy(r->s, t, sizeof t);
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

/* Walker's alias draw from a packed row (hil_alias_pack): bucket = high bits of x, its own value
 * when the low sh bits are below the bucket's threshold, else its alias's (no branch) */
static inline uint32_t adraw(const uint64_t *row, int sh, uint32_t x)
{
    uint64_t e = row[x >> sh];
    int keep = (x & ((UINT32_C(1) << sh) - 1)) < (uint32_t)e;
    return (uint32_t)(e >> (48 - 16 * keep)) & 0xffffu;     /* a shift: gcc made a ?: a branch */
}

/* Candidate gaps from a packed table of 256 buckets: P(gap = 1..255) and, as value 0,
 * P(gap > 255), which adds 255 and draws again (exact by the geometric law's memorylessness:
 * Devroye 1986, sec. X.2; Walker 1977 for the table). */
enum { GAP_BITS = 8, GAP_TAIL = (1 << GAP_BITS) - 1 };

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

/* hil_pattern_check's rule over slots [a, b): the bad-field mask */
static int pattern_bad(const uint8_t *basis, const uint8_t *bit, const uint8_t *intensity, int64_t a, int64_t b)
{
    /* eight slots per 64-bit word (SWAR): basis and bit may only set bit 0 of a byte; an
     * intensity byte is bad with any of bits 2..7 set or with bits 0 and 1 both set (3) */
    const uint64_t LOW = 0x0101010101010101ULL;
    uint64_t ab = 0, at = 0, ai = 0;
    int64_t i = a;
    for (; i + 8 <= b; i += 8) {
        uint64_t wb, wt, wi;
        memcpy(&wb, basis + i, 8);
        memcpy(&wt, bit + i, 8);
        memcpy(&wi, intensity + i, 8);
        ab |= wb;
        at |= wt;
        ai |= (wi & ~(3 * LOW)) | (wi & (wi >> 1) & LOW);
    }
    for (; i < b; i++) {
        ab |= basis[i];
        at |= bit[i];
        ai |= intensity[i] > 2;
    }
    return (ab & ~LOW ? 1 : 0) | (at & ~LOW ? 2 : 0) | (ai ? 4 : 0);
}

/* Validate the pattern up to slot s (inclusive) before its classes are used, a 64-slot-aligned
 * chunk at a time, so the check reads the bytes the kernel is about to read anyway. */
struct patcheck {
    int64_t upto, n;
    int bad;
};

static inline int pattern_ok_to(struct patcheck *pc, const uint8_t *basis, const uint8_t *bit,
                                const uint8_t *intensity, int64_t s)
{
    if (s >= pc->upto) {
        int64_t b = (s + 64) & ~(int64_t)63;
        if (b > pc->n)
            b = pc->n;
        pc->bad |= pattern_bad(basis, bit, intensity, pc->upto, b);
        pc->upto = b;
    }
    return !pc->bad;
}

/* Photon candidates in batches: positions and outcomes first, the clicking ones kept; the
 * batch's table loads are independent, so they overlap. */
enum { SIG_BATCH = 256 };

struct sigsrc {
    int64_t pos, end;
    int done, gap_tab;
    double ir;
    const uint64_t *gtab;                   /* packed gap table (gap_tab) */
    const uint64_t *otab;                   /* packed outcome table, rows of 2^obits */
    int32_t obits;
    struct patcheck *pc;
    int32_t n, i;                           /* clicking candidates buffered, next one */
    int64_t slot[SIG_BATCH];
    uint16_t val[SIG_BATCH];                /* mask | code << 4 */
};

static void sig_refill(struct sigsrc *q, struct rng *r, const struct hil_frame_params *p, const uint8_t *basis,
                       const uint8_t *bit, const uint8_t *intensity, int64_t *ncand)
{
    int64_t cand[SIG_BATCH];
    uint32_t xo[SIG_BATCH];
    const int osh = 32 - q->obits;
    q->n = q->i = 0;
    while (q->n == 0 && !q->done) {
        int m = 0;
        int64_t pos = q->pos;
        if (q->gap_tab) {
            for (; m < SIG_BATCH; m++) {
                uint64_t x = next64(r);     /* high half: the gap; low half: the outcome */
                uint32_t g;
                while ((g = adraw(q->gtab, 32 - GAP_BITS, (uint32_t)(x >> 32))) == 0) {
                    pos += GAP_TAIL;
                    if (pos >= q->end)
                        break;
                    x = next64(r);
                }
                pos += g;
                if (pos >= q->end) {
                    q->done = 1;
                    break;
                }
                cand[m] = pos;
                xo[m] = (uint32_t)x;
            }
        } else {
            for (; m < SIG_BATCH; m++) {
                pos = geo_next(r, pos, q->ir);
                if (pos >= q->end) {
                    q->done = 1;
                    break;
                }
                cand[m] = pos;
                xo[m] = (uint32_t)next64(r);
            }
        }
        q->pos = pos;
        *ncand += m;
        if (m > 0 && !pattern_ok_to(q->pc, basis, bit, intensity, cand[m - 1])) {
            q->done = 1;                    /* the caller sees pc->bad */
            return;
        }
        int k = 0;
        for (int j = 0; j < m; j++) {
            int64_t row = slot_class(p, basis, bit, intensity, cand[j]);
            uint32_t v = adraw(q->otab + (row << q->obits), osh, xo[j]);
            q->slot[k] = cand[j];
            q->val[k] = (uint16_t)v;
            k += v != 0;
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
    if (p->n_slots < 0 || p->n_slots > FAR / 8 || p->signal_end > p->n_slots || p->nseg < 1 || p->n_e < 1 ||
        p->n_e > 16 || p->obits < 1 || p->obits > 16 || p->switch_offset < 0 ||
        n_classes < 12L * p->nseg + (p->switch_slot < p->n_slots ? p->switch_offset : 0) ||
        !(p->period_ps > 0.0) || !(p->p_max >= 0.0))
        return HIL_ERR_VALUE;
    for (int d = 0; d < 4; d++)
        if (!(p->p_dark[d] >= 0.0) || !(p->ap_prob[d] >= 0.0) || !(p->ap_prob[d] < 1.0) ||
            !(p->ap_tau_ps[d] >= 0.0) || !(p->ap_dead_ps[d] >= 0.0))
            return HIL_ERR_VALUE;
    return HIL_OK;
}

/* clicks in a 4-bit mask (a table: the portable build has no popcnt instruction) */
static const uint8_t POP4[16] = {0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4};

/* Detector state and outputs of the slot-order pass. */
struct clicks {
    int64_t last[4];                        /* last registered click; -FAR for none */
    int64_t dead[4];
    int64_t ne, ns, cap;
    int64_t *ev_slot, *sl_slot;
    uint8_t *ev_det, *ev_noise, *sl_mask, *sl_code;
    int64_t lost;
};

/* Register the hits of slot s (bit d of hit: detector d; bits of smask: photon clicks): dead
 * time without a branch (the event is written, then counted only if the detector was live).
 * Returns the mask of registered clicks. Room for 4 more events is checked by the caller. */
static inline int register_hits(struct clicks *c, int64_t s, int hit, int smask)
{
    int kept = 0;
    const int h0 = hit;
    do {
        int d = __builtin_ctz((unsigned)hit);
        hit &= hit - 1;
        const int64_t old = c->last[d];
        const int ok = s - old >= c->dead[d];
        c->ev_slot[c->ne] = s;
        c->ev_det[c->ne] = (uint8_t)d;
        c->ev_noise[c->ne] = (uint8_t)(~smask >> d & 1);
        c->ne += ok;
        c->last[d] = old + ((s - old) & -(int64_t)ok);     /* s if ok: arithmetic, or gcc branches */
        kept |= ok << d;
    } while (hit);
    c->lost += POP4[h0] - POP4[kept];
    return kept;
}

int hil_run_frame(const struct hil_frame_params *p, const uint64_t *seed,
                  const uint8_t *basis, const uint8_t *bit, const uint8_t *intensity,
                  const uint64_t *otab, const double *cum_quiet, int64_t n_classes,
                  const double *zig, int64_t *last_click,
                  const int64_t *ap_in, int64_t n_ap_in,
                  int64_t *heap, int64_t heap_cap,
                  int64_t *ev_slot, uint8_t *ev_det, uint8_t *ev_noise, int64_t *ev_time,
                  int64_t ev_cap, int64_t *n_ev, int64_t *tag_t, uint8_t *tag_ch, int64_t *tag_src,
                  int64_t *sl_slot, uint8_t *sl_mask, uint8_t *sl_code, int64_t *n_sl,
                  int64_t *ap_out, int64_t ap_cap, int64_t *n_ap_out, int64_t *counts)
{
    if (!p || !seed || !otab || !cum_quiet || !zig || !last_click || !heap || !ev_slot ||
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
    const int32_t n_e = p->n_e;
    int64_t cnt[HIL_N_COUNTERS] = {0};
    struct clicks c = {.cap = ev_cap, .ev_slot = ev_slot, .sl_slot = sl_slot, .ev_det = ev_det,
                       .ev_noise = ev_noise, .sl_mask = sl_mask, .sl_code = sl_code};
    int ap_any = 0;
    for (int d = 0; d < 4; d++) {
        c.last[d] = last_click[d] < -FAR ? -FAR : last_click[d];     /* NONE: long ago */
        c.dead[d] = p->dead_slots[d];
        ap_any |= p->ap_prob[d] > 0.0;
    }

    int64_t nh = 0;
    for (int64_t i = 0; i < n_ap_in; i++) {
        if (ap_in[i] < 0)
            return HIL_ERR_VALUE;
        heap_push(heap, &nh, ap_in[i]);
    }

    /* photon candidates: gaps from a packed alias table of Geometric(p_max) when p_max is large
     * enough for the table to cover most gaps, else by inversion (see GAP_BITS) */
    uint64_t gtab[1 << GAP_BITS];
    const int gap_tab = p->p_max >= 1.0 / 64 && p->p_max < 1.0;
    if (gap_tab) {
        double probs[1 << GAP_BITS], thr[1 << GAP_BITS], q = p->p_max, keep = 1.0;
        int32_t alias[1 << GAP_BITS], scratch[2 << GAP_BITS];
        uint16_t val[1 << GAP_BITS];
        for (int j = 0; j < GAP_TAIL; j++) {
            probs[j] = keep * q;            /* P(gap = j + 1) = (1 - p)^j p */
            val[j] = (uint16_t)(j + 1);
            keep *= 1.0 - q;
        }
        probs[GAP_TAIL] = keep;             /* P(gap > GAP_TAIL) = (1 - p)^GAP_TAIL */
        val[GAP_TAIL] = 0;
        st = hil_alias_build(probs, 1, 1 << GAP_BITS, thr, alias, scratch);
        if (st == HIL_OK)
            st = hil_alias_pack(thr, alias, val, 1, GAP_BITS, gtab);
        if (st != HIL_OK)
            return st;
    }
    struct patcheck pc = {.upto = 0, .n = n, .bad = 0};
    struct sigsrc q = {.pc = &pc, .pos = -1, .end = p->signal_end, .done = p->signal_end <= 0 || !(p->p_max > 0.0),
                       .gap_tab = gap_tab, .ir = inv_rate(p->p_max), .gtab = gtab, .otab = otab,
                       .obits = p->obits};
    sig_refill(&q, &r, p, basis, bit, intensity, &cnt[HIL_N_CANDIDATES]);
    if (pc.bad)
        return HIL_ERR_PATTERN;

    double ir_dark[4];
    int64_t dark_pos[4];
    for (int d = 0; d < 4; d++) {
        ir_dark[d] = inv_rate(p->p_dark[d]);
        dark_pos[d] = geo_next(&r, -1, ir_dark[d]);
    }

    int64_t next_noise = FAR;
    int noise_dirty = 1;
    for (;;) {
        if (noise_dirty) {                  /* earliest dark count or pending afterpulse */
            next_noise = nh > 0 ? heap[0] / 4 : FAR;
            for (int d = 0; d < 4; d++)
                if (dark_pos[d] < next_noise)
                    next_noise = dark_pos[d];
            noise_dirty = 0;
        }
        /* the short path: slots with photon clicks only, before the next noise hit */
        const int64_t lim = next_noise < n ? next_noise : n;
        while (q.i < q.n && q.slot[q.i] < lim) {
            const int64_t s = q.slot[q.i];
            const int v = q.val[q.i++];
            if (c.ne > ev_cap - 4 && c.ne + POP4[v & 15] > ev_cap)
                return HIL_ERR_CAPACITY;
            int kept = register_hits(&c, s, v & 15, v & 15);
            sl_slot[c.ns] = s;              /* written always, counted if any click registered */
            sl_mask[c.ns] = (uint8_t)kept;
            sl_code[c.ns] = (uint8_t)(v >> 4);
            c.ns += kept != 0;
            if (ap_any) {                   /* invariant: kept (often 0) is no branch without afterpulses */
                if (!kept || s >= p->blind_from)
                    continue;
                for (int d = 0; d < 4; d++)
                    if ((kept >> d & 1) && p->ap_prob[d] > 0.0 && unif(&r) < p->ap_prob[d]) {
                        double delay = p->ap_dead_ps[d] + (p->ap_tau_ps[d] > 0.0 ? p->ap_tau_ps[d] * expo(&r) : 0.0);
                        double ds = ceil(delay / p->period_ps);
                        int64_t step = ds < 1.0 ? 1 : (ds >= (double)(FAR / 8) ? FAR / 8 : (int64_t)ds);
                        if (nh >= heap_cap)
                            return HIL_ERR_CAPACITY;
                        heap_push(heap, &nh, (s + step) * 4 + d);
                        noise_dirty = 1;
                    }
                if (noise_dirty)
                    break;
            }
        }
        if (noise_dirty)
            continue;
        if (q.i == q.n && !q.done) {
            cnt[HIL_N_SIGNAL_SLOTS] += q.n;
            sig_refill(&q, &r, p, basis, bit, intensity, &cnt[HIL_N_CANDIDATES]);
            if (pc.bad)
                return HIL_ERR_PATTERN;
            continue;
        }
        /* the general step: a noise hit at slot s (with the photon click there, if any) */
        const int64_t sig_s = q.i < q.n ? q.slot[q.i] : FAR;
        const int64_t s = sig_s < next_noise ? sig_s : next_noise;
        if (s >= n)
            break;
        int smask = 0, code = 0, nmask = 0;
        noise_dirty = 1;                    /* s == next_noise here */
        if (sig_s == s) {
            smask = q.val[q.i] & 15;
            code = q.val[q.i] >> 4;
            q.i++;
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
        int hit = smask | nmask;
        if (!hit)
            continue;
        if (c.ne + POP4[hit] > ev_cap)
            return HIL_ERR_CAPACITY;
        int kept = register_hits(&c, s, hit, smask);
        for (int d = 0; d < 4; d++)
            if ((kept >> d & 1) && !blind && p->ap_prob[d] > 0.0 && unif(&r) < p->ap_prob[d]) {
                double delay = p->ap_dead_ps[d] + (p->ap_tau_ps[d] > 0.0 ? p->ap_tau_ps[d] * expo(&r) : 0.0);
                double ds = ceil(delay / p->period_ps);
                int64_t step = ds < 1.0 ? 1 : (ds >= (double)(FAR / 8) ? FAR / 8 : (int64_t)ds);
                if (nh >= heap_cap)
                    return HIL_ERR_CAPACITY;
                heap_push(heap, &nh, (s + step) * 4 + d);
            }
        if (kept) {
            if (!smask && n_e > 1) {
                if (!pattern_ok_to(&pc, basis, bit, intensity, s))
                    return HIL_ERR_PATTERN;
                const double *cq = cum_quiet + slot_class(p, basis, bit, intensity, s) * n_e;
                double u = unif(&r);
                int e = 0;
                while (e < n_e - 1 && u >= cq[e])
                    e++;
                code = e;
            }
            sl_slot[c.ns] = s;
            sl_mask[c.ns] = (uint8_t)kept;
            sl_code[c.ns] = (uint8_t)code;
            c.ns++;
        }
    }
    cnt[HIL_N_SIGNAL_SLOTS] += q.i;         /* photon-click slots consumed from the last batch */
    if (n > 0 && !pattern_ok_to(&pc, basis, bit, intensity, n - 1))      /* the slots no candidate read */
        return HIL_ERR_PATTERN;
    if (nh > ap_cap)
        return HIL_ERR_CAPACITY;
    const int64_t ne = c.ne;

    /* timestamps: a second pass with the jitter stream (the same arithmetic as the numpy path) */
    struct rng rj;
    memcpy(rj.s, seed, sizeof rj.s);
    jump(&rj);
    for (int64_t i = 0; i < ne; i++) {
        double z = normal(&rj, zig);
        double un = ev_noise[i] ? unif(&rj) : 0.0;
        int64_t t = stamp(p, ev_slot[i], ev_det[i], ev_noise[i], z, un);
        ev_time[i] = t;
        tag_t[i + 1] = t;
        tag_ch[i + 1] = (uint8_t)(ev_det[i] + 1);
        tag_src[i + 1] = i + 1;
    }
    for (int64_t i = 0; i < nh; i++)
        ap_out[i] = heap[i] - 4 * n;            /* relative to the next frame's start */
    *n_ap_out = nh;
    *n_ev = ne;
    tag_t[0] = p->sync_ps;
    tag_ch[0] = 0;
    tag_src[0] = 0;
    cnt[HIL_N_TAGS_SORTED] = sort_tags(tag_t, tag_ch, tag_src, ne + 1);
    cnt[HIL_N_DEAD_LOST] = c.lost;
    *n_sl = c.ns;
    for (int d = 0; d < 4; d++)
        last_click[d] = c.last[d] <= -FAR / 2 ? NONE : c.last[d] - n;   /* relative to the next frame's start */
    memcpy(counts, cnt, sizeof cnt);
    return HIL_OK;
}

int hil_pattern_check(const uint8_t *basis, const uint8_t *bit, const uint8_t *intensity, int64_t n,
                      int32_t *bad)
{
    if (n < 0)
        return HIL_ERR_LENGTH;
    if (!bad || (n > 0 && (!basis || !bit || !intensity)))
        return HIL_ERR_NULL;
    *bad = pattern_bad(basis, bit, intensity, 0, n);
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

int hil_alias_pack(const double *thr, const int32_t *alias, const uint16_t *values, int64_t n_rows,
                   int32_t bits, uint64_t *packed)
{
    if (n_rows < 0 || bits < 1 || bits > 16)
        return HIL_ERR_LENGTH;
    if (n_rows > 0 && (!thr || !alias || !values || !packed))
        return HIL_ERR_NULL;
    const int32_t k = 1 << bits;
    const double scale = (double)(UINT32_C(1) << (32 - bits));
    for (int64_t row = 0; row < n_rows; row++)
        for (int32_t i = 0; i < k; i++) {
            int64_t j = row * k + i;
            if (!(thr[j] >= 0.0 && thr[j] <= 1.0) || alias[j] < 0 || alias[j] >= k)
                return HIL_ERR_VALUE;
            uint64_t t = (uint64_t)llround(thr[j] * scale);   /* <= 2^31: fits the low word */
            packed[j] = t | (uint64_t)values[i] << 32 | (uint64_t)values[alias[j]] << 48;
        }
    return HIL_OK;
}

int hil_alias_draw(const uint64_t *packed, int32_t bits, int64_t n_rows, const int64_t *cls,
                   const uint32_t *x, int64_t n, uint16_t *out)
{
    if (n < 0 || bits < 1 || bits > 16 || n_rows < 0)
        return HIL_ERR_LENGTH;
    if (n > 0 && (!packed || !cls || !x || !out))
        return HIL_ERR_NULL;
    for (int64_t i = 0; i < n; i++) {
        if (cls[i] < 0 || cls[i] >= n_rows)
            return HIL_ERR_VALUE;
        out[i] = (uint16_t)adraw(packed + (cls[i] << bits), 32 - bits, x[i]);
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

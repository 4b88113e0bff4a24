/* Bob's slotting hot path (link/slotting.py is the numpy reference and the caller).
 *
 * The numpy path closes frames in a dozen whole-array passes plus two stable argsorts (the
 * dead-time guard's time order and each frame's slot order). Here it is one merge: the tags
 * arrive sorted by tagger time and each detector's offset is a constant, so each detector's
 * offset-corrected times are already sorted, as is the guard memory of the last call; a 5-way
 * merge of those streams (ties to the guard memory, then to the earlier tag: what a stable
 * argsort of the memory followed by the tags gives) yields the guard's time order. In that
 * order the frame and the slot of a tag never decrease (both are monotone in the corrected
 * time), so a slot's tags are consecutive and each event is finished when the next one starts:
 * no per-frame sort. Every float operation is the reference's, in its order, on the same
 * doubles ((tag - first sync) converted once, minus the offset; division, rint, the residual),
 * so the results are bit-identical; build flags give no FMA contraction (-std=c99 sets
 * -ffp-contract=off with gcc, and no -march). Where the inputs are not in the order this relies
 * on (a detector's tags going back, syncs or the memory decreasing) it refuses with
 * QPP_ERR_UNSORTED before writing anything the caller keeps, and the caller runs the numpy path.
 *
 * Signed differences and products the reference makes in int64 wrap modulo 2^64 there; here
 * they are made in uint64 (defined), then read back as int64.
 */
#include <math.h>
#include <stdlib.h>

#include "qpp_slot.h"

#define NSTREAM (QPP_SLOT_DETECTORS + 1)   /* the four detectors and the guard memory */

static double rel_ps(int64_t a, int64_t base)
{
    return (double)(int64_t)((uint64_t)a - (uint64_t)base);
}

struct group {
    int open;
    int64_t w;          /* frame (index into the open syncs) */
    uint64_t slot;
    uint8_t mask;
    int veto;
};

static void close_group(const struct group *g, uint64_t *ev_slots, uint8_t *ev_masks, size_t *ne,
                        uint64_t *frame_stats)
{
    uint64_t *fs = frame_stats + (size_t)g->w * QPP_SLOT_FRAME_STATS;
    if (g->veto) {
        fs[QPP_SLOT_F_VETOED]++;
    } else {
        ev_slots[*ne] = g->slot;
        ev_masks[*ne] = g->mask;
        (*ne)++;
        fs[QPP_SLOT_F_EVENTS]++;
    }
}

int qpp_slot_close(const int64_t *t, const uint8_t *ch, size_t n,
                   const int64_t *syncs, const int64_t *sync_index, size_t n_syncs,
                   size_t n_close, const double *offsets, double window_ps, double period_ps,
                   uint64_t frame_slots, double guard_ps,
                   const int64_t *tail_ps, const int64_t *tail_key, size_t n_tail,
                   uint64_t *ev_slots, uint8_t *ev_masks, uint64_t *frame_stats,
                   int64_t *pend_t, uint8_t *pend_ch,
                   int64_t *out_tail_ps, int64_t *out_tail_key,
                   uint64_t *counts, size_t *bad_index)
{
    if (!counts || !frame_stats || !syncs || !sync_index || !offsets)
        return QPP_ERR_NULL;
    if (n && (!t || !ch || !ev_slots || !ev_masks || !pend_t || !pend_ch))
        return QPP_ERR_NULL;
    if (n_tail && (!tail_ps || !tail_key))
        return QPP_ERR_NULL;
    if (n_syncs == 0 || n_close == 0 || n_close > n_syncs)
        return QPP_ERR_LENGTH;
    if (n_tail > SIZE_MAX / 2 - n || n > SIZE_MAX / 16 || n_syncs > SIZE_MAX / 16)
        return QPP_ERR_LENGTH;
    const int guard_on = guard_ps > 0;
    if (guard_on && n_tail + n && (!out_tail_ps || !out_tail_key))
        return QPP_ERR_NULL;
    if (!(period_ps > 0) || !isfinite(period_ps) || !(window_ps > 0) || !(window_ps <= period_ps)
        || !(guard_ps >= 0) || !isfinite(guard_ps) || frame_slots == 0
        || frame_slots >= ((uint64_t)1 << 62))
        return QPP_ERR_VALUE;
    for (int d = 0; d < QPP_SLOT_DETECTORS; d++)
        if (!isfinite(offsets[d]))
            return QPP_ERR_VALUE;

    /* detectors' tag counts; channels checked */
    size_t cnt[QPP_SLOT_DETECTORS] = {0, 0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        unsigned c = ch[i];
        if (c < 1 || c > QPP_SLOT_DETECTORS) {
            if (bad_index)
                *bad_index = i;
            return QPP_ERR_VALUE;
        }
        cnt[c - 1]++;
    }

    const int64_t base = syncs[0];
    const double hwin = window_ps / 2;
    const double fs_d = (double)frame_slots;
    size_t n_merge = guard_on ? n_tail + n : 0;
    /* one block: corrected times (n), per-detector tag lists (n), open syncs relative to the
     * first (n_syncs), the merged times for the guard memory (n_merge) */
    size_t bytes = (n + n_syncs + n_merge) * sizeof(double) + n * sizeof(size_t);
    void *block = malloc(bytes ? bytes : 1);
    if (!block)
        return QPP_ERR_NOMEM;
    double *tc = block;
    double *srel = tc + n;
    double *mu = srel + n_syncs;
    size_t *idx = (size_t *)(void *)(mu + n_merge);
    int st = QPP_OK;

    for (size_t j = 0; j < n_syncs; j++) {
        srel[j] = rel_ps(syncs[j], base);
        if (j && srel[j] < srel[j - 1]) {
            st = QPP_ERR_UNSORTED;
            goto done;
        }
    }
    size_t start[QPP_SLOT_DETECTORS], fill[QPP_SLOT_DETECTORS] = {0, 0, 0, 0};
    start[0] = 0;
    for (int d = 1; d < QPP_SLOT_DETECTORS; d++)
        start[d] = start[d - 1] + cnt[d - 1];
    for (size_t i = 0; i < n; i++) {
        int d = ch[i] - 1;
        double v = rel_ps(t[i], base) - offsets[d];
        if (fill[d] && v < tc[idx[start[d] + fill[d] - 1]]) {
            if (bad_index)
                *bad_index = i;
            st = QPP_ERR_UNSORTED;
            goto done;
        }
        tc[i] = v;
        idx[start[d] + fill[d]++] = i;
    }
    for (size_t k = 1; k < n_tail; k++)
        if (rel_ps(tail_ps[k], base) < rel_ps(tail_ps[k - 1], base)) {
            st = QPP_ERR_UNSORTED;
            goto done;
        }

    for (size_t i = 0; i < n_close * QPP_SLOT_FRAME_STATS; i++)
        frame_stats[i] = 0;

    /* streams 0..3: detectors; 4: the guard memory (only with the guard on) */
    int active[NSTREAM];
    double hv[NSTREAM];
    size_t hk[NSTREAM], pos[NSTREAM] = {0, 0, 0, 0, 0}, closing[QPP_SLOT_DETECTORS] = {0, 0, 0, 0};
    int64_t hw[QPP_SLOT_DETECTORS], wp[QPP_SLOT_DETECTORS];
    for (int d = 0; d < QPP_SLOT_DETECTORS; d++) {
        wp[d] = -1;
        active[d] = 1;
    }
    active[QPP_SLOT_DETECTORS] = guard_on && n_tail > 0;
    if (active[QPP_SLOT_DETECTORS]) {
        hv[QPP_SLOT_DETECTORS] = rel_ps(tail_ps[0], base);
        hk[QPP_SLOT_DETECTORS] = 0;
    }
#define LOAD_DETECTOR(d)                                                                       \
    do {                                                                                       \
        if (pos[d] == cnt[d]) {                                                                \
            active[d] = 0;                                                                     \
            closing[d] = cnt[d];                                                               \
            break;                                                                             \
        }                                                                                      \
        size_t i_ = idx[start[d] + pos[d]];                                                    \
        double x_ = tc[i_] + hwin;                                                             \
        while ((size_t)(wp[d] + 1) < n_syncs && srel[wp[d] + 1] <= x_)                        \
            wp[d]++;                                                                           \
        if (wp[d] >= (int64_t)n_close) {                                                       \
            active[d] = 0;                                                                     \
            closing[d] = pos[d];                                                               \
            break;                                                                             \
        }                                                                                      \
        hv[d] = tc[i_];                                                                        \
        hk[d] = n_tail + i_;                                                                   \
        hw[d] = wp[d];                                                                         \
    } while (0)
    for (int d = 0; d < QPP_SLOT_DETECTORS; d++)
        LOAD_DETECTOR(d);

    struct group g = {0, 0, 0, 0, 0};
    size_t ne = 0, m = 0;
    uint64_t early = 0;
    int have_prev = 0, prev_neg = 1, run_veto = 0;
    int64_t prev_key = -1;
    double prev_u = 0;
    for (;;) {
        int s = -1;
        for (int k = 0; k < NSTREAM; k++)
            if (active[k] && (s < 0 || hv[k] < hv[s] || (hv[k] == hv[s] && hk[k] < hk[s])))
                s = k;
        if (s < 0)
            break;
        double u = hv[s];
        int64_t key = -1;
        int ok = 0, is_tag = s < QPP_SLOT_DETECTORS;
        int64_t w = 0;
        uint64_t slot = 0;
        if (is_tag) {
            w = hw[s];
            if (w >= 0) {
                /* the reference's float steps, in its order */
                double rel = (u - srel[w]) / period_ps;
                double sl = rint(rel);
                double resid = (rel - sl) * period_ps;
                ok = fabs(resid) <= hwin && sl >= 0 && sl < fs_d;
                if (ok) {
                    slot = (uint64_t)sl;
                    key = (int64_t)((uint64_t)sync_index[w] * frame_slots + slot);
                }
            } else {
                early++;
            }
        } else {
            key = tail_key[pos[s]];
        }
        int veto = 0;
        if (guard_on) {
            int neg = key < 0;                          /* each tag outside a slot its own run */
            if (!have_prev || neg || prev_neg || key != prev_key)
                run_veto = have_prev && u - prev_u < guard_ps;
            veto = run_veto;
            have_prev = 1;
            prev_u = u;
            prev_key = key;
            prev_neg = neg;
            mu[m] = u;
            out_tail_key[m] = neg ? -1 : key;   /* scratch until the end: room n_tail + n */
            m++;
        }
        if (is_tag && w >= 0) {
            uint64_t *fsw = frame_stats + (size_t)w * QPP_SLOT_FRAME_STATS;
            if (ok) {
                fsw[QPP_SLOT_F_KEPT]++;
                uint8_t bit = (uint8_t)(1u << s);
                if (g.open && w == g.w && slot == g.slot) {
                    g.mask |= bit;
                    g.veto |= veto;
                } else if (!g.open || w > g.w || (w == g.w && slot > g.slot)) {
                    if (g.open)
                        close_group(&g, ev_slots, ev_masks, &ne, frame_stats);
                    g.open = 1;
                    g.w = w;
                    g.slot = slot;
                    g.mask = bit;
                    g.veto = veto;
                } else {                        /* a slot split in time order: cannot be here */
                    if (bad_index)
                        *bad_index = hk[s] - n_tail;
                    st = QPP_ERR_UNSORTED;
                    goto done;
                }
            } else {
                fsw[QPP_SLOT_F_DROPPED]++;
            }
        }
        /* advance the stream */
        pos[s]++;
        if (is_tag) {
            LOAD_DETECTOR(s);
        } else if (pos[s] == n_tail) {
            active[s] = 0;
        } else {
            hv[s] = rel_ps(tail_ps[pos[s]], base);
            hk[s] = pos[s];
        }
    }
#undef LOAD_DETECTOR
    if (g.open)
        close_group(&g, ev_slots, ev_masks, &ne, frame_stats);

    /* the guard memory: every merged time within one guard of the latest (a suffix) */
    size_t n_out_tail = 0;
    if (m) {
        double thr = mu[m - 1] - guard_ps;
        size_t j0 = m;
        while (j0 > 0 && mu[j0 - 1] >= thr)
            j0--;
        for (size_t j = j0; j < m; j++) {
            double v = rint(mu[j]);
            if (!(v >= -9223372036854775808.0 && v < 9223372036854775808.0)) {
                st = QPP_ERR_RANGE;
                goto done;
            }
            out_tail_ps[n_out_tail] = (int64_t)((uint64_t)base + (uint64_t)(int64_t)v);
            out_tail_key[n_out_tail] = out_tail_key[j];
            n_out_tail++;
        }
    }

    /* the tags of frames not closed, in input order: past each detector's closing prefix */
    size_t rank[QPP_SLOT_DETECTORS] = {0, 0, 0, 0}, np_ = 0;
    for (size_t i = 0; i < n; i++) {
        int d = ch[i] - 1;
        if (rank[d]++ >= closing[d]) {
            pend_t[np_] = t[i];
            pend_ch[np_] = ch[i];
            np_++;
        }
    }
    counts[QPP_SLOT_C_EARLY] = early;
    counts[QPP_SLOT_C_EVENTS] = ne;
    counts[QPP_SLOT_C_PENDING] = np_;
    counts[QPP_SLOT_C_TAIL] = n_out_tail;
done:
    free(block);
    return st;
}

int qpp_slot_gaps(const int64_t *t, const uint8_t *ch, size_t n, double limit_ps,
                  int64_t *last, uint8_t *has_last,
                  uint64_t *gaps, uint64_t *short_gaps, uint64_t *gap_sum)
{
    if (!last || !has_last || !gaps || !short_gaps || !gap_sum || (n && (!t || !ch)))
        return QPP_ERR_NULL;
    if (isnan(limit_ps))
        return QPP_ERR_VALUE;
    for (int d = 0; d < QPP_SLOT_DETECTORS; d++) {
        if (has_last[d] > 1)
            return QPP_ERR_VALUE;
        gaps[d] = short_gaps[d] = gap_sum[d] = 0;
    }
    int64_t lt[QPP_SLOT_DETECTORS];
    int has[QPP_SLOT_DETECTORS];
    uint64_t ng[QPP_SLOT_DETECTORS] = {0, 0, 0, 0}, ns[QPP_SLOT_DETECTORS] = {0, 0, 0, 0};
    uint64_t sum[QPP_SLOT_DETECTORS] = {0, 0, 0, 0};
    for (int d = 0; d < QPP_SLOT_DETECTORS; d++) {
        lt[d] = last[d];
        has[d] = has_last[d];
    }
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)ch[i] - 1u;
        if (d >= QPP_SLOT_DETECTORS)
            continue;
        if (has[d]) {
            uint64_t g = (uint64_t)t[i] - (uint64_t)lt[d];
            ng[d]++;
            ns[d] += (double)(int64_t)g < limit_ps;
            sum[d] += g;
        }
        lt[d] = t[i];
        has[d] = 1;
    }
    for (int d = 0; d < QPP_SLOT_DETECTORS; d++) {
        last[d] = lt[d];
        has_last[d] = (uint8_t)has[d];
        gaps[d] = ng[d];
        short_gaps[d] = ns[d];
        gap_sum[d] = sum[d];
    }
    return QPP_OK;
}

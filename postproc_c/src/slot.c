/* Bob's slotting hot path (link/slotting.py is the numpy reference and the caller).
 *
 * The numpy path closes frames in a dozen whole-array passes plus two stable argsorts (the
 * dead-time guard's time order and each frame's slot order). Here it is two passes. The first
 * puts the guard memory of the last call and the closing tags in time order of their
 * offset-corrected times with a stable insertion sort: the tags arrive in tagger order and only
 * the detectors' offset differences (constants, a few ns at most) reorder them, so an insertion
 * moves past a handful of entries, and a stable sort yields exactly the permutation of the
 * reference's stable argsort. The second walks that order: the frame (a pointer over the syncs)
 * and the slot never decrease along it, so a slot's tags are consecutive and each event is
 * finished when the next starts (no per-frame sort: a slot with a tag in its window is an
 * event with all of its tags, others are dropped), and the guard's runs are read off as in
 * the reference. Every float operation is the reference's, in its order, on the same doubles
 * ((tag - first sync) converted once, minus the offset; division, rint, the residual; the
 * slot's nominal time the guard is timed from, sync + slot * period), so the
 * results are bit-identical; the build gives no FMA contraction (-std=c99 sets
 * -ffp-contract=off with gcc, and no -march). Input it cannot do in bounded time (syncs going
 * back, or so many tags out of order that the insertions exceed 64 moves a tag) is refused with
 * QPP_ERR_UNSORTED and the caller runs the numpy path.
 *
 * Signed differences and products the reference makes in int64 wrap modulo 2^64 there; here
 * they are made in uint64 (defined), then read back as int64.
 */
#include <math.h>
#include <stdlib.h>

#include "qpp_slot.h"

/* one entry of the time order: a closing tag (ref = its index) or guard memory (ref = -1 - k) */
struct ent {
    double u;           /* offset-corrected time relative to the first open sync (ps) */
    int64_t ref;
};

static double rel_ps(int64_t a, int64_t base)
{
    return (double)(int64_t)((uint64_t)a - (uint64_t)base);
}

/* Stable insertion of (v, ref) into the sorted buf[0..*m): after every entry with an equal
 * key, as a stable sort places it. Returns how many entries it moved past. */
static size_t insert_sorted(struct ent *buf, size_t *m, double v, int64_t ref)
{
    size_t j = *m;
    while (j > 0 && buf[j - 1].u > v) {
        buf[j] = buf[j - 1];
        j--;
    }
    buf[j].u = v;
    buf[j].ref = ref;
    (*m)++;
    return *m - 1 - j;
}

struct group {
    int open;
    int64_t w;          /* frame (index into the open syncs) */
    uint64_t slot;
    uint8_t mask;
    int veto;
    int win;            /* a tag of the slot lies in its window: the slot is an event */
    uint64_t tags;
};

static void close_group(const struct group *g, uint64_t *ev_slots, uint8_t *ev_masks, size_t *ne,
                        uint64_t *frame_stats)
{
    uint64_t *fs = frame_stats + (size_t)g->w * QPP_SLOT_FRAME_STATS;
    if (!g->win) {
        fs[QPP_SLOT_F_DROPPED] += g->tags;
        return;
    }
    fs[QPP_SLOT_F_KEPT] += g->tags;
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
    if (n > SIZE_MAX / 128 || n_tail > SIZE_MAX / 128 - n || n_syncs > SIZE_MAX / 16)
        return QPP_ERR_LENGTH;
    const int guard_on = guard_ps > 0;
    if (guard_on && n_tail + n && (!out_tail_ps || !out_tail_key))
        return QPP_ERR_NULL;
    if (!(period_ps > 0) || !isfinite(period_ps) || !(window_ps > 0) || !isfinite(window_ps)
        || !(guard_ps >= 0) || !isfinite(guard_ps) || frame_slots == 0
        || frame_slots >= ((uint64_t)1 << 62))
        return QPP_ERR_VALUE;
    for (int d = 0; d < QPP_SLOT_DETECTORS; d++)
        if (!isfinite(offsets[d]))
            return QPP_ERR_VALUE;

    const int64_t base = syncs[0];
    const double hwin = window_ps / 2;
    const double hper = period_ps / 2;
    const double fs_d = (double)frame_slots;
    const size_t n_tail_in = guard_on ? n_tail : 0;
    /* one block: the open syncs relative to the first, then the guard memory and the closing
     * tags sorted by offset-corrected time */
    size_t bytes = n_syncs * sizeof(double) + (n_tail_in + n) * sizeof(struct ent);
    void *block = malloc(bytes ? bytes : 1);
    if (!block)
        return QPP_ERR_NOMEM;
    double *srel = block;
    struct ent *buf = (struct ent *)(void *)(srel + n_syncs);
    int st = QPP_OK;

    for (size_t j = 0; j < n_syncs; j++) {
        srel[j] = rel_ps(syncs[j], base);
        if (j && srel[j] < srel[j - 1]) {          /* searchsorted over unsorted syncs */
            st = QPP_ERR_UNSORTED;
            goto done;
        }
    }
    /* A tag closes iff fewer than n_close + 1 syncs lie at or before its time + half a period:
     * its frame (the reference's searchsorted(..., side="right") - 1) is then < n_close. */
    const int close_all = n_close == n_syncs;
    const double close_edge = close_all ? 0 : srel[n_close];

    /* Stable insertion sort of the guard memory followed by the closing tags, by corrected time:
     * the permutation of the reference's stable argsort. The tags come in tagger order and only
     * the detectors' offset differences reorder them, so each insertion moves past a few
     * entries at most; a budget bounds pathological input (then QPP_ERR_UNSORTED). */
    size_t m = 0, moves = 0;
    const size_t budget = 64 * (n_tail_in + n) + 4096;
    for (size_t k = 0; k < n_tail_in; k++) {
        moves += insert_sorted(buf, &m, rel_ps(tail_ps[k], base), -1 - (int64_t)k);
    }
    size_t np_ = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned c = ch[i];
        if (c < 1 || c > QPP_SLOT_DETECTORS) {
            if (bad_index)
                *bad_index = i;
            st = QPP_ERR_VALUE;
            goto done;
        }
        /* the reference's tc: (tag - first sync) as int64, to double, minus the offset */
        double v = rel_ps(t[i], base) - offsets[c - 1];
        if (!close_all && close_edge <= v + hper) {
            pend_t[np_] = t[i];                    /* a later frame: stays pending, in order */
            pend_ch[np_] = ch[i];
            np_++;
            continue;
        }
        moves += insert_sorted(buf, &m, v, (int64_t)i);
        if (moves > budget) {
            if (bad_index)
                *bad_index = i;
            st = QPP_ERR_UNSORTED;
            goto done;
        }
    }

    for (size_t i = 0; i < n_close * QPP_SLOT_FRAME_STATS; i++)
        frame_stats[i] = 0;

    /* In time order: frame (moving pointer: the frame never decreases), slot, window, the
     * guard's runs, events. */
    struct group g = {0, 0, 0, 0, 0, 0, 0};
    size_t ne = 0;
    uint64_t early = 0;
    int64_t wp = -1;
    int prev_neg = 1, run_veto = 0;
    int64_t prev_key = -1;
    for (size_t e = 0; e < m; e++) {
        const double u = buf[e].u;
        const int64_t ref = buf[e].ref;
        int64_t key = -1, w = -1;
        int ok = 0, win = 0;
        uint64_t slot = 0;
        double nominal = 0;
        if (ref >= 0) {
            const double x = u + hper;
            while ((size_t)(wp + 1) < n_syncs && srel[wp + 1] <= x)
                wp++;
            w = wp;
            if (w >= (int64_t)n_close) {            /* the closing test says it cannot be */
                st = QPP_ERR_INTERNAL;
                goto done;
            }
            if (w >= 0) {
                /* the reference's float steps, in its order (rint: round half to even) */
                double rel = (u - srel[w]) / period_ps;
                double sl = rint(rel);
                double resid = (rel - sl) * period_ps;
                ok = sl >= 0 && sl < fs_d;
                if (ok) {
                    win = fabs(resid) <= hwin;
                    slot = (uint64_t)sl;
                    key = (int64_t)((uint64_t)sync_index[w] * frame_slots + slot);
                    nominal = srel[w] + sl * period_ps;
                }
            } else {
                early++;
            }
        } else {
            key = tail_key[-1 - ref];
        }
        int veto = 0;
        if (guard_on) {
            int neg = key < 0;                      /* a tag outside every slot: its own run */
            /* a slot's run is timed from its nominal time, not from its own tags */
            if (e == 0 || neg || prev_neg || key != prev_key)
                run_veto = e > 0 && !neg && nominal - buf[e - 1].u < guard_ps;
            veto = run_veto;
            prev_key = key;
            prev_neg = neg;
            out_tail_key[e] = neg ? -1 : key;       /* scratch until the end: room n_tail + n */
        }
        if (w < 0)
            continue;
        uint64_t *fsw = frame_stats + (size_t)w * QPP_SLOT_FRAME_STATS;
        if (!ok) {
            fsw[QPP_SLOT_F_DROPPED]++;           /* outside every slot of the frame */
            continue;
        }
        uint8_t bit = (uint8_t)(1u << (ch[ref] - 1));
        if (g.open && w == g.w && slot == g.slot) {
            g.mask |= bit;
            g.veto |= veto;
            g.win |= win;
            g.tags++;
        } else if (!g.open || w > g.w || (w == g.w && slot > g.slot)) {
            if (g.open)
                close_group(&g, ev_slots, ev_masks, &ne, frame_stats);
            g.open = 1;
            g.w = w;
            g.slot = slot;
            g.mask = bit;
            g.veto = veto;
            g.win = win;
            g.tags = 1;
        } else {                                    /* a slot split in time order: cannot be */
            if (bad_index)
                *bad_index = (size_t)ref;
            st = QPP_ERR_INTERNAL;
            goto done;
        }
    }
    if (g.open)
        close_group(&g, ev_slots, ev_masks, &ne, frame_stats);

    /* the guard memory: every entry within one guard of the latest (a suffix of the order) */
    size_t n_out_tail = 0;
    if (guard_on && m) {
        double thr = buf[m - 1].u - guard_ps - period_ps;
        size_t j0 = m;
        while (j0 > 0 && buf[j0 - 1].u >= thr)
            j0--;
        for (size_t j = j0; j < m; j++) {
            double v = rint(buf[j].u);
            if (!(v >= -9223372036854775808.0 && v < 9223372036854775808.0)) {
                st = QPP_ERR_RANGE;
                goto done;
            }
            out_tail_ps[n_out_tail] = (int64_t)((uint64_t)base + (uint64_t)(int64_t)v);
            out_tail_key[n_out_tail] = out_tail_key[j];     /* n_out_tail <= j */
            n_out_tail++;
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

int qpp_slot_gap_bands(const int64_t *t, const uint8_t *ch, size_t n,
                       const double *edges_ps, size_t n_edges,
                       int64_t *last, uint8_t *has_last,
                       uint64_t *gaps, uint64_t *below, uint64_t *gap_sum)
{
    if (!edges_ps || !last || !has_last || !gaps || !below || !gap_sum || (n && (!t || !ch)))
        return QPP_ERR_NULL;
    if (n_edges == 0 || n_edges > QPP_SLOT_MAX_EDGES)
        return QPP_ERR_LENGTH;
    double edge[QPP_SLOT_MAX_EDGES];
    for (size_t e = 0; e < n_edges; e++) {
        if (isnan(edges_ps[e]) || (e && edges_ps[e] < edges_ps[e - 1]))
            return QPP_ERR_VALUE;
        edge[e] = edges_ps[e];
    }
    for (int d = 0; d < QPP_SLOT_DETECTORS; d++)
        if (has_last[d] > 1)
            return QPP_ERR_VALUE;
    int64_t lt[QPP_SLOT_DETECTORS];
    int has[QPP_SLOT_DETECTORS];
    uint64_t ng[QPP_SLOT_DETECTORS] = {0, 0, 0, 0}, sum[QPP_SLOT_DETECTORS] = {0, 0, 0, 0};
    uint64_t nb[QPP_SLOT_MAX_EDGES][QPP_SLOT_DETECTORS] = {{0}};
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
            double gd = (double)(int64_t)g;
            ng[d]++;
            sum[d] += g;
            /* branch-free compares (the slotter's hot path); the two edge counts it uses unrolled */
            if (n_edges == 4) {
                nb[0][d] += gd < edge[0];
                nb[1][d] += gd < edge[1];
                nb[2][d] += gd < edge[2];
                nb[3][d] += gd < edge[3];
            } else if (n_edges == 1) {
                nb[0][d] += gd < edge[0];
            } else {
                for (size_t e = 0; e < n_edges; e++)
                    nb[e][d] += gd < edge[e];
            }
        }
        lt[d] = t[i];
        has[d] = 1;
    }
    for (int d = 0; d < QPP_SLOT_DETECTORS; d++) {
        last[d] = lt[d];
        has_last[d] = (uint8_t)has[d];
        gaps[d] = ng[d];
        gap_sum[d] = sum[d];
        for (size_t e = 0; e < n_edges; e++)
            below[(size_t)QPP_SLOT_DETECTORS * e + (size_t)d] = nb[e][d];
    }
    return QPP_OK;
}

int qpp_slot_gaps(const int64_t *t, const uint8_t *ch, size_t n, double limit_ps,
                  int64_t *last, uint8_t *has_last,
                  uint64_t *gaps, uint64_t *short_gaps, uint64_t *gap_sum)
{
    if (!last || !has_last || !gaps || !short_gaps || !gap_sum || (n && (!t || !ch)))
        return QPP_ERR_NULL;
    return qpp_slot_gap_bands(t, ch, n, &limit_ps, 1, last, has_last, gaps, short_gaps, gap_sum);
}

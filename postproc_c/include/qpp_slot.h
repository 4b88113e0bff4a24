/* Bob's slotting hot path: closing frames of time-tagger tags into (slot, click mask) events
 * with the dead-time guard, and the per-detector gap counts of the guard's self-check.
 * See src/slot.c; link/slotting.py is the numpy reference and the caller.
 * Also cdef text for cffi (see qpp_common.h).
 */
#ifndef QPP_SLOT_H
#define QPP_SLOT_H

#include "qpp_common.h"

enum qpp_slot_const {
    QPP_SLOT_DETECTORS = 4,          /* channels 1..4 = detectors H, V, D, A */
    QPP_SLOT_FRAME_STATS = 4,        /* per closing frame: the four qpp_slot_frame_stat entries */
    QPP_SLOT_MAX_EDGES = 8           /* gap-band edges qpp_slot_gap_bands takes at most */
};

/* frame_stats[QPP_SLOT_FRAME_STATS * i + j]: frame i's */
enum qpp_slot_frame_stat {
    QPP_SLOT_F_EVENTS = 0,           /* events written to ev_slots/ev_masks (not vetoed) */
    QPP_SLOT_F_KEPT = 1,             /* tags of the frame's events (a slot with a tag in its window) */
    QPP_SLOT_F_DROPPED = 2,          /* tags assigned to the frame but in no event */
    QPP_SLOT_F_VETOED = 3            /* events dropped whole by the dead-time guard */
};

/* counts[] of qpp_slot_close */
enum qpp_slot_count {
    QPP_SLOT_C_EARLY = 0,            /* closing tags before the first open sync */
    QPP_SLOT_C_EVENTS = 1,           /* events written in all (sum of QPP_SLOT_F_EVENTS) */
    QPP_SLOT_C_PENDING = 2,          /* tags of frames not closed, written to pend_t/pend_ch */
    QPP_SLOT_C_TAIL = 3,             /* guard memory entries written to out_tail_ps/out_tail_key */
    QPP_SLOT_NCOUNTS = 4
};

/* Close the oldest n_close of the n_syncs open frames (sync tags syncs[], tagger ps, their frame
 * indices sync_index[]) over the n pending detector tags t[] (tagger ps, in time order) on
 * channels ch[] (1..4), exactly as link.slotting.Slotter._emit with _veto and _frame do in numpy:
 * offset-corrected times relative to syncs[0], frame by search over the syncs (offset + half a
 * period), slot on period_ps; a slot with a tag within window_ps / 2 of its centre is an event
 * with all of the slot's tags; then, when guard_ps > 0 (dead time + window), an event is vetoed
 * if the tag before its slot's first tag, in time order over the guard memory tail_ps/tail_key
 * (n_tail entries from the last call) and the closing tags, is of another slot or of none and
 * less than guard_ps before the slot's nominal time, sync + slot * period_ps (guard_ps 0: no
 * guard; the memory is then neither read nor written).
 * Outputs (room for n events / n tags / n_tail + n tail entries; frame_stats for n_close
 * frames): the events of the closing frames in frame then slot order, the tags still pending in
 * their input order, the new guard memory, counts[QPP_SLOT_NCOUNTS].
 * QPP_ERR_VALUE: a channel not 1..4 (*bad_index = tag), or a parameter out of its domain
 * (non-finite offset, period_ps or window_ps not finite and > 0, guard_ps not finite and >= 0,
 * frame_slots 0 or >= 2^62); QPP_ERR_LENGTH: n_syncs 0 or n_close not in 1..n_syncs.
 * QPP_ERR_UNSORTED: input this pass does not do in bounded time (syncs going back, or the
 * tags so far out of time order that sorting them would exceed 64 moves a tag: *bad_index = the
 * tag); QPP_ERR_RANGE: a time too far from syncs[0] for the guard memory. For these two
 * the numpy path gives the defined result; nothing is written that the caller must undo. */
QPP_WUR int qpp_slot_close(const int64_t *t, const uint8_t *ch, size_t n,
                           const int64_t *syncs, const int64_t *sync_index, size_t n_syncs,
                           size_t n_close, const double *offsets, double window_ps, double period_ps,
                           uint64_t frame_slots, double guard_ps,
                           const int64_t *tail_ps, const int64_t *tail_key, size_t n_tail,
                           uint64_t *ev_slots, uint8_t *ev_masks, uint64_t *frame_stats,
                           int64_t *pend_t, uint8_t *pend_ch,
                           int64_t *out_tail_ps, int64_t *out_tail_key,
                           uint64_t *counts, size_t *bad_index);

/* The dead-time self-check's gap counts over one batch of tags (any channels; 1..4 are detectors
 * 0..3): per detector, the gaps between its consecutive tags (the first against last[d] when
 * has_last[d] is 1), how many are below limit_ps (compared as doubles), and their sum modulo
 * 2^64 (the numpy reference's int64 sum). last/has_last are updated to each detector's newest
 * tag; gaps/short_gaps/gap_sum (QPP_SLOT_DETECTORS each) are set, not added to.
 * QPP_ERR_VALUE: has_last[d] not 0/1, or limit_ps NaN. */
QPP_WUR int qpp_slot_gaps(const int64_t *t, const uint8_t *ch, size_t n, double limit_ps,
                          int64_t *last, uint8_t *has_last,
                          uint64_t *gaps, uint64_t *short_gaps, uint64_t *gap_sum);

/* qpp_slot_gaps with several limits: below[QPP_SLOT_DETECTORS * e + d] is how many of detector
 * d's gaps are below edges_ps[e] (compared as doubles), for the n_edges (1..QPP_SLOT_MAX_EDGES)
 * nondecreasing edges; qpp_slot_gaps is this with one edge. The dead-time self-check reads
 * edge 0 (the guard's limit), the afterpulse self-check the bands between the others
 * (link.slotting). QPP_ERR_VALUE: an edge NaN or out of order, has_last[d] not 0/1;
 * QPP_ERR_LENGTH: n_edges 0 or above QPP_SLOT_MAX_EDGES. */
QPP_WUR int qpp_slot_gap_bands(const int64_t *t, const uint8_t *ch, size_t n,
                               const double *edges_ps, size_t n_edges,
                               int64_t *last, uint8_t *has_last,
                               uint64_t *gaps, uint64_t *below, uint64_t *gap_sum);

#endif

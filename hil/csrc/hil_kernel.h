/* The HIL link model's per-frame hot path in C: sparse click sampling, dark counts,
 * dead time, afterpulsing (every generation) and tagger timestamps, in one pass.
 *
 * This header is also cdef text for cffi (hil/build_ffi.py drops preprocessor
 * lines and comments), so it holds plain declarations and enums only.
 * Functions return HIL_OK (0) or a negative enum hil_status; they never abort,
 * print or call Python, keep no global state and are reentrant.
 */
#ifndef HIL_KERNEL_H
#define HIL_KERNEL_H

#include <stddef.h>
#include <stdint.h>

enum hil_status {
    HIL_OK = 0,
    HIL_ERR_NULL = -1,        /* a required pointer is NULL */
    HIL_ERR_LENGTH = -2,      /* a length or size is negative or inconsistent */
    HIL_ERR_VALUE = -3,       /* a parameter is outside its domain */
    HIL_ERR_CAPACITY = -4,    /* an output buffer is too small: call again with more room */
    HIL_ERR_PATTERN = -5      /* a pattern value is out of range (basis or bit > 1, intensity > 2) */
};

enum hil_counter {
    HIL_N_CANDIDATES = 0,     /* candidate slots drawn for thinning */
    HIL_N_SIGNAL_SLOTS = 1,   /* slots with a photon-induced click (before dead time) */
    HIL_N_NOISE_RAW = 2,      /* dark-count and pending-afterpulse hits (before dead time) */
    HIL_N_AFTERPULSES = 3,    /* afterpulse hits that fell in this frame (before dead time) */
    HIL_N_DEAD_LOST = 4,      /* detector hits lost to dead time */
    HIL_N_TAGS_SORTED = 5,    /* 1: tag_t came out sorted; 0: nearly (the caller sorts) */
    HIL_N_COUNTERS = 8
};

/* Everything the frame kernel needs besides arrays. Slots are relative to the
 * frame start; times are picoseconds. */
struct hil_frame_params {
    int64_t n_slots;          /* slots in the frame */
    int64_t signal_end;       /* photon clicks only at slots < signal_end (fiber cut) */
    int32_t nseg;             /* drift segments: class += (slot * nseg / n_slots) * 12 */
    int64_t switch_slot;      /* an attack switches on here: class += switch_offset from this slot */
    int64_t switch_offset;
    int64_t blind_from;       /* blinded from this slot on: no dark counts, no afterpulses */
    int32_t n_e;              /* Eve outcome codes per class (1: no eavesdropper) */
    int32_t obits;            /* rows of the packed outcome table hold 2^obits buckets (1..16) */
    double p_max;             /* candidate probability per slot (thinning) */
    double p_dark[4];         /* dark-count probability per slot and detector */
    int64_t dead_slots[4];    /* dead time in slots (<= 1: none) */
    double ap_prob[4];        /* afterpulse probability per registered click */
    double ap_dead_ps[4];     /* afterpulse delay = ap_dead_ps + Exp(ap_tau_ps) */
    double ap_tau_ps[4];
    double period_ps;         /* slot period */
    double sig_ps[8];         /* timing jitter sigma: [d] photon clicks, [4 + d] noise clicks */
    double delay_ps[4];       /* time of flight + detector delay */
    double rate;              /* tagger clock rate 1 + ppm 1e-6 */
    double frac_shift_ps;     /* fractional part of the tagger's offset at the frame start */
    int64_t base_ps;          /* frame start + integer part of that offset */
    int64_t resolution_ps;    /* > 1: timestamps floored to multiples */
    int64_t sync_ps;          /* the frame's sync tag (channel 0), first of the tag list */
};

/* One frame. Inputs: Alice's pattern (n_slots bytes each), the candidate outcome
 * tables of hil.eve.OutcomeTables as packed alias tables (otab: n_classes rows of 2^obits
 * entries from hil_alias_pack; values mask | code << 4 with the click mask in the low 4 bits and
 * Eve's code above, 0 = no click), cum_quiet (classes x n_e), zig (ziggurat tables,
 * hil.kernel.ZIGGURAT), seed (four 64-bit words, not all zero), last_click[4] (slot of each
 * detector's last registered click, INT64_MIN for none; updated on success) and the pending
 * afterpulses ap_in (keys slot * 4 + detector, any order).
 * Outputs (n_ev clicks sorted by slot then detector): ev_slot, ev_det, ev_noise
 * (0 photon click, 1 dark count or afterpulse), ev_time (tagger ps); per slot
 * (n_sl): sl_slot, sl_mask, sl_code (Eve's code, 0 without an eavesdropper); the tags
 * (n_ev + 1 of them): tag_t, tag_ch (0 sync, d + 1 detector d) and
 * tag_src (0 the sync tag, k + 1 click k), sorted by time (stable) unless the clicks are
 * too far out of time order for an insertion sort (counts[HIL_N_TAGS_SORTED] = 0);
 * ap_out (n_ap_out keys of afterpulses at or after n_slots); counts[HIL_N_COUNTERS].
 * Every per-click and per-slot output array has room for ev_cap + 1 entries.
 * heap is scratch of heap_cap int64 (heap_cap >= n_ap_in + ev_cap suffices).
 * The pattern is validated as it is read (hil_pattern_check's rule): HIL_ERR_PATTERN if not.
 * HIL_ERR_CAPACITY when ev_cap, or heap_cap/ap_cap, is too small; nothing the
 * caller owns (last_click) is changed then, so the call can be repeated. */
int hil_run_frame(const struct hil_frame_params *p, const uint64_t *seed,
                  const uint8_t *basis, const uint8_t *bit, const uint8_t *intensity,
                  const uint64_t *otab, const double *cum_quiet, int64_t n_classes,
                  const double *zig, int64_t *last_click,
                  const int64_t *ap_in, int64_t n_ap_in,
                  int64_t *heap, int64_t heap_cap,
                  int64_t *ev_slot, uint8_t *ev_det, uint8_t *ev_noise, int64_t *ev_time,
                  int64_t ev_cap, int64_t *n_ev, int64_t *tag_t, uint8_t *tag_ch, int64_t *tag_src,
                  int64_t *sl_slot, uint8_t *sl_mask, uint8_t *sl_code, int64_t *n_sl,
                  int64_t *ap_out, int64_t ap_cap, int64_t *n_ap_out, int64_t *counts);

/* Validate Alice's pattern in one pass: *bad gets bit 0 if some basis is > 1, bit 1 if some bit
 * is > 1, bit 2 if some intensity is > 2 (0: valid). */
int hil_pattern_check(const uint8_t *basis, const uint8_t *bit, const uint8_t *intensity, int64_t n,
                      int32_t *bad);

/* The pieces of hil_run_frame on given inputs, for exact tests against numpy. */


/* Alias tables (Walker, ACM TOMS 3, 1977; Vose's construction, IEEE TSE 17, 1991) for
 * n_rows distributions of k outcomes (probs, rows need not be normalized; a row of
 * zeros gives outcome k - 1). scratch: 2 k int32. */
int hil_alias_build(const double *probs, int64_t n_rows, int32_t k, double *thr, int32_t *alias,
                    int32_t *scratch);

/* Packed alias tables for the kernel: rows of 2^bits buckets (thr, alias from hil_alias_build
 * over 2^bits outcomes, 1 <= bits <= 16), each bucket one word: its threshold scaled to
 * 2^(32 - bits) in bits 0..31, values[i] of its own outcome in bits 32..47, values[alias] in
 * bits 48..63. A draw takes one 32-bit random word x: bucket x >> (32 - bits), own outcome when
 * the low 32 - bits bits are below the threshold (probabilities resolved to 2^-32). */
int hil_alias_pack(const double *thr, const int32_t *alias, const uint16_t *values, int64_t n_rows,
                   int32_t bits, uint64_t *packed);

/* Packed alias draws: out[i] = value drawn from row cls[i] with the random word x[i]. */
int hil_alias_draw(const uint64_t *packed, int32_t bits, int64_t n_rows, const int64_t *cls,
                   const uint32_t *x, int64_t n, uint16_t *out);

/* Dead-time keep flags for clicks sorted by slot (any detector order within a slot):
 * a click is kept when its detector's last kept click is at least dead_slots[d]
 * earlier (last_click[d], INT64_MIN for none, is updated). */
int hil_dead_time(const int64_t *slot, const uint8_t *det, int64_t n, const int64_t *dead_slots,
                  int64_t *last_click, uint8_t *keep);

/* Tagger timestamps from given N(0, 1) jitter draws z and noise uniforms (as hil_run_frame). */
int hil_timestamps(const struct hil_frame_params *p, const int64_t *slot, const uint8_t *det,
                   const uint8_t *noise, const double *z, const double *unoise, int64_t n, int64_t *out);

/* n draws of N(0, 1) by the kernel's ziggurat (zig as in hil_run_frame), for statistical tests. */
int hil_normals(const uint64_t *seed, const double *zig, int64_t n, double *out);

#endif

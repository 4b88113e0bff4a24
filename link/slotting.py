"""Bob's slotting: time-tagger tags -> per-frame (slot, click mask) detections.

The tagger reports picosecond timestamps on its own clock: one sync tag
(channel 0) at the start of each of Alice's frames and detector tags on
channels 1..4 (H, V, D, A). A detection of slot ``s`` of frame ``f`` on detector
``d`` arrives at about ``sync_f + offset_d + s * period``, where ``offset_d``
(time of flight plus the detector's delay, less the sync path's delay) comes
from timing calibration and ``period`` is Alice's slot period as the tagger's
clock sees it. Clock drift between the two ends is tracked by measuring the
period from consecutive sync tags (their spacing is exactly ``frame_slots``
slots of Alice's clock), so a ppm-level drift never accumulates across a
frame. Each tag belongs to the slot whose period it falls in; a slot with a
tag within ``window_ps`` of its centre is an event, with all of the slot's tags
(several detectors clicking in one slot give one event with several bits set in
its mask; sifting decides what that means). The tags of other slots (dark counts
between windows, after-pulses, stray light) are counted and dropped. The rule is
per event, not per tag, so that an event with more clicks is never less likely
kept than one with fewer: kept per tag, a two-photon pulse Eve times at the
window's edge would survive as a cross click (both tags in) with probability w^2
against w for a single click, making Bob's cross clicks rarer than the passive
receiver's multi-photon bound takes them to be (link.finite_key; audit
2026-11-25). A tag outside the window only joins an event that is there anyway.

Frames are numbered from the first sync tag seen (frame 0); a gap of k frame
durations between syncs means k - 1 syncs were lost, and the numbering skips
accordingly so Bob stays aligned with Alice's frame index.

Two implementations, giving bit-identical frames, stats and state (tests/test_slotting_fast.py
compares them per push on model and adversarial streams). By default the hot part, closing
frames (``_emit`` from the frame assignment on, ``_veto``, ``_frame``) and the gap counts, runs in
C (``postproc_c.slotting``, src/slot.c: an insertion sort of the nearly time-ordered tags by
offset-corrected time, then one walk in that order doing the same float steps), because numpy
(two stable argsorts, a sort per frame, a dozen passes) reached ~13 M tags/s against the ~39 M
tags/s of the link at metro-25km. ``reference=True`` runs the numpy path below only; the C path
also hands a call to it when the tags are too far out of time order for its bounded sort, or the
syncs go back (``fast_fallbacks`` counts those). In numpy: ``searchsorted`` assigns tags to
frames, one division gives slots. Times stay int64 picoseconds until they are made
relative to the oldest open sync; only those differences (a few frames long) become
float64. Converted whole, the tagger's absolute times lost whole picoseconds after
2^53 ps (2.5 hours of tagger clock) and 64 ps after a week, which moved tags across the
edges of the detection window on a link that runs for days.

Dead-time guard (``dead_time_ps`` > 0; every node sets it). A detector that has
just clicked is blind for its dead time, and Eve can know when: she can make a
detector click (a bright pulse, or the timing of her own photons) and then knows
that a click within the next dead time came from one of the others, which
reveals the bit (Weier et al., New J. Phys. 13, 073024 (2011), "Quantum
eavesdropping without interception: an attack exploiting the dead time of
single-photon detectors"). The proofs this stack uses (link.finite_key) assume a
measurement that does not depend on earlier clicks. Their countermeasure is
applied here: an event is kept only if every detector was live, i.e. no tag of
any detector of an earlier slot, inside or outside a detection window, came less
than ``dead_time_ps + window_ps`` before the slot's nominal time (its centre;
half a window of that covers the window, the other half is a margin for jitter;
the dead time is the longest of Bob's detectors). Tags of the same slot (a
double click) are one event and do not veto each other; a vetoed event is
dropped whole, so a double click never turns into a single one. The decision
depends only on when earlier clicks came, not on the event's own tags (timed
from its earliest tag, as before 2026-11-25, an event of two jittered tags was
vetoed more often than one of one tag, at the guard's edge: audit), so it acts on
the event as a basis- and bit-independent loss, which the decoy analysis
absorbs as loss. It costs the share of events that follow
another click within a dead time (at the rig's metro-25km, ~25 %), counted in
``stats.dead_time_vetoed`` and each frame's ``vetoed``.

The guard is only as good as the dead time it is given, and the tags show a dead
time longer than that: a detector never clicks twice within its own dead time.
Clicks come in slots, so a detector dead for D_true clicks again k0 =
ceil(D_true / period) slots later at the earliest, and the guard covers slot gaps
below k = ceil((dead_time_ps + window_ps) / period): it suffices iff k0 <= k. If
it does, clicks k0 slots apart (then a renewal process) make a gap of at most k
slots (a tag within half a window of its slot) a share of at least
1 - exp(-window_ps / mean gap) of the gaps; ``dead_time_check`` reports a
detector that, over gaps where that expects at least 30, never had one (a chance
of at most e^-30 for a sufficient guard). The guard is then certainly too short,
and the node stops making key (``dead_time`` alarm).

Afterpulsing (detector memory beyond the dead time). A SPAD's avalanche fills
traps that release carriers later, each release a click of the same detector
(so of the same bit value) at the dead time plus a trap lifetime after the first
(Itzler et al., J. Mod. Opt. 58, 174 (2011), sec. 4; Humer et al., J. Lightwave
Technol. 33, 3098 (2015)). The guard removes an event only within
``dead_time_ps + window_ps`` of an earlier click; an afterpulse later than that
is kept and correlated with the click that caused it. ``afterpulse_check`` looks
for it in the same per-detector gaps: with L the guard's gap limit
(``_gap_limit_ps``) and B its length in whole slots, it counts gaps in a near
band [L, L + B) and in a reference band [L + 4B, L + 8B), and the gaps that reach
each band. A detector without memory beyond L is live and memoryless there: a gap
that reaches L + x goes on beyond L + x + y with probability s^y whatever x (s:
the chance of no click of that detector in one slot, dark counts between slots
included; the band edges are whole slots apart), so a gap that reaches the near
band ends in it with probability pi_B = 1 - s^B, one that reaches the reference
band with pi_W = 1 - s^(4B) = 1 - (1 - pi_B)^4. Afterpulses raise the near band's
share above that. The test, with its false-alarm probability bounded by
Chernoff's binomial tail bound P(X >= x) <= exp(-n KL(x/n || pi)) (and its mirror
for the lower tail; Hoeffding, JASA 58, 13 (1963), eq. 2.1), both halves at
e^-30 / 2: (i) pi_W,up, the largest pi_W the reference band's count allows at
that level, gives pi_B,up = 1 - (1 - pi_W,up)^(1/4); (ii) an alarm when the near
band's share exceeds pi_B,up by n KL >= 30 + ln 2. If pi_W <= pi_W,up
(probability >= 1 - e^-30 / 2), (ii) has probability <= e^-30 / 2, so a detector
without memory alarms with probability <= e^-30 per check whatever s is (the
counts need not be independent between the bands). Afterpulses that reach the
reference band raise pi_W,up: that only makes the check less sensitive. A click
rate that varies while the link runs (drift) mixes geometric gap laws, which
also makes short gaps likelier, but only at second order (the click rate's
relative variance times the share of gaps ending within 8B), far below what the
bound lets through. A release time much longer than 4B raises both bands alike
and is not seen here, and neither is a detector that seldom stays silent for 8B
(then the guard drops most events anyway): ``qkd calibrate timing`` measures the
release law (``calibration.timing``). The counts cost a few compares per tag in
the same C pass as the dead-time gaps (``postproc_c.slotting.GapCounter.
count_bands``). A detector that passes with at least ``AFTERPULSE_WINDOW_GAPS``
gaps beyond the guard starts a new window, so afterpulsing that appears while
running (a detector warmed up) is caught too; with that many gaps the check sees
a near-band excess of a few 1e-3 of the gaps at the rig's rates.

This module knows nothing of sockets, instruments or keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from postproc_c.slotting import GapCounter, slot_close

# afterpulse_check (module docstring): the reference band starts this many guard lengths
# beyond the guard; a passed check with this many gaps beyond the guard starts a new window
AFTERPULSE_REF_BANDS = 4      # the reference band: [L + 4B, L + 8B) (module docstring)
AFTERPULSE_WINDOW_GAPS = 1_000_000


def _kl_bernoulli(a: float, b: float) -> float:
    """KL(Bernoulli(a) || Bernoulli(b)) in nats (0 log 0 = 0)."""
    out = 0.0
    if a > 0:
        out += a * math.log(a / b)
    if a < 1:
        out += (1 - a) * math.log((1 - a) / (1 - b))
    return out


def binomial_upper_bound(k: int, n: int, level: float) -> float:
    """The largest pi >= k / n with n KL(k/n || pi) <= ``level``: if X ~ Bin(n, pi) then
    P(pi > this bound) <= exp(-level) (Chernoff's lower-tail bound; Hoeffding, JASA 58, 13
    (1963), eq. 2.1). Bisection to 1e-12: the KL grows monotonically in pi above k / n."""
    if n <= 0:
        return 1.0
    h = k / n
    if h >= 1.0 or n * _kl_bernoulli(h, 1.0 - 1e-15) <= level:
        return 1.0
    lo, hi = h, 1.0 - 1e-15
    while hi - lo > 1e-12:
        mid = 0.5 * (lo + hi)
        if n * _kl_bernoulli(h, mid) <= level:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass
class FrameDetections:
    """Bob's detections of one frame: sorted unique slots with their click masks."""

    frame_index: int
    slots: np.ndarray            # uint64, strictly increasing, < frame_slots
    masks: np.ndarray            # uint8, bit d = detector d clicked
    sync_ps: int                 # the frame's sync tag (tagger clock)
    period_ps: float             # slot period measured for this frame
    dropped: int = 0             # tags in no event (no tag of their slot in its window)
    vetoed: int = 0              # events dropped by the dead-time guard


@dataclass
class SlotterStats:
    frames: int = 0
    tags: int = 0
    kept: int = 0                # tags of events (a slot with a tag in its window)
    outside_window: int = 0      # tags in no event (the frames' ``dropped``)
    before_first_sync: int = 0
    lost_syncs: int = 0
    dead_time_vetoed: int = 0    # events dropped by the dead-time guard (module docstring)
    # per detector, for dead_time_check (since its last passed check): gaps between its
    # consecutive tags, how many were at most the guard's slots (Slotter._gap_limit_ps), their sum
    gaps: list = field(default_factory=lambda: [0, 0, 0, 0])
    short_gaps: list = field(default_factory=lambda: [0, 0, 0, 0])
    gap_sum_ps: list = field(default_factory=lambda: [0, 0, 0, 0])
    # per detector, for afterpulse_check (since its last window): gaps at least the guard's limit,
    # those in the near band, gaps reaching the reference band, those in it (module docstring)
    ap_beyond: list = field(default_factory=lambda: [0, 0, 0, 0])
    ap_near: list = field(default_factory=lambda: [0, 0, 0, 0])
    ap_ref_from: list = field(default_factory=lambda: [0, 0, 0, 0])
    ap_ref: list = field(default_factory=lambda: [0, 0, 0, 0])
    period_ps: float = 0.0
    drift_ppm: float = 0.0


@dataclass
class Slotter:
    """Streaming tag -> slot conversion for one tagger (see the module docstring).

    ``offsets_ps[d]``: calibrated delay of detector ``d`` relative to the sync;
    ``nominal_period_ps``: Alice's slot period on her own clock (the drift
    reported is relative to it). ``dead_time_ps``: the longest dead time of Bob's
    detectors, for the dead-time guard (module docstring); 0 turns the guard off,
    which only tests of the slotting itself and timing calibration do.
    """

    frame_slots: int
    nominal_period_ps: float
    offsets_ps: tuple[float, float, float, float]
    window_ps: float
    dead_time_ps: float = 0.0
    stats: SlotterStats = field(default_factory=SlotterStats)
    # True: the numpy path only (the reference the C path is tested against); False: the C path
    # (postproc_c.slotting), falling back to numpy for a call whose tags it cannot order
    reference: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        if self.frame_slots < 1:
            raise ValueError(f"frame_slots: must be >= 1, got {self.frame_slots}")
        if not self.nominal_period_ps > 0:
            raise ValueError(f"nominal_period_ps: must be > 0, got {self.nominal_period_ps}")
        if len(self.offsets_ps) != 4:
            raise ValueError(f"offsets_ps: need 4 detector offsets, got {len(self.offsets_ps)}")
        if not 0 < self.window_ps <= self.nominal_period_ps:
            raise ValueError(f"window_ps: must lie in (0, period], got {self.window_ps}")
        if not 0 <= self.dead_time_ps < float("inf"):
            raise ValueError(f"dead_time_ps: must be a finite time >= 0, got {self.dead_time_ps}")
        self._off = np.asarray(self.offsets_ps, dtype=np.float64)
        self._t = np.empty(0, np.int64)      # pending detector tags
        self._ch = np.empty(0, np.uint8)
        self._syncs: list[int] = []          # sync times not yet closed
        self._sync_index: list[int] = []     # their frame indices
        self._next_index = 0
        self._last_closed = -1               # index of the newest closed frame
        self._period = float(self.nominal_period_ps)
        # the guard's memory of closed frames: their latest tags (int64 ps, offset-corrected) and
        # slot keys (-1: outside any window), enough to veto the first events of the next frames
        self._tail_ps = np.empty(0, np.int64)
        self._tail_key = np.empty(0, np.int64)
        self.fast_fallbacks = 0              # closes the C path left to numpy (tags out of order)
        # each detector's newest tag (ps) for its gaps (last/has), bound to C once; the numpy
        # reference keeps its state in the same two arrays
        self._gap_counter = GapCounter()

    @property
    def last_sync_index(self) -> int:
        """Frame index of the newest sync seen (-1 before the first)."""
        return self._sync_index[-1] if self._sync_index else self._last_closed

    @property
    def _last_tag(self) -> list[int | None]:
        """Each detector's newest tag (ps), None before its first."""
        gc = self._gap_counter
        return [v if h else None for v, h in zip(gc.last.tolist(), gc.has.tolist(), strict=True)]

    @property
    def frame_duration_ps(self) -> float:
        return self._period * self.frame_slots

    def push(self, t_ps: np.ndarray, channel: np.ndarray) -> list[FrameDetections]:
        """Add a time-ordered batch of tags; return the frames it completed, in order."""
        t_ps = np.asarray(t_ps, dtype=np.int64)
        channel = np.asarray(channel, dtype=np.uint8)
        if t_ps.shape != channel.shape or t_ps.ndim != 1:
            raise ValueError("t_ps/channel: need two 1-d arrays of equal length")
        if t_ps.size == 0:
            return []
        self.stats.tags += int(t_ps.size)
        is_sync = channel == 0
        for s in t_ps[is_sync].tolist():
            self._add_sync(int(s))
        det = (channel >= 1) & (channel <= 4)
        if self.dead_time_ps > 0:
            self._count_gaps(t_ps, channel)
        self._t = np.concatenate([self._t, t_ps[det]])
        self._ch = np.concatenate([self._ch, channel[det]])
        # Tags arrive in time order, so nothing earlier than the newest tag is
        # still to come: a frame is complete once time has passed its end plus
        # the largest detector offset and half a window.
        horizon = int(t_ps[-1])
        return self._emit(horizon)

    def _count_gaps(self, t_ps: np.ndarray, channel: np.ndarray) -> None:
        st, gc = self.stats, self._gap_counter
        edges = self._gap_edges_ps()
        if not self.reference:
            g, below, total = gc.count_bands(np.ascontiguousarray(t_ps), np.ascontiguousarray(channel),
                                             edges)
        else:
            g, below, total = [0] * 4, [[0] * 4 for _ in edges], [0] * 4
            for d in range(4):
                t = t_ps[channel == d + 1]
                if t.size == 0:
                    continue
                gd = np.diff(t, prepend=gc.last[d]) if gc.has[d] else np.diff(t)
                gc.last[d], gc.has[d] = t[-1], 1
                g[d], total[d] = int(gd.size), int(gd.sum())
                for e, edge in enumerate(edges):
                    below[e][d] = int(np.count_nonzero(gd < edge))
        for d in range(4):
            st.gaps[d] += g[d]
            st.short_gaps[d] += below[0][d]
            st.gap_sum_ps[d] += total[d]
            st.ap_beyond[d] += g[d] - below[0][d]
            st.ap_near[d] += below[1][d] - below[0][d]
            st.ap_ref_from[d] += g[d] - below[2][d]
            st.ap_ref[d] += below[3][d] - below[2][d]

    def _gap_edges_ps(self) -> tuple[float, float, float, float]:
        """The guard's gap limit L, the near band's end, the reference band's ends (docstring)."""
        limit = self._gap_limit_ps()
        band = (limit - self.window_ps / 2)           # k slots: the guard's length in whole slots
        ref = limit + AFTERPULSE_REF_BANDS * band
        return (limit, limit + band, ref, ref + AFTERPULSE_REF_BANDS * band)

    def _gap_limit_ps(self) -> float:
        """k slots plus half a window, k = the first slot gap the guard no longer covers."""
        k = math.ceil((self.dead_time_ps + self.window_ps) / self.nominal_period_ps - 1e-9)
        return k * self.nominal_period_ps + self.window_ps / 2

    def dead_time_check(self, min_expected: float = 30.0) -> str | None:
        """None, or what shows that a detector's dead time is longer than the guard covers
        (module docstring): no gap of at most k slots where a sufficient guard gives at least
        ``min_expected`` of them. A detector that passes starts a new window of gaps, so a
        dead time lengthened while the link runs is caught too."""
        if self.dead_time_ps <= 0:
            return None
        st = self.stats
        limit_ns = self._gap_limit_ps() / 1e3
        for d in range(4):
            n = st.gaps[d]
            if n == 0:
                continue
            # all gaps 0 ps (duplicated tags): the limit as the sum -> 0+, every gap expected short
            expected = (n * -math.expm1(-self.window_ps * n / st.gap_sum_ps[d])
                        if st.gap_sum_ps[d] else float(n))
            if expected < min_expected:
                continue                              # too few gaps yet for a verdict
            if st.short_gaps[d]:
                st.gaps[d] = st.short_gaps[d] = st.gap_sum_ps[d] = 0
                continue
            return (f"detector {'HVDA'[d]} never clicked twice within {limit_ns:g} ns in {n} "
                    f"clicks (a dead time of {self.dead_time_ps / 1e3:g} ns or less gives at "
                    f"least {expected:.0f} such): its dead time is longer than the configured "
                    "dead_time_ns, so the dead-time guard is too short; set [frontend] "
                    "dead_time_ns to the detectors' dead time")
        return None

    def afterpulse_check(self, log_false_alarm: float = 30.0) -> str | None:
        """None, or what shows afterpulsing beyond the guard (module docstring): a detector whose
        gaps just beyond the guard end in the near band more often than the reference band allows,
        with false-alarm probability at most exp(-``log_false_alarm``) per detector and check. A
        detector that passes with ``AFTERPULSE_WINDOW_GAPS`` gaps beyond the guard starts a new
        window."""
        if self.dead_time_ps <= 0:
            return None
        st = self.stats
        level = log_false_alarm + math.log(2.0)            # each half at exp(-log_false_alarm) / 2
        limit, near_end, ref_lo, _ = self._gap_edges_ps()
        for d in range(4):
            n1, b1, n2, b2 = st.ap_beyond[d], st.ap_near[d], st.ap_ref_from[d], st.ap_ref[d]
            # the reference band is AFTERPULSE_REF_BANDS near bands wide: 1 - pi_B = (1 - pi_W)^(1/4)
            pi_w_up = binomial_upper_bound(b2, n2, level) if n2 else 1.0
            pi_up = -math.expm1(math.log1p(-pi_w_up) / AFTERPULSE_REF_BANDS) if pi_w_up < 1.0 else 1.0
            h1 = b1 / n1 if n1 else 0.0
            if h1 > pi_up and n1 * _kl_bernoulli(h1, pi_up) >= level:
                return (f"detector {'HVDA'[d]}: {b1} of its {n1} gaps beyond the guard end within "
                        f"{(near_end - limit) / 1e3:g} ns of it ({h1:.4f}), where a detector "
                        f"without memory there ends at most {pi_up:.4f} of them (from its gaps "
                        f"{(ref_lo - limit) / 1e3:g} ns further on: {b2} of {n2} end in a band "
                        f"{AFTERPULSE_REF_BANDS}x as long; false alarm <= e^-{log_false_alarm:g}): "
                        "afterpulses come after the dead-time guard, so kept events depend on earlier "
                        "clicks; measure them with `qkd calibrate timing` and set [frontend] "
                        "dead_time_ns to the afterpulse guard it gives")
            if n1 >= AFTERPULSE_WINDOW_GAPS:        # passed on a full window: start a new one
                st.ap_beyond[d] = st.ap_near[d] = st.ap_ref_from[d] = st.ap_ref[d] = 0
        return None

    def flush(self) -> list[FrameDetections]:
        """Close every open frame (end of acquisition)."""
        return self._emit(None)

    def _add_sync(self, s: int) -> None:
        if self._syncs:
            gap = s - self._syncs[-1]
            k = max(1, int(round(gap / self.frame_duration_ps)))
            if k > 1:
                self.stats.lost_syncs += k - 1
            # Track the slot period on the tagger's clock from the sync spacing.
            self._period = gap / (k * self.frame_slots)
            self.stats.period_ps = self._period
            self.stats.drift_ppm = (self._period / self.nominal_period_ps - 1.0) * 1e6
            self._next_index += k
        self._syncs.append(s)
        self._sync_index.append(self._next_index)

    def _emit(self, horizon: int | None) -> list[FrameDetections]:
        out: list[FrameDetections] = []
        if not self._syncs:
            if horizon is not None:  # keep tags for a sync that may still come? They precede any frame.
                self.stats.before_first_sync += int(self._t.size)
                self._t, self._ch = self._t[:0], self._ch[:0]
            return out
        reach = self._off.max() + self._period
        syncs = self._syncs
        n_close = 0
        for i, s in enumerate(syncs):
            end = s + self.frame_duration_ps + reach
            if horizon is not None and (i + 1 >= len(syncs) or end > horizon):
                break
            n_close = i + 1
        if n_close == 0:
            return out
        if not self.reference:
            fast = self._close_fast(n_close)
            if fast is not None:
                return fast
            self.fast_fallbacks += 1
        # Assign pending detector tags to frames by their offset-corrected time, relative to
        # the oldest open sync (int64 first: float64 is exact only below 2^53 ps)
        base = syncs[0]
        d = self._ch.astype(np.int64) - 1
        tc = (self._t - base).astype(np.float64) - self._off[d]
        sync_arr = (np.asarray(syncs, dtype=np.int64) - base).astype(np.float64)
        which = np.searchsorted(sync_arr, tc + self._period / 2, side="right") - 1
        early = which < 0
        if early.any():
            self.stats.before_first_sync += int(early.sum())
        closing = which < n_close
        tc_c, d_c, w_c = tc[closing], d[closing], which[closing]
        # slot of each closing tag in its frame, on the period measured from the syncs
        period = self._period
        rel = (tc_c - sync_arr[np.maximum(w_c, 0)]) / period
        slot = np.rint(rel)
        resid_ps = (rel - slot) * period
        in_slot = (w_c >= 0) & (slot >= 0) & (slot < self.frame_slots)
        in_win = in_slot & (np.abs(resid_ps) <= self.window_ps / 2)
        if self.dead_time_ps > 0:
            index = np.asarray(self._sync_index[:n_close], dtype=np.int64)
            key = np.where(in_slot, index[np.maximum(w_c, 0)] * self.frame_slots + slot.astype(np.int64),
                           -1)
            # each slot's nominal time (offset-corrected), from which the guard is timed
            nominal = sync_arr[np.maximum(w_c, 0)] + slot * period
            veto = self._veto(tc_c, key, nominal, base)
        else:
            veto = np.zeros(tc_c.size, bool)
        for i in range(n_close):
            sel = np.flatnonzero(w_c == i)
            out.append(self._frame(i, slot[sel], d_c[sel], in_slot[sel], in_win[sel], veto[sel]))
        keep_pending = ~closing
        self._t, self._ch = self._t[keep_pending], self._ch[keep_pending]
        self._retire(n_close)
        return out

    def _retire(self, n_close: int) -> None:
        """Forget the syncs of the ``n_close`` frames just closed."""
        self._last_closed = self._sync_index[n_close - 1]
        del self._syncs[:n_close]
        del self._sync_index[:n_close]

    def _count_frame(self, kept: int, dropped: int, vetoed: int) -> None:
        st = self.stats
        st.frames += 1
        st.kept += kept
        st.outside_window += dropped
        st.dead_time_vetoed += vetoed

    def _close_fast(self, n_close: int) -> list[FrameDetections] | None:
        """The C path of the rest of ``_emit`` (postproc_c.slotting.slot_close): the same frames,
        stats and state, or None (nothing changed) when the tags are not in the order it needs."""
        guard = self.dead_time_ps + self.window_ps if self.dead_time_ps > 0 else 0.0
        if not (math.isfinite(self._period) and self._period > 0 and math.isfinite(guard)
                and self.frame_slots < 1 << 62 and np.all(np.isfinite(self._off))):
            return None     # a zero or negative period measured from syncs out of order, etc.
        res = slot_close(self._t, self._ch, np.asarray(self._syncs, np.int64),
                         np.asarray(self._sync_index, np.int64), n_close, self._off,
                         self.window_ps, self._period, self.frame_slots, guard,
                         self._tail_ps, self._tail_key)
        if res is None:
            return None
        self.stats.before_first_sync += res.early
        fs = res.frame_stats.tolist()
        out, a = [], 0
        for i in range(n_close):
            n_ev, kept, dropped, vetoed = fs[i]
            self._count_frame(kept, dropped, vetoed)
            out.append(FrameDetections(self._sync_index[i], res.slots[a:a + n_ev].copy(),
                                       res.masks[a:a + n_ev].copy(), int(self._syncs[i]),
                                       self._period, dropped, vetoed))
            a += n_ev
        self._t, self._ch = res.pending_t, res.pending_ch
        if guard > 0:
            self._tail_ps, self._tail_key = res.tail_ps, res.tail_key
        self._retire(n_close)
        return out

    def _veto(self, u: np.ndarray, key: np.ndarray, nominal: np.ndarray, base: int) -> np.ndarray:
        """Dead-time guard (module docstring): True for each tag of a slot whose nominal time
        comes less than ``dead_time_ps + window_ps`` after an earlier tag of another slot or of
        no slot.

        ``u``: offset-corrected tag times relative to ``base``; ``key``: the tag's absolute slot
        (frame index * frame_slots + slot), -1 outside every slot; ``nominal``: its slot's
        nominal time (relative to ``base``). A slot's tags lie within its period and the others
        outside it, so in time order a slot's tags are one run: the tag before a run is the
        latest earlier click of another slot. (Were a run ever split, its second part would be
        timed from the same nominal time against a tag of its own slot: conservative.)"""
        guard = self.dead_time_ps + self.window_ps
        n_tail = self._tail_ps.size
        uu = np.concatenate([(self._tail_ps - base).astype(np.float64), u])
        kk = np.concatenate([self._tail_key, key])
        cc = np.concatenate([np.full(self._tail_ps.size, np.nan), nominal])
        kk = np.where(kk >= 0, kk, -1 - np.arange(kk.size, dtype=np.int64))   # each its own run
        order = np.argsort(uu, kind="stable")
        us, ks = uu[order], kk[order]
        start = np.ones(us.size, bool)
        np.not_equal(ks[1:], ks[:-1], out=start[1:])
        first = np.flatnonzero(start)
        gap = np.full(first.size, np.inf)
        gap[1:] = cc[order[first[1:]]] - us[first[1:] - 1]
        veto_sorted = (gap < guard)[np.cumsum(start) - 1]
        veto = np.empty(us.size, bool)
        veto[order] = veto_sorted
        # what the next frames' first slots must be checked against: tags within one guard and
        # one period of the latest (a later slot's nominal time is at most half a period before
        # its tags, so any older tag is older than guard for every later slot as well)
        if us.size:
            recent = order[us >= us[-1] - guard - self._period]
            self._tail_ps = base + np.rint(uu[recent]).astype(np.int64)
            self._tail_key = np.where(kk[recent] >= 0, kk[recent], -1)
        return veto[n_tail:]

    def _frame(self, i: int, slot: np.ndarray, det: np.ndarray, in_slot: np.ndarray,
               in_win: np.ndarray, veto: np.ndarray) -> FrameDetections:
        slot_u = slot[in_slot].astype(np.uint64)
        bits = (np.uint8(1) << det[in_slot].astype(np.uint8)).astype(np.uint8)
        order = np.argsort(slot_u, kind="stable")
        slot_u, bits = slot_u[order], bits[order]
        veto, win = veto[in_slot][order], in_win[in_slot][order]
        vetoed = kept = 0
        if slot_u.size:
            new = np.empty(slot_u.size, dtype=bool)
            new[0] = True
            np.not_equal(slot_u[1:], slot_u[:-1], out=new[1:])
            starts = np.flatnonzero(new)
            # an event: a slot with a tag in its window, with all of the slot's tags
            event = np.logical_or.reduceat(win, starts)
            kept = int(np.diff(np.append(starts, slot_u.size))[event].sum())
            masks = np.bitwise_or.reduceat(bits, starts).astype(np.uint8)[event]
            slots = slot_u[starts][event]
            live = ~np.logical_or.reduceat(veto, starts)[event]   # an event goes whole
            vetoed = int(slots.size - live.sum())
            if vetoed:
                slots, masks = slots[live], masks[live]
        else:
            masks = np.empty(0, np.uint8)
            slots = np.empty(0, np.uint64)
        dropped = int(slot.size) - kept
        self._count_frame(kept, dropped, vetoed)
        return FrameDetections(self._sync_index[i], slots, masks, int(self._syncs[i]), self._period,
                               dropped, vetoed)

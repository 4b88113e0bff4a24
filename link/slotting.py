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
frame. A tag is kept when it falls within ``window_ps`` of its slot centre;
the others (dark counts between slots, after-pulses, stray light) are counted
and dropped. Several detectors clicking in one slot give one event with
several bits set in its mask; sifting decides what that means.

Frames are numbered from the first sync tag seen (frame 0); a gap of k frame
durations between syncs means k - 1 syncs were lost, and the numbering skips
accordingly so Bob stays aligned with Alice's frame index.

Everything is numpy over whole tag batches: ``searchsorted`` assigns tags to
frames, one division gives slots. Times stay int64 picoseconds until they are made
relative to the oldest open sync; only those differences (a few frames long) become
float64. Converted whole, the tagger's absolute times lost whole picoseconds after
2^53 ps (2.5 hours of tagger clock) and 64 ps after a week, which moved tags across the
edges of the detection window on a link that runs for days.
This module knows nothing of sockets, instruments or keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FrameDetections:
    """Bob's detections of one frame: sorted unique slots with their click masks."""

    frame_index: int
    slots: np.ndarray            # uint64, strictly increasing, < frame_slots
    masks: np.ndarray            # uint8, bit d = detector d clicked
    sync_ps: int                 # the frame's sync tag (tagger clock)
    period_ps: float             # slot period measured for this frame
    dropped: int = 0             # tags outside the detection window


@dataclass
class SlotterStats:
    frames: int = 0
    tags: int = 0
    kept: int = 0
    outside_window: int = 0
    before_first_sync: int = 0
    lost_syncs: int = 0
    period_ps: float = 0.0
    drift_ppm: float = 0.0


@dataclass
class Slotter:
    """Streaming tag -> slot conversion for one tagger (see the module docstring).

    ``offsets_ps[d]``: calibrated delay of detector ``d`` relative to the sync;
    ``nominal_period_ps``: Alice's slot period on her own clock (the drift
    reported is relative to it).
    """

    frame_slots: int
    nominal_period_ps: float
    offsets_ps: tuple[float, float, float, float]
    window_ps: float
    stats: SlotterStats = field(default_factory=SlotterStats)

    def __post_init__(self) -> None:
        if self.frame_slots < 1:
            raise ValueError(f"frame_slots: must be >= 1, got {self.frame_slots}")
        if not self.nominal_period_ps > 0:
            raise ValueError(f"nominal_period_ps: must be > 0, got {self.nominal_period_ps}")
        if len(self.offsets_ps) != 4:
            raise ValueError(f"offsets_ps: need 4 detector offsets, got {len(self.offsets_ps)}")
        if not 0 < self.window_ps <= self.nominal_period_ps:
            raise ValueError(f"window_ps: must lie in (0, period], got {self.window_ps}")
        self._off = np.asarray(self.offsets_ps, dtype=np.float64)
        self._t = np.empty(0, np.int64)      # pending detector tags
        self._ch = np.empty(0, np.uint8)
        self._syncs: list[int] = []          # sync times not yet closed
        self._sync_index: list[int] = []     # their frame indices
        self._next_index = 0
        self._last_closed = -1               # index of the newest closed frame
        self._period = float(self.nominal_period_ps)

    @property
    def last_sync_index(self) -> int:
        """Frame index of the newest sync seen (-1 before the first)."""
        return self._sync_index[-1] if self._sync_index else self._last_closed

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
        self._t = np.concatenate([self._t, t_ps[det]])
        self._ch = np.concatenate([self._ch, channel[det]])
        # Tags arrive in time order, so nothing earlier than the newest tag is
        # still to come: a frame is complete once time has passed its end plus
        # the largest detector offset and half a window.
        horizon = int(t_ps[-1])
        return self._emit(horizon)

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
        reach = self._off.max() + self.window_ps
        syncs = self._syncs
        n_close = 0
        for i, s in enumerate(syncs):
            end = s + self.frame_duration_ps + reach
            if horizon is not None and (i + 1 >= len(syncs) or end > horizon):
                break
            n_close = i + 1
        if n_close == 0:
            return out
        # Assign pending detector tags to frames by their offset-corrected time, relative to
        # the oldest open sync (int64 first: float64 is exact only below 2^53 ps)
        base = syncs[0]
        d = self._ch.astype(np.int64) - 1
        tc = (self._t - base).astype(np.float64) - self._off[d]
        sync_arr = (np.asarray(syncs, dtype=np.int64) - base).astype(np.float64)
        which = np.searchsorted(sync_arr, tc + self.window_ps / 2, side="right") - 1
        early = which < 0
        if early.any():
            self.stats.before_first_sync += int(early.sum())
        done_mask = (which >= 0) & (which < n_close)
        keep_pending = which >= n_close
        for i in range(n_close):
            sel = np.flatnonzero(done_mask & (which == i))
            out.append(self._frame(i, tc[sel], d[sel], base))
        self._t, self._ch = self._t[keep_pending], self._ch[keep_pending]
        self._last_closed = self._sync_index[n_close - 1]
        del self._syncs[:n_close]
        del self._sync_index[:n_close]
        return out

    def _frame(self, i: int, tc: np.ndarray, det: np.ndarray, base: int) -> FrameDetections:
        s0 = self._syncs[i]
        period = self._period
        rel = (tc - float(s0 - base)) / period       # tc is relative to base (_emit)
        slot = np.rint(rel)
        resid_ps = (rel - slot) * period
        ok = (np.abs(resid_ps) <= self.window_ps / 2) & (slot >= 0) & (slot < self.frame_slots)
        dropped = int(tc.size - ok.sum())
        slot_u = slot[ok].astype(np.uint64)
        bits = (np.uint8(1) << det[ok].astype(np.uint8)).astype(np.uint8)
        order = np.argsort(slot_u, kind="stable")
        slot_u, bits = slot_u[order], bits[order]
        if slot_u.size:
            new = np.empty(slot_u.size, dtype=bool)
            new[0] = True
            np.not_equal(slot_u[1:], slot_u[:-1], out=new[1:])
            starts = np.flatnonzero(new)
            masks = np.bitwise_or.reduceat(bits, starts).astype(np.uint8)
            slots = slot_u[starts]
        else:
            masks = np.empty(0, np.uint8)
            slots = np.empty(0, np.uint64)
        self.stats.frames += 1
        self.stats.kept += int(ok.sum())
        self.stats.outside_window += dropped
        return FrameDetections(self._sync_index[i], slots, masks, int(s0), period, dropped)

"""Bob's slotting hot path in C: closing frames of tags into events, and the gap counts.

``link.slotting.Slotter`` is the caller and its numpy path is the reference: ``slot_close`` is
one step of ``Slotter._emit`` (with ``_veto`` and ``_frame``) and ``slot_gaps`` is
``Slotter._count_gaps``, bit for bit (tests/test_slotting_fast.py compares them). What this
module must not do: keep state (the slotter owns it and passes it in) or guess at inputs the
C path cannot order in bounded time; then ``slot_close`` returns None and the caller runs the numpy path,
which defines the result for any input.

Why C: at the link's tag rate (~39 M tags/s at metro-25km) the numpy path spent ~140 ns a tag in
two stable argsorts, a per-frame sort and a dozen whole-array passes; here it is two passes: an
insertion sort of the nearly time-ordered offset-corrected tags (only the detectors' offset
differences reorder them), then one walk in that order (src/slot.c).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._binding import as_array, check, ffi, lib, ptr


@dataclass(frozen=True)
class SlotClose:
    """What ``slot_close`` gives: the closing frames' events and what the slotter keeps."""

    slots: np.ndarray          # uint64, events of all closing frames, frame then slot order
    masks: np.ndarray          # uint8 click masks
    frame_stats: np.ndarray    # uint64 (n_close, 4): events, kept, dropped, vetoed per frame
    pending_t: np.ndarray      # int64, tags of frames not closed (input order)
    pending_ch: np.ndarray     # uint8
    tail_ps: np.ndarray        # int64, the guard memory for the next call
    tail_key: np.ndarray       # int64
    early: int                 # closing tags before the first open sync


def _finite(v: float, name: str) -> float:
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name}: must be finite, got {v}")
    return v


def slot_close(t: np.ndarray, ch: np.ndarray, syncs: np.ndarray, sync_index: np.ndarray,
               n_close: int, offsets: np.ndarray, window_ps: float, period_ps: float,
               frame_slots: int, guard_ps: float, tail_ps: np.ndarray,
               tail_key: np.ndarray) -> SlotClose | None:
    """Close the oldest ``n_close`` open frames (see ``qpp_slot_close`` in
    include/qpp_slot.h). ``t``/``ch``: pending detector tags (int64 ps, uint8 1..4);
    ``syncs``/``sync_index``: the open frames' sync tags and frame indices (int64);
    ``offsets``: float64 (4,); ``guard_ps``: dead time + window, 0 for no guard;
    ``tail_ps``/``tail_key``: the guard memory from the last call. None when the inputs are
    not in the order the single pass needs (then the numpy path gives the result)."""
    t = as_array(t, "t", np.int64)
    ch = as_array(ch, "ch", np.uint8)
    syncs = as_array(syncs, "syncs", np.int64)
    sync_index = as_array(sync_index, "sync_index", np.int64)
    offsets = as_array(offsets, "offsets", np.float64)
    tail_ps = as_array(tail_ps, "tail_ps", np.int64)
    tail_key = as_array(tail_key, "tail_key", np.int64)
    if ch.size != t.size:
        raise ValueError(f"ch: length {ch.size} differs from t length {t.size}")
    if sync_index.size != syncs.size:
        raise ValueError(f"sync_index: length {sync_index.size} differs from syncs length {syncs.size}")
    if tail_key.size != tail_ps.size:
        raise ValueError(f"tail_key: length {tail_key.size} differs from tail_ps length {tail_ps.size}")
    if offsets.size != 4:
        raise ValueError(f"offsets: need 4 detector offsets, got {offsets.size}")
    if not np.all(np.isfinite(offsets)):
        raise ValueError("offsets: must be finite")
    if isinstance(n_close, bool) or not isinstance(n_close, int | np.integer):
        raise TypeError(f"n_close: expected an int, got {type(n_close).__name__}")
    if not 1 <= n_close <= syncs.size:
        raise ValueError(f"n_close: must lie in 1..{syncs.size} (the open syncs), got {n_close}")
    period_ps = _finite(period_ps, "period_ps")
    window_ps = _finite(window_ps, "window_ps")
    guard_ps = _finite(guard_ps, "guard_ps")
    if not period_ps > 0:
        raise ValueError(f"period_ps: must be > 0, got {period_ps}")
    if not window_ps > 0:
        raise ValueError(f"window_ps: must be > 0, got {window_ps}")
    if guard_ps < 0:
        raise ValueError(f"guard_ps: must be >= 0, got {guard_ps}")
    if isinstance(frame_slots, bool) or not isinstance(frame_slots, int | np.integer):
        raise TypeError(f"frame_slots: expected an int, got {type(frame_slots).__name__}")
    if not 1 <= frame_slots < 1 << 62:
        raise ValueError(f"frame_slots: must lie in 1..2^62 - 1, got {frame_slots}")

    n, n_close = t.size, int(n_close)
    n_tail_out = tail_ps.size + n if guard_ps > 0 else 0
    ev_slots = np.empty(n, np.uint64)
    ev_masks = np.empty(n, np.uint8)
    frame_stats = np.empty((n_close, lib.QPP_SLOT_FRAME_STATS), np.uint64)
    pend_t = np.empty(n, np.int64)
    pend_ch = np.empty(n, np.uint8)
    out_tail_ps = np.empty(n_tail_out, np.int64)
    out_tail_key = np.empty(n_tail_out, np.int64)
    counts = np.zeros(lib.QPP_SLOT_NCOUNTS, np.uint64)
    bad = ffi.new("size_t *")
    st = lib.qpp_slot_close(
        ptr("int64_t *", t), ptr("uint8_t *", ch), n,
        ptr("int64_t *", syncs), ptr("int64_t *", sync_index), syncs.size, n_close,
        ptr("double *", offsets), window_ps, period_ps, int(frame_slots), guard_ps,
        ptr("int64_t *", tail_ps), ptr("int64_t *", tail_key), tail_ps.size,
        ptr("uint64_t *", ev_slots), ptr("uint8_t *", ev_masks), ptr("uint64_t *", frame_stats),
        ptr("int64_t *", pend_t), ptr("uint8_t *", pend_ch),
        ptr("int64_t *", out_tail_ps), ptr("int64_t *", out_tail_key),
        ptr("uint64_t *", counts), bad)
    if st in (lib.QPP_ERR_UNSORTED, lib.QPP_ERR_RANGE):
        return None
    if st == lib.QPP_ERR_VALUE and n and not np.all((ch >= 1) & (ch <= 4)):
        i = int(bad[0])
        raise ValueError(f"ch: channel {int(ch[i])} at index {i} is not a detector (1..4)")
    check("qpp_slot_close", st)
    ne, npend, ntail = (int(counts[k]) for k in (lib.QPP_SLOT_C_EVENTS, lib.QPP_SLOT_C_PENDING,
                                                  lib.QPP_SLOT_C_TAIL))
    return SlotClose(ev_slots[:ne], ev_masks[:ne], frame_stats, pend_t[:npend].copy(),
                     pend_ch[:npend].copy(), out_tail_ps[:ntail].copy(), out_tail_key[:ntail].copy(),
                     int(counts[lib.QPP_SLOT_C_EARLY]))


def slot_gaps(t: np.ndarray, ch: np.ndarray, limit_ps: float, last: np.ndarray,
              has_last: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per detector (channels 1..4; others ignored): the number of gaps between its consecutive
    tags in this batch (the first against ``last[d]`` where ``has_last[d]``), how many are below
    ``limit_ps``, and their int64 sum (wrapping as numpy's does). ``last`` (int64 (4,)) and
    ``has_last`` (uint8 (4,), 0/1) are updated in place."""
    gaps, short, total = GapCounter(last, has_last).count(t, ch, limit_ps)
    return (np.array(gaps, np.uint64), np.array(short, np.uint64), np.array(total, np.int64))


class GapCounter:
    """``qpp_slot_gaps`` across batches, with its state (``last``/``has``: each detector's newest
    tag; the caller's arrays, updated in place, or its own) and output buffers bound to C once:
    the slotter calls it on every push, however small."""

    def __init__(self, last: np.ndarray | None = None, has_last: np.ndarray | None = None) -> None:
        self.last = np.zeros(4, np.int64) if last is None else as_array(last, "last", np.int64)
        self.has = np.zeros(4, np.uint8) if has_last is None else as_array(has_last, "has_last", np.uint8)
        if self.last.size != 4 or self.has.size != 4:
            raise ValueError(f"last/has_last: need 4 entries each, got {self.last.size} and "
                             f"{self.has.size}")
        if not np.all(self.has <= 1):
            raise ValueError(f"has_last: entries must be 0 or 1, got {self.has.tolist()}")
        self._gaps = np.zeros(4, np.uint64)
        self._sum = np.zeros(4, np.uint64)
        self._below = np.zeros((lib.QPP_SLOT_MAX_EDGES, 4), np.uint64)
        self._edges = np.zeros(lib.QPP_SLOT_MAX_EDGES, np.float64)
        self._p = (ptr("int64_t *", self.last), ptr("uint8_t *", self.has),
                   ptr("uint64_t *", self._gaps), ptr("uint64_t *", self._below),
                   ptr("uint64_t *", self._sum))
        self._pe = ptr("double *", self._edges)

    def count(self, t: np.ndarray, ch: np.ndarray, limit_ps: float) -> tuple[list, list, list]:
        """Per detector: gaps, gaps below ``limit_ps``, their sum (int64, wrapping as numpy's)."""
        if math.isnan(float(limit_ps)):
            raise ValueError("limit_ps: must not be NaN")
        gaps, below, total = self.count_bands(t, ch, (limit_ps,))
        return gaps, below[0], total

    def count_bands(self, t: np.ndarray, ch: np.ndarray,
                    edges_ps) -> tuple[list, list[list], list]:
        """Per detector: gaps, for each of the nondecreasing ``edges_ps`` (1 to
        ``QPP_SLOT_MAX_EDGES``) the gaps below it (one list of 4 per edge), their sum."""
        t = as_array(t, "t", np.int64)
        ch = as_array(ch, "ch", np.uint8)
        if ch.size != t.size:
            raise ValueError(f"ch: length {ch.size} differs from t length {t.size}")
        e = [float(x) for x in edges_ps]
        if not 1 <= len(e) <= lib.QPP_SLOT_MAX_EDGES:
            raise ValueError(f"edges_ps: need 1..{lib.QPP_SLOT_MAX_EDGES} edges, got {len(e)}")
        if any(math.isnan(x) for x in e) or any(b < a for a, b in zip(e, e[1:])):
            raise ValueError(f"edges_ps: must be nondecreasing numbers, got {e}")
        self._edges[:len(e)] = e
        last, has, gaps, below, total = self._p
        check("qpp_slot_gap_bands", lib.qpp_slot_gap_bands(
            ptr("int64_t *", t), ptr("uint8_t *", ch), t.size, self._pe, len(e),
            last, has, gaps, below, total))
        return (self._gaps.tolist(), self._below[:len(e)].tolist(),
                [v - (1 << 64) if v >= 1 << 63 else v for v in self._sum.tolist()])

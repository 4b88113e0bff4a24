"""Detector-side effects on click streams: skip sampling, dead time, afterpulsing.

What it is for: turning per-slot click probabilities into click positions at a
cost that grows with the number of clicks, and applying each detector's
recovery (dead time, afterpulses) to a sorted click stream. It must not know
about polarization, Eve or the tagger; it works on slot indices only.

Why these methods:

* ``bernoulli_positions`` draws the gaps between successes of a Bernoulli(p)
  process as geometric variables (Devroye, Non-Uniform Random Variate
  Generation, 1986, ch. X.2: "skip" sampling), so a frame of 2^20 slots with
  1 % clicks costs ~10^4 draws, not 10^6.
* ``dead_time_keep`` is the exact non-paralyzable rule (a click is lost when it
  falls within the dead time of the last *kept* click; Mueller, Nucl. Instrum.
  Methods 112, 1973, eq. 1 describes the resulting rate r/(1 + r tau)). The kept
  set is the orbit of each cluster start under "next click at least one dead
  time later"; we mark it with pointer doubling (each round doubles the orbit
  length covered), so the cost is O(n log L) for the longest cluster L instead
  of a Python loop per click.
"""

from __future__ import annotations

import math

import numpy as np


def bernoulli_positions(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    """Sorted int64 indices in [0, n) of successes of n independent Bernoulli(p) trials."""
    if n <= 0 or p <= 0.0:
        return np.empty(0, dtype=np.int64)
    if p >= 1.0:
        return np.arange(n, dtype=np.int64)
    if p > 0.25:                                # dense: one comparison per slot is cheaper
        return np.flatnonzero(rng.random(n) < p).astype(np.int64, copy=False)
    mean = n * p
    m = int(mean + 6.0 * math.sqrt(mean) + 16)
    inv_rate = -1.0 / math.log1p(-p)
    pos = _geometric_cumsum(rng, m, inv_rate, -1)
    while pos[-1] < n:                          # rare: the margin was not enough
        pos = np.concatenate([pos, _geometric_cumsum(rng, m, inv_rate, int(pos[-1]))])
    return pos[: np.searchsorted(pos, n)]


def _geometric_cumsum(rng: np.random.Generator, m: int, inv_rate: float, start: int) -> np.ndarray:
    """start + cumulative sums of m Geometric(p) gaps (support 1, 2, ...).

    floor(E / lambda) + 1 with E ~ Exp(1) and lambda = -log(1 - p) is exactly
    Geometric(p): P(floor(E / lambda) >= k) = exp(-lambda k) = (1 - p)^k (Devroye 1986,
    sec. X.2), and the ziggurat exponential is cheaper than numpy's geometric.
    """
    gaps = rng.standard_exponential(m)
    gaps *= inv_rate
    g = gaps.astype(np.int64)
    g += 1
    g[0] += start
    return np.cumsum(g, out=g)


def dead_time_keep(slots: np.ndarray, dead_slots: int, prev_last: int | None = None) -> np.ndarray:
    """Boolean mask of the clicks a detector with dead time ``dead_slots`` registers.

    ``slots`` are sorted, unique int64 slot indices of would-be clicks; a click at
    slot s blocks clicks at s' with s' - s < dead_slots. ``prev_last`` is the slot
    (relative to the same origin, usually negative) of the last registered click
    before this stream, or None.
    """
    n = len(slots)
    if n == 0 or dead_slots <= 1:
        return np.ones(n, dtype=bool)
    s = slots
    if prev_last is not None and slots[0] - prev_last < dead_slots:
        s = np.concatenate([np.array([prev_last], dtype=np.int64), slots])
        virtual = True
    else:
        virtual = False
    m = len(s)
    start = np.empty(m, dtype=bool)
    start[0] = True
    np.greater_equal(s[1:] - s[:-1], dead_slots, out=start[1:])
    if start.all():
        keep = start
    else:
        # Only clicks in clusters of two or more need work: compress to them. A jump that leaves its
        # cluster lands on a later cluster's start, which is kept anyway, so the compressed problem
        # gives the same marks.
        mem = ~start
        mem[:-1] |= ~start[1:]
        idx = np.flatnonzero(mem)
        keep = start.copy()
        keep[idx] = _orbit_marks(s[idx], start[idx], dead_slots)
    return keep[1:] if virtual else keep


_STRIDE = 1 << 40       # separates detectors in one sorted key; far larger than any frame


def dead_time_keep_multi(slots: np.ndarray, det: np.ndarray, dead_slots, prev_last) -> np.ndarray:
    """``dead_time_keep`` for the clicks of all detectors at once (one pass instead of four).

    ``slots``/``det``: clicks sorted by slot (any order of detectors within a slot);
    ``dead_slots[d]``, ``prev_last[d]`` (None or slot of detector d's last click) per
    detector. Clicks are ordered by (detector, slot) through the key
    det * 2^40 + slot, so clusters never straddle two detectors.
    """
    n = len(slots)
    dead = np.asarray(dead_slots, dtype=np.int64)
    if n == 0 or dead.max() <= 1:
        return np.ones(n, dtype=bool)
    order = np.argsort(det, kind="stable")
    dsort = det[order]
    key = slots[order] + dsort.astype(np.int64) * _STRIDE
    counts = np.bincount(det, minlength=len(dead))
    first = np.cumsum(counts) - counts
    vdet = [d for d in range(len(dead))
            if prev_last[d] is not None and prev_last[d] > -dead[d] and dead[d] > 1]
    vpos = [int(first[d]) for d in vdet]
    if vpos:
        key = np.insert(key, vpos, [prev_last[d] + d * _STRIDE for d in vdet])
        dsort = np.insert(dsort, vpos, np.array(vdet, dtype=dsort.dtype))
    dv = dead[dsort]
    m = len(key)
    start = np.empty(m, dtype=bool)
    start[0] = True
    np.greater_equal(key[1:] - key[:-1], dv[1:], out=start[1:])
    if start.all():
        return np.ones(n, dtype=bool)
    mem = ~start
    mem[:-1] |= ~start[1:]
    idx = np.flatnonzero(mem)
    kept = start.copy()
    kept[idx] = _orbit_marks(key[idx], start[idx], dv[idx])
    if vpos:
        kept = np.delete(kept, np.array(vpos) + np.arange(len(vpos)))
    keep = np.empty(n, dtype=bool)
    keep[order] = kept
    return keep


def _orbit_marks(s: np.ndarray, start: np.ndarray, dead_slots) -> np.ndarray:
    """Kept flags for clicks that all belong to multi-click clusters (``start`` marks cluster heads).

    ``dead_slots`` is a number or an array with one value per click."""
    m = len(s)
    cluster = np.cumsum(start)
    longest = int(np.bincount(cluster).max())
    # jump[i] = first j with s[j] >= s[i] + dead_slots: step forward only where still inside
    # (rounds = most clicks within one dead time; cheaper than a binary search per click)
    jump = np.arange(1, m + 2, dtype=np.int64)
    jump[m] = m                             # sentinel: past the end stays there
    act = np.flatnonzero(~start[1:])        # i whose next click is within the dead time
    while len(act):
        jump[act] += 1
        j = jump[act]
        ok = j < m
        act, j = act[ok], j[ok]
        act = act[s[j] - s[act] < (dead_slots if np.ndim(dead_slots) == 0 else dead_slots[act])]
    keep = np.zeros(m + 1, dtype=bool)
    keep[:m] = start
    # Orbit steps 0 .. covered-1 are marked. First follow each chain one step at a time on a
    # shrinking frontier (cheap while chains are short); chains still alive after 32 steps
    # (saturated detectors) are finished by pointer doubling with jump^32, jump^64, ...
    frontier = np.flatnonzero(start)
    covered = 1
    while covered < longest and covered < _FRONTIER_STEPS and len(frontier):
        frontier = jump[frontier]
        frontier = frontier[frontier < m]
        frontier = frontier[~start[frontier]]   # a chain leaving its cluster lands on a head
        keep[frontier] = True
        covered += 1
    if covered < longest and len(frontier):
        for _ in range(_FRONTIER_STEPS.bit_length() - 1):
            jump = jump[jump]                   # jump^(2^5) = jump^covered
        while covered < longest:
            keep[jump[np.flatnonzero(keep[:m])]] = True
            covered *= 2
            if covered < longest:
                jump = jump[jump]
    return keep[:m]


_FRONTIER_STEPS = 32            # a power of two


def afterpulse_slots(rng: np.random.Generator, kept_slots: np.ndarray, prob: float,
                     dead_time_ps: float, tau_ps: float, period_ps: float) -> np.ndarray:
    """Slots of afterpulses spawned by registered clicks (one generation, sorted).

    Each click spawns an afterpulse with probability ``prob``, released after the
    detector recovers: delay = dead time + Exp(tau) (trap-release model; Itzler et
    al., J. Mod. Opt. 58, 2011, sec. 4 describe the exponential release).
    """
    if prob <= 0.0 or len(kept_slots) == 0:
        return np.empty(0, dtype=np.int64)
    parents = kept_slots[rng.random(len(kept_slots)) < prob]
    if len(parents) == 0:
        return np.empty(0, dtype=np.int64)
    delay_ps = dead_time_ps + (rng.exponential(tau_ps, size=len(parents)) if tau_ps > 0 else 0.0)
    ap = parents + np.maximum(1, np.ceil(delay_ps / period_ps)).astype(np.int64)
    return np.unique(ap)

"""The time tagger: Alice-clock times to tagger timestamps, the rate limit, ordered streams.

What it is for: what a time tagger adds to true arrival times: its own clock
(rate error in ppm and an offset), Gaussian jitter, a finite resolution, and a
maximum tag rate beyond which tags are lost and counted. It must not decide
which detectors click (``hil.model``) nor speak any wire protocol (the
emulated instrument does).

Why: the link engine has to recover slots from raw timestamps exactly as in the
lab, so clock drift must appear as a linear slot-offset slope and losses must
be visible. The rate limit is a fixed-window model (at most
floor(max_rate * window) tags per window of the tagger's clock; later tags in a
window are lost), a simple stand-in for the transfer-buffer overflow of real
taggers. Windows are counted within one frame's tags; a window straddling two
frames may pass slightly more tags than the cap.
"""

from __future__ import annotations

import numpy as np


def tagger_clock(true_ps: np.ndarray, drift_ppm: float, offset_ps: float, resolution_ps: float) -> np.ndarray:
    """Tagger timestamps (int64 ps) of true times (int64 ps on Alice's clock).

    t_tag = floor((t + t * drift_ppm 1e-6 + offset) / resolution) * resolution.
    """
    t = np.asarray(true_ps, dtype=np.int64)
    corr = np.rint(t.astype(np.float64) * (drift_ppm * 1e-6) + offset_ps).astype(np.int64)
    out = t + corr
    if resolution_ps > 1:
        res = int(round(resolution_ps))
        out = np.floor_divide(out, res) * res
    return out


def rate_limit(t_ps: np.ndarray, max_rate_hz: float, window_ns: float) -> np.ndarray:
    """Boolean mask of the tags (sorted ``t_ps``) that survive a fixed-window rate limit."""
    n = len(t_ps)
    if max_rate_hz <= 0 or n == 0:
        return np.ones(n, dtype=bool)
    window_ps = int(round(window_ns * 1e3))
    cap = int(max_rate_hz * window_ns * 1e-9)
    win = np.floor_divide(t_ps, window_ps)
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(win[1:], win[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    rank = np.arange(n) - np.repeat(starts, np.diff(np.append(starts, n)))
    return rank < cap


class TagStream:
    """Merge per-frame tag lists into one time-ordered stream, as a real tagger delivers.

    Tags of frame f can interleave with tags of frame f+1 (the sync tag of f+1 is
    emitted while photons of frame f are still in the fiber), so a frame's tags
    cannot be released as soon as the frame is done. ``push(result,
    next_earliest_ps)`` adds a frame and returns the tags earlier than
    ``next_earliest_ps``, the earliest timestamp any later frame can produce
    (``LinkModel.earliest_tag_ps(frame_index + 1)``); ``flush()`` returns the rest.
    """

    def __init__(self) -> None:
        self._t = np.empty(0, dtype=np.int64)
        self._ch = np.empty(0, dtype=np.uint8)

    def push(self, t_ps: np.ndarray, channel: np.ndarray,
             next_earliest_ps: int) -> tuple[np.ndarray, np.ndarray]:
        t = np.concatenate([self._t, np.asarray(t_ps, dtype=np.int64)])
        ch = np.concatenate([self._ch, np.asarray(channel, dtype=np.uint8)])
        order = np.argsort(t, kind="stable")
        t, ch = t[order], ch[order]
        cut = int(np.searchsorted(t, next_earliest_ps, side="left"))
        self._t, self._ch = t[cut:], ch[cut:]
        return t[:cut], ch[:cut]

    def flush(self) -> tuple[np.ndarray, np.ndarray]:
        t, ch = self._t, self._ch
        self._t = np.empty(0, dtype=np.int64)
        self._ch = np.empty(0, dtype=np.uint8)
        return t, ch

"""Timing calibration: Bob's per-detector offsets, clock drift and detection window from raw tags.

What it is for: before a link makes key, Bob must know where each detector's
clicks fall relative to the sync tag of the frame they belong to
(``link.slotting.Slotter`` needs ``offsets_ps`` and ``window_ps``). This module
finds them from raw time-tagger tags ``(t_ps, channel)`` (channel 0 = sync one
per frame, 1..4 = H, V, D, A) and Alice's known frame patterns, and writes the
result with its date and fit quality into a TOML section of the node's lab
file. It must not talk to instruments itself (the CLI and the tests feed it
tags read through ``drivers/``) and must not use the emulator's physics
(``hil``): on real hardware nothing else is available.

Method, and why:

* **Clock drift** -- least-squares line through the sync tags against their
  frame numbers (a lost sync shows as a gap of two frame lengths and is
  numbered accordingly). The slope over ``frame_slots`` is the slot period on
  the tagger's clock; its ratio to Alice's nominal period is the drift in ppm;
  the RMS residual of the line is its fit quality. Click times are taken
  relative to the fitted line rather than to each raw sync tag, which averages
  the sync channel's own jitter over all frames (the offset's error is then
  sigma_sync / sqrt(frames)).
* **Fine delay (sub-slot phase)** -- the arrival times folded modulo the
  measured period, ``(t - sync) mod period``, form one peak per detector (width:
  detector + tagger jitter) on a flat floor (dark counts). A circular mean
  locates the peak without caring where the fold cuts it; a mean over the
  central +-4 sigma (sigma from the median absolute deviation) then removes the
  floor's pull. Its standard error is sigma / sqrt(n), far below the tagger
  resolution with the clicks of a few frames.
* **Coarse delay (integer slots)** -- each click gets a global slot number
  from its frame's sync and the phase; the delay in slots is the lag that
  maximises the cross-correlation of a detector's click train with Alice's
  intensity pattern (mean photon number per slot, mean removed), computed for
  all lags at once with one real FFT (Wiener-Khinchin). The intensity pattern
  is used rather than the basis/bit pattern because the click probability
  follows mu whatever the fiber did to the polarization, so timing can be
  calibrated before polarization alignment. The fit quality is the peak's
  height over the standard deviation of all other lags (a z-score). That
  z-score alone cannot tell a peak from noise: with ~10^6 lags, many of them
  only partly overlapping the pattern (smaller variance), the largest lag of an
  uncorrelated pattern scores z ~ 8. So the peak must also stand
  ``MIN_PEAK_MARGIN`` standard deviations above the best lag outside its
  neighbours (for noise the two largest of N near-Gaussian values differ by
  ~1/sqrt(2 ln N) ~ 0.2 sigma); otherwise :class:`TimingError` says so instead
  of returning a random slot offset (wrong pattern, wrong frames, too few
  signal clicks).
* **Window** -- with the measured jitter sigma, the peak's click count S and
  the floor's density b (clicks per ps), a window w keeps S erf(w / (2 sqrt2
  sigma)) signal clicks and b w noise clicks with error 1/2; the asymptotic
  BB84 key fraction 1 - f h(e) - h(e) (Shor and Preskill, PRL 85, 441 (2000),
  eq. for the BB84 rate with reconciliation inefficiency f as in Lo, Ma and
  Chen, PRL 94, 230504 (2005), eq. 3 without decoy terms) times the kept
  clicks is the rate estimate. The narrowest window within 0.1 % of the best
  rate is chosen: it is as good by this estimate and rejects stray light the
  estimate does not model.
* **Dead time** (for Bob's dead-time guard, ``link.slotting``) -- a detector
  never clicks twice within its dead time, and clicks come in slots, so the
  shortest gap k0 (slots) between two of its clicks bounds it: D <= k0 period.
  After recovery a click is as likely in any slot, so if k0 was seen at least
  ``MIN_DEAD_EVIDENCE`` times, a shorter gap (as likely as k0 itself) would have
  shown with probability 1 - e^-30: k0 is then the true minimum and
  ``dead_time_ns`` = max over detectors of k0 period, an upper bound of each
  detector's dead time (the guard errs long by less than a slot). With fewer,
  it is left out (None) and Bob's node file must give it.
* **Afterpulsing** (detector memory beyond the dead time, which the guard must also
  cover: the proofs take Bob's detectors as memoryless) -- the same slot gaps of each
  detector, fitted as a geometric background plus afterpulses released the dead time
  plus an exponential time after a click (``calibration.afterpulse``: probability p and
  release time tau with standard errors, or a bound when no excess shows, or "not
  measured" with too few gaps). ``afterpulse_guard_ns``, the guard that leaves at most
  ``afterpulse_residual`` afterpulse probability per click beyond it, is written when some
  detector's afterpulsing was measured; Bob's node takes the longer of it and
  ``dead_time_ns`` as his guard (``link.commands``), and ``timing()`` does too.

Everything is numpy over whole tag arrays.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from calibration.afterpulse import DEFAULT_RESIDUAL, AfterpulseFit, fit_afterpulses
from link.frontend import Timing

__all__ = ["TimingCalibration", "TimingError", "calibrate_timing", "save_toml"]

DEFAULT_MU = (0.5, 0.1, 0.0)
MIN_CLICKS = 200
MIN_PEAK_MARGIN = 4.0       # coarse peak's z over the best other lag's (module docstring)
MAX_COARSE_SLOTS = 1 << 23  # the coarse FFT's memory: ~0.3 GB at this many slots
MIN_DEAD_EVIDENCE = 30      # times the shortest gap must be seen to give a dead time (module docstring)


class TimingError(ValueError):
    """Timing calibration could not be done from these tags (names what is missing)."""


@dataclass
class TimingCalibration:
    """Result of :func:`calibrate_timing`. Offsets are in tagger picoseconds relative to the sync."""

    nominal_period_ps: float
    frame_slots: int
    period_ps: float                       # measured on the tagger's clock
    drift_ppm: float
    sync_rms_ps: float                     # residual of the sync line fit
    offsets_ps: tuple[float, float, float, float]
    slot_offsets: tuple[int, int, int, int]
    phase_ps: tuple[float, float, float, float]
    phase_stderr_ps: tuple[float, float, float, float]
    jitter_ps: tuple[float, float, float, float]
    clicks: tuple[int, int, int, int]
    coarse_z: tuple[float, float, float, float]
    background_per_ps: float
    window_ps: float
    window_rate_fraction: float            # estimated key rate at window_ps / rate with the full period
    dead_slots: tuple[int, int, int, int]  # each detector's shortest gap between two of its clicks
    dead_evidence: tuple[int, int, int, int]   # how often that shortest gap was seen
    dead_time_ns: float | None             # max dead_slots * period (if every detector has the evidence)
    frames: int
    data_s: float                          # emulated / real time span of the tags used
    # per detector (calibration.afterpulse): "measured" / "none_seen" / "too_few", p and tau with
    # standard errors (nan unless measured), the 3-sigma bound on p when none was seen (else nan)
    afterpulse_status: tuple[str, str, str, str] = ("too_few",) * 4
    afterpulse_prob: tuple[float, float, float, float] = (math.nan,) * 4
    afterpulse_prob_err: tuple[float, float, float, float] = (math.nan,) * 4
    afterpulse_tau_ns: tuple[float, float, float, float] = (math.nan,) * 4
    afterpulse_tau_err_ns: tuple[float, float, float, float] = (math.nan,) * 4
    afterpulse_bound: tuple[float, float, float, float] = (math.nan,) * 4
    afterpulse_residual: float = DEFAULT_RESIDUAL
    afterpulse_guard_ns: float | None = None   # guard leaving < afterpulse_residual (if measured)
    date: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))

    def timing(self) -> Timing:
        """The constants ``link.frontend.DriverBob`` / ``Slotter`` take (no dead-time guard when
        neither the dead time nor afterpulses were measured; else the longer of the dead time and
        the afterpulse guard, which is never shorter than the shortest gap, so covers the dead time
        too)."""
        guard_ns = max(self.dead_time_ns or 0.0, self.afterpulse_guard_ns or 0.0)
        return Timing(float(self.nominal_period_ps), int(self.frame_slots),
                      tuple(float(x) for x in self.offsets_ps),  # type: ignore[arg-type]
                      float(self.window_ps), guard_ns * 1e3)

    def summary(self) -> str:
        lines = [f"period {self.period_ps:.6f} ps (drift {self.drift_ppm:+.3f} ppm, sync fit rms "
                 f"{self.sync_rms_ps:.1f} ps), {self.frames} frames = {self.data_s * 1e3:.3f} ms of data"]
        for d, name in enumerate("HVDA"):
            lines.append(f"  {name}: offset {self.offsets_ps[d]:.1f} ps = {self.slot_offsets[d]} slots + "
                         f"{self.phase_ps[d]:.1f} ps (+-{self.phase_stderr_ps[d]:.2f}), jitter "
                         f"{self.jitter_ps[d]:.1f} ps, {self.clicks[d]} clicks, "
                         f"peak z {self.coarse_z[d]:.0f}")
        lines.append(f"  window {self.window_ps:.0f} ps (est. key rate {self.window_rate_fraction:.4f} of "
                     f"full-period window), floor {self.background_per_ps:.3g} clicks/ps")
        gaps = ", ".join(f"{'HVDA'[d]} {self.dead_slots[d]} slots ({self.dead_evidence[d]}x)"
                         for d in range(4))
        if self.dead_time_ns is not None:
            lines.append(f"  dead time <= {self.dead_time_ns:g} ns (shortest gaps: {gaps})")
        else:
            lines.append(f"  dead time not measured: too few short gaps ({gaps}; need each seen "
                         f"{MIN_DEAD_EVIDENCE}x): calibrate on more frames (--frames), or give "
                         "dead_time_ns in Bob's node file")
        for d, name in enumerate("HVDA"):
            lines.append(f"  {name}: {self._afterpulse_line(d)}")
        if self.afterpulse_guard_ns is not None:
            lines.append(f"  afterpulse guard {self.afterpulse_guard_ns:g} ns (afterpulse probability "
                         f"< {self.afterpulse_residual:g} per click beyond it): Bob's dead-time guard "
                         "must be at least this long")
        return "\n".join(lines)

    def _afterpulse_line(self, d: int) -> str:
        st = self.afterpulse_status[d]
        if st == "measured":
            return (f"afterpulse p {self.afterpulse_prob[d]:.4f} +- {self.afterpulse_prob_err[d]:.4f}, "
                    f"release tau {self.afterpulse_tau_ns[d]:.3g} +- {self.afterpulse_tau_err_ns[d]:.2g} ns")
        if st == "none_seen":
            # the bound covers releases within max(k0, 10) slots after the dead time (calibration.afterpulse)
            within_ns = max(self.dead_slots[d], 10) * self.period_ps / 1e3
            return (f"no afterpulses seen (p < {self.afterpulse_bound[d]:.2g}, 3 sigma, for releases "
                    f"within {within_ns:.3g} ns after the dead time)")
        return ("afterpulsing not measured: too few gaps between its clicks; calibrate on more frames "
                "(--frames)")


def _sync_fit(syncs: np.ndarray, frame_ps: float) -> tuple[np.ndarray, float, float, float]:
    """Frame numbers of the syncs (gaps = lost syncs), slope (ps per frame), intercept, RMS residual."""
    idx = np.rint((syncs - syncs[0]) / frame_ps).astype(np.int64)
    if np.any(np.diff(idx) < 1):
        raise TimingError("sync tags closer than one frame: wrong frame_slots or clock_hz?")
    x = idx.astype(np.float64)
    y = (syncs - syncs[0]).astype(np.float64)
    slope, icpt = np.polyfit(x, y, 1)
    rms = float(np.sqrt(np.mean((y - (slope * x + icpt)) ** 2)))
    return idx, float(slope), float(icpt), rms


def _phase(rel: np.ndarray, period: float) -> tuple[float, float, float, float, int]:
    """Peak position of ``rel mod period``: (phase, stderr, sigma, floor clicks per ps, n in peak)."""
    ang = 2 * np.pi * np.mod(rel, period) / period
    phase = (math.atan2(np.sin(ang).mean(), np.cos(ang).mean()) % (2 * np.pi)) * period / (2 * np.pi)
    sigma = period
    for _ in range(3):
        r = np.mod(rel - phase + period / 2, period) - period / 2
        mad = float(np.median(np.abs(r - np.median(r))))
        sigma = max(1.4826 * mad, 0.5)
        core = r[np.abs(r) <= 4 * sigma]
        if core.size == 0:
            break
        phase = (phase + float(core.mean())) % period
        sigma = max(float(core.std()), 0.5)
    r = np.mod(rel - phase + period / 2, period) - period / 2
    n_core = int(np.count_nonzero(np.abs(r) <= 4 * sigma))
    far = np.abs(r) > 6 * sigma
    span = period - 12 * sigma
    floor = float(np.count_nonzero(far)) / span if span > 0 else 0.0
    return phase, sigma / math.sqrt(max(n_core, 1)), sigma, floor, n_core


def _coarse(g: np.ndarray, weight: np.ndarray) -> tuple[int, float, float]:
    """Lag k (slots) maximising sum_j weight[j] * clicks[j + k]; the peak's z-score; the z-score of
    the best lag outside k - 1 .. k + 1 (a peak split over two slots by jitter is still one peak)."""
    L = len(weight)
    lo = int(g.min()) if g.size else 0
    lo = min(lo, 0)
    G = int(g.max()) - lo + 1
    n = 1 << int(math.ceil(math.log2(G + L)))
    c = np.zeros(n, np.float32)
    np.add.at(c, g - lo, 1.0)
    a = np.zeros(n, np.float32)
    a[:L] = weight
    corr = np.fft.irfft(np.conj(np.fft.rfft(a)) * np.fft.rfft(c), n)
    k = int(np.argmax(corr))
    peak = corr[k]
    rest = np.delete(corr, k)
    sd = max(float(rest.std()), 1e-12)
    z = float((peak - rest.mean()) / sd)
    others = corr.copy()
    others[[(k - 1) % n, k, (k + 1) % n]] = -np.inf
    z_next = float((others.max() - rest.mean()) / sd)
    lag = k if k < n - L else k - n          # circular wrap: negative lags live at the end
    return lag + lo, z, z_next


def _h2(e: np.ndarray) -> np.ndarray:
    e = np.clip(e, 1e-12, 1 - 1e-12)
    return -e * np.log2(e) - (1 - e) * np.log2(1 - e)


def optimal_window(sigma_ps: float, signal: float, floor_per_ps: float, period_ps: float, *,
                   resolution_ps: float = 1.0, e_opt: float = 0.01, f_ec: float = 1.16,
                   tolerance: float = 1e-3) -> tuple[float, float]:
    """Narrowest window within ``tolerance`` of the best estimated rate (module docstring).

    Returns (window_ps, rate(window) / rate(full period)).
    """
    w = np.arange(max(resolution_ps, 1.0), period_ps + 1e-9, max(resolution_ps, 1.0))
    s = signal * np.array([math.erf(x / (2 * math.sqrt(2) * sigma_ps)) for x in w])
    b = floor_per_ps * w
    e = (e_opt * s + 0.5 * b) / np.maximum(s + b, 1e-300)
    rate = (s + b) * np.maximum(1 - f_ec * _h2(e) - _h2(e), 0.0)
    best = rate.max()
    if best <= 0:
        return float(period_ps), 0.0
    i = int(np.flatnonzero(rate >= (1 - tolerance) * best)[0])
    return float(w[i]), float(rate[i] / rate[-1]) if rate[-1] > 0 else float("inf")


def calibrate_timing(t_ps: np.ndarray, channel: np.ndarray, intensities: Sequence[np.ndarray], *,
                     frame_slots: int, clock_hz: float, mu: Sequence[float] = DEFAULT_MU,
                     resolution_ps: float = 1.0, coarse_frames: int = 4,
                     afterpulse_residual: float = DEFAULT_RESIDUAL) -> TimingCalibration:
    """Timing constants from time-sorted tags and Alice's intensity classes of frames 0, 1, ...

    ``intensities[k]`` is the uint8 intensity class per slot of the frame whose
    sync is the k-th sync tag in ``t_ps`` (the first sync Bob saw is frame 0);
    ``mu`` the mean photon number of each class. The coarse (slot) search
    uses the first ``coarse_frames`` frames (thousands of clicks give a peak
    far above the noise; more only costs FFT time), more (doubling, up to all frames given and
    ``MAX_COARSE_SLOTS`` slots) for a detector whose peak is not clear; the fine fit uses all.
    ``afterpulse_residual``: the afterpulse probability per click the afterpulse guard may leave.
    Raise :class:`TimingError` naming what is missing (syncs, clicks, a flat pattern, a clear
    correlation peak).
    """
    t = np.asarray(t_ps, dtype=np.int64)
    ch = np.asarray(channel, dtype=np.uint8)
    if t.shape != ch.shape or t.ndim != 1:
        raise ValueError("t_ps/channel: need two 1-d arrays of equal length")
    if frame_slots < 1 or not clock_hz > 0:
        raise ValueError(f"frame_slots/clock_hz: need positive values, got {frame_slots}, {clock_hz}")
    if len(mu) != 3:
        raise ValueError(f"mu: need 3 mean photon numbers, got {mu!r}")
    if not 0 < afterpulse_residual < 1:
        raise ValueError(f"afterpulse_residual: must lie in (0, 1), got {afterpulse_residual}")
    nominal = 1e12 / clock_hz
    syncs = t[ch == 0]
    if syncs.size < 2:
        raise TimingError(f"need at least 2 sync tags (channel 0), got {syncs.size}")
    idx, slope, icpt, rms = _sync_fit(syncs, nominal * frame_slots)
    # the fitted line, not each raw sync tag: it averages the sync's own jitter over all frames
    sync_fit = syncs[0] + icpt + slope * idx.astype(np.float64)
    period = slope / frame_slots
    if len(intensities) < 1:
        raise TimingError("intensities: need Alice's pattern of at least one frame")
    n_coarse = max(1, min(int(coarse_frames), len(intensities)))
    weights: dict[int, np.ndarray] = {}

    def weight_for(frames: int) -> np.ndarray:
        if frames not in weights:
            w = np.concatenate([np.asarray(mu, np.float64)[np.asarray(x, np.uint8)]
                                for x in intensities[:frames]]).astype(np.float32)
            w -= w.mean()
            if not np.any(w):
                raise TimingError("intensities: Alice's pattern has one intensity only, nothing to correlate")
            weights[frames] = w
        return weights[frames]

    # the coarse search may grow to more frames when a detector's peak is not clear (few clicks, e.g. the
    # weak arm of a biased receiver at 100 km), doubling up to the frames given, within MAX_COARSE_SLOTS
    max_coarse = max(n_coarse, min(len(intensities), MAX_COARSE_SLOTS // max(int(frame_slots), 1)))
    weight_for(n_coarse)
    res = {k: [] for k in ("off", "k", "ph", "se", "sig", "n", "z", "gap", "gap_n")}
    floors = []
    aps: list[AfterpulseFit] = []
    for d in range(4):
        td = t[ch == d + 1]
        f = np.searchsorted(syncs, td, side="right") - 1
        ok = f >= 0
        td, f = td[ok], f[ok]
        if td.size < MIN_CLICKS:
            raise TimingError(f"detector {'HVDA'[d]} (channel {d + 1}): {td.size} clicks after the first "
                              f"sync, need at least {MIN_CLICKS}")
        rel = (td - syncs[0]).astype(np.float64) - (sync_fit[f] - syncs[0])
        phase, se, sigma, floor, n_core = _phase(rel, period)
        n_slot = np.rint((rel - phase) / period).astype(np.int64)
        g = idx[f] * frame_slots + n_slot
        frames = n_coarse
        k, z, z_next = _coarse(g[idx[f] < frames + 1], weight_for(frames))
        while z - z_next < MIN_PEAK_MARGIN and frames < max_coarse:
            frames = min(2 * frames, max_coarse)
            k, z, z_next = _coarse(g[idx[f] < frames + 1], weight_for(frames))
        if z - z_next < MIN_PEAK_MARGIN:
            raise TimingError(f"detector {'HVDA'[d]} (channel {d + 1}): no clear peak in the correlation "
                              f"of its clicks with Alice's intensity pattern (best lag z {z:.1f}, next "
                              f"{z_next:.1f}; need a margin of {MIN_PEAK_MARGIN:g}): are the patterns those "
                              f"of the frames tagged, and is light reaching Bob? ({td.size} clicks in "
                              f"{frames} frames searched; more frames help if clicks are few)")
        res["off"].append(k * period + phase)
        res["k"].append(k)
        res["ph"].append(phase)
        res["se"].append(se)
        res["sig"].append(sigma)
        res["n"].append(n_core)
        res["z"].append(z)
        gaps = np.diff(g)                          # time-sorted clicks of one detector: slot gaps
        gaps = gaps[gaps > 0]
        k0 = int(gaps.min()) if gaps.size else 0
        res["gap"].append(k0)
        res["gap_n"].append(int(np.count_nonzero(gaps == k0)) if gaps.size else 0)
        aps.append(fit_afterpulses(gaps, period, residual=afterpulse_residual))
        floors.append(floor)
    sig = float(np.sqrt(np.mean(np.square(res["sig"]))))
    floor = float(sum(floors))
    window, frac = optimal_window(sig, float(sum(res["n"])), floor, period, resolution_ps=resolution_ps)
    dead_ns = (max(res["gap"]) * period / 1e3 if min(res["gap_n"]) >= MIN_DEAD_EVIDENCE else None)
    guards = [a.guard_slots for a in aps if a.status == "measured"]
    # a measured detector whose tau is too uncertain for a finite guard: no guard to write
    ap_guard = (max(guards) * period / 1e3 if guards and None not in guards else None)

    def per(attr: str) -> tuple:
        return tuple(float("nan") if getattr(a, attr) is None or a.status != "measured" else
                     float(getattr(a, attr)) for a in aps)
    return TimingCalibration(
        nominal_period_ps=nominal, frame_slots=int(frame_slots), period_ps=period,
        drift_ppm=(period / nominal - 1) * 1e6, sync_rms_ps=rms,
        offsets_ps=tuple(res["off"]), slot_offsets=tuple(int(x) for x in res["k"]),
        phase_ps=tuple(res["ph"]), phase_stderr_ps=tuple(res["se"]), jitter_ps=tuple(res["sig"]),
        clicks=tuple(int(x) for x in res["n"]), coarse_z=tuple(res["z"]), background_per_ps=floor,
        window_ps=window, window_rate_fraction=frac, dead_slots=tuple(res["gap"]),
        dead_evidence=tuple(res["gap_n"]), dead_time_ns=dead_ns, frames=int(idx[-1] + 1),
        data_s=float(idx[-1] + 1) * frame_slots / clock_hz,
        afterpulse_status=tuple(a.status for a in aps), afterpulse_prob=per("p"),
        afterpulse_prob_err=per("p_err"), afterpulse_tau_ns=per("tau_ns"),
        afterpulse_tau_err_ns=per("tau_err_ns"),
        afterpulse_bound=tuple(float(a.p_bound) if a.status == "none_seen" else float("nan") for a in aps),
        afterpulse_residual=float(afterpulse_residual),
        afterpulse_guard_ns=ap_guard)  # type: ignore[arg-type]


# -- saving into the node's lab file ------------------------------------------------------------
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        return repr(float(v))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def save_toml(path: str | Path, section: str, values: dict) -> None:
    """Replace (or append) table ``[section]`` of the TOML file ``path`` with ``values``.

    Other tables and comments are kept as they are; the result is re-read with
    ``tomllib`` to make sure the file stays valid.
    """
    import tomllib

    p = Path(path)
    text = p.read_text() if p.exists() else ""
    head = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")
    out, skip = [], False
    for line in text.splitlines():
        m = head.match(line)
        if m:
            skip = m.group(1).strip() == section
        if not skip:
            out.append(line)
    while out and not out[-1].strip():
        out.pop()
    block = [f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    new = "\n".join(out + ([""] if out else []) + block) + "\n"
    tomllib.loads(new)
    p.write_text(new)


def timing_section(cal: TimingCalibration) -> dict:
    """The values written to the lab file (everything in the result, floats as floats)."""
    d = asdict(cal)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if v is not None}

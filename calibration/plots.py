"""PNG reports of the calibrations (``qkd calibrate ... --plot FILE``), drawn with matplotlib.

What it is for: a lab engineer's picture of what a calibration did -- the QBER in both bases and the
controller settings against measurement step (alignment) or link time (tracking), and the detection
time histograms per detector with the fitted window (timing). What it must not do: be needed by
anything else. matplotlib is an optional extra (``pip install 'qkd-link[plot]'``), imported only
here and only when a plot is asked for; without it :func:`require_matplotlib` raises a
:class:`PlotError` that says how to install it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["PlotError", "plot_alignment", "plot_timing", "plot_tracking", "require_matplotlib"]


class PlotError(RuntimeError):
    """A plot was asked for and cannot be drawn (matplotlib missing, nothing to plot)."""


def require_matplotlib():
    """matplotlib.pyplot on the file-only Agg backend, or PlotError naming the extra to install."""
    try:
        import matplotlib
    except ImportError:
        raise PlotError("--plot needs matplotlib, an optional extra: pip install 'qkd-link[plot]' "
                        "(or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    p = Path(path)
    fig.savefig(p, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return p


def plot_alignment(history, path, *, unit: str = "", title: str = "polarization alignment") -> Path:
    """``history``: (settings, qber_z, qber_x) per measurement (``AlignResult.history``)."""
    if not history:
        raise PlotError("nothing to plot: the alignment made no measurement")
    plt = require_matplotlib()
    x = np.array([np.asarray(h[0], float) for h in history])
    q = np.array([[h[1], h[2]] for h in history]) * 100
    step = np.arange(1, len(history) + 1)
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    a.semilogy(step, np.maximum(q[:, 0], 1e-3), ".-", label="QBER Z")
    a.semilogy(step, np.maximum(q[:, 1], 1e-3), ".-", label="QBER X")
    a.set_ylabel("QBER (%)")
    a.legend()
    a.set_title(title)
    for i in range(x.shape[1]):
        b.plot(step, x[:, i], ".-", label=f"actuator {i + 1}")
    b.set_xlabel("measurement")
    b.set_ylabel(f"setting ({unit})" if unit else "setting")
    b.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def plot_tracking(records, path, *, block_s: float, unit: str = "",
                  true_extra: np.ndarray | None = None) -> Path:
    """``records``: ``calibration.tracking.TrackRecord`` per block; ``true_extra`` (optional, an
    emulation's truth): extra QBER per block in Z and X."""
    if not records:
        raise PlotError("nothing to plot: no tracked blocks")
    plt = require_matplotlib()
    t = np.arange(len(records)) * block_s
    q = np.array([[r.qber_z, r.qber_x] for r in records]) * 100
    x = np.array([r.settings for r in records])
    fig, (a, b) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    a.plot(t, q[:, 0], lw=0.5, label="measured QBER Z")
    a.plot(t, q[:, 1], lw=0.5, label="measured QBER X")
    if true_extra is not None:
        e = np.asarray(true_extra)[: len(t)] * 100
        a.plot(t[: len(e)], e[:, 0], lw=1, label="extra QBER Z (truth)")
        a.plot(t[: len(e)], e[:, 1], lw=1, label="extra QBER X (truth)")
    a.set_ylabel("QBER (%)")
    a.legend(fontsize="small")
    a.set_title("polarization tracking")
    for i in range(x.shape[1]):
        b.plot(t, x[:, i], lw=0.8, label=f"actuator {i + 1}")
    b.set_xlabel("link time (s)")
    b.set_ylabel(f"setting ({unit})" if unit else "setting")
    b.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def plot_timing(t_ps: np.ndarray, channel: np.ndarray, cal, path) -> Path:
    """Histograms of each detector's tag times relative to its fitted phase (``cal``: a
    ``TimingCalibration``), with the detection window drawn around zero."""
    plt = require_matplotlib()
    t = np.asarray(t_ps, np.int64)
    c = np.asarray(channel)
    syncs = t[c == 0]
    if syncs.size == 0:
        raise PlotError("nothing to plot: no sync tags")
    period = float(cal.period_ps)
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), sharex=True)
    half = cal.window_ps / 2
    for d, ax in enumerate(axes.flat):
        td = t[(c == d + 1) & (t >= syncs[0])]
        i = np.searchsorted(syncs, td, side="right") - 1
        ph = np.mod((td - syncs[i]).astype(float), period)
        rel = np.mod(ph - cal.phase_ps[d] + period / 2, period) - period / 2
        ax.hist(rel, bins=200, range=(-period / 2, period / 2), histtype="step")
        ax.axvspan(-half, half, alpha=0.2, color="tab:green", label=f"window {cal.window_ps:.0f} ps")
        ax.set_yscale("log")
        ax.set_title(f"detector {'HVDA'[d]}: jitter {cal.jitter_ps[d]:.1f} ps", fontsize="small")
        ax.legend(fontsize="x-small")
    for ax in axes[1]:
        ax.set_xlabel("time from fitted phase (ps)")
    fig.suptitle(f"timing: {cal.frames} frames, drift {cal.drift_ppm:+.3f} ppm")
    fig.tight_layout()
    return _save(fig, path)

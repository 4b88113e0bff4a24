"""``qkd calibrate ... --plot``: PNGs when matplotlib is installed (the optional [plot] extra), a clear
error when it is not."""

from __future__ import annotations

import builtins
import io
from contextlib import redirect_stdout

import numpy as np
import pytest

from calibration import plots
from link.cli import main


def test_missing_matplotlib_is_a_clear_error(monkeypatch, tmp_path):
    real = builtins.__import__

    def no_mpl(name, *a, **k):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    with pytest.raises(plots.PlotError, match=r"qkd-link\[plot\]"):
        plots.require_matplotlib()
    out = io.StringIO()
    with redirect_stdout(out):
        rc = main(["calibrate", "tracking", "--seconds", "0.1", "--plot", str(tmp_path / "t.png")])
    assert rc == 2 and "matplotlib" in out.getvalue()
    assert not (tmp_path / "t.png").exists()


def _png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_tracking_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out = io.StringIO()
    with redirect_stdout(out):
        rc = main(["calibrate", "tracking", "--seconds", "2", "--seed", "2",
                   "--plot", str(tmp_path / "t.png")])
    assert rc == 0, out.getvalue()
    assert "extra QBER mean" in out.getvalue() and _png(tmp_path / "t.png")


def test_alignment_and_timing_plots(tmp_path):
    pytest.importorskip("matplotlib")
    hist = [(np.array([0.0, 10.0 * k, 5.0, 1.0]), 0.1 / (k + 1), 0.08 / (k + 1)) for k in range(20)]
    assert _png(plots.plot_alignment(hist, tmp_path / "a.png", unit="mV"))
    with pytest.raises(plots.PlotError, match="no measurement"):
        plots.plot_alignment([], tmp_path / "b.png")
    from calibration.timing import calibrate_timing
    from hil.model import LinkModel
    from hil.scenario import Scenario
    from hil.tagger import TagStream

    m = LinkModel(Scenario.load("metro-25km").with_overrides({"source.frame_slots": 1 << 16}), 3)
    st = TagStream()
    ts, cs, pats = [], [], []
    for f in range(12):
        r = m.run_frame(f)
        t, c = st.push(r.tag_t_ps, r.tag_channel, m.earliest_tag_ps(f + 1))
        ts.append(t)
        cs.append(c)
        pats.append(m.alice_pattern(f).intensity)
    t, c = np.concatenate(ts), np.concatenate(cs)
    keep = t < t[np.flatnonzero(c == 0)[10]]
    cal = calibrate_timing(t[keep], c[keep], pats[:10], frame_slots=m.frame_slots, clock_hz=m.clock_hz,
                           mu=tuple(m.mu))
    assert _png(plots.plot_timing(t[keep], c[keep], cal, tmp_path / "timing.png"))

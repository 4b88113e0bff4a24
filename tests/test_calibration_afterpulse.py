"""Afterpulsing measured by the timing calibration (``calibration.afterpulse``, from
``calibrate_timing``'s slot gaps), and the guard it gives used by Bob.

* The fit on gaps drawn from its own model (seconds): p and tau within 4 standard errors for
  several (p, tau, dead time), and standard errors that are errors (the spread over seeds).
* On the physical model at 100 km (detectors dead 20 ns, afterpulse probability 0.1, release
  time 50 ns; 160 frames of 2^18 slots): ``calibrate_timing`` recovers p within 4 standard
  errors plus the 5 % the docstring allows for clicks within a release time (q tau ~ 0.05 here),
  tau likewise; the guard it writes covers the true need (20 + 50 ln(0.1 / 1e-4) = 365 ns), and
  Bob's slotter with ``cal.timing()`` is quiet where the dead time alone alarms.
* No afterpulses (the rig's detectors): none seen, a bound, no guard written, the dead time as
  before. Too few clicks: "not measured", no guess.
* The lab file: ``afterpulse_guard_ns`` is written, checked on load, and ``qkd bob`` takes the
  longer guard.
"""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest

from calibration.afterpulse import MIN_GAPS, fit_afterpulses
from calibration.timing import calibrate_timing, save_toml, timing_section
from drivers.config import ConfigError as LabError
from drivers.config import load_lab
from hil.model import LinkModel
from hil.scenario import Scenario
from hil.tagger import TagStream
from link.config import load_node_file
from link.frontend import Timing
from link.slotting import Slotter

AP = {"detectors.dead_time_ns": 20.0, "detectors.afterpulse_prob": 0.1,
      "detectors.afterpulse_time_constant_ns": 50.0}


def _model_gaps(rng, n, q, p, tau_slots, dead_slots):
    """Gaps of the fit's own model: geometric background after the dead time, and with
    probability p a release at dead + Exp(tau) (in slots, rounded up) if it comes first."""
    bg = dead_slots + rng.geometric(q, n) - 1
    rel = np.maximum(dead_slots, np.ceil(dead_slots - 0.5 + rng.exponential(tau_slots, n))).astype(np.int64)
    has = rng.random(n) < p
    return np.where(has, np.minimum(bg, rel), bg)


# (the last: a slow, weak release needs background clicks rarer than the release time, q tau
# 0.1; at q tau 0.4 it is not told apart from the background, and the fit says "none_seen")
@pytest.mark.parametrize("p, tau, dead, q", [(0.1, 50.0, 20, 2e-3), (0.05, 50.0, 20, 2e-3),
                                             (0.02, 200.0, 100, 5e-4)])
def test_fit_recovers_its_own_model(p, tau, dead, q):
    rng = np.random.default_rng(int(p * 1000) + dead)
    f = fit_afterpulses(_model_gaps(rng, 100_000, q, p, tau, dead), 1000.0)
    assert f.status == "measured" and f.dead_slots == dead
    assert abs(f.p - p) < 4 * f.p_err and f.p_err < 0.15 * p, (f.p, f.p_err)
    assert abs(f.tau_ns - tau) < 4 * f.tau_err_ns and f.tau_err_ns < 0.25 * tau, (f.tau_ns, f.tau_err_ns)
    # the guard leaves < 1e-4 per click with the true p and tau
    assert p * math.exp(-(f.guard_slots - dead) / tau) < 1e-4


def test_standard_errors_are_the_spread_over_seeds():
    fits = [fit_afterpulses(_model_gaps(np.random.default_rng(s), 20_000, 2e-3, 0.08, 30.0, 20), 1000.0)
            for s in range(12)]
    ps = np.array([f.p for f in fits])
    errs = np.array([f.p_err for f in fits])
    # 12 fits: their spread within a factor ~1.6 of the stated error (chi-square(11) at 1 %: 0.3 - 2.2)
    assert 0.3 < ps.var(ddof=1) / np.mean(errs ** 2) < 2.2, (ps.std(ddof=1), errs.mean())


def test_no_afterpulses_gives_a_bound_and_too_few_gives_nothing():
    rng = np.random.default_rng(4)
    f = fit_afterpulses(20 + rng.geometric(2e-3, 40_000) - 1, 1000.0)
    assert f.status == "none_seen" and f.p is None and f.guard_slots is None
    assert 0 < f.p_bound < 0.01 and "no afterpulses seen" in f.describe(1000.0)
    f = fit_afterpulses(_model_gaps(rng, MIN_GAPS - 1, 2e-3, 0.1, 50.0, 20), 1000.0)
    assert f.status == "too_few" and f.p is None and "not measured" in f.describe(1000.0)
    with pytest.raises(ValueError, match="residual"):
        fit_afterpulses(np.arange(1, 10), 1000.0, residual=0.0)


def _calibrate(over: dict, frames: int, seed: int = 2):
    # frames of 2^18 slots (262 us): the 100 km flight time (~0.5 ms) is then two frames, within
    # the frames the coarse search starts with
    sc = Scenario.load("long-100km").with_overrides({"source.frame_slots": 1 << 18, **over})
    m = LinkModel(sc, seed=seed)
    stream = TagStream()
    ts, cs, pats = [], [], []
    for f in range(frames):
        r = m.run_frame(f)
        pats.append(m.alice_pattern(f).intensity)
        t, c = stream.push(r.tag_t_ps, r.tag_channel, m.earliest_tag_ps(f + 1))
        ts.append(t)
        cs.append(c)
    t, c = stream.flush()
    t, c = np.concatenate(ts + [t]), np.concatenate(cs + [c])
    cal = calibrate_timing(t, c, pats, frame_slots=m.frame_slots, clock_hz=sc.source.clock_hz)
    return cal, m, t, c


def test_calibration_measures_the_models_afterpulses_and_the_guard_covers_them():
    cal, m, t, c = _calibrate(AP, 160)
    assert cal.afterpulse_status == ("measured",) * 4, cal.summary()
    for d in range(4):
        p, pe = cal.afterpulse_prob[d], cal.afterpulse_prob_err[d]
        tau, te = cal.afterpulse_tau_ns[d], cal.afterpulse_tau_err_ns[d]
        assert abs(p - 0.1) < 4 * pe + 0.005 and pe < 0.01, (d, p, pe)
        assert abs(tau - 50.0) < 4 * te + 2.5 and te < 10.0, (d, tau, te)
    # at 100 km the shortest gap (20 slots) is too rare for dead_time_ns's evidence; the
    # afterpulse guard, at least that gap, is the guard all the same
    assert min(cal.dead_slots) == 20 and max(cal.dead_slots) <= 21 and cal.dead_time_ns is None
    assert 365.0 <= cal.afterpulse_guard_ns < 600.0, cal.afterpulse_guard_ns
    assert "afterpulse guard" in cal.summary() and "release tau" in cal.summary()
    tm = cal.timing()
    assert tm.dead_time_ps == pytest.approx(cal.afterpulse_guard_ns * 1e3)
    # Bob with that guard: his afterpulse check is quiet; with the dead time alone it alarms
    exact = Timing.for_model(m)
    for guard_ps, quiet in ((tm.dead_time_ps, True), (exact.dead_time_ps, False)):
        sl = Slotter(exact.frame_slots, exact.period_ps, exact.offsets_ps, exact.window_ps,
                     dead_time_ps=guard_ps)
        sl.push(t, c)
        assert (sl.afterpulse_check() is None) == quiet


def test_calibration_without_afterpulses_writes_no_guard(tmp_path):
    cal, *_ = _calibrate({"detectors.dead_time_ns": 20.0}, 80)
    assert cal.afterpulse_status == ("none_seen",) * 4, cal.summary()
    assert cal.afterpulse_guard_ns is None and min(cal.dead_slots) == 20
    assert all(0 < b < 0.02 for b in cal.afterpulse_bound) and "no afterpulses seen" in cal.summary()
    path = tmp_path / "lab.toml"
    save_toml(path, "bob.timing", timing_section(cal))
    rec = tomllib.loads(path.read_text())["bob"]["timing"]
    assert "afterpulse_guard_ns" not in rec and rec["afterpulse_status"] == ["none_seen"] * 4
    assert all(math.isnan(x) for x in rec["afterpulse_prob"])


def test_too_few_clicks_is_said_not_guessed():
    cal, *_ = _calibrate(AP, 16)                 # ~3500 gaps on H and V, ~500 on D and A
    assert cal.afterpulse_status[2:] == ("too_few",) * 2, cal.summary()
    assert all(math.isnan(p) for p in cal.afterpulse_prob[2:])
    assert cal.summary().count("afterpulsing not measured: too few gaps") == 2


def test_calibrate_timing_cli_refuses_a_bad_residual(capsys):
    from link.cli import main

    assert main(["calibrate", "timing", "--frames", "4", "--afterpulse-residual", "0"]) == 1
    assert "afterpulse_residual: must lie in (0, 1), got 0.0" in capsys.readouterr().out


LAB = """[lab]
name = "t"

[bob.time_tagger]
driver = "picoquant_stream"
resource = "127.0.0.1:1"
"""

NODE = """[node]
role = "bob"
link_id = "L"
psk = "bob.psk"
store = "bob.db"
[channel]
proto = "tcp://127.0.0.1:7100"
ctrl = "tcp://127.0.0.1:7101"
[frontend]
lab = "lab.toml"
instrument = "time_tagger"
frame_slots = 4096
clock_hz = 1e9
"""

RECORD = {"nominal_period_ps": 1000.0, "frame_slots": 4096, "offsets_ps": [1.0, 2.0, 3.0, 4.0],
          "window_ps": 205.0, "dead_time_ns": 20.0}


def test_bob_takes_the_afterpulse_guard_from_the_lab_file(tmp_path, capsys):
    from link.commands import _bob_timing

    lab = tmp_path / "lab.toml"
    lab.write_text(LAB)
    node = tmp_path / "bob.toml"
    node.write_text(NODE)
    save_toml(lab, "bob.timing", {**RECORD, "afterpulse_guard_ns": 413.0})
    _, _, dead = _bob_timing(load_node_file(node), load_lab(lab))
    assert dead == 413.0 and "afterpulse_guard_ns" in capsys.readouterr().out
    # the node file's own dead time wins, with a warning naming the longer guard
    node.write_text(NODE + "dead_time_ns = 25.0\n")
    _, _, dead = _bob_timing(load_node_file(node), load_lab(lab))
    out = capsys.readouterr().out
    assert dead == 25.0 and "warning" in out and "afterpulse_guard_ns = 413" in out
    save_toml(lab, "bob.timing", {**RECORD, "afterpulse_guard_ns": -1.0})
    with pytest.raises(LabError, match="afterpulse_guard_ns"):
        load_lab(lab)

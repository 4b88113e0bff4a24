"""Bob's afterpulse self-check (``link.slotting.Slotter.afterpulse_check``).

On the physical model with afterpulsing detectors (dead 20 ns, afterpulse probability 0.1 or
0.05, release time 50 ns): a guard of the dead time alone alarms, naming a detector; a guard
that covers the release (400 ns: 0.1 e^-(380/50) ~ 5e-5 per click left beyond it) is quiet on
the same tags. Detectors without afterpulses (the rig's scenarios) are quiet, also across the
check's window restarts. The Chernoff bound it rests on is checked against the exact binomial
tail, and its false-alarm rate on memoryless clicks at a lax level; the C band counts against
numpy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from hil.model import LinkModel
from hil.scenario import Scenario
from link import slotting
from link.frontend import Timing
from link.slotting import Slotter, binomial_upper_bound
from postproc_c.slotting import GapCounter

AFTERPULSING = {"detectors.dead_time_ns": 20.0, "detectors.afterpulse_time_constant_ns": 50.0}


def _slotter(scenario: str, guard_ns: float, frames: int, ap_prob: float = 0.0, seed: int = 3,
             check_every: int | None = None) -> tuple[Slotter, list]:
    over = {"source.frame_slots": 1 << 16}
    if ap_prob:
        over |= AFTERPULSING | {"detectors.afterpulse_prob": ap_prob}
    m = LinkModel(Scenario.load(scenario).with_overrides(over), seed=seed)
    tm = Timing.for_model(m)
    sl = Slotter(tm.frame_slots, tm.period_ps, tm.offsets_ps, tm.window_ps, dead_time_ps=guard_ns * 1e3)
    verdicts = []
    for f in range(frames):
        r = m.run_frame(f)
        sl.push(r.tag_t_ps, r.tag_channel)
        if check_every and (f + 1) % check_every == 0:
            verdicts.append(sl.afterpulse_check())
    return sl, verdicts


@pytest.mark.parametrize("ap_prob", [0.1, 0.05])
def test_a_guard_of_the_dead_time_alone_alarms(ap_prob):
    # 100 km: few background clicks within a guard length, so the afterpulses stand out; 640
    # frames of 2^16 slots = 42 us of link time, ~0.5 s here
    sl, _ = _slotter("long-100km", 20.0, 640, ap_prob)
    why = sl.afterpulse_check()
    assert why is not None and "afterpulses come after the dead-time guard" in why, why
    assert why.startswith("detector H") or why.startswith("detector V")     # the busiest first
    assert sl.dead_time_check() is None                  # the dead time itself is covered


def test_a_guard_covering_the_afterpulses_is_quiet_on_the_same_tags():
    sl, _ = _slotter("long-100km", 400.0, 640, 0.1)
    st = sl.stats
    assert min(st.ap_ref_from[:2]) > 5000               # the check had gaps to judge
    assert sl.afterpulse_check() is None


@pytest.mark.parametrize("scenario, dead_ns", [("long-100km", 25.0), ("metro-25km", 25.0),
                                                ("back-to-back", 10.0)])
def test_detectors_without_afterpulses_are_quiet(scenario, dead_ns):
    # back to back: ~1.7e6 gaps on H in 640 frames, so its window restarts once on the way
    sl, verdicts = _slotter(scenario, dead_ns, 640, check_every=64)
    assert verdicts == [None] * 10
    assert max(sl.stats.ap_ref_from) > 4000


def _first_alarm_frame(window_gaps: int, monkeypatch) -> int | None:
    monkeypatch.setattr(slotting, "AFTERPULSE_WINDOW_GAPS", window_gaps)
    sc = Scenario.load("back-to-back").with_overrides({"source.frame_slots": 1 << 16,
                                                       "detectors.dead_time_ns": 20.0})
    m = LinkModel(sc, seed=5)
    sl = Timing.for_model(m).slotter()
    for f in range(1000):
        if f == 600:          # detector D starts afterpulsing on the running link (bias raised)
            m.set_detector(2, afterpulse_prob=0.1, afterpulse_time_constant_ns=50.0)
        r = m.run_frame(f)
        sl.push(r.tag_t_ps, r.tag_channel)
        if f % 50 == 49 and sl.afterpulse_check() is not None:
            assert f >= 600                              # never before the afterpulses start
            return f
    return None


def test_the_window_restarts_so_afterpulsing_that_starts_later_is_caught_sooner(monkeypatch):
    # each passed check on a full window starts a new one, so the clean gaps of the first 600
    # frames do not dilute the afterpulses that come after (a window of 2e5 gaps here: D has
    # ~6e5 before the change; 1e6 in the node)
    restarted = _first_alarm_frame(200_000, monkeypatch)
    kept_all = _first_alarm_frame(10**12, monkeypatch)
    assert restarted is not None and (kept_all is None or restarted < kept_all), (restarted, kept_all)


@pytest.mark.parametrize("k, n", [(0, 10), (3, 50), (40, 100), (900, 1000), (5000, 100_000)])
@pytest.mark.parametrize("level", [2.0, 10.0, 30.0])
def test_binomial_upper_bound_holds_against_the_exact_tail(k, n, level):
    # P(X <= k | pi_up) <= e^-level: the true pi is above pi_up with at most that probability
    up = binomial_upper_bound(k, n, level)
    assert k / n <= up <= 1.0
    if up < 1.0:
        assert binom.cdf(k, n, up) <= math.exp(-level) * (1 + 1e-6)
        # and it is not loose by more than the Chernoff bound's own slack (within 1 / sqrt(n) of exact)
        assert binom.cdf(k, n, max(k / n, up - 3 / math.sqrt(n))) > math.exp(-level)


def test_false_alarms_of_memoryless_clicks_stay_below_the_bound():
    # a lax level (e^-2 per check) to count false alarms in seconds: 200 independent streams of
    # one detector clicking with probability q per slot after a dead time, no afterpulses
    rng = np.random.default_rng(7)
    period, window, dead_slots, q = 1000.0, 800.0, 20, 0.01
    alarms = 0
    for _ in range(200):
        gaps = dead_slots + rng.geometric(q, 20_000) - 1
        t = np.cumsum(gaps).astype(np.int64) * int(period)
        sl = Slotter(1 << 40, period, (0.0, 0.0, 0.0, 0.0), window, dead_time_ps=dead_slots * period)
        sl.push(t, np.ones(t.size, np.uint8))
        alarms += sl.afterpulse_check(log_false_alarm=2.0) is not None
    assert alarms <= 200 * math.exp(-2.0)                # 27; Chernoff is loose: far fewer come
    # and with afterpulses (p 0.1, release 10 slots) on such a stream the same check alarms
    gaps = dead_slots + rng.geometric(q, 20_000) - 1
    ap = rng.random(gaps.size) < 0.1
    gaps[ap] = np.minimum(gaps[ap], dead_slots + 1 + rng.geometric(0.1, ap.sum()))
    t = np.cumsum(gaps).astype(np.int64) * int(period)
    sl = Slotter(1 << 40, period, (0.0, 0.0, 0.0, 0.0), window, dead_time_ps=dead_slots * period)
    sl.push(t, np.ones(t.size, np.uint8))
    assert sl.afterpulse_check() is not None


def test_band_counts_in_c_match_numpy():
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.integers(0, 40_000, 50_000)).astype(np.int64)
    ch = rng.integers(0, 6, t.size).astype(np.uint8)            # 0 and 5 are not detectors
    edges = (11_400.0, 22_400.0, 55_400.0, 99_400.0)
    gc = GapCounter()
    half = t.size // 2
    g1, b1, s1 = gc.count_bands(t[:half], ch[:half], edges)
    g2, b2, s2 = gc.count_bands(t[half:], ch[half:], edges)
    for d in range(4):
        gd = np.diff(t[ch == d + 1])
        assert g1[d] + g2[d] == gd.size and s1[d] + s2[d] == int(gd.sum())
        for e, edge in enumerate(edges):
            assert b1[e][d] + b2[e][d] == int(np.count_nonzero(gd < edge))
    with pytest.raises(ValueError, match="edges_ps"):
        gc.count_bands(t, ch, (2.0, 1.0))
    with pytest.raises(ValueError, match="edges_ps"):
        gc.count_bands(t, ch, ())
    assert slotting.AFTERPULSE_REF_BANDS == 4                   # the docstring's 4B and 8B


def test_c_gap_bands_refuse_bad_edges_with_a_status():
    from postproc_c._binding import ffi, lib

    t, ch = np.array([0, 5], np.int64), np.array([1, 1], np.uint8)
    last, has = np.zeros(4, np.int64), np.zeros(4, np.uint8)
    gaps, below, total = np.zeros(4, np.uint64), np.zeros(32, np.uint64), np.zeros(4, np.uint64)

    def call(edges, n_edges=None):
        e = np.asarray(edges, np.float64)
        p = [ffi.cast(c, ffi.from_buffer(a)) for c, a in (
            ("int64_t *", t), ("uint8_t *", ch), ("double *", e if e.size else np.zeros(1)),
            ("int64_t *", last), ("uint8_t *", has), ("uint64_t *", gaps), ("uint64_t *", below),
            ("uint64_t *", total))]
        return lib.qpp_slot_gap_bands(p[0], p[1], 2, p[2], e.size if n_edges is None else n_edges,
                                      *p[3:])

    assert call([]) == lib.QPP_ERR_LENGTH
    assert call(np.zeros(lib.QPP_SLOT_MAX_EDGES + 1)) == lib.QPP_ERR_LENGTH
    assert call([2.0, 1.0]) == lib.QPP_ERR_VALUE
    assert call([float("nan")]) == lib.QPP_ERR_VALUE
    assert call([3.0, 10.0]) == lib.QPP_OK and gaps[0] == 1 and below[:8].tolist()[::4] == [0, 1]
    assert lib.qpp_slot_gap_bands(ffi.NULL, ffi.NULL, 1, ffi.NULL, 1, ffi.NULL, ffi.NULL, ffi.NULL,
                                  ffi.NULL, ffi.NULL) == lib.QPP_ERR_NULL

"""Slotting recovers, from tagger timestamps alone, the slots the physical model clicked."""

from __future__ import annotations

import numpy as np
import pytest

from hil.model import LinkModel
from hil.scenario import Scenario
from link.slotting import Slotter


def _model(drift_ppm: float = 0.0, jitter_ps: float = 30.0) -> LinkModel:
    sc = Scenario.load("metro-25km").with_overrides({
        "source.frame_slots": 1 << 16,
        "tagger.clock_drift_ppm": drift_ppm,
    })
    m = LinkModel(sc, seed=7)
    for d in range(4):
        m.set_detector(d, jitter_ps=jitter_ps, dark_count_rate_hz=0.0, afterpulse_prob=0.0)
    return m


def _offsets(m: LinkModel) -> tuple[float, ...]:
    # What timing calibration measures: the delays as the tagger's own clock sees them.
    rate = 1.0 + m.tagger.clock_drift_ppm * 1e-6
    return tuple((m.tof_ps + det.delay_ps - m.tagger.sync_delay_ps) * rate for det in m.detectors)


@pytest.mark.parametrize("drift_ppm", [0.0, 40.0, -25.0])
def test_slots_match_the_model_across_frames(drift_ppm):
    m = _model(drift_ppm)
    sl = Slotter(m.frame_slots, m.period_ps, _offsets(m), window_ps=0.8 * m.period_ps)
    results = [m.run_frame(f) for f in range(12)]
    got = []
    for batch in np.array_split(np.arange(12), 4):  # tags delivered in chunks, time-ordered
        t = np.concatenate([results[f].tag_t_ps for f in batch])
        ch = np.concatenate([results[f].tag_channel for f in batch])
        order = np.argsort(t, kind="stable")
        got += sl.push(t[order], ch[order])
    got += sl.flush()
    assert [g.frame_index for g in got] == list(range(12))
    for g, r in zip(got, results):
        live = ~r.tag_lost
        want_slots = np.unique(r.slot[live])
        np.testing.assert_array_equal(g.slots, want_slots)
        want_mask = np.zeros(want_slots.size, np.uint8)
        np.bitwise_or.at(want_mask, np.searchsorted(want_slots, r.slot[live]),
                         (1 << r.detector[live]).astype(np.uint8))
        np.testing.assert_array_equal(g.masks, want_mask)
    assert sl.stats.drift_ppm == pytest.approx(drift_ppm, abs=0.5)


def test_lost_sync_keeps_frame_numbering():
    m = _model()
    sl = Slotter(m.frame_slots, m.period_ps, _offsets(m), window_ps=0.8 * m.period_ps)
    res = [m.run_frame(f) for f in range(5)]
    t = np.concatenate([r.tag_t_ps for r in res])
    ch = np.concatenate([r.tag_channel for r in res])
    order = np.argsort(t, kind="stable")
    t, ch = t[order], ch[order]
    drop = np.flatnonzero(ch == 0)[2]  # lose frame 2's sync
    keep = np.ones(t.size, bool)
    keep[drop] = False
    frames = sl.push(t[keep], ch[keep]) + sl.flush()
    idx = [f.frame_index for f in frames]
    assert idx == [0, 1, 3, 4]
    assert sl.stats.lost_syncs == 1
    np.testing.assert_array_equal(frames[2].slots, np.unique(res[3].slot[~res[3].tag_lost]))


def test_tags_outside_the_window_are_dropped_and_counted():
    # a tag moved half a slot lies 100 ps beyond the +-400 ps window: with 30 ps detector jitter
    # (31 ps with the tagger's) 3.2 sigma, so ~1 in 1500 would stay inside and the exact count
    # below would fail by chance for ~17 % of seeds; at 10 ps (13 ps in all) it is 7.8 sigma.
    # It then lies in the period of slot s or s + 1 (whichever its jitter rounds to) outside its
    # window: dropped, unless that slot has an event of its own, which it joins.
    m = _model(jitter_ps=10.0)
    off = _offsets(m)
    sl = Slotter(m.frame_slots, m.period_ps, off, window_ps=0.8 * m.period_ps)
    r = m.run_frame(0)
    t, ch = r.tag_t_ps.copy(), r.tag_channel
    det = np.flatnonzero(ch > 0)
    moved = np.zeros(t.size, bool)
    moved[det[::10]] = True
    t[moved] += int(m.period_ps // 2)  # half a slot late: between slots
    sync = int(t[ch == 0][0])
    rel = (t[det] - sync - np.asarray(off)[ch[det] - 1]) / m.period_ps
    slot = np.rint(rel)
    event_slots = set(slot[~moved[det]].tolist())          # the unmoved tags: all in their window
    joined = int(sum(s in event_slots for s in slot[moved[det]].tolist()))
    order = np.argsort(t, kind="stable")
    frames = sl.push(t[order], ch[order]) + sl.flush()
    assert 0 < joined < 0.1 * moved.sum()
    assert frames[0].dropped == sl.stats.outside_window == moved.sum() - joined


def test_bad_arguments():
    with pytest.raises(ValueError, match="window_ps"):
        Slotter(16, 1000.0, (0, 0, 0, 0), window_ps=2000.0)
    with pytest.raises(ValueError, match="offsets_ps"):
        Slotter(16, 1000.0, (0, 0, 0), window_ps=500.0)


@pytest.mark.parametrize("offset_ps", [1 << 53, 1 << 59, (1 << 62) + 12345])
def test_slots_do_not_depend_on_how_long_the_tagger_has_run(offset_ps):
    """The same tags after 2.5 hours, a week, or 53 days of tagger clock give the same frames:
    float64 is exact only below 2^53 ps, and converting absolute times moved tags across the
    window's edges (at 2^59 ps a time was only known to 64 ps)."""
    m = _model(jitter_ps=120.0)
    results = [m.run_frame(f) for f in range(6)]
    t = np.concatenate([r.tag_t_ps for r in results])
    ch = np.concatenate([r.tag_channel for r in results])
    order = np.argsort(t, kind="stable")
    t, ch = t[order].astype(np.int64), ch[order]
    frames = {}
    for off in (0, offset_ps):
        sl = Slotter(m.frame_slots, m.period_ps, _offsets(m), window_ps=0.8 * m.period_ps)
        frames[off] = sl.push(t + off, ch) + sl.flush()
        assert sl.stats.kept > 1000
    assert len(frames[0]) == len(frames[offset_ps]) == 6
    for a, b in zip(frames[0], frames[offset_ps]):
        assert a.frame_index == b.frame_index and b.sync_ps == a.sync_ps + offset_ps
        np.testing.assert_array_equal(a.slots, b.slots)
        np.testing.assert_array_equal(a.masks, b.masks)
        assert a.dropped == b.dropped

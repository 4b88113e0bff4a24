"""The dead-time guard of ``link.slotting.Slotter`` (Weier et al. 2011 countermeasure).

An event (a slot with a tag in its window, with all of the slot's tags) is kept only if no
tag of another slot came less than ``dead_time_ps + window_ps`` before the slot's nominal
time; a slot's tags are one event, dropped whole. Checked against a direct reference on
synthetic tag streams (chunked, across frames, with out-of-window tags and double clicks)
and on the physical model, where the guard must remove the bit information a dead detector
gives away.
"""

from __future__ import annotations

import numpy as np
import pytest

from hil.model import LinkModel
from hil.scenario import Scenario
from link.frontend import Timing
from link.slotting import Slotter

PERIOD = 1000.0
WINDOW = 800.0
DEAD = 10_000.0
SLOTS = 4096


def _reference(u, key, win, guard):
    """Per event (a key with a tag in its window): vetoed when a tag of another key lies in
    (nominal time of the slot - guard, nominal time).  Direct O(n^2) over small streams."""
    out = {}
    for k in np.unique(key[win]):
        f, slot = divmod(int(k), SLOTS)
        nominal = (f * SLOTS + slot) * PERIOD
        other = key != k
        out[int(k)] = bool(np.any(other & (u < nominal) & (nominal - u < guard)))
    return out


def _stream(rng, frames, rate=0.03, offsets=(0.0, 130.0, -70.0, 250.0)):
    """Syncs and detector tags of ``frames`` frames: clicks in random slots (some double), jitter
    within the window, and ~5 % of tags in their slot's period outside its window. Returns t,
    channel and, per detector tag, the offset-corrected time, its absolute slot key and whether
    it lies in the window."""
    t, ch, u, key, win = [], [], [], [], []
    for f in range(frames):
        sync = f * SLOTS * PERIOD
        t.append(np.array([sync])), ch.append(np.array([0]))
        slots = np.flatnonzero(rng.random(SLOTS) < rate)
        det = rng.integers(0, 4, slots.size)
        dbl = rng.random(slots.size) < 0.05                  # a second detector in the same slot
        slots = np.concatenate([slots, slots[dbl]])
        det = np.concatenate([det, (det[dbl] + 1 + rng.integers(0, 3, dbl.sum())) % 4])
        jit = rng.uniform(-0.45 * WINDOW, 0.45 * WINDOW, slots.size)
        between = rng.random(slots.size) < 0.05
        jit[between] = rng.choice([-1, 1], between.sum()) * rng.uniform(0.41, 0.49, between.sum()) * PERIOD
        uu = sync + slots * PERIOD + jit
        t.append(np.rint(uu + np.asarray(offsets)[det]).astype(np.int64)), ch.append(det + 1)
        u.append(uu), key.append(f * SLOTS + slots), win.append(~between)
    t, ch = np.concatenate(t).astype(np.int64), np.concatenate(ch).astype(np.uint8)
    order = np.argsort(t, kind="stable")
    det_order = order[ch[order] > 0]
    is_det = ch > 0
    # u/key are per detector tag in the order they were generated; map them to time order
    u_all, key_all, win_all = np.zeros(t.size), np.full(t.size, -2, np.int64), np.zeros(t.size, bool)
    u_all[is_det], key_all[is_det] = np.concatenate(u), np.concatenate(key)
    win_all[is_det] = np.concatenate(win)
    return t[order], ch[order], u_all[det_order], key_all[det_order], win_all[det_order], offsets


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_guard_matches_a_direct_reference_across_chunks_and_frames(seed):
    rng = np.random.default_rng(seed)
    t, ch, u, key, win, offs = _stream(rng, frames=6)
    sl = Slotter(SLOTS, PERIOD, offs, WINDOW, dead_time_ps=DEAD)
    frames = []
    for part in np.array_split(np.arange(t.size), 7):              # tags delivered in chunks
        frames += sl.push(t[part], ch[part])
    frames += sl.flush()
    assert [f.frame_index for f in frames] == list(range(6))
    veto = _reference(u, key, win, DEAD + WINDOW)
    want = np.array(sorted(k for k, v in veto.items() if not v), dtype=np.int64)
    got = np.concatenate([f.frame_index * SLOTS + f.slots.astype(np.int64) for f in frames])
    np.testing.assert_array_equal(got, want)
    n_vetoed = sum(veto.values())
    assert sl.stats.dead_time_vetoed == sum(f.vetoed for f in frames) == n_vetoed
    assert 0.2 < n_vetoed / len(veto) < 0.4                         # ~1 - (1 - 0.03)^11 of them
    # masks of the kept events are whole: every tag of the slot is in it, in its window or not
    for f in frames:
        k = f.frame_index * SLOTS + f.slots.astype(np.int64)
        for kk, m in zip(k[:50], f.masks[:50]):
            dets = ch[ch > 0][key == kk] - 1
            assert int(m) == int(np.bitwise_or.reduce(1 << dets.astype(np.int64)))


def _tags(pairs):
    """A frame of syncs and (time, channel) detector tags, time-ordered."""
    t = np.array([0, SLOTS * PERIOD] + [p[0] for p in pairs], dtype=np.int64)
    ch = np.array([0, 0] + [p[1] for p in pairs], dtype=np.uint8)
    order = np.argsort(t, kind="stable")
    return t[order], ch[order]


def _slot_events(pairs, dead=DEAD):
    sl = Slotter(SLOTS, PERIOD, (0.0, 0.0, 0.0, 0.0), WINDOW, dead_time_ps=dead)
    fr = sl.push(*_tags(pairs)) + sl.flush()
    return {int(s): int(m) for s, m in zip(fr[0].slots, fr[0].masks)}, sl.stats


def test_double_click_is_kept_whole_or_dropped_whole():
    # H and V in slot 100 (a double click): one event, mask 0b11
    ev, st = _slot_events([(100_000 - 300, 1), (100_000 + 300, 2)])
    assert ev == {100: 0b11} and st.dead_time_vetoed == 0
    # a D click 5 slots earlier: the whole double click goes, not only its later tag
    ev, st = _slot_events([(95_000, 3), (100_000 - 300, 1), (100_000 + 300, 2)])
    assert ev == {95: 0b100} and st.dead_time_vetoed == 1


def test_adjacent_slots_closer_than_a_window_still_veto():
    # H late in slot 100, V early in slot 101: 200 ps apart, less than the 800 ps window,
    # but different slots, so V came while H was dead
    ev, _ = _slot_events([(100_000 + 390, 1), (101_000 - 390, 2)])
    assert ev == {100: 0b1}


def test_tags_between_windows_make_detectors_dead_too():
    # a dark count between the windows of slots 99 and 100 is not an event, but its detector
    # was dead at slot 104
    ev, st = _slot_events([(99_500, 1), (104_000, 2)])
    assert ev == {} and st.dead_time_vetoed == 1 and st.outside_window == 1


def test_a_slots_tags_outside_its_window_join_its_event():
    """An event is a slot with a tag in its window and takes all of the slot's tags, so a
    two-photon pulse whose second click misses the window is still a double click: a rule per
    tag kept it with probability w^2 against w for a single click, and Eve, timing her pulses
    at the window's edge, made Bob's cross clicks rarer than his model of them (the passive
    receiver's multi-photon bound, link.finite_key; audit 2026-11-25)."""
    ev, st = _slot_events([(100_000 - 300, 1), (100_000 + 450, 3)])     # D 50 ps past the window
    assert ev == {100: 0b101} and st.outside_window == 0 and st.kept == 2
    ev, st = _slot_events([(100_000 + 450, 3)])                         # alone: no event
    assert ev == {} and st.outside_window == 1


@pytest.mark.parametrize("resid_ps", [-350, 0, 350])
def test_the_guard_is_timed_from_the_slot_not_from_its_tags(resid_ps):
    """The guard's verdict depends on when earlier clicks came, never on the event's own tags:
    timed from the event's earliest tag, a two-detector event (earliest of two jittered tags)
    was vetoed more often than a one-detector event, at the guard's edge (audit 2026-11-25).
    An earlier click 10.9 ns (guard 10.8 ns) before slot 100's nominal time: kept wherever in
    the window its tag lies."""
    ev, st = _slot_events([(100_000 - 10_900, 3), (100_000 + resid_ps, 1)])
    assert 100 in ev and st.dead_time_vetoed == 0
    ev, st = _slot_events([(100_000 - 10_700, 3), (100_000 + resid_ps, 1)])
    assert 100 not in ev and st.dead_time_vetoed == 1


@pytest.mark.parametrize("gap_slots, kept", [(10, False), (11, True), (12, True)])
def test_guard_length_is_dead_time_plus_a_window(gap_slots, kept):
    # guard 10 ns + the 0.8 ns window margin: tags at slot centres 10 slots (10 ns) apart are
    # vetoed, 11 slots (11 ns) apart are not
    ev, _ = _slot_events([(100_000, 1), (100_000 + gap_slots * 1000, 2)])
    assert (100 + gap_slots in ev) is kept


def test_guard_off_keeps_everything():
    ev, st = _slot_events([(100_000, 1), (101_000, 2)], dead=0.0)
    assert ev == {100: 1, 101: 2} and st.dead_time_vetoed == 0


def test_bad_dead_time_is_refused():
    with pytest.raises(ValueError, match="dead_time_ps"):
        Slotter(SLOTS, PERIOD, (0.0, 0.0, 0.0, 0.0), WINDOW, dead_time_ps=-1.0)
    with pytest.raises(ValueError, match="dead_time_ps"):
        Slotter(SLOTS, PERIOD, (0.0, 0.0, 0.0, 0.0), WINDOW, dead_time_ps=float("nan"))


def _model_events(guard: bool):
    sc = Scenario.load("back-to-back").with_overrides({"source.frame_slots": 1 << 16})
    m = LinkModel(sc, seed=11)
    tm = Timing.for_model(m)
    assert tm.dead_time_ps == pytest.approx(max(d.dead_time_ns for d in m.detectors) * 1e3, rel=1e-5)
    sl = Slotter(tm.frame_slots, tm.period_ps, tm.offsets_ps, tm.window_ps,
                 dead_time_ps=tm.dead_time_ps if guard else 0.0)
    out = []
    for f in range(8):
        r = m.run_frame(f)
        out += sl.push(r.tag_t_ps, r.tag_channel)
    out += sl.flush()
    slots = np.concatenate([f.frame_index * m.frame_slots + f.slots.astype(np.int64) for f in out])
    masks = np.concatenate([f.masks for f in out])
    dead_slots = int(np.ceil(max(d.dead_time_ns for d in m.detectors) * 1e3 / m.period_ps - 1e-9))
    return slots, masks, sl.stats, dead_slots      # the model blocks a detector for D - 1 slots


def test_guard_removes_what_a_dead_detector_tells_eve():
    """Back to back (the most clicks per dead time): without the guard, a Z single click that
    follows a Z single click within the dead time is almost never on the same detector (that one
    is dead), so the earlier click tells Eve the later bit. With the guard no such event is left,
    and the next Z click after one is on the same detector about as often as on the other."""
    def after_z_click(slots, masks):
        z1 = (masks == 1) | (masks == 2)
        s, m = slots[z1], masks[z1]
        gap = np.diff(s)
        same = m[1:] == m[:-1]
        return gap, same

    slots, masks, st, dead_slots = _model_events(guard=False)
    gap, same = after_z_click(slots, masks)
    close = gap < dead_slots
    assert close.sum() > 1000 and st.dead_time_vetoed == 0
    assert same[close].mean() == 0.0                     # the bit is known to Eve
    slots, masks, st, dead_slots = _model_events(guard=True)
    gap, same = after_z_click(slots, masks)
    assert st.dead_time_vetoed > 1000 and not np.any(gap < dead_slots)
    near = gap < 4 * dead_slots                          # right after the guard: both detectors live
    assert near.sum() > 1000 and abs(same[near].mean() - 0.5) < 0.05


def _run_slotter(true_dead_ns: float, configured_ns: float, frames: int = 4, scenario="back-to-back"):
    sc = Scenario.load(scenario).with_overrides({"source.frame_slots": 1 << 16,
                                                 "detectors.dead_time_ns": true_dead_ns})
    m = LinkModel(sc, seed=3)
    tm = Timing.for_model(m)
    sl = Slotter(tm.frame_slots, tm.period_ps, tm.offsets_ps, tm.window_ps,
                 dead_time_ps=configured_ns * 1e3)
    for f in range(frames):
        r = m.run_frame(f)
        sl.push(r.tag_t_ps, r.tag_channel)
    return sl


@pytest.mark.parametrize("true_ns, configured", [(10.0, 10.0), (10.0, 25.0), (10.1, 10.1), (11.0, 10.0)])
def test_dead_time_check_is_quiet_when_the_guard_covers_the_dead_time(true_ns, configured):
    # 10.1 ns: the detector is back 11 slots later (clicks come in 1 ns slots), beyond the
    # 10.9 ns guard, which still covers every slot it is dead for; 11 ns set as 10: the guard
    # (10.8 ns) covers slot gaps up to 10, the detector is dead for gaps up to 10 too
    sl = _run_slotter(true_ns, configured)
    assert min(sl.stats.short_gaps[:2]) > 100      # Z: gaps just past the 10 ns are common
    assert sl.dead_time_check() is None


@pytest.mark.parametrize("true_dead_ns", [12.0, 50.0])
def test_dead_time_check_names_a_detector_slower_than_the_setting(true_dead_ns):
    # detectors really dead for 12 ns (or 50) while Bob's node says 10: the guard (10.8 ns:
    # slot gaps up to 10) misses clicks 11 slots after another, and the tags show it: no gap of
    # 11 slots or less (11.4 ns with half a window of jitter)
    sl = _run_slotter(true_dead_ns, 10.0)
    assert sum(sl.stats.short_gaps) == 0 and min(sl.stats.gaps[:2]) > 4000
    why = sl.dead_time_check()
    assert why is not None and "dead_time_ns" in why and "11.4 ns" in why
    # too few clicks to tell: no verdict (one frame at 100 km)
    assert _run_slotter(true_dead_ns, 10.0, frames=1, scenario="long-100km").dead_time_check() is None


def test_dead_time_check_catches_a_dead_time_lengthened_while_running():
    # right at first (10 ns), then the detectors are set to 30 ns on the running link: each
    # passed check starts a new window of gaps, so the old short gaps do not hide the change
    sc = Scenario.load("back-to-back").with_overrides({"source.frame_slots": 1 << 16})
    m = LinkModel(sc, seed=5)
    tm = Timing.for_model(m)
    sl = tm.slotter()
    verdicts = []
    for f in range(8):
        if f == 3:
            for d in range(4):
                m.set_detector(d, dead_time_ns=30.0)
        r = m.run_frame(f)
        sl.push(r.tag_t_ps, r.tag_channel)
        verdicts.append(sl.dead_time_check())
    assert verdicts[:3] == [None] * 3
    assert verdicts[-1] is not None and "longer than the configured" in verdicts[-1]


def test_dead_time_check_survives_a_detector_whose_only_gaps_are_zero():
    # a duplicated tag (the same picosecond twice on one detector, e.g. from a tagger glitch) is
    # that detector's only gap: its sum is 0 ps, which the expected count divided by
    # (ZeroDivisionError in the node's self-check). Zero gaps are short gaps: no alarm.
    for reference in (True, False):
        sl = Slotter(SLOTS, PERIOD, (0.0, 0.0, 0.0, 0.0), WINDOW, dead_time_ps=DEAD, reference=reference)
        sl.push(*_tags([(100_000, 1), (100_000, 1)]))
        assert sl.stats.gaps[0] == 1 and sl.stats.gap_sum_ps[0] == 0
        assert sl.dead_time_check(min_expected=1.0) is None
        assert sl.stats.gaps[0] == 0                   # passed: a new window of gaps

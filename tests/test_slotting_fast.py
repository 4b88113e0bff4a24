"""The C slotting path (postproc_c.slotting, src/slot.c) against the numpy reference
(``Slotter(..., reference=True)``): bit-identical frames (frame index, slots, masks, sync, period,
dropped, vetoed), per push, and identical stats and dead-time verdicts, on the physical model's
tag streams (three scenarios, several seeds, chunked pushes, lost syncs, clock drift, tags
between windows, double clicks, the guard on and off) and on synthetic adversarial streams
(offsets of many slots, ties, window edges, half-slot ties, huge tagger times, syncs out of
order, tags out of order). Then the C entry point is fed garbage: it must refuse bad input with
an error naming it and never crash (tests/test_sanitizers.py runs this file under ASan/UBSan).
"""

from __future__ import annotations

import numpy as np
import pytest

from hil.model import LinkModel
from hil.scenario import Scenario
from link.frontend import Timing
from link.slotting import Slotter
from postproc_c import Error
from postproc_c._binding import ffi, lib
from postproc_c.slotting import slot_close, slot_gaps


def _same_frames(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x.frame_index, x.sync_ps, x.period_ps, x.dropped, x.vetoed) == \
               (y.frame_index, y.sync_ps, y.period_ps, y.dropped, y.vetoed)
        assert x.slots.dtype == y.slots.dtype == np.uint64
        assert x.masks.dtype == y.masks.dtype == np.uint8
        np.testing.assert_array_equal(x.slots, y.slots)
        np.testing.assert_array_equal(x.masks, y.masks)


def _both(t, ch, cuts, args, *, check_every=False, allow_fallback=False):
    """Push the same batches through the reference and the C path; compare everything.
    Returns the C-path slotter."""
    runs = {}
    for ref in (True, False):
        sl = Slotter(*args, reference=ref)
        pushed, verdicts = [], []
        for a, b in zip(cuts[:-1], cuts[1:]):
            pushed.append(sl.push(t[a:b], ch[a:b]))
            if check_every:
                verdicts.append(sl.dead_time_check())
        pushed.append(sl.flush())
        verdicts.append(sl.dead_time_check())
        runs[ref] = (pushed, verdicts, sl)
    (p_ref, v_ref, s_ref), (p_c, v_c, s_c) = runs[True], runs[False]
    assert len(p_ref) == len(p_c)
    for a, b in zip(p_ref, p_c, strict=True):       # same frames out of the same push
        _same_frames(a, b)
    assert s_ref.stats == s_c.stats
    assert v_ref == v_c
    np.testing.assert_array_equal(s_ref._t, s_c._t)
    np.testing.assert_array_equal(s_ref._tail_ps, s_c._tail_ps)
    np.testing.assert_array_equal(s_ref._tail_key, s_c._tail_key)
    assert s_ref._last_tag == s_c._last_tag
    if not allow_fallback:
        assert s_c.fast_fallbacks == 0                  # the C path did the work
    return s_c


def _cuts(rng, n, k):
    inner = np.sort(rng.integers(0, n + 1, k))
    return np.concatenate([[0], inner, [n]]).astype(np.int64)


def _model_stream(scenario, seed, frames, drift_ppm=None, slots=1 << 15):
    over = {"source.frame_slots": slots}
    if drift_ppm is not None:
        over["tagger.clock_drift_ppm"] = drift_ppm
    m = LinkModel(Scenario.load(scenario).with_overrides(over), seed=seed)
    res = [m.run_frame(f) for f in range(frames)]
    t = np.concatenate([r.tag_t_ps for r in res]).astype(np.int64)
    ch = np.concatenate([r.tag_channel for r in res]).astype(np.uint8)
    order = np.argsort(t, kind="stable")
    return t[order], ch[order], Timing.for_model(m)


def _args(tm, guard=True):
    return (tm.frame_slots, tm.period_ps, tm.offsets_ps, tm.window_ps,
            tm.dead_time_ps if guard else 0.0)


@pytest.mark.parametrize("scenario, seed", [("metro-25km", 1), ("metro-25km", 2), ("back-to-back", 3),
                                            ("back-to-back", 4), ("long-100km", 5)])
@pytest.mark.parametrize("guard", [True, False])
def test_model_streams_chunked(scenario, seed, guard):
    t, ch, tm = _model_stream(scenario, seed, frames=6)
    rng = np.random.default_rng(seed)
    syncs = np.flatnonzero(ch == 0)
    # chunks cut at random, right at syncs, and single tags
    cuts = np.unique(np.concatenate([_cuts(rng, t.size, 9), syncs[1:4], syncs[4:5] + 1,
                                     syncs[2:3] - 1]))
    s = _both(t, ch, cuts, _args(tm, guard), check_every=True)
    assert s.stats.frames == 6 and s.stats.kept > 300
    assert (s.stats.dead_time_vetoed > 0) == guard


@pytest.mark.parametrize("drift_ppm", [40.0, -25.0])
def test_model_streams_with_clock_drift_and_lost_syncs(drift_ppm):
    t, ch, tm = _model_stream("metro-25km", 7, frames=7, drift_ppm=drift_ppm)
    keep = np.ones(t.size, bool)
    keep[np.flatnonzero(ch == 0)[[2, 4, 5]]] = False     # lose three syncs (two in a row)
    t, ch = t[keep], ch[keep]
    s = _both(t, ch, _cuts(np.random.default_rng(1), t.size, 5), _args(tm))
    assert s.stats.lost_syncs == 3 and abs(s.stats.drift_ppm - drift_ppm) < 1


def test_model_streams_with_tags_between_windows_and_double_clicks():
    t, ch, tm = _model_stream("back-to-back", 8, frames=5)
    rng = np.random.default_rng(8)
    det = np.flatnonzero(ch > 0)
    t = t.copy()
    t[det[::17]] += int(tm.period_ps // 2)                  # half a slot late: between windows
    dbl = det[::23]                                         # a second detector in the same slot
    t = np.concatenate([t, t[dbl] + rng.integers(-100, 100, dbl.size)])
    ch = np.concatenate([ch, (ch[dbl] % 4 + 1).astype(np.uint8)])
    order = np.argsort(t, kind="stable")
    t, ch = t[order], ch[order]
    s = _both(t, ch, _cuts(rng, t.size, 6), _args(tm))
    assert s.stats.outside_window > 100


def test_dead_time_check_verdicts_match():
    # the guard set shorter than the detectors' dead time: both paths name the detector alike
    sc = Scenario.load("back-to-back").with_overrides({"source.frame_slots": 1 << 16,
                                                       "detectors.dead_time_ns": 50.0})
    m = LinkModel(sc, seed=3)
    tm = Timing.for_model(m)
    res = [m.run_frame(f) for f in range(3)]
    t = np.concatenate([r.tag_t_ps for r in res])
    ch = np.concatenate([r.tag_channel for r in res])
    args = (tm.frame_slots, tm.period_ps, tm.offsets_ps, tm.window_ps, 10_000.0)
    s = _both(t, ch, _cuts(np.random.default_rng(3), t.size, 4), args, check_every=True)
    assert s.dead_time_check() is not None


# -- synthetic adversarial streams ----------------------------------------------------------------
def _adversarial(rng, base_ps=0):
    period = float(rng.choice([1000.0, 997.3, 64.0, rng.uniform(20, 3000)]))
    fs = int(rng.choice([1, 3, 16, 200]))
    window = period * float(rng.choice([1.0, 0.8, 0.3, rng.uniform(0.01, 1)]))
    spread = float(rng.choice([0.0, 0.3, 2.0, 3.0 * fs])) * period
    offsets = tuple(float(x) for x in rng.uniform(-spread, spread, 4))
    if rng.random() < 0.3:
        offsets = tuple(float(round(x)) for x in offsets)
    dead = float(rng.choice([0.0, 0.5, 5.0, 3.0 * fs])) * period
    frames = int(rng.integers(1, 9))
    step = fs * period * (1 + rng.uniform(-1e-4, 1e-4))
    k = np.cumsum(rng.choice([1, 1, 1, 2, 3], frames)) - 1          # some frames have no sync
    syncs = np.rint(k * step).astype(np.int64) + rng.integers(-2, 3, frames)
    parts_t, parts_ch = [syncs], [np.zeros(frames, np.uint8)]
    span = (k[-1] + 2) * step
    n = int(rng.integers(0, 400))
    d = rng.integers(0, 4, n)
    # slot-aligned tags (centred, at the window's edges, at half slots), and uniform noise
    s = rng.integers(-2 * fs, (k[-1] + 2) * fs, n)
    jit = rng.choice([0.0, window / 2, -window / 2, period / 2, -period / 2, 1.0], n)
    jit = np.where(rng.random(n) < 0.3, rng.uniform(-period, period, n), jit)
    tt = np.rint(s * (step / fs) + jit + np.asarray(offsets)[d]).astype(np.int64)
    noise = rng.random(n) < 0.2
    tt[noise] = rng.integers(int(-step), int(span) + 1, noise.sum())
    parts_t.append(tt), parts_ch.append((d + 1).astype(np.uint8))
    dup = rng.integers(0, max(n, 1), n // 5) if n else np.empty(0, np.int64)  # ties, other detectors
    parts_t.append(tt[dup]), parts_ch.append(((d[dup] + 1 + rng.integers(0, 4, dup.size)) % 4 + 1)
                                             .astype(np.uint8))
    m = int(rng.integers(0, 10))                                  # channels that are not detectors
    parts_t.append(rng.integers(0, int(span) + 1, m)), parts_ch.append(rng.integers(5, 256, m)
                                                                          .astype(np.uint8))
    t = np.concatenate(parts_t).astype(np.int64) + base_ps
    ch = np.concatenate(parts_ch).astype(np.uint8)
    order = np.argsort(t, kind="stable")
    return t[order], ch[order], (fs, period, offsets, window, dead)


@pytest.mark.parametrize("seed", range(60))
def test_adversarial_streams(seed):
    rng = np.random.default_rng(1000 + seed)
    base = int(rng.choice([0, -(1 << 40), (1 << 53) + 12345, (1 << 62) - (1 << 40)]))
    t, ch, args = _adversarial(rng, base)
    _both(t, ch, _cuts(rng, t.size, int(rng.integers(0, 6))), args, check_every=True,
          allow_fallback=True)


@pytest.mark.parametrize("seed", range(12))
def test_exact_ties_on_a_grid(seed):
    """Integer times on a grid, offsets 0: gaps of exactly the guard, residuals of exactly half a
    window, half-slot rint ties and equal times on two detectors are all common here."""
    rng = np.random.default_rng(77 + seed)
    period, fs = 1000.0, 64
    window = float(rng.choice([800.0, 1000.0]))
    dead = float(rng.choice([5000.0, 4200.0, 0.0]))
    frames = 5
    n = [60, 120, 1500][seed % 3]                      # sparse: gaps of exactly the guard occur
    slot = rng.integers(-3, frames * fs + 3, n)
    jit = rng.choice([-500, -400, 0, 400, 500, 200], n)
    t = np.concatenate([np.arange(frames) * int(fs * period), slot * int(period) + jit]).astype(np.int64)
    ch = np.concatenate([np.zeros(frames), rng.integers(1, 5, n)]).astype(np.uint8)
    order = np.argsort(t, kind="stable")
    t, ch = t[order], ch[order]
    s = _both(t, ch, _cuts(rng, t.size, 4), (fs, period, (0.0,) * 4, window, dead), check_every=True)
    assert s.stats.kept > 20 and (s.stats.dead_time_vetoed > 0) == (dead > 0)


def test_adversarial_streams_mostly_take_the_c_path():
    closes = fallbacks = 0
    for seed in range(30):
        rng = np.random.default_rng(5000 + seed)
        t, ch, args = _adversarial(rng)
        sl = Slotter(*args)
        sl.push(t, ch)
        sl.flush()
        closes += sl.stats.frames > 0
        fallbacks += sl.fast_fallbacks
    assert closes >= 25 and fallbacks == 0


@pytest.mark.parametrize("seed", range(8))
def test_tags_out_of_time_order_and_syncs_going_back(seed):
    """Not what a tagger sends, but the reference defines a result for it: the C path gives the
    same (sorting what it can in bounded time, else leaving the call to numpy)."""
    rng = np.random.default_rng(seed)
    t, ch, args = _adversarial(rng)
    t = t.copy()
    if seed % 2:
        p = rng.permutation(t.size)                      # any order at all
        t, ch = t[p], ch[p]
    else:
        i = np.flatnonzero(ch == 0)
        if i.size >= 2:
            t[i[0]], t[i[-1]] = t[i[-1]], t[i[0]]        # syncs out of order
    _both(t, ch, _cuts(rng, t.size, 3), args, allow_fallback=True)


def test_late_tag_tied_with_the_guard_memory():
    """A tag pushed late (after its frame closed) at exactly the time of a tag in the guard
    memory: the reference's stable argsort puts the memory first; so must the C path (the memory's
    order is compared)."""
    t1 = np.array([0, 15_000, 16_000, 17_100], np.int64)
    c1 = np.array([0, 1, 0, 2], np.uint8)
    t2 = np.array([15_000], np.int64)
    c2 = np.array([3], np.uint8)
    t, ch = np.concatenate([t1, t2]), np.concatenate([c1, c2])
    s = _both(t, ch, np.array([0, 4, 5]), (16, 1000.0, (0.0,) * 4, 800.0, 5000.0))
    assert s._tail_key.tolist() == [15, -1, 17] and s.stats.before_first_sync == 1


def test_fallback_is_taken_and_counted():
    # syncs going back give a negative measured period: the C path refuses, numpy decides
    t = np.array([5_000_000, 1_000_000, 1_200_000, 7_000_000], np.int64)
    ch = np.array([0, 0, 1, 0], np.uint8)
    s = _both(t, ch, np.array([0, 4]), (1000, 1000.0, (0.0,) * 4, 800.0, 5000.0), allow_fallback=True)
    assert s.fast_fallbacks >= 1


def test_gap_counts_match_numpy_on_wrapping_values():
    rng = np.random.default_rng(9)
    ref = Slotter(16, 1000.0, (0.0,) * 4, 800.0, 10_000.0, reference=True)
    fast = Slotter(16, 1000.0, (0.0,) * 4, 800.0, 10_000.0)
    for _ in range(5):
        n = int(rng.integers(0, 500))
        t = rng.integers(-(1 << 63), (1 << 63) - 1, n, dtype=np.int64, endpoint=True)
        if rng.random() < 0.5:
            t = np.sort(t)
        ch = rng.integers(0, 7, n).astype(np.uint8)
        ref._count_gaps(t, ch)
        fast._count_gaps(t, ch)
        assert ref.stats == fast.stats and ref._last_tag == fast._last_tag


# -- the C entry point fed garbage ------------------------------------------------------------------
def _good():
    return dict(t=np.array([10, 20, 4100], np.int64), ch=np.array([1, 2, 3], np.uint8),
                syncs=np.array([0, 4000], np.int64), sync_index=np.array([0, 1], np.int64),
                n_close=1, offsets=np.zeros(4), window_ps=800.0, period_ps=1000.0, frame_slots=4,
                guard_ps=0.0, tail_ps=np.empty(0, np.int64), tail_key=np.empty(0, np.int64))


@pytest.mark.parametrize("name, value, exc, match", [
    ("t", [1, 2, 3], TypeError, "t: expected a numpy array"),
    ("t", np.zeros(3, np.int32), ValueError, "t: expected dtype int64"),
    ("ch", np.zeros((3, 1), np.uint8), ValueError, "ch: expected a 1-d array"),
    ("ch", np.array([1, 2], np.uint8), ValueError, "ch: length 2 differs"),
    ("ch", np.array([1, 5, 2], np.uint8), ValueError, "ch: channel 5 at index 1"),
    ("ch", np.array([1, 2, 0], np.uint8), ValueError, "ch: channel 0 at index 2"),
    ("syncs", np.zeros(2, np.int64)[::-1][::2], ValueError, "sync_index: length 2 differs"),
    ("sync_index", np.zeros(3, np.int64), ValueError, "sync_index: length 3"),
    ("n_close", 0, ValueError, "n_close: must lie in 1..2"),
    ("n_close", 3, ValueError, "n_close"),
    ("n_close", 1.0, TypeError, "n_close"),
    ("offsets", np.zeros(3), ValueError, "offsets: need 4"),
    ("offsets", np.array([0, np.nan, 0, 0]), ValueError, "offsets: must be finite"),
    ("window_ps", 0.0, ValueError, "window_ps"),
    ("window_ps", float("inf"), ValueError, "window_ps"),
    ("period_ps", float("nan"), ValueError, "period_ps"),
    ("period_ps", -1.0, ValueError, "period_ps"),
    ("guard_ps", -1.0, ValueError, "guard_ps"),
    ("frame_slots", 0, ValueError, "frame_slots"),
    ("frame_slots", 1 << 62, ValueError, "frame_slots"),
    ("tail_key", np.zeros(1, np.int64), ValueError, "tail_key: length 1 differs"),
])
def test_wrapper_refuses_bad_input_naming_it(name, value, exc, match):
    kw = _good()
    kw[name] = value
    with pytest.raises(exc, match=match):
        slot_close(**kw)


def test_wrapper_good_input_and_gaps_refusals():
    r = slot_close(**_good())
    assert r.slots.tolist() == [0] and r.masks.tolist() == [3] and r.pending_t.tolist() == [4100]
    assert r.frame_stats.tolist() == [[1, 2, 0, 0]] and r.early == 0
    with pytest.raises(ValueError, match="has_last"):
        slot_gaps(np.zeros(1, np.int64), np.ones(1, np.uint8), 1.0, np.zeros(4, np.int64),
                  np.full(4, 2, np.uint8))
    with pytest.raises(ValueError, match="limit_ps"):
        slot_gaps(np.zeros(1, np.int64), np.ones(1, np.uint8), float("nan"), np.zeros(4, np.int64),
                  np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="last/has_last"):
        slot_gaps(np.zeros(1, np.int64), np.ones(1, np.uint8), 1.0, np.zeros(3, np.int64),
                  np.zeros(4, np.uint8))


def _p(ctype, a):
    return ffi.cast(ctype, ffi.from_buffer(a)) if a.size else ffi.NULL


def test_c_entry_point_fuzz_never_crashes_and_keeps_its_counts():
    """Random and garbage arrays straight into qpp_slot_close (buffers of the documented sizes):
    a status from the documented set, and on success outputs that add up."""
    rng = np.random.default_rng(2024)
    allowed = {lib.QPP_OK, lib.QPP_ERR_VALUE, lib.QPP_ERR_LENGTH, lib.QPP_ERR_UNSORTED,
               lib.QPP_ERR_RANGE}
    specials = [0.0, -0.0, 1e-300, 5e-324, -1.0, 1.0, 1e300, float("inf"), float("nan"), 1000.0]
    seen = set()
    for it in range(1500):
        n = int(rng.integers(0, 60))
        wild = it % 3 == 0
        t = (rng.integers(-(1 << 63), (1 << 63) - 1, n, dtype=np.int64, endpoint=True) if wild
             else np.sort(rng.integers(-5000, 60000, n)).astype(np.int64))
        ch = (rng.integers(0, 256, n) if it % 7 == 0 else rng.integers(1, 5, n)).astype(np.uint8)
        ns = int(rng.integers(0, 6))
        syncs = (rng.integers(-(1 << 63), (1 << 63) - 1, ns, dtype=np.int64, endpoint=True) if wild
                 else np.sort(rng.integers(0, 50000, ns)).astype(np.int64))
        sidx = rng.integers(-(1 << 62), 1 << 62, ns).astype(np.int64)
        nc = int(rng.integers(0, ns + 2))
        nt = int(rng.integers(0, 6))
        tail_ps = rng.integers(-(1 << 63), (1 << 63) - 1, nt, dtype=np.int64, endpoint=True)
        tail_key = rng.integers(-3, 1 << 40, nt).astype(np.int64)
        offs = rng.choice(specials if it % 5 == 0 else [0.0, 130.0, -70.0, 2.5e4], 4).astype(np.float64)
        window = float(rng.choice(specials if it % 4 == 0 else [800.0, 1000.0, 3.0]))
        period = float(rng.choice(specials if it % 4 == 1 else [1000.0, 997.3, 1.0]))
        guard = float(rng.choice(specials if it % 4 == 2 else [0.0, 10800.0, 1e9]))
        fs = [0, 1, 7, 1 << 20, (1 << 62) - 1, 1 << 62, (1 << 64) - 1][int(rng.integers(0, 7))]
        ev_s = np.empty(n, np.uint64)
        ev_m = np.empty(n, np.uint8)
        fstat = np.empty((max(nc, 1), 4), np.uint64)
        pt = np.empty(n, np.int64)
        pc = np.empty(n, np.uint8)
        ot = np.empty(nt + n, np.int64)
        ok_ = np.empty(nt + n, np.int64)
        counts = np.zeros(4, np.uint64)
        bad = ffi.new("size_t *")
        st = lib.qpp_slot_close(_p("int64_t *", t), _p("uint8_t *", ch), n,
                                _p("int64_t *", syncs), _p("int64_t *", sidx), ns, nc,
                                _p("double *", offs), window, period, fs, guard,
                                _p("int64_t *", tail_ps), _p("int64_t *", tail_key), nt,
                                _p("uint64_t *", ev_s), _p("uint8_t *", ev_m), _p("uint64_t *", fstat),
                                _p("int64_t *", pt), _p("uint8_t *", pc),
                                _p("int64_t *", ot), _p("int64_t *", ok_),
                                _p("uint64_t *", counts), bad)
        if ns == 0:           # syncs == NULL for an empty array: refused before anything else
            assert st in (lib.QPP_ERR_NULL, lib.QPP_ERR_LENGTH)
            continue
        assert st in allowed, st
        seen.add(st)
        if st == lib.QPP_ERR_VALUE and n and np.any((ch < 1) | (ch > 4)) and np.all(np.isfinite(offs)) \
                and np.isfinite(period) and period > 0 and np.isfinite(window) and window > 0 \
                and np.isfinite(guard) and guard >= 0 and 0 < fs < 1 << 62 and 1 <= nc <= ns:
            assert not 1 <= ch[bad[0]] <= 4                 # bad_index names the bad channel
        if st != lib.QPP_OK:
            continue
        early, ne, npend, ntail = (int(x) for x in counts)
        f = fstat[:nc]
        assert ne == int(f[:, 0].sum()) and ne <= n and ntail <= nt + n
        assert int(f[:, 1].sum()) + int(f[:, 2].sum()) + early + npend == n    # every tag once
        assert np.all(f[:, 0] + f[:, 3] <= f[:, 1])
        assert np.all(ev_s[:ne] < fs) and np.all((ev_m[:ne] >= 1) & (ev_m[:ne] <= 15))
    assert {lib.QPP_OK, lib.QPP_ERR_VALUE, lib.QPP_ERR_LENGTH} <= seen


def test_c_entry_point_null_pointers():
    bad = ffi.new("size_t *")
    st = lib.qpp_slot_close(ffi.NULL, ffi.NULL, 3, ffi.NULL, ffi.NULL, 1, 1, ffi.NULL, 800.0, 1000.0,
                            4, 0.0, ffi.NULL, ffi.NULL, 0, ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL,
                            ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL, bad)
    assert st == lib.QPP_ERR_NULL
    with pytest.raises(Error, match="qpp_slot_gaps"):
        from postproc_c._binding import check
        check("qpp_slot_gaps", lib.qpp_slot_gaps(ffi.NULL, ffi.NULL, 1, 1.0, ffi.NULL, ffi.NULL,
                                                 ffi.NULL, ffi.NULL, ffi.NULL))

"""The C kernel of the HIL model (``hil._kernel``) against its numpy references.

Exact where the kernel is deterministic given the draws (alias draws, dead time,
timestamps); statistical for whole frames (the kernel against the numpy
``method="skip"`` path of ``LinkModel.run_frame``), with 5-sigma tolerances from
the sample size as in ``test_hil_model.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hil import kernel as K
from hil.model import LinkModel, Pattern
from hil.scenario import Scenario

SIGMAS = 5.0


def quiet(name: str = "metro-25km", **kw) -> Scenario:
    base = {"source.frame_slots": 1 << 17, "source.prep_error_deg": 0.0, "detectors.efficiency": 0.6,
            "detectors.dead_time_ns": 0.0, "detectors.dark_count_rate_hz": 0.0,
            "tagger.clock_drift_ppm": 0.0}
    base.update({k.replace("__", "."): v for k, v in kw.items()})
    return Scenario.load(name).with_overrides(base)


def poisson_close(a: np.ndarray, b: np.ndarray) -> bool:
    """Two independent counts with the same mean: |a - b| <= 5 sqrt(a + b) + 1."""
    return bool(np.all(np.abs(a - b) <= SIGMAS * np.sqrt(a + b) + 1))


# -- exact: the same draws give the same results ------------------------------------------------

def _packed_reference(packed, bits, cls, x):
    """numpy of hil_alias_draw: bucket = high bits of x, own value if the low bits are below the
    bucket's threshold, else the alias's value."""
    sh = np.uint32(32 - bits)
    e = packed[(cls << bits) + (x >> sh).astype(np.int64)]
    low = x & np.uint32((1 << (32 - bits)) - 1)
    own = ((e >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.uint16)
    other = (e >> np.uint64(48)).astype(np.uint16)
    return np.where(low < (e & np.uint64(0xFFFFFFFF)).astype(np.uint32), own, other)


def test_alias_tables_reproduce_their_distributions_and_draw_like_numpy():
    rng = np.random.default_rng(0)
    for k in (1, 2, 3, 16, 106, 257):
        probs = rng.random((20, k)) ** 3
        probs[0] = 0.0
        probs[1, :] = 0.0
        probs[1, k // 2] = 5.0                     # one certain outcome, unnormalized
        thr, alias = K.alias_build(probs)
        # the mass each outcome gets: thr of its own bucket plus 1 - thr of buckets aliasing it
        t, a = thr.reshape(20, k), alias.reshape(20, k)
        for r in range(2, 20):
            mass = t[r].copy()
            np.add.at(mass, a[r], 1.0 - t[r])
            assert np.allclose(mass / k, probs[r] / probs[r].sum(), rtol=0, atol=1e-12), (k, r)
        assert np.all(a[0] == k - 1) and np.all(t[0] == 0)     # no mass: the last outcome
        # packed: pad to 2^bits outcomes, values = outcome index; the integer thresholds keep each
        # outcome's mass to 2^-32 per bucket
        bits = max(1, (k - 1).bit_length())
        pad = np.zeros((20, 1 << bits))
        pad[:, :k] = probs
        pad[0, k - 1] = 1.0
        thr, alias = K.alias_build(pad)
        values = np.arange(1 << bits, dtype=np.uint16)
        packed = K.alias_pack(thr, alias, values, bits)
        sh = 32 - bits
        e = packed.reshape(20, 1 << bits)
        own_t = (e & np.uint64(0xFFFFFFFF)).astype(np.float64) / 2.0 ** sh
        for r in range(20):
            mass = np.zeros(1 << bits)
            np.add.at(mass, ((e[r] >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.intp), own_t[r])
            np.add.at(mass, (e[r] >> np.uint64(48)).astype(np.intp), 1.0 - own_t[r])
            want = pad[r] / pad[r].sum()
            assert np.allclose(mass / (1 << bits), want, rtol=0, atol=2.0 ** -32 * (1 << bits)), (k, r)
            assert np.all(mass[k:] == 0)           # padding is never drawn
        cls = rng.integers(0, 20, 5000)
        x = rng.integers(0, 1 << 32, 5000, dtype=np.uint64).astype(np.uint32)
        x[:4] = [0, 0xFFFFFFFF, 1 << 31, (1 << 31) - 1]
        got = K.alias_draw(packed, bits, cls, x)
        assert np.array_equal(got, _packed_reference(packed, bits, cls, x))
        assert np.all(got[cls == 0] == k - 1)
        assert np.all(got[cls == 1] == k // 2)


def test_alias_draws_follow_the_outcome_tables():
    m = LinkModel("intercept-resend", seed=1)
    tables, _ = m._tables(10)
    packed, bits = tables.alias()
    rng = np.random.default_rng(2)
    n = 400_000
    cls = np.full(n, 5, np.int64)
    v = K.alias_draw(packed, bits, cls, rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32))
    # value mask | code << 4 back to the outcome index o = code * 15 + mask - 1 (K: no click)
    o = np.where(v == 0, tables.K, (v >> 4).astype(np.int64) * 15 + (v & 15) - 1)
    p = np.diff(tables.cum.reshape(tables.n_classes, tables.K1)[5], prepend=0.0)
    got = np.bincount(o, minlength=tables.K1)
    sd = np.sqrt(n * p * (1 - p))
    assert np.all(np.abs(got - n * p) <= SIGMAS * sd + 1), (got, n * p)


def test_pattern_check_matches_numpy():
    rng = np.random.default_rng(6)
    for t in range(300):
        n = int(rng.integers(0, 70))
        pat = [rng.integers(0, hi, n).astype(np.uint8) for hi in (2, 2, 3)]
        if n and t % 4:
            f = int(rng.integers(0, 3))
            bad = [2, 3, 4, 128, 255] if f < 2 else [3, 4, 7, 255]
            pat[f][rng.integers(0, n)] = rng.choice(bad)
        want = sum(flag for flag, a, lim in zip((1, 2, 4), pat, (2, 2, 3), strict=True)
                   if n and a.max() >= lim)
        assert K.pattern_bad(*pat) == want, (t, pat)


@pytest.mark.parametrize("name", ["metro-25km", "intercept-resend", "fiber-cut"])
def test_kernel_validates_the_pattern_as_it_reads_it(name):
    # one bad byte anywhere (before, between or after the candidates) is refused, naming the field
    sc = quiet(name, source__frame_slots=(1 << 14) + 5, detectors__dark_count_rate_hz=1e6,
               **{"attack.start_time_s": 0.0})
    m = LinkModel(sc, seed=3)
    n = m.frame_slots
    for field, val in (("basis", 2), ("bit", 255), ("intensity", 3)):
        for pos in (0, 63, 64, n // 2 + 3, n - 1):
            pat = m.alice_pattern(0)
            arrs = {k: getattr(pat, k).copy() for k in ("basis", "bit", "intensity")}
            arrs[field][pos] = val
            with pytest.raises(ValueError, match=f"pattern.{field}: values must be"):
                m.run_frame(0, Pattern(**arrs))
    good = m.alice_pattern(0)
    assert m.run_frame(0, good).n_events > 0


def test_dead_time_matches_the_numpy_rule():
    from hil.detectors import dead_time_keep_multi

    rng = np.random.default_rng(3)
    for t in range(200):
        n = int(rng.integers(1, 500))
        key = np.unique(np.sort(rng.integers(0, int(rng.integers(n // 4 + 1, n * 20)), n)) * 4
                        + rng.integers(0, 4, n))
        key = np.unique(key)
        slots, det = key // 4, (key % 4).astype(np.uint8)
        dead = [int(x) for x in rng.integers(0, 50, 4)]
        prev = [None if rng.random() < 0.3 else -int(rng.integers(0, 80)) for _ in range(4)]
        keep, last = K.dead_time(slots, det, dead, prev)
        assert np.array_equal(keep, dead_time_keep_multi(slots, det, dead, prev)), t
        for d in range(4):
            kept = slots[keep & (det == d)]
            want = kept[-1] if len(kept) else (K.NONE if prev[d] is None else prev[d])
            assert last[d] == want


@pytest.mark.parametrize("ppm,offset,res", [(0.0, 0.0, 1.0), (0.5, 0.0, 1.0), (-37.0, 1234.5, 4.0),
                                            (12.0, -77.0, 1.0)])
def test_timestamps_match_numpy_bit_for_bit(ppm, offset, res):
    sc = quiet(tagger__clock_drift_ppm=ppm, tagger__offset_ps=offset, tagger__resolution_ps=res,
               detectors__delay_ps=[0.0, 120.0, -80.0, 40.0], detectors__jitter_ps=[30.0, 25.0, 40.0, 35.0])
    m = LinkModel(sc, seed=4)
    rng = np.random.default_rng(5)
    for frame in (0, 1, 977, 123_456_789):
        n = 20_000
        slot = np.sort(rng.integers(0, m.frame_slots, n))
        det = rng.integers(0, 4, n).astype(np.uint8)
        noise = rng.random(n) < 0.2
        z = rng.standard_normal(n) * 3
        un = rng.random(n)
        want = m._timestamps_from(frame, slot, det, noise, z, un[noise])
        sig, delay, rate, frac, base, r = m._tag_terms(frame)
        p = K.frame_params(n_slots=m.frame_slots, period_ps=m.period_ps, sig_ps=list(sig),
                           delay_ps=list(delay), rate=rate, frac_shift_ps=frac, base_ps=base, resolution_ps=r)
        got = K.timestamps(p, slot, det, noise, z, np.where(noise, un, 0.0))
        assert np.array_equal(got, want), (frame, np.flatnonzero(got != want)[:5])


def test_ziggurat_normals_are_standard_normal():
    from statistics import NormalDist

    n = 400_000
    z = K.normals(np.array([1, 2, 3, 4], np.uint64), n)
    assert abs(z.mean()) < SIGMAS / math.sqrt(n)
    assert abs(z.var() - 1) < SIGMAS * math.sqrt(2 / n)
    # bin counts over the body, the wedges and both tails (beyond R = 3.4426 the tail algorithm runs)
    edges = np.array([-np.inf, -3.8, -3.4426, -2.5, -1.5, -0.5, 0.0, 0.5, 1.5, 2.5, 3.4426, 3.8, np.inf])
    cdf = np.array([NormalDist().cdf(e) if np.isfinite(e) else float(e > 0) for e in edges])
    p = np.diff(cdf)
    got = np.histogram(z, edges)[0]
    assert np.all(np.abs(got - n * p) <= SIGMAS * np.sqrt(n * p * (1 - p)) + 1), (got, n * p)
    assert np.abs(z).max() > 3.8                  # no truncation at the table's edge


# -- whole frames: the kernel against the numpy path ----------------------------------------------

def _counts(sc, method, seed, frames=4, by="intensity"):
    m = LinkModel(sc, seed=seed)
    c = np.zeros((3 if by == "intensity" else 7, 4), np.int64)
    noise = events = 0
    for f in range(frames):
        pat = m.alice_pattern(f)
        r = m.run_frame(f, pat, method=method)
        s = r.slot.astype(np.int64)
        if by == "intensity":
            np.add.at(c, (pat.intensity[s], r.detector), 1)
        else:
            idx = np.searchsorted(r.slots.astype(np.int64), s)
            np.add.at(c, (r.eve.code[idx], r.detector), 1)
        noise += int(r.noise.sum())
        events += r.n_events
    return c, noise, events


@pytest.mark.parametrize("name,kw", [
    ("metro-25km", {"detectors__dark_count_rate_hz": 2e5, "detectors__dead_time_ns": 10.0}),
    ("back-to-back", {"detectors__dead_time_ns": 25.0}),
    ("drifting-fiber", {"detectors__dark_count_rate_hz": 1e4}),
])
def test_kernel_agrees_with_the_numpy_path(name, kw):
    sc = quiet(name, **kw)
    a, na, _ = _counts(sc, "kernel", 11)
    b, nb, _ = _counts(sc, "skip", 12)
    assert poisson_close(a, b), (a, b)
    assert poisson_close(np.array(na), np.array(nb)), (na, nb)


@pytest.mark.parametrize("name", ["intercept-resend", "pns", "blinding"])
def test_kernel_agrees_with_the_numpy_path_under_attack(name):
    sc = quiet(name, detectors__dark_count_rate_hz=1e5, **{"attack.start_time_s": 0.0})
    a, na, _ = _counts(sc, "kernel", 21, by="code")
    b, nb, _ = _counts(sc, "skip", 22, by="code")
    assert a.sum() > 1000
    assert poisson_close(a, b), (a, b)
    assert poisson_close(np.array(na), np.array(nb)), (na, nb)


def test_fiber_cut_in_the_kernel_stops_photons_at_the_slot():
    sc = quiet("fiber-cut", detectors__dark_count_rate_hz=1e6)
    m = LinkModel(sc, seed=3)
    n = m.frame_slots
    cut = math.ceil(sc.attack.start_time_s * m.clock_hz)
    for f in range(cut // n - 1, cut // n + 2):
        r = m.run_frame(f)
        g = r.slot.astype(np.int64) + f * n
        assert not np.any(~r.noise & (g >= cut))
        assert r.noise.any()


def test_afterpulses_afterpulse_in_the_kernel():
    # each registered click afterpulses with p; afterpulses are clicks, so a photon click is followed
    # by a chain of Geometric length: mean p / (1 - p) afterpulses (the numpy path stops at p)
    p = 0.3
    sc = quiet("long-100km", detectors__afterpulse_prob=p, detectors__dead_time_ns=20.0,
               detectors__afterpulse_time_constant_ns=50.0, source__frame_slots=1 << 18)
    m = LinkModel(sc, seed=8)
    sig = ap = 0
    chained = 0
    for f in range(3):
        r = m.run_frame(f)
        sig += int((~r.noise).sum())
        ap += int(r.noise.sum())
        for d in range(4):
            s, nz = r.slot.astype(np.int64)[r.detector == d], r.noise[r.detector == d]
            assert np.all(np.diff(s) >= 20)
            chained += int((nz[1:] & nz[:-1]).sum())       # an afterpulse right after an afterpulse
    mean, var = p / (1 - p), p / (1 - p) ** 2
    assert abs(ap - sig * mean) <= SIGMAS * math.sqrt(sig * var) + 1, (ap, sig * mean)
    assert chained > 0.5 * sig * p * p
    _, _, ev_numpy = _counts(sc, "skip", 9, frames=3)
    assert ev_numpy < (sig + ap) * (1 + p) / (1 + mean)      # one generation gives visibly fewer


def test_kernel_is_deterministic_and_survives_a_small_buffer():
    sc = quiet("back-to-back", detectors__afterpulse_prob=0.05, detectors__dead_time_ns=10.0,
               source__frame_slots=1 << 15)
    a = LinkModel(sc, seed=5).run_frames(0, 3)
    m = LinkModel(sc, seed=5)
    orig = K.run_frame
    try:
        K.run_frame = lambda *args, **kw: orig(*args, **{**kw, "capacity": 16, "ws": K.Workspace()})
        b = m.run_frames(0, 3)
    finally:
        K.run_frame = orig
    for x, y in zip(a, b, strict=True):
        for field in ("slot", "detector", "time_ps", "noise", "slots", "mask", "tag_t_ps"):
            assert np.array_equal(getattr(x, field), getattr(y, field)), field
        assert x.counts == y.counts


def test_kernel_rejects_bad_arguments():
    with pytest.raises(TypeError, match="cls: expected dtype int64"):
        K.alias_draw(np.ones(4, np.uint64), 2, np.zeros(3, np.int32), np.zeros(3, np.uint32))
    with pytest.raises(K.KernelError, match="hil_alias_draw: a parameter is outside its domain"):
        K.alias_draw(np.ones(4, np.uint64), 2, np.array([1], np.int64), np.zeros(1, np.uint32))
    with pytest.raises(K.KernelError, match="hil_alias_pack: a parameter is outside its domain"):
        K.alias_pack(np.array([0.5, 1.5]), np.zeros(2, np.int32), np.zeros(2, np.uint16), 1)
    with pytest.raises(K.KernelError, match="hil_alias_build"):
        K.alias_build(np.array([[0.5, -0.1]]))
    with pytest.raises(ValueError, match="probs: expected a 2-D array"):
        K.alias_build(np.ones(3))
    with pytest.raises(K.KernelError, match="hil_normals"):
        K.normals(np.zeros(4, np.uint64), 3)
    with pytest.raises(K.KernelError, match="hil_dead_time"):
        K.dead_time(np.array([5, 3], np.int64), np.zeros(2, np.uint8), [2] * 4, [None] * 4)


@pytest.mark.parametrize("delays", [[0.0, 120.0, -80.0, 40.0], [0.0, 5e7, -3e7, 1e3]])
def test_kernel_tags_are_sorted_and_complete(delays):
    # small delays: the kernel's insertion sort; 50 us apart: too far for it, numpy sorts
    sc = quiet("back-to-back", detectors__delay_ps=delays, source__frame_slots=1 << 16,
               tagger__max_tag_rate_hz=5e7, tagger__rate_window_ns=200.0)
    m = LinkModel(sc, seed=2)
    for f in range(2):
        r = m.run_frame(f)
        assert np.all(np.diff(r.tag_t_ps) >= 0)
        assert r.lost_tags == int(r.tag_lost.sum()) > 0
        kept = ~r.tag_lost
        assert np.array_equal(np.sort(r.tag_t_ps[r.tag_channel > 0]), np.sort(r.time_ps[kept]))
        assert np.array_equal(np.bincount(r.tag_channel, minlength=5)[1:],
                              np.bincount(r.detector[kept], minlength=4))
        assert (r.tag_channel == 0).sum() == 1 and r.sync_ps in r.tag_t_ps


@pytest.mark.parametrize("method", ["kernel", "skip"])
def test_attack_switches_on_at_the_slot(method):
    # intercept-resend on every pulse from 0.4 of the way into frame 1: slots before are honest
    # (Eve's code 0, low QBER), slots after are attacked (QBER 1/4 in the Z basis)
    sc = quiet("intercept-resend", source__frame_slots=1 << 18, source__prep_error_deg=0.0)
    n = sc.source.frame_slots
    k = int(0.4 * n)
    sc = sc.with_overrides({"attack.start_time_s": (n + k) / sc.source.clock_hz})
    m = LinkModel(sc, seed=17)
    assert m._attack_kind(0) == "none" and m._switch(1) == k and m._attack_slot(2) == 0
    err = {True: [0, 0], False: [0, 0]}
    for f in range(3):
        pat = m.alice_pattern(f)
        r = m.run_frame(f, pat, method=method)
        if f == 0:
            assert r.eve is None
            continue
        s = r.slots.astype(np.int64)
        after = s >= (k if f == 1 else 0)
        code = r.eve.code
        assert np.all(code[~after] == 0) and np.all(code[after] > 0)
        one = (r.mask == 1) | (r.mask == 2)
        z = one & (pat.basis[s] == 0)
        wrong = z & (pat.bit[s] != (r.mask == 2))
        for a in (True, False):
            sel = z & (after == a)
            err[a][0] += int(sel.sum())
            err[a][1] += int((wrong & sel).sum())
    n_a, e_a = err[True]
    n_b, e_b = err[False]
    assert n_b > 500 and e_b <= 5 * math.sqrt(n_b * 0.01) + 0.01 * n_b
    assert abs(e_a - 0.25 * n_a) <= SIGMAS * math.sqrt(n_a * 0.25 * 0.75) + 1, (e_a, n_a)


@pytest.mark.parametrize("method", ["kernel", "skip"])
def test_blinding_switches_dark_counts_off_at_the_slot(method):
    sc = quiet("blinding", source__frame_slots=1 << 17, detectors__dark_count_rate_hz=5e6,
               detectors__afterpulse_prob=0.1, detectors__dead_time_ns=20.0)
    n = sc.source.frame_slots
    k = n // 2
    sc = sc.with_overrides({"attack.start_time_s": (n + k) / sc.source.clock_hz})
    m = LinkModel(sc, seed=5)
    rs = [m.run_frame(f, method=method) for f in range(3)]
    s1 = rs[1].slot.astype(np.int64)
    assert rs[1].noise[s1 < k].sum() > 100          # 5 MHz dark counts before the switch
    assert not rs[1].noise[s1 >= k].any()            # none after: the detectors are blinded
    assert not rs[2].noise.any()

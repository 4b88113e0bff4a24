"""Validation of the HIL physical model against closed-form expectations.

Tolerances come from the sample size: a count k out of n trials with expected
probability p must satisfy |k - n p| <= 5 sqrt(n p (1 - p)) (+1 for
discreteness), i.e. a 5-sigma binomial band; nothing is hand-tuned.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from hil.model import LinkModel, Pattern
from hil.optics import (
    FiberDrift,
    epc400_rotation,
    linear_rotation,
    mpc320_rotation,
    poincare_angle,
    retarder,
)
from hil.scenario import Scenario, ScenarioError
from hil.tagger import TagStream

SIGMAS = 5.0


def within_binomial(k: int, n: int, p: float) -> bool:
    return abs(k - n * p) <= SIGMAS * math.sqrt(max(n * p * (1 - p), 0.0)) + 1


def rate_close(k: int, n: int, p: float) -> str:
    return f"{k}/{n} = {k / max(n, 1):.5f}, expected {p:.5f} +- {SIGMAS} sigma"


def quiet(name: str = "metro-25km", **kw) -> Scenario:
    """A scenario with simple numbers: no prep error, equal efficiencies, no dead time, small frames."""
    base = {"source.frame_slots": 1 << 18, "source.prep_error_deg": 0.0, "detectors.efficiency": 0.6,
            "detectors.dead_time_ns": 0.0, "detectors.dark_count_rate_hz": 0.0,
            "tagger.clock_drift_ppm": 0.0}
    base.update({k.replace("__", "."): v for k, v in kw.items()})
    return Scenario.load(name).with_overrides(base)


def collect(model: LinkModel, frames) -> tuple[list, list]:
    results, patterns = [], []
    for f in frames:
        p = model.alice_pattern(f)
        results.append(model.run_frame(f, p))
        patterns.append(p)
    return results, patterns


def z_sifted(results, patterns, intensity: int = 0):
    """(n sifted, errors) over Z-basis slots of one intensity with exactly one click, in H or V."""
    n = err = 0
    for r, p in zip(results, patterns, strict=True):
        s = r.slots.astype(np.int64)
        sel = (p.basis[s] == 0) & (p.intensity[s] == intensity) & ((r.mask == 1) | (r.mask == 2))
        bob_bit = (r.mask[sel] == 2).astype(np.uint8)
        n += int(sel.sum())
        err += int((bob_bit != p.bit[s][sel]).sum())
    return n, err


# -- scenarios ----------------------------------------------------------------------------------

def test_shipped_scenarios_load_and_run():
    names = Scenario.names()
    for want in ("back-to-back", "metro-25km", "long-100km", "drifting-fiber", "intercept-resend", "pns",
                 "blinding", "fiber-cut"):
        assert want in names
    for name in names:
        sc = Scenario.load(name).with_overrides({"source.frame_slots": 1 << 14})
        r = LinkModel(sc, seed=3).run_frame(0)
        assert r.n_events > 0 and np.all(np.diff(r.slot.astype(np.int64)) >= 0)
    assert Scenario.load().name == "metro-25km"


@pytest.mark.parametrize("body, key, expected", [
    ("[fiber]\nlength_km = 'far'\n", "[fiber] length_km", "a number"),
    ("[fiber]\nlength_km = -3.0\n", "[fiber] length_km", "[0, 1000]"),
    ("[detectors]\nefficiency = [0.5, 0.5]\n", "[detectors] efficiency", "list of 4"),
    ("[source]\nframe_slots = 1.5\n", "[source] frame_slots", "an integer"),
    ("[fiber]\nlenght_km = 3.0\n", "[fiber] unknown key 'lenght_km'", "length_km"),
    ("[fibre]\nlength_km = 3.0\n", "unknown section [fibre]", "fiber"),
    ("[attack]\nkind = 'mitm'\n", "[attack] kind", "'intercept-resend'"),
    ("[source]\nintensity_probs = [0.5, 0.2, 0.2]\n", "[source] intensity_probs", "summing to 1"),
])
def test_scenario_errors_name_file_key_and_expectation(tmp_path, body, key, expected):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ScenarioError) as exc:
        Scenario.load(path)
    msg = str(exc.value)
    assert str(path) in msg and key in msg and expected in msg, msg


def test_scenario_unknown_name_and_broken_toml(tmp_path):
    with pytest.raises(ScenarioError, match="unknown scenario 'nowhere'.*metro-25km"):
        Scenario.load("nowhere")
    bad = tmp_path / "x.toml"
    bad.write_text("[fiber\nlength_km=1")
    with pytest.raises(ScenarioError, match="x.toml: invalid TOML"):
        Scenario.load(bad)


# -- source, fiber, detectors ------------------------------------------------------------------

def test_detection_probability_per_intensity_matches_closed_form():
    dcr = 2e5
    sc = quiet(detectors__dark_count_rate_hz=dcr, source__intensities=[0.5, 0.1, 0.0], source__p_z=0.5,
               bob__p_z=0.5)
    m = LinkModel(sc, seed=11)
    results, patterns = collect(m, range(3))
    eta = m.transmittance * m.bob_transmittance * 0.6
    pd = -math.expm1(-dcr / m.clock_hz)
    for k, mu in enumerate((0.5, 0.1, 0.0)):
        # Lo, Ma, Chen 2005 eq. 3: Q = 1 - exp(-eta mu) (1 - Y0), here 4 detectors' darks
        p = 1.0 - math.exp(-eta * mu) * (1.0 - pd) ** 4
        n = sum(int((pat.intensity == k).sum()) for pat in patterns)
        clicks = sum(int((pat.intensity[r.slots.astype(np.int64)] == k).sum())
                     for r, pat in zip(results, patterns, strict=True))
        assert within_binomial(clicks, n, p), rate_close(clicks, n, p)
    slots = sum(len(pat) for pat in patterns)
    clicked = sum(len(r.slots) for r in results)
    q = m.expected_slot_click_probability()
    assert within_binomial(clicked, slots, q), rate_close(clicked, slots, q)


def _z_qber_expected(n: float, sin2: float, pd: float) -> float:
    """QBER of single-click Z events for an H pulse with means n cos^2, n sin^2 at H, V and darks pd."""
    ph = 1 - (1 - pd) * math.exp(-n * (1 - sin2))
    pv = 1 - (1 - pd) * math.exp(-n * sin2)
    return pv * (1 - ph) / (pv * (1 - ph) + ph * (1 - pv))


@pytest.mark.parametrize("angle_deg, dcr", [(0.0, 3e5), (8.0, 0.0), (8.0, 3e5)])
def test_qber_vs_misalignment_and_dark_counts(angle_deg, dcr):
    m = LinkModel(quiet(detectors__dark_count_rate_hz=dcr), seed=5)
    m.set_controller_rotation(linear_rotation(math.radians(angle_deg)))
    results, patterns = collect(m, range(3))
    n_z = 0.5 * m.transmittance * m.bob_transmittance * m.bob_p_z * 0.6
    pd = -math.expm1(-dcr / m.clock_hz)
    e = _z_qber_expected(n_z, math.sin(math.radians(angle_deg)) ** 2, pd)
    n, err = z_sifted(results, patterns)
    assert n > 5000 and within_binomial(err, n, e), rate_close(err, n, e)


def test_fiber_drift_raises_qber_as_sin2_of_the_angle():
    sc = quiet("drifting-fiber", fiber__drift_rad_per_sqrt_s=3.0, fiber__temperature_amplitude_rad=0.0)
    m = LinkModel(sc, seed=2)
    n_z = 0.5 * m.transmittance * m.bob_transmittance * m.bob_p_z * 0.6
    seen = []
    for f in (0, 200, 500, 1000):
        pat = m.alice_pattern(f)
        r = m.run_frame(f, pat)
        u = m.rotation_at(r.start_time_s + r.duration_s / 2)
        sin2 = abs(u[1, 0]) ** 2                   # |<V|U|H>|^2 = sin^2 of the physical angle
        n, err = z_sifted([r], [pat])
        e = _z_qber_expected(n_z, sin2, 0.0)
        assert within_binomial(err, n, e), f"frame {f}: " + rate_close(err, n, e)
        seen.append(sin2)
    assert max(seen) - min(seen) > 0.05           # the drift really moved


def test_fiber_drift_is_a_deterministic_su2_random_walk():
    a = FiberDrift(seed=9, rate_rad_per_sqrt_s=0.5, step_s=1e-3)
    b = FiberDrift(seed=9, rate_rad_per_sqrt_s=0.5, step_s=1e-3)
    times = [7.3, 0.0012, 3.0, 20.5]              # a: out of order, b: in order
    ua = [a.rotation_at(t) for t in times]
    ub = [b.rotation_at(t) for t in sorted(times)]
    for t, u in zip(times, ua, strict=True):
        assert np.allclose(u, ub[sorted(times).index(t)])
        assert np.allclose(u.conj().T @ u, np.eye(2))
    # continuity within a step, and diffusion: E[angle^2] = 3 sigma^2 t for small angles
    assert poincare_angle(a.rotation_at(1.0), a.rotation_at(1.0 + 1e-5)) < 0.01
    sigma, t = 0.5, 0.04
    ang2 = np.array([poincare_angle(np.eye(2), FiberDrift(s, sigma, 1e-3).rotation_at(t)) ** 2
                     for s in range(300)])
    mean, se = ang2.mean(), ang2.std() / math.sqrt(len(ang2))
    assert abs(mean - 3 * sigma ** 2 * t) < SIGMAS * se + 0.05 * 3 * sigma ** 2 * t


def test_dead_time_caps_rate_and_gives_the_renewal_interval():
    sc = quiet("back-to-back", source__intensities=[2.0, 0.1, 0.0], detectors__dead_time_ns=100.0,
               source__frame_slots=1 << 17)
    m = LinkModel(sc, seed=4)
    n = m.frame_slots
    zeros = np.zeros(n, np.uint8)
    pat = Pattern(zeros, zeros, zeros)             # every slot: Z basis, H, signal
    h = []
    for f in range(3):
        r = m.run_frame(f, pat)
        h.append(r.slot.astype(np.int64)[r.detector == 0] + f * n)
    slots = np.concatenate(h)
    gaps = np.diff(slots)
    dead = 100
    assert gaps.min() >= dead                      # also across frame boundaries
    assert len(slots) <= 3 * n / dead + 1          # rate <= 1 / dead time
    p = 1 - math.exp(-2.0 * m.bob_transmittance * m.bob_p_z * 0.6)
    # Renewal: after a click, dead - 1 blind slots then Geometric(p) trials (Mueller 1973 eq. 1, discrete)
    expect = dead - 1 + 1 / p
    se = math.sqrt(1 - p) / p / math.sqrt(len(gaps))
    assert abs(gaps.mean() - expect) < SIGMAS * se, (gaps.mean(), expect, se)


def test_afterpulses_follow_clicks_after_the_dead_time():
    sc = quiet("long-100km", detectors__afterpulse_prob=0.1, detectors__dead_time_ns=20.0,
               detectors__afterpulse_time_constant_ns=50.0)
    m = LinkModel(sc, seed=8)
    results, _ = collect(m, range(3))
    sig = sum(int((~r.noise).sum()) for r in results)
    ap = sum(int(r.noise.sum()) for r in results)
    # afterpulses afterpulse too: per photon click a Geometric chain, mean p/(1-p), variance p/(1-p)^2
    p = 0.1
    assert abs(ap - sig * p / (1 - p)) <= SIGMAS * math.sqrt(sig * p / (1 - p) ** 2) + 1, (ap, sig)
    for r in results:
        for d in range(4):
            s = r.slot.astype(np.int64)[r.detector == d]
            noise = r.noise[r.detector == d]
            if noise[1:].any():
                assert np.diff(s)[noise[1:]].min() >= 20


# -- time tagger -----------------------------------------------------------------------------

def test_tagger_clock_drift_is_a_linear_slot_offset_slope():
    ppm = 40.0
    sc = quiet(tagger__clock_drift_ppm=ppm, source__frame_slots=1 << 16, tagger__jitter_ps=5.0,
               detectors__jitter_ps=20.0)
    m = LinkModel(sc, seed=6)
    t, resid = [], []
    for f in range(0, 40, 4):
        r = m.run_frame(f)
        delay = np.array([d.delay_ps for d in m.detectors])
        true = m._frame_start_ps(f) + r.slot.astype(np.int64) * m.period_ps + m.tof_ps + delay[r.detector]
        t.append(true)
        resid.append(r.time_ps - true)
    t, resid = np.concatenate(t), np.concatenate(resid)
    slope, icpt = np.polyfit(t, resid, 1)
    noise = resid - (slope * t + icpt)
    se = noise.std() / (math.sqrt(len(t)) * t.std())
    assert abs(slope - ppm * 1e-6) < SIGMAS * se, (slope, se)
    # and the engine can undo it: slots recovered from timestamps alone
    r = m.run_frame(41)
    est = (r.time_ps / (1 + ppm * 1e-6) - m._frame_start_ps(41) - m.tof_ps
           - np.array([d.delay_ps for d in m.detectors])[r.detector]) / m.period_ps
    assert np.array_equal(np.rint(est).astype(np.int64), r.slot.astype(np.int64))


def test_tags_sync_channel_and_rate_limit():
    sc = quiet(tagger__max_tag_rate_hz=20e6, tagger__rate_window_ns=1000.0)
    m = LinkModel(sc, seed=1)
    r = m.run_frame(0)
    assert np.all(np.diff(r.tag_t_ps) >= 0)
    assert r.lost_tags > 0 and r.lost_tags == int(r.tag_lost.sum()) + (0 if (r.tag_channel == 0).any() else 1)
    assert len(r.tag_t_ps) == r.n_events + 1 - r.lost_tags
    per_window = np.bincount(r.tag_t_ps // 1_000_000)
    assert per_window.max() <= 20
    delivered = np.sort(r.time_ps[~r.tag_lost])
    assert np.array_equal(np.sort(r.tag_t_ps[r.tag_channel > 0]), delivered)
    m2 = LinkModel(quiet(), seed=1)
    r2 = m2.run_frame(0)
    assert r2.lost_tags == 0 and int((r2.tag_channel == 0).sum()) == 1 and r2.tag_channel[0] == 0


def test_tagstream_merges_frames_in_time_order():
    m = LinkModel(quiet(source__frame_slots=1 << 14, fiber__length_km=50.0), seed=2)
    stream, out_t, out_c = TagStream(), [], []
    total = 0
    for f in range(5):
        r = m.run_frame(f)
        total += len(r.tag_t_ps)
        t, c = stream.push(r.tag_t_ps, r.tag_channel, m.earliest_tag_ps(f + 1))
        out_t.append(t)
        out_c.append(c)
    t, c = stream.flush()
    out_t.append(t)
    allt = np.concatenate(out_t)
    assert len(allt) == total and np.all(np.diff(allt) >= 0)


# -- eavesdroppers ---------------------------------------------------------------------------

def _ir_expected(f: float, m: LinkModel) -> float:
    n = 0.5 * m.transmittance * m.bob_transmittance * m.bob_p_z * 0.6
    ps = 1 - math.exp(-0.5)                       # Eve's ideal detector on mu1 = 0.5
    b = 1 - math.exp(-n)                          # a Z state in Bob's Z arm, right detector
    a = (1 - math.exp(-n / 2)) * math.exp(-n / 2)   # an X state: one of the two, alone
    return f * ps * 0.5 * a / ((1 - f) * b + f * ps * (0.5 * b + a))


@pytest.mark.parametrize("fraction", [1.0, 0.4])
def test_intercept_resend_qber(fraction):
    sc = quiet("intercept-resend", attack__fraction=fraction, attack__resend_mu=0.5)
    m = LinkModel(sc, seed=21)
    results, patterns = collect(m, range(3))
    e = _ir_expected(fraction, m)
    n, err = z_sifted(results, patterns)
    assert within_binomial(err, n, e), rate_close(err, n, e)
    # f/4, with f the fraction of Bob's sifted detections that Eve re-sent (her detector misses
    # some pulses and she then sends nothing, so f is below the attacked fraction of pulses)
    resent = 0
    for r, p in zip(results, patterns, strict=True):
        s = r.slots.astype(np.int64)
        sel = (p.basis[s] == 0) & (p.intensity[s] == 0) & ((r.mask == 1) | (r.mask == 2))
        resent += int(((r.eve.code[sel] >= 2) & (r.eve.code[sel] < 6)).sum())
    if fraction == 1.0:
        assert resent == n
    assert within_binomial(err, n, resent / n / 4), rate_close(err, n, resent / n / 4)
    # what Eve learned: where her basis matched Alice's she has Alice's bit
    for r, p in zip(results, patterns, strict=True):
        s = r.slots.astype(np.int64)
        k = r.eve.knows_bit
        assert k.any() and np.array_equal(r.eve.bit[k], p.bit[s][k])
        assert np.all(r.eve.basis[k] == p.basis[s][k])


def test_pns_eve_knows_every_detected_bit_without_raising_qber():
    m = LinkModel(quiet("pns"), seed=3)
    results, patterns = collect(m, range(3))
    n, err = z_sifted(results, patterns)
    assert n > 1000 and err == 0
    for r, p in zip(results, patterns, strict=True):
        assert r.eve.knows_bit.all()
        assert np.array_equal(r.eve.bit, p.bit[r.slots.astype(np.int64)])
    # the decoy state catches it: decoy/signal detection ratio far below the honest one
    det = [sum(int((p.intensity[r.slots.astype(np.int64)] == k).sum()) for r, p in
               zip(results, patterns, strict=True)) for k in (0, 1)]
    sent = [sum(int((p.intensity == k).sum()) for p in patterns) for k in (0, 1)]
    ratio = (det[1] / sent[1]) / (det[0] / sent[0])
    honest = (1 - math.exp(-0.1 * 0.0016)) / (1 - math.exp(-0.5 * 0.0016))
    assert ratio < 0.5 * honest


def test_blinding_gives_zero_qber_and_full_knowledge():
    m = LinkModel(quiet("blinding", detectors__dark_count_rate_hz=1e5), seed=4)
    results, patterns = collect(m, range(3))
    n, err = z_sifted(results, patterns)
    assert n > 1000 and err == 0
    for r, p in zip(results, patterns, strict=True):
        s = r.slots.astype(np.int64)
        assert not r.noise.any()                   # blinded detectors give no dark counts
        assert np.all(np.isin(r.mask, [1, 2, 4, 8]))
        bob_basis = (r.mask >= 4).astype(np.uint8)
        sifted = bob_basis == p.basis[s]
        assert r.eve.knows_bit[sifted].all()
        bob_bit = np.isin(r.mask, [2, 8]).astype(np.uint8)
        assert np.array_equal(r.eve.bit[sifted], bob_bit[sifted])


def test_fiber_cut_leaves_only_dark_counts():
    sc = quiet("fiber-cut", attack__start_time_s=0.0004, detectors__dark_count_rate_hz=2e5)
    m = LinkModel(sc, seed=5)
    n = m.frame_slots
    cut = math.ceil(0.0004 * m.clock_hz)
    for f in range(3):
        r = m.run_frame(f)
        g = r.slot.astype(np.int64) + f * n
        assert not np.any(~r.noise & (g >= cut))
        if f == 0:
            assert (~r.noise).sum() > 1000
        if f == 2:
            assert r.n_events > 0 and r.noise.all()


# -- method, determinism, speed -----------------------------------------------------------------

def test_skip_sampling_agrees_with_per_slot_reference():
    sc = quiet(source__frame_slots=1 << 17, detectors__dark_count_rate_hz=1e5, detectors__dead_time_ns=10.0)
    counts = {}
    for method in ("skip", "per-slot"):
        m = LinkModel(sc, seed=31 if method == "skip" else 32)
        c = np.zeros((3, 4), np.int64)
        for f in range(4):
            pat = m.alice_pattern(f)
            r = m.run_frame(f, pat, method=method)
            np.add.at(c, (pat.intensity[r.slot.astype(np.int64)], r.detector), 1)
        counts[method] = c
    a, b = counts["skip"], counts["per-slot"]
    assert np.all(np.abs(a - b) <= SIGMAS * np.sqrt(a + b) + 1), (a, b)


def test_same_seed_same_events_whatever_the_batch_size():
    sc = Scenario.load("metro-25km").with_overrides({"source.frame_slots": 1 << 16,
                                                     "detectors.afterpulse_prob": 0.05})
    a = LinkModel(sc, seed=7).run_frames(0, 4)
    mb = LinkModel(sc, seed=7)
    b = mb.run_frames(0, 1) + mb.run_frames(1, 3)
    mc = LinkModel(sc, seed=7)
    c = [mc.run_frame(f) for f in range(4)]
    for x, y, z in zip(a, b, c, strict=True):
        for field in ("slot", "detector", "time_ps", "slots", "mask", "tag_t_ps", "tag_channel"):
            assert np.array_equal(getattr(x, field), getattr(y, field))
            assert np.array_equal(getattr(x, field), getattr(z, field))
    d = LinkModel(sc, seed=8).run_frame(0)
    assert not np.array_equal(d.slot[:100], a[0].slot[:100])


def test_model_rate_is_not_grossly_regressed():
    m = LinkModel("metro-25km", seed=1)
    pats = [m.alice_pattern(f) for f in range(4)]
    m.run_frame(0, pats[0])
    t0 = time.perf_counter()
    events = sum(m.run_frame(f, pats[f]).n_events for f in range(1, 4))
    rate = events / (time.perf_counter() - t0)
    assert rate > 1e6, f"{rate / 1e6:.2f} M events/s"


# -- controllers and bad input ---------------------------------------------------------------

def test_controller_models():
    h = np.array([1, 0])
    d = np.array([1, 1]) / math.sqrt(2)
    out = retarder(math.pi, math.radians(22.5)) @ h         # half-wave plate at 22.5 deg: H -> D
    assert abs(abs(np.vdot(d, out)) - 1) < 1e-12
    assert poincare_angle(epc400_rotation((0, 0, 0, 0)), np.eye(2)) < 1e-9
    assert poincare_angle(mpc320_rotation((0, 0, 0)), np.eye(2)) < 1e-6     # axes aligned: total 2 pi
    m = LinkModel(quiet(), seed=0)
    u = m.set_controller_epc400((1.0, -0.5, 2.0, 0.3))
    assert np.allclose(u.conj().T @ u, np.eye(2))
    u = m.set_controller_mpc320((10.0, 80.0, 33.0))
    assert np.allclose(m.rotation_at(0.0), u)


def test_bad_inputs_are_named():
    m = LinkModel(quiet(), seed=0)
    n = m.frame_slots
    z = np.zeros(n, np.uint8)
    with pytest.raises(ValueError, match="pattern.bit: expected shape"):
        m.run_frame(0, Pattern(z, z[:-1], z))
    with pytest.raises(TypeError, match="pattern.basis: expected dtype uint8"):
        m.run_frame(0, Pattern(z.astype(np.int32), z, z))
    with pytest.raises(ValueError, match="pattern.intensity: values must be < 3"):
        m.run_frame(0, Pattern(z, z, z + 3))
    with pytest.raises(ValueError, match="set_detector: dead_time_ns"):
        m.set_detector(1, dead_time_ns=-1.0)
    with pytest.raises(ValueError, match="unknown parameter 'gain'"):
        m.set_detector(1, gain=2.0)
    with pytest.raises(ValueError, match="u: not unitary"):
        m.set_controller_rotation(np.array([[1, 1], [0, 1]]))
    with pytest.raises(ValueError, match="kind: expected one of"):
        m.set_attack("mitm")
    with pytest.raises(ScenarioError, match=r"\[attack\] fraction"):
        m.set_attack("intercept-resend", fraction=2.0)
    with pytest.raises(ValueError, match="frame_index"):
        m.run_frame(-1)


# -- building blocks against plain-Python references -----------------------------------------------

def _dead_time_reference(slots, dead, prev=None):
    """The non-paralyzable rule, one click at a time (the definition)."""
    out, last = [], prev
    for s in slots:
        ok = last is None or s - last >= dead
        out.append(ok)
        if ok:
            last = s
    return np.array(out, dtype=bool)


def test_dead_time_keep_matches_the_sequential_rule():
    from hil.detectors import dead_time_keep

    rng = np.random.default_rng(0)
    for t in range(300):
        n = int(rng.integers(1, 400))
        s = np.unique(rng.integers(0, int(rng.integers(n, n * 30)), n))
        dead = int(rng.integers(1, 60))
        prev = None if t % 2 else -int(rng.integers(0, 60))
        assert np.array_equal(dead_time_keep(s, dead, prev), _dead_time_reference(s, dead, prev)), t


def test_bernoulli_positions_counts_and_gaps():
    from hil.detectors import bernoulli_positions

    rng = np.random.default_rng(1)
    n, p = 1 << 20, 0.01
    pos = bernoulli_positions(rng, n, p)
    assert np.all(np.diff(pos) > 0) and pos[0] >= 0 and pos[-1] < n
    assert within_binomial(len(pos), n, p), rate_close(len(pos), n, p)
    # P(gap == 1) = p for a Bernoulli process
    g = np.diff(pos)
    assert within_binomial(int((g == 1).sum()), len(g), p)
    assert len(bernoulli_positions(rng, n, 0.0)) == 0
    assert len(bernoulli_positions(rng, 100, 1.0)) == 100


def test_dead_time_all_detectors_at_once_matches_one_by_one():
    from hil.detectors import dead_time_keep_multi

    rng = np.random.default_rng(3)
    for t in range(200):
        n = int(rng.integers(1, 500))
        slots = np.sort(rng.integers(0, int(rng.integers(n // 4 + 1, n * 20)), n))
        det = rng.integers(0, 4, n).astype(np.uint8)
        key = np.unique(slots * 4 + det)                   # one click per (slot, detector)
        slots, det = key // 4, (key % 4).astype(np.uint8)
        dead = [int(x) for x in rng.integers(0, 50, 4)]
        prev = [None if rng.random() < 0.3 else -int(rng.integers(0, 80)) for _ in range(4)]
        got = dead_time_keep_multi(slots, det, dead, prev)
        for d in range(4):
            sel = det == d
            want = (_dead_time_reference(slots[sel], dead[d], prev[d]) if dead[d] > 1
                    else np.ones(sel.sum(), bool))
            assert np.array_equal(got[sel], want), (t, d)


def test_one_decoy_setting_uses_two_intensities():
    sc = quiet(source__decoys=1, source__intensity_probs=[0.8, 0.2, 0.0], source__frame_slots=1 << 16)
    m = LinkModel(sc, seed=1)
    pat = m.alice_pattern(0)
    assert set(np.unique(pat.intensity)) == {0, 1}
    assert within_binomial(int((pat.intensity == 1).sum()), len(pat), 0.2)
    assert within_binomial(int((pat.basis == 0).sum()), len(pat), sc.source.p_z)
    with pytest.raises(ScenarioError, match="decoys = 1"):
        quiet(source__decoys=1)

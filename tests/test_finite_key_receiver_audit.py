"""Independent audit of the passive receiver's multi-photon bound (link.finite_key,
"Measurement model"; 2026-11-25).

Derived here without the module's code: n photons at a splitter that sends every mode's light
to the Z arm with amplitude sqrt(p) reach Z only with probability p^n, X only with q^n and
both arms otherwise (a cross click), whatever their polarization; among the multi-photon
rounds that light the Z arm at least r_Z = 2q/(1+q) are cross clicks (n = 2 is the worst);
a time-uniform Chernoff/Hoeffding lower tail on the cross clicks bounds the Z-only ones, and
Alice's p_A-coin for her single photons bounds how many of those are sifted.

The checks: that premise from Fock-state amplitudes; a reference implementation of the bound
(bisection, no shared code) against ``multiphoton_detection_bounds``; photon-number-resolved
Monte Carlo through a splitter and four threshold detectors with dark counts, over many seeds,
for photon-number distributions an eavesdropper could choose (all two-photon, heavy-tailed,
adaptive stopping when the splitter was kind to her, a guard that vetoes after earlier
clicks); and what breaks the bound when its assumptions fail (a polarization-dependent
splitter, a splitter setting below the true one with dark counts in the data).
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from link import finite_key as fk

# --- the premise: routing by the splitter, from Fock amplitudes ----------------------------


def _route_probs_fock(coeffs: np.ndarray, p_h: float, p_v: float) -> tuple[float, float, float]:
    """(all Z, all X, both) for the n-photon polarization state sum_k c_k |k H, n-k V> through a
    splitter sending H light to Z with probability p_h and V light with p_v.

    a_H^dag -> sqrt(p_h) b_H^dag + sqrt(1-p_h) c_H^dag (likewise V); the output amplitude of
    |i bH, k-i cH, j bV, n-k-j cV> from |k, n-k> is
    C(k,i) C(n-k,j) sqrt(p_h^i q_h^(k-i) p_v^j q_v^(n-k-j)) sqrt(i!(k-i)! j!(n-k-j)! / (k!(n-k)!)).
    Different k give orthogonal outputs (k photons stay H), so probabilities add over k.
    """
    n = coeffs.size - 1
    coeffs = coeffs / np.linalg.norm(coeffs)
    q_h, q_v = 1.0 - p_h, 1.0 - p_v
    all_z = all_x = 0.0
    total = 0.0
    for k in range(n + 1):
        w = abs(coeffs[k]) ** 2
        for i in range(k + 1):
            for j in range(n - k + 1):
                amp = (math.comb(k, i) * math.comb(n - k, j)
                       * math.sqrt(p_h**i * q_h ** (k - i) * p_v**j * q_v ** (n - k - j))
                       * math.sqrt(math.factorial(i) * math.factorial(k - i) * math.factorial(j)
                                   * math.factorial(n - k - j) / (math.factorial(k) * math.factorial(n - k))))
                pr = w * amp * amp
                total += pr
                if i + j == n:
                    all_z += pr
                elif i + j == 0:
                    all_x += pr
    assert abs(total - 1.0) < 1e-12          # the splitter is unitary on the n-photon space
    return all_z, all_x, 1.0 - all_z - all_x


@pytest.mark.parametrize("n", [2, 3, 5])
def test_routing_is_p_to_the_n_for_any_polarization_state(n):
    rng = np.random.default_rng(3)
    for p in (0.5, 0.85, 0.9):
        for _ in range(5):
            c = rng.normal(size=n + 1) + 1j * rng.normal(size=n + 1)
            z, x, both = _route_probs_fock(c, p, p)
            assert z == pytest.approx(p**n, abs=1e-12) and x == pytest.approx((1 - p) ** n, abs=1e-12)


def test_cross_click_share_of_z_lit_rounds_is_smallest_at_two_photons():
    # s_n / (1 - q^n) over n >= 2: its minimum is n = 2, where it equals 2q / (1 + q) (r_Z)
    for p in (0.5, 0.7, 0.85, 0.9, 0.99):
        q = 1.0 - p
        shares = [(1 - p**n - q**n) / (1 - q**n) for n in range(2, 200)]
        assert min(shares) == pytest.approx(shares[0], abs=1e-15)
        assert shares[0] == pytest.approx(2 * q / (1 + q), abs=1e-15)
        assert all(b >= a - 1e-15 for a, b in zip(shares, shares[1:], strict=False))


def test_polarization_dependent_splitter_breaks_state_independence():
    # the bound's premise needs one splitting ratio for every mode Eve can use (polarization,
    # wavelength: Li et al., PRA 84, 062308 (2011), arXiv:1110.4574): with p_H != p_V, H light
    # reaches Z only with p_H^2, more than the average split's p^2 the bound assumes
    assert _route_probs_fock(np.array([0.0, 0.0, 1.0]), 0.9, 0.8)[0] == pytest.approx(0.81)  # |2 H>
    assert _route_probs_fock(np.array([1.0, 0.0, 0.0]), 0.9, 0.8)[0] == pytest.approx(0.64)  # |2 V>
    r_h = _route_probs_fock(np.array([0.0, 0.0, 1.0]), 0.9, 0.8)
    assert r_h[2] / (1 - r_h[1]) < 2 * 0.15 / 1.15      # fewer cross clicks than r_Z(0.85)


# --- a reference implementation of the bound ------------------------------------------------


def _ell(t: float, eps: float) -> float:
    # time-uniform per-count budget eps_t = eps / (2 t (1 + ln t)^2): sum over t >= 1 is <= eps
    t = max(t, 1.0)
    return math.log(2.0 * t * (1.0 + math.log(t)) ** 2 / eps)


def _ref_max_rounds(c: float, r: float, n_events: int, eps: float) -> float:
    """Largest real T in [0, N] with r T - sqrt(v T l(T)) <= C, by bisection (the set is an
    interval: (r T - sqrt(v T l(T))) / T grows with T once l > 3)."""
    v = min(2.0 * r, 0.5)

    def g(t: float) -> float:
        return r * t - math.sqrt(v * t * _ell(t, eps)) - c

    hi = float(max(n_events, 1))
    if g(hi) <= 0:
        return hi
    lo = 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if g(mid) <= 0 else (lo, mid)
    return lo


def _ref_bounds(p_lo: float, p_hi: float, c: int, n_events: int, p_a: float, eps: float):
    out = []
    for r, pa in ((2 * (1 - p_hi) / (2 - p_hi), p_a), (2 * p_lo / (1 + p_lo), 1 - p_a)):
        m = max(0.0, _ref_max_rounds(c, r, n_events, eps) - c)
        out.append(min(m, pa * m + math.sqrt(m * _ell(m, eps) / 2)))
    return out


@pytest.mark.parametrize("p,cross,events,p_a,eps", [
    (0.5, 6000, 10_000, 0.5, 1e-3),          # every event is Eve's two-photon pulse
    (0.85, 26_000, 100_000, 0.5, 1e-3),
    (0.85, 20_474, 2_578_670, 0.9, 1e-10 / 25),   # metro-25km block 1 (commit 4302470)
    (0.9, 100, 2_000_000, 0.9, 4e-12),
    (0.9, 0, 1_000_000, 0.5, 4e-12),
    (0.6, 3, 10, 0.7, 0.1),
])
def test_code_matches_the_reference_derivation(p, cross, events, p_a, eps):
    """The bound is never below the reference (that would be a too-long key) and within 1 %
    above it. The union over counts is time-uniform: T, M and N are all Eve's choices, so a
    bound spending eps/N on each t <= N (the code before this audit) falls below the
    reference where Eve makes every event hers (the first rows), and is not a bound there."""
    rx = fk.PassiveReceiver(p, cross, events, p_a)
    got = fk.multiphoton_detection_bounds(rx, eps)
    ref = _ref_bounds(p, p, cross, events, p_a, eps)
    for g, r in zip(got, ref, strict=True):
        assert g >= r * (1 - 1e-9) - 1e-9
        assert g <= r * 1.01 + 1e-6


def test_split_range_feeds_the_extremes_into_the_bound():
    # announced counts whose Z share is above the setting: B_Z uses the top, B_X the bottom
    eps = 1e-6
    rx = fk.PassiveReceiver(0.85, 500, 200_000, 0.5, announced=(180_000, 19_500))
    p_lo, p_hi = rx.split_range(eps)
    m = 180_000 / 199_500
    d = math.sqrt(math.log(1 / eps) / (2 * 199_500))
    assert (p_lo, p_hi) == pytest.approx((0.85, m + d))
    got = fk.multiphoton_detection_bounds(rx, eps)
    ref = _ref_bounds(p_lo, p_hi, 500, 200_000, 0.5, eps)
    assert got[0] >= ref[0] * (1 - 1e-9) and got[1] >= ref[1] * (1 - 1e-9)
    assert got[0] <= ref[0] * 1.01 and got[1] <= ref[1] * 1.01


# --- photon-number-resolved Monte Carlo -----------------------------------------------------


def _detect(rng, n_photons: np.ndarray, p: float, dark: float):
    """Route each photon independently (Z with p) and click the arms' threshold detectors
    (unit efficiency: equal efficiencies are loss in front of the splitter); each of the four
    detectors also fires a dark count with probability ``dark``. Returns (z_clicked, x_clicked)."""
    k_z = rng.binomial(n_photons, p)
    dark_z = rng.random(n_photons.shape) < 1 - (1 - dark) ** 2
    dark_x = rng.random(n_photons.shape) < 1 - (1 - dark) ** 2
    return (k_z > 0) | dark_z, (n_photons - k_z > 0) | dark_x


def _block(rng, seeds: int, attack: np.ndarray, p: float, p_a: float, honest: int, dark: float,
           p_eff: float | None = None):
    """Per seed: ``honest`` single-photon rounds at Bob, ``attack`` (seeds, A) photon numbers of
    Eve's rounds (each also one of Alice's single photons, her best case: all of them count),
    dark-count-only rounds. Returns the counts Bob reports and the true sifted multi-photon
    single-arm events (B_Z, B_X) per seed. ``p_eff``: the splitter's true share if the setting
    ``p`` is not it."""
    p_true = p if p_eff is None else p_eff
    out = []
    for s in range(seeds):
        n_h = np.ones(honest, np.int64)
        n_0 = np.zeros(honest // 10, np.int64)           # Eve blocked these: darks only
        n_a = attack[s]
        z, x = _detect(rng, np.concatenate([n_h, n_0, n_a]), p_true, dark)
        ev = z | x
        cross = int((z & x).sum())
        z_only, x_only = z & ~x, x & ~z
        alice_z = rng.random(n_a.size) < p_a
        multi = n_a >= 2
        za, xa = z_only[-n_a.size:], x_only[-n_a.size:]
        true_bz = int((za & multi & alice_z).sum())
        true_bx = int((xa & multi & ~alice_z).sum())
        out.append((cross, int(ev.sum()), (int(z_only.sum()), int(x_only.sum())), true_bz, true_bx))
    return out


def _attack(rng, kind: str, seeds: int, rounds: int) -> np.ndarray:
    if kind == "two-photon":
        return np.full((seeds, rounds), 2)
    if kind == "heavy-tailed":                      # P(n) ~ n^-2 from n = 2 on
        return rng.zipf(2.0, size=(seeds, rounds)) + 1
    if kind == "two-or-bright":                     # mostly n = 2, sometimes a bright pulse
        return np.where(rng.random((seeds, rounds)) < 0.98, 2, 200)
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["two-photon", "heavy-tailed", "two-or-bright"])
@pytest.mark.parametrize("p,p_a", [(0.5, 0.5), (0.85, 0.9), (0.9, 0.5)])
def test_bound_covers_the_truth_for_adversarial_photon_numbers(kind, p, p_a):
    """eps = 0.05 per term, so each of B_Z, B_X may fail with probability 0.1: over 40 seeds
    more than 12 failures would be a p < 1e-3 event for a valid bound. The bound is also
    not vacuous for the worst case (n = 2): it stays within 2.5x of the truth."""
    rng = np.random.default_rng(zlib.crc32(f"{kind} {p}".encode()))   # str hash() is salted
    seeds, eps = 40, 0.05
    rows = _block(rng, seeds, _attack(rng, kind, seeds, 3000), p, p_a, honest=20_000, dark=2e-3)
    fail_z = fail_x = 0
    ratios = []
    for cross, events, announced, bz, bx in rows:
        got_z, got_x = fk.multiphoton_detection_bounds(
            fk.PassiveReceiver(p, cross, events, p_a, announced=announced), eps)
        fail_z += bz > got_z
        fail_x += bx > got_x
        ratios.append(bz / got_z)
    assert fail_z <= 12 and fail_x <= 12
    if kind == "two-photon":
        assert np.mean(ratios) > 0.4


def test_monte_carlo_catches_a_bound_that_ignores_two_photons():
    """The same check has teeth: a bound built on the three-photon cross share
    (s_3 / (1 - q^3), above r_Z) fails for Eve's two-photon pulses in most seeds."""
    rng = np.random.default_rng(5)
    p, p_a, eps = 0.85, 0.9, 0.05
    q = 1 - p
    r3 = (1 - p**3 - q**3) / (1 - q**3)
    rows = _block(rng, 40, _attack(rng, "two-photon", 40, 3000), p, p_a, honest=20_000, dark=2e-3)
    fails = 0
    for cross, events, _, bz, _ in rows:
        m = _ref_max_rounds(cross, r3, events, eps) - cross
        fails += bz > min(m, p_a * m + math.sqrt(m * _ell(m, eps) / 2))
    assert fails >= 30


@pytest.mark.parametrize("p", [0.5, 0.85])
def test_adaptive_eve_stopping_when_lucky_and_a_predictable_guard(p):
    """Eve sends two-photon pulses and sees from Bob's announcements which were cross clicks;
    she ends the block (N = the events so far: all hers) at the first count where Z-only
    events exceed the bound. Bob drops every event that follows a cross click (a stand-in
    for the dead-time guard: it depends on earlier clicks only). With eps = 0.2 each of the
    two Z tails, her success must stay below 0.4; a veto that looks at the event itself
    (dropping 70 % of the cross clicks) must break it."""
    rng = np.random.default_rng(17 + int(100 * p))
    trials, rounds, eps, p_a = 4000, 250, 0.2, 0.999
    q = 1 - p
    # the code's B_Z for every (C, N) Eve can reach (N <= rounds kept events, C <= N)
    table = np.full((rounds + 1, rounds + 1), np.inf)
    for n in range(1, rounds + 1):
        for c in range(n + 1):
            table[c, n] = fk.multiphoton_detection_bounds(fk.PassiveReceiver(p, c, n, p_a), eps)[0]
    u = rng.random((trials, rounds))
    z_only, cross = u < p * p, u >= p * p + q * q
    alice_z = rng.random(u.shape) < p_a

    def eve_wins(kept: np.ndarray) -> float:
        c = np.cumsum(cross & kept, 1)
        z = np.cumsum(z_only & kept & alice_z, 1)
        n = np.cumsum(kept, 1)
        return float((z > table[c, n]).any(1).mean())

    prev_cross = np.zeros_like(cross)
    prev_cross[:, 1:] = cross[:, :-1]
    assert eve_wins(~prev_cross) < 2 * eps
    assert eve_wins(~(cross & (rng.random(u.shape) < 0.7))) > 2 * eps


# --- assumptions the bound needs --------------------------------------------------------------


def test_bound_fails_for_a_polarization_dependent_splitter():
    """Outside the model, stated so the lab knows it matters: a splitter with p_H = 0.9 and
    p_V = 0.8 passes honest BB84 light at 0.85 on average, so the calibrated setting is 0.85;
    Eve's H-polarized two-photon pulses see p = 0.9 and make fewer cross clicks than r_Z(0.85)
    assumes. The bound (given the measured share too) fails in every seed."""
    rng = np.random.default_rng(23)
    fails = 0
    honest, attack, p_a = 400_000, 20_000, 0.5
    for _ in range(10):
        # honest single photons: Z share 0.85 on average over BB84's four states
        h_z = int(rng.binomial(honest, 0.85))
        # Eve's |2 H> pulses at p_H = 0.9
        z, x = _detect(rng, np.full(attack, 2), 0.9, 0.0)
        cross = int((z & x).sum())
        z_only, x_only = int((z & ~x).sum()), int((x & ~z).sum())
        true_bz = int(rng.binomial(z_only, p_a))
        rx = fk.PassiveReceiver(0.85, cross, honest + attack, p_a,
                                announced=(h_z + z_only, honest - h_z + x_only))
        fails += true_bz > fk.multiphoton_detection_bounds(rx, 1e-6)[0]
    assert fails == 10


@pytest.mark.xfail(strict=True, reason=(
    "audit 2026-11-25: PassiveReceiver.split_range claims the measured share +- its Hoeffding "
    "deviation makes a wrong receiver_split_z safe, but dark counts (Z share ~1/2) pull the "
    "measured share below the true split: with the setting below the truth (e.g. the default "
    "0.5 on a 90:10 splitter) and ~5 % dark-count events, B_Z is too small. That deviation's "
    "eps is also not in the budget. Not fixed: a valid bound needs a trusted split or a bound "
    "on the dark-count share."))
def test_wrong_split_setting_with_dark_counts_is_covered_by_the_measured_share():
    rng = np.random.default_rng(29)
    fails = 0
    p_true, p_a, eps = 0.9, 0.5, 1e-3
    for _ in range(10):
        honest, darks, attack = 1_000_000, 55_000, 100_000
        # honest single photons split at 0.9; dark-count-only events at 1/2; Eve's 2-photon pulses
        k_z = rng.binomial(attack, p_true**2)
        k_x = rng.binomial(attack - k_z, (1 - p_true) ** 2 / (1 - p_true**2))
        cross = attack - k_z - k_x
        ann_z = rng.binomial(honest, p_true) + rng.binomial(darks, 0.5) + k_z
        ann_x = honest + darks + k_z + k_x - ann_z
        true_bz = rng.binomial(k_z, p_a)
        rx = fk.PassiveReceiver(0.5, int(cross), honest + darks + attack, p_a,
                                announced=(int(ann_z), int(ann_x)))
        fails += true_bz > fk.multiphoton_detection_bounds(rx, eps)[0]
    assert fails == 0


def test_a_receiver_splitting_less_than_half_to_z_is_refused():
    """Dark-count-only events (Z share ~1/2) are over-sampled in X, the conservative side, only
    for p >= 1/2 (module docstring); below, they would need a bound of their own (audit
    2026-11-25: it was accepted). Refused, in the receiver and in a node file."""
    with pytest.raises(ValueError, match="split_z"):
        fk.PassiveReceiver(0.3, 10, 1000, 0.5)
    fk.PassiveReceiver(0.5, 10, 1000, 0.5)


def test_a_node_file_with_a_passive_split_below_half_is_refused(tmp_path):
    from link.config import ConfigError, load_node_file

    f = tmp_path / "bob.toml"
    f.write_text('[node]\nrole = "bob"\nlink_id = "l"\npsk = "b.psk"\nstore = "b.db"\n'
                 '[channel]\nproto = "tcp://127.0.0.1:7100"\nctrl = "tcp://127.0.0.1:7101"\n'
                 '[protocol]\nreceiver_split_z = 0.4\n')
    with pytest.raises(ConfigError, match="receiver_split_z.*0.5 <= receiver_split_z"):
        load_node_file(f)


_EDGE_SLOTS = 1 << 16          # slots per frame of the Slotter below
_EDGE_SPACING = 40             # slots between Eve's pulses (the guard is ~11)
_EDGE_JITTER_PS = 30.0


def _edge_attack(rng, pulses: int, p: float, kind: str):
    """Eve's H-polarized two-photon pulses (both photons at one time) at the edge of the
    slotter's rules, through ``link.slotting.Slotter`` (the C path the link runs; period 1 ns,
    window 800 ps, dead time 10 ns). Each detector that absorbs a photon fires once, at the
    photons' time plus its own jitter (one click however many photons it absorbed).
    ``window``: the photons arrive 0.674 sigma inside the window's edge (a lone tag lands in the
    window with probability 3/4). ``guard``: Eve makes detector A click one guard before the
    slot (plus its jitter), so that the guard vetoes her event about half the time. Returns
    (z_only, x_only, cross) masks over the pulses of the events Bob kept."""
    from link.slotting import Slotter

    period, window, dead = 1000.0, 800.0, 10_000.0
    k_z = rng.binomial(2, p, pulses)                   # photons in the Z arm (H: both on one detector)
    z_hit, x_hit = k_z > 0, k_z < 2
    # X photons are H-polarized: D or A with 1/2 each; two of them hit both half the time
    x_first = rng.integers(0, 2, pulses)
    x_two = (k_z == 0) & (rng.random(pulses) < 0.5)
    slot = 20 + _EDGE_SPACING * np.arange(pulses, dtype=np.int64)
    at = slot * period + (window / 2 - 0.674 * _EDGE_JITTER_PS if kind == "window" else 0.0)

    def jit(n):
        return rng.normal(0.0, _EDGE_JITTER_PS, int(n))

    t = [at[z_hit] + jit(z_hit.sum()), at[x_hit] + jit(x_hit.sum()), at[x_two] + jit(x_two.sum())]
    ch = [np.full(z_hit.sum(), 1), 3 + x_first[x_hit], 4 - x_first[x_two]]
    if kind == "guard":
        t.append(slot * period - (dead + window) + jit(pulses))
        ch.append(np.full(pulses, 4))
    frames = int(slot[-1] // _EDGE_SLOTS) + 2
    t.append(np.arange(frames) * _EDGE_SLOTS * period)
    ch.append(np.zeros(frames, int))
    t, ch = np.rint(np.concatenate(t)).astype(np.int64), np.concatenate(ch).astype(np.uint8)
    order = np.argsort(t, kind="stable")
    sl = Slotter(_EDGE_SLOTS, period, (0.0,) * 4, window, dead_time_ps=dead)
    kept = {}
    for f in sl.push(t[order], ch[order]) + sl.flush():
        keys = (f.frame_index * _EDGE_SLOTS + f.slots.astype(np.int64)).tolist()
        kept.update(zip(keys, f.masks.tolist()))
    mask = np.array([kept.get(s, 0) for s in slot.tolist()])
    z, x = (mask & 0b0011) > 0, (mask & 0b1100) > 0
    return z & ~x, x & ~z, z & x


@pytest.mark.parametrize("kind", ["window", "guard"])
def test_bound_survives_pulses_at_the_edge_of_the_slotters_rules(kind):
    """Eve times two-photon pulses at the edge of the detection window or of the dead-time
    guard (as in time-shift attacks): the slotter must keep a cross click at least as often as a
    single-arm click, or B_Z falls below the truth. Failed with the per-tag window and the guard
    timed from the event's earliest tag (audit 2026-11-25: B_Z 47,242 vs 58,780 true at the
    window's edge, 22,691 vs 36,015 at the guard's); link.slotting's rules are now per event."""
    rng = np.random.default_rng(31)
    p, p_a, eps, fails = 0.85, 0.5, 1e-6, 0
    for _ in range(10):
        honest, pulses = 1_000_000, 200_000
        z_only, x_only, cross = _edge_attack(rng, pulses, p, kind)
        h_z = int(rng.binomial(honest, p))
        true_bz = int(rng.binomial(int(z_only.sum()), p_a))
        rx = fk.PassiveReceiver(p, int(cross.sum()), honest + int((z_only | x_only | cross).sum()), p_a,
                                announced=(h_z + int(z_only.sum()), honest - h_z + int(x_only.sum())))
        fails += true_bz > fk.multiphoton_detection_bounds(rx, eps)[0]
    assert fails == 0


def _arm_probs(theta: float, eff: tuple[float, float, float, float], p: float) -> tuple[float, float]:
    """(a, b): probability that one photon polarized at ``theta`` (radians from H) is detected in
    the Z arm, in the X arm, with detectors (H, V, D, A) of efficiencies ``eff``. Two-photon
    Z-lit rounds are cross clicks with share 2x / (1 + 2x), x = b / a."""
    c_z, c_x = math.cos(theta) ** 2, math.cos(theta - math.pi / 4) ** 2
    return (p * (c_z * eff[0] + (1 - c_z) * eff[1]),
            (1 - p) * (c_x * eff[2] + (1 - c_x) * eff[3]))


def test_within_basis_efficiency_mismatch_the_alarm_allows_lowers_the_cross_share():
    """The bound assumes the four efficiencies equal; the node's detector_mismatch alarm fires
    at a share of 1s ~0.025 off 1/2. At H 0.70 / V 0.64, D 0.71 / A 0.65 (shares of 1s 0.478,
    no alarm) Eve's best polarization gives her two-photon pulses a cross share 4-5 % below
    that of honest BB84 light's split (what the measured share, and so the bound, sees);
    equal efficiencies leave her nothing."""
    thetas = np.linspace(-math.pi / 2, math.pi / 2, 721)
    bb84 = (0.0, math.pi / 2, math.pi / 4, -math.pi / 4)

    def share(x: float) -> float:
        return 2 * x / (1 + 2 * x)

    for eff, lo, hi in (((0.7, 0.7, 0.7, 0.7), 0.0, 1e-12), ((0.70, 0.64, 0.71, 0.65), 0.04, 0.05)):
        assert 0.5 - eff[1] / (eff[0] + eff[1]) < 0.025        # below the alarm's margin
        a_h, b_h = np.mean([_arm_probs(t, eff, 0.85) for t in bb84], axis=0)
        worst = min(share(b / a) for a, b in (_arm_probs(t, eff, 0.85) for t in thetas))
        assert lo - 1e-12 <= 1 - worst / share(b_h / a_h) <= hi

"""Finite-key bounds checked against quantities computed independently here.

* The decoy bounds must be valid lower/upper bounds of the true photon-number
  counts of a channel whose yields we know exactly, and no better than the
  optimum of the linear program they relax (solved with scipy's LP solver).
* The key length must reproduce a value worked through by hand below, react
  correctly to the block size and the error rate, and abort at high QBER.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import linprog

from link.channel_model import FiberSystem
from link.finite_key import (
    BasisCounts,
    DecoySettings,
    binary_entropy,
    secret_key_length,
    single_photon_bounds,
)

TWO = DecoySettings(mus=(0.5, 0.1, 2e-4), probs=(0.7, 0.2, 0.1))
ONE = DecoySettings(mus=(0.5, 0.1), probs=(0.7, 0.3))


def _true_counts(decoy: DecoySettings, n_pulses: float, eta: float, y0: float, e_det: float,
                 n_max: int = 40):
    """Exact expected counts from photon-number yields Y_n = 1 - (1 - y0)(1 - eta)^n."""
    n = np.arange(n_max)
    fact = np.array([math.factorial(int(i)) for i in n], dtype=float)
    y = 1.0 - (1.0 - y0) * (1.0 - eta) ** n
    err = e_det * y + (0.5 - e_det) * y0 * (1.0 - eta) ** n  # dark clicks err half the time
    p_n_given_k = np.array([np.exp(-m) * m**n / fact for m in decoy.mus])  # Poisson
    counts = n_pulses * np.array(decoy.probs) * (p_n_given_k * y).sum(axis=1)
    errors = n_pulses * np.array(decoy.probs) * (p_n_given_k * err).sum(axis=1)
    tau_n = np.array(decoy.probs) @ p_n_given_k
    s_true = n_pulses * tau_n * y           # detections that came from n-photon pulses
    v_true = n_pulses * tau_n * err
    return counts, errors, s_true, v_true


@pytest.mark.parametrize("decoy,protocol", [(TWO, "2-decoy"), (ONE, "1-decoy")])
@pytest.mark.parametrize("eta", [1e-1, 1e-2, 1e-3])
def test_decoy_bounds_are_valid_and_tight(decoy, protocol, eta):
    n_pulses = 1e16  # statistical terms negligible: the bounds must hold for expectations
    counts, errors, s_true, v_true = _true_counts(decoy, n_pulses, eta, y0=1e-6, e_det=0.01)
    c = BasisCounts(tuple(counts), tuple(errors))
    b = single_photon_bounds(c, c, decoy, eps_sec=1e-10, protocol=protocol)
    assert b["s1"] <= s_true[1] * (1 + 1e-9)
    assert b["v1_test"] >= v_true[1] * (1 - 1e-9)
    assert b["s0"] <= s_true[0] * (1 + 1e-9)
    # 2-decoy with a near-vacuum decoy is tight; 1-decoy gives up some single photons
    assert b["s1"] >= s_true[1] * (0.9 if protocol == "2-decoy" else 0.6)


def test_single_photon_bound_no_better_than_linear_program():
    # The analytic bound (Lim Eq. 3) relaxes the LP: minimize s1 subject to the
    # observed counts of each intensity being sum_n P(n|k) Y_n N, 0 <= Y_n <= 1.
    decoy = TWO
    n_pulses = 1e14
    counts, errors, s_true, _ = _true_counts(decoy, n_pulses, 1e-2, 1e-6, 0.01)
    n_max = 25
    n = np.arange(n_max)
    fact = np.array([math.factorial(int(i)) for i in n], dtype=float)
    a_eq = np.array([p * n_pulses * np.exp(-m) * m**n / fact for m, p in zip(decoy.mus, decoy.probs)])
    tau1 = sum(p * math.exp(-m) * m for m, p in zip(decoy.mus, decoy.probs))
    cost = np.zeros(n_max)
    cost[1] = n_pulses * tau1
    # the tail beyond n_max is bounded by its weight, so allow that much slack
    tail = np.array([p * n_pulses * (1 - sum(math.exp(-m) * m**i / math.factorial(i) for i in range(n_max)))
                     for m, p in zip(decoy.mus, decoy.probs)])
    res = linprog(cost, A_ub=np.vstack([a_eq, -a_eq]),
                  b_ub=np.concatenate([counts + tail + 1e-6 * counts, -(counts - 1e-6 * counts)]),
                  bounds=[(0, 1)] * n_max, method="highs")
    assert res.status == 0
    c = BasisCounts(tuple(counts), tuple(errors))
    b = single_photon_bounds(c, c, decoy, eps_sec=1e-10, protocol="2-decoy")
    assert b["s1"] <= res.fun * (1 + 1e-6) + 1e-6 * counts.sum()
    assert res.fun <= s_true[1] * (1 + 1e-6)


def test_key_length_worked_example():
    # A block worked through by hand from Lim 2014 Eqs. (1)-(5), written out
    # longhand here rather than through the module's helpers.
    # counts a source with these intensities can give (gain per pulse of mu2 about mu2/mu1 of mu1's);
    # they were (700k, 150k, 1k) / (70k, 15k, 100): s0 + s1 = 2.0M above n_Z = 851k, no longer keyed
    key = BasisCounts(n=(700_000, 45_000, 1_000), m=None)
    test = BasisCounts(n=(300_000, 19_000, 400), m=(1500, 150, 150))
    eps_sec, eps_cor, leak = 1e-10, 1e-15, 80_000
    mu1, mu2, mu3 = TWO.mus
    p1, p2, p3 = TWO.probs
    eps = eps_sec / 21
    t0 = p1 * math.exp(-mu1) + p2 * math.exp(-mu2) + p3 * math.exp(-mu3)
    t1 = p1 * math.exp(-mu1) * mu1 + p2 * math.exp(-mu2) * mu2 + p3 * math.exp(-mu3) * mu3

    def bounds(n1, n2, n3):
        d = math.sqrt((n1 + n2 + n3) / 2 * math.log(1 / eps))
        n1p = math.exp(mu1) / p1 * (n1 + d)
        n2m, n2p = math.exp(mu2) / p2 * max(0, n2 - d), math.exp(mu2) / p2 * (n2 + d)
        n3m, n3p = math.exp(mu3) / p3 * max(0, n3 - d), math.exp(mu3) / p3 * (n3 + d)
        s0 = max(0.0, t0 * (mu2 * n3m - mu3 * n2p) / (mu2 - mu3))
        s1 = t1 * mu1 * (n2m - n3p - (mu2**2 - mu3**2) / mu1**2 * (n1p - s0 / t0)) / (
            mu1 * (mu2 - mu3) - mu2**2 + mu3**2)
        return s0, s1

    s0z, s1z = bounds(*key.n)
    _, s1x = bounds(*test.n)
    dm = math.sqrt(sum(test.m) / 2 * math.log(1 / eps))
    # test.m[2] = 150 < dm (about 153): its lower bound is clipped at 0, not negative
    assert test.m[2] < dm
    v1x = t1 * (math.exp(mu2) / p2 * (test.m[1] + dm) - math.exp(mu3) / p3 * max(0.0, test.m[2] - dm)) / (
        mu2 - mu3)
    b = v1x / s1x
    g = math.sqrt((s1x + s1z) * (1 - b) * b / (s1x * s1z * math.log(2))
                  * math.log2((s1x + s1z) / (s1x * s1z * (1 - b) * b) * 21**2 / eps_sec**2))
    phi = b + g
    ell = math.floor(s0z + s1z - s1z * binary_entropy(phi) - leak
                     - 6 * math.log2(21 / eps_sec) - math.log2(2 / eps_cor))
    res = secret_key_length(key, test, TWO, leak_ec_bits=leak, eps_sec=eps_sec, eps_cor=eps_cor)
    assert res.ell == ell
    assert ell > 100_000
    assert res.phase_error == pytest.approx(phi, rel=1e-12)
    assert res.eps.parameter_estimation + res.eps.privacy_amplification == pytest.approx(eps_sec)


@pytest.mark.parametrize("protocol,decoy", [("2-decoy", TWO), ("1-decoy", ONE)])
def test_key_length_grows_with_block_and_aborts_on_high_qber(protocol, decoy):
    sys = FiberSystem()
    decoy = (DecoySettings((0.5, 0.15, 2e-4), (0.6, 0.3, 0.1)) if protocol == "2-decoy"
             else DecoySettings((0.5, 0.15), (0.7, 0.3)))
    ells = []
    for n_key in (1e7, 1e8, 1e9):
        key, test, n_pulses, leak = sys.expected_counts(25.0, n_key, 0.8, decoy)
        r = secret_key_length(key, test, decoy, leak_ec_bits=int(leak), protocol=protocol)
        ells.append(r.ell / n_pulses)
    assert all(b > a for a, b in zip(ells, ells[1:])), ells
    # An intercept-resend-like block: 25 % errors in the test basis
    key, test, _, leak = sys.expected_counts(25.0, 1e8, 0.8, decoy)
    bad = BasisCounts(test.n, tuple(0.25 * x for x in test.n))
    r = secret_key_length(key, bad, decoy, leak_ec_bits=int(leak), protocol=protocol)
    assert r.ell == 0 and r.reason


def test_bad_arguments_name_the_problem():
    c = BasisCounts((1, 2, 3), (0, 0, 0))
    with pytest.raises(ValueError, match="mus"):
        secret_key_length(c, c, DecoySettings((0.1, 0.5, 0.0), (0.5, 0.3, 0.2)), leak_ec_bits=0)
    with pytest.raises(ValueError, match="probs"):
        DecoySettings((0.5, 0.1, 0.0), (0.5, 0.3, 0.3))
    with pytest.raises(ValueError, match="key.m"):
        secret_key_length(BasisCounts((10, 5)), BasisCounts((10, 5), (1, 1)), ONE,
                          leak_ec_bits=0, protocol="1-decoy")
    with pytest.raises(ValueError, match="test.m"):
        secret_key_length(c, BasisCounts((1, 2, 3)), TWO, leak_ec_bits=0)
    with pytest.raises(ValueError, match="protocol"):
        secret_key_length(c, c, TWO, leak_ec_bits=0, protocol="3-decoy")


def test_clipped_bounds_stay_valid_on_small_sampled_blocks():
    # Small blocks where the near-vacuum intensity has fewer errors than the
    # Hoeffding delta, so its lower bound m^-_{mu3} is clipped at 0 instead of
    # going negative. Sample the counts (Poisson around the exact expectations)
    # many times: the single-photon bounds must still hold for the expectations
    # in every trial (failure probability ~ eps_sec), and the clipped v1 must be
    # exactly the hand formula tau1 e^mu2/p2 (m2 + delta) / (mu2 - mu3).
    rng = np.random.default_rng(7)
    decoy = TWO
    n_pulses = 2e6
    counts, errors, s_true, v_true = _true_counts(decoy, n_pulses, 1e-2, 1e-6, 0.01)
    mu1, mu2, mu3 = decoy.mus
    t1 = sum(p * math.exp(-m) * m for m, p in zip(decoy.mus, decoy.probs))
    clipped_seen = 0
    for _ in range(200):
        n = tuple(int(x) for x in rng.poisson(counts))
        m = tuple(int(x) for x in rng.poisson(errors))
        c = BasisCounts(n, m)
        b = single_photon_bounds(c, c, decoy, eps_sec=1e-10, protocol="2-decoy")
        assert b["s1"] <= s_true[1]
        assert b["v1_test"] >= v_true[1]
        dm = math.sqrt(sum(m) / 2 * math.log(21 / 1e-10))
        if m[2] < dm:
            clipped_seen += 1
            hand = t1 * math.exp(mu2) / decoy.probs[1] * (m[1] + dm) / (mu2 - mu3)
            assert b["v1_test"] == pytest.approx(hand, rel=1e-12)
    assert clipped_seen == 200


def test_channel_model_conventions():
    # mu = 0: only dark counts click. Per detector (printed D_k): 2 p_dc, half of them errors.
    per, tot = FiberSystem(), FiberSystem(dark_counts_total=True)
    r, e = per.per_pulse(50.0, 0.0)
    assert r == pytest.approx(2 * 6e-7 * 1.04, rel=1e-9)
    assert e == pytest.approx(6e-7 + 0.04 * 1.2e-6 / 2, rel=1e-9)
    r, e = tot.per_pulse(50.0, 0.0)
    assert r == pytest.approx(6e-7 * 1.04, rel=1e-9)
    assert e == pytest.approx(3e-7 + 0.04 * 6e-7 / 2, rel=1e-9)
    decoy = DecoySettings((0.5, 0.1, 2e-4), (0.5, 0.3, 0.2))
    key, _, _, leak_avg = per.expected_counts(100.0, 1e6, 0.5, decoy)
    _, _, _, leak_k = FiberSystem(leak_per_intensity=True).expected_counts(100.0, 1e6, 0.5, decoy)
    hand = 1.16 * sum(n * binary_entropy(m / n) for n, m in zip(key.n, key.m))
    assert leak_k == pytest.approx(hand, rel=1e-12)
    assert leak_k < leak_avg  # h is concave: per-intensity rates leak less


def test_repro_solves_eps_sec_equal_kappa_ell_for_the_largest_fixed_point():
    from bench.finite_key_repro import EPS_COR, KAPPA, evaluate

    sysm = FiberSystem()
    x = (math.log10(0.42), 0.036, 0.56, 0.50, 0.098)  # near the optimum at 100 km, n_X = 1e4
    ell, n_pulses, _ = evaluate(x, 100.0, 1e4, sysm)
    decoy = DecoySettings((0.50, 0.098, 2e-4), (0.036, 0.964 * 0.56, 0.964 * 0.44))
    key, test, n2, leak = sysm.expected_counts(100.0, 1e4, 0.42, decoy)
    assert n2 == pytest.approx(n_pulses)

    def f(v):
        return secret_key_length(key, test, decoy, leak_ec_bits=math.ceil(leak), eps_sec=KAPPA * v,
                                 eps_cor=EPS_COR).ell

    assert ell > 0 and f(ell) == ell
    assert all(f(v) < v for v in (ell + 1, ell + 10, 2 * ell, 10_000))
    # the same point with q_x = 0.5 (the old optimizer's floor) gives far less key
    x5 = (math.log10(0.5),) + x[1:]
    assert evaluate(x5, 100.0, 1e4, sysm)[0] / evaluate(x5, 100.0, 1e4, sysm)[1] < ell / n_pulses


def test_intensities_other_than_the_sources_give_no_key_not_more_than_the_block():
    # `qkd alice`/`qkd bob` with the node file's default intensities (0.5, 0.1, 0.0002) on a rig whose
    # source sends (0.42, 0.22, 0.0002): the decoy bounds came out above n_Z and every block died
    # in privacy amplification ("n_out: must be in 1..n_in (1057590), got 1392003")
    true, probs = (0.42, 0.22, 0.0002), (0.5, 0.3, 0.2)
    eta, pulses = 10 ** -0.7 * 0.7, 5e7            # 25 km + 1 dB at Bob, SNSPD efficiency

    def counts(err):
        n = tuple(int(pulses * p * (1 - math.exp(-eta * m)) + pulses * p * 1e-7) for m, p in zip(true, probs))
        return n, tuple(int(x * err) + int(pulses * p * 5e-8) for x, p in zip(n, probs))

    n, _ = counts(0.003)
    nx, mx = counts(0.003)
    right = secret_key_length(BasisCounts(n), BasisCounts(nx, mx), DecoySettings(true, probs),
                              leak_ec_bits=30000)
    assert 0 < right.ell < sum(n)                 # the model's own intensities: key, and less than n_Z
    wrong = secret_key_length(BasisCounts(n), BasisCounts(nx, mx), DecoySettings((0.5, 0.1, 0.0002), probs),
                              leak_ec_bits=30000)
    assert wrong.s0 + wrong.s1 > sum(n)           # the contradiction itself
    assert wrong.ell == 0 and "do not match the source" in wrong.reason and str(sum(n)) in wrong.reason


def test_gamma_is_zero_where_the_tail_prefactor_alone_meets_the_bound():
    """Lim 2014 Eq. (5) inverted: gamma solves
    sqrt((c+d)/(c d b(1-b))) 2^(-c d ln2 gamma^2 / (2 (c+d) b(1-b))) = a/T.
    Where the prefactor is already <= a/T (huge samples, large a) gamma = 0, not a math domain
    error; elsewhere the closed form holds that equation."""
    from link.finite_key import gamma

    a, b, c, d, t = 0.5, 0.5, 1e12, 1e12, 21
    assert math.sqrt((c + d) / (c * d * b * (1 - b))) <= a / t
    assert gamma(a, b, c, d, t) == 0.0
    a, b, c, d = 1e-10, 0.03, 2e5, 1e6
    g = gamma(a, b, c, d, t)
    lhs = math.sqrt((c + d) / (c * d * b * (1 - b))) * 2 ** (-c * d * math.log(2) * g * g
                                                               / (2 * (c + d) * b * (1 - b)))
    assert g > 0 and math.isclose(lhs, a / t, rel_tol=1e-9)

"""Second reader's audit of the detector efficiency mismatch bound (link.finite_key, "Detector
efficiency mismatch", "Audit of the mismatch bound"): Eve's efficiency-mismatch attacks simulated
photon by photon, with the coupling the derivation uses (one uniform U per photon: a real click
iff U < eta_d(mode), a common click iff U < min_d eta_d(mode)), so that the quantities the bound
is about, which no real run can see, are counted exactly: the tagged events, the untagged events
with one photon at Alice and at most one at the common receiver, and their phase errors.

Channel: every photon of Alice's pulse survives with probability ``trans``; a surviving photon is
intercepted with probability ``f_ir``: Eve measures it in a random basis e and resends
``resend`` photons in her result's state, in a mode t_e of her choice within the configured
ratio (below); the rest arrive untouched in a mode where Bob's four detectors are equal. No dark
counts (the dark-count residuals are arithmetic in the docstring, not simulated here). Phase
error of an intercepted single photon in the key basis (Z): Eve measured in Z -> 1/2, in X -> 0
(entanglement picture: Alice's X outcome then equals Eve's, and Bob's X measurement of Eve's X
state returns it); an untouched photon has none (the channel is otherwise error-free).

Eve's modes: ``"basis"``: both detectors of her basis at eta, the other two at rho eta (Bob
detects mostly when his basis matches hers: the faked-state / time-shift attack's aim);
``"bit"``: only the detector of her result at eta, the other three at rho eta.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from link import finite_key as fk

MUS, PROBS = (0.42, 0.22, 0.0002), (0.5, 0.3, 0.2)
DECOY = fk.DecoySettings(MUS, PROBS)


def _simulate(n_pulses: int, rho: float, f_ir: float, *, trans: float = 1.0, eta: float = 1.0,
              mode: str = "basis", resend: int = 1, passive: bool = False, p_o: float = 0.5,
              seed: int = 1) -> tuple:
    rng = np.random.default_rng(seed)
    k = rng.choice(3, n_pulses, p=PROBS)
    a_basis = (rng.random(n_pulses) >= 0.5).astype(np.int8)          # Alice: 0 Z, 1 X (p_z 1/2)
    a_bit = rng.integers(0, 2, n_pulses, dtype=np.int8)
    nph = rng.poisson(np.asarray(MUS)[k])
    pid = np.repeat(np.arange(n_pulses), nph)
    pid = pid[rng.random(pid.size) < trans]
    ir = rng.random(pid.size) < f_ir
    e = rng.integers(0, 2, pid.size, dtype=np.int8)
    ab, abit = a_basis[pid], a_bit[pid]
    eve_bit = np.where(e == ab, abit, rng.integers(0, 2, pid.size, dtype=np.int8))
    # each intercepted photon is resent as `resend` photons in Eve's state and mode
    rep = np.where(ir, resend, 1)
    pid, ir, e = np.repeat(pid, rep), np.repeat(ir, rep), np.repeat(e, rep)
    sb = np.where(ir, e, np.repeat(ab, rep))
    sbit = np.where(ir, np.repeat(eve_bit, rep), np.repeat(abit, rep))
    m = pid.size
    if passive:
        bb = (rng.random(m) >= p_o).astype(np.int8)                   # per photon: the splitter
    else:
        bb = (rng.random(n_pulses) >= 0.5).astype(np.int8)[pid]       # per pulse: Bob's modulator
    out = np.where(bb == sb, sbit, rng.integers(0, 2, m, dtype=np.int8))
    det = bb * 2 + out                                                 # H V D A
    if mode == "basis":
        strong = bb == e
    elif mode == "bit":
        strong = (bb == e) & (out == sbit)
    else:
        raise ValueError(mode)
    eff = np.where(ir & ~strong, rho * eta, eta)
    eff_c = np.where(ir, rho * eta, eta)                               # min over the four detectors
    u = rng.random(m)
    real, comm = u < eff, u < eff_c
    real_pat = np.zeros((n_pulses, 4), bool)
    comm_pat = np.zeros((n_pulses, 4), bool)
    real_pat[pid[real], det[real]] = True
    comm_pat[pid[comm], det[comm]] = True
    n_common = np.bincount(pid[comm], minlength=n_pulses)             # photons the common receiver sees
    ir_z = np.zeros(n_pulses, bool)
    ir_z[pid[ir & (e == 0)]] = True
    zc, xc = real_pat[:, :2].sum(1), real_pat[:, 2:].sum(1)
    zonly, xonly = (zc > 0) & (xc == 0), (xc > 0) & (zc == 0)
    rbit = rng.integers(0, 2, n_pulses, dtype=np.int8)                 # squashing: double click
    bbit = np.where(zonly, np.where(zc == 2, rbit, real_pat[:, 1]),
                    np.where(xc == 2, rbit, real_pat[:, 3])).astype(np.int8)
    bob_basis = np.where(zonly, 0, 1)
    sifted = (zonly | xonly) & (bob_basis == a_basis)
    err = sifted & (bbit != a_bit)
    tagged = (real_pat != comm_pat).any(1)
    key, test = sifted & (a_basis == 0), sifted & (a_basis == 1)
    per = [k == i for i in range(3)]
    kc, tc = (fk.BasisCounts(tuple(int(np.sum(b & c)) for c in per),
                             tuple(int(np.sum(b & err & c)) for c in per)) for b in (key, test))
    event = zonly | xonly | ((zc > 0) & (xc > 0))
    rx = None
    if passive:
        rx = fk.PassiveReceiver(p_o, int(np.sum((zc > 0) & (xc > 0))), int(event.sum()), 0.5,
                                (int(zonly.sum()), int(xonly.sum())))
    squashed = (int(np.sum(zonly & (zc == 2))), int(np.sum(xonly & (xc == 2))))
    one = nph == 1
    good_z = key & one & ~tagged & (n_common <= 1)
    good_x = test & one & ~tagged & (n_common <= 1)
    coin = rng.random(n_pulses) < 0.5
    # the common receiver's sampled events that a real click moved out of the untagged ones (R_B)
    czc, cxc = comm_pat[:, :2].sum(1), comm_pat[:, 2:].sum(1)
    sampled = one & ((n_common <= 1) if passive else True) & tagged
    truth_removed = (int(np.sum(sampled & (czc > 0) & (cxc == 0) & (a_basis == 0))),
                     int(np.sum(sampled & (cxc > 0) & (czc == 0) & (a_basis == 1))))
    truth = {"removed": truth_removed,
             "tag_z": int(np.sum(key & tagged)), "tag_x": int(np.sum(test & tagged)),
             "good_z": int(good_z.sum()), "good_x": int(good_x.sum()),
             "phase_good_z": int(np.sum(good_z & ir_z & coin)), "err_good_x": int(np.sum(good_x & err)),
             "s1_z": int(np.sum(key & one)), "phase_s1_z": int(np.sum(key & one & ir_z & coin)),
             "s1_x": int(np.sum(test & one)), "err_s1_x": int(np.sum(test & one & err))}
    return kc, tc, rx, squashed, truth


@functools.lru_cache(maxsize=1)
def _all_intercepted_at_half() -> tuple:
    """Every photon intercepted, Eve's modes at ratio 0.5 ("basis"): shared by two tests."""
    return _simulate(4_000_000, 0.5, 1.0, seed=11)


def _analysis(kc, tc, rx, squashed, rho):
    """The bounds and the phase-error bound exactly as ``secret_key_length`` computes them."""
    mm = fk.DetectorMismatch(rho, squashed)
    b = fk.single_photon_bounds(kc, tc, DECOY, eps_sec=1e-10, receiver=rx, mismatch=mm)
    r = fk.secret_key_length(kc, tc, DECOY, leak_ec_bits=0, receiver=rx, mismatch=mm)
    return b, r.phase_error


def test_attack_breaks_the_equal_detector_analysis():
    """Negative control, so the simulation has teeth: detectors at ratio 0.5 in Eve's modes,
    every photon intercepted ("basis" modes). Bob detects mostly when his basis is Eve's, so the
    key basis' single photons carry phase errors at 1/(2(1+rho)) = 1/3 while the test basis'
    bit errors are at rho/(2(1+rho)) = 1/6: the analysis that assumes equal detectors
    (ratio 1) bounds the phase error below its true value."""
    kc, tc, rx, sq, t = _all_intercepted_at_half()
    _, phi_equal = _analysis(kc, tc, rx, sq, 1.0)
    true_phase = t["phase_s1_z"] / t["s1_z"]
    assert true_phase == pytest.approx(1 / 3, abs=0.01)
    assert t["err_s1_x"] / t["s1_x"] == pytest.approx(1 / 6, abs=0.01)
    assert true_phase > phi_equal + 0.03, (true_phase, phi_equal)
    # the bound at the true ratio does not make that mistake (it gives no key here)
    _, phi = _analysis(kc, tc, rx, sq, 0.5)
    assert phi >= true_phase


def test_untagged_events_are_a_fair_sample_though_tagging_depends_on_bobs_basis():
    """The derivation's sampling step: tagging is decided at Bob's detectors, so it depends on
    his basis and bit, yet among the untagged single-photon events (those the common receiver
    sees alike) the key basis' phase-error rate equals the test basis' bit-error rate (the
    common receiver's basis is a coin in every mode), while among all of them it is 1/rho
    times larger (previous test)."""
    _, _, _, _, t = _all_intercepted_at_half()
    pz, px = t["phase_good_z"] / t["good_z"], t["err_good_x"] / t["good_x"]
    sd = math.sqrt(pz * (1 - pz) / t["good_z"] + px * (1 - px) / t["good_x"])
    assert abs(pz - px) < 5 * sd, (pz, px, sd)
    assert pz == pytest.approx(0.25, abs=0.01)      # Eve's basis independent of Bob's: 1/2 * 1/2


@pytest.mark.parametrize(("rho", "f_ir", "mode", "resend", "passive", "n_pulses", "trans", "eta"), [
    (0.9, 0.15, "basis", 1, False, 1_500_000, 0.5, 0.8),
    (0.9, 0.15, "bit", 1, False, 1_500_000, 0.5, 0.8),
    (0.8, 0.10, "bit", 1, True, 3_000_000, 1.0, 0.8),
    (0.8, 0.10, "bit", 2, True, 3_000_000, 1.0, 0.8),   # two photons resent: B_Z/B_X at work too
    (0.9, 0.10, "basis", 2, True, 3_000_000, 1.0, 0.9),
], ids=["active-basis", "active-bit", "passive-bit", "passive-bit-2ph", "passive-basis-2ph"])
def test_bound_holds_against_mismatch_attacks(rho, f_ir, mode, resend, passive, n_pulses, trans, eta):
    """Eve's attacks within the configured ratio, on counts the analysis sees: the tagged events
    are within tag_z/tag_x, the untagged single-photon events (one photon at Alice, at most one
    at the common receiver) at least s1/s1_test, their test errors at most v1, and their true
    phase-error rate at most the bound phi (which stays below 1/2: the check is not vacuous)."""
    kc, tc, rx, sq, t = _simulate(n_pulses, rho, f_ir, trans=trans, eta=eta, mode=mode,
                                  resend=resend, passive=passive, p_o=0.5, seed=5)
    b, phi = _analysis(kc, tc, rx, sq, rho)
    assert t["tag_z"] > 0 and t["tag_x"] > 0
    assert t["tag_z"] <= b["tag_z"] and t["tag_x"] <= b["tag_x"], (t, b)
    assert t["good_z"] >= b["s1"] > 0 and t["good_x"] >= b["s1_test"] > 0, (t, b)
    assert t["err_good_x"] <= b["v1_test"], (t, b)
    assert t["removed"][0] <= b["rem_z"] and t["removed"][1] <= b["rem_x"], (t, b)
    assert t["phase_good_z"] / t["good_z"] <= phi < 0.5, (t, phi)


@pytest.mark.parametrize("rho", [0.5, 0.8, 0.9, 0.99])
def test_freedman_tail_against_the_exact_binomial_tail(rho):
    """The tail's algebra at each (n, S) the union covers: with every event tagged independently
    at the largest allowed probability (1 - rho, or 1 - rho^2 when all are double clicks), the
    exact binomial probability of exceeding the bound is below that pair's share of eps,
    e^-(l(n) + l'(S)). (Freedman's bound covers adaptive tagging too; this checks the
    inversion d = l/3 + sqrt(l^2/9 + 2 v l) and the weights, which a slip would break.) At
    rho = 0.99 and n = 10^6 the exact tail uses 2.4 % of its share: Bernstein's form is close
    to tight there, so there is little to gain from a sharper tail."""
    from scipy.stats import binom

    eps = 1e-10 / 29
    for n in (10, 100, 1_000, 10_000, 100_000, 1_000_000):
        for s, a in ((0, 1.0 - rho), (n, 1.0 - rho * rho)):
            d = fk.tagged_detection_bound(n, rho, s, eps)
            if d >= n:
                continue
            share = math.exp(-fk._uniform_log_term(n, eps) - fk._uniform_log_term(s + 1, 1.0))
            assert binom.sf(math.floor(d), n, a) < share, (rho, n, s, d)


def test_share_check_is_no_defence_against_an_eve_who_knows_it():
    """The data check (``share_allows_ratio``) catches a setting above the true ratio on honest
    light only. Bob's A/D at 0.55/0.71 (ratio 0.775) configured 0.9: refused on honest light;
    an Eve who removes 14 % of Alice's X-basis 0s before Bob (state-selective loss, e.g.
    unambiguous discrimination of multi-photon pulses, then blocking) brings the share into
    the allowed range and the wrong setting passes. The other way, the same kind of loss on the
    1s fails a true setting (denial of service, which Eve has anyway). So the check is a
    consistency check on the lab's setting and no part of the security argument, as the module
    docstring says; the bound's soundness rests on the lab's rho alone."""
    n = 92_000
    honest = 0.55 / 1.26
    assert not fk.share_allows_ratio(round(honest * n), n, 0.9)
    kept = honest + (1.0 - honest) * 0.86
    n_eve = round(n * kept)
    assert fk.share_allows_ratio(round(n * honest), n_eve, 0.9)
    # a true setting (0.77) failed by thinning Alice's 1s by 10 %
    assert fk.share_allows_ratio(round(honest * n), n, 0.77)
    kept1 = honest * 0.9 + (1.0 - honest)
    assert not fk.share_allows_ratio(round(n * honest * 0.9), round(n * kept1), 0.77)


# The shipped defaults (link.config's template and NodeConfig): a passive receiver with
# receiver_split_z 0.5 and detector_efficiency_ratio_min 0.9.
RX_5050 = fk.PassiveReceiver(0.5, 2_000, 400_000, 0.5, (199_000, 199_000))


def test_common_split_can_fall_below_half_at_the_shipped_defaults():
    """The efficiency-weighted split 0.5 with Z detectors up to 1/0.9 as efficient as the X
    ones is an optical split as low as 0.9/1.9 = 0.474: the common receiver's Z share, the
    basis coin of its single-photon events, may be below 1/2 (finding F1 of the module
    docstring's audit section)."""
    lo, hi = fk.common_split_range(RX_5050, 1e-10 / 29, 0.9)
    assert lo < 0.48 and hi > 0.52
    assert fk.common_split_range(RX_5050, 1e-10 / 29, 1.0) == RX_5050.split_range(1e-10 / 29)


@pytest.mark.xfail(strict=True, reason=(
    "audit F1 (low): with a common split below 1/2, dark-count-only events (Z share ~1/2 by the "
    "dark-count rates) are over-sampled in the key basis rather than the test basis; the "
    "analysis neither refuses this nor bounds them (no dark-count figure reaches it)"))
def test_analysis_refuses_or_bounds_a_common_split_below_half():
    key = fk.BasisCounts((150_000, 50_000, 40), (1_500, 500, 20))
    test = fk.BasisCounts((150_000, 50_000, 40), (1_500, 500, 20))
    r = fk.secret_key_length(key, test, DECOY, leak_ec_bits=20_000, receiver=RX_5050,
                             mismatch=fk.DetectorMismatch(0.9, (500, 500)))
    assert r.ell == 0 or "dark" in r.reason, r


def _hidden_error_attack(n_pulses: int, rho: float, f: float, k: int, seed: int = 3) -> dict:
    """Finding F0's attack on an active receiver, Alice sending single photons only (exact
    single-photon counts: no decoy estimation in the way). Eve measures every photon in X
    (result r, Alice's bit when Alice chose X; Alice's virtual X value either way) and resends
    |r> in a mode where only the detector of r (in X) is strong (efficiency 1, the other three
    rho): when Bob measures X, his click is tagged at the full 1 - rho and correct. On a fraction
    ``f`` she adds ``k`` photons |r-bar> at efficiency rho everywhere (no mismatch for them): an
    X-basis Bob then sees the wrong detector; when the common receiver catches only those, the
    real one also catches |r> and the error becomes a double click with a random bit, tagged.
    The common receiver's error has left the untagged set, the real one shows as 1/2."""
    rng = np.random.default_rng(seed)
    a_b = rng.integers(0, 2, n_pulses).astype(np.int8)                 # 0 Z, 1 X
    a_bit = rng.integers(0, 2, n_pulses).astype(np.int8)
    r = np.where(a_b == 1, a_bit, rng.integers(0, 2, n_pulses).astype(np.int8))
    extra = np.where(rng.random(n_pulses) < f, k, 0)
    pid = np.repeat(np.arange(n_pulses), 1 + extra)
    first = np.r_[True, pid[1:] != pid[:-1]]                            # the |r> photon of each pulse
    bit = np.where(first, r[pid], 1 - r[pid])
    bob = rng.integers(0, 2, n_pulses).astype(np.int8)                  # active basis choice
    bb = bob[pid]
    out = np.where(bb == 1, bit, rng.integers(0, 2, pid.size).astype(np.int8))
    det = bb * 2 + out
    u = rng.random(pid.size)
    real = u < np.where(first & (bb == 1), 1.0, rho)
    comm = u < rho
    rp = np.zeros((n_pulses, 4), bool)
    cp = np.zeros((n_pulses, 4), bool)
    rp[pid[real], det[real]] = True
    cp[pid[comm], det[comm]] = True
    vp = np.zeros((n_pulses, 2), bool)                                 # common's virtual X pattern
    vp[pid[comm], bit[comm]] = True
    squash = rng.integers(0, 2, n_pulses).astype(np.int8)
    vbit = np.where(vp.sum(1) == 2, squash, vp[:, 1])
    zc, xc = rp[:, :2].sum(1), rp[:, 2:].sum(1)
    bbit = np.where(zc > 0, np.where(zc == 2, squash, rp[:, 1]), np.where(xc == 2, squash, rp[:, 3]))
    sifted = ((zc > 0) | (xc > 0)) & (bob == a_b)
    tagged = (rp != cp).any(1)
    key, test = sifted & (a_b == 0), sifted & (a_b == 1)
    czc, cxc = cp[:, :2].sum(1), cp[:, 2:].sum(1)
    return {"n_z": int(key.sum()), "n_x": int(test.sum()),
            "errors_x": int(np.sum(test & (bbit != a_bit))),
            "doubles": (int(np.sum(zc == 2)), int(np.sum(xc == 2))),
            "tagged": (int(np.sum(key & tagged)), int(np.sum(test & tagged))),
            "untagged_z": int(np.sum(key & ~tagged)),
            "phase_untagged_z": int(np.sum(key & ~tagged & (vbit != r))),
            "removed": (int(np.sum((czc > 0) & (a_b == 0) & tagged)),
                        int(np.sum((cxc > 0) & (a_b == 1) & tagged)))}


def test_hidden_errors_break_the_sampling_of_untagged_events_and_the_removed_bound_restores_it():
    """Finding F0. The tagging removes from Bob's untagged events not only real-only clicks but
    also events of the common receiver (those the sampling is about) that gained a real click;
    Eve makes these the common receiver's errors, so the untagged test events are cleaner than
    the sample they came from. With exact single-photon counts, the phase-error bound computed
    from the untagged counts alone (the code before this audit: Lim's Eq. 5 with v1 over
    s1_test - D_X) is below the true phase-error rate of the untagged key events, beyond its
    own sampling term; with R_X added to the test errors and the key's phase errors spread over
    its untagged part only (``untagged_phase_error_bound``) it is above. The removed counts stay
    within ``removed_event_bound``."""
    rho, eps_sec = 0.7, 1e-10
    t = _hidden_error_attack(2_000_000, rho, 0.1, 3)
    terms = fk.eps_terms("2-decoy", False, True)
    eps = eps_sec / terms
    d_z = fk.tagged_detection_bound(t["n_z"], rho, t["doubles"][0], eps)
    d_x = fk.tagged_detection_bound(t["n_x"], rho, t["doubles"][1], eps)
    assert t["tagged"][0] <= d_z and t["tagged"][1] <= d_x
    s1, s1_test = t["n_z"] - d_z, t["n_x"] - d_x
    assert t["untagged_z"] >= s1
    true_phase = t["phase_untagged_z"] / t["untagged_z"]
    old = fk.phase_error_bound(t["errors_x"], s1_test, s1, eps_sec, "2-decoy", terms)
    assert old < true_phase - 0.005, (old, true_phase)
    r_z = fk.removed_event_bound(t["doubles"][0], 0, rho, 1.0, eps)
    r_x = fk.removed_event_bound(t["doubles"][1], 0, rho, 1.0, eps)
    assert t["removed"][0] <= r_z and t["removed"][1] <= r_x, (t["removed"], r_z, r_x)
    new = fk.untagged_phase_error_bound(t["errors_x"], s1_test, s1, r_x, r_z, eps_sec, "2-decoy", terms)
    assert new > true_phase, (new, true_phase)
    # at ratio 1 there is nothing to remove and the bound is Lim's exactly
    assert fk.removed_event_bound(t["doubles"][1], 10, 1.0, 0.5, eps) == 0.0
    assert fk.untagged_phase_error_bound(500, 1e5, 1e6, 0.0, 0.0, eps_sec) == \
        fk.phase_error_bound(500, 1e5, 1e6, eps_sec)


def test_secret_key_length_uses_the_removed_event_bound():
    """The length's phase error is ``untagged_phase_error_bound`` of the block's bounds, above
    Lim's Eq. (5) on the untagged counts alone (the first version) whenever the ratio is below 1,
    and exactly that at ratio 1. (The rig block of tests/test_finite_key_mismatch.py.)"""
    from test_finite_key_mismatch import KEY, LEAK, RX, SQUASHED, TEST

    for rho in (1.0, 0.9):
        mm = fk.DetectorMismatch(rho, SQUASHED)
        b = fk.single_photon_bounds(KEY, TEST, DECOY, eps_sec=1e-10, receiver=RX, mismatch=mm)
        terms = fk.eps_terms("2-decoy", True, mm.active)
        r = fk.secret_key_length(KEY, TEST, DECOY, leak_ec_bits=LEAK, receiver=RX, mismatch=mm)
        first = fk.phase_error_bound(b["v1_test"], b["s1_test"], b["s1"], 1e-10, "2-decoy", terms)
        assert r.phase_error == fk.untagged_phase_error_bound(
            b["v1_test"], b["s1_test"], b["s1"], b["rem_x"], b["rem_z"], 1e-10, "2-decoy", terms)
        assert r.extra["removed_x"] == b["rem_x"] and r.extra["removed_z"] == b["rem_z"]
        if rho < 1.0:
            assert b["rem_x"] > 0 and r.phase_error > first
        else:
            assert b["rem_x"] == b["rem_z"] == 0.0 and r.phase_error == first
    assert fk.eps_terms("2-decoy", True, True) == 29 and fk.eps_terms("1-decoy", False, True) == 23

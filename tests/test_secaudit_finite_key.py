"""Security audit of the key-length path: worked examples and properties against the papers.

* 1-decoy: a block worked through longhand from Rusca et al., APL 112, 171104 (2018),
  Appendix A: Hoeffding corrections (A2, A4, A18 in the e^k/p_k form of Lim 2014), the vacuum
  upper bound (A16, k = mu2), single-photon and vacuum lower bounds (A17, A19), the X-basis
  single-photon errors (A22), the phase error (A20, A21, A23) and the length (A25). The
  2-decoy counterpart (Lim 2014 Eqs. 1-5) is ``tests/test_finite_key.py``.
* The epsilon split: privacy amplification spends the same terms in both analyses.
* Units: leak is in bits (one more leaked bit, one bit less key), the length is floored and
  clamped at 0.
* Verification: the number of 64-bit polynomial tags reaches eps_cor, and not one more.
* Privacy amplification: the Toeplitz family of the shape used (seed n_in + n_out - 1 bits)
  is two-universal, checked exhaustively on a small shape.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from link import finite_key as fk
from link.finite_key import BasisCounts, DecoySettings, binary_entropy, secret_key_length

ONE = DecoySettings(mus=(0.5, 0.1), probs=(0.7, 0.3))
TWO = DecoySettings(mus=(0.5, 0.1, 2e-4), probs=(0.7, 0.2, 0.1))


def test_one_decoy_key_length_worked_example():
    # Counts with s0 > 0 (A19 positive) and s0 + s1 below n_Z: every bound is exercised.
    key = BasisCounts(n=(1_000_000, 137_000), m=(10_000, 3_000))
    test = BasisCounts(n=(110_000, 14_500), m=(1_200, 200))
    eps_sec, eps_cor, leak = 1e-10, 1e-15, 100_000
    mu1, mu2 = ONE.mus
    p1, p2 = ONE.probs
    eps = eps_sec / 19                                  # A24 with every term equal
    t0 = p1 * math.exp(-mu1) + p2 * math.exp(-mu2)      # A5, n = 0
    t1 = p1 * math.exp(-mu1) * mu1 + p2 * math.exp(-mu2) * mu2

    def delta(n):                                       # A2: sqrt(n/2 ln(1/eps))
        return math.sqrt(n / 2 * math.log(1 / eps))

    def bounds(c):
        dn, dm = delta(sum(c.n)), delta(sum(c.m))
        n1p = math.exp(mu1) / p1 * (c.n[0] + dn)                   # A18 (Lim form)
        n2m = math.exp(mu2) / p2 * (c.n[1] - dn)
        s0u = 2 * (t0 * math.exp(mu2) / p2 * (c.m[1] + dm) + dn)  # A16, k = mu2
        s1 = t1 * mu1 / (mu2 * (mu1 - mu2)) * (n2m - mu2**2 / mu1**2 * n1p
                                               - (mu1**2 - mu2**2) / mu1**2 * s0u / t0)  # A17
        s0 = t0 / (mu1 - mu2) * (mu1 * n2m - mu2 * n1p)            # A19
        return s0, s1

    s0z, s1z = bounds(key)
    _, s1x = bounds(test)
    dmx = delta(sum(test.m))
    v1x = t1 / (mu1 - mu2) * (math.exp(mu1) / p1 * (test.m[0] + dmx)
                              - math.exp(mu2) / p2 * (test.m[1] - dmx))            # A22
    b = v1x / s1x
    gam = math.sqrt((s1z + s1x) * (1 - b) * b / (s1z * s1x * math.log(2))
                    * math.log2((s1z + s1x) / (s1z * s1x * (1 - b) * b) * 19**2 / eps_sec**2))  # A21
    phi = b + gam                                                                   # A23
    ell = math.floor(s0z + s1z * (1 - binary_entropy(phi)) - leak
                     - 6 * math.log2(19 / eps_sec) - math.log2(2 / eps_cor))       # A25
    assert s0z > 1000 and s0z + s1z < key.n_total and 0 < b < phi < 0.1

    res = secret_key_length(key, test, ONE, leak_ec_bits=leak, eps_sec=eps_sec, eps_cor=eps_cor,
                            protocol="1-decoy")
    assert res.s0 == pytest.approx(s0z, rel=1e-12)
    assert res.s1 == pytest.approx(s1z, rel=1e-12)
    assert res.s1_test == pytest.approx(s1x, rel=1e-12)
    assert res.v1_test == pytest.approx(v1x, rel=1e-12)
    assert res.phase_error == pytest.approx(phi, rel=1e-12)
    assert res.ell == ell
    assert ell > 800_000


@pytest.mark.parametrize("protocol,terms", [("2-decoy", 21), ("1-decoy", 19)])
def test_privacy_amplification_spends_the_same_five_terms_in_both_analyses(protocol, terms):
    """Lim 2014 Eq. (B4): eps_sec = 2[2 a1 + a2 + a3] + nu + 10 e1 + 2 e2. The key length's
    6 log2(T/eps_sec) is 2 log2 of (a2 a3 nu) (Eq. B3, beta = (a2 a3 nu)^2): those three are
    the privacy-amplification terms (chain rule penalties and the leftover hash), spending
    2 a2 + 2 a3 + nu = 5 units; a1, the smoothing of the single-photon entropy, is the
    phase-error sampling of Eq. (B2) and counts 4 times (2 x 2 a1). Rusca 2018 keeps Lim's
    secrecy analysis and the same 6 log2(19/eps_sec) (Eq. A25); only the Hoeffding terms
    change (6 e1 + 4 e2), so its PA part is the same 5 units and parameter estimation 14 of
    19. (Rusca's Eq. A24 writes 2[a1 + 2 a2 + a3]: its doubled alpha is the sampling term.)"""
    key = BasisCounts(n=(1_000_000, 137_000), m=(10_000, 3_000)) if protocol == "1-decoy" \
        else BasisCounts(n=(700_000, 45_000, 1_000))
    test = BasisCounts(n=(110_000, 14_500), m=(1_200, 200)) if protocol == "1-decoy" \
        else BasisCounts(n=(300_000, 19_000, 400), m=(1500, 150, 150))
    decoy = ONE if protocol == "1-decoy" else TWO
    eps_sec = 1e-10
    res = secret_key_length(key, test, decoy, leak_ec_bits=0, eps_sec=eps_sec, protocol=protocol)
    assert res.eps.privacy_amplification == pytest.approx(5 * eps_sec / terms, rel=1e-12)
    assert res.eps.parameter_estimation == pytest.approx((terms - 5) * eps_sec / terms, rel=1e-12)


@pytest.mark.parametrize("protocol", ["2-decoy", "1-decoy"])
def test_leak_is_in_bits_and_the_length_is_floored_and_clamped(protocol):
    decoy = ONE if protocol == "1-decoy" else TWO
    key = BasisCounts(n=(1_000_000, 137_000), m=(10_000, 3_000)) if protocol == "1-decoy" \
        else BasisCounts(n=(700_000, 45_000, 1_000))
    test = BasisCounts(n=(110_000, 14_500), m=(1_200, 200)) if protocol == "1-decoy" \
        else BasisCounts(n=(300_000, 19_000, 400), m=(1500, 150, 150))
    r0 = secret_key_length(key, test, decoy, leak_ec_bits=0, protocol=protocol)
    raw = r0.extra["raw_length"]
    assert r0.ell == math.floor(raw) and r0.ell <= raw
    for extra in (1, 7, 64, 1000):
        r = secret_key_length(key, test, decoy, leak_ec_bits=extra, protocol=protocol)
        assert r.ell == math.floor(raw - extra)     # one bit disclosed, one bit less key
    # a leak just above the raw length: nothing, never negative
    r = secret_key_length(key, test, decoy, leak_ec_bits=math.ceil(raw) + 1, protocol=protocol)
    assert r.ell == 0 and r.reason
    # the phase error rate enters h() in bits: h(1/2) = 1 takes every single-photon bit
    assert binary_entropy(0.5) == 1.0 and binary_entropy(0.11) == pytest.approx(0.49991596, rel=1e-6)


@pytest.mark.parametrize("n_bits", [1, 64, 4096, 1 << 18, 1 << 20, 1 << 22, 10**8])
@pytest.mark.parametrize("eps_cor", [1e-9, 1e-15, 1e-20])
def test_verification_tags_reach_eps_cor_and_not_one_more(n_bits, eps_cor):
    from link.node import verification_tags
    # one tag of the GF(2^64) polynomial hash collides with probability <= (ceil(n/64)+1)/2^64
    # (postproc_c.hashing: a nonzero polynomial of degree <= L + 1 without constant term)
    p = (math.ceil(n_bits / 64) + 1) / 2.0**64
    t = verification_tags(n_bits, eps_cor)
    assert p**t <= eps_cor
    assert t == 1 or p ** (t - 1) > eps_cor


def test_toeplitz_family_of_the_shape_used_is_two_universal():
    """For every nonzero difference d of two n_in-bit inputs, exactly a 2^-n_out fraction of the
    2^(n_in + n_out - 1) seeds maps d to 0 (T linear: T x = T x' iff T d = 0), the two-universal
    condition the leftover hash lemma needs (Krawczyk 1994; Tomamichel et al. 2011)."""
    import postproc_c

    n_in, n_out = 6, 3
    n_seed = n_in + n_out - 1
    seeds = [np.array([s], np.uint64) for s in range(1 << n_seed)]
    for d in range(1, 1 << n_in):
        dw = np.array([d], np.uint64)
        zero = sum(int(postproc_c.toeplitz_hash(dw, n_in, s, n_out)[0]) == 0 for s in seeds)
        assert zero * (1 << n_out) == len(seeds), f"difference {d:06b}: {zero} of {len(seeds)} seeds"
    # and the output is the matrix of the definition, out[i] = XOR_j s[i - j + n_in - 1] k[j]
    for s, k in itertools.product((0b10110011, 0b01011110), (0b101101, 0b000001)):
        out = int(postproc_c.toeplitz_hash(np.array([k], np.uint64), n_in, np.array([s], np.uint64),
                                           n_out)[0])
        ref = 0
        for i in range(n_out):
            bit = 0
            for j in range(n_in):
                bit ^= (s >> (i - j + n_in - 1)) & (k >> j) & 1
            ref |= bit << i
        assert out == ref


def test_error_count_disclosure_bits_rejects_negative_counts():
    with pytest.raises(ValueError, match="n_per_class"):
        fk.error_count_disclosure_bits((5, -1))

"""Attacks staged on the HIL model, audited: Eve's recorded knowledge pushed through the engine.

A partial intercept-resend attack that leaves blocks below the QBER alarm must
give key whose measured Eve advantage is consistent with eps_sec; the audit
must be able to fail (positive control: an Eve who knows every bit); the
full-strength attacks that leave the QBER low (PNS blocking single photons,
detector blinding) must abort the block with their own alarm.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hil.eve import EveRecord
from hil.scenario import Scenario
from link.eve_audit import audit, audit_block, record_run
from link.pipeline import config_for_scenario

BLOCK_BITS = 1 << 19


def _run(name: str, overrides: dict, blocks: int = 1):
    sc = Scenario.load(name).with_overrides(overrides)
    return record_run(sc, blocks=blocks, config=config_for_scenario(sc, block_bits=BLOCK_BITS),
                      duration_s=60.0)


@pytest.fixture(scope="module")
def ir10():
    return _run("intercept-resend", {"attack.fraction": 0.1})


def test_partial_intercept_resend_yields_key_eve_does_not_know(ir10):
    (a,) = audit(ir10)
    assert not a.aborted and a.ell > 0 and ir10.keys_identical
    assert a.key_matches_store and a.ell_recomputed == a.ell     # the audit rebuilt the engine's key
    assert a.unmatched_slots == 0
    # Eve measured about 10 % of pulses, half in the right basis: ~2 % of the key bits, correctly
    assert 0.01 * a.n_z < a.eve_known < 0.04 * a.n_z
    assert a.eve_known_agree > 0.98
    assert a.sifted_agree > 0.5 + 0.4 * a.eve_known / a.n_z          # she does know sifted bits
    # after privacy amplification her best guess is a coin flip (5 sigma)
    assert abs(a.final_agree_corrected - 0.5) < 5 * a.final_sigma
    assert abs(a.final_agree - 0.5) < 5 * a.final_sigma
    # and the bound's allowance covers what she knows, with the leftover hash lemma at eps_sec
    assert a.eve_known <= a.allowance_bits
    assert a.h_min_eve > a.ell and a.consistent


def test_audit_detects_an_eve_who_knows_everything(ir10):
    # Positive control: the same run, but Eve's record says she knows every bit.
    rec = dataclasses.replace(ir10, frames={
        f: dataclasses.replace(fr, eve=EveRecord(fr.eve.code, fr.eve.basis, fr.eve.bit,
                                                 np.ones(fr.eve.code.size, bool)))
        for f, fr in ir10.frames.items()})
    a = audit_block(rec, rec.results[0])
    assert a.eve_known == a.n_z
    assert a.final_agree_corrected == 1.0
    assert a.eve_known > a.allowance_bits and not a.consistent


@pytest.mark.parametrize("name,overrides,alarm", [
    ("blinding", {}, "detector_blinding"),
    ("pns", {"attack.block_single_fraction": 1.0}, "decoy_yield_inconsistency"),
])
def test_full_strength_attacks_abort_with_their_alarm(name, overrides, alarm):
    rec = _run(name, overrides)
    (a,) = audit(rec)
    assert alarm in {x[1] for x in rec.alarms}
    assert a.aborted and a.ell == 0 and not rec.stored_keys and rec.keys_identical
    # what the abort prevented: Eve knew (almost) every sifted key bit of the block
    assert a.eve_known > 0.99 * a.n_z


def _gf2_rank(m: np.ndarray) -> int:
    """Rank over GF(2) of a 0/1 matrix (Gaussian elimination, reference only)."""
    m = m.astype(bool).copy()
    rank = 0
    for col in range(m.shape[1]):
        piv = np.flatnonzero(m[rank:, col])
        if piv.size == 0:
            continue
        p = rank + piv[0]
        m[[rank, p]] = m[[p, rank]]
        below = np.flatnonzero(m[:, col])
        below = below[below != rank]
        m[below] ^= m[rank]
        rank += 1
        if rank == m.shape[0]:
            break
    return rank


@pytest.mark.parametrize("known", [40, 100])
def test_toeplitz_pa_leaves_eve_no_linear_function_below_her_entropy(known):
    # Exact check of what the audit's margin (H_min - ell) stands for, on the
    # engine's own C Toeplitz hash: Eve knows `known` of n uniform bits; the
    # number of final-key linear functions she can compute is
    # ell - rank(T restricted to the bits she does not know) (GF(2) rank).
    import postproc_c

    rng = np.random.default_rng(known)
    n = 192
    mask = np.zeros(n, bool)
    mask[rng.choice(n, known, replace=False)] = True
    for ell, expect_zero in ((n - known - 16, True), (n - known + 8, False)):
        seed = rng.integers(0, 2**63, (n + ell - 1 + 63) // 64, dtype=np.uint64)
        cols = []
        for j in range(n):
            e = np.zeros(n, np.uint8)
            e[j] = 1
            h = postproc_c.toeplitz_hash(postproc_c.pack_bits(e), n, seed, ell)
            cols.append(np.unpackbits(h.view(np.uint8), bitorder="little")[:ell])
        t = np.array(cols).T                                     # ell x n
        assert _gf2_rank(t) == ell
        eve_functions = ell - _gf2_rank(t[:, ~mask])
        if expect_zero:
            assert eve_functions == 0
        else:
            assert eve_functions >= ell - (n - known)          # at least the entropy shortfall

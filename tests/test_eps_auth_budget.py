"""The epsilon budget a block reports must include its authentication term.

``link.finite_key`` composes a block's budget from parameter estimation, privacy
amplification, correctness and *authentication* ("supplied by the caller: the
Wegman-Carter tags of the block's messages", its module docstring), and ``qkd report``
adds these budgets up. The node never supplies it: ``Node`` calls
``finite_key.secret_key_length`` without ``eps_auth``, so every block reports
``authentication = 0`` although each of its messages was accepted on a 64-bit
Wegman-Carter tag that a forger passes with probability up to (L + 1) / 2^64
(``postproc_c.hashing``). The key length is not affected (Lim 2014 Eq. 1 has no
authentication term); the reported total understates the block's failure probability.
Found by the documentation audit. Fixed: the channel keeps the union bound of every tag it
checked (``Channel.forgery_bound``); Alice charges each block the growth of hers over the
block's window plus Bob's over his (sent in ``VERIFY_RESULT``).
"""

import pytest
from one_block import run_one_block


def test_block_budget_has_a_nonzero_authentication_term(tmp_path):
    s, held, _ = run_one_block(tmp_path)
    assert s["blocks"] >= 1 and s["secret_bits"] > 0
    budgets = [r.eps for r in held["alice"].results if r.secret_bits > 0]
    assert budgets, "no block produced key"
    ch = held["alice"].ch
    both = ch.forgery_bound + held["bob"].ch.forgery_bound
    for eps in budgets:
        # at least one tag per message the block needed, at most every tag either node checked
        assert 2.0 ** -64 < eps["authentication"] <= both
        assert eps["total"] == pytest.approx(eps["parameter_estimation"] + eps["privacy_amplification"]
                                             + eps["correctness"] + eps["authentication"], rel=1e-12)
    # the bound is the sum over checked frames of (L + 1) 2^-64: between one word per frame and
    # the bytes received (every checked frame was received) in words plus one per frame
    checked = ch.counters["received"] + ch.counters["acks_received"] + ch.counters["bad_tag"]
    assert checked * 2.0 ** -64 < ch.forgery_bound < 1e-9

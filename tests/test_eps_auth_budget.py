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
Found by the documentation audit; marked xfail (strict) until the lead decides the fix,
so the suite stays green and the marker must go when it is fixed.
"""

import pytest


@pytest.mark.xfail(strict=True, reason="node passes no eps_auth: block budgets report authentication = 0")
def test_block_budget_has_a_nonzero_authentication_term(tmp_path):
    from hil.model import LinkModel
    from link.pipeline import config_for_scenario, run_local

    held = {}

    def attach(nodes):
        held.update(nodes)
        return lambda: None

    cfg = config_for_scenario(LinkModel(None).scenario, block_bits=1 << 19)
    s = run_local(None, config=cfg, blocks=1, duration_s=60, workdir=tmp_path, attach=attach)
    assert s["blocks"] >= 1 and s["secret_bits"] > 0
    budgets = [r.eps for r in held["alice"].results if r.secret_bits > 0]
    assert budgets, "no block produced key"
    for eps in budgets:
        assert eps["authentication"] > 0

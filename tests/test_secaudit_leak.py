"""Every bit the nodes publish about the key before privacy amplification is charged.

The finite-key length (Lim 2014 Eq. 1 via the chain rule of its Appendix B:
H(X_A|E') >= H(X_A|E) - lambda_EC - ...; Rusca 2018 Eq. A25) subtracts everything
disclosed about the key string: the reconciliation transcript (``rr.leaked_bits``: Cascade
parities and its 64-bit check, LDPC syndromes minus private punctured bits plus revealed ones),
the verification tags (64 bits per tag), and anything else that depends on the key and goes
over the (authenticated, not secret) channel before ``PA_SEED``.

Bob's ``VERIFY_RESULT`` publishes the number of key-basis (Z) errors per intensity class
(the 1-decoy bound needs them, Rusca Eq. A16; the node sends them for every protocol). They
are a function of Alice's and Bob's key strings, so by the chain rule for min-entropy they
cost at most log2 of the number of values they can take: sum_k log2(n_k + 1) for n_k Z
detections of class k. Found by the security audit: they were not charged.
"""

from __future__ import annotations

import math

from link import finite_key as fk


def test_error_count_disclosure_bits_is_log2_of_the_number_of_count_vectors():
    # counts e_k in 0..n_k: prod (n_k + 1) vectors, rounded up to whole bits
    assert fk.error_count_disclosure_bits((0,)) == 0
    assert fk.error_count_disclosure_bits((1,)) == 1
    assert fk.error_count_disclosure_bits((3,)) == 2
    assert fk.error_count_disclosure_bits((4,)) == 3            # 5 values
    assert fk.error_count_disclosure_bits((1, 1, 1)) == 3       # 8 values
    n = (700_000, 45_000, 1_000)
    assert fk.error_count_disclosure_bits(n) == math.ceil(sum(math.log2(x + 1) for x in n))


def test_node_charges_reconciliation_tags_and_published_error_counts(tmp_path, monkeypatch):
    """Alice's finite-key call gets leak >= reconciliation + tags + the published error counts."""
    from hil.model import LinkModel
    from link import node as node_mod
    from link.pipeline import config_for_scenario, run_local

    recon_leak: list[int] = []
    calls: list[tuple] = []
    real_recon_key = node_mod.Node._recon_key
    real_skl = fk.secret_key_length

    def recon_key(side):
        rr, key = real_recon_key(side)
        if side.role == "alice":
            recon_leak.append(int(rr.leaked_bits))
        return rr, key

    def skl(key, test, decoy, **kw):
        calls.append((key, kw))
        return real_skl(key, test, decoy, **kw)

    monkeypatch.setattr(node_mod.Node, "_recon_key", staticmethod(recon_key))
    monkeypatch.setattr(node_mod.fk, "secret_key_length", skl)
    cfg = config_for_scenario(LinkModel(None).scenario, block_bits=1 << 19)
    s = run_local(None, config=cfg, blocks=1, duration_s=60, workdir=tmp_path)
    assert s["blocks"] >= 1 and s["secret_bits"] > 0
    assert calls, "Alice never computed a key length"
    key, kw = calls[0]
    n_z = key.n_total
    tags = node_mod.verification_tags(n_z, cfg.eps_cor)
    published = fk.error_count_disclosure_bits(key.n)
    assert published > 20                  # about log2 of each class's count
    # the reconciliation leak of Alice's side for that block (the first block's side)
    assert recon_leak, "no reconciliation result seen"
    assert kw["leak_ec_bits"] >= recon_leak[0] + 64 * tags + published


def test_failed_verification_aborts_with_alarm_and_no_key_on_either_side(tmp_path, monkeypatch):
    """One bit of Bob's reconciled key flipped after reconciliation reported success: the
    poly_hash tags differ, both nodes raise ``verification_failed``, and no key of the block
    reaches either store (Lim 2014 Sec. II step 5: only a verified pair is hashed)."""
    import numpy as np

    from hil.model import LinkModel
    from link import node as node_mod
    from link.pipeline import config_for_scenario, run_local

    real_recon_key = node_mod.Node._recon_key

    def recon_key(side):
        rr, key = real_recon_key(side)
        if side.role == "bob":
            key[0] ^= np.uint64(1)             # the corrected key, packed: bit 0 flipped
        return rr, key

    monkeypatch.setattr(node_mod.Node, "_recon_key", staticmethod(recon_key))
    held = {}

    def attach(nodes):
        held.update(nodes)
        return lambda: None

    cfg = config_for_scenario(LinkModel(None).scenario, block_bits=1 << 19)
    s = run_local(None, config=cfg, blocks=1, duration_s=60, workdir=tmp_path, attach=attach)
    assert s["blocks"] >= 1 and s["blocks_aborted"] == s["blocks"]
    assert s["secret_bits"] == 0
    assert s["keys"] == {"alice": 0, "bob": 0}
    for role in ("alice", "bob"):
        assert "verification_failed" in {a["alarm"] for a in held[role].alarms}, role
    assert all(r.reason == "verification failed" for r in held["alice"].results)

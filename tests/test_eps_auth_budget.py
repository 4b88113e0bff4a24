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

import os

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


def test_forged_frames_past_the_auth_share_abort_the_block_not_the_link(tmp_path):
    """Nothing capped the authentication term: every frame Eve forges adds its (L + 1) 2^-64 to
    the bound (it was a chance to pass), so she could grow a block's total epsilon past what the
    node was configured for, and the block still made key. Now a block whose term exceeds
    ``eps_auth`` makes none (Alice checks before the key is made), with an alarm naming the bad
    tags and the bound; the link goes on. Real forged frames: a man in the middle (Eve) puts 8
    frames of 4 MiB claiming to be Bob's, with made-up tags, before his first announcement."""
    import zmq
    from zmq_proxy import Proxy

    from hil.model import LinkModel
    from link.messages import HEADER, TAG_LEN, MsgType, encode_header, split_frame
    from link.pipeline import config_for_scenario, run_local

    ctx = zmq.Context()
    proxies: list[Proxy] = []
    forged = {"frames": 0, "bytes": 0}

    def eve(d, lane, frame):
        if d == "b2a" and lane == "proto" and not forged["frames"] and frame[1] == MsgType.SIFT_ANNOUNCE:
            (_, _, _, seq, block_id, _), _, _ = split_frame(frame)
            out = []
            for _ in range(8):            # at Bob's next seq: checked (and refused) before his frame
                body = os.urandom(4 << 20)
                out.append(encode_header(MsgType.SIFT_ANNOUNCE, "bob", "proto", seq, block_id, len(body))
                           + body + os.urandom(TAG_LEN))
                forged["bytes"] += HEADER.size + len(body)
            forged["frames"] = len(out)
            return [*out, frame]
        return [frame]

    def bob_endpoints(alice_eps):
        p = Proxy(ctx, alice_eps)
        p.tamper = eve
        proxies.append(p)
        return p.bob_eps

    nodes: dict = {}
    counts: dict = {}

    def attach(held):
        nodes.update(held)
        return lambda: counts.update({r: n.store.count() for r, n in held.items()})

    # the share: ~4x an honest 2^19-bit block's term (2.2e-14), below what Eve's frames add
    cfg = config_for_scenario(LinkModel(None).scenario, block_bits=1 << 19, eps_auth=1e-13)
    try:
        s = run_local(None, config=cfg, blocks=3, duration_s=90, workdir=tmp_path,
                      bob_endpoints=bob_endpoints, attach=attach)
    finally:
        for p in proxies:
            p.close()
        ctx.destroy(linger=0)
    alice, bob = nodes["alice"], nodes["bob"]
    added = sum(((HEADER.size + (4 << 20) + 7) // 8 + 1) * 2.0 ** -64 for _ in range(forged["frames"]))
    assert forged["frames"] == 8 and added > 2e-13
    assert alice.ch.counters["bad_tag"] == 8
    results = sorted(alice.results, key=lambda r: r.block_id)
    first = results[0]
    assert first.aborted and first.secret_bits == 0 and "exceeds its share eps_auth" in first.reason
    alarms = [a for a in alice.alarms if a["alarm"] == "authentication_budget"]
    assert alarms and alarms[0]["block_id"] == first.block_id
    assert "8 frames failed authentication" in alarms[0]["reason"], alarms[0]
    # the link goes on: every block ran, and a later one (its window opened after Eve's frames)
    # made key within the share
    assert alice.blocks_done == bob.blocks_done == 3, (alice.alarms, bob.alarms)
    keyed = [r for r in results if r.secret_bits > 0]
    assert keyed and all(r.eps["authentication"] <= 1e-13 for r in keyed), [r.eps for r in results]
    assert s["secret_bits"] == sum(r.secret_bits for r in keyed)
    # Bob made no key of the aborted block either: both stores hold the same keys
    assert counts["alice"] == counts["bob"] > 0

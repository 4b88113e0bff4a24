"""A node keeps only its latest ``RESULTS_KEPT`` block results; runs still count every block.

``Node.results`` (and Bob's ``key_latency_s``) grew by one entry per block for as long as a
node ran (tens of KB a block with the finite-key terms; bench.soak). They are now bounded;
``--blocks`` stop conditions use ``Node.blocks_done`` and run summaries' totals the node's
counters, so a run longer than the window still stops and adds up right.
"""

from __future__ import annotations

import link.node as node_mod
from link.pipeline import config_for_scenario, run_local


def test_results_are_bounded_and_the_run_still_stops_and_counts_every_block(tmp_path, monkeypatch):
    from hil.model import LinkModel

    monkeypatch.setattr(node_mod, "RESULTS_KEPT", 2)
    cfg = config_for_scenario(LinkModel(None, seed=1).scenario, block_bits=1 << 17)
    held = {}

    def attach(nodes):
        held.update(nodes)
        return lambda: None

    s = run_local(None, blocks=5, duration_s=120, workdir=tmp_path, config=cfg, attach=attach)
    alice, bob = held["alice"], held["bob"]
    assert alice.blocks_done >= 5 and bob.blocks_done >= 5     # stopped by the block count...
    assert s["wall_s"] < 110                                     # ...not by the time limit
    assert len(alice.results) == len(bob.results) == 2         # only the latest are kept
    assert [r.block_id for r in alice.results] == sorted(r.block_id for r in alice.results)
    assert len(bob.key_latency_s) <= 2
    assert s["blocks"] == alice.blocks_done and len(s["block_results"]) == 2
    kept = sum(r.secret_bits for r in alice.results if not r.aborted)
    assert s["secret_bits"] == alice.counters["secret_bits"] > kept > 0    # all blocks, not the kept
    assert s["keys_identical"]

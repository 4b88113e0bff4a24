"""kill -9 of the process running the link in the middle of a commit, then a restart
(issue 9, "Faults"; harness and the many-kill campaign: ``python -m bench.faults``).

The kill lands the moment Alice's store shows a commit under way (a block
prepared, or committed and not yet final), where the crash can leave a block
committed on Alice and only prepared on Bob (never the other way round). The
restart's recovery must settle it: both stores end identical, every key either
side had committed is still there, and the block that was open is committed on
both sides or aborted on both.
"""

from __future__ import annotations

import random

from bench.faults import block_states, finish_run, kill_at_random


def test_kill_9_in_a_commit_then_restart_settles_the_block_and_keeps_keys(tmp_path):
    rng = random.Random()
    seed = rng.randrange(1 << 16)
    r = kill_at_random(tmp_path, rng, seed=seed, in_commit=True, blocks=3)
    assert r["killed"], r["stderr_tail"]
    assert r["alice_open"] or r["alice_keys"], "the kill came before any commit started"
    assert r["invariant_violations"] == [], r  # Bob never committed a block Alice had not
    assert r["bob_keys"] <= r["alice_keys"]
    committed = r["alice_keys"] | r["bob_keys"]
    fin = finish_run(tmp_path, seed=seed + 1, blocks=1)
    assert fin["returncode"] == 0, fin["stderr_tail"]
    assert fin["summary"]["keys_identical"] is True and fin["alice_keys"] == fin["bob_keys"]
    assert committed <= fin["alice_keys"], f"seed {seed}: committed keys lost in the crash"
    a, b = block_states(tmp_path / "alice.db"), block_states(tmp_path / "bob.db")
    done = {"committed", "final"}
    for bid in r["alice_open"]:
        both_committed = a[bid] in done and b.get(bid) in done
        both_aborted = a[bid] == "aborted" and b.get(bid) in (None, "aborted")
        assert both_committed or both_aborted, (bid, a, b)

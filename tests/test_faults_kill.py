"""kill -9 of the process running the link, at a random moment among commits, then a restart
(issue 9, "Faults"; harness and the many-kill campaign: ``python -m bench.faults``).

The crash may leave a block committed on Alice and only prepared on Bob (never
the other way round); the restart's recovery must settle it, so that both
stores end identical and hold every key either side had committed.
"""

from __future__ import annotations

import random

from bench.faults import finish_run, kill_at_random


def test_kill_9_among_commits_then_restart_keeps_every_committed_key(tmp_path):
    rng = random.Random()
    seed = rng.randrange(1 << 16)
    r = kill_at_random(tmp_path, rng, seed=seed, after_first_key=True, max_delay_s=4.0, blocks=3)
    assert r["returncode"] in (0, -9), r["stderr_tail"]
    assert r["alice_keys"], "the kill came before any key was committed"
    assert r["invariant_violations"] == [], r  # Bob never committed a block Alice had not
    assert r["bob_keys"] <= r["alice_keys"]
    committed = r["alice_keys"] | r["bob_keys"]
    fin = finish_run(tmp_path, seed=seed + 1, blocks=1)
    assert fin["returncode"] == 0, fin["stderr_tail"]
    assert fin["summary"]["keys_identical"] is True and fin["alice_keys"] == fin["bob_keys"]
    assert committed <= fin["alice_keys"], f"seed {seed}: committed keys lost in the crash"

"""The authentication pool is refilled only below its high water: both nodes do the same.

Every block used to append ``auth_refill_bytes`` to the pool, about twice what the channel
uses, so the pool (in memory and in the store file) grew for as long as the link ran. Alice
now refills only while the emptiest stream is below ``POOL_HIGH_WATER_PADS``; otherwise the
whole block goes to keys, and Bob, told by the commit message, does the same.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing

from commit_pair import committer_pair, pump

import link.commit as commit_mod
from link.keystore import NO_SEGMENT, KeyStore, stores_identical


def _segments(db) -> list[int]:
    with closing(sqlite3.connect(db)) as c:
        return [r[0] for r in c.execute("SELECT DISTINCT idx FROM auth_segment ORDER BY idx")]


def test_alice_skips_the_refill_above_the_high_water_and_bob_follows(tmp_path, monkeypatch):
    with committer_pair(tmp_path, 1024) as nodes:      # 1023 pads a stream
        a_st, a_ch, a_com = nodes["alice"]
        b_st, b_ch, b_com = nodes["bob"]

        def run_block(b: int) -> None:
            key = os.urandom(2048)
            b_com.offer(b, bytearray(key), 2048 * 8)
            a_com.propose(b, bytearray(key), 2048 * 8)
            pump(nodes, lambda: a_st.state(b) == "final" and b_st.state(b) == "committed")
            assert a_st.state(b) == "final" and b_st.state(b) == "committed"

        assert a_com._refill_wanted()             # 1023 pads left < 2^14: refill
        run_block(1)
        assert a_st.auth_index(1) == b_st.auth_index(1) == 0
        assert _segments(tmp_path / "alice.db") == _segments(tmp_path / "bob.db") == [0]
        keys_refilled = a_st.count()
        monkeypatch.setattr(commit_mod, "POOL_HIGH_WATER_PADS", 100)   # the pool is "full" now
        assert not a_com._refill_wanted()
        run_block(2)
        assert a_st.auth_index(2) == b_st.auth_index(2) == NO_SEGMENT
        assert _segments(tmp_path / "alice.db") == _segments(tmp_path / "bob.db") == [0]
        assert a_st.count() - keys_refilled == 2048 * 8 // 256         # the whole block as keys
        assert keys_refilled == (2048 - 1024) * 8 // 256
        assert stores_identical(a_st, b_st)
        a_ch.pool.refresh()
        b_ch.pool.refresh()
        assert a_ch.pool.capacity("alice.proto.data") == b_ch.pool.capacity("alice.proto.data")
        monkeypatch.setattr(commit_mod, "POOL_HIGH_WATER_PADS", 1 << 14)
        run_block(3)                               # below it again: the next index, on both
        assert a_st.auth_index(3) == b_st.auth_index(3) == 1
        assert _segments(tmp_path / "alice.db") == _segments(tmp_path / "bob.db") == [0, 1]
        assert stores_identical(a_st, b_st)


def test_bob_never_refills_from_a_block_alice_kept_out_of_the_pool(tmp_path):
    """The commit's NO_SEGMENT (COMMIT message, RESYNC) is enough: Bob's store does the same."""
    key = os.urandom(512)
    a = KeyStore(tmp_path / "a.db", "L", auth_refill_bytes=256)
    b = KeyStore(tmp_path / "b.db", "L", auth_refill_bytes=256)
    for s in (a, b):
        s.prepare(7, bytearray(key), 512 * 8)
    assert a.commit(7, refill=False) == 16 and a.auth_index(7) == NO_SEGMENT
    assert b.commit(7, a.auth_index(7)) == 16 and b.auth_index(7) == NO_SEGMENT
    assert _segments(tmp_path / "a.db") == _segments(tmp_path / "b.db") == []
    assert stores_identical(a, b)
    a.close()
    b.close()

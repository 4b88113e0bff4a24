"""The authentication pool is refilled only below its high water, per stream: both nodes do the same.

Every block used to append ``auth_refill_bytes`` to the pool, about twice what the channel
uses, so the pool (in memory and in the store file) grew for as long as the link ran. Then
Alice refilled all streams or none, by the emptiest stream, and the control lanes, which
hardly use their share, still built up (~2 MB/h in bench.soak). Now Alice refills each stream
only while it is below ``POOL_HIGH_WATER_PADS``, the rest of the block goes to keys, and Bob,
told the per-stream layout by the commit message, does the same.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing

from commit_pair import committer_pair, pump

import link.commit as commit_mod
from link.auth import SEGMENT_WEIGHTS, STREAMS, AuthPool
from link.keystore import NO_SEGMENT, KeyStore, stores_identical
from link.messages import MsgType

PROTO = [s for s in STREAMS if ".proto." in s]


def _segments(db) -> dict[str, list[int]]:
    with closing(sqlite3.connect(db)) as c:
        out = {s: [] for s in STREAMS}
        for s, idx in c.execute("SELECT stream, idx FROM auth_segment ORDER BY stream, idx"):
            out[s].append(idx)
        return out


def _run_block(nodes, b: int) -> None:
    a_st, b_st = nodes["alice"][0], nodes["bob"][0]
    key = os.urandom(2048)
    nodes["bob"][2].offer(b, bytearray(key), 2048 * 8)
    nodes["alice"][2].propose(b, bytearray(key), 2048 * 8)
    pump(nodes, lambda: a_st.state(b) == "final" and b_st.state(b) == "committed")
    assert a_st.state(b) == "final" and b_st.state(b) == "committed"


def test_each_stream_is_refilled_only_below_its_own_high_water_and_bob_follows(tmp_path, monkeypatch):
    # 1024 refill bytes: a unit of 64, so 24 pads to a proto stream and 8 to a ctrl one
    with committer_pair(tmp_path, 1024) as nodes:      # 1023 pads a stream
        a_st, a_ch, _ = nodes["alice"]
        b_st, b_ch, _ = nodes["bob"]
        _run_block(nodes, 1)                           # everything below 2^14: all refilled
        assert a_st.auth_layout(1) == b_st.auth_layout(1) == [0] * len(STREAMS)
        # the protocol lanes carry traffic (their pads go), the control lanes none
        for ch in (a_ch, b_ch):
            for _ in range(300):        # past a reservation batch (auth.RESERVE_BATCH)
                ch.send(MsgType.DATA, 0, b"x")
        pump(nodes, lambda: a_ch.wait_acked(0.01) and b_ch.wait_acked(0.01))
        for ch in (a_ch, b_ch):
            ch.pool.refresh()          # what the node does after each commit
        left = {s: u["left_pads"] for s, u in a_ch.pool.usage().items()}
        # Alice's streams count whole reservation batches as used; Bob's ACKs are cumulative:
        # some streams are below 900 pads and some (Bob's ctrl and ack streams) above
        below = {s for s in STREAMS if left[s] < 900}
        assert {"alice.proto.data", "bob.proto.data"} <= below and "bob.ctrl.data" not in below, left
        assert all(abs(left[s] - 900) > 50 for s in STREAMS), left      # no race with the commit's own
        monkeypatch.setattr(commit_mod, "POOL_HIGH_WATER_PADS", 900)
        keys = a_st.count()
        _run_block(nodes, 2)
        layout = a_st.auth_layout(2)
        assert layout == b_st.auth_layout(2)
        assert layout == [1 if s in below else NO_SEGMENT for s in STREAMS]
        segs = _segments(tmp_path / "alice.db")
        assert segs == _segments(tmp_path / "bob.db")
        assert segs == {s: [0, 1] if s in below else [0] for s in STREAMS}
        pads = {s: (24 if s in PROTO else 8) for s in STREAMS}     # a refill of every stream
        # the streams refilled share the whole refill by weight: what the full ones leave goes
        # to the others, not to keys (auth.segment_unit)
        w = {s: SEGMENT_WEIGHTS[s.split(".", 1)[1]] for s in STREAMS}
        unit2 = (1024 // sum(w[s] for s in below)) // 8 * 8
        pads2 = {s: unit2 * w[s] // 8 for s in below}
        assert all(pads2[s] > pads[s] for s in below)
        assert a_st.count() - keys == (2048 - 8 * sum(pads2.values())) * 8 // 256   # the rest is key
        monkeypatch.setattr(commit_mod, "POOL_HIGH_WATER_PADS", 1 << 14)
        _run_block(nodes, 3)               # each stream numbers its own segments
        assert a_st.auth_layout(3) == b_st.auth_layout(3) == [2 if s in below else 1 for s in STREAMS]
        assert stores_identical(a_st, b_st)
        for ch in (a_ch, b_ch):
            ch.pool.refresh()
        cap = {s: 1023 + pads[s] * 2 + pads2.get(s, 0) for s in STREAMS}
        assert {s: a_ch.pool.capacity(s) for s in STREAMS} == cap
        assert {s: b_ch.pool.capacity(s) for s in STREAMS} == cap
    for role in ("alice", "bob"):     # a restart loads the same per-stream segments
        pool = AuthPool(tmp_path / "l.psk", tmp_path / f"{role}.db", role)
        assert {s: pool.capacity(s) for s in STREAMS} == cap
        pool.close()


def test_alice_skips_the_refill_when_every_stream_is_above_the_high_water(tmp_path, monkeypatch):
    with committer_pair(tmp_path, 1024) as nodes:
        a_st, b_st = nodes["alice"][0], nodes["bob"][0]
        monkeypatch.setattr(commit_mod, "POOL_HIGH_WATER_PADS", 100)   # the pool is "full" now
        _run_block(nodes, 1)
        assert a_st.auth_layout(1) == b_st.auth_layout(1) == [NO_SEGMENT] * len(STREAMS)
        assert _segments(tmp_path / "alice.db") == _segments(tmp_path / "bob.db") == {s: [] for s in STREAMS}
        assert a_st.count() == 2048 * 8 // 256          # the whole block as keys
        assert stores_identical(a_st, b_st)


def test_bob_never_refills_from_a_block_alice_kept_out_of_the_pool(tmp_path):
    """The commit's layout (COMMIT message, RESYNC) is enough: Bob's store does the same."""
    key = os.urandom(512)
    a = KeyStore(tmp_path / "a.db", "L", auth_refill_bytes=256)
    b = KeyStore(tmp_path / "b.db", "L", auth_refill_bytes=256)
    for s in (a, b):
        s.prepare(7, bytearray(key), 512 * 8)
    assert a.commit(7, refill=False) == 16 and a.auth_layout(7) == [NO_SEGMENT] * len(STREAMS)
    assert b.commit(7, a.auth_layout(7)) == 16 and b.auth_layout(7) == [NO_SEGMENT] * len(STREAMS)
    assert sum(map(len, _segments(tmp_path / "a.db").values())) == 0
    assert _segments(tmp_path / "a.db") == _segments(tmp_path / "b.db")
    assert stores_identical(a, b)
    a.close()
    b.close()


def test_a_block_committed_before_the_split_keeps_its_one_index(tmp_path):
    """A store written with one ``auth_idx`` for every stream resends it as a whole layout."""
    a = KeyStore(tmp_path / "a.db", "L", auth_refill_bytes=256)
    a.prepare(3, bytearray(os.urandom(512)), 512 * 8)
    a.commit(3)
    a.close()
    with closing(sqlite3.connect(tmp_path / "a.db")) as c:     # as the older code left it
        c.execute("UPDATE block SET auth_idx=0, auth_layout=NULL")
        c.commit()
    a = KeyStore(tmp_path / "a.db", "L", auth_refill_bytes=256)
    assert a.auth_layout(3) == [0] * len(STREAMS)
    a.close()


def test_a_stream_below_the_low_water_gets_more_of_the_block_and_bob_follows(tmp_path, monkeypatch):
    """A fixed refill fell behind a stream's use on the rig under load (bench.soak, 2026-11-25: the
    link stopped after 25 min, alice.proto.data exhausted). Below POOL_LOW_WATER_PADS Alice takes
    as much key as brings the stream back in one block, at most half the block's key; Bob takes
    the same bytes from her commit's split, with his own auth_refill_bytes unchanged."""
    with committer_pair(tmp_path, 1024) as nodes:      # 1023 pads a stream
        a_st, a_ch, _ = nodes["alice"]
        b_st, b_ch, _ = nodes["bob"]
        key = os.urandom(8192)
        for low, block in ((512, 1), (2000, 2)):
            monkeypatch.setattr(commit_mod, "POOL_LOW_WATER_PADS", low)
            before = {s: a_ch.pool.capacity(s) for s in STREAMS}
            keys = a_st.count()
            nodes["bob"][2].offer(block, bytearray(key), 8192 * 8)
            nodes["alice"][2].propose(block, bytearray(key), 8192 * 8)
            pump(nodes, lambda b=block: a_st.state(b) == "final" and b_st.state(b) == "committed")
            assert stores_identical(a_st, b_st)
            for ch in (a_ch, b_ch):
                ch.pool.refresh()
            got = {s: a_ch.pool.capacity(s) - before[s] for s in STREAMS}
            assert got == {s: b_ch.pool.capacity(s) - b_before for s, b_before in before.items()}
            if block == 1:          # above the low water: the usual 1024 bytes (24/8 pads)
                assert got == {s: (24 if s in PROTO else 8) for s in STREAMS}
            else:                   # ~1000 pads short: capped at half the block, 4096 bytes
                assert got == {s: (96 if s in PROTO else 32) for s in STREAMS}
            assert a_st.count() - keys == (8192 - 8 * sum(got.values())) * 8 // 256

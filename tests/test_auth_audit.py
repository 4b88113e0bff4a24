"""Audit of the channel's one-time-pad accounting (pads never used twice, both pools alike after
any commit, crash or refusal), with the real parts: two channels over ZeroMQ, SQLite files.

Findings it pins down, each failing on the code before its fix:

* A stream that runs dry: Alice's own streams used the pads of a block's segment as soon as
  she committed the block, before Bob (who appends it when he handles her COMMIT) had it. With
  the stream drained by other traffic, the COMMIT itself fell in that segment: Bob could never
  check it (``no_pad_yet`` for ever), the block stayed committed on Alice's side only (keys she
  could hand out that Bob never gets) and the link stalled. Now Alice's streams take a segment
  only once Bob confirmed its block (``AuthPool._unconfirmed``), and the last
  ``COMMIT_RESERVE_PADS`` of a proto data stream are kept for the commit messages.
* Nothing checked that the nodes split a block alike: with Bob's [protocol] auth_refill_bytes
  or key_size_bits unlike Alice's, his commit put other bytes in his pool and under the same key
  IDs. COMMIT and RESYNC now carry Alice's split (``KeyStore.commit_summary``); Bob refuses
  (``commit_refused``) a commit that would split otherwise, writing nothing.
"""

from __future__ import annotations

import os

import pytest
from commit_pair import committer_pair, pump

from link.channel import COMMIT_RESERVE_PADS, ChannelError
from link.keystore import stores_identical
from link.messages import MsgType


def _drain(ch) -> int:
    n = 0
    while ch.recv(timeout=0) is not None:
        n += 1
    return n


def test_a_drained_stream_still_commits_on_both_sides_and_resumes(tmp_path):
    with committer_pair(tmp_path, 2048) as nodes:
        a_st, a_ch, a_com = nodes["alice"]
        b_st, b_ch, b_com = nodes["bob"]
        pump(nodes, lambda: False, 0.3)          # the HELLOs (Alice answers Bob's with RESYNC)
        s = "alice.proto.data"
        cap = a_ch.pool.capacity(s)
        with pytest.raises(ChannelError, match="exhausted .its last 32 pads are kept for the commit"):
            for _ in range(cap):
                a_ch.send(MsgType.DATA, 0, b"x")
        assert a_ch.pool._send_next[s] == cap - COMMIT_RESERVE_PADS
        assert a_ch.wait_acked(10)
        _drain(b_ch)
        key = os.urandom(4096)
        b_com.offer(7, bytearray(key), 4096 * 8)
        a_com.propose(7, bytearray(key), 4096 * 8)
        pump(nodes, lambda: a_st.state(7) == "final" and b_st.state(7) == "committed", 5)
        assert (a_st.state(7), b_st.state(7)) == ("final", "committed"), b_ch.counters
        assert stores_identical(a_st, b_st) and a_st.count() > 0
        # the block refilled the stream on both sides alike: Alice sends on, Bob checks it
        a_ch.pool.refresh()
        b_ch.pool.refresh()
        assert a_ch.pool.capacity(s) == b_ch.pool.capacity(s) > cap
        for i in range(20):
            a_ch.send(MsgType.DATA, i, b"after")
        got = []
        while len(got) < 20:
            m = b_ch.recv(timeout=5)
            assert m is not None, b_ch.counters
            got.append(m)
        assert [m.payload for m in got] == [b"after"] * 20
        assert b_ch.counters["bad_tag"] == 0


def _segment_rows(store) -> int:
    return store._db.execute("SELECT COUNT(*) FROM auth_segment").fetchone()[0]


@pytest.mark.parametrize("setting, bob_value", [("auth_refill_bytes", 1024), ("key_size_bits", 128)])
def test_bob_refuses_a_commit_split_unlike_alices(tmp_path, setting, bob_value):
    """[protocol] auth_refill_bytes and key_size_bits "must be the same on both nodes", and nothing
    checked it: with Bob's different, his commit of a block put other bytes in his pool and under
    the same key IDs (stores differ, the pools too). Now COMMIT carries Alice's split and Bob
    refuses one unlike his own, writing nothing."""
    with committer_pair(tmp_path, 2048) as nodes:
        a_st, _, a_com = nodes["alice"]
        b_st, _, b_com = nodes["bob"]
        setattr(b_st, setting, bob_value)
        events = []
        b_com.on_event = lambda what, b, info: events.append((what, b, info))
        key = os.urandom(4096)
        b_com.offer(3, bytearray(key), 4096 * 8)
        a_com.propose(3, bytearray(key), 4096 * 8)
        pump(nodes, lambda: b_com.refused > 0 or b_st.state(3) == "committed", 5)
        assert a_st.state(3) == "committed" and b_st.state(3) == "prepared"
        assert b_st.count() == 0 and _segment_rows(b_st) == 0
        what, b, info = events[-1]
        assert (what, b, info["message"]) == ("refused", 3, "COMMIT") and setting in info["reason"]
        # Bob restarts with Alice's setting: her RESYNC (with the split) commits it alike
        setattr(b_st, setting, getattr(a_st, setting))
        a_com.resync()
        pump(nodes, lambda: a_st.state(3) == "final", 5)
        assert b_st.state(3) == "committed" and stores_identical(a_st, b_st)

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
        with pytest.raises(ChannelError, match="exhausted .its last 32 pads are kept for the commit messages"):
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

"""Bob refuses a malformed per-stream refill layout in COMMIT and RESYNC, and an old peer's frames.

COMMIT carries ``auth_layout`` (one segment index or -1 per auth stream) since protocol version
6. A payload Bob cannot read must change nothing: the block stays prepared (no pool segment, no
keys), a prepared block is not aborted by a RESYNC he cannot read, and the refusal names the
field. A version-5 peer (one ``auth_idx`` for all streams) is refused at the frame.
"""

from __future__ import annotations

import json
import os
import struct

import pytest
from commit_pair import committer_pair, split_for

from link.auth import STREAMS
from link.messages import HEADER, PROTOCOL_VERSION, TAG_LEN, Message, MsgType, WireError, split_frame

GOOD = [0] * len(STREAMS)
BAD_COMMITS = [
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "payload is a list"),
    (json.dumps({"auth_idx": 0}).encode(), "auth_layout: missing"),        # a version-5 COMMIT
    (json.dumps({"auth_layout": 0}).encode(), "auth_layout: expected a list of 8"),
    (json.dumps({"auth_layout": [0] * 7}).encode(), "auth_layout: expected a list of 8"),
    (json.dumps({"auth_layout": [0] * 9}).encode(), "auth_layout: expected a list of 8"),
    (json.dumps({"auth_layout": [0] * 7 + [-2]}).encode(), "stream bob.ctrl.ack"),
    (json.dumps({"auth_layout": [True] + [0] * 7}).encode(), "stream alice.proto.data"),
    (json.dumps({"auth_layout": [0, "1"] + [0] * 6}).encode(), "stream alice.proto.ack"),
    (json.dumps({"auth_layout": [0, 1.0] + [0] * 6}).encode(), "stream alice.proto.ack"),
    (json.dumps({"auth_layout": [1 << 62] + [0] * 7}).encode(), "[0, 2^62)"),
    (json.dumps({"auth_layout": None}).encode(), "auth_layout: expected a list"),
    # without Alice's split Bob cannot know her refill's size (it varies with her pools)
    (json.dumps({"auth_layout": GOOD}).encode(), "carries no split"),
]


def _msg(mtype: MsgType, block_id: int, payload: bytes) -> Message:
    return Message(mtype, "alice", "proto", 0, block_id, payload)


def _segment_rows(store) -> int:
    return store._db.execute("SELECT COUNT(*) FROM auth_segment").fetchone()[0]


def test_bob_refuses_a_malformed_commit_and_changes_nothing(tmp_path):
    with committer_pair(tmp_path, 1024) as nodes:
        b_st, _, b_com = nodes["bob"]
        events = []
        b_com.on_event = lambda what, b, info: events.append((what, b, info))
        b_st.prepare(4, bytearray(os.urandom(2048)), 2048 * 8)
        for i, (payload, why) in enumerate(BAD_COMMITS, 1):
            b_com.handle(_msg(MsgType.COMMIT, 4, payload))
            assert b_st.state(4) == "prepared", payload
            assert b_com.refused == i
            what, b, info = events[-1]
            assert (what, b, info["message"]) == ("refused", 4, "COMMIT")
            assert why in info["reason"], (payload, info["reason"])
        assert _segment_rows(b_st) == 0 and b_st.count() == 0
        b_com.handle(_msg(MsgType.COMMIT, 4, json.dumps(                                    # well formed
            {"auth_layout": GOOD, "split": split_for(b_st, 2048, GOOD)}).encode()))
        assert b_st.state(4) == "committed" and b_st.auth_layout(4) == GOOD
        assert _segment_rows(b_st) == len(STREAMS) and b_com.refused == len(BAD_COMMITS)


@pytest.mark.parametrize("listing, why", [
    ({"x": ["prepared", None]}, "block 'x' is not an integer"),
    ({"5": "prepared"}, "expected [state, auth_layout]"),
    ({"5": ["final", GOOD]}, "expected [state, auth_layout]"),
    ({"6": ["committed", None]}, "auth_layout: missing"),
    ({"6": ["committed", 3]}, "auth_layout: expected a list"),
    ({"6": ["committed", GOOD[:-1] + [-5]]}, "stream bob.ctrl.ack"),
    ({"6": ["committed", GOOD], "7": ["prepared", [0] * 3]}, "auth_layout: expected a list of 8"),
])
def test_bob_refuses_a_malformed_resync_before_acting_on_any_of_it(tmp_path, listing, why):
    with committer_pair(tmp_path, 1024) as nodes:
        b_st, _, b_com = nodes["bob"]
        events = []
        b_com.on_event = lambda what, b, info: events.append((what, b, info))
        b_st.prepare(5, bytearray(os.urandom(2048)), 2048 * 8)     # not listed: a valid RESYNC aborts it
        b_st.prepare(6, bytearray(os.urandom(2048)), 2048 * 8)
        b_com.handle(_msg(MsgType.RESYNC, 0, json.dumps(listing).encode()))
        assert b_st.state(5) == b_st.state(6) == "prepared"
        assert _segment_rows(b_st) == 0 and b_com.refused == 1
        assert events[-1][0] == "refused" and why in events[-1][2]["reason"], events


def test_a_version_5_frame_is_refused_naming_both_versions():
    assert PROTOCOL_VERSION == 7
    payload = json.dumps({"auth_idx": 0}).encode()
    frame = HEADER.pack(5, int(MsgType.COMMIT), 0, 0, 1, 4, len(payload)) + payload + bytes(TAG_LEN)
    with pytest.raises(WireError, match="protocol version 5, expected 7"):
        split_frame(frame)
    ok = struct.pack(">B", PROTOCOL_VERSION) + frame[1:]
    assert split_frame(ok)[0][0] == MsgType.COMMIT

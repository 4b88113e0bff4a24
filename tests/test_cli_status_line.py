"""``qkd alice``/``qkd bob``'s status line and the dashboard say when the peer has gone quiet.

A node whose peer stopped (or never started) keeps printing the same counts; the
note names the peer and how long it has been silent, so a lab engineer watching
one machine sees why nothing moves. The node side (``Node.status``'s
``peer_silent_s``) is checked in tests/test_engine.py's restart test.
"""

from __future__ import annotations

from link.dashboard import PEER_SILENT_NOTE_S, Dashboard, peer_note


def _st(silent: float, heard: bool) -> dict:
    return {"peer": "alice", "peer_heard": heard, "peer_silent_s": silent}


def test_no_note_while_the_peer_is_heard_from():
    assert peer_note(_st(0.0, True)) == ""
    assert peer_note(_st(PEER_SILENT_NOTE_S - 0.1, True)) == ""
    assert peer_note(_st(PEER_SILENT_NOTE_S - 0.1, False)) == ""     # just started


def test_note_names_the_peer_and_the_silence():
    assert peer_note(_st(34.4, True)) == "; waiting for alice: nothing heard for 34 s"
    assert peer_note(_st(12.0, False)) == "; waiting for alice: nothing heard since start (12 s)"


def test_dashboard_shows_the_note_under_the_node():
    d = Dashboard(width=8)
    d.update({"node": "bob", "kind": "status", "t": 0.0, "wall_s": 30.0, **_st(25.0, True)})
    assert "waiting for alice: nothing heard for 25 s" in d.render(now=0.0)
    d.update({"node": "bob", "kind": "status", "t": 1.0, "wall_s": 31.0, **_st(0.2, True)})
    assert "waiting for" not in d.render(now=1.0)

"""kill -9 of ONE node running in its own process, then a restart of that node alone (issue 9).

Alice and Bob run as two processes joined by the channel and an emulated fiber
(``bench.node_restart``); each is SIGKILLed once (Alice, then Bob, at a random
moment or inside a two-step commit) and restarted while the other keeps
running. Each stays down 6-7 s, longer than Alice's 64 frames in flight last
(without ``link.resume`` a Bob restarted that late never sees a frame Alice is
waiting on, and the link stalls: ``python -m bench.node_restart --no-resume``).
The link must resume (new keys in both stores), Bob must never hold a
block committed that Alice has not, and at the end both stores must hold the
same keys, every key committed before a kill, and no key value twice. The long
campaign is ``python -m bench.node_restart --kills N``.

Also the pieces of the re-synchronisation (``link.resume``): frame numbers
reserved durably above every frame an earlier run could have sent, and the
floor below which announcements are stale.
"""

from __future__ import annotations

import random
import threading

from bench.node_restart import campaign
from link.keystore import KeyStore
from link.resume import CHUNK, FrameResync


class _Fe:
    def __init__(self):
        self.first = None

    def set_first_frame(self, f):
        self.first = f


class _Pat:
    def __init__(self):
        self.wiped = False

    def wipe(self):
        self.wiped = True


def test_frame_numbers_resume_above_every_frame_an_earlier_run_sent(tmp_path):
    st = KeyStore(tmp_path / "a.db", "l")
    try:
        r = FrameResync.for_node("alice", st, _Fe())
        assert FrameResync.for_node("bob", st, _Fe()) is None
        assert FrameResync.for_node("alice", st, object()) is None     # front end cannot renumber
        assert r.first_frame() == 0 and r.fe.first == 0 and r.floor == 0
        for f in range(CHUNK + 10):        # the run sends CHUNK + 10 frames, then is killed
            r.reserve(f)
    finally:
        st.close()
    st = KeyStore(tmp_path / "a.db", "l")
    try:
        r2 = FrameResync.for_node("alice", st, _Fe())
        # the floor is up as soon as the node is built (its dispatcher may see a stale
        # announcement before the acquisition thread draws the first frame)
        assert r2.floor == r2.first >= CHUNK + 10 and r2.fe.first == r2.first
        first = r2.first_frame()
        assert first >= CHUNK + 10 and r2.fe.first == first
        assert r2.stale(CHUNK + 9) and not r2.stale(first) and r2.dropped == 1
    finally:
        st.close()


def test_bob_restart_raises_the_floor_and_frees_pending_frames(tmp_path):
    st = KeyStore(tmp_path / "a.db", "l")
    try:
        r = FrameResync.for_node("alice", st, _Fe())
        frames = {f: _Pat() for f in range(5)}
        pats = dict(frames)
        sem = threading.Semaphore(0)
        r.next = 5
        assert r.peer_restarted(frames, threading.Lock(), sem) == 5
        assert frames == {} and all(p.wiped for p in pats.values())
        assert all(sem.acquire(blocking=False) for _ in range(5)) and not sem.acquire(blocking=False)
        assert r.stale(4) and not r.stale(5)
    finally:
        st.close()


def test_kill_9_of_each_node_alone_then_restart_resumes_and_keeps_stores_identical(tmp_path):
    seed = random.Random().randrange(1 << 16)
    lines: list[str] = []
    res = campaign(tmp_path, 2, seed, report=lines.append, max_delay_s=4.0, min_down_s=6.0, max_down_s=7.0)
    log = f"seed {seed}\n" + "\n".join(lines)
    assert [r["victim"] for r in res["rows"]] == ["alice", "bob"], log
    assert res["resumed"] == 2, (log, res["rows"])           # both restarts: new keys on both sides
    assert res["violations"] == 0, log                       # Bob committed => Alice committed
    assert res["clean_exit"] and res["identical"], (log, res["final"])
    assert res["keys"]["alice"] > res["rows"][-1]["keys_at_kill"] > 0, log
    assert res["lost"] == [], log                            # nothing committed before a kill lost
    assert res["delivered_twice"] == 0, log                  # no key value under two IDs
    assert res["open_left"] == {"alice": {}, "bob": {}}, log
    assert res["final"]["alice"]["resume"]["first"] > 0, log  # the restarted Alice renumbered
    assert res["final"]["alice"]["alarms"] == res["final"]["bob"]["alarms"] == [], res["final"]

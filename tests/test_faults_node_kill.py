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

The same with the production front ends on the HIL rig (``DriverAlice`` on the
AWG twin, ``DriverBob`` on the PicoQuant stream; ``--frontend rig``): the AWG and
tagger cannot carry Alice's frame numbers, so the two agree per epoch
(``link.frame_epoch``); pieces of that are tested alone below.

Also the pieces of the re-synchronisation (``link.resume``): frame numbers
reserved durably above every frame an earlier run could have sent, and the
floor below which announcements are stale.
"""

from __future__ import annotations

import random
import threading
import time

import numpy as np

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


def test_kill_9_of_each_node_on_the_rig_instruments_resumes_with_frame_epochs(tmp_path):
    # the production front ends (DriverAlice on the rig's AWG twin over SCPI, DriverBob on its
    # PicoQuant T2 stream) in two node processes; the rig (the lab) runs in this process and
    # outlives both restarts; frame numbers are agreed per epoch (link.frame_epoch)
    seed = random.Random().randrange(1 << 16)
    lines: list[str] = []
    res = campaign(tmp_path, 2, seed, report=lines.append, max_delay_s=3.0, min_down_s=2.0, max_down_s=3.0,
                   frontend="rig", recover_timeout_s=120.0)
    log = f"seed {seed}\n" + "\n".join(lines)
    assert [r["victim"] for r in res["rows"]] == ["alice", "bob"], log
    assert res["resumed"] == 2, (log, res["rows"])
    assert res["violations"] == 0, log
    assert res["clean_exit"] and res["identical"], (log, res["final"])
    assert res["keys"]["alice"] > res["rows"][-1]["keys_at_kill"] > 0, log
    assert res["lost"] == [], log
    assert res["delivered_twice"] == 0, log
    assert res["open_left"] == {"alice": {}, "bob": {}}, log
    fa, fb = res["final"]["alice"], res["final"]["bob"]
    assert fa["resume"]["first"] > 0 and fa["resume"]["resets"] == 1, log   # renumbered; saw Bob restart
    # the last Alice run: her first epoch, then one for Bob's restart (one in all when Bob was
    # killed before her first was settled: she re-announces the same frame); the restarted Bob
    # settled Alice's epoch
    assert fa["epochs"] in (1, 2) and fb["epochs"] == 1, (log, fa, fb)
    assert fa["alarms"] == fb["alarms"] == [], (fa, fb)
    assert res["rig"]["frames"] > 0


class _Batch:
    def __init__(self, t, ch):
        self.t_ps, self.channel = np.asarray(t, np.int64), np.asarray(ch, np.uint8)


class _Tagger:
    """Feeds DriverBob prepared tag batches (the wire protocol is tested with the rig above)."""

    def __init__(self):
        self.batches: list = []

    def start_stream(self):
        pass

    def read_tags(self, timeout_s):
        return self.batches.pop(0) if self.batches else _Batch([], [])


def _frames(first_sync_ps, n, frame_ps, click_slot, period_ps):
    t, ch = [], []
    for k in range(n):
        s = first_sync_ps + k * frame_ps
        t += [s, s + click_slot * period_ps]
        ch += [0, 1]
    return t, ch


def test_bob_numbers_frames_from_the_epoch_after_a_quiet_tagger(monkeypatch):
    import link.frontend as fe_mod
    from link.frontend import DriverBob, Timing

    monkeypatch.setattr(fe_mod, "QUIET_S", 0.05)
    period, slots = 1000.0, 16
    bob = DriverBob(_Tagger(), Timing(period, slots, (0.0, 0.0, 0.0, 0.0), 500.0))
    acks: list[int] = []
    bob.use_epochs(acks.append)
    frame_ps = int(period * slots)
    # frames of an earlier Alice run: dropped, there is no epoch yet
    bob.tagger.batches.append(_Batch(*_frames(0, 5, frame_ps, 3, period)))
    assert bob.poll(0.0) == [] and bob.dropped_frames == 4 and acks == []
    bob.begin_epoch(700)
    assert bob.poll(0.0) == [] and acks == []              # not quiet yet
    time.sleep(0.08)
    assert bob.poll(0.0) == [] and acks == [700]           # quiet: settled, acknowledged
    bob.begin_epoch(700)                                   # Alice's resend: answered again
    assert acks == [700, 700]
    # the new epoch's frames come after a gap (Alice was down); one sync of the epoch is lost
    t, ch = _frames(100 * frame_ps, 6, frame_ps, 5, period)
    del t[4:6], ch[4:6]                                    # third frame: sync and click gone
    bob.tagger.batches.append(_Batch(t, ch))
    got = bob.poll(0.0)
    # the old run's open last frame is dropped; the new ones are 700, 701, (702 lost), 703, 704
    assert [d.frame_index for d in got] == [700, 701, 703, 704]
    assert all(list(d.slots) == [5] for d in got)
    assert bob.dropped_frames == 5 and bob.epochs == 1


def test_alice_uploads_nothing_between_an_epoch_and_its_ack():
    from link.frontend import DriverAlice

    class _Awg:
        def __init__(self):
            self.uploads = 0

        def load_frame_pattern(self, *a, **k):
            self.uploads += 1

    awg, sent, stop = _Awg(), [], threading.Event()
    alice = DriverAlice(awg, 8, 1e9)
    z = np.zeros(8, np.uint8)
    alice.emit(z, z, z)                                    # outside a node: plain upload order
    assert awg.uploads == 1 and alice.next_frame == 1
    alice.set_first_frame(512)
    alice.use_epochs(sent.append, stop)
    assert alice.begin_epoch() == 512
    th = threading.Thread(target=alice.emit, args=(z, z, z))
    th.start()
    time.sleep(0.2)
    assert awg.uploads == 1 and sent == [512]              # held, FRAME_EPOCH(512) sent
    alice.epoch_acked(511)                                 # not this epoch's ack
    time.sleep(0.1)
    assert awg.uploads == 1
    alice.epoch_acked(512)
    th.join(5)
    assert awg.uploads == 2 and alice.next_frame == 513 and alice.epochs == 1
    alice.begin_epoch()
    stop.set()                                             # a stopping node: emit gives up
    alice.emit(z, z, z)
    assert awg.uploads == 2

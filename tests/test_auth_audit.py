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
  (``commit_refused``) a commit that would split otherwise (key_size_bits), writing nothing, and
  takes the refill's bytes from it (so auth_refill_bytes no longer has to match: Alice varies
  the refill with her pools' levels).
* Old frames (copies, replays, and made-up frames at a sequence number whose pad is erased,
  which cannot be checked) were acknowledged once per I/O pass: each ACK a pad, so Eve could
  drain the ACK stream. Now at most once per retry_s.
* Durability against a power cut (the store runs synchronous=NORMAL): send reservations, and
  the prepare and commit steps, are now synced to disk before what follows them leaves.
* A layout naming a segment index the store already used hit a UNIQUE constraint (the node
  stopped as if its store had failed); a RESYNC stopped at the first block Bob refused.
* The receiver's last accepted sequence number was not durable against a power cut: replays of
  the frames accepted before it were accepted again, and a restarted receiver whose recv_last
  fell back waited for frames the peer had dropped as acknowledged (stall). Now a receive fence,
  synced per RECV_FENCE_BATCH frames, is the restarted node's floor; its HELLO names it and the
  peer re-sends above it (RESUME). Simulated with the store put back to its last synced state.

Also checked and sound here (tests below): across SIGKILLs of either node at random moments
and right after each store step of the commit, no pad tags two messages, no frame of the peer
is accepted twice, and the stores and pool segments end identical.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
import zmq
from commit_pair import committer_pair, pump, split_for

import link.channel as channel_mod
from link.auth import AuthPool, write_psk
from link.channel import COMMIT_RESERVE_PADS, Channel, ChannelError
from link.keystore import KeyStore, stores_identical
from link.messages import Message, MsgType, encode_header

HERE = Path(__file__).parent


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


def test_bob_splits_a_block_as_alice_did_whatever_his_auth_refill_bytes(tmp_path):
    """Bob's [protocol] auth_refill_bytes differing from Alice's once put other bytes in his pool
    and under the same key IDs. COMMIT carries Alice's split, and Bob now takes her refill's bytes
    from it (she varies them with her pools' levels: link.commit, POOL_LOW_WATER_PADS)."""
    with committer_pair(tmp_path, 2048) as nodes:
        a_st, _, a_com = nodes["alice"]
        b_st, _, b_com = nodes["bob"]
        b_st.auth_refill_bytes = 1024
        key = os.urandom(4096)
        b_com.offer(3, bytearray(key), 4096 * 8)
        a_com.propose(3, bytearray(key), 4096 * 8)
        pump(nodes, lambda: a_st.state(3) == "final", 5)
        assert b_st.state(3) == "committed" and b_com.refused == 0
        assert b_st.commit_summary(3) == a_st.commit_summary(3) and stores_identical(a_st, b_st)


@pytest.mark.parametrize("setting, bob_value", [("key_size_bits", 128)])
def test_bob_refuses_a_commit_split_unlike_alices(tmp_path, setting, bob_value):
    """[protocol] key_size_bits "must be the same on both nodes", and nothing checked it: with
    Bob's different, his commit of a block put the same bytes under other key IDs (stores
    differ). Now COMMIT carries Alice's split and Bob refuses one unlike his own, writing
    nothing."""
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


def _spawn(role: str, d, n: int, die: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "QKD_PADLOG": str(d / f"{role}.padlog")}
    env.pop("QKD_DIE", None)
    if die:
        env["QKD_DIE"] = die
    return subprocess.Popen([sys.executable, str(HERE / "commit_peer.py"), role, str(d), str(n)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _final_blocks(db) -> int:
    try:
        with closing(sqlite3.connect(db, timeout=5)) as c:
            return c.execute("SELECT COUNT(*) FROM block WHERE state IN ('final','committed')").fetchone()[0]
    except sqlite3.Error:
        return 0


def _pad_uses(path) -> tuple[dict, collections.Counter]:
    tags: dict[tuple[str, int], set[str]] = collections.defaultdict(set)
    acc: collections.Counter = collections.Counter()
    for line in path.read_text().splitlines():
        kind, stream, seq, *rest = line.split()
        if kind == "tag":
            tags[stream, int(seq)].add(rest[0])
        else:
            acc[stream, int(seq)] += 1
    return tags, acc


@pytest.mark.parametrize("seed", [11, 12])
def test_kills_on_both_sides_never_use_a_pad_twice(tmp_path, seed):
    """Real processes (tests/commit_peer.py) killed with SIGKILL four times at random moments,
    either side: across all runs no pad of either node tagged two different messages, no peer
    frame was accepted twice, and the stores and the pools' segments end up identical."""
    rng = random.Random(seed)
    n_blocks = 24
    with _peers(tmp_path, n_blocks) as procs:
        for k in range(4):
            at = 3 + 4 * k + rng.randint(0, 2)
            end = time.monotonic() + 20
            while _final_blocks(tmp_path / "alice.db") < at and time.monotonic() < end:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.03))
            victim = rng.choice(("alice", "bob"))
            procs[victim].kill()
            procs[victim].wait()
            procs[victim] = _spawn(victim, tmp_path, n_blocks)
    _check_after_kills(tmp_path)


@contextlib.contextmanager
def _peers(d, n_blocks: int, victim: str | None = None, die: str | None = None):
    """Both commit peers over a fresh PSK (``die``: the victim's QKD_DIE step); the body may kill
    and respawn them in ``procs``. At its end both must exit cleanly; leftovers are killed."""
    write_psk(d / "link.psk", "crash-link", 16384)
    procs = {r: _spawn(r, d, n_blocks, die if r == victim else None) for r in ("alice", "bob")}
    try:
        yield procs
        assert procs["alice"].wait(timeout=60) == 0, procs["alice"].stderr.read().decode()[-2000:]
        assert procs["bob"].wait(timeout=10) == 0, procs["bob"].stderr.read().decode()[-2000:]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def _check_after_kills(d) -> None:
    """Both commit peers ended: no pad tagged two messages, no frame accepted twice, the stores
    and the pools' segments identical."""
    for role in ("alice", "bob"):
        tags, acc = _pad_uses(d / f"{role}.padlog")
        assert tags, role
        twice = {k: v for k, v in tags.items() if len(v) > 1}
        assert not twice, f"{role}: pads tagged two different messages: {sorted(twice)[:5]}"
        again = [k for k, n in acc.items() if n > 1]
        assert not again, f"{role}: peer frames accepted twice: {sorted(again)[:5]}"
    a = KeyStore(d / "alice.db", "crash-link")
    b = KeyStore(d / "bob.db", "crash-link")
    try:
        assert a.open_blocks() == {} and stores_identical(a, b) and a.count() > 0
    finally:
        a.close()
        b.close()
    q = "SELECT stream, idx, length(data), source FROM auth_segment ORDER BY stream, idx"
    with closing(sqlite3.connect(d / "alice.db")) as ca, closing(sqlite3.connect(d / "bob.db")) as cb:
        assert ca.execute(q).fetchall() == cb.execute(q).fetchall()


@pytest.mark.parametrize("victim, step", [("alice", "prepare"), ("alice", "commit"), ("bob", "prepare"),
                                          ("bob", "commit"), ("alice", "finalize")])
def test_a_kill_at_each_commit_step_never_uses_a_pad_twice(tmp_path, victim, step):
    """SIGKILL right after a chosen store step of block 5 (before its message leaves), the
    victim restarted: the same outcome as above (pads, frames, stores, segments)."""
    n_blocks = 10
    with _peers(tmp_path, n_blocks, victim, f"{step}:5") as procs:
        assert procs[victim].wait(timeout=30) == -9, procs[victim].stderr.read().decode()[-2000:]
        procs[victim] = _spawn(victim, tmp_path, n_blocks)
    _check_after_kills(tmp_path)


def _alice_frame(pool, seq: int, mtype: MsgType, payload: bytes) -> bytes:
    head = encode_header(mtype, "alice", "proto", seq, 0, len(payload))
    return head + payload + pool.tag("alice.proto.data", seq, head + payload)


@pytest.mark.parametrize("erased", [True, False])
def test_old_frames_do_not_drain_the_ack_stream(tmp_path, monkeypatch, erased):
    """Eve floods Bob with frames at sequence numbers he already accepted: copies of Alice's
    recorded frames (their tags check) or, once their pads are erased, any bytes with that
    header (erased pads cannot be checked). Each pass of Bob's I/O thread answered them with an
    ACK, one pad of his ACK stream each: ~100 pads for 100 frames, from frames Eve can make up.
    Now such old frames get at most one ACK per retry_s (the peer resends no faster)."""
    monkeypatch.setattr(channel_mod, "ERASE_EVERY_S", 0.02)
    ctx = zmq.Context()
    eve, eps, alice_pool, recorded = _eve_recording(tmp_path, ctx, 5)
    bob = Channel("bob", AuthPool(tmp_path / "l.psk", tmp_path / "bob.db", "bob"), ctx=ctx, retry_s=0.2)
    try:
        bob.connect(**eps)
        bob.start()
        for f in recorded:
            eve["proto"].send(f)
        assert len(_recv(bob, 6)) == 6
        # acknowledge Bob's HELLO, so no retransmission notice of his spends ACK pads below
        head = encode_header(MsgType.ACK, "alice", "proto", 0, 0, 8)
        body = (0).to_bytes(8, "big", signed=True)
        eve["proto"].send(head + body + alice_pool.tag("alice.proto.ack", 0, head + body))
        end = time.monotonic() + 5
        while (erased and not bob.pool.erased("alice.proto.data", 3)) and time.monotonic() < end:
            time.sleep(0.01)
        assert bob.pool.erased("alice.proto.data", 3) or not erased
        time.sleep(0.3)
        seq0 = bob.pool._send_next["bob.proto.ack"]
        old = bytearray(recorded[3])
        if erased:                           # made-up bytes: the pad is gone, nothing checks them
            old[-10:] = b"zz" + os.urandom(8)        # payload "m3" -> "zz", a random tag
        t0 = time.monotonic()
        for _ in range(100):
            eve["proto"].send(bytes(old))
            time.sleep(0.003)
        time.sleep(0.1)
        spent_s = time.monotonic() - t0
        assert bob.counters["replayed"] >= 90 and bob.counters["bad_tag"] == 0
        acks = bob.pool._send_next["bob.proto.ack"] - seq0     # pads of his proto ACK stream
        assert 1 <= acks <= 2 + spent_s / 0.2, acks    # at once, then once per retry_s
        assert bob.recv(timeout=0.05) is None          # none of it reached the application
    finally:
        bob.close()
        alice_pool.close()
        for sock in eve.values():
            sock.close(0)
        ctx.destroy(linger=0)


def _recv(ch, n: int, timeout_s: float = 5.0) -> list:
    out = []
    end = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < end:
        m = ch.recv(timeout=0.05)
        if m is not None:
            out.append(m)
    return out


_RESERVE_SCRIPT = """
import os, sys
sys.path.insert(0, sys.argv[2])
from link.auth import AuthPool, write_psk
d = sys.argv[1]
write_psk(d + "/l.psk", "L", 8192)
pool = AuthPool(d + "/l.psk", d + "/a.db", "alice")
os.write(1, b"RESERVE\\n")
pool.next_send_seq("alice.proto.data")
os.write(1, b"RESERVED\\n")
pool.close()
"""


def _synced_between(tmp_path, script: str, marks: tuple[str, ...]) -> tuple[list[bool], list[str]]:
    """Run ``script`` under strace. For each two consecutive ``marks`` it writes (a line each on
    stdout), whether an fsync or fdatasync came between them; and the trace from the first."""
    trace = tmp_path / "trace.txt"
    r = subprocess.run(["strace", "-f", "-e", "trace=fsync,fdatasync,write", "-o", str(trace),
                        sys.executable, "-c", script, str(tmp_path), str(HERE.parent)],
                       capture_output=True, timeout=60)
    if r.returncode != 0 and b"ptrace" in r.stderr:
        pytest.skip(f"strace cannot trace here: {r.stderr.decode()[-200:]}")
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    lines = trace.read_text().splitlines()
    at = [next(i for i, ln in enumerate(lines) if f'"{m}\\n"' in ln) for m in marks]
    return ([any("fdatasync(" in ln or "fsync(" in ln for ln in lines[a:b]) for a, b in zip(at, at[1:])],
            lines[at[0]:at[-1] + 1])


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_a_send_reservation_is_synced_to_disk_before_its_pads_are_used(tmp_path):
    """The pool's connection runs synchronous=NORMAL: in WAL mode a commit then survives a killed
    process but not a power cut. A send reservation lost that way lets the next run tag new
    frames with pads that tagged frames already sent: pad reuse, forgery. The reservation write
    must reach the disk (an fsync of the WAL) before next_send_seq returns; traced with strace."""
    synced, trace = _synced_between(tmp_path, _RESERVE_SCRIPT, ("RESERVE", "RESERVED"))
    assert synced == [True], trace


def test_bob_refuses_a_layout_that_reuses_a_segment_index(tmp_path):
    """A well-formed COMMIT whose layout names a segment index Bob's store already holds (a peer
    that lost count) raised a constraint error: the node stopped as if its key store had failed.
    Now it is refused like a malformed layout, and changes nothing."""
    with committer_pair(tmp_path, 2048) as nodes:
        b_st, _, b_com = nodes["bob"]
        for b in (1, 2):
            b_st.prepare(b, bytearray(os.urandom(4096)), 4096 * 8)
        b_com.handle(Message(MsgType.COMMIT, "alice", "proto", 1, 1,
                             json.dumps({"auth_layout": [0] * 8,
                                         "split": split_for(b_st, 4096, [0] * 8)}).encode()))
        assert b_st.state(1) == "committed"
        rows, keys = _segment_rows(b_st), b_st.count()
        b_com.handle(Message(MsgType.COMMIT, "alice", "proto", 2, 2,
                             json.dumps({"auth_layout": [-1] * 7 + [0],
                                         "split": split_for(b_st, 4096, [-1] * 7 + [0])}).encode()))
        assert b_st.state(2) == "prepared" and b_com.refused == 1
        assert (_segment_rows(b_st), b_st.count()) == (rows, keys)


_COMMIT_SCRIPT = """
import os, sys
sys.path.insert(0, sys.argv[2])
from link.keystore import KeyStore
st = KeyStore(sys.argv[1] + "/a.db", "L", auth_refill_bytes=1024)
key = bytearray(os.urandom(2048))
os.write(1, b"PREPARE\\n")
st.prepare(1, key, 2048 * 8)
os.write(1, b"COMMIT\\n")
st.commit(1, [0] * 8)
os.write(1, b"DONE\\n")
st.close()
"""


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_prepare_and_commit_are_synced_to_disk_before_the_peer_hears_of_them(tmp_path):
    """The two-step commit's recovery rests on "Bob prepared (durably) before he answers" and
    "Alice committed before COMMIT". Under synchronous=NORMAL a power cut can undo a commit
    after its message left: Alice's RESYNC then recommits the block with a fresh pool layout
    (``_on_resync_reply``: "cannot happen") and the stores differ. Each step is fsynced."""
    synced, trace = _synced_between(tmp_path, _COMMIT_SCRIPT, ("PREPARE", "COMMIT", "DONE"))
    assert synced == [True, True], trace


def test_a_resync_block_bob_refuses_does_not_stop_the_others(tmp_path):
    """A RESYNC that lists a committed block Bob must refuse (here: its layout reuses a segment
    index) used to abandon the whole RESYNC there: the blocks listed after it stayed unsettled
    and no RESYNC_REPLY went out. Now only that block is refused (it stays prepared)."""
    with committer_pair(tmp_path, 2048) as nodes:
        b_st, _, b_com = nodes["bob"]
        for b in (1, 2, 3):
            b_st.prepare(b, bytearray(os.urandom(4096)), 4096 * 8)
        b_com.handle(Message(MsgType.COMMIT, "alice", "proto", 1, 1,
                             json.dumps({"auth_layout": [0] * 8,
                                         "split": split_for(b_st, 4096, [0] * 8)}).encode()))
        sent = []
        real_send = b_com.ch.send
        b_com.ch.send = lambda mtype, *a, **kw: (sent.append(mtype), real_send(mtype, *a, **kw))[1]
        listing = {"2": ["committed", [0] * 8, split_for(b_st, 4096, [0] * 8)],
                   "3": ["committed", [1] * 8, split_for(b_st, 4096, [1] * 8)]}
        b_com.handle(Message(MsgType.RESYNC, "alice", "proto", 2, 0, json.dumps(listing).encode()))
        assert (b_st.state(2), b_st.state(3)) == ("prepared", "committed") and b_com.refused == 1
        assert sent == [MsgType.RESYNC_REPLY]


class _PowerCut:
    """A pool whose store file can be put back to what a power cut leaves: a copy of the file and
    its WAL taken right after each write synced to disk (the pool's synchronous=FULL writes: send
    reservations, receive fences); ``cut()`` restores the last copy, undoing every write made
    since under NORMAL (recv_last, erased pads), as a power cut may. (SQLite may checkpoint some
    NORMAL writes to disk before the cut; losing all of them is the worst case.) A pool reopened
    on the same file gets a new _PowerCut on the same ``snap_dir``."""

    def __init__(self, pool: AuthPool, snap_dir: Path) -> None:
        self.db = Path(pool._db_path)
        self.snap = snap_dir
        self.snap.mkdir(exist_ok=True)
        real, full = pool._sync, [False]

        def sync(level: str) -> None:
            real(level)
            if level == "FULL":
                full[0] = True
            elif full[0]:                   # the FULL write just committed: its state is on disk
                full[0] = False
                for suffix in ("", "-wal"):
                    src = Path(f"{self.db}{suffix}")
                    if src.exists():
                        shutil.copyfile(src, self.snap / f"db{suffix}")

        pool._sync = sync

    def cut(self) -> None:
        """Call with the pool closed: the store file as the last synced write left it."""
        assert (self.snap / "db").exists(), "nothing was ever synced"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.db}{suffix}").unlink(missing_ok=True)
        for suffix in ("", "-wal"):
            if (self.snap / f"db{suffix}").exists():
                shutil.copyfile(self.snap / f"db{suffix}", f"{self.db}{suffix}")


def _eve(ctx) -> tuple[dict, dict]:
    eve = {k: ctx.socket(zmq.DEALER) for k in ("proto", "ctrl")}
    eps = {}
    for k, sock in eve.items():
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind("tcp://127.0.0.1:*")
        eps[k] = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    return eve, eps


def _eve_recording(tmp_path, ctx, n_data: int) -> tuple[dict, dict, AuthPool, list[bytes]]:
    """A fresh pre-shared secret, Eve's two sockets for Bob to connect to, and Alice's frames she
    recorded: a HELLO and ``n_data`` DATA frames m1.. (tagged by Alice's pool, returned with them)."""
    write_psk(tmp_path / "l.psk", "L", 8192)
    eve, eps = _eve(ctx)
    alice_pool = AuthPool(tmp_path / "l.psk", tmp_path / "alice.db", "alice")
    recorded = [_alice_frame(alice_pool, 0, MsgType.HELLO, b"")]
    recorded += [_alice_frame(alice_pool, i, MsgType.DATA, b"m%d" % i) for i in range(1, n_data + 1)]
    return eve, eps, alice_pool, recorded


def test_a_replay_after_a_power_cut_is_refused(tmp_path):
    """Bob's last accepted sequence number (recv_last) is written under synchronous=NORMAL: a power
    cut can lose it, and the frames he accepted before the cut were accepted again when Eve
    replayed them (a replayed RESYNC can abort a block Alice committed). Now accepting a frame
    above the durable receive fence first raises the fence, synced, and the next run refuses
    everything at or below it. Simulated: Bob's store put back to its last synced state."""
    ctx = zmq.Context()
    eve, eps, alice_pool, recorded = _eve_recording(tmp_path, ctx, 10)
    pool = AuthPool(tmp_path / "l.psk", tmp_path / "bob.db", "bob")
    power = _PowerCut(pool, tmp_path / "synced")
    bob = Channel("bob", pool, ctx=ctx, retry_s=0.2)
    bob2 = None
    try:
        bob.connect(**eps)
        bob.start()
        eve["proto"].send(recorded[0])
        assert [m.mtype for m in _recv(bob, 1)] == [MsgType.HELLO]
        end = time.monotonic() + 5      # his first ACK: its reservation (synced) syncs what came before
        while pool._send_next["bob.proto.ack"] == 0 and time.monotonic() < end:
            time.sleep(0.01)
        time.sleep(0.05)
        for f in recorded[1:]:          # accepted, their recv_last written under NORMAL only
            eve["proto"].send(f)
        assert [m.payload for m in _recv(bob, 10)] == [b"m%d" % i for i in range(1, 11)]
        bob.close()
        power.cut()
        pool2 = AuthPool(tmp_path / "l.psk", tmp_path / "bob.db", "bob")
        assert pool2.recv_last("alice.proto.data") < 10      # the cut lost the last recv_last
        bob2 = Channel("bob", pool2, ctx=ctx, retry_s=0.2)
        bob2.connect(**eps)
        bob2.start()
        for f in recorded:                                   # Eve replays everything
            eve["proto"].send(f)
        assert _recv(bob2, 1, timeout_s=0.5) == []           # nothing accepted again
        assert bob2.counters["received"] == 0 and bob2.counters["bad_tag"] == 0, bob2.counters
    finally:
        for ch in (bob, bob2):
            if ch is not None:
                ch.close()
        alice_pool.close()
        for sock in eve.values():
            sock.close(0)
        ctx.destroy(linger=0)


def _open(tmp_path, ctx, role: str) -> tuple[Channel, _PowerCut]:
    pool = AuthPool(tmp_path / "l.psk", tmp_path / f"{role}.db", role)
    power = _PowerCut(pool, tmp_path / f"synced-{role}")
    return Channel(role, pool, ctx=ctx, retry_s=0.05), power


def _data(ch: Channel, n: int) -> list[bytes]:
    """The payloads of the next n DATA messages (HELLOs skipped), then of any more in 0.1 s."""
    out: list[bytes] = []
    end = time.monotonic() + 10
    while time.monotonic() < end and len(out) < n:
        m = ch.recv(timeout=0.02)
        if m is not None and m.mtype == MsgType.DATA:
            out.append(m.payload)
    return out + [m.payload for m in _recv(ch, 1, timeout_s=0.1) if m.mtype == MsgType.DATA]


def _exchange(a: Channel, b: Channel, tag: bytes, n: int = 5) -> None:
    """n messages each way, each received once, in order, nothing else."""
    for i in range(n):
        a.send(MsgType.DATA, i, tag + b"a%d" % i)
        b.send(MsgType.DATA, i, tag + b"b%d" % i)
    for rx, who in ((b, b"a"), (a, b"b")):
        got = _data(rx, n)
        assert got == [tag + who + b"%d" % i for i in range(n)], (got, rx.counters)


def test_after_a_power_cut_of_either_node_or_both_nothing_stalls_or_is_lost(tmp_path):
    """The restarted node's floor (its last run's fence) is above frames the peer has sent but not
    seen acknowledged: the peer learns it from the HELLO and re-sends them above it (RESUME), so
    they are not lost; the restarted sender's HELLO jumps above any fence the peer raised, so two
    restarted nodes still take each other's HELLO. Messages sent while Bob is down, after a
    power cut of Bob, then of Alice, then of both: each received once, in order."""
    write_psk(tmp_path / "l.psk", "L", 65536)
    ctx = zmq.Context()
    chans: dict[str, Channel] = {}
    powers: dict[str, _PowerCut] = {}
    try:
        for role in ("alice", "bob"):
            chans[role], powers[role] = _open(tmp_path, ctx, role)
        eps = chans["alice"].bind()
        chans["bob"].connect(**eps)
        for ch in chans.values():
            ch.start()
        _exchange(chans["alice"], chans["bob"], b"first ")
        for victims in (("bob",), ("alice",), ("alice", "bob")):
            for role in victims:
                chans[role].close()
                powers[role].cut()
            # sent while the victims are down (a survivor's frames stay unacknowledged)
            pending = {r: chans[r].send(MsgType.DATA, 99, b"while down") for r in chans if r not in victims}
            for role in victims:
                chans[role], powers[role] = _open(tmp_path, ctx, role)
                if role == "alice":
                    eps = chans["alice"].bind(eps["proto"], eps["ctrl"])
                else:
                    chans["bob"].connect(**eps)
                chans[role].start()
            for r in pending:
                peer = "bob" if r == "alice" else "alice"
                got = _data(chans[peer], 1)
                assert got == [b"while down"], (victims, got, chans[peer].counters)
            _exchange(chans["alice"], chans["bob"], b"after %s " % "+".join(victims).encode())
            for ch in chans.values():
                assert ch.counters["out_of_sequence"] == ch.counters["bad_tag"] == 0, ch.counters
    finally:
        for ch in chans.values():
            ch.close()
        ctx.destroy(linger=0)

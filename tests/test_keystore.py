"""The key store and the two-step commit, including real processes killed at random points."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from link import auth
from link.keystore import KeyStore, KeyStoreError, key_id, stores_identical

HERE = Path(__file__).resolve().parent


def _key(n, fill=None):
    return bytearray(os.urandom(n)) if fill is None else bytearray([fill]) * n


def test_commit_cuts_keys_with_derived_ids(tmp_path):
    s = KeyStore(tmp_path / "a.db", "L1")
    k = _key(32 * 3 + 5)
    ref = bytes(k)
    s.prepare(7, k, len(k) * 8)
    assert s.count() == 0 and s.state(7) == "prepared"          # not usable before commit
    assert s.commit(7) == 3
    assert s.commit(7) == 3                                      # idempotent
    ids = s.key_ids()
    assert ids == [key_id("L1", 7, i) for i in range(3)]
    assert ids[0] == str(uuid.uuid5(uuid.UUID("6f1c1a3e-4d7b-5b1e-9a53-7c2d0e8f4a10"), "L1/7/0"))
    got = s.consume(ids[1])
    assert isinstance(got, bytearray) and bytes(got) == ref[32:64]
    assert s.count() == 2
    with pytest.raises(KeyStoreError, match="no key"):
        s.consume(ids[1])
    s.close()


def test_consumed_key_bytes_are_gone_from_the_file(tmp_path):
    s = KeyStore(tmp_path / "a.db", "L1")
    marker = bytes(range(1, 33))
    s.prepare(1, bytearray(marker), 256)
    s.commit(1)
    (kid,) = s.key_ids()
    s.consume(kid)
    s._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("a.db"))
    assert marker not in raw
    s.close()


def test_state_rules_and_bad_input(tmp_path):
    s = KeyStore(tmp_path / "a.db", "L1", key_size_bits=128)
    s.prepare(1, _key(64), 512)
    s.prepare(1, _key(64), 512)                                  # idempotent while prepared
    s.commit(1)
    with pytest.raises(KeyStoreError, match="already committed"):
        s.abort(1)
    with pytest.raises(KeyStoreError, match="never prepared"):
        s.commit(2)
    s.abort(3, "test")                                           # abort before prepare sticks
    with pytest.raises(KeyStoreError, match="already aborted"):
        s.prepare(3, _key(16), 128)
    with pytest.raises(ValueError, match="key_bits"):
        s.prepare(4, _key(4), 64)
    with pytest.raises(ValueError, match="key_size_bits"):
        KeyStore(tmp_path / "b.db", "L1", key_size_bits=100)
    s.close()
    with pytest.raises(KeyStoreError, match="belongs to link 'L1'"):
        KeyStore(tmp_path / "a.db", "L2")
    s = KeyStore(tmp_path / "a.db", "L1")
    assert s.next_block_id() == 4 and s.next_block_id() == 5      # above every block seen
    s.close()


def test_commit_refills_the_auth_pool_in_the_same_transaction(tmp_path):
    s = KeyStore(tmp_path / "a.db", "L1", auth_refill_bytes=128)
    s.prepare(1, _key(128 + 64), 1536)
    assert s.commit(1) == 2
    conn = sqlite3.connect(tmp_path / "a.db")
    rows = conn.execute("SELECT stream, length(data) FROM auth_segment").fetchall()
    assert sorted(r[0] for r in rows) == sorted(auth.STREAMS)
    assert sum(r[1] for r in rows) == 128 and {r[1] for r in rows if ".proto." in r[0]} == {24}
    conn.close()
    s.close()


def test_two_step_commit_over_the_channel(tmp_path):
    from commit_pair import committer_pair, pump

    from link.messages import MsgType

    with committer_pair(tmp_path, 128) as nodes:
        a_st, a_ch, a_com = nodes["alice"]
        b_st, b_ch, b_com = nodes["bob"]
        keys = {b: _key(128 + 96) for b in (1, 2, 3)}
        b_com.offer(1, bytearray(keys[1]), 224 * 8)       # Bob ready before Alice asks
        for b in (1, 2, 3):
            a_com.propose(b, bytearray(keys[b]), 224 * 8)
        b_com.offer(2, bytearray(keys[2]), 224 * 8)        # ... and after
        b_com.fail(3, "verification failed")               # Bob's pipeline lost block 3
        pump(nodes, lambda: not (a_st.open_blocks() or b_st.state(2) != "committed"
                                 or a_st.state(3) != "aborted"))
        assert a_st.state(1) == a_st.state(2) == "final" and a_st.state(3) == "aborted"
        assert b_st.state(1) == b_st.state(2) == "committed" and b_st.state(3) == "aborted"
        assert a_st.count() == b_st.count() == 6 and stores_identical(a_st, b_st)
        assert MsgType.PREPARE in MsgType.__members__.values()


def _db_blocks(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        c = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            return c.execute("SELECT COUNT(*) FROM block").fetchone()[0]
        finally:
            c.close()
    except sqlite3.Error:
        return 0


def _spawn(role, d, n):
    return subprocess.Popen([sys.executable, str(HERE / "commit_peer.py"), role, str(d), str(n)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize("victim,seed", [("alice", 1), ("bob", 2), ("alice", 3), ("bob", 4),
                                         ("both", 5)])
def test_crash_at_a_random_point_leaves_identical_stores(tmp_path, victim, seed):
    rng = random.Random(seed)
    n_blocks = 25
    auth.write_psk(tmp_path / "link.psk", "crash-link", 16384)
    procs = {"alice": _spawn("alice", tmp_path, n_blocks), "bob": _spawn("bob", tmp_path, n_blocks)}
    try:
        kill_at = rng.randint(2, n_blocks - 5)
        end = time.monotonic() + 30
        while _db_blocks(tmp_path / "alice.db") < kill_at and time.monotonic() < end:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.02))
        for role in (("alice", "bob") if victim == "both" else (victim,)):
            procs[role].kill()                          # SIGKILL: no clean-up runs
            procs[role].wait()
        for role in (("alice", "bob") if victim == "both" else (victim,)):
            procs[role] = _spawn(role, tmp_path, n_blocks)
        rc = procs["alice"].wait(timeout=60)
        assert rc == 0, procs["alice"].stderr.read().decode()[-2000:]
        assert procs["bob"].wait(timeout=10) == 0, procs["bob"].stderr.read().decode()[-2000:]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    a = KeyStore(tmp_path / "alice.db", "crash-link")
    b = KeyStore(tmp_path / "bob.db", "crash-link")
    try:
        assert a.open_blocks() == {}
        a_final = {x.block_id for x in a.blocks() if x.state == "final"}
        b_comm = {x.block_id for x in b.blocks() if x.state == "committed"}
        assert len(a_final) >= n_blocks and a_final == b_comm
        assert a.count() == b.count() == 4 * len(a_final)
        assert stores_identical(a, b)
        # the pools grew by identical segments, in the same order
        ca = sqlite3.connect(tmp_path / "alice.db")
        cb = sqlite3.connect(tmp_path / "bob.db")
        q = "SELECT stream, idx, data FROM auth_segment ORDER BY stream, idx"
        assert ca.execute(q).fetchall() == cb.execute(q).fetchall()
        ca.close()
        cb.close()
    finally:
        a.close()
        b.close()


def test_keys_by_id_share_and_order_across_blocks(tmp_path):
    s = KeyStore(tmp_path / "a.db", "L1")
    ref = {}
    for b in (3, 5):
        k = _key(32 * 5)
        ref.update({key_id("L1", b, i): bytes(k[32 * i:32 * (i + 1)]) for i in range(5)})
        s.prepare(b, k, len(k) * 8)
        s.commit(b)
    assert s.key_ids() == [key_id("L1", b, i) for b in (3, 5) for i in range(5)]
    assert s.available() == 10 and s.available(0) == 6 and s.available(1) == 4
    assert s.peek(4, share=1) == [key_id("L1", 3, 1), key_id("L1", 3, 3), key_id("L1", 5, 1),
                                  key_id("L1", 5, 3)]
    assert s.peek(2) == [key_id("L1", 3, 0), key_id("L1", 3, 1)]
    want = [key_id("L1", 5, 4), key_id("L1", 3, 2)]
    assert [bytes(k) for k in s.take(want)] == [ref[k] for k in want]
    assert s.available(0) == 4 and s.count() == 8
    with pytest.raises(KeyError, match=want[0]):                  # taken already: all or none
        s.take([key_id("L1", 3, 0), want[0]])
    for bad in (key_id("L1", 4, 0), key_id("L2", 3, 0), want[1].upper(), "{" + want[1][1:], "x"):
        with pytest.raises(KeyError):
            s.take([bad])
    assert s.count() == 8
    other = KeyStore(tmp_path / "a.db", "L1")                     # another process's view
    assert bytes(other.consume(key_id("L1", 3, 0))) == ref[key_id("L1", 3, 0)]
    other.close()
    assert s.count() == 7
    while (got := s.consume_next()) is not None:
        assert bytes(got[1]) == ref[got[0]]
    assert s.count() == 0 and s.peek(5) == []
    assert s._db.execute("SELECT COUNT(*) FROM keyblock").fetchone()[0] == 0   # emptied rows go
    s.close()


def test_store_of_one_row_per_key_is_converted_on_open(tmp_path):
    """A store written by the earlier layout (a ``key`` table, one row per key) opens with the
    same keys, IDs and values, and its old rows are gone."""
    path = tmp_path / "old.db"
    c = sqlite3.connect(path)
    c.executescript("""
        CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE block (block_id INTEGER PRIMARY KEY, state TEXT NOT NULL, key_bits INTEGER NOT NULL,
            n_keys INTEGER NOT NULL DEFAULT 0, auth_bytes INTEGER NOT NULL DEFAULT 0, auth_idx INTEGER,
            prepared BLOB, reason TEXT NOT NULL DEFAULT '');
        CREATE TABLE key (key_id TEXT PRIMARY KEY, block_id INTEGER NOT NULL, idx INTEGER NOT NULL,
            data BLOB NOT NULL);
        CREATE INDEX key_block ON key(block_id, idx);
        INSERT INTO meta VALUES ('link_id', 'L1');
    """)
    ref = {}
    for b, n, consumed in ((1, 4, {1}), (2, 3, set())):
        c.execute("INSERT INTO block VALUES (?, 'final', ?, ?, 0, NULL, NULL, '')", (b, n * 256, n))
        for i in range(n):
            if i not in consumed:
                ref[key_id("L1", b, i)] = os.urandom(32)
                c.execute("INSERT INTO key VALUES (?,?,?,?)", (key_id("L1", b, i), b, i,
                                                              ref[key_id("L1", b, i)]))
    c.commit()
    c.close()
    s = KeyStore(path, "L1")
    assert s.key_ids() == [key_id("L1", 1, i) for i in (0, 2, 3)] + [key_id("L1", 2, i) for i in range(3)]
    assert s.available(1) == 2 and s.count() == 6
    assert bytes(s.consume(key_id("L1", 1, 3))) == ref[key_id("L1", 1, 3)]
    with pytest.raises(KeyStoreError, match="no key"):
        s.consume(key_id("L1", 1, 1))
    assert s._db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name='key'").fetchone()[0] == 0
    s.close()

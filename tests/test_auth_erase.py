"""Used authentication pads are erased: from memory, from the store file and from its WAL.

The pool's streams are PSK bytes followed by segments of distilled key that the key store
appends (``append_segments_sql``). A pad is used once its tag was computed (our streams) or
its frame accepted (the peer's); ``AuthPool.erase_used`` must then make it unrecoverable,
keep every unused pad where it was (same tags before and after, and after a restart), and
never let a restarted node take a used pad again.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import closing

import pytest

from link import auth
from link.auth import AuthPool, PadErased, next_segment_index, write_psk

PER_STREAM = 8 + 64 * 8            # the smallest PSK: the hash key and 64 pads per stream
SEGMENT = 16 * 512                 # a segment of 8 KiB: 1536 bytes (192 pads) per proto stream


def _pool(tmp_path) -> AuthPool:
    p = tmp_path / "a.psk"
    if not p.exists():
        write_psk(p, "L", PER_STREAM, os.urandom(PER_STREAM * len(auth.STREAMS)))
    return AuthPool(p, tmp_path / "a.db", "alice")


def _append(db, idx: int, material: bytes) -> None:
    with closing(sqlite3.connect(db, isolation_level=None)) as c:
        c.execute("BEGIN IMMEDIATE")
        auth.append_segments_sql(c, f"block {idx}", bytearray(material), idx)
        c.execute("COMMIT")


def _segment_bytes(material: bytes, stream: str) -> bytes:
    """The part of ``material`` that ``append_segments_sql`` gives ``stream``."""
    unit = (len(material) // auth._WEIGHT_SUM) // auth.PAD_BYTES * auth.PAD_BYTES
    off = 0
    for s in auth.STREAMS:
        n = unit * auth.SEGMENT_WEIGHTS[s.split(".", 1)[1]]
        if s == stream:
            return material[off:off + n]
        off += n
    raise KeyError(stream)


def _use_own(pool: AuthPool, stream: str, upto: int) -> None:
    while pool.has_pad(stream) and pool._send_next[stream] < upto:
        pool.tag(stream, pool.next_send_seq(stream), b"frame")


def _file_bytes(db) -> bytes:
    return b"".join(p.read_bytes() for p in (db, db.with_name(db.name + "-wal")) if p.exists())


def test_used_pads_leave_the_file_and_the_wal_unused_ones_keep_their_tags(tmp_path):
    db = tmp_path / "a.db"
    pool = _pool(tmp_path)
    mats = [os.urandom(SEGMENT), os.urandom(SEGMENT)]
    for i, m in enumerate(mats):
        _append(db, i, m)
    pool.refresh()
    mine, peer = "alice.proto.data", "bob.proto.data"
    own0, peer0 = _segment_bytes(mats[0], mine), _segment_bytes(mats[0], peer)
    own1 = _segment_bytes(mats[1], mine)
    assert len(own0) == 1536 and pool.capacity(mine) == 64 + 2 * 192
    # Alice sent through segment 0 and half of segment 1; she accepted Bob's frames through
    # the first 100 pads of his segment 0
    _use_own(pool, mine, 64 + 192 + 96)
    for seq in range(64 + 100):
        pool.accept_recv(peer, seq)
    ref = _pool(tmp_path)     # another process's view of the same files, for the expected tags
    unused_tag = ref.tag(mine, 64 + 192 + 150, b"later")
    peer_tag = ref.tag(peer, 64 + 150, b"later")
    assert pool.erase_used() >= 64 + 192 + 96 + 64 + 100

    raw = _file_bytes(db)
    chunks = lambda b: [b[i:i + 32] for i in range(0, len(b) - 31, 32)]   # noqa: E731
    assert not [c for c in chunks(own0) if c in raw]            # a used segment: gone
    assert not [c for c in chunks(own1[:96 * 8]) if c in raw]   # the used head of the next one
    assert not [c for c in chunks(peer0[:100 * 8]) if c in raw]
    # what is not used is still there (a chunk across an overflow page's boundary is not found
    # as one: pages of a long BLOB start with a pointer to the next)
    found = lambda b: sum(c in raw for c in chunks(b)) / len(chunks(b))   # noqa: E731
    assert found(own1[96 * 8:]) > 0.9 and found(peer0[100 * 8:]) > 0.9
    with closing(sqlite3.connect(db)) as c:
        rows = c.execute("SELECT idx FROM auth_segment WHERE stream=? ORDER BY idx", (mine,)).fetchall()
    assert rows == [(1,)]
    # used pads are refused, unused ones give the tags they gave before the erase
    for seq in (0, 63, 64 + 191, 64 + 192 + 95):
        with pytest.raises(PadErased):
            pool.tag(mine, seq, b"again")
        assert not pool.verify(mine, seq, b"again", bytes(8))
    assert pool.erased(mine, 64 + 192 + 95) and not pool.erased(mine, 64 + 192 + 96)
    assert pool.tag(mine, 64 + 192 + 150, b"later") == unused_tag
    assert pool.tag(peer, 64 + 150, b"later") == peer_tag
    # in memory: only the unused pads of the stream are held
    assert len(pool._streams[mine]) == (64 + 2 * 192 - (64 + 192 + 96)) * 8
    pool.close()
    ref.close()


def test_a_restart_after_an_erase_starts_above_it_and_finds_the_same_pads(tmp_path):
    db = tmp_path / "a.db"
    pool = _pool(tmp_path)
    for i in range(4):
        _append(db, i, os.urandom(SEGMENT))
    pool.refresh()
    mine = "alice.proto.data"
    _use_own(pool, mine, 64 + 192 + 10)
    cap = pool.capacity(mine)
    reserved = pool._send_reserved[mine]         # a restart starts here (never below)
    assert 64 + 192 + 10 < reserved < cap
    ref = _pool(tmp_path)
    expect = {seq: ref.tag(mine, seq, b"m") for seq in range(reserved, cap)}
    ref.close()
    pool.erase_used()
    # a crash here: the next process opens the same files (the old one never closes them)
    again = _pool(tmp_path)
    assert again.capacity(mine) == cap
    seq = again.next_send_seq(mine)
    assert seq == reserved and not again.erased(mine, seq)
    with pytest.raises(PadErased):
        again.tag(mine, 64 + 192 + 9, b"m")
    assert {s: again.tag(mine, s, b"m") for s in expect} == expect
    pool.close()
    again.close()


def test_an_index_whose_segments_were_all_used_and_deleted_is_never_given_again(tmp_path):
    db = tmp_path / "a.db"
    pool = _pool(tmp_path)
    _append(db, 0, os.urandom(SEGMENT))
    pool.refresh()
    for s in auth.STREAMS:        # every pad of every stream used: every row of segment 0 goes
        if s.startswith("alice."):
            _use_own(pool, s, pool.capacity(s))
        else:
            pool.accept_recv(s, pool.capacity(s) - 1)
    pool.erase_used()
    with closing(sqlite3.connect(db)) as c:
        assert c.execute("SELECT COUNT(*) FROM auth_segment").fetchone()[0] == 0
        assert next_segment_index(c) == 1           # was 0 again: Bob would append a second "0"
    # an acknowledgement stream's last accepted seq is written with its erase (it is not durable
    # otherwise): a restarted node refuses a frame for a pad that is gone as a replay
    again = _pool(tmp_path)
    assert again.recv_last("bob.proto.ack") == again.capacity("bob.proto.ack") - 1
    pool.close()
    again.close()


def test_memory_and_file_stay_bounded_over_many_blocks(tmp_path):
    """300 blocks' segments, each used up and erased: the pool's memory and the file do not
    grow with the number of blocks (before: 16 KiB a block, in memory and on disk, for good)."""
    db = tmp_path / "a.db"
    pool = _pool(tmp_path)
    sizes = []
    for i in range(300):
        _append(db, i, os.urandom(2048))
        pool.refresh()
        for s in auth.STREAMS:
            if s.startswith("alice."):
                _use_own(pool, s, pool.capacity(s) - 4)
            else:
                pool.accept_recv(s, pool.capacity(s) - 5) if pool.capacity(s) - 5 > pool.recv_last(s) \
                    else None
        pool.erase_used()
        if i in (49, 299):
            sizes.append((sum(len(b) for b in pool._streams.values()), db.stat().st_size))
    (mem50, file50), (mem300, file300) = sizes
    assert mem300 <= mem50 + 8 * 64 and mem300 < 2048
    assert file300 <= file50 + 4 * 4096, (file50, file300)
    pool.close()


def test_a_clean_stop_erases_the_pads_used_since_the_last_pass(tmp_path):
    """Channel.close erases what the I/O thread's last pass (every 2 s) left."""
    import zmq

    from link.channel import Channel
    from link.messages import MsgType

    _pool(tmp_path).close()           # writes a.psk
    ctx = zmq.Context()
    ch = Channel("alice", AuthPool(tmp_path / "a.psk", tmp_path / "a.db", "alice"), ctx=ctx)
    try:
        ch.bind()
        ch.start()
        seqs = [ch.send(MsgType.DATA, 1, b"x") for _ in range(5)]   # tagged: used
        time.sleep(0.1)
        ch.close()
        again = _pool(tmp_path)
        assert all(again.erased("alice.proto.data", s) for s in seqs)
        again.close()
    finally:
        ctx.destroy(linger=0)


def test_erasing_a_partly_used_segment_again_and_again_keeps_no_memory(tmp_path):
    """Zeroing the used head of a segment in place, every erase pass, leaves nothing behind in
    this process. With ``Connection.blobopen`` CPython 3.11 kept a weakref per blob opened (88 B
    each, cpython gh-144424): ~0.6 MB/h of node RSS in bench.soak."""
    import tracemalloc

    db = tmp_path / "a.db"
    pool = _pool(tmp_path)
    material = os.urandom(64 * 1024)           # 1536 pads to a proto stream
    _append(db, 0, material)
    pool.refresh()
    s = "bob.proto.data"                         # the peer's: used up to its last accepted frame
    first = 64                                   # the PSK's pads; the segment's come after
    tracemalloc.start()
    try:
        for i in range(1200):                   # one more pad of the segment used per pass
            if i == 200:
                base = tracemalloc.get_traced_memory()[0]
            pool.accept_recv(s, first + i)
            assert pool.erase_used() == (first + 1 if i == 0 else 1)
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 16 * 1024, grown             # was ~1000 x 88 B with blobopen
    with closing(sqlite3.connect(db)) as c:      # the used head is zeros, the rest the segment's
        (data,) = c.execute("SELECT data FROM auth_segment WHERE stream=? AND idx=0", (s,)).fetchone()
    seg = _segment_bytes(material, s)
    used = (pool._erased[s] - first) * 8
    assert 0 < used < len(seg) and data == bytes(used) + seg[used:]
    pool.close()

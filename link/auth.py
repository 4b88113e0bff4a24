"""Wegman–Carter authentication of the classical channel: the key pool and the tags.

What it is for: every message between the nodes carries a tag

    tag = H_k(header || payload)  XOR  r_seq

where ``H_k`` is the polynomial hash over GF(2^64) with key ``k`` (an
epsilon-almost-XOR-universal family; Wegman and Carter, JCSS 22, 265 (1981),
Sec. 3; the polynomial construction with collision probability
``(L+1)/2^64`` for ``L`` 64-bit words is Stinson's "polynomial hash",
Stinson, Des. Codes Cryptogr. 4, 369 (1994)), and ``r_seq`` is a one-time pad
of 64 bits that is used for exactly one sequence number of one stream. A fixed
hash key with fresh pads per message is the classic Wegman–Carter scheme; the
hash key may be reused because the pad hides every tag (Portmann, IEEE
Trans. IT 60, 4383 (2014), key recycling in authentication).

The pool. Both nodes of a link hold the same pre-shared secret (``qkd psk``).
It is split into independent *streams*, one per (sender, lane, kind): e.g.
``alice.proto.data`` authenticates Alice's protocol messages, ``bob.ctrl.ack``
Bob's acknowledgements on the control lane. A stream is a byte sequence:
bytes 0..7 are its hash key, and the pad of sequence number ``n`` is bytes
``8 + 8n .. 16 + 8n``. Because the pad position is a function of (stream,
seq), a retransmission with the same sequence number reuses exactly the same
pad (the same tag over the same bytes reveals nothing new), and both nodes
agree on every pad without any bookkeeping messages. Streams are extended by
*replenishment*: distilled key appended to the streams below their high water
(Alice chooses them, ``link.commit``; each stream numbers its own segments) in the
same order on both nodes (the key store appends it in the same transaction as the
block's commit, so both sides append identical segments; see ``link.keystore``).

Durability (what makes a pad one-time across crashes): the sender reserves
sequence numbers in batches and writes the reservation to SQLite *before*
using any pad of the batch, synced to disk (synchronous=FULL for that write: a
power cut must not lose it either); after a crash it starts above the reservation, so
no pad is ever used for two different messages. The receiver writes its last
accepted sequence number (``recv_last``) before handing a message to the application, under
the connection's NORMAL: it survives a killed process, not a power cut. Against a power cut the
receiver keeps a *fence* per stream, reserved ahead like the send reservation: accepting a frame
above it first raises it ``RECV_FENCE_BATCH`` ahead, written with ``recv_last`` under
synchronous=FULL (one fdatasync per batch), and the next run refuses every frame at or below
it (``recv_floor``), so no frame accepted before a cut is accepted again. What that floor
costs the peer, and how it is kept from stalling the link: the peer's frames in the gap between
the last acknowledged and the floor are re-sent above the floor on new sequence numbers (its
pads skipped count as used), after the restarted node's HELLO names its floor
(``link.channel``, RESUME); a fence stops short of the last ``FENCE_SPARE_PADS`` of the segment
its frame used (the peer holds that segment, and keeps pads for the commit messages there); a
restarted sender's HELLO jumps above any fence the peer may hold (``hello_seq``), so two nodes
restarted at once take each other's HELLO. A restart costs at most ``RECV_FENCE_BATCH`` pads of
each peer data stream, and as many of our own for the HELLO's jump. After a power cut, frames
the previous run accepted in the lost stretch of ``recv_last`` and never acknowledged are
delivered once more, re-sent by the peer on new numbers (the peer's own decision; Eve cannot
cause it): the application loses no message and sees those once again, as it sees a message
again after a crash of its own before it acted.

Which segments a sender uses: Bob appends a block's segments when he handles Alice's COMMIT,
so Alice's own streams take a segment only once Bob confirmed its block (state ``final``,
``_unconfirmed``); a frame of hers on a pad Bob cannot have yet, the COMMIT itself included,
would stall the link with the block committed on her side only. Bob's streams need no such
rule: Alice committed every block before he did.

Erasing used pads (``AuthPool.erase_used``, called by the channel's I/O thread every few
seconds): a pad is *used* once its tag is computed (we sent: a retransmission resends the
same frame bytes, never re-tags) or its frame accepted (we received: ``recv_last``). Used
pads are wiped from memory, and from the store file: a replenished segment whose pads are
all used is deleted (``secure_delete`` zeroes the freed pages), the used head of a partly
used one is overwritten with zeros in place, and the WAL, whose frames still hold the bytes
the commit wrote, is truncated (``keystore.truncate_wal``). ``auth_state.erased_pads`` records
the mark in the same transaction, with the number and bytes of the deleted segments (so
the next start knows where its first stored segment begins in the stream). Crash safety
is that of the reservation scheme above: on our streams the mark never passes the
durable reservation (a restart starts above it anyway), on the peer's the mark is
``recv_last + 1``, written durably with it (acknowledgement streams, whose ``recv_last``
is otherwise not durable, get it written here). A frame of the peer whose pad is erased
can only be a copy or a replay of one already accepted; the channel treats it as such
without checking its tag (``erased``). The pads of the PSK file itself are not erased
(the file is the operator's; it stays needed to start a node), only their copies in
memory.

Memory: the pool holds only pads from the lowest unused one on. Before erasing, every
replenished segment stayed in memory (and in the file) for as long as the node ran: 16 KiB
per block, copied into a fresh buffer at each append.

What it must not do: expose a switch that disables authentication (none exists), log pad
or hash-key bytes, or re-derive pads from anything but the pool. Pads live in the pool's
bytearrays, which ``wipe()`` zeroes (``_wipe``: the C core's ``qpp_memzero``), and so do
the hash keys (8-byte bytearrays, not ints). Secret bytes are read into bytearrays (the
PSK file with ``readinto``, a new one's secret from /dev/urandom the same way), streams
grow by copying into a fresh bytearray and wiping the old one (a ``+=`` could leave the
old buffer unwiped in a realloc), and segments are written to SQLite from memoryviews of
the key material. Tagging and checking never turn a pad, a hash key or a hash value into a
Python int or bytes: the pad is copied (under the lock, buffer to buffer) into an 8-byte
bytearray, and key and pad go to the C core as cffi views of the buffers (``qpp_wc_tag``,
``qpp_wc_verify``: the hash, the XOR and the constant-time comparison in C, which wipes
its stack copies; the expected tag of a check never leaves it), after which the pad copy
is zeroed. Measured in the same process (``python -m bench.auth_cost --tags``, frames of
16 B to 64 KiB, load 1.1): a tag x0.99-1.04 of the time of the int path it replaced, a
check x0.78-0.96. What still cannot be wiped: the ``bytes`` object SQLite returns for a
BLOB (copied into the pool at once and dropped, one row at a time: the sqlite3 module has
no read-into-buffer call); the copies of key and pad the C code holds in registers (its
stack copies are zeroed, registers are not addressable from C); and, only with a C core
lacking ``qpp_wc_tag`` (a stale build the version check refuses), the reference fallback
through Python ints. The public ``poly_hash_bytes(data, key: int)`` stays for the
references and tests; the pool does not use it. A tag returned by ``tag()`` is ``bytes``:
it is public (it leaves on the wire; the pad hides the hash).

The hash is the C core's ``postproc_c.poly_hash_bytes``; ``poly_hash_bytes_ref``
below is an independent numpy reference of the same definition (tests check
all three against galois), used only if the core lacks the function. Message encoding for the hash:
the bytes zero-padded to whole little-endian 64-bit words ``m_1..m_L``, then
one word holding the length in bits, evaluated by Horner's rule
``h = (((m_1) k + m_2) k + ...) k`` so the polynomial has no constant term.
"""

from __future__ import annotations

import hmac
import logging
import os
import sqlite3
import threading
from pathlib import Path

import numpy as np

from .store_errors import KeyStoreIOError

log = logging.getLogger(__name__)

TAG_BYTES = 8
PAD_BYTES = 8
HASH_KEY_BYTES = 8
RESERVE_BATCH = 256          # sequence numbers reserved per durable write
# The receive fence (``AuthPool.accept_recv``): accepting a peer data frame above the durable
# fence first raises it, synced, this far ahead, so a power cut costs at most this many of the
# peer's pads per stream and the sync one fdatasync per this many accepted frames (as sending).
RECV_FENCE_BATCH = 256
# A fence never reaches into the last pads of the segment its frame used: the peer surely holds
# that segment (it tagged the frame with it) and, jumped above the fence after our restart, must
# still have pads for the commit messages that refill its stream (link.channel: its last 32 are
# kept for them, COMMIT_RESERVE_PADS). The restarted sender's HELLO jumps above any fence by
# half this margin at most (``AuthPool.hello_seq``).
FENCE_SPARE_PADS = 32

ROLES = ("alice", "bob")
LANES = ("proto", "ctrl")
KINDS = ("data", "ack")
STREAMS = tuple(f"{r}.{lane}.{k}" for r in ROLES for lane in LANES for k in KINDS)

PSK_MAGIC = b"QKDPSK1\n"


class AuthError(RuntimeError):
    """The authentication pool cannot serve a request (exhausted, wrong PSK file)."""


class AuthStateIOError(AuthError, KeyStoreIOError):
    """The pool's durable state (sequence reservations, accepted sequence numbers) could not be
    written: the node's store file failed (disk full, I/O error). A ``KeyStoreIOError`` too, so
    the node stops with the ``key_store`` alarm naming the file, as when a commit hits it."""


class PoolExhausted(AuthError):
    """A stream has no pad left for the requested sequence number."""


class PadErased(AuthError):
    """The pad of that sequence number was used and has been erased (``AuthPool.erase_used``)."""


# --- GF(2^64) polynomial hash (reference of the C core contract) -------------------------

# x^64 = x^4 + x^3 + x + 1 (the low-weight pentanomial used by GHASH-like 64-bit fields)
_RED = 0x1B
_M64 = (1 << 64) - 1


def _gf64_mul_scalar(a: int, b: int) -> int:
    r = 0
    while b:
        if b & 1:
            r ^= a
        b >>= 1
        a <<= 1
    # r has up to 127 bits: fold the high half twice
    hi, lo = r >> 64, r & _M64
    hi2 = (hi >> 60) ^ (hi >> 61) ^ (hi >> 63)
    lo ^= ((hi << 4) ^ (hi << 3) ^ (hi << 1) ^ hi) & _M64
    lo ^= (hi2 << 4) ^ (hi2 << 3) ^ (hi2 << 1) ^ hi2
    return lo & _M64


def _gf64_mul_vec(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise GF(2^64) product of two uint64 arrays (vectorized over elements)."""
    a = a.astype(np.uint64)
    b = b.astype(np.uint64)
    lo = np.zeros_like(a)
    hi = np.zeros_like(a)
    one = np.uint64(1)
    for i in range(64):
        m = ((b >> np.uint64(i)) & one).astype(bool)
        if not m.any():
            continue
        ai = a[m]
        lo[m] ^= ai << np.uint64(i)
        if i:
            hi[m] ^= ai >> np.uint64(64 - i)
    hi2 = (hi >> np.uint64(60)) ^ (hi >> np.uint64(61)) ^ (hi >> np.uint64(63))
    lo ^= (hi << np.uint64(4)) ^ (hi << np.uint64(3)) ^ (hi << np.uint64(1)) ^ hi
    lo ^= (hi2 << np.uint64(4)) ^ (hi2 << np.uint64(3)) ^ (hi2 << np.uint64(1)) ^ hi2
    return lo


def _words(data: bytes | bytearray | memoryview) -> np.ndarray:
    n = len(data)
    nw = (n + 7) // 8
    buf = np.zeros(nw + 1, dtype="<u8")
    if n:
        buf.view(np.uint8)[:n] = np.frombuffer(data, dtype=np.uint8)
    buf[nw] = 8 * n         # the length block counts bits, as the C core's does
    return buf.astype(np.uint64)


def poly_hash_bytes_ref(data: bytes | bytearray | memoryview, key: int) -> int:
    """Polynomial hash of ``data`` over GF(2^64) with 64-bit ``key`` (numpy reference).

    Collision probability for two distinct messages of at most ``L`` words:
    ``(L + 1) / 2^64`` (a nonzero polynomial of degree ``L + 1`` has at most that many roots).
    """
    if not 0 <= key <= _M64:
        raise ValueError(f"key: expected a 64-bit unsigned integer, got {key}")
    w = _words(data)
    n = w.size
    if n <= 64:
        h = 0
        for x in w.tolist():
            h = _gf64_mul_scalar(h ^ x, key)
        return h
    # h = sum_i w_i k^(n - i) for i = 0..n-1 ; build k^1..k^n by doubling
    powers = np.empty(n, dtype=np.uint64)
    powers[0] = key
    have = 1
    while have < n:
        take = min(have, n - have)
        kp = np.full(take, int(powers[have - 1]), dtype=np.uint64)   # k^have
        powers[have:have + take] = _gf64_mul_vec(powers[:take], kp)
        have += take
    prod = _gf64_mul_vec(w, powers[::-1].copy())
    return int(np.bitwise_xor.reduce(prod))


def _wipe(buf: bytearray | memoryview) -> None:
    """Zero a key buffer in place (the C core's qpp_memzero, else a slice assignment)."""
    if _C_MEMZERO is not None:
        _C_MEMZERO(buf)
    else:  # pragma: no cover - core without memzero
        buf[:] = bytes(len(buf))


def _c_memzero():
    try:
        import postproc_c
        return getattr(postproc_c, "memzero", None)
    except ImportError:  # pragma: no cover
        return None


_C_MEMZERO = _c_memzero()


def _read_secret_file(path: Path) -> bytearray:
    """The whole file in a bytearray (readinto: no immutable bytes copy of the secret)."""
    with open(path, "rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            n = fh.readinto(view[got:])
            if not n:
                break
            got += n
        view.release()
    if got != size:  # the file shrank under us
        _wipe(buf)
        raise OSError(5, "short read")
    return buf


def _fill_random(buf: bytearray) -> None:
    """Fill ``buf`` from the OS entropy source, into the buffer itself (``os.urandom`` returns an
    immutable ``bytes`` copy that could not be wiped); falls back to it where /dev/urandom is
    missing."""
    try:
        with open("/dev/urandom", "rb", buffering=0) as fh:
            view = memoryview(buf)
            got = 0
            while got < len(buf):
                n = fh.readinto(view[got:])
                if not n:
                    raise OSError(5, "short read from /dev/urandom")
                got += n
            view.release()
    except FileNotFoundError:  # pragma: no cover - not Linux
        buf[:] = os.urandom(len(buf))


def _c_poly_hash():
    try:
        import postproc_c
        return getattr(postproc_c, "poly_hash_bytes", None)
    except ImportError:  # pragma: no cover
        return None


_C_HASH = _c_poly_hash()


def _c_wc():
    try:
        import postproc_c
        from postproc_c._binding import ffi, lib
        return (ffi, lib, postproc_c.Error) if hasattr(lib, "qpp_wc_verify") else (None, None, None)
    except ImportError:  # pragma: no cover
        return None, None, None


# The C core's qpp_wc_tag / qpp_wc_verify, called directly with cffi views of the pool's buffers
# (postproc_c.wc_tag/wc_verify validate each argument first: 2.5 us more per tag of a short frame)
_FFI, _LIB, _CError = _c_wc()


def _wc_tag(data, key8: bytearray, pad8: bytearray, out8: bytearray) -> None:
    """Tag into ``out8`` from key and pad buffers, then wipe ``pad8``: the C core's, else (a
    core without it) the reference through Python ints, which cannot be wiped (module docstring)."""
    n = len(data)
    if _LIB is not None:
        pad_c = _FFI.from_buffer("uint8_t[]", pad8)
        try:
            st = _LIB.qpp_wc_tag(_FFI.from_buffer("uint8_t[]", data) if n else _FFI.NULL, n,
                                 _FFI.from_buffer("uint8_t[]", key8), pad_c,
                                 _FFI.from_buffer("uint8_t[]", out8, require_writable=True))
        finally:
            _LIB.qpp_memzero(pad_c, PAD_BYTES)
        if st < 0:
            raise _CError("qpp_wc_tag", st)
        return
    try:
        t = poly_hash_bytes_ref(data, int.from_bytes(key8, "little")) ^ int.from_bytes(pad8, "little")
        out8[:] = t.to_bytes(TAG_BYTES, "little")
    finally:
        _wipe(pad8)


def _wc_verify(data, key8: bytearray, pad8: bytearray, tag) -> bool:
    """Whether ``tag`` is the tag of ``data`` (constant time; in C the expected tag stays there);
    ``pad8`` is wiped."""
    n = len(data)
    if _LIB is not None and len(tag) == TAG_BYTES:
        pad_c = _FFI.from_buffer("uint8_t[]", pad8)
        try:
            st = _LIB.qpp_wc_verify(_FFI.from_buffer("uint8_t[]", data) if n else _FFI.NULL, n,
                                    _FFI.from_buffer("uint8_t[]", key8), pad_c,
                                    _FFI.from_buffer("uint8_t[]", tag))
        finally:
            _LIB.qpp_memzero(pad_c, PAD_BYTES)
        if st < 0:
            raise _CError("qpp_wc_verify", st)
        return st == 1
    if len(tag) != TAG_BYTES:
        _wipe(pad8)
        return False
    expect = bytearray(TAG_BYTES)
    _wc_tag(data, key8, pad8, expect)
    try:
        return hmac.compare_digest(expect, bytes(tag))
    finally:
        _wipe(expect)


def poly_hash_bytes(data: bytes | bytearray | memoryview, key: int) -> int:
    """The channel's universal hash: the C core's when built in, else the numpy reference."""
    if _C_HASH is not None:
        return int(_C_HASH(data, key))
    return poly_hash_bytes_ref(data, key)


# --- pre-shared secret file ---------------------------------------------------------------

def write_psk(path: str | os.PathLike, link_id: str, n_bytes_per_stream: int = 65536,
              secret: bytes | bytearray | None = None) -> None:
    """Write a pre-shared secret file (mode 0600) for a node of link ``link_id``.

    Both nodes of a pair get a copy of the same file. ``secret`` (for tests)
    overrides the OS entropy source.
    """
    if not link_id or "\n" in link_id:
        raise ValueError("link_id: expected a non-empty single-line name")
    if n_bytes_per_stream < HASH_KEY_BYTES + 64 * PAD_BYTES:
        raise ValueError(f"n_bytes_per_stream: at least {HASH_KEY_BYTES + 64 * PAD_BYTES} bytes")
    total = n_bytes_per_stream * len(STREAMS)
    if secret is not None and len(secret) != total:
        raise ValueError(f"secret: expected {total} bytes, got {len(secret)}")
    body = bytearray(total)
    if secret is not None:
        body[:] = secret
    else:
        _fill_random(body)
    head = PSK_MAGIC + f"{link_id}\n{n_bytes_per_stream}\n".encode()
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, head)
        os.write(fd, body)
    finally:
        os.close(fd)
        _wipe(body)


def read_psk(path: str | os.PathLike) -> tuple[str, dict[str, bytearray]]:
    """Read a PSK file: (link_id, stream name -> bytearray of its initial bytes)."""
    p = Path(path)
    try:
        raw = _read_secret_file(p)
    except OSError as exc:
        raise AuthError(f"{p}: cannot read the pre-shared secret file: {exc.strerror}") from exc
    try:
        if not raw.startswith(PSK_MAGIC):
            raise ValueError("not a qkd PSK file (bad magic)")
        m = len(PSK_MAGIC)
        nl1 = raw.index(b"\n", m)
        nl2 = raw.index(b"\n", nl1 + 1)
        link_id = bytes(raw[m:nl1]).decode()
        per = int(bytes(raw[nl1 + 1:nl2]))
        body = memoryview(raw)[nl2 + 1:]      # a view: no unwiped copy of the secret
        if len(body) != per * len(STREAMS):
            raise ValueError(f"expected {per * len(STREAMS)} secret bytes, found {len(body)}")
        streams = {s: bytearray(body[i * per:(i + 1) * per]) for i, s in enumerate(STREAMS)}
        body.release()
    except ValueError as exc:
        _wipe(raw)
        raise AuthError(f"{p}: malformed pre-shared secret file: {exc}") from exc
    _wipe(raw)
    return link_id, streams


# --- the pool ------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS auth_segment (
    stream TEXT NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL, source TEXT NOT NULL,
    PRIMARY KEY (stream, idx));
CREATE TABLE IF NOT EXISTS auth_state (
    stream TEXT PRIMARY KEY, send_reserved INTEGER NOT NULL DEFAULT 0,
    recv_last INTEGER NOT NULL DEFAULT -1, erased_pads INTEGER NOT NULL DEFAULT 0,
    dropped_segs INTEGER NOT NULL DEFAULT 0, dropped_bytes INTEGER NOT NULL DEFAULT 0,
    recv_fence INTEGER NOT NULL DEFAULT -1);
"""
# erased_pads: pads 0..erased_pads-1 of the stream are used and erased; dropped_segs/bytes: the
# segments 0..dropped_segs-1 (dropped_bytes in all) were deleted, all their pads used
# recv_fence: no frame of the peer above it was accepted (synced; see ``accept_recv``)
_ADDED_COLUMNS = {"erased_pads": 0, "dropped_segs": 0, "dropped_bytes": 0, "recv_fence": -1}


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the pool's tables, or add the columns a store written before them lacks."""
    conn.executescript(_SCHEMA)
    have = {r[1] for r in conn.execute("PRAGMA table_info(auth_state)")}
    for col, default in _ADDED_COLUMNS.items():
        if col not in have:
            conn.execute(f"ALTER TABLE auth_state ADD COLUMN {col} INTEGER NOT NULL DEFAULT {default}")


class AuthPool:
    """The node's authentication key pool: PSK streams plus replenished segments.

    ``state_db`` is the node's SQLite file (shared with the key store, which
    appends replenishment segments inside its commit transaction through
    ``append_segments_sql``).
    """

    def __init__(self, psk_path: str | os.PathLike, state_db: str | os.PathLike, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"role: expected 'alice' or 'bob', got {role!r}")
        self.role = role
        self.peer = "bob" if role == "alice" else "alice"
        self.link_id, psk = read_psk(psk_path)
        self._db_path = os.fspath(state_db)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self._db_path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise AuthError(f"{self._db_path}: cannot open the node's store: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: every commit survives a crash of the process (what the
            # restart tests kill); survive power loss too with FULL, at an fsync per commit.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA secure_delete=ON")     # deleted segments' pages are zeroed
            ensure_schema(self._db)
        except sqlite3.Error as exc:  # a corrupt file: name it, do not start
            self._db.close()
            raise AuthError(f"{self._db_path}: node store is corrupt or unreadable ({exc})") from exc
        # A stream's bytes in memory: positions base .. base + len(buf) of the stream (the used
        # pads below ``erased`` are gone, see erase_used); segs: the stored segments still in the
        # file, [idx, first stream byte, length, bytes of it already zeroed there]
        self._streams: dict[str, bytearray] = {}
        self._base: dict[str, int] = {}
        self._hash_key: dict[str, bytearray] = {}   # 8 bytes each, little-endian; wipe() zeroes
        self._seg_count: dict[str, int] = {}
        self._segs: dict[str, list[list[int]]] = {}
        self._erased: dict[str, int] = {}
        self._tagged: dict[str, int] = {}       # our streams: pads below were tagged (used)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for s in STREAMS:
                self._db.execute("INSERT OR IGNORE INTO auth_state(stream) VALUES (?)", (s,))
            self._db.execute("COMMIT")
        self._send_next: dict[str, int] = {}
        self._send_reserved: dict[str, int] = {}
        self._recv_last: dict[str, int] = {}
        self._recv_fence: dict[str, int] = {}
        self._recv_floor: dict[str, int] = {}
        self._started_at: dict[str, int] = {}
        rows = self._db.execute("SELECT stream, send_reserved, recv_last, erased_pads, dropped_segs, "
                                "dropped_bytes, recv_fence FROM auth_state").fetchall()
        for s, res, last, erased, dsegs, dbytes, fence in rows:
            self._send_next[s] = res          # start above the last reservation: never reuse a pad
            self._send_reserved[s] = res
            self._started_at[s] = res
            self._recv_last[s] = last
            self._recv_fence[s] = fence
            # recv_last may be older than what the last run accepted (a power cut loses writes
            # made under NORMAL); the fence is not: nothing at or below it is accepted this run
            self._recv_floor[s] = max(last, fence)
            self._erased[s] = erased
            self._tagged[s] = res
            buf = psk[s]
            key = bytearray(HASH_KEY_BYTES)
            key[:] = memoryview(buf)[:HASH_KEY_BYTES]     # no bytes or int copy of it
            self._hash_key[s] = key
            self._seg_count[s] = dsegs
            self._segs[s] = []
            if dsegs:      # every PSK pad was used before the first segment was: start past them
                self._base[s] = len(buf) + dbytes
                self._streams[s] = bytearray()
                _wipe(buf)
            else:
                self._base[s] = 0
                self._streams[s] = buf
        self._load_segments()
        for s in STREAMS:
            self._trim(s)

    # capacity -------------------------------------------------------------------------
    def capacity(self, stream: str) -> int:
        """Pads the stream has had in all (used and erased ones included)."""
        return (self._base[stream] + len(self._streams[stream]) - HASH_KEY_BYTES) // PAD_BYTES

    def _pad(self, stream: str, seq: int) -> memoryview:
        if seq < 0 or seq >= self.capacity(stream):
            raise PoolExhausted(f"auth pool stream {stream}: no pad for sequence number {seq} "
                                f"(capacity {self.capacity(stream)} pads)")
        if seq < self._erased[stream]:
            raise PadErased(f"auth pool stream {stream}: the pad of sequence number {seq} was used "
                            f"and erased")
        off = HASH_KEY_BYTES + PAD_BYTES * seq - self._base[stream]
        return memoryview(self._streams[stream])[off:off + PAD_BYTES]

    def erased(self, stream: str, seq: int) -> bool:
        """Whether the pad of ``seq`` was used and erased (a frame for it is a copy or a replay)."""
        return 0 <= seq < self._erased[stream]

    def has_pad(self, stream: str, seq: int | None = None, headroom: int = 0) -> bool:
        """Whether ``stream`` holds a pad for ``seq`` (default: its next send sequence number),
        ``headroom`` pads below its end (``next_send_seq``)."""
        if seq is None:
            seq = self._send_next[stream]
        return 0 <= seq < self.capacity(stream) - headroom

    # tags --------------------------------------------------------------------------------
    def _pad_copy(self, stream: str, seq: int, pad: bytearray) -> None:
        """Copy the pad of ``seq`` into ``pad`` (the caller wipes it): the hash of a long frame
        then runs outside the lock, which refresh() takes to swap and wipe the stream buffer."""
        with self._lock:
            pad[:] = self._pad(stream, seq)      # buffer to buffer: no bytes object in between

    def tag(self, stream: str, seq: int, data: bytes | bytearray | memoryview) -> bytes:
        """The Wegman–Carter tag of ``data`` sent as sequence number ``seq`` of ``stream``.

        Key and pad reach the C core in bytearrays (``postproc_c.wc_tag``) and the pad's copy is
        wiped; the tag returned is public (it leaves on the wire, the hash hidden by the pad)."""
        pad = bytearray(PAD_BYTES)
        with self._lock:
            pad[:] = self._pad(stream, seq)      # as _pad_copy, with the tagged mark
            if stream.startswith(self.role + ".") and seq >= self._tagged[stream]:
                self._tagged[stream] = seq + 1   # sent: retransmissions resend these bytes
        out = bytearray(TAG_BYTES)
        _wc_tag(data, self._hash_key[stream], pad, out)      # wipes pad
        return bytes(out)

    def verify(self, stream: str, seq: int, data: bytes | bytearray | memoryview, tag: bytes) -> bool:
        """Constant-time check of ``tag`` (in the C core: the expected tag never reaches Python);
        False also when no pad exists for ``seq``."""
        pad = bytearray(PAD_BYTES)
        try:
            self._pad_copy(stream, seq, pad)
        except (PoolExhausted, PadErased):
            return False
        return _wc_verify(data, self._hash_key[stream], pad, tag)       # wipes pad

    def _write(self, sql: str, args: tuple) -> None:
        """One durable state update; a failed file (disk full, I/O error) raises AuthError naming it."""
        try:
            self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise AuthStateIOError(f"{self._db_path}: cannot record the authentication state "
                                   f"(disk full or I/O error: {exc}); nothing was sent or accepted "
                                   f"on it") from exc

    def _sync(self, level: str) -> None:
        try:
            self._db.execute(f"PRAGMA synchronous={level}")
        except sqlite3.Error as exc:
            raise AuthStateIOError(f"{self._db_path}: cannot set synchronous={level}: {exc}") from exc

    # sequence numbers --------------------------------------------------------------------
    def next_send_seq(self, stream: str, headroom: int = 0) -> int:
        """Allocate the next sequence number of ``stream`` (durably reserved before use).

        ``headroom``: refuse (``PoolExhausted``) when fewer than ``headroom`` + 1 pads are left,
        keeping the last ``headroom`` for the messages that refill the pool (``link.channel``:
        ``COMMIT_RESERVE_PADS``)."""
        if not stream.startswith(self.role + "."):
            raise ValueError(f"stream: {stream} is not sent by {self.role}")
        with self._lock:
            seq = self._send_next[stream]
            if seq >= self.capacity(stream) - headroom:
                kept = "" if seq >= self.capacity(stream) else \
                    f" (its last {headroom} pads are kept for the commit messages)"
                raise PoolExhausted(f"auth pool stream {stream} exhausted{kept} at sequence number {seq}")
            if seq >= self._send_reserved[stream]:
                new = min(seq + RESERVE_BATCH, self.capacity(stream))
                # synchronous=FULL for this one write (an fsync of the WAL per RESERVE_BATCH frames,
                # ~0.25 ms here): under the connection's NORMAL, a power cut can lose the last
                # commits, and a reservation lost after its pads tagged frames that left would
                # start the next run below them: the same pad on two messages, which lets Eve
                # forge. (A lost recv_last or block commit costs a replay or a RESYNC, not a pad.)
                self._sync("FULL")
                try:
                    self._write("UPDATE auth_state SET send_reserved=? WHERE stream=?", (new, stream))
                finally:
                    self._sync("NORMAL")
                self._send_reserved[stream] = new
            self._send_next[stream] = seq + 1
            return seq

    def skip_send(self, stream: str, seq: int) -> None:
        """Make ``seq`` the next sequence number of our ``stream`` if it is above it. The pads
        skipped are never used (they count as used: ``erase_used`` erases them once a later
        one is tagged). For frames the peer's floor refuses (``link.channel``, RESUME)."""
        if not stream.startswith(self.role + "."):
            raise ValueError(f"stream: {stream} is not sent by {self.role}")
        with self._lock:
            if seq > self._send_next[stream]:
                self._send_next[stream] = seq

    def hello_seq(self, stream: str) -> int:
        """Skip our ``stream`` above every receive fence the peer can have raised on it, and
        return the next sequence number (the restarted channel's HELLO takes it).

        The peer fenced at most ``RECV_FENCE_BATCH`` above a frame we sent, and not into the
        last ``FENCE_SPARE_PADS`` of that frame's segment, which we hold: every frame we sent
        is below our durable reservation R at start, so R + RECV_FENCE_BATCH, or a seq within
        ``FENCE_SPARE_PADS // 2`` of our capacity, is above the fence, and the HELLO is accepted
        even when the peer restarted too (were both HELLOs below the other's fence, neither node
        would ever accept a frame of the other). A stream never used (R = 0) skips nothing."""
        r = self._started_at[stream]
        if r > 0:
            cap = self.capacity(stream)
            self.skip_send(stream, max(r, min(r + RECV_FENCE_BATCH, cap - FENCE_SPARE_PADS // 2)))
        return self._send_next[stream]

    def recv_last(self, stream: str) -> int:
        """The last sequence number of ``stream`` accepted (this run, or durably before it)."""
        return self._recv_last[stream]

    def recv_floor(self, stream: str) -> int:
        """No frame of ``stream`` at or below this is accepted (``accept_recv``): the last
        accepted one, or the durable fence of the previous run, whichever is higher."""
        return max(self._recv_last[stream], self._recv_floor[stream])

    def _fence_target(self, stream: str, seq: int) -> int:
        """The fence to raise when accepting ``seq``: RECV_FENCE_BATCH ahead, but not into the
        last FENCE_SPARE_PADS pads of the segment (or PSK part) that holds the pad of ``seq``."""
        pos = HASH_KEY_BYTES + PAD_BYTES * seq
        ends = [self._base[stream] + len(self._streams[stream])]
        for _idx, start, length, _z in self._segs[stream]:
            ends += (start, start + length)
        end = min(e for e in ends if e > pos)
        last_pad = (end - HASH_KEY_BYTES) // PAD_BYTES - 1
        return min(seq + RECV_FENCE_BATCH, max(seq, last_pad - FENCE_SPARE_PADS))

    def accept_recv(self, stream: str, seq: int, durable: bool = True) -> None:
        """Record that ``seq`` of ``stream`` was accepted, durably before it is acted on.

        Durable against a killed process: recv_last, under the connection's NORMAL. Against a
        power cut: the receive fence. Accepting a frame above the fence first raises the fence
        (``_fence_target``) in the same write, synced (synchronous=FULL: an fdatasync per
        RECV_FENCE_BATCH frames, as the send reservation); the next run refuses everything at or
        below it (``recv_floor``), whatever of recv_last the cut lost, and the peer re-sends what
        it had not seen acknowledged on sequence numbers above it (``link.channel``: HELLO's
        floor, RESUME). Syncing every recv_last instead costs an fdatasync per frame.

        ``durable=False`` is for acknowledgement streams: a replayed old ACK after
        a restart can only acknowledge sequence numbers below the restarted
        sender's reservation, so it cannot do harm and needs no disk write.
        """
        with self._lock:
            floor = max(self._recv_last[stream], self._recv_floor[stream])
            if seq <= floor:
                raise ValueError(f"seq: {seq} not above the last accepted or fenced {floor}")
            if durable and seq > self._recv_fence[stream]:
                fence = self._fence_target(stream, seq)
                self._sync("FULL")
                try:
                    self._write("UPDATE auth_state SET recv_last=?, recv_fence=? WHERE stream=?",
                                (seq, fence, stream))
                finally:
                    self._sync("NORMAL")
                self._recv_fence[stream] = fence
            elif durable:
                self._write("UPDATE auth_state SET recv_last=? WHERE stream=?", (seq, stream))
            self._recv_last[stream] = seq

    # replenishment and accounting ----------------------------------------------------------
    def _unconfirmed(self, source: str) -> bool:
        """Alice: whether the segment written by ``source`` ("block N") comes from a block Bob has
        not confirmed (committed here, not final). Bob appends the segment when he handles the
        block's COMMIT; a pad of it used before then makes a frame Bob cannot check, and if that
        frame is the COMMIT itself (or comes before it: go-back-N keeps the order) he never gets
        the segment: the link stalls with the block committed on Alice's side only. A segment
        with no block row (tests that append segments directly) is not held back."""
        if self.role != "alice" or not source.startswith("block "):
            return False
        try:
            row = self._db.execute("SELECT state FROM block WHERE block_id=?",
                                   (int(source[6:]),)).fetchone()
        except (ValueError, sqlite3.OperationalError):   # no block table: a pool-only file
            return False
        return row is not None and row[0] != "final"

    def _load_segments(self) -> None:
        # Segments are used in index order and only up to the first missing index: Alice
        # assigns the indices (link.commit), and Bob may commit a later block first. Alice's own
        # streams take a segment only once Bob confirmed its block (``_unconfirmed``).
        for s in STREAMS:
            mine = s.startswith(self.role + ".")
            cur = self._db.execute("SELECT idx, data, source FROM auth_segment WHERE stream=? AND "
                                   "idx>=? ORDER BY idx", (s, self._seg_count[s]))
            for idx, data, source in cur:   # one row (one unwipeable bytes object) alive at a time
                if idx != self._seg_count[s] or (mine and self._unconfirmed(source)):
                    break
                old = self._streams[s]
                start = self._base[s] + len(old)
                grown = bytearray(len(old) + len(data))
                grown[:len(old)] = old
                grown[len(old):] = data
                self._segs[s].append([idx, start, len(data), 0])
                del data
                self._streams[s] = grown
                _wipe(old)
                self._seg_count[s] += 1
            cur.close()

    def _trim(self, s: str) -> None:
        """Drop (wipe) the bytes of used pads from the front of stream ``s`` in memory."""
        cut = HASH_KEY_BYTES + PAD_BYTES * self._erased[s] - self._base[s]
        if cut <= 0:
            return
        old = self._streams[s]
        self._streams[s] = bytearray(memoryview(old)[cut:])
        self._base[s] += cut
        _wipe(old)

    def erase_used(self) -> int:
        """Erase every used pad from memory and from the store file; returns the pads erased.

        Used: on our streams, those whose tag was computed (``tag``; their frames are only ever
        resent as they are); on the peer's, those up to its last accepted sequence number. See
        the module docstring (Erasing used pads) for what is erased where and why it is crash
        safe. Call it from the thread that checks the peer's frames (the channel's I/O thread),
        so no check is between ``erased`` and ``verify`` when a mark moves. A failed write
        (disk full) raises ``AuthStateIOError``; nothing was erased then.
        """
        with self._lock:
            marks = {}
            for s in STREAMS:
                mine = s.startswith(self.role + ".")
                mark = min(self._tagged[s], self._send_reserved[s]) if mine else self._recv_last[s] + 1
                mark = min(mark, self.capacity(s))
                if mark > self._erased[s]:
                    marks[s] = mark
            if not marks:
                return 0
            done = 0
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for s, mark in marks.items():
                    end = HASH_KEY_BYTES + PAD_BYTES * mark         # stream bytes below are used
                    dropped = 0
                    for seg in self._segs[s]:
                        idx, start, length, zeroed = seg
                        if start + length <= end:                  # all used: the row goes
                            self._db.execute("DELETE FROM auth_segment WHERE stream=? AND idx=?", (s, idx))
                            self._db.execute("UPDATE auth_state SET dropped_segs=?, dropped_bytes="
                                             "dropped_bytes+? WHERE stream=?", (idx + 1, length, s))
                            dropped += 1
                        elif start < end:                          # its head is used: zeros in place
                            upto = end - start
                            if upto > zeroed:
                                # In SQL, same length, so the row is rewritten in place (the old
                                # cell's bytes are zeroed by secure_delete). Not Connection.blobopen:
                                # CPython 3.11's connection keeps a weakref per blob ever opened
                                # (88 B, never dropped: cpython gh-144424), ~0.6 MB/h in a soak.
                                self._db.execute("UPDATE auth_segment SET data = CAST(zeroblob(?) || "
                                                 "substr(data, ? + 1) AS BLOB) WHERE stream=? AND "
                                                 "idx=?", (upto, upto, s, idx))
                                seg[3] = upto
                        else:
                            break
                    self._db.execute("UPDATE auth_state SET erased_pads=? WHERE stream=?", (mark, s))
                    if not s.startswith(self.role + ".") and s.endswith(".ack"):
                        # not durable until now (accept_recv durable=False): a restart must not
                        # take a frame whose pad is gone for a new one
                        self._db.execute("UPDATE auth_state SET recv_last=MAX(recv_last, ?) WHERE "
                                         "stream=?", (self._recv_last[s], s))
                    marks[s] = (mark, dropped)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    try:
                        self._db.execute("ROLLBACK")
                    except sqlite3.Error:  # pragma: no cover - nothing more to do
                        pass
                for seg_list in self._segs.values():   # zeroed counts may be ahead: recount next time
                    for seg in seg_list:
                        seg[3] = 0
                raise AuthStateIOError(f"{self._db_path}: cannot erase used authentication pads "
                                       f"(disk full or I/O error: {exc})") from exc
            for s, (mark, dropped) in marks.items():
                done += mark - self._erased[s]
                self._erased[s] = mark
                del self._segs[s][:dropped]
                self._trim(s)
        # the WAL frames of the commits that wrote these segments still hold the erased bytes
        from .keystore import truncate_wal
        truncate_wal(self._db, self._lock, 5000, self._db_path)
        return done

    def refresh(self) -> None:
        """Pick up segments the key store added since (same file, other connection)."""
        with self._lock:
            self._load_segments()

    def usage(self) -> dict[str, dict[str, int]]:
        """Pads available and consumed per stream (for telemetry; no key bytes)."""
        out = {}
        for s in STREAMS:
            cap = self.capacity(s)
            used = self._send_reserved[s] if s.startswith(self.role + ".") else self._recv_last[s] + 1
            out[s] = {"capacity_pads": cap, "used_pads": used, "left_pads": cap - used}
        return out

    def min_left_pads(self) -> int:
        return min(v["left_pads"] for v in self.usage().values())

    def close(self) -> None:
        self.wipe()
        try:
            self._db.close()
        except sqlite3.Error:  # pragma: no cover
            pass

    def wipe(self) -> None:
        for buf in (*self._streams.values(), *self._hash_key.values()):
            _wipe(buf)


NO_SEGMENT = -1     # a stream's entry in a segment layout when the block refilled it not at all


def next_segment_index(conn: sqlite3.Connection, stream: str | None = None) -> int:
    """The index the next replenishment segment of ``stream`` gets (Alice assigns it; Bob is
    told). Each stream counts its own segments (``segment_layout``); ``stream=None``: the
    next index above every stream's (stores written before the per-stream split)."""
    where, args = ("WHERE stream=?", (stream,)) if stream is not None else ("", ())
    (nxt,) = conn.execute(f"SELECT COALESCE(MAX(idx) + 1, 0) FROM auth_segment {where}", args).fetchone()
    # segments whose pads were all used are deleted (AuthPool.erase_used): never reuse their index
    (dropped,) = conn.execute(f"SELECT COALESCE(MAX(dropped_segs), 0) FROM auth_state {where}",
                              args).fetchone()
    return max(int(nxt), int(dropped))


# Replenishment weights: the protocol lanes carry ~all messages (and their ACKs); the
# control lanes only aborts, stops, frame epochs and KME reservations. Measured with
# `qkd run --instruments model --blocks 3` (metro-25km, 2^20-bit blocks, Cascade, 2026-11-25):
# ~190 protocol messages per block per direction (575 over the run, blocks multiplexed by
# link.recon_mux) and 1-2 on each control lane over the whole run.
SEGMENT_WEIGHTS = {"proto.data": 3, "proto.ack": 3, "ctrl.data": 1, "ctrl.ack": 1}
_WEIGHT_SUM = 2 * sum(SEGMENT_WEIGHTS.values())


def segment_unit(refill_bytes: int, layout: list[int] | None = None) -> int:
    """Bytes of one weight unit of a refill of at most ``refill_bytes`` (whole pads), shared by
    the streams the segment ``layout`` refills (None: all). A stream left out (at its high
    water: ``link.commit``) leaves its share to the others, not to keys: with the control
    lanes full, each protocol stream got only 3/16 of the refill, short of what it used on a
    busy rig (bench.soak, 2026-11-25: the link stopped after 25 min, a protocol stream
    exhausted)."""
    w = (_WEIGHT_SUM if layout is None else
         sum(SEGMENT_WEIGHTS[s.split(".", 1)[1]] for s, idx in zip(STREAMS, layout) if idx != NO_SEGMENT))
    if w == 0:
        return 0
    return (refill_bytes // w) // PAD_BYTES * PAD_BYTES


def segment_layout(conn: sqlite3.Connection, streams) -> list[int]:
    """Alice: the layout of a refill of the streams ``streams``: per stream of ``STREAMS``, in
    order, the index of the segment it gets (``next_segment_index``), or ``NO_SEGMENT``."""
    want = set(streams)
    unknown = want - set(STREAMS)
    if unknown:
        raise ValueError(f"streams: unknown auth streams {sorted(unknown)}")
    return [next_segment_index(conn, s) if s in want else NO_SEGMENT for s in STREAMS]


def check_layout(layout) -> list[int]:
    """A segment layout received from the peer, checked: a list of one int per stream of
    ``STREAMS`` (``NO_SEGMENT`` or a segment index). Raises ValueError naming what is wrong."""
    if not isinstance(layout, list) or len(layout) != len(STREAMS):
        raise ValueError(f"auth_layout: expected a list of {len(STREAMS)} segment indices, got "
                         f"{type(layout).__name__} of {len(layout) if isinstance(layout, list) else '-'}")
    for s, x in zip(STREAMS, layout):
        if type(x) is not int or not NO_SEGMENT <= x < (1 << 62):
            raise ValueError(f"auth_layout: stream {s}: expected {NO_SEGMENT} or a segment index "
                             f"in [0, 2^62), got {x!r}")
    return layout


def append_segments_sql(conn: sqlite3.Connection, source: str, material: bytearray,
                        layout: int | list[int]) -> int:
    """Add ``material`` to the streams of ``layout`` (inside the caller's transaction).

    ``layout`` (``segment_layout``) gives, per stream of ``STREAMS``, the index of the segment
    it gets or ``NO_SEGMENT``; an int gives every stream that index (every refill did before
    each stream's share was bounded by its own high water, ``link.commit``). Each stream of the
    layout gets a whole number of pads in proportion to ``SEGMENT_WEIGHTS`` of
    ``segment_unit(len(material), layout)``, taken from ``material`` in ``STREAMS`` order; a
    stream left out takes nothing (its share goes to the others), and what the whole units
    leave stays key. Both nodes add the same bytes under the same
    indices (Alice chooses the layout when she commits the block and sends it with COMMIT),
    so their pools stay identical whatever order the commits happen in. Returns the bytes used.
    """
    if isinstance(layout, int):
        layout = [layout] * len(STREAMS)
    unit = segment_unit(len(material), layout)
    if unit == 0:
        return 0
    off = 0
    for s, idx in zip(STREAMS, layout):
        if idx == NO_SEGMENT:
            continue
        n = unit * SEGMENT_WEIGHTS[s.split(".", 1)[1]]
        conn.execute("INSERT INTO auth_segment(stream, idx, data, source) VALUES (?,?,?,?)",
                     (s, idx, memoryview(material)[off:off + n], source))   # no bytes copy
        off += n
    return off


__all__ = ["NO_SEGMENT", "AuthError", "AuthPool", "AuthStateIOError", "PadErased", "PoolExhausted",
           "STREAMS", "TAG_BYTES", "append_segments_sql", "check_layout", "ensure_schema",
           "next_segment_index", "poly_hash_bytes", "poly_hash_bytes_ref", "read_psk",
           "segment_layout", "segment_unit", "write_psk"]

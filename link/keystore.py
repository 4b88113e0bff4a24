"""The node's durable key store (SQLite in WAL mode, one file per node).

What it is for: hold a block's final key from the moment it is *prepared*
until the two-step commit over the channel (``link.commit``) says both nodes
hold it, then the block's keys, cut into fixed-size keys with IDs both nodes
derive identically, until an application consumes them. The same file holds
the authentication pool's state (``link.auth``), so replenishing the pool from
a block happens in the same transaction as committing the block's keys: both
nodes' pools therefore grow by identical segments in the same order.

States of a block: ``prepared`` (key held, not yet usable) -> ``committed``
(keys usable; on Alice also until Bob confirmed) -> ``final`` (Alice knows Bob
committed), or ``aborted`` (prepared key wiped). Each transition is one SQLite
transaction, so a crash leaves a block in exactly one state; ``link.commit``
describes the recovery rules that make both stores end up with the same keys.

Key IDs: ``uuid5(NAMESPACE, f"{link_id}/{block_id}/{index}")`` — a pure
function of values both nodes know, so no ID ever travels over the channel.

Layout: a committed block's keys are one row of ``keyblock`` (the keys end to
end in one BLOB, a presence byte per key, live counts per index parity), not
one row per key. The IDs are derived when asked for, never stored. Why:
a 2^22-bit block is ~8,000 keys, and inserting one row per key into the
random-UUID primary-key index cost 60-110 ms of CPU per block on each node
(growing with the store), the largest single cost of the whole engine; one
BLOB costs under 5 ms. Looking a key up by ID (``take``, ``consume``) derives
the IDs of the live blocks, oldest first, once per process (cached as sorted
64-bit prefixes, 12 bytes per key; a block's IDs never change). Readers of the
file that are not a ``KeyStore`` use ``key_rows``/``key_count`` on any SQLite
connection to it. A store written with the older one-row-per-key layout is
converted when opened (one transaction).

What it must not do: log key bytes, leave consumed keys readable (a consumed
key's blob is overwritten with zeros before its row is deleted,
``secure_delete`` makes SQLite zero freed pages, and ``scrub_wal`` checkpoints
and truncates the WAL after every erase, whose old frames still held the
bytes), or make keys usable before the commit. Key bytes handed to callers
are ``bytearray``s they can wipe; the stdlib ``sqlite3`` module returns BLOBs
as immutable ``bytes``, which we copy into a bytearray at once and drop (the
one copy we cannot wipe ourselves).

Why SQLite: atomic multi-row transactions, a WAL that survives a killed
process, and no server to run; the key counts (10^4..10^6 keys) are small.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .auth import NO_SEGMENT, STREAMS, append_segments_sql, check_layout, segment_layout, segment_unit
from .auth import ensure_schema as ensure_auth_schema
from .store_errors import KeyStoreError, KeyStoreIOError, explain  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

NAMESPACE = uuid.UUID("6f1c1a3e-4d7b-5b1e-9a53-7c2d0e8f4a10")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS block (
    block_id INTEGER PRIMARY KEY, state TEXT NOT NULL, key_bits INTEGER NOT NULL,
    n_keys INTEGER NOT NULL DEFAULT 0, auth_bytes INTEGER NOT NULL DEFAULT 0, auth_idx INTEGER,
    prepared BLOB, reason TEXT NOT NULL DEFAULT '', auth_layout TEXT);
CREATE TABLE IF NOT EXISTS keyblock (
    block_id INTEGER PRIMARY KEY, key_bytes INTEGER NOT NULL, n_keys INTEGER NOT NULL,
    live0 INTEGER NOT NULL, live1 INTEGER NOT NULL, live BLOB NOT NULL, data BLOB NOT NULL);
"""
# keyblock: the committed, unconsumed keys of a block. data = n_keys keys of key_bytes end to
# end (a consumed key's bytes are zeros), live = one byte per key (1 present, 0 consumed),
# live0/live1 = present keys with an even/odd index (the KMEs' shares). The row is deleted
# when its last key is consumed.


class CommitMismatch(KeyStoreError):
    """The peer split a block into pool bytes and keys differently (``KeyStore.commit``)."""


def next_dropped(db: sqlite3.Connection, stream: str) -> int:
    """Segments 0..n-1 of ``stream`` were used up and deleted (``auth_state.dropped_segs``)."""
    row = db.execute("SELECT dropped_segs FROM auth_state WHERE stream=?", (stream,)).fetchone()
    return int(row[0]) if row else 0


def key_id(link_id: str, block_id: int, index: int) -> str:
    """The ID both nodes give key ``index`` of block ``block_id`` of link ``link_id``."""
    return str(uuid.uuid5(NAMESPACE, f"{link_id}/{block_id}/{index}"))


def key_id_bytes(link_id: str, block_id: int, idx) -> np.ndarray:
    """The 16 bytes of ``key_id(link_id, block_id, i)`` for each i in ``idx`` (rows of a
    uint8 array): UUIDv5, RFC 4122 Sec. 4.3 (SHA-1 of namespace || name, then version 5 and
    the RFC 4122 variant in bytes 6 and 8), without a uuid.UUID per key."""
    head = NAMESPACE.bytes + f"{link_id}/{block_id}/".encode()
    sha1 = hashlib.sha1
    raw = b"".join([sha1(head + b"%d" % i).digest() for i in idx])
    d = np.frombuffer(raw, np.uint8).reshape(-1, 20)[:, :16].copy()
    d[:, 6] = (d[:, 6] & 0x0F) | 0x50
    d[:, 8] = (d[:, 8] & 0x3F) | 0x80
    return d


def _format_ids(d: np.ndarray) -> list[str]:
    h = d.tobytes().hex()
    return [f"{h[o:o + 8]}-{h[o + 8:o + 12]}-{h[o + 12:o + 16]}-{h[o + 16:o + 20]}-{h[o + 20:o + 32]}"
            for o in range(0, len(h), 32)]


def key_ids(link_id: str, block_id: int, n: int, idx=None) -> list[str]:
    """``key_id(link_id, block_id, i)`` for i < n (or for each i in ``idx``)."""
    return _format_ids(key_id_bytes(link_id, block_id, range(n) if idx is None else idx))


def _link_id(conn: sqlite3.Connection) -> str:
    row = conn.execute("SELECT value FROM meta WHERE name='link_id'").fetchone()
    if row is None:
        raise KeyStoreError("not a key store: no link_id in its meta table")
    return row[0]


def key_rows(conn: sqlite3.Connection, block_id: int | None = None
             ) -> Iterator[tuple[str, int, int, bytes]]:
    """``(key_id, block_id, idx, data)`` of every key in the store open on ``conn`` (any
    SQLite connection to a key store file, read-only is fine), in (block, index) order; only
    block ``block_id`` if given. For readers of the file that are not a ``KeyStore``."""
    link = _link_id(conn)
    q = "SELECT block_id, key_bytes, live, data FROM keyblock"
    rows = conn.execute(q + " WHERE block_id=?", (block_id,)) if block_id is not None \
        else conn.execute(q + " ORDER BY block_id")
    for bid, kb, live, data in rows:
        idx = np.flatnonzero(np.frombuffer(live, np.uint8))
        for i, kid in zip(idx.tolist(), key_ids(link, bid, 0, idx.tolist())):
            yield kid, bid, i, data[i * kb:(i + 1) * kb]


def key_count(conn: sqlite3.Connection) -> int:
    """How many keys the store open on ``conn`` holds (any SQLite connection to it)."""
    return int(conn.execute("SELECT COALESCE(SUM(live0 + live1), 0) FROM keyblock").fetchone()[0])


@dataclass
class BlockRecord:
    block_id: int
    state: str
    key_bits: int
    n_keys: int


def truncate_wal(db: sqlite3.Connection, lock, busy_ms: int, what: str) -> bool:
    """Copy the WAL of ``db`` into its file and truncate it to 0 bytes (after keys are erased).

    Why: an erased key's bytes stay in WAL frames (the commit that wrote them, the page
    before the overwrite) after the zeroed page is written, and a normal checkpoint
    leaves them there: SQLite reuses the -wal file from its start without truncating
    it, so they lasted as long as the node ran (``secure_delete`` reaches pages of the
    main file, not WAL frames). A TRUNCATE checkpoint also writes the zeroed page into
    the main file at once. It must wait for readers of older snapshots (another
    process); it waits at most 0.25 s and otherwise leaves it to the next erase or to
    the close (the last connection's close checkpoints and deletes the WAL), then
    restores the connection's lock wait ``busy_ms``. ``lock`` guards ``db``; ``what``
    names the store in the log. Returns True when the WAL is now empty. The key store
    and the KME's reservation store (``link.kme``) both call it.
    """
    with lock:
        try:
            db.execute("PRAGMA busy_timeout=250")
            busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as exc:  # the erase itself is committed; the next one retries
            log.warning("%s: WAL checkpoint after an erase failed: %s", what, exc)
            return False
        finally:
            db.execute(f"PRAGMA busy_timeout={busy_ms}")
    if busy:
        log.info("%s: WAL checkpoint deferred (another connection is reading the store)", what)
    return not busy


class KeyStore:
    """One node's key store. Thread safe (one connection behind a lock)."""

    def __init__(self, path: str | os.PathLike, link_id: str, *, key_size_bits: int = 256,
                 auth_refill_bytes: int = 0, timeout_s: float = 30.0) -> None:
        if key_size_bits <= 0 or key_size_bits % 8:
            raise ValueError(f"key_size_bits: expected a positive multiple of 8, got {key_size_bits}")
        if auth_refill_bytes < 0:
            raise ValueError(f"auth_refill_bytes: must be >= 0, got {auth_refill_bytes}")
        self.path = os.fspath(path)
        self.link_id = link_id
        self.key_size_bits = key_size_bits
        self.auth_refill_bytes = auth_refill_bytes
        if not timeout_s > 0:
            raise ValueError(f"timeout_s: must be > 0, got {timeout_s}")
        self._lock = threading.RLock()
        self._busy_ms = int(timeout_s * 1000)  # how long a write waits for another process's lock
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                       timeout=timeout_s)
        except sqlite3.Error as exc:
            raise KeyStoreIOError(f"{self.path}: cannot open the key store: {explain(exc)}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")   # durable against a killed process
            self._db.execute("PRAGMA secure_delete=ON")
            # A damaged file must stop the node here, naming the file, not half-way through
            # a commit (where one side would then hold a block the other cannot record).
            # quick_check reads every page once (O(file size), ~10 ms per MB).
            problems = [r[0] for r in self._db.execute("PRAGMA quick_check(5)").fetchall()]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems))
            self._db.executescript(_SCHEMA)
            # the auth tables live here too (append_segments_sql writes them in our commit)
            ensure_auth_schema(self._db)
            if "auth_layout" not in {r[1] for r in self._db.execute("PRAGMA table_info(block)")}:
                self._db.execute("ALTER TABLE block ADD COLUMN auth_layout TEXT")   # older stores
            self._idcache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        except sqlite3.Error as exc:
            self._db.close()
            why = explain(exc)
            if why == str(exc):  # not one of the named conditions: say what it most likely is
                why = (f"corrupt or unreadable ({exc}); keep the file for inspection, restore it "
                       f"from a backup, or start a new store on both nodes")
            raise KeyStoreIOError(f"{self.path}: key store is {why}") from exc
        try:
            self._claim_link(link_id)
        except KeyStoreError:
            self._db.close()
            raise
        self._migrate_rows()

    def _claim_link(self, link_id: str) -> None:
        # A write even when the link is already recorded: a store this process cannot write
        # (read-only file, another writer) is refused here, naming why, not at the first
        # commit of a block after the link has run. (SQLite opens a file it may not write
        # read-only without a word; BEGIN IMMEDIATE alone does not notice.)
        with self._tx():
            row = self._db.execute("SELECT value FROM meta WHERE name='link_id'").fetchone()
            if row is not None and row[0] != link_id:
                raise KeyStoreError(f"{self.path}: store belongs to link {row[0]!r}, not {link_id!r}")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('link_id', ?)", (link_id,))

    # transactions ---------------------------------------------------------------------------
    class _Tx:
        def __init__(self, store: KeyStore, full: bool = False) -> None:
            self.s = store
            self.full = full

        def __enter__(self):
            self.s._lock.acquire()
            try:
                if self.full:
                    self.s._db.execute("PRAGMA synchronous=FULL")
                self.s._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:  # locked by another writer, read-only file, I/O error
                self.s._lock.release()
                raise KeyStoreIOError(f"{self.s.path}: key store is {explain(exc)}") from exc
            return self.s._db

        def __exit__(self, et, ev, tb):
            # A failed statement or COMMIT (disk full, I/O error) rolls the whole
            # transaction back: a block is in exactly its old state, never half-written.
            db = self.s._db
            try:
                if et is None:
                    try:
                        db.execute("COMMIT")
                        return False
                    except sqlite3.Error as exc:
                        ev = exc
                if db.in_transaction:  # SQLite may already have rolled back (SQLITE_FULL)
                    try:
                        db.execute("ROLLBACK")
                    except sqlite3.Error:  # pragma: no cover - nothing more we can do here
                        log.warning("%s: rollback failed", self.s.path, exc_info=True)
                if isinstance(ev, sqlite3.Error):
                    why = explain(ev)
                    why = why if why == str(ev) else f"key store is {why}"
                    raise KeyStoreIOError(f"{self.s.path}: {why} (transaction rolled back, "
                                        f"store unchanged)") from ev
                return False
            finally:
                if self.full:
                    try:
                        db.execute("PRAGMA synchronous=NORMAL")
                    except sqlite3.Error:  # pragma: no cover - the next FULL write sets it again
                        log.warning("%s: cannot reset synchronous", self.s.path, exc_info=True)
                self.s._lock.release()

    def _tx(self, full: bool = False) -> KeyStore._Tx:
        """A write transaction; ``full``: synced to disk at its commit (synchronous=FULL) where
        the connection's NORMAL survives a killed process but not a power cut: the steps of the
        two-step commit a message to the peer follows (``prepare``, ``commit``). Lost after the
        message left, the stores would differ: Alice's lost commit is redone by RESYNC with a
        fresh pool layout that Bob's does not match; Bob's lost prepare or commit leaves a block
        Alice committed or finalized that he no longer holds."""
        return KeyStore._Tx(self, full)

    # block ids --------------------------------------------------------------------------------
    def next_block_id(self) -> int:
        """A block ID never handed out before by this store (durable counter)."""
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE name='next_block'").fetchone()
            nxt = int(row[0]) if row else 1
            top = db.execute("SELECT COALESCE(MAX(block_id) + 1, 1) FROM block").fetchone()[0]
            nxt = max(nxt, top)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('next_block', ?)", (str(nxt + 1),))
            return nxt

    def raise_counter(self, name: str, at_least: int) -> int:
        """Durably raise the counter ``name`` (meta table) to ``at_least`` if it is lower; returns
        its value. For reservations that must survive a crash (``link.resume``: frame numbers)."""
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE name=?", (f"counter:{name}",)).fetchone()
            cur = int(row[0]) if row else 0
            if at_least > cur:
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"counter:{name}", str(at_least)))
                cur = at_least
            return cur

    # two-step commit --------------------------------------------------------------------------
    def prepare(self, block_id: int, key: bytearray | memoryview, key_bits: int) -> None:
        """Hold ``key`` (``key_bits`` bits, packed LSB first) for ``block_id`` as prepared.

        Idempotent for the same block; refuses a block already committed or aborted.
        """
        if key_bits <= 0 or len(key) * 8 < key_bits:
            raise ValueError(f"key_bits: {key_bits} does not fit in {len(key)} key bytes")
        with self._tx(full=True) as db:
            row = db.execute("SELECT state FROM block WHERE block_id=?", (block_id,)).fetchone()
            if row is not None:
                if row[0] == "prepared":
                    return
                raise KeyStoreError(f"prepare: block {block_id} is already {row[0]}")
            db.execute("INSERT INTO block(block_id, state, key_bits, prepared) VALUES (?,?,?,?)",
                       (block_id, "prepared", key_bits, memoryview(key)[: (key_bits + 7) // 8]))

    def commit(self, block_id: int, layout: list[int] | int | None = None, *,
               refill: bool | tuple[str, ...] = True, expect: dict | None = None,
               refill_bytes: int | None = None) -> int:
        """Make a prepared block's keys usable (idempotent); returns the number of keys.

        In the same transaction: up to ``auth_refill_bytes`` of the block key go to the
        authentication pool, one segment per stream of the segment layout (``link.auth``:
        ``append_segments_sql``), the rest is cut into keys of ``key_size_bits`` (a partial
        last key is discarded), and the prepared copy is overwritten. Alice passes no
        ``layout`` and ``refill``: the streams to refill (those below their high water,
        ``link.commit``), True for all, False for none; a fresh index is chosen per stream
        refilled (read the layout with ``auth_layout``). Bob passes the layout Alice sent
        (``auth.check_layout``), or one int (``NO_SEGMENT``, or a segment index for every
        stream: commit messages of stores written before the per-stream split).

        ``refill_bytes`` (Alice): the most of the block key the refill may take, default
        ``auth_refill_bytes``; ``link.commit`` asks for more while a stream is low, and at most
        half the block's key beyond ``auth_refill_bytes`` is ever taken. Bob takes the bytes
        Alice's refill took from ``expect["auth_bytes"]`` (the same segments then follow from
        her layout), so the two split a block alike whatever their ``auth_refill_bytes``.

        ``expect`` (Bob: what Alice's commit of the block gave, ``commit_summary``): if this
        store's split differs (its ``key_size_bits`` is not Alice's, or her refill does not fit
        the block), ``CommitMismatch`` is raised and nothing is written: the same key IDs would
        name different bytes on the two nodes, and their pools would differ.
        """
        if layout is not None and not isinstance(layout, int):
            layout = check_layout(layout)
        with self._tx(full=True) as db:
            row = db.execute("SELECT state, key_bits, prepared, n_keys FROM block WHERE block_id=?",
                             (block_id,)).fetchone()
            if row is None:
                raise KeyStoreError(f"commit: block {block_id} was never prepared")
            state, key_bits, blob, n_keys = row
            if state in ("committed", "final"):
                return n_keys
            if state != "prepared":
                raise KeyStoreError(f"commit: block {block_id} is {state}")
            material = bytearray(blob)
            del blob, row
            try:
                nbytes = key_bits // 8
                if layout is None:      # Alice: her choice, fresh indices
                    want = self.auth_refill_bytes if refill_bytes is None else int(refill_bytes)
                    take = min(want, max(self.auth_refill_bytes, nbytes // 2), nbytes)
                    streams = STREAMS if refill is True else () if refill is False else refill
                    layout = segment_layout(db, streams)
                    if not segment_unit(take, layout):
                        layout = [NO_SEGMENT] * len(STREAMS)
                else:
                    if isinstance(layout, int):
                        layout = [layout] * len(STREAMS)
                    self._check_fresh(db, block_id, layout)
                    take = min(self.auth_refill_bytes, nbytes)
                    if expect is not None and "auth_bytes" in expect:
                        take = expect["auth_bytes"]       # Alice's refill (a whole number of units)
                        if type(take) is not int or not 0 <= take <= nbytes:
                            raise CommitMismatch(f"commit: block {block_id}: the peer's refill of "
                                                 f"{take!r} bytes does not fit its {nbytes} bytes")
                used = append_segments_sql(db, f"block {block_id}", material[:take], layout)
                if not used:
                    layout = [NO_SEGMENT] * len(STREAMS)
                kb = self.key_size_bits // 8
                n = (nbytes - used) // kb
                mine = {"auth_bytes": used, "n_keys": n, "key_size_bits": self.key_size_bits}
                if expect is not None and any(expect.get(k) != v for k, v in mine.items()):
                    raise CommitMismatch(f"commit: block {block_id} splits here into {mine}, on the "
                                         f"peer into {expect}: [protocol] key_size_bits must be the "
                                         f"same on both nodes")
                if n:      # the block's keys as one row (module docstring: Layout)
                    mv = memoryview(material)
                    db.execute("INSERT INTO keyblock(block_id, key_bytes, n_keys, live0, live1, live, data) "
                               "VALUES (?,?,?,?,?,?,?)", (block_id, kb, n, (n + 1) // 2, n // 2,
                                                          b"\x01" * n, mv[used:used + n * kb]))
                    del mv
                db.execute("UPDATE block SET prepared=zeroblob(length(prepared)) WHERE block_id=?",
                           (block_id,))
                db.execute("UPDATE block SET state='committed', n_keys=?, auth_bytes=?, auth_idx=NULL, "
                           "auth_layout=?, prepared=NULL WHERE block_id=?",
                           (n, used, json.dumps(layout), block_id))
            finally:
                material[:] = bytes(len(material))
            log.info("block %d committed: %d keys of %d bits, %d bytes to the auth pool",
                     block_id, n, self.key_size_bits, used)
            return n

    @staticmethod
    def _check_fresh(db: sqlite3.Connection, block_id: int, layout: list[int]) -> None:
        """Bob: every segment index of the peer's layout must be new for its stream (not held,
        not deleted after use): an index given twice would be a constraint violation, which
        stopped the node as a failed key store instead of refusing the message."""
        for s, idx in zip(STREAMS, layout):
            if idx == NO_SEGMENT:
                continue
            if db.execute("SELECT 1 FROM auth_segment WHERE stream=? AND idx=?", (s, idx)).fetchone() \
                    or idx < next_dropped(db, s):
                raise CommitMismatch(f"commit: block {block_id}: auth_layout gives stream {s} the "
                                     f"segment index {idx}, which this store already used")

    def commit_summary(self, block_id: int) -> dict | None:
        """How a committed block was split (for ``commit(expect=...)`` on the peer): bytes to the
        authentication pool, keys, key size; None when the block is not committed here."""
        with self._lock:
            row = self._db.execute("SELECT state, auth_bytes, n_keys FROM block WHERE block_id=?",
                                   (block_id,)).fetchone()
        if row is None or row[0] not in ("committed", "final"):
            return None
        return {"auth_bytes": int(row[1]), "n_keys": int(row[2]), "key_size_bits": self.key_size_bits}

    def auth_layout(self, block_id: int) -> list[int] | None:
        """The authentication-pool segment layout a committed block filled: per stream of
        ``auth.STREAMS``, its segment index or ``NO_SEGMENT`` (None: not committed here). A
        block committed before the per-stream split gave every stream its one ``auth_idx``."""
        with self._lock:
            row = self._db.execute("SELECT state, auth_layout, auth_idx FROM block WHERE block_id=?",
                                   (block_id,)).fetchone()
        if row is None or row[0] not in ("committed", "final"):
            return None
        if row[1] is not None:
            return json.loads(row[1])
        return [NO_SEGMENT if row[2] is None else int(row[2])] * len(STREAMS)

    def finalize(self, block_id: int) -> None:
        """Alice: Bob confirmed the commit; the block needs no recovery any more."""
        with self._tx() as db:
            db.execute("UPDATE block SET state='final' WHERE block_id=? AND state='committed'", (block_id,))

    def abort(self, block_id: int, reason: str = "") -> None:
        """Wipe a prepared block (idempotent); refuses to abort a committed one.

        Records the block as aborted even if it was never prepared here, so a
        late PREPARE for it is refused.
        """
        with self._tx() as db:
            row = db.execute("SELECT state FROM block WHERE block_id=?", (block_id,)).fetchone()
            if row is not None and row[0] in ("committed", "final"):
                raise KeyStoreError(f"abort: block {block_id} is already {row[0]}")
            if row is None:
                db.execute("INSERT INTO block(block_id, state, key_bits, reason) VALUES (?,?,0,?)",
                           (block_id, "aborted", reason))
            else:
                db.execute("UPDATE block SET prepared=zeroblob(length(prepared)) WHERE block_id=?",
                           (block_id,))
                db.execute("UPDATE block SET state='aborted', prepared=NULL, reason=? WHERE block_id=?",
                           (reason, block_id))
        self.scrub_wal()   # the wiped prepared key's earlier bytes are still WAL frames

    def state(self, block_id: int) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT state FROM block WHERE block_id=?", (block_id,)).fetchone()
        return row[0] if row else None

    def open_blocks(self) -> dict[int, str]:
        """Blocks that recovery must settle: prepared, or committed but not final."""
        with self._lock:
            rows = self._db.execute(
                "SELECT block_id, state FROM block WHERE state IN ('prepared','committed')").fetchall()
        return dict(rows)

    def prepared_blocks(self) -> list[int]:
        """Blocks prepared here and not yet committed or aborted."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT block_id FROM block WHERE state='prepared'")]

    def blocks(self) -> list[BlockRecord]:
        with self._lock:
            rows = self._db.execute("SELECT block_id, state, key_bits, n_keys FROM block "
                                    "ORDER BY block_id").fetchall()
        return [BlockRecord(*r) for r in rows]

    # keys ---------------------------------------------------------------------------------------
    def _migrate_rows(self) -> None:
        """Convert a store of the one-row-per-key layout (table ``key``) to ``keyblock``."""
        db = self._db
        if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='key'").fetchone() is None:
            return
        with self._tx():
            for (bid,) in db.execute("SELECT DISTINCT block_id FROM key ORDER BY block_id").fetchall():
                rows = db.execute("SELECT idx, data FROM key WHERE block_id=? ORDER BY idx",
                                  (bid,)).fetchall()
                row = db.execute("SELECT n_keys FROM block WHERE block_id=?", (bid,)).fetchone()
                kb = len(rows[0][1])
                n = max(int(row[0]) if row else 0, rows[-1][0] + 1)
                data = bytearray(n * kb)
                live = bytearray(n)
                for i, d in rows:
                    data[i * kb:(i + 1) * kb] = d
                    live[i] = 1
                del rows
                present = np.frombuffer(live, np.uint8)
                db.execute("INSERT INTO keyblock VALUES (?,?,?,?,?,?,?)",
                           (bid, kb, n, int(present[0::2].sum()), int(present[1::2].sum()),
                            bytes(live), data))
                data[:] = bytes(len(data))
            db.execute("UPDATE key SET data=zeroblob(length(data))")
            db.execute("DROP TABLE key")
        log.info("%s: converted to one row per block", self.path)

    def _block_ids(self, bid: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Block ``bid``'s key IDs as sorted 64-bit prefixes and their key indices (cached:
        a block's IDs never change)."""
        got = self._idcache.get(bid)
        if got is None:
            pre = key_id_bytes(self.link_id, bid, range(n))[:, :8].copy().view("<u8").ravel()
            order = np.argsort(pre, kind="stable").astype(np.int32)
            got = self._idcache[bid] = (pre[order], order)
        return got

    def _locate(self, kid: str) -> tuple[int, int] | None:
        """(block, index) of the key with ID ``kid`` among the blocks in the store, or None."""
        try:
            raw = uuid.UUID(kid).bytes if isinstance(kid, str) and len(kid) == 36 else None
        except ValueError:
            raw = None
        if raw is None or str(uuid.UUID(bytes=raw)) != kid:
            return None
        q = np.frombuffer(raw[:8], "<u8")[0]
        rows = self._db.execute("SELECT block_id, n_keys FROM keyblock ORDER BY block_id").fetchall()
        if len(self._idcache) > len(rows):       # blocks emptied since (here or by another process)
            live = {bid for bid, _ in rows}
            for bid in [b for b in self._idcache if b not in live]:
                del self._idcache[bid]
        for bid, n in rows:
            pre, order = self._block_ids(bid, n)
            pos = int(np.searchsorted(pre, q))
            while pos < pre.size and pre[pos] == q:
                i = int(order[pos])
                if key_id_bytes(self.link_id, bid, (i,))[0].tobytes() == raw:
                    return bid, i
                pos += 1
        return None

    def key_ids(self) -> list[str]:
        with self._lock:
            return [kid for kid, *_ in key_rows(self._db)]

    def count(self) -> int:
        with self._lock:
            return key_count(self._db)

    def consume(self, kid: str) -> bytearray:
        """Return key ``kid`` as a bytearray and delete it (overwritten first)."""
        try:
            return self.take([kid])[0]
        except KeyError:
            raise KeyStoreError(f"consume: no key with ID {kid}") from None

    # the KME's view (link.kme.KeySource): fixed-size units, oldest first, taken atomically
    @property
    def unit_bits(self) -> int:
        return self.key_size_bits

    def available(self, share: int | None = None) -> int:
        """Keys in the store; with ``share`` (0 or 1) only those whose index has that parity."""
        if share is None:
            return self.count()
        col = "live1" if int(share) else "live0"
        with self._lock:
            return int(self._db.execute(f"SELECT COALESCE(SUM({col}), 0) FROM keyblock").fetchone()[0])

    def peek(self, count: int, share: int | None = None) -> list[str]:
        """IDs of the ``count`` oldest keys, without taking them.

        ``share`` (0 or 1) keeps keys whose index within the block has that
        parity: the two KMEs of a link hand out disjoint halves as masters, so
        SAEs at both ends can start key requests at the same time without
        both reaching for the same store key.
        """
        out: list[str] = []
        where = "" if share is None else f"WHERE {'live1' if int(share) else 'live0'} > 0 "
        with self._lock:
            rows = self._db.execute(f"SELECT block_id, live FROM keyblock {where}ORDER BY block_id")
            for bid, live in rows:
                if len(out) >= count:
                    break
                idx = np.flatnonzero(np.frombuffer(live, np.uint8))
                if share is not None:
                    idx = idx[idx % 2 == int(share)]
                out += key_ids(self.link_id, bid, 0, idx[:count - len(out)].tolist())
        return out

    def read(self, key_ids) -> list[bytearray]:
        """The named keys' bytes, leaving them in the store (one snapshot for all).

        Raises ``KeyError`` naming the first ID that is not in the store. For the KME's
        reservations, which record a key elsewhere before taking it here (``link.kme``).
        """
        out: list[bytearray] = []
        try:
            with self._lock:
                self._db.execute("BEGIN")
                try:
                    for kid in key_ids:
                        loc = self._locate(kid)
                        row = None if loc is None else self._db.execute(
                            "SELECT key_bytes, live FROM keyblock WHERE block_id=?", (loc[0],)).fetchone()
                        if loc is None or row is None or not row[1][loc[1]]:
                            raise KeyError(kid)
                        with self._db.blobopen("keyblock", "data", loc[0], readonly=True) as blob:
                            blob.seek(loc[1] * row[0])
                            out.append(bytearray(blob.read(row[0])))
                finally:
                    self._db.execute("COMMIT")
        except BaseException as exc:
            for b in out:
                b[:] = bytes(len(b))
            if isinstance(exc, sqlite3.Error):
                raise KeyStoreIOError(f"{self.path}: key store is {explain(exc)}") from exc
            raise
        return out

    def take(self, key_ids) -> list[bytearray]:
        """Remove the named keys (overwritten, then deleted) and return them, all or none.

        Raises ``KeyError`` naming the first ID that is not in the store.
        """
        out: list[bytearray] = []
        try:
            with self._tx() as db:
                lives: dict[int, tuple[bytearray, int]] = {}
                for kid in key_ids:
                    loc = self._locate(kid)
                    if loc is not None and loc[0] not in lives:
                        kb, live = db.execute("SELECT key_bytes, live FROM keyblock WHERE block_id=?",
                                              (loc[0],)).fetchone()
                        lives[loc[0]] = (bytearray(live), kb)
                    if loc is None or not lives[loc[0]][0][loc[1]]:
                        raise KeyError(kid)
                    bid, i = loc
                    live, kb = lives[bid]
                    live[i] = 0
                    # in place: read the key, overwrite it with zeros (the row keeps its size)
                    with db.blobopen("keyblock", "data", bid) as blob:
                        blob.seek(i * kb)
                        out.append(bytearray(blob.read(kb)))
                        blob.seek(i * kb)
                        blob.write(bytes(kb))
                for bid, (live, _) in lives.items():
                    present = np.frombuffer(live, np.uint8)
                    l0, l1 = int(present[0::2].sum()), int(present[1::2].sum())
                    if l0 + l1:
                        db.execute("UPDATE keyblock SET live=?, live0=?, live1=? WHERE block_id=?",
                                   (bytes(live), l0, l1, bid))
                    else:      # its last key: the row goes (its bytes are zeros by now)
                        db.execute("DELETE FROM keyblock WHERE block_id=?", (bid,))
        except BaseException:
            for b in out:
                b[:] = bytes(len(b))
            raise
        self.scrub_wal()
        return out

    def scrub_wal(self) -> bool:
        """Truncate the store's WAL after keys are erased (``truncate_wal``); True when empty."""
        return truncate_wal(self._db, self._lock, self._busy_ms, str(self.path))

    def consume_next(self) -> tuple[str, bytearray] | None:
        """The oldest key (ID and bytes), deleted from the store; None when empty."""
        with self._lock:
            ids = self.peek(1)
            if not ids:
                return None
            return ids[0], self.consume(ids[0])

    def fingerprint(self) -> str:
        """A digest of every key ID and value, to compare two stores (reveals no key).

        Each key's ID is a function of the link, its block and its index, so the digest
        covers the link ID, and per block its ID, key size, count, which keys are present
        and their bytes (a consumed key's bytes are zeros on both sides)."""
        h = hashlib.blake2b(digest_size=32, key=b"qkd-link keystore comparison")
        h.update(self.link_id.encode() + b"\0")
        with self._lock:
            for bid, kb, n, live, data in self._db.execute(
                    "SELECT block_id, key_bytes, n_keys, live, data FROM keyblock ORDER BY block_id"):
                h.update(b"%d/%d/%d/" % (bid, kb, n))
                h.update(live)
                h.update(data)
        return h.hexdigest()

    def stats(self) -> dict:
        with self._lock:
            rows = dict(self._db.execute("SELECT state, COUNT(*) FROM block GROUP BY state").fetchall())
            n = key_count(self._db)
        return {"keys": n, "key_size_bits": self.key_size_bits, "blocks": rows}

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:  # pragma: no cover
                pass


def stores_identical(a: KeyStore, b: KeyStore) -> bool:
    """True when both stores hold exactly the same key IDs with the same values (the
    fingerprint covers both: ``KeyStore.fingerprint``)."""
    return a.link_id == b.link_id and a.fingerprint() == b.fingerprint()

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

What it must not do: log key bytes, leave consumed keys readable (a consumed
key's blob is overwritten with zeros before its row is deleted, and
``secure_delete`` makes SQLite zero freed pages), or make keys usable before
the commit. Key bytes handed to callers are ``bytearray``s they can wipe; the
stdlib ``sqlite3`` module returns BLOBs as immutable ``bytes``, which we copy
into a bytearray at once and drop (the one copy we cannot wipe ourselves).

Why SQLite: atomic multi-row transactions, a WAL that survives a killed
process, and no server to run; the key counts (10^4..10^6 keys) are small.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import uuid
from dataclasses import dataclass

from .auth import append_segments_sql, next_segment_index
from .store_errors import KeyStoreError, KeyStoreIOError  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

NAMESPACE = uuid.UUID("6f1c1a3e-4d7b-5b1e-9a53-7c2d0e8f4a10")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS block (
    block_id INTEGER PRIMARY KEY, state TEXT NOT NULL, key_bits INTEGER NOT NULL,
    n_keys INTEGER NOT NULL DEFAULT 0, auth_bytes INTEGER NOT NULL DEFAULT 0, auth_idx INTEGER,
    prepared BLOB, reason TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS key (
    key_id TEXT PRIMARY KEY, block_id INTEGER NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS key_block ON key(block_id, idx);
"""


def key_id(link_id: str, block_id: int, index: int) -> str:
    """The ID both nodes give key ``index`` of block ``block_id`` of link ``link_id``."""
    return str(uuid.uuid5(NAMESPACE, f"{link_id}/{block_id}/{index}"))


def key_ids(link_id: str, block_id: int, n: int) -> list[str]:
    """``key_id(link_id, block_id, i)`` for i < n: the same UUIDv5 (RFC 4122 Sec. 4.3: SHA-1
    of namespace || name, version 5, RFC 4122 variant), without a uuid.UUID per key."""
    head = NAMESPACE.bytes + f"{link_id}/{block_id}/".encode()
    out = []
    for i in range(n):
        d = bytearray(hashlib.sha1(head + str(i).encode()).digest()[:16])
        d[6] = (d[6] & 0x0F) | 0x50
        d[8] = (d[8] & 0x3F) | 0x80
        h = d.hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


@dataclass
class BlockRecord:
    block_id: int
    state: str
    key_bits: int
    n_keys: int


class KeyStore:
    """One node's key store. Thread safe (one connection behind a lock)."""

    def __init__(self, path: str | os.PathLike, link_id: str, *, key_size_bits: int = 256,
                 auth_refill_bytes: int = 0) -> None:
        if key_size_bits <= 0 or key_size_bits % 8:
            raise ValueError(f"key_size_bits: expected a positive multiple of 8, got {key_size_bits}")
        if auth_refill_bytes < 0:
            raise ValueError(f"auth_refill_bytes: must be >= 0, got {auth_refill_bytes}")
        self.path = os.fspath(path)
        self.link_id = link_id
        self.key_size_bits = key_size_bits
        self.auth_refill_bytes = auth_refill_bytes
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                       timeout=30)
        except sqlite3.Error as exc:
            raise KeyStoreIOError(f"{self.path}: cannot open the key store: {exc}") from exc
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
            from .auth import _SCHEMA as AUTH_SCHEMA
            self._db.executescript(AUTH_SCHEMA)
        except sqlite3.Error as exc:
            self._db.close()
            raise KeyStoreIOError(f"{self.path}: key store is corrupt or unreadable ({exc}); keep the file "
                                f"for inspection, restore it from a backup, or start a new store "
                                f"on both nodes") from exc
        with self._tx():
            row = self._db.execute("SELECT value FROM meta WHERE name='link_id'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('link_id', ?)", (link_id,))
            elif row[0] != link_id:
                raise KeyStoreError(f"{self.path}: store belongs to link {row[0]!r}, not {link_id!r}")

    # transactions ---------------------------------------------------------------------------
    class _Tx:
        def __init__(self, store: KeyStore) -> None:
            self.s = store

        def __enter__(self):
            self.s._lock.acquire()
            self.s._db.execute("BEGIN IMMEDIATE")
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
                    raise KeyStoreIOError(f"{self.s.path}: {ev} (transaction rolled back, "
                                        f"store unchanged)") from ev
                return False
            finally:
                self.s._lock.release()

    def _tx(self) -> KeyStore._Tx:
        return KeyStore._Tx(self)

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
        with self._tx() as db:
            row = db.execute("SELECT state FROM block WHERE block_id=?", (block_id,)).fetchone()
            if row is not None:
                if row[0] == "prepared":
                    return
                raise KeyStoreError(f"prepare: block {block_id} is already {row[0]}")
            db.execute("INSERT INTO block(block_id, state, key_bits, prepared) VALUES (?,?,?,?)",
                       (block_id, "prepared", key_bits, memoryview(key)[: (key_bits + 7) // 8]))

    def commit(self, block_id: int, auth_idx: int | None = None) -> int:
        """Make a prepared block's keys usable (idempotent); returns the number of keys.

        In the same transaction: the first ``auth_refill_bytes`` of the block key
        go to the authentication pool as segment ``auth_idx`` (Alice passes None
        and a fresh index is chosen: read it with ``auth_index``; Bob passes the
        index Alice sent), the rest is cut into keys of ``key_size_bits`` (a
        partial last key is discarded), and the prepared copy is overwritten.
        """
        with self._tx() as db:
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
                refill = min(self.auth_refill_bytes, nbytes)
                if auth_idx is None:
                    auth_idx = next_segment_index(db)
                used = (append_segments_sql(db, f"block {block_id}", material[:refill], auth_idx)
                        if refill else 0)
                kb = self.key_size_bits // 8
                n = (nbytes - used) // kb
                mv = memoryview(material)
                db.executemany("INSERT INTO key(key_id, block_id, idx, data) VALUES (?,?,?,?)",
                               ((kid, block_id, i, mv[used + i * kb:used + (i + 1) * kb])
                                for i, kid in enumerate(key_ids(self.link_id, block_id, n))))
                del mv
                db.execute("UPDATE block SET prepared=zeroblob(length(prepared)) WHERE block_id=?",
                           (block_id,))
                db.execute("UPDATE block SET state='committed', n_keys=?, auth_bytes=?, auth_idx=?, "
                           "prepared=NULL WHERE block_id=?", (n, used, auth_idx if used else None, block_id))
            finally:
                material[:] = bytes(len(material))
            log.info("block %d committed: %d keys of %d bits, %d bytes to the auth pool",
                     block_id, n, self.key_size_bits, used)
            return n

    def auth_index(self, block_id: int) -> int | None:
        """The authentication-pool segment index a committed block filled (None: none)."""
        with self._lock:
            row = self._db.execute("SELECT auth_idx FROM block WHERE block_id=?", (block_id,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

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
    def key_ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT key_id FROM key ORDER BY block_id, idx")]

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM key").fetchone()[0]

    def consume(self, kid: str) -> bytearray:
        """Return key ``kid`` as a bytearray and delete it (overwritten first)."""
        with self._tx() as db:
            row = db.execute("SELECT data FROM key WHERE key_id=?", (kid,)).fetchone()
            if row is None:
                raise KeyStoreError(f"consume: no key with ID {kid}")
            out = bytearray(row[0])
            del row
            db.execute("UPDATE key SET data=zeroblob(length(data)) WHERE key_id=?", (kid,))
            db.execute("DELETE FROM key WHERE key_id=?", (kid,))
            return out

    # the KME's view (link.kme.KeySource): fixed-size units, oldest first, taken atomically
    @property
    def unit_bits(self) -> int:
        return self.key_size_bits

    def available(self, share: int | None = None) -> int:
        """Keys in the store; with ``share`` (0 or 1) only those whose index has that parity."""
        if share is None:
            return self.count()
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM key WHERE idx % 2 = ?", (int(share),)).fetchone()[0]

    def peek(self, count: int, share: int | None = None) -> list[str]:
        """IDs of the ``count`` oldest keys, without taking them.

        ``share`` (0 or 1) keeps keys whose index within the block has that
        parity: the two KMEs of a link hand out disjoint halves as masters, so
        SAEs at both ends can start key requests at the same time without
        both reaching for the same store key.
        """
        where, args = ("WHERE idx % 2 = ? ", (int(share),)) if share is not None else ("", ())
        with self._lock:
            return [r[0] for r in self._db.execute(
                f"SELECT key_id FROM key {where}ORDER BY block_id, idx LIMIT ?", (*args, int(count)))]

    def take(self, key_ids) -> list[bytearray]:
        """Remove the named keys (overwritten, then deleted) and return them, all or none.

        Raises ``KeyError`` naming the first ID that is not in the store.
        """
        with self._tx() as db:
            out = []
            for kid in key_ids:
                row = db.execute("SELECT data FROM key WHERE key_id=?", (kid,)).fetchone()
                if row is None:
                    for b in out:
                        b[:] = bytes(len(b))
                    raise KeyError(kid)
                out.append(bytearray(row[0]))
                del row
                db.execute("UPDATE key SET data=zeroblob(length(data)) WHERE key_id=?", (kid,))
                db.execute("DELETE FROM key WHERE key_id=?", (kid,))
            return out

    def consume_next(self) -> tuple[str, bytearray] | None:
        """The oldest key (ID and bytes), deleted from the store; None when empty."""
        with self._lock:
            row = self._db.execute("SELECT key_id FROM key ORDER BY block_id, idx LIMIT 1").fetchone()
            if row is None:
                return None
            return row[0], self.consume(row[0])

    def fingerprint(self) -> str:
        """A digest of every key ID and value, to compare two stores (reveals no key)."""
        import hashlib

        h = hashlib.blake2b(digest_size=32, key=b"qkd-link keystore comparison")
        with self._lock:
            for kid, data in self._db.execute("SELECT key_id, data FROM key ORDER BY key_id"):
                h.update(kid.encode())
                h.update(data)
        return h.hexdigest()

    def stats(self) -> dict:
        with self._lock:
            rows = dict(self._db.execute("SELECT state, COUNT(*) FROM block GROUP BY state").fetchall())
            n = self._db.execute("SELECT COUNT(*) FROM key").fetchone()[0]
        return {"keys": n, "key_size_bits": self.key_size_bits, "blocks": rows}

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:  # pragma: no cover
                pass


def stores_identical(a: KeyStore, b: KeyStore) -> bool:
    """True when both stores hold exactly the same key IDs with the same values."""
    return a.key_ids() == b.key_ids() and a.fingerprint() == b.fingerprint()

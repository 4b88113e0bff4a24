"""Key delivery to applications: an ETSI GS QKD 014 v1.1.1 Key Management Entity.

Each node runs one KME for the Secure Application Entities (SAEs) at its site.
Three calls, over HTTPS with mutual TLS (spec clause 5):

* ``GET  /api/v1/keys/{slave_SAE_ID}/status``             -> Status (5.2)
* ``GET|POST /api/v1/keys/{slave_SAE_ID}/enc_keys``       -> Key container (5.3)
* ``GET|POST /api/v1/keys/{master_SAE_ID}/dec_keys``      -> Key container (5.4)

with the spec's JSON objects (Status, Key request, Key container, Key IDs,
Error: 6.1-6.5) and HTTP codes 200, 400 (bad request), 401 (unauthorized), 503
(server error, here also: not enough key, or the peer KME unreachable). Key
sizes are in bits and must be multiples of 8. No extensions are implemented
(``max_SAE_ID_count`` 0): a Key request with ``additional_slave_SAE_IDs`` or
``extension_mandatory`` entries is refused with 400, as 6.2 requires of a KME
that cannot handle them; ``extension_optional`` is ignored.

Who is calling. The handler reads the verified client certificate from the TLS
transport (``request.transport.get_extra_info("peercert")``) and takes its
subject CN as the SAE ID. That is why the web stack is aiohttp: its handlers
see the transport's peer certificate directly, whereas an ASGI server hands the
certificate to the application only if it implements the optional ASGI TLS
extension (uvicorn does not). The server asks for a certificate but does not
require it in the handshake, so a caller without one gets the spec's 401 with
an Error object instead of a bare TLS failure; a presented certificate must
chain to the lab CA or the handshake fails.

Synchronization (KME to KME). When the master SAE's KME hands out keys it
first has the peer KME reserve exactly those keys for the slave SAE. Both
nodes' key stores hold the same keys under the same store IDs (the link engine
guarantees it), and the KME-level ``key_ID`` is derived from the store IDs it
covers (UUIDv5), so a reservation retried after a lost answer is the same
reservation: the peer treats it idempotently, and a master that crashed after
the peer reserved but before it delivered hands the same keys out again under
the same key_ID. The peer records a reservation before it takes the keys from
its store, so a peer killed between the two finishes it later (``_settle``). A
key is delivered once on each side and then erased; a dec_keys call for an
unknown, already used or other-SAE key ID fails with 400.
Hand-outs are serialized per KME, so concurrent requests never share a key.
When SAEs at both sites act as masters, each KME hands out its own half of
the store (``KmeConfig.master_share``, by key index parity), so the two never
reach for the same store key; store takes are atomic either way.

This module never logs key material.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import sqlite3
import ssl
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from aiohttp import web

from .keystore import truncate_wal
from .store_errors import KeyStoreIOError, explain

log = logging.getLogger(__name__)

PEER_RESERVE_PATH = "/kme/v1/reserve"   # KME to KME (mutual TLS), outside the ETSI API
KEY_ID_NAMESPACE = uuid.UUID("6f1c7a52-4e0b-4b7e-9d0c-0c1f5e8a2b61")


class KmeError(Exception):
    """An error the API reports with an HTTP status and an ETSI Error object."""

    def __init__(self, status: int, message: str, details: list[dict] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or []

    def response(self) -> web.Response:
        body: dict = {"message": self.message}
        if self.details:
            body["details"] = self.details
        return web.json_response(body, status=self.status)


class KeySource(Protocol):
    """The node's store of distilled keys, as the KME uses it.

    Store keys are fixed-size units (``unit_bits``) with IDs identical on both
    nodes. ``peek`` lists the oldest available IDs without taking them;
    ``take`` atomically removes the named keys (overwritten, then deleted) and
    returns their bytes, or raises ``KeyError`` naming one that is not there;
    ``read`` returns them without removing them (same ``KeyError``).
    """

    unit_bits: int

    def available(self) -> int: ...

    def peek(self, count: int) -> list[str]: ...

    def take(self, store_ids: Sequence[str]) -> list[bytearray]: ...

    def read(self, store_ids: Sequence[str]) -> list[bytearray]: ...


class PeerKme(Protocol):
    """The other node's KME, reached over the link's authenticated channel."""

    def reserve(self, master_sae: str, slave_sae: str, keys: list[dict]) -> None:
        """Reserve ``keys`` ({"key_ID", "store_IDs", "size"}) for ``slave_sae``; raise on failure."""


@dataclass
class KmeConfig:
    """Who this KME serves and its limits (spec Status fields)."""

    kme_id: str
    peer_kme_id: str
    local_saes: tuple[str, ...]             # SAEs attached to this KME
    partners: dict[str, tuple[str, ...]]   # local SAE -> remote SAEs it may share keys with
    key_size: int = 256                    # default size in bits
    min_key_size: int = 64
    max_key_size: int = 4096
    max_key_per_request: int = 128
    max_key_count: int = 100_000
    # which half of the store this KME hands out as master (KeyStore.peek's parity, 0 or 1);
    # None: all of it (only one of the two KMEs ever acts as master)
    master_share: int | None = None

    def __post_init__(self) -> None:
        for name in ("key_size", "min_key_size", "max_key_size"):
            v = getattr(self, name)
            if v <= 0 or v % 8:
                raise ValueError(f"{name}: must be a positive multiple of 8 bits, got {v}")
        if not self.min_key_size <= self.key_size <= self.max_key_size:
            raise ValueError("key_size: must lie between min_key_size and max_key_size")
        if self.max_key_per_request < 1:
            raise ValueError("max_key_per_request: must be >= 1")
        if self.master_share not in (None, 0, 1):
            raise ValueError(f"master_share: expected None, 0 or 1, got {self.master_share!r}")


def derive_key_id(store_ids: Sequence[str], size: int) -> str:
    """The key_ID both KMEs derive for a key made of ``store_ids`` cut to ``size`` bits."""
    return str(uuid.uuid5(KEY_ID_NAMESPACE, f"{size}:" + ",".join(store_ids)))


def _wipe(buf: bytearray | memoryview) -> None:
    from postproc_c import memzero  # the C core's qpp_memzero: in place, no temporary
    memzero(buf)


#: How long a write to the reservation store waits for another process's lock.
RESERVATION_BUSY_MS = 5000


class ReservationStore:
    """Keys the peer's master SAE was handed, waiting for our slave SAE (SQLite).

    ``units`` holds store keys taken out of the key store for the peer, each
    assigned to at most one reservation; ``reservations`` maps a key_ID to its
    SAE pair and size. If the peer's master re-groups store keys after a crash
    (another size), a unit moves to the new reservation and the old,
    never-delivered one is dropped, so no store key is ever stranded or doubled.
    A unit is recorded here before it is taken from the key store (two files,
    two transactions) and ``settled`` once it is: see ``Kme.reserve_for_peer``.
    """

    def __init__(self, path: Path | str) -> None:
        self._path = path
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                                       timeout=RESERVATION_BUSY_MS / 1000)
        except sqlite3.Error as exc:
            raise KeyStoreIOError(f"{path}: KME reservation store is {explain(exc)}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA secure_delete=ON")  # deleted key bytes are overwritten in the file
            self._db.execute("CREATE TABLE IF NOT EXISTS units (store_id TEXT PRIMARY KEY,"
                             " key_id TEXT, pos INTEGER, material BLOB NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS reservations (key_id TEXT PRIMARY KEY,"
                             " master TEXT NOT NULL, slave TEXT NOT NULL, size INTEGER NOT NULL)")
            cols = {r[1] for r in self._db.execute("PRAGMA table_info(units)")}
            if "settled" not in cols:  # a store from before: its units were taken before recording
                self._db.execute("ALTER TABLE units ADD COLUMN settled INTEGER NOT NULL DEFAULT 1")
        except sqlite3.Error as exc:
            self._db.close()
            raise KeyStoreIOError(f"{path}: KME reservation store is {explain(exc)}") from exc
        self._lock = threading.Lock()

    def _tx(self):
        db, lock = self._db, self._lock

        class _Tx:
            def __enter__(self_inner):
                lock.acquire()
                db.execute("BEGIN IMMEDIATE")
                return db

            def __exit__(self_inner, et, ev, tb):
                try:
                    db.execute("ROLLBACK" if et else "COMMIT")
                finally:
                    lock.release()
        return _Tx()

    def existing(self, key_id: str) -> tuple[str, str, int] | None:
        with self._lock:
            return self._db.execute("SELECT master, slave, size FROM reservations WHERE key_id=?",
                                    (key_id,)).fetchone()

    def held_units(self, store_ids: Sequence[str]) -> set[str]:
        """Which of ``store_ids`` this store already holds (taken from the key store earlier)."""
        with self._lock:
            q = ",".join("?" * len(store_ids))
            return {r[0] for r in self._db.execute(f"SELECT store_id FROM units WHERE store_id IN ({q})",
                                                   list(store_ids))}

    def unsettled(self, store_ids: Sequence[str] | None = None) -> list[str]:
        """Units recorded but maybe still in the key store (all, or among ``store_ids``)."""
        with self._lock:
            rows = self._db.execute("SELECT store_id FROM units WHERE settled=0").fetchall()
        have = {r[0] for r in rows}
        return sorted(have) if store_ids is None else [sid for sid in store_ids if sid in have]

    def settle(self, store_ids: Sequence[str]) -> None:
        """The units are no longer in the key store."""
        with self._tx() as db:
            db.executemany("UPDATE units SET settled=1 WHERE store_id=?", [(sid,) for sid in store_ids])

    def drop(self, key_id: str, new_units: Sequence[str]) -> None:
        """Undo ``reserve(key_id, ..., new_units)`` (its units could not be taken)."""
        with self._tx() as db:
            q = ",".join("?" * len(new_units))
            db.execute(f"UPDATE units SET material=zeroblob(length(material)) WHERE store_id IN ({q})",
                       list(new_units))
            db.execute(f"DELETE FROM units WHERE store_id IN ({q})", list(new_units))
            db.execute("UPDATE units SET key_id=NULL WHERE key_id=?", (key_id,))
            db.execute("DELETE FROM reservations WHERE key_id=?", (key_id,))
        self._scrub_wal()

    def reserve(self, key_id: str, master: str, slave: str, size: int, store_ids: Sequence[str],
                new_units: dict[str, bytearray]) -> None:
        """Record a reservation over ``store_ids`` (``new_units``: read from the key store, not
        yet taken from it; recorded unsettled)."""
        with self._tx() as db:
            for sid, material in new_units.items():
                db.execute("INSERT INTO units (store_id, key_id, pos, material, settled) "
                           "VALUES (?, NULL, 0, ?, 0)", (sid, material))
            for pos, sid in enumerate(store_ids):
                old = db.execute("SELECT key_id FROM units WHERE store_id=?", (sid,)).fetchone()
                if old and old[0] and old[0] != key_id:  # re-grouped by the peer: drop the old one
                    db.execute("UPDATE units SET key_id=NULL WHERE key_id=?", (old[0],))
                    db.execute("DELETE FROM reservations WHERE key_id=?", (old[0],))
                db.execute("UPDATE units SET key_id=?, pos=? WHERE store_id=?", (key_id, pos, sid))
            db.execute("INSERT INTO reservations VALUES (?, ?, ?, ?)", (key_id, master, slave, size))

    def pop(self, key_ids: Sequence[str], master: str, slave: str) -> list[bytearray]:
        """Remove and return the keys, all or nothing; 400 for any that may not be had."""
        out: list[bytearray] = []
        try:
            with self._tx() as db:
                for kid in key_ids:
                    row = db.execute("SELECT master, slave, size FROM reservations WHERE key_id=?",
                                     (kid,)).fetchone()
                    if row is None or row[0] != master or row[1] != slave:
                        # unknown, already delivered, or reserved for another SAE pair: one answer
                        raise KmeError(400, "key_ID not available to this SAE",
                                       [{"key_ID": kid, "reason": "unknown, already used or not yours"}])
                    parts = [bytearray(r[0]) for r in db.execute(
                        "SELECT material FROM units WHERE key_id=? ORDER BY pos", (kid,))]
                    out.append(_cut(parts, row[2]))
                    db.execute("UPDATE units SET material=zeroblob(length(material)) WHERE key_id=?", (kid,))
                    db.execute("DELETE FROM units WHERE key_id=?", (kid,))
                    db.execute("DELETE FROM reservations WHERE key_id=?", (kid,))
        except BaseException:  # refused part-way: the keys cut so far are wiped, not dropped
            for b in out:
                _wipe(b)
            raise
        self._scrub_wal()
        return out

    def _scrub_wal(self) -> None:
        # the delivered or dropped keys' bytes are still in old WAL frames until it is truncated
        truncate_wal(self._db, self._lock, RESERVATION_BUSY_MS, f"{self._path}: KME reservation store")

    def count(self, slave: str | None = None) -> int:
        with self._lock:
            if slave is None:
                return self._db.execute("SELECT COUNT(*) FROM reservations").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM reservations WHERE slave=?", (slave,)).fetchone()[0]

    def close(self) -> None:
        self._db.close()


def _cut(parts: list[bytearray], size_bits: int) -> bytearray:
    """Concatenate store keys and keep the first ``size_bits`` bits; wipe the parts."""
    joined = bytearray(b"".join(parts))
    for p in parts:
        _wipe(p)
    out = bytearray(joined[: size_bits // 8])
    _wipe(joined)
    return out


@dataclass
class KmeStats:
    keys_served_enc: int = 0
    keys_served_dec: int = 0
    requests_refused: dict[int, int] = field(default_factory=dict)


class Kme:
    """The KME's logic, independent of HTTP (the web layer is ``make_app``)."""

    def __init__(self, config: KmeConfig, source: KeySource, reservations: ReservationStore,
                 peer: PeerKme | None = None) -> None:
        self.config = config
        self.source = source
        self.reservations = reservations
        self.peer = peer
        self.stats = KmeStats()
        self._handout = threading.Lock()
        # Reservations for the peer take their own lock, not _handout: while this KME's
        # master hand-out waits for the peer, the peer may be waiting for us (SAEs at both
        # sites requesting at once); sharing one lock would deadlock both until the timeout.
        # The two never reach for the same store key when master_share splits the store.
        self._reserve = threading.Lock()
        # told of every delivery: {"kind": "kme", "enc_keys"|"dec_keys": n} (telemetry, metrics)
        self.on_event: Callable[[dict], None] | None = None
        self._settle(self.reservations.unsettled())  # a reservation cut short by a crash

    def _settle(self, store_ids: Sequence[str]) -> None:
        """Take recorded reservation units out of the key store where they still are."""
        for sid in store_ids:
            try:
                for p in self.source.take([sid]):
                    _wipe(p)
            except KeyError:  # already taken (the crash came after the take)
                pass
        if store_ids:
            self.reservations.settle(store_ids)

    def _available(self) -> int:
        share = self.config.master_share
        return self.source.available() if share is None else self.source.available(share)  # type: ignore[call-arg]

    def _peek(self, count: int) -> list[str]:
        share = self.config.master_share
        return self.source.peek(count) if share is None else self.source.peek(count, share)  # type: ignore[call-arg]

    def _served(self, call: str, n: int) -> None:
        if self.on_event is not None:
            try:
                self.on_event({"kind": "kme", call: n})
            except Exception:  # noqa: BLE001 - telemetry must not fail a delivery
                log.exception("KME on_event callback failed")

    # -- authorization ------------------------------------------------------
    def _check_pair(self, caller: str, other: str, other_name: str) -> None:
        if not other or not other.strip():
            raise KmeError(400, f"{other_name} must not be blank")
        if other == caller:
            raise KmeError(400, f"{other_name} must differ from the calling SAE's ID")
        if caller not in self.config.local_saes:
            raise KmeError(401, f"SAE {caller!r} is not served by KME {self.config.kme_id!r}")
        if other not in self.config.partners.get(caller, ()):
            raise KmeError(401, f"SAE {caller!r} is not configured to share keys with {other!r}")

    # -- Status (5.2) ---------------------------------------------------------
    def status(self, caller: str, slave: str) -> dict:
        self._check_pair(caller, slave, "slave_SAE_ID")
        c = self.config
        per_key = -(-c.key_size // self.source.unit_bits)
        return {
            "source_KME_ID": c.kme_id,
            "target_KME_ID": c.peer_kme_id,
            "master_SAE_ID": caller,
            "slave_SAE_ID": slave,
            "key_size": c.key_size,
            "stored_key_count": min(self._available() // per_key, c.max_key_count),
            "max_key_count": c.max_key_count,
            "max_key_per_request": c.max_key_per_request,
            "max_key_size": c.max_key_size,
            "min_key_size": c.min_key_size,
            "max_SAE_ID_count": 0,
        }

    # -- Get key (5.3) ---------------------------------------------------------
    def _parse_request(self, number: object, size: object, extra: object, mandatory: object = None,
                       optional: object = None) -> tuple[int, int]:
        c = self.config
        if extra is not None and not isinstance(extra, list):
            raise KmeError(400, "additional_slave_SAE_IDs must be a list of SAE IDs")
        if extra:
            raise KmeError(400, "additional_slave_SAE_IDs is not supported (max_SAE_ID_count is 0)")
        # Key request (6.2): extension_mandatory lists extensions the KME "shall handle or
        # return an error"; this KME implements none, so any entry is refused (a request
        # served while ignoring one would break the contract the SAE asked for).
        # extension_optional may be ignored, but both must be lists of objects.
        for name, ext in (("extension_mandatory", mandatory), ("extension_optional", optional)):
            if ext is not None and not (isinstance(ext, list) and all(isinstance(e, dict) for e in ext)):
                raise KmeError(400, f"{name} must be a list of {{name: value}} objects")
        if mandatory:
            names = sorted({str(k)[:64] for e in mandatory for k in e})  # type: ignore[union-attr]
            raise KmeError(400, "extension_mandatory names extensions this KME does not support",
                           [{"extension_unsupported": nm} for nm in names[:16]])
        n = _as_int(number, "number", default=1)
        s = _as_int(size, "size", default=c.key_size)
        if n < 1 or n > c.max_key_per_request:
            raise KmeError(400, f"number must be between 1 and max_key_per_request "
                                f"({c.max_key_per_request}), got {n}")
        if s < c.min_key_size or s > c.max_key_size or s % 8:
            raise KmeError(400, f"size must be a multiple of 8 between {c.min_key_size} and "
                                f"{c.max_key_size} bits, got {s}")
        return n, s

    def enc_keys(self, caller: str, slave: str, number: object = None, size: object = None,
                 additional: object = None, mandatory: object = None, optional: object = None) -> dict:
        self._check_pair(caller, slave, "slave_SAE_ID")
        n, s = self._parse_request(number, size, additional, mandatory, optional)
        per_key = -(-s // self.source.unit_bits)
        if self.peer is None:
            raise KmeError(503, "no link to the peer KME: keys cannot be synchronized")
        with self._handout:
            ids = self._peek(n * per_key)
            if len(ids) < n * per_key:
                raise KmeError(503, f"not enough key material: {len(ids) // per_key} keys of {s} bits "
                                    f"available, {n} requested")
            groups = [ids[i * per_key:(i + 1) * per_key] for i in range(n)]
            batch = [{"key_ID": derive_key_id(g, s), "store_IDs": list(g), "size": s} for g in groups]
            try:
                self.peer.reserve(caller, slave, batch)
            except KmeError:
                raise
            except Exception as exc:  # the link is down or the peer refused: nothing was taken here
                log.warning("peer KME reservation failed: %s", exc)
                raise KmeError(503, "peer KME did not confirm the reservation; try again") from exc
            try:
                parts = self.source.take(ids)
            except KeyError:  # another KME process on this store took one first: nothing taken
                raise KmeError(503, "store keys were taken by another request; try again") from None
        keys = []
        for i, b in enumerate(batch):
            key = _cut(parts[i * per_key:(i + 1) * per_key], s)
            keys.append({"key_ID": b["key_ID"], "key": base64.b64encode(key).decode()})
            _wipe(key)
        self.stats.keys_served_enc += n
        self._served("enc_keys", n)
        log.info("enc_keys: %d keys of %d bits for %s -> %s", n, s, caller, slave)
        return {"keys": keys}

    # -- the peer's side of a reservation ---------------------------------------
    def reserve_for_peer(self, master: str, slave: str, keys: list[dict]) -> None:
        """Called (over the link) by the peer KME when its master SAE takes keys."""
        if slave not in self.config.local_saes or master not in self.config.partners.get(slave, ()):
            raise KmeError(401, f"reservation for unknown SAE pair {master!r} -> {slave!r}")
        with self._reserve:
            for k in keys:
                kid, sids, size = str(k["key_ID"]), [str(x) for x in k["store_IDs"]], int(k["size"])
                if derive_key_id(sids, size) != kid:
                    raise KmeError(400, f"key_ID {kid} does not match its store keys")
                prior = self.reservations.existing(kid)
                if prior is not None:
                    if prior[:2] != (master, slave):
                        raise KmeError(400, f"key_ID {kid} is reserved for another SAE pair")
                    self._settle(self.reservations.unsettled(sids))  # done, unless cut short
                    continue  # a retried reservation
                held = self.reservations.held_units(sids)
                missing = [sid for sid in sids if sid not in held]
                # Recorded here first, then taken from the key store: two files, two
                # transactions. Taken first (as before), a kill between the two lost this
                # node's copy of keys the master still holds, and the peer refused every
                # later request of that master (its share's oldest keys, never reservable
                # again). Recorded but not yet taken is finished by _settle: on a retry,
                # or when the KME starts.
                parts = self.source.read(missing)  # KeyError -> refused, nothing changed
                try:  # the bytearrays go to SQLite as they are: no immutable copy left to wipe
                    self.reservations.reserve(kid, master, slave, size, sids, dict(zip(missing, parts)))
                finally:
                    for p in parts:
                        _wipe(p)
                try:
                    taken = self.source.take(missing)
                except KeyError:  # taken by another process since the read: undo, refuse
                    self.reservations.drop(kid, missing)
                    raise
                for p in taken:
                    _wipe(p)
                self.reservations.settle(missing)
                self._settle(self.reservations.unsettled(sids))  # held units cut short earlier

    # -- Get key with key IDs (5.4) -----------------------------------------------
    def dec_keys(self, caller: str, master: str, key_ids: list[object]) -> dict:
        self._check_pair(caller, master, "master_SAE_ID")
        if not key_ids:
            raise KmeError(400, "key_IDs must name at least one key")
        if len(key_ids) > self.config.max_key_per_request:
            raise KmeError(400, f"at most {self.config.max_key_per_request} key_IDs per request")
        clean = []
        for k in key_ids:
            try:
                clean.append(str(uuid.UUID(str(k))))
            except ValueError:
                raise KmeError(400, "key_ID is not a UUID", [{"key_ID": str(k)[:64]}]) from None
        if len(set(clean)) != len(clean):
            raise KmeError(400, "key_IDs repeats a key_ID")
        keys = self.reservations.pop(clean, master=master, slave=caller)
        out = []
        for kid, key in zip(clean, keys):
            out.append({"key_ID": kid, "key": base64.b64encode(key).decode()})
            _wipe(key)
        self.stats.keys_served_dec += len(out)
        self._served("dec_keys", len(out))
        log.info("dec_keys: %d keys for %s from %s", len(out), caller, master)
        return {"keys": out}


_INT_RE = re.compile(r"[+-]?[0-9]{1,30}")


def _as_int(value: object, name: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool):
        raise KmeError(400, f"{name} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        v = value.strip()
        # ASCII digits with one optional sign: str.isdigit() alone also admits "²" and int()
        # then raised ValueError, a 503 instead of a 400 (found by bench/fuzz); the length
        # cap keeps int() below Python's 4300-digit conversion limit
        if _INT_RE.fullmatch(v):
            return int(v)
    raise KmeError(400, f"{name} must be an integer, got {str(value)[:32]!r}")


# -- HTTP layer ---------------------------------------------------------------------

def _caller(request: web.Request) -> str:
    cert = request.transport.get_extra_info("peercert") if request.transport else None
    if not cert:
        raise KmeError(401, "a client certificate is required")
    for rdn in cert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    raise KmeError(401, "client certificate has no common name (SAE ID)")


async def _json_body(request: web.Request) -> dict:
    if not request.can_read_body:
        return {}
    return parse_json_body(await request.read())


def parse_json_body(raw: bytes) -> dict:
    """A request body as a JSON object, or KmeError 400 (never another exception)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[..." (bench/fuzz)
        raise KmeError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise KmeError(400, "request body must be a JSON object")
    return body


def _post_param(body: dict, query, name: str) -> object:
    """``number``/``size`` of a POST Get key: from the JSON body (5.3, 6.2), or from the query
    string when a client put them there. They were ignored there, so such a client got
    default-size keys without a word; a query value that contradicts the body is a 400."""
    if name not in query:
        return body.get(name)
    if name in body and body[name] is not None and str(body[name]) != query[name]:
        raise KmeError(400, f"{name} is given twice, {query[name]!r} in the query and "
                            f"{str(body[name])[:32]!r} in the body")
    return body.get(name) if body.get(name) is not None else query[name]


def dec_key_ids(body: dict) -> list[object]:
    """The ``key_IDs`` of a Get key with key IDs body (ETSI GS QKD 014 5.4, 6.4), or KmeError 400."""
    items = body.get("key_IDs")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise KmeError(400, "key_IDs must be a list of {\"key_ID\": ...} objects")
    return [i.get("key_ID") for i in items]


def make_app(kme: Kme) -> web.Application:
    """The aiohttp application serving ``kme`` (TLS is set up by the caller)."""

    def refused(exc: KmeError) -> web.Response:
        kme.stats.requests_refused[exc.status] = kme.stats.requests_refused.get(exc.status, 0) + 1
        return exc.response()

    async def call(fn, *args):
        # Key hand-out may wait on the peer KME: keep the event loop free.
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def status(request: web.Request) -> web.Response:
        try:
            return web.json_response(kme.status(_caller(request), request.match_info["sae"]))
        except KmeError as exc:
            return refused(exc)

    async def enc_keys(request: web.Request) -> web.Response:
        try:
            caller = _caller(request)
            q = request.query
            if request.method == "POST":
                body = await _json_body(request)
                args = (_post_param(body, q, "number"), _post_param(body, q, "size"),
                        body.get("additional_slave_SAE_IDs"), body.get("extension_mandatory"),
                        body.get("extension_optional"))
            else:
                args = (q.get("number"), q.get("size"), None, None, None)
            return web.json_response(await call(kme.enc_keys, caller, request.match_info["sae"], *args))
        except KmeError as exc:
            return refused(exc)

    async def dec_keys(request: web.Request) -> web.Response:
        try:
            caller = _caller(request)
            if request.method == "POST":
                ids = dec_key_ids(await _json_body(request))
            else:
                ids = request.query.getall("key_ID", [])
            return web.json_response(await call(kme.dec_keys, caller, request.match_info["sae"], ids))
        except KmeError as exc:
            return refused(exc)

    async def peer_reserve(request: web.Request) -> web.Response:
        # KME to KME (standalone `qkd kme`, link.kme_link.HttpsPeer): only the peer KME's
        # certificate may reserve; not part of ETSI GS QKD 014, which leaves this open
        try:
            caller = _caller(request)
            if caller != kme.config.peer_kme_id:
                raise KmeError(401, f"only the peer KME {kme.config.peer_kme_id!r} may reserve keys")
            body = await _json_body(request)
            master, slave, keys = body.get("master_SAE_ID"), body.get("slave_SAE_ID"), body.get("keys")
            if not isinstance(master, str) or not isinstance(slave, str) or not isinstance(keys, list):
                raise KmeError(400, "expected master_SAE_ID, slave_SAE_ID and a list of keys")
            try:
                await call(kme.reserve_for_peer, master, slave, keys)
            except (KeyError, TypeError, ValueError) as exc:
                raise KmeError(400, f"reservation refused: {exc!r}") from None
            return web.json_response({"reserved": len(keys)})
        except KmeError as exc:
            return refused(exc)

    @web.middleware
    async def errors(request: web.Request, handler):
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400:  # routing errors still answer with an Error object
                return web.json_response({"message": exc.reason}, status=exc.status)
            raise
        except Exception:
            log.exception("KME handler failed")
            return web.json_response({"message": "internal KME error"}, status=503)

    app = web.Application(middlewares=[errors])
    app.router.add_get("/api/v1/keys/{sae}/status", status)
    app.router.add_route("GET", "/api/v1/keys/{sae}/enc_keys", enc_keys)
    app.router.add_route("POST", "/api/v1/keys/{sae}/enc_keys", enc_keys)
    app.router.add_route("GET", "/api/v1/keys/{sae}/dec_keys", dec_keys)
    app.router.add_route("POST", "/api/v1/keys/{sae}/dec_keys", dec_keys)
    app.router.add_route("POST", PEER_RESERVE_PATH, peer_reserve)
    return app


def server_ssl_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """TLS 1.2+ server context that asks for (and verifies) a client certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    ctx.verify_mode = ssl.CERT_OPTIONAL  # no cert -> the spec's 401, a bad cert -> handshake fails
    return ctx


class KmeServer:
    """Runs a KME's HTTPS server on its own thread and event loop."""

    def __init__(self, kme: Kme, ssl_context: ssl.SSLContext, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.kme, self.ssl_context, self.host, self.port = kme, ssl_context, host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def start(self, timeout_s: float = 10.0) -> int:
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._runner = web.AppRunner(make_app(self.kme), access_log=None)
                loop.run_until_complete(self._runner.setup())
                site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
                loop.run_until_complete(site.start())
                self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            except BaseException as exc:  # reported to start()
                error.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"kme-{self.kme.config.kme_id}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s):
            raise TimeoutError(f"KME {self.kme.config.kme_id} did not start within {timeout_s} s")
        if error:
            raise error[0]
        return self.port

    def stop(self) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> KmeServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Two-step commit of a block's keys over the channel, and its crash recovery.

What it is for: make a block's keys usable on both nodes or on neither, even
when either node is killed at any instant. Alice coordinates.

Normal run (each store step is one SQLite transaction, see ``link.keystore``)::

    Alice: prepare(b) ── PREPARE b ──► Bob: prepare(b)   (Bob's key is in memory
    Alice: commit(b)  ◄── PREPARED b ─                    after his PA: ``offer``)
    Alice            ── COMMIT b ───► Bob: commit(b)
    Alice: finalize(b) ◄ COMMITTED b ─

Invariants that recovery relies on:

1. Alice prepares before she sends PREPARE, so Bob prepared ⇒ Alice prepared.
2. Alice commits only after PREPARED, so Alice committed ⇒ Bob prepared
   (durably: Bob writes before he answers).
3. Bob commits only on COMMIT, so Bob committed ⇒ Alice committed.
4. Every store step is idempotent, so duplicate or late messages are harmless.
5. Bob prepares only with key material from his running pipeline; after a
   restart he has none, and refuses (and records an abort for) any PREPARE of a
   block he has no key for.

Recovery (``RESYNC``): whenever Alice starts, and whenever she sees Bob's
``HELLO`` (Bob restarted), she sends her open blocks (prepared, or committed
but not final). Bob settles his side: a block Alice committed he commits (he
holds it prepared by 2); a prepared block Alice does not list he aborts (Alice
never committed it, and after this RESYNC never will); a block Alice lists as
prepared he keeps, preparing it now if his pipeline still holds the key. He
answers with his state of every listed block. Alice then commits and sends
COMMIT for blocks Bob holds prepared, finalizes those Bob committed, and aborts
those Bob does not hold. Either side can crash again anywhere in this; the next
RESYNC starts from the durable states, and by 1-4 they converge to "both
committed" or "neither".

What it must not do: decide anything from an unauthenticated message (the
channel delivers only authenticated ones), or log key bytes.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

from .auth import PAD_BYTES, SEGMENT_WEIGHTS, STREAMS, check_layout
from .channel import Channel
from .keystore import CommitMismatch, KeyStore, KeyStoreIOError
from .messages import Message, MsgType

log = logging.getLogger(__name__)

# Alice refills a stream of the authentication pool from a block only while that stream has
# fewer pads left than this (128 KiB); the rest of the block goes to keys. Each stream is bounded
# by its own high water: a proto stream gets 384 pads a block (512 once the ctrl streams are at
# theirs: the streams refilled share the refill, auth.segment_unit) and, measured, uses ~190 a
# 2^20-bit block on the in-process model and ~360-440 on the rig (bench.soak, 2026-11-25); the
# ctrl streams get 128 and use ~none. When only the emptiest stream was compared (one refill for all or
# none), the ctrl streams' share built up by ~2 MB/h of unused pads (bench.soak). Alice sends
# the per-stream layout of each refill with COMMIT and RESYNC (``KeyStore.auth_layout``).
POOL_HIGH_WATER_PADS = 1 << 14
# A stream's use grows with the messages a block takes, which grow with the block's wall time
# (Bob's frame announcements, so a slower link or a loaded machine uses more): a fixed refill
# fell behind on the rig under load (bench.soak, 2026-11-25: ~440 pads a block against the 384
# it got; the link stopped after 25 min with alice.proto.data exhausted). Below this many pads
# left Alice asks the commit for as much key as brings the stream back to it in one block
# (at most half the block's key beyond auth_refill_bytes: KeyStore.commit), so every stream
# settles at or above it whatever its use.
POOL_LOW_WATER_PADS = 1 << 12

COMMIT_TYPES = {MsgType.PREPARE, MsgType.PREPARED, MsgType.COMMIT, MsgType.COMMITTED,
                MsgType.RESYNC, MsgType.RESYNC_REPLY, MsgType.HELLO}


class CommitMessageError(ValueError):
    """A commit message whose payload does not parse (``Committer.handle`` refuses it)."""


_MISSING = object()
_STATES = ("prepared", "committed")      # KeyStore.open_blocks


def _payload(msg: Message, kind: type):
    try:
        got = json.loads(msg.payload.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise CommitMessageError(f"{msg.mtype.name} block {msg.block_id}: payload is not JSON "
                                 f"({exc})") from exc
    if not isinstance(got, kind):
        raise CommitMessageError(f"{msg.mtype.name} block {msg.block_id}: payload is a "
                                 f"{type(got).__name__}, expected a {kind.__name__}")
    return got


def _layout(got) -> list[int]:
    """The per-stream segment layout of a COMMIT or RESYNC entry, checked (``auth.check_layout``)."""
    if got is _MISSING:
        raise CommitMessageError("auth_layout: missing (a peer from before the per-stream split "
                                 "speaks another protocol version)")
    try:
        return check_layout(got)
    except ValueError as exc:
        raise CommitMessageError(str(exc)) from exc


_SPLIT_KEYS = ("auth_bytes", "n_keys", "key_size_bits")


def _split(got, where: str) -> dict | None:
    """The split of a committed block Alice sends (``KeyStore.commit_summary``), checked; None
    when absent (Bob then refuses to commit the block: ``Committer._bob_commit``)."""
    if got is _MISSING or got is None:
        return None
    if not (isinstance(got, dict) and set(got) == set(_SPLIT_KEYS)
            and all(type(got[k]) is int and got[k] >= 0 for k in _SPLIT_KEYS)):
        raise CommitMessageError(f"{where}: split: expected {{{', '.join(_SPLIT_KEYS)}}} of "
                                 f"non-negative ints, got {got!r}")
    return got


def _resync_listing(raw: dict) -> dict[int, tuple[str, list[int] | None, dict | None]]:
    """RESYNC's ``{block: [state, layout(, split)]}`` checked whole before any of it is acted on."""
    out = {}
    for k, v in raw.items():
        try:
            b = int(k)
        except ValueError:
            raise CommitMessageError(f"RESYNC: block {k!r} is not an integer") from None
        if not (isinstance(v, list) and len(v) in (2, 3) and v[0] in _STATES):
            raise CommitMessageError(f"RESYNC: block {b}: expected [state, auth_layout] with a state "
                                     f"of {_STATES}, got {v!r}")
        split = _split(v[2] if len(v) == 3 else _MISSING, f"RESYNC: block {b}")
        if v[0] == "committed" or v[1] is not None:     # a committed block names its layout
            out[b] = (v[0], _layout(_MISSING if v[1] is None else v[1]), split)
        else:
            out[b] = (v[0], None, None)
    return out


class Committer:
    """The two-step commit endpoint of one node. Feed it messages with ``handle``."""

    def __init__(self, role: str, channel: Channel, store: KeyStore,
                 on_event: Callable[[str, int, dict], None] | None = None) -> None:
        self.role = role
        self.ch = channel
        self.store = store
        self.on_event = on_event
        self._lock = threading.RLock()
        self._offers: dict[int, tuple[bytearray, int]] = {}   # Bob: verified keys awaiting PREPARE
        self._waiting: set[int] = set()                        # Bob: PREPAREs that came first
        self._failed: set[int] = set()
        self.resyncs = 0
        self.refused = 0            # malformed commit messages (handle)

    def _event(self, what: str, block_id: int, **info) -> None:
        if self.on_event is not None:
            self.on_event(what, block_id, info)

    # Alice ---------------------------------------------------------------------------------
    def _refill(self) -> dict:
        """Alice: what this block's commit refills: the streams below their own high water, and
        the key bytes to take, ``auth_refill_bytes`` or, with a stream below the low water, as
        many as give that stream its way back up (a stream gets its weight's share of the
        refill: ``auth.segment_unit``)."""
        left = {s: u["left_pads"] for s, u in self.ch.pool.usage().items()}
        streams = tuple(s for s in STREAMS if left.get(s, 0) < POOL_HIGH_WATER_PADS)
        total_w = sum(SEGMENT_WEIGHTS[s.split(".", 1)[1]] for s in streams)
        want = self.store.auth_refill_bytes
        for s in streams:
            short = POOL_LOW_WATER_PADS - left.get(s, 0)
            if short > 0:
                w = SEGMENT_WEIGHTS[s.split(".", 1)[1]]
                want = max(want, -(-short * total_w // w) * PAD_BYTES)
        return {"refill": streams, "refill_bytes": want}

    def propose(self, block_id: int, key: bytearray, key_bits: int) -> None:
        """Alice: the block verified; hold its key as prepared and ask Bob to prepare."""
        with self._lock:
            self.store.prepare(block_id, key, key_bits)
            self.ch.send(MsgType.PREPARE, block_id)

    def resync(self) -> None:
        """Alice: send her open blocks (with the pool segment of committed ones) to settle them."""
        with self._lock:
            self.resyncs += 1
            opened = self.store.open_blocks()
            self.ch.send(MsgType.RESYNC, 0, json.dumps(
                {str(k): [v, self.store.auth_layout(k), self.store.commit_summary(k)]
                 for k, v in opened.items()}).encode())

    def _send_commit(self, block_id: int) -> None:
        # the split lets Bob refuse a commit that would give him other bytes under the same
        # key IDs (his [protocol] auth_refill_bytes or key_size_bits not Alice's)
        self.ch.send(MsgType.COMMIT, block_id, json.dumps(
            {"auth_layout": self.store.auth_layout(block_id),
             "split": self.store.commit_summary(block_id)}).encode())

    def _bob_commit(self, block_id: int, layout: list[int], split: dict | None) -> int:
        if split is None:
            # Alice's refill varies with her pools (_refill): without her split Bob could only
            # guess its size from his own auth_refill_bytes and fill his pool otherwise
            raise CommitMessageError(f"block {block_id}: the commit carries no split (Alice's "
                                     "refill and keys), which Bob needs to split the block alike")
        try:
            return self.store.commit(block_id, layout, expect=split)
        except CommitMismatch as exc:     # rolled back: nothing written, the block stays prepared
            raise CommitMessageError(str(exc)) from exc

    # Bob ---------------------------------------------------------------------------------------
    def offer(self, block_id: int, key: bytearray, key_bits: int) -> None:
        """Bob: his pipeline finished the block; prepare when Alice asks (or now if she did)."""
        with self._lock:
            if block_id in self._waiting:
                self._waiting.discard(block_id)
                self._bob_prepare(block_id, key, key_bits)
            else:
                self._offers[block_id] = (key, key_bits)

    def fail(self, block_id: int, reason: str) -> None:
        """Bob: his pipeline gave up on the block; refuse its PREPARE."""
        with self._lock:
            self._failed.add(block_id)
            if block_id in self._waiting:
                self._waiting.discard(block_id)
                self._refuse(block_id, reason)

    def _bob_prepare(self, block_id: int, key: bytearray, key_bits: int) -> None:
        try:
            self.store.prepare(block_id, key, key_bits)
        except KeyStoreIOError:  # the file failed (disk full, corrupt): stop the node, do not refuse quietly
            raise
        except Exception as exc:  # already aborted here: refuse
            self._refuse(block_id, str(exc))
            return
        finally:
            key[:] = bytes(len(key))
        self.ch.send(MsgType.PREPARED, block_id, b"\x01")

    def _refuse(self, block_id: int, reason: str) -> None:
        st = self.store.state(block_id)
        if st not in ("committed", "final", "prepared"):
            self.store.abort(block_id, reason)
        self.ch.send(MsgType.PREPARED, block_id, b"\x00")

    # dispatch ----------------------------------------------------------------------------------
    def handle(self, msg: Message) -> None:
        """Act on one commit message. A malformed one (it authenticated, so the peer runs other
        code) is refused: nothing is committed or aborted, ``refused`` counts it and the
        event ``refused`` names what was wrong; the node keeps running."""
        with self._lock:
            try:
                getattr(self, f"_on_{msg.mtype.name.lower()}")(msg)
            except CommitMessageError as exc:
                self.refused += 1
                log.error("%s from %s refused: %s", msg.mtype.name, msg.sender, exc)
                self._event("refused", msg.block_id, message=msg.mtype.name, reason=str(exc))

    def _on_hello(self, msg: Message) -> None:
        if self.role == "alice":
            self.resync()

    def _on_prepare(self, msg: Message) -> None:          # Bob
        b = msg.block_id
        st = self.store.state(b)
        if st in ("prepared", "committed", "final"):
            self.ch.send(MsgType.PREPARED, b, b"\x01")
        elif st == "aborted" or b in self._failed:
            self._refuse(b, "pipeline failed")
        elif b in self._offers:
            key, bits = self._offers.pop(b)
            self._bob_prepare(b, key, bits)
        else:
            self._waiting.add(b)

    def _on_prepared(self, msg: Message) -> None:         # Alice
        b = msg.block_id
        st = self.store.state(b)
        if msg.payload == b"\x01":
            if st == "prepared":
                n = self.store.commit(b, **self._refill())
                self._event("committed", b, keys=n)
            if st in ("prepared", "committed"):
                self._send_commit(b)
        elif st == "prepared":
            self.store.abort(b, "peer refused")
            self._event("aborted", b, reason="peer refused to prepare")

    def _on_commit(self, msg: Message) -> None:           # Bob
        b = msg.block_id
        got = _payload(msg, dict)
        n = self._bob_commit(b, _layout(got.get("auth_layout", _MISSING)),
                             _split(got.get("split", _MISSING), f"COMMIT block {b}"))
        self._event("committed", b, keys=n)
        self.ch.send(MsgType.COMMITTED, b)

    def _on_committed(self, msg: Message) -> None:        # Alice
        self.store.finalize(msg.block_id)
        self._event("final", msg.block_id)

    def _on_resync(self, msg: Message) -> None:           # Bob
        listed = _resync_listing(_payload(msg, dict))
        alice = {b: v[0] for b, v in listed.items()}
        self.resyncs += 1
        for b, st in self.store.open_blocks().items():
            if st == "prepared" and b not in alice:
                self.store.abort(b, "not held by Alice at resync")
                self._event("aborted", b, reason="resync")
        reply = {}
        for b, ast in alice.items():
            mine = self.store.state(b)
            if ast == "committed" and mine == "prepared":
                try:
                    n = self._bob_commit(b, listed[b][1], listed[b][2])
                except CommitMessageError as exc:
                    # this block only (nothing of it written; it stays prepared, and Alice is told
                    # so): the other blocks are settled and the reply goes out
                    self.refused += 1
                    log.error("RESYNC from %s: block %d refused: %s", msg.sender, b, exc)
                    self._event("refused", b, message="RESYNC", reason=str(exc))
                else:
                    self._event("committed", b, keys=n)
                    mine = "committed"
            elif ast == "prepared" and mine is None and b in self._offers:
                key, bits = self._offers.pop(b)
                self.store.prepare(b, key, bits)
                key[:] = bytes(len(key))
                mine = "prepared"
            reply[str(b)] = mine or "none"
        for key, _ in self._offers.values():         # Alice's pipeline restarted: drop the rest
            key[:] = bytes(len(key))
        self._offers.clear()
        self._waiting.clear()
        self.ch.send(MsgType.RESYNC_REPLY, 0, json.dumps(reply).encode())

    def _on_resync_reply(self, msg: Message) -> None:     # Alice
        bob = {int(k): v for k, v in json.loads(msg.payload.decode()).items()}
        for b, mine in self.store.open_blocks().items():
            if b not in bob:
                continue          # opened after this RESYNC was sent; the normal path settles it
            theirs = bob[b]
            if theirs == "committed":
                if mine == "prepared":     # cannot happen by invariant 3; keep both equal anyway
                    log.error("block %d: Bob committed while Alice only prepared", b)
                    self.store.commit(b)
                self.store.finalize(b)
                self._event("final", b)
            elif theirs == "prepared":
                if mine == "prepared":
                    n = self.store.commit(b, **self._refill())
                    self._event("committed", b, keys=n)
                self._send_commit(b)
            else:
                if mine == "prepared":
                    self.store.abort(b, "Bob does not hold it")
                    self._event("aborted", b, reason="resync: peer lacks the block")
                else:
                    log.error("block %d: Alice committed but Bob reports %s", b, theirs)

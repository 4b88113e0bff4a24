"""Reconciliation of every block in flight over one coalesced channel message per direction per tick.

What it is for: Cascade needs several hundred round trips per block (Bob's
messages in ``postproc_c.make_side("cascade")`` run in memory, 3 seeds: 245-661
at 2^18 bits and 358-845 at 2^20, QBER 1-8 %, default 2^16-bit frames). Run one
block at a time and the link is bound by the round-trip time, not by the CPU
(a wall-clock profile showed both nodes waiting in poll). So each node has one
``ReconMux`` thread that owns the reconciliation sides (``postproc_c.make_side``)
of all blocks in flight: each tick it feeds every message of the peer's last
batch to its side, collects every side's outgoing messages and sends them as one
``RECON_BATCH`` channel message (one Wegman-Carter tag, one sequence number, one
ACK for all of them). With ``k`` blocks in flight the channel carries one message
per direction per round trip instead of ``k``, and ``k`` blocks progress per
round trip (DESIGN.md: "many blocks can be in flight at once so round trips do
not limit throughput").

Batch payload: items back to back, each ``u64 block_id | u32 length | bytes``
(big-endian header, the side's own message as is). A malformed batch is refused
with ``PayloadError`` as a whole.

What it must not do: touch key bits (it only moves the sides' public messages),
block the channel's I/O thread, which hands it the peer's batches directly
(``feed_batch`` only queues), or call a side after its
block removed it (``remove`` waits for the tick in progress).
"""

from __future__ import annotations

import collections
import queue
import struct
import threading
import time
from collections.abc import Callable

from .payload import PayloadError

_ITEM = struct.Struct(">QI")
_FINISHED_MEMORY = 4096         # block IDs remembered as finished (late messages dropped)
_PENDING_MAX_S = 120.0          # messages for a block that never registers are dropped after this


def pack_batch(items: list[tuple[int, bytes]]) -> bytes:
    parts = []
    for bid, msg in items:
        parts.append(_ITEM.pack(bid, len(msg)))
        parts.append(bytes(msg))
    return b"".join(parts)


def unpack_batch(data: bytes | memoryview) -> list[tuple[int, bytes]]:
    mv = memoryview(data)
    out = []
    pos = 0
    while pos < len(mv):
        if pos + _ITEM.size > len(mv):
            raise PayloadError(f"batch item header at byte {pos} runs past the end ({len(mv)} bytes)")
        bid, n = _ITEM.unpack_from(mv, pos)
        pos += _ITEM.size
        if pos + n > len(mv):
            raise PayloadError(f"batch item of block {bid} ({n} bytes) runs past the end")
        out.append((bid, bytes(mv[pos:pos + n])))
        pos += n
    return out


class _Entry:
    __slots__ = ("bid", "side", "on_done", "error", "finished")

    def __init__(self, bid: int, side, on_done: Callable[[BaseException | None], None]) -> None:
        self.bid = bid
        self.side = side
        self.on_done = on_done
        self.error: BaseException | None = None
        self.finished = False


class ReconMux:
    """One node's multiplexer of reconciliation sides. ``send(payload)`` sends a RECON_BATCH."""

    def __init__(self, send: Callable[[bytes], None], stop: threading.Event,
                 errors: tuple[type[BaseException], ...] = (ValueError,)) -> None:
        self._send = send
        self._stop = stop
        self._errors = errors
        self._in: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._sides: dict[int, _Entry] = {}
        self._pending: dict[int, list] = {}
        self._pending_t: dict[int, float] = {}
        self._finished: collections.OrderedDict[int, None] = collections.OrderedDict()
        self.batches_sent = 0
        self.batches_received = 0
        self.items_sent = 0
        self.items_received = 0

    # called from other threads ----------------------------------------------------------------
    def add(self, bid: int, side, on_done: Callable[[BaseException | None], None]) -> None:
        """Register ``side`` of block ``bid``; ``on_done(error_or_None)`` when it finished."""
        with self._lock:
            self._sides[bid] = _Entry(bid, side, on_done)
        self._in.put(None)                   # wake the loop: the side may have a first message

    def remove(self, bid: int) -> None:
        """Stop serving block ``bid`` (its block ended or aborted); waits for a tick in progress."""
        with self._lock:
            self._sides.pop(bid, None)
            self._mark_finished(bid)

    def feed_batch(self, payload: bytes) -> None:
        """A RECON_BATCH from the peer (the channel's I/O thread, ``Channel.direct``; or the
        dispatcher): only queued for the loop, so the caller never waits."""
        self._in.put(payload)

    def active(self) -> int:
        with self._lock:
            return len(self._sides)

    # the loop ----------------------------------------------------------------------------------
    def run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._in.get(timeout=0.1)
            except queue.Empty:
                self._purge_pending()
                continue
            items = [first]
            while True:            # coalesce everything that arrived meanwhile
                try:
                    items.append(self._in.get_nowait())
                except queue.Empty:
                    break
            self._tick([x for x in items if x is not None])

    def _tick(self, batches: list[bytes]) -> None:
        out: list[tuple[int, bytes]] = []
        done: list[_Entry] = []
        with self._lock:
            for payload in batches:
                self.batches_received += 1
                try:
                    msgs = unpack_batch(payload)
                except PayloadError:
                    # authenticated but malformed: a bug on the peer; its blocks time out
                    continue
                for bid, msg in msgs:
                    self.items_received += 1
                    e = self._sides.get(bid)
                    if e is None:
                        if bid not in self._finished:
                            self._pending.setdefault(bid, []).append(msg)
                            self._pending_t.setdefault(bid, time.monotonic())
                        continue
                    self._feed(e, msg)
            for e in list(self._sides.values()):
                if e.finished:
                    continue
                if e.bid in self._pending:
                    self._pending_t.pop(e.bid, None)
                    for msg in self._pending.pop(e.bid):
                        self._feed(e, msg)
                if e.error is None:
                    try:
                        while (msg := e.side.next_message()) is not None:
                            out.append((e.bid, msg))
                    except self._errors as exc:
                        e.error = exc
                if e.error is not None or e.side.done:
                    e.finished = True
                    done.append(e)
                    del self._sides[e.bid]
                    self._mark_finished(e.bid)
        if out:
            self._send(pack_batch(out))
            self.batches_sent += 1
            self.items_sent += len(out)
        for e in done:
            e.on_done(e.error)

    def _feed(self, e: _Entry, msg: bytes) -> None:
        if e.error is not None:
            return
        try:
            e.side.feed(msg)
        except self._errors as exc:
            e.error = exc

    def _mark_finished(self, bid: int) -> None:
        self._finished[bid] = None
        self._pending.pop(bid, None)
        self._pending_t.pop(bid, None)
        while len(self._finished) > _FINISHED_MEMORY:
            self._finished.popitem(last=False)

    def _purge_pending(self) -> None:
        now = time.monotonic()
        with self._lock:
            for bid, t in list(self._pending_t.items()):
                if now - t > _PENDING_MAX_S:
                    self._pending.pop(bid, None)
                    self._pending_t.pop(bid, None)

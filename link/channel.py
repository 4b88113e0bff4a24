"""The authenticated classical channel between the Alice and Bob nodes (ZeroMQ).

What it is for: carry protocol messages reliably and authentically, and
refuse everything else. Two *lanes*, each its own ZeroMQ socket, so an abort
never queues behind bulk protocol traffic (after jupyter_client's separate
control channel): ``proto`` (sifting, reconciliation, commit) and ``ctrl``
(abort, stop). Telemetry goes on the node's own PUB socket (``link.node``),
not through here.

Rules (DESIGN.md, "Classical channel"):

* Every frame carries version, type, block ID, per-direction sequence number
  and a Wegman–Carter tag (``link.auth``). There is no option to skip the tag.
* A frame with a bad tag (corrupt, forged, wrong pre-shared key) is dropped
  and counted as ``bad_tag``; a frame whose sequence number is not above the
  last accepted one as ``replayed`` (or, when it lies in the range the peer
  announced it is resending, as a go-back-N ``duplicates`` copy, counted but
  not alarmed: see ``_send_ack``); one that skips ahead
  (reordered, or a message before it was lost) as ``out_of_sequence``. Each
  raises an alarm through ``on_alarm``; none is ever handed to the application.
* Loss is repaired by go-back-N retransmission of the *same bytes* (same
  sequence number, same pad) until the peer's cumulative ACK covers them;
  nothing secret is re-derived. ACKs have their own authenticated sequence
  streams (gaps allowed, replays refused) so a lost ACK costs nothing; one
  ACK covers every frame the I/O thread drained in one pass. The retry timer
  adapts to the measured round trip (RFC 6298, never below ``retry_s``), so a
  loaded machine does not resend frames that were only late.
* A frame whose pad the node does not hold *yet* (the peer already uses a
  pool segment that our store appends when our node handles that block's
  COMMIT) is re-checked after re-reading the pool, else dropped as
  ``no_pad_yet`` (not ``bad_tag``): the retransmission delivers it. A later
  frame that arrives once the pad is in skips over the one we dropped: it is
  dropped too and counted as ``after_no_pad``, not alarmed (we made the gap).
* After a restart a node opens each lane with ``HELLO`` at a sequence number above its
  durable reservation and above any receive fence the peer holds on it
  (``AuthPool.hello_seq``); the HELLO carries our last accepted and floor sequence numbers of
  the peer's data stream on that lane. The floor is our previous run's durable receive fence
  (``link.auth``): nothing at or below it is accepted (``below_floor``, counted, not alarmed),
  so a power cut that lost ``recv_last`` does not let a replay through. The peer, on that HELLO,
  drops its frames we accepted and re-sends the rest above the floor: ``RESUME`` (old seqs
  lo..lo+n-1 follow) and each frame re-tagged on a new sequence number, in order (``_resume``;
  not needed when our peer's run syncs on its own HELLO). ``HELLO`` and ``RESUME`` are the only
  messages allowed to jump forward; until one of them is accepted no other frame of the peer
  is (``before_sync``, counted, not alarmed): what the peer sent our previous run comes again
  after its RESUME. The application sees HELLO (the node then resynchronises blocks), never
  RESUME.
* The last ``COMMIT_RESERVE_PADS`` pads of a proto data stream carry only the
  two-step commit's messages and ``HELLO``: a drained stream must still carry the
  COMMIT that refills it. A copy or replay of an accepted frame is acknowledged at
  most once per ``retry_s`` (an ACK spends a pad; such frames need not authenticate).

Threads: one I/O thread owns the sockets (ZeroMQ sockets are not thread safe);
``send`` may be called from any thread (a queue plus a wake-up pipe), ``recv``
blocks on a per-lane queue. The sockets are DEALER–DEALER, which reconnect by
themselves after a peer restarts.

What it must not do: log payloads or tags, act on an unverified frame, or
reuse a sequence number for different bytes.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import struct
import threading
import time
from collections.abc import Callable

import zmq

from .auth import AuthPool, PoolExhausted
from .lograte import LogLimiter, suppressed_note
from .messages import LANE_CODE, TAG_LEN, Message, MsgType, WireError, encode_header, split_frame
from .store_errors import KeyStoreIOError

log = logging.getLogger(__name__)

LANES = tuple(LANE_CODE)
COUNTERS = ("sent", "retransmitted", "received", "acks_sent", "acks_received", "bad_tag",
            "replayed", "out_of_sequence", "malformed", "wrong_sender", "no_pad_yet", "ack_deferred",
            "duplicates", "after_no_pad", "before_sync", "below_floor", "resumed", "renumbered")


# The last pads of each proto data stream are kept for the two-step commit's messages (and
# HELLO): a block's COMMIT must be checkable by the peer with the pads it holds *before* that
# commit (Alice's own streams take a block's segment only once Bob confirmed it, link.auth), so
# a stream drained by other traffic must still carry it. 32: PREPARE + COMMIT of the blocks in
# flight (at most a few) and a RESYNC, many times over.
COMMIT_RESERVE_PADS = 32
COMMIT_RESERVE_TYPES = frozenset({MsgType.HELLO, MsgType.RESUME, MsgType.PREPARE, MsgType.PREPARED,
                                  MsgType.COMMIT, MsgType.COMMITTED, MsgType.RESYNC,
                                  MsgType.RESYNC_REPLY})

RTO_MAX_S = 5.0      # the adaptive retransmission timeout never exceeds this
ERASE_EVERY_S = 2.0  # used authentication pads are erased from memory and the store this often


class ChannelError(RuntimeError):
    """The channel cannot go on (closed, pool exhausted)."""


class ChannelStoreError(ChannelError, KeyStoreIOError):
    """The channel stopped because the node's store file failed under the pool's state (disk
    full): a ``KeyStoreIOError`` too, so the node raises ``key_store``, not an internal error."""


class _Lane:
    def __init__(self, name: str, sock: zmq.Socket) -> None:
        self.name = name
        self.sock = sock
        self.unacked: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        # when the oldest unacknowledged frame was last (re)sent: the retry timer runs
        # from it, so a steady stream of new frames cannot postpone a retransmission
        self.oldest_tx = 0.0
        self.inbox: queue.Queue[Message] = queue.Queue()
        self.need_hello = True
        # set when a send could not be queued (no peer yet, or a full pipe): later
        # frames then wait for the retransmission of the whole window, in order, so
        # the peer never sees frame n+1 before frame n
        self.stalled = False
        self.ack_due = False          # data accepted since the last ACK
        # a copy or replay of a frame already accepted seen since the last ACK: acknowledged at
        # most once per retry_s (``_run``), since such a frame need not authenticate (its pad
        # may be erased) and each ACK spends a pad: a flood of them must not drain our ACK stream
        self.ack_old = False
        # a HELLO or RESUME of the peer accepted since this channel started: before it, no other
        # frame of the peer is accepted (the peer renumbers what it sent to our previous run)
        self.peer_synced = False
        self.hello_seq = -1           # our HELLO of this run on this lane
        self.hello_acked = False      # and the peer acknowledged it
        self.last_ack_tx = 0.0
        # retransmission timeout from measured round trips (RFC 6298, Sec. 2; Karn's rule:
        # no sample from a retransmitted frame), never below the configured retry_s: on a
        # loaded machine the round trip grows and a fixed timer resends frames that
        # were only late, which the peer must count and alarm as replays
        self.tx_time: dict[int, float] = {}
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = 0.0
        # the peer's last authenticated retransmission notice: data frames of the peer with
        # seq in [lo, hi] may arrive twice (go-back-N), so such a duplicate is counted, not alarmed
        self.peer_retx = (1, 0)
        # lowest data seq of the peer we dropped as ``no_pad_yet`` and have not accepted since:
        # a later frame that skips over it was not reordered or lost by anyone but us
        self.no_pad_seq: int | None = None


class Channel:
    """One node's end of the classical channel.

    ``role`` is "alice" or "bob"; ``pool`` the node's ``AuthPool``. Call
    ``bind`` or ``connect``, then ``start``; ``send``/``recv`` from any thread;
    ``close`` at the end.
    """

    def __init__(self, role: str, pool: AuthPool, *, ctx: zmq.Context | None = None,
                 retry_s: float = 0.2, on_alarm: Callable[[str, str], None] | None = None) -> None:
        if role not in ("alice", "bob") or pool.role != role:
            raise ValueError(f"role: {role!r} must be 'alice' or 'bob' and match the pool's role")
        if retry_s <= 0:
            raise ValueError(f"retry_s: must be > 0, got {retry_s}")
        self.role = role
        self.peer = pool.peer
        self.pool = pool
        self.retry_s = float(retry_s)
        self.on_alarm = on_alarm
        self._ctx = ctx or zmq.Context.instance()
        self._lanes: dict[str, _Lane] = {}
        for name in LANES:
            s = self._ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 100_000)
            s.setsockopt(zmq.RCVHWM, 100_000)
            self._lanes[name] = _Lane(name, s)
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.alarms: collections.deque[tuple[float, str, str]] = collections.deque(maxlen=1000)
        self._log_limit = LogLimiter()
        self._out: queue.Queue[tuple[str, bytes, int]] = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        self._wake_pending = False
        os.set_blocking(self._wake_r, False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self.endpoints: dict[str, str] = {}
        self.error: BaseException | None = None
        self.last_peer_activity = 0.0
        # Union bound on the probability that a forged frame has been accepted: every tag this
        # channel checked adds (L + 1) 2^-64, L = 64-bit words of the authenticated bytes (the
        # Wegman-Carter forgery bound of postproc_c.hashing). Written by the I/O thread only;
        # the node charges each block the growth during the block (``Node._run_block``).
        self.forgery_bound = 0.0
        self._last_refresh = 0.0
        self._last_erase = time.monotonic()
        self.pads_erased = 0          # used pads erased from memory and the store file so far
        # message type -> handler called on the I/O thread instead of queueing the message in
        # its lane's inbox (set before start; the handler must only hand the message on, e.g.
        # put it in a queue: the I/O thread waits for it)
        self.direct: dict[int, Callable[[Message], None]] = {}

    # set-up -------------------------------------------------------------------------------
    def bind(self, proto: str = "tcp://127.0.0.1:*", ctrl: str = "tcp://127.0.0.1:*") -> dict[str, str]:
        """Bind both lanes; returns the actual endpoints (OS-chosen ports resolved)."""
        for name, ep in (("proto", proto), ("ctrl", ctrl)):
            s = self._lanes[name].sock
            s.bind(ep)
            self.endpoints[name] = s.getsockopt_string(zmq.LAST_ENDPOINT)
        return dict(self.endpoints)

    def connect(self, proto: str, ctrl: str) -> None:
        for name, ep in (("proto", proto), ("ctrl", ctrl)):
            self._lanes[name].sock.connect(ep)
            self.endpoints[name] = ep

    def start(self) -> None:
        """Open both lanes with HELLO and start the I/O thread."""
        if self._thread is not None:
            raise ChannelError("channel already started")
        for lane in LANES:
            # above every fence the peer's last run raised on our stream (AuthPool.hello_seq),
            # carrying what our previous run accepted of the peer's stream and our floor on it:
            # the peer re-sends what it sent above that on new numbers (RESUME, ``_resume``)
            self.pool.hello_seq(f"{self.role}.{lane}.data")
            peer = f"{self.peer}.{lane}.data"
            hello = struct.pack(">qq", self.pool.recv_last(peer), self.pool.recv_floor(peer))
            self._lanes[lane].hello_seq = self.send(MsgType.HELLO, 0, hello, lane=lane)
        self._thread = threading.Thread(target=self._run, name=f"channel-{self.role}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        # idempotent: a second close must not close the wake-up pipe's descriptor numbers again,
        # which by then may belong to someone else (a ZeroMQ context's signaler: libzmq aborts)
        if self._closed:
            return
        self._stop.set()
        self._wake()
        self._closed = True
        if self._thread is not None:
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                # the pads used since the last pass go too (no check of a peer frame runs now)
                try:
                    self.pads_erased += self.pool.erase_used()
                except Exception as exc:  # noqa: BLE001 - a closed pool or a full disk: next start
                    log.info("channel %s: used pads not erased at close: %s", self.role, exc)
        for lane in self._lanes.values():
            lane.sock.close(linger=0)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # application side --------------------------------------------------------------------------
    def send(self, mtype: MsgType, block_id: int, payload: bytes | bytearray | memoryview = b"",
             lane: str = "proto", wait_s: float = 0.0) -> int:
        """Queue an authenticated message; returns its sequence number.

        When the stream has no pad left, the pool is first re-read (a commit may just
        have added a segment); ``wait_s`` > 0 lets the caller wait that long for a
        commit to refill it (never from the thread that handles commits).
        Raises ``ChannelError`` if the channel failed or the pool stays exhausted.
        """
        if self.error is not None:
            if isinstance(self.error, KeyStoreIOError):
                raise ChannelStoreError(f"channel stopped: {self.error}") from self.error
            raise ChannelError(f"channel failed: {self.error}") from self.error
        if lane not in self._lanes:
            raise ValueError(f"lane: expected one of {LANES}, got {lane!r}")
        if mtype == MsgType.ACK:
            raise ValueError("mtype: ACKs are sent by the channel itself")
        stream = f"{self.role}.{lane}.data"
        headroom = 0 if lane != "proto" or mtype in COMMIT_RESERVE_TYPES else COMMIT_RESERVE_PADS
        end = time.monotonic() + wait_s
        while True:
            with self._send_lock:   # seq allocation and queueing in one order
                try:
                    seq = self.pool.next_send_seq(stream, headroom)
                except PoolExhausted as exc:
                    self.pool.refresh()
                    if self.pool.has_pad(stream, headroom=headroom):
                        continue
                    if time.monotonic() >= end or self._stop.is_set():
                        self._alarm("auth_pool_exhausted", str(exc))
                        raise ChannelError(str(exc)) from exc
                else:
                    frame = self._frame(mtype, lane, stream, seq, block_id, payload)
                    self._out.put((lane, frame, seq))
                    break
            time.sleep(0.02)
        self._wake()
        return seq

    def recv(self, lane: str = "proto", timeout: float | None = None) -> Message | None:
        """Next accepted message of ``lane`` (None after ``timeout`` seconds)."""
        try:
            return self._lanes[lane].inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def pending(self, lane: str = "proto") -> int:
        """Messages sent on ``lane`` and not yet acknowledged."""
        return len(self._lanes[lane].unacked) + self._out.qsize()

    def wait_acked(self, timeout: float = 5.0) -> bool:
        """Wait until every sent message is acknowledged."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._out.empty() and all(not lane.unacked for lane in self._lanes.values()):
                return True
            time.sleep(0.005)
        return False

    def stats(self) -> dict:
        return {**self.counters, "pool": self.pool.usage()}

    # internals ------------------------------------------------------------------------------------
    def _frame(self, mtype: int, lane: str, stream: str, seq: int, block_id: int,
               payload: bytes | bytearray | memoryview) -> bytearray:
        head = encode_header(mtype, self.role, lane, seq, block_id, len(payload))
        # one copy of the payload (it can be hundreds of KB): header, payload and tag laid out
        # in one buffer, the tag computed over a view of the signed part
        n = len(head) + len(payload)
        frame = bytearray(n + TAG_LEN)
        frame[:len(head)] = head
        frame[len(head):n] = payload
        frame[n:] = self.pool.tag(stream, seq, memoryview(frame)[:n])
        return frame

    def _wake(self) -> None:
        # one byte in the pipe is enough to wake the I/O thread: skip the system call (and
        # the GIL hand-over it costs) while a wake-up is already pending
        if self._wake_pending or self._closed:
            return
        self._wake_pending = True
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def _alarm(self, kind: str, detail: str) -> None:
        self.alarms.append((time.time(), kind, detail))
        ok, dropped = self._log_limit.allow(kind)     # a flood of bad frames: bounded log lines
        if ok:
            log.warning("channel %s alarm %s: %s%s", self.role, kind, detail, suppressed_note(dropped))
        if self.on_alarm is not None:
            try:
                self.on_alarm(kind, detail)
            except Exception:  # pragma: no cover - a broken callback must not stop the channel
                log.exception("on_alarm callback failed")

    def _run(self) -> None:
        poller = zmq.Poller()
        for lane in self._lanes.values():
            poller.register(lane.sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(timeout=max(1, int(self.retry_s * 250))))
                if self._wake_r in events:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    # after draining, before flushing: a sender that queued a frame and saw the
                    # flag still set is served by the flush below; one that comes later writes a
                    # fresh byte (clearing before the drain could eat that byte and leave the flag
                    # set with an empty pipe: every later send then waited for the poll timeout)
                    self._wake_pending = False
                self._flush_out()
                for lane in self._lanes.values():
                    if lane.sock in events:
                        while True:
                            try:
                                frame = lane.sock.recv(zmq.NOBLOCK, copy=True)
                            except zmq.Again:
                                break
                            self._on_frame(lane, frame)
                    if lane.ack_due or (lane.ack_old and
                                        time.monotonic() - lane.last_ack_tx >= self.retry_s):
                        # one cumulative ACK for every frame drained above, not one per frame:
                        # fewer pads of the ACK stream, fewer tags to compute and check
                        self._send_ack(lane)
                self._retransmit()
                self._erase_pads()
        except KeyStoreIOError as exc:  # disk full under the pool's state: the node must stop
            self.error = exc
            log.error("channel %s stopped: %s", self.role, exc)
            self._alarm("key_store", f"channel I/O: {exc}")
        except Exception as exc:  # pragma: no cover - reported to the application
            self.error = exc
            log.exception("channel %s I/O thread failed", self.role)

    def _flush_out(self) -> None:
        while True:
            try:
                lane_name, frame, seq = self._out.get_nowait()
            except queue.Empty:
                return
            lane = self._lanes[lane_name]
            now = time.monotonic()
            if not lane.unacked:
                lane.oldest_tx = now
            lane.unacked[seq] = frame
            lane.tx_time[seq] = now
            self.counters["sent"] += 1
            if lane.stalled:
                continue        # keep order: the retry loop sends the whole window
            try:
                lane.sock.send(frame, zmq.NOBLOCK, copy=False)   # zero-copy (pyzmq copies small frames)
            except zmq.Again:
                lane.stalled = True  # no peer connected yet: the retry loop sends it later

    def _retransmit(self) -> None:
        now = time.monotonic()
        for lane in self._lanes.values():
            if lane.unacked and now - lane.oldest_tx >= max(self.retry_s, lane.rto):
                lane.stalled = False
                lane.tx_time.clear()                     # Karn: no round-trip sample from these
                lane.rto = min(max(self.retry_s, lane.rto) * 2, RTO_MAX_S)   # back off
                # announce the range first, on our authenticated ACK stream (same socket, so
                # it arrives before the frames): the peer counts the copies it already holds
                # as duplicates instead of alarming replays
                self._send_ack(lane, retx=(next(iter(lane.unacked)), next(reversed(lane.unacked))))
                for frame in lane.unacked.values():     # go-back-N: same bytes, same pads
                    try:
                        lane.sock.send(frame, zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        lane.stalled = True
                        break
                    self.counters["retransmitted"] += 1
                lane.oldest_tx = now

    def _rtt_sample(self, lane: _Lane, r: float) -> None:
        # RFC 6298 Sec. 2.2-2.3: alpha = 1/8, beta = 1/4, RTO = SRTT + 4 RTTVAR
        if lane.srtt is None:
            lane.srtt, lane.rttvar = r, r / 2
        else:
            lane.rttvar = 0.75 * lane.rttvar + 0.25 * abs(lane.srtt - r)
            lane.srtt = 0.875 * lane.srtt + 0.125 * r
        lane.rto = min(lane.srtt + 4 * lane.rttvar, RTO_MAX_S)

    def _send_ack(self, lane: _Lane, retx: tuple[int, int] | None = None) -> None:
        """Our cumulative ACK for the peer's data; with ``retx`` also a retransmission notice.

        Payload: u64 last in-order data seq of the peer [| u64 lo | u64 hi: we are about to
        resend our data frames lo..hi]. A replayed data frame is indistinguishable from a
        go-back-N copy by its bytes (same seq, same pad, same tag); the notice is what tells
        them apart, and it is authenticated like every frame, so Eve cannot use it to hide
        a replay outside a range we really resend. (Without it, every retransmission after a
        late ACK raised a false ``replayed`` alarm on a loaded machine.)
        """
        stream = f"{self.role}.{lane.name}.ack"
        try:
            seq = self.pool.next_send_seq(stream)
        except PoolExhausted:
            # Not fatal: the commit that refills the pool may be a moment away (its
            # COMMIT is in the application's inbox); the peer retransmits and is
            # acknowledged then. (Making this fatal stopped the link for good when
            # retransmissions under load had used the ACK stream's last pads.)
            self.pool.refresh()
            try:
                seq = self.pool.next_send_seq(stream)
            except PoolExhausted:
                self.counters["ack_deferred"] += 1
                return
        if retx is None:
            lane.ack_due = lane.ack_old = False
        lane.last_ack_tx = time.monotonic()
        last = self.pool.recv_last(f"{self.peer}.{lane.name}.data")
        body = last.to_bytes(8, "big", signed=True)
        if retx is not None:
            body += retx[0].to_bytes(8, "big") + retx[1].to_bytes(8, "big")
        frame = self._frame(MsgType.ACK, lane.name, stream, seq, 0, body)
        try:
            lane.sock.send(frame, zmq.NOBLOCK, copy=True)
            self.counters["acks_sent"] += 1
        except zmq.Again:  # pragma: no cover - the peer will retransmit and we ACK again
            pass

    def _old_frame(self, lane: _Lane, kind: str, mtype: MsgType, seq: int) -> None:
        """A frame of the peer at or below its stream's last accepted seq: never acted on twice."""
        last = self.pool.recv_last(f"{self.peer}.{lane.name}.{kind}")
        if kind == "ack":
            self.counters["replayed"] += 1
            self._alarm("replayed", f"lane {lane.name}: ACK seq {seq} <= last {last}")
            return
        # Inside the range the peer announced it resends: a go-back-N copy of a frame we
        # hold (its ACK was late or lost), counted only; anything else is a replay, alarmed
        lo, hi = lane.peer_retx
        if lo <= seq <= hi:
            self.counters["duplicates"] += 1
        else:
            self.counters["replayed"] += 1
            self._alarm("replayed", f"lane {lane.name}: {mtype.name} seq {seq} <= last accepted {last}")
        lane.ack_old = True

    def _erase_pads(self) -> None:
        """Erase the pads used since the last call (``AuthPool.erase_used``), every ERASE_EVERY_S.

        On this thread: it is the one that checks the peer's tags, so no check runs while a
        mark moves; our own pads are erased only once tagged (the pool tracks that)."""
        now = time.monotonic()
        if now - self._last_erase < ERASE_EVERY_S:
            return
        self._last_erase = now
        self.pads_erased += self.pool.erase_used()

    def _on_resume(self, lane: _Lane, stream: str, seq: int, signed: memoryview, plen: int) -> None:
        """The peer's RESUME (``_resume``): its frames of old seqs lo .. lo + n - 1 follow as
        seq + 1 .. seq + n. Those of them we accepted already (we were in sync: we took the
        peer's HELLO before its RESUME) are skipped: our last accepted moves past their copies,
        which are then refused as duplicates of the retransmission the peer announced."""
        if plen != 16:
            self.counters["malformed"] += 1
            self._alarm("malformed", f"lane {lane.name}: RESUME payload of {plen} bytes")
            return
        lo, n = struct.unpack(">qq", signed[-16:])
        upto = seq
        if lane.peer_synced and n > 0:
            upto += max(0, min(self.pool.recv_last(stream), lo + n - 1) - lo + 1)
        self.pool.accept_recv(stream, upto)
        lane.peer_synced = True
        lane.no_pad_seq = None
        self.counters["resumed"] += 1
        lane.ack_due = True

    def _resume(self, lane: _Lane, r: int, floor: int) -> None:
        """The peer (re)started (its HELLO: it accepted our frames up to ``r``, and refuses all at
        or below ``floor``, its previous run's receive fence). Our frames it has not acknowledged
        are re-sent above the floor: a RESUME naming their old seqs, then each re-tagged on a new
        sequence number, in order; the pads they used stay used and those skipped are never used.
        Not needed when the peer's run takes our HELLO of this run (above any floor, the first of
        the frames, or acknowledged since): it syncs on it and takes the rest in order. Runs on
        the I/O thread."""
        stream = f"{self.role}.{lane.name}.data"
        with self._send_lock:        # no send() allocates a seq meanwhile: the order is kept
            while lane.unacked and next(iter(lane.unacked)) <= r:
                s, _ = lane.unacked.popitem(last=False)
                lane.tx_time.pop(s, None)
            queued = []
            while True:
                try:
                    queued.append(self._out.get_nowait())
                except queue.Empty:
                    break
            ours = [(seq, frame) for name, frame, seq in queued if name == lane.name]
            first = next(iter(lane.unacked), ours[0][0] if ours else None)
            skip = (first is not None and first == lane.hello_seq and first > floor) or \
                (lane.hello_acked and max(r, floor) < lane.hello_seq)
            for item in queued:
                if skip or item[0] != lane.name:
                    self._out.put(item)         # as they were: the next flush sends them
            if skip:
                # the peer's run that sent this HELLO takes (or took) our HELLO of this run, above
                # its floor, and the rest in order: nothing to re-send. (Acknowledged, but not by
                # an earlier run of the peer, whose fence would cover it: its HELLO can come after
                # its ACKs when it was sent before the connection was up and waited for the
                # retransmission.)
                return
            # frames queued but not yet flushed come last in the window
            old = list(lane.unacked.items()) + ours
            self.counters["sent"] += len(ours)
            self.pool.skip_send(stream, floor + 1)
            new: collections.OrderedDict[int, bytes] = collections.OrderedDict()
            lost = 0
            try:
                s0 = self.pool.next_send_seq(stream)
                lo = old[0][0] if old else s0
                new[s0] = self._frame(MsgType.RESUME, lane.name, stream, s0, 0,
                                      struct.pack(">qq", lo, len(old)))
                for i, (_, frame) in enumerate(old):
                    (mtype, _, _, _, block_id, plen), signed, _ = split_frame(frame)
                    try:
                        s = self.pool.next_send_seq(stream)
                    except PoolExhausted:
                        lost = len(old) - i
                        break
                    body = signed[-plen:] if plen else b""
                    new[s] = self._frame(mtype, lane.name, stream, s, block_id, body)
            except PoolExhausted:
                lost = len(old)
            if lost:
                # not one pad left for them: the block protocol settles what they carried
                # (aborts, RESYNC); a pad is never reused for them
                self._alarm("auth_pool_exhausted", f"lane {lane.name}: {lost} unacknowledged frames "
                            f"not re-sent above the restarted peer's floor {floor}: no pad left")
            lane.unacked = new
            lane.tx_time.clear()
            self.counters["renumbered"] += len(old) - lost
        if not new:
            return
        # announce the range (as a retransmission does): copies of frames the peer accepted
        # already, after our HELLO, count as duplicates there, not replays
        lane.stalled = False
        self._send_ack(lane, retx=(next(iter(new)), next(reversed(new))))
        for frame in new.values():
            try:
                lane.sock.send(frame, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                lane.stalled = True
                break
        lane.oldest_tx = time.monotonic()

    def _on_frame(self, lane: _Lane, frame: bytes) -> None:
        try:
            (mtype, sender, lane_name, seq, block_id, plen), signed, tag = split_frame(frame)
        except WireError as exc:
            self.counters["malformed"] += 1
            self._alarm("malformed", f"lane {lane.name}: {exc}")
            return
        if sender != self.peer or lane_name != lane.name:
            self.counters["wrong_sender"] += 1
            self._alarm("wrong_sender", f"lane {lane.name}: frame claims {sender}/{lane_name}")
            return
        kind = "ack" if mtype == MsgType.ACK else "data"
        stream = f"{self.peer}.{lane.name}.{kind}"
        if self.pool.erased(stream, seq):
            # its pad was used (the frame of that seq accepted) and erased: a go-back-N copy or a
            # replay, told apart as below for a checked one; its tag cannot be checked any more
            self._old_frame(lane, kind, mtype, seq)
            return
        if not self.pool.has_pad(stream, seq):
            # The peer already uses pads of a segment our store appends when our node
            # handles the block's COMMIT, which is queued but maybe not handled yet: a
            # frame we cannot check *yet* is not a forgery. Re-read the pool; if the pad
            # is still missing, drop the frame uncounted as bad: the peer's retransmission
            # delivers it once the segment is in.
            now = time.monotonic()
            if now - self._last_refresh >= 0.01:      # a flood of such frames costs one read per 10 ms
                self._last_refresh = now
                self.pool.refresh()
            if not self.pool.has_pad(stream, seq):
                self.counters["no_pad_yet"] += 1
                if kind == "data" and (lane.no_pad_seq is None or seq < lane.no_pad_seq):
                    lane.no_pad_seq = seq
                return
        self.forgery_bound += ((len(signed) + 7) // 8 + 1) * 2.0 ** -64
        if not self.pool.verify(stream, seq, signed, tag):
            self.counters["bad_tag"] += 1
            hint = ""
            if not self.last_peer_activity:
                # nothing of the peer has ever authenticated here: most often the two nodes were
                # given PSK files of different `qkd psk` runs (an attacker's frames look the same)
                hint = (f" (no frame of {self.peer} has authenticated since this node started: were "
                        "both nodes' PSK files written by one `qkd psk` run?)")
            self._alarm("bad_tag", f"lane {lane.name}: {mtype.name} seq {seq} failed authentication{hint}")
            return
        last = self.pool.recv_last(stream)
        self.last_peer_activity = time.monotonic()
        if kind == "ack":
            if seq <= last:
                self._old_frame(lane, kind, mtype, seq)
                return
            self.pool.accept_recv(stream, seq, durable=False)
            self.counters["acks_received"] += 1
            body = bytes(signed[-plen:]) if plen else b""
            if len(body) not in (8, 24):
                self.counters["malformed"] += 1
                self._alarm("malformed", f"lane {lane.name}: ACK payload of {len(body)} bytes")
                return
            acked = int.from_bytes(body[:8], "big", signed=True)
            if len(body) == 24:
                lane.peer_retx = (int.from_bytes(body[8:16], "big"), int.from_bytes(body[16:24], "big"))
            progressed = False
            sample = None
            now = time.monotonic()
            if lane.hello_seq >= 0 and acked >= lane.hello_seq:
                lane.hello_acked = True
            while lane.unacked and next(iter(lane.unacked)) <= acked:
                s, _ = lane.unacked.popitem(last=False)
                t = lane.tx_time.pop(s, None)
                if t is not None:
                    sample = now - t
                progressed = True
            if sample is not None:
                self._rtt_sample(lane, sample)
            elif progressed and lane.srtt is not None:
                # new data acknowledged, but only retransmitted frames (Karn: no sample): the
                # path works again, so drop the exponential backoff (as Linux does on an ACK of
                # new data). Kept backed off, a lossy stretch left the timer at RTO_MAX_S and
                # every later loss cost seconds (measured: a run under 10 % frame faults took
                # 3-58 s, most of it waiting out timers).
                lane.rto = min(lane.srtt + 4 * lane.rttvar, RTO_MAX_S)
            if progressed:
                lane.oldest_tx = now
            return
        if seq <= last:
            self._old_frame(lane, kind, mtype, seq)
            return
        floor = self.pool.recv_floor(stream)
        if seq <= floor:
            # above what we accepted but at or below our previous run's durable fence: a frame the
            # peer sent before it processed our HELLO (it re-sends it above the floor after a
            # RESUME), or a replay of one our previous run accepted before a power cut lost its
            # recv_last. Refused either way, counted, not alarmed.
            self.counters["below_floor"] += 1
            return
        sync = mtype in (MsgType.HELLO, MsgType.RESUME)
        if not lane.peer_synced and not sync:
            # nothing of the peer accepted since we started: what it sent to our previous run
            # (in flight, or accepted there and lost with it) comes again after its RESUME, on
            # new sequence numbers (``_resume``); accepting this one could put it before them
            self.counters["before_sync"] += 1
            return
        if seq != floor + 1 and not sync:
            if lane.no_pad_seq is not None and floor < lane.no_pad_seq < seq:
                # the gap is a frame we dropped ourselves for want of its pad (above): the
                # peer's go-back-N retransmission brings both, in order
                self.counters["after_no_pad"] += 1
                return
            self.counters["out_of_sequence"] += 1
            self._alarm("out_of_sequence", f"lane {lane.name}: {mtype.name} seq {seq}, expected {floor + 1}")
            return
        if mtype == MsgType.RESUME:
            self._on_resume(lane, stream, seq, signed, plen)
            return
        self.pool.accept_recv(stream, seq)        # durable before the application sees it
        lane.peer_synced = True
        if mtype == MsgType.HELLO and plen == 16:
            r, peer_floor = struct.unpack(">qq", signed[-16:])
            self._resume(lane, r, peer_floor)
        if lane.no_pad_seq is not None and lane.no_pad_seq <= seq:
            lane.no_pad_seq = None
        self.counters["received"] += 1
        payload = bytes(signed[-plen:]) if plen else b""
        msg = Message(mtype, sender, lane.name, seq, block_id, payload)
        handler = self.direct.get(mtype)
        if handler is None:
            lane.inbox.put(msg)
        else:
            try:
                handler(msg)
            except Exception:  # pragma: no cover - a broken handler must not stop the channel
                log.exception("direct handler for %s failed", mtype.name)
        lane.ack_due = True

"""The Alice and Bob nodes: from frames and clicks to committed, identical secret keys.

What it is for: run one node of the link. Each node owns a front end
(``link.frontend``), an authenticated channel (``link.channel``), a key store
and the two-step committer (``link.keystore``, ``link.commit``), and a
telemetry PUB socket. The protocol per frame and per block:

* **Acquisition.** Alice draws each frame's pattern (basis with P(Z) = p_z,
  bit, intensity class) from her ``RandomSource`` and hands it to her front
  end; Bob reads ``FrameDetections`` from his.
* **Sifting** (per frame, on the dispatcher thread: it is one C pass). Bob
  announces slots and bases (``SIFT_ANNOUNCE``), Alice answers the match mask
  and intensity classes (``SIFT_MATCH``). Alice decides where blocks end (when
  the block holds ``block_bits`` Z bits, at a frame boundary) and says so in
  the ``SIFT_MATCH`` of the block's last frame, with the block ID; so both
  sides cut identical blocks without a separate agreement.
* **Per block** (a worker thread per block, several blocks in flight, each
  calling the C core with the GIL released): Bob discloses his X-basis bits
  (the test basis) ``PE_DISCLOSE``; Alice counts X errors per intensity and
  answers ``PE_RESULT`` (QBER estimate, reconciliation seed); both run
  reconciliation (``postproc_c.make_side``) over ``RECON`` messages; Alice
  draws fresh 64-bit points and sends ``VERIFY`` with her ``poly_hash`` tags of
  the Z key (as many as eps_cor needs: ``verification_tags``), Bob compares
  and answers ``VERIFY_RESULT``; Alice computes the finite-key length
  (``link.finite_key``) with every leaked bit counted and, if positive, draws
  a fresh Toeplitz seed and sends ``PA_SEED``; both hash
  (``postproc_c.toeplitz_hash``) and hand the key to the committer.
* **Abort rules** (the block yields no key, an alarm gives the reason):
  finite-key length <= 0 (``qber_high`` when the QBER is above the alarm
  threshold, else ``finite_key_zero``), verification failure
  (``verification_failed``), reconciliation failure, authentication failure on
  the channel (``bad_tag``/``replayed``/``out_of_sequence``), peer restart.

What it must not do: log or publish key bits, act on unauthenticated input (the
channel guarantees it), or let either node use a key before the commit.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import zmq

import postproc_c
from drivers.errors import DriverError
from drivers.rng_health import RngHealthError
from postproc_c.sifting import alice_sift, bob_announce, bob_sift, error_counts

from . import finite_key as fk
from .channel import Channel
from .commit import COMMIT_TYPES, Committer
from .keystore import KeyStore, KeyStoreError
from .messages import Message, MsgType
from .payload import decode, encode, require

log = logging.getLogger(__name__)

BLOCK_TYPES = {MsgType.PE_DISCLOSE, MsgType.PE_RESULT, MsgType.RECON, MsgType.VERIFY,
               MsgType.VERIFY_RESULT, MsgType.PA_SEED}


def verification_tags(n_bits: int, eps_cor: float) -> int:
    """How many independent 64-bit ``poly_hash`` tags make two different keys collide with
    probability at most ``eps_cor``: one tag collides with probability at most
    (ceil(n/64) + 1) / 2^64 (``postproc_c.hashing``), independent keys multiply."""
    p_one = (math.ceil(n_bits / 64) + 1) / 2.0**64
    return max(1, math.ceil(math.log(eps_cor) / math.log(p_one)))


@dataclass
class NodeConfig:
    """Protocol settings both nodes must share (the config file's ``[protocol]``)."""

    block_bits: int = 1 << 18           # Z bits per block (cut at a frame boundary)
    key_size_bits: int = 256
    reconciliation: str = "cascade"
    finite_key: str = "2-decoy"          # or "1-decoy"
    eps_sec: float = 1e-10
    eps_cor: float = 1e-15
    p_z: float = 0.9
    intensities: tuple[float, ...] = (0.5, 0.1, 0.0002)
    intensity_probs: tuple[float, ...] = (0.7, 0.2, 0.1)
    auth_refill_bytes: int = 16384      # of each block's key to the auth pool (384 pads/proto stream)
    qber_alarm: float = 0.11
    max_blocks_in_flight: int = 3
    max_frames_in_flight: int = 16
    block_timeout_s: float = 60.0


@dataclass
class BlockResult:
    block_id: int
    frames: tuple[int, int]
    n_z: int = 0
    n_x: int = 0
    qber_x: float = float("nan")
    qber_z: float = float("nan")
    qber_x_by_intensity: list = field(default_factory=list)
    leaked_bits: int = 0
    f: float = float("nan")
    secret_bits: int = 0
    aborted: bool = False
    reason: str = ""
    latency_s: float = 0.0
    emulated_s: float = 0.0
    yields: dict = field(default_factory=dict)
    eps: dict = field(default_factory=dict)      # the block's epsilon budget (finite_key.EpsilonBudget)


def _h(p: float) -> float:
    return fk.binary_entropy(p)


def _release_secrets(packed_key, recon_result, recon_side) -> None:
    """End of a block, key or abort: wipe the packed key and the reconciled key, free the
    reconciliation side now (its C free wipes the C copies) instead of at garbage collection."""
    if packed_key is not None:
        packed_key[:] = 0
    if recon_result is not None:
        recon_result.corrected[:] = 0
    close = getattr(recon_side, "close", None)
    if close is not None:
        close()


class _Block:
    """Sifted bits of one block on one node (secret arrays wiped when done)."""

    def __init__(self) -> None:
        self.z: list[np.ndarray] = []
        self.z_int: list[np.ndarray] = []
        self.x: list[np.ndarray] = []
        self.x_int: list[np.ndarray] = []
        self.n_z = 0
        self.first_frame = -1
        self.last_frame = -1
        self.sent = np.zeros((2, 3), np.int64)     # Alice: slots sent per (basis, intensity)
        self.det = np.zeros((2, 3), np.int64)      # Alice: announced detections per (basis, intensity)
        self.emulated_s = 0.0
        self.events = 0                            # Bob: detection events
        self.multi = 0                             # Bob: events with clicks on two or more detectors

    def add(self, frame: int, bases: np.ndarray, bits: np.ndarray, ints: np.ndarray) -> None:
        if self.first_frame < 0:
            self.first_frame = frame
        self.last_frame = frame
        zm = bases == 0
        self.z.append(bits[zm])
        self.z_int.append(ints[zm])
        self.x.append(bits[~zm])
        self.x_int.append(ints[~zm])
        self.n_z += int(zm.sum())

    def arrays(self):
        cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.uint8))  # noqa: E731
        out = cat(self.z), cat(self.z_int), cat(self.x), cat(self.x_int)
        for a in self.z + self.x:
            a[:] = 0
        self.z, self.x = [], []
        return out


class Node:
    """One node. ``role`` "alice" or "bob"; see the module docstring."""

    def __init__(self, role: str, channel: Channel, store: KeyStore, frontend, rng, config: NodeConfig,
                 *, telemetry: str | None = "tcp://127.0.0.1:*", ctx: zmq.Context | None = None,
                 frame_limit: int | None = None, block_limit: int | None = None,
                 frame_slots: int | None = None,
                 patterns: Callable[[int], tuple] | None = None,
                 on_event: Callable[[dict], None] | None = None) -> None:
        if role not in ("alice", "bob"):
            raise ValueError(f"role: expected 'alice' or 'bob', got {role!r}")
        self.role = role
        self.ch = channel
        self.store = store
        self.fe = frontend
        self.rng = rng
        self.cfg = config
        self.frame_limit = frame_limit
        self.block_limit = block_limit
        self.on_event = on_event
        # Extra ctrl-lane message handlers, registered by services riding on the link
        # (link.kme_link: the KMEs' key reservations). Called on the ctrl thread: return fast.
        self.ctrl_handlers: dict[MsgType, Callable[[Message], None]] = {}
        self.committer = Committer(role, channel, store, on_event=self._commit_event)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._block_q: dict[int, queue.Queue] = {}
        self._q_lock = threading.Lock()
        self._frames: dict[int, tuple] = {}              # Alice: patterns awaiting sifting
        self._anns: dict[int, object] = {}                # Bob: announcements awaiting Alice's mask
        self._frame_sem = threading.Semaphore(config.max_frames_in_flight)
        self._block_sem = threading.Semaphore(config.max_blocks_in_flight)
        self._cur = _Block()
        self._hellos = 0
        self._frame_slots_n = frame_slots
        self._patterns = patterns         # Alice: (basis, bit, intensity) per frame, else drawn from rng
        self._blocks_closed = 0
        self.results: list[BlockResult] = []
        self.alarms: list[dict] = []
        self.counters = {"frames": 0, "detections": 0, "sifted": 0, "sifted_z": 0, "secret_bits": 0,
                         "blocks": 0, "blocks_aborted": 0, "keys_committed": 0}
        self._lock = threading.Lock()
        self.t0 = time.monotonic()
        self.emulated_s = 0.0
        self._pub = None
        self.telemetry_endpoint = None
        if telemetry:
            self._pub = (ctx or zmq.Context.instance()).socket(zmq.PUB)
            self._pub.setsockopt(zmq.LINGER, 0)
            self._pub.bind(telemetry)
            self.telemetry_endpoint = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self._pub_lock = threading.Lock()
        self.ch.on_alarm = self._channel_alarm
        # Bob: calibration.tracking.PolarizationTracking, set by `qkd bob` when the node file says
        # [calibration] track_polarization = true; fed once per block by _track_block (None: off)
        self.tracking = None
        self._last_frame = -1

    # telemetry and alarms ----------------------------------------------------------------------
    def publish(self, kind: str, **data) -> None:
        msg = {"node": self.role, "kind": kind, "t": time.time(), **data}
        if self.on_event is not None:
            self.on_event(msg)
        if self._pub is not None:
            with self._pub_lock:
                try:
                    self._pub.send_string(json.dumps(msg, default=float), zmq.NOBLOCK)
                except zmq.ZMQError:  # pragma: no cover
                    pass

    def alarm(self, kind: str, reason: str, block_id: int | None = None) -> None:
        a = {"alarm": kind, "reason": reason, "block_id": block_id, "t": time.time()}
        with self._lock:
            self.alarms.append(a)
        log.warning("%s alarm %s: %s", self.role, kind, reason)
        self.publish("alarm", **a)

    def _channel_alarm(self, kind: str, detail: str) -> None:
        self.alarm(kind, detail)

    def _commit_event(self, what: str, block_id: int, info: dict) -> None:
        if what == "committed":
            with self._lock:
                self.counters["keys_committed"] += int(info.get("keys", 0))
            self.ch.pool.refresh()       # the block's share of key replenished the auth pool
        self.publish("commit", event=what, block_id=block_id, **info)

    def status(self) -> dict:
        wall = time.monotonic() - self.t0
        with self._lock:
            c = dict(self.counters)
        return {**c, "wall_s": wall, "emulated_s": self.emulated_s, "pool_min_left_pads":
                self.ch.pool.min_left_pads(), "channel": dict(self.ch.counters),
                "store_keys": self.store.count()}

    # life cycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        # Power-up known-answer tests of every C primitive before any key is produced
        # (postproc_c.selftest raises SelfTestError naming the primitive that failed).
        try:
            self.selftest = postproc_c.selftest()
        except postproc_c.SelfTestError as exc:
            self.alarm("selftest_failed", str(exc))
            raise
        self.ch.start()
        if self.role == "alice":
            self.committer.resync()
        for name, fn in (("dispatch", self._dispatch), ("ctrl", self._ctrl),
                         ("acquire", self._acquire_alice if self.role == "alice" else self._acquire_bob),
                         ("telemetry", self._telemetry_loop)):
            t = threading.Thread(target=self._guard(fn), name=f"{self.role}-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def _guard(self, fn):
        def run():
            try:
                fn()
            except RngHealthError as exc:  # stuck or biased random source: no more key from it
                self.alarm("rng_health", str(exc))
                self._stop.set()
            except DriverError as exc:  # an instrument failed (the message names it and the command)
                self.alarm("instrument", f"{fn.__name__}: {exc}")
                self._stop.set()
            except KeyStoreError as exc:  # disk full, corrupt file: the message names the file
                self.alarm("key_store", f"{fn.__name__}: {exc}")
                self._stop.set()
            except Exception as exc:  # a dead thread must be an alarm, not a silent hang
                log.exception("%s thread %s failed", self.role, fn.__name__)
                self.alarm("internal_error", f"{fn.__name__}: {exc}")
                self._stop.set()
        return run

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    def close(self) -> None:
        self.stop()
        self._wipe_pending()
        if self._pub is not None:
            self._pub.close(0)

    def _wipe_pending(self) -> None:
        """Shutdown: wipe what the stopped threads left, Alice's unsifted frame patterns, Bob's
        unannounced detections' bits and the sifted bits of the block not yet started."""
        for pat in list(getattr(self, "_frames", {}).values()):
            for a in pat:
                a[:] = 0
        for ann in list(getattr(self, "_anns", {}).values()):
            ann.bits[:] = 0
        cur = getattr(self, "_cur", None)
        if cur is not None:
            for a in cur.z + cur.x:
                a[:] = 0

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def idle(self) -> bool:
        """Alice: no block in progress or awaiting commit."""
        with self._q_lock:
            busy = bool(self._block_q)
        return not busy and not self.store.open_blocks()

    # message routing ----------------------------------------------------------------------------
    def _queue(self, block_id: int) -> queue.Queue:
        with self._q_lock:
            q = self._block_q.get(block_id)
            if q is None:
                q = self._block_q[block_id] = queue.Queue()
            return q

    def _route(self, m: Message) -> None:
        # A block's queue exists from before its first message can arrive (it is made
        # when the block closes); a message for a finished block is late and dropped.
        with self._q_lock:
            q = self._block_q.get(m.block_id)
        if q is not None:
            q.put(m)
        else:
            log.debug("%s: late %s for finished block %d dropped", self.role, m.mtype.name, m.block_id)

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            m = self.ch.recv("proto", timeout=0.1)
            if m is None:
                continue
            if m.mtype == MsgType.HELLO:
                self._hellos += 1
                if self._hellos > 1:
                    self._peer_restarted()
                self.committer.handle(m)
            elif m.mtype in COMMIT_TYPES:
                self.committer.handle(m)
            elif m.mtype == MsgType.SIFT_ANNOUNCE and self.role == "alice":
                self._on_announce(m)
            elif m.mtype == MsgType.SIFT_MATCH and self.role == "bob":
                self._on_match(m)
            elif m.mtype in BLOCK_TYPES:
                self._route(m)
            elif m.mtype == MsgType.STOP:
                self._stop.set()
            else:
                self.alarm("protocol", f"unexpected {m.mtype.name} for block {m.block_id}")

    def _ctrl(self) -> None:
        while not self._stop.is_set():
            m = self.ch.recv("ctrl", timeout=0.1)
            if m is None or m.mtype == MsgType.HELLO:
                continue
            if m.mtype == MsgType.ABORT:
                self._route(m)
            elif m.mtype == MsgType.STOP:
                self._stop.set()
            elif (handler := self.ctrl_handlers.get(m.mtype)) is not None:
                handler(m)

    def _peer_restarted(self) -> None:
        # A HELLO after the first means the peer lost its in-memory state: abandon
        # blocks in progress (the committer settles prepared ones via RESYNC).
        with self._q_lock:
            qs = list(self._block_q.items())
        for bid, q in qs:
            q.put(Message(MsgType.ABORT, self.ch.peer, "ctrl", -1, bid, b"peer restarted"))
        # The peer's half of the block being filled is gone: start a fresh one. Frame
        # patterns stay (Bob's front end may still deliver those frames); older ones
        # that are never announced are dropped in _on_announce.
        for ann in self._anns.values():
            ann.bits[:] = 0
        self._anns.clear()
        for a in self._cur.z + self._cur.x:
            a[:] = 0
        self._cur = _Block()

    # acquisition ----------------------------------------------------------------------------------
    def _acquire_alice(self) -> None:
        n = int(self.fe.frame_slots)
        f = 0
        while not self._stop.is_set():
            if self.frame_limit is not None and f >= self.frame_limit:
                return
            if self.block_limit is not None and self._blocks_closed >= self.block_limit:
                return
            if not self._frame_sem.acquire(timeout=0.1):
                continue
            if self._patterns is not None:
                basis, bit, inten = self._patterns(f)
            else:
                basis = self.rng.choices(n, [self.cfg.p_z, 1.0 - self.cfg.p_z])
                bit = self.rng.random_bits(n)
                inten = self.rng.choices(n, list(self.cfg.intensity_probs))
            self._frames[f] = (basis, bit, inten)
            self.fe.emit(basis, bit, inten)
            with self._lock:
                self.counters["frames"] += 1
            f += 1

    def _acquire_bob(self) -> None:
        while not self._stop.is_set():
            for det in self.fe.poll(0.1):
                ann = bob_announce(det.slots, det.masks, int(self._frame_slots()),
                                   rng=self.rng.random_words(max(1, (det.slots.size + 63) // 64)))
                self._anns[det.frame_index] = ann
                self._last_frame = max(self._last_frame, int(det.frame_index))
                with self._lock:
                    self.counters["frames"] += 1
                    self.counters["detections"] += int(det.slots.size)
                self.ch.send(MsgType.SIFT_ANNOUNCE, det.frame_index,
                             encode({}, {"slots": ann.slots, "bases": ann.bases}))

    def _frame_slots(self) -> int:
        fs = self._frame_slots_n or getattr(self.fe, "frame_slots", None)
        if fs is None:
            raise ValueError("frame_slots: Bob's front end does not say; pass frame_slots=")
        return int(fs)

    # sifting (dispatcher thread) ----------------------------------------------------------------------
    def _on_announce(self, m: Message) -> None:          # Alice
        f = m.block_id
        # Bob announces frames in order: a pending frame older than this one was lost
        # (or consumed by a Bob that restarted) and will never be announced.
        for old in [k for k in list(self._frames) if k < f]:
            for a in self._frames.pop(old):
                a[:] = 0
            self._frame_sem.release()
        pat = self._frames.pop(f, None)
        if pat is None:
            self.alarm("protocol", f"announcement for unknown frame {f}")
            return
        self._frame_sem.release()
        _, arrays = decode(m.payload)
        slots = require(arrays, "slots", np.uint64)
        bases = require(arrays, "bases", np.uint8, slots.size)
        res = alice_sift(slots, bases, *pat)
        sent = postproc_c.frame_counts(pat[0], pat[2]).astype(np.int64)
        for a in pat:
            a[:] = 0
        blk = self._cur
        blk.add(f, res.bases, res.bits, res.intensities)
        res.bits[:] = 0  # blk.add copied the bits it keeps
        blk.sent += sent
        blk.det += res.detections.astype(np.int64)
        self._watch_signal(f, int(slots.size))
        blk.emulated_s += int(self.fe.frame_slots) / float(self.fe.clock_hz)
        self.emulated_s += int(self.fe.frame_slots) / float(self.fe.clock_hz)
        with self._lock:
            self.counters["detections"] += int(slots.size)
            self.counters["sifted"] += int(res.bits.size)
            self.counters["sifted_z"] += int((res.bases == 0).sum())
        meta = {}
        if blk.n_z >= self.cfg.block_bits and (self.block_limit is None
                                                or self._blocks_closed < self.block_limit):
            bid = self.store.next_block_id()
            meta["close_block"] = bid
            self._cur = _Block()
            self._blocks_closed += 1
            self._start_block(bid, blk)
        self.ch.send(MsgType.SIFT_MATCH, f, encode(meta, {"match": res.match.view(np.uint8),
                                                          "intensities": res.intensities}))

    def _on_match(self, m: Message) -> None:             # Bob
        f = m.block_id
        ann = self._anns.pop(f, None)
        if ann is None:
            self.alarm("protocol", f"sifting mask for unknown frame {f}")
            return
        meta, arrays = decode(m.payload)
        match = require(arrays, "match", np.uint8, ann.slots.size)
        mine = bob_sift(ann, match, require(arrays, "intensities", np.uint8))
        ann.bits[:] = 0
        self._cur.add(f, mine.bases, mine.bits, mine.intensities)
        mine.bits[:] = 0  # _Block.add copied the bits it keeps
        self._cur.events += ann.n_events
        self._cur.multi += ann.n_cross_dropped + int(ann.n_squashed.sum())
        with self._lock:
            self.counters["sifted"] += int(mine.bits.size)
            self.counters["sifted_z"] += int((mine.bases == 0).sum())
        if "close_block" in meta:
            blk, self._cur = self._cur, _Block()
            self._start_block(int(meta["close_block"]), blk)

    def _start_block(self, bid: int, blk: _Block) -> None:
        self._queue(bid)
        fn = self._alice_block if self.role == "alice" else self._bob_block
        t = threading.Thread(target=self._guard(lambda: self._run_block(fn, bid, blk)),
                             name=f"{self.role}-block-{bid}", daemon=True)
        t.start()

    def _run_block(self, fn, bid: int, blk: _Block) -> None:
        t0 = time.monotonic()
        self._block_sem.acquire()
        try:
            res = fn(bid, blk)
        except (postproc_c.Error, ValueError) as exc:
            res = BlockResult(bid, (blk.first_frame, blk.last_frame), aborted=True, reason=str(exc))
            self.alarm("block_error", f"block {bid}: {exc}", bid)
            self._abort_peer(bid, str(exc))
            if self.role == "bob":
                self.committer.fail(bid, str(exc))
        except _BlockAbort as exc:
            res = exc.result
            res.aborted = True
            res.reason = exc.reason
            if exc.alarm:
                self.alarm(exc.alarm, f"block {bid}: {exc.reason}", bid)
            if exc.notify_peer:
                self._abort_peer(bid, exc.reason)
            if self.role == "bob":
                self.committer.fail(bid, exc.reason)
        finally:
            self._block_sem.release()
            with self._q_lock:
                self._block_q.pop(bid, None)
        res.latency_s = time.monotonic() - t0
        with self._lock:
            self.results.append(res)
            self.counters["blocks"] += 1
            if res.aborted:
                self.counters["blocks_aborted"] += 1
            else:
                self.counters["secret_bits"] += res.secret_bits
        self.publish("block", **asdict(res))

    def _recv_block(self, bid: int, want: MsgType, res: BlockResult) -> Message:
        q = self._queue(bid)
        end = time.monotonic() + self.cfg.block_timeout_s
        while True:
            left = end - time.monotonic()
            if left <= 0 or self._stop.is_set():
                raise _BlockAbort(res, f"timed out waiting for {want.name}", "block_timeout",
                                  notify_peer=True)
            try:
                m = q.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            if m.mtype == MsgType.ABORT:
                raise _BlockAbort(res, m.payload.decode(errors="replace") or "peer aborted", None)
            if m.mtype != want:
                if m.mtype == MsgType.RECON:      # a reconciliation message after our side finished
                    continue
                raise _BlockAbort(res, f"expected {want.name}, got {m.mtype.name}", "protocol",
                                  notify_peer=True)
            return m

    def _abort_peer(self, bid: int, reason: str) -> None:
        self.ch.send(MsgType.ABORT, bid, reason.encode(), lane="ctrl")

    # attack and fault monitors (Alice) ----------------------------------------------------------------
    def _watch_signal(self, frame: int, n_det: int) -> None:
        """Loss of signal: a frame with (almost) no detections after frames that had them."""
        avg = getattr(self, "_det_avg", None)
        if avg is not None and avg > 200 and n_det < 0.05 * avg:
            if not getattr(self, "_los", False):
                self._los = True
                self.alarm("loss_of_signal", f"frame {frame}: {n_det} detections, running mean {avg:.0f}")
            return
        self._los = False
        self._det_avg = n_det if avg is None else 0.9 * avg + 0.1 * n_det

    def _watch_yields(self, bid: int, blk: _Block) -> dict:
        """Decoy-state consistency of the block's gains (per intensity, both bases).

        With transmittance eta estimated from the signal gain, Q_k = 1 - exp(-eta mu_k)
        (+ dark counts) for an honest channel (Lo, Ma, Chen, PRL 94, 230504 (2005),
        Eq. 2 with Y_n = 1 - (1-eta)^n). A photon-number-splitting attack that blocks
        single photons makes the decoy gain fall short of that; detector blinding
        removes the dark and vacuum clicks, so the weakest intensity's gain falls
        far below even its signal-proportional part. (Blinding is watched on Bob's
        side: ``_watch_multi_clicks``.)
        """
        sent = blk.sent.sum(axis=0)
        det = blk.det.sum(axis=0)
        mus = self.cfg.intensities
        out = {}
        if len(mus) < 2 or sent[0] == 0 or det[0] == 0:
            return out
        q = det[:len(mus)] / np.maximum(sent[:len(mus)], 1)
        eta = -np.log1p(-min(q[0], 0.999)) / mus[0]
        exp_q = [1.0 - np.exp(-eta * m) for m in mus]
        out["gains"] = [float(v) for v in q]
        out["eta"] = float(eta)
        if det[1] >= 1000:
            ratio = q[1] / exp_q[1]
            out["decoy_ratio"] = float(ratio)
            if abs(ratio - 1.0) > 0.25:
                self.alarm("decoy_yield_inconsistency",
                           f"block {bid}: decoy gain {q[1]:.3e} vs {exp_q[1]:.3e} expected from the "
                           f"signal gain (ratio {ratio:.2f})", bid)
        k = len(mus) - 1
        expect_weak = exp_q[k] * sent[k]
        if expect_weak >= 20 and det[k] < 0.25 * expect_weak:
            self.alarm("decoy_yield_inconsistency",
                       f"block {bid}: {int(det[k])} clicks in {int(sent[k])} weakest-intensity slots, "
                       f"at least {expect_weak:.0f} expected from the signal gain", bid)
        return out

    def _watch_multi_clicks(self, bid: int, blk: _Block) -> bool:
        """Bob: detector blinding removes multi-detector clicks (and dark counts).

        Under the faked-state attack only the detector Eve chooses clicks
        (Lydersen et al., Nat. Photonics 4, 686 (2010)), so events with two or
        more detectors clicking (multi-photon pulses split by Bob's beam
        splitters, dark counts) vanish; an honest receiver sees a fraction of
        order eta*mu/2 of them (about 1e-3 at 25 km).
        """
        if blk.events >= 200_000 and blk.multi < 1e-5 * blk.events:
            self.alarm("detector_blinding", f"block {bid}: {blk.multi} multi-detector clicks in "
                       f"{blk.events} detections (blinded detectors click alone)", bid)
            return True
        return False

    # the block protocol: Alice ------------------------------------------------------------------------
    def _alice_block(self, bid: int, blk: _Block) -> BlockResult:
        cfg = self.cfg
        z, z_int, x, x_int = blk.arrays()
        res = BlockResult(bid, (blk.first_frame, blk.last_frame), n_z=int(z.size), n_x=int(x.size),
                          emulated_s=blk.emulated_s)
        res.yields = self._watch_yields(bid, blk)
        zw = rr = side = None
        try:
            m = self._recv_block(bid, MsgType.PE_DISCLOSE, res)
            _, arr = decode(m.payload)
            bx = require(arr, "x_bits", np.uint8, x.size)
            ec = error_counts(x, bx, np.ones(x.size, np.uint8), x_int)
            x_err = ec.errors[1].astype(np.int64)
            x_n = ec.compared[1].astype(np.int64)
            res.qber_x = float(x_err.sum() / max(1, x_n.sum()))
            with np.errstate(invalid="ignore", divide="ignore"):
                res.qber_x_by_intensity = [float(v) for v in x_err / np.maximum(x_n, 1)]
            qber_est = min(0.49, max(res.qber_x, 0.001))
            seed = int(self.rng.random_words(1)[0])
            if res.qber_x > cfg.qber_alarm:
                self.alarm("qber_high", f"block {bid}: X-basis QBER {res.qber_x:.4f} > {cfg.qber_alarm}",
                           bid)
                self.ch.send(MsgType.PE_RESULT, bid, encode({"abort": "qber_high"}))
                raise _BlockAbort(res, f"QBER {res.qber_x:.4f} above {cfg.qber_alarm}", None)
            self.ch.send(MsgType.PE_RESULT, bid, encode({"qber": qber_est, "seed": seed,
                                                          "method": cfg.reconciliation,
                                                          "x_errors": int(x_err.sum())}))
            side = postproc_c.make_side(cfg.reconciliation, "alice", z, qber_est, seed=seed)
            self._reconcile(bid, side, res)
            rr = side.result()
            res.leaked_bits = int(rr.leaked_bits)
            # verification: fresh points, Alice's tags; 64 bits disclosed per tag, as
            # many independent tags as eps_cor needs for a key of this length
            n_tags = verification_tags(int(z.size), cfg.eps_cor)
            vkeys = [int(k) for k in self.rng.random_words(n_tags)]
            zw = postproc_c.pack_bits(z)
            tags = [postproc_c.poly_hash(zw, z.size, k) for k in vkeys]
            # zw is the input of privacy amplification below: it is wiped when the block ends
            # (finally), not here -- wiping it here made every delivered key all zeros
            self.ch.send(MsgType.VERIFY, bid, encode({"keys": [str(k) for k in vkeys],
                                                      "tags": [str(t) for t in tags]}))
            m = self._recv_block(bid, MsgType.VERIFY_RESULT, res)
            vmeta, _ = decode(m.payload)
            res.leaked_bits += 64 * n_tags
            if not vmeta.get("ok"):
                self.alarm("verification_failed", f"block {bid}: keys differ after reconciliation", bid)
                raise _BlockAbort(res, "verification failed", None)
            res.qber_z = float(vmeta.get("z_errors_total", 0)) / max(1, z.size)
            if res.qber_z > 0:
                res.f = res.leaked_bits / (z.size * _h(res.qber_z))
            # finite-key length
            z_n = tuple(int((z_int == k).sum()) for k in range(len(cfg.intensities)))
            key_m = tuple(int(v) for v in vmeta.get("z_errors", [0] * len(cfg.intensities)))
            ints = len(cfg.intensities)
            fkr = fk.secret_key_length(
                fk.BasisCounts(z_n, key_m), fk.BasisCounts(tuple(int(v) for v in x_n[:ints]),
                                                          tuple(int(v) for v in x_err[:ints])),
                fk.DecoySettings(tuple(cfg.intensities), tuple(cfg.intensity_probs)),
                leak_ec_bits=res.leaked_bits, eps_sec=cfg.eps_sec, eps_cor=cfg.eps_cor,
                protocol=cfg.finite_key)
            ell = int(fkr.ell)
            if fkr.eps is not None:
                res.eps = {**asdict(fkr.eps), "total": fkr.eps.total}
                # the budget the length was computed for must be the one configured
                if fkr.eps.total > (cfg.eps_sec + cfg.eps_cor + fkr.eps.authentication) * (1 + 1e-9):
                    raise _BlockAbort(res, f"epsilon budget {fkr.eps.total:.3g} exceeds "
                                      f"eps_sec + eps_cor", "epsilon_budget", notify_peer=True)
            log.info("block %d: n_z=%d qber_x=%.4f leak=%d ell=%d eps=%s", bid, z.size, res.qber_x,
                     res.leaked_bits, ell, fkr.eps)
            if ell <= 0:
                kind = "qber_high" if res.qber_x > cfg.qber_alarm else "finite_key_zero"
                self.ch.send(MsgType.PA_SEED, bid, encode({"ell": 0, "reason": fkr.reason}))
                self.alarm(kind, f"block {bid}: no secret key ({fkr.reason})", bid)
                raise _BlockAbort(res, fkr.reason or "finite-key length <= 0", None)
            seed_words = self.rng.random_words((z.size + ell - 1 + 63) // 64)
            self.ch.send(MsgType.PA_SEED, bid, encode({"ell": ell}, {"seed": seed_words}))
            key = postproc_c.toeplitz_hash(zw, z.size, seed_words, ell)
            zw[:] = 0
            kb = bytearray(key.view(np.uint8).tobytes())
            key[:] = 0
            self.committer.propose(bid, kb, ell)
            kb[:] = bytes(len(kb))
            res.secret_bits = ell
            return res
        finally:
            z[:] = 0
            _release_secrets(zw, rr, side)

    # the block protocol: Bob ----------------------------------------------------------------------------
    def _bob_block(self, bid: int, blk: _Block) -> BlockResult:
        z, z_int, x, x_int = blk.arrays()
        res = BlockResult(bid, (blk.first_frame, blk.last_frame), n_z=int(z.size), n_x=int(x.size))
        zw = rr = side = None
        try:
            # blinded detectors: Eve chose every click, she knows the key at zero QBER
            # (measured by link.eve_audit): no key from such a block
            if self._watch_multi_clicks(bid, blk):
                raise _BlockAbort(res, "detector blinding suspected", None, notify_peer=True)
            self.ch.send(MsgType.PE_DISCLOSE, bid, encode({}, {"x_bits": x}))
            m = self._recv_block(bid, MsgType.PE_RESULT, res)
            meta, _ = decode(m.payload)
            if "abort" in meta:
                raise _BlockAbort(res, meta["abort"], None)
            side = postproc_c.make_side(meta["method"], "bob", z, float(meta["qber"]), seed=int(meta["seed"]))
            self._reconcile(bid, side, res)
            rr = side.result()
            corrected = rr.corrected
            res.leaked_bits = int(rr.leaked_bits)
            m = self._recv_block(bid, MsgType.VERIFY, res)
            vm, _ = decode(m.payload)
            zw = postproc_c.pack_bits(corrected)
            try:
                keys = [int(k) for k in vm["keys"]]
                tags = [int(t) for t in vm["tags"]]
            except (KeyError, TypeError, ValueError):
                keys, tags = [], []
            ok = (len(keys) == len(tags) == verification_tags(int(corrected.size), self.cfg.eps_cor)
                  and all(postproc_c.poly_hash(zw, corrected.size, k) == t for k, t in zip(keys, tags)))
            # zw feeds privacy amplification below; wiped when the block ends (finally)
            err = corrected != z
            z_errors = [int((err & (z_int == k)).sum()) for k in range(len(self.cfg.intensities))]
            self.ch.send(MsgType.VERIFY_RESULT, bid, encode({"ok": bool(ok and rr.success),
                                                             "z_errors": z_errors,
                                                             "z_errors_total": int(err.sum())}))
            if self.tracking is not None and ok and rr.success:
                self._track_block(bid, blk, int(corrected.size), int(err.sum()), int(x.size), meta)
            if not (ok and rr.success):
                raise _BlockAbort(res, "verification failed", "verification_failed")
            m = self._recv_block(bid, MsgType.PA_SEED, res)
            pm, parr = decode(m.payload)
            ell = int(pm["ell"])
            if ell <= 0:
                raise _BlockAbort(res, pm.get("reason", "finite-key length <= 0"), None)
            seed_words = require(parr, "seed", np.uint64, (corrected.size + ell - 1 + 63) // 64)
            key = postproc_c.toeplitz_hash(zw, corrected.size, seed_words, ell)
            zw[:] = 0
            corrected[:] = 0
            kb = bytearray(key.view(np.uint8).tobytes())
            key[:] = 0
            self.committer.offer(bid, kb, ell)
            res.secret_bits = ell
            return res
        finally:
            z[:] = 0
            _release_secrets(zw, rr, side)

    # polarization tracking (issue 7; calibration.tracking): one call per verified block --------------
    def _track_block(self, bid: int, blk: _Block, n_z: int, errors_z: int, n_x: int, meta: dict) -> None:
        from calibration.polarization import PolarizationError
        from calibration.tracking import BlockCounts

        errors_x = int(meta.get("x_errors", round(float(meta["qber"]) * n_x)))
        counts = BlockCounts(n_z, errors_z, n_x, min(errors_x, n_x), first_frame=blk.first_frame,
                             last_frame=blk.last_frame)
        try:
            self.tracking.on_block(counts, current_frame=self._last_frame)
        except PolarizationError as exc:       # controller held where it is (safe state); loop off
            self.tracking = None
            self.alarm("polarization", str(exc), bid)

    def _reconcile(self, bid: int, side, res: BlockResult) -> None:
        while not side.done:
            while (msg := side.next_message()) is not None:
                self.ch.send(MsgType.RECON, bid, msg)
            if side.done:
                break
            m = self._recv_block(bid, MsgType.RECON, res)
            side.feed(m.payload)
        while (msg := side.next_message()) is not None:     # a last message once done
            self.ch.send(MsgType.RECON, bid, msg)

    # periodic telemetry ---------------------------------------------------------------------------------
    def _telemetry_loop(self) -> None:
        while not self._stop.wait(0.5):
            self.publish("status", **self.status())


class _BlockAbort(Exception):
    def __init__(self, result: BlockResult, reason: str, alarm: str | None,
                 notify_peer: bool = False) -> None:
        super().__init__(reason)
        self.notify_peer = notify_peer
        self.result = result
        self.reason = reason
        self.alarm = alarm

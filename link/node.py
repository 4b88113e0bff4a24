"""The Alice and Bob nodes: from frames and clicks to committed, identical secret keys.

What it is for: run one node of the link. Each node owns a front end
(``link.frontend``), an authenticated channel (``link.channel``), a key store
and the two-step committer (``link.keystore``, ``link.commit``), and a
telemetry PUB socket. The protocol per frame and per block:

* **Acquisition.** Alice draws each frame's pattern (basis with P(Z) = p_z,
  bit, intensity class) from her ``RandomSource`` and hands it to her front
  end, then keeps it packed (``postproc_c.pattern``: four bit planes and the
  class counts, 512 KiB per 2^20 slots) until Bob announces the frame; Bob
  reads ``FrameDetections`` from his.
* **Sifting** (dispatcher thread, one C pass per frame over the events, never
  over the frame's slots). Bob announces slots (uint32) and bases of every
  frame his front end has ready in one ``SIFT_ANNOUNCE``; Alice reads her
  packed pattern at those slots and answers the match masks and intensity
  classes of the same frames in one ``SIFT_MATCH``.
  Alice decides where blocks end (when the block holds ``block_bits`` Z bits,
  at a frame boundary) and lists the closing frames with their block IDs in
  that ``SIFT_MATCH``; so both sides cut identical blocks without a separate
  agreement.
* **Packed end to end.** A block's key never exists as one byte per bit:
  Alice's sifting step (``postproc_c.blockbits.sift_alice_into``) writes the
  match mask and the matched classes straight into the ``SIFT_MATCH`` bit
  planes and the matched events into the block's packed planes (Z key, X test
  bits, intensity classes; ``BlockBits``), Bob's (``sift_bob_into``) reads
  Alice's planes as they came and appends to his. Cascade takes the Z plane as
  64-bit words and returns Bob's corrected key packed; verification, the error
  counts per intensity class (popcounts under the class planes) and privacy
  amplification read the words as they are. (The byte path cost three
  whole-block copies, ~30 MB of fresh memory per 2^22-bit block, and a pack
  per consumer: measured 0.16 -> 0.12 us CPU per secret bit with the rest of
  this change, ``bench/test_bench_engine.py``.)
* **Per block** (a thread per block, up to ``max_blocks_in_flight`` = 16, each
  calling the C core with the GIL released): Bob discloses his X-basis bits
  (the test basis) and his block's cross clicks ``PE_DISCLOSE``; Alice counts X errors per intensity and
  answers ``PE_RESULT`` (QBER estimate, reconciliation seed, method: Cascade or
  LDPC by configuration or, with ``"auto"``, by the estimated QBER); both run
  reconciliation (``postproc_c.make_side``) through the node's ``ReconMux``
  (``link.recon_mux``), which carries the messages of every block in flight in
  one ``RECON_BATCH`` per direction per round trip (one tag, one ACK), so
  Cascade's several hundred round trips per block (250-850 at 2^18-2^20 bits,
  QBER 1-8 %, in-memory count) cost latency, not rate; Alice
  draws fresh 64-bit points and sends ``VERIFY`` with her ``poly_hash`` tags of
  the Z key (as many as eps_cor needs: ``verification_tags``), Bob compares
  and answers ``VERIFY_RESULT``; Alice computes the finite-key length
  (``link.finite_key``) with every leaked bit counted and, if positive, draws
  a fresh Toeplitz seed and sends ``PA_SEED``; both hash
  (``postproc_c.toeplitz_hash``) and hand the key to the committer, whose
  messages a commit thread handles (the store writes thousands of keys per
  block; sifting goes on meanwhile).
* **Abort rules** (the block yields no key, an alarm gives the reason):
  finite-key length <= 0 (``qber_high`` when the QBER is above the alarm
  threshold, else ``finite_key_zero``), verification failure
  (``verification_failed``), reconciliation failure, suspected detector
  blinding (``detector_blinding``, raised and acted on by Bob), a detector dead
  time longer than Bob's dead-time guard (``dead_time``, Bob: his tags show it;
  ``link.slotting``), afterpulses of a detector later than the guard (``afterpulse``,
  Bob: an excess of his same-detector gaps just beyond it; ``link.slotting``), Bob's receiver
  contradicting the analysis' settings (``receiver_split``: the Z share above
  ``receiver_split_z``; ``detector_mismatch``: the X share of 1s beyond
  ``detector_efficiency_ratio_min``; Alice, ``_watch_receiver``), authentication
  failure on the channel (``bad_tag``/``replayed``/``out_of_sequence``), an
  authentication term over its share ``eps_auth`` of the block's epsilon budget
  (``authentication_budget``: forged frames grew the forgery bound; the block aborts, the
  link goes on), peer restart.

What it must not do: log or publish key bits, act on unauthenticated input (the
channel guarantees it), or let either node use a key before the commit.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import zmq

import postproc_c
from drivers.errors import DriverError
from drivers.rng_health import RngHealthError
from postproc_c._binding import words_for
from postproc_c.blockbits import BitPlane, BlockBits, sift_alice_into, sift_bob_into, words_from_bytes
from postproc_c.pattern import PackedPattern, pack_pattern, slot_gaps16, slots_from_gaps16
from postproc_c.pattern import counts as pattern_counts
from postproc_c.pattern import gather as pattern_gather
from postproc_c.sifting import alice_sift, bob_announce

from . import finite_key as fk
from . import frame_epoch, memtrace
from .channel import Channel
from .commit import COMMIT_TYPES, Committer
from .keystore import KeyStore, KeyStoreError
from .lograte import LogLimiter, suppressed_note
from .messages import Message, MsgType
from .payload import PayloadError, decode, encode, require
from .recon_mux import ReconMux
from .resume import FrameResync

log = logging.getLogger(__name__)

ANNOUNCE_MAX_FRAMES = 32          # frames per SIFT_ANNOUNCE (one message, one tag)
BLOCK_TYPES = {MsgType.PE_DISCLOSE, MsgType.PE_RESULT, MsgType.RECON, MsgType.VERIFY,
               MsgType.VERIFY_RESULT, MsgType.PA_SEED}


def verification_tags(n_bits: int, eps_cor: float) -> int:
    """How many independent 64-bit ``poly_hash`` tags make two different keys collide with
    probability at most ``eps_cor``: one tag collides with probability at most
    (ceil(n/64) + 1) / 2^64 (``postproc_c.hashing``), independent keys multiply."""
    p_one = (math.ceil(n_bits / 64) + 1) / 2.0**64
    return max(1, math.ceil(math.log(eps_cor) / math.log(p_one)))


_MALLOC_TUNED = False


RESULTS_KEPT = 1000     # block results (and Bob's key latencies) a node keeps in memory


def tune_malloc() -> bool:
    """Keep freed memory in this process instead of returning it to the OS (glibc only).

    Why: a node allocates and frees tens of MB per block (Cascade's per-pass tables,
    numpy arrays of whole frames) from a dozen threads. glibc gives each thread its own
    arena, serves blocks above 128 KiB-32 MiB by mmap and trims freed heap tops, so the
    same memory is unmapped and faulted in (zeroed by the kernel) again and again:
    measured ~220k page faults and ~1.2 s of system time per 12-block replay run. One
    arena, a 32 MiB mmap threshold and a 1 GiB trim threshold (mallopt(3)) halve the
    faults. Process-wide and idempotent: call before the node's threads start. Returns
    whether the settings were applied (False off glibc, where nothing is changed).
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    try:
        import ctypes
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8   # <malloc.h>
    ok = all((mallopt(m_arena_max, 1), mallopt(m_mmap_threshold, 32 << 20),
              mallopt(m_trim_threshold, 1 << 30)))
    _MALLOC_TUNED = ok
    return ok


@dataclass
class NodeConfig:
    """Protocol settings both nodes must share (the config file's ``[protocol]``)."""

    block_bits: int = 1 << 18           # Z bits per block (cut at a frame boundary)
    key_size_bits: int = 256
    reconciliation: str = "cascade"      # a postproc_c method, or "auto" (choose_reconciliation)
    auto_ldpc_qber: tuple[float, ...] = (0.0, 0.0)   # "auto": LDPC for lo <= estimated QBER < hi
    finite_key: str = "2-decoy"          # or "1-decoy"
    eps_sec: float = 1e-10
    eps_cor: float = 1e-15
    # The authentication term's share of a block's epsilon budget: the block's total is at most
    # eps_sec + eps_cor + eps_auth, and a block whose forgery bound exceeds it makes no key
    # (Node._auth_share_check). Honest blocks use ~2.2e-14 at 2^19 bits (the bound grows with
    # the bytes checked: ~4e-12 at 10^8 bits, extrapolated); a tenth of eps_sec leaves room.
    eps_auth: float = 1e-11
    p_z: float = 0.9
    # Bob's basis choice: "passive" (a beam splitter sends receiver_split_z of the light to the
    # Z arm; his multi-photon detections are bounded by his cross clicks, link.finite_key) or
    # "active" (a modulator; the squashing model alone covers it)
    receiver: str = "passive"
    receiver_split_z: float = 0.5
    # the lab's lower bound on eta_min/eta_max of Bob's four detectors (the weakest over the
    # strongest) over every mode (arrival time, wavelength, polarization): the finite-key step
    # tags the share of detections the mismatch could come from (link.finite_key, "Detector
    # efficiency mismatch"). 1.0 only for detectors known equal; the default leaves room for ~10 %
    detector_efficiency_ratio_min: float = 0.9
    intensities: tuple[float, ...] = (0.5, 0.1, 0.0002)
    intensity_probs: tuple[float, ...] = (0.7, 0.2, 0.1)
    # of each block's key to the auth pool (384 pads/proto stream, 512 while the ctrl streams are
    # full; more while a stream is below link.commit.POOL_LOW_WATER_PADS); Bob follows Alice's split
    auth_refill_bytes: int = 16384
    qber_alarm: float = 0.11
    max_blocks_in_flight: int = 16
    max_frames_in_flight: int = 64
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
    method: str = ""                            # the block's reconciliation (postproc_c method)
    secret_bits: int = 0
    aborted: bool = False
    reason: str = ""
    latency_s: float = 0.0
    emulated_s: float = 0.0
    yields: dict = field(default_factory=dict)
    eps: dict = field(default_factory=dict)      # the block's epsilon budget (finite_key.EpsilonBudget)
    # Alice: the finite-key terms the length came from (s0, s1, s1_test, v1_test, phase_error,
    # multiphoton_z/x: the passive receiver's bound, penalty_bits), for the report and telemetry
    finite_key: dict = field(default_factory=dict)


def receiver_counts(cfg: NodeConfig, pe_meta: dict) -> fk.PassiveReceiver | None:
    """Bob's receiver as the finite-key step needs it: for a passive one its split and the
    cross clicks and detection events Bob reported with the block's test bits (PE_DISCLOSE);
    None for an active one. A passive receiver's counts are required: missing or malformed
    ones are refused (zero cross clicks would hide every multi-photon detection)."""
    if cfg.receiver == "active":
        return None
    cross, events, ann = pe_meta.get("cross_clicks"), pe_meta.get("events"), pe_meta.get("announced")
    if not all(type(v) is int for v in (cross, events)) or not 0 <= cross <= events:
        raise PayloadError(f"PE_DISCLOSE: cross_clicks {cross!r} / events {events!r} are not two "
                           "counts with 0 <= cross_clicks <= events")
    if (not isinstance(ann, list) or len(ann) != 2 or not all(type(v) is int and v >= 0 for v in ann)
            or sum(ann) + cross > events):
        raise PayloadError(f"PE_DISCLOSE: announced {ann!r} is not [Z, X] counts >= 0 adding up to at "
                           f"most events - cross_clicks")
    return fk.PassiveReceiver(cfg.receiver_split_z, cross, events, cfg.p_z, (ann[0], ann[1]))


def mismatch_counts(cfg: NodeConfig, pe_meta: dict) -> fk.DetectorMismatch:
    """The detector efficiency mismatch bound as the finite-key step needs it: the configured
    ratio and Bob's same-basis double clicks (Z, X) of the block, which he reported with its
    test bits (PE_DISCLOSE) and which are required when the ratio is below 1 (a double click
    is likelier to be tagged than a single one: link.finite_key, "Detector efficiency
    mismatch")."""
    sq = pe_meta.get("squashed")
    if cfg.detector_efficiency_ratio_min >= 1.0 and sq is None:
        return fk.DetectorMismatch(1.0)
    if not isinstance(sq, list) or len(sq) != 2 or not all(type(v) is int and v >= 0 for v in sq):
        raise PayloadError(f"PE_DISCLOSE: squashed {sq!r} is not [Z, X] counts >= 0")
    return fk.DetectorMismatch(cfg.detector_efficiency_ratio_min, (sq[0], sq[1]))


def choose_reconciliation(cfg: NodeConfig, qber_est: float) -> str:
    """The reconciliation method of a block: ``cfg.reconciliation``, or for ``"auto"`` LDPC when
    the block's estimated QBER lies in ``cfg.auto_ldpc_qber = (lo, hi)``, else Cascade.

    Default window empty (always Cascade): Cascade leaks less at every QBER (f 1.036-1.046
    against 1.090-1.130 for blind LDPC and 1.25-1.26 for one-way: 2^20-bit blocks at QBER
    1/2/5/8 %, two seeds each, ``postproc_c.reconcile_in_memory``, 2026-11-25; ``python -m
    bench -k "cascade or ldpc"`` for throughput) and, with the mux (``link.recon_mux``), its
    round trips cost latency, not rate. A
    link whose round trip is long sets the window (e.g. ``auto_ldpc_qber = [0.01, 0.11]``:
    one-way LDPC plans its rate at QBER >= 1 % and is costly below).
    """
    if cfg.reconciliation != "auto":
        return cfg.reconciliation
    lo, hi = (tuple(cfg.auto_ldpc_qber) + (0.0, 0.0))[:2]
    return "ldpc" if lo <= qber_est < hi else "cascade"


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


def _amplify(zw: np.ndarray, n_z: int, seed_words: np.ndarray, ell: int) -> bytearray:
    """Privacy amplification of the reconciled key words ``zw`` (n_z bits) to ``ell`` bits with
    the Toeplitz seed both sides hold; the input words and the hash output are wiped, the key
    comes back as a bytearray the caller wipes once the store has it."""
    key = postproc_c.toeplitz_hash(zw, n_z, seed_words, ell)
    zw[:] = 0
    kb = bytearray(key.view(np.uint8).tobytes())
    key[:] = 0
    return kb


class _Block:
    """Sifted events of one block on one node (the key and test bits wiped when done).

    Each frame's sifted events are appended as they are sifted straight into packed bit
    planes (``postproc_c.blockbits``: Z key bits, X test bits, intensity classes), so the
    block's key is ready for Cascade, verification and privacy amplification as 64 bits per
    word: no per-block concatenation, split by basis or packing (those were ~30 MB of fresh
    memory and three copies per 2^22-bit block).
    """

    def __init__(self, z_cap: int = 1 << 16, x_cap: int = 1 << 14) -> None:
        self.bits = BlockBits(z_cap, x_cap)
        self.n_z = 0
        self.first_frame = -1
        self.last_frame = -1
        self.sent = np.zeros((2, 3), np.int64)     # Alice: slots sent per (basis, intensity)
        self.det = np.zeros((2, 3), np.int64)      # Alice: announced detections per (basis, intensity)
        self.emulated_s = 0.0
        self.events = 0                            # Bob: detection events
        self.multi = 0                             # Bob: events with clicks on two or more detectors
        self.cross = 0                             # Bob: of those, events with clicks in both bases
        self.announced = np.zeros(2, np.int64)     # Bob: announced events per basis (Z, X)
        self.squashed = np.zeros(2, np.int64)      # Bob: of those, double clicks within the basis
        self.t_last = 0.0                          # Bob: when the block's last frame was read (monotonic)
        self.forged0 = 0.0                         # channel forgery bound where its window opens
        self.forged_peer = 0.0                     # Alice: the peer's, from VERIFY_RESULT
        self.bad0 = 0                              # bad tags the channel counted when it opened
        self.budget: fk.EpsilonBudget | None = None  # Alice: the finite-key epsilon budget

    def add(self, frame: int, bases: np.ndarray, bits: np.ndarray, ints: np.ndarray) -> int:
        """Append a frame's sifted events (``bits`` is wiped here, once appended); returns the
        frame's Z count."""
        if self.first_frame < 0:
            self.first_frame = frame
        self.last_frame = frame
        try:
            nz = self.bits.append(bases, bits, ints)
        finally:
            bits[:] = 0
        self.n_z += nz
        return nz

    def appended(self, frame: int, nz: int) -> None:
        """A frame's sifted events were appended to ``bits`` by the fused sifting step."""
        if self.first_frame < 0:
            self.first_frame = frame
        self.last_frame = frame
        self.n_z += nz

    def wipe(self) -> None:
        self.bits.wipe()


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
        self._frames: dict[int, PackedPattern] = {}       # Alice: packed patterns awaiting sifting
        self._frames_lock = threading.Lock()
        self._anns: dict[int, object] = {}                # Bob: announcements awaiting Alice's mask
        self._frame_sem = threading.Semaphore(config.max_frames_in_flight)
        self._block_sem = threading.Semaphore(config.max_blocks_in_flight)
        self._forged_prev = 0.0  # channel forgery bound where the current block's window opened
        self._bad_prev = 0       # and its bad tag count
        self._cur = self._new_block()
        self._hellos = 0
        self._peer_msgs = 0      # proto messages other than HELLO (a HELLO after any: peer restarted)
        self._first_ann = None   # Bob: the first frame this run announced (older masks are stale)
        self._frame_slots_n = frame_slots
        self._patterns = patterns         # Alice: (basis, bit, intensity) per frame, else drawn from rng
        self._blocks_closed = 0
        # the latest RESULTS_KEPT block results (all of them grew a long run's memory); count
        # blocks with blocks_done, not len(results)
        self.results: collections.deque[BlockResult] = collections.deque(maxlen=RESULTS_KEPT)
        # the latest alarms (a flood of bad frames must not grow memory: link.lograte)
        self.alarms: collections.deque[dict] = collections.deque(maxlen=1000)
        self._alarm_log = LogLimiter()
        # dead_time_vetoed: Bob's events dropped by the slotter's dead-time guard (link.slotting);
        # afterpulse_blocks: Bob's blocks aborted because his detectors afterpulse beyond that guard
        self.counters = {"frames": 0, "detections": 0, "dead_time_vetoed": 0, "afterpulse_blocks": 0,
                         "sifted": 0,
                         "sifted_z": 0, "secret_bits": 0, "blocks": 0, "blocks_aborted": 0,
                         "keys_committed": 0}
        # over every block result, also those no longer in ``results`` (run summaries' totals):
        # Z bits of the blocks that gave keys, emulated seconds of all
        self.totals = {"n_z": 0, "emulated_s": 0.0}
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
        self._stash: dict[int, dict] = {}                 # per block: messages that came early
        self._commit_q: queue.Queue[Message] = queue.Queue()   # two-step commit messages, in order
        self._t_last: dict[int, float] = {}               # Bob: block -> its last frame read (monotonic)
        # Bob: block -> last detection to keys stored, the latest RESULTS_KEPT blocks
        self.key_latency_s: collections.OrderedDict[int, float] = collections.OrderedDict()
        self._mux = ReconMux(lambda p: self._send_wait(MsgType.RECON_BATCH, 0, p), self._stop,
                             errors=(postproc_c.Error, ValueError))
        # the peer's RECON_BATCH goes from the channel's I/O thread straight to the mux's
        # queue: one hand-off fewer per round trip, and no wait behind the dispatcher's
        # sifting of a frame (a block's ~30 Cascade round trips are its tail latency)
        self.ch.direct[MsgType.RECON_BATCH] = self._on_recon_batch
        # Alice with a front end that numbers its frames: durable frame numbers and a floor for
        # stale announcements, so either node can restart alone (link.resume; None: frames from 0)
        self.resume = FrameResync.for_node(role, store, frontend)
        # instrument front ends (AWG, tagger): agree on frame numbers per epoch (link.frame_epoch)
        self.frame_epochs = frame_epoch.attach(self)

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
        ok, dropped = self._alarm_log.allow(kind)
        if ok:
            log.warning("%s alarm %s: %s%s", self.role, kind, reason, suppressed_note(dropped))
        self.publish("alarm", **a)

    def _channel_alarm(self, kind: str, detail: str) -> None:
        self.alarm(kind, detail)
        if kind == "key_store":     # the channel stopped: the store file failed under the auth pool
            self._stop.set()

    def _commit_event(self, what: str, block_id: int, info: dict) -> None:
        if what == "refused":       # a malformed commit message of the peer (Committer.handle)
            self.alarm("commit_refused", f"{info['message']}: {info['reason']}", block_id)
            return
        if what == "committed":
            with self._lock:
                self.counters["keys_committed"] += int(info.get("keys", 0))
                t_last = self._t_last.pop(block_id, None)
                if t_last is not None:       # from the block's last detection to its keys in the store
                    self.key_latency_s[block_id] = time.monotonic() - t_last
                    while len(self.key_latency_s) > RESULTS_KEPT:
                        self.key_latency_s.popitem(last=False)
            self.ch.pool.refresh()       # the block's share of key replenished the auth pool
        elif what == "final":
            self.ch.pool.refresh()       # Alice's own streams take its share only now (link.auth)
        self.publish("commit", event=what, block_id=block_id, **info)

    def status(self) -> dict:
        wall = time.monotonic() - self.t0
        with self._lock:
            c = dict(self.counters)
        heard = self.ch.last_peer_activity
        # seconds since a frame of the peer last authenticated here (since start when none has):
        # what a lab engineer watching one node needs to see that the other one stopped
        silent = time.monotonic() - (heard or self.t0)
        return {**c, "wall_s": wall, "emulated_s": self.emulated_s, "pool_min_left_pads":
                self.ch.pool.min_left_pads(), "channel": dict(self.ch.counters),
                "store_keys": self.store.count(), "peer": self.ch.peer, "peer_heard": bool(heard),
                "peer_silent_s": silent}

    # life cycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        # Power-up known-answer tests of every C primitive before any key is produced
        # (postproc_c.selftest raises SelfTestError naming the primitive that failed).
        try:
            self.selftest = postproc_c.selftest()
        except postproc_c.SelfTestError as exc:
            self.alarm("selftest_failed", str(exc))
            raise
        tune_malloc()
        memtrace.start(self.role)      # only with QKD_MEMTRACE set (a diagnostic for soaks)
        self.ch.start()
        if self.role == "alice":
            self.committer.resync()
        for name, fn in (("dispatch", self._dispatch), ("ctrl", self._ctrl), ("recon", self._mux.run),
                         ("commit", self._commit_loop),
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
        for pp in list(getattr(self, "_frames", {}).values()):
            pp.wipe()
        for ann, _ in list(getattr(self, "_anns", {}).values()):
            ann.bits[:] = 0
        cur = getattr(self, "_cur", None)
        if cur is not None:
            cur.wipe()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def blocks_done(self) -> int:
        """Blocks finished (with keys or aborted) since the start; ``results`` keeps the latest."""
        with self._lock:
            return self.counters["blocks"]

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
                # a HELLO after the peer's first message means it restarted, even when this node
                # started later than the peer's first run and never saw that run's HELLO
                if self._hellos > 1 or self._peer_msgs:
                    self._peer_restarted()
                self._commit_q.put(m)
                continue
            self._peer_msgs += 1
            if m.mtype in COMMIT_TYPES:
                # the commit thread writes the store (thousands of keys per block): sifting
                # goes on meanwhile (sqlite3 releases the GIL while it writes)
                self._commit_q.put(m)
            elif m.mtype == MsgType.SIFT_ANNOUNCE and self.role == "alice":
                self._on_announce(m)
            elif m.mtype == MsgType.SIFT_MATCH and self.role == "bob":
                self._on_match(m)
            elif m.mtype == MsgType.RECON_BATCH:
                self._mux.feed_batch(m.payload)
            elif m.mtype in BLOCK_TYPES:
                self._route(m)
            elif m.mtype == MsgType.STOP:
                self._stop.set()
            else:
                self.alarm("protocol", f"unexpected {m.mtype.name} for block {m.block_id}")

    def _on_recon_batch(self, m: Message) -> None:
        self._peer_msgs += 1
        self._mux.feed_batch(m.payload)

    def _commit_loop(self) -> None:
        while not self._stop.is_set():
            try:
                m = self._commit_q.get(timeout=0.1)
            except queue.Empty:
                continue
            self.committer.handle(m)

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
        # Bob's pending announcements stay too: his acquisition thread may already have
        # announced frames of the restarted Alice before this HELLO got here, and she will
        # answer those (she sifts them into her block; wiping them here made the two blocks
        # differ by those frames). Announcements of her previous run are never answered
        # (her frames resume above them, link.resume) and are wiped by _on_match once she
        # answers a later frame.
        self._cur.wipe()
        self._cur = self._new_block()
        if self.resume is not None:     # Bob restarted: the frames he missed are never announced
            self.resume.peer_restarted(self._frames, self._frames_lock, self._frame_sem)

    # acquisition ----------------------------------------------------------------------------------
    def _acquire_alice(self) -> None:
        n = int(self.fe.frame_slots)
        f = f0 = self.resume.first_frame() if self.resume is not None else 0
        emit_packed = getattr(self.fe, "emit_packed", None)
        while not self._stop.is_set():
            if self.frame_limit is not None and f - f0 >= self.frame_limit:
                return
            if self.block_limit is not None and self._blocks_closed >= self.block_limit:
                return
            if not self._frame_sem.acquire(timeout=0.1):
                continue
            if self.resume is not None:
                self.resume.reserve(f)
            if self._patterns is not None:
                pat = self._patterns(f)
            else:
                pat = (self.rng.choices(n, [self.cfg.p_z, 1.0 - self.cfg.p_z]), self.rng.random_bits(n),
                       self.rng.choices(n, list(self.cfg.intensity_probs)))
            if isinstance(pat, PackedPattern):
                pp = pat
                if emit_packed is not None:
                    emit_packed(pp)
                else:
                    unpacked = pp.unpack()
                    self.fe.emit(*unpacked)
                    for a in unpacked:
                        a[:] = 0
            else:
                self.fe.emit(*pat)
                # kept packed until Bob announces the frame: 512 KiB instead of 3 MiB per
                # 2^20 slots, class counts from popcounts, sifting reads the announced slots only
                pp = pack_pattern(*pat)
                for a in pat:
                    a[:] = 0
            if pp.counts is None:
                pp.counts = pattern_counts(pp)
            with self._frames_lock:
                self._frames[f] = pp
                if self.resume is not None:
                    self.resume.next = f + 1
            with self._lock:
                self.counters["frames"] += 1
            f += 1

    def _acquire_bob(self) -> None:
        n_slots = int(self._frame_slots())
        while not self._stop.is_set():
            dets = self.fe.poll(0.1)
            # every frame the front end has ready goes into one SIFT_ANNOUNCE (one tag, one
            # message for up to ANNOUNCE_MAX_FRAMES frames)
            for i in range(0, len(dets), ANNOUNCE_MAX_FRAMES):
                self._announce(dets[i:i + ANNOUNCE_MAX_FRAMES], n_slots)

    def _announce(self, dets: list, n_slots: int) -> None:
        frames, counts, slots = [], [], []
        # squashing bits for every frame of the announcement in one read of the random source
        # (one health-tested read instead of one per frame); at most one bit per event
        need = [max(1, (det.slots.size + 63) // 64) for det in dets]
        words = self.rng.random_words(sum(need))
        # Compact on the wire (fewer bytes to tag, copy, send and check): bases one bit each;
        # slots as 16-bit gaps (each frame's first slot absolute) when every gap fits, which
        # it does at any useful detection rate, else 32-bit (or, above 2^32 slots, 64-bit).
        # Both are written frame by frame into the message's own buffers (no concatenation
        # of the frames' slots and bases first).
        total = sum(int(det.slots.size) for det in dets)
        gaps = np.empty(total, np.uint16) if n_slots <= 1 << 32 else None
        bases = BitPlane(total)
        off = pos = 0
        for det, k in zip(dets, need):
            ann = bob_announce(det.slots, det.masks, n_slots, rng=words[off:off + k])
            off += k
            ann_t = time.monotonic()
            self._anns[det.frame_index] = (ann, ann_t)
            if self._first_ann is None:
                self._first_ann = int(det.frame_index)
            self._last_frame = max(self._last_frame, int(det.frame_index))
            c = int(ann.slots.size)
            frames.append(int(det.frame_index))
            counts.append(c)
            slots.append(ann.slots)
            bases.append_bytes(ann.bases)
            if gaps is not None and slot_gaps16(ann.slots, [c], out=gaps[pos:pos + c]) is None:
                gaps = None               # some gap needs more than 16 bits: send the slots
            pos += c
            with self._lock:
                self.counters["frames"] += 1
                self.counters["detections"] += int(det.slots.size)
                self.counters["dead_time_vetoed"] += int(det.vetoed)
        words[:] = 0
        if not frames:
            return
        meta = {"frames": frames, "counts": counts}
        arrays = {"bases_bits": bases.as_bytes()}
        if gaps is not None:
            arrays["slot_gaps"] = gaps[:pos]
        else:
            sl = np.concatenate(slots)
            arrays["slots"] = sl.astype(np.uint32) if n_slots <= 1 << 32 else sl
        self._send_wait(MsgType.SIFT_ANNOUNCE, frames[0], encode(meta, arrays))

    def _frame_slots(self) -> int:
        fs = self._frame_slots_n or getattr(self.fe, "frame_slots", None)
        if fs is None:
            raise ValueError("frame_slots: Bob's front end does not say; pass frame_slots=")
        return int(fs)

    # sifting (dispatcher thread) ----------------------------------------------------------------------
    def _on_announce(self, m: Message) -> None:          # Alice
        meta, arrays = decode(m.payload, copy=False)     # public: read in place
        frames = [int(f) for f in meta.get("frames", [m.block_id])]
        counts = [int(c) for c in meta.get("counts", [])]
        if len(counts) != len(frames) or any(c < 0 for c in counts):
            raise PayloadError("SIFT_ANNOUNCE: frames and counts differ")
        gaps = arrays.get("slot_gaps")
        all_slots = arrays.get("slots") if gaps is None else gaps
        if all_slots is None or all_slots.dtype not in ((np.uint16,) if gaps is not None
                                                         else (np.uint32, np.uint64)):
            raise PayloadError("SIFT_ANNOUNCE: slot_gaps (uint16) or slots (uint32/uint64) missing")
        if sum(counts) != all_slots.size:
            raise PayloadError(f"SIFT_ANNOUNCE: counts add up to {sum(counts)}, {all_slots.size} slots sent")
        packed = require(arrays, "bases_bits", np.uint8, (all_slots.size + 7) // 8)
        bases_w = words_from_bytes(packed, all_slots.size, "bases_bits")
        n_slots = int(self.fe.frame_slots)
        out_frames, closes = [], []
        # the SIFT_MATCH planes, appended frame by frame by the sifting step itself
        match, m_lo, m_hi = BitPlane(all_slots.size), BitPlane(all_slots.size), BitPlane(all_slots.size)
        pos = 0
        wide = all_slots.dtype == np.uint64
        for f, c in zip(frames, counts):
            slots = all_slots[pos:pos + c]
            if gaps is not None:      # back to slots; a zero gap shows up as not increasing below
                try:
                    slots = slots_from_gaps16(slots)
                except ValueError:
                    raise PayloadError(f"SIFT_ANNOUNCE: frame {f}: slot gaps add up past 2^32") from None
            bob_pos = pos
            pos += c
            if self.resume is not None and self.resume.stale(f):
                continue            # sent before a restart of either node (link.resume)
            with self._frames_lock:
                # Bob announces frames in order: a pending frame older than this one was lost
                # (or consumed by a Bob that restarted) and will never be announced.
                for old in [k for k in self._frames if k < f]:
                    self._frames.pop(old).wipe()
                    self._frame_sem.release()
                pp = self._frames.pop(f, None)
            if pp is None:
                if self.block_limit is not None and self._blocks_closed >= self.block_limit:
                    continue        # frames after the last block: expected while the run stops
                self.alarm("protocol", f"announcement for unknown frame {f}")
                continue
            self._frame_sem.release()
            sent = pp.counts.astype(np.int64)
            blk = self._cur
            try:
                if wide:     # frames above 2^32 slots: gather, then the per-slot sifting
                    if c > 1 and not (slots[1:] > slots[:-1]).all():
                        raise PayloadError(f"SIFT_ANNOUNCE: frame {f}: slots not strictly increasing")
                    bases = np.unpackbits(packed, count=all_slots.size, bitorder="little")[bob_pos:pos]
                    ev = pattern_gather(pp, slots)
                    res = alice_sift(np.arange(c, dtype=np.uint64), bases, *ev)
                    for a in ev:
                        a[:] = 0
                    match.append_bytes(res.match.view(np.uint8))
                    m_lo.append_bytes(res.intensities & 1)
                    m_hi.append_bytes(res.intensities >> 1)
                    n_sift = int(res.bits.size)
                    det = res.detections.astype(np.int64)
                    nz = blk.add(f, res.bases, res.bits, res.intensities)   # wipes res.bits
                else:        # one C pass over the events: match mask, message planes, block planes
                    det, sif, nz = sift_alice_into(pp, slots, bases_w, bob_pos, blk.bits, match, m_lo, m_hi)
                    blk.appended(f, nz)
                    n_sift = int(sif.sum())
            finally:
                pp.wipe()
            blk.sent += sent
            blk.det += det
            self._watch_signal(f, c)
            blk.emulated_s += n_slots / float(self.fe.clock_hz)
            self.emulated_s += n_slots / float(self.fe.clock_hz)
            with self._lock:
                self.counters["detections"] += c
                self.counters["sifted"] += n_sift
                self.counters["sifted_z"] += nz
            out_frames.append(f)
            if blk.n_z >= self.cfg.block_bits and (self.block_limit is None
                                                    or self._blocks_closed < self.block_limit):
                bid = self.store.next_block_id()
                closes.append([f, bid])
                self._cur = self._new_block()
                self._blocks_closed += 1
                self._start_block(bid, blk)
        if not out_frames:
            return
        # compact on the wire: the match mask one bit per event, the intensity classes (0..2)
        # of the matched events as two bit planes (13 KB instead of 80 KB per 2^20-slot frame
        # to copy, tag, send and check)
        self.ch.send(MsgType.SIFT_MATCH, out_frames[0],
                     encode({"frames": out_frames, "close": closes, "n": match.n, "k": m_lo.n},
                            {"match_bits": match.as_bytes(), "int_lo": m_lo.as_bytes(),
                             "int_hi": m_hi.as_bytes()}))

    def _on_match(self, m: Message) -> None:             # Bob
        meta, arrays = decode(m.payload, copy=False)     # public: read in place
        frames = [int(f) for f in meta.get("frames", [m.block_id])]
        closes = {int(f): int(b) for f, b in meta.get("close", [])}
        if frames[0] not in self._anns and (self._first_ann is None or frames[0] < self._first_ann):
            # the answer to an announcement of this node's previous run, retransmitted by the
            # channel after this restart: its frames are gone, nothing to sift (not an alarm)
            log.debug("bob: SIFT_MATCH for frames %d.. from before this run dropped", frames[0])
            return
        n_ev, n_match = meta.get("n"), meta.get("k")
        if type(n_ev) is not int or type(n_match) is not int or not 0 <= n_match <= n_ev:
            raise PayloadError(f"SIFT_MATCH: bad event counts n={n_ev!r}, k={n_match!r}")

        def plane(name: str, count: int) -> np.ndarray:
            return words_from_bytes(require(arrays, name, np.uint8, (count + 7) // 8), count, name)
        match_w = plane("match_bits", n_ev)
        lo_w, hi_w = plane("int_lo", n_match), plane("int_hi", n_match)
        # announcements Alice skipped (older than what she answered) will never be answered
        for old in [k for k in list(self._anns) if k < frames[0]]:
            self._anns.pop(old)[0].bits[:] = 0
        pos = ipos = 0
        for f in frames:
            entry = self._anns.pop(f, None)
            if entry is None:
                self.alarm("protocol", f"sifting mask for unknown frame {f}")
                return
            ann, ann_t = entry
            n = ann.slots.size
            if pos + n > n_ev:
                raise PayloadError(f"SIFT_MATCH: frame {f}: {n_ev - pos} match entries for {n} events")
            # one C pass: Alice's mask and classes straight into the block's packed planes
            try:
                used, nz = sift_bob_into(ann.bases, ann.bits, match_w, pos, lo_w, hi_w, ipos, n_match - ipos,
                                         self._cur.bits)
            finally:
                ann.bits[:] = 0
            pos += n
            ipos += used
            self._cur.appended(f, nz)
            self._cur.events += ann.n_events
            self._cur.multi += ann.n_cross_dropped + int(ann.n_squashed.sum())
            self._cur.cross += ann.n_cross_dropped
            self._cur.announced += ann.counts.astype(np.int64)
            self._cur.squashed += ann.n_squashed.astype(np.int64)
            self._cur.t_last = ann_t
            with self._lock:
                self.counters["sifted"] += used
                self.counters["sifted_z"] += nz
            if f in closes:
                blk, self._cur = self._cur, self._new_block()
                self._start_block(closes[f], blk)

    def _new_block(self) -> _Block:
        """An empty block with room for its Z bits (it closes at the first frame boundary at or
        past ``block_bits``) and the X bits the basis choice makes likely; planes grow if needed."""
        z_cap = self.cfg.block_bits + (1 << 16)
        p_z = min(max(self.cfg.p_z, 0.05), 0.95)
        blk = _Block(z_cap, int(z_cap * ((1 - p_z) / p_z) ** 2 * 1.2) + (1 << 14))
        # its authentication window opens where the previous block's did: a sifting message
        # can carry frames of both (checked before this block existed); see _run_block
        blk.forged0, self._forged_prev = self._forged_prev, self.ch.forgery_bound
        blk.bad0, self._bad_prev = self._bad_prev, self.ch.counters["bad_tag"]
        return blk

    def _start_block(self, bid: int, blk: _Block) -> None:
        self._queue(bid)
        if blk.t_last:
            with self._lock:
                self._t_last[bid] = blk.t_last
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
            self._mux.remove(bid)
            with self._q_lock:
                self._block_q.pop(bid, None)
                self._stash.pop(bid, None)
        res.latency_s = time.monotonic() - t0
        if blk.budget is not None:
            # The authentication term: the forgery bound of every tag this node (and, on Alice,
            # Bob: VERIFY_RESULT) checked from the opening of the previous block (so the first
            # sifting message of this one, which can carry frames of both, is in) to this
            # block's result: its own messages and those of blocks beside it (conservative; the
            # sum over blocks covers every frame at least once). The block's commit handshake,
            # a few short frames checked after this point, falls in the windows of the blocks
            # that follow. Not part of Lim 2014's eps_sec: it adds to the block's total.
            budget = replace(blk.budget, authentication=self.ch.forgery_bound - blk.forged0
                             + blk.forged_peer)
            res.eps = {**asdict(budget), "total": budget.total}
        with self._lock:
            self.results.append(res)
            self.counters["blocks"] += 1
            self.totals["emulated_s"] += res.emulated_s
            if res.aborted:
                self.counters["blocks_aborted"] += 1
                self._t_last.pop(bid, None)      # never committed: no key latency to measure
            else:
                self.counters["secret_bits"] += res.secret_bits
                self.totals["n_z"] += res.n_z
        self.publish("block", **asdict(res))

    def _auth_share_check(self, bid: int, blk: _Block, res: BlockResult) -> None:
        """Alice, before the block's key is made: its authentication term so far (this node's
        forgery bound over the block's window, plus Bob's from VERIFY_RESULT; ``_run_block``)
        must not exceed ``eps_auth``. Every frame Eve forges adds its (L + 1) 2^-64 (a bad tag
        too: it was a chance to pass), so without this she could grow a block's total epsilon
        past what the node was configured for. Over it: the block aborts (the peer told), the
        link goes on; the alarm names the bad tags and the bound. Frames checked after this point
        (the PA seed, the commit) fall in the windows of the blocks that follow."""
        term = self.ch.forgery_bound - blk.forged0 + blk.forged_peer
        if term <= self.cfg.eps_auth:
            return
        bad = self.ch.counters["bad_tag"] - blk.bad0
        raise _BlockAbort(res, f"authentication term {term:.3g} exceeds its share eps_auth "
                          f"{self.cfg.eps_auth:.3g} of the block's epsilon budget ({bad} frames failed "
                          f"authentication here since the block's window opened; Bob's checks add "
                          f"{blk.forged_peer:.3g} to the bound): forged frames on the channel",
                          "authentication_budget", notify_peer=True)

    def _recv_block(self, bid: int, want, res: BlockResult) -> Message:
        """The block's next message of type ``want``; one that comes early (messages of a block
        arrive on two paths, the dispatcher and the reconciliation mux) waits in the stash."""
        q = self._queue(bid)
        with self._q_lock:
            stash = self._stash.setdefault(bid, {})
        if want in stash:
            return stash.pop(want)
        end = time.monotonic() + self.cfg.block_timeout_s
        while True:
            left = end - time.monotonic()
            if left <= 0 or self._stop.is_set():
                raise _BlockAbort(res, f"timed out waiting for {_name(want)}", "block_timeout",
                                  notify_peer=True)
            try:
                m = q.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            if m.mtype == MsgType.ABORT:
                raise _BlockAbort(res, m.payload.decode(errors="replace") or "peer aborted", None)
            if m.mtype != want:
                if m.mtype in stash or m.mtype == MsgType.RECON:
                    raise _BlockAbort(res, f"expected {_name(want)}, got {_name(m.mtype)} again",
                                      "protocol", notify_peer=True)
                stash[m.mtype] = m
                continue
            return m

    def _send_wait(self, mtype: MsgType, bid: int, payload: bytes = b"") -> int:
        """Send from a thread that may wait for the auth pool to be refilled by a commit (block
        threads, the mux, Bob's acquisition; never the dispatcher, which handles commits)."""
        return self.ch.send(mtype, bid, payload, wait_s=self.cfg.block_timeout_s)

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

    def _watch_dead_time(self, bid: int) -> bool:
        """Bob: his tags show a detector dead time longer than his dead-time guard
        (``link.slotting.Slotter.dead_time_check``); front ends without a slotter (replays of
        recorded detections) have nothing to check."""
        slotter = getattr(self.fe, "slotter", None)
        why = slotter.dead_time_check() if slotter is not None else None
        if why:
            self.alarm("dead_time", f"block {bid}: {why}", bid)
            return True
        return False

    def _watch_afterpulse(self, bid: int) -> bool:
        """Bob: his tags show afterpulses later than his dead-time guard
        (``link.slotting.Slotter.afterpulse_check``): a kept event may then repeat an earlier
        click's detector, which the proofs' memoryless detectors exclude."""
        slotter = getattr(self.fe, "slotter", None)
        why = slotter.afterpulse_check() if slotter is not None else None
        if why:
            with self._lock:
                self.counters["afterpulse_blocks"] += 1
            self.alarm("afterpulse", f"block {bid}: {why}", bid)
            return True
        return False

    def _watch_receiver(self, bid: int, bb: BlockBits,
                        receiver: fk.PassiveReceiver | None) -> tuple[dict, str | None]:
        """Alice: Bob's receiver against the model the security analysis assumes; returns
        the figures for the block's result and, if the block must not make key, why.

        * The Z share of Bob's announced events against ``receiver_split_z``: an arm less
          efficient than the other, or a split configured wrong, shows here, and raises
          ``receiver_split``. A share above the setting means the setting is too low, the
          side on which the multi-photon bound fails: dead time (on the busier arm) and dark
          counts (share ~1/2) pull the measured share down, so widening the range to it
          (``PassiveReceiver.split_range``) does not make the bound safe (audit 2026-11-25);
          the block is aborted until the setting is corrected. A share below the setting
          only raises the alarm (the bound is conservative there).
        * Detector efficiency mismatch within a basis: Alice's bits are uniform, so the share of 1s
          among her sifted bits is eta_1 / (eta_0 + eta_1) of Bob's two detectors (V/H in Z, A/D in
          X). The finite-key step bounds a mismatch of Bob's four detectors down to the configured
          ``detector_efficiency_ratio_min`` (link.finite_key, "Detector efficiency mismatch"), which
          bounds the X pair's ratio too, so the X bits (disclosed: their share is published,
          ``ones_x``) are checked against it: a share that even 5 standard deviations (0.5/sqrt(n)
          each) do not bring into [rho/(1+rho), 1/(1+rho)] means the setting is too high for Bob's
          detectors, raises ``detector_mismatch`` and the block makes no key
          (``fk.share_allows_ratio``). The Z bits are the key, so for Z only the ~10 % alarm is
          raised and no share is logged or published (a Hamming weight is information on the key;
          one bit of it reaches only the local log, and none reaches the peer: no abort depends on
          it).
        Thresholds are 5 standard deviations plus a margin (0.05 on the split, 0.025 on the Z
        share of 1s), so an honest block of 10^4 events and more stays quiet: dead time takes
        a few % off the busier arm (back-to-back, 90:10 splitter: measured 0.861, 2026-11-25),
        which the bound's range covers without an alarm; a splitter left at the default 0.5
        setting is the case the alarm is for.
        """
        out, wrong = {}, None
        cfg = self.cfg
        m = receiver.measured_split if receiver is not None else None
        if m is not None:
            n = sum(receiver.announced)
            out["measured_split_z"] = m
            if abs(m - cfg.receiver_split_z) > 0.05 + 5.0 * math.sqrt(m * (1.0 - m) / n):
                setting_low = m > cfg.receiver_split_z
                self.alarm("receiver_split",
                           f"block {bid}: Bob's Z arm took {m:.3f} of his {n} announced events, "
                           f"receiver_split_z is {cfg.receiver_split_z:.3f} ("
                           + ("too low for the multi-photon bound: no key until receiver_split_z is "
                              "set to the lab's measured split" if setting_low else
                              "set receiver_split_z to the lab's measured split") + ")", bid)
                if setting_low:
                    wrong = "receiver_split_z below Bob's measured Z share"
        if bb.n_z >= 10_000:
            ones = int(np.bitwise_count(bb.z).sum()) / bb.n_z
            if abs(ones - 0.5) > 0.025 + 5.0 * 0.5 / math.sqrt(bb.n_z):
                self.alarm("detector_mismatch", f"block {bid}: Bob's V and H detectors differ by more "
                           "than ~10 % in efficiency (the share of 1s in the Z key shows it; not "
                           "logged: it is the key's)", bid)
        if bb.n_x > 0:
            ones_n = int(np.bitwise_count(bb.x).sum())
            out["ones_x"] = ones = ones_n / bb.n_x
            rho = cfg.detector_efficiency_ratio_min
            if not fk.share_allows_ratio(ones_n, bb.n_x, rho):
                ratio = min(ones, 1.0 - ones) / max(ones, 1.0 - ones)
                self.alarm("detector_mismatch",
                           f"block {bid}: {ones:.3f} of {bb.n_x} X-basis events were Alice's 1s: Bob's "
                           f"A and D detectors' efficiency ratio is {ratio:.2f}, below "
                           f"detector_efficiency_ratio_min {rho:.3f} beyond 5 sigma: no key until it "
                           "is set to the lab's measured bound", bid)
                wrong = wrong or "detector_efficiency_ratio_min above Bob's measured X-detector ratio"
        return out, wrong

    # the block protocol: Alice ------------------------------------------------------------------------
    def _alice_block(self, bid: int, blk: _Block) -> BlockResult:
        cfg = self.cfg
        bb = blk.bits
        n_z, n_x = bb.n_z, bb.n_x
        res = BlockResult(bid, (blk.first_frame, blk.last_frame), n_z=n_z, n_x=n_x,
                          emulated_s=blk.emulated_s)
        res.yields = self._watch_yields(bid, blk)
        zw = rr = side = tmp = None
        try:
            m = self._recv_block(bid, MsgType.PE_DISCLOSE, res)
            pmeta, arr = decode(m.payload)
            if pmeta.get("n_x") != n_x:
                raise PayloadError(f"PE_DISCLOSE: {pmeta.get('n_x')!r} X bits, the block has {n_x}")
            receiver = receiver_counts(cfg, pmeta)
            mismatch = mismatch_counts(cfg, pmeta)
            watched, receiver_wrong = self._watch_receiver(bid, bb, receiver)
            res.yields.update(watched)
            bx = require(arr, "x_words", np.uint64, words_for(n_x))
            # events and errors per intensity class: popcounts over the packed planes
            x_n, x_err = bb.x_counts(bb.x, bx)
            z_n = tuple(int(v) for v in bb.z_counts()[0][:len(cfg.intensities)])
            del bx
            res.qber_x = float(x_err.sum() / max(1, x_n.sum()))
            with np.errstate(invalid="ignore", divide="ignore"):
                res.qber_x_by_intensity = [float(v) for v in x_err / np.maximum(x_n, 1)]
            qber_est = min(0.49, max(res.qber_x, 0.001))
            seed = int(self.rng.random_words(1)[0])
            if receiver_wrong:
                self._send_wait(MsgType.PE_RESULT, bid, encode({"abort": receiver_wrong,
                                                                "x_errors": int(x_err.sum())}))
                raise _BlockAbort(res, receiver_wrong, None)
            if res.qber_x > cfg.qber_alarm:
                self.alarm("qber_high", f"block {bid}: X-basis QBER {res.qber_x:.4f} > {cfg.qber_alarm}",
                           bid)
                self._send_wait(MsgType.PE_RESULT, bid, encode({"abort": "qber_high",
                                                                "x_errors": int(x_err.sum())}))
                raise _BlockAbort(res, f"QBER {res.qber_x:.4f} above {cfg.qber_alarm}", None)
            method = res.method = choose_reconciliation(cfg, qber_est)
            side, tmp = self._make_side(method, "alice", bb.z, n_z, qber_est, seed)
            self._recon_start(bid, side)      # before PE_RESULT: Bob's first message may follow it
            self._send_wait(MsgType.PE_RESULT, bid, encode({"qber": qber_est, "seed": seed,
                                                          "method": method,
                                                          "x_errors": int(x_err.sum())}))
            self._recon_wait(bid, res)
            rr, _ = self._recon_key(side)
            res.leaked_bits = int(rr.leaked_bits)
            # verification: fresh points, Alice's tags; 64 bits disclosed per tag, as
            # many independent tags as eps_cor needs for a key of this length
            n_tags = verification_tags(n_z, cfg.eps_cor)
            vkeys = [int(k) for k in self.rng.random_words(n_tags)]
            zw = bb.z            # the block's key plane, packed as sifting appended it
            tags = [postproc_c.poly_hash(zw, n_z, k) for k in vkeys]
            # zw is the input of privacy amplification below: it is wiped when the block ends
            # (finally), not here -- wiping it here made every delivered key all zeros
            self._send_wait(MsgType.VERIFY, bid, encode({"keys": [str(k) for k in vkeys],
                                                      "tags": [str(t) for t in tags]}))
            m = self._recv_block(bid, MsgType.VERIFY_RESULT, res)
            vmeta, _ = decode(m.payload)
            fb = vmeta.get("forgery_bound", 0.0)
            if isinstance(fb, bool) or not isinstance(fb, (int, float)) or not 0.0 <= fb <= 1.0:
                raise PayloadError(f"VERIFY_RESULT: forgery_bound {fb!r} is not a probability")
            blk.forged_peer = float(fb)
            self._auth_share_check(bid, blk, res)
            res.leaked_bits += 64 * n_tags
            if not vmeta.get("ok"):
                self.alarm("verification_failed", f"block {bid}: keys differ after reconciliation", bid)
                raise _BlockAbort(res, "verification failed", None)
            res.qber_z = float(vmeta.get("z_errors_total", 0)) / max(1, n_z)
            if res.qber_z > 0:
                res.f = res.leaked_bits / (n_z * _h(res.qber_z))
            ints = len(cfg.intensities)
            key_m = vmeta.get("z_errors")
            if (not isinstance(key_m, list) or len(key_m) != ints
                    or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= n
                               for v, n in zip(key_m, z_n))):
                # no zeros by default: the 1-decoy vacuum bound (Rusca Eq. A16) grows with them
                raise PayloadError(f"VERIFY_RESULT: z_errors {key_m!r} is not one count in 0..n_k "
                                   f"per intensity class")
            key_m = tuple(key_m)
            # Bob published the Z error count of each class (above): a function of both keys, so
            # it is charged like lambda_EC, log2 of the number of count vectors (chain rule,
            # Lim 2014 App. B). After f, which stays the reconciliation + verification figure.
            res.leaked_bits += fk.error_count_disclosure_bits(z_n)
            # finite-key length
            fkr = fk.secret_key_length(
                fk.BasisCounts(z_n, key_m), fk.BasisCounts(tuple(int(v) for v in x_n[:ints]),
                                                          tuple(int(v) for v in x_err[:ints])),
                fk.DecoySettings(tuple(cfg.intensities), tuple(cfg.intensity_probs)),
                leak_ec_bits=res.leaked_bits, eps_sec=cfg.eps_sec, eps_cor=cfg.eps_cor,
                protocol=cfg.finite_key, receiver=receiver, mismatch=mismatch)
            ell = int(fkr.ell)
            res.finite_key = {"s0": fkr.s0, "s1": fkr.s1, "s1_test": fkr.s1_test, "v1_test": fkr.v1_test,
                              "phase_error": fkr.phase_error, "penalty_bits": fkr.penalty_bits,
                              "multiphoton_z": fkr.extra.get("multiphoton_z", 0.0),
                              "multiphoton_x": fkr.extra.get("multiphoton_x", 0.0),
                              "tagged_z": fkr.extra.get("tagged_z", 0.0),
                              "tagged_x": fkr.extra.get("tagged_x", 0.0)}
            if fkr.eps is not None:
                blk.budget = fkr.eps            # published with its authentication term (_run_block)
                # the budget the length was computed for must be the one configured
                if fkr.eps.total > (cfg.eps_sec + cfg.eps_cor + fkr.eps.authentication) * (1 + 1e-9):
                    raise _BlockAbort(res, f"epsilon budget {fkr.eps.total:.3g} exceeds "
                                      f"eps_sec + eps_cor", "epsilon_budget", notify_peer=True)
            log.info("block %d: n_z=%d qber_x=%.4f leak=%d s1=%.0f multi-photon z/x=%.0f/%.0f ell=%d eps=%s",
                     bid, n_z, res.qber_x, res.leaked_bits, fkr.s1, res.finite_key["multiphoton_z"],
                     res.finite_key["multiphoton_x"], ell, fkr.eps)
            if ell <= 0:
                kind = "qber_high" if res.qber_x > cfg.qber_alarm else "finite_key_zero"
                self._send_wait(MsgType.PA_SEED, bid, encode({"ell": 0, "reason": fkr.reason}))
                self.alarm(kind, f"block {bid}: no secret key ({fkr.reason})", bid)
                raise _BlockAbort(res, fkr.reason or "finite-key length <= 0", None)
            seed_words = self.rng.random_words((n_z + ell - 1 + 63) // 64)
            self._send_wait(MsgType.PA_SEED, bid, encode({"ell": ell}, {"seed": seed_words}))
            kb = _amplify(zw, n_z, seed_words, ell)
            self.committer.propose(bid, kb, ell)
            kb[:] = bytes(len(kb))
            res.secret_bits = ell
            return res
        finally:
            blk.wipe()
            if tmp is not None:
                tmp[:] = 0
            self._mux.remove(bid)
            _release_secrets(zw, rr, side)

    # the block protocol: Bob ----------------------------------------------------------------------------
    def _bob_block(self, bid: int, blk: _Block) -> BlockResult:
        bb = blk.bits
        n_z, n_x = bb.n_z, bb.n_x
        res = BlockResult(bid, (blk.first_frame, blk.last_frame), n_z=n_z, n_x=n_x)
        blinded = self._watch_multi_clicks(bid, blk)
        guard_short = self._watch_dead_time(bid)
        afterpulses = self._watch_afterpulse(bid) if not guard_short else False
        zw = rr = side = tmp = None
        try:
            if blinded:
                # Bob's detections may be Eve's: no key from this block (the alarm is raised)
                raise _BlockAbort(res, "detector blinding suspected", None, notify_peer=True)
            if guard_short:
                # a detector's memory reaches past the guard: the proofs' premise fails
                raise _BlockAbort(res, "dead time longer than the guard", None, notify_peer=True)
            if afterpulses:
                # a detector's afterpulses reach past the guard: kept events depend on earlier clicks
                raise _BlockAbort(res, "afterpulses later than the dead-time guard", None,
                                  notify_peer=True)
            # the test bits packed (1/8 of a byte each on the wire)
            # with the block's cross clicks and detection events: Alice's finite-key step bounds
            # the multi-photon detections of a passive receiver with them, and the mismatch bound
            # allows for his same-basis double clicks (link.finite_key)
            self._send_wait(MsgType.PE_DISCLOSE, bid, encode(
                {"n_x": n_x, "cross_clicks": blk.cross, "events": blk.events,
                 "announced": [int(v) for v in blk.announced],
                 "squashed": [int(v) for v in blk.squashed]}, {"x_words": bb.x}))
            m = self._recv_block(bid, MsgType.PE_RESULT, res)
            meta, _ = decode(m.payload)
            xe = meta.get("x_errors")
            if isinstance(xe, int) and not isinstance(xe, bool) and 0 <= xe <= n_x:
                res.qber_x = xe / max(1, n_x)   # Alice's count over the X bits Bob disclosed
            if "abort" in meta:
                if self.tracking is not None and "x_errors" in meta:    # issue 7: X errors only
                    self._track_block(bid, blk, 0, 0, res.n_x, meta, z_known=False)
                raise _BlockAbort(res, meta["abort"], None)
            side, tmp = self._make_side(meta["method"], "bob", bb.z, n_z, float(meta["qber"]),
                                        int(meta["seed"]))
            res.method = str(meta["method"])     # make_side accepted it: a known method
            self._recon_start(bid, side)
            self._recon_wait(bid, res)
            rr, zw = self._recon_key(side)       # zw: the corrected key, packed
            res.leaked_bits = int(rr.leaked_bits)
            m = self._recv_block(bid, MsgType.VERIFY, res)
            vm, _ = decode(m.payload)
            try:
                keys = [int(k) for k in vm["keys"]]
                tags = [int(t) for t in vm["tags"]]
            except (KeyError, TypeError, ValueError):
                keys, tags = [], []
            ok = (len(keys) == len(tags) == verification_tags(n_z, self.cfg.eps_cor)
                  and all(postproc_c.poly_hash(zw, n_z, k) == t for k, t in zip(keys, tags)))
            # zw feeds privacy amplification below; wiped when the block ends (finally)
            # errors per intensity class: popcounts of (sifted XOR corrected) under each class
            # plane (one pass over the packed block, no error positions)
            _, err = bb.z_counts(bb.z, zw)
            n_int = len(self.cfg.intensities)
            z_errors = [int(v) for v in err[:n_int]]
            n_err = int(err.sum())
            res.qber_z = n_err / max(1, n_z)
            # with the forgery bound of the tags Bob checked in this block's window (Alice adds
            # it to the block's authentication term: a forged frame could fool either node)
            self._send_wait(MsgType.VERIFY_RESULT, bid, encode({"ok": bool(ok and rr.success),
                                                             "z_errors": z_errors,
                                                             "z_errors_total": n_err,
                                                             "forgery_bound": self.ch.forgery_bound
                                                             - blk.forged0}))
            if self.tracking is not None and ok and rr.success:
                self._track_block(bid, blk, n_z, n_err, res.n_x, meta)
            elif self.tracking is not None:                 # issue 7: Z errors unknown, X known
                self._track_block(bid, blk, 0, 0, res.n_x, meta, z_known=False)
            if not (ok and rr.success):
                raise _BlockAbort(res, "verification failed", "verification_failed")
            m = self._recv_block(bid, MsgType.PA_SEED, res)
            pm, parr = decode(m.payload)
            ell = int(pm["ell"])
            if ell <= 0:
                raise _BlockAbort(res, pm.get("reason", "finite-key length <= 0"), None)
            seed_words = require(parr, "seed", np.uint64, (n_z + ell - 1 + 63) // 64)
            self.committer.offer(bid, _amplify(zw, n_z, seed_words, ell), ell)   # wiped once stored
            res.secret_bits = ell
            return res
        finally:
            blk.wipe()
            if tmp is not None:
                tmp[:] = 0
            self._mux.remove(bid)
            _release_secrets(zw, rr, side)

    # polarization tracking (issue 7; calibration.tracking): one call per verified block --------------
    def _track_block(self, bid: int, blk: _Block, n_z: int, errors_z: int, n_x: int, meta: dict,
                     z_known: bool = True) -> None:
        from calibration.polarization import PolarizationError
        from calibration.tracking import BlockCounts

        errors_x = int(meta.get("x_errors", round(float(meta["qber"]) * n_x)))
        counts = BlockCounts(n_z, errors_z, n_x, min(errors_x, n_x), first_frame=blk.first_frame,
                             last_frame=blk.last_frame, z_known=z_known)
        tracking = self.tracking                # another block's worker may turn it off meanwhile
        if tracking is None:
            return
        try:
            tracking.on_block(counts, current_frame=self._last_frame)
        except PolarizationError as exc:       # controller held where it is (safe state); loop off
            self.tracking = None
            if isinstance(exc.__cause__, DriverError):
                # the controller itself failed (disconnect, garbage, no reply), not the optics:
                # an instrument fault, and no instrument that misbehaved is trusted further
                self.alarm("instrument", f"polarization tracking: {exc}", bid)
                self._stop.set()
                return
            self.alarm("polarization", str(exc), bid)

    def _make_side(self, method: str, role: str, words: np.ndarray, n: int, qber: float, seed: int):
        """The block's reconciliation side over its packed key: Cascade and LDPC take the words
        as they are. Alice's LDPC punctured values come from her RandomSource (they are counted
        as private randomness in the leak). Returns (side, a copy to wipe or None)."""
        ldpc_alice = role == "alice" and method.startswith("ldpc")
        opts = {"private_words": self.rng.random_words} if ldpc_alice else {}
        return postproc_c.make_side(method, role, words, qber, seed=seed, n_bits=n, **opts), None

    @staticmethod
    def _recon_key(side):
        """The side's result and its key as packed words (Cascade and LDPC return them packed)."""
        rr = side.result(packed=True)
        return rr, rr.corrected

    def _recon_start(self, bid: int, side) -> None:
        """Hand the block's reconciliation side to the mux (one coalesced message per tick)."""
        def done(err):
            with self._q_lock:
                q = self._block_q.get(bid)
            if q is not None:
                q.put(_Local(RECON_DONE, err))
        self._mux.add(bid, side, done)

    def _recon_wait(self, bid: int, res: BlockResult) -> None:
        m = self._recv_block(bid, RECON_DONE, res)
        if m.error is not None:
            raise m.error

    # periodic telemetry ---------------------------------------------------------------------------------
    def _telemetry_loop(self) -> None:
        while not self._stop.wait(0.5):
            self.publish("status", **self.status())


RECON_DONE = "recon_done"


@dataclass
class _Local:
    """A block-queue item from this node itself (not from the channel)."""

    mtype: str
    error: BaseException | None = None


def _name(t) -> str:
    return getattr(t, "name", str(t))


class _BlockAbort(Exception):
    def __init__(self, result: BlockResult, reason: str, alarm: str | None,
                 notify_peer: bool = False) -> None:
        super().__init__(reason)
        self.notify_peer = notify_peer
        self.result = result
        self.reason = reason
        self.alarm = alarm

"""ID Quantique ID900 / ID1000 Time Controller: SCPI over ZeroMQ and the binary timestamp streams.

What it is for: configure the Time Controller's inputs and its RAW timestamp
blocks, and hand the engine merged ``TagBatch`` es (int64 ps, uint8 channel).

What it must not do: block (every request and every stream poll has a
deadline), send anything before validating it, or know about QKD beyond the
channel convention (0 = sync, 1..4 = detectors).

The wire protocol, as ID Quantique documents it — the *Time Controller Series
User Manual* (section 9, SCPI command reference: case-insensitive SCPI, time
base 1 TB = 1 ps, blocks ``INPUt#``, ``STARt``, ``RAW#``, ``RECord``; section
8.2.1.8 and 6.3.4 for RAW timestamps with an optional *reference index*) and
IDQ's Python examples shipped with the Time Controller (``utils/common.py``,
``Timestamp_acquisition_sync_stream``):

* control: a ZeroMQ REQ socket to ``tcp://<tc>:5555``; each command is one
  message, each answer one message (empty for settings).  Answers containing
  ``SCPI_ERR_`` are errors (IDQ's ``scpi_exec`` raises on that marker);
* inputs and delays (IDQ's ``Histogram_acquisition_filtred`` example):
  ``INPU1:ENAB ON;THRE -0.4V;COUP DC;EDGE FALLING;SELE UNSHAPED`` and delay
  blocks ``DELA1:VALUe 0;LINK INPU1`` that combiners and RAW blocks link to;
  counters ``INPUn:COUNter?``; values may carry the ``TB`` unit (IDQ's ``trim_unit``);
* timestamps: the DataLinkTarget service (``DataLinkTargetService.exe``, on
  the acquisition PC, REQ socket ``tcp://localhost:6060``) receives them from
  the controller; ``start-stream --address <tc> --channel <n> --stream-port
  <p> [--with-ref-index]`` answers JSON ``{"id": ...}`` and forwards channel
  ``n``'s timestamps on a ZeroMQ PAIR socket at port ``p`` (IDQ uses
  4241 + n); ``stop --id <id>`` ends it; errors come back as
  ``{"error": {"description": ...}}``;
* stream payload: little-endian uint64 timestamps in ps, or (with
  ``--with-ref-index``) pairs (uint64 timestamp, uint64 reference index);
* synchronized streaming (IDQ's ``Timestamp_acquisition_sync_stream``):
  ``REC:NUM INF`` with ``REC:PWID``/``REC:PPER`` runs back-to-back
  sub-acquisitions; each sub-acquisition yields one message per channel, and
  timestamps restart at each sub-acquisition (absolute = index * PPER + ts).
  IDQ asks for PWID >= 0.2 s and a dead time PPER - PWID >= 40 ns.

How the engine's channels are made (documented choice): the Time Controller has
four RAW blocks, the link needs five signals (sync + 4 detectors).  In
*frame-referenced* mode (``frame_period_ps`` given, the default in a QKD lab)
RAW1..4 time detectors H, V, D, A on INPUT1..4 with ``RAW#:REF:LINK STAR``: the
sync pulse on START is the reference, each record carries the time since the
last sync and the sync's index, and the driver returns
``t = ref_index * frame_period_ps + dt`` plus one channel-0 sync tag per frame
index.  *Absolute* mode (``frame_period_ps=None``) uses ``RAW#:REF:LINK NONE``
as IDQ's merge example does; then ``channel_map`` may route STAR to a RAW block
to get real sync tags.  What we could not confirm from IDQ's public material:
whether the reference index restarts at each sub-acquisition (we assume it
counts from ``REC:PLAY``), and the exact text after ``SCPI_ERR_``.  Both are
isolated in ``_merge_ready`` and ``_check_answer``.

Why merge this way: channel streams are merged only when every channel has
delivered sub-acquisition k (IDQ's merger does the same), so tags come out in
time order across batches, not just within one.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections import deque
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from .base import Identity, Instrument
from .errors import ConnectionLost, DriverError, InstrumentError, MalformedReply, NotConnected
from .interfaces import TagBatch
from .tagmerge import PairError, check_pairs, merge_sorted, pair_views, pairs_affine
from .transport import Transport, ZmqReqTransport, parse_host_port

__all__ = ["IdqTimeController", "decode_timestamps", "merge_channels", "referenced_times",
           "DEFAULT_SCPI_PORT", "DEFAULT_DLT_PORT", "DEFAULT_STREAM_PORT_BASE"]

log = logging.getLogger(__name__)

DEFAULT_SCPI_PORT = 5555
DEFAULT_DLT_PORT = 6060
DEFAULT_STREAM_PORT_BASE = 4241  # + RAW block number, as in IDQ's examples
MIN_DEAD_TIME_PS = 40_000
MIN_SUBACQ_PS = 200_000_000_000  # 0.2 s (IDQ example: sub-acquisition duration >= 0.2 s)

_INPUT_BLOCKS = {0: "STAR", 1: "INPU1", 2: "INPU2", 3: "INPU3", 4: "INPU4"}


def decode_timestamps(data: bytes, *, with_ref_index: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode one stream message: uint64 LE timestamps (ps), or (timestamp, ref index) pairs.

    Raises MalformedReply if the length is not whole records or if timestamps
    decrease where they must not (a channel's records are in time order).
    """
    rec = 16 if with_ref_index else 8
    if len(data) % rec:
        raise MalformedReply(f"timestamp message of {len(data)} bytes is not whole {rec}-byte records",
                             reply=bytes(data[:32]))
    a = np.frombuffer(data, "<u8")
    if with_ref_index:
        if a.ctypes.data % 8:
            a = a.copy()  # the C check reads aligned words
        ts, ref = a[0::2], a[1::2]
        try:
            check_pairs(ts, ref, value_limit=1 << 62, index_limit=1 << 40)
        except PairError as e:
            text = ("reference indices go backwards: corrupted timestamp stream" if e.kind == "order"
                    else "timestamp or reference index out of range")
            raise MalformedReply(f"{text} (record {e.index})", reply=bytes(data[:32])) from None
        # after the range check the values fit int64: reinterpret the strided views, no copy
        return ts.view(np.int64), ref.view(np.int64)
    if a.size > 1 and bool((a[1:] < a[:-1]).any()):
        raise MalformedReply("timestamps go backwards: corrupted timestamp stream", reply=bytes(data[:32]))
    if a.size and int(a[-1]) >= (1 << 62):
        raise MalformedReply("timestamp out of range", reply=bytes(data[:32]))
    return a.view(np.int64), None


def referenced_times(parts: Sequence[tuple[np.ndarray, np.ndarray]], frame_period_ps: int,
                     out: np.ndarray | None = None) -> np.ndarray:
    """Absolute times ``ref * frame_period_ps + dt`` of a channel's decoded (dt, ref) messages, concatenated.

    Written straight into one array by one C pass per message when ``dt``/``ref``
    are the views ``decode_timestamps`` returns (no temporaries, no concatenate
    copy), by numpy otherwise: ``out`` if given (int64, exactly the total length; the driver passes
    a reused buffer, since fresh multi-MB arrays cost a page fault per 4 KiB on
    first touch), else a new array. Refuses (MalformedReply) values that would overflow int64 instead of
    wrapping.
    """
    total = sum(ts.size for ts, _ in parts)
    if out is None:
        out = np.empty(total, np.int64)
    elif out.dtype != np.int64 or out.shape != (total,):
        raise ValueError(f"out must be int64 of length {total}, got {out.dtype} {out.shape}")
    off = 0
    for ts, ref in parts:
        if ts.size == 0:
            continue
        o = out[off:off + ts.size]
        try:
            if pair_views(ts, ref):
                pairs_affine(ts, ref, frame_period_ps, o)  # one C pass, overflow refused
            else:
                if int(ref.max()) * frame_period_ps + int(ts.max()) >= 1 << 63:
                    raise PairError("overflow", index=-1, kind="overflow")
                np.multiply(ref, frame_period_ps, out=o)
                o += ts
        except PairError:
            raise MalformedReply("reference index times frame period overflows int64 ps",
                                 reply=f"ref max={int(ref.max())} period={frame_period_ps}") from None
        off += ts.size
    return out


def merge_channels(times: Sequence[np.ndarray], channels: Sequence[int]) -> TagBatch:
    """Merge per-channel sorted int64 times into one time-sorted TagBatch (equal times: lower channel first).

    A k-way merge in C (``drivers.tagmerge``): each channel's stream is already
    in time order, so merging costs O(n log k) instead of sorting the whole batch.
    A stream out of order is refused (MalformedReply naming the channel).
    """
    if not times:
        return TagBatch.empty()
    try:
        t, ch = merge_sorted(times, channels)
    except ValueError as e:
        raise MalformedReply(f"cannot merge timestamp streams: {e}") from None
    return TagBatch(t, ch)


class IdqTimeController(Instrument):
    """ID900 / ID1000 Time Controller (see the module docstring for the protocol and modes).

    ``resource``: ``host``, ``host:port`` or ``tcp://host:port`` (SCPI, default port 5555),
    or a ready request/reply Transport (protocol tests).
    ``dlt``: the DataLinkTarget endpoint (default ``tcp://127.0.0.1:6060``).
    ``channel_map``: RAW block (1..4) -> tag channel (0..4); its source input is
    STAR for tag channel 0 and INPUn for tag channel n, through the channel's DELAy block
    (``delay_blocks``: tag channel -> DELA block, default INPUn -> DELAn) when it has one.
    ``frame_period_ps``: sync period for frame-referenced mode, or None for absolute mode.
    """

    KIND = "ID900"
    MODELS: ClassVar[tuple[str, ...]] = (r"ID900.*", r"ID1000.*")

    def __init__(self, resource: str | Transport, *, dlt: str | Transport = "tcp://127.0.0.1:6060",
                 channel_map: Mapping[int, int] | None = None, frame_period_ps: int | None = None,
                 subacq_width_ps: int = MIN_SUBACQ_PS, subacq_dead_ps: int = MIN_DEAD_TIME_PS,
                 stream_ports: Mapping[int, int] | None = None,
                 delay_blocks: Mapping[int, int] | None = None, timeout_s: float = 2.0, **kw):
        super().__init__(resource, timeout_s=timeout_s, **kw)
        cmap = dict(channel_map) if channel_map is not None else {1: 1, 2: 2, 3: 3, 4: 4}
        for b, c in cmap.items():
            self._check_int("RAW block", b, 1, 4)
            self._check_int("tag channel", c, 0, 4)
        if len(set(cmap.values())) != len(cmap):
            raise self._value_error(f"channel_map {cmap} maps two RAW blocks to one tag channel")
        if frame_period_ps is not None:
            self._check_int("frame_period_ps", frame_period_ps, 1, 10**12)
            if 0 in cmap.values():
                raise self._value_error("frame-referenced mode makes the sync tags itself; "
                                        "channel_map must not route STAR (tag channel 0)")
        self.channel_map = dict(sorted(cmap.items()))
        self.frame_period_ps = frame_period_ps
        self.subacq_width_ps = self._check_int("subacq_width_ps", subacq_width_ps, MIN_SUBACQ_PS, 10**15)
        self.subacq_dead_ps = self._check_int("subacq_dead_ps", subacq_dead_ps, MIN_DEAD_TIME_PS, 10**12)
        ports = dict(stream_ports) if stream_ports is not None else {
            b: DEFAULT_STREAM_PORT_BASE + b for b in self.channel_map}
        for b in self.channel_map:
            if b not in ports:
                raise self._value_error(f"stream_ports has no port for RAW block {b}")
            self._check_int(f"stream port of RAW{b}", ports[b], 1, 65535)
        self.stream_ports = ports
        dblocks = dict(delay_blocks) if delay_blocks is not None else {1: 1, 2: 2, 3: 3, 4: 4}
        for c, k in dblocks.items():
            self._check_int("delay_blocks channel", c, 0, 4)
            self._check_int("DELAy block", k, 1, 16)
        self.delay_blocks = dblocks
        self.dlt = dlt
        self._dlt: Transport | None = None
        self._streams: dict[int, tuple] = {}  # block -> (pair socket, monitor socket)
        self._acq_ids: dict[int, str] = {}
        self._queues: dict[int, deque] = {}
        self._next_subacq = 0
        self._last_frame = -1
        self._work_buf = np.empty(0, np.int64)
        self._work_used = 0
        self.resolution_ps_value = 1.0

    def _value_error(self, msg: str):
        from .errors import DriverValueError

        return DriverValueError(msg, instrument=self.name)

    # -- transport -------------------------------------------------------------------
    @property
    def host(self) -> str:
        if isinstance(self.resource, Transport):
            return "127.0.0.1"
        return parse_host_port(str(self.resource), DEFAULT_SCPI_PORT)[0]

    def _make_transport(self) -> Transport:
        if isinstance(self.resource, Transport):
            return self.resource
        host, port = parse_host_port(str(self.resource), DEFAULT_SCPI_PORT)
        return ZmqReqTransport(f"tcp://{host}:{port}", timeout_s=self.timeout_s)

    def _check_answer(self, command: str, answer: str) -> str:
        if "SCPI_ERR_" in answer:
            raise InstrumentError(f"instrument error: {answer.strip()}", instrument=self.name,
                                  command=command)
        return answer

    def _query(self, command: str, *, timeout_s: float | None = None) -> str:
        return self._check_answer(command, super()._query(command, timeout_s=timeout_s))

    def _write(self, command: str) -> None:
        ans = self._query(command)
        if ans.strip():
            raise MalformedReply("a setting must get an empty answer", reply=ans, instrument=self.name,
                                 command=command)

    def _query_int(self, command: str) -> int:
        ans = self._query(command).strip()
        if ans.upper().endswith("TB"):
            ans = ans[:-2]  # values may carry the time-base unit (IDQ's trim_unit)
        try:
            return int(ans)
        except ValueError:
            raise MalformedReply("expected an integer", reply=ans, instrument=self.name,
                                 command=command) from None

    def _identify(self) -> Identity:
        return Identity.from_idn(self._query("*IDN?"))

    def _before_close(self) -> None:
        if self._streams:
            try:
                self.stop_stream()
            except DriverError:
                log.debug("%s: stop_stream on close failed", self.name, exc_info=True)
        self._close_streams()

    # -- settings ----------------------------------------------------------------------
    @property
    def resolution_ps(self) -> float:
        return self.resolution_ps_value

    def _block(self, channel: int) -> str:
        return _INPUT_BLOCKS[self._check_int("channel", channel, 0, 4)]

    def set_delay_ps(self, channel: int, delay_ps: int) -> None:
        """Delay ``channel``'s signal by ``delay_ps`` (0..1 s, 1 ps steps; manual 6.2.1.4).

        Delays are DELAy blocks linked to an input (IDQ's example: ``DELA1:VALUe 0;LINK INPU1``);
        ``delay_blocks`` says which block serves which tag channel, and the RAW blocks time the
        delayed signal.
        """
        block = self._block(channel)
        if channel not in self.delay_blocks:
            raise self._value_error(f"channel {channel} has no delay block "
                                    f"(delay_blocks={self.delay_blocks})")
        d = self._check_int("delay_ps", delay_ps, 0, 10**12)
        self._write(f"DELA{self.delay_blocks[channel]}:VALU {d};LINK {block}")

    def set_threshold_v(self, channel: int, threshold_v: float) -> None:
        """Set the discriminator threshold of ``channel`` in volts (-2..2 V)."""
        block = self._block(channel)
        v = self._check_range("threshold_v", threshold_v, -2.0, 2.0, "V")
        self._write(f"{block}:THRE {v:.4f}V")

    def set_edge(self, channel: int, edge: str) -> None:
        """Select the RISING or FALLING edge of ``channel``."""
        block = self._block(channel)
        e = self._check_choice("edge", edge, ("RISING", "FALLING"))
        self._write(f"{block}:EDGE {e}")

    def set_enabled(self, channel: int, enabled: bool) -> None:
        block = self._block(channel)
        self._write(f"{block}:ENAB {'ON' if enabled else 'OFF'}")

    def counts(self) -> np.ndarray:
        """Counter value of START and INPUT1..4 (``STAR:COUN?``, ``INPUn:COUN?``), int64[5]."""
        return np.array([self._query_int(f"{_INPUT_BLOCKS[c]}:COUN?") for c in range(5)], np.int64)

    # -- streaming ------------------------------------------------------------------------
    def _dlt_exec(self, command: str) -> dict:
        if self._dlt is None:
            self._dlt = (self.dlt if isinstance(self.dlt, Transport)
                         else ZmqReqTransport(str(self.dlt), timeout_s=self.timeout_s))
        if not self._dlt.is_open:
            self._dlt.open()
        try:
            ans = self._dlt.query(command)
        except DriverError as e:
            raise e.attach(f"{self.name} DLT", command) from None
        try:
            obj = json.loads(ans) if ans.strip() else {}
        except json.JSONDecodeError:
            raise MalformedReply("DataLinkTarget answer is not JSON", reply=ans,
                                 instrument=f"{self.name} DLT", command=command) from None
        if isinstance(obj, dict) and "error" in obj:
            err = obj.get("error") or {}
            desc = err.get("description", "unknown error") if isinstance(err, dict) else str(err)
            raise InstrumentError(f"DataLinkTarget error: {desc}", instrument=f"{self.name} DLT",
                                  command=command)
        if not isinstance(obj, dict):
            raise MalformedReply("DataLinkTarget answer is not a JSON object", reply=ans,
                                 instrument=f"{self.name} DLT", command=command)
        return obj

    def _dlt_host(self) -> str:
        if isinstance(self.dlt, Transport):
            return "127.0.0.1"
        return parse_host_port(str(self.dlt), DEFAULT_DLT_PORT)[0]

    def start_stream(self) -> None:
        """Configure RAW blocks and RECord sub-acquisitions, open the DLT streams, ``REC:PLAY``."""
        import zmq

        _ = self.transport  # NotConnected before anything else
        if self._streams:
            return
        ref = "STAR" if self.frame_period_ps is not None else "NONE"
        for b, c in self.channel_map.items():
            if c in self.delay_blocks:  # time the delayed signal
                k = self.delay_blocks[c]
                self._write(f"DELA{k}:LINK {_INPUT_BLOCKS[c]}")
                self._write(f"RAW{b}:STOP:LINK DELA{k}")
            else:
                self._write(f"RAW{b}:STOP:LINK {_INPUT_BLOCKS[c]}")
            self._write(f"RAW{b}:REF:LINK {ref}")
            self._write(f"RAW{b}:ERRORS:CLEAR")
        self._write("REC:TRIG:ARM:MODE MANU")
        self._write("REC:ENAB ON")
        self._write("REC:STOP")
        self._write("REC:NUM INF")
        self._write(f"REC:PWID {self.subacq_width_ps}")
        self._write(f"REC:PPER {self.subacq_width_ps + self.subacq_dead_ps}")
        ctx = zmq.Context.instance()
        try:
            for b in self.channel_map:
                port = self.stream_ports[b]
                cmd = f"start-stream --address {shlex.quote(self.host)} --channel {b} --stream-port {port}"
                if self.frame_period_ps is not None:
                    cmd += " --with-ref-index"
                ans = self._dlt_exec(cmd)
                if "id" not in ans:
                    raise MalformedReply("start-stream answer has no id", reply=json.dumps(ans),
                                         instrument=f"{self.name} DLT", command=cmd)
                self._acq_ids[b] = str(ans["id"])
                sock = ctx.socket(zmq.PAIR)
                sock.setsockopt(zmq.LINGER, 0)
                mon = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
                sock.connect(f"tcp://{self._dlt_host()}:{port}")
                self._streams[b] = (sock, mon)
                self._queues[b] = deque()
                self._write(f"RAW{b}:SEND ON")
            self._next_subacq = 0
            self._last_frame = -1
            self._write("REC:PLAY")
        except BaseException:
            self._close_streams()
            raise

    def stop_stream(self) -> None:
        """``REC:STOP``, ``RAW#:SEND OFF``, DLT ``stop --id``; close the stream sockets."""
        try:
            if self.is_open:
                self._write("REC:STOP")
                for b in self._acq_ids:
                    self._write(f"RAW{b}:SEND OFF")
            for acq in list(self._acq_ids.values()):
                self._dlt_exec(f"stop --id {acq}")
        finally:
            self._close_streams()

    def _close_streams(self) -> None:
        for sock, mon in self._streams.values():
            try:
                sock.disable_monitor()
            except Exception:  # noqa: BLE001
                pass
            mon.close(linger=0)
            sock.close(linger=0)
        self._streams.clear()
        self._acq_ids.clear()
        self._queues.clear()
        if self._dlt is not None:
            self._dlt.close()
            self._dlt = None

    def close(self) -> None:
        super().close()
        self._close_streams()

    def _poll_streams(self, timeout_s: float) -> None:
        import zmq
        from zmq.utils.monitor import recv_monitor_message

        poller = zmq.Poller()
        for sock, mon in self._streams.values():
            poller.register(sock, zmq.POLLIN)
            poller.register(mon, zmq.POLLIN)
        first = True
        while True:
            events = dict(poller.poll(int(timeout_s * 1000) if first else 0))
            first = False
            if not events:
                return
            for b, (sock, mon) in self._streams.items():
                if mon in events:
                    evt = recv_monitor_message(mon)
                    if evt["event"] == zmq.EVENT_DISCONNECTED:
                        raise ConnectionLost(f"timestamp stream of RAW{b} disconnected",
                                             instrument=self.name, command=f"<RAW{b} stream>")
                if sock in events:
                    data = sock.recv()
                    try:
                        decoded = decode_timestamps(data, with_ref_index=self.frame_period_ps is not None)
                    except DriverError as e:
                        raise e.attach(self.name, f"<RAW{b} stream>") from None
                    self._queues[b].append(decoded)

    def read_tags(self, *, max_tags: int | None = None, timeout_s: float | None = None) -> TagBatch:
        """Return the merged tags of every sub-acquisition all channels have delivered.

        Waits at most ``timeout_s`` for stream data; returns an empty batch if no
        sub-acquisition is complete.  ``max_tags`` is not a hard cap here (a
        sub-acquisition is merged whole); it is accepted for the interface.
        """
        if not self._streams:
            raise NotConnected("stream not started (call start_stream())", instrument=self.name,
                               command="<stream>")
        self._poll_streams(self.timeout_s if timeout_s is None else float(timeout_s))
        return self._merge_ready()

    def _work(self, n: int) -> np.ndarray:
        """The next ``n`` int64 of this merge's work buffer (reused across merges; see referenced_times)."""
        need = self._work_used + n
        if self._work_buf.size < need:
            grown = np.empty(max(need, 2 * self._work_buf.size), np.int64)
            # earlier views of this merge keep the old buffer alive; the new one serves what follows
            self._work_buf, self._work_used, need = grown, 0, n
        view = self._work_buf[self._work_used:need]
        self._work_used = need
        return view

    def _merge_ready(self) -> TagBatch:
        self._work_used = 0
        blocks = list(self.channel_map)
        n_ready = min(len(self._queues[b]) for b in blocks)
        if n_ready == 0:
            return TagBatch.empty()
        pper = self.subacq_width_ps + self.subacq_dead_ps
        times, chans = [], []
        frames = []
        for b in blocks:
            q = self._queues[b]
            msgs = [q.popleft() for _ in range(n_ready)]
            if self.frame_period_ps is not None:
                n = sum(ts.size for ts, _ in msgs)
                try:
                    times.append(referenced_times(msgs, self.frame_period_ps, out=self._work(n)))
                except DriverError as e:
                    raise e.attach(self.name, f"<RAW{b} stream>") from None
                frames.extend(ref[-1:] for _, ref in msgs)  # indices are sorted: the last is the largest
            else:
                times.append(np.concatenate([ts + (self._next_subacq + k) * pper
                                             for k, (ts, _) in enumerate(msgs)]))
            chans.append(self.channel_map[b])
        self._next_subacq += n_ready
        if self.frame_period_ps is not None:
            allf = np.concatenate(frames) if frames else np.empty(0, np.int64)
            if allf.size:
                hi = int(allf.max())
                lo = self._last_frame + 1
                if hi >= lo:
                    times.append(np.arange(lo, hi + 1, dtype=np.int64) * self.frame_period_ps)
                    chans.append(0)
                    self._last_frame = hi
        return merge_channels(times, chans)

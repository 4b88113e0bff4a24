"""Emulated ID Quantique ID900/ID1000 Time Controller and its DataLinkTarget service.

What it is for: the twin of :class:`drivers.idq_id900.IdqTimeController`.  It
runs, on 127.0.0.1, the SCPI request/reply socket of the controller, the
DataLinkTarget (DLT) request/reply socket, and one ZeroMQ PAIR stream socket
per started channel, speaking the protocol described in
``drivers/idq_id900.py`` (SCPI answers, ``SCPI_ERR_`` errors, DLT JSON,
uint64 timestamps or (timestamp, reference index) pairs, one message per
sub-acquisition per channel).

What it must not do: depend on the physical model — its tags come from any
callable/iterable of ``(t_ps int64, channel uint8)`` batches (channel 0 = the
sync on START, n = INPUTn) — or run in wall-clock time: sub-acquisitions are
cut on the source's own clock (DESIGN: the model keeps its own clock).

Faults: ``scpi.faults`` (slow/no/garbage reply, dropped socket),
``scpi.push_error(code, msg)`` (the next answer is ``SCPI_ERR_<code>: msg``),
``garbage_stream()`` (the next stream message is garbage) and
``drop_streams()`` (the DLT closes its stream sockets, as when the link to the
controller is lost).  A DELAy block (``DELAn:VALUe``/``:LINK``) that a RAW block
times shifts the tags of its input as they are taken from the source (a tag
already sent is not re-ordered).

Inputs (``INPUn``/``STARt`` ``:ENABle``, ``:THREshold``, ``:EDGE``) act on the
tags as a discriminator would on the detector's pulses: each input sees
pulses of ``pulse_amplitude_v`` (default -0.8 V, NIM into 50 ohm, the output
of ID Quantique's SPDs) lasting ``pulse_width_ps`` (default 0). A pulse is
timed only if the input is enabled and its threshold lies strictly between 0 V
and the amplitude; the leading edge (FALLING for a negative pulse) keeps the
source's time, the trailing edge adds the pulse width. A threshold outside
-2..2 V is refused (``SCPI_ERR_``). Counters count what passed the gate.
"""

from __future__ import annotations

import shlex
import threading
import time

import numpy as np

from .server import GARBAGE, ZmqRepServer, tag_batches

__all__ = ["TimeControllerState", "IdqScpiServer", "IdqDltServer", "IdqTimeControllerEmulator"]

_SOURCES = {"STAR": 0, "INPU1": 1, "INPU2": 2, "INPU3": 3, "INPU4": 4}


def _canon_block(tok: str) -> str:
    """Map SCPI long/short forms (STARt, INPUt1, RAW2, RECord) to the short upper form."""
    t = tok.upper()
    for long, short in (("START", "STAR"), ("INPUT", "INPU"), ("RECORD", "REC")):
        if t.startswith(long):
            return short + t[len(long):]
    return t


class TimeControllerState:
    """What the emulated controller holds; shared by its SCPI and DLT threads."""

    def __init__(self, source, *, model: str = "ID1000", serial: str = "TC-EMU-0001",
                 firmware: str = "1.9.0"):
        self.lock = threading.Lock()
        self.next_batch = tag_batches(source)
        self.idn = f"ID Quantique,{model},{serial},{firmware}"
        self.inputs = {c: {"ENAB": "ON", "THRE": "-0.5000V", "EDGE": "RISING", "COUP": "DC",
                           "SELE": "UNSHAPED"} for c in ("STAR", "INPU1", "INPU2", "INPU3", "INPU4")}
        self.delays = {k: {"VALU": 0, "LINK": "NONE"} for k in range(1, 9)}
        self.raw = {b: {"STOP": f"INPU{b}", "REF": "NONE", "SEND": False} for b in (1, 2, 3, 4)}
        self.rec = {"ENAB": "ON", "NUM": "1", "PWID": 200_000_000_000, "PPER": 200_000_040_000,
                    "ARM": "MANU", "playing": False}
        self.counts = {c: 0 for c in self.inputs}
        self.pulse_amplitude_v = {c: -0.8 for c in self.inputs}  # what the detectors send (NIM)
        self.pulse_width_ps = {c: 0 for c in self.inputs}
        self.play_epoch = 0  # bumped on each REC:PLAY so the DLT restarts its clock


class IdqScpiServer(ZmqRepServer):
    """The controller's SCPI socket (port 5555 on a real device)."""

    KIND = "id900-scpi"

    def __init__(self, state: TimeControllerState, **kw):
        super().__init__(**kw)
        self.state = state

    def handle(self, request: bytes) -> bytes | None:
        text = request.decode("utf-8", errors="replace").strip()
        if len(self.errors):
            code_msg = self.errors.pop_reply()  # '<code>,"<msg>"'
            code, _, msg = code_msg.partition(",")
            return f"SCPI_ERR_{code.lstrip('-')}: {msg.strip(chr(34))}".encode()
        answers = []
        prefix: list[str] = []
        for part in text.split(";"):
            part = part.strip()
            if not part:
                continue
            # SCPI compound commands: a part without a leading ':' is relative to the previous path
            if part.startswith(":"):
                part, prefix = part[1:], []
            path, _, arg = part.partition(" ")
            nodes = path.split(":")
            full = prefix + nodes if prefix else nodes
            prefix = full[:-1]
            ans = self._one(":".join(full), arg.strip())
            if ans is None:
                return f"SCPI_ERR_UNDEFINED_HEADER: {part}".encode()
            if ans:
                answers.append(ans)
        return "\n".join(answers).encode()

    def _one(self, path: str, arg: str) -> str | None:
        s = self.state
        nodes = [_canon_block(n) for n in path.split(":")]
        head = nodes[0]
        with s.lock:
            if head == "*IDN?":
                return s.idn
            if head in s.inputs and len(nodes) == 2:
                key = nodes[1]
                if key == "COUN?":
                    return str(s.counts[head])
                for k in ("ENAB", "THRE", "EDGE", "COUP", "SELE"):
                    if key.startswith(k):
                        if key.endswith("?"):
                            return s.inputs[head][k]
                        if not arg:
                            return None
                        val = arg.upper()
                        if k == "THRE":
                            try:
                                v = float(val[:-1] if val.endswith("V") else val)
                            except ValueError:
                                return None
                            if not -2.0 <= v <= 2.0:
                                return None
                            val = f"{v:.4f}V"
                        elif k == "ENAB" and val not in ("ON", "OFF"):
                            return None
                        elif k == "EDGE" and val not in ("RISING", "FALLING"):
                            return None
                        s.inputs[head][k] = val
                        return ""
                return None
            if head.startswith("DELA") and head[4:].isdigit() and int(head[4:]) in s.delays:
                blk = s.delays[int(head[4:])]
                key = nodes[1] if len(nodes) == 2 else ""
                if key.startswith("VALU"):
                    if key.endswith("?"):
                        return str(blk["VALU"])
                    try:
                        blk["VALU"] = int(arg)
                    except ValueError:
                        return None
                    return "" if blk["VALU"] >= 0 else None
                if key == "LINK":
                    target = _canon_block(arg)
                    if target not in _SOURCES and target != "NONE":
                        return None
                    blk["LINK"] = target
                    return ""
                if key == "LINK?":
                    return blk["LINK"]
                return None
            if head.startswith("RAW") and head[3:].isdigit() and int(head[3:]) in s.raw:
                raw = s.raw[int(head[3:])]
                rest = ":".join(nodes[1:])
                if rest in ("STOP:LINK", "REF:LINK"):
                    target = _canon_block(arg) if arg else ""
                    is_delay = target.startswith("DELA") and target[4:].isdigit() and \
                        int(target[4:]) in s.delays
                    if target not in _SOURCES and not is_delay and \
                            not (rest == "REF:LINK" and target == "NONE"):
                        return None
                    raw[rest.split(":")[0]] = target
                    return ""
                if rest in ("STOP:LINK?", "REF:LINK?"):
                    return raw[rest.split(":")[0]]
                if rest == "SEND":
                    if arg.upper() not in ("ON", "OFF"):
                        return None
                    raw["SEND"] = arg.upper() == "ON"
                    return ""
                if rest == "SEND?":
                    return "ON" if raw["SEND"] else "OFF"
                if rest in ("ERRORS:CLEAR", "ERRO:CLEA"):
                    return ""
                if rest in ("ERRORS?", "ERRO?"):
                    return "0"
                return None
            if head == "REC":
                rest = ":".join(nodes[1:])
                if rest in ("TRIG:ARM:MODE",):
                    s.rec["ARM"] = arg.upper()
                    return ""
                if rest.startswith("ENAB"):
                    s.rec["ENAB"] = arg.upper() or "ON"
                    return ""
                if rest == "NUM":
                    s.rec["NUM"] = arg.upper()
                    return ""
                if rest in ("PWID", "PPER"):
                    try:
                        s.rec[rest] = int(arg)
                    except ValueError:
                        return None
                    return ""
                if rest == "PLAY":
                    s.rec["playing"] = True
                    s.play_epoch += 1
                    return ""
                if rest == "STOP":
                    s.rec["playing"] = False
                    return ""
                if rest in ("STAG?", "STAGE?"):
                    return "PLAYING" if s.rec["playing"] else "STOPPED"
                return None
        return None


class IdqDltServer(ZmqRepServer):
    """The DataLinkTarget service: ``start-stream``/``stop`` and the PAIR stream sockets.

    Stream data is produced in this server's own thread (ZeroMQ sockets are
    not thread safe), between requests.
    """

    KIND = "id900-dlt"

    def __init__(self, state: TimeControllerState, **kw):
        super().__init__(**kw)
        self.state = state
        self._pairs: dict[int, tuple] = {}  # block -> (socket, acq id, with_ref)
        self._next_id = 1
        self._epoch = 0
        self._k: int | None = None  # sub-acquisition window index on the source's clock
        self._counted_k: int | None = None  # the window whose tags the counters hold
        self._origin_k = 0
        self._pend_t = np.empty(0, np.int64)
        self._pend_c = np.empty(0, np.uint8)
        self._prev_sync = (None, -1)  # (time, index) of the last sync before the window
        self._n_sync_seen = 0
        self._exhausted = False
        self._garbage = 0
        self._drop = False
        self.messages_sent = 0

    def garbage_stream(self, n: int = 1) -> None:
        self._garbage = n

    def drop_streams(self) -> None:
        self._drop = True

    def handle(self, request: bytes) -> bytes | None:
        import json

        import zmq

        try:
            argv = shlex.split(request.decode("utf-8", errors="replace"))
        except ValueError:
            argv = []
        if not argv:
            return json.dumps({"error": {"description": "empty command"}}).encode()
        cmd, opts = argv[0], {}
        i = 1
        while i < len(argv):
            a = argv[i]
            if a.startswith("--") and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                opts[a[2:]] = argv[i + 1]
                i += 2
            else:
                opts[a.lstrip("-")] = True
                i += 1
        if cmd == "start-stream":
            try:
                block, port = int(opts["channel"]), int(opts["stream-port"])
            except (KeyError, ValueError):
                return json.dumps({"error": {"description": "start-stream needs --channel and "
                                                            "--stream-port"}}).encode()
            if block not in (1, 2, 3, 4):
                return json.dumps({"error": {"description": f"invalid channel {block}"}}).encode()
            if block in self._pairs:
                self._pairs.pop(block)[0].close(linger=0)
            sock = self._ctx.socket(zmq.PAIR)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 100)
            # a stream socket closed a moment ago (this block's previous stream, or one a
            # ``stop`` closed) releases its port in ZeroMQ's I/O thread, after close() returns:
            # retry "address in use" for up to 2 s before refusing (a port another process
            # holds still gets the DLT's error)
            end = time.monotonic() + 2.0
            while True:
                try:
                    sock.bind(f"tcp://127.0.0.1:{port}")
                    break
                except zmq.ZMQError as e:
                    if e.errno == zmq.EADDRINUSE and time.monotonic() < end:
                        time.sleep(0.02)
                        continue
                    sock.close(linger=0)
                    return json.dumps({"error": {"description": f"cannot bind port {port}: {e}"}}).encode()
            acq = f"acq-{self._next_id}"
            self._next_id += 1
            self._pairs[block] = (sock, acq, bool(opts.get("with-ref-index")))
            return json.dumps({"id": acq}).encode()
        if cmd == "stop":
            acq = opts.get("id")
            for b, (sock, a, _) in list(self._pairs.items()):
                if a == acq:
                    sock.close(linger=0)
                    del self._pairs[b]
                    return json.dumps({}).encode()
            return json.dumps({"error": {"description": f"no acquisition {acq}"}}).encode()
        return json.dumps({"error": {"description": f"unknown command {cmd}"}}).encode()

    def _unbind(self) -> None:
        for sock, _, _ in self._pairs.values():
            sock.close(linger=0)
        self._pairs.clear()
        super()._unbind()

    def _serve_once(self) -> None:
        super()._serve_once()
        if self._drop:
            self._drop = False
            for sock, _, _ in self._pairs.values():
                sock.close(linger=0)
            self._pairs.clear()
        self._stream_some()

    # -- stream production -----------------------------------------------------------
    def _reset_clock(self) -> None:
        # REC:PLAY restarts the controller's time and reference counting; on the source's clock
        # the acquisition restarts at the window holding the next tag (chosen when it arrives).
        self._k = None
        self._counted_k = None
        self._prev_sync = (None, -1)
        self._n_sync_seen = 0

    def _stream_some(self, max_subacq: int = 8) -> None:
        s = self.state
        with s.lock:
            playing = s.rec["playing"]
            epoch = s.play_epoch
            pwid, pper = int(s.rec["PWID"]), int(s.rec["PPER"])
            raws = {b: dict(r) for b, r in s.raw.items()}
        if epoch != self._epoch:
            self._epoch = epoch
            self._reset_clock()
        active = {b: p for b, p in self._pairs.items() if raws[b]["SEND"]}
        if not playing or not active:
            return
        for _ in range(max_subacq):
            if self._k is None:
                while not self._exhausted and self._pend_t.size == 0:
                    self._pull()
                if self._pend_t.size == 0:
                    return
                self._k = int(self._pend_t[0] // pper)
                self._origin_k = self._k
            end = (self._k + 1) * pper
            while not self._exhausted and (self._pend_t.size == 0 or self._pend_t[-1] < end):
                self._pull()
            if self._exhausted and (self._pend_t.size == 0 or self._pend_t[-1] < self._k * pper):
                return  # nothing left to send
            if not self._send_subacq(active, raws, pwid, pper):
                return
            self._k += 1

    def _source_of(self, link: str) -> int | None:
        """Tag channel behind a RAW STOP link (an input, or a DELAy block linked to one)."""
        if link in _SOURCES:
            return _SOURCES[link]
        if link.startswith("DELA") and link[4:].isdigit():
            with self.state.lock:
                target = self.state.delays.get(int(link[4:]), {}).get("LINK", "NONE")
            return _SOURCES.get(target)
        return None

    def _delays_ps(self) -> np.ndarray:
        """Per input: the value of a DELAy block linked to it and timed by some RAW block."""
        out = np.zeros(256, np.int64)
        with self.state.lock:
            used = {r["STOP"] for r in self.state.raw.values()}
            for k, d in self.state.delays.items():
                if f"DELA{k}" in used and d["LINK"] in _SOURCES:
                    out[_SOURCES[d["LINK"]]] = d["VALU"]
        return out

    def _discriminators(self) -> tuple[np.ndarray, np.ndarray]:
        """Per tag channel: does the input time its pulses, and the edge offset in ps (module docstring)."""
        passes = np.zeros(256, bool)
        edge_ps = np.zeros(256, np.int64)
        with self.state.lock:
            for name, src in _SOURCES.items():
                inp = self.state.inputs[name]
                amp = self.state.pulse_amplitude_v[name]
                thr = float(inp["THRE"].rstrip("V"))
                passes[src] = inp["ENAB"] == "ON" and (amp < thr < 0.0 if amp < 0 else 0.0 < thr < amp)
                trailing = "RISING" if amp < 0 else "FALLING"
                edge_ps[src] = self.state.pulse_width_ps[name] if inp["EDGE"] == trailing else 0
        return passes, edge_ps

    def _pull(self) -> None:
        """Append the source's next batch: through the input discriminators, shifted by the delays."""
        batch = self.state.next_batch()
        if batch is None:
            self._exhausted = True
            return
        t, c = np.asarray(batch[0], np.int64), np.asarray(batch[1], np.uint8)
        passes, edge_ps = self._discriminators()
        if not passes[c].all():
            keep = passes[c]
            t, c = t[keep], c[keep]
        delays = self._delays_ps() + edge_ps
        if delays.any():
            t = t + delays[c]
        t = np.concatenate([self._pend_t, t])
        c = np.concatenate([self._pend_c, c])
        if t.size > 1 and bool((t[1:] < t[:-1]).any()):
            o = np.argsort(t, kind="stable")
            t, c = t[o], c[o]
        self._pend_t, self._pend_c = t, c

    def _send_subacq(self, active: dict, raws: dict, pwid: int, pper: int) -> bool:
        import zmq

        a, b_end = self._k * pper, (self._k + 1) * pper
        n_win = int(np.searchsorted(self._pend_t, b_end, "left"))
        t, c = self._pend_t[:n_win], self._pend_c[:n_win]
        # syncs (START) with their running index from REC:PLAY
        sync_t = t[c == 0]
        sync_i = self._n_sync_seen + np.arange(sync_t.size, dtype=np.int64)
        if self._prev_sync[0] is not None:
            sync_t = np.concatenate([[self._prev_sync[0]], sync_t])
            sync_i = np.concatenate([[self._prev_sync[1]], sync_i])
        in_rec = (t >= a) & (t < a + pwid)
        msgs = {}
        for blk, (_sock, _, with_ref) in active.items():
            src = self._source_of(raws[blk]["STOP"])
            if src is None:
                msgs[blk] = b""
                continue
            sel = t[in_rec & (c == src)]
            if with_ref and raws[blk]["REF"] == "STAR":
                pos = np.searchsorted(sync_t, sel, "right") - 1
                ok = pos >= 0
                sel, pos = sel[ok], pos[ok]
                rec = np.empty((sel.size, 2), "<u8")
                rec[:, 0] = sel - sync_t[pos]
                rec[:, 1] = sync_i[pos]
                msgs[blk] = rec.tobytes()
            else:
                msgs[blk] = (sel - a).astype("<u8").tobytes()
        if not all(active[blk][0].poll(0, zmq.POLLOUT) for blk in msgs):
            return False  # a receiver is not connected or not keeping up: retry later, lose nothing
        if self._counted_k != self._k:
            # counters first, as on the instrument (they count at the input, before any data
            # leave): a client that has read every tag then reads counters that include them
            self._counted_k = self._k
            with self.state.lock:
                for name, src in _SOURCES.items():
                    self.state.counts[name] += int(np.count_nonzero(c == src))
        for blk, data in msgs.items():
            sock = active[blk][0]
            if self._garbage > 0:
                self._garbage -= 1
                data = GARBAGE
            try:
                sock.send(data, zmq.NOBLOCK)
            except zmq.Again:
                return False  # receiver not keeping up: retry this sub-acquisition later
            self.messages_sent += 1
        n_sync_window = int(np.count_nonzero(c == 0))
        if n_sync_window:
            self._prev_sync = (int(t[c == 0][-1]), self._n_sync_seen + n_sync_window - 1)
            self._n_sync_seen += n_sync_window
        self._pend_t, self._pend_c = self._pend_t[n_win:], self._pend_c[n_win:]
        return True


class IdqTimeControllerEmulator:
    """Starts the SCPI and DLT servers around one shared state; ``.scpi_endpoint``, ``.dlt_endpoint``."""

    def __init__(self, source, **state_kw):
        self.state = TimeControllerState(source, **state_kw)
        self.scpi = IdqScpiServer(self.state)
        self.dlt = IdqDltServer(self.state)

    @property
    def scpi_endpoint(self) -> str:
        return self.scpi.endpoint

    @property
    def dlt_endpoint(self) -> str:
        return self.dlt.endpoint

    def garbage_stream(self, n: int = 1) -> None:
        self.dlt.garbage_stream(n)

    def drop_streams(self) -> None:
        self.dlt.drop_streams()

    def start(self):
        self.scpi.start()
        self.dlt.start()
        return self

    def stop(self) -> None:
        self.scpi.stop()
        self.dlt.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

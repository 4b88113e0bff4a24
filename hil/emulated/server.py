"""Scaffolding for emulated instruments: a server thread on 127.0.0.1 with fault injection.

What it is for: every emulated instrument in ``hil/emulated/`` is a real
server speaking the real wire protocol, so the production driver runs
unchanged against it (DESIGN "HIL").  This module holds what they share:

* :class:`EmulatedServer` — a daemon thread, ``start()``/``stop()``, context
  manager, OS-chosen port on 127.0.0.1;
* :class:`TcpLineServer` — line-oriented TCP (SCPI sockets, JSON lines); one
  subclass method ``handle_line(line) -> reply | None``; binary framings override
  ``next_request(buf)`` (both line servers);
* :class:`ZmqRepServer` — request/reply over ZeroMQ (a ROUTER socket, so the
  emulator may also *not* answer, which a REP socket cannot);
* :class:`PtyLineServer` — a serial device on a pseudo-terminal (``.port`` is
  the slave path a pyserial driver opens);
* :class:`TcpStreamServer` — a binary stream pushed to each connected client
  (time-tag streams);
* :class:`Faults` — what a flaky instrument does, switched on by tests:
  slow replies (``delay_s``), no reply (``silence``), a garbage reply
  (``garbage``), a dropped connection (``drop``), entries in the SCPI error
  queue (``push_error``).
* :class:`ScpiErrorQueue` — an IEEE 488.2 error queue answering ``SYST:ERR?``.

What it must not do: bind anything but 127.0.0.1, run a loop that cannot be
stopped (every wait is a poll of at most 50 ms that checks the stop flag), or
import the link engine.

Why threads and polling: emulators run inside pytest next to the driver;
threads keep them in-process (no port hand-off through files) and a 50 ms poll
bounds ``stop()``.  The physical model feeding them is pluggable, so these
classes know nothing of photons.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

__all__ = [
    "Faults",
    "ScpiErrorQueue",
    "EmulatedServer",
    "TcpLineServer",
    "ZmqRepServer",
    "PtyLineServer",
    "TcpStreamServer",
    "GARBAGE",
    "tag_batches",
    "free_tcp_port",
]

GARBAGE = b"\x00\xff#garbage\xfe?\x01"
_POLL_S = 0.05
#: How many of the latest requests an emulator keeps in ``requests``.
REQUEST_HISTORY = 1000


class Faults:
    """Thread-safe fault switches a test flips while the server runs.

    Counters (``silence``, ``garbage``, ``drop``) apply to that many coming
    replies (or stream chunks) and count down; ``delay_s`` applies to every
    reply until reset.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.delay_s = 0.0
        self.silence = 0
        self.garbage = 0
        self.drop = 0

    def set(self, **kw) -> Faults:
        with self._lock:
            for k, v in kw.items():
                if k not in ("delay_s", "silence", "garbage", "drop"):
                    raise ValueError(f"unknown fault {k!r}")
                setattr(self, k, v)
        return self

    def clear(self) -> None:
        self.set(delay_s=0.0, silence=0, garbage=0, drop=0)

    def take(self, kind: str) -> bool:
        """True (and count down) if a ``kind`` fault is pending."""
        with self._lock:
            n = getattr(self, kind)
            if n > 0:
                setattr(self, kind, n - 1)
                return True
            return False

    def wait_delay(self, stop: threading.Event) -> None:
        d = self.delay_s
        if d > 0:
            stop.wait(d)


class ScpiErrorQueue:
    """An SCPI error queue (first in, first out), as ``SYST:ERR?`` reads it."""

    def __init__(self, capacity: int = 32):
        self._q: deque[tuple[int, str]] = deque()
        self._lock = threading.Lock()
        self.capacity = capacity

    def push(self, code: int, message: str) -> None:
        with self._lock:
            if len(self._q) >= self.capacity:
                self._q[-1] = (-350, "Queue overflow")
            else:
                self._q.append((int(code), message))

    def pop_reply(self) -> str:
        with self._lock:
            code, msg = self._q.popleft() if self._q else (0, "No error")
        return f'{code},"{msg}"'

    def __len__(self) -> int:
        return len(self._q)


class EmulatedServer:
    """A server thread on 127.0.0.1; subclasses implement ``_bind()`` and ``_serve_once()``."""

    KIND = "emulator"

    def __init__(self, *, name: str | None = None):
        self.name = name or self.KIND
        self.faults = Faults()
        self.errors = ScpiErrorQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.host = "127.0.0.1"
        self.port: int | None = None
        # what clients sent, for tests that look at the wire: the latest REQUEST_HISTORY only
        # (AWG waveform uploads are ~1 MB a frame; an unbounded list grew the rig by ~37 MB/s)
        self.requests: deque = deque(maxlen=REQUEST_HISTORY)
        self.exception: BaseException | None = None

    # -- subclass API ----------------------------------------------------------------
    def _bind(self) -> None:
        raise NotImplementedError

    def _serve_once(self) -> None:
        """Do at most ~50 ms of work; called in a loop until stop()."""
        raise NotImplementedError

    def _unbind(self) -> None:
        pass

    # -- lifecycle -------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def push_error(self, code: int, message: str) -> None:
        """Put an entry in the instrument's error queue (fault injection)."""
        self.errors.push(code, message)

    def start(self):
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        self._stop.clear()
        self._bind()
        self._thread = threading.Thread(target=self._run, name=f"emu-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._serve_once()
        except BaseException as e:  # noqa: BLE001 - kept for the test to inspect
            self.exception = e
            log.exception("%s: server thread died", self.name)
        finally:
            self._unbind()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None:
            t.join(timeout_s)
            if t.is_alive():
                raise RuntimeError(f"{self.name}: server thread did not stop within {timeout_s} s")

    def __enter__(self):
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class _TcpListener(EmulatedServer):
    """A listening TCP socket on 127.0.0.1 with at most one client (the shared part of
    the line and stream servers): ``address``, bind/unbind, dropping the client."""

    backlog = 4

    def __init__(self, *, port: int = 0, **kw):
        super().__init__(**kw)
        self._want_port = port
        self._lsock: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._buf = bytearray()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _bind(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self._want_port))
        s.listen(self.backlog)
        s.setblocking(False)
        self._lsock = s
        self.port = s.getsockname()[1]

    def _unbind(self) -> None:
        self._drop_client()
        if self._lsock is not None:
            self._lsock.close()
            self._lsock = None

    def _drop_client(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None
            self._buf.clear()
            self.on_disconnect()

    def on_disconnect(self) -> None:
        """Hook: the client went away (or was dropped)."""

    def _accept(self) -> socket.socket | None:
        """Wait up to one poll period for a client; the new connection, or None."""
        assert self._lsock is not None
        r, _, _ = select.select([self._lsock], [], [], _POLL_S)
        if not r:
            return None
        try:
            conn, _ = self._lsock.accept()
        except BlockingIOError:
            return None
        return conn


class TcpLineServer(_TcpListener):
    """Line-oriented TCP server; one client at a time (like most instrument sockets).

    Subclasses implement ``handle_line(line: str) -> str | bytes | None`` (None =
    no reply).  A ``str`` reply gets ``reply_termination`` appended.
    """

    read_termination = b"\n"
    reply_termination = b"\n"
    encoding = "ascii"

    def on_connect(self) -> None:
        """Hook: a client connected."""

    def handle_line(self, line: str) -> str | bytes | None:
        raise NotImplementedError

    def send_raw(self, data: bytes) -> None:
        """Send bytes to the current client (from the server thread)."""
        if self._conn is not None:
            self._conn.setblocking(True)
            self._conn.settimeout(5.0)
            try:
                self._conn.sendall(data)
            except OSError:
                self._drop_client()

    def _serve_once(self) -> None:
        if self._conn is None:
            conn = self._accept()
            if conn is not None:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._conn = conn
                self.on_connect()
            return
        r, _, _ = select.select([self._conn], [], [], _POLL_S)
        if not r:
            return
        try:
            self._conn.setblocking(False)
            chunk = self._conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop_client()
            return
        self._buf += chunk
        while self._conn is not None:
            req = self.next_request(self._buf)
            if req is None:
                break
            self.requests.append(req)
            self._respond(req)

    def next_request(self, buf: bytearray):
        """Cut the next request out of ``buf`` (consuming it) or return None if incomplete.

        Default: a text line ending in ``read_termination``.  Binary protocols (e.g.
        Thorlabs APT frames) override this and get their request object in ``handle_line``.
        """
        i = buf.find(self.read_termination)
        if i < 0:
            return None
        raw = bytes(buf[:i])
        del buf[: i + len(self.read_termination)]
        return raw.decode(self.encoding, errors="replace").strip("\r")

    def _respond(self, line) -> None:
        if self.faults.take("drop"):
            self._drop_client()
            return
        reply = self.handle_line(line)
        if reply is None:
            return
        if self.faults.take("silence"):
            return
        self.faults.wait_delay(self._stop)
        if self.faults.take("garbage"):
            data = GARBAGE + self.reply_termination
        elif isinstance(reply, str):
            data = reply.encode(self.encoding) + self.reply_termination
        else:
            data = reply
        self.send_raw(data)


class PtyLineServer(TcpLineServer):
    """Line-oriented serial device on a pseudo-terminal; ``.port`` is the slave path.

    A "dropped connection" on a serial line means the device stops answering
    until the next request after the drop (cables do not reconnect themselves).
    """

    def _bind(self) -> None:
        import tty

        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        self._master = master
        self._slave = slave  # kept open so the master never sees EIO between clients
        self.port = os.ttyname(slave)  # type: ignore[assignment]

    @property
    def address(self) -> str:
        return str(self.port)

    def _unbind(self) -> None:
        for fd in (getattr(self, "_master", None), getattr(self, "_slave", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None

    def send_raw(self, data: bytes) -> None:
        os.write(self._master, data)

    def _drop_client(self) -> None:
        self._buf.clear()

    def _serve_once(self) -> None:
        r, _, _ = select.select([self._master], [], [], _POLL_S)
        if not r:
            return
        try:
            chunk = os.read(self._master, 65536)
        except OSError:
            return
        self._buf += chunk
        while True:
            req = self.next_request(self._buf)
            if req is None:
                break
            self.requests.append(req)
            self._respond(req)


class ZmqRepServer(EmulatedServer):
    """ZeroMQ request/reply server on ``tcp://127.0.0.1:<port>``.

    Subclasses implement ``handle(request: bytes) -> bytes | None`` (None = no
    reply).  A ROUTER socket stands in for REP so a fault can leave a request
    unanswered; ``drop`` closes and re-binds the socket on the same port (the
    instrument restarted), which a REQ client sees as a missing reply.
    """

    def __init__(self, *, port: int = 0, **kw):
        super().__init__(**kw)
        self._want_port = port
        self._sock = None
        self._ctx = None

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def _bind(self) -> None:
        import zmq

        self._ctx = zmq.Context.instance()
        s = self._ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        if self._want_port or self.port:
            s.bind(f"tcp://{self.host}:{self.port or self._want_port}")
        else:
            self.port = s.bind_to_random_port(f"tcp://{self.host}")
        self._sock = s

    def _unbind(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def handle(self, request: bytes) -> bytes | None:
        raise NotImplementedError

    def _rebind(self) -> None:
        self._unbind()
        for _ in range(50):  # the port may take a moment to be free again
            try:
                self._bind()
                return
            except Exception:  # noqa: BLE001 - zmq.ZMQError (address in use)
                time.sleep(0.02)
        self._bind()

    def _serve_once(self) -> None:
        import zmq

        if not self._sock.poll(int(_POLL_S * 1000), zmq.POLLIN):
            return
        frames = self._sock.recv_multipart()
        if len(frames) < 3:
            return
        ident, delim, payload = frames[0], frames[1], frames[2]
        self.requests.append(payload)
        if self.faults.take("drop"):
            self._rebind()
            return
        reply = self.handle(payload)
        if reply is None or self.faults.take("silence"):
            return
        self.faults.wait_delay(self._stop)
        if self.faults.take("garbage"):
            reply = GARBAGE
        self._sock.send_multipart([ident, delim, reply])


class TcpStreamServer(_TcpListener):
    """Pushes binary chunks to one connected TCP client.

    ``produce() -> bytes | None`` is called while a client is connected and
    streaming is enabled (``streaming`` flag); ``greeting() -> bytes`` is sent
    once on connect.  Faults: ``drop`` closes the connection mid-stream,
    ``garbage`` sends a chunk of garbage instead of the next chunk, ``delay_s``
    pauses between chunks.  Subclasses may also read text commands from the
    client with ``handle_line``.
    """

    backlog = 2

    def __init__(self, *, port: int = 0, **kw):
        super().__init__(port=port, **kw)
        self.streaming = threading.Event()
        self.connections = 0
        self.chunks_sent = 0

    def greeting(self) -> bytes:
        return b""

    def produce(self) -> bytes | None:
        raise NotImplementedError

    def handle_line(self, line: str) -> bytes | None:
        return None

    def _send(self, data: bytes) -> bool:
        assert self._conn is not None
        view = memoryview(data)
        while view:
            if self._stop.is_set():
                return False
            _, w, _ = select.select([], [self._conn], [], _POLL_S)
            if not w:
                continue
            try:
                n = self._conn.send(view)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                self._drop_client()
                return False
            view = view[n:]
        return True

    def _serve_once(self) -> None:
        if self._conn is None:
            conn = self._accept()
            if conn is not None:
                conn.setblocking(False)
                self._conn = conn
                self.connections += 1
                g = self.greeting()
                if g:
                    self._send(g)
            return
        # commands from the client (if any)
        r, _, _ = select.select([self._conn], [], [], 0 if self.streaming.is_set() else _POLL_S)
        if r:
            try:
                chunk = self._conn.recv(65536)
            except (BlockingIOError, InterruptedError):
                chunk = None
            except OSError:
                chunk = b""
            if chunk == b"":
                self._drop_client()
                return
            if chunk:
                self._buf += chunk
                while (i := self._buf.find(b"\n")) >= 0:
                    line = bytes(self._buf[:i]).decode("ascii", errors="replace").strip()
                    del self._buf[: i + 1]
                    self.requests.append(line)
                    reply = self.handle_line(line)
                    if reply and self._conn is not None:
                        self._send(reply)
        if self._conn is None or not self.streaming.is_set():
            return
        if self.faults.take("drop"):
            self._drop_client()
            return
        self.faults.wait_delay(self._stop)
        data = self.produce()
        if data is None:
            self._stop.wait(0.005)
            return
        if self.faults.take("garbage"):
            data = GARBAGE * max(1, len(data) // len(GARBAGE))
        if self._send(data):
            self.chunks_sent += 1


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for protocols where the client names it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tag_batches(source) -> Callable[[], tuple | None]:
    """Normalize a tag source (iterable or callable of ``(t_ps, channel)`` batches) to a callable.

    The callable returns the next batch or None when the source is exhausted.
    """
    if callable(source):
        return source
    it = iter(source)

    def nxt():
        return next(it, None)

    return nxt

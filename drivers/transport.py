"""Byte transports with timeouts that instrument drivers talk through.

What it is for: give every driver the same small surface whatever the wire is,

* :class:`TcpTransport` — a raw TCP stream (SCPI sockets on port 5025, JSON
  lines to an SNSPD controller, binary tag streams);
* :class:`SerialTransport` — a pyserial port (EPC-400, MPC320; works on a pty);
* :class:`VisaTransport` — a pyvisa resource (``TCPIP::host::port::SOCKET``,
  ``ASRL/dev/ttyUSB0::INSTR``, USB-TMC, GPIB), defaulting to the pure-Python
  ``@py`` backend so no vendor VISA is needed;
* :class:`ZmqReqTransport` — a ZeroMQ REQ socket (ID Quantique Time
  Controllers), one request, one reply.

Stream transports (:class:`StreamTransport` subclasses) offer ``write``,
``read_until``, ``read_exact``, ``read_some`` and the line helpers
``write_line``/``read_line``/``query``.  ``ZmqReqTransport`` is message based
and offers ``request``/``query``.

What it must not do: know any instrument's commands, retry, or block forever.
Every read has a deadline (``timeout_s``, overridable per call) and raises
:class:`~drivers.errors.DriverTimeout` when it passes; a closed or reset peer
raises :class:`~drivers.errors.ConnectionLost`; using a closed transport raises
:class:`~drivers.errors.NotConnected`.  The errors carry no instrument or
command; :class:`drivers.base.Instrument` attaches them.

Why this shape: pyvisa already covers VISA resources but not ZeroMQ, and its
socket backend cannot hand back "whatever bytes have arrived" for a binary
stream; a thin buffered reader over ``socket``/``serial`` with one deadline per
call does both, and keeps the fake transport of protocol tests trivial (see
``tests/drivers_fakes.py``).  The ZeroMQ REQ socket follows the "lazy pirate"
pattern of the ZeroMQ guide (ch. 4): after a timeout the REQ socket is closed
and reopened, because a REQ socket that missed its reply cannot send again.
"""

from __future__ import annotations

import socket
import time
from abc import ABC, abstractmethod

from .errors import ConnectionLost, DriverTimeout, DriverValueError, MalformedReply, NotConnected

__all__ = [
    "Transport",
    "StreamTransport",
    "TcpTransport",
    "SerialTransport",
    "VisaTransport",
    "ZmqReqTransport",
    "parse_host_port",
]

_MAX_LINE = 1 << 20


def parse_host_port(address: str, default_port: int | None = None) -> tuple[str, int]:
    """Split ``"host:port"``, ``"tcp://host:port"`` or ``"host"`` (with a default port)."""
    a = address.strip()
    for prefix in ("tcp://", "socket://", "zmq://"):
        if a.startswith(prefix):
            a = a[len(prefix):]
    host, sep, port = a.rpartition(":")
    if not sep:
        host, port = a, ""
    if not port:
        if default_port is None:
            raise DriverValueError(f"address {address!r} has no port (expected host:port)")
        return host or "127.0.0.1", int(default_port)
    try:
        p = int(port)
    except ValueError:
        raise DriverValueError(f"address {address!r}: port {port!r} is not an integer") from None
    if not 0 < p < 65536:
        raise DriverValueError(f"address {address!r}: port {p} out of range 1..65535")
    return host or "127.0.0.1", p


class Transport(ABC):
    """Common lifecycle of every transport: ``open``/``close``/``is_open`` and a default timeout."""

    def __init__(self, *, timeout_s: float = 2.0):
        if not (timeout_s > 0):
            raise DriverValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)

    @property
    @abstractmethod
    def description(self) -> str:
        """A short text naming the endpoint, e.g. ``tcp://127.0.0.1:5025``."""

    @abstractmethod
    def open(self) -> None:
        """Connect; raises DriverTimeout / ConnectionLost when the peer is not there."""

    @abstractmethod
    def close(self) -> None:
        """Disconnect; safe to call twice."""

    @property
    @abstractmethod
    def is_open(self) -> bool: ...

    @abstractmethod
    def query(self, command: str, *, timeout_s: float | None = None) -> str:
        """Send one text command and return the text reply (terminator stripped)."""

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description})"


class StreamTransport(Transport):
    """A buffered byte stream with per-call deadlines; subclasses supply ``_send`` and ``_recv``.

    ``write_termination``/``read_termination`` are used by the line helpers only;
    binary reads (``read_exact``, ``read_some``) see the raw bytes.
    """

    def __init__(self, *, timeout_s: float = 2.0, write_termination: bytes = b"\n",
                 read_termination: bytes = b"\n", encoding: str = "ascii"):
        super().__init__(timeout_s=timeout_s)
        if not read_termination:
            raise DriverValueError("read_termination must not be empty")
        self.write_termination = bytes(write_termination)
        self.read_termination = bytes(read_termination)
        self.encoding = encoding
        self._buf = bytearray()

    # -- what subclasses implement ------------------------------------------------
    @abstractmethod
    def _send(self, data: bytes) -> None: ...

    @abstractmethod
    def _recv(self, max_bytes: int, timeout_s: float) -> bytes:
        """Return 1..max_bytes bytes, or b"" if none arrived within timeout_s.

        Raise ConnectionLost if the peer has gone away.
        """

    # -- byte level -----------------------------------------------------------------
    def _deadline(self, timeout_s: float | None) -> float:
        return time.monotonic() + (self.timeout_s if timeout_s is None else float(timeout_s))

    def _fill(self, deadline: float, want: int = 65536) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DriverTimeout(f"no reply within {self.timeout_s:g} s on {self.description}")
        chunk = self._recv(max(want, 1), remaining)
        if not chunk and time.monotonic() >= deadline:
            raise DriverTimeout(f"no reply within {self.timeout_s:g} s on {self.description}")
        self._buf += chunk

    def write(self, data: bytes) -> None:
        """Send all of ``data``."""
        if not self.is_open:
            raise NotConnected(f"{self.description} is not open")
        self._send(bytes(data))

    def read_exact(self, n: int, *, timeout_s: float | None = None) -> bytes:
        """Return exactly ``n`` bytes or raise DriverTimeout (the partial bytes stay buffered)."""
        if not self.is_open:
            raise NotConnected(f"{self.description} is not open")
        deadline = self._deadline(timeout_s)
        while len(self._buf) < n:
            self._fill(deadline, n - len(self._buf))
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def read_until(self, terminator: bytes, *, timeout_s: float | None = None,
                   max_bytes: int = _MAX_LINE) -> bytes:
        """Return the bytes before the next ``terminator`` (which is consumed)."""
        if not self.is_open:
            raise NotConnected(f"{self.description} is not open")
        deadline = self._deadline(timeout_s)
        start = 0
        while True:
            i = self._buf.find(terminator, start)
            if i >= 0:
                out = bytes(self._buf[:i])
                del self._buf[: i + len(terminator)]
                return out
            if len(self._buf) > max_bytes:
                head = bytes(self._buf[:80])
                self._buf.clear()
                raise MalformedReply(f"no {terminator!r} within {max_bytes} bytes", reply=head)
            start = max(0, len(self._buf) - len(terminator) + 1)
            self._fill(deadline)

    def read_some(self, max_bytes: int = 1 << 20, *, timeout_s: float | None = None) -> bytes:
        """Return what is buffered or arrives within the timeout (up to ``max_bytes``); b"" if nothing."""
        if not self.is_open:
            raise NotConnected(f"{self.description} is not open")
        if not self._buf:
            t = self.timeout_s if timeout_s is None else float(timeout_s)
            self._buf += self._recv(max_bytes, t)
        out = bytes(self._buf[:max_bytes])
        del self._buf[:max_bytes]
        return out

    def clear_input(self) -> None:
        """Drop buffered bytes and whatever is already waiting on the wire."""
        self._buf.clear()
        if self.is_open:
            while self._recv(65536, 0.0):
                pass

    # -- line level -----------------------------------------------------------------
    def write_line(self, text: str) -> None:
        self.write(text.encode(self.encoding) + self.write_termination)

    def read_line(self, *, timeout_s: float | None = None) -> str:
        raw = self.read_until(self.read_termination, timeout_s=timeout_s)
        try:
            return raw.decode(self.encoding).rstrip("\r")
        except UnicodeDecodeError:
            raise MalformedReply(f"reply is not {self.encoding} text", reply=raw) from None

    def query(self, command: str, *, timeout_s: float | None = None) -> str:
        self.write_line(command)
        return self.read_line(timeout_s=timeout_s)


class TcpTransport(StreamTransport):
    """Raw TCP client (``socket``); ``open`` connects within ``connect_timeout_s``."""

    def __init__(self, host: str, port: int, *, connect_timeout_s: float | None = None, **kw):
        super().__init__(**kw)
        self.host = host
        self.port = int(port)
        self.connect_timeout_s = self.timeout_s if connect_timeout_s is None else float(connect_timeout_s)
        self._sock: socket.socket | None = None

    @classmethod
    def from_address(cls, address: str, default_port: int | None = None, **kw) -> TcpTransport:
        host, port = parse_host_port(address, default_port)
        return cls(host, port, **kw)

    @property
    def description(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def open(self) -> None:
        if self._sock is not None:
            return
        try:
            s = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        except TimeoutError:
            raise DriverTimeout(f"connect to {self.description} timed out") from None
        except OSError as e:
            raise ConnectionLost(f"cannot connect to {self.description}: {e}") from None
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = s
        self._buf.clear()

    def close(self) -> None:
        s, self._sock = self._sock, None
        self._buf.clear()
        if s is not None:
            try:
                s.close()
            except OSError:
                pass

    def _send(self, data: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.settimeout(self.timeout_s)
            self._sock.sendall(data)
        except TimeoutError:
            raise DriverTimeout(f"send to {self.description} timed out") from None
        except OSError as e:
            self.close()
            raise ConnectionLost(f"send to {self.description} failed: {e}") from None

    def _recv(self, max_bytes: int, timeout_s: float) -> bytes:
        if self._sock is None:
            raise NotConnected(f"{self.description} is not open")
        try:
            self._sock.settimeout(timeout_s if timeout_s > 0 else 0.0)
            chunk = self._sock.recv(max_bytes)
        except (TimeoutError, BlockingIOError):
            return b""
        except OSError as e:
            self.close()
            raise ConnectionLost(f"connection to {self.description} failed: {e}") from None
        if not chunk:
            self.close()
            raise ConnectionLost(f"{self.description} closed the connection")
        return chunk


class SerialTransport(StreamTransport):
    """pyserial port (a real UART, a USB-serial adapter or a pty)."""

    def __init__(self, port: str, *, baudrate: int = 9600, bytesize: int = 8, parity: str = "N",
                 stopbits: float = 1, rtscts: bool = False, **kw):
        super().__init__(**kw)
        self.port = port
        self.settings = dict(baudrate=int(baudrate), bytesize=bytesize, parity=parity,
                             stopbits=stopbits, rtscts=rtscts)
        self._ser = None

    @property
    def description(self) -> str:
        return f"serial://{self.port}@{self.settings['baudrate']}"

    @property
    def is_open(self) -> bool:
        return self._ser is not None

    def open(self) -> None:
        import serial  # pyserial; imported here so TCP-only users do not pay for it

        if self._ser is not None:
            return
        try:
            self._ser = serial.Serial(self.port, timeout=self.timeout_s, write_timeout=self.timeout_s,
                                      **self.settings)
        except (serial.SerialException, OSError) as e:
            raise ConnectionLost(f"cannot open {self.description}: {e}") from None
        self._buf.clear()

    def close(self) -> None:
        s, self._ser = self._ser, None
        self._buf.clear()
        if s is not None:
            try:
                s.close()
            except Exception:  # noqa: BLE001 - closing a vanished port must not raise
                pass

    def _send(self, data: bytes) -> None:
        import serial

        try:
            self._ser.write(data)
            self._ser.flush()
        except serial.SerialTimeoutException:
            raise DriverTimeout(f"write to {self.description} timed out") from None
        except (serial.SerialException, OSError) as e:
            self.close()
            raise ConnectionLost(f"write to {self.description} failed: {e}") from None

    def _recv(self, max_bytes: int, timeout_s: float) -> bytes:
        import serial

        if self._ser is None:
            raise NotConnected(f"{self.description} is not open")
        try:
            self._ser.timeout = max(timeout_s, 0.0)
            waiting = self._ser.in_waiting
            return self._ser.read(min(max_bytes, waiting) if waiting else 1)
        except (serial.SerialException, OSError) as e:
            self.close()
            raise ConnectionLost(f"read from {self.description} failed: {e}") from None


class VisaTransport(StreamTransport):
    """A pyvisa resource, read through ``read_bytes`` so binary and line reads share one buffer.

    ``backend`` defaults to ``"@py"`` (pyvisa-py), which speaks ``TCPIP::host::port::SOCKET``
    and ``ASRL<port>::INSTR`` without vendor libraries.  Line reads let VISA stop at the
    termination character; binary reads use ``read_bytes``.  pyvisa-py reports a peer that
    closed a SOCKET resource as a timeout, so a dropped connection may surface as
    DriverTimeout here (``reconnect()`` recovers either way).
    """

    def __init__(self, resource: str, *, backend: str = "@py", **kw):
        super().__init__(**kw)
        self.resource = resource
        self.backend = backend
        self._rm = None
        self._res = None

    @property
    def description(self) -> str:
        return self.resource

    @property
    def is_open(self) -> bool:
        return self._res is not None

    def open(self) -> None:
        import pyvisa

        if self._res is not None:
            return
        try:
            self._rm = pyvisa.ResourceManager(self.backend)
            self._res = self._rm.open_resource(self.resource, open_timeout=int(self.timeout_s * 1000))
        except pyvisa.errors.VisaIOError as e:
            self.close()
            if e.error_code == pyvisa.constants.StatusCode.error_timeout:
                raise DriverTimeout(f"open {self.resource} timed out") from None
            raise ConnectionLost(f"cannot open {self.resource}: {e}") from None
        except (OSError, ValueError) as e:
            self.close()
            raise ConnectionLost(f"cannot open {self.resource}: {e}") from None
        # Termination is handled by our buffer so binary blocks pass untouched.
        self._res.read_termination = None
        self._res.write_termination = None
        self._buf.clear()

    def close(self) -> None:
        res, rm, self._res, self._rm = self._res, self._rm, None, None
        self._buf.clear()
        for obj in (res, rm):
            if obj is not None:
                try:
                    obj.close()
                except Exception:  # noqa: BLE001 - closing must not raise
                    pass

    def _send(self, data: bytes) -> None:
        import pyvisa

        try:
            self._res.timeout = int(self.timeout_s * 1000)
            self._res.write_raw(data)
        except pyvisa.errors.VisaIOError as e:
            if e.error_code == pyvisa.constants.StatusCode.error_timeout:
                raise DriverTimeout(f"write to {self.resource} timed out") from None
            self.close()
            raise ConnectionLost(f"write to {self.resource} failed: {e}") from None

    def _visa_call(self, fn, timeout_s: float):
        import pyvisa

        if self._res is None:
            raise NotConnected(f"{self.resource} is not open")
        try:
            self._res.timeout = max(int(timeout_s * 1000), 1)
            return fn()
        except pyvisa.errors.VisaIOError as e:
            if e.error_code == pyvisa.constants.StatusCode.error_timeout:
                raise DriverTimeout(f"no reply within {timeout_s:g} s on {self.resource}") from None
            self.close()
            raise ConnectionLost(f"read from {self.resource} failed: {e}") from None
        except (OSError, EOFError) as e:
            self.close()
            raise ConnectionLost(f"read from {self.resource} failed: {e}") from None

    def _recv(self, max_bytes: int, timeout_s: float) -> bytes:
        # Only read_some lands here (read_until/read_exact are overridden): one byte, then
        # whatever the next short reads give, so no call waits longer than timeout_s.
        try:
            return bytes(self._visa_call(lambda: self._res.read_bytes(1), max(timeout_s, 0.001)))
        except DriverTimeout:
            return b""

    def read_until(self, terminator: bytes, *, timeout_s: float | None = None,
                   max_bytes: int = _MAX_LINE) -> bytes:
        """Let VISA stop at the termination character (pyvisa-py cannot return partial socket reads)."""
        if terminator not in self._buf:
            t = self.timeout_s if timeout_s is None else float(timeout_s)
            term = terminator.decode("latin-1")

            def read():
                self._res.read_termination = term
                try:
                    return self._res.read_raw()
                finally:
                    self._res.read_termination = None

            self._buf += bytes(self._visa_call(read, t))
            if len(self._buf) > max_bytes:
                head = bytes(self._buf[:80])
                self._buf.clear()
                raise MalformedReply(f"no {terminator!r} within {max_bytes} bytes", reply=head)
        return super().read_until(terminator, timeout_s=timeout_s, max_bytes=max_bytes)

    def read_exact(self, n: int, *, timeout_s: float | None = None) -> bytes:
        need = n - len(self._buf)
        if need > 0:
            t = self.timeout_s if timeout_s is None else float(timeout_s)
            self._buf += bytes(self._visa_call(lambda: self._res.read_bytes(need), t))
        return super().read_exact(n, timeout_s=timeout_s)


class ZmqReqTransport(Transport):
    """A ZeroMQ REQ client: ``request(bytes) -> bytes`` with a deadline (lazy-pirate reset).

    ``endpoint`` is a ZeroMQ endpoint such as ``tcp://169.254.99.100:5555``.
    """

    def __init__(self, endpoint: str, *, encoding: str = "utf-8", **kw):
        super().__init__(**kw)
        if "://" not in endpoint:
            host, port = parse_host_port(endpoint)
            endpoint = f"tcp://{host}:{port}"
        self.endpoint = endpoint
        self.encoding = encoding
        self._ctx = None
        self._sock = None

    @property
    def description(self) -> str:
        return self.endpoint

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def open(self) -> None:
        import zmq

        if self._sock is not None:
            return
        if self._ctx is None:
            self._ctx = zmq.Context.instance()
        s = self._ctx.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        # Fail sends fast instead of queueing forever when the peer is not there.
        s.setsockopt(zmq.SNDTIMEO, int(self.timeout_s * 1000))
        s.setsockopt(zmq.IMMEDIATE, 1)
        s.connect(self.endpoint)
        self._sock = s

    def close(self) -> None:
        s, self._sock = self._sock, None
        if s is not None:
            s.close(linger=0)

    def _reset(self) -> None:
        self.close()
        self.open()

    def request(self, data: bytes, *, timeout_s: float | None = None) -> bytes:
        """Send one message and return the one-part reply; DriverTimeout after ``timeout_s``."""
        import zmq

        if self._sock is None:
            raise NotConnected(f"{self.endpoint} is not open")
        t = self.timeout_s if timeout_s is None else float(timeout_s)
        try:
            self._sock.send(data)
        except zmq.Again:
            self._reset()
            raise DriverTimeout(f"{self.endpoint} did not accept the request within {t:g} s") from None
        except zmq.ZMQError as e:
            self._reset()
            raise ConnectionLost(f"send to {self.endpoint} failed: {e}") from None
        if not self._sock.poll(int(t * 1000), zmq.POLLIN):
            self._reset()  # a REQ socket that missed its reply cannot send again
            raise DriverTimeout(f"no reply within {t:g} s from {self.endpoint}")
        parts = self._sock.recv_multipart()
        if len(parts) != 1:
            raise MalformedReply(f"expected a one-part reply, got {len(parts)} parts",
                                 reply=b"|".join(parts)[:80])
        return parts[0]

    def query(self, command: str, *, timeout_s: float | None = None) -> str:
        raw = self.request(command.encode(self.encoding), timeout_s=timeout_s)
        try:
            return raw.decode(self.encoding).rstrip("\r\n")
        except UnicodeDecodeError:
            raise MalformedReply(f"reply is not {self.encoding} text", reply=raw) from None

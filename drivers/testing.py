"""Protocol-test transports: assert the exact bytes a driver sends and feed it scripted replies.

What it is for: pymeasure's ``expected_protocol`` idea for our transports.  A
protocol test lists the exchange — what the driver must write and what the
instrument answers — and runs the real driver code against it with no socket::

    with expected_protocol(ID900, [("*IDN?", "ID Quantique,ID1000,1,2"),
                                   ("INPU1:DELAY 1200", "")]) as tc:
        tc.set_delay_ps(1, 1200)

What it must not do: be used outside tests, or be lenient: any extra,
missing or different message fails the test with both sides shown.

Why two fakes: stream transports (TCP, serial, VISA) see a byte stream with
terminators, matched byte by byte whatever the write boundaries
(:class:`FakeStreamTransport`, the one scripted stream every driver protocol
test uses); request/reply transports (ZeroMQ) see whole messages
(:class:`FakeReqTransport`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager

from .errors import DriverTimeout, NotConnected
from .transport import StreamTransport, Transport

__all__ = ["FakeStreamTransport", "FakeReqTransport", "expected_protocol"]

Pair = tuple[bytes | str | None, bytes | str | None]


def _b(x: bytes | str | None, term: bytes = b"") -> bytes | None:
    if x is None:
        return None
    return (x.encode() + term) if isinstance(x, str) else bytes(x)


class FakeStreamTransport(StreamTransport):
    """A stream whose written bytes must equal the scripted ones; replies are queued for reading.

    ``pairs`` items are ``(sent, reply)``; ``str`` items get the transport's
    terminators appended, ``bytes`` are taken literally; ``reply=None`` means no
    answer (a read then times out); ``sent=None`` means "the instrument sends
    ``reply`` unprompted" (a stream chunk, released as soon as the exchanges
    before it are complete).

    Writes are matched byte by byte, not call by call: a driver may send one
    command in several writes, or several commands in one write, as real
    stream sockets and serial ports allow. Every byte must match the next
    expected byte (AssertionError showing both sides at the first difference);
    a reply is released once its command is complete. ``sent`` keeps every
    byte written, for tests that want to look at the whole conversation.
    """

    def __init__(self, pairs: Sequence[Pair], **kw):
        kw.setdefault("timeout_s", 0.05)
        super().__init__(**kw)
        self._pairs = [(_b(s, self.write_termination), _b(r, self.read_termination)) for s, r in pairs]
        self._i = 0
        self._open = False
        self._partial = bytearray()  # bytes of the current command received so far
        self._pending = bytearray()  # replies released, not yet read
        self.sent = bytearray()
        self._advance_unprompted()

    @property
    def description(self) -> str:
        return "fake-stream"

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> None:
        self._open = True

    def close(self) -> None:
        self._open = False

    def _advance_unprompted(self) -> None:
        while self._i < len(self._pairs) and self._pairs[self._i][0] is None:
            self._pending += self._pairs[self._i][1] or b""
            self._i += 1

    def _send(self, data: bytes) -> None:
        self.sent += data
        self._partial += data
        while self._partial:
            if self._i >= len(self._pairs):
                raise AssertionError(f"unexpected write {bytes(self._partial)!r}: the script has ended")
            want, reply = self._pairs[self._i]
            assert want is not None  # unprompted entries are consumed by _advance_unprompted
            n = min(len(want), len(self._partial))
            if bytes(self._partial[:n]) != want[:n]:
                got = bytes(self._partial[:len(want)])
                raise AssertionError(f"exchange {self._i}: driver wrote {got!r}, script expects {want!r}")
            if len(self._partial) < len(want):
                return  # the rest of this command comes in a later write
            del self._partial[:len(want)]
            self._i += 1
            if reply:
                self._pending += reply
            self._advance_unprompted()

    def _recv(self, max_bytes: int, timeout_s: float) -> bytes:
        if not self._open:
            raise NotConnected("fake-stream is not open")
        if not self._pending:
            time.sleep(min(max(timeout_s, 0.0), 0.01))  # nothing to read: let the deadline pass, no spin
            return b""
        out = bytes(self._pending[:max_bytes])
        del self._pending[:max_bytes]
        return out

    def assert_done(self) -> None:
        """Fail unless every exchange happened, no command is half-sent and every reply was read."""
        left = self._pairs[self._i:]
        if left or self._partial or self._pending or self._buf:
            raise AssertionError(f"script not finished at exchange {self._i} of {len(self._pairs)}: "
                                 f"remaining {left}, half-sent {bytes(self._partial)!r}, "
                                 f"unread {bytes(self._pending) + bytes(self._buf)!r}")


class FakeReqTransport(Transport):
    """Request/reply fake: each request must equal the scripted one; ``reply=None`` = timeout."""

    def __init__(self, pairs: Sequence[Pair], **kw):
        kw.setdefault("timeout_s", 0.05)
        super().__init__(**kw)
        self._pairs = [(_b(s), _b(r)) for s, r in pairs]
        self._i = 0
        self._open = False

    @property
    def description(self) -> str:
        return "fake-req"

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> None:
        self._open = True

    def close(self) -> None:
        self._open = False

    def request(self, data: bytes, *, timeout_s: float | None = None) -> bytes:
        if not self._open:
            raise NotConnected("fake-req is not open")
        if self._i >= len(self._pairs):
            raise AssertionError(f"unexpected request {data!r}: the script has ended")
        sent, reply = self._pairs[self._i]
        if data != sent:
            raise AssertionError(f"exchange {self._i}: driver sent {data!r}, script expects {sent!r}")
        self._i += 1
        if reply is None:
            raise DriverTimeout("no reply (scripted timeout)")
        return reply

    def query(self, command: str, *, timeout_s: float | None = None) -> str:
        return self.request(command.encode(), timeout_s=timeout_s).decode()

    def assert_done(self) -> None:
        if self._i != len(self._pairs):
            raise AssertionError(f"script not finished: remaining {self._pairs[self._i:]}")


@contextmanager
def expected_protocol(driver_cls, pairs: Sequence[Pair], *, stream: bool = False, **kw):
    """Open ``driver_cls`` on a fake transport scripted with ``pairs``; check all were used."""
    transport = FakeStreamTransport(pairs) if stream else FakeReqTransport(pairs)
    drv = driver_cls(transport, **kw)
    drv.open()
    try:
        yield drv
    finally:
        drv._close_transport()
    transport.assert_done()

"""Protocol-test transports: assert the exact bytes a driver sends and feed it scripted replies.

What it is for: pymeasure's ``expected_protocol`` idea for our transports.  A
protocol test lists the exchange — what the driver must write and what the
instrument answers — and runs the real driver code against it with no socket::

    with expected_protocol(ID900, [("*IDN?", "ID Quantique,ID1000,1,2"),
                                   ("INPU1:DELAY 1200", "")]) as tc:
        tc.set_delay_ps(1, 1200)

What it must not do: be used outside tests, or be lenient: any extra,
missing or different message fails the test with both sides shown.

Why two fakes: stream transports (TCP, serial, VISA) see bytes with
terminators (:class:`FakeStreamTransport`), request/reply transports (ZeroMQ)
see whole messages (:class:`FakeReqTransport`).
"""

from __future__ import annotations

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
    """A stream whose writes must equal the scripted ones; replies are queued for reading.

    ``pairs`` items are ``(sent, reply)``; ``str`` items get the terminators
    appended, ``bytes`` are taken literally; ``sent=None`` means "the instrument
    sends ``reply`` unprompted" (a stream chunk).
    """

    def __init__(self, pairs: Sequence[Pair], **kw):
        kw.setdefault("timeout_s", 0.05)
        super().__init__(**kw)
        self._pairs = [(_b(s, self.write_termination), _b(r, self.read_termination)) for s, r in pairs]
        self._i = 0
        self._open = False
        self._pending = bytearray()
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
        if self._i >= len(self._pairs):
            raise AssertionError(f"unexpected write {data!r}: the script has ended")
        sent, reply = self._pairs[self._i]
        if data != sent:
            raise AssertionError(f"exchange {self._i}: driver wrote {data!r}, script expects {sent!r}")
        self._i += 1
        if reply:
            self._pending += reply
        self._advance_unprompted()

    def _recv(self, max_bytes: int, timeout_s: float) -> bytes:
        if not self._open:
            raise NotConnected("fake-stream is not open")
        out = bytes(self._pending[:max_bytes])
        del self._pending[:max_bytes]
        return out

    def assert_done(self) -> None:
        left = self._pairs[self._i:]
        if left or self._pending or self._buf:
            raise AssertionError(f"script not finished: remaining {left}, unread {bytes(self._pending)!r}")


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

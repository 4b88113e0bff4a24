"""A scripted byte transport for driver protocol tests (pymeasure ``expected_protocol`` style).

``ScriptedStream(pairs)`` is a real :class:`drivers.transport.StreamTransport`
whose peer is a list of ``(expected_bytes_sent, reply_bytes)`` pairs: every
byte the driver writes must match the next expected bytes exactly (else
AssertionError showing both), and the reply is released once the expected
bytes are complete.  ``assert_done()`` checks the whole script was used, so a
test lists the exact conversation and nothing else may happen.
"""

from __future__ import annotations

import time

from drivers.transport import StreamTransport


class ScriptedStream(StreamTransport):
    def __init__(self, pairs, **kw):
        kw.setdefault("timeout_s", 0.2)
        super().__init__(**kw)
        self.pairs = [(bytes(a), bytes(b) if b is not None else b"") for a, b in pairs]
        self.sent = bytearray()
        self._pending = bytearray()
        self._out = bytearray()
        self._open = False
        self.i = 0

    @property
    def description(self) -> str:
        return "scripted://"

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> None:
        self._open = True

    def close(self) -> None:
        self._open = False

    def _send(self, data: bytes) -> None:
        self.sent += data
        self._pending += data
        while self._pending:
            assert self.i < len(self.pairs), (
                f"unexpected bytes sent after the script ended: {bytes(self._pending)!r}"
            )
            want, reply = self.pairs[self.i]
            n = min(len(want), len(self._pending))
            assert bytes(self._pending[:n]) == want[:n], (
                f"step {self.i}: sent {bytes(self._pending[: len(want)])!r}, expected {want!r}"
            )
            if len(self._pending) < len(want):
                return
            del self._pending[: len(want)]
            self._out += reply
            self.i += 1

    def _recv(self, max_bytes: int, timeout_s: float) -> bytes:
        if not self._out:
            time.sleep(min(max(timeout_s, 0.0), 0.01))
            return b""
        out = bytes(self._out[:max_bytes])
        del self._out[:max_bytes]
        return out

    def assert_done(self) -> None:
        assert self.i == len(self.pairs), (
            f"script stopped at step {self.i} of {len(self.pairs)}: next expected {self.pairs[self.i][0]!r}"
        )
        assert not self._pending, f"partial command left: {bytes(self._pending)!r}"

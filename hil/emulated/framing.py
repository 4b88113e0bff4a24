"""Emulated-server bases for wire protocols that are not one command per line.

What it is for: the line servers of ``hil/emulated/server.py`` split requests at
a terminator.  Three of Alice's and Bob's instruments need other framing:
SCPI with IEEE 488.2 binary blocks (the AWG's waveform uploads contain any
byte, newlines included), back-to-back JSON objects with no separator (the
Single Quantum controller), and the Thorlabs APT binary frames (6-byte header,
optional data packet).  Subclasses implement ``split(buf) -> list`` that
removes complete messages from the front of ``buf``; everything else (accept,
faults, ``requests`` log, ``handle_line`` -> reply) is the shared server's.

What it must not do: interpret messages (that is each emulator's job) or block
(``split`` returns what is complete and leaves the rest buffered).
"""

from __future__ import annotations

import os
import select
import socket

from .server import PtyLineServer, TcpLineServer

__all__ = ["FramedTcpServer", "FramedPtyServer", "split_scpi"]

_POLL_S = 0.05


def split_scpi(buf: bytearray) -> list[bytes]:
    """Remove complete SCPI messages (newline-terminated, may embed ``#<d><len>`` blocks) from ``buf``."""
    out: list[bytes] = []
    while True:
        nl = buf.find(b"\n")
        hs = buf.find(b"#")
        if hs >= 0 and (nl < 0 or hs < nl) and len(buf) > hs + 1 and buf[hs + 1 : hs + 2] in b"123456789":
            nd = buf[hs + 1] - 0x30
            if len(buf) < hs + 2 + nd:
                return out
            digits = bytes(buf[hs + 2 : hs + 2 + nd])
            if not digits.isdigit():  # not a block after all: treat as text
                if nl < 0:
                    return out
            else:
                end = hs + 2 + nd + int(digits)
                if len(buf) < end:
                    return out
                # the message runs to the newline after the block
                nl2 = buf.find(b"\n", end)
                if nl2 < 0:
                    return out
                out.append(bytes(buf[:nl2]))
                del buf[: nl2 + 1]
                continue
        if nl < 0:
            return out
        out.append(bytes(buf[:nl]).rstrip(b"\r"))
        del buf[: nl + 1]


class FramedTcpServer(TcpLineServer):
    """A TCP emulator whose requests are framed by ``split``; ``handle_line`` gets each message (bytes)."""

    def split(self, buf: bytearray) -> list:
        raise NotImplementedError

    def _serve_once(self) -> None:
        if self._conn is None:
            conn = self._accept()
            if conn is not None:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._conn = conn
                self._buf.clear()
                self.on_connect()
            return
        r, _, _ = select.select([self._conn], [], [], _POLL_S)
        if not r:
            return
        try:
            self._conn.setblocking(False)
            chunk = self._conn.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop_client()
            return
        self._buf += chunk
        for msg in self.split(self._buf):
            if self._conn is None:
                break
            self.requests.append(msg)
            self._respond(msg)


class FramedPtyServer(PtyLineServer):
    """A serial (pty) emulator whose requests are framed by ``split``."""

    def split(self, buf: bytearray) -> list:
        raise NotImplementedError

    def _serve_once(self) -> None:
        r, _, _ = select.select([self._master], [], [], _POLL_S)
        if not r:
            return
        try:
            chunk = os.read(self._master, 65536)
        except OSError:
            return
        self._buf += chunk
        for msg in self.split(self._buf):
            self.requests.append(msg)
            self._respond(msg)

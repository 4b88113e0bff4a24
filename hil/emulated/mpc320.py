"""Emulated Thorlabs MPC320 motorized paddles: APT binary frames on a pseudo-terminal.

What it is for: Bob's paddle polarization controller in the HIL rig.  The
driver opens :attr:`port` (the pty slave) with pyserial.  The emulator parses
APT frames (6-byte header, optional data packet), keeps the three paddle
positions (encoder counts, 1370 = 170 degrees), the POL parameters and the
channel enable state, answers REQ messages, reports MOVE_COMPLETED /
MOVE_HOMED (both header-only, as the MPC320 sends them) after a move (taking
``distance / speed * time_scale`` seconds), and calls :meth:`on_change`
listeners with the angles after every move.

What it must not do: move outside 0..1370 counts (it answers
MGMSG_HW_RICHRESPONSE with an error code instead), or answer a request it does
not know (unknown ids are ignored, as the controller does).

Why ``time_scale``: real paddles take up to ~0.5 s per move; tests run them
100x faster, while a lab-like demo can use 1.0.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np

from drivers.thorlabs_mpc320 import COUNTS_PER_DEG, DEVICE, HOST, MSG, apt_long, apt_short

from .framing import FramedPtyServer

__all__ = ["EmulatedMpc320", "split_apt"]

_BITS = {0x01: 0, 0x02: 1, 0x04: 2}
_KNOWN = set(MSG.values())


def split_apt(buf: bytearray) -> list[bytes]:
    """Remove complete APT frames from the front of ``buf``."""
    out = []
    while len(buf) >= 6:
        msg_id, b2, b3, dest, _src = struct.unpack_from("<HBBBB", buf)
        n = 6 + ((b2 | (b3 << 8)) if dest & 0x80 else 0)
        if n > 6 + 255:  # not a frame: resynchronize by dropping a byte
            del buf[:1]
            continue
        if len(buf) < n:
            break
        out.append(bytes(buf[:n]))
        del buf[:n]
    return out


class EmulatedMpc320(FramedPtyServer):
    KIND = "mpc320"
    reply_termination = b""

    def __init__(self, *, serial: int = 38000001, firmware=(1, 0, 2), time_scale: float = 0.01, **kw):
        super().__init__(**kw)
        self.serial = serial
        self.firmware = firmware
        self.time_scale = time_scale
        self.positions = np.zeros(3, dtype=np.int64)
        self.velocity_percent = 50
        self.home_counts = 0
        self.jog_counts = [200, 200, 200]
        self.enabled_bits = 0
        self.pending_errors: list[tuple[int, str]] = []
        self._listeners: list[Callable[[np.ndarray], None]] = []
        self.moves = 0

    def on_change(self, fn: Callable[[np.ndarray], None]) -> None:
        """Call ``fn(angles_deg)`` after every completed move."""
        self._listeners.append(fn)

    def angles_deg(self) -> np.ndarray:
        return self.positions / COUNTS_PER_DEG

    def push_apt_error(self, code: int, text: str) -> None:
        """Answer the next request with MGMSG_HW_RICHRESPONSE(code, text) (fault injection)."""
        self.pending_errors.append((code, text))

    def split(self, buf: bytearray) -> list:
        return split_apt(buf)

    def _rich(self, ref: int, code: int, text: str) -> bytes:
        return apt_long(
            MSG["HW_RICHRESPONSE"],
            struct.pack("<HH64s", ref, code, text.encode()[:63]),
            dest=HOST,
            source=DEVICE,
        )

    def _status(self, idx: int) -> bytes:
        return struct.pack("<HiHhI", 1 << idx, int(self.positions[idx]), 0, 0, 0x80000000)

    def _move_time(self, counts: int) -> None:
        speed = 400.0 * self.velocity_percent / 100.0 * COUNTS_PER_DEG
        t = abs(counts) / speed * self.time_scale
        if t > 0:
            self._stop.wait(min(t, 2.0))

    def handle_line(self, frame: bytes) -> bytes | None:
        msg_id, p1, _p2, dest, _src = struct.unpack_from("<HBBBB", frame)
        data = frame[6:] if dest & 0x80 else b""
        if msg_id not in _KNOWN:
            return None
        if self.pending_errors:
            code, text = self.pending_errors.pop(0)
            return self._rich(msg_id, code, text)
        if msg_id == MSG["HW_REQ_INFO"]:
            info = struct.pack(
                "<I8sH4s48s12sHHH",
                self.serial,
                b"MPC320\0\0",
                16,
                bytes([self.firmware[2], self.firmware[1], self.firmware[0], 0]),
                b"Emulated MPC320".ljust(48, b"\0"),
                b"\0" * 12,
                1,
                0,
                3,
            )
            return apt_long(MSG["HW_GET_INFO"], info, dest=HOST, source=DEVICE)
        if msg_id == MSG["MOD_SET_CHANENABLESTATE"]:
            self.enabled_bits = p1 if _p2 == 0x01 else 0
            return None
        if msg_id == MSG["MOT_REQ_USTATUSUPDATE"]:
            if p1 not in _BITS:
                return self._rich(msg_id, 1, "bad channel")
            return apt_long(MSG["MOT_GET_USTATUSUPDATE"], self._status(_BITS[p1]), dest=HOST, source=DEVICE)
        if msg_id == MSG["MOT_MOVE_ABSOLUTE"]:
            if len(data) != 6:
                return self._rich(msg_id, 2, "bad data length")
            chan, pos = struct.unpack("<Hi", data)
            if chan not in _BITS:
                return self._rich(msg_id, 1, "bad channel")
            if not 0 <= pos <= 1370:
                return self._rich(msg_id, 3, "position out of range")
            i = _BITS[chan]
            self._move_time(pos - int(self.positions[i]))
            self.positions[i] = pos
            self.moves += 1
            self._notify()
            # header-only, channel ident in param1: the MPC320 appends no status packet
            # (pnpq AptMessage_MGMSG_MOT_MOVE_COMPLETED_6_BYTES)
            return apt_short(MSG["MOT_MOVE_COMPLETED"], chan, 0, dest=HOST, source=DEVICE)
        if msg_id == MSG["MOT_MOVE_HOME"]:
            if p1 not in _BITS:
                return self._rich(msg_id, 1, "bad channel")
            i = _BITS[p1]
            self._move_time(self.home_counts - int(self.positions[i]))
            self.positions[i] = self.home_counts
            self._notify()
            return apt_short(MSG["MOT_MOVE_HOMED"], p1, 0, dest=HOST, source=DEVICE)
        if msg_id == MSG["POL_REQ_PARAMS"]:
            return apt_long(
                MSG["POL_GET_PARAMS"],
                struct.pack("<HHHHHH", 0, self.velocity_percent, self.home_counts, *self.jog_counts),
                dest=HOST,
                source=DEVICE,
            )
        if msg_id == MSG["POL_SET_PARAMS"]:
            if len(data) != 12:
                return self._rich(msg_id, 2, "bad data length")
            _nu, vel, home, j1, j2, j3 = struct.unpack("<HHHHHH", data)
            if not 10 <= vel <= 100 or home > 1370 or max(j1, j2, j3) > 1370:
                return self._rich(msg_id, 3, "parameter out of range")
            self.velocity_percent, self.home_counts, self.jog_counts = vel, home, [j1, j2, j3]
            return None
        return None

    def _notify(self) -> None:
        a = self.angles_deg()
        for fn in list(self._listeners):
            fn(a.copy())

"""Emulated OZ Optics EPC-400 polarization controller on a pseudo-terminal.

What it is for: Bob's polarization controller in the HIL rig.  The driver opens
:attr:`port` (the pty slave path) with pyserial exactly as it opens
``/dev/ttyUSB0``.  The emulator keeps the four channel voltages and the AC/DC
mode, answers in the controller's style (reply lines, then ``Done``), and calls
:meth:`on_change` listeners with the voltage vector after every change, which
the rig turns into a polarization rotation of the physical model.

What it must not do: accept a voltage outside -5000..5000 mV or an unknown
command (it answers ``Error!`` in place of ``Done``, the controller's refusal
as documented in ``drivers/oz_epc400.py``), or end a reply with anything but
``Done`` / ``Error!`` (except under an injected fault).

Why a pty: the driver's serial code path (pyserial, termination, timeouts) runs
for real; only the device file differs.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from .server import PtyLineServer

__all__ = ["EmulatedEpc400"]

_SET = re.compile(r"^V([1-4]),\s*([+-]?\d+)$")


class EmulatedEpc400(PtyLineServer):
    KIND = "epc400"
    reply_termination = b"\r\n"

    def __init__(self, *, serial: str = "EPC4-000123", version: str = "EPC OEM Driver V2.10", **kw):
        super().__init__(**kw)
        self.serial = serial
        self.version = version
        self.voltages_mv = np.zeros(4)
        self.mode = "DC"
        self.enabled = True
        self.history: list[np.ndarray] = []
        self._listeners: list[Callable[[np.ndarray], None]] = []

    def on_change(self, fn: Callable[[np.ndarray], None]) -> None:
        """Call ``fn(voltages_mv)`` (a copy, 4 values) after every voltage change."""
        self._listeners.append(fn)

    def _reply(self, *lines: str) -> str:
        return "\r\n".join([*lines, "Done"])

    def _refuse(self) -> str:
        return "Error!"

    def handle_line(self, line: str) -> str | None:
        cmd = line.strip().upper()
        if not cmd:
            return None
        if cmd == "VER?":
            return self._reply(f"Version: {self.version}")
        if cmd == "SN?":
            return self._reply(f"Serial Number: {self.serial}")
        if cmd == "V?":
            # one line, as the controller answers (QMI OzOptics_EpcDriver.get_voltages:
            # "Voltage(mV): CH1 +2200 CH2 +5000 CH3 -1000 CH4 -4000")
            return self._reply("Voltage(mV): " + " ".join(
                f"CH{i + 1} {int(v):+05d}" for i, v in enumerate(self.voltages_mv)))
        if cmd in ("MDC", "MAC"):
            self.mode = cmd[1:]
            return self._reply()
        if cmd == "M?":
            return self._reply(f"Mode: {self.mode}")
        if cmd in ("ENABLE1", "ENABLE0"):
            self.enabled = cmd.endswith("1")
            return self._reply()
        m = re.fullmatch(r"VZ([1-4])", cmd)
        if m:
            return self._set(int(m.group(1)), 0)
        m = _SET.match(cmd)
        if m:
            return self._set(int(m.group(1)), int(m.group(2)))
        return self._refuse()

    def _set(self, ch: int, mv: int) -> str:
        if not -5000 <= mv <= 5000:
            return self._refuse()
        self.voltages_mv[ch - 1] = mv
        v = self.voltages_mv.copy()
        self.history.append(v)
        for fn in list(self._listeners):
            fn(v.copy())
        return self._reply()

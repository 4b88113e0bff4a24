"""Emulated Keysight N7785C/N7786C/N7788C polarization stabilizer (commands in ``drivers/keysight_n778x.py``).

What it is for: the twin of :class:`drivers.keysight_n778x.KeysightN778x` over
TCP (SCPI lines). It keeps the stabilizer target and state and, when a
``model`` with a ``set_polarization_stokes``-style hook is wired in
(``on_target``), tells it the target while stabilizing; alone it models the loop
as converged: the target is what the instrument reports.

What it must not do: accept what the instrument refuses. A Stokes target on an
N7785C, a zero vector, a malformed number or an unknown header go to the error
queue (-222 "Data out of range", -224 "Illegal parameter value", -113
"Undefined header"), as on a SCPI instrument; ``faults`` and ``push_error``
inject the usual faults.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .server import TcpLineServer

__all__ = ["EmulatedN778x"]


class EmulatedN778x(TcpLineServer):
    KIND = "n778x"

    def __init__(self, *, model: str = "N7786C", serial: str = "DE0000001", **kw):
        super().__init__(**kw)
        self.model = model
        self.serial = serial
        self.target = (1.0, 1.0, 0.0, 0.0)  # s0..s3
        self.stabilizing = False
        self.triggers = 0
        self.feedback: list[float] = []
        self._listeners: list[Callable[[tuple[float, float, float, float], bool], None]] = []

    def on_target(self, fn: Callable[[tuple[float, float, float, float], bool], None]) -> None:
        """Call ``fn(target_stokes, stabilizing)`` after every accepted change."""
        self._listeners.append(fn)

    def _notify(self) -> None:
        for fn in self._listeners:
            fn(self.target, self.stabilizing)

    @staticmethod
    def _norm(head: str) -> str:
        # SCPI short/long forms, optional leading colon: ":STABilizer:SOP" -> "STAB:SOP"
        parts = [p for p in head.upper().lstrip(":").split(":")]
        short = {"STABILIZER": "STAB", "STABILIZE": "STAB", "SYSTEM": "SYST", "ERROR": "ERR",
                 "TRIGGER": "TRIG"}
        out = []
        for p in parts:
            q = p.rstrip("?")
            out.append(short.get(q, q) + ("?" if p.endswith("?") else ""))
        return ":".join(out)

    def handle_line(self, line: str) -> str | None:
        head, _, arg = line.strip().partition(" ")
        h = self._norm(head)
        if h == "*IDN?":
            return f"Keysight Technologies,{self.model},{self.serial},1.0.0"
        if h == "SYST:ERR?":
            return self.errors.pop_reply()
        if h == "*CLS":
            return None
        if h == "STAB:SOP?":
            return ",".join(f"{x:.6f}" for x in self.target)
        if h == "STAB:STAB?":
            return "1" if self.stabilizing else "0"
        if h == "STAB:STAB":
            if arg.strip() not in ("0", "1"):
                self.errors.push(-224, "Illegal parameter value")
                return None
            self.stabilizing = arg.strip() == "1"
            self._notify()
            return None
        if h == "STAB:SOP":
            try:
                v = [float(x) for x in arg.split(",")]
            except ValueError:
                self.errors.push(-224, "Illegal parameter value")
                return None
            if len(v) == 4 and v[:3] == [0.0, 0.0, 0.0]:  # N7785C feedback parameter
                if self.model != "N7785C" or not (math.isfinite(v[3]) and v[3] > 0):
                    self.errors.push(-222, "Data out of range")
                    return None
                self.feedback.append(v[3])
                return None
            if len(v) != 3 or self.model == "N7785C":
                self.errors.push(-222, "Data out of range")
                return None
            n = math.sqrt(sum(x * x for x in v))
            if not (math.isfinite(n) and n > 0):
                self.errors.push(-222, "Data out of range")
                return None
            self.target = (1.0, *(x / n for x in v))
            self._notify()
            return None
        if h == "TRIG" and arg.strip() == "1":
            self.triggers += 1
            return None
        self.errors.push(-113, "Undefined header")
        return None

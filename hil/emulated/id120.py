"""Emulated ID Quantique ID120 APD (the SCPI-style command set documented in ``drivers/idq_id120.py``).

What it is for: one of Bob's detectors in the HIL rig, over TCP (or any line
transport).  It keeps the settings (threshold, dead time, bias, integration
time, enable), answers ``DET:COUN?`` from a simple detector model fed by the
rig (``incident_rate_hz``: photons per second reaching the APD), and tells the
rig about every change through :meth:`on_change` listeners, so the physical
model uses the detector parameters the driver set.

What it must not do: accept values the driver must have refused (out-of-range
settings go to the error queue with -222 "Data out of range"), or hide the
bias history: :attr:`bias_history` records every set-point so tests can check
that the driver ramped.

Why this detector model: efficiency grows linearly with excess bias above
breakdown up to ``max_efficiency``, and a non-paralyzable dead time saturates
the rate, R = r / (1 + r tau) (Müller, NIM 112 (1973) 47, eq. for
non-paralyzable counters) - enough for calibration loops to see the knobs act.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .server import TcpLineServer

__all__ = ["EmulatedId120", "Id120State"]


class Id120State:
    def __init__(self):
        self.threshold_mv = 50.0
        self.dead_time_ns = 1000.0
        self.bias_v = 0.0
        self.integration_ms = 100.0
        self.enabled = True
        self.temperature_c = -40.0


class EmulatedId120(TcpLineServer):
    KIND = "id120"
    LIMITS = {
        "threshold_mv": (5.0, 2000.0),
        "dead_time_ns": (400.0, 50_000.0),
        "bias_v": (0.0, 450.0),
        "integration_ms": (10.0, 10_000.0),
    }
    COMMANDS = {
        "DET:THR": "threshold_mv",
        "DET:DEAD": "dead_time_ns",
        "DET:BIAS": "bias_v",
        "DET:INT": "integration_ms",
    }

    def __init__(
        self,
        *,
        serial: str = "ID120-0001",
        breakdown_v: float = 300.0,
        excess_full_v: float = 30.0,
        max_efficiency: float = 0.7,
        dark_count_hz: float = 80.0,
        **kw,
    ):
        super().__init__(**kw)
        self.serial = serial
        self.state = Id120State()
        self.breakdown_v = breakdown_v
        self.excess_full_v = excess_full_v
        self.max_efficiency = max_efficiency
        self.dark_count_hz = dark_count_hz
        self.incident_rate_hz = 0.0
        self.bias_history: list[float] = []
        self._listeners: list[Callable[[str, float, Id120State], None]] = []
        self._lock = threading.Lock()

    def on_change(self, fn: Callable[[str, float, Id120State], None]) -> None:
        """Call ``fn(setting, value, state)`` after every accepted setting."""
        self._listeners.append(fn)

    def efficiency(self) -> float:
        s = self.state
        if not s.enabled:
            return 0.0
        x = (s.bias_v - self.breakdown_v) / self.excess_full_v
        return self.max_efficiency * min(max(x, 0.0), 1.0)

    def count_rate_hz(self) -> float:
        s = self.state
        if not s.enabled or s.bias_v <= self.breakdown_v:
            return 0.0
        r = self.incident_rate_hz * self.efficiency() + self.dark_count_hz
        return r / (1.0 + r * s.dead_time_ns * 1e-9)

    def handle_line(self, line: str) -> str | None:
        cmd = line.strip()
        head, _, arg = cmd.partition(" ")
        head = head.upper()
        s = self.state
        if head == "*IDN?":
            return f"ID Quantique,ID120,{self.serial},2.1"
        if head == "SYST:ERR?":
            return self.errors.pop_reply()
        if head == "*CLS":
            return None
        if head == "DET:COUN?":
            return f"{self.count_rate_hz():.1f}"
        if head == "DET:TEMP?":
            return f"{s.temperature_c:.2f}"
        if head == "DET:ENAB?":
            return "1" if s.enabled else "0"
        if head == "DET:ENAB":
            a = arg.strip().upper()
            if a not in ("ON", "OFF", "1", "0"):
                self.errors.push(-224, "Illegal parameter value")
                return None
            s.enabled = a in ("ON", "1")
            self._notify("enabled", float(s.enabled))
            return None
        if head.endswith("?") and head[:-1] in self.COMMANDS:
            return f"{getattr(s, self.COMMANDS[head[:-1]]):.3f}"
        if head in self.COMMANDS:
            attr = self.COMMANDS[head]
            try:
                v = float(arg)
            except ValueError:
                self.errors.push(-104, "Data type error")
                return None
            lo, hi = self.LIMITS[attr]
            if not lo <= v <= hi:
                self.errors.push(-222, "Data out of range")
                return None
            setattr(s, attr, v)
            if attr == "bias_v":
                self.bias_history.append(v)
            self._notify(attr, v)
            return None
        self.errors.push(-113, "Undefined header")
        return None

    def _notify(self, name: str, value: float) -> None:
        for fn in list(self._listeners):
            fn(name, value, self.state)

"""Emulated ID Quantique ID120 APD (the SCPI-style command set documented in ``drivers/idq_id120.py``).

What it is for: one of Bob's detectors in the HIL rig, over TCP (or any line
transport).  It keeps the settings (threshold, dead time, bias, integration
time, REG:RUN) in the instrument's integer units and steps, answers
``COUNTERS:DETECTION_FREQ?`` from a simple detector model fed by the
rig (``incident_rate_hz``: photons per second reaching the APD), and tells the
rig about every change through :meth:`on_change` listeners, so the physical
model uses the detector parameters the driver set.

What it must not do: accept values the driver must have refused (out of range
or off the step grid: the setting keeps its value and the command is listed in
:attr:`refused`), or hide the
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
        self.dead_time_ns = 40_000.0
        self.bias_v = 0.0
        self.integration_ms = 200.0
        self.running = True
        self.temperature_c = -40.0


class EmulatedId120(TcpLineServer):
    KIND = "id120"
    # header -> (state attribute, low, high, step in instrument units, instrument units per state unit)
    SETTINGS = {
        "THRESHOLD:VOLTAGE": ("threshold_mv", 0, 1_047_000, 500, 1000.0),
        "DEADTIME:TIME": ("dead_time_ns", 40, 1_000_000, 40, 1e-3),
        "BIAS:VOLTAGE": ("bias_v", 0, 250_000_000, 80_000, 1e6),
        "COUNTERS:INTEGRATION_TIME": ("integration_ms", 200, 100_000, 200, 1.0),
    }

    def __init__(
        self,
        *,
        serial: str = "ID120-0001",
        breakdown_v: float = 200.0,
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
        self.refused: list[str] = []
        self._listeners: list[Callable[[str, float, Id120State], None]] = []
        self._lock = threading.Lock()

    def on_change(self, fn: Callable[[str, float, Id120State], None]) -> None:
        """Call ``fn(setting, value, state)`` after every accepted setting."""
        self._listeners.append(fn)

    def efficiency(self) -> float:
        s = self.state
        if not s.running:
            return 0.0
        x = (s.bias_v - self.breakdown_v) / self.excess_full_v
        return self.max_efficiency * min(max(x, 0.0), 1.0)

    def count_rate_hz(self) -> float:
        s = self.state
        if not s.running or s.bias_v <= self.breakdown_v:
            return 0.0
        r = self.incident_rate_hz * self.efficiency() + self.dark_count_hz
        return r / (1.0 + r * s.dead_time_ns * 1e-9)

    def handle_line(self, line: str) -> str | None:
        cmd = line.strip()
        head, _, arg = cmd.partition(" ")
        head = head.upper()
        s = self.state
        if head == "*IDN?":
            return f"IDQuantique,ID120,{self.serial},2.1"
        if head == "COUNTERS:DETECTION_FREQ?":
            return f"{int(round(self.count_rate_hz()))}"
        if head == "COUNTERS:DETECTION_COUNT?":
            return f"{int(round(self.count_rate_hz() * s.integration_ms / 1000))}"
        if head == "REG:MEASURED_TEMP?":
            return f"{int(round(s.temperature_c * 1000))}"
        if head == "REG:RUN?":
            return "TRUE" if s.running else "FALSE"
        if head == "REG:RUN":
            a = arg.strip().upper()
            if a not in ("TRUE", "FALSE"):
                self.refused.append(cmd)
                return None
            s.running = a == "TRUE"
            self._notify("running", float(s.running))
            return None
        if head.endswith("?") and head[:-1] in self.SETTINGS:
            attr, *_rest, scale = self.SETTINGS[head[:-1]]
            return f"{int(round(getattr(s, attr) * scale))}"
        if head in self.SETTINGS:
            attr, lo, hi, step, scale = self.SETTINGS[head]
            try:
                raw = int(arg)
            except ValueError:
                raw = None
            # ASSUMED: a refused value is ignored (the setting keeps its value; the driver's
            # read-back sees that); no public source says how the ID120 reports it
            if raw is None or not lo <= raw <= hi or raw % step:
                self.refused.append(cmd)
                return None
            v = raw / scale
            setattr(s, attr, v)
            if attr == "bias_v":
                self.bias_history.append(v)
            self._notify(attr, v)
            return None
        self.refused.append(cmd)
        return None

    def _notify(self, name: str, value: float) -> None:
        for fn in list(self._listeners):
            fn(name, value, self.state)

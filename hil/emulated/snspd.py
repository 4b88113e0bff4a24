"""Emulated Single Quantum SNSPD controller: JSON control port plus a counts stream port.

What it is for: Bob's SNSPDs in the HIL rig.  The control server parses
back-to-back JSON objects (as the WebSQ protocol sends them, no separator),
answers ``{"request": label}`` with ``{"label", "value"}\\x17`` and applies
``SetAllBiasCurrents``/``SetAllTriggerLevels``/``SetMeasurementPeriod``/
``DetectorEnable``.  A second server (:attr:`counts`) streams one line
``timestamp,c1,..,cN`` per measurement period.  The rig sets
:attr:`incident_rate_hz` (photons/s per channel) and listens to changes with
:meth:`on_change`.

What it must not do: accept out-of-bounds values silently (they produce an
``{"label": "Error", ...}`` message, as the controller does), or jump the
bias without recording it: :attr:`bias_history` keeps every accepted bias
vector so tests can check the driver ramped.

Why this nanowire model: detection efficiency follows a sigmoid in bias
current below the switching current, and dark counts rise exponentially as
the bias nears it (Marsili et al., Nat. Photonics 7, 210 (2013), Fig. 3 shape);
above the switching current the wire latches and counts nothing.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable

import numpy as np

from .framing import FramedTcpServer
from .server import TcpStreamServer

__all__ = ["EmulatedSnspd"]


class _CountsServer(TcpStreamServer):
    KIND = "snspd-counts"

    def __init__(self, owner: EmulatedSnspd, **kw):
        super().__init__(**kw)
        self.owner = owner
        self._next = time.monotonic()
        self.streaming.set()

    def produce(self) -> bytes | None:
        now = time.monotonic()
        period = self.owner.period_ms / 1000.0
        if now < self._next:
            self._stop.wait(min(self._next - now, 0.05))
            return None
        self._next = max(self._next + period, now)
        rates = self.owner.count_rates_hz()
        counts = np.rint(rates * period).astype(np.int64)
        return (f"{time.time():.3f}," + ",".join(str(int(c)) for c in counts) + "\n").encode()


_COMMAND_LABELS = {
    "SetAllBiasCurrents": "BiasCurrent",
    "SetAllTriggerLevels": "TriggerLevel",
    "SetMeasurementPeriod": "InptMeasurementPeriod",
    "DetectorEnable": "DetectorEnable",
}


class EmulatedSnspd(FramedTcpServer):
    """Control server; :attr:`counts` is the counts-stream server (started and stopped with it)."""

    KIND = "snspd"
    reply_termination = b"\x17"

    def __init__(
        self,
        *,
        n_detectors: int = 4,
        switching_current_ua: float = 20.0,
        max_efficiency: float = 0.85,
        dark_floor_hz: float = 10.0,
        bias_bounds_ua=(0.0, 50.0),
        counts_port: int = 0,
        **kw,
    ):
        super().__init__(**kw)
        self.n = n_detectors
        self.bias_ua = [0.0] * n_detectors
        self.trigger_mv = [25.0] * n_detectors
        self.period_ms = 100.0
        self.enabled = True
        self.temperature_k = 2.6
        self.switching_current_ua = switching_current_ua
        self.max_efficiency = max_efficiency
        self.dark_floor_hz = dark_floor_hz
        self.bias_bounds_ua = bias_bounds_ua
        self.incident_rate_hz = np.zeros(n_detectors)
        self.bias_history: list[list[float]] = []
        self._listeners: list[Callable[[str, object], None]] = []
        self._lock = threading.Lock()
        self.counts = _CountsServer(self, port=counts_port, name=f"{self.name}-counts")

    # -- lifecycle: both servers ----------------------------------------------------------
    def start(self):
        super().start()
        self.counts.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        try:
            self.counts.stop(timeout_s)
        finally:
            super().stop(timeout_s)

    @property
    def counts_port(self) -> int:
        return int(self.counts.port)

    def on_change(self, fn: Callable[[str, object], None]) -> None:
        """Call ``fn(label, value)`` after every accepted setting."""
        self._listeners.append(fn)

    # -- model ------------------------------------------------------------------------------
    def efficiency(self) -> np.ndarray:
        i = np.asarray(self.bias_ua)
        isw = self.switching_current_ua
        eff = self.max_efficiency / (1.0 + np.exp(-(i - 0.75 * isw) / (0.05 * isw)))
        eff[i >= isw] = 0.0  # latched
        return eff if self.enabled else np.zeros(self.n)

    def count_rates_hz(self) -> np.ndarray:
        i = np.asarray(self.bias_ua)
        isw = self.switching_current_ua
        dark = self.dark_floor_hz * np.exp(np.clip((i - 0.9 * isw) / (0.02 * isw), -50, 50))
        r = self.efficiency() * np.asarray(self.incident_rate_hz, dtype=np.float64) + dark
        r[i >= isw] = 0.0
        return r if self.enabled else np.zeros(self.n)

    # -- protocol --------------------------------------------------------------------------
    def split(self, buf: bytearray) -> list:
        dec = json.JSONDecoder()
        out = []
        text = bytes(buf).decode("utf-8", errors="replace")
        pos = 0
        while True:
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1
            if pos >= len(text):
                break
            try:
                obj, end = dec.raw_decode(text, pos)
            except json.JSONDecodeError:
                # incomplete (wait for more) unless it cannot be JSON at all
                if text[pos] != "{" or len(text) - pos > 1 << 20:
                    out.append(("garbage", text[pos:]))
                    pos = len(text)
                break
            out.append(obj)
            pos = end
        del buf[: len(text[:pos].encode("utf-8"))]
        return out

    def _msg(self, label: str, value) -> str:
        return json.dumps({"label": label, "value": value})

    def _error(self, text: str) -> str:
        return self._msg("Error", text)

    def _label_value(self, label: str):
        return {
            "NumberOfDetectors": self.n,
            "BiasCurrent": list(self.bias_ua),
            "TriggerLevel": list(self.trigger_mv),
            "InptMeasurementPeriod": self.period_ms,
            "DetectorEnable": self.enabled,
            "Temperature": self.temperature_k,
        }.get(label)

    def handle_line(self, msg) -> str | None:
        if not isinstance(msg, dict):
            return self._error("could not parse JSON")
        if "request" in msg:
            label = msg["request"]
            v = self._label_value(label)
            if v is None:
                return self._error(f"unknown label {label!r}")
            return self._msg(label, v)
        cmd = msg.get("command")
        value = msg.get("value")
        # every command carries its label, as Single Quantum's WebSQ client sends them
        want = _COMMAND_LABELS.get(cmd)
        if want is not None and msg.get("label") != want:
            return self._error(f"{cmd}: expected label {want!r}")
        if cmd in ("SetAllBiasCurrents", "SetAllTriggerLevels"):
            lo, hi = self.bias_bounds_ua if cmd == "SetAllBiasCurrents" else (-500.0, 500.0)
            if (
                not isinstance(value, list)
                or len(value) != self.n
                or not all(
                    isinstance(x, (int, float))
                    and not isinstance(x, bool)
                    and math.isfinite(x)
                    and lo <= x <= hi
                    for x in value
                )
            ):
                return self._error(f"{cmd}: expected {self.n} numbers in {lo}..{hi}")
            vals = [float(x) for x in value]
            if cmd == "SetAllBiasCurrents":
                self.bias_ua = vals
                self.bias_history.append(vals)
                self._notify("BiasCurrent", vals)
                return None
            self.trigger_mv = vals
            self._notify("TriggerLevel", vals)
            return None
        if cmd == "SetMeasurementPeriod":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 10 <= value <= 60000:
                return self._error("SetMeasurementPeriod: expected 10..60000 ms")
            self.period_ms = float(value)
            self._notify("InptMeasurementPeriod", self.period_ms)
            return None
        if cmd == "DetectorEnable":
            if not isinstance(value, bool):
                return self._error("DetectorEnable: expected a bool")
            self.enabled = value
            self._notify("DetectorEnable", value)
            return None
        return self._error(f"unknown command {cmd!r}")

    def _notify(self, label: str, value) -> None:
        for fn in list(self._listeners):
            fn(label, value)

"""ID Quantique ID120-class silicon APD single-photon detector, SCPI-style control.

What it is for: Bob's detectors when they are free-running APDs.  Set the
discriminator threshold, dead time, bias voltage and counter integration time;
read count rates and the module temperature.  Bias changes ramp
(``max_step_v`` per ``inter_delay_s``, the QCoDeS ``step``/``inter_delay``
idea); they never jump.

What it must not do: send an unvalidated value (ranges below raise
``DriverValueError`` before the wire), clip, or leave the bias part-way without
saying so (a failed ramp step raises and :attr:`bias_v` reads back the real
value).

ASSUMED COMMAND SET.  ID Quantique does not publish a remote-command reference
for the ID120 (it ships a GUI and a Windows library).  This driver speaks the
SCPI-style set below, which the emulated twin implements; if a unit speaks a
different dialect, only the strings in this file change.  ``*IDN?`` ->
``ID Quantique,ID120,<serial>,<firmware>``; ``SYST:ERR?`` -> ``<code>,"<text>"``;
``DET:THR <mV>`` / ``DET:THR?`` discriminator threshold (mV, 5..2000);
``DET:DEAD <ns>`` / ``DET:DEAD?`` dead time (ns, 400..50000, the ID120 hold-off
range); ``DET:BIAS <V>`` / ``DET:BIAS?`` APD bias (V, 0..450); ``DET:INT <ms>`` /
``DET:INT?`` counter integration time (ms, 10..10000); ``DET:COUN?`` counts
per second over the last integration window; ``DET:TEMP?`` APD temperature in
degrees Celsius; ``DET:ENAB ON|OFF`` / ``DET:ENAB?``.

Why SCPI-style over a socket or serial line: the resource string decides the
transport (``host:port`` via a terminal server, ``ASRL...`` or ``/dev/tty*``), as
for every other instrument of the stack.
"""

from __future__ import annotations

import time

import numpy as np

from .base import ScpiInstrument, ramp_values
from .errors import MalformedReply
from .resources import make_transport
from .transport import Transport

__all__ = ["IdqId120"]

C_TO_K = 273.15


class IdqId120(ScpiInstrument):
    """One ID120 module (one detector channel, index 0)."""

    KIND = "ID120"
    MODELS = (r"ID120",)
    THRESHOLD_MV = (5.0, 2000.0)
    DEAD_TIME_NS = (400.0, 50_000.0)
    BIAS_V = (0.0, 450.0)
    INTEGRATION_MS = (10.0, 10_000.0)

    def __init__(
        self,
        resource: str | Transport,
        *,
        timeout_s: float = 2.0,
        name: str | None = None,
        max_step_v: float = 2.0,
        inter_delay_s: float = 0.05,
        max_bias_v: float | None = None,
        baudrate: int = 115200,
    ):
        super().__init__(resource, timeout_s=timeout_s, name=name)
        self.max_step_v = self._check_range("max_step_v", max_step_v, 1e-3, 50.0, "V")
        self.inter_delay_s = self._check_range("inter_delay_s", inter_delay_s, 0.0, 10.0, "s")
        hi = (
            self.BIAS_V[1]
            if max_bias_v is None
            else self._check_range("max_bias_v", max_bias_v, *self.BIAS_V)
        )
        self.bias_limit_v = (self.BIAS_V[0], hi)
        self.baudrate = self._check_int("baudrate", baudrate, 300, 4_000_000)

    def _make_transport(self) -> Transport:
        if isinstance(self.resource, Transport):
            return self.resource
        return make_transport(self.resource, timeout_s=self.timeout_s, serial={"baudrate": self.baudrate})

    def _after_open(self) -> None:
        self.error_queue()

    @property
    def channels(self) -> int:
        return 1

    def _ch(self, channel: int) -> None:
        self._check_int("channel", channel, 0, 0)

    def _float(self, cmd: str) -> float:
        r = self._query(cmd)
        try:
            return float(r)
        except ValueError:
            raise MalformedReply("expected a number", reply=r, instrument=self.name, command=cmd) from None

    # -- settings ------------------------------------------------------------------------------
    def set_threshold_mv(self, channel: int, threshold_mv: float) -> None:
        """Set the discriminator threshold (mV)."""
        self._ch(channel)
        v = self._check_range("threshold_mv", threshold_mv, *self.THRESHOLD_MV, "mV")
        self._write_checked(f"DET:THR {v:.1f}")

    def threshold_mv(self, channel: int = 0) -> float:
        self._ch(channel)
        return self._float("DET:THR?")

    def set_dead_time_ns(self, channel: int, dead_time_ns: float) -> None:
        """Set the dead time (hold-off after a click, ns)."""
        self._ch(channel)
        v = self._check_range("dead_time_ns", dead_time_ns, *self.DEAD_TIME_NS, "ns")
        self._write_checked(f"DET:DEAD {v:.0f}")

    def dead_time_ns(self, channel: int = 0) -> float:
        self._ch(channel)
        return self._float("DET:DEAD?")

    def set_integration_time_ms(self, integration_ms: float) -> None:
        """Set the counter integration window (ms) behind ``count_rates_hz``."""
        v = self._check_range("integration_ms", integration_ms, *self.INTEGRATION_MS, "ms")
        self._write_checked(f"DET:INT {v:.0f}")

    def integration_time_ms(self) -> float:
        return self._float("DET:INT?")

    def set_enabled(self, enabled: bool) -> None:
        """Arm (True) or disarm the detector."""
        if not isinstance(enabled, bool):
            self._check_choice("enabled", enabled, [True, False])
        self._write_checked(f"DET:ENAB {'ON' if enabled else 'OFF'}")

    def bias_v(self, channel: int = 0) -> float:
        """Read the APD bias voltage (V)."""
        self._ch(channel)
        return self._float("DET:BIAS?")

    def set_bias(self, channel: int, value: float, *, max_step: float | None = None) -> None:
        """Ramp the APD bias to ``value`` volts in steps of at most ``max_step`` (default ``max_step_v``)."""
        self._ch(channel)
        target = self._check_range("bias_v", value, *self.bias_limit_v, "V")
        step = (
            self.max_step_v if max_step is None else self._check_range("max_step", max_step, 1e-3, 50.0, "V")
        )
        start = self.bias_v()
        for i, v in enumerate(ramp_values(start, target, step)):
            if i and self.inter_delay_s:
                time.sleep(self.inter_delay_s)
            self._write_checked(f"DET:BIAS {v:.3f}")

    # -- readings ----------------------------------------------------------------------------------
    def count_rates_hz(self) -> np.ndarray:
        """Counts per second over the last integration window (one channel)."""
        return np.array([self._float("DET:COUN?")], dtype=np.float64)

    def temperature_k(self) -> float:
        """APD temperature in kelvin (the instrument reports Celsius)."""
        return self._float("DET:TEMP?") + C_TO_K

    def status(self) -> dict:
        return {
            "bias_v": self.bias_v(),
            "threshold_mv": self.threshold_mv(),
            "dead_time_ns": self.dead_time_ns(),
            "rate_hz": float(self.count_rates_hz()[0]),
            "temp_k": round(self.temperature_k(), 2),
        }

"""ID Quantique ID120 silicon APD single-photon detector, SCPI-style control.

What it is for: Bob's detectors when they are free-running APDs.  Set the
discriminator threshold, dead time, bias voltage and counter integration time;
read count rates and the module temperature.  Bias changes ramp
(``max_step_v`` per ``inter_delay_s``, the QCoDeS ``step``/``inter_delay``
idea); they never jump.

What it must not do: send an unvalidated value (ranges below raise
``DriverValueError`` before the wire), clip, trust a setting it did not read
back (every setting is queried back; a refused or changed value raises
``InstrumentError``), or leave the bias part-way without saying so (a failed
ramp step raises and :meth:`bias_v` reads back the real value).

Command set.  ID Quantique publishes no remote-command reference for the ID120;
the strings below are those of the public *Instrumental* driver
(``instrumental/drivers/spad/id120.py``, mabuchilab), which talks to the unit
over USBTMC (``USB0::0x1DDC::0x0330::<serial>::INSTR``, reads end with ``\n``).
Values are integers in the units that driver declares:

* ``*IDN?`` -> ``IDQuantique,ID120,...`` (the driver matches vendor ``IDQuantique``, model ``ID120``);
* ``THRESHOLD:VOLTAGE <uV>`` / ``?``: 0..1 047 000 uV in steps of 500 uV;
* ``DEADTIME:TIME <t>`` / ``?``: 40..1 000 000 in steps of 40, unit declared
  "microsecond" (UNVERIFIED: that would make the shortest dead time 40 us; if a
  unit's ``DEADTIME:CAPABILITY?`` says otherwise, change ``DEAD_TIME_UNIT_NS``);
* ``BIAS:VOLTAGE <uV>`` / ``?``: 0..250 000 000 uV (250 V) in steps of 80 000 uV;
* ``COUNTERS:INTEGRATION_TIME <ms>`` / ``?``: 200..100 000 ms in steps of 200;
* ``COUNTERS:DETECTION_FREQ?`` (Hz), ``COUNTERS:DETECTION_COUNT?``;
* ``REG:MEASURED_TEMP?`` (milli-degree Celsius), ``REG:RUN TRUE|FALSE`` ("run status");
* ``*CAPABILITY?`` queries (``THRESHOLD:CAPABILITY?`` ...) exist; their reply format is unknown.

Instrumental never reads ``SYST:ERR?``, so this driver does not rely on an error
queue: it confirms each setting by querying it back.  Each value is rounded to the
instrument's step before it is sent (the read-back must equal what was sent).

Why SCPI-style over any stream: the resource string decides the transport
(``USB0::...::INSTR`` through pyvisa, a terminal server's ``host:port``, or a
serial path), as for every other instrument of the stack.
"""

from __future__ import annotations

import time

import numpy as np

from .base import Instrument, ramp_values
from .errors import InstrumentError, MalformedReply
from .resources import make_transport
from .transport import Transport

__all__ = ["IdqId120"]

C_TO_K = 273.15


class IdqId120(Instrument):
    """One ID120 module (one detector channel, index 0)."""

    KIND = "ID120"
    MODELS = (r"ID120",)
    # (low, high, step) in the instrument's integer units (module docstring)
    THRESHOLD_UV = (0, 1_047_000, 500)
    DEAD_TIME = (40, 1_000_000, 40)
    DEAD_TIME_UNIT_NS = 1000  # Instrumental declares microseconds (UNVERIFIED, see module docstring)
    BIAS_UV = (0, 250_000_000, 80_000)
    INTEGRATION_MS = (200, 100_000, 200)
    THRESHOLD_MV = (THRESHOLD_UV[0] / 1000, THRESHOLD_UV[1] / 1000)
    DEAD_TIME_NS = (DEAD_TIME[0] * DEAD_TIME_UNIT_NS, DEAD_TIME[1] * DEAD_TIME_UNIT_NS)
    BIAS_V = (BIAS_UV[0] / 1e6, BIAS_UV[1] / 1e6)

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

    @staticmethod
    def _on_grid(raw: float, step: int) -> int:
        return int(round(raw / step)) * step

    def _set_confirmed(self, header: str, raw: int) -> None:
        """Send ``header raw`` and query it back; InstrumentError if the instrument holds another value."""
        command = f"{header} {raw}"
        self._write(command)
        got = self._float(f"{header}?")
        if abs(got - raw) > 0.5:
            raise InstrumentError(f"{header} reads back {got:g} after setting {raw}",
                                  instrument=self.name, command=command)

    # -- settings ------------------------------------------------------------------------------
    def set_threshold_mv(self, channel: int, threshold_mv: float) -> None:
        """Set the discriminator threshold (mV; sent in uV on the instrument's 500 uV grid)."""
        self._ch(channel)
        v = self._check_range("threshold_mv", threshold_mv, *self.THRESHOLD_MV, "mV")
        self._set_confirmed("THRESHOLD:VOLTAGE", self._on_grid(v * 1000, self.THRESHOLD_UV[2]))

    def threshold_mv(self, channel: int = 0) -> float:
        self._ch(channel)
        return self._float("THRESHOLD:VOLTAGE?") / 1000

    def set_dead_time_ns(self, channel: int, dead_time_ns: float) -> None:
        """Set the dead time (hold-off after a click, ns; sent on the instrument's grid)."""
        self._ch(channel)
        v = self._check_range("dead_time_ns", dead_time_ns, *self.DEAD_TIME_NS, "ns")
        self._set_confirmed("DEADTIME:TIME", self._on_grid(v / self.DEAD_TIME_UNIT_NS, self.DEAD_TIME[2]))

    def dead_time_ns(self, channel: int = 0) -> float:
        self._ch(channel)
        return self._float("DEADTIME:TIME?") * self.DEAD_TIME_UNIT_NS

    def set_integration_time_ms(self, integration_ms: float) -> None:
        """Set the counter integration window (ms, 200 ms steps) behind ``count_rates_hz``."""
        v = self._check_range("integration_ms", integration_ms, *self.INTEGRATION_MS[:2], "ms")
        self._set_confirmed("COUNTERS:INTEGRATION_TIME", self._on_grid(v, self.INTEGRATION_MS[2]))

    def integration_time_ms(self) -> float:
        return self._float("COUNTERS:INTEGRATION_TIME?")

    def set_regulation_running(self, running: bool) -> None:
        """``REG:RUN TRUE|FALSE`` (Instrumental: "run status"; what it switches is not documented)."""
        if not isinstance(running, bool):
            self._check_choice("running", running, [True, False])
        command = f"REG:RUN {'TRUE' if running else 'FALSE'}"
        self._write(command)
        got = self._query("REG:RUN?").strip().upper()
        if got != ("TRUE" if running else "FALSE"):
            raise InstrumentError(f"REG:RUN reads back {got!r}", instrument=self.name, command=command)

    def bias_v(self, channel: int = 0) -> float:
        """Read the APD bias voltage (V)."""
        self._ch(channel)
        return self._float("BIAS:VOLTAGE?") / 1e6

    def set_bias(self, channel: int, value: float, *, max_step: float | None = None) -> None:
        """Ramp the APD bias to ``value`` volts in steps of at most ``max_step`` (default ``max_step_v``).

        Set-points lie on the instrument's 80 mV grid (the target is rounded to it); the ramp is
        planned with ``max_step`` less one grid step, so rounding never makes a step larger than
        ``max_step`` (a ``max_step`` below one grid step moves one grid step at a time).
        """
        self._ch(channel)
        target = self._check_range("bias_v", value, *self.bias_limit_v, "V")
        step = (
            self.max_step_v if max_step is None else self._check_range("max_step", max_step, 1e-3, 50.0, "V")
        )
        grid = self.BIAS_UV[2]
        target_uv = min(self._on_grid(target * 1e6, grid), int(self.bias_limit_v[1] * 1e6) // grid * grid)
        start = self.bias_v()
        plan_step = max(step - grid / 1e6, grid / 1e6)
        for i, v in enumerate(ramp_values(start, target_uv / 1e6, plan_step)):
            if i and self.inter_delay_s:
                time.sleep(self.inter_delay_s)
            self._set_confirmed("BIAS:VOLTAGE", self._on_grid(v * 1e6, grid))

    # -- readings ----------------------------------------------------------------------------------
    def count_rates_hz(self) -> np.ndarray:
        """Counts per second over the last integration window (one channel)."""
        return np.array([self._float("COUNTERS:DETECTION_FREQ?")], dtype=np.float64)

    def temperature_k(self) -> float:
        """APD temperature in kelvin (the instrument reports milli-degrees Celsius)."""
        return self._float("REG:MEASURED_TEMP?") / 1000 + C_TO_K

    def status(self) -> dict:
        return {
            "bias_v": self.bias_v(),
            "threshold_mv": self.threshold_mv(),
            "dead_time_ns": self.dead_time_ns(),
            "rate_hz": float(self.count_rates_hz()[0]),
            "temp_k": round(self.temperature_k(), 2),
        }

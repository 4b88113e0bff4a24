"""Single Quantum SNSPD controller (WebSQ-style JSON over TCP): bias currents, trigger levels, counts.

What it is for: Bob's detectors when they are superconducting nanowires.  Set
each channel's bias current (ramped, never jumped) and trigger level, the
counter period, and read count rates.

What it must not do: send a bias outside ``0..max_bias_ua`` (validated before
the wire; nothing clipped), change more than ``max_step_ua`` per step, or
trust a setting it did not read back (every set is confirmed by requesting
the label again; a mismatch raises ``InstrumentError``).

Wire protocol, after Single Quantum's published WebSQ Python client
(``WebSQControl``, MIT licence): the control port (default 12000) takes JSON
objects with no separator, e.g.
``{"command": "SetAllBiasCurrents", "label": "BiasCurrent", "value": [12.0, 8.0]}``
(microamps), ``SetAllTriggerLevels``/``TriggerLevel`` (millivolts),
``SetMeasurementPeriod``/``InptMeasurementPeriod`` (milliseconds, at least 10),
``{"command": "DetectorEnable", "label": "DetectorEnable", "value": <bool>}``
(every command carries its label, as the client sends it), and
``{"request": "<label>"}``; the controller sends
JSON objects each terminated by ``\\x17`` (ETB), ``{"label": L, "value": v}``,
also unsolicited (broadcasts), and error reports as labels containing
``Error``.  The counts port (default 12345) streams one text line per
measurement period: ``<timestamp>,<counts ch1>,...,<counts chN>``.
ASSUMED (not in the public client): the label ``Temperature`` (kelvin) and
the use of ``NumberOfDetectors`` as the identification query (WebSQ has no
``*IDN?``; a peer that does not answer it with an integer is refused).

Why a request/confirm loop instead of the vendor's background thread: the
driver then has one deadline per call and no thread to leak, and broadcasts
are skipped (not lost) while waiting for the label asked for.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence

import numpy as np

from .base import Identity, Instrument, ramp_values
from .errors import DriverTimeout, DriverValueError, InstrumentError, MalformedReply
from .resources import make_transport
from .transport import StreamTransport, TcpTransport, Transport, parse_host_port

__all__ = ["SingleQuantumSnspd"]

ETB = b"\x17"


class SingleQuantumSnspd(Instrument):
    """A Single Quantum Eos-style multi-channel SNSPD controller."""

    KIND = "SingleQuantum"
    TRIGGER_MV = (-500.0, 500.0)
    # WebSQControl.set_measurement_periode: "the minimum value can be 10 ms"; 60 s upper end ASSUMED
    PERIOD_MS = (10.0, 60_000.0)

    def __init__(
        self,
        resource: str | Transport,
        *,
        timeout_s: float = 2.0,
        name: str | None = None,
        counts_port: int = 12345,
        max_bias_ua: float = 40.0,
        max_step_ua: float = 0.5,
        inter_delay_s: float = 0.05,
    ):
        super().__init__(resource, timeout_s=timeout_s, name=name)
        self.counts_port = self._check_int("counts_port", counts_port, 1, 65535)
        self.max_bias_ua = self._check_range("max_bias_ua", max_bias_ua, 0.1, 100.0, "uA")
        self.max_step_ua = self._check_range("max_step_ua", max_step_ua, 1e-3, 10.0, "uA")
        self.inter_delay_s = self._check_range("inter_delay_s", inter_delay_s, 0.0, 10.0, "s")
        self.n_detectors = 0
        self._counts: TcpTransport | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def _make_transport(self) -> Transport:
        if isinstance(self.resource, Transport):
            return self.resource
        return make_transport(
            self.resource,
            timeout_s=self.timeout_s,
            write_termination=b"",
            read_termination=ETB,
            allow=("tcp",),
        )

    def _identify(self) -> Identity:
        n = self._get("NumberOfDetectors")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 64:
            raise MalformedReply(
                "NumberOfDetectors is not an integer 1..64",
                reply=repr(n)[:80],
                instrument=self.name,
                command='{"request": "NumberOfDetectors"}',
            )
        self.n_detectors = n
        return Identity("Single Quantum", "WebSQ", "", "", f"NumberOfDetectors={n}")

    def _before_close(self) -> None:
        c, self._counts = self._counts, None
        if c is not None:
            c.close()

    @property
    def channels(self) -> int:
        return self.n_detectors

    # -- JSON exchange ----------------------------------------------------------------------
    def _send(self, obj: dict) -> str:
        text = json.dumps(obj)
        t = self.transport
        assert isinstance(t, StreamTransport)
        self._call(text, t.write, text.encode("utf-8"))
        return text

    def _next_message(self, command: str, deadline: float) -> dict:
        t = self.transport
        assert isinstance(t, StreamTransport)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DriverTimeout(
                f"no reply within {self.timeout_s:g} s", instrument=self.name, command=command
            )
        raw = self._call(command, t.read_until, ETB, timeout_s=remaining)
        try:
            msg = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise MalformedReply(
                "reply is not a JSON object", reply=raw, instrument=self.name, command=command
            ) from None
        if not isinstance(msg, dict):
            raise MalformedReply(
                "reply is not a JSON object", reply=raw, instrument=self.name, command=command
            )
        label = msg.get("label")
        if isinstance(label, str) and "error" in label.lower():
            raise InstrumentError(
                f"controller reported {label}: {msg.get('value')!r}", instrument=self.name, command=command
            )
        return msg

    def _get(self, label: str):
        """Request ``label`` and return its value, skipping unrelated broadcasts until the deadline."""
        command = self._send({"request": label})
        deadline = time.monotonic() + self.timeout_s
        while True:
            msg = self._next_message(command, deadline)
            if msg.get("label") == label and "value" in msg:
                v = msg["value"]
                # a labelProps-style answer carries {"value": ..., "bounds": ...}
                return v["value"] if isinstance(v, dict) and "value" in v else v

    def _set_confirmed(self, command: str, label: str, value) -> None:
        self._send({"command": command, "label": label, "value": value})
        got = self._get(label)
        want = np.atleast_1d(np.asarray(value, dtype=np.float64))
        try:
            have = np.atleast_1d(np.asarray(got, dtype=np.float64))
        except (TypeError, ValueError):
            raise MalformedReply(
                f"{label} read-back is not numeric",
                reply=repr(got)[:80],
                instrument=self.name,
                command=command,
            ) from None
        if have.shape != want.shape or not np.allclose(have, want, rtol=0, atol=1e-6):
            raise InstrumentError(
                f"{label} reads back {got!r} after setting {value!r}", instrument=self.name, command=command
            )

    # -- settings --------------------------------------------------------------------------
    def _values(self, what: str, values: Sequence[float], lo: float, hi: float, unit: str) -> list[float]:
        vals = list(values) if not isinstance(values, (str, bytes)) else None
        if vals is None or len(vals) != self.n_detectors:
            raise DriverValueError(
                f"{what} needs {self.n_detectors} values, got {values!r}", instrument=self.name
            )
        return [self._check_range(f"{what}[{i}]", v, lo, hi, unit) for i, v in enumerate(vals)]

    def bias_currents_ua(self) -> np.ndarray:
        """Read every channel's bias current (uA)."""
        v = self._get("BiasCurrent")
        try:
            a = np.asarray(v, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise MalformedReply(
                "BiasCurrent is not a list of numbers",
                reply=repr(v)[:80],
                instrument=self.name,
                command='{"request": "BiasCurrent"}',
            ) from None
        if a.size != self.n_detectors:
            raise MalformedReply(
                f"BiasCurrent has {a.size} values for {self.n_detectors} detectors",
                reply=repr(v)[:80],
                instrument=self.name,
                command='{"request": "BiasCurrent"}',
            )
        return a

    def set_bias_currents_ua(self, values_ua: Sequence[float], *, max_step: float | None = None) -> None:
        """Ramp all channels together to ``values_ua`` (uA), each step at most ``max_step`` per channel."""
        target = np.array(self._values("bias_ua", values_ua, 0.0, self.max_bias_ua, "uA"))
        step = (
            self.max_step_ua
            if max_step is None
            else self._check_range("max_step", max_step, 1e-3, 10.0, "uA")
        )
        start = self.bias_currents_ua()
        n = int(math.ceil(float(np.max(np.abs(target - start))) / step - 1e-12)) if target.size else 0
        for i in range(1, n + 1):
            if i > 1 and self.inter_delay_s:
                time.sleep(self.inter_delay_s)
            point = start + (target - start) * (i / n)
            self._set_confirmed("SetAllBiasCurrents", "BiasCurrent", [round(float(x), 6) for x in point])

    def set_bias(self, channel: int, value: float, *, max_step: float | None = None) -> None:
        """Ramp channel ``channel``'s bias current to ``value`` microamps (other channels unchanged)."""
        ch = self._check_int("channel", channel, 0, self.n_detectors - 1)
        v = self._check_range("bias_ua", value, 0.0, self.max_bias_ua, "uA")
        step = (
            self.max_step_ua
            if max_step is None
            else self._check_range("max_step", max_step, 1e-3, 10.0, "uA")
        )
        cur = self.bias_currents_ua()
        for i, x in enumerate(ramp_values(float(cur[ch]), v, step)):
            if i and self.inter_delay_s:
                time.sleep(self.inter_delay_s)
            cur[ch] = x
            self._set_confirmed("SetAllBiasCurrents", "BiasCurrent", [round(float(y), 6) for y in cur])

    def set_trigger_levels_mv(self, values_mv: Sequence[float]) -> None:
        """Set every channel's trigger (discriminator) level in mV."""
        vals = self._values("trigger_mv", values_mv, *self.TRIGGER_MV, "mV")
        self._set_confirmed("SetAllTriggerLevels", "TriggerLevel", vals)

    def trigger_levels_mv(self) -> np.ndarray:
        return np.asarray(self._get("TriggerLevel"), dtype=np.float64).reshape(-1)

    def set_measurement_period_ms(self, period_ms: float) -> None:
        """Set the counter period (ms): one counts line per period on the counts port."""
        v = self._check_range("period_ms", period_ms, *self.PERIOD_MS, "ms")
        self._set_confirmed("SetMeasurementPeriod", "InptMeasurementPeriod", v)

    def measurement_period_ms(self) -> float:
        v = self._get("InptMeasurementPeriod")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise MalformedReply(
                "InptMeasurementPeriod is not a number",
                reply=repr(v)[:80],
                instrument=self.name,
                command='{"request": "InptMeasurementPeriod"}',
            )
        return float(v)

    def set_enabled(self, enabled: bool) -> None:
        """Enable (bias on) or disable the detectors."""
        if not isinstance(enabled, bool):
            raise DriverValueError(f"enabled must be a bool, got {enabled!r}", instrument=self.name)
        # the vendor client sends the label with the command (WebSQControl.enable_detectors)
        self._set_confirmed("DetectorEnable", "DetectorEnable", enabled)

    def set_dead_time_ns(self, channel: int, dead_time_ns: float) -> None:
        """Not settable: an SNSPD's recovery time is fixed by the nanowire (raises DriverValueError)."""
        raise DriverValueError(
            "an SNSPD has no settable dead time (recovery is set by the nanowire's kinetic inductance)",
            instrument=self.name,
            command="set_dead_time_ns",
        )

    def temperature_k(self) -> float:
        v = self._get("Temperature")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise MalformedReply(
                "Temperature is not a number",
                reply=repr(v)[:80],
                instrument=self.name,
                command='{"request": "Temperature"}',
            )
        return float(v)

    # -- counts ------------------------------------------------------------------------------
    def _counts_transport(self) -> TcpTransport:
        if self._counts is None or not self._counts.is_open:
            t = self.transport  # raises NotConnected when closed
            if isinstance(t, TcpTransport):
                host = t.host
            else:
                host, _ = parse_host_port(str(self.resource))
            c = TcpTransport(host, self.counts_port, timeout_s=self.timeout_s)
            self._call(f"<connect counts {host}:{self.counts_port}>", c.open)
            self._counts = c
        return self._counts

    def read_counts(self, *, timeout_s: float | None = None) -> tuple[float, np.ndarray]:
        """Return (timestamp, counts per channel) of the next complete counts line."""
        c = self._counts_transport()
        t = timeout_s if timeout_s is not None else self.timeout_s
        # a dropped stream can show while the buffer is cleared: name the stream there too
        self._call("<counts>", c.clear_input)
        # the first line after clearing may be a tail; it is skipped
        self._call("<counts>", c.read_line, timeout_s=t)
        line = self._call("<counts>", c.read_line, timeout_s=t)
        fields = line.strip().split(",")
        try:
            vals = [float(f) for f in fields]
        except ValueError:
            raise MalformedReply(
                "counts line is not comma-separated numbers",
                reply=line,
                instrument=self.name,
                command="<counts>",
            ) from None
        if len(vals) != self.n_detectors + 1:
            raise MalformedReply(
                f"counts line has {len(vals) - 1} channels, expected {self.n_detectors}",
                reply=line,
                instrument=self.name,
                command="<counts>",
            )
        return vals[0], np.asarray(vals[1:], dtype=np.float64)

    def count_rates_hz(self) -> np.ndarray:
        """Counts per second of each channel over one measurement period."""
        period_ms = self.measurement_period_ms()
        _, counts = self.read_counts(timeout_s=self.timeout_s + 2 * period_ms / 1000.0)
        return counts / (period_ms / 1000.0)

    def status(self) -> dict:
        return {
            "detectors": self.n_detectors,
            "bias_ua": self.bias_currents_ua().round(3).tolist(),
            "trigger_mv": self.trigger_levels_mv().round(1).tolist(),
            "period_ms": self.measurement_period_ms(),
        }

"""OZ Optics EPC-400 electronic polarization controller (4 fiber-squeezer channels) over a serial line.

What it is for: Bob's polarization controller for drift compensation.  The
calibration routines set the four channel voltages (millivolts) through the
:class:`~drivers.interfaces.PolarizationController` surface
(``set_actuators``/``get_actuators``).

What it must not do: send a voltage outside -5000..+5000 mV (validated before
the wire, never clipped), or move a channel by more than ``max_step_mv`` at
once when a step is configured (large jumps scramble Bob's polarization and
the compensation loop loses lock).

Command set (OZ Optics EPC-400-OEM driver, firmware "EPC OEM Driver V2.x", as
used by public lab drivers): 9600 baud 8N1, commands end with CR LF, every
reply is zero or more lines followed by a line ``Done``.  ``V{ch},{mV}`` sets
channel ``ch`` (1..4) to ``mV`` (-5000..5000); ``V?`` lists ``CH1 <mV>`` ..
``CH4 <mV>``; ``MDC`` selects DC (static voltage) mode, ``MAC`` AC
(scrambling), ``M?`` the mode; ``VZ{ch}`` zeroes a channel; ``SN?`` and
``VER?`` give serial number and version; ``ENABLE1``/``ENABLE0`` the driver
outputs.  A refused command ends its reply with a line ending in ``Error!``
*instead of* ``Done`` (pylablib's ``OZOptics.EPC04`` reads to ``Done\r\n`` or
``Error!\r\n`` and raises when the last line ends with ``Error!``); so
``Error!`` ends a reply as ``Done`` does, and reading on to a ``Done`` that never
comes would turn every refusal into a timeout.  ``V?`` answers one line
``Voltage(mV): CH1 +2200 CH2 +5000 CH3 -1000 CH4 -4000`` (QMI's
``OzOptics_EpcDriver``; one CH per line is parsed too).  ASSUMED: a line starting
with ``Error`` or ``Invalid`` before ``Done`` is also a refusal; identification
requires ``VER?`` to mention ``EPC``.  No OZ Optics manual text was found here:
the two public drivers above are the sources.

Why read to ``Done`` / ``Error!``: the controller's replies have no fixed line
count, and these are the only end markers; every read still has the
transport's deadline.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

import numpy as np

from .base import Identity, Instrument, ramp_values
from .errors import DriverValueError, InstrumentError, MalformedReply, WrongModel
from .resources import make_transport
from .transport import StreamTransport, Transport

__all__ = ["OzEpc400"]

_CH = re.compile(r"CH\s*(\d)\s*[:=]?\s*([+-]?\d+(?:\.\d+)?)", re.IGNORECASE)


class OzEpc400(Instrument):
    """OZ Optics EPC-400: 4 channels, -5000..+5000 mV each."""

    KIND = "EPC-400"
    N_CHANNELS = 4
    RANGE_MV = (-5000.0, 5000.0)
    MAX_LINES = 32

    def __init__(
        self,
        resource: str | Transport,
        *,
        timeout_s: float = 2.0,
        name: str | None = None,
        baudrate: int = 9600,
        max_step_mv: float | None = None,
        inter_delay_s: float = 0.0,
    ):
        super().__init__(resource, timeout_s=timeout_s, name=name)
        self.baudrate = self._check_int("baudrate", baudrate, 1200, 115200)
        self.max_step_mv = (
            None if max_step_mv is None else self._check_range("max_step_mv", max_step_mv, 1.0, 10000.0, "mV")
        )
        self.inter_delay_s = self._check_range("inter_delay_s", inter_delay_s, 0.0, 10.0, "s")

    # -- interface properties --------------------------------------------------------------
    @property
    def actuator_unit(self) -> str:
        return "mV"

    @property
    def actuator_range(self) -> tuple[float, float]:
        return self.RANGE_MV

    @property
    def n_actuators(self) -> int:
        return self.N_CHANNELS

    # -- lifecycle ------------------------------------------------------------------------------
    def _make_transport(self) -> Transport:
        if isinstance(self.resource, StreamTransport):
            # the controller's line ends are part of the protocol, whoever built the transport
            self.resource.write_termination, self.resource.read_termination = b"\r\n", b"\n"
            return self.resource
        if isinstance(self.resource, Transport):
            return self.resource
        return make_transport(
            self.resource,
            timeout_s=self.timeout_s,
            write_termination=b"\r\n",
            read_termination=b"\n",
            serial={"baudrate": self.baudrate},
        )

    def _identify(self) -> Identity:
        ver = " ".join(self._command("VER?"))
        if "EPC" not in ver.upper():
            raise WrongModel(
                f"VER? answered {ver!r}, not an EPC controller",
                identity=ver,
                instrument=self.name,
                command="VER?",
            )
        sn_lines = self._command("SN?")
        sn = ""
        for line in sn_lines:
            sn = line.split(":", 1)[1].strip() if ":" in line else line.strip()
            if sn:
                break
        return Identity("OZ Optics", "EPC-400", sn, ver.split(":", 1)[-1].strip(), ver)

    def _after_open(self) -> None:
        self._command("MDC")  # static voltages; the polarization must hold still between steps

    # -- exchange --------------------------------------------------------------------------------
    def _command(self, command: str) -> list[str]:
        """Send ``command``; return the reply lines before ``Done``.

        InstrumentError on a ``...Error!`` end line or an error line before ``Done``.
        """
        t = self.transport
        assert isinstance(t, StreamTransport)
        self._call(command, t.write_line, command)
        lines: list[str] = []
        deadline = time.monotonic() + self.timeout_s
        for _ in range(self.MAX_LINES):
            remaining = max(deadline - time.monotonic(), 1e-3)
            line = self._call(command, t.read_line, timeout_s=remaining).strip()
            if not line:
                continue
            if line.endswith("Error!"):  # a refusal ends the reply instead of "Done"
                said = " | ".join([*lines, line])
                raise InstrumentError(f"controller answered {said!r}", instrument=self.name, command=command)
            if line == "Done":
                errs = [x for x in lines if x.lower().startswith(("error", "invalid"))]
                if errs:
                    raise InstrumentError(
                        f"controller answered {errs[0]!r}", instrument=self.name, command=command
                    )
                return lines
            if not line.isprintable():
                raise MalformedReply(
                    "reply line is not printable text", reply=line, instrument=self.name, command=command
                )
            lines.append(line)
        raise MalformedReply(
            f"no 'Done' within {self.MAX_LINES} lines",
            reply=" | ".join(lines)[:80],
            instrument=self.name,
            command=command,
        )

    # -- voltages ---------------------------------------------------------------------------------
    def voltages_mv(self) -> np.ndarray:
        """Read the four channel voltages (mV)."""
        lines = self._command("V?")
        found: dict[int, float] = {}
        for line in lines:
            for ch, v in _CH.findall(line):
                found[int(ch)] = float(v)
        if sorted(found) != list(range(1, self.N_CHANNELS + 1)):
            raise MalformedReply(
                "V? did not list CH1..CH4", reply=" | ".join(lines), instrument=self.name, command="V?"
            )
        return np.array([found[c] for c in range(1, self.N_CHANNELS + 1)], dtype=np.float64)

    def _set_one(self, ch: int, mv: float) -> None:
        self._command(f"V{ch},{int(round(mv))}")

    def set_voltage_mv(self, channel: int, voltage_mv: float) -> None:
        """Set one channel (1..4) to ``voltage_mv`` (ramped when ``max_step_mv`` is set)."""
        ch = self._check_int("channel", channel, 1, self.N_CHANNELS)
        v = self._check_range(f"voltage_mv[ch{ch}]", voltage_mv, *self.RANGE_MV, "mV")
        if self.max_step_mv is None:
            self._set_one(ch, v)
            return
        start = float(self.voltages_mv()[ch - 1])
        for i, x in enumerate(ramp_values(start, v, self.max_step_mv)):
            if i and self.inter_delay_s:
                time.sleep(self.inter_delay_s)
            self._set_one(ch, x)

    def set_actuators(self, values: Sequence[float]) -> None:
        """Set all four channel voltages (mV); all are validated before the first is sent."""
        vals = list(values) if not isinstance(values, (str, bytes)) else []
        if len(vals) != self.N_CHANNELS:
            raise DriverValueError(
                f"need {self.N_CHANNELS} voltages (mV), got {values!r}", instrument=self.name
            )
        checked = [
            self._check_range(f"voltage_mv[ch{i + 1}]", v, *self.RANGE_MV, "mV") for i, v in enumerate(vals)
        ]
        for i, v in enumerate(checked):
            self.set_voltage_mv(i + 1, v)

    def get_actuators(self) -> np.ndarray:
        return self.voltages_mv()

    def status(self) -> dict:
        return {"voltages_mv": self.voltages_mv().tolist(), "mode": " ".join(self._command("M?"))}

"""Keysight N7785C / N7786C / N7788C polarization synthesizer / stabilizer: the stabilizer commands.

What it is for: hold Bob's polarization at a target state with the instrument's
own control loop, the third polarization controller of issue 5 next to the
EPC-400 (fiber squeezer voltages) and the MPC320 (paddle angles). On the
N7786C/N7788C (built-in polarimeter) the target is a normalized Stokes vector;
on the N7785C (no polarimeter) the loop minimizes a feedback value the caller
measures (e.g. Bob's QBER or a detector's count rate) and sends step by step.

Command set, from the *Keysight N778xC Series Polarization Instruments
Programming Guide*, chapter 5 "Polarization Commands", p. 90 (mirrored at
manualshive.com, manual 1962052, page 90):

* ``:STABilizer:SOP <s1>,<s2>,<s3>[,<Factor>]`` sets the target SOP; N7786C/88C
  take a normalized 3-element Stokes vector (a DOP other than 1 is normalized by
  the instrument); N7785C takes ``0,0,0,<Factor>``, Factor a positive real, each
  followed by ``TRIG 1`` to run one dithering step (10-20 Hz repetition);
* ``:STABilizer:STABilize 0|1`` switches stabilization off/on;
* ``:STABilizer:SOP?`` returns the target as a 4-element Stokes vector.
* General syntax (same guide, ch. 1 "Data Types"): floats in decimal or
  exponential form, ASCII replies.

ASSUMED (not on the pages we could read): the reply of ``:STABilizer:SOP?`` is
four comma-separated numbers ``s0,s1,s2,s3``; the error queue is the standard
``:SYSTem:ERRor?`` (``<code>,"<text>"``) that Keysight's N77xx instruments
answer; ``*IDN?`` gives ``Keysight Technologies,N7786C,<serial>,<firmware>``.
Only these strings would change if a unit differs. The guide's waveplate /
scan commands were not found, so this driver does not implement the
``PolarizationController`` actuator interface (no per-actuator set points).

What it must not do: send an unvalidated vector (a zero or non-finite Stokes
vector, a Stokes target to an N7785C, a non-positive feedback factor: all
``DriverValueError`` before the wire), or leave a refused setting unreported
(every setting reads the error queue).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .base import ScpiInstrument
from .errors import DriverValueError, MalformedReply
from .resources import make_transport
from .transport import Transport

__all__ = ["KeysightN778x"]


class KeysightN778x(ScpiInstrument):
    """N7785C / N7786C / N7788C polarization stabilizer (module docstring: commands and sources)."""

    KIND = "N778xC"
    MODELS = (r"N778[568]C",)
    ERROR_QUERY = ":SYST:ERR?"

    def __init__(self, resource: str | Transport, *, timeout_s: float = 2.0, name: str | None = None):
        super().__init__(resource, timeout_s=timeout_s, name=name)

    def _make_transport(self) -> Transport:
        if isinstance(self.resource, Transport):
            return self.resource
        return make_transport(self.resource, timeout_s=self.timeout_s)

    def _after_open(self) -> None:
        self.error_queue()  # start from an empty queue so later errors belong to our commands

    @property
    def has_polarimeter(self) -> bool:
        """N7786C and N7788C measure the SOP themselves; the N7785C needs external feedback."""
        return self.identity.model.upper() in ("N7786C", "N7788C")

    def set_target_sop(self, stokes: Sequence[float]) -> None:
        """Stabilize towards the Stokes vector (s1, s2, s3), sent normalized (N7786C/N7788C only)."""
        s = [float(x) for x in stokes] if len(stokes) == 3 else None
        if s is None or not all(math.isfinite(x) for x in s):
            raise DriverValueError(f"stokes must be three finite numbers (s1, s2, s3), got {stokes!r}",
                                   instrument=self.name, command=":STAB:SOP")
        norm = math.sqrt(sum(x * x for x in s))
        if norm < 1e-6:
            raise DriverValueError("stokes vector (0, 0, 0) has no direction", instrument=self.name,
                                   command=":STAB:SOP")
        if not self.has_polarimeter:
            raise DriverValueError(f"{self.identity.model} has no polarimeter: use feedback_step()",
                                   instrument=self.name, command=":STAB:SOP")
        s1, s2, s3 = (x / norm for x in s)
        self._write_checked(f":STAB:SOP {s1:.6f},{s2:.6f},{s3:.6f}")

    def target_sop(self) -> np.ndarray:
        """The target as the instrument reports it: float64[4] (s0, s1, s2, s3)."""
        cmd = ":STAB:SOP?"
        r = self._query(cmd)
        try:
            v = np.array([float(x) for x in r.split(",")], np.float64)
        except ValueError:
            v = np.empty(0)
        if v.shape != (4,) or not np.isfinite(v).all():
            raise MalformedReply("expected a 4-element Stokes vector", reply=r, instrument=self.name,
                                 command=cmd)
        return v

    def set_stabilizing(self, on: bool) -> None:
        """Switch the stabilizer loop on or off (``:STAB:STAB 1|0``)."""
        self._write_checked(f":STAB:STAB {1 if on else 0}")

    def feedback_step(self, factor: float) -> None:
        """N7785C: hand the loop the feedback value to minimize, then trigger one dithering step."""
        f = float(factor)
        if not (math.isfinite(f) and f > 0):
            raise DriverValueError(f"factor must be a positive real number, got {factor!r}",
                                   instrument=self.name, command=":STAB:SOP")
        self._write_checked(f":STAB:SOP 0,0,0,{f:.6g}")
        self._write_checked("TRIG 1")

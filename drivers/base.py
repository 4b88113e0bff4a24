"""The lifecycle every instrument driver shares, and small helpers for SCPI and validation.

What it is for: a concrete driver subclasses :class:`Instrument` (or
:class:`ScpiInstrument`), says how to build its transport and which models it
accepts, and gets

* no I/O in ``__init__`` (pymeasure/QCoDeS habit): construction only stores the
  resource, so a config file can be loaded and validated with no lab attached;
* ``open()`` → connect, identify (``*IDN?`` or the driver's ``_identify``),
  refuse a wrong model with :class:`~drivers.errors.WrongModel` (and close);
* ``close()`` (idempotent), ``reconnect()``, the context manager;
* ``_query``/``_write`` that attach the instrument name and the command to any
  :class:`~drivers.errors.DriverError` coming from the transport, so every error
  names both (DESIGN "Contracts / Drivers");
* validators (``_check_range``, ``_check_int``, ``_check_choice``) raising
  :class:`~drivers.errors.DriverValueError` *before* anything is sent;
* :func:`ramp_values` for settings that must ramp, never jump (detector bias).

What it must not do: know any device's commands (those live in the concrete
driver, next to the method that sends them), log secrets, or retry silently:
a failed command raises; the caller decides to ``reconnect()``.

Why: one place that guarantees "never blocks forever" (every transport read has
a deadline) and "errors name instrument and command", instead of each driver
re-implementing both.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .errors import (
    DriverError,
    DriverValueError,
    InstrumentError,
    MalformedReply,
    NotConnected,
    WrongModel,
)
from .transport import StreamTransport, Transport

__all__ = ["Identity", "Instrument", "ScpiInstrument", "ramp_values", "parse_scpi_error"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    """What ``open()`` learned about the instrument (from ``*IDN?`` or its equivalent)."""

    manufacturer: str
    model: str
    serial: str = ""
    firmware: str = ""
    raw: str = ""

    @classmethod
    def from_idn(cls, reply: str) -> Identity:
        """Parse an IEEE 488.2 ``*IDN?`` reply: ``manufacturer,model,serial,firmware``."""
        fields = [f.strip() for f in reply.strip().split(",")]
        if len(fields) < 2 or not fields[0] or not fields[1]:
            raise MalformedReply("*IDN? reply is not 'manufacturer,model[,serial[,firmware]]'",
                                 reply=reply)
        fields += [""] * (4 - len(fields))
        return cls(fields[0], fields[1], fields[2], ",".join(fields[3:]).strip(","), reply.strip())


class Instrument:
    """Base of every driver: resource, transport, identity, lifecycle, error context.

    Subclasses set ``KIND`` (a short device name used in error messages) and
    ``MODELS`` (regular expressions matched, case-insensitively and in full,
    against ``Identity.model``; empty = accept any), and implement
    ``_make_transport()``.  They may override ``_identify()`` (default: ``*IDN?``),
    ``_after_open()`` and ``_before_close()``.
    """

    KIND: ClassVar[str] = "instrument"
    MODELS: ClassVar[tuple[str, ...]] = ()
    IDN_COMMAND: ClassVar[str] = "*IDN?"

    def __init__(self, resource: str | Transport, *, timeout_s: float = 2.0, name: str | None = None):
        if not isinstance(resource, (str, Transport)):
            raise DriverValueError(f"resource must be a string or a Transport, got {type(resource).__name__}",
                                   instrument=self.KIND)
        if not (isinstance(timeout_s, (int, float)) and timeout_s > 0 and math.isfinite(timeout_s)):
            raise DriverValueError(f"timeout_s must be a positive number, got {timeout_s!r}",
                                   instrument=self.KIND)
        self.resource = resource
        self.timeout_s = float(timeout_s)
        self._name = name
        self._transport: Transport | None = None
        self.identity: Identity | None = None

    # -- to override -------------------------------------------------------------
    def _make_transport(self) -> Transport:
        """Build (not open) the transport for ``self.resource``."""
        if isinstance(self.resource, Transport):
            return self.resource
        raise NotImplementedError(f"{type(self).__name__} must implement _make_transport()")

    def _identify(self) -> Identity:
        return Identity.from_idn(self._query(self.IDN_COMMAND))

    def _after_open(self) -> None:
        """Hook run after a successful identification (e.g. clear an error queue)."""

    def _before_close(self) -> None:
        """Hook run before the transport closes (e.g. stop a stream); must not raise."""

    # -- lifecycle -----------------------------------------------------------------
    @property
    def name(self) -> str:
        """``KIND@endpoint`` (or the name given to the constructor), used in every error."""
        if self._name:
            return self._name
        if isinstance(self.resource, Transport):
            return f"{self.KIND}@{self.resource.description}"
        return f"{self.KIND}@{self.resource}"

    @property
    def is_open(self) -> bool:
        return self._transport is not None and self._transport.is_open

    def open(self) -> Identity:
        """Connect, identify and check the model; returns the :class:`Identity`."""
        if self.is_open:
            assert self.identity is not None
            return self.identity
        transport = self._make_transport()
        try:
            transport.open()
        except DriverError as e:
            raise e.attach(self.name, "<connect>") from None
        self._transport = transport
        try:
            ident = self._identify()
            if self.MODELS and not any(re.fullmatch(p, ident.model, re.IGNORECASE) for p in self.MODELS):
                raise WrongModel(f"identified as {ident.manufacturer} {ident.model}; this driver supports "
                                 f"{', '.join(self.MODELS)}", identity=ident.raw,
                                 instrument=self.name, command=self.IDN_COMMAND)
            self.identity = ident
            self._after_open()
        except BaseException:
            self._close_transport()
            raise
        log.info("%s: opened (%s %s sn=%s fw=%s)", self.name, ident.manufacturer, ident.model,
                 ident.serial, ident.firmware)
        return ident

    def _close_transport(self) -> None:
        t, self._transport = self._transport, None
        if t is not None:
            try:
                t.close()
            except Exception:  # noqa: BLE001 - close must not raise
                log.debug("%s: error while closing transport", self.name, exc_info=True)

    def close(self) -> None:
        """Stop what runs, disconnect; safe to call twice and after a lost connection."""
        if self._transport is not None:
            try:
                if self._transport.is_open:
                    self._before_close()
            except Exception:  # noqa: BLE001 - best effort on the way out
                log.debug("%s: error in _before_close", self.name, exc_info=True)
        self._close_transport()

    def reconnect(self, *, attempts: int = 3, delay_s: float = 0.2) -> Identity:
        """Close and open again (up to ``attempts`` times); re-identifies the instrument."""
        self._check_int("attempts", attempts, 1, 100)
        last: DriverError | None = None
        for i in range(attempts):
            self.close()
            try:
                return self.open()
            except WrongModel:
                raise
            except DriverError as e:
                last = e
                log.warning("%s: reconnect attempt %d/%d failed: %s", self.name, i + 1, attempts, e)
                time.sleep(delay_s)
        assert last is not None
        raise last

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<{type(self).__name__} {self.name} {state}>"

    # -- I/O with error context ---------------------------------------------------------
    @property
    def transport(self) -> Transport:
        """The open transport, or NotConnected naming the instrument."""
        if self._transport is None or not self._transport.is_open:
            raise NotConnected("not open (call open() or reconnect())", instrument=self.name)
        return self._transport

    def _call(self, command: str, fn, *args, **kw) -> Any:
        """Run ``fn`` and attach the instrument and ``command`` to any DriverError it raises."""
        try:
            return fn(*args, **kw)
        except DriverError as e:
            raise e.attach(self.name, command) from None

    def _query(self, command: str, *, timeout_s: float | None = None) -> str:
        """Send a command that has a text reply; return the reply."""
        t = self.transport
        try:
            return t.query(command, timeout_s=timeout_s)
        except DriverError as e:
            raise e.attach(self.name, command) from None

    def _write(self, command: str) -> None:
        """Send a command without a reply (on request/reply transports the empty ack is consumed)."""
        t = self.transport
        try:
            if isinstance(t, StreamTransport):
                t.write_line(command)
            else:
                t.query(command)
        except DriverError as e:
            raise e.attach(self.name, command) from None

    # -- validation (before anything reaches the wire) ------------------------------------
    def _check_range(self, what: str, value: Any, lo: float, hi: float, unit: str = "") -> float:
        """Return ``value`` as float if ``lo <= value <= hi``; never clips."""
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise DriverValueError(f"{what} must be a number, got {type(value).__name__}",
                                   instrument=self.name)
        v = float(value)
        if not math.isfinite(v) or not lo <= v <= hi:
            u = f" {unit}" if unit else ""
            raise DriverValueError(f"{what}={value!r}{u} is outside {lo:g}..{hi:g}{u}", instrument=self.name)
        return v

    def _check_int(self, what: str, value: Any, lo: int, hi: int) -> int:
        """Return ``value`` as int if it is an integer in ``lo..hi``."""
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise DriverValueError(f"{what} must be an integer, got {type(value).__name__}",
                                   instrument=self.name)
        if not lo <= int(value) <= hi:
            raise DriverValueError(f"{what}={value!r} is outside {lo}..{hi}", instrument=self.name)
        return int(value)

    def _check_choice(self, what: str, value: Any, choices: Iterable[Any]) -> Any:
        """Return ``value`` if it is one of ``choices`` (strings compared case-insensitively)."""
        options = list(choices)
        for c in options:
            if (isinstance(c, str) and isinstance(value, str) and c.upper() == value.upper()) or c == value:
                return c
        raise DriverValueError(f"{what}={value!r} is not one of {options}", instrument=self.name)


_SCPI_ERR = re.compile(r'^\s*([+-]?\d+)\s*(?:,\s*"?(.*?)"?\s*)?$', re.DOTALL)


def parse_scpi_error(reply: str) -> tuple[int, str]:
    """Parse a ``SYST:ERR?`` reply ``<code>,"<message>"`` into ``(code, message)``."""
    m = _SCPI_ERR.match(reply)
    if not m:
        raise MalformedReply("error-queue reply is not '<code>,\"<message>\"'", reply=reply)
    return int(m.group(1)), (m.group(2) or "").strip()


class ScpiInstrument(Instrument):
    """An Instrument whose error queue is read with ``SYST:ERR?`` (IEEE 488.2 / SCPI 1999 ch. 21)."""

    ERROR_QUERY: ClassVar[str] = "SYST:ERR?"
    MAX_ERRORS: ClassVar[int] = 64

    def error_queue(self) -> list[tuple[int, str]]:
        """Drain the error queue; return every ``(code, message)`` until ``0,"No error"``."""
        out: list[tuple[int, str]] = []
        for _ in range(self.MAX_ERRORS):
            code, msg = parse_scpi_error(self._query(self.ERROR_QUERY))
            if code == 0:
                return out
            out.append((code, msg))
        raise InstrumentError(f"error queue did not empty after {self.MAX_ERRORS} reads",
                              instrument=self.name, command=self.ERROR_QUERY)

    def check_errors(self, command: str | None = None) -> None:
        """Raise InstrumentError (naming ``command``) if the error queue holds anything."""
        errors = self.error_queue()
        if errors:
            code, msg = errors[0]
            more = f" (+{len(errors) - 1} more: {errors[1:]})" if len(errors) > 1 else ""
            raise InstrumentError(f"instrument error {code}: {msg}{more}", code=code,
                                  instrument=self.name, command=command)

    def _write_checked(self, command: str) -> None:
        """Send a setting and then read the error queue, so a refused setting raises here."""
        self._write(command)
        self.check_errors(command)


def ramp_values(start: float, stop: float, max_step: float) -> np.ndarray:
    """Intermediate set-points from ``start`` to ``stop`` (inclusive of ``stop``, not of ``start``).

    Steps are equal and no larger than ``max_step`` (the QCoDeS ``step`` idea); an
    empty array when ``start == stop``.
    """
    if not (max_step > 0 and math.isfinite(max_step)):
        raise DriverValueError(f"max_step must be a positive finite number, got {max_step!r}")
    if not (math.isfinite(start) and math.isfinite(stop)):
        raise DriverValueError(f"ramp endpoints must be finite, got {start!r} -> {stop!r}")
    n = int(math.ceil(abs(stop - start) / max_step - 1e-12))
    if n <= 0:
        return np.empty(0)
    return np.linspace(start, stop, n + 1)[1:]

"""The one exception hierarchy every instrument driver raises.

What it is for: a caller (the link engine, a calibration script, ``qkd devices
check``) catches ``DriverError`` and gets, in the message and as attributes, the
instrument that failed and the command that was on the wire, whatever the
transport (pyvisa, pyserial, raw TCP, ZeroMQ).

What it must not do: carry transport objects, retry, or log.  Transports raise
these classes without context (``instrument``/``command`` left ``None``);
``drivers.base.Instrument`` fills the context in with :meth:`DriverError.attach`
as the error passes through, so a low-level timeout surfaces as
``DriverTimeout: ID900@tcp://127.0.0.1:5555: 'INPU1:COUN?': no reply within 2.0 s``.

Why these classes: they are the failure modes a caller handles differently —
retry after a timeout, reconnect after a lost connection, fix the config after
a wrong model, fix the call after a validation error.  ``DriverTimeout`` is also
a ``TimeoutError``, ``ConnectionLost`` a ``ConnectionError`` and
``DriverValueError`` a ``ValueError`` so generic handlers still work.
"""

from __future__ import annotations

__all__ = [
    "DriverError",
    "DriverTimeout",
    "MalformedReply",
    "InstrumentError",
    "WrongModel",
    "NotConnected",
    "ConnectionLost",
    "DriverValueError",
]


class DriverError(Exception):
    """Base of every driver failure; names the instrument and the command."""

    def __init__(self, message: str, *, instrument: str | None = None, command: str | None = None):
        super().__init__(message)
        self.message = message
        self.instrument = instrument
        self.command = command

    def attach(self, instrument: str | None, command: str | None = None) -> DriverError:
        """Fill in the instrument and command if the raiser did not know them; return self."""
        if self.instrument is None:
            self.instrument = instrument
        if self.command is None:
            self.command = command
        return self

    def __str__(self) -> str:
        parts = []
        if self.instrument:
            parts.append(self.instrument)
        if self.command is not None:
            parts.append(repr(self.command))
        parts.append(self.message)
        return ": ".join(parts)


class DriverTimeout(DriverError, TimeoutError):
    """No (complete) reply arrived within the timeout."""


class MalformedReply(DriverError):
    """A reply arrived but does not parse as the command's documented answer."""

    def __init__(self, message: str, *, reply: bytes | str | None = None, **kw):
        super().__init__(message, **kw)
        self.reply = reply

    def __str__(self) -> str:
        base = super().__str__()
        if self.reply is None:
            return base
        shown = self.reply if len(self.reply) <= 80 else self.reply[:80]
        return f"{base} (reply {shown!r})"


class InstrumentError(DriverError):
    """The instrument reported an error (SCPI error queue, a status word, an error reply)."""

    def __init__(self, message: str, *, code: int | None = None, **kw):
        super().__init__(message, **kw)
        self.code = code


class WrongModel(DriverError):
    """``open()`` identified an instrument this driver does not support."""

    def __init__(self, message: str, *, identity: str | None = None, **kw):
        super().__init__(message, **kw)
        self.identity = identity


class NotConnected(DriverError):
    """A command was attempted on a driver that is not open (never opened, or closed)."""


class ConnectionLost(DriverError, ConnectionError):
    """The peer closed or reset the connection (or a serial port vanished) mid-exchange."""


class DriverValueError(DriverError, ValueError):
    """An argument failed validation; raised before anything is sent to the instrument."""

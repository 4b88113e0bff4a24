"""Turn a resource string from a lab file into a transport, one rule for every driver.

What it is for: a lab file names an instrument by a VISA resource string
(``TCPIP0::192.168.1.20::5025::SOCKET``, ``ASRL/dev/ttyUSB0::INSTR``), a raw
``host:port`` (or ``tcp://host:port``), or a serial device path (``/dev/ttyUSB0``,
``COM3``, ``serial:///dev/pts/5``).  The AWG, detector and polarization drivers
call :func:`make_transport` so the same driver runs against a real instrument and
its emulated twin (DESIGN "HIL": only the resource string differs).

What it must not do: open anything (the transport is returned closed; the
driver's ``open()`` connects), or guess a port for a serial device.

Why: ``TCPIP::<host>::<port>::SOCKET`` is a raw TCP socket, so it goes to the
project's TCP transport (pyvisa-py's socket session waits for a full chunk
when no termination character is set, which stalls binary-safe reads); other
VISA strings go to pyvisa (pyvisa-py backend, no vendor library needed);
plain ``host:port`` uses the project's own TCP transport, which has per-call
deadlines and hands back binary bytes untouched.
"""

from __future__ import annotations

import re

from .errors import DriverValueError
from .transport import SerialTransport, StreamTransport, TcpTransport, VisaTransport

__all__ = ["make_transport", "resource_kind"]

_VISA = re.compile(r"^(TCPIP\d*|ASRL|USB\d*|GPIB\d*)", re.IGNORECASE)
_VISA_SOCKET = re.compile(r"^TCPIP\d*::([^:]+)::(\d{1,5})::SOCKET$", re.IGNORECASE)
_HOSTPORT = re.compile(r"^(tcp://)?[A-Za-z0-9_.\-]+:\d{1,5}$")


def resource_kind(resource: str) -> str:
    """Classify a resource string: ``"visa"``, ``"tcp"`` or ``"serial"``; DriverValueError if none."""
    if not isinstance(resource, str) or not resource.strip():
        raise DriverValueError(f"resource must be a non-empty string, got {resource!r}")
    r = resource.strip()
    if _VISA.match(r) and "::" in r:
        return "visa"
    if r.startswith(("serial://", "/")) or re.fullmatch(r"COM\d+", r, re.IGNORECASE):
        return "serial"
    if _HOSTPORT.match(r):
        return "tcp"
    raise DriverValueError(
        f"resource {resource!r} is neither a VISA resource (TCPIP0::host::port::SOCKET, ASRL...::INSTR), "
        "a host:port, nor a serial device path (/dev/ttyUSB0, COM3, serial://...)"
    )


def make_transport(
    resource: str,
    *,
    timeout_s: float,
    write_termination: bytes = b"\n",
    read_termination: bytes = b"\n",
    serial: dict | None = None,
    allow: tuple[str, ...] = ("visa", "tcp", "serial"),
) -> StreamTransport:
    """Build (closed) the stream transport for ``resource``.

    ``serial`` holds pyserial settings (baudrate, rtscts...) used for serial
    devices and for VISA ``ASRL`` resources' pyserial equivalent; ``allow``
    restricts the kinds a driver accepts (an APT device is serial only).
    """
    kind = resource_kind(resource)
    if kind not in allow:
        raise DriverValueError(
            f"resource {resource!r} is a {kind} resource; this instrument needs one of: {', '.join(allow)}"
        )
    term = dict(write_termination=write_termination, read_termination=read_termination)
    if kind == "visa":
        m = _VISA_SOCKET.match(resource.strip())
        if m:  # a raw SCPI socket: our TCP transport, with per-call deadlines and binary-safe reads
            return TcpTransport(m.group(1), int(m.group(2)), timeout_s=timeout_s, **term)
        return VisaTransport(resource.strip(), timeout_s=timeout_s, **term)
    if kind == "tcp":
        return TcpTransport.from_address(resource.strip(), timeout_s=timeout_s, **term)
    path = resource.strip()
    if path.startswith("serial://"):
        path = path[len("serial://") :]
    return SerialTransport(path, timeout_s=timeout_s, **(serial or {}), **term)

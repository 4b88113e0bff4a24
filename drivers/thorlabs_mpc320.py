"""Thorlabs MPC320 motorized fiber polarization controller (3 paddles) over the APT binary protocol.

What it is for: Bob's polarization controller when it is a set of motorized
paddles; the calibration routines move the three paddle angles (degrees)
through the :class:`~drivers.interfaces.PolarizationController` surface.

What it must not do: command an angle outside 0..170 degrees or a velocity
outside 10..100 % (validated before the wire), wait without a deadline for a
move to finish, or act on a frame it did not ask for (unsolicited status
frames are skipped; error frames raise ``InstrumentError``).

Unsolicited and unknown messages: an APT controller sends frames nobody asked for.
``MGMSG_HW_YES_FLASH_PROGRAMMING`` 0x0017 after power-up ("sent by the server on start
up ... deprecated ... can be ignored": thorpy's message table), ``MGMSG_MOT_GET_STATUSUPDATE``
0x0481 / ``GET_USTATUSUPDATE`` 0x0491 every 100 ms once ``MGMSG_HW_START_UPDATEMSGS`` is on
(a Kinesis session may leave it on), ``MGMSG_HW_DISCONNECT`` 0x0002, and ids of newer
firmware that this driver does not know. A frame that is *well formed* (addressed to the
host, 0x01 or 0x00, from the device 0x50 or a rack/bay id 0x11, 0x21..0x2A, and a data packet
of at most 255 bytes, as the protocol allows: the same checks as yaq-project's
thorlabs-apt-protocol ``Unpacker``) is read whole and skipped, logged at DEBUG with its id
(the count is ``skipped_frames``); one that is not is refused as ``MalformedReply`` and the
input is flushed, since the byte stream can no longer be trusted to be in step.

Wire protocol (Thorlabs "APT Controllers Host-Controller Communications
Protocol", issue 25+): every message starts with a 6-byte little-endian
header ``message_id:u16`` then either ``param1:u8, param2:u8`` (header-only
messages) or ``data_length:u16`` with bit 7 of the destination byte set (a
data packet of that length follows); then ``destination:u8, source:u8``
(host 0x01, USB device 0x50).  Messages used: ``MGMSG_HW_REQ_INFO`` 0x0005 ->
``MGMSG_HW_GET_INFO`` 0x0006 (84 bytes: serial u32, model char[8], type u16,
firmware u8[4], notes char[48], empty[12], hw version u16, mod state u16,
channels u16); ``MGMSG_MOD_SET_CHANENABLESTATE`` 0x0210; ``MGMSG_MOT_MOVE_HOME``
0x0443 -> ``MGMSG_MOT_MOVE_HOMED`` 0x0444; ``MGMSG_MOT_MOVE_ABSOLUTE`` 0x0453
(chan u16, position i32) -> ``MGMSG_MOT_MOVE_COMPLETED`` 0x0464, which the
MPC320 sends header-only (channel ident in param1, no status packet; pnpq's
``AptMessage_MGMSG_MOT_MOVE_COMPLETED_6_BYTES``, "for the MPC320, no data packet
follows"), while other APT motor controllers append a 14-byte status (both are
accepted; without a status the reached angle is read with REQ_USTATUSUPDATE);
``MGMSG_MOT_REQ_USTATUSUPDATE`` 0x0490 -> ``MGMSG_MOT_GET_USTATUSUPDATE`` 0x0491
(chan u16, position i32, velocity u16, motor current i16, status u32);
``MGMSG_POL_SET_PARAMS`` 0x0530 / ``REQ`` 0x0531 / ``GET`` 0x0532 (not-used u16,
velocity % u16, home position u16, jog step 1..3 u16, positions in encoder
counts); ``MGMSG_HW_RICHRESPONSE`` 0x0081 (msg id u16, code u16, text[64])
reports an error.  Paddles are channels 1, 2, 3 with channel-ident bits
0x01, 0x02, 0x04; 1370 encoder counts = 170 degrees.  Serial settings 115200
baud 8N1 with RTS/CTS.

Why a hand-written codec: the protocol is small, and writing the frames with
``struct`` keeps the exact bytes visible to the protocol tests.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Sequence

import numpy as np

from .base import Identity, Instrument
from .errors import DriverTimeout, DriverValueError, InstrumentError, MalformedReply
from .resources import make_transport
from .transport import StreamTransport, Transport

__all__ = ["ThorlabsMpc320", "apt_short", "apt_long", "MSG", "HOST", "DEVICE", "COUNTS_PER_DEG"]

log = logging.getLogger(__name__)

HOST = 0x01
DEVICE = 0x50
# who may send a frame to the host: the USB device itself, a rack controller or one of its bays
# (APT protocol, "source/destination" table; yaq thorlabs-apt-protocol's Unpacker checks the same)
_SOURCES = frozenset({DEVICE, 0x11, *range(0x21, 0x2B)})
_MAX_DATA = 255       # "currently no data packet exceeds 255 bytes" (APT protocol, message header)
COUNTS_PER_DEG = 1370 / 170

MSG = {
    "HW_DISCONNECT": 0x0002,
    "HW_REQ_INFO": 0x0005,
    "HW_GET_INFO": 0x0006,
    "HW_START_UPDATEMSGS": 0x0011,
    "HW_STOP_UPDATEMSGS": 0x0012,
    "HW_YES_FLASH_PROGRAMMING": 0x0017,
    "HW_NO_FLASH_PROGRAMMING": 0x0018,
    "HW_RESPONSE": 0x0080,
    "HW_RICHRESPONSE": 0x0081,
    "MOD_SET_CHANENABLESTATE": 0x0210,
    "MOD_IDENTIFY": 0x0223,
    "MOT_MOVE_HOME": 0x0443,
    "MOT_MOVE_HOMED": 0x0444,
    "MOT_MOVE_ABSOLUTE": 0x0453,
    "MOT_MOVE_COMPLETED": 0x0464,
    "MOT_MOVE_STOP": 0x0465,
    "MOT_MOVE_STOPPED": 0x0466,
    "MOT_REQ_STATUSUPDATE": 0x0480,
    "MOT_GET_STATUSUPDATE": 0x0481,
    "MOT_REQ_USTATUSUPDATE": 0x0490,
    "MOT_GET_USTATUSUPDATE": 0x0491,
    "POL_SET_PARAMS": 0x0530,
    "POL_REQ_PARAMS": 0x0531,
    "POL_GET_PARAMS": 0x0532,
}
_NAMES = {v: k for k, v in MSG.items()}
CHAN_BITS = {1: 0x01, 2: 0x02, 3: 0x04}
_STATUS = struct.Struct("<HiHhI")  # 14 bytes
_POL = struct.Struct("<HHHHHH")  # 12 bytes
_INFO = struct.Struct("<I8sH4s48s12sHHH")  # 84 bytes


def apt_short(msg_id: int, param1: int = 0, param2: int = 0, dest: int = DEVICE, source: int = HOST) -> bytes:
    """A header-only APT message."""
    return struct.pack("<HBBBB", msg_id, param1, param2, dest, source)


def apt_long(msg_id: int, data: bytes, dest: int = DEVICE, source: int = HOST) -> bytes:
    """An APT message with a data packet (destination byte has bit 7 set)."""
    return struct.pack("<HHBB", msg_id, len(data), dest | 0x80, source) + data


def msg_name(msg_id: int) -> str:
    return "MGMSG_" + _NAMES.get(msg_id, f"0x{msg_id:04X}")


class ThorlabsMpc320(Instrument):
    """Thorlabs MPC320: three paddles, 0..170 degrees."""

    KIND = "MPC320"
    MODELS = (r"MPC320",)
    IDN_COMMAND = "MGMSG_HW_REQ_INFO"
    N_PADDLES = 3
    RANGE_DEG = (0.0, 170.0)
    MAX_SPEED_DEG_S = 400.0  # at 100 % velocity
    # the paddles' nominal retardances in waves, light through paddle 1 first (MPC320 manual:
    # lambda/4, lambda/2, lambda/4 at the design wavelength); calibration uses it only to find
    # equivalent paddle settings when one reaches the end of its travel
    PADDLE_RETARDANCE_WAVES = (0.25, 0.5, 0.25)

    def __init__(
        self,
        resource: str | Transport,
        *,
        timeout_s: float = 2.0,
        name: str | None = None,
        baudrate: int = 115200,
        rtscts: bool = True,
        velocity_percent: float | None = None,
    ):
        super().__init__(resource, timeout_s=timeout_s, name=name)
        self.baudrate = self._check_int("baudrate", baudrate, 1200, 3_000_000)
        if not isinstance(rtscts, bool):
            raise DriverValueError(f"rtscts must be a bool, got {rtscts!r}", instrument=self.name)
        self.rtscts = rtscts
        self._velocity_at_open = (
            None
            if velocity_percent is None
            else self._check_range("velocity_percent", velocity_percent, 10, 100, "%")
        )
        self.velocity_percent = 100.0
        self.skipped_frames = 0      # well-formed frames nobody asked for (unsolicited, unknown ids)

    @property
    def actuator_unit(self) -> str:
        return "deg"

    @property
    def actuator_range(self) -> tuple[float, float]:
        return self.RANGE_DEG

    @property
    def n_actuators(self) -> int:
        return self.N_PADDLES

    @property
    def paddle_retardance_waves(self) -> tuple[float, ...]:
        """Nominal retardance of each paddle in waves (a paddle angle is periodic with 180 deg)."""
        return self.PADDLE_RETARDANCE_WAVES

    # -- lifecycle -------------------------------------------------------------------------
    def _make_transport(self) -> Transport:
        if isinstance(self.resource, Transport):
            return self.resource
        return make_transport(
            self.resource,
            timeout_s=self.timeout_s,
            allow=("serial", "tcp"),
            serial={"baudrate": self.baudrate, "rtscts": self.rtscts},
        )

    def _identify(self) -> Identity:
        t = self._stream()
        t.clear_input()
        data = self._ask(apt_short(MSG["HW_REQ_INFO"]), MSG["HW_GET_INFO"], "MGMSG_HW_REQ_INFO")
        if len(data) != _INFO.size:
            raise MalformedReply(
                f"HW_GET_INFO carries {len(data)} bytes, expected {_INFO.size}",
                reply=data,
                instrument=self.name,
                command="MGMSG_HW_REQ_INFO",
            )
        serial, model, _typ, fw, _notes, _e, hw, _mod, _nch = _INFO.unpack(data)
        model_s = model.split(b"\0", 1)[0].decode("ascii", errors="replace").strip()
        fw_s = f"{fw[2]}.{fw[1]}.{fw[0]}"
        return Identity("Thorlabs", model_s, str(serial), fw_s, f"Thorlabs,{model_s},{serial},{fw_s},hw{hw}")

    def _after_open(self) -> None:
        self._send(apt_short(MSG["HW_NO_FLASH_PROGRAMMING"]), "MGMSG_HW_NO_FLASH_PROGRAMMING")
        self._send(apt_short(MSG["MOD_SET_CHANENABLESTATE"], 0x07, 0x01), "MGMSG_MOD_SET_CHANENABLESTATE")
        params = self.pol_params()
        self.velocity_percent = float(params["velocity_percent"])
        if self._velocity_at_open is not None:
            self.set_velocity_percent(self._velocity_at_open)

    # -- frames -------------------------------------------------------------------------------
    def _stream(self) -> StreamTransport:
        t = self.transport
        assert isinstance(t, StreamTransport)
        return t

    def _send(self, frame: bytes, command: str) -> None:
        self._call(command, self._stream().write, frame)

    def _read_frame(self, command: str, deadline: float) -> tuple[int, int, int, bytes]:
        """Return (msg_id, param1, param2, data) of the next frame."""
        t = self._stream()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DriverTimeout("no APT reply before the deadline", instrument=self.name, command=command)
        hdr = self._call(command, t.read_exact, 6, timeout_s=remaining)
        msg_id, b2, b3, dest, src = struct.unpack("<HBBBB", hdr)
        n = b2 | (b3 << 8) if dest & 0x80 else 0
        if (dest & 0x7F) not in (HOST, 0x00) or src not in _SOURCES or n > _MAX_DATA:
            # not an APT frame to us: the stream is out of step (line noise, a wrong device)
            t.clear_input()
            raise MalformedReply(
                f"malformed APT frame (id 0x{msg_id:04X}, destination 0x{dest & 0x7F:02X}, "
                f"source 0x{src:02X}, {n} data bytes)",
                reply=hdr,
                instrument=self.name,
                command=command,
            )
        if dest & 0x80:
            data = self._call(command, t.read_exact, n, timeout_s=max(deadline - time.monotonic(), 0.05))
            p1 = p2 = 0
        else:
            data, p1, p2 = b"", b2, b3
        if msg_id == MSG["HW_RICHRESPONSE"] and len(data) >= 4:
            ref, code = struct.unpack_from("<HH", data)
            text = data[4:].split(b"\0", 1)[0].decode("ascii", errors="replace")
            raise InstrumentError(
                f"controller error {code} on {msg_name(ref)}: {text}",
                code=code,
                instrument=self.name,
                command=command,
            )
        if msg_id == MSG["HW_RESPONSE"]:
            raise InstrumentError(
                "controller reported a hardware error event (HW_RESPONSE)",
                instrument=self.name,
                command=command,
            )
        return msg_id, p1, p2, data

    def _wait_for(
        self, want_id: int, command: str, timeout_s: float, chan: int | None = None
    ) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout_s
        while True:
            msg_id, p1, _p2, data = self._read_frame(command, deadline)
            if msg_id != want_id:
                # unsolicited (status updates, start-up notices) or an id we do not know:
                # well formed, read whole, so skipped without losing step
                self.skipped_frames += 1
                log.debug("%s: skipped %s (%d data bytes) while waiting for %s", self.name,
                          msg_name(msg_id), len(data), msg_name(want_id))
                continue
            if chan is not None:
                if len(data) == 1:       # a data packet too short to hold its channel word
                    raise MalformedReply(f"{len(data)}-byte data packet, no channel word",
                                         reply=data, instrument=self.name, command=command)
                got = struct.unpack_from("<H", data)[0] if data else p1
                if got != chan:
                    continue
            return p1, data

    def _ask(self, frame: bytes, want_id: int, command: str, *, chan: int | None = None) -> bytes:
        self._send(frame, command)
        return self._wait_for(want_id, command, self.timeout_s, chan)[1]

    # -- paddles ----------------------------------------------------------------------------------
    def _paddle(self, paddle: int) -> int:
        return CHAN_BITS[self._check_int("paddle", paddle, 1, self.N_PADDLES)]

    def position_deg(self, paddle: int) -> float:
        """Read paddle ``paddle`` (1..3)'s angle in degrees."""
        chan = self._paddle(paddle)
        cmd = f"MGMSG_MOT_REQ_USTATUSUPDATE(paddle {paddle})"
        data = self._ask(
            apt_short(MSG["MOT_REQ_USTATUSUPDATE"], chan), MSG["MOT_GET_USTATUSUPDATE"], cmd, chan=chan
        )
        if len(data) != _STATUS.size:
            raise MalformedReply(
                f"status carries {len(data)} bytes, expected {_STATUS.size}",
                reply=data,
                instrument=self.name,
                command=cmd,
            )
        _c, pos, _vel, _cur, _st = _STATUS.unpack(data)
        return pos / COUNTS_PER_DEG

    def move_to_deg(self, paddle: int, angle_deg: float) -> float:
        """Move paddle ``paddle`` to ``angle_deg`` and wait for MOVE_COMPLETED; return the reached angle."""
        chan = self._paddle(paddle)
        a = self._check_range(f"angle_deg[paddle {paddle}]", angle_deg, *self.RANGE_DEG, "deg")
        counts = int(round(a * COUNTS_PER_DEG))
        cmd = f"MGMSG_MOT_MOVE_ABSOLUTE(paddle {paddle}, {counts})"
        self._send(apt_long(MSG["MOT_MOVE_ABSOLUTE"], struct.pack("<Hi", chan, counts)), cmd)
        travel_s = self.RANGE_DEG[1] / (self.MAX_SPEED_DEG_S * self.velocity_percent / 100.0)
        _p1, data = self._wait_for(MSG["MOT_MOVE_COMPLETED"], cmd, self.timeout_s + 2 * travel_s, chan)
        if len(data) == _STATUS.size:
            return _STATUS.unpack(data)[1] / COUNTS_PER_DEG
        # the MPC320's MOVE_COMPLETED is header-only: ask where the paddle really is
        return self.position_deg(paddle)

    def home(self, paddle: int) -> None:
        """Home paddle ``paddle`` and wait for MOVE_HOMED."""
        chan = self._paddle(paddle)
        cmd = f"MGMSG_MOT_MOVE_HOME(paddle {paddle})"
        self._send(apt_short(MSG["MOT_MOVE_HOME"], chan), cmd)
        travel_s = self.RANGE_DEG[1] / (self.MAX_SPEED_DEG_S * self.velocity_percent / 100.0)
        self._wait_for(MSG["MOT_MOVE_HOMED"], cmd, self.timeout_s + 2 * travel_s, chan)

    def set_actuators(self, values: Sequence[float]) -> None:
        """Move all three paddles (degrees); all validated before the first move."""
        vals = list(values) if not isinstance(values, (str, bytes)) else []
        if len(vals) != self.N_PADDLES:
            raise DriverValueError(
                f"need {self.N_PADDLES} angles (deg), got {values!r}", instrument=self.name
            )
        checked = [
            self._check_range(f"angle_deg[paddle {i + 1}]", v, *self.RANGE_DEG, "deg")
            for i, v in enumerate(vals)
        ]
        for i, v in enumerate(checked):
            self.move_to_deg(i + 1, v)

    def get_actuators(self) -> np.ndarray:
        return np.array([self.position_deg(p) for p in range(1, self.N_PADDLES + 1)], dtype=np.float64)

    # -- parameters --------------------------------------------------------------------------------
    def pol_params(self) -> dict:
        """Read MGMSG_POL_GET_PARAMS: velocity (%), home and jog steps (degrees)."""
        data = self._ask(apt_short(MSG["POL_REQ_PARAMS"]), MSG["POL_GET_PARAMS"], "MGMSG_POL_REQ_PARAMS")
        if len(data) != _POL.size:
            raise MalformedReply(
                f"POL_GET_PARAMS carries {len(data)} bytes, expected {_POL.size}",
                reply=data,
                instrument=self.name,
                command="MGMSG_POL_REQ_PARAMS",
            )
        _nu, vel, home, j1, j2, j3 = _POL.unpack(data)
        return {
            "velocity_percent": vel,
            "home_deg": home / COUNTS_PER_DEG,
            "jog_deg": [j / COUNTS_PER_DEG for j in (j1, j2, j3)],
        }

    def set_velocity_percent(self, velocity_percent: float) -> None:
        """Set the paddle velocity (10..100 % of 400 deg/s), keeping home and jog settings."""
        v = int(round(self._check_range("velocity_percent", velocity_percent, 10, 100, "%")))
        p = self.pol_params()
        data = _POL.pack(
            0,
            v,
            int(round(p["home_deg"] * COUNTS_PER_DEG)),
            *[int(round(j * COUNTS_PER_DEG)) for j in p["jog_deg"]],
        )
        self._send(apt_long(MSG["POL_SET_PARAMS"], data), f"MGMSG_POL_SET_PARAMS(velocity {v}%)")
        got = self.pol_params()["velocity_percent"]
        if got != v:
            raise InstrumentError(
                f"velocity reads back {got}% after setting {v}%",
                instrument=self.name,
                command="MGMSG_POL_SET_PARAMS",
            )
        self.velocity_percent = float(v)

    def status(self) -> dict:
        return {
            "angles_deg": [round(float(x), 2) for x in self.get_actuators()],
            "velocity_percent": self.velocity_percent,
        }

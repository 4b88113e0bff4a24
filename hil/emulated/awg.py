"""Emulated Keysight 33522B AWG: SCPI over TCP with binary block uploads and an error queue.

What it is for: Alice's pattern generator in the HIL rig.  The production
driver (``drivers.keysight_awg.Keysight33500``) connects to it unchanged; the
emulator keeps the instrument state (volatile arbitrary waveforms, selected
arb, sample rate, amplitude, offset, outputs) and, when both channels play
arbitrary waveforms with their outputs on, decodes them with the shared
:class:`~drivers.keysight_awg.FrameEncoding` into the frame pattern the
physical model sends.  Listeners registered with :meth:`on_pattern` get
``(basis, bit, intensity, slot_rate_hz)`` each time that pattern changes.

What it must not do: know about photons (the model does), accept what the real
instrument refuses (out-of-range DAC codes, unknown headers, settings beyond
+/-5 V into 50 ohm all go to the error queue, as on the instrument), or block
the server thread beyond a fault's delay.

Why decoding here: the test of the encoding is then end to end, through the
real driver, a real socket and the same block parser a real instrument needs.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable

import numpy as np

from drivers.keysight_awg import DAC_MAX, FrameEncoding

from .framing import FramedTcpServer, split_scpi

log = logging.getLogger(__name__)

__all__ = ["EmulatedAwg"]

_LONG = {
    "SOURCE": "SOUR",
    "FUNCTION": "FUNC",
    "ARBITRARY": "ARB",
    "SRATE": "SRAT",
    "VOLTAGE": "VOLT",
    "OFFSET": "OFFS",
    "OUTPUT": "OUTP",
    "SYSTEM": "SYST",
    "ERROR": "ERR",
    "FORMAT": "FORM",
    "BORDER": "BORD",
    "VOLATILE": "VOL",
    "CLEAR": "CLE",
    "SYNCHRONIZE": "SYNC",
    "DATA": "DATA",
}
_TOKEN = re.compile(r"^([A-Z*]+?)(\d*)$")


def _norm_header(header: str) -> tuple[str, int]:
    """'SOURce2:FUNCtion:ARBitrary:SRATe?' -> ('SOUR:FUNC:ARB:SRAT?', 2); channel 1 when absent."""
    h = header.strip().upper().lstrip(":")
    query = h.endswith("?")
    h = h.rstrip("?")
    ch = 1
    parts = []
    for tok in h.split(":"):
        m = _TOKEN.match(tok)
        if not m:
            parts.append(tok)
            continue
        word, num = m.groups()
        word = _LONG.get(word, word)
        if num and word in ("SOUR", "OUTP"):
            ch = int(num)
        elif num:
            word += num
        parts.append(word)
    if parts and parts[0] == "SOUR":
        parts = parts[1:]
    return ":".join(parts) + ("?" if query else ""), ch


class _Channel:
    def __init__(self):
        self.arbs: dict[str, np.ndarray] = {}
        self.arb_name: str | None = None
        self.function = "SIN"
        self.srat_hz = 40e3
        self.vpp = 0.1
        self.offset_v = 0.0
        self.output = False
        self.load_ohm = 50.0  # OUTPut<n>:LOAD (inf = high impedance)

    @property
    def max_v(self) -> float:
        """|offset| + Vpp/2 limit at the set load: +/-10 V open circuit behind 50 ohm."""
        return 10.0 if self.load_ohm == float("inf") else 10.0 * self.load_ohm / (self.load_ohm + 50.0)


class EmulatedAwg(FramedTcpServer):
    """A 2-channel Trueform AWG on 127.0.0.1 (``address`` = ``host:port`` for the driver)."""

    KIND = "awg"

    def __init__(
        self,
        *,
        model: str = "33522B",
        serial: str = "MY00000001",
        encoding: FrameEncoding | None = None,
        max_points: int = 1_048_576,
        **kw,
    ):
        super().__init__(**kw)
        self.model = model
        self.serial = serial
        self.frame_encoding = encoding or FrameEncoding()
        self.max_points = max_points
        self.byte_order = "NORM"
        self.channels = {1: _Channel(), 2: _Channel()}
        self._listeners: list[Callable] = []
        self._lock = threading.Lock()
        self.pattern: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None
        self.decode_error: str | None = None
        self.uploads = 0

    # -- hooks for the rig -----------------------------------------------------------------
    def on_pattern(self, fn: Callable[[np.ndarray, np.ndarray, np.ndarray, float], None]) -> None:
        """Call ``fn(basis, bit, intensity, slot_rate_hz)`` whenever the played pattern changes."""
        self._listeners.append(fn)

    def current_pattern(self):
        """The decoded pattern being played, or None (outputs off, not arb, or undecodable)."""
        with self._lock:
            return self.pattern

    def channel_volts(self, ch: int) -> np.ndarray | None:
        """The waveform channel ``ch`` plays, in volts (None if not an arbitrary waveform)."""
        c = self.channels[ch]
        if c.function != "ARB" or c.arb_name is None:
            return None
        return c.offset_v + c.arbs[c.arb_name].astype(np.float64) / DAC_MAX * (c.vpp / 2)

    def _update_pattern(self) -> None:
        c1, c2 = self.channels[1], self.channels[2]
        new = None
        err = None
        if (
            c1.output
            and c2.output
            and c1.function == "ARB"
            and c2.function == "ARB"
            and c1.arb_name
            and c2.arb_name
        ):
            v1, v2 = self.channel_volts(1), self.channel_volts(2)
            if v1.shape != v2.shape:
                err = f"channel waveforms differ in length ({v1.size} vs {v2.size})"
            elif c1.srat_hz != c2.srat_hz:
                err = f"channel sample rates differ ({c1.srat_hz} vs {c2.srat_hz})"
            else:
                try:
                    b, k, i = self.frame_encoding.decode_volts(v1, v2)
                    new = (b, k, i, c1.srat_hz / self.frame_encoding.samples_per_slot)
                except ValueError as e:
                    err = str(e)
        with self._lock:
            changed = (new is None) != (self.pattern is None) or (
                new is not None
                and (
                    new[3] != self.pattern[3]
                    or not all(np.array_equal(a, b) for a, b in zip(new[:3], self.pattern[:3], strict=True))
                )
            )
            self.pattern = new
            self.decode_error = err
        if err:
            log.warning("%s: outputs on but the waveforms do not decode: %s", self.name, err)
        if changed and new is not None:
            for fn in list(self._listeners):
                fn(*new)

    # -- protocol ------------------------------------------------------------------------------
    def split(self, buf: bytearray) -> list[bytes]:
        return split_scpi(buf)

    def handle_line(self, msg) -> str | None:
        raw = msg if isinstance(msg, bytes) else str(msg).encode()
        replies = []
        # program message units separated by ';' (only outside binary blocks)
        units = [raw] if b"#" in raw else raw.split(b";")
        for unit in units:
            unit = unit.strip()
            if not unit:
                continue
            r = self._unit(unit)
            if r is not None:
                replies.append(r)
        return ";".join(replies) if replies else None

    def _err(self, code: int, text: str) -> None:
        self.errors.push(code, text)

    def _unit(self, unit: bytes) -> str | None:
        head, _, rest = unit.partition(b" ")
        try:
            header = head.decode("ascii")
        except UnicodeDecodeError:
            self._err(-102, "Syntax error")
            return None
        key, ch = _norm_header(header)
        if ch not in self.channels:
            self._err(-114, "Header suffix out of range")
            return None
        c = self.channels[ch]
        arg = rest.strip()
        if key == "DATA:ARB:DAC":
            self._upload(c, arg)
            return None
        a = arg.decode("ascii", errors="replace").strip()
        if key == "*IDN?":
            return f"Agilent Technologies,{self.model},{self.serial},4.00-2.25-2.00-52-00"
        if key == "*OPC?":
            return "1"
        if key in ("*RST", "*CLS"):
            if key == "*RST":
                self.channels = {1: _Channel(), 2: _Channel()}
                self._update_pattern()
            return None
        if key == "SYST:ERR?":
            return self.errors.pop_reply()
        if key == "FORM:BORD":
            v = a.upper()
            if v.startswith("SWAP") or v.startswith("NORM"):
                self.byte_order = v[:4]
            else:
                self._err(-224, "Illegal parameter value")
            return None
        if key == "FORM:BORD?":
            return self.byte_order
        if key == "DATA:VOL:CLE":
            c.arbs.clear()
            if c.function == "ARB":
                c.arb_name = None
            self._update_pattern()
            return None
        if key == "FUNC:ARB":
            name = a.strip('"').strip("'")
            if name not in c.arbs:
                self._err(-224, "Illegal parameter value; arb not in volatile memory")
                return None
            c.arb_name = name
            self._update_pattern()
            return None
        if key == "FUNC:ARB?":
            return f'"{c.arb_name or ""}"'
        if key == "FUNC":
            v = a.upper()
            if v.startswith("ARB"):
                if c.arb_name is None:
                    self._err(-221, "Settings conflict; no arbitrary waveform selected")
                    return None
                c.function = "ARB"
            elif v[:3] in ("SIN", "SQU", "RAMP", "PULS", "NOIS", "DC"):
                c.function = (
                    v[:4] if v.startswith("RAMP") or v.startswith("PULS") or v.startswith("NOIS") else v[:3]
                )
            else:
                self._err(-224, "Illegal parameter value")
                return None
            self._update_pattern()
            return None
        if key == "FUNC?":
            return c.function
        if key == "FUNC:ARB:SRAT":
            v = self._num(a)
            if v is None:
                return None
            # 33600A models sample arbitrary waveforms at up to 1 GSa/s, 33500B at 250 MSa/s
            max_srat = 1e9 if self.model.startswith("336") else 250e6
            if not 1e-6 <= v <= max_srat:
                self._err(-222, "Data out of range")
                return None
            c.srat_hz = v
            self._update_pattern()
            return None
        if key == "FUNC:ARB:SRAT?":
            return f"{c.srat_hz:+.9E}"
        if key == "FUNC:ARB:SYNC":
            self._update_pattern()
            return None
        if key == "VOLT":
            v = self._num(a)
            if v is None:
                return None
            if not 1e-3 <= v <= 2 * c.max_v or abs(c.offset_v) + v / 2 > c.max_v + 1e-9:
                self._err(-221, "Settings conflict; amplitude changed due to offset")
                return None
            c.vpp = v
            self._update_pattern()
            return None
        if key == "VOLT?":
            return f"{c.vpp:+.9E}"
        if key == "VOLT:OFFS":
            v = self._num(a)
            if v is None:
                return None
            if abs(v) + c.vpp / 2 > c.max_v + 1e-9:
                self._err(-221, "Settings conflict; offset changed due to amplitude")
                return None
            c.offset_v = v
            self._update_pattern()
            return None
        if key == "VOLT:OFFS?":
            return f"{c.offset_v:+.9E}"
        if key == "OUTP":
            v = a.upper()
            if v in ("ON", "1"):
                c.output = True
            elif v in ("OFF", "0"):
                c.output = False
            else:
                self._err(-224, "Illegal parameter value")
                return None
            self._update_pattern()
            return None
        if key == "OUTP:LOAD":
            v = a.upper()
            if v.startswith("INF"):
                load = float("inf")
            elif v.startswith("MIN") or v.startswith("MAX"):  # ASSUMED: the 1 ohm..10 kohm ends
                load = 1.0 if v.startswith("MIN") else 1e4
            else:
                load = self._num(a)
                if load is None:
                    return None
                if not 1.0 <= load <= 1e4:
                    self._err(-222, "Data out of range")
                    return None
            # the instrument rescales the displayed levels; the output voltage itself does not change
            scale = c.max_v
            c.load_ohm = load
            scale = c.max_v / scale
            c.vpp, c.offset_v = c.vpp * scale, c.offset_v * scale
            self._update_pattern()
            return None
        if key == "OUTP:LOAD?":
            return "9.9E+37" if c.load_ohm == float("inf") else f"{c.load_ohm:+.9E}"
        if key == "OUTP?":
            return "1" if c.output else "0"
        if key.endswith("?"):
            self._err(-113, "Undefined header")
            return None
        self._err(-113, "Undefined header")
        return None

    def _num(self, a: str) -> float | None:
        try:
            return float(a)
        except ValueError:
            self._err(-104, "Data type error")
            return None

    def _upload(self, c: _Channel, arg: bytes) -> None:
        name_b, sep, data = arg.partition(b",")
        name = name_b.decode("ascii", errors="replace").strip().strip('"')
        if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,11}", name):
            self._err(-104, "Data type error; bad arb name")
            return
        data = data.strip()
        if data.startswith(b"#"):
            nd = data[1] - 0x30
            n = int(data[2 : 2 + nd])
            payload = data[2 + nd : 2 + nd + n]
            if len(payload) != n or n % 2:
                self._err(-161, "Invalid block data")
                return
            dt = "<i2" if self.byte_order == "SWAP" else ">i2"
            codes = np.frombuffer(payload, dtype=dt).astype(np.int16)
        else:
            try:
                codes = np.array([int(x) for x in data.split(b",")], dtype=np.int32)
            except ValueError:
                self._err(-104, "Data type error")
                return
            if codes.size and (codes.min() < -32768 or codes.max() > 32767):
                self._err(-222, "Data out of range")
                return
            codes = codes.astype(np.int16)
        if codes.size and int(codes.min()) < -DAC_MAX:
            self._err(-222, "Data out of range; DAC code below -32767")
            return
        min_points = 32 if self.model.startswith("336") else 8  # 33600 Series: at least 32 points
        if not min_points <= codes.size <= self.max_points:
            self._err(-222, f"Data out of range; {codes.size} points")
            return
        c.arbs[name] = codes
        self.uploads += 1

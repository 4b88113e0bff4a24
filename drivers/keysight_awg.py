"""Keysight 33500B / 33600A (Trueform) arbitrary waveform generator, and Alice's drive-waveform encoding.

What it is for: Alice's pattern generator.  The link engine hands a frame
pattern (per slot: ``basis`` 0=Z/1=X, ``bit`` 0/1, ``intensity`` 0=signal,
1=decoy, 2=vacuum/second decoy) to :meth:`Keysight33500.load_frame_pattern`,
which encodes it (:class:`FrameEncoding`) into two arbitrary waveforms and
uploads them: channel 1 drives the intensity modulator, channel 2 the
polarization modulator.  The emulated AWG (``hil/emulated/awg.py``) uses
:meth:`FrameEncoding.decode` to turn the uploads back into the pattern the
physical model sends, so the encoding is tested end to end.

What it must not do: choose the pattern (the engine and its random source do),
know about sifting or keys, or send anything that failed validation.  Levels
outside the modulator's safe span, waveforms longer than the instrument's
memory and sample rates above its DAC clock raise ``DriverValueError`` before
any byte is written; nothing is clipped.

SCPI used (Keysight Trueform Series Operating and Service Guide, "SCPI
Programming Reference"): ``*IDN?``, ``*OPC?``, ``SYST:ERR?``,
``FORM:BORD SWAP`` (little-endian binary blocks),
``SOURce<n>:DATA:VOLatile:CLEar``,
``SOURce<n>:DATA:ARBitrary:DAC <name>,#<d><len><bytes>`` (int16 DAC codes
-32767..+32767 in an IEEE 488.2 definite-length block),
``SOURce<n>:FUNCtion ARB``, ``SOURce<n>:FUNCtion:ARBitrary <name>``,
``SOURce<n>:FUNCtion:ARBitrary:SRATe <Sa/s>``, ``SOURce<n>:VOLTage <Vpp>``,
``SOURce<n>:VOLTage:OFFSet <V>``, ``FUNCtion:ARBitrary:SYNChronize``,
``OUTPut<n> ON|OFF``, ``OUTPut<n>:LOAD <ohms>|INFinity``.  Waveform length
8 (33500B) or 32 (33600A) points at least (Keysight 33500/33600 web help,
"Waveform Generation Tutorial": "a minimum of 8 points (33500 Series) or 32
points (33600 Series)"), at most 1 048 576 (33500B) or 4 194 304 (33600A)
without the memory option (``max_points`` overrides).

Why DAC-code uploads: sending int16 codes (not floats) fixes the levels
exactly, so the emulator's decode is exact and the upload is half the size of
a float32 block.  Amplitude and offset are chosen per channel so the span of
the configured levels uses the full DAC range.

The encoding (documented here because calibration and the emulator rely on it):

* ``samples_per_slot`` (default 4) samples per slot on both channels; the
  AWG sample rate is ``slot_rate_hz * samples_per_slot``; the frame starts at
  the first sample (the AWG's sync output marks it).
* Channel 1 (intensity modulator, a Mach-Zehnder biased at maximum
  transmission at 0 V, transmission ``cos^2(pi V / (2 V_pi))``): each slot is
  a return-to-zero pulse, ``pulse_samples`` samples at the slot's intensity
  level, the rest at the vacuum (extinction) level.  Default levels with
  ``V_pi = 4 V``: signal 0 V, decoy 2.819 V (transmission 0.2 = mu2/mu1 for
  mu1 = 0.5, mu2 = 0.1), vacuum 4.0 V (extinction).
* Channel 2 (polarization modulator; the drive voltage sets a rotation about
  S3 on the Poincare sphere, so H -> D -> V -> A every quarter turn): the
  level is held for the whole slot (non-return-to-zero).  State index
  ``2*basis + bit`` (0=H, 1=V, 2=D, 3=A, the detector order).  Default levels
  with ``V_pi = 3 V``: H 0 V, V 3.0 V, D 1.5 V, A 4.5 V.
* Vacuum slots still carry their basis/bit level on channel 2, so decoding
  returns every slot's basis, bit and intensity.

Output termination (same guide, "Output Termination"): the outputs have a fixed
50 ohm series impedance; ``VOLT``/``VOLT:OFFS`` are the volts *at the load
the instrument is told about* (``OUTPut<n>:LOAD``, 1 ohm..10 kohm or INF,
default 50, kept from whatever was last set on the front panel).  A 50 ohm
setting into an open circuit gives twice the programmed voltage.  So on open
the driver sends ``OUTP<n>:LOAD`` with its ``load_ohm`` (``math.inf`` = high
impedance) to every channel, and its voltage limit is the one at that load:
``|offset| + Vpp/2 <= 10 V * R / (R + 50 ohm)`` (10 Vpp into 50 ohm, 20 Vpp
open circuit).

Modulator safety: ``load_frame_pattern`` switches both outputs off (output
relays open, the modulators see no drive) before it uploads and re-levels, and
on again only once waveform, amplitude, offset and sample rate are all set, so
the modulators never see a half-configured drive; amplitude is shrunk before
the offset moves so ``|offset| + Vpp/2`` never exceeds the output limit on the
way.  A DC ramp would not help here: the drive is an RF pattern, not a bias.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from .base import Identity, ScpiInstrument
from .errors import DriverValueError, MalformedReply
from .resources import make_transport
from .transport import Transport

__all__ = [
    "FrameEncoding",
    "Keysight33500",
    "definite_length_block",
    "parse_definite_length_block",
    "DAC_MAX",
    "mzm_level_v",
]

DAC_MAX = 32767  # Trueform DAC codes are -32767..+32767


def mzm_level_v(transmission: float, v_pi: float) -> float:
    """Drive voltage giving ``transmission`` (0..1] on a Mach-Zehnder biased at maximum at 0 V.

    Mach-Zehnder transfer function ``T(V) = cos^2(pi V / (2 V_pi))``.
    """
    if not 0.0 <= transmission <= 1.0:
        raise DriverValueError(f"transmission={transmission!r} is outside 0..1")
    return 2.0 * v_pi / math.pi * math.acos(math.sqrt(transmission))


def definite_length_block(payload: bytes) -> bytes:
    """IEEE 488.2 definite-length arbitrary block: ``#<d><len><payload>`` (d = digits of len, 1..9)."""
    n = len(payload)
    digits = str(n)
    if len(digits) > 9:
        raise DriverValueError(f"block of {n} bytes is too long for a definite-length block")
    return b"#" + str(len(digits)).encode() + digits.encode() + bytes(payload)


def parse_definite_length_block(data: bytes) -> tuple[bytes, int] | None:
    """Parse a block at the start of ``data``; return (payload, bytes consumed), or None if incomplete.

    Raises MalformedReply if ``data`` does not start with a well-formed header.
    """
    if not data:
        return None
    if data[:1] != b"#":
        raise MalformedReply("binary block does not start with '#'", reply=bytes(data[:20]))
    if len(data) < 2:
        return None
    d = data[1:2]
    if not d.isdigit() or d == b"0":
        raise MalformedReply("binary block: '#0' indefinite or bad digit count", reply=bytes(data[:20]))
    nd = int(d)
    if len(data) < 2 + nd:
        return None
    ln = data[2 : 2 + nd]
    if not ln.isdigit():
        raise MalformedReply("binary block length is not decimal", reply=bytes(data[:20]))
    n = int(ln)
    end = 2 + nd + n
    if len(data) < end:
        return None
    return bytes(data[2 + nd : end]), end


def _levels_tuple(name: str, values, n: int) -> tuple[float, ...]:
    try:
        t = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise DriverValueError(f"{name} must be {n} numbers (volts), got {values!r}") from None
    if len(t) != n or not all(math.isfinite(v) for v in t):
        raise DriverValueError(f"{name} must be {n} finite numbers (volts), got {values!r}")
    return t


@dataclass(frozen=True)
class FrameEncoding:
    """How a frame pattern becomes the two drive waveforms (see the module docstring)."""

    samples_per_slot: int = 4
    pulse_samples: int = 2
    # signal mu1, decoy mu2, vacuum (or second decoy mu3); MZM with V_pi = 4 V
    intensity_levels_v: tuple[float, float, float] = (0.0, 2.819, 4.0)
    # H, V, D, A (index 2*basis + bit); rotation about S3 with V_pi = 3 V
    polarization_levels_v: tuple[float, float, float, float] = (0.0, 3.0, 1.5, 4.5)
    # largest |voltage| a modulator input accepts; levels outside raise
    max_drive_v: float = 5.0
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if (
            isinstance(self.samples_per_slot, bool)
            or not isinstance(self.samples_per_slot, int)
            or not 1 <= self.samples_per_slot <= 1024
        ):
            raise DriverValueError(f"samples_per_slot={self.samples_per_slot!r} must be an integer 1..1024")
        if (
            isinstance(self.pulse_samples, bool)
            or not isinstance(self.pulse_samples, int)
            or not 1 <= self.pulse_samples <= self.samples_per_slot
        ):
            raise DriverValueError(
                f"pulse_samples={self.pulse_samples!r} must be an integer "
                f"1..samples_per_slot ({self.samples_per_slot})"
            )
        il = _levels_tuple("intensity_levels_v", self.intensity_levels_v, 3)
        pl = _levels_tuple("polarization_levels_v", self.polarization_levels_v, 4)
        object.__setattr__(self, "intensity_levels_v", il)
        object.__setattr__(self, "polarization_levels_v", pl)
        for name, lv in (("intensity_levels_v", il), ("polarization_levels_v", pl)):
            if max(abs(v) for v in lv) > self.max_drive_v:
                raise DriverValueError(f"{name}={lv} exceeds max_drive_v={self.max_drive_v} V")
            # levels must be distinguishable after 16-bit quantization
            s = sorted(lv)
            span = s[-1] - s[0]
            if span < 1e-3 or min(b - a for a, b in zip(s, s[1:], strict=False)) < span * 1e-3:
                raise DriverValueError(
                    f"{name}={lv}: levels must be distinct (>= 0.1% of their span apart) and span >= 1 mV"
                )

    # -- voltage <-> DAC per channel ---------------------------------------------------------
    @staticmethod
    def channel_scale(levels_v) -> tuple[float, float]:
        """(amplitude_vpp, offset_v) that map the levels' span onto DAC codes -32767..+32767."""
        lo, hi = min(levels_v), max(levels_v)
        return hi - lo, (hi + lo) / 2.0

    @staticmethod
    def volts_to_dac(levels_v, amplitude_vpp: float, offset_v: float) -> np.ndarray:
        v = np.asarray(levels_v, dtype=np.float64)
        return np.rint((v - offset_v) / (amplitude_vpp / 2.0) * DAC_MAX).astype(np.int16)

    @staticmethod
    def dac_to_volts(codes: np.ndarray, amplitude_vpp: float, offset_v: float) -> np.ndarray:
        return offset_v + np.asarray(codes, dtype=np.float64) / DAC_MAX * (amplitude_vpp / 2.0)

    def scales(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """((vpp1, offset1), (vpp2, offset2)) for channels 1 and 2."""
        return self.channel_scale(self.intensity_levels_v), self.channel_scale(self.polarization_levels_v)

    def level_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """DAC codes of the 3 intensity levels (channel 1) and the 4 polarization levels (channel 2)."""
        (a1, o1), (a2, o2) = self.scales()
        return self.volts_to_dac(self.intensity_levels_v, a1, o1), self.volts_to_dac(
            self.polarization_levels_v, a2, o2
        )

    def _nearest_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """uint8 tables: (code + 32768) -> index of the nearest intensity / polarization level."""
        if "lut" not in self._cache:
            codes = np.arange(-32768, 32768, dtype=np.int32)
            c1, c2 = self.level_codes()
            self._cache["lut"] = tuple(
                np.argmin(np.abs(codes[:, None] - c.astype(np.int32)[None, :]), axis=1).astype(np.uint8)
                for c in (c1, c2)
            )
        return self._cache["lut"]

    # -- encode / decode -------------------------------------------------------------------
    @staticmethod
    def _check_pattern(basis, bit, intensity) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        arrs = []
        n = None
        for name, a, hi in (("basis", basis, 1), ("bit", bit, 1), ("intensity", intensity, 2)):
            if not isinstance(a, np.ndarray):
                raise DriverValueError(f"{name} must be a numpy uint8 array, got {type(a).__name__}")
            if a.dtype != np.uint8 or a.ndim != 1:
                raise DriverValueError(
                    f"{name} must be a 1-D uint8 array, got {a.dtype} with shape {a.shape}"
                )
            if n is None:
                n = a.shape[0]
            elif a.shape[0] != n:
                raise DriverValueError(f"{name} has {a.shape[0]} slots, basis has {n}")
            bad = np.flatnonzero(a > hi)
            if bad.size:
                raise DriverValueError(f"{name}[{bad[0]}]={a[bad[0]]} is outside 0..{hi}")
            arrs.append(a)
        if n == 0:
            raise DriverValueError("frame pattern is empty")
        return arrs[0], arrs[1], arrs[2]

    def encode(
        self, basis: np.ndarray, bit: np.ndarray, intensity: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the int16 DAC waveforms (channel 1 intensity, channel 2 polarization)."""
        basis, bit, intensity = self._check_pattern(basis, bit, intensity)
        c1, c2 = self.level_codes()
        n, s = basis.shape[0], self.samples_per_slot
        w1 = np.empty((n, s), dtype=np.int16)
        w1[:, : self.pulse_samples] = c1[intensity][:, None]
        w1[:, self.pulse_samples :] = c1[2]  # return to extinction between pulses
        state = (basis << 1) | bit
        w2 = np.repeat(c2[state], s)
        return w1.reshape(-1), w2

    def decode(
        self, wave1: np.ndarray, wave2: np.ndarray, *, tolerance_codes: int = 2
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inverse of :meth:`encode` on DAC codes: return (basis, bit, intensity) uint8 arrays.

        Every sample must be within ``tolerance_codes`` of the encoding of the
        decoded symbols, otherwise ValueError names the first bad slot.
        """
        w1 = np.asarray(wave1)
        w2 = np.asarray(wave2)
        s = self.samples_per_slot
        if w1.ndim != 1 or w2.ndim != 1 or w1.shape != w2.shape:
            raise ValueError(f"waveforms must be 1-D and equally long, got {w1.shape} and {w2.shape}")
        if w1.size == 0 or w1.size % s:
            raise ValueError(f"waveform length {w1.size} is not a positive multiple of samples_per_slot={s}")
        c1, c2 = self.level_codes()
        n = w1.size // s
        lut1, lut2 = self._nearest_tables()
        # nearest level of every possible int16 code, looked up instead of searched per slot
        probe1 = w1.reshape(n, s)[:, self.pulse_samples // 2].astype(np.int16).view(np.uint16) ^ 0x8000
        probe2 = w2.reshape(n, s)[:, s // 2].astype(np.int16).view(np.uint16) ^ 0x8000
        intensity = lut1[probe1]
        state = lut2[probe2]
        basis = (state >> 1).astype(np.uint8)
        bit = (state & 1).astype(np.uint8)
        e1, e2 = self.encode(basis, bit, intensity)
        for ch, w, e in ((1, w1, e1), (2, w2, e2)):
            bad = np.flatnonzero(np.abs(w.astype(np.int32) - e.astype(np.int32)) > tolerance_codes)
            if bad.size:
                raise ValueError(
                    f"channel {ch} sample {bad[0]} (slot {bad[0] // s}) = {w[bad[0]]} does not "
                    f"match the encoding (expected {e[bad[0]]})"
                )
        return basis, bit, intensity

    def decode_volts(
        self, volts1: np.ndarray, volts2: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode waveforms given in volts (as the modulators see them)."""
        (a1, o1), (a2, o2) = self.scales()
        return self.decode(
            self.volts_to_dac(volts1, a1, o1),
            self.volts_to_dac(volts2, a2, o2),
            tolerance_codes=max(2, int(DAC_MAX * 2e-3)),
        )


_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,11}$")


class Keysight33500(ScpiInstrument):
    """Keysight/Agilent 33500B and 33600A Trueform AWGs (1 or 2 channels) over SCPI.

    ``resource``: ``TCPIP0::<ip>::5025::SOCKET``, ``<ip>:5025`` or any VISA string.
    """

    KIND = "Keysight33500"
    MODELS = (r"335\d\dB", r"336\d\dA")
    UPLOAD_TIMEOUT_S: ClassVar[float] = 60.0

    def __init__(
        self,
        resource: str | Transport,
        *,
        timeout_s: float = 5.0,
        name: str | None = None,
        encoding: FrameEncoding | None = None,
        max_points: int | None = None,
        load_ohm: float = 50.0,
    ):
        super().__init__(resource, timeout_s=timeout_s, name=name)
        if encoding is not None and not isinstance(encoding, FrameEncoding):
            raise DriverValueError(
                f"encoding must be a FrameEncoding, got {type(encoding).__name__}", instrument=self.name
            )
        self.encoding = encoding or FrameEncoding()
        self._max_points_override = (
            None if max_points is None else self._check_int("max_points", max_points, 8, 64 * 1024 * 1024)
        )
        self.load_ohm = (
            math.inf if load_ohm == math.inf else self._check_range("load_ohm", load_ohm, 1.0, 1e4, "ohm")
        )
        self.n_channels = 2
        self.max_points = 1_048_576
        self.min_points = 8
        self.max_sample_rate_hz = 250e6

    # -- lifecycle ---------------------------------------------------------------------
    def _make_transport(self) -> Transport:
        if isinstance(self.resource, Transport):
            return self.resource
        return make_transport(self.resource, timeout_s=self.timeout_s, allow=("visa", "tcp"))

    def _after_open(self) -> None:
        ident: Identity = self.identity  # type: ignore[assignment]
        model = ident.model.upper()
        # odd model numbers (33509B, 33511B, 33521B, 33611A, 33621A) are single-channel
        self.n_channels = 1 if int(model[4]) % 2 else 2
        if model.startswith("336"):
            self.min_points = 32  # 33600 Series arbitrary waveforms have at least 32 points
            self.max_points = 4_194_304
            self.max_sample_rate_hz = 1e9  # 33600A: 1 GSa/s arbitrary waveforms
        else:
            # 33500B: 250 MSa/s on the 30 MHz models (3352x), 160 MSa/s on the 20 MHz ones
            self.max_points = 1_048_576
            self.max_sample_rate_hz = 250e6 if model[3] == "2" else 160e6
        if self._max_points_override is not None:
            self.max_points = self._max_points_override
        self.error_queue()  # start from an empty queue so later errors belong to our commands
        # tell the instrument the real termination: its levels are volts at that load
        load = "INF" if self.load_ohm == math.inf else f"{self.load_ohm:g}"
        for ch in range(1, self.n_channels + 1):
            self._write_checked(f"OUTP{ch}:LOAD {load}")

    # -- validation ---------------------------------------------------------------------
    def _channel(self, channel) -> int:
        return self._check_int("channel", channel, 1, self.n_channels)

    def _max_v(self) -> float:
        # +/-10 V open circuit behind the fixed 50 ohm source: 10 Vpp into 50 ohm, 20 Vpp into
        # high impedance, 10 V * R / (R + 50) at a load R; |offset| + Vpp/2 <= limit
        if self.load_ohm == math.inf:
            return 10.0
        return 10.0 * self.load_ohm / (self.load_ohm + 50.0)

    # -- settings -------------------------------------------------------------------------
    def set_sample_rate_hz(self, sample_rate_hz: float, channel: int | None = None) -> None:
        """Set the arbitrary-waveform sample rate (Sa/s) of ``channel`` (default: every channel)."""
        rate = self._check_range("sample_rate_hz", sample_rate_hz, 1e-6, self.max_sample_rate_hz, "Sa/s")
        chans = range(1, self.n_channels + 1) if channel is None else [self._channel(channel)]
        for ch in chans:
            self._write_checked(f"SOUR{ch}:FUNC:ARB:SRAT {rate:.10g}")

    def set_amplitude_vpp(self, channel: int, amplitude_vpp: float) -> None:
        """Set the peak-to-peak amplitude (V) of ``channel`` (the span of DAC codes -32767..32767)."""
        ch = self._channel(channel)
        v = self._check_range("amplitude_vpp", amplitude_vpp, 1e-3, 2 * self._max_v(), "Vpp")
        self._write_checked(f"SOUR{ch}:VOLT {v:.6g}")

    def set_offset_v(self, channel: int, offset_v: float) -> None:
        """Set the DC offset (V) of ``channel``."""
        ch = self._channel(channel)
        v = self._check_range("offset_v", offset_v, -self._max_v(), self._max_v(), "V")
        self._write_checked(f"SOUR{ch}:VOLT:OFFS {v:.6g}")

    def set_levels(self, channel: int, amplitude_vpp: float, offset_v: float) -> None:
        """Set amplitude and offset together, checking ``|offset| + Vpp/2`` against the output limit first."""
        self._check_range("amplitude_vpp", amplitude_vpp, 1e-3, 2 * self._max_v(), "Vpp")
        self._check_range("offset_v", offset_v, -self._max_v(), self._max_v(), "V")
        if abs(offset_v) + amplitude_vpp / 2 > self._max_v() + 1e-9:
            raise DriverValueError(
                f"offset {offset_v} V with {amplitude_vpp} Vpp exceeds +/-{self._max_v()} V "
                f"into {self.load_ohm:g} ohm",
                instrument=self.name,
            )
        # shrink first, then move, so the output never passes outside the limit on the way
        self.set_amplitude_vpp(channel, 1e-3)
        self.set_offset_v(channel, offset_v)
        self.set_amplitude_vpp(channel, amplitude_vpp)

    def set_output(self, channel: int, enabled: bool) -> None:
        """Switch ``channel``'s output on or off."""
        ch = self._channel(channel)
        if not isinstance(enabled, bool):
            raise DriverValueError(f"enabled must be a bool, got {enabled!r}", instrument=self.name)
        self._write_checked(f"OUTP{ch} {'ON' if enabled else 'OFF'}")

    def output_enabled(self, channel: int) -> bool:
        """Read whether ``channel``'s output is on."""
        ch = self._channel(channel)
        r = self._query(f"OUTP{ch}?").strip()
        if r not in ("0", "1"):
            raise MalformedReply("expected 0 or 1", reply=r, instrument=self.name, command=f"OUTP{ch}?")
        return r == "1"

    def sample_rate_hz(self, channel: int = 1) -> float:
        """Read the arbitrary-waveform sample rate of ``channel``."""
        ch = self._channel(channel)
        cmd = f"SOUR{ch}:FUNC:ARB:SRAT?"
        r = self._query(cmd)
        try:
            return float(r)
        except ValueError:
            raise MalformedReply(
                "sample rate is not a number", reply=r, instrument=self.name, command=cmd
            ) from None

    # -- waveform upload ---------------------------------------------------------------------
    def upload_dac(self, channel: int, codes: np.ndarray, *, name: str) -> None:
        """Upload int16 DAC codes (-32767..32767) to ``channel`` as arb waveform ``name``; select it."""
        ch = self._channel(channel)
        if not isinstance(name, str) or not _NAME.match(name):
            raise DriverValueError(
                f"waveform name {name!r} must be a letter then up to 11 letters, digits or '_'",
                instrument=self.name,
            )
        a = np.asarray(codes)
        if a.dtype != np.int16 or a.ndim != 1:
            raise DriverValueError(
                f"codes must be a 1-D int16 array, got {a.dtype} {a.shape}", instrument=self.name
            )
        if not self.min_points <= a.size <= self.max_points:
            raise DriverValueError(
                f"waveform has {a.size} points; this instrument takes {self.min_points}..{self.max_points}",
                instrument=self.name,
            )
        if a.size and int(a.min()) < -DAC_MAX:
            raise DriverValueError(f"DAC code {int(a.min())} is below -{DAC_MAX}", instrument=self.name)
        payload = a.astype("<i2", copy=False).tobytes()
        self._write_checked(f"SOUR{ch}:DATA:VOL:CLE")
        self._write_checked("FORM:BORD SWAP")
        header = f"SOUR{ch}:DATA:ARB:DAC {name},".encode("ascii")
        label = f"SOUR{ch}:DATA:ARB:DAC {name},#<{len(payload)} bytes>"
        self._call(label, self.transport.write, header + definite_length_block(payload) + b"\n")
        # the instrument parses the block before it answers *OPC?, so a long upload needs a long wait
        timeout = max(self.timeout_s, self.UPLOAD_TIMEOUT_S * len(payload) / 8e6 + 2.0)
        r = self._query("*OPC?", timeout_s=timeout)
        if r.strip() != "1":
            raise MalformedReply("*OPC? did not answer 1", reply=r, instrument=self.name, command="*OPC?")
        self.check_errors(label)
        self._write_checked(f"SOUR{ch}:FUNC:ARB {name}")
        self._write_checked(f"SOUR{ch}:FUNC ARB")

    def upload_waveform(self, channel: int, samples: np.ndarray, *, name: str) -> None:
        """Upload normalized samples (float, -1..1) to ``channel`` as arbitrary waveform ``name``."""
        a = np.asarray(samples)
        if a.ndim != 1 or a.dtype.kind != "f":
            raise DriverValueError(
                f"samples must be a 1-D float array, got {a.dtype} {a.shape}", instrument=self.name
            )
        if not np.all(np.isfinite(a)) or (a.size and (a.min() < -1.0 or a.max() > 1.0)):
            bad = int(np.flatnonzero(~np.isfinite(a) | (a < -1.0) | (a > 1.0))[0])
            raise DriverValueError(f"samples[{bad}]={a[bad]!r} is outside -1..1", instrument=self.name)
        self.upload_dac(channel, np.rint(a * DAC_MAX).astype(np.int16), name=name)

    def load_frame_pattern(
        self,
        basis: np.ndarray,
        bit: np.ndarray,
        intensity: np.ndarray,
        *,
        slot_rate_hz: float,
        enable_outputs: bool = True,
    ) -> None:
        """Encode Alice's frame into the two drive waveforms, upload them and start them in step.

        Outputs are switched off during the upload (the modulators see no
        half-written pattern) and on again at the end if ``enable_outputs``.
        """
        if self.n_channels < 2:
            raise DriverValueError(
                "the frame pattern needs a 2-channel AWG (intensity and polarization)", instrument=self.name
            )
        enc = self.encoding
        rate = (
            self._check_range(
                "slot_rate_hz", slot_rate_hz, 1e-6, self.max_sample_rate_hz / enc.samples_per_slot, "Hz"
            )
            * enc.samples_per_slot
        )
        w1, w2 = enc.encode(basis, bit, intensity)
        if w1.size > self.max_points:
            raise DriverValueError(
                f"{basis.size} slots x {enc.samples_per_slot} samples = {w1.size} points exceed "
                f"the AWG memory ({self.max_points} points)",
                instrument=self.name,
            )
        if w1.size < self.min_points:
            raise DriverValueError(
                f"{basis.size} slots give {w1.size} points; the AWG needs at least {self.min_points}",
                instrument=self.name,
            )
        (a1, o1), (a2, o2) = enc.scales()
        for a, o in ((a1, o1), (a2, o2)):
            if abs(o) + a / 2 > self._max_v() + 1e-9:
                raise DriverValueError(
                    f"levels span {o - a / 2:g}..{o + a / 2:g} V, beyond the AWG's +/-{self._max_v()} V",
                    instrument=self.name,
                )
        for ch in (1, 2):
            self.set_output(ch, False)
        self.upload_dac(1, w1, name="QKD_IM")
        self.upload_dac(2, w2, name="QKD_PM")
        self.set_levels(1, a1, o1)
        self.set_levels(2, a2, o2)
        self.set_sample_rate_hz(rate)
        self._write_checked("FUNC:ARB:SYNC")
        if enable_outputs:
            for ch in (1, 2):
                self.set_output(ch, True)

    def status(self) -> dict:
        """A small status dict for ``qkd devices check``."""
        out = {"channels": self.n_channels, "max_points": self.max_points}
        for ch in range(1, self.n_channels + 1):
            out[f"out{ch}"] = "on" if self.output_enabled(ch) else "off"
        out["srat_hz"] = self.sample_rate_hz(1)
        return out

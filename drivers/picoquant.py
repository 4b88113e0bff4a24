"""PicoQuant T2 time tags: the ``.ptu`` file reader, the record decoder and a live TCP stream driver.

What it is for: turn PicoQuant HydraHarp / MultiHarp / TimeHarp 260 /
PicoHarp T2-mode records (32-bit little-endian words) into the engine's
``TagBatch`` (int64 picoseconds, uint8 channel), from a ``.ptu`` file or from a
live stream of the same records over TCP.

What it must not do: loop in Python per record (decoding is whole-array numpy),
trust a header's lengths (every length is checked against what is there, so a
truncated or random file gives :class:`PtuFormatError`, never a hang or a
huge allocation), or know anything about QKD.

Format, exactly as PicoQuant publishes it (``Read_PTU.py`` of PicoQuant's
"PTU file demos", K. Goertz / M. Wahl, PicoQuant GmbH 2018-2023, and the
``PQTTTR`` tagged-header description therein):

* file = 8-byte magic ``PQTTTR\\0\\0``, 8-byte version string, then tags until
  the tag named ``Header_End``, then the records;
* tag = 32-byte ASCII identifier (NUL padded), int32 index (-1 = none;
  otherwise the name is shown as ``Ident(idx)``), uint32 type, 8-byte value.
  Types: tyEmpty8 0xFFFF0008, tyBool8 0x00000008, tyInt8 0x10000008,
  tyBitSet64 0x11000008, tyColor8 0x12000008, tyFloat8 0x20000008,
  tyTDateTime 0x21000008 (days since 1899-12-30), and the variable-length
  tyFloat8Array 0x2001FFFF, tyAnsiString 0x4001FFFF, tyWideString 0x4002FFFF,
  tyBinaryBlob 0xFFFFFFFF whose 8-byte value is the byte length of the data
  that follows;
* ``TTResultFormat_TTTRRecType`` names the record format, ``TTResult_NumberOfRecords``
  the count, ``MeasDesc_GlobalResolution`` the T2 time unit in seconds;
* HydraHarp V2 / TimeHarp 260 / "generic" (MultiHarp, PicoHarp 330) T2 record:
  bit 31 special, bits 30..25 channel, bits 24..0 time tag.  Special with
  channel 63 = overflow: add ``T2WRAPAROUND_V2 = 2**25`` times the time-tag
  field (0 means one, old style); special with channel 0 = sync; special with
  channels 1..15 = markers; not special = photon on input ``channel`` (the demo
  prints it as ``channel + 1``).  HydraHarp V1 (0x00010204): every overflow
  record counts once and the wrap is ``T2WRAPAROUND_V1 = 33552000``;
* PicoHarp 300 T2 record: bits 31..28 channel, bits 27..0 time; channel 15 with
  low 4 bits 0 = overflow (+210698240), otherwise a marker.

Channel mapping onto the project convention (0 = sync, 1..4 = detectors H, V,
D, A): HydraHarp-family sync -> 0 and input ``c`` -> ``c + 1`` (exactly the
demo's numbering); PicoHarp 300 input ``c`` -> ``c`` (its channel 0 is the sync
input used as a plain channel in T2 mode).  Markers are counted, not returned.

Why this decoder: the record fields are recovered with a handful of vectorized
passes — one ``>> 25`` gives the special bit and channel together (photons are
0..63, sync 64, markers 65..79, overflow 127), overflow records are found with
``flatnonzero`` and the running overflow offset is spread with ``np.repeat``
over the kept records of the segments between them (``reduceat`` + ``repeat``), instead of a
full ``cumsum``.  Measured in
``bench/test_bench_tagger.py``.

Live stream (our framing; PicoQuant's own devices are USB + library): a TCP
server sends, on connect, a complete PTU header (``TTResult_NumberOfRecords`` =
-1, unknown) and then raw T2 records; the client may send ASCII lines ``START``
and ``STOP``.  A capture of the stream is therefore a valid ``.ptu`` file.  If
the acquisition clock is already past the first wrap when a client connects,
the server first sends overflow records so absolute times agree.
"""

from __future__ import annotations

import io
import logging
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .base import Identity, Instrument
from .errors import DriverError, MalformedReply
from .interfaces import TagBatch
from .transport import StreamTransport, TcpTransport

__all__ = [
    "PtuFormatError",
    "PtuHeader",
    "T2Decoder",
    "parse_ptu_header",
    "encode_ptu_header",
    "read_ptu",
    "iter_ptu",
    "PicoQuantStreamTagger",
    "RT_HYDRAHARP_T2",
    "RT_HYDRAHARP2_T2",
    "RT_TIMEHARP260N_T2",
    "RT_TIMEHARP260P_T2",
    "RT_GENERIC_T2",
    "RT_PICOHARP300_T2",
]

log = logging.getLogger(__name__)

MAGIC = b"PQTTTR\0\0"

TY_EMPTY8 = 0xFFFF0008
TY_BOOL8 = 0x00000008
TY_INT8 = 0x10000008
TY_BITSET64 = 0x11000008
TY_COLOR8 = 0x12000008
TY_FLOAT8 = 0x20000008
TY_TDATETIME = 0x21000008
TY_FLOAT8ARRAY = 0x2001FFFF
TY_ANSISTRING = 0x4001FFFF
TY_WIDESTRING = 0x4002FFFF
TY_BINARYBLOB = 0xFFFFFFFF

RT_PICOHARP300_T2 = 0x00010203
RT_HYDRAHARP_T2 = 0x00010204  # V1
RT_HYDRAHARP2_T2 = 0x01010204  # V2
RT_TIMEHARP260N_T2 = 0x00010205
RT_TIMEHARP260P_T2 = 0x00010206
RT_GENERIC_T2 = 0x00010207  # MultiHarp 150/160 and PicoHarp 330
_T3_TYPES = {0x00010303, 0x00010304, 0x01010304, 0x00010305, 0x00010306, 0x00010307}
T2_RECORD_TYPES = {
    RT_PICOHARP300_T2: "PicoHarp 300 T2",
    RT_HYDRAHARP_T2: "HydraHarp V1 T2",
    RT_HYDRAHARP2_T2: "HydraHarp V2 T2",
    RT_TIMEHARP260N_T2: "TimeHarp 260N T2",
    RT_TIMEHARP260P_T2: "TimeHarp 260P T2",
    RT_GENERIC_T2: "Generic T2 (MultiHarp / PicoHarp 330)",
}

T2WRAPAROUND_V1 = 33552000
T2WRAPAROUND_V2 = 33554432  # 2**25
T2WRAPAROUND_PH = 210698240

_TAG = struct.Struct("<32siI")
_MAX_VAR_BYTES = 1 << 26  # a header string/array/blob larger than 64 MiB is not a PTU header


class PtuFormatError(DriverError, ValueError):
    """The bytes are not a (complete) PTU header / T2 record stream as PicoQuant defines it."""


@dataclass
class PtuHeader:
    """The tagged header: ``tags`` by PicoQuant's display name (``Ident`` or ``Ident(idx)``)."""

    version: str
    tags: dict[str, Any]
    header_bytes: int

    @property
    def record_type(self) -> int:
        return int(self._get("TTResultFormat_TTTRRecType"))

    @property
    def n_records(self) -> int:
        return int(self._get("TTResult_NumberOfRecords"))

    @property
    def global_resolution_s(self) -> float:
        return float(self._get("MeasDesc_GlobalResolution"))

    def _get(self, key: str):
        if key not in self.tags:
            raise PtuFormatError(f"header has no {key} tag")
        return self.tags[key]

    def identity(self) -> Identity:
        model = str(self.tags.get("HW_Type", "")) or T2_RECORD_TYPES.get(self.tags.get(
            "TTResultFormat_TTTRRecType", -1), "unknown")
        return Identity("PicoQuant", model, str(self.tags.get("HW_SerialNo", "")),
                        str(self.tags.get("HW_Version", "")),
                        f"PicoQuant,{model},{self.tags.get('HW_SerialNo', '')},{self.version}")


def _reader_from_bytes(data: bytes | bytearray | memoryview) -> Callable[[int], bytes]:
    return io.BytesIO(bytes(data)).read


def parse_ptu_header(source: bytes | bytearray | memoryview | Callable[[int], bytes]) -> PtuHeader:
    """Parse a PTU tagged header from bytes or from a ``read(n) -> bytes`` callable.

    A short read (truncation), a wrong magic, an unknown tag type or an
    impossible length raises :class:`PtuFormatError`.  Reading stops right after
    ``Header_End``, so a stream reader is positioned on the first record.
    """
    read = source if callable(source) else _reader_from_bytes(source)
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        b = read(n)
        if len(b) != n:
            raise PtuFormatError(f"truncated at byte {pos + len(b)} while reading {what} "
                                 f"({n} bytes wanted, {len(b)} there)")
        pos += n
        return b

    magic = take(8, "magic")
    if magic != MAGIC:
        raise PtuFormatError(f"not a PTU file: magic {magic!r}, expected {MAGIC!r}")
    version = take(8, "version").split(b"\0", 1)[0].decode("ascii", errors="replace")
    tags: dict[str, Any] = {}
    while True:
        ident_raw, idx, typ = _TAG.unpack(take(_TAG.size, "tag"))
        ident = ident_raw.split(b"\0", 1)[0].decode("ascii", errors="replace")
        value8 = take(8, f"value of tag {ident!r}")
        name = f"{ident}({idx})" if idx > -1 else ident
        if typ == TY_EMPTY8:
            value: Any = None
        elif typ == TY_BOOL8:
            value = struct.unpack("<q", value8)[0] != 0
        elif typ in (TY_INT8, TY_BITSET64, TY_COLOR8):
            value = struct.unpack("<q", value8)[0]
        elif typ == TY_FLOAT8:
            value = struct.unpack("<d", value8)[0]
        elif typ == TY_TDATETIME:
            # Delphi TDateTime: days since 1899-12-30; 25569 days to the Unix epoch (demo).
            value = (struct.unpack("<d", value8)[0] - 25569.0) * 86400.0
        elif typ in (TY_FLOAT8ARRAY, TY_ANSISTRING, TY_WIDESTRING, TY_BINARYBLOB):
            n = struct.unpack("<q", value8)[0]
            if n < 0 or n > _MAX_VAR_BYTES:
                raise PtuFormatError(f"tag {name!r}: impossible data length {n}")
            data = take(n, f"data of tag {name!r}")
            if typ == TY_FLOAT8ARRAY:
                if n % 8:
                    raise PtuFormatError(f"tag {name!r}: float array of {n} bytes is not a multiple of 8")
                value = np.frombuffer(data, "<f8").copy()
            elif typ == TY_ANSISTRING:
                try:
                    value = data.decode("utf-8").strip("\0")
                except UnicodeDecodeError:
                    value = data.decode("latin-1").strip("\0")
            elif typ == TY_WIDESTRING:
                value = data.decode("utf-16-le", errors="replace").strip("\0")
            else:
                value = data
        else:
            raise PtuFormatError(f"tag {name!r} at byte {pos - 16}: unknown tag type 0x{typ:08X}")
        tags[name] = value
        if ident == "Header_End":
            return PtuHeader(version, tags, pos)


def encode_ptu_header(tags: list[tuple[str, int, int, Any]], version: str = "1.0.00") -> bytes:
    """Write a PTU header from ``(ident, idx, type, value)`` tuples; ``Header_End`` is appended.

    Used by the emulated stream; tests check the reader against their own encoder.
    """
    out = bytearray(MAGIC + version.encode("ascii")[:8].ljust(8, b"\0"))
    for ident, idx, typ, value in list(tags) + [("Header_End", -1, TY_EMPTY8, None)]:
        out += _TAG.pack(ident.encode("ascii")[:32].ljust(32, b"\0"), idx, typ)
        if typ == TY_EMPTY8:
            out += bytes(8)
        elif typ in (TY_BOOL8, TY_INT8, TY_BITSET64, TY_COLOR8):
            out += struct.pack("<q", int(value))
        elif typ == TY_FLOAT8:
            out += struct.pack("<d", float(value))
        elif typ == TY_TDATETIME:
            out += struct.pack("<d", float(value) / 86400.0 + 25569.0)
        elif typ == TY_ANSISTRING:
            data = str(value).encode("utf-8") + b"\0"
            data += bytes(-len(data) % 8)
            out += struct.pack("<q", len(data)) + data
        elif typ == TY_WIDESTRING:
            data = str(value).encode("utf-16-le") + b"\0\0"
            data += bytes(-len(data) % 8)
            out += struct.pack("<q", len(data)) + data
        elif typ == TY_FLOAT8ARRAY:
            data = np.asarray(value, "<f8").tobytes()
            out += struct.pack("<q", len(data)) + data
        elif typ == TY_BINARYBLOB:
            out += struct.pack("<q", len(value)) + bytes(value)
        else:
            raise ValueError(f"unknown tag type 0x{typ:08X}")
    return bytes(out)


# Output channel for the top 7 bits of a HydraHarp-family record (special<<6 | channel):
# photons 0..63 -> input+1, sync (64) -> 0; other codes are never kept.
_HH_CHANNEL_LUT = np.zeros(128, np.uint8)
_HH_CHANNEL_LUT[:64] = np.arange(1, 65, dtype=np.uint8)
_HH_CHANNEL_LUT[64] = 0


class T2Decoder:
    """Stateful T2 decoder: feed consecutive chunks of records, get ``TagBatch`` es.

    The overflow offset carries over between chunks, so a stream or a file can
    be decoded piecewise with results identical to one call on everything.
    ``check_order`` raises :class:`~drivers.errors.MalformedReply` when decoded
    times go backwards (T2 photon/sync records are time ordered; a corrupted or
    misaligned stream breaks that almost surely).
    """

    CHUNK_RECORDS = 1 << 17

    def __init__(self, record_type: int, resolution_ps: float = 1.0, *, check_order: bool = True):
        if record_type in _T3_TYPES:
            raise PtuFormatError(f"record type 0x{record_type:08X} is T3 (histogramming) mode; "
                                 "only T2 time tags are supported")
        if record_type not in T2_RECORD_TYPES:
            raise PtuFormatError(f"unknown record type 0x{record_type:08X}")
        if not (resolution_ps > 0):
            raise PtuFormatError(f"resolution must be > 0 ps, got {resolution_ps!r}")
        self.record_type = record_type
        r = float(resolution_ps)
        self._res_int = int(round(r)) if abs(r - round(r)) < 1e-9 else None
        self.resolution_ps = r
        self.check_order = check_order
        self.reset()

    def reset(self) -> None:
        """Forget the overflow offset (a new stream or file starts)."""
        self.offset_ticks = 0  # overflow correction so far, in time units
        self.last_t_ps = np.iinfo(np.int64).min
        self.records = 0
        self.overflows = 0
        self.markers = 0
        self.invalid = 0

    def decode(self, words: np.ndarray) -> TagBatch:
        """Decode uint32 records (native or little-endian array) into a TagBatch."""
        w = np.asarray(words)
        if w.dtype != np.uint32:
            if w.dtype == np.dtype("<u4") or w.dtype == np.dtype(">u4"):
                w = w.astype(np.uint32)
            else:
                raise TypeError(f"T2 records must be uint32, got {w.dtype}")
        if w.ndim != 1:
            raise ValueError(f"T2 records must be a 1-D array, got shape {w.shape}")
        if w.size <= self.CHUNK_RECORDS:
            t_ps, chan = self._decode_chunk(w)
        else:
            # Cache-sized pieces: the intermediates of each stay in cache, which on a busy
            # machine is worth ~1.4x at 8 M records (bench/test_bench_tagger.py).
            t_ps = np.empty(w.size, np.int64)
            chan = np.empty(w.size, np.uint8)
            m = 0
            for i in range(0, w.size, self.CHUNK_RECORDS):
                t_c, c_c = self._decode_chunk(w[i:i + self.CHUNK_RECORDS])
                t_ps[m:m + t_c.size] = t_c
                chan[m:m + t_c.size] = c_c
                m += t_c.size
            t_ps, chan = t_ps[:m], chan[:m]
        return TagBatch(t_ps, chan, stats={"overflows": self.overflows, "markers": self.markers,
                                           "invalid": self.invalid, "records": self.records})

    def _decode_chunk(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.records += w.size
        if self.record_type == RT_PICOHARP300_T2:
            ticks, chan = self._decode_ph(w)
        else:
            ticks, chan = self._decode_hh(w)
        if self._res_int == 1:
            t_ps = ticks
        elif self._res_int is not None:
            t_ps = ticks * self._res_int
        else:
            t_ps = np.rint(ticks * self.resolution_ps).astype(np.int64)
        if self.check_order and t_ps.size:
            if t_ps[0] < self.last_t_ps or (t_ps.size > 1 and bool((t_ps[1:] < t_ps[:-1]).any())):
                raise MalformedReply("T2 time tags go backwards: corrupted or misaligned record stream")
            self.last_t_ps = int(t_ps[-1])
        return t_ps, chan

    def _kept_offsets(self, keep: np.ndarray, ofl_idx: np.ndarray, counts: np.ndarray,
                      wrap: int) -> np.ndarray:
        """Overflow offset of every *kept* record: the previous offset plus ``wrap * counts``
        of the overflow records before it.

        Segment 0 is the records before the first overflow, segment k >= 1 starts at overflow
        k-1 (so it is never empty, which ``np.add.reduceat`` needs); ``reduceat`` counts the kept
        records per segment in one byte-wide pass and ``np.repeat`` writes each segment's offset
        once per kept record — no per-record cumulative sum and no offset for dropped records.
        """
        values = np.empty(ofl_idx.size + 1, np.int64)
        values[0] = self.offset_ticks
        np.cumsum(counts, dtype=np.int64, out=values[1:])
        values[1:] *= wrap
        values[1:] += self.offset_ticks
        self.offset_ticks = int(values[-1])
        per_segment = np.empty(ofl_idx.size + 1, np.int64)
        per_segment[0] = np.count_nonzero(keep[: ofl_idx[0]])
        per_segment[1:] = np.add.reduceat(keep.view(np.uint8), ofl_idx, dtype=np.int64)
        return np.repeat(values, per_segment)

    def _decode_hh(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = w.size
        hi = (w >> 25).astype(np.uint8)  # special<<6 | channel
        tt = w & np.uint32(0x1FFFFFF)
        keep = hi <= 64
        ofl_idx = np.flatnonzero(hi == 127)
        if ofl_idx.size:
            if self.record_type == RT_HYDRAHARP_T2:
                counts = np.ones(ofl_idx.size, np.int64)
                wrap = T2WRAPAROUND_V1
            else:
                counts = tt[ofl_idx].astype(np.int64)
                counts[counts == 0] = 1  # old-style single overflow
                wrap = T2WRAPAROUND_V2
            self.overflows += int(counts.sum())
            ticks = self._kept_offsets(keep, ofl_idx, counts, wrap)
            ticks += tt[keep]
        else:
            ticks = tt[keep].astype(np.int64)
            if self.offset_ticks:
                ticks += self.offset_ticks
        hk = hi[keep]
        chan = _HH_CHANNEL_LUT[hk]
        n_special = n - hk.size - ofl_idx.size
        if n_special:
            mk = int(np.count_nonzero((hi >= 65) & (hi <= 79)))
            self.markers += mk
            self.invalid += n_special - mk
        return ticks, chan

    def _decode_ph(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # PicoHarp 300: every overflow record counts once (Read_PTU.py readPT2)
        ch = (w >> 28).astype(np.uint8)
        tt = w & np.uint32(0x0FFFFFFF)
        special = ch == 15
        keep = ~special
        ofl_idx = np.flatnonzero(special & ((w & np.uint32(0xF)) == 0))
        if ofl_idx.size:
            counts = np.ones(ofl_idx.size, np.int64)
            self.overflows += int(ofl_idx.size)
            ticks = self._kept_offsets(keep, ofl_idx, counts, T2WRAPAROUND_PH)
            ticks += tt[keep]
        else:
            ticks = tt[keep].astype(np.int64)
            if self.offset_ticks:
                ticks += self.offset_ticks
        self.markers += int(np.count_nonzero(special)) - int(ofl_idx.size)
        return ticks, ch[keep]


def _decoder_for(header: PtuHeader, check_order: bool) -> T2Decoder:
    return T2Decoder(header.record_type, header.global_resolution_s * 1e12, check_order=check_order)


def read_ptu(path: str | Path, *, strict: bool = True, check_order: bool = True
             ) -> tuple[PtuHeader, TagBatch]:
    """Read a whole T2 ``.ptu`` file: ``(header, tags)``.

    ``strict``: the record area must hold exactly ``TTResult_NumberOfRecords``
    whole records (a truncated file raises); with ``strict=False`` a trailing
    partial record is ignored and fewer records are accepted.
    """
    p = Path(path)
    with p.open("rb") as f:
        header = parse_ptu_header(f.read)
        data = f.read()
    return header, _decode_record_bytes(header, data, strict=strict, check_order=check_order, name=str(p))


def _decode_record_bytes(header: PtuHeader, data: bytes, *, strict: bool, check_order: bool,
                         name: str) -> TagBatch:
    decoder = _decoder_for(header, check_order)
    n_whole = len(data) // 4
    expected = header.n_records
    if strict:
        if len(data) % 4:
            raise PtuFormatError(f"{name}: record area of {len(data)} bytes is not whole 32-bit records")
        if expected >= 0 and n_whole != expected:
            raise PtuFormatError(f"{name}: header says {expected} records, file holds {n_whole}")
    if expected >= 0:
        n_whole = min(n_whole, expected)
    words = np.frombuffer(data, "<u4", count=n_whole)
    return decoder.decode(words)


def iter_ptu(path: str | Path, *, records_per_batch: int = 1 << 20, check_order: bool = True
             ) -> Iterator[TagBatch]:
    """Yield ``TagBatch`` es of a large ``.ptu`` file without loading it whole."""
    if records_per_batch < 1:
        raise ValueError(f"records_per_batch must be >= 1, got {records_per_batch}")
    with Path(path).open("rb") as f:
        header = parse_ptu_header(f.read)
        decoder = _decoder_for(header, check_order)
        left = header.n_records if header.n_records >= 0 else None
        while left is None or left > 0:
            want = records_per_batch if left is None else min(records_per_batch, left)
            data = f.read(4 * want)
            if len(data) < 4:
                break
            words = np.frombuffer(data, "<u4", count=len(data) // 4)
            if left is not None:
                left -= words.size
            yield decoder.decode(words)


class PicoQuantStreamTagger(Instrument):
    """Live T2 record stream over TCP (see the module docstring for the framing).

    ``resource`` is ``host:port`` (or a ready ``StreamTransport``).  ``open()``
    reads the PTU header the server sends and identifies the device from its
    ``HW_Type`` tag; the record type must be a T2 type.  Channel delays are
    applied in software (``set_delay_ps``), after which a batch is re-sorted.
    """

    KIND = "PicoQuant"
    MODELS: ClassVar[tuple[str, ...]] = (r"HydraHarp.*", r"MultiHarp.*", r"TimeHarp.*", r"PicoHarp.*")
    N_CHANNELS = 65  # sync + up to 64 inputs (MultiHarp 160)

    def __init__(self, resource, *, timeout_s: float = 2.0, check_order: bool = True, **kw):
        super().__init__(resource, timeout_s=timeout_s, **kw)
        self.check_order = check_order
        self.header: PtuHeader | None = None
        self._decoder: T2Decoder | None = None
        self._carry = b""
        self._delay_ps = np.zeros(256, np.int64)
        self._streaming = False

    def _make_transport(self) -> StreamTransport:
        if isinstance(self.resource, StreamTransport):
            return self.resource
        return TcpTransport.from_address(str(self.resource), timeout_s=self.timeout_s)

    def _identify(self) -> Identity:
        t = self.transport
        assert isinstance(t, StreamTransport)
        try:
            header = parse_ptu_header(lambda n: t.read_exact(n))
        except DriverError as e:
            raise e.attach(self.name, "<PTU header>") from None
        rt = header.record_type
        if rt not in T2_RECORD_TYPES:
            raise PtuFormatError(f"stream record type 0x{rt:08X} is not a T2 type",
                                 instrument=self.name, command="<PTU header>")
        self.header = header
        self._decoder = _decoder_for(header, self.check_order)
        self._carry = b""
        return header.identity()

    def _before_close(self) -> None:
        if self._streaming:
            self.stop_stream()

    @property
    def resolution_ps(self) -> float:
        if self._decoder is None:
            raise DriverError("resolution unknown before open()", instrument=self.name)
        return self._decoder.resolution_ps

    def set_delay_ps(self, channel: int, delay_ps: int) -> None:
        """Add ``delay_ps`` (software, |delay| <= 1 s) to every tag of output ``channel``."""
        ch = self._check_int("channel", channel, 0, self.N_CHANNELS - 1)
        self._delay_ps[ch] = self._check_int("delay_ps", delay_ps, -10**12, 10**12)

    def start_stream(self) -> None:
        """Ask the server to stream records (``START``)."""
        self._write("START")
        self._streaming = True

    def stop_stream(self) -> None:
        """Ask the server to stop (``STOP``); records already in flight stay readable."""
        self._write("STOP")
        self._streaming = False

    def read_tags(self, *, max_tags: int | None = None, timeout_s: float | None = None) -> TagBatch:
        """Decode the records that arrived within ``timeout_s`` (at most ``max_tags`` records)."""
        t = self.transport
        assert isinstance(t, StreamTransport) and self._decoder is not None
        max_bytes = 4 * (max_tags if max_tags is not None else 1 << 20) - len(self._carry)
        if max_tags is not None:
            self._check_int("max_tags", max_tags, 1, 1 << 28)
        try:
            data = t.read_some(max(max_bytes, 4), timeout_s=timeout_s)
        except DriverError as e:
            raise e.attach(self.name, "<record stream>") from None
        if self._carry:
            data = self._carry + data
        n = len(data) // 4
        self._carry = data[4 * n:]
        if n == 0:
            return TagBatch.empty()
        try:
            batch = self._decoder.decode(np.frombuffer(data, "<u4", count=n))
        except DriverError as e:
            raise e.attach(self.name, "<record stream>") from None
        if self._delay_ps.any():
            batch.t_ps += self._delay_ps[batch.channel]
            order = np.argsort(batch.t_ps, kind="stable")
            batch = TagBatch(batch.t_ps[order], batch.channel[order], stats=batch.stats)
        return batch

"""Emulated PicoQuant HydraHarp/MultiHarp: a TCP server streaming T2 records.

What it is for: the twin of :class:`drivers.picoquant.PicoQuantStreamTagger`.
On connect it sends a PTU header, then (after ``START``) the tags of its
pluggable source encoded as HydraHarp V2 / generic T2 records with overflow
records, over a real TCP socket on 127.0.0.1.

What it must not do: depend on the physical model (any callable or iterable of
``(t_ps int64, channel uint8)`` numpy batches feeds it), or bind anything but
127.0.0.1.

Why this encoder: it is the inverse of PicoQuant's published T2 layout (see
``drivers/picoquant.py``), vectorized: wrap indices ``t >> 25`` are compared
with the previous tag's, and one overflow record carrying the number of wraps
is inserted before each tag that crosses one (the V2 "multiple overflows in one
record" form).  A client that connects late first gets overflow records that
bring its clock to the current wrap.
"""

from __future__ import annotations

import numpy as np

from drivers.picoquant import (
    RT_GENERIC_T2,
    RT_HYDRAHARP2_T2,
    TY_ANSISTRING,
    TY_FLOAT8,
    TY_INT8,
    encode_ptu_header,
    iter_ptu,
)

from .server import TcpStreamServer, tag_batches

__all__ = ["encode_t2", "PicoQuantT2Server", "ptu_tag_source"]

_MASK25 = (1 << 25) - 1
_OFL = (1 << 31) | (63 << 25)


def encode_t2(t_ps: np.ndarray, channel: np.ndarray, *, resolution_ps: int = 1,
              wrap_index: int = 0) -> tuple[np.ndarray, int]:
    """Encode sorted tags as V2 T2 records; returns ``(uint32 records, new wrap index)``.

    Channel 0 becomes the sync record, channel c >= 1 a photon on input c-1.
    """
    t = np.asarray(t_ps, np.int64)
    ch = np.asarray(channel, np.uint8)
    if t.shape != ch.shape or t.ndim != 1:
        raise ValueError("t_ps and channel must be 1-D and the same length")
    if t.size == 0:
        return np.empty(0, np.uint32), wrap_index
    if (ch > 64).any():
        raise ValueError("channel must be 0 (sync) or 1..64")
    ticks = t // int(resolution_ps)
    hi = ticks >> 25
    d = np.diff(hi, prepend=np.int64(wrap_index))
    if (d < 0).any():
        raise ValueError("tags must be sorted by time and not before the stream's clock")
    if (d > _MASK25).any():
        raise ValueError("gap between tags exceeds 2**25 wraps")
    low = (ticks & _MASK25).astype(np.uint32)
    recs = np.where(ch == 0, np.uint32(1 << 31) | low,
                    ((ch.astype(np.uint32) - 1) << 25) | low).astype(np.uint32)
    pos = np.flatnonzero(d > 0)
    if pos.size:
        recs = np.insert(recs, pos, (np.uint32(_OFL) | d[pos].astype(np.uint32)))
    return recs, int(hi[-1])


def ptu_tag_source(path, *, records_per_batch: int = 1 << 20):
    """A tag source replaying a recorded T2 ``.ptu`` file: yields ``(t_ps, channel)`` batches.

    Any emulated time tagger takes it, so a lab capture can be replayed through the HIL rig.
    """
    for batch in iter_ptu(path, records_per_batch=records_per_batch):
        if len(batch):
            yield batch.t_ps, batch.channel


class PicoQuantT2Server(TcpStreamServer):
    """Streams T2 records from ``source`` (callable/iterable of (t_ps, channel) batches)."""

    KIND = "picoquant-emu"

    def __init__(self, source, *, model: str = "HydraHarp", serial: str = "1020304",
                 record_type: int = RT_HYDRAHARP2_T2, resolution_ps: int = 1,
                 autostart: bool = False, **kw):
        super().__init__(**kw)
        if record_type not in (RT_HYDRAHARP2_T2, RT_GENERIC_T2):
            raise ValueError("the emulator writes V2/generic T2 records only")
        self._next = tag_batches(source)
        self.model = model
        self.serial = serial
        self.record_type = record_type
        self.resolution_ps = int(resolution_ps)
        self.autostart = autostart
        self.wrap_index = 0  # the emulator's acquisition clock, in wraps
        self.tags_sent = 0
        self.exhausted = False

    def greeting(self) -> bytes:
        header = encode_ptu_header([
            ("File_GUID", -1, TY_ANSISTRING, "{emulated}"),
            ("HW_Type", -1, TY_ANSISTRING, self.model),
            ("HW_SerialNo", -1, TY_ANSISTRING, self.serial),
            ("HW_Version", -1, TY_ANSISTRING, "2.0"),
            ("MeasDesc_GlobalResolution", -1, TY_FLOAT8, self.resolution_ps * 1e-12),
            ("TTResultFormat_TTTRRecType", -1, TY_INT8, self.record_type),
            ("TTResult_NumberOfRecords", -1, TY_INT8, -1),
        ])
        # bring a late client's clock to the current wrap
        left, catch_up = self.wrap_index, []
        while left > 0:
            k = min(left, _MASK25)
            catch_up.append(_OFL | k)
            left -= k
        if self.autostart:
            self.streaming.set()
        return header + np.asarray(catch_up, "<u4").tobytes()

    def handle_line(self, line: str) -> bytes | None:
        cmd = line.strip().upper()
        if cmd == "START":
            self.streaming.set()
        elif cmd == "STOP":
            self.streaming.clear()
        return None

    def produce(self) -> bytes | None:
        batch = self._next()
        if batch is None:
            self.exhausted = True
            return None
        t, ch = batch
        recs, self.wrap_index = encode_t2(t, ch, resolution_ps=self.resolution_ps,
                                          wrap_index=self.wrap_index)
        self.tags_sent += len(t)
        return recs.astype("<u4").tobytes()

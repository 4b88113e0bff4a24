"""PicoQuant T2: PTU reader against an independent struct-based writer, the decoder against a
per-record reference (PicoQuant's Read_PTU.py logic), the live stream driver against its emulated
twin over real TCP, faults, and hypothesis fuzzing of the parser and the decoder."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.errors import ConnectionLost, DriverTimeout, MalformedReply, WrongModel
from drivers.interfaces import TimeTagger
from drivers.picoquant import (
    RT_GENERIC_T2,
    RT_HYDRAHARP2_T2,
    RT_HYDRAHARP_T2,
    RT_PICOHARP300_T2,
    PicoQuantStreamTagger,
    PtuFormatError,
    T2Decoder,
    iter_ptu,
    parse_ptu_header,
    read_ptu,
)
from hil.emulated.picoquant import PicoQuantT2Server, encode_t2

# ---------------------------------------------------------------- independent writer (struct only)


def _tag(ident: str, typ: int, raw8: bytes, idx: int = -1, extra: bytes = b"") -> bytes:
    return struct.pack("<32siI", ident.encode().ljust(32, b"\0"), idx, typ) + raw8 + extra


def write_ptu(path, record_type: int, records: list[int], resolution_s: float = 1e-12,
              n_records: int | None = None) -> None:
    ansi = b"HydraHarp" + b"\0" * 7
    wide = "détecteur".encode("utf-16-le") + b"\0\0"
    arr = struct.pack("<3d", 1.5, -2.0, 3.25)
    blob = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    hdr = b"PQTTTR\0\0" + b"1.0.00\0\0"
    hdr += _tag("File_Comment", 0x4001FFFF, struct.pack("<q", 8), extra=b"comment\0")
    hdr += _tag("HW_Type", 0x4001FFFF, struct.pack("<q", len(ansi)), extra=ansi)
    hdr += _tag("HW_SerialNo", 0x4001FFFF, struct.pack("<q", 8), extra=b"1234567\0")
    hdr += _tag("UsrHeadName", 0x4002FFFF, struct.pack("<q", len(wide)), extra=wide)
    hdr += _tag("HWInpChan_CFDLevel", 0x10000008, struct.pack("<q", -50), idx=0)
    hdr += _tag("HWInpChan_CFDLevel", 0x10000008, struct.pack("<q", -60), idx=1)
    hdr += _tag("Measurement_SubMode", 0x10000008, struct.pack("<q", 0))
    hdr += _tag("File_CreatingTime", 0x21000008, struct.pack("<d", 25569.0 + 1.0))
    hdr += _tag("MeasDesc_GlobalResolution", 0x20000008, struct.pack("<d", resolution_s))
    hdr += _tag("TTResultFormat_TTTRRecType", 0x10000008, struct.pack("<q", record_type))
    hdr += _tag("TTResult_NumberOfRecords", 0x10000008,
                struct.pack("<q", len(records) if n_records is None else n_records))
    hdr += _tag("HW_Markers", 0x00000008, struct.pack("<q", 1))
    hdr += _tag("HW_BitSet", 0x11000008, struct.pack("<q", 0xF0))
    hdr += _tag("ImgHdr_Array", 0x2001FFFF, struct.pack("<q", len(arr)), extra=arr)
    hdr += _tag("Blob", 0xFFFFFFFF, struct.pack("<q", len(blob)), extra=blob)
    hdr += _tag("Header_End", 0xFFFF0008, bytes(8))
    with open(path, "wb") as f:
        f.write(hdr)
        f.write(struct.pack(f"<{len(records)}I", *records))


def reference_decode(record_type: int, records: list[int], res_ps: int = 1):
    """Per-record decoding as PicoQuant's Read_PTU.py does it (readHT2 / readPT2)."""
    t_out, c_out = [], []
    ofl = 0
    for rec in records:
        if record_type == RT_PICOHARP300_T2:
            channel, tm = rec >> 28, rec & 0x0FFFFFFF
            if channel == 0xF:
                if rec & 0xF == 0:
                    ofl += 210698240
                continue
            t_out.append((ofl + tm) * res_ps)
            c_out.append(channel)
            continue
        special, channel, timetag = rec >> 31, (rec >> 25) & 0x3F, rec & 0x1FFFFFF
        if special:
            if channel == 0x3F:
                if record_type == RT_HYDRAHARP_T2:
                    ofl += 33552000
                else:
                    ofl += 33554432 * (timetag if timetag else 1)
            elif channel == 0:
                t_out.append((ofl + timetag) * res_ps)
                c_out.append(0)
        else:
            t_out.append((ofl + timetag) * res_ps)
            c_out.append(channel + 1)
    return np.array(t_out, np.int64), np.array(c_out, np.uint8)


def hh_photon(ch, t):
    return (ch << 25) | t


def hh_sync(t):
    return (1 << 31) | t


def hh_marker(m, t):
    return (1 << 31) | (m << 25) | t


def hh_ofl(n):
    return (1 << 31) | (63 << 25) | n


HH_RECORDS = [hh_sync(10), hh_photon(0, 20), hh_photon(3, 20), hh_marker(2, 15), hh_photon(1, 30),
              hh_ofl(1), hh_sync(5), hh_photon(2, 7), hh_ofl(3), hh_photon(0, 0x1FFFFFF),
              hh_ofl(0), hh_sync(1), hh_photon(5, 2)]

# ---------------------------------------------------------------- PTU reader


@pytest.mark.parametrize("rt", [RT_HYDRAHARP2_T2, RT_GENERIC_T2, RT_HYDRAHARP_T2])
def test_ptu_reader_matches_reference_hydraharp_family(tmp_path, rt):
    # V1 overflow records always count once and time tags stay below T2WRAPAROUND_V1
    records = HH_RECORDS if rt != RT_HYDRAHARP_T2 else [
        hh_ofl(0) if r >> 25 == 127 else (hh_photon(0, 33551999) if r == hh_photon(0, 0x1FFFFFF) else r)
        for r in HH_RECORDS]
    p = tmp_path / "x.ptu"
    write_ptu(p, rt, records)
    header, tags = read_ptu(p)
    t_ref, c_ref = reference_decode(rt, records)
    assert tags.t_ps.dtype == np.int64 and tags.channel.dtype == np.uint8
    np.testing.assert_array_equal(tags.t_ps, t_ref)
    np.testing.assert_array_equal(tags.channel, c_ref)
    assert header.record_type == rt and header.n_records == len(records)
    # header values of every tag type, as the writer put them
    assert header.tags["HW_Type"] == "HydraHarp"
    assert header.tags["UsrHeadName"] == "détecteur"
    assert header.tags["HWInpChan_CFDLevel(0)"] == -50 and header.tags["HWInpChan_CFDLevel(1)"] == -60
    assert header.tags["File_CreatingTime"] == pytest.approx(86400.0)
    assert header.tags["HW_Markers"] is True and header.tags["HW_BitSet"] == 0xF0
    np.testing.assert_array_equal(header.tags["ImgHdr_Array"], [1.5, -2.0, 3.25])
    assert header.tags["Blob"] == bytes(range(1, 9)) and header.tags["Header_End"] is None
    assert tags.stats["markers"] == 1


def test_v2_multi_overflow_values(tmp_path):
    # explicit numbers: after ofl(1), ofl(3), ofl(0)=one -> 5 wraps in total
    p = tmp_path / "x.ptu"
    write_ptu(p, RT_HYDRAHARP2_T2, HH_RECORDS)
    _, tags = read_ptu(p)
    W = 1 << 25
    assert tags.t_ps.tolist() == [10, 20, 20, 30, W + 5, W + 7, 4 * W + 0x1FFFFFF, 5 * W + 1, 5 * W + 2]
    assert tags.channel.tolist() == [0, 1, 4, 2, 0, 3, 1, 0, 6]


def test_picoharp_t2_and_resolution(tmp_path):
    recs = [(0 << 28) | 100, (1 << 28) | 200, (15 << 28) | 0x35, (15 << 28) | 0, (1 << 28) | 5]
    p = tmp_path / "ph.ptu"
    write_ptu(p, RT_PICOHARP300_T2, recs, resolution_s=4e-12)
    _, tags = read_ptu(p)
    t_ref, c_ref = reference_decode(RT_PICOHARP300_T2, recs, res_ps=4)
    np.testing.assert_array_equal(tags.t_ps, t_ref)
    np.testing.assert_array_equal(tags.channel, c_ref)
    assert tags.t_ps[-1] == (210698240 + 5) * 4


def test_large_random_file_chunked_equals_reference(tmp_path):
    rng = np.random.default_rng(7)
    t = np.cumsum(rng.integers(1, 3_000_000, 20_000)).astype(np.int64)
    ch = rng.integers(0, 5, t.size).astype(np.uint8)
    recs, _ = encode_t2(t, ch)
    p = tmp_path / "big.ptu"
    write_ptu(p, RT_HYDRAHARP2_T2, recs.tolist())
    t_ref, c_ref = reference_decode(RT_HYDRAHARP2_T2, recs.tolist())
    np.testing.assert_array_equal(t_ref, t)  # the emulator's encoder is right by the reference too
    _, tags = read_ptu(p)
    np.testing.assert_array_equal(tags.t_ps, t)
    np.testing.assert_array_equal(tags.channel, ch)
    parts = list(iter_ptu(p, records_per_batch=777))
    np.testing.assert_array_equal(np.concatenate([b.t_ps for b in parts]), t)
    np.testing.assert_array_equal(np.concatenate([b.channel for b in parts]), ch)


def test_ptu_errors_are_clean(tmp_path):
    p = tmp_path / "x.ptu"
    write_ptu(p, RT_HYDRAHARP2_T2, HH_RECORDS)
    data = p.read_bytes()
    (tmp_path / "trunc.ptu").write_bytes(data[:-6])
    with pytest.raises(PtuFormatError, match="not whole 32-bit records"):
        read_ptu(tmp_path / "trunc.ptu")
    (tmp_path / "short.ptu").write_bytes(data[:-8])
    with pytest.raises(PtuFormatError, match="header says 13 records, file holds 11"):
        read_ptu(tmp_path / "short.ptu")
    _, tags = read_ptu(tmp_path / "short.ptu", strict=False)
    assert len(tags) == 7  # 11 records: 7 tags, 1 marker, 3 overflows
    (tmp_path / "magic.ptu").write_bytes(b"PQHISTO\0" + data[8:])
    with pytest.raises(PtuFormatError, match="not a PTU file"):
        read_ptu(tmp_path / "magic.ptu")
    with pytest.raises(PtuFormatError, match="truncated"):
        parse_ptu_header(data[:300])
    write_ptu(tmp_path / "t3.ptu", 0x01010304, [1, 2])
    with pytest.raises(PtuFormatError, match="T3"):
        read_ptu(tmp_path / "t3.ptu")


def test_decoder_detects_corruption_and_keeps_state_across_chunks():
    t = np.array([5, 10, (1 << 25) + 3, (3 << 25) + 1], np.int64)
    ch = np.array([0, 1, 2, 3], np.uint8)
    recs, _ = encode_t2(t, ch)
    d = T2Decoder(RT_HYDRAHARP2_T2)
    out = [d.decode(recs[i:i + 1]) for i in range(recs.size)]
    np.testing.assert_array_equal(np.concatenate([b.t_ps for b in out]), t)
    with pytest.raises(MalformedReply, match="backwards"):
        d.decode(np.array([hh_photon(0, 0)], np.uint32))  # 3*2**25 + 0 < last tag

# ---------------------------------------------------------------- fuzzing


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_ptu_header_random_bytes(data):
    try:
        parse_ptu_header(b"PQTTTR\0\0" + data)
    except PtuFormatError:
        pass


_VALID = None


def _valid_file_bytes(tmp_path_factory):
    global _VALID
    if _VALID is None:
        p = tmp_path_factory.mktemp("fz") / "v.ptu"
        write_ptu(p, RT_HYDRAHARP2_T2, HH_RECORDS)
        _VALID = p.read_bytes()
    return _VALID


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 10_000), flip=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_fuzz_ptu_truncated_or_flipped(tmp_path_factory, cut, flip, bit):
    data = bytearray(_valid_file_bytes(tmp_path_factory))
    data = data[: cut % (len(data) + 1)]
    if data:
        data[flip % len(data)] ^= 1 << bit
    try:
        header = parse_ptu_header(bytes(data))
    except PtuFormatError:
        return
    assert header.header_bytes <= len(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4000), st.sampled_from([RT_HYDRAHARP2_T2, RT_HYDRAHARP_T2, RT_PICOHARP300_T2]))
def test_fuzz_t2_decoder_random_records(data, rt):
    words = np.frombuffer(data[: len(data) // 4 * 4], "<u4")
    d = T2Decoder(rt, check_order=True)
    try:
        b = d.decode(words)
    except MalformedReply:
        return
    assert b.t_ps.shape == b.channel.shape and len(b) <= words.size
    t_ref, c_ref = reference_decode(rt, words.tolist())
    np.testing.assert_array_equal(b.t_ps, t_ref)
    np.testing.assert_array_equal(b.channel, c_ref)

# ---------------------------------------------------------------- live stream vs the emulated twin


def synthetic_batches(n_batches=20, per_batch=5000, seed=3):
    rng = np.random.default_rng(seed)
    t0 = 0
    out = []
    for _ in range(n_batches):
        t = t0 + np.cumsum(rng.integers(1, 40_000, per_batch)).astype(np.int64)
        t0 = int(t[-1])
        out.append((t, rng.integers(0, 5, per_batch).astype(np.uint8)))
    return out


def drain(tagger, n_expected, timeout_s=5.0):
    got_t, got_c = [], []
    n = 0
    deadline = time.monotonic() + timeout_s
    while n < n_expected and time.monotonic() < deadline:
        b = tagger.read_tags(timeout_s=0.2)
        got_t.append(b.t_ps)
        got_c.append(b.channel)
        n += len(b)
    return np.concatenate(got_t), np.concatenate(got_c)


def test_stream_driver_against_emulator():
    batches = synthetic_batches()
    t_all = np.concatenate([b[0] for b in batches])
    c_all = np.concatenate([b[1] for b in batches])
    with PicoQuantT2Server(batches) as emu:
        with PicoQuantStreamTagger(emu.address) as tg:
            assert tg.identity.manufacturer == "PicoQuant" and tg.identity.model == "HydraHarp"
            assert tg.resolution_ps == 1.0
            assert isinstance(tg, TimeTagger)
            tg.start_stream()
            t, c = drain(tg, t_all.size)
            tg.stop_stream()
        np.testing.assert_array_equal(t, t_all)
        np.testing.assert_array_equal(c, c_all)
        deadline = time.monotonic() + 2.0
        while len(emu.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # the server thread reads STOP asynchronously
        assert list(emu.requests)[:2] == ["START", "STOP"]


def test_stream_software_delay_resorts():
    t = np.array([100, 200, 300, 400], np.int64)
    c = np.array([1, 2, 1, 2], np.uint8)
    with PicoQuantT2Server([(t, c)], autostart=True) as emu, PicoQuantStreamTagger(emu.address) as tg:
        tg.set_delay_ps(1, 150)
        tt, cc = drain(tg, 4)
    assert tt.tolist() == [200, 250, 400, 450] and cc.tolist() == [2, 1, 2, 1]


def test_stream_wrong_model_refused():
    with PicoQuantT2Server([], model="Acme TDC") as emu:
        tg = PicoQuantStreamTagger(emu.address)
        with pytest.raises(WrongModel, match="Acme TDC") as ei:
            tg.open()
        assert "PicoQuant@127.0.0.1" in str(ei.value)
        assert not tg.is_open


def test_stream_open_timeout_when_no_header():
    import socket

    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    try:
        tg = PicoQuantStreamTagger(f"127.0.0.1:{ls.getsockname()[1]}", timeout_s=0.3)
        t0 = time.monotonic()
        with pytest.raises(DriverTimeout) as ei:
            tg.open()
        assert time.monotonic() - t0 < 2.0
        assert "<PTU header>" in str(ei.value) and "PicoQuant@127.0.0.1" in str(ei.value)
    finally:
        ls.close()


def test_stream_read_times_out_empty_not_forever():
    with PicoQuantT2Server([]) as emu, PicoQuantStreamTagger(emu.address) as tg:
        t0 = time.monotonic()
        b = tg.read_tags(timeout_s=0.2)
        assert len(b) == 0 and 0.15 < time.monotonic() - t0 < 1.5


class EndlessSource:
    """Endless synthetic tags (sorted, all channels); remembers what it produced."""

    def __init__(self, seed, per_batch=2000):
        self.rng = np.random.default_rng(seed)
        self.per_batch = per_batch
        self.t0 = 0
        self.produced = []

    def __call__(self):
        t = self.t0 + np.cumsum(self.rng.integers(1, 40_000, self.per_batch)).astype(np.int64)
        self.t0 = int(t[-1])
        b = (t, self.rng.integers(0, 5, self.per_batch).astype(np.uint8))
        self.produced.append(b)
        return b


def read_until_error(tg, exc, seconds=3.0):
    deadline = time.monotonic() + seconds
    with pytest.raises(exc) as ei:
        while time.monotonic() < deadline:
            tg.read_tags(timeout_s=0.2)
    return ei.value


def test_stream_disconnect_mid_stream_then_reconnect_keeps_absolute_time():
    src = EndlessSource(5)
    with PicoQuantT2Server(src, autostart=True) as emu:
        tg = PicoQuantStreamTagger(emu.address)
        tg.open()
        assert len(tg.read_tags(timeout_s=1.0)) > 0
        emu.faults.set(drop=1)
        err = read_until_error(tg, ConnectionLost)
        assert "<record stream>" in str(err) and "PicoQuant@127.0.0.1" in str(err)
        tg.reconnect()
        t, c = drain(tg, 2000, timeout_s=3.0)
        tg.close()
    assert t.size >= 2000
    # after reconnect, times continue on the emulator's absolute clock (catch-up overflows)
    t_all = np.concatenate([b[0] for b in src.produced])
    c_all = np.concatenate([b[1] for b in src.produced])
    i = np.searchsorted(t_all, t[0])
    np.testing.assert_array_equal(t, t_all[i:i + t.size])
    np.testing.assert_array_equal(c, c_all[i:i + t.size])


def test_stream_garbage_detected_then_recovers():
    with PicoQuantT2Server(EndlessSource(9), autostart=True) as emu:
        tg = PicoQuantStreamTagger(emu.address)
        tg.open()
        assert len(tg.read_tags(timeout_s=1.0)) > 0
        emu.faults.set(garbage=1)
        err = read_until_error(tg, MalformedReply)
        assert "backwards" in str(err) and "<record stream>" in str(err)
        tg.reconnect()
        t, _ = drain(tg, 1000, timeout_s=3.0)
        tg.close()
    assert t.size >= 1000 and bool(np.all(np.diff(t) >= 0))


@pytest.mark.hardware
def test_hardware_picoquant_stream(instrument_address):
    addr = instrument_address("picoquant")
    with PicoQuantStreamTagger(addr, timeout_s=5.0) as tg:
        assert tg.identity.manufacturer == "PicoQuant"
        tg.start_stream()
        b = tg.read_tags(timeout_s=2.0)
        tg.stop_stream()
        assert b.t_ps.dtype == np.int64 and bool(np.all(np.diff(b.t_ps) >= 0))


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(0, 4 * 600), max_size=12), garbage_tail=st.binary(max_size=3))
def test_fuzz_stream_chunking_is_invisible(cuts, garbage_tail):
    """Records split at arbitrary byte positions across reads decode exactly as one block;
    a trailing partial record (< 4 bytes) stays in the carry."""
    from drivers.picoquant import TY_ANSISTRING, TY_FLOAT8, TY_INT8, encode_ptu_header
    from drivers.testing import FakeStreamTransport

    rng = np.random.default_rng(len(cuts))
    t = np.cumsum(rng.integers(1, 30_000_000, 500)).astype(np.int64)
    ch = rng.integers(0, 5, t.size).astype(np.uint8)
    recs, _ = encode_t2(t, ch)
    header = encode_ptu_header([("HW_Type", -1, TY_ANSISTRING, "MultiHarp 160"),
                                ("MeasDesc_GlobalResolution", -1, TY_FLOAT8, 1e-12),
                                ("TTResultFormat_TTTRRecType", -1, TY_INT8, RT_GENERIC_T2),
                                ("TTResult_NumberOfRecords", -1, TY_INT8, -1)])
    body = recs.astype("<u4").tobytes() + garbage_tail
    bounds = sorted({min(c, len(body)) for c in cuts} | {0, len(body)})
    chunks = [body[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
    transport = FakeStreamTransport([(None, header)] + [(None, c) for c in chunks])
    tg = PicoQuantStreamTagger(transport)
    assert tg.open().model == "MultiHarp 160"
    got_t, got_c = [], []
    for _ in range(200):
        b = tg.read_tags(max_tags=97)
        got_t.append(b.t_ps)
        got_c.append(b.channel)
        if len(b) == 0 and not transport._pending and not transport._buf:
            break
    np.testing.assert_array_equal(np.concatenate(got_t), t)
    np.testing.assert_array_equal(np.concatenate(got_c), ch)
    assert len(tg._carry) == len(garbage_tail)


def test_stream_capture_is_a_ptu_file_and_replays(tmp_path):
    """Header (NumberOfRecords = -1) + raw records, as the stream sends them, read back as a file,
    then replayed through the emulator as a tag source."""
    from drivers.picoquant import TY_ANSISTRING, TY_FLOAT8, TY_INT8, encode_ptu_header
    from hil.emulated.picoquant import ptu_tag_source

    batches = synthetic_batches(n_batches=3, per_batch=1000, seed=12)
    t_all = np.concatenate([b[0] for b in batches])
    c_all = np.concatenate([b[1] for b in batches])
    recs, _ = encode_t2(t_all, c_all)
    header = encode_ptu_header([("HW_Type", -1, TY_ANSISTRING, "HydraHarp"),
                                ("MeasDesc_GlobalResolution", -1, TY_FLOAT8, 1e-12),
                                ("TTResultFormat_TTTRRecType", -1, TY_INT8, RT_HYDRAHARP2_T2),
                                ("TTResult_NumberOfRecords", -1, TY_INT8, -1)])
    p = tmp_path / "capture.ptu"
    p.write_bytes(header + recs.astype("<u4").tobytes())
    h, tags = read_ptu(p)
    assert h.n_records == -1 and h.identity().model == "HydraHarp"
    np.testing.assert_array_equal(tags.t_ps, t_all)
    with PicoQuantT2Server(ptu_tag_source(p, records_per_batch=700), autostart=True) as emu, \
            PicoQuantStreamTagger(emu.address) as tg:
        t, c = drain(tg, t_all.size)
    np.testing.assert_array_equal(t, t_all)
    np.testing.assert_array_equal(c, c_all)


def test_decoder_internal_chunking_equals_small_chunks(monkeypatch):
    rng = np.random.default_rng(21)
    t = np.cumsum(rng.integers(1, 20_000_000, 5000)).astype(np.int64)
    ch = rng.integers(0, 5, t.size).astype(np.uint8)
    recs, _ = encode_t2(t, ch)
    monkeypatch.setattr(T2Decoder, "CHUNK_RECORDS", 64)  # many internal chunks, overflows across them
    b = T2Decoder(RT_HYDRAHARP2_T2).decode(recs)
    np.testing.assert_array_equal(b.t_ps, t)
    np.testing.assert_array_equal(b.channel, ch)
    assert b.stats["records"] == recs.size

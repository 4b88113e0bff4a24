"""ID900/ID1000 driver: protocol tests (exact messages), the driver against its emulated twin over
real ZeroMQ sockets, faults with recovery, and fuzzing of the timestamp-message decoder."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import (
    ConnectionLost,
    DriverTimeout,
    DriverValueError,
    InstrumentError,
    MalformedReply,
    NotConnected,
    WrongModel,
)
from drivers.idq_id900 import IdqTimeController, decode_timestamps
from drivers.interfaces import TimeTagger
from drivers.testing import expected_protocol
from hil.emulated.id900 import IdqTimeControllerEmulator
from hil.emulated.server import free_tcp_port

IDN = "ID Quantique,ID1000,TC-123,1.9.0"
SUB_PS = 200_000_000_000  # 0.2 s sub-acquisitions (IDQ's minimum)
DEAD_PS = 40_000

# ---------------------------------------------------------------- protocol (exact messages)


def test_protocol_settings_and_counters():
    with expected_protocol(IdqTimeController, [
        ("*IDN?", IDN),
        ("DELA2:VALU 1250;LINK INPU2", ""),
        ("STAR:THRE -0.2500V", ""),
        ("INPU4:EDGE FALLING", ""),
        ("STAR:COUN?", "17"), ("INPU1:COUN?", "5"), ("INPU2:COUN?", "0"),
        ("INPU3:COUN?", "12TB"), ("INPU4:COUN?", "3"),
    ]) as tc:
        assert tc.identity.model == "ID1000" and tc.identity.serial == "TC-123"
        tc.set_delay_ps(2, 1250)
        tc.set_threshold_v(0, -0.25)
        tc.set_edge(4, "falling")
        assert tc.counts().tolist() == [17, 5, 0, 12, 3]
        assert isinstance(tc, TimeTagger)


def test_protocol_validation_sends_nothing():
    with expected_protocol(IdqTimeController, [("*IDN?", IDN)]) as tc:
        with pytest.raises(DriverValueError, match=r"delay_ps=-1 is outside 0..1000000000000"):
            tc.set_delay_ps(1, -1)
        with pytest.raises(DriverValueError, match="channel=7"):
            tc.set_delay_ps(7, 10)
        with pytest.raises(DriverValueError, match="channel 0 has no delay block"):
            tc.set_delay_ps(0, 10)
        with pytest.raises(DriverValueError, match=r"threshold_v=3.5 V is outside"):
            tc.set_threshold_v(1, 3.5)
        with pytest.raises(DriverValueError, match="edge='UP'"):
            tc.set_edge(1, "UP")
    with pytest.raises(DriverValueError, match="frame-referenced"):
        IdqTimeController("127.0.0.1", frame_period_ps=1000, channel_map={1: 0})


def test_protocol_instrument_error_and_malformed_reply():
    with expected_protocol(IdqTimeController, [
        ("*IDN?", IDN),
        ("DELA1:VALU 5;LINK INPU1", "SCPI_ERR_PARAMETER_OUT_OF_RANGE"),
        ("INPU1:COUN?", "twelve"),
        ("DELA1:VALU 6;LINK INPU1", "unexpected"),
    ]) as tc:
        with pytest.raises(InstrumentError) as ei:
            tc.set_delay_ps(1, 5)
        assert "'DELA1:VALU 5;LINK INPU1'" in str(ei.value)
        assert "SCPI_ERR_PARAMETER_OUT_OF_RANGE" in str(ei.value)
        assert ei.value.instrument.startswith("ID900@")
        with pytest.raises(MalformedReply, match="expected an integer"):
            tc._query_int("INPU1:COUN?")
        with pytest.raises(MalformedReply, match="empty answer"):
            tc.set_delay_ps(1, 6)


def test_protocol_wrong_model_refused_and_closed():
    tc = IdqTimeController.__new__(IdqTimeController)
    from drivers.testing import FakeReqTransport

    t = FakeReqTransport([("*IDN?", "Keysight Technologies,33622A,MY1,1.0")])
    tc.__init__(t)
    with pytest.raises(WrongModel, match="33622A"):
        tc.open()
    assert not tc.is_open
    with pytest.raises(NotConnected):
        tc.counts()


def test_decode_timestamps_formats():
    ts = np.array([5, 7, 100], "<u8")
    t, ref = decode_timestamps(ts.tobytes(), with_ref_index=False)
    assert t.tolist() == [5, 7, 100] and ref is None and t.dtype == np.int64
    pairs = np.array([[9, 0], [3, 1], [8, 1]], "<u8")
    t, ref = decode_timestamps(pairs.tobytes(), with_ref_index=True)
    assert t.tolist() == [9, 3, 8] and ref.tolist() == [0, 1, 1]
    with pytest.raises(MalformedReply, match="whole 16-byte records"):
        decode_timestamps(b"\0" * 24, with_ref_index=True)
    with pytest.raises(MalformedReply, match="backwards"):
        decode_timestamps(np.array([5, 4], "<u8").tobytes(), with_ref_index=False)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.booleans())
def test_fuzz_timestamp_message_decoder(data, with_ref):
    try:
        t, ref = decode_timestamps(data, with_ref_index=with_ref)
    except MalformedReply:
        return
    assert t.dtype == np.int64 and (t >= 0).all()
    assert len(data) == t.size * (16 if with_ref else 8)

# ---------------------------------------------------------------- against the emulated twin


def frame_source(n_frames, period_ps, seed=1, per_batch_frames=50_000):
    """Syncs at k*period (START) and one click per frame on a random detector 1..4."""
    rng = np.random.default_rng(seed)
    batches = []
    for f0 in range(0, n_frames, per_batch_frames):
        k = np.arange(f0, min(n_frames, f0 + per_batch_frames), dtype=np.int64)
        sync = k * period_ps
        click = sync + rng.integers(1, period_ps, k.size)
        det = rng.integers(1, 5, k.size).astype(np.uint8)
        t = np.concatenate([sync, click])
        c = np.concatenate([np.zeros(k.size, np.uint8), det])
        o = np.argsort(t, kind="stable")
        batches.append((t[o], c[o]))
    return batches


def expected_tags(batches, pwid, pper, frame_period=None, keep_channels=(1, 2, 3, 4)):
    t = np.concatenate([b[0] for b in batches])
    c = np.concatenate([b[1] for b in batches])
    in_rec = (t % pper) < pwid
    det = in_rec & np.isin(c, keep_channels) & (c != 0)
    if frame_period is None:
        sel = in_rec & np.isin(c, keep_channels)
        return t[sel], c[sel]
    td, cd = t[det], c[det]
    last_frame = int(td.max() // frame_period)
    ts = np.arange(last_frame + 1, dtype=np.int64) * frame_period
    tt = np.concatenate([ts, td])
    cc = np.concatenate([np.zeros(ts.size, np.uint8), cd])
    o = np.argsort(tt, kind="stable")
    return tt[o], cc[o]


def collect(tc, n_expected, seconds=8.0):
    ts, cs, n = [], [], 0
    deadline = time.monotonic() + seconds
    while n < n_expected and time.monotonic() < deadline:
        b = tc.read_tags(timeout_s=0.2)
        ts.append(b.t_ps)
        cs.append(b.channel)
        n += len(b)
    return np.concatenate(ts), np.concatenate(cs)


def make_driver(emu, **kw):
    ports = {b: free_tcp_port() for b in (1, 2, 3, 4)}
    return IdqTimeController(emu.scpi_endpoint, dlt=emu.dlt_endpoint, stream_ports=ports,
                             subacq_width_ps=SUB_PS, subacq_dead_ps=DEAD_PS, timeout_s=1.0, **kw)


def test_frame_referenced_stream_against_emulator():
    period = 2_000_000  # 2 us frames; 250k frames = 0.5 s = 3 sub-acquisitions
    batches = frame_source(250_000, period)
    want_t, want_c = expected_tags(batches, SUB_PS, SUB_PS + DEAD_PS, frame_period=period)
    with IdqTimeControllerEmulator(batches) as emu:
        with make_driver(emu, frame_period_ps=period) as tc:
            tc.start_stream()
            t, c = collect(tc, want_t.size)
            tc.stop_stream()
        raw = emu.state.raw
        assert [raw[b]["STOP"] for b in (1, 2, 3, 4)] == ["DELA1", "DELA2", "DELA3", "DELA4"]
        assert [emu.state.delays[k]["LINK"] for k in (1, 2, 3, 4)] == ["INPU1", "INPU2", "INPU3", "INPU4"]
        assert all(raw[b]["REF"] == "STAR" for b in raw) and not emu.state.rec["playing"]
    np.testing.assert_array_equal(t, want_t)
    np.testing.assert_array_equal(c, want_c)
    assert bool(np.all(np.diff(t) >= 0))


def test_absolute_mode_with_sync_on_raw1():
    period = 5_000_000
    batches = frame_source(100_000, period, seed=2)
    cmap = {1: 0, 2: 1, 3: 2, 4: 3}
    want_t, want_c = expected_tags(batches, SUB_PS, SUB_PS + DEAD_PS, keep_channels=(0, 1, 2, 3))
    with IdqTimeControllerEmulator(batches) as emu, make_driver(emu, channel_map=cmap) as tc:
        tc.start_stream()
        t, c = collect(tc, want_t.size)
        assert emu.state.raw[1]["STOP"] == "STAR" and emu.state.raw[1]["REF"] == "NONE"
    np.testing.assert_array_equal(t, want_t)
    np.testing.assert_array_equal(c, want_c)


def test_scpi_timeout_then_recovers_and_errors_name_command():
    with IdqTimeControllerEmulator([]) as emu:
        tc = make_driver(emu)
        tc.open()
        emu.scpi.faults.set(silence=1)
        t0 = time.monotonic()
        with pytest.raises(DriverTimeout) as ei:
            tc.set_delay_ps(1, 100)
        assert time.monotonic() - t0 < 3.0
        assert "'DELA1:VALU 100;LINK INPU1'" in str(ei.value) and "ID900@tcp://127.0.0.1" in str(ei.value)
        tc.set_delay_ps(1, 200)  # the REQ socket was reset: the next command works
        assert emu.state.delays[1] == {"VALU": 200, "LINK": "INPU1"}
        emu.scpi.push_error(-222, "Data out of range")
        with pytest.raises(InstrumentError, match="SCPI_ERR_222"):
            tc.set_delay_ps(2, 5)
        emu.scpi.faults.set(garbage=1)
        with pytest.raises(MalformedReply):
            tc.counts()
        emu.scpi.faults.set(delay_s=0.05)
        assert tc.counts().shape == (5,)  # slow but within the timeout
        emu.scpi.faults.clear()
        emu.scpi.faults.set(drop=1)
        with pytest.raises(DriverTimeout):
            tc.set_edge(1, "RISING")
        assert tc.reconnect().model == "ID1000"
        tc.set_edge(1, "FALLING")
        assert emu.state.inputs["INPU1"]["EDGE"] == "FALLING"
        tc.close()


class EndlessFrames:
    """Endless frame source (sync + one click per frame), 0.1 s of frames per call."""

    def __init__(self, period_ps, seed=4):
        self.period, self.rng, self.k0 = period_ps, np.random.default_rng(seed), 0

    def __call__(self):
        k = np.arange(self.k0, self.k0 + 50_000, dtype=np.int64)
        self.k0 += 50_000
        sync = k * self.period
        t = np.concatenate([sync, sync + self.rng.integers(1, self.period, k.size)])
        c = np.concatenate([np.zeros(k.size, np.uint8), self.rng.integers(1, 5, k.size).astype(np.uint8)])
        o = np.argsort(t, kind="stable")
        return t[o], c[o]


def test_stream_garbage_and_disconnect_then_recover():
    period = 2_000_000
    with IdqTimeControllerEmulator(EndlessFrames(period)) as emu:
        tc = make_driver(emu, frame_period_ps=period)
        tc.open()
        emu.garbage_stream(1)
        tc.start_stream()
        deadline = time.monotonic() + 5
        with pytest.raises(MalformedReply) as ei:
            while time.monotonic() < deadline:
                tc.read_tags(timeout_s=0.2)
        assert "<RAW1 stream>" in str(ei.value)
        tc.reconnect()
        tc.start_stream()
        t, _ = collect(tc, 1000)
        assert t.size >= 1000 and bool(np.all(np.diff(t) >= 0))
        emu.drop_streams()
        deadline = time.monotonic() + 5
        with pytest.raises(ConnectionLost, match="disconnected"):
            while time.monotonic() < deadline:
                tc.read_tags(timeout_s=0.2)
        tc.reconnect()
        tc.start_stream()
        t, _ = collect(tc, 1000)
        assert t.size >= 1000
        tc.close()


@pytest.mark.hardware
def test_hardware_id900_identify_and_count(instrument_address):
    addr = instrument_address("id900")
    with IdqTimeController(addr, timeout_s=5.0) as tc:
        assert tc.identity.model.upper().startswith(("ID900", "ID1000"))
        assert tc.counts().shape == (5,)


def test_merge_channels_agrees_with_lexsort_reference_also_for_negative_times():
    from drivers.idq_id900 import merge_channels

    rng = np.random.default_rng(11)
    times = [np.sort(rng.integers(0, 500, n)).astype(np.int64) for n in (40, 0, 77, 13)]
    chans = [1, 2, 3, 4]
    ref_t = np.concatenate(times)
    ref_c = np.concatenate([np.full(x.size, c, np.uint8) for x, c in zip(times, chans)])
    o = np.lexsort((ref_c, ref_t))  # time, then channel for ties
    b = merge_channels(times, chans)
    np.testing.assert_array_equal(b.t_ps, ref_t[o])
    np.testing.assert_array_equal(b.channel, ref_c[o])
    slow = merge_channels([x - 1000 for x in times], chans)  # negative times
    np.testing.assert_array_equal(slow.t_ps, ref_t[o] - 1000)
    np.testing.assert_array_equal(slow.channel, ref_c[o])
    assert len(merge_channels([], [])) == 0


def test_input_delays_shift_tags_in_emulator():
    period = 2_000_000
    batches = frame_source(50_000, period, seed=6)
    want_t, want_c = expected_tags(batches, SUB_PS, SUB_PS + DEAD_PS, keep_channels=(1, 2, 3, 4))
    with IdqTimeControllerEmulator(batches) as emu, make_driver(emu) as tc:
        tc.set_delay_ps(2, 1500)
        tc.start_stream()
        t, c = collect(tc, want_t.size)
    shifted = want_t + np.where(want_c == 2, 1500, 0)
    o = np.lexsort((want_c, shifted))
    np.testing.assert_array_equal(t, shifted[o])
    np.testing.assert_array_equal(c, want_c[o])


def test_emulator_inputs_gate_tags_by_threshold_enable_and_edge():
    """The twin's discriminators: a threshold beyond the pulse amplitude or a disabled input
    times nothing (and counts nothing); the trailing edge adds the pulse width."""
    period = 2_000_000
    batches = frame_source(50_000, period, seed=7)
    want_t, want_c = expected_tags(batches, SUB_PS, SUB_PS + DEAD_PS, keep_channels=(1, 2, 3, 4))
    with IdqTimeControllerEmulator(batches) as emu, make_driver(emu) as tc:
        emu.state.pulse_width_ps["INPU4"] = 3000
        tc.set_threshold_v(2, -1.0)   # beyond the -0.8 V pulses: never crossed
        tc.set_enabled(3, False)
        tc.set_edge(4, "RISING")      # trailing edge of a negative pulse: + pulse width
        tc.set_edge(1, "FALLING")     # leading edge: the source's time
        with pytest.raises(InstrumentError):
            tc._write("INPU1:THRE 5V")  # outside the input's range: refused by the instrument
        keep = ~np.isin(want_c, (2, 3))
        n_want = int(keep.sum())
        tc.start_stream()
        t, c = collect(tc, n_want)
        counts = tc.counts()
    shifted = want_t[keep] + np.where(want_c[keep] == 4, 3000, 0)
    o = np.lexsort((want_c[keep], shifted))
    np.testing.assert_array_equal(t, shifted[o])
    np.testing.assert_array_equal(c, want_c[keep][o])
    assert counts[2] == 0 and counts[3] == 0 and counts[1] > 0 and counts[4] > 0

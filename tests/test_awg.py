"""Keysight 33500B/33600A AWG driver: frame encoding, exact SCPI bytes, emulated twin, faults."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from drivers.errors import (
    ConnectionLost,
    DriverError,
    DriverTimeout,
    DriverValueError,
    InstrumentError,
    MalformedReply,
    NotConnected,
    WrongModel,
)
from drivers.interfaces import PatternGenerator
from drivers.keysight_awg import (
    DAC_MAX,
    FrameEncoding,
    Keysight33500,
    definite_length_block,
    mzm_level_v,
    parse_definite_length_block,
)
from drivers.testing import FakeStreamTransport
from hil.emulated.awg import EmulatedAwg

IDN = b"Agilent Technologies,33522B,MY123,4.00\n"
OPEN = [
    (b"*IDN?\n", IDN),
    (b"SYST:ERR?\n", b'+0,"No error"\n'),
    (b"OUTP1:LOAD 50\n", None),
    (b"SYST:ERR?\n", b'+0,"No error"\n'),
    (b"OUTP2:LOAD 50\n", None),
    (b"SYST:ERR?\n", b'+0,"No error"\n'),
]
OK = b'+0,"No error"\n'


def _pattern(n, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 2, n, dtype=np.uint8),
        rng.integers(0, 2, n, dtype=np.uint8),
        rng.integers(0, 3, n, dtype=np.uint8),
    )


# -- IEEE 488.2 blocks and the encoding ------------------------------------------------------------
def test_definite_length_block_format_and_parse():
    assert definite_length_block(b"abc") == b"#13abc"
    payload = bytes(range(256)) * 4  # contains b"\n" and b"#"
    blk = definite_length_block(payload)
    assert blk[:6] == b"#41024"
    assert parse_definite_length_block(blk + b"tail") == (payload, len(blk))
    assert parse_definite_length_block(blk[:-1]) is None  # incomplete
    with pytest.raises(MalformedReply):
        parse_definite_length_block(b"#0abc")
    with pytest.raises(MalformedReply):
        parse_definite_length_block(b"x12")


def test_encoding_round_trip_every_symbol_and_random():
    enc = FrameEncoding()
    # all 12 (basis, bit, intensity) combinations, then a long random frame
    b, k, i = (
        np.array(x, dtype=np.uint8)
        for x in zip(*[(b, k, i) for b in (0, 1) for k in (0, 1) for i in (0, 1, 2)], strict=True)
    )
    w1, w2 = enc.encode(b, k, i)
    assert w1.dtype == np.int16 and w1.size == b.size * enc.samples_per_slot
    for got, want in zip(enc.decode(w1, w2), (b, k, i), strict=True):
        np.testing.assert_array_equal(got, want)
    b, k, i = _pattern(100_000, seed=3)
    for got, want in zip(enc.decode(*enc.encode(b, k, i)), (b, k, i), strict=True):
        np.testing.assert_array_equal(got, want)


def test_encoding_levels_are_the_documented_voltages():
    enc = FrameEncoding()
    (a1, o1), (a2, o2) = enc.scales()
    w1, w2 = enc.encode(
        np.array([0, 0, 1, 1], np.uint8), np.array([0, 1, 0, 1], np.uint8), np.array([0, 1, 2, 0], np.uint8)
    )
    v1 = enc.dac_to_volts(w1, a1, o1).reshape(4, 4)
    v2 = enc.dac_to_volts(w2, a2, o2).reshape(4, 4)
    # channel 1: pulse (2 samples) at signal/decoy/vacuum level, then back to extinction (4.0 V)
    np.testing.assert_allclose(v1[:, :2], [[0.0, 0.0], [2.819, 2.819], [4.0, 4.0], [0.0, 0.0]], atol=1e-3)
    np.testing.assert_allclose(v1[:, 2:], 4.0, atol=1e-3)
    # channel 2: H 0 V, V 3 V, D 1.5 V, A 4.5 V held for the whole slot
    np.testing.assert_allclose(v2, np.repeat([[0.0], [3.0], [1.5], [4.5]], 4, axis=1), atol=1e-3)
    assert abs(w1).max() == DAC_MAX and abs(w2).max() == DAC_MAX  # full DAC range used
    # decoy level is the MZM voltage for transmission mu2/mu1 = 0.2 at V_pi = 4 V
    assert mzm_level_v(0.2, 4.0) == pytest.approx(2.819, abs=1e-3)


def test_decode_rejects_a_corrupted_sample_naming_the_slot():
    enc = FrameEncoding()
    w1, w2 = enc.encode(*_pattern(50))
    w1 = w1.copy()
    w1[4 * 17 + 3] = 0  # an inter-pulse sample of slot 17 no longer at extinction
    with pytest.raises(ValueError, match="slot 17"):
        enc.decode(w1, w2)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(basis=np.array([0, 2], np.uint8)), r"basis\[1\]=2"),
        (dict(intensity=np.array([3, 0], np.uint8)), r"intensity\[0\]=3"),
        (dict(bit=np.array([0, 1], np.int64)), "uint8"),
        (dict(bit=np.array([0], np.uint8)), "1 slots"),
    ],
)
def test_encode_validates_pattern(bad, match):
    args = dict(basis=np.zeros(2, np.uint8), bit=np.zeros(2, np.uint8), intensity=np.zeros(2, np.uint8))
    args.update(bad)
    with pytest.raises(DriverValueError, match=match):
        FrameEncoding().encode(args["basis"], args["bit"], args["intensity"])


def test_encoding_refuses_levels_beyond_the_modulator_limit():
    with pytest.raises(DriverValueError, match="max_drive_v"):
        FrameEncoding(intensity_levels_v=(0.0, 3.0, 6.0))
    with pytest.raises(DriverValueError, match="distinct"):
        FrameEncoding(polarization_levels_v=(0.0, 1.0, 1.0, 2.0))


# -- exact bytes on the wire --------------------------------------------------------------------------------
def test_protocol_open_and_settings():
    s = FakeStreamTransport(
        OPEN
        + [
            (b"OUTP2 ON\n", None),
            (b"SYST:ERR?\n", OK),
            (b"SOUR1:VOLT 2.5\n", None),
            (b"SYST:ERR?\n", OK),
            (b"SOUR1:FUNC:ARB:SRAT 10000000\n", None),
            (b"SYST:ERR?\n", OK),
            (b"OUTP1?\n", b"0\n"),
        ]
    )
    awg = Keysight33500(s)
    ident = awg.open()
    assert (ident.model, awg.n_channels, awg.max_points) == ("33522B", 2, 1_048_576)
    awg.set_output(2, True)
    awg.set_amplitude_vpp(1, 2.5)
    awg.set_sample_rate_hz(10e6, channel=1)
    assert awg.output_enabled(1) is False
    s.assert_done()


def test_open_tells_the_instrument_the_load_and_limits_follow_it():
    # Keysight 33500 Series user guide, "Output Termination": fixed 50 ohm series output; the
    # levels are volts at the OUTPut:LOAD setting (default 50, kept from the front panel), and a
    # 50 ohm setting into an open circuit doubles them. So the driver must send its load_ohm.
    ok = b'+0,"No error"\n'
    s = FakeStreamTransport(
        [(b"*IDN?\n", b"Keysight Technologies,33611A,MY1,A.03\n"), (b"SYST:ERR?\n", ok),
         (b"OUTP1:LOAD INF\n", None), (b"SYST:ERR?\n", ok),
         (b"SOUR1:VOLT 18\n", None), (b"SYST:ERR?\n", ok)]
    )
    with Keysight33500(s, load_ohm=math.inf) as awg:  # single channel, high impedance: 20 Vpp
        awg.set_amplitude_vpp(1, 18.0)
    s.assert_done()
    s = FakeStreamTransport(
        [(b"*IDN?\n", b"Keysight Technologies,33611A,MY1,A.03\n"), (b"SYST:ERR?\n", ok),
         (b"OUTP1:LOAD 25\n", None), (b"SYST:ERR?\n", ok)]
    )
    with Keysight33500(s, load_ohm=25) as awg:  # 10 V * 25 / 75 = 3.33 V, not the 50 ohm 5 V
        with pytest.raises(DriverValueError, match="offset_v"):
            awg.set_offset_v(1, 4.0)
    s.assert_done()
    with EmulatedAwg() as emu:
        with Keysight33500(emu.address, load_ohm=math.inf) as awg:
            awg.set_levels(1, 16.0, 1.5)  # refused by a twin still at 50 ohm
        c = emu.channels[1]
        assert (c.load_ohm, c.vpp, c.offset_v) == (math.inf, 16.0, 1.5)


def test_33600_needs_32_points_before_the_wire():
    # Keysight 33500/33600 web help, "Waveform Generation Tutorial": arbitrary waveforms have
    # "a minimum of 8 points (33500 Series) or 32 points (33600 Series)"
    ok = b'+0,"No error"\n'
    s = FakeStreamTransport(
        [(b"*IDN?\n", b"Keysight Technologies,33611A,MY1,A.03\n"), (b"SYST:ERR?\n", ok),
         (b"OUTP1:LOAD 50\n", None), (b"SYST:ERR?\n", ok)]
    )
    with Keysight33500(s) as awg:
        with pytest.raises(DriverValueError, match="32..4194304"):
            awg.upload_dac(1, np.zeros(16, np.int16), name="W")
    s.assert_done()
    with EmulatedAwg(model="33622A") as emu:
        with Keysight33500(emu.address) as awg:
            awg.min_points = 8  # bypass the driver's check: the twin refuses as the instrument does
            with pytest.raises(InstrumentError, match="16 points"):
                awg.upload_dac(1, np.zeros(16, np.int16), name="W")


def test_protocol_upload_is_a_little_endian_definite_length_block():
    codes = np.array([0, 1, -1, DAC_MAX, -DAC_MAX, 10, 0x0A0A, 35], dtype=np.int16)  # 0x0A0A has '\n' bytes
    payload = struct.pack("<8h", *codes.tolist())
    s = FakeStreamTransport(
        OPEN
        + [
            (b"SOUR2:DATA:VOL:CLE\n", None),
            (b"SYST:ERR?\n", OK),
            (b"FORM:BORD SWAP\n", None),
            (b"SYST:ERR?\n", OK),
            (b"SOUR2:DATA:ARB:DAC QKD_PM,#216" + payload + b"\n", None),
            (b"*OPC?\n", b"1\n"),
            (b"SYST:ERR?\n", OK),
            (b"SOUR2:FUNC:ARB QKD_PM\n", None),
            (b"SYST:ERR?\n", OK),
            (b"SOUR2:FUNC ARB\n", None),
            (b"SYST:ERR?\n", OK),
        ]
    )
    with Keysight33500(s) as awg:
        awg.upload_dac(2, codes, name="QKD_PM")
    s.assert_done()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda a: a.set_amplitude_vpp(1, 10.5), "amplitude_vpp=10.5"),
        (lambda a: a.set_offset_v(2, -5.5), "offset_v"),
        (lambda a: a.set_levels(1, 8.0, 2.0), "exceeds"),
        (lambda a: a.set_output(3, True), "channel=3"),
        (lambda a: a.set_sample_rate_hz(300e6), "sample_rate_hz"),
        (lambda a: a.upload_dac(1, np.zeros(7, np.int16), name="W"), "8..1048576"),
        (lambda a: a.upload_dac(1, np.full(8, -32768, np.int16), name="W"), "-32767"),
        (lambda a: a.upload_dac(1, np.zeros(8, np.int16), name="1bad"), "name"),
        (lambda a: a.upload_waveform(1, np.array([0.0] * 7 + [1.5]), name="W"), r"samples\[7\]"),
        (lambda a: a.load_frame_pattern(*_pattern(300_000), slot_rate_hz=1e6), "exceed the AWG memory"),
        (lambda a: a.load_frame_pattern(*_pattern(100), slot_rate_hz=1e9), "slot_rate_hz"),
    ],
)
def test_validation_raises_before_anything_is_sent(call, match):
    s = FakeStreamTransport(OPEN)  # nothing after identification may be sent
    with Keysight33500(s) as awg:
        with pytest.raises(DriverValueError, match=match) as ei:
            call(awg)
        assert ei.value.instrument and "Keysight33500" in ei.value.instrument
    s.assert_done()


def test_wrong_model_refused_and_transport_closed():
    s = FakeStreamTransport([(b"*IDN?\n", b"Keysight Technologies,34465A,MY1,A.03\n")])
    awg = Keysight33500(s)
    with pytest.raises(WrongModel, match="34465A"):
        awg.open()
    assert not awg.is_open
    with pytest.raises(NotConnected):
        awg.set_output(1, True)


# -- the emulated twin over real sockets ---------------------------------------------------------------------
def test_load_frame_pattern_reaches_the_emulator_decoded():
    b, k, i = _pattern(200_000, seed=11)
    with EmulatedAwg() as emu:
        seen = []
        emu.on_pattern(lambda *p: seen.append(p))
        with Keysight33500(emu.address) as awg:
            assert isinstance(awg, PatternGenerator)
            awg.load_frame_pattern(b, k, i, slot_rate_hz=25e6)
            assert awg.output_enabled(1) and awg.output_enabled(2)
            assert awg.sample_rate_hz(2) == pytest.approx(100e6)
        assert emu.decode_error is None
        assert len(seen) == 1
        gb, gk, gi, rate = seen[0]
        np.testing.assert_array_equal(gb, b)
        np.testing.assert_array_equal(gk, k)
        np.testing.assert_array_equal(gi, i)
        assert rate == pytest.approx(25e6)
        # the modulator voltages the model sees are the documented levels
        assert emu.channel_volts(2)[:4] == pytest.approx(
            [(0.0, 3.0, 1.5, 4.5)[2 * b[0] + k[0]]] * 4, abs=1e-3
        )


def test_emulator_over_a_visa_socket_resource():
    b, k, i = _pattern(64, seed=2)
    with EmulatedAwg() as emu:
        with Keysight33500(f"TCPIP0::127.0.0.1::{emu.port}::SOCKET") as awg:
            awg.load_frame_pattern(b, k, i, slot_rate_hz=1e6)
        pb, pk, pi_, _ = emu.current_pattern()
        np.testing.assert_array_equal(pi_, i)


def test_instrument_error_names_instrument_and_command_then_recovers():
    with EmulatedAwg() as emu:
        with Keysight33500(emu.address) as awg:
            emu.push_error(-221, "Settings conflict")
            with pytest.raises(InstrumentError, match="Settings conflict") as ei:
                awg.set_amplitude_vpp(1, 1.0)
            assert ei.value.code == -221 and ei.value.command == "SOUR1:VOLT 1"
            assert ei.value.instrument == f"Keysight33500@{emu.address}"
            awg.set_amplitude_vpp(1, 1.0)  # queue drained, next command fine


def test_timeout_garbage_and_disconnect_then_reconnect():
    with EmulatedAwg() as emu:
        awg = Keysight33500(emu.address, timeout_s=0.3)
        awg.open()
        emu.faults.set(silence=1)
        with pytest.raises(DriverTimeout) as ei:
            awg.output_enabled(1)
        assert ei.value.command == "OUTP1?"
        awg.reconnect()
        emu.faults.set(garbage=1)
        with pytest.raises(MalformedReply) as ei:
            awg.output_enabled(1)
        assert ei.value.command == "OUTP1?"
        awg.reconnect()
        emu.faults.set(drop=1)
        with pytest.raises(ConnectionLost) as ei:
            awg.sample_rate_hz(1)
        assert isinstance(ei.value, DriverError) and ei.value.command == "SOUR1:FUNC:ARB:SRAT?"
        awg.reconnect()
        awg.set_output(1, True)
        assert awg.output_enabled(1)
        awg.close()
        awg.close()  # idempotent


def test_emulator_refuses_what_the_instrument_refuses():
    with EmulatedAwg() as emu:
        with Keysight33500(emu.address) as awg:
            awg._write("SOUR1:VOLT 12")  # bypass validation to reach the instrument
            assert awg.error_queue()[0][0] == -221
            awg._write("BOGUS:CMD 1")
            assert awg.error_queue() == [(-113, "Undefined header")]


@pytest.mark.hardware
def test_real_awg_identifies(instrument_address):
    with Keysight33500(instrument_address("awg")) as awg:
        assert awg.n_channels in (1, 2)
        assert awg.error_queue() == []


def test_slow_replies_within_and_beyond_the_timeout():
    with EmulatedAwg() as emu:
        with Keysight33500(emu.address, timeout_s=0.4) as awg:
            emu.faults.set(delay_s=0.1)
            assert awg.output_enabled(1) is False  # slow but inside the deadline
            emu.faults.set(delay_s=0.8)
            with pytest.raises(DriverTimeout) as ei:
                awg.output_enabled(2)
            assert ei.value.command == "OUTP2?"
            emu.faults.clear()
            awg.reconnect()  # the late reply must not be read as the answer to a later query
            assert awg.sample_rate_hz(1) == pytest.approx(40e3)

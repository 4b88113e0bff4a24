"""EPC-400 (serial text) and MPC320 (APT binary) drivers: exact bytes, pty twins, validation, faults."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from drivers.errors import (
    ConnectionLost,
    DriverTimeout,
    DriverValueError,
    InstrumentError,
    MalformedReply,
    WrongModel,
)
from drivers.interfaces import PolarizationController
from drivers.oz_epc400 import OzEpc400
from drivers.testing import FakeStreamTransport
from drivers.thorlabs_mpc320 import MSG, ThorlabsMpc320, apt_long, apt_short
from hil.emulated.epc400 import EmulatedEpc400
from hil.emulated.mpc320 import EmulatedMpc320, split_apt

EPC_OPEN = [
    (b"VER?\r\n", b"Version: EPC OEM Driver V2.10\r\nDone\r\n"),
    (b"SN?\r\n", b"Serial Number: 1234\r\nDone\r\n"),
    (b"MDC\r\n", b"Done\r\n"),
]


# -- EPC-400 --------------------------------------------------------------------------------------------
def test_epc400_protocol_exact_bytes():
    s = FakeStreamTransport(
        EPC_OPEN
        + [
            (b"V1,100\r\n", b"Done\r\n"),
            (b"V2,-2000\r\n", b"Done\r\n"),
            (b"V3,5000\r\n", b"Done\r\n"),
            (b"V4,0\r\n", b"Done\r\n"),
            (b"V?\r\n", b"CH1 100\r\nCH2 -2000\r\nCH3 5000\r\nCH4 0\r\nDone\r\n"),
        ]
    )
    with OzEpc400(s) as d:
        assert (d.identity.model, d.identity.serial) == ("EPC-400", "1234")
        d.set_actuators([100, -2000, 5000, 0])
        np.testing.assert_array_equal(d.get_actuators(), [100, -2000, 5000, 0])
    s.assert_done()


def test_epc400_ramp_steps():
    s = FakeStreamTransport(
        EPC_OPEN
        + [
            (b"V?\r\n", b"CH1 0\r\nCH2 0\r\nCH3 0\r\nCH4 0\r\nDone\r\n"),
            (b"V1,700\r\n", b"Done\r\n"),
            (b"V1,1400\r\n", b"Done\r\n"),
            (b"V1,2100\r\n", b"Done\r\n"),
        ]
    )
    with OzEpc400(s, max_step_mv=1000) as d:
        d.set_voltage_mv(1, 2100)
    s.assert_done()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda d: d.set_actuators([0, 0, 0, 5001]), r"voltage_mv\[ch4\]=5001"),
        (lambda d: d.set_actuators([0, 0, 0]), "need 4 voltages"),
        (lambda d: d.set_voltage_mv(5, 0), "channel=5"),
        (lambda d: d.set_voltage_mv(1, float("inf")), "voltage_mv"),
    ],
)
def test_epc400_validation_before_the_wire(call, match):
    s = FakeStreamTransport(EPC_OPEN)
    with OzEpc400(s) as d:
        with pytest.raises(DriverValueError, match=match):
            call(d)
    s.assert_done()


def test_epc400_refusal_ends_with_error_bang_not_done():
    # pylablib OZOptics.EPC04: a refused command's reply ends with "Error!" in place of "Done";
    # the driver must stop there (InstrumentError at once), not wait for a "Done" that never comes
    s = FakeStreamTransport(
        EPC_OPEN
        + [(b"V1,100\r\n", b"Error!\r\n"), (b"V?\r\n", b"CH1 0\r\nCH2 0\r\nCH3 0\r\nCH4 0\r\nDone\r\n")]
    )
    with OzEpc400(s, timeout_s=5.0) as d:
        with pytest.raises(InstrumentError, match="Error!") as ei:
            d.set_voltage_mv(1, 100)
        assert ei.value.command == "V1,100"
        np.testing.assert_array_equal(d.get_actuators(), [0, 0, 0, 0])  # the next exchange is in step
    s.assert_done()


def test_epc400_voltages_in_the_controllers_one_line_form():
    # QMI OzOptics_EpcDriver: V? answers one line "Voltage(mV): CH1 +2200 CH2 +5000 ..."
    line = b"Voltage(mV): CH1 +2200 CH2 +5000 CH3 -1000 CH4 -4000\r\nDone\r\n"
    s = FakeStreamTransport(EPC_OPEN + [(b"V?\r\n", line)])
    with OzEpc400(s) as d:
        np.testing.assert_array_equal(d.get_actuators(), [2200, 5000, -1000, -4000])
    s.assert_done()
    emu = EmulatedEpc400()  # the twin answers in the same form (not started: no pty needed)
    emu.voltages_mv[:] = [2200, 5000, -1000, -4000]
    assert emu.handle_line("V?") == "Voltage(mV): CH1 +2200 CH2 +5000 CH3 -1000 CH4 -4000\r\nDone"


def test_epc400_wrong_device_refused():
    s = FakeStreamTransport([(b"VER?\r\n", b"Version: PSC Controller 1.0\r\nDone\r\n")])
    with pytest.raises(WrongModel, match="not an EPC"):
        OzEpc400(s).open()


def test_epc400_emulator_over_pty_with_model_hook():
    with EmulatedEpc400() as emu:
        seen = []
        emu.on_change(seen.append)
        with OzEpc400(emu.port) as d:
            assert isinstance(d, PolarizationController)
            assert d.actuator_unit == "mV" and d.n_actuators == 4
            d.set_actuators([1200, -300, 0, 4999])
            np.testing.assert_array_equal(d.get_actuators(), [1200, -300, 0, 4999])
            assert "DC" in d.status()["mode"]
        np.testing.assert_array_equal(seen[-1], [1200, -300, 0, 4999])


def test_epc400_faults_and_recovery_on_pty():
    with EmulatedEpc400() as emu:
        d = OzEpc400(emu.port, timeout_s=0.3)
        d.open()
        with pytest.raises(InstrumentError, match="Error!") as ei:
            d._command("V1,9000")  # bypass validation: the controller refuses
        assert ei.value.command == "V1,9000" and ei.value.instrument.startswith("EPC-400@")
        emu.faults.set(silence=1)
        with pytest.raises(DriverTimeout) as ei:
            d.get_actuators()
        assert ei.value.command == "V?"
        d.reconnect()
        emu.faults.set(garbage=1)
        with pytest.raises(MalformedReply):
            d.get_actuators()
        d.reconnect()
        d.set_voltage_mv(2, 250)
        assert d.get_actuators()[1] == 250
        d.close()


# -- MPC320 / APT ---------------------------------------------------------------------
def _info(model=b"MPC320\0\0", serial=38000042):
    data = struct.pack(
        "<I8sH4s48s12sHHH", serial, model, 16, bytes([2, 0, 1, 0]), b"\0" * 48, b"\0" * 12, 1, 0, 3
    )
    return apt_long(MSG["HW_GET_INFO"], data, dest=0x01, source=0x50)


def _pol(vel=50):
    return apt_long(
        MSG["POL_GET_PARAMS"], struct.pack("<6H", 0, vel, 0, 200, 200, 200), dest=0x01, source=0x50
    )


MPC_OPEN = [
    (b"\x05\x00\x00\x00\x50\x01", _info()),  # MGMSG_HW_REQ_INFO
    (b"\x18\x00\x00\x00\x50\x01", None),  # MGMSG_HW_NO_FLASH_PROGRAMMING
    (b"\x10\x02\x07\x01\x50\x01", None),  # MGMSG_MOD_SET_CHANENABLESTATE(1|2|4, enable)
    (b"\x31\x05\x00\x00\x50\x01", _pol()),  # MGMSG_POL_REQ_PARAMS
]


def test_mpc320_protocol_exact_frames():
    done = apt_long(
        MSG["MOT_MOVE_COMPLETED"], struct.pack("<HiHhI", 0x02, 685, 0, 0, 0), dest=0x01, source=0x50
    )
    status = apt_long(
        MSG["MOT_GET_USTATUSUPDATE"], struct.pack("<HiHhI", 0x04, 1370, 0, 0, 0), dest=0x01, source=0x50
    )
    s = FakeStreamTransport(
        MPC_OPEN
        + [
            # MOVE_ABSOLUTE: id 0x0453, 6 data bytes, dest 0x50|0x80, chan 2, 685 counts (85 deg)
            (b"\x53\x04\x06\x00\xd0\x01" + b"\x02\x00" + struct.pack("<i", 685), done),
            (b"\x90\x04\x04\x00\x50\x01", status),  # MGMSG_MOT_REQ_USTATUSUPDATE(chan 4)
        ]
    )
    with ThorlabsMpc320(s) as d:
        assert (d.identity.model, d.identity.serial, d.identity.firmware) == ("MPC320", "38000042", "1.0.2")
        assert d.move_to_deg(2, 85.0) == pytest.approx(85.0)
        assert d.position_deg(3) == pytest.approx(170.0)
    s.assert_done()


def test_mpc320_header_only_move_completed_then_reads_position():
    # pnpq AptMessage_MGMSG_MOT_MOVE_COMPLETED_6_BYTES: the MPC320 answers MOVE_ABSOLUTE with a
    # header-only MOVE_COMPLETED (64 04 <chan> 00 01 50); the driver then asks where the paddle is
    status = apt_long(
        MSG["MOT_GET_USTATUSUPDATE"], struct.pack("<HiHhI", 0x01, 160, 0, 0, 0), dest=0x01, source=0x50
    )
    s = FakeStreamTransport(
        MPC_OPEN
        + [
            (b"\x53\x04\x06\x00\xd0\x01" + b"\x01\x00" + struct.pack("<i", 161), b"\x64\x04\x01\x00\x01\x50"),
            (b"\x90\x04\x01\x00\x50\x01", status),  # MGMSG_MOT_REQ_USTATUSUPDATE(chan 1)
        ]
    )
    with ThorlabsMpc320(s) as d:
        assert d.move_to_deg(1, 20.0) == pytest.approx(160 * 170 / 1370)  # reached, not commanded
    s.assert_done()
    emu = EmulatedMpc320(time_scale=0.0)  # the twin sends the same frame (not started)
    assert emu.handle_line(apt_long(MSG["MOT_MOVE_ABSOLUTE"], struct.pack("<Hi", 0x02, 685))) == (
        b"\x64\x04\x02\x00\x01\x50"
    )


def test_mpc320_frame_helpers_and_splitter():
    assert apt_short(0x0005) == b"\x05\x00\x00\x00\x50\x01"
    frame = apt_long(0x0530, bytes(12))
    assert frame[:6] == b"\x30\x05\x0c\x00\xd0\x01" and len(frame) == 18
    buf = bytearray(apt_short(0x0005) + frame + frame[:7])
    assert split_apt(buf) == [apt_short(0x0005), frame] and bytes(buf) == frame[:7]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda d: d.set_actuators([0, 171, 0]), r"angle_deg\[paddle 2\]=171"),
        (lambda d: d.move_to_deg(4, 10), "paddle=4"),
        (lambda d: d.set_velocity_percent(5), "velocity_percent=5"),
        (lambda d: d.set_actuators([1, 2]), "need 3 angles"),
    ],
)
def test_mpc320_validation_before_the_wire(call, match):
    s = FakeStreamTransport(MPC_OPEN)
    with ThorlabsMpc320(s) as d:
        with pytest.raises(DriverValueError, match=match):
            call(d)
    s.assert_done()


def test_mpc320_wrong_model():
    s = FakeStreamTransport([(b"\x05\x00\x00\x00\x50\x01", _info(model=b"KDC101\0\0"))])
    with pytest.raises(WrongModel, match="KDC101"):
        ThorlabsMpc320(s).open()


def test_mpc320_emulator_over_pty_moves_and_hooks():
    with EmulatedMpc320() as emu:
        seen = []
        emu.on_change(seen.append)
        with ThorlabsMpc320(emu.port, velocity_percent=80) as d:
            assert isinstance(d, PolarizationController)
            assert d.actuator_range == (0.0, 170.0)
            d.set_actuators([10.0, 85.0, 170.0])
            np.testing.assert_allclose(d.get_actuators(), [10.0, 85.0, 170.0], atol=170 / 1370)
            assert emu.velocity_percent == 80
            d.home(2)
            assert d.position_deg(2) == 0.0
        np.testing.assert_allclose(seen[-1], [10.0, 0.0, 170.0], atol=170 / 1370)


def test_mpc320_error_frame_timeout_garbage_recover():
    with EmulatedMpc320() as emu:
        d = ThorlabsMpc320(emu.port, timeout_s=0.3)
        d.open()
        emu.push_apt_error(42, "motor stalled")
        with pytest.raises(InstrumentError, match="motor stalled") as ei:
            d.move_to_deg(1, 20)
        assert ei.value.code == 42 and "MOVE_ABSOLUTE" in ei.value.command
        emu.faults.set(silence=1)
        with pytest.raises(DriverTimeout) as ei:
            d.position_deg(1)
        assert "REQ_USTATUSUPDATE" in ei.value.command
        d.reconnect()
        emu.faults.set(garbage=1)
        with pytest.raises((MalformedReply, DriverTimeout)):
            d.position_deg(1)
        d.reconnect()
        assert d.move_to_deg(1, 20) == pytest.approx(20, abs=0.2)
        d.close()


def test_mpc320_skips_unsolicited_and_unknown_frames_but_refuses_malformed_bytes():
    """A real APT controller sends frames nobody asked for: the start-up notice
    HW_YES_FLASH_PROGRAMMING, status updates every 100 ms after HW_START_UPDATEMSGS, ids of
    newer firmware. Well formed (to the host, from the device, <= 255 data bytes), they are
    read whole and skipped; bytes that are not an APT frame to us are refused (the stream is
    out of step), and the driver works again after a reconnect."""
    unsolicited = [
        apt_short(MSG["HW_YES_FLASH_PROGRAMMING"], dest=0x01, source=0x50),
        apt_long(MSG["MOT_GET_STATUSUPDATE"], struct.pack("<HiiI", 0x01, 0, 0, 0), dest=0x01, source=0x50),
        apt_short(0x0999, 1, 2, dest=0x01, source=0x50),                       # an id we do not know
        apt_long(0x0A5A, bytes(range(40)), dest=0x01, source=0x50),            # and one with data
    ]
    with EmulatedMpc320() as emu:
        d = ThorlabsMpc320(emu.port, timeout_s=0.5)
        d.open()
        emu.send_raw(b"".join(unsolicited))
        assert d.move_to_deg(2, 85.0) == pytest.approx(85.0, abs=0.2)
        emu.send_raw(unsolicited[1] + unsolicited[3])
        assert d.position_deg(2) == pytest.approx(85.0, abs=0.2)
        assert d.skipped_frames == 6
        for bad in (apt_short(0x0999, dest=0x33, source=0x50),                 # not to the host
                    apt_short(MSG["MOT_MOVE_COMPLETED"], dest=0x01, source=0x77),   # from nobody
                    struct.pack("<HHBB", 0x0A5A, 300, 0x81, 0x50)):             # 300 data bytes
            emu.send_raw(bad)
            with pytest.raises(MalformedReply, match="malformed APT frame"):
                d.position_deg(1)
            d.reconnect()
            assert d.position_deg(2) == pytest.approx(85.0, abs=0.2)
        d.close()


def test_serial_port_that_vanishes_raises_connection_lost():
    emu = EmulatedEpc400().start()
    d = OzEpc400(emu.port, timeout_s=0.3)
    d.open()
    emu.stop()
    with pytest.raises((ConnectionLost, DriverTimeout)):
        d.get_actuators()
    d.close()


@pytest.mark.hardware
def test_real_epc400_reads_voltages(instrument_address):
    with OzEpc400(instrument_address("epc400")) as d:
        assert d.get_actuators().shape == (4,)


@pytest.mark.hardware
def test_real_mpc320_reads_angles(instrument_address):
    with ThorlabsMpc320(instrument_address("mpc320")) as d:
        a = d.get_actuators()
        assert a.shape == (3,) and (a >= -1).all() and (a <= 171).all()

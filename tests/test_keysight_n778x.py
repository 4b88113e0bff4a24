"""Keysight N778xC polarization stabilizer driver: exact bytes, validation, its twin over TCP, faults."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.errors import DriverTimeout, DriverValueError, InstrumentError, MalformedReply, WrongModel
from drivers.keysight_n778x import KeysightN778x
from drivers.testing import FakeStreamTransport
from hil.emulated.n778x import EmulatedN778x

OK = b'0,"No error"\n'
OPEN = [(b"*IDN?\n", b"Keysight Technologies,N7786C,DE123,1.2.3\n"), (b":SYST:ERR?\n", OK)]


def test_protocol_target_stabilize_and_readback():
    s = FakeStreamTransport(OPEN + [
        (b":STAB:SOP 0.000000,0.600000,0.800000\n", None), (b":SYST:ERR?\n", OK),
        (b":STAB:STAB 1\n", None), (b":SYST:ERR?\n", OK),
        (b":STAB:SOP?\n", b"1.000000,0.000000,0.600000,0.800000\n"),
    ])
    with KeysightN778x(s) as pc:
        assert pc.has_polarimeter
        pc.set_target_sop((0, 3, 4))  # normalized before sending
        pc.set_stabilizing(True)
        np.testing.assert_allclose(pc.target_sop(), [1, 0, 0.6, 0.8])
    s.assert_done()


def test_protocol_n7785c_feedback_steps_and_refusals():
    s = FakeStreamTransport([(b"*IDN?\n", b"Keysight Technologies,N7785C,DE9,1.0\n"), (b":SYST:ERR?\n", OK),
                             (b":STAB:SOP 0,0,0,1.234\n", None), (b":SYST:ERR?\n", OK),
                             (b"TRIG 1\n", None), (b":SYST:ERR?\n", OK)])
    with KeysightN778x(s) as pc:
        pc.feedback_step(1.234)
        for bad in (0, -1, float("nan")):
            with pytest.raises(DriverValueError, match="positive real"):
                pc.feedback_step(bad)
        with pytest.raises(DriverValueError, match="no polarimeter"):
            pc.set_target_sop((1, 0, 0))
        for bad in ((0, 0, 0), (1, 2), (1, float("inf"), 0)):
            with pytest.raises(DriverValueError):
                pc.set_target_sop(bad)
    s.assert_done()  # nothing invalid reached the wire


def test_protocol_malformed_readback_and_wrong_model():
    s = FakeStreamTransport(OPEN + [(b":STAB:SOP?\n", b"1.0,0.5\n")])
    with KeysightN778x(s) as pc, pytest.raises(MalformedReply, match="4-element"):
        pc.target_sop()
    s2 = FakeStreamTransport([(b"*IDN?\n", b"Keysight Technologies,N7781C,DE1,1.0\n")])  # polarimeter only
    with pytest.raises(WrongModel):
        KeysightN778x(s2).open()


@pytest.mark.parametrize("model", ["N7786C", "N7788C"])
def test_against_twin_over_tcp(model):
    with EmulatedN778x(model=model) as emu:
        seen = []
        emu.on_target(lambda t, on: seen.append((t, on)))
        with KeysightN778x(emu.address) as pc:
            assert pc.identity.model == model
            pc.set_target_sop((0.0, -1.0, 1.0))
            pc.set_stabilizing(True)
            np.testing.assert_allclose(pc.target_sop(), [1, 0, -2 ** -0.5, 2 ** -0.5], atol=1e-6)
            assert emu.stabilizing and seen[-1][1] is True
            emu.push_error(-350, "Queue overflow")  # an instrument-reported error on the next setting
            with pytest.raises(InstrumentError, match="-350") as ei:
                pc.set_stabilizing(False)
            assert ei.value.command == ":STAB:STAB 0"


def test_twin_faults_timeout_then_recovers():
    with EmulatedN778x(model="N7785C") as emu, KeysightN778x(emu.address, timeout_s=0.3) as pc:
        pc.feedback_step(2.5)
        assert emu.feedback == [2.5] and emu.triggers == 1
        emu.faults.set(silence=1)
        with pytest.raises(DriverTimeout):
            pc.target_sop()
        pc.close()
        pc.open()  # reconnect after the fault
        assert pc.target_sop().shape == (4,)


def test_lab_file_entry_builds_the_driver_and_devices_check_identifies_it(tmp_path):
    from drivers.config import load_lab

    with EmulatedN778x(model="N7788C") as emu:
        lab = tmp_path / "lab.toml"
        lab.write_text(f'[bob.stabilizer]\ndriver = "keysight_n778x"\nresource = "{emu.address}"\n')
        spec = load_lab(lab)
        inst = spec.build("bob", "stabilizer")
        with inst:
            assert isinstance(inst, KeysightN778x) and inst.identity.model == "N7788C"
        found = spec.find("bob", "polarization_stabilizer")
        assert [i.device_class for i in found] == ["polarization_stabilizer"]

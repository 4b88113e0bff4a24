"""ID120 APD and Single Quantum SNSPD drivers: exact bytes, ramps, validation, emulated twins, faults."""

from __future__ import annotations

import json

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
from drivers.idq_id120 import IdqId120
from drivers.interfaces import PhotonDetector
from drivers.single_quantum import SingleQuantumSnspd
from drivers.testing import FakeStreamTransport
from hil.emulated.id120 import EmulatedId120
from hil.emulated.snspd import EmulatedSnspd

OK = b'0,"No error"\n'
ID120_OPEN = [(b"*IDN?\n", b"ID Quantique,ID120,SN42,2.1\n"), (b"SYST:ERR?\n", OK)]


# -- ID120: exact bytes -------------------------------------------------------------------------------
def test_id120_protocol_settings_and_readings():
    s = FakeStreamTransport(
        ID120_OPEN
        + [
            (b"DET:THR 120.0\n", None),
            (b"SYST:ERR?\n", OK),
            (b"DET:DEAD 2500\n", None),
            (b"SYST:ERR?\n", OK),
            (b"DET:INT 200\n", None),
            (b"SYST:ERR?\n", OK),
            (b"DET:COUN?\n", b"1234.5\n"),
            (b"DET:TEMP?\n", b"-40.00\n"),
        ]
    )
    with IdqId120(s) as d:
        assert d.identity.serial == "SN42"
        d.set_threshold_mv(0, 120)
        d.set_dead_time_ns(0, 2500)
        d.set_integration_time_ms(200)
        np.testing.assert_array_equal(d.count_rates_hz(), [1234.5])
        assert d.temperature_k() == pytest.approx(233.15)
    s.assert_done()


def test_id120_bias_ramps_in_steps_never_jumps():
    s = FakeStreamTransport(
        ID120_OPEN
        + [(b"DET:BIAS?\n", b"300.0\n")]
        + [
            x
            for v in (b"301.667", b"303.333", b"305.000")  # equal steps <= 2 V
            for x in ((b"DET:BIAS " + v + b"\n", None), (b"SYST:ERR?\n", OK))
        ]
    )
    with IdqId120(s, max_step_v=2.0, inter_delay_s=0) as d:
        d.set_bias(0, 305.0)
    s.assert_done()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda d: d.set_threshold_mv(0, 2500), "threshold_mv=2500"),
        (lambda d: d.set_dead_time_ns(0, 100), "dead_time_ns=100"),
        (lambda d: d.set_dead_time_ns(1, 1000), "channel=1"),
        (lambda d: d.set_bias(0, 460), "bias_v=460"),
        (lambda d: d.set_bias(0, 310, max_step=0), "max_step"),
        (lambda d: d.set_integration_time_ms(5), "integration_ms"),
        (lambda d: d.set_threshold_mv(0, float("nan")), "threshold_mv"),
    ],
)
def test_id120_validation_before_the_wire(call, match):
    s = FakeStreamTransport(ID120_OPEN)
    with IdqId120(s) as d:
        with pytest.raises(DriverValueError, match=match):
            call(d)
    s.assert_done()


def test_id120_bias_limit_from_config_is_enforced():
    s = FakeStreamTransport(ID120_OPEN)
    with IdqId120(s, max_bias_v=330) as d:
        with pytest.raises(DriverValueError, match="0..330"):
            d.set_bias(0, 340)


def test_id120_wrong_model():
    s = FakeStreamTransport([(b"*IDN?\n", b"ID Quantique,ID100,1,1\n")])
    with pytest.raises(WrongModel):
        IdqId120(s).open()


# -- ID120: emulated twin --------------------------------------------------------------------------------
def test_id120_emulator_ramp_settings_and_model_hooks():
    with EmulatedId120() as emu:
        changes = []
        emu.on_change(lambda name, v, st: changes.append((name, v)))
        with IdqId120(emu.address, max_step_v=5.0, inter_delay_s=0) as d:
            assert isinstance(d, PhotonDetector)
            d.set_bias(0, 320.0)
            steps = np.diff([0.0, *emu.bias_history])
            assert len(emu.bias_history) == 64 and steps.max() <= 5.0 + 1e-9
            assert d.bias_v() == 320.0
            d.set_dead_time_ns(0, 1000)
            emu.incident_rate_hz = 1e6
            rate = d.count_rates_hz()[0]
            # efficiency 0.7 * (20/30) on 1e6 photons/s plus 80 Hz dark, saturated by 1 us dead time
            r = 1e6 * 0.7 * 20 / 30 + 80
            assert rate == pytest.approx(r / (1 + r * 1e-6), rel=1e-3)
        assert ("dead_time_ns", 1000.0) in changes


def test_id120_faults_name_command_and_driver_recovers():
    with EmulatedId120() as emu:
        d = IdqId120(emu.address, timeout_s=0.3)
        d.open()
        emu.push_error(-222, "Data out of range")
        with pytest.raises(InstrumentError, match="Data out of range") as ei:
            d.set_threshold_mv(0, 100)
        assert ei.value.command == "DET:THR 100.0" and "ID120@" in ei.value.instrument
        emu.faults.set(silence=1)
        with pytest.raises(DriverTimeout) as ei:
            d.temperature_k()
        assert ei.value.command == "DET:TEMP?"
        d.reconnect()
        emu.faults.set(garbage=1)
        with pytest.raises(MalformedReply):
            d.count_rates_hz()
        d.reconnect()
        emu.faults.set(drop=1)
        with pytest.raises(ConnectionLost):
            d.bias_v()
        d.reconnect()
        assert d.threshold_mv() == 100.0
        d._write("DET:THR 5000")  # bypass validation: the instrument refuses and keeps its value
        assert d.error_queue() == [(-222, "Data out of range")]
        assert d.threshold_mv() == 100.0
        d.close()


# -- Single Quantum SNSPD ------------------------------------------------------------------------------------
def _sq(obj) -> bytes:
    return json.dumps(obj).encode() + b"\x17"


def test_snspd_protocol_exact_json_and_confirmed_set():
    req = lambda label: json.dumps({"request": label}).encode()  # noqa: E731
    s = FakeStreamTransport(
        [
            (req("NumberOfDetectors"), _sq({"label": "NumberOfDetectors", "value": 2})),
            (req("BiasCurrent"), _sq({"label": "BiasCurrent", "value": [10.0, 0.0]})),
            (
                json.dumps(
                    {"command": "SetAllBiasCurrents", "label": "BiasCurrent", "value": [10.0, 0.5]}
                ).encode(),
                None,
            ),
            # an unsolicited broadcast arrives before the answer and is skipped
            (
                req("BiasCurrent"),
                _sq({"label": "TriggerLevel", "value": [25.0, 25.0]})
                + _sq({"label": "BiasCurrent", "value": [10.0, 0.5]}),
            ),
            (
                json.dumps(
                    {"command": "SetAllBiasCurrents", "label": "BiasCurrent", "value": [10.0, 1.0]}
                ).encode(),
                None,
            ),
            (req("BiasCurrent"), _sq({"label": "BiasCurrent", "value": [10.0, 1.0]})),
        ]
    )
    with SingleQuantumSnspd(s, inter_delay_s=0, max_step_ua=0.5) as d:
        assert d.channels == 2
        d.set_bias(1, 1.0)
    s.assert_done()


def test_snspd_detector_enable_carries_its_label_and_is_confirmed():
    # Single Quantum WebSQControl.enable_detectors sends
    # {"command": "DetectorEnable", "label": "DetectorEnable", "value": state}
    req = lambda label: json.dumps({"request": label}).encode()  # noqa: E731
    s = FakeStreamTransport(
        [
            (req("NumberOfDetectors"), _sq({"label": "NumberOfDetectors", "value": 1})),
            (b'{"command": "DetectorEnable", "label": "DetectorEnable", "value": true}', None),
            (req("DetectorEnable"), _sq({"label": "DetectorEnable", "value": True})),
        ]
    )
    with SingleQuantumSnspd(s) as d:
        d.set_enabled(True)
    s.assert_done()
    with EmulatedSnspd(n_detectors=1) as emu:
        with SingleQuantumSnspd(emu.address, counts_port=emu.counts_port) as d:
            d.set_enabled(False)
            assert emu.enabled is False
        # the twin refuses a command without the label the vendor client sends
        assert "expected label" in emu.handle_line({"command": "DetectorEnable", "value": True})


def test_snspd_measurement_period_below_10_ms_refused_before_the_wire():
    # WebSQControl.set_measurement_periode: "NOTE: the minimum value can be 10 ms"
    n_det = _sq({"label": "NumberOfDetectors", "value": 1})
    s = FakeStreamTransport([(json.dumps({"request": "NumberOfDetectors"}).encode(), n_det)])
    with SingleQuantumSnspd(s) as d:
        with pytest.raises(DriverValueError, match="period_ms=5"):
            d.set_measurement_period_ms(5)
    s.assert_done()
    assert "10..60000" in EmulatedSnspd(n_detectors=1).handle_line(
        {"command": "SetMeasurementPeriod", "label": "InptMeasurementPeriod", "value": 5}
    )


def test_snspd_readback_mismatch_and_error_label_raise_instrument_error():
    req = lambda label: json.dumps({"request": label}).encode()  # noqa: E731
    s = FakeStreamTransport(
        [
            (req("NumberOfDetectors"), _sq({"label": "NumberOfDetectors", "value": 1})),
            (
                json.dumps(
                    {"command": "SetAllTriggerLevels", "label": "TriggerLevel", "value": [30.0]}
                ).encode(),
                None,
            ),
            (req("TriggerLevel"), _sq({"label": "TriggerLevel", "value": [25.0]})),
            (
                json.dumps(
                    {"command": "SetMeasurementPeriod", "label": "InptMeasurementPeriod", "value": 50.0}
                ).encode(),
                _sq({"label": "Error", "value": "period locked"}),
            ),
            (req("InptMeasurementPeriod"), None),
        ]
    )
    with SingleQuantumSnspd(s) as d:
        with pytest.raises(InstrumentError, match="reads back"):
            d.set_trigger_levels_mv([30.0])
        with pytest.raises(InstrumentError, match="period locked") as ei:
            d.set_measurement_period_ms(50)
        assert "InptMeasurementPeriod" in ei.value.command
    s.assert_done()


def test_snspd_emulator_ramp_counts_and_validation():
    with EmulatedSnspd(n_detectors=4) as emu:
        with SingleQuantumSnspd(
            emu.address, counts_port=emu.counts_port, inter_delay_s=0, max_step_ua=1.0, max_bias_ua=19.0
        ) as d:
            assert isinstance(d, PhotonDetector) and d.channels == 4
            d.set_measurement_period_ms(20)
            d.set_bias_currents_ua([15.0, 15.0, 15.0, 0.0])
            hist = np.array(emu.bias_history)
            assert np.abs(np.diff(np.vstack([np.zeros(4), hist]), axis=0)).max() <= 1.0 + 1e-9
            assert len(hist) == 15
            d.set_bias(3, 2.5)
            np.testing.assert_allclose(d.bias_currents_ua(), [15, 15, 15, 2.5])
            with pytest.raises(DriverValueError, match="bias_ua=19.5"):
                d.set_bias(0, 19.5)
            with pytest.raises(DriverValueError, match="needs 4 values"):
                d.set_bias_currents_ua([1.0, 2.0])
            with pytest.raises(DriverValueError, match="dead time"):
                d.set_dead_time_ns(0, 50)
            emu.incident_rate_hz = np.array([1e5, 2e5, 0.0, 0.0])
            rates = d.count_rates_hz()
            expect = emu.count_rates_hz()
            # counts are integers per 20 ms period: compare within one count
            np.testing.assert_allclose(rates, expect, atol=1 / 0.02 + 1e-6)
            assert rates[1] > 1.5 * rates[0] > 0
            assert d.temperature_k() == pytest.approx(2.6)


def test_snspd_timeout_garbage_disconnect_recover():
    with EmulatedSnspd(n_detectors=2) as emu:
        d = SingleQuantumSnspd(emu.address, counts_port=emu.counts_port, timeout_s=0.3)
        d.open()
        emu.faults.set(silence=1)
        with pytest.raises(DriverTimeout) as ei:
            d.bias_currents_ua()
        assert "BiasCurrent" in ei.value.command and "SingleQuantum@" in ei.value.instrument
        d.reconnect()
        emu.faults.set(garbage=1)
        with pytest.raises(MalformedReply):
            d.trigger_levels_mv()
        d.reconnect()
        emu.faults.set(drop=1)
        with pytest.raises(ConnectionLost):
            d.measurement_period_ms()
        d.reconnect()
        assert d.measurement_period_ms() == 100.0
        d.close()


def test_snspd_counts_stream_dropped_mid_stream_reconnects():
    with EmulatedSnspd(n_detectors=2) as emu:
        with SingleQuantumSnspd(emu.address, counts_port=emu.counts_port, timeout_s=0.5) as d:
            d.set_measurement_period_ms(10)
            assert d.count_rates_hz().shape == (2,)
            emu.counts.faults.set(drop=1)
            with pytest.raises((ConnectionLost, DriverTimeout)) as ei:
                for _ in range(5):  # the drop lands on one of the next chunks
                    d.read_counts()
            assert ei.value.command == "<counts>"
            assert d.count_rates_hz().shape == (2,)  # the counts connection is reopened
            assert emu.counts.connections == 2


@pytest.mark.hardware
def test_real_id120_reads_status(instrument_address):
    with IdqId120(instrument_address("id120")) as d:
        st = d.status()
        assert 0 <= st["bias_v"] <= 450 and st["rate_hz"] >= 0


@pytest.mark.hardware
def test_real_snspd_reads_status(instrument_address):
    with SingleQuantumSnspd(instrument_address("snspd")) as d:
        assert d.channels >= 1
        assert len(d.bias_currents_ua()) == d.channels

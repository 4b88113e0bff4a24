"""Emulator hooks reach the physical model: driver settings become model parameters.

``LinkModel`` lives on another branch; a recorder with its documented setter
signatures stands in for it here, and the rig's integration test uses the real one.
"""

from __future__ import annotations

import numpy as np
import pytest

from drivers.idq_id120 import IdqId120
from drivers.keysight_awg import Keysight33500
from drivers.oz_epc400 import OzEpc400
from drivers.single_quantum import SingleQuantumSnspd
from drivers.thorlabs_mpc320 import ThorlabsMpc320
from hil.emulated.awg import EmulatedAwg
from hil.emulated.epc400 import EmulatedEpc400
from hil.emulated.id120 import EmulatedId120
from hil.emulated.mpc320 import EmulatedMpc320
from hil.emulated.snspd import EmulatedSnspd
from hil.emulated.wiring import wire_awg, wire_epc400, wire_id120, wire_mpc320, wire_snspd


class ModelRecorder:
    """Records calls made with LinkModel's setter signatures."""

    def __init__(self):
        self.rotation = None
        self.detectors = {}

    def set_controller_epc400(self, voltages_v, v_pi_v=2.5):
        self.rotation = ("epc400", tuple(voltages_v), v_pi_v)

    def set_controller_mpc320(self, paddle_angles_deg, retardances_rad=None):
        self.rotation = ("mpc320", tuple(paddle_angles_deg))

    def set_detector(self, index, **params):
        self.detectors.setdefault(index, {}).update(params)


def test_polarization_controllers_rotate_the_model():
    m = ModelRecorder()
    with EmulatedEpc400() as epc, EmulatedMpc320() as mpc:
        wire_epc400(epc, m, v_pi_v=3.0)
        wire_mpc320(mpc, m)
        with OzEpc400(epc.port) as d:
            d.set_actuators([1000, -500, 0, 2500])
        assert m.rotation == ("epc400", (1.0, -0.5, 0.0, 2.5), 3.0)
        with ThorlabsMpc320(mpc.port) as d:
            d.set_actuators([0.0, 85.0, 170.0])
        assert m.rotation[0] == "mpc320"
        np.testing.assert_allclose(m.rotation[1], [0.0, 85.0, 170.0], atol=170 / 1370)


def test_detector_settings_set_model_detectors():
    m = ModelRecorder()
    with EmulatedId120() as apd, EmulatedSnspd(n_detectors=4) as sn:
        wire_id120(apd, m, detector_index=2)
        wire_snspd(sn, m, detector_indices=(0, 1, 3))
        with IdqId120(apd.address, inter_delay_s=0, max_step_v=50) as d:
            d.set_bias(0, 216.0)  # 16 V above the twin's 200 V breakdown (on the 80 mV grid)
            d.set_dead_time_ns(0, 80_000)
        assert m.detectors[2]["dead_time_ns"] == 80_000.0
        assert m.detectors[2]["efficiency"] == pytest.approx(0.7 * 16 / 30)
        with SingleQuantumSnspd(sn.address, counts_port=sn.counts_port, inter_delay_s=0, max_step_ua=10) as d:
            d.set_bias_currents_ua([16.0, 10.0, 19.0, 0.0])
        assert set(m.detectors) == {0, 1, 2, 3}
        assert m.detectors[0]["efficiency"] > m.detectors[1]["efficiency"] > 0.0
        # channel 2 (19 uA, near the 20 uA switching current) feeds model detector 3: dark counts rise
        assert m.detectors[3]["dark_count_rate_hz"] > 100 * m.detectors[0]["dark_count_rate_hz"]


def test_awg_pattern_reaches_the_rig():
    got = []
    rng = np.random.default_rng(5)
    b, k, i = (rng.integers(0, n, 1000, dtype=np.uint8) for n in (2, 2, 3))
    with EmulatedAwg() as awg:
        wire_awg(awg, lambda *p: got.append(p))
        with Keysight33500(awg.address) as d:
            d.load_frame_pattern(b, k, i, slot_rate_hz=50e6)
    assert len(got) == 1 and got[0][3] == 50e6
    np.testing.assert_array_equal(got[0][2], i)

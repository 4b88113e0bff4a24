"""Polarization alignment on the HIL rig: the production controller drivers on the emulated ptys,
the fiber turned by a random rotation, Z and X measured through the link's front ends.

The test harness (only) fixes the emulated fiber's rotation and reads the model's true total
rotation to check the misalignment the calibration left; the calibration itself sees nothing but
the driver and the click counts.
"""

from __future__ import annotations

import numpy as np
import pytest

from calibration.polarization import LinkProbe, Measurement, PolarizationError, align, counts_from_frame
from drivers.oz_epc400 import OzEpc400
from drivers.thorlabs_mpc320 import ThorlabsMpc320
from hil.optics import _SIGMA, su2_rotation
from hil.rig import Rig
from hil.scenario import Scenario
from link.frontend import ModelLink, Timing

TARGET = 0.005          # issue 7: misalignment QBER contribution <= 0.5 % in both bases


def _stokes(u: np.ndarray) -> np.ndarray:
    return np.array([[0.5 * np.trace(_SIGMA[i] @ u @ _SIGMA[j] @ u.conj().T).real for j in range(3)]
                     for i in range(3)])


class _Harness:
    """A started rig with a fixed random fiber rotation, the controller's production driver, a probe."""

    def __init__(self, controller: str, seed: int, driver_cls=None):
        sc = Scenario.load("metro-25km").with_overrides({"source.prep_error_deg": 0.0})
        self.rig = Rig(sc, seed=seed, frame_slots=1 << 18, controller=controller).start()
        fiber = su2_rotation(np.random.default_rng(seed).normal(size=3) * 3)
        self.rig.model.fiber.rotation_at = lambda t: fiber          # harness only: a static random fiber
        res = self.rig.resources()
        if controller == "epc400":
            self.dev = (driver_cls or OzEpc400)(res["bob.polarization"], timeout_s=0.5)
        else:
            self.dev = (driver_cls or ThorlabsMpc320)(res["bob.paddles"])
        self.dev.open()
        link = ModelLink(self.rig.model, timing=Timing.for_model(self.rig.model))
        self.probe = LinkProbe(link.alice, link.bob, frames=2, seed=seed, poll_s=0.0)

    def true_misalignment(self) -> tuple[float, float]:
        r = _stokes(self.rig.model.rotation_at(0.0))
        return (1 - r[0, 0]) / 2, (1 - r[1, 1]) / 2

    def close(self):
        self.dev.close()
        self.rig.stop()


# mpc320 seeds 1, 4 and 5 failed before the paddle equivalences, the |R31|/|R32| residual and the
# fold escape (session 3; 7 of 12 rig seeds passed, seed 5 had been swapped for a passing one here);
# bench.align_run measures all of them.
@pytest.mark.parametrize("controller,seed", [("epc400", 3), ("epc400", 6), ("mpc320", 1), ("mpc320", 4),
                                             ("mpc320", 5)])
def test_align_from_random_rotation(controller, seed):
    h = _Harness(controller, seed)
    try:
        before = h.true_misalignment()
        res = align(h.dev, h.probe.measure, seed=seed)
        after = h.true_misalignment()
        print(controller, seed, res.summary(h.dev.actuator_unit), "true before", before, "after", after)
        assert max(before) > 0.05                      # it really started misaligned
        assert after[0] <= TARGET and after[1] <= TARGET
        assert res.qber_z <= TARGET and res.qber_x <= TARGET
        assert res.measurements <= 101
        assert res.link_s < 0.3                        # 2-8 frames of 262 us per step at 1 GHz
        lo, hi = h.dev.actuator_range
        assert all(np.all((x >= lo) & (x <= hi)) for x, _, _ in res.history)
        np.testing.assert_allclose(h.dev.get_actuators(), res.settings, atol=1.0)
    finally:
        h.close()


class _NarrowEpc(OzEpc400):
    """The production driver with a lab-imposed safe range far too small to undo the fiber."""

    RANGE_MV = (0.0, 300.0)


def test_range_limit_gives_error_and_safe_state():
    h = _Harness("epc400", 3, driver_cls=_NarrowEpc)
    try:
        with pytest.raises(PolarizationError, match="alignment failed.*controller left at the best setting"):
            align(h.dev, h.probe.measure, seed=1, max_measurements=30)
        sent = np.array(h.rig.lab.servers["bob.polarization"].history)
        assert len(sent) and sent.min() >= 0.0 and sent.max() <= 300.0   # nothing out of range sent
        v = h.dev.get_actuators()
        assert np.all((v >= 0) & (v <= 300))
    finally:
        h.close()


def test_controller_that_stops_answering_raises_not_runs_away():
    h = _Harness("epc400", 4)
    try:
        h.rig.lab.servers["bob.polarization"].faults.set(silence=10_000)
        with pytest.raises(PolarizationError, match="stopped answering|did not accept"):
            align(h.dev, h.probe.measure, seed=1)
        assert h.probe.link_s == 0.0                 # no light was spent on a dead controller
    finally:
        h.rig.lab.servers["bob.polarization"].faults.clear()
        h.close()


def test_counts_and_components():
    # H sent 3 times (2 H clicks, 1 V), D twice (both D), a double click ignored
    slots = np.array([0, 1, 2, 3, 4, 5], np.uint64)
    masks = np.array([1, 1, 2, 4, 4, 3], np.uint8)
    basis = np.array([0, 0, 0, 1, 1, 0], np.uint8)
    bit = np.zeros(6, np.uint8)
    c = counts_from_frame(slots, masks, basis, bit)
    assert c[0].tolist() == [2, 1, 0, 0] and c[2].tolist() == [0, 0, 2, 0] and c.sum() == 5
    m = Measurement(c, 1e-3)
    assert m.qber_z == pytest.approx(1 / 3) and m.qber_x == 0.0
    with pytest.raises(PolarizationError, match="no clicks"):
        _ = m.components                              # no H/V-state clicks in the X arm


def test_paddle_equivalents_set_the_same_rotation():
    # calibration's only use of the MPC320's nominal layout: settings with the same transform
    from calibration.polarization import _Driver
    from hil.blocklink import ModelEpc400, ModelMpc320, stokes
    from hil.model import LinkModel
    from hil.optics import mpc320_rotation

    model = LinkModel(Scenario.load("metro-25km"), 1)
    dev = _Driver(ModelMpc320(model))
    rng = np.random.default_rng(3)
    found = 0
    for _ in range(100):
        x = rng.uniform(-200, 400, 3)
        want = stokes(mpc320_rotation(tuple(x)))
        eq = dev.equivalents(x)
        found += bool(eq)
        for y, a in eq:
            assert np.all((y >= 0) & (y <= 170))
            np.testing.assert_allclose(stokes(mpc320_rotation(tuple(y))), want, atol=1e-9)
            e = rng.normal(size=3) * 1e-3                       # the Jacobian maps offsets
            assert min(np.abs(z - (y + a @ e)).max() for z, _ in dev.equivalents(x + e)) < 1e-9
    assert found >= 97                # only a paddle in its 10-deg gap in both families has none
    y, a = dev.into_range(np.array([-5.0, 60.0, 30.0]))
    assert 0 <= y.min() and y.max() <= 170 and a is not None
    assert _Driver(ModelEpc400(model)).equivalents(np.zeros(4)) == []

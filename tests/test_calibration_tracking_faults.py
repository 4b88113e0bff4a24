"""Faults during tracking, with each production controller driver on the HIL rig's emulated instrument
(issue 7: a controller that stops answering or hits a range limit gives an alarm and a safe state, not
a crash or a runaway). The tracker raises :class:`PolarizationError` -- chained to the driver's error
when the controller failed, which the node turns into an ``instrument`` alarm and a stop, else a
``polarization`` alarm with tracking off (``link.node._track_block``, ``test_calibration_node_hook``);
the controller holds its last accepted setting, and no setting outside the driver's range is sent."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.polarization import Measurement, PolarizationError
from calibration.tracking import BlockCounts, PolarizationTracking, align_inside
from drivers.oz_epc400 import OzEpc400
from drivers.thorlabs_mpc320 import ThorlabsMpc320
from hil.blocklink import BlockLink
from hil.optics import su2_rotation
from hil.rig import Rig
from hil.scenario import Scenario


class _NarrowEpc(OzEpc400):
    RANGE_MV = (0.0, 300.0)          # a lab-imposed safe range far too small to undo the fiber


class _NarrowMpc(ThorlabsMpc320):
    RANGE_DEG = (0.0, 30.0)


class _Setup:
    def __init__(self, kind: str, seed: int, driver_cls=None, drift: float = 0.1, fiber=None):
        sc = Scenario.load("metro-25km").with_overrides({"fiber.drift_rad_per_sqrt_s": drift})
        self.rig = Rig(sc, seed=seed, frame_slots=1 << 16, controller=kind).start()
        if fiber is not None:
            self.rig.model.fiber.rotation_at = lambda t: fiber
        res = self.rig.resources()
        self.sent: list[np.ndarray] = []
        if kind == "epc400":
            self.dev = (driver_cls or OzEpc400)(res["bob.polarization"], timeout_s=0.3)
            self.server = self.rig.lab.servers["bob.polarization"]
        else:
            self.dev = (driver_cls or ThorlabsMpc320)(res["bob.paddles"], timeout_s=0.3)
            self.server = self.rig.lab.servers["bob.paddles"]
            self.server.on_change(lambda a: self.sent.append(a))
        self.dev.open()
        self.link = BlockLink(self.rig.model, seed=seed)
        self.t = 0.0
        self.T = self.link.block_duration_for(1 << 18)
        self.i = 0

    def history(self) -> np.ndarray:
        return np.array(self.server.history if hasattr(self.server, "history") else self.sent)

    def measure(self) -> Measurement:
        b = self.link.block(self.t, 1e-3)
        self.t += 1e-3
        return Measurement(b.cross, 1e-3)

    def block(self, tr: PolarizationTracking):
        b = self.link.block(self.t, self.T)
        bad = b.qber[1] > 0.11
        rec = tr.on_block(BlockCounts(0 if bad else int(b.n[0].sum()), 0 if bad else int(b.m[0].sum()),
                                      int(b.n[1].sum()), int(b.m[1].sum()), self.i, self.i, self.T,
                                      z_known=not bad), self.i)
        self.t += self.T
        self.i += 1
        return rec

    def close(self):
        self.server.faults.clear()
        self.dev.close()
        self.rig.stop()


@pytest.mark.parametrize("kind", ["epc400", "mpc320"])
def test_controller_that_stops_answering_while_tracking(kind):
    s = _Setup(kind, 2)
    try:
        align_inside(s.dev, s.measure, seed=2)
        tr = PolarizationTracking(s.dev, seed=2, guard_frames=0, init_rounds=1)
        for _ in range(12):
            s.block(tr)
        held = s.dev.get_actuators()
        s.server.faults.set(silence=100_000)
        from drivers.errors import DriverError

        with pytest.raises(PolarizationError, match="did not accept|stopped answering") as ei:
            for _ in range(6):                  # the next setting sent finds it silent
                s.block(tr)
        assert isinstance(ei.value.__cause__, DriverError)       # the node: an instrument fault
        s.server.faults.clear()
        # safe state: the twin holds a setting within range (its last accepted one, +- the dither that
        # was in progress); nothing beyond it was applied
        lo, hi = s.dev.actuator_range
        now = s.dev.get_actuators()
        assert np.all((now >= lo) & (now <= hi))
        assert np.abs(now - held).max() < 0.05 * (hi - lo)
        h = s.history()
        assert len(h) and h.min() >= lo and h.max() <= hi
    finally:
        s.close()


@pytest.mark.parametrize("kind,cls", [("epc400", _NarrowEpc), ("mpc320", _NarrowMpc)])
def test_range_limit_while_tracking_is_an_error_and_holds_the_controller(kind, cls):
    # a static fiber the narrowed range cannot undo: the loop loses lock, searches again from the blocks
    # (inside the range only), fails, and raises with the controller at its best setting in range
    fiber = su2_rotation(np.array([1.1, -0.7, 0.9]))
    s = _Setup(kind, 3, driver_cls=cls, drift=0.0, fiber=fiber)
    try:
        lo, hi = s.dev.actuator_range
        s.dev.set_actuators([(lo + hi) / 2] * s.dev.n_actuators)
        tr = PolarizationTracking(s.dev, seed=3, guard_frames=0, init_rounds=1, recover_blocks=40,
                                  recover_tries=2)
        with pytest.raises(PolarizationError, match="recovery from block counts failed") as ei:
            for _ in range(400):
                s.block(tr)
        assert "alignment failed" in str(ei.value)               # optical, not the driver's fault
        tol = 0.05                                   # the MPC320 twin reports whole encoder counts
        now = s.dev.get_actuators()                  # (30 deg reads back as 30.029 on the narrowed twin)
        assert np.all((now >= lo - tol) & (now <= hi + tol))
        h = s.history()
        assert len(h) > 10 and h.min() >= lo - tol and h.max() <= hi + tol     # never beyond
    finally:
        s.close()

"""Polarization tracking on the rig: a fiber drifting fast enough to scramble the link within the run,
the EPC-400 driver on the emulated pty, per-block counts; and the range-limit fault of the tracker."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.polarization import LinkProbe, PolarizationError, Tracker, align
from drivers.oz_epc400 import OzEpc400
from drivers.thorlabs_mpc320 import ThorlabsMpc320
from hil.optics import _SIGMA, su2_rotation
from hil.rig import Rig
from hil.scenario import Scenario
from link.frontend import ModelLink, Timing


def _stokes(u: np.ndarray) -> np.ndarray:
    return np.array([[0.5 * np.trace(_SIGMA[i] @ u @ _SIGMA[j] @ u.conj().T).real for j in range(3)]
                     for i in range(3)])


def _run(track: bool, blocks: int = 200, drift: float = 1.0):
    # 1 rad/sqrt(s) over 0.8 ms blocks: 0.028 rad of drift per block, like 0.1 rad/sqrt(s) over 80 ms
    # blocks; 200 blocks = 0.16 s of link time, enough for the fiber to wander far from aligned.
    sc = Scenario.load("metro-25km").with_overrides({"source.prep_error_deg": 0.0,
                                                     "fiber.drift_rad_per_sqrt_s": drift,
                                                     "fiber.drift_step_s": 1e-4})
    with Rig(sc, seed=3, frame_slots=1 << 18) as rig:
        dev = OzEpc400(rig.resources()["bob.polarization"])
        dev.open()
        try:
            link = ModelLink(rig.model, timing=Timing.for_model(rig.model))
            probe = LinkProbe(link.alice, link.bob, frames=2, seed=3, poll_s=0.0)
            align(dev, probe.measure, seed=3, confirm_reps=2)
            tr = Tracker(dev)
            true = []
            for _ in range(blocks):
                m = probe.measure()
                r = _stokes(rig.model.rotation_at(probe._sent * probe.frame_s))
                true.append(((1 - r[0, 0]) / 2, (1 - r[1, 1]) / 2))
                if track:
                    tr.update(m)
            lo, hi = dev.actuator_range
            assert all(np.all((s.settings >= lo) & (s.settings <= hi)) for s in tr.log)
            return np.array(true), probe.link_s, tr
        finally:
            dev.close()


def test_tracking_keeps_drift_qber_down():
    tracked, link_s, tr = _run(True)
    free, _, _ = _run(False)
    print(f"link {link_s * 1e3:.0f} ms: mean misalignment QBER tracked Z {tracked[:, 0].mean():.4f} "
          f"X {tracked[:, 1].mean():.4f}; untracked Z {free[:, 0].mean():.4f} X {free[:, 1].mean():.4f}")
    assert free.mean() > 0.02                       # without the loop the drift matters
    assert tracked.mean() < 0.5 * free.mean()
    assert tracked.mean() < 0.015


def test_tracker_at_range_edge_without_redundancy_gives_error():
    sc = Scenario.load("metro-25km").with_overrides({"source.prep_error_deg": 0.0})
    with Rig(sc, seed=2, frame_slots=1 << 18, controller="mpc320") as rig:
        dev = ThorlabsMpc320(rig.resources()["bob.paddles"])
        dev.open()
        try:
            dev.set_actuators([1.0, 80.0, 80.0])          # paddle 1 next to its 0 deg limit
            link = ModelLink(rig.model, timing=Timing.for_model(rig.model))
            probe = LinkProbe(link.alice, link.bob, frames=1, seed=2, poll_s=0.0)
            tr = Tracker(dev)
            with pytest.raises(PolarizationError, match=r"actuator\(s\) \[1\] at the edge"):
                for _ in range(20):
                    tr.update(probe.measure())
            v = dev.get_actuators()
            assert np.all((v >= 0) & (v <= 170))
        finally:
            dev.close()


def test_epc_walks_back_from_an_edge_along_the_null_space():
    # four squeezers for three rotation angles: a setting near a limit is moved back without
    # losing the alignment. edge_fraction=0.45 makes every setting count as "near" an edge.
    sc = Scenario.load("metro-25km").with_overrides({"source.prep_error_deg": 0.0})
    with Rig(sc, seed=6, frame_slots=1 << 18) as rig:
        fiber = su2_rotation(np.random.default_rng(6).normal(size=3) * 3)
        rig.model.fiber.rotation_at = lambda t: fiber
        dev = OzEpc400(rig.resources()["bob.polarization"])
        dev.open()
        try:
            link = ModelLink(rig.model, timing=Timing.for_model(rig.model))
            probe = LinkProbe(link.alice, link.bob, frames=2, seed=6, poll_s=0.0)
            res = align(dev, probe.measure, seed=6)
            tr = Tracker(dev, edge_fraction=0.45)
            true = []
            for _ in range(60):
                tr.update(probe.measure())
                r = _stokes(rig.model.rotation_at(0.0))
                true.append(max((1 - r[0, 0]) / 2, (1 - r[1, 1]) / 2))
            actions = [s.action for s in tr.log]
            assert actions.count("recenter") >= 5
            i = int(np.argmax(np.abs(res.settings)))      # the actuator nearest a limit
            inward = abs(res.settings[i]) - abs(tr.log[-1].settings[i])
            assert inward > 20                           # mV: it walked back (slowly: small steps)
            assert np.mean(true) < 0.005                 # without losing the alignment
            v = dev.get_actuators()
            assert np.all((v >= -5000) & (v <= 5000))
        finally:
            dev.close()

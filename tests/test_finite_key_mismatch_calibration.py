"""calibration.efficiency: the lab's measurement of ``detector_efficiency_ratio_min`` from
reference-frame counts, checked on the emulated rig whose detector efficiencies are known."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.efficiency import EfficiencyError, combine, efficiency_ratio_bound
from calibration.polarization import counts_from_frame


def _reference_counts(eff, mus=(0.1, 0.05, 0.0002), frames=48, seed=5, dark_hz=100.0):
    """Single clicks per (Alice's state, detector) and pulses per state from the model's reference
    frames (half Z, half X; dead time off: the calibration must run where it does not matter)."""
    from hil.model import LinkModel
    from hil.scenario import Scenario

    sc = Scenario.load("metro-25km").with_overrides({
        "detectors.efficiency": list(eff), "source.frame_slots": 1 << 18,
        "source.intensities": list(mus), "detectors.dead_time_ns": [0.0] * 4, "source.p_z": 0.5,
        "detectors.dark_count_rate_hz": [dark_hz] * 4})
    m = LinkModel(sc, seed=seed)
    counts, sent = np.zeros((4, 4), np.int64), np.zeros(4, np.int64)
    for f in range(frames):
        p = m.alice_pattern(f)
        r = m.run_frame(f, p)
        counts += counts_from_frame(r.slots, r.mask, p.basis, p.bit)
        sent += np.bincount(np.asarray(p.basis, np.int64) * 2 + np.asarray(p.bit, np.int64), minlength=4)
    return counts, sent, float(sc.bob.p_z)


def test_ratio_from_the_rigs_reference_frames_bounds_the_true_one():
    """Detectors 0.70/0.68/0.71/0.55 (truth 0.55/0.71 = 0.775): the 5-sigma bound lies below the
    truth and the estimate within 3 % of it, whatever the fiber did to the polarization (the sum
    over the four states does not depend on it)."""
    counts, sent, split = _reference_counts((0.70, 0.68, 0.71, 0.55))
    r = efficiency_ratio_bound(counts, sent, split)
    assert r.ratio_min < 0.55 / 0.71 < r.ratio_min + 0.12
    assert r.ratio == pytest.approx(0.55 / 0.71, rel=0.03)
    assert r.relative[2] == 1.0 and r.relative[3] == pytest.approx(0.55 / 0.71, rel=0.03)
    assert combine([r, efficiency_ratio_bound(counts, sent, split, sigmas=3.0)]) == r.ratio_min


def test_saturation_and_bad_input_are_refused():
    counts, sent, split = _reference_counts((0.70, 0.68, 0.71, 0.69), mus=(0.8, 0.4, 0.0002), frames=2)
    with pytest.raises(EfficiencyError, match="lower the intensity"):
        efficiency_ratio_bound(counts, sent, split)
    with pytest.raises(EfficiencyError, match="split_z_optical"):
        efficiency_ratio_bound(np.ones((4, 4)), np.full(4, 1000), 1.0)
    with pytest.raises(EfficiencyError, match="counts"):
        efficiency_ratio_bound(np.ones((3, 4)), np.full(4, 1000), 0.5)
    with pytest.raises(EfficiencyError, match="no clicks"):
        efficiency_ratio_bound(np.zeros((4, 4)), np.full(4, 1000), 0.5)
    with pytest.raises(EfficiencyError, match="no measurements"):
        combine([])


def test_dark_counts_pull_towards_one_unless_subtracted():
    """Strong dark counts (2e5 Hz) make unequal detectors look more alike; subtracting the rate
    measured with Alice's light blocked restores the ratio."""
    counts, sent, split = _reference_counts((0.70, 0.68, 0.71, 0.55), dark_hz=2e5)
    raw = efficiency_ratio_bound(counts, sent, split)
    fixed = efficiency_ratio_bound(counts, sent, split, dark_per_slot=np.full(4, 2e5 / 1e9))
    assert raw.ratio > fixed.ratio
    assert fixed.ratio == pytest.approx(0.55 / 0.71, rel=0.04)

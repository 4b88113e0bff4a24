"""Block-level emulation of the link: sifted counts per block from the model's closed-form click rates.

What it is for: runs of minutes of emulated link time (the polarization-tracking
run of issue 7 needs 10 minutes at 1 GHz = 6e11 slots, which the slot-level
``hil.model.LinkModel.run_frame`` cannot do in a session). For a block of
duration T it takes the model's own optics -- Alice's states with their
preparation errors, the fiber's drifting rotation at the block's midpoint, Bob's
controller, transmittance, per-detector efficiency and dark counts, exactly the
quantities ``LinkModel.expected_click_probability`` uses -- and draws Poisson
counts of single clicks per (intensity, Alice's state, detector) with those
means. Dead time is applied as the non-paralyzable live fraction 1/(1 + R tau)
per detector (m = n / (1 + n tau); Knoll, Radiation Detection and Measurement,
4th ed., ch. 4, sec. VII) with tau the blind time of the slot-level rule
(``hil.detectors.dead_time_keep``: a click blocks the next D - 1 slots, D = ceil(dead
time / period), so tau = (D - 1) periods; light comes only at slot times). A click
is single when no other detector clicks, and a detector that is dead cannot, so
the other detectors enter with their live-scaled probabilities too. Both matter
in saturation: with tau = the nominal dead time and unscaled partners the
single-click rates were 1.7 % low at metro-25km and 5-13 % low back to back
(``tests/test_hil_physics_audit.py``).

What it must not do: stand in for the slot-level model where timing, afterpulses,
multi-clicks within a block or attacks matter; it keeps only what the per-block
error counts and key rate depend on. ``tests/test_calibration_tracking_loop.py``
checks its QBER and sifted rates against ``LinkModel.run_frame``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import eve as _eve
from .model import LinkModel

__all__ = ["BlockLink", "BlockSample", "ModelEpc400", "ModelMpc320"]


@dataclass(frozen=True)
class BlockSample:
    """Sifted single-click counts of one block; ``n[b, k]`` bits and ``m[b, k]`` errors per basis b
    (0 = Z, 1 = X) and intensity k; ``cross`` the (4, 4) counts per (Alice's state, detector)."""

    t0_s: float
    duration_s: float
    n: np.ndarray
    m: np.ndarray
    cross: np.ndarray

    @property
    def qber(self) -> tuple[float, float]:
        nz, nx = self.n.sum(axis=1)
        mz, mx = self.m.sum(axis=1)
        return float(mz / max(nz, 1)), float(mx / max(nx, 1))


class BlockLink:
    """Per-block counts of a ``LinkModel`` (its scenario, fiber drift and controller)."""

    def __init__(self, model: LinkModel, seed: int = 0) -> None:
        self.model = model
        self.rng = np.random.default_rng(seed)
        m = model
        self.p_state = np.array([m.p_z, m.p_z, 1 - m.p_z, 1 - m.p_z]) / 2
        # blind time after a click at slot resolution: D - 1 slots (hil.detectors.dead_time_keep)
        self.dead_s = np.array([max(m._dead_slots(d) - 1, 0) for d in range(4)]) / m.clock_hz
        self._per_photon = m._per_photon()
        self._dark = m._dark_prob()

    def click_probabilities(self, t_s: float, rotation: np.ndarray | None = None) -> np.ndarray:
        """(3 intensities, 4 states, 4 detectors) probability per slot of a single click in detector d
        (closed form as ``LinkModel.expected_click_probability``, times the detector's live fraction,
        times no other (live) detector clicking)."""
        m = self.model
        u = m.rotation_at(t_s) if rotation is None else rotation
        proj = _eve.projections(u[None], m._states)[0]                         # (4 states, 4 det)
        nbar = m.mu[:, None, None] * m.transmittance * self._per_photon[None, None, :] * proj[None]
        p = 1.0 - np.exp(-nbar) * (1.0 - self._dark)[None, None, :]
        rate = m.clock_hz * np.einsum("k,s,ksd->d", m.intensity_probs, self.p_state, p)
        # live fraction per detector: the pattern is i.i.d., so a slot's class does not change it
        p = p / (1.0 + rate * self.dead_s)[None, None, :]
        quiet = np.prod(1.0 - p, axis=-1, keepdims=True)
        return p * quiet / (1.0 - p)

    def expected_qber(self, t_s: float, rotation: np.ndarray | None = None) -> tuple[float, float]:
        """Expected (QBER_Z, QBER_X) of single clicks, all intensities, at time t (or a given rotation)."""
        p = self.click_probabilities(t_s, rotation)
        w = self.model.intensity_probs[:, None, None] * self.p_state[None, :, None] * p
        c = w.sum(axis=0)
        qz = (c[0, 1] + c[1, 0]) / (c[0, 0] + c[0, 1] + c[1, 0] + c[1, 1])
        qx = (c[2, 3] + c[3, 2]) / (c[2, 2] + c[2, 3] + c[3, 2] + c[3, 3])
        return float(qz), float(qx)

    def block(self, t0_s: float, duration_s: float, rotation: np.ndarray | None = None) -> BlockSample:
        """Draw one block's counts (rotation taken at the block's midpoint, or the one given)."""
        m = self.model
        p = self.click_probabilities(t0_s + duration_s / 2, rotation)
        slots = duration_s * m.clock_hz
        mean = slots * m.intensity_probs[:, None, None] * self.p_state[None, :, None] * p
        c = self.rng.poisson(mean)                                              # (k, s, d)
        n = np.stack([c[:, 0:2, 0:2].sum(axis=(1, 2)), c[:, 2:4, 2:4].sum(axis=(1, 2))])
        err = np.stack([c[:, 0, 1] + c[:, 1, 0], c[:, 2, 3] + c[:, 3, 2]])
        return BlockSample(t0_s, duration_s, n, err, c.sum(axis=0))

    def block_duration_for(self, z_bits: int) -> float:
        """Link time that yields ``z_bits`` sifted Z bits on average (the engine's block size)."""
        p = self.click_probabilities(0.0, rotation=np.eye(2, dtype=complex))
        per_s = self.model.clock_hz * float(
            np.einsum("k,s,ksd->", self.model.intensity_probs, self.p_state[:2], p[:, :2, :2]))
        return z_bits / per_s


class ModelEpc400:
    """An in-process EPC-400 with the driver's interface (mV, -5000..5000) acting on a ``LinkModel``:
    the block-level runs skip the emulated serial port, whose round trips dominate their wall time."""

    name = "model-epc400"
    actuator_unit = "mV"
    actuator_range = (-5000.0, 5000.0)
    n_actuators = 4

    def __init__(self, model: LinkModel, voltages_mv=(0.0, 0.0, 0.0, 0.0)) -> None:
        self.model = model
        self.sets = 0
        self.set_actuators(voltages_mv)

    def set_actuators(self, values) -> None:
        v = np.asarray(values, float)
        if v.shape != (4,) or not np.all(np.isfinite(v)):
            raise ValueError(f"values: expected 4 finite voltages in mV, got {values!r}")
        if np.any(np.abs(v) > 5000.0):
            raise ValueError(f"values: {v.tolist()} outside -5000..5000 mV")
        self._v = v.copy()
        self.model.set_controller_epc400(v / 1000.0)
        self.sets += 1

    def get_actuators(self) -> np.ndarray:
        return self._v.copy()


class ModelMpc320:
    """An in-process MPC320 (three paddles, 0..170 degrees) acting on a ``LinkModel``."""

    name = "model-mpc320"
    actuator_unit = "deg"
    actuator_range = (0.0, 170.0)
    n_actuators = 3
    paddle_retardance_waves = (0.25, 0.5, 0.25)      # as the driver (optics.mpc320_rotation's default)

    def __init__(self, model: LinkModel, angles_deg=(85.0, 85.0, 85.0)) -> None:
        self.model = model
        self.sets = 0
        self.set_actuators(angles_deg)

    def set_actuators(self, values) -> None:
        v = np.asarray(values, float)
        if v.shape != (3,) or not np.all(np.isfinite(v)) or np.any((v < 0) | (v > 170)):
            raise ValueError(f"values: expected 3 paddle angles in 0..170 deg, got {values!r}")
        self._v = v.copy()
        self.model.set_controller_mpc320(v)
        self.sets += 1

    def get_actuators(self) -> np.ndarray:
        return self._v.copy()


def stokes(u: np.ndarray) -> np.ndarray:
    """3x3 rotation on the Poincare sphere of a 2x2 unitary (R_ij = tr(s_i U s_j U^dagger) / 2)."""
    from .optics import _SIGMA

    return np.einsum("iab,bc,jcd,ad->ij", _SIGMA, u, _SIGMA, u.conj()).real / 2


def misalignment_angle(u: np.ndarray) -> float:
    """Rotation angle (rad) on the Poincare sphere of a 2x2 unitary."""
    return 2.0 * math.acos(min(1.0, abs(np.trace(u)) / 2.0))

"""Polarization optics of the link: Jones vectors, waveplates, controllers, fiber drift.

What it is for: the 2x2 unitaries that act on Alice's polarization states on
the way to Bob's analyser: the fiber's slowly drifting birefringence and Bob's
polarization controller (built from EPC-400 squeezer voltages or MPC320 paddle
angles). It must not sample photons or detections (``hil.model`` does that).

Conventions. Jones vectors in the (H, V) basis; a linear state at physical angle
phi is (cos phi, sin phi): H = 0 deg, V = 90, D = 45, A = -45. A rotation by
angle theta on the Poincare sphere about unit axis n = (n1, n2, n3) (Stokes
S1 = H/V, S2 = D/A, S3 = circular) is U = cos(theta/2) I - i sin(theta/2) n.sigma
with sigma = (sigma_z, sigma_x, sigma_y) in that order, so a rotation about S3 by
theta is the real rotation matrix by theta/2 (a physical rotation of linear
polarization). A retarder of retardance delta with fast axis at theta is
R(theta) diag(exp(-i delta/2), exp(i delta/2)) R(-theta) (Hecht, Optics, 4th
ed., sec. 8.12; Damask, Polarization Optics in Telecommunications, eq. 2.41).

Fiber drift. Deployed-fiber polarization wanders like a random walk on the
Poincare sphere (diffusion of the output SOP; Karlsson et al., J. Lightwave
Technol. 18(7), 2000; Czegledi, Karlsson, Agrell and Johannisson, "Polarization
drift channel model for coherent fibre-optic systems", Sci. Rep. 6, 21217
(2016), arXiv:1507.00953, model the Jones matrix as a random walk on SU(2)
with i.i.d. Gaussian 3-vector increments of variance sigma^2 dt). Our rate
``drift_rad_per_sqrt_s`` is the Poincare-sphere (Stokes) angle: the step is
exp(-i a.sigma/2) with a ~ N(0, rate^2 dt I), a rotation of the Stokes vector by
|a|, so E[angle^2] = 3 rate^2 t for small angles (tested). In a Jones-space
parametrisation exp(-i alpha.sigma) the Stokes rotation is 2|alpha|, so such an
alpha has standard deviation rate sqrt(dt) / 2 per component. We follow that model on a fixed time grid of
``drift_step_s``, interpolate along the geodesic within a step, and add a slow
deterministic temperature term (a sinusoidal rotation about S3). The walk is
generated in seeded blocks so ``rotation_at(t)`` is a pure function of
(seed, t) whatever order it is queried in.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

# Pauli matrices in the order of the Stokes axes S1, S2, S3.
_SIGMA = np.array([[[1, 0], [0, -1]], [[0, 1], [1, 0]], [[0, -1j], [1j, 0]]], dtype=complex)
IDENTITY = np.eye(2, dtype=complex)

#: Alice's four nominal states in slot order ``basis*2 + bit``: H, V, D, A (physical angles, degrees).
STATE_ANGLES_DEG = (0.0, 90.0, 45.0, -45.0)
#: Bob's four analyser projections, detector order H, V, D, A.
_R = 2 ** -0.5
DETECTOR_VECTORS = np.array([[1, 0], [0, 1], [_R, _R], [_R, -_R]], dtype=complex)


def linear_state(angle_rad: float) -> np.ndarray:
    """Jones vector of linear polarization at a physical angle."""
    return np.array([math.cos(angle_rad), math.sin(angle_rad)], dtype=complex)


def alice_states(prep_error_deg: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)) -> np.ndarray:
    """(4, 2) Jones vectors of H, V, D, A with per-state angle errors (degrees)."""
    return np.array([linear_state(math.radians(a + e)) for a, e in zip(STATE_ANGLES_DEG, prep_error_deg,
                                                                         strict=True)])


def su2_rotation(axis_angle: np.ndarray) -> np.ndarray:
    """U = exp(-i (a . sigma) / 2) for rotation vector(s) ``a`` (shape (..., 3)) on the Poincare sphere."""
    a = np.asarray(axis_angle, dtype=float)
    theta = np.linalg.norm(a, axis=-1)
    safe = np.where(theta > 0, theta, 1.0)
    n = a / safe[..., None]
    c = np.cos(theta / 2)[..., None, None]
    s = np.sin(theta / 2)[..., None, None]
    ns = np.einsum("...k,kij->...ij", n, _SIGMA)
    return c * IDENTITY - 1j * s * ns


def rotation_about_s3(theta_rad: float) -> np.ndarray:
    """Poincare rotation by theta about S3 = physical rotation of linear polarization by theta/2."""
    return su2_rotation(np.array([0.0, 0.0, theta_rad]))


def linear_rotation(angle_rad: float) -> np.ndarray:
    """Physical rotation of linear polarization by ``angle_rad`` (QBER in both bases = sin^2 angle)."""
    return rotation_about_s3(2.0 * angle_rad)


def retarder(retardance_rad: float, fast_axis_rad: float) -> np.ndarray:
    """Jones matrix of a linear retarder (waveplate): R(t) diag(e^{-i d/2}, e^{i d/2}) R(-t)."""
    c, s = math.cos(fast_axis_rad), math.sin(fast_axis_rad)
    r = np.array([[c, -s], [s, c]], dtype=complex)
    d = np.diag([np.exp(-0.5j * retardance_rad), np.exp(0.5j * retardance_rad)])
    return r @ d @ r.T


def mpc320_rotation(paddle_angles_deg: tuple[float, float, float],
                    retardances_rad: tuple[float, float, float] = (math.pi / 2, math.pi, math.pi / 2),
                    ) -> np.ndarray:
    """Unitary of a three-paddle controller (Thorlabs MPC320 style: lambda/4, lambda/2, lambda/4).

    Each paddle is a retarder whose fast axis turns with the paddle angle; light
    crosses paddle 1 first, so U = P3 P2 P1. Real paddles are only approximately
    lambda/4 and lambda/2 at a given wavelength: pass ``retardances_rad`` to model that.
    """
    if len(paddle_angles_deg) != 3 or len(retardances_rad) != 3:
        raise ValueError("paddle_angles_deg and retardances_rad: expected 3 values each")
    u = IDENTITY
    for ang, ret in zip(paddle_angles_deg, retardances_rad, strict=True):
        u = retarder(ret, math.radians(ang)) @ u
    return u


def epc400_rotation(voltages_v: tuple[float, ...], v_pi_v: float | tuple[float, ...] = 2.5,
                    axes_deg: tuple[float, ...] = (0.0, 45.0, 0.0, 45.0)) -> np.ndarray:
    """Unitary of a four-squeezer controller (OZ Optics EPC-400 style).

    Each fiber squeezer is a linear retarder with retardance proportional to its
    drive voltage, delta_i = pi V_i / V_pi_i, its axis alternating 0 and 45 degrees
    so any SOP can be reached; light crosses squeezer 1 first. ``v_pi_v`` (voltage
    for a half-wave retardance) is a model parameter, not a vendor figure.
    """
    n = len(axes_deg)
    if len(voltages_v) != n:
        raise ValueError(f"voltages_v: expected {n} values, got {len(voltages_v)}")
    vpi = (v_pi_v,) * n if isinstance(v_pi_v, int | float) else tuple(v_pi_v)
    if len(vpi) != n or any(v <= 0 for v in vpi):
        raise ValueError(f"v_pi_v: expected a positive number or {n} positive numbers, got {v_pi_v!r}")
    u = IDENTITY
    for v, vp, ax in zip(voltages_v, vpi, axes_deg, strict=True):
        u = retarder(math.pi * float(v) / vp, math.radians(ax)) @ u
    return u


def check_unitary(u: np.ndarray, name: str = "u") -> np.ndarray:
    """Return ``u`` as a complex 2x2 array, or raise ValueError if it is not unitary."""
    try:
        m = np.asarray(u, dtype=complex)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected a 2x2 complex matrix") from exc
    if m.shape != (2, 2) or not np.all(np.isfinite(m)):
        raise ValueError(f"{name}: expected a finite 2x2 matrix, got shape {m.shape}")
    if not np.allclose(m.conj().T @ m, IDENTITY, atol=1e-6):
        raise ValueError(f"{name}: not unitary (U^dagger U != I)")
    return m


def poincare_angle(u: np.ndarray, v: np.ndarray) -> float:
    """Angle on the Poincare sphere between two unitaries' action (0 = same rotation up to phase)."""
    w = np.asarray(u).conj().T @ np.asarray(v)
    tr = abs(np.trace(w)) / 2.0
    return 2.0 * math.acos(min(1.0, tr))


class FiberDrift:
    """Polarization rotation of the fiber as a function of emulated time (seconds).

    ``rotation_at(t) = U_temp(t) @ U_walk(t) @ U_init``; see the module docstring.
    """

    BLOCK = 4096            # random-walk steps generated per seeded block

    def __init__(self, seed: int, rate_rad_per_sqrt_s: float, step_s: float = 1e-3,
                 temperature_amplitude_rad: float = 0.0, temperature_period_s: float = 3600.0,
                 initial_rotation_rad: float = 0.0, stream: int = 0x0D21F7):
        self.seed = int(seed)
        self.rate = float(rate_rad_per_sqrt_s)
        self.step_s = float(step_s)
        self.temp_amp = float(temperature_amplitude_rad)
        self.temp_period = float(temperature_period_s)
        self.u_init = rotation_about_s3(initial_rotation_rad)
        self._stream = stream
        self._starts: list[np.ndarray] = [IDENTITY.copy()]   # walk matrix at the start of each block
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def _increments(self, block: int) -> np.ndarray:
        ss = np.random.SeedSequence(self.seed, spawn_key=(self._stream, block))
        rng = np.random.Generator(np.random.PCG64DXSM(ss))
        return rng.standard_normal((self.BLOCK, 3)) * (self.rate * math.sqrt(self.step_s))

    def _block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """(walk matrices at each step start within the block, increments) for one block."""
        hit = self._cache.get(block)
        if hit is not None:
            self._cache.move_to_end(block)
            return hit
        while len(self._starts) <= block:           # extend block starts in order (cheap, once)
            b = len(self._starts) - 1
            w, a = self._compute(b)
            self._starts.append(su2_rotation(a[-1]) @ w[-1])
        w, a = self._compute(block)
        self._cache[block] = (w, a)
        if len(self._cache) > 4:
            self._cache.popitem(last=False)
        return w, a

    def _compute(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        a = self._increments(block)
        m = su2_rotation(a)                         # (B, 2, 2) step matrices
        # Inclusive prefix product P[i] = M_i ... M_0 (Hillis-Steele scan, log2(B) matmuls).
        p = m.copy()
        d = 1
        while d < len(p):
            p[d:] = p[d:] @ p[:-d]
            d *= 2
        w = np.empty_like(p)
        w[0] = self._starts[block]
        w[1:] = p[:-1] @ self._starts[block]
        return w, a

    def walk_at(self, t_s: float) -> np.ndarray:
        """Random-walk part only."""
        if self.rate == 0.0:
            return IDENTITY.copy()
        if t_s < 0 or not math.isfinite(t_s):
            raise ValueError(f"t_s: expected a finite time >= 0, got {t_s!r}")
        k = int(t_s // self.step_s)
        frac = t_s / self.step_s - k
        block, i = divmod(k, self.BLOCK)
        w, a = self._block(block)
        return su2_rotation(frac * a[i]) @ w[i]

    def rotation_at(self, t_s: float) -> np.ndarray:
        """Jones matrix of the fiber at emulated time ``t_s`` (seconds from the start of the run)."""
        u = self.walk_at(t_s) @ self.u_init
        if self.temp_amp:
            u = rotation_about_s3(self.temp_amp * math.sin(2 * math.pi * t_s / self.temp_period)) @ u
        return u

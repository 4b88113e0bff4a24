"""Polarization calibration: bring Z and X back to Alice's frame with Bob's polarization controller.

What it is for: the fiber turns Alice's H/V/D/A states by an unknown, slowly
drifting rotation; Bob's controller (EPC-400 fiber squeezers in mV, MPC320
paddles in degrees) must undo it in BOTH bases (aligning H/V alone leaves D/A
anywhere on a great circle). ``align`` finds settings from any starting
rotation; ``calibration.tracking`` keeps them right while key is made. Both talk to the
controller only through the common ``drivers.interfaces.PolarizationController``
surface (``set_actuators`` / ``get_actuators`` / ``actuator_range``), and to the
light only through measured click counts. They must not use any model of the
controller's optics (``hil.optics`` is the emulator's physics; a real
controller's V_pi, paddle retardance and fiber pigtails are unknown) and must
never send a setting outside the controller's range.

What is measured. Alice sends reference frames (half Z, half X, signal
intensity); Bob's single clicks per (Alice's state, detector) give, for input H
and D (and -V, -A), the S1 and S2 Stokes components of what reaches Bob's
analyser: R11, R21 (input H) and R12, R22 (input D) of the 3x3 rotation R on
the Poincare sphere. The basis error rates follow: QBER_Z = (1 - R11)/2,
QBER_X = (1 - R22)/2 (single clicks, before dark counts).

Method, and why: a model-free Levenberg-Marquardt search on the four signed
components r = (R11 - 1, R21, R12, R22 - 1), with the Jacobian with respect to
the actuators measured by finite differences (one extra measurement per
actuator: a dither). Why: (1) it needs no model of the controller, so it works
unchanged on both drivers and on real hardware; (2) each measurement gives four
signed numbers, not just two error rates, so the search knows in which direction
to move (a simplex on QBER_Z + QBER_X only sees a scalar and needs many more
measurements, ~50-150 in 4-D); (3) near the optimum the residual is linear in
the settings and Gauss-Newton converges in a few steps (Nocedal and Wright,
Numerical Optimization, 2nd ed., sec. 10.3, eq. 10.24 for the LM step). The
alternative of computing R from two non-orthogonal reference states and
inverting it needs exactly the controller model we refuse to assume, and a
passive BB84 receiver does not even measure S3 (the sign of R31, R32 is
ambiguous). Gauss-Newton can stall at a saddle far from the optimum (e.g. a
rotation by pi), so the search starts from the best of a few random settings
spread over the controller's range (a bounded global phase). The residual
also carries |R31| and |R32| (from the unit columns of R), which makes it first
order in all three residual angles and its square sum exactly 4 (QBER_Z +
QBER_X) (``_align_residual``); the same residual from per-basis error counts
alone (R11, R22 and their sqrt(1 - R^2)) lets the engine re-align from its key
blocks (``Measurement.from_error_counts``, ``calibration.tracking``). A descent
that stops making progress (noise, or a fold of the MPC320's paddle map, where
b = (a + c)/2 mod 45 deg and one direction acts only to second order) tries a
long step along the common rotation of all paddles (exact for any paddles: it
turns the whole controller about the beam) and along the Jacobian's weakest
direction, then gives its budget to another start. A paddle step past the end of
travel goes to the equivalent setting inside the range (``_Driver.equivalents``:
paddle periodicity and the lambda/4-lambda/2-lambda/4 layout's second family;
the one piece of the controller's nominal layout used, from its datasheet).
Other steps are projected onto the controller's range; if the best reachable setting is still
misaligned the routine raises :class:`PolarizationError` naming the actuator at
its limit and leaves the controller at the best setting found (a safe state).

Every measurement is counted with the emulated/real link time it took (frames
x frame duration), so reports give the number of steps and the time at the
link's clock rate.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from drivers.errors import DriverError

__all__ = ["AlignResult", "LinkProbe", "Measurement", "PolarizationError", "align", "counts_from_frame"]

log = logging.getLogger(__name__)


class PolarizationError(RuntimeError):
    """Alignment/tracking failed (controller not answering, range limit, no light): names why."""


@dataclass(frozen=True)
class Measurement:
    """Single-click counts ``counts[state, detector]`` (state H V D A = basis*2+bit; detector H V D A)."""

    counts: np.ndarray
    link_s: float
    signed: bool = True     # False: only per-basis error counts are known (``from_error_counts``)
    # False: Z was not measured (a key block the engine aborted on its X error rate); the Z counts are
    # a stand-in of 50 % errors that ranks the setting as bad but says nothing about a slope
    z_known: bool = True
    # pulses of each state (H V D A) in the frames counted (``LinkProbe``; None where unknown)
    sent: np.ndarray | None = None

    @classmethod
    def from_error_counts(cls, n_z: int, errors_z: int, n_x: int, errors_x: int,
                          link_s: float = 0.0, z_known: bool = True) -> Measurement:
        """What a key-making block discloses: sifted bits and bit errors per basis, no reference
        states. Stored as counts of Alice's H and D against Bob's right/wrong detector, so the QBERs,
        sums and R11 = 1 - 2 QBER_Z, R22 = 1 - 2 QBER_X hold; the signed off-diagonal components
        are unknown (``components`` is not available: ``signed`` is False)."""
        c = np.zeros((4, 4), np.int64)
        c[0, 0], c[0, 1] = n_z - errors_z, errors_z
        c[2, 2], c[2, 3] = n_x - errors_x, errors_x
        return cls(c, float(link_s), signed=False, z_known=bool(z_known))

    def _col(self, plus: int, minus: int, arm: tuple[int, int]) -> float:
        c = self.counts
        a, b = arm
        num = float(c[plus, a] - c[plus, b] + c[minus, b] - c[minus, a])
        den = float(c[plus, a] + c[plus, b] + c[minus, b] + c[minus, a])
        if den <= 0:
            raise PolarizationError(f"no clicks from Alice's states {'HVDA'[plus]}/{'HVDA'[minus]} in "
                                    f"detectors {'HVDA'[a]}/{'HVDA'[b]}: is light reaching Bob?")
        return num / den

    @property
    def components(self) -> np.ndarray:
        """(R11, R21, R12, R22): S1/S2 of the output for input H (from H and -V) and D (from D and -A)."""
        return np.array([self._col(0, 1, (0, 1)), self._col(0, 1, (2, 3)),
                         self._col(2, 3, (0, 1)), self._col(2, 3, (2, 3))])

    @property
    def qber_z(self) -> float:
        c = self.counts
        n = c[0, 0] + c[0, 1] + c[1, 0] + c[1, 1]
        return float(c[0, 1] + c[1, 0]) / max(float(n), 1.0)

    @property
    def qber_x(self) -> float:
        c = self.counts
        n = c[2, 2] + c[2, 3] + c[3, 2] + c[3, 3]
        return float(c[2, 3] + c[3, 2]) / max(float(n), 1.0)

    @property
    def sifted(self) -> tuple[int, int]:
        c = self.counts
        return int(c[:2, :2].sum()), int(c[2:, 2:].sum())


def counts_from_frame(slots: np.ndarray, masks: np.ndarray, basis: np.ndarray, bit: np.ndarray) -> np.ndarray:
    """(4, 4) single-click counts per (Alice's state, detector) for one frame of detections."""
    slots = np.asarray(slots).astype(np.int64)
    masks = np.asarray(masks, np.uint8)
    single = (masks != 0) & ((masks & (masks - 1)) == 0)
    s, m = slots[single], masks[single]
    det = np.log2(m).astype(np.int64)
    state = np.asarray(basis, np.int64)[s] * 2 + np.asarray(bit, np.int64)[s]
    return np.bincount(state * 4 + det, minlength=16).reshape(4, 4)


class LinkProbe:
    """Measurements through the link's own front ends (``link.frontend``): Alice emits reference frames,
    Bob's detections of frames emitted since the last ``measure`` call are counted.

    A frame is complete only once later tags arrive (time of flight), so extra reference frames are
    sent until ``frames`` frames emitted after the call are back; they all count in ``link_s``.
    """

    def __init__(self, alice, bob, *, frames: int = 2, seed: int = 0, poll_s: float = 0.05,
                 max_extra: int = 16, intensity: int = 0) -> None:
        self.alice, self.bob = alice, bob
        self.intensity = int(intensity)     # Alice's intensity class for every pulse
        self.frames, self.poll_s, self.max_extra = int(frames), float(poll_s), int(max_extra)
        self._rng = np.random.default_rng(seed)
        self._sent = 0
        self._gen: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}
        self._generation = 0
        self.frame_s = alice.frame_slots / alice.clock_hz
        self.link_s = 0.0

    def _emit(self) -> None:
        n = self.alice.frame_slots
        basis = self._rng.integers(0, 2, n, dtype=np.uint8)
        bit = self._rng.integers(0, 2, n, dtype=np.uint8)
        self.alice.emit(basis, bit, np.full(n, self.intensity, np.uint8))
        self._gen[self._sent] = (self._generation, basis, bit)
        self._sent += 1
        self.link_s += self.frame_s

    def measure(self) -> Measurement:
        self._generation += 1
        start = self.link_s
        counts = np.zeros((4, 4), np.int64)
        sent = np.zeros(4, np.int64)
        got = 0
        for _ in range(self.frames):
            self._emit()
        extra = 0
        while got < self.frames:
            frames = self.bob.poll(self.poll_s)
            if not frames:
                if extra >= self.max_extra:
                    raise PolarizationError(f"no detections back after {extra} extra frames")
                self._emit()
                extra += 1
                continue
            for fd in frames:
                entry = self._gen.pop(fd.frame_index, None)
                if entry is None or entry[0] != self._generation:
                    continue
                counts += counts_from_frame(fd.slots, fd.masks, entry[1], entry[2])
                sent += np.bincount(entry[1].astype(np.int64) * 2 + entry[2], minlength=4)
                got += 1
        for k in [k for k, v in self._gen.items() if v[0] != self._generation]:
            del self._gen[k]
        return Measurement(counts, self.link_s - start, sent=sent)


@dataclass
class AlignResult:
    settings: np.ndarray
    qber_z: float
    qber_x: float
    measurements: int
    link_s: float
    history: list = field(default_factory=list)     # (settings, qber_z, qber_x) per measurement

    def summary(self, unit: str = "") -> str:
        return (f"aligned: QBER_Z {self.qber_z * 100:.3f} %, QBER_X {self.qber_x * 100:.3f} % after "
                f"{self.measurements} measurements = {self.link_s * 1e3:.2f} ms of link time; settings "
                + ", ".join(f"{v:.1f}" for v in self.settings) + (f" {unit}" if unit else ""))


def _residual(m: Measurement) -> np.ndarray:
    return m.components - np.array([1.0, 0.0, 0.0, 1.0])


def _align_residual(m: Measurement) -> np.ndarray:
    """The four signed components and the magnitudes of the two unmeasured ones (|R31|, |R32|: a
    passive receiver sees no circular light, but each column of R is a unit vector, so
    |R31| = sqrt(1 - R11^2 - R21^2)). Near alignment, with a residual rotation w, R21 ~ -R12 ~ w3
    while R11 - 1 and R22 - 1 are quadratic in w1, w2: Gauss-Newton on the four alone converges only
    linearly (halving w per step) and its Jacobian vanishes with w, so noise stalls it; |R31| ~ |w2|
    and |R32| ~ |w1| are first order. And r.r = 2(1 - R11) + 2(1 - R22) = 4 (QBER_Z + QBER_X):
    the least-squares cost is exactly the misalignment error rate."""
    if not m.signed:
        # per-basis error counts only: R11, R22 and the magnitudes sqrt(1 - R11^2) ~ |(w2, w3)|,
        # sqrt(1 - R22^2) ~ |(w1, w3)| (first order, unsigned); r.r = 4 (QBER_Z + QBER_X) again
        r11, r22 = 1.0 - 2.0 * m.qber_z, 1.0 - 2.0 * m.qber_x
        return np.array([r11 - 1.0, r22 - 1.0, math.sqrt(max(0.0, 1.0 - r11 * r11)),
                         math.sqrt(max(0.0, 1.0 - r22 * r22))])
    r11, r21, r12, r22 = m.components
    return np.array([r11 - 1.0, r21, r12, r22 - 1.0,
                     math.sqrt(max(0.0, 1.0 - r11 * r11 - r21 * r21)),
                     math.sqrt(max(0.0, 1.0 - r12 * r12 - r22 * r22))])


class _Driver:
    """The controller through its interface, with errors turned into PolarizationError."""

    def __init__(self, controller) -> None:
        self.c = controller
        lo, hi = controller.actuator_range
        self.lo, self.hi = float(lo), float(hi)
        self.n = int(controller.n_actuators)
        self.unit = str(controller.actuator_unit)
        self.name = getattr(controller, "name", type(controller).__name__)
        waves = getattr(controller, "paddle_retardance_waves", None)
        self.waves = (tuple(float(w) for w in waves)
                      if waves is not None and self.unit == "deg" and len(waves) == self.n else None)

    def equivalents(self, x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Settings inside the range with the same (nominal) transform as ``x`` (which may lie outside
        it), each with the Jacobian A of the map x -> x' (an offset e in settings becomes A e), nearest
        to ``x`` first. Empty for a controller without paddles (EPC-400: no such symmetry).

        Why these: a retarder turned by 180 deg is the same retarder, whatever its retardance (its
        Jones matrix R(t) D R(-t) has R(t + pi) = -R(t)), so every paddle angle is periodic with 180
        deg; a half-wave paddle (nominal) also with 90 deg (its axes swap, up to a global phase). For
        the MPC320's lambda/4, lambda/2, lambda/4 (paddle 1 first, U = Q(c) H(b) Q(a)) a second family:
        Q(t + 90) = Q(t)^-1, Q(t)^2 = H(t) and H(x) H(y) H(z) = H(x - y + z) (pi rotations about
        in-plane axes of the Poincare sphere) give Q(c + 90) H(a + c - b) Q(a + 90) = Q(c) H(b) Q(a),
        so (a, b, c) and (a + 90, a + c - b, c + 90) set the same rotation (Jacobian [[1,0,0],[1,-1,1],
        [0,0,1]], its own inverse). With 0..170 deg paddles the 10-deg gap of a quarter-wave paddle is
        always reachable through the other family. Real paddles are only nominally lambda/4 and
        lambda/2, so a jump lands near, not exactly at, the same rotation: callers measure again."""
        if self.waves is None:
            return []
        x = np.asarray(x, float)
        eye = np.eye(self.n)
        fams = [(x, eye)]
        if self.n == 3 and self.waves == (0.25, 0.5, 0.25):
            a, b, c = x
            fams.append((np.array([a + 90.0, a + c - b, c + 90.0]),
                         np.array([[1.0, 0, 0], [1.0, -1.0, 1.0], [0, 0, 1.0]])))
        out: list[tuple[np.ndarray, np.ndarray]] = []
        for y, A in fams:
            choices = []
            for i in range(self.n):
                p = 90.0 if self.waves[i] == 0.5 else 180.0
                k0 = math.ceil((self.lo - y[i]) / p - 1e-12)
                vals = [y[i] + k * p for k in range(k0, k0 + int((self.hi - self.lo) // p) + 2)]
                choices.append([v for v in vals if self.lo <= v <= self.hi])
            for combo in np.array(np.meshgrid(*choices, indexing="ij")).reshape(self.n, -1).T:
                out.append((combo.astype(float), A))
        out.sort(key=lambda e: float(np.abs(e[0] - x).max()))
        return out

    def into_range(self, target: np.ndarray, origin: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray | None]:
        """``target`` if inside the range; else the equivalent setting inside it nearest ``origin``
        (least paddle travel) and its Jacobian; else ``target`` clipped and None (no equivalent)."""
        target = np.asarray(target, float)
        if np.all((target >= self.lo) & (target <= self.hi)):
            return target, np.eye(self.n)
        eq = self.equivalents(target)
        if not eq:
            return np.clip(target, self.lo, self.hi), None
        ref = target if origin is None else np.asarray(origin, float)
        return min(eq, key=lambda e: float(np.abs(e[0] - ref).max()))

    def set(self, x: np.ndarray) -> None:
        x = np.asarray(x, float)
        if np.any(x < self.lo) or np.any(x > self.hi):       # never reached: steps are projected
            raise PolarizationError(f"{self.name}: refusing to send {x} outside [{self.lo}, {self.hi}] "
                                    f"{self.unit}")
        try:
            self.c.set_actuators([float(v) for v in x])
        except DriverError as exc:
            raise PolarizationError(f"{self.name}: controller did not accept {np.round(x, 2).tolist()} "
                                    f"{self.unit}: {exc}") from exc

    def get(self) -> np.ndarray:
        try:
            return np.asarray(self.c.get_actuators(), float)
        except DriverError as exc:
            raise PolarizationError(f"{self.name}: controller stopped answering: {exc}") from exc


def align(controller, measure: Callable[[], Measurement], *, seed: int = 0, starts: int = 10,
          max_measurements: int = 100, target_qber: float = 0.002, dither_fraction: float = 0.03,
          max_step_fraction: float = 0.25, confirm_reps: int = 8,
          fail_qber: float = 0.005) -> AlignResult:
    """Find controller settings that bring Z and X back to Alice's frame (module docstring).

    ``measure()`` returns one :class:`Measurement` taken with the controller as
    last set. Stops when both measured QBERs are <= ``target_qber`` or after
    ``max_measurements`` settings; the controller is left at the best setting
    measured, which is then measured again ``confirm_reps`` times longer for
    the QBERs reported (the best of many noisy measurements is biased low).
    Raises :class:`PolarizationError` when the best setting is still above
    ``fail_qber`` in a basis (confirmed measurement) (naming actuators at their range limits),
    or when the controller stops answering.
    """
    dev = _Driver(controller)
    span = dev.hi - dev.lo
    rng = np.random.default_rng(seed)
    hist: list = []
    link_s = 0.0
    best: tuple[float, np.ndarray, Measurement] | None = None

    def reps_for(cost: float) -> int:
        # more light per step near the optimum, where the residual is small against the counting noise
        return 1 if cost > 0.04 else 2 if cost > 0.01 else 4

    def measure_n(n: int) -> Measurement:
        nonlocal link_s
        ms = [measure() for _ in range(n)]
        link_s += sum(m.link_s for m in ms)
        return Measurement(sum(m.counts for m in ms), sum(m.link_s for m in ms), ms[0].signed,
                           all(m.z_known for m in ms))

    def probe(x: np.ndarray, reps: int = 1) -> tuple[Measurement, np.ndarray]:
        nonlocal best
        dev.set(x)
        m = measure_n(reps)
        r = _align_residual(m)
        hist.append((x.copy(), m.qber_z, m.qber_x))
        cost = float(r @ r)
        if best is None or cost < best[0]:
            best = (cost, x.copy(), m)
        log.debug("settings %s: QBER_Z %.4f QBER_X %.4f", np.round(x, 2), m.qber_z, m.qber_x)
        return m, r

    def done(m: Measurement) -> bool:
        return m.qber_z <= target_qber and m.qber_x <= target_qber

    # global phase: the current setting and a few random ones spread over the range
    x0 = np.clip(dev.get(), dev.lo, dev.hi)
    cands = [x0] + [rng.uniform(dev.lo, dev.hi, dev.n) for _ in range(max(0, starts - 1))]
    scored = []
    for x in cands:
        m, r = probe(x)
        scored.append((float(r @ r), x, m))
        if done(m):
            break
    scored.sort(key=lambda e: e[0])

    def descend(x: np.ndarray, m: Measurement) -> None:
        """Levenberg-Marquardt from (x, m) until done, stuck or out of budget."""
        r = _align_residual(m)
        bx, bm, br = x, m, r                     # this descent's best (the global best may be elsewhere)
        lam, shrink = 1e-2, 1.0
        costs: list[float] = []
        J: np.ndarray | None = None
        escapes = 0

        def escape() -> bool:
            """Near a fold of the controller's map (the MPC320's paddles lose a degree of freedom where
            b = (a + c)/2 mod 45 deg) the settings along the Jacobian's weakest direction change the
            rotation only to second order, so Gauss-Newton does not move along it, though the target
            may lie a few tens of degrees that way: try a large step each way along it (two probes).
            Paddles also have an exact symmetry whatever their retardance: turning all of them by the
            same angle turns the whole controller about the beam (C -> R C R^-1, R about S3), a
            direction along which the cost near a fold forms a long valley: tried first for them."""
            nonlocal bx, bm, br, escapes, costs
            if J is None or escapes >= 3 or len(hist) + 2 > max_measurements:
                return False
            escapes += 1
            if dev.waves is not None and escapes <= 2:
                v = np.ones(dev.n)
            else:
                v = np.linalg.svd(J)[2][-1]
                v = v / np.abs(v).max()
            for t in (0.1 * span, -0.1 * span):
                xn, _ = dev.into_range(bx + t * v, bx)
                mn, rn = probe(xn, reps_for(float(br @ br)))
                if rn @ rn < 0.8 * (br @ br):
                    bx, bm, br = xn, mn, rn
                    costs = []
                    return True
            return False

        while not done(bm) and len(hist) + dev.n + 1 <= max_measurements:
            x, m, r = bx, bm, br
            cost = float(r @ r)
            costs.append(cost)
            # no real progress over three iterations (noise accepted as "better", or a fold with the
            # target beyond it): look along the weak direction, else give the budget to another start
            if len(costs) >= 4 and cost > 0.6 * costs[-4]:
                if escape():
                    continue
                return
            reps = reps_for(cost)
            if m.counts.sum() < 0.75 * reps * cands_counts:
                m, r = probe(x, reps)            # re-measure the base point as precisely as the dithers
                bm, br = m, r
            # Jacobian by forward differences (a dither of each actuator, smaller near the optimum where
            # the landscape is curved on the scale of the misalignment), away from the range edge
            h = shrink * float(np.clip(0.1 * math.sqrt(cost), 0.5, 1.0)) * dither_fraction * span
            J = np.empty((r.size, dev.n))
            for i in range(dev.n):
                # a dither that crosses the engine's abort threshold (Z not measured, a 50 % stand-in)
                # is a jump in the residual, not its slope: near such a setting the valley to the
                # aligned one is narrower than h along that actuator, and that one column swamped the
                # step (a recovery stalled at QBER_X 9 % with the aligned setting 500 mV away): take the
                # other side, then a quarter of the dither, while the base itself was measured
                for step in (h, -h, h / 4, -h / 4):
                    xi = x.copy()
                    if not dev.lo <= xi[i] + step <= dev.hi:
                        continue
                    xi[i] += step
                    mi, ri = probe(xi, reps)
                    if mi.z_known or not m.z_known or len(hist) + dev.n - i > max_measurements:
                        break
                J[:, i] = (ri - r) / step
                if done(mi):
                    return
            # Levenberg-Marquardt step (Nocedal & Wright eq. 10.24), clipped and projected onto the range
            improved = False
            tries = 0
            while len(hist) < max_measurements and tries < 5:
                tries += 1
                A = J.T @ J
                delta = -np.linalg.solve(A + lam * np.diag(np.diag(A) + 1e-12), J.T @ r)
                lim = max_step_fraction * span
                if np.abs(delta).max() > lim:
                    delta *= lim / np.abs(delta).max()
                # a paddle past its end of travel: the equivalent setting inside the range (same rotation)
                xn, _ = dev.into_range(x + delta, x)
                mn, rn = probe(xn, reps)
                if rn @ rn < r @ r:
                    bx, bm, br = xn, mn, rn
                    lam = max(lam / 3, 1e-6)
                    improved = True
                    break
                lam *= 8
            if not improved:
                # stuck (noise floor or a range edge): a fresh, smaller Jacobian from the best point
                lam, shrink = 1e-2, shrink * 0.5
                at_edge = np.any(np.minimum(bx - dev.lo, dev.hi - bx) <= 1e-3 * span)
                if shrink < 0.1 or at_edge:
                    if escape():
                        shrink = 1.0
                        continue
                    return

    cands_counts = float(np.mean([e[2].counts.sum() for e in scored]))
    # restart from the next-best start if a descent gets stuck, then from kicks around the best point
    # (a random move of a quarter of the range: off a fold, onto another basin)
    starts_left = [(x, m) for _, x, m in scored[:3]]
    while best is None or not done(best[2]):
        if len(hist) + 2 * (dev.n + 1) > max_measurements:
            break
        if starts_left:
            x, m = starts_left.pop(0)
        else:
            near = max(best[2].qber_z, best[2].qber_x) < 0.02      # a narrow valley: look nearby
            x, _ = dev.into_range(best[1] + rng.normal(0.0, (0.08 if near else 0.25) * span, dev.n),
                                  best[1])
            m, _ = probe(x)
        descend(x, m)
    assert best is not None
    _, xb, _ = best
    dev.set(xb)                             # safe state: the best setting measured
    # the best of many noisy measurements looks better than it is: measure it again, longer
    mb = measure_n(confirm_reps)
    steps = len(hist) + 1
    res = AlignResult(xb, mb.qber_z, mb.qber_x, steps, link_s, hist)
    if mb.qber_z > fail_qber or mb.qber_x > fail_qber:
        at = [i + 1 for i in range(dev.n)
              if min(xb[i] - dev.lo, dev.hi - xb[i]) <= 1e-3 * span]
        why = (f"actuator(s) {at} at the range limit [{dev.lo:g}, {dev.hi:g}] {dev.unit}" if at
               else "search did not converge")
        raise PolarizationError(f"{dev.name}: alignment failed, best QBER_Z {mb.qber_z:.4f} QBER_X "
                                f"{mb.qber_x:.4f} after {steps} measurements ({why}); controller left "
                                f"at the best setting {np.round(xb, 2).tolist()} {dev.unit}")
    return res


def misalignment_qber(r11: float, r22: float) -> tuple[float, float]:
    """QBER from misalignment alone in Z and X given the rotation's diagonal (module docstring)."""
    return (1 - r11) / 2, (1 - r22) / 2


@dataclass
class TrackStep:
    settings: np.ndarray
    qber_z: float
    qber_x: float
    action: str                     # "hold", "step", "base", "dither", "undo", "recenter", "realign"


class Tracker:
    """Keeps Z and X aligned while key is made, from per-block counts (a :class:`Measurement` of the
    block's disclosed data: Alice's states against Bob's single clicks).

    Superseded for the engine by :class:`calibration.tracking.PolarizationTracking`, which needs only
    the per-basis error counts every block already has and meets the 0.5 % bound at 0.1 rad/sqrt(s);
    this Gauss-Newton loop misses it because near alignment two of the three angles are second order
    in the signed components (kept for the reference-frame probe and its tests).

    Method, and why: the same signed residual as :func:`align`, corrected by small Gauss-Newton steps
    with a Jacobian that starts from a dither of each actuator and is kept current with Broyden's rank-1
    update after every step (Nocedal and Wright, 2nd ed., eq. 11.27) plus one re-dither of one actuator
    (round robin) every ``dither_every`` blocks, because the fiber moves the Jacobian too. A step that
    makes the next block clearly worse is undone and the whole Jacobian re-dithered. Steps are taken
    only when a block's QBER is above ``deadband`` and are clipped to ``max_step_fraction`` of the
    range, so the loop itself adds little QBER. (A two-sided SPGD on QBER_Z + QBER_X was tried and
    tracked worse on the rig at the same block size.) An actuator within ``edge_fraction`` of a limit
    is handled smoothly when the controller has more actuators than the three degrees of freedom of a
    rotation (EPC-400): the setting walks back toward the centre along the Jacobian's null space in
    quarter-size steps, interleaved with ordinary tracking steps. Near alignment the signed
    components see only one rotation angle to first order (a passive receiver measures no circular
    component), so the estimated null space is only approximate: the small steps keep the QBER they
    add low and the tracking steps that follow repair it. Without redundancy (MPC320) ``realign`` (a fresh
    alignment from the current setting) is called if given; otherwise :class:`PolarizationError` is
    raised with the controller held where it is (a safe state).
    """

    def __init__(self, controller, *, max_step_fraction: float = 0.02, dither_fraction: float = 0.008,
                 deadband: float = 0.0015, dither_every: int = 8, edge_fraction: float = 0.05,
                 realign: Callable[[], AlignResult] | None = None) -> None:
        self.dev = _Driver(controller)
        self.span = self.dev.hi - self.dev.lo
        self.max_step = max_step_fraction * self.span
        self.h = dither_fraction * self.span
        self.deadband = deadband
        self.dither_every = int(dither_every)
        self.edge = edge_fraction * self.span
        self.realign = realign
        self.x = np.clip(self.dev.get(), self.dev.lo, self.dev.hi)
        self.J: np.ndarray | None = None
        self._r: np.ndarray | None = None
        self._pending: tuple[str, np.ndarray, int] | None = None   # what the last block measured
        self._dither_all: list[int] = []
        self._block = 0
        self._next_dither = 0
        self.log: list[TrackStep] = []

    def _set(self, x: np.ndarray) -> None:
        x = np.clip(x, self.dev.lo, self.dev.hi)
        self.dev.set(x)
        self.x = x

    def update(self, m: Measurement) -> TrackStep:
        """Feed one block's counts (taken at the setting this tracker last applied); apply the next."""
        r = _residual(m)
        self._block += 1
        n = self.dev.n
        if self.J is None:
            self.J = np.zeros((4, n))
            self._dither_all = list(range(n))
        kind = self._pending[0] if self._pending else "base"
        if kind == "dither" and self._r is not None:
            _, x_base, i = self._pending                   # type: ignore[misc]
            step = self.x[i] - x_base[i]
            self.J[:, i] = (r - self._r) / step
            self._set(x_base)                              # back to where we were (the dither is small)
            self._pending = ("base", x_base, -1)
            return self._record(m, "dither")
        if kind == "step" and self._r is not None:
            _, x_prev, _ = self._pending                   # type: ignore[misc]
            dx = self.x - x_prev
            if r @ r > 2 * (self._r @ self._r) + 4 * self.deadband:
                # the step made things worse: the Jacobian is stale. Undo it and re-dither everything.
                self._set(x_prev)
                self._dither_all = list(range(n))
                self._pending = ("base", x_prev, -1)
                self._r = None
                return self._record(m, "undo")
            if dx @ dx > 0:                                # Broyden rank-1 update (N&W eq. 11.27)
                self.J += np.outer((r - self._r) - self.J @ dx, dx) / (dx @ dx)
        self._r = r
        if self._dither_all:                               # build the Jacobian, one actuator per block
            return self._dither(m, self._dither_all.pop(0))
        if self.dither_every and self._block % self.dither_every == 0:
            i = self._next_dither % n
            self._next_dither += 1
            return self._dither(m, i)
        near = np.minimum(self.x - self.dev.lo, self.dev.hi - self.x) < self.edge
        last = self.log[-1].action if self.log else ""
        if near.any() and last != "recenter":              # a reset before a limit is hit, every
            return self._recenter(m, near)                 # other block: tracking steps in between
        if max(m.qber_z, m.qber_x) <= self.deadband:
            self._pending = ("base", self.x.copy(), -1)
            return self._record(m, "hold")
        delta = -np.linalg.lstsq(self.J, r, rcond=1e-3)[0]
        if np.abs(delta).max() > self.max_step:
            delta *= self.max_step / np.abs(delta).max()
        x_prev = self.x.copy()
        self._set(self.x + delta)
        self._pending = ("step", x_prev, -1)
        return self._record(m, "step")

    def _dither(self, m: Measurement, i: int) -> TrackStep:
        x_base = self.x.copy()
        xi = x_base.copy()
        xi[i] += self.h if xi[i] + self.h <= self.dev.hi else -self.h
        self._set(xi)
        self._pending = ("dither", x_base, i)
        return self._record(m, "base")

    def _recenter(self, m: Measurement, near: np.ndarray) -> TrackStep:
        assert self.J is not None
        n = self.dev.n
        sv = np.linalg.svd(self.J, compute_uv=False)
        if n > 3 and sv[0] > 0:
            null = np.linalg.svd(self.J)[2][-1]            # direction the rotation does not see
            centre = (self.dev.lo + self.dev.hi) / 2
            want = np.where(near, centre - self.x, 0.0)
            direction = null * (1.0 if null @ want >= 0 else -1.0)
            x_prev = self.x.copy()
            self._set(self.x + direction / np.abs(direction).max() * 0.25 * self.max_step)
            self._pending = ("step", x_prev, -1)
            return self._record(m, "recenter")
        if self.realign is None:
            at = [int(i) + 1 for i in np.flatnonzero(near)]
            raise PolarizationError(f"{self.dev.name}: actuator(s) {at} at the edge of "
                                    f"[{self.dev.lo:g}, {self.dev.hi:g}] {self.dev.unit} and no redundancy "
                                    f"to walk back; controller held at {np.round(self.x, 2).tolist()}")
        res = self.realign()
        self.x = np.asarray(res.settings, float)
        self.J = None
        self._pending = None
        self._r = None
        return self._record(m, "realign")

    def _record(self, m: Measurement, action: str) -> TrackStep:
        st = TrackStep(self.x.copy(), m.qber_z, m.qber_x, action)
        self.log.append(st)
        return st

"""The physical model of one QKD link: Alice's source, the fiber, Bob's optics and detectors,
the time tagger and an optional eavesdropper, frame by frame, from (scenario, seed).

What it is for: producing, for each frame of Alice's pattern, the detector
clicks Bob's time tagger would report (and what Eve learned), fast enough to
feed the link engine at real detector rates. The emulated instruments call it;
it must not speak any wire protocol, know about sifting or keys, or use the
wall clock (it has its own emulated clock: frame f starts at f * frame_slots /
clock_hz seconds).

Method, and why. The hot path is one C call per frame (``hil.kernel``,
``hil/csrc/hil_kernel.c``): the numpy path below stays as the reference
(``run_frame(method="skip")``) and the kernel follows the same sampling in one
streaming pass (candidate slots in batches with packed Walker alias tables for
the geometric gaps and the outcomes, one 64-bit random word per candidate,
dark counts and afterpulses merged in slot order, dead time and afterpulses
applied as they come, Alice's pattern validated as it is read; then ziggurat
jitter and timestamps from a second, jumped stream).
Per frame, every slot belongs to a class (drift segment, intensity, Alice's
state); ``hil.eve`` gives, per class, the joint probability
of Eve's outcome and Bob's photon-induced click mask. Rather than sampling
every pulse (cost ~ slots), we draw *candidate* slots as a Bernoulli(p_max)
process by geometric skips, where p_max is the largest click probability of
any class, and accept a candidate of class c with outcome (e, m) with
probability P(e, m | c) / p_max (thinning; Lewis and Shedler, Naval Res.
Logistics Q. 26, 1979, for the continuous-time version). Each slot then clicks
with exactly P(m | c), independently, and the cost grows with clicks, not
slots. Alice's full pattern is only read at candidate slots. Dark counts are
independent Bernoulli processes per detector (skip-sampled too); slots that
click only by dark count draw Eve's outcome from P(e | m = 0, c), which keeps the
joint law exact. Dead time and afterpulsing are applied per detector on the
sorted click streams (``hil.detectors``), timestamps come from
``hil.tagger``.

Determinism: every random draw of frame f comes from its own stream,
SeedSequence(seed, spawn_key=(stream, f)) (the kernel's xoshiro256** is seeded
with four words of it; its jitter stream is that generator jumped 2^128 draws),
so the same scenario and seed give the same events
whatever the batch size. The only state carried from one frame
to the next is physical (each detector's last click for its dead time, pending
afterpulses); it is carried when frames are run in order and reset when a
frame index is skipped or repeated out of order.

Physics checked against closed forms (``tests/test_hil_physics_audit.py``): gains and
QBER per intensity follow Lo, Ma and Chen, PRL 94, 230504 (2005), eqs. (3)-(4) with
eta per Alice's state from the losses, Bob's split, the efficiencies and Malus's
law; a coherent pulse splits into independent Poisson numbers at Bob's passive
beam splitter (the four detectors click independently; a Fock state from Eve
splits multinomially, ``hil.eve``); dark counts are a Poisson rate over the whole
slot period (p = 1 - exp(-rate / clock_hz) per detector and slot; their
timestamps are uniform over the period, so the link's detection window keeps only
its share of them); dead time is non-paralyzable and per detector (renewal live
fraction 1 / (1 + (D - 1) p) for D dead slots; Mueller 1973), as for four
free-running SNSPDs. A per-detector dead time is itself a known side channel
(a detector that just clicked cannot click again, so the next clicks favour the
other bit: Weier et al., New J. Phys. 13, 073024 (2011)); the model reproduces
it faithfully, and Bob's slotter drops every event that comes while any detector
may be dead (``link.slotting``'s dead-time guard). At metro-25km it removes ~14 %
of the H and V clicks (10 ns at ~17 M clicks/s per detector). The dead time is
hard (zero efficiency, then full): a real SNSPD's efficiency comes back gradually
over its reset time (Wang et al., arXiv:2508.11832 (2025)), which the model does
not follow. The shipped detector figures (efficiency 0.70, 100 Hz dark counts,
10 ns recovery, jitter sigma 30 ps) are within or more conservative than
published SNSPDs (Esmaeil Zadeh et al., APL Photonics 2, 111301 (2017),
arXiv:1611.02726: > 92 %, < 130 Hz, 14.8 ps jitter; Kerman et al.,
arXiv:1302.2852: recovery <~ 10 ns); 0.2 dB/km and group index 1.468 are
standard single-mode fiber at 1550 nm (Corning SMF-28 data: <= 0.19-0.20 dB/km,
0.17 for the ULL grade).

Approximations (documented, tested where it matters): the polarization rotation
is constant within a drift segment (a frame is split into segments of at most
``drift_step_s``); in the numpy reference afterpulses do not themselves
afterpulse (in the kernel they do); dead time is decided at slot resolution
(jitter ignored). An attack (like a fiber cut) switches on at the first slot at
or after ``start_time_s``: in the frame where it starts, the classes are doubled
(honest slots with Eve's code 0, attacked slots with the attack's table), and
blinding stops dark counts and afterpulses from that slot on.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from . import eve as _eve
from . import kernel as _kernel
from .detectors import afterpulse_slots, bernoulli_positions, dead_time_keep_multi
from .optics import (
    FiberDrift,
    alice_states,
    check_unitary,
    epc400_rotation,
    mpc320_rotation,
)
from .scenario import ATTACKS, Scenario
from .tagger import rate_limit, tagger_clock

log = logging.getLogger(__name__)

C_M_PER_S = 299_792_458.0
STREAM_PATTERN = 1
STREAM_CHANNEL = 2
STREAM_DRIFT = 3
_BITS = ((np.arange(16)[:, None] >> np.arange(4)) & 1).astype(bool)


@dataclass(frozen=True)
class Pattern:
    """Alice's frame pattern: uint8 per slot (basis 0=Z 1=X, bit, intensity class 0/1/2)."""

    basis: np.ndarray
    bit: np.ndarray
    intensity: np.ndarray

    def __len__(self) -> int:
        return len(self.basis)

    def check(self, n: int, values: bool = True) -> Pattern:
        """Validated uint8 views; raise naming the bad field. ``values=False`` checks shapes and
        dtypes only (the C kernel checks the values as it reads them)."""
        out = {}
        for name in ("basis", "bit", "intensity"):
            a = np.asarray(getattr(self, name))
            if a.shape != (n,):
                raise ValueError(f"pattern.{name}: expected shape ({n},), got {a.shape}")
            if a.dtype != np.uint8:
                raise TypeError(f"pattern.{name}: expected dtype uint8, got {a.dtype}")
            out[name] = a
        bad = _kernel.pattern_bad(out["basis"], out["bit"], out["intensity"]) if n and values else 0
        for flag, name, lim in ((1, "basis", 2), (2, "bit", 2), (4, "intensity", 3)):
            if bad & flag:
                raise ValueError(f"pattern.{name}: values must be < {lim}")
        return Pattern(**out)


@dataclass
class DetectorParams:
    efficiency: float
    dark_count_rate_hz: float
    dead_time_ns: float
    afterpulse_prob: float
    afterpulse_time_constant_ns: float
    jitter_ps: float
    delay_ps: float

    _RANGES = {"efficiency": (0.0, 1.0), "dark_count_rate_hz": (0.0, 1e8), "dead_time_ns": (0.0, 1e6),
               "afterpulse_prob": (0.0, 0.5), "afterpulse_time_constant_ns": (0.0, 1e6),
               "jitter_ps": (0.0, 1e6), "delay_ps": (-1e9, 1e9)}


@dataclass
class FrameResult:
    """One frame of the emulated link.

    Per-click view (sorted by slot, then detector): ``slot`` uint64, ``detector``
    uint8, ``time_ps`` int64 tagger timestamps, ``tag_lost`` bool (dropped by the
    tagger's rate limit), ``noise`` bool (dark count or afterpulse).
    Per-slot view: ``slots`` uint64 (sorted, unique), ``mask`` uint8 (bit d =
    detector d clicked). ``tag_t_ps``/``tag_channel``: the tags the tagger
    delivers for this frame (sync channel 0 first tag of the frame, detectors
    1..4), sorted by time; ``lost_tags`` counts the dropped ones. ``eve`` is an
    :class:`hil.eve.EveRecord` aligned with ``slots`` when an attack is on.
    """

    frame_index: int
    start_time_s: float
    duration_s: float
    slot: np.ndarray
    detector: np.ndarray
    time_ps: np.ndarray
    tag_lost: np.ndarray
    noise: np.ndarray
    slots: np.ndarray
    mask: np.ndarray
    tag_t_ps: np.ndarray
    tag_channel: np.ndarray
    lost_tags: int
    sync_ps: int
    eve: _eve.EveRecord | None
    counts: dict = field(default_factory=dict)

    @property
    def tags(self) -> tuple[np.ndarray, np.ndarray]:
        """(t_ps int64 sorted, channel uint8) as delivered by the tagger."""
        return self.tag_t_ps, self.tag_channel

    @property
    def n_events(self) -> int:
        return len(self.slot)


class LinkModel:
    """The emulated optical link. See the module docstring and ``hil/__init__.py``."""

    def __init__(self, scenario: Scenario | str | None = None, seed: int = 0):
        if not isinstance(scenario, Scenario):
            scenario = Scenario.load(scenario)
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
        self.scenario = scenario
        self.seed = int(seed)
        src, fib, bob, det, tag = (scenario.source, scenario.fiber, scenario.bob,
                                   scenario.detectors, scenario.tagger)
        self.clock_hz = float(src.clock_hz)
        self.frame_slots = int(src.frame_slots)
        self.period_ps = 1e12 / self.clock_hz
        self.mu = np.array(src.intensities, dtype=float)
        self.intensity_probs = np.array(src.intensity_probs, dtype=float)
        self.p_z = float(src.p_z)
        self._states = alice_states(src.prep_error_deg)
        self._ideal_states = alice_states()
        self.length_km = float(fib.length_km)
        self.transmittance = 10.0 ** (-fib.attenuation_db_per_km * fib.length_km / 10.0)
        self.tof_ps = fib.length_km * 1e3 * fib.group_index / C_M_PER_S * 1e12
        self.fiber = FiberDrift(self.seed, fib.drift_rad_per_sqrt_s, fib.drift_step_s,
                                fib.temperature_amplitude_rad, fib.temperature_period_s,
                                fib.initial_rotation_rad, stream=STREAM_DRIFT)
        self._drifting = fib.drift_rad_per_sqrt_s > 0 or fib.temperature_amplitude_rad > 0
        self.bob_p_z = float(bob.p_z)
        self.bob_transmittance = 10.0 ** (-bob.insertion_loss_db / 10.0)
        self.detectors = [DetectorParams(det.efficiency[d], det.dark_count_rate_hz[d], det.dead_time_ns[d],
                                         det.afterpulse_prob[d], det.afterpulse_time_constant_ns[d],
                                         det.jitter_ps[d], det.delay_ps[d]) for d in range(4)]
        self.tagger = tag
        self.controller = np.eye(2, dtype=complex)
        self.attack = scenario.attack
        self._version = 0
        self._table_cache: tuple[Any, _eve.OutcomeTables] | None = None
        self._frame_switch: int | None = None
        self._ws = _kernel.Workspace()
        self._const: tuple[int, dict] | None = None         # per-version constants (see _constants)
        self._reset_carry()

    # -- public helpers -------------------------------------------------------
    @property
    def frame_duration_s(self) -> float:
        return self.frame_slots / self.clock_hz

    def frame_start_s(self, frame_index: int) -> float:
        return frame_index * self.frame_slots / self.clock_hz

    def rotation_at(self, t_s: float) -> np.ndarray:
        """Total rotation seen by Bob's analyser at time t: controller @ fiber(t)."""
        return self.controller @ self.fiber.rotation_at(t_s)

    def expected_click_probability(self, intensity: int, state: int, detector: int,
                                   t_s: float = 0.0) -> float:
        """Closed-form per-slot click probability of one detector (no dead time, no attack)."""
        proj = _eve.projections(self.rotation_at(t_s)[None], self._states)[0, state, detector]
        n = self.mu[intensity] * self.transmittance * self._per_photon()[detector] * proj
        pd = self._dark_prob()[detector]
        return 1.0 - math.exp(-n) * (1.0 - pd)

    def expected_slot_click_probability(self, frame_index: int = 0) -> float:
        """Probability that a slot of Alice's own QRNG pattern gives any click (before dead time).

        Times ``clock_hz`` this is the raw detection rate per emulated second; reports should
        give it next to the measured wall-clock rate (DESIGN.md: never pass one off as the other).
        """
        tables, _ = self._tables(frame_index)
        quiet = tables.joint[0, :, :, :, 0].sum(axis=-1)                  # (3 intensities, 4 states)
        basis = np.array([self.p_z, self.p_z, 1 - self.p_z, 1 - self.p_z]) * 0.5
        p_cls = self.intensity_probs[:, None] * basis[None, :]
        no_dark = float(np.prod(1.0 - self._dark_prob(frame_index)))
        return float(1.0 - (p_cls * quiet).sum() * no_dark)

    def earliest_tag_ps(self, frame_index: int) -> int:
        """Lower bound of the tagger timestamps frame ``frame_index`` can produce (for TagStream)."""
        t0 = self._frame_start_ps(frame_index)
        sig = max(d.jitter_ps for d in self.detectors) + self.tagger.jitter_ps
        first = min(self.tagger.sync_delay_ps,
                    self.tof_ps + min(d.delay_ps for d in self.detectors) - self.period_ps)
        t = np.array([t0 + int(first - 10 * sig - 10)], dtype=np.int64)
        return int(tagger_clock(t, self.tagger.clock_drift_ppm, self.tagger.offset_ps,
                                self.tagger.resolution_ps)[0]) - int(self.tagger.resolution_ps)

    # -- setters the emulated instruments call -------------------------------
    def set_controller_rotation(self, u: np.ndarray) -> None:
        """Set Bob's polarization controller to the 2x2 unitary ``u`` (Jones, H/V basis)."""
        self.controller = check_unitary(u, "u")
        self._version += 1

    def set_controller_epc400(self, voltages_v, v_pi_v=2.5) -> np.ndarray:
        """Set the controller from four fiber-squeezer voltages (see ``optics.epc400_rotation``)."""
        u = epc400_rotation(tuple(voltages_v), v_pi_v)
        self.set_controller_rotation(u)
        return u

    def set_controller_mpc320(self, paddle_angles_deg, retardances_rad=None) -> np.ndarray:
        """Set the controller from three paddle angles (see ``optics.mpc320_rotation``)."""
        kw = {} if retardances_rad is None else {"retardances_rad": tuple(retardances_rad)}
        u = mpc320_rotation(tuple(paddle_angles_deg), **kw)
        self.set_controller_rotation(u)
        return u

    def set_detector(self, index: int, **params: float) -> None:
        """Change detector ``index`` (0..3 = H V D A): efficiency, dark_count_rate_hz,
        dead_time_ns, afterpulse_prob, afterpulse_time_constant_ns, jitter_ps, delay_ps."""
        if isinstance(index, bool) or not isinstance(index, int | np.integer) or not 0 <= index < 4:
            raise ValueError(f"index: expected a detector index 0..3, got {index!r}")
        d = self.detectors[index]
        for k, v in params.items():
            if k not in DetectorParams._RANGES:
                raise ValueError(f"set_detector: unknown parameter {k!r} (known: "
                                 f"{', '.join(DetectorParams._RANGES)})")
            lo, hi = DetectorParams._RANGES[k]
            if isinstance(v, bool) or not isinstance(v, int | float) or not (lo <= v <= hi):
                raise ValueError(f"set_detector: {k}: expected a number in [{lo:g}, {hi:g}], got {v!r}")
        self.detectors[index] = replace(d, **{k: float(v) for k, v in params.items()})
        self._version += 1

    def set_attack(self, kind: str = "none", **params: Any) -> None:
        """Switch the eavesdropper: kind in ATTACKS, params as in the scenario's [attack] table."""
        if kind not in ATTACKS:
            raise ValueError(f"kind: expected one of {', '.join(ATTACKS)}, got {kind!r}")
        changes = {"attack.kind": kind, **{f"attack.{k}": v for k, v in params.items()}}
        sc = self.scenario.with_overrides(changes)
        self.attack = sc.attack
        self._version += 1

    # -- Alice's QRNG ----------------------------------------------------------
    def _rng(self, stream: int, frame_index: int) -> np.random.Generator:
        ss = np.random.SeedSequence(self.seed, spawn_key=(stream, int(frame_index)))
        return np.random.Generator(np.random.PCG64DXSM(ss))

    def alice_pattern(self, frame_index: int) -> Pattern:
        """The model's own seeded QRNG pattern for a frame (biased basis, uniform bit, intensity class)."""
        self._check_frame(frame_index)
        rng = self._rng(STREAM_PATTERN, frame_index)
        n = self.frame_slots
        basis = (rng.random(n, dtype=np.float32) >= np.float32(self.p_z)).view(np.uint8)
        bit = rng.integers(0, 2, size=n, dtype=np.uint8)
        u = rng.random(n, dtype=np.float32)
        c = np.cumsum(self.intensity_probs)
        intensity = (u >= np.float32(c[0])).view(np.uint8) + (u >= np.float32(c[1])).view(np.uint8)
        return Pattern(basis, bit, intensity)

    # -- internals ------------------------------------------------------------
    def _check_frame(self, frame_index: int) -> None:
        if isinstance(frame_index, bool) or not isinstance(frame_index, int | np.integer) or frame_index < 0:
            raise ValueError(f"frame_index: expected a non-negative integer, got {frame_index!r}")

    def _reset_carry(self) -> None:
        self._next_frame: int | None = None
        self._last_click: list[int | None] = [None] * 4      # global slot of last registered click
        self._pending_ap: list[np.ndarray] = [np.empty(0, dtype=np.int64) for _ in range(4)]

    def _per_photon(self) -> np.ndarray:
        arm = np.array([self.bob_p_z] * 2 + [1.0 - self.bob_p_z] * 2)
        eff = np.array([d.efficiency for d in self.detectors])
        return self.bob_transmittance * arm * eff

    def _blinded(self, frame_index: int) -> bool:
        """The whole frame is blinded (a frame where blinding starts is not: see ``_attack_slot``)."""
        return self._attack_kind(frame_index) == "blinding" and self._attack_slot(frame_index) == 0

    def _attack_slot(self, frame_index: int) -> int:
        """First slot of the frame (0..frame_slots) the attack acts on, at slot precision like the
        fiber cut: 0 = the whole frame, frame_slots = none of it."""
        a, n = self.attack, self.frame_slots
        if a.kind == "none":
            return n
        k = math.ceil(a.start_time_s * self.clock_hz - 1e-6) - int(frame_index) * n
        return min(n, max(0, k))

    def _blind_from(self, frame_index: int, kind: str) -> int:
        """First blinded slot of the frame (frame_slots: none): blinded detectors have no dark
        counts and no afterpulses."""
        return self._attack_slot(frame_index) if kind == "blinding" else self.frame_slots

    def _switch(self, frame_index: int) -> int | None:
        """The slot where an eavesdropper switches on inside this frame, or None."""
        if self.attack.kind in ("none", "fiber-cut"):
            return None
        k = self._attack_slot(frame_index)
        return k if 0 < k < self.frame_slots else None

    def _dark_prob(self, frame_index: int = 0) -> np.ndarray:
        if self._blinded(frame_index):
            return np.zeros(4)
        return self._constants()["pdark"].copy()

    def _attack_kind(self, frame_index: int) -> str:
        a = self.attack
        if a.kind in ("none", "fiber-cut"):
            return a.kind
        return a.kind if self._attack_slot(frame_index) < self.frame_slots else "none"

    def _segments(self, frame_index: int) -> int:
        if not self._drifting:
            return 1
        return int(min(64, max(1, math.ceil(self.frame_duration_s / self.scenario.fiber.drift_step_s))))

    def _tables(self, frame_index: int) -> tuple[_eve.OutcomeTables, int]:
        nseg = self._segments(frame_index)
        kind = self._attack_kind(frame_index)
        if self._drifting:
            t0 = self.frame_start_s(frame_index)
            times = t0 + (np.arange(nseg) + 0.5) * self.frame_duration_s / nseg
            rot = np.stack([self.rotation_at(float(t)) for t in times])
            key = (self._version, kind, self._switch(frame_index), rot.tobytes())
        else:
            key = (self._version, kind, self._switch(frame_index))
            if self._table_cache is not None and self._table_cache[0] == key:
                return self._table_cache[1], nseg
            rot = self.rotation_at(0.0)[None]
        if self._table_cache is not None and self._table_cache[0] == key:
            return self._table_cache[1], nseg
        common = dict(rotations=rot, states=self._states, ideal_states=self._ideal_states, mu=self.mu,
                      transmittance=self.transmittance, per_photon=self._per_photon(), eve=self.attack,
                      bob_p_z=self.bob_p_z)
        tables = _eve.build_tables(attack=kind, **common)
        if self._switch(frame_index) is not None:
            # the attack starts inside the frame: classes 12 nseg .. 24 nseg - 1 are the attacked
            # slots, the first 12 nseg the honest channel with Eve's code 0 ("not attacked")
            honest = _eve.build_tables(attack="none", **common).joint
            pad = np.zeros(honest.shape[:3] + (tables.n_e, 16))
            pad[:, :, :, :1] = honest
            tables = _eve.OutcomeTables(np.concatenate([pad, tables.joint], axis=0))
        self._table_cache = (key, tables)
        return tables, nseg

    def _frame_start_ps(self, frame_index: int) -> int:
        num = int(frame_index) * self.frame_slots * 10 ** 12
        clk = self.clock_hz
        if clk == int(clk):
            return num // int(clk)
        return int(num / clk)

    # -- the signal: which slots click from photons (and Eve's outcome) -------------
    def _signal_skip(self, rng, pattern: Pattern, frame_index: int, tables, nseg: int):
        """Candidate slots by geometric skips, then one guide-table draw each (module docstring)."""
        cand = bernoulli_positions(rng, self.frame_slots, tables.p_max)
        cls = self._classes(pattern, cand, nseg)
        o = tables.draw_candidates(cls, rng.random(len(cand)))
        ok = np.flatnonzero(o < tables.K)
        o = o[ok]
        if tables.n_e == 1:                     # no eavesdropper: no Eve codes to carry
            mask = o.astype(np.uint8)
            mask += 1
            return cand[ok], mask, None, len(cand)
        return cand[ok], (o % 15 + 1).astype(np.uint8), (o // 15).astype(np.uint8), len(cand)

    def _signal_per_slot(self, rng, pattern: Pattern, frame_index: int, tables, nseg: int):
        """Reference: sample every pulse (Poisson photon numbers per detector), no attack, no drift."""
        if self._attack_kind(frame_index) not in ("none", "fiber-cut") or nseg != 1:
            raise ValueError("per-slot reference: only without an eavesdropper and without drift")
        proj = _eve.projections(self.rotation_at(0.0)[None], self._states)[0] * self._per_photon()   # (4, 4)
        state = pattern.basis.astype(np.intp) * 2 + pattern.bit
        mean = (self.mu[pattern.intensity] * self.transmittance)[:, None] * proj[state]   # (n, 4)
        photons = rng.poisson(mean)
        mask = ((photons > 0) * (1 << np.arange(4))).sum(axis=1).astype(np.uint8)
        slots = np.flatnonzero(mask).astype(np.int64)
        return slots, mask[slots], None, self.frame_slots

    def _classes(self, pattern: Pattern, idx: np.ndarray, nseg: int) -> np.ndarray:
        """Class of each slot: intensity, state, drift segment, and attacked or not in a frame
        where the attack switches on (``self._frame_switch``, set by ``run_frame``)."""
        cls = (pattern.intensity[idx] << 2) | (pattern.basis[idx] << 1) | pattern.bit[idx]
        if nseg > 1:
            cls = cls + (idx * nseg // self.frame_slots) * 12
        if self._frame_switch is not None:
            cls = cls + (idx >= self._frame_switch) * (12 * nseg)
        return cls

    def _dead_slots(self, d: int) -> int:
        return math.ceil(self.detectors[d].dead_time_ns * 1e3 / self.period_ps - 1e-9)

    def _dead_time(self, ev_slot: np.ndarray, ev_det: np.ndarray, frame0: int) -> np.ndarray:
        """Keep-mask of events after each detector's dead time (carrying the last click across frames)."""
        prev = [None if c is None else c - frame0 for c in self._last_click]
        return dead_time_keep_multi(ev_slot, ev_det, [self._dead_slots(d) for d in range(4)], prev)

    # -- one frame --------------------------------------------------------------
    def run_frame(self, frame_index: int, pattern: Pattern | None = None, *,
                  method: str = "kernel") -> FrameResult:
        """Emulate one frame: Alice sends ``pattern`` (default: her own QRNG's), Bob's tagger reports.

        ``method="kernel"`` (default) runs the frame in the C kernel (``hil.kernel``);
        ``"skip"`` is the numpy reference of the same sparse sampling (afterpulses of
        one generation only); ``"per-slot"`` samples every pulse (a slow reference for
        tests and the benchmark baseline; no attack, no drift).
        """
        self._check_frame(frame_index)
        n = self.frame_slots
        pattern = self.alice_pattern(frame_index) if pattern is None else pattern.check(n, method != "kernel")
        if self._next_frame != frame_index:
            if self._next_frame is not None:
                log.debug("frame %d after %d: detector state reset", frame_index, self._next_frame - 1)
            self._reset_carry()
        rng = self._rng(STREAM_CHANNEL, frame_index)
        tables, nseg = self._tables(frame_index)
        self._frame_switch = self._switch(frame_index)
        kind = self._attack_kind(frame_index)
        counts: dict[str, int] = {}
        if method == "kernel":
            sync_ps = self._sync_ps(rng, frame_index)
            ev_slot, ev_det, ev_noise, times, slots, mask, code, (tag_t, tag_ch, order) = self._run_kernel(
                rng, frame_index, pattern, tables, nseg, kind, counts, sync_ps)
            m = len(ev_slot)
        elif method in ("skip", "per-slot"):
            ev_slot, ev_det, ev_noise, times, slots, mask, code = self._run_numpy(
                rng, frame_index, pattern, tables, nseg, kind, counts, method)
            sync_ps = self._sync_ps(rng, frame_index)
            m = len(ev_slot)
            tag_t = np.empty(m + 1, np.int64)
            tag_t[0] = sync_ps
            tag_t[1:] = times
            tag_ch = np.empty(m + 1, np.uint8)
            tag_ch[0] = 0
            np.add(ev_det, 1, out=tag_ch[1:])
            order = np.argsort(tag_t, kind="stable")
            tag_t, tag_ch = tag_t[order], tag_ch[order]
        else:
            raise ValueError(f"method: expected 'kernel', 'skip' or 'per-slot', got {method!r}")
        ev_lost = np.zeros(m, bool)
        lost = 0
        if self.tagger.max_tag_rate_hz > 0:
            ok = rate_limit(tag_t, self.tagger.max_tag_rate_hz, self.tagger.rate_window_ns)
            lost = int(len(ok) - np.count_nonzero(ok))
        if lost:
            lost_pos = order[~ok]
            ev_lost[lost_pos[lost_pos > 0] - 1] = True     # position 0 is the sync tag
            tag_t, tag_ch = tag_t[ok], tag_ch[ok]
        counts["events"] = m

        eve_rec = None
        if kind not in ("none", "fiber-cut"):
            eve_rec = _eve.EveRecord.from_codes(code, pattern.basis[slots], pattern.bit[slots])
        return FrameResult(
            frame_index=int(frame_index), start_time_s=self.frame_start_s(frame_index),
            duration_s=self.frame_duration_s,
            slot=ev_slot.view(np.uint64), detector=ev_det, time_ps=times, tag_lost=ev_lost,
            noise=np.zeros(m, bool) if ev_noise is None else ev_noise, slots=slots.view(np.uint64),
            mask=mask, tag_t_ps=tag_t, tag_channel=tag_ch,
            lost_tags=lost, sync_ps=sync_ps, eve=eve_rec, counts=counts)

    def _run_numpy(self, rng, frame_index: int, pattern: Pattern, tables, nseg: int, kind: str,
                   counts: dict, method: str):
        """The numpy reference of one frame (``method`` "skip" or "per-slot"); one afterpulse generation."""
        n = self.frame_slots
        frame0 = frame_index * n
        if method == "skip":
            s_slot, s_mask, s_code, n_cand = self._signal_skip(rng, pattern, frame_index, tables, nseg)
        else:
            s_slot, s_mask, s_code, n_cand = self._signal_per_slot(rng, pattern, frame_index, tables, nseg)
        counts["candidates"] = n_cand
        if self.attack.kind == "fiber-cut":
            cut = math.ceil(self.attack.start_time_s * self.clock_hz) - frame0
            if cut < n:
                k = int(np.searchsorted(s_slot, max(cut, 0)))
                s_slot, s_mask, s_code = s_slot[:k], s_mask[:k], _take(s_code, slice(0, k))
        counts["signal_slots"] = len(s_slot)
        ev_slot, ev_det, ev_code = _expand(s_slot, s_mask, s_code)
        ev_noise = None                             # None: no dark count or afterpulse in the frame

        # dark counts (independent Bernoulli per detector) and afterpulses pending from the last frame
        pdark = self._dark_prob(frame_index)
        blind = self._blind_from(frame_index, kind)
        noise = [bernoulli_positions(rng, n, float(pdark[d])) for d in range(4)]
        pend = [p - frame0 for p in self._pending_ap]
        noise = [np.union1d(e, p[p < n]) if len(p) else e for e, p in zip(noise, pend, strict=True)]
        noise = [x[x < blind] for x in noise]
        self._pending_ap = [p[p >= n] + frame0 if blind >= n else p[:0] for p in pend]
        n_noise = sum(len(x) for x in noise)
        counts["noise_raw"] = n_noise
        if n_noise:
            ev_slot, ev_det, ev_code, ev_noise = self._insert_noise(
                rng, pattern, tables, nseg, kind, ev_slot, ev_det, ev_code, ev_noise, s_slot, s_code, noise)

        keep = self._dead_time(ev_slot, ev_det, frame0)
        ap_on = [d for d in range(4) if self.detectors[d].afterpulse_prob > 0] if blind > 0 else []
        if ap_on:
            ap_noise = [np.empty(0, np.int64)] * 4
            for d in ap_on:
                det = self.detectors[d]
                kept = ev_slot[keep & (ev_det == d) & (ev_slot < blind)]
                ap = afterpulse_slots(rng, kept, det.afterpulse_prob, det.dead_time_ns * 1e3,
                                      det.afterpulse_time_constant_ns * 1e3, self.period_ps)
                ap = ap[ap < blind] if blind < n else ap
                self._pending_ap[d] = np.union1d(self._pending_ap[d], ap[ap >= n] + frame0)
                ap_noise[d] = ap[ap < n]
            counts["afterpulses"] = sum(len(x) for x in ap_noise)
            if counts["afterpulses"]:
                ev_slot, ev_det, ev_code, ev_noise = self._insert_noise(
                    rng, pattern, tables, nseg, kind, ev_slot, ev_det, ev_code, ev_noise, s_slot, s_code,
                    ap_noise)
                keep = self._dead_time(ev_slot, ev_det, frame0)
        counts["dead_time_lost"] = int(len(keep) - np.count_nonzero(keep))
        if counts["dead_time_lost"]:
            live = np.flatnonzero(keep)
            ev_slot, ev_det = ev_slot[live], ev_det[live]
            ev_code, ev_noise = _take(ev_code, live), _take(ev_noise, live)
        tail = max(0, len(ev_det) - 4096)           # the last click of each detector is near the end
        for d in range(4):
            hit = np.flatnonzero(ev_det[tail:] == d)
            if len(hit) == 0 and tail:
                hit = np.flatnonzero(ev_det == d) - tail
            if len(hit):
                self._last_click[d] = int(ev_slot[tail + hit[-1]]) + frame0
        self._next_frame = frame_index + 1

        # per-slot view
        m = len(ev_slot)
        first = np.empty(m, dtype=bool)
        first[:1] = True
        np.not_equal(ev_slot[1:], ev_slot[:-1], out=first[1:])
        bit = np.left_shift(np.uint8(1), ev_det)
        if first.all():
            slots, mask, code = ev_slot, bit, ev_code
        else:
            st = np.flatnonzero(first)
            slots, mask, code = ev_slot[st], bit[st], _take(ev_code, st)
            more = np.flatnonzero(~first)           # second and later clicks of a slot: rare
            np.bitwise_or.at(mask, np.searchsorted(st, more, side="right") - 1, bit[more])

        # timestamps and tags
        times = self._timestamps(rng, frame_index, ev_slot, ev_det, ev_noise)
        return ev_slot, ev_det, ev_noise, times, slots, mask, code

    def _insert_noise(self, rng, pattern, tables, nseg, kind, ev_slot, ev_det, ev_code, ev_noise,
                      s_slot, s_code, noise):
        """Insert noise clicks (per-detector slot lists) into the (slot, detector)-sorted events."""
        n_slot = np.concatenate(noise).astype(np.int64)
        n_det = np.concatenate([np.full(len(x), d, np.uint8) for d, x in enumerate(noise)])
        key = ev_slot * 4 + ev_det
        n_key = n_slot * 4 + n_det
        o = np.argsort(n_key, kind="stable")
        n_slot, n_det, n_key = n_slot[o], n_det[o], n_key[o]
        pos = np.searchsorted(key, n_key)
        dup = (pos < len(key)) & (key[np.minimum(pos, max(len(key) - 1, 0))] == n_key) if len(key) else \
            np.zeros(len(n_key), bool)
        keep = ~dup
        n_slot, n_det, pos = n_slot[keep], n_det[keep], pos[keep]
        # Eve's code: the signal draw of that slot if the slot had one, else P(e | no signal click)
        n_code = np.zeros(len(n_slot), np.uint8)
        if ev_code is not None and len(n_slot):
            sp = np.searchsorted(s_slot, n_slot)
            has = (sp < len(s_slot)) & (s_slot[np.minimum(sp, max(len(s_slot) - 1, 0))] == n_slot) \
                if len(s_slot) else np.zeros(len(n_slot), bool)
            n_code[has] = s_code[sp[has]]
            q = np.flatnonzero(~has)
            if len(q):
                n_code[q] = tables.draw_quiet(self._classes(pattern, n_slot[q], nseg), rng.random(len(q)))
        if ev_noise is None:
            ev_noise = np.zeros(len(ev_slot), bool)
        return (np.insert(ev_slot, pos, n_slot), np.insert(ev_det, pos, n_det),
                None if ev_code is None else np.insert(ev_code, pos, n_code),
                np.insert(ev_noise, pos, True))

    def run_frames(self, first: int, count: int, patterns: list[Pattern] | None = None) -> list[FrameResult]:
        """Run ``count`` consecutive frames (same results as calling ``run_frame`` on each in order)."""
        if patterns is not None and len(patterns) != count:
            raise ValueError(f"patterns: expected {count} patterns, got {len(patterns)}")
        return [self.run_frame(first + i, None if patterns is None else patterns[i]) for i in range(count)]

    def _sync_ps(self, rng, frame_index: int) -> int:
        """The frame's sync tag: frame start + sync delay + tagger jitter, through the tagger clock."""
        sync_j = rng.standard_normal() * self.tagger.jitter_ps
        sync_true = self._frame_start_ps(frame_index) + int(round(self.tagger.sync_delay_ps + sync_j))
        return int(tagger_clock(np.array([sync_true], np.int64), self.tagger.clock_drift_ppm,
                                self.tagger.offset_ps, self.tagger.resolution_ps)[0])

    def _run_kernel(self, rng, frame_index: int, pattern: Pattern, tables, nseg: int, kind: str,
                    counts: dict, sync_ps: int):
        """One frame in the C kernel: the same sampling as ``_run_numpy`` in one streaming pass
        (``hil/csrc/hil_kernel.c``), with afterpulses that afterpulse in turn."""
        n = self.frame_slots
        frame0 = frame_index * n
        pdark = self._dark_prob(frame_index)
        end = n
        if self.attack.kind == "fiber-cut":
            end = min(n, max(0, math.ceil(self.attack.start_time_s * self.clock_hz) - frame0))
        frac, base = self._tag_shift(frame_index)
        blinded = self._blinded(frame_index)
        params = _kernel.ffi.new("struct hil_frame_params *", self._constants()["params"][0])
        params.signal_end, params.nseg, params.n_e, params.obits = end, nseg, tables.n_e, tables.alias()[1]
        params.switch_slot = n if self._frame_switch is None else self._frame_switch
        params.switch_offset, params.blind_from = 12 * nseg, self._blind_from(frame_index, kind)
        params.p_max, params.frac_shift_ps, params.base_ps, params.sync_ps = tables.p_max, frac, base, sync_ps
        if blinded:
            params.p_dark, params.ap_prob = [0.0] * 4, [0.0] * 4
        seed = rng.bit_generator.random_raw(4).astype(np.uint64, copy=False)
        if not seed.any():
            seed[0] = 1
        last = np.array([_kernel.NONE if c is None else c - frame0 for c in self._last_click], np.int64)
        ap_in = np.concatenate([(p - frame0) * 4 + d for d, p in enumerate(self._pending_ap)])
        ap_in = ap_in.astype(np.int64, copy=False)
        ap_max = max(d.afterpulse_prob for d in self.detectors)
        expect = n * (min(1.0, tables.p_max) + float(pdark.sum())) / (1.0 - ap_max)
        otab, _ = tables.alias()
        try:
            out = _kernel.run_frame(params, seed, pattern.basis, pattern.bit, pattern.intensity, otab,
                                    tables.cum_quiet_rows, last, ap_in,
                                    capacity=int(1.1 * expect + 8 * math.sqrt(expect) + 1024), ws=self._ws)
        except _kernel.KernelError as e:
            if e.status == _kernel.lib.HIL_ERR_PATTERN:
                pattern.check(n)                # raises, naming the field
            raise
        c = out.counts
        counts.update(candidates=int(c[_kernel.lib.HIL_N_CANDIDATES]),
                      signal_slots=int(c[_kernel.lib.HIL_N_SIGNAL_SLOTS]),
                      noise_raw=int(c[_kernel.lib.HIL_N_NOISE_RAW]),
                      afterpulses=int(c[_kernel.lib.HIL_N_AFTERPULSES]),
                      dead_time_lost=int(c[_kernel.lib.HIL_N_DEAD_LOST]))
        nxt = frame0 + n
        self._last_click = [None if x == _kernel.NONE else int(x) + nxt for x in out.last]
        key = out.ap_out
        self._pending_ap = [np.sort(key[(key & 3) == d] >> 2) + nxt for d in range(4)]
        self._next_frame = frame_index + 1
        code = out.sl_code if tables.n_e > 1 else None
        return (out.slot, out.det, out.noise, out.time, out.sl_slot, out.sl_mask, code,
                (out.tag_t, out.tag_ch, out.tag_src))

    def _constants(self) -> dict:
        """What the frames share until a setter changes the model (``self._version``): timestamp
        terms, dark-count probabilities and the kernel's parameter template."""
        if self._const is not None and self._const[0] == self._version:
            return self._const[1]
        tg = self.tagger
        jit_det = np.array([d.jitter_ps for d in self.detectors])
        delay = np.array([d.delay_ps for d in self.detectors]) + self.tof_ps
        sig = np.concatenate([np.sqrt(jit_det ** 2 + tg.jitter_ps ** 2), np.full(4, float(tg.jitter_ps))])
        rate = 1.0 + tg.clock_drift_ppm * 1e-6
        res = int(round(tg.resolution_ps)) if tg.resolution_ps > 1 else 1
        dcr = np.array([d.dark_count_rate_hz for d in self.detectors])
        pdark = -np.expm1(-dcr / self.clock_hz)
        params = _kernel.frame_params(
            n_slots=self.frame_slots, p_dark=[float(x) for x in pdark],
            dead_slots=[self._dead_slots(d) for d in range(4)],
            ap_prob=[d.afterpulse_prob for d in self.detectors],
            ap_dead_ps=[d.dead_time_ns * 1e3 for d in self.detectors],
            ap_tau_ps=[d.afterpulse_time_constant_ns * 1e3 for d in self.detectors],
            period_ps=self.period_ps, sig_ps=[float(x) for x in sig], delay_ps=[float(x) for x in delay],
            rate=rate, resolution_ps=res)
        c = {"sig": sig, "delay": delay, "rate": rate, "res": res, "pdark": pdark, "params": params}
        self._const = (self._version, c)
        return c

    def _tag_shift(self, frame_index: int) -> tuple[float, int]:
        """Fractional and integer parts of the tagger's offset at the frame start."""
        tg = self.tagger
        start = self._frame_start_ps(frame_index)
        # t_tag = t (1 + ppm) + offset, with t = start + offset: the start's share is a scalar
        shift = start * (tg.clock_drift_ppm * 1e-6) + tg.offset_ps
        fl = math.floor(shift)
        return shift - fl, start + int(fl)

    def _tag_terms(self, frame_index: int):
        """Per-frame constants of the timestamps: jitter sigma per (noise, detector), delay per
        detector, tagger rate, fractional and integer parts of the tagger's offset at the frame start."""
        c = self._constants()
        frac, base = self._tag_shift(frame_index)
        return c["sig"], c["delay"], c["rate"], frac, base, c["res"]

    def _timestamps(self, rng, frame_index: int, ev_slot: np.ndarray, det: np.ndarray,
                    noise: np.ndarray) -> np.ndarray:
        """Tagger timestamps of the clicks (draws here, arithmetic in ``_timestamps_from``)."""
        n = len(ev_slot)
        z = _GAUSS[rng.integers(0, len(_GAUSS), size=n, dtype=np.uint16)]
        unoise = None
        if noise is not None and bool(noise.any()):
            unoise = rng.random(int(np.count_nonzero(noise)))
        return self._timestamps_from(frame_index, ev_slot, det, noise, z, unoise)

    def _timestamps_from(self, frame_index: int, ev_slot: np.ndarray, det: np.ndarray,
                         noise: np.ndarray | None, z: np.ndarray, unoise: np.ndarray | None) -> np.ndarray:
        """Tagger timestamps of the clicks: true arrival (slot time + time of flight + detector delay +
        jitter) through the tagger clock (``hil.tagger.tagger_clock``). Jitter is drawn from a
        2^16-point table of Gaussian quantiles (exact up to +-4.3 sigma, cheaper than standard_normal).
        The int64 frame start is kept out of the float arithmetic so picoseconds stay exact."""
        sig, delay, rate, frac, base, res = self._tag_terms(frame_index)
        any_noise = noise is not None and bool(noise.any())
        dn = det.astype(np.intp)
        if any_noise:
            dn += 4 * noise
        offset = z * sig[dn]
        offset += delay[dn & 3]
        offset += ev_slot * self.period_ps
        if any_noise:
            k = np.flatnonzero(noise)
            offset[k] += (unoise - 0.5) * self.period_ps
        if rate != 1.0:
            offset *= rate
        offset += frac
        out = np.rint(offset).astype(np.int64)
        out += base
        if res > 1:
            out //= res
            out *= res
        return out


def _gauss_table(bits: int = 16) -> np.ndarray:
    """Quantiles of N(0, 1) at the midpoints of 2^bits equal-probability bins (Acklam-free: via erfinv
    by bisection-free Newton on math.erf, done once at import)."""
    from statistics import NormalDist

    k = 1 << bits
    nd = NormalDist()
    return np.array([nd.inv_cdf((i + 0.5) / k) for i in range(k)], dtype=np.float64)


_GAUSS = _gauss_table()
_POP = np.array([bin(m).count("1") for m in range(16)], dtype=np.intp)
_LOW = np.array([(m & -m).bit_length() - 1 if m else 0 for m in range(16)], dtype=np.uint8)
_NTH = np.array([[[d for d in range(4) if m >> d & 1][k] if k < _POP[m] else 0 for k in range(4)]
                 for m in range(16)], dtype=np.uint8)


def _expand(slots: np.ndarray, mask: np.ndarray, code: np.ndarray):
    """Per-slot masks to per-click events sorted by (slot, detector).

    Most slots have one click; only the rare multi-click slots pay for insertion.
    """
    det = _LOW[mask]
    rest = mask & (mask - 1)                    # clicks other than the lowest detector
    multi = np.flatnonzero(rest)
    if len(multi) == 0:
        return slots, det, code
    pop = _POP[rest[multi]]
    rows = np.repeat(multi, pop)
    k = np.arange(len(rows)) - np.repeat(np.cumsum(pop) - pop, pop)
    extra_det = _NTH[rest[rows], k]
    pos = rows + 1
    return (np.insert(slots, pos, slots[rows]), np.insert(det, pos, extra_det),
            None if code is None else np.insert(code, pos, code[rows]))


def _take(a: np.ndarray | None, idx) -> np.ndarray | None:
    return None if a is None else a[idx]

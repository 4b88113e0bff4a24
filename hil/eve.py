"""What reaches Bob's detectors, slot class by slot class, with or without an eavesdropper.

What it is for: for each slot class (drift segment, intensity, Alice's state)
the joint probability P(e, m | class) of Eve's outcome ``e`` and Bob's
photon-induced click mask ``m`` (4 bits, H V D A), and the record of what Eve
learned. ``hil.model`` samples from these tables; this module must not draw
random numbers or touch slots.

Physics (all per pulse, Eve sitting at Alice's output):

* No attack: a coherent state |sqrt(mu) psi> splits at Bob into independent
  coherent states, so detector d sees Poisson photons with mean
  n_d = mu t pi_d and clicks with 1 - exp(-n_d) independently (Lo, Ma, Chen,
  PRL 94, 230504 (2005), eq. 3 for the yield with eta = t eta_Bob).
* Intercept-resend on a fraction f: Eve measures in Z with probability
  eve_p_z (ideal detector of efficiency eve_efficiency, succeeds with
  1 - exp(-eta_E mu)); on success she re-sends her result as a coherent pulse of
  ``resend_mu`` through the fiber; on failure she sends nothing. In the matched
  basis Bob's QBER from attacked pulses is 1/4 at the default eve_p_z = 0.5
  (Bennett et al., J. Cryptology 5, 3 (1992), sec. 5); for another eve_p_z, (1 - eve_p_z)/2
  in Z and eve_p_z/2 in X (no dark counts). Eve's result follows the
  single-photon Born rule, P(r) = (1 - exp(-eta_E mu)) |<r|psi>|^2: for a
  multi-photon pulse this is exactly an ideal two-detector measurement that
  settles her double clicks by a coin flip when her basis is Alice's or
  conjugate to it (|<r|psi>|^2 in {0, 1/2, 1}); for states off by a preparation
  error it is an approximation of that order.
* Photon-number splitting: photon number n ~ Poisson(mu); for n >= 2 Eve keeps
  one photon and sends n - 1 through a lossless channel; single photons are
  blocked with probability ``block_single_fraction`` (else passed losslessly);
  Bob's detector clicks for a Fock state follow from inclusion-exclusion over
  which detectors get photons (Brassard, Luetkenhaus, Mor, Sanders, PRL 85,
  1330 (2000), the attack; the click formula is the multinomial split).
* Blinding: Eve measures as in intercept-resend, then with ``trigger_prob``
  sends a bright trigger that only the detector matching her result (in her
  basis) sees above threshold (Lydersen et al., Nat. Photonics 4, 686 (2010),
  Fig. 3): Bob's click is that one detector; blinded detectors have no dark
  counts or afterpulses. Bob's basis choice is a passive beam splitter (a
  fraction p_z of the light to the Z arm), so the trigger reaches both arms at
  once: of power P in Eve's state, the matching detector gets p_b P (p_b = p_z or
  1 - p_z for her basis b), its partner in the same arm nothing, and each
  detector of the other arm (1 - p_b) P / 2. A threshold between the two exists
  only if p_b > (1 - p_b) / 2, i.e. p_b > 1/3 (the faked-state condition of
  Gerhardt et al., Nat. Commun. 2, 349 (2011), for a passive-basis receiver,
  there with p_b = 1/2; equal thresholds for the four detectors assumed). For a
  basis where no threshold works (the X arm of a 90:10 receiver) Eve sends no
  trigger: any trigger would fire the other arm too and show as a multi-detector
  click. Eve's trigger is assumed to reach Bob's analyser in the polarization she
  chose (bright light lets her pre-compensate the fiber).

Eve outcome codes (``EveRecord.code``): 0 nothing learned/not attacked, 1
attacked but no photon detected, 2 + 2*basis + result: measured, 6: holds a
photon of the pulse (PNS) and measures it once bases are announced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .optics import DETECTOR_VECTORS

CODE_NONE = 0
CODE_NO_PHOTON = 1
CODE_MEASURED = 2           # + 2*basis + result
CODE_HOLDS_PHOTON = 6
N_CODES = 7

_BITS = ((np.arange(16)[:, None] >> np.arange(4)) & 1).astype(bool)        # (16, 4)
# Moebius matrix for inclusion-exclusion over subsets: P(S) = sum_{T subset S} (-1)^{|S|-|T|} Q(T).
_SUB = np.array([[(-1) ** (bin(s).count("1") - bin(t).count("1")) if (t & ~s) == 0 else 0
                  for t in range(16)] for s in range(16)], dtype=float)


def projections(rotation: np.ndarray, states: np.ndarray) -> np.ndarray:
    """|<v_d| U psi_s>|^2: shape (..., n_states, 4) for rotations (..., 2, 2) and states (n_states, 2)."""
    out = np.einsum("...ij,sj->...si", rotation, states)
    amp = np.einsum("di,...si->...sd", DETECTOR_VECTORS.conj(), out)
    return np.abs(amp) ** 2


def coherent_masks(nbar: np.ndarray) -> np.ndarray:
    """P(mask) for independent Poisson means per detector: (..., 4) -> (..., 16)."""
    p1 = -np.expm1(-nbar)
    p0 = np.exp(-nbar)
    return np.prod(np.where(_BITS, p1[..., None, :], p0[..., None, :]), axis=-1)


def fock_masks(m: int, pi: np.ndarray) -> np.ndarray:
    """P(mask) when m photons split multinomially with per-photon probabilities pi (..., 4)."""
    if m == 0:
        out = np.zeros(pi.shape[:-1] + (16,))
        out[..., 0] = 1.0
        return out
    lost = 1.0 - pi.sum(axis=-1)
    q = (lost[..., None] + (pi[..., None, :] * _BITS).sum(axis=-1)) ** m        # (..., 16) over T
    return np.clip(q @ _SUB.T, 0.0, 1.0)


@dataclass
class OutcomeTables:
    """Joint table ``joint[seg, k, s, e, m]`` = P(Eve code e, Bob signal mask m | class), and samplers.

    Classes are numbered ``c = (seg * 3 + k) * 4 + s``. For candidate slots the
    outcomes of class c are o = e * 15 + (m - 1) for clicking masks m, with
    probability P(e, m | c) / p_max, plus o = K (= 15 * n_e) "no click" with the
    rest; ``cum`` holds their cumulative sums (last entry exactly 1) and ``guide``
    a guide table (Chen and Asau, J. Inf. Process. Cybern. 10, 1974; Devroye 1986,
    sec. III.2.4) so a draw is O(1) expected: start at guide[c, floor(u G)] and
    step forward while cum <= u.
    """

    joint: np.ndarray

    def __post_init__(self) -> None:
        j = self.joint
        self.n_e = j.shape[3]
        self.n_classes = n_cls = int(np.prod(j.shape[:3]))
        flat = j.reshape(n_cls, self.n_e, 16)
        click = flat[:, :, 1:].reshape(n_cls, -1)                  # (C, K)
        self.K = click.shape[1]
        p_any = click.sum(axis=1)
        self.p_max = float(min(1.0, p_any.max())) if n_cls else 0.0
        scale = self.p_max if self.p_max > 0 else 1.0
        cum = np.empty((n_cls, self.K + 1))
        cum[:, :-1] = np.minimum(np.cumsum(click, axis=1) / scale, 1.0)
        cum[:, -1] = 1.0
        self.K1 = self.K + 1
        self.cum = cum.ravel()
        self.G = G = 2 * self.K1
        c = np.arange(n_cls, dtype=float)
        offs = (c[:, None] + cum).ravel()
        q = (c[:, None] + np.arange(G)[None, :] / G).ravel()
        self.guide = (np.searchsorted(offs, q, side="right")
                      - np.repeat(np.arange(n_cls) * self.K1, G)).astype(np.int64)
        quiet = flat[:, :, 0]
        qs = quiet.sum(axis=1, keepdims=True)
        quiet = np.where(qs > 0, quiet / np.where(qs > 0, qs, 1.0), 1.0 / quiet.shape[1])
        cq = np.cumsum(quiet, axis=1)
        cq[:, -1] = 1.0
        self.cum_quiet = (c[:, None] + np.minimum(cq, 1.0)).ravel()
        self.cum_quiet_rows = np.ascontiguousarray(np.minimum(cq, 1.0).ravel())    # per class, for C

    def alias(self) -> tuple[np.ndarray, int]:
        """Packed alias tables (Walker 1977; ``hil_alias_pack``) of the candidate outcomes for
        ``hil.kernel``: (uint64 table, bits), rows = classes of 2^bits buckets (the K1 outcomes
        padded with empty ones). Values: click mask | Eve's code << 4, 0 for no click."""
        if getattr(self, "_alias", None) is None:
            from .kernel import alias_build, alias_pack

            bits = max(1, (self.K1 - 1).bit_length())
            probs = np.zeros((self.n_classes, 1 << bits))
            probs[:, :self.K1] = np.diff(self.cum.reshape(self.n_classes, self.K1), axis=1, prepend=0.0)
            o = np.arange(1 << bits)
            values = np.where(o < self.K, (o % 15 + 1) | (o // 15) << 4, 0).astype(np.uint16)
            thr, alias = alias_build(probs)
            self._alias = alias_pack(thr, alias, values, bits), bits
        return self._alias

    def draw_candidates(self, cls: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Outcome index o (0..K) for candidates of class ``cls`` with uniforms ``u``."""
        cls = cls.astype(np.int64, copy=False)
        o = self.guide[cls * self.G + (u * self.G).astype(np.int64)]
        base = cls * self.K1
        todo = np.flatnonzero(self.cum[base + o] <= u)
        while len(todo):
            o[todo] += 1
            todo = todo[self.cum[base[todo] + o[todo]] <= u[todo]]
        return o

    def draw_quiet(self, cls: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Eve's code for slots of class ``cls`` whose signal did not click: P(e | m = 0, c)."""
        cls = cls.astype(np.int64, copy=False)
        e = np.searchsorted(self.cum_quiet, cls + u, side="right") - cls * self.n_e
        return np.minimum(e, self.n_e - 1).astype(np.uint8)


def blinding_fakeable(bob_p_z: float) -> np.ndarray:
    """Per basis (Z, X): can a bright trigger fire the matching detector of that basis alone at a
    passive receiver sending ``bob_p_z`` of the light to Z? (module docstring: p_b > (1 - p_b) / 2)"""
    arm = np.array([bob_p_z, 1.0 - bob_p_z], dtype=float)
    return arm > arm[::-1] / 2.0


def build_tables(*, attack: str, rotations: np.ndarray, states: np.ndarray, ideal_states: np.ndarray,
                 mu: np.ndarray, transmittance: float, per_photon: np.ndarray, eve,
                 bob_p_z: float = 0.5) -> OutcomeTables:
    """Joint outcome tables for every (segment, intensity, state) class.

    ``rotations`` (nseg, 2, 2) is controller @ fiber per segment; ``per_photon`` (4,)
    is Bob's per-photon probability to reach and fire detector d for a perfectly
    aligned photon (insertion loss * arm split * efficiency); ``eve`` holds the
    attack parameters (scenario ``[attack]`` section or an equivalent object); ``bob_p_z`` is
    Bob's beam-splitter ratio (light to the Z arm), which decides which triggers a blinding Eve
    can fake (:func:`blinding_fakeable`).
    """
    nseg = rotations.shape[0]
    mu = np.asarray(mu, dtype=float)
    proj_alice = projections(rotations, states) * per_photon             # (nseg, 4, 4) per photon
    if attack in ("none", "fiber-cut"):
        nbar = mu[None, :, None, None] * transmittance * proj_alice[:, None]        # (nseg, 3, 4, 4)
        return OutcomeTables(coherent_masks(nbar)[:, :, :, None, :])
    joint = np.zeros((nseg, 3, 4, N_CODES, 16))
    eve_proj = projections(np.eye(2)[None], states)[0]                  # (4 states, 4 outcomes) for Eve
    p_basis = np.array([eve.eve_p_z, 1.0 - eve.eve_p_z])
    if attack in ("intercept-resend", "blinding"):
        f = eve.fraction if attack == "intercept-resend" else 1.0
        p_det = -np.expm1(-mu * eve.eve_efficiency)                      # (3,)
        if attack == "intercept-resend":
            # not attacked: the honest channel
            nbar = mu[None, :, None, None] * transmittance * proj_alice[:, None]
            joint[:, :, :, CODE_NONE, :] = (1.0 - f) * coherent_masks(nbar)
            joint[:, :, :, CODE_NO_PHOTON, 0] = f * np.exp(-mu * eve.eve_efficiency)[None, :, None]
            # (nseg, 4 Eve states, 16): Eve re-sends ideal states through the fiber
            resent = coherent_masks(eve.resend_mu * transmittance
                                    * projections(rotations, ideal_states) * per_photon)
        else:
            joint[:, :, :, CODE_NO_PHOTON, 0] = np.exp(-mu * eve.eve_efficiency)[None, :, None]
            # a trigger fires the detector of Eve's result alone, where the receiver's split allows it
            fire = eve.trigger_prob * np.repeat(blinding_fakeable(bob_p_z), 2)     # (4 results,)
            resent = np.zeros((nseg, 4, 16))
            resent[:, np.arange(4), 1 << np.arange(4)] = fire
            resent[:, :, 0] = 1.0 - fire
        for b in (0, 1):
            for r in (0, 1):
                o = 2 * b + r
                # P(Eve gets result r in basis b | Alice state s) for each s
                pr = f * p_det[None, :, None] * p_basis[b] * eve_proj[None, None, :, o]     # (1, 3, 4)
                joint[:, :, :, CODE_MEASURED + o, :] = pr[..., None] * resent[:, o][:, None, None, :]
        return OutcomeTables(joint)
    if attack == "pns":
        lossless = proj_alice                                            # per photon, t = 1
        n_max = int(mu.max() + 12 * np.sqrt(mu.max()) + 25)
        n = np.arange(n_max + 1)
        logfact = np.cumsum(np.log(np.maximum(n, 1)))
        with np.errstate(divide="ignore"):
            pn = np.exp(n[None, :] * np.log(mu[:, None]) - mu[:, None] - logfact[None, :])     # (3, n)
        pn[mu == 0, 0] = 1.0
        pn[mu == 0, 1:] = 0.0
        fock = np.stack([fock_masks(m, lossless) for m in range(n_max)], axis=0)   # (m, nseg, 4, 16)
        zero = np.zeros(16)
        zero[0] = 1.0
        blk = eve.block_single_fraction
        joint[:, :, :, CODE_NONE, :] = (pn[None, :, 0, None, None] * zero
                                        + blk * pn[None, :, 1, None, None] * zero
                                        + (1 - blk) * pn[None, :, 1, None, None] * fock[1][:, None])
        # n >= 2: Eve keeps one photon, n - 1 go on
        hold = np.einsum("kn,nsqm->skqm", pn[:, 2:], fock[1:n_max])
        joint[:, :, :, CODE_HOLDS_PHOTON, :] = hold
        return OutcomeTables(joint)
    raise ValueError(f"attack: unknown kind {attack!r}")


@dataclass(frozen=True)
class EveRecord:
    """What Eve learned about each detected slot (aligned with ``FrameResult.slots``).

    ``code`` is the outcome code (module docstring); ``basis``/``bit`` are Eve's
    measurement basis and result (255 where she has none); ``knows_bit`` is True
    where she will know Alice's bit once the bases are announced (her basis
    matched, or she holds a photon).
    """

    code: np.ndarray
    basis: np.ndarray
    bit: np.ndarray
    knows_bit: np.ndarray

    @classmethod
    def from_codes(cls, code: np.ndarray, alice_basis: np.ndarray, alice_bit: np.ndarray) -> EveRecord:
        code = np.asarray(code, dtype=np.uint8)
        measured = (code >= CODE_MEASURED) & (code < CODE_HOLDS_PHOTON)
        holds = code == CODE_HOLDS_PHOTON
        o = code.astype(np.int16) - CODE_MEASURED
        basis = np.where(measured, o // 2, np.where(holds, alice_basis, 255)).astype(np.uint8)
        bit = np.where(measured, o % 2, np.where(holds, alice_bit, 255)).astype(np.uint8)
        knows = holds | (measured & (basis == alice_basis))
        return cls(code, basis, bit, knows)

    def __len__(self) -> int:
        return len(self.code)

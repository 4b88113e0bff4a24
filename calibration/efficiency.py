"""Bob's detector efficiency ratio from reference-frame counts: the lab's measurement of
``detector_efficiency_ratio_min`` (``link.finite_key``, "Detector efficiency mismatch").

What it is for: the finite-key step needs a lower bound rho on eta_d / eta_d' for any two of
Bob's four detectors in every mode Eve can fill. This module turns one measurement (one mode:
one arrival time in the window, one wavelength) into a lower bound on the ratio for that mode;
the lab repeats it across the detection window and the filter's band and configures the
smallest. It must not talk to instruments or use the emulator's physics: it reads counts.

Method, and why: Alice sends reference frames (all four states, as the polarization
calibration does) and Bob's single clicks are counted per (Alice's state, detector)
(``calibration.polarization.counts_from_frame``). Summed over the four BB84 states, the light
reaching any one polarization analyser output is the same whatever the fiber's rotation
(|<d|H>|^2 + |<d|V>|^2 = |<d|D>|^2 + |<d|A>|^2 = 1), so detector d's clicks per sent pulse,
summed over the states, are proportional to its arm's optical share times its efficiency:
x_d = sum_s c[s, d] / sent[s] / share(d), with share = ``split_z_optical`` for H/V and its
complement for D/A (a power meter at each arm's output: the click counts alone cannot tell an
arm's light from its detectors' efficiency). The ratio for the mode is min over pairs of
(x_i - k sigma_i) / (x_j + k sigma_j), sigma from the counts (Poisson), k = ``sigmas``.
Click probabilities must stay in the linear regime: a saturating detector (several photons
per pulse, dead time) looks more efficient than it is relative to a weak one, which pulls the
ratio towards 1, the unsafe side; the measurement is refused above ``max_click_prob`` clicks
per pulse per detector. Dark counts pull towards 1 too: pass the clicks per slot measured
with Alice's light blocked (``dark_per_slot``) to subtract them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class EfficiencyError(ValueError):
    """The counts cannot give a ratio (no clicks, saturation, malformed input)."""


@dataclass(frozen=True)
class EfficiencyRatio:
    ratio_min: float                    # lower bound on the weakest over the strongest (k sigma)
    ratio: float                        # the point estimate
    relative: tuple[float, ...]         # x_d / max(x): each detector's efficiency, H V D A


def efficiency_ratio_bound(counts: np.ndarray, sent: np.ndarray, split_z_optical: float, *,
                           sigmas: float = 5.0, dark_per_slot: np.ndarray | None = None,
                           max_click_prob: float = 0.01) -> EfficiencyRatio:
    """Lower bound on eta_min / eta_max of Bob's four detectors for the mode the reference light
    filled (module docstring). ``counts[state, detector]``: single clicks (H V D A both ways);
    ``sent[state]``: pulses of each state; ``split_z_optical``: the splitter's share of light
    to the Z arm, measured optically; ``dark_per_slot[detector]``: dark clicks per slot."""
    c = np.asarray(counts, np.float64)
    n = np.asarray(sent, np.float64)
    if c.shape != (4, 4) or n.shape != (4,) or np.any(c < 0) or np.any(n <= 0):
        raise EfficiencyError(f"counts: need a (4, 4) array of counts >= 0 and sent: 4 counts > 0, got "
                              f"shapes {c.shape} and {n.shape}")
    if not 0.0 < split_z_optical < 1.0:
        raise EfficiencyError(f"split_z_optical: must lie in (0, 1), got {split_z_optical}")
    dark = np.zeros(4) if dark_per_slot is None else np.asarray(dark_per_slot, np.float64)
    if dark.shape != (4,) or np.any(dark < 0):
        raise EfficiencyError(f"dark_per_slot: need 4 rates >= 0, got {dark_per_slot!r}")
    p = c / n[:, None]
    if p.max() > max_click_prob:
        s, d = np.unravel_index(int(p.argmax()), p.shape)
        raise EfficiencyError(f"detector {'HVDA'[d]} clicked on {p.max():.3f} of state {'HVDA'[s]}'s pulses, "
                              f"above {max_click_prob}: lower the intensity (saturation pulls the ratio "
                              "towards 1)")
    share = np.array([split_z_optical] * 2 + [1.0 - split_z_optical] * 2)
    x = (p.sum(axis=0) - 4.0 * dark) / share
    var = (c / n[:, None] ** 2).sum(axis=0) / share ** 2          # Poisson: var(c) = c
    if np.any(x <= 0):
        raise EfficiencyError(f"detector {'HVDA'[int(np.argmin(x))]} has no clicks above its dark counts: "
                              "is light reaching Bob?")
    sd = np.sqrt(var)
    lo, hi = x - sigmas * sd, x + sigmas * sd
    bound = max(0.0, float(min(lo[i] / hi[j] for i in range(4) for j in range(4) if i != j)))
    return EfficiencyRatio(min(bound, 1.0), float(x.min() / x.max()), tuple(float(v) for v in x / x.max()))


def combine(measurements: list[EfficiencyRatio]) -> float:
    """The setting for ``detector_efficiency_ratio_min``: the smallest bound over the modes
    measured (window positions, wavelengths)."""
    if not measurements:
        raise EfficiencyError("no measurements to combine")
    return min(m.ratio_min for m in measurements)


def sigma_note(ratio: EfficiencyRatio) -> str:
    """One line for a calibration log (no key material: reference light only)."""
    rel = " ".join(f"{d} {v:.3f}" for d, v in zip("HVDA", ratio.relative))
    return f"efficiency ratio {ratio.ratio:.4f} (bound {ratio.ratio_min:.4f}); relative: {rel}"


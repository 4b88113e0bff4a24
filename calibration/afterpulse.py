"""Afterpulsing of one detector, measured from the gaps between its consecutive clicks.

What it is for: ``qkd calibrate timing`` (``calibration.timing``) already gathers each
detector's click gaps in slots to find its dead time; this module reads the same gaps for the
detector's memory beyond the dead time (afterpulses: trapped carriers released after the
detector has recovered, each a click of the same detector), and says how long Bob's dead-time
guard (``link.slotting``) must be so that what is left beyond it is below a stated level. It
must not guess: with too few gaps, or no excess to measure, it says so (``AfterpulseFit.status``)
and gives no release time.

Model, and why. After a click a detector is dead for D (the shortest gap, k0 slots, found by
``calibration.timing``); after that, clicks from light and dark counts come at a constant
probability q per slot (Alice's pattern is drawn afresh for every slot, so the click chance
of a slot does not depend on earlier clicks). A click is followed by an afterpulse with
probability p, released the dead time plus an exponential time after it (a single trap level,
Itzler et al., J. Mod. Opt. 58, 174 (2011), sec. 4; the model of ``hil.detectors``). In slots:
the release comes at gap k0 with probability 1 - c and at gap k > k0 with probability
c (1 - rho) rho^(k - k0 - 1), rho = exp(-period / tau) (c < 1 because D is not a whole number
of slots). The gap then ends at the first of the two, so with A = 1 - q

    S(k) = P(gap >= k) = A^(k - k0) (1 - p F(k)),   F = the release's distribution function,

which for long gaps is (1 - p) A^(k - k0): the uncorrelated background of the long gaps,
extrapolated back to the dead time, holds N (1 - p) of the N gaps, and the excess of the short
gaps over it is N p exactly (whatever q), the estimate of Humer et al., J. Lightwave Technol.
33, 3098 (2015) on interarrival-time histograms, here with the competition between the release
and the next background click in the model rather than neglected. The four parameters (q, p, c,
rho) are fitted by maximum likelihood over every gap (P(gap = k) = S(k) - S(k + 1), all gaps
from one continuous acquisition), started from several release times to keep clear of local
optima; their standard errors come from the inverse of the observed information (the
likelihood's Hessian, by central differences). tau's error follows from rho's by the delta
method.

Detection. Without afterpulses c and rho mean nothing, so the usual chi-square law of the
likelihood ratio does not hold; the excess counts as measured only when 2 ln LR against the
geometric law alone exceeds ``DETECT_2LNLR`` (40, beyond the chi-square(3) 1e-7 point). Otherwise
``p_bound`` gives a 3-sigma upper bound on afterpulses released within ``max(k0, 10)`` slots
after the dead time (the short-gap excess over the geometric law fitted to all gaps); a
release slower than that, or a memory that decays slower than one exponential (a power law,
Itzler et al. 2011; several trap levels, Ziarkash et al., Sci. Rep. 8, 5076 (2018)), is only
partly seen, and the single exponential then stands for its slowest part only as far as the
data reach. Bob's running check (``Slotter.afterpulse_check``) watches the gaps just beyond
the guard while the link runs.

The guard. What a guard covering gaps up to k_g slots leaves is p c rho^(k_g - k0) per click,
bounded with c <= 1 and with p and tau at their fitted values plus two standard errors:
k_g = k0 + ceil(ln(residual / p_up) / ln rho_up), written as ``guard_ns`` = k_g periods (Bob's
guard then covers gaps of k_g slots and less, the convention of the dead time).

Validity. The model lets a release that comes after a later background click go unseen; it
shows as a short gap after that click instead, which biases p and tau when clicks are common
within a release time. ``q_tau`` (q times tau in slots) says how much: below ~0.05 it is a few
per cent; above 0.1 the summary says to calibrate at a lower count rate (more attenuation),
as Humer et al. do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["AfterpulseFit", "fit_afterpulses", "DEFAULT_RESIDUAL", "MIN_GAPS"]

MIN_GAPS = 2000             # fewer gaps: not enough to measure (status "too_few")
DETECT_2LNLR = 40.0         # 2 ln(likelihood ratio) against no afterpulses for "measured"
DEFAULT_RESIDUAL = 1e-4     # afterpulse probability per click a recommended guard leaves at most
BIAS_Q_TAU = 0.1            # q tau above this: the fit's competition model is too rough (docstring)


@dataclass(frozen=True)
class AfterpulseFit:
    """One detector's afterpulsing (module docstring). ``status``: "measured", "none_seen"
    (no significant excess: see ``p_bound``) or "too_few" (fewer than ``MIN_GAPS`` gaps)."""

    status: str
    gaps: int
    dead_slots: int
    p: float | None = None             # afterpulse probability per click
    p_err: float | None = None
    tau_ns: float | None = None        # release time constant after the dead time
    tau_err_ns: float | None = None
    q: float | None = None             # background click probability per slot
    q_tau: float | None = None         # q * tau / period: the fit's bias indicator
    lnlr2: float | None = None         # 2 ln LR against no afterpulses
    p_bound: float | None = None       # none_seen: 3-sigma bound, releases within bound_slots
    bound_slots: int | None = None
    guard_slots: int | None = None     # measured: the guard that leaves at most ``residual``
    residual: float | None = None

    def describe(self, period_ps: float) -> str:
        if self.status == "too_few":
            return (f"afterpulsing not measured: {self.gaps} gaps, need {MIN_GAPS} (calibrate on "
                    "more frames, --frames)")
        if self.status == "none_seen":
            return (f"no afterpulses seen: p < {self.p_bound:.2g} for releases within "
                    f"{self.bound_slots * period_ps / 1e3:g} ns after the dead time (3 sigma, "
                    f"{self.gaps} gaps)")
        s = (f"afterpulse p {self.p:.4f} +- {self.p_err:.4f}, release tau {self.tau_ns:.3g} +- "
             f"{self.tau_err_ns:.2g} ns; ")
        s += (f"guard {self.guard_slots * period_ps / 1e3:g} ns leaves < {self.residual:g} per click"
              if self.guard_slots is not None else
              "no guard length follows: tau's error is not finite (more frames)")
        if self.q_tau is not None and self.q_tau > BIAS_Q_TAU:
            s += (f" (clicks within a release time are common, q tau {self.q_tau:.2f}: p and tau "
                  "are biased; calibrate at a lower count rate)")
        return s


def _log_probs(theta: np.ndarray, k: np.ndarray) -> np.ndarray:
    """log P(gap = k0 + k) for k = gap - k0 >= 0 (module docstring), theta = (q, p, c, rho)."""
    q, p, c, rho = theta
    a = 1.0 - q
    # F(k0 + k) and F(k0 + k + 1) - F(k0 + k): F(k0) = 0, F(k0 + j) = 1 - c rho^(j - 1) for j >= 1
    rel = np.where(k >= 1, c * rho ** np.maximum(k - 1, 0), 1.0)        # 1 - F(k0 + k)
    step = np.where(k >= 1, rel * (1.0 - rho), 1.0 - c)                 # F(k0 + k + 1) - F(k0 + k)
    inner = q * (1.0 - p + p * rel) + a * p * step
    return k * math.log(a) + np.log(np.maximum(inner, 1e-300))


def _nll(theta: np.ndarray, k: np.ndarray, w: np.ndarray) -> float:
    return -float(np.dot(w, _log_probs(theta, k)))


def _hessian(f, z: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """Central-difference Hessian of ``f`` at ``z`` (the parameters' logits: one step size fits
    all of them)."""
    n = z.size
    H = np.empty((n, n))

    def at(i: int, j: int, di: int, dj: int) -> float:
        y = z.copy()
        y[i] += di * h
        y[j] += dj * h
        return f(y)

    for i in range(n):
        for j in range(i, n):
            H[i, j] = H[j, i] = (at(i, j, 1, 1) - at(i, j, 1, -1) - at(i, j, -1, 1)
                                 + at(i, j, -1, -1)) / (4 * h * h)
    return H


def fit_afterpulses(gap_slots: np.ndarray, period_ps: float, *,
                    residual: float = DEFAULT_RESIDUAL) -> AfterpulseFit:
    """Fit one detector's click gaps (whole slots, > 0, from one continuous acquisition) as the
    module docstring says; ``residual``: the afterpulse probability per click the recommended
    guard may leave."""
    from scipy.optimize import minimize

    if not 0 < residual < 1:
        raise ValueError(f"residual: must lie in (0, 1), got {residual}")
    g = np.asarray(gap_slots, dtype=np.int64)
    g = g[g > 0]
    n = int(g.size)
    if n < MIN_GAPS:
        return AfterpulseFit("too_few", n, int(g.min()) if n else 0)
    k0 = int(g.min())
    vals, w = np.unique(g - k0, return_counts=True)
    k, w = vals.astype(np.float64), w.astype(np.float64)
    mean_k = float(np.dot(k, w) / n)
    # no afterpulses: a geometric law from k0 on, MLE q0 = 1 / (1 + mean excess gap)
    q0 = 1.0 / (1.0 + mean_k)
    nll0 = -(n * math.log(q0) + mean_k * n * math.log1p(-q0))
    # 3-sigma bound on a short-gap excess (used when nothing is seen)
    width = max(k0, 10)
    seen = float(w[k < width].sum())
    expect = n * -math.expm1(width * math.log1p(-q0))
    p_bound = max(0.0, seen - expect + 3.0 * math.sqrt(expect + 1.0)) / n

    # each parameter lies in (0, 1): fit their logits (unconstrained), Nelder-Mead on 4 numbers
    # (L-BFGS-B's bounded solver spent ~17 ms a step in its own code on this shared machine)
    def nll_z(z: np.ndarray) -> float:
        return _nll(1.0 / (1.0 + np.exp(-z)), k, w)

    def logit(v: float) -> float:
        return math.log(v / (1.0 - v))

    opts = {"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-6}
    best = None
    for tau_slots in (2.0, 20.0, 200.0, 2000.0):
        if tau_slots > 3 * (1 + mean_k) and best is not None:
            break                               # slower than the gaps themselves: not resolvable
        z0 = np.array([logit(q0), logit(0.05), logit(0.9), -math.log(math.expm1(1.0 / tau_slots))])
        r = minimize(nll_z, z0, method="Nelder-Mead", options=opts)
        if best is None or r.fun < best.fun:
            best = r
    best = minimize(nll_z, best.x, method="Nelder-Mead", options=opts)    # a restart polishes it
    lnlr2 = 2.0 * (nll0 - float(best.fun))
    if lnlr2 < DETECT_2LNLR:
        return AfterpulseFit("none_seen", n, k0, q=q0, lnlr2=lnlr2, p_bound=p_bound,
                             bound_slots=width)
    x = 1.0 / (1.0 + np.exp(-best.x))
    q, p, c, rho = (float(v) for v in x)
    # covariance of the logits, then of the parameters: dx/dz = x (1 - x). A c at its bound (the
    # dead time a whole number of slots: c = 1) has a flat logit; it is held there, which makes
    # the others' errors conditional on it (the bound is where the data put it)
    free = [i for i in range(4) if i != 2 or 1e-4 < c < 1 - 1e-4]
    zf = best.x.copy()

    def nll_free(y: np.ndarray) -> float:
        zf[free] = y
        return nll_z(zf)

    var = np.full(4, np.nan)
    try:
        cov = np.linalg.inv(_hessian(nll_free, best.x[free].copy()))
        var[free] = np.diag(cov) * (x[free] * (1 - x[free])) ** 2
    except np.linalg.LinAlgError:
        pass
    p_err = math.sqrt(var[1]) if var[1] > 0 else float("nan")
    rho_err = math.sqrt(var[3]) if var[3] > 0 else float("nan")
    tau_slots = -1.0 / math.log(rho)
    tau_err_slots = rho_err / (rho * math.log(rho) ** 2)          # d tau / d rho (delta method)
    # the guard: p c rho^(k_g - k0) <= residual with c <= 1 and p, tau at +2 standard errors
    p_up = p + 2 * p_err if math.isfinite(p_err) else 1.0
    tau_up = tau_slots + 2 * tau_err_slots if math.isfinite(tau_err_slots) else float("inf")
    if p_up <= residual:
        extra = 0
    elif math.isfinite(tau_up):
        extra = math.ceil(math.log(residual / p_up) / math.log(math.exp(-1.0 / tau_up)))
    else:
        extra = None
    return AfterpulseFit("measured", n, k0, p=p, p_err=p_err, tau_ns=tau_slots * period_ps / 1e3,
                         tau_err_ns=tau_err_slots * period_ps / 1e3, q=q, q_tau=q * tau_slots,
                         lnlr2=lnlr2, guard_slots=None if extra is None else k0 + extra,
                         residual=residual)

"""Reproduce Lim et al. 2014 Fig. 1: optimized finite-key rate vs fiber length.

    python -m bench.finite_key_repro [--json out.json] [--quick]

For each block size n_X = 10^4 .. 10^9 and fiber length, the secret key rate per
pulse R = ell / N is maximized over the free parameters of Sec. IV
{q_x, p_mu1, p_mu2, mu1, mu2} with mu3 = 2e-4, kappa = eps_sec / ell = 1e-15,
eps_cor = 1e-15, e_mis = 0.5 %, f_EC = 1.16, p_dc = 6e-7, p_ap = 4 %,
eta_Bob = 10 %, 0.2 dB/km (``link.channel_model.FiberSystem``), using the same
``link.finite_key.secret_key_length`` the engine runs on every block.

The paper states two figures in its text, which this script checks:
R(n_X = 10^9) / R(n_X = 10^7) ~ 1.75 at 100 km, and keys up to about 135 km
at n_X = 10^4. It also prints the rate at 25, 50 and 100 km and the maximum
distance per block size. Conventions where the paper is silent are those of
``link.finite_key`` (clipping, gamma floor) and ``link.channel_model``
(misalignment term with eta_sys); ``--printed-misalignment`` uses the printed one.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
from scipy.optimize import differential_evolution

from link.channel_model import FiberSystem
from link.finite_key import DecoySettings, secret_key_length

KAPPA = 1e-15
EPS_COR = 1e-15
MU3 = 2e-4


def rate(x: np.ndarray, length_km: float, n_x: float, system: FiberSystem,
         protocol: str = "2-decoy") -> float:
    """Secret key rate per pulse for parameters x = (q, a, b, mu1, mu2)."""
    q, a, b, mu1, mu2 = x
    if protocol == "2-decoy":
        if not mu1 > mu2 + MU3:
            return 0.0
        probs = (a, (1 - a) * b, (1 - a) * (1 - b))
        decoy = DecoySettings((mu1, mu2, MU3), probs)
    else:
        if not mu1 > mu2:
            return 0.0
        decoy = DecoySettings((mu1, mu2), (a, 1 - a))
    key, test, n_pulses, leak = system.expected_counts(length_km, n_x, q, decoy)
    # eps_sec = kappa * ell (Sec. IV): iterate to the fixed point from ell = n_x.
    ell = n_x
    for _ in range(4):
        eps_sec = min(0.5, KAPPA * max(ell, 1.0))
        r = secret_key_length(key, test, decoy, leak_ec_bits=int(math.ceil(leak)),
                              eps_sec=eps_sec, eps_cor=EPS_COR, protocol=protocol)
        if r.ell == ell:
            break
        ell = r.ell
    return r.ell / n_pulses


def optimize(length_km: float, n_x: float, system: FiberSystem, protocol: str = "2-decoy",
             seed: int = 1, maxiter: int = 60, n_random: int = 4000) -> tuple[float, list[float]]:
    bounds = np.array([(0.5, 0.995), (0.02, 0.98), (0.02, 0.98), (0.05, 1.5), (0.005, 0.8)])
    # The rate is exactly 0 over most of the box at small blocks and long fibers,
    # which leaves differential evolution nothing to climb; seed its population
    # with the best points of a uniform random search so it starts inside the
    # region where key exists whenever the search found it.
    rng = np.random.default_rng(seed)
    cand = bounds[:, 0] + (bounds[:, 1] - bounds[:, 0]) * rng.random((n_random, 5))
    vals = np.array([rate(x, length_km, n_x, system, protocol) for x in cand])
    init = cand[np.argsort(-vals)[: 12 * 5]]
    res = differential_evolution(lambda x: -rate(x, length_km, n_x, system, protocol), bounds,
                                 seed=seed, maxiter=maxiter, init=init, tol=1e-7, polish=False)
    return max(0.0, -res.fun, float(vals.max())), list(map(float, res.x))


def max_distance(n_x: float, system: FiberSystem, protocol: str, lo: float, hi: float) -> float:
    """Largest length with R > 0 by bisection (to 1 km)."""
    if optimize(lo, n_x, system, protocol)[0] <= 0:
        return 0.0
    while hi - lo > 1.0:
        mid = 0.5 * (lo + hi)
        if optimize(mid, n_x, system, protocol)[0] > 0:
            lo = mid
        else:
            hi = mid
    return lo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--quick", action="store_true", help="fewer block sizes (1e4, 1e7, 1e9)")
    ap.add_argument("--printed-misalignment", action="store_true",
                    help="use eta_ch in the misalignment term exactly as printed in Sec. IV")
    ap.add_argument("--protocol", default="2-decoy", choices=["2-decoy", "1-decoy"])
    args = ap.parse_args(argv)
    system = FiberSystem(misalignment_uses_eta_sys=not args.printed_misalignment)
    sizes = [1e4, 1e7, 1e9] if args.quick else [1e4, 1e5, 1e6, 1e7, 1e8, 1e9]
    t0 = time.time()
    out: dict = {"protocol": args.protocol, "misalignment_eta": "sys" if not args.printed_misalignment
                 else "ch", "rates": {}, "max_distance_km": {}}
    print(f"{'n_X':>8} {'R(25 km)':>12} {'R(50 km)':>12} {'R(100 km)':>12} {'L_max km':>9}")
    for n_x in sizes:
        rates = {L: optimize(L, n_x, system, args.protocol)[0] for L in (25.0, 50.0, 100.0)}
        lmax = max_distance(n_x, system, args.protocol, 25.0, 260.0)
        out["rates"][f"{n_x:.0e}"] = {f"{int(L)}km": r for L, r in rates.items()}
        out["max_distance_km"][f"{n_x:.0e}"] = lmax
        print(f"{n_x:>8.0e} {rates[25.0]:>12.3e} {rates[50.0]:>12.3e} {rates[100.0]:>12.3e} {lmax:>9.0f}",
              flush=True)
    r9 = out["rates"].get("1e+09", {}).get("100km")
    r7 = out["rates"].get("1e+07", {}).get("100km")
    if r9 and r7:
        out["ratio_1e9_1e7_at_100km"] = r9 / r7
        print(f"R(1e9)/R(1e7) at 100 km = {r9 / r7:.3f}   (paper: about 1.75)")
    if "1e+04" in out["max_distance_km"]:
        print(f"max distance at n_X = 1e4 = {out['max_distance_km']['1e+04']:.0f} km   (paper: about 135 km)")
    out["seconds"] = time.time() - t0
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

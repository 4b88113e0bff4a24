"""What a dead-time guard that covers afterpulses costs in key rate.

    python -m bench.afterpulse_guard [--blocks 2] [--seed 1] [--km 100 ...] [--p 0.1] [--tau-ns 50]

Both nodes run on the model (``link.pipeline.run_local``, same seed) with detectors that are
dead for 20 ns and afterpulse with probability ``--p`` and release time ``--tau-ns`` (the
metro-25km scenario with its fiber set to ``--km``), twice:

* ``dead time only``: Bob's guard is the 20 ns dead time, as a lab that does not know its
  afterpulses would set it, and Bob's afterpulse check is switched off for this run only (with
  it, every block is aborted: tests/test_afterpulse_node.py). This is the key such a link
  would have made, with kept events that depend on earlier clicks;
* ``covering``: Bob's guard is the one ``qkd calibrate timing`` writes (``calibration.
  afterpulse``): the dead time plus tau ln(p / 1e-4), rounded up to whole slots (the
  calibration's own, from p and tau two standard errors high, is ~10 % longer:
  tests/test_calibration_afterpulse.py), which leaves < 1e-4 afterpulse probability per click;
  the check is on.

It prints Bob's events and the share each guard dropped, the QBER (afterpulses repeat an
earlier click's detector, so half of the kept ones are errors), the secret key rate per
emulated second of each run and their ratio: what covering the afterpulses costs. Blocks hold
a fixed number of sifted bits, so the guard makes each block take longer; the rate is what
it costs. The two runs cut frames into blocks at different places: ~1 % run-to-run noise.
"""

from __future__ import annotations

import argparse
import math
import time
from contextlib import contextmanager
from dataclasses import replace

from hil.scenario import Scenario
from link import frontend, slotting
from link.pipeline import config_for_scenario, run_local

DEAD_NS = 20.0
RESIDUAL = 1e-4


@contextmanager
def _guard(guard_ns: float, check: bool):
    """``Timing.for_model`` with this guard; Bob's afterpulse check on or off (this bench only)."""
    raw, orig = frontend.Timing.__dict__["for_model"], frontend.Timing.for_model
    raw_check = slotting.Slotter.afterpulse_check

    def told(model, *a, **kw):
        return replace(orig(model, *a, **kw), dead_time_ps=guard_ns * 1e3)

    frontend.Timing.for_model = staticmethod(told)
    if not check:
        slotting.Slotter.afterpulse_check = lambda self, *a, **kw: None
    try:
        yield
    finally:
        frontend.Timing.for_model = raw              # the classmethod itself, not a bound copy
        slotting.Slotter.afterpulse_check = raw_check


def measure(km: float, p: float, tau_ns: float, blocks: int, seed: int) -> dict:
    sc = Scenario.load("metro-25km").with_overrides({
        "fiber.length_km": km, "detectors.dead_time_ns": DEAD_NS,
        "detectors.afterpulse_prob": p, "detectors.afterpulse_time_constant_ns": tau_ns})
    period_ns = 1e9 / sc.source.clock_hz
    cover_ns = DEAD_NS + (tau_ns * math.log(p / RESIDUAL) if p > RESIDUAL else 0.0)
    cover_ns = math.ceil(cover_ns / period_ns - 1e-9) * period_ns
    out: dict = {"km": km, "cover_ns": cover_ns}
    for name, guard_ns, check in (("dead", DEAD_NS, False), ("cover", cover_ns, True)):
        t = time.monotonic()
        with _guard(guard_ns, check):
            s = run_local(sc, blocks=blocks, seed=seed, duration_s=900,
                          config=config_for_scenario(sc))
        out[name] = {"rate": s["secret_rate_bps"], "bits": s["secret_bits"], "blocks": s["blocks"],
                     "aborted": s["blocks_aborted"], "events": s["bob_events"],
                     "vetoed": s["dead_time_vetoed"], "qber": s["qber"], "alarms": s["alarms"],
                     "emulated_s": s["emulated_s"], "s": time.monotonic() - t}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--km", type=float, nargs="*", default=[100.0])
    ap.add_argument("--p", type=float, default=0.1)
    ap.add_argument("--tau-ns", type=float, default=50.0)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    print(f"detectors: dead {DEAD_NS:g} ns, afterpulse p {args.p:g}, tau {args.tau_ns:g} ns")
    print("| fiber | guard | events dropped by the guard | QBER | blocks (aborted) | emulated s "
          "| secret rate (b/s) | covering / dead time only |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for km in args.km:
        r = measure(km, args.p, args.tau_ns, args.blocks, args.seed)
        ratio = r["cover"]["rate"] / r["dead"]["rate"] if r["dead"]["rate"] else float("nan")
        for name, label in (("dead", f"{DEAD_NS:g} ns (dead time only, check off)"),
                            ("cover", f"{r['cover_ns']:g} ns (covering)")):
            g = r[name]
            seen = g["events"] + g["vetoed"]
            q = "-" if g["qber"] is None else f"{g['qber']:.4f}"
            print(f"| {km:g} km | {label} | {g['vetoed'] / max(seen, 1):.1%} of {seen} | {q} "
                  f"| {g['blocks']} ({g['aborted']}) | {g['emulated_s']:.3f} | {g['rate']:.4g} "
                  f"| {ratio:.3f} |" if name == "cover" else
                  f"| {km:g} km | {label} | {g['vetoed'] / max(seen, 1):.1%} of {seen} | {q} "
                  f"| {g['blocks']} ({g['aborted']}) | {g['emulated_s']:.3f} | {g['rate']:.4g} | |",
                  flush=True)
        if r["cover"]["alarms"]:
            print(f"  alarms with the covering guard: {', '.join(r['cover']['alarms'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What Bob's dead-time guard costs, per scenario.

    python -m bench.deadtime_guard [--blocks 2] [--seed 1] [scenario ...]

For each HIL scenario (default: metro-25km, back-to-back, long-100km) both nodes run twice on
the model (``link.pipeline.run_local``, same seed): once as the link runs, with the slotter's
dead-time guard (``link.slotting``: an event is kept only if no detector clicked within the
longest dead time before it), and once with the guard off (the slotter's dead time set to 0
for this measurement only; no node can be configured that way). It prints Bob's events and
the share the guard dropped, and the secret key rate per emulated second of each run and
their ratio: the guard's cost. Blocks hold a fixed number of sifted bits, so the guard makes
each block take longer rather than hold less; the rate is what it costs. The two runs cut
frames into blocks at slightly different places: about 1 % of run-to-run noise.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import replace

from bench.common import scenario_args
from link import frontend
from link.pipeline import run_local


@contextmanager
def _guard_off():
    """``Timing.for_model`` without the dead time (the unguarded baseline of this bench)."""
    raw, orig = frontend.Timing.__dict__["for_model"], frontend.Timing.for_model

    def unguarded(model, *a, **kw):
        return replace(orig(model, *a, **kw), dead_time_ps=0.0)

    frontend.Timing.for_model = staticmethod(unguarded)
    try:
        yield
    finally:
        frontend.Timing.for_model = raw          # the classmethod itself, not a bound copy


def measure(scenario: str, blocks: int, seed: int) -> dict:
    out: dict = {"scenario": scenario}
    for name in ("off", "guard"):
        t = time.monotonic()
        if name == "off":
            with _guard_off():
                s = run_local(scenario, blocks=blocks, seed=seed, duration_s=600)
        else:
            s = run_local(scenario, blocks=blocks, seed=seed, duration_s=600)
        out[name] = {"rate": s["secret_rate_bps"], "bits": s["secret_bits"], "blocks": s["blocks"],
                     "aborted": s["blocks_aborted"], "events": s["bob_events"],
                     "vetoed": s["dead_time_vetoed"], "qber": s["qber"], "s": time.monotonic() - t}
    return out


def main(argv=None) -> int:
    args = scenario_args(__doc__, argv)
    print("| scenario | events dropped by the guard | QBER off / guard | secret rate off (b/s) "
          "| secret rate guard (b/s) | guard / off |")
    print("|---|---:|---|---:|---:|---:|")
    for sc in args.scenarios:
        r = measure(sc, args.blocks, args.seed)
        g, o = r["guard"], r["off"]
        seen = g["events"] + g["vetoed"]
        assert o["vetoed"] == 0, "the baseline run had the guard on"
        q = "/".join("-" if x is None else f"{x:.4f}" for x in (o["qber"], g["qber"]))
        print(f"| {sc} | {g['vetoed'] / max(seen, 1):.1%} of {seen} | {q} | {o['rate']:.4g} "
              f"| {g['rate']:.4g} | {g['rate'] / o['rate'] if o['rate'] else float('nan'):.3f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What the passive receiver's multi-photon bound costs, per scenario.

    python -m bench.receiver_bound [--blocks 2] [--seed 1] [scenario ...]

For each HIL scenario (default: metro-25km, back-to-back, long-100km) both nodes run twice
on the model (``link.pipeline.run_local``, same seed): once with ``receiver = "active"``
(the finite-key step trusts the squashing model alone, as for a modulator-chosen basis) and
once with ``receiver = "passive"`` (Bob's multi-photon detections bounded from his cross
clicks and taken out of the single-photon counts: ``link.finite_key``, "Measurement
model"). It prints the secret bits of each, their ratio, and per passive block the cross
clicks, Bob's measured Z share and the multi-photon bounds. The two runs are separate runs
of the link: frames are cut into blocks at slightly different places, so the ratio carries
about 1 % of run-to-run noise.
"""

from __future__ import annotations

import time

from bench.common import scenario_args
from hil.model import LinkModel
from link import node as node_mod
from link.pipeline import config_for_scenario, run_local


def measure(scenario: str, blocks: int, seed: int) -> dict:
    seen: list[dict] = []
    watch = node_mod.Node._watch_receiver

    def spy(self, bid, bb, rx):          # record what the finite-key step got (public counts)
        out = watch(self, bid, bb, rx)
        if rx is not None:
            seen.append({"cross": rx.cross_clicks, "events": rx.events, **out})
        return out

    sc = LinkModel(scenario, seed=seed).scenario
    out = {"scenario": scenario, "split_z": float(sc.bob.p_z)}
    node_mod.Node._watch_receiver = spy
    try:
        for rx in ("active", "passive"):
            t = time.monotonic()
            s = run_local(scenario, blocks=blocks, seed=seed, duration_s=600,
                          config=config_for_scenario(sc, receiver=rx))
            res = s["block_results"]
            out[rx] = {"bits": sum(b["secret_bits"] for b in res), "blocks": len(res),
                       "aborted": sum(b["aborted"] for b in res), "s": time.monotonic() - t,
                       "multiphoton": [(round(b["finite_key"].get("multiphoton_z", 0.0)),
                                        round(b["finite_key"].get("multiphoton_x", 0.0)))
                                       for b in res if b.get("finite_key")]}
    finally:
        node_mod.Node._watch_receiver = watch
    out["passive"]["watch"] = seen
    return out


def main(argv=None) -> int:
    args = scenario_args(__doc__, argv)
    print("| scenario | splitter Z | active: secret bits | passive: secret bits | passive / active "
          "| cross clicks / events | Bob's Z share | multi-photon Z, X per block |")
    print("|---|---:|---:|---:|---:|---|---|---|")
    for sc in args.scenarios:
        r = measure(sc, args.blocks, args.seed)
        a, p = r["active"]["bits"], r["passive"]["bits"]
        w = r["passive"]["watch"]
        cross = ", ".join(f"{x['cross'] / max(x['events'], 1):.2%}" for x in w) or "-"
        share = ", ".join(f"{x['measured_split_z']:.3f}" for x in w if "measured_split_z" in x) or "-"
        mp = ", ".join(f"{z}, {x}" for z, x in r["passive"]["multiphoton"]) or "-"
        print(f"| {sc} | {r['split_z']:.2f} | {a} | {p} | {p / a if a else float('nan'):.3f} | {cross} "
              f"| {share} | {mp} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

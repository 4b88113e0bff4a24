"""What bounding Bob's detector efficiency mismatch costs, per configured ratio.

    python -m bench.detector_mismatch [--blocks 2] [--seed 1] [scenario ...]

For each HIL scenario (default: metro-25km, back-to-back, long-100km) both nodes run once on
the model (``link.pipeline.run_local``, its own ``config_for_scenario``); Alice's finite-key
inputs of every block (counts per intensity, leaked bits, Bob's receiver counts and same-basis
double clicks) are recorded as the node passes them to ``link.finite_key.secret_key_length``,
and the length is computed again from the same inputs at each ratio (1.0, 0.95, 0.9, 0.8 and
the rig's own). The ratios therefore compare the same blocks: no run-to-run noise, only the
bound (``link.finite_key``, "Detector efficiency mismatch"). The data check (Alice's X share of
1s against the setting) is not part of this: the rig's detectors are 0.958 (weakest over strongest),
which no setting here contradicts at these block sizes.
"""

from __future__ import annotations

import os
import time

from bench.common import scenario_args
from hil.model import LinkModel
from link import finite_key as fk
from link import node as node_mod
from link.pipeline import config_for_scenario, run_local

RATIOS = (1.0, 0.95, 0.9, 0.8)


def measure(scenario: str, blocks: int, seed: int) -> dict:
    seen: list[tuple] = []
    real = node_mod.fk.secret_key_length

    def spy(key, test, decoy, **kw):        # public counts only: what Alice's node computed from
        r = real(key, test, decoy, **kw)
        seen.append((key, test, decoy, kw, r.ell))
        return r

    sc = LinkModel(scenario, seed=seed).scenario
    cfg = config_for_scenario(sc)
    node_mod.fk.secret_key_length = spy
    t = time.monotonic()
    try:
        s = run_local(scenario, blocks=blocks, seed=seed, duration_s=600, config=cfg)
    finally:
        node_mod.fk.secret_key_length = real
    out = {"scenario": scenario, "rig_ratio": cfg.detector_efficiency_ratio_min,
           "run_s": time.monotonic() - t, "blocks": len(seen),
           "aborted": sum(b["aborted"] for b in s["block_results"]),
           "linked_bits": sum(b["secret_bits"] for b in s["block_results"])}
    rows = {}
    for ratio in (*RATIOS, cfg.detector_efficiency_ratio_min):
        bits, tz, tx = [], [], []
        for key, test, decoy, kw, _ in seen:
            mm = kw["mismatch"]
            r = fk.secret_key_length(key, test, decoy,
                                     **{**kw, "mismatch": fk.DetectorMismatch(ratio, mm.squashed)})
            bits.append(r.ell)
            tz.append(r.extra["tagged_z"] / max(key.n_total, 1))
            tx.append(r.extra["tagged_x"] / max(test.n_total, 1))
        rows[ratio] = {"bits": bits, "tagged_z": tz, "tagged_x": tx}
    out["rows"] = rows
    # the recomputation reproduces what the link computed at the rig's ratio
    out["reproduced"] = rows[cfg.detector_efficiency_ratio_min]["bits"] == [e for *_, e in seen]
    return out


def main(argv=None) -> int:
    args = scenario_args(__doc__, argv)
    print(f"load (os.getloadavg) at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| scenario | ratio | secret bits per block | x of ratio 1.0 | tagged share Z / X |")
    print("|---|---:|---:|---:|---|")
    for sc in args.scenarios:
        r = measure(sc, args.blocks, args.seed)
        base = sum(r["rows"][1.0]["bits"])
        for ratio, row in r["rows"].items():
            n = max(len(row["bits"]), 1)
            tag = ", ".join(f"{z:.2%} / {x:.2%}" for z, x in zip(row["tagged_z"], row["tagged_x"]))
            rig = " (rig)" if ratio == r["rig_ratio"] else ""
            print(f"| {sc} | {ratio:.3f}{rig} | {sum(row['bits']) / n:,.0f} | "
                  f"{sum(row['bits']) / base if base else float('nan'):.3f} | {tag} |", flush=True)
        print(f"<!-- {sc}: {r['blocks']} blocks, {r['aborted']} aborted, "
              f"link's own {r['linked_bits']:,} bits, "
              f"recomputation reproduces it: {r['reproduced']}, run {r['run_s']:.1f} s -->", flush=True)
    print(f"load (os.getloadavg) at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

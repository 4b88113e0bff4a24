"""Run the benchmark suites and print a throughput table.

    python -m bench                 # every suite
    python -m bench -k toeplitz     # a subset (any pytest arguments pass through)
    python -m bench --json out.json # also keep the summary at this path

Throughput is ``extra_info['units'] / mean time``; where a group has a
baseline entry (``extra_info['baseline']``), each entry's throughput is also
given as a ratio to it, measured in the same run, because absolute times on a
shared machine drift. The raw pytest-benchmark JSON and the summary are written
under ``bench/results/`` (not committed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _fmt_rate(x: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.2f} {suffix}"
    return f"{x:.2f} "


def summarize(raw: dict) -> list[dict]:
    """Turn pytest-benchmark JSON into rows with throughput and baseline ratio."""
    rows = []
    by_group: dict[str, list[dict]] = {}
    for b in raw.get("benchmarks", []):
        info = b.get("extra_info", {})
        mean = b["stats"]["mean"]
        row = {
            "group": b.get("group") or "",
            "name": b["name"],
            "mean_s": mean,
            "rounds": b["stats"]["rounds"],
            "unit": info.get("unit", ""),
            "units": info.get("units"),
            "baseline": bool(info.get("baseline", False)),
            "target": info.get("target"),
            "note": info.get("note", ""),
            "extra": {k: v for k, v in info.items()
                      if k not in {"unit", "units", "baseline", "target", "note"}},
        }
        row["throughput"] = row["units"] / mean if row["units"] and mean > 0 else None
        rows.append(row)
        by_group.setdefault(row["group"], []).append(row)
    for group_rows in by_group.values():
        base = next((r for r in group_rows if r["baseline"] and r["throughput"]), None)
        for r in group_rows:
            r["ratio_vs_baseline"] = (r["throughput"] / base["throughput"]
                                      if base and r["throughput"] else None)
            r["baseline_name"] = base["name"] if base else None
            t = r["target"]
            r["meets_target"] = (r["throughput"] >= t) if (t and r["throughput"]) else None
    return rows


def print_table(rows: list[dict], out=sys.stdout) -> None:
    hdr = f"{'group':<28} {'benchmark':<48} {'mean':>10} {'throughput':>16} {'vs base':>8} {'target':>14}"
    print(hdr, file=out)
    print("-" * len(hdr), file=out)
    for r in sorted(rows, key=lambda r: (r["group"], not r["baseline"], r["name"])):
        tp = f"{_fmt_rate(r['throughput'])}{r['unit']}/s" if r["throughput"] else "-"
        ratio = f"{r['ratio_vs_baseline']:.2f}x" if r["ratio_vs_baseline"] else "-"
        if r["baseline"]:
            ratio = "base"
        tgt = "-"
        if r["target"]:
            tgt = f"{_fmt_rate(r['target'])}{'ok' if r['meets_target'] else 'MISS'}"
        print(f"{r['group'][:28]:<28} {r['name'][:48]:<48} {r['mean_s'] * 1e3:>8.2f}ms "
              f"{tp:>16} {ratio:>8} {tgt:>14}", file=out)


def main(argv: list[str] | None = None) -> int:
    import pytest

    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="also write the summary JSON here")
    args, rest = ap.parse_known_args(argv)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    raw_path = results / f"raw-{stamp}.json"
    code = pytest.main([str(HERE), "-p", "no:cacheprovider", "--benchmark-enable",
                        "--benchmark-only", f"--benchmark-json={raw_path}", "-q", *rest])
    if not raw_path.exists():
        print("no benchmark ran", file=sys.stderr)
        return int(code) or 1
    rows = summarize(json.loads(raw_path.read_text()))
    print()
    print_table(rows)
    summary = {"time": stamp, "machine": json.loads(raw_path.read_text()).get("machine_info", {}),
               "rows": rows}
    (results / "summary-latest.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return int(code)


if __name__ == "__main__":
    sys.exit(main())

"""Shared conventions for the benchmark suites.

Every benchmark records in ``benchmark.extra_info`` (through ``record``):

* ``units``: how many units one call processes (input bits, events, ...);
* ``unit``: the name of that unit ("bit", "event", ...);
* ``baseline``: True for the reference run (numpy or a public package) that the
  other entries of the same ``benchmark.group`` are compared with;
* optionally ``target``: the throughput target in units/s, and ``note``.

``python -m bench`` turns these into throughput and ratio-to-baseline figures,
so the numbers in reports are measured in the same process as their baseline.
"""

from __future__ import annotations

import argparse


def record(benchmark, *, units: float, unit: str, baseline: bool = False,
           target: float | None = None, note: str = "", **extra) -> None:
    """Fill ``benchmark.extra_info`` in the form ``python -m bench`` reads."""
    benchmark.extra_info.update(units=float(units), unit=unit, baseline=baseline, note=note, **extra)
    if target is not None:
        benchmark.extra_info["target"] = float(target)


LINK_SCENARIOS = ("metro-25km", "back-to-back", "long-100km")


def scenario_args(doc: str, argv=None) -> argparse.Namespace:
    """The arguments of the benches that run both nodes per HIL scenario (``scenarios``,
    ``--blocks``, ``--seed``), with the module docstring's first line as the description."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("scenarios", nargs="*", default=list(LINK_SCENARIOS))
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    return ap.parse_args(argv)

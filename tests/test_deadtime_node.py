"""A Bob whose dead-time setting is shorter than his detectors' makes no key.

Both nodes on the model (``link.pipeline.run_local``), detectors really dead for 30 ns while
Bob's slotter is told 10 ns (``Timing.for_model`` replaced for this run: the misconfigured
node file of a lab). His tags show it (``Slotter.dead_time_check``): every block is aborted
with the ``dead_time`` alarm and no key reaches either store. With the setting right, the
same link makes key (the guard's cost is in bench.deadtime_guard).
"""

from __future__ import annotations

from dataclasses import replace

from hil.scenario import Scenario
from link import frontend
from link.pipeline import config_for_scenario, run_local


def _run(monkeypatch, configured_ns: float | None) -> dict:
    sc = Scenario.load("back-to-back").with_overrides({"detectors.dead_time_ns": 30.0})
    if configured_ns is not None:
        orig = frontend.Timing.for_model

        def told(model, *a, **kw):
            return replace(orig(model, *a, **kw), dead_time_ps=configured_ns * 1e3)

        monkeypatch.setattr(frontend.Timing, "for_model", staticmethod(told))
    return run_local(sc, blocks=2, seed=3, duration_s=60,
                     config=config_for_scenario(sc, block_bits=1 << 18))


def test_too_short_a_dead_time_setting_stops_the_key(monkeypatch):
    s = _run(monkeypatch, 10.0)
    assert s["blocks"] >= 2 and s["blocks_aborted"] == s["blocks"], s["block_results"]
    assert "dead_time" in s["alarms"] and s["secret_bits"] == 0
    assert s["keys"] == {"alice": 0, "bob": 0}
    assert all("dead time" in b["reason"] for b in s["block_results"]), s["block_results"]


def test_the_right_setting_makes_key(monkeypatch):
    s = _run(monkeypatch, None)                     # the model's own 30 ns
    assert s["blocks"] >= 2 and s["blocks_aborted"] == 0 and s["secret_bits"] > 0
    assert "dead_time" not in s["alarms"] and s["keys_identical"]
    assert s["dead_time_vetoed"] > 0.3 * s["bob_events"]     # 30 ns back to back: most events

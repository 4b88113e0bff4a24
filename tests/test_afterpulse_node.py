"""A Bob whose detectors afterpulse later than his dead-time guard makes no key.

Both nodes on the model (``link.pipeline.run_local``): detectors dead for 20 ns that afterpulse
with probability 0.1 and a 50 ns release time, Bob's guard set to the dead time alone (what a
lab whose node file gives only the dead time runs). His tags show the afterpulses beyond the
guard (``Slotter.afterpulse_check``): the blocks are aborted with the ``afterpulse`` alarm,
counted, and no key reaches either store. That a guard covering the afterpulses is quiet is
tested on Bob's slotter (tests/test_slotting_afterpulse.py): at metro-25km's click rates such a
guard (~0.4 us) leaves too few events for a block in seconds; what it costs is in
bench.afterpulse_guard. Every other two-node test (detectors without afterpulses) runs the same
check and has no block aborted.
"""

from __future__ import annotations

from hil.scenario import Scenario
from link.pipeline import config_for_scenario, run_local

AFTERPULSING = {"detectors.dead_time_ns": 20.0, "detectors.afterpulse_prob": 0.1,
                "detectors.afterpulse_time_constant_ns": 50.0}


def test_afterpulses_beyond_the_guard_stop_the_key():
    sc = Scenario.load("metro-25km").with_overrides(AFTERPULSING)
    # Bob's guard: the model's 20 ns dead time (Timing.for_model), nothing for the afterpulses
    s = run_local(sc, blocks=2, seed=3, duration_s=60, config=config_for_scenario(sc, block_bits=1 << 18))
    assert s["blocks"] >= 2 and s["blocks_aborted"] == s["blocks"], s["block_results"]
    assert "afterpulse" in s["alarms"] and "dead_time" not in s["alarms"]
    assert s["afterpulse_blocks"] == s["blocks"] and s["secret_bits"] == 0
    assert s["keys"] == {"alice": 0, "bob": 0}
    assert all("afterpulse" in b["reason"] for b in s["block_results"]), s["block_results"]

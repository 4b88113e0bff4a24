"""Instrument faults during a running link on the HIL rig (issue 9, "Faults").

Both nodes run through the production drivers on the rig's emulated
instruments (``run_local(instruments="rig")``). Once the first block's keys are
committed on both sides, one instrument fails through its twin's
fault-injection switches (harness: ``bench.faults.instrument_fault_run``).
Each time the link must raise the ``instrument`` alarm naming the instrument and
the command, stop well before its time limit, and keep every key already
committed, identical on both sides, with no block committed by Bob only.

CI runs four faults (~8-15 s each): the tagger's stream connection dropping, an
instrument-reported error in the AWG's queue, Bob's SNSPD controller stalling
and his MPC320 polarization controller dropping off, both found by the node's
instrument watch (``link.instrument_watch``) while the link runs.
``python -m bench.faults`` runs all 17 (plus tagger garbage, AWG garbage, a
silent AWG, and disconnect/garbage/stall of the SNSPD, ID120, EPC-400 (driven by
the tracking loop) and MPC320) and the kill -9 campaigns.
"""

from __future__ import annotations

import pytest

from bench.faults import instrument_fault_run


@pytest.mark.parametrize("fault", ["tagger_drop", "awg_error", "snspd_stall", "mpc320_drop"])
def test_instrument_fault_mid_run_alarms_stops_and_keeps_keys(fault, tmp_path):
    r = instrument_fault_run(fault, tmp_path, blocks=6)
    s = r["summary"]
    assert r["fired"], "the first block never committed on both sides"
    assert "instrument" in s["alarms"], s["alarms"]
    assert r["alarm_names_it"], r["instrument_alarms"]
    assert s["blocks"] < 6 and s["wall_s"] < 100  # stopped on the fault, not at the time limit
    # nothing committed is lost, both sides hold the same keys, Bob committed nothing Alice did not
    assert s["keys_identical"] is True
    assert s["keys"]["alice"] == s["keys"]["bob"] >= r["keys_at_fault"]["alice"]
    assert r["invariant_violations"] == []

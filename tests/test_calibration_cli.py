"""`qkd calibrate timing` on the emulated rig through the production AWG and PicoQuant drivers:
offsets match the rig's exact constants and land in the lab file with the date."""

from __future__ import annotations

import tomllib

import pytest

from hil.model import LinkModel
from hil.scenario import Scenario
from link.cli import main
from link.frontend import Timing


def test_calibrate_timing_on_rig_saves_section(tmp_path, capsys):
    lab = tmp_path / "lab.toml"
    lab.write_text('[bob.time_tagger]\ndriver = "picoquant_stream"\n')
    assert main(["calibrate", "timing", "--save", str(lab), "--frames", "40", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "saved [bob.timing]" in out
    doc = tomllib.loads(lab.read_text())
    sec = doc["bob"]["timing"]
    assert doc["bob"]["time_tagger"]["driver"] == "picoquant_stream"
    sc = Scenario.load("drifting-fiber").with_overrides({"source.frame_slots": 1 << 16})
    truth = Timing.for_model(LinkModel(sc, 1)).offsets_ps
    # the rig's tagger starts its clock before the first sync; offsets are relative to the sync
    assert sec["offsets_ps"] == pytest.approx(list(truth), abs=2.0)
    assert sec["date"] and sec["frames"] == 40

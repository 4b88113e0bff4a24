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


def _efficiency_figures(out: str) -> tuple[float, float, float]:
    import re

    m = re.search(r"efficiency ratio ([\d.]+) \(bound ([\d.]+)\)", out)
    t = re.search(r"rig truth ratio ([\d.]+)", out)
    assert m and t, out
    return float(m.group(1)), float(m.group(2)), float(t.group(1))


def test_calibrate_efficiency_on_rig_bounds_the_true_ratio(capsys):
    # reference frames through the production AWG and PicoQuant drivers (the rig's 100 km default:
    # its signal class stays below 1 % clicks per pulse); the rig's detectors 0.70/0.68/0.71/0.69
    assert main(["calibrate", "efficiency", "--frames", "100", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    est, bound, truth = _efficiency_figures(out)
    assert truth == pytest.approx(0.68 / 0.71, abs=1e-4)
    assert bound < truth                            # the 5-sigma bound is below the truth
    assert est == pytest.approx(truth, rel=0.06)    # ~1400 clicks on each X detector: ~2.5 % each
    assert "detector_efficiency_ratio_min <=" in out and "100/100 frames" in out
    # a looser margin gives a higher (less safe) bound from the same kind of counts
    assert main(["calibrate", "efficiency", "--frames", "100", "--seed", "2", "--sigmas", "1"]) == 0
    assert _efficiency_figures(capsys.readouterr().out)[1] > bound


def test_calibrate_efficiency_refuses_saturating_light_and_bad_settings(capsys):
    # back to back, Alice's signal class makes the H detector click on ~30 % of H pulses: not linear
    assert main(["calibrate", "efficiency", "--scenario", "back-to-back", "--frames", "10"]) == 1
    assert "lower the intensity" in capsys.readouterr().out
    assert main(["calibrate", "efficiency", "--intensity-class", "3"]) == 2
    assert "--intensity-class 3" in capsys.readouterr().out
    assert main(["calibrate", "efficiency", "--frames", "0"]) == 2
    assert "--frames 0" in capsys.readouterr().out

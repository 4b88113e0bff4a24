"""The timing calibration's record in the lab file: ``qkd calibrate timing --config lab.toml`` writes
``[bob.timing]`` into the lab file, which must stay a valid lab file for every other tool
(before, every later load failed: "bob.timing.nominal_period_ps: expected one of: driver, resource,
settings, timeout_s"), and ``qkd bob`` takes its offsets and window when the node file gives none.
``qkd calibrate --config`` reports a bad lab file or a silent instrument without a traceback.
Real files, real closed TCP ports on 127.0.0.1."""

from __future__ import annotations

import socket

import pytest

from calibration.timing import save_toml
from drivers.config import ConfigError as LabError
from drivers.config import load_lab
from link.cli import main
from link.config import load_node_file

LAB = """[lab]
name = "t"

[alice.pattern_generator]
driver = "keysight_33500"
resource = "127.0.0.1:{port}"
timeout_s = 1.0

[bob.time_tagger]
driver = "picoquant_stream"
resource = "127.0.0.1:{port}"
"""

RECORD = {"nominal_period_ps": 1000.0, "frame_slots": 4096, "period_ps": 1000.0005,
          "offsets_ps": [1234.5, 1354.5, 1154.5, 1274.5], "window_ps": 205.0, "date": "2026-11-25T00:00:00"}

NODE = """[node]
role = "bob"
link_id = "L"
psk = "bob.psk"
store = "bob.db"
[channel]
proto = "tcp://127.0.0.1:7100"
ctrl = "tcp://127.0.0.1:7101"
[frontend]
lab = "lab.toml"
instrument = "time_tagger"
frame_slots = {slots}
clock_hz = 1e9
dead_time_ns = 50.0
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab(tmp_path):
    lab = tmp_path / "lab.toml"
    lab.write_text(LAB.format(port=_closed_port()))
    save_toml(lab, "bob.timing", RECORD)          # as `qkd calibrate timing --config lab.toml` does
    return lab


def test_a_calibrated_lab_file_still_loads_and_checks(tmp_path, capsys):
    lab = _lab(tmp_path)
    cfg = load_lab(lab)
    assert cfg.timing["offsets_ps"] == RECORD["offsets_ps"]
    assert {i.key for i in cfg} == {"alice.pattern_generator", "bob.time_tagger"}
    assert main(["devices", "check", "--config", str(lab)]) == 1      # loads; nothing answers
    out = capsys.readouterr()
    assert "0/2 instruments answered" in out.out and "Traceback" not in out.err


def test_bob_takes_offsets_from_the_lab_files_record_unless_his_node_file_has_them(tmp_path, capsys):
    from link.commands import _bob_timing

    lab = load_lab(_lab(tmp_path))
    node = tmp_path / "bob.toml"
    node.write_text(NODE.format(slots=4096))
    offs, window, dead = _bob_timing(load_node_file(node), lab)
    assert offs == tuple(RECORD["offsets_ps"]) and window == 205.0 and dead == 50.0
    assert "[bob.timing]" in capsys.readouterr().out
    node.write_text(NODE.format(slots=4096) + "offsets_ps = [1.0, 2.0, 3.0, 4.0]\nwindow_ps = 300.0\n")
    assert _bob_timing(load_node_file(node), lab) == ((1.0, 2.0, 3.0, 4.0), 300.0, 50.0)
    node.write_text(NODE.format(slots=8192))      # calibrated for other frames: refused, named
    reason, none, _ = _bob_timing(load_node_file(node), lab)
    assert none is None and "[bob.timing].frame_slots = 4096" in reason and "calibrate timing" in reason


def test_bob_needs_a_dead_time_from_his_node_file_or_the_timing_record(tmp_path, capsys):
    from link.commands import _bob_timing

    node = tmp_path / "bob.toml"
    node.write_text(NODE.format(slots=4096).replace("dead_time_ns = 50.0\n", ""))
    reason, none, _ = _bob_timing(load_node_file(node), load_lab(_lab(tmp_path)))
    assert none is None and "[frontend] dead_time_ns" in reason and "calibrate timing" in reason, reason
    lab = _lab(tmp_path)                          # the record with a measured dead time
    save_toml(lab, "bob.timing", {**RECORD, "dead_time_ns": 12.0})
    offs, window, dead = _bob_timing(load_node_file(node), load_lab(lab))
    assert dead == 12.0 and "dead time 12 ns from" in capsys.readouterr().out
    save_toml(lab, "bob.timing", {**RECORD, "dead_time_ns": -1.0})
    with pytest.raises(LabError, match="dead_time_ns"):
        load_lab(lab)


def test_calibrate_with_a_bad_lab_file_or_silent_instruments_gives_an_error_not_a_traceback(tmp_path, capsys):
    assert main(["calibrate", "timing", "--config", str(tmp_path / "none.toml")]) == 2
    err = capsys.readouterr().err
    assert "none.toml" in err and "readable" in err and "Traceback" not in err
    lab = _lab(tmp_path)
    assert main(["calibrate", "timing", "--config", str(lab)]) == 2
    err = capsys.readouterr().err
    assert "alice.pattern_generator" in err and "refused" in err.lower() and "Traceback" not in err
    assert main(["calibrate", "polarization", "--config", str(lab)]) == 2   # [bob.timing] read, then
    err = capsys.readouterr().err                                           # no controller in the file
    assert "bob.polarization" in err and "time_tagger" in err and "Traceback" not in err, err


def test_a_lab_file_and_a_node_file_swapped_are_named_as_such(tmp_path, capsys):
    lab = _lab(tmp_path)
    node = tmp_path / "bob.toml"
    node.write_text(NODE.format(slots=4096))
    assert main(["bob", "--config", str(lab)]) == 2
    err = capsys.readouterr().err
    assert "this is a lab file" in err and "node file" in err, err
    assert main(["devices", "check", "--config", str(node)]) == 2
    err = capsys.readouterr().err
    assert "this is a node file" in err and "[frontend] lab" in err, err


def test_calibrate_polarization_takes_the_frame_length_of_the_timing_record(tmp_path, capsys):
    # `qkd calibrate polarization --config rig.toml` after `calibrate timing --frame-slots 262144`
    # drove Alice with the default 65536-slot frames, against offsets measured on 262144: "no
    # detections back after 16 extra frames". It now takes [bob.timing].frame_slots (4096 here),
    # and refuses an explicit --frame-slots that differs, naming both
    lab = _lab(tmp_path)
    assert main(["calibrate", "polarization", "--config", str(lab)]) == 2   # nothing listens
    out = capsys.readouterr()
    assert "4096 slots a frame (the lab file's [bob.timing])" in out.out, out
    assert main(["calibrate", "polarization", "--config", str(lab), "--frame-slots", "8192"]) == 2
    out = capsys.readouterr()
    assert "--frame-slots 8192" in out.out and "frames of 4096 slots" in out.out, out
    assert "Traceback" not in out.err

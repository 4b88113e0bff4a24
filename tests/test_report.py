"""``qkd report --run DIR`` on the folders of real short ``qkd run --out DIR`` runs."""

from __future__ import annotations

import json
import re

import pytest

from link.cli import main


@pytest.fixture(scope="module")
def metro(tmp_path_factory):
    d = tmp_path_factory.mktemp("metro")
    # --kme and --metrics-port too: the services start and stop with the run
    assert main(["run", "--blocks", "2", "--block-bits", "524288", "--instruments", "model", "--out", str(d),
                 "--kme", "--metrics-port", "0", "--json"]) == 0
    return d


def test_report_of_a_run_with_key(metro, capsys):
    capsys.readouterr()
    s = json.loads((metro / "summary.json").read_text())
    assert (metro / "telemetry.jsonl").stat().st_size > 0
    assert (metro / "pki" / "SAE_A.pem").exists() and (metro / "alice-kme.db").exists()
    assert main(["report", "--run", str(metro)]) == 0
    md = capsys.readouterr().out
    assert f"| secret key | {s['secret_bits']} bits |" in md
    assert f"| QBER (Z, corrected) | {s['qber']:.4f} |" in md
    assert f"| reconciliation efficiency f | {s['f']:.3f} |" in md
    assert f"| keys in alice's store | {s['keys']['alice']} (" in md
    assert "| same key IDs in both stores | yes |" in md
    assert "| keys identical at the end of the run | yes |" in md
    rows = re.findall(r"^\| (\d+) \| [\d.]+ \| (\d+) \| ([\d.]+) \|.*\| key \|$", md, re.M)
    assert len(rows) == s["blocks"] == 2
    assert [int(r[1]) for r in rows] == [b["n_z"] for b in s["block_results"]]
    # the finite-key terms of each block, as Alice computed them (the passive receiver's
    # multi-photon bound included: the rig's receiver is a beam splitter; and the events tagged
    # by the detector efficiency mismatch bound: the rig's detectors differ)
    fk_rows = re.findall(r"^\| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| ([\d.]+) \| (\d+) \| (\d+) "
                         r"\| (\d+) \| (\d+) \|$", md, re.M)
    assert [int(r[0]) for r in fk_rows] == [b["block_id"] for b in s["block_results"]]
    for r, b in zip(fk_rows, s["block_results"], strict=True):
        t = b["finite_key"]
        assert int(r[2]) == round(t["s1"]) and int(r[6]) == round(t["multiphoton_z"])
        assert 0 < t["multiphoton_z"] < t["s1"] < b["n_z"] and 0 < t["phase_error"] < 0.5
        assert int(r[8]) == round(t["tagged_z"]) and 0 < t["tagged_z"] < t["s1"]
    m = re.search(r"Largest per-block total (\S+) against eps_sec \+ eps_cor = (\S+) plus authentication "
                  r"up to (\S+) \(within\); composed over the 2 blocks with key: (\S+)\.", md)
    # authentication: the forgery bound of the block's 64-bit tags, ~1e-13 at these sizes
    assert m and 1e-16 < float(m.group(3)) < 1e-11
    assert float(m.group(1)) <= (1.0001e-10 + float(m.group(3))) * 1.001
    assert float(m.group(4)) == pytest.approx(2 * float(m.group(1)), rel=0.01)
    from link.report import figures, load_run
    fig = figures(load_run(metro))
    assert fig["secret_series"][-1][1] == s["secret_bits"]          # the key over time adds up
    assert len(fig["rates"]) == 2 and all(r > 0 for _, r in fig["rates"])
    # alarms as the run raised them (a loaded machine may make the channel retransmit, and
    # a retransmission whose ACK came late is refused as a replay and raises an alarm)
    if s["alarm_count"] == 0:
        assert "## Alarms\n\nNone." in md
    else:
        assert md.count("\n- t = ") == s["alarm_count"]
        assert all(f"**{a}**" in md for a in s["alarms"])
    for role, c in s["channel"].items():
        line = next(ln for ln in md.splitlines() if ln.startswith(f"- {role}: "))
        assert f"{c['sent']} sent, {c['retransmitted']} retransmitted" in line
        assert ("refused: none" in line) == (c["bad_tag"] + c["replayed"] + c["out_of_sequence"] == 0)


def test_html_report_is_self_contained(metro, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", "--run", str(metro), "--html", "-o", str(out)]) == 0
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 3
    assert "<polyline" in page and "<table>" in page
    assert "<script" not in page and "src=" not in page and "href=" not in page
    # the Markdown is converted, not pasted: list items inside a list, no emphasis or code marks left
    assert page.count("<li>") > 0 and not re.search(r"</(p|table|h2|ul)>\s*<li>", page)
    assert page.count("<ul>") == page.count("</ul>") > 0
    assert "_Written" not in page and "<em>Written" in page and "`" not in page and "**" not in page
    import xml.etree.ElementTree as ET
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        ET.fromstring(svg)                               # each chart is well-formed SVG


def test_report_of_an_attacked_run_shows_the_alarm(tmp_path, capsys):
    d = tmp_path / "eve"
    main(["run", "--scenario", "intercept-resend", "--blocks", "1", "--block-bits", "131072",
          "--instruments", "model", "--out", str(d), "--json"])
    capsys.readouterr()
    assert main(["report", "--run", str(d)]) == 0
    md = capsys.readouterr().out
    assert "No block produced key" in md
    assert re.search(r"\| 1 \| [\d.]+ \| \d+ \| 0\.2\d+ \|.*\| ABORTED: QBER 0\.2\d+ above 0\.11 \|", md)
    assert re.search(r"- t = [\d.]+ s, alice: \*\*qber_high\*\* .*\(block 1\)", md)


def test_report_while_the_run_goes_says_so(metro, tmp_path, capsys):
    # `qkd report` on a `qkd run --out` folder before the run ends (no summary.json yet) said
    # "Scenario **?**" and showed "-" rates with nothing to say why
    (tmp_path / "telemetry.jsonl").write_bytes((metro / "telemetry.jsonl").read_bytes())
    capsys.readouterr()
    assert main(["report", "--run", str(tmp_path)]) == 0
    md = capsys.readouterr().out
    assert "No summary.json: the run is still going, or stopped before its end." in md
    assert "**?**" not in md and "Scenario **unknown**" in md
    assert main(["report", "--run", str(metro)]) == 0
    assert "No summary.json" not in capsys.readouterr().out


def test_run_refuses_an_out_folder_that_holds_a_run(metro, capsys):
    # a second `qkd run --out` into the same folder carried on the first run's stores and
    # telemetry log under a new summary.json: "secret key 565239 bits in 6848 keys", and the
    # report mixed the two runs' blocks
    before = {p.name: p.stat().st_mtime_ns for p in metro.iterdir()}
    capsys.readouterr()
    assert main(["run", "--blocks", "1", "--instruments", "model", "--out", str(metro)]) == 2
    err = capsys.readouterr().err
    assert f"--out {metro} already holds a run (" in err and "summary.json" in err, err
    assert {p.name: p.stat().st_mtime_ns for p in metro.iterdir()} == before   # nothing touched
    # --out naming a file was a FileExistsError traceback from the run's mkdir
    (metro.parent / "afile").write_text("x")
    assert main(["run", "--blocks", "1", "--instruments", "model", "--out", str(metro.parent / "afile")]) == 2
    assert f"cannot use {metro.parent / 'afile'} as a folder: File exists" in capsys.readouterr().err


def test_report_errors_name_the_problem(tmp_path, capsys):
    assert main(["report", "--run", str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["report", "--run", str(tmp_path)]) == 2
    assert "neither summary.json nor telemetry.jsonl" in capsys.readouterr().err
    (tmp_path / "telemetry.jsonl").write_text('{"kind": "status", "t": 1}\n{oops\n')
    assert main(["report", "--run", str(tmp_path)]) == 2
    assert "telemetry.jsonl:2: not a JSON object" in capsys.readouterr().err
    (tmp_path / "telemetry.jsonl").write_text('{"kind": "status", "node": "alice", "t": 1, "wall_s": 0}\n')
    (tmp_path / "alice.db").write_text("not sqlite")
    assert main(["report", "--run", str(tmp_path)]) == 2
    assert "alice.db: not a key store" in capsys.readouterr().err
    # an output file that cannot be written is named, not a FileNotFoundError traceback
    (tmp_path / "alice.db").unlink()
    assert main(["report", "--run", str(tmp_path), "-o", str(tmp_path / "no" / "r.md")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'no' / 'r.md'}: No such file or directory" in err, err

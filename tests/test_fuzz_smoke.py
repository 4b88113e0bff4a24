"""CI smoke run of the coverage-guided fuzzers: every target in bench/fuzz for ~3 s under atheris.

Each target runs in its own subprocess (libFuzzer exits when done), two at a time (49 s one at a
time on this 2-core machine, 31 s two at a time); the run must end with zero
findings and each target must actually have executed inputs.  Skipped when atheris is not
installed (it is in the ``test`` extra on Linux).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from bench.fuzz.targets import TARGETS


@pytest.mark.slow
def test_every_fuzz_target_runs_clean_for_3s(tmp_path):
    pytest.importorskip("atheris", reason="atheris is not installed: no coverage-guided fuzzing")
    p = subprocess.run([sys.executable, "-m", "bench.fuzz", "--seconds", "3", "--jobs", "2", "--artifacts",
                        str(tmp_path / "findings")], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600)
    out = p.stdout + p.stderr[-6000:]
    assert p.returncode == 0, out
    rows = {m.group(1): (m.group(2), int(m.group(3)))
            for m in re.finditer(r"^(\w+)\s+(ok|FINDING)\s+(\d+)", p.stdout, re.M)}
    assert set(rows) == set(TARGETS), out
    for name, (status, execs) in rows.items():
        assert status == "ok" and execs > 50, (name, status, execs)
    assert not list((tmp_path / "findings").glob("*"))

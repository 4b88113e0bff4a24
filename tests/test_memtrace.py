"""link.memtrace: off unless QKD_MEMTRACE is set; when set, it names the line whose allocations grew.

Run in a child process: tracemalloc is process-wide and would slow the rest of the session.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

CHILD = textwrap.dedent("""
    import time
    from link import memtrace
    assert memtrace.start("alice") and not memtrace.start("bob")   # one tracer per process
    keep = []
    for i in range(10):
        keep.append(bytearray(200_000))          # the growth to find
        time.sleep(0.1)
    time.sleep(0.6)
""")


def test_memtrace_names_the_growing_line_and_logs_sqlite_and_rss(tmp_path):
    env = {**os.environ, "QKD_MEMTRACE": str(tmp_path), "QKD_MEMTRACE_EVERY": "0.3"}
    (tmp_path / "child.py").write_text(CHILD)      # a file: the report quotes its lines
    subprocess.run([sys.executable, str(tmp_path / "child.py")], env=env, check=True, timeout=60)
    reports = sorted(tmp_path.glob("memtrace-alice-*-*.txt"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    assert reports, list(tmp_path.iterdir())
    text = reports[-1].read_text()
    first = text.splitlines()[1]               # the call site that grew most comes first
    assert "KiB" in first and float(first.split()[0]) > 500, text[:500]
    assert "child.py" in text.splitlines()[2]
    assert "keep.append(bytearray(200_000))" in text.splitlines()[3]
    log = next(tmp_path.glob("memtrace-alice-*.log")).read_text().splitlines()
    assert len(log) >= 3 and all(" sqlite " in ln and " rss_kb " in ln for ln in log)


def test_memtrace_is_off_without_the_variable(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "QKD_MEMTRACE"}
    out = subprocess.run([sys.executable, "-c", "import tracemalloc\nfrom link import memtrace\n"
                          "print(memtrace.start('alice'), tracemalloc.is_tracing())"],
                         env=env, check=True, capture_output=True, text=True, cwd=Path(tmp_path), timeout=60)
    assert out.stdout.split() == ["False", "False"]

"""`qkd ... | head`: a reader that closes the pipe early ends the command quietly (exit 141, as a
shell tool killed by SIGPIPE), never with a BrokenPipeError traceback. Real pipe, real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_closed_stdout_pipe_gives_no_traceback():
    p = subprocess.Popen([sys.executable, "-m", "link.cli", "selftest"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()            # `| head -0`: the reader is gone before the first line
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err

"""`qkd ... | head`: a reader that closes the pipe early ends the command quietly (exit 141, as a
shell tool killed by SIGPIPE), never with a BrokenPipeError traceback. Real pipe, real process."""

from __future__ import annotations

import subprocess
import sys


def test_closed_stdout_pipe_gives_no_traceback(tmp_path):
    # cwd outside the source tree: there a clean checkout's uncompiled postproc_c would shadow
    # the installed package (CI installs with `pip install .`, not in place)
    p = subprocess.Popen([sys.executable, "-m", "link.cli", "selftest"], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()            # `| head -0`: the reader is gone before the first line
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err

"""The package as installed: version stamp, stale-build refusal, the CLI entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import postproc_c


def test_core_version_matches_package():
    from postproc_c import ffi, lib

    assert ffi.string(lib.qpp_version()).decode() == postproc_c.__version__


def test_stale_core_is_refused(tmp_path: Path):
    # Copy the installed package, bump only the Python version: the compiled
    # core now claims an older version and import must refuse it.
    src = Path(postproc_c.__file__).parent
    dst = tmp_path / "postproc_c"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    (dst / "_version.py").write_text('__version__ = "999.0.0"\n')
    proc = subprocess.run([sys.executable, "-c", "import postproc_c"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "stale C core" in proc.stderr
    assert "999.0.0" in proc.stderr


def test_strerror_covers_every_status():
    from postproc_c import ffi, lib

    codes = [v for k, v in vars(lib).items() if k.startswith("QPP_ERR_")]
    assert len(codes) >= 10
    texts = {ffi.string(lib.qpp_strerror(c)).decode() for c in codes}
    assert len(texts) == len(codes)  # each code has its own text
    assert ffi.string(lib.qpp_strerror(-12345)).decode() == "unknown status"


def test_qkd_version_cli():
    exe = shutil.which("qkd")
    cmd = [exe] if exe else [sys.executable, "-m", "link.cli"]
    out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"qkd {postproc_c.__version__}"

"""The C core built with AddressSanitizer + UndefinedBehaviorSanitizer runs its test suite clean.

The package tree (postproc_c, setup.py, pyproject.toml, tests) is copied to a temporary directory
and built there with ``QPP_SANITIZE=1`` (``postproc_c/build_ffi.py``: ``-fsanitize=address,undefined
-fno-sanitize-recover=undefined``), so the developer's in-place build is untouched.  The C-core
tests then run in two subprocesses side by side (one per core), whose working directory is that
copy (so ``import postproc_c`` finds the sanitized module, checked first), with the ASan runtime
preloaded into the uninstrumented Python (``LD_PRELOAD``), leak detection off (CPython's own
allocations would drown it) and UBSan halting on the first report.  A positive control first
drives a deliberate heap overflow through the sanitized module and expects ASan to stop the
process, so a clean run means something.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# every test file that exercises the C core (735 tests), in two shards run side by side (one per
# core): sanitized, test_ldpc_qc.py takes ~37 s and the rest ~36 s on this machine, 77 s in one run
C_CORE_SHARDS = [["test_ldpc_qc.py"],
                 ["test_bits.py", "test_toeplitz.py", "test_polyhash.py", "test_sifting.py",
                  "test_cascade.py", "test_ldpc.py", "test_ldpc_side_kat.py",
                  "test_tagmerge.py", "test_hil_kernel.py",  # hil._kernel: HIL C hot path (hil/build_ffi.py)
                  "test_slotting_fast.py",   # src/slot.c through link.slotting, and its fuzz
                  "test_auth_wipe.py"]]      # qpp_wc_tag/qpp_wc_verify through link.auth's pool

OVERFLOW_CONTROL = """
import numpy as np
import postproc_c
from postproc_c._binding import ffi, lib
words = np.zeros(1024, np.uint64)          # 8 KiB from malloc: ASan puts a redzone after it
bits = np.zeros(1025 * 64, np.uint8)
# bypass the Python wrapper's checks and claim one word more than there is
st = lib.qpp_unpack_bits(ffi.cast("uint64_t *", words.ctypes.data), 1025, 1025 * 64,
                         ffi.cast("uint8_t *", bits.ctypes.data))
print("NOT DETECTED", st)
"""


def _sanitizer_runtime() -> str | None:
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    try:
        path = subprocess.run([gcc, "-print-file-name=libasan.so"], capture_output=True, text=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    # gcc echoes the bare name back when it has no such library
    return path if os.path.isabs(path) and os.path.exists(path) else None


@pytest.mark.slow
def test_c_core_clean_under_asan_and_ubsan(tmp_path):
    asan = _sanitizer_runtime()
    if asan is None:
        pytest.skip("gcc with libasan is not installed: cannot build the sanitized C core")
    work = tmp_path / "tree"
    work.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.o", "_core.c", "_kernel.c", ".hypothesis")
    shutil.copytree(ROOT / "postproc_c", work / "postproc_c", ignore=ignore)
    shutil.copytree(ROOT / "drivers", work / "drivers", ignore=ignore)  # drivers._tagmerge (C merge)
    shutil.copytree(ROOT / "hil", work / "hil", ignore=ignore)      # setup.py builds hil._kernel too
    shutil.copytree(ROOT / "link", work / "link", ignore=ignore)    # link.slotting calls src/slot.c
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, work / name)

    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PYTHONPATH")}
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace", "--force", "-j", "2"],
                           cwd=work, env={**env, "QPP_SANITIZE": "1"}, capture_output=True, text=True,
                           timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    so = list((work / "postproc_c").glob("_core*.so"))
    assert len(so) == 1, so
    assert len(list((work / "drivers").glob("_tagmerge*.so"))) == 1
    assert len(list((work / "hil").glob("_kernel*.so"))) == 1

    run_env = {**env, "PYTHONPATH": str(work), "LD_PRELOAD": asan,
               "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=86",
               "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=87",
               "PYTHONDONTWRITEBYTECODE": "1"}
    where = subprocess.run([sys.executable, "-c", "import postproc_c._core as c; print(c.__file__)"],
                           cwd=work, env=run_env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr[-3000:]
    assert Path(where.stdout.strip()).resolve() == so[0].resolve(), where.stdout  # the sanitized build

    control = subprocess.run([sys.executable, "-c", OVERFLOW_CONTROL], cwd=work, env=run_env,
                             capture_output=True, text=True, timeout=120)
    assert control.returncode == 86, (control.returncode, control.stdout, control.stderr[-2000:])
    assert "AddressSanitizer: heap-buffer-overflow" in control.stderr
    assert "qpp_unpack_bits" in control.stderr

    shards = [subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                *[f"tests/{t}" for t in shard]],
                               cwd=work, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for shard in C_CORE_SHARDS]
    try:
        done = [(p, *p.communicate(timeout=600)) for p in shards]
    finally:
        for p in shards:
            p.kill()
    for p, stdout, stderr in done:
        out = stdout[-4000:] + stderr[-4000:]
        assert "Sanitizer" not in stderr and "runtime error" not in stderr, out
        assert p.returncode == 0, out
        assert " passed" in stdout and " failed" not in stdout, out

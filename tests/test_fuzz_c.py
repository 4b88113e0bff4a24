"""C fuzz harnesses (bench/fuzz/c) under ASan/UBSan: build with gcc, replay corpus and
regressions, then a short coverage-guided random run per target (skipped without gcc);
the same under real libFuzzer (clang -fsanitize=fuzzer) where clang has it, skipped
with the reason otherwise (CI's clean machine has no clang).

The long runs: ``python -m bench.fuzz.cfuzz --seconds 240`` (libFuzzer when available,
else the gcc driver); this is the CI smoke (~20 s with gcc only, ~40 s with libFuzzer too).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "bench" / "fuzz" / "c"
TARGETS = {"cascade": 300, "ldpc": 600, "sift": 5000, "slot": 3000}   # random runs per target

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC", "gcc")) is None, reason="gcc not installed")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz_c")
    res = subprocess.run(["sh", str(FUZZ / "build.sh"), str(out)], capture_output=True, text=True,
                         timeout=300)
    if res.returncode != 0 and "sanitize" in res.stderr and "not supported" in res.stderr:
        pytest.skip("compiler lacks ASan/UBSan")
    assert res.returncode == 0, res.stderr[-3000:]
    return out


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_replay_and_short_run_clean(built, target, tmp_path):
    exe = built / f"fuzz_{target}"
    paths = [str(p) for p in (FUZZ / "corpus" / target, FUZZ / "regressions" / target) if p.is_dir()]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=1",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    res = subprocess.run([str(exe), *paths, f"-runs={TARGETS[target]}", "-seed=1",
                          f"-artifact_prefix={tmp_path}/"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "0 crashes" in res.stderr and not list(tmp_path.glob("crash-*"))
    replayed = int(res.stderr.split("replayed ")[1].split()[0])
    assert replayed == len([p for d in paths for p in Path(d).rglob("*") if p.is_file()]) > 0


def test_driver_catches_a_planted_bug(tmp_path):
    # positive control: a harness with an out-of-bounds read must be stopped by ASan
    # and its input saved, so a clean run above means something.
    src = tmp_path / "fuzz_bad.c"
    src.write_text("#include <stdint.h>\n#include <stddef.h>\n#include <stdlib.h>\n"
                   "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {\n"
                   "  if (n >= 2 && d[0] == 'B' && d[1] == 'U') return d[n + 8];\n  return 0; }\n")
    exe = tmp_path / "bad"
    san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    subprocess.run([os.environ.get("CC", "gcc"), "-O1", "-g", *san, str(src), str(FUZZ / "driver.c"),
                    "-o", str(exe)], check=True, capture_output=True, timeout=120)
    seed = tmp_path / "seed"
    seed.write_bytes(b"BU")
    res = subprocess.run([str(exe), str(seed), f"-artifact_prefix={tmp_path}/"], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
    assert res.returncode != 0 and "AddressSanitizer" in res.stderr
    crashes = list(tmp_path.glob("crash-*.bin"))
    assert len(crashes) == 1 and crashes[0].read_bytes() == b"BU"


# -- the same harnesses under real libFuzzer (clang -fsanitize=fuzzer), when this machine has it ------
def _libfuzzer_missing() -> str | None:
    from bench.fuzz.cfuzz import libfuzzer_available

    return libfuzzer_available()


@pytest.fixture(scope="module")
def built_libfuzzer(tmp_path_factory):
    why = _libfuzzer_missing()
    if why is not None:
        pytest.skip(f"libFuzzer not available: {why}")
    from bench.fuzz.cfuzz import build

    # the repo's harnesses and build script (CI installs the package without bench's C sources)
    return build("libfuzzer", tmp_path_factory.mktemp("fuzz_lf"), scripts=FUZZ)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_libfuzzer_replays_corpus_and_regressions_clean(built_libfuzzer, target, tmp_path):
    from bench.fuzz.cfuzz import run_target

    n_inputs = len([p for d in ("corpus", "regressions") for p in (FUZZ / d / target).rglob("*")
                    if p.is_file()])
    r = run_target(built_libfuzzer[target], target, "libfuzzer", runs=n_inputs + TARGETS[target], seed=1,
                   artifacts=tmp_path / "art", scratch=tmp_path, inputs=FUZZ)
    assert r["returncode"] == 0 and r["crashes"] == [], r["log_tail"]
    assert r["execs"] >= n_inputs and r["coverage"] > 0, r["log_tail"]


def test_libfuzzer_catches_a_planted_bug(tmp_path):
    # positive control under libFuzzer: it must find the out-of-bounds read from an empty corpus
    why = _libfuzzer_missing()
    if why is not None:
        pytest.skip(f"libFuzzer not available: {why}")
    from bench.fuzz.cfuzz import clang

    src = tmp_path / "fuzz_bad.c"
    src.write_text("#include <stdint.h>\n#include <stddef.h>\n"
                   "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {\n"
                   "  if (n >= 2 && d[0] == 'B' && d[1] == 'U') return d[n + 8];\n  return 0; }\n")
    exe = tmp_path / "bad"
    subprocess.run([clang(), "-g", "-fsanitize=fuzzer,address,undefined", str(src), "-o", str(exe)],
                   check=True, capture_output=True, timeout=120)
    res = subprocess.run([str(exe), "-runs=2000000", "-seed=1", f"-artifact_prefix={tmp_path}/"],
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
    assert res.returncode != 0 and "AddressSanitizer" in res.stderr, res.stderr[-2000:]
    crashes = list(tmp_path.glob("crash-*"))
    assert len(crashes) == 1 and crashes[0].read_bytes()[:2] == b"BU"

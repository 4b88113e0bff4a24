"""Run the C fuzz harnesses (bench/fuzz/c) for a bounded time: libFuzzer when clang has it, else gcc.

    python -m bench.fuzz.cfuzz --seconds 240              # every target, libFuzzer if available
    python -m bench.fuzz.cfuzz --seconds 60 -t sift --engine gcc

Engines: ``libfuzzer`` builds each harness with ``clang -fsanitize=fuzzer,address,
undefined`` (``c/build_libfuzzer.sh``: real libFuzzer, with its comparison tracing,
value profile and entropic schedule); ``gcc`` builds them with gcc, ASan/UBSan and
the small trace-pc driver (``c/build.sh``, ``c/driver.c``), which CI machines without
clang can run; ``afl`` builds them with AFL++'s ``afl-clang-fast -fsanitize=fuzzer``
(its libFuzzer-compatible driver) under ASan/UBSan (``c/build_afl.sh``) and runs
``afl-fuzz -V seconds``. ``auto`` (default) takes libFuzzer when a probe program links with
``-fsanitize=fuzzer``. Both take the same flags (``-max_total_time``, ``-seed``,
``-artifact_prefix``) and directories to replay first: the corpus
(``c/corpus/<target>``, copied to a scratch directory, since libFuzzer adds the
inputs it keeps to its first directory) and the kept regressions
(``c/regressions/<target>``). A crashing input is written to ``--artifacts``
(default ``bench/fuzz/findings``) as ``<target>-crash-...``: copy it to
``c/regressions/<target>/`` once the C code is fixed; ``tests/test_fuzz_c.py``
replays that directory under both engines.

What it must not do: run without a time or run limit, or leave a build behind in
the source tree (builds go to a temporary directory unless ``--build`` is given).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent / "c"
TARGETS = ("cascade", "ldpc", "sift", "slot")
SAN_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}


def clang() -> str | None:
    return os.environ.get("CLANG") or shutil.which("clang-14") or shutil.which("clang")


def libfuzzer_available() -> str | None:
    """Why libFuzzer cannot be used here, or None when a probe links and runs with it."""
    cc = clang()
    if cc is None:
        return "no clang on PATH (apt-get install clang-14 libclang-rt-14-dev)"
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "probe.c"
        src.write_text("#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput("
                       "const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n")
        r = subprocess.run([cc, "-fsanitize=fuzzer,address,undefined", str(src), "-o",
                            str(Path(d) / "probe")], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            return f"{cc} cannot link -fsanitize=fuzzer (libFuzzer runtime missing?): {r.stderr[-300:]}"
        r = subprocess.run([str(Path(d) / "probe"), "-runs=10"], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            return f"the libFuzzer probe does not run: {r.stderr[-300:]}"
    return None


def afl_available() -> str | None:
    for tool in ("afl-fuzz", "afl-clang-fast"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH (apt-get install afl++)"
    return None


def pick_engine(engine: str) -> str:
    if engine == "auto":
        return "libfuzzer" if libfuzzer_available() is None else "gcc"
    if engine == "libfuzzer" and (why := libfuzzer_available()) is not None:
        raise RuntimeError(why)
    if engine == "afl" and (why := afl_available()) is not None:
        raise RuntimeError(why)
    return engine


def build(engine: str, out: Path, *, scripts: Path = HERE) -> dict[str, Path]:
    """Build the harnesses for ``engine`` into ``out`` with the build script in ``scripts``
    (bench/fuzz/c of a source checkout: an installed package does not carry the C sources)."""
    script = scripts / {"libfuzzer": "build_libfuzzer.sh", "afl": "build_afl.sh"}.get(engine, "build.sh")
    if not script.is_file():
        raise RuntimeError(f"{script} not found: the C fuzz harnesses build from a source checkout")
    r = subprocess.run(["sh", str(script), str(out)], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"{script.name} failed: {r.stderr[-3000:]}")
    return {t: out / f"fuzz_{t}" for t in TARGETS}


def rss_limit_mb(budget_mb: int = 2048) -> int:
    """libFuzzer's RSS limit: ``budget_mb`` above what this process has used at its peak.

    libFuzzer reads its peak RSS with getrusage(RUSAGE_SELF), and on Linux a child started by
    fork/vfork + exec reports the parent's resident pages as its own peak (exec records the
    old address space's high-water mark). Started from a large process (pytest running the
    link in-process) a harness was "out of memory" before its first input; the budget is
    therefore counted from the parent's peak."""
    import resource

    return budget_mb + resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def run_target(exe: Path, target: str, engine: str, *, seconds: float | None = None, runs: int | None = None,
               seed: int = 1, artifacts: Path, scratch: Path, inputs: Path = HERE) -> dict:
    """Fuzz one target from the corpus and regressions under ``inputs`` (bench/fuzz/c of a source
    checkout); returns execs, coverage, crash files and the log tail."""
    artifacts.mkdir(parents=True, exist_ok=True)
    if engine == "afl":
        return _run_afl(exe, target, seconds=seconds or 60.0, seed=seed, artifacts=artifacts, scratch=scratch)
    work = scratch / f"corpus-{target}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(inputs / "corpus" / target, work)
    dirs = [str(work)] + [str(p) for p in (inputs / "regressions" / target,) if p.is_dir()]
    args = [str(exe), f"-seed={seed}", f"-artifact_prefix={artifacts}/{target}-"]
    if runs is not None:
        args.append(f"-runs={runs}")
    elif seconds is not None:
        args.append(f"-max_total_time={max(1, round(seconds))}")
    else:
        raise ValueError("seconds or runs: one is needed (no unbounded runs)")
    if engine == "libfuzzer":
        args += ["-timeout=10", f"-rss_limit_mb={rss_limit_mb()}", "-print_final_stats=1"]
    before = set(artifacts.glob(f"{target}-*"))
    t0 = time.monotonic()
    r = subprocess.run(args + dirs, capture_output=True, text=True, env={**os.environ, **SAN_ENV},
                       timeout=(seconds or 0) + 600)
    wall = time.monotonic() - t0
    log = r.stdout + r.stderr
    if engine == "libfuzzer":
        m = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
        cov = re.findall(r"cov: (\d+)", log)
        execs, coverage = (int(m.group(1)) if m else 0), (int(cov[-1]) if cov else 0)
    else:
        m = re.search(r"runs=(\d+) seconds=[\d.]+ edges=(\d+)", log)
        execs, coverage = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    return {"target": target, "engine": engine, "returncode": r.returncode, "execs": execs,
            "coverage": coverage, "wall_s": wall, "crashes": sorted(str(p) for p in
                                                               set(artifacts.glob(f"{target}-*")) - before),
            "log_tail": log[-3000:]}


def _run_afl(exe: Path, target: str, *, seconds: float, seed: int, artifacts: Path, scratch: Path) -> dict:
    """``afl-fuzz -V seconds`` on the corpus plus the kept regressions; crashes copied to artifacts."""
    inp, out = scratch / f"afl-in-{target}", scratch / f"afl-out-{target}"
    shutil.rmtree(inp, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(HERE / "corpus" / target, inp)
    reg = HERE / "regressions" / target
    if reg.is_dir():
        for p in reg.iterdir():
            shutil.copy(p, inp / f"regression-{p.name}")
    env = {**os.environ, "AFL_SKIP_CPUFREQ": "1", "AFL_NO_AFFINITY": "1", "AFL_NO_UI": "1",
           "AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES": "1",
           "ASAN_OPTIONS": "abort_on_error=1:symbolize=0:detect_leaks=0"}
    t0 = time.monotonic()
    r = subprocess.run(["afl-fuzz", "-i", str(inp), "-o", str(out), "-s", str(seed), "-V",
                        str(max(1, round(seconds))), "--", str(exe)],
                       capture_output=True, text=True, env=env, timeout=seconds + 600)
    wall = time.monotonic() - t0
    stats = {}
    sf = out / "default" / "fuzzer_stats"
    if sf.exists():
        for line in sf.read_text().splitlines():
            k, _, v = line.partition(":")
            stats[k.strip()] = v.strip()
    crashes = []
    for c in sorted((out / "default" / "crashes").glob("id:*")):
        dst = artifacts / f"{target}-crash-afl-{len(crashes):03d}"
        shutil.copy(c, dst)
        crashes.append(str(dst))
    return {"target": target, "engine": "afl", "returncode": r.returncode,
            "execs": int(stats.get("execs_done", 0)), "coverage": stats.get("bitmap_cvg", "0%"),
            "wall_s": wall, "crashes": crashes, "hangs": int(stats.get("saved_hangs", 0)),
            "log_tail": (r.stdout + r.stderr)[-3000:]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fuzz.cfuzz", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="fuzzing time per target")
    ap.add_argument("-t", "--target", action="append", choices=TARGETS, help="repeatable; default all")
    ap.add_argument("--engine", choices=("auto", "libfuzzer", "gcc", "afl"), default="auto")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--artifacts", type=Path, default=HERE.parent / "findings")
    ap.add_argument("--build", type=Path, help="build directory to keep (default: a temporary one)")
    a = ap.parse_args(argv)
    engine = pick_engine(a.engine)
    if a.engine == "auto" and engine == "gcc":
        print(f"libFuzzer not available ({libfuzzer_available()}): using the gcc driver", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="qkd-cfuzz-") as tmp:
        out = a.build or Path(tmp) / "build"
        exes = build(engine, out)
        print(f"{'target':<8} {'engine':<10} {'status':<8} {'execs':>10} {'exec/s':>8} {'cov':>6} "
              f"{'wall s':>7}")
        bad = 0
        for t in a.target or TARGETS:
            r = run_target(exes[t], t, engine, seconds=a.seconds, seed=a.seed,
                           artifacts=a.artifacts.resolve(), scratch=Path(tmp))
            ok = r["returncode"] == 0 and not r["crashes"]
            bad += not ok
            print(f"{t:<8} {engine:<10} {'ok' if ok else 'CRASH':<8} {r['execs']:>10} "
                  f"{r['execs'] / max(r['wall_s'], 1e-9):>8.0f} {r['coverage']!s:>6} {r['wall_s']:>7.1f}  "
                  f"{' '.join(r['crashes'])}")
            if not ok:
                print(r["log_tail"], file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Run every fuzz target for a bounded time: ``python -m bench.fuzz --seconds 60 [-t payload ...]``.

Each target runs in its own subprocess (``--worker NAME``): libFuzzer ends the process when its time
is up or on a finding.  ``--jobs N`` (default: one per core) fuzzes N targets at once.  A finding's
input is written to ``--artifacts`` (default ``bench/fuzz/findings/``) as
``<target>-crash-<sha1>``; copy it to ``bench/fuzz/regressions/<target>/`` once the parser is fixed.
Exit status 1 if any target found something.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# the modules each target exercises: atheris instruments exactly these (coverage + comparisons)
MODULES = {
    "payload": ["link.payload"],
    "ptu": ["drivers.errors", "drivers.picoquant"],
    "id900": ["drivers.errors", "drivers.idq_id900"],
    "cascade": ["postproc_c._binding", "postproc_c.cascade", "postproc_c.reconcile"],
    "ldpc": ["postproc_c._binding", "postproc_c.ldpc", "postproc_c.reconcile"],
    "lab": ["drivers.config"],
    "scenario": ["hil.scenario"],
    "kme": ["link.kme"],
    "wire": ["link.messages"],
    "node_config": ["link.config"],
    "replies": ["drivers.errors", "drivers.transport", "drivers.base", "drivers.keysight_awg",
                "drivers.single_quantum", "drivers.idq_id120", "drivers.oz_epc400", "drivers.thorlabs_mpc320",
                "drivers.picoquant"],
}


def worker(name: str, seconds: float, artifacts: Path, corpus: Path) -> None:
    import importlib

    import atheris

    with atheris.instrument_imports(include=sorted({m.split(".")[0] for m in MODULES[name]})):
        for m in MODULES[name]:
            importlib.import_module(m)
    from bench.fuzz.targets import SEEDS, TARGETS

    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(SEEDS[name]()):
        (corpus / f"seed-{i}").write_bytes(seed)
    artifacts.mkdir(parents=True, exist_ok=True)
    args = [sys.argv[0], f"-max_total_time={max(1, round(seconds))}", "-timeout=10",
            "-rss_limit_mb=2048", "-max_len=8192", "-print_final_stats=1",
            f"-artifact_prefix={artifacts}/{name}-", str(corpus)]
    atheris.Setup(args, TARGETS[name])
    atheris.Fuzz()


def _one(name: str, seconds: float, artifacts: Path, tmp: str) -> dict:
    # a target's findings are told apart by their file name prefix, so targets running side by
    # side each see only their own
    before = set(artifacts.glob(f"{name}-*")) if artifacts.exists() else set()
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "bench.fuzz", "--worker", name, "--seconds",
                        str(seconds), "--artifacts", str(artifacts), "--corpus",
                        str(Path(tmp) / name)],
                       cwd=ROOT, capture_output=True, text=True, timeout=seconds + 300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.monotonic() - t0
    log = p.stdout + p.stderr
    execs = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    cov = re.findall(r"cov: (\d+)", log)
    new = sorted(set(artifacts.glob(f"{name}-*")) - before) if artifacts.exists() else []
    return {"target": name, "returncode": p.returncode, "wall_s": wall,
            "execs": int(execs.group(1)) if execs else 0,
            "coverage": int(cov[-1]) if cov else 0,
            "findings": [str(f) for f in new],
            "log_tail": log[-3000:]}


def run(names: list[str], seconds: float, artifacts: Path, jobs: int = 1) -> list[dict]:
    """Fuzz each target for ``seconds``, ``jobs`` targets at a time (each is one single-threaded
    process, so up to one per core); results in the order of ``names``."""
    with tempfile.TemporaryDirectory(prefix="qkd-fuzz-") as tmp, \
            ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(lambda n: _one(n, seconds, artifacts, tmp), names))


def main(argv: list[str] | None = None) -> int:
    from bench.fuzz.targets import TARGETS

    ap = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="fuzzing time per target")
    ap.add_argument("-t", "--target", action="append", choices=sorted(TARGETS),
                    help="run only this target (repeatable); default all")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1,
                    help="targets fuzzed at once (default: one per core)")
    ap.add_argument("--artifacts", type=Path, default=HERE / "findings")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(a.worker, a.seconds, a.artifacts.resolve(), a.corpus)
        return 0
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed (pip install atheris)", file=sys.stderr)
        return 2
    if a.jobs < 1:
        ap.error(f"--jobs: {a.jobs} is not a positive number of targets")
    results = run(a.target or list(TARGETS), a.seconds, a.artifacts.resolve(), a.jobs)
    bad = 0
    print(f"{'target':<12} {'status':<8} {'execs':>9} {'exec/s':>8} {'cov':>6} {'wall s':>7}  findings")
    for r in results:
        ok = r["returncode"] == 0 and not r["findings"]
        bad += not ok
        rate = r["execs"] / max(a.seconds, 1e-9)
        print(f"{r['target']:<12} {'ok' if ok else 'FINDING':<8} {r['execs']:>9} {rate:>8.0f} "
              f"{r['coverage']:>6} {r['wall_s']:>7.1f}  {' '.join(r['findings'])}")
        if not ok:
            print(r["log_tail"], file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

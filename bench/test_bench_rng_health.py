"""SP 800-90B health tests (drivers.rng_health) over 16 MiB: the tests alone, the OS source with them,
and the OS source without them (baseline), so the ratio is the cost of testing every byte."""

from __future__ import annotations

import numpy as np

from bench.common import record
from drivers.qrng import OsEntropySource
from drivers.rng_health import STARTUP_SAMPLES, HealthTests

N = 16 << 20
ROUNDS = 5
GROUP = "rng-health-16MiB"


def test_health_tests_alone(benchmark):
    data = OsEntropySource(health_tests=False).random_bytes(N)
    t = HealthTests(8.0, alpha_log2=40.0)
    t.startup(data[:STARTUP_SAMPLES])
    benchmark.group = GROUP
    benchmark.pedantic(t.check, args=(data,), rounds=ROUNDS, iterations=1)
    assert t.failed is None
    record(benchmark, units=8 * N, unit="bit", note="RCT + APT (W=512) on bytes, numpy")


def test_os_source_with_health_tests(benchmark):
    src = OsEntropySource()
    benchmark.group = GROUP
    out = benchmark.pedantic(src.random_bytes, args=(N,), rounds=ROUNDS, iterations=1)
    assert out.size == N and src.health.failed is None
    record(benchmark, units=8 * N, unit="bit", note="/dev/urandom + health tests")


def test_os_source_raw_baseline(benchmark):
    src = OsEntropySource(health_tests=False)
    benchmark.group = GROUP
    out = benchmark.pedantic(src.random_bytes, args=(N,), rounds=ROUNDS, iterations=1)
    assert out.size == N and isinstance(out, np.ndarray)
    record(benchmark, units=8 * N, unit="bit", baseline=True, note="/dev/urandom, no health tests")

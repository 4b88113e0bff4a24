"""Benchmarks of the HIL link model: detection events generated per second at a 1 GHz clock.

Groups ``hil-metro-25km`` and ``hil-back-to-back`` each time the model's
``run_frame`` with the C kernel (``method="kernel"``, the default), the numpy
skip-sampling path it replaced (``"skip"``) and, as the baseline in the same
run, the straightforward per-slot simulation of the same scenario (every pulse
sampled: Poisson photon numbers at each detector, ``"per-slot"``), all followed
by the same dead time, timestamps and tags. Units are the detection events
(clicks after dead time) each call produced; every round starts a fresh model
on the same frames, so the count is the same each round. Alice's patterns are
generated in setup (the engine supplies them); their cost is measured
separately in ``hil-pattern``. Target: 20 M events/s per core. The table gives
wall-clock rates; the process CPU rate (what one core does, apart from time
the scheduler gave to other processes) is kept in ``extra_info["cpu_rate"]``
with the load average in ``extra_info["load"]``.
"""

from __future__ import annotations

import os
import time

import pytest

from bench.common import record
from hil.model import LinkModel

FRAMES = (1, 2, 3)          # three frames of 2^20 slots (~1 ms of emulated link each)
TARGET = 20e6


def _setup(name: str, method: str):
    model = LinkModel(name, seed=1)
    pats = {f: model.alice_pattern(f) for f in FRAMES}
    probe = LinkModel(name, seed=1)
    events = sum(probe.run_frame(f, pats[f], method=method).n_events for f in FRAMES)
    return model, pats, events


def _run(model, pats, method, cpu):
    model._reset_carry()
    t = time.process_time()
    n = sum(model.run_frame(f, pats[f], method=method).n_events for f in FRAMES)
    cpu.append(time.process_time() - t)
    return n


@pytest.mark.parametrize("name", ["metro-25km", "back-to-back"])
@pytest.mark.parametrize("method", ["kernel", "skip", "per-slot"])
def test_hil_events(benchmark, name, method):
    benchmark.group = f"hil-{name}"
    model, pats, events = _setup(name, method)
    record(benchmark, units=events, unit="event", baseline=(method == "per-slot"),
           target=None if method == "per-slot" else TARGET,
           note=f"{events / len(FRAMES):.0f} events/frame, {model.frame_slots} slots/frame at "
                f"{model.clock_hz / 1e9:g} GHz")
    rounds = {"per-slot": 2, "skip": 5, "kernel": 10}[method]
    cpu: list[float] = []
    got = benchmark.pedantic(_run, args=(model, pats, method, cpu), rounds=rounds, iterations=1,
                             warmup_rounds=1)
    assert got == events
    cpu = cpu[1:]                                   # without the warm-up round
    benchmark.extra_info.update(cpu_rate=events * len(cpu) / sum(cpu), load=os.getloadavg()[0])


def test_hil_pattern(benchmark):
    benchmark.group = "hil-pattern"
    model = LinkModel("metro-25km", seed=1)
    record(benchmark, units=model.frame_slots, unit="slot", baseline=True,
           note="Alice's QRNG pattern (basis, bit, intensity) per frame")
    benchmark.pedantic(model.alice_pattern, args=(5,), rounds=5, iterations=1)

"""Benchmark of the link engine: secret bits per wall-clock second, both nodes on this machine.

Group ``engine-25km``: the engine over frames replayed from memory (``link.pipeline.ReplayLink``:
the metro-25km model is run once in setup, its patterns and detections replayed), so only
the engine's own work is timed: sifting, parameter estimation, Cascade, verification,
finite-key length, Toeplitz hashing, the authenticated ZeroMQ channel and the SQLite
commit. Units are the secret bits committed in both stores (checked identical). The
baseline in the same run is the full HIL run (``run_local``: the physical model emulated
in the loop), which is what ``qkd run`` reports. Target (issue 6): 13.7 Mb/s, the
real-time rate of Yuan et al. 2018.
"""

from __future__ import annotations

import tempfile

from bench.common import record
from hil.model import LinkModel
from link.pipeline import ReplayLink, config_for_scenario, run_local, run_replay

BLOCKS = 4
TARGET = 13.7e6


def test_engine_replayed_from_memory(benchmark):
    model = LinkModel("metro-25km", seed=2)
    cfg = config_for_scenario(model.scenario)
    replay = ReplayLink.record(model, 64, cfg)
    out = {}

    def run():
        with tempfile.TemporaryDirectory() as d:
            out.update(run_replay(replay, cfg, blocks=BLOCKS, workdir=d))
        return out["secret_bits"]

    benchmark.group = "engine-25km"
    benchmark.pedantic(run, rounds=1, iterations=1)
    assert out["keys_identical"] and out["blocks_aborted"] == 0
    record(benchmark, units=out["secret_bits"], unit="bit", target=TARGET,
           note=f"{out['sifted_z_bits']} sifted Z bits, {BLOCKS} blocks of 2^20, frames from memory")


def test_engine_full_hil_baseline(benchmark):
    out = {}

    def run():
        out.update(run_local("metro-25km", blocks=BLOCKS, duration_s=120))
        return out["secret_bits"]

    benchmark.group = "engine-25km"
    benchmark.pedantic(run, rounds=1, iterations=1)
    assert out["keys_identical"]
    record(benchmark, units=out["secret_bits"], unit="bit", baseline=True,
           note="full HIL run, physical model in the loop (qkd run)")

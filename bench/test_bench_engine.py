"""Benchmark of the link engine: secret bits per wall-clock second, both nodes on this machine.

Group ``engine-25km``: the engine over frames replayed from memory (``link.pipeline.ReplayLink``:
the metro-25km model is run once in setup, Alice's patterns kept packed with their class
counts, Bob's detections as recorded), so only the engine's own work is timed: sifting,
parameter estimation, Cascade (all blocks in flight coalesced, ``link.recon_mux``),
verification, finite-key length, Toeplitz hashing, the authenticated ZeroMQ channel and the
SQLite commit. Units are the secret bits committed in both stores (checked identical). The
baseline in the same run is the full HIL run (``run_local``: the physical model emulated in
the loop, what ``qkd run`` does) with the same protocol settings. The replayed run puts each
node in its own process (``run_replay_processes``), as ``qkd alice``/``qkd bob`` deploy them:
one interpreter for both would share one GIL. Target (issue 6): 13.7
Mb/s, the real-time rate of Yuan et al. 2018.

Protocol settings (both runs): blocks of 2^22 Z bits, p_z = 0.85, intensity probabilities
(0.6, 0.25, 0.15): at 25 km the finite-key length is 0.50 of the Z bits and 0.35 secret bits
per detection, against 0.22 per detection for ``qkd run``'s short-run default (2^20, p_z =
0.5), so fewer events are sifted per secret bit. Each entry also records the messages per
block, the latency from a block's last detection to its keys in Bob's store, and the load.
"""

from __future__ import annotations

import os
import tempfile

from bench.common import record
from hil.model import LinkModel
from link.pipeline import ReplayLink, config_for_scenario, run_local, run_replay_processes

BLOCKS = 6            # full HIL run (the emulation makes it slow)
REPLAY_BLOCKS = 12    # replayed: enough blocks that filling and draining the pipeline matter little
TARGET = 13.7e6
SETTINGS = {"p_z": 0.85, "intensity_probs": (0.6, 0.25, 0.15), "block_bits": 1 << 22}


def _cfg(model):
    return config_for_scenario(model.scenario, **SETTINGS)


def test_engine_replayed_from_memory(benchmark):
    model = LinkModel("metro-25km", seed=2)
    cfg = _cfg(model)
    replay = ReplayLink.record(model, 160, cfg)
    out = {}

    def run():
        with tempfile.TemporaryDirectory() as d:
            out.update(run_replay_processes(replay, cfg, blocks=REPLAY_BLOCKS, workdir=d))
        return out["secret_bits"]

    benchmark.group = "engine-25km"
    benchmark.pedantic(run, rounds=1, iterations=1)
    assert out["keys_identical"] and out["blocks_aborted"] == 0
    lat = out["key_latency_s"]
    record(benchmark, units=out["secret_bits"], unit="bit", target=TARGET,
           note=f"{out['sifted_z_bits']} sifted Z bits, {REPLAY_BLOCKS} blocks of 2^22, frames from memory, "
                f"one process per node (CPU s {out['cpu_s']['alice']:.1f} + {out['cpu_s']['bob']:.1f}, "
                f"of which system {out['sys_s']['alice']:.2f} + {out['sys_s']['bob']:.2f}); "
                f"{out['secret_rate_wall_bps'] / 1e6:.2f} Mb/s from the nodes' start to the last block "
                f"final (the mean time above also counts forking the nodes and comparing the stores); "
                f"{out['messages_per_block']:.0f} messages/block; key latency "
                f"{min(lat):.2f}-{max(lat):.2f} s; load {os.getloadavg()[0]:.1f}",
           messages_per_block=out["messages_per_block"], key_latency_s=lat, load=os.getloadavg()[0],
           cpu_s=out["cpu_s"], sys_s=out["sys_s"], page_faults=out["minflt"],
           engine_rate_bps=out["secret_rate_wall_bps"])


def test_engine_full_hil_baseline(benchmark):
    out = {}

    def run():
        cfg = _cfg(LinkModel("metro-25km", seed=1))
        out.update(run_local("metro-25km", blocks=BLOCKS, duration_s=600, config=cfg))
        return out["secret_bits"]

    benchmark.group = "engine-25km"
    benchmark.pedantic(run, rounds=1, iterations=1)
    assert out["keys_identical"]
    record(benchmark, units=out["secret_bits"], unit="bit", baseline=True,
           note=f"full HIL run, physical model in the loop (qkd run), same settings; "
                f"{out['messages_per_block']:.0f} messages/block; key latency {out['key_latency_s']:.2f} s; "
                f"load {os.getloadavg()[0]:.1f}",
           messages_per_block=out["messages_per_block"], key_latency_s=out["key_latency_s"],
           load=os.getloadavg()[0])

"""One block of the link on the model, both nodes in this process (``link.pipeline.run_local``),
for tests that look inside the nodes afterwards (their results, alarms, channels). Not a
fixture: the tests patch the nodes differently before the run."""

from __future__ import annotations

from pathlib import Path


def run_one_block(workdir: Path, block_bits: int = 1 << 19):
    """Run one block on the default scenario's model; returns (summary, {"alice": Node, "bob":
    Node}, the engine configuration). 2^19 bits: the smallest block that yields key at 25 km."""
    from hil.model import LinkModel
    from link.pipeline import config_for_scenario, run_local

    nodes: dict = {}

    def attach(held):
        nodes.update(held)
        return lambda: None

    cfg = config_for_scenario(LinkModel(None).scenario, block_bits=block_bits)
    s = run_local(None, config=cfg, blocks=1, duration_s=60, workdir=workdir, attach=attach)
    return s, nodes, cfg

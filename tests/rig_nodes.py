"""Node files for tests that run ``qkd alice`` and ``qkd bob`` as two processes on the HIL rig.

The rig's emulated instruments stand in for a lab; each test writes the lab file
the rig describes and one node file per role (``[node]``, ``[channel]``,
``[protocol]`` from the engine configuration for the rig's scenario, ``[frontend]``
from the rig's timing), plus whatever tables it exercises (``[kme]``, ``[watch]``,
``[calibration]``) passed as extra text per role. Not a fixture: the tests
differ in what they start and wait for.
"""

from __future__ import annotations

import socket
import sqlite3
from contextlib import closing
from pathlib import Path

INSTRUMENT = {"alice": "pattern_generator", "bob": "time_tagger"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_node_files(tmp_path: Path, rig, cfg, extra: dict[str, str] | None = None) -> dict[str, int]:
    """``lab.toml`` (one sample per slot) and ``alice.toml``/``bob.toml`` in ``tmp_path`` for ``rig`` and
    the engine configuration ``cfg``; ``extra[role]`` is appended to that role's file. Returns the ports."""
    from link.frontend import Timing

    (tmp_path / "lab.toml").write_text(rig.lab_toml())     # with the AWG's one sample a slot
    tm = Timing.for_model(rig.model)
    ports = {"proto": free_port(), "ctrl": free_port()}
    from link.config import RIG_PROTOCOL_KEYS, render_node_file

    for role in ("alice", "bob"):
        text = render_node_file({
            "node": {"role": role, "link_id": "lab-link", "psk": f"{role}.psk", "store": f"{role}.db"},
            "channel": {k: f"tcp://127.0.0.1:{v}" for k, v in ports.items()},
            "protocol": {k: getattr(cfg, k) for k in RIG_PROTOCOL_KEYS},
            "frontend": {"lab": "lab.toml", "instrument": INSTRUMENT[role], "frame_slots": rig.frame_slots,
                         "clock_hz": rig.model.clock_hz, "offsets_ps": list(tm.offsets_ps),
                         "window_ps": tm.window_ps, "dead_time_ns": tm.dead_time_ps / 1e3}})
        (tmp_path / f"{role}.toml").write_text(text + (extra or {}).get(role, ""))
    return ports


def store_key_ids(db: Path) -> set[str]:
    """The key IDs in a node's store file as it is on disk (empty if it cannot be read yet)."""
    from link.keystore import KeyStoreError, key_rows

    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as con:
            return {kid for kid, *_ in key_rows(con)}
    except (sqlite3.Error, KeyStoreError):      # not created or not initialised yet
        return set()


def store_key_count(db: Path) -> int:
    from link.keystore import key_count

    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as con:
            return key_count(con)
    except sqlite3.Error:
        return 0

"""``qkd report`` reads the stores of a run folder and leaves the folder as it was.

The stores are SQLite files in WAL mode; opening one with ``mode=ro`` made
SQLite create ``-wal``/``-shm`` files beside it that the read-only connection
could not remove (found last session). A node still running on a store must
still be read through its WAL, so its latest commits are counted.
"""

from __future__ import annotations

import json
import os

from link.keystore import KeyStore
from link.kme import ReservationStore
from link.report import load_run


def _listing(folder):
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def _store(path, blocks):
    s = KeyStore(path, "L1")
    for b in blocks:
        s.prepare(b, bytearray(os.urandom(32 * 5)), 256 * 5)
        s.commit(b)
    return s


def test_report_leaves_no_files_beside_closed_stores(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"keys_identical": True}))
    for role in ("alice", "bob"):
        _store(tmp_path / f"{role}.db", (1, 2)).close()
    r = ReservationStore(tmp_path / "alice-kme.db")
    r.reserve("k1", "SAE_A", "SAE_B", 256, ["u1"], {"u1": bytearray(32)})
    r.close()
    before = _listing(tmp_path)
    assert not [n for n in before if n.endswith(("-wal", "-shm"))]
    run = load_run(tmp_path)
    assert run.stores["alice"].keys == run.stores["bob"].keys == 10
    assert run.stores["alice"].key_ids == run.stores["bob"].key_ids
    assert run.stores["alice"].blocks == {"committed": 2}
    assert run.reservations == {"alice": 1}
    assert _listing(tmp_path) == before        # no -wal/-shm left, nothing touched


def test_report_reads_a_live_store_through_its_wal(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    live = _store(tmp_path / "alice.db", (1,))
    try:
        live.prepare(2, bytearray(os.urandom(32 * 3)), 256 * 3)
        live.commit(2)                       # in the WAL, not yet in the main file
        before = set(_listing(tmp_path))
        run = load_run(tmp_path)
        assert run.stores["alice"].keys == 8
        assert set(_listing(tmp_path)) == before
    finally:
        live.close()
    assert sorted(_listing(tmp_path)) == ["alice.db", "summary.json"]

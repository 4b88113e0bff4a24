"""Key-store faults: a full disk and a corrupt file (issue 9, "Faults").

A full disk is made two ways, neither needing root: SQLite's ``PRAGMA
max_page_count`` on the store's own connection (in process), and a real
``RLIMIT_FSIZE`` file-size limit in a subprocess (the kernel refuses the write
with EFBIG, as on a full file system). Each must give a KeyStoreError naming
the file, leave the block in its previous state (no partial keys), and let the
commit succeed once there is room. A corrupt file must be refused at open,
naming the file, by both the key store and the authentication pool. On a
running link, Bob's store filling up stops the link with a ``key_store`` alarm,
no key on either side, and the next run settles the half-done block.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from link.auth import AuthError, AuthPool, write_psk
from link.keystore import KeyStore, KeyStoreError, stores_identical

ROOT = Path(__file__).resolve().parent.parent


def _key(n_bytes: int, seed: int = 1) -> bytearray:
    import numpy as np

    return bytearray(np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes())


def test_full_disk_at_commit_rolls_back_names_file_then_commits(tmp_path):
    path = tmp_path / "alice.db"
    st = KeyStore(path, "full-link", key_size_bits=256)
    try:
        st.prepare(1, _key(64 << 10), 8 * (64 << 10))
        pages = st._db.execute("PRAGMA page_count").fetchone()[0]
        st._db.execute(f"PRAGMA max_page_count={pages}")  # the disk is full from here on
        with pytest.raises(KeyStoreError) as ei:
            st.commit(1)
        msg = str(ei.value)
        assert str(path) in msg and "full" in msg and "rolled back" in msg
        assert st.state(1) == "prepared" and st.count() == 0  # no partial keys
        with pytest.raises(KeyStoreError, match="alice.db"):
            st.prepare(2, _key(64 << 10, 2), 8 * (64 << 10))
        assert st.state(2) is None
        st._db.execute("PRAGMA max_page_count=1073741823")  # room again
        assert st.commit(1) == 2048 and st.state(1) == "committed"
    finally:
        st.close()
    # the same keys as a store that never saw the fault
    ref = KeyStore(tmp_path / "ref.db", "full-link", key_size_bits=256)
    again = KeyStore(path, "full-link", key_size_bits=256)
    try:
        ref.prepare(1, _key(64 << 10), 8 * (64 << 10))
        ref.commit(1)
        assert stores_identical(ref, again)
    finally:
        ref.close()
        again.close()


_FSIZE_CHILD = r"""
import json, os, resource, signal, sys
sys.path.insert(0, sys.argv[2])
from link.keystore import KeyStore, KeyStoreError
path = sys.argv[1]
st = KeyStore(path, "fsize-link", key_size_bits=256)
st.prepare(1, bytearray(os.urandom(1 << 20)), 8 << 20)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
biggest = max(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
resource.setrlimit(resource.RLIMIT_FSIZE, (biggest + (64 << 10), resource.RLIM_INFINITY))
out = {}
try:
    st.commit(1)
    out["error"] = None
except KeyStoreError as exc:
    out["error"] = str(exc)
out["state"] = st.state(1)
out["keys"] = st.count()
print(json.dumps(out))
"""


def test_full_disk_by_file_size_limit_in_subprocess(tmp_path):
    path = tmp_path / "bob.db"
    r = subprocess.run([sys.executable, "-c", _FSIZE_CHILD, str(path), str(ROOT)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["error"] is not None and str(path) in out["error"], out
    assert out["state"] == "prepared" and out["keys"] == 0, out
    st = KeyStore(path, "fsize-link", key_size_bits=256)  # no limit here: the commit goes through
    try:
        assert st.state(1) == "prepared" and st.count() == 0
        assert st.commit(1) == (8 << 20) // 256 and st.count() == (8 << 20) // 256
    finally:
        st.close()


def _store_with_keys(path: Path) -> None:
    st = KeyStore(path, "corrupt-link", key_size_bits=256)
    try:
        for b in (1, 2, 3):
            st.prepare(b, _key(32 << 10, b), 8 * (32 << 10))
            st.commit(b)
        st._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file
    finally:
        st.close()


@pytest.mark.parametrize("damage", ["garbage", "header", "page"])
def test_corrupt_store_file_is_refused_naming_it(tmp_path, damage):
    path = tmp_path / "alice.db"
    if damage == "garbage":
        path.write_bytes(b"this is not a key store\n" * 100)
    else:
        _store_with_keys(path)
        raw = bytearray(path.read_bytes())
        if damage == "header":
            raw[:16] = b"not sqlite head\0"
        else:  # scribble over the middle of a b-tree page, the header stays valid
            page = int.from_bytes(raw[16:18], "big")
            off = 3 * page + 8
            raw[off:off + 200] = bytes((i * 37 + 11) % 256 for i in range(200))
        path.write_bytes(bytes(raw))
    before = path.read_bytes()
    with pytest.raises(KeyStoreError) as ei:
        KeyStore(path, "corrupt-link", key_size_bits=256)
    assert str(path) in str(ei.value) and "corrupt" in str(ei.value)
    assert path.read_bytes() == before  # the damaged file is kept as it was, for inspection
    psk = tmp_path / "link.psk"
    write_psk(psk, "corrupt-link", 1 << 14)
    if damage != "page":  # the auth tables may sit on pages the scribble missed
        with pytest.raises(AuthError, match="alice.db"):
            AuthPool(psk, path, "alice")


def test_link_stops_on_full_store_and_next_run_settles_the_block(tmp_path, monkeypatch):
    """Bob's disk is full when the first block is prepared: ``key_store`` alarm naming bob.db,
    the link stops, no key on either side; the next run (disk has room) settles the block."""
    import link.pipeline as pipeline

    class _BobDiskFull(KeyStore):
        def __init__(self, path, *a, **kw):
            super().__init__(path, *a, **kw)
            if Path(path).name == "bob.db":
                pages = self._db.execute("PRAGMA page_count").fetchone()[0]
                self._db.execute(f"PRAGMA max_page_count={pages}")

    keep_psk = pipeline.write_psk

    def write_psk_once(path, *a, **kw):  # a restarted pair keeps its pre-shared secret
        if not Path(path).exists():
            keep_psk(path, *a, **kw)

    from hil.scenario import Scenario

    cfg = pipeline.config_for_scenario(Scenario.load(None), block_bits=1 << 19)  # short blocks: a fast test
    monkeypatch.setattr(pipeline, "write_psk", write_psk_once)
    monkeypatch.setattr(pipeline, "KeyStore", _BobDiskFull)
    s = pipeline.run_local(None, blocks=2, duration_s=60, workdir=tmp_path, config=cfg)
    assert "key_store" in s["alarms"], {k: s[k] for k in ("alarms", "blocks", "keys", "block_results")}
    assert s["keys"] == {"alice": 0, "bob": 0} and s["keys_identical"] is True
    con = sqlite3.connect(tmp_path / "alice.db")
    try:
        open_blocks = con.execute("SELECT block_id, state FROM block WHERE state != 'aborted'").fetchall()
    finally:
        con.close()
    assert all(state == "prepared" for _, state in open_blocks), open_blocks  # never committed

    monkeypatch.setattr(pipeline, "KeyStore", KeyStore)  # room on the disk again
    s2 = pipeline.run_local(None, blocks=1, duration_s=60, workdir=tmp_path, config=cfg)
    assert s2["keys_identical"] is True and s2["keys"]["alice"] == s2["keys"]["bob"] > 0, s2
    con = sqlite3.connect(tmp_path / "alice.db")
    try:
        states = dict(con.execute("SELECT block_id, state FROM block").fetchall())
    finally:
        con.close()
    for bid, _ in open_blocks:
        assert states[bid] == "aborted", states  # the half-done block was settled, not resurrected


_AUTH_FSIZE_CHILD = r"""
import json, os, resource, signal, sys
sys.path.insert(0, sys.argv[2])
from link.auth import AuthError, AuthPool
d = sys.argv[1]
pool = AuthPool(os.path.join(d, "link.psk"), os.path.join(d, "alice.db"), "alice")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
db = os.path.join(d, "alice.db")
biggest = max(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p))
resource.setrlimit(resource.RLIMIT_FSIZE, (biggest, resource.RLIM_INFINITY))  # not one byte more
out = {"error": None, "sent": 0}
try:
    for _ in range(100000):  # reservations are written in batches: keep going until one must grow the file
        pool.next_send_seq("alice.proto.data")
        out["sent"] += 1
except AuthError as exc:
    out["error"] = str(exc)
print(json.dumps(out))
"""


def test_auth_pool_state_on_a_full_disk_names_the_file(tmp_path):
    """The authentication pool's durable sequence-number reservations hit a full disk: AuthError naming
    the store file (never a sequence number handed out without its reservation on disk)."""
    write_psk(tmp_path / "link.psk", "full-link", 1 << 16)
    r = subprocess.run([sys.executable, "-c", _AUTH_FSIZE_CHILD, str(tmp_path), str(ROOT)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["error"] and str(tmp_path / "alice.db") in out["error"], out
    # what was handed out was reserved durably: a restarted pool continues above it
    pool = AuthPool(tmp_path / "link.psk", tmp_path / "alice.db", "alice")
    try:
        assert pool.next_send_seq("alice.proto.data") >= out["sent"]
    finally:
        pool.close()

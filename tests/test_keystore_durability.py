"""The key store as the KME uses it: erased bytes really gone, takes atomic across processes
and kills, and a store that cannot be written refused with a message saying why.

Real SQLite files and real processes (killed with SIGKILL); no mocks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from store_lock import write_lock_held

from link.keystore import KeyStore, KeyStoreIOError
from link.kme import ReservationStore

ROOT = Path(__file__).resolve().parent.parent
MARK = bytes(range(0xA0, 0xC0))          # 32 bytes that random key bytes will not reproduce


def _files(folder: Path, stem: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name.startswith(stem)}


def test_erased_key_bytes_leave_the_wal_while_the_store_is_open(tmp_path):
    # SQLite reuses its -wal file from the start after a checkpoint without truncating it, so
    # a consumed key's bytes (in the frames of the commit that wrote it) stayed in -wal for as
    # long as the node ran; the old test only passed because it truncated the WAL by hand.
    s = KeyStore(tmp_path / "a.db", "L1")
    s.prepare(1, bytearray(MARK + os.urandom(32 * 40)), 256 * 41)
    s.commit(1)
    assert any(MARK in b for b in _files(tmp_path, "a.db").values())     # it is there...
    (kid, *_) = s.key_ids()
    assert bytes(s.take([kid])[0]) == MARK
    files = _files(tmp_path, "a.db")                                     # ...and now nowhere,
    assert "a.db-wal" in files and not any(MARK in b for b in files.values())  # store still open
    assert s.count() == 40
    # a prepared key wiped by abort: gone from the WAL as well
    s.prepare(2, bytearray(MARK * 4), 1024)
    s.abort(2, "test")
    assert not any(MARK in b for b in _files(tmp_path, "a.db").values())
    s.close()
    # the KME's reservation store: a delivered key's bytes leave its WAL too
    r = ReservationStore(tmp_path / "r.db")
    r.reserve("k1", "SAE_A", "SAE_B", 256, ["u1"], {"u1": bytearray(MARK)})
    assert any(MARK in b for b in _files(tmp_path, "r.db").values())
    assert bytes(r.pop(["k1"], "SAE_A", "SAE_B")[0]) == MARK
    assert not any(MARK in b for b in _files(tmp_path, "r.db").values())
    r.close()




def test_a_store_locked_by_another_writer_is_named_as_such(tmp_path):
    path = tmp_path / "a.db"
    s = KeyStore(path, "L1", timeout_s=0.3)
    s.prepare(1, bytearray(os.urandom(64)), 512)
    s.commit(1)
    ids = s.key_ids()
    with write_lock_held(path):
        t0 = time.monotonic()
        with pytest.raises(KeyStoreIOError, match="locked by another process") as ei:
            s.take(ids[:1])          # was a bare sqlite3.OperationalError after 30 s
        assert str(path) in str(ei.value) and time.monotonic() - t0 < 5
        with pytest.raises(KeyStoreIOError, match="locked by another process"):
            KeyStore(path, "L1", timeout_s=0.3)
    assert s.key_ids() == ids    # nothing was taken
    assert len(s.take(ids)) == 2
    s.close()


def _make_read_only(path: Path) -> None:
    if os.geteuid() != 0:
        path.chmod(0o444)
        return
    # root ignores permission bits; the immutable attribute binds root too (ext4, xfs, btrfs)
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: cannot make a file read-only")
    r = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"running as root and chattr +i failed here: {r.stderr.strip()}")


def _undo_read_only(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], check=False)
    path.chmod(0o644)


def test_a_read_only_store_is_refused_at_open(tmp_path):
    path = tmp_path / "a.db"
    s = KeyStore(path, "L1")
    s.prepare(1, bytearray(os.urandom(64)), 512)
    s.commit(1)
    s.close()
    _make_read_only(path)
    try:
        # SQLite opens a file it may not write read-only without a word, and the store
        # opened fine; the node then failed at its first commit, after running the link
        with pytest.raises(KeyStoreIOError, match="read-only") as ei:
            KeyStore(path, "L1")
        assert str(path) in str(ei.value)
    finally:
        _undo_read_only(path)
    s = KeyStore(path, "L1")
    assert s.count() == 2
    s.close()


_TAKER = """
import sys
sys.path.insert(0, sys.argv[2])
from link.keystore import KeyStore
s = KeyStore(sys.argv[1], "L1", timeout_s=30)
paced = sys.argv[3] == "paced"
sys.stdin.readline()        # go
while True:
    if paced and not sys.stdin.readline():     # one take per line from the test
        break
    ids = s.peek(3)
    if not ids:
        break
    try:
        s.take(ids)
    except KeyError:        # the other process took one of them first: nothing was taken
        continue
    print(" ".join(ids), flush=True)
"""


@pytest.mark.parametrize("seed", [1, 2])
def test_takes_by_two_processes_one_killed_never_hand_a_key_out_twice(tmp_path, seed):
    # Two processes take keys from one store at once (as two KMEs on one store would), the
    # oldest first so they collide; one is killed at a random point, possibly mid-transaction.
    path = tmp_path / "a.db"
    s = KeyStore(path, "L1")
    for b in (1, 2):
        s.prepare(b, bytearray(os.urandom(32 * 150)), 256 * 150)
        s.commit(b)
    all_ids = set(s.key_ids())
    s.close()
    v = seed % 2
    procs = [subprocess.Popen([sys.executable, "-c", _TAKER, str(path), str(ROOT),
                               "paced" if i == v else "free"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for i in range(2)]
    victim, other = procs[v], procs[1 - v]
    lines: list[list[str]] = [[], []]
    victim.stdin.write("go\n" + "take\n" * 5 * seed)   # the victim alone for a while...
    victim.stdin.flush()
    for _ in range(5 * seed):
        lines[v].append(victim.stdout.readline())
    other.stdin.write("go\n")                           # ...then both at once: at most 40 more
    other.stdin.flush()                                  # takes for the victim (the store has
    victim.stdin.write("take\n" * 40)                    # 100), killed at some point among them
    victim.stdin.flush()
    time.sleep(0.01 * seed)
    os.kill(victim.pid, signal.SIGKILL)
    rest, _ = victim.communicate(timeout=30)
    lines[v] += rest.splitlines()
    out, _ = other.communicate(timeout=60)
    lines[1 - v] += out.splitlines()
    assert victim.returncode == -signal.SIGKILL and other.returncode == 0
    handed = [kid for part in lines for line in part for kid in line.split()]
    assert len(handed) == len(set(handed)), "a key was handed out twice"
    assert set(handed) <= all_ids
    # restart: the store is consistent, and no handed-out key is there to be taken again
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    s = KeyStore(path, "L1")
    left = set(s.key_ids())
    assert not left & set(handed)
    # the survivor emptied the store; at most the victim's last take (committed, not printed) is
    # missing from what was printed
    assert not left and len(all_ids) - len(handed) in (0, 1, 2, 3)
    for kid in handed[:5]:
        with pytest.raises(KeyError):
            s.take([kid])
    s.close()

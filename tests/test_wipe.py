"""postproc_c.memzero (qpp_memzero): buffers are zeroed in place, immutable ones refused."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

import postproc_c as pc


def test_wipes_numpy_in_place_and_only_the_view():
    rng = np.random.default_rng(1)
    key = rng.integers(1, 2**63, 1000, dtype=np.uint64)
    view = key[100:200]
    addr = key.ctypes.data
    pc.memzero(view)
    assert key.ctypes.data == addr            # same memory, no copy
    assert not view.any()
    assert key[:100].all() and key[200:].all()
    pc.memzero(key)
    assert not key.any()


def test_wipes_bytearray_and_memoryview():
    buf = bytearray(range(1, 200))
    pc.memzero(memoryview(buf)[10:20])
    assert buf[10:20] == bytes(10) and buf[9] == 10 and buf[20] == 21
    pc.memzero(buf)
    assert buf == bytes(199)
    pc.memzero(bytearray())                   # empty: nothing to do


def test_refuses_what_cannot_be_wiped():
    with pytest.raises(TypeError, match="immutable"):
        pc.memzero(b"secret")
    with pytest.raises(TypeError, match="read-only"):
        a = np.ones(8, dtype=np.uint8)
        a.flags.writeable = False
        pc.memzero(a)
    with pytest.raises(ValueError, match="contiguous"):
        pc.memzero(np.ones(16, dtype=np.uint8)[::2])
    with pytest.raises(TypeError, match="writable"):
        pc.memzero(memoryview(b"abc"))
    with pytest.raises(TypeError, match="buf"):
        pc.memzero([1, 2, 3])


@pytest.mark.skipif(shutil.which("nm") is None, reason="nm not installed")
def test_core_wipe_is_a_library_call_not_an_inlined_store():
    # qpp_memzero is exported and calls explicit_bzero (glibc >= 2.25) or memset through a
    # volatile pointer; either way the zeroing is a call the optimizer cannot remove.
    out = subprocess.run(["nm", "-D", pc.lib.__file__ if hasattr(pc.lib, "__file__") else
                          __import__("postproc_c._core", fromlist=["x"]).__file__],
                         capture_output=True, text=True, check=True).stdout
    assert " T qpp_memzero" in out
    assert "explicit_bzero" in out or "memset" in out


def test_auth_pool_reads_secrets_into_wipeable_buffers(tmp_path):
    import sqlite3

    from link import auth

    per = auth.HASH_KEY_BYTES + 64 * auth.PAD_BYTES
    secret = bytearray(range(256)) * (per * len(auth.STREAMS) // 256 + 1)
    secret = secret[:per * len(auth.STREAMS)]
    auth.write_psk(tmp_path / "psk", "L", per, secret=secret)
    link_id, streams = auth.read_psk(tmp_path / "psk")
    assert link_id == "L" and all(isinstance(b, bytearray) for b in streams.values())
    assert b"".join(streams[s] for s in auth.STREAMS) == bytes(secret)

    pool = auth.AuthPool(tmp_path / "psk", tmp_path / "state.db", "alice")
    tag = pool.tag("alice.proto.data", 3, b"hello")
    material = bytearray(b"\xa5" * (64 * 2 * sum(auth.SEGMENT_WEIGHTS.values()) * 2))
    conn = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    used = auth.append_segments_sql(conn, "block 0", material, 0)
    conn.close()
    assert used > 0
    before = {s: pool.capacity(s) for s in auth.STREAMS}
    old = pool._streams["alice.proto.data"]
    pool.refresh()
    assert all(pool.capacity(s) > before[s] for s in auth.STREAMS)
    assert not any(old)                                        # the outgrown buffer was wiped
    assert pool.tag("alice.proto.data", 3, b"hello") == tag   # same pads after growing
    bufs = list(pool._streams.values())
    pool.close()
    assert all(not any(b) for b in bufs)

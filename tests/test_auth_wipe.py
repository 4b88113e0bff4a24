"""Pads and hash keys of the authentication pool stay in buffers that can be wiped.

The pool kept each stream's hash key as a Python int (immutable: ``wipe()`` could only drop the
reference) and tagged through ints: ``int.from_bytes`` of the pad, ``poly_hash_bytes`` with the
int key returning the hash as an int, the expected tag of a check as ``bytes``. Python never
overwrites those; they stay in freed memory until reused. Now key and pad reach the C core as
views of bytearrays (``postproc_c.wc_tag``/``wc_verify``; ``link.auth`` calls the core directly),
the hash and the comparison stay in C, and the pad's copy is zeroed after each use.
"""

from __future__ import annotations

import os

import pytest

import link.auth as auth
import postproc_c
from link.auth import AuthPool, poly_hash_bytes_ref, write_psk


@pytest.fixture
def pool(tmp_path):
    write_psk(tmp_path / "l.psk", "L", 8192)
    p = AuthPool(tmp_path / "l.psk", tmp_path / "a.db", "alice")
    yield p
    p.close()


def _reference_tag(pool, stream, seq, data) -> bytes:
    """The tag by the definition, from the pool's bytes (test only: ints are fine here)."""
    key = int.from_bytes(pool._hash_key[stream], "little")
    pad = int.from_bytes(pool._pad(stream, seq), "little")
    return (poly_hash_bytes_ref(data, key) ^ pad).to_bytes(8, "little")


def test_hash_keys_are_buffers_that_wipe_zeroes(pool):
    keys = pool._hash_key
    assert all(isinstance(k, bytearray) and len(k) == 8 for k in keys.values())
    assert sum(any(k) for k in keys.values()) == len(keys)     # random keys (all-zero: 8 in 2^64)
    held = list(keys.values())
    pool.wipe()
    assert all(k == bytearray(8) for k in held)                # the same buffers, zeroed


class _Spy:
    """Stands in for the C core in link.auth: records each call's pad buffer (its bytes at the
    call, and the buffer itself to look at after the pool returns)."""

    def __init__(self, lib):
        self.lib, self.pads = lib, []

    def _see(self, pad_c):
        self.pads.append((bytes(postproc_c.ffi.buffer(pad_c, 8)), pad_c))

    def qpp_wc_tag(self, data, n, key, pad, out):
        self._see(pad)
        return self.lib.qpp_wc_tag(data, n, key, pad, out)

    def qpp_wc_verify(self, data, n, key, pad, tag):
        self._see(pad)
        return self.lib.qpp_wc_verify(data, n, key, pad, tag)

    def qpp_memzero(self, p, n):
        return self.lib.qpp_memzero(p, n)


def test_tag_and_check_go_to_c_in_buffers_and_the_pad_copy_is_wiped(pool, monkeypatch):
    stream, peer = "alice.proto.data", "bob.proto.data"
    data = bytearray(os.urandom(300))
    want = {s: _reference_tag(pool, s, 3, data) for s in (stream, peer)}
    pads = {s: bytes(pool._pad(s, 3)) for s in (stream, peer)}
    spy = _Spy(auth._LIB)
    monkeypatch.setattr(auth, "_LIB", spy)

    def no_ints(*a, **k):
        raise AssertionError("the pool hashed with an int key")

    monkeypatch.setattr(auth, "poly_hash_bytes", no_ints)
    monkeypatch.setattr(auth, "poly_hash_bytes_ref", no_ints)
    assert pool.tag(stream, 3, data) == want[stream]
    assert pool.verify(peer, 3, data, want[peer])
    bad = bytearray(want[peer])
    bad[0] ^= 1
    assert not pool.verify(peer, 3, data, bytes(bad))
    assert [p for p, _ in spy.pads] == [pads[stream], pads[peer], pads[peer]]   # the real pads
    assert all(bytes(postproc_c.ffi.buffer(c, 8)) == bytes(8) for _, c in spy.pads)   # then zeroed


def test_wc_tag_and_wc_verify_match_the_definition_and_refuse_unwipeable_keys():
    for n in (0, 1, 7, 8, 9, 1000, 65536 + 3):
        data = os.urandom(n)
        key, pad = bytearray(os.urandom(8)), bytearray(os.urandom(8))
        out = bytearray(8)
        postproc_c.wc_tag(data, key, pad, out)
        expect = poly_hash_bytes_ref(data, int.from_bytes(key, "little")) ^ int.from_bytes(pad, "little")
        assert out == expect.to_bytes(8, "little"), n
        assert postproc_c.wc_verify(data, key, pad, out)
        for i in range(64):                      # every single-bit change of the tag is refused
            bad = bytearray(out)
            bad[i // 8] ^= 1 << (i % 8)
            assert not postproc_c.wc_verify(data, key, pad, bad)
        assert not postproc_c.wc_verify(data, key, pad, out[:7])
    with pytest.raises(TypeError, match="key8: expected a bytearray"):
        postproc_c.wc_tag(b"m", bytes(8), bytearray(8), bytearray(8))
    with pytest.raises(ValueError, match="pad8: expected 8 contiguous bytes"):
        postproc_c.wc_tag(b"m", bytearray(8), bytearray(9), bytearray(8))
    with pytest.raises(ValueError, match="out8"):
        postproc_c.wc_tag(b"m", bytearray(8), bytearray(8), bytes(8))


def test_wc_c_calls_refuse_null_buffers():
    from postproc_c import ffi, lib
    k, p, t = (ffi.new("uint8_t[8]") for _ in range(3))
    assert lib.qpp_wc_tag(ffi.NULL, 3, k, p, t) == lib.QPP_ERR_NULL          # data NULL, len 3
    assert lib.qpp_wc_tag(ffi.NULL, 0, ffi.NULL, p, t) == lib.QPP_ERR_NULL
    assert lib.qpp_wc_tag(ffi.NULL, 0, k, ffi.NULL, t) == lib.QPP_ERR_NULL
    assert lib.qpp_wc_tag(ffi.NULL, 0, k, p, ffi.NULL) == lib.QPP_ERR_NULL
    assert lib.qpp_wc_verify(ffi.NULL, 0, k, p, ffi.NULL) == lib.QPP_ERR_NULL
    assert lib.qpp_wc_tag(ffi.NULL, 0, k, p, t) == lib.QPP_OK               # the empty message
    assert lib.qpp_wc_verify(ffi.NULL, 0, k, p, t) == 1

"""pack_bits / unpack_bits against numpy's packbits/unpackbits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import postproc_c
from postproc_c import bits as bits_mod
from postproc_c import lib


def ref_pack(bits: np.ndarray) -> np.ndarray:
    p = np.packbits(bits, bitorder="little")
    p = np.concatenate([p, np.zeros(-p.size % 8, np.uint8)])
    return p.view("<u8").astype(np.uint64)


def ref_unpack(words: np.ndarray, n: int) -> np.ndarray:
    return np.unpackbits(words.astype("<u8").view(np.uint8), bitorder="little")[:n]


@pytest.fixture(params=["fast", "portable"])
def path(request):
    if request.param == "portable":
        lib.qpp_cpu_disable(lib.QPP_CPU_AVX2 | lib.QPP_CPU_PCLMUL)
    yield request.param
    lib.qpp_cpu_disable(0)


SIZES = [0, 1, 2, 7, 8, 9, 31, 32, 33, 63, 64, 65, 127, 128, 129, 191, 200, 1000, 4096, 100_003]


@pytest.mark.parametrize("n", SIZES)
def test_pack_unpack_match_numpy(path, n):
    rng = np.random.default_rng(n)
    b = rng.integers(0, 2, size=n, dtype=np.uint8)
    w = postproc_c.pack_bits(b)
    assert w.dtype == np.uint64 and w.size == (n + 63) // 64
    assert np.array_equal(w, ref_pack(b))
    u = postproc_c.unpack_bits(w, n)
    assert u.dtype == np.uint8
    assert np.array_equal(u, b)


@pytest.mark.parametrize("n", SIZES)
def test_unpack_ignores_high_bits_of_last_word(path, n):
    rng = np.random.default_rng(n + 1)
    w = rng.integers(0, 2**64, size=(n + 63) // 64, dtype=np.uint64)   # random garbage above bit n
    assert np.array_equal(postproc_c.unpack_bits(w, n), ref_unpack(w, n))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 1), max_size=700))
def test_pack_roundtrip_hypothesis(values):
    b = np.array(values, dtype=np.uint8)
    w = postproc_c.pack_bits(b)
    assert np.array_equal(w, ref_pack(b))
    lib.qpp_cpu_disable(lib.QPP_CPU_AVX2)
    try:
        assert np.array_equal(postproc_c.pack_bits(b), w)
        assert np.array_equal(postproc_c.unpack_bits(w, b.size), b)
    finally:
        lib.qpp_cpu_disable(0)


@pytest.mark.parametrize("where", [0, 5, 63, 64, 130, 999])
@pytest.mark.parametrize("value", [2, 255])
def test_pack_rejects_non_bits_with_index(path, where, value):
    b = np.zeros(1000, dtype=np.uint8)
    b[where] = value
    with pytest.raises(ValueError, match=rf"^bits: values must be 0 or 1, got {value} at index {where}$"):
        postproc_c.pack_bits(b)


@pytest.mark.parametrize(
    ("arg", "exc"),
    [
        (np.zeros(8, np.int8), ValueError),
        (np.zeros(8, bool), ValueError),
        (np.zeros(8, np.uint16), ValueError),
        ([0, 1], TypeError),
        (np.zeros((2, 4), np.uint8), ValueError),
        (np.zeros(16, np.uint8)[::2], ValueError),
    ],
)
def test_pack_bad_arrays(arg, exc):
    with pytest.raises(exc, match="^bits:"):
        postproc_c.pack_bits(arg)


def test_unpack_bad_inputs():
    w = np.zeros(2, np.uint64)
    with pytest.raises(ValueError, match="^words: expected 1 words for n=64 bits, got 2"):
        postproc_c.unpack_bits(np.zeros(2, np.uint64), 64)
    with pytest.raises(ValueError, match="^words: expected 3 words"):
        postproc_c.unpack_bits(w, 129)
    with pytest.raises(ValueError, match="^words:"):
        postproc_c.unpack_bits(np.zeros(2, np.int64), 128)
    with pytest.raises(ValueError, match="^words:"):
        postproc_c.unpack_bits(np.zeros(4, np.uint64)[::2], 128)
    with pytest.raises(ValueError, match="^n:"):
        postproc_c.unpack_bits(w, -1)
    with pytest.raises(TypeError, match="^n:"):
        postproc_c.unpack_bits(w, 1.5)


def test_c_rejects_inconsistent_lengths():
    from postproc_c import ffi

    out = np.zeros(1, np.uint64)
    b = np.zeros(65, np.uint8)
    st = lib.qpp_pack_bits(ffi.from_buffer("uint8_t[]", b), 65, ffi.from_buffer("uint64_t[]", out), 1,
                           ffi.NULL)
    assert st == lib.QPP_ERR_LENGTH
    assert lib.qpp_unpack_bits(ffi.NULL, 0, 0, ffi.NULL) == lib.QPP_OK


def test_kat_matches_numpy_reference():
    assert tuple(int(x) for x in ref_pack(bits_mod._KAT_BITS)) == bits_mod._KAT_WORDS

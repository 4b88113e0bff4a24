"""poly_hash / poly_hash_bytes against a galois GF(2^64) reference."""

from __future__ import annotations

import galois
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import postproc_c
from postproc_c import hashing, lib

GF = galois.GF(2**64, irreducible_poly="x^64 + x^4 + x^3 + x + 1")
MASK64 = (1 << 64) - 1


def ref_poly_hash(words: np.ndarray, n: int, key: int) -> int:
    """Horner over the ceil(n/64) masked words and the length block n, in galois GF(2^64)."""
    nw = (n + 63) // 64
    blocks = [int(w) for w in words[:nw]]
    if n % 64:
        blocks[-1] &= (1 << (n % 64)) - 1
    blocks.append(n)
    k = GF(key)
    h = GF(0)
    for b in blocks:
        h = (h + GF(b)) * k
    return int(h)


def ref_poly_hash_bytes(data: bytes, key: int) -> int:
    padded = data + bytes(-len(data) % 8)
    words = np.frombuffer(padded, dtype="<u8").astype(np.uint64)
    return ref_poly_hash(words, 8 * len(data), key)


def clmul_ref(a: int, b: int) -> int:
    r = 0
    for i in range(64):
        if (b >> i) & 1:
            r ^= a << i
    for i in range(127, 63, -1):   # reduce mod x^64 + x^4 + x^3 + x + 1
        if (r >> i) & 1:
            r ^= hashing.REDUCTION_POLY << (i - 64)
    return r


@pytest.fixture(params=["fast", "portable"])
def path(request):
    if request.param == "portable":
        lib.qpp_cpu_disable(lib.QPP_CPU_PCLMUL | lib.QPP_CPU_AVX2)
    yield request.param
    lib.qpp_cpu_disable(0)


def test_field_matches_galois_and_plain_python():
    rng = np.random.default_rng(1)
    for a, b in rng.integers(0, 2**64, size=(50, 2), dtype=np.uint64):
        a, b = int(a), int(b)
        assert lib.qpp_gf64_mul(a, b) == int(GF(a) * GF(b)) == clmul_ref(a, b)
    assert lib.qpp_gf64_mul(1 << 63, 2) == 0x1B   # x^64 = x^4 + x^3 + x + 1


@pytest.mark.parametrize("n", [0, 1, 2, 63, 64, 65, 127, 128, 129, 255, 256, 257, 319, 320, 321, 1000, 4099])
def test_poly_hash_matches_galois(path, n):
    rng = np.random.default_rng(n + 11)
    words = rng.integers(0, 2**64, size=(n + 63) // 64, dtype=np.uint64)
    key = int(rng.integers(0, 2**64, dtype=np.uint64))
    assert postproc_c.poly_hash(words, n, key) == ref_poly_hash(words, n, key)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(min_size=0, max_size=300), key=st.integers(0, MASK64))
def test_poly_hash_bytes_matches_galois(data, key):
    expect = ref_poly_hash_bytes(data, key)
    assert postproc_c.poly_hash_bytes(data, key) == expect
    lib.qpp_cpu_disable(lib.QPP_CPU_PCLMUL)
    try:
        assert postproc_c.poly_hash_bytes(data, key) == expect
    finally:
        lib.qpp_cpu_disable(0)


def test_fast_and_portable_identical_on_large_input():
    rng = np.random.default_rng(5)
    n = 200_003
    words = rng.integers(0, 2**64, size=(n + 63) // 64, dtype=np.uint64)
    for key in (0, 1, 2, int(rng.integers(0, 2**64, dtype=np.uint64)), MASK64):
        fast = postproc_c.poly_hash(words, n, key)
        lib.qpp_cpu_disable(lib.QPP_CPU_PCLMUL)
        try:
            slow = postproc_c.poly_hash(words, n, key)
        finally:
            lib.qpp_cpu_disable(0)
        assert fast == slow


def test_bytes_equals_bits_form():
    rng = np.random.default_rng(3)
    for length in (0, 1, 7, 8, 9, 64, 100):
        data = rng.integers(0, 256, size=length, dtype=np.uint8).tobytes()
        bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
        words = postproc_c.pack_bits(bits)
        key = int(rng.integers(0, 2**64, dtype=np.uint64))
        assert postproc_c.poly_hash_bytes(data, key) == postproc_c.poly_hash(words, 8 * length, key)
        assert postproc_c.poly_hash_bytes(bytearray(data), key) == postproc_c.poly_hash_bytes(
            np.frombuffer(data, np.uint8), key)


def test_high_bits_of_last_word_are_ignored():
    words = np.array([0x1234, 0xFFFF_FFFF_FFFF_FF05], dtype=np.uint64)
    clean = np.array([0x1234, 0x05], dtype=np.uint64)
    assert postproc_c.poly_hash(words, 67, 99) == postproc_c.poly_hash(clean, 67, 99)


def test_length_is_bound_in():
    # Trailing zero bits change the tag: the length block separates these messages.
    words = np.array([0b1011], dtype=np.uint64)
    key = 0x9E3779B97F4A7C15
    tags = {postproc_c.poly_hash(words, n, key) for n in range(4, 65)}
    assert len(tags) == 61
    assert postproc_c.poly_hash_bytes(b"ab", key) != postproc_c.poly_hash_bytes(b"ab\x00", key)


def test_single_bit_flip_changes_tag():
    rng = np.random.default_rng(8)
    n = 1000
    bits = rng.integers(0, 2, size=n, dtype=np.uint8)
    key = int(rng.integers(1, 2**64, dtype=np.uint64))
    t0 = postproc_c.poly_hash(postproc_c.pack_bits(bits), n, key)
    for i in (0, 63, 64, 999):
        b2 = bits.copy()
        b2[i] ^= 1
        assert postproc_c.poly_hash(postproc_c.pack_bits(b2), n, key) != t0


def test_tag_size_from_c():
    assert hashing.TAG_BYTES == 8
    assert hashing.REDUCTION_POLY == (1 << 64) | 0x1B


def test_kat_values_match_reference():
    assert ref_poly_hash(hashing._KAT_WORDS, hashing._KAT_N, hashing._KAT_KEY) == hashing._KAT_TAG
    assert ref_poly_hash_bytes(hashing._KAT_BYTES, hashing._KAT_KEY) == hashing._KAT_BYTES_TAG


@pytest.mark.parametrize(
    ("args", "exc", "needle"),
    [
        ((np.zeros(1, np.int64), 64, 1), ValueError, "bits_words"),
        ((np.zeros(1, np.uint32), 32, 1), ValueError, "bits_words"),
        (([0], 64, 1), TypeError, "bits_words"),
        ((np.zeros((1, 1), np.uint64), 64, 1), ValueError, "bits_words"),
        ((np.zeros(4, np.uint64)[::2], 128, 1), ValueError, "bits_words"),
        ((np.zeros(2, np.uint64), 64, 1), ValueError, "bits_words"),
        ((np.zeros(1, np.uint64), 65, 1), ValueError, "bits_words"),
        ((np.zeros(1, np.uint64), -1, 1), ValueError, "n"),
        ((np.zeros(1, np.uint64), 64.0, 1), TypeError, "n"),
        ((np.zeros(1, np.uint64), 64, -1), ValueError, "key"),
        ((np.zeros(1, np.uint64), 64, 1 << 64), ValueError, "key"),
        ((np.zeros(1, np.uint64), 64, "1"), TypeError, "key"),
    ],
)
def test_poly_hash_bad_inputs(args, exc, needle):
    with pytest.raises(exc, match=rf"^{needle}:"):
        postproc_c.poly_hash(*args)


def test_poly_hash_bytes_bad_inputs():
    with pytest.raises(TypeError, match="^data:"):
        postproc_c.poly_hash_bytes("text", 1)
    with pytest.raises(TypeError, match="^data:"):
        postproc_c.poly_hash_bytes([1, 2], 1)
    with pytest.raises(ValueError, match="^data:"):
        postproc_c.poly_hash_bytes(memoryview(b"abcdef")[::2], 1)
    with pytest.raises(ValueError, match="^key:"):
        postproc_c.poly_hash_bytes(b"abc", 1 << 64)


def test_threads_hash_concurrently():
    # The core is reentrant and cffi releases the GIL: concurrent calls give the sequential answers.
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(12)
    n = 1 << 20
    words = rng.integers(0, 2**64, size=n // 64, dtype=np.uint64)
    keys = [int(k) for k in rng.integers(0, 2**64, size=8, dtype=np.uint64)]
    expect = [postproc_c.poly_hash(words, n, k) for k in keys]
    with ThreadPoolExecutor(4) as ex:
        assert list(ex.map(lambda k: postproc_c.poly_hash(words, n, k), keys)) == expect


def test_c_guards():
    from postproc_c import ffi

    tag = ffi.new("uint64_t *")
    assert lib.qpp_poly_hash(ffi.NULL, 0, 0, 1, ffi.NULL) == lib.QPP_ERR_NULL
    assert lib.qpp_poly_hash(ffi.NULL, 1, 64, 1, tag) == lib.QPP_ERR_NULL
    assert lib.qpp_poly_hash(ffi.NULL, 1, 0, 1, tag) == lib.QPP_ERR_LENGTH
    assert lib.qpp_poly_hash(ffi.NULL, 0, 0, 5, tag) == lib.QPP_OK and tag[0] == 0   # empty message
    assert lib.qpp_poly_hash_bytes(ffi.NULL, 3, 1, tag) == lib.QPP_ERR_NULL

"""toeplitz_hash against numpy references of its definition.

Definition (qpp_toeplitz.h): out[i] = XOR_j s[i - j + n_in - 1] & k[j]. References:
an explicit Toeplitz matrix product mod 2 (tiny sizes), np.convolve mod 2 (small),
an exact float FFT convolution mod 2 (medium; the rounding margin is asserted),
and a direct per-bit evaluation on packed words for spot checks at 10^7 and 10^8.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import postproc_c
from postproc_c import lib, toeplitz_hash
from postproc_c.toeplitz import KAT_EXPECTED, KAT_N_IN, KAT_N_OUT, kat_inputs, kernel, threshold


def pack(bits: np.ndarray) -> np.ndarray:
    n = bits.size
    buf = np.zeros(((n + 63) // 64) * 8, dtype=np.uint8)
    buf[: (n + 7) // 8] = np.packbits(bits.astype(np.uint8), bitorder="little")
    return buf.view(np.uint64)


def unpack(words: np.ndarray, n: int) -> np.ndarray:
    return np.unpackbits(words.view(np.uint8), bitorder="little")[:n]


def ref_matrix(k: np.ndarray, s: np.ndarray, n_out: int) -> np.ndarray:
    """The definition literally: T[i, j] = s[i - j + n_in - 1], out = T k mod 2."""
    n_in = k.size
    i = np.arange(n_out)[:, None]
    j = np.arange(n_in)[None, :]
    t = s[i - j + n_in - 1].astype(np.int64)
    return ((t @ k.astype(np.int64)) & 1).astype(np.uint8)


def ref_convolve(k: np.ndarray, s: np.ndarray, n_out: int) -> np.ndarray:
    full = np.convolve(s.astype(np.int64), k.astype(np.int64)) & 1
    return full[k.size - 1: k.size - 1 + n_out].astype(np.uint8)


def ref_fft(k: np.ndarray, s: np.ndarray, n_out: int) -> np.ndarray:
    """Exact integer convolution by float FFT (counts <= n_in < 2^21 here)."""
    n = s.size + k.size - 1
    size = 1 << (n - 1).bit_length()
    c = np.fft.irfft(np.fft.rfft(s.astype(np.float64), size) * np.fft.rfft(k.astype(np.float64), size),
                     size)[:n]
    r = np.rint(c)
    assert np.max(np.abs(c - r)) < 0.25  # the rounding is exact, not a guess
    return (r.astype(np.int64)[k.size - 1: k.size - 1 + n_out] & 1).astype(np.uint8)


def spot_check(key: np.ndarray, n_in: int, seed: np.ndarray, out: np.ndarray, idx: np.ndarray) -> None:
    """Check out[i] for i in idx directly from the definition on packed words:
    out[i] = parity(sum_m s[i + m] & krev[m]) with krev[m] = k[n_in - 1 - m]."""
    kbits = unpack(key, n_in)
    krev = pack(kbits[::-1].copy())
    sbits = unpack(seed, seed.size * 64)
    got = unpack(out, int(idx.max()) + 1)
    for i in idx:
        window = pack(sbits[i: i + n_in])
        parity = int(np.bitwise_count(window & krev).sum()) & 1
        assert got[i] == parity, f"output bit {i} differs from the definition"


def random_case(rng: np.random.Generator, n_in: int, n_out: int, dirty: bool = True):
    k = rng.integers(0, 2, n_in, dtype=np.uint8)
    s = rng.integers(0, 2, n_in + n_out - 1, dtype=np.uint8)
    kw, sw = pack(k), pack(s)
    if dirty:  # garbage above the lengths must be ignored
        for w, n in ((kw, n_in), (sw, n_in + n_out - 1)):
            if n % 64:
                w[-1] |= ~np.uint64(0) << np.uint64(n % 64)
    return k, s, kw, sw


@pytest.fixture
def portable():
    """Force the portable C path for the test's duration."""
    lib.qpp_cpu_disable(lib.QPP_CPU_PCLMUL)
    try:
        yield
    finally:
        lib.qpp_cpu_disable(0)


METHODS = ("auto", "karatsuba", "afft")


@pytest.mark.parametrize("n_in,n_out", [(1, 1), (2, 1), (2, 2), (3, 2), (63, 1), (64, 64), (65, 65),
                                        (127, 40), (128, 1), (129, 128), (200, 150), (777, 333)])
@pytest.mark.parametrize("method", METHODS)
def test_matches_definition_small(n_in, n_out, method):
    rng = np.random.default_rng(n_in * 1000 + n_out)
    k, s, kw, sw = random_case(rng, n_in, n_out)
    got = toeplitz_hash(kw, n_in, sw, n_out, method=method)
    assert got.dtype == np.uint64 and got.size == (n_out + 63) // 64
    assert np.array_equal(unpack(got, n_out), ref_matrix(k, s, n_out))
    if n_out % 64:
        assert int(got[-1]) >> (n_out % 64) == 0  # unused high bits are zero


@settings(max_examples=60, deadline=None)
@given(n_in=st.integers(1, 3000), frac=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1),
       method=st.sampled_from(METHODS))
def test_matches_convolve_random_sizes(n_in, frac, seed, method):
    n_out = max(1, int(n_in * frac))
    k, s, kw, sw = random_case(np.random.default_rng(seed), n_in, n_out)
    assert np.array_equal(unpack(toeplitz_hash(kw, n_in, sw, n_out, method=method), n_out),
                          ref_convolve(k, s, n_out))


@pytest.mark.parametrize("n_in,n_out", [(5000, 1250), (32767, 8191), (32768, 8192), (65537, 1),
                                        (100_003, 25_000), (250_000, 250_000), (1_000_000, 250_000)])
def test_matches_fft_reference_medium(n_in, n_out):
    k, s, kw, sw = random_case(np.random.default_rng(n_in), n_in, n_out)
    ref = ref_fft(k, s, n_out)
    for method in ("auto", "afft") + (("karatsuba",) if n_in <= 300_000 else ()):
        assert np.array_equal(unpack(toeplitz_hash(kw, n_in, sw, n_out, method=method), n_out), ref), method


@pytest.mark.parametrize("n_in,n_out", [(1, 1), (100, 37), (3000, 700), (40_000, 10_000), (300_001, 75_000)])
def test_portable_path_bit_identical(n_in, n_out):
    # Three code paths: AVX-512 VPCLMULQDQ (where the CPU has it), SSE PCLMULQDQ
    # (AVX2 disabled), portable C (PCLMUL disabled). All must agree bit for bit.
    _, _, kw, sw = random_case(np.random.default_rng(7 + n_in), n_in, n_out)
    results = {}
    flags = open("/proc/cpuinfo").read() if sys.platform == "linux" else ""
    if "vpclmulqdq" in flags and "avx512vl" in flags and "avx512bw" in flags:
        assert kernel() == "vpclmul512"  # so this test really covers the AVX-512 kernel
    for disable in (0, lib.QPP_CPU_AVX2, lib.QPP_CPU_PCLMUL | lib.QPP_CPU_AVX2):
        lib.qpp_cpu_disable(disable)
        try:
            if disable & lib.QPP_CPU_PCLMUL:
                assert kernel() == "portable"
            elif disable & lib.QPP_CPU_AVX2 and "pclmulqdq" in flags:
                assert kernel() == "pclmul"
            for m in ("karatsuba", "afft"):
                results[disable, m] = toeplitz_hash(kw, n_in, sw, n_out, method=m)
        finally:
            lib.qpp_cpu_disable(0)
    first = results[0, "afft"]
    for key, val in results.items():
        assert np.array_equal(val, first), key


def test_portable_matches_reference(portable):
    k, s, kw, sw = random_case(np.random.default_rng(99), 40_000, 9_999)
    ref = ref_fft(k, s, 9_999)
    for m in ("karatsuba", "afft"):
        assert np.array_equal(unpack(toeplitz_hash(kw, 40_000, sw, 9_999, method=m), 9_999), ref)


def _random_words(rng, n_bits):
    return rng.integers(0, 2**64, (n_bits + 63) // 64, dtype=np.uint64, endpoint=False)


@pytest.mark.parametrize("n_in", [10**7, pytest.param(10**8, marks=pytest.mark.slow)])
def test_large_spot_check(n_in):
    n_out = n_in // 4
    rng = np.random.default_rng(n_in)
    key, seed = _random_words(rng, n_in), _random_words(rng, n_in + n_out - 1)
    out = toeplitz_hash(key, n_in, seed, n_out)
    assert out.size == (n_out + 63) // 64
    if sys.platform == "linux":  # the whole process, inputs included, stayed far below 4 GiB
        import resource

        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 < 2**32
    idx = np.unique(np.concatenate([[0, 1, 63, 64, n_out // 2, n_out - 2, n_out - 1],
                                    rng.integers(0, n_out, 9)]))
    spot_check(key, n_in, seed, out, idx)
    bad = out.copy()
    bad[n_out // 2 // 64] ^= np.uint64(1) << np.uint64(n_out // 2 % 64)
    with pytest.raises(AssertionError, match=f"bit {n_out // 2} "):
        spot_check(key, n_in, seed, bad, idx)  # the check can fail


def test_auto_uses_both_methods_consistently():
    t = threshold()
    assert 64 <= t <= 10**6
    for n_in in (t - 1, t):
        _, _, kw, sw = random_case(np.random.default_rng(n_in), n_in, n_in // 4)
        a = toeplitz_hash(kw, n_in, sw, n_in // 4)
        assert np.array_equal(a, toeplitz_hash(kw, n_in, sw, n_in // 4, method="karatsuba"))
        assert np.array_equal(a, toeplitz_hash(kw, n_in, sw, n_in // 4, method="afft"))


def test_field_modulus_is_irreducible():
    # GF(2^64) = GF(2)[z]/(z^64 + z^4 + z^3 + z + 1) must be a field for the FFT's
    # evaluation/interpolation to be exact.
    import galois

    assert galois.Poly.Degrees([64, 4, 3, 1, 0]).is_irreducible()


def test_known_answer_and_selftest():
    key, seed = kat_inputs()
    k, s = unpack(key, KAT_N_IN), unpack(seed, KAT_N_IN + KAT_N_OUT - 1)
    assert np.array_equal(pack(ref_matrix(k, s, KAT_N_OUT)), np.array(KAT_EXPECTED, dtype=np.uint64))
    assert postproc_c.selftest()["toeplitz_hash"] is True


def test_linear_in_key():
    # T(k1 ^ k2) = T k1 ^ T k2: a property PA relies on, checked at an FFT size.
    rng = np.random.default_rng(5)
    n_in, n_out = 200_000, 50_000
    k1, k2, sw = _random_words(rng, n_in), _random_words(rng, n_in), _random_words(rng, n_in + n_out - 1)
    assert np.array_equal(toeplitz_hash(k1 ^ k2, n_in, sw, n_out),
                          toeplitz_hash(k1, n_in, sw, n_out) ^ toeplitz_hash(k2, n_in, sw, n_out))


def test_threads_give_same_results():
    rng = np.random.default_rng(11)
    n_in, n_out = 300_000, 75_000
    cases = [(_random_words(rng, n_in), _random_words(rng, n_in + n_out - 1)) for _ in range(4)]
    expect = [toeplitz_hash(k, n_in, s, n_out) for k, s in cases]
    got: list = [None] * len(cases)

    def work(i):
        got[i] = toeplitz_hash(cases[i][0], n_in, cases[i][1], n_out)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(a, b) for a, b in zip(expect, got, strict=True))


# ---- bad input: each error names the argument ---------------------------------

def _good():
    return np.zeros(2, np.uint64), 100, np.zeros(3, np.uint64), 50


@pytest.mark.parametrize("change,exc,name", [
    (lambda a: {**a, "key_words": [0, 0]}, TypeError, "key_words"),
    (lambda a: {**a, "key_words": np.zeros(2, np.uint32)}, ValueError, "key_words"),
    (lambda a: {**a, "key_words": np.zeros(3, np.uint64)}, ValueError, "key_words"),
    (lambda a: {**a, "key_words": np.zeros(1, np.uint64)}, ValueError, "key_words"),
    (lambda a: {**a, "key_words": np.zeros((2, 1), np.uint64)}, ValueError, "key_words"),
    (lambda a: {**a, "key_words": np.zeros(4, np.uint64)[::2]}, ValueError, "key_words"),
    (lambda a: {**a, "seed_words": np.zeros(3, np.int64)}, ValueError, "seed_words"),
    (lambda a: {**a, "seed_words": np.zeros(2, np.uint64)}, ValueError, "seed_words"),
    (lambda a: {**a, "seed_words": np.zeros(6, np.uint64)[::2]}, ValueError, "seed_words"),
    (lambda a: {**a, "seed_words": None}, TypeError, "seed_words"),
    (lambda a: {**a, "n_in": 0}, ValueError, "n_in"),
    (lambda a: {**a, "n_in": -5}, ValueError, "n_in"),
    (lambda a: {**a, "n_in": 100.0}, TypeError, "n_in"),
    (lambda a: {**a, "n_in": True}, TypeError, "n_in"),
    (lambda a: {**a, "n_out": 0}, ValueError, "n_out"),
    (lambda a: {**a, "n_out": 101}, ValueError, "n_out"),
    (lambda a: {**a, "n_out": "50"}, TypeError, "n_out"),
    (lambda a: {**a, "method": "fft"}, ValueError, "method"),
])
def test_bad_input_names_argument(change, exc, name):
    k, n_in, s, n_out = _good()
    args = change({"key_words": k, "n_in": n_in, "seed_words": s, "n_out": n_out, "method": "auto"})
    with pytest.raises(exc, match=name):
        toeplitz_hash(args["key_words"], args["n_in"], args["seed_words"], args["n_out"],
                      method=args["method"])


def test_too_long_is_refused_before_allocation():
    with pytest.raises(ValueError, match="n_in"):
        toeplitz_hash(np.zeros(1, np.uint64), postproc_c.toeplitz.MAX_BITS + 1, np.zeros(1, np.uint64), 1)


def test_c_status_for_bad_lengths():
    # The C layer validates on its own too (callers other than the wrapper).
    from postproc_c import ffi

    buf = np.zeros(4, np.uint64)
    p = ffi.cast("uint64_t *", ffi.from_buffer(buf))
    assert lib.qpp_toeplitz_hash(p, 0, p, 1, p) == lib.QPP_ERR_LENGTH
    assert lib.qpp_toeplitz_hash(p, 10, p, 11, p) == lib.QPP_ERR_LENGTH
    assert lib.qpp_toeplitz_hash(ffi.NULL, 10, p, 1, p) == lib.QPP_ERR_NULL
    assert lib.qpp_toeplitz_hash_method(p, 10, p, 1, p, 7) == lib.QPP_ERR_VALUE


@pytest.mark.parametrize("n_in,n_out", [(1, 1), (2, 2), (7, 3), (100, 100), (1000, 250), (40_000, 9_000)])
def test_every_key_block_count_gives_the_same_hash(n_in, n_out):
    # The FFT method may cut the key into blocks summed in the transform domain
    # (the last block is shorter and reads seed bits below 0 as zero).
    from postproc_c import ffi

    k, s, kw, sw = random_case(np.random.default_rng(n_in + 3), n_in, n_out)
    ref = ref_fft(k, s, n_out)
    for blocks in range(1, min(9, n_in) + 1):
        out = np.zeros((n_out + 63) // 64, np.uint64)
        st = lib.qpp_toeplitz_hash_afft(ffi.cast("uint64_t *", ffi.from_buffer(kw)), n_in,
                                        ffi.cast("uint64_t *", ffi.from_buffer(sw)), n_out,
                                        ffi.cast("uint64_t *", ffi.from_buffer(out)), blocks)
        assert st == 0
        assert np.array_equal(unpack(out, n_out), ref), blocks
    assert lib.qpp_toeplitz_hash_afft(ffi.cast("uint64_t *", ffi.from_buffer(kw)), n_in,
                                      ffi.cast("uint64_t *", ffi.from_buffer(sw)), n_out,
                                      ffi.cast("uint64_t *", ffi.from_buffer(out)), 65) == lib.QPP_ERR_VALUE

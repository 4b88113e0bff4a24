"""Throughput of the core primitives: sifting, poly_hash, pack/unpack.

Each group has a numpy baseline measured in the same run. Targets (issue 2):
sifting >= 100 M detection events/s per core (anchor: 60 M/s, the dedicated
sifting module of a 13.7 Mb/s commercial system, Yuan et al., JLT 2018);
poly_hash >= 2 Gb/s (anchor: memory bandwidth; its baseline is the same hash
in vectorised numpy, and a numpy XOR-reduce that only reads the words is
listed as the memory-read bound). Sifting counts input detection events
of ``sift()`` (Bob's step, Alice's step and Bob's match step, all included);
the single steps are listed too.
"""

from __future__ import annotations

import numpy as np
import pytest

import postproc_c
from bench.common import record
from postproc_c import lib

ROUNDS = 15
SIFT_TARGET = 100e6
HASH_TARGET = 2e9


# ------------------------------------------------------------------ sifting
def _frame(frame_len: int, n_events: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    basis = (rng.random(frame_len) < 0.5).astype(np.uint8)
    bit = rng.integers(0, 2, frame_len, dtype=np.uint8)
    intensity = rng.choice(np.array([0, 1, 2], np.uint8), size=frame_len, p=[0.7, 0.2, 0.1])
    slots = np.sort(rng.choice(frame_len, size=n_events, replace=False)).astype(np.uint64)
    clicks = np.array([1, 2, 4, 8], np.uint8)[rng.integers(0, 4, n_events)]
    multi = rng.random(n_events) < 0.02          # a few percent double and cross-basis clicks
    clicks[multi] = rng.integers(1, 16, int(multi.sum()), dtype=np.uint8)
    words = rng.integers(0, 2**64, size=n_events // 64 + 1, dtype=np.uint64)
    return slots, clicks, basis, bit, intensity, words


def numpy_sift(slots, clicks, basis, bit, intensity, words):
    """The same protocol in vectorised numpy (both steps), as a baseline."""
    if np.any(slots[1:] <= slots[:-1]) or (slots.size and slots[-1] >= basis.size):
        raise ValueError("slots")
    if np.any((clicks == 0) | (clicks > 15)):
        raise ValueError("clicks")
    z = clicks & 3
    x = clicks >> 2
    keep = (z == 0) | (x == 0)
    bbasis = (x > 0).astype(np.uint8)
    sub = np.where(bbasis == 1, x, z)
    bbit = (sub == 2).astype(np.uint8)
    double = keep & (sub == 3)
    rbits = np.unpackbits(words.view(np.uint8), bitorder="little")
    bbit[double] = rbits[: int(double.sum())]
    aslots, abasis, abits = slots[keep], bbasis[keep], bbit[keep]
    s = aslots.astype(np.intp)
    ab, it = basis[s], intensity[s]
    match = ab == abasis
    cls = ab.astype(np.intp) * 3 + it
    det = np.bincount(cls, minlength=6)
    sif = np.bincount(cls[match], minlength=6)
    return bit[s][match], it[match], abits[match], det, sif


SIFT_SIZES = [(1 << 20, 1 << 16), (1 << 22, 1 << 20)]


@pytest.mark.parametrize(("frame_len", "n"), SIFT_SIZES, ids=lambda v: f"{v}")
def test_sift_numpy_baseline(benchmark, frame_len, n):
    benchmark.group = f"core-sift frame={frame_len} events={n}"
    args = _frame(frame_len, n)
    benchmark.pedantic(numpy_sift, args=args, rounds=ROUNDS, warmup_rounds=1)
    record(benchmark, units=n, unit="event", baseline=True, note="numpy, both steps")


@pytest.mark.parametrize(("frame_len", "n"), SIFT_SIZES, ids=lambda v: f"{v}")
def test_sift_c(benchmark, frame_len, n):
    benchmark.group = f"core-sift frame={frame_len} events={n}"
    slots, clicks, basis, bit, intensity, words = _frame(frame_len, n)
    r = benchmark.pedantic(postproc_c.sift, args=(slots, clicks, basis, bit, intensity),
                           kwargs={"rng": words}, rounds=ROUNDS, warmup_rounds=1)
    ref = numpy_sift(slots, clicks, basis, bit, intensity, words)
    assert np.array_equal(r.alice.bits, ref[0]) and np.array_equal(r.bob.bits, ref[2])
    record(benchmark, units=n, unit="event", target=SIFT_TARGET, note="sift(): all steps")


@pytest.mark.parametrize(("frame_len", "n"), SIFT_SIZES, ids=lambda v: f"{v}")
def test_sift_bob_step(benchmark, frame_len, n):
    benchmark.group = f"core-sift frame={frame_len} events={n}"
    slots, clicks, _, _, _, words = _frame(frame_len, n)
    benchmark.pedantic(postproc_c.bob_announce, args=(slots, clicks, frame_len), kwargs={"rng": words},
                       rounds=ROUNDS, warmup_rounds=1)
    record(benchmark, units=n, unit="event", note="bob_announce only")


@pytest.mark.parametrize(("frame_len", "n"), SIFT_SIZES, ids=lambda v: f"{v}")
def test_sift_alice_step(benchmark, frame_len, n):
    benchmark.group = f"core-sift frame={frame_len} events={n}"
    slots, clicks, basis, bit, intensity, words = _frame(frame_len, n)
    ann = postproc_c.bob_announce(slots, clicks, frame_len, rng=words)
    benchmark.pedantic(postproc_c.alice_sift, args=(ann.slots, ann.bases, basis, bit, intensity),
                       rounds=ROUNDS, warmup_rounds=1)
    record(benchmark, units=n, unit="event", note="alice_sift only (per detection event)")


# ------------------------------------------------------------------ poly_hash
HASH_SIZES = [10**6, 10**8]


def _words(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 2**64, size=(n + 63) // 64, dtype=np.uint64)


def _np_gf64_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise GF(2^64) product mod x^64 + x^4 + x^3 + x + 1 (shift-and-mask, 64 steps)."""
    lo = np.zeros(np.broadcast(a, b).shape, np.uint64)
    hi = np.zeros_like(lo)
    one = np.uint64(1)
    for i in range(64):
        m = np.uint64(0) - ((b >> np.uint64(i)) & one)
        lo ^= (a << np.uint64(i)) & m
        if i:
            hi ^= (a >> np.uint64(64 - i)) & m
    t = hi ^ (hi << np.uint64(1)) ^ (hi << np.uint64(3)) ^ (hi << np.uint64(4))
    o = (hi >> np.uint64(63)) ^ (hi >> np.uint64(61)) ^ (hi >> np.uint64(60))
    return lo ^ t ^ o ^ (o << np.uint64(1)) ^ (o << np.uint64(3)) ^ (o << np.uint64(4))


def numpy_poly_hash(words: np.ndarray, n: int, key: int) -> int:
    """The same hash in vectorised numpy: all key powers by doubling, then one product per block."""
    blocks = np.append(words, np.uint64(n))
    if n % 64:
        blocks[-2] &= np.uint64((1 << (n % 64)) - 1)
    pw = np.array([key], np.uint64)                      # pw[i] = key^(i+1)
    while pw.size < blocks.size:
        pw = np.concatenate([pw, _np_gf64_mul(pw, pw[-1])])
    pw = pw[: blocks.size]
    return int(np.bitwise_xor.reduce(_np_gf64_mul(blocks, pw[::-1])))


@pytest.mark.parametrize("n", HASH_SIZES)
def test_poly_hash_numpy_baseline(benchmark, n):
    benchmark.group = f"core-poly_hash n={n}"
    w = _words(n)
    tag = benchmark.pedantic(numpy_poly_hash, args=(w, n, 0x9E3779B97F4A7C15), rounds=3, warmup_rounds=0)
    assert tag == postproc_c.poly_hash(w, n, 0x9E3779B97F4A7C15)
    record(benchmark, units=n, unit="bit", baseline=True, note="numpy: same hash, vectorised")


@pytest.mark.parametrize("n", HASH_SIZES)
def test_poly_hash_memory_read(benchmark, n):
    benchmark.group = f"core-poly_hash n={n}"
    w = _words(n)
    benchmark.pedantic(np.bitwise_xor.reduce, args=(w,), rounds=ROUNDS, warmup_rounds=1)
    record(benchmark, units=n, unit="bit", note="numpy xor-reduce: the memory-read bound, for context")


@pytest.mark.parametrize("n", HASH_SIZES)
def test_poly_hash(benchmark, n):
    benchmark.group = f"core-poly_hash n={n}"
    w = _words(n)
    benchmark.pedantic(postproc_c.poly_hash, args=(w, n, 0x9E3779B97F4A7C15), rounds=ROUNDS,
                       warmup_rounds=1)
    record(benchmark, units=n, unit="bit", target=HASH_TARGET, note="PCLMUL 4-way Horner")


def test_poly_hash_portable(benchmark):
    n = 10**6
    benchmark.group = f"core-poly_hash n={n}"
    w = _words(n)
    lib.qpp_cpu_disable(lib.QPP_CPU_PCLMUL)
    try:
        benchmark.pedantic(postproc_c.poly_hash, args=(w, n, 0x9E3779B97F4A7C15), rounds=5,
                           warmup_rounds=1)
    finally:
        lib.qpp_cpu_disable(0)
    record(benchmark, units=n, unit="bit", note="portable constant-time fallback")


def test_poly_hash_bytes_mac_1kib(benchmark):
    benchmark.group = "core-poly_hash_bytes 1 KiB message"
    data = bytes(np.random.default_rng(2).integers(0, 256, 1024, dtype=np.uint8))
    benchmark.pedantic(postproc_c.poly_hash_bytes, args=(data, 0x1234567), rounds=200, iterations=10)
    record(benchmark, units=8 * 1024, unit="bit", note="per-message cost incl. Python call")


def test_poly_hash_bytes_numpy_baseline(benchmark):
    benchmark.group = "core-poly_hash_bytes 1 KiB message"
    data = bytes(np.random.default_rng(2).integers(0, 256, 1024, dtype=np.uint8))
    words = np.frombuffer(data, "<u8").astype(np.uint64)
    tag = benchmark.pedantic(numpy_poly_hash, args=(words, 8 * len(data), 0x1234567), rounds=20)
    assert tag == postproc_c.poly_hash_bytes(data, 0x1234567)
    record(benchmark, units=8 * 1024, unit="bit", baseline=True, note="numpy: same hash, vectorised")


# ------------------------------------------------------------------ pack / unpack
PACK_N = 10**7


def _bits(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 2, size=n, dtype=np.uint8)


def test_pack_numpy_baseline(benchmark):
    benchmark.group = f"core-pack_bits n={PACK_N}"
    b = _bits(PACK_N)

    def numpy_pack(b):
        p = np.packbits(b, bitorder="little")
        return np.concatenate([p, np.zeros(-p.size % 8, np.uint8)]).view(np.uint64)

    benchmark.pedantic(numpy_pack, args=(b,), rounds=ROUNDS, warmup_rounds=1)
    record(benchmark, units=PACK_N, unit="bit", baseline=True, note="np.packbits little + view (no check)")


@pytest.mark.parametrize("path", ["avx2", "portable"])
def test_pack(benchmark, path):
    benchmark.group = f"core-pack_bits n={PACK_N}"
    b = _bits(PACK_N)
    lib.qpp_cpu_disable(lib.QPP_CPU_AVX2 if path == "portable" else 0)
    try:
        benchmark.pedantic(postproc_c.pack_bits, args=(b,), rounds=ROUNDS, warmup_rounds=1)
    finally:
        lib.qpp_cpu_disable(0)
    record(benchmark, units=PACK_N, unit="bit", note=f"{path}, validates 0/1")


def test_unpack_numpy_baseline(benchmark):
    benchmark.group = f"core-unpack_bits n={PACK_N}"
    w = postproc_c.pack_bits(_bits(PACK_N))
    benchmark.pedantic(lambda w: np.unpackbits(w.view(np.uint8), bitorder="little")[:PACK_N], args=(w,),
                       rounds=ROUNDS, warmup_rounds=1)
    record(benchmark, units=PACK_N, unit="bit", baseline=True, note="np.unpackbits little")


@pytest.mark.parametrize("path", ["avx2", "portable"])
def test_unpack(benchmark, path):
    benchmark.group = f"core-unpack_bits n={PACK_N}"
    w = postproc_c.pack_bits(_bits(PACK_N))
    lib.qpp_cpu_disable(lib.QPP_CPU_AVX2 if path == "portable" else 0)
    try:
        benchmark.pedantic(postproc_c.unpack_bits, args=(w, PACK_N), rounds=ROUNDS, warmup_rounds=1)
    finally:
        lib.qpp_cpu_disable(0)
    record(benchmark, units=PACK_N, unit="bit", note=path)

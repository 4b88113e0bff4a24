"""Toeplitz hash (privacy amplification) throughput at n_in = 10^6, 10^7, 10^8, n_out = n_in / 4.

Throughput counts input bits. Each size is its own group; the baseline is a numpy
FFT convolution mod 2 doing the same job on packed words (unpack to 0/1 float64,
rfft, multiply, irfft, round, mod 2, pack). It is exact at 10^6 and 10^7 (counts
< 2^24, rounding margin asserted); at 10^8 it would need > 4 GiB and is not
provably exact, so that group has no baseline. Targets from issue 2: >= 300 Mb/s
at 10^6 (FPGA anchor 116 Mb/s) and >= 110 Mb/s at 10^8 (CPU FFT anchor 71 Mb/s).
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.common import record
from postproc_c import toeplitz_hash

TARGETS = {10**6: 300e6, 10**8: 110e6}


def _inputs(n_in: int):
    n_out = n_in // 4
    rng = np.random.default_rng(n_in)
    key = rng.integers(0, 2**64, (n_in + 63) // 64, dtype=np.uint64, endpoint=False)
    seed = rng.integers(0, 2**64, (n_in + n_out - 1 + 63) // 64, dtype=np.uint64, endpoint=False)
    return key, n_in, seed, n_out


def numpy_fft_toeplitz(key, n_in, seed, n_out):
    """Baseline: the same hash by float FFT convolution mod 2 (exact up to ~10^7 bits)."""
    k = np.unpackbits(key.view(np.uint8), bitorder="little")[:n_in].astype(np.float64)
    s = np.unpackbits(seed.view(np.uint8), bitorder="little")[:n_in + n_out - 1].astype(np.float64)
    size = 1 << (s.size + k.size - 2).bit_length()
    c = np.fft.irfft(np.fft.rfft(s, size) * np.fft.rfft(k, size), size)[n_in - 1: n_in - 1 + n_out]
    bits = (np.rint(c).astype(np.int64) & 1).astype(np.uint8)
    buf = np.zeros(((n_out + 63) // 64) * 8, np.uint8)
    buf[: (n_out + 7) // 8] = np.packbits(bits, bitorder="little")
    return buf.view(np.uint64)


@pytest.mark.parametrize("n_in", [10**6, 10**7, 10**8])
def test_toeplitz_hash(benchmark, n_in):
    benchmark.group = f"toeplitz n_in=1e{len(str(n_in)) - 1}"
    args = _inputs(n_in)
    rounds = {10**6: 30, 10**7: 8, 10**8: 3}[n_in]
    out = benchmark.pedantic(toeplitz_hash, args=args, rounds=rounds, iterations=1, warmup_rounds=1)
    assert out.size == (args[3] + 63) // 64
    record(benchmark, units=n_in, unit="bit", target=TARGETS.get(n_in),
           note="auto: additive FFT over GF(2^64)")


@pytest.mark.parametrize("n_in", [10**6])
def test_toeplitz_hash_karatsuba(benchmark, n_in):
    benchmark.group = f"toeplitz n_in=1e{len(str(n_in)) - 1}"
    args = _inputs(n_in)
    benchmark.pedantic(toeplitz_hash, args=args, kwargs={"method": "karatsuba"}, rounds=5, iterations=1)
    record(benchmark, units=n_in, unit="bit", note="PCLMUL Karatsuba only (for the method choice)")


@pytest.mark.parametrize("n_in", [10**6, 10**7])
def test_toeplitz_numpy_fft_baseline(benchmark, n_in):
    benchmark.group = f"toeplitz n_in=1e{len(str(n_in)) - 1}"
    args = _inputs(n_in)
    out = benchmark.pedantic(numpy_fft_toeplitz, args=args, rounds={10**6: 5, 10**7: 2}[n_in], iterations=1)
    assert np.array_equal(out, toeplitz_hash(*args))  # the baseline does the same job
    record(benchmark, units=n_in, unit="bit", baseline=True, note="numpy rfft convolution mod 2")

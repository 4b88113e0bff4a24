"""Toeplitz hashing for privacy amplification: ``toeplitz_hash``.

What it is for: both nodes compress the reconciled key ``k`` (``n_in`` bits) to
``n_out`` secret bits with the same random Toeplitz matrix, given by a public
seed ``s`` of ``n_in + n_out - 1`` bits that Alice sends. Exactly:

    out[i] = XOR_j ( s[i - j + n_in - 1] & k[j] ),   0 <= i < n_out,

i.e. bits ``n_in - 1 .. n_in + n_out - 2`` of the GF(2) polynomial product
``s * k``. The result is bit-identical to this definition at every size (the
tests check it against a numpy reference, and spot-check 10^8-bit inputs bit by
bit). Requires ``1 <= n_out <= n_in``: privacy amplification only compresses.
This module must not log, keep or copy key material beyond the C call's own
working buffers, and knows nothing of where seeds come from.

Why these methods (measured on this project's 2-core AMD EPYC (Zen 4), one core,
single-threaded, CPU time of the C call; ``python -m bench -k toeplitz`` gives
the wall-clock figures):

* below ``threshold()`` = 20000 input bits: carry-less Karatsuba over 64-bit
  words (PCLMULQDQ 64x64 base case, schoolbook up to 12 words). No set-up cost;
  measured faster than the FFT up to 16384 bits (32 us vs 35 us), slower from
  20000 (45 us vs 43 us).
* above: an additive FFT over GF(2^64) (Lin-Chung-Han novel polynomial basis
  with a Cantor basis, as in Chen et al., "Multiplying boolean polynomials with
  Frobenius partitions in additive FFT"), on 32-bit pieces of the polynomials,
  whose products GF(2^64) holds without reduction. O(N log N) field products
  for N ~ (|s| + |k|) / 32 points against N^1.58 for Karatsuba: Karatsuba
  measured 47 Mb/s at n_in = 10^6 (and the issue's < 3 Mb/s at 10^8); the FFT
  about 700 Mb/s at 10^6, 450-530 Mb/s at 10^7 and 420 Mb/s at 10^8
  (n_out = n_in / 4; CPU time, best of several runs).
  Only the middle n_out bits are needed: the key is cut into b blocks whose
  products are summed in the transform domain (b = 3 at 10^6 gives 2^15-point
  transforms instead of 2^17: 1.4 ms against 2.8 ms). The rest of the speed came
  from measured steps: AVX-512 VPCLMULQDQ butterflies (8 products per
  instruction pair, lowest three levels fused in registers), XOR-only basis
  conversions that skip zero tails and do their lowest three levels as one
  16x16 0/1 matrix, a constant Cantor-basis table (solving for it per call cost
  270 us), and huge pages for the work arrays (page faults were a quarter of
  the time at 10^8).
* not a complex floating-point FFT: it needs one point per bit (32x more points
  than the additive FFT), is not provably exact at 10^8, and would need > 4 GiB
  there; the numpy version of it is the benchmark baseline (2-3 Mb/s). The
  additive FFT is exact by construction and needs 8 bytes per point, 3 arrays:
  about 100 MB at n_in = 10^8, n_out = n_in / 4.

CPU dispatch at run time: AVX-512 VPCLMULQDQ kernels when the CPU has them and
the AVX2 feature bit is enabled, else PCLMULQDQ (SSE) when ``qpp_cpu_features()``
reports it, else portable C; all three give the same bits (the tests compare
them, forcing paths with ``qpp_cpu_disable``). ``kernel()`` says which runs.
The C code has no global state and the call releases the GIL.
"""

from __future__ import annotations

import numpy as np

from ._binding import as_words, check, lib, ptr, words_for
from .selftest import kat

METHODS = {"auto": lib.QPP_TOEPLITZ_AUTO, "karatsuba": lib.QPP_TOEPLITZ_KARATSUBA,
           "afft": lib.QPP_TOEPLITZ_AFFT}
MAX_BITS = int(lib.QPP_TOEPLITZ_MAX_BITS)


def threshold() -> int:
    """Input length (bits) from which ``method="auto"`` uses the additive FFT."""
    return int(lib.qpp_toeplitz_afft_threshold())


def kernel() -> str:
    """The GF(2^64) multiply kernel the FFT method uses now: "vpclmul512", "pclmul" or "portable"."""
    return {lib.QPP_TOEPLITZ_PORTABLE: "portable", lib.QPP_TOEPLITZ_PCLMUL: "pclmul",
            lib.QPP_TOEPLITZ_VPCLMUL512: "vpclmul512"}[lib.qpp_toeplitz_kernel()]


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    return int(value)


def toeplitz_hash(key_words: np.ndarray, n_in: int, seed_words: np.ndarray, n_out: int,
                  *, method: str = "auto") -> np.ndarray:
    """Hash ``n_in`` key bits to ``n_out`` bits with the Toeplitz matrix of ``seed_words``.

    ``key_words``: uint64, ``words_for(n_in)`` words, bits packed LSB first;
    ``seed_words``: uint64, ``words_for(n_in + n_out - 1)`` words. Bits past the
    lengths in the last words are ignored. Returns a new uint64 array of
    ``words_for(n_out)`` words with unused high bits zero. ``method`` forces
    ``"karatsuba"`` or ``"afft"`` (for tests); ``"auto"`` chooses by size.
    """
    n_in = _count(n_in, "n_in")
    n_out = _count(n_out, "n_out")
    if not 1 <= n_in <= MAX_BITS:
        raise ValueError(f"n_in: must be in 1..{MAX_BITS}, got {n_in}")
    if not 1 <= n_out <= n_in:
        raise ValueError(f"n_out: must be in 1..n_in ({n_in}), got {n_out}")
    if method not in METHODS:
        raise ValueError(f"method: must be one of {sorted(METHODS)}, got {method!r}")
    key = as_words(key_words, "key_words")
    seed = as_words(seed_words, "seed_words")
    if key.size != words_for(n_in):
        raise ValueError(f"key_words: expected {words_for(n_in)} words for n_in={n_in}, got {key.size}")
    n_seed = n_in + n_out - 1
    if seed.size != words_for(n_seed):
        raise ValueError(f"seed_words: expected {words_for(n_seed)} words for n_in + n_out - 1 = "
                         f"{n_seed} bits, got {seed.size}")
    out = np.zeros(words_for(n_out), dtype=np.uint64)
    check("qpp_toeplitz_hash", lib.qpp_toeplitz_hash_method(
        ptr("uint64_t *", key), n_in, ptr("uint64_t *", seed), n_out, ptr("uint64_t *", out),
        METHODS[method]))
    return out


# Known answer (selftest): n_in = 200, n_out = 150; key word i = (i + 1) * 0x9E3779B97F4A7C15 and
# seed word i = (i + 7) * 0xC2B2AE3D27D4EB4F (mod 2^64); the expected words were computed with
# the numpy reference of tests/test_toeplitz.py (np.convolve mod 2), which re-checks them.
KAT_N_IN, KAT_N_OUT = 200, 150
KAT_EXPECTED = (0xe53764959682a258, 0x546563b303a9fd80, 0x1e4659)


def kat_inputs() -> tuple[np.ndarray, np.ndarray]:
    """The selftest's key and seed words."""
    with np.errstate(over="ignore"):
        key = (np.arange(1, 5, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        seed = (np.arange(7, 13, dtype=np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F))
    return key, seed


@kat("toeplitz_hash")
def _kat() -> bool:
    key, seed = kat_inputs()
    expected = np.array(KAT_EXPECTED, dtype=np.uint64)
    return all(np.array_equal(toeplitz_hash(key, KAT_N_IN, seed, KAT_N_OUT, method=m), expected)
               for m in ("karatsuba", "afft"))


__all__ = ["MAX_BITS", "kernel", "threshold", "toeplitz_hash"]

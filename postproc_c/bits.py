"""Packing 0/1 bit arrays into LSB-first 64-bit words and back.

Every part of the core takes keys packed 64 bits to a ``uint64`` word, least
significant bit first (bit ``i`` is bit ``i % 64`` of word ``i // 64``); callers
that hold one ``uint8`` per bit (the sifting results, Alice's frame pattern
before ``postproc_c.pattern`` packs it, reconciliation sides given byte keys,
tests) convert with these two functions. (The link engine itself keeps a
block's key packed from sifting on: ``postproc_c.blockbits``.) They must not
guess: a byte other than 0/1 is an error (a sign of a bug upstream), never
silently masked.

Why C rather than ``np.packbits``: numpy has no 64-bit LSB-first word layout
(``packbits(bitorder="little").view(uint64)`` only works on little-endian
hosts and does not validate values), and validating with numpy costs an extra
pass. The C code converts 8 bytes per multiply (portable) or 32 bytes per
instruction (AVX2), validating in the same pass.
"""

from __future__ import annotations

import numpy as np

from ._binding import as_array, as_words, check, ffi, lib, ptr, words_for
from .selftest import kat


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack a 1-d ``uint8`` array of 0/1 values into ``ceil(n/64)`` uint64 words.

    The unused high bits of the last word are zero. Raises ``TypeError`` /
    ``ValueError`` naming ``bits`` for a wrong type, dtype, shape, layout, or a
    value other than 0/1 (with its index).
    """
    bits = as_array(bits, "bits", np.uint8)
    n = bits.size
    out = np.empty(words_for(n), dtype=np.uint64)
    bad = ffi.new("size_t *")
    st = lib.qpp_pack_bits(ptr("uint8_t *", bits), n, ptr("uint64_t *", out), out.size, bad)
    if st == lib.QPP_ERR_VALUE:
        i = int(bad[0])
        raise ValueError(f"bits: values must be 0 or 1, got {int(bits[i])} at index {i}")
    check("qpp_pack_bits", st)
    return out


def unpack_bits(words: np.ndarray, n: int) -> np.ndarray:
    """Unpack the first ``n`` bits of ``words`` (exactly ``ceil(n/64)`` uint64) into uint8 0/1."""
    words = as_words(words, "words")
    n = _count(n, "n")
    if words.size != words_for(n):
        raise ValueError(f"words: expected {words_for(n)} words for n={n} bits, got {words.size}")
    out = np.empty(n, dtype=np.uint8)
    check("qpp_unpack_bits", lib.qpp_unpack_bits(ptr("uint64_t *", words), words.size, n,
                                                 ptr("uint8_t *", out)))
    return out


def _count(n: object, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise TypeError(f"{name}: expected an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"{name}: must be >= 0, got {n}")
    return int(n)


# Known answer: 70 bits, alternating runs; words computed once with the numpy
# reference in tests/test_bits.py (np.packbits(..., bitorder="little")).
_KAT_BITS = np.array([(i * 7 + i // 5) % 3 == 0 for i in range(70)], dtype=np.uint8)
_KAT_WORDS = (0x94A5294A5294A529, 0x12)


@kat("pack_bits")
def _kat_pack_bits() -> bool:
    w = pack_bits(_KAT_BITS)
    return (tuple(int(x) for x in w) == _KAT_WORDS
            and np.array_equal(unpack_bits(w, _KAT_BITS.size), _KAT_BITS))

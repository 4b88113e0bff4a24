"""Polynomial hashing over GF(2^64): error verification and Wegman-Carter MACs.

``poly_hash(words, n, key)`` hashes an ``n``-bit packed key; ``poly_hash_bytes
(data, key)`` hashes a byte string and equals ``poly_hash`` of its bits (byte
``i`` = bits ``8i .. 8i+7``, LSB first, ``n = 8 * len(data)``), so one
definition serves both uses.

Definition (exact; ``src/polyhash.c`` has the derivation). Field GF(2^64) =
GF(2)[x] / (x^64 + x^4 + x^3 + x + 1), an element being a uint64 whose bit j is
the coefficient of x^j. The message becomes blocks m_0 .. m_{L-1} (L =
ceil(n/64) packed words, the unused high bits of the last word taken as 0) and
one final length block m_L = n; the tag is Horner's rule
``h = 0; for each block m: h = (h + m) * key``, i.e.
``tag = sum_j m_j key^(L+1-j)``.

Collision bound: two different messages of at most n bits (any lengths) give
different polynomials of degree <= L + 1 in the key (the length block makes the
key^1 coefficients differ when the lengths do), so for a key drawn uniformly
from all 2^64 values ``Pr[tag(M) == tag(M')] <= (ceil(n/64) + 1) / 2^64``,
about n/64 * 2^-64 (8.5e-14 for a 10^8-bit block). The hash is
epsilon-almost-XOR-universal with the same epsilon (the difference of two tags
is the same polynomial plus a constant), which is what Wegman-Carter needs:
``mac = poly_hash_bytes(msg, k) XOR otp`` with a fresh one-time pad ``otp``
per message and ``k`` reusable, forgery probability <= (ceil(8 len/64)+1) 2^-64.

Key: any uint64 is accepted, including 0, because the bound above is over a
uniform key on all 2^64 values (0 is one of them and counted in it). The key
must be secret and uniformly random; it must not be chosen after the message.

Why this method: one carry-less multiply per 64 bits with a 4-way aggregated
Horner on PCLMULQDQ runs at memory speed, and the polynomial hash needs only a
64-bit key per use (a Toeplitz or multilinear hash would need key bits
proportional to the message), which matters when the key comes from the QKD
key pool. This module does not draw keys or one-time pads, and never logs
messages, keys or tags.
"""

from __future__ import annotations

import numpy as np

from ._binding import as_words, check, ffi, lib, ptr, words_for
from .selftest import kat

TAG_BYTES: int = lib.QPP_POLY_HASH_TAG_BYTES
"""Size of a tag in bytes (one GF(2^64) element)."""

REDUCTION_POLY: int = (1 << 64) | lib.QPP_POLY_HASH_POLY_LOW
"""The field's reduction polynomial x^64 + x^4 + x^3 + x + 1 as an integer."""

_U64_MAX = (1 << 64) - 1


def _key(key: object) -> int:
    if isinstance(key, bool) or not isinstance(key, int | np.integer):
        raise TypeError(f"key: expected an int in [0, 2**64), got {type(key).__name__}")
    key = int(key)
    if not 0 <= key <= _U64_MAX:
        raise ValueError("key: must be in [0, 2**64)")   # the value is secret: not echoed
    return key


def poly_hash(bits_words: np.ndarray, n: int, key: int) -> int:
    """Tag (an int in [0, 2**64)) of the first ``n`` bits of ``bits_words`` under ``key``.

    ``bits_words`` is a 1-d C-contiguous uint64 array of exactly ``ceil(n/64)``
    words; unused high bits of the last word are ignored. Collision probability
    for two different messages of at most ``n`` bits: <= (ceil(n/64) + 1) / 2**64.
    """
    words = as_words(bits_words, "bits_words")
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise TypeError(f"n: expected an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n: must be >= 0, got {n}")
    n = int(n)
    if words.size != words_for(n):
        raise ValueError(f"bits_words: expected {words_for(n)} words for n={n} bits, got {words.size}")
    k = _key(key)
    tag = ffi.new("uint64_t *")
    check("qpp_poly_hash", lib.qpp_poly_hash(ptr("uint64_t *", words), words.size, n, k, tag))
    return int(tag[0])


def poly_hash_bytes(data: bytes | bytearray | memoryview | np.ndarray, key: int) -> int:
    """Tag of a byte string: ``poly_hash`` of its bits with ``n = 8 * len(data)``.

    ``data`` is any C-contiguous bytes-like object (bytes, bytearray,
    memoryview, a numpy array is read as its raw bytes). For a Wegman-Carter
    MAC, XOR the tag with a fresh 64-bit one-time pad per message.
    """
    if isinstance(data, str) or not _is_buffer(data):
        raise TypeError(f"data: expected a bytes-like object, got {type(data).__name__}")
    mv = memoryview(data)
    if not mv.c_contiguous:
        raise ValueError("data: buffer must be C-contiguous")
    k = _key(key)
    buf = ffi.from_buffer("uint8_t[]", data) if mv.nbytes else ffi.NULL
    tag = ffi.new("uint64_t *")
    check("qpp_poly_hash_bytes", lib.qpp_poly_hash_bytes(buf, mv.nbytes, k, tag))
    return int(tag[0])


def _in8(buf: bytearray | memoryview | np.ndarray, name: str):
    """An 8-byte secret buffer for C, passed as is (``ffi.from_buffer``: no copy to wipe)."""
    if isinstance(buf, (bytes, str)) or not _is_buffer(buf):
        raise TypeError(f"{name}: expected a bytearray, memoryview or numpy buffer (a wipeable one), "
                        f"got {type(buf).__name__}")
    mv = memoryview(buf)
    if mv.nbytes != TAG_BYTES or not mv.c_contiguous:
        raise ValueError(f"{name}: expected {TAG_BYTES} contiguous bytes, got {mv.nbytes}")
    return ffi.from_buffer("uint8_t[]", buf)


def _data(data) -> tuple:
    if isinstance(data, str) or not _is_buffer(data):
        raise TypeError(f"data: expected a bytes-like object, got {type(data).__name__}")
    mv = memoryview(data)
    if not mv.c_contiguous:
        raise ValueError("data: buffer must be C-contiguous")
    return (ffi.from_buffer("uint8_t[]", data) if mv.nbytes else ffi.NULL), mv.nbytes


def wc_tag(data: bytes | bytearray | memoryview | np.ndarray, key8: bytearray | memoryview,
           pad8: bytearray | memoryview, out8: bytearray | memoryview) -> None:
    """Write the Wegman-Carter tag ``poly_hash_bytes(data, key) XOR pad`` into ``out8``.

    ``key8`` and ``pad8`` are 8-byte buffers holding the key and the one-time pad little-endian
    (a ``bytearray`` or a view into one, so the caller can wipe them); neither becomes a Python
    int, nor does the hash value (``qpp_wc_tag`` wipes its copies). ``out8``: 8 writable bytes
    (the tag is public once sent: it is the hash hidden by the one-time pad)."""
    buf, n = _data(data)
    k, p = _in8(key8, "key8"), _in8(pad8, "pad8")
    mv = memoryview(out8)
    if mv.readonly or mv.nbytes != TAG_BYTES:
        raise ValueError(f"out8: expected {TAG_BYTES} writable bytes")
    out = ffi.from_buffer("uint8_t[]", out8, require_writable=True)
    check("qpp_wc_tag", lib.qpp_wc_tag(buf, n, k, p, out))


def wc_verify(data: bytes | bytearray | memoryview | np.ndarray, key8: bytearray | memoryview,
              pad8: bytearray | memoryview, tag8: bytes | bytearray | memoryview) -> bool:
    """Whether ``tag8`` is the Wegman-Carter tag of ``data`` (``wc_tag``), compared in constant
    time in C: the expected tag is never returned (``qpp_wc_verify`` wipes it)."""
    buf, n = _data(data)
    k, p = _in8(key8, "key8"), _in8(pad8, "pad8")
    mv = memoryview(tag8)
    if mv.nbytes != TAG_BYTES:
        return False
    return check("qpp_wc_verify", lib.qpp_wc_verify(buf, n, k, p, ffi.from_buffer("uint8_t[]", tag8))) == 1


def _is_buffer(obj: object) -> bool:
    try:
        memoryview(obj)  # type: ignore[arg-type]
    except TypeError:
        return False
    return True


# Known answers, computed once with the galois GF(2^64) reference in
# tests/test_polyhash.py (Horner over the blocks and the length block).
_KAT_KEY = 0x0123456789ABCDEF
_KAT_WORDS = np.array([0xFEDCBA9876543210, 0x0F1E2D3C4B5A6978, 0xFFFFFFFFFFFFFFFF, 0x8000000000000001,
                       0x1111111111111111, 0xDEADBEEFCAFEF00D], dtype=np.uint64)
_KAT_N = 6 * 64 - 13
_KAT_TAG = 0x439916602AD9D4DC
_KAT_BYTES = b"qkd-link poly_hash known answer, 45 bytes lon"
_KAT_BYTES_TAG = 0x9B6F5193DF81C2EE


@kat("poly_hash")
def _kat_poly_hash() -> bool:
    return (poly_hash(_KAT_WORDS, _KAT_N, _KAT_KEY) == _KAT_TAG
            and poly_hash_bytes(_KAT_BYTES, _KAT_KEY) == _KAT_BYTES_TAG)

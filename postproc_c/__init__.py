"""The C99 post-processing core (sifting, hashing, privacy amplification,
reconciliation) and its numpy-facing Python API.

Bits are packed 64 to a ``uint64``, least significant bit first: bit ``i`` of a
key is bit ``i % 64`` of word ``i // 64``. Functions take and return numpy
arrays and raise ``ValueError``/``TypeError`` naming the bad argument, or
``postproc_c.Error`` for a failing C call. Calls release the GIL (cffi API mode),
so threads can run the core in parallel. This package knows nothing of sockets
or instruments.
"""

from . import (
    cascade,  # noqa: F401  (registers "cascade", "cascade-waves" and "cascade-original")
    ldpc,  # noqa: F401  (registers "ldpc" and "ldpc-blind")
)
from ._binding import Error, ffi, lib
from ._version import __version__
from .bits import pack_bits, unpack_bits
from .cascade import CascadeSide
from .hashing import poly_hash, poly_hash_bytes, wc_tag, wc_verify
from .ldpc import LdpcCode, LdpcSide
from .pattern import PackedPattern, pack_pattern
from .reconcile import ReconcileResult, make_side, methods, reconcile_in_memory
from .selftest import SelfTestError, selftest
from .sifting import (
    AliceSifted,
    BobAnnouncement,
    BobSifted,
    ErrorCounts,
    SiftResult,
    alice_sift,
    bob_announce,
    bob_sift,
    error_counts,
    frame_counts,
    sift,
)
from .slotting import GapCounter, SlotClose, slot_close, slot_gaps
from .toeplitz import toeplitz_hash
from .wipe import memzero


def cpu_features() -> list[str]:
    """Names of the CPU fast paths the core selected on this machine."""
    mask = lib.qpp_cpu_features()
    names = {lib.QPP_CPU_PCLMUL: "pclmul", lib.QPP_CPU_AVX2: "avx2", lib.QPP_CPU_POPCNT: "popcnt",
             lib.QPP_CPU_AVX512BW: "avx512bw", lib.QPP_CPU_BMI2: "bmi2"}
    return [n for bit, n in names.items() if mask & bit]


__all__ = [
    "AliceSifted", "BobAnnouncement", "BobSifted", "CascadeSide", "ErrorCounts", "LdpcCode", "LdpcSide",
    "SiftResult", "alice_sift", "bob_announce", "bob_sift", "error_counts", "frame_counts", "sift",
    "Error", "ReconcileResult", "SelfTestError", "__version__", "cpu_features", "ffi", "lib",
    "make_side", "memzero", "methods", "pack_bits", "poly_hash", "poly_hash_bytes", "reconcile_in_memory",
    "wc_tag", "wc_verify",
    "selftest", "toeplitz_hash", "unpack_bits", "PackedPattern", "pack_pattern",
    "GapCounter", "SlotClose", "slot_close", "slot_gaps",
]

"""Alice's frame pattern held packed (four bit planes), read at Bob's announced slots only.

What it is for: Alice keeps every frame's pattern (basis, bit, intensity class
per slot) until Bob announces that frame's detections. Held as one byte per
slot and field, a 2^20-slot frame is 3 MiB, and sifting it the plain way
touches whole frames (class counts, wipes, copies) when only the ~4 % of slots
with a detection matter. Packed, a frame is 512 KiB; ``gather`` reads the
pattern at the announced slots (one C pass over the events), ``counts`` gives
the slots sent per (basis, intensity) from popcounts of the planes, and the
link engine sifts the gathered events with ``postproc_c.alice_sift``.

Planes (packed LSB first, like every packed array of the core): ``basis``
(0 = Z, 1 = X), ``bit``, and the intensity class as ``int_lo`` | ``int_hi`` << 1.

What it must not do: log pattern bits (they are Alice's secret until sifted).
``wipe()`` zeroes the planes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._binding import as_array, check, ffi, lib, ptr, words_for
from .bits import pack_bits
from .sifting import raise_slot_error


@dataclass
class PackedPattern:
    """One frame's pattern as four packed bit planes; ``counts`` (2, 3) slots per class."""

    n_slots: int
    basis: np.ndarray
    bit: np.ndarray
    int_lo: np.ndarray
    int_hi: np.ndarray
    counts: np.ndarray | None = None

    def copy(self) -> PackedPattern:
        return PackedPattern(self.n_slots, self.basis.copy(), self.bit.copy(), self.int_lo.copy(),
                             self.int_hi.copy(), None if self.counts is None else self.counts.copy())

    def wipe(self) -> None:
        for a in (self.basis, self.bit, self.int_lo, self.int_hi):
            a[:] = 0

    def unpack(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Back to one byte per slot (basis, bit, intensity), e.g. for a pattern generator."""
        from .bits import unpack_bits

        n = self.n_slots
        inten = unpack_bits(self.int_lo, n)
        inten |= unpack_bits(self.int_hi, n) << 1
        return unpack_bits(self.basis, n), unpack_bits(self.bit, n), inten


def pack_pattern(basis: np.ndarray, bit: np.ndarray, intensity: np.ndarray) -> PackedPattern:
    """Pack a frame pattern (uint8 per slot: basis 0/1, bit 0/1, intensity 0..2) and count its classes."""
    basis = as_array(basis, "basis", np.uint8)
    bit = as_array(bit, "bit", np.uint8)
    intensity = as_array(intensity, "intensity", np.uint8)
    n = basis.size
    if bit.size != n or intensity.size != n:
        raise ValueError(f"bit/intensity: lengths {bit.size}, {intensity.size} differ from basis {n}")
    if n and int(intensity.max()) > 2:
        i = int(np.argmax(intensity > 2))
        raise ValueError(f"intensity: value {int(intensity[i])} at slot {i} (must be 0, 1 or 2)")
    pp = PackedPattern(n, pack_bits(basis), pack_bits(bit), pack_bits(intensity & 1),
                       pack_bits(intensity >> 1))
    pp.counts = counts(pp)
    return pp


def counts(pp: PackedPattern) -> np.ndarray:
    """Slots sent per (basis, intensity): uint64 (2, 3), as ``postproc_c.frame_counts``."""
    _check(pp)
    out = np.zeros((2, 3), np.uint64)
    st = lib.qpp_pattern_counts(ptr("uint64_t *", pp.basis), ptr("uint64_t *", pp.int_lo),
                                ptr("uint64_t *", pp.int_hi), pp.n_slots, ptr("uint64_t *", out))
    if st == lib.QPP_ERR_VALUE:
        raise ValueError("pattern: an intensity class 3 (both planes set)")
    check("qpp_pattern_counts", st)
    return out


def gather(pp: PackedPattern, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pattern at ``slots`` (uint64): (basis, bit, intensity), one uint8 per slot."""
    _check(pp)
    slots = as_array(slots, "slots", np.uint64)
    n = slots.size
    ob, obit, oi = (np.empty(n, np.uint8) for _ in range(3))
    bad = ffi.new("size_t *")
    st = lib.qpp_pattern_gather(ptr("uint64_t *", pp.basis), ptr("uint64_t *", pp.bit),
                                ptr("uint64_t *", pp.int_lo), ptr("uint64_t *", pp.int_hi), pp.n_slots,
                                ptr("uint64_t *", slots), n, ptr("uint8_t *", ob), ptr("uint8_t *", obit),
                                ptr("uint8_t *", oi), bad)
    if st == lib.QPP_ERR_RANGE:
        i = int(bad[0])
        raise ValueError(f"slots: {int(slots[i])} at index {i} is outside the frame of {pp.n_slots} slots")
    if st == lib.QPP_ERR_VALUE:
        raise ValueError(f"pattern: intensity class 3 at slot {int(slots[int(bad[0])])}")
    check("qpp_pattern_gather", st)
    return ob, obit, oi


def sift_alice(pp: PackedPattern, bob_slots: np.ndarray, bob_bases: np.ndarray):
    """Alice's sifting step straight from the packed pattern: ``postproc_c.alice_sift`` with
    ``bob_slots`` as uint32 (frames of at most 2^32 slots), returning the same ``AliceSifted``
    (``match`` as uint8 0/1). Same errors, naming the argument and index."""
    from .sifting import AliceSifted

    _check(pp)
    if pp.n_slots > 1 << 32:
        raise ValueError(f"pattern: {pp.n_slots} slots do not fit 32-bit slot numbers")
    bob_slots = as_array(bob_slots, "bob_slots", np.uint32)
    bob_bases = as_array(bob_bases, "bob_bases", np.uint8)
    n = bob_slots.size
    if bob_bases.size != n:
        raise ValueError(f"bob_bases: {bob_bases.size} entries for {n} slots")
    match = np.empty(n, np.uint8)
    ob, obit, oi = (np.empty(n, np.uint8) for _ in range(3))
    det = np.zeros((2, 3), np.uint64)
    sif = np.zeros((2, 3), np.uint64)
    k = ffi.new("size_t *")
    bad = ffi.new("size_t *")
    st = lib.qpp_pattern_sift_alice(
        ptr("uint64_t *", pp.basis), ptr("uint64_t *", pp.bit), ptr("uint64_t *", pp.int_lo),
        ptr("uint64_t *", pp.int_hi), pp.n_slots, ptr("uint32_t *", bob_slots), ptr("uint8_t *", bob_bases),
        n, ptr("uint8_t *", match), ptr("uint8_t *", ob), ptr("uint8_t *", obit), ptr("uint8_t *", oi), k,
        ptr("uint64_t *", det), ptr("uint64_t *", sif), bad)
    if st < 0:
        i = int(bad[0])
        raise_slot_error(st, "bob_slots", bob_slots, i, pp.n_slots)
        if st == lib.QPP_ERR_VALUE:
            if bob_bases[i] > 1:
                raise ValueError(f"bob_bases: value {int(bob_bases[i])} at index {i} (must be 0 or 1)")
            raise ValueError(f"pattern: intensity class 3 at slot {int(bob_slots[i])}")
        check("qpp_pattern_sift_alice", st)
    n_s = int(k[0])
    return AliceSifted(match=match, announced_slots=bob_slots, bases=ob[:n_s], bits=obit[:n_s],
                       intensities=oi[:n_s], detections=det, sifted=sif)


def slot_gaps16(slots: np.ndarray, counts, out: np.ndarray | None = None) -> np.ndarray | None:
    """SIFT_ANNOUNCE's slots on the wire: ``slots`` (uint64) of frames laid end to end, frame
    ``f`` holding ``counts[f]`` strictly increasing slots, as uint16 gaps (a frame's first slot
    as it is); None when some gap or first slot does not fit 16 bits (send the slots).
    ``out``: a uint16 array of ``slots.size`` to write the gaps into (e.g. a slice of a
    message's buffer), else a new one."""
    slots = as_array(slots, "slots", np.uint64)
    counts = np.ascontiguousarray(counts, dtype=np.uint64)
    if int(counts.sum()) != slots.size:
        raise ValueError(f"counts: add up to {int(counts.sum())}, {slots.size} slots given")
    if out is None:
        gaps = np.empty(slots.size, np.uint16)
    else:
        gaps = as_array(out, "out", np.uint16)
        if gaps.size != slots.size:
            raise ValueError(f"out: {gaps.size} entries for {slots.size} slots")
    st = lib.qpp_slot_gaps16(ptr("uint64_t *", slots), slots.size, ptr("uint64_t *", counts), counts.size,
                             ptr("uint16_t *", gaps), ffi.NULL)
    if st == lib.QPP_ERR_RANGE:
        return None
    check("qpp_slot_gaps16", st)
    return gaps


def slots_from_gaps16(gaps: np.ndarray) -> np.ndarray:
    """One frame's slots (uint32) from its ``slot_gaps16`` gaps; ValueError naming the index
    when they add up past 2^32."""
    gaps = as_array(gaps, "gaps", np.uint16)
    out = np.empty(gaps.size, np.uint32)
    bad = ffi.new("size_t *")
    st = lib.qpp_slots_from_gaps16(ptr("uint16_t *", gaps), gaps.size, ptr("uint32_t *", out), bad)
    if st == lib.QPP_ERR_RANGE:
        raise ValueError(f"gaps: add up past 2^32 at index {int(bad[0])}")
    check("qpp_slots_from_gaps16", st)
    return out


def split_by_basis(basis: np.ndarray, bits: np.ndarray, intensity: np.ndarray, n_z: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``bits[basis == 0], intensity[basis == 0], bits[basis != 0], intensity[basis != 0]`` in
    one C pass (uint8 arrays of one length). ``n_z``, the Z count when known, sizes the
    outputs exactly (ValueError if the bases hold more Z or more X than it says)."""
    basis = as_array(basis, "basis", np.uint8)
    bits = as_array(bits, "bits", np.uint8)
    intensity = as_array(intensity, "intensity", np.uint8)
    n = basis.size
    if bits.size != n or intensity.size != n:
        raise ValueError(f"bits, intensity: {bits.size} and {intensity.size} entries for {n} bases")
    if n_z is not None and not 0 <= n_z <= n:
        raise ValueError(f"n_z: {n_z} outside 0..{n}")
    nz_cap, nx_cap = (n, n) if n_z is None else (n_z, n - n_z)
    zb, zi = np.empty(nz_cap, np.uint8), np.empty(nz_cap, np.uint8)
    xb, xi = np.empty(nx_cap, np.uint8), np.empty(nx_cap, np.uint8)
    cz, cx = ffi.new("size_t *"), ffi.new("size_t *")
    st = lib.qpp_split_by_basis(ptr("uint8_t *", basis), ptr("uint8_t *", bits),
                                ptr("uint8_t *", intensity), n,
                                ptr("uint8_t *", zb), ptr("uint8_t *", zi), nz_cap,
                                ptr("uint8_t *", xb), ptr("uint8_t *", xi), nx_cap, cz, cx)
    if st == lib.QPP_ERR_LENGTH:
        zb[:] = 0
        xb[:] = 0
        raise ValueError(f"n_z: {n_z} given, the bases disagree")
    check("qpp_split_by_basis", st)
    if n_z is not None and cz[0] != n_z:
        zb[:] = 0
        xb[:] = 0
        raise ValueError(f"n_z: {n_z} given, {cz[0]} Z bases in basis")
    return zb[:cz[0]], zi[:cz[0]], xb[:cx[0]], xi[:cx[0]]


def _check(pp: PackedPattern) -> None:
    nw = words_for(pp.n_slots)
    for name in ("basis", "bit", "int_lo", "int_hi"):
        a = getattr(pp, name)
        if not isinstance(a, np.ndarray) or a.dtype != np.uint64 or a.ndim != 1 or a.size != nw \
                or not a.flags.c_contiguous:
            raise ValueError(f"pattern.{name}: expected {nw} contiguous uint64 words")


__all__ = ["PackedPattern", "counts", "gather", "pack_pattern", "sift_alice"]

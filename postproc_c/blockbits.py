"""A block's sifted events kept packed (``src/blockbits.c``): Z key bits and X test bits with
their intensity classes as bit planes, appended one frame at a time.

What it is for: the link engine (``link.node``) appends each frame's sifted events (one byte
per event, as sifting returns them) to a ``BlockBits``; when the block closes its Z plane is
the key that Cascade, verification and privacy amplification read as is (64 bits per word),
and the class statistics the finite-key bound needs (events and errors per intensity class)
are popcounts over the planes. Why: keeping bytes per event, concatenating them per block,
splitting them by basis and packing the key again cost three whole-block copies (~30 MB of
fresh memory per 2^22-bit block) and a pack per consumer; the planes are 1/8 of that and
written once.

What it must not do: keep key bits anywhere but the planes it owns (``wipe`` zeroes the
Z and X bit planes; the intensity planes are public: Alice announces the classes), or log them.
"""

from __future__ import annotations

import numpy as np

from ._binding import as_array, as_words, check, ffi, lib, ptr, words_for
from .pattern import _check as _check_pattern
from .sifting import raise_slot_error
from .wipe import memzero

_U64P = "uint64_t *"


def _p64(a: np.ndarray):
    return ffi.cast(_U64P, ffi.from_buffer(a))

N_CLASSES = 3


class BlockBits:
    """Six bit planes of one block: ``z`` / ``x`` bits and their intensity classes as two planes
    each, lo and hi (class = lo | hi << 1; ``z_classes()`` / ``x_classes()`` return (lo, hi)).
    ``z_cap``/``x_cap``: initial room in bits; a
    plane that fills up is moved to one twice as large (the old one wiped)."""

    def __init__(self, z_cap: int = 1 << 16, x_cap: int = 1 << 14) -> None:
        for name, v in (("z_cap", z_cap), ("x_cap", x_cap)):
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {v!r}")
        self.n_z = 0
        self.n_x = 0
        # np.empty: the C side writes whole words as they fill and zeroes the bits above the
        # count in the last one; words past the count are never read (no zeroing of fresh memory)
        self._z = [np.empty(words_for(max(int(z_cap), 64)), np.uint64) for _ in range(3)]
        self._x = [np.empty(words_for(max(int(x_cap), 64)), np.uint64) for _ in range(3)]
        self._n = ffi.new("size_t[2]")
        self._bad = ffi.new("size_t *")
        self._set_ptrs()

    def _set_ptrs(self) -> None:
        # the planes' C arguments, made once (and again when a plane grows): a frame's call
        # then costs no pointer conversions (the per-call overhead was ~60 us per frame)
        z, x = self._z, self._x
        self._ptrs = (_p64(z[0]), _p64(z[1]), _p64(z[2]), z[0].size * 64, self._n,
                      _p64(x[0]), _p64(x[1]), _p64(x[2]), x[0].size * 64, self._n + 1)

    @staticmethod
    def _grow(planes: list[np.ndarray], n: int, need: int) -> list[np.ndarray]:
        cap = planes[0].size
        while cap * 64 < need:
            cap *= 2
        out = []
        for i, p in enumerate(planes):
            q = np.empty(cap, np.uint64)
            used = words_for(n)
            q[:used] = p[:used]
            if i == 0:
                memzero(p)      # the bit plane is key material
            out.append(q)
        return out

    def _room(self, n: int) -> None:
        """Room for n more events in either basis (at most one regrowth check per frame)."""
        grown = False
        if (self.n_z + n) > self._z[0].size * 64:
            self._z = self._grow(self._z, self.n_z, self.n_z + n)
            grown = True
        if (self.n_x + n) > self._x[0].size * 64:
            self._x = self._grow(self._x, self.n_x, self.n_x + n)
            grown = True
        if grown:
            self._set_ptrs()

    def _c_planes(self, nn) -> tuple:
        """The six planes' C arguments (pointers, capacities, the two counts in ``nn``)."""
        nn[0], nn[1] = self.n_z, self.n_x
        return self._ptrs

    def append(self, basis: np.ndarray, bits: np.ndarray, intensity: np.ndarray) -> int:
        """Append sifted events in order (uint8 each: basis 0/1, bit 0/1, intensity 0..2);
        returns how many went to Z. Bad values raise ValueError naming the array and index."""
        basis = as_array(basis, "basis", np.uint8)
        bits = as_array(bits, "bits", np.uint8)
        intensity = as_array(intensity, "intensity", np.uint8)
        n = basis.size
        if bits.size != n or intensity.size != n:
            raise ValueError(f"bits, intensity: lengths {bits.size}, {intensity.size} differ from "
                             f"basis ({n})")
        if n == 0:
            return 0
        self._room(n)
        nn = self._n
        st = lib.qpp_block_append(
            ptr("uint8_t *", basis), ptr("uint8_t *", bits), ptr("uint8_t *", intensity), n,
            *self._c_planes(nn), self._bad)
        if st == lib.QPP_ERR_VALUE:
            i = int(self._bad[0])
            for name, a, hi in (("basis", basis, 1), ("bits", bits, 1), ("intensity", intensity, 2)):
                if a[i] > hi:
                    raise ValueError(f"{name}: value {int(a[i])} at index {i} (must be 0..{hi})")
        check("qpp_block_append", st)
        added = int(nn[0]) - self.n_z
        self.n_z, self.n_x = int(nn[0]), int(nn[1])
        return added

    # views of the used words (no copies) -------------------------------------------------------
    @property
    def z(self) -> np.ndarray:
        """The Z key bits, ``words_for(n_z)`` words (unused high bits zero)."""
        return self._z[0][:words_for(self.n_z)]

    @property
    def x(self) -> np.ndarray:
        """The X test bits, ``words_for(n_x)`` words (unused high bits zero)."""
        return self._x[0][:words_for(self.n_x)]

    def z_classes(self) -> tuple[np.ndarray, np.ndarray]:
        return self._z[1][:words_for(self.n_z)], self._z[2][:words_for(self.n_z)]

    def x_classes(self) -> tuple[np.ndarray, np.ndarray]:
        return self._x[1][:words_for(self.n_x)], self._x[2][:words_for(self.n_x)]

    def z_counts(self, a: np.ndarray | None = None, b: np.ndarray | None = None):
        """``class_counts`` over the Z planes (with ``a``/``b``: errors between two Z keys)."""
        return class_counts(*self.z_classes(), self.n_z, a, b)

    def x_counts(self, a: np.ndarray | None = None, b: np.ndarray | None = None):
        """``class_counts`` over the X planes (with ``a``/``b``: errors between two X strings)."""
        return class_counts(*self.x_classes(), self.n_x, a, b)

    def wipe(self) -> None:
        """Zero the key and test bit planes (the intensity planes are public)."""
        memzero(self._z[0])
        memzero(self._x[0])


class BitPlane:
    """A growable packed bit string appended to (a SIFT_MATCH message's match mask or
    intensity plane): ``words`` (LSB first), ``n`` bits used; ``as_bytes()`` is the
    little-endian byte view numpy's ``packbits(bitorder="little")`` gives for the same bits."""

    def __init__(self, cap: int = 1 << 16) -> None:
        self.words = np.empty(words_for(max(int(cap), 64)), np.uint64)
        self.n = 0
        self._pos = ffi.new("size_t *")
        self.ptr = _p64(self.words)

    def room(self, k: int) -> None:
        if self.n + k > self.words.size * 64:
            cap = self.words.size
            while cap * 64 < self.n + k:
                cap *= 2
            q = np.empty(cap, np.uint64)
            q[:words_for(self.n)] = self.words[:words_for(self.n)]
            self.words = q
            self.ptr = _p64(q)

    def append_bytes(self, src: np.ndarray) -> None:
        """Append uint8 0/1 values (ValueError naming the index of any other value)."""
        src = as_array(src, "src", np.uint8)
        self.room(src.size)
        self._pos[0] = self.n
        bad = ffi.new("size_t *")
        st = lib.qpp_plane_append_bytes(ptr("uint8_t *", src), src.size, self.ptr,
                                        self.words.size * 64, self._pos, bad)
        if st == lib.QPP_ERR_VALUE:
            raise ValueError(f"src: value {int(src[int(bad[0])])} at index {int(bad[0])} (must be 0 or 1)")
        check("qpp_plane_append_bytes", st)
        self.n = int(self._pos[0])

    def as_bytes(self) -> np.ndarray:
        return self.words.view(np.uint8)[:(self.n + 7) // 8]


def words_from_bytes(data: np.ndarray, n_bits: int, name: str) -> np.ndarray:
    """Little-endian packed bytes (``packbits(bitorder="little")``, as on the wire) -> words_for(n_bits)
    uint64 words for the C core (one copy of n_bits/8 bytes)."""
    data = as_array(data, name, np.uint8)
    if data.size != (n_bits + 7) // 8:
        raise ValueError(f"{name}: expected {(n_bits + 7) // 8} bytes for {n_bits} bits, got {data.size}")
    w = np.zeros(words_for(n_bits), np.uint64)
    w.view(np.uint8)[:data.size] = data
    return w


def sift_alice_into(pp, slots: np.ndarray, bob_basis_w: np.ndarray, bob_pos: int, block: BlockBits,
                    match: BitPlane, m_lo: BitPlane, m_hi: BitPlane) -> tuple[np.ndarray, np.ndarray, int]:
    """Alice's sifting of one frame (``qpp_sift_alice_block``): her packed pattern ``pp``
    (``postproc_c.pattern.PackedPattern``) at Bob's ``slots`` (uint32, strictly increasing),
    his bases bits ``bob_pos``.. of ``bob_basis_w``; appends the match mask to ``match``, the
    matched events' classes to ``m_lo``/``m_hi`` and the matched events to ``block``.
    Returns (detections, sifted) per (basis, intensity) as (2, 3) int64 and the Z count added.
    Errors name the argument and the event, as ``postproc_c.pattern.sift_alice``."""
    _check_pattern(pp)
    if pp.n_slots > 1 << 32:
        raise ValueError(f"pattern: {pp.n_slots} slots do not fit 32-bit slot numbers")
    slots = as_array(slots, "slots", np.uint32)
    bob_basis_w = as_words(bob_basis_w, "bob_basis_w")
    n = slots.size
    if bob_pos < 0 or bob_pos + n > bob_basis_w.size * 64:
        raise ValueError(f"bob_basis_w: {bob_basis_w.size * 64} bits, events {bob_pos}..{bob_pos + n} asked")
    block._room(n)
    match.room(n)
    m_lo.room(n)
    m_hi.room(n)
    counts = np.zeros(12, np.uint64)          # detections (2, 3) then sifted (2, 3)
    cp = _p64(counts)
    pos = ffi.new("size_t[2]", [match.n, m_lo.n])
    bad = block._bad
    z0 = block.n_z
    st = lib.qpp_sift_alice_block(
        _p64(pp.basis), _p64(pp.bit), _p64(pp.int_lo), _p64(pp.int_hi), pp.n_slots,
        ptr("uint32_t *", slots), ptr(_U64P, bob_basis_w), int(bob_pos), n,
        match.ptr, match.words.size * 64, pos, m_lo.ptr, m_hi.ptr,
        min(m_lo.words.size, m_hi.words.size) * 64, pos + 1, *block._c_planes(block._n), cp, cp + 6, bad)
    if st < 0:
        i = int(bad[0])
        raise_slot_error(st, "slots", slots, i, pp.n_slots)
        if st == lib.QPP_ERR_VALUE:
            raise ValueError(f"pattern: intensity class 3 at slot {int(slots[i])}")
        check("qpp_sift_alice_block", st)
    match.n, m_lo.n = int(pos[0]), int(pos[1])
    m_hi.n = m_lo.n
    block.n_z, block.n_x = int(block._n[0]), int(block._n[1])
    c = counts.astype(np.int64)
    return c[:6].reshape(2, 3), c[6:].reshape(2, 3), block.n_z - z0


def sift_bob_into(bases: np.ndarray, bits: np.ndarray, match_w: np.ndarray, match_pos: int,
                  lo_w: np.ndarray, hi_w: np.ndarray, m_pos: int, m_avail: int,
                  block: BlockBits) -> tuple[int, int]:
    """Bob's second sifting step of one frame (``qpp_sift_bob_block``): his announced events'
    ``bases`` and ``bits`` (uint8), Alice's match mask (bits ``match_pos``.. of ``match_w``) and
    the matched events' classes (bits ``m_pos``.. of ``lo_w``/``hi_w``, ``m_avail`` of them);
    appends the matched events to ``block``. Returns (events matched, Z count added)."""
    bases = as_array(bases, "bases", np.uint8)
    bits = as_array(bits, "bits", np.uint8)
    n = bases.size
    if bits.size != n:
        raise ValueError(f"bits: {bits.size} entries for {n} bases")
    for name, w, lo, k in (("match_w", match_w, match_pos, n), ("lo_w", lo_w, m_pos, m_avail),
                           ("hi_w", hi_w, m_pos, m_avail)):
        as_words(w, name)
        if lo < 0 or k < 0 or lo + k > w.size * 64:
            raise ValueError(f"{name}: {w.size * 64} bits, bits {lo}..{lo + k} asked")
    block._room(n)
    used = ffi.new("size_t *")
    bad = block._bad
    z0 = block.n_z
    st = lib.qpp_sift_bob_block(ptr("uint8_t *", bases), ptr("uint8_t *", bits), n,
                                ptr(_U64P, match_w), int(match_pos), ptr(_U64P, lo_w),
                                ptr(_U64P, hi_w), int(m_pos), int(m_avail), used,
                                *block._c_planes(block._n), bad)
    if st == lib.QPP_ERR_VALUE:
        i = int(bad[0])
        if max(int(bases[i]), int(bits[i])) > 1:
            raise ValueError(f"bases, bits: value other than 0/1 at index {i}")
        raise ValueError(f"intensities: class 3 among the matched events from event {i} on")
    if st == lib.QPP_ERR_LENGTH:
        raise ValueError(f"match_w: more matched events than the {m_avail} intensities given")
    check("qpp_sift_bob_block", st)
    block.n_z, block.n_x = int(block._n[0]), int(block._n[1])
    return int(used[0]), block.n_z - z0


def class_counts(lo: np.ndarray, hi: np.ndarray, n_bits: int, a: np.ndarray | None = None,
                 b: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Per intensity class c = lo | hi << 1 (0..2) over the first ``n_bits`` bits: the number of
    bits of each class, and with ``a`` and ``b`` (packed strings of the same length) the number
    of those where ``a`` and ``b`` differ, as two int64 arrays of 3 (errors None without a, b).
    Every array is uint64 of ``words_for(n_bits)`` words; unused high bits are ignored."""
    if isinstance(n_bits, bool) or not isinstance(n_bits, int | np.integer) or n_bits < 0:
        raise ValueError(f"n_bits: expected an int >= 0, got {n_bits!r}")
    nw = words_for(int(n_bits))
    arrs = {"lo": lo, "hi": hi}
    if (a is None) != (b is None):
        raise ValueError("a, b: give both strings or neither")
    if a is not None:
        arrs.update(a=a, b=b)
    for name, arr in arrs.items():
        arr = as_words(arr, name)
        if arr.size != nw:
            raise ValueError(f"{name}: expected {nw} words for n_bits={n_bits}, got {arr.size}")
    counts = np.zeros(N_CLASSES, np.uint64)
    errors = np.zeros(N_CLASSES, np.uint64)
    st = lib.qpp_block_class_counts(ptr("uint64_t *", lo), ptr("uint64_t *", hi),
                                    ptr("uint64_t *", a) if a is not None else ffi.NULL,
                                    ptr("uint64_t *", b) if b is not None else ffi.NULL,
                                    int(n_bits), ptr("uint64_t *", counts), ptr("uint64_t *", errors))
    if st == lib.QPP_ERR_VALUE:
        raise ValueError("lo, hi: some bit has intensity class 3 (both planes set)")
    check("qpp_block_class_counts", st)
    return counts.astype(np.int64), (errors.astype(np.int64) if a is not None else None)


__all__ = ["BitPlane", "BlockBits", "class_counts", "sift_alice_into", "sift_bob_into", "words_from_bytes"]

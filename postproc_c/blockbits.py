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
from .wipe import memzero

N_CLASSES = 3


class BlockBits:
    """Six bit planes of one block: ``z`` / ``x`` bits, ``z_lo``/``z_hi`` / ``x_lo``/``x_hi``
    intensity classes (class = lo | hi << 1). ``z_cap``/``x_cap``: initial room in bits; a
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
        # room for every event in either basis: at most one regrowth check per frame
        if (self.n_z + n) > self._z[0].size * 64:
            self._z = self._grow(self._z, self.n_z, self.n_z + n)
        if (self.n_x + n) > self._x[0].size * 64:
            self._x = self._grow(self._x, self.n_x, self.n_x + n)
        nn = self._n
        nn[0], nn[1] = self.n_z, self.n_x
        z, x = self._z, self._x
        st = lib.qpp_block_append(
            ptr("uint8_t *", basis), ptr("uint8_t *", bits), ptr("uint8_t *", intensity), n,
            ptr("uint64_t *", z[0]), ptr("uint64_t *", z[1]), ptr("uint64_t *", z[2]), z[0].size * 64, nn,
            ptr("uint64_t *", x[0]), ptr("uint64_t *", x[1]), ptr("uint64_t *", x[2]), x[0].size * 64,
            nn + 1, self._bad)
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


__all__ = ["BlockBits", "class_counts"]

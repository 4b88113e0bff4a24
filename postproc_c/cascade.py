"""Cascade reconciliation: the Python face of the C state machine (``cascade.c``).

Registers two methods with ``postproc_c.reconcile``:

* ``"cascade"``: the optimized Cascade of Martinez-Mateo et al., "Demystifying
  the information reconciliation protocol Cascade", QIC 15 (2015),
  arXiv:1407.3257, configuration opt. (8) (block-size schedule
  k2 = 2^ceil((alpha + 12)/2), k3 = 4096, k4.. = n/2, alpha = log2(1/p) - 1/2,
  14 passes; block reuse; parity inference) with k1 = the largest power of two
  <= 1/p and k2 halved for frames below 2^16 bits (measured, see ``cascade.c``),
  and known-bit inference: a sub-block made only of bits whose values Alice's
  earlier single-bit parities fixed is inferred, not asked. Every odd block of
  a pass is bisected at once (fewest round trips; the link's default);
* ``"cascade-waves"``: the same protocol with a measured schedule (k1 as above,
  k2 = max(4 k1, 64), k3 = n/4, 16 passes; ``python -m bench.cascade_tune``)
  and the odd blocks of passes >= 2 bisected a wave of n h(p)/1024 at a time,
  so pairs of errors resolve through the cascade: lower f (<= 1.05 also on
  2^14-bit frames) for 2-5x the round trips, each of which costs the link an
  authentication tag;
* ``"cascade-original"``: Brassard-Salvail 1993 (k1 = 0.73/p, doubling, 4 passes)
  for comparison.

Alice answers parity requests; Bob drives the passes and corrects his key. Every
parity bit Alice discloses is counted (the convention of Demystifying Sec. 2;
Bob's messages carry only positions), plus the 64-bit verification hash that
ends the run: Bob compares a polynomial hash of his corrected key with Alice's
at a point Alice draws afresh, so a residual error is reported as
``success=False`` rather than passed on silently. The message layout is
documented in ``include/qpp_cascade.h``.

One object per side holds a whole block cut into frames of about
``frame_bits`` (default 2^16) bits; every round carries the requests of all
frames, so messages per block ~ rounds of the slowest frame, and round trips
cost latency, not throughput. ``wave`` (Bob only) overrides the wave size and
``schedule`` the block sizes, for experiments. Both sides must use the same ``seed`` (shuffles),
``qber``, method and ``frame_bits``.

This module must not touch sockets or log key material; it only moves bytes
between the caller and C. Why C: the bisection and cascade bookkeeping is
per-bit-index work that numpy cannot vectorize, and the C object keeps packed
per-pass copies and index structures so every parity is a word operation.
"""

from __future__ import annotations

import secrets

import numpy as np

from ._binding import Error, check, ffi, lib, words_for
from .reconcile import ReconcileResult, register
from .selftest import kat
from .wipe import memzero

VARIANTS = {"cascade": lib.QPP_CASCADE_OPT, "cascade-waves": lib.QPP_CASCADE_OPT_WAVES,
            "cascade-original": lib.QPP_CASCADE_ORIGINAL}
HEADER_BYTES = lib.QPP_CASCADE_HEADER_BYTES
ITEM_BYTES = lib.QPP_CASCADE_ITEM_BYTES
VERIFY_BITS = lib.QPP_CASCADE_VERIFY_BITS
DEFAULT_FRAME_BITS = 1 << 16   # frames of 2^14-2^16 bits are where opt. (8) was tuned


def _variant(method: str) -> int:
    if method not in VARIANTS:
        raise ValueError(f"method: expected one of {sorted(VARIANTS)}, got {method!r}")
    return VARIANTS[method]


def _bits_u8(bits: object, name: str) -> np.ndarray:
    if not isinstance(bits, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array of uint8 0/1, got {type(bits).__name__}")
    if bits.dtype != np.uint8 or bits.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d uint8 array of 0/1, got {bits.dtype} shape {bits.shape}")
    if bits.size == 0:
        raise ValueError(f"{name}: empty key")
    if bits.size >= 2**31:
        raise ValueError(f"{name}: at most 2^31 - 1 bits per Cascade run, got {bits.size}")
    if bits.max() > 1:
        raise ValueError(f"{name}: elements must be 0 or 1")
    return bits


def _words_in(words: object, n_bits: object) -> np.ndarray:
    if isinstance(n_bits, bool) or not isinstance(n_bits, int | np.integer) or not 0 < n_bits < 2**31:
        raise ValueError(f"n_bits: expected an int in [1, 2^31), got {n_bits!r}")
    if not isinstance(words, np.ndarray) or words.dtype != np.uint64 or words.ndim != 1 \
            or not words.flags.c_contiguous:
        raise ValueError("bits: with n_bits, expected a 1-d C-contiguous uint64 array of packed bits")
    if words.size != words_for(int(n_bits)):
        raise ValueError(f"bits: expected {words_for(int(n_bits))} words for n_bits={n_bits}, "
                         f"got {words.size}")
    return words


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """uint8 0/1 -> packed uint64 words, least significant bit first."""
    n = bits.size
    by = np.packbits(bits, bitorder="little")
    buf = np.zeros(words_for(n) * 8, dtype=np.uint8)
    buf[: by.size] = by
    return buf.view(np.uint64)


def unpack_bits(words: np.ndarray, n: int) -> np.ndarray:
    """Packed uint64 words -> uint8 0/1 of length n."""
    return np.unpackbits(words.view(np.uint8), bitorder="little")[:n].copy()


def block_sizes(method: str, n_bits: int, qber: float) -> list[int]:
    """The per-pass block sizes the C core uses for ``method`` at ``n_bits`` and ``qber``."""
    out = ffi.new("uint32_t[]", lib.QPP_CASCADE_MAX_PASSES)
    np_ = ffi.new("size_t *")
    check("qpp_cascade_block_sizes",
          lib.qpp_cascade_block_sizes(_variant(method), n_bits, qber, out, lib.QPP_CASCADE_MAX_PASSES, np_))
    return [int(out[j]) for j in range(np_[0])]


class CascadeSide:
    """One side of a Cascade run; owns its C object (freed by ``close`` or GC).

    ``role`` is "alice" or "bob"; ``next_message()`` gives the next outgoing
    message (bytes) or None; ``feed(msg)`` consumes one incoming message and
    raises ``postproc_c.Error`` (status QPP_ERR_MESSAGE/STATE) for a malformed,
    truncated or out-of-order one, leaving the state unchanged.
    """

    def __init__(self, role: str, bits: np.ndarray, qber: float, *, seed: int = 0,
                 method: str = "cascade", verify_key: int | None = None,
                 frame_bits: int = DEFAULT_FRAME_BITS, schedule: list[int] | None = None,
                 wave: int | None = None, n_bits: int | None = None) -> None:
        if role not in ("alice", "bob"):
            raise ValueError(f"role: expected 'alice' or 'bob', got {role!r}")
        # n_bits given (link.node): ``bits`` is the key already packed, words_for(n_bits) uint64
        # words, handed to C as is (no unpacked copy, no pack); result(packed=True) returns words
        packed = n_bits is not None
        bits = _words_in(bits, n_bits) if packed else _bits_u8(bits, "bits")
        if not 0.0 <= float(qber) < 0.5:
            raise ValueError(f"qber: expected 0 <= qber < 0.5, got {qber}")
        if not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**64:
            raise ValueError(f"seed: expected an integer in [0, 2^64), got {seed!r}")
        if verify_key is None:
            verify_key = secrets.randbits(64)
        if not 0 <= int(verify_key) < 2**64:
            raise ValueError(f"verify_key: expected an integer in [0, 2^64), got {verify_key!r}")
        if not isinstance(frame_bits, (int, np.integer)) or not 0 <= int(frame_bits) < 2**31:
            raise ValueError(f"frame_bits: expected an integer in [0, 2^31), got {frame_bits!r}")
        n_total = int(n_bits) if packed else bits.size
        if n_total > int(frame_bits) * 0xFFFF and frame_bits:
            raise ValueError(f"frame_bits: {frame_bits} gives more than 65535 frames for {n_total} bits")
        sched = [] if schedule is None else [int(k) for k in schedule]
        if len(sched) > lib.QPP_CASCADE_MAX_PASSES or any(not 0 < k < 2**31 for k in sched):
            raise ValueError(f"schedule: expected at most {lib.QPP_CASCADE_MAX_PASSES} block sizes "
                             f"in [1, 2^31), got {schedule!r}")
        if wave is not None and (not isinstance(wave, (int, np.integer)) or not 1 <= int(wave) < 2**32):
            raise ValueError(f"wave: expected an integer in [1, 2^32), got {wave!r}")
        self.role = role
        self.method = method
        self.n = n_total
        words = bits if packed else pack_bits(bits)
        pp = ffi.new("qpp_cascade **")
        try:
            check("qpp_cascade_create", lib.qpp_cascade_create(
                pp, lib.QPP_CASCADE_ALICE if role == "alice" else lib.QPP_CASCADE_BOB,
                _variant(method), ffi.cast("uint64_t *", ffi.from_buffer(words)), self.n,
                float(qber), int(seed), int(verify_key), int(frame_bits),
                ffi.new("uint32_t[]", sched) if sched else ffi.NULL, len(sched)))
        finally:
            if not packed:
                memzero(words)  # the packed copy is key material (the caller's words are its own)
        self._c = ffi.gc(pp[0], lib.qpp_cascade_free)
        if wave is not None and role == "bob":
            check("qpp_cascade_set_wave", lib.qpp_cascade_set_wave(self._c, int(wave)))
        self._len = ffi.new("size_t *")
        self._cap = 0
        self._buf = ffi.NULL

    # -- lifetime ---------------------------------------------------------
    def close(self) -> None:
        """Free the C object now (it wipes its key buffers)."""
        if self._c is not None:
            ffi.release(self._c)
            self._c = None

    def __enter__(self) -> CascadeSide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _obj(self):
        if self._c is None:
            raise ValueError("CascadeSide is closed")
        return self._c

    # -- the Side protocol --------------------------------------------------
    def _stats(self, key_out=None):
        st = ffi.new("qpp_cascade_stats *")
        if key_out is None:
            check("qpp_cascade_result", lib.qpp_cascade_result(self._obj(), ffi.NULL, 0, st))
        else:
            check("qpp_cascade_result", lib.qpp_cascade_result(
                self._obj(), ffi.cast("uint64_t *", ffi.from_buffer(key_out)), key_out.size, st))
        return st

    @property
    def done(self) -> bool:
        return check("qpp_cascade_done", lib.qpp_cascade_done(self._obj())) == 1

    def next_message(self) -> bytes | None:
        c = self._obj()
        size = lib.qpp_cascade_pending(c)
        if size == 0:
            return None
        if size > self._cap:  # one buffer reused (messages are public: positions, parities)
            self._cap = max(size, 2 * self._cap)
            self._buf = ffi.new("uint8_t[]", self._cap)
        check("qpp_cascade_next", lib.qpp_cascade_next(c, self._buf, self._cap, self._len))
        return ffi.buffer(self._buf, self._len[0])[:]

    def feed(self, message: bytes) -> None:
        if not isinstance(message, (bytes, bytearray, memoryview)):
            raise TypeError(f"message: expected bytes, got {type(message).__name__}")
        if not len(message):
            raise ValueError("message: empty")
        data = ffi.from_buffer(message)
        check("qpp_cascade_feed", lib.qpp_cascade_feed(self._obj(), data, len(data)))

    def result(self, packed: bool = False) -> ReconcileResult:
        """The side's outcome; ``packed``: ``corrected`` as words_for(n) uint64 words (unused
        high bits zero) instead of uint8 0/1."""
        key = np.zeros(words_for(self.n), dtype=np.uint64)
        st = self._stats(key)
        if packed:
            bits = key
        else:
            bits = unpack_bits(key, self.n)
            memzero(key)
        return ReconcileResult(
            corrected=bits, leaked_bits=int(st.leaked_bits),
            messages=int(st.messages_sent + st.messages_received), success=bool(st.success),
            method=self.method,
            details={"parity_bits": int(st.parity_bits), "verify_bits": int(st.verify_bits),
                     "passes": int(st.passes), "frames": int(st.frames), "flips": int(st.flips),
                     "done": bool(st.done), "inconsistent": bool(st.inconsistent)})


def _factory(method: str):
    def make(role: str, bits: np.ndarray, qber: float, *, seed: int = 0, **options) -> CascadeSide:
        return CascadeSide(role, bits, qber, seed=seed, method=method, **options)
    return make


register("cascade")(_factory("cascade"))
register("cascade-waves")(_factory("cascade-waves"))
register("cascade-original")(_factory("cascade-original"))


def cascade_hash(bits: np.ndarray, r: int) -> int:
    """The verification hash the C core uses (for tests)."""
    bits = _bits_u8(bits, "bits")
    w = pack_bits(bits)
    return int(lib.qpp_cascade_hash(ffi.cast("uint64_t *", ffi.from_buffer(w)), bits.size, r))


def cascade_permutation(seed: int, pass_index: int, n: int) -> np.ndarray:
    """pos[i] = position of key bit i in the order of pass ``pass_index`` (for tests)."""
    pos = np.empty(n, dtype=np.uint32)
    check("qpp_cascade_permutation", lib.qpp_cascade_permutation(
        seed, pass_index, ffi.cast("uint32_t *", ffi.from_buffer(pos)), n))
    return pos


__all__ = ["CascadeSide", "Error", "block_sizes", "cascade_hash", "cascade_permutation",
           "pack_bits", "unpack_bits"]


def kat_keys() -> tuple[np.ndarray, np.ndarray]:
    """The fixed inputs of the Cascade known-answer test (integer hashing, no RNG):
    2000 bits, errors where a second hash falls in 1/32 of its range (~3 %)."""
    i = np.arange(2000, dtype=np.uint64)
    alice = ((i * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(63)).astype(np.uint8)
    err = (((i * np.uint64(0xD1B54A32D192ED03)) >> np.uint64(59)) == 0).astype(np.uint8)
    return alice, alice ^ err


# Parity bits and messages of each method on kat_keys() (seed 7, one frame), as the
# pure-Python reference in tests/test_cascade.py computes them.
KAT_EXPECTED = {"cascade": (451, 144), "cascade-waves": (458, 488), "cascade-original": (500, 76)}


@kat("cascade")
def _kat() -> bool:
    from .reconcile import reconcile_in_memory
    alice, bob = kat_keys()
    for method, (parity_bits, messages) in KAT_EXPECTED.items():
        res = reconcile_in_memory(alice, bob, 0.03, method=method, seed=7, frame_bits=0, verify_key=1)
        if not (res.success and np.array_equal(res.corrected, alice)
                and res.details["parity_bits"] == parity_bits and res.messages == messages):
            return False
    return True

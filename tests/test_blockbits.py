"""postproc_c.blockbits against a numpy reference: packed block planes and class counts."""

from __future__ import annotations

import numpy as np
import pytest

from postproc_c import Error, lib
from postproc_c.blockbits import BlockBits, class_counts


def _unpack(words: np.ndarray, n: int) -> np.ndarray:
    return np.unpackbits(words.view(np.uint8), bitorder="little")[:n]


def _frames(rng, sizes, p_x=0.3):
    for m in sizes:
        basis = (rng.random(m) < p_x).astype(np.uint8)
        bits = rng.integers(0, 2, m, dtype=np.uint8)
        ints = rng.choice(3, m, p=[0.6, 0.25, 0.15]).astype(np.uint8)
        yield basis, bits, ints


@pytest.fixture(params=["fast", "portable"])
def cpu_path(request):
    """The BMI2 (pext) path where the CPU has it, and the portable one: bit-identical."""
    if request.param == "portable":
        lib.qpp_cpu_disable(lib.QPP_CPU_BMI2)
    yield request.param
    lib.qpp_cpu_disable(0)


@pytest.mark.parametrize("sizes", [[0], [1], [63, 1, 64, 65], [1000, 7, 0, 130, 4096], [5000] * 9,
                                   [64] * 5 + [127, 129, 3]])
def test_append_equals_numpy_split(sizes, cpu_path):
    rng = np.random.default_rng(len(sizes) * 1000 + sum(sizes))
    bb = BlockBits(z_cap=64, x_cap=64)          # small: the planes must grow on the way
    ref = {k: [] for k in ("zb", "zi", "xb", "xi")}
    for basis, bits, ints in _frames(rng, sizes):
        added = bb.append(basis, bits, ints)
        z = basis == 0
        assert added == int(z.sum())
        ref["zb"].append(bits[z])
        ref["zi"].append(ints[z])
        ref["xb"].append(bits[~z])
        ref["xi"].append(ints[~z])
    zb, zi, xb, xi = (np.concatenate(ref[k]) for k in ("zb", "zi", "xb", "xi"))
    assert (bb.n_z, bb.n_x) == (zb.size, xb.size)
    np.testing.assert_array_equal(_unpack(bb.z, bb.n_z), zb)
    np.testing.assert_array_equal(_unpack(bb.x, bb.n_x), xb)
    lo, hi = bb.z_classes()
    np.testing.assert_array_equal(_unpack(lo, bb.n_z) | _unpack(hi, bb.n_z) << 1, zi)
    lo, hi = bb.x_classes()
    np.testing.assert_array_equal(_unpack(lo, bb.n_x) | _unpack(hi, bb.n_x) << 1, xi)
    # the unused high bits of the last word are zero (the core's output convention)
    for w, n in ((bb.z, bb.n_z), (bb.x, bb.n_x)):
        if n % 64:
            assert int(w[-1]) >> (n % 64) == 0
    # class counts from the planes equal the numpy counts
    cz, _ = bb.z_counts()
    np.testing.assert_array_equal(cz, np.bincount(zi, minlength=3))
    bb.wipe()
    assert not bb.z.any() and not bb.x.any()


def test_class_counts_with_errors_equal_numpy():
    rng = np.random.default_rng(5)
    n = 10_007
    cls = rng.choice(3, n, p=[0.5, 0.3, 0.2]).astype(np.uint8)
    a = rng.integers(0, 2, n, dtype=np.uint8)
    b = a ^ (rng.random(n) < 0.05).astype(np.uint8)

    def pack(bits):
        out = np.zeros((n + 63) // 64 * 8, np.uint8)
        p = np.packbits(bits, bitorder="little")
        out[:p.size] = p
        w = out.view(np.uint64).copy()
        w[-1] |= np.uint64(0xFFFF) << np.uint64(48)     # garbage above n: must be ignored
        return w
    counts, errors = class_counts(pack(cls & 1), pack(cls >> 1) & ~(pack(cls & 1) & pack(cls >> 1)),
                                  n, pack(a), pack(b))
    np.testing.assert_array_equal(counts, np.bincount(cls, minlength=3))
    np.testing.assert_array_equal(errors, np.bincount(cls[a != b], minlength=3))


def test_bad_values_and_lengths_are_refused_naming_the_array():
    bb = BlockBits()
    ok = np.zeros(4, np.uint8)
    with pytest.raises(ValueError, match="intensity: value 3 at index 2"):
        bb.append(ok, ok, np.array([0, 1, 3, 0], np.uint8))
    with pytest.raises(ValueError, match="bits: value 2 at index 1"):
        bb.append(ok, np.array([0, 2, 0, 0], np.uint8), ok)
    with pytest.raises(ValueError, match="lengths"):
        bb.append(ok, ok[:3], ok)
    with pytest.raises(ValueError, match="basis: expected dtype uint8"):
        bb.append(ok.astype(np.int64), ok, ok)
    assert (bb.n_z, bb.n_x) == (0, 0)       # nothing appended by a refused call
    w = np.zeros(1, np.uint64)
    with pytest.raises(ValueError, match="class 3"):
        class_counts(w | np.uint64(1), w | np.uint64(1), 1)
    with pytest.raises(ValueError, match="expected 2 words"):
        class_counts(w, w, 100)
    # the C core refuses an overflow without writing
    from postproc_c import ffi
    from postproc_c._binding import check
    plane = np.zeros(2, np.uint64)
    p = ffi.cast("uint64_t *", ffi.from_buffer(plane))
    nn = ffi.new("size_t[2]", [64, 0])
    st = lib.qpp_block_append(ffi.from_buffer(ok), ffi.from_buffer(ok), ffi.from_buffer(ok), 4,
                              p, p, p, 64, nn, p, p, p, 64, nn + 1, ffi.NULL)
    assert st == lib.QPP_ERR_LENGTH and nn[0] == 64 and not plane.any()
    with pytest.raises(Error, match="qpp_block_append"):
        check("qpp_block_append", st)


def test_cascade_on_packed_words_equals_the_unpacked_run():
    """CascadeSide(n_bits=...) takes the key packed (link.node) and result(packed=True) returns
    words: the same corrected key, leak and messages as the uint8 interface."""
    from postproc_c.cascade import CascadeSide, pack_bits

    rng = np.random.default_rng(11)
    n = 50_001
    a = rng.integers(0, 2, n, dtype=np.uint8)
    b = a ^ (rng.random(n) < 0.02).astype(np.uint8)

    def run(packed):
        kw = {"n_bits": n} if packed else {}
        sa = CascadeSide("alice", pack_bits(a) if packed else a, 0.02, seed=3, verify_key=9, **kw)
        sb = CascadeSide("bob", pack_bits(b) if packed else b, 0.02, seed=3, verify_key=9, **kw)
        msgs = 0
        while not (sa.done and sb.done):
            for s, p in ((sa, sb), (sb, sa)):
                while (m := s.next_message()) is not None:
                    p.feed(m)
                    msgs += 1
        return sb.result(packed=packed), msgs
    r0, m0 = run(False)
    r1, m1 = run(True)
    assert r1.corrected.dtype == np.uint64 and r1.corrected.size == (n + 63) // 64
    np.testing.assert_array_equal(_unpack(r1.corrected, n), r0.corrected)
    np.testing.assert_array_equal(r0.corrected, a)
    assert (r1.leaked_bits, m1, r1.success) == (r0.leaked_bits, m0, True)
    with pytest.raises(ValueError, match="expected 782 words"):
        CascadeSide("alice", pack_bits(a)[:-1], 0.02, n_bits=n)

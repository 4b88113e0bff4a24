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


def _pattern(rng, n_slots, p_z=0.85):
    from postproc_c.pattern import pack_pattern
    basis = (rng.random(n_slots) >= p_z).astype(np.uint8)
    bit = rng.integers(0, 2, n_slots, dtype=np.uint8)
    inten = rng.choice(3, n_slots, p=[0.6, 0.25, 0.15]).astype(np.uint8)
    return pack_pattern(basis, bit, inten), (basis, bit, inten)


@pytest.mark.parametrize("n_events", [[0, 5], [1, 63, 64], [65, 130, 1000], [4000, 3, 777]])
def test_fused_sifting_equals_the_byte_path(n_events, cpu_path):
    """Alice's and Bob's fused steps (qpp_sift_alice_block / qpp_sift_bob_block) give the same
    match mask, message planes, class counts and block planes as the byte path they replace
    (postproc_c.sifting.alice_sift -> split by basis; bob_sift), frames appended one after another."""
    from postproc_c.blockbits import BitPlane, sift_alice_into, sift_bob_into, words_from_bytes
    from postproc_c.sifting import alice_sift

    rng = np.random.default_rng(sum(n_events) + 7)
    n_slots = 1 << 14
    frames = []
    for c in n_events:
        pp, pat = _pattern(rng, n_slots)
        slots = np.sort(rng.choice(n_slots, c, replace=False)).astype(np.uint32)
        bob_bases = rng.integers(0, 2, c, dtype=np.uint8)
        bob_bits = rng.integers(0, 2, c, dtype=np.uint8)
        frames.append((pp, pat, slots, bob_bases, bob_bits))
    all_bases = np.concatenate([f[3] for f in frames])
    bw = words_from_bytes(np.packbits(all_bases, bitorder="little"), all_bases.size, "bases_bits")
    alice, match, m_lo, m_hi = BlockBits(64, 64), BitPlane(64), BitPlane(64), BitPlane(64)
    ref_a = BlockBits(64, 64)
    ref_match, ref_int = [], []
    pos = 0
    for pp, pat, slots, bb, _ in frames:
        det, sif, nz = sift_alice_into(pp, slots, bw, pos, alice, match, m_lo, m_hi)
        pos += slots.size
        r = alice_sift(slots.astype(np.uint64), bb, *pat)
        np.testing.assert_array_equal(det, r.detections.astype(np.int64))
        np.testing.assert_array_equal(sif, r.sifted.astype(np.int64))
        assert nz == ref_a.append(r.bases, r.bits.copy(), r.intensities)
        ref_match.append(r.match.astype(np.uint8))
        ref_int.append(r.intensities)
    rm, ri = np.concatenate(ref_match), np.concatenate(ref_int)
    np.testing.assert_array_equal(match.as_bytes(), np.packbits(rm, bitorder="little"))
    np.testing.assert_array_equal(m_lo.as_bytes(), np.packbits(ri & 1, bitorder="little"))
    np.testing.assert_array_equal(m_hi.as_bytes(), np.packbits(ri >> 1, bitorder="little"))
    for got, want in ((alice.z, ref_a.z), (alice.x, ref_a.x), (alice.z_classes(), ref_a.z_classes()),
                      (alice.x_classes(), ref_a.x_classes())):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # Bob from the message as it goes on the wire (bytes), frame by frame
    mw = words_from_bytes(match.as_bytes(), match.n, "match_bits")
    lw = words_from_bytes(m_lo.as_bytes(), m_lo.n, "int_lo")
    hw = words_from_bytes(m_hi.as_bytes(), m_hi.n, "int_hi")
    bob, ref_b = BlockBits(64, 64), BlockBits(64, 64)
    pos = ipos = 0
    for (_, _, slots, bb, bbits), m in zip(frames, ref_match):
        used, nz = sift_bob_into(bb, bbits, mw, pos, lw, hw, ipos, m_lo.n - ipos, bob)
        keep = m.astype(bool)
        ints = ri[ipos:ipos + int(keep.sum())]
        assert used == int(keep.sum()) and nz == ref_b.append(bb[keep], bbits[keep].copy(), ints)
        pos += slots.size
        ipos += used
    assert ipos == m_lo.n
    np.testing.assert_array_equal(bob.z, ref_b.z)
    np.testing.assert_array_equal(bob.x, ref_b.x)
    np.testing.assert_array_equal(np.asarray(bob.z_classes()), np.asarray(ref_b.z_classes()))


def test_fused_sifting_refuses_bad_input_naming_it():
    from postproc_c.blockbits import BitPlane, sift_alice_into, sift_bob_into

    rng = np.random.default_rng(3)
    pp, _ = _pattern(rng, 1024)
    bw = np.zeros(1, np.uint64)
    blk, m, lo, hi = BlockBits(), BitPlane(), BitPlane(), BitPlane()
    with pytest.raises(ValueError, match="slots"):
        sift_alice_into(pp, np.array([5, 5], np.uint32), bw, 0, blk, m, lo, hi)
    with pytest.raises(ValueError, match="slots"):
        sift_alice_into(pp, np.array([5, 2000], np.uint32), bw, 0, blk, m, lo, hi)
    assert (blk.n_z, blk.n_x, m.n, lo.n) == (0, 0, 0, 0)
    ones = np.ones(3, np.uint8)
    with pytest.raises(ValueError, match="more matched events"):
        sift_bob_into(ones, ones, np.array([7], np.uint64), 0, np.zeros(1, np.uint64), np.zeros(1, np.uint64),
                      0, 2, blk)
    with pytest.raises(ValueError, match="class 3"):
        sift_bob_into(ones, ones, np.array([7], np.uint64), 0, np.array([1], np.uint64),
                      np.array([1], np.uint64), 0, 3, blk)
    assert (blk.n_z, blk.n_x) == (0, 0)


def test_slot_gaps_into_a_given_buffer():
    """slot_gaps16(out=...) (link.node writes each frame's gaps into the message's buffer)."""
    from postproc_c.pattern import slot_gaps16

    buf = np.zeros(8, np.uint16)
    got = slot_gaps16(np.array([3, 10, 70000], np.uint64), [3], out=buf[2:5])
    assert got is None                                     # a gap of 69990 does not fit 16 bits
    got = slot_gaps16(np.array([3, 10, 700], np.uint64), [3], out=buf[2:5])
    assert got is not None and buf.tolist() == [0, 0, 3, 7, 690, 0, 0, 0]
    with pytest.raises(ValueError, match="out: 2 entries for 3 slots"):
        slot_gaps16(np.array([3, 10, 700], np.uint64), [3], out=buf[:2])


def test_decode_without_copy_gives_read_only_views():
    from link.payload import decode, encode

    data = encode({"a": 1}, {"g": np.arange(5, dtype=np.uint16), "b": np.ones(3, np.uint8)})
    meta, arr = decode(data, copy=False)
    assert meta == {"a": 1} and arr["g"].tolist() == [0, 1, 2, 3, 4] and not arr["g"].flags.writeable
    _, arr2 = decode(data)
    assert arr2["g"].flags.writeable

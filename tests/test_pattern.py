"""Packed frame patterns (postproc_c.pattern) against a numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

import postproc_c
from postproc_c import pattern


def _pat(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 2, n, dtype=np.uint8), rng.integers(0, 2, n, dtype=np.uint8),
            rng.choice(3, n, p=[0.5, 0.3, 0.2]).astype(np.uint8))


@pytest.mark.parametrize("n", [1, 63, 64, 65, 1000, 1 << 16])
def test_gather_and_counts_match_numpy(n):
    basis, bit, inten = _pat(n, n)
    pp = pattern.pack_pattern(basis, bit, inten)
    ref = np.zeros((2, 3), np.uint64)
    np.add.at(ref, (basis, inten), 1)
    assert (pp.counts == ref).all()
    assert (pp.counts == postproc_c.frame_counts(basis, inten)).all()
    slots = np.random.default_rng(1).integers(0, n, min(n, 500)).astype(np.uint64)
    gb, gbit, gi = pattern.gather(pp, slots)
    idx = slots.astype(np.int64)
    assert (gb == basis[idx]).all() and (gbit == bit[idx]).all() and (gi == inten[idx]).all()
    ub, ubit, ui = pp.unpack()
    assert (ub == basis).all() and (ubit == bit).all() and (ui == inten).all()


def test_sifting_the_gathered_events_equals_sifting_the_frame():
    n = 1 << 14
    basis, bit, inten = _pat(n, 3)
    rng = np.random.default_rng(4)
    slots = np.unique(rng.integers(0, n, 900)).astype(np.uint64)
    bob_bases = rng.integers(0, 2, slots.size, dtype=np.uint8)
    full = postproc_c.alice_sift(slots, bob_bases, basis, bit, inten)
    pp = pattern.pack_pattern(basis, bit, inten)
    g = pattern.gather(pp, slots)
    ev = postproc_c.alice_sift(np.arange(slots.size, dtype=np.uint64), bob_bases, *g)
    assert (np.asarray(ev.match) == np.asarray(full.match)).all()
    assert (ev.bits == full.bits).all() and (ev.intensities == full.intensities).all()
    assert (ev.detections == full.detections).all()


def test_bad_input_is_named():
    pp = pattern.pack_pattern(*_pat(100))
    with pytest.raises(ValueError, match="slots: 100 at index 1"):
        pattern.gather(pp, np.array([3, 100], np.uint64))
    with pytest.raises(ValueError, match="intensity: value 3"):
        pattern.pack_pattern(np.zeros(4, np.uint8), np.zeros(4, np.uint8), np.array([0, 1, 3, 0], np.uint8))
    bad = pp.copy()
    bad.int_lo[0] |= np.uint64(1)
    bad.int_hi[0] |= np.uint64(1)
    with pytest.raises(ValueError, match="class 3"):
        pattern.counts(bad)
    with pytest.raises(ValueError, match="class 3"):
        pattern.gather(bad, np.array([0], np.uint64))
    with pytest.raises(ValueError, match="pattern.bit"):
        pattern.gather(pattern.PackedPattern(100, pp.basis, pp.bit[:1], pp.int_lo, pp.int_hi),
                       np.array([0], np.uint64))
    pp.wipe()
    assert not pp.basis.any() and not pp.bit.any()


def test_sift_alice_from_the_packed_pattern_equals_alice_sift():
    n = 1 << 15
    basis, bit, inten = _pat(n, 7)
    rng = np.random.default_rng(8)
    slots = np.unique(rng.integers(0, n, 2000)).astype(np.uint64)
    bob_bases = rng.integers(0, 2, slots.size, dtype=np.uint8)
    ref = postproc_c.alice_sift(slots, bob_bases, basis, bit, inten)
    got = pattern.sift_alice(pattern.pack_pattern(basis, bit, inten), slots.astype(np.uint32), bob_bases)
    assert (got.match == np.asarray(ref.match, np.uint8)).all()
    for f in ("bases", "bits", "intensities", "detections", "sifted"):
        assert (getattr(got, f) == getattr(ref, f)).all(), f
    pp = pattern.pack_pattern(basis, bit, inten)
    with pytest.raises(ValueError, match="not strictly increasing at index 1"):
        pattern.sift_alice(pp, np.array([5, 5], np.uint32), np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="outside the frame"):
        pattern.sift_alice(pp, np.array([5, n], np.uint32), np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="bob_bases: value 2 at index 0"):
        pattern.sift_alice(pp, np.array([5], np.uint32), np.array([2], np.uint8))


def _gaps_ref(slots, counts):
    """numpy reference of the wire gaps: per frame diff with the first slot kept, or None."""
    out, pos = [], 0
    for c in counts:
        s = slots[pos:pos + c].astype(np.int64)
        pos += c
        d = np.diff(s, prepend=0)
        if c and (d.max() > 0xFFFF or (d[1:] <= 0).any()):
            return None
        out.append(d)
    return np.concatenate(out).astype(np.uint16) if out else np.zeros(0, np.uint16)


def test_slot_gaps_round_trip_and_match_numpy():
    rng = np.random.default_rng(5)
    counts = [0, 1, 500, 0, 3000, 7]
    slots = np.concatenate([np.sort(rng.choice(40 * c + 1, c, replace=False)).astype(np.uint64)
                            for c in counts])
    gaps = pattern.slot_gaps16(slots, counts)
    ref = _gaps_ref(slots, counts)
    assert gaps is not None and ref is not None and np.array_equal(gaps, ref)
    pos = 0
    for c in counts:
        got = pattern.slots_from_gaps16(gaps[pos:pos + c].copy())
        assert got.dtype == np.uint32 and np.array_equal(got, slots[pos:pos + c])
        pos += c
    # what does not fit 16 bits, or does not increase, is refused (the caller sends slots)
    assert pattern.slot_gaps16(np.array([5, 70_000], np.uint64), [2]) is None
    assert pattern.slot_gaps16(np.array([70_000], np.uint64), [1]) is None
    assert pattern.slot_gaps16(np.array([5, 5], np.uint64), [2]) is None
    assert _gaps_ref(np.array([5, 5], np.uint64), [2]) is None
    assert np.array_equal(pattern.slot_gaps16(np.array([9, 3], np.uint64), [1, 1]), [9, 3])
    with pytest.raises(ValueError, match="counts"):
        pattern.slot_gaps16(np.array([1, 2], np.uint64), [3])
    # 65538 gaps of 0xFFFF add up to 2^32 + 14: refused at the gap that passes 2^32
    with pytest.raises(ValueError, match="past 2\\^32 at index 65537"):
        pattern.slots_from_gaps16(np.full(65538, 0xFFFF, np.uint16))
    assert pattern.slots_from_gaps16(np.full(65537, 0xFFFF, np.uint16))[-1] == 65537 * 0xFFFF


@pytest.mark.parametrize("n", [0, 1, 1000, 100_003])
def test_split_by_basis_equals_numpy_selection(n):
    rng = np.random.default_rng(n)
    basis = (rng.random(n) < 0.2).astype(np.uint8) * rng.integers(1, 3, n, dtype=np.uint8)
    bits, ints = rng.integers(0, 2, n, dtype=np.uint8), rng.integers(0, 3, n, dtype=np.uint8)
    z = basis == 0
    ref = bits[z], ints[z], bits[~z], ints[~z]
    for n_z in (None, int(z.sum())):
        got = pattern.split_by_basis(basis, bits, ints, n_z)
        assert all(np.array_equal(a, b) for a, b in zip(got, ref))
    if n:
        for wrong in (int(z.sum()) - 1, int(z.sum()) + 1):
            if 0 <= wrong <= n:
                with pytest.raises(ValueError, match="n_z"):
                    pattern.split_by_basis(basis, bits, ints, wrong)
    with pytest.raises(ValueError, match="entries"):
        pattern.split_by_basis(basis, bits[:-1] if n else np.zeros(1, np.uint8), ints)

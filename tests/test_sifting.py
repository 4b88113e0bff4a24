"""Sifting (both nodes' steps) against a plain numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import postproc_c
from postproc_c import sifting


# ---------------------------------------------------------------- reference
def ref_bob(slots, clicks, rng_words):
    z = clicks & 3
    x = (clicks >> 2) & 3
    cross = (z > 0) & (x > 0)
    keep = ~cross
    basis = (x > 0).astype(np.uint8)
    sub = np.where(basis == 1, x, z)
    double = keep & (sub == 3)
    rbits = np.unpackbits(rng_words.astype("<u8").view(np.uint8), bitorder="little")
    bit = (sub == 2).astype(np.uint8)
    bit[double] = rbits[: int(double.sum())]
    squashed = np.array([np.sum(double & (basis == 0)), np.sum(double & (basis == 1))])
    return slots[keep], basis[keep], bit[keep], int(cross.sum()), squashed, int(double.sum())


def ref_alice(bslots, bbases, basis, bit, intensity):
    s = bslots.astype(np.intp)
    ab, it = basis[s], intensity[s]
    match = ab == bbases
    cls = ab.astype(np.intp) * 3 + it
    det = np.bincount(cls, minlength=6).reshape(2, 3)
    sif = np.bincount(cls[match], minlength=6).reshape(2, 3)
    return match, bslots[match], ab[match], bit[s][match], it[match], det, sif


def ref_errors(a, b, bases, intens):
    cls = bases.astype(np.intp) * 3 + intens
    err = np.bincount(cls, weights=(a != b), minlength=6).reshape(2, 3)
    cmp = np.bincount(cls, minlength=6).reshape(2, 3)
    return err, cmp


def make_frame(rng, frame_len):
    basis = (rng.random(frame_len) < 0.3).astype(np.uint8)        # biased basis choice
    bit = rng.integers(0, 2, frame_len, dtype=np.uint8)
    intensity = rng.choice(np.array([0, 1, 2], np.uint8), size=frame_len, p=[0.7, 0.2, 0.1])
    return basis, bit, intensity


def make_events(rng, frame_len, n):
    slots = np.sort(rng.choice(frame_len, size=n, replace=False)).astype(np.uint64)
    # Mostly single clicks, some double clicks of every kind.
    singles = np.array([1, 2, 4, 8], np.uint8)
    clicks = singles[rng.integers(0, 4, n)]
    multi = rng.random(n) < 0.15
    clicks[multi] = rng.integers(1, 16, int(multi.sum()), dtype=np.uint8)
    return slots, clicks


# ---------------------------------------------------------------- agreement
@pytest.mark.parametrize(("frame_len", "n"), [(1, 1), (2, 1), (64, 0), (64, 64), (100, 37),
                                              (1000, 999), (1 << 16, 5000), (1 << 20, 100_000)])
def test_matches_reference(frame_len, n):
    rng = np.random.default_rng(frame_len * 7 + n)
    basis, bit, intensity = make_frame(rng, frame_len)
    slots, clicks = make_events(rng, frame_len, n)
    words = rng.integers(0, 2**64, size=(n + 63) // 64 + 1, dtype=np.uint64)

    ann = postproc_c.bob_announce(slots, clicks, frame_len, rng=words)
    rs, rb, rbit, rcross, rsq, rused = ref_bob(slots, clicks, words)
    assert np.array_equal(ann.slots, rs) and ann.slots.dtype == np.uint64
    assert np.array_equal(ann.bases, rb) and ann.bases.dtype == np.uint8
    assert np.array_equal(ann.bits, rbit)
    assert ann.n_cross_dropped == rcross and ann.rng_bits_used == rused
    assert ann.n_squashed.tolist() == rsq.tolist()
    assert ann.n_events == n
    assert ann.counts.sum() + ann.n_cross_dropped == n

    al = postproc_c.alice_sift(ann.slots, ann.bases, basis, bit, intensity)
    m, ss, sb, sbit, sit, det, sif = ref_alice(ann.slots, ann.bases, basis, bit, intensity)
    assert al.match.dtype == np.bool_ and np.array_equal(al.match, m)
    assert np.array_equal(al.slots, ss) and np.array_equal(al.bases, sb)
    assert np.array_equal(al.bits, sbit) and np.array_equal(al.intensities, sit)
    assert np.array_equal(al.detections, det) and np.array_equal(al.sifted, sif)
    assert al.detections.dtype == np.uint64

    bob = postproc_c.bob_sift(ann, al.match, al.intensities)
    assert np.array_equal(bob.slots, al.slots) and np.array_equal(bob.bases, al.bases)
    assert np.array_equal(bob.bits, ref_bob(slots, clicks, words)[2][m])

    ec = postproc_c.error_counts(al.bits, bob.bits, al.bases, al.intensities)
    err, cmp = ref_errors(al.bits, bob.bits, al.bases, al.intensities)
    assert np.array_equal(ec.errors, err) and np.array_equal(ec.compared, cmp)
    assert np.array_equal(ec.compared, al.sifted)

    assert np.array_equal(postproc_c.frame_counts(basis, intensity),
                          np.bincount(basis.astype(np.intp) * 3 + intensity, minlength=6).reshape(2, 3))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_matches_reference_hypothesis(data):
    frame_len = data.draw(st.integers(1, 300))
    slots = np.array(sorted(data.draw(st.sets(st.integers(0, frame_len - 1), max_size=frame_len))),
                     dtype=np.uint64)
    n = slots.size
    clicks = np.array(data.draw(st.lists(st.integers(1, 15), min_size=n, max_size=n)), dtype=np.uint8)
    basis = np.array(data.draw(st.lists(st.integers(0, 1), min_size=frame_len, max_size=frame_len)), np.uint8)
    bit = np.array(data.draw(st.lists(st.integers(0, 1), min_size=frame_len, max_size=frame_len)), np.uint8)
    inten = np.array(data.draw(st.lists(st.integers(0, 2), min_size=frame_len, max_size=frame_len)), np.uint8)
    seed = data.draw(st.integers(0, 2**32))
    words = np.random.default_rng(seed).integers(0, 2**64, size=(n + 63) // 64, dtype=np.uint64)
    r = postproc_c.sift(slots, clicks, basis, bit, inten, rng=words)
    rs, rb, rbit, _, _, _ = ref_bob(slots, clicks, words)
    m, ss, _, sbit, sit, det, sif = ref_alice(rs, rb, basis, bit, inten)
    assert np.array_equal(r.announcement.bits, rbit)
    assert np.array_equal(r.alice.match, m) and np.array_equal(r.alice.bits, sbit)
    assert np.array_equal(r.bob.bits, rbit[m]) and np.array_equal(r.bob.intensities, sit)
    assert np.array_equal(r.alice.detections, det) and np.array_equal(r.alice.sifted, sif)


def test_ideal_channel_gives_identical_keys():
    # Bob measures Alice's state perfectly when the bases agree: sifted keys must be equal,
    # and error counts zero; mismatched bases give random clicks that must all be sifted away.
    rng = np.random.default_rng(42)
    frame_len = 1 << 18
    basis, bit, intensity = make_frame(rng, frame_len)
    slots = np.sort(rng.choice(frame_len, size=20_000, replace=False)).astype(np.uint64)
    s = slots.astype(np.intp)
    bob_basis = (rng.random(slots.size) < 0.3).astype(np.uint8)
    same = bob_basis == basis[s]
    bob_bit = np.where(same, bit[s], rng.integers(0, 2, slots.size)).astype(np.uint8)
    clicks = (1 << (2 * bob_basis + bob_bit)).astype(np.uint8)
    r = postproc_c.sift(slots, clicks, basis, bit, intensity, rng=7)
    assert r.alice.bits.size == int(same.sum()) > 1000
    assert np.array_equal(r.alice.bits, r.bob.bits)
    assert np.array_equal(r.alice.slots, slots[same])
    ec = postproc_c.error_counts(r.alice.bits, r.bob.bits, r.alice.bases, r.alice.intensities)
    assert int(ec.errors.sum()) == 0 and int(ec.compared.sum()) == r.alice.bits.size
    assert np.all(np.isnan(ec.rates()) | (ec.rates() == 0))
    # Every announced event counted once in detections.
    assert int(r.alice.detections.sum()) == slots.size


def test_split_across_nodes_through_bytes():
    # The engine carries only bytes between the nodes: the public parts round-trip.
    rng = np.random.default_rng(3)
    basis, bit, intensity = make_frame(rng, 4096)
    slots, clicks = make_events(rng, 4096, 500)
    ann = postproc_c.bob_announce(slots, clicks, 4096, rng=11)
    wire_slots = np.frombuffer(ann.slots.tobytes(), np.uint64)
    wire_bases = np.frombuffer(ann.bases.tobytes(), np.uint8)
    al = postproc_c.alice_sift(wire_slots, wire_bases, basis, bit, intensity)
    wire_match = np.frombuffer(al.match.astype(np.uint8).tobytes(), np.uint8)
    bob = postproc_c.bob_sift(ann, wire_match, np.frombuffer(al.intensities.tobytes(), np.uint8))
    ref = postproc_c.sift(slots, clicks, basis, bit, intensity, rng=11)
    assert np.array_equal(bob.bits, ref.bob.bits) and np.array_equal(al.bits, ref.alice.bits)
    assert np.array_equal(bob.intensities, al.intensities)


def test_squashing_is_reproducible_and_uses_the_source():
    slots = np.arange(0, 2000, 2, dtype=np.uint64)
    clicks = np.full(slots.size, 3, np.uint8)              # all H+V double clicks
    a = postproc_c.bob_announce(slots, clicks, 2000, rng=123)
    b = postproc_c.bob_announce(slots, clicks, 2000, rng=np.random.default_rng(123))
    c = postproc_c.bob_announce(slots, clicks, 2000, rng=124)
    assert np.array_equal(a.bits, b.bits)
    assert not np.array_equal(a.bits, c.bits)
    assert a.rng_bits_used == 1000 and a.n_squashed.tolist() == [1000, 0]
    assert 400 < int(a.bits.sum()) < 600
    words = np.array([0xF0F0F0F0F0F0F0F0] * 16, np.uint64)
    d = postproc_c.bob_announce(slots, clicks, 2000, rng=words)
    expect = np.unpackbits(words.view(np.uint8), bitorder="little")[:1000]
    assert np.array_equal(d.bits, expect)


def test_random_stream_exhausted_is_an_error():
    slots = np.arange(100, dtype=np.uint64)
    clicks = np.full(100, 12, np.uint8)                    # D+A: 100 bits needed
    with pytest.raises(ValueError, match=r"^rng: random bit stream exhausted at event 64 \(64 bits given\)"):
        postproc_c.bob_announce(slots, clicks, 100, rng=np.zeros(1, np.uint64))
    ok = postproc_c.bob_announce(slots, clicks, 100, rng=np.zeros(2, np.uint64))
    assert ok.rng_bits_used == 100


# ---------------------------------------------------------------- bad input
def _bob(slots=None, clicks=None, frame_len=10, rng=0):
    if slots is None:
        slots = np.array([1, 3, 5], np.uint64)
    if clicks is None:
        clicks = np.array([1, 2, 4], np.uint8)
    return postproc_c.bob_announce(slots, clicks, frame_len, rng=rng)


@pytest.mark.parametrize(
    ("kwargs", "exc", "msg"),
    [
        ({"slots": np.array([1, 3, 3], np.uint64)}, ValueError, r"^slots: not strictly increasing at index 2"),  # noqa: E501
        ({"slots": np.array([4, 3, 5], np.uint64)}, ValueError, r"^slots: not strictly increasing at index 1"),  # noqa: E501
        ({"slots": np.array([1, 3, 10], np.uint64)}, ValueError,
         r"^slots: slot 10 at index 2 is outside the frame \(frame_len=10\)"),
        ({"slots": np.array([1, 3, 5], np.int64)}, ValueError, r"^slots: expected dtype uint64"),
        ({"slots": [1, 3, 5]}, TypeError, r"^slots:"),
        ({"slots": np.arange(6, dtype=np.uint64)[::2]}, ValueError, r"^slots: array must be C-contiguous"),
        ({"clicks": np.array([1, 0, 4], np.uint8)}, ValueError, r"^clicks: invalid click mask 0 at index 1"),
        ({"clicks": np.array([1, 2, 16], np.uint8)}, ValueError, r"^clicks: invalid click mask 16 at index 2"),  # noqa: E501
        ({"clicks": np.array([1, 2], np.uint8)}, ValueError, r"^clicks: length 2 differs from slots length 3"),  # noqa: E501  # noqa: E501
        ({"clicks": np.array([1, 2, 4], np.int32)}, ValueError, r"^clicks: expected dtype uint8"),
        ({"frame_len": -1}, ValueError, r"^frame_len:"),
        ({"frame_len": 10.0}, TypeError, r"^frame_len:"),
        ({"rng": "seed"}, TypeError, r"^rng:"),
        ({"rng": np.zeros(2, np.int64)}, ValueError, r"^rng: expected dtype uint64"),
    ],
)
def test_bob_bad_inputs(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        _bob(**kwargs)


def test_bob_reports_first_error():
    # Unsorted at index 1 comes before the bad click mask at index 2.
    with pytest.raises(ValueError, match=r"^slots: not strictly increasing at index 1"):
        _bob(slots=np.array([5, 2, 7], np.uint64), clicks=np.array([1, 1, 0], np.uint8))


def _frame(n=10):
    return (np.zeros(n, np.uint8), np.zeros(n, np.uint8), np.zeros(n, np.uint8))


@pytest.mark.parametrize(
    ("slots", "bases", "pattern_fix", "exc", "msg"),
    [
        ([1, 1], [0, 0], None, ValueError, r"^bob_slots: not strictly increasing at index 1"),
        ([0, 10], [0, 0], None, ValueError, r"^bob_slots: slot 10 at index 1 is outside the frame"),
        ([2**63], [0], None, ValueError, r"^bob_slots: slot 9223372036854775808 at index 0 is outside"),
        ([1, 2], [0, 2], None, ValueError, r"^bob_bases: value 2 at index 1"),
        ([1, 2], [0], None, ValueError, r"^bob_bases: length 1 differs from bob_slots length 2"),
        ([1, 2], [0, 1], ("basis", 2, 3), ValueError, r"^basis: value 3 at slot 2"),
        ([1, 2], [0, 1], ("bit", 1, 2), ValueError, r"^bit: value 2 at slot 1"),
        ([1, 2], [0, 1], ("intensity", 2, 3), ValueError, r"^intensity: value 3 at slot 2"),
    ],
)
def test_alice_bad_inputs(slots, bases, pattern_fix, exc, msg):
    basis, bit, intensity = _frame()
    if pattern_fix:
        name, slot, value = pattern_fix
        {"basis": basis, "bit": bit, "intensity": intensity}[name][slot] = value
    with pytest.raises(exc, match=msg):
        postproc_c.alice_sift(np.array(slots, np.uint64), np.array(bases, np.uint8), basis, bit, intensity)


def test_alice_pattern_shape_errors():
    s, b = np.array([1], np.uint64), np.array([0], np.uint8)
    basis, bit, intensity = _frame()
    with pytest.raises(ValueError, match="^bit: length 9 differs from basis length 10"):
        postproc_c.alice_sift(s, b, basis, bit[:9].copy(), intensity)
    with pytest.raises(ValueError, match="^intensity: expected dtype uint8"):
        postproc_c.alice_sift(s, b, basis, bit, intensity.astype(np.int8))
    with pytest.raises(ValueError, match="^basis: array must be C-contiguous"):
        postproc_c.alice_sift(s, b, np.zeros(20, np.uint8)[::2], bit, intensity)
    with pytest.raises(ValueError, match="^bob_slots: expected dtype uint64"):
        postproc_c.alice_sift(s.astype(np.int64), b, basis, bit, intensity)


def test_bob_sift_bad_inputs():
    ann = _bob()
    with pytest.raises(ValueError, match="^match: length 2 differs"):
        postproc_c.bob_sift(ann, np.array([True, False]))
    with pytest.raises(ValueError, match="^match: array must be C-contiguous"):
        postproc_c.bob_sift(ann, np.ones(6, bool)[::2])
    with pytest.raises(ValueError, match="^match: values must be 0 or 1, got 2 at index 1"):
        postproc_c.bob_sift(ann, np.array([1, 2, 0], np.uint8))
    with pytest.raises(ValueError, match="^match: expected dtype bool or uint8, got int64"):
        postproc_c.bob_sift(ann, np.array([1, 0, 0], np.int64))
    with pytest.raises(ValueError, match="^intensities: length 2 differs from the 1 matched"):
        postproc_c.bob_sift(ann, np.array([1, 0, 0], np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="^intensities: values must be 0..2"):
        postproc_c.bob_sift(ann, np.array([1, 0, 0], np.uint8), np.array([3], np.uint8))
    with pytest.raises(TypeError, match="^announcement:"):
        postproc_c.bob_sift("ann", np.array([1, 0, 0], np.uint8))


@pytest.mark.parametrize(("which", "value", "msg"), [
    (0, 2, r"^alice_bits: value 2 at index 3"), (1, 5, r"^bob_bits: value 5 at index 3"),
    (2, 2, r"^bases: value 2 at index 3"), (3, 3, r"^intensities: value 3 at index 3"),
])
def test_error_counts_bad_values(which, value, msg):
    arrs = [np.zeros(6, np.uint8) for _ in range(4)]
    arrs[which][3] = value
    with pytest.raises(ValueError, match=msg):
        postproc_c.error_counts(*arrs)


def test_error_counts_and_frame_counts_shape_errors():
    z = np.zeros(4, np.uint8)
    with pytest.raises(ValueError, match="^bases: length 3 differs from alice_bits length 4"):
        postproc_c.error_counts(z, z, z[:3].copy(), z)
    with pytest.raises(ValueError, match="^bob_bits: expected dtype uint8"):
        postproc_c.error_counts(z, z.astype(bool), z, z)
    with pytest.raises(ValueError, match="^basis: value 2 at slot 1"):
        postproc_c.frame_counts(np.array([0, 2], np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="^intensity: value 7 at slot 0"):
        postproc_c.frame_counts(np.zeros(2, np.uint8), np.array([7, 0], np.uint8))
    with pytest.raises(ValueError, match="^intensity: length 1 differs"):
        postproc_c.frame_counts(np.zeros(2, np.uint8), np.zeros(1, np.uint8))


def test_empty_inputs():
    e = np.zeros(0, np.uint64)
    ann = postproc_c.bob_announce(e, np.zeros(0, np.uint8), 0, rng=1)
    assert ann.slots.size == 0 and ann.rng_bits_used == 0
    al = postproc_c.alice_sift(ann.slots, ann.bases, *_frame(5))
    assert al.bits.size == 0 and int(al.detections.sum()) == 0
    assert postproc_c.bob_sift(ann, al.match).bits.size == 0


def test_kat_is_registered_and_passes():
    from postproc_c.selftest import _KATS

    assert sifting._kat_sifting() and "sifting" in _KATS
    assert postproc_c.selftest()["sifting"] is True


def test_c_guards():
    from postproc_c import ffi, lib

    n_out = ffi.new("size_t *")
    used = ffi.new("uint64_t *")
    counts = ffi.new("uint64_t[5]")
    s = np.array([1, 2], np.uint64)
    c = np.array([1, 2], np.uint8)
    ps, pc = ffi.from_buffer("uint64_t[]", s), ffi.from_buffer("uint8_t[]", c)
    assert lib.qpp_sift_bob(ps, pc, 2, 10, ffi.NULL, 0, ffi.NULL, ffi.NULL, ffi.NULL, n_out, used,
                            counts, ffi.NULL) == lib.QPP_ERR_NULL
    assert lib.qpp_sift_bob(ps, pc, 2, 10, ffi.NULL, 64, ffi.new("uint64_t[2]"), ffi.new("uint8_t[2]"),
                            ffi.new("uint8_t[2]"), n_out, used, counts, ffi.NULL) == lib.QPP_ERR_NULL
    det, sif = ffi.new("uint64_t[6]"), ffi.new("uint64_t[6]")
    assert lib.qpp_sift_alice(ps, pc, 2, ffi.NULL, ffi.NULL, ffi.NULL, 10, ffi.new("uint8_t[2]"), ffi.NULL,
                              ffi.new("uint8_t[2]"), ffi.new("uint8_t[2]"), ffi.new("uint8_t[2]"),
                              n_out, det, sif, ffi.NULL) == lib.QPP_ERR_NULL
    assert lib.qpp_sift_error_counts(ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL, 1, det, sif,
                                     ffi.NULL) == lib.QPP_ERR_NULL
    assert lib.qpp_sift_frame_counts(ffi.NULL, ffi.NULL, 0, ffi.NULL, ffi.NULL) == lib.QPP_ERR_NULL

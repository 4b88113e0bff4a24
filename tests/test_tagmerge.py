"""The C k-way merge and pair helpers of drivers.tagmerge against numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.idq_id900 import decode_timestamps, merge_channels, referenced_times
from drivers.tagmerge import (
    MAX_STREAMS,
    PairError,
    check_pairs,
    merge_sorted,
    merge_sorted_reference,
    pair_views,
    pairs_affine,
)


def _streams(rng, k, n_max, lo=-(1 << 62), span=1 << 20):
    out = []
    for _ in range(k):
        n = int(rng.integers(0, n_max + 1))
        base = int(rng.integers(lo, lo + span)) if lo < 0 else 0
        out.append(np.sort(rng.integers(0, span, n)).astype(np.int64) + base)
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7, 8, 9, 16, MAX_STREAMS])
def test_merge_matches_lexsort_reference(k):
    rng = np.random.default_rng(k)
    times = _streams(rng, k, 3000, span=5000)  # many equal times across streams: stability matters
    labels = [int(x) for x in rng.permutation(256)[:k]]
    t, lab = merge_sorted(times, labels)
    rt, rl = merge_sorted_reference(times, labels)
    np.testing.assert_array_equal(t, rt)
    np.testing.assert_array_equal(lab, rl)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=40), min_size=0, max_size=9),
       st.randoms(use_true_random=False))
def test_merge_fuzz_extremes_and_ties(lists, rnd):
    times = [np.array(sorted(x), np.int64) for x in lists]
    labels = [rnd.randrange(4) for _ in lists]  # repeated labels: input order breaks the tie
    t, lab = merge_sorted(times, labels)
    rt, rl = merge_sorted_reference(times, labels)
    np.testing.assert_array_equal(t, rt)
    np.testing.assert_array_equal(lab, rl)


def test_merge_refuses_unsorted_stream_naming_it_and_bad_arguments():
    good = np.arange(10, dtype=np.int64)
    bad = np.array([1, 5, 3], np.int64)
    with pytest.raises(ValueError, match=r"times\[2\] \(label 7\) is not sorted"):
        merge_sorted([good, good, bad], [1, 9, 7])
    with pytest.raises(ValueError, match="labels has 1"):
        merge_sorted([good, good], [1])
    with pytest.raises(ValueError, match="at most"):
        merge_sorted([good] * (MAX_STREAMS + 1), [0] * (MAX_STREAMS + 1))
    with pytest.raises(TypeError, match=r"times\[0\]"):
        merge_sorted([[1, 2]], [0])
    with pytest.raises(ValueError, match=r"labels\[0\] = 300"):
        merge_sorted([good], [300])
    # strided and narrower inputs are accepted (copied once)
    t, lab = merge_sorted([np.arange(20, dtype=np.int64)[::2], np.arange(5, dtype=np.int32)], [2, 1])
    rt, rl = merge_sorted_reference([np.arange(0, 20, 2), np.arange(5)], [2, 1])
    np.testing.assert_array_equal(t, rt)
    np.testing.assert_array_equal(lab, rl)


def test_merge_channels_raises_malformed_reply_on_unsorted_channel():
    from drivers.errors import MalformedReply

    with pytest.raises(MalformedReply, match=r"label 3"):
        merge_channels([np.arange(4), np.array([3, 2, 1])], [1, 3])


def _pairs(values, indices):
    a = np.empty(2 * len(values), np.uint64)
    a[0::2], a[1::2] = values, indices
    return a[0::2], a[1::2]


def test_check_pairs_against_numpy():
    rng = np.random.default_rng(3)
    v = rng.integers(0, 1 << 62, 1000, dtype=np.uint64)
    r = np.sort(rng.integers(0, 1 << 40, 1000, dtype=np.uint64))
    ts, ref = _pairs(v, r)
    assert pair_views(ts, ref)
    check_pairs(ts, ref, value_limit=1 << 62, index_limit=1 << 40)
    for pos, kind, mutate in [(417, "range", lambda v, r: v.__setitem__(417, 1 << 62)),
                              (99, "range", lambda v, r: r.__setitem__(99, 1 << 40)),
                              (500, "order", lambda v, r: r.__setitem__(500, r[499] - 1))]:
        v2, r2 = v.copy(), r.copy()
        mutate(v2, r2)
        ts, ref = _pairs(v2, r2)
        # numpy reference of the first offender
        bad_range = np.flatnonzero((v2 >= 1 << 62) | (r2 >= 1 << 40))
        bad_order = np.flatnonzero(r2[1:] < r2[:-1]) + 1
        first = min([*bad_range[:1], *bad_order[:1]])
        with pytest.raises(PairError) as ei:
            check_pairs(ts, ref, value_limit=1 << 62, index_limit=1 << 40)
        assert (ei.value.index, ei.value.kind) == (first, kind) == (pos, kind)
    check_pairs(*_pairs([], []), value_limit=1, index_limit=1)
    with pytest.raises(ValueError, match="interleaved"):
        check_pairs(np.arange(4, dtype=np.uint64), np.arange(4, dtype=np.uint64), value_limit=9,
                    index_limit=9)


def test_pairs_affine_against_python_ints_and_overflow():
    rng = np.random.default_rng(4)
    v = rng.integers(0, 10**6, 777, dtype=np.uint64)
    r = np.sort(rng.integers(0, 10**9, 777, dtype=np.uint64))
    ts, ref = _pairs(v, r)
    out = pairs_affine(ts, ref, 1_000_000, np.empty(777, np.int64))
    np.testing.assert_array_equal(out, [int(b) * 1_000_000 + int(a) for a, b in zip(v, r)])
    # one pair overflows: named exactly; a large value and a large index in different pairs do not
    big = (2**63 - 1) // 1000
    ts, ref = _pairs([5, 2**62, 0, 7], [1, 0, big, big])  # max value and max index apart: fine
    pairs_affine(ts, ref, 1000, np.empty(4, np.int64))
    ts, ref = _pairs([5, 0, 1000, 7], [1, 2, big, 3])
    with pytest.raises(PairError) as ei:
        pairs_affine(ts, ref, 1000, np.empty(4, np.int64))
    assert (ei.value.index, ei.value.kind) == (2, "overflow")


def test_referenced_times_c_and_numpy_paths_agree():
    rng = np.random.default_rng(5)
    period = 1_000_000
    msgs = []
    for _ in range(3):
        t = np.sort(rng.integers(0, 10**10, 5000))
        msgs.append(np.stack([t % period, t // period], axis=1).astype("<u8").tobytes())
    parts = [decode_timestamps(m, with_ref_index=True) for m in msgs]
    fast = referenced_times(parts, period)
    slow = referenced_times([(ts.copy(), ref.copy()) for ts, ref in parts], period)  # not pair views
    want = np.concatenate([ref * period + ts for ts, ref in parts])
    np.testing.assert_array_equal(fast, want)
    np.testing.assert_array_equal(slow, want)
    from drivers.errors import MalformedReply

    huge = np.array([[0, (1 << 40) - 1]], "<u8").tobytes()
    for p in ([decode_timestamps(huge, with_ref_index=True)],
              [tuple(x.copy() for x in decode_timestamps(huge, with_ref_index=True))]):
        with pytest.raises(MalformedReply, match="overflows int64"):
            referenced_times(p, 10**12)


def test_decode_timestamps_unaligned_buffer_is_copied_then_checked():
    payload = np.array([[5, 1], [3, 2], [9, 2]], "<u8").tobytes()
    buf = memoryview(bytearray(b"\0" + payload))[1:]  # 8-byte words starting at an odd address
    ts, ref = decode_timestamps(buf, with_ref_index=True)
    np.testing.assert_array_equal(ts, [5, 3, 9])
    np.testing.assert_array_equal(ref, [1, 2, 2])
    from drivers.errors import MalformedReply

    bad = memoryview(bytearray(b"\0" + np.array([[5, 2], [3, 1]], "<u8").tobytes()))[1:]
    with pytest.raises(MalformedReply, match=r"go backwards.*record 1"):
        decode_timestamps(bad, with_ref_index=True)


@pytest.mark.parametrize("sparse_label", [0, 3, 9, 2])
def test_sparse_stream_is_inserted_exactly_as_merged(sparse_label):
    """A stream of <= 1/32 of the entries (the sync tags) takes the insertion path in C; its
    result must equal the lexsort reference, ties included (sparse label below, between,
    above and equal to the big streams' labels)."""
    rng = np.random.default_rng(sparse_label + 40)
    big = [np.sort(rng.integers(0, 20_000, 5000)).astype(np.int64) for _ in range(4)]
    sync = np.sort(rng.choice(np.concatenate(big), 300))  # every sync time collides with a detector tag
    sync = np.concatenate([[-5], sync, [10**9]])  # and one before and one after everything
    times = [*big, sync]
    labels = [2, 4, 6, 8, sparse_label]
    t, lab = merge_sorted(times, labels)
    rt, rl = merge_sorted_reference(times, labels)
    np.testing.assert_array_equal(t, rt)
    np.testing.assert_array_equal(lab, rl)
    # the sync tags in a frame-referenced batch (channel 0 lowest) come first among equal times
    b = merge_channels([*big, np.arange(0, 20_000, 997, dtype=np.int64)], [1, 2, 3, 4, 0])
    assert bool(np.all(np.diff(b.t_ps) >= 0))
    eq = np.flatnonzero(np.diff(b.t_ps) == 0)
    assert bool(np.all(b.channel[eq] <= b.channel[eq + 1]))

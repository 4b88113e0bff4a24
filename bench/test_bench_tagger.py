"""Time-tag decoding and random-source throughput.

* T2 decode (PicoQuant HydraHarp V2 records -> int64 ps + uint8 channel), in
  tags out per second, target 80 M/s per core; baseline: a straightforward
  numpy decoder (field extraction with ``np.where`` and a full ``cumsum`` of
  overflow counts); also PicoQuant's per-record loop (their Read_PTU.py logic,
  struct unpack per record) on a small sample, for scale.
* ID900 stream decode + merge of 4 channels and the sync tags (frame-referenced
  pairs), the driver's path (C k-way merge) against numpy decode + lexsort;
  the 4-channel merge alone against lexsort.
* OS entropy source in bits per second (target 1 Gb/s), baseline ``os.urandom``.
* Bob's slotting (``link.slotting``) of the model's metro-25km tags (4 frames of 2^20 slots,
  162k tags, one push and a flush): the C path (``postproc_c.slotting``, src/slot.c) with the
  dead-time guard and without, and the numpy reference (``Slotter(reference=True)``) with the
  guard, against the baseline: the numpy reference with the guard off (the slotter as it was
  before the guard). Target: the link's own tag rate there (~39 M tags/s), what a real-time
  Bob must sustain. The C entries check that they give the reference's events. One more C
  entry counts only the dead-time check's gaps (one edge, as before the afterpulse check's
  bands): its ratio to the guarded entry is what the afterpulse counts cost.

    python -m bench -k tagger
"""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from bench.common import record
from drivers.idq_id900 import decode_timestamps, merge_channels, referenced_times
from drivers.picoquant import RT_HYDRAHARP2_T2, T2Decoder
from drivers.qrng import OsEntropySource
from drivers.tagmerge import merge_sorted_reference
from hil.emulated.picoquant import encode_t2

ROUNDS = 5
MERGE_ROUNDS = 20  # ~10 ms calls: more rounds for a steadier mean on a shared machine


def make_records(n_tags: int, seed: int = 1, mean_gap_ps: int = 1000) -> tuple[np.ndarray, int]:
    """Sorted tags on sync + 4 detectors (about 30 tags per 2**25 ps wrap at 1 ns gaps)."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.integers(1, 2 * mean_gap_ps, n_tags)).astype(np.int64)
    ch = rng.integers(0, 5, n_tags).astype(np.uint8)
    recs, _ = encode_t2(t, ch)
    return recs, n_tags


def naive_numpy_decode(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The obvious numpy version: every field separately, cumsum over all records."""
    special = (w >> 31).astype(np.uint8)
    channel = ((w >> 25) & 0x3F).astype(np.uint8)
    timetag = (w & 0x1FFFFFF).astype(np.int64)
    ofl = (special == 1) & (channel == 63)
    count = np.where(ofl, np.where(timetag == 0, 1, timetag), 0)
    t = np.cumsum(count) * 33554432 + timetag
    keep = (special == 0) | (channel == 0)
    out_ch = np.where(special == 1, 0, channel + 1).astype(np.uint8)
    return t[keep], out_ch[keep]


def python_loop_decode(raw: bytes) -> list[tuple[int, int]]:
    """PicoQuant's Read_PTU.py readHT2(2) logic, one record at a time (struct unpack)."""
    out, ofl = [], 0
    for (rec,) in struct.iter_unpack("<I", raw):
        special, channel, timetag = rec >> 31, (rec >> 25) & 0x3F, rec & 0x1FFFFFF
        if special:
            if channel == 0x3F:
                ofl += 33554432 * (timetag or 1)
            elif channel == 0:
                out.append((ofl + timetag, 0))
        else:
            out.append((ofl + timetag, channel + 1))
    return out


@pytest.mark.parametrize("n", [1 << 20, 1 << 23])
def test_t2_decode(benchmark, n):
    recs, n_tags = make_records(n)
    benchmark.group = f"tagger-t2-decode-{n >> 20}M"

    def setup():
        return (T2Decoder(RT_HYDRAHARP2_T2, 1.0), recs), {}

    batch = benchmark.pedantic(lambda d, w: d.decode(w), setup=setup, rounds=ROUNDS, iterations=1)
    assert len(batch) == n_tags
    record(benchmark, units=n_tags, unit="tag", target=80e6,
           note="T2Decoder.decode incl. time-order check")


@pytest.mark.parametrize("n", [1 << 20, 1 << 23])
def test_t2_decode_naive_numpy_baseline(benchmark, n):
    recs, n_tags = make_records(n)
    benchmark.group = f"tagger-t2-decode-{n >> 20}M"
    t, c = benchmark.pedantic(naive_numpy_decode, args=(recs,), rounds=ROUNDS, iterations=1)
    assert t.size == n_tags
    ref = T2Decoder(RT_HYDRAHARP2_T2).decode(recs)
    assert np.array_equal(t, ref.t_ps) and np.array_equal(c, ref.channel)
    record(benchmark, units=n_tags, unit="tag", baseline=True, note="naive numpy (full cumsum)")


def test_t2_decode_python_loop_sample(benchmark):
    recs, n_tags = make_records(20_000)
    benchmark.group = "tagger-t2-decode-1M"
    raw = recs.astype("<u4").tobytes()
    out = benchmark.pedantic(python_loop_decode, args=(raw,), rounds=3, iterations=1)
    assert len(out) == n_tags
    record(benchmark, units=n_tags, unit="tag", note="per-record struct loop on a 20k sample")


def _idq_messages(n_per_channel: int, period_ps: int = 1_000_000):
    """Four channels of sorted clicks as (time since sync, sync index) pairs."""
    rng = np.random.default_rng(2)
    msgs = []
    for _ in range(4):
        t = np.sort(rng.integers(0, n_per_channel * 4 * period_ps // 100, n_per_channel))
        pairs = np.stack([t % period_ps, t // period_ps], axis=1).astype("<u8")
        msgs.append(pairs.tobytes())
    return msgs


_WORK = np.empty(1 << 21, np.int64)


def _idq_decode(msgs, period_ps=1_000_000):
    """The driver's path: validate each message, then ref * period + dt per channel into a reused buffer."""
    out, off = [], 0
    for m in msgs:
        d = decode_timestamps(m, with_ref_index=True)
        out.append(referenced_times([d], period_ps, out=_WORK[off:off + d[0].size]))
        off += d[0].size
    return out


def _idq_decode_numpy(msgs, period_ps=1_000_000):
    times = []
    for m in msgs:
        ts, ref = decode_timestamps(m, with_ref_index=True)
        times.append(ref * period_ps + ts)
    return times


# The driver's frame-referenced path merges the four detector channels and the sync tags it makes
# itself (channel 0, one per frame: here one per 1 us frame, about 1 % of the tags).
CHANNELS = [1, 2, 3, 4, 0]


def _sync(msgs, period_ps=1_000_000):
    last = max(int(np.frombuffer(m, "<u8")[-1]) for m in msgs)  # the last pair's reference index
    return np.arange(last + 1, dtype=np.int64) * period_ps


def test_idq_decode_merge(benchmark):
    n = 1 << 18
    msgs = _idq_messages(n)
    benchmark.group = "tagger-idq-decode-merge-1M"
    b = benchmark.pedantic(lambda: merge_channels([*_idq_decode(msgs), _sync(msgs)], CHANNELS),
                           rounds=MERGE_ROUNDS, iterations=1)
    assert len(b) == 4 * n + _sync(msgs).size and bool(np.all(np.diff(b.t_ps) >= 0))
    record(benchmark, units=len(b), unit="tag", target=80e6,
           note="4 channels + sync: pairs -> ps, C k-way merge, sync inserted")


def test_idq_decode_merge_argsort_baseline(benchmark):
    n = 1 << 18
    msgs = _idq_messages(n)
    benchmark.group = "tagger-idq-decode-merge-1M"

    def run():
        times = [*_idq_decode_numpy(msgs), _sync(msgs)]
        t = np.concatenate(times)
        ch = np.concatenate([np.full(x.size, c, np.uint8) for x, c in zip(times, CHANNELS, strict=True)])
        o = np.lexsort((ch, t))
        return t[o], ch[o]

    t, c = benchmark.pedantic(run, rounds=MERGE_ROUNDS, iterations=1)
    b = merge_channels([*_idq_decode(msgs), _sync(msgs)], CHANNELS)
    assert np.array_equal(t, b.t_ps) and np.array_equal(c, b.channel)
    record(benchmark, units=t.size, unit="tag", baseline=True, note="numpy decode, lexsort merge")


def test_idq_decode_merge_packed_sort(benchmark):
    """The previous session's merge (packed t << 3 | channel keys, stable sort), for scale."""
    n = 1 << 18
    msgs = _idq_messages(n)
    benchmark.group = "tagger-idq-decode-merge-1M"

    def run():
        times = [*_idq_decode_numpy(msgs), _sync(msgs)]
        key = np.concatenate([(x << 3) | c for x, c in zip(times, CHANNELS, strict=True)])
        key.sort(kind="stable")
        return key >> 3, (key & 7).astype(np.uint8)

    t, _ = benchmark.pedantic(run, rounds=MERGE_ROUNDS, iterations=1)
    record(benchmark, units=t.size, unit="tag", note="numpy decode, packed-key stable sort")


def test_merge_only_c(benchmark):
    n = 1 << 18
    times = _idq_decode(_idq_messages(n))
    benchmark.group = "tagger-merge-only-1M"
    benchmark.pedantic(merge_channels, args=(times, [1, 2, 3, 4]), rounds=MERGE_ROUNDS, iterations=1)
    record(benchmark, units=4 * n, unit="tag", note="C k-way merge of 4 sorted channels")


def test_merge_only_lexsort_baseline(benchmark):
    n = 1 << 18
    times = _idq_decode(_idq_messages(n))
    benchmark.group = "tagger-merge-only-1M"
    benchmark.pedantic(merge_sorted_reference, args=(times, [1, 2, 3, 4]), rounds=MERGE_ROUNDS, iterations=1)
    record(benchmark, units=4 * n, unit="tag", baseline=True, note="numpy lexsort reference")


@pytest.mark.parametrize("mib", [1, 16])
def test_os_entropy_bytes(benchmark, mib):
    src = OsEntropySource()
    n = mib << 20
    benchmark.group = f"tagger-qrng-os-{mib}MiB"
    out = benchmark.pedantic(src.random_bytes, args=(n,), rounds=ROUNDS, iterations=1)
    assert out.size == n
    record(benchmark, units=8 * n, unit="bit", target=1e9, note="/dev/urandom readinto numpy")


@pytest.mark.parametrize("mib", [1, 16])
def test_os_urandom_baseline(benchmark, mib):
    n = mib << 20
    benchmark.group = f"tagger-qrng-os-{mib}MiB"
    benchmark.pedantic(os.urandom, args=(n,), rounds=ROUNDS, iterations=1)
    record(benchmark, units=8 * n, unit="bit", baseline=True, note="os.urandom (immutable bytes)")


def test_choices(benchmark):
    src = OsEntropySource()
    n = 1 << 22
    benchmark.group = "tagger-qrng-choices-4M"
    c = benchmark.pedantic(src.choices, args=(n, [0.8, 0.15, 0.05]), rounds=ROUNDS, iterations=1)
    assert c.size == n
    record(benchmark, units=n, unit="choice", note="3 classes, 32-bit thresholds")


def test_choices_numpy_generator_baseline(benchmark):
    # Reference only: numpy's PCG64 is NOT a quantum or cryptographic source.
    rng = np.random.default_rng()
    n = 1 << 22
    benchmark.group = "tagger-qrng-choices-4M"
    benchmark.pedantic(lambda: rng.choice(3, size=n, p=[0.8, 0.15, 0.05]).astype(np.uint8),
                       rounds=ROUNDS, iterations=1)
    record(benchmark, units=n, unit="choice", baseline=True, note="numpy Generator.choice (not secure)")


# -- Bob's slotting with and without the dead-time guard ------------------------------------
_SLOT_TAGS: dict = {}


def _slot_tags():
    """Tags of 4 metro-25km frames of 2^20 slots (the link's own), made once per session."""
    if not _SLOT_TAGS:
        from hil.model import LinkModel
        from link.frontend import Timing

        m = LinkModel("metro-25km", seed=1)
        res = [m.run_frame(f) for f in range(4)]
        _SLOT_TAGS["t"] = np.concatenate([r.tag_t_ps for r in res])
        _SLOT_TAGS["ch"] = np.concatenate([r.tag_channel for r in res])
        _SLOT_TAGS["timing"] = Timing.for_model(m)
    return _SLOT_TAGS


def _dead_time_gaps_only():
    """A Slotter whose gap counts are the dead-time check's alone (the C pass with one edge, as
    before the afterpulse check's bands): the bench's before, in the same process."""
    from link.slotting import Slotter

    class DeadTimeGapsOnly(Slotter):
        def _count_gaps(self, t_ps, channel):
            st = self.stats
            g, short, total = self._gap_counter.count(np.ascontiguousarray(t_ps),
                                                      np.ascontiguousarray(channel), self._gap_limit_ps())
            for d in range(4):
                st.gaps[d] += g[d]
                st.short_gaps[d] += short[d]
                st.gap_sum_ps[d] += total[d]

    return DeadTimeGapsOnly


def _slot_all(dead_time_ps: float, reference: bool = False, before_afterpulse: bool = False) -> int:
    from link.slotting import Slotter

    s = _slot_tags()
    tm = s["timing"]
    cls = _dead_time_gaps_only() if before_afterpulse else Slotter
    sl = cls(tm.frame_slots, tm.period_ps, tm.offsets_ps, tm.window_ps, dead_time_ps,
             reference=reference)
    frames = sl.push(s["t"], s["ch"]) + sl.flush()
    assert sl.fast_fallbacks == 0
    return sum(f.slots.size for f in frames)


def _real_time_rate(s) -> float:
    # the tag rate of the link itself at metro-25km (4 frames of 2^20 slots at 1 GHz, 4.19 ms of
    # light), which Bob's slotter must keep up with in real time
    return s["t"].size / (4 * s["timing"].frame_slots * s["timing"].period_ps * 1e-12)


def test_slotting_with_dead_time_guard(benchmark):
    s = _slot_tags()
    benchmark.group = "tagger-slotting-metro25km"
    dead = s["timing"].dead_time_ps
    n = benchmark.pedantic(_slot_all, args=(dead,), rounds=ROUNDS)
    assert n == _slot_all(dead, reference=True)
    record(benchmark, units=s["t"].size, unit="tag", target=_real_time_rate(s),
           note="C path (src/slot.c) with the dead-time guard")


def test_slotting_with_dead_time_guard_before_afterpulse_counts(benchmark):
    s = _slot_tags()
    benchmark.group = "tagger-slotting-metro25km"
    dead = s["timing"].dead_time_ps
    n = benchmark.pedantic(_slot_all, args=(dead, False, True), rounds=ROUNDS)
    assert n == _slot_all(dead, reference=True)
    record(benchmark, units=s["t"].size, unit="tag", target=_real_time_rate(s),
           note="C path with the guard, dead-time gap counts only (before the afterpulse check)")


def test_slotting_without_guard(benchmark):
    s = _slot_tags()
    benchmark.group = "tagger-slotting-metro25km"
    n = benchmark.pedantic(_slot_all, args=(0.0,), rounds=ROUNDS)
    assert n == _slot_all(0.0, reference=True)
    record(benchmark, units=s["t"].size, unit="tag", target=_real_time_rate(s),
           note="C path, guard off")


def test_slotting_numpy_with_dead_time_guard(benchmark):
    s = _slot_tags()
    benchmark.group = "tagger-slotting-metro25km"
    benchmark.pedantic(_slot_all, args=(s["timing"].dead_time_ps, True), rounds=ROUNDS)
    record(benchmark, units=s["t"].size, unit="tag", target=_real_time_rate(s),
           note="numpy reference with the dead-time guard")


def test_slotting_numpy_without_guard_baseline(benchmark):
    s = _slot_tags()
    benchmark.group = "tagger-slotting-metro25km"
    benchmark.pedantic(_slot_all, args=(0.0, True), rounds=ROUNDS)
    record(benchmark, units=s["t"].size, unit="tag", baseline=True,
           note="numpy reference, guard off (the slotter before the guard)")

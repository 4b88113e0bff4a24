"""LDPC reconciliation benchmarks at QBER 1, 2, 5, 8 %.

Per QBER one group ``ldpc-q<percent>`` holds:

* ``baseline``: the PyPI ``ldpc`` package's ``BpDecoder`` (sum-product,
  flooding schedule, syndrome input) decoding one frame of the QC mother code
  (n = 2^16) with R0 <= 1 - 1.2 h(q) on a BSC(q) (bench-only dependency: ``pip
  install ldpc``; without it a numpy min-sum stands in);
* ``c_decode_qc``: our int16 layered sum-product over the z = 256 lanes of
  each circulant (the decoder the protocol uses), same code, frame, channel;
* ``c_decode``: the float layered sum-product on the same code;
* ``c_decode_batch8``: float sum-product, 8 frames per call (one per AVX2 lane);
* ``blind``: the whole ``ldpc-blind`` protocol through the in-memory pipe on
  one block of 2^20 bits, the engine's default (units: sifted key bits).
  Its efficiency f = leaked/(n h(q)),
  frame error rate and messages per block are measured once on
  ``MEASURE_BLOCKS`` blocks and stored in ``extra_info``;
* ``oneway``: the one-way ``ldpc`` method at f = ONEWAY_F, the link's
  ``ldpc.ONE_WAY_F`` (two messages), same figures.

Group ``ldpc-kernel``: one frame of the rate-0.91 QC code that never decodes
(QBER 20 %), exactly KERNEL_ITERS iterations, our layered BP with int16 and with
int8 messages (on each CPU path: the default, AVX2 only, portable C) against the
PyPI ``BpDecoder``; units are edge-iterations, and ``ns_per_edge_iteration`` is
stored in ``extra_info``.

Throughputs are sifted (key) bits per second on one core. Environment:
QPP_BENCH_LDPC_BLOCKS (default 2) sets the number of blocks behind f and FER.
"""

from __future__ import annotations

import itertools
import math
import os
from functools import cache

import numpy as np
import pytest

import postproc_c as pc
from bench.common import record
from postproc_c import codes, ldpc

QBERS = (0.01, 0.02, 0.05, 0.08)
#: f and FER: MEASURE_BLOCKS blocks of BLOCK_BITS (the link.config default). The frame length is
#: ldpc.qc_frame_bits(BLOCK_BITS, blind): 4 frames of n = 294,912 per block blind, 8 of 2^17 one-way;
#: ``measure`` counts the frames each run reports, so FER holds for any frame choice.
MEASURE_BLOCKS = int(os.environ.get("QPP_BENCH_LDPC_BLOCKS", "2"))
BLOCK_BITS = 1 << 20
TARGET_BPS = 100e6
ONEWAY_F = ldpc.ONE_WAY_F        # what the link runs (`reconciliation = "ldpc"`)

try:
    import scipy.sparse as sp
    from ldpc import BpDecoder
except ImportError:  # pragma: no cover - bench-only dependency
    BpDecoder = None


def mother_for(q: float) -> float:
    # Table I's rates (as before the session-6 additions to codes.DESIGNED, so the kernel rows keep
    # their codes: 0.9 / 0.8 / 0.65 / 0.5 at QBER 1 / 2 / 5 / 8 %; 0.82 would take 2 %)
    h = ldpc.binary_entropy(q)
    return max(r for r in codes.RATES if r <= 1 - 1.2 * h)


def frame(rng, n, q):
    x = rng.integers(0, 2, n, dtype=np.uint8)
    return x, x ^ (rng.random(n) < q).astype(np.uint8)


@cache
def measure(q: float, method: str = "ldpc-blind", f: float = 1.3) -> dict:
    """Efficiency, frame error rate and messages of ``method`` over MEASURE_BLOCKS blocks of
    BLOCK_BITS (the engine's default block; sides spread a block evenly over its frames)."""
    rng = np.random.default_rng(int(q * 1000) + 17)
    opts = {} if method == "ldpc-blind" else {"f": f}
    leaked = bits = frames = frames_ok = wrong = messages = rounds = iterations = 0
    for i in range(MEASURE_BLOCKS):
        a, b = frame(rng, BLOCK_BITS, q)
        # a seed per block, as the link draws one (the adaptation positions follow it)
        res = pc.reconcile_in_memory(a, b, q, method=method, seed=3 + i, **opts)
        d = res.details
        k = d["n"] - d["d"]
        pad = d["frames"] * k - a.size
        diff = np.concatenate([res.corrected != a, np.zeros(pad, bool)]).reshape(-1, k)
        wrong += int(diff.any(axis=1).sum())
        leaked += res.leaked_bits
        bits += a.size
        frames += d["frames"]
        frames_ok += d["frames_ok"]
        messages += res.messages
        rounds += d["rounds"]
        iterations += d["iterations"]
    h = ldpc.binary_entropy(q)
    return {"efficiency": round(leaked / (bits * h), 4), "fer": (frames - frames_ok) / frames,
            "frames": frames, "undetected_wrong_frames": wrong - (frames - frames_ok),
            "messages_per_block": messages / MEASURE_BLOCKS, "rounds": rounds / MEASURE_BLOCKS,
            "iterations_per_frame": round(iterations / frames, 1),
            "mother_rate": d["mother_rate"]}


def numpy_minsum(spec, llr, syn_bits, iters=30, scale=0.75):
    """Flooding normalized min-sum in numpy (fallback baseline)."""
    rows = np.repeat(np.arange(spec.m), np.diff(spec.row_ptr.astype(np.int64)))
    cols = spec.col_idx.astype(np.int64)
    r = np.zeros(cols.size)
    sgn_syn = 1 - 2 * syn_bits[rows].astype(np.float64)
    post = llr.astype(np.float64)
    for _ in range(iters):
        q = post[cols] - r
        a = np.abs(q)
        neg = np.bincount(rows, q < 0, spec.m)[rows] - (q < 0)
        order = np.lexsort((a, rows))
        first = np.r_[0, np.flatnonzero(np.diff(rows[order])) + 1]
        m1 = np.empty(spec.m)
        m2 = np.empty(spec.m)
        m1[rows[order[first]]] = a[order[first]]
        m2[rows[order[first]]] = a[order[first + 1]]
        arg = np.zeros(cols.size, bool)
        arg[order[first]] = True
        mag = np.where(arg, m2[rows], m1[rows]) * scale
        r = np.where(neg % 2 == 1, -mag, mag) * sgn_syn
        post = llr + np.bincount(cols, r, spec.n)
        hard = (post < 0).astype(np.int64)
        if np.array_equal(np.add.reduceat(hard[cols], spec.row_ptr[:-1].astype(np.int64)) % 2, syn_bits):
            break
    return (post < 0).astype(np.uint8)


@pytest.mark.parametrize("q", QBERS)
def test_baseline(benchmark, q):
    benchmark.group = f"ldpc-q{q * 100:g}"
    c = ldpc.qc_code(mother_for(q))
    rng = np.random.default_rng(1)
    if BpDecoder is not None:
        H = sp.csr_matrix((np.ones(c.spec.edges, np.uint8), c.spec.col_idx, c.spec.row_ptr),
                          shape=(c.m, c.n))
        dec = BpDecoder(H, error_rate=q, max_iter=60, bp_method="product_sum", schedule="parallel")

        def setup():
            x, y = frame(rng, c.n, q)
            return ((H @ (x ^ y)).astype(np.uint8) % 2,), {}

        benchmark.pedantic(dec.decode, setup=setup, rounds=5, iterations=1)
        name = "ldpc (PyPI) BpDecoder product_sum, flooding"
    else:  # pragma: no cover
        def setup():
            x, y = frame(rng, c.n, q)
            llr = math.log((1 - q) / q) * (1 - 2 * y.astype(np.float64))
            return (c.spec, llr, ldpc.unpack_bits(c.syndrome(ldpc.pack_bits(x)), c.m)), {}

        benchmark.pedantic(numpy_minsum, setup=setup, rounds=3, iterations=1)
        name = "numpy flooding min-sum"
    record(benchmark, units=c.n, unit="bit", baseline=True, note=f"{name}, code R0={c.rate}")


@pytest.mark.parametrize("q", QBERS)
def test_c_decode_qc(benchmark, q):
    benchmark.group = f"ldpc-q{q * 100:g}"
    c = ldpc.qc_code(mother_for(q))
    rng = np.random.default_rng(1)
    L = math.log((1 - q) / q) * ldpc.QC_LLR_ONE

    def setup():
        x, y = frame(rng, c.n, q)
        llr = np.round(L * (1 - 2 * y.astype(np.float64))).astype(np.int16)
        return (llr, c.syndrome(ldpc.pack_bits(x))), {"max_iter": 60}

    benchmark.pedantic(c.decode_qc, setup=setup, rounds=5, iterations=1)
    record(benchmark, units=c.n, unit="bit",
           note=f"qpp QC int16 layered BP (z={c.z} lanes), code R0={c.rate}")


@pytest.mark.parametrize("q", QBERS)
def test_c_decode(benchmark, q):
    benchmark.group = f"ldpc-q{q * 100:g}"
    c = ldpc.qc_code(mother_for(q))
    rng = np.random.default_rng(1)
    L = np.float32(math.log((1 - q) / q))

    def setup():
        x, y = frame(rng, c.n, q)
        return (L * (1 - 2 * y.astype(np.float32)), c.syndrome(ldpc.pack_bits(x))), {"max_iter": 60}

    benchmark.pedantic(c.decode, setup=setup, rounds=5, iterations=1)
    record(benchmark, units=c.n, unit="bit", note=f"qpp layered BP, code R0={c.rate}")


@pytest.mark.parametrize("q", QBERS)
def test_c_decode_batch8(benchmark, q):
    benchmark.group = f"ldpc-q{q * 100:g}"
    c = ldpc.qc_code(mother_for(q))
    rng = np.random.default_rng(1)
    L = np.float32(math.log((1 - q) / q))

    def setup():
        llr = np.zeros((8, c.n), np.float32)
        syn = np.zeros((8, (c.m + 63) // 64), np.uint64)
        for i in range(8):
            x, y = frame(rng, c.n, q)
            llr[i] = L * (1 - 2 * y.astype(np.float32))
            syn[i] = c.syndrome(ldpc.pack_bits(x))
        return (llr, syn), {"max_iter": 60}

    benchmark.pedantic(c.decode_batch, setup=setup, rounds=5, iterations=1)
    record(benchmark, units=8 * c.n, unit="bit", note=f"qpp batched BP (8 frames), code R0={c.rate}")


#: Kernel speed: a frame that never decodes (QBER 20 % on the rate-0.91 code) runs exactly
#: KERNEL_ITERS iterations, so time / (KERNEL_ITERS * edges) is the cost of one edge-iteration.
KERNEL_ITERS = 20


def _kernel_frame():
    c = ldpc.qc_code(0.91)
    rng = np.random.default_rng(5)
    x, y = frame(rng, c.n, 0.2)
    return c, x, y


def test_kernel_baseline(benchmark):
    benchmark.group = "ldpc-kernel"
    if BpDecoder is None:  # pragma: no cover
        pytest.skip("the PyPI ldpc package is not installed (bench extra)")
    c, x, y = _kernel_frame()
    H = sp.csr_matrix((np.ones(c.spec.edges, np.uint8), c.spec.col_idx, c.spec.row_ptr), shape=(c.m, c.n))
    dec = BpDecoder(H, error_rate=0.2, max_iter=KERNEL_ITERS, bp_method="product_sum", schedule="parallel")
    syn = (H @ (x ^ y)).astype(np.uint8) % 2
    benchmark.pedantic(dec.decode, args=(syn,), rounds=3, iterations=1)
    record(benchmark, units=KERNEL_ITERS * c.spec.edges, unit="edge-iter", baseline=True,
           note=f"ldpc (PyPI) BpDecoder product_sum, {KERNEL_ITERS} iterations, code R0=0.91")


#: CPU paths of the QC kernel: the default (AVX-512BW where the CPU has it), AVX2 only, portable C.
KERNEL_PATHS = {"default": 0, "avx2": pc.lib.QPP_CPU_AVX512BW,
                "portable": pc.lib.QPP_CPU_AVX2 | pc.lib.QPP_CPU_AVX512BW}


@pytest.mark.parametrize("width", ["int16", "int8"])
@pytest.mark.parametrize("path", list(KERNEL_PATHS))
def test_kernel_qc(benchmark, path, width):
    """Our layered BP: int16 messages (``qc``) or int8 messages with int16 posteriors (``qc8``)."""
    benchmark.group = "ldpc-kernel"
    c, x, y = _kernel_frame()
    int8 = width == "int8"
    one = ldpc.QC8_LLR_ONE if int8 else ldpc.QC_LLR_ONE
    llr = np.round(math.log(0.8 / 0.2) * one * (1 - 2 * y.astype(np.float64))).astype(np.int16)
    syn = c.syndrome(ldpc.pack_bits(x))
    pc.lib.qpp_cpu_disable(KERNEL_PATHS[path])
    try:
        _, ok, it, _ = c.decode_qc(llr, syn, max_iter=KERNEL_ITERS, int8=int8)
        assert not ok and it == KERNEL_ITERS
        benchmark.pedantic(c.decode_qc, args=(llr, syn), kwargs={"max_iter": KERNEL_ITERS, "int8": int8},
                           rounds=5 if path == "portable" else 25, iterations=1)   # a few ms each
        features = ",".join(pc.cpu_features())
    finally:
        pc.lib.qpp_cpu_disable(0)
    ns = benchmark.stats.stats.mean / (KERNEL_ITERS * c.spec.edges) * 1e9
    record(benchmark, units=KERNEL_ITERS * c.spec.edges, unit="edge-iter", ns_per_edge_iteration=round(ns, 3),
           note=f"qpp QC {width} layered BP [{path}: {features}], {ns:.3f} ns/edge-iteration, code R0=0.91")


@pytest.mark.parametrize("q", QBERS)
def test_blind(benchmark, q):
    benchmark.group = f"ldpc-q{q * 100:g}"
    info = measure(q)
    rng = np.random.default_rng(2)
    nbits = BLOCK_BITS
    seeds = itertools.count(1)     # a fresh seed per block, as in the link: its positions are timed

    def setup():
        a, b = frame(rng, nbits, q)
        return (a, b, q), {"method": "ldpc-blind", "seed": next(seeds)}

    benchmark.pedantic(pc.reconcile_in_memory, setup=setup, rounds=3, iterations=1)
    record(benchmark, units=nbits, unit="bit", target=TARGET_BPS if q == 0.02 else None,
           note=f"ldpc-blind f={info['efficiency']} FER={info['fer']:.3f} over {info['frames']} frames",
           **info)


@pytest.mark.parametrize("q", QBERS)
def test_oneway(benchmark, q):
    benchmark.group = f"ldpc-q{q * 100:g}"
    info = measure(q, "ldpc", ONEWAY_F)
    rng = np.random.default_rng(2)
    nbits = BLOCK_BITS
    seeds = itertools.count(1)     # a fresh seed per block, as in the link: its positions are timed

    def setup():
        a, b = frame(rng, nbits, q)
        return (a, b, q), {"method": "ldpc", "seed": next(seeds), "f": ONEWAY_F}

    benchmark.pedantic(pc.reconcile_in_memory, setup=setup, rounds=3, iterations=1)
    record(benchmark, units=nbits, unit="bit",
           note=f"ldpc one-way f={info['efficiency']} FER={info['fer']:.3f} over {info['frames']} frames",
           **info)


def code_table(frames: int = 6, fs: tuple[float, ...] = (1.05, 1.10, 1.15)) -> list[str]:
    """Frame error rate of each unpunctured QC mother code (int16 layered BP, 100 iterations)
    at the QBER where its rate gives efficiency f: h(q) = (m/n)/f. The table in
    ``postproc_c/codes.py`` comes from ``python -m bench.test_bench_ldpc``."""
    lines = []
    for r in codes.QC_RATES:
        c = ldpc.qc_code(r)
        rng = np.random.default_rng(7)
        row = []
        for f in fs:
            lo, hi = 1e-6, 0.5                      # bisection for h(q) = (m/n)/f
            for _ in range(60):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if ldpc.binary_entropy(mid) < (c.m / c.n) / f else (lo, mid)
            q = lo
            fail = its = 0
            for _ in range(frames):
                x, y = frame(rng, c.n, q)
                llr = np.round(math.log((1 - q) / q) * ldpc.QC_LLR_ONE * (1 - 2 * y.astype(np.float64)))
                syn = c.syndrome(ldpc.pack_bits(x))
                out, ok, it, _ = c.decode_qc(llr.astype(np.int16), syn, max_iter=100)
                fail += not (ok and np.array_equal(ldpc.unpack_bits(out, c.n), x))
                its += it
            row.append(f"f={f:.2f} q={q:.4f} FER {fail}/{frames} it {its / frames:.0f}")
        lines.append(f"R0={r:.2f} n={c.n} m={c.m} edges={c.spec.edges} DE threshold {c.spec.threshold}: "
                     + "; ".join(row))
        print(lines[-1], flush=True)
    return lines


if __name__ == "__main__":
    code_table()

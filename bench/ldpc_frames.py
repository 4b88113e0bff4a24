"""Blind LDPC efficiency against frame length, block length and blind parameters.

What it is for: the measurements behind ``postproc_c.ldpc.qc_frame_bits`` (which
QC frame length a block uses) and ``BLIND_REVEAL`` / ``BLIND_F_START`` (the
blind start and step per QBER). Each row runs ``ldpc-blind`` through
``postproc_c.reconcile_in_memory`` on ``--blocks`` random blocks at one QBER
and prints efficiency f = leaked / (bits h(q)), frames lost, decoder
iterations per frame and messages. The blocks of a QBER come from one seeded
stream, so rows with different options see the same keys (paired comparison).
Not imported by the library; the benchmark of record is ``python -m bench -k
ldpc``.

Usage: ``python -m bench.ldpc_frames --qber 0.02 --blocks 8 --bits 1048576
--frame-bits 65536 131072`` (one row per frame length; ``--reveal-f``,
``--stall``, ``--f-start``, ``--rel-window``, ``--rel-permille``, ``--first-iter``,
``--retry-iter`` override the blind defaults; ``--algorithm qc qc8`` runs
each decoder on the same blocks; ``--ab ldpc-blind --algorithm qc qc8`` times them
interleaved, block by block;
``--keys K`` draws another key stream, to validate a choice made on the default one). ``--code-fer 0.85
--frame-bits 65536 131072 262144 --f 1.08 1.10 1.12 --frames 16``: frame error
rate of the unpunctured mother code instead (int16 BP, 200 iterations), at
the QBER where its rate gives efficiency f.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import postproc_c as pc
from postproc_c import ldpc


def run(qber: float, blocks: int, bits: int, keys: int = 0, method: str = "ldpc-blind", **options) -> dict:
    """f, frames lost, iterations per frame of ``method`` over ``blocks`` blocks (``keys``:
    which seeded key stream; 0 is the one ``bench/test_bench_ldpc.py`` measures)."""
    rng = np.random.default_rng(int(qber * 1000) + 17 + 1000 * keys)
    leaked = total = frames = ok = iters = wrong = msgs = 0
    t0 = time.perf_counter()
    for i in range(blocks):
        a = rng.integers(0, 2, bits, dtype=np.uint8)
        b = a ^ (rng.random(bits) < qber).astype(np.uint8)
        # a seed per block, as the link draws one (the adaptation positions follow it)
        res = pc.reconcile_in_memory(a, b, qber, method=method, seed=3 + i, **options)
        d = res.details
        leaked += res.leaked_bits
        total += bits
        frames += d["frames"]
        ok += d["frames_ok"]
        iters += d["iterations"]
        msgs += res.messages
        wrong += int(res.success and not np.array_equal(res.corrected, a))
    return {"f": leaked / (total * ldpc.binary_entropy(qber)), "lost": frames - ok, "frames": frames,
            "iterations_per_frame": iters / frames, "messages_per_block": msgs / blocks,
            "silent_wrong_blocks": wrong, "n": d["n"], "d": d["d"], "mother_rate": d["mother_rate"],
            "seconds": time.perf_counter() - t0}


def ab_throughput(qber: float, blocks: int, bits: int, algorithms: list[str], method: str,
                  **options) -> dict[str, float]:
    """Interleaved A/B: every block is reconciled once per decoder, the order alternating
    from block to block, so load drifts hit each decoder alike. Sifted Mb/s per decoder
    (wall time of ``reconcile_in_memory``, both sides in one process, block generation
    excluded)."""
    rng = np.random.default_rng(int(qber * 1000) + 29)
    spent = dict.fromkeys(algorithms, 0.0)
    if method == "ldpc":
        options = dict({"f": 1.2}, **options)
    for i in range(blocks + 1):
        a = rng.integers(0, 2, bits, dtype=np.uint8)
        b = a ^ (rng.random(bits) < qber).astype(np.uint8)
        for alg in (algorithms if i % 2 else algorithms[::-1]):
            t0 = time.perf_counter()
            res = pc.reconcile_in_memory(a, b, qber, method=method, seed=3 + i, algorithm=alg, **options)
            if i:                                        # block 0 warms up (code generation)
                spent[alg] += time.perf_counter() - t0
            assert res.success and np.array_equal(res.corrected, a)
    return {alg: blocks * bits / t / 1e6 for alg, t in spent.items()}


def code_fer(rate: float, frame_bits: int, f: float, frames: int, seed: int = 11) -> tuple[int, float]:
    """Frames (of ``frames``) the unpunctured QC mother code fails to decode at the QBER where
    h(q) = (m/n)/f, and mean iterations."""
    c = ldpc.qc_code(rate, frame_bits)
    lo, hi = 1e-6, 0.5
    for _ in range(60):                                  # bisection for h(q) = (m/n) / f
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ldpc.binary_entropy(mid) < (c.m / c.n) / f else (lo, mid)
    q, rng = lo, np.random.default_rng(seed)
    fail = its = 0
    for _ in range(frames):
        x = rng.integers(0, 2, c.n, dtype=np.uint8)
        y = x ^ (rng.random(c.n) < q).astype(np.uint8)
        llr = np.round(np.log((1 - q) / q) * ldpc.QC_LLR_ONE * (1 - 2 * y.astype(np.float64)))
        out, ok, it, _ = c.decode_qc(llr.astype(np.int16), c.syndrome(ldpc.pack_bits(x)), max_iter=200)
        fail += not (ok and np.array_equal(ldpc.unpack_bits(out, c.n), x))
        its += it
    return fail, its / frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qber", type=float, nargs="+", default=[0.02])
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--bits", type=int, default=1 << 20)
    ap.add_argument("--frame-bits", type=int, nargs="+", default=[0], help="0: the automatic choice")
    ap.add_argument("--reveal-f", type=float)
    ap.add_argument("--stall", type=int)
    ap.add_argument("--f-start", type=float)
    ap.add_argument("--rel-window", type=int)
    ap.add_argument("--rel-permille", type=int)
    ap.add_argument("--first-iter", type=int)
    ap.add_argument("--retry-iter", type=int)
    ap.add_argument("--keys", type=int, default=0, help="key stream (0: the benchmark's; others to validate)")
    ap.add_argument("--algorithm", nargs="+", default=[None],
                    help="decoders to compare on the same blocks (e.g. qc qc8); default: the library's")
    ap.add_argument("--code-fer", type=float, help="mother code rate: unpunctured FER instead")
    ap.add_argument("--f", type=float, nargs="+", default=[1.08, 1.10, 1.12])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--method", default="ldpc-blind", choices=["ldpc-blind", "ldpc"],
                    help="ldpc: one-way at f 1.2 unless --f-start is given (used as its f)")
    ap.add_argument("--ab", choices=["ldpc-blind", "ldpc"],
                    help="interleaved throughput A/B of the --algorithm decoders with this method instead")
    args = ap.parse_args()
    if args.ab:
        algs = [a for a in args.algorithm if a] or ["qc", "qc8"]
        for q in args.qber:
            mbps = ab_throughput(q, args.blocks, args.bits, algs, args.ab)
            print(f"{args.ab} qber {q:.3f} {args.blocks} blocks of {args.bits}: "
                  + ", ".join(f"{a} {v:.2f} Mb/s" for a, v in mbps.items()), flush=True)
        return
    if args.code_fer is not None:
        for fb in args.frame_bits:
            fb = fb or ldpc.QC_FRAME_BITS[0]
            row = [f"f {f:.2f}: {fail}/{args.frames} it {it:.0f}"
                   for f in args.f for fail, it in [code_fer(args.code_fer, fb, f, args.frames)]]
            print(f"R0 {args.code_fer} n {fb}: " + "; ".join(row), flush=True)
        return
    base = {k: v for k, v in (("reveal_f", args.reveal_f), ("stall", args.stall), ("f_start", args.f_start),
                              ("rel_window", args.rel_window), ("rel_permille", args.rel_permille),
                              ("first_iter", args.first_iter), ("retry_iter", args.retry_iter))
            if v is not None}
    for q in args.qber:
        for fb, alg in ((fb, alg) for fb in args.frame_bits for alg in args.algorithm):
            extra = dict(base, **({"algorithm": alg} if alg else {}))
            opts = dict(extra, **({"frame_bits": fb} if fb else {}))
            if args.method == "ldpc":
                opts = {k: v for k, v in opts.items() if k in ("algorithm", "frame_bits", "stall")}
                opts["f"] = args.f_start or 1.2
            r = run(q, args.blocks, args.bits, args.keys, args.method, **opts)
            print(f"qber {q:.3f} bits {args.bits} n {r['n']} d {r['d']} R0 {r['mother_rate']} {extra}: "
                  f"f {r['f']:.4f} lost {r['lost']}/{r['frames']} it/frame {r['iterations_per_frame']:.1f} "
                  f"msgs/block {r['messages_per_block']:.1f} silent {r['silent_wrong_blocks']} "
                  f"{r['seconds']:.1f} s", flush=True)


if __name__ == "__main__":
    main()

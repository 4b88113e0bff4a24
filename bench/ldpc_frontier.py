"""LDPC throughput against efficiency: blind starts and one-way f on the same blocks.

    python -m bench.ldpc_frontier [--qber 0.02] [--blocks 10]

Every configuration reconciles the same 2^20-bit blocks (a fresh seed per block, as the link
draws one), interleaved block by block in alternating order, so the ratios to the first
configuration (blind at its default start) hold on a shared, noisy machine. Reports f,
decoder iterations per frame, Mb/s and that ratio: where a throughput target lies on the
efficiency axis (issue 3).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import postproc_c as pc
from postproc_c import ldpc

CONFIGS = (("ldpc-blind", {}), ("ldpc-blind", {"f_start": 1.10}), ("ldpc-blind", {"f_start": 1.12}),
           ("ldpc-blind", {"f_start": 1.15}), ("ldpc", {"f": 1.25}), ("ldpc", {"f": 1.5}),
           ("ldpc", {"f": 2.0}))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qber", type=float, default=0.02)
    ap.add_argument("--blocks", type=int, default=10)
    ap.add_argument("--bits", type=int, default=1 << 20)
    args = ap.parse_args(argv)
    q, n = args.qber, args.bits
    rng = np.random.default_rng(5)
    spent = [0.0] * len(CONFIGS)
    leak, its, frames = [0] * len(CONFIGS), [0] * len(CONFIGS), [0] * len(CONFIGS)
    for i in range(args.blocks + 1):                 # block 0 warms up (code construction)
        a = rng.integers(0, 2, n, dtype=np.uint8)
        b = a ^ (rng.random(n) < q).astype(np.uint8)
        for j in (range(len(CONFIGS)) if i % 2 else reversed(range(len(CONFIGS)))):
            method, opts = CONFIGS[j]
            t0 = time.perf_counter()
            r = pc.reconcile_in_memory(a, b, q, method=method, seed=100 + i, **opts)
            dt = time.perf_counter() - t0
            if not (r.success and np.array_equal(r.corrected, a)):
                raise SystemExit(f"{method} {opts}: block {i} not reconciled")
            if i:
                spent[j] += dt
                leak[j] += r.leaked_bits
                its[j] += r.details["iterations"]
                frames[j] += r.details["frames"]
    h = ldpc.binary_entropy(q)
    base = args.blocks * n / spent[0]
    for j, (method, opts) in enumerate(CONFIGS):
        mbps = args.blocks * n / spent[j]
        print(f"{method:11s} {str(opts):18s} f {leak[j] / (args.blocks * n * h):.4f}  "
              f"it/frame {its[j] / frames[j]:5.1f}  {mbps / 1e6:6.2f} Mb/s  x{mbps / base:.2f}", flush=True)


if __name__ == "__main__":
    main()

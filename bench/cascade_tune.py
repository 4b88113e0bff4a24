"""Parameter search for the optimized Cascade schedule (postproc_c.cascade).

This is how the table in ``qpp_cascade_block_sizes``/``qpp_cascade_wave``
(``postproc_c/src/cascade.c``) was chosen: simulated frames with exactly
round(q n) errors, both sides in one process, f = parity bits / (n h(q))
([MM15] Sec. 2), FER = frames whose corrected key differs from Alice's.
It is a measurement tool, not a test; it must not be imported by the package.

    python -m bench.cascade_tune grid  [--frames 1024] [--frame 16384 65536] [--qber 0.01 0.02 0.05 0.08]
    python -m bench.cascade_tune tail  [--frames 4096] ...   # tail passes vs FER for the grid winner
    python -m bench.cascade_tune wave  [--frames 1024] ...   # wave size vs f and messages
    python -m bench.cascade_tune check [--frames 4096] ...   # the built-in schedule

Method ``cascade-waves`` throughout (the grid chose its schedule); ``cascade``
keeps the opt. (8)-based schedule, tuned without waves in an earlier session.

Candidates (measured, not assumed): first block k1 in {P/2, P, 2P} with P the
largest power of two <= 1/q (non-powers of two were measured worse: a block of
2^m - r bits costs about as many bisection bits as 2^m but more top-level
parities), k2 = m k1 with m in {2, 4, 8}, k3 in {n/8, n/4}, then T passes of n/2
(BICONF-like: each catches a leftover error pattern with probability 1/2).
Keys come from a fixed seed per (q, frame, block), so candidates see the same
frames.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from postproc_c import reconcile_in_memory

BLOCK_BITS = 1 << 21


def _h(p: float) -> float:
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


_KEYS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def keys(q: float, frame: int, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Block i of BLOCK_BITS bits with exactly round(q frame) errors per frame."""
    k = (q, frame, i)
    if k not in _KEYS:
        rng = np.random.default_rng([1234, i, frame, int(round(q * 10000))])
        a = rng.integers(0, 2, BLOCK_BITS, dtype=np.uint8)
        e = np.zeros(BLOCK_BITS, dtype=np.uint8)
        m = int(round(q * frame))
        for lo in range(0, BLOCK_BITS, frame):
            e[lo + rng.choice(frame, m, replace=False)] = 1
        if len(_KEYS) > 64:
            _KEYS.clear()
        _KEYS[k] = (a, a ^ e)
    return _KEYS[k]


def measure(q: float, frame: int, schedule: list[int] | None, frames: int,
            wave: int | None = None, method: str = "cascade-waves") -> dict:
    done = bad = parity = msgs = blocks = 0
    t = 0.0
    while done < frames:
        a, b = keys(q, frame, blocks)
        t0 = time.perf_counter()
        opts = {"schedule": schedule} if schedule else {}
        if wave:
            opts["wave"] = wave
        r = reconcile_in_memory(a, b, q, method=method, seed=blocks + 1, frame_bits=frame,
                                verify_key=5, **opts)
        t += time.perf_counter() - t0
        diff = (r.corrected != a).reshape(-1, frame).any(axis=1)
        bad += int(diff.sum())
        done += diff.size
        parity += r.details["parity_bits"]
        msgs += r.messages
        blocks += 1
    return {"f": parity / (done * frame * _h(round(q * frame) / frame)), "bad": bad, "frames": done,
            "msgs": msgs / blocks, "mbps": blocks * BLOCK_BITS / t / 1e6}


def _p2(q: float) -> int:
    return 1 << int(math.floor(math.log2(1 / q)))


def candidates(q: float, n: int, tail: int = 11):   # the grid ran with 11; cascade.c now uses 13
    p = _p2(q)
    for k1 in (p // 2, p, 2 * p):
        for m in (2, 4, 8):
            for k3 in (n // 8, n // 4):
                yield [k1, m * k1, k3] + [n // 2] * tail


def _fmt(s: list[int]) -> str:
    return f"{s[:3]}+[{s[3]}]*{len(s) - 3}" if len(s) > 3 else str(s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["grid", "tail", "wave", "check"])
    ap.add_argument("--frames", type=int, default=1024)
    ap.add_argument("--frame", type=int, nargs="+", default=[1 << 14, 1 << 16])
    ap.add_argument("--qber", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.08])
    ap.add_argument("--schedule", type=str, default=None, help="python list, for tail/wave")
    args = ap.parse_args()
    from postproc_c.cascade import block_sizes
    for n in args.frame:
        for q in args.qber:
            if args.mode == "grid":
                rows = []
                for s in candidates(q, n):
                    r = measure(q, n, s, args.frames)
                    rows.append((r["f"], s, r))
                    print(f"n={n} q={q} {_fmt(s)} f={r['f']:.4f} bad={r['bad']}/{r['frames']} "
                          f"msgs={r['msgs']:.0f}", flush=True)
                rows.sort(key=lambda x: x[0])
                print(f"BEST n={n} q={q} {_fmt(rows[0][1])} f={rows[0][0]:.4f}", flush=True)
                continue
            base = eval(args.schedule) if args.schedule else block_sizes("cascade-waves", n, q)  # noqa: S307
            if args.mode == "tail":
                for t in (4, 6, 8, 11, 13):
                    s = base[:3] + [n // 2] * t
                    r = measure(q, n, s, args.frames)
                    print(f"n={n} q={q} {_fmt(s)} f={r['f']:.4f} bad={r['bad']}/{r['frames']} "
                          f"msgs={r['msgs']:.0f}", flush=True)
            elif args.mode == "wave":
                for w in (max(1, n >> 14), max(1, n >> 13), n >> 12, n >> 11, n >> 10):
                    r = measure(q, n, base, args.frames, wave=w)
                    print(f"n={n} q={q} {_fmt(base)} wave={w} f={r['f']:.4f} bad={r['bad']}/{r['frames']} "
                          f"msgs={r['msgs']:.0f} {r['mbps']:.1f} Mb/s", flush=True)
            else:
                r = measure(q, n, None, args.frames)
                print(f"n={n} q={q} {_fmt(base)} f={r['f']:.4f} bad={r['bad']}/{r['frames']} "
                      f"msgs={r['msgs']:.0f} {r['mbps']:.1f} Mb/s", flush=True)


if __name__ == "__main__":
    main()

"""Cost of the authentication pool's durable receive state, per accepted frame.

    nice python -m bench.auth_cost              # 4 rounds of 2048 frames per mode
    python -m bench.auth_cost --frames 4096 --rounds 6

One process, one store file per mode, rounds interleaved (the machine is shared: the modes see
the same load), each round a fresh pool on a fresh file. ``AuthPool.accept_recv`` of a peer data
stream, in three modes:

* ``normal``: every recv_last under synchronous=NORMAL, no fence (the code before the fence: not
  durable against a power cut; the baseline);
* ``fence``: the receive fence, raised and synced once per RECV_FENCE_BATCH frames (the code);
* ``full``: every recv_last synced (synchronous=FULL per frame: the obvious fix).

Prints the median time per accepted frame of each mode and its ratio to ``normal``, and the
load (``os.getloadavg``). What it must not do: print key material (it prints timings only).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from link import auth
from link.auth import AuthPool, write_psk

STREAM = "alice.proto.data"


def _one_round(d: Path, mode: str, n: int) -> float:
    """Seconds per accepted frame of one round of ``n`` frames on a fresh store."""
    db = d / f"{mode}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    pool = AuthPool(d / "l.psk", db, "bob")
    try:
        if mode == "normal":
            pool._recv_fence[STREAM] = 1 << 62          # never raised: recv_last under NORMAL only
        saved = auth.RECV_FENCE_BATCH
        if mode == "full":
            auth.RECV_FENCE_BATCH = 0                   # the fence at each frame: a FULL write each
        try:
            t0 = time.perf_counter()
            for seq in range(n):
                pool.accept_recv(STREAM, seq)
            return (time.perf_counter() - t0) / n
        finally:
            auth.RECV_FENCE_BATCH = saved
    finally:
        pool.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args(argv)
    modes = ("normal", "fence", "full")
    per: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        # enough pads for the frames: 8 bytes each, plus the hash key
        write_psk(d / "l.psk", "bench", max(65536, 8 * (args.frames + 64)))
        for _ in range(args.rounds):
            for m in modes:
                per[m].append(_one_round(d, m, args.frames))
    base = statistics.median(per["normal"])
    print(f"accept_recv, {args.frames} frames x {args.rounds} rounds, RECV_FENCE_BATCH="
          f"{auth.RECV_FENCE_BATCH}, load {os.getloadavg()[0]:.2f}")
    for m in modes:
        med = statistics.median(per[m])
        print(f"  {m:7s} {med * 1e6:9.1f} us/frame   x{med / base:6.2f} of normal   "
              f"(rounds: {', '.join(f'{x * 1e6:.1f}' for x in per[m])})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

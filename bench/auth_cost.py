"""Cost of the authentication pool's durable receive state and of its tags, per frame.

    nice python -m bench.auth_cost              # 4 rounds of 2048 frames per mode
    python -m bench.auth_cost --frames 4096 --rounds 6
    nice python -m bench.auth_cost --tags       # tag and check: the int path vs the pool's

One process, one store file per mode, rounds interleaved (the machine is shared: the modes see
the same load), each round a fresh pool on a fresh file. ``AuthPool.accept_recv`` of a peer data
stream, in three modes:

* ``normal``: every recv_last under synchronous=NORMAL, no fence (the code before the fence: not
  durable against a power cut; the baseline);
* ``fence``: the receive fence, raised and synced once per RECV_FENCE_BATCH frames (the code);
* ``full``: every recv_last synced (synchronous=FULL per frame: the obvious fix).

Prints the median time per accepted frame of each mode and its ratio to ``normal``, and the
load (``os.getloadavg``).

``--tags``: ``AuthPool.tag`` and ``AuthPool.verify`` (the pool's path: key and pad in bytearrays
handed to the C core, ``postproc_c.wc_tag``/``wc_verify``) against the path they replaced,
repeated here as the baseline (hash key and pad as Python ints, ``poly_hash_bytes`` then
``int.from_bytes``/``to_bytes``, ``hmac.compare_digest``), for frames of 16 B, 1 KiB and 64 KiB,
rounds interleaved, median per call. What it must not do: print key material (it prints timings only).
"""

from __future__ import annotations

import argparse
import hmac
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


def _int_path(pool: AuthPool, stream: str):
    """The tag and check as AuthPool did them before its secrets stayed in wipeable buffers."""
    k = pool._hash_key[stream]            # an int before the change, a bytearray since
    key = k if isinstance(k, int) else int.from_bytes(k, "little")

    def tag(seq: int, data) -> bytes:
        h = auth.poly_hash_bytes(data, key)
        with pool._lock:
            pad = int.from_bytes(pool._pad(stream, seq), "little")
        return (h ^ pad).to_bytes(auth.TAG_BYTES, "little")

    def verify(seq: int, data, t: bytes) -> bool:
        return hmac.compare_digest(tag(seq, data), bytes(t))

    return tag, verify


def tags(rounds: int, calls: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        write_psk(d / "l.psk", "bench", 65536)
        pool = AuthPool(d / "l.psk", d / "a.db", "alice")
        try:
            old_tag, old_verify = _int_path(pool, STREAM)
            print(f"tag / check per call, {calls} calls x {rounds} rounds, load {os.getloadavg()[0]:.2f}")
            for size in (16, 1024, 65536):
                data = bytearray(os.urandom(size))
                good = pool.tag(STREAM, 5, data)
                assert old_tag(5, data) == good and old_verify(5, data, good)
                cases = {"tag ints": lambda d=data: old_tag(5, d),
                         "tag pool": lambda d=data: pool.tag(STREAM, 5, d),
                         "check ints": lambda d=data, g=good: old_verify(5, d, g),
                         "check pool": lambda d=data, g=good: pool.verify(STREAM, 5, d, g)}
                per: dict[str, list[float]] = {k: [] for k in cases}
                for _ in range(rounds):
                    for k, f in cases.items():
                        t0 = time.perf_counter()
                        for _ in range(calls):
                            f()
                        per[k].append((time.perf_counter() - t0) / calls)
                for k in cases:
                    base = statistics.median(per[k.split()[0] + " ints"])
                    med = statistics.median(per[k])
                    print(f"  {size:6d} B  {k:10s} {med * 1e6:8.2f} us   x{med / base:5.2f} of the int path")
        finally:
            pool.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--tags", action="store_true", help="tag and check cost instead")
    ap.add_argument("--calls", type=int, default=2000, help="--tags: calls per round")
    args = ap.parse_args(argv)
    if args.tags:
        tags(args.rounds, args.calls)
        return 0
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

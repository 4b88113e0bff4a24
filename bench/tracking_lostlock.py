"""Lost-lock sweep of the polarization tracking loop (issue 7): how often a recovery is followed by a
second lost lock.

    python -m bench.tracking_lostlock --seeds 1-30 [--blocks 400] [--random-jump] [--json out.json]

What it measures, on the block-level link (``hil.blocklink``, metro-25km, a still fiber): Bob's
EPC-400 (in-process) is aligned with ``align_inside``; ``PolarizationTracking`` (no reference
frames: a lost lock is searched again from the key blocks' own error counts) tracks blocks of 2^18
sifted Z bits; at block 60 the fiber jumps by a large rotation (the fixed one of
``tests/test_calibration_tracking_loop.py::test_lost_lock_is_recovered_from_the_blocks_error_counts``,
or with ``--random-jump`` one drawn per seed). The jump always loses the lock; every further lost
lock is the loop's own doing (the fiber is still afterwards). Reported per seed: the blocks at which
the lock was lost (recovery retries not counted), completed recoveries, and the mean extra QBER
(closed form, against the ideal link) from 30 blocks after the first recovery to the end; a
recovery that fails for good (``PolarizationError``) is reported as FAILED.

Why a separate bench: one seed takes ~0.3 s, a sweep of 30-60 seeds is too long for the test suite,
which keeps the seeds that lost the lock twice before the walk-speed limit
(``PolarizationTracking._walk_speed``).
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np

from calibration.polarization import Measurement, PolarizationError
from calibration.tracking import BlockCounts, PolarizationTracking, align_inside
from hil.blocklink import BlockLink, ModelEpc400
from hil.model import LinkModel
from hil.optics import su2_rotation
from hil.scenario import Scenario

FIXED_JUMP = (1.2, -0.9, 2.0)          # rotation vector (rad) of the test's jump
JUMP_AT = 60


def run(seed: int, blocks: int = 400, random_jump: bool = False, tracker_kw: dict | None = None) -> dict:
    """One lost-lock run; returns the lost-lock blocks, recoveries and extra QBER."""
    sc = Scenario.load("metro-25km").with_overrides({"fiber.drift_rad_per_sqrt_s": 0.0})
    model = LinkModel(sc, seed)
    link = BlockLink(model, seed=seed)
    ctrl = ModelEpc400(model, (500.0, -800.0, 1200.0, 300.0))
    t = 0.0

    def measure() -> Measurement:
        nonlocal t
        b = link.block(t, 1e-3)
        t += 1e-3
        return Measurement(b.cross, 1e-3)

    align_inside(ctrl, measure, seed=seed)
    tr = PolarizationTracking(ctrl, drift_rad_per_sqrt_s=0.01, seed=seed, guard_frames=0, init_rounds=1,
                              **(tracker_kw or {}))
    losses: list[int] = []
    start = tr._start_recovery

    def spy(why: str, current_frame: int) -> None:       # a lost lock, not a retry of the same search
        if not why.startswith("recovery "):
            losses.append(int(current_frame))
        start(why, current_frame)

    tr._start_recovery = spy
    T = link.block_duration_for(1 << 18)
    ideal = np.array(link.expected_qber(0.0, np.eye(2, dtype=complex)))
    before = model.fiber.rotation_at
    rv = np.random.default_rng(seed + 555).normal(0.0, 1.5, 3) if random_jump else np.array(FIXED_JUMP)
    jump = su2_rotation(rv)
    extra: list[np.ndarray] = []
    recovered_at: list[int] = []
    failed = None
    for i in range(blocks):
        if i == JUMP_AT:
            model.fiber.rotation_at = lambda s: jump @ before(s)
        b = link.block(t, T)
        bad = b.qber[1] > 0.11                           # the engine aborts: X errors only
        n_rec = tr.recoveries
        try:
            tr.on_block(BlockCounts(0 if bad else int(b.n[0].sum()), 0 if bad else int(b.m[0].sum()),
                                    int(b.n[1].sum()), int(b.m[1].sum()), i, i, T, z_known=not bad), i)
        except PolarizationError as exc:
            failed = f"block {i}: {exc}"
            break
        if tr.recoveries != n_rec:
            recovered_at.append(i)
        extra.append(np.array(link.expected_qber(t)) - ideal)
        t += T
    ex = np.array(extra)
    after = ex[recovered_at[0] + 30:] if recovered_at and not failed else ex[:0]
    return {"seed": seed, "lost_at": losses, "recoveries": tr.recoveries, "recovered_at": recovered_at,
            "failed": failed, "second_loss": len(losses) > 1,
            "extra_qber_after_mean": after.mean(axis=0).tolist() if len(after) else None,
            "settings": np.round(tr.x, 1).tolist()}


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="1-30", help="e.g. 1-30 or 3,6,8")
    ap.add_argument("--blocks", type=int, default=400)
    ap.add_argument("--random-jump", action="store_true", help="a jump drawn per seed (else the test's)")
    ap.add_argument("--json", help="write the per-seed figures here")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    rows = []
    for s in _seeds(a.seeds):
        r = run(s, a.blocks, a.random_jump)
        rows.append(r)
        ex = r["extra_qber_after_mean"]
        print(f"seed {s}: lost at blocks {r['lost_at']}, {r['recoveries']} recoveries"
              + (f", FAILED {r['failed'][:90]}" if r["failed"] else "")
              + (f", extra QBER after the first recovery Z {ex[0] * 100:.3f} % X {ex[1] * 100:.3f} %"
                 if ex else ""), flush=True)
    second = [r["seed"] for r in rows if r["second_loss"]]
    failed = [r["seed"] for r in rows if r["failed"]]
    print(f"{len(rows)} seeds, {a.blocks} blocks, {'random' if a.random_jump else 'fixed'} jump: "
          f"a second lost lock in {len(second)} {second}; recovery failed for good in {len(failed)} {failed}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

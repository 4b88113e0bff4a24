"""The per-block tracking loop (calibration.tracking) on the block-level link (hil.blocklink), and the
block-level link itself checked against the slot-level model it abbreviates."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.polarization import Measurement, PolarizationError, counts_from_frame
from calibration.tracking import BlockCounts, PolarizationTracking, align_inside
from hil.blocklink import BlockLink, ModelEpc400
from hil.model import LinkModel
from hil.optics import su2_rotation
from hil.scenario import Scenario


def test_block_link_matches_the_slot_level_model():
    # a misaligned, still fiber: QBERs and the sifted Z rate of run_frame against the closed form
    sc = Scenario.load("metro-25km").with_overrides({"source.frame_slots": 1 << 18})
    m = LinkModel(sc, 5)
    m.set_controller_rotation(su2_rotation(np.array([0.15, -0.1, 0.2])))
    counts = np.zeros((4, 4), np.int64)
    nz = 0
    frames = 6
    for f in range(frames):
        r = m.run_frame(f)
        p = m.alice_pattern(f)
        c = counts_from_frame(r.slots, r.mask, p.basis, p.bit)
        counts += c
        nz += int(c[:2, :2].sum())
    meas = Measurement(counts, 0.0)
    bl = BlockLink(m, seed=1)
    qz, qx = bl.expected_qber(0.0)
    assert meas.qber_z == pytest.approx(qz, abs=4 * np.sqrt(qz / counts[:2, :2].sum()) + 2e-4)
    assert meas.qber_x == pytest.approx(qx, abs=4 * np.sqrt(qx / counts[2:, 2:].sum()) + 2e-4)
    t = frames * m.frame_duration_s
    expect_nz = bl.block(0.0, t).n[0].sum()
    # dead time as 1/(1 + R tau) (a 14 % loss at these rates) with the slot-level blind time agrees with
    # the slot-level dead time (0.1 % over 40 frames; here the two Poisson samples, ~0.4 % each)
    assert nz == pytest.approx(expect_nz, rel=0.02)


def _tracked(seconds: float, drift: float, seed: int, **kw):
    sc = Scenario.load("metro-25km").with_overrides({"fiber.drift_rad_per_sqrt_s": drift})
    model = LinkModel(sc, seed)
    link = BlockLink(model, seed=seed)
    ctrl = ModelEpc400(model, np.random.default_rng(seed).uniform(-3000, 3000, 4))
    t = 0.0

    def measure():
        nonlocal t
        b = link.block(t, 1e-3)
        t += 1e-3
        return Measurement(b.cross, 1e-3)

    align_inside(ctrl, measure, seed=seed)
    tr = PolarizationTracking(ctrl, drift_rad_per_sqrt_s=drift, seed=seed, guard_frames=0, **kw)
    T = link.block_duration_for(1 << 18)
    ideal = np.array(link.expected_qber(0.0, np.eye(2, dtype=complex)))
    extra = []
    for i in range(int(seconds / T)):
        extra.append(np.array(link.expected_qber(t + T / 2)) - ideal)
        b = link.block(t, T)
        tr.on_block(BlockCounts(int(b.n[0].sum()), int(b.m[0].sum()), int(b.n[1].sum()), int(b.m[1].sum()),
                                first_frame=i, last_frame=i, duration_s=T), current_frame=i)
        t += T
    lo, hi = ctrl.actuator_range
    assert all(np.all((r.settings >= lo) & (r.settings <= hi)) for r in tr.log)
    return np.array(extra), tr


def test_tracking_meets_the_bound_at_0p1_rad_per_sqrt_s():
    # issue 7: time-averaged extra QBER <= 0.5 % under 0.1 rad/sqrt(s); 20 s of 1 GHz link, engine-size
    # blocks (2^18 sifted Z bits, ~10 ms). Without the loop the same fiber costs percents.
    extra, tr = _tracked(20.0, 0.1, seed=2)
    assert extra.mean(axis=0).max() <= 0.005
    assert np.percentile(extra, 95, axis=0).max() <= 0.01
    assert tr.realigns == 0
    acts = [r.action for r in tr.log]
    assert acts.count("plus") >= 500                      # it dithered all along (one cycle = 3 blocks)


def test_stale_blocks_are_not_used():
    sc = Scenario.load("metro-25km")
    model = LinkModel(sc, 1)
    ctrl = ModelEpc400(model)
    tr = PolarizationTracking(ctrl)
    c = BlockCounts(100000, 100, 3000, 10, first_frame=0, last_frame=4)
    assert tr.on_block(c, current_frame=9).action == "base"    # a dither goes out after frame 9 (+1 guard)
    sets = ctrl.sets
    # the next block began before the change: skipped, nothing sent
    assert tr.on_block(BlockCounts(100000, 100, 3000, 10, first_frame=5, last_frame=12), 14).action == "skip"
    assert ctrl.sets == sets
    assert tr.on_block(BlockCounts(100000, 100, 3000, 10, first_frame=11, last_frame=15), 16).action == "plus"


def test_lost_lock_without_realign_or_recovery_relearns_and_holds_the_controller():
    model = LinkModel(Scenario.load("metro-25km"), 1)
    ctrl = ModelEpc400(model, (100.0, 200.0, 300.0, 400.0))
    tr = PolarizationTracking(ctrl, init_rounds=0, guard_frames=0, recover=False)
    tr.on_block(BlockCounts(100000, 100, 3000, 10))           # base -> plus
    tr.on_block(BlockCounts(100000, 100, 3000, 10, 1, 1), 1)  # plus -> minus
    tr.on_block(BlockCounts(100000, 100, 3000, 10, 2, 2), 2)  # minus -> base
    held = ctrl.get_actuators()
    assert tr.on_block(BlockCounts(100000, 20000, 3000, 10, 3, 3), 3).action == "relearn"
    assert tr.relearns == 1 and np.array_equal(ctrl.get_actuators(), held)


def test_paddles_at_a_limit_with_no_way_round_is_an_error_and_holds_the_controller():
    from hil.blocklink import ModelMpc320

    class NoLayout(ModelMpc320):            # paddles of unknown retardance: no equivalent settings known
        paddle_retardance_waves = None

    model = LinkModel(Scenario.load("metro-25km"), 1)
    ctrl = NoLayout(model, (5.0, 80.0, 80.0))                   # paddle 1 near its 0 deg limit
    tr = PolarizationTracking(ctrl, init_rounds=1, guard_frames=0, recover=False)
    with pytest.raises(PolarizationError, match=r"actuator\(s\) \[1\] at the edge"):
        for i in range(60):
            tr.on_block(BlockCounts(100000, 300, 3000, 10, i, i), i)
    v = ctrl.get_actuators()
    assert np.all((v >= 0) & (v <= 170))


def test_block_counts_are_validated():
    with pytest.raises(ValueError, match="errors exceed"):
        BlockCounts(10, 11, 5, 0)
    with pytest.raises(ValueError, match="n_x"):
        BlockCounts(10, 1, -5, 0)


def test_untracked_drift_is_large_for_contrast():
    # the same fiber without the loop: the bound above is not met by doing nothing
    sc = Scenario.load("metro-25km").with_overrides({"fiber.drift_rad_per_sqrt_s": 0.1})
    model = LinkModel(sc, 2)
    link = BlockLink(model)
    model.set_controller_rotation(np.linalg.inv(model.fiber.rotation_at(0.0)))
    ideal = np.array(link.expected_qber(0.0, np.eye(2, dtype=complex)))
    extra = np.array([np.array(link.expected_qber(t)) - ideal for t in np.linspace(0, 20, 200)])
    assert extra.mean() > 0.005


def test_tracking_through_the_epc400_driver_on_the_rig():
    # the same loop with the production driver on the rig's emulated EPC-400 (serial protocol on a
    # pty, mV limits enforced by the twin): 5 s of link at 0.1 rad/sqrt(s)
    from drivers.oz_epc400 import OzEpc400
    from hil.rig import Rig

    sc = Scenario.load("metro-25km").with_overrides({"fiber.drift_rad_per_sqrt_s": 0.1})
    with Rig(sc, seed=2, frame_slots=1 << 16) as rig:
        dev = OzEpc400(rig.resources()["bob.polarization"])
        dev.open()
        try:
            link = BlockLink(rig.model, seed=2)
            t = 0.0

            def measure():
                nonlocal t
                b = link.block(t, 1e-3)
                t += 1e-3
                return Measurement(b.cross, 1e-3)

            align_inside(dev, measure, seed=2)
            tr = PolarizationTracking(dev, seed=2, guard_frames=0)
            T = link.block_duration_for(1 << 18)
            ideal = np.array(link.expected_qber(0.0, np.eye(2, dtype=complex)))
            extra = []
            for i in range(int(5.0 / T)):
                extra.append(np.array(link.expected_qber(t + T / 2)) - ideal)
                b = link.block(t, T)
                tr.on_block(BlockCounts(int(b.n[0].sum()), int(b.m[0].sum()), int(b.n[1].sum()),
                                        int(b.m[1].sum()), i, i, T), i)
                t += T
            assert np.mean(extra, axis=0).max() <= 0.005 and tr.realigns == 0
            v = dev.get_actuators()                                   # the twin holds a setting near
            assert np.all(np.abs(v) <= 5000) and np.abs(v - tr.x).max() < 100   # x (+- a dither)
        finally:
            dev.close()


def _mpc_tracked(seconds: float, drift: float, seed: int, start=None, **kw):
    from hil.blocklink import ModelMpc320

    sc = Scenario.load("metro-25km").with_overrides({"fiber.drift_rad_per_sqrt_s": drift})
    model = LinkModel(sc, seed)
    link = BlockLink(model, seed=seed)
    ctrl = ModelMpc320(model, np.random.default_rng(seed).uniform(20, 150, 3))
    t = 0.0

    def measure():
        nonlocal t
        b = link.block(t, 1e-3)
        t += 1e-3
        return Measurement(b.cross, 1e-3)

    align_inside(ctrl, measure, seed=seed)
    tr = PolarizationTracking(ctrl, drift_rad_per_sqrt_s=max(drift, 1e-3), seed=seed, guard_frames=0, **kw)
    if start is not None:
        start(tr, ctrl)
    T = link.block_duration_for(1 << 18)
    ideal = np.array(link.expected_qber(0.0, np.eye(2, dtype=complex)))
    extra = []
    for i in range(int(seconds / T)):
        extra.append(np.array(link.expected_qber(t + T / 2)) - ideal)
        b = link.block(t, T)
        bad = b.qber[1] > 0.11                                   # the engine aborts: X errors only
        tr.on_block(BlockCounts(0 if bad else int(b.n[0].sum()), 0 if bad else int(b.m[0].sum()),
                                int(b.n[1].sum()), int(b.m[1].sum()), i, i, T, z_known=not bad), i)
        t += T
    lo, hi = ctrl.actuator_range
    assert all(np.all((r.settings >= lo) & (r.settings <= hi)) for r in tr.log)
    return np.array(extra), tr, model, ctrl


def test_mpc320_unwinds_through_an_equivalent_setting_and_keeps_tracking():
    # start the loop on the equivalent setting with the least room (same rotation): it must jump to one
    # with more room, carrying its estimates, and keep the bound (no realignment, no recovery)
    from hil.optics import mpc320_rotation

    edge = np.array([8.0, 60.0, 40.0])              # paddle 1 8 deg from its end; the other family,
    # (98, 8 + 40 - 60 + 90, 130), has 40 deg of room

    def near_edge(tr, ctrl):
        model = ctrl.model
        base = model.fiber.rotation_at
        undo = np.linalg.inv(mpc320_rotation(tuple(edge))) @ np.linalg.inv(base(0.0))
        model.fiber.rotation_at = lambda s: undo @ base(s)      # harness: aligned at `edge`
        ctrl.set_actuators(edge)
        tr.start()

    extra, tr, _, ctrl = _mpc_tracked(6.0, 0.05, 2, start=near_edge, init_rounds=1)
    assert tr.unwinds >= 1 and tr.realigns == 0 and tr.recoveries == 0
    assert tr._room(ctrl.get_actuators()) > 30.0
    assert extra[len(extra) // 3:].mean(axis=0).max() <= 0.005


@pytest.mark.parametrize("kind", ["epc400", "mpc320"])
def test_lost_lock_is_recovered_from_the_blocks_error_counts(kind):
    # the fiber jumps by a large rotation mid-run (a fiber being handled): QBERs far above the engine's
    # abort threshold; with no reference frames (realign=None) the tracker searches again from the
    # blocks' own error counts (aborted blocks give X only) and tracks on
    from hil.blocklink import ModelMpc320

    sc = Scenario.load("metro-25km").with_overrides({"fiber.drift_rad_per_sqrt_s": 0.0})
    model = LinkModel(sc, 3)
    link = BlockLink(model, seed=3)
    ctrl = (ModelEpc400(model, (500.0, -800.0, 1200.0, 300.0)) if kind == "epc400"
            else ModelMpc320(model, (40.0, 100.0, 70.0)))
    t = 0.0

    def measure():
        nonlocal t
        b = link.block(t, 1e-3)
        t += 1e-3
        return Measurement(b.cross, 1e-3)

    align_inside(ctrl, measure, seed=3)
    tr = PolarizationTracking(ctrl, drift_rad_per_sqrt_s=0.01, seed=3, guard_frames=0, init_rounds=1)
    T = link.block_duration_for(1 << 18)
    ideal = np.array(link.expected_qber(0.0, np.eye(2, dtype=complex)))
    before = model.fiber.rotation_at
    jump = su2_rotation(np.array([1.2, -0.9, 2.0]))
    qb = []
    for i in range(400):
        if i == 60:
            model.fiber.rotation_at = lambda s: jump @ before(s)
        b = link.block(t, T)
        bad = b.qber[1] > 0.11
        tr.on_block(BlockCounts(0 if bad else int(b.n[0].sum()), 0 if bad else int(b.m[0].sum()),
                                int(b.n[1].sum()), int(b.m[1].sum()), i, i, T, z_known=not bad), i)
        qb.append(np.array(link.expected_qber(t)) - ideal)
        t += T
    qb = np.array(qb)
    assert qb[61].max() > 0.1                                  # the jump really broke the lock
    assert tr.recoveries >= 1 and tr.realigns == 0
    used = [r for r in tr.log if r.action == "recover"]
    print(kind, "blocks in recovery", len(used), "final extra QBER", qb[-50:].mean(axis=0))
    assert len(used) <= 150                                    # ~1.5 s of 1 GHz link
    # aligned again and tracking at the end. The EPC-400's recovery here lands an actuator at its range
    # limit (5000 mV); the walk back along the estimated null direction used to let QBER_X creep up
    # until the lock was lost once more (a second recovery at block ~375): one recovery now
    assert tr.recoveries == 1
    assert qb[-50:].mean(axis=0).max() <= 0.005
    lo, hi = ctrl.actuator_range
    assert all(np.all((r.settings >= lo) & (r.settings <= hi)) for r in tr.log)


@pytest.mark.parametrize("seed", [3, 6, 8, 12, 13, 19, 23])
def test_walk_back_from_a_limit_after_a_recovery_keeps_the_lock(seed):
    # the seeds of bench.tracking_lostlock (seeds 1-30, the fixed jump) that lost the lock a second
    # time while the EPC-400 walked back from a range limit at the former fixed speed (0.2 % of the
    # range per cycle: the error of the estimated null direction outran the filter). At the walk
    # speed bounded by the tracked drift (PolarizationTracking._walk_speed) the lock is lost once,
    # by the fiber's jump, and the QBER stays within the 0.5 % bound after the recovery.
    from bench.tracking_lostlock import JUMP_AT, run

    r = run(seed, blocks=400)
    assert r["failed"] is None
    assert r["lost_at"] == [JUMP_AT] and r["recoveries"] == 1
    assert max(r["extra_qber_after_mean"]) <= 0.005


def test_recovery_search_takes_slopes_on_the_measured_side_of_the_abort_threshold():
    # where bench.tracking_lostlock's seed 11 (the fixed jump) stalled for good: QBER_Z 1 %, QBER_X 9 %,
    # the aligned setting ~500 mV away along a valley narrower than align's 150 mV dither, so a dither
    # crossed QBER_X 11 % (the engine aborts: Z not measured, a 50 % stand-in) and that jump, taken
    # for a slope, sent every step astray. align from there on the blocks' error counts alone, one
    # start (no random restarts): measured 40/40 seeds converge, 15/40 with the forward dither only
    from bench.tracking_lostlock import FIXED_JUMP
    from calibration.polarization import align

    for seed in range(6):
        model = LinkModel(Scenario.load("metro-25km").with_overrides({"fiber.drift_rad_per_sqrt_s": 0.0}), 11)
        link = BlockLink(model, seed=seed)
        before, jump = model.fiber.rotation_at, su2_rotation(np.array(FIXED_JUMP))
        model.fiber.rotation_at = lambda s, before=before, jump=jump: jump @ before(s)
        ctrl = ModelEpc400(model, (4782.0, 3754.0, 2301.0, 1972.0))
        T = link.block_duration_for(1 << 18)
        aborted = []

        def measure(link=link, T=T, aborted=aborted):
            b = link.block(0.0, T)
            bad = b.qber[1] > 0.11
            aborted.append(bad)
            return BlockCounts(0 if bad else int(b.n[0].sum()), 0 if bad else int(b.m[0].sum()),
                               int(b.n[1].sum()), int(b.m[1].sum()), 0, 0, T, z_known=not bad).measurement()

        assert max(link.expected_qber(0.0)) < 0.11                 # the start itself is measured
        align(ctrl, measure, seed=seed, starts=1, max_measurements=100, confirm_reps=2,
              target_qber=0.002, fail_qber=0.03)                   # raises above 3 % (confirmed)
        assert any(aborted)                                        # some dithers did cross the threshold
        assert max(link.expected_qber(0.0)) <= 0.01, seed


@pytest.mark.parametrize(("seed", "random_jump", "blocks"),
                         [(11, False, 400), (7, True, 1000), (54, True, 1000)])
def test_first_recovery_from_a_jump_does_not_fail_for_good(seed, random_jump, blocks):
    # the seeds of bench.tracking_lostlock whose first recovery failed all 3 searches (seed 11 of 1-30
    # with the fixed jump; 7 and 54 of 1-60 with a random jump): seed 11 stalled at the abort threshold
    # (test above); 7 and 54 in a local minimum with actuator 2 at +5000 mV, and every retry drew the
    # same random starts as the search that fell short (its seed counted completed recoveries only)
    from bench.tracking_lostlock import JUMP_AT, run

    r = run(seed, blocks=blocks, random_jump=random_jump)
    assert r["failed"] is None
    assert r["lost_at"][0] == JUMP_AT and r["recoveries"] >= 1
    assert max(r["extra_qber_after_mean"]) <= 0.005

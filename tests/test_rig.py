"""The HIL rig end to end through the production drivers: Alice's AWG driver uploads
frames, the model makes clicks, Bob's PicoQuant driver streams the tags, slotting
recovers exactly the slots the physics clicked."""

from __future__ import annotations

import time

import numpy as np

from drivers.keysight_awg import Keysight33500
from drivers.picoquant import PicoQuantStreamTagger
from hil.rig import RIG_ENCODING, Rig
from link.frontend import DriverAlice, DriverBob, ModelLink, Timing
from link.keystore import key_rows


def _patterns(n_frames: int, slots: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    for _ in range(n_frames):
        yield (rng.integers(0, 2, slots, dtype=np.uint8), rng.integers(0, 2, slots, dtype=np.uint8),
               rng.choice(3, slots, p=[0.7, 0.2, 0.1]).astype(np.uint8))


def _check_frames(frames, results, timing):
    assert [f.frame_index for f in frames] == list(range(len(frames)))
    # a frame is complete once later tags pass its end plus the time of flight
    # (125 us at 25 km, about two 65 us frames), so the last few stay open
    assert len(frames) >= len(results) - 3
    guard_slots = int(np.ceil((timing.dead_time_ps + timing.window_ps) / timing.period_ps))
    assert guard_slots >= 10
    prev = None                        # the last click of the frame before (the guard carries it)
    for fd, res in zip(frames, results):
        live = ~res.tag_lost
        # every photon click's slot is recovered unless the dead-time guard dropped it, which it
        # does only when another click came within the guard before; dark counts arrive anywhere
        # in the slot period, so the ones outside the detection window are (rightly) dropped
        photon = np.unique(res.slot[live & ~res.noise])
        assert np.isin(fd.slots, res.slot[live]).all()
        missing = photon[~np.isin(photon, fd.slots)].astype(np.int64)
        clicks = np.unique(res.slot[live]).astype(np.int64)
        if prev is not None:
            clicks = np.concatenate([[prev - timing.frame_slots], clicks])
        before = np.searchsorted(clicks, missing, side="left") - 1
        assert np.all(before >= 0) and np.all(missing - clicks[np.maximum(before, 0)] <= guard_slots)
        assert missing.size <= fd.vetoed
        assert 0.1 < fd.vetoed / (len(fd.slots) + fd.vetoed) < 0.4     # metro-25km: ~25 %
        prev = int(clicks[-1])


def test_rig_through_production_drivers():
    with Rig("metro-25km", seed=5, frame_slots=1 << 16, keep_results=True) as rig:
        res = rig.resources()
        awg = Keysight33500(res["alice.pattern_generator"], encoding=RIG_ENCODING)
        awg.open()
        tagger = PicoQuantStreamTagger(res["bob.time_tagger"])
        tagger.open()
        alice = DriverAlice(awg, rig.frame_slots, rig.model.clock_hz)
        timing = Timing.for_model(rig.model)
        bob = DriverBob(tagger, timing)
        frames = []
        try:
            for pat in _patterns(8, rig.frame_slots):
                alice.emit(*pat)
            deadline = time.monotonic() + 30
            # the rig plays uploads in its own thread: wait for all 8 (under load the 8th was
            # still queued when Bob had his 5 frames: "7 == 8")
            while (len(frames) < 5 or rig.stats.frames < 8) and time.monotonic() < deadline:
                frames += bob.poll(0.2)
        finally:
            alice.close()
            bob.close()
        assert rig.stats.frames == 8
        _check_frames(frames, rig.results, timing)
        # patterns reached the model unchanged
        assert rig.stats.pattern_errors == 0
        assert rig.stats.emulated_s > 0 and rig.stats.wall_s > 0


def test_model_link_in_process_matches_physics():
    from hil.model import LinkModel
    from hil.scenario import Scenario

    sc = Scenario.load("metro-25km").with_overrides({"source.frame_slots": 1 << 16})
    link = ModelLink(LinkModel(sc, seed=9), keep_results=True)
    for pat in _patterns(5, link.frame_slots):
        link.alice.emit(*pat)
    frames = []
    for _ in range(10):
        frames += link.bob.poll(0.05)
    _check_frames(frames, link.results, link.timing)


def test_rig_lab_file_checks_out(tmp_path):
    # what `qkd devices emulate --scenario` prints is a lab file `qkd devices check` accepts
    import io

    from drivers.commands import check

    with Rig("back-to-back", seed=2, frame_slots=1 << 12) as rig:
        lab = tmp_path / "rig.toml"
        lab.write_text(rig.lab_toml())
        out = io.StringIO()
        assert check(str(lab), out=out) == 0, out.getvalue()
        assert "6/6 instruments answered" in out.getvalue()


def test_both_nodes_make_identical_keys_through_the_emulated_instruments(tmp_path):
    # qkd run's default path: the nodes drive the rig through the production drivers
    import sqlite3

    from link.pipeline import run_local

    s = run_local(None, blocks=1, duration_s=120, workdir=tmp_path, instruments="rig")
    assert s["blocks"] >= 1 and s["blocks_aborted"] == 0
    assert s["secret_bits"] > 0
    assert s["keys_identical"] is True
    # the summary (`qkd run --json`, summary.json) names the scenario; on the rig it was "" (the
    # name was read from the in-process model's front end, which the rig's front ends lack)
    assert s["scenario"] == "metro-25km"
    # identical is not enough: the keys must be the distilled bits, not a constant
    c = sqlite3.connect(tmp_path / "alice.db")
    try:
        blob = b"".join(r[3] for r in key_rows(c))
    finally:
        c.close()
    bits = np.unpackbits(np.frombuffer(blob, np.uint8))
    assert bits.size > 100_000 and abs(bits.mean() - 0.5) < 0.01


def test_emulate_scenario_prints_a_lab_file_qkd_alice_can_drive(tmp_path):
    # `qkd devices emulate --scenario` prints the lab file a user points `[frontend] lab` at: Alice's
    # AWG driver built from it must upload 1 GHz frames (it lacked the one-sample-a-slot encoding, so
    # `qkd alice` stopped at once: "slot_rate_hz=1000000000.0 Hz is outside 1e-06..2.5e+08 Hz"), and
    # the header names the node-file values the rig needs (intensities, Bob's offsets and window)
    import io
    import threading

    from drivers.commands import emulate_rig
    from drivers.config import load_lab

    out = io.StringIO()
    printed = threading.Event()

    class Out(io.StringIO):
        def write(self, s):
            n = out.write(s)
            if "[bob.time_tagger]" in out.getvalue():
                printed.set()
            return n

        def flush(self):
            pass

    t = threading.Thread(target=emulate_rig, args=("back-to-back", 2, 3.0), kwargs={"out": Out()})
    t.start()
    try:
        assert printed.wait(20), out.getvalue()
        text = out.getvalue()
        lab_file = tmp_path / "rig.toml"
        lab_file.write_text(text)
        assert "intensities = [" in text and "offsets_ps = [" in text and "window_ps = " in text, text
        # every [protocol] value qkd run sets for the rig, as bench.soak reads them into its node
        # files (detector_efficiency_ratio_min was once missing: the soak stopped at start)
        from bench.soak import _rig_values
        from hil.scenario import Scenario
        from link.config import RIG_PROTOCOL_KEYS
        from link.pipeline import config_for_scenario

        cfg = config_for_scenario(Scenario.load("back-to-back"))
        got = _rig_values(text)
        assert {k: got[k] for k in RIG_PROTOCOL_KEYS} == {
            k: (list(v) if isinstance(v, tuple) else v) for k in RIG_PROTOCOL_KEYS
            for v in [getattr(cfg, k)]}
        awg = load_lab(lab_file).build("alice", "pattern_generator")
        awg.open()
        try:
            slots = 1 << 18                     # the rig's frame (scenario frames are capped at 2^18)
            basis, bit, inten = next(_patterns(1, slots))
            DriverAlice(awg, slots, 1e9).emit(basis, bit, inten)
        finally:
            awg.close()
    finally:
        t.join(10)
    assert not t.is_alive()

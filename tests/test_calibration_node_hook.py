"""The engine's polarization-tracking hook: Bob's node feeds each verified block's counts to
calibration.tracking, which drives the controller; both nodes on the HIL model with a drifting fiber;
and the node file's [calibration] section."""

from __future__ import annotations

import time

import numpy as np
import pytest

from calibration.tracking import PolarizationTracking
from hil.blocklink import ModelEpc400
from link.config import ConfigError, parse_node_file


def _two_nodes(tmp_path, ctrl_factory, blocks=12, until=None):
    """Both nodes in process on the HIL model (drifting fiber), Bob's tracker on ``ctrl_factory(model)``;
    returns (alice, bob, tracker, alice's store, bob's store) after ``blocks`` blocks."""
    import zmq

    from drivers.qrng import OsEntropySource
    from hil.model import LinkModel
    from hil.scenario import Scenario
    from link.auth import AuthPool, write_psk
    from link.channel import Channel
    from link.frontend import ModelLink
    from link.keystore import KeyStore
    from link.node import Node
    from link.pipeline import config_for_scenario

    sc = Scenario.load("metro-25km").with_overrides({"fiber.drift_rad_per_sqrt_s": 0.1,
                                                     "source.frame_slots": 1 << 16})
    model = LinkModel(sc, seed=4)
    ctrl = ctrl_factory(model)
    cfg = config_for_scenario(model.scenario, block_bits=1 << 15, max_frames_in_flight=4)
    write_psk(tmp_path / "l.psk", "L", 1 << 16)
    ml = ModelLink(model)
    ctx = zmq.Context()
    rng = OsEntropySource()
    made = []

    def make(role):
        st = KeyStore(tmp_path / f"{role}.db", "L", auth_refill_bytes=cfg.auth_refill_bytes)
        pool = AuthPool(tmp_path / "l.psk", tmp_path / f"{role}.db", role)
        ch = Channel(role, pool, ctx=ctx, retry_s=0.05)
        fe = ml.alice if role == "alice" else ml.bob
        node = Node(role, ch, st, fe, rng, cfg, ctx=ctx, telemetry=None, frame_slots=model.frame_slots,
                    block_limit=blocks if role == "alice" else None)
        made.extend([node, ch, pool, st])
        return st, ch, node

    a_st, a_ch, alice = make("alice")
    eps = a_ch.bind(f"ipc://{tmp_path}/p.sock", f"ipc://{tmp_path}/c.sock")
    b_st, b_ch, bob = make("bob")
    b_ch.connect(**eps)
    # frames are computed when Alice emits them (up to 64 queued in ModelLink): a wide guard
    bob.tracking = tr = PolarizationTracking(ctrl, guard_frames=70, init_rounds=0)
    try:
        alice.start()
        bob.start()
        end = time.monotonic() + 120        # a bound on the wait (it ends when the blocks are done)
        # Bob appends a block's result after its commit settles, so an idle Alice and no
        # prepared block on Bob can come just before his last result: wait for it too
        while time.monotonic() < end and not (len(alice.results) >= blocks and alice.idle()
                                              and not b_st.prepared_blocks()
                                              and len(bob.results) >= blocks):
            if until is not None and until(alice, bob):
                break
            time.sleep(0.02)
        yield alice, bob, tr, a_st, b_st, ctrl
    finally:
        for x in made:
            x.close()
        ctx.destroy(linger=0)


def test_bob_node_drives_the_tracker_once_per_block(tmp_path):
    from link.keystore import stores_identical

    for alice, bob, tr, a_st, b_st, ctrl in _two_nodes(tmp_path, ModelEpc400):
        assert len(bob.results) >= 12
        # every verified block reached the tracker, stale ones were recognised as such
        assert len(tr.log) == len([r for r in bob.results if r.reason != "verification failed"])
        acts = [r.action for r in tr.log]
        assert "plus" in acts and ctrl.sets > 1             # it moved the controller (a dither)
        got = [(r.qber_z, r.qber_x) for r in tr.log]
        res = {r.block_id: r for r in alice.results}
        assert all(0 <= qz < 0.05 and 0 <= qx < 0.05 for qz, qx in got)
        assert np.isfinite([res[b].qber_x for b in res]).all()
        assert not [a for a in bob.alarms if a["alarm"] == "polarization"]
        assert stores_identical(a_st, b_st)


class _DyingEpc(ModelEpc400):
    """Stops answering after the tracker's first setting (a controller unplugged mid-run)."""

    def set_actuators(self, values) -> None:
        from drivers.errors import DriverError

        if self.sets >= 2:
            raise DriverError("no reply within 0.5 s (emulated: controller unplugged)")
        super().set_actuators(values)


def test_controller_dying_mid_run_is_an_instrument_alarm_and_stops_bob(tmp_path):
    # the node's rule (link.node._track_block): a tracking failure caused by the controller's driver is
    # an instrument fault: alarm, tracking off, the node stops (no misbehaving instrument is trusted);
    # the controller keeps its last accepted setting (nothing else was sent)
    for _alice, bob, _tr, _a_st, _b_st, ctrl in _two_nodes(tmp_path, _DyingEpc, blocks=16,
                                                          until=lambda a, b: b.stopped):
        alarms = [a for a in bob.alarms if a["alarm"] == "instrument"]
        assert len(alarms) == 1 and "polarization tracking" in alarms[0]["reason"]
        assert "did not accept" in alarms[0]["reason"]
        assert bob.tracking is None and bob.stopped
        assert ctrl.sets == 2


GOOD = {"node": {"role": "bob", "link_id": "L", "psk": "l.psk", "store": "b.db"},
        "channel": {"proto": "tcp://127.0.0.1:7100", "ctrl": "tcp://127.0.0.1:7101"},
        "frontend": {"lab": "lab.toml", "instrument": "time_tagger", "frame_slots": 1024, "clock_hz": 1e9,
                     "dead_time_ns": 50.0}}


def test_calibration_section_is_off_by_default_and_parsed():
    nf = parse_node_file(GOOD, "<dict>")
    assert nf.calibration.track_polarization is False
    nf = parse_node_file({**GOOD, "calibration": {"track_polarization": True, "controller": "paddles"}},
                         "<dict>")
    assert nf.calibration.track_polarization is True and nf.calibration.controller == "paddles"
    with pytest.raises(ConfigError, match="calibration.track_polarizaton"):
        parse_node_file({**GOOD, "calibration": {"track_polarizaton": True}}, "<dict>")
    with pytest.raises(ConfigError, match="calibration.track_polarization"):
        parse_node_file({**GOOD, "calibration": {"track_polarization": "yes"}}, "<dict>")
    alice = {**GOOD, "node": {**GOOD["node"], "role": "alice"}, "calibration": {"track_polarization": True}}
    with pytest.raises(ConfigError, match="only Bob"):
        parse_node_file(alice, "<dict>")

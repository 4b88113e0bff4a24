"""link.instrument_watch and the node file's [watch] table (issue 9, instrument faults).

The watch reads back a real driver on its emulated twin (the ID120 over TCP);
when the twin stalls, answers garbage or drops the line, the first failed read
must raise the node's ``instrument`` alarm naming the instrument and the command
and stop the node, once. The whole link under such faults (rig, both nodes,
keys kept and identical) is ``tests/test_faults_instruments.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from rig_nodes import store_key_ids, write_node_files

from drivers.idq_id120 import IdqId120
from hil.emulated.id120 import EmulatedId120
from link.config import ConfigError, parse_node_file
from link.instrument_watch import InstrumentWatch

GOOD = {"node": {"role": "bob", "link_id": "L", "psk": "l.psk", "store": "b.db"},
        "channel": {"proto": "tcp://127.0.0.1:7100", "ctrl": "tcp://127.0.0.1:7101"},
        "frontend": {"lab": "lab.toml", "instrument": "time_tagger", "frame_slots": 1024, "clock_hz": 1e9,
                     "dead_time_ns": 50.0}}


WATCH = """
[watch]
instruments = {instruments}
period_s = 0.2
"""


class _NodeSide:
    """What the watch uses of a node: role, alarm(), stop(), stopped (recorded for the test)."""

    role = "bob"

    def __init__(self):
        self.alarms: list[tuple[str, str]] = []
        self._stop = threading.Event()

    def alarm(self, kind, reason, block_id=None):
        self.alarms.append((kind, reason))

    def stop(self):
        self._stop.set()

    @property
    def stopped(self):
        return self._stop.is_set()


def test_watch_table_is_optional_and_checked():
    nf = parse_node_file(GOOD, "<dict>")
    assert nf.watch.instruments == () and nf.watch.period_s == 0.5
    nf = parse_node_file({**GOOD, "watch": {"instruments": ["snspd", "apd"], "period_s": 2}}, "<dict>")
    assert nf.watch.instruments == ("snspd", "apd") and nf.watch.period_s == 2.0
    for bad, words in (({"instruments": "snspd"}, "watch.instruments"),
                       ({"instruments": ["time_tagger"]}, "front end"),
                       ({"instruments": ["apd", "apd"]}, "once"),
                       ({"period_s": 0}, "watch.period_s"),
                       ({"instrumets": ["apd"]}, "watch.instrumets")):
        with pytest.raises(ConfigError, match=words):
            parse_node_file({**GOOD, "watch": bad}, "<dict>")
    tracked = {**GOOD, "calibration": {"track_polarization": True},
               "watch": {"instruments": ["polarization"]}}
    with pytest.raises(ConfigError, match="tracking loop"):
        parse_node_file(tracked, "<dict>")


@pytest.mark.parametrize("fault, words", [({"silence": 100}, "no reply"), ({"garbage": 100}, "BIAS:VOLTAGE?"),
                                          ({"drop": 1}, "BIAS:VOLTAGE?")])
def test_a_failing_instrument_raises_one_instrument_alarm_and_stops_the_node(fault, words):
    with EmulatedId120(name="bob.apd").start() as srv:
        drv = IdqId120(srv.address, timeout_s=0.5, name="bob.apd:ID120")
        drv.open()
        node = _NodeSide()
        w = InstrumentWatch(node, {"bob.apd": drv}, period_s=0.05).start()
        try:
            deadline = time.monotonic() + 5
            while w.polls < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert w.polls >= 3 and node.alarms == [] and not node.stopped   # healthy: quiet
            srv.faults.set(**fault)
            deadline = time.monotonic() + 10
            while not node.stopped and time.monotonic() < deadline:
                time.sleep(0.01)
            assert node.stopped
            time.sleep(0.2)
            assert len(node.alarms) == 1 and node.alarms[0][0] == "instrument"
            reason = node.alarms[0][1]
            assert reason.startswith("bob.apd: ") and "ID120" in reason and words in reason, reason
            assert w.failed == reason
        finally:
            w.close()
            drv.close()


def test_watch_refuses_an_instrument_it_cannot_read():
    with pytest.raises(TypeError, match="x"):
        InstrumentWatch(_NodeSide(), {"x": object()})
    with pytest.raises(ValueError, match="period_s"):
        InstrumentWatch(_NodeSide(), {}, period_s=0)


def test_qkd_bob_with_watch_stops_on_a_stalled_snspd_and_keeps_committed_keys(tmp_path):
    """``qkd alice`` + ``qkd bob`` (two processes, TCP channel, the rig's AWG/tagger twins); Bob's node
    file watches his SNSPD and ID120 controllers. Once keys are committed the SNSPD twin stops
    answering: Bob must stop by himself with the ``instrument`` alarm naming bob.snspd and the
    command, exit 3 (stopped on an alarm), and every key he committed must be committed by Alice too."""
    import numpy as np

    from hil.optics import su2_rotation
    from hil.rig import Rig
    from hil.scenario import Scenario
    from link.cli import main
    from link.pipeline import config_for_scenario

    assert main(["psk", "--link-id", "lab-link", "--out", str(tmp_path / "alice.psk"),
                 str(tmp_path / "bob.psk"), "--kib-per-stream", "128"]) == 0
    sc = Scenario.load("metro-25km").with_overrides({"fiber.drift_rad_per_sqrt_s": 0.0})
    with Rig(sc, seed=3) as rig:
        fiber = su2_rotation(np.array([0.02, -0.03, 0.02]))        # harness only: an aligned fiber
        rig.model.fiber.rotation_at = lambda t: fiber
        cfg = config_for_scenario(rig.model.scenario, block_bits=1 << 19)   # the shortest blocks with key
        write_node_files(tmp_path, rig, cfg, {role: WATCH.format(instruments=json.dumps(watch))
                                              for role, watch in (("alice", []), ("bob", ["snspd", "apd"]))})
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        procs = {}
        try:
            for role in ("alice", "bob"):
                procs[role] = subprocess.Popen(
                    [sys.executable, "-m", "link.cli", role, "--config", str(tmp_path / f"{role}.toml"),
                     "--json"],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
            deadline = time.monotonic() + 180
            while (not store_key_ids(tmp_path / "bob.db") and time.monotonic() < deadline
                   and procs["bob"].poll() is None):
                time.sleep(0.2)
            before = store_key_ids(tmp_path / "bob.db")
            assert before, "no key committed on Bob's side"
            rig.lab.servers["bob.snspd"].faults.set(silence=10**6)
            out_bob = procs["bob"].communicate(timeout=60)[0]
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.kill()
                    p.wait()
    assert procs["bob"].returncode == 3, out_bob[-2000:]      # stopped itself on an alarm
    st = json.loads(out_bob.strip().splitlines()[-1])
    assert "instrument" in st["alarms"], out_bob[-2000:]
    assert "bob alarm instrument: bob.snspd: " in out_bob and "no reply" in out_bob, out_bob[-2000:]
    assert "qkd bob: stopped by itself on alarm instrument: " in out_bob, out_bob[-2000:]   # said at exit
    a, b = store_key_ids(tmp_path / "alice.db"), store_key_ids(tmp_path / "bob.db")
    assert before <= b <= a, (len(before), len(b), len(a))    # kept; nothing Bob has that Alice lacks

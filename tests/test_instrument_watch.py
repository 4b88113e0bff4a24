"""link.instrument_watch and the node file's [watch] table (issue 9, instrument faults).

The watch reads back a real driver on its emulated twin (the ID120 over TCP);
when the twin stalls, answers garbage or drops the line, the first failed read
must raise the node's ``instrument`` alarm naming the instrument and the command
and stop the node, once. The whole link under such faults (rig, both nodes,
keys kept and identical) is ``tests/test_faults_instruments.py``.
"""

from __future__ import annotations

import threading
import time

import pytest

from drivers.idq_id120 import IdqId120
from hil.emulated.id120 import EmulatedId120
from link.config import ConfigError, parse_node_file
from link.instrument_watch import InstrumentWatch

GOOD = {"node": {"role": "bob", "link_id": "L", "psk": "l.psk", "store": "b.db"},
        "channel": {"proto": "tcp://127.0.0.1:7100", "ctrl": "tcp://127.0.0.1:7101"},
        "frontend": {"lab": "lab.toml", "instrument": "time_tagger", "frame_slots": 1024, "clock_hz": 1e9}}


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


@pytest.mark.parametrize("fault, words", [({"silence": 100}, "no reply"), ({"garbage": 100}, "DET:"),
                                          ({"drop": 1}, "DET:")])
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

"""A flood of bad frames on the channel port: every frame still counted and alarmed, but the
log lines and the node's alarm history stay bounded (link.lograte)."""

from __future__ import annotations

import logging
import time

import zmq

from link.auth import AuthPool, write_psk
from link.lograte import LogLimiter


def test_limiter_lets_a_burst_through_per_window_and_says_what_it_held_back():
    now = [0.0]
    lim = LogLimiter(burst=3, window_s=60.0, clock=lambda: now[0])
    got = [lim.allow("bad_tag") for _ in range(10)]
    assert got[:3] == [(True, 0)] * 3 and got[3:] == [(False, 0)] * 7
    assert lim.allow("malformed") == (True, 0)          # one kind does not hide another
    now[0] = 61.0
    assert lim.allow("bad_tag") == (True, 7)            # the next line says 7 were not logged
    assert lim.allow("bad_tag") == (True, 0)


def test_junk_frames_on_alices_port_are_all_counted_but_logged_a_few_times(tmp_path, caplog):
    from drivers.qrng import OsEntropySource
    from hil.model import LinkModel
    from link.channel import Channel
    from link.frontend import ModelLink
    from link.keystore import KeyStore
    from link.node import Node
    from link.pipeline import config_for_scenario

    write_psk(tmp_path / "a.psk", "L", 8192)
    ctx = zmq.Context()
    model = LinkModel(None)
    cfg = config_for_scenario(model.scenario)
    store = KeyStore(tmp_path / "a.db", "L", key_size_bits=cfg.key_size_bits)
    ch = Channel("alice", AuthPool(tmp_path / "a.psk", tmp_path / "a.db", "alice"), ctx=ctx)
    node = Node("alice", ch, store, ModelLink(model).alice, OsEntropySource(), cfg, ctx=ctx)
    eps = ch.bind()
    ch.start()
    junk = ctx.socket(zmq.DEALER)
    junk.setsockopt(zmq.LINGER, 0)
    junk.connect(eps["proto"])
    n = 3000
    try:
        with caplog.at_level(logging.WARNING):
            for i in range(n):
                junk.send(b"\x00junk frame %d" % i)
            end = time.monotonic() + 20
            while ch.counters["malformed"] < n and time.monotonic() < end:
                time.sleep(0.05)
        assert ch.counters["malformed"] == n                     # every frame refused and counted
        lines = [r for r in caplog.records if "alarm malformed" in r.getMessage()]
        assert 0 < len(lines) <= 2 * 20, len(lines)               # channel + node, 20 each a minute
        assert len(node.alarms) == 1000 and node.alarms[-1]["alarm"] == "malformed"
    finally:
        junk.close(0)
        node.close()
        ch.close()
        store.close()
        ctx.destroy(linger=0)

"""``qkd monitor --dashboard``: sparklines drawn from the telemetry of a real run."""

from __future__ import annotations

import math
import threading

from link.cli import main
from link.dashboard import BARS, Dashboard, sparkline
from link.pipeline import run_local


def test_sparkline_levels_gaps_and_window():
    assert sparkline(range(8)) == BARS
    assert sparkline([0, 7, None, math.nan, 3.5], lo=0, hi=7) == "▁█  ▅"
    assert sparkline([5, 5, 5]) == "▁▁▁"                 # flat: lowest level, not full bars
    assert sparkline(range(100), width=10) == sparkline(range(90, 100))
    assert sparkline([2.0], lo=0, hi=1) == "█"          # clipped, not an IndexError
    assert sparkline([]) == ""


def test_dashboard_rates_qber_and_alarms_from_telemetry():
    d = Dashboard(width=8)
    for i in range(5):   # secret bits grow by 1000, 2000, ... per second
        d.update({"node": "alice", "kind": "status", "t": 100.0 + i, "wall_s": float(i),
                  "secret_bits": 500 * i * (i + 1), "sifted": 10_000 * i, "blocks": i, "blocks_aborted": 0,
                  "store_keys": 4 * i, "pool_min_left_pads": 900})
    for q in (0.01, 0.02, 0.04):
        d.update({"node": "alice", "kind": "block", "t": 105.0, "qber_x": q, "f": 1.1, "secret_bits": 7000,
                  "aborted": False})
    d.update({"node": "bob", "kind": "block", "t": 105.0, "qber_x": math.nan, "secret_bits": 7000})
    d.update({"node": "alice", "kind": "alarm", "t": 106.0, "alarm": "qber_high", "reason": "QBER 0.12"})
    d.update({"node": "alice", "kind": "kme", "t": 106.0, "enc_keys": 3})
    v = d.nodes["alice"]
    assert list(v.secret_bps) == [1000.0, 2000.0, 3000.0, 4000.0]
    assert list(v.sifted_bps) == [10_000.0] * 4
    assert not d.nodes["bob"].qber                       # Bob's blocks carry no QBER
    text = d.render(now=107.0)
    assert "secret rate ▃▅▇█ 2.50 kb/s (mean over 4 s)" in text   # 10000 bits in 4 s
    assert "QBER_X      ▃▅█ 0.0400" in text
    assert "alarms 1, last" in text and "qber_high: QBER 0.12" in text
    assert "enc_keys 3" in text and "keys in store 16" in text


def test_secret_rate_figure_is_the_window_mean_not_the_last_sample():
    # secret key arrives a block at a time: status every 0.5 s, 600,000 bits every 6 s. The figure
    # showed the last 0.5 s difference, "0 b/s" most of the time on a link making 100 kb/s
    d = Dashboard(width=40)
    for i in range(30):                              # 14.5 s: blocks at 6 s and 12 s
        d.update({"node": "bob", "kind": "status", "t": 100.0 + i / 2, "wall_s": i / 2,
                  "secret_bits": 600_000 * int(i / 2 // 6), "sifted": 0, "blocks": 0})
    line = next(x for x in d.render(now=120.0).splitlines() if "secret rate" in x)
    assert line.endswith("82.76 kb/s (mean over 14 s)"), line   # 1.2e6 bits / 14.5 s
    # a restarted node's counters begin again: the mean starts over with them
    for i in range(5):
        d.update({"node": "bob", "kind": "status", "t": 200.0 + i / 2, "wall_s": i / 2,
                  "secret_bits": 100_000 * i, "sifted": 0, "blocks": 0})
    line = next(x for x in d.render(now=210.0).splitlines() if "secret rate" in x)
    assert line.endswith("200.00 kb/s (mean over 2 s)"), line


def test_monitor_dashboard_on_a_live_run(capsys):
    # the CLI draws frames from the nodes' real telemetry sockets; a Dashboard on its own
    # subscription follows the run until Alice's first block (QBER) has arrived
    import json
    import time

    import zmq

    done = {"cli": threading.Event(), "dash": threading.Event()}
    stop = threading.Event()
    rc: list[int] = []
    dash = Dashboard(width=20)

    def attach(nodes):
        eps = [n.telemetry_endpoint for n in nodes.values()]

        def cli():
            try:
                rc.append(main(["monitor", "--connect", *eps, "--dashboard", "--refresh", "0.5",
                                "--count", "12"]))
            finally:
                done["cli"].set()

        def follow():
            ctx = zmq.Context.instance()
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt_string(zmq.SUBSCRIBE, "")
            for ep in eps:
                sub.connect(ep)
            end = time.monotonic() + 90
            try:
                while time.monotonic() < end and not ("alice" in dash.nodes and dash.nodes["alice"].qber):
                    if sub.poll(200):
                        dash.update(json.loads(sub.recv_string()))
            finally:
                sub.close(0)
                done["dash"].set()

        ts = [threading.Thread(target=cli), threading.Thread(target=follow)]
        for t in ts:
            t.start()
        threading.Thread(target=lambda: (done["cli"].wait(90), done["dash"].wait(90), stop.set())).start()
        return lambda: [t.join(30) for t in ts]

    s = run_local(None, config=_small(), blocks=20, duration_s=120, stop_event=stop, attach=attach)
    assert rc == [0] and s["blocks"] >= 1
    frames = capsys.readouterr().out.split("qkd monitor ")
    assert len(frames) >= 3                              # redrawn while the run went on
    last = frames[-1]
    assert "alice  secret rate" in last and "bob    secret rate" in last
    sifted = next(line for line in last.splitlines() if "sifted rate" in line)
    assert any(c in BARS[1:] for c in sifted) and "/s" in sifted
    text = dash.render()
    qline = next(line for line in text.splitlines() if "QBER_X" in line)
    assert any(c in BARS for c in qline) and 0 < float(qline.split()[-1]) < 0.05
    assert dash.nodes["alice"].block_bits[-1] > 0        # the block gave key


def _small():
    # blocks of 2^19 Z bits (key from 2^19 on at 25 km): a first block sooner
    from hil.model import LinkModel
    from link.pipeline import config_for_scenario

    return config_for_scenario(LinkModel(None).scenario, block_bits=1 << 19)

"""A live text dashboard of node telemetry: sparklines of key rate, QBER and f.

What it is for: ``qkd monitor --dashboard``. ``Dashboard.update`` takes the
telemetry objects a node publishes (``link.node``: ``status`` every 0.5 s,
``block`` per finished block, ``alarm``, ``kme``) and keeps a bounded history
per node; ``render`` draws it as plain text with Unicode block sparklines
(one character per sample, eight levels). Rates are differences of the
status counters over the wall-clock time between two status objects; the figure
beside a rate's sparkline is its mean over the whole window (the counters' growth
from the window's first status object to its last), because secret key arrives in
blocks: between two status objects 0.5 s apart it is 0 most of the time, and that
last sample showed "secret rate 0 b/s" on a link making ~100 kb/s.

Why plain text and no curses: the view must work in any terminal, in a log
file and over ssh without a terminal database; redrawing is one ANSI
"home + clear" sequence, which the CLI adds only on a terminal.

What it must not do: read sockets or print (the CLI owns both), or show
anything but the telemetry fields (telemetry carries no key material).
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Iterable

BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Iterable[float | None], width: int = 40, lo: float | None = None,
              hi: float | None = None) -> str:
    """The last ``width`` values as block characters scaled to [lo, hi] (default: their range).

    Missing values (None, NaN) are blanks. A flat series is drawn at the
    lowest level, so a constant rate does not look like a full bar.
    """
    vals = list(values)[-width:]
    good = [v for v in vals if v is not None and math.isfinite(v)]
    if not good:
        return " " * len(vals)
    lo = min(good) if lo is None else lo
    hi = max(good) if hi is None else hi
    span = hi - lo
    out = []
    for v in vals:
        if v is None or not math.isfinite(v):
            out.append(" ")
        elif span <= 0:
            out.append(BARS[0])
        else:
            x = min(max((v - lo) / span, 0.0), 1.0)
            out.append(BARS[min(int(x * len(BARS)), len(BARS) - 1)])
    return "".join(out)


def _rate(bps: float | None) -> str:
    if bps is None or not math.isfinite(bps):
        return "-"
    for unit, scale in (("Mb/s", 1e6), ("kb/s", 1e3)):
        if abs(bps) >= scale:
            return f"{bps / scale:.2f} {unit}"
    return f"{bps:.0f} b/s"


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, fmt)


#: Seconds without an authenticated frame from the peer after which a node's view says so.
PEER_SILENT_NOTE_S = 10.0


def peer_note(st: dict) -> str:
    """"; waiting for PEER: ..." when a status object shows the peer silent for
    PEER_SILENT_NOTE_S or more (never heard, or heard long ago), else "". The link then waits
    for the peer, and no count would change to show why (``qkd alice``/``qkd bob``'s status line
    and the dashboard)."""
    silent = st.get("peer_silent_s")
    if not isinstance(silent, int | float) or silent < PEER_SILENT_NOTE_S:
        return ""
    if not st.get("peer_heard"):
        return f"; waiting for {st.get('peer', 'the peer')}: nothing heard since start ({silent:.0f} s)"
    return f"; waiting for {st.get('peer', 'the peer')}: nothing heard for {silent:.0f} s"


class _NodeView:
    def __init__(self, history: int) -> None:
        self.secret_bps: collections.deque = collections.deque(maxlen=history)
        self.sifted_bps: collections.deque = collections.deque(maxlen=history)
        self.qber: collections.deque = collections.deque(maxlen=history)
        self.f: collections.deque = collections.deque(maxlen=history)
        self.block_bits: collections.deque = collections.deque(maxlen=history)
        self.last_status: dict | None = None
        self.window: collections.deque = collections.deque(maxlen=history + 1)  # (wall_s, secret, sifted)
        self.alarms: collections.deque = collections.deque(maxlen=5)
        self.alarm_count = 0
        self.kme = {"enc_keys": 0, "dec_keys": 0}
        self.t = 0.0


class Dashboard:
    """Telemetry in, a text frame out (see the module docstring)."""

    def __init__(self, width: int = 40) -> None:
        if width < 4:
            raise ValueError(f"width: expected >= 4 samples, got {width}")
        self.width = width
        self.nodes: dict[str, _NodeView] = {}

    def update(self, msg: dict) -> None:
        who = str(msg.get("node", "?"))
        v = self.nodes.get(who)
        if v is None:
            v = self.nodes[who] = _NodeView(self.width)
        v.t = float(msg.get("t", time.time()))
        kind = msg.get("kind")
        if kind == "status":
            prev = v.last_status
            if prev is not None:
                dt = float(msg.get("wall_s", 0)) - float(prev.get("wall_s", 0))
                if dt > 0:
                    v.secret_bps.append((msg.get("secret_bits", 0) - prev.get("secret_bits", 0)) / dt)
                    v.sifted_bps.append((msg.get("sifted", 0) - prev.get("sifted", 0)) / dt)
            v.last_status = msg
            wall = float(msg.get("wall_s", 0))
            if v.window and wall < v.window[-1][0]:   # the node restarted: its counters began again
                v.window.clear()
            v.window.append((wall, msg.get("secret_bits", 0), msg.get("sifted", 0)))
        elif kind == "block":
            q = msg.get("qber_x")
            # a block aborted before parameter estimation carries no QBER: skip it, not a gap
            if isinstance(q, int | float) and math.isfinite(q):
                v.qber.append(float(q))
                f = msg.get("f")
                v.f.append(float(f) if isinstance(f, int | float) else None)
                v.block_bits.append(0.0 if msg.get("aborted") else float(msg.get("secret_bits", 0)))
        elif kind == "alarm":
            v.alarm_count += 1
            v.alarms.append((v.t, str(msg.get("alarm", "?")), str(msg.get("reason", ""))))
        elif kind == "kme":
            for call in v.kme:
                n = msg.get(call)
                if isinstance(n, int):
                    v.kme[call] += n

    def render(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        w = self.width
        lines = [f"qkd monitor  {time.strftime('%H:%M:%S', time.localtime(now))}  "
                 f"nodes: {', '.join(sorted(self.nodes)) or 'waiting for telemetry'}"]
        for who in sorted(self.nodes):
            v = self.nodes[who]
            st = v.last_status or {}
            last = lambda d: d[-1] if d else None  # noqa: E731
            sec, sif = v.secret_bps, v.sifted_bps
            mean_sec = mean_sif = None
            span = v.window[-1][0] - v.window[0][0] if v.window else 0.0
            if span > 0:
                mean_sec = (v.window[-1][1] - v.window[0][1]) / span
                mean_sif = (v.window[-1][2] - v.window[0][2]) / span
            over = f" (mean over {span:.0f} s)" if span > 0 else ""
            lines.append("")
            lines.append(f"{who:<6} secret rate {sparkline(sec, w, lo=0)} {_rate(mean_sec)}{over}")
            lines.append(f"{'':<6} sifted rate {sparkline(sif, w, lo=0)} {_rate(mean_sif)}{over}")
            if v.qber:
                lines.append(f"{'':<6} QBER_X      {sparkline(v.qber, w, lo=0)} {_num(last(v.qber), '.4f')}")
                lines.append(f"{'':<6} f           {sparkline(v.f, w)} {_num(last(v.f), '.3f')}")
                lines.append(f"{'':<6} block key   {sparkline(v.block_bits, w, lo=0)} "
                             f"{_num(last(v.block_bits), '.0f')} bits")
            lines.append(f"{'':<6} blocks {st.get('blocks', 0)} (aborted {st.get('blocks_aborted', 0)})  "
                         f"secret {st.get('secret_bits', 0)} bits  "
                         f"keys in store {st.get('store_keys', '-')}  "
                         f"auth pads left {st.get('pool_min_left_pads', '-')}")
            if note := peer_note(st):
                lines.append(f"{'':<6} {note[2:]}")
            if v.kme["enc_keys"] or v.kme["dec_keys"]:
                lines.append(f"{'':<6} KME keys delivered: enc_keys {v.kme['enc_keys']}, "
                             f"dec_keys {v.kme['dec_keys']}")
            if v.alarm_count:
                t, kind, reason = v.alarms[-1]
                lines.append(f"{'':<6} alarms {v.alarm_count}, last "
                             f"{time.strftime('%H:%M:%S', time.localtime(t))} {kind}: {reason[:60]}")
            else:
                lines.append(f"{'':<6} alarms none")
        return "\n".join(lines)

"""Bounded logging of alarms: a flood of bad frames must not become a flood of log lines.

What it is for: the channel and the node log every alarm at WARNING. Anyone who can reach
Alice's channel port (it listens on the lab network) can send frames that fail to parse or
to authenticate, each one an alarm; logged one line each (twice: by the channel and by the
node), a few thousand frames a second filled the journal or the disk faster than any log
rotation. ``LogLimiter`` lets ``burst`` lines of one alarm kind through per ``window_s``
seconds and counts the rest; the next line that goes through says how many were not logged.

What it must not do: drop or delay the alarms themselves (counters, telemetry, the node's
reaction are untouched); only the log lines are limited. Why a fixed window per kind: the
first lines of a new kind always show, one noisy kind cannot hide another, and the cost is
a dict lookup.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class LogLimiter:
    """At most ``burst`` log lines per alarm kind in each ``window_s`` seconds."""

    def __init__(self, burst: int = 20, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1 or not window_s > 0:
            raise ValueError(f"burst >= 1 and window_s > 0 expected, got {burst}, {window_s}")
        self.burst, self.window_s, self._clock = int(burst), float(window_s), clock
        self._state: dict[str, list] = {}     # kind -> [window start, lines in it, not logged]
        self._lock = threading.Lock()

    def allow(self, kind: str) -> tuple[bool, int]:
        """Whether to log this alarm of ``kind``, and how many of that kind were not logged
        since the last line that was (to say so in it)."""
        now = self._clock()
        with self._lock:
            st = self._state.get(kind)
            if st is None:
                st = self._state[kind] = [now, 0, 0]
            if now - st[0] >= self.window_s:
                st[0], st[1] = now, 0
            if st[1] < self.burst:
                st[1] += 1
                dropped, st[2] = st[2], 0
                return True, dropped
            st[2] += 1
            return False, 0


def suppressed_note(n: int) -> str:
    """The tail of a log line after ``n`` lines of its kind were not logged."""
    return f" ({n} more of this kind not logged)" if n else ""

"""Watch a node's auxiliary instruments while the link runs; a failing one stops the node safely.

What it is for: the front-end instruments (Alice's pattern generator, Bob's
time tagger) fail loudly inside the pipeline (``Node._guard``: an
``instrument`` alarm and a stop). The others a lab node keeps open beside them
(Bob's detector controllers, SNSPD and ID120; his polarization controller,
EPC-400 or MPC320, between tracking steps) are talked to only now and then, so
a cable pulled or a controller answering garbage or hanging would go unseen
until the key rate collapsed. ``InstrumentWatch`` reads each one's status
(``status()``, the read-back every driver has: bias currents, thresholds,
temperature, actuator settings) every ``period_s``; the first ``DriverError``
(disconnect, malformed reply, timeout; its message names the instrument and the
command) raises the node's ``instrument`` alarm and stops the node.

Safe stop: key generation stops (the node's threads end, blocks in progress
abort, nothing half-committed: the two-step commit and its RESYNC at the next
start settle open blocks, ``link.commit``); the instruments are left as they
are. A polarization controller holds its setting; a detector keeps its bias
(ramping it down is the lab's procedure and needs the connection that just
failed). Nothing is retried: an instrument that misbehaved once is not trusted
with the next block's detections.

What it must not do: change an instrument's setting, poll faster than the
instruments' own measurement periods need (status reads are short commands,
every half second by default), or outlive the node (``close``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from drivers.errors import DriverError

log = logging.getLogger(__name__)


class InstrumentWatch:
    """Poll ``instruments`` (name -> opened driver) every ``period_s`` on behalf of ``node``.

    ``checks`` maps a name to the read to make (``driver -> object``); default ``status()``.
    """

    def __init__(self, node, instruments: dict[str, object], *, period_s: float = 0.5,
                 checks: dict[str, Callable[[object], object]] | None = None) -> None:
        if period_s <= 0:
            raise ValueError(f"period_s: must be > 0, got {period_s}")
        for name, drv in instruments.items():
            if not callable(getattr(drv, "status", None)) and name not in (checks or {}):
                raise TypeError(f"instruments[{name!r}]: has no status() and no check was given")
        self.node = node
        self.instruments = dict(instruments)
        self.checks = dict(checks or {})
        self.period_s = float(period_s)
        self.polls = 0
        self.failed: str | None = None     # the alarm text, once an instrument failed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> InstrumentWatch:
        self._thread = threading.Thread(target=self._run, name=f"{self.node.role}-instrument-watch",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s) and not self.node.stopped:
            for name, drv in self.instruments.items():
                t0 = time.monotonic()
                try:
                    check = self.checks.get(name)
                    _ = check(drv) if check is not None else drv.status()
                except DriverError as exc:
                    self._fail(f"{name}: {exc}")
                    return
                log.debug("%s: %s status read in %.3f s", self.node.role, name, time.monotonic() - t0)
            self.polls += 1

    def _fail(self, reason: str) -> None:
        self.failed = reason
        self.node.alarm("instrument", reason)
        self.node.stop()           # safe stop: see the module docstring

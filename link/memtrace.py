"""Opt-in allocation tracing of a running node, for finding what grows in a long run.

    QKD_MEMTRACE=/tmp/trace QKD_MEMTRACE_EVERY=60 qkd alice --config alice.toml

What it is for: a soak (``bench.soak``) sees a node's RSS grow but not why. With
``QKD_MEMTRACE`` set to a folder, ``start`` (called by ``Node.start``) turns on ``tracemalloc``
and a daemon thread that, every ``QKD_MEMTRACE_EVERY`` seconds, writes
``memtrace-<role>-<pid>-<n>.txt``: the Python heap traced now, and the 25 call sites whose
live allocations grew most since the first snapshot (taken one interval after the start, so
start-up is not counted), with ``QKD_MEMTRACE_FRAMES`` frames each (default 4). One line per
snapshot also goes to ``memtrace-<role>-<pid>.log`` (time, traced bytes, the bytes SQLite has
allocated, RSS), the curves to compare with the RSS the soak samples: traced growth that
matches RSS growth is Python objects (numpy arrays included), SQLite's is its page caches
(``sqlite3_memory_used``), RSS growth with neither is the allocator or other C.

Why tracemalloc: it is in the standard library, attributes every live Python allocation to
the line that made it, and its snapshot diff is exactly "what is alive now that was not
then". It slows allocation-heavy code by roughly 2x; that is why it is opt-in (an
environment variable, not a node-file setting: it is a diagnostic, never a production mode).

What it must not do: run unless asked, write key material (only sizes and source lines are
written), or stop the node if the folder cannot be written (it logs and stops tracing).
"""

from __future__ import annotations

import linecache
import logging
import os
import threading
import time
import tracemalloc
from pathlib import Path

log = logging.getLogger(__name__)

ENV_DIR = "QKD_MEMTRACE"
ENV_EVERY = "QKD_MEMTRACE_EVERY"
ENV_FRAMES = "QKD_MEMTRACE_FRAMES"
TOP = 25

_started = threading.Lock()     # one tracer per process (run_local has both nodes in one)


def _rss_kb() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _sqlite_memory_fn():
    """``sqlite3_memory_used`` of the SQLite library the sqlite3 module uses (None if not found)."""
    try:
        import _sqlite3
        import ctypes
        fn = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    except (ImportError, OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int64
    return fn


def sqlite_memory_used() -> int | None:
    """Bytes SQLite has allocated in this process now (page caches, statements), or None."""
    fn = _sqlite_memory_fn()
    return None if fn is None else int(fn())


def report(base: tracemalloc.Snapshot, now: tracemalloc.Snapshot, top: int = TOP) -> str:
    """The ``top`` call sites (whole tracebacks) whose live allocations grew most since ``base``."""
    lines = []
    for st in now.compare_to(base, "traceback")[:top]:
        lines.append(f"{st.size_diff / 1024:+10.1f} KiB {st.count_diff:+8d} blocks "
                     f"(now {st.size / 1024:.1f} KiB)")
        lines.extend(f"      {ln}" for ln in st.traceback.format(most_recent_first=True))
    return "\n".join(lines)


def _filtered(snap: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
    # linecache: the source lines report() formats are cached there (~1.5 MB in a soak): ours
    return snap.filter_traces((tracemalloc.Filter(False, tracemalloc.__file__),
                               tracemalloc.Filter(False, __file__),
                               tracemalloc.Filter(False, linecache.__file__)))


def _loop(folder: Path, role: str, every_s: float) -> None:
    pid = os.getpid()
    t0 = time.monotonic()
    base = None
    n = 0
    while True:
        time.sleep(every_s)
        try:
            snap = _filtered(tracemalloc.take_snapshot())
            cur, peak = tracemalloc.get_traced_memory()
            with open(folder / f"memtrace-{role}-{pid}.log", "a") as fh:
                fh.write(f"{time.monotonic() - t0:.0f} s traced {cur} peak {peak} sqlite "
                         f"{sqlite_memory_used()} rss_kb {_rss_kb()}\n")
            if base is None:
                base = snap
                continue
            n += 1
            (folder / f"memtrace-{role}-{pid}-{n}.txt").write_text(
                f"{time.monotonic() - t0:.0f} s since start; traced {cur / 1e6:.2f} MB; growth since "
                f"the first snapshot by call site:\n{report(base, snap)}\n")
        except OSError as exc:
            log.warning("memtrace: cannot write in %s (%s); tracing stopped", folder, exc)
            tracemalloc.stop()
            return


def start(role: str) -> bool:
    """Start tracing if ``QKD_MEMTRACE`` names a folder (once per process); True if started."""
    folder = os.environ.get(ENV_DIR)
    if not folder or not _started.acquire(blocking=False):
        return False
    every_s = float(os.environ.get(ENV_EVERY, "60"))
    frames = int(os.environ.get(ENV_FRAMES, "4"))
    if every_s <= 0 or frames < 1:
        raise ValueError(f"{ENV_EVERY} must be > 0 and {ENV_FRAMES} >= 1, got {every_s} and {frames}")
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(frames)
    threading.Thread(target=_loop, args=(d, role, every_s), name=f"{role}-memtrace",
                     daemon=True).start()
    log.warning("memtrace: tracing allocations into %s every %g s (slower node)", d, every_s)
    return True

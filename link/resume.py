"""Frame re-synchronisation when one node of the link restarts alone (issue 9, kill -9 of a node).

What it is for: with each node in its own process (``qkd alice`` / ``qkd bob``)
either can crash and come back while the other keeps running. Most of what the
two must agree on to resume is already durable and exchanged at a restart:
block IDs (``KeyStore.next_block_id``, a durable counter on Alice's side, who
hands them out), half-done two-step commits (``link.commit``: ``RESYNC`` on
every ``HELLO``), authentication pool positions (``link.channel``: each lane
reopens with ``HELLO`` above a durable sequence reservation; pool segments of
committed blocks are named by index in ``COMMIT``/``RESYNC``). What was not is
the *frame number*: Alice numbered frames from 0 at every start, so a restarted
Alice would re-use the numbers of frames the old one had sent and Bob may still
announce (their detections belong to a pattern the new Alice never drew: sifting
them against her new pattern gives a block of garbage). And a restarted Bob
never announces the frames Alice sent while he was down, so her pending
patterns would fill ``max_frames_in_flight`` and stall her acquisition for ever.

``FrameResync`` (Alice only) fixes both:

* Frame numbers are reserved durably in Alice's key store, ``CHUNK`` at a time
  (one SQLite write per ``CHUNK`` frames): a restarted Alice starts at the
  reserved high-water mark, above every frame any earlier run may have sent,
  and tells her front end (``set_first_frame``) so the frames it emits carry
  those numbers to Bob.
* A *floor*: announcements of frames below it are frames of an earlier Alice
  (or frames Alice dropped at Bob's restart) and are dropped quietly, counted
  in ``dropped``, never sifted. At start the floor is the first frame; at a
  ``HELLO`` from a restarted Bob it rises to Alice's next frame and every
  pending pattern below it is wiped and its in-flight slot released.

Only front ends that can number their frames (``set_first_frame``: the fiber
front ends in ``link.fiber``, and the instrument front ends ``DriverAlice`` /
``DriverBob``, which agree on numbers through ``link.frame_epoch``) get a
``FrameResync``; the in-process model numbers frames by emission order from 0
and keeps the old behaviour (there both nodes restart together).

What it must not do: sift a frame against a pattern other than the one sent
under its number, or hold a pattern after its frame can no longer be announced.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

# frames reserved per durable write: under 10 s of frames on this machine (qkd run, 3 blocks,
# 2026-11-25, start-up included: ~725 rig frames of 2^18 slots in 17 s, ~185 model frames of
# 2^20 slots in 6 s)
CHUNK = 256
COUNTER = "alice_frames"


class FrameResync:
    """Alice's durable frame numbering and the floor below which announcements are stale."""

    def __init__(self, store, frontend) -> None:
        self.store = store
        self.fe = frontend
        self._lock = threading.Lock()
        self._reserved = 0
        self.first = 0
        self.floor = 0
        self.next = 0            # the next frame number Alice will register as pending
        self.dropped = 0         # announced frames below the floor (sent before a restart)
        self.resets = 0          # Bob restarts seen

    @classmethod
    def for_node(cls, role: str, store, frontend) -> FrameResync | None:
        """Alice's re-synchronisation, set up at once (before the node's threads start: the
        dispatcher may see a stale announcement before the first frame is drawn), or None."""
        if role != "alice" or not callable(getattr(frontend, "set_first_frame", None)):
            return None
        r = cls(store, frontend)
        r._resume()
        return r

    def _resume(self) -> None:
        with self._lock:
            self._reserved = self.store.raise_counter(COUNTER, 0)
            self.first = self.floor = self.next = self._reserved
        self.fe.set_first_frame(self.first)
        if self.first:
            log.info("alice: frames resume at %d (reserved by an earlier run)", self.first)

    def first_frame(self) -> int:
        """Where this run's frames start: above every frame an earlier run may have sent."""
        return self.first

    def reserve(self, f: int) -> None:
        """Before frame ``f`` leaves: make sure a restart starts above it (durable)."""
        if f >= self._reserved:
            self._reserved = self.store.raise_counter(COUNTER, f + CHUNK)

    def stale(self, f: int) -> bool:
        """An announced frame from before the floor: drop it (counted), do not sift it."""
        if f < self.floor:
            self.dropped += 1
            return True
        return False

    def peer_restarted(self, frames: dict, frames_lock, frame_sem) -> int:
        """Bob restarted: frames sent before now will not all be announced. Raise the floor to
        the next frame, wipe the pending patterns below it and free their in-flight slots."""
        with frames_lock:
            self.floor = self.next
            old = [k for k in frames if k < self.floor]
            for k in old:
                frames.pop(k).wipe()
                frame_sem.release()
            self.resets += 1
        begin = getattr(self.fe, "begin_epoch", None)
        if callable(begin):             # instrument front ends: Bob's new tagger stream needs an epoch
            begin()
        log.info("alice: peer restarted, frames below %d dropped (%d pending patterns wiped)",
                 self.floor, len(old))
        return self.floor

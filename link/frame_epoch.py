"""Frame-number epochs for the instrument front ends: either node of a rig or lab link restarts alone.

What it is for: ``link.resume`` gives Alice durable frame numbers (a restarted
Alice starts above every frame an earlier run sent) and a floor for stale
announcements. The fiber front ends (``link.fiber``) carry Alice's number with
each frame; real instruments cannot: the AWG plays what is uploaded, and the
time tagger only sees one sync pulse per frame, numbered by Bob from the start
of his own stream. So after a restart of either side the two ends must agree
which sync is which frame. An *epoch* does that over the authenticated ctrl
lane:

1. Alice (``DriverAlice``) stops uploading and sends ``FRAME_EPOCH(F)``, F the
   number her next uploaded frame will carry: at her start (F is the first
   frame ``link.resume`` reserved for this run) and when Bob restarts (a second
   ``HELLO``; F is her next frame, above the floor ``link.resume`` raises).
   She resends it every ``RESEND_S`` until acknowledged.
2. Bob (``DriverBob``) drops every frame from then on and waits until his
   tagger has shown no sync for ``QUIET_S``: every frame Alice uploaded before
   has then reached him (or is lost). He notes the index of the last sync he
   saw and answers ``FRAME_EPOCH_ACK(F)``.
3. Alice uploads again; Bob numbers the first frame after the noted sync F and
   the later ones by their sync index from it (a lost sync in between still
   counts, from the sync spacing, in ``link.slotting``).

Why a quiet gap rather than counting: after a kill -9 neither side knows how
many frames the dead run uploaded or how many syncs are still in buffers; a
pause both can observe needs no such count and works the same on the rig and
on real instruments (which stop emitting when nothing is uploaded).

What it must not do: let a frame uploaded before an epoch be numbered in it
(Bob drops everything while an epoch is pending; Alice uploads nothing until the
acknowledgement), or block a stopping node (waits give up on the node's stop).
Limit: if the very first sync of an epoch is lost, Bob's numbers are off by one
for that epoch; sifting then sees ~50 % errors and the block aborts (qber_high),
no wrong key is stored.
"""

from __future__ import annotations

import logging

from .messages import Message, MsgType

log = logging.getLogger(__name__)

QUIET_S = 1.0        # no sync for this long: every earlier frame has reached Bob's tagger
RESEND_S = 2.0       # Alice repeats an unacknowledged FRAME_EPOCH


def attach(node) -> bool:
    """Wire the node's front end into epochs if it supports them (``begin_epoch``); True if so.

    Alice's side needs ``node.resume`` (``link.resume.FrameResync``, made before): it set the
    front end's first frame; the first epoch is requested here, later ones by
    ``FrameResync.peer_restarted``."""
    fe = node.fe
    if not callable(getattr(fe, "begin_epoch", None)):
        return False
    if node.role == "alice":
        if node.resume is None:
            return False

        def send(frame: int) -> None:
            node.ch.send(MsgType.FRAME_EPOCH, int(frame), b"", lane="ctrl")

        node.ctrl_handlers[MsgType.FRAME_EPOCH_ACK] = lambda m: fe.epoch_acked(int(m.block_id))
        fe.use_epochs(send, node._stop)
        fe.begin_epoch()
    else:
        def ack(frame: int) -> None:
            node.ch.send(MsgType.FRAME_EPOCH_ACK, int(frame), b"", lane="ctrl")

        def on_epoch(m: Message) -> None:
            fe.begin_epoch(int(m.block_id))

        node.ctrl_handlers[MsgType.FRAME_EPOCH] = on_epoch
        fe.use_epochs(ack)
    return True

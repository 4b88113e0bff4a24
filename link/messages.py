"""Wire format of the classical channel: one ZeroMQ frame per message.

What it is for: define the header every message carries and the message
types of the link protocol, and nothing else (no sockets, no key material).

Layout (big-endian header, then payload, then the tag)::

    version u8 | type u8 | sender u8 (0 alice, 1 bob) | lane u8 (0 proto, 1 ctrl)
    seq u64 | block_id u64 | payload_len u32 | payload | tag (8 bytes)

The tag authenticates everything before it (see ``link.auth``). A fixed
binary header (rather than JSON) keeps the authenticated bytes unambiguous:
there is exactly one encoding of a given header.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

# 1: first release. 2: RECON_BATCH (reconciliation of all blocks in flight in one message),
# multi-frame SIFT_ANNOUNCE / SIFT_MATCH with packed bases and 16-bit slot gaps, KME_RESERVE(D),
# QC-LDPC codes. 3: SIFT_MATCH carries the match mask one bit per event and the intensity
# classes as two bit planes. 4: PE_DISCLOSE carries Bob's X bits packed (``x_words``, uint64,
# with meta ``n_x``; was one byte per bit). 5: PE_DISCLOSE's meta also carries Bob's
# ``cross_clicks`` and ``events`` of the block (the passive receiver's multi-photon bound,
# link.finite_key). 6: COMMIT carries ``auth_layout`` (the pool segment index of each auth
# stream, or -1: each stream is refilled only below its own high water, link.commit) instead of
# one ``auth_idx``; RESYNC lists [state, auth_layout]. A version-5 peer would have refilled every
# stream from a version-6 COMMIT and its pool would differ from ours: it refuses our frames instead.
# 7: HELLO carries the sender's last accepted and floor sequence numbers of the peer's data
# stream on its lane, and RESUME (channel-internal) re-sends unacknowledged frames above that
# floor (link.channel); a version-6 peer would refuse RESUME as an unknown type and stall.
# A node refuses frames of another version (WireError naming both).
PROTOCOL_VERSION = 7
HEADER = struct.Struct(">BBBBQQI")
TAG_LEN = 8
MAX_PAYLOAD = 1 << 30

ROLE_CODE = {"alice": 0, "bob": 1}
ROLE_NAME = {v: k for k, v in ROLE_CODE.items()}
LANE_CODE = {"proto": 0, "ctrl": 1}
LANE_NAME = {v: k for k, v in LANE_CODE.items()}


class MsgType(IntEnum):
    """Every message type of the link protocol."""

    ACK = 1            # cumulative acknowledgement (payload: u64 last in-order data seq)
    HELLO = 2          # first message after a (re)start; may jump the sequence forward
    ABORT = 3          # stop the block (payload: reason, utf-8)
    RESUME = 5         # channel only: old seqs lo..lo+n-1 of the unacked window follow, renumbered
    # sifting and parameter estimation
    SIFT_ANNOUNCE = 10     # Bob: detected slots and bases of a frame range
    SIFT_MATCH = 11        # Alice: basis-match mask and intensity classes
    PE_DISCLOSE = 12       # Bob: his X-basis bits (test basis) for the error estimate
    PE_RESULT = 13         # Alice: X error counts, chosen method, estimated QBER
    # reconciliation (payload: opaque message of postproc_c.make_side)
    RECON = 20
    VERIFY = 21            # verification tag exchange
    VERIFY_RESULT = 22
    PA_SEED = 23           # Alice: Toeplitz seed and output length
    RECON_BATCH = 24       # reconciliation messages of every block in flight (link.recon_mux)
    # two-step commit of a block's keys
    PREPARE = 30
    PREPARED = 31
    COMMIT = 32
    COMMITTED = 33
    RESYNC = 34            # after restart: list of prepared/committed blocks
    RESYNC_REPLY = 35
    # generic application data (tests, control)
    DATA = 40
    STOP = 41
    # KME-to-KME key reservation (link.kme_link; ctrl lane; block_id carries the request ID)
    KME_RESERVE = 50       # master's KME: JSON {master, slave, keys: [{key_ID, store_IDs, size}]}
    KME_RESERVED = 51      # peer's KME: JSON {ok, status, message}
    # frame-number epochs of the instrument front ends (link.frame_epoch; ctrl lane)
    FRAME_EPOCH = 60       # Alice: block_id = the number of her next uploaded frame; she waits
    FRAME_EPOCH_ACK = 61   # Bob: block_id = that number; his tagger's next sync is that frame


class WireError(ValueError):
    """A frame that does not parse (short, wrong version, unknown type, bad length)."""


@dataclass(frozen=True)
class Message:
    """A parsed, authenticated message as the application sees it."""

    mtype: MsgType
    sender: str
    lane: str
    seq: int
    block_id: int
    payload: bytes


def encode_header(mtype: int, sender: str, lane: str, seq: int, block_id: int, payload_len: int) -> bytes:
    if payload_len > MAX_PAYLOAD:
        raise ValueError(f"payload: {payload_len} bytes exceed the limit of {MAX_PAYLOAD}")
    return HEADER.pack(PROTOCOL_VERSION, int(mtype), ROLE_CODE[sender], LANE_CODE[lane], seq,
                       block_id, payload_len)


def split_frame(frame: bytes) -> tuple[tuple, memoryview, bytes]:
    """Split a raw frame into (header fields, signed bytes, tag) without trusting it.

    Raises ``WireError`` for anything malformed; nothing here is acted on
    before the caller has verified the tag over the signed bytes.
    """
    if len(frame) < HEADER.size + TAG_LEN:
        raise WireError(f"frame of {len(frame)} bytes is shorter than header + tag")
    ver, mtype, sender, lane, seq, block_id, plen = HEADER.unpack_from(frame)
    if ver != PROTOCOL_VERSION:
        raise WireError(f"protocol version {ver}, expected {PROTOCOL_VERSION}")
    if sender not in ROLE_NAME or lane not in LANE_NAME:
        raise WireError(f"bad sender {sender} or lane {lane}")
    try:
        mt = MsgType(mtype)
    except ValueError as exc:
        raise WireError(f"unknown message type {mtype}") from exc
    if HEADER.size + plen + TAG_LEN != len(frame):
        raise WireError(f"payload length {plen} does not match the frame size {len(frame)}")
    mv = memoryview(frame)
    signed = mv[:HEADER.size + plen]
    tag = bytes(mv[HEADER.size + plen:])
    return (mt, ROLE_NAME[sender], LANE_NAME[lane], seq, block_id, plen), signed, tag

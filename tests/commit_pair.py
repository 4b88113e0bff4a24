"""Alice's and Bob's key stores, channels and committers over real ZeroMQ sockets in this
process: the set-up of tests that drive the two-step commit (``link.commit``) directly. Not a
fixture: the tests choose the refill size and what they commit."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import zmq

from link.auth import AuthPool, write_psk
from link.channel import Channel
from link.commit import COMMIT_TYPES, Committer
from link.keystore import KeyStore


@contextmanager
def committer_pair(tmp_path: Path, auth_refill_bytes: int) -> Iterator[dict]:
    """``{"alice": (store, channel, committer), "bob": (...)}`` on a fresh 8 KiB pre-shared
    secret (1023 pads a stream), channels started; everything closed on exit."""
    write_psk(tmp_path / "l.psk", "L", 8192)
    ctx = zmq.Context()
    nodes = {}
    for role in ("alice", "bob"):
        st = KeyStore(tmp_path / f"{role}.db", "L", auth_refill_bytes=auth_refill_bytes)
        ch = Channel(role, AuthPool(tmp_path / "l.psk", tmp_path / f"{role}.db", role), ctx=ctx,
                     retry_s=0.05)
        nodes[role] = (st, ch, Committer(role, ch, st))
    nodes["bob"][1].connect(**nodes["alice"][1].bind())
    try:
        for _, ch, _ in nodes.values():
            ch.start()
        yield nodes
    finally:
        for st, ch, _ in nodes.values():
            ch.close()
            st.close()
        ctx.destroy(linger=0)


def pump(nodes: dict, done: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Hand each node's commit messages to its committer until ``done()`` or the timeout."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and not done():
        for _, ch, com in nodes.values():
            m = ch.recv(timeout=0.01)
            if m is not None and m.mtype in COMMIT_TYPES:
                com.handle(m)


def split_for(store: KeyStore, key_bytes: int, layout: list[int]) -> dict:
    """The split (``KeyStore.commit_summary``) Alice's commit of a ``key_bytes`` block with this
    segment layout gives at her ``auth_refill_bytes``: what a hand-made COMMIT must carry."""
    from link.auth import NO_SEGMENT, SEGMENT_WEIGHTS, STREAMS, segment_unit

    unit = segment_unit(min(store.auth_refill_bytes, key_bytes), layout)
    used = unit * sum(SEGMENT_WEIGHTS[s.split(".", 1)[1]] for s, i in zip(STREAMS, layout) if i != NO_SEGMENT)
    return {"auth_bytes": used, "n_keys": (key_bytes - used) // (store.key_size_bits // 8),
            "key_size_bits": store.key_size_bits}

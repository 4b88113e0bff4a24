"""One node of the two-step-commit crash test, as a real process (tests/test_keystore.py).

usage: python tests/commit_peer.py alice|bob DIR N_BLOCKS

Stands in for the pipeline with a block key both nodes derive from the block
ID (the commit protocol does not care where the key came from), and runs the
real channel, key store and committer. Alice proposes blocks (at most 3 open
at a time) until N_BLOCKS are final, then tells Bob to stop.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from link.auth import AuthPool  # noqa: E402
from link.channel import Channel  # noqa: E402
from link.commit import COMMIT_TYPES, Committer  # noqa: E402
from link.keystore import KeyStore  # noqa: E402
from link.messages import MsgType  # noqa: E402

KEY_BYTES = 128 + 4 * 32    # 128 bytes to the auth pool, then four 256-bit keys


def block_key(bid: int) -> bytearray:
    out = bytearray()
    i = 0
    while len(out) < KEY_BYTES:
        out += hashlib.blake2b(f"test-block-{bid}-{i}".encode()).digest()
        i += 1
    return out[:KEY_BYTES]


def _die_after(store: KeyStore, spec: str) -> None:
    """``QKD_DIE=STEP:BLOCK``: SIGKILL this process right after its store did STEP (prepare,
    commit, finalize, abort) of block BLOCK, before any message about it leaves."""
    step, block = spec.split(":")
    real = getattr(store, step)

    def then_die(block_id, *args, **kw):
        out = real(block_id, *args, **kw)
        if block_id == int(block):
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    setattr(store, step, then_die)


def _log_pads(pool: AuthPool, path: str) -> None:
    """Record every pad this process uses (tests/test_auth_audit.py): ``tag STREAM SEQ DIGEST``
    for a tag computed on our streams, before the frame can leave, and ``acc STREAM SEQ`` for a
    peer data frame accepted (after its durable write). One unbuffered O_APPEND write per line,
    so a SIGKILL loses nothing that happened."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    tag, accept = pool.tag, pool.accept_recv

    def logged_tag(stream, seq, data):
        out = tag(stream, seq, data)
        if stream.startswith(pool.role + "."):
            os.write(fd, f"tag {stream} {seq} {hashlib.sha256(data).hexdigest()}\n".encode())
        return out

    def logged_accept(stream, seq, durable=True):
        accept(stream, seq, durable)
        if durable:
            os.write(fd, f"acc {stream} {seq}\n".encode())

    pool.tag, pool.accept_recv = logged_tag, logged_accept


def main(role: str, d: str, n_blocks: int) -> int:
    store = KeyStore(os.path.join(d, f"{role}.db"), "crash-link", auth_refill_bytes=128)
    pool = AuthPool(os.path.join(d, "link.psk"), os.path.join(d, f"{role}.db"), role)
    if os.environ.get("QKD_DIE"):
        _die_after(store, os.environ["QKD_DIE"])
    if os.environ.get("QKD_PADLOG"):
        _log_pads(pool, os.environ["QKD_PADLOG"])
    ch = Channel(role, pool, retry_s=0.05)
    eps = {"proto": f"ipc://{d}/proto.sock", "ctrl": f"ipc://{d}/ctrl.sock"}
    if role == "alice":
        ch.bind(**eps)
    else:
        ch.connect(**eps)
    com = Committer(role, ch, store)
    ch.start()
    if role == "alice":
        com.resync()
    while True:
        if role == "alice":
            blocks = store.blocks()
            final = sum(b.state == "final" for b in blocks)
            opened = len(store.open_blocks())
            if final >= n_blocks and opened == 0:
                ch.send(MsgType.STOP, 0)
                ch.wait_acked(5)
                break
            if opened < 3 and len(blocks) < n_blocks + 20:
                bid = store.next_block_id()
                ch.send(MsgType.DATA, bid)
                com.propose(bid, block_key(bid), KEY_BYTES * 8)
        msg = ch.recv(timeout=0.02)
        if msg is None:
            continue
        if msg.mtype in COMMIT_TYPES:
            com.handle(msg)
        elif msg.mtype == MsgType.DATA and role == "bob":
            com.offer(msg.block_id, block_key(msg.block_id), KEY_BYTES * 8)
        elif msg.mtype == MsgType.STOP:
            time.sleep(0.2)       # let our ACK out
            break
    ch.close()
    pool.close()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))

"""One block's post-processing, Alice's and Bob's halves as transport-free state machines.

A block is a run of consecutive frames. For it, Alice holds her frame patterns
and Bob his detections (``link.slotting.FrameDetections``); the two halves
exchange messages ``(type, payload bytes)`` until each holds the same secret
key or both have aborted with the same reason. The node carries the messages
over the authenticated channel; tests carry them in memory
(``run_block_in_memory``). Messages, in order:

====================  =====  ===================================================
type                  from   content
====================  =====  ===================================================
``ann``               Bob    announced slots and bases per frame (sifting, step 1)
``match``             Alice  basis-match mask, intensity class of each match,
                             the public seed reconciliation uses
``xbits``             Bob    his sifted X-basis bits: the test basis is disclosed
``recon_start``       Alice  the QBER estimate (from X) reconciliation starts with,
                             or ``abort`` when it is already hopeless
``recon``             both   reconciliation messages (``postproc_c.make_side``)
``recon_done``        Bob    bit errors per intensity he corrected in Z (Z QBER)
``verify``            Alice  two fresh 64-bit hash keys and her key's tags
``verified``          Bob    whether his tags agree
``pa``                Alice  secret length, leak and test-basis errors, and the
                             fresh Toeplitz seed (privacy amplification)
``abort``             Alice  the reason (no key from this block)
====================  =====  ===================================================

Keys come from the Z basis; the X basis estimates the phase error (DESIGN).
Bob recomputes the secret length from the counts he has and the figures Alice
sends, and refuses the block if the two disagree, so a bookkeeping slip on
either side cannot produce unequal keys.

Error verification: two independent ``poly_hash`` tags (keys from Alice's
random source) on the reconciled key; the keys collide with probability at
most ((ceil(n/64)+1) / 2^64)^2 (``postproc_c.hashing``), which must not exceed
eps_cor. The 128 tag bits count as leaked.

Abort rules (part of the protocol): X-basis QBER above ``max_qber``,
reconciliation failure, verification failure, finite-key length <= 0. The
reason is in the result for the node to raise as an alarm.

Secrets: raw and reconciled keys live in numpy arrays this module owns and
wipes (fills with zeros) when the block ends; nothing here logs bits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import postproc_c as pp

from . import payload
from .finite_key import BasisCounts, DecoySettings, FiniteKeyResult, binary_entropy, secret_key_length
from .slotting import FrameDetections

Message = tuple[str, bytes]
RandomWords = Callable[[int], np.ndarray]   # n -> uint64[n] of uniformly random words

Z, X = 0, 1


@dataclass(frozen=True)
class BlockParams:
    """What both nodes must agree on for every block."""

    frame_slots: int
    decoy: DecoySettings
    protocol: str = "2-decoy"              # or "1-decoy"
    method: str = "cascade"                # reconciliation method (postproc_c.methods())
    eps_sec: float = 1e-10
    eps_cor: float = 1e-15
    max_qber: float = 0.11                 # abort when the X-basis QBER exceeds it
    min_qber_estimate: float = 0.005       # floor of the QBER handed to reconciliation

    def __post_init__(self) -> None:
        self.decoy.check(self.protocol)
        if self.method not in pp.methods():
            raise ValueError(f"method: unknown reconciliation method {self.method!r}; "
                             f"known: {pp.methods()}")
        if not 0 < self.max_qber < 0.5:
            raise ValueError(f"max_qber: must lie in (0, 0.5), got {self.max_qber}")


@dataclass
class BlockResult:
    """How a block ended, on one side."""

    block_id: int
    ok: bool
    key: np.ndarray | None = None          # uint64 words, ``ell`` bits LSB first (secret)
    ell: int = 0
    reason: str = ""
    stats: dict = field(default_factory=dict)
    finite_key: FiniteKeyResult | None = None

    def wipe(self) -> None:
        if self.key is not None:
            self.key.fill(0)


class ProtocolError(RuntimeError):
    """The peer sent a message this side cannot accept now (type, order or content)."""


def _wipe(*arrays: np.ndarray | None) -> None:
    for a in arrays:
        if a is not None:
            a.fill(0)


def verification_collision_bound(n_bits: int) -> float:
    """Probability two different n-bit keys pass both 64-bit polynomial tags."""
    return ((math.ceil(n_bits / 64) + 1) / 2.0**64) ** 2


def _counts_by_intensity(mask_basis: np.ndarray, intensities: np.ndarray, n_int: int) -> tuple[int, ...]:
    return tuple(int(x) for x in np.bincount(intensities[mask_basis], minlength=3)[:n_int])


class _Side:
    role = ""

    def __init__(self, block_id: int, params: BlockParams) -> None:
        self.block_id = block_id
        self.params = params
        self._out: list[Message] = []
        self.result: BlockResult | None = None
        self.messages_in = 0
        self.messages_out = 0
        self._recon = None

    @property
    def done(self) -> bool:
        return self.result is not None

    def next_message(self) -> Message | None:
        if not self._out:
            return None
        self.messages_out += 1
        return self._out.pop(0)

    def _send(self, kind: str, meta: dict, arrays: dict | None = None) -> None:
        self._out.append((kind, payload.encode(meta, arrays)))

    def _drain_recon(self) -> None:
        while (m := self._recon.next_message()) is not None:
            self._out.append(("recon", bytes(m)))

    def _finish(self, ok: bool, reason: str = "", **kw) -> None:
        self.result = BlockResult(self.block_id, ok, reason=reason, **kw)
        self._wipe_secrets()

    def _wipe_secrets(self) -> None:  # overridden
        pass

    def feed(self, kind: str, data: bytes) -> None:
        if self.done:
            raise ProtocolError(f"{self.role}: block {self.block_id} already ended, got {kind!r}")
        handler = getattr(self, f"_on_{kind}", None)
        if handler is None or kind not in self._expect:
            raise ProtocolError(f"{self.role}: unexpected message {kind!r} "
                                f"(expecting {sorted(self._expect)})")
        try:
            meta, arrays = payload.decode(data) if kind != "recon" else ({}, {})
        except payload.PayloadError as exc:
            raise ProtocolError(f"{self.role}: bad {kind!r} payload: {exc}") from None
        self.messages_in += 1
        if kind == "recon":
            handler(data)
        else:
            handler(meta, arrays)


class AliceBlock(_Side):
    """Alice's half: she holds the frame patterns of the block's frames."""

    role = "alice"

    def __init__(self, block_id: int, frames: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]],
                 params: BlockParams, random_words: RandomWords) -> None:
        super().__init__(block_id, params)
        self.frames = {f: (b, v, i) for f, b, v, i in frames}
        self.random_words = random_words
        self._expect = {"ann"}
        self._key_bits: np.ndarray | None = None

    def _wipe_secrets(self) -> None:
        _wipe(self._key_bits)
        for _basis, bit, _intensity in self.frames.values():
            _wipe(bit)
        self.frames = {}

    def _on_ann(self, meta: dict, arrays: dict) -> None:
        fids = [int(f) for f in meta.get("frames", [])]
        sizes = [int(n) for n in meta.get("sizes", [])]
        if sorted(fids) != sorted(self.frames) or len(sizes) != len(fids):
            raise ProtocolError(f"alice: ann names frames {fids[:4]}..., "
                                f"block has {sorted(self.frames)[:4]}...")
        total = sum(sizes)
        slots = payload.require(arrays, "slots", np.uint64, total)
        bases = payload.require(arrays, "bases", np.uint8, total)
        matches, ints, bits_z, int_z, bits_x, int_x = [], [], [], [], [], []
        pos = 0
        for f, n in zip(fids, sizes):
            b, v, i = self.frames[f]
            try:
                res = pp.alice_sift(slots[pos:pos + n], bases[pos:pos + n], b, v, i)
            except ValueError as exc:
                raise ProtocolError(f"alice: frame {f}: {exc}") from None
            pos += n
            matches.append(res.match.astype(np.uint8))
            ints.append(res.intensities)
            z = res.bases == Z
            bits_z.append(res.bits[z])
            int_z.append(res.intensities[z])
            bits_x.append(res.bits[~z])
            int_x.append(res.intensities[~z])
            _wipe(res.bits)
        self._key_bits = np.concatenate(bits_z) if bits_z else np.empty(0, np.uint8)
        self._int_z = np.concatenate(int_z) if int_z else np.empty(0, np.uint8)
        self._x_bits = np.concatenate(bits_x) if bits_x else np.empty(0, np.uint8)
        self._int_x = np.concatenate(int_x) if int_x else np.empty(0, np.uint8)
        self._recon_seed = int(self.random_words(1)[0] & np.uint64((1 << 63) - 1))
        self._send("match", {"seed": self._recon_seed},
                   {"match": np.concatenate(matches) if matches else np.empty(0, np.uint8),
                    "intensities": np.concatenate(ints) if ints else np.empty(0, np.uint8)})
        self._expect = {"xbits"}

    def _on_xbits(self, meta: dict, arrays: dict) -> None:
        bx = payload.require(arrays, "bits", np.uint8, self._x_bits.size)
        n_int = len(self.params.decoy.mus)
        err = self._x_bits != bx
        self._x_err = tuple(int(x) for x in np.bincount(self._int_x[err], minlength=3)[:n_int])
        self._x_cnt = tuple(int(x) for x in np.bincount(self._int_x, minlength=3)[:n_int])
        self._z_cnt = tuple(int(x) for x in np.bincount(self._int_z, minlength=3)[:n_int])
        _wipe(self._x_bits)
        n_x = int(self._x_bits.size)
        qber_x = sum(self._x_err) / n_x if n_x else 0.5
        self._qber_x = qber_x
        self._stats = {"n_key": int(self._key_bits.size), "n_test": n_x, "qber_x": qber_x,
                       "key_counts": self._z_cnt, "test_counts": self._x_cnt, "test_errors": self._x_err}
        if n_x == 0 or self._key_bits.size == 0:
            return self._abort("no sifted bits in one basis")
        if qber_x > self.params.max_qber:
            return self._abort(f"QBER {qber_x:.4f} in the X basis exceeds {self.params.max_qber}")
        est = max(qber_x, self.params.min_qber_estimate)
        self._send("recon_start", {"qber": est})
        self._recon = pp.make_side(self.params.method, "alice", self._key_bits, est, seed=self._recon_seed)
        self._drain_recon()
        self._expect = {"recon", "recon_done"}

    def _abort(self, reason: str) -> None:
        self._send("abort", {"reason": reason})
        self._finish(False, reason, stats=getattr(self, "_stats", {}))

    def _on_recon(self, data: bytes) -> None:
        try:
            self._recon.feed(data)
        except (ValueError, pp.Error) as exc:
            return self._abort(f"reconciliation message refused: {exc}")
        self._drain_recon()

    def _on_recon_done(self, meta: dict, arrays: dict) -> None:
        self._drain_recon()
        if not self._recon.done:
            return self._abort("Bob finished reconciliation before Alice")
        rr = self._recon.result()
        n = int(self._key_bits.size)
        self._stats.update(leaked_ec=int(rr.leaked_bits), recon_messages=int(rr.messages))
        if not meta.get("success", False):
            return self._abort("reconciliation failed")
        z_err = [int(x) for x in meta.get("z_errors", [])]
        if len(z_err) != len(self.params.decoy.mus) or any(x < 0 for x in z_err):
            raise ProtocolError("alice: recon_done needs one error count per intensity")
        self._z_err = tuple(z_err)
        qz = sum(z_err) / n
        self._stats.update(qber_z=qz, f=(rr.leaked_bits / (n * binary_entropy(qz)) if 0 < qz < 0.5
                                         else float("nan")))
        if verification_collision_bound(n) > self.params.eps_cor:
            return self._abort(f"block of {n} bits too long for eps_cor {self.params.eps_cor} "
                               "with two 64-bit tags")
        keys = self.random_words(2)
        words = pp.pack_bits(self._key_bits)
        tags = [pp.poly_hash(words, n, int(k)) for k in keys]
        _wipe(words)
        self._send("verify", {"keys": [str(int(k)) for k in keys], "tags": [str(t) for t in tags]})
        self._expect = {"verified"}

    def _on_verified(self, meta: dict, arrays: dict) -> None:
        if not meta.get("ok", False):
            return self._abort("verification failed: keys differ after reconciliation")
        p = self.params
        leak = self._stats["leaked_ec"] + 128
        fk = secret_key_length(
            BasisCounts(self._z_cnt, self._z_err), BasisCounts(self._x_cnt, self._x_err), p.decoy,
            leak_ec_bits=leak, eps_sec=p.eps_sec, eps_cor=p.eps_cor, protocol=p.protocol)
        self._stats["leaked"] = leak
        if fk.ell <= 0:
            self._send("abort", {"reason": fk.reason or "finite-key length <= 0"})
            return self._finish(False, fk.reason or "finite-key length <= 0", stats=self._stats,
                                finite_key=fk)
        n = int(self._key_bits.size)
        seed = self.random_words((n + fk.ell - 1 + 63) // 64)
        self._send("pa", {"ell": fk.ell, "leak": leak, "test_errors": list(self._x_err)}, {"seed": seed})
        words = pp.pack_bits(self._key_bits)
        key = pp.toeplitz_hash(words, n, seed, fk.ell)
        _wipe(words)
        self._finish(True, key=key, ell=fk.ell, stats=self._stats, finite_key=fk)


class BobBlock(_Side):
    """Bob's half: he holds the block's detections."""

    role = "bob"

    def __init__(self, block_id: int, frames: list[FrameDetections], params: BlockParams,
                 random_words: RandomWords) -> None:
        super().__init__(block_id, params)
        self.random_words = random_words
        self._anns = []
        slots, bases, sizes = [], [], []
        for fd in frames:
            n_double = int(np.count_nonzero(fd.masks & (fd.masks - 1)))
            rng = random_words(max(1, (n_double + 63) // 64))
            ann = pp.bob_announce(fd.slots, fd.masks, params.frame_slots, rng=rng)
            self._anns.append(ann)
            slots.append(ann.slots)
            bases.append(ann.bases)
            sizes.append(int(ann.slots.size))
        self._send("ann", {"frames": [fd.frame_index for fd in frames], "sizes": sizes},
                   {"slots": np.concatenate(slots) if slots else np.empty(0, np.uint64),
                    "bases": np.concatenate(bases) if bases else np.empty(0, np.uint8)})
        self._expect = {"match"}
        self._key_bits: np.ndarray | None = None
        self._corrected: np.ndarray | None = None

    def _wipe_secrets(self) -> None:
        _wipe(self._key_bits, self._corrected)
        for a in self._anns:
            _wipe(a.bits)

    def _on_match(self, meta: dict, arrays: dict) -> None:
        total = sum(int(a.slots.size) for a in self._anns)
        match = payload.require(arrays, "match", np.uint8, total)
        n_match = int(np.count_nonzero(match))
        ints = payload.require(arrays, "intensities", np.uint8, n_match)
        bits_z, int_z, bits_x, int_x = [], [], [], []
        pos = ipos = 0
        for a in self._anns:
            n = int(a.slots.size)
            m = match[pos:pos + n]
            k = int(np.count_nonzero(m))
            try:
                s = pp.bob_sift(a, m, ints[ipos:ipos + k])
            except ValueError as exc:
                raise ProtocolError(f"bob: match: {exc}") from None
            pos += n
            ipos += k
            z = s.bases == Z
            bits_z.append(s.bits[z])
            int_z.append(s.intensities[z])
            bits_x.append(s.bits[~z])
            int_x.append(s.intensities[~z])
            _wipe(s.bits)
        self._key_bits = np.concatenate(bits_z) if bits_z else np.empty(0, np.uint8)
        self._int_z = np.concatenate(int_z) if int_z else np.empty(0, np.uint8)
        int_xa = np.concatenate(int_x) if int_x else np.empty(0, np.uint8)
        n_int = len(self.params.decoy.mus)
        self._z_cnt = tuple(int(x) for x in np.bincount(self._int_z, minlength=3)[:n_int])
        self._x_cnt = tuple(int(x) for x in np.bincount(int_xa, minlength=3)[:n_int])
        self._seed = int(meta.get("seed", 0))
        self._send("xbits", {}, {"bits": np.concatenate(bits_x) if bits_x else np.empty(0, np.uint8)})
        self._stats = {"n_key": int(self._key_bits.size), "n_test": int(int_xa.size)}
        self._expect = {"recon_start", "abort"}

    def _on_recon_start(self, meta: dict, arrays: dict) -> None:
        q = float(meta.get("qber", -1))
        if not 0 <= q < 0.5:
            raise ProtocolError(f"bob: recon_start qber {q} out of range")
        self._recon = pp.make_side(self.params.method, "bob", self._key_bits, q, seed=self._seed)
        self._drain_recon()
        self._check_recon_done()
        self._expect = {"recon", "abort"} if not self._recon.done else {"verify", "abort"}

    def _on_recon(self, data: bytes) -> None:
        try:
            self._recon.feed(data)
        except (ValueError, pp.Error) as exc:
            return self._finish(False, f"reconciliation message refused: {exc}")
        self._drain_recon()
        self._check_recon_done()

    def _check_recon_done(self) -> None:
        if not self._recon.done:
            return
        rr = self._recon.result()
        self._corrected = np.ascontiguousarray(rr.corrected, dtype=np.uint8)
        err = self._corrected != self._key_bits
        n_int = len(self.params.decoy.mus)
        self._z_err = tuple(int(x) for x in np.bincount(self._int_z[err], minlength=3)[:n_int])
        self._send("recon_done", {"success": bool(rr.success), "z_errors": list(self._z_err)})
        self._stats.update(leaked_ec_bob=int(rr.leaked_bits), qber_z=sum(self._z_err) / max(1, err.size))
        self._expect = {"verify", "abort"}

    def _on_verify(self, meta: dict, arrays: dict) -> None:
        try:
            keys = [int(k) for k in meta["keys"]]
            tags = [int(t) for t in meta["tags"]]
        except (KeyError, ValueError, TypeError):
            raise ProtocolError("bob: verify needs 'keys' and 'tags'") from None
        if len(keys) != 2 or len(tags) != 2:
            raise ProtocolError("bob: verify needs two keys and two tags")
        n = int(self._corrected.size)
        words = pp.pack_bits(self._corrected)
        ok = all(pp.poly_hash(words, n, k) == t for k, t in zip(keys, tags))
        _wipe(words)
        self._send("verified", {"ok": ok})
        if not ok:
            return self._finish(False, "verification failed: keys differ after reconciliation",
                                stats=self._stats)
        self._expect = {"pa", "abort"}

    def _on_pa(self, meta: dict, arrays: dict) -> None:
        p = self.params
        try:
            ell, leak = int(meta["ell"]), int(meta["leak"])
            x_err = tuple(int(x) for x in meta["test_errors"])
        except (KeyError, ValueError, TypeError):
            raise ProtocolError("bob: pa needs 'ell', 'leak' and 'test_errors'") from None
        n = int(self._corrected.size)
        seed = payload.require(arrays, "seed", np.uint64, (n + ell - 1 + 63) // 64)
        fk = secret_key_length(BasisCounts(self._z_cnt, self._z_err), BasisCounts(self._x_cnt, x_err),
                               p.decoy, leak_ec_bits=leak, eps_sec=p.eps_sec, eps_cor=p.eps_cor,
                               protocol=p.protocol)
        if fk.ell != ell:
            return self._finish(False, f"secret length mismatch: Alice {ell}, Bob {fk.ell}",
                                stats=self._stats, finite_key=fk)
        words = pp.pack_bits(self._corrected)
        key = pp.toeplitz_hash(words, n, seed, ell)
        _wipe(words)
        self._stats.update(leaked=leak, test_errors=x_err)
        self._finish(True, key=key, ell=ell, stats=self._stats, finite_key=fk)

    def _on_abort(self, meta: dict, arrays: dict) -> None:
        self._finish(False, str(meta.get("reason", "aborted by Alice"))[:200],
                     stats=getattr(self, "_stats", {}))


def run_block_in_memory(alice: AliceBlock, bob: BobBlock, max_messages: int = 100_000) -> int:
    """Carry messages between the halves until both end; returns the number of messages."""
    sent = 0
    while not (alice.done and bob.done):
        moved = False
        for side, peer in ((bob, alice), (alice, bob)):
            while (m := side.next_message()) is not None:
                if not peer.done:
                    peer.feed(*m)
                sent += 1
                moved = True
                if sent > max_messages:
                    raise RuntimeError("block protocol exceeded its message budget")
        if not moved:
            raise RuntimeError(f"block protocol stalled: alice done={alice.done}, bob done={bob.done}")
    return sent

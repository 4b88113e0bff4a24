"""Cascade (postproc_c.cascade): C state machine against a pure-Python reference.

The reference below re-implements the protocol from its description (shuffles
from xoshiro256**, block schedules from the papers, BINARY bisection, cascade
effect with block reuse, parity inference) in plain Python on small frames; the
C result must match it message for message. Leakage is recounted from the
messages themselves; messages are fuzzed; bad inputs must name the argument.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

import postproc_c as pc
from postproc_c import cascade as cc
from postproc_c.reconcile import make_side

M64 = (1 << 64) - 1
P61 = (1 << 61) - 1
GOLDEN = 0x9E3779B97F4A7C15


# ---------------------------------------------------------------- reference

def _splitmix(x: int) -> tuple[int, int]:
    x = (x + GOLDEN) & M64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return x, z ^ (z >> 31)


def _rotl(x: int, k: int) -> int:
    return ((x << k) | (x >> (64 - k))) & M64


def ref_positions(seed: int, j: int, n: int) -> list[int]:
    x = seed ^ ((GOLDEN * (j + 1)) & M64)
    s = []
    for _ in range(4):
        x, z = _splitmix(x)
        s.append(z)
    pos = list(range(n))
    r, half = 0, False
    for i in range(n, 1, -1):
        if not half:
            r = (_rotl((s[1] * 5) & M64, 7) * 9) & M64
            t = (s[1] << 17) & M64
            s[2] ^= s[0]
            s[3] ^= s[1]
            s[1] ^= s[2]
            s[0] ^= s[3]
            s[2] ^= t
            s[3] = _rotl(s[3], 45)
            d, half = r >> 32, True
        else:
            d, half = r & 0xFFFFFFFF, False
        jj = (d * i) >> 32
        pos[i - 1], pos[jj] = pos[jj], pos[i - 1]
    return pos


def ref_hash(bits: np.ndarray, r: int) -> int:
    n = bits.size
    h = 0
    for t in range(0, n, 32):
        chunk = bits[t:t + 32]
        c = int(sum(int(b) << k for k, b in enumerate(chunk)))
        h = ((h + c) * r) % P61
    return ((h + (n & 0xFFFFFFFF)) * r) % P61


def ref_block_sizes(method: str, n: int, p: float) -> list[int]:
    p = max(p, 1e-5)
    k1 = 2.0 ** math.floor(math.log2(1 / p))
    if method == "cascade":
        # Demystifying (Martinez-Mateo et al. 2015), opt. (8), with k1 = 2^round(alpha)
        # and k2 halved for frames below 2^16 bits (measured changes, see cascade.c).
        alpha = math.log2(1 / p) - 0.5
        e2 = math.ceil((alpha + 12) / 2) - (1 if n < 2**16 else 0)
        ks = [k1, 2.0 ** e2, 4096] + [math.ceil(n / 2)] * 11
    elif method == "cascade-waves":
        # k2 = max(4 k1, 64), k3 = n/4, then n/2: measured (bench/cascade_tune.py, see cascade.c)
        k2 = max(4 * k1, 64)
        ks = [k1, k2, max(math.ceil(n / 4), k2)] + [math.ceil(n / 2)] * 13
    else:
        # Brassard-Salvail 1993: k1 = 0.73/p, doubling, 4 passes.
        k1 = math.ceil(0.73 / p)
        ks = [k1, 2 * k1, 4 * k1, 8 * k1]
    return [int(min(max(k, 1), n)) for k in ks]


class RefCascade:
    """Both sides of Cascade in plain Python; records every request and reply."""

    def __init__(self, alice: np.ndarray, bob: np.ndarray, qber: float, method: str, seed: int,
                 wave: int | None = None, infer: bool = True):
        self.n = n = alice.size
        # optimized variant: odd top-level blocks of passes >= 2 are bisected `wave` at a
        # time, the next ones once those and their cascades have ended ("cascade-waves":
        # n h(p) / 1024; "cascade": all at once)
        pp = min(max(qber, 1e-5), 0.5)
        hp = -pp * math.log2(pp) - (1 - pp) * math.log2(1 - pp)
        auto = max(1, math.floor(n * hp / 1024)) if method == "cascade-waves" else 2**32 - 1
        self.wave = wave if wave is not None else auto
        self.wait: list = []
        # optimized variant: Alice's bits fixed by disclosed parities (single-bit nodes);
        # a child made only of such bits (at most 8) is inferred, not asked
        self.aval: dict[int, int] = {}
        self.infer = infer
        self.inferred = 0
        self.opt = method in ("cascade", "cascade-waves")
        self.ks = ref_block_sizes(method, n, qber)
        self.alice = alice.astype(np.uint8)
        self.bob = bob.astype(np.uint8).copy()
        self.pos = [np.arange(n)] + [np.array(ref_positions(seed, j, n)) for j in range(1, len(self.ks))]
        self.inv = [np.argsort(p) for p in self.pos]
        self.known: list[set] = [set() for _ in self.ks]
        self.err: list[dict] = [dict() for _ in self.ks]
        self.pend: list[set] = [set() for _ in self.ks]
        self.started = [False] * len(self.ks)
        self.requests: list[list[tuple]] = []
        self.reply_bits: list[int] = []
        self.total = 0
        self.cur = 0

    # pass-order helpers
    def nblocks(self, j):
        return -(-self.n // self.ks[j])

    def root(self, j, b):
        s = b * self.ks[j]
        return (j, b, 1, s, min(self.ks[j], self.n - s))

    @staticmethod
    def child(x, right):
        j, b, h, s, ln = x
        half = (ln + 1) // 2
        return (j, b, 2 * h, s, half) if not right else (j, b, 2 * h + 1, s + half, ln - half)

    def alice_par(self, j, s, ln):
        idx = self.inv[j][s:s + ln]
        return int(self.alice[idx].sum() & 1)

    def bob_par(self, x):
        j, _, _, s, ln = x
        return int(self.bob[self.inv[j][s:s + ln]].sum() & 1)

    def top_bits(self, j):
        return self.nblocks(j) - 1 if (self.opt and j > 0) else self.nblocks(j)

    def flip(self, i, act):
        self.bob[i] ^= 1
        for j in range(len(self.ks)):
            if not self.started[j]:
                continue
            q = int(self.pos[j][i])
            x = self.root(j, q // self.ks[j])
            best = None
            while (x[1], x[2]) in self.known[j]:
                key = (x[1], x[2])
                self.err[j][key] ^= 1
                if self.err[j][key]:
                    best = x
                if x[4] == 1:
                    break
                left = self.child(x, 0)
                x = left if q < left[3] + left[4] else self.child(x, 1)
            if not self.opt:
                r = self.root(j, q // self.ks[j])
                best = r if self.err[j][(r[1], 1)] else None
            if best is not None and j <= self.cur:   # later passes bisect when current
                act.append(best)

    def run(self):
        """Optimized variant: the opening request asks the top level of every pass; a
        pass's odd blocks are bisected once the previous pass has ended. Original: one
        pass's top level at a time."""
        act: list = []
        req: list = []
        self.cur = 0
        request = [(j, 1, 0, 0) for j in range(len(self.ks) if self.opt else 1)]
        while True:
            self.requests.append(request)
            # Alice answers.
            bits = []
            for (j, kind, s, ln) in request:
                if kind == 1:
                    for b in range(self.top_bits(j)):
                        r = self.root(j, b)
                        bits.append(self.alice_par(j, r[3], r[4]))
                else:
                    bits.append(self.alice_par(j, s, ln))
            self.reply_bits.append(len(bits))
            # Bob consumes.
            if request[0][1] == 1:
                off = 0
                for (j, _, _, _) in request:
                    self.started[j] = True
                    par = 0
                    sent = self.top_bits(j)
                    for b in range(self.nblocks(j)):
                        a = bits[off + b] if b < sent else self.total ^ par
                        par ^= a
                        x = self.root(j, b)
                        e = a ^ self.bob_par(x)
                        self.known[j].add((b, 1))
                        self.err[j][(b, 1)] = e
                        if e and j == self.cur:
                            act.append(x)
                    if j == 0:
                        self.total = par
                    off += sent
            else:
                for t, x in enumerate(req):
                    j = x[0]
                    lft, rgt = self.child(x, 0), self.child(x, 1)
                    self.pend[j].discard((lft[1], lft[2]))
                    if (x[1], x[2]) not in self.known[j]:
                        continue
                    e = bits[t] ^ self.bob_par(lft)
                    self.known[j].add((lft[1], lft[2]))
                    self.err[j][(lft[1], lft[2])] = e
                    self.known[j].add((rgt[1], rgt[2]))
                    ex = self.err[j][(x[1], x[2])]
                    self.err[j][(rgt[1], rgt[2])] = e ^ ex
                    self._reveal(lft, e)
                    self._reveal(rgt, e ^ ex)
                    if self.opt and not ex and e:  # x went even in flight: both halves odd
                        act.extend([lft, rgt])
                req = []
            # advance (a pass ended and the next one's top level is known: go on at once)
            while True:
                act = self._advance(act, req)
                if req:
                    break
                if self.wait:  # release the next wave of still-odd waiting blocks
                    while self.wait and len(act) < self.wave:
                        x = self.wait.pop(0)
                        if self.err[x[0]].get((x[1], x[2])):
                            act.append(x)
                    continue
                if self.cur + 1 >= len(self.ks) or not self.opt:
                    break
                self.cur += 1
                j = self.cur
                self.wait = [self.root(j, b) for b in range(self.nblocks(j)) if self.err[j][(b, 1)]]
            if req:
                request = [(x[0], 0, self.child(x, 0)[3], self.child(x, 0)[4]) for x in req]
            elif self.cur + 1 < len(self.ks):
                self.cur += 1
                request = [(self.cur, 1, 0, 0)]
            else:
                return self.bob

    def _reveal(self, x, e):
        if self.opt and x[4] == 1:
            i = int(self.inv[x[0]][x[3]])
            self.aval[i] = int(self.bob[i]) ^ e

    def _known_err(self, x):
        if x[4] > 8:
            return None
        idx = [int(i) for i in self.inv[x[0]][x[3]:x[3] + x[4]]]
        if any(i not in self.aval for i in idx):
            return None
        return sum(self.aval[i] ^ int(self.bob[i]) for i in idx) & 1

    def _advance(self, act, req):
        """Run the active bisections as far as known parities go; fills req, returns act."""
        kept = []
        a = 0
        while a < len(act):
            x = act[a]
            a += 1
            j = x[0]
            if (x[1], x[2]) not in self.known[j] or not self.err[j][(x[1], x[2])]:
                continue
            keep = False
            while True:
                if x[4] == 1:
                    self.flip(int(self.inv[j][x[3]]), act)
                    if not self.opt:
                        blk = x[1]
                        self.known[j] = {k for k in self.known[j] if k[0] != blk or k[1] == 1}
                        self.err[j] = {k: v for k, v in self.err[j].items() if k[0] != blk or k[1] == 1}
                    break
                lft = self.child(x, 0)
                if (lft[1], lft[2]) in self.known[j]:
                    x = lft if self.err[j][(lft[1], lft[2])] else self.child(x, 1)
                    continue
                if (lft[1], lft[2]) in self.pend[j]:
                    break  # another entry waits at this node
                if self.opt and self.infer:
                    rgt = self.child(x, 1)
                    ex = self.err[j][(x[1], x[2])]
                    e = self._known_err(lft)
                    if e is None and (e := self._known_err(rgt)) is not None:
                        e ^= ex
                    if e is not None:  # inferred from Alice's known bits: not asked
                        # the inference is right (checked against Alice's key, which Bob never sees)
                        assert self.alice_par(j, lft[3], lft[4]) == self.bob_par(lft) ^ e
                        self.inferred += 1
                        for node, v in ((lft, e), (rgt, e ^ ex)):
                            self.known[j].add((node[1], node[2]))
                            self.err[j][(node[1], node[2])] = v
                            self._reveal(node, v)
                        continue
                self.pend[j].add((lft[1], lft[2]))
                req.append(x)
                keep = True
                break
            if keep:
                kept.append(x)
        return kept


# ---------------------------------------------------------------- helpers

def parse(msg: bytes) -> dict:
    magic, ver, typ, var, res, seq, count = struct.unpack_from("<IBBBBII", msg)
    out = {"magic": magic, "version": ver, "type": typ, "variant": var, "seq": seq, "count": count}
    if typ == pc.lib.QPP_CASCADE_MSG_REQUEST:
        items = [struct.unpack_from("<BBHII", msg, 16 + 12 * t) for t in range(count)]
        out["items"] = [(j, kind, s, ln) for j, kind, _, s, ln in items]
        out["frames"] = [fr for _, _, fr, _, _ in items]
    return out


def pipe(alice, bob, log=None):
    """Carry messages until both are done; return the list of (sender, bytes)."""
    log = [] if log is None else log
    for _ in range(100_000):
        if alice.done and bob.done:
            return log
        moved = False
        for side, peer in ((bob, alice), (alice, bob)):
            while (m := side.next_message()) is not None:
                log.append((side.role, m))
                peer.feed(m)
                moved = True
        assert moved, "protocol deadlocked"
    raise AssertionError("protocol did not finish")


def keys(n: int, qber: float, seed: int, exact: bool = False):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, n, dtype=np.uint8)
    if exact:
        e = np.zeros(n, dtype=np.uint8)
        e[rng.choice(n, int(round(qber * n)), replace=False)] = 1
    else:
        e = (rng.random(n) < qber).astype(np.uint8)
    return a, a ^ e


# ---------------------------------------------------------------- tests

def test_permutation_matches_reference():
    for seed, j, n in ((0, 1, 1), (7, 1, 100), (2**63 + 5, 13, 1000)):
        assert cc.cascade_permutation(seed, j, n).tolist() == ref_positions(seed, j, n)


def test_hash_matches_reference_and_separates():
    rng = np.random.default_rng(3)
    for n in (1, 31, 32, 33, 64, 1000):
        bits = rng.integers(0, 2, n, dtype=np.uint8)
        r = int(rng.integers(1, P61))
        assert cc.cascade_hash(bits, r) == ref_hash(bits, r)
        other = bits.copy()
        other[n // 2] ^= 1
        assert cc.cascade_hash(other, r) != cc.cascade_hash(bits, r)


@pytest.mark.parametrize("method", ["cascade", "cascade-waves", "cascade-original"])
@pytest.mark.parametrize("n,q", [(2**14, 0.005), (2**14, 0.02), (2**14, 0.08), (10_000, 0.11), (1000, 0.03)])
def test_block_sizes_follow_the_papers(method, n, q):
    assert cc.block_sizes(method, n, q) == ref_block_sizes(method, n, q)


def test_schedule_at_2_14_and_2_16():
    # opt. (8) at p = 2 %: alpha = log2(50) - 0.5 = 5.14, k2 = 2^ceil(8.57) = 512 at 2^16
    # (256 below 2^16 bits); k1 = 2^round(5.14) = 32 (opt. (8) literally: 2^ceil = 64).
    assert cc.block_sizes("cascade", 2**14, 0.02) == [32, 256, 4096] + [8192] * 11
    assert cc.block_sizes("cascade", 2**16, 0.02) == [32, 512, 4096] + [32768] * 11
    assert cc.block_sizes("cascade", 2**16, 0.08)[:2] == [8, 256]
    # waves: k1 as above, k2 = max(4 k1, 64), k3 = n/4, then thirteen passes of n/2
    # (bench/cascade_tune.py grid, see cascade.c)
    assert cc.block_sizes("cascade-waves", 2**14, 0.02) == [32, 128, 4096] + [8192] * 13
    assert cc.block_sizes("cascade-waves", 2**16, 0.02) == [32, 128, 16384] + [32768] * 13
    assert cc.block_sizes("cascade-waves", 2**16, 0.08)[:3] == [8, 64, 16384]
    assert cc.block_sizes("cascade-waves", 2**16, 0.01)[:2] == [64, 256]


@pytest.mark.parametrize("method", ["cascade", "cascade-waves", "cascade-original"])
@pytest.mark.parametrize("n,q,seed", [(600, 0.02, 1), (1000, 0.05, 2), (2000, 0.1, 3), (777, 0.11, 4),
                                      (1500, 0.01, 5)])
def test_c_matches_python_reference(method, n, q, seed):
    a, b = keys(n, q, seed)
    ref = RefCascade(a, b, q, method, seed=seed + 10)
    ref_key = ref.run()
    alice = make_side(method, "alice", a, q, seed=seed + 10)
    bob = make_side(method, "bob", b, q, seed=seed + 10)
    log = pipe(alice, bob)
    reqs = [parse(m)["items"] for who, m in log if who == "bob" and parse(m)["type"] == 1]
    replies = [parse(m)["count"] for who, m in log if who == "alice" and parse(m)["type"] == 2]
    assert reqs == ref.requests
    assert replies == ref.reply_bits
    res = bob.result()
    np.testing.assert_array_equal(res.corrected, ref_key)
    assert res.details["parity_bits"] == sum(ref.reply_bits)


@pytest.mark.parametrize("n,q,seed,wave", [(3000, 0.05, 31, 3), (4000, 0.08, 32, 2), (2500, 0.02, 33, 50)])
def test_waves_match_reference(n, q, seed, wave):
    # Bob releases `wave` odd blocks of a pass >= 2 at a time; the reference does the same.
    a, b = keys(n, q, seed)
    ref = RefCascade(a, b, q, "cascade-waves", seed=seed, wave=wave)
    ref_key = ref.run()
    alice = make_side("cascade-waves", "alice", a, q, seed=seed)
    bob = make_side("cascade-waves", "bob", b, q, seed=seed, wave=wave)
    log = pipe(alice, bob)
    reqs = [parse(m)["items"] for who, m in log if who == "bob" and parse(m)["type"] == 1]
    assert reqs == ref.requests
    res = bob.result()
    np.testing.assert_array_equal(res.corrected, ref_key)
    assert res.details["parity_bits"] == sum(ref.reply_bits)
    with pytest.raises(ValueError, match="wave"):
        make_side("cascade-waves", "bob", b, q, seed=seed, wave=0)


@pytest.mark.parametrize("method", ["cascade", "cascade-waves"])
def test_known_bits_spare_requests_and_are_right(method):
    # Parities of nodes made of bits whose Alice values earlier parities fixed are inferred
    # (the reference asserts each against Alice's key); without that, more bits are asked
    # on average (one run may differ either way: inference shifts when cascades start).
    asked = {True: 0, False: 0}
    for seed in range(4):
        a, b = keys(4000, 0.08, 41 + seed, exact=True)
        for infer in (True, False):
            ref = RefCascade(a, b, 0.08, method, seed=seed, infer=infer)
            np.testing.assert_array_equal(ref.run(), a)
            asked[infer] += sum(ref.reply_bits)
            if infer:
                assert ref.inferred > 5
                res = pc.reconcile_in_memory(a, b, 0.08, method=method, seed=seed)
                assert res.success and res.details["parity_bits"] == sum(ref.reply_bits)
    assert asked[True] < asked[False]


@pytest.mark.parametrize("method", ["cascade", "cascade-waves", "cascade-original"])
@pytest.mark.parametrize("q", [0.005, 0.01, 0.02, 0.05, 0.08, 0.11])
def test_corrects_random_keys_over_qber_range(method, q):
    failures = 0
    for seed in range(3):
        a, b = keys(2**13, q, 100 + seed, exact=True)
        res = pc.reconcile_in_memory(a, b, q, method=method, seed=seed)
        # never a silent mismatch: success is exactly "keys agree"
        assert res.success == bool(np.array_equal(res.corrected, a))
        failures += not res.success
        assert res.messages >= 3
    assert failures <= (1 if method == "cascade-original" else 0)


def test_opt_is_more_efficient_than_original():
    fs = {}
    for method in ("cascade", "cascade-original"):
        leaked, n_h = 0, 0.0
        for seed in range(4):
            a, b = keys(2**14, 0.03, seed, exact=True)
            res = pc.reconcile_in_memory(a, b, 0.03, method=method, seed=seed)
            assert res.success
            leaked += res.details["parity_bits"]
            n_h += a.size * (-0.03 * math.log2(0.03) - 0.97 * math.log2(0.97))
        fs[method] = leaked / n_h
    assert fs["cascade"] < 1.10 < fs["cascade-original"]


@pytest.mark.parametrize("method", ["cascade", "cascade-waves", "cascade-original"])
def test_leakage_recounted_from_messages(method):
    a, b = keys(5000, 0.04, 9)
    alice = make_side(method, "alice", a, 0.04, seed=1)
    bob = make_side(method, "bob", b, 0.04, seed=1)
    log = pipe(alice, bob)
    count = 0
    for who, m in log:
        h = parse(m)
        if who == "alice" and h["type"] == pc.lib.QPP_CASCADE_MSG_REPLY:
            assert len(m) == 16 + (h["count"] + 7) // 8
            count += h["count"]
        elif who == "alice":
            assert h["type"] == pc.lib.QPP_CASCADE_MSG_VERIFY and len(m) == 32
            count += 64
        else:
            assert h["type"] in (pc.lib.QPP_CASCADE_MSG_REQUEST, pc.lib.QPP_CASCADE_MSG_FINISH)
    ra, rb = alice.result(), bob.result()
    assert ra.leaked_bits == rb.leaked_bits == count
    assert rb.details["verify_bits"] == 64
    assert ra.messages == rb.messages == len(log)
    np.testing.assert_array_equal(ra.corrected, a)
    assert rb.success and np.array_equal(rb.corrected, a)


def test_failure_is_reported_not_silent():
    method = "cascade-original"
    # 64 bits at an estimated 1 %: every block of every pass is the whole key, so two
    # errors never show in a parity; only the final hash can catch them.
    a, _ = keys(64, 0.0, 5)
    b = a.copy()
    b[[3, 40]] ^= 1
    assert all(k == 64 for k in cc.block_sizes(method, 64, 0.01))
    res = pc.reconcile_in_memory(a, b, 0.01, method=method, seed=1)
    assert not res.success
    assert not np.array_equal(res.corrected, a)


def test_forged_verify_hash_gives_failure():
    a, b = keys(3000, 0.02, 6)
    alice = make_side("cascade", "alice", a, 0.02, seed=3)
    bob = make_side("cascade", "bob", b, 0.02, seed=3)
    while True:
        m = bob.next_message()
        if parse(m)["type"] == pc.lib.QPP_CASCADE_MSG_FINISH:
            alice.feed(m)
            v = bytearray(alice.next_message())
            h = struct.unpack_from("<Q", v, 24)[0]
            struct.pack_into("<Q", v, 24, (h + 1) % P61)
            bob.feed(bytes(v))
            break
        alice.feed(m)
        bob.feed(alice.next_message())
    res = bob.result()
    assert bob.done and not res.success
    np.testing.assert_array_equal(res.corrected, a)  # the key is right, but the hash said no


def _mutations(msg: bytes, rng: np.random.Generator):
    yield b""[:0] + msg[:0] + b"\x00"
    for cut in (1, 8, 15, 16, len(msg) - 1):
        if 0 < cut < len(msg):
            yield msg[:cut]
    yield msg + b"\x00"
    for _ in range(12):
        m = bytearray(msg)
        pos = int(rng.integers(0, len(m)))
        m[pos] ^= 1 << int(rng.integers(0, 8))
        yield bytes(m)
    for _ in range(12):
        yield rng.bytes(int(rng.integers(1, 64)))


def _sides(method, a, b, q, seed):
    return (make_side(method, "alice", a, q, seed=seed, verify_key=77),
            make_side(method, "bob", b, q, seed=seed, verify_key=0))


def _replay(method, a, b, q, log, k):
    """Fresh sides, the first k messages of ``log`` delivered; returns (alice, bob, receiver)."""
    alice, bob = _sides(method, a, b, q, 4)
    for idx, (who, m) in enumerate(log[:k + 1]):
        sender, receiver = (bob, alice) if who == "bob" else (alice, bob)
        assert sender.next_message() == m
        if idx < k:
            receiver.feed(m)
    return alice, bob, receiver


@pytest.mark.parametrize("method", ["cascade", "cascade-waves", "cascade-original"])
def test_fuzzed_messages_are_refused_and_change_nothing(method):
    rng = np.random.default_rng(11)
    q = 0.05
    a, b = keys(3000, q, 12)
    alice, bob = _sides(method, a, b, q, 4)
    log = pipe(alice, bob)
    refused = accepted = 0
    for k in sorted(set(rng.integers(0, len(log), 14).tolist()) | {0, len(log) - 1}):
        m = log[k][1]
        alice, bob, receiver = _replay(method, a, b, q, log, k)
        for bad in _mutations(m, rng):
            if bad == m:
                continue
            try:
                receiver.feed(bad)
            except (pc.Error, ValueError):
                refused += 1
                continue
            # Well-formed mutants (a flipped parity bit, another valid range) cannot be told
            # from real messages; the run must then end in an error or an honest result.
            accepted += 1
            try:
                pipe(alice, bob)
                res = bob.result()
                # never a silent mismatch (a forged hash may fail a correct key: reported, not silent)
                assert not res.success or np.array_equal(res.corrected, a)
            except pc.Error:
                pass
            alice, bob, receiver = _replay(method, a, b, q, log, k)
        # After every refusal the state is unchanged: the genuine message completes the run.
        receiver.feed(m)
        pipe(alice, bob)
        res = bob.result()
        assert res.success and np.array_equal(res.corrected, a)
    assert refused > 100
    assert accepted < refused


def test_refused_message_keeps_state_exactly():
    a, b = keys(2000, 0.05, 13)
    runs = []
    for inject in (False, True):
        alice, bob = _sides("cascade", a, b, 0.05, 8)
        log = []
        while not (alice.done and bob.done):
            for side, peer in ((bob, alice), (alice, bob)):
                m = side.next_message()
                if m is None:
                    continue
                if inject:
                    for bad in (m[:-1], m + b"\x01", m[:8] + struct.pack("<I", 999) + m[12:]):
                        with pytest.raises(pc.Error, match="malformed"):
                            peer.feed(bad)
                log.append(m)
                peer.feed(m)
        runs.append((log, bob.result()))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1].corrected, runs[1][1].corrected)


def test_out_of_order_and_wrong_peer_refused():
    a, b = keys(2000, 0.03, 14)
    alice = make_side("cascade", "alice", a, 0.03, seed=1)
    bob = make_side("cascade", "bob", b, 0.03, seed=1)
    first = bob.next_message()
    with pytest.raises(pc.Error):
        bob.feed(first)                       # Bob never accepts a request
    alice.feed(first)
    with pytest.raises(pc.Error, match="current state"):
        alice.feed(first)                     # replay while her reply is unsent
    reply = alice.next_message()
    with pytest.raises(pc.Error):
        alice.feed(first)                     # replay of seq 0
    other = make_side("cascade-original", "alice", a, 0.03, seed=1)
    with pytest.raises(pc.Error):
        other.feed(first)                     # variant mismatch
    bob.feed(reply)
    with pytest.raises(pc.Error):
        bob.feed(reply)                       # duplicate reply


def test_bad_inputs_name_the_argument():
    a = np.zeros(100, dtype=np.uint8)
    with pytest.raises(TypeError, match="bits"):
        cc.CascadeSide("alice", [0, 1], 0.02)
    with pytest.raises(ValueError, match="bits"):
        cc.CascadeSide("alice", a.astype(np.int64), 0.02)
    with pytest.raises(ValueError, match="0 or 1"):
        cc.CascadeSide("alice", a + 2, 0.02)
    with pytest.raises(ValueError, match="empty"):
        cc.CascadeSide("alice", a[:0], 0.02)
    with pytest.raises(ValueError, match="qber"):
        cc.CascadeSide("alice", a, 0.5)
    with pytest.raises(ValueError, match="seed"):
        cc.CascadeSide("alice", a, 0.02, seed=-1)
    with pytest.raises(ValueError, match="role"):
        cc.CascadeSide("carol", a, 0.02)
    with pytest.raises(ValueError, match="method"):
        cc.CascadeSide("bob", a, 0.02, method="cascade-x")
    side = cc.CascadeSide("alice", a, 0.02)
    with pytest.raises(TypeError, match="message"):
        side.feed("text")
    with pytest.raises(ValueError, match="empty"):
        side.feed(b"")
    with pytest.raises(ValueError, match="bob_bits"):
        pc.reconcile_in_memory(a, a[:50], 0.02, method="cascade")


def test_close_and_context_manager():
    a, b = keys(500, 0.02, 15)
    with cc.CascadeSide("bob", b, 0.02, seed=1) as bob:
        assert bob.next_message() is not None
    with pytest.raises(ValueError, match="closed"):
        bob.next_message()
    bob.close()  # idempotent


def test_tiny_and_error_free_keys():
    for n in (1, 2, 3, 65):
        a, b = keys(n, 0.0, n)
        b = a.copy()
        b[0] ^= 1
        for q in (0.0, 0.3):
            res = pc.reconcile_in_memory(a, b, q, method="cascade", seed=2)
            assert res.success and np.array_equal(res.corrected, a)
    a, _ = keys(4096, 0.0, 1)
    res = pc.reconcile_in_memory(a, a.copy(), 0.01, method="cascade", seed=2)
    assert res.success and res.details["flips"] == 0


def test_kat_matches_reference_and_selftest_passes():
    a, b = cc.kat_keys()
    assert int((a ^ b).sum()) == 66
    for method, (parity_bits, messages) in cc.KAT_EXPECTED.items():
        ref = RefCascade(a, b, 0.03, method, seed=7)
        np.testing.assert_array_equal(ref.run(), a)
        assert sum(ref.reply_bits) == parity_bits
        assert 2 * len(ref.requests) + 2 == messages  # request/reply rounds + FINISH/VERIFY
    assert pc.selftest()["cascade"] is True


@pytest.mark.parametrize("method", ["cascade", "cascade-waves", "cascade-original"])
def test_frames_batched_match_reference_per_frame(method):
    # 3000 bits in frames of 1024: lengths 1024, 1024, 952; every round of every frame
    # travels in one message, and each frame's own items follow the reference.
    q = 0.06
    a, b = keys(3000, q, 21)
    alice = make_side(method, "alice", a, q, seed=5, frame_bits=1024)
    bob = make_side(method, "bob", b, q, seed=5, frame_bits=1024)
    log = pipe(alice, bob)
    res = bob.result()
    assert res.details["frames"] == 3 and res.success
    np.testing.assert_array_equal(res.corrected, a)
    reqs = [parse(m) for who, m in log if who == "bob" and parse(m)["type"] == 1]
    bounds = [(0, 1024), (1024, 2048), (2048, 3000)]
    total, rounds = 0, []
    for f, (lo, hi) in enumerate(bounds):
        ref = RefCascade(a[lo:hi], b[lo:hi], q, method, seed=5)
        np.testing.assert_array_equal(ref.run(), a[lo:hi])
        mine = [[it for it, fr in zip(r["items"], r["frames"], strict=True) if fr == f] for r in reqs]
        mine = [m for m in mine if m]
        assert mine == ref.requests
        total += sum(ref.reply_bits)
        rounds.append(len(ref.requests))
    assert res.details["parity_bits"] == total
    assert len(reqs) == max(rounds)  # rounds are shared: the slowest frame sets the count


def test_frame_bits_validation():
    a = np.zeros(1000, dtype=np.uint8)
    with pytest.raises(ValueError, match="frame_bits"):
        cc.CascadeSide("alice", a, 0.02, frame_bits=-1)
    with pytest.raises(ValueError, match="65535 frames"):
        cc.CascadeSide("alice", np.zeros(70_000, dtype=np.uint8), 0.02, frame_bits=1)
    with pytest.raises(ValueError, match="schedule"):
        cc.CascadeSide("alice", a, 0.02, schedule=[0, 5])


def test_c_matches_python_reference_above_2_16_bits():
    # frames of more than 2^16 bits keep 32-bit shuffle entries (16-bit up to 2^16):
    # both widths must give the reference's messages and key
    n, q, seed = 70_000, 0.01, 6
    a, b = keys(n, q, seed)
    ref = RefCascade(a, b, q, "cascade", seed=seed + 10)
    ref_key = ref.run()
    alice = make_side("cascade", "alice", a, q, seed=seed + 10, frame_bits=0)
    bob = make_side("cascade", "bob", b, q, seed=seed + 10, frame_bits=0)
    log = pipe(alice, bob)
    reqs = [parse(m)["items"] for who, m in log if who == "bob" and parse(m)["type"] == 1]
    assert reqs == ref.requests
    np.testing.assert_array_equal(bob.result().corrected, ref_key)


@pytest.mark.parametrize("method,n,q,seed,frame_bits", [
    ("cascade-waves", 3000, 0.05, 41, 0),          # 16-bit shuffle tables, a partial last word
    ("cascade", 70_001, 0.02, 42, 0),              # 32-bit tables (frame > 2^16 bits)
    ("cascade-original", 5000, 0.08, 43, 1024),    # several frames, the last one short
])
def test_portable_pass_copies_match_reference(method, n, q, seed, frame_bits):
    # Pass copies are gathered with AVX2 where the CPU has it; the portable gather
    # must give the same requests and key (checked against the Python reference).
    a, b = keys(n, q, seed)
    pc.lib.qpp_cpu_disable(pc.lib.QPP_CPU_AVX2)
    try:
        alice = make_side(method, "alice", a, q, seed=seed, frame_bits=frame_bits)
        bob = make_side(method, "bob", b, q, seed=seed, frame_bits=frame_bits)
        log = pipe(alice, bob)
    finally:
        pc.lib.qpp_cpu_disable(0)
    alice2 = make_side(method, "alice", a, q, seed=seed, frame_bits=frame_bits)
    bob2 = make_side(method, "bob", b, q, seed=seed, frame_bits=frame_bits)
    assert [m for _, m in pipe(alice2, bob2)][:-1] == [m for _, m in log][:-1]  # VERIFY: fresh hash key
    np.testing.assert_array_equal(bob.result().corrected, bob2.result().corrected)
    if frame_bits == 0:
        ref = RefCascade(a, b, q, method, seed=seed)
        ref_key = ref.run()
        reqs = [parse(m)["items"] for who, m in log if who == "bob" and parse(m)["type"] == 1]
        assert reqs == ref.requests
        np.testing.assert_array_equal(bob.result().corrected, ref_key)

"""LDPC reconciliation: codes, syndrome and decoders against numpy/galois
references, the two-sided protocol over QBER 0.5-11 %, leakage counted from
the messages themselves, message fuzzing and bad inputs."""

from __future__ import annotations

import math
import struct

import galois
import numpy as np
import pytest

import postproc_c as pc
from postproc_c import codes, ldpc

GF2 = galois.GF(2)

# Known answers: CRC-32 tags of the mother codes. Construction uses a portable
# counter-based generator, so these must not change across numpy versions or
# machines; if they do, two nodes would build different codes.
MOTHER_TAGS = {0.5: 0x8E9C5E67, 0.55: 0x1CD178E0, 0.6: 0x58C5410A, 0.65: 0xA7987A55, 0.7: 0x3B0C9DEE,
               0.75: 0x20980746, 0.8: 0x3029501E, 0.85: 0xA15A227E, 0.9: 0x9332CC08}


def bsc(rng: np.random.Generator, n: int, q: float) -> tuple[np.ndarray, np.ndarray]:
    a = rng.integers(0, 2, n, dtype=np.uint8)
    return a, a ^ (rng.random(n) < q).astype(np.uint8)


def sparse_syndrome(spec: codes.CodeSpec, x: np.ndarray) -> np.ndarray:
    """H x mod 2 by numpy from the CSR arrays (independent of the C code)."""
    vals = x[spec.col_idx.astype(np.int64)].astype(np.int64)
    return (np.add.reduceat(vals, spec.row_ptr[:-1].astype(np.int64)) % 2).astype(np.uint8)


# ---------------------------------------------------------------- codes

@pytest.mark.parametrize("rate", codes.RATES)
def test_mother_code_structure(rate):
    spec = codes.mother_code(rate)
    assert spec.n == 1 << 14 and spec.m == round(spec.n * (1 - rate))
    assert spec.tag == MOTHER_TAGS[rate]
    rows = np.repeat(np.arange(spec.m), np.diff(spec.row_ptr.astype(np.int64)))
    key = rows.astype(np.int64) * spec.n + spec.col_idx
    assert np.unique(key).size == key.size                      # no repeated edge
    chk = np.diff(spec.row_ptr.astype(np.int64))
    assert chk.max() - chk.min() <= 1                            # concentrated checks
    var = np.bincount(spec.col_idx, minlength=spec.n)
    # node-perspective degree fractions follow Table I's lambda (edge perspective)
    _, lam, _ = codes.TABLE_I[rate]
    norm = sum(v / d for d, v in lam.items())
    capped = (lam[2] / 2) / norm * spec.n > spec.m - 1        # more degree-2 nodes than one chain holds
    for d, v in lam.items():
        if capped and d in (2, 3):
            continue
        assert abs(np.mean(var == d) - (v / d) / norm) < 1e-3
    assert np.sum(var == 2) <= spec.m - 1
    # degree-2 variables never pair up on the same two checks (weight-2 codewords)
    deg2 = np.flatnonzero(var == 2)
    cols = spec.col_idx.astype(np.int64)
    pairs = np.sort(rows[np.isin(cols, deg2)][np.argsort(cols[np.isin(cols, deg2)], kind="stable")]
                    .reshape(-1, 2), axis=1)
    assert np.unique(pairs[:, 0] * spec.m + pairs[:, 1]).size == deg2.size


def test_syndrome_matches_galois_small_code():
    spec = codes.regular_code(300, 150, 3, seed=7)
    c = ldpc.LdpcCode(spec)
    rng = np.random.default_rng(1)
    H = GF2(spec.dense())
    for _ in range(5):
        x = rng.integers(0, 2, spec.n, dtype=np.uint8)
        want = np.asarray(H @ GF2(x), dtype=np.uint8)
        got = ldpc.unpack_bits(c.syndrome(ldpc.pack_bits(x)), spec.m)
        assert np.array_equal(got, want)


def test_syndrome_matches_numpy_mother_codes():
    rng = np.random.default_rng(2)
    for rate in (0.5, 0.7, 0.9):
        c = ldpc.code(rate)
        x = rng.integers(0, 2, c.n, dtype=np.uint8)
        syn = c.syndrome(ldpc.pack_bits(x))
        assert np.array_equal(ldpc.unpack_bits(syn, c.m), sparse_syndrome(c.spec, x))
        mw = (c.m + 63) // 64
        assert c.m % 64 == 0 or int(syn[mw - 1]) >> (c.m % 64) == 0     # padding bits zero


# ---------------------------------------------------------------- decoder references

def ref_layered(spec: codes.CodeSpec, llr: np.ndarray, syn: np.ndarray, max_iter: int, algorithm: str,
                scale: float = 0.8):
    """Numpy reference of the layered decoder (row loop, vectorized within a row)."""
    rp = spec.row_ptr.astype(np.int64)
    ci = spec.col_idx.astype(np.int64)
    post = llr.astype(np.float32).copy()
    r = np.zeros(ci.size, np.float32)
    sc = np.float32(scale)

    def satisfied():
        return np.array_equal(sparse_syndrome(spec, (post < 0).astype(np.uint8)), syn)

    it = 0
    ok = satisfied()
    while not ok and it < max_iter:
        for row in range(spec.m):
            e = slice(rp[row], rp[row + 1])
            v = ci[e]
            q = (post[v] - r[e]).astype(np.float32)
            if algorithm == "minsum":
                a = np.abs(q)
                arg = int(np.argmin(a))
                m1 = a[arg]
                m2 = np.min(np.delete(a, arg))
                sgn = (int(syn[row]) + int(np.sum(q < 0))) % 2
                mag = np.full(a.size, sc * m1, np.float32)
                mag[arg] = sc * m2
                rn = np.where((sgn + (q < 0)) % 2 == 1, -mag, mag).astype(np.float32)
            else:
                t = np.tanh(q.astype(np.float64) / 2)
                prod = np.array([np.prod(np.delete(t, j)) for j in range(t.size)])
                prod *= -1.0 if syn[row] else 1.0
                rn = (2 * np.arctanh(np.clip(prod, -0.9999999, 0.9999999))).astype(np.float32)
            r[e] = rn
            post[v] = q + rn
        it += 1
        ok = satisfied()
    return (post < 0).astype(np.uint8), ok, it, post


def test_minsum_matches_numpy_reference_exactly():
    spec = codes.regular_code(240, 120, 3, seed=3)
    c = ldpc.LdpcCode(spec)
    rng = np.random.default_rng(3)
    matched = 0
    for q in (0.02, 0.05, 0.08, 0.12):
        x, y = bsc(rng, spec.n, q)
        syn_bits = sparse_syndrome(spec, x)
        llr = (np.float32(math.log((1 - q) / q)) * (1 - 2 * y.astype(np.float32))).astype(np.float32)
        out, ok, it, post = c.decode(llr, ldpc.pack_bits(syn_bits), max_iter=15, algorithm="minsum",
                                     scale=0.75)
        h, ok_ref, it_ref, post_ref = ref_layered(spec, llr, syn_bits, 15, "minsum", 0.75)
        assert (ok, it) == (ok_ref, it_ref)
        assert np.array_equal(ldpc.unpack_bits(out, spec.n), h)
        assert np.array_equal(post, post_ref)                  # bit-exact float32
        assert ok == np.array_equal(sparse_syndrome(spec, h), syn_bits)
        matched += ok
    assert matched >= 2                                          # the low-noise cases decode


def test_bp_matches_numpy_reference():
    spec = codes.regular_code(240, 120, 3, seed=4)
    c = ldpc.LdpcCode(spec)
    rng = np.random.default_rng(4)
    for q in (0.03, 0.09):
        x, y = bsc(rng, spec.n, q)
        syn_bits = sparse_syndrome(spec, x)
        llr = (np.float32(math.log((1 - q) / q)) * (1 - 2 * y.astype(np.float32))).astype(np.float32)
        out, ok, it, post = c.decode(llr, ldpc.pack_bits(syn_bits), max_iter=3, algorithm="bp")
        h, ok_ref, it_ref, post_ref = ref_layered(spec, llr, syn_bits, 3, "bp")
        assert (ok, it) == (ok_ref, it_ref)
        np.testing.assert_allclose(post, post_ref, rtol=1e-3, atol=1e-3)
        assert np.array_equal(ldpc.unpack_bits(out, spec.n), h)


def test_mother_code_decodes_below_threshold():
    c = ldpc.code(0.5)
    rng = np.random.default_rng(5)
    x, y = bsc(rng, c.n, 0.085)           # threshold 0.1071 (Table I), f = 0.5 / h(0.085) = 1.18
    llr = (np.float32(math.log(0.915 / 0.085)) * (1 - 2 * y.astype(np.float32))).astype(np.float32)
    out, ok, it, _ = c.decode(llr, c.syndrome(ldpc.pack_bits(x)), max_iter=60)
    assert ok and np.array_equal(ldpc.unpack_bits(out, c.n), x)


# ---------------------------------------------------------------- protocol

#: key bits per frame: QC family (default, n = 2^16) and Table I family (n = 2^14), d = 0.1 n
K_QC = ldpc.plan(0.02, 1.1, qc=True).k
K_T1 = ldpc.plan(0.02, 1.1).k


@pytest.mark.parametrize("qber,algorithm", [(0.005, "qc"), (0.01, "qc"), (0.02, "qc"), (0.05, "qc"),
                                            (0.08, "qc"), (0.11, "qc"), (0.02, "bp"), (0.08, "bp")])
def test_blind_over_qber_never_silent(qber, algorithm):
    rng = np.random.default_rng(int(qber * 1e4))
    k = K_QC if algorithm == "qc" else K_T1
    a, b = bsc(rng, 2 * k - 100, qber)                           # two frames, the last one 100 bits short
    res = pc.reconcile_in_memory(a, b, qber, method="ldpc-blind", seed=11, private_seed=3,
                                 algorithm=algorithm)
    k_used = res.details["n"] - res.details["d"]           # blind may widen d (room to reveal)
    assert res.method == "ldpc-blind" and res.details["frames"] == -(-a.size // k_used) >= 2
    if res.success:
        assert np.array_equal(res.corrected, a)
    if qber <= 0.08:
        assert res.success
        assert res.details["efficiency"] < 1.6    # loose: efficiency is measured in bench/
    assert res.messages == 1 + 2 * res.details["rounds"] + 1     # syndrome, (status, reveal)*, status


def test_one_way_is_two_messages():
    rng = np.random.default_rng(8)
    a, b = bsc(rng, K_QC, 0.03)
    res = pc.reconcile_in_memory(a, b, 0.03, method="ldpc", seed=1, f=1.25, private_seed=1)
    assert res.messages == 2 and res.details["rounds"] == 0
    assert res.success and np.array_equal(res.corrected, a)


def parse(msg: bytes) -> tuple[int, int, int, bytes]:
    magic, ver, typ, res, seq, tag, count, plen = struct.unpack_from("<4sBBHIIII", msg)
    assert magic == b"QLDP" and ver == 1 and res == 0 and plen == len(msg) - 24
    return typ, seq, count, msg[24:]


def run_logged(method, a, b, qber, **kw):
    alice = pc.make_side(method, "alice", a, qber, **kw)
    bob = pc.make_side(method, "bob", b, qber, **kw)
    log = []
    while not (alice.done and bob.done):
        for side, peer in ((alice, bob), (bob, alice)):
            while (msg := side.next_message()) is not None:
                log.append(msg)
                peer.feed(msg)
    return alice, bob, log


@pytest.mark.parametrize("method,qber", [("ldpc-blind", 0.05), ("ldpc-blind", 0.02), ("ldpc", 0.08)])
def test_leakage_counted_from_messages(method, qber):
    rng = np.random.default_rng(9)
    a, b = bsc(rng, K_QC + 20_000, qber)
    kw = dict(seed=4, private_seed=2)
    if method == "ldpc-blind":
        kw.update(f_start=0.95, reveal_f=0.02)       # start below capacity: forces reveal rounds
    alice, bob, log = run_logged(method, a, b, qber, **kw)
    typ, _, frames, pay = parse(log[0])
    assert typ == 1
    n, m, d, n_short, step, zero, key_bits = struct.unpack_from("<IIIIIIQ", pay)
    assert key_bits == a.size and zero == 0
    # independent count: punctured left per frame = d - n_short - revealed bits seen in REVEAL messages
    punct_left = np.full(frames, d - n_short)
    status = np.zeros(frames, np.uint8)
    revealed_total = 0
    for msg in log[1:]:
        typ, _, count, pay = parse(msg)
        if typ == 2:
            status = np.frombuffer(pay, np.uint8).copy()
        else:
            assert typ == 3
            retry = np.flatnonzero(status == 0)
            assert count == retry.size
            delta = min(step, int(punct_left[retry[0]]))
            assert len(pay) == count * ((delta + 63) // 64) * 8
            punct_left[retry] -= delta
            revealed_total += count * delta
    expected = int(np.sum(m - punct_left))
    ra, rb = alice.result(), bob.result()
    assert ra.leaked_bits == rb.leaked_bits == expected
    if method == "ldpc-blind":
        assert revealed_total > 0
    h = ldpc.binary_entropy(qber)
    assert rb.details["efficiency"] == pytest.approx(expected / (a.size * h))
    # effective rate check (Elkouss 2011 Eq. (3)): full frames leak (1 - R) k = m - p
    p = ldpc.plan(qber, 1.0, qc=True)
    m0 = codes.qc_code(p.rate).m
    assert (1 - p.effective_rate()) * p.k == pytest.approx(m0 - (p.d - p.n_short))
    if rb.success:
        assert np.array_equal(rb.corrected, a)
    assert np.array_equal(ra.corrected, a)


# ---------------------------------------------------------------- fuzzing and bad input

def fresh_pair(qber=0.03, **kw):
    rng = np.random.default_rng(10)
    a, b = bsc(rng, K_QC, qber)                                  # one full frame
    alice = pc.make_side("ldpc-blind", "alice", a, qber, seed=1, private_seed=1, **kw)
    bob = pc.make_side("ldpc-blind", "bob", b, qber, seed=1, **kw)
    return alice, bob


def test_fuzzed_messages_refused_and_state_kept():
    alice, bob = fresh_pair()
    syn = alice.next_message()
    rng = np.random.default_rng(11)
    # random garbage, truncations, extensions
    bad = [bytes(rng.integers(0, 256, int(k), dtype=np.uint8)) for k in rng.integers(0, 400, 30)]
    bad += [syn[:k] for k in range(0, len(syn), max(1, len(syn) // 60))] + [syn + b"\0", b""]
    # one bit flipped in any header or parameter byte
    for i in range(24 + 32):
        for bit in (0, 3, 7):
            f = bytearray(syn)
            f[i] ^= 1 << bit
            bad.append(bytes(f))
    # non-zero padding bits above m in the last syndrome word
    m = struct.unpack_from("<I", syn, 28)[0]
    if m % 64:
        f = bytearray(syn)
        f[-1] |= 0x80
        bad.append(bytes(f))
    for msg in bad:
        with pytest.raises(pc.Error, match="qpp_ldpc_side_feed"):
            bob.feed(msg)
    bob.feed(syn)                          # the genuine message still works: state unchanged
    with pytest.raises(pc.Error):
        bob.feed(syn)                      # replay refused
    status = bob.next_message()
    with pytest.raises(pc.Error):
        bob.feed(status)                   # a STATUS is never for Bob
    for k in range(len(status)):
        with pytest.raises(pc.Error):
            alice.feed(status[:k])
    alice.feed(status)
    assert alice.done == bob.done


def test_status_lies_refused():
    alice, bob = fresh_pair()
    syn = alice.next_message()
    bob.feed(syn)
    status = bytearray(bob.next_message())
    # Bob may not declare a frame FAILED while punctured bits are left to reveal, nor send unknown codes
    for v in (2, 3, 255):
        forged = bytearray(status)
        forged[24] = v
        with pytest.raises(pc.Error):
            alice.feed(bytes(forged))
    alice.feed(bytes(status))


def test_out_of_order_refused():
    alice, bob = fresh_pair(qber=0.05, f_start=0.9, reveal_f=0.05)
    syn = alice.next_message()
    bob.feed(syn)
    status = bob.next_message()
    alice.feed(status)
    reveal = alice.next_message()
    assert parse(reveal)[0] == 3
    fresh_alice, fresh_bob = fresh_pair(qber=0.05, f_start=0.9, reveal_f=0.05)
    with pytest.raises(pc.Error):
        fresh_bob.feed(reveal)                 # REVEAL before SYNDROME
    for k in range(0, len(reveal), 7):
        with pytest.raises(pc.Error):
            bob.feed(reveal[:k])
    bob.feed(reveal)
    assert bob.next_message() is not None


def test_bad_inputs():
    a = np.zeros(100, np.uint8)
    with pytest.raises(ValueError, match="bits"):
        pc.make_side("ldpc", "alice", a.astype(np.int64), 0.02)
    with pytest.raises(ValueError, match="bits"):
        pc.make_side("ldpc", "alice", np.full(10, 2, np.uint8), 0.02)
    with pytest.raises(ValueError, match="bits"):
        pc.make_side("ldpc", "alice", np.zeros(0, np.uint8), 0.02)
    with pytest.raises(ValueError, match="algorithm"):
        pc.make_side("ldpc", "alice", a, 0.02, algorithm="magic")
    with pytest.raises(ValueError, match="qber"):
        pc.make_side("ldpc", "alice", a, 0.6)
    with pytest.raises(TypeError, match="message"):
        pc.make_side("ldpc", "bob", a, 0.02).feed("text")
    with pytest.raises(ValueError, match="rate"):
        codes.mother_code(0.42)
    c = ldpc.code(0.9)
    with pytest.raises(ValueError, match="llr"):
        c.decode(np.zeros(c.n, np.float64), np.zeros(26, np.uint64))
    with pytest.raises(pc.Error, match="qpp_ldpc_decode"):
        c.decode(np.full(c.n, np.nan, np.float32), np.zeros(26, np.uint64))
    with pytest.raises(pc.Error, match="qpp_ldpc_decode"):
        c.decode(np.zeros(c.n, np.float32), np.zeros(3, np.uint64))
    spec = codes.regular_code(60, 30, 3, seed=1)
    bad_col = spec.col_idx.copy()
    bad_col[0] = 60
    with pytest.raises(pc.Error, match="qpp_ldpc_code_create"):
        ldpc.LdpcCode(codes.CodeSpec(0.5, 60, 30, 0.0, spec.row_ptr, bad_col, 0))
    dup = spec.col_idx.copy()
    dup[1] = dup[0]
    with pytest.raises(pc.Error, match="qpp_ldpc_code_create"):
        ldpc.LdpcCode(codes.CodeSpec(0.5, 60, 30, 0.0, spec.row_ptr, dup, 0))
    side = pc.make_side("ldpc", "bob", a, 0.02)
    assert side.next_message() is None       # nothing to send before the syndrome
    with pytest.raises(pc.Error, match="qpp_ldpc_side_result"):
        side.result()


def test_avx2_and_portable_bp_bit_identical():
    c = ldpc.code(0.7)
    rng = np.random.default_rng(12)
    x, y = bsc(rng, c.n, 0.06)
    llr = (np.float32(math.log(0.94 / 0.06)) * (1 - 2 * y.astype(np.float32))).astype(np.float32)
    llr[rng.permutation(c.n)[:500]] = 0.0                     # punctured positions: tanh(0) = 0 exactly
    syn = c.syndrome(ldpc.pack_bits(x))
    try:
        fast = c.decode(llr, syn, max_iter=8)
        pc.lib.qpp_cpu_disable(pc.lib.QPP_CPU_AVX2)
        slow = c.decode(llr, syn, max_iter=8)
    finally:
        pc.lib.qpp_cpu_disable(0)
    assert np.array_equal(fast[3], slow[3]) and fast[1:3] == slow[1:3]
    assert np.array_equal(fast[0], slow[0])


@pytest.mark.parametrize("avx2", [True, False])
def test_batch_decode_equals_single_frames(avx2):
    c = ldpc.code(0.7)
    rng = np.random.default_rng(13)
    lanes = 6                                                   # two lanes stay unused
    llrs = np.zeros((lanes, c.n), np.float32)
    syns = np.zeros((lanes, (c.m + 63) // 64), np.uint64)
    truth = []
    for lane, q in enumerate((0.01, 0.03, 0.045, 0.05, 0.06, 0.2)):  # easy .. hopeless
        x, y = bsc(rng, c.n, q)
        llrs[lane] = np.float32(math.log((1 - q) / q)) * (1 - 2 * y.astype(np.float32))
        llrs[lane, rng.permutation(c.n)[:300]] = 0.0             # punctured
        syns[lane] = c.syndrome(ldpc.pack_bits(x))
        truth.append(x)
    try:
        if not avx2:
            pc.lib.qpp_cpu_disable(pc.lib.QPP_CPU_AVX2)
        out, ok, its = c.decode_batch(llrs, syns, max_iter=25)
        single = [c.decode(llrs[i], syns[i], max_iter=25) for i in range(lanes)]
    finally:
        pc.lib.qpp_cpu_disable(0)
    for i in range(lanes):
        assert np.array_equal(out[i], single[i][0])
        assert (bool(ok[i]), int(its[i])) == single[i][1:3]
    assert ok[0] and not ok[-1]
    assert np.array_equal(ldpc.unpack_bits(out[0], c.n), truth[0])
    with pytest.raises(ValueError, match="llr"):
        c.decode_batch(np.zeros((9, c.n), np.float32), np.zeros((9, syns.shape[1]), np.uint64))


def test_selftest_kat_registered_and_passes():
    assert pc.selftest()["ldpc"] is True


@pytest.mark.parametrize("qber", [0.01, 0.02, 0.05, 0.08])
def test_blind_plan_keeps_code_for_later_start(qber):
    """f_choose: a later first attempt keeps the code and d chosen for a start at 1.03 and only
    shortens more, so the first attempt's rate is 1 - f h(q) (never above it)."""
    base = ldpc.plan(qber, ldpc.BLIND_F_CHOOSE, reveal_f=0.02, qc=True)
    f = ldpc.blind_f_start(qber)
    late = ldpc.plan(qber, f, reveal_f=0.02, qc=True, f_choose=ldpc.BLIND_F_CHOOSE)
    assert (late.rate, late.d, late.reveal_step) == (base.rate, base.d, base.reveal_step)
    assert late.n_short > base.n_short
    h = ldpc.binary_entropy(qber)
    assert 1 - f * h - 1e-3 < late.effective_rate() <= 1 - f * h
    assert 1.0 < f < (1.15 if qber < 0.015 else 1.10)        # below the target f at that QBER


def test_qc_frame_bits_rule():
    """The QC frame: the longest whose even spread leaves d <= 0.12 n in >= 4 frames, else the
    least d / n; never more shortening than n = 2^16 would need."""
    def spread(bits, n):
        frames = -(-bits // int(n * (1 - ldpc.QC_ROOM_DELTA)))
        return (n - -(-bits // frames)) / n

    assert ldpc.qc_frame_bits(1000) == 1 << 16
    assert ldpc.qc_frame_bits(1 << 20) == 294_912                 # the link's default block: 4 frames
    assert ldpc.qc_frame_bits(1 << 22) == 1 << 19
    for bits in (300_000, (1 << 20) + 3000, 1_050_000, 3_000_000, 1 << 21):
        n = ldpc.qc_frame_bits(bits)
        assert n in ldpc.QC_FRAME_BITS and n % (64 * codes.QC_NB) == 0
        assert spread(bits, n) <= max(ldpc.QC_FIT_DELTA, spread(bits, 1 << 16))
    assert [ldpc.qc_frame_bits(b, blind=False) for b in (1000, 1 << 20, 1 << 22, 1 << 24)] == \
        [1 << 16, 1 << 17, 1 << 19, 1 << 19]                      # one-way: powers of two
    with pytest.raises(ValueError, match="frame_bits"):
        ldpc.LdpcSide("alice", np.zeros(1000, np.uint8), 0.02, frame_bits=12345)


def test_blind_longer_frame_corrects():
    """ldpc-blind on 2^17-bit frames (z = 512): Bob ends with Alice's key, n reported, and the
    leak lies between m - d (nothing revealed) and m (all revealed) per frame."""
    rng = np.random.default_rng(41)
    a, b = bsc(rng, 200_000, 0.02)
    res = pc.reconcile_in_memory(a, b, 0.02, method="ldpc-blind", seed=9, frame_bits=1 << 17)
    d = res.details
    assert res.success and np.array_equal(res.corrected, a)
    assert d["n"] == 1 << 17 and d["frames"] == 2
    c = ldpc.qc_code(d["mother_rate"], 1 << 17)
    assert c.z == 512 and c.n == 1 << 17
    assert d["frames"] * (c.m - d["d"]) <= res.leaked_bits <= d["frames"] * c.m
    assert 1.0 < d["efficiency"] < 1.4


@pytest.mark.parametrize("qber", [0.003, 0.01])
def test_one_way_ldpc_decodes_below_the_codes_range_by_planning_at_the_floor(qber):
    """One-way LDPC at a QBER under ONE_WAY_MIN_QBER plans its rate there: correct, if costly
    (at the plain estimate every block failed: the punctured high-rate end does not decode)."""
    rng = np.random.default_rng(11)
    n = 1 << 18
    a = rng.integers(0, 2, n, dtype=np.uint8)
    e = np.zeros(n, np.uint8)
    e[rng.choice(n, int(round(qber * n)), replace=False)] = 1
    r = pc.reconcile_in_memory(a, a ^ e, qber, method="ldpc", seed=5)
    assert r.success and np.array_equal(r.corrected, a)
    assert r.leaked_bits >= ldpc.ONE_WAY_F * n * ldpc.binary_entropy(ldpc.ONE_WAY_MIN_QBER) * 0.95


def test_blind_plan_over_the_whole_qber_range():
    """Session 6 rules, on the link's default 2^20-bit block: the f_max widening of d does not
    add a frame at QBER 11 % (4 frames of 294,912, d = n / 9; it had 5 of d = 0.2 n, f 1.226),
    Table I's weak 0.90 code is never picked (``BLIND_SKIP_RATES``), and the designed codes
    fill the rate gaps, so at each QBER the chosen code leaves f_max = m / (k h) between 1.10
    and 1.35 (a code with more room is punctured at the start, one with less cannot finish)."""
    bits = np.zeros(1 << 20, np.uint8)
    for q in (0.005, 0.0075, 0.01, 0.0115, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.05,
              0.06, 0.065, 0.07, 0.08, 0.09, 0.10, 0.11):
        side = pc.make_side("ldpc-blind", "bob", bits, q, seed=1)
        p = side.plan
        assert side.frames == 4 and p.d == 32768, q
        assert p.rate not in ldpc.BLIND_SKIP_RATES, q
        assert 1.10 <= p.m / (p.k * ldpc.binary_entropy(q)) <= 1.35, q


def test_plan_weighs_codes_by_their_dimensions_without_building_them():
    """``plan`` compares every mother code of the family but builds none of them (building one
    takes 0.03-0.5 s; building all 21 made a process's first LDPC block 2.5 s slower per side),
    and ``codes.code_dims`` gives exactly the n and m the built code has."""
    n = codes.QC_NB * 320                                   # a z no other test builds
    before = codes.qc_code.cache_info()
    for q in (0.005, 0.02, 0.05, 0.11):
        ldpc.plan(q, 1.1, reveal_f=0.01, qc=True, n=n)
        ldpc.plan(q, 1.25, qc=True, n=n)
    after = codes.qc_code.cache_info()
    assert (after.misses, after.currsize) == (before.misses, before.currsize)
    for r in codes.QC_RATES:
        spec = codes.qc_code(r)                              # z = 256: built by the other tests
        assert codes.code_dims(r) == (spec.n, spec.m), r
    assert codes.code_dims(0.8, 1 << 14, qc=False) == (1 << 14, codes.mother_code(0.8, 1 << 14).m)
    with pytest.raises(ValueError, match="rate"):
        codes.code_dims(0.555)

"""Quasi-cyclic LDPC codes and the int16 lane-parallel layered sum-product
decoder: construction (deterministic, fast, fewest 4-cycles), the C syndrome
against numpy, and the C decoder against a numpy reference of the same integer
arithmetic, bit for bit, on the AVX2 and the portable path."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

import postproc_c as pc
from postproc_c import codes, ldpc
from postproc_c._binding import check

# Known answers: CRC-32 tags of the QC mother codes (portable generator: must not change).
QC_TAGS = {0.5: 0x14CDB3D5, 0.55: 0x1D098DC4, 0.6: 0x90B14BF9, 0.65: 0xC0573727, 0.7: 0x24C7305C,
           0.75: 0x03B906E0, 0.8: 0x482232FB, 0.85: 0xA5C8A126, 0.9: 0xF340B47C, 0.91: 0xAFFA4658,
           # designed rates added in session 6 (new codes, new tags; the others unchanged)
           0.88: 0x3A54BC5B, 0.89: 0x1D959D0E, 0.93: 0xA98B8253, 0.95: 0x8D0F971B,
           0.82: 0xF929132D, 0.77: 0x50D36DFD, 0.94: 0xA082E21D,
           0.67: 0xE1E90E4F, 0.86: 0x443BD50A, 0.81: 0xB1744E3F, 0.72: 0x540FBAEE}

SAT = 32767
RMAX = 8191
CORR = np.array([162, 134, 110, 89, 72, 58, 46, 37, 29, 23, 18, 14, 11, 9, 7, 0], np.int64)


def bsc(rng, n, q):
    a = rng.integers(0, 2, n, dtype=np.uint8)
    return a, a ^ (rng.random(n) < q).astype(np.uint8)


def sparse_syndrome(spec, x):
    vals = x[spec.col_idx.astype(np.int64)].astype(np.int64)
    return (np.add.reduceat(vals, spec.row_ptr[:-1].astype(np.int64)) % 2).astype(np.uint8)


class Arith:
    """Integer arithmetic of one QC decoder (ldpc_qc.c): bounds of the posteriors, of q on the
    check side and of the check messages, the boxplus table and its index, and how the
    posterior is updated: int16 decoder from q (post = q + r'), int8 decoder by the message
    change (post = post + r' - r: its q is clamped much lower than the posterior)."""

    def __init__(self, qmax, rmax, corr, index, delta):
        self.qmax, self.rmax, self.corr, self.index, self.delta = qmax, rmax, corr, index, delta

    def boxplus(self, a, b):
        """|a [+] b| = min(a, b) + ln(1 + e^-(a+b)) - ln(1 + e^-|a-b|), floored at 0."""
        cs, cd = self.corr[self.index(a + b)], self.corr[self.index(np.abs(a - b))]
        return np.maximum(np.minimum(a, b) + cs - cd, 0)


#: int16: 1/256 nat, index x >> 6 (quarter nat) capped at 15
ARITH16 = Arith(SAT, RMAX, CORR, lambda x: np.minimum(x >> 6, 15), False)
#: int8 messages: 1/8 nat, |q| <= 127 and |r| <= 127 on the check side, int16 posteriors; index
#: ceil(x / 2), entries 16 and beyond 0
CORR8 = np.array([6, 5, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0], np.int64)
ARITH8 = Arith(127, 127, CORR8, lambda x: np.minimum((x + 1) >> 1, 16), True)


def boxplus(a, b):
    return ARITH16.boxplus(a, b)


def ref_decode_qc(spec, llr, syn_bits, max_iter, stall=0, int8=False):
    """Layered sum-product in numpy (one base row = one layer, z lanes at once), in the
    arithmetic of the int16 or (int8) the int8-message decoder."""
    post = llr.astype(np.int64).reshape(spec.n // spec.z, spec.z).copy()
    r = np.zeros((spec.blk_col.size, spec.z), np.int64)
    ar = ARITH8 if int8 else ARITH16
    hard, ok, it = ref_run(spec, post, r, syn_bits, max_iter, stall, ar)
    return hard, ok, it, post.ravel()


def ref_run(spec, post, r, syn_bits, max_iter, stall=0, ar=ARITH16):
    """Continue decoding from the state (post: (nb, z), r: (edges, z)), updated in place."""
    z, mb = spec.z, spec.blk_ptr.size - 1
    lanes = np.arange(z)
    synm = syn_bits.reshape(mb, z).astype(np.int64)
    sat = SAT

    def unsatisfied():
        hard = (post < 0).ravel().astype(np.uint8)
        return int(np.sum(sparse_syndrome(spec, hard) != syn_bits)), hard

    bad, hard = unsatisfied()
    best, it, since = bad, 0, 0
    while bad and it < max_iter and not (stall and since >= stall):
        for i in range(mb):
            es = list(range(int(spec.blk_ptr[i]), int(spec.blk_ptr[i + 1])))
            idx = [(lanes + int(spec.blk_shift[e])) % z for e in es]
            cols = [int(spec.blk_col[e]) for e in es]
            q = [np.clip(post[c, ix] - r[e], -ar.qmax, ar.qmax)
                 for e, c, ix in zip(es, cols, idx, strict=True)]
            a = [np.abs(v) for v in q]
            sign = synm[i].copy()
            for v in q:
                sign ^= (v < 0).astype(np.int64)
            deg = len(es)
            fw = [None] * deg
            for k in range(1, deg):
                fw[k] = a[0] if k == 1 else ar.boxplus(fw[k - 1], a[k - 1])
            bw = None
            for k in range(deg - 1, -1, -1):
                if deg == 1:
                    mag = np.full(z, ar.qmax)
                elif k == deg - 1:
                    mag = fw[k]
                elif k == 0:
                    mag = bw
                else:
                    mag = ar.boxplus(fw[k], bw)
                if k == deg - 1:
                    bw = a[k]
                elif k > 0:
                    bw = ar.boxplus(bw, a[k])
                mag = np.minimum(mag, ar.rmax)
                rv = np.where(sign ^ (q[k] < 0), -mag, mag)
                base = post[cols[k], idx[k]] - r[es[k]] if ar.delta else q[k]
                r[es[k]] = rv
                post[cols[k], idx[k]] = np.clip(base + rv, -sat, sat)
        it += 1
        bad, hard = unsatisfied()
        if bad < best:
            best, since = bad, 0
        else:
            since += 1
    return hard, bad == 0, it


# ---------------------------------------------------------------- codes

@pytest.mark.parametrize("rate", codes.QC_RATES)
def test_qc_code_structure(rate):
    codes.qc_code.cache_clear()
    t0 = time.process_time()                                      # CPU time: the machine is shared
    spec = codes.qc_code(rate)
    assert time.process_time() - t0 < 1.0                         # generated at first use
    assert spec.tag == QC_TAGS[rate] and spec.z == codes.QC_Z and spec.n == 1 << 16
    mb = spec.blk_ptr.size - 1
    designed = rate in codes.DESIGNED
    assert spec.m == mb * spec.z
    assert mb == (codes.DESIGNED[rate][0] if designed else round(codes.QC_NB * (1 - rate)))
    rows = np.repeat(np.arange(spec.m), np.diff(spec.row_ptr.astype(np.int64)))
    key = rows * spec.n + spec.col_idx
    assert np.unique(key).size == key.size                        # no repeated edge
    chk = np.diff(spec.blk_ptr.astype(np.int64))
    assert chk.max() - chk.min() <= 1                             # concentrated checks
    var = np.bincount(spec.col_idx, minlength=spec.n)
    assert np.sum(var == 2) <= (mb - 1) * spec.z                  # one staircase of degree-2 columns
    # 4-cycles of the lifted graph (Fossorier 2004, Thm 2.1): far fewer than random shifts give
    S = np.full((mb, codes.QC_NB), -1, np.int64)
    for i in range(mb):
        e = slice(int(spec.blk_ptr[i]), int(spec.blk_ptr[i + 1]))
        S[i, spec.blk_col[e].astype(np.int64)] = spec.blk_shift[e]
    rnd = np.where(S >= 0, np.random.default_rng(0).integers(0, spec.z, S.shape), -1)
    assert count_4cycles(S, spec.z) <= count_4cycles(rnd, spec.z) // 4


# The same constructions lifted by larger z (``ldpc.qc_frame_bits`` picks the frame per block:
# z = 1152, n = 294,912 for the link's default 2^20-bit block): pinned for the same reason as
# QC_TAGS.
QC_TAGS_Z = {
    512: {0.5: 0x24CF2134, 0.55: 0x16F9EB1F, 0.6: 0xAD708103, 0.65: 0x63F55138, 0.7: 0x5EB09FFF,
          0.75: 0x92B1C702, 0.8: 0x92D15EA5, 0.85: 0xF5DA5168, 0.9: 0x10B3A318, 0.91: 0xC0C68862,
          0.88: 0xFC114114, 0.89: 0x18339320, 0.93: 0xF1FC5E88, 0.95: 0x0C3817FF, 0.82: 0xA86552D1,
          0.77: 0x3C03607C, 0.94: 0x68A227E4, 0.67: 0xEC5D426B,
          0.86: 0xCB0F4F7B, 0.81: 0xC2F857EE, 0.72: 0xFD692745},
    1152: {0.5: 0xE178230F, 0.55: 0xA8F8E4D0, 0.6: 0x3C097713, 0.65: 0x4BA9502F, 0.7: 0xF7CF08E6,
           0.75: 0x5CC58FBE, 0.8: 0x201BC891, 0.85: 0x3261E77A, 0.9: 0xF5D5A613, 0.91: 0x3A10238F,
           0.88: 0xB1D389CA, 0.89: 0x6A9EE0C0, 0.93: 0xADFA3671, 0.95: 0xBE509D8A, 0.82: 0x9396209F,
           0.77: 0x711FF2B6, 0.94: 0xA396CF4D, 0.67: 0xF1B5B990,
           0.86: 0x01194E87, 0.81: 0x9A4E450B, 0.72: 0x99FCEBAB},
}


@pytest.mark.parametrize("z", sorted(QC_TAGS_Z))
@pytest.mark.parametrize("rate", codes.QC_RATES)
def test_qc_code_larger_z_same_ensemble(rate, z):
    """n = 256 z codes: pinned tags, and the base matrix has the same column and row degrees as
    the n = 2^16 code (same ensemble, so the DE threshold documented in codes.py holds)."""
    spec, ref = codes.qc_code(rate, z=z), codes.qc_code(rate)
    assert spec.tag == QC_TAGS_Z[z][rate] and spec.z == z and spec.n == z * codes.QC_NB
    assert spec.m * ref.z == z * ref.m and spec.edges * ref.z == z * ref.edges
    assert np.array_equal(np.sort(np.bincount(spec.blk_col, minlength=codes.QC_NB)),
                          np.sort(np.bincount(ref.blk_col, minlength=codes.QC_NB)))
    assert np.array_equal(np.sort(np.diff(spec.blk_ptr.astype(np.int64))),
                          np.sort(np.diff(ref.blk_ptr.astype(np.int64))))
    mb = spec.blk_ptr.size - 1
    S = np.full((mb, codes.QC_NB), -1, np.int64)
    for i in range(mb):
        e = slice(int(spec.blk_ptr[i]), int(spec.blk_ptr[i + 1]))
        S[i, spec.blk_col[e].astype(np.int64)] = spec.blk_shift[e]
    assert count_4cycles(S, spec.z) == 0                           # girth >= 6


def count_4cycles(S, z):
    """Base 4-cycles (i1, i2, j1, j2) whose shifts close a cycle in the lifted graph."""
    total = 0
    for i1 in range(S.shape[0]):
        for i2 in range(i1 + 1, S.shape[0]):
            both = np.flatnonzero((S[i1] >= 0) & (S[i2] >= 0))
            cnt = np.bincount((S[i1, both] - S[i2, both]) % z, minlength=z)
            total += int(np.sum(cnt * (cnt - 1) // 2))
    return total


def test_qc_syndrome_matches_numpy():
    rng = np.random.default_rng(1)
    small = (codes.random_qc_code(64, 6, 24, 9, 2), codes.random_qc_code(16, 5, 20, 7, 3))
    for spec in (codes.qc_code(0.85), *small):
        c = ldpc.LdpcCode(spec)
        assert pc.lib.qpp_ldpc_code_z(c._ptr) == spec.z
        for _ in range(3):
            x = rng.integers(0, 2, spec.n, dtype=np.uint8)
            syn = ldpc.unpack_bits(c.syndrome(ldpc.pack_bits(x)), spec.m)
            assert np.array_equal(syn, sparse_syndrome(spec, x))


# ---------------------------------------------------------------- decoder

#: CPU paths of the QC layer: AVX-512BW (32-lane chunks, masked wrap-around), AVX2 (16-lane
#: chunks, four side by side when z % 64 == 0, else one), portable C. Where the machine lacks a
#: feature the path falls back to the next one, and the test still checks that.
PATHS = {"avx512": 0, "avx2": pc.lib.QPP_CPU_AVX512BW,
         "portable": pc.lib.QPP_CPU_AVX2 | pc.lib.QPP_CPU_AVX512BW}


@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("z,mb,nb,deg,q", [(16, 6, 24, 8, 0.04), (64, 8, 32, 10, 0.03), (64, 4, 32, 1, 0.01),
                                           (48, 4, 16, 6, 0.03), (128, 4, 16, 6, 0.03), (192, 4, 16, 6, 0.03),
                                           (32, 5, 20, 7, 0.04), (96, 4, 16, 6, 0.03)])
def test_qc_decoder_matches_numpy_reference_exactly(path, z, mb, nb, deg, q, int8):
    """int16 and int8 decoders. For int8, z = 192 runs the SIMD paths' 128-lane group and a
    64-lane tail, z = 96 (AVX2: 64 + 32 lanes) and z = 32 the AVX2 path's smaller groups
    (AVX-512 needs z % 64 == 0), z = 16 and 48 the portable path."""
    spec = codes.random_qc_code(z, mb, nb, deg, seed=z + deg)
    c = ldpc.LdpcCode(spec)
    rng = np.random.default_rng(z * 7 + deg)
    one = ldpc.QC8_LLR_ONE if int8 else ldpc.QC_LLR_ONE
    for trial in range(3):
        x, y = bsc(rng, spec.n, q)
        llr = np.round(math.log((1 - q) / q) * one * (1 - 2 * y.astype(np.float64)))
        llr = llr.astype(np.int16)
        llr[rng.permutation(spec.n)[: spec.n // 10]] = 0                   # punctured
        known = rng.permutation(spec.n)[: spec.n // 20]
        llr[known] = np.where(x[known] == 1, -SAT, SAT)                    # shortened / revealed
        syn = c.syndrome(ldpc.pack_bits(x))
        syn_bits = ldpc.unpack_bits(syn, spec.m)
        iters, stall = (3, 0) if trial < 2 else (40, 4)
        try:
            pc.lib.qpp_cpu_disable(PATHS[path])
            out, ok, it, post = c.decode_qc(llr, syn, max_iter=iters, stall=stall, int8=int8)
        finally:
            pc.lib.qpp_cpu_disable(0)
        h, ok_ref, it_ref, post_ref = ref_decode_qc(spec, llr, syn_bits, iters, stall, int8)
        assert (ok, it) == (ok_ref, it_ref)
        assert np.array_equal(post.astype(np.int64), post_ref)
        assert np.array_equal(ldpc.unpack_bits(out, spec.n), h)


def test_qc_decoder_decodes_mother_code_near_capacity():
    c = ldpc.qc_code(0.8)
    rng = np.random.default_rng(5)
    q = 0.025                                   # f = 0.2 / h(0.025) = 1.18
    x, y = bsc(rng, c.n, q)
    llr = np.round(math.log((1 - q) / q) * ldpc.QC_LLR_ONE * (1 - 2 * y.astype(np.float64))).astype(np.int16)
    out, ok, it, _ = c.decode_qc(llr, c.syndrome(ldpc.pack_bits(x)), max_iter=60)
    assert ok and np.array_equal(ldpc.unpack_bits(out, c.n), x)
    assert it < 40


def test_qc_bad_inputs():
    spec = codes.random_qc_code(16, 4, 12, 5, 1)
    c = ldpc.LdpcCode(spec)
    syn = np.zeros(1, np.uint64)
    with pytest.raises(ValueError, match="llr"):
        c.decode_qc(np.zeros(spec.n, np.float32), syn)
    with pytest.raises(ValueError, match="llr"):
        c.decode_qc(np.full(spec.n, -32768, np.int16), syn)
    with pytest.raises(pc.Error, match="qpp_ldpc_decode_qc"):
        c.decode_qc(np.zeros(spec.n, np.int16), np.zeros(0, np.uint64))
    with pytest.raises(ValueError, match="quasi-cyclic"):
        ldpc.code(0.9).decode_qc(np.zeros(ldpc.code(0.9).n, np.int16), syn)
    out = pc.ffi.new("qpp_ldpc_code **")
    ptr_, col, sh = (np.array(a, np.uint32) for a in ([0, 2, 4], [0, 1, 1, 2], [0, 3, 1, 2]))

    def create(z, mb, nb, p, c_, s_):
        return pc.lib.qpp_ldpc_code_create_qc(out, z, mb, nb, pc.ffi.from_buffer("uint32_t[]", p),
                                              pc.ffi.from_buffer("uint32_t[]", c_),
                                              pc.ffi.from_buffer("uint32_t[]", s_), c_.size)
    assert create(16, 2, 3, ptr_, col, sh) == 0
    pc.lib.qpp_ldpc_code_free(out[0])
    assert create(24, 2, 3, ptr_, col, sh) == pc.lib.QPP_ERR_LENGTH          # z not a multiple of 16
    assert create(16, 2, 2, ptr_, col, sh) == pc.lib.QPP_ERR_RANGE           # column 2 >= nb
    assert create(16, 2, 3, ptr_, col, np.array([0, 16, 1, 2], np.uint32)) == pc.lib.QPP_ERR_RANGE
    assert create(16, 2, 3, ptr_, np.array([0, 0, 1, 2], np.uint32), sh) == pc.lib.QPP_ERR_VALUE  # repeated
    assert create(16, 2, 3, np.array([0, 0, 4], np.uint32), col, sh) == pc.lib.QPP_ERR_LENGTH  # empty row
    # the QC decoder inside a side needs a QC code
    with pytest.raises(pc.Error, match="qpp_ldpc_side_create"):
        side_on_table1_code_with_qc_decoder()


def side_on_table1_code_with_qc_decoder():
    cfg = pc.ffi.new("struct qpp_ldpc_config *")
    cfg.algorithm = pc.lib.QPP_LDPC_QC_BP
    cfg.scale = 0.8
    cfg.channel_llr = 3.0
    cfg.max_iter = 10
    out = pc.ffi.new("qpp_ldpc_side **")
    key = np.zeros(1, np.uint64)
    check("qpp_ldpc_side_create", pc.lib.qpp_ldpc_side_create(
        out, ldpc.code(0.9)._ptr, pc.lib.QPP_LDPC_BOB, pc.ffi.from_buffer("uint64_t[]", key), 1, 10,
        pc.ffi.NULL, 0, pc.ffi.NULL, 0, cfg))


def test_selftest_kat_registered_and_passes():
    assert pc.selftest()["ldpc-qc"] is True


# ---------------------------------------------------------------- blind rounds, warm start

@pytest.mark.parametrize("int8", [False, True])
def test_blind_side_warm_start_matches_numpy_reference(int8):
    """Bob's side with the QC decoder (int16 or int8 messages) on a small QC code, driven by
    hand: every round's status, the iterations and the corrected key equal a numpy replay in
    which a retried frame continues from its previous messages with each revealed bit added
    to its posterior (and the last attempt, with nothing left to reveal, runs without the
    stall rule)."""
    spec = codes.qc_code(0.7, z=64, nb=48)                          # n = 3072, m = 896
    code = ldpc.LdpcCode(spec)
    n, d, n_short, step, max_iter, stall = spec.n, 600, 100, 60, 25, 3
    rng = np.random.default_rng(22)
    pos = rng.permutation(n)[:d].astype(np.uint32)
    keypos = np.setdiff1d(np.arange(n), pos)
    k = n - d
    key_bits = 2 * k - 300                                          # two frames, the last one short
    q = 0.035
    a, b = bsc(rng, key_bits, q)
    punct = rng.integers(0, 2, 2 * d, dtype=np.uint8)
    punct[np.arange(2 * d) % d < n_short] = 0                       # shortened positions carry 0
    cfg = pc.ffi.new("struct qpp_ldpc_config *")
    cfg.n_short, cfg.reveal_step, cfg.max_iter, cfg.stall = n_short, step, max_iter, stall
    cfg.algorithm = pc.lib.QPP_LDPC_QC_BP8 if int8 else pc.lib.QPP_LDPC_QC_BP
    cfg.scale, cfg.channel_llr, cfg.code_tag = 0.8, 3.0, spec.tag
    L = 3 * (ldpc.QC8_LLR_ONE if int8 else ldpc.QC_LLR_ONE)        # channel LLR 3 nat in decoder units

    def side(role, bits, punct_bits):
        out = pc.ffi.new("qpp_ldpc_side **")
        key = ldpc.pack_bits(bits)
        pw = ldpc.pack_bits(punct_bits) if punct_bits is not None else np.zeros(1, np.uint64)
        check("qpp_ldpc_side_create", pc.lib.qpp_ldpc_side_create(
            out, code._ptr, role, pc.ffi.from_buffer("uint64_t[]", key), key.size, key_bits,
            pc.ffi.from_buffer("uint32_t[]", pos), d, pc.ffi.from_buffer("uint64_t[]", pw),
            pw.size if punct_bits is not None else 0, cfg))
        return pc.ffi.gc(out[0], pc.lib.qpp_ldpc_side_free)

    alice, bob = side(pc.lib.QPP_LDPC_ALICE, a, punct), side(pc.lib.QPP_LDPC_BOB, b, None)

    def send(src, dst):
        need = pc.lib.qpp_ldpc_side_pending(src)
        buf = bytearray(need)
        ln = pc.ffi.new("size_t *")
        check("next", pc.lib.qpp_ldpc_side_next(src, pc.ffi.from_buffer(buf), need, ln))
        check("feed", pc.lib.qpp_ldpc_side_feed(dst, bytes(buf), ln[0]))
        return bytes(buf)

    # numpy replay of Bob
    x_true, state, status, fixed, iters = [], [], [], [], 0
    for f in range(2):
        kl = min(k, key_bits - f * k)
        x = np.zeros(n, np.uint8)
        x[keypos[:kl]] = a[f * k: f * k + kl]
        x[pos] = punct[f * d: (f + 1) * d]
        llr = np.full(n, SAT, np.int64)
        llr[keypos[:kl]] = np.where(b[f * k: f * k + kl] == 1, -L, L)
        llr[pos[n_short:]] = 0
        x_true.append(x)
        post0 = llr.reshape(spec.n // spec.z, spec.z).copy()
        state.append((post0, np.zeros((spec.blk_col.size, spec.z), np.int64)))
        status.append(0)
        fixed.append(n_short)
    syn = [ldpc.unpack_bits(code.syndrome(ldpc.pack_bits(x)), spec.m) for x in x_true]
    decoded = [None, None]
    send(alice, bob)                                                # SYNDROME
    rounds = 0
    while True:
        for f in range(2):
            if status[f] != 0:
                continue
            post, r = state[f]
            hard, ok, it = ref_run(spec, post, r, syn[f], max_iter, 0 if fixed[f] >= d else stall,
                                   ARITH8 if int8 else ARITH16)
            iters += it
            decoded[f] = hard
            status[f] = 1 if ok else (2 if fixed[f] >= d else 0)
        msg = send(bob, alice)                                      # STATUS
        assert list(msg[24:]) == status
        if 0 not in status:
            break
        send(alice, bob)                                            # REVEAL
        rounds += 1
        for f in range(2):
            if status[f] == 0:
                new = pos[fixed[f]: min(d, fixed[f] + step)]
                post = state[f][0].reshape(-1)
                post[new] = np.clip(post[new] + np.where(x_true[f][new] == 1, -SAT, SAT), -SAT, SAT)
                fixed[f] += new.size
    assert rounds >= 2 and status == [1, 1]                         # warm path exercised, both decoded
    keyw = np.zeros((key_bits + 63) // 64, np.uint64)
    leak, ok, msgs, rnds, its = (pc.ffi.new(t) for t in ("uint64_t *", "uint32_t *", "uint32_t *",
                                                          "uint32_t *", "uint64_t *"))
    check("result", pc.lib.qpp_ldpc_side_result(bob, pc.ffi.from_buffer("uint64_t[]", keyw), keyw.size,
                                                leak, ok, msgs, rnds, its))
    assert (rnds[0], its[0]) == (rounds, iters)
    expect = np.concatenate([decoded[f][keypos[:min(k, key_bits - f * k)]] for f in range(2)])
    assert np.array_equal(expect, a)                                # and the replay is right
    assert np.array_equal(ldpc.unpack_bits(keyw, key_bits), expect)


@pytest.mark.parametrize("qber", [0.005, 0.02, 0.08, 0.11])
def test_blind_int8_over_qber_never_silent(qber):
    """ldpc-blind with the int8 decoder ("qc8"): corrected key equals Alice's or the failure
    is reported; decodes up to 8 %."""
    rng = np.random.default_rng(int(qber * 1e4) + 1)
    k = ldpc.plan(0.02, 1.1, qc=True).k
    a, b = bsc(rng, 2 * k - 100, qber)
    res = pc.reconcile_in_memory(a, b, qber, method="ldpc-blind", seed=11, private_seed=3, algorithm="qc8")
    assert res.details["frames"] >= 2
    if res.success:
        assert np.array_equal(res.corrected, a)
    if qber <= 0.08:
        assert res.success

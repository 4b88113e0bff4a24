"""LDPC syndrome reconciliation: Python face of the C code, decoder and sides.

What it is for: reconciling Alice's and Bob's sifted keys with one-way
syndrome coding, rate-adapted to the estimated QBER by puncturing and
shortening a few mother codes (Elkouss, Martinez-Mateo, Martin, "Information
reconciliation for quantum key distribution", QIC 11 (2011) 226), and its
blind variant that reveals punctured bits round by round while Bob's decoder
fails (Martinez-Mateo, Elkouss, Martin, "Blind reconciliation", QIC 12
(2012) 791). Registers two methods with ``postproc_c.reconcile``:

* ``"ldpc"``: rate chosen for a target efficiency ``f`` at the estimated
  QBER, one syndrome message and one status reply (reveal_step 0);
* ``"ldpc-blind"``: starts at ``f_start`` (by default just below where most
  frames decode at the estimated QBER, ``blind_f_start``; the code is the one
  chosen for a start at 1.03, so a later start only shortens more) and reveals
  ``reveal_f`` * k * h(q) punctured bits per failed round (by default
  ``blind_reveal_f``: 0.01 at QBER 1-2 %, 0.005-0.0075 at 5-8 %) until decoded or
  nothing is left (all adaptation bits shortened). Every failed attempt costs
  decoder iterations, so the later start is what cut iterations per frame
  from ~80 to ~40 at QBER 1-2 %; Bob also stops an attempt whose count of
  unsatisfied checks has stopped falling (``BLIND_REL_WINDOW``), which with
  the start and step retuned for it cut them by a further 25-45 % (35-42 per
  frame at QBER 1-8 %).

What it must not do: verify keys (a hash check in the engine does that;
``success`` only means every frame's syndrome matched), touch sockets, or log
key material. Bob's "frame decoded / retry" answers are not counted as
leakage (as in the blind-reconciliation paper); every syndrome bit and every
revealed bit is.

Messages (layout in ``postproc_c/src/ldpc_side.c``): a 24-byte header
(magic ``QLDP``, version 1, type, sender sequence number, code tag, count,
payload length), then SYNDROME (Alice: parameters + every frame's syndrome),
STATUS (Bob: one byte per frame: 0 retry, 1 decoded, 2 failed) and REVEAL
(Alice: the next punctured values of the frames still retrying). A block of
any length is cut into frames of k = n - d key bits, all in flight together,
so a block costs 2 messages one-way, 2 + 2 * rounds blind.

Codes and decoders (``algorithm=``): ``"qc8"`` (default) and ``"qc"`` use the quasi-
cyclic mother codes of ``codes.qc_code`` (circulants of z = 256 .. 2048,
frames of n = 2^16 .. 2^19 bits: ``qc_frame_bits`` takes the longest frame
that cuts the block into >= 4 frames without shortening more than 0.12 n, n
= 294,912 for blind on a 2^20-bit block (``qkd run``'s and the example node
file's; one-way takes powers of two, 2^17 there), because longer frames
decode nearer the code's threshold; both sides derive it from the block
length, and the SYNDROME message carries n and the code tag) and the
layered sum-product of ``src/ldpc_qc.c`` (``"qc8"``: int8 messages and check
arithmetic, int16 posteriors; ``"qc"``: int16 throughout), which runs the z
checks of a base row as one layer in SIMD lanes and, in blind mode, continues each
failed frame from its previous round's messages (warm start) instead of
decoding it again from scratch. ``"bp"`` and ``"minsum"`` keep the earlier
family (Table I codes of n = 2^14, float decoders); both sides must use the
same (the code tag in every message says so). Measured f, FER and
throughput: ``bench/test_bench_ldpc.py``.

Why this shape: the decoder and the message state machine are C objects
(``qpp_ldpc_code``, ``qpp_ldpc_side``) owned here through ``ffi.gc``; Python
only chooses parameters (code, shortened/punctured split, positions) and
packs bits with numpy, so no per-bit Python loop runs.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np

from . import codes
from ._binding import check, ffi, lib, ptr, words_for
from .cascade import _words_in
from .reconcile import ReconcileResult, register
from .selftest import kat

#: Fraction of each frame used for rate adaptation (d = delta * n), Elkouss 2011 Sec. 3.
DELTA = 0.1
#: "qc": int16 lane-parallel sum-product on the QC codes (n = 2^16..2^19), warm blind rounds;
#: "qc8" (default): the same decoder with int8 messages and check arithmetic (twice the lanes per
#: vector; blind f +0.001..0.004 against "qc", 1.4x its Mb/s: src/ldpc_qc.c's header comment);
#: "bp", "minsum": float decoders on the Table I codes of n = 2^14 (the earlier family).
ALGORITHMS = {"minsum": lib.QPP_LDPC_MINSUM, "bp": lib.QPP_LDPC_BP, "qc": lib.QPP_LDPC_QC_BP,
              "qc8": lib.QPP_LDPC_QC_BP8}
#: Decoder -> code family; the QC family is the default of both methods.
DEFAULT_ALGORITHM = "qc8"


#: QC frame lengths ``ldpc``/``ldpc-blind`` may use: n = 256 z, z a multiple of 64 (the word
#: rotation of the syndrome kernel) from 256 to 2048, so n = 2^16 .. 2^19 in steps of 2^14.
QC_FRAME_BITS = tuple(codes.QC_NB * z for z in range(codes.QC_Z, 2049, 64))
#: A block is cut into frames of k = n - d key bits, spread evenly, and blind needs d of about
#: 0.11 n at QBER 1-8 % (room to reveal up to f_max, see ``plan``). Frame choice: the longest n
#: whose even spread keeps d <= QC_FIT_DELTA n with at least QC_MIN_FRAMES frames.
QC_ROOM_DELTA = 0.11
QC_FIT_DELTA = 0.12
QC_MIN_FRAMES = 4


def qc_frame_bits(key_bits: int, blind: bool = True) -> int:
    """Frame length of the QC family for a block of ``key_bits``: the longest n of QC_FRAME_BITS
    for which F = ceil(key_bits / (0.89 n)) >= 4 frames leave d = n - key_bits / F <= 0.12 n
    (when none does, the n with the least d / n; 2^16 for blocks under ~233,000 bits). For the
    2^20-bit block (``qkd run``'s and the example node file's): n = 294,912 (z = 1152), 4 frames,
    d = 0.111 n; one-way (``blind=False``) takes the power of two, 2^17.

    Why: longer frames decode nearer the code's threshold (Table I's rate-0.85 code unpunctured
    fails 10/16 frames at f = 1.10 with n = 2^16, 8/16 with 2^17, 3/16 with 2^18; the designed
    0.85 that replaced it 8/16, 3/16, 0/16: ``python -m bench.ldpc_frames --code-fer 0.85``),
    but a frame length that does not divide the block
    must widen d, and shortening more costs more than the length gains. Measured (Table I 0.85), blind,
    QBER 2 %, 2^20-bit blocks (``python -m bench.ldpc_frames --frame-bits N``; frames, d/n, f):
    2^16: 19, 0.158, 1.129; 2^17: 9, 0.111, 1.115; 245,760: 5, 0.147, 1.117; 2^18: 5, 0.200,
    1.133; 294,912: 4, 0.111, 1.108. 2^22-bit blocks: 2^18 (17 frames, 0.111) 1.114,
    2^19 (9, 0.111) 1.110.

    One-way (``blind=False``): the longest power of two n <= 2^19 with 8 n <= key_bits, else
    2^16. One-way widens d up to MAX_DELTA n to shorten instead of puncture (``plan``), so the
    fit above does not hold: 5 frames of 294,912 for a 2^20-bit block left the last one short
    and leaked f = 1.35 at a target of 1.2 (measured), while 2^16 and 2^17 divide such a block
    exactly at d = 0.2 n (f 1.200; frames lost at QBER 1 / 2 / 5 / 8 %: 2^16 1/72, 1/76, 0/76,
    0/80; 2^17 0 of 72-80 each)."""
    if not blind:
        fit = [n for n in QC_FRAME_BITS if n & (n - 1) == 0 and 8 * n <= key_bits]
        return max(fit) if fit else QC_FRAME_BITS[0]
    fits, spare = [], []
    for n in QC_FRAME_BITS:
        frames = -(-int(key_bits) // int(n * (1 - QC_ROOM_DELTA)))
        if frames < QC_MIN_FRAMES:
            break
        delta = (n - -(-int(key_bits) // frames)) / n
        (fits if delta <= QC_FIT_DELTA else spare).append((delta, -n))
    if fits:
        return max(-m for _, m in fits)
    return -min(spare)[1] if spare else QC_FRAME_BITS[0]   # else the least shortening


MIN_QBER = 1e-3
#: Blind: the chosen code must leave punctured bits worth this much efficiency to reveal,
#: and at least ROOM_MIN_BITS of them (measured: 372 left at QBER 2 % failed 2 frames in 12).
#: 0.10 since session 6 (was 0.12): with 0.12 QBER 6.5 % fell to the 0.60 code punctured (f
#: 1.114) although the 0.65 code, shortened, has f_max 1.135 and gives 1.086 (72 frames, none
#: lost); no other point of the grid in ``BLIND_F_START`` changes code.
ROOM_F = 0.10
ROOM_MIN_BITS = 400
#: Blind: least efficiency a frame can reach with every adaptation bit revealed (before the
#: 3-sigma allowance for its realized error count, see ``plan``), and the largest d / n.
F_MAX_BASE = 1.12
MAX_DELTA = 0.2
#: Blind: least f_max (= m / (k h)) accepted to keep a block's frame count instead of widening d
#: (``LdpcSide``; the rate-0.5 code at QBER 11 % reaches 1.125 with 4 frames of 294,912).
F_MAX_FLOOR = 1.10
#: Blind: QC mother codes the plan never picks. Table I's 0.90 (f* 1.15) sits next to the
#: designed 0.91 (f* 1.084); picked where the 0.91 has no room (QBER 1.15-1.3 %) it leaked f
#: 1.146 and lost 1 frame of 72 at 1.25 % (the 0.88 code instead: see BLIND_F_START).
BLIND_SKIP_RATES = (0.9,)
#: QC decoder: int16 LLR units per nat.
QC_LLR_ONE = lib.QPP_LDPC_QC_LLR_ONE
QC8_LLR_ONE = lib.QPP_LDPC_QC8_LLR_ONE
HEADER_BYTES = lib.QPP_LDPC_MSG_HEADER
SYNDROME_PREFIX_BYTES = lib.QPP_LDPC_SYN_PREFIX


def binary_entropy(p: float) -> float:
    """h(p) = -p log2 p - (1-p) log2 (1-p)."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """uint8 0/1 array -> packed uint64 words, LSB first."""
    b = np.packbits(bits.astype(np.uint8, copy=False), bitorder="little")
    out = np.zeros(words_for(bits.size) * 8, np.uint8)
    out[: b.size] = b
    return out.view(np.uint64)


def unpack_bits(words: np.ndarray, n: int) -> np.ndarray:
    """packed uint64 words -> uint8 0/1 array of length n."""
    return np.unpackbits(words.view(np.uint8), bitorder="little")[:n].copy()


class LdpcCode:
    """A parity-check matrix in the C core (``qpp_ldpc_code``), freed with the object."""

    def __init__(self, spec: codes.CodeSpec) -> None:
        self.spec = spec
        self.n, self.m, self.rate, self.tag = spec.n, spec.m, spec.rate, spec.tag
        self.z = spec.z
        self.var_degrees = np.bincount(spec.col_idx, minlength=spec.n)
        self.var_degrees.flags.writeable = False
        out = ffi.new("qpp_ldpc_code **")
        if spec.z:
            mb = spec.blk_ptr.size - 1
            check("qpp_ldpc_code_create_qc", lib.qpp_ldpc_code_create_qc(
                out, spec.z, mb, spec.n // spec.z, ptr("uint32_t *", spec.blk_ptr),
                ptr("uint32_t *", spec.blk_col), ptr("uint32_t *", spec.blk_shift), spec.blk_col.size))
        else:
            check("qpp_ldpc_code_create", lib.qpp_ldpc_code_create(
                out, spec.n, spec.m, ptr("uint32_t *", spec.row_ptr), ptr("uint32_t *", spec.col_idx),
                spec.col_idx.size))
        self._ptr = ffi.gc(out[0], lib.qpp_ldpc_code_free)

    def syndrome(self, x: np.ndarray) -> np.ndarray:
        """H x mod 2 of a packed n-bit word (uint64) -> packed m-bit syndrome."""
        if not isinstance(x, np.ndarray) or x.dtype != np.uint64 or x.ndim != 1 or x.size < words_for(self.n):
            raise ValueError(f"x: expected a 1-d uint64 array of >= {words_for(self.n)} words")
        x = np.ascontiguousarray(x)
        syn = np.zeros(words_for(self.m), np.uint64)
        check("qpp_ldpc_syndrome", lib.qpp_ldpc_syndrome(
            self._ptr, ptr("uint64_t *", x), x.size, ptr("uint64_t *", syn), syn.size))
        return syn

    def decode(self, llr: np.ndarray, syndrome: np.ndarray, *, max_iter: int = 60, algorithm: str = "bp",
               scale: float = 0.8) -> tuple[np.ndarray, bool, int, np.ndarray]:
        """Decode channel LLRs (float32, n) against a packed syndrome.

        Returns (packed hard decision, syndrome matched, iterations, posterior LLRs)."""
        if not isinstance(llr, np.ndarray) or llr.dtype != np.float32 or llr.shape != (self.n,):
            raise ValueError(f"llr: expected a float32 array of shape ({self.n},)")
        if not isinstance(syndrome, np.ndarray) or syndrome.dtype != np.uint64 or syndrome.ndim != 1:
            raise ValueError("syndrome: expected a 1-d uint64 array")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm: expected one of {sorted(ALGORITHMS)}, got {algorithm!r}")
        llr = np.ascontiguousarray(llr)
        syndrome = np.ascontiguousarray(syndrome)
        out = np.zeros(words_for(self.n), np.uint64)
        post = np.zeros(self.n, np.float32)
        it = ffi.new("uint32_t *")
        ok = ffi.new("int *")
        check("qpp_ldpc_decode", lib.qpp_ldpc_decode(
            self._ptr, ptr("float *", llr), ptr("uint64_t *", syndrome), syndrome.size, int(max_iter),
            ALGORITHMS[algorithm], float(scale), ptr("uint64_t *", out), out.size, ptr("float *", post),
            it, ok))
        return out, bool(ok[0]), int(it[0]), post

    def decode_qc(self, llr: np.ndarray, syndrome: np.ndarray, *, max_iter: int = 60,
                  stall: int = 0, int8: bool = False) -> tuple[np.ndarray, bool, int, np.ndarray]:
        """Layered sum-product on a QC code: ``qpp_ldpc_decode_qc`` (int16 messages, LLRs in
        units of 1/QC_LLR_ONE nat) or with ``int8`` ``qpp_ldpc_decode_qc8`` (int8 messages and
        check arithmetic, LLRs in units of 1/QC8_LLR_ONE nat). llr: int16 (n,), |llr| <= 32767
        (the bound: a known bit). Returns (packed hard decision, syndrome matched, iterations,
        int16 posterior LLRs in the same unit)."""
        if not self.z:
            raise ValueError("decode_qc: the code is not quasi-cyclic")
        if not isinstance(llr, np.ndarray) or llr.dtype != np.int16 or llr.shape != (self.n,):
            raise ValueError(f"llr: expected an int16 array of shape ({self.n},)")
        if llr.min(initial=0) < -32767:
            raise ValueError("llr: values must be >= -32767")
        if not isinstance(syndrome, np.ndarray) or syndrome.dtype != np.uint64 or syndrome.ndim != 1:
            raise ValueError("syndrome: expected a 1-d uint64 array")
        llr = np.ascontiguousarray(llr)
        syndrome = np.ascontiguousarray(syndrome)
        out = np.zeros(words_for(self.n), np.uint64)
        post = np.zeros(self.n, np.int16)
        it = ffi.new("uint32_t *")
        ok = ffi.new("int *")
        fn, name = ((lib.qpp_ldpc_decode_qc8, "qpp_ldpc_decode_qc8") if int8 else
                    (lib.qpp_ldpc_decode_qc, "qpp_ldpc_decode_qc"))
        check(name, fn(self._ptr, ptr("int16_t *", llr), ptr("uint64_t *", syndrome), syndrome.size,
                       int(max_iter), int(stall), ptr("uint64_t *", out), out.size, ptr("int16_t *", post),
                       it, ok))
        return out, bool(ok[0]), int(it[0]), post

    def decode_batch(self, llr: np.ndarray, syndromes: np.ndarray, *, max_iter: int = 60,
                     stall: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sum-product decode of up to 8 frames at once (one per SIMD lane).

        llr: float32 (lanes, n); syndromes: uint64 (lanes, words(m)). Returns packed hard
        decisions (lanes, words(n)), matched (lanes,) bool and iterations (lanes,); each row
        equals ``decode(..., algorithm="bp")`` of that frame alone."""
        mw, nw = words_for(self.m), words_for(self.n)
        if (not isinstance(llr, np.ndarray) or llr.dtype != np.float32 or llr.ndim != 2
                or llr.shape[1] != self.n or not 1 <= llr.shape[0] <= 8):
            raise ValueError(f"llr: expected a float32 array of shape (1..8, {self.n})")
        lanes = llr.shape[0]
        if (not isinstance(syndromes, np.ndarray) or syndromes.dtype != np.uint64
                or syndromes.shape != (lanes, mw)):
            raise ValueError(f"syndromes: expected a uint64 array of shape ({lanes}, {mw})")
        llr = np.ascontiguousarray(llr)
        syndromes = np.ascontiguousarray(syndromes)
        out = np.zeros((lanes, nw), np.uint64)
        its = np.zeros(lanes, np.uint32)
        ok = np.zeros(lanes, np.intc)
        check("qpp_ldpc_decode_batch", lib.qpp_ldpc_decode_batch(
            self._ptr, lanes, ptr("float *", llr), ptr("uint64_t *", syndromes), syndromes.size,
            int(max_iter), int(stall), ptr("uint64_t *", out), out.size, ptr("uint32_t *", its),
            ptr("int *", ok)))
        return out, ok.astype(bool), its


@cache
def code(rate: float, n: int = codes.FRAME_BITS) -> LdpcCode:
    """The C object of mother code ``rate`` (built once per process)."""
    return LdpcCode(codes.mother_code(rate, n))


@cache
def qc_code(rate: float, n: int = codes.QC_Z * codes.QC_NB) -> LdpcCode:
    """The C object of QC mother code ``rate`` of frame length n (z = n / 256; default 2^16),
    built once per process."""
    return LdpcCode(codes.qc_code(rate, n // codes.QC_NB))


@dataclass(frozen=True)
class Plan:
    """Rate-adaptation choice for one block: mother code and its d positions' split."""

    rate: float            # mother code design rate (Table I)
    n: int
    m: int                 # syndrome bits per frame; the exact mother rate is R0 = 1 - m/n
    d: int                 # adaptation positions per frame
    n_short: int           # shortened from the start
    reveal_step: int       # punctured bits revealed per failed round (0: one-way)

    @property
    def k(self) -> int:
        return self.n - self.d

    def effective_rate(self, n_short: int | None = None) -> float:
        """R = (R0 - sigma) / (1 - pi - sigma), Elkouss 2011 Eq. (3)."""
        s = self.n_short if n_short is None else n_short
        p = self.d - s
        r0 = 1 - self.m / self.n
        return (r0 - s / self.n) / (1 - p / self.n - s / self.n)


def plan(qber: float, f: float, *, reveal_f: float = 0.0, n: int | None = None,
         delta: float = DELTA, mother_rate: float | None = None, qc: bool = False,
         room_f: float = ROOM_F, d: int | None = None, f_choose: float | None = None) -> Plan:
    """Pick a mother code and the shortened count so the first attempt runs at
    efficiency ``f`` (R = 1 - f h(q)); ``reveal_f`` > 0 sizes blind reveal steps
    as that efficiency increment (step = reveal_f * k * h(q) bits).

    Blind with ``f_choose``: the code and d are those chosen for a start at f_choose,
    only the shortened count follows ``f`` (so a later start keeps the code that suits
    the QBER instead of falling to a lower-rate one that has room above f).

    With d = delta n positions, s shortened and p = d - s punctured:
    R = (R0 n - s) / (n - d), so s = R0 n - R (n - d) (Elkouss 2011 Eq. (3)).
    Among the codes that reach R (0 <= s <= d): blind keeps the highest-rate
    code that leaves punctured bits worth room_f (ROOM_F, 0.10) in f to reveal (puncturing hurts
    the decoder more than shortening, measured in bench/); one-way keeps the
    code closest to its own rate (least modification)."""
    if not 0.0 < qber < 0.5:
        raise ValueError(f"qber: expected 0 < qber < 0.5, got {qber}")
    if not 0.5 <= f <= 3.0:
        raise ValueError(f"f: expected 0.5 <= f <= 3, got {f}")
    if f_choose is not None and reveal_f > 0 and mother_rate is None:
        base = plan(qber, f_choose, reveal_f=reveal_f, n=n, delta=delta, qc=qc, room_f=room_f, d=d)
        try:
            return plan(qber, f, reveal_f=reveal_f, n=n, delta=delta, qc=qc, room_f=room_f, d=base.d,
                        mother_rate=base.rate)
        except ValueError:                      # f beyond what that code reaches with d positions
            return base
    h = binary_entropy(qber)
    rates = codes.QC_RATES if qc else codes.RATES
    if qc and reveal_f > 0 and mother_rate is None:
        rates = tuple(r for r in rates if r not in BLIND_SKIP_RATES)
    n = codes.code_dims(rates[0], n, qc=qc)[0]
    d0 = int(round(delta * n)) if d is None else int(d)
    if not 0 <= d0 < n:
        raise ValueError(f"d: expected 0 <= d < n = {n}, got {d0}")
    target = 1.0 - f * h
    # Blind: all reveals done, a frame has leaked m bits, f_max = m / (k h). A frame whose
    # realized error count sits 3 sigma above k q needs that much more (relative sigma of h about
    # 0.8 / sqrt(k q)); below it such frames fail for lack of room, not of decoding (measured:
    # 1 frame in 24 at QBER 2 % with f_max = 1.17). So blind widens d until f_max reaches
    # F_MAX_BASE (1 + 2.4 / sqrt(k q)), at most MAX_DELTA n.
    f_max = F_MAX_BASE * (1 + 2.4 / math.sqrt((n - d0) * qber))
    feasible = []                                   # (R0, m, s, d) that reach the target rate
    for r0 in rates if mother_rate is None else (round(float(mother_rate), 2),):
        m = codes.code_dims(r0, n, qc=qc)[1]
        dr = d0
        if reveal_f > 0 and d is None:
            dr = min(max(d0, n - int(m / (f_max * h))), int(MAX_DELTA * n))
        elif d is None and target < 1:
            # one-way: widen d (up to MAX_DELTA n) until the code reaches R by shortening alone,
            # R = (n - m - s) / (n - s) with s = d: a higher-rate code shortened decodes better
            # than a lower-rate one punctured (measured: FER 3/24 at QBER 2 %, f = 1.2, on the
            # 0.8 code with 3029 punctured bits)
            dr = min(max(d0, int(math.ceil((n - m - target * n) / (1 - target)))), int(MAX_DELTA * n))
        sr = int(math.ceil((n - m) - target * (n - dr)))  # R0 n = n - m exactly; ceil: never above
        if 0 <= sr <= dr:                           # else the code cannot reach R with dr positions
            feasible.append((r0, m, sr, dr))
    if not feasible:
        if mother_rate is not None:
            raise ValueError(f"mother_rate: code {mother_rate} cannot reach rate {target:.3f} "
                             f"(qber {qber}, f {f})")
        # target outside every code's range: the lowest rate fully shortened (QBER too high),
        # or the highest rate fully punctured (QBER very low)
        r0, sh, dd = (rates[0], d0, d0) if target < 0.5 else (rates[-1], 0, d0)
    elif reveal_f > 0:
        # Blind: puncturing costs decoding performance, so take the highest-rate code (least
        # punctured) that still leaves room to reveal up to f + room_f before running out.
        room = [c for c in feasible if c[3] - c[2] >= max(room_f * (n - c[3]) * h, ROOM_MIN_BITS)]
        r0, _, sh, dd = max(room) if room else min(feasible, key=lambda c: c[2])
    else:
        # One-way: the fewest punctured positions (p = d - s; then the highest rate).
        r0, _, sh, dd = min(feasible, key=lambda c: (c[3] - c[2], -c[0]))
    k = n - dd
    step = int(math.ceil(reveal_f * k * h)) if reveal_f > 0 else 0
    return Plan(r0, n, codes.code_dims(r0, n, qc=qc)[1], dd, sh, step)


@lru_cache(maxsize=16)
def _positions(mixed: int, c: LdpcCode, d: int) -> np.ndarray:
    """The positions of ``positions`` for one permutation seed (both sides of an in-process run,
    and repeated blocks with one seed, share them; read-only)."""
    free = c.var_degrees != 2
    if np.count_nonzero(free) < d:
        raise ValueError(f"code {c.rate}: only {np.count_nonzero(free)} variables of degree != 2 "
                         f"for d = {d}")
    pos = codes.permutation_head(mixed, c.n, d, free).astype(np.uint32)
    pos.flags.writeable = False
    return pos


def positions(c: LdpcCode, p: Plan, seed: int) -> np.ndarray:
    """The d adaptation positions of every frame, public, from the shared seed:
    the first n_short are shortened, the rest punctured in reveal order.

    Degree-2 variables are never used: they form the zig-zag chains, and a
    chain stretch whose other members are punctured is a codeword of a few
    key bits only, which the decoder then converges to (measured: silent
    3-bit mismatches at QBER 2 % before this rule).

    Uniformly random (among degree != 2) is also the best choice measured
    for efficiency, blind, QBER 2 %, same keys (``bench/ldpc_frames.py`` with
    ``positions`` replaced): n = 2^16, f 1.134 random against 1.239 with the
    highest-degree variables shortened, 1.192 lowest-degree shortened, 1.180
    highest-degree punctured, 1.169 degree-2 shortened first; n = 2^17,
    1.115 against 1.142 (shortened only from degrees 3-9), 1.127 (from
    degree >= 4) and 1.125 (shortened from every degree, degree 2
    included). Untainted puncturing (no check with two punctured neighbours,
    Elkouss et al. 2012) moved f by -0.007 at 2 % and +0.006 at 1 %: noise."""
    mixed = (seed & 0xFFFFFFFFFFFFFFFF) * 0x9E3779B97F4A7C15 + c.tag * 0x100000001B3 + p.d
    mixed &= 0xFFFFFFFFFFFFFFFF
    return _positions(mixed, c, p.d)


def _os_words(n: int) -> np.ndarray:
    return np.frombuffer(bytearray(secrets.token_bytes(8 * n)), dtype=np.uint64)


def _punctured_values(count: int, private_words: Callable[[int], np.ndarray] | None,
                      private_seed: int | None) -> np.ndarray:
    """Alice's values of the ``count`` punctured positions of a block, packed (unused high bits
    of the last word zero).

    The leakage m - p (Elkouss 2011 Eq. 4; see src/ldpc_side.c) credits every punctured bit
    as private, uniform randomness that the syndrome spends its bits on; only a source Eve
    cannot predict keeps that true. So the values come straight from ``private_words(n)`` (n
    uniform uint64 words: in the link, Alice's node passes its RandomSource, the one her
    basis and bit choices trust) or, when none is given, from the OS generator
    (``secrets``). They were once expanded by a PRNG from a 128-bit seed, which holds an
    unbounded Eve to 128 bits of the ~11k per 2^20-bit blind block that were credited (found
    by a security audit, tests/test_secaudit_leak.py). ``private_seed`` (tests only: a run repeats exactly)
    still uses a PRNG and is therefore not private."""
    nw = words_for(count)
    if private_seed is not None:
        rng = np.random.default_rng(private_seed)
        return pack_bits(rng.integers(0, 2, count, dtype=np.uint8))
    words = (private_words or _os_words)(nw)       # wiped by the caller once C has copied it
    if not (isinstance(words, np.ndarray) and words.dtype == np.uint64 and words.shape == (nw,)
            and words.flags.writeable and words.flags.c_contiguous):
        raise ValueError(f"private_words: expected a writable array of {nw} uint64 words, got "
                         f"{getattr(words, 'dtype', type(words).__name__)} {getattr(words, 'shape', '')}")
    if count % 64:
        words[-1] &= np.uint64((1 << (count % 64)) - 1)
    return words


class LdpcSide:
    """One side of LDPC reconciliation over bytes (see ``postproc_c.reconcile.Side``).

    ``private_words`` (Alice): where her punctured values come from (``_punctured_values``);
    the link passes its node's RandomSource.random_words.
    """

    def __init__(self, role: str, bits: np.ndarray, qber: float, *, seed: int = 0, f: float = 1.1,
                 reveal_f: float = 0.0, max_iter: int = 60, stall: int = 0,
                 algorithm: str = DEFAULT_ALGORITHM, scale: float = 0.8,
                 qber_decoder: float | None = None, private_seed: int | None = None,
                 mother_rate: float | None = None, delta: float = DELTA, room_f: float = ROOM_F,
                 f_choose: float | None = None, frame_bits: int | None = None,
                 method: str = "ldpc", first_iter: int = 0, retry_iter: int = 0, rel_window: int = 0,
                 rel_permille: int = 0, n_bits: int | None = None,
                 private_words: Callable[[int], np.ndarray] | None = None) -> None:
        if role not in ("alice", "bob"):
            raise ValueError(f"role: expected 'alice' or 'bob', got {role!r}")
        # n_bits given (link.node): ``bits`` is the key already packed, words_for(n_bits) uint64
        # words handed to C as they are (no unpacked copy, no pack); result(packed=True) gives words
        packed = n_bits is not None
        if packed:
            bits = _words_in(bits, n_bits)
            key_bits = int(n_bits)
        else:
            if not isinstance(bits, np.ndarray) or bits.dtype != np.uint8 or bits.ndim != 1:
                raise ValueError("bits: expected a 1-d uint8 array of 0/1")
            if bits.size == 0:
                raise ValueError("bits: empty key")
            if int(bits.max()) > 1:
                raise ValueError("bits: values must be 0 or 1")
            key_bits = int(bits.size)
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm: expected one of {sorted(ALGORITHMS)}, got {algorithm!r}")
        if not 0.0 <= qber < 0.5:
            raise ValueError(f"qber: expected 0 <= qber < 0.5, got {qber}")
        qber = max(float(qber), MIN_QBER)   # a clean estimate still needs a finite channel LLR
        if reveal_f < 0:
            raise ValueError(f"reveal_f: must be >= 0, got {reveal_f}")
        self.role, self.method, self.qber = role, method, float(qber)
        if not 0.0 <= delta <= 0.5:
            raise ValueError(f"delta: expected 0 <= delta <= 0.5, got {delta}")
        qc = algorithm in ("qc", "qc8")
        if frame_bits is None:
            frame_bits = qc_frame_bits(key_bits, blind=reveal_f > 0) if qc else codes.FRAME_BITS
        allowed = QC_FRAME_BITS if qc else (codes.FRAME_BITS,)
        if frame_bits not in allowed:
            raise ValueError(f"frame_bits: expected one of {allowed} for algorithm {algorithm!r}, "
                             f"got {frame_bits}")
        self.plan = plan(qber, f, reveal_f=reveal_f, mother_rate=mother_rate, delta=delta, qc=qc,
                         room_f=room_f, f_choose=f_choose, n=frame_bits)
        # Spread the block evenly over its frames: a short last frame would still leak a whole
        # syndrome (its padding is shortened, not removed), so the spare positions become
        # adaptation positions of every frame instead (more room to reveal, same frames).
        nframes = -(-key_bits // self.plan.k)
        if reveal_f > 0:
            # Blind: the f_max rule of ``plan`` widens d past delta n where the code has little
            # room (QBER 11 % on the rate-0.5 code: d 0.118 n), and when that costs the block an
            # extra frame (5 of 0.2 n shortened instead of 4), every frame leaks a whole syndrome
            # for less key: f 1.226 at 11 %. Keep the frame count of d = delta n when its even
            # split still lets a frame reach F_MAX_FLOOR (measured 11 %: f 1.080, none lost).
            fewer = -(-key_bits // (self.plan.n - int(round(delta * self.plan.n))))
            if fewer < nframes:
                d_few = self.plan.n + key_bits // -fewer
                try:
                    alt = plan(qber, f, reveal_f=reveal_f, mother_rate=mother_rate, qc=qc, room_f=room_f,
                               d=d_few, f_choose=f_choose, n=frame_bits)
                except ValueError:
                    alt = None
                if alt is not None and alt.m >= F_MAX_FLOOR * alt.k * binary_entropy(qber):
                    self.plan, nframes = alt, fewer
        d_even = min(self.plan.n + key_bits // -nframes, int(MAX_DELTA * self.plan.n))
        if d_even > self.plan.d:
            self.plan = plan(qber, f, reveal_f=reveal_f, mother_rate=mother_rate, qc=qc, room_f=room_f,
                             d=d_even, f_choose=f_choose, n=frame_bits)
        self.code = qc_code(self.plan.rate, frame_bits) if qc else code(self.plan.rate)
        self.key_bits = key_bits
        pos = positions(self.code, self.plan, seed)
        frames = -(-self.key_bits // self.plan.k)
        key = bits if packed else pack_bits(bits)
        if role == "alice":
            punct = _punctured_values(frames * self.plan.d, private_words, private_seed)
        else:
            punct = np.zeros(0, np.uint64)
        qd = self.qber if qber_decoder is None else float(qber_decoder)
        cfg = ffi.new("struct qpp_ldpc_config *")
        cfg.n_short = self.plan.n_short
        cfg.reveal_step = self.plan.reveal_step
        cfg.max_iter = int(max_iter)
        cfg.stall = int(stall)
        cfg.algorithm = ALGORITHMS[algorithm]
        cfg.scale = float(scale)
        cfg.channel_llr = math.log((1 - qd) / qd)
        cfg.code_tag = self.code.tag
        cfg.first_iter = int(first_iter)
        cfg.retry_iter = int(retry_iter)
        cfg.rel_window = int(rel_window)
        cfg.rel_permille = int(rel_permille)
        out = ffi.new("qpp_ldpc_side **")
        check("qpp_ldpc_side_create", lib.qpp_ldpc_side_create(
            out, self.code._ptr, lib.QPP_LDPC_ALICE if role == "alice" else lib.QPP_LDPC_BOB,
            ptr("uint64_t *", key), key.size, self.key_bits, ptr("uint32_t *", pos), pos.size,
            ptr("uint64_t *", punct), punct.size, cfg))
        if not packed:
            key.fill(0)                 # our packed copy (the caller's words are its own)
        punct.fill(0)
        self._ptr = ffi.gc(out[0], lib.qpp_ldpc_side_free)
        self.frames = int(lib.qpp_ldpc_side_frames(self._ptr))

    def close(self) -> None:
        """Free the C object now (``qpp_ldpc_side_free`` wipes its key buffers); unusable afterwards."""
        if self._ptr is not None:
            ffi.release(self._ptr)
            self._ptr = None

    @property
    def done(self) -> bool:
        return bool(lib.qpp_ldpc_side_done(self._ptr))

    def next_message(self) -> bytes | None:
        need = lib.qpp_ldpc_side_pending(self._ptr)
        if need == 0:
            return None
        buf = bytearray(need)
        ln = ffi.new("size_t *")
        check("qpp_ldpc_side_next", lib.qpp_ldpc_side_next(self._ptr, ffi.from_buffer(buf), need, ln))
        return bytes(buf[: ln[0]])

    def feed(self, message: bytes) -> None:
        if not isinstance(message, bytes | bytearray | memoryview):
            raise TypeError(f"message: expected bytes, got {type(message).__name__}")
        data = bytes(message)
        check("qpp_ldpc_side_feed", lib.qpp_ldpc_side_feed(self._ptr, data if data else b"\0", len(data)))

    def frame_status(self) -> np.ndarray:
        """Per-frame status (0 retry, 1 decoded, 2 failed) as this side knows it."""
        st = ffi.new("int *")
        left = ffi.new("uint32_t *")
        out = np.zeros(self.frames, np.uint8)
        for f in range(self.frames):   # one C call per frame (frames, not bits)
            check("qpp_ldpc_side_frame_info", lib.qpp_ldpc_side_frame_info(self._ptr, f, st, left))
            out[f] = st[0]
        return out

    def result(self, packed: bool = False) -> ReconcileResult:
        """The side's outcome; ``packed``: ``corrected`` as words_for(n) uint64 words (unused high
        bits zero) instead of uint8 0/1."""
        key = np.zeros(words_for(self.key_bits), np.uint64)
        leak = ffi.new("uint64_t *")
        ok = ffi.new("uint32_t *")
        msgs = ffi.new("uint32_t *")
        rounds = ffi.new("uint32_t *")
        iters = ffi.new("uint64_t *")
        check("qpp_ldpc_side_result", lib.qpp_ldpc_side_result(
            self._ptr, ptr("uint64_t *", key), key.size, leak, ok, msgs, rounds, iters))
        if packed:
            corrected = key
        else:
            corrected = unpack_bits(key, self.key_bits)
            key.fill(0)
        h = binary_entropy(self.qber)
        return ReconcileResult(
            corrected=corrected, leaked_bits=int(leak[0]), messages=int(msgs[0]),
            success=int(ok[0]) == self.frames, method=self.method,
            details={"frames": self.frames, "frames_ok": int(ok[0]), "rounds": int(rounds[0]),
                     "iterations": int(iters[0]), "mother_rate": self.plan.rate, "n": self.plan.n,
                     "d": self.plan.d, "n_short": self.plan.n_short, "reveal_step": self.plan.reveal_step,
                     "efficiency": (int(leak[0]) / (self.key_bits * h)) if h > 0 else float("inf")})


#: One-way LDPC has no second attempt, so its rate must leave margin for the code's
#: finite-length loss. Measured 2026-11-24 (``reconcile_in_memory``, errors placed at exactly the
#: stated QBER): f = 1.1 (the default then) failed at 0.3, 1 and 2 % and aborted every block of a
#: 25 km link (QBER 0.28 %) run with ``reconciliation = "ldpc"``. 2^20-bit blocks, 3 per point:
#: f = 1.2 decoded every block at 1, 2, 5 and 8 % but failed 2 of 3 at 0.8 % and all at 0.3 %
#: (as did f = 1.3): the punctured high-rate end of the family does not decode. 2^18-bit blocks
#: (2^16-bit frames), 50 frames per point: f = 1.2 lost 3 frames at 1 %, none at 2 and 5 %;
#: f = 1.25 lost none at 1, 2 or 5 %. So one-way runs at f = 1.25 with the rate planned at a
#: QBER of at least ONE_WAY_MIN_QBER, which decoded every block at 0.1 / 0.3 / 0.5 / 0.8 % (then
#: leaking f 8.5 / 3.3 / 2.1 / 1.44 at f = 1.2: below 1 % one-way LDPC is correct but costly;
#: Cascade or ``ldpc-blind`` leak far less there).
ONE_WAY_F = 1.25
ONE_WAY_MIN_QBER = 0.01


@register("ldpc")
def _make_ldpc(role: str, bits: np.ndarray, qber: float, *, seed: int = 0, f: float = ONE_WAY_F,
               **options) -> LdpcSide:
    """One-way rate-adaptive LDPC: first attempt at efficiency f (the rate planned at a QBER of at
    least ONE_WAY_MIN_QBER), no reveals."""
    q = float(qber)
    if 0.0 <= q < 0.5:                       # else LdpcSide names the bad value
        q = max(q, ONE_WAY_MIN_QBER)
    return LdpcSide(role, bits, q, seed=seed, f=f, reveal_f=0.0, method="ldpc", **options)


#: Blind: first-attempt efficiency by estimated QBER (linear in between, flat outside). Every
#: failed attempt costs decoder iterations (>= ``stall``) and a round trip, so the start sits just
#: below where most frames decode; the code and d stay those of a start at BLIND_F_CHOOSE.
#: Measured with n = 2^17 frames in 2^20-bit blocks, 8 blocks = 72 frames per row (the default
#: frame of such a block is n = 294,912 since; the same defaults give there, 72 frames each:
#: f 1.123 / 1.109 / 1.093 / 1.091 at 1 / 2 / 5 / 8 %, 62 / 50 / 78 / 53 iterations per frame),
#: ``python -m bench.ldpc_frames --qber Q --f-start F`` (f / decoder iterations per frame):
#: 1 %: start 1.06 -> 1.130 / 65, 1.10 -> 1.130 / 46, 1.13 -> 1.138 / 31;
#: 2 %: 1.06 -> 1.116 / 62, 1.10 -> 1.119 / 39 (reveal 0.02);
#: 5 %: 1.00 -> 1.090 / 95, 1.04 -> 1.090 / 73, 1.07 -> 1.092 / 54;
#: 8 %: 1.00 -> 1.090 / 92, 1.04 -> 1.091 / 70, 1.07 -> 1.088 / 52.
#: (n = 2^16, the earlier table: 1 % 1.03 -> 1.125 / 79, 1.08 -> 1.126 / 52, 1.11 -> 1.129 / 38;
#: 2 % 1.03 -> 1.138 / 81, 1.11 -> 1.143 / 42; 5 % 1.05 -> 1.101 / 64; 8 % 1.05 -> 1.079 / 55.)
#: 2 % with the designed rate-0.85 code (``codes.DESIGNED``, since), n = 294,912, 18 blocks = 72
#: frames: start 1.10 -> 1.1006 / 33, 1.08 -> 1.0877 / 55, 1.06 -> 1.0841 / 83, 1.04 -> 1.0836 / 110
#: (no frame lost); 1.08 kept the decoder work of the former default.
#: 2026-11-24, session 5, with Bob's relative stall rule (BLIND_REL_*), n = 294,912, 18 blocks =
#: 72 frames per row, none lost or silently wrong, ``python -m bench.ldpc_frames --qber Q --blocks 18
#: [--f-start F --reveal-f R --rel-window W --rel-permille P]`` (f / iterations per frame; "rel"
#: = W 4, P 40; the former defaults first):
#: 1 %: 1.10 -> 1.1226 / 62; 1.115 -> 1.1259 / 47; 1.125 -> 1.1306 / 38; 1.13 -> 1.1333 / 34;
#:      rel 1.115 -> 1.1283 / 38, 1.12 -> 1.1302 / 35, 1.125 -> 1.1329 / 33;
#: 2 %: 1.08 -> 1.0877 / 55; 1.085 -> 1.0899 / 48; 1.09 -> 1.0929 / 43; stall 2 / 3 / 6 -> 51 / 54
#:      / 59 it at the same f; reveal 0.015 -> 1.0896 / 52; rel 1.08 -> 1.0900 / 44 (W 4: P 10 ->
#:      1.0888 / 50, 20 -> 1.0892 / 48, 60 -> 1.0910 / 42, 80 -> 1.0918 / 41; W 3 P 30 -> 1.0903
#:      / 44), rel 1.085 -> 1.0913 / 41.5, rel 1.09 -> 1.0938 / 39 (first-attempt or retry caps
#:      of 10-30 iterations instead: f 1.092-1.111 for 48-53 it, worse);
#: 5 %: 1.04 -> 1.0934 / 78; 1.06 -> 1.0931 / 66; 1.07 -> 1.0933 / 57; rel 1.06 -> 1.0956 / 42;
#:      rel reveal 0.01: 1.06 -> 1.0915 / 50, 1.065 -> 1.0913 / 49, 1.07 -> 1.0915 / 47;
#: 8 %: 1.07 -> 1.0911 / 53; 1.08 -> 1.0914 / 50; rel 1.07 -> 1.0919 / 40, rel 1.075 -> 1.0950 /
#:      37; rel reveal 0.015 1.07 -> 1.0906 / 43; rel reveal 0.01 1.065 -> 1.0884 / 49.
#: With rel a failed round costs few iterations, so finer steps let the start rise (rel, reveal R):
#: 2 %: R 0.005 1.085 -> 1.0901 / 44, 1.09 -> 1.0932 / 39; R 0.0075 1.09 -> 1.0937 / 38.5;
#: 5 %: R 0.005 1.08 -> 1.0892 / 47, 1.085 -> 1.0901 / 42, 1.09 -> 1.0926 / 37.5; R 0.0075 1.075
#:      -> 1.0898 / 47.5;
#: 8 %: R 0.005 1.08 -> 1.0868 / 46, 1.09 -> 1.0908 / 35; R 0.0075 1.085 -> 1.0887 / 39.5, 1.09 ->
#:      1.0909 / 34.7;  1 %: R 0.005 1.125 -> 1.1312 / 35; R 0.0075 1.13 -> 1.1349 / 31.
#: The defaults below (rel on; 1.1302 / 35, 1.0913 / 41.5, 1.0901 / 42, 1.0909 / 35 at 1 / 2 / 5 /
#: 8 % on these keys) checked on other key streams (``--keys 1``, 72 frames: 1.1297 / 33, 1.0909 /
#: 41, 1.0895 / 42, 1.0918 / 35; ``--keys 2``, 144 frames: 1.1295 / 35, 1.0911 / 43, 1.0895 / 42,
#: 1.0914 / 36; none lost). Between and outside the points (``--keys 1``, 72-90 frames): 0.5 %
#: 1.351 / 115, 3.5 % 1.129 / 50, 6.5 % 1.108 / 48, 11 % 1.226 / 23 (the former defaults: 1.352,
#: 1.130, 1.111, 1.208 / 33; no target there).
#: Then the redesigned rate-0.85 and 0.70 mother codes (``codes.DESIGNED``) and the int8 decoder
#: (``"qc8"``), defaults otherwise as above, 72 frames, none lost or silently wrong:
#: 2 %: 1.08 -> 1.0892 / 41.3, 1.085 -> 1.0903 / 38.3, 1.09 -> 1.0931 / 35.0, 1.095 -> 1.0971 / 31.9;
#: 5 %: 1.08 -> 1.0809 / 37.6, 1.085 -> 1.0852 / 33.2, 1.09 -> 1.0901 / 29.7, 1.095 -> 1.0950 / 27.0;
#: so both start at 1.09 (``--keys 1`` / ``--keys 2``: 1.0928 / 34.7 and 1.0933 / 35.2 at 2 %,
#: 1.0901 / 29.8 and 1.0901 / 30.0 at 5 %); 1 % and 8 % unchanged (1.1333 / 37.3, 1.0919 / 36.9).
#: Session 6 (issue 3: one family for QBER 0.5-11 %): rows between and outside the four points;
#: the rows at 1 / 2 / 5 / 8 % are unchanged. Grid, ``python -m bench.ldpc_frames --qber Q
#: --blocks 18`` (72 frames per point, none lost or silently wrong in any row; f / iterations per
#: frame / mother rate). Before (the codes and defaults of commit 52bc103):
#:   0.5 % 1.357 / 117 / 0.91p   0.75 % 1.197 / 56 / 0.91p   1 % 1.133 / 38 / 0.91   1.5 % 1.158
#:   / 46 / 0.85p   2 % 1.093 / 35 / 0.85   2.5 % 1.135 / 50 / 0.80p   3 % 1.099 / 45 / 0.80
#:   3.5 % 1.137 / 50 / 0.75p   4 % 1.105 / 43 / 0.75   5 % 1.090 / 30 / 0.70   6 % 1.101 / 40 / 0.65
#:   6.5 % 1.114 / 48 / 0.60p   7 % 1.095 / 41 / 0.60   8 % 1.092 / 37 / 0.55   9 % 1.090 / 27 / 0.55
#:   10 % 1.090 / 29 / 0.50   11 % 1.226 / 24 / 0.50 (5 frames per block, 90 frames).
#: ("p": the first attempt punctures a code of lower rate, up to 0.04 in rate; such codes got
#: stuck at f 1.13-1.14 whatever the start: 2.5 % 1.134-1.135 for starts 1.06-1.12.) The causes
#: and fixes: gaps in the rate family (codes.DESIGNED adds 0.95, 0.94, 0.93, 0.89, 0.88, 0.82,
#: 0.77, 0.67: 0.5, 0.6, 0.75, 1.1-1.4, 1.5, 2.5, 3.5, 5.3-6.2 %); Table I's 0.90 taken at
#: 1.15-1.3 % (BLIND_SKIP_RATES); ROOM_F 0.12 pushing 6.5 % to the 0.60 code (0.10); the f_max
#: widening of d adding a fifth frame at 11 % (``LdpcSide``, F_MAX_FLOOR); and starts (the rows
#: below; 9-11 % decoded every frame at the first attempt at 1.09, so the start is lower there).
#: After (load 0.9-1.7, 2 cores):
#:   0.5 % 1.186 / 38 / 0.95   0.75 % 1.163 / 33 / 0.93   1 % 1.133 / 37 / 0.91   1.5 % 1.102 /
#:   38 / 0.88   2 % 1.093 / 35 / 0.85   2.5 % 1.085 / 37 / 0.82   3 % 1.099 / 44 / 0.80
#:   3.5 % 1.081 / 37 / 0.77   4 % 1.105 / 43 / 0.75   5 % 1.090 / 30 / 0.70   6 % 1.080 / 33 / 0.67
#:   6.5 % 1.086 / 39 / 0.65   7 % 1.095 / 41 / 0.60   8 % 1.092 / 37 / 0.55   9 % 1.072 / 44 / 0.55
#:   10 % 1.082 / 36 / 0.50   11 % 1.070 / 33 / 0.50.
#: The same on another key stream (``--keys 1``): 1.187 / 39, 1.169 / 35, 1.132 / 35, 1.105 / 39,
#: 1.093 / 35, 1.085 / 37, 1.099 / 45, 1.080 / 37, 1.105 / 42, 1.090 / 30, 1.080 / 34, 1.086 / 40,
#: 1.095 / 41, 1.092 / 37, 1.072 / 44, 1.082 / 37, 1.070 / 33 (none lost). Between the grid points
#: smaller gaps remain where a code is punctured at the start (72 frames each, none lost):
#: 0.6 % 1.177 / 35 (0.94; 1.230 / 54 on the 0.93 before it was added), 1.15 % 1.133 / 36 and
#: 1.25 % 1.113 / 33 (0.89), 1.75 % 1.119 / 41 (0.85), 2.25 % 1.106 / 38 (0.82), 2.75 % 1.111 /
#: 50 (0.80), 4.5 % 1.102 / 43 (0.70), 5.5 % 1.086 / 38 (0.67; 1.124 / 52 on Table I's 0.65),
#: 7.5 % 1.090 / 32 (0.60), 8.5 % 1.082 / 42 (0.55), 10.5 % 1.076 / 35 (0.50).
#: Session 7 (the gaps above where a code is still punctured at its start): ``codes.DESIGNED``
#: adds 0.86, 0.81 and 0.72. Same command, 72 frames per row, none lost or silently wrong, before -> after
#: (f / iterations per frame / mother rate; ``--keys 1`` in brackets):
#:   1.75 % 1.1188 / 40.7 / 0.85p [1.1191 / 41.5] -> 1.0999 / 38.8 / 0.86 [1.0996 / 39.6];
#:   1.9 % 1.0990 / 36.6 / 0.85 -> 1.0914 / 34.4 / 0.86; unchanged (same code): 1.5 % 1.1017 / 38.1,
#:   1.6 % 1.0961 / 37.5 (0.88), 2 % 1.0931 / 35.0 (0.85).
#:   2.75 % 1.1115 / 50.3 / 0.80p [1.1141 / 49.6] -> 1.0994 / 41.9 / 0.81 [1.0994 / 43.2];
#:   2.9 % -> 1.0914 / 38.5 / 0.81; unchanged (same code): 2.5 % 1.085 / 37 (0.82), 3 % 1.099 / 44
#:   (0.80). (Reruns of one row differ by up to 0.0002 in f and 0.2 iterations: Alice fills the
#:   punctured bits from fresh private randomness each run, and the int8 decoder, unlike the
#:   int16 one, is not exactly symmetric under flipping a punctured bit with its checks' syndrome
#:   bits; with ``private_seed`` fixed a run repeats exactly, as tests/test_ldpc_side_kat.py pins.)
#:   4.5 % 1.1019 / 42.7 / 0.70p [1.1023 / 42.8] -> 1.0902 / 31.5 / 0.72 [1.0904 / 32.2];
#:   4.25 % 1.1141 / 46.5 / 0.70p -> 1.0924 / 36.9 / 0.72; 4.75 % 1.0916 / 35.5 / 0.70 -> 1.0900 /
#:   27.9 / 0.72; unchanged (same code): 4 % 1.105 / 43 (0.75), 5 % 1.090 / 30 (0.70).
#:   Smaller blocks at 2 and 5 % now take the new codes (8 blocks each, none lost): 2 %, 2^18 bits
#:   (n = 2^16): 1.1307 / 43.6 -> 1.1171 / 40.3 (0.86); 5 %, 2^18 bits: 1.1057 / 44.3 -> 1.0944 /
#:   33.6, 300,000 bits: 1.1494 / 32.9 -> 1.1438 / 25.7 (0.72); 2^19 bits keep 0.85 / 0.70.
#:   The whole grid re-measured with the three codes (keys 0, and 1 / 2 / 5 / 8 % on ``--keys 1``):
#:   every other row as in the After table above, none lost.
BLIND_F_START = ((0.005, 1.15), (0.0075, 1.14), (0.01, 1.12), (0.015, 1.09), (0.02, 1.09), (0.025, 1.08),
                 (0.03, 1.09), (0.035, 1.08), (0.04, 1.09), (0.05, 1.09), (0.06, 1.08), (0.065, 1.08),
                 (0.07, 1.09), (0.08, 1.09), (0.09, 1.07), (0.10, 1.08), (0.11, 1.07))
BLIND_F_CHOOSE = 1.03
#: Blind: reveal step (efficiency per failed round) by estimated QBER, interpolated like the
#: start. Finer steps leak less (a frame stops nearer its own threshold) but cost a round trip
#: and more iterations each; worth it where f is short of its target. Measured as above:
#: 1 %: 0.02 -> 1.130 / 46 it, 0.01 -> 1.126 / 58; 2 %: 0.02 -> 1.119 / 39, 0.01 -> 1.115 / 47
#: (0.01 with stall 8 and start 1.06: 1.109 / 124); 5 %: 0.02 -> 1.090 / 73, 0.01 -> 1.086 / 102.
#: With the relative stall rule (session 5, table of BLIND_F_START) a failed round is cheap, so
#: finer steps pay from 5 % too, with a later start: 0.005 at 5 % (1.0901 / 42 against 1.0956 / 42
#: with 0.02 from 1.06), 0.0075 at 8 % (1.0909 / 35 against 1.0919 / 40 with 0.02 from 1.07).
BLIND_REVEAL_F = ((0.01, 0.01), (0.02, 0.01), (0.05, 0.005), (0.08, 0.0075))
#: Blind: Bob's relative stall rule (``rel_window``, ``rel_permille``; measured in the table of
#: BLIND_F_START). An attempt that will fail plateaus: its unsatisfied-check count falls for ~10
#: iterations and then wanders within ~1 % of a floor (~11,500 of 44,000 checks at QBER 2 %,
#: start 1.08), so the absolute rule (no new minimum for ``stall`` iterations) kept it going for
#: 15-35 iterations; one that will succeed keeps falling by >= 3 % per 4 iterations (traces of
#: 8 frames: 3 failed, 5 succeeded after 31-59 iterations). Stopping once the count fell by less
#: than 4 % over 4 iterations cuts the failed attempts (the next round continues warm).
BLIND_REL_WINDOW = 4
BLIND_REL_PERMILLE = 40


def _by_qber(table, qber: float) -> float:
    """A (QBER, value) table read at ``qber``: linear in between, flat outside."""
    qs, vs = zip(*table, strict=True)
    return float(np.interp(qber, qs, vs))


def blind_f_start(qber: float) -> float:
    """Default first-attempt efficiency of ``ldpc-blind`` at this QBER (``BLIND_F_START``)."""
    return _by_qber(BLIND_F_START, qber)


def blind_reveal_f(qber: float) -> float:
    """Default reveal step of ``ldpc-blind`` at this QBER, in efficiency (``BLIND_REVEAL_F``)."""
    return _by_qber(BLIND_REVEAL_F, qber)


@register("ldpc-blind")
def _make_ldpc_blind(role: str, bits: np.ndarray, qber: float, *, seed: int = 0, f_start: float | None = None,
                     reveal_f: float | None = None, stall: int = 4, f_choose: float | None = BLIND_F_CHOOSE,
                     rel_window: int = BLIND_REL_WINDOW, rel_permille: int = BLIND_REL_PERMILLE,
                     **options) -> LdpcSide:
    """Blind LDPC: start at efficiency f_start (default ``blind_f_start(qber)``), reveal
    reveal_f * k h(q) bits per failed round (default ``blind_reveal_f(qber)``); an attempt stops
    after ``stall`` iterations without progress (the next round reveals more, and the QC decoder
    continues from where it stopped)."""
    q = max(float(qber), MIN_QBER)
    if f_start is None:
        f_start = blind_f_start(q)
    if reveal_f is None:
        reveal_f = blind_reveal_f(q)
    return LdpcSide(role, bits, qber, seed=seed, f=f_start, reveal_f=reveal_f, stall=stall,
                    f_choose=f_choose, rel_window=rel_window, rel_permille=rel_permille,
                    method="ldpc-blind", **options)


@kat("ldpc")
def _kat_ldpc() -> bool:
    """Known answers (from the numpy references in tests/test_ldpc.py): the syndrome of a
    fixed word on mother code 0.9, and layered sum-product on a fixed (256, 128) frame."""
    import zlib

    c = code(0.9)
    word = np.array([(0x9E3779B97F4A7C15 * (i + 1)) & 0xFFFFFFFFFFFFFFFF for i in range(256)], np.uint64)
    if zlib.crc32(c.syndrome(word).tobytes()) != 0xC7EBD984:
        return False
    spec = codes.regular_code(256, 128, 3, seed=5)
    if spec.tag != 0x318E7CB6:
        return False
    small = LdpcCode(spec)
    x = np.array([0x0123456789ABCDEF, 0xFEDCBA9876543210, 0x0F1E2D3C4B5A6978, 0x8796A5B4C3D2E1F0], np.uint64)
    y = unpack_bits(x, 256)
    y[[3, 77, 150, 201]] ^= 1
    llr = (np.float32(3.0) * (1 - 2 * y.astype(np.float32))).astype(np.float32)
    out, ok, it, post = small.decode(llr, small.syndrome(x), max_iter=20)
    return ok and it == 1 and np.array_equal(out, x) and zlib.crc32(post.tobytes()) == 0xF4A5447A


@kat("ldpc-qc")
def _kat_ldpc_qc() -> bool:
    """Known answers (numpy references in tests/test_ldpc_qc.py): the word-rotation syndrome of
    a fixed word on QC mother code 0.9, and the layered sum-product (int16 and int8 messages)
    on a small QC code."""
    import zlib

    c = qc_code(0.9)
    word = np.array([(0x9E3779B97F4A7C15 * (i + 1)) & 0xFFFFFFFFFFFFFFFF for i in range(1024)], np.uint64)
    if zlib.crc32(c.syndrome(word).tobytes()) != 0xC755ADCC:
        return False
    spec = codes.random_qc_code(64, 8, 32, 10, 7)
    if spec.tag != 0x8D3CEAA3:
        return False
    small = LdpcCode(spec)
    bits = (np.arange(spec.n) * 7 + (np.arange(spec.n) >> 3)) % 3 == 0
    x = pack_bits(bits.astype(np.uint8))
    y = unpack_bits(x, spec.n)
    y[[3, 77, 150, 201, 1000, 1700]] ^= 1
    llr = (768 * (1 - 2 * y.astype(np.int16))).astype(np.int16)
    out, ok, it, post = small.decode_qc(llr, small.syndrome(x), max_iter=20)
    if not (ok and it == 2 and np.array_equal(out, x) and zlib.crc32(post.tobytes()) == 0x9A77BB1E):
        return False
    llr8 = (24 * (1 - 2 * y.astype(np.int16))).astype(np.int16)         # int8 decoder: 3 nat at 1/8
    out, ok, it, post = small.decode_qc(llr8, small.syndrome(x), max_iter=20, int8=True)
    return ok and it == 2 and np.array_equal(out, x) and zlib.crc32(post.tobytes()) == 0x0F23F58D

"""Python side of ``hil._kernel``, the C hot path of the link model (``hil/csrc``).

What it is for: argument checks, buffers and status handling around the C
functions, so ``hil.model`` can run a frame in one C call. It must not hold
physics of its own (the tables come from ``hil.eve``, the parameters from
``hil.model``) and must not import ``link`` or ``postproc_c``.

Why C: the numpy path costs ~100 array passes per frame; one streaming pass in
C over the frame's events (photon candidates, dark counts and pending
afterpulses merged in slot order, dead time and afterpulses applied as they
come) removes them. The kernel's cost is per candidate and per click, so its
draws are packed integer alias tables (one 64-bit load and a compare each; one
random word serves a candidate's gap and outcome) and its per-slot path has no
data-dependent branches (dead time and the alias select are arithmetic). Each
C function has a numpy reference in
``tests/test_hil_kernel.py`` (exact where the draws are given, statistical for
the whole frame).
"""

from __future__ import annotations

import sys

import numpy as np

from ._kernel import ffi, lib

NONE = np.iinfo(np.int64).min               # "no click yet" in last-click arrays

_ERRORS = {lib.HIL_ERR_NULL: "a required pointer is NULL", lib.HIL_ERR_LENGTH: "a length is inconsistent",
           lib.HIL_ERR_VALUE: "a parameter is outside its domain",
           lib.HIL_ERR_CAPACITY: "an output buffer is too small",
           lib.HIL_ERR_PATTERN: "a pattern value is out of range"}


def _ziggurat_tables(layers: int = 128, r: float = 3.442619855899,
                     v: float = 9.91256303526217e-3) -> np.ndarray:
    """x[0..layers] and x[i+1]/x[i] of the 128-layer normal ziggurat (Marsaglia and Tsang, J. Stat.
    Softw. 5(8), 2000; set up as in Doornik 2005: x[0] = v / f(r) is the base strip with the tail)."""
    x = np.zeros(layers + 1)
    f = np.exp(-0.5 * r * r)
    x[0], x[1] = v / f, r
    for i in range(2, layers):
        x[i] = np.sqrt(-2.0 * np.log(v / x[i - 1] + f))
        f = np.exp(-0.5 * x[i] * x[i])
    return np.concatenate([x, x[1:] / x[:-1]])


ZIGGURAT = _ziggurat_tables()


class KernelError(RuntimeError):
    """A C kernel call failed; ``status`` is the negative ``enum hil_status``."""

    def __init__(self, call: str, status: int):
        super().__init__(f"{call}: {_ERRORS.get(status, 'unknown error')} (status {status})")
        self.status = status


def check(call: str, status: int) -> None:
    if status != lib.HIL_OK:
        raise KernelError(call, status)


def _arr(a, name: str, dtype, n: int | None = None) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)}, got {a.dtype}")
    if a.ndim != 1 or (n is not None and len(a) != n):
        raise ValueError(f"{name}: expected a 1-D array" + ("" if n is None else f" of {n}"))
    return np.ascontiguousarray(a)


def _p(ctype: str, a: np.ndarray):
    return ffi.cast(ctype, ffi.from_buffer(a))


def pattern_bad(basis: np.ndarray, bit: np.ndarray, intensity: np.ndarray) -> int:
    """One C pass over a frame pattern (uint8, same length): bit 0 some basis > 1, bit 1 some bit
    > 1, bit 2 some intensity > 2; 0 when valid."""
    n = len(basis)
    basis, bit, intensity = (_arr(a, name, np.uint8, n) for a, name in
                             ((basis, "basis"), (bit, "bit"), (intensity, "intensity")))
    bad = ffi.new("int32_t *")
    check("hil_pattern_check", lib.hil_pattern_check(_p("uint8_t *", basis), _p("uint8_t *", bit),
                                                     _p("uint8_t *", intensity), n, bad))
    return int(bad[0])


def frame_params(**kw) -> object:
    """A ``struct hil_frame_params`` filled from keyword arguments (names as in the header)."""
    p = ffi.new("struct hil_frame_params *")
    for k, v in kw.items():
        if isinstance(v, list | tuple | np.ndarray):
            getattr(p, k)[0:len(v)] = [float(x) if isinstance(x, float | np.floating) else int(x) for x in v]
        else:
            setattr(p, k, v)
    return p


def alias_build(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Alias tables (thr float64, alias int32; rows x k, flattened) of the rows of ``probs`` (2-D)."""
    q = np.ascontiguousarray(probs, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] < 1:
        raise ValueError(f"probs: expected a 2-D array with at least one column, got shape {q.shape}")
    rows, k = q.shape
    thr = np.empty(rows * k, np.float64)
    alias = np.empty(rows * k, np.int32)
    scratch = np.empty(2 * k, np.int32)
    check("hil_alias_build", lib.hil_alias_build(_p("double *", q), rows, k, _p("double *", thr),
                                                 _p("int32_t *", alias), _p("int32_t *", scratch)))
    return thr, alias


def alias_pack(thr: np.ndarray, alias: np.ndarray, values: np.ndarray, bits: int) -> np.ndarray:
    """Packed alias table (uint64 per bucket, rows of 2^bits) of ``alias_build``'s tables over 2^bits
    outcomes, with ``values`` (uint16, 2^bits) standing for the outcomes (see ``hil_alias_pack``)."""
    k = 1 << int(bits)
    thr = _arr(thr, "thr", np.float64)
    alias = _arr(alias, "alias", np.int32, len(thr))
    values = _arr(values, "values", np.uint16, k)
    if len(thr) % k:
        raise ValueError(f"thr: expected rows of 2^bits = {k} buckets, got {len(thr)} entries")
    out = np.empty(len(thr), np.uint64)
    check("hil_alias_pack", lib.hil_alias_pack(_p("double *", thr), _p("int32_t *", alias),
                                               _p("uint16_t *", values), len(thr) // k, int(bits),
                                               _p("uint64_t *", out)))
    return out


def alias_draw(packed: np.ndarray, bits: int, cls: np.ndarray, x: np.ndarray) -> np.ndarray:
    """C draws (uint16 values) from rows ``cls`` of a packed table with 32-bit random words ``x``."""
    packed = _arr(packed, "packed", np.uint64)
    cls = _arr(cls, "cls", np.int64)
    x = _arr(x, "x", np.uint32, len(cls))
    out = np.empty(len(cls), np.uint16)
    check("hil_alias_draw", lib.hil_alias_draw(_p("uint64_t *", packed), int(bits), len(packed) >> int(bits),
                                               _p("int64_t *", cls), _p("uint32_t *", x), len(cls),
                                               _p("uint16_t *", out)))
    return out


def dead_time(slot: np.ndarray, det: np.ndarray, dead_slots, last_click) -> tuple[np.ndarray, np.ndarray]:
    """C sequential dead time: (keep mask, updated last_click[4])."""
    slot = _arr(slot, "slot", np.int64)
    det = _arr(det, "det", np.uint8, len(slot))
    dead = np.asarray(dead_slots, dtype=np.int64)
    last = np.array([NONE if x is None else x for x in last_click], dtype=np.int64)
    keep = np.empty(len(slot), np.uint8)
    check("hil_dead_time", lib.hil_dead_time(_p("int64_t *", slot), _p("uint8_t *", det), len(slot),
                                             _p("int64_t *", dead), _p("int64_t *", last),
                                             _p("uint8_t *", keep)))
    return keep.view(bool), last


def timestamps(params, slot, det, noise, z, unoise) -> np.ndarray:
    """C timestamps from given draws (``LinkModel._timestamps_from`` is the reference)."""
    slot = _arr(slot, "slot", np.int64)
    n = len(slot)
    det = _arr(det, "det", np.uint8, n)
    noise = _arr(np.asarray(noise).view(np.uint8), "noise", np.uint8, n)
    z = _arr(z, "z", np.float64, n)
    unoise = _arr(unoise, "unoise", np.float64, n)
    out = np.empty(n, np.int64)
    check("hil_timestamps", lib.hil_timestamps(params, _p("int64_t *", slot), _p("uint8_t *", det),
                                               _p("uint8_t *", noise), _p("double *", z),
                                               _p("double *", unoise), n, _p("int64_t *", out)))
    return out


def normals(seed: np.ndarray, n: int) -> np.ndarray:
    """n N(0, 1) draws of the kernel's ziggurat from a four-word seed (for statistical tests)."""
    seed = _arr(seed, "seed", np.uint64, 4)
    out = np.empty(int(n), np.float64)
    check("hil_normals", lib.hil_normals(_p("uint64_t *", seed), _p("double *", ZIGGURAT), len(out),
                                         _p("double *", out)))
    return out


class FrameOut:
    """Outputs of one ``run_frame`` call (arrays trimmed to their lengths)."""

    __slots__ = ("slot", "det", "noise", "time", "sl_slot", "sl_mask", "sl_code", "ap_out", "last",
                 "counts", "tag_t", "tag_ch", "tag_src")


class Workspace:
    """Buffers of ``run_frame`` kept from frame to frame: the afterpulse heap and its output, and
    output blocks. Each frame's per-click and per-slot arrays are views of one block that the
    results keep alive; a block is handed out again only once nothing refers to it any more (the
    caller dropped that frame's results), otherwise a fresh block is allocated. Reusing a block
    saves the page faults of ~45 fresh bytes per click (a tenth of the frame time at 1e5 clicks
    per frame); a result that is kept is never overwritten."""

    _POOL = 3

    def __init__(self) -> None:
        self.hcap = -1
        self._blocks: list[np.ndarray] = []

    def ensure(self, hcap: int) -> None:
        if hcap > self.hcap:
            self.hcap = hcap = max(hcap, int(self.hcap * 1.25))
            self.heap, self.ap_out = np.empty(hcap, np.int64), np.empty(hcap, np.int64)

    def outputs(self, n: int) -> list[np.ndarray]:
        """Five int64 then five uint8 arrays of n entries, views of one block."""
        need = 45 * n
        block = None
        for b in self._blocks:
            # references: the list, b, and getrefcount's argument: no view of it is alive
            if len(b) >= need and sys.getrefcount(b) == 3:
                block = b
                break
        if block is None:
            block = np.empty(max(need, 1), np.uint8)
            self._blocks.append(block)
            if len(self._blocks) > self._POOL:
                del self._blocks[0]
        out = [block[8 * n * k:8 * n * (k + 1)].view(np.int64) for k in range(5)]
        return out + [block[40 * n + n * k:40 * n + n * (k + 1)] for k in range(5)]


_EMPTY = np.empty(0, np.int64)


def run_frame(params, seed: np.ndarray, basis, bit, intensity, otab, cum_quiet,
              last_click: np.ndarray, ap_in: np.ndarray, capacity: int,
              ws: Workspace | None = None) -> FrameOut:
    """One frame through ``hil_run_frame``; grows the buffers once if ``capacity`` was too small.

    ``otab`` is the packed outcome table (rows of 2^params.obits, ``OutcomeTables.alias``).
    ``last_click`` (int64[4], NONE for none) and ``ap_in`` (keys slot * 4 + detector) are
    relative to this frame's start; the returned ``last``/``ap_out`` to the next frame's.
    ``ws`` keeps the scratch buffers between calls. Inputs are trusted to be the model's own
    (checked dtypes, no copies of the pattern).
    """
    n = int(params.n_slots)
    basis, bit, intensity = (_arr(a, name, np.uint8, n) for a, name in
                             ((basis, "basis"), (bit, "bit"), (intensity, "intensity")))
    seed = _arr(seed, "seed", np.uint64, 4)
    ap_in = _arr(ap_in, "ap_in", np.int64)
    last = _arr(last_click, "last_click", np.int64, 4).copy()
    otab = _arr(otab, "otab", np.uint64)
    cum_quiet = _arr(cum_quiet, "cum_quiet", np.float64)
    obits = int(params.obits)
    n_classes = len(otab) >> obits
    if len(otab) != n_classes << obits or len(cum_quiet) != n_classes * int(params.n_e):
        raise ValueError("tables: otab and cum_quiet disagree on the number of classes")
    ws = Workspace() if ws is None else ws
    cap = max(16, int(capacity))
    ap_on = any(float(x) > 0 for x in params.ap_prob)
    sizes = np.zeros(3, np.int64)
    counts = np.zeros(lib.HIL_N_COUNTERS, np.int64)
    ps = ffi.from_buffer("int64_t[]", sizes)
    for attempt in range(2):
        hcap = len(ap_in) + (cap if ap_on else 0) + 16
        ws.ensure(hcap)
        hcap = ws.hcap
        ev_slot, ev_time, sl_slot, tag_t, tag_src, ev_det, ev_noise, sl_mask, sl_code, tag_ch = \
            ws.outputs(cap + 1)
        st = lib.hil_run_frame(
            params, _p("uint64_t *", seed), _p("uint8_t *", basis), _p("uint8_t *", bit),
            _p("uint8_t *", intensity), _p("uint64_t *", otab),
            _p("double *", cum_quiet), n_classes, _p("double *", ZIGGURAT), _p("int64_t *", last),
            _p("int64_t *", ap_in if len(ap_in) else _EMPTY), len(ap_in), _p("int64_t *", ws.heap), hcap,
            _p("int64_t *", ev_slot), _p("uint8_t *", ev_det), _p("uint8_t *", ev_noise),
            _p("int64_t *", ev_time), cap, ps + 0, _p("int64_t *", tag_t), _p("uint8_t *", tag_ch),
            _p("int64_t *", tag_src), _p("int64_t *", sl_slot),
            _p("uint8_t *", sl_mask), _p("uint8_t *", sl_code), ps + 1,
            _p("int64_t *", ws.ap_out), hcap, ps + 2,
            _p("int64_t *", counts))
        if st == lib.HIL_ERR_CAPACITY and attempt == 0:
            cap = 4 * n + 16                    # at most one click per detector and slot
            continue
        check("hil_run_frame", st)
        break
    ne, ns, na = (int(x) for x in sizes)
    out = FrameOut()
    out.slot, out.det, out.time, out.noise = ev_slot[:ne], ev_det[:ne], ev_time[:ne], ev_noise[:ne].view(bool)
    out.sl_slot, out.sl_mask, out.sl_code = sl_slot[:ns], sl_mask[:ns], sl_code[:ns]
    out.ap_out, out.last, out.counts = ws.ap_out[:na].copy(), last, counts
    t, ch, src = tag_t[:ne + 1], tag_ch[:ne + 1], tag_src[:ne + 1]
    if not counts[lib.HIL_N_TAGS_SORTED]:
        o = np.argsort(t, kind="stable")
        t, ch, src = t[o], ch[o], src[o]
    out.tag_t, out.tag_ch, out.tag_src = t, ch, src
    return out

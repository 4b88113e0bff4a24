"""Merge already-sorted per-channel time-tag streams into one time-ordered batch, in C.

What it is for: time taggers that deliver one sorted stream per input (the ID900
/ ID1000 DataLinkTarget streams) need one time-ordered ``(t_ps, channel)``
batch for the engine, at the tagger's rate (>= 80 M tags/s per core).

What it must not do: know anything about QKD or a particular instrument, copy or
reorder the caller's arrays, or accept unsorted input silently (an unsorted
stream means corrupted data; it is refused naming the stream).

Why this method: a k-way merge of k sorted runs is O(n log k) with tiny
constants, where the previous numpy path sorted the concatenation (timsort on
packed ``t << 3 | channel`` keys finds the runs but still pays per-element
galloping and key packing). The C side (``csrc/tagmerge.c``) is a balanced tree
of branch-free two-way merges; ties keep stream order, and streams are ordered
by channel first, so equal times come out lower channel first. The C code is a
separate tiny cffi module (``drivers._tagmerge``) because drivers must not
depend on the QKD post-processing core.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

__all__ = ["merge_sorted", "merge_sorted_reference", "MAX_STREAMS", "PairError", "check_pairs",
           "pairs_affine", "pair_views"]

_ABI_VERSION = 3


def _load():
    try:
        from ._tagmerge import ffi, lib
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "drivers._tagmerge is not built: install the package with `pip install .` "
            "(or `python setup.py build_ext --inplace` in a development tree)") from exc
    if lib.tm_abi_version() != _ABI_VERSION:
        raise ImportError(f"stale drivers._tagmerge build (ABI {lib.tm_abi_version()}, "
                          f"expected {_ABI_VERSION}); rebuild with `python setup.py build_ext --inplace`")
    return ffi, lib


_ffi, _lib = _load()
MAX_STREAMS = int(_lib.TM_MAX_STREAMS)


_local = threading.local()


def _scratch(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-thread scratch for the merge passes, kept between calls.

    A fresh 9 bytes/tag buffer per batch costs a page fault per 4 KiB on first
    touch, about as long as a merge pass itself; reusing it removes that. The
    buffer holds only timestamps of the last batch (no key material) and grows
    to the largest batch seen.
    """
    buf = getattr(_local, "buf", None)
    if buf is None or buf[0].size < n:
        buf = (np.empty(n, np.int64), np.empty(n, np.uint8))
        _local.buf = buf
    return buf[0][:n], buf[1][:n]


def merge_sorted(times: Sequence[np.ndarray], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Merge sorted int64 arrays ``times[s]`` labelled ``labels[s]`` into (int64 times, uint8 labels).

    Output is non-decreasing; equal times come out in increasing label order
    (then input order). Inputs must each be non-decreasing: ValueError names the
    first one that is not. Non-contiguous inputs (strided views) are copied once.
    """
    if len(times) != len(labels):
        raise ValueError(f"times has {len(times)} streams but labels has {len(labels)}")
    if len(times) > MAX_STREAMS:
        raise ValueError(f"at most {MAX_STREAMS} streams can be merged, got {len(times)}")
    arrs = []
    for s, (x, c) in enumerate(zip(times, labels)):
        if not isinstance(x, np.ndarray) or x.ndim != 1:
            raise TypeError(f"times[{s}]: expected a 1-d numpy array")
        if x.dtype != np.int64:
            if x.dtype.kind not in "iu" or (x.size and x.dtype.kind == "u" and int(x.max()) > 2**63 - 1):
                raise ValueError(f"times[{s}]: expected int64 times, got {x.dtype}")
            x = x.astype(np.int64)
        if not 0 <= int(c) <= 255:
            raise ValueError(f"labels[{s}] = {c} is not a uint8 channel")
        arrs.append(np.ascontiguousarray(x))
    # Stable by label: streams sorted by label, the C merge keeps stream order on ties.
    order = sorted(range(len(arrs)), key=lambda s: int(labels[s]))
    arrs = [arrs[s] for s in order]
    labs = [int(labels[s]) for s in order]
    k = len(arrs)
    total = sum(a.size for a in arrs)
    out_t = np.empty(total, np.int64)
    out_l = np.empty(total, np.uint8)
    if total == 0:
        return out_t, out_l
    scratch_t, scratch_l = _scratch(total if k > 2 else 0)
    ffi = _ffi
    src = ffi.new("int64_t *[]", [ffi.cast("int64_t *", ffi.from_buffer(a)) for a in arrs])
    n = ffi.new("int64_t[]", [a.size for a in arrs])
    lab = ffi.new("uint8_t[]", labs)
    bad = ffi.new("int64_t *")
    st = _lib.tm_merge_i64(
        k, src, n, lab,
        ffi.cast("int64_t *", ffi.from_buffer(out_t)), ffi.cast("uint8_t *", ffi.from_buffer(out_l)),
        ffi.cast("int64_t *", ffi.from_buffer(scratch_t)) if k > 2 else ffi.NULL,
        ffi.cast("uint8_t *", ffi.from_buffer(scratch_l)) if k > 2 else ffi.NULL, bad)
    if st == _lib.TM_ERR_UNSORTED:
        s = order[int(bad[0])]
        raise ValueError(f"times[{s}] (label {int(labels[s])}) is not sorted in non-decreasing order")
    if st != _lib.TM_OK:  # pragma: no cover - arguments are checked above
        raise RuntimeError(f"tm_merge_i64 failed with status {st}")
    return out_t, out_l


def merge_sorted_reference(times: Sequence[np.ndarray],
                           labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """numpy reference (tests): concatenate, then lexsort by (time, label, input order)."""
    if not times:
        return np.empty(0, np.int64), np.empty(0, np.uint8)
    t = np.concatenate([np.asarray(x, np.int64) for x in times])
    lab = np.concatenate([np.full(len(x), c, np.uint8) for x, c in zip(times, labels)])
    o = np.lexsort((lab, t))  # lexsort is stable: equal (t, label) keep input order
    return t[o], lab[o]


class PairError(ValueError):
    """A (value, index) pair stream failed a check; ``index`` is the first offending pair, ``kind``
    is "range", "order" or "overflow"."""

    def __init__(self, message: str, *, index: int, kind: str):
        super().__init__(message)
        self.index = index
        self.kind = kind


def pair_views(value: np.ndarray, index: np.ndarray) -> bool:
    """True if ``value`` and ``index`` are the two interleaved halves of one (value, index) uint64/int64 pair
    array (``a[0::2]`` and ``a[1::2]`` of a contiguous, 8-byte aligned array), which the C helpers read."""
    return (value.ndim == 1 and index.ndim == 1 and value.size == index.size
            and value.dtype.itemsize == 8 and index.dtype.itemsize == 8
            and value.dtype.kind in "iu" and index.dtype.kind in "iu"
            and (value.size <= 1 or (value.strides == (16,) and index.strides == (16,)))
            and index.ctypes.data == value.ctypes.data + 8 and value.ctypes.data % 8 == 0)


def _pairs_ptr(value: np.ndarray, index: np.ndarray):
    if not pair_views(value, index):
        raise ValueError("value and index must be the interleaved halves of one pair array (see pair_views)")
    # A raw pointer, not ffi.from_buffer: the halves are strided views of one buffer, which the
    # caller keeps alive (it holds ``value`` and ``index``) for the duration of the call.
    return _ffi.cast("uint64_t *", value.ctypes.data)


def check_pairs(value: np.ndarray, index: np.ndarray, *, value_limit: int, index_limit: int) -> None:
    """One pass over interleaved pairs: value < value_limit, index < index_limit, indices non-decreasing.

    Raises PairError naming the first offending pair.
    """
    if value.size == 0:
        return
    bad = _ffi.new("int64_t *")
    st = _lib.tm_check_pairs(_pairs_ptr(value, index), value.size, value_limit, index_limit, bad)
    if st == _lib.TM_ERR_RANGE:
        raise PairError(f"pair {int(bad[0])} is out of range (value < {value_limit}, index < {index_limit})",
                        index=int(bad[0]), kind="range")
    if st == _lib.TM_ERR_UNSORTED:
        raise PairError(f"index of pair {int(bad[0])} is smaller than the one before", index=int(bad[0]),
                        kind="order")
    if st != _lib.TM_OK:  # pragma: no cover
        raise RuntimeError(f"tm_check_pairs failed with status {st}")


def pairs_affine(value: np.ndarray, index: np.ndarray, scale: int, out: np.ndarray) -> np.ndarray:
    """``out[i] = index[i] * scale + value[i]`` for interleaved pairs, refusing int64 overflow (PairError)."""
    if not isinstance(out, np.ndarray) or out.dtype != np.int64 or out.shape != (value.size,) \
            or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous int64 array of length {value.size}")
    if not 1 <= int(scale) < 1 << 63:
        raise ValueError(f"scale must be in 1 .. 2**63-1, got {scale}")
    if value.size == 0:
        return out
    bad = _ffi.new("int64_t *")
    st = _lib.tm_pairs_affine(_pairs_ptr(value, index), value.size, int(scale),
                              _ffi.cast("int64_t *", _ffi.from_buffer(out)), bad)
    if st == _lib.TM_ERR_RANGE:
        raise PairError(f"pair {int(bad[0])}: index * {scale} + value overflows int64", index=int(bad[0]),
                        kind="overflow")
    if st != _lib.TM_OK:  # pragma: no cover
        raise RuntimeError(f"tm_pairs_affine failed with status {st}")
    return out

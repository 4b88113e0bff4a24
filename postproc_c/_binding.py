"""The compiled core, its version check, and the helpers every wrapper uses.

Wrappers in this package call ``lib`` through ``check()`` so that a negative
status becomes a Python exception naming the C call, and pass numpy arrays
through ``as_words``/``as_array`` so dtype, contiguity and shape errors name the
argument before anything reaches C. Arrays go to C with ``ffi.from_buffer`` (no
copy), so key buffers stay in memory the caller owns and can wipe.
"""

from __future__ import annotations

import numpy as np

from ._version import __version__

try:
    from ._core import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "postproc_c._core is not built: install the package with `pip install .` "
        "(or `python setup.py build_ext --inplace` in a development tree)"
    ) from exc

_core_version = ffi.string(lib.qpp_version()).decode()
if _core_version != __version__:
    raise ImportError(
        f"stale C core: postproc_c._core was built as version {_core_version!r} but the "
        f"Python package is {__version__!r}; rebuild it (pip install . or "
        f"python setup.py build_ext --inplace)"
    )


class Error(RuntimeError):
    """A C core call failed; ``status`` is the negative code, ``call`` the function."""

    def __init__(self, call: str, status: int, detail: str = "") -> None:
        self.call = call
        self.status = status
        text = ffi.string(lib.qpp_strerror(status)).decode()
        msg = f"{call}: {text} (status {status})"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


def check(call: str, status: int, detail: str = "") -> int:
    """Raise ``Error`` for a negative status from ``call``; return it otherwise."""
    if status < 0:
        raise Error(call, status, detail)
    return status


def _require(arr: object, name: str, dtype: type, ndim: int = 1) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array of {np.dtype(dtype)}, got {type(arr).__name__}")
    if arr.dtype != np.dtype(dtype):
        raise ValueError(f"{name}: expected dtype {np.dtype(dtype)}, got {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {arr.shape}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name}: array must be C-contiguous (use np.ascontiguousarray)")
    return arr


def as_words(arr: object, name: str) -> np.ndarray:
    """Validate a packed bit array: 1-d, C-contiguous uint64."""
    return _require(arr, name, np.uint64)


def as_array(arr: object, name: str, dtype: type) -> np.ndarray:
    """Validate a 1-d C-contiguous array of exactly ``dtype``."""
    return _require(arr, name, dtype)


def words_for(n_bits: int) -> int:
    """Number of uint64 words holding ``n_bits`` bits."""
    return (n_bits + 63) // 64


def ptr(ctype: str, arr: np.ndarray):
    """A cffi pointer into ``arr``'s buffer (no copy); NULL-safe for empty arrays."""
    return ffi.cast(ctype, ffi.from_buffer(arr)) if arr.size else ffi.NULL

"""Zeroization of key buffers through the C core's ``qpp_memzero``.

What it is for: wiping Python-owned buffers that held key material (``bytearray``,
writable ``memoryview``, numpy arrays) right after use, with the same wipe the C
core applies to its own buffers before ``free()``: ``explicit_bzero`` where the C
library has it, else ``memset`` through a volatile function pointer, so no
optimizer drops the stores. Python's own ``buf[:] = bytes(n)`` works too, but
goes through a temporary the size of the buffer; this does it in place.

What it must not do: copy the buffer (``ffi.from_buffer`` passes the memory
itself), accept immutable ``bytes`` (those cannot be wiped: the caller must move
key bytes into a ``bytearray`` first), or log anything.
"""

from __future__ import annotations

import numpy as np

from ._binding import ffi, lib


def memzero(buf: bytearray | memoryview | np.ndarray) -> None:
    """Overwrite every byte of ``buf`` with zero in place (``qpp_memzero``).

    ``buf``: a ``bytearray``, a writable C-contiguous ``memoryview`` or numpy array.
    Raises TypeError for immutable or non-buffer objects, ValueError for a
    non-contiguous array.
    """
    if isinstance(buf, (bytes, str)):
        raise TypeError(f"buf: {type(buf).__name__} is immutable and cannot be wiped; "
                        "keep key bytes in a bytearray")
    if isinstance(buf, np.ndarray):
        if not buf.flags.c_contiguous:
            raise ValueError("buf: numpy array must be C-contiguous")
        if not buf.flags.writeable:
            raise TypeError("buf: numpy array is read-only")
        nbytes = buf.nbytes
    elif isinstance(buf, (bytearray, memoryview)):
        if isinstance(buf, memoryview) and (buf.readonly or not buf.c_contiguous):
            raise TypeError("buf: memoryview must be writable and C-contiguous")
        nbytes = buf.nbytes if isinstance(buf, memoryview) else len(buf)
    else:
        raise TypeError(f"buf: expected a bytearray, memoryview or numpy array, got {type(buf).__name__}")
    if nbytes == 0:
        return
    lib.qpp_memzero(ffi.from_buffer(buf, require_writable=True), nbytes)


__all__ = ["memzero"]

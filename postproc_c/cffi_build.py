"""What the three cffi build scripts share (``postproc_c/build_ffi.py``, ``hil/build_ffi.py``,
``drivers/build_tagmerge.py``): headers as cdef text, source paths, compiler flags.

Build-time only, never imported by the packages at run time. The build scripts load this file by
its path (``runpy.run_path``), not as ``postproc_c.cffi_build``: setuptools
runs them with ``exec`` before any of the packages is importable, and importing ``postproc_c``
would load its compiled module. Conventions: a header is both the C declarations and the cdef
text (preprocessor lines, comments and attribute markers such as ``QPP_WUR`` dropped, since
cffi's parser takes neither); flags ``-O3 -std=c99 -Wall -Wextra``; ``QPP_SANITIZE=1`` builds
with AddressSanitizer and UBSan instead (``-O1 -g``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CFLAGS = ["-O3", "-std=c99", "-Wall", "-Wextra"]
SANITIZE_CFLAGS = ["-O1", "-g", "-std=c99", "-Wall", "-Wextra", "-fno-omit-frame-pointer",
                   "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
SANITIZE_LDFLAGS = ["-fsanitize=address,undefined"]


def cdef_text(path: Path, markers: tuple[str, ...] = ()) -> str:
    """One header as cdef text: no preprocessor lines, no comments, no attribute ``markers``."""
    lines = []
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        for m in markers:
            line = line.replace(m, "")
        lines.append(line)
    text = re.sub(r"/\*.*?\*/", "", "\n".join(lines), flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def rel(p: Path) -> str:
    """A source path relative to the project root (what setuptools wants)."""
    try:
        return os.path.relpath(p, ROOT)
    except ValueError:
        return str(p)


def flags(extra: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(compile args, link args): the house flags plus ``extra``, or the sanitizer build."""
    if os.environ.get("QPP_SANITIZE"):
        return SANITIZE_CFLAGS + [f for f in extra if not f.startswith("-O")], list(SANITIZE_LDFLAGS)
    return CFLAGS + list(extra), []


"""Build ``hil._kernel``: cffi out-of-line API mode over ``hil/csrc/*.c``.

The HIL model's hot path is its own extension, apart from ``postproc_c._core``:
the post-processing core knows nothing of instruments, and ``hil`` must not
depend on ``link``. ``pip install`` runs this through ``cffi_modules`` in
setup.py; in a development tree ``python setup.py build_ext --inplace``
rebuilds it. As in ``postproc_c/build_ffi.py``, each header in ``csrc/`` is
both the C declarations and the cdef text (preprocessor lines and comments
dropped). Flags ``-O3 -std=c99 -Wall -Wextra``; ``-ffp-contract=off`` keeps
the timestamp arithmetic bit-identical to the numpy reference (no fused
multiply-add). cffi's API mode releases the GIL around each call.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HEADERS = sorted((HERE / "csrc").glob("*.h"))
SOURCES = sorted((HERE / "csrc").glob("*.c"))


def _cdef_text(path: Path) -> str:
    text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _rel(p: Path) -> str:
    try:
        return os.path.relpath(p, ROOT)
    except ValueError:
        return str(p)


ffibuilder = FFI()
ffibuilder.cdef("\n".join(_cdef_text(h) for h in HEADERS))

_cflags = ["-O3", "-std=c99", "-Wall", "-Wextra", "-ffp-contract=off", "-fno-strict-aliasing"]
_ldflags: list[str] = []
if os.environ.get("QPP_SANITIZE"):
    _cflags = ["-O1", "-g", "-std=c99", "-Wall", "-Wextra", "-ffp-contract=off", "-fno-omit-frame-pointer",
               "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    _ldflags = ["-fsanitize=address,undefined"]

ffibuilder.set_source(
    "hil._kernel",
    "\n".join(f'#include "{h.name}"' for h in HEADERS),
    sources=[_rel(s) for s in SOURCES],
    include_dirs=[_rel(HERE / "csrc")],
    libraries=["m"],
    extra_compile_args=_cflags,
    extra_link_args=_ldflags,
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(ROOT), verbose=True)

"""Build ``drivers._tagmerge``: cffi out-of-line API mode over ``csrc/tagmerge.c``.

``pip install`` runs this through ``cffi_modules`` in setup.py;
``python setup.py build_ext --inplace`` rebuilds it in a development tree. It is
a separate module from ``postproc_c._core`` on purpose: drivers must not depend
on the QKD post-processing core, and a generic sorted merge is all they need
from C. The header is both the C declaration and the cdef text (preprocessor
lines and comments dropped), as in ``postproc_c/build_ffi.py``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _cdef_text(path: Path) -> str:
    text = "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#"))
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _rel(p: Path) -> str:
    try:
        return os.path.relpath(p, ROOT)
    except ValueError:
        return str(p)


_cflags = ["-O3", "-std=c99", "-Wall", "-Wextra"]
_ldflags: list[str] = []
if os.environ.get("QPP_SANITIZE"):
    _cflags = ["-O1", "-g", "-std=c99", "-Wall", "-Wextra", "-fno-omit-frame-pointer",
               "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    _ldflags = ["-fsanitize=address,undefined"]

ffibuilder = FFI()
ffibuilder.cdef(_cdef_text(HERE / "csrc" / "tagmerge.h"))
ffibuilder.set_source(
    "drivers._tagmerge",
    '#include "tagmerge.h"',
    sources=[_rel(HERE / "csrc" / "tagmerge.c")],
    include_dirs=[_rel(HERE / "csrc")],
    extra_compile_args=_cflags,
    extra_link_args=_ldflags,
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(ROOT), verbose=True)

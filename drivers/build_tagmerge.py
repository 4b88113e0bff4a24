"""Build ``drivers._tagmerge``: cffi out-of-line API mode over ``csrc/tagmerge.c``.

``pip install`` runs this through ``cffi_modules`` in setup.py;
``python setup.py build_ext --inplace`` rebuilds it in a development tree. It is
a separate module from ``postproc_c._core`` on purpose: drivers must not depend
on the QKD post-processing core, and a generic sorted merge is all they need
from C. The header is both the C declaration and the cdef text (preprocessor
lines and comments dropped), as in ``postproc_c/build_ffi.py``.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

from cffi import FFI

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


# by file path, not as postproc_c.cffi_build (see that module's docstring)
B = SimpleNamespace(**runpy.run_path(str(ROOT / "postproc_c" / "cffi_build.py")))

_cflags, _ldflags = B.flags()

ffibuilder = FFI()
ffibuilder.cdef(B.cdef_text(HERE / "csrc" / "tagmerge.h"))
ffibuilder.set_source(
    "drivers._tagmerge",
    '#include "tagmerge.h"',
    sources=[B.rel(HERE / "csrc" / "tagmerge.c")],
    include_dirs=[B.rel(HERE / "csrc")],
    extra_compile_args=_cflags,
    extra_link_args=_ldflags,
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(ROOT), verbose=True)

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

import runpy
from pathlib import Path
from types import SimpleNamespace

from cffi import FFI

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HEADERS = sorted((HERE / "csrc").glob("*.h"))
SOURCES = sorted((HERE / "csrc").glob("*.c"))


# by file path, not as postproc_c.cffi_build (see that module's docstring)
B = SimpleNamespace(**runpy.run_path(str(ROOT / "postproc_c" / "cffi_build.py")))

ffibuilder = FFI()
ffibuilder.cdef("\n".join(B.cdef_text(h) for h in HEADERS))

_cflags, _ldflags = B.flags(("-ffp-contract=off", "-fno-strict-aliasing"))

ffibuilder.set_source(
    "hil._kernel",
    "\n".join(f'#include "{h.name}"' for h in HEADERS),
    sources=[B.rel(s) for s in SOURCES],
    include_dirs=[B.rel(HERE / "csrc")],
    libraries=["m"],
    extra_compile_args=_cflags,
    extra_link_args=_ldflags,
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(ROOT), verbose=True)

"""Build ``postproc_c._core``: cffi out-of-line API mode over the C99 sources.

``pip install`` runs this through ``cffi_modules`` in setup.py. For a development
tree, ``python setup.py build_ext --inplace`` rebuilds the module next to the
sources. The headers in ``include/`` are both the C declarations and the cdef
text (as pyca/cryptography keeps ``padding.h`` beside ``padding.c``): every
``*.h`` there is read, preprocessor lines and the ``QPP_WUR`` attribute marker
are dropped, and the rest goes to ``cdef``. A new C file therefore needs no
edit here: add ``include/qpp_x.h`` and ``src/x.c``.

The package version is compiled in (``qpp_version()``) so a stale build is
refused at import. Compiler flags: ``-O3 -std=c99 -Wall -Wextra``; CPU fast paths
are compiled with per-function ``target`` attributes and chosen at run time, so
no ``-march`` flag is used and the module runs on any x86-64 or arm64 machine.
Set ``QPP_SANITIZE=1`` to build with AddressSanitizer and UBSan instead.
"""

from __future__ import annotations

import ast
import runpy
from pathlib import Path
from types import SimpleNamespace

from cffi import FFI

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _version() -> str:
    tree = ast.parse((HERE / "_version.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "__version__":  # type: ignore[attr-defined]
            return node.value.value  # type: ignore[attr-defined]
    raise RuntimeError("postproc_c/_version.py has no __version__")


def _headers() -> list[Path]:
    hs = sorted((HERE / "include").glob("*.h"))
    # qpp_common.h declares what the others use, so it goes first.
    hs.sort(key=lambda p: (p.name != "qpp_common.h", p.name))
    return hs


# by file path, not as postproc_c.cffi_build (see that module's docstring)
B = SimpleNamespace(**runpy.run_path(str(ROOT / "postproc_c" / "cffi_build.py")))


VERSION = _version()
HEADERS = _headers()
SOURCES = sorted((HERE / "src").glob("*.c"))

ffibuilder = FFI()
ffibuilder.cdef("\n".join(B.cdef_text(h, markers=("QPP_WUR",)) for h in HEADERS))

_cflags, _ldflags = B.flags(("-fno-strict-aliasing",))

ffibuilder.set_source(
    "postproc_c._core",
    "\n".join(f'#include "{h.name}"' for h in HEADERS),
    sources=[B.rel(s) for s in SOURCES],
    include_dirs=[B.rel(HERE / "include")],
    define_macros=[("QPP_VERSION", f'"{VERSION}"'), ("_POSIX_C_SOURCE", "200809L")],
    extra_compile_args=_cflags,
    extra_link_args=_ldflags,
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(ROOT), verbose=True)

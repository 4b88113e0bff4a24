"""Only here so setuptools runs cffi's build of the C core (``cffi_modules``).

Everything else about the package lives in pyproject.toml.
"""
from setuptools import setup

setup(cffi_modules=["postproc_c/build_ffi.py:ffibuilder", "drivers/build_tagmerge.py:ffibuilder",
                    "hil/build_ffi.py:ffibuilder"])

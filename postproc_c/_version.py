"""Single source of the package version; the C core is stamped with it at build time."""

__version__ = "0.1.2"

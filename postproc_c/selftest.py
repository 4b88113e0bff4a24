"""Power-up known-answer tests of the C core.

Each primitive's module registers a KAT with ``@kat("name")``: a function that
runs the C code on fixed inputs and compares with a fixed expected output
(computed once from the numpy/galois reference in ``tests/``). ``selftest()``
runs all of them; ``qkd selftest`` and the engine's start-up call it before any
key is produced. A failure raises ``SelfTestError`` naming the primitive.
"""

from __future__ import annotations

from collections.abc import Callable

_KATS: dict[str, Callable[[], bool]] = {}


class SelfTestError(RuntimeError):
    """A known-answer test failed; ``primitive`` names which."""

    def __init__(self, primitive: str, detail: str = "") -> None:
        self.primitive = primitive
        super().__init__(f"self-test failed: {primitive}" + (f": {detail}" if detail else ""))


def kat(name: str) -> Callable[[Callable[[], bool]], Callable[[], bool]]:
    """Register ``fn() -> bool`` (True when the known answer is reproduced) as KAT ``name``."""
    def deco(fn: Callable[[], bool]) -> Callable[[], bool]:
        if name in _KATS:
            raise ValueError(f"KAT {name!r} registered twice")
        _KATS[name] = fn
        return fn
    return deco


def selftest() -> dict[str, bool]:
    """Run every registered KAT; return ``{name: True}`` or raise ``SelfTestError``."""
    if not _KATS:
        raise SelfTestError("registry", "no known-answer tests are registered")
    report: dict[str, bool] = {}
    for name, fn in _KATS.items():
        try:
            ok = bool(fn())
        except Exception as exc:  # a KAT that crashes is a failed KAT
            raise SelfTestError(name, f"{type(exc).__name__}: {exc}") from exc
        if not ok:
            raise SelfTestError(name, "output differs from the known answer")
        report[name] = True
    return report

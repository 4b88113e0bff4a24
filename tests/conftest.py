"""Shared pytest options and fixtures.

``--instrument-address KIND=ADDRESS`` (repeatable) turns on the real-hardware
tests marked ``hardware``; without it they are skipped, as in pymeasure's
``*_with_device`` tests.  Example::

    pytest tests/test_hw_taggers.py --instrument-address id900=tcp://169.254.99.100:5555
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser):
    parser.addoption("--instrument-address", action="append", default=[], metavar="KIND=ADDRESS",
                     help="address of a real instrument for the hardware tests (repeatable), "
                          "e.g. id900=tcp://169.254.99.100:5555 or picoquant=host:port")


@pytest.fixture
def instrument_address(request):
    """Return a function ``kind -> address`` that skips the test when no address was given."""
    given = {}
    for item in request.config.getoption("--instrument-address"):
        kind, sep, addr = item.partition("=")
        if not sep:
            raise pytest.UsageError(f"--instrument-address {item!r}: expected KIND=ADDRESS")
        given[kind.strip().lower()] = addr.strip()

    def lookup(kind: str) -> str:
        if kind.lower() not in given:
            pytest.skip(f"no --instrument-address {kind}=... given")
        return given[kind.lower()]

    return lookup

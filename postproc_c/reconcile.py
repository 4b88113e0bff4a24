"""The transport-free reconciliation interface shared by Cascade and LDPC.

A reconciliation run is two objects, one per side, that only exchange bytes:

    alice = make_side("cascade", "alice", alice_bits, qber, seed=s)
    bob   = make_side("cascade", "bob",   bob_bits,   qber, seed=s)
    # the engine (or reconcile_in_memory) carries messages between them:
    while not (alice.done and bob.done):
        for side, peer in ((alice, bob), (bob, alice)):
            while (msg := side.next_message()) is not None:
                peer.feed(msg)

``next_message()`` returns the next outgoing message or ``None`` when the side
is waiting for input (or finished); ``feed(msg)`` consumes one incoming message
and raises ``postproc_c.Error``/``ValueError`` for a malformed, truncated or
out-of-order one without changing state. ``result()`` (once ``done``) gives the
side's view: Bob's corrected bits, bits leaked, messages, success.

Methods register a factory with ``@register("name")`` in their own module
(``postproc_c/cascade.py``, ``postproc_c/ldpc.py``). This module must stay
free of sockets and of any one method's details.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class ReconcileResult:
    """Outcome of one reconciliation run as one side sees it."""

    corrected: np.ndarray          # uint8 0/1, Bob's key after reconciliation (Alice: her key)
    leaked_bits: int               # every bit disclosed: parities, syndromes, revealed bits
    messages: int                  # messages this run exchanged (both directions)
    success: bool                  # the protocol believes the keys now agree
    method: str = ""
    details: dict = field(default_factory=dict)


class Side(Protocol):
    """One side of a reconciliation protocol: a state machine over bytes."""

    role: str                      # "alice" or "bob"

    @property
    def done(self) -> bool: ...

    def next_message(self) -> bytes | None: ...

    def feed(self, message: bytes) -> None: ...

    def result(self) -> ReconcileResult: ...


Factory = Callable[..., Side]
_METHODS: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    """Register ``factory(role, bits_u8, qber, *, seed, **options) -> Side`` as method ``name``."""
    def deco(factory: Factory) -> Factory:
        _METHODS[name] = factory
        return factory
    return deco


def methods() -> list[str]:
    """Names of the registered reconciliation methods."""
    return sorted(_METHODS)


def make_side(method: str, role: str, bits: np.ndarray, qber: float, *, seed: int = 0,
              **options) -> Side:
    """Create one side of ``method`` for ``role`` ("alice" or "bob")."""
    if method not in _METHODS:
        raise ValueError(f"method: unknown reconciliation method {method!r}; known: {methods()}")
    if role not in ("alice", "bob"):
        raise ValueError(f"role: expected 'alice' or 'bob', got {role!r}")
    if not 0.0 <= float(qber) < 0.5:
        raise ValueError(f"qber: expected 0 <= qber < 0.5, got {qber}")
    return _METHODS[method](role, bits, float(qber), seed=seed, **options)


def reconcile_in_memory(alice_bits: np.ndarray, bob_bits: np.ndarray, qber: float, *,
                        method: str = "cascade", seed: int = 0, max_messages: int = 100_000,
                        **options) -> ReconcileResult:
    """Run both sides of ``method`` in this process through an in-memory pipe.

    Returns Bob's result (``corrected`` is Bob's key after reconciliation); the
    ``messages`` figure counts messages in both directions.
    """
    for name, arr in (("alice_bits", alice_bits), ("bob_bits", bob_bits)):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 1:
            raise ValueError(f"{name}: expected a 1-d uint8 array of 0/1")
    if alice_bits.shape != bob_bits.shape:
        raise ValueError(f"bob_bits: length {bob_bits.size} differs from alice_bits {alice_bits.size}")
    alice = make_side(method, "alice", alice_bits, qber, seed=seed, **options)
    bob = make_side(method, "bob", bob_bits, qber, seed=seed, **options)
    sent = 0
    while not (alice.done and bob.done):
        progressed = False
        for side, peer in ((alice, bob), (bob, alice)):
            while (msg := side.next_message()) is not None:
                peer.feed(msg)
                sent += 1
                progressed = True
                if sent > max_messages:
                    raise RuntimeError(f"{method}: more than {max_messages} messages; protocol stuck")
        if not progressed and not (alice.done and bob.done):
            raise RuntimeError(f"{method}: both sides wait for input; protocol deadlocked")
    res = bob.result()
    res.messages = sent
    return res

"""The node-store exceptions, shared by the key store and the authentication pool (same file).

What it is for: ``link.keystore`` and ``link.auth`` keep their state in one SQLite
file per node; a failure of that file (disk full, I/O error, corruption) must end
in the same ``key_store`` alarm and stop whichever of them hits it first
(``Node._guard`` catches ``KeyStoreError``). They live here, not in
``link.keystore``, because ``link.keystore`` imports ``link.auth`` (the pool's
segments are written in the store's commit) and ``link.auth`` needs the base
class too. ``link.keystore`` re-exports both names.

What it must not do: carry key material in a message.
"""

from __future__ import annotations


class KeyStoreError(RuntimeError):
    """A key store operation is invalid (wrong state, wrong link, unknown key)."""


class KeyStoreIOError(KeyStoreError):
    """The store's file failed (corrupt, disk full, I/O error); the message names the file.

    Unlike a refused operation this is not a protocol answer: the node must stop
    with an alarm (a full disk would otherwise refuse every block, quietly)."""

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

import sqlite3


class KeyStoreError(RuntimeError):
    """A key store operation is invalid (wrong state, wrong link, unknown key)."""


class KeyStoreIOError(KeyStoreError):
    """The store's file failed (corrupt, disk full, I/O error); the message names the file.

    Unlike a refused operation this is not a protocol answer: the node must stop
    with an alarm (a full disk would otherwise refuse every block, quietly)."""


def explain(exc: sqlite3.Error) -> str:
    """What an SQLite failure of a node's store means for the operator (no key material:
    SQLite's messages name files and conditions only)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return (f"locked by another process ({exc}): another node, `qkd kme` or a tool holds a "
                f"write transaction on it; one writer per store")
    if name.startswith("SQLITE_READONLY"):
        return (f"read-only here ({exc}): the node must write the store and the -wal/-shm files "
                f"SQLite keeps beside it; check the file's and its folder's permissions")
    if name.startswith("SQLITE_CANTOPEN"):
        return (f"cannot be opened ({exc}): check that its folder exists and is writable (SQLite "
                f"keeps -wal/-shm files beside the store)")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return (f"corrupt ({exc}); keep the file for inspection, restore it from a backup, or start "
                f"a new store on both nodes")
    return str(exc)

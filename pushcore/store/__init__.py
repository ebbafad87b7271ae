"""Offline message stores: messages per device ordered by seq, with expiry, collapse and a cap.

:func:`open_store` picks a backend from a URL or path:

* ``"memory:"`` — :class:`MemoryStore` (nothing survives the process);
* ``"sqlite:///relative/path.db"``, ``"sqlite:////absolute/path.db"`` (the
  SQLAlchemy convention: the path is everything after the third slash) or a
  plain path / :class:`os.PathLike` — :class:`SQLiteStore`, the default.

The semantics every backend shares (seq counters, cumulative ack, expiry,
collapse, the per-device cap policy, idempotency keys, threads) are documented in
:mod:`pushcore.store.base`.
"""
from __future__ import annotations

import os
from typing import Any

from .base import (
    DEFAULT_IDEMPOTENCY_WINDOW,
    DEFAULT_MAX_MESSAGES,
    DEFAULT_RANGE_LIMIT,
    MAX_IDEMPOTENCY_KEY_BYTES,
    PRIORITY_HIGH,
    PRIORITY_LOW,
    IdempotencyConflict,
    NewMessage,
    ReplayedMessage,
    SeqExhausted,
    Store,
    StoredMessage,
    StoreError,
    StoreStats,
)
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = [
    "open_store",
    "Store",
    "StoredMessage",
    "NewMessage",
    "StoreStats",
    "StoreError",
    "SeqExhausted",
    "MemoryStore",
    "SQLiteStore",
    "PRIORITY_LOW",
    "PRIORITY_HIGH",
    "DEFAULT_MAX_MESSAGES",
    "DEFAULT_RANGE_LIMIT",
    "IdempotencyConflict",
    "ReplayedMessage",
    "DEFAULT_IDEMPOTENCY_WINDOW",
    "MAX_IDEMPOTENCY_KEY_BYTES",
]

_SQLITE_PREFIX = "sqlite:///"


def open_store(target: str | os.PathLike[str], **options: Any) -> Store:
    """Open the store *target* names (see the module doc); *options* go to its constructor.

    E.g. ``open_store("memory:", max_messages=100)`` or
    ``open_store("/var/lib/gw/store.db", synchronous="FULL")``.
    """
    if isinstance(target, os.PathLike):
        return SQLiteStore(target, **options)
    if not isinstance(target, str):
        raise TypeError(f"store target must be a str or os.PathLike, not {type(target).__name__}")
    if target == "memory:":
        return MemoryStore(**options)
    if target.startswith(_SQLITE_PREFIX):
        path = target[len(_SQLITE_PREFIX) :]
        if not path:
            raise ValueError(f"{target!r} names no file: use sqlite:///path/to/file.db")
        return SQLiteStore(path, **options)
    if "://" in target or target.startswith("sqlite:"):
        scheme = target.split(":", 1)[0]
        raise ValueError(
            f"unsupported store {target!r} (scheme {scheme!r}): use 'memory:', "
            f"'sqlite:///path.db' or a file path"
        )
    if not target:
        raise ValueError("store target must not be empty: use 'memory:' or a file path")
    return SQLiteStore(target, **options)

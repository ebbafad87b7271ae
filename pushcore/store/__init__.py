"""Offline message stores: messages per device ordered by seq, with expiry, collapse and a cap.

:func:`open_store` picks a backend from a store spec (:func:`parse_store_target`):

* ``"memory"`` or ``"memory:"`` — :class:`MemoryStore` (nothing survives the process);
* ``"sqlite:PATH"`` (``sqlite:gw.db``, ``sqlite:/var/lib/gw.db``), the
  SQLAlchemy form ``"sqlite:///relative/path.db"`` / ``"sqlite:////absolute/path.db"``
  (the path is everything after the third slash), a path ending ``.db``,
  ``.sqlite`` or ``.sqlite3``, a path with a directory part (``./gw``,
  ``data/gw``), an existing file, or an :class:`os.PathLike` —
  :class:`SQLiteStore`, the default;
* ``"redis://HOST:PORT/DB"`` (``rediss://`` for TLS) or
  ``"redis+cluster://HOST:PORT[,HOST:PORT...]"`` — :class:`RedisStore` on a
  Redis server or a Redis Cluster (needs the ``redis`` extra: redis-py and
  hiredis; imported only when a RedisStore is made or named).

Anything else (``"mystore"``, ``"memroy"``, ``"mongodb://…"``) is a
``ValueError`` that lists these forms: a bare word that is not an existing
file is more likely a typo than a request for a SQLite file of that name.

The semantics every backend shares (seq counters, cumulative ack, expiry,
collapse, the per-device cap policy, idempotency keys, threads) are documented in
:mod:`pushcore.store.base`.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

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
    StoreHealth,
    StoreStats,
    StoreUnavailable,
)
from .memory import MemoryStore
from .sqlite import SQLiteStore

if TYPE_CHECKING:
    from .redis import RedisStore


def __getattr__(name: str) -> Any:
    # RedisStore imports redis-py: only when asked for, so `import pushcore.store` does not need it.
    if name == "RedisStore":
        from .redis import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "open_store",
    "parse_store_target",
    "Store",
    "StoredMessage",
    "NewMessage",
    "StoreStats",
    "StoreError",
    "StoreUnavailable",
    "StoreHealth",
    "SeqExhausted",
    "MemoryStore",
    "SQLiteStore",
    "RedisStore",
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
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_REDIS_SCHEMES = ("redis", "rediss", "redis+cluster")
_FORMS = ("use 'memory' (or 'memory:') for the memory store, a SQLite file: sqlite:PATH, "
          "a path ending .db, .sqlite or .sqlite3, or one with a directory (./NAME), "
          "or Redis: redis://HOST:PORT/DB or redis+cluster://HOST:PORT[,HOST:PORT...]")


def parse_store_target(target: str) -> tuple[str, str]:
    """``("memory", "")``, ``("sqlite", path)`` or ``("redis", url)`` for a store spec.

    ``ValueError`` names the accepted forms (or what is wrong with a Redis URL).
    """
    if not isinstance(target, str):
        raise TypeError(f"store target must be a str or os.PathLike, not {type(target).__name__}")
    if target in ("memory", "memory:"):
        return "memory", ""
    if target == ":memory:":  # SQLite's own name for a private in-memory database
        return "sqlite", target
    if target.startswith(_SQLITE_PREFIX):
        path = target[len(_SQLITE_PREFIX) :]
        if not path:
            raise ValueError(f"{target!r} names no file: use sqlite:///path/to/file.db or sqlite:PATH")
        return "sqlite", path
    if target.startswith("sqlite:") and not target.startswith("sqlite://"):
        path = target[len("sqlite:") :]
        if not path:
            raise ValueError(f"{target!r} names no file: {_FORMS}")
        return "sqlite", path
    scheme = target.split("://", 1)[0] if "://" in target else ""
    if scheme in _REDIS_SCHEMES:
        from .redis import parse_redis_url  # no redis-py import: the module imports it lazily

        parse_redis_url(target)
        return "redis", target
    if "://" in target or target.startswith("sqlite:"):
        scheme = target.split(":", 1)[0]
        raise ValueError(f"unsupported store {target!r} (scheme {scheme!r}): {_FORMS}")
    if not target:
        raise ValueError(f"store target must not be empty: {_FORMS}")
    if target.lower().endswith(_SQLITE_SUFFIXES) or "/" in target or os.sep in target or os.path.isfile(target):
        return "sqlite", target
    raise ValueError(f"store {target!r} is ambiguous (a typo, or a SQLite file named {target!r}?): {_FORMS}")


def open_store(target: str | os.PathLike[str], **options: Any) -> Store:
    """Open the store *target* names (see the module doc); *options* go to its constructor.

    E.g. ``open_store("memory", max_messages=100)``,
    ``open_store("/var/lib/gw/store.db", synchronous="FULL")`` or
    ``open_store("redis://127.0.0.1:6379/0", prefix="gw1")``.
    """
    if isinstance(target, os.PathLike):
        return SQLiteStore(target, **options)
    kind, path = parse_store_target(target)
    if kind == "memory":
        return MemoryStore(**options)
    if kind == "redis":
        from .redis import RedisStore

        return RedisStore(path, **options)
    return SQLiteStore(path, **options)

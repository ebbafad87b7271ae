"""Store fixtures: the contract suites' stores, on the session's real Redis servers (tests/conftest.py).

The contract suites run every test against each kind in ``store_kinds.STORE_KINDS``.
A Redis store gets a keyspace of its own (a fresh key *prefix*), so tests
never see each other's keys and the servers start once (a cluster takes
about two seconds). Nothing here fakes Redis (tests/redisd.py).
"""
from __future__ import annotations

from typing import Any

import pytest
from store_kinds import REDIS_KINDS, fresh_prefix

from pushcore.store import MemoryStore, SQLiteStore, Store


@pytest.fixture
def new_store(request, tmp_path):
    """``new_store(kind, name="store", **options)``: a fresh store of *kind*, closed after the test.

    The same *name* reopens the same SQLite file or Redis keyspace (a
    restart, or a second process on the same data).
    """
    made: list[Store] = []
    prefixes: dict[str, str] = {}

    def make(kind: str, name: str = "store", **options: Any) -> Store:
        store: Store
        if kind == "memory":
            store = MemoryStore(**options)
        elif kind == "sqlite":
            store = SQLiteStore(tmp_path / f"{name}.db", **options)
        elif kind in REDIS_KINDS:
            from pushcore.store.redis import RedisStore

            fixture = "redis_server" if kind == "redis" else "redis_cluster"
            url = request.getfixturevalue(fixture).url
            prefix = prefixes.setdefault(name, fresh_prefix())
            store = RedisStore(url, prefix=prefix, **options)
        else:
            raise AssertionError(f"unknown store kind {kind!r}")
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()

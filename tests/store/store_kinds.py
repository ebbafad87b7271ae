"""The store kinds every contract suite runs against (the fixtures are in tests/store/conftest.py)."""
from __future__ import annotations

STORE_KINDS = ["memory", "sqlite", "redis", "redis-cluster"]
REDIS_KINDS = ["redis", "redis-cluster"]


_next_prefix = 0


def fresh_prefix() -> str:
    """A Redis key prefix no other store of this test session used (a keyspace of its own)."""
    global _next_prefix
    _next_prefix += 1
    return f"t{_next_prefix}"

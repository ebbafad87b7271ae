"""The store kinds every contract suite runs against (the fixtures are in tests/store/conftest.py)."""
from __future__ import annotations

STORE_KINDS = ["memory", "sqlite", "redis", "redis-cluster"]
REDIS_KINDS = ["redis", "redis-cluster"]

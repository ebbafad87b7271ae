"""Store health: a write the store cannot make marks it unwritable; the next one that works heals it.

The outage is real: a second sqlite3 connection to the same file holds the
write lock (``BEGIN EXCLUSIVE``; in WAL mode readers still read), exactly as
another process or a backup tool would.
"""
from __future__ import annotations

import sqlite3
import time

import pytest

from pushcore.store import MemoryStore, SQLiteStore, StoreError, StoreHealth, StoreUnavailable


class WriteLock:
    """Another connection holding the database's write lock until released."""

    def __init__(self, path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, timeout=0)
        self.db.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self.db.execute("COMMIT")
        self.db.close()


def test_memory_store_is_always_writable():
    store = MemoryStore()
    assert store.health() == StoreHealth(True, None, None)
    assert store.probe().writable
    store.append("d", message_id=1, payload=b"x", priority=1)
    assert store.health().writable


def test_a_locked_sqlite_store_is_unwritable_readable_and_heals(tmp_path):
    path = tmp_path / "s.db"
    store = SQLiteStore(path, timeout=0.05)
    try:
        store.append("d", message_id=1, payload=b"one", priority=1)
        assert store.health() == StoreHealth(True, None, None)
        lock = WriteLock(path)
        before = time.time()
        with pytest.raises(StoreUnavailable, match="database is locked") as info:
            store.append("d", message_id=2, payload=b"two", priority=1)
        assert isinstance(info.value, StoreError)  # old `except StoreError` still catches it
        assert info.value.cause == "database is locked"
        health = store.health()
        assert not health.writable
        assert health.error == "database is locked"
        assert health.since is not None and before - 1 <= health.since <= time.time()
        since = health.since
        # Reads go on while writes fail.
        assert [m.payload for m in store.range("d")] == [b"one"]
        assert store.last_seq("d") == 1 and store.backlog("d") == 1
        # Every kind of write fails the same way, and the outage keeps its start time.
        for write in (lambda: store.ack("d", 1), lambda: store.subscribe("d", ["t"]),
                      lambda: store.advance_seq("d", 5), lambda: store.ack_many([("d", 1)])):
            with pytest.raises(StoreUnavailable):
                write()
        assert store.health().since == since
        # While unwritable a write does not wait for the lock (it would stall the loop
        # thread once per write): the connection's busy timeout is 0 until it heals.
        assert store._db.execute("PRAGMA busy_timeout").fetchone()[0] == 0
        assert not store.probe().writable
        lock.release()
        assert store.probe() == StoreHealth(True, None, None)
        assert store._db.execute("PRAGMA busy_timeout").fetchone()[0] == 50
        assert store.append("d", message_id=3, payload=b"three", priority=1).seq == 2
        assert [m.payload for m in store.range("d")] == [b"one", b"three"]
    finally:
        store.close()


def test_the_next_successful_write_heals_without_a_probe(tmp_path):
    path = tmp_path / "s.db"
    store = SQLiteStore(path, timeout=0.05)
    try:
        lock = WriteLock(path)
        with pytest.raises(StoreUnavailable):
            store.append("d", message_id=1, payload=b"x", priority=1)
        lock.release()
        assert store.append("d", message_id=2, payload=b"y", priority=1).seq == 1
        assert store.health().writable
    finally:
        store.close()


def test_revocation_reads_work_while_the_store_is_locked(tmp_path):
    """HELLO checks revocations: a store opened during an outage reads them without writing."""
    path = tmp_path / "s.db"
    SQLiteStore(path).close()  # a store file made before any revocation: no revocations table
    lock = WriteLock(path)
    store = SQLiteStore(path, timeout=0.05)
    try:
        assert store.revoked_before("d") is None
        lock.release()
        store.set_revoked_before("d", 100.0)
    finally:
        store.close()
    lock = WriteLock(path)
    store = SQLiteStore(path, timeout=0.05)
    try:
        assert store.revoked_before("d") == 100.0
        assert store.health().writable  # nothing was written, so nothing failed
    finally:
        lock.release()
        store.close()


def test_health_of_a_closed_store_still_answers(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    store.close()
    assert store.health().writable
    with pytest.raises(StoreError, match="closed"):
        store.probe()


def test_a_full_sqlite_store_is_unwritable_until_there_is_room(tmp_path):
    """SQLITE_FULL, made real with the page limit SQLite enforces (as a full disk would fail the write)."""
    store = SQLiteStore(tmp_path / "s.db", timeout=0.05)
    try:
        store.append("d", message_id=1, payload=b"first", priority=1)
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count={pages}")
        with pytest.raises(StoreUnavailable, match="full"):
            for i in range(100):
                store.append("d", message_id=2 + i, payload=b"x" * 4000, priority=1)
        assert store.health().error == "database or disk is full"
        seqs = [m.seq for m in store.range("d", limit=1000)]
        assert seqs == list(range(1, len(seqs) + 1))  # what was stored is intact; the failed append left nothing
        store._db.execute("PRAGMA max_page_count=1073741823")
        assert store.probe().writable
        assert store.append("d", message_id=999, payload=b"after", priority=1).seq == len(seqs) + 1
    finally:
        store.close()

"""Store.set_revoked_before / revoked_before: the table behind pushcore.Server.revoke."""
from __future__ import annotations

import sqlite3

import pytest
from store_kinds import STORE_KINDS

from pushcore.store import PRIORITY_HIGH, SQLiteStore, StoreError

T0 = 1_700_000_000.0


@pytest.fixture(params=STORE_KINDS)
def store(request, new_store):
    return new_store(request.param)


def test_set_and_read_back(store):
    assert store.revoked_before("d1") is None
    store.set_revoked_before("d1", T0)
    assert store.revoked_before("d1") == T0
    assert store.revoked_before("d2") is None
    store.set_revoked_before("d1", T0 - 5)  # the store replaces; Server.revoke keeps the later one
    assert store.revoked_before("d1") == T0 - 5


@pytest.mark.parametrize("ts, error", [("x", TypeError), (True, TypeError), (float("nan"), ValueError), (-1, ValueError)])
def test_bad_times_are_refused(store, ts, error):
    with pytest.raises(error, match="ts"):
        store.set_revoked_before("d1", ts)
    with pytest.raises(ValueError, match="device_id"):
        store.set_revoked_before("", T0)
    assert store.revoked_before("d1") is None


def test_closed_store_refuses(store):
    store.close()
    with pytest.raises(StoreError):
        store.revoked_before("d1")


def test_sqlite_keeps_revocations_across_a_reopen(tmp_path):
    path = tmp_path / "s.db"
    with SQLiteStore(path) as first:
        first.set_revoked_before("d1", T0)
    with SQLiteStore(path) as second:
        assert second.revoked_before("d1") == T0


def test_a_store_file_from_before_revocations_gains_the_table(tmp_path):
    path = tmp_path / "old.db"
    with SQLiteStore(path) as old:
        old.append("d1", message_id=1, payload=b"x", priority=PRIORITY_HIGH)
    db = sqlite3.connect(path)
    db.execute("DROP TABLE IF EXISTS revocations")  # as a file written by an older pushcore
    db.commit()
    db.close()
    with SQLiteStore(path) as reopened:
        assert reopened.revoked_before("d1") is None
        reopened.set_revoked_before("d1", T0)
        assert reopened.revoked_before("d1") == T0
        assert [m.payload for m in reopened.range("d1", 0)] == [b"x"]

"""Idempotency keys in the store: a repeated key gives the original seq and stores nothing new."""
from __future__ import annotations

import sqlite3

import pytest
from store_kinds import STORE_KINDS

from pushcore.errors import MessageTooLarge
from pushcore.store import (
    DEFAULT_IDEMPOTENCY_WINDOW,
    MAX_IDEMPOTENCY_KEY_BYTES,
    PRIORITY_HIGH,
    PRIORITY_LOW,
    IdempotencyConflict,
    MemoryStore,
    NewMessage,
    ReplayedMessage,
    SQLiteStore,
    Store,
    StoreError,
)

T0 = 1_700_000_000.0


@pytest.fixture(params=STORE_KINDS)
def make_store(request, new_store):
    made = 0

    def make(**options) -> Store:
        nonlocal made
        made += 1
        return new_store(request.param, f"store{made}", **options)

    return make


@pytest.fixture
def store(make_store) -> Store:
    return make_store()


def push(store: Store, device="d1", payload=b"hello", key="k1", now=T0, **fields):
    fields.setdefault("message_id", 7)
    fields.setdefault("priority", PRIORITY_HIGH)
    return store.append(device, payload=payload, idempotency_key=key, now=now, **fields)


def test_repeated_key_returns_the_original_and_stores_nothing(store):
    first = push(store, message_id=11)
    assert not isinstance(first, ReplayedMessage)
    again = push(store, message_id=99, now=T0 + 5)  # a retry: the gateway may mint another id
    assert isinstance(again, ReplayedMessage)
    assert (again.seq, again.message_id) == (first.seq, 11)
    assert store.stats().messages == 1
    assert store.last_seq("d1") == 1
    assert [m.seq for m in store.range("d1", now=T0)] == [1]
    # a new key is a new message
    assert push(store, key="k2").seq == 2
    assert store.stats().messages == 2


def test_replay_still_answers_after_the_message_was_acked(store):
    first = push(store)
    assert store.ack("d1", first.seq) == 1
    again = push(store, now=T0 + 1)
    assert isinstance(again, ReplayedMessage) and again.seq == first.seq
    assert store.stats().messages == 0 and store.last_seq("d1") == 1


def test_expiry_and_message_id_are_not_part_of_the_identity(store):
    first = push(store, expiry=int(T0) + 60)
    again = push(store, expiry=int(T0) + 65, now=T0 + 5)  # ttl recomputed on the retry
    assert again.seq == first.seq and store.stats().messages == 1


@pytest.mark.parametrize("change", [
    {"device": "d2"},
    {"payload": b"other"},
    {"priority": PRIORITY_LOW},
    {"collapse_key": "ck"},
    {"topic": "news"},
])
def test_same_key_for_another_message_is_a_conflict(store, change):
    push(store)
    with pytest.raises(IdempotencyConflict, match="k1") as info:
        push(store, **change)
    assert info.value.key == "k1"
    assert isinstance(info.value, ValueError)
    assert store.stats().messages == 1
    assert store.last_seq("d2") == 0


def test_batch_keys_per_item(store):
    batch = [
        NewMessage("d1", 1, b"a", PRIORITY_HIGH, idempotency_key="b-0"),
        NewMessage("d2", 2, b"b", PRIORITY_HIGH, idempotency_key="b-1"),
        NewMessage("d1", 3, b"c", PRIORITY_HIGH),  # no key: always new
    ]
    first = store.append_batch(batch, now=T0)
    assert [m.seq for m in first] == [1, 1, 2]
    again = store.append_batch(batch, now=T0 + 1)
    assert [type(m) is ReplayedMessage for m in again] == [True, True, False]
    assert [m.seq for m in again] == [1, 1, 3]
    assert store.stats().messages == 4


def test_a_key_twice_in_one_batch_is_stored_once(store):
    item = NewMessage("d1", 1, b"a", PRIORITY_HIGH, idempotency_key="same")
    out = store.append_batch([item, item], now=T0)
    assert [m.seq for m in out] == [1, 1]
    assert isinstance(out[1], ReplayedMessage)
    assert store.stats().messages == 1


def test_a_conflict_in_a_batch_stores_nothing(store):
    push(store, key="taken")
    batch = [
        NewMessage("d3", 1, b"fine", PRIORITY_HIGH, idempotency_key="new"),
        NewMessage("d3", 2, b"different", PRIORITY_HIGH, idempotency_key="taken"),
    ]
    with pytest.raises(IdempotencyConflict, match=r"messages\[1\]") as info:
        store.append_batch(batch, now=T0)
    assert info.value.index == 1
    assert store.last_seq("d3") == 0 and store.stats().messages == 1
    # "new" was not remembered: it stores now
    assert store.append_batch(batch[:1], now=T0)[0].seq == 1


def test_keys_expire_after_the_window_and_purge_drops_them(make_store):
    store = make_store(idempotency_window=60)
    assert store.idempotency_window == 60
    first = push(store)
    assert push(store, now=T0 + 59).seq == first.seq
    assert store.purge_expired(T0 + 59) == 0
    assert store.purge_expired(T0 + 60) == 1  # the key; no message expired
    assert store.stats().messages == 1
    # past the window the key is free again: a new message
    assert push(store, payload=b"another", now=T0 + 61).seq == 2


def test_expired_key_is_not_honoured_even_before_a_purge(make_store):
    store = make_store(idempotency_window=10)
    push(store)
    assert push(store, payload=b"new", now=T0 + 11).seq == 2  # no conflict: the old key lapsed


def test_purge_expired_takes_a_limit(make_store):
    store = make_store(idempotency_window=1)
    for i in range(5):
        push(store, key=f"k{i}", payload=b"%d" % i)
    assert store.purge_expired(T0 + 2, limit=2) == 2
    assert store.purge_expired(T0 + 2, limit=10) == 3
    assert store.purge_expired(T0 + 2) == 0


def test_default_window_is_a_day(store):
    assert DEFAULT_IDEMPOTENCY_WINDOW == 86400
    assert store.idempotency_window == 86400
    push(store)
    assert store.purge_expired(T0 + 86399) == 0
    assert store.purge_expired(T0 + 86400) == 1


@pytest.mark.parametrize("window", [0, -1, float("nan"), "1"])
def test_bad_window_is_refused(make_store, window):
    with pytest.raises((ValueError, TypeError), match="idempotency_window"):
        make_store(idempotency_window=window)


def test_key_limits(store):
    push(store, key="x" * MAX_IDEMPOTENCY_KEY_BYTES)
    with pytest.raises(MessageTooLarge) as info:
        push(store, key="x" * (MAX_IDEMPOTENCY_KEY_BYTES + 1))
    assert info.value.field == "idempotency_key" and info.value.limit == 256
    for bad in ("", "has space", "tab\t", "é"):
        with pytest.raises(ValueError, match="idempotency_key"):
            push(store, key=bad)
    with pytest.raises(TypeError, match="idempotency_key"):
        push(store, key=b"bytes")
    assert store.stats().messages == 1


def test_keys_survive_a_restart_on_sqlite(tmp_path):
    path = tmp_path / "s.db"
    with SQLiteStore(path) as store:
        first = push(store, message_id=42)
        store.ack("d1", first.seq)
    with SQLiteStore(path) as store:
        again = push(store, now=T0 + 3600)
        assert isinstance(again, ReplayedMessage)
        assert (again.seq, again.message_id) == (1, 42)
        assert store.last_seq("d1") == 1 and store.stats().messages == 0
        with pytest.raises(IdempotencyConflict):
            push(store, payload=b"changed", now=T0 + 3600)


def test_a_version_1_file_is_migrated(tmp_path):
    path = tmp_path / "old.db"
    with SQLiteStore(path) as store:
        store.append("d1", message_id=1, payload=b"old", priority=PRIORITY_HIGH, now=T0)
    db = sqlite3.connect(path)  # make it the layout pushcore wrote before idempotency keys
    db.execute("DROP TABLE idempotency_keys")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    with SQLiteStore(path) as store:
        assert [m.payload for m in store.range("d1", now=T0)] == [b"old"]
        first = push(store)
        assert first.seq == 2
        assert push(store).seq == 2
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()


def test_a_migration_blocked_by_another_writer_says_so(tmp_path):
    path = tmp_path / "old.db"
    SQLiteStore(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP TABLE idempotency_keys")
    db.execute("PRAGMA user_version=1")
    db.execute("BEGIN EXCLUSIVE")  # another process writing it
    try:
        with pytest.raises(StoreError, match="holds its write lock") as info:
            SQLiteStore(path, timeout=0.05)
        assert "is it a SQLite file" not in str(info.value)
    finally:
        db.execute("COMMIT")
        db.close()
    with SQLiteStore(path) as store:  # once it is done the migration goes through
        assert push(store).seq == 1


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.db"
    SQLiteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=3")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="version 3"):
        SQLiteStore(path)


def test_a_store_without_key_support_refuses_keys():
    class Bare(MemoryStore):
        keeps_idempotency_keys = False

    with Bare() as store:
        with pytest.raises(StoreError, match="idempotency"):
            push(store)
        store.append("d1", message_id=1, payload=b"x", priority=PRIORITY_HIGH)

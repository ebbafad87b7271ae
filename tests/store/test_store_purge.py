"""Purging in batches, dropping empty device records, and live backlog sizes: both stores, one contract.

A dropped device record keeps exactly-once: the store keeps one number, the
*seq floor* (the highest counter of any record it dropped), and a device
without a record gets its next seq above it, so a device that still holds
the old last seq never takes a new message for one it has seen, and its
HELLO claim never acks a message it has not seen.
"""
from __future__ import annotations

import sqlite3

import pytest
from store_kinds import STORE_KINDS

from pushcore.store import PRIORITY_HIGH, SQLiteStore, Store

T0 = 1_700_000_000.0


@pytest.fixture(params=STORE_KINDS)
def store(request, new_store):
    return new_store(request.param)


def put(store: Store, device: str, n: int = 1, **fields) -> list[int]:
    return [
        store.append(device, message_id=1 + i, payload=b"m%d" % i, priority=PRIORITY_HIGH,
                     now=T0, **fields).seq
        for i in range(n)
    ]


def test_purge_with_a_limit_deletes_at_most_that_many_and_the_rest_later(store):
    for d in range(10):
        put(store, f"d{d}", 5, expiry=int(T0) + 5)
    put(store, "keep", 2)
    done = []
    while True:
        removed = store.purge_expired(now=T0 + 5, limit=7)
        assert 0 <= removed <= 7
        done.append(removed)
        if removed < 7:
            break
    assert sum(done) == 50 and len(done) == 8  # 7 x 7, then the last 1
    assert store.stats().messages == 2 and store.stats().expired == 50
    assert store.purge_expired(now=T0 + 5, limit=7) == 0


def test_purge_limit_is_checked(store):
    for bad in (0, -1):
        with pytest.raises(ValueError, match="limit"):
            store.purge_expired(now=T0, limit=bad)
    with pytest.raises(TypeError, match="limit"):
        store.purge_expired(now=T0, limit=1.5)  # type: ignore[arg-type]


def test_purge_without_a_limit_deletes_everything_expired(store):
    put(store, "a", 3, expiry=int(T0) + 1)
    put(store, "b", 1, expiry=int(T0) + 100)
    assert store.purge_expired(now=T0 + 2) == 3
    assert store.stats().messages == 1


def test_backlog_sizes_count_only_live_messages(store):
    put(store, "a", 3, expiry=int(T0) + 1)  # a: all expire
    put(store, "b", 1, expiry=int(T0) + 1)
    put(store, "b", 1)  # b: one lives on
    put(store, "c", 2)
    assert store.backlog_sizes(now=T0) == (7, 3)
    assert store.backlog_sizes(now=T0 + 1) == (3, 2)
    assert store.stats().messages == 7  # stored until purged
    assert sum(store.backlog(d, now=T0 + 1) for d in "abc") == 3
    assert len(store.devices_with_backlog(now=T0 + 1)) == 2
    store.ack("c", 1)
    assert store.backlog_sizes(now=T0 + 1) == (2, 2)
    store.purge_expired(now=T0 + 1)
    assert store.backlog_sizes(now=T0 + 1) == (2, 2) == (store.stats().messages, store.stats().devices)


def test_empty_device_records_are_dropped_in_batches(store):
    for d in range(12):
        put(store, f"d{d}", 2)
        store.ack(f"d{d}", 2)
    put(store, "busy", 1)
    dropped = 0
    while True:
        n, more = store.drop_empty_devices(limit=5)
        assert n <= 5
        dropped += n
        if not more:
            break
    assert dropped == 12
    assert store.drop_empty_devices(limit=5) == (0, False)
    assert store.last_seq("busy") == 1 and store.backlog("busy") == 1
    assert all(store.last_seq(f"d{d}") == 0 for d in range(12))


def test_drop_empty_devices_checks_its_limit(store):
    with pytest.raises(ValueError, match="limit"):
        store.drop_empty_devices(limit=0)


def test_a_dropped_device_gets_seqs_above_what_it_was_given(store):
    """The device holds last seq 3; its record is dropped; new messages come while it is away."""
    put(store, "d", 3)
    store.ack("d", 3)
    assert store.drop_empty_devices() == (1, False)
    assert store.last_seq("d") == 0  # no counter: a HELLO claim is taken (gateway/server.py)
    new = put(store, "d", 5)
    assert all(seq > 3 for seq in new) and new == sorted(new)
    # the device reconnects claiming 3: an ACK of seqs it has, none of the new ones
    assert store.ack("d", 3) == 0
    assert [m.seq for m in store.range("d", 3, 100)] == new


def test_the_floor_is_the_highest_dropped_counter_and_covers_new_devices(store):
    put(store, "a", 2)
    put(store, "b", 9)
    store.ack("a", 2)
    store.ack("b", 9)
    store.drop_empty_devices()
    assert put(store, "a", 1) == [10]  # above every dropped counter, its own (2) included
    assert put(store, "never-seen", 1) == [10]


def test_a_claim_on_a_dropped_device_raises_its_counter_as_before(store):
    put(store, "d", 4)
    store.ack("d", 4)
    store.drop_empty_devices()
    assert store.advance_seq("d", 4) == 4
    assert put(store, "d", 1) == [5]


def test_subscriptions_and_revocations_outlive_the_record(store):
    put(store, "d", 1)
    store.subscribe("d", ["news"])
    store.set_revoked_before("d", T0)
    store.ack("d", 1)
    assert store.drop_empty_devices() == (1, False)
    assert store.subscribers("news") == {"d"} and store.topics("d") == {"news"}
    assert store.revoked_before("d") == T0


def test_devices_with_messages_even_expired_ones_keep_their_record(store):
    put(store, "d", 1, expiry=int(T0) + 1)
    assert store.drop_empty_devices() == (0, False)
    assert store.last_seq("d") == 1
    store.purge_expired(now=T0 + 1)
    assert store.drop_empty_devices() == (1, False)


def test_sqlite_keeps_the_floor_across_a_reopen(tmp_path):
    path = tmp_path / "s.db"
    with SQLiteStore(path) as store:
        put(store, "d", 7)
        store.ack("d", 7)
        store.drop_empty_devices()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM devices").fetchone()[0] == 0
    with SQLiteStore(path) as store:
        assert put(store, "d", 1) == [8]


def test_sqlite_drops_only_records_that_are_empty_when_it_deletes(tmp_path):
    """Two stores (two processes) on one file: one drops while the other appends."""
    path = tmp_path / "s.db"
    with SQLiteStore(path) as one, SQLiteStore(path) as two:
        put(one, "d", 2)
        one.ack("d", 2)
        put(two, "e", 1)
        assert one.drop_empty_devices() == (1, False)
        assert put(two, "d", 1) == [3]
        assert two.last_seq("e") == 1


def test_a_claim_below_the_floor_on_a_dropped_record_never_hands_a_seq_out_twice(store):
    def append(payload: bytes, **fields) -> int:
        return store.append("dev", message_id=len(payload), payload=payload, priority=PRIORITY_HIGH,
                            now=T0, **fields).seq

    # seq 1 acked, seq 2 expired unseen, the record dropped: the floor is 2.
    assert append(b"a", idempotency_key="K-a") == 1
    assert append(b"bb", expiry=int(T0) + 1, idempotency_key="K-b") == 2
    store.ack("dev", 1)
    store.purge_expired(now=T0 + 2)
    assert store.drop_empty_devices() == (1, False)
    # The device reconnects claiming 1 (all it saw): its counter comes back at the floor, not at 1.
    assert store.advance_seq("dev", 1) == 2
    assert append(b"ccc") == 3
    # the key of the expired seq 2 still names seq 2, and no other message has it
    assert append(b"bb", expiry=int(T0) + 1, idempotency_key="K-b") == 2
    assert [m.seq for m in store.range("dev", 0, now=T0)] == [3]

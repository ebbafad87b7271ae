"""pushcore.store: MemoryStore and SQLiteStore against the same contract."""
from __future__ import annotations

import os
import sqlite3
import threading

import pytest
from store_kinds import STORE_KINDS

from pushcore.store import (
    PRIORITY_HIGH,
    PRIORITY_LOW,
    MemoryStore,
    NewMessage,
    SQLiteStore,
    Store,
    StoredMessage,
    StoreError,
    StoreStats,
    open_store,
)

T0 = 1_700_000_000.0


@pytest.fixture(params=STORE_KINDS)
def make_store(request, new_store):
    """A factory of fresh stores of the parametrized kind (closed after the test)."""
    made = 0

    def make(**options) -> Store:
        nonlocal made
        made += 1
        return new_store(request.param, f"store{made}", **options)

    return make


@pytest.fixture
def store(make_store) -> Store:
    return make_store()


def put(store: Store, device: str, n: int = 1, *, now: float = T0, **fields) -> list[StoredMessage]:
    """Append *n* messages (message id 1000+i, payload b"m<i>" unless given) and return them."""
    return [
        store.append(
            device,
            **{"message_id": 1000 + i, "payload": b"m%d" % i, "priority": PRIORITY_HIGH, **fields},
            now=now,
        )
        for i in range(n)
    ]


def seqs(messages) -> list[int]:
    return [m.seq for m in messages]


# ---- seq counters ----------------------------------------------------------------------------


def test_seq_increments_per_device_independently(store):
    assert store.last_seq("a") == 0
    assert seqs(put(store, "a", 3)) == [1, 2, 3]
    assert seqs(put(store, "b", 2)) == [1, 2]
    assert seqs(put(store, "a", 1)) == [4]
    assert store.last_seq("a") == 4 and store.last_seq("b") == 2
    assert store.last_seq("never-seen") == 0


def test_appended_message_has_every_field(store):
    m = store.append(
        "dev",
        message_id=2**64 - 1,
        payload=bytearray(b"\x00\xffpayload"),
        priority=PRIORITY_LOW,
        expiry=2**32 - 1,
        collapse_key="score",
        topic="news",
        now=T0 + 0.25,
    )
    assert m == StoredMessage(1, 2**64 - 1, b"\x00\xffpayload", 0, 2**32 - 1, "score", "news", T0 + 0.25)
    assert type(m.payload) is bytes
    assert store.range("dev", 0, 10, now=T0) == [m]


def test_message_id_round_trips_across_the_signed_boundary(store):
    for mid in (0, 1, 2**63 - 1, 2**63, 2**64 - 1):
        store.append("d", message_id=mid, payload=b"", priority=1, now=T0)
    assert [m.message_id for m in store.range("d", 0, 10, now=T0)] == [0, 1, 2**63 - 1, 2**63, 2**64 - 1]


def test_seq_survives_full_ack(store):
    put(store, "d", 3)
    assert store.ack("d", 3) == 3
    assert store.backlog("d", now=T0) == 0
    assert seqs(put(store, "d", 1)) == [4]


def test_advance_seq_only_raises(store):
    assert store.advance_seq("d", 0) == 0
    assert store.last_seq("d") == 0
    assert store.advance_seq("d", 10) == 10
    assert store.advance_seq("d", 5) == 10
    assert seqs(put(store, "d", 1)) == [11]
    assert store.advance_seq("d", 11) == 11


def test_exhausted_counter_is_a_store_error(store):
    store.advance_seq("d", 2**63 - 1)
    with pytest.raises(StoreError, match="exhausted"):
        put(store, "d")
    assert store.range("d", 0, 10, now=T0) == []


# ---- range -----------------------------------------------------------------------------------


def test_range_after_seq_in_order_with_limit(store):
    put(store, "d", 10)
    assert seqs(store.range("d", 0, 100, now=T0)) == list(range(1, 11))
    assert seqs(store.range("d", 4, 3, now=T0)) == [5, 6, 7]
    assert seqs(store.range("d", 9, 100, now=T0)) == [10]
    assert store.range("d", 10, 100, now=T0) == []
    assert store.range("d", 2**64 - 1, 100, now=T0) == []
    assert store.range("unknown", 0, 100, now=T0) == []


def test_range_pages_like_fetch(store):
    put(store, "d", 25)
    got, after = [], 0
    while page := store.range("d", after, 10, now=T0):
        got += seqs(page)
        after = page[-1].seq
    assert got == list(range(1, 26))


def test_range_default_arguments(store):
    put(store, "d", 3)
    assert seqs(store.range("d")) == [1, 2, 3]


# ---- ack -------------------------------------------------------------------------------------


def test_ack_trims_and_is_idempotent(store):
    put(store, "d", 5)
    put(store, "other", 2)
    assert store.ack("d", 3) == 3
    assert seqs(store.range("d", 0, 100, now=T0)) == [4, 5]
    assert store.ack("d", 3) == 0
    assert store.ack("d", 2) == 0
    assert store.ack("d", 0) == 0
    assert store.ack("unknown", 7) == 0
    assert seqs(store.range("other", 0, 100, now=T0)) == [1, 2]


def test_ack_many_trims_several_devices_at_once(store):
    put(store, "a", 5)
    put(store, "b", 3)
    put(store, "c", 2)
    assert store.ack_many([("a", 2), ("b", 9), ("a", 4), ("c", 0), ("nobody", 3)]) == 7
    assert seqs(store.range("a", now=T0)) == [5]
    assert store.range("b", now=T0) == []
    assert seqs(store.range("c", now=T0)) == [1, 2]
    assert store.ack_many([("a", 4)]) == 0
    assert store.ack_many([]) == 0
    assert store.stats().messages == 3


def test_ack_many_bad_arguments(store):
    put(store, "a", 2)
    for bad, error in (
        ("a1", TypeError),
        ([("a", 1, 2)], TypeError),
        (["a"], TypeError),
        ([("a", -1)], ValueError),
        ([("a", 1), ("", 1)], ValueError),
        ([("a", 1), (None, 0)], TypeError),
    ):
        with pytest.raises(error):
            store.ack_many(bad)
    assert store.backlog("a", now=T0) == 2  # nothing applied


def test_ack_beyond_last_seq_removes_all_and_keeps_counter(store):
    put(store, "d", 3)
    assert store.ack("d", 2**64 - 1) == 3
    assert store.last_seq("d") == 3
    assert seqs(put(store, "d", 1)) == [4]


def test_ack_with_gaps(store):
    put(store, "d", 2)
    put(store, "d", 1, collapse_key="k")  # seq 3
    put(store, "d", 1, collapse_key="k")  # seq 4 replaces 3
    assert seqs(store.range("d", 0, 100, now=T0)) == [1, 2, 4]
    assert store.ack("d", 3) == 2
    assert seqs(store.range("d", 0, 100, now=T0)) == [4]


# ---- expiry ----------------------------------------------------------------------------------


def test_expired_messages_are_skipped_then_purged(store):
    put(store, "d", 1)  # seq 1, never expires
    put(store, "d", 1, expiry=int(T0) + 10)  # seq 2
    put(store, "d", 1, expiry=int(T0) + 20)  # seq 3
    put(store, "e", 1, expiry=int(T0) + 10)
    assert seqs(store.range("d", 0, 10, now=T0 + 9.5)) == [1, 2, 3]
    # expiry == now counts as expired
    assert seqs(store.range("d", 0, 10, now=T0 + 10)) == [1, 3]
    assert store.backlog("d", now=T0 + 10) == 2
    assert store.backlog("d", 1, now=T0 + 10) == 1
    # expired messages do not use up the limit
    assert seqs(store.range("d", 0, 2, now=T0 + 10)) == [1, 3]
    assert store.stats().messages == 4  # still stored until purged
    assert store.purge_expired(now=T0 + 10) == 2
    assert store.stats() == StoreStats(messages=2, devices=1, dropped_by_cap=0, collapsed=0, expired=2)
    assert store.purge_expired(now=T0 + 10) == 0
    assert seqs(store.range("d", 0, 10, now=T0)) == [1, 3]
    assert store.devices_with_backlog(now=T0 + 20) == ["d"]


def test_purge_after_ack_does_not_count_acked(store):
    put(store, "d", 3, expiry=int(T0) + 5)
    store.ack("d", 2)
    assert store.purge_expired(now=T0 + 5) == 1
    assert store.stats().expired == 1


def test_devices_with_backlog(store):
    put(store, "b", 1)
    put(store, "a", 1, expiry=int(T0) + 5)
    put(store, "c", 1)
    store.ack("c", 1)
    assert store.devices_with_backlog(now=T0) == ["a", "b"]
    assert store.devices_with_backlog(now=T0 + 5) == ["b"]


# ---- collapse --------------------------------------------------------------------------------


def test_collapse_keeps_only_the_newest(store):
    put(store, "d", 1, collapse_key="score", payload=b"1-0")
    put(store, "d", 1, collapse_key="other")
    put(store, "d", 1)
    newest = put(store, "d", 1, collapse_key="score", payload=b"2-0")[0]
    put(store, "e", 1, collapse_key="score")  # another device: untouched
    stored = store.range("d", 0, 10, now=T0)
    assert seqs(stored) == [2, 3, 4]
    assert [m for m in stored if m.collapse_key == "score"] == [newest]
    assert store.stats().collapsed == 1
    assert seqs(store.range("e", 0, 10, now=T0)) == [1]


def test_empty_collapse_key_never_collapses(store):
    put(store, "d", 3, collapse_key="")
    assert seqs(store.range("d", 0, 10, now=T0)) == [1, 2, 3]
    assert store.stats().collapsed == 0


def test_collapse_after_ack_has_nothing_to_replace(store):
    put(store, "d", 1, collapse_key="k")
    store.ack("d", 1)
    put(store, "d", 1, collapse_key="k")
    assert seqs(store.range("d", 0, 10, now=T0)) == [2]
    assert store.stats().collapsed == 0


# ---- cap -------------------------------------------------------------------------------------


def test_cap_drops_the_oldest(make_store):
    store = make_store(max_messages=3)
    put(store, "d", 5)
    assert seqs(store.range("d", 0, 10, now=T0)) == [3, 4, 5]
    assert store.stats().dropped_by_cap == 2
    put(store, "other", 3)  # the cap is per device
    assert store.backlog("other", now=T0) == 3
    assert store.stats().dropped_by_cap == 2


def test_cap_drops_expired_before_oldest(make_store):
    store = make_store(max_messages=3)
    put(store, "d", 1)  # 1
    put(store, "d", 1, expiry=int(T0) + 5)  # 2
    put(store, "d", 1)  # 3
    put(store, "d", 1, now=T0 + 6)  # 4: over the cap; 2 has expired, so 2 goes, not 1
    assert seqs(store.range("d", 0, 10, now=T0 + 6)) == [1, 3, 4]
    s = store.stats()
    assert (s.expired, s.dropped_by_cap) == (1, 0)
    put(store, "d", 1, now=T0 + 6)  # 5: nothing expired, the oldest goes
    assert seqs(store.range("d", 0, 10, now=T0 + 6)) == [3, 4, 5]
    assert store.stats().dropped_by_cap == 1


def test_cap_with_gaps_from_collapse(make_store):
    store = make_store(max_messages=2)
    put(store, "d", 1)  # 1
    for _ in range(5):
        put(store, "d", 1, collapse_key="k")  # 2..6, each replacing the last
    # the seq span is 6 but only 2 messages are stored: nothing dropped
    assert seqs(store.range("d", 0, 10, now=T0)) == [1, 6]
    assert store.stats().dropped_by_cap == 0
    put(store, "d", 1)  # 7
    assert seqs(store.range("d", 0, 10, now=T0)) == [6, 7]
    assert store.stats().dropped_by_cap == 1


def test_cap_of_one(make_store):
    store = make_store(max_messages=1)
    put(store, "d", 4)
    assert seqs(store.range("d", 0, 10, now=T0)) == [4]


# ---- append_many -----------------------------------------------------------------------------


def test_append_many_fans_out_with_per_device_seqs(store):
    put(store, "b", 2)
    out = store.append_many(
        ["a", "b", "c", "a"], message_id=77, payload=b"hi", priority=PRIORITY_LOW,
        topic="news", now=T0,
    )
    assert [m.seq for m in out] == [1, 3, 1]
    assert {m.message_id for m in out} == {77}
    assert all(m.topic == "news" and m.payload == b"hi" for m in out)
    assert store.range("b", 2, 10, now=T0) == [out[1]]
    assert store.append_many([], message_id=1, payload=b"", priority=1) == []
    assert store.append_many(iter(["x"]), message_id=1, payload=b"", priority=1, now=T0)[0].seq == 1


def test_append_many_applies_collapse_and_cap(make_store):
    store = make_store(max_messages=2)
    for _ in range(3):
        store.append_many(["a", "b"], message_id=1, payload=b"", priority=1, now=T0)
    store.append_many(["a", "b"], message_id=2, payload=b"", priority=1, collapse_key="k", now=T0)
    store.append_many(["a", "b"], message_id=3, payload=b"", priority=1, collapse_key="k", now=T0)
    for device in ("a", "b"):
        assert seqs(store.range(device, 0, 10, now=T0)) == [3, 5]
    s = store.stats()
    assert (s.dropped_by_cap, s.collapsed) == (4, 2)


def test_append_many_is_all_or_nothing(store):
    store.advance_seq("full", 2**63 - 1)
    with pytest.raises(StoreError):
        store.append_many(["a", "full", "b"], message_id=1, payload=b"", priority=1, now=T0)
    assert store.last_seq("a") == 0 and store.range("a", now=T0) == []
    assert store.stats().messages == 0


# ---- append_batch ----------------------------------------------------------------------------


def test_append_batch_stores_different_messages_in_order(store):
    put(store, "b", 1)
    out = store.append_batch(
        [
            NewMessage("a", 1, b"one", PRIORITY_HIGH),
            NewMessage("b", 2, b"two", PRIORITY_LOW, expiry=int(T0) + 60, topic="t"),
            NewMessage("a", 3, b"three", PRIORITY_HIGH, collapse_key="k"),
            NewMessage("a", 4, b"four", PRIORITY_HIGH, collapse_key="k"),
        ],
        now=T0,
    )
    assert [(m.seq, m.message_id, m.payload) for m in out] == [
        (1, 1, b"one"), (2, 2, b"two"), (2, 3, b"three"), (3, 4, b"four"),
    ]
    assert out[1].expiry == int(T0) + 60 and out[1].topic == "t" and out[1].priority == 0
    # the collapse key applies within the batch, in order
    assert store.range("a", 0, 10, now=T0) == [out[0], out[3]]
    assert store.stats().collapsed == 1
    assert store.append_batch([], now=T0) == []


def test_append_batch_applies_the_cap_in_order(make_store):
    store = make_store(max_messages=2)
    out = store.append_batch([NewMessage("d", i, b"", 1) for i in range(5)], now=T0)
    assert store.range("d", 0, 10, now=T0) == out[3:]
    assert store.stats().dropped_by_cap == 3


def test_append_batch_is_all_or_nothing(store):
    store.advance_seq("full", 2**63 - 2)  # room for exactly one more
    batch = [NewMessage("a", 1, b"", 1), NewMessage("full", 2, b"", 1), NewMessage("full", 3, b"", 1)]
    with pytest.raises(StoreError, match="exhausted"):
        store.append_batch(batch, now=T0)
    assert store.last_seq("a") == 0 and store.last_seq("full") == 2**63 - 2
    assert store.stats().messages == 0
    with pytest.raises(ValueError, match="priority"):
        store.append_batch([NewMessage("a", 1, b"", 1), NewMessage("a", 1, b"", 5)], now=T0)
    assert store.stats().messages == 0


def test_append_batch_bad_items(store):
    with pytest.raises(TypeError, match="NewMessage"):
        store.append_batch([("a", 1, b"", 1)])
    with pytest.raises(TypeError, match="append\\(\\)"):
        store.append_batch(NewMessage("a", 1, b"", 1))
    with pytest.raises(ValueError, match="device_id"):
        store.append_batch([NewMessage("", 1, b"", 1)])


# ---- stats -----------------------------------------------------------------------------------


def test_stats(store):
    assert store.stats() == StoreStats(0, 0, 0, 0, 0)
    put(store, "a", 2)
    put(store, "b", 1)
    assert store.stats() == StoreStats(messages=3, devices=2, dropped_by_cap=0, collapsed=0, expired=0)
    store.ack("b", 1)
    assert store.stats().devices == 1


# ---- subscriptions ---------------------------------------------------------------------------


def test_subscriptions(store):
    assert store.subscribe("a", ["news", "sport", "news"]) == 2
    assert store.subscribe("a", ["news"]) == 0
    assert store.subscribe("b", ("news",)) == 1
    assert store.subscribers("news") == {"a", "b"}
    assert store.subscribers("sport") == {"a"}
    assert store.subscribers("none") == set()
    assert store.topics("a") == {"news", "sport"}
    assert store.unsubscribe("a", ["news", "weather"]) == 1
    assert store.unsubscribe("a", ["news"]) == 0
    assert store.subscribers("news") == {"b"}
    assert store.topics("a") == {"sport"}
    assert store.topics("nobody") == set()
    assert store.subscribe("a", []) == 0 and store.unsubscribe("zzz", ["x"]) == 0
    # returned sets are copies
    store.subscribers("news").add("intruder")
    assert store.subscribers("news") == {"b"}


def test_subscribers_feed_append_many(store):
    for device in ("a", "b", "c"):
        store.subscribe(device, ["t"])
    out = store.append_many(sorted(store.subscribers("t")), message_id=5, payload=b"x", priority=1, topic="t", now=T0)
    assert [m.seq for m in out] == [1, 1, 1]


# ---- lifetime, threads ------------------------------------------------------------------------


def test_closed_store_refuses_calls(store):
    put(store, "d", 1)
    store.close()
    store.close()  # idempotent
    assert store.closed
    for call in (
        lambda: put(store, "d"),
        lambda: store.range("d", now=T0),
        lambda: store.ack("d", 1),
        lambda: store.last_seq("d"),
        lambda: store.stats(),
        lambda: store.subscribe("d", ["t"]),
    ):
        with pytest.raises(StoreError, match="closed"):
            call()


def test_context_manager_closes(make_store):
    with make_store() as store:
        put(store, "d", 1)
    assert store.closed


def test_concurrent_appends_get_distinct_contiguous_seqs(store):
    per_thread, threads = 200, 4
    got: list[int] = []
    got_lock = threading.Lock()

    def worker(tag: int) -> None:
        mine = [
            store.append("d", message_id=tag, payload=b"", priority=1, now=T0).seq
            for _ in range(per_thread)
        ]
        with got_lock:
            got.extend(mine)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert sorted(got) == list(range(1, per_thread * threads + 1))
    assert store.backlog("d", now=T0) == min(per_thread * threads, store.max_messages)


# ---- bad arguments ---------------------------------------------------------------------------

GOOD = dict(message_id=1, payload=b"x", priority=1)


@pytest.mark.parametrize(
    "device, fields, error, match",
    [
        (42, {}, TypeError, "device_id"),
        ("", {}, ValueError, "device_id"),
        ("\ud800", {}, ValueError, "device_id"),
        ("d", {"message_id": -1}, ValueError, "message_id"),
        ("d", {"message_id": 2**64}, ValueError, "message_id"),
        ("d", {"message_id": 1.0}, TypeError, "message_id"),
        ("d", {"message_id": True}, TypeError, "message_id"),
        ("d", {"payload": "text"}, TypeError, "payload"),
        ("d", {"payload": None}, TypeError, "payload"),
        ("d", {"priority": 2}, ValueError, "priority"),
        ("d", {"priority": "high"}, TypeError, "priority"),
        ("d", {"expiry": -1}, ValueError, "expiry"),
        ("d", {"expiry": 2**32}, ValueError, "expiry"),
        ("d", {"expiry": 1.5}, TypeError, "expiry"),
        ("d", {"collapse_key": 3}, TypeError, "collapse_key"),
        ("d", {"topic": b"t"}, TypeError, "topic"),
        ("d", {"topic": "\udfff"}, ValueError, "topic"),
        ("d", {"now": "soon"}, TypeError, "now"),
        ("d", {"now": float("nan")}, ValueError, "now"),
    ],
)
def test_bad_append_arguments(store, device, fields, error, match):
    with pytest.raises(error, match=match):
        store.append(device, **{**GOOD, **fields})
    assert store.stats().messages == 0


def test_bad_arguments_elsewhere(store):
    with pytest.raises(TypeError, match="device_ids"):
        store.append_many("abc", **GOOD)
    with pytest.raises(TypeError, match="device_id"):
        store.append_many(["a", None], **GOOD)
    with pytest.raises(TypeError, match="after_seq"):
        store.range("d", "0")
    with pytest.raises(ValueError, match="after_seq"):
        store.range("d", -1)
    with pytest.raises(ValueError, match="limit"):
        store.range("d", 0, 0)
    with pytest.raises(TypeError, match="limit"):
        store.range("d", 0, None)
    with pytest.raises(ValueError, match="seq"):
        store.ack("d", -1)
    with pytest.raises(TypeError, match="seq"):
        store.ack("d", 1.0)
    with pytest.raises(ValueError, match="2\\*\\*63"):
        store.advance_seq("d", 2**63)
    with pytest.raises(TypeError, match="single string"):
        store.subscribe("d", "news")
    with pytest.raises(ValueError, match="topic"):
        store.subscribe("d", ["ok", ""])
    with pytest.raises(TypeError, match="topic"):
        store.unsubscribe("d", [1])
    with pytest.raises(TypeError, match="iterable"):
        store.subscribe("d", 5)
    with pytest.raises(ValueError, match="topic"):
        store.subscribers("")
    assert store.topics("d") == set()


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-3, ValueError), (1.5, TypeError), ("9", TypeError)])
def test_bad_max_messages(make_store, bad, error):
    with pytest.raises(error, match="max_messages"):
        make_store(max_messages=bad)


# ---- open_store ------------------------------------------------------------------------------


def test_open_store_targets(tmp_path, monkeypatch):
    with open_store("memory:", max_messages=7) as store:
        assert isinstance(store, MemoryStore) and store.max_messages == 7
    with open_store(tmp_path / "a.db") as store:
        assert isinstance(store, SQLiteStore) and store.path == str(tmp_path / "a.db")
    with open_store(str(tmp_path / "b.db"), synchronous="FULL") as store:
        assert isinstance(store, SQLiteStore) and store.synchronous == "FULL"
    with open_store(f"sqlite:///{tmp_path}/c.db") as store:  # sqlite:////abs/path
        assert store.path == f"{tmp_path}/c.db"
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///rel.db") as store:
        assert store.path == "rel.db"
    assert {p.name for p in tmp_path.glob("*.db")} == {"a.db", "b.db", "c.db", "rel.db"}


@pytest.mark.parametrize(
    "target, error, match",
    [
        ("mongodb://localhost/0", ValueError, "unsupported"),
        ("redis://", ValueError, "names no host"),
        ("redis://localhost:x/0", ValueError, "bad port"),
        ("redis://localhost/zero", ValueError, "must be a number"),
        ("redis://a:1,b:2/0", ValueError, "several hosts"),
        ("redis+cluster://a:1/3", ValueError, "only database 0"),
        ("sqlite://nothing", ValueError, "unsupported"),
        ("sqlite:///", ValueError, "names no file"),
        ("", ValueError, "empty"),
        (123, TypeError, "str"),
    ],
)
def test_open_store_bad_targets(target, error, match):
    with pytest.raises(error, match=match):
        open_store(target)


def test_open_store_passes_bad_options_on(tmp_path):
    with pytest.raises(ValueError, match="synchronous"):
        open_store(tmp_path / "x.db", synchronous="OFF")
    with pytest.raises(TypeError):
        open_store("memory:", synchronous="FULL")


# ---- SQLite durability -----------------------------------------------------------------------


def test_sqlite_survives_close_and_reopen(tmp_path):
    path = tmp_path / "durable.db"
    with SQLiteStore(path, max_messages=10) as store:
        kept = put(store, "a", 4, expiry=0, topic="t")
        put(store, "b", 2)
        store.ack("b", 2)  # b: counter at 2, nothing stored
        store.ack("a", 1)
        store.subscribe("a", ["news", "sport"])
        store.subscribe("b", ["news"])
        store.advance_seq("c", 41)
    with SQLiteStore(path, max_messages=10) as store:
        assert store.range("a", 0, 100, now=T0) == kept[1:]
        assert store.last_seq("a") == 4 and store.last_seq("b") == 2 and store.last_seq("c") == 41
        assert seqs(put(store, "b", 1)) == [3]  # never reused after a full ack + restart
        assert seqs(put(store, "c", 1)) == [42]
        assert store.subscribers("news") == {"a", "b"}
        assert store.topics("a") == {"news", "sport"}
        # counters are per opening; sizes come from the file
        assert store.stats() == StoreStats(messages=5, devices=3, dropped_by_cap=0, collapsed=0, expired=0)


def test_sqlite_seq_never_reused_across_many_restarts(tmp_path):
    path = tmp_path / "seq.db"
    seen = []
    for _ in range(5):
        with SQLiteStore(path) as store:
            seen += seqs(put(store, "d", 2))
            store.ack("d", 2**64 - 1)
    assert seen == list(range(1, 11))


def test_sqlite_is_wal_with_the_chosen_synchronous(tmp_path):
    for sync, level in (("NORMAL", 1), ("FULL", 2)):
        with SQLiteStore(tmp_path / f"{sync}.db", synchronous=sync) as store:
            put(store, "d", 1)
            assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert store._db.execute("PRAGMA synchronous").fetchone()[0] == level


def test_sqlite_file_is_readable_by_plain_sqlite(tmp_path):
    path = tmp_path / "plain.db"
    with SQLiteStore(path) as store:
        put(store, "d", 2)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT device, seq FROM messages ORDER BY seq").fetchall() == [("d", 1), ("d", 2)]
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2  # version 2: idempotency keys
    db.close()


def test_two_store_objects_share_one_file(tmp_path):
    # as two worker processes would: the counter lives in the file, not in either object
    path = tmp_path / "shared.db"
    with SQLiteStore(path) as one, SQLiteStore(path) as two:
        assert seqs(put(one, "d", 1)) == [1]
        assert seqs(put(two, "d", 1)) == [2]
        assert seqs(one.range("d", 0, 10, now=T0)) == [1, 2]
        assert two.ack("d", 2) == 2
        assert one.backlog("d", now=T0) == 0


def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="SQLite"):
        SQLiteStore(path)


def test_sqlite_refuses_another_schema_version(tmp_path):
    path = tmp_path / "future.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreError, match="schema version 99"):
        SQLiteStore(path)


def test_sqlite_refuses_an_unwritable_place(tmp_path):
    with pytest.raises(StoreError):
        SQLiteStore(tmp_path / "no" / "such" / "dir" / "x.db")


def test_sqlite_bad_constructor_arguments(tmp_path):
    with pytest.raises(TypeError, match="path"):
        SQLiteStore(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="path"):
        SQLiteStore("")
    with pytest.raises(ValueError, match="timeout"):
        SQLiteStore(tmp_path / "x.db", timeout=-1)


def test_sqlite_in_memory_database_works(tmp_path):
    with SQLiteStore(":memory:") as store:
        assert seqs(put(store, "d", 2)) == [1, 2]
    assert not any(tmp_path.iterdir())
    assert not os.path.exists(":memory:")


def _run_child(code: str, *args: str):
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


_KILLED_WRITER = """
import os, signal, sys
from pushcore.store import SQLiteStore
store = SQLiteStore(sys.argv[1])
for i in range(50):
    store.append("d", message_id=i, payload=b"p%d" % i, priority=1, now=1.7e9)
store.subscribe("d", ["news"])
store.ack("d", 10)
print("written", flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no close(), no checkpoint: a crash
"""


@pytest.mark.slow
def test_sqlite_commits_survive_a_killed_process(tmp_path):
    path = tmp_path / "crash.db"
    child = _run_child(_KILLED_WRITER, str(path))
    out, err = child.communicate(timeout=60)
    assert out == b"written\n", err.decode()
    assert child.returncode == -9
    with SQLiteStore(path) as store:
        assert seqs(store.range("d", 0, 100, now=T0)) == list(range(11, 51))
        assert store.range("d", 0, 1, now=T0)[0].payload == b"p10"
        assert store.last_seq("d") == 50
        assert store.subscribers("news") == {"d"}
        assert seqs(put(store, "d", 1)) == [51]


_CONCURRENT_WRITER = """
import sys
from pushcore.store import SQLiteStore
store = SQLiteStore(sys.argv[1], timeout=30)
tag = int(sys.argv[2])
for i in range(150):
    store.append("d", message_id=tag, payload=b"", priority=1, now=1.7e9)
store.close()
"""


@pytest.mark.slow
def test_two_processes_append_to_one_file_without_reusing_seqs(tmp_path):
    path = tmp_path / "shared.db"
    SQLiteStore(path).close()  # create the schema once
    children = [_run_child(_CONCURRENT_WRITER, str(path), str(tag)) for tag in (1, 2)]
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err.decode()
    with SQLiteStore(path) as store:
        stored = store.range("d", 0, 1000, now=T0)
        assert seqs(stored) == list(range(1, 301))
        assert sorted(m.message_id for m in stored) == [1] * 150 + [2] * 150
        assert store.stats().messages == 300


class RecordingObserver:
    def __init__(self):
        self.stored: list[tuple[str, int]] = []
        self.acked: list[tuple[str, int]] = []

    def on_stored(self, items):
        self.stored.extend(items)

    def on_acked(self, acks):
        self.acked.extend(acks)


def test_observers_see_every_append_and_ack_until_removed(store):
    seen = RecordingObserver()
    store.add_observer(seen)
    store.add_observer(seen)  # once only
    put(store, "a", 2)
    store.append_many(["a", "b"], message_id=9, payload=b"m", priority=1, now=T0)
    store.append_batch([NewMessage("c", 10, b"n", 0)], now=T0)
    store.ack("a", 2)
    store.ack("a", 0)  # a zero ack changes nothing and is not reported
    store.ack_many([("b", 1), ("c", 0)])
    assert seen.stored == [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("c", 1)]
    assert seen.acked == [("a", 2), ("b", 1)]
    store.remove_observer(seen)
    put(store, "a")
    store.ack("a", 4)
    assert len(seen.stored) == 5 and len(seen.acked) == 2
    assert store.observers == ()

"""The SQLite store's set-based fan-out (one message for many devices in two statements per chunk).

Checked against the memory store, which does the same per device in Python:
the same calls must leave the same seqs, rows, counts and errors.
"""
from __future__ import annotations

import pytest

from pushcore.store import MemoryStore, SeqExhausted, SQLiteStore
from pushcore.store import sqlite as sqlite_module
from pushcore.store.base import MAX_SEQ


@pytest.fixture
def set_calls(monkeypatch):
    """How many appends took the set-based path (the spy keeps its behaviour)."""
    calls = []
    real = SQLiteStore._append_fanout

    def spy(self, db, pairs, *args):
        calls.append(len(pairs))
        return real(self, db, pairs, *args)

    monkeypatch.setattr(SQLiteStore, "_append_fanout", spy)
    return calls


@pytest.fixture
def stores(tmp_path):
    pair = (MemoryStore(max_messages=5), SQLiteStore(tmp_path / "s.db", max_messages=5))
    yield pair
    for s in pair:
        s.close()


def both(stores, fn):
    return [fn(s) for s in stores]


def view(store, devices):
    return {d: (store.last_seq(d), [(m.seq, m.message_id, m.payload, m.expiry, m.topic) for m in store.range(d)])
            for d in devices}


def test_fan_out_matches_the_memory_store_with_new_old_and_capped_devices(stores, set_calls):
    devices = [f"d{i}" for i in range(60)]
    both(stores, lambda s: s.advance_seq("d3", 100))  # an existing counter
    for i in range(7):  # d0..d9 reach the cap of 5 and past it
        both(stores, lambda s, i=i: s.append_many(devices[:10], message_id=10 + i, payload=b"p%d" % i,
                                                  priority=1, topic="t", now=1000.0))
    out = both(stores, lambda s: s.append_many(devices, message_id=99, payload=b"all", priority=1,
                                              expiry=5000, now=1001.0))
    assert [m.seq for m in out[0]] == [m.seq for m in out[1]]
    assert out[1][3].seq == 108 and out[1][20].seq == 1
    assert view(stores[0], devices) == view(stores[1], devices)
    assert stores[1].stats() == stores[0].stats()
    assert set_calls == [10] * 7 + [60]


def test_fan_out_over_several_chunks(stores, monkeypatch):
    monkeypatch.setattr(sqlite_module, "_FANOUT_CHUNK", 16)
    devices = [f"x{i}" for i in range(100)]
    out = both(stores, lambda s: s.append_many(devices, message_id=1, payload=b"a", priority=1))
    assert [m.seq for m in out[1]] == [1] * 100
    out = both(stores, lambda s: s.append_many(devices[::-1], message_id=2, payload=b"b", priority=1))
    assert [m.seq for m in out[1]] == [2] * 100
    assert view(stores[0], devices) == view(stores[1], devices)


def test_an_exhausted_device_fails_the_whole_fan_out_and_changes_nothing(stores):
    devices = [f"e{i}" for i in range(30)]
    both(stores, lambda s: s.append_many(devices, message_id=1, payload=b"a", priority=1))
    both(stores, lambda s: s.advance_seq("e17", MAX_SEQ))
    for s in stores:
        with pytest.raises(SeqExhausted) as info:
            s.append_many(devices, message_id=2, payload=b"b", priority=1)
        assert info.value.device_id == "e17"
    assert view(stores[0], devices) == view(stores[1], devices)
    assert stores[1].last_seq("e0") == 1  # rolled back


def test_ids_the_set_path_does_not_take_still_store_correctly(stores, set_calls):
    odd = ["nul\x00id", "caf\u00e9", "quote\"d", "back\\slash", "\U0001f600"] + [f"n{i}" for i in range(10)]
    out = both(stores, lambda s: s.append_many(odd, message_id=1, payload=b"a", priority=1))
    assert [m.seq for m in out[1]] == [1] * len(odd)
    assert view(stores[0], odd) == view(stores[1], odd)
    assert stores[1].range("nul\x00id")[0].payload == b"a"
    assert stores[1].range("nul")[:1] == []  # the NUL id is its own device, not a prefix of another
    assert set_calls == []  # the NUL id sends the call down the per-device path
    rest = odd[1:]
    both(stores, lambda s: s.append_many(rest, message_id=2, payload=b"b", priority=1))
    assert set_calls == [len(rest)]  # escapes and non-ASCII ids go through JSON intact
    assert view(stores[0], odd) == view(stores[1], odd)


def topic_view(store, devices):
    return {d: (store.last_seq(d), [(m.seq, m.payload, m.topic, m.expiry) for m in store.range(d)])
            for d in devices}


@pytest.mark.parametrize("chunk", [7, 10, 20_000])
def test_append_topic_matches_the_memory_store(stores, monkeypatch, chunk):
    monkeypatch.setattr(sqlite_module, "_FANOUT_CHUNK", chunk)
    subscribers = [f"s{i:02d}" for i in range(50)] + ["nul\x00id", "caf\u00e9", "\U0001f600"]
    for s in stores:
        for d in subscribers:
            s.subscribe(d, ["news"])
        s.subscribe("other", ["sports"])
        s.advance_seq("s07", 40)
    for i in range(7):  # past the cap of 5 for everyone
        answers = both(stores, lambda s, i=i: s.append_topic(
            "news", message_id=i + 1, payload=b"n%d" % i, priority=1, expiry=9000 if i % 2 else 0,
            now=1000.0, keep=lambda dev: dev.endswith("3") or "\x00" in dev))
        assert answers[0] == answers[1]
        count, devices, seqs = answers[1]
        assert count == len(subscribers)
        assert set(devices) == {d for d in subscribers if d.endswith("3") or "\x00" in d}
    everyone = [*subscribers, "other"]
    assert topic_view(stores[0], everyone) == topic_view(stores[1], everyone)
    assert stores[1].range("s07")[-1].seq == 47 and stores[1].last_seq("other") == 0
    assert stores[1].stats() == stores[0].stats()


def test_append_topic_with_no_subscribers_and_with_an_exhausted_one(stores, monkeypatch):
    monkeypatch.setattr(sqlite_module, "_FANOUT_CHUNK", 4)
    assert both(stores, lambda s: s.append_topic("empty", message_id=1, payload=b"x", priority=1)) == [(0, [], [])] * 2
    subscribers = [f"t{i}" for i in range(10)]
    for s in stores:
        for d in subscribers:
            s.subscribe(d, ["t"])
    for exhausted in ("t2", "t9"):  # in a full page, and in the last one
        for s in stores:
            s.advance_seq(exhausted, MAX_SEQ)
            with pytest.raises(SeqExhausted) as info:
                s.append_topic("t", message_id=2, payload=b"y", priority=1)
            assert info.value.device_id == "t2"
            assert s.last_seq("t0") == 0 and s.range("t0") == []  # all or nothing
    assert topic_view(stores[0], subscribers) == topic_view(stores[1], subscribers)


def test_append_topic_seqs_of_dropped_devices_stay_above_the_floor(stores):
    for s in stores:
        s.subscribe("a", ["t"])
        s.subscribe("b", ["t"])
    both(stores, lambda s: s.append_topic("t", message_id=1, payload=b"1", priority=1))
    for s in stores:
        s.ack("a", 1)
        s.ack("b", 1)
        s.drop_empty_devices()  # forgets their counters (the floor keeps seqs from repeating)
    answers = both(stores, lambda s: s.append_topic("t", message_id=2, payload=b"2", priority=1))
    assert answers[0][0] == answers[1][0] == 2
    for s in stores:
        assert all(m.seq > 1 for d in "ab" for m in s.range(d))

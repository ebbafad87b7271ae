"""Stateful property test: MemoryStore, SQLiteStore and RedisStore (standalone, cluster) against a model.

Hypothesis runs random sequences of appends (with collapse keys, expiries and
a small cap), fan-outs, acks, clock steps, purges, dropped empty device
records, counter raises,
(un)subscriptions and SQLite / Redis close/reopen, and checks after every
step that every store says exactly what the model says.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from store_kinds import fresh_prefix

from pushcore.store import MemoryStore, NewMessage, SQLiteStore, StoredMessage
from pushcore.store.redis import RedisStore

CAP = 4
T0 = 1_700_000_000.0
DEVICES = st.sampled_from(["a", "b", "c"])
TOPICS = st.lists(st.sampled_from(["news", "sport", "x"]), min_size=1, max_size=3)
# Redis stores here use few partitions: the invariant reads every partition after every step
# (stats, backlog sizes), and with 3 devices more partitions test nothing more.
PARTITIONS = 4
_URLS: dict[str, str] = {}  # the session's Redis servers (a state machine takes no fixtures)


@pytest.fixture(autouse=True)
def _redis_urls(redis_server, redis_cluster):
    _URLS["redis"] = redis_server.url
    _URLS["redis-cluster"] = redis_cluster.url


class Model:
    """The store semantics of pushcore.store.base, written as plainly as possible."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.messages: dict[str, list[StoredMessage]] = {}
        self.subs: set[tuple[str, str]] = set()
        self.collapsed = self.dropped = self.expired = 0
        self.floor = 0  # the highest counter of a dropped device record

    def append(self, device: str, message: StoredMessage, now: float) -> StoredMessage:
        seq = self.last.get(device, self.floor) + 1
        self.last[device] = seq
        message = StoredMessage(seq, *[getattr(message, f) for f in StoredMessage.__slots__[1:]])
        stored = self.messages.setdefault(device, [])
        if message.collapse_key:
            same = [m for m in stored if m.collapse_key == message.collapse_key]
            self.collapsed += len(same)
            stored[:] = [m for m in stored if m not in same]
        stored.append(message)
        if len(stored) > CAP:
            gone = [m for m in stored if m.expired(now)]
            self.expired += len(gone)
            stored[:] = [m for m in stored if m not in gone]
            if len(stored) > CAP:
                self.dropped += len(stored) - CAP
                del stored[: len(stored) - CAP]
        return message

    def visible(self, device: str, now: float, after: int = 0) -> list[StoredMessage]:
        return [m for m in self.messages.get(device, []) if m.seq > after and not m.expired(now)]

    def ack(self, device: str, seq: int) -> int:
        stored = self.messages.get(device, [])
        keep = [m for m in stored if m.seq > seq]
        removed = len(stored) - len(keep)
        stored[:] = keep
        return removed

    def purge(self, now: float) -> int:
        removed = 0
        for stored in self.messages.values():
            keep = [m for m in stored if not m.expired(now)]
            removed += len(stored) - len(keep)
            stored[:] = keep
        self.expired += removed
        return removed

    def drop_empty(self) -> int:
        empty = [d for d in self.last if not self.messages.get(d)]
        for d in empty:
            self.floor = max(self.floor, self.last.pop(d))
        return len(empty)


class StoreMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pushcore-store-"))
        self.path = self.dir / "store.db"
        self.memory = MemoryStore(max_messages=CAP)
        self.sqlite = SQLiteStore(self.path, max_messages=CAP)
        self.prefixes = {kind: fresh_prefix() for kind in _URLS}
        self.redis = [RedisStore(_URLS[kind], prefix=self.prefixes[kind], max_messages=CAP, partitions=PARTITIONS) for kind in _URLS]
        self.model = Model()
        self.now = T0
        # SQLite and Redis counters restart at each reopen: remember the model's at that moment
        self.sqlite_counter_base = (0, 0, 0)
        self.redis_counter_base = (0, 0, 0)

    def teardown(self) -> None:
        if hasattr(self, "dir"):
            self.memory.close()
            self.sqlite.close()
            for store in self.redis:
                store.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def stores(self):
        return (self.memory, self.sqlite, *self.redis)

    @rule(
        device=DEVICES,
        priority=st.sampled_from([0, 1]),
        expires_in=st.sampled_from([None, -1, 0, 3, 20]),
        collapse_key=st.sampled_from(["", "", "k", "j"]),
        payload=st.binary(max_size=8),
        message_id=st.sampled_from([0, 7, 2**63, 2**64 - 1]),
    )
    def append(self, device, priority, expires_in, collapse_key, payload, message_id):
        expiry = 0 if expires_in is None else int(self.now) + expires_in
        fields = dict(
            message_id=message_id, payload=payload, priority=priority, expiry=expiry,
            collapse_key=collapse_key, topic="t" if priority else "",
        )
        expected = self.model.append(device, StoredMessage(0, **fields, created=self.now), self.now)
        for store in self.stores:
            assert store.append(device, **fields, now=self.now) == expected

    @rule(
        devices=st.lists(DEVICES, max_size=4),
        collapse_key=st.sampled_from(["", "k"]),
        expires_in=st.sampled_from([None, 5]),
    )
    def append_many(self, devices, collapse_key, expires_in):
        expiry = 0 if expires_in is None else int(self.now) + expires_in
        fields = dict(message_id=99, payload=b"fan", priority=1, expiry=expiry,
                      collapse_key=collapse_key, topic="all")
        template = StoredMessage(0, **fields, created=self.now)
        expected = [self.model.append(d, template, self.now) for d in dict.fromkeys(devices)]
        for store in self.stores:
            assert store.append_many(devices, **fields, now=self.now) == expected

    @rule(
        items=st.lists(
            st.tuples(DEVICES, st.sampled_from(["", "k"]), st.sampled_from([None, 2])),
            max_size=5,
        )
    )
    def append_batch(self, items):
        batch = [
            NewMessage(device, i, b"b%d" % i, i % 2, 0 if e is None else int(self.now) + e, key)
            for i, (device, key, e) in enumerate(items)
        ]
        expected = [
            self.model.append(
                m.device_id,
                StoredMessage(0, m.message_id, m.payload, m.priority, m.expiry, m.collapse_key,
                              m.topic, self.now),
                self.now,
            )
            for m in batch
        ]
        for store in self.stores:
            assert store.append_batch(batch, now=self.now) == expected

    @rule(device=DEVICES, back=st.integers(min_value=-2, max_value=6))
    def ack(self, device, back):
        seq = max(0, self.model.last.get(device, 0) - back)
        expected = self.model.ack(device, seq)
        for store in self.stores:
            assert store.ack(device, seq) == expected

    @rule(acks=st.lists(st.tuples(DEVICES, st.integers(min_value=0, max_value=4)), max_size=4))
    def ack_many(self, acks):
        pairs = [(d, max(0, self.model.last.get(d, 0) - back)) for d, back in acks]
        expected = sum(self.model.ack(d, seq) for d, seq in pairs)
        for store in self.stores:
            assert store.ack_many(pairs) == expected

    @rule(device=DEVICES, ahead=st.integers(min_value=0, max_value=5))
    def advance_seq(self, device, ahead):
        seq = self.model.last.get(device, 0) + ahead - 2
        seq = max(seq, 0)
        if seq > 0 and device not in self.model.last:  # a new record starts at the seq floor
            self.model.last[device] = self.model.floor
        if seq > self.model.last.get(device, 0):
            self.model.last[device] = seq
        for store in self.stores:
            assert store.advance_seq(device, seq) == self.model.last.get(device, 0)

    @rule(seconds=st.sampled_from([0.5, 1, 3, 10]))
    def tick(self, seconds):
        self.now += seconds

    @rule()
    def purge(self):
        expected = self.model.purge(self.now)
        for store in self.stores:
            assert store.purge_expired(now=self.now) == expected

    @rule()
    def drop_empty_devices(self):
        expected = self.model.drop_empty()
        for store in self.stores:
            assert store.drop_empty_devices() == (expected, False)

    @rule(device=DEVICES, topics=TOPICS, on=st.booleans())
    def subscription(self, device, topics, on):
        pairs = {(t, device) for t in topics}
        if on:
            expected = len(pairs - self.model.subs)
            self.model.subs |= pairs
        else:
            expected = len(pairs & self.model.subs)
            self.model.subs -= pairs
        for store in self.stores:
            change = store.subscribe if on else store.unsubscribe
            assert change(device, topics) == expected

    @rule()
    def reopen_sqlite(self):
        self.sqlite.close()
        self.sqlite = SQLiteStore(self.path, max_messages=CAP)
        m = self.model
        self.sqlite_counter_base = (m.dropped, m.collapsed, m.expired)

    @rule()
    def reopen_redis(self):
        for store in self.redis:
            store.close()
        self.redis = [RedisStore(_URLS[kind], prefix=self.prefixes[kind], max_messages=CAP, partitions=PARTITIONS) for kind in _URLS]
        m = self.model
        self.redis_counter_base = (m.dropped, m.collapsed, m.expired)

    @rule(device=DEVICES, data=st.data())
    def range_page(self, device, data):
        after = data.draw(st.integers(min_value=0, max_value=self.model.last.get(device, 0) + 1))
        limit = data.draw(st.integers(min_value=1, max_value=CAP + 1))
        expected = self.model.visible(device, self.now, after)[:limit]
        for store in self.stores:
            assert store.range(device, after, limit, now=self.now) == expected
            assert store.backlog(device, after, now=self.now) == len(
                self.model.visible(device, self.now, after)
            )

    @invariant()
    def stores_agree_with_model(self):
        if not hasattr(self, "model"):
            return
        m = self.model
        for device in ("a", "b", "c"):
            expected = m.visible(device, self.now)
            for store in self.stores:
                assert store.last_seq(device) == m.last.get(device, 0)
                assert store.range(device, 0, 100, now=self.now) == expected
        messages = sum(len(v) for v in m.messages.values())
        devices = sum(1 for v in m.messages.values() if v)
        with_backlog = sorted(d for d in m.messages if m.visible(d, self.now))
        counters = (m.dropped, m.collapsed, m.expired)
        base, redis_base = self.sqlite_counter_base, self.redis_counter_base
        for store, (dropped, collapsed, expired) in (
            (self.memory, counters),
            (self.sqlite, tuple(c - b for c, b in zip(counters, base))),
            *((r, tuple(c - b for c, b in zip(counters, redis_base))) for r in self.redis),
        ):
            s = store.stats()
            assert (s.messages, s.devices) == (messages, devices)
            assert (s.dropped_by_cap, s.collapsed, s.expired) == (dropped, collapsed, expired)
            assert store.devices_with_backlog(now=self.now) == with_backlog
            for topic in ("news", "sport", "x"):
                assert store.subscribers(topic) == {d for t, d in m.subs if t == topic}
            for device in ("a", "b", "c"):
                assert store.topics(device) == {t for t, d in m.subs if d == device}
        # the SQLite store's per-device `stored` column must equal its real row count
        drift = self.sqlite._db.execute(
            "SELECT count(*) FROM devices WHERE stored != "
            "(SELECT count(*) FROM messages WHERE messages.device = devices.device)"
        ).fetchone()[0]
        assert drift == 0


StoreMachine.TestCase.settings = settings(max_examples=75, stateful_step_count=40, deadline=None)
TestStoreMachine = StoreMachine.TestCase

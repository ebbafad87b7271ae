"""Delivery logic (route table, seq order, inline vs NOTIFY, low priority, acks) against a real store.

The transport here records what the server would hand to the loop; the
end-to-end tests over loopback sockets are in tests/gateway/test_delivery.py.
"""
from __future__ import annotations

import pytest

from pushcore.codec import reference as protocol
from pushcore.gateway.delivery import Delivery, MessageIds
from pushcore.store import PRIORITY_HIGH, PRIORITY_LOW, MemoryStore, NewMessage, SQLiteStore


class RecordingTransport:
    """The loop methods Delivery uses, recording frames and sent seqs per connection."""

    def __init__(self) -> None:
        self.sent: dict[int, list] = {}
        self.tags: dict[int, int] = {}
        self.labels: dict[int, str] = {}
        self.watched: set[int] = set()

    def send(self, cid, data, frames=1):
        decoded = protocol.Decoder().feed(data)
        assert len(decoded) == frames, "the frame count given to the loop must match the bytes"
        self.sent.setdefault(cid, []).extend(decoded)

    def send_many(self, cids, data):
        for cid in cids:
            self.send(cid, data)

    def send_push(self, cid, seq, message_id, payload, priority=1, expiry=0, collapse_key="", topic=""):
        self.send(cid, protocol.encode_push(seq, message_id, payload, priority, expiry, collapse_key, topic))
        self.tags[cid] = max(self.tags.get(cid, 0), seq)
        return True

    def set_label(self, cid, label):
        if label is None:
            self.labels.pop(cid, None)
        else:
            self.labels[cid] = label

    def label(self, cid):
        return self.labels.get(cid)

    def sent_seq(self, cid):
        return self.tags[cid]

    def set_sent_seq(self, cid, value):
        self.tags[cid] = value

    def watch_activity(self, cid):
        self.watched.add(cid)

    def take(self, cid) -> list:
        return self.sent.pop(cid, [])


def seqs(frames) -> list[int]:
    return [f.seq for f in frames if f.TYPE == protocol.PUSH]


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "s.db")
    yield s
    s.close()


@pytest.fixture
def wire():
    return RecordingTransport()


@pytest.fixture
def delivery(store, wire):
    return Delivery(store, wire, inline_max=4, page_max=3)


def connect(delivery, cid, device, last_seq=0):
    replaced = delivery.attach(cid, device, last_seq)
    delivery.resume(cid)
    return replaced


def test_online_high_priority_goes_out_at_once_in_seq_order(delivery, wire):
    connect(delivery, 1, "d")
    for i in range(3):
        assert delivery.push("d", b"m%d" % i).seq == i + 1
    frames = wire.take(1)
    assert seqs(frames) == [1, 2, 3]
    assert [f.payload for f in frames] == [b"m0", b"m1", b"m2"]
    assert wire.tags[1] == 3


def test_offline_messages_wait_and_small_backlog_is_inline(delivery, wire):
    for _i in range(4):
        delivery.push("d", b"x")
    connect(delivery, 7, "d")
    assert seqs(wire.take(7)) == [1, 2, 3, 4]


def test_hello_last_seq_resumes_after_it_and_counts_as_ack(delivery, wire, store):
    for _i in range(4):
        delivery.push("d", b"x")
    connect(delivery, 7, "d", last_seq=2)
    assert seqs(wire.take(7)) == [3, 4]
    assert [m.seq for m in store.range("d", 0)] == [3, 4]


def test_large_backlog_is_notified_then_fetched_in_pages(delivery, wire):
    for _i in range(10):
        delivery.push("d", b"x")
    connect(delivery, 7, "d")
    (notify,) = wire.take(7)
    assert notify.TYPE == protocol.NOTIFY and notify.latest_seq == 10
    # while the device fetches, new messages are only stored
    delivery.push("d", b"late")
    assert wire.take(7) == []
    delivery.fetch(7, 0, 100)  # page_max 3 caps the page
    frames = wire.take(7)
    assert seqs(frames) == [1, 2, 3]
    assert frames[-1].TYPE == protocol.NOTIFY and frames[-1].latest_seq == 11
    got = [1, 2, 3]
    after = 3
    while True:
        delivery.fetch(7, after, 3)
        frames = wire.take(7)
        page = seqs(frames)
        got += page
        assert frames[-1].TYPE == protocol.NOTIFY
        if frames[-1].latest_seq <= (page[-1] if page else after):
            break
        after = page[-1]
    assert got == list(range(1, 12))
    assert frames[-1].latest_seq == 11
    # the device has it all: pushes stream again
    delivery.push("d", b"now")
    assert seqs(wire.take(7)) == [12]


def test_fetch_with_nothing_left_answers_notify_of_what_the_device_has(delivery, wire):
    connect(delivery, 7, "d")
    delivery.fetch(7, 0, 10)
    (notify,) = wire.take(7)
    assert notify.latest_seq == 0


def test_low_priority_waits_for_activity(delivery, wire):
    connect(delivery, 1, "d")
    delivery.push("d", b"upgrade", priority=PRIORITY_LOW)
    assert wire.take(1) == []
    assert 1 in wire.watched
    delivery.awake([1])
    (push,) = wire.take(1)
    assert push.seq == 1 and push.priority == PRIORITY_LOW
    delivery.awake([1])  # nothing waits any more
    assert wire.take(1) == []


def test_high_priority_carries_waiting_low_priority_before_it(delivery, wire, store):
    connect(delivery, 1, "d")
    delivery.push("d", b"low1", priority=PRIORITY_LOW)
    delivery.push("d", b"low2", priority=PRIORITY_LOW)
    delivery.push("d", b"high")
    frames = wire.take(1)
    assert seqs(frames) == [1, 2, 3]
    assert [f.payload for f in frames] == [b"low1", b"low2", b"high"]


def test_expired_low_priority_is_not_delivered(delivery, wire):
    connect(delivery, 1, "d")
    delivery.push("d", b"old", priority=PRIORITY_LOW, expiry=1000)  # long past
    delivery.awake([1])
    assert wire.take(1) == []
    delivery.push("d", b"fresh")
    assert [f.payload for f in wire.take(1)] == [b"fresh"]


def test_collapse_keeps_only_the_newest_waiting_message(delivery, wire):
    for i in range(3):
        delivery.push("d", b"score %d" % i, collapse_key="score")
    connect(delivery, 1, "d")
    frames = wire.take(1)
    assert [(f.seq, f.payload, f.collapse_key) for f in frames] == [(3, b"score 2", "score")]


def test_newer_connection_replaces_older(delivery, wire):
    connect(delivery, 1, "d")
    assert connect(delivery, 2, "d") == 1
    assert delivery.connection_of("d") == 2
    assert delivery.device_of(1) is None
    delivery.push("d", b"x")
    assert wire.take(1) == []
    assert seqs(wire.take(2)) == [1]
    # the old connection's close event no longer touches the route
    assert delivery.detach(1) is None
    assert delivery.connection_of("d") == 2
    assert delivery.detach(2) == "d"
    assert delivery.connection_of("d") is None


def test_ack_trims_the_store_but_never_beyond_what_was_sent(delivery, wire, store):
    connect(delivery, 1, "d")
    for _ in range(3):
        delivery.push("d", b"x")
    delivery.push("d", b"low", priority=PRIORITY_LOW)  # seq 4: stored, not sent
    delivery.ack({1: 99})
    assert [m.seq for m in store.range("d", 0)] == [4]


def test_hello_above_the_store_counter_advances_it(delivery, wire, store):
    connect(delivery, 1, "d", last_seq=41)
    assert delivery.push("d", b"x").seq == 42
    assert seqs(wire.take(1)) == [42]


def test_push_many_gives_each_device_its_own_seq_and_one_message_id(delivery, wire):
    delivery.push("a", b"first for a")
    connect(delivery, 1, "a", last_seq=1)
    connect(delivery, 2, "b")
    assert delivery.push_many(["a", "b", "c", "a"], b"news", topic="t") == 3
    (pa,) = wire.take(1)
    (pb,) = wire.take(2)
    assert (pa.seq, pb.seq) == (2, 1)
    assert pa.message_id == pb.message_id
    assert pa.topic == "t"


def test_ephemeral_broadcast_shares_bytes_and_seq_zero(delivery, wire, store):
    connect(delivery, 1, "a")
    connect(delivery, 2, "b")
    assert delivery.broadcast_ephemeral(b"hi") == 2
    (pa,) = wire.take(1)
    (pb,) = wire.take(2)
    assert pa.seq == pb.seq == 0 and pa == pb
    assert store.last_seq("a") == 0  # not stored


def test_message_ids_are_unique_and_increasing():
    ticks = iter([1.0] * 5000 + [0.5] * 10)  # clock stuck, then going back
    ids = MessageIds(node=3, clock=lambda: next(ticks))
    out = [ids.next() for _ in range(5010)]
    assert out == sorted(set(out))
    assert all(0 <= i < 2**64 for i in out)
    with pytest.raises(ValueError):
        MessageIds(node=1024)


def test_acks_of_one_turn_for_many_devices(delivery, wire, store):
    connect(delivery, 1, "a")
    connect(delivery, 2, "b")
    for _ in range(3):
        delivery.push("a", b"x")
        delivery.push("b", b"y")
    delivery.ack({1: 3, 2: 2, 99: 5})  # 99: not an authenticated connection, ignored
    assert store.range("a", 0) == []
    assert [m.seq for m in store.range("b", 0)] == [3]


# ---- push_batch: one store call, one delivery pass ---------------------------------------------


def new(device, payload, priority=PRIORITY_HIGH, collapse_key="", message_id=1):
    return NewMessage(device, message_id, payload, priority, 0, collapse_key, "")


def test_push_batch_sends_each_device_its_run_as_pushes_in_c(delivery, wire):
    connect(delivery, 1, "a")
    connect(delivery, 2, "b")
    sends = []
    original = wire.send_push
    wire.send_push = lambda cid, *a: (sends.append(cid), original(cid, *a))[1]
    batch = [new("a", b"a%d" % i) for i in range(10)] + [new("b", b"b0"), new("off", b"o0")]
    stored = delivery.push_batch(batch)
    assert [m.seq for m in stored] == list(range(1, 11)) + [1, 1]
    # more than inline_max (4) fresh messages still stream: nothing waited before them
    assert [f.payload for f in wire.take(1)] == [b"a%d" % i for i in range(10)]
    assert seqs(wire.take(2)) == [1]
    assert sends == [1] * 10 + [2]   # one send_push per message: encoded and recorded in C
    assert wire.tags == {1: 10, 2: 1}


def test_push_batch_behind_waiting_messages_catches_up_through_the_store(delivery, wire):
    connect(delivery, 1, "d")
    delivery.push("d", b"w1", priority=PRIORITY_LOW)
    delivery.push("d", b"w2", priority=PRIORITY_LOW)
    delivery.push_batch([new("d", b"h3"), new("d", b"l4", PRIORITY_LOW)])
    frames = wire.take(1)
    assert [(f.seq, f.payload) for f in frames] == [(1, b"w1"), (2, b"w2"), (3, b"h3")]
    assert wire.tags[1] == 3 and 1 in wire.watched
    # a long wait before a high one: NOTIFY, then FETCH pages
    for _i in range(5):
        delivery.push("d", b"w", priority=PRIORITY_LOW)
    delivery.push_batch([new("d", b"h10")])
    (notify,) = wire.take(1)
    assert notify.TYPE == protocol.NOTIFY and notify.latest_seq == 10
    assert 1 in delivery.fetching


def test_push_batch_to_a_fetching_device_only_stores(delivery, wire, store):
    connect(delivery, 1, "d")
    delivery.fetching.add(1)
    delivery.push_batch([new("d", b"x"), new("d", b"y")])
    assert wire.take(1) == [] and store.last_seq("d") == 2


def test_push_batch_over_the_cap_sends_only_what_the_store_kept(wire, tmp_path):
    store = MemoryStore(max_messages=3)
    delivery = Delivery(store, wire, inline_max=16)
    connect(delivery, 1, "d")
    delivery.push_batch([new("d", b"m%d" % i) for i in range(1, 6)])
    assert [(f.seq, f.payload) for f in wire.take(1)] == [(3, b"m3"), (4, b"m4"), (5, b"m5")]
    assert wire.tags[1] == 5

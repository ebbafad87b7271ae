"""Page sizing: inline catch-ups and FETCH answers are bounded by bytes as well as count.

Against a real store; the transport records what the server would hand to
the loop (tests/gateway/test_delivery_unit.py's RecordingTransport). The end-to-end
drains of backlogs far over the slow-consumer cap are in tests/gateway/test_paging.py.
"""
from __future__ import annotations

import pytest
from test_delivery_unit import RecordingTransport, seqs

from pushcore.codec import reference as protocol
from pushcore.gateway.delivery import DEFAULT_PAGE_BYTES, Delivery, push_frame_bytes
from pushcore.store import PRIORITY_LOW, MemoryStore, NewMessage, SQLiteStore
from pushcore.wire import MAX_PAYLOAD_BYTES

SIZE = 3000
BUDGET = 10_000  # three 3000-byte messages fit, four do not


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "s.db")
    yield s
    s.close()


@pytest.fixture
def wire():
    return RecordingTransport()


def wire_bytes(frames) -> int:
    return sum(len(f.encode()) for f in frames if f.TYPE == protocol.PUSH)


def test_the_default_budget_is_well_under_the_slow_consumer_cap():
    assert DEFAULT_PAGE_BYTES == 1 << 20
    assert DEFAULT_PAGE_BYTES * 3 < 4 << 20


@pytest.mark.parametrize("fields", [
    dict(payload=b""), dict(payload=b"x" * MAX_PAYLOAD_BYTES, expiry=2**32 - 1, topic="t" * 256,
                            collapse_key="\u00e9" * 128),
    dict(payload=b"p" * 200, collapse_key="k", topic="news"),
])
def test_push_frame_bytes_is_an_upper_bound_of_the_encoded_frame(store, fields):
    fields = {"expiry": 0, **fields}
    m = store.append("d", message_id=2**64 - 1, priority=1, **fields)
    encoded = protocol.encode_push(2**62, m.message_id, m.payload, m.priority, m.expiry, m.collapse_key, m.topic)
    assert len(encoded) <= push_frame_bytes(m) <= len(encoded) + 32


def test_a_fetch_answer_stops_at_the_byte_budget_and_says_more_waits(store, wire):
    delivery = Delivery(store, wire, inline_max=4, page_max=100, page_bytes=BUDGET)
    for i in range(10):
        delivery.push("d", bytes([i]) * SIZE)
    delivery.attach(7, "d", 0)
    delivery.resume(7)
    (notify,) = wire.take(7)  # 10 messages: more than inline_max, NOTIFY
    assert notify.TYPE == protocol.NOTIFY and notify.latest_seq == 10
    got: list[int] = []
    after = 0
    while True:
        delivery.fetch(7, after, 100)
        frames = wire.take(7)
        page = seqs(frames)
        assert 1 <= len(page) <= 3
        assert wire_bytes(frames) <= BUDGET
        got += page
        assert frames[-1].TYPE == protocol.NOTIFY
        if frames[-1].latest_seq <= page[-1]:
            break
        assert frames[-1].latest_seq == 10  # more waits: the device FETCHes again
        after = page[-1]
    assert got == list(range(1, 11))
    assert 7 not in delivery.fetching  # caught up: pushes stream again
    delivery.push("d", b"now")
    assert seqs(wire.take(7)) == [11]


def test_one_message_over_the_budget_still_goes_alone(store, wire):
    delivery = Delivery(store, wire, inline_max=4, page_max=100, page_bytes=100)
    for _ in range(3):
        delivery.push("d", b"x" * 1000)
    delivery.attach(7, "d", 0)
    delivery.resume(7)
    assert [f.TYPE for f in wire.take(7)] == [protocol.NOTIFY]  # 3 x 1000 bytes: over one page
    for seq in (1, 2, 3):
        delivery.fetch(7, seq - 1, 100)
        frames = wire.take(7)
        assert seqs(frames) == [seq]
        assert frames[-1].TYPE == protocol.NOTIFY and frames[-1].latest_seq == 3


def test_an_inline_backlog_over_the_byte_budget_is_notified_instead(store, wire):
    delivery = Delivery(store, wire, inline_max=16, page_max=100, page_bytes=BUDGET)
    for _ in range(3):
        delivery.push("d", b"x" * SIZE)
    delivery.attach(1, "d", 0)
    delivery.resume(1)
    assert seqs(wire.take(1)) == [1, 2, 3]  # fits the budget: inline
    for _ in range(4):
        delivery.push("e", b"x" * SIZE)
    delivery.attach(2, "e", 0)
    delivery.resume(2)
    (notify,) = wire.take(2)  # 4 messages, fewer than inline_max but over the budget
    assert notify.TYPE == protocol.NOTIFY and notify.latest_seq == 4
    assert 2 in delivery.fetching


def test_a_batch_for_an_online_device_over_the_budget_goes_one_page_then_notify(store, wire):
    delivery = Delivery(store, wire, inline_max=4, page_max=100, page_bytes=BUDGET)
    delivery.attach(7, "d", 0)
    delivery.resume(7)
    delivery.push_batch([NewMessage("d", i + 1, b"x" * SIZE, 1) for i in range(10)])
    frames = wire.take(7)
    # more than one page of bytes: announced with NOTIFY, the device fetches them in pages
    assert seqs(frames) == []
    assert frames[-1].TYPE == protocol.NOTIFY and frames[-1].latest_seq == 10
    assert 7 in delivery.fetching


def test_a_held_connection_gets_new_messages_once_released_in_order(store, wire):
    delivery = Delivery(store, wire, inline_max=4, page_max=100, page_bytes=BUDGET)
    delivery.attach(7, "d", 0)
    delivery.resume(7)
    delivery.push("d", b"a")
    assert seqs(wire.take(7)) == [1]
    delivery.hold([7])  # its queue went over the high watermark
    delivery.push("d", b"b")
    delivery.push("d", b"c", priority=PRIORITY_LOW)
    delivery.awake([7])  # a frame from a held device sends nothing either
    assert wire.take(7) == []
    delivery.release([7])
    assert seqs(wire.take(7)) == [2, 3]
    delivery.push("d", b"d")
    assert seqs(wire.take(7)) == [4]


def test_a_held_connection_with_much_waiting_is_notified_on_release(store, wire):
    delivery = Delivery(store, wire, inline_max=4, page_max=100, page_bytes=BUDGET)
    delivery.attach(7, "d", 0)
    delivery.resume(7)
    delivery.hold([7])
    for _ in range(6):
        delivery.push("d", b"x" * SIZE)
    assert wire.take(7) == []
    delivery.release([7])
    (notify,) = wire.take(7)
    assert notify.TYPE == protocol.NOTIFY and notify.latest_seq == 6
    delivery.release([7])  # not held any more: nothing again
    assert wire.take(7) == []


def test_hold_ignores_connections_without_a_device_and_detach_forgets(store, wire):
    delivery = Delivery(store, wire, page_bytes=BUDGET)
    delivery.hold([99])
    assert delivery.held == set()
    delivery.attach(7, "d", 0)
    delivery.hold([7])
    delivery.detach(7)
    assert delivery.held == set()


def test_page_bytes_must_be_a_positive_int(store, wire):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="page_bytes"):
            Delivery(store, wire, page_bytes=bad)

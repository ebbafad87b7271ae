"""Push→ack latency: the tracker pairs store appends with cumulative acks, per device."""
from __future__ import annotations

import pytest

from pushcore.admin.ack_latency import PushAckTracker, track_store
from pushcore.admin.prometheus import Histogram
from pushcore.store import MemoryStore, NewMessage, SQLiteStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_tracker(**kw):
    clock = FakeClock()
    hist = Histogram("t_seconds", "x", buckets=(0.5, 1.5, 10.0))
    return PushAckTracker(hist, clock=clock, **kw), hist, clock


def test_cumulative_ack_observes_each_covered_message():
    tracker, hist, clock = make_tracker()
    tracker.pushed("a", 1)
    clock.now += 1
    tracker.pushed("a", 2)
    tracker.pushed("b", 1)
    clock.now += 1
    assert tracker.acked_up_to("a", 2) == 2  # latencies 2.0 and 1.0
    assert hist.count == 2 and hist.sum == pytest.approx(3.0)
    assert tracker.acked_up_to("a", 2) == 0  # idempotent
    assert tracker.acked_up_to("nobody", 5) == 0
    assert tracker.waiting == 1
    assert (tracker.appended, tracker.acked) == (3, 2)


def test_pending_per_device_is_bounded():
    tracker, hist, _clock = make_tracker(max_pending=3)
    for seq in range(1, 11):
        tracker.pushed("a", seq)
    assert tracker.waiting == 3 and tracker.forgotten == 7
    assert tracker.acked_up_to("a", 10) == 3


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_track_store_sees_every_append_and_ack(kind, tmp_path):
    store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "s.db")
    original_class = type(store)
    tracker, hist, clock = make_tracker()
    same = track_store(store, tracker)
    assert same is store and isinstance(store, original_class)
    try:
        store.append("a", message_id=1, payload=b"x", priority=1)
        store.append_many(["a", "b"], message_id=2, payload=b"y", priority=1)
        store.append_batch([NewMessage("b", 3, b"z", 1), NewMessage("c", 4, b"w", 0)])
        assert tracker.appended == 5
        clock.now += 0.25
        assert store.ack("a", 1) == 1
        clock.now += 1.0
        store.ack_many([("a", 2), ("b", 2)])
        assert hist.count == 4
        assert hist.sum == pytest.approx(0.25 + 1.25 * 3)
        # the store itself is unchanged in behaviour
        assert store.backlog("c") == 1 and store.last_seq("b") == 2
        assert store.stats().messages == 1
        # tracking again switches the tracker; the store's class never changes
        tracker2, hist2, _ = make_tracker()
        track_store(store, tracker2)
        assert type(store) is original_class and store.observers == (tracker2,)
        store.append("c", message_id=5, payload=b"v", priority=1)
        store.ack("c", 2)
        assert hist2.count == 1 and hist.count == 4
    finally:
        store.close()


def test_two_metrics_objects_of_one_server_share_the_tracker():
    from pushcore.admin.gateway_metrics import GatewayMetrics

    store = MemoryStore()

    class FakeServer:  # GatewayMetrics only needs .store for this
        pass

    server = FakeServer()
    server.store = store
    first = GatewayMetrics(server)
    second = GatewayMetrics(server)
    assert first.track_push_ack() is second.track_push_ack()
    store.append("a", message_id=1, payload=b"x", priority=1)
    store.ack("a", 1)
    assert "pushcore_push_ack_seconds_count 1" in first.registry.render()
    assert "pushcore_push_ack_seconds_count 1" in second.registry.render()
    store.close()

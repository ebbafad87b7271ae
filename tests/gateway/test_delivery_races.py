"""Delivery when store reads complete late: completions that raced with newer ones.

With the store pipeline, a page read submitted from the loop completes on a
later turn, after whatever else the device did meanwhile. A pipeline that
holds every read until the test runs it (in the order the writer would)
makes those interleavings exact; the store and the delivery code are real.
"""
from __future__ import annotations

from typing import Any

import pytest
from test_delivery_unit import RecordingTransport, seqs

from pushcore.codec import reference as protocol
from pushcore.gateway.delivery import Delivery
from pushcore.store import PRIORITY_LOW, MemoryStore, SQLiteStore
from pushcore.store.pipeline import StorePipeline


class HeldReads:
    """A pipeline whose reads wait in a queue until :meth:`run` (writes run at once, as before)."""

    def __init__(self, inner: StorePipeline) -> None:
        self.inner = inner
        self.held: list[tuple[Any, Any]] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def submit(self, fn=None, *, done=None, read=False, **kwargs):
        if read:
            self.held.append((fn, done))
            return None
        return self.inner.submit(fn, done=done, read=read, **kwargs)

    def run(self, error: BaseException | None = None) -> None:
        """Run every held read, then every completion, in submission order (one writer group).

        With *error*, every held read fails with it instead (a store I/O error).
        """
        held, self.held = self.held, []
        if error is not None:
            for _fn, done in held:
                done(None, error)
            return
        results = [(fn(self.inner.store), done) for fn, done in held]
        for result, done in results:
            done(result, None)


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "s.db")
    yield s
    s.close()


@pytest.fixture
def wire():
    return RecordingTransport()


def held_delivery(store, wire, **kwargs) -> tuple[Delivery, HeldReads]:
    delivery = Delivery(store, wire, **kwargs)
    held = HeldReads(delivery.pipeline)
    delivery.pipeline = held  # type: ignore[assignment]
    return delivery, held


def test_a_stale_catch_up_does_not_leave_a_caught_up_device_in_fetch_mode(store, wire):
    """FETCH answers everything; a catch-up read before that answer, completing after it,
    saw "more waits": the device has it all, so it must not be put back in fetch mode."""
    delivery, held = held_delivery(store, wire, inline_max=2, page_max=100)
    for i in range(10):
        delivery.push("d", bytes([i]))
    delivery.attach(7, "d", 0)
    delivery.fetch(7, 0, 100)  # the device asks for everything
    delivery.awake([7])  # activity: a catch-up from sent seq 0 (it sees 10 waiting, over inline_max)
    held.run()
    frames = wire.take(7)
    assert seqs(frames) == list(range(1, 11))
    assert [f.latest_seq for f in frames if f.TYPE == protocol.NOTIFY] == [10]  # one NOTIFY: "you have it all"
    assert 7 not in delivery.fetching
    delivery.push("d", b"new")  # streams again: no FETCH will come for it
    assert seqs(wire.take(7)) == [11]


def test_a_stale_catch_up_still_notifies_what_the_device_lacks(store, wire):
    """A catch-up that completes after part of the backlog went out: NOTIFY for the rest, fetch mode."""
    delivery, held = held_delivery(store, wire, inline_max=2, page_max=4)
    for i in range(10):
        delivery.push("d", bytes([i]))
    delivery.attach(7, "d", 0)
    delivery.fetch(7, 0, 4)  # one page of 4, more waits
    delivery.awake([7])
    held.run()
    frames = wire.take(7)
    assert seqs(frames) == [1, 2, 3, 4]
    assert [f.latest_seq for f in frames if f.TYPE == protocol.NOTIFY] == [10]
    assert 7 in delivery.fetching
    for after in (4, 8):
        delivery.fetch(7, after, 4)
        held.run()
        got = seqs(wire.take(7))
        assert got == list(range(after + 1, min(after + 4, 10) + 1))
    assert 7 not in delivery.fetching


def test_fetches_of_one_connection_are_read_one_at_a_time_and_answered_in_order(store, wire):
    from pushcore.gateway.delivery import MAX_WAITING_FETCHES

    delivery, held = held_delivery(store, wire, inline_max=2, page_max=100)
    for i in range(30):
        delivery.push("d", bytes([i]))
    delivery.attach(7, "d", 0)
    afters = list(range(MAX_WAITING_FETCHES + 1))
    for after in afters:
        assert delivery.fetch(7, after, 1) is True
    assert len(held.held) == 1  # one page read in flight; the others wait as two numbers each
    assert delivery.fetch(7, 0, 1) is False  # one more than may wait: the server closes it
    answered = []
    while held.held:
        held.run()
        answered += seqs(wire.take(7))
    assert answered == [a + 1 for a in afters]  # every FETCH answered, in the order sent
    assert delivery.fetch(7, 3, 2) is True and len(held.held) == 1  # nothing waits now: a fresh read
    held.run()
    assert seqs(wire.take(7)) == [4, 5]


def test_a_detached_connection_forgets_its_waiting_fetches(store, wire):
    delivery, held = held_delivery(store, wire, inline_max=2, page_max=100)
    delivery.push("d", b"x")
    delivery.attach(7, "d", 0)
    for _ in range(5):
        delivery.fetch(7, 0, 10)
    delivery.detach(7)
    held.run()
    assert wire.take(7) == [] and held.held == []
    delivery.attach(8, "d", 0)
    assert delivery.fetch(8, 0, 10) is True
    held.run()
    assert seqs(wire.take(8)) == [1]


def test_a_burst_of_pushes_to_a_device_that_is_behind_reads_the_store_once_at_a_time(store, wire):
    """Each high push behind a waiting low one asks for a catch-up; one read is in flight, then
    one more from the sent seq then, not one page read per push."""
    delivery, held = held_delivery(store, wire, inline_max=100, page_max=100)
    delivery.attach(7, "d", 0)
    delivery.push("d", b"low", priority=PRIORITY_LOW)  # waits for activity: the device is behind
    for i in range(50):
        delivery.push("d", b"high %d" % i)
    assert len(held.held) == 1  # 50 catch-ups asked for, one read
    held.run()
    assert seqs(wire.take(7)) == list(range(1, 52)) and len(held.held) == 1  # the "read again"
    held.run()
    assert wire.take(7) == [] and held.held == []  # nothing new: nothing sent twice
    delivery.push("d", b"live")
    assert seqs(wire.take(7)) == [52]  # caught up: pushes stream again, no read


def test_a_failed_fetch_read_is_reported_and_the_connection_can_fetch_again(store, wire):
    failed = []
    delivery, held = held_delivery(store, wire, inline_max=2, page_max=100)
    delivery.on_read_error = lambda cid, error: failed.append((cid, str(error)))
    for i in range(10):
        delivery.push("d", bytes([i]))
    delivery.attach(7, "d", 0)
    delivery.fetch(7, 0, 100)
    delivery.fetch(7, 5, 100)  # waits behind the first
    held.run(error=OSError("disk I/O error"))
    assert failed == [(7, "disk I/O error")]  # the server closes it: the device resumes elsewhere
    assert wire.take(7) == [] and held.held == []
    delivery.fetch(7, 0, 100)  # nothing stuck: a new read
    held.run()
    assert seqs(wire.take(7)) == list(range(1, 11))


def test_a_failed_catch_up_read_is_reported(store, wire):
    failed = []
    delivery, held = held_delivery(store, wire, inline_max=2, page_max=100)
    delivery.on_read_error = lambda cid, error: failed.append(cid)
    delivery.push("d", b"x")
    delivery.attach(7, "d", 0)
    delivery.resume(7)
    held.run(error=OSError("disk I/O error"))
    assert failed == [7] and wire.take(7) == []
    delivery.awake([7])  # and the next catch-up reads again
    held.run()
    assert seqs(wire.take(7)) == [1]

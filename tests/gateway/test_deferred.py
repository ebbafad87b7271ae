"""DeferredWrites: the acks and counter raises kept while the store cannot write."""
from __future__ import annotations

import pytest

from pushcore.gateway.deferred import DeferredWrites
from pushcore.store import MemoryStore, SQLiteStore, StoreUnavailable


def test_acks_keep_the_highest_seq_and_flush_in_bounded_batches():
    store = MemoryStore()
    for device in ("a", "b", "c", "d", "e"):
        for i in range(3):
            store.append(device, message_id=i, payload=b"x", priority=1)
    kept = DeferredWrites()
    for device in ("a", "b", "c", "d", "e"):
        kept.ack(device, 2)
    kept.ack("a", 3)
    kept.ack("a", 1)  # lower: the cumulative ack of 3 stays
    assert kept.acks["a"] == 3 and len(kept) == 5
    assert kept.flush(store, max_acks=2) is True
    assert kept.flush(store, max_acks=2) is True
    assert kept.flush(store, max_acks=2) is False
    assert not kept
    assert store.backlog("a") == 0
    assert [store.backlog(d) for d in "bcde"] == [1, 1, 1, 1]


def test_advances_come_first_and_a_full_table_refuses_only_advances():
    store = MemoryStore()
    kept = DeferredWrites(max_devices=1)
    assert kept.advance("a", 7)
    assert not kept.advance("b", 9)  # full: the caller refuses that device's HELLO
    assert kept.advance("a", 5)  # the same device: kept, the higher claim wins
    kept.ack("a", 7)
    kept.ack("b", 3)  # full: dropped and counted (a lost ack is only a redelivery)
    assert kept.dropped == 1
    assert kept.flush(store) is False
    assert store.last_seq("a") == 7
    assert store.append("a", message_id=1, payload=b"x", priority=1).seq == 8


def test_advances_flush_in_bounded_steps_and_an_append_makes_its_own_first():
    store = MemoryStore()
    kept = DeferredWrites()
    for i in range(10):
        assert kept.advance(f"d{i}", 5 + i)
    kept.ack("d0", 5)
    # an append for d7 needs only d7's advance: the other nine wait for the tick
    kept.flush_devices(store, ["d7", "nobody"])
    assert store.last_seq("d7") == 12 and store.last_seq("d0") == 0 and len(kept.advances) == 9
    assert kept.flush(store, max_advances=4) is True  # four advances; the ack waits for all of them
    assert len(kept.advances) == 5 and kept.acks == {"d0": 5}
    assert kept.flush(store, max_advances=4) is True
    assert kept.flush(store, max_advances=4) is False  # the last advance, then the ack
    assert not kept
    assert [store.last_seq(f"d{i}") for i in range(10)] == [5 + i for i in range(10)]


def test_an_advance_made_in_a_group_that_rolls_back_is_kept_again(tmp_path):
    """A disk-full group undoes the counter advance it made: the advance must not be lost with it,
    or the device's next message would get a seq it already has (and be dropped as a duplicate)."""
    store = SQLiteStore(tmp_path / "s.db", timeout=0.05)
    try:
        store.append("seed", message_id=1, payload=b"s", priority=1)
        kept = DeferredWrites()
        assert kept.advance("d", 40) and kept.advance("e", 7)
        kept.ack("seed", 1)
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count={pages + 2}")
        with pytest.raises(StoreUnavailable):
            with store.group():
                kept.flush_devices(store, ["d"])
                assert "d" not in kept.advances
                kept.flush(store)  # the tick's step: e's advance and the ack, in the same group
                store.append("d", message_id=2, payload=b"x" * 20000, priority=1)
        assert kept.advances == {"d": 40, "e": 7} and kept.acks == {"seed": 1}
        assert store.last_seq("d") == 0  # the rollback undid the store's part
        store._db.execute("PRAGMA max_page_count=1073741823")
        kept.flush_devices(store, ["d"])
        assert store.append("d", message_id=3, payload=b"after", priority=1).seq == 41
        assert kept.flush(store) is False and not kept
        assert store.last_seq("e") == 7 and store.backlog("seed") == 0
    finally:
        store.close()

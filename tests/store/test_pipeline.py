"""Group commit: Store.group() and the store pipeline (one writer thread, one transaction per group).

Real stores (memory and SQLite files in tmp dirs), real threads; nothing is mocked.
"""
from __future__ import annotations

import sqlite3
import threading

import pytest
from store_kinds import STORE_KINDS

from pushcore.store import SeqExhausted, SQLiteStore, StoreUnavailable
from pushcore.store.base import MAX_SEQ, check_message
from pushcore.store.pipeline import PipelineClosed, StorePipeline
from serverkit import hold_writer


@pytest.fixture(params=STORE_KINDS)
def store(request, new_store):
    return new_store(request.param)


def fields(payload: bytes, message_id: int = 1):
    return check_message(message_id, payload, 1, 0, "", "")


class Observer:
    def __init__(self) -> None:
        self.stored: list[tuple[str, int]] = []

    def on_stored(self, items):
        self.stored += items

    def on_acked(self, acks):
        pass


def test_a_group_is_one_commit_and_a_failing_call_changes_nothing(store):
    store.advance_seq("full", MAX_SEQ)  # its next append raises SeqExhausted
    observer = Observer()
    store.add_observer(observer)
    before = store.commits
    with store.group():
        assert store.append("a", message_id=1, payload=b"a1", priority=1).seq == 1
        with pytest.raises(SeqExhausted):
            store.append_many(["b", "full"], message_id=2, payload=b"x", priority=1)
        assert store.append("a", message_id=3, payload=b"a2", priority=1).seq == 2
        store.subscribe("a", ["t"])
        assert observer.stored == []  # told only once the group commits
    assert store.commits - before == 1
    assert [m.payload for m in store.range("a")] == [b"a1", b"a2"]
    assert store.last_seq("b") == 0 and store.range("b") == []  # the failed call left nothing
    assert store.subscribers("t") == {"a"}
    assert observer.stored == [("a", 1), ("a", 2)]


def test_a_group_that_cannot_begin_raises_store_unavailable_and_writes_nothing(tmp_path):
    path = tmp_path / "s.db"
    store = SQLiteStore(path, timeout=0.01)
    lock = sqlite3.connect(path, isolation_level=None, timeout=0)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable):
            with store.group():
                store.append("a", message_id=1, payload=b"x", priority=1)
    finally:
        lock.execute("COMMIT")
        lock.close()
    assert store.last_seq("a") == 0
    with store.group():
        store.append("a", message_id=1, payload=b"x", priority=1)
    assert store.health().writable and store.last_seq("a") == 1
    store.close()


def test_the_pipeline_merges_appends_from_many_threads_into_few_commits(store):
    completions: list[int] = []
    batches: list[int] = []

    def schedule(fn, ops):  # the completions' thread: here, the writer itself
        batches.append(len(ops))
        fn(ops)

    pipeline = StorePipeline(store, schedule=schedule)
    ids = iter(range(1, 10**6))
    pipeline.message_ids = lambda: next(ids)
    per_thread = 200
    start = threading.Barrier(8)
    seqs: dict[int, list[tuple[str, int]]] = {}
    before = store.commits

    def pusher(t: int) -> None:
        start.wait()
        out = seqs.setdefault(t, [])
        for i in range(per_thread):
            device = f"d{(t + i) % 3}"  # overlapping devices
            op = pipeline.submit(message=(device, fields(b"%d:%d" % (t, i))),
                                 done=lambda m, e: completions.append(m.seq), wait=True)
            out.append((device, op.wait(10).seq))

    threads = [threading.Thread(target=pusher, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    pipeline.close()
    total = 8 * per_thread
    assert len(completions) == total
    for device in ("d0", "d1", "d2"):
        stored = store.range(device, 0, 1000)
        assert [m.seq for m in stored] == list(range(1, len(stored) + 1))  # contiguous, once
    for pushed in seqs.values():
        by_device: dict[str, list[int]] = {}
        for device, seq in pushed:
            by_device.setdefault(device, []).append(seq)
        for device, got in by_device.items():
            assert got == sorted(got)  # each thread's pushes in its order
            payloads = {m.seq: m.payload for m in store.range(device, 0, 1000)}
            assert [int(payloads[s].split(b":")[1]) for s in got] == sorted(
                int(payloads[s].split(b":")[1]) for s in got)
    if isinstance(store, SQLiteStore):
        assert store.commits - before < total  # group commit: many pushes share one commit
    assert pipeline.largest_group >= 2
    assert len(batches) < total  # completions come back in batches (one hand-over per group)


def test_one_failing_op_does_not_fail_its_group(store):
    store.advance_seq("full", MAX_SEQ)
    pipeline = StorePipeline(store)
    pipeline.message_ids = iter(range(1, 1000)).__next__
    gate = threading.Event()
    blocker = pipeline.submit(lambda s: gate.wait(10), wait=True)  # the next ops queue up behind it
    ops = [pipeline.submit(message=(d, fields(b"x")), wait=True) for d in ("a", "full", "b", "a")]
    bad = pipeline.submit(lambda s: s.ack("", 1), wait=True)  # ValueError: empty device id
    read = pipeline.submit(lambda s: s.last_seq("a"), wait=True)
    gate.set()
    blocker.wait(10)
    assert [ops[0].wait(10).seq, ops[2].wait(10).seq, ops[3].wait(10).seq] == [1, 1, 2]
    with pytest.raises(SeqExhausted):
        ops[1].wait(10)
    with pytest.raises(ValueError):
        bad.wait(10)
    assert read.wait(10) == 2  # sees the writes submitted before it
    pipeline.close()
    with pytest.raises(PipelineClosed):
        pipeline.submit(lambda s: None)


def test_while_the_store_cannot_write_reads_answer_and_each_write_fails_alone(tmp_path):
    path = tmp_path / "s.db"
    store = SQLiteStore(path, timeout=0.01)
    store.append("a", message_id=1, payload=b"kept", priority=1)
    pipeline = StorePipeline(store)
    pipeline.message_ids = iter(range(2, 1000)).__next__
    lock = sqlite3.connect(path, isolation_level=None, timeout=0)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        gate = threading.Event()
        pipeline.submit(lambda s: gate.wait(10))
        write = pipeline.submit(message=("a", fields(b"new")), wait=True)
        read = pipeline.submit(lambda s: [m.payload for m in s.range("a")], wait=True)
        gate.set()
        with pytest.raises(StoreUnavailable):
            write.wait(10)
        assert read.wait(10) == [b"kept"]  # WAL readers need no lock: reads go on
    finally:
        lock.execute("COMMIT")
        lock.close()
    assert pipeline.call(lambda s: [m.payload for m in s.range("a")], timeout=10) == [b"kept"]
    pipeline.close()
    store.close()


def _fill(store: SQLiteStore) -> None:
    """Cap the file at its current size: the next write that needs a page fails with SQLITE_FULL."""
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages + 2}")


def test_a_disk_full_group_commits_nothing_of_itself(tmp_path):
    """SQLITE_FULL rolls the whole transaction back: nothing after it may commit on its own."""
    store = SQLiteStore(tmp_path / "s.db", timeout=0.05)
    try:
        store.append("seed", message_id=1, payload=b"s", priority=1)
        _fill(store)
        errors = []
        with pytest.raises(StoreUnavailable):
            with store.group():
                for i in range(6):
                    payload = b"x" * 20000 if i == 1 else b"small"  # the second call overflows the file
                    try:
                        store.append(f"d{i}", message_id=10 + i, payload=payload, priority=1)
                    except StoreUnavailable as exc:
                        errors.append((i, exc))
        assert [i for i, _ in errors] == [1, 2, 3, 4, 5]  # nothing ran after the failure
        for i in range(6):
            assert store.range(f"d{i}") == [], i  # the group is all or nothing
        assert store.last_seq("seed") == 1
    finally:
        store.close()


def test_a_disk_full_group_retried_alone_stores_each_push_once(tmp_path):
    """The pipeline's retry of a failed group, call by call, must not store a push twice."""
    store = SQLiteStore(tmp_path / "s.db", timeout=0.05)
    pipeline = StorePipeline(store)
    try:
        store.append("seed", message_id=1, payload=b"s", priority=1)
        _fill(store)
        release = hold_writer(pipeline)
        ops = []
        for i in range(6):
            payload = b"x" * 20000 if i == 1 else b"small"

            def append(s, i=i, payload=payload):
                return s.append(f"d{i}", message_id=10 + i, payload=payload, priority=1)

            ops.append(pipeline.submit(append, wait=True))
        release.set()
        outcomes = []
        for op in ops:
            try:
                outcomes.append(op.wait(10).seq)
            except StoreUnavailable:
                outcomes.append(None)
        assert outcomes[1] is None  # the push that did not fit failed to its caller
        for i, seq in enumerate(outcomes):
            seqs = [m.seq for m in store.range(f"d{i}")]
            assert seqs == ([] if seq is None else [seq]), (i, seqs, outcomes)
        assert any(seq == 1 for seq in outcomes)  # the small ones fit alone
    finally:
        pipeline.close()
        store.close()


def _held_pipeline(store, **kwargs):
    """A pipeline whose writer is inside a blocking op until the returned event is set."""
    pipeline = StorePipeline(store, **kwargs)
    return pipeline, hold_writer(pipeline)


def test_urgent_work_goes_before_queued_pushes_and_each_lane_keeps_its_order(store):
    pipeline, release = _held_pipeline(store, max_group=64)
    order: list[tuple[str, int]] = []
    try:
        pushes = [pipeline.submit(message=("d", fields(b"p", i)), wait=True,
                                  done=lambda r, e, i=i: order.append(("push", i)))
                  for i in range(1000)]
        claims = [pipeline.submit(lambda s: s.last_seq("d"), urgent=True, wait=True,
                                  done=lambda r, e, i=i: order.append(("urgent", i)))
                  for i in range(5)]
        assert pipeline.pending() == 1005
        release.set()
        for op in claims + pushes:
            op.wait(10)
        assert order[:5] == [("urgent", i) for i in range(5)]  # the HELLOs did not wait for 1,000 pushes
        assert [i for kind, i in order if kind == "push"] == list(range(1000))
        assert [m.seq for m in store.range("d", limit=2000)] == list(range(1, 1001))
    finally:
        release.set()
        pipeline.close()


def test_urgent_work_never_takes_a_whole_group_while_pushes_wait(store):
    pipeline, release = _held_pipeline(store, max_group=8)
    order: list[str] = []
    try:
        ops = [pipeline.submit(lambda s: s.last_seq("d"), urgent=True, wait=True,
                               done=lambda r, e: order.append("urgent")) for _ in range(60)]
        ops += [pipeline.submit(message=("d", fields(b"p", i)), wait=True, done=lambda r, e: order.append("push"))
                for i in range(20)]
        release.set()
        for op in ops:
            op.wait(10)
        # Each group of 8: 6 urgent, then 2 pushes, so pushes go on during a storm of HELLOs.
        assert order[:8] == ["urgent"] * 6 + ["push"] * 2
        assert order.count("push") == 20 and store.last_seq("d") == 20
    finally:
        release.set()
        pipeline.close()


def test_a_rolled_back_group_does_not_leave_the_revocations_table_marked_as_made(tmp_path):
    """The first revocation creates its table inside the group; a rollback takes the table away again."""
    store = SQLiteStore(tmp_path / "s.db", timeout=0.05)
    try:
        store.append("seed", message_id=1, payload=b"s", priority=1)
        _fill(store)
        with pytest.raises(StoreUnavailable):
            with store.group():
                store.set_revoked_before("victim", 1000.0)
                store.append("d", message_id=2, payload=b"x" * 60000, priority=1)
        store._db.execute("PRAGMA max_page_count=1073741823")
        assert store.revoked_before("victim") is None and store.revoked_before("other") is None
        store.set_revoked_before("victim", 2000.0)  # makes the table again
        assert store.revoked_before("victim") == 2000.0
        assert store.health().writable
    finally:
        store.close()


@pytest.mark.parametrize("max_group", [1, 2, 3])
def test_small_groups_still_let_pushes_through_a_stream_of_urgent_work(store, max_group):
    pipeline, release = _held_pipeline(store, max_group=max_group)
    order: list[str] = []
    try:
        ops = [pipeline.submit(lambda s: s.last_seq("d"), urgent=True, wait=True,
                               done=lambda r, e: order.append("urgent")) for _ in range(30)]
        ops += [pipeline.submit(message=("d", fields(b"p", i)), wait=True, done=lambda r, e: order.append("push"))
                for i in range(3)]
        release.set()
        for op in ops:
            op.wait(10)
        assert order.index("push") <= 2  # a push goes within the first groups, not after all 30
        assert order.count("push") == 3 and store.last_seq("d") == 3
    finally:
        release.set()
        pipeline.close()

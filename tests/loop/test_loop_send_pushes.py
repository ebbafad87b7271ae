"""``Loop.send_pushes``: N PUSH frames (one seq each) on N connections in one C call.

Differential: whatever the items, ``send_pushes`` leaves exactly what the same
``send_push`` calls in order leave — the bytes on every socket, each
connection's sent seq, the counters, pauses and slow-consumer closes — on two
loops set up alike over real sockets on 127.0.0.1.
"""
from __future__ import annotations

import contextlib
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushcore import Reason
from pushcore import _frame as F
from pushcore._loop import Loop
from pushcore.loop import run_until


class Side:
    """A loop with *k* accepted connections and the test's end of each socket."""

    def __init__(self, k: int, sent: list[int]) -> None:
        self.loop = Loop()
        self.opened: list[int] = []
        self.paused: list[int] = []
        self.closed: list[tuple[int, int]] = []
        self.loop.set_handlers(on_open=lambda b: self.opened.extend(c for c, _ in b),
                               on_pause=self.paused.extend, on_close=self.closed.extend)
        lid = self.loop.listen("127.0.0.1", 0)
        address = self.loop.listen_address(lid)
        self.socks = []
        for _ in range(k):
            self.socks.append(socket.create_connection(address, timeout=5))
            count = len(self.socks)
            assert run_until(self.loop, lambda n=count: len(self.opened) >= n)
        self.cids = list(self.opened)
        for cid, seq in zip(self.cids, sent):
            self.loop.set_sent_seq(cid, seq)

    def counters(self) -> dict:
        stats = self.loop.stats()
        return {k: stats[k] for k in ("frames_out", "stale_ops", "send_queue_bytes", "pauses",
                                      "closed_total", "outbound_budget_closes")}

    def received(self, index: int, count: int) -> bytes:
        """*count* bytes from the test's end of connection *index*."""
        sock = self.socks[index]
        sock.settimeout(5)
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            assert chunk, "the connection closed early"
            data += chunk
        return data

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.loop.close()


@contextlib.contextmanager
def two_sides(k: int, sent: list[int]):
    a = b = None
    try:
        a = Side(k, sent)
        b = Side(k, sent)
        yield a, b
    finally:
        for side in (a, b):
            if side is not None:
                side.close()


def gone(cid: int) -> int:
    return cid ^ (1 << 40)  # the same fd, another generation: a stale cid


texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8)
u64 = st.one_of(st.integers(0, 20), st.integers(0, 2**64 - 1))


@st.composite
def cases(draw):
    k = draw(st.integers(1, 4))
    sent = draw(st.lists(st.integers(0, 12), min_size=k, max_size=k))
    closing = draw(st.sets(st.integers(0, k - 1), max_size=k))
    items = draw(st.lists(st.tuples(st.integers(0, k), u64, u64), max_size=12))  # index k: a stale cid
    fields = dict(
        payload=draw(st.binary(max_size=300)),
        priority=draw(st.sampled_from([F.PRIORITY_LOW, F.PRIORITY_HIGH])),
        expiry=draw(st.one_of(st.just(0), st.integers(0, 2**32 - 1))),
        collapse_key=draw(texts),
        topic=draw(texts),
    )
    shared_mid = draw(st.booleans())
    return k, sent, closing, items, fields, shared_mid


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_send_pushes_equals_send_push_per_item(case):
    k, sent, closing, items, fields, shared_mid = case
    with two_sides(k, sent) as (a, b):
        for side in (a, b):
            for i in closing:
                side.loop.close_conn(side.cids[i])

        def target(side: Side, index: int) -> int:
            return side.cids[index] if index < k else gone(side.cids[0])

        mid0 = items[0][2] if items else 7
        results = []
        for index, seq, mid in items:
            results.append(a.loop.send_push(target(a, index), seq, mid0 if shared_mid else mid,
                                            fields["payload"], fields["priority"], fields["expiry"],
                                            fields["collapse_key"], fields["topic"]))
        skipped = b.loop.send_pushes(
            [target(b, i) for i, _, _ in items], [s for _, s, _ in items],
            mid0 if shared_mid else [m for _, _, m in items], fields["payload"], fields["priority"],
            fields["expiry"], fields["collapse_key"], fields["topic"])
        assert skipped == [i for i, ok in enumerate(results) if not ok]
        assert a.counters() == b.counters()
        for i in range(k):
            if i in closing:
                continue
            assert a.loop.sent_seq(a.cids[i]) == b.loop.sent_seq(b.cids[i])
            a.loop.flush()
            b.loop.flush()
            out = a.loop.conn_info(a.cids[i])["bytes_out"]
            assert b.loop.conn_info(b.cids[i])["bytes_out"] == out
            assert a.received(i, out) == b.received(i, out)


def test_the_frames_decode_to_the_pushes_given():
    with two_sides(2, [0, 5]) as (_a, side):
        c0, c1 = side.cids
        assert side.loop.send_pushes([c0, c1, c0], [1, 6, 2], [10, 11, 12], b"hi",
                                     F.PRIORITY_HIGH, 99, "ck", "news") == []
        assert side.loop.sent_seq(c0) == 2 and side.loop.sent_seq(c1) == 6
        side.loop.flush()
        frames0 = F.Decoder().feed(side.received(0, side.loop.conn_info(c0)["bytes_out"]))
        frames1 = F.Decoder().feed(side.received(1, side.loop.conn_info(c1)["bytes_out"]))
        common = dict(payload=b"hi", priority=F.PRIORITY_HIGH, expiry=99, collapse_key="ck", topic="news")
        assert frames0 == [F.Push(seq=1, message_id=10, **common), F.Push(seq=2, message_id=12, **common)]
        assert frames1 == [F.Push(seq=6, message_id=11, **common)]


def test_closed_and_unknown_cids_are_skipped_and_reported():
    with two_sides(3, [0, 0, 0]) as (_a, side):
        c0, c1, c2 = side.cids
        side.loop.close_conn(c1)
        stale = side.loop.stats()["stale_ops"]
        assert side.loop.send_pushes([c0, c1, gone(c2), c2], [1, 1, 1, 1], 5, b"x") == [1, 2]
        assert side.loop.stats()["stale_ops"] == stale + 2
        assert side.loop.sent_seq(c1) == 0 and side.loop.sent_seq(c0) == side.loop.sent_seq(c2) == 1


def test_behind_sends_only_to_caught_up_connections():
    with two_sides(3, [4, 2, 9]) as (_a, side):
        c0, c1, c2 = side.cids
        behind: list[int] = []
        assert side.loop.send_pushes([c0, c1, c2], [5, 5, 10], 1, b"x", behind=behind) == []
        assert behind == [1]
        assert [side.loop.sent_seq(c) for c in (c0, c1, c2)] == [5, 2, 10]
        frames = side.loop.stats()["frames_out"]
        assert side.loop.send_pushes([c1], [5], 1, b"x", behind=[]) == []
        assert side.loop.stats()["frames_out"] == frames  # still behind: nothing queued


def test_bad_arguments_raise_before_anything_is_queued():
    with two_sides(2, [0, 0]) as (_a, side):
        c0, c1 = side.cids
        before = side.loop.stats()["frames_out"]
        with pytest.raises(TypeError, match=r"seqs\[1\]"):
            side.loop.send_pushes([c0, c1], [1, "2"], 1, b"x")
        with pytest.raises(ValueError, match=r"seqs\[1\]"):
            side.loop.send_pushes([c0, c1], [1, -2], 1, b"x")
        with pytest.raises(ValueError, match="message_ids has 1 items"):
            side.loop.send_pushes([c0, c1], [1, 2], [1], b"x")
        with pytest.raises(ValueError, match="seqs has 3 items"):
            side.loop.send_pushes([c0, c1], [1, 2, 3], 1, b"x")
        with pytest.raises(TypeError):
            side.loop.send_pushes([c0, c1], [1, 2], 1, "not bytes")
        with pytest.raises(ValueError):
            side.loop.send_pushes([c0, c1], [1, 2], 1, b"x", priority=9)
        with pytest.raises(TypeError):
            side.loop.send_pushes([c0, c1], [1, 2], 1, b"x", behind=())
        assert side.loop.stats()["frames_out"] == before
        assert side.loop.sent_seq(c0) == side.loop.sent_seq(c1) == 0
        assert side.loop.send_pushes([], [], [], b"x") == []


@pytest.mark.parametrize("limits", ["watermarks", "budget"])
def test_watermarks_cap_and_budget_act_as_for_send_push(limits):
    payload = b"p" * 1000
    with two_sides(3, [0, 0, 0]) as (a, b):
        for side in (a, b):
            if limits == "watermarks":
                side.loop.set_write_limits(high=2500, low=1000, cap=6000)
            else:
                side.loop.set_limits(outbound_budget=9000)
        # connection 0 gets 7 pushes (over the cap / the largest queue), 1 gets 3, 2 gets 1
        plan = [0, 1, 0, 2, 0, 1, 0, 0, 1, 0, 0]
        seqs = list(range(1, len(plan) + 1))
        results = [a.loop.send_push(a.cids[i], s, s, payload) for i, s in zip(plan, seqs)]
        skipped = b.loop.send_pushes([b.cids[i] for i in plan], seqs, seqs, payload)
        assert skipped == [n for n, ok in enumerate(results) if not ok]
        assert skipped  # the limit did act
        assert a.counters() == b.counters()
        for side in (a, b):
            side.loop.run_once(0)
        assert [a.cids.index(c) for c in a.paused] == [b.cids.index(c) for c in b.paused]
        assert [(a.cids.index(c), r) for c, r in a.closed] == [(b.cids.index(c), r) for c, r in b.closed]
        assert all(r == Reason.SLOW_CONSUMER for _c, r in b.closed)
        if limits == "watermarks":
            assert b.paused

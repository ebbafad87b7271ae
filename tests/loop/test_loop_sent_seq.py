"""The loop's per-connection sent seq, over real sockets on 127.0.0.1.

``send_push`` encodes a PUSH in C, queues it and records its seq as sent in
the same call; ``sent_seq`` reads it (0 for a new connection) and
``set_sent_seq`` sets it. Like the other per-cid queries, they raise
ValueError for a cid whose slot was freed; ``send_push`` to a gone or closing
connection returns False and records nothing (a stale op, like ``send``).
"""
from __future__ import annotations

import socket

import pytest

from pushcore import Reason
from pushcore import _frame as F


def serve_one(make_loop, **listen_kw):
    loop, ev = make_loop()
    lid = loop.listen("127.0.0.1", 0, **listen_kw)
    sock = socket.create_connection(loop.listen_address(lid), timeout=5)
    ev.run_until(lambda: ev.opened)
    cid, got_lid = ev.opened[-1]
    assert got_lid == lid
    return loop, ev, sock, cid


def read_frames(loop, sock, count, timeout=5.0):
    """Run the loop until *count* frames arrived on *sock*; return them."""
    decoder = F.Decoder()
    frames = []
    sock.setblocking(False)
    from pushcore.loop import run_until

    def got_all():
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                frames.extend(decoder.feed(chunk))
        except BlockingIOError:
            pass
        return len(frames) >= count

    assert run_until(loop, got_all, timeout), f"{len(frames)} of {count} frames arrived"
    return frames


def test_a_new_connection_starts_at_zero(make_loop):
    loop, ev, sock, cid = serve_one(make_loop)
    assert loop.sent_seq(cid) == 0
    assert loop.conn_info(cid)["sent_seq"] == 0
    sock.close()


def test_send_push_sends_the_frame_and_records_its_seq(make_loop):
    loop, ev, sock, cid = serve_one(make_loop)
    frames_before = loop.stats()["frames_out"]
    assert loop.send_push(cid, 7, 0xABCDEF, b"hello", F.PRIORITY_LOW, 1234, "ck", "news") is True
    assert loop.sent_seq(cid) == 7  # recorded by the send call itself
    assert loop.stats()["frames_out"] == frames_before + 1
    assert loop.send_push(cid, 8, 2, b"x") is True  # encode_push's defaults
    assert loop.sent_seq(cid) == 8 == loop.conn_info(cid)["sent_seq"]
    assert read_frames(loop, sock, 2) == [
        F.Push(seq=7, message_id=0xABCDEF, payload=b"hello", priority=F.PRIORITY_LOW, expiry=1234,
               collapse_key="ck", topic="news"),
        F.Push(seq=8, message_id=2, payload=b"x"),
    ]
    sock.close()


def test_send_push_bytes_equal_encode_push(make_loop):
    loop, ev, sock, cid = serve_one(make_loop)
    args = (2**64 - 1, 2**64 - 1, bytearray(b"p" * 300), F.PRIORITY_HIGH, 2**32 - 1, "κ", "t")
    assert loop.send_push(cid, *args)
    expected = F.encode_push(*args)
    loop.flush()
    sock.settimeout(5)
    got = b""
    while len(got) < len(expected):
        got += sock.recv(65536)
    assert got == expected
    assert loop.sent_seq(cid) == 2**64 - 1
    sock.close()


def test_sent_seq_only_goes_up(make_loop):
    loop, ev, sock, cid = serve_one(make_loop)
    assert loop.send_push(cid, 5, 1, b"a")
    assert loop.send_push(cid, 3, 1, b"b")  # sent again (a FETCH of older messages): still sent
    assert loop.sent_seq(cid) == 5
    assert loop.send_push(cid, 0, 1, b"ephemeral")  # seq 0: not sequenced
    assert loop.sent_seq(cid) == 5
    assert [f.seq for f in read_frames(loop, sock, 3)] == [5, 3, 0]
    sock.close()


def test_set_sent_seq_sets_it_without_sending(make_loop):
    loop, ev, sock, cid = serve_one(make_loop)
    loop.set_sent_seq(cid, 41)
    assert loop.sent_seq(cid) == 41
    loop.set_sent_seq(cid, 3)  # a plain setter: down as well
    assert loop.sent_seq(cid) == 3
    assert loop.conn_info(cid)["send_queue_bytes"] == 0
    with pytest.raises(OverflowError):
        loop.set_sent_seq(cid, -1)
    sock.close()


def test_bad_arguments_raise_as_encode_push_and_record_nothing(make_loop):
    loop, ev, sock, cid = serve_one(make_loop)
    for args, error in [
        ((-1, 0, b""), ValueError),
        ((1, 2**64, b""), ValueError),
        ((1, 0, b"", 3), ValueError),
        ((1, 0, b"", 1, 2**32), ValueError),
        ((1, 0, "payload"), TypeError),
        ((1, 0, b"", 1, 0, "", b"topic"), TypeError),
    ]:
        with pytest.raises(error):
            F.encode_push(*args)
        with pytest.raises(error):
            loop.send_push(cid, *args)
    assert loop.sent_seq(cid) == 0
    assert loop.conn_info(cid)["send_queue_bytes"] == 0
    sock.close()


def test_closing_or_closed_cid(make_loop):
    loop, ev, sock, cid = serve_one(make_loop)
    assert loop.send_push(cid, 1, 1, b"a")
    assert loop.close(cid, Reason.SHUTTING_DOWN)
    stale = loop.stats()["stale_ops"]
    # closing: refused like send(), nothing recorded; the query still answers
    assert loop.send_push(cid, 2, 1, b"b") is False
    assert loop.send(cid, b"\x30\x00") is False
    assert loop.stats()["stale_ops"] == stale + 2
    assert loop.sent_seq(cid) == 1
    seen = []
    loop.set_handlers(on_close=lambda batch: seen.extend((c, loop.sent_seq(c)) for c, _ in batch))
    sock.close()
    from pushcore.loop import run_until

    assert run_until(loop, lambda: seen)
    assert seen == [(cid, 1)]  # readable inside on_close
    loop.run_once(0)
    # the slot is freed once on_close returned: the same error as conn_info()
    with pytest.raises(ValueError) as info:
        loop.conn_info(cid)
    for query in (lambda: loop.sent_seq(cid), lambda: loop.set_sent_seq(cid, 9)):
        with pytest.raises(ValueError) as got:
            query()
        assert str(got.value) == str(info.value)
    assert loop.send_push(cid, 3, 1, b"c") is False


def test_a_reused_slot_starts_at_zero(make_loop):
    loop, ev, sock, cid = serve_one(make_loop)
    lid = ev.opened[-1][1]
    fd = loop.conn_info(cid)["fd"]
    loop.set_sent_seq(cid, 77)
    assert loop.abort(cid)
    loop.run_once(0)
    sock.close()
    loop.run_once(0.01)
    sock2 = socket.create_connection(loop.listen_address(lid), timeout=5)
    ev.run_until(lambda: len(ev.opened) == 2)
    cid2 = ev.opened[-1][0]
    assert cid2 != cid and loop.conn_info(cid2)["fd"] == fd  # the same slot, a new generation
    assert loop.sent_seq(cid2) == 0
    with pytest.raises(ValueError):
        loop.sent_seq(cid)
    sock2.close()


class Owner:
    """A label that can be watched with a weak reference."""


def test_label_is_kept_in_c_until_cleared_or_the_slot_is_freed(make_loop):
    import gc
    import weakref

    loop, ev, sock, cid = serve_one(make_loop)
    assert loop.label(cid) is None
    first = Owner()
    watch_first = weakref.ref(first)
    loop.set_label(cid, first)
    del first
    gc.collect()
    assert loop.label(cid) is watch_first()          # the loop holds the reference
    second = Owner()
    watch_second = weakref.ref(second)
    loop.set_label(cid, second)                       # replacing drops the old one
    del second
    gc.collect()
    assert watch_first() is None and loop.label(cid) is watch_second()
    seen = []
    loop.set_handlers(on_close=lambda batch: seen.extend((c, loop.label(c) is watch_second()) for c, _ in batch))
    sock.close()
    ev.run_until(lambda: seen)
    assert seen == [(cid, True)]                      # still readable inside on_close
    loop.run_once(0)                                  # the slot is freed after on_close
    gc.collect()
    assert watch_second() is None
    assert loop.label(cid) is None                    # never raises for a freed cid
    with pytest.raises(ValueError):
        loop.set_label(cid, "x")


def test_set_label_none_clears(make_loop):
    loop, ev, sock, cid = serve_one(make_loop)
    loop.set_label(cid, "phone-1")
    assert loop.label(cid) == "phone-1"
    loop.set_label(cid, None)
    assert loop.label(cid) is None
    sock.close()

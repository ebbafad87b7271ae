"""Output flow control: a slow reader crossing the watermarks and the hard cap,
and the pool giving chunks back as output drains."""
from __future__ import annotations

import socket
import time

import pytest

from pushcore import Reason

BLOCK = bytes(range(256)) * 64  # 16 KiB


def accept(loop, ev, lid, rcvbuf=None):
    n = len(ev.opened)
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(loop.listen_address(lid))
    ev.run_until(lambda: len(ev.opened) > n)
    return s, ev.opened[-1][0]


def drain(s, n):
    s.settimeout(5)
    got = 0
    while got < n:
        chunk = s.recv(1 << 20)
        assert chunk, "unexpected EOF"
        got += len(chunk)
    return got


def test_slow_reader_crosses_high_then_low_watermark(make_loop):
    loop, ev = make_loop()
    loop.set_write_limits(high=256 * 1024, low=64 * 1024, cap=64 * 1024 * 1024)
    lid = loop.listen("127.0.0.1", 0)
    slow, cid = accept(loop, ev, lid, rcvbuf=8192)
    fast, cid_fast = accept(loop, ev, lid)
    sent = 0
    # the slow reader does not read: the queue grows past the high watermark
    while not ev.paused:
        assert loop.send(cid, BLOCK)
        assert loop.send(cid_fast, BLOCK[:100])
        sent += len(BLOCK)
        loop.run_once(0.001)
        assert sent < 32 * 1024 * 1024
    assert ev.paused == [cid]  # only the slow one
    info = loop.conn_info(cid)
    assert info["paused"] and info["send_queue_bytes"] > 256 * 1024
    assert loop.stats()["send_queue_bytes"] >= info["send_queue_bytes"]
    assert loop.pool_stats()["in_use"] > 0
    assert ev.resumed == []
    # now it reads: the queue drains to the low watermark -> on_resume, once
    slow.setblocking(False)
    got = 0
    end = time.monotonic() + 10
    while not ev.resumed:
        assert time.monotonic() < end
        try:
            got += len(slow.recv(1 << 20))
        except BlockingIOError:
            pass
        loop.run_once(0.001)
    assert ev.resumed == [cid]
    assert loop.conn_info(cid)["send_queue_bytes"] <= 64 * 1024
    got += drain(slow, sent - got)
    assert got == sent
    loop.run_once(0.01)
    st = loop.stats()
    assert st["pauses"] == 1 and st["resumes"] == 1
    assert st["send_queue_bytes"] == 0
    assert loop.pool_stats()["in_use"] == 0  # drained connections hold no chunk
    drain(fast, loop.conn_info(cid_fast)["bytes_out"])
    slow.close()
    fast.close()


def test_slow_consumer_cut_at_the_hard_cap(make_loop):
    loop, ev = make_loop()
    loop.set_write_limits(high=128 * 1024, low=32 * 1024, cap=1024 * 1024)
    lid = loop.listen("127.0.0.1", 0)
    slow, cid = accept(loop, ev, lid, rcvbuf=8192)
    other, cid_other = accept(loop, ev, lid)
    refused_at = None
    for i in range(1000):
        if not loop.send(cid, BLOCK):
            refused_at = i
            break
        loop.send(cid_other, b"\x30\x00")
        loop.run_once(0.001)
    assert refused_at is not None
    ev.run_until(lambda: ev.closed)
    assert ev.closed == [(cid, Reason.SLOW_CONSUMER)]
    assert ev.paused == [cid]
    assert loop.stats()["closed_by_reason"] == {int(Reason.SLOW_CONSUMER): 1}
    assert loop.send(cid, b"x") is False
    # the cut is a reset, and the other connection is untouched
    slow.settimeout(5)
    with pytest.raises(ConnectionResetError):
        while slow.recv(1 << 20):
            pass
    assert loop.is_open(cid_other)
    loop.run_once(0.01)
    assert loop.stats()["send_queue_bytes"] == 0
    assert loop.pool_stats()["in_use"] == 0
    slow.close()
    other.close()


def test_write_limits_are_validated(make_loop):
    loop, ev = make_loop()
    assert loop.get_write_limits() == (256 * 1024, 64 * 1024, 4 * 1024 * 1024)
    with pytest.raises(ValueError):
        loop.set_write_limits(high=10, low=20, cap=30)
    with pytest.raises(ValueError):
        loop.set_write_limits(high=10, low=5, cap=2**31)
    loop.set_write_limits(cap=8 * 1024 * 1024)
    assert loop.get_write_limits() == (256 * 1024, 64 * 1024, 8 * 1024 * 1024)


def test_pool_slabs_go_back_after_a_burst(make_loop):
    loop, ev = make_loop(chunk_size=4096, chunks_per_slab=4, max_empty_slabs=1)
    loop.set_write_limits(high=64 << 20, low=1 << 20, cap=128 << 20)
    lid = loop.listen("127.0.0.1", 0)
    s, cid = accept(loop, ev, lid)
    loop.send(cid, b"z" * (4 << 20))  # 4 MiB queued at once: ~1024 chunks
    peak = loop.pool_stats()
    assert peak["in_use"] >= 1000 and peak["high_water"] == peak["in_use"]
    s.setblocking(False)
    got = 0
    end = time.monotonic() + 10
    while got < 4 << 20:
        assert time.monotonic() < end
        loop.run_once(0.001)
        try:
            got += len(s.recv(1 << 20))
        except BlockingIOError:
            pass
    loop.run_once(0)
    after = loop.pool_stats()
    assert after["in_use"] == 0 and after["high_water"] == peak["high_water"]
    # cached right after the burst (the next one reuses them) ...
    assert after["slabs"] >= 250 and after["empty_slabs"] == after["slabs"]
    # ... and given back once they stayed unused for a decay period
    ev.run_until(lambda: loop.pool_stats()["slabs"] <= 1, timeout=5)
    assert loop.pool_stats()["slabs_released"] >= 250
    s.close()


def test_graceful_close_gives_up_after_close_timeout(make_loop):
    loop, ev = make_loop(close_timeout=0.3)
    loop.set_write_limits(high=32 << 20, low=1 << 20, cap=64 << 20)
    lid = loop.listen("127.0.0.1", 0)
    s, cid = accept(loop, ev, lid, rcvbuf=8192)
    loop.send(cid, b"q" * (16 << 20))  # the peer never reads it
    loop.close(cid, Reason.SHUTTING_DOWN)
    start = time.monotonic()
    ev.run_until(lambda: ev.closed)
    assert time.monotonic() - start >= 0.25
    assert ev.closed == [(cid, Reason.SHUTTING_DOWN)]
    loop.run_once(0.01)
    assert loop.stats()["send_queue_bytes"] == 0 and loop.pool_stats()["in_use"] == 0
    s.settimeout(5)
    with pytest.raises(ConnectionResetError):
        while s.recv(1 << 20):
            pass
    s.close()

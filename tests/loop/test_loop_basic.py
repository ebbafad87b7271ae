"""The C-level loop over real sockets on 127.0.0.1: read path, write path,
closing, stale ids, counters."""
from __future__ import annotations

import socket
import struct
import sys
import threading
import time

import pytest

from pushcore import Reason
from pushcore import _frame as F
from pushcore._loop import Loop, sizeof_conn

PING = b"\x30\x00"
PONG = b"\x40\x00"


def client(loop, lid, **kw) -> socket.socket:
    s = socket.create_connection(loop.listen_address(lid), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def recv_all(sock: socket.socket) -> bytes:
    """Everything until the peer's FIN."""
    parts = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)


def serve(make_loop, **listen_kw):
    loop, ev = make_loop()
    lid = loop.listen("127.0.0.1", 0, **listen_kw)
    return loop, ev, lid


def accept_one(loop, ev, lid):
    n = len(ev.opened)
    s = client(loop, lid)
    ev.run_until(lambda: len(ev.opened) > n)
    cid, got_lid = ev.opened[-1]
    assert got_lid == lid
    return s, cid


def test_sizeof_conn_is_small():
    assert sizeof_conn() == Loop.sizeof_conn() <= 128


def test_ping_answered_in_c_and_frames_reach_python(make_loop):
    loop, ev, lid = serve(make_loop)
    s, cid = accept_one(loop, ev, lid)
    s.sendall(PING + F.Ack(seq=5).encode() + PING + F.Fetch(after_seq=1, max_count=9).encode())
    ev.run_until(lambda: len(ev.frames) == 2)
    assert ev.frames == [(cid, F.Ack(seq=5)), (cid, F.Fetch(after_seq=1, max_count=9))]
    assert recv_exact(s, 4) == PONG + PONG
    st = loop.stats()
    assert st["pings_answered"] == 2 and st["frames_in"] == 4 and st["accepted"] == 1
    assert st["bytes_in"] == 4 + len(F.Ack(seq=5).encode()) + len(F.Fetch(after_seq=1, max_count=9).encode())
    s.close()


def test_partial_frames_across_reads(make_loop):
    loop, ev, lid = serve(make_loop)
    s, cid = accept_one(loop, ev, lid)
    frames = [F.Upstream(upstream_id=i, payload=bytes([i]) * (i * 7), topic=f"t{i}")
              for i in range(1, 6)]
    data = b"".join(f.encode() for f in frames)
    for i in range(len(data)):  # one byte per read
        s.sendall(data[i:i + 1])
        loop.run_once(0.001)
        if 0 < i < len(data) - 1 and not ev.frames:
            assert loop.stats()["recv_partial_bytes"] > 0
    ev.run_until(lambda: len(ev.frames) == len(frames))
    assert [f for _, f in ev.frames] == frames
    assert loop.stats()["recv_partial_bytes"] == 0
    assert loop.pool_stats()["in_use"] == 0  # an idle connection holds no chunk
    s.close()


def test_frame_larger_than_a_chunk_arrives_in_pieces(make_loop):
    loop, ev = make_loop(chunk_size=1024, max_frame_size=1 << 20)
    lid = loop.listen("127.0.0.1", 0)
    s, cid = accept_one(loop, ev, lid)
    big = F.Upstream(upstream_id=1, payload=bytes(range(256)) * 1000)  # 256 KB
    data = big.encode()
    for i in range(0, len(data), 10007):
        s.sendall(data[i:i + 10007])
        loop.run_once(0.002)
    ev.run_until(lambda: len(ev.frames) == 1)
    assert ev.frames[0][1] == big
    ps = loop.pool_stats()
    assert ps["big_acquired"] >= 1 and ps["big_in_use"] == 0 and ps["in_use"] == 0
    s.close()


def test_many_frames_in_one_read(make_loop):
    loop, ev, lid = serve(make_loop)
    s, cid = accept_one(loop, ev, lid)
    acks = b"".join(F.Ack(seq=i).encode() for i in range(2000))
    s.sendall(acks)
    ev.run_until(lambda: len(ev.frames) == 2000)
    assert [f.seq for _, f in ev.frames] == list(range(2000))
    assert ev.batches["frames"] < 2000  # batched: far fewer calls than frames
    s.close()


def test_reply_from_handler_goes_out_in_the_same_turn(make_loop):
    loop, ev, lid = serve(make_loop)

    def echo(batch):
        for cid, frame in batch:
            loop.send(cid, F.UpstreamAck(upstream_id=frame.upstream_id).encode())

    loop.set_handlers(on_frames=echo, on_open=ev.opened.extend)
    s, cid = accept_one(loop, ev, lid)
    s.sendall(b"".join(F.Upstream(upstream_id=i, payload=b"x").encode() for i in range(50)))
    expected = b"".join(F.UpstreamAck(upstream_id=i).encode() for i in range(50))
    got = b""
    deadline = time.monotonic() + 5
    s.settimeout(0.01)
    while len(got) < len(expected) and time.monotonic() < deadline:
        loop.run_once(0.01)
        try:
            got += s.recv(65536)
        except TimeoutError:
            pass
    assert got == expected
    st = loop.stats()
    assert st["frames_out"] == 50 and st["bytes_out"] == len(expected)
    assert st["writes"] < 50  # coalesced
    s.close()


@pytest.mark.parametrize("bad, code", [
    (b"\x31\x00", Reason.BAD_FLAGS),                               # PING with a flag bit
    (b"\x00\x00", Reason.UNKNOWN_TYPE),
    (b"\x80\xff\xff\xff\xff\xff\x01", Reason.VARINT_OVERRUN),      # 6-byte length
    (b"\x80\x80\x80\x08", Reason.FRAME_TOO_LARGE),                  # 131072 > 65536
    (b"\x80\x01\x80", Reason.TRUNCATED),                            # ACK body: cut varint
    (b"\x30\x01\x00", Reason.TRAILING_BYTES),                       # PING with a body
])
def test_garbage_closes_only_its_connection(make_loop, bad, code):
    loop, ev, lid = serve(make_loop)
    good1, cid1 = accept_one(loop, ev, lid)
    evil, cid_evil = accept_one(loop, ev, lid)
    good2, cid2 = accept_one(loop, ev, lid)
    evil.sendall(F.Ack(seq=1).encode() + bad + b"more garbage after the error")
    good1.sendall(F.Ack(seq=10).encode())
    ev.run_until(lambda: ev.reason_of(cid_evil) is not None)
    assert ev.reason_of(cid_evil) == code
    # the frame before the bad bytes was delivered, then an ERROR with the code, then FIN
    assert (cid_evil, F.Ack(seq=1)) in ev.frames
    evil.settimeout(5)
    assert F.decode(recv_all(evil)) == F.ErrorFrame(code=code, message=code.name)
    assert loop.stats()["errors_by_code"] == {int(code): 1}
    # the others carry on
    good2.sendall(PING + F.Ack(seq=20).encode())
    ev.run_until(lambda: (cid2, F.Ack(seq=20)) in ev.frames)
    assert recv_exact(good2, 2) == PONG
    assert (cid1, F.Ack(seq=10)) in ev.frames
    assert loop.is_open(cid1) and loop.is_open(cid2) and not loop.is_open(cid_evil)
    for s in (good1, evil, good2):
        s.close()


def test_garbage_in_the_middle_of_a_partial_frame(make_loop):
    loop, ev, lid = serve(make_loop)
    s, cid = accept_one(loop, ev, lid)
    s.sendall(b"\x80")                       # header only
    ev.run_until(lambda: loop.stats()["recv_partial_bytes"] == 1)
    s.sendall(b"\xff\xff\xff\xff\xff")       # length varint overruns across reads
    ev.run_until(lambda: ev.reason_of(cid) is not None)
    assert ev.reason_of(cid) == Reason.VARINT_OVERRUN
    assert loop.stats()["recv_partial_bytes"] == 0
    s.close()


def test_peer_reset_mid_frame(make_loop):
    loop, ev, lid = serve(make_loop)
    s, cid = accept_one(loop, ev, lid)
    s.sendall(F.Upstream(upstream_id=1, payload=b"y" * 5000).encode()[:3000])
    ev.run_until(lambda: loop.stats()["recv_partial_bytes"] == 3000)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST
    ev.run_until(lambda: ev.closed)
    assert ev.closed == [(cid, Reason.PEER_RESET)]
    assert loop.stats()["recv_partial_bytes"] == 0
    assert loop.pool_stats()["in_use"] == 0


def test_peer_fin_mid_frame_is_a_reset_at_a_boundary_an_orderly_close(make_loop):
    loop, ev, lid = serve(make_loop)
    a, cid_a = accept_one(loop, ev, lid)
    b, cid_b = accept_one(loop, ev, lid)
    a.sendall(F.Ack(seq=1).encode()[:1])
    ev.run_until(lambda: loop.stats()["recv_partial_bytes"] == 1)
    a.shutdown(socket.SHUT_WR)
    b.sendall(F.Ack(seq=1).encode())
    b.shutdown(socket.SHUT_WR)
    ev.run_until(lambda: len(ev.closed) == 2)
    assert ev.reason_of(cid_a) == Reason.PEER_RESET
    assert ev.reason_of(cid_b) == Reason.PEER_CLOSED
    assert ev.frames == [(cid_b, F.Ack(seq=1))]
    a.close()
    b.close()


def test_send_many_reaches_every_target_once_in_order(make_loop):
    loop, ev, lid = serve(make_loop)
    socks, cids = [], []
    for _ in range(20):
        s, cid = accept_one(loop, ev, lid)
        socks.append(s)
        cids.append(cid)
    frames = [F.Push(seq=i, message_id=1000 + i, payload=b"p" * 90).encode() for i in range(200)]
    for f in frames:
        assert loop.send_many(cids, f) == 20
    assert loop.send_many(iter(cids[:3]), b"") == 3   # any iterable; empty data is fine
    loop.run_once(0)
    expected = b"".join(frames)
    for s in socks:
        assert recv_exact(s, len(expected)) == expected
    st = loop.stats()
    assert st["frames_out"] == 200 * 20 + 3
    # no extra bytes on any socket
    loop.run_once(0.01)
    for s in socks:
        s.setblocking(False)
        with pytest.raises(BlockingIOError):
            s.recv(1)
        s.close()


def test_send_many_skips_gone_connections(make_loop):
    loop, ev, lid = serve(make_loop)
    a, cid_a = accept_one(loop, ev, lid)
    b, cid_b = accept_one(loop, ev, lid)
    loop.abort(cid_b, Reason.REPLACED)
    stale_before = loop.stats()["stale_ops"]
    assert loop.send_many([cid_a, cid_b, (7 << 32) | 3], PING) == 1
    assert loop.stats()["stale_ops"] == stale_before + 2
    loop.run_once(0)
    assert recv_exact(a, 2) == PING
    a.close()
    b.close()


def test_stale_cid_is_refused(make_loop):
    loop, ev, lid = serve(make_loop)
    s1, cid1 = accept_one(loop, ev, lid)
    fd1 = cid1 & 0xFFFFFFFF
    loop.set_sent_seq(cid1, 77)
    assert loop.close(cid1, Reason.NORMAL) is True
    ev.run_until(lambda: ev.closed)
    s1.close()
    ev.run_until(lambda: loop.stats()["turns"] > 0 and not loop.is_open(cid1))
    loop.run_once(0.01)
    s2, cid2 = accept_one(loop, ev, lid)
    assert cid2 & 0xFFFFFFFF == fd1 and cid2 != cid1  # same fd, new generation
    before = loop.stats()["stale_ops"]
    assert loop.send(cid1, PING) is False
    assert loop.close(cid1) is False
    assert loop.abort(cid1) is False
    assert loop.authenticate(cid1) is False
    assert loop.watch_activity(cid1) is False
    assert loop.stats()["stale_ops"] == before + 5
    with pytest.raises(ValueError):
        loop.sent_seq(cid1)
    with pytest.raises(ValueError):
        loop.conn_info(cid1)
    assert loop.sent_seq(cid2) == 0
    loop.run_once(0.01)
    s2.setblocking(False)
    with pytest.raises(BlockingIOError):
        s2.recv(1)  # nothing meant for the old connection reached the new one
    s2.close()


def test_graceful_close_flushes_queued_data_before_fin(make_loop):
    loop, ev, lid = serve(make_loop)
    loop.set_write_limits(high=32 << 20, low=1 << 20, cap=64 << 20)
    s, cid = accept_one(loop, ev, lid)
    payload = bytes(range(256)) * (64 * 1024)  # 16 MiB: more than the kernel takes at once
    assert loop.send(cid, payload)
    assert loop.close(cid, Reason.SHUTTING_DOWN)
    assert loop.send(cid, b"too late") is False
    for _ in range(3):
        loop.run_once(0.01)
    # the peer has not read yet: the rest waits in the loop's queue, no FIN yet
    assert ev.closed == [] and loop.stats()["write_would_block"] >= 1
    assert loop.conn_info(cid)["state"] == "closing"
    received = []
    reader = threading.Thread(target=lambda: received.append(recv_all(s)))
    reader.start()
    ev.run_until(lambda: ev.closed, timeout=20)
    reader.join(20)
    assert received == [payload]
    assert ev.closed == [(cid, Reason.SHUTTING_DOWN)]
    s.close()


def test_abort_resets(make_loop):
    loop, ev, lid = serve(make_loop)
    s, cid = accept_one(loop, ev, lid)
    loop.send(cid, b"never sent")
    assert loop.abort(cid, Reason.REPLACED)
    loop.run_once(0)
    assert ev.closed == [(cid, Reason.REPLACED)]
    with pytest.raises(ConnectionResetError):
        s.recv(100)
    s.close()


def test_sent_seq_and_conn_info_readable_inside_on_close(make_loop):
    loop, ev, lid = serve(make_loop)
    seen = []

    def on_close(batch):
        for cid, reason in batch:
            info = loop.conn_info(cid)
            seen.append((loop.sent_seq(cid), reason, info["state"], info["bytes_in"]))

    loop.set_handlers(on_open=ev.opened.extend, on_close=on_close)
    s, cid = accept_one(loop, ev, lid)
    loop.set_sent_seq(cid, 2**63 + 12345678901)
    info = loop.conn_info(cid)
    assert info["peer"] == s.getsockname() and info["local"] == s.getpeername()
    assert info["state"] == "open" and info["sent_seq"] == 2**63 + 12345678901 and info["listener"] == lid
    s.sendall(PING)
    s.close()
    run_until = __import__("pushcore.loop", fromlist=["run_until"]).run_until
    assert run_until(loop, lambda: seen)
    assert seen == [(2**63 + 12345678901, Reason.PEER_CLOSED, "closed", 2)]
    loop.run_once(0)
    with pytest.raises(ValueError):
        loop.sent_seq(cid)  # freed once on_close returned


def test_every_handler_is_batched_per_turn(make_loop):
    loop, ev, lid = serve(make_loop)
    socks = [client(loop, lid) for _ in range(30)]
    time.sleep(0.1)  # let every connection reach the backlog
    loop.run_once(0.5)
    assert len(ev.opened) == 30 and ev.batches["open"] == 1
    for s in socks:
        s.sendall(F.Ack(seq=3).encode())
    time.sleep(0.1)
    loop.run_once(0.5)
    ev.run_until(lambda: len(ev.frames) == 30)
    assert ev.batches["frames"] <= 2
    for s in socks:
        s.close()
    time.sleep(0.1)
    ev.run_until(lambda: len(ev.closed) == 30)
    assert ev.batches["close"] <= 3
    assert {r for _, r in ev.closed} == {Reason.PEER_CLOSED}
    st = loop.stats()
    assert st["open"] == 0 and st["closed_total"] == 30 and st["accepted"] == 30
    assert st["closed_by_reason"] == {int(Reason.PEER_CLOSED): 30}


def test_handler_exception_is_reported_and_the_loop_carries_on(make_loop, monkeypatch):
    loop, ev, lid = serve(make_loop)
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    calls = []

    def bad_handler(batch):
        calls.append(batch)
        raise RuntimeError("handler bug")

    loop.set_handlers(on_open=ev.opened.extend, on_frames=bad_handler)
    s, cid = accept_one(loop, ev, lid)
    s.sendall(F.Ack(seq=1).encode())
    ev.run_until(lambda: calls)
    s.sendall(F.Ack(seq=2).encode() + PING)
    ev.run_until(lambda: len(calls) == 2)
    assert recv_exact(s, 2) == PONG
    assert loop.stats()["callback_errors"] == 2
    assert len(reported) == 2 and isinstance(reported[0].exc_value, RuntimeError)
    s.close()


def test_keyboard_interrupt_in_a_handler_propagates(make_loop):
    loop, ev, lid = serve(make_loop)

    def interrupt(batch):
        raise KeyboardInterrupt

    loop.set_handlers(on_open=interrupt)
    s = client(loop, lid)
    with pytest.raises(KeyboardInterrupt):
        for _ in range(100):
            loop.run_once(0.05)
    s.close()


def test_outbound_connect_and_exchange_between_two_loops(make_loop):
    server, sev = make_loop()
    lid = server.listen("127.0.0.1", 0)
    host, port = server.listen_address(lid)
    cl, cev = make_loop()
    cid = cl.connect(host, port, source=("127.0.0.1", 0))
    assert cl.send(cid, F.Ack(seq=9).encode())  # queued while connecting
    assert cl.stats()["connecting"] == 1

    def both(pred):
        deadline = time.monotonic() + 5
        while not pred():
            assert time.monotonic() < deadline
            server.run_once(0.005)
            cl.run_once(0.005)

    both(lambda: cev.opened and sev.frames)
    assert cev.opened == [(cid, -1)]
    scid = sev.frames[0][0]
    assert sev.frames == [(scid, F.Ack(seq=9))]
    assert cl.conn_info(cid)["local"][0] == "127.0.0.1"
    server.send(scid, F.Push(seq=1, message_id=2, payload=b"hi").encode())
    both(lambda: cev.frames)
    assert cev.frames == [(cid, F.Push(seq=1, message_id=2, payload=b"hi"))]
    st = cl.stats()
    assert st["connected"] == 1 and st["connecting"] == 0
    cl.close(cid)
    both(lambda: sev.closed and cev.closed)
    assert cev.closed == [(cid, Reason.NORMAL)]
    assert sev.closed == [(scid, Reason.PEER_CLOSED)]


def test_connect_refused(make_loop):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    loop, ev = make_loop()
    cid = loop.connect("127.0.0.1", port)
    ev.run_until(lambda: ev.closed)
    assert ev.closed == [(cid, Reason.CONNECT_FAILED)]
    assert ev.opened == []
    st = loop.stats()
    assert st["open"] == 0 and st["connecting"] == 0


def test_listen_errors_are_clear(make_loop):
    loop, ev = make_loop()
    lid = loop.listen("127.0.0.1", 0)
    host, port = loop.listen_address(lid)
    with pytest.raises(OSError) as info:
        loop.listen("127.0.0.1", port)
    assert "listen on 127.0.0.1" in str(info.value)
    with pytest.raises(ValueError):
        loop.listen("127.0.0.1", 70000)
    loop.unlisten(lid)
    with pytest.raises(ValueError):
        loop.listen_address(lid)


def test_reuse_port_lets_two_loops_share_a_port(make_loop):
    a, aev = make_loop()
    b, bev = make_loop()
    lid_a = a.listen("127.0.0.1", 0, reuse_port=True)
    port = a.listen_address(lid_a)[1]
    lid_b = b.listen("127.0.0.1", port, reuse_port=True)
    assert b.listen_address(lid_b)[1] == port


def test_closed_loop_refuses_work():
    loop = Loop()
    loop.close()
    loop.close()  # idempotent
    assert loop.closed
    with pytest.raises(RuntimeError):
        loop.run_once(0)
    with pytest.raises(RuntimeError):
        loop.listen("127.0.0.1", 0)


def test_small_writes_to_idle_connections_take_small_chunks(make_loop):
    loop, ev, lid = serve(make_loop)
    socks, cids = [], []
    for _ in range(10):
        s, cid = accept_one(loop, ev, lid)
        socks.append(s)
        cids.append(cid)
    small = F.Push(seq=1, message_id=2, payload=b"s" * 100).encode()
    loop.send_many(cids, small)
    ps = loop.pool_stats()
    assert ps["small"]["in_use"] == 10 and ps["in_use"] == 10  # no page-sized chunk
    big = b"B" * 5000
    loop.send(cids[0], big)  # spills into page-sized chunks behind the small one
    assert loop.pool_stats()["in_use"] == 10 + 2
    loop.run_once(0)
    assert recv_exact(socks[0], len(small) + len(big)) == small + big
    for s in socks[1:]:
        assert recv_exact(s, len(small)) == small
    assert loop.pool_stats()["in_use"] == 0
    for s in socks:
        s.close()

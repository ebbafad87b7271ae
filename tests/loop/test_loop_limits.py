"""The loop's abuse limits (issue 9, findings 5 and 6) over real sockets on 127.0.0.1.

Before authentication: the pre-auth frame cap, the pre-auth buffer budget,
the connect-rate limits (loop-wide and per source address), each refusing
with ERROR OVERLOADED. For everyone: the gateway-wide outbound budget, which
closes the largest queues first (SLOW_CONSUMER) while the others carry on.
"""
from __future__ import annotations

import socket

import pytest

from pushcore import Reason, _loop
from pushcore import _frame as F
from pushcore.loop import limits

OVERLOADED = F.ErrorFrame(code=int(Reason.OVERLOADED), message="OVERLOADED")
PAGE = _loop.DEFAULT_CHUNK_SIZE


def hello(token_size: int = 3) -> bytes:
    return F.Hello(versions=(1,), device_id="dev-1", token=b"t" * token_size).encode()


def connect(loop, lid, source: str | None = None) -> socket.socket:
    s = socket.socket()
    s.settimeout(5)
    if source is not None:
        s.bind((source, 0))
    s.connect(loop.listen_address(lid))
    return s


def accept(loop, ev, lid, source: str | None = None):
    n = len(ev.opened)
    s = connect(loop, lid, source)
    ev.run_until(lambda: len(ev.opened) > n)
    return s, ev.opened[-1][0]


def read_to_eof(s: socket.socket) -> bytes:
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return out
        out += chunk


def refused(loop, ev, lid, source: str | None = None) -> bool:
    """Connect; True when the loop answered ERROR OVERLOADED and closed without on_open."""
    n = len(ev.opened)
    s = connect(loop, lid, source)
    try:
        before = sum(loop.stats()["refused"].values())
        ev.run_until(lambda: sum(loop.stats()["refused"].values()) > before or len(ev.opened) > n)
        if len(ev.opened) > n:
            return False
        assert F.decode(read_to_eof(s)) == OVERLOADED
        return True
    finally:
        s.close()


def test_defaults_are_the_documented_ones_and_match_the_pure_python_copy():
    assert (_loop.DEFAULT_PREAUTH_FRAME_MAX, _loop.DEFAULT_PREAUTH_BUDGET, _loop.DEFAULT_OUTBOUND_BUDGET,
            _loop.DEFAULT_CONNECT_RATE, _loop.DEFAULT_SOURCE_CONNECT_RATE) == (
        limits.DEFAULT_PREAUTH_FRAME_MAX, limits.DEFAULT_PREAUTH_BUDGET, limits.DEFAULT_OUTBOUND_BUDGET,
        limits.DEFAULT_CONNECT_RATE, limits.DEFAULT_SOURCE_CONNECT_RATE)
    with _loop.Loop() as loop:
        assert loop.limits() == {
            "preauth_frame_max": 2048, "preauth_budget": 16 << 20, "outbound_budget": 256 << 20,
            "connect_rate": 20000.0, "connect_burst": 20000.0,
            "source_connect_rate": 200.0, "source_connect_burst": 200.0, "limit_loopback": False,
        }
        loop.set_limits(source_connect_rate=50)     # the burst follows the rate it was not given
        assert loop.limits()["source_connect_burst"] == 50.0
        loop.set_limits(preauth_budget=0)           # others kept
        assert loop.limits()["source_connect_rate"] == 50.0 and loop.limits()["preauth_budget"] == 0
        for bad in ({"preauth_frame_max": 0}, {"connect_rate": -1}, {"source_connect_burst": 0.5},
                    {"connect_rate": float("inf")}):
            with pytest.raises(ValueError):
                loop.set_limits(**bad)
        stats = loop.stats()
        assert stats["outbound_budget"] == 256 << 20 and stats["preauth_budget"] == 0
        assert stats["refused"] == {"connect_rate": 0, "source_rate": 0, "preauth_budget": 0}


def test_a_hello_over_the_preauth_cap_is_frame_too_large_an_authenticated_frame_is_not(make_loop):
    loop, ev = make_loop()
    lid = loop.listen("127.0.0.1", 0, auth_timeout=5)
    big = hello(3000)                              # a 3 KB HELLO: over the 2 KiB pre-auth cap
    assert len(big) < loop.max_frame_size
    # the length arriving with the header (one read) ...
    s1, cid1 = accept(loop, ev, lid)
    s1.sendall(big[:100])
    # ... and split from it (completing a buffered partial frame)
    s2, cid2 = accept(loop, ev, lid)
    s2.sendall(big[:1])
    loop.run_once(0.05)
    s2.sendall(big[1:100])
    ev.run_until(lambda: len(ev.closed) == 2)
    assert sorted(ev.closed) == sorted([(cid1, Reason.FRAME_TOO_LARGE), (cid2, Reason.FRAME_TOO_LARGE)])
    for s in (s1, s2):
        assert F.decode(read_to_eof(s)) == F.ErrorFrame(code=1, message="FRAME_TOO_LARGE")
        s.close()
    # a HELLO within the cap is taken; once authenticated, the 64 KiB frame cap applies
    s3, cid3 = accept(loop, ev, lid)
    s3.sendall(hello(1900))
    ev.run_until(lambda: len(ev.frames) == 1)
    assert ev.frames[0] == (cid3, F.decode(hello(1900)))
    loop.authenticate(cid3)
    upstream = F.Upstream(upstream_id=1, payload=b"u" * 30000).encode()
    s3.sendall(upstream[:5])                       # a partial frame, then the rest
    loop.run_once(0.05)
    s3.sendall(upstream[5:])
    ev.run_until(lambda: len(ev.frames) == 2)
    assert ev.frames[1] == (cid3, F.decode(upstream))
    assert loop.is_open(cid3)
    assert loop.stats()["preauth_bytes"] == 0
    s3.close()


def test_the_preauth_budget_refuses_new_connections_until_buffers_are_freed(make_loop):
    # each partial HELLO of 1.5 KB holds one page chunk (4064 bytes) until it completes
    loop, ev = make_loop(preauth_budget=4 * PAGE + 100)
    lid = loop.listen("127.0.0.1", 0, auth_timeout=5)
    partial = hello(1900)[:1500]
    held = []
    for i in range(4):
        s, cid = accept(loop, ev, lid)
        if i == 0:   # a first byte alone takes a small chunk; the rest moves it to a page
            s.sendall(partial[:1])
            ev.run_until(lambda: loop.stats()["preauth_bytes"] == _loop.SMALL_CHUNK_SIZE)
            s.sendall(partial[1:])
        else:
            s.sendall(partial)
        ev.run_until(lambda want=(i + 1) * PAGE: loop.stats()["preauth_bytes"] == want)
        held.append((s, cid))
    # no room for one more HELLO: a new connection is turned away before on_open
    assert refused(loop, ev, lid)
    assert loop.stats()["refused"]["preauth_budget"] == 1
    assert all(loop.is_open(cid) for _s, cid in held)
    # the held buffers go away with their connections; then a real device gets in
    for s, _cid in held:
        s.close()
    ev.run_until(lambda: len(ev.closed) == 4)
    assert loop.stats()["preauth_bytes"] == 0
    s, cid = accept(loop, ev, lid)
    s.sendall(hello())
    ev.run_until(lambda: len(ev.frames) == 1)
    assert ev.frames == [(cid, F.decode(hello()))] and loop.authenticate(cid)
    s.close()


def test_a_connection_whose_buffer_would_pass_the_preauth_budget_is_closed_overloaded(make_loop):
    loop, ev = make_loop(preauth_budget=PAGE + 1000)
    lid = loop.listen("127.0.0.1", 0, auth_timeout=5)
    s1, cid1 = accept(loop, ev, lid)
    s2, cid2 = accept(loop, ev, lid)              # both admitted: nothing buffered yet
    partial = hello(1900)[:1500]
    s1.sendall(partial)
    ev.run_until(lambda: loop.stats()["preauth_bytes"] == PAGE)
    s2.sendall(partial)
    ev.run_until(lambda: ev.closed)
    assert ev.closed == [(cid2, Reason.OVERLOADED)]
    assert F.decode(read_to_eof(s2)) == OVERLOADED
    # the first completes its HELLO; authenticated, its buffers no longer count
    s1.sendall(hello(1900)[1500:])
    ev.run_until(lambda: len(ev.frames) == 1)
    assert loop.stats()["preauth_bytes"] == 0 and loop.authenticate(cid1)
    s1.close()
    s2.close()


def test_the_per_source_connect_rate_refuses_overloaded_and_other_sources_get_in(make_loop):
    # a bucket of 3 that refills once in 1000 s: the fourth connection is over the rate
    loop, ev = make_loop(source_connect_rate=0.001, source_connect_burst=3, limit_loopback=True)
    lid = loop.listen("127.0.0.1", 0, auth_timeout=5)
    socks = [accept(loop, ev, lid)[0] for _ in range(3)]
    assert refused(loop, ev, lid)
    assert refused(loop, ev, lid)
    assert loop.stats()["refused"] == {"connect_rate": 0, "source_rate": 2, "preauth_budget": 0}
    # another source address has its own bucket
    other, cid = accept(loop, ev, lid, source="127.0.0.2")
    other.sendall(hello())
    ev.run_until(lambda: ev.frames)
    assert ev.frames == [(cid, F.decode(hello()))]
    assert len(ev.opened) == 4 and not ev.closed
    for s in [*socks, other]:
        s.close()


def test_loopback_sources_are_not_counted_per_source_unless_asked(make_loop):
    loop, ev = make_loop(source_connect_rate=0.001, source_connect_burst=1)
    lid = loop.listen("127.0.0.1", 0)
    socks = [accept(loop, ev, lid)[0] for _ in range(5)]
    assert loop.stats()["refused"]["source_rate"] == 0
    for s in socks:
        s.close()


def test_the_loop_wide_connect_rate_refuses_every_source(make_loop):
    loop, ev = make_loop(connect_rate=0.001, connect_burst=2)
    lid = loop.listen("127.0.0.1", 0)
    socks = [accept(loop, ev, lid)[0], accept(loop, ev, lid, source="127.0.0.3")[0]]
    assert refused(loop, ev, lid)
    assert refused(loop, ev, lid, source="127.0.0.4")
    assert loop.stats()["refused"]["connect_rate"] == 2
    loop.set_limits(connect_rate=0)              # 0 = no limit
    socks.append(accept(loop, ev, lid)[0])
    for s in socks:
        s.close()


def test_the_outbound_budget_closes_the_largest_queues_first(make_loop):
    loop, ev = make_loop(outbound_budget=1_000_000)
    lid = loop.listen("127.0.0.1", 0)
    (sa, a), (sb, b), (sc, c), (sr, reader) = (accept(loop, ev, lid) for _ in range(4))
    # queued in one go (no turn runs in between, so the kernel takes none of it)
    assert loop.send(a, b"a" * 500_000) and loop.send(b, b"b" * 300_000) and loop.send(c, b"c" * 150_000)
    assert loop.send(reader, b"r" * 100_000)      # 1.05 MB > budget: the largest (a) goes
    assert loop.stats()["outbound_bytes"] == 550_000
    assert loop.send(c, b"c" * 300_000)           # c now the largest but under budget: kept
    assert loop.send(reader, b"r" * 200_000)      # over again: c (450 KB) goes, not the sender (300 KB)
    assert not loop.is_open(a) and not loop.is_open(c) and loop.is_open(b) and loop.is_open(reader)
    assert loop.stats()["outbound_bytes"] == 600_000
    assert loop.stats()["outbound_budget_closes"] == 2
    # the reader gets every byte; a and c were reset
    sr.setblocking(False)
    got = 0
    for _ in range(2000):
        loop.run_once(0.005)
        try:
            while chunk := sr.recv(1 << 20):
                got += len(chunk)
        except BlockingIOError:
            pass
        if got >= 300_000:
            break
    assert got == 300_000
    assert sorted(ev.closed) == sorted([(a, Reason.SLOW_CONSUMER), (c, Reason.SLOW_CONSUMER)])
    assert loop.stats()["closed_by_reason"] == {int(Reason.SLOW_CONSUMER): 2}
    # one queue bigger than the whole budget closes its own connection
    loop.set_limits(outbound_budget=100_000)
    assert loop.send(reader, b"r" * 150_000) is False
    ev.run_until(lambda: len(ev.closed) >= 3)
    assert (reader, Reason.SLOW_CONSUMER) in ev.closed
    for s in (sa, sb, sc, sr):
        s.close()


def test_turning_the_preauth_budget_off_and_on_keeps_the_count_true(make_loop):
    # Review finding: with the budget off, a growing pre-auth buffer was not
    # accounted, and its release on close wrapped the counter below zero.
    loop, ev = make_loop(preauth_budget=1 << 20)
    lid = loop.listen("127.0.0.1", 0, auth_timeout=5)
    hello = F.Hello(versions=(1,), device_id="dev-1", token=b"t" * 1900).encode()
    with socket.create_connection(loop.listen_address(lid)) as sock:
        ev.run_until(lambda: ev.opened)
        sock.sendall(hello[:1])
        ev.run_until(lambda: loop.stats()["preauth_bytes"] > 0)
        loop.set_limits(preauth_budget=0)
        sock.sendall(hello[1:1500])
        for _ in range(20):
            loop.run_once(0.01)
        assert loop.stats()["preauth_bytes"] > 0  # still counted with the budget off
    ev.run_until(lambda: ev.closed)
    assert loop.stats()["preauth_bytes"] == 0
    loop.set_limits(preauth_budget=1 << 20)
    with socket.create_connection(loop.listen_address(lid)):
        for _ in range(20):
            loop.run_once(0.01)
    assert loop.stats()["refused"]["preauth_budget"] == 0

"""Deadlines in the C timing wheel (auth gate, idle timeout, ping interval,
connect timeout), watch_activity, and the Python callbacks (call_soon,
call_later, call_soon_threadsafe)."""
from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from pushcore import Reason
from pushcore import _frame as F

PING = b"\x30\x00"
PONG = b"\x40\x00"
HELLO = F.Hello(versions=(1,), device_id="dev-1", token=b"tok").encode()


def accept(loop, ev, lid):
    n = len(ev.opened)
    s = socket.create_connection(loop.listen_address(lid), timeout=5)
    ev.run_until(lambda: len(ev.opened) > n)
    return s, ev.opened[-1][0]


def read_to_eof(s):
    s.settimeout(5)
    out = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            return out
        out += chunk


def test_auth_gate_refuses_frames_before_hello(make_loop):
    loop, ev = make_loop()
    lid = loop.listen("127.0.0.1", 0, auth_timeout=5)
    s, cid = accept(loop, ev, lid)
    assert loop.conn_info(cid)["authenticated"] is False
    s.sendall(PING)  # even a heartbeat is refused before HELLO
    ev.run_until(lambda: ev.closed)
    assert ev.closed == [(cid, Reason.NOT_AUTHENTICATED)]
    assert F.decode(read_to_eof(s)) == F.ErrorFrame(code=16, message="NOT_AUTHENTICATED")
    assert ev.frames == []
    assert loop.stats()["errors_by_code"] == {16: 1}


def test_auth_gate_allows_exactly_one_hello_until_authenticate(make_loop):
    loop, ev = make_loop()
    lid = loop.listen("127.0.0.1", 0, auth_timeout=5)
    s1, cid1 = accept(loop, ev, lid)
    s1.sendall(HELLO + F.Ack(seq=1).encode())  # pipelined before WELCOME
    ev.run_until(lambda: ev.closed)
    assert ev.frames == [(cid1, F.decode(HELLO))]
    assert ev.closed == [(cid1, Reason.NOT_AUTHENTICATED)]

    s2, cid2 = accept(loop, ev, lid)
    s2.sendall(HELLO)
    ev.run_until(lambda: len(ev.frames) == 2)
    assert loop.authenticate(cid2, idle_timeout=30)
    info = loop.conn_info(cid2)
    assert info["authenticated"] is True and info["idle_timeout"] == 30
    s2.sendall(PING + F.Ack(seq=4).encode())
    ev.run_until(lambda: len(ev.frames) == 3)
    assert ev.frames[-1] == (cid2, F.Ack(seq=4))
    assert s2.recv(2) == PONG
    s1.close()
    s2.close()


def test_auth_timeout_fires_only_for_the_silent_connection(make_loop):
    loop, ev = make_loop()
    lid = loop.listen("127.0.0.1", 0, auth_timeout=0.2)
    silent, cid_silent = accept(loop, ev, lid)
    hello_only, cid_hello = accept(loop, ev, lid)   # HELLO but never authenticated
    good, cid_good = accept(loop, ev, lid)
    hello_only.sendall(HELLO)
    good.sendall(HELLO)
    ev.run_until(lambda: len(ev.frames) == 2)
    loop.authenticate(cid_good)
    start = time.monotonic()
    ev.run_until(lambda: len(ev.closed) == 2, timeout=5)
    assert time.monotonic() - start >= 0.1
    assert sorted(ev.closed) == sorted([(cid_silent, Reason.AUTH_TIMEOUT),
                                        (cid_hello, Reason.AUTH_TIMEOUT)])
    assert F.decode(read_to_eof(silent)) == F.ErrorFrame(code=20, message="AUTH_TIMEOUT")
    loop.run_once(0.3)
    assert loop.is_open(cid_good)
    for s in (silent, hello_only, good):
        s.close()


def test_idle_timeout_fires_and_any_input_keeps_it_off(make_loop):
    loop, ev = make_loop()
    lid = loop.listen("127.0.0.1", 0, idle_timeout=0.3)
    quiet, cid_quiet = accept(loop, ev, lid)
    chatty, cid_chatty = accept(loop, ev, lid)
    deadline = time.monotonic() + 5
    while not ev.closed:
        assert time.monotonic() < deadline
        chatty.sendall(PING)  # a heartbeat every 50 ms
        loop.run_once(0.05)
    assert ev.closed == [(cid_quiet, Reason.IDLE_TIMEOUT)]
    assert F.decode(read_to_eof(quiet)) == F.ErrorFrame(code=21, message="IDLE_TIMEOUT")
    assert loop.is_open(cid_chatty)
    # set_idle_timeout changes it per connection, None turns it off
    loop.set_idle_timeout(cid_chatty, None)
    loop.run_once(0.4)
    assert loop.is_open(cid_chatty)
    loop.set_idle_timeout(cid_chatty, 0.05)
    ev.run_until(lambda: len(ev.closed) == 2)
    assert ev.closed[-1] == (cid_chatty, Reason.IDLE_TIMEOUT)
    assert loop.stats()["errors_by_code"] == {21: 2}
    quiet.close()
    chatty.close()


def test_ping_interval_sends_ping_from_c_and_counts_pongs(make_loop):
    server, sev = make_loop()
    lid = server.listen("127.0.0.1", 0)
    cl, cev = make_loop()
    cid = cl.connect(*server.listen_address(lid))

    def both(pred, timeout=5):
        end = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < end
            server.run_once(0.005)
            cl.run_once(0.005)

    both(lambda: cev.opened and sev.opened)
    assert cl.conn_info(cid)["pongs"] == 0
    cl.set_ping_interval(cid, 0.05)
    both(lambda: cl.conn_info(cid)["pongs"] >= 3)
    info = cl.conn_info(cid)
    assert info["ping_interval"] == 0.05 and info["last_pong_age"] < 1
    assert cl.stats()["pings_sent"] >= 3 and server.stats()["pings_answered"] >= 3
    assert sev.frames == [] and cev.frames == []  # heartbeats never reached Python
    # traffic counts as not quiet: sending every 20 ms suppresses the PINGs
    cl.set_ping_interval(cid, 0.2)
    sent = cl.stats()["pings_sent"]
    end = time.monotonic() + 0.6
    while time.monotonic() < end:
        cl.send(cid, F.Ack(seq=1).encode())
        server.run_once(0.01)
        cl.run_once(0.01)
    assert cl.stats()["pings_sent"] == sent
    cl.set_ping_interval(cid, None)
    cl.close(cid)
    both(lambda: sev.closed and cev.closed)


def test_watch_activity_reports_the_next_frame_once(make_loop):
    loop, ev = make_loop()
    lid = loop.listen("127.0.0.1", 0)
    a, cid_a = accept(loop, ev, lid)
    b, cid_b = accept(loop, ev, lid)
    assert loop.watch_activity(cid_a) and loop.watch_activity(cid_b)
    a.sendall(PING + PING)
    ev.run_until(lambda: ev.awake)
    loop.run_once(0.05)
    assert ev.awake == [cid_a]  # once, for a heartbeat, without a frame for Python
    assert ev.frames == []
    a.sendall(PING)
    b.sendall(F.Ack(seq=2).encode())
    ev.run_until(lambda: len(ev.awake) == 2)
    assert ev.awake == [cid_a, cid_b]
    assert ev.frames == [(cid_b, F.Ack(seq=2))]
    a.close()
    b.close()


def test_connect_timeout_when_the_backlog_is_full(make_loop):
    # A listener that never accepts, with its accept queue full: Linux drops
    # further SYNs, so a connect hangs until our timeout.
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(0)
    addr = blocker.getsockname()
    fillers = []
    for _ in range(8):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(addr)
        fillers.append(f)
    time.sleep(0.2)
    loop, ev = make_loop()
    cid = loop.connect(*addr, timeout=0.3)
    start = time.monotonic()
    ev.run_until(lambda: ev.closed, timeout=5)
    assert ev.closed == [(cid, Reason.CONNECT_FAILED)]
    assert ev.opened == []
    assert time.monotonic() - start >= 0.2
    for f in fillers:
        f.close()
    blocker.close()


def test_call_soon_and_call_later_order_and_cancel(make_loop):
    loop, ev = make_loop()
    seen = []
    loop.call_later(0.10, seen.append, "later-0.10")
    loop.call_later(0.05, seen.append, "later-0.05")
    cancelled = loop.call_later(0.07, seen.append, "cancelled")
    loop.call_soon(seen.append, "soon-1")
    loop.call_soon(lambda: loop.call_soon(seen.append, "soon-from-soon"))
    loop.call_soon(seen.append, "soon-2")
    cancelled.cancel()
    assert cancelled.cancelled()
    loop.run_once(0)
    assert seen == ["soon-1", "soon-2"]  # a callback's own call_soon waits a turn
    loop.run_once(0)
    assert seen == ["soon-1", "soon-2", "soon-from-soon"]
    start = time.monotonic()
    ev.run_until(lambda: len(seen) == 5)
    assert seen[3:] == ["later-0.05", "later-0.10"]
    assert time.monotonic() - start >= 0.05


def test_run_blocks_until_call_soon_threadsafe_from_another_thread(make_loop):
    loop, ev = make_loop()
    seen = []

    def from_loop(value):
        seen.append((value, threading.current_thread() is threading.main_thread()))
        loop.stop()

    def other_thread():
        time.sleep(0.2)
        loop.call_soon_threadsafe(from_loop, 42)

    t = threading.Thread(target=other_thread)
    t.start()
    turns_before = loop.stats()["turns"]
    loop.run()  # nothing else to do: blocks in epoll_wait until the eventfd
    t.join()
    assert seen == [(42, True)]
    assert loop.stats()["turns"] - turns_before <= 3  # slept, did not spin


def test_run_releases_the_gil_while_waiting(make_loop):
    loop, ev = make_loop()
    counter = [0]
    done = threading.Event()

    def spin():
        while not done.is_set():
            counter[0] += 1

    runner = threading.Thread(target=loop.run)
    runner.start()
    spinner = threading.Thread(target=spin)
    spinner.start()
    time.sleep(0.3)
    loop.stop()
    runner.join(5)
    done.set()
    spinner.join()
    assert not runner.is_alive()
    assert counter[0] > 1000  # the other thread ran while run() waited


def test_stop_from_another_thread_wakes_run(make_loop):
    loop, ev = make_loop()
    t = threading.Timer(0.2, loop.stop)
    t.start()
    start = time.monotonic()
    loop.run()
    t.join()
    assert 0.1 <= time.monotonic() - start < 5


def test_ctrl_c_interrupts_a_blocked_run(make_loop):
    loop, ev = make_loop()
    t = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    t.start()
    with pytest.raises(KeyboardInterrupt):
        loop.run()  # blocked in epoll_wait with the GIL released
    t.join()
    assert not loop.running

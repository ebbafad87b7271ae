"""``Loop.connect`` to a host name never blocks the loop.

The name is looked up in a resolver thread; ``connect`` returns the cid at
once (state ``connecting``) and the connect starts on the loop when the
address comes back. Meanwhile every other connection of the loop goes on:
here a connection PINGing every 20 ms keeps getting its PONGs. The lookup is
the real ``getaddrinfo`` of ``localhost`` (127.0.0.1, /etc/hosts: no outside
network), held back by the test until it has seen the PONGs.
"""
from __future__ import annotations

import errno
import socket
import threading

import pytest

from pushcore import Reason
from pushcore._loop import Loop
from pushcore.loop import run_until

HELD = "localhost"


@pytest.fixture
def held_lookup(monkeypatch):
    """getaddrinfo for HELD waits for the returned event (set at the latest after 8 s)."""
    release = threading.Event()
    started = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == HELD:
            started.set()
            release.wait(10)
        if host == "no-such-host.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    timer = threading.Timer(8.0, release.set)  # a blocking connect() would return after this
    timer.start()
    yield release, started
    release.set()
    timer.cancel()


class Events:
    def __init__(self, loop: Loop) -> None:
        self.opened: list[int] = []
        self.closed: dict[int, int] = {}
        self.errno: dict[int, int] = {}
        loop.set_handlers(on_open=lambda b: self.opened.extend(c for c, _ in b), on_close=self._closed)
        self.loop = loop

    def _closed(self, batch):
        for cid, reason in batch:
            self.closed[cid] = reason
            self.errno[cid] = self.loop.conn_info(cid)["errno"]


def pinging_loop():
    loop = Loop()
    ev = Events(loop)
    lid = loop.listen("127.0.0.1", 0)
    port = loop.listen_address(lid)[1]
    pinger = loop.connect("127.0.0.1", port)
    assert run_until(loop, lambda: pinger in ev.opened)
    loop.set_ping_interval(pinger, 0.02)  # the listener's side answers in C
    return loop, ev, port, pinger


def test_pings_are_answered_while_a_name_is_looked_up(held_lookup):
    release, started = held_lookup
    loop, ev, port, pinger = pinging_loop()
    try:
        named = loop.connect(HELD, port)  # returns at once
        assert loop.conn_info(named)["state"] == "connecting"
        assert loop.stats()["resolving"] == 1
        pongs = loop.conn_info(pinger)["pongs"]
        assert run_until(loop, lambda: loop.conn_info(pinger)["pongs"] >= pongs + 5, timeout=5.0)
        assert started.is_set() and not release.is_set()  # the PONGs came while the lookup was held
        assert loop.send(named, b"\x30\x00")  # output queued while resolving goes out once connected
        release.set()
        assert run_until(loop, lambda: named in ev.opened)
        assert loop.conn_info(named)["peer"] == ("127.0.0.1", port)
        assert loop.stats()["resolving"] == 0
        assert run_until(loop, lambda: loop.conn_info(named)["pongs"] == 1)
    finally:
        loop.close()


def test_a_name_that_does_not_resolve_fails_the_connect(held_lookup):
    loop, ev, port, _pinger = pinging_loop()
    try:
        cid = loop.connect("no-such-host.test", port)
        assert run_until(loop, lambda: cid in ev.closed)
        assert ev.closed[cid] == Reason.CONNECT_FAILED
        assert ev.errno[cid] == errno.ENXIO
        assert loop.stats()["resolving"] == 0 and loop.stats()["connecting"] == 0
    finally:
        loop.close()


def test_the_connect_timeout_covers_the_lookup(held_lookup):
    release, _started = held_lookup
    loop, ev, port, _pinger = pinging_loop()
    try:
        cid = loop.connect(HELD, port, timeout=0.1)
        assert run_until(loop, lambda: cid in ev.closed)
        assert ev.closed[cid] == Reason.CONNECT_FAILED and ev.errno[cid] == errno.ETIMEDOUT
        assert loop.stats()["resolving"] == 0
        opened = len(ev.opened)
        release.set()  # the late answer finds the connection gone: nothing happens
        assert not run_until(loop, lambda: len(ev.opened) > opened, timeout=0.3)
        other = loop.connect("127.0.0.1", port)  # the slot may be reused meanwhile
        assert run_until(loop, lambda: other in ev.opened)
    finally:
        loop.close()


def test_closing_a_loop_with_a_lookup_pending(held_lookup):
    release, started = held_lookup
    loop, _ev, port, _pinger = pinging_loop()
    loop.connect(HELD, port)
    assert run_until(loop, started.is_set)
    loop.close()
    release.set()  # the resolver thread's answer meets a closed loop: dropped quietly


def test_bad_arguments_still_raise_at_once():
    with Loop() as loop:
        with pytest.raises(ValueError):
            loop.connect("localhost", 70000)
        with pytest.raises(TypeError):
            loop.connect(b"localhost", 80)

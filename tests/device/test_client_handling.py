"""Issue 10 item 4: the Client acks only what the application handled, and judges expiry by server time.

* ``on_message`` raising stops the ACK before that seq; the message comes
  again after ``redeliver_delay`` on the same connection (later messages wait
  for it: in order, once) and on the next connection.
* A device whose clock is wrong still shows a live message: expiry is judged
  against the server's clock from WELCOME.

Real Servers (memory store) and real sockets on 127.0.0.1.
"""
from __future__ import annotations

import logging
import threading
import time

import pytest

from pushcore.codec import reference as protocol
from pushcore.device.client import Client
from serverkit import (
    ScriptedServer,
    running_server,
    stop_what_the_test_started,  # noqa: F401  (autouse: stops leftovers)
    token,
    wait_for,
)


def make_client(server, **kw) -> Client:
    host, port = server.address
    kw.setdefault("backoff", (0.05, 0.3))
    kw.setdefault("ack_delay", 0.01)
    return Client("d1", token("d1"), [f"{host}:{port}"], **kw)


class FlakyApp:
    """``on_message`` that raises the first *failures* times it sees seq *bad*; records every call."""

    def __init__(self, bad: int, failures: int = 1) -> None:
        self.bad = bad
        self.failures = failures
        self.calls: list[int] = []  # every seq handed to on_message, in order
        self.handled: list[int] = []  # the seqs it handled without raising
        self.lock = threading.Lock()

    def __call__(self, push) -> None:
        with self.lock:
            self.calls.append(push.seq)
            if push.seq == self.bad and self.failures > 0:
                self.failures -= 1
                raise RuntimeError(f"the app could not handle seq {push.seq}")
            self.handled.append(push.seq)

    def snapshot(self) -> tuple[list[int], list[int]]:
        with self.lock:
            return list(self.calls), list(self.handled)


def _next_ack(peer) -> int:
    """The seq of the next ACK *peer* receives (heartbeat PINGs skipped)."""
    while True:
        frame = peer.expect(protocol.ACK, protocol.PING)
        if frame.TYPE == protocol.ACK:
            return frame.seq


def stored_seqs(server) -> list[int]:
    return [m.seq for m in server.store.range("d1", 0)]


def test_a_message_whose_handler_raised_is_not_acked_and_comes_again_after_the_delay(caplog):
    app = FlakyApp(bad=2)
    with running_server() as server:
        client = make_client(server, on_message=app, redeliver_delay=0.3)
        client.start()
        with caplog.at_level(logging.ERROR, logger="pushcore.device.client"):
            for i in range(1, 4):
                server.push("d1", b"m%d" % i)
            wait_for(lambda: app.snapshot()[1] == [1, 2, 3], what="seq 2 handled after its redelivery")
        calls, handled = app.snapshot()
        # 2 came twice (failed, then handled); 3 was held back until 2 succeeded, then shown once
        assert calls == [1, 2, 2, 3]
        assert handled == [1, 2, 3]
        assert client.stats["connects"] == 1  # redelivered without reconnecting
        assert client.stats["handler_errors"] == 1
        wait_for(lambda: stored_seqs(server) == [], what="the ACK of 3 once everything was handled")
        assert client.last_seq == 3
        failures = [r for r in caplog.records if "on_message" in r.getMessage()]
        assert failures and failures[0].exc_info is not None  # logged with its traceback
        assert "seq 2" in failures[0].getMessage()
        client.stop()


def test_a_message_whose_handler_raised_stays_stored_and_comes_on_the_next_connection():
    app = FlakyApp(bad=2)
    with running_server() as server:
        # a delay far beyond the test: only a reconnect can bring it back
        client = make_client(server, on_message=app, redeliver_delay=600)
        client.start()
        for i in range(1, 4):
            server.push("d1", b"m%d" % i)
        # 1 is acked; 2 (failed) and 3 (held back behind it) stay stored
        wait_for(lambda: stored_seqs(server) == [2, 3], what="the ACK to stop before seq 2")
        assert app.snapshot() == ([1, 2], [1])
        assert client.last_seq == 1
        time.sleep(0.2)  # nothing else may be acked meanwhile
        assert stored_seqs(server) == [2, 3]
        server.disconnect("d1")
        wait_for(lambda: app.snapshot()[1] == [1, 2, 3], what="2 and 3 on the next connection")
        assert app.snapshot()[0] == [1, 2, 2, 3]
        wait_for(lambda: stored_seqs(server) == [], what="the ACK of 3")
        assert client.stats["connects"] == 2
        client.stop()


def test_a_handler_that_keeps_failing_keeps_its_message_and_later_ones_wait():
    app = FlakyApp(bad=1, failures=3)
    with running_server() as server:
        client = make_client(server, on_message=app, redeliver_delay=0.1)
        client.start()
        server.push("d1", b"first")
        server.push("d1", b"second")
        wait_for(lambda: app.snapshot()[1] == [1, 2], what="both handled after three failures")
        assert app.snapshot()[0] == [1, 1, 1, 1, 2]
        wait_for(lambda: stored_seqs(server) == [])
        client.stop()


def test_a_failure_inside_a_fetched_backlog_is_redelivered_in_order():
    app = FlakyApp(bad=7)
    with running_server(inline_max=2, page_max=4) as server:
        for i in range(1, 41):
            server.push("d1", b"%d" % i)
        client = make_client(server, on_message=app, page_size=10, redeliver_delay=0.2)
        client.start()
        wait_for(lambda: app.snapshot()[1] == list(range(1, 41)), what="the whole backlog, 7 redelivered")
        calls, _handled = app.snapshot()
        assert calls.count(7) == 2 and [s for s in calls if s != 7] == [s for s in range(1, 41) if s != 7]
        assert calls.index(7) < calls.index(8)  # nothing after 7 was shown before it succeeded
        server.push("d1", b"live")
        wait_for(lambda: app.snapshot()[1][-1] == 41, what="live pushes stream again")
        wait_for(lambda: stored_seqs(server) == [])
        assert client.stats["connects"] == 1
        client.stop()


# -- expiry judged by the server's clock ---------------------------------------


@pytest.mark.parametrize("skew", [2 * 3600, -2 * 3600])
def test_a_client_with_a_wrong_clock_still_shows_a_ttl_3600_message(skew):
    shown = []
    with running_server() as server:
        client = make_client(server, on_message=lambda p: shown.append(bytes(p.payload)),
                             clock=lambda: time.time() + skew)
        client.start()
        assert client.clock_offset == pytest.approx(-skew, abs=5)
        server.push("d1", b"still fresh", ttl=3600)
        wait_for(lambda: shown == [b"still fresh"], what="the ttl=3600 message on a skewed device")
        assert client.inbox.expired == 0
        wait_for(lambda: stored_seqs(server) == [])
        client.stop()


@pytest.mark.parametrize("skew", [2 * 3600, -2 * 3600, 0])
@pytest.mark.parametrize("server_time_known", [True, False])
def test_expiry_is_judged_against_the_server_clock_from_welcome(skew, server_time_known):
    scripted = ScriptedServer()
    server_now = 1_800_000_000  # the server's clock, whatever the device's says
    shown = []
    client = Client("d1", token("d1"), [f"{scripted.address[0]}:{scripted.address[1]}"],
                    on_message=lambda p: shown.append(p.seq), ack_delay=0.01,
                    clock=lambda: server_now + skew + 0.5)
    thread = threading.Thread(target=client.start)
    thread.start()
    peer = scripted.accept()
    peer.expect(protocol.HELLO)
    peer.send(protocol.Welcome(1, 0, 0, server_now * 1000 if server_time_known else 0))
    thread.join()
    peer.send(b"".join([
        protocol.encode_push(1, 11, b"expired by the server's clock", expiry=server_now - 60),
        protocol.encode_push(2, 12, b"live by the server's clock", expiry=server_now + 60),
        protocol.encode_push(3, 13, b"never expires"),
    ]))
    while _next_ack(peer) < 3:  # the expired one is acked too, never shown
        pass
    if server_time_known:
        assert shown == [2, 3] and client.inbox.expired == 1
    else:
        # no server clock: the client never drops by its own clock (the server drops expired ones)
        assert shown == [1, 2, 3] and client.inbox.expired == 0
    client.stop()
    scripted.close()

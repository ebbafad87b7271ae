"""Delivery semantics end to end over loopback: exactly once and in order across kills,
restarts, drains and replaced connections; expiry; collapse; low priority after a heartbeat."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pushcore.codec import reference as protocol
from pushcore.device.client import Client
from pushcore.device.heartbeat import HeartbeatPolicy
from pushcore.errors import Reason
from serverkit import (
    SECRET,
    Collector,
    RawDevice,
    free_port,
    make_server,
    running_server,
    stop_what_the_test_started,  # noqa: F401  (autouse: stops leftovers)
    token,
    wait_for,
)


def addr(server) -> str:
    return f"{server.address[0]}:{server.address[1]}"


def device(servers, collector, last_seq=0, device_id="d1", **kw) -> Client:
    kw.setdefault("backoff", (0.02, 0.2))
    kw.setdefault("ack_delay", 0.01)
    return Client(device_id, token(device_id), servers, on_message=collector, last_seq=last_seq, **kw)


def assert_exactly_once(collector: Collector, n: int) -> None:
    assert collector.seqs == list(range(1, n + 1))
    assert collector.payloads == [b"m%d" % i for i in range(1, n + 1)]


class Pusher(threading.Thread):
    """Pushes m1..mN to ``target()`` at a steady pace; seq i carries payload m<i>.

    Each push holds ``lock``, so a test that swaps the target server under the
    same lock never leaves a push half-way to a server being stopped.
    """

    def __init__(self, target, n: int, pace: float = 0.001, lock=None) -> None:
        super().__init__(daemon=True)
        self.target, self.n, self.pace = target, n, pace
        self.lock = lock or threading.Lock()
        self.pushed = 0
        self.error = None

    def run(self) -> None:
        try:
            while self.pushed < self.n:
                with self.lock:
                    seq = self.target().push("d1", b"m%d" % (self.pushed + 1))
                assert seq == self.pushed + 1, (seq, self.pushed)
                self.pushed += 1
                time.sleep(self.pace)
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_exactly_once_across_client_kills(tmp_path):
    n = 300
    got = Collector()
    with running_server(store=str(tmp_path / "s.db")) as server:
        pusher = Pusher(lambda: server, n)
        client = device([addr(server)], got)
        client.start()
        pusher.start()
        for kill_after in (40, 120, 200):
            got.wait(kill_after)
            client.kill()  # RST, no ACK flush: whatever was not acked comes again
            client = device([addr(server)], got, last_seq=client.last_seq)
            client.start()
        pusher.join(30)
        assert pusher.error is None
        got.wait(n)
        time.sleep(0.1)  # nothing more may arrive
        assert_exactly_once(got, n)
        wait_for(lambda: server.store.range("d1", 0) == [], what="the last ACK")
        client.stop()


def test_exactly_once_across_graceful_server_restarts(tmp_path):
    n = 200
    path = str(tmp_path / "s.db")
    got = Collector()
    current = {"server": make_server(store=path)}
    host, port = current["server"].start()
    client = device([f"{host}:{port}"], got)
    client.start()
    lock = threading.Lock()
    pusher = Pusher(lambda: current["server"], n, pace=0.002, lock=lock)
    pusher.start()
    for restart_after in (50, 130):
        got.wait(restart_after)
        with lock:
            current["server"].stop()
            current["server"] = make_server(store=path, port=port)
            current["server"].start()
    pusher.join(30)
    assert pusher.error is None
    got.wait(n)
    assert_exactly_once(got, n)
    client.stop()
    current["server"].stop()


KILLABLE_SERVER = textwrap.dedent(
    """
    import sys
    from pushcore.gateway.server import Server

    port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    server = Server("127.0.0.1", port, secret=%r, store=path)
    server.listen()

    def tick():
        seq = server.store.last_seq("d1")  # durable: a restarted server carries on
        if seq < n:
            server.push("d1", b"m%%d" %% (seq + 1))
            server.loop.call_later(0.002, tick)

    server.loop.call_soon(tick)
    print("ready", flush=True)
    server.run()
    """
)


@pytest.mark.slow
def test_exactly_once_across_server_kills(tmp_path):
    """SIGKILL the gateway process mid-stream (SQLite store), restart it, twice."""
    n = 300
    path = str(tmp_path / "s.db")
    # The client knows three addresses: if another process on the machine takes the
    # port of the killed gateway before it restarts, the gateway comes back on the next.
    ports = [free_port() for _ in range(3)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def spawn():
        for port in ports:
            proc = subprocess.Popen(
                [sys.executable, "-c", KILLABLE_SERVER % SECRET, str(port), path, str(n)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
            )
            if proc.stdout.readline().strip() == "ready":
                return proc
            proc.wait()
        raise AssertionError("no port left to restart the gateway on")

    got = Collector()
    proc = spawn()
    client = device([f"127.0.0.1:{port}" for port in ports], got)
    try:
        client.start()
        for kill_after in (60, 160):
            got.wait(kill_after)
            proc.kill()
            proc.wait()
            proc = spawn()
        got.wait(n, timeout=30)
        time.sleep(0.1)
        assert_exactly_once(got, n)
        assert client.stats["connects"] == 3
    finally:
        client.stop()
        proc.kill()
        proc.wait()


def test_exactly_once_across_a_drain_to_another_server(tmp_path):
    """Two gateways share one SQLite file; the first drains and redirects to the second."""
    n = 200
    path = str(tmp_path / "s.db")
    a = make_server(store=path)
    b = make_server(store=path)
    a.start()
    b.start()
    lock = threading.Lock()
    current = {"server": a}
    got = Collector()
    client = device([addr(a)], got)
    client.start()
    pusher = Pusher(lambda: current["server"], n, pace=0.002, lock=lock)
    pusher.start()
    got.wait(70)
    with lock:
        current["server"] = b  # later pushes are stored for the device and sent by b
        a.drain(redirect=[addr(b)])
    pusher.join(30)
    assert pusher.error is None
    got.wait(n)
    assert_exactly_once(got, n)
    assert client.server == b.address
    client.stop()
    b.stop()


def test_exactly_once_when_a_newer_connection_replaces_a_dead_one():
    """The device changes network: its old connection looks alive to the server but
    nothing it carries arrives any more; the new connection replaces it."""
    n = 60
    with running_server() as server:
        old = RawDevice(server.address)
        old.hello("d1")
        for i in range(1, 21):
            server.push("d1", b"m%d" % i)
        got = Collector()
        for _ in range(12):  # the device reads and shows 12 of them on the old network...
            push = old.expect(protocol.PUSH)
            got(push)
        old.send(protocol.Ack(5))  # ...and acked only 5 before the network went away
        # messages 13..20 are in flight on the dead connection: never read
        client = device([addr(server)], got, last_seq=12)
        client.start()
        frames = old.until_closed()
        assert frames[-1].TYPE == protocol.GOAWAY and frames[-1].reason == Reason.REPLACED
        for i in range(21, n + 1):
            server.push("d1", b"m%d" % i)
        got.wait(n)
        time.sleep(0.1)
        assert_exactly_once(got, n)
        client.stop()
        old.close()


def test_large_backlog_across_kills_while_fetching():
    n = 400
    with running_server(inline_max=4, page_max=16) as server:
        for i in range(1, n + 1):
            server.push("d1", b"m%d" % i)
        got = Collector()
        client = device([addr(server)], got, page_size=16)
        client.start()
        got.wait(100)
        client.kill()
        client = device([addr(server)], got, last_seq=client.last_seq, page_size=16)
        client.start()
        got.wait(n)
        assert_exactly_once(got, n)
        client.stop()


def test_expired_messages_are_not_delivered():
    with running_server() as server:
        server.push("d1", b"short-lived", ttl=0.01)  # expiry: the next whole second
        server.push("d1", b"kept", ttl=3600)
        server.push("d1", b"forever")
        # Sleep past the expiry the store holds: computing "the next whole
        # second" again here raced the push when the two straddled a second.
        expiry = server.store.range("d1", 0, 1)[0].expiry
        time.sleep(max(0.0, expiry + 0.05 - time.time()))
        got = Collector()
        client = device([addr(server)], got)
        client.start()
        got.wait(2)
        time.sleep(0.1)
        assert got.messages == [(2, b"kept"), (3, b"forever")]
        client.stop()


def test_collapse_keeps_only_the_newest():
    with running_server() as server:
        for i in range(5):
            server.push("d1", b"score %d" % i, collapse_key="match-42")
        server.push("d1", b"other")
        got = Collector()
        client = device([addr(server)], got)
        client.start()
        got.wait(2)
        time.sleep(0.1)
        assert got.messages == [(5, b"score 4"), (6, b"other")]
        client.stop()


def test_low_priority_waits_for_the_next_heartbeat():
    with running_server(heartbeat=(0, 60)) as server:
        policy = HeartbeatPolicy(floor=0.5, cap=0.5)
        pongs_at_receipt = []
        got = Collector()

        def on_message(push):
            pongs_at_receipt.append(client.conn_info()["pongs"])
            got(push)

        client = Client("d1", token("d1"), [addr(server)], on_message=on_message, heartbeat=policy)
        client.start()
        wait_for(lambda: server.connected("d1"))
        server.push("d1", b"upgrade available", priority="low")
        got.wait(1, timeout=10)
        # it went out only when the device's PING showed it awake
        assert pongs_at_receipt == [1]
        # a high priority push goes at once, with no heartbeat in between
        server.push("d1", b"now", priority="high")
        got.wait(2)
        assert pongs_at_receipt == [1, 1]
        assert got.payloads == [b"upgrade available", b"now"]
        client.stop()


def test_low_priority_rides_along_with_a_high_priority_push():
    with running_server(heartbeat=(0, 60)) as server:
        got = Collector()
        client = device([addr(server)], got)  # default heartbeat: minutes, no PING soon
        client.start()
        wait_for(lambda: server.connected("d1"))
        server.push("d1", b"low 1", priority="low")
        server.push("d1", b"low 2", priority="low")
        time.sleep(0.2)
        assert got.messages == []
        server.push("d1", b"high")
        got.wait(3)
        assert got.messages == [(1, b"low 1"), (2, b"low 2"), (3, b"high")]
        client.stop()

"""A gateway whose SQLite store cannot write: devices keep reading, pushes fail with a reason, health says so.

The outage is real, not a mock: the test opens the gateway's database file
with a second sqlite3 connection and holds ``BEGIN EXCLUSIVE`` (the store is
in WAL mode, so its reads go on), then commits to end the outage. The store
is opened with a short busy timeout, so the first write of the outage waits
50 ms for the lock, not 5 s.
"""
from __future__ import annotations

import http.client
import json
import socket
import sqlite3
import threading

import pytest

from prometheus_text import parse_exposition, sample
from pushcore import StoreUnavailable
from pushcore.admin.api import AdminAPI
from pushcore.admin.client import AdminClient, AdminError
from pushcore.codec import reference as protocol
from pushcore.device.client import Client
from pushcore.store import SQLiteStore
from serverkit import (
    Collector,
    RawDevice,
    fast_heartbeat,
    make_server,
    stop_what_the_test_started,  # noqa: F401  (autouse: stops leftovers)
    token,
    wait_for,
)

ADMIN_TOKEN = "test-admin-token-0123456789"


class WriteLock:
    """Another connection holding the database's write lock until released."""

    def __init__(self, path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, timeout=0)
        self.db.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self.db.execute("COMMIT")
        self.db.close()


def call_api(admin, method, path, body=None, token=ADMIN_TOKEN):
    conn = http.client.HTTPConnection(*admin.address, timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    out = resp.status, dict(resp.getheaders()), json.loads(resp.read())
    conn.close()
    return out


@pytest.fixture
def gateway(tmp_path):
    path = tmp_path / "store.db"
    store = SQLiteStore(path, timeout=0.05)
    server = make_server(store=store)
    server.store_probe_interval = 0.1  # the probe that heals the store without traffic
    server.start()
    admin = AdminAPI(server, ADMIN_TOKEN, port=0)
    admin.start()
    try:
        yield server, admin, path
    finally:
        admin.stop()
        server.stop(timeout=5.0)
        store.close()


def store_writable_metric(admin):
    conn = http.client.HTTPConnection(*admin.address, timeout=10)
    conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    text = conn.getresponse().read().decode()
    conn.close()
    return sample(parse_exposition(text), "pushcore_store_writable")


def pushes(device, n):
    frames = [device.expect(protocol.PUSH) for _ in range(n)]
    return [(f.seq, f.payload) for f in frames]


def still_open(device):
    """The connection answers a PING (so the server did not close it)."""
    device.send(protocol.Ping())
    return device.expect(protocol.PONG).TYPE == protocol.PONG


def test_a_device_resumes_during_an_outage_and_gets_its_backlog(gateway):
    server, _admin, path = gateway
    for i in range(1, 6):
        server.push("phone-1", b"m%d" % i)
    with RawDevice(server.address) as phone:
        assert phone.hello("phone-1").TYPE == protocol.WELCOME
        assert pushes(phone, 5) == [(i, b"m%d" % i) for i in range(1, 6)]
        phone.send(protocol.Ack(2))
        wait_for(lambda: server.store.backlog("phone-1") == 3, what="the ack of seq 2")
    with RawDevice(server.address) as other:
        assert other.hello("other").TYPE == protocol.WELCOME
        server.subscribe("other", "news")
        lock = WriteLock(path)
        try:
            with RawDevice(server.address) as phone:
                # HELLO last_seq=2 is an ack the store cannot write: it is kept, not refused.
                assert phone.hello("phone-1", last_seq=2).TYPE == protocol.WELCOME
                assert pushes(phone, 3) == [(3, b"m3"), (4, b"m4"), (5, b"m5")]
                phone.send(protocol.Ack(5))  # an ACK during the outage: kept, the connection stays
                assert still_open(phone)
                assert not server.store.health().writable
                with pytest.raises(StoreUnavailable, match="database is locked"):
                    server.push("phone-1", b"m6")
                with pytest.raises(StoreUnavailable):
                    server.push_batch([("phone-1", b"x"), ("other", b"y")])
                with pytest.raises(StoreUnavailable):
                    server.publish("news", b"z")
                with pytest.raises(StoreUnavailable):
                    server.broadcast(b"stored", durable=True)
                assert server.broadcast(b"now") == 2  # not stored: still goes out
                assert other.expect(protocol.PUSH).payload == b"now"
                assert phone.expect(protocol.PUSH).payload == b"now"
                other.send(protocol.Subscribe(("sports",)))  # a write that fails: not a reason to close
                assert still_open(other) and still_open(phone)
                wait_for(lambda: server.stats["store_unavailable"] == 1, what="the SUBSCRIBE skipped")
                assert phone.silent_for(0.2)  # nothing stored during the outage, nothing sent
                assert server.store.backlog("phone-1") == 3  # the acks wait for the store
                lock.release()
                lock = None
                # The probe heals the store without traffic and applies the kept acks.
                wait_for(lambda: server.store.health().writable, what="the store to heal")
                wait_for(lambda: server.store.backlog("phone-1") == 0, what="the kept acks applied")
                assert server.push("phone-1", b"m6") == 6
                assert pushes(phone, 1) == [(6, b"m6")]
                assert still_open(other)
        finally:
            if lock is not None:
                lock.release()


def test_health_ready_and_push_answer_503_during_an_outage_and_200_after(gateway):
    server, admin, path = gateway
    assert call_api(admin, "GET", "/healthz", token=None)[::2] == (200, {"status": "ok"})
    assert call_api(admin, "GET", "/readyz", token=None)[::2] == (200, {"status": "ready"})
    with RawDevice(server.address) as phone:
        assert phone.hello("phone-1").TYPE == protocol.WELCOME
        lock = WriteLock(path)
        try:
            status, headers, body = call_api(admin, "POST", "/v1/push", {"device": "phone-1", "payload": "hi"})
            assert status == 503
            assert "database is locked" in body["error"] and body["store"] == "unwritable"
            assert int(headers["Retry-After"]) >= 1
            status, headers, body = call_api(admin, "POST", "/v1/push/batch",
                                         {"messages": [{"device": "phone-1", "payload": "a"}]})
            assert status == 503 and body["store"] == "unwritable" and "Retry-After" in headers
            status, _headers, health = call_api(admin, "GET", "/healthz", token=None)
            assert status == 503
            assert health["status"] == "store_unwritable"
            assert health["error"] == "database is locked" and health["since"] > 0
            status, _headers, ready = call_api(admin, "GET", "/readyz", token=None)
            assert (status, ready["status"], ready["error"]) == (503, "store_unwritable", "database is locked")
            assert store_writable_metric(admin) == 0
            # AdminClient passes the gateway's own answer on (it used to say only "down").
            client = AdminClient("http://{}:{}".format(*admin.address), ADMIN_TOKEN)
            assert client.healthz()["status"] == "store_unwritable"
            assert client.readyz()["error"] == "database is locked"
            with pytest.raises(AdminError) as refused:
                client.push("phone-1", "hi")
            assert refused.value.status == 503 and refused.value.body["store"] == "unwritable"
            assert still_open(phone)
        finally:
            lock.release()
        # Healed by the probe, with no push or ack to make the first write.
        wait_for(lambda: call_api(admin, "GET", "/readyz", token=None)[0] == 200, what="/readyz 200")
        assert call_api(admin, "GET", "/healthz", token=None)[::2] == (200, {"status": "ok"})
        assert client.readyz() == {"status": "ready"}
        assert store_writable_metric(admin) == 1
        status, _headers, body = call_api(admin, "POST", "/v1/push", {"device": "phone-1", "payload": "hi"})
        assert (status, body) == (200, {"device": "phone-1", "seq": 1})
        assert pushes(phone, 1) == [(1, b"hi")]


def test_readyz_is_503_while_draining_and_once_stopped(gateway):
    server, admin, _path = gateway
    assert call_api(admin, "GET", "/readyz", token=None)[::2] == (200, {"status": "ready"})
    # A device that never reads keeps the drain waiting (its GOAWAY sits behind a full
    # socket) until the drain's deadline: the window in which /readyz says "draining".
    phone = socket.socket()
    phone.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    phone.connect(server.address)
    phone.sendall(protocol.Hello((1,), "phone-1", token("phone-1"), 0, 0).encode())
    wait_for(lambda: server.connected("phone-1"), what="the device's session")

    def queued():
        return server.call(lambda: server.loop.conn_info(server._delivery.connection_of("phone-1")))[
            "send_queue_bytes"]

    for _ in range(60):  # at most 3.6 MB: under the loop's 4 MiB cap per connection
        if queued() > 0:
            break
        server.push("phone-1", b"x" * 60_000)
    assert queued() > 0, "the kernel took everything: the drain would not wait"
    drain = threading.Thread(target=server.drain, kwargs={"timeout": 1.0})
    drain.start()
    try:
        wait_for(lambda: server.draining, what="the drain to start")
        assert call_api(admin, "GET", "/readyz", token=None)[::2] == (503, {"status": "draining"})
        # /healthz is about health, not traffic: a draining gateway is still healthy.
        assert call_api(admin, "GET", "/healthz", token=None)[::2] == (200, {"status": "ok"})
    finally:
        drain.join(10.0)
        phone.close()
    assert call_api(admin, "GET", "/readyz", token=None)[::2] == (503, {"status": "down"})


def test_a_counter_advance_kept_during_an_outage_comes_before_the_next_seq(gateway):
    """A device claims last_seq 7 to a store that lost its counter, while the store cannot write.

    The raise of the counter is kept, not refused; the first push after the
    outage must get seq 8, not 1 (which the device would drop as already seen).
    """
    server, _admin, path = gateway
    lock = WriteLock(path)
    try:
        with RawDevice(server.address) as phone:
            assert phone.hello("phone-1", last_seq=7).TYPE == protocol.WELCOME
            assert still_open(phone)
            lock.release()
            lock = None
            assert server.push("phone-1", b"after") == 8  # made at once, before the probe's tick
            assert pushes(phone, 1) == [(8, b"after")]
    finally:
        if lock is not None:
            lock.release()


def test_a_client_resumes_during_an_outage_exactly_once(gateway):
    """A real Client: its backlog during the outage, nothing twice, its acks written after."""
    server, _admin, path = gateway
    got = Collector()
    host, port = server.address

    def client(last_seq):
        return Client("phone-1", token("phone-1"), [f"{host}:{port}"], heartbeat=fast_heartbeat(),
                      on_message=got, ack_delay=0.01, last_seq=last_seq, backoff=(0.02, 0.2))

    first = client(0)
    first.start(timeout=10)
    for i in range(1, 4):
        server.push("phone-1", b"m%d" % i)
    got.wait(3)
    wait_for(lambda: server.store.backlog("phone-1") == 0, what="the acks of m1..m3")
    last = first.inbox.last_seq
    first.stop()
    wait_for(lambda: not server.connected("phone-1"), what="the first session to end")
    for i in range(4, 7):
        server.push("phone-1", b"m%d" % i)
    lock = WriteLock(path)
    try:
        second = client(last)
        second.start(timeout=10)
        got.wait(6)
        wait_for(lambda: second.inbox.last_seq == 6, what="the client to have m6")
        assert server.store.backlog("phone-1") == 3  # its acks wait for the store
    finally:
        lock.release()
    wait_for(lambda: server.store.backlog("phone-1") == 0, what="the kept acks written")
    assert got.seqs == [1, 2, 3, 4, 5, 6]
    assert got.payloads == [b"m%d" % i for i in range(1, 7)]
    second.stop()


def test_an_idle_gateway_sees_an_outage_without_a_push(tmp_path):
    """No push, no ack: the watcher's check finds the lock, /healthz and /readyz say so, then heal."""
    path = tmp_path / "store.db"
    store = SQLiteStore(path, timeout=0.05)
    server = make_server(store=store)
    server.store_probe_interval = 0.1
    server.store_watch_interval = 0.1
    server.start()
    admin = AdminAPI(server, ADMIN_TOKEN, port=0)
    admin.start()
    try:
        assert call_api(admin, "GET", "/readyz", token=None)[::2] == (200, {"status": "ready"})
        lock = WriteLock(path)
        try:
            wait_for(lambda: call_api(admin, "GET", "/healthz", token=None)[0] == 503, what="/healthz 503")
            status, _headers, ready = call_api(admin, "GET", "/readyz", token=None)
            assert (status, ready["status"]) == (503, "store_unwritable")
            assert "locked" in ready["error"]
        finally:
            lock.release()
        wait_for(lambda: call_api(admin, "GET", "/readyz", token=None)[0] == 200, what="/readyz 200 again")
        assert store.health().writable
    finally:
        admin.stop()
        server.stop(timeout=5.0)
        store.close()


def test_a_retry_of_a_stored_push_gets_its_seq_during_an_outage_and_a_new_one_503(gateway):
    server, admin, path = gateway

    def push(payload, key="order-17"):
        conn = http.client.HTTPConnection(*admin.address, timeout=10)
        conn.request("POST", "/v1/push", body=json.dumps({"device": "phone-1", "payload": payload}).encode(),
                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Idempotency-Key": key})
        resp = conn.getresponse()
        out = resp.status, json.loads(resp.read())
        conn.close()
        return out

    assert push("shipped") == (200, {"device": "phone-1", "seq": 1})
    lock = WriteLock(path)
    try:
        # the retry needs no write: the original seq, from a read
        assert push("shipped") == (200, {"device": "phone-1", "seq": 1})
        status, body = push("cancelled")  # the same key for another message: a conflict, not an outage
        assert status == 409 and body["idempotency_key"] == "order-17"
        status, body = push("new", key="order-18")  # a new message needs the write: 503
        assert status == 503 and body["store"] == "unwritable"
    finally:
        lock.release()
    assert push("new", key="order-18") == (200, {"device": "phone-1", "seq": 2})

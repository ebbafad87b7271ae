"""Idempotency keys in the admin API, and AdminClient retries through a proxy that loses replies."""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import time

import pytest

from dropproxy import DropProxy
from pushcore.admin.api import AdminAPI
from pushcore.admin.client import AdminClient, AdminError
from pushcore.sim.traffic import AdminSink, Pusher, parse_payload
from serverkit import make_server, wait_for

ADMIN_TOKEN = "test-admin-token-0123456789"


def post(address, path, body, headers=None):
    conn = http.client.HTTPConnection(*address, timeout=10)
    all_headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json",
                   **(headers or {})}
    conn.request("POST", path, body=json.dumps(body).encode(), headers=all_headers)
    resp = conn.getresponse()
    data = json.loads(resp.read())
    conn.close()
    return resp.status, data


@contextlib.contextmanager
def serving(store):
    server = make_server(store=store)
    server.start()
    admin = AdminAPI(server, ADMIN_TOKEN, port=0)
    admin.start()
    try:
        yield server, admin
    finally:
        admin.stop()
        server.stop(timeout=5.0)


@pytest.fixture(params=["memory", "sqlite"])
def gateway(request, tmp_path):
    with serving("memory:" if request.param == "memory" else str(tmp_path / "gw.db")) as both:
        yield both


@pytest.fixture
def sqlite_gateway(tmp_path):
    with serving(str(tmp_path / "gw.db")) as both:
        yield both


def stored(server, device):
    return [bytes(m.payload) for m in server.store.range(device, limit=10_000)]


def test_push_with_a_header_key_replays(gateway):
    server, admin = gateway
    key = {"Idempotency-Key": "push-1"}
    assert post(admin.address, "/v1/push", {"device": "d", "payload": "hi"}, key) == (200, {"device": "d", "seq": 1})
    assert post(admin.address, "/v1/push", {"device": "d", "payload": "hi", "ttl": 5}, key) == (
        200, {"device": "d", "seq": 1})
    assert stored(server, "d") == [b"hi"]
    status, body = post(admin.address, "/v1/push", {"device": "d", "payload": "changed"}, key)
    assert status == 409 and "push-1" in body["error"] and body["idempotency_key"] == "push-1"
    status, body = post(admin.address, "/v1/push", {"device": "other", "payload": "hi"}, key)
    assert status == 409
    # the same key in the body works as the header does
    assert post(admin.address, "/v1/push", {"device": "d", "payload": "hi", "idempotency_key": "push-1"})[1][
        "seq"] == 1
    status, body = post(admin.address, "/v1/push", {"device": "d", "payload": "hi", "idempotency_key": "x"}, key)
    assert status == 400 and "Idempotency-Key" in body["error"]
    status, body = post(admin.address, "/v1/publish", {"topic": "news", "payload": "x"}, key)
    assert status == 400 and "honoured only by" in body["error"]
    assert stored(server, "d") == [b"hi"]


@pytest.mark.parametrize("value, status", [("k" * 257, 413), ("two words", 400), ("é", 400)])
def test_bad_keys_are_refused(gateway, value, status):
    server, admin = gateway
    got, body = post(admin.address, "/v1/push", {"device": "d", "payload": "x", "idempotency_key": value})
    assert got == status and "idempotency_key" in body["error"]
    if status == 413:
        assert body["limit"] == 256 and body["field"] == "idempotency_key"
    assert server.store.last_seq("d") == 0


def test_batch_keys_per_item_and_from_the_header(gateway):
    server, admin = gateway
    messages = [{"device": "a", "payload": "a1", "idempotency_key": "own"},
                {"device": "b", "payload": "b1"}, {"device": "a", "payload": "a2"}]
    header = {"Idempotency-Key": "batch-7"}
    assert post(admin.address, "/v1/push/batch", {"messages": messages}, header) == (200, {"seqs": [1, 1, 2]})
    assert post(admin.address, "/v1/push/batch", {"messages": messages}, header) == (200, {"seqs": [1, 1, 2]})
    assert stored(server, "a") == [b"a1", b"a2"] and stored(server, "b") == [b"b1"]
    # without the header the items without their own key are new messages
    assert post(admin.address, "/v1/push/batch", {"messages": messages})[1] == {"seqs": [1, 2, 3]}
    # the header's key of item i is "<key>:<i>"
    assert post(admin.address, "/v1/push", {"device": "b", "payload": "b1"}, {"Idempotency-Key": "batch-7:1"})[1][
        "seq"] == 1
    status, body = post(admin.address, "/v1/push/batch",
                        {"messages": [{"device": "a", "payload": "a1"}, {"device": "a", "payload": "zz"}]}, header)
    assert status == 409 and body["index"] == 1 and body["idempotency_key"] == "batch-7:1"
    assert "messages[1]" in body["error"]
    status, body = post(admin.address, "/v1/push/batch", {"messages": messages}, {"Idempotency-Key": "k" * 252})
    assert status == 413 and "251" in body["error"]
    assert stored(server, "a") == [b"a1", b"a2", b"a2"]


@pytest.mark.parametrize("bad", ["", "a b", "caf\u00e9"])
def test_a_bad_batch_header_key_is_the_headers_fault_and_nothing_is_stored(gateway, bad):
    server, admin = gateway
    conn = http.client.HTTPConnection(*admin.address, timeout=10)
    body = json.dumps({"messages": [{"device": "a", "payload": "x"}]}).encode()
    conn.putrequest("POST", "/v1/push/batch")
    for name, value in (("Authorization", f"Bearer {ADMIN_TOKEN}"), ("Content-Type", "application/json"),
                        ("Content-Length", str(len(body)))):
        conn.putheader(name, value)
    conn.putheader("Idempotency-Key", bad.encode("utf-8"))  # sent as written, even empty
    conn.endheaders(body)
    resp = conn.getresponse()
    status, answer = resp.status, json.loads(resp.read())
    conn.close()
    assert status == 400 and answer["error"].startswith("the Idempotency-Key header"), answer
    assert "index" not in answer and "messages[0]" not in answer["error"]
    assert stored(server, "a") == []


def test_admin_client_retries_a_lost_reply_with_its_key(gateway):
    server, admin = gateway
    with DropProxy(admin.address) as proxy, AdminClient(proxy.url, ADMIN_TOKEN, timeout=10) as client:
        proxy.drop_replies = 1
        assert client.push("d", "exactly once") == 1  # the caller sees success
        assert proxy.dropped == 1
        assert stored(server, "d") == [b"exactly once"]
        keys = proxy.headers_of("Idempotency-Key")
        assert len(keys) == 2 and keys[0] == keys[1] and keys[0]
        proxy.drop_replies = 1
        assert client.push_batch([{"device": "d", "payload": "b0"}, {"device": "e", "payload": "b1"}]) == [2, 1]
        assert stored(server, "d") == [b"exactly once", b"b0"] and stored(server, "e") == [b"b1"]
        keys = proxy.headers_of("Idempotency-Key")[2:]
        assert len(keys) == 2 and keys[0] == keys[1] and keys[0] != proxy.headers_of("Idempotency-Key")[0]
        # every call has a key of its own
        assert client.push("d", "exactly once") == 3


def test_a_502_from_a_proxy_that_passed_the_push_on_is_retried_with_its_key(gateway):
    server, admin = gateway
    with DropProxy(admin.address) as proxy, AdminClient(proxy.url, ADMIN_TOKEN, timeout=10) as client:
        proxy.bad_gateway = 1  # the gateway stored it; the caller sees 502
        assert client.push("d", "once behind a proxy") == 1
        assert stored(server, "d") == [b"once behind a proxy"]
        keys = proxy.headers_of("Idempotency-Key")
        assert len(keys) == 2 and keys[0] == keys[1]
        proxy.bad_gateway = 5  # more than the retries: the error names the key to retry with
        with pytest.raises(AdminError, match="HTTP 502") as info:
            client.push("d", "second")
        assert info.value.status == 502 and info.value.idempotency_key == proxy.headers_of("Idempotency-Key")[-1]
        assert client.push("d", "second", idempotency_key=info.value.idempotency_key) == 2
        assert stored(server, "d") == [b"once behind a proxy", b"second"]


def test_admin_client_without_keys_never_retries_a_post(gateway):
    server, admin = gateway
    with DropProxy(admin.address) as proxy, \
            AdminClient(proxy.url, ADMIN_TOKEN, timeout=10, idempotency_keys=False) as client:
        proxy.drop_replies = 1
        with pytest.raises(AdminError, match="closed the connection") as info:
            client.push("d", "maybe")
        assert info.value.status == 0 and info.value.idempotency_key is None
        assert "may have been carried out" in str(info.value)
        assert len(proxy.requests) == 1 and proxy.headers_of("Idempotency-Key") == [None]
        assert stored(server, "d") == [b"maybe"]  # it was stored; the client says it cannot know
        proxy.drop_replies = 1
        assert client.devices()["connected"] == 0  # a GET is retried
        assert len(proxy.requests) == 3


def test_admin_client_waits_out_a_short_outage_with_its_key(gateway):
    server, admin = gateway
    with DropProxy(admin.address) as proxy, AdminClient(proxy.url, ADMIN_TOKEN, timeout=10) as client:
        proxy.drop_replies, proxy.refuse = 1, 1  # the reply is lost, then the "gateway" is down once
        assert client.push("d", "once") == 1
        assert proxy.refused == 1
        assert stored(server, "d") == [b"once"]


def test_admin_client_says_which_key_makes_a_retry_safe(gateway):
    server, admin = gateway
    with DropProxy(admin.address) as proxy, AdminClient(proxy.url, ADMIN_TOKEN, timeout=10) as client:
        proxy.drop_replies, proxy.refuse = 1, 2  # cut off, then down for longer than the client retries
        with pytest.raises(AdminError, match="may have been carried out") as info:
            client.push("d", "lost?", idempotency_key="mine-1")
        assert info.value.status == 0 and info.value.idempotency_key == "mine-1"
        assert stored(server, "d") == [b"lost?"]
        assert client.push("d", "lost?", idempotency_key="mine-1") == 1  # the caller's retry: stored once
        assert stored(server, "d") == [b"lost?"]
    with AdminClient("http://127.0.0.1:9", ADMIN_TOKEN) as client:  # nothing listens: nothing was sent
        with pytest.raises(AdminError, match="nothing listens there") as info:
            client.push("d", "x")
        assert info.value.idempotency_key is None


def test_the_simulator_pusher_never_duplicates_through_lost_replies(sqlite_gateway):
    server, admin = sqlite_gateway
    with DropProxy(admin.address) as proxy, AdminClient(proxy.url, ADMIN_TOKEN, timeout=10) as client:
        pusher = Pusher(AdminSink(client, "sim-", 77), devices=4, rate=400, tick=0.02, seed=1)
        pusher.start()
        try:
            wait_for(lambda: pusher.total > 20, what="some pushes")
            proxy.drop_replies = 1
            wait_for(lambda: proxy.dropped == 1, what="a lost reply")
            # a lost reply, then an outage longer than the client's own retries
            proxy.drop_replies, proxy.refuse = 1, 3 * 3  # three tries of the pusher, each sent 3 times
            wait_for(lambda: proxy.dropped == 2 and proxy.refused == 9, what="an outage")
            done = pusher.total
            wait_for(lambda: pusher.total > done + 20, what="pushes after the outage")
        finally:
            pusher.stop()
        assert pusher.errors > 0  # the outage was seen
        for index in range(4):
            counters = [parse_payload(p)[2] for p in stored(server, f"sim-{index}")]
            assert counters == list(range(1, pusher.sent[index] + 1)), f"device {index}"


@pytest.mark.slow
def test_pushcore_push_command_survives_a_lost_reply(sqlite_gateway, tmp_path):
    server, admin = sqlite_gateway
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHCORE_")}
    with DropProxy(admin.address) as proxy:
        proxy.drop_replies = 1
        done = subprocess.run(
            [sys.executable, "-m", "pushcore", "push", "--device", "d", "hello", "--admin", proxy.url,
             "--admin-token", ADMIN_TOKEN], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "stored for d as seq 1\n"
    assert proxy.dropped == 1 and len(proxy.requests) == 2
    assert stored(server, "d") == [b"hello"]
    # a key of the caller's: running the command again stores nothing new
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "pushcore", "push", "--device", "d", "again", "--idempotency-key", "job-5",
             "--admin", admin.url, "--admin-token", ADMIN_TOKEN], capture_output=True, text=True, cwd=tmp_path,
            env=env, timeout=60)
        assert (done.returncode, done.stdout) == (0, "stored for d as seq 2\n"), done.stderr
    assert stored(server, "d") == [b"hello", b"again"]


def test_the_window_is_stated_by_the_store(gateway):
    server, _admin = gateway
    assert server.store.idempotency_window == 86400
    start = time.time()
    server.push("w", b"x", idempotency_key="window")
    assert server.store.purge_expired(start + 86400 + 1) >= 1
    assert server.push("w", b"y", idempotency_key="window") == 2

"""The admin HTTP API over real loopback sockets: auth, push paths, presence, metrics, errors."""
from __future__ import annotations

import base64
import http.client
import json
import socket

import pytest

from prometheus_text import parse_exposition, sample
from pushcore.admin.api import AdminAPI
from pushcore.device.client import Client
from pushcore.errors import Reason
from serverkit import Collector, RawDevice, fast_heartbeat, make_server, token, wait_for

ADMIN_TOKEN = "test-admin-token-0123456789"


class Api:
    """A tiny HTTP client for the API under test (one connection per request)."""

    def __init__(self, address):
        self.address = address

    def request(self, method, path, body=None, token=ADMIN_TOKEN, raw=None, headers=None):
        conn = http.client.HTTPConnection(*self.address, timeout=10)
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            all_headers.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=all_headers)
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        ctype = resp.getheader("Content-Type", "")
        parsed = json.loads(payload) if ctype.startswith("application/json") else payload.decode()
        return resp.status, resp, parsed

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def metrics(self):
        status, resp, text = self.get("/metrics")
        assert status == 200, text
        assert resp.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
        return parse_exposition(text)


@pytest.fixture
def gateway():
    server = make_server()
    server.start()
    admin = AdminAPI(server, ADMIN_TOKEN, port=0)
    admin.start()
    try:
        yield server, Api(admin.address)
    finally:
        admin.stop()
        server.stop(timeout=5.0)


@pytest.fixture
def device(gateway):
    server, _api = gateway
    collector = Collector()
    host, port = server.address
    client = Client("phone-1", token("phone-1"), [f"{host}:{port}"], heartbeat=fast_heartbeat(),
                    on_message=collector, ack_delay=0.01)
    client.start(timeout=10)
    try:
        yield client, collector
    finally:
        client.stop()


# ---- authentication ---------------------------------------------------------------------------

PROTECTED = [("GET", "/metrics"), ("POST", "/v1/push"), ("GET", "/v1/devices"),
             ("GET", "/v1/devices/phone-1"), ("POST", "/v1/broadcast")]


@pytest.mark.parametrize("method,path", PROTECTED)
def test_missing_token_is_401(gateway, method, path):
    server, api = gateway
    status, resp, body = api.request(method, path, {"device": "d", "payload": "x"}, token=None)
    assert status == 401
    assert resp.getheader("WWW-Authenticate", "").startswith("Bearer")
    assert "Bearer" in body["error"]
    assert server.store.last_seq("d") == 0  # nothing was pushed


@pytest.mark.parametrize("method,path", PROTECTED)
def test_wrong_token_is_403(gateway, method, path):
    server, api = gateway
    status, _resp, body = api.request(method, path, {"device": "d", "payload": "x"},
                                      token=ADMIN_TOKEN + "x")
    assert status == 403
    assert body == {"error": "wrong admin token"}
    assert server.store.last_seq("d") == 0


def test_other_auth_schemes_are_401(gateway):
    _server, api = gateway
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Token " + ADMIN_TOKEN):
        status, _resp, _body = api.request("GET", "/v1/devices", token=None,
                                           headers={"Authorization": header})
        assert status == 401, header


def test_healthz_needs_no_token_and_reports_down_after_stop():
    server = make_server()
    server.start()
    admin = AdminAPI(server, ADMIN_TOKEN, port=0)
    admin.start()
    try:
        api = Api(admin.address)
        assert api.get("/healthz", token=None)[::2] == (200, {"status": "ok"})
        server.stop(timeout=5.0)
        assert api.get("/healthz", token=None)[::2] == (503, {"status": "down"})
        # a push to a stopped gateway is 503, not a crash
        status, _resp, body = api.post("/v1/push", {"device": "d", "payload": "x"})
        assert status == 503 and "not running" in body["error"]
    finally:
        admin.stop()


def test_short_admin_token_is_refused():
    server = make_server()
    with pytest.raises(ValueError, match="at least 16"):
        AdminAPI(server, "short", port=0)
    server.store.close()


def test_busy_port_raises_oserror(gateway):
    server, api = gateway
    other = AdminAPI(server, ADMIN_TOKEN, port=api.address[1])
    with pytest.raises(OSError):
        other.start()


# ---- pushing ----------------------------------------------------------------------------------


def test_push_reaches_a_connected_device_and_presence_shows_it(gateway, device):
    server, api = gateway
    client, collector = device
    status, _resp, body = api.post("/v1/push", {"device": "phone-1", "payload": "héllo"})
    assert (status, body) == (200, {"device": "phone-1", "seq": 1})
    b64 = base64.b64encode(b"\x00\xff").decode()
    status, _resp, body = api.post("/v1/push", {"device": "phone-1", "payload_b64": b64,
                                                "priority": "high", "ttl": 60, "collapse_key": "k"})
    assert (status, body["seq"]) == (200, 2)
    collector.wait(2)
    assert collector.messages == [(1, "héllo".encode()), (2, b"\x00\xff")]
    wait_for(lambda: api.get("/v1/devices/phone-1")[2]["backlog"] == 0, what="the ack")
    status, _resp, info = api.get("/v1/devices/phone-1")
    assert status == 200
    assert info == {"device": "phone-1", "connected": True, "backlog": 0, "last_seq": 2, "topics": []}
    status, _resp, listing = api.get("/v1/devices?list=1")
    assert listing == {"connected": 1, "devices": ["phone-1"], "truncated": False}


def test_push_to_an_offline_device_waits_in_the_backlog(gateway):
    _server, api = gateway
    for i in range(3):
        assert api.post("/v1/push", {"device": "sleeper", "payload": f"m{i}"})[2]["seq"] == i + 1
    info = api.get("/v1/devices/sleeper")[2]
    assert info["connected"] is False and info["backlog"] == 3 and info["last_seq"] == 3


def test_batch_push_is_in_order_per_device(gateway, device):
    _server, api = gateway
    _client, collector = device
    messages = [{"device": "phone-1" if i % 2 == 0 else "other", "payload": f"m{i}"} for i in range(100)]
    status, _resp, body = api.post("/v1/push/batch", {"messages": messages})
    assert status == 200
    assert body["seqs"] == [i // 2 + 1 for i in range(100)]
    collector.wait(50)
    assert collector.payloads == [f"m{i}".encode() for i in range(0, 100, 2)]
    assert api.get("/v1/devices/other")[2]["backlog"] == 50


def test_batch_push_checks_every_message_before_sending_any(gateway):
    server, api = gateway
    messages = [{"device": "a", "payload": "ok"}, {"device": "a", "payload": 5}]
    status, _resp, body = api.post("/v1/push/batch", {"messages": messages})
    assert status == 400 and "payload" in body["error"]
    assert server.store.last_seq("a") == 0


def test_subscribe_publish_and_broadcast(gateway, device):
    _server, api = gateway
    client, collector = device
    status, _resp, body = api.post("/v1/devices/phone-1/subscribe", {"topics": ["news", "sport"]})
    assert (status, body) == (200, {"added": 2})
    api.post("/v1/devices/offline-1/subscribe", {"topics": ["news"]})
    status, _resp, body = api.post("/v1/publish", {"topic": "news", "payload": "headline"})
    assert (status, body) == (200, {"topic": "news", "devices": 2})
    status, _resp, body = api.post("/v1/broadcast", {"payload": "to all"})
    assert (status, body) == (200, {"devices": 1, "durable": False})
    collector.wait(2)
    assert collector.messages == [(1, b"headline"), (0, b"to all")]
    assert api.get("/v1/devices/phone-1")[2]["topics"] == ["news", "sport"]
    assert api.post("/v1/devices/phone-1/unsubscribe", {"topics": ["sport"]})[2] == {"removed": 1}
    assert api.get("/v1/devices/offline-1")[2]["backlog"] == 1


def test_disconnect_closes_the_device(gateway, device):
    server, api = gateway
    status, _resp, body = api.post("/v1/devices/phone-1/disconnect", {})
    assert (status, body) == (200, {"disconnected": True})
    assert api.post("/v1/devices/nobody/disconnect", {})[2] == {"disconnected": False}


@pytest.mark.parametrize("method,path,raw,status,fragment", [
    ("POST", "/v1/push", b"{not json", 400, "not valid JSON"),
    ("POST", "/v1/push", b"[1, 2]", 400, "JSON object"),
    ("POST", "/v1/push", b'{"device": "d"}', 400, "payload"),
    ("POST", "/v1/push", b'{"payload": "x"}', 400, "'device' is required"),
    ("POST", "/v1/push", b'{"device": "", "payload": "x"}', 400, "must not be empty"),
    ("POST", "/v1/push", b'{"device": "d", "payload": "x", "colour": 1}', 400, "unknown field"),
    ("POST", "/v1/push", b'{"device": "d", "payload": "x", "priority": "urgent"}', 400, "priority"),
    ("POST", "/v1/push", b'{"device": "d", "payload": "x", "ttl": -1}', 400, "ttl"),
    ("POST", "/v1/push", b'{"device": "d", "payload_b64": "***"}', 400, "base64"),
    ("POST", "/v1/push", b'{"device": "d", "payload": "x", "payload_b64": "eA=="}', 400, "not both"),
    ("POST", "/v1/push/batch", b'{"messages": []}', 400, "non-empty"),
    ("POST", "/v1/publish", b'{"payload": "x"}', 400, "'topic' is required"),
    ("POST", "/v1/broadcast", b'{"payload": "x", "durable": "yes"}', 400, "durable"),
    ("POST", "/v1/devices/d/subscribe", b'{"topics": [""]}', 400, "topics"),
    ("GET", "/v1/push", None, 405, "POST"),
    ("POST", "/v1/devices", b"{}", 405, "GET"),
    ("GET", "/v1/nothing", None, 404, "no such endpoint"),
    ("GET", "/admin", None, 404, "no such endpoint"),
    ("GET", "/v1/devices?list=1&limit=x", None, 400, "limit"),
])
def test_bad_requests_get_clear_errors(gateway, method, path, raw, status, fragment):
    server, api = gateway
    got, _resp, body = api.request(method, path, raw=raw)
    assert got == status, body
    assert fragment in body["error"]
    assert server.store.last_seq("d") == 0


def test_post_without_length_is_411_and_huge_body_is_413(gateway):
    _server, api = gateway
    with socket.create_connection(api.address, timeout=10) as sock:
        sock.sendall(b"POST /v1/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + ADMIN_TOKEN.encode() + b"\r\nContent-Length: 999999999\r\n\r\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")
    with socket.create_connection(api.address, timeout=10) as sock:
        sock.sendall(b"POST /v1/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + ADMIN_TOKEN.encode() + b"\r\n\r\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 411")


# ---- metrics ----------------------------------------------------------------------------------


def test_metrics_parse_and_move_with_traffic(gateway, device):
    server, api = gateway
    client, collector = device
    before = api.metrics()
    assert sample(before, "pushcore_up") == 1
    assert sample(before, "pushcore_devices_connected") == 1
    assert sample(before, "pushcore_welcomes_total") == 1

    n = 40
    api.post("/v1/push/batch", {"messages": [{"device": "phone-1", "payload": f"m{i}"} for i in range(n)]})
    collector.wait(n)
    wait_for(lambda: api.get("/v1/devices/phone-1")[2]["backlog"] == 0, what="the acks")
    # a refused device and a garbage connection, for the error counters
    with RawDevice(server.address) as raw:
        assert raw.hello("intruder", tok=b"forged").code == Reason.AUTH_FAILED
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"\x00\x00")  # type 0: UNKNOWN_TYPE
        sock.recv(100)

    def moved():
        after = api.metrics()
        return after if sample(after, "pushcore_errors_total", reason="UNKNOWN_TYPE") >= 1 else None

    wait_for(lambda: moved() is not None, what="the error counters")
    after = moved()
    grew = lambda name, **lb: sample(after, name, **lb) - sample(before, name, **lb)  # noqa: E731
    assert grew("pushcore_frames_sent_total") >= n
    assert grew("pushcore_bytes_sent_total") >= n * 3
    assert grew("pushcore_frames_received_total") >= 1  # ACKs
    assert grew("pushcore_bytes_received_total") > 0
    assert grew("pushcore_admin_pushes_total", kind="device") == n
    assert grew("pushcore_messages_stored_total") == n
    assert grew("pushcore_messages_acked_total") == n
    assert grew("pushcore_push_ack_seconds_count") == n
    assert sample(after, "pushcore_push_ack_seconds_sum") > 0
    assert sample(after, "pushcore_auth_failures_total", reason="AUTH_FAILED") == 1
    assert sample(after, "pushcore_errors_total", reason="AUTH_FAILED") == 1
    assert sample(after, "pushcore_connections_closed_total", reason="AUTH_FAILED") == 1
    assert sample(after, "pushcore_protocol_errors_total", reason="UNKNOWN_TYPE") == 1
    assert grew("pushcore_connections_accepted_total") == 2
    assert sample(after, "pushcore_store_messages") == 0
    assert sample(after, "pushcore_admin_requests_total", route="/v1/push/batch", code="200") == 1
    assert sample(after, "pushcore_admin_requests_total", route="/metrics", code="200") >= 2
    assert sample(after, "process_resident_memory_bytes") > 1_000_000
    for gauge in ("pushcore_send_queue_bytes", "pushcore_receive_queue_bytes"):
        assert sample(after, gauge) >= 0


def test_unauthorised_requests_are_counted_under_a_fixed_label(gateway):
    _server, api = gateway
    for path in ("/v1/x1", "/v1/x2", "/whatever"):
        api.get(path, token=None)
    fams = api.metrics()
    assert sample(fams, "pushcore_admin_requests_total", route="other", code="401") == 3
    routes = {labels["route"] for _n, labels, _v in fams["pushcore_admin_requests_total"]["samples"]}
    assert routes <= {"other", "/metrics"}

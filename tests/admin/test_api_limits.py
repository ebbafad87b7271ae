"""The admin API under abuse (issue 9, finding 4), on real loopback sockets.

Authentication from the headers before any body byte is read; a body cap;
whole-request deadlines for headers and body; bounded connections with no
thread per connection; every malformed body a 400 with a JSON reason;
size-limit errors from the gateway as 413.
"""
from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time

import pytest

from pushcore.admin.api import AdminAPI
from serverkit import make_server, wait_for

ADMIN_TOKEN = "test-admin-token-0123456789"
AUTH = b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n"


@pytest.fixture
def start_api():
    """``start_api(**options)`` -> (server, admin) on a running gateway; all stopped after the test."""
    started = []

    def start(**options):
        server = make_server()
        server.start()
        admin = AdminAPI(server, ADMIN_TOKEN, port=0, **options)
        started.append((server, admin))
        admin.start()
        return server, admin

    yield start
    for server, admin in started:
        admin.stop()
        server.stop(timeout=5.0)


def read_response(sock):
    """(status, lower-cased headers, decoded JSON body or None) of one response on *sock*."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"the connection closed before a response: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    body = json.loads(rest[:length]) if length and headers.get("content-type", "").startswith("application/json") \
        else rest[:length]
    return status, headers, body


def closed_by_server(sock) -> bool:
    """True when the server has closed *sock* (EOF or reset), within the socket's timeout."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def healthz(admin):
    conn = http.client.HTTPConnection(*admin.address, timeout=5)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def post(admin, path, raw: bytes):
    conn = http.client.HTTPConnection(*admin.address, timeout=5)
    try:
        conn.request("POST", path, body=raw, headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                                       "Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


# ---- authentication before the body ---------------------------------------------------------------

@pytest.mark.parametrize("auth,status", [(b"", 401), (b"Authorization: Bearer wrong-token-0123456789\r\n", 403)])
def test_unauthenticated_8mb_post_is_refused_from_the_headers_alone(start_api, auth, status):
    server, admin = start_api()
    with socket.create_connection(admin.address, timeout=5) as sock:
        # 8 MB declared, not one byte sent: an answer proves the body was never waited for.
        sock.sendall(b"POST /v1/push HTTP/1.1\r\nHost: x\r\n" + auth
                     + b"Content-Type: application/json\r\nContent-Length: 8000000\r\n\r\n")
        got, headers, body = read_response(sock)
        assert got == status
        assert "token" in body["error"]
        assert headers.get("connection") == "close"
        assert closed_by_server(sock)  # the unread body is never drained either
    assert server.store.last_seq("d") == 0


def test_expect_100_continue_is_sent_only_after_the_token_is_checked(start_api):
    _server, admin = start_api()
    body = json.dumps({"device": "d", "payload": "x"}).encode()
    head = (b"POST /v1/push HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n")
    with socket.create_connection(admin.address, timeout=5) as sock:
        sock.sendall(head + b"\r\n")
        assert read_response(sock)[0] == 401  # no 100 Continue for a request without the token
    with socket.create_connection(admin.address, timeout=5) as sock:
        sock.sendall(head + AUTH + b"\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        status, _headers, reply = read_response(sock)
        assert (status, reply) == (200, {"device": "d", "seq": 1})


# ---- body size ---------------------------------------------------------------------------------

def test_body_over_max_body_is_413_with_the_limit_and_unread(start_api):
    server, admin = start_api(max_body=1000)
    with socket.create_connection(admin.address, timeout=5) as sock:
        sock.sendall(b"POST /v1/push HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Length: 1001\r\n\r\n")
        status, _headers, body = read_response(sock)
        assert status == 413
        assert "1001" in body["error"] and "max_body" in body["error"] and body["limit"] == 1000
        assert closed_by_server(sock)
    payload = "x" * (1000 - len(json.dumps({"device": "d", "payload": ""})))
    raw = json.dumps({"device": "d", "payload": payload}).encode()
    assert len(raw) == 1000
    assert post(admin, "/v1/push", raw) == (200, {"device": "d", "seq": 1})
    assert server.store.last_seq("d") == 1


def test_the_default_max_body_is_one_mib():
    server = make_server()
    try:
        assert AdminAPI(server, ADMIN_TOKEN, port=0).max_body == 1024 * 1024
    finally:
        server.store.close()


@pytest.mark.parametrize("option,value", [("max_body", 0), ("max_connections", -1), ("workers", 0),
                                          ("header_timeout", 0), ("body_timeout", float("inf"))])
def test_bad_limit_options_are_refused(option, value):
    server = make_server()
    try:
        with pytest.raises(ValueError, match=option):
            AdminAPI(server, ADMIN_TOKEN, port=0, **{option: value})
    finally:
        server.store.close()


# ---- whole-request deadlines -------------------------------------------------------------------

def drip_until_closed(sock, data: bytes, *, interval: float = 0.05, budget: float = 5.0) -> bool:
    """Send *data* a byte at a time; True when the server answered or closed before the drip ended.

    *budget* is ten times the deadline under test: a per-read timeout would
    let the drip go on for ever, a whole-request deadline stops it.
    """
    end = time.monotonic() + budget
    for byte in data:
        if time.monotonic() > end:
            return False
        readable, _, _ = select.select([sock], [], [], interval)
        if readable:
            return True
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return True
    return False


def response_after_drip(sock):
    """The response that ended a drip; None in the rare case the server closed between the
    drip's last look and its last byte, whose reset takes the response with it."""
    try:
        return read_response(sock)
    except ConnectionResetError:
        return None


def test_a_header_drip_is_cut_at_the_header_deadline(start_api):
    _server, admin = start_api(header_timeout=0.5)
    with socket.create_connection(admin.address, timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert drip_until_closed(sock, b"X-Slow: " + b"a" * 1000 + b"\r\n\r\n")
        response = response_after_drip(sock)
        if response is not None:
            status, headers, body = response
            assert status == 408 and "header_timeout" in body["error"]
            assert headers["connection"] == "close"
            assert closed_by_server(sock)
    assert healthz(admin) == (200, {"status": "ok"})
    wait_for(lambda: admin.connections == 0, what="the dripping connection's end")


def test_a_silent_connection_and_an_idle_keepalive_are_closed_at_the_header_deadline(start_api):
    _server, admin = start_api(header_timeout=0.5)
    with socket.create_connection(admin.address, timeout=5) as sock:
        assert closed_by_server(sock)  # never sent a byte: closed, no 408 for a request never made
    with socket.create_connection(admin.address, timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 200
        # The deadline restarts after each response; an idle keep-alive is closed without
        # an unsolicited 408 that a client's next request would read as its answer.
        assert closed_by_server(sock)
    assert 'pushcore_admin_connections_refused_total{reason="header_timeout"} 2' in admin.metrics.registry.render()


def test_a_keepalive_client_sees_the_idle_close_and_reconnects(start_api):
    from pushcore.admin.client import AdminClient

    _server, admin = start_api(header_timeout=0.3)
    with AdminClient(admin.url, ADMIN_TOKEN, timeout=5) as client:
        assert client.push("d", "one") == 1
        wait_for(lambda: admin.connections == 0, what="the idle keep-alive's close")
        assert client.push("d", "two") == 2  # a fresh connection, not a stale 408


def test_a_request_begun_near_the_end_of_the_idle_time_gets_its_own_header_time(start_api):
    # Found by the e2e benchmark: a keep-alive client that waited about
    # header_timeout between requests got a 408 for a request it had begun in
    # time. The idle time ends at a request's first byte, which then has a
    # full header_timeout of its own.
    server, admin = start_api(header_timeout=0.6)
    body = json.dumps({"device": "d", "payload": "x"}).encode()
    request = (b"POST /v1/push HTTP/1.1\r\nHost: x\r\n" + AUTH
               + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    with socket.create_connection(admin.address, timeout=5) as sock:
        sock.sendall(request)
        assert read_response(sock)[0] == 200
        time.sleep(0.45)  # idle, within the 0.6 s
        sock.sendall(request[:20])
        time.sleep(0.45)  # 0.9 s since the response: past the idle time, not past the request's own
        sock.sendall(request[20:])
        status, _headers, answer = read_response(sock)
        assert (status, answer) == (200, {"device": "d", "seq": 2})
    assert server.store.last_seq("d") == 2


def test_a_declared_but_unsent_body_is_dropped_at_the_body_deadline(start_api):
    server, admin = start_api(body_timeout=0.5)
    with socket.create_connection(admin.address, timeout=5) as sock:
        sock.sendall(b"POST /v1/push HTTP/1.1\r\nHost: x\r\n" + AUTH
                     + b"Content-Length: 100\r\n\r\n" + b'{"device": "d"')
        status, headers, body = read_response(sock)
        assert status == 408 and "body_timeout" in body["error"]
        assert headers["connection"] == "close"
        assert closed_by_server(sock)
    assert server.store.last_seq("d") == 0


def test_a_body_drip_is_cut_at_the_body_deadline(start_api):
    server, admin = start_api(body_timeout=0.5)
    raw = json.dumps({"device": "d", "payload": "y" * 200}).encode()
    with socket.create_connection(admin.address, timeout=5) as sock:
        sock.sendall(b"POST /v1/push HTTP/1.1\r\nHost: x\r\n" + AUTH
                     + b"Content-Length: " + str(len(raw)).encode() + b"\r\n\r\n")
        assert drip_until_closed(sock, raw)
        response = response_after_drip(sock)
        if response is not None:
            status, _headers, body = response
            assert status == 408 and "body_timeout" in body["error"]
    assert server.store.last_seq("d") == 0


# ---- connections: bounded, no thread each ------------------------------------------------------

def test_200_idle_connections_create_no_thread_and_healthz_answers(start_api):
    _server, admin = start_api(header_timeout=30)
    assert healthz(admin) == (200, {"status": "ok"})  # the health thread exists from here on
    threads = threading.active_count()
    socks = [socket.create_connection(admin.address, timeout=5) for _ in range(200)]
    try:
        for sock in socks[:100]:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # half of them mid-headers
        wait_for(lambda: admin.connections == 200, what="200 accepted connections")
        assert threading.active_count() == threads
        assert healthz(admin) == (200, {"status": "ok"})
        assert threading.active_count() == threads
    finally:
        for sock in socks:
            sock.close()


def test_connections_past_max_connections_are_closed_promptly_with_503(start_api):
    _server, admin = start_api(max_connections=3, header_timeout=30)
    held = [socket.create_connection(admin.address, timeout=5) for _ in range(3)]
    try:
        wait_for(lambda: admin.connections == 3, what="3 accepted connections")
        with socket.create_connection(admin.address, timeout=5) as extra:
            status, _headers, body = read_response(extra)
            assert status == 503 and "max_connections=3" in body["error"]
            assert closed_by_server(extra)
        held.pop().close()
        wait_for(lambda: admin.connections == 2, what="a freed slot")
        assert healthz(admin) == (200, {"status": "ok"})
        fams = admin.metrics.registry.render()
        assert 'pushcore_admin_connections_refused_total{reason="max_connections"} 1' in fams
    finally:
        for sock in held:
            sock.close()


def test_healthz_and_pushes_answer_while_slow_clients_hold_connections(start_api):
    server, admin = start_api(header_timeout=30, body_timeout=30, workers=2)
    slow = []
    try:
        for i in range(5):  # headers that never end
            sock = socket.create_connection(admin.address, timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow-" + str(i).encode() + b": a")
            slow.append(sock)
        for _ in range(5):  # authenticated bodies that never end: more than the worker threads
            sock = socket.create_connection(admin.address, timeout=5)
            sock.sendall(b"POST /v1/push HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Length: 1000\r\n\r\n{")
            slow.append(sock)
        for _ in range(5):  # unauthenticated 8 MB bodies, sent as fast as the server takes them
            sock = socket.create_connection(admin.address, timeout=5)
            sock.sendall(b"POST /v1/push HTTP/1.1\r\nHost: x\r\nContent-Length: 8000000\r\n\r\n")
            slow.append(sock)
        wait_for(lambda: admin.connections >= 10, what="the slow clients' connections")
        for _ in range(20):
            assert healthz(admin) == (200, {"status": "ok"})
        for i in range(5):
            assert post(admin, "/v1/push", json.dumps({"device": "ok", "payload": f"m{i}"}).encode()) \
                == (200, {"device": "ok", "seq": i + 1})
    finally:
        for sock in slow:
            sock.close()
    assert server.store.last_seq("d") == 0


# ---- malformed bodies: 400 with a reason --------------------------------------------------------

DEEP = b"[" * 200_000 + b"]" * 200_000


@pytest.mark.parametrize("path,raw,fragment", [
    ("/v1/push", DEEP, "nested too deeply"),
    ("/v1/push", b'{"device": "d", "payload": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_000 + b"}",
     "nested too deeply"),
    ("/v1/push", b'{"device": "d", "payload": "\\ud800"}', "surrogate"),
    ("/v1/push", b'{"device": "\\udc00x", "payload": "x"}', "surrogate"),
    ("/v1/push", b'{"device": "d", "payload": "x", "topic": "t\\ud83d"}', "surrogate"),
    ("/v1/push", b'{"device": "d", "payload": "x", "\\ud800": 1}', "surrogate"),
    ("/v1/push/batch", b'{"messages": [{"device": "d", "payload": "\\udfff"}]}', "surrogate"),
    ("/v1/publish", b'{"topic": "\\ud800", "payload": "x"}', "surrogate"),
    ("/v1/devices/d/subscribe", b'{"topics": ["\\ud800"]}', "surrogate"),
    ("/v1/push", b'{"device": "d\xff", "payload": "x"}', "UTF-8"),
    ("/v1/push", b'\xef\xbb\xbf{"device": "d", "payload": "x"}', "not valid JSON"),
    ("/v1/push", b'{"device": "d", "payload": "x", "ttl": NaN}', "NaN"),
    ("/v1/push", b'{"device": "d", "payload": "x", "ttl": Infinity}', "Infinity"),
    ("/v1/push", b'{"device": "d", "payload": "x", "ttl": 1e400}', "ttl"),
    ("/v1/push", b'{"device": "d", "payload": "x", "ttl": 1' + b"0" * 400 + b"}", "ttl"),
    ("/v1/push", b'{"device": "d", "payload": "x", "ttl": 1' + b"0" * 5000 + b"}", "not valid JSON"),
    ("/v1/push", b'{"device": "d", "payload": "x", "ttl": "60"}', "ttl"),
    ("/v1/push", b'{"device": "d", "payload": "x", "ttl": true}', "ttl"),
    ("/v1/push", b'{"device": "d", "payload": "x", "priority": 1}', "priority"),
    ("/v1/push", b'{"device": "d", "payload": "x", "priority": ["high"]}', "priority"),
    ("/v1/push", b'{"device": 5, "payload": "x"}', "'device' must be a string"),
    ("/v1/push", b'{"device": ["d"], "payload": "x"}', "'device' must be a string"),
    ("/v1/push", b'{"device": "d", "payload": 1}', "payload"),  # a JSON object or array is sent as JSON
    ("/v1/push", b'{"device": "d", "payload": {"x": 1e400}}', "payload"),  # inf: no JSON encoding
    ("/v1/push", b'{"device": "d", "payload_b64": 5}', "payload_b64"),
    ("/v1/push", b'{"device": "d", "payload": "x", "collapse_key": {}}', "collapse_key"),
    ("/v1/push", b'"just a string"', "JSON object"),
    ("/v1/push", b"5", "JSON object"),
    ("/v1/push", b"null", "JSON object"),
    ("/v1/push", b"", "JSON object"),
    ("/v1/push", b"{", "not valid JSON"),
    ("/v1/push/batch", b'{"messages": "x"}', "non-empty list"),
    ("/v1/push/batch", b'{"messages": [5]}', "JSON object"),
    ("/v1/publish", b'{"topic": 5, "payload": "x"}', "'topic' must be a string"),
    ("/v1/devices/d/subscribe", b'{"topics": "news"}', "topics"),
    ("/v1/devices/d/subscribe", b'{"topics": [1]}', "topics"),
    ("/v1/broadcast", b'{"payload": "x", "durable": 1}', "durable"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None)
def test_every_malformed_body_is_a_400_with_a_reason(start_api, path, raw, fragment):
    server, admin = start_api()
    status, body = post(admin, path, raw)
    assert status == 400, body
    assert fragment in body["error"]
    assert server.store.last_seq("d") == 0
    assert healthz(admin) == (200, {"status": "ok"})


def test_a_malformed_http_request_is_a_json_400(start_api):
    _server, admin = start_api()
    with socket.create_connection(admin.address, timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        status, headers, body = read_response(sock)
        assert status == 400 and "malformed HTTP request" in body["error"]
        assert closed_by_server(sock)
    with socket.create_connection(admin.address, timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(100)) + b"\r\n")
        assert read_response(sock)[0] == 400  # more header fields than MAX_HEADERS
    assert healthz(admin) == (200, {"status": "ok"})


# ---- errors and results from the gateway -----------------------------------------------------


@pytest.mark.parametrize(
    "message, field, limit",
    [
        ({"device": "d", "payload": "x" * 70_000}, "payload", 64_000),
        ({"device": "d", "payload": "x", "topic": "t" * 300}, "topic", 256),
        ({"device": "d", "payload": "x", "collapse_key": "k" * 300}, "collapse_key", 256),
        ({"device": "d" * 300, "payload": "x"}, "device_id", 256),
    ],
    ids=["payload", "topic", "collapse_key", "device_id"],
)
def test_a_field_over_its_limit_is_413_naming_it_and_nothing_is_stored(start_api, message, field, limit):
    server, admin = start_api()
    status, body = post(admin, "/v1/push", json.dumps(message).encode())
    assert status == 413 and (body["field"], body["limit"]) == (field, limit), body
    assert str(limit) in body["error"]
    batch = {"messages": [{"device": "ok", "payload": "fine"}, message]}
    status, body = post(admin, "/v1/push/batch", json.dumps(batch).encode())
    assert status == 413 and body["field"] == field and "messages[1]" in body["error"]
    if field in ("payload", "collapse_key"):
        publish = {"topic": "news", **{k: v for k, v in message.items() if k != "device"}}
        assert post(admin, "/v1/publish", json.dumps(publish).encode())[0] == 413
    assert server.store.stats().messages == 0


def test_a_bad_topic_name_is_400_with_the_rule(start_api):
    _server, admin = start_api()
    status, body = post(admin, "/v1/publish", json.dumps({"topic": "has space", "payload": "x"}).encode())
    assert status == 400 and "topic" in body["error"] and "ASCII letters" in body["error"]


def test_one_exhausted_device_fails_only_its_items_in_a_batch_and_a_publish(start_api):
    server, admin = start_api()
    server.store.advance_seq("stuck", 2**63 - 1)
    batch = {"messages": [{"device": "a", "payload": "1"}, {"device": "stuck", "payload": "2"},
                          {"device": "a", "payload": "3"}]}
    status, body = post(admin, "/v1/push/batch", json.dumps(batch).encode())
    assert status == 200
    assert body["seqs"] == [1, 0, 2]
    assert [(e["index"], e["device"]) for e in body["errors"]] == [(1, "stuck")]
    assert "exhausted" in body["errors"][0]["error"]
    server.subscribe("a", "news")
    server.subscribe("stuck", "news")
    status, body = post(admin, "/v1/publish", json.dumps({"topic": "news", "payload": "x"}).encode())
    assert status == 200 and body["devices"] == 1 and list(body["failed"]) == ["stuck"]
    assert server.store.backlog("a") == 3


def test_concurrent_healthz_share_one_check_of_the_gateway_loop(start_api, monkeypatch):
    """/healthz needs no token: a flood of them makes one hand-over to the gateway's loop at a time."""
    import asyncio

    _server, admin = start_api()
    release = threading.Event()
    calls = []

    def slow_snapshot():
        calls.append(1)
        release.wait(5)
        return {}

    monkeypatch.setattr(admin.metrics, "snapshot", slow_snapshot)

    async def twenty():
        tasks = [asyncio.ensure_future(admin._health()) for _ in range(20)]
        await asyncio.sleep(0)  # every task is now waiting on the one check
        release.set()
        return await asyncio.gather(*tasks)

    assert asyncio.run_coroutine_threadsafe(twenty(), admin._loop).result(10) == [True] * 20
    assert len(calls) == 1
    assert healthz(admin) == (200, {"status": "ok"})
    assert len(calls) == 2


# ---- header bytes before authentication --------------------------------------------------------

def unfinished_headers(size: int, line: int) -> list[bytes]:
    """A request line and header lines of *line* bytes, *size* bytes in all, with no blank line."""
    pieces = [b"GET /healthz HTTP/1.1\r\nHost: x\r\n"]
    total, i = len(pieces[0]), 0
    while total < size:
        name = b"X-%d: " % i
        n = min(line, size - total)
        pieces.append(name + b"a" * max(n - len(name) - 2, 1) + b"\r\n")
        total += len(pieces[-1])
        i += 1
    assert total == size
    return pieces


def test_headers_past_max_header_bytes_are_431_and_closed(start_api):
    _server, admin = start_api(header_timeout=30)
    # Exactly one byte over the cap, so the limit trips on the last byte sent: a byte sent
    # after the server closed would make its kernel reset the connection and lose the 431.
    for line, each in ((4000, False), (1000, True)):
        with socket.create_connection(admin.address, timeout=5) as sock:
            # each line under aiohttp's per-line limit, together over 16 KiB, and no end
            pieces = unfinished_headers(16 * 1024 + 1, line)
            if each:  # in small pieces, one send each
                for piece in pieces:
                    sock.sendall(piece)
            else:
                sock.sendall(b"".join(pieces))
            status, _headers, body = read_response(sock)
            assert status == 431 and "max_header_bytes" in body["error"]
            assert closed_by_server(sock)
    assert 'pushcore_admin_connections_refused_total{reason="max_header_bytes"} 2' in admin.metrics.registry.render()
    with socket.create_connection(admin.address, timeout=5) as sock:  # at the cap, with its end: served
        pieces = unfinished_headers(16 * 1024 - 2, 4000)
        sock.sendall(b"".join(pieces) + b"\r\n")
        assert read_response(sock)[:3:2] == (200, {"status": "ok"})
    assert healthz(admin) == (200, {"status": "ok"})


def test_large_bodies_and_pipelined_requests_are_not_counted_as_headers(start_api):
    server, admin = start_api(header_timeout=30)
    # a body of nearly max_body (a batch of 16 payloads of 64,000 bytes) sent with its headers in one go
    raw = json.dumps({"messages": [{"device": "d", "payload": "z" * 64_000}] * 16}).encode()
    assert 1024 * 1024 - 30_000 < len(raw) < 1024 * 1024
    assert post(admin, "/v1/push/batch", raw) == (200, {"seqs": list(range(1, 17))})
    # three pipelined requests in one send, the middle one with a 200 KB body
    small = json.dumps({"device": "p", "payload": "x"}).encode()
    big = json.dumps({"messages": [{"device": "p", "payload": "y" * 50_000}] * 4}).encode()

    def request(body):
        path = b"/v1/push/batch" if body.startswith(b'{"messages"') else b"/v1/push"
        return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + AUTH
                + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    with socket.create_connection(admin.address, timeout=30) as sock:
        sock.sendall(request(small) + request(big) + request(small))
        assert [read_response(sock)[:3:2] for _ in range(3)] == [
            (200, {"device": "p", "seq": 1}), (200, {"seqs": [2, 3, 4, 5]}), (200, {"device": "p", "seq": 6})]
    assert server.store.last_seq("p") == 6

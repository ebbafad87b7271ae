"""Server lists: parsing, fetching over HTTP (a real http.server on 127.0.0.1), resolving."""
from __future__ import annotations

import http.server
import json
import threading

import pytest

from pushcore.device.serverlist import (
    ServerListError,
    fetch_servers,
    is_ip_literal,
    parse_server,
    parse_servers,
    resolve_servers,
)


class ListServer:
    """A tiny HTTP server answering every GET with a fixed body and status."""

    def __init__(self) -> None:
        self.body = b"[]"
        self.status = 200
        self.hits = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.hits += 1
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/servers"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def list_server():
    server = ListServer()
    yield server
    server.close()


def test_parse_forms():
    assert parse_server("10.0.0.1:5222") == ("10.0.0.1", 5222, 0)
    assert parse_server("[::1]:80") == ("::1", 80, 0)
    assert parse_server(("h", 1)) == ("h", 1, 0)
    assert parse_server(("h", 1, 7)) == ("h", 1, 7)
    assert parse_server({"host": "h", "port": 2, "load": 3}) == ("h", 2, 3)


@pytest.mark.parametrize(
    "bad", ["nohost", ":80", "h:", "h:x", "h:0", "h:70000", ("h",), ("h", "x"), {"host": "h"}, 5]
)
def test_parse_rejects(bad):
    with pytest.raises(ServerListError):
        parse_server(bad)


def test_parse_servers_sorts_by_load_stably_and_dedupes():
    servers = parse_servers([("a", 1, 5), ("b", 1, 1), ("c", 1, 5), ("b", 1, 9)])
    assert servers == [("b", 1), ("a", 1), ("c", 1)]
    assert parse_servers("127.0.0.1:1, 127.0.0.1:2") == [("127.0.0.1", 1), ("127.0.0.1", 2)]


def test_fetch_sorted_by_load(list_server):
    list_server.body = json.dumps(
        [
            {"host": "127.0.0.1", "port": 7001, "load": 80},
            {"host": "127.0.0.1", "port": 7002, "load": 10},
            {"host": "127.0.0.1", "port": 7003},
        ]
    ).encode()
    assert fetch_servers(list_server.url) == [
        ("127.0.0.1", 7003),
        ("127.0.0.1", 7002),
        ("127.0.0.1", 7001),
    ]
    list_server.body = json.dumps({"servers": ["127.0.0.1:9"]}).encode()
    assert fetch_servers(list_server.url) == [("127.0.0.1", 9)]


@pytest.mark.parametrize(
    "status, body",
    [(500, b"[]"), (200, b"not json"), (200, b"[]"), (200, b'{"x": 1}'), (200, b'["nope"]')],
)
def test_fetch_failures_are_typed(list_server, status, body):
    list_server.status = status
    list_server.body = body
    with pytest.raises(ServerListError):
        fetch_servers(list_server.url)


def test_fetch_refused_connection_is_typed():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(ServerListError):
        fetch_servers(f"http://127.0.0.1:{port}/", timeout=2)
    with pytest.raises(ServerListError):
        fetch_servers("ftp://127.0.0.1/")


# A name with an empty label fails inside the resolver library, without any DNS query:
# the tests never reach a name server (loopback only).
UNRESOLVABLE = "no-such..host"


def test_resolve_keeps_literals_and_drops_what_fails():
    assert is_ip_literal("127.0.0.1") and is_ip_literal("::1") and not is_ip_literal("localhost")
    assert resolve_servers([("127.0.0.1", 1), (UNRESOLVABLE, 2)]) == [("127.0.0.1", 1)]
    with pytest.raises(ServerListError):
        resolve_servers([(UNRESOLVABLE, 2)])

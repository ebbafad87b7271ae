"""The admin HTTP API of a gateway: push, presence and backlog, metrics, health.

:class:`AdminAPI` serves a :class:`pushcore.Server` over HTTP/1.1 on a port of
its own, bound to ``127.0.0.1`` by default (it is an operator's tool, not a
public endpoint). It runs the standard library's ``ThreadingHTTPServer`` in a
background thread; everything it asks of the gateway goes through the
server's thread-safe methods (a batch is one :meth:`pushcore.Server.push_batch`:
one hand-over to the loop thread, one store transaction). The server must be
running in a thread other than the API's (``server.start()`` or
``server.run()`` in another thread).

Every endpoint but ``/healthz`` needs ``Authorization: Bearer <token>``: no
header is ``401`` (with ``WWW-Authenticate: Bearer``), a wrong token ``403``.
The comparison is constant-time.

========================================  ==========================================================
``GET  /healthz``                          ``{"status": "ok"}`` (200) or ``{"status": "down"}`` (503)
``GET  /metrics``                          Prometheus text format 0.0.4
``POST /v1/push``                          one message to one device → ``{"device", "seq"}``
``POST /v1/push/batch``                    ``{"messages": [...]}`` → ``{"seqs": [...]}``, one transaction
``POST /v1/publish``                       to a topic's subscribers → ``{"devices": n}``
``POST /v1/broadcast``                     to every connected device → ``{"devices": n}``
``GET  /v1/devices``                       ``{"connected": n}``; ``?list=1`` adds ids (``&limit=``)
``GET  /v1/devices/<id>``                  presence, backlog, last seq, topics
``POST /v1/devices/<id>/subscribe``        ``{"topics": [...]}`` → ``{"added": n}``
``POST /v1/devices/<id>/unsubscribe``      ``{"topics": [...]}`` → ``{"removed": n}``
``POST /v1/devices/<id>/disconnect``       GOAWAY and close → ``{"disconnected": bool}``
========================================  ==========================================================

A message is a JSON object: ``payload`` (text, sent as UTF-8) or
``payload_b64`` (base64 bytes); optional ``priority`` (``"high"``/``"low"``),
``ttl`` (seconds), ``collapse_key``, ``topic``; ``device`` for pushes.
Errors are JSON ``{"error": "..."}`` with 400, 404, 405, 411, 413, 503 or 500.
See docs/OPERATIONS.md.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import http.server
import json
import logging
import re
import socket
import threading
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ..errors import PushcoreError
from .gateway_metrics import GatewayMetrics
from .prometheus import CONTENT_TYPE, Registry

if TYPE_CHECKING:
    from ..gateway.server import Server

__all__ = ["AdminAPI", "DEFAULT_ADMIN_PORT", "MIN_TOKEN_LENGTH", "ApiError"]

log = logging.getLogger("pushcore.admin.api")

DEFAULT_ADMIN_PORT = 8222
MIN_TOKEN_LENGTH = 16
MAX_BODY = 8 * 1024 * 1024  # bytes of JSON per request
MAX_BATCH = 10_000  # messages per /v1/push/batch
_MESSAGE_KEYS = frozenset({"device", "payload", "payload_b64", "priority", "ttl", "collapse_key", "topic"})

_P = ParamSpec("_P")
_T = TypeVar("_T")


class ApiError(PushcoreError):
    """A request the API refuses: ``status`` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _text(obj: dict[str, Any], key: str, default: str = "", *, required: bool = False) -> str:
    value = obj.get(key, None)
    if value is None:
        if required:
            raise ApiError(400, f"'{key}' is required")
        return default
    if not isinstance(value, str):
        raise ApiError(400, f"'{key}' must be a string")
    return value


def _payload(obj: dict[str, Any]) -> bytes:
    text, b64 = obj.get("payload"), obj.get("payload_b64")
    if text is not None and b64 is not None:
        raise ApiError(400, "give 'payload' (text) or 'payload_b64', not both")
    if b64 is not None:
        if not isinstance(b64, str):
            raise ApiError(400, "'payload_b64' must be a base64 string")
        try:
            return base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "'payload_b64' is not valid base64") from None
    if text is None:
        raise ApiError(400, "'payload' (text) or 'payload_b64' is required")
    if not isinstance(text, str):
        raise ApiError(400, "'payload' must be a string (use 'payload_b64' for bytes)")
    return text.encode("utf-8")


def _options(obj: dict[str, Any]) -> dict[str, Any]:
    """priority / ttl / collapse_key of a message, checked."""
    options: dict[str, Any] = {}
    priority = obj.get("priority", "high")
    if priority not in ("high", "low"):
        raise ApiError(400, "'priority' must be \"high\" or \"low\"")
    options["priority"] = priority
    ttl = obj.get("ttl")
    if ttl is not None:
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise ApiError(400, "'ttl' must be a number of seconds > 0")
        options["ttl"] = ttl
    options["collapse_key"] = _text(obj, "collapse_key")
    return options


def _message(obj: Any) -> tuple[str, bytes, dict[str, Any]]:
    """(device id, payload, push options) of one message object."""
    if not isinstance(obj, dict):
        raise ApiError(400, "a message must be a JSON object")
    unknown = set(obj) - _MESSAGE_KEYS
    if unknown:
        raise ApiError(400, f"unknown field(s) {sorted(unknown)}; allowed: {sorted(_MESSAGE_KEYS)}")
    device = _text(obj, "device", required=True)
    if not device:
        raise ApiError(400, "'device' must not be empty")
    options = _options(obj)
    options["topic"] = _text(obj, "topic")
    return device, _payload(obj), options


def _topics(obj: dict[str, Any]) -> list[str]:
    topics = obj.get("topics")
    if not isinstance(topics, list) or not topics or not all(isinstance(t, str) and t for t in topics):
        raise ApiError(400, "'topics' must be a non-empty list of non-empty strings")
    return topics


class AdminAPI:
    """The admin HTTP API of *server* (see the module docstring).

    Parameters
    ----------
    server
        a running :class:`pushcore.Server`.
    token
        the admin token (str, at least 16 characters) every request but
        ``/healthz`` must carry as ``Authorization: Bearer <token>``.
    host, port
        where to listen; ``127.0.0.1`` by default, port 0 = any free port.
    metrics
        a :class:`GatewayMetrics` to expose (default: one made for *server*,
        with the push→ack histogram hooked to its store).
    """

    def __init__(
        self,
        server: Server,
        token: str,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_ADMIN_PORT,
        metrics: GatewayMetrics | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"the admin token must be a string of at least {MIN_TOKEN_LENGTH} characters "
                f"(e.g. secrets.token_urlsafe(24))"
            )
        self.server = server
        self._token = token.encode("utf-8")
        self._host = host
        self._port = port
        self.timeout = timeout
        if metrics is None:
            metrics = GatewayMetrics(server, Registry())
            metrics.track_push_ack()
        self.metrics = metrics
        registry = metrics.registry
        self.requests = registry.counter(
            "pushcore_admin_requests_total", "Admin API requests, by route and HTTP status.",
            labels=("route", "code"))
        self.pushes = registry.counter(
            "pushcore_admin_pushes_total",
            "Messages sent through the admin API, by kind (device, topic, broadcast).",
            labels=("kind",))
        for kind in ("device", "topic", "broadcast"):
            self.pushes.labels(kind)  # expose zeros from the first scrape
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        if self._httpd is None:
            raise RuntimeError("the admin API is not started")
        host, port = self._httpd.server_address[:2]
        assert isinstance(host, str)  # an AF_INET or AF_INET6 socket's address
        return host, port

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def start(self) -> tuple[str, int]:
        """Listen and serve in a background thread; returns ``(host, port)``.

        Raises ``OSError`` when the address is taken or cannot be bound.
        """
        if self._httpd is not None:
            raise RuntimeError("the admin API is already started")
        handler = type("AdminHandler", (_Handler,), {"api": self})
        server_cls = _IPv6HTTPServer if ":" in self._host else _HTTPServer
        self._httpd = server_cls((self._host, self._port), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name="pushcore-admin", daemon=True)
        self._thread.start()
        return self.address

    def stop(self) -> None:
        """Stop serving and close the socket. Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def __enter__(self) -> AdminAPI:
        if self._httpd is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- authentication ---------------------------------------------------------

    def check_auth(self, header: str | None) -> None:
        """Raise :class:`ApiError` 401 (no bearer token) or 403 (wrong token)."""
        if not header:
            raise ApiError(401, "missing 'Authorization: Bearer <admin token>' header")
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise ApiError(401, "the Authorization header must be 'Bearer <admin token>'")
        if not hmac.compare_digest(value.strip().encode("utf-8", "surrogateescape"), self._token):
            raise ApiError(403, "wrong admin token")

    # -- routes -------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[str, int, Any]:
        """``(route name, status, JSON-able result)`` of one authenticated request."""
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        if parts[:1] != ["v1"]:
            raise ApiError(404, f"no such endpoint {path!r}")
        rest = parts[1:]
        if rest == ["push"]:
            return "/v1/push", 200, self._push(self._post(method, body))
        if rest == ["push", "batch"]:
            return "/v1/push/batch", 200, self._push_batch(self._post(method, body))
        if rest == ["publish"]:
            return "/v1/publish", 200, self._publish(self._post(method, body))
        if rest == ["broadcast"]:
            return "/v1/broadcast", 200, self._broadcast(self._post(method, body))
        if rest == ["devices"]:
            self._get(method)
            return "/v1/devices", 200, self._devices(query)
        if len(rest) == 2 and rest[0] == "devices" and rest[1]:
            self._get(method)
            return "/v1/devices/<id>", 200, self._device(rest[1])
        if len(rest) == 3 and rest[0] == "devices" and rest[1]:
            action = rest[2]
            if action in ("subscribe", "unsubscribe"):
                topics = _topics(self._post(method, body))
                if action == "subscribe":
                    return f"/v1/devices/<id>/{action}", 200, {
                        "added": self._call(self.server.subscribe, rest[1], *topics)}
                return f"/v1/devices/<id>/{action}", 200, {
                    "removed": self._call(self.server.unsubscribe, rest[1], *topics)}
            if action == "disconnect":
                self._post(method, body)
                return "/v1/devices/<id>/disconnect", 200, {
                    "disconnected": self._call(self.server.disconnect, rest[1])}
        raise ApiError(404, f"no such endpoint {path!r}")

    @staticmethod
    def _post(method: str, body: Any) -> dict[str, Any]:
        if method != "POST":
            raise ApiError(405, "use POST with a JSON object body")
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        return body

    @staticmethod
    def _get(method: str) -> None:
        if method != "GET":
            raise ApiError(405, "use GET")

    def _call(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """A thread-safe server method, with its errors turned into API errors."""
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError) as exc:
            raise ApiError(400, str(exc)) from None
        except (RuntimeError, TimeoutError) as exc:
            raise ApiError(503, f"the gateway is not running ({exc})") from None

    def _push(self, body: dict[str, Any]) -> dict[str, Any]:
        device, payload, options = _message(body)
        seq = self._call(self.server.push, device, payload, **options)
        self.pushes.labels("device").inc()
        return {"device": device, "seq": seq}

    def _push_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        if set(body) != {"messages"}:
            raise ApiError(400, "the body must be {\"messages\": [message, ...]}")
        items = body["messages"]
        if not isinstance(items, list) or not items:
            raise ApiError(400, "'messages' must be a non-empty list")
        if len(items) > MAX_BATCH:
            raise ApiError(413, f"at most {MAX_BATCH} messages per batch, got {len(items)}")
        messages = [_message(item) for item in items]  # all checked before any is sent
        # One hand-over to the loop, one store transaction, one delivery pass.
        seqs = self._call(self.server.push_batch, messages, timeout=self.timeout)
        self.pushes.labels("device").inc(len(seqs))
        return {"seqs": seqs}

    def _publish(self, body: dict[str, Any]) -> dict[str, Any]:
        allowed = {"topic", "payload", "payload_b64", "priority", "ttl", "collapse_key"}
        if set(body) - allowed:
            raise ApiError(400, f"unknown field(s) {sorted(set(body) - allowed)}")
        topic = _text(body, "topic", required=True)
        if not topic:
            raise ApiError(400, "'topic' must not be empty")
        n = self._call(self.server.publish, topic, _payload(body), **_options(body))
        self.pushes.labels("topic").inc()
        return {"topic": topic, "devices": n}

    def _broadcast(self, body: dict[str, Any]) -> dict[str, Any]:
        allowed = {"payload", "payload_b64", "priority", "ttl", "collapse_key", "topic", "durable"}
        if set(body) - allowed:
            raise ApiError(400, f"unknown field(s) {sorted(set(body) - allowed)}")
        durable = body.get("durable", False)
        if not isinstance(durable, bool):
            raise ApiError(400, "'durable' must be true or false")
        n = self._call(self.server.broadcast, _payload(body), durable=durable,
                       topic=_text(body, "topic"), **_options(body))
        self.pushes.labels("broadcast").inc()
        return {"devices": n, "durable": durable}

    def _devices(self, query: dict[str, list[str]]) -> dict[str, Any]:
        result: dict[str, Any] = {"connected": self._call(self.server.device_count)}
        if query.get("list", ["0"])[-1] not in ("0", "", "false"):
            try:
                limit = int(query.get("limit", ["1000"])[-1])
            except ValueError:
                raise ApiError(400, "'limit' must be an integer") from None
            if limit < 1:
                raise ApiError(400, "'limit' must be >= 1")
            ids = sorted(self._call(self.server.devices))
            result["devices"] = ids[:limit]
            result["truncated"] = len(ids) > limit
        return result

    def _device(self, device_id: str) -> dict[str, Any]:
        store = self.server.store
        try:
            return {
                "device": device_id,
                "connected": self.server.connected(device_id),
                "backlog": store.backlog(device_id),
                "last_seq": store.last_seq(device_id),
                "topics": sorted(store.topics(device_id)),
            }
        except (ValueError, TypeError) as exc:
            raise ApiError(400, str(exc)) from None
        except PushcoreError as exc:  # a closed store
            raise ApiError(503, f"the gateway's store is not available ({exc})") from None


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class _IPv6HTTPServer(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(http.server.BaseHTTPRequestHandler):
    """One HTTP/1.1 connection (keep-alive) of the admin API."""

    api: AdminAPI  # set on the subclass made per AdminAPI
    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds an idle keep-alive connection is kept
    # One write per response, without Nagle: headers and body sent as two small
    # segments would wait for the client's delayed ACK (about 40 ms per request).
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024  # the stdlib flushes after each request
    server_version = "pushcore-admin"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        api = self.api
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        route = path
        try:
            body = self._read_body(method)
            if path == "/healthz":
                route = "/healthz"
                if method != "GET":
                    raise ApiError(405, "use GET")
                up = api.metrics.snapshot() is not None
                self._send_json(200 if up else 503, {"status": "ok" if up else "down"}, route)
                return
            api.check_auth(self.headers.get("Authorization"))
            if path == "/metrics":
                route = "/metrics"
                if method != "GET":
                    raise ApiError(405, "use GET")
                text = api.metrics.registry.render().encode("utf-8")
                self._send(200, CONTENT_TYPE, text, route)
                return
            route, status, result = api.handle(method, path, urllib.parse.parse_qs(url.query), body)
            self._send_json(status, result, route)
        except ApiError as exc:
            if exc.status >= 500 or exc.status in (401, 403):
                log.info("admin API %s %s: %d %s", method, path, exc.status, exc.message)
            self._send_json(exc.status, {"error": exc.message}, _route_label(route, exc.status))
        except Exception:
            log.exception("admin API %s %s failed", method, path)
            self._send_json(500, {"error": "internal error (see the gateway's log)"},
                            _route_label(route, 500))

    def _read_body(self, method: str) -> Any:
        length_header = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise ApiError(411, "send a Content-Length (chunked bodies are not accepted)")
        if length_header is None:
            if method == "POST":
                raise ApiError(411, "a POST needs a Content-Length and a JSON body")
            return None
        try:
            length = int(length_header)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "bad Content-Length") from None
        if length < 0:
            self.close_connection = True
            raise ApiError(400, "bad Content-Length")
        if length > MAX_BODY:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            raise ApiError(413, f"the body is {length} bytes; the limit is {MAX_BODY}")
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}") from None

    def _send_json(self, status: int, obj: Any, route: str) -> None:
        data = (json.dumps(obj, separators=(",", ":")) + "\n").encode("utf-8")
        extra = {}
        if status == 401:
            extra["WWW-Authenticate"] = 'Bearer realm="pushcore-admin"'
        self._send(status, "application/json", data, route, extra)

    def _send(self, status: int, content_type: str, data: bytes, route: str,
              extra: dict[str, str] | None = None) -> None:
        self.api.requests.labels(route, str(status)).inc()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


_ROUTES = (
    ("/healthz", re.compile(r"^/healthz$")),
    ("/metrics", re.compile(r"^/metrics$")),
    ("/v1/push", re.compile(r"^/v1/push/?$")),
    ("/v1/push/batch", re.compile(r"^/v1/push/batch/?$")),
    ("/v1/publish", re.compile(r"^/v1/publish/?$")),
    ("/v1/broadcast", re.compile(r"^/v1/broadcast/?$")),
    ("/v1/devices", re.compile(r"^/v1/devices/?$")),
    ("/v1/devices/<id>", re.compile(r"^/v1/devices/[^/]+/?$")),
    ("/v1/devices/<id>/subscribe", re.compile(r"^/v1/devices/[^/]+/subscribe/?$")),
    ("/v1/devices/<id>/unsubscribe", re.compile(r"^/v1/devices/[^/]+/unsubscribe/?$")),
    ("/v1/devices/<id>/disconnect", re.compile(r"^/v1/devices/[^/]+/disconnect/?$")),
)


def _route_label(path: str, status: int) -> str:
    """The route template of *path* for the request counter; anything else is "other".

    Keeps the label set small and fixed whatever paths clients (or scanners) send.
    """
    if status == 404:
        return "other"
    for name, pattern in _ROUTES:
        if pattern.match(path):
            return name
    return "other"

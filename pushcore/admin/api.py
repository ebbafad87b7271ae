"""The admin HTTP API of a gateway: push, presence and backlog, metrics, health.

:class:`AdminAPI` serves a :class:`pushcore.Server` over HTTP/1.1 on a port of
its own, bound to ``127.0.0.1`` by default (it is an operator's tool, not a
public endpoint). It runs an `aiohttp <https://docs.aiohttp.org>`_ low-level
server (``aiohttp.web.Server`` + ``ServerRunner``) on an asyncio loop of its
own, in one background thread: connections cost no thread each. The
gateway's methods block until the gateway's loop thread answers, so the API
calls them from a small, bounded pool of worker threads (``workers``); a
``/healthz`` has a thread of its own, so it answers while pushes queue. The
server must be running in a thread other than the API's (``server.start()``
or ``server.run()`` in another thread).

Every endpoint but ``/healthz`` and ``/readyz`` needs ``Authorization: Bearer <token>``: no
header is ``401`` (with ``WWW-Authenticate: Bearer``), a wrong token ``403``.
The comparison is constant-time, and it is made from the headers alone:
a request that fails it is answered, and its connection closed, before one
byte of its body is read.

========================================  ==========================================================
``GET  /healthz``                          ``{"status": "ok"}`` (200); 503 ``{"status": "down"}`` (the loop does
                                           not answer) or ``{"status": "store_unwritable", "error", "since"}``
``GET  /readyz``                           for load balancers: ``{"status": "ready"}`` (200) only when listening,
                                           not draining and the store can write; else 503 with ``"status"``
                                           ``down``, ``draining``, ``not_listening`` or ``store_unwritable``
``GET  /servers``                          no token: the gateways to connect to, least loaded first
                                           ``{"servers": [{"host", "port", "load"}, ...]}`` (a cluster: every
                                           live node not draining; the format pushcore.Client fetches)
``GET  /metrics``                          Prometheus text format 0.0.4
``POST /v1/push``                          one message to one device → ``{"device", "seq"}``
``POST /v1/push/batch``                    ``{"messages": [...]}`` → ``{"seqs": [...]}``, one transaction
``POST /v1/publish``                       to a topic's subscribers → ``{"devices": n}``
``POST /v1/broadcast``                     to every connected device → ``{"devices": n}``
``GET  /v1/devices``                       ``{"connected": n}``; ``?list=1`` adds ids (``&limit=``); in a
                                           cluster also ``"cluster": {"connected", "nodes"}`` and the ids of
                                           every node
``GET  /v1/devices/<id>``                  presence, backlog, last seq, topics
``GET  /v1/nodes``                         the cluster's live nodes (``[]`` on one gateway): ``node``,
                                           ``host``, ``port``, ``connections``, ``lease_expires`` and the load
                                           figures each node publishes
``POST /v1/devices/<id>/subscribe``        ``{"topics": [...]}`` → ``{"added": n}``
``POST /v1/devices/<id>/unsubscribe``      ``{"topics": [...]}`` → ``{"removed": n}``
``POST /v1/devices/<id>/disconnect``       GOAWAY and close → ``{"disconnected": bool}``
``POST /v1/devices/<id>/revoke``           ``{"before": unix_seconds}`` (optional, default now): refuse
                                           its tokens issued before → ``{"revoked_before", "disconnected"}``
========================================  ==========================================================

A message is a JSON object: ``payload`` (a string: text, sent as UTF-8; a
JSON object or array: sent as its compact UTF-8 encoding,
``json.dumps(value, separators=(",", ":"), ensure_ascii=False)``) or
``payload_b64`` (base64 bytes); optional ``priority`` (``"high"``/``"low"``),
``ttl`` (seconds), ``collapse_key``, ``topic``; ``device`` for pushes;
``idempotency_key`` for pushes (see below).

Idempotency: ``POST /v1/push`` takes an ``Idempotency-Key: <key>`` header
(or the message's ``idempotency_key`` field; both must then be equal); in
``POST /v1/push/batch`` each message may carry its own ``idempotency_key``,
and an ``Idempotency-Key: K`` header gives every message without one the key
``K:<index>`` (so K is at most 251 bytes). A key is 1-256 printable ASCII
characters, remembered by the gateway's store for its ``idempotency_window``
(24 h by default, also across restarts on SQLite): a repeat answers the
original seq and stores nothing; the same key for another message is 409
with ``idempotency_key`` (and ``index`` in a batch) in the body, and nothing
is stored. Other routes refuse the header (400).

Errors are JSON ``{"error": "..."}`` (plus ``field`` when one message field
is at fault; in a batch also ``index`` and ``device``, the error text
starting ``messages[INDEX]:``) with 400, 404, 405, 408, 409, 411, 413, 431,
503 or 500. A field the gateway finds too large (an exception with a
``limit`` attribute, e.g. ``MessageTooLarge``) is 413 with ``field`` and
``limit`` in the body; any other ``ValueError`` is 400. A write the store
cannot make (:class:`pushcore.store.StoreUnavailable`) is 503 with
``"store": "unwritable"``, ``since`` and a ``Retry-After`` header: nothing
was stored, send it again later.

Limits (constructor options; see docs/SECURITY.md):

``max_body``            1 MiB. A longer ``Content-Length`` is 413, the body unread.
``header_timeout``      10 s of idle time (from the connection's opening, or from
                        the end of its previous response) until a request's first
                        byte, past which the connection is closed silently; then
                        10 s from that first byte to the end of its headers, past
                        which it gets a 408 and is closed.
``body_timeout``        10 s for the whole body (and for writing the response),
                        however it trickles in; past it a 408 and close.
``max_connections``     1000 connections at once; one more is answered 503 and closed.
``max_header_bytes``    16 KiB of request line and headers in total; more is 431 and close.
``workers``             4 threads calling the gateway (requests beyond wait their turn).
Headers: at most 32 fields, lines of at most 8190 bytes (aiohttp's parser refuses more with a 400).
See docs/OPERATIONS.md.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import hmac
import json
import logging
import math
import re
import socket
import threading
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from aiohttp import web

from ..errors import PushcoreError
from ..store import MAX_IDEMPOTENCY_KEY_BYTES, IdempotencyConflict
from ..store.base import StoreUnavailable, check_idempotency_key
from .gateway_metrics import GatewayMetrics
from .prometheus import CONTENT_TYPE, Registry

if TYPE_CHECKING:
    from ..gateway.server import Server

__all__ = ["AdminAPI", "DEFAULT_ADMIN_PORT", "MIN_TOKEN_LENGTH", "ApiError"]

log = logging.getLogger("pushcore.admin.api")

DEFAULT_ADMIN_PORT = 8222
MIN_TOKEN_LENGTH = 16
MAX_BODY = 1024 * 1024  # default max_body: bytes of JSON per request
MAX_BATCH = 10_000  # messages per /v1/push/batch
MAX_TTL = 10 * 365 * 86400  # seconds: a longer ttl is a 400 (and would overflow the expiry's int64)
HEADER_TIMEOUT = 10.0  # default header_timeout, seconds
BODY_TIMEOUT = 10.0  # default body_timeout, seconds
MAX_CONNECTIONS = 1000  # default max_connections
WORKERS = 4  # default workers
MAX_HEADER_BYTES = 16 * 1024  # default max_header_bytes: request line and headers, in total
MAX_HEADERS = 32  # header fields per request
MAX_FIELD_SIZE = 8190  # bytes per header line (aiohttp's default)
_MESSAGE_KEYS = frozenset({"device", "payload", "payload_b64", "priority", "ttl", "collapse_key", "topic",
                           "idempotency_key"})
IDEMPOTENCY_HEADER = "Idempotency-Key"
# A batch's header key K names item i "K:i": K leaves room for ":" and the largest index.
MAX_BATCH_KEY_BYTES = MAX_IDEMPOTENCY_KEY_BYTES - 1 - len(str(MAX_BATCH - 1))
_SURROGATE = re.compile("[\ud800-\udfff]")

_P = ParamSpec("_P")
_T = TypeVar("_T")


class ApiError(PushcoreError):
    """A request the API refuses: ``status`` is the HTTP status, the message says why.

    ``extra`` holds more JSON fields for the error body (e.g. ``field`` and
    ``limit`` of a 413), ``headers`` more response headers (``Retry-After``).
    """

    def __init__(self, status: int, message: str, extra: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra or {}
        self.headers = headers or {}


def _field_error(key: str, message: str) -> ApiError:
    """A 400 about the message field *key* (named in the body's ``field``)."""
    return ApiError(400, message, {"field": key})


def _text(obj: dict[str, Any], key: str, default: str = "", *, required: bool = False) -> str:
    value = obj.get(key, None)
    if value is None:
        if required:
            raise _field_error(key, f"'{key}' is required")
        return default
    if not isinstance(value, str):
        raise _field_error(key, f"'{key}' must be a string")
    return value


def _payload(obj: dict[str, Any]) -> bytes:
    """The payload bytes: text as UTF-8, a JSON object or array as its compact encoding, or base64."""
    text, b64 = obj.get("payload"), obj.get("payload_b64")
    if text is not None and b64 is not None:
        raise _field_error("payload", "give 'payload' (text or JSON) or 'payload_b64', not both")
    if b64 is not None:
        if not isinstance(b64, str):
            raise _field_error("payload_b64", "'payload_b64' must be a base64 string")
        try:
            return base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise _field_error("payload_b64", "'payload_b64' is not valid base64") from None
    if text is None:
        raise _field_error("payload", "'payload' (text or JSON) or 'payload_b64' is required")
    if isinstance(text, (dict, list)):
        # "send this JSON": its compact UTF-8 encoding, what a device would parse back to the same value
        try:
            return json.dumps(text, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
        except ValueError:  # 1e400 parses as inf, which JSON cannot encode
            raise _field_error("payload", "'payload' has a number JSON cannot encode (out of range)") from None
    if not isinstance(text, str):
        raise _field_error("payload", "'payload' must be a string (sent as UTF-8) or a JSON object or array "
                                      "(sent as its compact JSON); use 'payload_b64' for bytes")
    return text.encode("utf-8")  # no lone surrogates: _parse_body refused them


def _options(obj: dict[str, Any]) -> dict[str, Any]:
    """priority / ttl / collapse_key of a message, checked."""
    options: dict[str, Any] = {}
    priority = obj.get("priority", "high")
    if not isinstance(priority, str) or priority not in ("high", "low"):
        raise _field_error("priority", "'priority' must be \"high\" or \"low\"")
    options["priority"] = priority
    ttl = obj.get("ttl")
    if ttl is not None:
        # NaN fails the first comparison, infinities and huge ints the second (no float conversion).
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0 or ttl > MAX_TTL:
            raise _field_error("ttl", "'ttl' must be a number of seconds > 0 (at most ten years)")
        options["ttl"] = ttl
    options["collapse_key"] = _text(obj, "collapse_key")
    return options


def _message(obj: Any) -> tuple[str, bytes, dict[str, Any]]:
    """(device id, payload, push options) of one message object."""
    if not isinstance(obj, dict):
        raise ApiError(400, "a message must be a JSON object")
    unknown = set(obj) - _MESSAGE_KEYS
    if unknown:
        raise _field_error(sorted(unknown)[0],
                           f"unknown field(s) {sorted(unknown)}; allowed: {sorted(_MESSAGE_KEYS)}")
    device = _text(obj, "device", required=True)
    if not device:
        raise _field_error("device", "'device' must not be empty")
    options = _options(obj)
    options["topic"] = _text(obj, "topic")
    key = obj.get("idempotency_key")
    if key is not None:
        if not isinstance(key, str):
            raise ApiError(400, "'idempotency_key' must be a string")
        options["idempotency_key"] = key  # its rules are checked by the gateway (400/413)
    return device, _payload(obj), options


def _batch_item(index: int, obj: Any) -> tuple[str, bytes, dict[str, Any]]:
    """:func:`_message` of ``messages[index]``; an error names the index (and the device, when known)."""
    try:
        return _message(obj)
    except ApiError as exc:
        raise _in_batch(exc, index, obj) from None


def _in_batch(exc: ApiError, index: int, obj: Any) -> ApiError:
    """*exc* about ``messages[index]``: the message prefixed, ``index`` (and ``device``) in the body."""
    extra: dict[str, Any] = {"index": index}
    device = obj.get("device") if isinstance(obj, dict) else None
    if isinstance(device, str) and device:
        extra["device"] = device
    prefix = f"messages[{index}]: "
    message = exc.message if exc.message.startswith(prefix) else prefix + exc.message
    return ApiError(exc.status, message, {**extra, **exc.extra})


_BATCH_INDEX = re.compile(r"^messages\[(\d+)\]: ")


def _topics(obj: dict[str, Any]) -> list[str]:
    topics = obj.get("topics")
    if not isinstance(topics, list) or not topics or not all(isinstance(t, str) and t for t in topics):
        raise ApiError(400, "'topics' must be a non-empty list of non-empty strings")
    return topics


def _refuse_constant(name: str) -> Any:
    raise ApiError(400, f"the body is not valid JSON: {name} is not a JSON number")


def _parse_body(raw: bytes | None) -> Any:
    """The JSON value of a request body (None when empty); every malformed body is a 400 saying why."""
    if not raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"the body is not valid UTF-8: {exc}") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ApiError(400, "the body is not acceptable JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers beyond the int-string conversion limit
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    _check_text(value)
    return value


def _check_text(value: Any) -> None:
    """Refuse strings with lone UTF-16 surrogates (``"\\ud800"`` is valid JSON, not valid text).

    They would fail later, when the gateway encodes a device id, topic or
    payload to UTF-8 for the wire or the store. Iterative: json.loads already
    bounded the depth, and a walk must not be the one to hit the recursion limit.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings: list[str] = [item]
        elif isinstance(item, dict):
            strings = list(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for s in strings:
            if _SURROGATE.search(s):
                raise ApiError(400, "the body has a string with a lone UTF-16 surrogate "
                                    "(\\ud800-\\udfff), which is not valid Unicode text")


def _status_of(exc: BaseException) -> int:
    """413 for a size limit (:class:`pushcore.MessageTooLarge` and others with a ``limit``), else 400."""
    return 413 if hasattr(exc, "limit") else 400


def _json_response(status: int, obj: Any, *, close: bool = False,
                   extra_headers: dict[str, str] | None = None) -> web.Response:
    data = (json.dumps(obj, separators=(",", ":")) + "\n").encode("utf-8")
    headers = {"Cache-Control": "no-store", "Server": "pushcore-admin", **(extra_headers or {})}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="pushcore-admin"'
    resp = web.Response(status=status, body=data, content_type="application/json", headers=headers)
    if close:
        resp.force_close()
    return resp


def _raw_response(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 error response as bytes, for a connection no request object exists for."""
    body = (json.dumps({"error": message}, separators=(",", ":")) + "\n").encode("utf-8")
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n"
            f"Server: pushcore-admin\r\n\r\n").encode("ascii") + body


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
    timeout
        seconds a batch push waits for the gateway's loop (default 10).
    max_body
        largest request body in bytes (default 1 MiB); more is 413.
    header_timeout
        seconds for a request's headers to arrive, counted from the
        connection's opening or the end of its previous response (default 10).
    body_timeout
        seconds for the whole body to arrive, and for the response to be
        taken (default 10).
    max_connections
        connections served at once (default 1000); more are answered 503
        and closed at once.
    workers
        threads that call the gateway (default 4).
    max_header_bytes
        request line and headers together, in bytes (default 16 KiB); more
        is 431 and close.
    reuse_port
        bind with ``SO_REUSEPORT``, so several gateway processes (the workers
        of ``pushcore serve --workers``) share one admin port; the kernel
        picks the process that answers each connection.
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
        max_body: int = MAX_BODY,
        header_timeout: float = HEADER_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        workers: int = WORKERS,
        max_header_bytes: int = MAX_HEADER_BYTES,
        reuse_port: bool = False,
    ) -> None:
        if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"the admin token must be a string of at least {MIN_TOKEN_LENGTH} characters "
                f"(e.g. secrets.token_urlsafe(24))"
            )
        for name, value in (("max_body", max_body), ("max_connections", max_connections),
                            ("workers", workers), ("max_header_bytes", max_header_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name, seconds in (("header_timeout", header_timeout), ("body_timeout", body_timeout)):
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
                    or not math.isfinite(seconds) or seconds <= 0:
                raise ValueError(f"{name} must be a number of seconds > 0, got {seconds!r}")
        self.server = server
        self._token = token.encode("utf-8")
        self._host = host
        self._port = port
        self._reuse_port = reuse_port
        self.timeout = timeout
        self.max_body = max_body
        self.header_timeout = float(header_timeout)
        self.body_timeout = float(body_timeout)
        self.max_connections = max_connections
        self.workers = workers
        self.max_header_bytes = max_header_bytes
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
        self.refused = registry.counter(
            "pushcore_admin_connections_refused_total",
            "Admin API connections closed by a limit (max_connections, header_timeout, max_header_bytes).",
            labels=("reason",))
        for reason in ("max_connections", "header_timeout", "max_header_bytes"):
            self.refused.labels(reason)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._health_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._http: _Server | None = None
        self._health_check: asyncio.Future[Any] | None = None

    @property
    def address(self) -> tuple[str, int]:
        if self._sock is None:
            raise RuntimeError("the admin API is not started")
        host, port = self._sock.getsockname()[:2]
        assert isinstance(host, str)  # an AF_INET or AF_INET6 socket's address
        return host, port

    @property
    def connections(self) -> int:
        """Connections being served now (0 when not started)."""
        http = self._http
        return http.live if http is not None else 0

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def start(self) -> tuple[str, int]:
        """Listen and serve in a background thread; returns ``(host, port)``.

        Raises ``OSError`` when the address is taken or cannot be bound.
        """
        if self._sock is not None:
            raise RuntimeError("the admin API is already started")
        # Bound here, in the caller's thread, so a taken port is an OSError from start().
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self._host, self._port))
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="pushcore-admin-worker")
        self._health_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pushcore-admin-health")
        loop = self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        failed: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, args=(loop, sock, ready, failed),
                                        name="pushcore-admin", daemon=True)
        self._thread.start()
        ready.wait()
        if failed:
            self.stop()
            raise failed[0]
        return self.address

    def _serve(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, ready: threading.Event,
               failed: list[BaseException]) -> None:
        """The API's thread: its own asyncio loop, serving until :meth:`stop` stops the loop."""
        asyncio.set_event_loop(loop)
        runner: web.ServerRunner | None = None
        try:
            try:
                runner = loop.run_until_complete(self._setup(sock))
            except BaseException as exc:
                failed.append(exc)
                return
            finally:
                ready.set()
            loop.run_forever()
        finally:
            try:
                if runner is not None:
                    loop.run_until_complete(runner.cleanup())
            finally:
                loop.close()

    async def _setup(self, sock: socket.socket) -> web.ServerRunner:
        # aiohttp's server takes the running loop: made on the API's loop.
        self._http = _Server(self)
        runner = web.ServerRunner(self._http, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        return runner

    def stop(self) -> None:
        """Stop serving and close the socket. Idempotent."""
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:  # closed meanwhile
                pass
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None
        for pool in (self._pool, self._health_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._health_pool = None
        self._http = None
        self._health_check = None
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> AdminAPI:
        if self._sock is None:
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

    # -- HTTP ---------------------------------------------------------------------

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        """One request, on the API's loop: headers checked, body read under its deadline, work in a worker."""
        method = request.method
        path = request.raw_path.partition("?")[0]
        route = path
        loop = asyncio.get_running_loop()
        try:
            if path == "/healthz" or path == "/readyz":
                route = path
                if method != "GET":
                    raise ApiError(405, "use GET")
                up = await self._health()
                status, body = self._healthz(up) if path == "/healthz" else self._readyz(up)
                return self._respond(request, route, status, body)
            if path == "/servers":  # what devices fetch (pushcore.Client's HTTP server list): no token
                route = path
                if method != "GET":
                    raise ApiError(405, "use GET")
                servers = await loop.run_in_executor(self._pool, self._servers)
                return self._respond(request, route, 200, {"servers": servers})
            # Before any body byte is read: the body of a refused request is never looked at.
            self.check_auth(request.headers.get("Authorization"))
            if path == "/metrics":
                route = "/metrics"
                if method != "GET":
                    raise ApiError(405, "use GET")
                text = await loop.run_in_executor(self._pool, self.metrics.registry.render)
                self.requests.labels(route, "200").inc()
                resp = web.Response(status=200, body=text.encode("utf-8"),
                                    headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store",
                                             "Server": "pushcore-admin"})
                if not request.content.is_eof():
                    resp.force_close()
                return resp
            keys = request.headers.getall(IDEMPOTENCY_HEADER, [])
            if len(keys) > 1:
                raise ApiError(400, f"give one {IDEMPOTENCY_HEADER} header, not {len(keys)}")
            raw = await self._read_body(request)
            query = urllib.parse.parse_qs(request.query_string)
            route, status, result = await loop.run_in_executor(
                self._pool, self._work, method, path, query, raw, keys[0] if keys else None)
            return self._respond(request, route, status, result)
        except ApiError as exc:
            if exc.status >= 500 or exc.status in (401, 403, 408):
                log.info("admin API %s %s: %d %s", method, path, exc.status, exc.message)
            return self._respond(request, _route_label(route, exc.status), exc.status,
                                 {"error": exc.message, **exc.extra}, exc.headers)
        except Exception:
            log.exception("admin API %s %s failed", method, path)
            return self._respond(request, _route_label(route, 500), 500,
                                 {"error": "internal error (see the gateway's log)"})

    async def _health(self) -> bool:
        """Whether the gateway's loop answers: one check in flight, shared by every /healthz waiting.

        /healthz needs no token, so a flood of them must not become a flood of
        hand-overs to the gateway's loop, nor a queue of checks each waiting
        out a wedged loop's timeout.
        """
        pending = self._health_check
        if pending is None or pending.done():
            pending = self._health_check = asyncio.get_running_loop().run_in_executor(
                self._health_pool, self.metrics.snapshot)
        return await asyncio.shield(pending) is not None

    def _store_state(self) -> dict[str, Any] | None:
        """The store's outage as JSON fields, or None while it can write (no I/O: Store.health)."""
        health = self.server.store.health()
        if health.writable:
            return None
        return {"status": "store_unwritable", "error": health.error, "since": health.since}

    def _healthz(self, up: bool) -> tuple[int, dict[str, Any]]:
        """/healthz: the loop answers and the store can write (200 ``ok``), else 503 naming what is wrong."""
        if not up:
            return 503, {"status": "down"}
        outage = self._store_state()
        return (200, {"status": "ok"}) if outage is None else (503, outage)

    def _readyz(self, up: bool) -> tuple[int, dict[str, Any]]:
        """/readyz, for a load balancer: 200 only when listening, not draining and the store can write."""
        server = self.server
        if not up:
            return 503, {"status": "down"}
        if server.draining:
            return 503, {"status": "draining"}
        if not server.listening:
            return 503, {"status": "not_listening"}
        outage = self._store_state()
        return (200, {"status": "ready"}) if outage is None else (503, outage)

    def _respond(self, request: web.BaseRequest, route: str, status: int, obj: Any,
                 headers: dict[str, str] | None = None) -> web.Response:
        self.requests.labels(route, str(status)).inc()
        # A body left unread (refused, too large, late) leaves the connection unusable: close it.
        return _json_response(status, obj, close=not request.content.is_eof(), extra_headers=headers)

    async def _read_body(self, request: web.BaseRequest) -> bytes | None:
        """The body, at most ``max_body`` bytes, all of it within ``body_timeout`` seconds."""
        headers = request.headers
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            raise ApiError(411, "send a Content-Length (chunked bodies are not accepted)")
        length_header = headers.get("Content-Length")
        if length_header is None:
            if request.method == "POST":
                raise ApiError(411, "a POST needs a Content-Length and a JSON body")
            return None
        try:
            length = int(length_header)
        except ValueError:
            raise ApiError(400, "bad Content-Length") from None
        if length < 0:
            raise ApiError(400, "bad Content-Length")
        if length > self.max_body:
            raise ApiError(413, f"the body is {length} bytes; the limit is {self.max_body} (max_body)",
                           {"limit": self.max_body})
        if length == 0:
            return b""
        if headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            # One deadline for the whole body: aiohttp's read timeouts are per read,
            # so a byte every few seconds would otherwise hold the connection for ever.
            async with asyncio.timeout(self.body_timeout):
                return await request.content.readexactly(length)
        except TimeoutError:
            raise ApiError(408, f"the body did not arrive within {self.body_timeout:g} s "
                                f"(body_timeout)") from None
        except asyncio.IncompleteReadError:
            raise ApiError(400, "the connection ended before the body was complete") from None

    def _work(self, method: str, path: str, query: dict[str, list[str]], raw: bytes | None,
              idempotency_key: str | None = None) -> tuple[str, int, Any]:
        """In a worker thread: parse the body and serve the route (the gateway's methods block)."""
        return self.handle(method, path, query, _parse_body(raw), idempotency_key=idempotency_key)

    # -- routes -------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any, *,
               idempotency_key: str | None = None) -> tuple[str, int, Any]:
        """``(route name, status, JSON-able result)`` of one authenticated request.

        *idempotency_key* is the request's ``Idempotency-Key`` header (None: none).
        """
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        if parts[:1] != ["v1"]:
            raise ApiError(404, f"no such endpoint {path!r}")
        rest = parts[1:]
        if rest == ["push"]:
            return "/v1/push", 200, self._push(self._post(method, body), idempotency_key)
        if rest == ["push", "batch"]:
            return "/v1/push/batch", 200, self._push_batch(self._post(method, body), idempotency_key)
        if idempotency_key is not None:
            raise ApiError(400, f"the {IDEMPOTENCY_HEADER} header is honoured only by POST /v1/push and "
                                f"/v1/push/batch; this request would not be made safe to retry by it")
        if rest == ["publish"]:
            return "/v1/publish", 200, self._publish(self._post(method, body))
        if rest == ["broadcast"]:
            return "/v1/broadcast", 200, self._broadcast(self._post(method, body))
        if rest == ["devices"]:
            self._get(method)
            return "/v1/devices", 200, self._devices(query)
        if rest == ["nodes"]:
            self._get(method)
            return "/v1/nodes", 200, self._nodes()
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
            if action == "revoke":
                return "/v1/devices/<id>/revoke", 200, self._revoke(rest[1], self._post(method, body))
            if action == "disconnect":
                self._post(method, body)
                return "/v1/devices/<id>/disconnect", 200, {
                    "disconnected": self._call(self.server.disconnect, rest[1])}
        raise ApiError(404, f"no such endpoint {path!r}")

    def _revoke(self, device_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if set(body) - {"before"}:
            raise ApiError(400, f"unknown field(s) {sorted(set(body) - {'before'})}; allowed: ['before']")
        before = body.get("before")
        if before is not None and (
            not isinstance(before, (int, float)) or isinstance(before, bool) or not math.isfinite(before)
            or before < 0
        ):
            raise ApiError(400, "'before' must be Unix seconds >= 0 (or absent: now)")
        disconnected = self._call(self.server.revoke, device_id, before)
        return {"device": device_id, "revoked_before": self._call(self.server.revoked_before, device_id),
                "disconnected": disconnected}

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
        except IdempotencyConflict as exc:
            extra: dict[str, Any] = {"idempotency_key": exc.key}
            if exc.index is not None:
                extra["index"] = exc.index
            raise ApiError(409, str(exc), extra) from None
        except (ValueError, TypeError, OverflowError) as exc:
            # A size limit (MessageTooLarge has .field and .limit) is 413; any other bad value 400.
            extra = {key: getattr(exc, key) for key in ("field", "limit") if hasattr(exc, key)}
            raise ApiError(_status_of(exc), str(exc), extra) from None
        except StoreUnavailable as exc:
            # Nothing was stored: the caller may send it again once the store heals.
            retry = max(1, math.ceil(self.server.store_probe_interval))
            raise ApiError(503, f"the gateway's store cannot write: {exc.cause}; retry later",
                           {"store": "unwritable", "since": exc.since}, {"Retry-After": str(retry)}) from None
        except (RuntimeError, TimeoutError) as exc:
            raise ApiError(503, f"the gateway is not running ({exc})") from None

    def _push(self, body: dict[str, Any], header_key: str | None = None) -> dict[str, Any]:
        device, payload, options = _message(body)
        if header_key is not None:
            if options.setdefault("idempotency_key", header_key) != header_key:
                raise ApiError(400, f"the {IDEMPOTENCY_HEADER} header and 'idempotency_key' differ: give one")
        seq = self._call(lambda: self.server.push(device, payload, **options))
        self.pushes.labels("device").inc()
        return {"device": device, "seq": seq}

    def _push_batch(self, body: dict[str, Any], header_key: str | None = None) -> dict[str, Any]:
        if set(body) != {"messages"}:
            raise ApiError(400, "the body must be {\"messages\": [message, ...]}")
        items = body["messages"]
        if not isinstance(items, list) or not items:
            raise ApiError(400, "'messages' must be a non-empty list")
        if len(items) > MAX_BATCH:
            raise ApiError(413, f"at most {MAX_BATCH} messages per batch, got {len(items)}",
                           {"limit": MAX_BATCH})
        if header_key is not None:  # the header's own faults are the header's, not an item's
            if len(header_key.encode("utf-8", "surrogateescape")) > MAX_BATCH_KEY_BYTES:
                raise ApiError(413, f"the {IDEMPOTENCY_HEADER} of a batch is at most {MAX_BATCH_KEY_BYTES} bytes "
                                    f"(message i gets the key '<key>:<i>', at most {MAX_IDEMPOTENCY_KEY_BYTES})",
                               {"field": "idempotency_key", "limit": MAX_BATCH_KEY_BYTES})
            try:
                check_idempotency_key(header_key)
            except ValueError as exc:  # empty, spaces, not printable ASCII
                raise ApiError(400, f"the {IDEMPOTENCY_HEADER} header: {exc}", {"field": "idempotency_key"}) from None
        messages = [_batch_item(i, item) for i, item in enumerate(items)]  # all checked before any is sent
        if header_key is not None:
            for i, (_device, _payload_bytes, options) in enumerate(messages):
                options.setdefault("idempotency_key", f"{header_key}:{i}")
        # One hand-over to the loop, one store transaction, one delivery pass.
        try:
            results = self._call(self.server.push_batch, messages, timeout=self.timeout)
        except ApiError as exc:
            # The gateway's own checks (field limits, the device id rule) name the item as messages[i].
            found = _BATCH_INDEX.match(exc.message) if exc.status in (400, 413) else None
            if found is None or int(found.group(1)) >= len(items):
                raise
            index = int(found.group(1))
            raise _in_batch(exc, index, items[index]) from None
        # A BatchResult: seq 0 and an entry in .errors for an item whose device
        # alone failed (pushcore.gateway.results); everything else was stored.
        errors = results.errors
        self.pushes.labels("device").inc(len(results) - len(errors))
        out: dict[str, Any] = {"seqs": list(results)}
        if errors:
            out["errors"] = [
                {"index": i, "device": messages[i][0], "error": reason} for i, reason in sorted(errors.items())
            ]
        return out

    def _publish(self, body: dict[str, Any]) -> dict[str, Any]:
        allowed = {"topic", "payload", "payload_b64", "priority", "ttl", "collapse_key"}
        if set(body) - allowed:
            raise ApiError(400, f"unknown field(s) {sorted(set(body) - allowed)}")
        topic = _text(body, "topic", required=True)
        if not topic:
            raise ApiError(400, "'topic' must not be empty")
        payload, options = _payload(body), _options(body)
        result = self._call(lambda: self.server.publish(topic, payload, **options))
        self.pushes.labels("topic").inc()
        out: dict[str, Any] = {"topic": topic, "devices": int(result)}
        failed = result.failed  # a FanOut: subscribers the store refused, by device
        if failed:
            out["failed"] = {str(device): str(reason) for device, reason in failed.items()}
        return out

    def _broadcast(self, body: dict[str, Any]) -> dict[str, Any]:
        allowed = {"payload", "payload_b64", "priority", "ttl", "collapse_key", "topic", "durable"}
        if set(body) - allowed:
            raise ApiError(400, f"unknown field(s) {sorted(set(body) - allowed)}")
        durable = body.get("durable", False)
        if not isinstance(durable, bool):
            raise ApiError(400, "'durable' must be true or false")
        payload, topic, options = _payload(body), _text(body, "topic"), _options(body)
        n = self._call(lambda: self.server.broadcast(payload, durable=durable, topic=topic, **options))
        self.pushes.labels("broadcast").inc()
        out: dict[str, Any] = {"devices": int(n), "durable": durable}
        failed = getattr(n, "failed", {})
        if failed:
            out["failed"] = {str(device): str(reason) for device, reason in failed.items()}
        return out

    def _devices(self, query: dict[str, list[str]]) -> dict[str, Any]:
        result: dict[str, Any] = {"connected": self._call(self.server.device_count)}
        cluster = self.server.cluster
        if cluster is not None:  # the whole cluster: "connected" stays this node's
            try:
                nodes = cluster.nodes()
            except ConnectionError as exc:
                raise ApiError(503, str(exc)) from None
            result["cluster"] = {"connected": sum(n.connections for n in nodes), "nodes": len(nodes)}
        if query.get("list", ["0"])[-1] not in ("0", "", "false"):
            try:
                limit = int(query.get("limit", ["1000"])[-1])
            except ValueError:
                raise ApiError(400, "'limit' must be an integer") from None
            if limit < 1:
                raise ApiError(400, "'limit' must be >= 1")
            try:
                ids = sorted(cluster.online_devices() if cluster is not None else self._call(self.server.devices))
            except ConnectionError as exc:
                raise ApiError(503, str(exc)) from None
            result["devices"] = ids[:limit]
            result["truncated"] = len(ids) > limit
        return result

    def _nodes(self) -> dict[str, Any]:
        cluster = self.server.cluster
        if cluster is None:
            return {"nodes": []}
        try:
            nodes = cluster.nodes()
        except ConnectionError as exc:
            raise ApiError(503, str(exc)) from None
        return {"nodes": [{**n.info, "node": n.node_id, "host": n.host, "port": n.port,
                           "connections": n.connections, "lease_expires": n.lease_expires} for n in nodes]}

    def _servers(self) -> list[dict[str, Any]]:
        try:
            return self.server.server_list()
        except ConnectionError as exc:  # the cluster's Redis cannot be reached
            raise ApiError(503, str(exc)) from None

    def _device(self, device_id: str) -> dict[str, Any]:
        store = self.server.store
        try:
            node = self.server.where(device_id) if self.server.cluster is not None else None
            return {
                "device": device_id,
                "connected": self.server.connected(device_id) or node is not None,
                **({"node": node} if self.server.cluster is not None else {}),
                "backlog": store.backlog(device_id),
                "last_seq": store.last_seq(device_id),
                "topics": sorted(store.topics(device_id)),
            }
        except (ValueError, TypeError) as exc:
            raise ApiError(400, str(exc)) from None
        except PushcoreError as exc:  # a closed store
            raise ApiError(503, f"the gateway's store is not available ({exc})") from None


class _Refused(asyncio.Protocol):
    """A connection past ``max_connections``: a 503 and close, nothing read, no request handler made."""

    def __init__(self, api: AdminAPI) -> None:
        self.api = api

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.api.refused.labels("max_connections").inc()
        transport.write(_raw_response(503, "Service Unavailable",
                                      f"too many connections (max_connections={self.api.max_connections})"))
        # Closed at once, not after a lingering read: under a connection flood each
        # refused one must cost nothing more. The 503 is best effort (a client whose
        # request was already in flight may see a reset instead).
        transport.close()


class _Server(web.Server):
    """aiohttp's low-level server with the API's connection limit and per-connection deadlines."""

    def __init__(self, api: AdminAPI) -> None:
        self.api = api
        self.live = 0  # connections being served (on the API's loop only)
        self._handler_kwargs: dict[str, Any] = {
            # aiohttp's keep-alive timer is only a second line behind the header deadline:
            # later than it, so the deadline (with its 408 when a request had begun) decides.
            "keepalive_timeout": 2 * api.header_timeout + 1.0,
            # An unread body is not drained after the response: the connection is closed.
            "lingering_time": 0.0,
            "max_headers": MAX_HEADERS,
            "max_field_size": MAX_FIELD_SIZE,
            "max_line_size": MAX_FIELD_SIZE,
            "access_log": None,
        }
        super().__init__(api._dispatch, request_factory=self._request, **self._handler_kwargs)

    @staticmethod
    def _request(message: Any, payload: Any, protocol: web.RequestHandler, writer: Any,
                 task: asyncio.Task[None]) -> web.BaseRequest:
        # Called as aiohttp takes a parsed request off the connection's queue, before any
        # more bytes can arrive: from here they are body (or the next request), not headers.
        if isinstance(protocol, _Connection):
            protocol.headers_arrived()
        return web.BaseRequest(message, payload, protocol, writer, task, asyncio.get_running_loop())

    def __call__(self) -> web.RequestHandler:
        if self.live >= self.api.max_connections:
            return _Refused(self.api)  # type: ignore[return-value]  # asyncio takes any Protocol
        return _Connection(self, self.api, loop=asyncio.get_running_loop(), **self._handler_kwargs)

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        self.live += 1
        super().connection_made(handler, transport)

    def connection_lost(self, handler: web.RequestHandler, exc: BaseException | None = None) -> None:
        self.live -= 1
        super().connection_lost(handler, exc)


class _Connection(web.RequestHandler):
    """One connection: aiohttp's handler plus a whole-request header deadline.

    aiohttp's timeouts are per read, so a client sending a header byte at a
    time keeps a connection for ever. Here a timer runs from the connection's
    opening (and again from the end of each response) until the next
    request's headers are complete; when it fires first the connection is
    closed, with a 408 when part of a request had arrived.
    """

    def __init__(self, manager: _Server, api: AdminAPI, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.api = api
        self._deadline: asyncio.TimerHandle | None = None
        self._started = False  # a byte of the request the deadline waits for has arrived
        self._header_bytes = 0  # bytes of that request so far, while no request came out of the parser

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        deadline = self._deadline
        waiting = deadline is not None  # for a request's headers
        if deadline is not None and data and not self._started:
            # The first byte of a request: its headers have header_timeout from
            # now. Until then the deadline was the idle keep-alive time, and a
            # request begun just before it ran out must not get a 408 for it.
            self._started = True
            deadline.cancel()
            self._deadline = asyncio.get_running_loop().call_later(self.api.header_timeout, self._expire)
        super().data_received(data)
        if not waiting or self.transport is None:  # force_close() drops the transport
            return
        # No request came out of the parser: every byte since the deadline was armed is
        # request line and headers, which aiohttp buffers (about twice over) until the
        # blank line. Capped here in total, since aiohttp only caps each line. A request
        # parsed but not yet taken by the request factory (which disarms) sits in
        # aiohttp's queue: what follows it is body.
        if getattr(self, "_messages", None):
            self._header_bytes = 0
            return
        self._header_bytes += len(data)
        if self._header_bytes > self.api.max_header_bytes:
            self._disarm()
            self.api.refused.labels("max_header_bytes").inc()
            self.transport.write(_raw_response(
                431, "Request Header Fields Too Large",
                f"the request line and headers exceed {self.api.max_header_bytes} bytes (max_header_bytes)"))
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def headers_arrived(self) -> None:
        """A request's headers are in (the request handler runs): its body has its own deadline."""
        self._disarm()

    async def finish_response(self, request: web.BaseRequest, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        # The response has body_timeout to be taken by a client that may not read.
        try:
            async with asyncio.timeout(self.api.body_timeout):
                result = await super().finish_response(request, resp, start_time)
        except TimeoutError:
            self.force_close()
            return resp, True
        self._arm()  # the next request's headers have header_timeout from now
        return result

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse, as JSON with the reason."""
        self._disarm()
        if status >= 500:  # not a client's fault: _dispatch answers every error of its own
            log.error("admin API: internal error in the HTTP server", exc_info=exc)
            reason = "internal error (see the gateway's log)"
        else:
            log.debug("admin API: refused a malformed request (%d): %s", status, message or exc)
            reason = f"malformed HTTP request: {message or exc or status}"
        self.api.requests.labels("other", str(status)).inc()
        return _json_response(status, {"error": reason}, close=True)

    def _arm(self) -> None:
        self._disarm()
        self._started = False
        self._header_bytes = 0
        if self.transport is not None:
            self._deadline = asyncio.get_running_loop().call_later(self.api.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.api.refused.labels("header_timeout").inc()
        if self._started:
            transport.write(_raw_response(
                408, "Request Timeout",
                f"the request's headers did not arrive within {self.api.header_timeout:g} s (header_timeout)"))
        # else an idle connection: closed without a word, since a keep-alive client that
        # sends its next request now would read an unsolicited 408 as that request's answer.
        self.force_close()


_ROUTES = (
    ("/healthz", re.compile(r"^/healthz$")),
    ("/readyz", re.compile(r"^/readyz$")),
    ("/servers", re.compile(r"^/servers$")),
    ("/metrics", re.compile(r"^/metrics$")),
    ("/v1/push", re.compile(r"^/v1/push/?$")),
    ("/v1/push/batch", re.compile(r"^/v1/push/batch/?$")),
    ("/v1/publish", re.compile(r"^/v1/publish/?$")),
    ("/v1/broadcast", re.compile(r"^/v1/broadcast/?$")),
    ("/v1/devices", re.compile(r"^/v1/devices/?$")),
    ("/v1/nodes", re.compile(r"^/v1/nodes/?$")),
    ("/v1/devices/<id>", re.compile(r"^/v1/devices/[^/]+/?$")),
    ("/v1/devices/<id>/subscribe", re.compile(r"^/v1/devices/[^/]+/subscribe/?$")),
    ("/v1/devices/<id>/unsubscribe", re.compile(r"^/v1/devices/[^/]+/unsubscribe/?$")),
    ("/v1/devices/<id>/disconnect", re.compile(r"^/v1/devices/[^/]+/disconnect/?$")),
    ("/v1/devices/<id>/revoke", re.compile(r"^/v1/devices/[^/]+/revoke/?$")),
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

"""A small client of the admin HTTP API (:mod:`pushcore.admin.api`), used by ``pushcore push``.

One keep-alive HTTP/1.1 connection, reopened when the gateway closed it.
Errors are :class:`AdminError` with the HTTP status (0 when the API could
not be reached) and a message meant for the person at the terminal.

Retries. A connection that drops before the answer leaves the caller not
knowing whether the gateway did the work. So a request is sent again (up
to *retries* times, on a new connection) only when that is safe: a GET, or
a push carrying an idempotency key, which the gateway answers with the
original seq instead of storing the message twice. :meth:`AdminClient.push`
and :meth:`AdminClient.push_batch` send a random key (a UUID) with each
call by default; with ``idempotency_keys=False`` and no key of the caller's
they are never re-sent, and a dropped connection is an error saying the
message may have been stored. Other POSTs (publish, broadcast, subscribe …)
are never re-sent. The same goes for an answer of 502, 503 or 504 (a proxy
in front, or a gateway whose store cannot write, said "not now": a proxy
may have passed the request on), waiting its ``Retry-After`` (at most 2 s);
when the last try gets one, ``AdminError.idempotency_key`` names the key to
retry with. A kept-alive connection the gateway closed while idle
is noticed before a request is written, and replaced.
"""
from __future__ import annotations

import base64
import http.client
import json
import select
import socket
import threading
import time
import urllib.parse
import uuid
from typing import Any

from ..errors import PushcoreError

__all__ = ["AdminClient", "AdminError"]


#: Answers after which a safe request (a GET, or one with an idempotency key) is sent again.
_RETRY_STATUSES = (502, 503, 504)
_MAX_RETRY_WAIT = 2.0  # seconds: a long Retry-After is the caller's decision, not a hidden sleep


def _retry_after(header: str | None, default: float) -> float:
    """Seconds to wait before the next try: the answer's ``Retry-After`` (seconds), capped."""
    try:
        wait = float(header) if header is not None else default
    except ValueError:
        wait = default
    return min(max(wait, 0.0), _MAX_RETRY_WAIT) if wait == wait else default


class AdminError(PushcoreError):
    """The admin API refused a request (``status``: the HTTP status) or could not be reached (0).

    ``idempotency_key`` is set (to the key the request carried) when no
    answer came although the request may have been carried out: sending it
    again with that key is safe. None otherwise. ``body`` is the decoded JSON
    answer of an HTTP error (e.g. ``{"error", "field", "index"}``, or
    ``{"status": "store_unwritable", ...}`` from ``/healthz``), None when
    there was none.
    """

    def __init__(self, status: int, message: str, idempotency_key: str | None = None,
                 body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.idempotency_key = idempotency_key
        self.body = body


class AdminClient:
    """Talks to the admin API at *url* (``http://host:port``) with the admin *token*.

    *idempotency_keys* (default True): every push carries a fresh
    ``Idempotency-Key``, so it may be re-sent after a dropped connection.
    *retries*: how many times such a request is re-sent (default 2), after
    *retry_delay* seconds, then twice that, … (the first retry goes at once).
    """

    def __init__(self, url: str, token: str, *, timeout: float = 30.0, idempotency_keys: bool = True,
                 retries: int = 2, retry_delay: float = 0.2) -> None:
        parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"admin URL {url!r}: use http://HOST:PORT (e.g. http://127.0.0.1:8222)")
        try:
            port = parts.port or 80
        except ValueError:
            raise ValueError(f"admin URL {url!r}: the port is not a number in 1..65535") from None
        if not token:
            raise ValueError("no admin token: pass --admin-token or set PUSHCORE_ADMIN_TOKEN")
        self.url = f"http://{parts.netloc}"
        self.host, self.port = parts.hostname, port
        self.token = token
        self.timeout = timeout
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        if not isinstance(retry_delay, (int, float)) or not retry_delay >= 0:
            raise ValueError(f"retry_delay must be seconds >= 0, got {retry_delay!r}")
        self.idempotency_keys = idempotency_keys
        self.retries = retries
        self.retry_delay = float(retry_delay)
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests -------------------------------------------------------------------------

    def new_key(self) -> str | None:
        """A fresh idempotency key for one call, or None when this client sends none."""
        return uuid.uuid4().hex if self.idempotency_keys else None

    def _reusable(self) -> http.client.HTTPConnection:
        """The kept-alive connection, or a new one if the gateway closed it while it was idle."""
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                readable = select.select([conn.sock], [], [], 0)[0]
            except (OSError, ValueError):
                readable = [conn.sock]
            if readable:  # end of file (or stray bytes): nothing was sent on it yet, so replace it
                conn.close()
                conn = None
        if conn is None:
            conn = self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return conn

    def request(self, method: str, path: str, body: Any = None, *, auth: bool = True,
                idempotency_key: str | None = None) -> tuple[int, Any]:
        """``(status, decoded body)``; raises :class:`AdminError` for errors and unreachable APIs.

        A GET, or a request with an *idempotency_key* (sent as the
        ``Idempotency-Key`` header), is re-sent after a dropped connection
        (see the module doc); any other request is sent once.
        """
        data = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        if data is not None:
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        safe = method in ("GET", "HEAD") or idempotency_key is not None
        attempts = 1 + self.retries if safe else 1
        with self._lock:
            for attempt in range(1, attempts + 1):
                if attempt > 2:  # the first retry goes at once (a kept-alive connection's race)
                    time.sleep(self.retry_delay * 2 ** (attempt - 3))
                conn = self._reusable()
                try:
                    conn.request(method, path, body=data, headers=headers)
                    resp = conn.getresponse()
                    raw = resp.read()
                    if resp.status in _RETRY_STATUSES and safe and attempt < attempts:
                        # A proxy in front (502/504) or the gateway itself (503: its store
                        # cannot write, or it is not running) said "not now"; a proxy may
                        # have passed the request on, so only a safe request goes again.
                        time.sleep(_retry_after(resp.getheader("Retry-After"), self.retry_delay))
                        continue
                    break
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                    # Dropped before the answer: the gateway may or may not have done it.
                    conn.close()
                    self._conn = None
                    if attempt == attempts:
                        why = f"the admin API at {self.url} closed the connection before answering: {exc}"
                        if not safe:
                            why += (" (the request may have been carried out; it is not re-sent without "
                                    "an idempotency key)")
                        elif idempotency_key is not None:
                            why += (f" (sent {attempts} times with idempotency key {idempotency_key}; it may "
                                    f"have been carried out)")
                        raise AdminError(0, why, idempotency_key) from None
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    self._conn = None
                    why = "nothing listens there" if isinstance(exc, ConnectionRefusedError) else str(exc)
                    if isinstance(exc, socket.timeout):
                        why = f"no answer within {self.timeout} s"
                    unsure = attempt > 1 or isinstance(exc, socket.timeout)  # it may have been carried out
                    if attempt > 1:
                        why += " (an earlier try was cut off before the answer: it may have been carried out)"
                    raise AdminError(0, f"cannot reach the admin API at {self.url}: {why}",
                                     idempotency_key if unsure else None) from None
            if self._conn is not None and resp.getheader("Connection", "").lower() == "close":
                self._conn.close()
                self._conn = None
        ctype = resp.getheader("Content-Type", "")
        decoded: Any = raw.decode("utf-8", "replace")
        if ctype.startswith("application/json"):
            try:
                decoded = json.loads(raw)
            except ValueError:
                pass
        if resp.status >= 400:
            message = decoded.get("error") if isinstance(decoded, dict) else str(decoded)
            if resp.status == 401:
                message = f"{message} (give the gateway's admin token with --admin-token or PUSHCORE_ADMIN_TOKEN)"
            elif resp.status == 403:
                message = f"{message}: the admin token does not match the gateway's"
            unsure = resp.status in _RETRY_STATUSES and idempotency_key is not None
            raise AdminError(resp.status, f"HTTP {resp.status}: {message}", idempotency_key if unsure else None,
                             body=decoded if isinstance(decoded, dict) else None)
        return resp.status, decoded

    @staticmethod
    def message(payload: bytes | str | dict[str, Any] | list[Any], **options: Any) -> dict[str, Any]:
        """A message object of the API: text payloads as ``payload``, other bytes as ``payload_b64``.

        A dict or list goes as a JSON value; the gateway sends its compact UTF-8 encoding.
        """
        out = {k: v for k, v in options.items() if v is not None and v != ""}
        if isinstance(payload, (str, dict, list)):
            out["payload"] = payload
        else:
            try:
                out["payload"] = bytes(payload).decode("utf-8")
            except UnicodeDecodeError:
                out["payload_b64"] = base64.b64encode(bytes(payload)).decode("ascii")
        return out

    def push(self, device: str, payload: bytes | str | dict[str, Any] | list[Any], *, idempotency_key: str | None = None,
             **options: Any) -> int:
        """One message to *device*; returns its seq.

        Sent with *idempotency_key*, or a fresh one (:meth:`new_key`): a retry
        after a dropped connection then stores it once. Reuse a key of your
        own to make your own retries (e.g. of a whole job) safe too.
        """
        key = idempotency_key if idempotency_key is not None else self.new_key()
        body = {"device": device, **self.message(payload, **options)}
        seq: int = self.request("POST", "/v1/push", body, idempotency_key=key)[1]["seq"]
        return seq

    def push_batch(self, messages: list[dict[str, Any]], *, idempotency_key: str | None = None) -> list[int]:
        """Several message objects (with ``device``) in one request; returns their seqs.

        The request's key K (*idempotency_key*, or a fresh one) gives message
        *i* the key ``K:i`` unless it has an ``idempotency_key`` of its own.
        """
        key = idempotency_key if idempotency_key is not None else self.new_key()
        seqs: list[int] = self.request("POST", "/v1/push/batch", {"messages": messages},
                                       idempotency_key=key)[1]["seqs"]
        return seqs

    def publish(self, topic: str, payload: bytes | str | dict[str, Any] | list[Any], **options: Any) -> int:
        body = {"topic": topic, **self.message(payload, **options)}
        devices: int = self.request("POST", "/v1/publish", body)[1]["devices"]
        return devices

    def broadcast(self, payload: bytes | str | dict[str, Any] | list[Any], durable: bool = False, **options: Any) -> int:
        body = {**self.message(payload, **options), "durable": durable}
        devices: int = self.request("POST", "/v1/broadcast", body)[1]["devices"]
        return devices

    def revoke(self, device_id: str, before: float | None = None) -> dict[str, Any]:
        """Refuse *device_id*'s tokens issued before *before* (Unix seconds, default now); closes its connection."""
        body = {} if before is None else {"before": before}
        path = "/v1/devices/" + urllib.parse.quote(device_id, safe="") + "/revoke"
        result: dict[str, Any] = self.request("POST", path, body)[1]
        return result

    def device(self, device_id: str) -> dict[str, Any]:
        info: dict[str, Any] = self.request("GET", "/v1/devices/" + urllib.parse.quote(device_id, safe=""))[1]
        return info

    def devices(self, list_ids: bool = False, limit: int = 1000) -> dict[str, Any]:
        path = f"/v1/devices?list=1&limit={limit}" if list_ids else "/v1/devices"
        info: dict[str, Any] = self.request("GET", path)[1]
        return info

    def metrics(self) -> str:
        text: str = self.request("GET", "/metrics")[1]
        return text

    def healthz(self) -> dict[str, Any]:
        """``/healthz``: ``{"status": "ok"}``, or the 503 answer as sent (``down``, ``store_unwritable`` with ``error``, ``since``)."""
        return self._probe("/healthz")

    def readyz(self) -> dict[str, Any]:
        """``/readyz``: ``{"status": "ready"}``, or the 503 answer (``down``, ``draining``, ``not_listening``, ``store_unwritable``)."""
        return self._probe("/readyz")

    def _probe(self, path: str) -> dict[str, Any]:
        try:
            health: dict[str, Any] = self.request("GET", path, auth=False)[1]
            return health
        except AdminError as exc:
            if exc.status == 503:
                return exc.body if exc.body and "status" in exc.body else {"status": "down"}
            raise

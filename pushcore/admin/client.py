"""A small client of the admin HTTP API (:mod:`pushcore.admin.api`), used by ``pushcore push``.

One keep-alive HTTP/1.1 connection, reopened when the gateway closed it.
Errors are :class:`AdminError` with the HTTP status (0 when the API could
not be reached) and a message meant for the person at the terminal.
"""
from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import urllib.parse
from typing import Any

from ..errors import PushcoreError

__all__ = ["AdminClient", "AdminError"]


class AdminError(PushcoreError):
    """The admin API refused a request (``status``: the HTTP status) or could not be reached (0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class AdminClient:
    """Talks to the admin API at *url* (``http://host:port``) with the admin *token*."""

    def __init__(self, url: str, token: str, *, timeout: float = 30.0) -> None:
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

    def request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> tuple[int, Any]:
        """``(status, decoded body)``; raises :class:`AdminError` for errors and unreachable APIs."""
        data = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        if data is not None:
            headers["Content-Type"] = "application/json"
        with self._lock:
            for attempt in (1, 2):
                if self._conn is None:
                    self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                try:
                    self._conn.request(method, path, body=data, headers=headers)
                    resp = self._conn.getresponse()
                    raw = resp.read()
                    break
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                    # a kept-alive connection the server closed meanwhile: retry once on a fresh one
                    self._conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise AdminError(0, f"the admin API at {self.url} closed the connection: {exc}") from None
                except (OSError, http.client.HTTPException) as exc:
                    self._conn.close()
                    self._conn = None
                    why = "nothing listens there" if isinstance(exc, ConnectionRefusedError) else str(exc)
                    if isinstance(exc, socket.timeout):
                        why = f"no answer within {self.timeout} s"
                    raise AdminError(0, f"cannot reach the admin API at {self.url}: {why}") from None
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
            raise AdminError(resp.status, f"HTTP {resp.status}: {message}")
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

    def push(self, device: str, payload: bytes | str | dict[str, Any] | list[Any], **options: Any) -> int:
        """One message to *device*; returns its seq."""
        seq: int = self.request("POST", "/v1/push", {"device": device, **self.message(payload, **options)})[1]["seq"]
        return seq

    def push_batch(self, messages: list[dict[str, Any]]) -> list[int]:
        """Several message objects (with ``device``) in one request; returns their seqs."""
        seqs: list[int] = self.request("POST", "/v1/push/batch", {"messages": messages})[1]["seqs"]
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
        try:
            health: dict[str, Any] = self.request("GET", "/healthz", auth=False)[1]
            return health
        except AdminError as exc:
            if exc.status == 503:
                return {"status": "down"}
            raise

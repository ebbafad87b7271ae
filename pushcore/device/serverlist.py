"""Where a device connects: parse, fetch (HTTP, sorted by load), resolve, fall back.

Client-side load balancing as in the published design: the client gets a
list of gateways sorted by load — from its configuration, from an HTTP
endpoint, or from a REDIRECT / GOAWAY frame — and, when fetching the list or
resolving the names fails (a broken DNS is common on mobile networks), falls
back to a built-in list of addresses.

Entries are ``(host, port)`` tuples, ``"host:port"`` strings (``"[::1]:5222"``
for IPv6), or ``(host, port, load)`` tuples.

The HTTP endpoint returns JSON, one of::

    [{"host": "10.0.0.7", "port": 5222, "load": 12}, ...]
    {"servers": [ ...the same... ]}
    ["10.0.0.7:5222", ...]

Entries are sorted by ascending ``load`` (stable: equal loads keep the
server's order); a missing load counts as 0.

These functions block (HTTP, DNS); :class:`pushcore.Client` runs them in a
worker thread so the connection loop never waits on them.
"""
from __future__ import annotations

import ipaddress
import json
import socket
import urllib.request
from collections.abc import Iterable
from typing import Any

__all__ = [
    "ServerListError",
    "parse_server",
    "parse_servers",
    "fetch_servers",
    "resolve_servers",
    "is_ip_literal",
]

Address = tuple[str, int]
# What parse_server accepts: "host:port", a {"host", "port", "load"} object, (host, port[, load]).
ServerEntry = str | dict[str, Any] | Iterable[Any]


class ServerListError(Exception):
    """A server list could not be parsed, fetched or resolved."""


def parse_server(entry: ServerEntry) -> tuple[str, int, int]:
    """``(host, port, load)`` from a ``"host:port"`` string or a 2/3-tuple or a JSON object."""
    if isinstance(entry, str):
        host, sep, port = entry.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ServerListError(f"server {entry!r} is not 'host:port'")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        return _checked(host, int(port), 0, entry)
    if isinstance(entry, dict):
        try:
            return _checked(str(entry["host"]), int(entry["port"]), int(entry.get("load", 0)), entry)
        except (KeyError, TypeError, ValueError):
            raise ServerListError(f"server {entry!r} needs a 'host' and an integer 'port'") from None
    try:
        items = tuple(entry)
    except TypeError:
        raise ServerListError(f"server {entry!r} is not 'host:port' or (host, port)") from None
    if len(items) not in (2, 3):
        raise ServerListError(f"server {entry!r} is not (host, port) or (host, port, load)")
    host, port = items[0], items[1]
    load = items[2] if len(items) == 3 else 0
    try:
        return _checked(str(host), int(port), int(load), entry)
    except (TypeError, ValueError):
        raise ServerListError(f"server {entry!r} has a non-integer port or load") from None


def _checked(host: str, port: int, load: int, entry: object) -> tuple[str, int, int]:
    if not host:
        raise ServerListError(f"server {entry!r} has an empty host")
    if not 0 < port <= 65535:
        raise ServerListError(f"server {entry!r} has port {port}, not 1..65535")
    return host, port, load


def parse_servers(entries: Iterable[ServerEntry] | bytes, *, sort_by_load: bool = True) -> list[Address]:
    """``[(host, port), ...]`` from *entries*, sorted by load (stable), duplicates dropped."""
    if isinstance(entries, (str, bytes)):
        entries = [e for e in str(entries).replace(",", " ").split() if e]
    parsed = [parse_server(e) for e in entries]
    if sort_by_load:
        parsed.sort(key=lambda s: s[2])
    return list(dict.fromkeys((host, port) for host, port, _load in parsed))


def fetch_servers(url: str, timeout: float = 5.0) -> list[Address]:
    """GET *url* and return its JSON server list sorted by load (module doc for the formats)."""
    if not url.startswith(("http://", "https://")):
        raise ServerListError(f"server list URL {url!r} must start with http:// or https://")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read(1 << 20)
    except (OSError, ValueError) as exc:
        raise ServerListError(f"could not fetch the server list from {url}: {exc}") from exc
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise ServerListError(f"the server list at {url} is not JSON: {exc}") from exc
    if isinstance(document, dict):
        document = document.get("servers")
    if not isinstance(document, list):
        raise ServerListError(f"the server list at {url} is not a JSON list (or {{'servers': [...]}})")
    servers = parse_servers(document)
    if not servers:
        raise ServerListError(f"the server list at {url} is empty")
    return servers


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve_servers(servers: Iterable[Address]) -> list[Address]:
    """Replace host names by their addresses (IPv4 first), keeping the order; drop what fails.

    IP literals pass through without a lookup. Raises :class:`ServerListError`
    when nothing resolves.
    """
    out: list[Address] = []
    errors = []
    for host, port in servers:
        if is_ip_literal(host):
            out.append((host, port))
            continue
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:  # UnicodeError: a malformed name (empty label)
            errors.append(f"{host}: {exc}")
            continue
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        for info in infos[:1]:
            out.append((str(info[4][0]), port))  # AF_INET/AF_INET6: the host is a str
    out = list(dict.fromkeys(out))
    if not out:
        raise ServerListError("no server name resolved: " + "; ".join(errors or ["empty list"]))
    return out

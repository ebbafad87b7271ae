"""``pushcore serve``: a gateway on the SQLite store, with the admin HTTP API.

The gateway runs in the main thread (SIGTERM or Ctrl-C drain it: every
device gets GOAWAY and reconnects elsewhere or later; nothing stored is
lost); the admin API runs in a background thread on its own port, bound to
127.0.0.1 unless told otherwise.

On the first start in a directory it creates two private files: the device
token secret (``pushcore.secret``, read by ``pushcore simulate``) and the
admin token (``pushcore.admin-token``, read by ``pushcore push``).

``--workers N`` (N > 1, or ``auto``: one per core) runs N worker processes
on one device port and one admin port (``SO_REUSEPORT``) under a
:class:`pushcore.cluster.Supervisor`, which restarts a worker that dies and
drains them all on SIGTERM. It needs a store the workers share; SQLite and
memory are refused. :func:`build_worker` makes one worker's Server and admin
API from the command line: the one place a worker is put together.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..loop.limits import (
    DEFAULT_CONNECT_RATE,
    DEFAULT_OUTBOUND_BUDGET,
    DEFAULT_PREAUTH_BUDGET,
    DEFAULT_PREAUTH_FRAME_MAX,
    DEFAULT_SOURCE_CONNECT_RATE,
)
from .common import (
    DEFAULT_SECRET_FILE,
    DEFAULT_TOKEN_FILE,
    CommandError,
    bind_error,
    load_admin_token,
    load_secret,
    raise_fd_limit,
)
from .flags import float_in, int_in, port, store_target

if TYPE_CHECKING:
    from ..admin.api import AdminAPI
    from ..cluster.supervisor import WorkerInfo
    from ..gateway.server import Server

__all__ = ["add_arguments", "build_worker", "run", "DEFAULT_PORT"]

DEFAULT_PORT = 5222


def _heartbeat(text: str) -> tuple[float, float]:
    low, sep, high = text.partition(":")
    try:
        bounds = (float(low), float(high)) if sep else None
    except ValueError:
        bounds = None
    if bounds is None or not 0 <= bounds[0] <= bounds[1] <= 86400 or bounds[1] <= 0:
        raise argparse.ArgumentTypeError(f"must be MIN:MAX seconds with 0 <= MIN <= MAX <= 86400, MAX > 0 "
                                         f"(e.g. 30:600), got {text!r}")
    return bounds


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_SIZE_MAX = 1 << 40  # 1024G: more than any budget can mean, and far inside the loop's int64


def _size(text: str) -> int:
    """Bytes from ``2048``, ``16M``, ``256MiB``, ``1G`` (binary units); 0 .. 1024G."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in ("K", "M", "G") else ""
    number = t[: len(t) - len(unit)]
    ok = number.isascii() and number.isdigit() and len(number) <= 16
    if not ok or int(number) * _SIZE_UNITS[unit] > _SIZE_MAX:
        raise argparse.ArgumentTypeError(f"must be a byte count up to 1024G, e.g. 2048, 64K, 16M, 1G, "
                                         f"got {text!r}")
    return int(number) * _SIZE_UNITS[unit]


def _frame_size(text: str) -> int:
    value = _size(text)
    if not 1 <= value <= 1 << 31:
        raise argparse.ArgumentTypeError(f"must be a frame size of 1 byte .. 2G, got {text!r}")
    return value


_burst = float_in(lambda v: 1 <= v < math.inf, "a number of connections >= 1")
_seconds = float_in(lambda v: 0 < v <= 86400, "seconds > 0, at most 86400")
_grace = float_in(lambda v: 0 <= v <= 86400, ">= 0 seconds, at most 86400")
_rate = float_in(lambda v: 0 <= v < math.inf, "connections a second >= 0 (0 = no limit)")
_MAX_WORKERS = 1024


def _workers(text: str) -> int:
    """``auto`` (one per core) or a number of worker processes, 1 .. 1024."""
    if text.strip().lower() == "auto":
        return os.cpu_count() or 1
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if not 1 <= value <= _MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be a number of worker processes in 1..{_MAX_WORKERS}, or auto "
                                         f"(one per core), got {text!r}")
    return value


def _shared_store(target: str) -> bool:
    """True when every worker process opening *target* sees the same store (not SQLite, not memory)."""
    from ..store import parse_store_target

    return parse_store_target(target)[0] not in ("memory", "sqlite")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..admin.api import DEFAULT_ADMIN_PORT

    g = parser.add_argument_group("gateway")
    g.add_argument("--host", default="127.0.0.1", help="address devices connect to (default 127.0.0.1; 0.0.0.0 for all)")
    g.add_argument("--port", type=port, default=DEFAULT_PORT,
                   help=f"device port (default {DEFAULT_PORT}; 0 = any free port)")
    g.add_argument("--store", type=store_target, default="pushcore.db", metavar="STORE",
                   help="offline store: memory, or a SQLite file: PATH.db, sqlite:PATH, ./NAME "
                        "(default pushcore.db; docs/OPERATIONS.md)")
    g.add_argument("--idempotency-window", type=float_in(lambda v: 0 < v <= 366 * 86400,
                                                         "seconds > 0, at most 366 days"),
                   default=24 * 3600.0, metavar="SECONDS",
                   help="how long the store remembers a push's idempotency key (default 86400: 24 h; "
                        "each key is one row until then)")
    g.add_argument("--secret-file", default=DEFAULT_SECRET_FILE,
                   help=f"device token secret, hex (default {DEFAULT_SECRET_FILE}, created if missing; "
                        f"$PUSHCORE_SECRET wins)")
    g.add_argument("--heartbeat", type=_heartbeat, default=(30.0, 600.0), metavar="MIN:MAX",
                   help="heartbeat bounds granted to devices, seconds (default 30:600)")
    g.add_argument("--idle-grace", type=_grace, default=30.0, metavar="SECONDS",
                   help="a device silent for MAX + this many seconds is closed (default 30)")
    g.add_argument("--auth-timeout", type=_seconds, default=10.0, metavar="SECONDS",
                   help="a new connection must send its HELLO within this (default 10)")
    lim = parser.add_argument_group("abuse limits (docs/SECURITY.md)")
    lim.add_argument("--preauth-frame-max", type=_frame_size, default=DEFAULT_PREAUTH_FRAME_MAX, metavar="BYTES",
                     help=f"largest frame (the HELLO) before authentication (default {DEFAULT_PREAUTH_FRAME_MAX})")
    lim.add_argument("--preauth-budget", type=_size, default=DEFAULT_PREAUTH_BUDGET, metavar="BYTES",
                     help="buffer bytes all unauthenticated connections may hold together; past it new "
                          "connections get ERROR OVERLOADED (default 16M; 0 = no budget)")
    lim.add_argument("--outbound-budget", type=_size, default=DEFAULT_OUTBOUND_BUDGET, metavar="BYTES",
                     help="bytes queued for all devices together; past it the largest queues are closed "
                          "SLOW_CONSUMER (default 256M; 0 = no budget)")
    lim.add_argument("--connect-rate", type=_rate, default=DEFAULT_CONNECT_RATE, metavar="PER_SECOND",
                     help=f"new connections a second, all sources (default {DEFAULT_CONNECT_RATE:g}; 0 = no limit)")
    lim.add_argument("--connect-burst", type=_burst, default=None, metavar="N",
                     help="connections accepted at once above --connect-rate (default: one second's worth)")
    lim.add_argument("--source-connect-rate", type=_rate, default=DEFAULT_SOURCE_CONNECT_RATE,
                     metavar="PER_SECOND",
                     help=f"new connections a second from one IPv4 address or IPv6 /64 (default "
                          f"{DEFAULT_SOURCE_CONNECT_RATE:g}; 0 = no limit; loopback is not counted; "
                          f"set 0 behind a proxy or load balancer)")
    lim.add_argument("--source-connect-burst", type=_burst, default=None, metavar="N",
                     help="connections accepted at once from one source (default: one second's worth)")
    g.add_argument("--reuse-port", action="store_true",
                   help="SO_REUSEPORT: several gateway processes on one port (needs a Redis store; --workers "
                        "does it for you)")
    c = parser.add_argument_group("cluster (with --store redis://...; docs/CLUSTER.md)")
    c.add_argument("--advertise", default=None, metavar="HOST",
                   help="the address other nodes' server lists and redirects give devices for this gateway "
                        "(default: --host; needed when --host is 0.0.0.0)")
    c.add_argument("--overload-connections", type=int_in(1, 10**9, "a number of connections >= 1"), default=None,
                   metavar="N", help="past N connections a node sends new devices to less loaded nodes, or "
                                     "answers them late when none has room (default: no limit)")
    c.add_argument("--no-cluster", action="store_true",
                   help="on a Redis store, do not join the cluster (one gateway, no routing between processes)")
    g.add_argument("--workers", type=_workers, default=None, metavar="N|auto",
                   help="worker processes on the one port, each with its own loop, restarted when one dies "
                        "(auto: one per core; default 1; more than 1 needs a shared store, docs/OPERATIONS.md)")
    a = parser.add_argument_group("admin API")
    a.add_argument("--admin-host", default="127.0.0.1", help="admin API address (default 127.0.0.1)")
    a.add_argument("--admin-port", type=port, default=DEFAULT_ADMIN_PORT,
                   help=f"admin API port (default {DEFAULT_ADMIN_PORT}; 0 = any free port)")
    a.add_argument("--no-admin", action="store_true", help="do not start the admin API")
    a.add_argument("--admin-token", default=None,
                   help="admin token (default: $PUSHCORE_ADMIN_TOKEN, else the token file)")
    a.add_argument("--admin-token-file", default=DEFAULT_TOKEN_FILE,
                   help=f"where the admin token is kept (default {DEFAULT_TOKEN_FILE}, created if missing)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class _Credentials:
    """The secrets every worker serves with, read (or created) once, before any worker starts."""

    secret: bytes
    secret_from: str
    token: str | None
    token_from: str


def _credentials(args: argparse.Namespace) -> _Credentials:
    secret, secret_from = load_secret(args.secret_file, create=True)
    token, token_from = None, ""
    if not args.no_admin:
        token, token_from = load_admin_token(args.admin_token, args.admin_token_file, create=True)
        if len(token) < 16:
            raise CommandError(f"the admin token from {token_from} is shorter than 16 characters")
    return _Credentials(secret, secret_from, token, token_from)


def build_worker(args: argparse.Namespace, creds: _Credentials,
                 info: WorkerInfo | None = None) -> tuple[Server, AdminAPI | None]:
    """One gateway's Server and admin API (not started) from the command line.

    *info* is the worker's :class:`pushcore.cluster.WorkerInfo` under
    ``--workers``: its Server and admin API then bind the ports the
    supervisor reserved, with ``SO_REUSEPORT``. Without it, the single
    process of ``pushcore serve``. Opens the store (``CommandError`` if it
    cannot).
    """
    from ..admin.api import AdminAPI
    from ..gateway.server import Server
    from ..store import StoreError, open_store

    try:
        store = open_store(args.store, idempotency_window=args.idempotency_window)
    except (StoreError, OSError, ValueError) as exc:
        raise CommandError(f"--store {args.store}: {exc}") from None
    cluster = None
    if store.__class__.__name__ == "RedisStore" and not args.no_cluster:
        cluster = _cluster_link(args, store, info)
    elif info is not None:
        raise CommandError("--workers needs the cluster (a Redis store, without --no-cluster)")
    server = Server(args.host if info is None else info.host, args.port if info is None else info.port,
                    cluster=cluster,
                    secret=creds.secret, store=store, heartbeat=args.heartbeat,
                    idle_grace=args.idle_grace, reuse_port=args.reuse_port or info is not None,
                    auth_timeout=args.auth_timeout,
                    preauth_frame_max=args.preauth_frame_max, preauth_budget=args.preauth_budget,
                    outbound_budget=args.outbound_budget, connect_rate=args.connect_rate,
                    connect_burst=args.connect_burst, source_connect_rate=args.source_connect_rate,
                    source_connect_burst=args.source_connect_burst)
    admin = None
    if creds.token is not None:
        admin = AdminAPI(server, creds.token, host=args.admin_host,
                         port=args.admin_port if info is None else info.ports["admin"],
                         reuse_port=info is not None)
    return server, admin


def _cluster_link(args: argparse.Namespace, store: Any, info: WorkerInfo | None) -> Any:
    """The ClusterLink of this gateway (or worker) on the Redis of its store, same keyspace."""
    from ..cluster.link import ClusterLink

    host = args.advertise or (args.host if info is None else info.host)
    if host in ("0.0.0.0", "::", ""):
        raise CommandError("--host listens on every address: say with --advertise HOST which one devices "
                           "should be sent to (server lists, redirects)")
    port = args.port if info is None else info.port
    suffix = "" if info is None else f"-w{info.index}"
    node_id = f"{socket.gethostname()}-{port}{suffix}-{os.getpid()}"
    return ClusterLink(store.url, node_id=node_id, address=(host, port) if port else None,
                       prefix=store.prefix, partitions=store.partitions,
                       overload_connections=args.overload_connections)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workers = args.workers
    shared = _shared_store(args.store)
    if workers is None:
        workers = 1 if not shared else os.cpu_count() or 1
    if workers > 1 and not shared:
        raise CommandError(
            f"--workers {workers}: several workers need a shared store and routing between them: "
            f"--store redis://HOST:PORT/DB (--store {args.store} is "
            f"{'memory' if args.store.startswith('memory') else 'a SQLite file'}: each worker would only "
            f"deliver to its own devices)")
    if args.reuse_port and not shared:
        # Several processes on one port and one SQLite file would store each other's pushes
        # without delivering them to the devices connected to the others.
        raise CommandError(
            f"--reuse-port: several gateway processes on one port need a shared store and routing between "
            f"them: --store redis://HOST:PORT/DB (docs/CLUSTER.md); with --store {args.store} a push through "
            f"one process would not reach the devices connected to another")
    creds = _credentials(args)
    limit = raise_fd_limit(64, "the gateway")
    if workers > 1:
        return _run_workers(args, creds, workers, limit)
    return _run_single(args, creds, limit)


def _run_single(args: argparse.Namespace, creds: _Credentials, limit: int) -> int:
    """One process: the gateway in the main thread, the admin API in a thread."""
    out = sys.stderr
    server, admin = build_worker(args, creds)
    store = server.store
    if admin is not None:
        # the admin port first: it only binds a socket, so a failure leaves nothing to undo
        try:
            admin.start()
        except OSError as exc:
            store.close()
            raise bind_error(exc, args.admin_host, args.admin_port, "admin API", "--admin-port") from None
    try:
        try:
            host, port = server.listen()
        except OSError as exc:
            store.close()
            server.loop.close()
            raise bind_error(exc, args.host, args.port, "gateway", "--port") from None
        def banner() -> None:  # once SIGTERM / SIGINT drain: whoever reads it may signal at once
            print(f"pushcore gateway listening on {host}:{port} (store {args.store}, token secret from "
                  f"{creds.secret_from}, up to {limit:,} file descriptors)", file=out)
            if admin is not None:
                print(f"admin API on {admin.url} (token from {creds.token_from}); metrics at {admin.url}/metrics",
                      file=out)
            print("Ctrl-C or SIGTERM drains and stops", file=out, flush=True)

        server.run(on_ready=banner)  # blocks; SIGTERM / SIGINT drain
    finally:
        if admin is not None:
            admin.stop()
    print("pushcore gateway stopped", file=out)
    return 0


def _run_workers(args: argparse.Namespace, creds: _Credentials, workers: int, limit: int) -> int:
    """*workers* processes on one port under a supervisor (which holds no thread and no loop)."""
    from ..cluster.supervisor import PortUnavailable, Supervisor, SupervisorError
    from ..store import StoreError, open_store

    out = sys.stderr
    # Open the store once here, so an unreachable Redis is one clear error now rather than
    # every worker failing its start in turn; closed before the supervisor forks.
    try:
        open_store(args.store, idempotency_window=args.idempotency_window).close()
    except (StoreError, OSError, ValueError) as exc:
        raise CommandError(f"--store {args.store}: {exc}") from None

    def make_server(info: WorkerInfo) -> Server:  # in the worker process
        server, admin = build_worker(args, creds, info)
        if admin is not None:
            admin.start()  # its thread lives as long as the worker process
        return server

    ports = {} if creds.token is None else {"admin": (args.admin_host, args.admin_port)}
    supervisor = Supervisor(make_server, workers, host=args.host, port=args.port, ports=ports)
    try:
        host, port = supervisor.start()
    except PortUnavailable as exc:
        what, flag = ("gateway", "--port") if exc.name == "device" else ("admin API", "--admin-port")
        raise bind_error(exc.error, exc.host, exc.port, what, flag) from None
    except SupervisorError as exc:
        raise CommandError(str(exc)) from None
    print(f"pushcore gateway: {workers} workers listening on {host}:{port} (store {args.store}, token secret "
          f"from {creds.secret_from}, up to {limit:,} file descriptors each)", file=out)
    for state in supervisor.workers():
        print(f"  worker {state.index}: pid {state.pid}", file=out)
    if creds.token is not None:
        admin_url = f"http://{'[' + args.admin_host + ']' if ':' in args.admin_host else args.admin_host}:" \
                    f"{supervisor.ports['admin']}"
        print(f"admin API on {admin_url}, served by every worker (token from {creds.token_from}); "
              f"metrics at {admin_url}/metrics are the answering worker's", file=out)
    print("Ctrl-C or SIGTERM drains every worker and stops", file=out, flush=True)
    try:
        supervisor.run()  # blocks; restarts workers that die; SIGTERM / SIGINT drain them all
    except SupervisorError as exc:
        raise CommandError(str(exc)) from None
    print(f"pushcore gateway stopped ({supervisor.restarts} worker restarts)", file=out)
    return 0

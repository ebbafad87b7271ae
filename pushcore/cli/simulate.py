"""``pushcore simulate``: simulated devices against a running gateway, then the report.

The devices connect to ``HOST:PORT``; the pushes go through the gateway's
admin API (``--admin``, default ``http://127.0.0.1:8222``), one batch request
per tick, each message carrying its device counter and send time. The
report (table, ``--json``) says whether every device got every message
once and in order, and how long pushes took end to end. Exit status: 0 when
the report is clean, 1 when it found a problem, 2 for a usage error.
"""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, TextIO

from ..sim.profiles import Profile, parse_churn, parse_heartbeat, parse_nat, parse_rate
from .common import (
    DEFAULT_SECRET_FILE,
    DEFAULT_TOKEN_FILE,
    CommandError,
    check_ip,
    load_admin_token,
    load_secret,
    parse_hostport,
    raise_fd_limit,
)
from .flags import float_in, int_in

if TYPE_CHECKING:
    from ..sim.report import Report

__all__ = ["add_arguments", "add_profile_arguments", "profile_from_args", "run", "write_report",
           "DEVICES", "DURATION", "RATE"]

# The ranges of the numeric flags (shared with ``demo``): a bad value is a usage error at parse time.
DEVICES = int_in(1, 10_000_000, "a number of devices in 1..10000000")
DURATION = float_in(lambda v: 0 <= v <= 7 * 86400, "seconds >= 0, at most 604800 (a week)")
RATE = float_in(lambda v: 0 <= v <= 1e6, "pushes a second >= 0 (0 = none), at most 1000000")
_DRAIN = float_in(lambda v: 0 <= v <= 3600, "seconds >= 0, at most 3600")
_PONG_TIMEOUT = float_in(lambda v: 0 < v <= 3600, "seconds > 0, at most 3600")
_RESETS = float_in(lambda v: 0 <= v <= 1000, "resets per device per second >= 0, at most 1000")


def add_profile_arguments(parser: argparse.ArgumentParser, defaults: Profile) -> None:
    """The device behaviour options shared by ``simulate`` and ``demo``."""
    g = parser.add_argument_group("device behaviour")
    hb = defaults.heartbeat if defaults.heartbeat != "fixed" else f"fixed:{defaults.heartbeat_fixed:g}"
    g.add_argument("--heartbeat", default=None, metavar="MODE",
                   help=f"adaptive, adaptive:SCALE (all heartbeat times x SCALE), fixed:SECONDS or off "
                        f"(default {hb}, scale {defaults.heartbeat_scale:g})")
    g.add_argument("--pong-timeout", type=_PONG_TIMEOUT, default=None, metavar="S",
                   help=f"a PING unanswered this long counts as a failed heartbeat (default {defaults.pong_timeout:g})")
    churn = "off" if defaults.churn_online is None else f"{defaults.churn_online:g}:{defaults.churn_offline:g}"
    g.add_argument("--churn", default=None, metavar="ON:OFF",
                   help=f"mean seconds online and offline per device, or off (default {churn})")
    nat = "off" if defaults.nat_timeout is None else f"{defaults.nat_timeout:g}:{defaults.nat_fraction:g}"
    g.add_argument("--nat", default=None, metavar="T[:FRACTION]",
                   help=f"a NAT drops idle connections after T seconds, for FRACTION of the devices, "
                        f"or off (default {nat})")
    g.add_argument("--resets", type=_RESETS, default=None, metavar="RATE",
                   help=f"random link resets per device per second (default {defaults.reset_rate:g})")
    rate = "unlimited" if defaults.connect_rate is None else f"{defaults.connect_rate:g}"
    g.add_argument("--connect-rate", default=None, metavar="N",
                   help=f"new connections per second at most, or unlimited (default {rate})")


def profile_from_args(args: argparse.Namespace, defaults: Profile) -> Profile:
    changes: dict[str, Any] = {}
    try:
        if args.heartbeat is not None:
            changes.update(parse_heartbeat(args.heartbeat))
        if args.churn is not None:
            changes.update(parse_churn(args.churn))
        if args.nat is not None:
            changes.update(parse_nat(args.nat))
        if args.connect_rate is not None:
            changes["connect_rate"] = parse_rate(args.connect_rate, "--connect-rate")
        if args.resets is not None:
            changes["reset_rate"] = args.resets
        if args.pong_timeout is not None:
            changes["pong_timeout"] = args.pong_timeout
        return defaults.with_(**changes)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..admin.api import DEFAULT_ADMIN_PORT
    from .serve import DEFAULT_PORT

    parser.add_argument("target", nargs="?", default=f"127.0.0.1:{DEFAULT_PORT}", metavar="HOST:PORT",
                        help=f"the gateway's device address (default 127.0.0.1:{DEFAULT_PORT})")
    parser.add_argument("--devices", type=DEVICES, default=1000, help="how many devices (default 1000)")
    parser.add_argument("--duration", type=DURATION, default=30.0, help="seconds of traffic (default 30)")
    parser.add_argument("--rate", type=RATE, default=100.0,
                        help="pushes per second through the admin API, to random devices; 0 = none (default 100)")
    parser.add_argument("--admin", default=f"http://127.0.0.1:{DEFAULT_ADMIN_PORT}", metavar="URL",
                        help=f"the gateway's admin API (default http://127.0.0.1:{DEFAULT_ADMIN_PORT})")
    parser.add_argument("--admin-token", default=None, help="admin token (default: $PUSHCORE_ADMIN_TOKEN or the token file)")
    parser.add_argument("--admin-token-file", default=DEFAULT_TOKEN_FILE,
                        help=f"file holding the admin token (default {DEFAULT_TOKEN_FILE})")
    parser.add_argument("--secret-file", default=DEFAULT_SECRET_FILE,
                        help=f"the gateway's device token secret, hex (default {DEFAULT_SECRET_FILE}; "
                             f"$PUSHCORE_SECRET wins)")
    parser.add_argument("--id-prefix", default="sim-", help="device ids are PREFIX0, PREFIX1, ... (default sim-)")
    parser.add_argument("--drain-timeout", type=_DRAIN, default=30.0,
                        help="seconds to wait at the end for messages in flight (default 30)")
    parser.add_argument("--seed", type=int, default=None, help="make the random choices repeatable")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON (- for stdout)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show a progress bar on stderr (default: when stderr is a terminal)")
    add_profile_arguments(parser, Profile())


def write_report(report: Report, json_target: str | None, out: TextIO) -> None:
    """The table on *out*; the JSON to a file or stdout (``-``) when asked."""
    if json_target == "-":
        out.write(report.to_json() + "\n")
        return
    out.write(report.table() + "\n")
    if json_target:
        try:
            with open(json_target, "w") as f:
                f.write(report.to_json() + "\n")
        except OSError as exc:
            raise CommandError(f"cannot write the JSON report to {json_target}: {exc.strerror}") from None
        out.write(f"JSON report written to {json_target}\n")


def _probe_gateway(host: str, port: int, timeout: float = 5.0) -> None:
    """Fail fast, with a clear message, when nothing accepts connections at the gateway address."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except ConnectionRefusedError:
        raise CommandError(f"nothing listens on {host}:{port} (is `pushcore serve` running there?)") from None
    except OSError as exc:
        raise CommandError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    from ..admin.client import AdminClient, AdminError
    from ..sim.report import Progress
    from ..sim.simulator import Simulator
    from ..sim.traffic import AdminSink, Pusher

    host, port = parse_hostport(args.target, what="gateway address")
    check_ip(host, "gateway address")
    profile = profile_from_args(args, Profile())
    secret, _where = load_secret(args.secret_file)
    _probe_gateway(host, port)
    raise_fd_limit(args.devices + 64, f"--devices {args.devices}")
    admin = None
    if args.rate > 0:
        token, _from = load_admin_token(args.admin_token, args.admin_token_file)
        try:
            admin = AdminClient(args.admin, token)
            admin.devices()  # reachable, and the token is right
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        except AdminError as exc:
            hint = " (start `pushcore serve`, give --admin URL, or --rate 0 for no pushes)" if exc.status == 0 else ""
            raise CommandError(f"{exc.message}{hint}") from None
    sim = Simulator([(host, port)], devices=args.devices, secret=secret, id_prefix=args.id_prefix,
                    profile=profile, seed=args.seed)
    pusher = None
    if admin is not None:
        pusher = Pusher(AdminSink(admin, args.id_prefix, sim.run_id), args.devices, args.rate,
                        tick=0.05, seed=args.seed)
    print(f"simulating {args.devices:,} devices against {host}:{port} for {args.duration:g} s"
          + (f", {args.rate:g} pushes/s via {args.admin}" if pusher else ", no pushes"),
          file=sys.stderr, flush=True)
    try:
        report = sim.run(args.duration, pusher=pusher, drain_timeout=args.drain_timeout,
                         progress=Progress(enabled=args.progress))
    finally:
        if pusher is not None:
            pusher.stop()
        sim.close()
        if admin is not None:
            admin.close()
    write_report(report, args.json, sys.stdout)
    return 0 if report.ok else 1

"""The ``pushcore`` command: argument parsing and dispatch only.

Each subcommand's work lives in its own module, imported only when that
subcommand runs:

==============  =============================  ==============================================
command         module                         what it does
==============  =============================  ==============================================
``demo``        ``pushcore.cli.demo``          gateway + simulated devices in one process, report
``serve``       ``pushcore.cli.serve``         a gateway (SQLite) with the admin HTTP API
``simulate``    ``pushcore.cli.simulate``      simulated devices against a running gateway
``push``        ``pushcore.cli.push``          send through the admin API; device status
``token``       ``pushcore.cli.token``         mint a device token from the gateway's secret
``listen``      ``pushcore.cli.listen``        one device that prints what it receives
``bench``       ``pushcore.cli.bench``         the codec table (formats in ``pushcore.bench``)
``demo-codec``  ``pushcore.cli.demo_codec``    one notification through the codec, vs other formats
==============  =============================  ==============================================

Problems a user can fix (a busy port, a bad address, a missing token) are
printed as ``pushcore <command>: error: ...`` with exit status 2 (1 for a
failed request or a failed check), never as a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

__all__ = ["build_parser", "main"]


def _run_module(module: str) -> Callable[[argparse.Namespace], int]:
    """The ``run(args)`` of ``pushcore.cli.<module>``, imported when the command runs."""

    def handler(args: argparse.Namespace) -> int:
        status: int = importlib.import_module(f"{__name__}.{module}").run(args)
        return status

    return handler


def _add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, module: str,
                 help_text: str, description: str) -> argparse.ArgumentParser:
    # Each command module defines add_arguments(parser) and run(args); the
    # module imports what its work needs only inside run().
    parser = commands.add_parser(name, help=help_text, description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    importlib.import_module(f"{__name__}.{module}").add_arguments(parser)
    parser.set_defaults(handler=_run_module(module))
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``pushcore`` and its subcommands."""
    from ..version import __version__

    parser = argparse.ArgumentParser(
        prog="pushcore",
        description="pushcore: mobile push gateways and device simulators with a C-level core.",
        epilog="Start with `pushcore demo`. Each command has --help.",
    )
    parser.add_argument("--version", action="version", version=f"pushcore {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_command(
        commands, "demo", "demo",
        "a gateway and 2,000 simulated devices in one process, pushes flowing, then the report",
        "Run a gateway (temporary SQLite store, admin API) and simulated devices on one loop in this "
        "process: pushes at a fixed rate, churn, link resets, a NAT the adaptive heartbeat must find. "
        "Then print the report (every message once and in order? latency, connect times, heartbeat) "
        "and the gateway's own metrics. About 17 s on the defaults. Exit status 1 if a message was "
        "lost, duplicated or reordered. With --cluster: a redis-server and several `serve --workers` "
        "nodes on it instead, worker SIGKILLs, a node drain and a Redis restart in the middle "
        "(docs/OPERATIONS.md, A cluster on one machine).",
    )
    _add_command(
        commands, "serve", "serve",
        "run a gateway on the SQLite store, with the admin HTTP API",
        "Run a push gateway: devices connect to --host:--port; the admin API (push, presence, "
        "/metrics, /healthz) listens on --admin-host:--admin-port with a bearer token. The first "
        "start creates pushcore.secret (device token secret) and pushcore.admin-token. SIGTERM or "
        "Ctrl-C drains: every device gets GOAWAY, nothing stored is lost.",
    )
    _add_command(
        commands, "simulate", "simulate",
        "simulated devices against a running gateway, then the report",
        "Connect --devices simulated devices to HOST:PORT, push --rate messages per second through "
        "the gateway's admin API for --duration seconds, drain, and report whether every device got "
        "every message once and in order, with end-to-end latency and connect times. Exit status 1 "
        "if the report found a problem.",
    )
    _add_command(
        commands, "push", "push",
        "send a message through a gateway's admin API, or show a device",
        "Send a message to a device (--device), a topic's subscribers (--topic) or every connected "
        "device (--all) through the admin API; or show a device's presence and backlog (--status).",
    )
    _add_command(
        commands, "token", "token",
        "mint a device token from the secret `pushcore serve` uses",
        "Print a token for DEVICE (hex, one line), signed with the gateway's secret: "
        "pushcore.secret in this directory (written by `pushcore serve`), --secret-file, or "
        "$PUSHCORE_SECRET. Valid for 30 days unless --ttl says otherwise.",
    )
    _add_command(
        commands, "listen", "listen",
        "connect as one device and print each message it receives",
        "Connect to a gateway as DEVICE and print every message it receives, one line each "
        "(SEQ TOPIC PAYLOAD), like mosquitto_sub. It records the last seq printed in a state file "
        "and resumes after it, so a restart prints nothing twice. Connection changes and failures "
        "go to stderr; Ctrl-C or SIGTERM stop it. The token is minted from pushcore.secret unless "
        "--token is given.",
    )
    _add_command(
        commands, "bench", "bench",
        "the codec benchmark table (pushcore vs XMPP, MQTT, msgpack, JSON)",
        "Time encode and decode of a push, a heartbeat and an ack in every format and print the "
        "table with the design's targets (PASS/MISS). The XMPP and msgpack rows need: "
        "pip install -e '.[bench]'. The end-to-end benchmarks (push latency, connection setup "
        "rate, connections held) are scripts of the source tree: python benchmarks/e2e/run_e2e.py.",
    )
    _add_command(
        commands, "demo-codec", "demo_codec",
        "encode and decode a reference notification; compare its size and speed",
        "Encode the reference push notification with the active codec backend, print the frame "
        "byte by byte, decode it, and set its size and speed next to XMPP, MQTT 3.1.1, msgpack "
        "and JSON. Takes a few seconds.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pushcore`` console script; returns the exit status."""
    from .common import CommandError

    args = build_parser().parse_args(argv)
    try:
        status: int = args.handler(args)
        sys.stdout.flush()
    except CommandError as exc:
        sys.stdout.flush()
        print(f"pushcore {args.command}: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print(f"\npushcore {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`pushcore demo | head`): stop quietly, and point
        # stdout at /dev/null so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return status

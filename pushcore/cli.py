"""The ``pushcore`` command: argument parsing and dispatch only.

Each subcommand's work lives in its own module (``pushcore.demo``,
``pushcore.benchtable``), imported only when that subcommand runs.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

__all__ = ["build_parser", "main"]


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(speed=not args.no_speed)


def _run_bench(args: argparse.Namespace) -> int:
    from .benchtable import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``pushcore`` and its subcommands."""
    from . import __version__
    from .benchtable import add_arguments as add_bench_arguments

    parser = argparse.ArgumentParser(
        prog="pushcore",
        description="pushcore: mobile push gateways and device simulators with a C-level core.",
    )
    parser.add_argument("--version", action="version", version=f"pushcore {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="encode and decode a reference notification; compare its size and speed",
        description="Encode the reference push notification with the active codec backend, "
                    "print the frame byte by byte, decode it, and set its size and speed next "
                    "to XMPP, MQTT 3.1.1, msgpack and JSON. Takes a few seconds.",
    )
    demo.add_argument("--no-speed", action="store_true", help="skip the quick speed figures")
    demo.set_defaults(handler=_run_demo)

    bench = commands.add_parser(
        "bench",
        help="the full codec benchmark table (pushcore vs XMPP, MQTT, msgpack, JSON)",
        description="Time encode and decode of a push, a heartbeat and an ack in every format "
                    "and print the table with the design's targets (PASS/MISS). The XMPP and "
                    "msgpack rows need: pip install -e '.[bench]'.",
    )
    add_bench_arguments(bench)
    bench.set_defaults(handler=_run_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pushcore`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status = args.handler(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`pushcore demo | head`): stop quietly, and point
        # stdout at /dev/null so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return status

"""The options of ``pushcore bench`` and ``benchmarks/codec_table.py``.

Kept apart from :mod:`pushcore.bench.table` so that ``pushcore --help`` can
describe the command without importing the comparison formats.
"""
from __future__ import annotations

import argparse

__all__ = ["OPERATIONS", "add_arguments"]

#: The operations the codec comparison times, in table order.
OPERATIONS = ("push", "heartbeat", "ack")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the codec table's options to *parser*."""
    parser.add_argument("--repeat", type=int, default=10,
                        help="timed runs per measurement, interleaved across formats; "
                             "the minimum is reported (default 10)")
    parser.add_argument("--min-time", type=float, default=0.1, metavar="SECONDS",
                        help="length of one timed run (default 0.1)")
    parser.add_argument("--quick", action="store_true",
                        help="3 runs of 0.02 s each: a rough table in a few seconds")
    parser.add_argument("--operation", choices=OPERATIONS, action="append",
                        help="only this operation (repeatable; default: all)")

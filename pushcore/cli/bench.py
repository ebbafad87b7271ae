"""``pushcore bench``: the codec comparison table.

The formats (``pushcore.bench``) are imported only when the command runs.
The end-to-end benchmarks are whole-system scripts of the source tree
(``python benchmarks/e2e/run_e2e.py``): an installed package does not reach
into a checkout.
"""
from __future__ import annotations

import argparse

from ..bench.options import add_arguments

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    """Time every format and print the table (exit status 0 even on MISS)."""
    from ..bench.table import run as run_table

    return run_table(args)

"""Range-checked argparse types for the ``pushcore`` subcommands' numbers, ports and store specs.

A bad value is a usage error at parse time (exit status 2, before any file
is created or socket opened), worded ``argument --FLAG: must be RANGE, got
VALUE``. Text that is not a number parses as NaN, which every range refuses.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["float_in", "int_in", "port", "store_target"]


def _shown(text: str) -> str:
    """*text* as the user typed it, quoted only when it would be hard to see."""
    return text if text and text.strip() == text else repr(text)


def float_in(ok: Callable[[float], bool], hint: str) -> Callable[[str], float]:
    """An argparse type: a float for which *ok* holds, else ``must be {hint}, got {text}``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {hint}, got {_shown(text)}")
        return value

    return parse


def int_in(low: int, high: int, hint: str) -> Callable[[str], int]:
    """An argparse type: an integer in ``low..high``, else ``must be {hint}, got {text}``."""
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {hint}, got {_shown(text)}")
        return value

    return parse


port = int_in(0, 65535, "a port number in 0..65535 (0 = any free port)")


def store_target(text: str) -> str:
    """An argparse type: a store spec :func:`pushcore.store.open_store` accepts, returned unchanged."""
    from ..store import parse_store_target

    try:
        parse_store_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text

"""``pushcore demo-codec``: one notification through the codec, next to other formats."""
from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's one option."""
    parser.add_argument("--no-speed", action="store_true", help="skip the quick speed figures")


def run(args: argparse.Namespace) -> int:
    """Print the frame byte by byte, decode it, and compare sizes (and speed)."""
    from ..bench.codec_demo import run_demo

    return run_demo(speed=not args.no_speed)

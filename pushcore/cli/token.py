"""``pushcore token``: mint a device token from the secret ``pushcore serve`` uses.

::

    pushcore token phone-1                  # 30 days, from ./pushcore.secret (or $PUSHCORE_SECRET)
    pushcore token phone-1 --ttl 3600       # an hour
    pushcore token phone-1 --ttl never      # never expires (revoke with Server.revoke)

The token goes to stdout as hex, one line (``pushcore listen --token``
takes it so); a device sends the raw bytes in its HELLO. What it is for and
until when goes to stderr.
"""
from __future__ import annotations

import argparse
import sys
import time

from .common import DEFAULT_SECRET_FILE, CommandError, load_secret

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("device", metavar="DEVICE", help="the device id the token is for")
    parser.add_argument("--ttl", default=None, metavar="SECONDS",
                        help="seconds the token is valid for, or 'never' (default 30 days)")
    parser.add_argument("--secret-file", default=DEFAULT_SECRET_FILE,
                        help=f"the gateway's token secret, hex (default {DEFAULT_SECRET_FILE}, "
                             f"as `pushcore serve` writes it; $PUSHCORE_SECRET wins)")


def run(args: argparse.Namespace) -> int:
    # the public names, pushcore.mint_token and pushcore.verify_token
    from ..tokens import NO_EXPIRY, mint_token, verify_token

    if not args.device:
        raise CommandError("DEVICE must not be empty")
    ttl: float | None = None  # None: the default lifetime
    never = args.ttl is not None and args.ttl.strip().lower() == "never"
    if args.ttl is not None and not never:
        try:
            ttl = float(args.ttl)
        except ValueError:
            ttl = float("nan")
        if not 0 < ttl < float("inf"):
            raise CommandError(f"--ttl {args.ttl}: use seconds > 0, or 'never'")
    secret, where = load_secret(args.secret_file)
    try:
        if never:
            token = mint_token(secret, args.device, ttl=NO_EXPIRY)
        elif ttl is not None:
            token = mint_token(secret, args.device, ttl=ttl)
        else:
            token = mint_token(secret, args.device)
    except ValueError as exc:  # e.g. a ttl past the token format's last representable time
        raise CommandError(f"--ttl {args.ttl}: {exc}") from None
    claims = verify_token(secret, args.device, token)
    until = ("never expires" if claims.expires_at is None else
             "valid until " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(claims.expires_at)))
    print(token.hex(), file=sys.stdout)
    print(f"token for {args.device}, {until} (secret from {where})", file=sys.stderr)
    return 0

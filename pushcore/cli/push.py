"""``pushcore push``: send a message through a gateway's admin API (or ask about a device).

::

    pushcore push --device phone-1 '{"title": "hi"}'
    pushcore push --device phone-1 --idempotency-key order-17 'shipped'   # run twice: stored once
    pushcore push --topic news --ttl 3600 'headline'
    pushcore push --all 'maintenance at noon'          # every connected device, not stored
    pushcore push --status phone-1                    # presence, backlog, last seq, topics
"""
from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys

from .common import DEFAULT_TOKEN_FILE, CommandError, load_admin_token
from .flags import float_in

# The admin API's own bound (ten years); NaN, infinities and 0 are refused too.
_TTL = float_in(lambda v: 0 < v <= 10 * 365 * 86400, "seconds > 0, at most 315360000 (ten years)")

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..admin.api import DEFAULT_ADMIN_PORT

    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", metavar="ID", help="send to this device (stored until it acks)")
    target.add_argument("--topic", metavar="TOPIC", help="send to every subscriber of TOPIC (stored per device)")
    target.add_argument("--all", action="store_true",
                        help="send to every connected device (not stored, unless --durable)")
    target.add_argument("--status", metavar="ID", help="show a device's presence and backlog instead of sending")
    parser.add_argument("payload", nargs="?", help="the message (text; with --b64, base64 bytes)")
    parser.add_argument("--b64", action="store_true", help="PAYLOAD is base64-encoded bytes")
    parser.add_argument("--low", action="store_true", help="low priority: waits until the device is awake")
    parser.add_argument("--ttl", type=_TTL, default=None, metavar="SECONDS",
                        help="seconds after which it is not delivered")
    parser.add_argument("--collapse-key", default="", help="replaces a waiting message with the same key")
    parser.add_argument("--durable", action="store_true", help="with --all: store per connected device")
    parser.add_argument("--idempotency-key", metavar="KEY", default=None,
                        help="with --device: the same KEY within the gateway's window (24 h) stores the "
                             "message once and prints its first seq (default: a fresh key per run, which "
                             "makes the command's own retry after a dropped connection safe)")
    parser.add_argument("--admin", default=f"http://127.0.0.1:{DEFAULT_ADMIN_PORT}", metavar="URL",
                        help=f"the gateway's admin API (default http://127.0.0.1:{DEFAULT_ADMIN_PORT})")
    parser.add_argument("--admin-token", default=None, help="admin token (default: $PUSHCORE_ADMIN_TOKEN or the token file)")
    parser.add_argument("--admin-token-file", default=DEFAULT_TOKEN_FILE,
                        help=f"file holding the admin token (default {DEFAULT_TOKEN_FILE})")
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer")


def run(args: argparse.Namespace) -> int:
    from ..admin.client import AdminClient, AdminError

    if args.status is None and args.payload is None:
        raise CommandError("give the message to send (PAYLOAD), or --status ID")
    if args.status is not None and args.payload is not None:
        raise CommandError("--status shows a device; it sends nothing (drop PAYLOAD)")
    if args.durable and not args.all:
        raise CommandError("--durable goes with --all")
    if args.idempotency_key is not None and args.device is None:
        raise CommandError("--idempotency-key goes with --device (publish and broadcast take no key)")
    payload: bytes | str | None = args.payload
    if args.b64 and payload is not None:
        try:
            payload = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise CommandError("--b64: PAYLOAD is not valid base64") from None
    token, _where = load_admin_token(args.admin_token, args.admin_token_file)
    try:
        client = AdminClient(args.admin, token)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    options = {"priority": "low" if args.low else None, "ttl": args.ttl, "collapse_key": args.collapse_key}
    try:
        with client:
            if args.status is not None:
                info = client.device(args.status)
                text = (f"{info['device']}: {'connected' if info['connected'] else 'offline'}, "
                        f"{info['backlog']} waiting, last seq {info['last_seq']}, "
                        f"topics {', '.join(info['topics']) or '-'}")
                result = info
            else:
                assert payload is not None  # checked above: only --status goes without a PAYLOAD
                if args.device is not None:
                    seq = client.push(args.device, payload, idempotency_key=args.idempotency_key, **options)
                    result = {"device": args.device, "seq": seq}
                    text = f"stored for {args.device} as seq {seq}"
                elif args.topic is not None:
                    n = client.publish(args.topic, payload, **options)
                    result = {"topic": args.topic, "devices": n}
                    text = f"stored for {n} subscriber(s) of {args.topic!r}"
                else:
                    n = client.broadcast(payload, durable=args.durable, **options)
                    result = {"devices": n, "durable": args.durable}
                    text = f"sent to {n} connected device(s)" + (" (stored)" if args.durable else " (not stored)")
    except AdminError as exc:
        hint = " (is `pushcore serve` running? --admin URL)" if exc.status == 0 else ""
        if exc.idempotency_key is not None and args.device is not None:  # unreachable, or 502/503/504
            hint = f"; to retry safely, run it again with --idempotency-key {exc.idempotency_key}"
        raise CommandError(exc.message + hint, status=1) from None
    print(json.dumps(result) if args.json else text, file=sys.stdout)
    return 0

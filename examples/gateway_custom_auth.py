"""A push gateway with its own authentication and an upstream echo.

Devices authenticate with a per-device key given on the command line
(``--device alice=s3cret``) instead of pushcore's default HMAC tokens: the
``authenticate`` hook compares the HELLO token with the key in constant time
and also sees the device's address. Every UPSTREAM a device sends is pushed
back to it as ``echo: <payload>``; ``--tick`` pushes the time to every
connected device now and then. SIGTERM or Ctrl-C drains gracefully.

Try it with the device example, in two terminals (the gateway listens on
a free port by default, so it never collides with a running ``pushcore
serve``; give the PORT it prints to the device)::

    python examples/gateway_custom_auth.py --device alice=s3cret   # gateway listening on 127.0.0.1:PORT ...
    python examples/device_print.py --server 127.0.0.1:PORT --device alice --token s3cret --send hello
"""
from __future__ import annotations

import argparse
import hmac
import logging
import sys
import time

from pushcore.errors import Reason
from pushcore.gateway.server import Server
from pushcore.tokens import AuthError


def parse_devices(entries: list[str]) -> dict[str, bytes]:
    keys = {}
    for entry in entries:
        device_id, sep, key = entry.partition("=")
        if not sep or not device_id or not key:
            raise SystemExit(f"--device {entry!r}: use DEVICE=KEY, e.g. --device alice=s3cret")
        keys[device_id] = key.encode()
    return keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A pushcore gateway with per-device keys and an upstream echo.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0,
                        help="port to listen on (default 0: any free port, printed at start)")
    parser.add_argument(
        "--device", action="append", default=[], metavar="ID=KEY",
        help="a device allowed to connect and its key (repeat for more devices)",
    )
    parser.add_argument(
        "--store", default="memory:",
        help="offline store: a SQLite file path, or memory: (default)",
    )
    parser.add_argument("--tick", type=float, default=0.0, metavar="SECONDS",
                        help="push the time to every connected device this often (0 = never)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every connect and disconnect")
    args = parser.parse_args(argv)
    keys = parse_devices(args.device)
    if not keys:
        parser.error("give at least one --device ID=KEY")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    log = logging.getLogger("gateway")

    def authenticate(device_id: str, token: bytes, metadata: dict) -> bool:
        key = keys.get(device_id)
        # compare even for unknown devices, so timing does not tell which ids exist
        expected = key if key is not None else b"\0" * len(token)
        if not hmac.compare_digest(token, expected) or key is None:
            raise AuthError(Reason.AUTH_FAILED, "unknown device or wrong key")
        log.info("%s authenticated from %s:%s", device_id, *(metadata["peer"] or ("?", "?")))
        return True

    server: Server

    def on_upstream(device_id: str, payload: bytes, topic: str) -> None:
        server.push(device_id, b"echo: " + payload, topic=topic)

    server = Server(
        args.host,
        args.port,
        authenticate=authenticate,
        on_connect=lambda device_id, meta: log.info("%s connected", device_id),
        on_disconnect=lambda device_id, reason: log.info("%s disconnected (%s)", device_id, reason.name),
        on_upstream=on_upstream,
        store=args.store,
    )
    try:
        host, port = server.listen()
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1

    if args.tick > 0:
        def tick() -> None:
            server.broadcast(time.strftime("tick %H:%M:%S").encode(), durable=True)
            server.loop.call_later(args.tick, tick)

        server.loop.call_later(args.tick, tick)

    # announced from inside run(), once the SIGTERM handler is in place
    server.loop.call_soon(
        lambda: print(f"gateway listening on {host}:{port} for {len(keys)} device(s)", flush=True)
    )
    server.run()  # SIGTERM / Ctrl-C: GOAWAY to every device, flush, close
    print("gateway stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

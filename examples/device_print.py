"""A device that prints every message it receives.

It connects to the first gateway that answers (``--server``, repeatable,
probed in parallel; or ``--servers-url`` returning a JSON list sorted by
load; ``--fallback`` when those fail), resumes after the last seq it saw
(kept in ``--state-file`` across runs, so nothing is printed twice),
subscribes to ``--topic``\\ s, optionally sends ``--send`` upstream, and
prints each message as one line::

    seq=3 topic=news priority=high payload='echo: hello'

Stop it with Ctrl-C, or let ``--count`` stop it after that many messages.

Against the gateway example (it prints the free port it got)::

    python examples/gateway_custom_auth.py --device alice=s3cret   # gateway listening on 127.0.0.1:PORT ...
    python examples/device_print.py --server 127.0.0.1:PORT --device alice --token s3cret --send hello --count 1
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile

from pushcore.device.client import Cause, Client, ClientState
from pushcore.errors import PushcoreError


def load_last_seq(path: str | None) -> int:
    if not path or not os.path.exists(path):
        return 0
    with open(path) as f:
        text = f.read().strip()
    return int(text) if text.isdigit() else 0


def save_last_seq(path: str, seq: int) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a number."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".last_seq.")
    with os.fdopen(fd, "w") as f:
        f.write(str(seq))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A pushcore device that prints what it receives.")
    parser.add_argument("--device", required=True, help="the device id")
    parser.add_argument("--token", required=True,
                        help="the device's credential (a key for the gateway example; "
                             "hex:<hex> for binary pushcore.tokens)")
    parser.add_argument("--server", action="append", default=[], metavar="HOST:PORT",
                        help="a gateway to probe (repeatable, best first)")
    parser.add_argument("--servers-url", help="HTTP URL returning a JSON server list sorted by load")
    parser.add_argument("--fallback", action="append", default=[], metavar="HOST:PORT",
                        help="built-in address used when the list or name resolution fails")
    parser.add_argument("--topic", action="append", default=[], help="subscribe to this topic (repeatable)")
    parser.add_argument("--send", action="append", default=[], metavar="TEXT",
                        help="send TEXT upstream once connected (repeatable)")
    parser.add_argument("--count", type=int, default=0, help="exit after this many messages (0 = never)")
    parser.add_argument("--state-file", help="file keeping the last seq seen, to resume across runs")
    args = parser.parse_args(argv)
    if not (args.server or args.servers_url or args.fallback):
        parser.error("give --server HOST:PORT (or --servers-url / --fallback)")
    token = bytes.fromhex(args.token[4:]) if args.token.startswith("hex:") else args.token.encode()

    received = 0
    client: Client

    def on_message(push) -> None:
        nonlocal received
        priority = "high" if push.priority else "low"
        print(f"seq={push.seq} topic={push.topic or '-'} priority={priority} "
              f"payload={bytes(push.payload)!r}", flush=True)
        if args.state_file and push.seq:
            save_last_seq(args.state_file, push.seq)
        received += 1
        if args.count and received >= args.count:
            client.stop()

    def on_state(state: ClientState, cause: Cause | None) -> None:
        detail = f" ({cause})" if cause is not None else ""  # e.g. "connection refused by 127.0.0.1:PORT"
        where = f" to {client.server[0]}:{client.server[1]}" if state is ClientState.CONNECTED else ""
        print(f"# {state.value}{where}{detail}", file=sys.stderr, flush=True)
        if state is ClientState.CONNECTED:
            for text in args.send:
                client.upstream(text.encode())

    client = Client(
        args.device,
        token,
        args.server,
        servers_url=args.servers_url,
        fallback=args.fallback,
        last_seq=load_last_seq(args.state_file),
        topics=args.topic,
        on_message=on_message,
        on_state=on_state,
    )
    signal.signal(signal.SIGTERM, lambda *_: client.stop())
    try:
        client.run()
    except KeyboardInterrupt:
        client.stop()
    except PushcoreError as exc:
        print(f"device refused: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

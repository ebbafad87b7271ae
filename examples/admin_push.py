"""Push through a gateway's admin HTTP API with nothing but the standard library.

An application server in any language does the same: an HTTP POST with a
bearer token. This script pushes one message to a device, shows the device's
presence and backlog, and prints a few of the gateway's Prometheus metrics.

Start a gateway first (it writes its admin token to pushcore.admin-token)::

    pushcore serve --store memory:
    python examples/admin_push.py --device phone-1 --message '{"title": "hello"}'

The token comes from ``--token``, ``$PUSHCORE_ADMIN_TOKEN`` or ``--token-file``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request


def call(base: str, token: str, method: str, path: str, body: dict | None = None):
    """One API request; returns the decoded JSON (or text, for /metrics)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
        return json.loads(text) if response.headers.get_content_type() == "application/json" else text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Push one message through the pushcore admin API.")
    parser.add_argument("--admin", default="http://127.0.0.1:8222", help="admin API URL (default http://127.0.0.1:8222)")
    parser.add_argument("--token", default=os.environ.get("PUSHCORE_ADMIN_TOKEN"), help="admin token")
    parser.add_argument("--token-file", default="pushcore.admin-token", help="read the token from this file")
    parser.add_argument("--device", required=True, help="the device to push to")
    parser.add_argument("--message", default="hello from admin_push.py", help="the payload (text)")
    parser.add_argument("--ttl", type=float, default=3600, help="seconds before it expires (default 3600)")
    args = parser.parse_args(argv)

    token = args.token
    if not token and os.path.exists(args.token_file):
        with open(args.token_file) as f:
            token = f.read().strip()
    if not token:
        parser.error("no admin token: give --token, set PUSHCORE_ADMIN_TOKEN, or --token-file")
    base = args.admin.rstrip("/")
    try:
        pushed = call(base, token, "POST", "/v1/push",
                      {"device": args.device, "payload": args.message, "ttl": args.ttl})
        print(f"pushed to {pushed['device']} as seq {pushed['seq']}")
        info = call(base, token, "GET", f"/v1/devices/{urllib.request.quote(args.device, safe='')}")
        print(f"{info['device']}: {'connected' if info['connected'] else 'offline'}, "
              f"{info['backlog']} message(s) waiting, last seq {info['last_seq']}")
        metrics = call(base, token, "GET", "/metrics")
    except urllib.error.HTTPError as exc:
        print(f"the admin API said {exc.code}: {exc.read().decode().strip()}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"cannot reach {base}: {exc.reason}", file=sys.stderr)
        return 1
    wanted = ("pushcore_devices_connected", "pushcore_store_messages", "pushcore_frames_sent_total")
    for line in metrics.splitlines():
        if line.split(" ")[0] in wanted:
            print("metric", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

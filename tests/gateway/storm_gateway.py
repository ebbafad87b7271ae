"""The gateway process of test_storm.py: a Server and its admin API, with limits from argv.

Prints ``{"device": port, "admin": port}`` once listening, runs until its
stdin closes, then prints ``{"peak_rss": bytes}`` (VmHWM: the most memory it
ever held) and stops. Run as ``python storm_gateway.py '<json options>'``.
"""
from __future__ import annotations

import json
import sys

from pushcore import AdminAPI, Server


def peak_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    options = json.loads(sys.argv[1])
    server = Server("127.0.0.1", 0, secret=bytes.fromhex(options.pop("secret")), **options.pop("server"))
    server.start()
    api = AdminAPI(server, token=options.pop("admin_token"), host="127.0.0.1", port=0)
    api.start()
    print(json.dumps({"device": server.address[1], "admin": api.address[1], "rss": peak_rss()}), flush=True)
    sys.stdin.read()
    loop = server.call(server.loop.stats)
    limits = {key: loop[key] for key in ("outbound_budget_closes", "refused", "preauth_budget", "outbound_budget")}
    print(json.dumps({"peak_rss": peak_rss(), "stats": server.stats, "loop": limits}), flush=True)
    api.stop()
    server.stop(timeout=5.0)


if __name__ == "__main__":
    main()

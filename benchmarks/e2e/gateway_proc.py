"""A benchmark gateway in its own process: Server + admin API on free ports.

Prints one JSON line ``{"port": P, "admin": URL, "token": T, "pid": N}`` once
listening, then serves until its stdin closes (the parent died or is done),
then drains and exits. Used by ``run_e2e.py``.

    python benchmarks/e2e/gateway_proc.py [--store memory:|PATH] [--heartbeat-max S]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import sys
import tempfile
import threading

SECRET_HEX = "5e" * 32  # the benchmark's shared device-token secret (not a real secret)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default=None, help="memory: or a SQLite path (default: a temporary SQLite file)")
    parser.add_argument("--heartbeat-max", type=float, default=600.0)
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    from pushcore.admin.api import AdminAPI
    from pushcore.gateway.server import Server

    tmp = tempfile.TemporaryDirectory(prefix="pushcore-bench-")
    store = args.store or os.path.join(tmp.name, "gateway.db")
    server = Server("127.0.0.1", 0, secret=bytes.fromhex(SECRET_HEX), store=store,
                    heartbeat=(0, args.heartbeat_max), idle_grace=30.0, backlog=4096)
    token = secrets.token_urlsafe(24)
    admin = AdminAPI(server, token, port=0)
    admin.start()
    host, port = server.listen()

    def watch_stdin() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the parent is gone or done
        server.stop(timeout=5.0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(json.dumps({"port": port, "admin": admin.url, "token": token, "pid": os.getpid()}), flush=True)
    try:
        server.run()
    finally:
        admin.stop()
        tmp.cleanup()


if __name__ == "__main__":
    main()

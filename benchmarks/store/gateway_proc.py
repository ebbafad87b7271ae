"""The gateway under test, in its own process: one ``pushcore.Server`` and nothing else.

    python benchmarks/store/gateway_proc.py --store sqlite|memory [--dir D] [--subscribe TOPIC:FIRST:COUNT ...]

Subscribes devices ``FIRST .. FIRST+COUNT-1`` (``harness.device_name``) to
TOPIC through the public ``Store.subscribe`` before the server starts, starts
the server on a free port of 127.0.0.1, prints
``{"port": P, "pid": N, "setup_s": S}`` and then answers one JSON command a
line (``harness.serve_commands``); every call goes through the public
``Server`` API from this process's main thread, as an application would:

* ``{"op": "publish", "topic": T, "count": R, "size": B[, "wait": false]}``: R ×
  ``Server.publish`` back to back (``wait=False``: calls that do not wait); answers the monotonic start / end, each
  call's seconds, the sum of the returned ``FanOut`` counts and the CPU
  seconds this process used meanwhile;
* ``{"op": "broadcast", "count": R, "size": B[, "wait": false]}``: the same
  with ephemeral ``Server.broadcast`` (``wait=False``: calls that do not
  wait, issue 11 item 3; their futures are waited for after the last call);
* ``{"op": "can_skip_wait"}``: whether ``Server.broadcast`` takes ``wait=``;
* ``{"op": "connected"}``: ``Server.device_count``;
* ``{"op": "rss"}``: RSS now and peak.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import tempfile
import time
from typing import Any

from harness import SECRET, device_name, raise_fd_limit, rss_bytes, serve_commands

from pushcore import Server, open_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument("--dir", default=None, help="where the SQLite file goes (default: a temporary directory)")
    parser.add_argument("--subscribe", action="append", default=[], metavar="TOPIC:FIRST:COUNT")
    args = parser.parse_args()
    raise_fd_limit()

    tmp = tempfile.TemporaryDirectory(prefix="pushcore-storebench-", dir=args.dir)
    started = time.monotonic()
    store = open_store("memory:" if args.store == "memory" else os.path.join(tmp.name, "gateway.db"))
    for spec in args.subscribe:
        topic, first, count = spec.rsplit(":", 2)
        subscribe = store.subscribe
        for i in range(int(first), int(first) + int(count)):
            subscribe(device_name(i), (topic,))
    setup = time.monotonic() - started
    server = Server("127.0.0.1", 0, secret=SECRET, store=store, heartbeat=(0, 3600), idle_grace=600.0,
                    backlog=4096, connect_rate=1e6, connect_burst=1e6)
    _host, port = server.start()
    print(json.dumps({"port": port, "pid": os.getpid(), "setup_s": setup}), flush=True)

    def fan_out(call: Any, count: int) -> dict[str, Any]:
        calls: list[float] = []
        results: list[Any] = []
        cpu0 = time.process_time()
        start = time.monotonic()
        for _ in range(count):
            t = time.monotonic()
            results.append(call())
            calls.append(time.monotonic() - t)
        # a call that does not wait returns something with .result() (a future): wait for them all here
        total = sum(int(r.result(600) if hasattr(r, "result") else r) for r in results)
        end = time.monotonic()
        return {"start": start, "end": end, "calls": calls, "deliveries": total,
                "cpu_s": time.process_time() - cpu0}

    def publish(topic: str, count: int, size: int, wait: bool = True) -> dict[str, Any]:
        payload = b"p" * size
        if wait:
            return fan_out(lambda: server.publish(topic, payload), count)
        return fan_out(lambda: server.publish(topic, payload, wait=False), count)  # type: ignore[call-overload]

    def broadcast(count: int, size: int, wait: bool = True) -> dict[str, Any]:
        payload = b"b" * size
        if wait:
            return fan_out(lambda: server.broadcast(payload), count)
        return fan_out(lambda: server.broadcast(payload, wait=False), count)  # type: ignore[call-arg]

    serve_commands({
        "publish": publish,
        "broadcast": broadcast,
        "connected": lambda: {"devices": server.device_count},
        "can_skip_wait": lambda: {"yes": "wait" in inspect.signature(Server.broadcast).parameters},
        "rss": lambda: {"rss": rss_bytes(), "peak": rss_bytes(field="VmHWM")},
    })
    server.stop(timeout=10.0)
    store.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()

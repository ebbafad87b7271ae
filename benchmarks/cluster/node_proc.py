"""One cluster node under test, in its own process: a ``pushcore.Server`` on a RedisStore with a ClusterLink.

    python benchmarks/cluster/node_proc.py --redis URL --prefix P [--port N] [--reuse-port]
        [--subscribe TOPIC:FIRST:COUNT]

Builds ``RedisStore(URL)`` and ``ClusterLink(URL)`` (same prefix), starts the
server on 127.0.0.1 (port 0 = a free one; ``--reuse-port`` for several nodes
on one port, as ``pushcore serve --workers N`` does), prints
``{"port", "pid", "node"}`` and answers one JSON command a line
(``harness.serve_commands``), every call through the public Server API:

* ``connected``: ``Server.device_count()``;
* ``status``: connected, RSS, CPU seconds, the loop's lag (``loop.stats()["lag"]``, read on the loop);
* ``paced_push`` (devices, rate, seconds, size, batch): ``Server.push(wait=False)`` at a fixed rate, round
  robin over *devices* (with *batch*: one ``Server.push_batch(wait=False)`` of the pushes due, every
  0.5 ms or so); each payload starts with the call's ``time.monotonic()`` (8-byte double); answers
  the first call, the last call and when every future was done (stored);
* ``fan_out`` (what = broadcast|publish, count, size, topic): *count* calls with ``wait=False``,
  then waits for every future; answers the calls' start and end and the summed counts.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "store"))

from harness import SECRET, cpu_seconds, device_name, raise_fd_limit, rss_bytes, serve_commands  # noqa: E402

from pushcore import Server  # noqa: E402
from pushcore.cluster.link import ClusterLink  # noqa: E402
from pushcore.loop.handover import call_on_loop  # noqa: E402
from pushcore.store.redis import RedisStore  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--prefix", default="pcbench")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reuse-port", action="store_true")
    parser.add_argument("--heartbeat", type=float, nargs=2, default=(0, 3600), metavar=("MIN", "MAX"))
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="sys.setswitchinterval(S) first (the GIL hand-over; Python's default 0.005)")
    parser.add_argument("--auth-timeout", type=float, default=10.0,
                        help="Server(auth_timeout=): seconds from accept to WELCOME (default 10, the Server's)")
    parser.add_argument("--subscribe", action="append", default=[], metavar="TOPIC:FIRST:COUNT")
    args = parser.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    raise_fd_limit()
    store = RedisStore(args.redis, prefix=args.prefix)
    for spec in args.subscribe:
        topic, first, count = spec.rsplit(":", 2)
        for i in range(int(first), int(first) + int(count)):
            store.subscribe(device_name(i), (topic,))
    link = ClusterLink(args.redis, prefix=args.prefix)
    server = Server("127.0.0.1", args.port, secret=SECRET, store=store, cluster=link,
                    heartbeat=tuple(args.heartbeat), idle_grace=600.0, auth_timeout=args.auth_timeout, backlog=4096, reuse_port=args.reuse_port,
                    connect_rate=1e6, connect_burst=1e6, source_connect_rate=1e6, source_connect_burst=1e6)
    _host, port = server.start()
    print(json.dumps({"port": port, "pid": os.getpid(), "node": link.node_id}), flush=True)

    def status() -> dict[str, Any]:
        stats = call_on_loop(server.loop, server.loop.stats)
        lag = stats.get("lag", {})
        return {"connected": server.device_count(), "rss": rss_bytes(), "cpu_s": cpu_seconds(),
                "lag_p99": lag.get("recent_p99"), "lag_p50": lag.get("recent_p50"), "lag_max": lag.get("max"),
                "pings_answered": stats.get("pings_answered", 0), "writes": stats.get("writes", 0),
                "turns": stats.get("turns", 0), "frames_out": stats.get("frames_out", 0), "closed_total": stats.get("closed_total", 0),
                "link": dict(link.stats)}

    def paced_push(devices: list[str], rate: float, seconds: float, size: int, batch: bool = False) -> dict[str, Any]:
        pad = b"x" * max(0, size - 8)
        pack = struct.Struct("<d").pack
        futures = []
        start = time.monotonic()
        sent = 0
        n = len(devices)
        total = int(rate * seconds)
        while sent < total:
            due = int((time.monotonic() - start) * rate) + 1
            if batch and sent < due:  # the pushes due now, in one push_batch call
                stamp = pack(time.monotonic()) + pad
                items = [(devices[i % n], stamp) for i in range(sent, min(due, total))]
                futures.append(server.push_batch(items, wait=False))
                sent += len(items)
            while sent < min(due, total):
                futures.append(server.push(devices[sent % n], pack(time.monotonic()) + pad, wait=False))
                sent += 1
            time.sleep(0.0005)
        end = time.monotonic()
        for f in futures:
            f.result(60)
        return {"sent": sent, "start": start, "end": end, "done": time.monotonic()}

    def fan_out(what: str, count: int, size: int, topic: str = "bench") -> dict[str, Any]:
        payload = b"b" * size
        cpu0 = cpu_seconds()
        start = time.monotonic()
        if what == "broadcast":
            futures = [server.broadcast(payload, wait=False) for _ in range(count)]
        else:
            futures = [server.publish(topic, payload, wait=False) for _ in range(count)]
        called = time.monotonic()
        total = sum(int(f.result(600)) for f in futures)
        return {"start": start, "called": called, "end": time.monotonic(), "counted": total,
                "cpu_s": cpu_seconds() - cpu0}

    try:
        serve_commands({"connected": lambda: {"connected": server.device_count()}, "status": status,
                        "paced_push": paced_push, "fan_out": fan_out})
    finally:
        server.stop()  # also closes the link (its devices get GOAWAY, the node leaves the registry)


if __name__ == "__main__":
    main()

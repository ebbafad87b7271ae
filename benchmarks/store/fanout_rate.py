"""Durable fan-out to connected subscribers, SQLite vs memory store, and ephemeral broadcast: deliveries/s.

    python benchmarks/store/fanout_rate.py            # 1,000 and 10,000 connected, both stores (~1 minute)
    python benchmarks/store/fanout_rate.py --quick    # a smoke test
    python benchmarks/store/fanout_rate.py --sizes 1000 --rounds 50 --json out.json

For each store a fresh gateway (``gateway_proc.py``, its own process) holds
topic subscriptions for devices 0..N-1 of every size N; the subscribers
(``push_reader.c``, another process: C, one epoll loop, one
cumulative ACK per read) connect 1,000 first, then the rest. At each size:
``--rounds`` × ``Server.publish`` to the size's topic back to back (durable:
one stored message and one seq per subscriber), then ``--rounds`` ×
``Server.broadcast`` (ephemeral: seq 0, nothing stored; it reaches every
connected device), and, where ``Server.broadcast`` takes ``wait=`` (issue
11 item 3), both again with ``wait=False`` (the calls do not wait; their
futures are waited for after the last call). Rate = deliveries / (first call → last PUSH received by
the subscribers); "calls" = deliveries / the calls' own time (what the
application thread waited). The ratio column is memory / SQLite at the
same size; each measurement starts after ``--settle`` seconds of quiet,
so the previous one's ACKs are not handled during it (issue 11's budget: ≥ 500,000 stored deliveries/s on SQLite,
within 1.5× of memory).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Child, Devices, cpu_seconds, load_average, raise_fd_limit, report  # noqa: E402


def topic_of(size: int) -> str:
    return f"fan{size}"


def measure(gateway: Child, devices: Devices, op: str, expected: int, settle: float,
            **args: Any) -> dict[str, Any]:
    time.sleep(settle)  # the acks of the previous measurement are handled before this one starts
    before = devices.wait(0, 0)["pushes"]
    cpu0 = cpu_seconds(gateway.pid)
    result = gateway.ask(timeout=900, op=op, **args)
    got = devices.wait(before + expected)
    gateway_cpu = cpu_seconds(gateway.pid) - cpu0
    window = max(result["end"], got["last"]) - result["start"]
    calls = result["end"] - result["start"]
    return {
        "deliveries": result["deliveries"], "received": got["pushes"] - before,
        "deliveries/s": result["deliveries"] / window, "calls deliveries/s": result["deliveries"] / calls,
        "seconds": window, "gateway CPU µs/delivery": gateway_cpu / max(1, result["deliveries"]) * 1e6,
    }


def run_store(store: str, sizes: list[int], rounds: int, size_bytes: int, ack: bool,
              settle: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    children: list[Child | Devices] = []
    try:
        subscribe = [a for n in sizes for a in ("--subscribe", f"{topic_of(n)}:0:{n}")]
        gateway = Child("gateway_proc.py", ["--store", store, *subscribe], "gateway")
        children.append(gateway)
        port = gateway.read(600)["port"]
        no_wait = gateway.ask(op="can_skip_wait")["yes"]
        devices = Devices(port, max(sizes), ack)
        children.append(devices)
        online = 0
        for n in sorted(sizes):
            answer = devices.connect(online, n - online)
            online = answer["online"]
            if online != n:
                raise RuntimeError(f"{store}: {online} of {n} subscribers connected")
            load = load_average()
            durable = measure(gateway, devices, "publish", n * rounds, settle, topic=topic_of(n), count=rounds,
                              size=size_bytes)
            rows.append({"store": store, "what": "publish (durable)", "subscribers": n, "rounds": rounds,
                         "load": load, **durable})
            if no_wait:
                durable = measure(gateway, devices, "publish", n * rounds, settle, topic=topic_of(n),
                                  count=rounds, size=size_bytes, wait=False)
                rows.append({"store": store, "what": "publish (durable, wait=False)", "subscribers": n,
                             "rounds": rounds, "load": load, **durable})
            ephemeral = measure(gateway, devices, "broadcast", n * rounds, settle, count=rounds, size=size_bytes)
            rows.append({"store": store, "what": "broadcast (ephemeral)", "subscribers": n, "rounds": rounds,
                         "load": load, **ephemeral})
            if no_wait:
                ephemeral = measure(gateway, devices, "broadcast", n * rounds, settle, count=rounds, size=size_bytes,
                                    wait=False)
                rows.append({"store": store, "what": "broadcast (ephemeral, wait=False)", "subscribers": n,
                             "rounds": rounds, "load": load, **ephemeral})
            print(f"  {store} {n}: done (load {load})", file=sys.stderr)
    finally:
        for child in reversed(children):
            child.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000", help="connected subscribers, comma-separated")
    parser.add_argument("--stores", default="sqlite,memory")
    parser.add_argument("--rounds", type=int, default=20, help="calls per size and kind")
    parser.add_argument("--size", type=int, default=100, help="payload bytes")
    parser.add_argument("--no-ack", action="store_true", help="the subscribers do not ACK")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds of quiet before each measurement (the previous one's acks)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the harness")
    parser.add_argument("--json", help="write the rows and the machine to this file")
    args = parser.parse_args(argv)
    raise_fd_limit()
    sizes = [int(s) for s in args.sizes.split(",")]
    rounds = args.rounds
    if args.quick:
        sizes, rounds, args.settle = [100, 300], 3, 0.1
    rows: list[dict[str, Any]] = []
    stores = args.stores.split(",")
    started = time.monotonic()
    for store in stores:
        rows.extend(run_store(store, sizes, rounds, args.size, not args.no_ack, args.settle))
    by_key = {(r["store"], r["what"], r["subscribers"]): r for r in rows}
    for row in rows:
        memory = by_key.get(("memory", row["what"], row["subscribers"]))
        sqlite = by_key.get(("sqlite", row["what"], row["subscribers"]))
        if memory and sqlite and row is sqlite and row["what"].startswith("publish"):
            row["memory/sqlite"] = memory["deliveries/s"] / sqlite["deliveries/s"]
    report(
        "Fan-out to connected subscribers",
        ["store", "what", "subscribers", "rounds", "deliveries/s", "calls deliveries/s", "memory/sqlite",
         "gateway CPU µs/delivery", "seconds", "deliveries", "received", "load"],
        rows,
        [f"payload {args.size} B; deliveries/s = deliveries / (first call → last PUSH received); "
         "'calls' = deliveries / time inside the calls",
         "processes: gateway (Server only; calls from its main thread) | subscribers (push_reader.c: C, one epoll loop, "
         + ("no ACKs" if args.no_ack else "cumulative ACK per read") + "); not pinned, 2 cores",
         "broadcast rows: ephemeral Server.broadcast, to every connected device (store not involved); "
         "'wait=False' rows (only where Server.broadcast takes wait=): calls that do not wait, their futures "
         "waited for after the last call",
         f"total {time.monotonic() - started:.0f} s; load = load average 1/5/15 min at the start of each size"],
        args.json,
    )


if __name__ == "__main__":
    main()

"""PING→PONG round trips, timed by a separate probe process, while the gateway stores and sends a publish.

    python benchmarks/store/ping_during_publish.py              # both cases, SQLite and memory (~2 minutes)
    python benchmarks/store/ping_during_publish.py --quick      # a smoke test (a few seconds)
    python benchmarks/store/ping_during_publish.py --case budget --stores sqlite --json out.json

Cases (``--case``):

* ``issue``: a topic with 5,000 subscribers, all connected; 20 ×
  ``Server.publish`` back to back (the figures at the top of issue 11);
* ``budget``: a topic with 100,000 subscribers of which 10,000 are
  connected (the other 90,000 are subscriptions in the store only); one
  ``Server.publish`` (issue 11's budget: p99 ≤ 2 ms, max ≤ 10 ms).

Three processes: the gateway (``gateway_proc.py``: the Server, nothing
else), the connected subscribers (``push_reader.c``: C, one epoll loop,
one cumulative ACK per read) and the probe (``probe_proc.py``: one
device sending PING every 2 ms on schedule and timing each PONG). The probe
pings for ``--idle`` seconds with the subscribers connected and quiet
("idle"), then the driver has the gateway publish ("during" = PINGs sent
from the first publish call until the last subscriber's last PUSH arrived,
or the last call returned if later). Stored deliveries/s = the ``FanOut``
counts summed (connected and offline subscribers) over that window.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import TOPIC, Child, Devices, cpu_seconds, load_average, percentile, raise_fd_limit, report  # noqa: E402

CASES = {
    # name: (subscribers, connected, publishes)
    "issue": (5_000, 5_000, 20),
    "budget": (100_000, 10_000, 1),
}
QUICK = {"issue": (300, 300, 5), "budget": (3_000, 300, 1)}


def run_case(name: str, store: str, subscribers: int, connected: int, publishes: int, size: int,
             idle: float, interval: float, ack: bool = True) -> dict[str, Any]:
    children: list[Child | Devices] = []
    try:
        gateway = Child("gateway_proc.py", ["--store", store, "--subscribe", f"{TOPIC}:0:{subscribers}"], "gateway")
        children.append(gateway)
        port = gateway.read(600)["port"]
        devices = Devices(port, connected, ack)
        children.append(devices)
        online = devices.connect(0, connected)
        if online["online"] != connected:
            raise RuntimeError(f"only {online['online']} of {connected} subscribers connected")
        probe = Child("probe_proc.py", ["--port", port, "--interval", interval], "probe")
        children.append(probe)
        probe.read(30)
        load = load_average()
        idle_start = time.monotonic()
        time.sleep(idle)
        idle_end = time.monotonic()
        cpu0 = cpu_seconds(gateway.pid)
        result = gateway.ask(timeout=600, op="publish", topic=TOPIC, count=publishes, size=size)
        expected = connected * publishes
        received = devices.wait(expected)
        busy_end = max(result["end"], received["last"])
        gateway_cpu = cpu_seconds(gateway.pid) - cpu0
        time.sleep(0.1)
        probe.proc.stdin.close()  # type: ignore[union-attr]
        pings = probe.read(60)
    finally:
        for child in reversed(children):
            child.close()
    samples = pings["samples"]
    idle_rtt = [rtt * 1e3 for sent, rtt in samples if idle_start <= sent < idle_end]
    busy_rtt = [rtt * 1e3 for sent, rtt in samples if result["start"] <= sent <= busy_end]
    window = busy_end - result["start"]
    return {
        "case": name, "store": store, "subscribers": subscribers, "connected": connected,
        "publishes": publishes, "load": load,
        "idle p50 ms": percentile(idle_rtt, 50), "idle p99 ms": percentile(idle_rtt, 99),
        "idle max ms": max(idle_rtt, default=float("nan")),
        "during p50 ms": percentile(busy_rtt, 50), "during p99 ms": percentile(busy_rtt, 99),
        "during max ms": max(busy_rtt, default=float("nan")), "pings during": len(busy_rtt),
        "busy s": window, "calls s": result["end"] - result["start"],
        "stored deliveries/s": result["deliveries"] / window if window > 0 else float("nan"),
        "received": received["pushes"], "expected": expected, "deliveries": result["deliveries"],
        "gateway CPU s": gateway_cpu, "unanswered": pings["unanswered"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="issue,budget", help="issue, budget or both (comma-separated)")
    parser.add_argument("--stores", default="sqlite,memory")
    parser.add_argument("--subscribers", type=int, help="override the case's subscriber count")
    parser.add_argument("--connected", type=int, help="override the case's connected subscribers")
    parser.add_argument("--publishes", type=int, help="override the case's number of publish calls")
    parser.add_argument("--size", type=int, default=100, help="payload bytes")
    parser.add_argument("--idle", type=float, default=2.0, help="seconds of idle pinging before the publish")
    parser.add_argument("--interval", type=float, default=0.002, help="the probe's PING interval, seconds")
    parser.add_argument("--no-ack", action="store_true", help="the subscribers do not ACK (no ack work in the gateway)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the harness")
    parser.add_argument("--json", help="write the rows and the machine to this file")
    args = parser.parse_args(argv)
    raise_fd_limit()
    if args.quick:
        args.idle = min(args.idle, 0.3)
    rows = []
    for case in args.case.split(","):
        subscribers, connected, publishes = (QUICK if args.quick else CASES)[case]
        subscribers = args.subscribers or subscribers
        connected = min(subscribers, args.connected or connected)
        publishes = args.publishes or publishes
        for store in args.stores.split(","):
            rows.append(run_case(case, store, subscribers, connected, publishes, args.size, args.idle,
                                 args.interval, ack=not args.no_ack))
            print(f"  {case} {store}: done (load {rows[-1]['load']})", file=sys.stderr)
    report(
        "PING→PONG during publish",
        ["case", "store", "subscribers", "connected", "publishes", "idle p50 ms", "idle p99 ms", "idle max ms",
         "during p50 ms", "during p99 ms", "during max ms", "pings during", "stored deliveries/s", "busy s",
         "gateway CPU s", "received", "expected", "load"],
        rows,
        [f"payload {args.size} B; probe PING every {args.interval * 1e3:g} ms on schedule, round trips timed in the "
         "probe's process; 'during' = PINGs sent from the first publish call until the last connected subscriber's "
         "last PUSH arrived; stored deliveries/s = FanOut counts (connected + offline) / that window",
         "processes: gateway (Server only) | subscribers (push_reader.c: C, one epoll loop, "
         + ("no ACKs" if args.no_ack else "cumulative ACK per read") + ") | probe; "
         "not pinned: the OS spreads the three over the 2 cores",
         "load = load average 1/5/15 min when the case started"],
        args.json,
    )


if __name__ == "__main__":
    main()

"""Issue 12, budget 2: a push through node A to a device on node B, against the same push on one node.

    python benchmarks/cluster/cross_node_push.py                  # 5,000 pushes/s, 4 rounds x 2 phases x 5 s
    python benchmarks/cluster/cross_node_push.py --quick          # a few seconds

One redis-server (AOF everysec), two nodes (``node_proc.py``: a Server on a
RedisStore with a ClusterLink, same prefix), each in its own process; two
device processes (``latency_devices.py``: raw sockets, pushcore's codec):
*devices* devices on A, *devices* on B. A driver inside A's process calls
``Server.push(wait=False)`` at a fixed *rate* for *seconds*, round robin,
each payload carrying the call's ``time.monotonic()``; the device process
records receipt time minus it (one machine clock). Phases alternate in one
run: *local* (the devices on A: the single-node figure) and *remote* (the
devices on B: stored by A, forwarded over Redis pub/sub to B, sent by B).
Budget: remote p50 ≤ local p50 + 1 ms, remote p99 ≤ local p99 + 5 ms.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import LATENCY_DEVICES, Procs, harness, redis_cost, redis_delta  # noqa: E402
from harness import cpu_seconds, device_name, load_average, percentile, report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=5000.0, help="pushes per second (default 5000)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per phase (default 5)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of (local, remote) (default 4)")
    parser.add_argument("--devices", type=int, default=100, help="devices per node (default 100)")
    parser.add_argument("--size", type=int, default=64, help="payload bytes (default 64)")
    parser.add_argument("--batch", action="store_true",
                        help="one Server.push_batch(wait=False) of the pushes due (~every 0.5 ms) instead of Server.push")
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="the nodes' sys.setswitchinterval (default: Python's 0.005 s)")
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s phases at 1,000/s, 10 devices")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.quick:
        args.rate, args.seconds, args.rounds, args.devices = 1000.0, 1.0, 1, 10
    harness.raise_fd_limit()
    started = time.strftime("%H:%M:%S", time.gmtime())
    loads = [load_average()]
    procs = Procs()
    try:
        node_args = ["--prefix", "x2"]
        if args.switch_interval is not None:
            node_args += ["--switch-interval", args.switch_interval]
        a, a_info = procs.node(*node_args, name="node A")
        b, b_info = procs.node(*node_args, name="node B")
        n = args.devices
        on_a = procs.child([sys.executable, LATENCY_DEVICES, a_info["port"], 0, n], "devices on A")
        on_b = procs.child([sys.executable, LATENCY_DEVICES, b_info["port"], n, n], "devices on B")
        for d in (on_a, on_b):
            ready = d.read(120)
            if ready["online"] != n:
                raise RuntimeError(f"only {ready['online']} of {n} devices online: {ready}")
        time.sleep(1.0)  # routes written, leases renewed
        pids = {"A": a_info["pid"], "B": b_info["pid"], "redis": procs.redis.process.pid}  # type: ignore[union-attr]
        print(f"pids: {pids}", flush=True)
        cpu: dict[str, dict[str, float]] = {"local": {}, "remote": {}}
        wall = {"local": 0.0, "remote": 0.0}
        targets = {"local": [device_name(i) for i in range(n)], "remote": [device_name(i) for i in range(n, 2 * n)]}
        receivers = {"local": on_a, "remote": on_b}
        lat: dict[str, list[float]] = {"local": [], "remote": []}
        sent = {"local": 0, "remote": 0}
        per_round: dict[str, list[float]] = {"local": [], "remote": []}
        stored_s = {"local": 0.0, "remote": 0.0}
        redis_use: dict[str, list[dict]] = {"local": [], "remote": []}
        for _ in range(args.rounds):
            for phase in ("local", "remote"):
                receivers[phase].ask(op="collect")  # start clean
                before = redis_cost(procs)
                cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
                t0 = time.monotonic()
                answer = a.ask(timeout=args.seconds + 120, op="paced_push", devices=targets[phase],
                               rate=args.rate, seconds=args.seconds, size=args.size,
                               batch=args.batch)
                time.sleep(0.5)  # the last forwards arrive
                redis_use[phase].append(redis_delta(before, redis_cost(procs)))
                wall[phase] += time.monotonic() - t0
                for k, p in pids.items():
                    cpu[phase][k] = cpu[phase].get(k, 0.0) + cpu_seconds(p) - cpu0[k]
                got = receivers[phase].ask(op="collect")["latencies_ms"]
                sent[phase] += answer["sent"]
                stored_s[phase] += answer["done"] - answer["start"]
                lat[phase] += got
                per_round[phase].append(percentile(got, 99))
                rate = answer["sent"] / (answer["end"] - answer["start"])
                print(f"{phase}: {answer['sent']} sent at {rate:,.0f}/s, {len(got)} received, "
                      f"p50 {percentile(got, 50):.3f} ms p99 {percentile(got, 99):.3f} ms", flush=True)
        loads.append(load_average())
        rows = []
        for phase in ("local", "remote"):
            v = lat[phase]
            use = redis_use[phase]
            pushes = max(1, sent[phase])
            rows.append({"push on A to a device on": "A (single node)" if phase == "local" else "B (forwarded)",
                         "pushes": sent[phase], "received": len(v), "stored/s": sent[phase] / stored_s[phase],
                         "p50 ms": percentile(v, 50), "p90 ms": percentile(v, 90), "p99 ms": percentile(v, 99),
                         "max ms": max(v) if v else float("nan"),
                         "p99 per round ms": ", ".join(f"{x:.2f}" for x in per_round[phase]),
                         "redis µs/push": sum(u["usec"] for u in use) / pushes,
                         "redis calls/push": sum(u["calls"] for u in use) / pushes,
                         "redis CPU µs/push": sum(u["cpu_s"] for u in use) * 1e6 / pushes,
                         "CPU % A/B/redis": "/".join(f"{100 * cpu[phase][k] / wall[phase]:.0f}"
                                                     for k in ("A", "B", "redis"))})
        d50 = rows[1]["p50 ms"] - rows[0]["p50 ms"]
        d99 = rows[1]["p99 ms"] - rows[0]["p99 ms"]
        rows.append({"push on A to a device on": "B − A", "p50 ms": d50, "p99 ms": d99,
                     "p90 ms": rows[1]["p90 ms"] - rows[0]["p90 ms"]})
        cmds: dict[str, dict[str, int]] = {}
        for u in redis_use["remote"]:
            for k, c in u["commands"].items():
                cmds.setdefault(k, {"calls": 0, "usec": 0})
                cmds[k]["calls"] += c["calls"]
                cmds[k]["usec"] += c["usec"]
        notes = [
            f"{args.rate:,.0f} pushes/s from a driver thread in A's process "
            f"({'Server.push_batch of the pushes due' if args.batch else 'Server.push'}, wait=False), "
            f"{args.rounds} rounds of local then remote, {args.seconds:g} s each; {n} devices per node, "
            f"{args.size}-byte payload; node switch interval "
            f"{args.switch_interval if args.switch_interval is not None else sys.getswitchinterval()} s; latency = push call → PUSH read at the device; CPU % = CPU seconds "
            "of the process over the phases' wall time (push calls until 0.5 s after the last was stored); "
            "stored/s = pushes / (first call → every future done)",
            f"budget (remote − local): p50 ≤ 1 ms: {'met' if d50 <= 1 else 'MISSED'} ({d50:+.3f} ms); "
            f"p99 ≤ 5 ms: {'met' if d99 <= 5 else 'MISSED'} ({d99:+.3f} ms)",
            "Redis commands during the remote phases (calls, usec): "
            + ", ".join(f"{k} {c['calls']:,} / {c['usec']:,}" for k, c in sorted(cmds.items())),
            f"window {started}–{time.strftime('%H:%M:%S', time.gmtime())} UTC, load average {loads[0]} → {loads[-1]}",
        ]
        report("Cluster: push through node A to a device on node B (issue 12, budget 2)",
               ["push on A to a device on", "pushes", "received", "stored/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
                "p99 per round ms", "redis µs/push", "redis calls/push", "redis CPU µs/push", "CPU % A/B/redis"], rows, notes, args.json)
    finally:
        procs.close()


if __name__ == "__main__":
    main()

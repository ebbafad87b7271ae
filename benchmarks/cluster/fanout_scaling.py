"""Issue 12, budget 3: broadcast and publish across workers, 1 worker against 2, with Redis's cost.

    python benchmarks/cluster/fanout_scaling.py                   # 10,000 devices, 3 trials per case
    python benchmarks/cluster/fanout_scaling.py --quick           # a few seconds

One redis-server (AOF everysec). For W in (1, 2): W nodes (``node_proc.py``:
a Server on a RedisStore with a ClusterLink, ``reuse_port=True`` on one port,
as ``pushcore serve --workers W`` runs them; here each worker is its own
process so the benchmark can drive it), *devices* subscribers in one C
process (``benchmarks/store/push_reader.c``) connected to that port (the
kernel's SO_REUSEPORT spreads them), every device subscribed to one topic.
Worker 0 makes *broadcasts* × ``Server.broadcast(wait=False)`` (ephemeral:
its own devices at once, the other worker's through the Redis broadcast
channel) or *publishes* × ``Server.publish(wait=False)`` (durable: stored
for every subscriber in Redis, then sent here or forwarded to the node
that holds the device). deliveries/s = PUSH frames counted at the devices
/ (last PUSH − first call). Redis's cost: ``INFO commandstats`` usec and
redis-server CPU (/proc) over the trial, per delivery. Nothing is pinned:
the 2 cores are shared by the workers, redis-server and the device process
(their CPU seconds per trial are in the table). *frames per write*: the loop's
``frames_out`` / ``writes`` over the trial, per worker (how much each
``writev`` coalesced). Budget: 2 workers ≥ 1.7×
one worker's deliveries/s.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Procs, harness, redis_cost, redis_delta  # noqa: E402
from harness import Devices, cpu_seconds, load_average, report  # noqa: E402


def trial(procs: Procs, nodes: list, devices: Devices, what: str, calls: int, size: int,
          expected_total: int) -> dict:
    n = devices.online
    pids = [info["pid"] for _, info in nodes]
    cpu0 = [cpu_seconds(p) for p in pids]
    loop0 = [node.ask(op="status") for node, _ in nodes]
    dev_cpu0 = cpu_seconds(devices.pid)
    before = redis_cost(procs)
    node0 = nodes[0][0]
    assert node0.proc.stdin is not None
    node0.proc.stdin.write((json.dumps({"op": "fan_out", "what": what, "count": calls, "size": size}) + "\n").encode())
    node0.proc.stdin.flush()
    got = devices.wait(expected_total + n * calls, within=300.0)
    answer = node0.read(300)
    time.sleep(0.3)
    use = redis_delta(before, redis_cost(procs))
    delivered = got["pushes"] - expected_total
    seconds = got["last"] - answer["start"]
    gw_cpu = [cpu_seconds(p) - c for p, c in zip(pids, cpu0)]
    loop1 = [node.ask(op="status") for node, _ in nodes]
    writes = [b["writes"] - a["writes"] for a, b in zip(loop0, loop1)]
    frames = [b["frames_out"] - a["frames_out"] for a, b in zip(loop0, loop1)]
    return {"delivered": delivered, "expected": n * calls, "seconds": seconds, "rate": delivered / seconds,
            "counted": answer["counted"], "redis_usec": use["usec"], "redis_cpu": use["cpu_s"],
            "redis_calls": use["calls"], "gw_cpu": gw_cpu, "dev_cpu": cpu_seconds(devices.pid) - dev_cpu0,
            "commands": use["commands"], "total": got["pushes"], "writes": writes, "frames_out": frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--broadcasts", type=int, default=200, help="broadcast calls per trial (default 200)")
    parser.add_argument("--publishes", type=int, default=5, help="publish calls per trial (default 5)")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--quick", action="store_true", help="500 devices, 10 broadcasts, 2 publishes, 1 trial")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.quick:
        args.devices, args.broadcasts, args.publishes, args.trials = 500, 10, 2, 1
    harness.raise_fd_limit()
    started = time.strftime("%H:%M:%S", time.gmtime())
    loads = [load_average()]
    rows = []
    raw: list[dict] = []
    best: dict[tuple[str, int], float] = {}
    for workers in args.workers:
        procs = Procs()
        try:
            prefix = f"f{workers}"
            first, info = procs.node("--prefix", prefix, "--reuse-port", "--subscribe", f"bench:0:{args.devices}",
                                     name="worker 0", timeout=600)
            nodes = [(first, info)]
            for w in range(1, workers):
                nodes.append(procs.node("--prefix", prefix, "--reuse-port", "--port", info["port"], name=f"worker {w}"))
            devices = procs.add(Devices(info["port"], args.devices))
            online = devices.connect(0, args.devices)
            if online["online"] != args.devices:
                raise RuntimeError(f"only {online} devices online")
            time.sleep(1.0)
            spread = [node.ask(op="connected")["connected"] for node, _ in nodes]
            total = 0
            for what, calls in (("broadcast", args.broadcasts), ("publish", args.publishes)):
                trials = []
                for _ in range(args.trials):
                    t = trial(procs, nodes, devices, what, calls, args.size, total)
                    total = t["total"]
                    trials.append(t)
                    raw.append({"workers": workers, "what": what, **t})
                    print(f"{workers} worker(s) {what}: {t['delivered']:,}/{t['expected']:,} in {t['seconds']:.3f} s "
                          f"= {t['rate']:,.0f}/s; gateway CPU {[round(c, 2) for c in t['gw_cpu']]} s, redis CPU "
                          f"{t['redis_cpu']:.2f} s, devices CPU {t['dev_cpu']:.2f} s", flush=True)
                med = sorted(trials, key=lambda t: t["rate"])[len(trials) // 2]
                d = max(1, med["delivered"])
                rate = statistics.median(t["rate"] for t in trials)
                best[(what, workers)] = rate
                rows.append({"what": what, "workers": workers, "devices per worker": "/".join(map(str, spread)),
                             "calls": calls, "deliveries": med["delivered"], "expected": med["expected"],
                             "deliveries/s (median)": rate,
                             "trials (k/s)": ", ".join(f"{t['rate'] / 1000:.0f}" for t in trials),
                             "gateway CPU s": "+".join(f"{c:.2f}" for c in med["gw_cpu"]),
                             "deliveries per gateway CPU-s": med["delivered"] / max(1e-9, sum(med["gw_cpu"])),
                             "redis CPU s": med["redis_cpu"], "device proc CPU s": med["dev_cpu"],
                             "redis µs/delivery (commandstats)": med["redis_usec"] / d,
                             "redis CPU µs/delivery": med["redis_cpu"] * 1e6 / d,
                             "redis calls/delivery": med["redis_calls"] / d,
                             "frames per write (per worker)": "/".join(
                                 f"{f / w:.1f}" if w else "-" for f, w in zip(med["frames_out"], med["writes"]))})
        finally:
            procs.close()
    loads.append(load_average())
    notes = []
    for what in ("broadcast", "publish"):
        one, two = best.get((what, 1)), best.get((what, 2))
        if one and two:
            ratio = two / one
            notes.append(f"{what}: 2 workers / 1 worker = {ratio:.2f}× (budget ≥ 1.7×: "
                         f"{'met' if ratio >= 1.7 else 'MISSED'})")
    notes += [f"{args.devices:,} devices, {args.size}-byte payload; calls made on worker 0 only, wait=False",
              "cores: not pinned; the workers, redis-server and the device process share the 2 cores",
              f"window {started}–{time.strftime('%H:%M:%S', time.gmtime())} UTC, load average {loads[0]} → {loads[-1]}"]
    report("Cluster: broadcast and publish across workers (issue 12, budget 3)",
           ["what", "workers", "devices per worker", "calls", "deliveries", "deliveries/s (median)", "trials (k/s)",
            "gateway CPU s", "deliveries per gateway CPU-s", "redis CPU s", "device proc CPU s",
            "redis µs/delivery (commandstats)", "redis CPU µs/delivery", "redis calls/delivery",
            "frames per write (per worker)"],
           rows, notes, args.json, extra={"trials": raw})


if __name__ == "__main__":
    main()

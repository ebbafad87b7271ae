"""Issue 12, budget 1: many devices connected with heartbeats, memory per device per worker, loop lag.

    python benchmarks/cluster/connections.py                      # 200,000 devices: 11 workers, 11 simulators
    python benchmarks/cluster/connections.py --quick              # 2,000 devices, 2 workers, a few seconds

One redis-server (AOF everysec); *workers* nodes (``node_proc.py``: a
Server on a RedisStore with a ClusterLink, heartbeat bounds 5..600 s), each
on its own 127.0.0.1 port (one port per worker keeps every simulator below
127.0.0.1's ~28,000 ephemeral ports per destination); one simulator process
per worker (``sim_proc.py``: ``pushcore.Simulator``, fixed heartbeat
*heartbeat* s, no pushes) with devices/workers devices. This machine's hard
fd limit is 20,000 per process, so a worker holds at most ~19,990 devices:
200,000 needs 11 workers of 18,182. Per worker: VmRSS (/proc) before any
device and while all are connected → user-space bytes per device; the
loop's lag (``loop.stats()["lag"]["recent_p99"]``, the last 1,024 samples)
read every few seconds during the ramp and the hold; PINGs answered per
second during the hold. Budget: ≥ 200,000 devices, ≤ 400 B per device per
worker, loop lag p99 ≤ 5 ms.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Procs, harness  # noqa: E402
from harness import load_average, report, rss_bytes  # noqa: E402

SIM = str(Path(__file__).resolve().parent / "sim_proc.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=11)
    parser.add_argument("--heartbeat", type=float, default=20.0, help="device PING interval, s (default 20)")
    parser.add_argument("--hold", type=float, default=45.0, help="seconds measured with everyone connected")
    parser.add_argument("--connect-rate", type=float, default=60.0,
                        help="connects/s per simulator (default 60: 11 x 60 = 660/s in all)")
    parser.add_argument("--ramp-timeout", type=float, default=420.0)
    parser.add_argument("--auth-timeout", type=float, default=600.0,
                        help="the workers' Server(auth_timeout=) (default 600: a HELLO queued behind the others' "
                             "claims is not closed at the Server's default 10 s, which makes the devices retry)")
    parser.add_argument("--quick", action="store_true", help="2,000 devices, 2 workers, 3 s hold")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.quick:
        args.devices, args.workers, args.hold, args.heartbeat, args.connect_rate = 2000, 2, 3.0, 1.0, 1500.0
    harness.raise_fd_limit()
    per = -(-args.devices // args.workers)
    started = time.strftime("%H:%M:%S", time.gmtime())
    loads = [load_average()]
    procs = Procs()
    try:
        nodes = [procs.node("--prefix", "c1", "--heartbeat", 1 if args.quick else 5, 600,
                            "--auth-timeout", args.auth_timeout, name=f"worker {w}")
                 for w in range(args.workers)]
        time.sleep(0.5)
        base = [n.ask(op="status") for n, _ in nodes]
        redis_rss0 = rss_bytes(procs.redis.process.pid)  # type: ignore[union-attr]
        sims = []
        for w, (_node, info) in enumerate(nodes):
            count = min(per, args.devices - w * per)
            sims.append(procs.child([sys.executable, SIM, info["port"], count, f"w{w}-", args.heartbeat,
                                     args.hold + 30, args.connect_rate, args.ramp_timeout], f"simulator {w}"))
        t0 = time.monotonic()
        ramp_lag: list[list[float]] = [[] for _ in nodes]
        last, last_change = -1, time.monotonic()
        while True:
            status = [n.ask(op="status") for n, _ in nodes]
            for i, s in enumerate(status):
                if s["lag_p99"] is not None:
                    ramp_lag[i].append(s["lag_p99"])
            total = sum(s["connected"] for s in status)
            print(f"{time.monotonic() - t0:6.1f} s: {total:,} connected, load {load_average()}", flush=True)
            if total >= args.devices:
                break
            if total != last:
                last, last_change = total, time.monotonic()
            if time.monotonic() - last_change > 30 or time.monotonic() - t0 > args.ramp_timeout:
                print("no progress for 30 s (or ramp timeout): measuring what is connected", flush=True)
                break
            time.sleep(2.0)
        ramp_s = time.monotonic() - t0
        time.sleep(min(3.0, args.hold / 3))
        hold0 = [n.ask(op="status") for n, _ in nodes]
        h0 = time.monotonic()
        hold_lag: list[list[float]] = [[] for _ in nodes]
        samples = []
        while time.monotonic() - h0 < args.hold:
            time.sleep(min(5.0, args.hold / 3))
            status = [n.ask(op="status") for n, _ in nodes]
            samples.append(status)
            for i, s in enumerate(status):
                hold_lag[i].append(s["lag_p99"] or 0.0)
        hold_s = time.monotonic() - h0
        end = samples[-1]
        loads.append(load_average())
        redis_rss = rss_bytes(procs.redis.process.pid)  # type: ignore[union-attr]
        # a simulator reports HOLD s after all its devices were online: wait for that only if they were
        everyone = sum(r["connected"] for r in end) >= args.devices
        sim_reports = []
        for s in sims:
            try:
                sim_reports.append(s.read(args.hold + 60 if everyone else 1.0))
            except RuntimeError:
                sim_reports.append({"online": float("nan"), "failed": float("nan"), "closes": {}, "rss": 0})
        rows = []
        for i, (b, e, h) in enumerate(zip(base, end, hold0)):
            n = e["connected"]
            rows.append({"worker": i, "devices": n, "RSS before MB": b["rss"] / 2**20, "RSS connected MB": e["rss"] / 2**20,
                         "B/device": (e["rss"] - b["rss"]) / n if n else float("nan"),
                         "lag p99 ramp ms (max)": max(ramp_lag[i], default=0.0) * 1000,
                         "lag p99 hold ms (max)": max(hold_lag[i]) * 1000,
                         "lag max ms": (e["lag_max"] or 0.0) * 1000,
                         "PINGs/s": (e["pings_answered"] - h["pings_answered"]) / hold_s,
                         "CPU % hold": 100 * (e["cpu_s"] - h["cpu_s"]) / hold_s,
                         "sim online": sim_reports[i]["online"], "sim failed": sim_reports[i]["failed"]})
        total = sum(r["devices"] for r in rows)
        per_dev = [r["B/device"] for r in rows]
        worst_lag = max(r["lag p99 hold ms (max)"] for r in rows)
        rows.append({"worker": "all", "devices": total, "B/device": statistics.median(per_dev),
                     "lag p99 ramp ms (max)": max(r["lag p99 ramp ms (max)"] for r in rows),
                     "lag p99 hold ms (max)": worst_lag, "PINGs/s": sum(r["PINGs/s"] for r in rows),
                     "CPU % hold": sum(r["CPU % hold"] for r in rows),
                     "sim online": sum(r["online"] for r in sim_reports), "sim failed": sum(r["failed"] for r in sim_reports)})
        closes: dict[str, int] = {}
        for rep in sim_reports:
            for k, v in rep["closes"].items():
                closes[k] = closes.get(k, 0) + v
        notes = [
            f"budget: ≥ 200,000 devices: {'met' if total >= 200_000 else 'MISSED'} ({total:,}); "
            f"≤ 400 B/device per worker: {'met' if max(per_dev) <= 400 else 'MISSED'} "
            f"(median {statistics.median(per_dev):,.0f}, range {min(per_dev):,.0f}–{max(per_dev):,.0f}); "
            f"loop lag p99 ≤ 5 ms: {'met' if worst_lag <= 5 else 'MISSED'} (worst worker, hold: {worst_lag:.2f} ms)",
            f"{args.workers} workers × ≤ {per:,} devices, one simulator process per worker "
            f"({args.connect_rate:g} connects/s each), PING every {args.heartbeat:g} s; ramp {ramp_s:.0f} s, "
            f"hold {hold_s:.0f} s (lag read every {min(5.0, args.hold / 3):g} s)",
            f"B/device = (VmRSS connected − VmRSS before the first device) / devices, per worker process; "
            f"redis-server RSS {redis_rss0 / 2**20:.0f} → {redis_rss / 2**20:.0f} MB",
            f"workers' auth_timeout {args.auth_timeout:g} s; "
            f"simulator RSS median {statistics.median(r['rss'] for r in sim_reports) / 2**20:.0f} MB; "
            f"closes seen by the simulators: {closes or 'none'}",
            f"window {started}–{time.strftime('%H:%M:%S', time.gmtime())} UTC, load average {loads[0]} → {loads[-1]}",
        ]
        report("Cluster: devices connected with heartbeats (issue 12, budget 1)",
               ["worker", "devices", "RSS before MB", "RSS connected MB", "B/device", "lag p99 ramp ms (max)",
                "lag p99 hold ms (max)", "lag max ms", "PINGs/s", "CPU % hold", "sim online", "sim failed"],
               rows, notes, args.json, extra={"samples": samples, "sims": sim_reports})
    finally:
        procs.close()


if __name__ == "__main__":
    main()

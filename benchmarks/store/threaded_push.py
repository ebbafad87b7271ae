"""Separate ``Server.push`` calls from many application threads: durable pushes/s and µs per push.

    python benchmarks/store/threaded_push.py            # 8 threads, distinct and overlapping devices, both stores
    python benchmarks/store/threaded_push.py --quick    # a smoke test
    python benchmarks/store/threaded_push.py --threads 1,8 --pushes 5000 --json out.json

This process is the gateway (``pushcore.Server``, SQLite store in a
temporary directory, or memory; no device connects, so every push is
stored and kept for its device). *T* threads each make ``--pushes``
separate ``Server.push`` calls, each waiting for its own seq, as request
handlers of an application would. Devices: *distinct* = thread t pushes
round-robin to its own ``--devices`` devices; *overlapping* = every
thread pushes round-robin to the same ``--devices`` devices (several
threads' messages interleave on one device). All threads start together
(a barrier); pushes/s = all pushes / (first start → last finish);
"µs per push" = 10⁶ / pushes/s; p50/p99 = one call's latency. Issue 11's
budget: ≥ 100,000 durable pushes/s from 8 threads (group commit). After
each run the harness checks that every thread got strictly increasing
seqs per device and that each device's seq counter equals the pushes made
to it (nothing lost or doubled).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import SECRET, load_average, percentile, report  # noqa: E402

from pushcore import Server, open_store  # noqa: E402


def run(store_kind: str, threads: int, mode: str, pushes: int, devices: int, size: int,
        directory: str | None) -> dict[str, Any]:
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="pushcore-storebench-", dir=directory) as tmp:
        store = open_store("memory:" if store_kind == "memory" else os.path.join(tmp, "gateway.db"))
        server = Server("127.0.0.1", 0, secret=SECRET, store=store)
        server.start()
        payload = b"t" * size
        barrier = threading.Barrier(threads + 1)
        latencies: list[list[float]] = [[] for _ in range(threads)]
        seqs: list[dict[str, list[int]]] = [defaultdict(list) for _ in range(threads)]
        spans: list[tuple[float, float]] = [(0.0, 0.0)] * threads
        errors: list[BaseException] = []

        def targets(t: int) -> list[str]:
            base = t * devices if mode == "distinct" else 0
            return [f"t{base + i:07d}" for i in range(devices)]

        def work(t: int) -> None:
            names = targets(t)
            push = server.push
            mine = latencies[t]
            got = seqs[t]
            clock = time.perf_counter
            try:
                barrier.wait()
                start = clock()
                for i in range(pushes):
                    device = names[i % devices]
                    t0 = clock()
                    got[device].append(push(device, payload))
                    mine.append(clock() - t0)
                spans[t] = (start, clock())
            except BaseException as exc:  # reported below
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        cpu0 = time.process_time()
        barrier.wait()
        for w in workers:
            w.join()
        cpu = time.process_time() - cpu0
        server.stop(timeout=30)
        try:
            # checked once the server has stopped (its store work done), from this thread
            if errors:
                raise RuntimeError(f"{len(errors)} threads failed: {errors[0]!r}")
            expected: dict[str, int] = defaultdict(int)
            for t in range(threads):
                for device, got in seqs[t].items():
                    if any(b <= a for a, b in zip(got, got[1:])):
                        raise RuntimeError(f"thread {t}: seqs for {device} not increasing")
                    expected[device] += len(got)
            wrong = {d: (store.last_seq(d), n) for d, n in expected.items() if store.last_seq(d) != n}
            if wrong:
                raise RuntimeError(f"seq counters differ from the pushes made: {list(wrong.items())[:3]}")
        finally:
            store.close()
    total = threads * pushes
    wall = max(e for _s, e in spans) - min(s for s, _e in spans)
    every = [x * 1e6 for lat in latencies for x in lat]
    return {
        "store": store_kind, "threads": threads, "devices": mode, "pushes": total,
        "pushes/s": total / wall, "µs per push": wall / total * 1e6,
        "call p50 µs": percentile(every, 50), "call p99 µs": percentile(every, 99),
        "CPU µs per push": cpu / total * 1e6, "seconds": wall, "load": load,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,8", help="thread counts, comma-separated")
    parser.add_argument("--modes", default="distinct,overlapping")
    parser.add_argument("--stores", default="sqlite,memory")
    parser.add_argument("--pushes", type=int, default=10_000, help="pushes per thread")
    parser.add_argument("--devices", type=int, default=100, help="devices per thread (distinct) or in all")
    parser.add_argument("--size", type=int, default=100, help="payload bytes")
    parser.add_argument("--dir", default=None, help="where the SQLite file goes (default: the system temp dir)")
    parser.add_argument("--quick", action="store_true", help="300 pushes per thread: a smoke test")
    parser.add_argument("--json", help="write the rows and the machine to this file")
    args = parser.parse_args(argv)
    pushes = 300 if args.quick else args.pushes
    rows = []
    for store in args.stores.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            for mode in args.modes.split(","):
                if threads == 1 and mode == "overlapping":
                    continue  # the same as distinct with one thread
                rows.append(run(store, threads, mode, pushes, args.devices, args.size, args.dir))
                print(f"  {store} {threads} {mode}: done (load {rows[-1]['load']})", file=sys.stderr)
    for row in rows:
        one = next((r for r in rows if r["store"] == row["store"] and r["threads"] == 1), None)
        if one is not None:
            row["vs 1 thread"] = row["pushes/s"] / one["pushes/s"]
    report(
        "Separate pushes from many threads",
        ["store", "threads", "devices", "pushes", "pushes/s", "µs per push", "vs 1 thread", "call p50 µs",
         "call p99 µs", "CPU µs per push", "seconds", "load"],
        rows,
        [f"payload {args.size} B; {args.devices} devices per thread (distinct) or shared (overlapping), offline; "
         "one process: the Server's loop thread plus the pushing threads; CPU = the whole process",
         f"SQLite file in {args.dir or tempfile.gettempdir()}; load = load average 1/5/15 min at the start of each row"],
        args.json,
    )


if __name__ == "__main__":
    main()

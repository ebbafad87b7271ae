"""One publish to a topic of 1,000,000 offline subscribers: store time and peak memory growth.

    python benchmarks/store/offline_publish.py                      # 1,000,000 subscribers, SQLite (~1 minute)
    python benchmarks/store/offline_publish.py --quick              # 20,000 subscribers
    python benchmarks/store/offline_publish.py --subscribers 200000 --stores sqlite,memory --json out.json

This process is the gateway (``pushcore.Server`` on its own loop thread;
no device connects, so every subscriber is offline and the whole publish
is store work). The subscriptions are made first through the public
``Store.subscribe`` (one call per device, not timed). Then, with the
peak-RSS mark reset (Linux ``/proc/self/clear_refs``, else a 5 ms RSS
sampler), one ``Server.publish`` from the main thread: "store s" is that
call's time (it returns once every subscriber's message is stored);
"peak RSS growth" is the process's peak RSS during the call minus its RSS
just before; "RSS after" is what stayed. Issue 11's budget: ≤ 5 s of
store time, in bounded memory. A check afterwards reads back
(``Store.backlog``, once the server has stopped) that the first, middle
and last subscriber hold the message.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    SECRET,
    TOPIC,
    device_name,
    load_average,
    report,
    reset_peak_rss,
    rss_bytes,
)

from pushcore import Server, open_store  # noqa: E402

MiB = 1024 * 1024


class PeakSampler:
    """Samples RSS every 5 ms while running (where /proc/self/clear_refs cannot reset the peak)."""

    def __init__(self) -> None:
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, rss_bytes())


def run(store_kind: str, subscribers: int, size: int, directory: str | None) -> dict[str, Any]:
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="pushcore-storebench-", dir=directory) as tmp:
        store = open_store("memory:" if store_kind == "memory" else os.path.join(tmp, "gateway.db"))
        started = time.monotonic()
        subscribe = store.subscribe
        for i in range(subscribers):
            subscribe(device_name(i), (TOPIC,))
        setup = time.monotonic() - started
        server = Server("127.0.0.1", 0, secret=SECRET, store=store)
        server.start()
        try:
            payload = b"o" * size
            server.call(lambda: None)  # the loop is up and idle
            before = rss_bytes()
            sampler = None if reset_peak_rss() else PeakSampler()
            cpu0 = time.process_time()
            t0 = time.monotonic()
            stored = int(server.publish(TOPIC, payload, ttl=3600))
            seconds = time.monotonic() - t0
            cpu = time.process_time() - cpu0
            peak = sampler.stop() if sampler else rss_bytes(field="VmHWM")
            after = rss_bytes()
        finally:
            server.stop(timeout=30)
        try:  # checked once the server has stopped (its store work done), from this thread
            probes = [device_name(0), device_name(subscribers // 2), device_name(subscribers - 1)]
            held = [store.backlog(d) for d in probes]
        finally:
            store.close()
    if held != [1, 1, 1]:
        raise RuntimeError(f"{store_kind}: subscribers {probes} hold {held} messages, not 1 each")
    return {
        "store": store_kind, "subscribers": subscribers, "stored": stored, "store s": seconds,
        "stored/s": stored / seconds if seconds else float("nan"), "CPU s": cpu,
        "RSS before MiB": before / MiB, "peak RSS growth MiB": (peak - before) / MiB,
        "RSS after MiB": after / MiB, "bytes/subscriber (peak growth)": (peak - before) / max(1, subscribers),
        "subscribe setup s": setup, "peak via": "sampler" if sampler else "VmHWM", "load": load,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--stores", default="sqlite", help="sqlite, memory or both (comma-separated)")
    parser.add_argument("--size", type=int, default=100, help="payload bytes")
    parser.add_argument("--dir", default=None, help="where the SQLite file goes (default: the system temp dir)")
    parser.add_argument("--quick", action="store_true", help="20,000 subscribers: a smoke test of the harness")
    parser.add_argument("--json", help="write the rows and the machine to this file")
    args = parser.parse_args(argv)
    subscribers = 20_000 if args.quick and args.subscribers == 1_000_000 else args.subscribers
    rows = []
    for store in args.stores.split(","):
        rows.append(run(store, subscribers, args.size, args.dir))
        print(f"  {store}: done (load {rows[-1]['load']})", file=sys.stderr)
    report(
        "One publish to offline subscribers",
        ["store", "subscribers", "stored", "store s", "stored/s", "CPU s", "RSS before MiB", "peak RSS growth MiB",
         "RSS after MiB", "bytes/subscriber (peak growth)", "subscribe setup s", "peak via", "load"],
        rows,
        [f"payload {args.size} B, ttl 1 h; one Server.publish from the main thread, the Server's loop on its own "
         "thread, one process, no connections; 'store s' = the call's time; peak RSS growth = peak during the call "
         "- RSS before it; CPU s = the whole process's CPU during the call",
         f"SQLite file in {args.dir or tempfile.gettempdir()}; load = load average 1/5/15 min at the start"],
        args.json,
    )


if __name__ == "__main__":
    main()

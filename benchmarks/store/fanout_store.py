"""The store's cost of one message for many devices: per-device rows, set-based rows, the topic walk.

    python benchmarks/store/fanout_store.py                 # 10,000 and 100,000 devices, SQLite and memory
    python benchmarks/store/fanout_store.py --quick         # 2,000 devices
    python benchmarks/store/fanout_store.py --devices 50000 --rounds 5 --json out.json

No server and no sockets: the store alone, in this process, as the store
pipeline's writer calls it. For each size, a fresh store, the devices
subscribed to one topic (not timed; a fresh store for each way, so none
pays for the rows of another), then ``--rounds`` times each of:

* **per device**: ``Store.append_batch`` of one ``NewMessage`` per device
  with the same fields (the path a message takes when it cannot be shared:
  SQLite runs two statements per device);
* **append_many**: ``Store.append_many(devices, ...)`` (SQLite: the
  set-based path, one upsert RETURNING the seqs and one INSERT ... SELECT
  per 20,000 devices);
* **append_topic**: ``Store.append_topic(topic, ...)`` with no device kept
  (SQLite walks the subscriptions index itself; nothing per device in Python).

µs per device = the call's time / devices, the best of the rounds and the
median; messages accumulate (nothing is acked), as in a burst of publishes.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import load_average, report  # noqa: E402

from pushcore.store import MemoryStore, NewMessage, SQLiteStore  # noqa: E402


def fresh_store(store_kind: str, n: int, tmp: str, what: str) -> tuple[Any, list[str]]:
    """A new store with *n* devices subscribed to topic "t" (so every way starts from the same tables)."""
    name = "".join(ch for ch in what if ch.isalnum())[:24]
    path = os.path.join(tmp, f"fanout-{store_kind}-{n}-{name}.db")
    store = MemoryStore() if store_kind == "memory" else SQLiteStore(path)
    devices = [f"d{i:07d}" for i in range(n)]
    for device in devices:
        store.subscribe(device, ("t",))
    return store, devices


def measure(store_kind: str, n: int, rounds: int, tmp: str) -> list[dict[str, Any]]:
    payload = b"p" * 100
    message_id = iter(range(1, 10**9))
    ways = {
        "per device (append_batch)": lambda store, devices: store.append_batch(
            [NewMessage(d, next(message_id), payload, 1, 0, "", "t") for d in devices]),
        "append_many (set-based on SQLite)": lambda store, devices: store.append_many(
            devices, message_id=next(message_id), payload=payload, priority=1, topic="t"),
        "append_topic (SQLite walks the index)": lambda store, devices: store.append_topic(
            "t", message_id=next(message_id), payload=payload, priority=1, keep=lambda d: False),
    }
    rows = []
    for what, call in ways.items():
        store, devices = fresh_store(store_kind, n, tmp, what)
        try:
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                call(store, devices)
                times.append(time.perf_counter() - started)
        finally:
            store.close()
        rows.append({"store": store_kind, "devices": n, "what": what, "rounds": rounds,
                     "best µs/device": min(times) * 1e6 / n,
                     "median µs/device": statistics.median(times) * 1e6 / n,
                     "best devices/s": n / min(times), "load": load_average()})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="10000,100000", help="sizes, comma-separated")
    parser.add_argument("--stores", default="sqlite,memory")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the SQLite files go (default: the system temp dir)")
    parser.add_argument("--quick", action="store_true", help="2,000 devices, 2 rounds: a smoke test")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    sizes = [2000] if args.quick else [int(x) for x in args.devices.split(",")]
    rounds = 2 if args.quick else args.rounds
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pushcore-fanout-", dir=args.dir) as tmp:
        for store_kind in args.stores.split(","):
            for n in sizes:
                rows += measure(store_kind, n, rounds, tmp)
                print(f"  {store_kind} {n}: done", file=sys.stderr)
    report("Store cost of one message for many devices",
           ["store", "devices", "what", "rounds", "best µs/device", "median µs/device", "best devices/s", "load"],
           rows,
           ["payload 100 B, one message id per call, every device subscribed to the topic; nothing acked between "
            "calls (messages accumulate); SQLite synchronous=NORMAL, WAL, file in the temp dir",
            "load = load average 1/5/15 min after each row"],
           args.json)


if __name__ == "__main__":
    main()

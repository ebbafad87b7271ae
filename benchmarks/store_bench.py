"""Offline-store throughput: MemoryStore vs SQLiteStore (NORMAL and FULL sync).

Prints one table row per (store, workload) with operations per second and
messages per second. Workloads, all on fresh stores:

* ``append``       one message per call, round-robin over DEVICES devices
                   (one transaction per call for SQLite; with FULL sync each commit is an
                   fsync, so FULL runs 1/20 of the messages here);
* ``append+ck``    the same with a collapse key shared by every 10th message;
* ``append@cap``   single appends to 10 devices with ``max_messages=100``:
                   after the first 1,000 every append drops the oldest;
* ``append_batch`` BATCH different messages per call (``append_batch``), as
                   a server gathering one loop turn's messages would;
* ``append_many``  fan-out: one call stores a message for every device
                   (one transaction per call);
* ``range+ack``    drain every device as a reconnecting client would:
                   ``range(after, PAGE)`` then ``ack(last seq)`` per page;
* ``range (HELLO)`` a HELLO-time ``range(device, last_seq, 16)`` on devices
                   with 0-20 waiting messages, without acking.

Usage: ``python benchmarks/store_bench.py [--messages N] [--devices N] [--dir PATH]``
(``--dir`` is where SQLite files go; default: a temporary directory under the
current directory, so the disk is the one the project sits on).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time

from pushcore.store import MemoryStore, NewMessage, SQLiteStore

PAYLOAD = bytes(range(100))  # a typical small notification
PAGE = 100
BATCH = 64
T0 = 1_700_000_000.0


def _timed(fn) -> tuple[float, int, int]:
    start = time.perf_counter()
    ops, messages = fn()
    return time.perf_counter() - start, ops, messages


def workloads(make_store, n_messages: int, n_devices: int, single_append_share: float = 1.0):
    devices = [f"device-{i:06d}" for i in range(n_devices)]
    n_single = max(1, int(n_messages * single_append_share))

    def append():
        store = make_store()
        append_ = store.append
        for i in range(n_single):
            append_(devices[i % n_devices], message_id=i, payload=PAYLOAD, priority=1, now=T0)
        store.close()
        return n_single, n_single

    def append_collapse():
        store = make_store()
        append_ = store.append
        for i in range(n_single):
            key = "score" if i % 10 == 0 else ""
            append_(devices[i % n_devices], message_id=i, payload=PAYLOAD, priority=1,
                    collapse_key=key, now=T0)
        store.close()
        return n_single, n_single

    def append_at_cap():
        store = make_store(max_messages=100)
        for i in range(n_single):
            store.append(devices[i % 10], message_id=i, payload=PAYLOAD, priority=1, now=T0)
        store.close()
        return n_single, n_single

    def append_batch():
        store = make_store()
        calls = 0
        for start in range(0, n_messages, BATCH):
            batch = [
                NewMessage(devices[i % n_devices], i, PAYLOAD, 1)
                for i in range(start, min(start + BATCH, n_messages))
            ]
            store.append_batch(batch, now=T0)
            calls += 1
        store.close()
        return calls, n_messages

    def append_many():
        store = make_store()
        calls = max(1, n_messages // n_devices)
        for i in range(calls):
            store.append_many(devices, message_id=i, payload=PAYLOAD, priority=0, topic="news", now=T0)
        store.close()
        return calls, calls * n_devices

    def range_ack_setup():
        store = make_store()
        calls = max(1, n_messages // n_devices)
        for i in range(calls):
            store.append_many(devices, message_id=i, payload=PAYLOAD, priority=1, now=T0)
        return store

    def range_ack(store):
        ops = drained = 0
        for device in devices:
            after = 0
            while page := store.range(device, after, PAGE, now=T0):
                after = page[-1].seq
                store.ack(device, after)
                ops += 2
                drained += len(page)
        store.close()
        return ops, drained

    def hello_setup():
        store = make_store()
        for i, device in enumerate(devices):
            for j in range(i % 21):
                store.append(device, message_id=j, payload=PAYLOAD, priority=1, now=T0)
        return store

    def hello(store):
        ops = got = 0
        rounds = max(1, n_messages // n_devices)
        for _ in range(rounds):
            for device in devices:
                got += len(store.range(device, 0, 16, now=T0))
                ops += 1
        store.close()
        return ops, got

    return [
        ("append", None, lambda _: append()),
        ("append+ck", None, lambda _: append_collapse()),
        ("append@cap", None, lambda _: append_at_cap()),
        ("append_batch", None, lambda _: append_batch()),
        ("append_many", None, lambda _: append_many()),
        ("range+ack", range_ack_setup, range_ack),
        ("range (HELLO)", hello_setup, hello),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages per workload")
    parser.add_argument("--devices", type=int, default=1_000, help="distinct devices")
    parser.add_argument("--dir", default=None, help="directory for the SQLite files")
    args = parser.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix="store-bench-", dir=args.dir or os.getcwd())
    counter = iter(range(10**9))

    def sqlite_factory(sync: str):
        return lambda **options: SQLiteStore(
            os.path.join(workdir, f"b{next(counter)}.db"), synchronous=sync, **options
        )

    stores = [  # (name, factory, share of messages for the one-commit-per-message workloads)
        ("memory", MemoryStore, 1.0),
        ("sqlite NORMAL", sqlite_factory("NORMAL"), 1.0),
        ("sqlite FULL", sqlite_factory("FULL"), 1 / 20),
    ]
    print(f"# pushcore store benchmark: {args.messages} messages, {args.devices} devices, "
          f"payload {len(PAYLOAD)} B")
    print(f"# Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs, files in {workdir}")
    header = f"| {'store':<14}| {'workload':<15}| {'ops/s':>10} | {'messages/s':>11} | {'seconds':>8} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    try:
        for store_name, factory, share in stores:
            for name, setup, run in workloads(factory, args.messages, args.devices, share):
                state = setup() if setup else None
                seconds, ops, messages = _timed(lambda run=run, state=state: run(state))
                print(f"| {store_name:<14}| {name:<15}| {ops / seconds:>10,.0f} | "
                      f"{messages / seconds:>11,.0f} | {seconds:>8.3f} |", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

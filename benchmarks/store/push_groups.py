"""How many pushes share a commit: separate ``Server.push`` calls from T threads, groups counted.

    python benchmarks/store/push_groups.py              # 1 and 8 threads, 2,000 pushes each, SQLite
    python benchmarks/store/push_groups.py --threads 1,4,8,16 --pushes 5000 --json out.json

One process: a ``Server`` on its own loop thread (SQLite file in the temp
dir, no device connected) and T threads started together, each making
``--pushes`` separate ``Server.push`` calls round robin over its own 100
devices. Reported: pushes/s, and from ``Server.pipeline`` and
``Store.commits`` the groups (transactions) the writer ran for them, the
pushes per group and the largest group.
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

from harness import SECRET, load_average, report  # noqa: E402

from pushcore import Server  # noqa: E402
from pushcore.store import SQLiteStore  # noqa: E402


def run(threads: int, pushes: int, tmp: str) -> dict[str, Any]:
    store = SQLiteStore(os.path.join(tmp, f"groups-{threads}.db"))
    server = Server("127.0.0.1", 0, secret=SECRET, store=store)
    server.start()
    try:
        barrier = threading.Barrier(threads)

        def work(t: int) -> None:
            barrier.wait()
            for i in range(pushes):
                server.push(f"t{t}-d{i % 100}", b"p" * 100)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        pipeline = server.pipeline
        groups0, ops0, commits0 = pipeline.groups, pipeline.ops, store.commits
        started = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        seconds = time.perf_counter() - started
        groups, commits = pipeline.groups - groups0, store.commits - commits0
        return {"threads": threads, "pushes": threads * pushes, "pushes/s": threads * pushes / seconds,
                "groups": groups, "commits": commits, "pushes per group": (pipeline.ops - ops0) / groups,
                "largest group": pipeline.largest_group, "load": load_average()}
    finally:
        server.stop()
        store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,8")
    parser.add_argument("--pushes", type=int, default=2000, help="pushes per thread")
    parser.add_argument("--quick", action="store_true", help="200 pushes per thread")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    pushes = 200 if args.quick else args.pushes
    with tempfile.TemporaryDirectory(prefix="pushcore-groups-") as tmp:
        rows = [run(int(t), pushes, tmp) for t in args.threads.split(",")]
    report("Pushes per commit (group commit) from separate Server.push calls",
           ["threads", "pushes", "pushes/s", "groups", "commits", "pushes per group", "largest group", "load"],
           rows, ["payload 100 B, devices offline, SQLite synchronous=NORMAL (WAL) in the temp dir; "
                  "each push() waits until its message is stored and handed to the loop"], args.json)


if __name__ == "__main__":
    main()

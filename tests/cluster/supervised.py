"""A supervisor of memory-store workers, run as its own process by test_supervisor.py.

Each worker writes ``DIR/worker-INDEX-INCARNATION`` (its pid) once its
factory runs, and ``DIR/served-DEVICE`` (its pid) when a device says HELLO:
the test learns from them which process served whom. Modes:

* ``run``: start, print ``ready HOST PORT``, supervise until SIGTERM;
* ``fail``: the factory of worker 1 raises; the supervisor must give up;
* ``embed``: start(), print workers() as JSON, stop(), print the statuses.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # serverkit

from pushcore import Server  # noqa: E402
from pushcore.cluster import Supervisor, SupervisorError, WorkerInfo  # noqa: E402
from serverkit import SECRET  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("run", "fail", "embed"))
    parser.add_argument("dir", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(process)d %(levelname)s %(message)s")
    out: Path = args.dir

    def make_server(info: WorkerInfo) -> Server:
        (out / f"worker-{info.index}-{info.incarnation}").write_text(str(os.getpid()))
        if args.mode == "fail" and info.index == 1:
            raise RuntimeError("this worker's factory always fails")

        def on_connect(device_id: str, _metadata: dict) -> None:
            (out / f"served-{device_id}").write_text(str(os.getpid()))

        return Server(info.host, info.port, secret=SECRET, store="memory:", reuse_port=True,
                      heartbeat=(0, 30), on_connect=on_connect)

    supervisor = Supervisor(make_server, args.workers, drain_timeout=5.0, backoff=0.05, start_attempts=3,
                            stable_after=60.0, start_timeout=10.0)
    try:
        if args.mode == "embed":
            supervisor.start()
            print(json.dumps([dataclasses.asdict(w) for w in supervisor.workers()]), flush=True)
            statuses = supervisor.stop()
            print(json.dumps({"statuses": statuses,
                              "alive": [w.alive for w in supervisor.workers()]}), flush=True)
            return 0
        host, port = supervisor.start()
        print(f"ready {host} {port}", flush=True)
        supervisor.run()
    except SupervisorError as exc:
        print(f"gave up: {exc}", flush=True)
        return 1
    print(f"stopped after {supervisor.restarts} restarts", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

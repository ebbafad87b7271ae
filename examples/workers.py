"""Two gateway worker processes on one port, under a supervisor, for a few seconds.

``pushcore.cluster.Supervisor`` forks the workers; each builds its own
``Server`` (here on a memory store: each worker has its own, which is
enough to show the processes, not for delivery between them: that needs a
shared store) and listens on the one port with ``SO_REUSEPORT``, so the
kernel spreads the devices over the workers. Every device is greeted by
the worker that serves it. The script connects devices until both workers
served one, kills a worker (the supervisor starts a new one), connects a
device again, then drains everything as a SIGTERM to ``run()`` would. Run it::

    python examples/workers.py

The supervisor forks, so its process starts no threads of its own: the
devices run in a second process (this script again, with ``--devices``).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

from pushcore import Client, Server, mint_token
from pushcore.cluster import Supervisor, WorkerInfo

SECRET = b"example-secret-0123456789abcdef"


def make_server(info: WorkerInfo) -> Server:
    """Runs in each new worker process: its own Server, store and loop."""
    def greet(device_id: str, _metadata: dict) -> None:
        server.push(device_id, f"worker {info.index} (pid {os.getpid()})".encode())

    server = Server(info.host, info.port, secret=SECRET, store="memory:", reuse_port=True, on_connect=greet)
    return server


def devices(address: str, wanted: int, limit: int = 60) -> int:
    """The device side: connect phones one by one until *wanted* workers greeted one; print who served whom."""
    seen: set[str] = set()
    for n in range(limit):
        got: list[str] = []
        arrived = threading.Event()

        def on_message(push, got=got, arrived=arrived) -> None:
            got.append(bytes(push.payload).decode())
            arrived.set()

        name = f"phone-{n}"
        client = Client(name, mint_token(SECRET, name), [address], on_message=on_message)
        client.start()
        try:
            if not arrived.wait(10):
                print(f"FAIL: {name} was not greeted")
                return 1
        finally:
            client.stop()
        worker = got[0].split(" (")[0]
        if worker not in seen:
            print(f"  {name} served by {got[0]}", flush=True)
            seen.add(worker)
        if len(seen) >= wanted:
            return 0
    print(f"FAIL: only {sorted(seen)} served {limit} devices")
    return 1


def run_devices(supervisor: Supervisor, address: str, wanted: int) -> int:
    """The device process, while this one keeps supervising (restarts happen in poll())."""
    proc = subprocess.Popen([sys.executable, __file__, "--devices", address, "--wanted", str(wanted)])
    while proc.poll() is None:
        supervisor.poll(0.1)
    return proc.returncode


def main() -> int:
    supervisor = Supervisor(make_server, workers=2, drain_timeout=5.0)
    host, port = supervisor.start()  # forks the workers; returns once both listen
    address = f"{host}:{port}"
    try:
        print(f"2 workers listening on {address}, pids {[w.pid for w in supervisor.workers()]}", flush=True)
        both = run_devices(supervisor, address, wanted=2)

        victim = supervisor.workers()[0]
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)  # a crash: the supervisor restarts it after a short backoff
        deadline = time.monotonic() + 10
        while not (supervisor.workers()[0].ready and supervisor.workers()[0].incarnation == 1):
            if time.monotonic() > deadline:
                print("FAIL: worker 0 was not restarted")
                return 1
            supervisor.poll(0.1)  # run() does this until SIGTERM; an embedder steps it by hand
        restarted = supervisor.workers()[0]
        print(f"worker 0 killed (pid {victim.pid}); restarted as pid {restarted.pid}, "
              f"incarnation {restarted.incarnation}", flush=True)
        after = run_devices(supervisor, address, wanted=1)
    finally:
        statuses = supervisor.stop()  # what SIGTERM does to run(): every worker drains, then exits
    print(f"stopped: exit statuses {statuses}, {supervisor.restarts} restart(s)")
    ok = both == 0 and after == 0 and statuses == {0: 0, 1: 0} and supervisor.restarts == 1
    print("ok" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", metavar="HOST:PORT", help=argparse.SUPPRESS)
    parser.add_argument("--wanted", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.exit(devices(args.devices, args.wanted) if args.devices else main())

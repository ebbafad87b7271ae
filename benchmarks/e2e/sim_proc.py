"""Simulated devices in their own process, holding connections with heartbeats flowing.

Connects ``--devices`` devices to ``127.0.0.1:--port`` with a fixed heartbeat,
prints ``{"online": N, "seconds": S, "rss": BYTES}`` once they are all online
(or at ``--timeout``), keeps them connected until its stdin closes, then prints
``{"closes": {...}, "counts": {...}, "online": N}`` and exits. Used by ``run_e2e.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import select
import sys
import time


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--prefix", default="held-")
    parser.add_argument("--interval", type=float, default=10.0, help="heartbeat interval, seconds")
    parser.add_argument("--connect-rate", type=float, default=3000.0)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    from gateway_proc import SECRET_HEX

    from pushcore.sim.profiles import Profile
    from pushcore.sim.simulator import Simulator

    profile = Profile(heartbeat="fixed", heartbeat_fixed=args.interval, pong_timeout=5.0,
                      connect_rate=args.connect_rate, backoff=(0.2, 2.0))
    sim = Simulator([("127.0.0.1", args.port)], devices=args.devices, secret=bytes.fromhex(SECRET_HEX),
                    id_prefix=args.prefix, profile=profile, seed=1)
    start = time.monotonic()
    sim.start()
    deadline = start + args.timeout
    while sim.online < args.devices and time.monotonic() < deadline:
        sim.loop.run_once(0.05)
    print(json.dumps({"online": sim.online, "seconds": time.monotonic() - start, "rss": rss_bytes()}), flush=True)
    stdin = sys.stdin.fileno()
    while True:
        ready, _, _ = select.select([stdin], [], [], 0)
        if ready and not os.read(stdin, 4096):
            break
        sim.loop.run_once(0.1)
    print(json.dumps({"closes": sim.closes, "counts": sim.counts, "online": sim.online}), flush=True)
    sim.close()


if __name__ == "__main__":
    main()

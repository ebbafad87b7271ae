"""Embed the device simulator: a gateway and a fleet of simulated phones in one script.

This is what ``pushcore demo`` does, written out with the library API so you
can change any part: the gateway (a :class:`pushcore.Server` with your own
hooks), the devices' behaviour (a :class:`pushcore.sim.profiles.Profile`),
and the traffic (a :class:`pushcore.sim.traffic.Pusher` into the server).

    python examples/simulate_devices.py --devices 500 --duration 5 --rate 300
    python examples/simulate_devices.py --nat 1.45 --json report.json

It prints the simulator's report; the exit status is 0 when every device got
every message once and in order.
"""
from __future__ import annotations

import argparse
import os
import sys

from pushcore.gateway.server import Server
from pushcore.sim.profiles import Profile
from pushcore.sim.report import Progress
from pushcore.sim.simulator import Simulator
from pushcore.sim.traffic import Pusher, ServerSink


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A gateway and simulated devices in one process, with a report.")
    parser.add_argument("--devices", type=int, default=500, help="how many simulated devices (default 500)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of traffic (default 5)")
    parser.add_argument("--rate", type=float, default=300.0, help="pushes per second (default 300)")
    parser.add_argument("--nat", type=float, default=None, metavar="T",
                        help="a NAT drops connections idle for T seconds (try 1.45)")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the report as JSON too")
    args = parser.parse_args(argv)

    secret = os.urandom(32)
    connected = 0

    def on_connect(device_id: str, metadata: dict) -> None:
        nonlocal connected  # a hook of your own: runs on the gateway's loop thread
        connected += 1

    server = Server("127.0.0.1", 0, secret=secret, store="memory:", heartbeat=(0, 5), on_connect=on_connect)
    host, port = server.start()

    # The published adaptive heartbeat (3.5 min floor, +60 s after successes, -20 s on a
    # failure) run 250 times faster, so a few seconds show what takes hours on a phone.
    profile = Profile(heartbeat="adaptive", heartbeat_scale=0.004, heartbeat_successes=2,
                      pong_timeout=0.3, nat_timeout=args.nat, nat_fraction=1.0,
                      churn_online=20.0, churn_offline=0.5, connect_rate=2000.0, backoff=(0.05, 1.0))
    sim = Simulator([(host, port)], devices=args.devices, secret=secret, profile=profile)
    pusher = Pusher(ServerSink(server, sim.id_prefix, sim.run_id), args.devices, args.rate)
    try:
        report = sim.run(args.duration, pusher=pusher, progress=Progress())
    finally:
        pusher.stop()
        sim.close()
        server.stop()
    print(report.table())
    print(f"(the gateway's on_connect hook ran {connected} times)")
    if args.json:
        with open(args.json, "w") as f:
            f.write(report.to_json())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

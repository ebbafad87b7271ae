"""Idle simulated devices with heartbeats, in their own process: one ``pushcore.Simulator``.

    python benchmarks/cluster/sim_proc.py PORT COUNT PREFIX HEARTBEAT HOLD CONNECT_RATE RAMP_TIMEOUT

*COUNT* devices ``<PREFIX>0 ..`` connect to 127.0.0.1:PORT at most
*CONNECT_RATE* a second (tokens from the benchmark secret), PING every
*HEARTBEAT* seconds (``Profile(heartbeat="fixed")``; no churn, NAT or
resets, no pushes) and stay connected; ``Simulator.run(HOLD)`` returns
*HOLD* seconds after every device was online (or after *RAMP_TIMEOUT* s),
then one JSON line: online, failed, the simulator's counters and close
reasons, its loop lag, its RSS.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "store"))

from harness import SECRET, raise_fd_limit, rss_bytes  # noqa: E402

from pushcore import Profile, Simulator  # noqa: E402


def main() -> None:
    port, count, prefix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    heartbeat, hold, rate, ramp = (float(a) for a in sys.argv[4:8])
    raise_fd_limit()
    profile = Profile(heartbeat="fixed", heartbeat_fixed=heartbeat, connect_rate=rate, connect_timeout=30.0)
    sim = Simulator([("127.0.0.1", port)], devices=count, secret=SECRET, id_prefix=prefix, profile=profile, seed=1)
    try:
        sim.run(hold, ramp_timeout=ramp, drain_timeout=1.0, settle=0.1)
        print(json.dumps({"online": sim.online, "failed": sim.failed, "counts": sim.counts, "closes": sim.closes,
                          "refusals": sim.refusals, "goaways": sim.goaways, "rss": rss_bytes(),
                          "ramp_s": (sim.all_online_at - sim.started_at) if sim.all_online_at and sim.started_at
                          else None}), flush=True)
        sys.stdin.read()  # stay connected until the driver closes stdin
    finally:
        sim.close()


if __name__ == "__main__":
    main()

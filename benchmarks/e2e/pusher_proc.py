"""An application server in its own process: pushes at a fixed rate through the admin API.

Sends ``--rate`` messages per second to devices ``PREFIX0 .. PREFIX(N-1)``
(one ``POST /v1/push/batch`` per ``--tick``), each carrying its device
counter and send time (:mod:`pushcore.sim.traffic`), until its stdin
closes; then prints ``{"sent": [...], "total", "errors", "achieved"}``: the
last counter sent to each device, which the simulator checks against.
Used by ``run_e2e.py`` so that pushing does not share a process (and a GIL)
with the devices that measure the latency.
"""
from __future__ import annotations

import argparse
import json
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--admin", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--run-id", type=int, required=True)
    parser.add_argument("--tick", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()

    from pushcore.admin.client import AdminClient
    from pushcore.sim.traffic import AdminSink, Pusher

    client = AdminClient(args.admin, args.token)
    pusher = Pusher(AdminSink(client, args.prefix, args.run_id), args.devices, args.rate,
                    tick=args.tick, seed=args.seed)
    pusher.start()
    sys.stdin.buffer.read()  # until the parent closes our stdin
    pusher.stop()
    client.close()
    print(json.dumps({"sent": list(pusher.sent), "total": pusher.total, "errors": pusher.errors,
                      "achieved": pusher.achieved_rate}), flush=True)


if __name__ == "__main__":
    main()

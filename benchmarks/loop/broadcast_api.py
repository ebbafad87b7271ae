"""Back-to-back ``Server.broadcast`` through the public API: ``wait=True`` vs ``wait=False``.

A pushcore ``Server`` runs in this process (its loop in its own thread, as an
application embeds it). The C counting client (benchmarks/loop/count_client.c,
the reader of BENCHMARKS.md's burst-mode fan-out figures) opens CONNS
connections, each its own device (HELLO with the device id ``bench-NNNNN``;
the server's ``authenticate`` hook accepts any token). Then the application
thread -- this script's main thread -- calls ``server.broadcast(payload)``
FRAMES times back to back:

* ``wait=True``: each call waits for the loop to have run it (the default);
* ``wait=False``: each call returns a Future at once; the loop runs what
  arrived in one turn in that turn and writes it out together.

Every PUSH (ephemeral, seq 0) is exactly 105 bytes, so the client turns bytes
into deliveries exactly; its rate is from the first byte to the last. The
table prints deliveries/s from the application's first call to the last
byte any reader got (the figure to quote), the client's own rate (its first
byte to its last), how long the FRAMES calls took on the application thread,
and when all their futures were done. Rounds alternate the two modes; compare them as a
ratio within one run (this machine is shared).

    python benchmarks/loop/broadcast_api.py [--conns 1000] [--frames 2000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cbuild  # noqa: E402
from procs import Child  # noqa: E402

import pushcore  # noqa: E402
from pushcore import Server  # noqa: E402
from wire import FRAME_SIZE, HEARTBEAT_SECONDS  # noqa: E402

PAYLOAD = b"b" * (FRAME_SIZE - len(pushcore.encode_push(0, 2**63, b"")))


def hello_hex() -> str:
    return pushcore.Hello(
        versions=(pushcore.PROTOCOL_VERSION,), device_id="bench-#####", token=b"bench-token",
        last_seq=0, heartbeat=HEARTBEAT_SECONDS,
    ).encode().hex()


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def one_round(server: Server, client_exe, conns: int, frames: int, wait: bool, timeout: float) -> dict:
    port = server.address[1]
    argv = [client_exe, "fanout", "-n", conns, "-f", frames, "-t", timeout, "-p", port, "-H", hello_hex()]
    with Child(argv, "count_client") as client:
        client.expect("handshaken", timeout)
        wait_until(lambda: server.device_count() == conns, timeout, "every device attached")
        t0 = time.monotonic()  # CLOCK_MONOTONIC, the client's clock
        if wait:
            counts = [server.broadcast(PAYLOAD) for _ in range(frames)]
        else:
            futures = [server.broadcast(PAYLOAD, wait=False) for _ in range(frames)]
            t_calls = time.monotonic() - t0
            counts = [f.result(timeout) for f in futures]
        t_done = time.monotonic() - t0
        if wait:
            t_calls = t_done
        result = client.json_line(timeout + 10)
        rc = client.wait(10)
    result["e2e_rate"] = conns * frames / (result["last_byte"] - t0)
    wait_until(lambda: server.device_count() == 0, timeout, "every device gone")
    if rc != 0 or not result.get("exact") or any(int(c) != conns for c in counts):
        raise RuntimeError(f"round failed: rc={rc} result={result} counts={set(map(int, counts))}")
    return {"rate": result["rate"], "e2e": result["e2e_rate"], "calls_s": t_calls, "done_s": t_done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=2000, help="broadcast calls per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each mode (alternating)")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--modes", default="wait,nowait", help="wait, nowait or both (comma-separated)")
    args = parser.parse_args()
    modes = [{"wait": True, "nowait": False}[m.strip()] for m in args.modes.split(",")]
    client_exe = cbuild.build("count_client")
    server = Server("127.0.0.1", 0, authenticate=lambda device, token, meta: True, store="memory:",
                    heartbeat=(30, HEARTBEAT_SECONDS), idle_grace=60.0, auth_timeout=60.0,
                    connect_rate=0, source_connect_rate=0)
    server.start()
    results: dict[bool, list[dict]] = {True: [], False: []}
    try:
        for _ in range(args.rounds):
            for wait in modes:
                results[wait].append(one_round(server, client_exe, args.conns, args.frames, wait, args.timeout))
    finally:
        server.stop(timeout=10.0)
    print(f"Server.broadcast x {args.frames} back to back from the application thread, "
          f"{args.conns} C readers, {FRAME_SIZE}-byte PUSH, {args.rounds} rounds each (median; all rounds)")
    print(f"{'mode':<12} {'first call->last byte':>22} {'first->last byte':>17} {'calls took':>11}"
          f" {'futures done':>13}")
    median = {}
    for wait in modes:
        rows = results[wait]
        median[wait] = statistics.median(r["e2e"] for r in rows)
        print(f"{'wait=True' if wait else 'wait=False':<12} {median[wait]:>16,.0f} del/s "
              f"{statistics.median(r['rate'] for r in rows):>11,.0f} del/s "
              f"{statistics.median(r['calls_s'] for r in rows) * 1000:>9.0f}ms "
              f"{statistics.median(r['done_s'] for r in rows) * 1000:>11.0f}ms   rounds (M/s, first call->last byte): "
              + ", ".join(f"{r['e2e'] / 1e6:.2f}" for r in rows))
    if len(median) == 2:
        print(f"wait=False / wait=True (first call -> last byte): {median[False] / median[True]:.2f}x")


if __name__ == "__main__":
    main()

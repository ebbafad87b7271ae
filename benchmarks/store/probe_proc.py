"""The probe device, in its own process: PING every 2 ms, PING→PONG round trips timed here.

    python benchmarks/store/probe_proc.py --port P [--interval 0.002]

Connects as device ``probe`` (HELLO, WELCOME), prints ``{"ready": true}``,
then sends one PING every *interval* seconds on schedule, whether or not
earlier PONGs have come back (a heartbeat does not wait either; the gateway
answers in order), and times each PONG against its PING's send time. When
its stdin closes (or on ``{"op": "quit"}``) it stops pinging, waits up to
1 s for the PONGs still on their way, prints
``{"samples": [[sent, rtt], ...], "unanswered": N}`` (monotonic seconds)
and exits; the driver cuts the samples into idle and busy windows by send time.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import select
import socket
import sys
import time

from harness import SECRET

import pushcore

PING = pushcore.Ping().encode()
PONG = pushcore.Pong.TYPE
WELCOME = pushcore.Welcome.TYPE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interval", type=float, default=0.002)
    args = parser.parse_args()

    sock = socket.create_connection(("127.0.0.1", args.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(pushcore.Hello(device_id="probe", token=pushcore.mint_token(SECRET, "probe")).encode())
    decoder = pushcore.Decoder()
    welcomed = False
    while not welcomed:
        data = sock.recv(4096)
        if not data:
            raise SystemExit("probe: the gateway closed the connection before WELCOME")
        welcomed = any(f.TYPE == WELCOME for f in decoder.feed(data))
    sock.setblocking(False)
    print(json.dumps({"ready": True}), flush=True)

    stdin = sys.stdin.fileno()
    poller = select.poll()
    poller.register(stdin, select.POLLIN)
    poller.register(sock.fileno(), select.POLLIN)
    outstanding: collections.deque[float] = collections.deque()
    samples: list[tuple[float, float]] = []
    interval = args.interval
    next_ping = time.monotonic()
    running = True
    while running:
        now = time.monotonic()
        if now >= next_ping:
            sock.send(PING)
            outstanding.append(now)
            # on schedule; after a stall of this process, go on from now (no burst)
            next_ping = next_ping + interval if now - next_ping < interval else now + interval
        for fd, _events in poller.poll(max(0.0, next_ping - time.monotonic()) * 1000.0):
            if fd == stdin:
                line = os.read(stdin, 4096)
                if not line or b"quit" in line:
                    running = False
                continue
            data = sock.recv(65536)
            if not data:
                running = False
                break
            arrived = time.monotonic()
            for frame in decoder.feed(data):
                if frame.TYPE == PONG and outstanding:
                    sent = outstanding.popleft()
                    samples.append((sent, arrived - sent))
    # stopped: no more PINGs; the PONGs still on their way are waited for (1 s at most)
    sock.setblocking(True)
    sock.settimeout(0.1)
    deadline = time.monotonic() + 1.0
    while outstanding and time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            break
        arrived = time.monotonic()
        for frame in decoder.feed(data):
            if frame.TYPE == PONG and outstanding:
                sent = outstanding.popleft()
                samples.append((sent, arrived - sent))
    print(json.dumps({"samples": samples, "unanswered": len(outstanding)}), flush=True)


if __name__ == "__main__":
    main()

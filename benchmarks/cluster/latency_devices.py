"""Devices that time each PUSH, in their own process: raw sockets, pushcore's codec, one epoll loop.

    python benchmarks/cluster/latency_devices.py PORT FIRST COUNT

Connects devices ``device_name(FIRST .. FIRST+COUNT-1)`` to 127.0.0.1:PORT
(HELLO with a token from the benchmark secret), acks cumulatively once per
read, and for each PUSH records ``time.monotonic()`` at receipt minus the
double in the payload's first 8 bytes (the push call's time, same machine
clock). Prints ``{"online": N}`` once every device is welcomed, then
answers ``collect`` (the latencies since the last collect, in ms, and
clears them) and ``quit``.
"""
from __future__ import annotations

import json
import select
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "store"))

from harness import SECRET, device_name, raise_fd_limit  # noqa: E402

import pushcore  # noqa: E402


def main() -> None:
    port, first, count = (int(a) for a in sys.argv[1:4])
    raise_fd_limit()
    ep = select.epoll()
    conns: dict[int, tuple[socket.socket, pushcore.Decoder]] = {}
    for i in range(first, first + count):
        name = device_name(i)
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(pushcore.Hello(device_id=name, token=pushcore.mint_token(SECRET, name)).encode())
        conns[s.fileno()] = (s, pushcore.Decoder())
    welcomed: set[int] = set()
    lat: list[float] = []
    unpack = struct.Struct("<d").unpack_from
    for fd in conns:
        ep.register(fd, select.EPOLLIN)
    ep.register(sys.stdin.fileno(), select.EPOLLIN)
    announced = False
    closed = 0
    deadline = time.monotonic() + 120
    while True:
        if not announced and (len(welcomed) + closed >= count or time.monotonic() > deadline):
            print(json.dumps({"online": len(welcomed), "closed": closed}), flush=True)
            announced = True
        for fd, _ev in ep.poll(0.5):
            if fd == sys.stdin.fileno():
                line = sys.stdin.readline()
                if not line or line.strip() == "quit":
                    return
                print(json.dumps({"latencies_ms": lat}), flush=True)
                lat = []
                continue
            s, dec = conns[fd]
            data = s.recv(1 << 16)
            now = time.monotonic()
            if not data:
                ep.unregister(fd)
                closed += 1
                continue
            top = 0
            for frame in dec.feed(data):
                if isinstance(frame, pushcore.Push):
                    lat.append((now - unpack(frame.payload)[0]) * 1000.0)
                    top = max(top, frame.seq)
                elif isinstance(frame, pushcore.Welcome):
                    welcomed.add(fd)
            if top:
                s.sendall(pushcore.encode_ack(top))


if __name__ == "__main__":
    main()

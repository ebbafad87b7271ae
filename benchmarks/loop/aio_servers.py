"""asyncio and uvloop servers for the connection-loop benchmarks.

The same Python code runs on both event loops (``--impl asyncio|uvloop``),
written the way a careful asyncio programmer would write a push gateway:
one ``asyncio.Protocol`` per connection, ``transport.write`` per delivery.

Modes (the driver, run_all.py, starts one process per run):

* ``fanout`` -- accept N connections; when all are connected (and, with
  ``--handshake``, have sent HELLO and got WELCOME) broadcast the frames in
  ``--frames-file`` to every connection.  ``--burst 1`` pushes each frame on
  its own: ``for t in transports: t.write(frame)`` and then
  ``await asyncio.sleep(0)``, so the event loop turns between frames and
  nothing coalesces except what the kernel send buffer holds.  ``--burst K``
  writes K frames per connection before yielding.
* ``ping`` -- answer every PING (30 00) with a PONG (40 00), after a
  HELLO/WELCOME handshake.
* ``idle`` -- accept connections, answer HELLO with WELCOME, then hold them;
  prints ``authenticated N`` each time another 1,000 are through.

Protocol with the driver: ``listening PORT`` on stdout when ready, result
lines as JSON, and the process exits when stdin closes.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wire import FRAME_SIZE, PING, PONG, welcome_frame  # noqa: E402

WELCOME = welcome_frame()
HELLO_TYPE = 1
PING_TYPE = 3


def raise_fd_limit() -> None:
    """Soft fd limit up to the hard limit: 10,000 connections need it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def split_frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """Take every whole frame off the front of *buf*: (type, body) pairs.

    A minimal splitter (header byte, body-length varint, body), enough for
    HELLO and PING; the benchmark clients send nothing else.
    """
    out = []
    while len(buf) >= 2:
        length = 0
        shift = 0
        i = 1
        while True:
            if i >= len(buf):
                return out
            b = buf[i]
            length |= (b & 0x7F) << shift
            i += 1
            if not b & 0x80:
                break
            shift += 7
            if shift > 28:
                raise ValueError("body length varint overruns")
        end = i + length
        if len(buf) < end:
            return out
        out.append((buf[0] >> 4, bytes(buf[i:end])))
        del buf[:end]
    return out


class Server:
    """Shared state: the connections and what to do when they are all in."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.transports: list[asyncio.Transport] = []
        self.ready = 0
        self.closed = 0      # connections that were ready and closed since
        self.all_ready = asyncio.get_running_loop().create_future()

    def connection_ready(self, transport: asyncio.Transport) -> None:
        self.transports.append(transport)
        self.ready += 1
        live = self.ready - self.closed
        if self.args.mode == "idle" and live % 1000 == 0:
            print(f"authenticated {live}", flush=True)
        if live == self.args.conns and not self.all_ready.done():
            self.all_ready.set_result(None)
            if self.args.mode == "idle":
                asyncio.get_running_loop().call_later(
                    0.5, lambda: print(json.dumps({"authenticated": self.ready}), flush=True))


class BenchProtocol(asyncio.Protocol):
    """One connection: HELLO -> WELCOME, then PING -> PONG (fanout ignores input)."""

    __slots__ = ("server", "transport", "buffer", "authenticated")

    def __init__(self, server: Server):
        self.server = server
        self.transport = None
        self.buffer = bytearray()
        self.authenticated = False

    def connection_made(self, transport):
        self.transport = transport
        if not self.server.args.handshake:
            self.authenticated = True
            self.server.connection_ready(transport)

    def connection_lost(self, exc):
        if self.authenticated:
            self.server.closed += 1
            if self.server.args.mode == "fanout":   # closed ones must not be written to
                self.server.transports.remove(self.transport)

    def data_received(self, data):
        if self.authenticated and data == PING:   # the common case: one whole PING
            self.transport.write(PONG)
            return
        self.buffer += data
        for frame_type, _body in split_frames(self.buffer):
            if frame_type == PING_TYPE and self.authenticated:
                self.transport.write(PONG)
            elif frame_type == HELLO_TYPE and not self.authenticated:
                # (like the pushcore server, keep no per-device state beyond
                # the connection itself)
                self.authenticated = True
                self.transport.write(WELCOME)
                self.server.connection_ready(self.transport)
            else:
                self.transport.close()
                return


async def broadcast(server: Server, frames: list[bytes], burst: int) -> dict:
    """Push every frame to every connection, yielding to the loop every *burst* frames."""
    transports = server.transports
    t0 = time.perf_counter()
    for start in range(0, len(frames), burst):
        for frame in frames[start:start + burst]:
            for t in transports:
                t.write(frame)
        await asyncio.sleep(0)   # a loop turn between frames (or bursts)
    t_queued = time.perf_counter()
    # done when every byte is in the kernel
    while any(t.get_write_buffer_size() for t in transports):
        await asyncio.sleep(0.0005)
    t1 = time.perf_counter()
    return {
        "server_seconds": t1 - t0,
        "queued_seconds": t_queued - t0,
        "deliveries": len(frames) * len(transports),
    }


async def wait_stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.buffer.read)


async def main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    loop = asyncio.get_running_loop()
    server = Server(args)
    srv = await loop.create_server(
        lambda: BenchProtocol(server), "127.0.0.1", 0, backlog=4096, reuse_address=True
    )
    port = srv.sockets[0].getsockname()[1]
    print(f"listening {port}", flush=True)
    stdin_closed = asyncio.ensure_future(wait_stdin_closed())
    if args.mode == "fanout":
        with open(args.frames_file, "rb") as f:
            data = f.read()
        frames = [data[i:i + FRAME_SIZE] for i in range(0, len(data), FRAME_SIZE)]
        await asyncio.wait([server.all_ready, stdin_closed], return_when=asyncio.FIRST_COMPLETED)
        if server.all_ready.done():
            result = await broadcast(server, frames, args.burst)
            result.update(impl=args.impl, burst=args.burst)
            print(json.dumps(result), flush=True)
    await stdin_closed
    srv.close()
    for t in server.transports:
        t.abort()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--impl", choices=("asyncio", "uvloop"), required=True)
    p.add_argument("--mode", choices=("fanout", "ping", "idle"), required=True)
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--frames-file", help="fanout: F frames of 105 bytes back to back")
    p.add_argument("--burst", type=int, default=1, help="fanout: frames written per loop turn")
    p.add_argument("--handshake", action="store_true",
                   help="fanout: wait for HELLO from every connection before broadcasting")
    args = p.parse_args(argv)
    if args.mode in ("ping", "idle"):
        args.handshake = True
    if args.mode == "fanout" and not args.frames_file:
        p.error("fanout needs --frames-file")
    return args


if __name__ == "__main__":
    args = parse_args()
    if args.impl == "uvloop":
        import uvloop

        uvloop.run(main(args))
    else:
        asyncio.run(main(args))

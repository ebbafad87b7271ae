"""pushcore servers for the connection-loop benchmarks (``pushcore._loop.Loop``).

The same jobs as aio_servers.py, on the C-level loop run by ``Loop.run()`` in
the main thread (no asyncio):

* every accepted connection is behind the auth gate
  (``listen(auth_timeout=...)``); its HELLO reaches ``on_frames`` (batched:
  one call per turn) where the server calls ``loop.authenticate(cid)`` and
  sends a WELCOME -- the steady state of a real gateway;
* ``fanout`` -- once all N are authenticated, broadcast the frames in
  ``--frames-file``.  ``--burst 1``: one ``send_many(cids, frame)`` per loop
  turn (a ``call_soon`` callback that schedules the next one, so the loop
  flushes -- one writev per connection -- between frames).  ``--burst K``:
  K ``send_many`` calls per turn, which the loop coalesces into one writev
  per connection;
* ``ping`` -- nothing in Python: the loop answers PING with PONG in C;
* ``idle`` -- hold the authenticated connections; ``authenticated N`` is
  printed every 1,000.

Protocol with the driver (run_all.py): ``listening PORT`` when ready, JSON
result lines, exit when stdin closes.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pushcore._frame import Hello  # noqa: E402
from pushcore._loop import Loop, sizeof_conn  # noqa: E402
from wire import FRAME_SIZE, welcome_frame  # noqa: E402

WELCOME = welcome_frame()
AUTH_TIMEOUT = 60.0


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class BenchServer:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.loop = Loop(**args.loop_options)
        self.cids: list[int] = []
        self.closed: dict[int, int] = {}   # reason -> count
        self.authenticated = 0
        self.frames: list[bytes] = []
        self.next_frame = 0
        self.t0 = self.t_queued = 0.0
        self.turns0 = self.writes0 = 0
        self.loop.set_handlers(on_frames=self.on_frames, on_close=self.on_close)
        self.lid = self.loop.listen("127.0.0.1", 0, backlog=4096, auth_timeout=AUTH_TIMEOUT)
        if args.mode == "fanout":
            with open(args.frames_file, "rb") as f:
                data = f.read()
            self.frames = [data[i:i + FRAME_SIZE] for i in range(0, len(data), FRAME_SIZE)]

    # -- handlers (one call per turn with every frame that needs Python)

    def on_frames(self, batch):
        loop = self.loop
        for cid, frame in batch:
            if isinstance(frame, Hello):
                loop.authenticate(cid)
                loop.send(cid, WELCOME)
                self.cids.append(cid)   # append-only: send_many skips closed cids
                self.authenticated += 1
                n = self.authenticated - sum(self.closed.values())   # live
                if self.args.mode == "idle" and n % 1000 == 0:
                    print(f"authenticated {n}", flush=True)
                if n == self.args.conns and self.args.mode == "fanout":
                    loop.call_soon(self.start_broadcast)
                if n == self.args.conns and self.args.mode == "idle":
                    loop.call_later(0.5, self.report_idle)
            else:
                print(f"unexpected frame {frame!r}", file=sys.stderr, flush=True)

    def on_close(self, batch):
        for _cid, reason in batch:
            self.closed[reason] = self.closed.get(reason, 0) + 1

    def report_idle(self):
        """What the loop holds once every connection is authenticated and idle."""
        st = self.loop.stats()
        print(json.dumps({
            "authenticated": self.authenticated, "sizeof_conn": sizeof_conn(),
            "pool": self.loop.pool_stats(),
            "send_queue_bytes": st["send_queue_bytes"],
            "recv_partial_bytes": st["recv_partial_bytes"], "turns": st["turns"],
            "closed": self.closed,
        }), flush=True)

    # -- fan-out

    def start_broadcast(self):
        st = self.loop.stats()
        self.turns0, self.writes0 = st["turns"], st["writes"]
        self.t0 = time.perf_counter()
        self.push_burst()

    def push_burst(self):
        """One loop turn's worth: `burst` frames to every connection."""
        send_many, cids = self.loop.send_many, self.cids
        end = min(self.next_frame + self.args.burst, len(self.frames))
        for frame in self.frames[self.next_frame:end]:
            send_many(cids, frame)
        self.next_frame = end
        if end < len(self.frames):
            self.loop.call_soon(self.push_burst)   # runs next turn, after this turn's flush
        else:
            self.t_queued = time.perf_counter()
            self.loop.call_soon(self.wait_drained)

    def wait_drained(self):
        st = self.loop.stats()
        if st["send_queue_bytes"]:
            self.loop.call_later(0.0005, self.wait_drained)
            return
        t1 = time.perf_counter()
        pool = self.loop.pool_stats()
        print(json.dumps({
            "impl": "pushcore", "burst": self.args.burst,
            "server_seconds": t1 - self.t0, "queued_seconds": self.t_queued - self.t0,
            "deliveries": len(self.frames) * len(self.cids),
            "turns": st["turns"] - self.turns0, "writes": st["writes"] - self.writes0,
            "write_would_block": st["write_would_block"],
            "pool_high_water_chunks": pool["high_water"], "chunk_size": pool["chunk_size"],
        }), flush=True)

    # -- running

    def run(self):
        port = self.loop.listen_address(self.lid)[1]
        print(f"listening {port}", flush=True)

        def stop_when_stdin_closes():
            sys.stdin.buffer.read()
            self.loop.stop()

        threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
        try:
            self.loop.run()
        finally:
            self.loop.close()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("fanout", "ping", "idle"), required=True)
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--frames-file", help="fanout: F frames of 105 bytes back to back")
    p.add_argument("--burst", type=int, default=1, help="fanout: send_many calls per loop turn")
    p.add_argument("--loop-option", action="append", default=[], metavar="NAME=INT",
                   help="a Loop constructor option (e.g. max_empty_slabs=64); default: none, "
                        "the recorded figures use the Loop's defaults")
    args = p.parse_args(argv)
    args.loop_options = {}
    for opt in args.loop_option:
        name, _, value = opt.partition("=")
        args.loop_options[name] = int(value)
    if args.mode == "fanout" and not args.frames_file:
        p.error("fanout needs --frames-file")
    return args


if __name__ == "__main__":
    raise_fd_limit()
    BenchServer(parse_args()).run()

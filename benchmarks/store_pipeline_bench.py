"""The store pipeline, measured: group commit throughput and loop latency during a durable publish.

    python benchmarks/store_pipeline_bench.py [--pushes 20000] [--subscribers 5000] [--publishes 20]

Two numbers, on a SQLite store in a temporary directory:

1. **push from 8 threads**: 8 application threads call ``Server.push``
   (each call waits for its own seq) to 64 offline devices; durable pushes
   per second, and commits per push (``Store.commits``, where the build has it).
   With ``--no-wait`` also the pipeline's own capacity: the 8 threads submit
   their appends (``Delivery.submit_push``) and wait only for their last one.
2. **PING→PONG during publish**: a separate process holds one authenticated
   connection and sends PING every 2 ms, timing each PONG; meanwhile the
   gateway, with ``--subscribers`` subscribers of one topic connected from a
   third process (they read what comes and never ack),
   runs ``--publishes`` back-to-back ``Server.publish`` calls. p50/p99/max
   of the round trips taken while the publishes run, and stored deliveries/s.

Runs on any build of pushcore (the one on ``sys.path``), so a tree before
the pipeline and one after can be compared in one sitting: ratios, not
absolute figures, on a shared machine.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

from pushcore import Server, mint_token
from pushcore.store import SQLiteStore

SECRET = b"pushcore-bench-secret-0123456789"

PROBE = textwrap.dedent(
    """
    import socket, sys, time
    from pushcore.codec import reference as protocol
    host, port, token = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    dec = protocol.Decoder()
    sock.sendall(protocol.Hello((1,), "probe", token, 0, 0).encode())
    def frame():
        while True:
            data = sock.recv(65536)
            if not data:
                raise SystemExit("closed")
            got = dec.feed(data)
            if got:
                return got
    while not any(f.TYPE == protocol.WELCOME for f in frame()):
        pass
    ping = protocol.Ping().encode()
    print("ready", flush=True)
    out = []
    deadline = time.monotonic() + float(sys.argv[4])
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        sock.sendall(ping)
        while not any(f.TYPE == protocol.PONG for f in frame()):
            pass
        t1 = time.monotonic()
        out.append((t0, t1 - t0))
        time.sleep(0.002)
    for t0, rtt in out:
        print("%.6f %.6f" % (t0, rtt))
    """
)


SUBSCRIBERS = textwrap.dedent(
    """
    import selectors, socket, sys
    from pushcore import mint_token
    from pushcore.codec import reference as protocol
    host, port, n, secret = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), bytes.fromhex(sys.argv[4])
    sel = selectors.DefaultSelector()
    waiting = n
    for i in range(n):
        device = "sub-%d" % i
        s = socket.create_connection((host, port))
        s.sendall(protocol.Hello((1,), device, mint_token(secret, device), 0, 0).encode())
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, protocol.Decoder())
    sel.register(sys.stdin, selectors.EVENT_READ, None)
    while True:  # read what comes (no acks: the rows stay) until stdin closes
        for key, _ in sel.select(0.5):
            if key.data is None:
                raise SystemExit(0)
            try:
                data = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            if waiting and any(f.TYPE == protocol.WELCOME for f in key.data.feed(data)):
                waiting -= 1
                if not waiting:
                    print("ready", flush=True)
    """
)


def push_from_threads(pushes: int, threads: int = 8, wait_each: bool = True) -> tuple[float, float | None]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(os.path.join(tmp, "s.db"))
        server = Server("127.0.0.1", 0, secret=SECRET, store=store)
        server.start()
        per = pushes // threads
        start = threading.Barrier(threads + 1)

        def run(t: int) -> None:
            if not wait_each:  # the pipeline's capacity: submit all, wait for the last (needs the pipeline)
                delivery = server._ready_delivery()
                start.wait()
                op = None
                for i in range(per):
                    op = delivery.submit_push(f"dev-{(t * 8 + i) % 64}", b"payload %d" % i,
                                              wait=i == per - 1)
                if op is not None:
                    op.wait(120)
                return
            start.wait()
            for i in range(per):
                server.push(f"dev-{(t * 8 + i) % 64}", b"payload %d" % i)

        workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        commits0 = getattr(store, "commits", None)
        start.wait()
        t0 = time.perf_counter()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - t0
        commits = getattr(store, "commits", None)
        server.stop()
        store.close()
        per_push = None if commits is None or commits0 is None else (commits - commits0) / (per * threads)
        return per * threads / elapsed, per_push


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def ping_during_publish(subscribers: int, publishes: int, connected: bool = True) -> dict[str, float]:
    """Stored deliveries/s of the publishes, and the probe's round trips taken while they ran."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(os.path.join(tmp, "s.db"))
        server = Server("127.0.0.1", 0, secret=SECRET, store=store, heartbeat=(0, 600))
        server.start()
        host, port = server.address
        for n in range(subscribers):
            server.subscribe(f"sub-{n}", "news")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        # The subscribers live in their own process, as the probe does: nothing but the
        # gateway runs in this one.
        subs = subprocess.Popen(
            [sys.executable, "-c", SUBSCRIBERS, host, str(port), str(subscribers if connected else 0),
             SECRET.hex()], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert subs.stdout is not None and subs.stdin is not None
        if connected:
            assert subs.stdout.readline().strip() == "ready", "the subscribers did not connect"
        # Long enough for the publishes at the slowest rate seen (20,000 stored deliveries/s).
        duration = 4.0 + publishes * subscribers / 20_000
        probe = subprocess.Popen(
            [sys.executable, "-c", PROBE, host, str(port), mint_token(SECRET, "probe").hex(), str(duration)],
            stdout=subprocess.PIPE, text=True, env=env)
        assert probe.stdout is not None
        assert probe.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        t_start = time.monotonic()
        for i in range(publishes):
            server.publish("news", b"breaking %d" % i)
        t_end = time.monotonic()
        out, _ = probe.communicate()
        rtts = []
        values = out.split()
        for t0, rtt in zip(values[0::2], values[1::2]):
            if t_start <= float(t0) <= t_end:
                rtts.append(float(rtt))
        subs.stdin.close()
        subs.wait(30)
        server.stop()
        store.close()
        seconds = t_end - t_start
        return {
            "seconds": seconds,
            "deliveries_per_s": publishes * subscribers / seconds,
            "round_trips": len(rtts),
            "p50_ms": percentile(rtts, 0.5) * 1000 if rtts else float("nan"),
            "p99_ms": percentile(rtts, 0.99) * 1000 if rtts else float("nan"),
            "max_ms": max(rtts) * 1000 if rtts else float("nan"),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pushes", type=int, default=20_000)
    parser.add_argument("--subscribers", type=int, default=5_000)
    parser.add_argument("--publishes", type=int, default=20)
    parser.add_argument("--offline", action="store_true", help="the subscribers are not connected")
    parser.add_argument("--skip-push", action="store_true")
    parser.add_argument("--no-wait", action="store_true",
                        help="also: 8 threads submit their pushes to the store pipeline without waiting for each")
    parser.add_argument("--skip-publish", action="store_true")
    args = parser.parse_args()
    import pushcore
    print(f"pushcore from {os.path.dirname(pushcore.__file__)}")
    if not args.skip_push:
        rate, per_push = push_from_threads(args.pushes)
        commits = "n/a" if per_push is None else f"{per_push:.3f}"
        print(f"{'push() from 8 threads, SQLite':<40} {rate:>12,.0f} durable pushes/s   commits/push {commits}")
    if args.no_wait:
        rate, per_push = push_from_threads(args.pushes, wait_each=False)
        print(f"{'pipeline, 8 threads submitting, SQLite':<40} {rate:>12,.0f} durable pushes/s   "
              f"commits/push {per_push:.4f}")
    if not args.skip_publish:
        r = ping_during_publish(args.subscribers, args.publishes, not args.offline)
        where = "offline" if args.offline else "connected"
        print(f"{f'{args.publishes} x publish to {args.subscribers:,} {where}':<40} "
              f"{r['deliveries_per_s']:>12,.0f} stored deliveries/s ({r['seconds']:.2f} s)")
        print(f"{'  PING->PONG from another process':<40} {r['round_trips']:>6} trips  "
              f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  max {r['max_ms']:.2f} ms")


if __name__ == "__main__":
    main()

"""Two gateway nodes on one Redis: a push through node B reaches a phone connected to node A.

Each node is a ``pushcore.Server`` with a ``RedisStore`` (the shared offline
store, seq counters included) and a ``ClusterLink`` (routes, kicks and
forwards between nodes, docs/CLUSTER.md). Then the phone reconnects to node
B: node A's connection is replaced, exactly as on one gateway, and a push
through A now reaches it on B.

It starts its own ``redis-server`` (the Debian package ``redis-server``) on a
free 127.0.0.1 port in a temporary directory, or uses ``--redis URL``::

    python examples/cluster_nodes.py
    python examples/cluster_nodes.py --redis redis://127.0.0.1:6379/0
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

from pushcore import Client, ClusterLink, RedisStore, Server, mint_token

SECRET = b"example-cluster-secret-0123456789"


@contextlib.contextmanager
def local_redis() -> Iterator[str]:
    """A throw-away redis-server on a free loopback port (AOF on), stopped on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: apt-get install -y redis-server (or pass --redis URL)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
                                 "--save", "", "--appendonly", "yes"], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as c:
                        c.sendall(b"PING\r\n")
                        if c.recv(7).startswith(b"+PONG"):
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    sys.exit("redis-server did not start")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


def node(url: str, name: str) -> Server:
    """One gateway node: the shared store and the link to the other nodes."""
    server = Server("127.0.0.1", 0, secret=SECRET, store=RedisStore(url, prefix="example"),
                    cluster=ClusterLink(url, node_id=name, prefix="example"))
    server.start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default=None, help="a Redis URL (default: start a throw-away redis-server)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        url = args.redis or stack.enter_context(local_redis())
        a, b = node(url, "node-A"), node(url, "node-B")
        stack.callback(b.stop)
        stack.callback(a.stop)
        got: list[tuple[int, bytes]] = []
        arrived = threading.Condition()

        def on_message(push) -> None:
            with arrived:
                got.append((push.seq, bytes(push.payload)))
                arrived.notify_all()

        def wait_for(n: int) -> None:
            with arrived:
                if not arrived.wait_for(lambda: len(got) >= n, timeout=10):
                    sys.exit(f"only {len(got)} of {n} messages arrived")

        token = mint_token(SECRET, "phone-1")
        phone = Client("phone-1", token, [a.address], on_message=on_message)
        phone.start(timeout=10)
        print(f"phone-1 connected to node-A at {a.address[0]}:{a.address[1]}")
        seq = b.push("phone-1", b"hello through node-B")
        wait_for(1)
        print(f"push through node-B: seq {seq}, arrived {got[-1]}")
        print(f"node-B says phone-1 is on {b.where('phone-1')}")
        phone.stop()

        moved = Client("phone-1", token, [b.address], on_message=on_message, last_seq=phone.inbox.last_seq)
        moved.start(timeout=10)
        seq = a.push("phone-1", b"hello through node-A")
        wait_for(2)
        print(f"phone-1 moved to node-B; push through node-A: seq {seq}, arrived {got[-1]}")
        moved.stop()
        assert [s for s, _ in got] == [1, 2], got
    print("ok")


if __name__ == "__main__":
    main()

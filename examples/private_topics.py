"""Private topics: who may subscribe to what, and per-item outcomes of a batch.

A gateway and two devices in one process, on 127.0.0.1. Topics named
``user/<id>`` are private to device ``<id>``: the ``authorize_subscribe``
hook refuses everyone else, so bob's attempt to follow ``user/alice`` is
simply not stored, and a publish to ``user/alice`` reaches alice only. Each
device may hold at most ``max_subscriptions`` topics. A field over its limit
(a 70 KB payload) raises ``MessageTooLarge`` before anything is stored, and
``push_batch`` reports each item's seq. Run it::

    python examples/private_topics.py
"""
from __future__ import annotations

import secrets
import threading
import time

from pushcore import Client, MessageTooLarge, Server, mint_token


def authorize(device_id: str, topic: str, metadata: dict) -> bool:
    """``user/<id>`` only for device <id>; every other topic is public."""
    if topic.startswith("user/"):
        return topic == f"user/{device_id}"
    return True


def main() -> int:
    secret = secrets.token_bytes(32)
    received: dict[str, list[bytes]] = {"alice": [], "bob": []}
    got_one = threading.Event()

    def on_message_for(device_id: str):
        def on_message(push) -> None:
            received[device_id].append(bytes(push.payload))
            got_one.set()
        return on_message

    server = Server("127.0.0.1", 0, secret=secret, store="memory:",
                    authorize_subscribe=authorize, max_subscriptions=10)
    server.start()
    host, port = server.address
    clients = [
        Client(name, mint_token(secret, name, ttl=3600), [f"{host}:{port}"], on_message=on_message_for(name))
        for name in ("alice", "bob")
    ]
    try:
        for client in clients:
            client.start()
        alice, bob = clients
        alice.subscribe("user/alice", "news")
        bob.subscribe("user/alice", "news")  # refused by the hook: bob is not alice
        deadline = time.monotonic() + 10
        while server.store.subscribers("news") != {"alice", "bob"} or server.stats["subscribe_refused"] < 1:
            if time.monotonic() > deadline:
                raise SystemExit("the subscriptions did not arrive")
            time.sleep(0.01)
        print(f"subscribers of user/alice: {sorted(server.store.subscribers('user/alice'))}")
        print(f"subscriptions refused: {server.stats['subscribe_refused']}")

        print(f"publish user/alice -> stored for {server.publish('user/alice', b'for alice only')} device(s)")
        print(f"publish news -> stored for {server.publish('news', b'for everyone')} device(s)")
        try:
            server.push("alice", b"x" * 70_000)
        except MessageTooLarge as exc:
            print(f"refused: {exc} (field={exc.field}, limit={exc.limit})")
        result = server.push_batch([("alice", b"one"), ("bob", b"two"), ("alice", b"three")])
        print(f"push_batch seqs: {list(result)}, failed items: {result.errors}")

        while sum(map(len, received.values())) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        for name, payloads in received.items():
            print(f"{name} received: {[p.decode() for p in payloads]}")
        ok = received["alice"] == [b"for alice only", b"for everyone", b"one", b"three"] and \
            received["bob"] == [b"for everyone", b"two"]
        print("OK" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        for client in clients:
            client.stop()
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())

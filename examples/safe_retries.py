"""Retries that store once, and a handler failure that does not lose the message.

A gateway (SQLite store in a temporary directory, admin API on a free port)
and one device, in one process on 127.0.0.1:

* the application pushes an order update with an ``idempotency_key`` and,
  unsure whether it went through, pushes it again: the gateway answers the
  first seq and stores nothing new (``Server.push``), and the same through
  the admin API (``AdminClient`` sends a key with every push by itself);
* the device's ``on_message`` fails the first time it sees the message: the
  message is not acknowledged, comes again after ``redeliver_delay``, and is
  shown once it is handled.

Run it::

    python examples/safe_retries.py
"""
from __future__ import annotations

import secrets
import tempfile
import threading
import time
from pathlib import Path

from pushcore import Client, Server, mint_token
from pushcore.admin.api import AdminAPI
from pushcore.admin.client import AdminClient


def main() -> int:
    secret = secrets.token_bytes(32)
    admin_token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as tmp:
        server = Server("127.0.0.1", 0, secret=secret, store=str(Path(tmp) / "gateway.db"))
        host, port = server.start()
        admin = AdminAPI(server, admin_token, port=0)
        admin.start()
        shown: list[tuple[int, bytes]] = []
        attempts: list[int] = []
        all_shown = threading.Event()

        def on_message(push) -> None:
            attempts.append(push.seq)
            if attempts.count(push.seq) == 1 and push.seq == 1:
                raise RuntimeError("the app's database was busy")  # logged; seq 1 is not acked
            shown.append((push.seq, bytes(push.payload)))
            if len(shown) == 2:
                all_shown.set()

        device = Client("phone-1", mint_token(secret, "phone-1"), [f"{host}:{port}"],
                        on_message=on_message, redeliver_delay=0.3)
        try:
            device.start()
            first = server.push("phone-1", b"order 17 shipped", idempotency_key="order-17-shipped")
            again = server.push("phone-1", b"order 17 shipped", idempotency_key="order-17-shipped")
            print(f"Server.push twice with one key: seq {first} and seq {again}")
            with AdminClient(admin.url, admin_token) as api:
                key = api.new_key()
                one = api.push("phone-1", "order 18 shipped", idempotency_key=key)
                two = api.push("phone-1", "order 18 shipped", idempotency_key=key)
            print(f"AdminClient.push twice with one key: seq {one} and seq {two}")
            if not all_shown.wait(10):
                print("FAIL: the device did not show both messages")
                return 1
            time.sleep(0.5)  # nothing else may come
            print(f"handler attempts by seq: {attempts}")
            print(f"shown: {shown}")
            stored = server.store.stats().messages
            print(f"still stored (unacked): {stored}")
            ok = first == again == 1 and one == two == 2 and [s for s, _ in shown] == [1, 2]
            print("ok" if ok else "FAIL")
            return 0 if ok else 1
        finally:
            device.stop()
            admin.stop()
            server.stop()


if __name__ == "__main__":
    raise SystemExit(main())

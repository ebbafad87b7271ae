"""Back-to-back broadcasts that do not wait: ``wait=False`` and coalesced turns.

A gateway and ten devices in one process, on 127.0.0.1. The application
calls ``Server.broadcast(..., wait=False)`` 1,000 times in a row: each call
returns a ``concurrent.futures.Future`` at once, the calls that reach the
loop within one turn run in that turn, and their frames leave together (one
``writev`` per connection). Every device gets every broadcast, in the order
made. Run it::

    python examples/broadcast_nowait.py
"""
from __future__ import annotations

import secrets
import threading
import time

from pushcore import Client, Server, mint_token

DEVICES = 10
CALLS = 1000


def main() -> int:
    secret = secrets.token_bytes(32)
    server = Server("127.0.0.1", 0, secret=secret, store="memory")
    host, port = server.start()
    got: dict[str, list[int]] = {}
    lock = threading.Lock()
    done = threading.Event()

    def receiver(device_id: str):
        def on_message(push) -> None:
            with lock:
                got[device_id].append(int(bytes(push.payload)))
                if sum(len(v) for v in got.values()) == DEVICES * CALLS:
                    done.set()
        return on_message

    devices = []
    for i in range(DEVICES):
        device_id = f"phone-{i}"
        got[device_id] = []
        devices.append(Client(device_id, mint_token(secret, device_id), [f"{host}:{port}"],
                              on_message=receiver(device_id)))
    try:
        for device in devices:
            device.start()
        started = time.perf_counter()
        futures = [server.broadcast(b"%d" % n, wait=False) for n in range(CALLS)]
        handed = time.perf_counter() - started
        counts = [future.result(timeout=30) for future in futures]
        if not done.wait(30):
            print("FAIL: not every broadcast arrived")
            return 1
        print(f"{CALLS} broadcast calls returned in {handed * 1000:.1f} ms (futures, not waits)")
        print(f"every future says {set(counts)} device(s)")
        in_order = all(values == list(range(CALLS)) for values in got.values())
        print(f"{DEVICES} devices got {DEVICES * CALLS} messages, each in the order sent: {in_order}")
        ok = set(counts) == {DEVICES} and in_order
        print("ok" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        for device in devices:
            device.stop()
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())

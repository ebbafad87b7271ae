"""A gateway inside an asyncio application: a token check that awaits, and pushes that are awaited.

The application owns an asyncio event loop (as an aiohttp or FastAPI app
does). The gateway's ``authenticate`` hook is an ``async def`` that looks
the device up in a (simulated, slow) database; it runs on the
application's own loop (``hook_loop=``), so while one device's lookup is in
flight every other connection goes on. The application pushes with
``await server.push_async(...)``: no call blocks its loop, and no thread is
started per call. Three devices connect (one with a wrong key, refused), and
each good one gets its messages in order. Run it::

    python examples/asyncio_gateway.py
"""
from __future__ import annotations

import asyncio
import hmac

from pushcore import AuthError, Client, Server

DATABASE = {"alice": b"key-a", "bob": b"key-b"}  # what a real app would read from its database


async def main() -> int:
    app_loop = asyncio.get_running_loop()
    looked_up: list[str] = []

    async def authenticate(device_id: str, token: bytes, metadata: dict) -> bool:
        await asyncio.sleep(0.05)  # the database round trip: only this connection waits for it
        looked_up.append(device_id)
        key = DATABASE.get(device_id)
        return key is not None and hmac.compare_digest(key, token)

    server = Server("127.0.0.1", 0, authenticate=authenticate, hook_loop=app_loop, store="memory:")
    host, port = server.start()  # the gateway's own loop runs on its thread; this loop stays free
    got: dict[str, list[bytes]] = {"alice": [], "bob": []}
    all_in = asyncio.Event()

    def receiver(device_id: str):
        def on_message(push) -> None:  # on the client's thread: hand over to the app loop
            def record() -> None:
                got[device_id].append(bytes(push.payload))
                if all(len(v) == 5 for v in got.values()):
                    all_in.set()
            app_loop.call_soon_threadsafe(record)
        return on_message

    address = [f"{host}:{port}"]
    clients = [Client(name, DATABASE[name], address, on_message=receiver(name)) for name in ("alice", "bob")]
    intruder = Client("mallory", b"guess", address)
    try:
        # The phones are not part of the app: their blocking start() runs off the app's loop,
        # which must stay free to run the gateway's authenticate hook.
        await asyncio.gather(*(asyncio.to_thread(client.start) for client in clients))
        try:
            await asyncio.to_thread(intruder.start)
            print("FAIL: mallory was let in")
            return 1
        except AuthError as exc:
            print(f"mallory refused: {exc.reason.name}")
        seqs = await asyncio.gather(*(server.push_async(name, b"msg %d" % i)
                                      for i in range(5) for name in ("alice", "bob")))
        await asyncio.wait_for(all_in.wait(), 10)
        print(f"looked up: {sorted(set(looked_up))}")
        print(f"seqs: {sorted(set(seqs))}")
        for name in ("alice", "bob"):
            print(f"{name} got {[p.decode() for p in got[name]]}")
        in_order = all(got[name] == [b"msg %d" % i for i in range(5)] for name in got)
        connected = sorted(name for name in ("alice", "bob", "mallory") if server.connected(name))
        print(f"connected: {connected}")
        ok = in_order and connected == ["alice", "bob"]
        print("ok" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        for client in (*clients, intruder):
            client.stop()
        server.stop()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

"""The asyncio face of Server (issue 11, item 5): push_async, push_batch_async, publish_async, broadcast_async.

Called from an application's own event loop (asyncio.run here), against a
real server on 127.0.0.1 with real devices; nothing blocks that loop.
"""
from __future__ import annotations

import asyncio
import threading

import pytest

from pushcore import MessageTooLarge
from pushcore.codec import reference as protocol
from pushcore.store import SQLiteStore
from pushcore.wire import MAX_PAYLOAD_BYTES
from serverkit import (
    RawDevice,
    make_server,
    stop_what_the_test_started,  # noqa: F401  (autouse: stops leftovers)
)


@pytest.fixture
def server(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    server = make_server(store=store)
    server.start()
    yield server
    server.stop(timeout=5.0)
    store.close()


def test_awaited_pushes_are_stored_in_order_and_delivered(server):
    with RawDevice(server.address) as phone:
        assert phone.hello("phone").TYPE == protocol.WELCOME

        async def app() -> list[int]:
            ticks = 0

            async def ticker():  # the application's loop keeps running while pushes are awaited
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            task = asyncio.create_task(ticker())
            threads = threading.active_count()
            seqs = await asyncio.gather(*(server.push_async("phone", b"m%d" % i) for i in range(300)))
            assert threading.active_count() == threads  # no thread per call
            task.cancel()
            assert ticks > 0
            return list(seqs)

        seqs = asyncio.run(app())
        assert seqs == list(range(1, 301))  # gathered in order: submitted in order
        got = [phone.expect(protocol.PUSH) for _ in range(300)]
        assert [f.seq for f in got] == seqs and got[0].payload == b"m0"


def test_awaited_batch_publish_and_broadcast(server):
    server.subscribe("a", "news")
    server.subscribe("b", "news")
    with RawDevice(server.address) as a:
        assert a.hello("a").TYPE == protocol.WELCOME

        async def app():
            batch = await server.push_batch_async([("a", b"1"), ("b", b"2"), ("a", b"3", {"priority": "low"})])
            fanout = await server.publish_async("news", b"headline")
            count = await server.broadcast_async(b"hello all")
            durable = await server.broadcast_async(b"kept", durable=True)
            return batch, fanout, count, durable

        batch, fanout, count, durable = asyncio.run(app())
        assert list(batch) == [1, 1, 2] and not batch.errors
        assert fanout == 2 and count == 1 and durable == 1
        frames = [a.expect(protocol.PUSH) for _ in range(5)]
        # The low priority seq 2 rides with the next high one (a catch-up read), so the
        # ephemeral broadcast (seq 0, never stored) may overtake it; the stored ones keep order.
        assert [(f.seq, f.payload) for f in frames if f.seq] == [
            (1, b"1"), (2, b"3"), (3, b"headline"), (4, b"kept")]
        assert [f.payload for f in frames if not f.seq] == [b"hello all"]
    assert server.store.last_seq("b") == 2


def test_bad_arguments_raise_at_once_and_store_errors_reach_the_awaiting_caller(server):
    async def app():
        with pytest.raises(MessageTooLarge):
            await server.push_async("phone", b"x" * (MAX_PAYLOAD_BYTES + 1))
        with pytest.raises(ValueError):
            await server.push_batch_async([("", b"no device")])
        server.store.advance_seq("full", 2**63 - 1)
        result = await server.push_batch_async([("full", b"x"), ("ok", b"y")])
        assert list(result) == [0, 1] and 0 in result.errors

    asyncio.run(app())
    assert server.store.last_seq("phone") == 0

"""Driving a Loop from asyncio: attached to the running event loop (no
thread), and in its own thread talking through call_soon_threadsafe."""
from __future__ import annotations

import asyncio
import threading

from pushcore import Reason
from pushcore import _frame as F
from pushcore.loop import attach_asyncio

PING = b"\x30\x00"
PONG = b"\x40\x00"


def test_attach_asyncio_serves_without_a_thread(make_loop):
    loop, ev = make_loop()
    lid = loop.listen("127.0.0.1", 0)
    host, port = loop.listen_address(lid)

    def echo(batch):
        ev.frames.extend(batch)
        for cid, frame in batch:
            loop.send(cid, F.UpstreamAck(upstream_id=frame.upstream_id).encode())

    loop.set_handlers(on_frames=echo, on_open=ev.opened.extend, on_close=ev.closed.extend)

    async def main():
        driver = attach_asyncio(loop)
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(F.Upstream(upstream_id=7, payload=b"up").encode() + PING)
            await writer.drain()
            ack = F.UpstreamAck(upstream_id=7).encode()
            got = await asyncio.wait_for(reader.readexactly(len(ack) + 2), 5)
            assert got in (ack + PONG, PONG + ack)
            cid = ev.opened[0][0]
            # a send from asyncio code, outside any Loop turn, goes out by itself
            push = F.Push(seq=1, message_id=5, payload=b"hello").encode()
            assert loop.send(cid, push)
            assert await asyncio.wait_for(reader.readexactly(len(push)), 5) == push
            # a Loop timer fires inside asyncio
            fut = asyncio.get_running_loop().create_future()
            loop.call_later(0.05, fut.set_result, "fired")
            assert await asyncio.wait_for(fut, 5) == "fired"
            # and so does a wheel deadline, with no I/O to wake the loop
            loop.set_idle_timeout(cid, 0.1)
            rest = await asyncio.wait_for(reader.read(), 5)  # until EOF
            assert F.decode(rest) == F.ErrorFrame(code=21, message="IDLE_TIMEOUT")
            for _ in range(50):
                if ev.closed:
                    break
                await asyncio.sleep(0.01)
            assert ev.closed == [(cid, Reason.IDLE_TIMEOUT)]
            writer.close()
        finally:
            driver.detach()

    asyncio.run(main())
    assert loop.stats()["turns"] > 0


def test_loop_in_a_thread_with_asyncio_on_the_other_side(make_loop):
    loop, ev = make_loop()
    lid = loop.listen("127.0.0.1", 0)
    host, port = loop.listen_address(lid)
    runner = threading.Thread(target=loop.run)

    async def main():
        aio = asyncio.get_running_loop()
        frames: asyncio.Queue = asyncio.Queue()
        opened = aio.create_future()

        def on_open(batch):  # in the Loop's thread
            aio.call_soon_threadsafe(opened.set_result, batch[0][0])

        def on_frames(batch):
            for item in batch:
                aio.call_soon_threadsafe(frames.put_nowait, item)

        loop.set_handlers(on_open=on_open, on_frames=on_frames)
        runner.start()
        reader, writer = await asyncio.open_connection(host, port)
        cid = await asyncio.wait_for(opened, 5)
        writer.write(F.Ack(seq=3).encode())
        assert await asyncio.wait_for(frames.get(), 5) == (cid, F.Ack(seq=3))
        push = F.Push(seq=9, message_id=1, payload=b"x").encode()
        loop.call_soon_threadsafe(loop.send, cid, push)
        assert await asyncio.wait_for(reader.readexactly(len(push)), 5) == push
        writer.close()
        loop.call_soon_threadsafe(loop.stop)
        await aio.run_in_executor(None, runner.join, 5)

    asyncio.run(main())
    assert not runner.is_alive()

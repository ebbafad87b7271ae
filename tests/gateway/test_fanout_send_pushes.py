"""Durable fan-out reaches the loop as one ``send_pushes`` call, with push's outcome per device.

A publish (and a durable broadcast) to connected, caught-up subscribers is
one C call for all of them; a subscriber with messages waiting before the new
one catches up from its sent seq, in order, exactly as before. The loop is
the real one behind a wrapper that counts the calls made to it.
"""
from __future__ import annotations

import collections
import contextlib

import serverkit as kit
from pushcore._loop import Loop
from pushcore.codec import reference as protocol
from pushcore.store import PRIORITY_LOW


class CountingLoop:
    """The real loop, counting the PUSH calls Delivery makes on it."""

    def __init__(self, loop: Loop) -> None:
        self._loop = loop
        self.calls: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name):
        return getattr(self._loop, name)

    def send_push(self, *args):
        self.calls["send_push"] += 1
        return self._loop.send_push(*args)

    def send_pushes(self, cids, *args, **kw):
        self.calls["send_pushes"] += 1
        self.calls["items"] += len(cids)
        return self._loop.send_pushes(cids, *args, **kw)


@contextlib.contextmanager
def counted_server():
    """A running server whose Delivery talks to its loop through a CountingLoop."""
    with kit.running_server() as server:
        delivery = server._delivery
        loop = CountingLoop(delivery.transport)
        server.call(setattr, delivery, "transport", loop)
        yield server, loop


def test_publish_to_caught_up_subscribers_is_one_c_call():
    names = [f"dev-{i:02d}" for i in range(12)]
    with counted_server() as (server, loop):
        devices = kit.connect_raw_devices(server, names)
        for name in names:
            server.subscribe(name, "news")
        server.push("dev-03", b"waiting", priority=PRIORITY_LOW)  # dev-03 is behind: seq 1 waits
        loop.calls.clear()
        assert server.publish("news", b"hello") == len(names)
        assert loop.calls["send_pushes"] == 1
        assert loop.calls["items"] == len(names) - 1 + 1  # dev-03 is offered too, and reported behind
        for name, dev in devices.items():
            if name == "dev-03":
                first, second = dev.expect(protocol.PUSH), dev.expect(protocol.PUSH)
                assert [(first.seq, first.payload), (second.seq, second.payload)] == [
                    (1, b"waiting"), (2, b"hello")]
            else:
                push = dev.expect(protocol.PUSH)
                assert (push.seq, push.payload, push.topic) == (1, b"hello", "news")
        assert loop.calls["send_push"] == 2  # only dev-03's catch-up went one by one
        for dev in devices.values():
            dev.close()


def test_durable_broadcast_seqs_continue_per_device():
    names = [f"b-{i}" for i in range(5)]
    with counted_server() as (server, loop):
        devices = kit.connect_raw_devices(server, names)
        server.push("b-1", b"own")  # b-1 is at seq 1, the others at 0
        devices["b-1"].expect(protocol.PUSH)
        loop.calls.clear()
        assert server.broadcast(b"all", durable=True) == len(names)
        assert loop.calls["send_pushes"] == 1 and loop.calls["send_push"] == 0
        for name, dev in devices.items():
            push = dev.expect(protocol.PUSH)
            assert (push.seq, push.payload) == (2 if name == "b-1" else 1, b"all")
            dev.close()

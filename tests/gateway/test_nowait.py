"""``wait=False``: push / publish / broadcast hand the call to the loop and return a Future.

Calls made back to back run on the loop in the order made; those that arrive
within one loop turn run in that turn (one hand-over wake-up for all of them)
and go out together. Errors of the call are set on the future.
"""
from __future__ import annotations

import concurrent.futures
import threading

import pytest

import serverkit as kit
from pushcore.codec import reference as protocol
from pushcore.store import IdempotencyConflict


def test_back_to_back_broadcasts_resolve_with_counts_and_arrive_in_order():
    names = [f"nw-{i}" for i in range(6)]
    with kit.running_server() as server:
        devices = kit.connect_raw_devices(server, names)
        futures = [server.broadcast(b"b%03d" % i, wait=False) for i in range(200)]
        assert all(isinstance(f, concurrent.futures.Future) for f in futures)
        assert [f.result(timeout=kit.TIMEOUT) for f in futures] == [len(names)] * 200
        for dev in devices.values():
            got = [dev.expect(protocol.PUSH).payload for _ in range(200)]
            assert got == [b"b%03d" % i for i in range(200)]
            dev.close()


def test_push_and_publish_without_waiting_keep_order_with_waiting_calls():
    with kit.running_server() as server:
        devices = kit.connect_raw_devices(server, ["p-1", "p-2"])
        server.subscribe("p-1", "t")
        server.subscribe("p-2", "t")
        f1 = server.push("p-1", b"one", wait=False)
        f2 = server.publish("t", b"two", wait=False)
        seq3 = server.push("p-1", b"three")  # waits: runs after the two before it
        f4 = server.broadcast(b"four", durable=True, wait=False)
        assert (f1.result(kit.TIMEOUT), int(f2.result(kit.TIMEOUT)), seq3, int(f4.result(kit.TIMEOUT))) == (
            1, 2, 3, 2)
        pushes = [devices["p-1"].expect(protocol.PUSH) for _ in range(4)]
        assert [(p.seq, p.payload) for p in pushes] == [(1, b"one"), (2, b"two"), (3, b"three"), (4, b"four")]
        pushes = [devices["p-2"].expect(protocol.PUSH) for _ in range(2)]
        assert [(p.seq, p.payload) for p in pushes] == [(1, b"two"), (2, b"four")]
        for dev in devices.values():
            dev.close()


def test_calls_arriving_in_one_turn_run_in_that_turn():
    with kit.running_server() as server:
        devices = kit.connect_raw_devices(server, ["c-1", "c-2"])
        gate, inside = threading.Event(), threading.Event()

        def hold() -> bool:
            inside.set()
            return gate.wait(kit.TIMEOUT)

        blocked = server.submit(hold)  # holds the loop inside one turn
        # Only once the loop is inside it: calls queued before would run in the same drain as
        # the gate, and the rest (queued after that drain began) in the next turn.
        assert inside.wait(kit.TIMEOUT)
        turns = server.loop.stats
        probes = []
        for i in range(50):
            server.broadcast(b"x%02d" % i, wait=False)
            probes.append(server.submit(lambda: turns()["turns"]))
        gate.set()
        assert blocked.result(kit.TIMEOUT) is True
        assert len({p.result(kit.TIMEOUT) for p in probes}) == 1  # all in the turn after the gate
        for dev in devices.values():
            assert [dev.expect(protocol.PUSH).payload for _ in range(50)] == [b"x%02d" % i for i in range(50)]
            dev.close()


def test_errors_surface_in_the_future():
    with kit.running_server() as server:
        assert server.push("e-1", b"a", idempotency_key="k-1", wait=False).result(kit.TIMEOUT) == 1
        conflict = server.push("e-1", b"different", idempotency_key="k-1", wait=False)
        assert isinstance(conflict.exception(kit.TIMEOUT), IdempotencyConflict)
        failing = server.submit(lambda: 1 // 0)
        with pytest.raises(ZeroDivisionError):
            failing.result(kit.TIMEOUT)
        with pytest.raises(ValueError):  # a bad argument raises at once, before any hand-over
            server.broadcast(b"x", priority="urgent", wait=False)
    late = server.broadcast(b"after stop", wait=False)
    assert isinstance(late.exception(kit.TIMEOUT), RuntimeError)

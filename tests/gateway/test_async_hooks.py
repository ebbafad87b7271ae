"""Hooks that may wait (issue 11, item 5): awaitable answers, one connection waits, the others go on.

Real servers on 127.0.0.1 and hand-written devices (RawDevice). A hook's
slowness is made with futures the test completes itself, or coroutines
waiting on the hook loop, never with sleeps the result depends on.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading

from pushcore.codec import reference as protocol
from pushcore.errors import Reason
from pushcore.tokens import AuthError
from serverkit import (
    RawDevice,
    running_server,
    stop_what_the_test_started,  # noqa: F401  (autouse: stops leftovers)
    wait_for,
)


def hello(dev: RawDevice, device_id: str, tok: bytes = b"ok") -> None:
    dev.send(protocol.Hello((1,), device_id, tok, 0, 0))


def ping_answered(dev: RawDevice) -> bool:
    dev.send(protocol.Ping())
    return dev.expect(protocol.PONG) is not None


class Pending:
    """An ``authenticate`` hook whose answers the test gives, device by device."""

    def __init__(self) -> None:
        self.futures: dict[str, concurrent.futures.Future] = {}
        self.lock = threading.Lock()

    def __call__(self, device_id, tok, metadata):
        if device_id.startswith("sync"):
            return tok == b"ok"
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self.lock:
            self.futures[device_id] = future
        return future

    def answer(self, device_id, value) -> None:
        wait_for(lambda: device_id in self.futures, what=f"the hook called for {device_id}")
        if isinstance(value, BaseException):
            self.futures[device_id].set_exception(value)
        else:
            self.futures[device_id].set_result(value)


def test_a_pending_authentication_holds_only_its_own_connection():
    hook = Pending()
    with running_server(authenticate=hook) as server:
        with RawDevice(server.address) as slow, RawDevice(server.address) as fast, \
                RawDevice(server.address) as other:
            hello(slow, "slow")
            wait_for(lambda: "slow" in hook.futures, what="the slow device's hook")
            hello(fast, "sync-fast")
            assert fast.expect(protocol.WELCOME)  # not behind the pending one
            assert all(ping_answered(fast) for _ in range(5))
            hello(other, "other")
            hook.answer("other", True)
            assert other.expect(protocol.WELCOME)  # answered before the slow one: welcomed first
            assert not server.connected("slow")
            hook.answer("slow", True)
            assert slow.expect(protocol.WELCOME)
            wait_for(lambda: server.connected("slow"), what="the slow device's session")
            assert server.push("slow", b"hi") == 1
            assert slow.expect(protocol.PUSH).payload == b"hi"


def test_pending_answers_refuse_as_a_synchronous_hook_would():
    hook = Pending()
    with running_server(authenticate=hook) as server:
        cases = [
            ("no", False, Reason.AUTH_FAILED),
            ("expired", AuthError(Reason.TOKEN_EXPIRED, "token expired"), Reason.TOKEN_EXPIRED),
            ("broken", ValueError("database said no"), Reason.INTERNAL_ERROR),
        ]
        for device_id, answer, reason in cases:
            with RawDevice(server.address) as dev:
                hello(dev, device_id)
                hook.answer(device_id, answer)
                error = dev.expect(protocol.ERROR)
                assert error.code == reason, (device_id, error)
                assert dev.until_closed() == []
        assert server.device_count() == 0


def test_an_async_def_hook_runs_on_the_hook_loop_and_the_loop_keeps_answering():
    seen_threads: set[str] = set()

    async def authenticate(device_id, tok, metadata):
        seen_threads.add(threading.current_thread().name)
        await asyncio.sleep(0.05)  # a lookup that takes a while
        return tok == b"ok"

    with running_server(authenticate=authenticate) as server:
        devices = [RawDevice(server.address) for _ in range(20)]
        try:
            for i, dev in enumerate(devices):
                hello(dev, f"d{i}", b"ok" if i % 5 else b"bad")
            for i, dev in enumerate(devices):
                frame = dev.expect(protocol.WELCOME, protocol.ERROR)
                assert frame.TYPE == (protocol.WELCOME if i % 5 else protocol.ERROR), i
            wait_for(lambda: server.device_count() == 16, what="16 sessions")
            assert seen_threads == {"pushcore-hooks"}  # one thread for every pending hook
        finally:
            for dev in devices:
                dev.close()


def test_the_application_loop_can_run_the_hooks():
    aio = asyncio.new_event_loop()
    thread = threading.Thread(target=aio.run_forever, name="app-loop", daemon=True)
    thread.start()
    names = []

    async def authenticate(device_id, tok, metadata):
        names.append(threading.current_thread().name)
        return True

    try:
        with running_server(authenticate=authenticate, hook_loop=aio) as server:
            with RawDevice(server.address) as dev:
                hello(dev, "phone")
                assert dev.expect(protocol.WELCOME)
        assert names == ["app-loop"]
    finally:
        aio.call_soon_threadsafe(aio.stop)
        thread.join(5)
        aio.close()


def test_pending_authentications_are_bounded_and_a_closed_connection_frees_its_place():
    hook = Pending()
    with running_server(authenticate=hook, max_pending_hooks=2) as server:
        a, b, c = (RawDevice(server.address) for _ in range(3))
        try:
            hello(a, "a")
            hello(b, "b")
            wait_for(lambda: {"a", "b"} <= set(hook.futures), what="two pending hooks")
            hello(c, "c")
            error = c.expect(protocol.ERROR)
            assert error.code == Reason.OVERLOADED and "in progress" in error.message
            assert "c" not in hook.futures  # refused before the hook was called
            assert server.stats["hooks_overloaded"] == 1
            a.close()  # gives up: its place is free again
            wait_for(lambda: hook.futures["a"].cancelled(), what="the closed device's wait to be cancelled")
            with RawDevice(server.address) as d:
                hello(d, "d")
                hook.answer("d", True)
                assert d.expect(protocol.WELCOME)
            hook.answer("b", True)
            assert b.expect(protocol.WELCOME)
        finally:
            for dev in (a, b, c):
                dev.close()


def test_a_hook_past_its_timeout_is_cancelled_and_the_device_told_to_come_back():
    cancelled = threading.Event()

    async def authenticate(device_id, tok, metadata):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return True

    with running_server(authenticate=authenticate, hook_timeout=0.2) as server:
        with RawDevice(server.address) as dev:
            hello(dev, "phone")
            error = dev.expect(protocol.ERROR)
            assert error.code == Reason.OVERLOADED and "too long" in error.message
        assert cancelled.wait(5)
        assert server.stats["hook_timeouts"] == 1


def test_a_pending_subscribe_hook_keeps_the_connections_topic_frames_in_order():
    answers: dict[str, concurrent.futures.Future] = {}

    def authorize(device_id, topic, metadata):
        if topic.startswith("open"):
            return True
        future: concurrent.futures.Future = concurrent.futures.Future()
        answers[topic] = future
        return future

    with running_server(authorize_subscribe=authorize) as server:
        with RawDevice(server.address) as dev:
            assert dev.hello("phone").TYPE == protocol.WELCOME
            dev.send(protocol.Subscribe(("news", "secret", "open.a")))
            dev.send(protocol.Unsubscribe(("news",)))  # after the SUBSCRIBE: it must win
            dev.send(protocol.Subscribe(("open.b",)))
            wait_for(lambda: {"news", "secret"} <= set(answers), what="the pending hooks")
            assert all(ping_answered(dev) for _ in range(3))  # the connection itself goes on
            assert server.store.topics("phone") == set()  # nothing applied ahead of the SUBSCRIBE
            answers["news"].set_result(True)
            answers["secret"].set_result(False)
            wait_for(lambda: server.store.topics("phone") == {"open.a", "open.b"},
                     what="the frames applied in order")
            assert server.stats["subscribe_refused"] == 1


def test_an_async_upstream_hook_acks_once_it_completed_and_not_when_it_failed():
    handled: list[bytes] = []

    async def on_upstream(device_id, payload, topic):
        await asyncio.sleep(0)
        if payload == b"bad":
            raise RuntimeError("the queue refused it")
        handled.append(payload)

    with running_server(on_upstream=on_upstream) as server:
        with RawDevice(server.address) as dev:
            assert dev.hello("phone").TYPE == protocol.WELCOME
            dev.send(protocol.Upstream(1, b"good", ""), protocol.Upstream(2, b"bad", ""),
                     protocol.Upstream(3, b"also good", ""))
            acks = [dev.expect(protocol.UPSTREAM_ACK).upstream_id for _ in range(2)]
            assert sorted(acks) == [1, 3]
            assert dev.silent_for(0.3)  # no ack for the one that failed
            assert sorted(handled) == [b"also good", b"good"]
            assert server.stats["upstream"] == 3

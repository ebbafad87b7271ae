"""Work handed to a loop's thread (pushcore.loop.handover): order, and no wait on a loop that stopped."""
from __future__ import annotations

import threading
import time

import pytest

from pushcore.loop import new_loop
from pushcore.loop.handover import (
    LoopUnavailable,
    _handover,
    call_on_loop,
    fail_pending,
    run_until,
    submit_to_loop,
)


def test_calls_run_in_order_in_one_turn():
    loop = new_loop()
    try:
        order: list[int] = []
        futures = [submit_to_loop(loop, order.append, i) for i in range(100)]
        assert run_until(loop, lambda: all(f.done() for f in futures))
        assert order == list(range(100))
    finally:
        loop.close()


def test_work_queued_for_a_loop_that_stopped_for_good_fails_at_once():
    loop = new_loop()
    queued = submit_to_loop(loop, lambda: "never")  # the loop never runs another turn
    caller: dict[str, object] = {}

    def wait() -> None:
        started = time.monotonic()
        try:
            call_on_loop(loop, lambda: "never", timeout=30.0)
        except LoopUnavailable as exc:
            caller["error"], caller["waited"] = exc, time.monotonic() - started

    thread = threading.Thread(target=wait)
    thread.start()
    deadline = time.monotonic() + 10
    while len(_handover(loop).queue) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)  # until the caller's item is queued behind the first
    loop.close()
    fail_pending(loop, "the server stopped")
    thread.join(10)
    assert not thread.is_alive()
    assert "the server stopped" in str(caller["error"])
    assert caller["waited"] < 30.0  # not its whole timeout
    with pytest.raises(LoopUnavailable):
        queued.result(0)
    with pytest.raises(LoopUnavailable, match="closed"):
        submit_to_loop(loop, lambda: None)

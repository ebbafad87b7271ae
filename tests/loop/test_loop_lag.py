"""Loop lag: how late the loop's timers fire, measured in C (``loop.stats()["lag"]``).

A callback that blocks the loop makes the timers due meanwhile fire late;
the next turn's sample shows a lag at least as long as the block went on past
their due time. Both kinds of timer count: ``call_later`` callbacks and the
timing wheel's per-connection deadlines.
"""
from __future__ import annotations

import math
import socket
import time

from pushcore._loop import Loop
from pushcore.loop import run_until

BLOCK = 0.2


def check_shape(lag: dict) -> None:
    bounds = list(lag["buckets"])
    counts = list(lag["buckets"].values())
    assert bounds == sorted(bounds) and math.isinf(bounds[-1])
    assert counts == sorted(counts) and counts[-1] == lag["count"]
    assert lag["sum"] >= lag["max"] >= lag["recent_max"] >= lag["recent_p99"] >= lag["recent_p50"] >= 0
    assert lag["recent_count"] == min(lag["count"], 1024)


def test_a_new_loop_has_no_samples():
    with Loop() as loop:
        lag = loop.stats()["lag"]
        assert lag["count"] == 0 and lag["max"] == 0.0 and lag["recent_count"] == 0
        check_shape(lag)


def test_a_blocking_callback_shows_up_as_lag_of_at_least_the_block():
    with Loop() as loop:
        fired = []

        def block():
            loop.call_later(0, fired.append, 1)  # due now; the loop can run it only after the block
            time.sleep(BLOCK)

        loop.call_soon(block)
        assert run_until(loop, lambda: fired)
        lag = loop.stats()["lag"]
        check_shape(lag)
        assert lag["max"] >= BLOCK
        assert lag["recent_max"] >= BLOCK - 0.001  # kept in microseconds
        assert lag["buckets"][0.1] < lag["count"]  # the sample sits above the 100 ms bucket


def test_wheel_deadlines_count_too():
    # No call_later at all: only a connection's idle deadline, in the timing wheel.
    with Loop() as loop:
        opened, closed = [], []
        loop.set_handlers(on_open=opened.extend, on_close=closed.extend)
        lid = loop.listen("127.0.0.1", 0)
        with socket.create_connection(loop.listen_address(lid), timeout=5):
            assert run_until(loop, lambda: opened)
            cid = opened[0][0]
            loop.set_idle_timeout(cid, 0.05)
            loop.call_soon(time.sleep, 0.3)  # the deadline passes while the loop sleeps
            assert run_until(loop, lambda: closed)
        lag = loop.stats()["lag"]
        check_shape(lag)
        # due at most 0.06 s after the block began (the tick after 50 ms), fired after 0.3 s
        assert lag["max"] >= 0.3 - 0.06 - 0.001

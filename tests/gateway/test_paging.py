"""Backlogs far over the slow-consumer cap drain at the device's pace, in pages bounded by bytes.

A real Client on a real socket reads slowly (its ``on_message`` sleeps), the
server holds a backlog of several times the loop's 4 MiB per-connection cap:
every message must arrive once, in order, with no SLOW_CONSUMER close and no
reconnect.
"""
from __future__ import annotations

import time

import pytest

from pushcore.device.client import Client
from pushcore.errors import Reason
from serverkit import (
    Collector,
    running_server,
    stop_what_the_test_started,  # noqa: F401  (autouse: stops leftovers)
    token,
)

N = 500
SIZE = 60_000


def payload(i: int) -> bytes:
    return i.to_bytes(4, "big") * (SIZE // 4)


class SlowReader(Collector):
    """Records messages and sleeps a little in each, so the device reads its socket slowly."""

    def __init__(self, pause: float) -> None:
        super().__init__()
        self.pause = pause

    def __call__(self, push) -> None:
        super().__call__(push)
        time.sleep(self.pause)


def slow_consumer_closes(server) -> int:
    stats = server.call(server.loop.stats)
    return int(stats["closed_by_reason"].get(int(Reason.SLOW_CONSUMER), 0))


@pytest.mark.slow
def test_a_backlog_of_30_mb_drains_to_a_slow_reader_exactly_once(tmp_path):
    with running_server(store=str(tmp_path / "store.db")) as server:
        result = server.push_batch([("d1", payload(i)) for i in range(1, N + 1)])
        assert list(result) == list(range(1, N + 1))
        got = SlowReader(0.002)
        client = Client("d1", token("d1"), [f"{server.address[0]}:{server.address[1]}"],
                        on_message=got, backoff=(0.05, 0.2), ack_delay=0.01)
        client.start()
        got.wait(N, timeout=60)
        assert got.seqs == list(range(1, N + 1))
        assert got.payloads == [payload(i) for i in range(1, N + 1)]
        assert client.stats["connects"] == 1, "the device had to reconnect"
        assert slow_consumer_closes(server) == 0
        client.stop()


@pytest.mark.slow
def test_live_pushes_while_a_big_backlog_drains_wait_their_turn(tmp_path):
    """Pushes that arrive while the device is behind come after the backlog, once, in order."""
    with running_server(store=str(tmp_path / "store.db")) as server:
        half = 200
        server.push_batch([("d1", payload(i)) for i in range(1, half + 1)])
        got = SlowReader(0.002)
        client = Client("d1", token("d1"), [f"{server.address[0]}:{server.address[1]}"],
                        on_message=got, backoff=(0.05, 0.2), ack_delay=0.01)
        client.start()
        got.wait(1, timeout=30)
        for i in range(half + 1, 2 * half + 1):  # live, one at a time, while the backlog drains
            assert server.push("d1", payload(i)) == i
        got.wait(2 * half, timeout=60)
        assert got.seqs == list(range(1, 2 * half + 1))
        assert got.payloads == [payload(i) for i in range(1, 2 * half + 1)]
        assert client.stats["connects"] == 1
        assert slow_consumer_closes(server) == 0
        client.stop()


@pytest.mark.slow
def test_a_burst_of_live_pushes_to_a_slow_reader_waits_in_the_store(tmp_path):
    """Pushes one by one, far faster than the device reads: its queue never reaches the cap."""
    n = 300
    with running_server(store=str(tmp_path / "store.db")) as server:
        got = SlowReader(0.005)
        client = Client("d1", token("d1"), [f"{server.address[0]}:{server.address[1]}"],
                        on_message=got, backoff=(0.05, 0.2), ack_delay=0.01)
        client.start()
        for i in range(1, n + 1):
            assert server.push("d1", payload(i)) == i
        got.wait(n, timeout=60)
        assert got.seqs == list(range(1, n + 1))
        assert got.payloads == [payload(i) for i in range(1, n + 1)]
        assert client.stats["connects"] == 1
        assert slow_consumer_closes(server) == 0
        client.stop()

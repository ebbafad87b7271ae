"""Server.push / push_batch with idempotency keys, over loopback: a retry is answered, not stored."""
from __future__ import annotations

import pytest

from pushcore.codec import reference as protocol
from pushcore.errors import MessageTooLarge
from pushcore.store import IdempotencyConflict
from serverkit import (
    RawDevice,
    running_server,
    stop_what_the_test_started,  # noqa: F401  (autouse: stops leftovers)
    wait_for,
)


def online(server, device_id: str) -> RawDevice:
    raw = RawDevice(server.address)
    assert raw.hello(device_id).TYPE == protocol.WELCOME
    wait_for(lambda: server.connected(device_id), what=f"{device_id} online")
    return raw


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_repeated_push_is_delivered_once_and_returns_the_same_seq(kind, tmp_path):
    store = "memory:" if kind == "memory" else str(tmp_path / "gw.db")
    with running_server(store=store) as server:
        raw = online(server, "a")
        seq = server.push("a", b"once", idempotency_key="order-17")
        assert raw.expect(protocol.PUSH).seq == seq
        assert server.push("a", b"once", idempotency_key="order-17", ttl=60) == seq
        assert raw.silent_for(0.3)  # the replay sent nothing
        assert server.store.last_seq("a") == seq == 1
        with pytest.raises(IdempotencyConflict, match="order-17"):
            server.push("a", b"something else", idempotency_key="order-17")
        with pytest.raises(IdempotencyConflict):
            server.push("b", b"once", idempotency_key="order-17")
        with pytest.raises(MessageTooLarge):
            server.push("a", b"x", idempotency_key="k" * 257)
        assert server.store.last_seq("b") == 0
        raw.close()


def test_push_batch_keys_per_item_and_replay_after_a_restart(tmp_path):
    path = str(tmp_path / "gw.db")
    batch = [
        ("a", b"a1", {"idempotency_key": "batch-1/0"}),
        ("b", b"b1", {"idempotency_key": "batch-1/1"}),
        ("a", b"a2", {"idempotency_key": "batch-1/2"}),
    ]
    with running_server(store=path) as server:
        raw = online(server, "a")
        assert server.push_batch(batch) == [1, 1, 2]
        assert [raw.expect(protocol.PUSH).seq for _ in range(2)] == [1, 2]
        assert server.push_batch(batch) == [1, 1, 2]
        assert raw.silent_for(0.3)
        raw.close()
    with running_server(store=path) as server:  # the keys are in the file
        assert server.push_batch(batch + [("a", b"a3")]) == [1, 1, 2, 3]
        assert server.push("b", b"b1", idempotency_key="batch-1/1") == 1
        assert server.store.stats().messages == 4  # a1, a2, a3, b1: nothing was acked
        with pytest.raises(IdempotencyConflict, match=r"messages\[0\]"):
            server.push_batch([("a", b"changed", {"idempotency_key": "batch-1/0"})])
        with pytest.raises(ValueError, match=r"messages\[0\].*idempotency_key"):
            server.push_batch([("a", b"x", {"idempotency_key": ""})])
        assert server.store.last_seq("a") == 3

"""Server.push_batch and Server.call over loopback: one transaction, one delivery pass,
the same order, priority and collapse rules as one push() per message."""
from __future__ import annotations

import threading

import pytest

from pushcore.codec import reference as protocol
from pushcore.device.client import Client
from serverkit import (
    Collector,
    RawDevice,
    running_server,
    stop_what_the_test_started,  # noqa: F401  (autouse: stops leftovers)
    token,
    wait_for,
)


def pushes(frames) -> list[tuple[int, bytes]]:
    return [(f.seq, bytes(f.payload)) for f in frames if f.TYPE == protocol.PUSH]


def receive_pushes(raw: RawDevice, count: int) -> list[tuple[int, bytes]]:
    got = []
    while len(got) < count:
        frame = raw.expect(protocol.PUSH)
        got.append((frame.seq, bytes(frame.payload)))
    return got


def online(server, device_id: str) -> RawDevice:
    raw = RawDevice(server.address)
    assert raw.hello(device_id).TYPE == protocol.WELCOME
    wait_for(lambda: server.connected(device_id), what=f"{device_id} online")
    return raw


def test_one_transaction_delivers_once_in_order_to_online_and_later_to_offline(tmp_path):
    with running_server(store=str(tmp_path / "gw.db")) as server:
        transactions = []
        server.store.add_observer(_StoredCalls(transactions))
        a, b = online(server, "a"), online(server, "b")
        batch = [(device, b"%s%d" % (device.encode(), i)) for i in range(30) for device in ("a", "b", "off")]
        seqs = server.push_batch(batch)
        assert seqs == [i + 1 for i in range(30) for _ in range(3)]
        assert len(transactions) == 1 and len(transactions[0]) == 90  # one append_batch
        for raw, name in ((a, b"a"), (b, b"b")):
            assert receive_pushes(raw, 30) == [(i + 1, b"%s%d" % (name, i)) for i in range(30)]
            assert raw.silent_for(0.2)  # nothing twice
        a.close()
        b.close()
        assert server.store.backlog("off") == 30
        got = Collector()
        client = Client("off", token("off"), [f"{server.address[0]}:{server.address[1]}"], on_message=got)
        client.start()
        got.wait(30)
        assert got.messages == [(i + 1, b"off%d" % i) for i in range(30)]
        client.stop()


class _StoredCalls:
    """A store observer recording each append call's ``(device, seq)`` list."""

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def on_stored(self, items) -> None:
        self.calls.append(list(items))

    def on_acked(self, acks) -> None:
        pass


def test_a_device_listed_several_times_gets_consecutive_seqs_in_order():
    with running_server() as server:
        server.push("d", b"before")
        raw = online(server, "d")
        assert receive_pushes(raw, 1) == [(1, b"before")]
        batch = [("d", b"one"), ("x", b"x1"), ("d", b"two"), ("x", b"x2"), ("d", b"three")]
        assert server.push_batch(batch) == [2, 1, 3, 2, 4]
        assert receive_pushes(raw, 3) == [(2, b"one"), (3, b"two"), (4, b"three")]
        assert raw.silent_for(0.2)
        raw.close()


LOW = {"priority": "low"}


def test_low_priority_waits_for_the_device_and_high_priority_carries_what_waits_before_it():
    with running_server(heartbeat=(0, 60)) as server:
        raw = online(server, "d")
        assert server.push_batch([("d", b"low1", LOW), ("d", b"low2", LOW)]) == [1, 2]
        assert raw.silent_for(0.3)  # low priority: not until the device shows it is awake
        raw.send(protocol.Ping())
        assert pushes([raw.expect(protocol.PONG, protocol.PUSH) for _ in range(3)]) == [(1, b"low1"), (2, b"low2")]
        # high then low: the high one goes now, the low one after it waits
        assert server.push_batch([("d", b"high3"), ("d", b"low4", LOW)]) == [3, 4]
        assert receive_pushes(raw, 1) == [(3, b"high3")]
        assert raw.silent_for(0.3)
        # low (plus the one waiting) then high: everything up to the high one goes, in order
        assert server.push_batch([("d", b"low5", LOW), ("d", b"high6")]) == [5, 6]
        assert receive_pushes(raw, 3) == [(4, b"low4"), (5, b"low5"), (6, b"high6")]
        assert raw.silent_for(0.2)
        raw.close()


def test_collapse_inside_a_batch_keeps_the_newest_online_and_offline():
    with running_server() as server:
        raw = online(server, "on")
        batch = []
        for device in ("on", "off"):
            batch += [(device, b"score 0", {"collapse_key": "match"}), (device, b"other")]
            batch += [(device, b"score 1", {"collapse_key": "match"}), (device, b"score 2", {"collapse_key": "match"})]
        assert server.push_batch(batch) == [1, 2, 3, 4] * 2
        # the replaced messages never go out, not even to the device online during the batch
        assert receive_pushes(raw, 2) == [(2, b"other"), (4, b"score 2")]
        assert raw.silent_for(0.2)
        raw.close()
        assert [(m.seq, m.payload) for m in server.store.range("off")] == [(2, b"other"), (4, b"score 2")]


@pytest.mark.parametrize(
    "bad, error, words",
    [
        (("d", "text, not bytes"), TypeError, "payload"),
        (("", b"x"), ValueError, "device_id"),
        ((5, b"x"), TypeError, "device_id"),
        (("d", b"x", {"priority": "urgent"}), ValueError, "priority"),
        (("d", b"x", {"ttl": -1}), ValueError, "ttl"),
        (("d", b"x", {"ttl": float("nan")}), ValueError, "ttl"),
        (("d", b"x", {"collapse_key": 7}), TypeError, "collapse_key"),
        (("d", b"x", {"topic": "\ud800"}), ValueError, "topic"),
        (("d", b"x", {"message_id": -1}), ValueError, "message_id"),
        (("d", b"x", {"colapse_key": "typo"}), ValueError, "colapse_key"),
        (("d", b"x", ["priority"]), TypeError, "options"),
        (("d",), TypeError, "tuple"),
        ("d", TypeError, "tuple"),
    ],
)
def test_a_bad_item_is_refused_with_its_index_and_nothing_is_stored(bad, error, words):
    with running_server() as server:
        raw = online(server, "d")
        with pytest.raises(error, match=r"messages\[2\]") as info:
            server.push_batch([("d", b"ok 1"), ("other", b"ok 2"), bad, ("d", b"ok 3")])
        assert words in str(info.value)
        assert server.store.last_seq("d") == 0 and server.store.last_seq("other") == 0
        assert raw.silent_for(0.2)
        raw.close()


def test_the_batch_itself_must_be_a_list_and_may_be_empty():
    with running_server() as server:
        with pytest.raises(TypeError, match="list"):
            server.push_batch(("d", b"x"))
        assert server.push_batch([]) == []
        assert server.push_batch(iter([("d", b"x")])) == [1]


def test_batches_from_several_threads_interleave_whole_and_in_order():
    with running_server() as server:
        raw = online(server, "d")
        results: dict[int, list[int]] = {}
        errors = []

        def pusher(n: int) -> None:
            try:
                results[n] = [seq for _ in range(20)
                              for seq in server.push_batch([("d", b"t%d" % n)] * 5)]
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=pusher, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors
        every = sorted(seq for seqs in results.values() for seq in seqs)
        assert every == list(range(1, 401))
        for seqs in results.values():
            # one hand-over per batch: a batch's five seqs are consecutive
            assert all(seqs[i + 4] == seqs[i] + 4 for i in range(0, len(seqs), 5))
        got = receive_pushes(raw, 400)
        assert [seq for seq, _ in got] == list(range(1, 401))
        assert raw.silent_for(0.2)
        raw.close()


def test_message_ids_are_given_or_made_and_options_reach_the_device():
    with running_server() as server:
        raw = online(server, "d")
        server.push_batch([
            ("d", b"a", {"message_id": 77, "topic": "news", "ttl": 60}),
            ("d", b"b"),
        ])
        first, second = raw.expect(protocol.PUSH), raw.expect(protocol.PUSH)
        assert (first.message_id, first.topic) == (77, "news") and first.expiry > 0
        assert second.message_id not in (0, 77) and second.expiry == 0
        raw.close()


def test_call_runs_on_the_loop_thread_and_hands_back_results_and_errors():
    with running_server() as server:
        loop_thread = server.call(threading.get_ident)
        assert loop_thread != threading.get_ident()
        assert server.call(lambda a, b: a + b, 2, 3) == 5
        with pytest.raises(KeyError, match="nope"):
            server.call({}.__getitem__, "nope")
        # on the loop thread it runs at once (no hand-over to itself)
        assert server.call(lambda: server.call(threading.get_ident)) == loop_thread
        release = threading.Event()
        with pytest.raises(TimeoutError):
            server.call(release.wait, 5.0, timeout=0.1)
        release.set()
        assert server.call(lambda: "still answering") == "still answering"
    with pytest.raises(RuntimeError, match="stopped"):
        server.call(lambda: None)
    with pytest.raises(RuntimeError, match="stopped"):
        server.push_batch([("d", b"x")])

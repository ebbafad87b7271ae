"""Issue 9: one device or one careless caller cannot break delivery for others.

Findings 1 (absurd last_seq claims, per-item outcomes), 2 (fields over the
frame cap), 3 (topic authorization, subscription cap, topic-name rule),
8 (REDIRECT order, FETCH max_count=0) and 9 (the SQLite file's mode), each
on real loopback connections where a connection is involved.
"""
from __future__ import annotations

import os
import stat

import pytest

from pushcore import MessageTooLarge
from pushcore.codec import reference as protocol
from pushcore.device.client import Client
from pushcore.errors import Reason
from pushcore.gateway.results import BatchResult, FanOut
from pushcore.gateway.server import MAX_CLAIMED_SEQ
from pushcore.store import SeqExhausted, SQLiteStore, open_store
from pushcore.store.base import MAX_SEQ
from pushcore.wire import (
    MAX_COLLAPSE_KEY_BYTES,
    MAX_DEVICE_ID_BYTES,
    MAX_PAYLOAD_BYTES,
    MAX_TOPIC_BYTES,
)
from serverkit import (
    Collector,
    RawDevice,
    running_server,
    stop_what_the_test_started,  # noqa: F401  (autouse: stops leftovers)
    token,
    wait_for,
)


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = open_store("memory:" if request.param == "memory" else str(tmp_path / "pushcore.db"))
    yield s
    s.close()


def welcomed(dev: RawDevice, device_id: str, last_seq: int = 0) -> None:
    frame = dev.hello(device_id, last_seq=last_seq)
    assert frame.TYPE == protocol.WELCOME, frame


# ---- finding 1: a claim can never make later pushes fail -----------------------------------


def test_absurd_last_seq_is_refused_and_the_device_still_gets_pushes(store):
    with running_server(store=store) as server:
        with RawDevice(server.address) as evil:
            error = evil.hello("evil", last_seq=2**63 - 1)
            assert error.TYPE == protocol.ERROR and error.code == Reason.LAST_SEQ_AHEAD
            assert "2**53" in error.message and error.code == Reason.LAST_SEQ_AHEAD
            assert evil.until_closed() == []
        assert store.last_seq("evil") == 0  # the claim moved nothing
        assert server.push("evil", b"still works") == 1
        server.subscribe("evil", "news")
        server.subscribe("good", "news")
        assert server.publish("news", b"for both") == 2
        assert server.push_batch([("evil", b"a"), ("good", b"b")]) == [3, 2]


def test_a_claim_above_a_known_counter_is_refused_and_a_true_one_is_an_ack(store):
    with running_server(store=store) as server:
        for n in range(3):
            server.push("d", b"m%d" % n)
        with RawDevice(server.address) as dev:
            error = dev.hello("d", last_seq=4)
            assert error.TYPE == protocol.ERROR and error.code == Reason.LAST_SEQ_AHEAD
            assert "ahead of this device's last stored seq 3" in error.message
        assert store.last_seq("d") == 3 and store.backlog("d") == 3
        with RawDevice(server.address) as dev:
            welcomed(dev, "d", last_seq=2)  # acks 1 and 2
            assert dev.expect(protocol.PUSH).seq == 3
        wait_for(lambda: store.backlog("d", 2) == 1)


def test_a_claim_on_a_lost_counter_raises_it_up_to_2_53(store):
    # The memory store after a gateway restart: the device has seen seqs the
    # store no longer counts. Its claim is taken, so new seqs are new to it.
    with running_server(store=store) as server:
        with RawDevice(server.address) as dev:
            welcomed(dev, "phone", last_seq=50)
            assert server.push("phone", b"after restart") == 51
            assert dev.expect(protocol.PUSH).seq == 51
        with RawDevice(server.address) as dev:
            error = dev.hello("fresh", last_seq=MAX_CLAIMED_SEQ + 1)
            assert error.TYPE == protocol.ERROR and error.code == Reason.LAST_SEQ_AHEAD
        with RawDevice(server.address) as dev:
            welcomed(dev, "fresh2", last_seq=MAX_CLAIMED_SEQ)
        assert store.last_seq("fresh2") == MAX_CLAIMED_SEQ


def test_one_exhausted_counter_fails_only_its_own_items(store):
    store.advance_seq("stuck", MAX_SEQ)  # what the claim used to allow
    with running_server(store=store) as server:
        got = Collector()
        good = Client("good", token("good"), [f"{server.address[0]}:{server.address[1]}"], on_message=got, backoff=(0.05, 0.3))
        good.start()
        try:
            wait_for(lambda: server.connected("good"))
            result = server.push_batch([("good", b"1"), ("stuck", b"x"), ("other", b"2"), ("good", b"3")])
            assert isinstance(result, BatchResult)
            assert result == [1, 0, 1, 2]
            assert not result.ok and list(result.errors) == [1]
            assert "exhausted" in result.errors[1]
            got.wait(2)
            assert got.payloads == [b"1", b"3"]

            for device in ("good", "stuck", "other"):
                server.subscribe(device, "news")
            fan = server.publish("news", b"headline")
            assert isinstance(fan, FanOut)
            assert fan == 2 and set(fan.failed) == {"stuck"}
            got.wait(3)
            assert got.payloads[-1] == b"headline"
            assert store.backlog("other") == 2
            with pytest.raises(SeqExhausted):
                server.push("stuck", b"alone")
        finally:
            good.stop()


# ---- finding 2: every field fits the frame cap -----------------------------------------


@pytest.mark.parametrize(
    "field, kwargs",
    [
        ("payload", dict(payload=b"p" * (MAX_PAYLOAD_BYTES + 1))),
        ("topic", dict(topic="t" * (MAX_TOPIC_BYTES + 1))),
        ("collapse_key", dict(collapse_key="k" * (MAX_COLLAPSE_KEY_BYTES + 1))),
        ("device_id", dict(device_id="d" * (MAX_DEVICE_ID_BYTES + 1))),
        ("device_id", dict(device_id="é" * (MAX_DEVICE_ID_BYTES // 2 + 1))),  # counted in UTF-8 bytes
    ],
)
def test_a_field_over_its_limit_raises_and_nothing_is_stored(store, field, kwargs):
    kwargs = dict(kwargs)  # the parametrize dict is shared by both stores
    device_id = kwargs.pop("device_id", "d")
    payload = kwargs.pop("payload", b"ok")
    with running_server(store=store) as server:
        with pytest.raises(MessageTooLarge) as caught:
            server.push(device_id, payload, **kwargs)
        assert caught.value.field == field and isinstance(caught.value, ValueError)
        assert str(caught.value.limit) in str(caught.value)
        with pytest.raises(MessageTooLarge, match=r"messages\[1\]") as caught:
            server.push_batch([("d", b"fine"), (device_id, payload, kwargs)])
        assert caught.value.field == field
        if field != "device_id":
            server.subscribe("d", "news")
            with pytest.raises(MessageTooLarge):
                server.publish(kwargs.get("topic", "news"), payload, collapse_key=kwargs.get("collapse_key", ""))
            with pytest.raises(MessageTooLarge):
                server.broadcast(payload, durable=True, **kwargs)
        assert store.stats().messages == 0


def test_the_largest_message_allowed_reaches_a_real_device():
    device_id = "d" * MAX_DEVICE_ID_BYTES
    payload = os.urandom(MAX_PAYLOAD_BYTES)
    with running_server() as server:
        got = Collector()
        client = Client(device_id, token(device_id), [f"{server.address[0]}:{server.address[1]}"], on_message=got,
                        backoff=(0.05, 0.3))
        client.start()
        try:
            wait_for(lambda: server.connected(device_id))
            seq = server.push(device_id, payload, topic="t" * MAX_TOPIC_BYTES,
                              collapse_key="k" * MAX_COLLAPSE_KEY_BYTES, ttl=3600)
            server.push(device_id, b"next")
            got.wait(2)
            assert got.seqs == [seq, seq + 1]
            assert got.payloads == [payload, b"next"]
            wait_for(lambda: server.store.backlog(device_id) == 0, what="both acked")
        finally:
            client.stop()


# ---- finding 3: who may subscribe to what, and how much -----------------------------------


def test_authorize_subscribe_keeps_a_private_topic_private():
    asked = []

    def authorize(device_id, topic, metadata):
        asked.append((device_id, topic, metadata["peer"][0]))
        return not topic.startswith("private-") or topic == f"private-{device_id}"

    with running_server(authorize_subscribe=authorize) as server:
        with RawDevice(server.address) as a, RawDevice(server.address) as b:
            welcomed(a, "A")
            welcomed(b, "B")
            a.send(protocol.Subscribe(("private-A", "news")))
            b.send(protocol.Subscribe(("private-A", "news")))
            wait_for(lambda: len(asked) == 4)
            wait_for(lambda: server.store.subscribers("news") == {"A", "B"})
            assert server.store.subscribers("private-A") == {"A"}
            assert server.stats["subscribe_refused"] == 1
            assert ("B", "private-A", "127.0.0.1") in asked
            assert server.publish("private-A", b"secret") == 1
            assert a.expect(protocol.PUSH).payload == b"secret"
            assert b.silent_for(0.3)  # and B stays connected


def test_a_hook_that_raises_refuses_the_topic_only():
    def authorize(device_id, topic, metadata):
        raise RuntimeError("backend down")

    with running_server(authorize_subscribe=authorize) as server, RawDevice(server.address) as dev:
        welcomed(dev, "d")
        dev.send(protocol.Subscribe(("news",)))
        wait_for(lambda: server.stats["subscribe_refused"] == 1)
        assert server.store.topics("d") == set()
        dev.send(protocol.Ping())
        assert dev.expect(protocol.PONG)


def test_a_device_cannot_hold_more_than_max_subscriptions():
    with running_server(max_subscriptions=5) as server, RawDevice(server.address) as dev:
        welcomed(dev, "d")
        dev.send(protocol.Subscribe(tuple(f"t{i}" for i in range(3))))
        dev.send(protocol.Subscribe(tuple(f"t{i}" for i in range(10))))
        wait_for(lambda: server.stats["subscribe_over_cap"] == 5)
        assert server.store.topics("d") == {f"t{i}" for i in range(5)}
        dev.send(protocol.Subscribe(("t0", "t1")))  # already held: not over the cap
        dev.send(protocol.Ping())
        assert dev.expect(protocol.PONG)
        assert server.stats["subscribe_over_cap"] == 5
        server.subscribe("d", "from-the-app")  # the application is not capped
        assert len(server.store.topics("d")) == 6


@pytest.mark.parametrize("topic", ["has space", "ünïcode", "t" * (MAX_TOPIC_BYTES + 1), "new\nline"])
def test_a_topic_outside_the_name_rule_closes_the_connection(topic):
    with running_server() as server, RawDevice(server.address) as dev:
        welcomed(dev, "d")
        dev.send(protocol.Subscribe(("ok", topic)))
        error = dev.expect(protocol.ERROR)
        assert error.code == Reason.INVALID_VALUE and "topic" in error.message
        assert dev.until_closed() == []
        assert server.store.topics("d") == set()
        with pytest.raises(ValueError, match="topic"):
            server.subscribe("d", topic)
        with pytest.raises(ValueError, match="topic"):
            server.publish(topic, b"x")


def test_every_topic_character_the_rule_allows_works_end_to_end():
    topic = "Aa0._-:/@+=~#"
    with running_server() as server, RawDevice(server.address) as dev:
        welcomed(dev, "d")
        dev.send(protocol.Subscribe((topic,)))
        wait_for(lambda: server.store.subscribers(topic) == {"d"})
        assert server.publish(topic, b"x") == 1
        assert dev.expect(protocol.PUSH).topic == topic


# ---- finding 8: protocol details -----------------------------------------------------------


def test_redirect_lists_servers_by_ascending_load():
    with running_server() as server, RawDevice(server.address) as dev:
        welcomed(dev, "d")
        assert server.redirect("d", [("127.0.0.1", 9001, 70), ("127.0.0.1", 9002, 5), ("127.0.0.1", 9003, 70),
                                     ("127.0.0.1", 9004, 0)])
        redirect = dev.expect(protocol.REDIRECT)
        assert [port for _, port, _ in redirect.servers] == [9004, 9002, 9001, 9003]


def test_fetch_with_max_count_zero_sends_no_messages():
    with running_server(inline_max=1, page_max=10) as server:
        for n in range(5):
            server.push("d", b"m%d" % n)
        with RawDevice(server.address) as dev:
            welcomed(dev, "d")
            assert dev.expect(protocol.NOTIFY).latest_seq == 5
            dev.send(protocol.Fetch(0, 0))
            assert dev.expect(protocol.NOTIFY, protocol.PUSH).TYPE == protocol.NOTIFY
            server.push("d", b"while fetching")  # stored only: the device is still catching up
            assert dev.silent_for(0.2)
            dev.send(protocol.Fetch(0, 2))
            assert [dev.expect(protocol.PUSH).seq for _ in range(2)] == [1, 2]
            assert dev.expect(protocol.NOTIFY).latest_seq == 6


# ---- finding 9: the store file is private --------------------------------------------------


def test_the_sqlite_store_and_its_wal_are_created_0600(tmp_path):
    old = os.umask(0)  # even with a permissive umask
    try:
        path = tmp_path / "pushcore.db"
        with SQLiteStore(str(path)) as store:
            store.append("d", message_id=1, payload=b"secret payload", priority=1)
            created = [p for p in tmp_path.iterdir() if p.name.startswith("pushcore.db")]
            assert {p.name for p in created} >= {"pushcore.db", "pushcore.db-wal"}
            for p in created:
                assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    finally:
        os.umask(old)


def test_an_existing_store_file_keeps_the_mode_the_operator_chose(tmp_path):
    path = tmp_path / "shared.db"
    path.touch()
    path.chmod(0o640)
    with SQLiteStore(str(path)):
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.parametrize(
    "frame",
    [protocol.Welcome(1, 0, 0, 0), protocol.Notify(1), protocol.UpstreamAck(1),
     protocol.Redirect((("127.0.0.1", 1, 0),)), protocol.Hello((1,), "d", b"x", 0, 0)],
    ids=["welcome", "notify", "upstream_ack", "redirect", "second-hello"],
)
def test_a_server_only_frame_or_a_second_hello_is_invalid_value(frame):
    # As docs/PROTOCOL.md 5a says, for an independent implementation to rely on.
    with running_server() as server, RawDevice(server.address) as dev:
        welcomed(dev, "d")
        dev.send(frame)
        error = dev.expect(protocol.ERROR)
        assert error.code == Reason.INVALID_VALUE
        assert dev.until_closed() == []


def test_an_error_from_the_device_closes_without_an_answer():
    closed = []
    with running_server(on_disconnect=lambda d, r: closed.append((d, r))) as server, \
            RawDevice(server.address) as dev:
        welcomed(dev, "d")
        dev.send(protocol.ErrorFrame(int(Reason.INTERNAL_ERROR), "device bug"))
        assert dev.until_closed() == []
        wait_for(lambda: closed == [("d", Reason.PEER_CLOSED)])


def test_a_client_whose_last_seq_is_ahead_of_the_store_starts_over_and_gets_its_messages():
    # A store restored from an older backup: the device claims 10, the store
    # has given it 3. The claim is refused LAST_SEQ_AHEAD; the Client resets
    # to 0 and receives what is stored (again, the price of the lost store).
    with running_server() as server:
        for n in range(1, 4):
            server.push("d", b"m%d" % n)
        got = Collector()
        client = Client("d", token("d"), [f"{server.address[0]}:{server.address[1]}"], on_message=got,
                        last_seq=10, backoff=(0.05, 0.2))
        client.start()
        try:
            got.wait(3)
            assert got.payloads == [b"m1", b"m2", b"m3"]
            assert client.last_seq == 3
        finally:
            client.stop()


def test_a_device_id_over_the_limit_is_refused_at_hello_even_with_a_custom_hook():
    long_id = "d" * (MAX_DEVICE_ID_BYTES + 1)
    with running_server(authenticate=lambda d, t, m: True) as server, RawDevice(server.address) as dev:
        error = dev.hello(long_id, b"any")
        assert error.TYPE == protocol.ERROR and error.code == Reason.INVALID_VALUE
        assert str(MAX_DEVICE_ID_BYTES) in error.message
        assert dev.until_closed() == []


# ---- a device that floods FETCH cannot make the gateway hold a page per frame ----------------


def test_a_fetch_flood_closes_only_that_device_slow_consumer(store):
    """1,000 FETCH frames at once: one page read at a time, at most 16 waiting, then SLOW_CONSUMER."""
    with running_server(store=store, inline_max=2) as server:
        for _ in range(50):
            server.push("flood", b"x" * 1000)
        with RawDevice(server.address) as other, RawDevice(server.address) as flood:
            welcomed(other, "other")
            welcomed(flood, "flood")
            flood.send(b"".join(protocol.Fetch(0, 256).encode() for _ in range(1000)))
            frames = flood.until_closed()
            assert frames[-1].TYPE == protocol.ERROR and frames[-1].code == Reason.SLOW_CONSUMER
            assert "FETCH" in frames[-1].message
            notifies = [f for f in frames if f.TYPE == protocol.NOTIFY]
            assert len(notifies) <= 1 + 1 + 16  # the HELLO catch-up's, then at most the answered FETCHes (the close may come first)
            assert server.push("other", b"still here") == 1
            got = other.expect(protocol.PUSH)
            assert got.payload == b"still here"

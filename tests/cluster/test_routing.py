"""Routing between gateway nodes on one Redis: forwarded pushes, kicks, broadcasts, presence, outages.

Each node is a real :class:`pushcore.Server` with its own loop, its own
:class:`pushcore.cluster.ClusterLink` and its own
:class:`pushcore.store.redis.RedisStore` object (as separate processes
would have) on one real ``redis-server``; devices speak the wire protocol
over real loopback sockets.
"""
from __future__ import annotations

import contextlib
import uuid

import pytest
from tests.redisd import RedisServer
from tests.serverkit import SECRET, RawDevice, token, wait_for

from pushcore import Server
from pushcore.cluster.bus import unpack
from pushcore.cluster.link import ClusterLink, ClusterUnavailable
from pushcore.codec import reference as protocol
from pushcore.errors import Reason
from pushcore.store import StoreUnavailable
from pushcore.store.redis import RedisStore


@pytest.fixture(params=["redis", "redis-cluster"])
def make_any_node(request):
    """:func:`make_node` on one Redis, then on a 3-master Redis Cluster (sharded pub/sub for node channels)."""
    server = request.getfixturevalue("redis_server" if request.param == "redis" else "redis_cluster")
    yield from _nodes(server.url)


@pytest.fixture
def make_node(redis_server):
    """Nodes on one keyspace (a fresh prefix per test); stopped after the test."""
    yield from _nodes(redis_server.url)


def _nodes(default_url: str):
    prefix = f"t{uuid.uuid4().hex[:8]}"
    made: list[Server] = []

    def make(name: str, url: str | None = None, **kw) -> Server:
        url = url or default_url
        link = ClusterLink(url, node_id=name, prefix=prefix, heartbeat=0.2, lease=1.0, socket_timeout=1.0)
        store = RedisStore(url, prefix=prefix, socket_timeout=1.0)
        server = Server(secret=SECRET, store=store, cluster=link, heartbeat=(0, 60), **kw)
        server.start()
        made.append(server)
        return server

    yield make
    for server in made:
        with contextlib.suppress(Exception):
            server.stop()
        server.store.close()


def connect(server: Server, device_id: str, last_seq: int = 0) -> RawDevice:
    dev = RawDevice(server.address)
    welcome = dev.hello(device_id, last_seq=last_seq)
    assert isinstance(welcome, protocol.Welcome), welcome
    return dev


def test_a_push_through_one_node_reaches_the_device_on_another_once(make_any_node):
    a, b = make_any_node("A"), make_any_node("B")
    dev = connect(a, "phone-1")
    seqs = [b.push("phone-1", b"from B %d" % i) for i in range(5)]
    got = [dev.expect(protocol.PUSH) for _ in seqs]
    assert [p.seq for p in got] == seqs == [1, 2, 3, 4, 5]
    assert [p.payload for p in got] == [b"from B %d" % i for i in range(5)]
    assert dev.silent_for(0.3)  # nothing twice
    assert b.cluster.stats["forwarded"] == 5 and a.cluster.stats["forwarded"] == 0
    dev.send(protocol.Ack(5))
    wait_for(lambda: b.store.backlog("phone-1") == 0, what="the ACK on A removes what B stored")


def test_a_newer_connection_on_another_node_replaces_the_older_one(make_any_node):
    a, b = make_any_node("A"), make_any_node("B")
    old = connect(a, "phone-1")
    a.push("phone-1", b"one")
    assert old.expect(protocol.PUSH).seq == 1
    new = connect(b, "phone-1", last_seq=1)
    goaway = old.expect(protocol.GOAWAY)
    assert goaway.reason == Reason.REPLACED
    old.until_closed()
    wait_for(lambda: not a.connected("phone-1"), what="A forgets the replaced connection")
    assert a.stats["replaced"] == 1
    # a push through A now reaches the device on B, after what it already had
    a.push("phone-1", b"two")
    push = new.expect(protocol.PUSH)
    assert (push.seq, push.payload) == (2, b"two")
    assert a.cluster.locate(["phone-1"]) == {"phone-1": ("B", b.cluster.locate(["phone-1"])["phone-1"][1])}


def test_a_device_offline_everywhere_gets_its_pushes_from_the_store_on_any_node(make_node):
    a, b = make_node("A"), make_node("B")
    for i in range(3):
        a.push("phone-9", b"m%d" % i)
    wait_for(lambda: a.cluster.stats["forward_offline"] == 3, what="three pushes judged offline")
    dev = connect(b, "phone-9")
    assert [dev.expect(protocol.PUSH).seq for _ in range(3)] == [1, 2, 3]
    assert a.cluster.stats["forwarded"] == 0  # nobody held it: nothing was forwarded


def test_ephemeral_broadcast_reaches_every_node_once(make_any_node):
    a, b, c = make_any_node("A"), make_any_node("B"), make_any_node("C")
    devs = {name: connect(node, f"phone-{name}") for name, node in (("a", a), ("b", b), ("c", c))}
    assert a.broadcast(b"to everyone") == 1  # the count is this node's own devices
    for dev in devs.values():
        push = dev.expect(protocol.PUSH)
        assert (push.seq, push.payload) == (0, b"to everyone")
    assert all(dev.silent_for(0.2) for dev in devs.values())


def test_a_publish_reaches_subscribers_on_every_node_with_their_own_seqs(make_any_node):
    a, b = make_any_node("A"), make_any_node("B")
    on_a = {d: connect(a, d) for d in ("x1", "x2")}
    on_b = {d: connect(b, d) for d in ("y1", "y2", "y3")}
    for dev in {**on_a, **on_b}.values():
        dev.send(protocol.Subscribe(("news",)))
    wait_for(lambda: len(a.store.subscribers("news")) == 5, what="five subscriptions")
    b.push("y1", b"private")  # y1's counter is ahead: its copy of the publish has seq 2
    assert on_b["y1"].expect(protocol.PUSH).seq == 1
    fanout = a.publish("news", b"headline")
    assert fanout == 5 and not fanout.failed
    for d, dev in {**on_a, **on_b}.items():
        push = dev.expect(protocol.PUSH)
        assert push.payload == b"headline" and push.topic == "news"
        assert push.seq == (2 if d == "y1" else 1)
        assert dev.silent_for(0.1)


def test_presence_answers_for_the_whole_cluster_and_forgets_a_closed_connection(make_any_node):
    a, b = make_any_node("A"), make_any_node("B")
    dev = connect(a, "phone-1")
    where = b.cluster.locate(["phone-1", "nobody"])
    assert list(where) == ["phone-1"] and where["phone-1"][0] == "A"
    assert sorted(n.node_id for n in b.cluster.nodes()) == ["A", "B"]
    dev.close()
    wait_for(lambda: b.cluster.locate(["phone-1"]) == {}, what="the route released on close")
    a.stop()
    wait_for(lambda: [n.node_id for n in b.cluster.nodes()] == ["B"], what="A left the registry")


def test_a_dead_nodes_routes_are_offline_once_its_lease_runs_out(make_node):
    a, b = make_node("A"), make_node("B")
    dev = connect(a, "phone-1")
    assert b.cluster.locate(["phone-1"])["phone-1"][0] == "A"
    a.cluster.close(leave=False)  # as if the process died: its lease is not renewed
    wait_for(lambda: b.cluster.locate(["phone-1"]) == {}, timeout=5, what="A's lease ran out")
    b.push("phone-1", b"kept")  # stored, not forwarded to a dead node
    assert b.store.backlog("phone-1") == 1
    wait_for(lambda: b.cluster.stats["forward_offline"] == 1, what="the push judged offline")
    assert b.cluster.stats["forwarded"] == 0
    dev.close()


def test_a_bad_bus_message_is_counted_and_the_node_carries_on(make_node):
    a, b = make_node("A"), make_node("B")
    dev = connect(a, "phone-1")
    import redis

    r = redis.Redis.from_url(a.cluster.url)
    r.publish(a.cluster.channel, b"Zgarbage")
    r.publish(a.cluster.channel, b"F\xff\xff")
    wait_for(lambda: a.cluster.stats["bad_messages"] == 2, what="two bad messages counted")
    b.push("phone-1", b"still works")
    assert dev.expect(protocol.PUSH).payload == b"still works"
    r.close()


def test_devices_stay_connected_through_a_redis_restart_and_forwards_resume(tmp_path, make_node):
    redis_server = RedisServer(tmp_path / "own").start()
    try:
        a, b = make_node("A", redis_server.url), make_node("B", redis_server.url)
        dev = connect(a, "phone-1")
        b.push("phone-1", b"before")
        assert dev.expect(protocol.PUSH).seq == 1
        redis_server.stop()
        wait_for(lambda: a.cluster.stats["redis_errors"] > 0, timeout=5, what="A notices Redis is gone")
        assert a.connected("phone-1")
        with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{redis_server.port}"):
            b.push("phone-1", b"refused")  # a clear, typed error (the admin API answers it with 503)
        late = RawDevice(b.address)
        assert late.hello("phone-2").code == Reason.OVERLOADED  # "try again later", not a crash
        late.close()
        assert dev.silent_for(0.2) and a.connected("phone-1")  # the connected device stays
        redis_server.start()  # the same port and directory: the AOF brings the data back
        wait_for(lambda: a.cluster.stats["resyncs"] >= 1, timeout=10, what="A resubscribed and resynced")
        wait_for(lambda: b.cluster.locate(["phone-1"]).get("phone-1", ("",))[0] == "A", timeout=5,
                 what="A claimed its device again")
        b.push("phone-1", b"after")
        push = dev.expect(protocol.PUSH)
        assert (push.seq, push.payload) == (2, b"after")
        assert dev.silent_for(0.3)
    finally:
        redis_server.stop()


def test_bus_messages_round_trip():
    from pushcore.cluster.bus import Broadcast, Forward, Kick, pack_broadcast, pack_forward, pack_kick
    from pushcore.store import StoredMessage

    m = StoredMessage(7, 2**64 - 1, b"\x00payload", 0, 123, "ck", "topic/é", 0.0)
    forward = unpack(pack_forward([(m, [("a", 7), ("bé", 9)]), (m, [("c", 1)])]))
    assert isinstance(forward, Forward)
    assert [(g[0].payload, g[0].message_id, g[0].topic, g[1]) for g in forward.groups] == [
        (b"\x00payload", 2**64 - 1, "topic/é", [("a", 7), ("bé", 9)]), (b"\x00payload", 2**64 - 1, "topic/é", [("c", 1)])]
    assert unpack(pack_kick("dev", 2**40)) == Kick("dev", 2**40)
    b = unpack(pack_broadcast("node-1", m))
    assert isinstance(b, Broadcast) and b.origin == "node-1" and b.message.payload == b"\x00payload"


def test_the_load_registry_lists_every_node_with_its_figures(make_node):
    a, b = make_node("A"), make_node("B")
    devs = [connect(a, f"phone-{i}") for i in range(3)]
    wait_for(lambda: {n.node_id: n.connections for n in b.cluster.nodes()} == {"A": 3, "B": 0},
             what="A's three connections in the registry")
    (info_a,) = [n for n in b.cluster.nodes() if n.node_id == "A"]
    assert (info_a.host, info_a.port) == a.address
    assert {"loop_lag_p99_ms", "outbound_bytes", "store_queue", "cpu", "draining"} <= set(info_a.info)
    assert [n.node_id for n in b.cluster.nodes()] == ["B", "A"]  # least loaded first
    for dev in devs:
        dev.close()


def test_an_overloaded_node_sends_new_devices_to_a_less_loaded_one(redis_server):
    prefix = f"t{uuid.uuid4().hex[:8]}"
    nodes = []
    try:
        for name in ("A", "B"):
            link = ClusterLink(redis_server.url, node_id=name, prefix=prefix, heartbeat=0.2, lease=1.0,
                               overload_connections=2)
            server = Server(secret=SECRET, store=RedisStore(redis_server.url, prefix=prefix), cluster=link,
                            heartbeat=(0, 60))
            server.start()
            nodes.append(server)
        a, b = nodes
        on_a = [connect(a, f"phone-{i}") for i in range(2)]
        wait_for(lambda: [(n.node_id, n.connections) for n in a.cluster.peers] == [("B", 0)],
                 what="A sees B's load")
        wait_for(lambda: a.cluster.placement(2)[1] != [], what="A knows it is over its limit")
        third = RawDevice(a.address)
        third.send(protocol.Hello((1,), "phone-2", token("phone-2"), 0, 0))
        answer = third.expect(protocol.GOAWAY)
        assert answer.reason == Reason.OVERLOADED
        assert [(h, p) for h, p, _load in answer.servers] == [b.address]
        assert a.stats["redirected"] == 1
        moved = connect(b, "phone-2")  # where the GOAWAY sent it
        b.push("phone-0", b"still reaches A's device")
        assert on_a[0].expect(protocol.PUSH).payload == b"still reaches A's device"
        for dev in [*on_a, moved, third]:
            dev.close()
    finally:
        for server in nodes:
            server.stop()
            server.store.close()


def test_a_draining_node_sends_its_devices_to_the_others_and_nothing_is_lost(make_any_node):
    a, b = make_any_node("A"), make_any_node("B")
    devs = {f"phone-{i}": connect(a, f"phone-{i}") for i in range(3)}
    wait_for(lambda: [n.node_id for n in a.cluster.peers] == ["B"], what="A knows B")
    for device_id in devs:
        b.push(device_id, b"first")
    for dev in devs.values():
        assert dev.expect(protocol.PUSH).seq == 1  # received, not acked: still in the store
    a.drain()
    for device_id, dev in devs.items():
        goaway = dev.expect(protocol.GOAWAY)
        assert goaway.reason == Reason.SHUTTING_DOWN
        assert [(h, p) for h, p, _load in goaway.servers] == [b.address]
        dev.close()
        again = connect(b, device_id, last_seq=0)  # the device moves where it was told, showing nothing yet
        assert again.expect(protocol.PUSH).seq == 1  # unacked: sent again, the device dedupes by seq
        b.push(device_id, b"second")
        assert again.expect(protocol.PUSH).seq == 2
        again.close()
    wait_for(lambda: [n.node_id for n in b.cluster.nodes()] == ["B"], what="A left the registry")


def test_a_durable_broadcast_is_stored_for_every_device_connected_anywhere(make_any_node):
    a, b = make_any_node("A"), make_any_node("B")
    on_a, on_b = connect(a, "x1"), connect(b, "y1")
    assert sorted(a.cluster.online_devices()) == ["x1", "y1"]
    fanout = b.broadcast(b"everyone, kept", durable=True)
    assert fanout == 2 and not fanout.failed
    for dev in (on_a, on_b):
        push = dev.expect(protocol.PUSH)
        assert (push.seq, push.payload) == (1, b"everyone, kept")
    assert a.store.backlog("x1") == 1 and a.store.backlog("y1") == 1  # stored until acked
    on_a.close()
    on_b.close()


def test_the_admin_api_lists_devices_of_every_node(make_node):
    from pushcore.admin.api import AdminAPI

    a, b = make_node("A"), make_node("B")
    devs = [connect(a, "x1"), connect(b, "y1"), connect(b, "y2")]
    api = AdminAPI(a, "admin-token-0123456789")
    wait_for(lambda: api.handle("GET", "/v1/devices", {}, None)[2]["cluster"]["connected"] == 3,
             what="the registry counts every node's devices")
    _route, status, body = api.handle("GET", "/v1/devices", {"list": ["1"]}, None)
    assert status == 200 and body["connected"] == 1 and body["devices"] == ["x1", "y1", "y2"]
    assert body["cluster"] == {"connected": 3, "nodes": 2}
    assert api.handle("GET", "/v1/devices/y2", {}, None)[2]["node"] == "B"
    for dev in devs:
        dev.close()


def test_a_node_whose_lease_lapsed_catches_its_devices_up_when_it_is_back(make_node):
    a, b = make_node("A"), make_node("B")
    dev = connect(a, "phone-1")
    renew = a.cluster._renew_lease
    failing = True

    def stalled() -> None:  # as if A's sender could not reach Redis for longer than the lease
        if failing:
            raise ClusterUnavailable("stalled")
        renew()

    a.cluster._renew_lease = stalled
    wait_for(lambda: b.cluster.locate(["phone-1"]) == {}, timeout=5, what="A's lease ran out")
    b.push("phone-1", b"while A looked dead")
    wait_for(lambda: b.cluster.stats["forward_offline"] == 1, what="B judged the device offline: stored only")
    failing = False
    push = dev.expect(protocol.PUSH)  # A renews, sees the lapse, catches its devices up from the store
    assert (push.seq, push.payload) == (1, b"while A looked dead")
    assert a.cluster.stats["lease_lapses"] == 1
    dev.close()


def test_redirects_and_server_lists_name_each_address_once_and_never_this_nodes_own(redis_server):
    from pushcore.cluster.link import NodeInfo, per_address

    assert per_address([("h", 1, 10.0), ("h", 2, 3.0), ("h", 1, 2.0)]) == [("h", 2, 3.0), ("h", 1, 6.0)]
    link = ClusterLink(redis_server.url, node_id="me", address=("127.0.0.1", 5000))
    try:
        def node(name, port, connections, **info):
            return NodeInfo(name, "127.0.0.1", port, connections, float(connections), 0.0, info)

        link.peers = [node("sibling", 5000, 0), node("b1", 5001, 4), node("b2", 5001, 8), node("c", 5002, 1),
                      node("d", 5003, 0, draining=True)]
        # the sibling worker shares this node's port; b1 and b2 are one address; d is draining
        assert link.redirect_targets() == [("127.0.0.1", 5002, 1), ("127.0.0.1", 5001, 6)]
    finally:
        link.close(leave=False)


def test_nodes_get_distinct_numbers_for_message_ids(make_node):
    a, b = make_node("A"), make_node("B")
    assert a.cluster.node_number != b.cluster.node_number
    first, second = a.push("x", b"1"), b.push("x", b"2")
    assert (first, second) == (1, 2)
    ids = [m.message_id for m in a.store.range("x", 0)]
    assert [(i >> 12) & 0x3FF for i in ids] == [a.cluster.node_number, b.cluster.node_number]


def test_the_admin_api_lists_the_live_nodes(make_node):
    from pushcore.admin.api import AdminAPI

    a, b = make_node("A"), make_node("B")
    dev = connect(b, "y1")
    api = AdminAPI(a, "admin-token-0123456789")
    wait_for(lambda: {n["node"]: n["connections"] for n in api.handle("GET", "/v1/nodes", {}, None)[2]["nodes"]}
             == {"A": 0, "B": 1}, what="both nodes listed with their connections")
    (entry,) = [n for n in api.handle("GET", "/v1/nodes", {}, None)[2]["nodes"] if n["node"] == "B"]
    assert (entry["host"], entry["port"]) == b.address and entry["draining"] is False
    dev.close()


def test_a_retried_push_whose_first_node_never_delivered_it_reaches_the_device_once(make_any_node):
    a, b = make_any_node("A"), make_any_node("B")
    dev = connect(a, "phone-1")
    forward = b._delivery.remote
    b._delivery.remote = None  # as if B stopped right after storing it: the push is stored, never forwarded
    assert b.push("phone-1", b"once", idempotency_key="order-17") == 1
    assert dev.silent_for(0.3)
    b._delivery.remote = forward
    assert b.push("phone-1", b"once", idempotency_key="order-17") == 1  # the retry: answered from the store
    push = dev.expect(protocol.PUSH)  # B woke the device's node, which caught it up from the store
    assert (push.seq, push.payload) == (1, b"once")
    assert a.push("phone-1", b"once", idempotency_key="order-17") == 1  # a third try, on the device's node
    assert dev.silent_for(0.3)  # sent already: not again
    dev.close()


def test_hellos_of_connections_closed_while_queued_claim_no_route(make_node, redis_server):
    import socket

    import redis

    a = make_node("A")
    r = redis.Redis.from_url(redis_server.url)
    r.execute_command("CLIENT", "PAUSE", "1500", "WRITE")  # the store's writer waits on its first write
    try:
        for i in range(30):  # a storm of devices that give up before their HELLO is answered
            with socket.create_connection(a.address) as s:
                s.sendall(protocol.Hello((1,), f"gone-{i}", token(f"gone-{i}"), 0, 0).encode())
            wait_for(lambda n=i + 1: a.stats["hello"] >= n, what="the HELLO read")
    finally:
        r.execute_command("CLIENT", "UNPAUSE")
    wait_for(lambda: a.pipeline.pending() == 0 and not a._hello_pending, what="the queued HELLOs handled")
    assert a.cluster.stats["claims"] <= 1  # at most the one already waiting on Redis when they closed
    # and that one's route is released (by the link's sender thread, so it may take a moment)
    wait_for(lambda: a.cluster.locate([f"gone-{i}" for i in range(30)]) == {}, what="no route left")
    r.close()

"""pushcore.Client over real loopback sockets: probing, fallback, reconnect, redirect, auth, dedupe."""
from __future__ import annotations

import inspect
import json
import threading
import time

import pytest
from test_serverlist import UNRESOLVABLE, ListServer

from pushcore.codec import reference as protocol
from pushcore.device.client import Client, ClientState, ConnectError, NotConnected
from pushcore.device.heartbeat import HeartbeatPolicy
from pushcore.errors import Reason
from pushcore.tokens import AuthError
from serverkit import (
    Collector,
    ScriptedServer,
    SilentListener,
    fast_heartbeat,
    free_port,
    make_server,
    running_server,
    stop_what_the_test_started,  # noqa: F401  (autouse: stops leftovers)
    token,
    wait_for,
)


def addr(server_or_address) -> str:
    host, port = getattr(server_or_address, "address", server_or_address)
    return f"{host}:{port}"


def make_client(servers, device="d1", **kw) -> Client:
    kw.setdefault("backoff", (0.05, 0.3))
    kw.setdefault("ack_delay", 0.01)
    return Client(device, kw.pop("tok", None) or token(device), servers, **kw)


@pytest.fixture
def server():
    with running_server() as s:
        yield s


def test_connects_receives_and_stops(server):
    got = Collector()
    states = []
    client = make_client([addr(server)], on_message=got, on_state=lambda s, r: states.append(s))
    assert client.start() is client
    assert client.is_connected and client.server == server.address
    for i in range(5):
        server.push("d1", b"m%d" % i)
    got.wait(5)
    assert got.seqs == [1, 2, 3, 4, 5]
    assert got.payloads == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    wait_for(lambda: server.store.range("d1", 0) == [], what="the ACK to trim the store")
    client.stop()
    assert client.state is ClientState.STOPPED
    assert states[:2] == [ClientState.CONNECTING, ClientState.CONNECTED]
    assert states[-1] is ClientState.STOPPED
    wait_for(lambda: not server.connected("d1"))


def test_probing_picks_the_server_that_answers():
    silent = SilentListener()
    try:
        with running_server() as server:
            # the silent one is listed first and accepts the TCP connection; it
            # never answers, and the probe timeout is far beyond start()'s wait
            client = make_client([addr(silent.address), addr(server)], probe_timeout=60)
            client.start(timeout=10)
            assert client.server == server.address
            client.stop()
    finally:
        silent.close()


def test_probing_skips_refused_ports_and_probes_beyond_the_first_k():
    dead = [("127.0.0.1", free_port()) for _ in range(3)]
    with running_server() as server:
        client = make_client([addr(a) for a in dead] + [addr(server)], probe_count=2)
        client.start(timeout=10)
        assert client.server == server.address
        client.stop()


def test_fallback_list_when_names_do_not_resolve(server):
    client = make_client([f"{UNRESOLVABLE}:5222"], fallback=[addr(server)])
    client.start(timeout=10)
    assert client.server == server.address
    client.stop()


def test_server_list_from_http_sorted_by_load():
    silent = SilentListener()
    lists = ListServer()
    try:
        with running_server() as server:
            lists.body = json.dumps(
                [
                    {"host": "127.0.0.1", "port": silent.address[1], "load": 90},
                    {"host": "127.0.0.1", "port": server.address[1], "load": 10},
                ]
            ).encode()
            # one probe at a time: only the load order can make it pick the live server
            client = make_client([], servers_url=lists.url, probe_count=1, probe_timeout=60)
            client.start(timeout=10)
            assert client.server == server.address
            assert lists.hits == 1
            client.stop()
    finally:
        lists.close()
        silent.close()


def test_fallback_when_the_http_list_fails(server):
    lists = ListServer()
    lists.status = 503
    try:
        client = make_client([], servers_url=lists.url, fallback=[addr(server)])
        client.start(timeout=10)
        assert client.server == server.address
        client.stop()
    finally:
        lists.close()


@pytest.mark.parametrize(
    "tok, reason",
    [
        (token("someone-else"), Reason.AUTH_FAILED),
        (token("d1", expires_at=time.time() - 5), Reason.TOKEN_EXPIRED),
    ],
)
def test_refused_token_fails_start_with_the_reason(server, tok, reason):
    states = []
    client = make_client([addr(server)], tok=tok, on_state=lambda s, r: states.append((s, r)))
    with pytest.raises(AuthError) as info:
        client.start(timeout=10)
    assert info.value.reason == reason
    assert client.state is ClientState.FAILED
    # on_state gets a Cause; its reason is the Reason earlier versions passed
    assert [(s, c.reason) for s, c in states if s is ClientState.FAILED] == [(ClientState.FAILED, reason)]
    assert isinstance(client.error, AuthError)


def test_start_times_out_when_no_server_answers():
    silent = SilentListener()
    try:
        client = make_client([addr(silent.address)], probe_timeout=60)
        with pytest.raises(ConnectError):
            client.start(timeout=0.5)
        assert client.state is ClientState.STOPPED
    finally:
        silent.close()


def test_reconnects_with_backoff_after_the_server_restarts(tmp_path):
    path = str(tmp_path / "s.db")
    server = make_server(store=path)
    host, port = server.start()
    got = Collector()
    states = []
    client = make_client([f"{host}:{port}"], on_message=got, on_state=lambda s, r: states.append(s))
    client.start()
    server.push("d1", b"before")
    got.wait(1)
    server.stop()
    wait_for(lambda: client.state in (ClientState.BACKOFF, ClientState.CONNECTING))
    server2 = make_server(store=path, port=port)
    server2.start()
    try:
        wait_for(lambda: client.is_connected, what="the reconnect")
        server2.push("d1", b"after")
        got.wait(2)
        assert got.seqs == [1, 2] and got.payloads == [b"before", b"after"]
        assert ClientState.DISCONNECTED in states and ClientState.BACKOFF in states
        assert client.stats["connects"] == 2
    finally:
        client.stop()
        server2.stop()


def test_redirect_frame_moves_the_client(server):
    with running_server() as other:
        client = make_client([addr(server)])
        client.start()
        assert server.redirect("d1", [addr(other)])
        wait_for(lambda: client.is_connected and client.server == other.address)
        wait_for(lambda: other.connected("d1"))
        client.stop()


def test_drain_goaway_with_servers_moves_the_client():
    with running_server() as other:
        first = make_server()
        first.start()
        got = Collector()
        client = make_client([addr(first)], on_message=got)
        client.start()
        first.drain(redirect=[addr(other)])
        wait_for(lambda: client.is_connected and client.server == other.address)
        other.push("d1", b"hi")
        got.wait(1)
        client.stop()


def test_reconnect_on_replaced_false_stops_and_the_new_one_keeps_the_route(server):
    first = make_client([addr(server)], reconnect_on_replaced=False)
    first.start()
    second = make_client([addr(server)], reconnect_on_replaced=False)
    second.start()
    wait_for(lambda: first.state is ClientState.REPLACED)
    time.sleep(0.2)  # it must not come back and take the route again
    assert first.state is ClientState.REPLACED and first.stats["replaced"] == 1
    assert second.is_connected
    got = Collector()
    second.on_message = got
    server.push("d1", b"x")
    got.wait(1)
    second.stop()
    first.stop()


class _StateLog:
    """(state, reason, retry_delay, monotonic time) of each on_state call, thread-safe."""

    def __init__(self) -> None:
        self.events: list[tuple[ClientState, object, float | None, float]] = []
        self.lock = threading.Lock()
        self.client: Client | None = None

    def __call__(self, state, reason) -> None:
        with self.lock:
            self.events.append((state, reason, self.client.retry_delay, time.monotonic()))

    def replaced_then_connected(self) -> list[tuple[float, float]]:
        """(scheduled delay, seconds from the REPLACED close to the next WELCOME), per comeback."""
        with self.lock:
            events = list(self.events)
        out, since = [], None
        for state, reason, delay, at in events:
            if state is ClientState.BACKOFF and since is not None and since[0] is None:
                since = (delay, since[1])
            elif state is ClientState.DISCONNECTED and reason is not None and reason.reason == Reason.REPLACED:
                since = (None, at)
            elif state is ClientState.CONNECTED and since is not None:
                out.append((since[0], at - since[1]))
                since = None
        return out


def test_a_replaced_client_comes_back_after_a_growing_backoff(server):
    # finding 7: a replayed token used to make the genuine client stop for good ("replaced")
    initial = 0.2
    logs = [_StateLog(), _StateLog()]
    clients = []
    for log in logs:
        client = make_client([addr(server)], replaced_backoff=(initial, 30.0), on_state=log)
        log.client = client
        clients.append(client)
    first, second = clients
    assert inspect.signature(Client).parameters["reconnect_on_replaced"].default is True  # documented
    first.start()
    second.start()  # replaces the first, which comes back and replaces the second, ...
    wait_for(lambda: len(logs[0].replaced_then_connected()) >= 2, what="the first client back twice")
    comebacks = logs[0].replaced_then_connected()[:2]
    for n, (delay, waited) in enumerate(comebacks):
        ceiling = initial * 2**n  # c = min(max, initial * 2**n); the delay is drawn from [c/2, c]
        assert ceiling / 2 <= delay <= ceiling, (n, delay)
        assert waited >= delay  # it really waited (a lower bound: never too early)
    assert first.stats["replaced"] >= 2 and second.stats["replaced"] >= 1
    # whoever holds the route gets the pushes: one of the two is connected
    wait_for(lambda: first.is_connected or second.is_connected)
    first.stop()
    second.stop()


def test_replaced_backoff_is_validated():
    with pytest.raises(ValueError, match="replaced_backoff"):
        Client("x", b"t", ["127.0.0.1:1"], replaced_backoff=(0, 1))
    with pytest.raises(ValueError, match="replaced_backoff"):
        Client("x", b"t", ["127.0.0.1:1"], replaced_backoff=(2, 1))


def test_subscribe_and_resubscribe_after_reconnect(tmp_path):
    path = str(tmp_path / "s.db")
    server = make_server(store=path)
    host, port = server.start()
    got = Collector()
    client = make_client([f"{host}:{port}"], on_message=got, topics=["news"])
    client.start()
    client.subscribe("sport")
    wait_for(lambda: server.store.topics("d1") == {"news", "sport"})
    server.publish("sport", b"goal")
    got.wait(1)
    client.unsubscribe("news")
    wait_for(lambda: server.store.topics("d1") == {"sport"})
    assert client.topics == ["sport"]
    server.stop()
    # a fresh store (memory): the subscriptions come back from the client itself
    server2 = make_server(port=port)
    server2.start()
    try:
        wait_for(lambda: server2.store.topics("d1") == {"sport"}, what="the re-subscribe")
    finally:
        client.stop()
        server2.stop()


def test_upstream_future_resolves_on_ack_and_fails_when_not_connected(server):
    received = []
    server.on_upstream = lambda d, payload, topic: received.append((d, payload, topic))
    client = make_client([addr(server)])
    future = client.upstream(b"too early")
    with pytest.raises(NotConnected):
        future.result(1)
    client.start()
    futures = [client.upstream(b"up %d" % i, topic="t") for i in range(5)]
    assert [f.result(5) for f in futures] == [1, 2, 3, 4, 5]
    assert received == [("d1", b"up %d" % i, "t") for i in range(5)]
    client.stop()


def test_duplicates_and_old_seqs_are_dropped_and_ack_is_cumulative():
    scripted = ScriptedServer()
    got = Collector()
    client = make_client([addr(scripted.address)], on_message=got, last_seq=2, ack_every=3, ack_delay=5)
    thread = threading.Thread(target=client.start)
    thread.start()
    peer = scripted.accept()
    hello = scripted.welcome(peer)
    assert (hello.device_id, hello.last_seq) == ("d1", 2)
    thread.join()
    data = b"".join(
        protocol.encode_push(seq, 100 + seq, b"p%d" % seq) for seq in (1, 2, 3, 3, 4, 2, 5)
    )
    peer.send(data)
    got.wait(3)
    assert got.seqs == [3, 4, 5]
    assert peer.expect(protocol.ACK).seq == 5  # one ACK for three new messages
    assert client.inbox.duplicates == 4
    # ephemeral (seq 0) messages are shown every time and never acked
    peer.send(protocol.encode_push(0, 1, b"e") * 2)
    got.wait(5)
    assert got.seqs[-2:] == [0, 0]
    client.stop()
    assert peer.until_closed() == []
    scripted.close()


def test_notify_is_followed_by_fetches_until_caught_up():
    with running_server(inline_max=2, page_max=4) as server:
        for i in range(30):
            server.push("d1", b"%d" % i)
        got = Collector()
        client = make_client([addr(server)], on_message=got, page_size=10)
        client.start()
        got.wait(30)
        assert got.seqs == list(range(1, 31))
        server.push("d1", b"live")
        got.wait(31)
        assert got.payloads[-1] == b"live"
        wait_for(lambda: server.store.range("d1", 0) == [])
        client.stop()


def test_heartbeat_steps_up_while_pongs_come_back():
    with running_server(heartbeat=(0, 60)) as server:
        policy = fast_heartbeat(scale=0.001)  # floor 0.21 s, +0.06 s after 5 answered PINGs
        client = make_client([addr(server)], heartbeat=policy, pong_timeout=1.0)
        client.start()
        wait_for(lambda: policy.interval > 0.21 + 1e-9, what="a step up", timeout=15)
        assert not policy.held
        assert client.is_connected and client.stats["heartbeat_failures"] == 0
        client.stop()


def test_unanswered_heartbeat_backs_off_and_holds():
    """A gateway that stops answering PINGs: the loop closes IDLE_TIMEOUT, the policy backs off."""
    scripted = ScriptedServer()
    policy = HeartbeatPolicy(floor=0.2, cap=2.0, step_up=0.3, back_off=0.1, successes_to_step=1)
    policy.memory["default"].interval = 0.8  # as if it had probed up to 0.8 s before
    client = make_client([addr(scripted.address)], heartbeat=policy, pong_timeout=0.3)
    thread = threading.Thread(target=client.start)
    thread.start()
    peer = scripted.accept()
    scripted.welcome(peer)
    thread.join()
    assert peer.expect(protocol.PING, timeout=5).TYPE == protocol.PING  # never answered
    wait_for(lambda: client.stats["heartbeat_failures"] == 1, what="the heartbeat failure")
    assert policy.held and policy.interval == pytest.approx(0.7)
    client.stop()
    scripted.close()


def test_many_clients_share_one_loop(server):
    from pushcore._loop import Loop

    loop = Loop()
    got = Collector()
    clients = [
        Client(f"dev{i}", token(f"dev{i}"), [addr(server)], loop=loop, on_message=got)
        for i in range(50)
    ]
    for client in clients:
        client.connect()
    deadline = time.monotonic() + 10
    while not all(c.is_connected for c in clients) and time.monotonic() < deadline:
        loop.run_once(0.05)
    assert all(c.is_connected for c in clients)
    wait_for(lambda: server.device_count() == 50)
    assert server.broadcast(b"all", durable=True) == 50
    while len(got.messages) < 50 and time.monotonic() < deadline:
        loop.run_once(0.05)
    assert len(got.messages) == 50
    for client in clients:
        client.stop()
    for _ in range(5):
        loop.run_once(0.02)
    wait_for(lambda: server.device_count() == 0)
    loop.close()


def test_server_and_clients_on_one_loop_in_one_thread():
    from pushcore._loop import Loop

    loop = Loop()
    server = make_server(loop=loop)
    host, port = server.listen()
    got = Collector()
    client = Client("solo", token("solo"), [f"{host}:{port}"], loop=loop, on_message=got)
    client.connect()
    deadline = time.monotonic() + 10
    while not client.is_connected and time.monotonic() < deadline:
        loop.run_once(0.05)
    assert client.is_connected
    assert server.push("solo", b"same thread") == 1
    while not got.messages and time.monotonic() < deadline:
        loop.run_once(0.05)
    assert got.payloads == [b"same thread"]
    client.stop()
    server.stop()  # on a shared loop: starts the drain; the loop runs it
    while not server.stopped and time.monotonic() < deadline:
        loop.run_once(0.02)
    assert server.stopped and server.store.closed
    loop.close()


def test_constructor_checks():
    with pytest.raises(ValueError):
        Client("", b"t", ["127.0.0.1:1"])
    with pytest.raises(ValueError):
        Client("d", b"t")
    with pytest.raises(ValueError):
        Client("d", b"t", ["127.0.0.1:1"], backoff=(2, 1))


def test_asyncio_form(server):
    import asyncio

    got = Collector()
    received = []
    server.on_upstream = lambda d, payload, topic: received.append(payload)

    async def main():
        async with make_client([addr(server)], on_message=got) as client:
            assert client.is_connected
            assert await client.connected(timeout=1) is client
            server.push("d1", b"to asyncio")
            for _ in range(500):
                if got.messages:
                    break
                await asyncio.sleep(0.01)
            upstream_id = await asyncio.wait_for(asyncio.wrap_future(client.upstream(b"from asyncio")), 5)
            return client, upstream_id

    client, upstream_id = asyncio.run(main())
    assert got.payloads == [b"to asyncio"]
    assert upstream_id == 1 and received == [b"from asyncio"]
    assert client.state is ClientState.STOPPED
    wait_for(lambda: not server.connected("d1"))


def test_asyncio_form_raises_when_refused(server):
    import asyncio

    async def main():
        async with make_client([addr(server)], tok=b"bad"):
            pass

    with pytest.raises(AuthError):
        asyncio.run(main())


def test_backoff_is_exponential_jittered_and_capped():
    from pushcore.device.client import backoff_delay

    lowest = [backoff_delay(a, 0.5, 60.0, rand=lambda lo, hi: lo) for a in range(10)]
    highest = [backoff_delay(a, 0.5, 60.0, rand=lambda lo, hi: hi) for a in range(10)]
    assert highest == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert lowest == [h / 2 for h in highest]
    delays = {backoff_delay(3, 0.5, 60.0) for _ in range(50)}
    assert all(2.0 <= d <= 4.0 for d in delays) and len(delays) > 1  # jittered
    assert backoff_delay(10_000, 0.5, 60.0) <= 60.0


def test_token_function_is_called_at_each_connection(server):
    calls = []

    def fresh_token():
        calls.append(time.monotonic())
        return token("d1")

    client = make_client([addr(server)], tok=fresh_token)
    client.start()
    assert len(calls) == 1
    server.disconnect("d1", Reason.OVERLOADED, "try again")
    wait_for(lambda: client.stats["connects"] == 2 and client.is_connected, what="the reconnect")
    assert len(calls) == 2
    client.stop()


@pytest.mark.parametrize("topic", ["", "has space", "t" * 257])
def test_subscribe_refuses_a_topic_the_server_would_close_the_connection_for(topic):
    client = make_client(["127.0.0.1:1"])
    with pytest.raises(ValueError, match="topic"):
        client.subscribe("ok", topic)
    with pytest.raises(TypeError):
        client.subscribe(b"bytes")


def test_a_bad_topic_given_to_the_constructor_is_refused_at_once():
    with pytest.raises(ValueError, match="topic"):
        make_client(["127.0.0.1:1"], topics=["has space"])
    with pytest.raises(TypeError):
        make_client(["127.0.0.1:1"], topics="news")

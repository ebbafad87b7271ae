"""pushcore.Server over real loopback sockets, driven by a hand-written protocol device."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pushcore import mint_token
from pushcore.codec import reference as protocol
from pushcore.errors import Reason
from pushcore.gateway.server import Server
from pushcore.tokens import AuthError
from serverkit import (
    SECRET,
    RawDevice,
    make_server,
    running_server,
    stop_what_the_test_started,  # noqa: F401  (autouse: stops leftovers)
    token,
    wait_for,
)


def test_welcome_chooses_the_version_and_grants_heartbeat_bounds():
    with running_server(heartbeat=(45, 300)) as server:
        with RawDevice(server.address) as dev:
            before = time.time()
            welcome = dev.hello("d1", versions=(7, 1, 3))
            assert welcome.TYPE == protocol.WELCOME
            assert welcome.version == 1
            assert (welcome.heartbeat_min, welcome.heartbeat_max) == (45, 300)
            assert before - 5 <= welcome.server_time / 1000 <= time.time() + 5
            wait_for(lambda: server.connected("d1"))


def test_no_common_version_is_refused():
    with running_server() as server, RawDevice(server.address) as dev:
        error = dev.hello("d1", versions=(2, 3))
        assert error.TYPE == protocol.ERROR and error.code == Reason.UNSUPPORTED_VERSION
        assert dev.until_closed() == []
        assert not server.connected("d1")


@pytest.mark.parametrize(
    "make_token, reason",
    [
        (lambda: mint_token(b"another-secret-of-32-bytes......", "d1"), Reason.AUTH_FAILED),
        (lambda: token("someone-else"), Reason.AUTH_FAILED),
        (lambda: b"garbage", Reason.AUTH_FAILED),
        (lambda: token("d1", expires_at=time.time() - 60), Reason.TOKEN_EXPIRED),
    ],
    ids=["wrong-secret", "other-device", "garbage", "expired"],
)
def test_bad_tokens_are_refused_with_their_reason(make_token, reason):
    with running_server() as server, RawDevice(server.address) as dev:
        error = dev.hello("d1", make_token())
        assert error.TYPE == protocol.ERROR
        assert error.code == reason
        assert dev.until_closed() == []
        assert not server.connected("d1")


def test_frames_before_hello_are_refused():
    with running_server() as server, RawDevice(server.address) as dev:
        dev.send(protocol.Subscribe(("news",)))
        error = dev.expect(protocol.ERROR)
        assert error.code == Reason.NOT_AUTHENTICATED
        assert dev.until_closed() == []


def test_a_device_that_never_says_hello_is_closed_at_the_auth_timeout():
    with running_server(auth_timeout=0.3) as server, RawDevice(server.address) as dev:
        started = time.monotonic()
        frames = dev.until_closed(timeout=5.0)
        assert time.monotonic() - started >= 0.25
        assert [f.code for f in frames if f.TYPE == protocol.ERROR] == [Reason.AUTH_TIMEOUT]


def test_custom_authenticate_hook_gets_metadata_and_decides():
    seen = []

    def authenticate(device_id, tok, metadata):
        seen.append((device_id, tok, metadata))
        if tok == b"expired":
            raise AuthError(Reason.TOKEN_EXPIRED, "too old")
        if tok == b"boom":
            raise RuntimeError("hook bug")
        return tok == b"open sesame"

    with running_server(secret=None, authenticate=authenticate) as server:
        with RawDevice(server.address) as dev:
            welcome = dev.hello("d1", b"open sesame", last_seq=0, heartbeat=240)
            assert welcome.TYPE == protocol.WELCOME
            device_id, tok, metadata = seen[-1]
            assert (device_id, tok) == ("d1", b"open sesame")
            assert metadata["peer"] == dev.sock.getsockname()[:2]
            assert metadata["versions"] == (1,)
            assert metadata["heartbeat"] == 240 and metadata["last_seq"] == 0
        for tok, reason in [
            (b"wrong", Reason.AUTH_FAILED),
            (b"expired", Reason.TOKEN_EXPIRED),
            (b"boom", Reason.INTERNAL_ERROR),
        ]:
            with RawDevice(server.address) as dev:
                error = dev.hello("d2", tok)
                assert (error.TYPE, error.code) == (protocol.ERROR, reason)
                assert dev.until_closed() == []


def test_server_needs_a_secret_or_a_hook():
    with pytest.raises(ValueError, match="secret"):
        Server(store="memory:")


def test_connect_and_disconnect_hooks():
    events = []
    with running_server(
        on_connect=lambda d, meta: events.append(("connect", d, meta["peer"] is not None)),
        on_disconnect=lambda d, reason: events.append(("disconnect", d, reason)),
    ) as server:
        dev = RawDevice(server.address)
        dev.hello("d1")
        wait_for(lambda: events == [("connect", "d1", True)])
        dev.close()
        wait_for(lambda: len(events) == 2)
        assert events[1][:2] == ("disconnect", "d1")
        assert events[1][2] in (Reason.PEER_CLOSED, Reason.PEER_RESET)
        assert not server.connected("d1")


def test_ping_is_answered_in_c():
    with running_server() as server, RawDevice(server.address) as dev:
        dev.hello("d1")
        dev.send(protocol.Ping())
        assert dev.expect(protocol.PONG).TYPE == protocol.PONG


def test_idle_device_is_closed_after_the_heartbeat_grace():
    reasons = []
    with running_server(heartbeat=(0, 0.3), idle_grace=0.2,
                        on_disconnect=lambda d, r: reasons.append(r)) as server:
        with RawDevice(server.address) as dev:
            dev.hello("d1")
            frames = dev.until_closed(timeout=5.0)
            assert [f.code for f in frames if f.TYPE == protocol.ERROR] == [Reason.IDLE_TIMEOUT]
        wait_for(lambda: reasons == [Reason.IDLE_TIMEOUT])


def test_newer_connection_replaces_older_with_goaway():
    with running_server() as server:
        first = RawDevice(server.address)
        first.hello("d1")
        second = RawDevice(server.address)
        second.hello("d1")
        goaway = first.expect(protocol.GOAWAY)
        assert goaway.reason == Reason.REPLACED
        assert first.until_closed() == []
        server.push("d1", b"to the new one")
        assert second.expect(protocol.PUSH).payload == b"to the new one"
        first.close()
        second.close()


def test_second_hello_and_server_frames_from_a_device_are_errors():
    with running_server() as server:
        with RawDevice(server.address) as dev:
            dev.hello("d1")
            dev.send(protocol.Hello((1,), "d1", token("d1"), 0, 0))
            assert dev.expect(protocol.ERROR).code == Reason.INVALID_VALUE
            assert dev.until_closed() == []
        with RawDevice(server.address) as dev:
            dev.hello("d1")
            dev.send(protocol.Welcome(1, 0, 0, 0))
            assert dev.expect(protocol.ERROR).code == Reason.INVALID_VALUE


def test_upstream_goes_to_the_hook_and_is_acked_then_echoed():
    received = []
    holder = {}

    def on_upstream(device_id, payload, topic):
        received.append((device_id, payload, topic))
        holder["server"].push(device_id, b"echo: " + payload)

    with running_server(on_upstream=on_upstream) as server:
        holder["server"] = server
        with RawDevice(server.address) as dev:
            dev.hello("d1")
            dev.send(protocol.Upstream(41, b"hello", "chat"))
            frames = [dev.recv(), dev.recv()]
            kinds = {f.TYPE: f for f in frames}
            assert kinds[protocol.UPSTREAM_ACK].upstream_id == 41
            assert kinds[protocol.PUSH].payload == b"echo: hello"
            assert received == [("d1", b"hello", "chat")]


def test_upstream_is_not_acked_when_the_hook_fails():
    def on_upstream(device_id, payload, topic):
        if payload == b"bad":
            raise ValueError("cannot handle")

    with running_server(on_upstream=on_upstream) as server, RawDevice(server.address) as dev:
        dev.hello("d1")
        dev.send(protocol.Upstream(1, b"bad"), protocol.Upstream(2, b"good"))
        assert dev.expect(protocol.UPSTREAM_ACK).upstream_id == 2
        assert dev.silent_for(0.2)


def test_subscribe_frames_and_publish():
    with running_server() as server:
        a, b = RawDevice(server.address), RawDevice(server.address)
        a.hello("a")
        b.hello("b")
        a.send(protocol.Subscribe(("news", "sport")))
        b.send(protocol.Subscribe(("news",)))
        wait_for(lambda: server.store.subscribers("news") == {"a", "b"})
        server.subscribe("offline-c", "sport")
        assert server.publish("sport", b"goal") == 2
        push = a.expect(protocol.PUSH)
        assert (push.payload, push.topic, push.seq) == (b"goal", "sport", 1)
        b.send(protocol.Unsubscribe(("news",)))
        wait_for(lambda: server.store.subscribers("news") == {"a"})
        assert server.publish("news", b"headline") == 1
        assert a.expect(protocol.PUSH).payload == b"headline"
        assert b.silent_for(0.2)
        # the offline subscriber gets it when it connects
        c = RawDevice(server.address)
        c.hello("offline-c")
        push = c.expect(protocol.PUSH)
        assert (push.payload, push.seq) == (b"goal", 1)
        for dev in (a, b, c):
            dev.close()


def test_broadcast_ephemeral_and_durable():
    with running_server() as server:
        devs = [RawDevice(server.address) for _ in range(3)]
        for i, dev in enumerate(devs):
            dev.hello(f"d{i}")
        wait_for(lambda: server.device_count() == 3)
        assert server.broadcast(b"everyone") == 3
        pushes = [dev.expect(protocol.PUSH) for dev in devs]
        assert {p.seq for p in pushes} == {0}
        assert len({p.message_id for p in pushes}) == 1
        assert server.store.last_seq("d0") == 0  # ephemeral: nothing stored
        assert server.broadcast(b"kept", durable=True) == 3
        pushes = [dev.expect(protocol.PUSH) for dev in devs]
        assert [p.seq for p in pushes] == [1, 1, 1]
        assert len({p.message_id for p in pushes}) == 1
        assert [m.payload for m in server.store.range("d2", 0)] == [b"kept"]
        for dev in devs:
            dev.close()


def test_redirect_and_disconnect_apis():
    with running_server() as server:
        with RawDevice(server.address) as dev:
            dev.hello("d1")
            assert server.redirect("d1", ["127.0.0.1:9001", ("127.0.0.1", 9002, 5)])
            redirect = dev.expect(protocol.REDIRECT)
            assert redirect.servers == (("127.0.0.1", 9001, 0), ("127.0.0.1", 9002, 5))
            assert server.disconnect("d1", Reason.OVERLOADED, "busy")
            goaway = dev.expect(protocol.GOAWAY)
            assert (goaway.reason, goaway.message) == (Reason.OVERLOADED, "busy")
            assert dev.until_closed() == []
        assert not server.redirect("nobody", ["127.0.0.1:1"])


def test_drain_sends_goaway_with_servers_and_loses_nothing(tmp_path):
    path = tmp_path / "store.db"
    server = make_server(store=str(path))
    address = server.start()
    devs = [RawDevice(address) for _ in range(3)]
    for i, dev in enumerate(devs):
        dev.hello(f"d{i}")
    wait_for(lambda: server.device_count() == 3)
    server.push("d0", b"sent but never acked")
    assert devs[0].expect(protocol.PUSH).seq == 1
    server.drain(redirect=["127.0.0.1:7001", "127.0.0.1:7002"], message="maintenance")
    for dev in devs:
        frames = dev.until_closed()
        assert [f.TYPE for f in frames] == [protocol.GOAWAY]
        assert frames[0].reason == Reason.SHUTTING_DOWN
        assert frames[0].servers == (("127.0.0.1", 7001, 0), ("127.0.0.1", 7002, 1))
        dev.close()
    # the store survives the drain: a new server on the same file redelivers
    server2 = make_server(store=str(path))
    with RawDevice(server2.start()) as dev:
        dev.hello("d0")
        assert dev.expect(protocol.PUSH).payload == b"sent but never acked"
    server2.stop()


def test_push_from_many_threads_gets_distinct_seqs():
    with running_server() as server, RawDevice(server.address) as dev:
        dev.hello("d1")
        seqs = []
        lock = threading.Lock()

        def pusher(n):
            for i in range(25):
                seq = server.push("d1", b"%d-%d" % (n, i))
                with lock:
                    seqs.append(seq)

        threads = [threading.Thread(target=pusher, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(seqs) == list(range(1, 101))
        assert [dev.expect(protocol.PUSH).seq for _ in range(100)] == list(range(1, 101))


def test_push_arguments_are_checked():
    with running_server() as server:
        with pytest.raises(ValueError):
            server.push("d1", b"x", priority="urgent")
        with pytest.raises(ValueError):
            server.push("d1", b"x", ttl=0)
        with pytest.raises(TypeError):
            server.push("d1", "text, not bytes")


SIGTERM_SERVER = textwrap.dedent(
    """
    import sys
    from pushcore.gateway.server import Server
    server = Server("127.0.0.1", 0, secret=%r, store="memory:")
    server.listen()
    # printed from inside run(): the SIGTERM handler is installed by then
    server.loop.call_soon(lambda: print(server.address[1], flush=True))
    server.run()
    print("drained", flush=True)
    """
)


@pytest.mark.slow
def test_sigterm_drains_gracefully():
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_SERVER % SECRET],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        port = int(proc.stdout.readline())
        with RawDevice(("127.0.0.1", port)) as dev:
            dev.hello("d1")
            proc.terminate()  # SIGTERM
            frames = dev.until_closed()
            assert [(f.TYPE, f.reason) for f in frames] == [(protocol.GOAWAY, Reason.SHUTTING_DOWN)]
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read().strip() == "drained"
    finally:
        proc.kill()
        proc.wait()


def test_push_before_start_is_stored_and_stop_without_start_is_clean():
    server = make_server()
    assert server.push("d1", b"queued early") == 1
    server.start()
    with RawDevice(server.address) as dev:
        dev.hello("d1")
        assert dev.expect(protocol.PUSH).payload == b"queued early"
    server.stop()
    with pytest.raises(RuntimeError):
        server.push("d1", b"too late")
    idle = make_server()
    idle.stop()  # never started: nothing to drain, store closed
    assert idle.store.closed


def test_bad_input_from_a_device_gets_a_reason_and_a_close():
    reasons = []
    with running_server(on_disconnect=lambda d, r: reasons.append(r)) as server:
        with RawDevice(server.address) as dev:
            dev.hello("d1")
            dev.send(b"\x00\x00")  # type 0 does not exist
            assert dev.expect(protocol.ERROR).code == Reason.UNKNOWN_TYPE
            assert dev.until_closed() == []
        wait_for(lambda: reasons == [Reason.UNKNOWN_TYPE])
        with RawDevice(server.address) as dev:
            dev.hello("d2")
            dev.send(protocol.Subscribe(("ok", "")))
            assert dev.expect(protocol.ERROR).code == Reason.INVALID_VALUE
            assert dev.until_closed() == []
        assert server.store.topics("d2") == set()
        with RawDevice(server.address) as dev:
            error = dev.hello("d3", last_seq=2**64 - 1)
            assert (error.TYPE, error.code) == (protocol.ERROR, Reason.INVALID_VALUE)
        with RawDevice(server.address) as dev:  # the server is still fine
            assert dev.hello("d4").TYPE == protocol.WELCOME


def test_busy_port_raises_and_releases_the_store(tmp_path):
    with running_server() as server:
        busy = make_server(port=server.address[1], store=str(tmp_path / "busy.db"))
        with pytest.raises(OSError):
            busy.start()
        assert busy.stopped and busy.store.closed


@pytest.mark.slow
def test_sigterm_taken_by_another_thread_still_drains_an_idle_gateway():
    """The cause of a flaky end-to-end test (`pushcore serve` killed -9 after
    SIGTERM): Python runs a signal handler only in the main thread, between
    bytecodes. A SIGTERM delivered to another thread (the admin API's, say)
    left the main thread asleep in epoll_wait with no timer due, for ever.
    The loop's signal wake-up fd now wakes it."""
    code = textwrap.dedent("""
        import signal, threading, time
        from pushcore.gateway.server import Server
        server = Server("127.0.0.1", 0, secret=b"x" * 16, store="memory:")
        def other_thread():
            time.sleep(0.5)   # the idle loop is asleep in epoll_wait by now
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # to this thread only
        threading.Thread(target=other_thread, daemon=True).start()
        server.run()
        print("drained", signal.set_wakeup_fd(-1))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    # drained, and the wake-up fd the process had before run() (none) is back
    assert done.stdout.split() == ["drained", "-1"]

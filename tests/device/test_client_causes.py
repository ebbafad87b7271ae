"""Issue 10 item 6: a Client says why it is not connected.

Every state change after a failure carries a :class:`pushcore.Cause` (kind,
reason name, address, errno) into ``on_state``, ``Client.cause``, the
``ConnectError`` of ``start()`` and the log. Real sockets on 127.0.0.1.
"""
from __future__ import annotations

import errno
import logging
import threading

import pytest

import pushcore
from pushcore.device.cause import Cause, CauseKind
from pushcore.device.client import Client, ClientState, ConnectError
from pushcore.errors import Reason
from pushcore.tokens import AuthError
from serverkit import (
    ScriptedServer,
    SilentListener,
    free_port,
    make_server,
    running_server,
    stop_what_the_test_started,  # noqa: F401  (autouse: stops leftovers)
    token,
    wait_for,
)


class States:
    """Thread-safe record of ``on_state(state, cause)`` calls."""

    def __init__(self) -> None:
        self.events: list[tuple[ClientState, Cause | None]] = []
        self.lock = threading.Lock()

    def __call__(self, state: ClientState, cause: Cause | None) -> None:
        with self.lock:
            self.events.append((state, cause))

    def causes(self, state: ClientState) -> list[Cause | None]:
        with self.lock:
            return [c for s, c in self.events if s is state]


def make_client(addresses, device="d1", **kw) -> Client:
    kw.setdefault("backoff", (0.05, 0.3))
    return Client(device, kw.pop("tok", None) or token(device), [f"{h}:{p}" for h, p in addresses], **kw)


def test_start_against_a_closed_port_raises_connect_error_saying_refused():
    port = free_port()
    client = make_client([("127.0.0.1", port)])
    with pytest.raises(ConnectError) as info:
        client.start(timeout=1.0)
    message = str(info.value)
    assert f"connection refused by 127.0.0.1:{port}" in message
    cause = info.value.cause
    assert cause is not None and cause.kind is CauseKind.REFUSED
    assert cause.address == ("127.0.0.1", port) and cause.errno == errno.ECONNREFUSED
    assert client.state is ClientState.STOPPED


def test_backoff_state_gets_the_refused_cause_and_the_log_says_it(caplog):
    port = free_port()
    states = States()
    with caplog.at_level(logging.INFO, logger="pushcore.device.client"):
        client = make_client([("127.0.0.1", port)], on_state=states)
        thread = threading.Thread(target=lambda: pytest.raises(ConnectError, client.start, timeout=5.0))
        thread.start()
        wait_for(lambda: len([c for c in states.causes(ClientState.BACKOFF) if c is not None]) >= 2,
                 what="two BACKOFF states with a cause")
        client.stop()
        thread.join(10)
    cause = states.causes(ClientState.BACKOFF)[0]
    assert cause is not None
    assert cause.kind is CauseKind.REFUSED and cause.reason == Reason.CONNECT_FAILED
    assert cause.address == ("127.0.0.1", port) and cause.errno == errno.ECONNREFUSED
    assert str(cause) == f"connection refused by 127.0.0.1:{port}"
    assert any(f"connection refused by 127.0.0.1:{port}" in r.getMessage() for r in caplog.records)


def test_a_server_that_never_answers_gives_a_timed_out_cause():
    silent = SilentListener()
    states = States()
    try:
        client = make_client([silent.address], on_state=states, probe_timeout=0.2)
        thread = threading.Thread(target=lambda: pytest.raises(ConnectError, client.start, timeout=5.0))
        thread.start()
        wait_for(lambda: states.causes(ClientState.BACKOFF), what="a BACKOFF")
        client.stop()
        thread.join(10)
        cause = states.causes(ClientState.BACKOFF)[0]
        assert cause is not None and cause.kind is CauseKind.TIMED_OUT
        assert cause.address == tuple(silent.address)
        assert str(cause) == f"127.0.0.1:{silent.address[1]} timed out: no WELCOME within 0.2 s"
    finally:
        silent.close()


def test_a_drain_gives_the_client_the_shutting_down_cause(caplog):
    server = make_server()
    server.start()
    states = States()
    client = make_client([server.address], on_state=states)
    client.start()
    with caplog.at_level(logging.WARNING, logger="pushcore.device.client"):
        server.drain()
        wait_for(lambda: states.causes(ClientState.BACKOFF), what="the backoff")
    wait_for(lambda: states.causes(ClientState.DISCONNECTED), what="the disconnect")
    cause = states.causes(ClientState.DISCONNECTED)[0]
    assert cause is not None and cause.kind is CauseKind.GOAWAY
    assert cause.reason is Reason.SHUTTING_DOWN
    assert cause.address == server.address
    where = f"{server.address[0]}:{server.address[1]}"  # the port may hold the digits 24 itself
    assert "SHUTTING_DOWN" in str(cause) and str(int(Reason.SHUTTING_DOWN)) not in str(cause).replace(where, "")
    assert "server shutting down" in str(cause)  # the server's message
    # the BACKOFF that follows says why it waits, and the log says it by name
    assert states.causes(ClientState.BACKOFF)[0] == cause
    assert any("GOAWAY SHUTTING_DOWN from" in r.getMessage() for r in caplog.records)
    client.stop()


def test_a_goaway_carries_its_reason_and_the_servers_message():
    with running_server() as server:
        states = States()
        client = make_client([server.address], on_state=states)
        client.start()
        server.disconnect("d1", Reason.OVERLOADED, "busy here")
        wait_for(lambda: states.causes(ClientState.DISCONNECTED), what="the disconnect")
        cause = states.causes(ClientState.DISCONNECTED)[0]
        assert cause is not None and cause.kind is CauseKind.GOAWAY
        assert cause.reason is Reason.OVERLOADED and cause.message == "busy here"
        assert str(cause) == f"GOAWAY OVERLOADED from 127.0.0.1:{server.address[1]}: busy here"
        client.stop()


def test_a_server_that_closes_without_a_word_gives_peer_closed():
    scripted = ScriptedServer()
    states = States()
    client = make_client([scripted.address], on_state=states, backoff=(5.0, 5.0))
    thread = threading.Thread(target=client.start)
    thread.start()
    peer = scripted.accept()
    scripted.welcome(peer)
    thread.join()
    peer.close()
    wait_for(lambda: states.causes(ClientState.DISCONNECTED), what="the disconnect")
    cause = states.causes(ClientState.DISCONNECTED)[0]
    assert cause is not None and cause.kind is CauseKind.PEER_CLOSED
    assert cause.reason is Reason.PEER_CLOSED and cause.address == tuple(scripted.address)
    assert str(cause) == f"127.0.0.1:{scripted.address[1]} closed the connection"
    client.stop()
    scripted.close()


def test_a_port_that_does_not_speak_pushcore_is_named_as_such():
    """An HTTP server's answer to HELLO is not a frame: the cause says so, not just BAD_FLAGS."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def http_server() -> None:
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                peer, _ = listener.accept()
            except OSError:
                continue
            with peer:
                peer.settimeout(5)
                try:
                    peer.recv(4096)  # the HELLO
                    peer.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    peer.recv(4096)  # until the client closes
                except OSError:
                    pass

    thread = threading.Thread(target=http_server, daemon=True)
    thread.start()
    client = make_client([listener.getsockname()])
    try:
        with pytest.raises(ConnectError) as info:
            client.start(timeout=1.5)
        cause = info.value.cause
        assert cause is not None and cause.kind is CauseKind.LOCAL
        assert cause.reason is not None and 0 < cause.reason <= Reason.INVALID_VALUE
        assert "not the pushcore protocol" in str(cause) and cause.reason_name in str(cause)
        assert "not the pushcore protocol" in str(info.value)
    finally:
        client.stop()
        done.set()
        thread.join(timeout=10)
        listener.close()


def test_a_reset_connection_gives_peer_reset_with_its_errno():
    import socket
    import struct

    scripted = ScriptedServer()
    states = States()
    client = make_client([scripted.address], on_state=states, backoff=(5.0, 5.0))
    thread = threading.Thread(target=client.start)
    thread.start()
    peer = scripted.accept()
    scripted.welcome(peer)
    thread.join()
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()  # linger 0: an RST, not a FIN
    wait_for(lambda: states.causes(ClientState.DISCONNECTED), what="the disconnect")
    cause = states.causes(ClientState.DISCONNECTED)[0]
    assert cause is not None and cause.kind is CauseKind.PEER_RESET
    assert cause.errno == errno.ECONNRESET
    assert str(cause).startswith(f"the connection to 127.0.0.1:{scripted.address[1]} was reset ([Errno")
    client.stop()
    scripted.close()


@pytest.mark.parametrize(
    "tok, reason",
    [
        (token("someone-else"), Reason.AUTH_FAILED),
        (token("d1", expires_at=1), Reason.TOKEN_EXPIRED),
    ],
)
def test_a_bad_token_gives_an_auth_cause_naming_the_reason(tok, reason):
    with running_server() as server:
        states = States()
        client = make_client([server.address], tok=tok, on_state=states)
        with pytest.raises(AuthError):
            client.start(timeout=10)
        cause = states.causes(ClientState.FAILED)[0]
        assert cause is not None and cause.kind is CauseKind.AUTH
        assert cause.reason is reason and cause.address == server.address
        assert f"refused: {reason.name}" in str(cause)
        assert client.cause == cause


def test_cause_is_public_and_prints_reason_names():
    assert pushcore.Cause is Cause and pushcore.CauseKind is CauseKind
    cause = Cause(CauseKind.ERROR, Reason.OVERLOADED, "try later", ("127.0.0.1", 5))
    assert str(cause) == "127.0.0.1:5 refused: OVERLOADED: try later"
    assert cause.reason_name == "OVERLOADED"
    unknown = Cause(CauseKind.GOAWAY, 200, "", ("127.0.0.1", 5))
    assert unknown.reason_name == "UNKNOWN_200" and "UNKNOWN_200" in str(unknown)


def test_no_resolvable_server_gives_a_no_server_cause():
    from test_serverlist import UNRESOLVABLE

    states = States()
    client = Client("d1", token("d1"), [f"{UNRESOLVABLE}:5222"], backoff=(5.0, 5.0), on_state=states)
    thread = threading.Thread(target=lambda: pytest.raises(ConnectError, client.start, timeout=10.0))
    thread.start()
    wait_for(lambda: states.causes(ClientState.BACKOFF), what="a BACKOFF")
    client.stop()
    thread.join(10)
    cause = states.causes(ClientState.BACKOFF)[0]
    assert cause is not None and cause.kind is CauseKind.NO_SERVER
    assert str(cause).startswith("no server address to try")


@pytest.mark.parametrize(
    "cause, text",
    [
        (Cause(CauseKind.REFUSED, Reason.CONNECT_FAILED, address=("::1", 7), errno=errno.ECONNREFUSED),
         "connection refused by [::1]:7"),
        (Cause(CauseKind.TIMED_OUT, Reason.CONNECT_FAILED, address=("127.0.0.1", 7), errno=errno.ETIMEDOUT),
         "connect to 127.0.0.1:7 timed out"),
        (Cause(CauseKind.NETWORK, Reason.CONNECT_FAILED, address=("127.0.0.1", 7), errno=errno.ENETUNREACH),
         f"connect to 127.0.0.1:7 failed ([Errno {errno.ENETUNREACH}] {__import__('os').strerror(errno.ENETUNREACH)})"),
        # the loop's own ERROR frames carry the reason name as their message: said once
        (Cause(CauseKind.ERROR, Reason.OVERLOADED, "OVERLOADED", ("127.0.0.1", 7)), "127.0.0.1:7 refused: OVERLOADED"),
        (Cause(CauseKind.LOCAL, Reason.IDLE_TIMEOUT, address=("127.0.0.1", 7)),
         "the client closed the connection to 127.0.0.1:7 (IDLE_TIMEOUT)"),
        (Cause(CauseKind.PEER_RESET, Reason.PEER_RESET, address=("127.0.0.1", 7)),
         "the connection to 127.0.0.1:7 was reset"),
    ],
)
def test_causes_read_as_one_line(cause, text):
    assert str(cause) == text

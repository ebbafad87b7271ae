"""Helpers for the Server / Client tests: a raw protocol device, a message collector, waits.

Everything talks over real sockets on 127.0.0.1; timeouts are short and
bounded so a broken build fails fast instead of hanging.
"""
from __future__ import annotations

import contextlib
import socket
import threading
import time

from pushcore import mint_token
from pushcore.codec import reference as protocol
from pushcore.device.heartbeat import HeartbeatPolicy
from pushcore.gateway.server import Server

SECRET = b"pushcore-test-secret-0123456789"
TIMEOUT = 10.0  # upper bound for anything expected to happen "soon"


def token(device_id: str, ttl: float | None = None, **kw) -> bytes:
    """A token for *device_id*: mint's default lifetime (30 days) unless *ttl* or *expires_at* is given."""
    if ttl is not None:
        kw["ttl"] = ttl
    return mint_token(SECRET, device_id, **kw)


def wait_for(predicate, timeout: float = TIMEOUT, what: str = "condition") -> None:
    """Poll *predicate* until true; fail the test after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def fast_heartbeat(**kw) -> HeartbeatPolicy:
    """The published policy scaled down: floor 0.42 s, +0.12 s steps, cap 1.2 s."""
    kw.setdefault("scale", 0.002)
    return HeartbeatPolicy(**kw)


def make_server(**kw) -> Server:
    kw.setdefault("secret", SECRET)
    kw.setdefault("store", "memory:")
    kw.setdefault("heartbeat", (0, 5))
    kw.setdefault("idle_grace", 5.0)
    kw.setdefault("auth_timeout", 5.0)
    return Server("127.0.0.1", kw.pop("port", 0), **kw)


@contextlib.contextmanager
def running_server(**kw):
    server = make_server(**kw)
    server.start()
    try:
        yield server
    finally:
        server.stop(timeout=5.0)


def hold_writer(pipeline, timeout: float = 30.0) -> threading.Event:
    """Keep a store pipeline's writer inside one blocking operation until the returned event is set.

    Returns once the writer is inside it, so everything submitted afterwards
    is queued (and runs in the next group, together, once the event is set).
    """
    gate, inside = threading.Event(), threading.Event()

    def busy(_store) -> None:
        inside.set()
        gate.wait(timeout)

    pipeline.submit(busy)
    assert inside.wait(TIMEOUT), "the store writer did not start the blocking operation"
    return gate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RawDevice:
    """A device speaking the wire protocol by hand over a blocking socket."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=TIMEOUT)
        self.decoder = protocol.Decoder()
        self.frames: list = []
        self.closed = False

    def send(self, *frames) -> None:
        self.sock.sendall(b"".join(f.encode() if hasattr(f, "encode") else f for f in frames))

    def hello(self, device_id: str, tok: bytes | None = None, last_seq: int = 0, versions=(1,), heartbeat: int = 0):
        if tok is None:
            tok = token(device_id)
        self.send(protocol.Hello(versions, device_id, tok, last_seq, heartbeat))
        return self.expect(protocol.WELCOME, protocol.ERROR)

    def recv(self, timeout: float = TIMEOUT):
        """The next frame, or None once the server closed the connection."""
        deadline = time.monotonic() + timeout
        while not self.frames:
            if self.closed:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("no frame from the server in time")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                continue
            self.frames.extend(self.decoder.feed(data))
        return self.frames.pop(0)

    def expect(self, *types, timeout: float = TIMEOUT):
        frame = self.recv(timeout)
        assert frame is not None, f"connection closed while expecting types {types}"
        assert frame.TYPE in types, f"expected a frame of type {types}, got {frame!r}"
        return frame

    def until_closed(self, timeout: float = TIMEOUT) -> list:
        """Every frame up to the server's close."""
        out = []
        while True:
            frame = self.recv(timeout)
            if frame is None:
                return out
            out.append(frame)

    def silent_for(self, seconds: float) -> bool:
        """True when nothing arrives (and the connection stays open) for *seconds*."""
        if self.frames:
            return False
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return True
        if not data:
            self.closed = True
            return False
        self.frames.extend(self.decoder.feed(data))
        return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def connect_raw_devices(server: Server, names) -> dict[str, RawDevice]:
    """One RawDevice per name, each WELCOMEd, once the server counts them all attached."""
    devices = {}
    for name in names:
        dev = RawDevice(server.address)
        assert dev.hello(name).TYPE == protocol.WELCOME
        devices[name] = dev
    wait_for(lambda: server.device_count() == len(names), what="every device attached")
    return devices


class Collector:
    """``on_message`` that records ``(seq, payload)`` and lets a test wait for counts."""

    def __init__(self) -> None:
        self.messages: list = []
        self.lock = threading.Lock()

    def __call__(self, push) -> None:
        with self.lock:
            self.messages.append((push.seq, bytes(push.payload)))

    @property
    def seqs(self) -> list[int]:
        with self.lock:
            return [seq for seq, _ in self.messages]

    @property
    def payloads(self) -> list[bytes]:
        with self.lock:
            return [payload for _, payload in self.messages]

    def wait(self, count: int, timeout: float = TIMEOUT) -> None:
        wait_for(lambda: len(self.messages) >= count, timeout, f"{count} messages (have {len(self.messages)})")


class SilentListener:
    """Accepts TCP connections (the kernel completes the handshake) and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = self.sock.getsockname()[:2]

    def close(self) -> None:
        self.sock.close()


class ScriptedServer:
    """A hand-written gateway for client tests: accepts connections and lets the test
    read their frames and write any bytes (duplicates, silence, ...)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(TIMEOUT)
        self.address = self.sock.getsockname()[:2]

    def accept(self) -> RawDevice:
        """The next connection, wrapped like a RawDevice (recv/expect/send)."""
        conn, _ = self.sock.accept()
        peer = RawDevice.__new__(RawDevice)
        peer.sock = conn
        peer.decoder = protocol.Decoder()
        peer.frames = []
        peer.closed = False
        return peer

    def welcome(self, peer: RawDevice, heartbeat=(0, 0)):
        """Read the HELLO on *peer* and answer WELCOME; returns the HELLO."""
        hello = peer.expect(protocol.HELLO)
        peer.send(protocol.Welcome(1, heartbeat[0], heartbeat[1], int(time.time() * 1000)))
        return hello

    def close(self) -> None:
        self.sock.close()


import pytest  # noqa: E402  (fixtures below)


@pytest.fixture(autouse=True)
def stop_what_the_test_started(monkeypatch):
    """Stop every Server and Client a test started, even when it failed half-way,
    so one failure does not leave threads and Loops behind for the next tests."""
    from pushcore.device.client import Client

    started = []
    for cls in (Server, Client):
        original = cls.start

        def start(self, *args, _original=original, **kwargs):
            started.append(self)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "start", start)
    yield
    for thing in reversed(started):
        try:
            thing.stop()
        except Exception:
            pass

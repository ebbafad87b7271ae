"""A TCP proxy on 127.0.0.1 that loses replies on purpose (for the retry and idempotency tests).

Each accepted connection is forwarded to *target*, both ways, by one thread.
``drop_replies = n`` makes the next *n* replies vanish: the request reaches
the server (which does the work), and when the first bytes of its answer
come back the proxy closes both connections instead of forwarding them, as
a proxy or a network that drops the reply does. ``refuse = n`` closes the
next *n* connections at once, before anything is forwarded (a gateway that
is down for a moment). ``bad_gateway = n`` replaces the next *n* replies with
``502 Bad Gateway`` (the request reached the server, which did the work, as
behind a proxy whose upstream read timed out). ``requests`` records the head (request line and
headers) of every request forwarded.
"""
from __future__ import annotations

import select
import socket
import threading


class DropProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.drop_replies = 0
        self.refuse = 0
        self.bad_gateway = 0
        self.dropped = 0
        self.refused = 0
        self.requests: list[bytes] = []
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="drop-proxy", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self._listener.getsockname()

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def headers_of(self, name: str) -> list[str | None]:
        """The value of header *name* in each forwarded request (None where absent)."""
        out: list[str | None] = []
        prefix = name.lower().encode() + b":"
        for head in self.requests:
            value = None
            for line in head.split(b"\r\n")[1:]:
                if line.lower().startswith(prefix):
                    value = line[len(prefix):].strip().decode()
            out.append(value)
        return out

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def __enter__(self) -> DropProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _take(self, name: str) -> bool:
        with self._lock:
            if getattr(self, name) > 0:
                setattr(self, name, getattr(self, name) - 1)
                return True
            return False

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._take("refuse"):
                self.refused += 1
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        pending = b""  # request bytes not yet split into heads
        skip = 0  # body bytes still to come
        try:
            while True:
                readable, _, _ = select.select([client, upstream], [], [], 30)
                if not readable:
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        pending += data
                        while True:
                            if skip:  # the body of the last head
                                taken = min(skip, len(pending))
                                pending, skip = pending[taken:], skip - taken
                            if skip or b"\r\n\r\n" not in pending:
                                break
                            head, _, pending = pending.partition(b"\r\n\r\n")
                            self.requests.append(head)
                            for line in head.split(b"\r\n")[1:]:
                                if line.lower().startswith(b"content-length:"):
                                    skip = int(line.split(b":", 1)[1])
                        upstream.sendall(data)
                    else:
                        if self._take("drop_replies"):
                            self.dropped += 1
                            return  # the reply is lost: both connections close
                        if self._take("bad_gateway"):
                            self.dropped += 1
                            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n"
                                           b"Content-Length: 11\r\nConnection: close\r\n\r\nbad gateway")
                            return
                        client.sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

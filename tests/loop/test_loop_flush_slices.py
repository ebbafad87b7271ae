"""Writes of a turn are sliced: a fan-out to many connections leaves turns in between for reads.

Real sockets on 127.0.0.1. What is checked is behaviour, never a duration:
the slice counter moves, every byte still arrives once and in order on every
connection, a PING on another connection is answered, and ``Loop.flush()``
still writes everything at once.
"""
from __future__ import annotations

import socket

from pushcore import _frame as F
from pushcore._loop import Loop
from pushcore.loop import run_until

CONNECTIONS = 600
FRAMES = 20


def connect(loop: Loop, count: int) -> tuple[list[int], list[socket.socket]]:
    opened: list[int] = []
    loop.set_handlers(on_open=lambda batch: opened.extend(cid for cid, _ in batch))
    lid = loop.listen("127.0.0.1", 0)
    address = loop.listen_address(lid)
    socks = []
    for i in range(count):
        socks.append(socket.create_connection(address, timeout=5))
        assert run_until(loop, lambda n=i + 1: len(opened) >= n)
    return list(opened), socks


def read_exactly(sock: socket.socket, count: int) -> bytes:
    sock.settimeout(10)
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, "closed early"
        data += chunk
    return data


def test_a_large_fan_out_is_written_over_several_turns_and_arrives_whole():
    loop = Loop()
    cids, socks = connect(loop, CONNECTIONS + 1)
    probe_cid, probe = cids[-1], socks[-1]
    try:
        frames = [F.Push(seq, 7, bytes([seq]) * 2000).encode() for seq in range(1, FRAMES + 1)]
        expected = b"".join(frames)
        before = loop.stats()["flush_slices"]

        def fan_out() -> None:
            for frame in frames:
                loop.send_many(cids[:-1], frame)

        loop.call_soon(fan_out)
        probe.sendall(F.Ping().encode())
        loop.run_once(0)  # the fan-out queued; the first slice written
        pong = b""
        got = [b""] * CONNECTIONS
        # Read a bit from everyone while turning, so no socket buffer fills up.
        assert run_until(loop, lambda: all(len(g) == len(expected) for g in got) or _drain(socks, got, expected),
                         timeout=30)
        probe.settimeout(5)
        pong = probe.recv(16)
        assert pong == F.Pong().encode()  # answered, in C, while the fan-out was going out
        assert all(g == expected for g in got)  # once, in order, on every connection
        assert loop.stats()["flush_slices"] > before  # it did not go out in one turn
        assert probe_cid in cids
    finally:
        for s in socks:
            s.close()
        loop.close()


def _drain(socks, got, expected) -> bool:
    for i, sock in enumerate(socks[:-1]):
        if len(got[i]) < len(expected):
            sock.setblocking(False)
            try:
                got[i] += sock.recv(65536)
            except BlockingIOError:
                pass
    return all(len(g) == len(expected) for g in got)


def test_flush_writes_everything_at_once():
    loop = Loop()
    cids, socks = connect(loop, 300)
    try:
        frame = F.Push(1, 1, b"x" * 3000).encode()
        before = loop.stats()["flush_slices"]
        loop.send_many(cids, frame)
        loop.flush()
        assert loop.stats()["send_queue_bytes"] == 0  # nothing left for a later turn
        assert loop.stats()["flush_slices"] == before
        assert all(read_exactly(s, len(frame)) == frame for s in socks)
    finally:
        for s in socks:
            s.close()
        loop.close()

"""The gateway's abuse limits end to end (issue 9, findings 5 and 6), over real
sockets on 127.0.0.1: the pre-auth frame cap and the connect-rate limit as a
device sees them, the outbound budget closing non-reading devices (their
messages stay stored) while a reading device keeps receiving, and the
numbers in /metrics."""
from __future__ import annotations

import socket

from pushcore import Reason
from pushcore.admin.gateway_metrics import GatewayMetrics
from pushcore.codec import reference as protocol
from serverkit import RawDevice, running_server, token


def samples(server) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in GatewayMetrics(server).collect():
        for name, labels, value in family.samples:
            out[(name, tuple(sorted(labels.items())))] = value
    return out


def non_reading_device(address, device_id: str) -> socket.socket:
    """A welcomed device that never reads again (a small receive buffer, so
    the gateway's queue grows instead of the kernel's)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(address)
    s.sendall(protocol.Hello((1,), device_id, token(device_id), 0, 0).encode())
    decoder = protocol.Decoder()
    frames: list = []
    while not frames:
        frames.extend(decoder.feed(s.recv(4096)))
    assert frames[0].TYPE == protocol.WELCOME
    return s


def test_a_device_sees_the_preauth_cap_and_an_authenticated_one_may_send_more():
    got = []
    with running_server(on_upstream=lambda device, payload, topic: got.append(payload)) as server:
        with RawDevice(server.address) as attacker:
            big = protocol.Hello((1,), "d1", b"x" * 4000, 0, 0)   # a 4 KB HELLO: over the 2 KiB cap
            attacker.send(big)
            error = attacker.expect(protocol.ERROR)
            assert error.code == Reason.FRAME_TOO_LARGE
            assert attacker.until_closed() == []
        with RawDevice(server.address) as dev:
            assert dev.hello("d1").TYPE == protocol.WELCOME
            dev.send(protocol.Upstream(7, b"u" * 30000, ""))        # 30 KB after auth: fine
            ack = dev.expect(protocol.UPSTREAM_ACK)
            assert ack.upstream_id == 7 and got == [b"u" * 30000]
        assert samples(server)[("pushcore_protocol_errors_total", (("reason", "FRAME_TOO_LARGE"),))] == 1


def test_the_source_connect_rate_refuses_overloaded_and_metrics_count_it():
    with running_server(source_connect_rate=0.001, source_connect_burst=2) as server:
        # the test's devices all come from loopback, which is not counted per source by default
        server.call(lambda: server.loop.set_limits(limit_loopback=True))
        with RawDevice(server.address) as a, RawDevice(server.address) as b:
            assert a.hello("a").TYPE == b.hello("b").TYPE == protocol.WELCOME
            with RawDevice(server.address) as c:
                error = c.expect(protocol.ERROR)
                assert error.code == Reason.OVERLOADED and c.until_closed() == []
            # the refused connection never reached the server; the others are untouched
            assert server.stats["hello"] == 2 and server.connected("a") and server.connected("b")
            got = samples(server)
            assert got[("pushcore_connections_refused_total", (("reason", "source_rate"),))] == 1
            assert got[("pushcore_connections_refused_total", (("reason", "connect_rate"),))] == 0
            assert got[("pushcore_preauth_budget_bytes", ())] == 16 << 20
            assert ("pushcore_preauth_bytes", ()) in got


def test_non_reading_devices_past_the_outbound_budget_are_closed_largest_first():
    closed = []
    budget = 1 << 20
    payload = b"p" * 60000
    with running_server(outbound_budget=budget,
                        on_disconnect=lambda device, reason: closed.append((device, reason))) as server:
        # A queue over the high watermark is held (new pushes wait in the store), which
        # keeps one non-reading device far below this budget: raise the watermark to the
        # cap so these queues grow until the budget decides.
        server.call(lambda: server.loop.set_write_limits(high=server.loop.get_write_limits()[2]))
        slow1 = non_reading_device(server.address, "slow1")
        slow2 = non_reading_device(server.address, "slow2")
        reader = RawDevice(server.address)
        assert reader.hello("reader").TYPE == protocol.WELCOME
        pushed = {"slow1": 0, "slow2": 0}
        received = []
        for i in range(400):
            if len(closed) == 2:
                break
            # slow1 gets twice what slow2 gets: its queue is the larger one
            for device in ("slow1", "slow1", "slow2"):
                server.push(device, payload)
                pushed[device] += 1
            server.push("reader", b"r%d" % i)
            frame = reader.expect(protocol.PUSH)
            received.append(frame.payload)
            assert server.call(server.loop.stats)["outbound_bytes"] <= budget
        assert closed == [("slow1", Reason.SLOW_CONSUMER), ("slow2", Reason.SLOW_CONSUMER)]
        # the reading device got every push, in order, and is still connected
        assert received == [b"r%d" % n for n in range(len(received))] and server.connected("reader")
        # closing the socket lost nothing stored: every push waits for the devices' next connection
        assert server.store.backlog("slow1") == pushed["slow1"]
        assert server.store.backlog("slow2") == pushed["slow2"]
        got = samples(server)
        assert got[("pushcore_outbound_budget_bytes", ())] == budget
        assert got[("pushcore_outbound_budget_closes_total", ())] == 2
        assert got[("pushcore_outbound_bytes", ())] <= budget
        reader.close()
        slow1.close()
        slow2.close()

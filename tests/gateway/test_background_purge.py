"""The server purges expired messages and empty device records in the background, in short steps.

Nothing here calls the store's purge: the tests only wait. The loop keeps
answering meanwhile, the metrics count what the admin API counts, and a
device whose record was dropped still gets every message once.
"""
from __future__ import annotations

import http.client
import json
import sqlite3
import time

import pytest

from pushcore.admin.api import AdminAPI
from pushcore.admin.gateway_metrics import GatewayMetrics
from pushcore.codec import reference as protocol
from pushcore.device.client import Client
from serverkit import (
    Collector,
    RawDevice,
    make_server,
    running_server,
    stop_what_the_test_started,  # noqa: F401  (autouse: stops leftovers)
    token,
    wait_for,
)


def metric(server, name: str) -> float:
    for family in GatewayMetrics(server).collect():
        for sample_name, _labels, value in family.samples:
            if sample_name == name:
                return value
    raise AssertionError(f"no metric {name}")


ADMIN_TOKEN = "admin-token-0123456789abcdef"


def api_get(address, path: str) -> dict:
    conn = http.client.HTTPConnection(*address, timeout=10)
    conn.request("GET", path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    assert response.status == 200, body
    return body


def device_records(path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM devices").fetchone()[0]


@pytest.mark.slow
def test_30000_expired_messages_are_purged_while_the_loop_keeps_answering(tmp_path):
    path = tmp_path / "store.db"
    n, devices = 30_000, 10_000
    with running_server(store=str(path), purge_interval=0.2, purge_batch=200) as server:
        with RawDevice(server.address) as watcher, RawDevice(server.address) as live:
            assert watcher.hello("watcher").TYPE == protocol.WELCOME
            assert live.hello("live").TYPE == protocol.WELCOME
            result = server.push_batch([(f"d{i % devices}", b"x", {"ttl": 1}) for i in range(n)])
            assert result.ok
            assert device_records(path) == devices
            wait_for(lambda: server.store.stats().messages < n, what="the purge to start")
            answered_during_purge = 0
            pushed = 0
            while True:
                before = server.store.stats().messages
                watcher.send(protocol.Ping())
                assert watcher.expect(protocol.PONG).TYPE == protocol.PONG
                pushed += 1
                assert server.push("live", b"p%d" % pushed) == pushed
                push = live.expect(protocol.PUSH)
                assert (push.seq, push.payload) == (pushed, b"p%d" % pushed)
                live.send(protocol.Ack(push.seq))
                after = server.store.stats().messages
                if 0 < after and before < n:
                    answered_during_purge += 1  # the whole round trip fell inside the purge
                if after == 0:
                    break
            assert answered_during_purge >= 1
            assert server.store.stats().expired == n
            assert metric(server, "pushcore_store_messages") == 0
            assert metric(server, "pushcore_store_devices_with_backlog") == 0
            # every record of a device holding nothing goes too, the live device's included
            wait_for(lambda: device_records(path) == 0, what="the empty device records to go")


def test_metrics_count_only_live_messages_before_any_purge(tmp_path):
    server = make_server(store=str(tmp_path / "store.db"), purge_interval=3600)
    server.start()
    admin = AdminAPI(server, ADMIN_TOKEN, port=0)
    admin.start()
    try:
        past = int(time.time()) - 1
        for device in ("gone1", "gone2"):
            server.store.append(device, message_id=1, payload=b"old", priority=1, expiry=past)
        server.push("kept", b"new")
        assert server.store.stats().messages == 3  # not purged yet
        assert metric(server, "pushcore_store_messages") == 1
        assert metric(server, "pushcore_store_devices_with_backlog") == 1
        backlogs = {d: api_get(admin.address, f"/v1/devices/{d}")["backlog"] for d in ("gone1", "gone2", "kept")}
        assert backlogs == {"gone1": 0, "gone2": 0, "kept": 1}
    finally:
        admin.stop()
        server.stop(timeout=5.0)


def client(server, collector, last_seq=0):
    return Client("d1", token("d1"), [f"{server.address[0]}:{server.address[1]}"],
                  on_message=collector, last_seq=last_seq, backoff=(0.02, 0.2), ack_delay=0.01)


@pytest.mark.parametrize("pushed_while_away", [0, 5])
def test_a_device_whose_record_was_dropped_gets_every_new_message_once(tmp_path, pushed_while_away):
    path = tmp_path / "store.db"
    with running_server(store=str(path), purge_interval=0.05) as server:
        for i in range(1, 4):
            server.push("d1", b"old%d" % i)
        got = Collector()
        first = client(server, got)
        first.start()
        got.wait(3)
        wait_for(lambda: server.store.backlog("d1") == 0, what="the acks")
        first.stop()
        assert first.last_seq == 3
        wait_for(lambda: device_records(path) == 0, what="the empty record to go")
        assert server.store.last_seq("d1") == 0
        seqs = [server.push("d1", b"new%d" % i) for i in range(pushed_while_away)]
        again = Collector()
        second = client(server, again, last_seq=first.last_seq)
        second.start()
        again.wait(pushed_while_away)
        seqs.append(server.push("d1", b"last"))
        again.wait(pushed_while_away + 1)
        assert again.payloads == [b"new%d" % i for i in range(pushed_while_away)] + [b"last"]
        assert again.seqs == sorted(again.seqs) and again.seqs == seqs
        assert all(seq > 3 for seq in seqs)  # above what the device holds: a gap, never a repeat
        assert second.stats["connects"] == 1  # no LAST_SEQ_AHEAD, no reconnect
        second.stop()


def test_purge_options_are_checked():
    for bad in (0, -1, float("inf"), float("nan"), "60", True):
        with pytest.raises(ValueError, match="purge_interval"):
            make_server(purge_interval=bad)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="purge_batch"):
            make_server(purge_batch=bad)

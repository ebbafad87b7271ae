"""The gateway's store pipeline: group commit across threads, a SIGKILL mid-commit, a loop that never waits.

Real servers on 127.0.0.1, real SQLite files, real subprocesses; no timing asserts
beyond the generous bound the issue sets (every PONG within 1 s).
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pushcore.codec import reference as protocol
from pushcore.errors import Reason
from pushcore.store import SQLiteStore
from serverkit import SECRET, RawDevice, hold_writer, make_server, token, wait_for

THREADS = 8


def read_all(store, device):
    out, after = [], 0
    while True:
        page = store.range(device, after, 1000)
        out += page
        if len(page) < 1000:
            return out
        after = page[-1].seq


def test_pushes_from_eight_threads_share_commits_and_keep_each_devices_order(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    server = make_server(store=store)
    server.start()
    per_thread = 150
    devices = [f"d{i}" for i in range(4)]
    results: dict[int, list[tuple[str, int, int]]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def pusher(t: int) -> None:
        out = results.setdefault(t, [])
        start.wait()
        try:
            for i in range(per_thread):
                device = devices[(t + i) % len(devices)]  # every device gets pushes from every thread
                out.append((device, i, server.push(device, b"%d:%d" % (t, i))))
        except BaseException as exc:
            errors.append(exc)

    try:
        before = store.commits
        threads = [threading.Thread(target=pusher, args=(t,)) for t in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        commits = store.commits - before
    finally:
        server.stop(timeout=5.0)
    assert errors == []
    total = THREADS * per_thread
    for device in devices:
        seqs = [m.seq for m in read_all(store, device)]
        assert seqs == list(range(1, len(seqs) + 1))  # contiguous: no gap, no seq twice
    stored = {(d, m.seq): m.payload for d in devices for m in read_all(store, d)}
    assert len(stored) == total
    for t, pushed in results.items():
        last: dict[str, int] = {}
        for device, i, seq in pushed:
            assert stored[(device, seq)] == b"%d:%d" % (t, i)  # the seq push() returned is that message's
            assert seq > last.get(device, 0)  # in the thread's push order
            last[device] = seq
    assert commits < total, f"{commits} commits for {total} pushes: no group commit"
    assert server.pipeline.largest_group >= 2
    store.close()


CRASHING_GATEWAY = textwrap.dedent(
    """
    import os, sys, threading
    from pushcore.gateway.server import Server

    path = sys.argv[1]
    server = Server("127.0.0.1", 0, secret=%r, store=path)
    server.start()
    os.write(1, b"ready\\n")

    def pusher(t):
        i = 0
        while True:
            device = "d%%d" %% ((t + i) %% 5)
            seq = server.push(device, b"%%d:%%d" %% (t, i))
            os.write(1, b"%%s %%d %%d %%d\\n" %% (device.encode(), seq, t, i))  # one write: one line
            i += 1

    for t in range(8):
        threading.Thread(target=pusher, args=(t,), daemon=True).start()
    threading.Event().wait()
    """
)


@pytest.mark.slow
def test_a_sigkill_during_group_commits_loses_nothing_acknowledged_and_shows_nothing_half_done(tmp_path):
    path = str(tmp_path / "s.db")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_GATEWAY % SECRET, path],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    acknowledged: list[tuple[str, int, int, int]] = []
    try:
        assert proc.stdout.readline().strip() == b"ready"
        while len(acknowledged) < 3000:
            line = proc.stdout.readline()
            assert line, "the gateway died before the kill"
            device, seq, t, i = line.split()
            acknowledged.append((device.decode(), int(seq), int(t), int(i)))
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-stream: groups are being committed all the time
        proc.wait()
    store = SQLiteStore(path)  # "after restart": the file as the killed gateway left it
    try:
        for device, seq, t, i in acknowledged:
            page = store.range(device, seq - 1, 1)
            assert page and page[0].seq == seq and page[0].payload == b"%d:%d" % (t, i), (device, seq)
        for device in {d for d, *_ in acknowledged}:
            messages = read_all(store, device)
            seqs = [m.seq for m in messages]
            # A group is all or nothing: no gap inside what was committed, and the counter
            # is exactly the last message (no message without its counter, no counter without it).
            assert seqs == list(range(1, len(seqs) + 1)), device
            assert store.last_seq(device) == seqs[-1]
            orders: dict[int, list[int]] = {}
            for m in messages:
                t, i = map(int, m.payload.split(b":"))
                orders.setdefault(t, []).append(i)
            assert all(got == sorted(got) for got in orders.values())  # each thread's order
        db = sqlite3.connect(path)
        mismatched = db.execute(
            "SELECT count(*) FROM devices d WHERE d.stored != "
            "(SELECT count(*) FROM messages m WHERE m.device = d.device)").fetchone()[0]
        db.close()
        assert mismatched == 0
    finally:
        store.close()


def ping_round_trip(phone: RawDevice) -> float:
    started = time.monotonic()
    phone.send(protocol.Ping())
    phone.expect(protocol.PONG)
    return time.monotonic() - started


@pytest.mark.slow
def test_the_loop_answers_pings_while_a_large_publish_is_stored(tmp_path):
    subscribers = 50_000
    store = SQLiteStore(tmp_path / "s.db")
    with store.group():  # one transaction for the set-up
        for n in range(subscribers):
            store.subscribe(f"offline-{n}", ["big"])
    server = make_server(store=store)
    server.start()
    phone = RawDevice(server.address)
    try:
        assert phone.hello("prober").TYPE == protocol.WELCOME
        ping_round_trip(phone)
        done = threading.Event()
        result = {}

        def publish() -> None:
            result["count"] = server.publish("big", b"to everyone")
            done.set()

        publisher = threading.Thread(target=publish)
        publisher.start()
        trips = []
        while not done.is_set():
            trips.append(ping_round_trip(phone))
        publisher.join(60)
    finally:
        phone.sock.close()
        server.stop(timeout=5.0)
    assert result["count"] == subscribers
    assert store.backlog("offline-7") == 1
    store.close()
    # While the 50,000 rows were stored, the loop went on answering: many round trips, none slow.
    assert len(trips) >= 10, f"only {len(trips)} PING round trips completed while the publish was stored"
    assert max(trips) < 1.0, f"a PONG took {max(trips):.3f} s"


def test_a_busy_store_stalls_no_connection_and_a_hello_closed_meanwhile_is_forgotten(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    server = make_server(store=store)
    server.start()
    phone = RawDevice(server.address)
    try:
        assert phone.hello("phone").TYPE == protocol.WELCOME
        gate = hold_writer(server.pipeline)  # the writer is busy until the gate opens
        pushed = {}
        pusher = threading.Thread(target=lambda: pushed.setdefault("seq", server.push("phone", b"later")))
        pusher.start()
        wait_for(lambda: server.pipeline.pending() >= 1, what="the push to be submitted")
        quitter = RawDevice(server.address)
        quitter.send(protocol.Hello((1,), "quitter", token("quitter"), 0, 0))
        quitter.sock.close()  # gone before the store answered its claim
        late = RawDevice(server.address)
        late.send(protocol.Hello((1,), "late", token("late"), 0, 0))
        for _ in range(20):  # the loop answers while the store is busy
            assert ping_round_trip(phone) < 5.0
        phone.send(protocol.Fetch(0, 10))  # its answer waits for the store, the PINGs did not
        assert "seq" not in pushed and server.device_count() == 1
        gate.set()
        pusher.join(10)
        assert pushed["seq"] == 1
        # The FETCH is a device's work (the urgent lane). Queued before the gate opened, it is
        # read before the application's push: "you have it all" (nothing yet), then the push
        # goes out live. If the loop read the frame only after the push was stored, the push
        # goes out live and the FETCH answers it again. Either way: seq 1, in order, once stored.
        def brief(f):
            return (f.TYPE, f.seq if f.TYPE == protocol.PUSH else f.latest_seq)

        first = phone.expect(protocol.PUSH, protocol.NOTIFY)
        if first.TYPE == protocol.NOTIFY:
            assert brief(first) == (protocol.NOTIFY, 0)
            assert brief(phone.expect(protocol.PUSH)) == (protocol.PUSH, 1)
        else:
            rest = [phone.expect(protocol.PUSH, protocol.NOTIFY) for _ in range(2)]
            assert [brief(f) for f in (first, *rest)] == [(protocol.PUSH, 1), (protocol.PUSH, 1), (protocol.NOTIFY, 1)]
        assert late.expect(protocol.WELCOME)
        wait_for(lambda: server.device_count() == 2, what="the late device's session")
        assert not server.connected("quitter")
        late.sock.close()
    finally:
        phone.sock.close()
        server.stop(timeout=5.0)
        store.close()


def test_a_hello_is_welcomed_before_thousands_of_queued_pushes(tmp_path):
    """The HELLO's claim takes the urgent lane: it does not wait behind the application's bulk pushes."""
    store = SQLiteStore(tmp_path / "s.db")
    seen: dict[str, int] = {}
    futures: list = []
    server = make_server(store=store, on_connect=lambda device, meta: seen.setdefault(
        device, sum(f.done() for f in futures)))
    server.start()
    try:
        gate = hold_writer(server.pipeline)  # the writer is busy until the gate opens
        futures += [server.push(f"bulk{i % 50}", b"x", wait=False) for i in range(3000)]
        phone = RawDevice(server.address)
        phone.send(protocol.Hello((1,), "phone", token("phone"), 0, 0))
        wait_for(lambda: server.pipeline.pending() >= 3001, what="the HELLO's claim to be queued")
        gate.set()
        assert phone.expect(protocol.WELCOME)
        assert seen["phone"] == 0  # welcomed before any of the 3,000 pushes queued before it completed
        assert [f.result(10) for f in futures[:50]] == [1] * 50
        assert all(f.result(10) == 60 for f in futures[-50:])
        phone.sock.close()
    finally:
        server.stop(timeout=5.0)
        store.close()


def test_a_failed_store_read_closes_only_that_device_which_then_resumes(tmp_path):
    """A page read that fails (here: an I/O error for one device) must not leave the device waiting."""
    store = SQLiteStore(tmp_path / "s.db")
    real_range = store.range
    broken = {"on": True}

    def range_(device_id, *args, **kwargs):
        if device_id == "broken" and broken["on"]:
            raise sqlite3.OperationalError("disk I/O error")
        return real_range(device_id, *args, **kwargs)

    store.range = range_
    server = make_server(store=store)
    server.start()
    try:
        for i in range(3):
            server.push("broken", b"m%d" % i)
        dev = RawDevice(server.address)
        assert dev.hello("broken").TYPE == protocol.WELCOME
        error = dev.expect(protocol.ERROR)  # its catch-up read failed: told, and closed
        assert error.code == Reason.INTERNAL_ERROR
        assert dev.until_closed() == []
        with RawDevice(server.address) as fine:
            assert fine.hello("fine").TYPE == protocol.WELCOME
            assert server.push("fine", b"ok") == 1
            assert fine.expect(protocol.PUSH).payload == b"ok"
        broken["on"] = False
        with RawDevice(server.address) as again:  # reconnects and resumes: every message, once
            assert again.hello("broken").TYPE == protocol.WELCOME
            assert [again.expect(protocol.PUSH).seq for _ in range(3)] == [1, 2, 3]
    finally:
        server.stop(timeout=5.0)
        store.close()


def test_a_device_that_connects_while_its_topic_is_stored_gets_the_message_once(tmp_path):
    """The publish asks the store only for the connected devices' seqs; one routed just after
    must still get the message, from its catch-up, and only once."""
    store = SQLiteStore(tmp_path / "s.db")
    for i in range(3000):
        store.subscribe(f"offline{i}", ["news"])
    for name in ("early", "late"):
        store.subscribe(name, ["news"])
    server = make_server(store=store)
    server.start()
    try:
        early = RawDevice(server.address)
        assert early.hello("early").TYPE == protocol.WELCOME
        wait_for(lambda: server.connected("early"), what="early's session")
        gate = hold_writer(server.pipeline)  # the writer is busy until the gate opens
        published = server.publish("news", b"headline", wait=False)
        late = RawDevice(server.address)
        late.send(protocol.Hello((1,), "late", token("late"), 0, 0))
        wait_for(lambda: server.pipeline.pending() >= 2, what="the publish and the HELLO's claim queued")
        gate.set()
        assert published.result(10) == 3002
        assert late.expect(protocol.WELCOME)
        for dev in (early, late):
            push = dev.expect(protocol.PUSH)
            assert (push.seq, push.payload) == (1, b"headline")
            assert dev.silent_for(0.3)  # once
        assert store.last_seq("offline2999") == 1
        early.sock.close()
        late.sock.close()
    finally:
        server.stop(timeout=5.0)
        store.close()

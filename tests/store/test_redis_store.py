"""What is Redis-specific in RedisStore: slots, durability, outages, several stores on one keyspace."""
from __future__ import annotations

import signal
import threading

import pytest
import redis
from redis.cluster import key_slot
from store_kinds import REDIS_KINDS, fresh_prefix

from pushcore.store import NewMessage, StoreError, StoreUnavailable, open_store
from pushcore.store.redis import RedisStore
from redisd import RedisServer

T0 = 1_700_000_000.0


def fill(store: RedisStore) -> None:
    """Some of every kind of key: messages, collapse, expiry, keys, topics, revocations, a floor."""
    for n, d in enumerate(("a", "b:x", "{c}", "dé")):
        store.append(d, message_id=1, payload=b"p", priority=1, now=T0, collapse_key="k", expiry=int(T0) + 9)
        store.append(d, message_id=2, payload=b"q", priority=0, now=T0, idempotency_key=f"key-{n}")
        store.subscribe(d, ["news", "sport"])
        store.set_revoked_before(d, T0)
    store.append_batch([NewMessage(f"n{i}", i, b"x", 1) for i in range(20)], now=T0)
    store.ack("a", 10)
    store.drop_empty_devices()


@pytest.mark.parametrize("kind", REDIS_KINDS)
def test_every_key_has_a_tag_and_each_device_is_one_slot(kind, new_store):
    store = new_store(kind)
    assert isinstance(store, RedisStore)
    fill(store)
    client = store._client
    keys = [k.decode() for k in client.scan_iter(match=f"{store.prefix}:*")]
    assert keys
    by_device: dict[str, set[int]] = {}
    for key in keys:
        tag = key.split("{", 1)[1].split("}", 1)[0]
        assert tag.startswith(("p", "t:", "k:")) or tag == "cfg", key
        if tag.startswith("p"):
            part = int(tag[1:])
            assert 0 <= part < store.partitions
            kind_and_device = key.split("}:", 1)[1]
            if kind_and_device[:2] in ("d:", "m:", "s:", "c:", "x:", "k:", "t:", "r:"):
                device = kind_and_device[2:]
                assert store._part(device) == part, key
                by_device.setdefault(device, set()).add(key_slot(key.encode()))
    assert {"b:x", "{c}", "dé", "n3"} <= set(by_device)
    assert all(len(slots) == 1 for slots in by_device.values()), by_device
    # every key a device's script may touch, and its partition's indexes, hash to the same slot
    for device in ("a", "{c}"):
        base = store._base(device)
        names = [base + f"{letter}:{device}" for letter in "dmscxktr"]
        names += [base + s for s in ("expiring", "idem", "stats", "devs", "empty", "floor")]
        assert len({key_slot(n.encode()) for n in names}) == 1
        if kind == "redis-cluster":  # and the server agrees with redis-py
            assert client.cluster_keyslot(names[0]) == key_slot(names[-1].encode())


def test_data_survives_a_redis_restart(tmp_path):
    server = RedisServer(tmp_path / "r", appendfsync="always").start()
    try:
        with RedisStore(server.url, prefix="gw") as store:
            seqs = [m.seq for m in store.append_batch([NewMessage("d", i, b"m%d" % i, 1) for i in range(5)])]
            store.ack("d", 2)
            store.subscribe("d", ["news"])
            store.append("e", message_id=9, payload=b"k", priority=1, idempotency_key="K1")
        server.restart(signal.SIGKILL)  # a crash: what the AOF holds comes back
        with RedisStore(server.url, prefix="gw") as store:
            assert seqs == [1, 2, 3, 4, 5]
            assert [m.payload for m in store.range("d")] == [b"m2", b"m3", b"m4"]
            assert store.last_seq("d") == 5 and store.subscribers("news") == {"d"}
            again = store.append("e", message_id=10, payload=b"k", priority=1, idempotency_key="K1")
            assert again.seq == 1 and type(again).__name__ == "ReplayedMessage"
            assert store.append("d", message_id=6, payload=b"n", priority=1).seq == 6
    finally:
        server.stop()


def test_redis_down_makes_writes_unavailable_and_probe_heals(tmp_path):
    server = RedisServer(tmp_path / "r").start()
    try:
        store = RedisStore(server.url, prefix="gw", socket_timeout=0.5)
        store.append("d", message_id=1, payload=b"a", priority=1)
        server.stop()
        with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{server.port}") as exc:
            store.append("d", message_id=2, payload=b"b", priority=1)
        assert exc.value.since > 0
        health = store.health()
        assert not health.writable and f"127.0.0.1:{server.port}" in (health.error or "")
        with pytest.raises(StoreUnavailable):
            store.range("d")  # reads fail as typed errors too
        assert not store.probe().writable
        server.start()
        assert store.probe().writable and store.health().writable
        assert [m.payload for m in store.range("d")] == [b"a"]
        assert store.append("d", message_id=3, payload=b"c", priority=1).seq == 2
        server.stop()
        assert not store.check_writable().writable  # the watcher's test finds the outage too
        store.close()
    finally:
        server.stop()


@pytest.mark.parametrize("kind", REDIS_KINDS)
def test_two_stores_on_one_keyspace_never_hand_out_a_seq_twice(kind, new_store):
    stores = [new_store(kind, "shared"), new_store(kind, "shared")]
    seen: list[list[int]] = [[], []]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for n in range(60):
                if n % 3:
                    seen[i].append(stores[i].append("dev", message_id=n, payload=b"x", priority=1).seq)
                else:
                    batch = stores[i].append_batch([NewMessage("dev", n, b"y", 1), NewMessage("other", n, b"z", 1),
                                                    NewMessage("dev", n, b"w", 1)])
                    seen[i] += [batch[0].seq, batch[2].seq]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    every = seen[0] + seen[1]
    assert len(every) == len(set(every)) == 160
    assert sorted(every) == list(range(1, 161)) and stores[0].last_seq("dev") == 160
    assert all(a < b for a, b in zip(seen[0], seen[0][1:]))  # each store's own seqs ascend


@pytest.mark.parametrize("kind", REDIS_KINDS)
def test_a_keyspace_with_another_partition_count_is_refused(kind, new_store):
    new_store(kind, "ks", partitions=16).append("d", message_id=1, payload=b"", priority=1)
    with pytest.raises(StoreError, match="made with 16 partitions, not 256"):
        new_store(kind, "ks")
    assert new_store(kind, "ks", partitions=16).last_seq("d") == 1


def test_open_store_takes_redis_urls(redis_server, redis_cluster):
    prefix = fresh_prefix()
    with open_store(redis_server.url, prefix=prefix, max_messages=3) as store:
        assert isinstance(store, RedisStore) and not store.cluster and store.max_messages == 3
    with open_store(redis_cluster.url, prefix=prefix) as store:
        assert isinstance(store, RedisStore) and store.cluster
    ports = ",".join(f"127.0.0.1:{p}" for p in redis_cluster.ports)
    with open_store(f"redis+cluster://{ports}", prefix=prefix) as store:
        assert store.append("d", message_id=1, payload=b"", priority=1).seq == 1


def test_an_unreachable_server_at_open_is_a_store_error(tmp_path):
    from redisd import free_ports

    with pytest.raises(StoreError, match="127.0.0.1"):
        RedisStore(f"redis://127.0.0.1:{free_ports(1)[0]}/0", socket_timeout=0.2)


def test_bad_options_are_refused(redis_server):
    for options, match in (({"prefix": "a{b"}, "prefix"), ({"partitions": 0}, "partitions"),
                           ({"socket_timeout": 0}, "socket_timeout")):
        with pytest.raises(ValueError, match=match):
            RedisStore(redis_server.url, **options)


def test_seqs_near_the_end_stay_exact(new_store):
    """Seqs beyond 2**53 (where Lua's doubles stop being exact) are kept as strings by the scripts."""
    store = new_store("redis")
    big = 2**62 + 1
    assert store.advance_seq("d", big) == big
    seqs = [m.seq for m in store.append_batch([NewMessage("d", i, b"", 1) for i in range(3)])]
    assert seqs == [big + 1, big + 2, big + 3]
    assert [m.seq for m in store.range("d", big + 1)] == [big + 2, big + 3]
    assert store.ack("d", big + 2) == 2 and store.backlog("d") == 1


def test_the_redis_module_is_imported_lazily():
    import subprocess
    import sys

    code = ("import sys, pushcore, pushcore.store; pushcore.store.open_store; "
            "pushcore.store.parse_store_target('redis://h:1/0'); print('redis' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert redis.__version__  # the test extra has it

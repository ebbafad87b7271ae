"""RedisStore: the offline store on Redis, standalone (``redis://``) or a Redis Cluster (``redis+cluster://``).

Several gateways (processes, hosts) may share one Redis: every multi-step
operation is one Lua script, which Redis runs atomically, so two stores
appending to the same device never hand out a seq twice. The client is
redis-py (with hiredis when installed); ``redis`` is imported only when a
RedisStore is made, so ``import pushcore`` does not need it.

Partitions and hash tags
------------------------
Each device belongs to one of *partitions* partitions (default 256):
``k = zlib.crc32(device_id as UTF-8) % partitions``. Every key of the device
and every per-partition index carries the hash tag ``{p<k>}``, so in a
cluster all the keys one script touches are in one slot (one node), and
the per-partition counters stay exact. The partition count is written once
(``<prefix>:{cfg}:partitions``); a store opened with another count is refused,
since its devices would map to other partitions. Keys (``P`` = the *prefix*,
default ``pc``; several gateways or tests share one Redis with different
prefixes)::

    P:{p<k>}:d:<device>      HASH last (the seq counter), n (messages stored): the device record
    P:{p<k>}:m:<device>      HASH padded seq -> packed message
    P:{p<k>}:s:<device>      ZSET the stored seqs (score 0, 19-digit members: ZRANGEBYLEX is seq order)
    P:{p<k>}:c:<device>      HASH collapse key -> padded seq
    P:{p<k>}:x:<device>      ZSET padded seq of messages with an expiry, scored by it (the cap's first step)
    P:{p<k>}:k:<device>      HASH idempotency key -> "seq message_id created expires digest"
    P:{p<k>}:t:<device>      SET the device's topics (the truth for topics())
    P:{p<k>}:r:<device>      STRING the revocation time
    P:{p<k>}:expiring        ZSET padded seq + device id, scored by expiry (purge_expired)
    P:{p<k>}:idem            ZSET "key device", scored by when the key's window ends (the purge)
    P:{p<k>}:stats           HASH messages: stored messages of the partition
    P:{p<k>}:devs            SET devices with at least one stored message
    P:{p<k>}:empty           SET devices whose record may hold nothing (drop_empty_devices)
    P:{p<k>}:floor           STRING the partition's seq floor
    P:{t:<topic>}:members    SET the topic's subscribers (its own slot; the truth for subscribers())
    P:{k:<key>}:idem         STRING one idempotency key, store-wide (its own slot), SET with PX = window
    P:{cfg}:partitions       STRING the partition count;  P:{cfg}:floor  the highest partition floor

The device id comes last in a key, after the kind, so no id (they may hold
``:`` and braces) can make one device's key another's; the first ``{...}`` of
every key is its partition, topic or key tag.

Seq floor. Dropping empty records raises the floor of their *partition*; a
device without a record starts above its partition's floor, which keeps "no
seq handed out twice" exactly, since a device never changes partition. So
that a single gateway sees the contract's one number, a new record also
starts above the store-wide floor (the highest partition floor, raised after
each drop and read by each store at open and at each drop): a best effort
across processes, not needed for safety.

Seqs go to 2**63-1, beyond the doubles of Lua: the scripts keep them as
decimal strings (``HINCRBY`` counts in 64 bits) and never do arithmetic on them.

What is atomic, and what is not
-------------------------------
* One device's append, ack, advance, range, backlog: one script, atomic.
* A batch (``append_batch`` / ``append_many`` / a topic publish) is one script
  per partition, pipelined: each partition's part is all or nothing, but
  the batch as a whole is not one transaction. :class:`SeqExhausted` is
  checked for the whole batch (a read of the counters) before anything is
  written, and again by each script, so it fails the whole batch unless a
  concurrent writer raised a counter in between; an outage in the middle of a
  batch may leave the partitions sent before it stored (the caller sees
  :class:`StoreUnavailable`; a retry with idempotency keys replays them).
* :meth:`~pushcore.store.Store.group` is no transaction: Redis has no
  rollback. As in the memory store, ``_group_begin``/``_group_end`` do
  nothing and every call in a group takes effect when it returns (it is as
  durable as the server's ``appendfsync`` makes it); an outage fails the
  calls it hits, one by one, never the ones before it.
* Subscriptions are two commands, the device's set first, then the topic's:
  for that instant ``topics()`` shows a membership ``subscribers()`` does not
  yet (a publish in that window misses the device, as if it subscribed just
  after). A subscribe that fails in between is completed by repeating it.

Idempotency keys. The device's script remembers each key in the device's
``k:`` hash, in the same atomic step as the message, and answers a replay (or
a conflict) itself: retries of one message to one device are exact also when
they race from several processes. Uniqueness across devices needs the
store-wide record ``P:{k:<key>}:idem`` (another slot): before an append the
store reads the records of the batch's keys (a replay or a conflict is
decided there, by :func:`~pushcore.store.base.plan_keys`), after it it writes
the new ones (set unless an unexpired record is there). The remaining race:
the same key used at the same moment for two *different* devices by two
processes may store both messages (each process finds no record before the
other writes it); the later record write is then refused and logged.
:meth:`~pushcore.store.Store.purge_expired` forgets device-side records past
their window and the store-wide record with them; Redis also expires the
store-wide record (PX) on its own.

Health. A connection error or timeout (or a cluster that is down, a server
loading its AOF, out of memory, read-only) raises :class:`StoreUnavailable`
naming the address and marks the store unwritable, on a write or a read;
:meth:`~pushcore.store.Store.probe` (a ``SET`` of ``P:{cfg}:probe``) and the
next write that works heal it. Neither client retries a command after a
connection error or timeout (a retried append that had run would store the
message twice, under two seqs); the cluster client still follows MOVED/ASK
redirects, which say the command did not run.
"""
from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import redis_scripts as lua
from .base import (
    DEFAULT_IDEMPOTENCY_WINDOW,
    DEFAULT_MAX_MESSAGES,
    MAX_SEQ,
    IdempotencyConflict,
    KeyRecord,
    MessageFields,
    ReplayedMessage,
    SeqExhausted,
    Store,
    StoredMessage,
    StoreError,
    StoreHealth,
    StoreUnavailable,
    plan_keys,
)

if TYPE_CHECKING:
    from redis.commands.core import Script

__all__ = ["RedisStore", "DEFAULT_PARTITIONS", "parse_redis_url", "partition_of"]

log = logging.getLogger("pushcore.store")

DEFAULT_PARTITIONS = 256


def partition_of(device_id: str, partitions: int) -> int:
    """The partition (hash tag ``{p<k>}``) of *device_id*: CRC-32 of its UTF-8 bytes, mod *partitions*.

    The one rule for every key of a device, the store's and the cluster's routes alike.
    """
    return zlib.crc32(device_id.encode("utf-8")) % partitions
DEFAULT_SOCKET_TIMEOUT = 2.0
_HEAD = struct.Struct(">H")
_TAIL = struct.Struct(">IQBdH")  # expiry, message id, priority, created, topic length
# Refusals that mean "cannot write now", not a bug: the server is loading, full, a replica, ...
_UNAVAILABLE_REPLIES = ("LOADING", "OOM", "READONLY", "MISCONF", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN",
                        "BUSY")


def _pad(seq: int) -> str:
    return f"{seq:019d}"


def _pack(fields: MessageFields, created: float) -> bytes:
    """A message as the scripts store it: collapse key and expiry first (the scripts read those)."""
    ck = fields.collapse_key.encode("utf-8")
    topic = fields.topic.encode("utf-8")
    return b"".join((_HEAD.pack(len(ck)), ck,
                     _TAIL.pack(fields.expiry, fields.message_id, fields.priority, created, len(topic)),
                     topic, fields.payload))


def _unpack(seq: int, value: bytes) -> StoredMessage:
    n = _HEAD.unpack_from(value)[0]
    ck = value[2:2 + n].decode("utf-8")
    at = 2 + n
    expiry, message_id, priority, created, t = _TAIL.unpack_from(value, at)
    at += _TAIL.size
    return StoredMessage(seq, message_id, value[at + t:], priority, expiry, ck,
                         value[at:at + t].decode("utf-8"), created)


def parse_redis_url(url: str) -> tuple[bool, list[tuple[str, int]], int]:
    """``(cluster, [(host, port), ...], db)`` of a ``redis://`` / ``rediss://`` / ``redis+cluster://`` URL.

    ``ValueError`` names what is wrong (no host, a bad port, a db that is not a
    number, a cluster with a db other than 0, several hosts without
    ``+cluster``).
    """
    if not isinstance(url, str):
        raise TypeError(f"redis url must be str, not {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis", "rediss", "redis+cluster"):
        raise ValueError(f"{url!r} is not a Redis URL: use redis://HOST:PORT/DB or "
                         f"redis+cluster://HOST:PORT[,HOST:PORT...]")
    cluster = scheme == "redis+cluster"
    netloc, _, path = rest.partition("/")
    if "@" in netloc:
        netloc = netloc.rsplit("@", 1)[1]
    nodes: list[tuple[str, int]] = []
    for part in netloc.split(","):
        split = urlsplit(f"//{part}")
        try:
            port = split.port or 6379
        except ValueError:
            raise ValueError(f"{url!r}: bad port in {part!r}") from None
        if not split.hostname:
            raise ValueError(f"{url!r} names no host: use {scheme}://HOST:PORT")
        nodes.append((split.hostname, port))
    if len(nodes) > 1 and not cluster:
        raise ValueError(f"{url!r} lists several hosts: a Redis Cluster is redis+cluster://HOST:PORT[,HOST:PORT...]")
    path = path.split("?", 1)[0]
    if path and not path.isdigit():
        raise ValueError(f"{url!r}: the database must be a number (redis://HOST:PORT/0), got {path!r}")
    db = int(path or 0)
    if cluster and db != 0:
        raise ValueError(f"{url!r}: a Redis Cluster has only database 0")
    return cluster, nodes, db


class RedisStore(Store):
    """:class:`~pushcore.store.Store` on Redis or a Redis Cluster (see the module doc for the layout).

    *url* is ``redis://HOST:PORT/DB`` (``rediss://`` for TLS, as redis-py
    takes it) or ``redis+cluster://HOST:PORT[,HOST:PORT...]`` (any nodes of
    the cluster; the rest are discovered). *prefix* starts every key;
    *partitions* must be the same for every store on one keyspace (a
    keyspace made with another count is refused with :class:`StoreError`).
    *socket_timeout* bounds each command (seconds): a server that does not
    answer in time makes the call raise :class:`StoreUnavailable`.
    Thread-safe (the store's lock, and redis-py's connection pool).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "pc",
        partitions: int = DEFAULT_PARTITIONS,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        idempotency_window: float = DEFAULT_IDEMPOTENCY_WINDOW,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
    ) -> None:
        super().__init__(max_messages=max_messages, idempotency_window=idempotency_window)
        if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"prefix must be a non-empty str without braces, got {prefix!r}")
        if not isinstance(partitions, int) or isinstance(partitions, bool) or not 1 <= partitions <= 16384:
            raise ValueError(f"partitions must be an int in 1..16384, got {partitions!r}")
        if not isinstance(socket_timeout, (int, float)) or not socket_timeout > 0:
            raise ValueError(f"socket_timeout must be seconds > 0, got {socket_timeout!r}")
        self.url = url
        self.prefix = prefix
        self.partitions = partitions
        self.cluster, nodes, db = parse_redis_url(url)
        self._address = ",".join(f"{h}:{p}" for h, p in nodes) + ("" if self.cluster else f"/{db}")
        self._bases = [f"{prefix}:{{p{k}}}:" for k in range(partitions)]
        self._cfg = f"{prefix}:{{cfg}}:"
        self._floor = 0  # the store-wide floor as this store last saw it (module doc)
        self._client: Any = self._connect(url, nodes, socket_timeout)
        c = self._client
        self._append_lua: Script = c.register_script(lua.APPEND)
        self._range_lua: Script = c.register_script(lua.RANGE)
        self._backlog_lua: Script = c.register_script(lua.BACKLOG)
        self._ack_lua: Script = c.register_script(lua.ACK)
        self._advance_lua: Script = c.register_script(lua.ADVANCE)
        self._purge_lua: Script = c.register_script(lua.PURGE)
        self._purge_keys_lua: Script = c.register_script(lua.PURGE_KEYS)
        self._drop_lua: Script = c.register_script(lua.DROP_EMPTY)
        self._expired_lua: Script = c.register_script(lua.EXPIRED_SIZES)
        self._live_lua: Script = c.register_script(lua.LIVE_DEVICES)
        self._idem_put_lua: Script = c.register_script(lua.IDEM_PUT)
        self._idem_del_lua: Script = c.register_script(lua.IDEM_DEL)
        self._floor_max_lua: Script = c.register_script(lua.FLOOR_MAX)
        try:
            self._open_keyspace()
        except BaseException:
            self._client.close()
            raise

    def _connect(self, url: str, nodes: list[tuple[str, int]], timeout: float) -> Any:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        try:
            if not self.cluster:
                # No retries: an append whose reply was lost may have run, and must not run twice.
                return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **options)
            from redis.cluster import ClusterNode, RedisCluster
            startup = [ClusterNode(h, p) for h, p in nodes]  # type: ignore[no-untyped-call]
            # Connection errors are not retried (the append may have run: a retry would store it twice);
            # MOVED / ASK redirects still are (a redirected command did not run).
            return RedisCluster(startup_nodes=startup, retry=Retry(NoBackoff(), 0), **options)
        except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.RedisClusterException) as exc:
            raise StoreError(f"cannot reach Redis at {self._address}: {exc}") from exc

    def _open_keyspace(self) -> None:
        key = self._cfg + "partitions"
        try:
            with self._io():
                self._client.set(key, self.partitions, nx=True)
                made = int(self._client.get(key))
                self._floor = int(self._client.get(self._cfg + "floor") or 0)
        except StoreUnavailable as exc:
            raise StoreError(f"cannot open the Redis store at {self._address}: {exc.cause}") from None
        if made != self.partitions:
            raise StoreError(
                f"the Redis keyspace {self.prefix!r} at {self._address} was made with {made} partitions, "
                f"not {self.partitions}: open it with partitions={made} (a device's keys depend on the count)"
            )

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, prefix={self.prefix!r}, max_messages={self.max_messages})"

    # -- plumbing --

    @contextmanager
    def _io(self, *, write: bool = False) -> Iterator[None]:
        """Map Redis errors: an outage is :class:`StoreUnavailable` (store marked unwritable)."""
        import redis
        from redis import exceptions as rx

        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError, rx.ClusterDownError, rx.TryAgainError,
                rx.MasterDownError, rx.RedisClusterException) as exc:
            raise self._unwritable(f"Redis at {self._address}: {type(exc).__name__}: {exc}") from exc
        except rx.ResponseError as exc:
            if str(exc).startswith(_UNAVAILABLE_REPLIES):
                raise self._unwritable(f"Redis at {self._address}: {exc}") from exc
            raise StoreError(f"Redis at {self._address} refused a command: {exc}") from exc
        if write:
            self._writable()

    def _part(self, device_id: str) -> int:
        return partition_of(device_id, self.partitions)

    def _base(self, device_id: str) -> str:
        return self._bases[self._part(device_id)]

    def _run(self, calls: list[tuple[Script, str, list[Any]]]) -> list[Any]:
        """Run scripts ``(script, a key of its slot, ARGV)``: one alone, several pipelined (not atomic together)."""
        if len(calls) == 1:
            script, key, args = calls[0]
            return [script(keys=[key], args=args)]
        from redis.exceptions import NoScriptError

        pipe = self._client.pipeline(transaction=False)
        for script, key, args in calls:
            script(keys=[key], args=args, client=pipe)
        results: list[Any] = pipe.execute(raise_on_error=False)
        for i, result in enumerate(results):
            if isinstance(result, NoScriptError):
                # A cluster pipeline does not load scripts (a restarted node forgot them): run that one
                # alone, which loads it. NOSCRIPT means it did not run, so it runs once.
                script, key, args = calls[i]
                results[i] = script(keys=[key], args=args)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    def _pipe(self, commands: Iterable[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """Plain commands ``(name, args)``, pipelined (in a cluster: split by node)."""
        pipe = self._client.pipeline(transaction=False)
        for name, args in commands:
            getattr(pipe, name)(*args)
        return list(pipe.execute())

    # -- health --

    def _probe(self) -> None:
        with self._io(write=True):
            self._client.set(self._cfg + "probe", b"1", px=60_000)

    def check_writable(self) -> StoreHealth:
        """One ``SET`` of the probe key, without the store's lock (redis-py's pool is thread-safe)."""
        if self.closed or not self._health.writable:
            return self._health
        try:
            self._client.set(self._cfg + "probe", b"1", px=60_000)
        except Exception as exc:
            import redis

            if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, redis.exceptions.RedisClusterException)):
                with self._lock:
                    if not self.closed:
                        self._unwritable(f"Redis at {self._address}: {type(exc).__name__}: {exc}")
        return self._health

    # -- messages --

    def _lookup_keys(self, pairs: list[tuple[str, MessageFields]], now: float) -> dict[str, KeyRecord]:
        keys = list(dict.fromkeys(f.idempotency_key for _, f in pairs if f.idempotency_key))
        if not keys:
            return {}
        with self._io():
            values = self._pipe(("get", (f"{self.prefix}:{{k:{key}}}:idem",)) for key in keys)
        records = {}
        for key, value in zip(keys, values):
            if value is None:
                continue
            seq, mid, made, until, digest, device = value.decode("utf-8").split(" ", 5)
            if float(until) > now:
                records[key] = KeyRecord(device, int(seq), int(mid), bytes.fromhex(digest), float(made),
                                         float(until))
        return records

    def _append(self, pairs: list[tuple[str, MessageFields]], now: float) -> list[StoredMessage]:
        records = self._lookup_keys(pairs, now)
        plan = plan_keys(pairs, records.get) if records or any(f.idempotency_key for _, f in pairs) else None
        replays = plan.replays if plan is not None else {}
        fresh = [i for i in range(len(pairs)) if i not in replays]
        # One script per partition, the items in batch order.
        groups: dict[int, list[int]] = {}
        for i in fresh:
            groups.setdefault(self._part(pairs[i][0]), []).append(i)
        counts: dict[str, int] = {}
        for i in fresh:
            counts[pairs[i][0]] = counts.get(pairs[i][0], 0) + 1
        if len(groups) > 1:
            self._check_counters(counts)
        created, expires = repr(now), repr(now + self._idempotency_window)
        digests = plan.new if plan is not None else {}
        calls = []
        for part, items in groups.items():
            base = self._bases[part]
            devices = list(dict.fromkeys(pairs[i][0] for i in items))
            args: list[Any] = [base, created, self._max_messages, created, expires, str(self._floor), len(devices)]
            for device in devices:
                args += (device, str(MAX_SEQ - counts[device]))
            for i in items:
                device, fields = pairs[i]
                digest = digests.get(i)
                args += (device, _pack(fields, now), fields.collapse_key, str(fields.expiry),
                         fields.idempotency_key if digest is not None else "",
                         digest.hex() if digest is not None else "", str(fields.message_id))
            calls.append((self._append_lua, base + "stats", args))
        with self._io(write=True):
            results = self._run(calls) if calls else []
        answers: dict[int, StoredMessage] = {}
        collapsed = dropped = expired = 0
        failure: Exception | None = None
        for (_part, items), result in zip(groups.items(), results):
            status = result[0]
            if status == b"exhausted":
                failure = failure or SeqExhausted(result[1].decode("utf-8"))
                continue
            if status == b"conflict":
                i = items[int(result[1]) - 1]
                device = pairs[i][0]
                failure = failure or IdempotencyConflict(pairs[i][1].idempotency_key, device, device, i)
                continue
            collapsed += int(result[1])
            dropped += int(result[2])
            expired += int(result[3])
            for i, answer in zip(items, result[4]):
                device, fields = pairs[i]
                seq = int(answer[1])
                if answer[0] == b"r":
                    answers[i] = ReplayedMessage(seq, int(answer[2]), fields.payload, fields.priority,
                                                 fields.expiry, fields.collapse_key, fields.topic,
                                                 float(answer[3]))
                else:
                    answers[i] = StoredMessage(seq, fields.message_id, fields.payload, fields.priority,
                                               fields.expiry, fields.collapse_key, fields.topic, now)
        self._collapsed += collapsed
        self._dropped_by_cap += dropped
        self._expired += expired
        if failure is not None:
            # Only after a race with another process (module doc); counted above: those parts are stored.
            raise failure
        out: list[StoredMessage] = []
        for i, (_device, fields) in enumerate(pairs):
            out.append(plan.replayed(i, fields, out) if plan is not None and i in replays else answers[i])
        if digests:
            self._remember(pairs, out, digests, now, expires)
        return out

    def _check_counters(self, counts: dict[str, int]) -> None:
        """Raise :class:`SeqExhausted` before a batch over several partitions writes anything."""
        devices = list(counts)
        parts = sorted({self._part(d) for d in devices})
        with self._io():
            values = self._pipe([("hget", (self._base(d) + "d:" + d, "last")) for d in devices]
                                + [("get", (self._bases[k] + "floor",)) for k in parts])
        floors = dict(zip(parts, values[len(devices):]))
        for device, last in zip(devices, values[: len(devices)]):
            if last is None:
                last = max(int(floors[self._part(device)] or 0), self._floor)
            if int(last) > MAX_SEQ - counts[device]:
                raise SeqExhausted(device)

    def _remember(self, pairs: list[tuple[str, MessageFields]], out: list[StoredMessage],
                  digests: dict[int, bytes], now: float, expires: str) -> None:
        """Write the store-wide records of the keys just stored (their device-side ones are in already)."""
        ms = max(1, int(self._idempotency_window * 1000))
        calls = []
        for i, digest in digests.items():
            message = out[i]
            if isinstance(message, ReplayedMessage):
                continue  # the device's script found the key: the record is there (or being written)
            device, fields = pairs[i]
            record = f"{message.seq} {message.message_id} {repr(now)} {expires} {digest.hex()} {device}"
            key = f"{self.prefix}:{{k:{fields.idempotency_key}}}:idem"
            calls.append((self._idem_put_lua, key, [record, repr(now), ms]))
        if not calls:
            return
        with self._io(write=True):
            results = self._run(calls)
        for (_script, key, _args), result in zip(calls, results):
            if not result:
                log.warning("pushcore store: idempotency key %s was stored concurrently for another message", key)

    def _range(self, device_id: str, after_seq: int, limit: int, now: float) -> list[StoredMessage]:
        base = self._base(device_id)
        with self._io():
            flat = self._range_lua(keys=[base + "stats"], args=[base, device_id, _pad(after_seq), limit, repr(now)])
        return [_unpack(int(flat[j]), flat[j + 1]) for j in range(0, len(flat), 2)]

    def _ack(self, device_id: str, seq: int) -> int:
        return self._ack_many([(device_id, seq)])

    def _ack_many(self, acks: list[tuple[str, int]]) -> int:
        groups: dict[int, list[Any]] = {}
        for device_id, seq in acks:
            part = self._part(device_id)
            groups.setdefault(part, [self._bases[part]]).extend((device_id, _pad(seq)))
        calls = [(self._ack_lua, args[0] + "stats", args) for args in groups.values()]
        with self._io(write=True):
            return sum(int(n) for n in self._run(calls))

    def _last_seq(self, device_id: str) -> int:
        with self._io():
            value = self._client.hget(self._base(device_id) + "d:" + device_id, "last")
        return 0 if value is None else int(value)

    def _advance_seq(self, device_id: str, seq: int) -> int:
        base = self._base(device_id)
        with self._io(write=True):
            return int(self._advance_lua(keys=[base + "stats"], args=[base, device_id, str(seq), str(self._floor)]))

    def _backlog(self, device_id: str, after_seq: int, now: float) -> int:
        base = self._base(device_id)
        with self._io():
            return int(self._backlog_lua(keys=[base + "stats"], args=[base, device_id, _pad(after_seq), repr(now)]))

    def _due(self, suffix: str, now: float | None) -> list[int]:
        """Per partition: members of its *suffix* ZSET scored <= *now* (or SCARD of a SET when *now* is None)."""
        if now is None:
            return [int(n) for n in self._pipe(("scard", (base + suffix,)) for base in self._bases)]
        return [int(n) for n in self._pipe(("zcount", (base + suffix, "-inf", repr(now))) for base in self._bases)]

    def _purge_expired(self, now: float, limit: int | None) -> int:
        with self._io(write=True):
            due = self._due("expiring", now)
            parts = [k for k, n in enumerate(due) if n]
            if not parts:
                return 0
            want = limit if limit is not None else max(due)
            lists = self._pipe(("zrangebyscore", (self._bases[k] + "expiring", "-inf", repr(now), 0, want, True))
                               for k in parts)
            # The earliest expiries first, across partitions (a limited purge is one step of a sweep).
            merged = sorted(((score, k, member) for k, pairs in zip(parts, lists) for member, score in pairs),
                            key=lambda t: t[0])
            if limit is not None:
                merged = merged[:limit]
            chosen: dict[int, list[Any]] = {}
            for _score, k, member in merged:
                chosen.setdefault(k, [self._bases[k], repr(now)]).append(member)
            calls = [(self._purge_lua, args[0] + "stats", args) for args in chosen.values()]
            return sum(int(n) for n in self._run(calls))

    def _purge_keys(self, now: float, limit: int | None) -> int:
        removed = 0
        with self._io(write=True):
            due = self._due("idem", now)
            forgotten: list[tuple[str, bytes]] = []
            for k, n in enumerate(due):
                if not n:
                    continue
                if limit is not None and removed >= limit:
                    break
                take = n if limit is None else min(n, limit - removed)
                base = self._bases[k]
                flat = self._purge_keys_lua(keys=[base + "stats"], args=[base, repr(now), take])
                removed += len(flat) // 2
                forgotten += [(flat[j].decode("utf-8"), flat[j + 1]) for j in range(0, len(flat), 2)]
            calls = [(self._idem_del_lua, f"{self.prefix}:{{k:{key}}}:idem", [record]) for key, record in forgotten]
            if calls:
                self._run(calls)
        return removed

    def _drop_empty_devices(self, limit: int | None) -> tuple[int, bool]:
        dropped = 0
        more = False
        floor = 0
        with self._io(write=True):
            due = self._due("empty", None)
            for k, n in enumerate(due):
                if not n:
                    continue
                if limit is not None and dropped >= limit:
                    more = True
                    break
                take = n if limit is None else limit - dropped
                base = self._bases[k]
                got, left, part_floor = self._drop_lua(keys=[base + "stats"], args=[base, take])
                dropped += int(got)
                more = more or int(left) > 0
                floor = max(floor, int(part_floor))
            if floor > self._floor:
                self._floor = int(self._floor_max_lua(keys=[self._cfg + "floor"], args=[str(floor)]))
            else:
                self._floor = max(self._floor, int(self._client.get(self._cfg + "floor") or 0))
        return dropped, more

    def _sizes(self) -> tuple[int, int]:
        with self._io():
            values = self._pipe(cmd for base in self._bases
                                for cmd in (("hget", (base + "stats", "messages")), ("scard", (base + "devs",))))
        return sum(int(v or 0) for v in values[0::2]), sum(int(v) for v in values[1::2])

    def _backlog_sizes(self, now: float) -> tuple[int, int]:
        messages, devices = self._sizes()
        with self._io():
            due = self._due("expiring", now)
            calls = [(self._expired_lua, self._bases[k] + "stats", [self._bases[k], repr(now)])
                     for k, n in enumerate(due) if n]
            for gone, empty in self._run(calls) if calls else []:
                messages -= int(gone)
                devices -= int(empty)
        return messages, devices

    def _devices_with_backlog(self, now: float) -> list[str]:
        with self._io():
            counts = self._due("devs", None)
            calls = [(self._live_lua, self._bases[k] + "stats", [self._bases[k], repr(now)])
                     for k, n in enumerate(counts) if n]
            lists = self._run(calls) if calls else []
        return sorted(d.decode("utf-8") for devices in lists for d in devices)

    # -- subscriptions --

    def _topic_key(self, topic: str) -> str:
        return f"{self.prefix}:{{t:{topic}}}:members"

    def _subscribe(self, device_id: str, topics: list[str]) -> int:
        mine = self._base(device_id) + "t:" + device_id
        with self._io(write=True):
            # The device's side first (module doc); the topic side is repeated for every topic,
            # so a subscribe repeated after a failure in between completes it.
            added = sum(self._pipe(("sadd", (mine, topic)) for topic in topics))
            self._pipe(("sadd", (self._topic_key(topic), device_id)) for topic in topics)
        return int(added)

    def _unsubscribe(self, device_id: str, topics: list[str]) -> int:
        mine = self._base(device_id) + "t:" + device_id
        with self._io(write=True):
            removed = sum(self._pipe(("srem", (mine, topic)) for topic in topics))
            self._pipe(("srem", (self._topic_key(topic), device_id)) for topic in topics)
        return int(removed)

    def _subscribers(self, topic: str) -> set[str]:
        with self._io():
            return {d.decode("utf-8") for d in self._client.smembers(self._topic_key(topic))}

    def _topics(self, device_id: str) -> set[str]:
        with self._io():
            return {t.decode("utf-8") for t in self._client.smembers(self._base(device_id) + "t:" + device_id)}

    def _close(self) -> None:
        self._client.close()

    # -- token revocations --

    def _set_revoked_before(self, device_id: str, ts: float) -> None:
        with self._io(write=True):
            self._client.set(self._base(device_id) + "r:" + device_id, repr(ts))

    def _revoked_before(self, device_id: str) -> float | None:
        with self._io():
            value = self._client.get(self._base(device_id) + "r:" + device_id)
        return None if value is None else float(value)

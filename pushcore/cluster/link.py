"""ClusterLink: one gateway process (a *node*) in a cluster of gateways sharing one Redis.

What a node keeps in Redis (every key named in docs/CLUSTER.md):

* **routes** — ``<prefix>:{p<k>}:routes``, a HASH per store partition *k*
  (the same hash tag as the device's store keys, :mod:`pushcore.store.redis`):
  device id → ``"<node>|<cid>"``, the connection that holds the device.
  Connecting is a compare-and-set that returns the old owner (a Lua script),
  so the node that held the device before is told to close it (a *kick*).
  A clean disconnect deletes the route only if it is still this connection's.
* **nodes** — ``<prefix>:{nodes}:live`` (ZSET node → lease expiry, ms) and
  ``<prefix>:{nodes}:info`` (HASH node → JSON: address, load). The lease is
  renewed per node every ``heartbeat`` seconds, never per device; a route
  that names a node whose lease ran out is offline.
* **bus** — ``<prefix>:{n:<node>}:bus``, the node's own channel (sharded
  pub/sub on a Redis Cluster), and ``<prefix>:bcast`` for ephemeral broadcasts.
  :mod:`pushcore.cluster.bus` defines the messages.

Threads: every call the loop makes (:meth:`release`, :meth:`forward`,
:meth:`kick`, :meth:`broadcast`) only appends to a queue; a *sender* thread
drains it in batches (one pipelined round trip of route reads per batch, one
PUBLISH per node) and renews the lease; a *listener* thread reads the bus and
hands each batch of messages to the server's loop. :meth:`claim` is the one
blocking call: the server makes it in its store pipeline (the HELLO's store
step), so the route is written before the device's catch-up read, and a push
stored meanwhile is either in that read or forwarded to this node.

Nothing is lost if a bus message is: every forwarded message is already in
the shared store, and a node that loses Redis re-claims its devices and
catches every one of them up from the store once it is back
(:meth:`ClusterHandler.cluster_resync`).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import PushcoreError
from ..store import StoredMessage
from ..store.redis import DEFAULT_PARTITIONS, partition_of  # one partition rule for store keys and routes
from . import bus

__all__ = ["ClusterLink", "ClusterHandler", "ClusterUnavailable", "NodeInfo", "DEFAULT_PARTITIONS"]

log = logging.getLogger("pushcore.cluster")

DEFAULT_HEARTBEAT = 2.0  # seconds between lease renewals
DEFAULT_LEASE = 8.0  # a node silent this long is taken for dead
_MAX_BATCH = 4096  # queued operations the sender takes per round
_MAX_KEPT = 100_000  # queued operations kept while Redis cannot be reached

_CLAIM = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return old
"""
# Re-claim after a Redis outage: only a route that is absent or still ours; else who holds it now.
_RECLAIM = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if (not old) or old == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return false
end
return old
"""
_RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


class ClusterUnavailable(PushcoreError, ConnectionError):
    """Redis cannot be reached: routes and forwards between nodes wait until it can."""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One live node as the load registry shows it."""

    node_id: str
    host: str
    port: int
    connections: int
    load: float
    lease_expires: float
    info: dict[str, Any]


class ClusterHandler(Protocol):
    """What the link calls back into (the :class:`pushcore.Server`); every call comes from a link thread."""

    def cluster_messages(self, messages: list[bus.BusMessage]) -> None:
        """Messages from the bus for this node (forwards, kicks, broadcasts), in arrival order."""

    def cluster_resync(self) -> None:
        """The link is back after Redis was unreachable: re-claim every device here and catch each up."""

    def cluster_load(self) -> dict[str, Any]:
        """This node's load figures for the registry (connections, loop lag, queues, ...)."""


def _is_cluster_url(url: str) -> bool:
    return url.startswith("redis+cluster://")


class ClusterLink:
    """Routes, kicks and forwards between the gateway processes that share one Redis.

    *url* is ``redis://host:port/db`` (one Redis) or ``redis+cluster://host:port``
    (a Redis Cluster, reached through any of its masters). *node_id* names
    this process (default: host name, pid and a random suffix, so a restarted
    process is a new node and routes left by its previous incarnation are
    simply offline). *address* is what devices connect to (served in the
    load-sorted server list). *prefix* and *partitions* must match the
    :class:`~pushcore.store.redis.RedisStore` on the same Redis.

    Placement (:meth:`placement`): with *overload_connections*, a node holding
    more connections than that is *overloaded*: a new device is sent on
    (GOAWAY ``OVERLOADED`` listing the less loaded nodes) when another node
    has room, else answered late, up to *overload_delay* seconds, the delay
    growing with the excess, so a reconnect storm spreads out.
    """

    def __init__(
        self,
        url: str,
        *,
        node_id: str | None = None,
        address: tuple[str, int] | None = None,
        prefix: str = "pc",
        partitions: int = DEFAULT_PARTITIONS,
        heartbeat: float = DEFAULT_HEARTBEAT,
        lease: float = DEFAULT_LEASE,
        socket_timeout: float = 2.0,
        overload_connections: int | None = None,
        overload_delay: float = 2.0,
    ) -> None:
        if overload_connections is not None and (not isinstance(overload_connections, int)
                                                 or overload_connections < 1):
            raise ValueError(f"overload_connections must be an int >= 1 or None, got {overload_connections!r}")
        if not 0 <= overload_delay <= 60:
            raise ValueError(f"overload_delay must be 0..60 seconds, got {overload_delay!r}")
        if not isinstance(url, str) or not (url.startswith("redis://") or _is_cluster_url(url)):
            raise ValueError(f"cluster URL must be redis://HOST:PORT/DB or redis+cluster://HOST:PORT, got {url!r}")
        if not 0 < heartbeat < lease:
            raise ValueError(f"need 0 < heartbeat < lease, got heartbeat={heartbeat} lease={lease}")
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        import redis

        self.url = url
        self.node_id = node_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.address = address
        self.prefix = prefix
        self.partitions = partitions
        self.heartbeat = heartbeat
        self.lease = lease
        self.cluster_mode = _is_cluster_url(url)
        self.overload_connections = overload_connections
        self.node_number: int | None = None  # for message ids, handed out by Redis at start()
        self.overload_delay = overload_delay
        self.draining = False
        #: the other live nodes, least loaded first, as read at the last lease renewal
        self.peers: list[NodeInfo] = []
        self._redis_errors: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
        self._link_errors: tuple[type[Exception], ...] = (ClusterUnavailable, *self._redis_errors)
        if self.cluster_mode:
            from redis.cluster import RedisCluster

            self._r: Any = RedisCluster.from_url("redis://" + url.removeprefix("redis+cluster://"),
                                                 socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout)
        else:
            self._r = redis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout)
        self._claim = self._r.register_script(_CLAIM)
        self._reclaim = self._r.register_script(_RECLAIM)
        self._release = self._r.register_script(_RELEASE)
        self.channel = f"{prefix}:{{n:{self.node_id}}}:bus"
        self.broadcast_channel = f"{prefix}:bcast"
        self._live_key = f"{prefix}:{{nodes}}:live"
        self._info_key = f"{prefix}:{{nodes}}:info"
        self._queue: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._handler: ClusterHandler | None = None
        self._threads: list[threading.Thread] = []
        self._up = threading.Event()  # the listener is subscribed
        self._live_cache: tuple[float, dict[str, float]] = (0.0, {})
        self.stats = {"forwarded": 0, "forward_offline": 0, "forward_publishes": 0, "kicks_sent": 0, "received": 0, "bad_messages": 0,
                      "claims": 0, "claim_failures": 0, "resyncs": 0, "redis_errors": 0, "lease_lapses": 0,
                      "dropped_while_down": 0}

    def __repr__(self) -> str:
        return f"ClusterLink({self.url!r}, node_id={self.node_id!r})"

    # -- keys --------------------------------------------------------------------

    def routes_key(self, device_id: str) -> str:
        return f"{self.prefix}:{{p{partition_of(device_id, self.partitions)}}}:routes"

    def node_channel(self, node_id: str) -> str:
        return f"{self.prefix}:{{n:{node_id}}}:bus"

    def _route_value(self, cid: int) -> str:
        return f"{self.node_id}|{cid}"

    # -- lifecycle ---------------------------------------------------------------

    def start(self, handler: ClusterHandler, timeout: float = 10.0) -> None:
        """Join the cluster: renew this node's lease, listen on its channel. Waits until subscribed."""
        if self._threads:
            raise RuntimeError("this cluster link is already started")
        self._handler = handler
        try:
            # A node number for message ids, distinct among the nodes that share this Redis
            # (up to 1,024 at once): message ids of different nodes never collide.
            self.node_number = int(self._r.incr(f"{self.prefix}:{{nodes}}:number")) % 1024
        except self._redis_errors as exc:
            raise ClusterUnavailable(f"Redis at {self.url} cannot be reached: {exc}") from None
        self._renew_lease()  # raises ClusterUnavailable when Redis is not there at start: say so at once
        for name, target in (("listen", self._listen), ("send", self._send)):
            t = threading.Thread(target=target, name=f"pushcore-cluster-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        if not self._up.wait(timeout):
            raise ClusterUnavailable(f"could not subscribe to {self.channel} on {self.url} in {timeout} s")

    def close(self, *, leave: bool = True) -> None:
        """Stop the threads; with *leave*, remove this node from the registry at once (a clean stop)."""
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(5.0)
        self._threads.clear()
        try:
            self._send_queued()  # the releases of the connections closed while stopping
        except Exception:  # Redis is away: the routes name a node whose lease runs out
            pass
        if leave:
            try:
                pipe = self._r.pipeline(transaction=False)
                pipe.zrem(self._live_key, self.node_id)
                pipe.hdel(self._info_key, self.node_id)
                pipe.execute()
            except self._redis_errors:
                pass  # the lease runs out on its own
        self._r.close()

    # -- routes (claim is blocking; the rest are queued) ------------------------------

    def claim(self, device_id: str, cid: int) -> None:
        """Route *device_id* to connection *cid* here; kick the connection that held it on another node.

        Blocking (one round trip): the server calls it in its store pipeline
        before the device's catch-up read. When Redis cannot be reached it
        returns without raising: the device is served here, and the resync
        after Redis is back claims it.
        """
        try:
            old = self._claim(keys=[self.routes_key(device_id)], args=[device_id, self._route_value(cid)])
        except self._redis_errors as exc:
            self.stats["claim_failures"] += 1
            log.warning("pushcore cluster: route of %r not claimed (%s); claimed again once Redis is back",
                        device_id, exc)
            return
        self.stats["claims"] += 1
        if old is not None:
            node, _, old_cid = old.decode().rpartition("|")
            if node != self.node_id and old_cid.isdigit():
                self.kick(node, device_id, int(old_cid))

    def release(self, device_id: str, cid: int) -> None:
        """The connection *cid* of *device_id* closed: forget its route unless a newer one took it."""
        self._put(("release", device_id, cid))

    def kick(self, node_id: str, device_id: str, cid: int) -> None:
        """Tell *node_id* to close its connection *cid* of *device_id* (GOAWAY REPLACED)."""
        self._put(("kick", node_id, device_id, cid))

    def forward(self, groups: Sequence[tuple[StoredMessage, Sequence[tuple[str, int]]]]) -> None:
        """Stored messages for devices not connected here: sent to the nodes that hold them.

        Each group is one message's fields and the ``(device_id, seq)`` pairs
        it was stored for. Devices that are connected nowhere are skipped
        (their messages wait in the store).
        """
        self._put(("forward", groups))

    def wake(self, targets: Sequence[tuple[str, int]]) -> None:
        """Ask the nodes holding these devices to catch each up to its seq, unless it was sent already."""
        self._put(("wake", targets))

    def broadcast(self, message: StoredMessage) -> None:
        """An ephemeral message (seq 0) for the devices of every other node."""
        self._put(("broadcast", message))

    def _put(self, item: tuple[Any, ...]) -> None:
        self._queue.append(item)
        self._wake.set()

    # -- queries (blocking, any thread) -----------------------------------------------

    def live_nodes(self, max_age: float = 1.0) -> dict[str, float]:
        """Node id → lease expiry (Unix seconds) of every node whose lease is current (cached *max_age* s)."""
        at, nodes = self._live_cache
        now = time.time()
        if now - at <= max_age:
            return nodes
        try:
            pairs = self._r.zrangebyscore(self._live_key, now * 1000, "+inf", withscores=True)
        except self._redis_errors as exc:
            raise ClusterUnavailable(f"Redis at {self.url} cannot be reached: {exc}") from None
        nodes = {k.decode(): float(v) / 1000 for k, v in pairs}
        self._live_cache = (now, nodes)
        return nodes

    def locate(self, device_ids: Iterable[str]) -> dict[str, tuple[str, int]]:
        """Device id → (node id, cid) for each device connected to a live node; the others are absent."""
        routes = self._read_routes(list(device_ids))
        live = self.live_nodes()
        if any(where[0] not in live and where[0] != self.node_id for where in routes.values()):
            live = self.live_nodes(max_age=0.0)  # a node that joined since the cache was read
        return {d: where for d, where in routes.items() if where[0] in live}

    def online_devices(self) -> list[str]:
        """Every device connected to a live node (reads every route partition: for a durable
        broadcast or an operator's listing, not for a hot path)."""
        live = self.live_nodes(max_age=0.0)
        try:
            pipe = self._r.pipeline(transaction=False)
            keys = [f"{self.prefix}:{{p{k}}}:routes" for k in range(self.partitions)]
            for key in keys:
                pipe.hgetall(key)
            answers = pipe.execute()
        except self._redis_errors as exc:
            raise ClusterUnavailable(f"Redis at {self.url} cannot be reached: {exc}") from None
        out = []
        for routes in answers:
            for device, value in routes.items():
                if value.decode().rpartition("|")[0] in live:
                    out.append(device.decode())
        out.sort()
        return out

    def nodes(self) -> list[NodeInfo]:
        """Every live node with its load figures, least loaded first (the server list's order)."""
        live = self.live_nodes(max_age=0.0)
        try:
            raw = self._r.hgetall(self._info_key)
        except self._redis_errors as exc:
            raise ClusterUnavailable(f"Redis at {self.url} cannot be reached: {exc}") from None
        out = []
        for key, value in raw.items():
            node = key.decode()
            if node not in live:
                continue
            try:
                info = json.loads(value)
            except ValueError:
                continue
            out.append(NodeInfo(node, str(info.get("host", "")), int(info.get("port", 0)),
                                int(info.get("connections", 0)), float(info.get("load", 0.0)), live[node], info))
        out.sort(key=lambda n: (n.load, n.node_id))
        return out

    def _read_routes(self, device_ids: list[str]) -> dict[str, tuple[str, int]]:
        if not device_ids:
            return {}
        by_key: dict[str, list[str]] = {}
        for d in device_ids:
            by_key.setdefault(self.routes_key(d), []).append(d)
        try:
            pipe = self._r.pipeline(transaction=False)
            for key, devices in by_key.items():
                pipe.hmget(key, devices)
            answers = pipe.execute()
        except self._redis_errors as exc:
            raise ClusterUnavailable(f"Redis at {self.url} cannot be reached: {exc}") from None
        out: dict[str, tuple[str, int]] = {}
        for devices, values in zip(by_key.values(), answers):
            for d, v in zip(devices, values):
                if v is None:
                    continue
                node, _, cid = v.decode().rpartition("|")
                if cid.isdigit():
                    out[d] = (node, int(cid))
        return out

    def reclaim(self, routes: Sequence[tuple[str, int]]) -> list[str]:
        """After an outage: claim every ``(device_id, cid)`` here again unless another node holds it now.

        Returns the devices another node took meanwhile (close them here: REPLACED).
        """
        lost: list[str] = []
        pipe = self._r.pipeline(transaction=False)
        for device_id, cid in routes:
            self._in_pipeline(pipe, self._reclaim, self.routes_key(device_id), device_id, self._route_value(cid))
        for (device_id, _cid), old in zip(routes, pipe.execute() if routes else []):
            if old:
                lost.append(device_id)
        return lost

    def _in_pipeline(self, pipe: Any, script: Any, key: str, *args: str) -> None:
        """Queue *script* on *pipe*: EVALSHA on one Redis (the pipeline loads missing scripts first);
        EVAL with the source on a Redis Cluster, whose pipelines do not (a master may not know it)."""
        if self.cluster_mode:
            pipe.execute_command("EVAL", script.script, 1, key, *args)
        else:
            script(keys=[key], args=list(args), client=pipe)

    # -- the sender thread ---------------------------------------------------------

    def _send(self) -> None:
        next_lease = time.monotonic() + self.heartbeat
        renewed = time.monotonic()  # the last lease renewal that reached Redis
        failing = False
        while not self._stop.is_set():
            self._wake.wait(max(0.0, next_lease - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if time.monotonic() >= next_lease:
                    self._renew_lease()
                    now = time.monotonic()
                    if now - renewed > self.lease:
                        # Our lease ran out meanwhile: the other nodes took our devices for
                        # offline and stored without forwarding. Catch every device up.
                        self.stats["lease_lapses"] += 1
                        handler = self._handler
                        if handler is not None:
                            handler.cluster_resync()
                    renewed = now
                    next_lease = now + self.heartbeat
                self._send_queued()
                if failing:
                    failing = False
                    log.info("pushcore cluster: node %s reaches Redis again", self.node_id)
            except Exception as exc:  # a link error, or a bug: log it, keep the batch, go on (never die)
                if not isinstance(exc, self._link_errors):
                    log.exception("pushcore cluster: node %s: sending to the cluster failed", self.node_id)
                self.stats["redis_errors"] += 1
                if not failing:
                    log.warning("pushcore cluster: node %s cannot reach Redis: %s", self.node_id, exc)
                failing = True
                self._stop.wait(0.2)
                next_lease = time.monotonic()

    def _renew_lease(self) -> None:
        handler = self._handler
        load: dict[str, Any] = handler.cluster_load() if handler is not None else {}
        info = dict(load)
        if self.address is not None:
            info.setdefault("host", self.address[0])
            info.setdefault("port", self.address[1])
        info["updated"] = time.time()
        info["draining"] = bool(info.get("draining")) or self.draining
        try:
            pipe = self._r.pipeline(transaction=False)
            pipe.zadd(self._live_key, {self.node_id: (time.time() + self.lease) * 1000})
            pipe.hset(self._info_key, self.node_id, json.dumps(info))
            pipe.execute()
        except self._redis_errors as exc:
            raise ClusterUnavailable(f"Redis at {self.url} cannot be reached: {exc}") from None
        if self._handler is not None:
            self.peers = [n for n in self.nodes() if n.node_id != self.node_id]

    def server_list(self) -> list[dict[str, Any]]:
        """What ``GET /servers`` serves: one entry per address of a live node that is not draining,
        least loaded first (``load``: the mean connection count of the workers on that address)."""
        live = [(n.host, n.port, float(n.load)) for n in self.nodes() if n.port and not n.info.get("draining")]
        return [{"host": h, "port": p, "load": round(load, 1)} for h, p, load in per_address(live)]

    def set_draining(self) -> None:
        """This node is draining: the registry says so at once (server lists and redirects skip it)."""
        self.draining = True
        self._put(("lease",))

    def redirect_targets(self, limit: int = 8) -> list[tuple[str, int, int]]:
        """``(host, port, load)`` of the other live nodes that take devices, least loaded first.

        Not draining, not over ``overload_connections``, and not on this
        node's own address (workers of one ``serve`` share a port).
        """
        out = []
        for n in self.peers:
            if n.info.get("draining") or not n.port:
                continue
            if self.address is not None and (n.host, n.port) == tuple(self.address):
                continue  # a sibling worker on this node's own port: sending a device there sends it back here
            if self.overload_connections is not None and n.connections >= self.overload_connections:
                continue
            out.append((n.host, n.port, n.load))
        return [(h, p, int(min(load, 2**31 - 1))) for h, p, load in per_address(out)][:limit]

    def placement(self, connections: int) -> tuple[float, list[tuple[str, int, int]]]:
        """Where a new device should go when this node holds *connections*: ``(delay, servers)``.

        ``(0, [])``: welcome it here now. ``servers`` not empty: send it there
        (less loaded nodes). Otherwise *delay* seconds before answering: the
        node is overloaded and no other has room.
        """
        limit = self.overload_connections
        if limit is None or connections < limit:
            return 0.0, []
        targets = [t for t in self.redirect_targets() if t[2] < connections]
        if targets:
            return 0.0, targets
        excess = connections / limit - 1.0
        return min(self.overload_delay, self.overload_delay * max(excess, 0.05) * 4), []

    def _send_queued(self) -> None:
        queue = self._queue
        while queue:
            items = [queue.popleft() for _ in range(min(len(queue), _MAX_BATCH))]
            try:
                self._send_items(items)
            except BaseException:
                # Sent again on the next round: every item is safe to repeat (a release is a
                # compare-and-delete, a kick names one cid, a forward is dropped by a connection
                # that already sent that seq). Past _MAX_KEPT waiting, the oldest go: their
                # messages are in the store, and nodes resync after they reconnect to Redis.
                # An ephemeral broadcast is not repeated: it has no seq, a device would show it twice.
                queue.extendleft(reversed([i for i in items if i[0] != "broadcast"]))
                while len(queue) > _MAX_KEPT:
                    queue.popleft()
                    self.stats["dropped_while_down"] += 1
                raise

    def _send_items(self, items: list[tuple[Any, ...]]) -> None:
        releases = [i for i in items if i[0] == "release"]
        if releases:
            pipe = self._r.pipeline(transaction=False)
            for _, device_id, cid in releases:
                self._in_pipeline(pipe, self._release, self.routes_key(device_id), device_id,
                                  self._route_value(cid))
            pipe.execute()
        out: dict[str, list[bytes]] = {}  # channel → messages
        groups = [g for i in items if i[0] == "forward" for g in i[1]]
        if groups:
            self._route_forwards(groups, out)
        wakes = [t for i in items if i[0] == "wake" for t in i[1]]
        if wakes:
            self._route_wakes(wakes, out)
        if any(i[0] == "lease" for i in items):
            self._renew_lease()
        for i in items:
            if i[0] == "kick":
                out.setdefault(self.node_channel(i[1]), []).append(bus.pack_kick(i[2], i[3]))
                self.stats["kicks_sent"] += 1
            elif i[0] == "broadcast":
                out.setdefault(self.broadcast_channel, []).append(bus.pack_broadcast(self.node_id, i[1]))
        if out:
            self._publish(out)

    def _route_wakes(self, targets: list[tuple[str, int]], out: dict[str, list[bytes]]) -> None:
        routes = self._read_routes(list({d for d, _seq in targets}))
        per_node: dict[str, list[tuple[str, int]]] = {}
        for d, seq in targets:
            where = routes.get(d)
            if where is not None and where[0] != self.node_id:
                per_node.setdefault(where[0], []).append((d, seq))
        for node, mine in per_node.items():
            out.setdefault(self.node_channel(node), []).append(bus.pack_wake(mine))

    def _route_forwards(self, groups: list[tuple[StoredMessage, Sequence[tuple[str, int]]]],
                        out: dict[str, list[bytes]]) -> None:
        devices = list({d for _m, targets in groups for d, _seq in targets})
        routes = self._read_routes(devices)
        stats = self.stats
        if not routes:
            stats["forward_offline"] += sum(len(targets) for _m, targets in groups)
            return
        live = self.live_nodes()
        if any(where[0] not in live and where[0] != self.node_id for where in routes.values()):
            live = self.live_nodes(max_age=0.0)  # a node that joined since the cache was read
        per_node: dict[str, list[tuple[StoredMessage, list[tuple[str, int]]]]] = {}
        for message, targets in groups:
            here: dict[str, list[tuple[str, int]]] = {}
            for d, seq in targets:
                where = routes.get(d)
                if where is None:
                    stats["forward_offline"] += 1  # connected nowhere: it gets it from the store
                    continue
                if where[0] == self.node_id:
                    continue  # connected here since: its catch-up read came after this write
                if where[0] not in live:
                    stats["forward_offline"] += 1  # routed to a node whose lease ran out: offline
                    continue
                here.setdefault(where[0], []).append((d, seq))
            for node, mine in here.items():
                per_node.setdefault(node, []).append((message, mine))
                self.stats["forwarded"] += len(mine)
        for node, node_groups in per_node.items():
            out.setdefault(self.node_channel(node), []).append(bus.pack_forward(node_groups))

    def _publish(self, out: dict[str, list[bytes]]) -> None:
        pipe = self._r.pipeline(transaction=False)
        for channel, messages in out.items():
            for data in messages:
                if not self.cluster_mode:
                    pipe.publish(channel, data)
                elif channel != self.broadcast_channel:
                    pipe.execute_command("SPUBLISH", channel, data)  # to the shard of the node's channel
                else:
                    self._r.publish(channel, data)  # classic PUBLISH reaches every shard (not pipelined there)
                self.stats["forward_publishes"] += 1
        pipe.execute()

    # -- the listener thread -----------------------------------------------------------

    def _subscribe(self) -> Any:
        ps = self._r.pubsub(ignore_subscribe_messages=True)
        if self.cluster_mode:
            ps.ssubscribe(self.channel)
            ps.subscribe(self.broadcast_channel)
        else:
            ps.subscribe(self.channel, self.broadcast_channel)
        return ps

    def _listen(self) -> None:
        ps = None
        backoff = 0.1
        resync = False
        while not self._stop.is_set():
            try:
                if ps is None:
                    ps = self._subscribe()
                    # The subscription is live once its confirmation comes back: read it.
                    ps.get_message(timeout=0.5, ignore_subscribe_messages=False)
                    self._up.set()
                    backoff = 0.1
                    if resync:
                        resync = False
                        self.stats["resyncs"] += 1
                        handler = self._handler
                        if handler is not None:
                            handler.cluster_resync()
                self._read_batch(ps)
            except Exception as exc:  # the connection dropped: subscribe again, then resync
                if self._stop.is_set():
                    break
                if not isinstance(exc, self._redis_errors):
                    log.exception("pushcore cluster: the bus listener failed; subscribing again")
                else:
                    log.warning("pushcore cluster: node %s lost its bus subscription: %s", self.node_id, exc)
                self.stats["redis_errors"] += 1
                resync = True
                if ps is not None:
                    try:
                        ps.close()
                    except Exception:
                        pass
                    ps = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
        if ps is not None:
            try:
                ps.close()
            except Exception:
                pass

    def _read_batch(self, ps: Any) -> None:
        get = ps.get_sharded_message if self.cluster_mode else ps.get_message
        message = get(timeout=0.5)
        if self.cluster_mode and message is None:
            message = ps.get_message(timeout=0.0)
        batch: list[bus.BusMessage] = []
        while message is not None and len(batch) < _MAX_BATCH:
            data = message.get("data")
            if isinstance(data, bytes):
                try:
                    batch.append(bus.unpack(data))
                except bus.BusError as exc:
                    self.stats["bad_messages"] += 1
                    log.warning("pushcore cluster: a bus message was not understood: %s", exc)
            message = get(timeout=0.0)
            if self.cluster_mode and message is None:
                message = ps.get_message(timeout=0.0)
        if batch:
            self.stats["received"] += len(batch)
            handler = self._handler
            if handler is not None:
                handler.cluster_messages(batch)


def per_address(entries: Iterable[tuple[str, int, float]]) -> list[tuple[str, int, float]]:
    """One entry per ``(host, port)``, least loaded first: the workers of one ``serve`` share a
    port, and a device cannot pick among them; their mean load is the address's."""
    loads: dict[tuple[str, int], list[float]] = {}
    for host, port, load in entries:
        loads.setdefault((host, port), []).append(load)
    merged = [(host, port, sum(v) / len(v)) for (host, port), v in loads.items()]
    merged.sort(key=lambda e: e[2])
    return merged

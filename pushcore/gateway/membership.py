"""ClusterMembership: what a :class:`pushcore.Server` does as one node of a cluster.

The server is given a *cluster link* (:class:`pushcore.cluster.ClusterLink`,
duck-typed here as :class:`ClusterPort` so the gateway never imports the
cluster room above it). This mixin wires the two together:

* a HELLO's store step claims the device's route (so a push stored
  meanwhile is either in the device's catch-up read or forwarded here), and
  a connection that closes releases it;
* messages stored for devices that are not connected here are handed to
  the link, which forwards them to the node that holds each device;
* what arrives from other nodes is run on the loop in one call per batch:
  forwarded messages are offered to the devices here, a *kick* closes an
  older connection of a device that reconnected elsewhere (GOAWAY
  ``REPLACED``, as on one node), an ephemeral broadcast goes to every
  device here;
* after the link lost Redis and got it back, every device here is claimed
  again (one that another node took meanwhile is closed ``REPLACED``) and
  caught up from the store, because forwards may have been lost meanwhile.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..codec import frames as _frames
from ..errors import Reason
from ..store import StoredMessage

if TYPE_CHECKING:
    from .._loop import Loop
    from ..store.pipeline import StorePipeline
    from .delivery import Delivery, MessageIds

__all__ = ["ClusterMembership", "ClusterPort"]

log = logging.getLogger("pushcore.server")


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class ClusterPort(Protocol):
    """The link's side, as the server uses it (:class:`pushcore.cluster.ClusterLink` implements it)."""

    node_id: str
    address: tuple[str, int] | None
    heartbeat: float
    overload_connections: int | None
    node_number: int | None

    def placement(self, connections: int) -> tuple[float, list[tuple[str, int, int]]]: ...
    def redirect_targets(self, limit: int = ...) -> list[tuple[str, int, int]]: ...
    def set_draining(self) -> None: ...

    def start(self, handler: Any, timeout: float = ...) -> None: ...
    def close(self, *, leave: bool = ...) -> None: ...
    def claim(self, device_id: str, cid: int) -> None: ...
    def release(self, device_id: str, cid: int) -> None: ...
    def forward(self, groups: Sequence[tuple[StoredMessage, Sequence[tuple[str, int]]]]) -> None: ...
    def broadcast(self, message: StoredMessage) -> None: ...
    def wake(self, targets: Sequence[tuple[str, int]]) -> None: ...
    def reclaim(self, routes: Sequence[tuple[str, int]]) -> list[str]: ...
    def locate(self, device_ids: Iterable[str]) -> dict[str, tuple[str, int]]: ...
    def nodes(self) -> list[Any]: ...
    def online_devices(self) -> list[str]: ...
    def server_list(self) -> list[dict[str, Any]]: ...


class ClusterMembership:
    """Mixin of :class:`pushcore.Server`: the node's half of the cluster protocol (see the module)."""

    cluster: ClusterPort | None
    stats: dict[str, int]

    # provided by the Server
    def _running_loop(self) -> Loop: ...  # type: ignore[empty-body]
    def _live_delivery(self) -> Delivery: ...  # type: ignore[empty-body]
    _stopped: bool
    _draining: bool
    _delivery: Delivery | None
    pipeline: StorePipeline
    _message_ids: MessageIds
    _node_id_given: int | None
    _load_snapshot: dict[str, Any] = {}
    _cpu_mark: tuple[float, float] = (0.0, 0.0)

    def _join_cluster(self) -> None:
        """At listen: route the delivery's remote messages to the link, start it (it waits to subscribe)."""
        cluster = self.cluster
        if cluster is None:
            return
        self._live_delivery().remote = cluster.forward
        self._live_delivery().remote_wake = cluster.wake
        self._cpu_mark = (time.monotonic(), _cpu_seconds())
        self._load_snapshot = self._measure_load()
        cluster.start(self)
        if self._node_id_given is None and cluster.node_number is not None:
            self._message_ids.set_node(cluster.node_number)  # distinct among the nodes of the cluster
        self._running_loop().call_later(cluster.heartbeat / 2, self._cluster_tick)

    def _cluster_tick(self) -> None:
        """On the loop, twice per lease renewal: measure the load the link publishes."""
        cluster = self.cluster
        if cluster is None or self._stopped:
            return
        self._load_snapshot = self._measure_load()
        self._running_loop().call_later(cluster.heartbeat / 2, self._cluster_tick)

    def _measure_load(self) -> dict[str, Any]:
        """This node's figures (on the loop): connections, loop lag, queued bytes, CPU of this process.

        ``load`` (what server lists sort by) is the connection count: it is
        what a node's memory and heartbeat work grow with. The others are
        published beside it for operators.
        """
        delivery = self._delivery
        connections = 0 if delivery is None else len(delivery)
        stats = self._running_loop().stats()
        now, cpu = time.monotonic(), _cpu_seconds()
        then, cpu_then = self._cpu_mark
        self._cpu_mark = (now, cpu)
        lag = stats.get("lag", {})
        return {"connections": connections, "load": connections,
                "loop_lag_p99_ms": round(float(lag.get("recent_p99", 0.0)) * 1000, 3),
                "outbound_bytes": int(stats.get("outbound_bytes", 0)),
                "store_queue": self.pipeline.pending(),
                "cpu": round((cpu - cpu_then) / (now - then), 3) if now > then else 0.0,
                "draining": self._draining}

    def _placement(self, cid: int) -> float | None:
        """Where a new device goes (cluster placement): None = here now; >0 = answer it that late.

        Sends the device on to less loaded nodes itself (GOAWAY ``OVERLOADED``
        with their list; :class:`pushcore.Client` connects there) and returns
        0.0 then.
        """
        cluster = self.cluster
        if cluster is None or cluster.overload_connections is None:
            return None
        delay, servers = cluster.placement(len(self._live_delivery()))
        if servers:
            self.stats["redirected"] += 1
            loop = self._running_loop()
            loop.send(cid, _frames.Goaway(Reason.OVERLOADED, "this gateway is busy: use these", tuple(servers)
                                          ).encode())
            loop.close_conn(cid, Reason.OVERLOADED)
            return 0.0
        if delay > 0:
            self.stats["delayed"] += 1
            return delay
        return None

    def _leave_cluster(self) -> None:
        cluster = self.cluster
        if cluster is not None:
            cluster.close()

    # -- the cluster's view (any thread; blocking: a Redis round trip) -------------

    def where(self, device_id: str) -> str | None:
        """The node holding *device_id* now: this node's id, another's, or None (offline everywhere).

        On one node (no cluster) it is ``"local"`` when connected here.
        """
        cluster = self.cluster
        if cluster is None:
            delivery = self._delivery
            return "local" if delivery is not None and device_id in delivery.routes else None
        found = cluster.locate([device_id]).get(device_id)
        return None if found is None else found[0]

    def server_list(self) -> list[dict[str, Any]]:
        """The gateways devices may connect to, least loaded first (what ``GET /servers`` serves).

        In a cluster: every live node that is not draining, from the load
        registry. On one node: this one.
        """
        cluster = self.cluster
        if cluster is None:
            address = getattr(self, "_address", None)
            delivery = self._delivery
            if address is None or self._draining:
                return []
            return [{"host": address[0], "port": address[1], "load": 0 if delivery is None else len(delivery)}]
        return cluster.server_list()

    # -- the link's callbacks (link threads) --------------------------------------

    def cluster_messages(self, messages: list[Any]) -> None:
        """From the link's listener thread: run the batch on the loop."""
        if not self._stopped:
            try:
                self._running_loop().call_soon_threadsafe(self._on_cluster_messages, messages)
            except RuntimeError:
                pass  # the loop closed under us: the node is stopping

    def cluster_resync(self) -> None:
        if not self._stopped:
            try:
                self._running_loop().call_soon_threadsafe(self._cluster_resync)
            except RuntimeError:
                pass

    def cluster_load(self) -> dict[str, Any]:
        """This node's figures for the load registry (the loop's last measurement)."""
        return dict(self._load_snapshot)

    # -- on the loop ---------------------------------------------------------------

    def _on_cluster_messages(self, messages: list[Any]) -> None:
        """A batch from the bus (pushcore.cluster.bus messages, told apart by their ``kind``)."""
        if self._stopped:
            return
        delivery = self._live_delivery()
        loop = self._running_loop()
        for message in messages:
            kind = message.kind
            if kind == "forward":
                delivery.deliver_forwarded(message.groups)
            elif kind == "wake":
                delivery.wake_replayed(message.targets, here_only=True)
            elif kind == "kick":
                if delivery.routes.get(message.device_id) == message.cid:
                    self.stats["replaced"] += 1
                    loop.send(message.cid, _frames.Goaway(Reason.REPLACED, "a newer connection took over",
                                                          ()).encode())
                    loop.close_conn(message.cid, Reason.REPLACED)
            elif kind == "broadcast":
                cluster = self.cluster
                if cluster is not None and message.origin != cluster.node_id:
                    m = message.message
                    delivery.broadcast_ephemeral(m.payload, priority=m.priority, expiry=m.expiry,
                                                 collapse_key=m.collapse_key, topic=m.topic,
                                                 message_id=m.message_id)

    def _cluster_resync(self) -> None:
        """On the loop, after Redis came back: claim every device here again, then catch each up."""
        cluster = self.cluster
        if cluster is None or self._stopped:
            return
        delivery = self._live_delivery()
        routes = list(delivery.routes.items())
        if not routes:
            return

        def done(lost: list[str] | None, error: BaseException | None) -> None:
            if error is not None:  # Redis went again: the next reconnect resyncs
                log.warning("pushcore server: re-claiming %d routes failed: %s", len(routes), error)
            elif not self._stopped:
                self._resynced(routes, set(lost or ()))

        # Redis round trips stay off the loop: the store pipeline's writer makes them.
        self.pipeline.submit(lambda _store: cluster.reclaim(routes), done=done, urgent=True)

    def _resynced(self, routes: list[tuple[str, int]], lost: set[str]) -> None:
        delivery = self._live_delivery()
        loop = self._running_loop()
        for device_id, cid in routes:
            if device_id in lost:
                loop.send(cid, _frames.Goaway(Reason.REPLACED, "a newer connection took over", ()).encode())
                loop.close_conn(cid, Reason.REPLACED)
            elif delivery.routes.get(device_id) == cid:
                delivery.resume(cid)  # forwards may have been lost while Redis was away

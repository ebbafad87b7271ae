"""pushcore.Server: a push gateway on the C-level connection loop.

The server accepts long connections, authenticates devices (HELLO →
WELCOME), keeps the route table device id → connection, and delivers
stored, seq-numbered messages (:mod:`pushcore.gateway.delivery`). The loop
(``pushcore._loop.Loop``) does the per-connection work in C: reading and
splitting frames, answering PING with PONG, the auth and idle timeouts,
write coalescing. Python sees one batch of frames per loop turn.

Threads. Connections run on the loop's thread. :meth:`Server.run` blocks
the calling thread; :meth:`Server.start` runs it in a background thread.
Store work runs on the store pipeline's writer thread
(:mod:`pushcore.store.pipeline`): the loop submits it without waiting and
goes on in its completion, so the loop never waits for the store; pushes
from the application are submitted there directly (many threads share one
commit) and wait only for their own write. The other methods marked
*thread-safe* may be called from any thread: off the loop thread they hand
the work to the loop (``call_soon_threadsafe``) and wait for its result.
Hooks are called on the loop thread and must not block for long: every
connection waits while they run.

See docs/SERVER.md for a user guide.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar, overload

from ..codec import frames as _frames
from ..errors import MessageTooLarge, Reason
from ..loop.dispatch import LoopDispatch, dispatch_for
from ..loop.handover import LoopTimeout, LoopUnavailable, call_on_loop, fail_pending, submit_to_loop
from ..store import PRIORITY_HIGH, PRIORITY_LOW, Store, StoreError, StoreUnavailable, open_store
from ..store.base import MAX_SEQ, NewMessage, StoredMessage, check_device_id, check_message, check_topic
from ..store.pipeline import PipelineClosed, StorePipeline
from ..tokens import AuthError, TokenSigner
from ..wire import MAX_DEVICE_ID_BYTES, topic_problem
from .aio import AsyncSends
from .awaiting import DEFAULT_HOOK_TIMEOUT, DEFAULT_MAX_PENDING_HOOKS, HookTimeout, HookWaiter, is_pending
from .delivery import (
    DEFAULT_INLINE_MAX,
    DEFAULT_PAGE_BYTES,
    DEFAULT_PAGE_MAX,
    MAX_WAITING_FETCHES,
    Delivery,
    MessageIds,
)
from .membership import ClusterMembership, ClusterPort
from .purge import DEFAULT_PURGE_BATCH, DEFAULT_PURGE_INTERVAL, Purger, check_purge_options
from .results import BatchResult, FanOut

if TYPE_CHECKING:
    from .._frame import Ack, Fetch, Frame, Hello, Upstream
    from .._loop import Loop

__all__ = ["Server", "DEFAULT_STORE_PATH", "parse_priority"]

log = logging.getLogger("pushcore.gateway.server")

DEFAULT_STORE_PATH = "pushcore.db"
SUPPORTED_VERSIONS = (1,)

_HELLO = _frames.HELLO
_ACK = _frames.ACK
_FETCH = _frames.FETCH
_SUBSCRIBE = _frames.SUBSCRIBE
_UNSUBSCRIBE = _frames.UNSUBSCRIBE
_UPSTREAM = _frames.UPSTREAM
_ERROR = _frames.ERROR
_PING = _frames.PING
_PONG = _frames.PONG

_T = TypeVar("_T")
#: ``(host, port, load)`` in REDIRECT and GOAWAY
_Server: TypeAlias = tuple[str, int, int]
#: one :meth:`Server.push_batch` item: ``(device_id, payload)`` or ``(device_id, payload, options)``
_BatchItem: TypeAlias = tuple[str, bytes] | tuple[str, bytes, dict[str, Any]]
#: a checked batch item: ``(device_id, payload, priority, expiry, collapse_key, topic, message_id|None,
#: idempotency_key|None)``
_CheckedItem: TypeAlias = tuple[str, bytes, int, int, str, str, int | None, str | None]


def parse_priority(priority: int | str) -> int:
    """``PRIORITY_HIGH``/``PRIORITY_LOW`` from an int (1/0) or ``"high"``/``"low"``."""
    if isinstance(priority, str):
        try:
            return {"high": PRIORITY_HIGH, "low": PRIORITY_LOW}[priority.lower()]
        except KeyError:
            raise ValueError(f"priority must be 'high' or 'low', got {priority!r}") from None
    if priority not in (PRIORITY_LOW, PRIORITY_HIGH) or isinstance(priority, bool):
        raise ValueError(
            f"priority must be pushcore.PRIORITY_HIGH (1) or PRIORITY_LOW (0), got {priority!r}"
        )
    return int(priority)


def _expiry_from_ttl(ttl: float | None) -> int:
    """PUSH expiry (Unix seconds, 0 = never) for a time-to-live of *ttl* seconds."""
    if ttl is None:
        return 0
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not math.isfinite(ttl):
        raise ValueError(f"ttl must be a finite number of seconds, got {ttl!r}")
    if ttl <= 0:
        raise ValueError(f"ttl must be > 0 seconds (None = never expires), got {ttl!r}")
    return math.ceil(time.time() + ttl)


_PUSH_OPTIONS = frozenset({"priority", "ttl", "collapse_key", "topic", "message_id", "idempotency_key"})


def _checked_message(index: int, item: object) -> _CheckedItem:
    """``(device_id, payload, priority, expiry, collapse_key, topic, message_id|None)`` of one batch item.

    Checks everything the store would (so a bad item is refused before any
    is stored) and names the item's index in the error.
    """
    try:
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise TypeError(
                f"must be a (device_id, payload) or (device_id, payload, options) tuple, not {item!r:.80}"
            )
        device_id, payload = item[0], item[1]
        options = item[2] if len(item) == 3 else {}
        if not isinstance(options, dict):
            raise TypeError(f"options must be a dict, not {type(options).__name__}")
        unknown = set(options) - _PUSH_OPTIONS
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)}; allowed: {sorted(_PUSH_OPTIONS)}")
        device_id = check_device_id(device_id)
        priority = parse_priority(options.get("priority", PRIORITY_HIGH))
        expiry = _expiry_from_ttl(options.get("ttl"))
        message_id = options.get("message_id")
        key = options.get("idempotency_key")
        fields = check_message(
            0 if message_id is None else message_id, payload, priority, expiry,
            options.get("collapse_key", ""), options.get("topic", ""), key,
        )
    except MessageTooLarge as exc:
        raise MessageTooLarge(exc.field, exc.size, exc.limit, where=f"messages[{index}]") from None
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"messages[{index}]: {exc}") from None
    return (device_id, fields.payload, priority, expiry, fields.collapse_key, fields.topic, message_id,
            fields.idempotency_key or None)


def _servers_tuple(servers: Iterable[str | Iterable[Any]]) -> tuple[_Server, ...]:
    """``((host, port, load), ...)`` from tuples or ``"host:port"`` strings."""
    out: list[_Server] = []
    for entry in servers:
        if isinstance(entry, str):
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"server {entry!r} is not 'host:port'")
            out.append((host.strip("[]"), int(port), len(out)))
        else:
            entry = tuple(entry)
            if len(entry) == 2:
                entry = (entry[0], entry[1], len(out))
            host, port, load = entry
            out.append((str(host), int(port), int(load)))
    return tuple(out)


#: How far ahead of now Server.revoke(before=) may be (clock skew between machines).
MAX_REVOKE_AHEAD = 300.0
#: Seconds an application thread waits for its write to be durable (push, publish, subscribe, ...).
_WRITE_TIMEOUT = 30.0
#: Most topics one device may hold through SUBSCRIBE frames (Server(max_subscriptions=)).
DEFAULT_MAX_SUBSCRIPTIONS = 1000
#: Highest HELLO last_seq that may raise a lost counter: 2**53 leaves the
#: counter 2**63 - 2**53 more seqs, so a claim can never make pushes fail.
MAX_CLAIMED_SEQ = 2**53


def _claim_problem(last_seq: int, counter: int) -> str | None:
    """Why HELLO's *last_seq* may not be taken against the device's *counter*, or None.

    docs/PROTOCOL.md "last_seq": a claim up to the counter is an ACK. A claim
    above it can only be true when the store lost the counter (the memory
    store after a restart, a new or deleted database, a record dropped by
    the background purge, whose seq floor keeps new seqs above the claim
    anyway: :mod:`pushcore.gateway.purge`): the store then has no
    counter for the device (0), and attach() raises it to the claim so new
    messages get seqs the device has not seen. Anything else is refused: a
    counter above 0 is the store's truth, and a claim past
    :data:`MAX_CLAIMED_SEQ` would leave the counter too little room.
    """
    if last_seq <= counter:
        return None
    if counter > 0:
        return (
            f"last_seq {last_seq} is ahead of this device's last stored seq {counter}; "
            "a device may claim only seqs it was sent (reset the device's last_seq)"
        )
    if last_seq > MAX_CLAIMED_SEQ:
        return f"last_seq {last_seq} is over {MAX_CLAIMED_SEQ} (2**53), the most a device may claim"
    return None



_A = TypeVar("_A")
_B = TypeVar("_B")


def _chain(source: concurrent.futures.Future[_A], out: concurrent.futures.Future[_B],
           convert: Callable[[_A], _B]) -> None:
    """Complete *out* with ``convert(result)`` (or the error) once *source* completes."""
    def copy(done: concurrent.futures.Future[_A]) -> None:
        error = done.exception()
        if error is not None:
            out.set_exception(error)
            return
        try:
            out.set_result(convert(done.result()))
        except BaseException as exc:  # the conversion's own failure goes to the caller too
            out.set_exception(exc)

    source.add_done_callback(copy)


def _mapped(source: concurrent.futures.Future[_A], convert: Callable[[_A], _B]) -> concurrent.futures.Future[_B]:
    """A future of ``convert(source's result)``."""
    out: concurrent.futures.Future[_B] = concurrent.futures.Future()
    _chain(source, out, convert)
    return out


class Server(AsyncSends, ClusterMembership):
    """A push gateway: authenticated long connections, routing, offline store, delivery.

    Parameters
    ----------
    host, port
        where to listen (``port=0``: any free port, see :attr:`address`).
    secret
        bytes for the default ``authenticate``: HMAC-SHA256 tokens of
        :mod:`pushcore.tokens` (at least 16 bytes). Give *secret* or
        *authenticate*.
    authenticate
        ``authenticate(device_id, token, metadata) -> bool``: return True to
        accept the device; return False or raise
        :class:`pushcore.tokens.AuthError` (``AUTH_FAILED`` or
        ``TOKEN_EXPIRED``) to refuse it. *metadata* is a dict: ``peer``
        (``(host, port)`` of the device), ``versions`` (the protocol versions
        it speaks), ``last_seq`` and ``heartbeat`` (its HELLO fields). Any
        other exception refuses with ``INTERNAL_ERROR`` and is logged.
        It may instead return an awaitable (an ``async def`` hook) or a
        ``concurrent.futures.Future`` of that answer: that connection waits,
        every other one goes on (:mod:`pushcore.gateway.awaiting`).
    on_connect(device_id, metadata), on_disconnect(device_id, reason)
        a device was welcomed / its connection closed (*reason* is a
        :class:`pushcore.Reason`: ``PEER_CLOSED``, ``IDLE_TIMEOUT``,
        ``REPLACED``, ``SHUTTING_DOWN``, …).
    on_upstream(device_id, payload, topic)
        an UPSTREAM frame. The device gets its UPSTREAM_ACK once the hook
        returns (or its awaitable completes); if it raises, no ack is sent
        (the device may retry).
    authorize_subscribe(device_id, topic, metadata)
        called for each topic of a device's SUBSCRIBE: return True to let it
        subscribe. Default (None): every device may subscribe to every valid
        topic name, so give this hook whenever a topic is private to some
        devices (e.g. ``lambda d, t, m: not t.startswith("user/") or t ==
        f"user/{d}"``). *metadata* is ``{"peer": (host, port)}``. A topic it
        refuses (False, or an exception, which is logged) is not subscribed
        and the connection stays open; SUBSCRIBE has no answer (PROTOCOL.md).
        It may return an awaitable or a Future of its answer, as
        *authenticate*; the connection's later SUBSCRIBE and UNSUBSCRIBE
        frames wait for it, so they still apply in the order sent.
    cluster
        a :class:`pushcore.cluster.ClusterLink` (default None: one node):
        this server is then one node of a cluster sharing one Redis with a
        :class:`pushcore.store.redis.RedisStore` as *store*. Pushes for
        devices connected to other nodes are forwarded to them, a device
        connecting here replaces its connection on another node, broadcasts
        reach every node, and the node publishes its load (docs/CLUSTER.md).
    hook_loop, max_pending_hooks, hook_timeout
        where awaitable hook results run: an asyncio loop the application
        runs (default None: one the server starts on one background thread
        when a hook first returns an awaitable); how many may be pending at
        once (default 1,024: past it a HELLO is refused ``OVERLOADED`` and a
        device whose SUBSCRIBE or UPSTREAM needs a hook is closed
        ``OVERLOADED``, to come back later); and the seconds each may take
        (default 10: past it the frame is refused ``OVERLOADED`` and a
        coroutine is cancelled).
    max_subscriptions
        most topics one device may hold through SUBSCRIBE frames (default
        1,000; topics past it are ignored and counted in ``stats``).
        :meth:`subscribe` from the application is not limited.
    store
        a :class:`pushcore.store.Store`, or what :func:`pushcore.store.open_store`
        takes: a SQLite file path (default ``"pushcore.db"``) or ``"memory:"``.
        A store the server opened is closed when it stops.
    heartbeat
        ``(min, max)`` seconds granted in WELCOME. A device silent for
        ``max + idle_grace`` seconds is closed (``IDLE_TIMEOUT``).
    auth_timeout
        seconds a new connection has to send HELLO (else ``AUTH_TIMEOUT``).
    preauth_frame_max, preauth_budget, outbound_budget, connect_rate, connect_burst, source_connect_rate, source_connect_burst
        the loop's abuse limits (``Loop.set_limits``, docs/SECURITY.md): the
        largest HELLO (default 2 KiB), the bytes all unauthenticated
        connections may buffer (16 MiB), the bytes queued for all devices
        (256 MiB: past it the largest queues are closed ``SLOW_CONSUMER``),
        accepted connections a second loop-wide (20,000) and per source
        address (200; loopback not counted). ``None`` keeps the loop's value.
    inline_max, page_max, page_bytes
        backlog up to *inline_max* messages is pushed right after WELCOME;
        a larger one is announced with NOTIFY and fetched in pages of at most
        *page_max* messages. Both the inline backlog and each page hold at
        most *page_bytes* of encoded frames (default 1 MiB, always at least
        one message; keep it well under the loop's 4 MiB slow-consumer cap):
        the next page goes when the device FETCHes again.
    purge_interval, purge_batch
        the background purge on the loop (:mod:`pushcore.gateway.purge`):
        every *purge_interval* seconds (default 60) it deletes expired
        messages and then the records of devices holding nothing, at most
        *purge_batch* (500) rows per step, with the next step a few
        milliseconds later while steps find full batches, so the loop never
        stops for long.
    loop
        a ``pushcore._loop.Loop`` to run on (default: a new one). Clients may
        share it (tests, simulators); another Server may not.
    """

    #: Seconds between the probes of a store that cannot write (``Store.probe``): the
    #: state heals, and the acks kept meanwhile are made, without waiting for traffic.
    store_probe_interval: float = 2.0
    #: Seconds between the checks, from a watcher thread, that a writable store can
    #: still write (``Store.check_writable``): an idle gateway's /healthz and /readyz
    #: then see an outage without waiting for the next push.
    store_watch_interval: float = 5.0

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        secret: bytes | None = None,
        authenticate: Callable[[str, bytes, dict[str, Any]], bool] | None = None,
        on_connect: Callable[[str, dict[str, Any]], object] | None = None,
        on_disconnect: Callable[[str, Reason], object] | None = None,
        on_upstream: Callable[[str, bytes, str], object] | None = None,
        authorize_subscribe: Callable[[str, str, dict[str, Any]], bool] | None = None,
        max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS,
        store: Store | str | os.PathLike[str] = DEFAULT_STORE_PATH,
        heartbeat: tuple[float, float] = (30, 600),
        idle_grace: float = 30.0,
        auth_timeout: float = 10.0,
        preauth_frame_max: int | None = None,
        preauth_budget: int | None = None,
        outbound_budget: int | None = None,
        connect_rate: float | None = None,
        connect_burst: float | None = None,
        source_connect_rate: float | None = None,
        source_connect_burst: float | None = None,
        inline_max: int = DEFAULT_INLINE_MAX,
        page_max: int = DEFAULT_PAGE_MAX,
        page_bytes: int = DEFAULT_PAGE_BYTES,
        purge_interval: float = DEFAULT_PURGE_INTERVAL,
        purge_batch: int = DEFAULT_PURGE_BATCH,
        versions: Iterable[int] = SUPPORTED_VERSIONS,
        reuse_port: bool = False,
        backlog: int = 1024,
        loop: Loop | None = None,
        node_id: int | None = None,
        hook_loop: asyncio.AbstractEventLoop | None = None,
        max_pending_hooks: int = DEFAULT_MAX_PENDING_HOOKS,
        hook_timeout: float = DEFAULT_HOOK_TIMEOUT,
        cluster: ClusterPort | None = None,
    ) -> None:
        if authenticate is None:
            if secret is None:
                raise ValueError(
                    "give secret= (bytes, for the default HMAC tokens of pushcore.tokens) "
                    "or authenticate= (your own check)"
                )
            self._signer = TokenSigner(secret)
            authenticate = self._verify_token
        heartbeat_min, heartbeat_max = heartbeat
        if not 0 <= heartbeat_min <= heartbeat_max or heartbeat_max <= 0:
            raise ValueError(f"heartbeat must be (min, max) with 0 <= min <= max, max > 0; got {heartbeat!r}")
        if idle_grace < 0 or auth_timeout <= 0:
            raise ValueError("idle_grace must be >= 0 and auth_timeout > 0")
        self._host = host
        self._port = port
        self._authenticate = authenticate
        self._custom_auth = authenticate != getattr(self, "_verify_token", None)
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.on_upstream = on_upstream
        self.authorize_subscribe = authorize_subscribe
        if not isinstance(max_subscriptions, int) or max_subscriptions < 0:
            raise ValueError(f"max_subscriptions must be an int >= 0, got {max_subscriptions!r}")
        self._max_subscriptions = max_subscriptions
        self._heartbeat_min = heartbeat_min
        self._heartbeat_max = heartbeat_max
        # WELCOME carries whole seconds; the idle timeout itself may be finer (tests).
        self._welcome_min = int(math.floor(heartbeat_min))
        self._welcome_max = max(1, int(math.ceil(heartbeat_max)))
        self._idle_timeout = heartbeat_max + idle_grace
        self._auth_timeout = auth_timeout
        limits: dict[str, Any] = {
            "preauth_frame_max": preauth_frame_max, "preauth_budget": preauth_budget,
            "outbound_budget": outbound_budget, "connect_rate": connect_rate,
            "connect_burst": connect_burst, "source_connect_rate": source_connect_rate,
            "source_connect_burst": source_connect_burst,
        }
        self._limits = {key: value for key, value in limits.items() if value is not None}
        self._versions = frozenset(versions)
        if not self._versions:
            raise ValueError("versions must name at least one protocol version")
        self._reuse_port = reuse_port
        self._backlog = backlog
        if isinstance(store, Store):
            self.store = store
            self._owns_store = False
        else:
            self.store = open_store(store)
            self._owns_store = True
        self._inline_max = inline_max
        self._page_max = page_max
        if not isinstance(page_bytes, int) or isinstance(page_bytes, bool) or page_bytes < 1:
            raise ValueError(f"page_bytes must be an int >= 1, got {page_bytes!r}")
        self._page_bytes = page_bytes
        check_purge_options(purge_interval, purge_batch)
        self._purge = (float(purge_interval), purge_batch)
        self._purger: Purger | None = None
        self._watcher: threading.Thread | None = None
        self._unwatched = threading.Event()  # set: the store watcher stops
        #: the store pipeline: one writer thread for the store, group commits (pushcore.store.pipeline)
        self.pipeline = StorePipeline(self.store, name="pushcore-store-writer")
        self._hello_pending: set[int] = set()  # cids whose HELLO waits for its hook or its claim check
        # hook results to wait for (authenticate, authorize_subscribe, on_upstream returning awaitables)
        self._hooks = HookWaiter(self._call_soon, max_pending=max_pending_hooks, timeout=hook_timeout,
                                 hook_loop=hook_loop)
        # cid -> SUBSCRIBE/UNSUBSCRIBE frames waiting behind a SUBSCRIBE whose hook is pending
        self._topic_frames: dict[int, deque[tuple[bool, tuple[str, ...]]]] = {}
        self._message_ids = MessageIds(node_id)
        self._node_id_given = node_id  # None: a cluster hands this node its number at listen
        #: the cluster link (pushcore.cluster.ClusterLink) when this server is one node of several
        self.cluster = cluster
        self._loop = loop
        self._owns_loop = loop is None
        self._delivery: Delivery | None = None
        self._dispatch: LoopDispatch | None = None
        self._listener: int | None = None
        self._address: tuple[str, int] | None = None
        self._thread_id: int | None = None  # the loop thread, while running
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._done = threading.Event()
        self._start_error: BaseException | None = None
        self._draining = False
        self._stopped = False
        self._previous_wakeup_fd = -1  # signal.set_wakeup_fd before run() installed the loop's
        self._drain_deadline: float | None = None
        self.stats = {
            "hello": 0, "welcome": 0, "refused": 0, "replaced": 0, "upstream": 0,
            "subscribe_refused": 0, "subscribe_over_cap": 0, "store_unavailable": 0,
            "hooks_overloaded": 0, "hook_timeouts": 0, "redirected": 0, "delayed": 0,
        }

    # -- public properties ----------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the server listens on (after :meth:`start` / :meth:`listen`)."""
        if self._address is None:
            raise RuntimeError("the server is not listening yet: call start() or listen() first")
        return self._address

    @property
    def loop(self) -> Loop:
        """The ``pushcore._loop.Loop`` the server runs on."""
        return self._ensure_loop()

    @property
    def stopped(self) -> bool:
        """True once the server has stopped (after a drain completed). Thread-safe."""
        return self._stopped

    @property
    def listening(self) -> bool:
        """True while the server accepts connections (listening, not draining or stopped). Thread-safe."""
        return self._listener is not None and not self._draining and not self._stopped

    @property
    def draining(self) -> bool:
        """True from the start of a :meth:`drain` (or :meth:`stop`) until the server has stopped. Thread-safe."""
        return self._draining and not self._stopped

    def connected(self, device_id: str) -> bool:
        """True when *device_id* has an authenticated connection here. Thread-safe."""
        return self._delivery is not None and device_id in self._delivery.routes

    def device_count(self) -> int:
        """Number of authenticated connections. Thread-safe."""
        return 0 if self._delivery is None else len(self._delivery)

    def devices(self) -> list[str]:
        """Ids of the connected devices. Thread-safe."""
        return self.call(lambda: list(self._delivery.routes) if self._delivery else [])

    # -- lifecycle ------------------------------------------------------------

    def _ensure_loop(self) -> Loop:
        if self._loop is None:
            from ..loop import new_loop

            self._loop = new_loop()
        return self._loop

    def listen(self) -> tuple[str, int]:
        """Open the listening socket (done by :meth:`run` / :meth:`start` if needed)."""
        if self._address is not None:
            return self._address
        loop = self._ensure_loop()
        loop.set_limits(**self._limits)
        self._dispatch = dispatch_for(loop)
        self._dispatch.set_server(self)
        self.pipeline.schedule = loop.call_soon_threadsafe  # completions: one wake-up per group
        self._delivery = Delivery(
            self.store,
            loop,
            inline_max=self._inline_max,
            page_max=self._page_max,
            page_bytes=self._page_bytes,
            message_ids=self._message_ids,
            pipeline=self.pipeline,
        )
        self._delivery.on_read_error = self._read_failed
        self._purger = Purger(self.store, loop, interval=self._purge[0], batch=self._purge[1],
                              pipeline=self.pipeline)
        self._purger.start()
        self._watcher = threading.Thread(target=self._watch_store, name="pushcore-store-watch", daemon=True)
        self._watcher.start()
        self._listener = loop.listen(
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_port=self._reuse_port,
            auth_timeout=self._auth_timeout,
        )
        host, port = loop.listen_address(self._listener)
        self._address = (host, port)
        if self._reuse_port and self.cluster is None:
            log.warning("pushcore server: reuse_port without a cluster link: pushes through another process "
                        "on this port do not reach the devices connected here (docs/CLUSTER.md)")
        if self.cluster is not None:
            if self.cluster.address is None:
                self.cluster.address = (host, port)
            self._join_cluster()
        loop.call_later(self.store_probe_interval, self._store_tick)
        return self._address

    def _watch_store(self) -> None:
        """The watcher thread: while the store is writable, check it every ``store_watch_interval`` s.

        Once it is unwritable the loop's :meth:`_store_tick` probes it (and
        heals it); this thread only notices the start of an outage.
        """
        store = self.store
        while not self._unwatched.wait(self.store_watch_interval):
            if store.closed:
                return
            if store.health().writable:
                try:
                    store.check_writable()
                except Exception:  # a check must never end the gateway; the next one tries again
                    log.debug("pushcore server: the store check failed", exc_info=True)

    def _store_tick(self) -> None:
        """On the loop, every ``store_probe_interval`` s: probe a store that cannot write; make the kept writes.

        While the store is writable and nothing is kept this is two attribute
        reads. Otherwise the probe and the kept writes go through the store
        pipeline (a probe fails at once while the store is unwritable), and
        the next tick is set in their completion.
        """
        if self._stopped:
            return
        store = self.store
        delivery = self._delivery
        delay = self.store_probe_interval
        loop = self._running_loop()
        if store.health().writable and not (delivery is not None and delivery.deferred):
            loop.call_later(delay, self._store_tick)
            return

        def work(store: Store) -> bool:
            if not store.health().writable:
                store.probe()
            if delivery is not None and delivery.deferred and store.health().writable:
                return delivery.flush_deferred()
            return False

        def done(more: bool | None, error: BaseException | None) -> None:
            if self._stopped:
                return
            if error is not None and not isinstance(error, StoreUnavailable):
                if isinstance(error, StoreError):
                    return  # closed under the server: nothing to probe any more
                log.error("pushcore server: the store probe failed", exc_info=error)
            # More kept acks: the next batch on the next turn; still unwritable: the next tick tries again.
            loop.call_later(0.0 if more else delay, self._store_tick)

        try:
            self.pipeline.submit(work, done=done)
        except PipelineClosed:
            return

    def run(self, on_ready: Callable[[], object] | None = None) -> None:
        """Listen and serve until :meth:`stop` or :meth:`drain` completes (blocking).

        In the main thread, SIGTERM and SIGINT start a graceful drain.
        *on_ready* is called once the server listens and those signals are
        handled (e.g. to print "listening"): a supervisor that sends SIGTERM
        as soon as it reads that line then gets a drain, never the default
        SIGTERM death.
        """
        if self._stopped:
            raise RuntimeError("this server was stopped; make a new one")
        if not self._owns_loop:
            raise RuntimeError(
                "run() runs the server's own loop; with a shared loop call listen() and run the loop yourself"
            )
        try:
            self.listen()
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
            self._finish()  # release the store and loop it opened
            raise
        self._thread_id = threading.get_ident()
        restore = self._install_signals()
        self._ready.set()
        try:
            if on_ready is not None:
                on_ready()
            if self._owns_loop:
                self._running_loop().run()
        finally:
            self._restore_signals(restore)
            self._finish()

    def start(self, timeout: float = 10.0) -> tuple[str, int]:
        """Run the server in a background thread; return its ``(host, port)`` once listening."""
        if self._thread is not None:
            raise RuntimeError("the server is already started")
        if not self._owns_loop:
            raise RuntimeError(
                "start() runs the server's own loop; with a shared loop call listen() and run the loop yourself"
            )
        self._thread = threading.Thread(target=self._run_quietly, name="pushcore-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the server did not start listening in time")
        if self._start_error is not None:
            raise self._start_error
        return self.address

    def _run_quietly(self) -> None:
        try:
            self.run()
        except BaseException:
            if self._start_error is None:
                log.exception("pushcore server thread failed")

    def drain(self, redirect: Iterable[str | Iterable[Any]] = (), message: str = "", timeout: float = 10.0) -> None:
        """Close every connection gracefully and stop. Thread-safe.

        Stops accepting, sends each device GOAWAY ``SHUTTING_DOWN`` with
        *redirect* (servers to reconnect to: ``"host:port"`` strings or
        ``(host, port[, load])`` tuples, best first), flushes what is queued,
        closes, then stops the loop and closes the store it opened. No stored
        message is lost: unacked messages stay in the store for the device's
        next connection. Called off the loop thread, it waits (up to
        *timeout* more seconds) until the server has stopped.
        """
        servers = _servers_tuple(redirect)
        if self._thread_id is None or threading.get_ident() == self._thread_id:
            self._begin_drain(servers, message, timeout)
            return
        self._running_loop().call_soon_threadsafe(self._begin_drain, servers, message, timeout)
        self._wait_stopped(timeout + 5.0)

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop: :meth:`drain` without a redirect list. Thread-safe."""
        self.drain((), "server stopping", timeout)

    def _wait_stopped(self, timeout: float) -> None:
        if self._thread is not None and self._thread.ident != threading.get_ident():
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError("the server thread did not stop in time")
        elif not self._done.wait(timeout):
            raise TimeoutError("the server did not stop in time")

    def _begin_drain(self, servers: tuple[_Server, ...], message: str, timeout: float) -> None:
        if self._draining or self._stopped:
            return
        if self._address is None:  # never listened: nothing to drain
            self._finish()
            return
        self._draining = True
        loop = self._running_loop()
        delivery = self._live_delivery()
        if self.cluster is not None:
            self.cluster.set_draining()
            if not servers:  # a node of a cluster sends its devices to the others (least loaded first)
                servers = tuple(self.cluster.redirect_targets())
        if self._listener is not None:
            loop.unlisten(self._listener)
            self._listener = None
        goaway = _frames.Goaway(Reason.SHUTTING_DOWN, message or "server shutting down", servers).encode()
        cids = delivery.connections()
        if cids:
            loop.send_many(cids, goaway)
        for cid in cids:
            loop.close_conn(cid, Reason.SHUTTING_DOWN)
        # Connections that have not said HELLO yet are not in the route table: a
        # HELLO now is refused SHUTTING_DOWN, and closing the loop closes the rest.
        self._drain_deadline = time.monotonic() + timeout
        self._check_drained()

    def _check_drained(self) -> None:
        if not self._draining or self._stopped:
            return
        loop = self._running_loop()
        delivery = self._live_delivery()
        deadline = self._drain_deadline
        assert deadline is not None, "set by _begin_drain"
        if len(delivery) and time.monotonic() < deadline:
            loop.call_later(0.02, self._check_drained)
            return
        for cid in delivery.connections():  # deadline passed: cut the rest
            loop.abort(cid, Reason.SHUTTING_DOWN)
        if self._owns_loop:
            loop.stop()
        else:
            self._finish()

    def _finish(self) -> None:
        """Release what the server holds (runs once, after the loop stopped)."""
        if self._stopped:
            return
        self._stopped = True
        self._thread_id = None
        if self._dispatch is not None:
            self._dispatch.set_server(None)
        if self._purger is not None:
            self._purger.stop()
        self._unwatched.set()
        self._hooks.close()
        self.pipeline.close()  # what is queued is written (its completions are not run any more)
        self._leave_cluster()  # after the pipeline: the route claims it made are released
        if self._owns_loop and self._loop is not None:
            self._loop.close()
            fail_pending(self._loop, "the server stopped")  # callers waiting for the loop hear it now
        if self._owns_store:
            self.store.close()
        self._done.set()

    def _install_signals(self) -> dict[signal.Signals, Any] | None:
        if threading.current_thread() is not threading.main_thread() or not self._owns_loop:
            return None
        previous: dict[signal.Signals, Any] = {}

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            if self._draining:
                # a second signal while draining: stop waiting for slow devices
                log.warning("pushcore server: signal %d again, stopping now", signum)
                raise KeyboardInterrupt
            log.info("pushcore server: signal %d, draining", signum)
            self._running_loop().call_soon_threadsafe(self._begin_drain, (), "server shutting down", 10.0)

        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, on_signal)
        # Python runs on_signal between bytecodes only: a signal that lands
        # after a turn checked for signals but before epoll_wait would wait for
        # the next event, for ever on an idle gateway. The wake-up fd makes the
        # C-level signal handler wake the loop itself.
        self._previous_wakeup_fd = signal.set_wakeup_fd(
            self._running_loop().signal_wakeup_fd(), warn_on_full_buffer=False)
        return previous

    def _restore_signals(self, previous: dict[signal.Signals, Any] | None) -> None:
        if previous:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # -- thread hand-over -----------------------------------------------------

    def call(self, fn: Callable[..., _T], *args: Any, timeout: float | None = 30.0) -> _T:
        """Run ``fn(*args)`` on the loop thread; return its result or raise its exception. Thread-safe.

        For work that must see (or change) the server's state consistently:
        the route table, :class:`pushcore.gateway.delivery.Delivery`, the store as the
        loop uses it. Off the loop thread it is one ``call_soon_threadsafe``
        hand-over, then a wait of at most *timeout* seconds (``TimeoutError``;
        *fn* may still run later unless it had not started). On the loop
        thread, or before the server runs, *fn* runs at once. Raises
        ``RuntimeError`` once the server is stopped.
        """
        if self._thread_id is None or threading.get_ident() == self._thread_id:
            if self._stopped:
                raise RuntimeError("the server is stopped")
            return fn(*args)
        try:
            return call_on_loop(self._running_loop(), fn, *args, timeout=timeout)
        except LoopTimeout:
            raise TimeoutError(f"the server's loop did not answer within {timeout} s") from None
        except LoopUnavailable as exc:
            raise RuntimeError(f"the server is stopped ({exc})") from None

    def submit(self, fn: Callable[..., _T], *args: Any) -> concurrent.futures.Future[_T]:
        """Run ``fn(*args)`` on the loop thread without waiting: a future of its result. Thread-safe.

        Work submitted from any thread runs in submission order (with
        :meth:`call`'s work too); what arrives within one loop turn runs in
        that turn and its output goes out together at the end of the turn.
        On the loop thread, or before the server runs, *fn* runs at once and
        the future is already done. An exception of *fn*, or ``RuntimeError``
        once the server is stopped, is set on the future.
        """
        if self._thread_id is None or threading.get_ident() == self._thread_id:
            done: concurrent.futures.Future[_T] = concurrent.futures.Future()
            try:
                if self._stopped:
                    raise RuntimeError("the server is stopped")
                done.set_result(fn(*args))
            except BaseException as exc:  # handed to the caller through the future
                done.set_exception(exc)
            return done
        try:
            return submit_to_loop(self._running_loop(), fn, *args)
        except LoopUnavailable as exc:
            failed: concurrent.futures.Future[_T] = concurrent.futures.Future()
            failed.set_exception(RuntimeError(f"the server is stopped ({exc})"))
            return failed

    @overload
    def _hand_over(self, fn: Callable[[], _T], wait: Literal[True]) -> _T: ...
    @overload
    def _hand_over(self, fn: Callable[[], _T], wait: Literal[False]) -> concurrent.futures.Future[_T]: ...
    @overload
    def _hand_over(self, fn: Callable[[], _T], wait: bool) -> _T | concurrent.futures.Future[_T]: ...

    def _hand_over(self, fn: Callable[[], _T], wait: bool) -> _T | concurrent.futures.Future[_T]:
        """:meth:`call` (``wait=True``) or :meth:`submit` (``wait=False``)."""
        return self.call(fn) if wait else self.submit(fn)

    # -- the loop and the delivery, where they exist for sure -----------------

    def _running_loop(self) -> Loop:
        """The loop, where the server has one for sure: it listens (so a
        thread runs it, or it calls the server back)."""
        loop = self._loop
        assert loop is not None, "the server has no loop before listen()"
        return loop

    def _live_delivery(self) -> Delivery:
        """The delivery, in the loop's callbacks (they come only after listen())."""
        delivery = self._delivery
        assert delivery is not None, "the server has no delivery before listen()"
        return delivery

    # -- sending (thread-safe) ------------------------------------------------

    def _ready_delivery(self) -> Delivery:
        if self._delivery is None:
            # Not listening yet: messages are only stored (nobody is connected).
            self._delivery = Delivery(
                self.store, None, inline_max=self._inline_max, page_max=self._page_max,
                page_bytes=self._page_bytes, message_ids=self._message_ids, pipeline=self.pipeline,
            )
        return self._delivery

    @overload
    def push(
        self,
        device_id: str,
        payload: bytes,
        *,
        priority: int | str = PRIORITY_HIGH,
        ttl: float | None = None,
        collapse_key: str = "",
        topic: str = "",
        message_id: int | None = None,
        idempotency_key: str | None = None,
        wait: Literal[True] = ...,
    ) -> int: ...
    @overload
    def push(
        self,
        device_id: str,
        payload: bytes,
        *,
        priority: int | str = PRIORITY_HIGH,
        ttl: float | None = None,
        collapse_key: str = "",
        topic: str = "",
        message_id: int | None = None,
        idempotency_key: str | None = None,
        wait: Literal[False],
    ) -> concurrent.futures.Future[int]: ...

    def push(
        self,
        device_id: str,
        payload: bytes,
        *,
        priority: int | str = PRIORITY_HIGH,
        ttl: float | None = None,
        collapse_key: str = "",
        topic: str = "",
        message_id: int | None = None,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> int | concurrent.futures.Future[int]:
        """Store a message for *device_id*, deliver it if possible, and return its seq. Thread-safe.

        High priority goes out at once to a connected device; low priority
        waits until the device shows it is awake (its next heartbeat or
        frame). *ttl* (seconds) sets an expiry after which it is not
        delivered; *collapse_key* replaces a waiting message with the same
        key. *idempotency_key* (1-256 printable ASCII characters) makes a
        retry safe: within the store's ``idempotency_window`` (24 h by
        default) the same key returns the first call's seq and stores and
        sends nothing; the same key for a different message raises
        :class:`pushcore.store.IdempotencyConflict` (docs/SERVER.md). Raises
        :class:`pushcore.StoreUnavailable` (nothing stored) while the store
        cannot write. ``wait=False`` returns a ``concurrent.futures.Future``
        of the seq at once (see :meth:`broadcast`).
        """
        priority = parse_priority(priority)
        expiry = _expiry_from_ttl(ttl)
        # Straight to the store pipeline from this thread: pushes from many threads share one
        # commit, and this call waits only for its own write (delivery follows on the loop).
        try:
            op = self._ready_delivery().submit_push(
                device_id, payload, priority=priority, expiry=expiry,
                collapse_key=collapse_key, topic=topic, message_id=message_id,
                idempotency_key=idempotency_key, wait=self._wait_kind() if wait else "future",
            )
        except PipelineClosed:
            raise RuntimeError("the server is stopped") from None
        if not wait:
            assert op.future is not None
            return _mapped(op.future, lambda message: message.seq)
        return op.wait(_WRITE_TIMEOUT).seq

    @overload
    def push_batch(self, messages: Iterable[_BatchItem], *, timeout: float | None = ...,
                   wait: Literal[True] = ...) -> BatchResult: ...
    @overload
    def push_batch(self, messages: Iterable[_BatchItem], *, timeout: float | None = ...,
                   wait: Literal[False]) -> concurrent.futures.Future[BatchResult]: ...

    def push_batch(self, messages: Iterable[_BatchItem], *, timeout: float | None = 30.0,
                   wait: bool = True) -> BatchResult | concurrent.futures.Future[BatchResult]:
        """Store many messages in one store transaction, deliver them, return their seqs. Thread-safe.

        Each item is ``(device_id, payload)`` or ``(device_id, payload,
        options)``, *options* a dict of :meth:`push`'s keyword arguments
        (``priority``, ``ttl``, ``collapse_key``, ``topic``, ``message_id``,
        ``idempotency_key``: an item repeating a key gets its first seq and
        is neither stored nor sent again; a conflicting key raises
        :class:`pushcore.store.IdempotencyConflict` naming the item, and
        nothing of the batch is stored).
        Every item is checked first: a bad one raises ``ValueError`` or
        ``TypeError`` naming its index, and nothing is stored. Then one
        hand-over to the loop thread, one ``Store.append_batch`` (one SQLite
        transaction) and one delivery pass: each device gets exactly what
        :meth:`push` called once per item, in order, would have sent (a
        device listed several times gets consecutive seqs in the order
        given), with one send per device. Returns the seqs in the order given
        as a :class:`BatchResult` (a ``list[int]``): an item the store could
        not take for its device alone (its seq counter exhausted) is ``0``
        there and explained in ``result.errors``; every other item is stored
        and delivered as usual. While the store cannot write the whole call
        raises :class:`pushcore.StoreUnavailable` and nothing is stored (an
        outage is not one device's failure). ``wait=False`` returns a
        ``concurrent.futures.Future`` of the result at once (bad items still
        raise here; *timeout* is then the caller's own).
        """
        if isinstance(messages, (str, bytes, tuple)):
            raise TypeError("messages must be a list of (device_id, payload[, options]) tuples")
        checked = [_checked_message(i, item) for i, item in enumerate(messages)]
        if not checked:
            if not wait:
                empty: concurrent.futures.Future[BatchResult] = concurrent.futures.Future()
                empty.set_result(BatchResult([]))
                return empty
            return BatchResult([])
        message_ids = self._message_ids

        def build() -> list[NewMessage]:
            # Message ids are made where the store work runs, in store order.
            next_id = message_ids.next
            return [
                NewMessage(device_id, next_id() if message_id is None else message_id,
                           payload, priority, expiry, collapse_key, topic, key)
                for device_id, payload, priority, expiry, collapse_key, topic, message_id, key in checked
            ]

        try:
            op = self._ready_delivery().submit_batch(build, wait=self._wait_kind() if wait else "future")
        except PipelineClosed:
            raise RuntimeError("the server is stopped") from None
        if not wait:
            assert op.future is not None
            return _mapped(op.future, lambda done: _batch_result(done[1]))
        return _batch_result(op.wait(timeout)[1])

    @overload
    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        priority: int | str = PRIORITY_HIGH,
        ttl: float | None = None,
        collapse_key: str = "",
        wait: Literal[True] = ...,
    ) -> FanOut: ...
    @overload
    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        priority: int | str = PRIORITY_HIGH,
        ttl: float | None = None,
        collapse_key: str = "",
        wait: Literal[False],
    ) -> concurrent.futures.Future[FanOut]: ...

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        priority: int | str = PRIORITY_HIGH,
        ttl: float | None = None,
        collapse_key: str = "",
        wait: bool = True,
    ) -> FanOut | concurrent.futures.Future[FanOut]:
        """Store the message for every subscriber of *topic* and deliver it; returns how many. Thread-safe.

        One message id for all; each device gets its own seq. Offline
        subscribers get it on their next connection. The count is a
        :class:`FanOut` (an ``int``): a subscriber the store could not take
        the message for (its seq counter exhausted) is left out of it and
        named in ``result.failed``; the others get the message regardless.
        Fields over their limits raise :class:`pushcore.MessageTooLarge`
        before anything is stored; a store that cannot write raises
        :class:`pushcore.StoreUnavailable` for the whole call. ``wait=False``
        returns a ``concurrent.futures.Future`` of the count at once (see
        :meth:`broadcast`).
        """
        priority = parse_priority(priority)
        expiry = _expiry_from_ttl(ttl)
        check_message(0, payload, priority, expiry, collapse_key, check_topic(topic))

        try:
            op = self._ready_delivery().submit_topic(
                topic, payload, priority=priority, expiry=expiry,
                collapse_key=collapse_key, wait=self._wait_kind() if wait else "future",
            )
        except PipelineClosed:
            raise RuntimeError("the server is stopped") from None
        if not wait:
            assert op.future is not None
            return op.future
        return op.wait(_WRITE_TIMEOUT)

    @overload
    def broadcast(
        self,
        payload: bytes,
        *,
        priority: int | str = PRIORITY_HIGH,
        ttl: float | None = None,
        collapse_key: str = "",
        topic: str = "",
        durable: bool = False,
        wait: Literal[True] = ...,
    ) -> FanOut | int: ...
    @overload
    def broadcast(
        self,
        payload: bytes,
        *,
        priority: int | str = PRIORITY_HIGH,
        ttl: float | None = None,
        collapse_key: str = "",
        topic: str = "",
        durable: bool = False,
        wait: Literal[False],
    ) -> concurrent.futures.Future[FanOut | int]: ...

    def broadcast(
        self,
        payload: bytes,
        *,
        priority: int | str = PRIORITY_HIGH,
        ttl: float | None = None,
        collapse_key: str = "",
        topic: str = "",
        durable: bool = False,
        wait: bool = True,
    ) -> FanOut | int | concurrent.futures.Future[FanOut | int]:
        """Send to every connected device; returns how many. Thread-safe.

        ``durable=False`` (default): one PUSH with seq 0 is encoded once and
        queued to every connection in one C call; it is not stored, not
        acked, and goes out at once whatever its priority. ``durable=True``:
        stored per connected device with its own seq (delivered like
        :meth:`push`, resent after a reconnect until acked).

        ``wait=False`` hands the call to the loop and returns at once a
        ``concurrent.futures.Future`` of the count (an exception of the call
        is set on it; bad arguments still raise here, before anything is
        handed over). Calls from any thread run on the loop in the order
        made; those that arrive within one loop turn run in that turn and go
        out together, one ``writev`` per connection: back-to-back calls
        coalesce instead of each waiting for its own turn. Nothing bounds the
        calls in flight: keep the futures and wait on them now and then.
        """
        priority = parse_priority(priority)
        expiry = _expiry_from_ttl(ttl)
        check_message(0, payload, priority, expiry, collapse_key, topic)

        if durable:
            if not wait:
                return self._durable_broadcast_later(payload, priority, expiry, collapse_key, topic)
            cluster = self.cluster
            if cluster is not None:  # every device connected to any node, listed where store work runs
                devices: Any = lambda _store: cluster.online_devices()  # noqa: E731
            else:
                devices = self.call(lambda: list(self._ready_delivery().routes))
                if not devices:
                    return FanOut(0)
            try:
                op = self._ready_delivery().submit_many(
                    devices, payload, priority=priority, expiry=expiry,
                    collapse_key=collapse_key, topic=topic, wait=self._wait_kind(),
                )
            except PipelineClosed:
                raise RuntimeError("the server is stopped") from None
            return op.wait(_WRITE_TIMEOUT)

        def run() -> FanOut | int:
            delivery = self._ready_delivery()
            if not delivery.has_transport:
                return 0
            message_id = delivery.message_ids.next()
            if self.cluster is not None:  # every other node sends it to its own devices
                self.cluster.broadcast(StoredMessage(0, message_id, payload, priority, expiry, collapse_key, topic,
                                                     0.0))
            return delivery.broadcast_ephemeral(
                payload, priority=priority, expiry=expiry, collapse_key=collapse_key, topic=topic,
                message_id=message_id,
            )

        return self._hand_over(run, wait)

    def _durable_broadcast_later(self, payload: bytes, priority: int, expiry: int, collapse_key: str,
                                 topic: str) -> concurrent.futures.Future[FanOut | int]:
        """``broadcast(durable=True, wait=False)``: the connected devices are read on the loop, then
        their messages go to the store pipeline; the future completes once they are delivered."""
        out: concurrent.futures.Future[FanOut | int] = concurrent.futures.Future()

        def on_loop() -> None:
            cluster = self.cluster
            devices: Any
            if cluster is not None:  # every device connected to any node, listed where store work runs
                devices = lambda _store: cluster.online_devices()  # noqa: E731
            else:
                devices = list(self._ready_delivery().routes)
                if not devices:
                    out.set_result(FanOut(0))
                    return
            op = self._ready_delivery().submit_many(
                devices, payload, priority=priority, expiry=expiry,
                collapse_key=collapse_key, topic=topic, wait="future",
            )
            assert op.future is not None
            _chain(op.future, out, lambda fanout: fanout)

        started = self.submit(on_loop)
        started.add_done_callback(lambda f: out.set_exception(f.exception()) if f.exception() else None)
        return out

    def subscribe(self, device_id: str, *topics: str) -> int:
        """Subscribe *device_id* to *topics* (stored); returns how many are new. Thread-safe."""
        return self._store_call(lambda store: store.subscribe(device_id, topics))

    def unsubscribe(self, device_id: str, *topics: str) -> int:
        """Unsubscribe *device_id* from *topics*; returns how many ended. Thread-safe."""
        return self._store_call(lambda store: store.unsubscribe(device_id, topics))

    def _wait_kind(self) -> bool | str:
        """How a push waits: for its delivery to be queued (another thread), or only for its write.

        On the loop's own thread (a hook, a timer) or on a loop this server
        does not run (it may be the caller's), waiting for the completion would
        wait for itself: the push returns once its write is durable and is
        delivered on a later turn.
        """
        if self._thread_id is None or threading.get_ident() == self._thread_id:
            return "durable"
        return True

    def _store_call(self, fn: Callable[[Store], _T]) -> _T:
        """Run ``fn(store)`` through the store pipeline and wait for it.

        Called on the loop thread (from a hook), the wait holds every
        connection: it takes the urgent lane, so it waits for at most the
        group being written, not for every push queued before it.
        """
        on_loop = self._thread_id is not None and threading.get_ident() == self._thread_id
        try:
            return self.pipeline.call(fn, urgent=on_loop, timeout=_WRITE_TIMEOUT)
        except PipelineClosed:
            raise RuntimeError("the server is stopped") from None

    def redirect(self, device_id: str, servers: Iterable[str | Iterable[Any]]) -> bool:
        """Send *device_id* a REDIRECT to *servers*, sorted by ascending load. Thread-safe.

        Entries are ``"host:port"`` (load = its position) or ``(host, port[,
        load])``; the frame lists them least loaded first, as PROTOCOL.md
        says (equal loads keep the order given). Returns False when the
        device is not connected here.
        """
        checked = tuple(sorted(_servers_tuple(servers), key=lambda server: server[2]))

        def run() -> bool:
            cid = self._delivery.connection_of(device_id) if self._delivery else None
            if cid is None:
                return False
            self._running_loop().send(cid, _frames.Redirect(checked).encode())
            return True

        return self.call(run)

    def revoke(self, device_id: str, before: float | None = None) -> bool:
        """Refuse *device_id*'s tokens issued before *before* (Unix seconds, default now). Thread-safe.

        Kept in the store (so on SQLite it survives a restart) and checked at
        every HELLO by the default token check: such a token is refused with
        ``ERROR AUTH_FAILED`` ("token revoked"). Version-1 tokens carry no
        issue time and are refused by any revocation of their device. A
        revocation never lifts an earlier one: the later *before* is kept.
        Tokens minted in the same millisecond as *before* stay valid.

        The device's live connection, if any, is closed at once with
        ``GOAWAY AUTH_FAILED`` (the server does not keep each connection's
        token, so this happens even if that connection's token is newer than
        *before*; such a device simply reconnects). With a custom
        ``authenticate`` hook the hook decides: it may read
        :meth:`revoked_before`. Returns True when a connection was closed.
        """
        if not isinstance(device_id, str) or not device_id:
            raise ValueError("device_id must be a non-empty str")
        if before is None:
            before = time.time()
        elif not isinstance(before, (int, float)) or isinstance(before, bool):
            raise TypeError(f"before must be Unix seconds, not {type(before).__name__}")
        elif not math.isfinite(before) or before < 0:
            raise ValueError(f"before must be finite Unix seconds >= 0, got {before!r}")
        elif before > time.time() + MAX_REVOKE_AHEAD:
            # A revocation is never lifted, so a time far ahead (milliseconds
            # given for seconds) would refuse every future token of the device.
            raise ValueError(
                f"before={before!r} is more than {MAX_REVOKE_AHEAD:.0f} s in the future; "
                "give Unix seconds (not milliseconds), at most a little ahead of now"
            )
        when = float(before)

        def record(store: Store) -> None:
            earlier = store.revoked_before(device_id)
            store.set_revoked_before(device_id, when if earlier is None else max(earlier, when))

        self._store_call(record)

        def run() -> bool:
            cid = self._delivery.connection_of(device_id) if self._delivery else None
            if cid is None:
                return False
            loop = self._running_loop()
            loop.send(cid, _frames.Goaway(Reason.AUTH_FAILED, "token revoked", ()).encode())
            loop.close_conn(cid, Reason.AUTH_FAILED)
            return True

        return self.call(run)

    def revoked_before(self, device_id: str) -> float | None:
        """The time before which *device_id*'s tokens are revoked, or None. Thread-safe."""
        return self.store.revoked_before(device_id)

    def disconnect(self, device_id: str, reason: int = Reason.NORMAL, message: str = "") -> bool:
        """Close *device_id*'s connection with GOAWAY *reason*. Thread-safe."""

        def run() -> bool:
            cid = self._delivery.connection_of(device_id) if self._delivery else None
            if cid is None:
                return False
            loop = self._running_loop()
            loop.send(cid, _frames.Goaway(int(reason), message, ()).encode())
            loop.close_conn(cid, int(reason))
            return True

        return self.call(run)

    # -- loop callbacks (loop thread) -----------------------------------------

    def _on_open(self, batch: list[tuple[int, int]]) -> None:
        if self._draining:
            loop = self._running_loop()
            for cid, _listener in batch:
                loop.close_conn(cid, Reason.SHUTTING_DOWN)

    def _on_close(self, batch: list[tuple[int, int]]) -> None:
        detach = self._live_delivery().detach
        hook = self.on_disconnect
        if len(self._hooks) or self._topic_frames:
            for cid, _code in batch:
                self._hooks.cancel(cid)  # a pending hook's answer is not wanted any more
                self._topic_frames.pop(cid, None)
                self._hello_pending.discard(cid)
        cluster = self.cluster
        for cid, reason in batch:
            device_id = detach(cid)
            if device_id is not None:
                if cluster is not None:
                    cluster.release(device_id, cid)
                if hook is not None:
                    self._call_hook(hook, device_id, _reason(reason))

    def _on_awake(self, batch: list[int]) -> None:
        self._live_delivery().awake(batch)

    def _on_pause(self, batch: list[int]) -> None:
        # The loop stops reading a paused connection; new messages wait in the store.
        self._live_delivery().hold(batch)

    def _on_resume(self, batch: list[int]) -> None:
        self._live_delivery().release(batch)

    def _on_frames(self, batch: list[tuple[int, Frame]]) -> None:
        delivery = self._live_delivery()
        acks: dict[int, int] | None = None
        # The class of each frame follows from frame.TYPE, which mypy cannot
        # narrow on: each branch names the class it reads.
        frame: Any
        for cid, frame in batch:
            kind = frame.TYPE
            try:
                if kind == _ACK:
                    ack: Ack = frame
                    if acks is None:
                        acks = {}
                    if ack.seq > acks.get(cid, 0):
                        acks[cid] = ack.seq
                elif kind == _HELLO:
                    self._hello(cid, frame)
                elif kind == _FETCH:
                    fetch: Fetch = frame
                    if not delivery.fetch(cid, fetch.after_seq, fetch.max_count):
                        self._refuse(cid, Reason.SLOW_CONSUMER,
                                     f"more than {MAX_WAITING_FETCHES} FETCH frames wait for their answers")
                elif kind == _UPSTREAM:
                    self._upstream(cid, frame)
                elif kind == _SUBSCRIBE or kind == _UNSUBSCRIBE:
                    device_id = delivery.device_of(cid)
                    if device_id is None:
                        continue
                    topics: tuple[str, ...] = frame.topics
                    problem = next((p for p in map(topic_problem, topics) if p is not None), None)
                    if problem is not None:
                        self._refuse(cid, Reason.INVALID_VALUE, problem)
                    else:
                        self._topic_frame(cid, device_id, kind == _SUBSCRIBE, topics)
                elif kind == _ERROR:
                    # The device reports an error and closes; close our side too.
                    self._running_loop().close_conn(cid, Reason.PEER_CLOSED)
                elif kind == _PING or kind == _PONG:
                    pass  # answered in C; never expected here
                else:
                    self._refuse(
                        cid, Reason.INVALID_VALUE,
                        f"frame type {kind} is sent by servers, not devices",
                    )
            except StoreUnavailable as exc:
                # A write this frame needs (a SUBSCRIBE's new topics) while the store cannot
                # write: the frame is skipped and the connection carries on (a Client sends
                # its topics again on its next connection). Not a device's fault.
                self.stats["store_unavailable"] += 1
                log.info("pushcore server: %s on connection %#x skipped: %s", type(frame).__name__, cid, exc)
            except Exception:
                log.exception("pushcore server: handling %r on connection %#x failed", frame, cid)
                self._refuse(cid, Reason.INTERNAL_ERROR, "the server failed to handle a frame")
        if acks:
            delivery.ack(acks)

    def _unsubscribe(self, cid: int, device_id: str, topics: tuple[str, ...]) -> None:
        self._store_frame(cid, "Unsubscribe", lambda store: store.unsubscribe(device_id, topics))

    def _store_frame(self, cid: int, what: str, fn: Callable[[Store], object],
                     then: Callable[[Any], object] | None = None) -> None:
        """A frame's store work through the pipeline; *then(result)* on the loop once it is done.

        A write the store cannot make (StoreUnavailable) skips the frame and the
        connection carries on, as before the pipeline (a Client sends its topics
        again on its next connection): counted, logged, not the device's fault.
        """
        def done(result: Any, error: BaseException | None) -> None:
            if isinstance(error, StoreUnavailable):
                self.stats["store_unavailable"] += 1
                log.info("pushcore server: %s on connection %#x skipped: %s", what, cid, error)
            elif error is not None:
                log.error("pushcore server: handling %s on connection %#x failed", what, cid, exc_info=error)
                if self._running_loop().is_open(cid):
                    self._refuse(cid, Reason.INTERNAL_ERROR, "the server failed to handle a frame")
            elif then is not None:
                then(result)

        self.pipeline.submit(fn, done=done, urgent=True)

    def _refuse(self, cid: int, reason: int, message: str) -> None:
        """Send ERROR *reason* and close the connection after it."""
        self.stats["refused"] += 1
        loop = self._running_loop()
        loop.send(cid, _frames.ErrorFrame(int(reason), message).encode())
        loop.close_conn(cid, int(reason))

    def _verify_token(self, device_id: str, token: bytes, metadata: dict[str, Any]) -> bool:
        claims = self._signer.verify(device_id, token)
        # Checked after the MAC: only the holder of a genuine token learns it was revoked.
        refusal = _revocation(self.store.revoked_before(device_id), claims.issued_at)
        if refusal is not None:
            raise refusal
        return True

    def _metadata(self, cid: int, hello: Hello) -> dict[str, Any]:
        try:
            peer = self._running_loop().conn_info(cid).get("peer")
        except Exception:  # a closed cid: the hook still gets the HELLO fields
            peer = None
        return {
            "peer": peer,
            "versions": tuple(hello.versions),
            "last_seq": hello.last_seq,
            "heartbeat": hello.heartbeat,
        }

    def _hello(self, cid: int, hello: Hello) -> None:
        self.stats["hello"] += 1
        delivery = self._live_delivery()
        if delivery.device_of(cid) is not None or cid in self._hello_pending:
            self._refuse(cid, Reason.INVALID_VALUE, "HELLO sent twice on one connection")
            return
        if self._draining:
            self._refuse(cid, Reason.SHUTTING_DOWN, "server shutting down")
            return
        common = self._versions.intersection(hello.versions)
        if not common:
            self._refuse(
                cid, Reason.UNSUPPORTED_VERSION,
                f"server speaks protocol versions {sorted(self._versions)}, "
                f"device offered {list(hello.versions)}",
            )
            return
        device_id = hello.device_id
        if not device_id:
            self._refuse(cid, Reason.AUTH_FAILED, "HELLO has an empty device id")
            return
        if len(device_id) * 4 > MAX_DEVICE_ID_BYTES and len(device_id.encode("utf-8")) > MAX_DEVICE_ID_BYTES:
            # Checked before any hook: the store refuses longer ids, so such a
            # device could be welcomed but never stored for.
            self._refuse(cid, Reason.INVALID_VALUE, f"device id longer than {MAX_DEVICE_ID_BYTES} UTF-8 bytes")
            return
        if hello.last_seq > MAX_SEQ:
            self._refuse(cid, Reason.INVALID_VALUE, f"last_seq must be < 2**63, got {hello.last_seq}")
            return
        metadata = self._metadata(cid, hello) if (self._custom_auth or self.on_connect) else {}
        version = max(common)
        if self._custom_auth:
            hooks = self._hooks
            if hooks.full():
                self.stats["hooks_overloaded"] += 1
                self._refuse(cid, Reason.OVERLOADED,
                             f"{hooks.max_pending} authentications are in progress; try again later")
                return
            try:
                accepted = self._authenticate(device_id, hello.token, metadata)
            except Exception as exc:
                self._authenticated(cid, hello, version, metadata, None, exc)
                return
            if is_pending(accepted):
                # That connection waits for the hook's answer (off the loop); the others go on.
                self._hello_pending.add(cid)
                hooks.wait(cid, accepted, lambda answer, error: self._authenticated(
                    cid, hello, version, metadata, answer, error))
                return
            self._authenticated(cid, hello, version, metadata, accepted, None)
            return
        try:
            issued_at = self._signer.verify(device_id, hello.token).issued_at  # the MAC, here
        except AuthError as exc:
            self._refuse(cid, exc.reason, exc.message)
            return
        self._claim(cid, hello, version, metadata, True, issued_at)

    def _authenticated(self, cid: int, hello: Hello, version: int, metadata: dict[str, Any],
                       accepted: object, error: BaseException | None) -> None:
        """The answer of a custom ``authenticate`` hook (at once, or once its awaitable completed)."""
        self._hello_pending.discard(cid)
        device_id = hello.device_id
        if isinstance(error, AuthError):
            self._refuse(cid, error.reason, error.message)
            return
        if isinstance(error, HookTimeout):
            self.stats["hook_timeouts"] += 1
            log.warning("pushcore server: authenticate hook for %r: %s", device_id, error)
            self._refuse(cid, Reason.OVERLOADED, "authentication took too long on the server; try again later")
            return
        if error is not None:
            log.error("pushcore server: authenticate hook failed for %r", device_id, exc_info=error)
            self._refuse(cid, Reason.INTERNAL_ERROR, "authentication failed on the server")
            return
        if accepted is not True:
            self._refuse(cid, Reason.AUTH_FAILED, "device refused")
            return
        if self._draining:
            self._refuse(cid, Reason.SHUTTING_DOWN, "server shutting down")
            return
        self._claim(cid, hello, version, metadata, False, None)

    def _claim(self, cid: int, hello: Hello, version: int, metadata: dict[str, Any],
               check_revoked: bool, issued_at: float | None, placed: bool = False) -> None:
        """An accepted HELLO's claim check (its ``last_seq``) in the store, then :meth:`_welcome`."""
        if self.cluster is not None and not placed:
            delay = self._placement(cid)
            if delay == 0.0:
                return  # sent on to a less loaded node
            if delay is not None:  # overloaded everywhere: answer late, so a storm spreads out
                self._hello_pending.add(cid)
                self._running_loop().call_later(delay, self._claim_late, cid, hello, version, metadata,
                                                check_revoked, issued_at)
                return
        delivery = self._live_delivery()
        device_id = hello.device_id
        cluster = self.cluster
        # The claim check (one store read) and its ACK/advance run in the store pipeline;
        # the HELLO goes on in the completion (_welcome), so the loop never waits for the store.
        last_seq = hello.last_seq

        loop = self._running_loop()

        def claim(store: Store) -> str | AuthError | None:
            if cluster is not None and not loop.is_open(cid):
                # Closed while this waited (a reconnect storm queues HELLOs): no store work, and above
                # all no route for a connection that is gone. _welcome drops it.
                return None
            if check_revoked:  # after the MAC: only the holder of a genuine token learns it was revoked
                refusal = _revocation(store.revoked_before(device_id), issued_at)
                if refusal is not None:
                    return refusal
            counter = store.last_seq(device_id) if last_seq else 0
            problem = _claim_problem(last_seq, counter)
            if problem is None:
                # The ack of last_seq is kept for later when the store cannot write.
                delivery.claim_writes(device_id, last_seq, counter)
                if cluster is not None:
                    # Before the catch-up read: a push stored from now on is forwarded here.
                    cluster.claim(device_id, cid)
            return problem

        def done(problem: str | AuthError | None, error: BaseException | None) -> None:
            self._hello_pending.discard(cid)
            self._welcome(cid, device_id, last_seq, version, metadata, problem, error)

        self._hello_pending.add(cid)
        self.pipeline.submit(claim, done=done, urgent=True)

    def _claim_late(self, cid: int, hello: Hello, version: int, metadata: dict[str, Any],
                    check_revoked: bool, issued_at: float | None) -> None:
        if self._stopped or cid not in self._hello_pending or not self._running_loop().is_open(cid):
            return
        if self._draining:
            self._refuse(cid, Reason.SHUTTING_DOWN, "server shutting down")
            return
        self._claim(cid, hello, version, metadata, check_revoked, issued_at, placed=True)

    def _welcome(self, cid: int, device_id: str, last_seq: int, version: int, metadata: dict[str, Any],
                 problem: str | AuthError | None, error: BaseException | None) -> None:
        """The rest of HELLO once the store answered its claim: refuse, or bind, WELCOME and catch up."""
        loop = self._running_loop()
        if self.cluster is not None and (problem is not None or error is not None or self._draining
                                         or self._stopped or not loop.is_open(cid)):
            self.cluster.release(device_id, cid)  # a route it may have claimed: only if still this cid's
        if self._stopped or not loop.is_open(cid):
            return  # closed while the store answered (its ACK of last_seq stands: the device has those)
        delivery = self._live_delivery()
        if isinstance(error, StoreUnavailable):
            self.stats["store_unavailable"] += 1
            self._refuse(cid, Reason.OVERLOADED, f"the gateway's store cannot write ({error.cause}); try again later")
            return
        if error is not None:
            log.error("pushcore server: the HELLO of %r failed in the store", device_id, exc_info=error)
            self._refuse(cid, Reason.INTERNAL_ERROR, "authentication failed on the server")
            return
        if isinstance(problem, AuthError):
            self._refuse(cid, problem.reason, problem.message)
            return
        if problem is not None:
            self._refuse(cid, Reason.LAST_SEQ_AHEAD, problem)
            return
        if self._draining:
            self._refuse(cid, Reason.SHUTTING_DOWN, "server shutting down")
            return
        old = delivery.bind(cid, device_id, last_seq)
        if old is not None:
            self.stats["replaced"] += 1
            loop.send(old, _frames.Goaway(Reason.REPLACED, "a newer connection took over", ()).encode())
            loop.close_conn(old, Reason.REPLACED)
            if self.on_disconnect is not None:
                self._call_hook(self.on_disconnect, device_id, Reason.REPLACED)
        loop.authenticate(cid, idle_timeout=self._idle_timeout)
        loop.send(
            cid,
            _frames.Welcome(
                version, self._welcome_min, self._welcome_max, int(time.time() * 1000)
            ).encode(),
        )
        delivery.resume(cid)
        self.stats["welcome"] += 1
        if self.on_connect is not None:
            self._call_hook(self.on_connect, device_id, metadata)

    def _topic_frame(self, cid: int, device_id: str, subscribe: bool, topics: tuple[str, ...]) -> None:
        """A SUBSCRIBE or UNSUBSCRIBE, in the order sent: behind a SUBSCRIBE whose hook is pending, it waits."""
        waiting = self._topic_frames.get(cid)
        if waiting is not None:
            if len(waiting) >= _MAX_WAITING_TOPIC_FRAMES:
                self.stats["hooks_overloaded"] += 1
                self._refuse(cid, Reason.OVERLOADED, "too many SUBSCRIBE frames wait for the server's hook")
                return
            waiting.append((subscribe, topics))
            return
        if subscribe:
            self._subscribe(cid, device_id, topics)
        else:
            self._unsubscribe(cid, device_id, topics)

    def _next_topic_frames(self, cid: int, device_id: str) -> None:
        """The frames that waited behind a SUBSCRIBE's hook, in order, until one waits again."""
        waiting = self._topic_frames.pop(cid, None)
        while waiting:
            subscribe, topics = waiting.popleft()
            self._topic_frame(cid, device_id, subscribe, topics)
            again = self._topic_frames.get(cid)
            if again is not None:  # that one waits for its hook too: the rest go behind it
                again.extend(waiting)
                return

    def _subscribe(self, cid: int, device_id: str, topics: tuple[str, ...]) -> None:
        """A device's SUBSCRIBE: the topics the hook allows, up to the per-device cap."""
        hook = self.authorize_subscribe
        if hook is None:
            self._subscribe_allowed(cid, device_id, topics)
            return
        hooks = self._hooks
        if hooks.full():
            self.stats["hooks_overloaded"] += 1
            self._refuse(cid, Reason.OVERLOADED, "the server's hooks are busy; try again later")
            return
        metadata = {"peer": self._peer(cid)}
        answers: list[object] = []
        for topic in topics:
            try:
                answers.append(hook(device_id, topic, metadata))
            except Exception:
                log.exception("pushcore server: authorize_subscribe hook failed for %r", device_id)
                answers.append(False)
        pending = [i for i, answer in enumerate(answers) if is_pending(answer)]
        if not pending:
            self._subscribe_answered(cid, device_id, topics, answers)
            return
        # Wait for every pending answer; the connection's later topic frames wait behind this one.
        self._topic_frames[cid] = deque()
        left = [len(pending)]

        def answered(i: int, answer: object, error: BaseException | None) -> None:
            if isinstance(error, HookTimeout):
                self.stats["hook_timeouts"] += 1
            if error is not None:
                log.warning("pushcore server: authorize_subscribe hook for %r, topic %r: %r",
                            device_id, topics[i], error)
            answers[i] = answer if error is None else False
            left[0] -= 1
            if left[0] == 0:
                self._subscribe_answered(cid, device_id, topics, answers)
                self._next_topic_frames(cid, device_id)

        for i in pending:
            hooks.wait(cid, answers[i], partial(answered, i))

    def _subscribe_answered(self, cid: int, device_id: str, topics: tuple[str, ...], answers: list[object]) -> None:
        allowed = []
        for topic, answer in zip(topics, answers):
            if answer is True:
                allowed.append(topic)
            else:
                self.stats["subscribe_refused"] += 1
        self._subscribe_allowed(cid, device_id, tuple(allowed))

    def _subscribe_allowed(self, cid: int, device_id: str, topics: tuple[str, ...]) -> None:
        if not topics:
            return
        cap = self._max_subscriptions

        def write(store: Store) -> int:
            held = store.topics(device_id)
            new = [t for t in dict.fromkeys(topics) if t not in held]
            room = cap - len(held)
            over = len(new) - max(room, 0) if len(new) > room else 0
            if over:
                new = new[: max(room, 0)]
            if new:
                store.subscribe(device_id, new)
            return over

        def counted(over: int) -> None:
            if over:
                self.stats["subscribe_over_cap"] += over
                log.warning(
                    "pushcore server: device %r is at its subscription cap (%d); %d topic(s) ignored",
                    device_id, cap, over,
                )

        self._store_frame(cid, "Subscribe", write, counted)

    def _peer(self, cid: int) -> Any:
        try:
            return self._running_loop().conn_info(cid).get("peer")
        except Exception:  # a closed cid
            return None

    def _upstream(self, cid: int, frame: Upstream) -> None:
        device_id = self._live_delivery().device_of(cid)
        if device_id is None:
            return
        self.stats["upstream"] += 1
        hook = self.on_upstream
        upstream_id = frame.upstream_id
        if hook is not None:
            hooks = self._hooks
            if hooks.full():
                self.stats["hooks_overloaded"] += 1
                self._refuse(cid, Reason.OVERLOADED, "the server's hooks are busy; send it again later")
                return
            try:
                answer = hook(device_id, frame.payload, frame.topic)
            except Exception:
                log.exception("pushcore server: on_upstream hook failed for %r", device_id)
                return
            if is_pending(answer):
                def handled(_result: object, error: BaseException | None) -> None:
                    if error is not None:  # no ack: the device may send it again
                        if isinstance(error, HookTimeout):
                            self.stats["hook_timeouts"] += 1
                        log.error("pushcore server: on_upstream hook failed for %r", device_id, exc_info=error)
                        return
                    self._running_loop().send(cid, _frames.UpstreamAck(upstream_id).encode())

                hooks.wait(cid, answer, handled)
                return
        self._running_loop().send(cid, _frames.UpstreamAck(upstream_id).encode())

    def _read_failed(self, cid: int, error: BaseException) -> None:
        """A catch-up or FETCH read of *cid* failed in the store: close it, so it reconnects and resumes
        (as when the read ran on the loop), rather than wait for an answer that will not come."""
        if self._running_loop().is_open(cid):
            self._refuse(cid, Reason.INTERNAL_ERROR, "the server failed to read its store; reconnect")

    def _call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop thread, from any thread (the hooks' answers come back so)."""
        self._running_loop().call_soon_threadsafe(fn, *args)

    @staticmethod
    def _call_hook(hook: Callable[..., object], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            log.exception("pushcore server: hook %r failed", hook)

    def __repr__(self) -> str:
        where = f"{self._address[0]}:{self._address[1]}" if self._address else "not listening"
        return f"<pushcore.Server {where} devices={self.device_count()}>"


def _batch_result(outcomes: Iterable[object]) -> BatchResult:
    """:meth:`Server.push_batch`'s answer from the store's outcome per item."""
    seqs: list[int] = []
    errors: dict[int, str] = {}
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, StoredMessage):
            seqs.append(outcome.seq)
        else:
            seqs.append(0)
            errors[i] = str(outcome)
    return BatchResult(seqs, errors)


#: SUBSCRIBE/UNSUBSCRIBE frames of one connection that may wait behind a SUBSCRIBE's pending hook
_MAX_WAITING_TOPIC_FRAMES = 64


def _revocation(revoked: float | None, issued_at: float | None) -> AuthError | None:
    """The refusal of a token issued at *issued_at* when its device's tokens before *revoked* are revoked."""
    if revoked is not None and (
        issued_at is None  # a version-1 token: its age is unknown, so any revocation covers it
        or round(issued_at * 1000) < math.floor(revoked * 1000)
    ):
        return AuthError(Reason.AUTH_FAILED, "token revoked: mint a new one for this device")
    return None


def _reason(code: int) -> Reason | int:
    try:
        return Reason(code)
    except ValueError:
        return code

"""pushcore.Client: a device's long connection to the gateways, on the C-level loop.

What it does, in the published design's terms:

* **Server choice.** A server list (``"host:port"`` strings or tuples, or an
  HTTP URL returning JSON sorted by load, see :mod:`pushcore.device.serverlist`),
  and a built-in fallback list used when fetching the list or resolving the
  names fails. **Probing**: it connects to up to ``probe_count`` servers at
  once, sends HELLO on each, keeps the first to answer WELCOME and closes the
  rest; a server that accepts but never answers loses to one that does.
* **Reconnect** with jittered exponential backoff (``backoff``: initial and
  maximum delay; each delay is drawn from [d/2, d]). REDIRECT and GOAWAY
  with servers reconnect at once to the servers named. After GOAWAY
  REPLACED (another connection with this device's token took over) it
  reconnects too, on its own slower backoff (``replaced_backoff``) that
  keeps growing while it keeps being replaced, so a stolen token cannot
  lock the genuine device out for good and two genuine copies of one device
  do not thrash; ``reconnect_on_replaced=False`` stops instead.
* **Exactly once, in order.** HELLO carries the last seq handled; the
  server resumes after it. Duplicates are dropped by seq, so ``on_message``
  is called once per message; ACKs are cumulative and batched
  (:class:`pushcore.device.inbox.Inbox`); a NOTIFY is followed by FETCHes of pages.
  Persist :attr:`Client.last_seq` with what the application did with the
  messages and pass it back as ``last_seq=`` after a restart of the process.
* **Acked once handled.** When ``on_message`` raises, the exception is
  logged with its traceback and the ACK stops before that seq: the message
  comes again after ``redeliver_delay`` seconds on the same connection (a
  FETCH from the last handled seq), or on the next connection, and the
  messages after it wait for it (docs/CLIENT.md).
* **Expiry by the server's clock.** WELCOME carries the server's time; the
  client keeps the offset to its own clock (``clock=``) per connection and
  judges a PUSH's expiry with it, so a device whose clock is wrong neither
  drops live messages nor shows expired ones.
* **Causes.** Every failure is described by a :class:`pushcore.Cause`
  (refused, timed out, the server's ERROR / GOAWAY reason by name, ...):
  ``on_state(state, cause)``, :attr:`Client.cause`, ``ConnectError.cause``
  and the log carry it.
* **Adaptive heartbeat** (:class:`pushcore.device.heartbeat.HeartbeatPolicy`): the
  loop sends PING in C when the connection has been quiet for the current
  interval; answered heartbeats step the interval up, a connection lost for
  want of a PONG (``IDLE_TIMEOUT``) backs it off and holds it, per network
  name (:meth:`Client.set_network`), within the server's grant.
* SUBSCRIBE / UNSUBSCRIBE (re-sent after each reconnect), UPSTREAM with a
  future resolved by UPSTREAM_ACK.

Running it:

* ``client.run()`` blocks (on its own loop) until :meth:`Client.stop`;
* ``client.start()`` runs it in a background thread and returns once
  connected (or raises why it could not connect);
* ``async with Client(...) as client:`` runs the loop inside asyncio
  (``pushcore.loop.attach_asyncio``) and returns once connected;
* many clients may share one loop (``Client(..., loop=shared)``, then
  :meth:`Client.connect` each and run the loop): the Simulator puts
  thousands of devices on one loop this way.

Thread safety: :meth:`stop`, :meth:`subscribe`, :meth:`unsubscribe`,
:meth:`upstream` and :meth:`set_network` may be called from any thread; the
callbacks run on the loop's thread.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import errno as _errno
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVarTuple, cast

from ..codec import frames as _frames
from ..errors import ProtocolError, PushcoreError, Reason, reason_name
from ..loop.dispatch import dispatch_for
from ..tokens import AuthError
from ..wire import topic_problem
from .cause import Cause, CauseKind
from .heartbeat import HeartbeatPolicy
from .inbox import Inbox
from .serverlist import (
    Address,
    ServerEntry,
    ServerListError,
    fetch_servers,
    is_ip_literal,
    parse_servers,
    resolve_servers,
)

if TYPE_CHECKING:
    from .._frame import ErrorFrame, Frame, Goaway, Notify, Push, Redirect, UpstreamAck, Welcome
    from .._loop import Loop, TimerHandle
    from ..loop.asyncio_driver import AsyncioDriver
    from ..loop.dispatch import LoopDispatch

__all__ = ["Cause", "CauseKind", "Client", "ClientState", "ConnectError", "NotConnected", "backoff_delay"]

log = logging.getLogger("pushcore.device.client")

_PUSH = _frames.PUSH
_NOTIFY = _frames.NOTIFY
_WELCOME = _frames.WELCOME
_UPSTREAM_ACK = _frames.UPSTREAM_ACK
_REDIRECT = _frames.REDIRECT
_GOAWAY = _frames.GOAWAY
_ERROR = _frames.ERROR

# Refusals that reconnecting cannot fix: the client stops and says why.
def _checked_topics(topics: Iterable[str]) -> tuple[str, ...]:
    """*topics* as a tuple, each following the topic-name rule (docs/PROTOCOL.md 5a).

    Checked here because a SUBSCRIBE with a bad name makes the server close
    the connection, and the client re-sends its topics after every WELCOME.
    """
    if isinstance(topics, (str, bytes)):
        raise TypeError("topics must be an iterable of str (e.g. a list), not a single string")
    out = tuple(topics)
    for topic in out:
        if not isinstance(topic, str):
            raise TypeError(f"topic must be str, not {type(topic).__name__}")
        problem = topic_problem(topic)
        if problem is not None:
            raise ValueError(problem)
    return out


_FATAL = frozenset({Reason.AUTH_FAILED, Reason.TOKEN_EXPIRED, Reason.UNSUPPORTED_VERSION})

_Ts = TypeVarTuple("_Ts")


class ClientState(enum.StrEnum):
    """What :attr:`Client.state` and ``on_state`` report."""

    IDLE = "idle"  # made, not connecting yet
    CONNECTING = "connecting"  # getting the server list / probing
    CONNECTED = "connected"  # welcomed by a server
    DISCONNECTED = "disconnected"  # the connection closed; a reconnect follows
    BACKOFF = "backoff"  # waiting before the next attempt
    FAILED = "failed"  # refused for good (bad token, no common version); see Client.error
    REPLACED = "replaced"  # another connection took over and reconnect_on_replaced=False: stopped
    STOPPED = "stopped"  # stop() was called


class ConnectError(PushcoreError):
    """The client could not connect (or stopped before it did).

    ``cause`` is the :class:`Cause` of the last failed attempt (None when
    there was none, e.g. a server that accepted and has not answered yet);
    the message includes it: ``no server answered within 3 s: connection
    refused by 127.0.0.1:5222``.
    """

    def __init__(self, message: str, cause: Cause | None = None) -> None:
        super().__init__(message)
        self.cause = cause

    def __reduce__(self) -> tuple[type[ConnectError], tuple[str, Cause | None]]:
        return (type(self), (str(self), self.cause))


class NotConnected(PushcoreError, ConnectionError):
    """The client has no live connection (an UPSTREAM was pending when it closed, or none is up)."""


def backoff_delay(attempt: int, initial: float, maximum: float, rand: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds to wait before reconnect attempt *attempt* (0-based): jittered exponential.

    The ceiling doubles from *initial* up to *maximum*; the delay is drawn
    from [ceiling/2, ceiling] so a crowd of devices cut off together does not
    come back in lock-step (a reconnect storm), yet none waits for nothing.
    """
    ceiling = min(maximum, initial * (2 ** min(attempt, 60)))
    return rand(ceiling / 2, ceiling)


def _refusal(code: int, message: str) -> PushcoreError:
    if code in (Reason.AUTH_FAILED, Reason.TOKEN_EXPIRED):
        return AuthError(code, message)
    return ProtocolError(code, message)


class Client:
    """One device (see the module docstring).

    Parameters
    ----------
    device_id, token
        the device's id and credential (bytes; a ``str`` is UTF-8 encoded;
        or a function returning it, called at each connection attempt).
    servers
        ``["host:port", ...]`` or ``[(host, port), ...]``, best first.
    servers_url
        an HTTP(S) URL returning a JSON server list sorted by load, fetched at
        each connection cycle; *servers* are used when it fails.
    fallback
        built-in addresses used when neither *servers_url* nor *servers*
        gives a server whose name resolves.
    loop
        a ``pushcore._loop.Loop`` to share (default: the client makes one).
    last_seq
        the highest seq this device already has (persisted by the app).
    topics
        topics to SUBSCRIBE to after each connect.
    heartbeat
        a :class:`HeartbeatPolicy` (default: the published values: 3.5 min
        floor, 10 min cap). ``pong_timeout``: how long a PING may go
        unanswered before the connection counts as lost.
    probe_count, probe_timeout
        servers probed at once; seconds to wait for a WELCOME.
    backoff
        ``(initial, maximum)`` reconnect delay in seconds.
    ack_every, ack_delay, page_size
        ACK after this many new messages or this many seconds, whichever
        comes first; messages asked per FETCH.
    on_message(push)
        each new message once, in seq order: a ``Push`` frame (``seq``,
        ``message_id``, ``payload``, ``priority``, ``expiry``,
        ``collapse_key``, ``topic``). Ephemeral broadcasts have ``seq == 0``.
        If it raises, the message is not acked and comes again (see
        *redeliver_delay*); the exception is logged with its traceback.
    redeliver_delay
        seconds after a failed ``on_message`` before the client FETCHes the
        failed message again on the same connection (default 5 s); a new
        connection brings it at once. Later messages wait for it.
    clock
        the device's clock, Unix seconds (default ``time.time``); expiry is
        judged with it plus the offset to the server's clock from WELCOME.
    on_state(state, cause)
        a :class:`ClientState` change; *cause* is a :class:`Cause` saying why
        (``DISCONNECTED``, ``BACKOFF``, ``FAILED``, ``REPLACED``) or None
        (``CONNECTING``, ``CONNECTED``, ``STOPPED``). ``cause.reason`` is
        the :class:`pushcore.Reason` that earlier versions passed here.
    reconnect_on_replaced
        reconnect after GOAWAY REPLACED (default True). The delay before the
        *n*-th reconnect in a row after being replaced (n = 0, 1, …) is drawn
        from [c/2, c] with c = min(max, initial * 2**n), ``(initial, max) =
        replaced_backoff``; n goes back to 0 once a connection has lasted
        2 * max seconds without being replaced. With the default (5 s, 300 s)
        the first comes after 2.5–5 s, then 5–10 s, … up to 150–300 s, so two
        instances sharing one token take turns slowly, never in a tight loop.
        False: the client stops in state ``REPLACED`` (the other connection
        is trusted to be this device's rightful one).
    replaced_backoff
        ``(initial, max)`` seconds for the reconnects after REPLACED (above).
    """

    def __init__(
        self,
        device_id: str,
        token: bytes | str | Callable[[], bytes],
        servers: Iterable[ServerEntry] = (),
        *,
        servers_url: str | None = None,
        fallback: Iterable[ServerEntry] = (),
        loop: Loop | None = None,
        last_seq: int = 0,
        topics: Iterable[str] = (),
        heartbeat: HeartbeatPolicy | None = None,
        network: str | None = None,
        pong_timeout: float = 10.0,
        probe_count: int = 3,
        probe_timeout: float = 5.0,
        backoff: tuple[float, float] = (0.5, 60.0),
        ack_every: int = 32,
        ack_delay: float = 0.05,
        page_size: int = 256,
        on_message: Callable[[Push], Any] | None = None,
        on_state: Callable[[ClientState, Cause | None], Any] | None = None,
        versions: Iterable[int] = (1,),
        url_timeout: float = 5.0,
        reconnect_on_replaced: bool = True,
        replaced_backoff: tuple[float, float] = (5.0, 300.0),
        redeliver_delay: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(device_id, str) or not device_id:
            raise ValueError("device_id must be a non-empty str")
        self.device_id = device_id
        self._token = token
        self._servers = parse_servers(servers, sort_by_load=False)
        self._servers_url = servers_url
        self._fallback = parse_servers(fallback, sort_by_load=False)
        if not (self._servers or self._servers_url or self._fallback):
            raise ValueError("give servers=, servers_url= or fallback= so the client knows where to connect")
        if probe_count < 1 or probe_timeout <= 0 or pong_timeout <= 0:
            raise ValueError("probe_count must be >= 1; probe_timeout and pong_timeout > 0")
        if not redeliver_delay > 0:
            raise ValueError(f"redeliver_delay must be > 0 seconds, got {redeliver_delay!r}")
        initial, maximum = backoff
        if not 0 < initial <= maximum:
            raise ValueError(f"backoff must be (initial, maximum) with 0 < initial <= maximum, got {backoff!r}")
        self.inbox = Inbox(last_seq, ack_every=ack_every, page_size=page_size)
        self.heartbeat = heartbeat if heartbeat is not None else HeartbeatPolicy()
        if network is not None:
            self.heartbeat.set_network(network)
        self._pong_timeout = pong_timeout
        self._probe_count = probe_count
        self._probe_timeout = probe_timeout
        self._backoff = (float(initial), float(maximum))
        replaced_initial, replaced_maximum = replaced_backoff
        if not 0 < replaced_initial <= replaced_maximum:
            raise ValueError(
                f"replaced_backoff must be (initial, maximum) with 0 < initial <= maximum, "
                f"got {replaced_backoff!r}"
            )
        self._replaced_backoff = (float(replaced_initial), float(replaced_maximum))
        self._replaced_streak = 0  # reconnects in a row after REPLACED (the backoff exponent)
        self._connected_at = 0.0  # time.monotonic() of the last WELCOME
        #: Seconds of the reconnect delay last scheduled (None before any): what BACKOFF waits.
        self.retry_delay: float | None = None
        self._ack_delay = ack_delay
        self._redeliver_delay = float(redeliver_delay)
        self._clock = clock
        self._clock_offset: float | None = None  # server clock - device clock, from WELCOME
        self._versions = tuple(versions)
        self._url_timeout = url_timeout
        self._reconnect_on_replaced = reconnect_on_replaced
        self.on_message = on_message
        self.on_state = on_state
        self._topics: dict[str, None] = dict.fromkeys(_checked_topics(topics))

        self._loop = loop
        self._owns_loop = loop is None
        self._dispatch: LoopDispatch | None = None
        self._loop_thread: int | None = None  # thread running the loop, when known
        self._thread: threading.Thread | None = None
        self._running = False  # run() is driving the client's own loop
        self._aio_driver: AsyncioDriver | None = None  # the asyncio driver, inside "async with"

        self.state = ClientState.IDLE
        self.error: BaseException | None = None  # why the client FAILED
        #: The :class:`Cause` of the last failure (what on_state got last), None before any.
        self.cause: Cause | None = None
        self._warned: Cause | None = None  # the BACKOFF cause last logged as a warning
        self.server: tuple[str, int] | None = None  # the server it is connected to
        self._cid: int | None = None
        self._probes: dict[int, Address] = {}
        self._candidates: list[Address] = []
        self._refusals: list[tuple[int, str]] = []
        self._causes: list[Cause] = []  # why each probe of this cycle failed
        self._probe_cause: dict[int, Cause] = {}  # what a probe's server said (ERROR, GOAWAY)
        self._close_cause_said: Cause | None = None  # what the live connection's server said
        self._redirect: list[Address] | None = None
        self._cycle = 0  # bumped per connection cycle, so stale worker results are ignored
        self._attempt = 0
        self._probe_timer: TimerHandle | None = None
        self._retry_timer: TimerHandle | None = None
        self._ack_timer: TimerHandle | None = None
        self._hb_timer: TimerHandle | None = None
        self._redeliver_timer: TimerHandle | None = None
        self._pongs_seen = 0
        self._upstream_id = 0
        self._upstreams: dict[int, concurrent.futures.Future[int]] = {}
        self._waiters: list[concurrent.futures.Future[Client]] = []
        self._stopping = False
        self._replaced = False
        self.stats = {"connects": 0, "messages": 0, "heartbeat_failures": 0, "replaced": 0,
                      "handler_errors": 0}

    # -- public state ---------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """Highest seq received and handled (persist it to resume after a process restart)."""
        return self.inbox.last_seq

    @property
    def clock_offset(self) -> float | None:
        """Seconds the server's clock is ahead of ``clock()`` (from the last WELCOME), or None.

        None before the first WELCOME, or when the server sent no time
        (``server_time`` 0): then the client drops nothing for expiry.
        """
        return self._clock_offset

    @property
    def is_connected(self) -> bool:
        """True while a server has welcomed the client (``await client.connected()`` waits for it)."""
        return self.state is ClientState.CONNECTED

    @property
    def loop(self) -> Loop:
        """The ``pushcore._loop.Loop`` the client runs on."""
        return self._ensure_loop()

    def conn_info(self) -> dict[str, Any] | None:
        """The loop's ``conn_info`` of the live connection (bytes, PONGs, peer, ...), or None.

        Call it on the loop's thread (from a callback, or while no thread runs the loop).
        """
        if self._cid is None:
            return None
        return self._live_loop.conn_info(self._cid)

    @property
    def topics(self) -> list[str]:
        return list(self._topics)

    def _ensure_loop(self) -> Loop:
        if self._loop is None:
            from ..loop import new_loop

            self._loop = new_loop()
        return self._loop

    @property
    def _live_loop(self) -> Loop:
        """The loop, for the code that runs between connect() (which makes it) and _cleanup()."""
        loop = self._loop
        assert loop is not None, "the client's loop is gone"
        return loop

    def _set_state(self, state: ClientState, cause: Cause | None = None) -> None:
        if state is self.state and cause is None:
            return
        self.state = state
        if cause is not None:
            # A new cause is a WARNING; the same one again (a dead port retried) only INFO.
            level = logging.WARNING
            if state is ClientState.BACKOFF:
                if cause == self._warned:
                    level = logging.INFO
                self._warned = cause
            self.cause = cause
            if state is ClientState.BACKOFF:
                log.log(level, "pushcore client %s: %s; retrying in %.2f s", self.device_id, cause,
                        self.retry_delay or 0.0)
            elif state is ClientState.DISCONNECTED:
                log.info("pushcore client %s: disconnected: %s", self.device_id, cause)
            else:
                log.warning("pushcore client %s: %s: %s", self.device_id, state.value, cause)
        if self.on_state is not None:
            try:
                self.on_state(state, cause)
            except Exception:
                log.exception("pushcore client %s: on_state callback failed", self.device_id)

    # -- running --------------------------------------------------------------

    def connect(self) -> None:
        """Start connecting on the client's loop (which the caller runs).

        For shared loops; :meth:`run`, :meth:`start` and ``async with`` call it.
        """
        loop = self._ensure_loop()
        if self._dispatch is None:
            self._dispatch = dispatch_for(loop)
        self._stopping = False
        self._begin_cycle()

    def run(self) -> None:
        """Connect and run the client's own loop until :meth:`stop` (blocking).

        Raises the client's :attr:`error` if it was refused for good.
        """
        if not self._owns_loop:
            raise RuntimeError("run() runs the client's own loop; with a shared loop call connect() and run the loop")
        self._loop_thread = threading.get_ident()
        self._running = True
        try:
            self.connect()
            self._live_loop.run()
        finally:
            self._running = False
            self._loop_thread = None
            self._cleanup()
        if self.error is not None:
            raise self.error

    def start(self, timeout: float = 30.0) -> Client:
        """Run the client in a background thread; return once connected.

        Raises :class:`pushcore.tokens.AuthError` (refused token),
        :class:`pushcore.ProtocolError` (e.g. no common version) or
        :class:`ConnectError` (no server answered within *timeout*; the
        client is stopped then; its message and ``cause`` say why the last
        attempt failed, e.g. "connection refused by 127.0.0.1:5222").
        """
        if self._thread is not None:
            raise RuntimeError("the client is already started")
        waiter = self._new_waiter()
        started = threading.Event()

        def body() -> None:
            self._loop_thread = threading.get_ident()
            started.set()
            try:
                self.run()
            except PushcoreError:
                pass  # reported through the waiter
            except BaseException:
                log.exception("pushcore client %s: thread failed", self.device_id)

        self._ensure_loop()
        self._thread = threading.Thread(target=body, name=f"pushcore-client-{self.device_id}", daemon=True)
        self._thread.start()
        started.wait()
        try:
            waiter.result(timeout)
        except concurrent.futures.TimeoutError:
            cause = self.cause
            self.stop()
            why = f": {cause}" if cause is not None else ""
            raise ConnectError(f"no server answered within {timeout:g} s{why}", cause) from None
        except BaseException:
            if self.state is ClientState.FAILED:
                self._thread.join(timeout)  # it stops by itself
            else:
                self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Send the pending ACK, close the connection and stop. Thread-safe; idempotent."""
        if self._loop is None:
            self._set_state(ClientState.STOPPED)
            return
        if self._on_loop_thread():
            self._stop_now()
        else:
            try:
                self._loop.call_soon_threadsafe(self._stop_now)
            except Exception:
                pass  # the loop is already closed
        if self._thread is not None and threading.get_ident() != self._thread.ident:
            self._thread.join(timeout)

    def kill(self) -> None:
        """Drop the connection abruptly (RST, no ACK flush) and stop: a crash, for tests."""
        def now() -> None:
            self._stopping = True
            if self._cid is not None:
                self._live_loop.abort(self._cid, Reason.PEER_RESET)
            self._stop_now(flush=False)

        if self._loop is None:
            return
        if self._on_loop_thread():
            now()
        else:
            self._loop.call_soon_threadsafe(now)
        if self._thread is not None and threading.get_ident() != self._thread.ident:
            self._thread.join(10.0)

    def _stop_now(self, flush: bool = True) -> None:
        if self.state is ClientState.STOPPED and self._stopping:
            return
        self._stopping = True
        self._cancel_timers()
        if self._cid is not None:
            if flush:
                self._flush_ack()
            self._live_loop.close_conn(self._cid, Reason.NORMAL)
        for cid in list(self._probes):
            self._live_loop.close_conn(cid, Reason.NORMAL)
        self._probes.clear()
        self._fail_upstreams("client stopped")
        last = f" (last failure: {self.cause})" if self.cause is not None else ""
        self._fail_waiters(ConnectError(f"the client was stopped before it connected{last}", self.cause))
        self._set_state(ClientState.STOPPED)
        if self._running:
            # let the close flush on the next turn, then stop the loop
            loop = self._live_loop
            loop.call_later(0.05, loop.stop)

    def _cleanup(self) -> None:
        if self._dispatch is not None:
            clients = self._dispatch.clients
            for cid in [self._cid, *self._probes]:
                if cid is not None and clients.get(cid) is self:
                    del clients[cid]
            self._dispatch = None
        if self._owns_loop and self._loop is not None:
            self._loop.close()
            self._loop = None

    def _on_loop_thread(self) -> bool:
        return self._loop_thread is None or self._loop_thread == threading.get_ident()

    def _soon(self, fn: Callable[[*_Ts], object], *args: *_Ts) -> None:
        if self._on_loop_thread():
            fn(*args)
        else:
            self._live_loop.call_soon_threadsafe(fn, *args)

    # -- waiting for a connection ---------------------------------------------

    def _new_waiter(self) -> concurrent.futures.Future[Client]:
        waiter: concurrent.futures.Future[Client] = concurrent.futures.Future()
        if self.state is ClientState.CONNECTED:
            waiter.set_result(self)
        elif self.error is not None:
            waiter.set_exception(self.error)
        else:
            self._waiters.append(waiter)
        return waiter

    def _fail_waiters(self, exc: BaseException) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(exc)

    def wait_connected(self, timeout: float | None = None) -> Client:
        """Block until connected (from a thread other than the loop's)."""
        return self._new_waiter().result(timeout)

    async def connected(self, timeout: float | None = None) -> Client:
        """Wait (asyncio) until the client is connected; raise why it cannot be."""
        waiter = asyncio.wrap_future(self._new_waiter())
        return await asyncio.wait_for(waiter, timeout)

    async def __aenter__(self) -> Client:
        """Drive the client's own loop from the running asyncio loop and connect."""
        from ..loop import attach_asyncio

        if not self._owns_loop:
            raise RuntimeError("async with uses the client's own loop; do not pass loop=")
        loop = self._ensure_loop()
        self._loop_thread = threading.get_ident()
        self._aio_driver = attach_asyncio(loop, asyncio.get_running_loop())
        self.connect()
        try:
            await self.connected()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop_now()
        # let the driver run the turns that flush the ACK and the close
        deadline = time.monotonic() + 2.0
        while self._loop is not None and self._loop.stats()["open"] and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._aio_driver is not None:
            self._aio_driver.detach()
            self._aio_driver = None
        self._loop_thread = None
        self._cleanup()

    # -- connection cycle -----------------------------------------------------

    def _begin_cycle(self) -> None:
        """Find the candidate servers (maybe in a worker thread), then probe them."""
        if self._stopping:
            return
        self._cycle += 1
        cycle = self._cycle
        self._refusals = []
        self._causes = []
        self._probe_cause = {}
        self._set_state(ClientState.CONNECTING)
        if self._redirect:
            servers, self._redirect = self._redirect, None
            if all(is_ip_literal(h) for h, _p in servers):
                self._probe(cycle, servers)
                return
            url, given = None, servers
        else:
            url, given = self._servers_url, self._servers
        if url is None and all(is_ip_literal(h) for h, _p in given) and given:
            self._probe(cycle, given)  # the common case: no thread, no lookup
            return
        threading.Thread(
            target=self._gather, args=(cycle, url, given), name="pushcore-serverlist", daemon=True
        ).start()

    def _gather(self, cycle: int, url: str | None, given: list[Address]) -> None:
        """Worker thread: fetch the list, resolve names, fall back; hand the result to the loop."""
        candidates: list[Address] = []
        if url is not None:
            try:
                candidates = resolve_servers(fetch_servers(url, self._url_timeout))
            except ServerListError as exc:
                log.warning("pushcore client %s: %s", self.device_id, exc)
        if not candidates and given:
            try:
                candidates = resolve_servers(given)
            except ServerListError as exc:
                log.warning("pushcore client %s: %s", self.device_id, exc)
        if not candidates and self._fallback:
            log.info("pushcore client %s: using the built-in fallback servers", self.device_id)
            try:
                candidates = resolve_servers(self._fallback)
            except ServerListError as exc:
                log.warning("pushcore client %s: fallback: %s", self.device_id, exc)
        try:
            self._live_loop.call_soon_threadsafe(self._probe, cycle, candidates)
        except Exception:
            pass  # the loop closed meanwhile

    def _probe(self, cycle: int, candidates: list[Address]) -> None:
        if cycle != self._cycle or self._stopping:
            return
        self._candidates = list(candidates)
        if not self._candidates:
            self._causes.append(Cause(CauseKind.NO_SERVER, message="the list is empty or no name resolved"))
            self._cycle_failed()
            return
        self._probe_timer = self._live_loop.call_later(self._probe_timeout, self._probe_timed_out, cycle)
        self._probe_more()

    def _probe_more(self) -> None:
        loop = self._live_loop
        while len(self._probes) < self._probe_count and self._candidates:
            host, port = self._candidates.pop(0)
            try:
                cid = loop.connect(host, port)
            except OSError as exc:
                self._causes.append(_connect_cause((host, port), exc.errno or 0))
                log.info("pushcore client %s: connect %s:%d failed: %s", self.device_id, host, port, exc)
                continue
            except ValueError as exc:
                self._causes.append(Cause(CauseKind.NETWORK, message=str(exc), address=(host, port)))
                log.info("pushcore client %s: connect %s:%d failed: %s", self.device_id, host, port, exc)
                continue
            self._probes[cid] = (host, port)
            dispatch = self._dispatch
            assert dispatch is not None  # connect() made it before the first probe
            dispatch.clients[cid] = self
        if not self._probes and self._cid is None:
            self._cycle_failed()

    def _probe_timed_out(self, cycle: int) -> None:
        self._probe_timer = None
        if cycle != self._cycle or self._cid is not None or self._stopping:
            return
        loop = self._live_loop
        for cid, address in list(self._probes.items()):
            said = self._probe_cause.pop(cid, None)
            if said is None:
                try:
                    waiting_for = "TCP connection" if loop.conn_info(cid)["state"] == "connecting" else "WELCOME"
                except Exception:
                    waiting_for = "WELCOME"
                said = Cause(CauseKind.TIMED_OUT, message=f"no {waiting_for} within {self._probe_timeout:g} s",
                             address=address)
            self._causes.append(said)
            loop.close_conn(cid, Reason.NORMAL)
        self._probes.clear()
        self._candidates = []
        self._cycle_failed()

    def _cycle_failed(self) -> None:
        """No server welcomed us this cycle: give up for good, or back off and retry."""
        if self._probe_timer is not None:
            self._probe_timer.cancel()
            self._probe_timer = None
        cause = _cycle_cause(self._causes)
        fatal = [(code, msg) for code, msg in self._refusals if code in _FATAL]
        if fatal:
            code, message = fatal[0]
            for candidate in self._causes:
                if candidate.reason == code:
                    cause = candidate
                    break
            self._fail(_refusal(code, message), cause)
            return
        self._schedule_retry(cause=cause)

    def _fail(self, exc: BaseException, cause: Cause | None) -> None:
        self.error = exc
        self._stopping = True
        self._cancel_timers()
        self._set_state(ClientState.FAILED, cause)
        self._fail_waiters(exc)
        self._fail_upstreams(str(exc))
        if self._running:
            loop = self._live_loop
            loop.call_later(0.05, loop.stop)

    def _schedule_retry(self, delay: float | None = None, cause: Cause | None = None) -> None:
        if self._stopping:
            return
        if delay is None:
            delay = backoff_delay(self._attempt, *self._backoff)
            self._attempt += 1
        self.retry_delay = delay
        self._set_state(ClientState.BACKOFF, cause)
        self._retry_timer = self._live_loop.call_later(delay, self._retry)

    def _replaced_delay(self) -> float:
        """Delay before reconnecting after REPLACED: grows while replacements keep coming."""
        initial, maximum = self._replaced_backoff
        if time.monotonic() - self._connected_at >= 2 * maximum:
            self._replaced_streak = 0  # the last connection held: this is a fresh contest
        delay = backoff_delay(self._replaced_streak, initial, maximum)
        self._replaced_streak += 1
        return delay

    def _retry(self) -> None:
        self._retry_timer = None
        self._begin_cycle()

    def _token_bytes(self) -> bytes:
        token = self._token
        if callable(token):
            token = token()
        if isinstance(token, str):
            token = token.encode("utf-8")
        return bytes(token)

    # -- loop events (called by the dispatcher) -------------------------------

    def _on_open(self, cid: int) -> None:
        if cid in self._probes:
            hello = _frames.Hello(
                self._versions,
                self.device_id,
                self._token_bytes(),
                self.inbox.last_seq,
                int(self.heartbeat.interval),
            )
            self._live_loop.send(cid, hello.encode())

    def _close_cause(self, cid: int, reason: Reason | int, address: tuple[str, int] | None) -> Cause:
        """Why the loop closed *cid* with *reason*, with its errno (read in on_close, as docs/LOOP.md says)."""
        try:
            err = int(self._live_loop.conn_info(cid).get("errno") or 0)
        except Exception:
            err = 0
        if reason == Reason.CONNECT_FAILED:
            return _connect_cause(address, err)
        if reason == Reason.PEER_CLOSED:
            return Cause(CauseKind.PEER_CLOSED, reason, address=address)
        if reason == Reason.PEER_RESET:
            return Cause(CauseKind.PEER_RESET, reason, address=address, errno=err or None)
        if 0 < reason <= Reason.INVALID_VALUE:  # a codec error: the bytes the server sent did not decode
            return Cause(CauseKind.LOCAL, reason, address=address,
                         message="the server sent bytes that are not the pushcore protocol "
                                 "(is that a pushcore device port?)")
        return Cause(CauseKind.LOCAL, reason, address=address, errno=err or None)

    def _on_close(self, cid: int, reason: int) -> None:
        reason = _reason(reason)
        if cid in self._probes:
            address = self._probes.pop(cid)
            said = self._probe_cause.pop(cid, None)
            self._causes.append(said if said is not None else self._close_cause(cid, reason, address))
            if self._cid is None and not self._stopping:
                self._probe_more()
            return
        if cid != self._cid:
            return  # a probe we closed ourselves
        cause = self._close_cause_said or self._close_cause(cid, reason, self.server)
        self._close_cause_said = None
        self._cid = None
        self.server = None
        self._cancel_timers()
        self._fail_upstreams(f"connection closed ({cause})")
        if reason == Reason.IDLE_TIMEOUT:
            # No PONG within the timeout: the network dropped the idle connection.
            self.stats["heartbeat_failures"] += 1
            self.heartbeat.on_failure()
        if self._stopping:
            return
        if self._replaced:
            self.stats["replaced"] += 1
            if not self._reconnect_on_replaced:
                self._stopping = True
                self._set_state(ClientState.REPLACED, cause)
                self._fail_waiters(ConnectError("another connection of this device took over", cause))
                if self._running:
                    loop = self._live_loop
                    loop.call_later(0.05, loop.stop)
                return
            self._replaced = False
            self._set_state(ClientState.DISCONNECTED, cause)
            self._schedule_retry(self._replaced_delay(), cause)
            return
        self._set_state(ClientState.DISCONNECTED, cause)
        if self._redirect:
            self._begin_cycle()
        else:
            self._schedule_retry(cause=cause)

    # A frame's TYPE says which class it is: each branch casts it to that class.
    def _on_frame(self, cid: int, frame: Frame) -> None:
        if cid == self._cid:
            self._handle(cid, frame)
            return
        if cid not in self._probes:
            return
        kind = frame.TYPE
        if kind == _WELCOME:
            self._welcomed(cid, cast("Welcome", frame))
        elif kind == _ERROR:
            error = cast("ErrorFrame", frame)
            self._refusals.append((error.code, error.message))
            self._probe_cause[cid] = _error_cause(error.code, error.message, self._probes[cid])
            if error.code == Reason.LAST_SEQ_AHEAD and self.inbox.last_seq:
                # The server's store is behind us (restored from a backup,
                # another gateway's store): start over from 0, as PROTOCOL.md
                # 5a says, accepting that messages may come again.
                log.warning(
                    "pushcore client %s: the server has no seq up to our last_seq %d (%s); "
                    "resetting last_seq to 0", self.device_id, self.inbox.last_seq, error.message,
                )
                self.inbox.reset(0)
        elif kind == _GOAWAY:
            goaway = cast("Goaway", frame)
            self._probe_cause[cid] = Cause(CauseKind.GOAWAY, _reason(goaway.reason), goaway.message,
                                           self._probes[cid])
            if goaway.servers:
                self._redirect = parse_servers(goaway.servers)

    def _welcomed(self, cid: int, welcome: Welcome) -> None:
        loop = self._live_loop
        if welcome.version not in self._versions:
            message = f"server chose version {welcome.version}"
            self._refusals.append((Reason.UNSUPPORTED_VERSION, message))
            self._probe_cause[cid] = Cause(CauseKind.ERROR, Reason.UNSUPPORTED_VERSION, message, self._probes[cid])
            loop.close_conn(cid, Reason.UNSUPPORTED_VERSION)
            return
        self.server = self._probes.pop(cid)
        for other in list(self._probes):
            loop.close_conn(other, Reason.NORMAL)  # its close event is ignored (no longer a probe)
        self._probes.clear()
        self._candidates = []
        if self._probe_timer is not None:
            self._probe_timer.cancel()
            self._probe_timer = None
        self._cid = cid
        self._close_cause_said = None
        self._warned = None
        self._attempt = 0
        self._replaced = False
        self._connected_at = time.monotonic()
        self.stats["connects"] += 1
        # Expiry is judged by the server's clock: the offset is taken once per connection.
        self._clock_offset = welcome.server_time / 1000.0 - self._clock() if welcome.server_time else None
        self.inbox.connected()
        try:
            self.heartbeat.grant(welcome.heartbeat_min, welcome.heartbeat_max)
        except ValueError:
            log.warning("pushcore client %s: ignoring a bad heartbeat grant %r", self.device_id, welcome)
        self._apply_heartbeat()
        if self._topics:
            loop.send(cid, _frames.Subscribe(tuple(self._topics)).encode())
        self._set_state(ClientState.CONNECTED)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(self)

    def _handle(self, cid: int, frame: Frame) -> None:
        """A frame on the live connection *cid* (``self._cid``)."""
        kind = frame.TYPE
        if kind == _PUSH:
            push = cast("Push", frame)
            inbox = self.inbox
            offset = self._clock_offset
            seq = push.seq
            if inbox.receive(seq, push.expiry, 0.0 if offset is None else self._clock() + offset):
                if self._hand_over(push):
                    inbox.handled(seq)
                elif seq:
                    inbox.failed(seq)
                    if self._redeliver_timer is None:
                        self._redeliver_timer = self._live_loop.call_later(
                            self._redeliver_delay, self._redeliver_fired)
            if inbox.ack_due():
                self._flush_ack()
            elif inbox.unacked and self._ack_timer is None:
                self._ack_timer = self._live_loop.call_later(self._ack_delay, self._ack_timer_fired)
        elif kind == _NOTIFY:
            fetch = self.inbox.on_notify(cast("Notify", frame).latest_seq)
            if fetch is not None:
                self._flush_ack()
                self._live_loop.send(cid, _frames.Fetch(*fetch).encode())
        elif kind == _UPSTREAM_ACK:
            upstream_id = cast("UpstreamAck", frame).upstream_id
            future = self._upstreams.pop(upstream_id, None)
            if future is not None and not future.done():
                future.set_result(upstream_id)
        elif kind == _REDIRECT:
            servers = parse_servers(cast("Redirect", frame).servers)
            if servers:
                self._redirect = servers
                where = ", ".join(f"{h}:{p}" for h, p in servers)
                self._close_cause_said = Cause(CauseKind.REDIRECT, message=f"to {where}", address=self.server)
                self._flush_ack()
                self._live_loop.close_conn(cid, Reason.NORMAL)
        elif kind == _GOAWAY:
            goaway = cast("Goaway", frame)
            if goaway.reason == Reason.REPLACED:
                self._replaced = True
            if goaway.servers:
                self._redirect = parse_servers(goaway.servers)
            # Kept here: the server's close (EOF) often reaches the loop in the same
            # read as the GOAWAY, and the loop's close reason is then PEER_CLOSED.
            self._close_cause_said = Cause(CauseKind.GOAWAY, _reason(goaway.reason), goaway.message, self.server)
            self._flush_ack()
            self._live_loop.close_conn(cid, int(goaway.reason))
        elif kind == _ERROR:
            error = cast("ErrorFrame", frame)
            self._refusals.append((error.code, error.message))
            if self._close_cause_said is None:
                self._close_cause_said = _error_cause(error.code, error.message, self.server)
            log.warning(
                "pushcore client %s: server error %s: %s",
                self.device_id, reason_name(error.code), error.message,
            )

    def _hand_over(self, push: Push) -> bool:
        """Give *push* to ``on_message``; False (logged with the traceback) when it raised."""
        on_message = self.on_message
        if on_message is not None:
            try:
                on_message(push)
            except Exception:
                self.stats["handler_errors"] += 1
                if push.seq:
                    log.exception(
                        "pushcore client %s: on_message raised on seq %d: not acked; it comes again "
                        "in %g s or on the next connection", self.device_id, push.seq, self._redeliver_delay,
                    )
                else:
                    log.exception("pushcore client %s: on_message raised on an ephemeral message "
                                  "(seq 0, not redelivered)", self.device_id)
                return False
        self.stats["messages"] += 1
        return True

    def _redeliver_fired(self) -> None:
        """The redelivery delay passed: FETCH again from the last handled seq (the Inbox's barrier)."""
        self._redeliver_timer = None
        if self._cid is None:
            return
        fetch = self.inbox.redeliver()
        if fetch is not None:
            self._flush_ack()
            self._live_loop.send(self._cid, _frames.Fetch(*fetch).encode())

    # -- ACK, heartbeat -------------------------------------------------------

    def _ack_timer_fired(self) -> None:
        self._ack_timer = None
        self._flush_ack()

    def _flush_ack(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self._cid is None:
            return
        seq = self.inbox.take_ack()
        if seq is not None:
            self._live_loop.send(self._cid, _frames.Ack(seq).encode())

    def _apply_heartbeat(self) -> None:
        """Put the policy's interval on the connection and check its PONGs once per interval."""
        if self._cid is None:
            return
        interval = self.heartbeat.interval
        loop = self._live_loop
        loop.set_ping_interval(self._cid, interval)
        loop.set_idle_timeout(self._cid, interval + self._pong_timeout)
        self._pongs_seen = self._pongs(self._cid)
        if self._hb_timer is not None:
            self._hb_timer.cancel()
        self._hb_timer = loop.call_later(interval, self._heartbeat_check)

    def _pongs(self, cid: int) -> int:
        try:
            return int(self._live_loop.conn_info(cid).get("pongs", 0))
        except Exception:
            return 0

    def _heartbeat_check(self) -> None:
        """Once per interval: a PONG since the last check is one successful heartbeat."""
        self._hb_timer = None
        if self._cid is None:
            return
        pongs = self._pongs(self._cid)
        if pongs > self._pongs_seen and self.heartbeat.on_success():
            self._apply_heartbeat()
            return
        self._pongs_seen = pongs
        self._hb_timer = self._live_loop.call_later(self.heartbeat.interval, self._heartbeat_check)

    def set_network(self, name: str) -> None:
        """The device moved to network *name*: resume the heartbeat learnt there. Thread-safe."""
        def run() -> None:
            self.heartbeat.set_network(name)
            self._apply_heartbeat()

        self._soon(run)

    def _cancel_timers(self) -> None:
        for name in ("_probe_timer", "_retry_timer", "_ack_timer", "_hb_timer", "_redeliver_timer"):
            timer = getattr(self, name)
            if timer is not None:
                timer.cancel()
                setattr(self, name, None)

    # -- application requests -------------------------------------------------

    def subscribe(self, *topics: str) -> None:
        """Subscribe to *topics* now (if connected) and after every reconnect. Thread-safe.

        A topic outside the name rule of docs/PROTOCOL.md §5a raises
        ``ValueError`` here: sent, it would make the server close the
        connection (``INVALID_VALUE``).
        """
        topics = _checked_topics(topics)
        if not topics:
            return
        def run() -> None:
            new = [t for t in topics if t not in self._topics]
            self._topics.update(dict.fromkeys(new))
            if new and self._cid is not None:
                self._live_loop.send(self._cid, _frames.Subscribe(tuple(new)).encode())

        self._soon(run)

    def unsubscribe(self, *topics: str) -> None:
        """Stop receiving *topics*. Thread-safe."""
        topics = tuple(t for t in topics)
        if not topics:
            return
        def run() -> None:
            for t in topics:
                self._topics.pop(t, None)
            if self._cid is not None:
                self._live_loop.send(self._cid, _frames.Unsubscribe(topics).encode())

        self._soon(run)

    def upstream(self, payload: bytes, topic: str = "") -> concurrent.futures.Future[int]:
        """Send an UPSTREAM message; the future resolves with its id on UPSTREAM_ACK. Thread-safe.

        It fails with :class:`NotConnected` when the client is not connected
        or the connection closes before the ack (the message may or may not
        have reached the server's hook: resend if it must arrive). In asyncio
        code: ``await asyncio.wrap_future(client.upstream(b"..."))``.
        """
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        payload = bytes(payload)

        def run() -> None:
            if self._cid is None:
                future.set_exception(NotConnected("the client is not connected"))
                return
            self._upstream_id += 1
            upstream_id = self._upstream_id
            self._upstreams[upstream_id] = future
            self._live_loop.send(self._cid, _frames.Upstream(upstream_id, payload, topic).encode())

        self._soon(run)
        return future

    def _fail_upstreams(self, why: str) -> None:
        pending, self._upstreams = self._upstreams, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(NotConnected(f"no UPSTREAM_ACK: {why}"))

    def __repr__(self) -> str:
        return f"<pushcore.Client {self.device_id!r} {self.state.value} last_seq={self.last_seq}>"


def _reason(code: int) -> Reason | int:
    try:
        return Reason(code)
    except ValueError:
        return code


def _connect_cause(address: tuple[str, int] | None, err: int) -> Cause:
    """A failed TCP connect to *address* with OS error *err* (0: unknown)."""
    if err == _errno.ECONNREFUSED:
        kind = CauseKind.REFUSED
    elif err == _errno.ETIMEDOUT:
        kind = CauseKind.TIMED_OUT
    else:
        kind = CauseKind.NETWORK
    return Cause(kind, Reason.CONNECT_FAILED, address=address, errno=err or None)


def _error_cause(code: int, message: str, address: tuple[str, int] | None) -> Cause:
    """The server's ERROR *code* (*message*): an auth refusal or another error."""
    kind = CauseKind.AUTH if code in (Reason.AUTH_FAILED, Reason.TOKEN_EXPIRED) else CauseKind.ERROR
    return Cause(kind, _reason(code), message, address)


def _cycle_cause(causes: list[Cause]) -> Cause | None:
    """The cause to report for a connection cycle whose probes failed for *causes*.

    What a server said (ERROR, GOAWAY) tells more than a refused or silent
    port, so the first of those wins; else the last failure.
    """
    for cause in causes:
        if cause.kind in (CauseKind.AUTH, CauseKind.ERROR, CauseKind.GOAWAY):
            return cause
    return causes[-1] if causes else None

"""Hooks that complete later: an awaitable result waited for off the loop, continued on it.

The gateway's hooks (``authenticate``, ``authorize_subscribe``,
``on_upstream``) run on the loop thread. A hook that must look something up
(a token in a database, an ACL in Redis) may return instead of its answer:

* a **coroutine** (an ``async def`` hook, or any awaitable): it runs on the
  *hook loop*, an asyncio event loop: the application's own (``Server(...,
  hook_loop=loop)``, e.g. the loop of an aiohttp or FastAPI app that embeds
  the gateway) or, by default, one the server starts on a single background
  thread the first time it is needed. Every pending hook shares that one
  loop: no thread per call;
* a :class:`concurrent.futures.Future` (a hook that hands work to an
  executor or to another service's client): waited for on the same hook
  loop (``asyncio.wrap_future``), so its deadline works the same way.

Meanwhile only that connection waits; the loop goes on with every other
one. The answer comes back to the loop thread in the loop's thread-safe
hand-over (``call_soon_threadsafe``), where the gateway continues the
frame. :class:`HookWaiter` bounds how many hooks may be pending at once (a
burst of HELLOs against a slow database must not queue without limit: the
server checks :meth:`HookWaiter.full` before calling a hook, so one frame's
topics may pass the bound by their number) and how long each may take
(``timeout``: past it the answer is :class:`HookTimeout`, and a coroutine
is cancelled). The waits of a connection that closes meanwhile are
cancelled (:meth:`HookWaiter.cancel`), so a device that gives up frees its
places at once.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import PushcoreError

__all__ = ["HookWaiter", "HookTimeout", "is_pending", "DEFAULT_MAX_PENDING_HOOKS", "DEFAULT_HOOK_TIMEOUT"]

log = logging.getLogger("pushcore.gateway.awaiting")

#: hooks that may be pending at once; past it a new HELLO is refused OVERLOADED
DEFAULT_MAX_PENDING_HOOKS = 1024
#: seconds a pending hook may take before its frame is refused
DEFAULT_HOOK_TIMEOUT = 10.0


class HookTimeout(PushcoreError, TimeoutError):
    """A hook's awaitable did not complete within the server's ``hook_timeout``."""


def is_pending(value: object) -> bool:
    """True when a hook returned something to wait for rather than its answer."""
    return isinstance(value, concurrent.futures.Future) or inspect.isawaitable(value)


async def _awaited(awaitable: Awaitable[Any] | concurrent.futures.Future[Any], timeout: float) -> Any:
    if isinstance(awaitable, concurrent.futures.Future):
        awaitable = asyncio.wrap_future(awaitable)  # on the hook loop: its result wakes that loop
    task = asyncio.ensure_future(awaitable)
    try:
        finished, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:  # the connection closed: stop the hook's work too
        task.cancel()
        raise
    if not finished:
        task.cancel()
        raise HookTimeout(f"the hook did not answer within {timeout} s")
    return task.result()  # the hook's own error (a TimeoutError of its database included) as raised


class HookWaiter:
    """Waits for pending hook results and hands each back to the loop (see the module doc).

    *call_soon_threadsafe(fn, *args)* runs ``fn(*args)`` on the loop thread
    (``Loop.call_soon_threadsafe``). *hook_loop* is the asyncio loop that runs
    coroutines (None: one started on first use, on its own thread).
    """

    def __init__(
        self,
        call_soon_threadsafe: Callable[..., object],
        *,
        max_pending: int = DEFAULT_MAX_PENDING_HOOKS,
        timeout: float = DEFAULT_HOOK_TIMEOUT,
        hook_loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not isinstance(max_pending, int) or isinstance(max_pending, bool) or max_pending < 1:
            raise ValueError(f"max_pending_hooks must be an int >= 1, got {max_pending!r}")
        if not timeout > 0:
            raise ValueError(f"hook_timeout must be > 0, got {timeout!r}")
        self._schedule = call_soon_threadsafe
        self.max_pending = max_pending
        self.timeout = float(timeout)
        self._hook_loop = hook_loop
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self._own_thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # (cid, n) -> the future being waited for; cid -> its waits (the loop thread only)
        self._pending: dict[tuple[int, int], concurrent.futures.Future[Any]] = {}
        self._by_cid: dict[int, set[tuple[int, int]]] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._pending)

    def full(self) -> bool:
        """True when no more hooks may be pending (refuse the frame instead of calling the hook)."""
        return len(self._pending) >= self.max_pending

    def wait(self, cid: int, value: Any, then: Callable[[Any, BaseException | None], object]) -> None:
        """Wait for *value* (a hook's result for connection *cid*); then ``then(result, error)`` on the loop.

        Called on the loop thread. ``then`` is not called once the waits of
        *cid* are cancelled (:meth:`cancel`: the connection closed). A hook
        that times out gives ``error`` :class:`HookTimeout`.
        """
        self._next += 1
        key = (cid, self._next)
        future = asyncio.run_coroutine_threadsafe(_awaited(value, self.timeout), self._asyncio_loop())
        self._pending[key] = future
        self._by_cid.setdefault(cid, set()).add(key)

        def finished(done: concurrent.futures.Future[Any]) -> None:  # any thread
            try:
                self._schedule(self._finish, key, done, then)
            except Exception as exc:  # the loop is closed: nobody is left to continue the frame
                log.debug("pushcore: a hook's answer arrived after the loop closed: %s", exc)

        future.add_done_callback(finished)

    def cancel(self, cid: int) -> None:
        """Forget every wait of connection *cid* (it closed); their coroutines are cancelled."""
        keys = self._by_cid.pop(cid, None)
        if keys:
            for key in keys:
                future = self._pending.pop(key, None)
                if future is not None:
                    future.cancel()

    def close(self) -> None:
        """Cancel every wait and stop the hook thread this waiter started (if any)."""
        for cid in list(self._by_cid):
            self.cancel(cid)
        own, thread = self._own_loop, self._own_thread
        self._own_loop = self._own_thread = None
        if own is not None and thread is not None:
            own.call_soon_threadsafe(own.stop)
            thread.join(5.0)
            if not thread.is_alive():
                own.close()

    # -- internals --

    def _finish(self, key: tuple[int, int], done: concurrent.futures.Future[Any],
                then: Callable[[Any, BaseException | None], object]) -> None:
        """On the loop thread: the answer of a wait that is still wanted."""
        if self._pending.pop(key, None) is not done:
            return  # cancelled: the connection closed
        keys = self._by_cid.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_cid[key[0]]
        if done.cancelled():  # the hook's own future was cancelled: it gave no answer
            error: BaseException | None = HookTimeout("the hook's future was cancelled before it answered")
            result = None
        else:
            error = done.exception()
            result = None if error is not None else done.result()
        then(result, error)

    def _asyncio_loop(self) -> asyncio.AbstractEventLoop:
        if self._hook_loop is not None:
            return self._hook_loop
        with self._start_lock:
            if self._own_loop is None:
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                thread = threading.Thread(target=run, name="pushcore-hooks", daemon=True)
                thread.start()
                started.wait(5.0)
                self._own_loop, self._own_thread = loop, thread
            return self._own_loop

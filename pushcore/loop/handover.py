"""Hand work to the thread that runs a loop, from any other thread.

One mechanism for the whole package: ``Server.call``, the admin API's
metrics collector and the simulator's traffic generator all go through
:func:`call_on_loop` (wait for the result) or :func:`submit_to_loop` (a
future, no wait). Work handed over is kept in one FIFO per loop and run in
order by one callback per loop wake-up: calls that arrive while the loop is
busy are all run in its next turn, and their output is flushed together
(one ``writev`` per connection) at the end of that turn. Only the first call
of a batch pays the ``call_soon_threadsafe`` wake-up (an eventfd write).
:func:`run_until` runs turns from the calling thread itself (tests, scripts).
"""
from __future__ import annotations

import collections
import concurrent.futures
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import PushcoreError

if TYPE_CHECKING:
    from .._loop import Loop

__all__ = ["LoopUnavailable", "LoopTimeout", "call_on_loop", "submit_to_loop", "run_until", "fail_pending"]

T = TypeVar("T")


class LoopUnavailable(PushcoreError, RuntimeError):
    """The loop is closed or stopped: the work was not handed over."""


class LoopTimeout(LoopUnavailable, TimeoutError):
    """The loop did not run the work within the timeout (it may still run it later,
    unless it had not started)."""


_Item = tuple[Callable[..., Any], tuple[Any, ...], "concurrent.futures.Future[Any]"]


class _Handover:
    """The FIFO of work waiting for one loop, and the one callback that drains it.

    Producers (any thread) append, then schedule a drain unless one is
    pending; the drain clears the flag *before* it takes the items, so an
    item appended after that schedules the next drain itself: nothing waits
    without a wake-up, and a burst of calls costs one.
    """

    __slots__ = ("queue", "scheduled", "__weakref__")

    def __init__(self) -> None:
        self.queue: collections.deque[_Item] = collections.deque()
        self.scheduled = False

    def submit(self, loop: Loop, item: _Item) -> None:
        if loop.closed:
            raise LoopUnavailable("the loop is closed")
        self.queue.append(item)
        if not self.scheduled:
            self.scheduled = True
            try:
                loop.call_soon_threadsafe(self.drain)
            except Exception as exc:
                self.scheduled = False
                self.fail("the loop is closed")
                raise LoopUnavailable(f"the loop is closed ({exc})") from None
        if loop.closed:  # closed while this was queued: nothing will drain it
            self.fail("the loop closed")

    def fail(self, why: str) -> None:
        """Fail every queued item with :class:`LoopUnavailable` (the loop will not run them)."""
        queue = self.queue
        while queue:
            try:
                _fn, _args, future = queue.popleft()
            except IndexError:
                return
            if future.set_running_or_notify_cancel():
                future.set_exception(LoopUnavailable(why))

    def drain(self) -> None:
        """On the loop thread: run what is queued now, in order (later items: the next drain)."""
        self.scheduled = False
        queue = self.queue
        for _ in range(len(queue)):
            fn, args, future = queue.popleft()
            if not future.set_running_or_notify_cancel():
                continue  # the caller gave up waiting before it started
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the waiting thread
                future.set_exception(exc)


_handovers: weakref.WeakKeyDictionary[Loop, _Handover] = weakref.WeakKeyDictionary()
_handovers_lock = threading.Lock()


def _handover(loop: Loop) -> _Handover:
    handover = _handovers.get(loop)
    if handover is None:
        with _handovers_lock:
            handover = _handovers.get(loop)
            if handover is None:
                handover = _handovers[loop] = _Handover()
    return handover


def fail_pending(loop: Loop, why: str = "the loop stopped before running it") -> None:
    """Fail the work still queued for *loop* (it stopped for good): its callers get
    :class:`LoopUnavailable` now instead of waiting for their timeout."""
    handover = _handovers.get(loop)
    if handover is not None:
        handover.fail(why)


def submit_to_loop(loop: Loop, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
    """Run ``fn(*args)`` on the thread running *loop*, without waiting: a future of its result.

    Calls from any threads run in the order they were submitted; those that
    arrive within one loop turn run in that turn. Raises
    :class:`LoopUnavailable` at once when the loop is closed; an exception of
    *fn* is set on the future.
    """
    future: concurrent.futures.Future[T] = concurrent.futures.Future()
    _handover(loop).submit(loop, (fn, args, future))
    return future


def call_on_loop(loop: Loop, fn: Callable[..., T], *args: Any, timeout: float | None = 5.0) -> T:
    """Run ``fn(*args)`` on the thread running *loop*; return its result or raise its exception.

    For callers on another thread (an HTTP handler, the application): calling
    it from the loop's own thread would wait for itself. Raises
    :class:`LoopUnavailable` when the loop is closed, :class:`LoopTimeout`
    after *timeout* seconds (``None``: wait for ever).
    """
    future = submit_to_loop(loop, fn, *args)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise LoopTimeout(f"the loop did not answer within {timeout} s") from None


def run_until(loop: Loop, predicate: Callable[[], bool], timeout: float = 5.0,
              step: float = 0.05) -> bool:
    """Run turns of *loop* until ``predicate()`` is true or *timeout* seconds pass.
    Returns the predicate's last value (handy in tests and scripts)."""
    deadline = loop.time() + timeout
    while not predicate():
        left = deadline - loop.time()
        if left <= 0:
            return predicate()
        loop.run_once(min(step, left))
    return True

"""Hand work to the thread that runs a loop, from any other thread.

One mechanism for the whole package: ``Server.call``, the admin API's
metrics collector and the simulator's traffic generator all go through
:func:`call_on_loop` (one ``call_soon_threadsafe`` wake-up, then a wait on a
future). :func:`run_until` runs turns from the calling thread itself (tests,
scripts).
"""
from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import PushcoreError

if TYPE_CHECKING:
    from .._loop import Loop

__all__ = ["LoopUnavailable", "LoopTimeout", "call_on_loop", "run_until"]

T = TypeVar("T")


class LoopUnavailable(PushcoreError, RuntimeError):
    """The loop is closed or stopped: the work was not handed over."""


class LoopTimeout(LoopUnavailable, TimeoutError):
    """The loop did not run the work within the timeout (it may still run it later,
    unless it had not started)."""


def call_on_loop(loop: Loop, fn: Callable[..., T], *args: Any, timeout: float | None = 5.0) -> T:
    """Run ``fn(*args)`` on the thread running *loop*; return its result or raise its exception.

    For callers on another thread (an HTTP handler, the application): calling
    it from the loop's own thread would wait for itself. Raises
    :class:`LoopUnavailable` when the loop is closed, :class:`LoopTimeout`
    after *timeout* seconds (``None``: wait for ever).
    """
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return  # the caller gave up waiting before it started
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to the waiting thread
            future.set_exception(exc)

    try:
        loop.call_soon_threadsafe(run)
    except Exception as exc:
        raise LoopUnavailable(f"the loop is closed ({exc})") from None
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

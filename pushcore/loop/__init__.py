"""Python-level helpers around the C-level connection loop (``pushcore._loop``).

:class:`Loop` is the compiled class itself (docs/LOOP.md describes it). This
module adds what is easier in Python: driving a Loop from inside a running
asyncio event loop without a thread (:func:`attach_asyncio`), and naming the
integer reason codes the loop reports.
"""
from __future__ import annotations

import asyncio
from typing import Callable

from .._loop import Loop, TimerHandle, sizeof_conn
from ..errors import Reason, reason_name

__all__ = [
    "Loop", "TimerHandle", "Reason", "AsyncioDriver", "attach_asyncio", "sizeof_conn",
    "named_stats", "run_until",
]


class AsyncioDriver:
    """Runs a :class:`Loop`'s turns from an asyncio event loop.

    The Loop's epoll fd is registered with ``add_reader`` (an epoll fd is
    readable while any socket in it has events), an asyncio timer follows the
    Loop's next deadline (timing wheel, ``call_later``), and work queued from
    asyncio code outside a turn (``send``, ``close``, ``call_soon`` ...) makes
    the Loop ask for a turn through its wakeup hook. Every turn is
    ``run_once(0)``: it never blocks the asyncio loop.
    """

    def __init__(self, loop: Loop, aio_loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.aio_loop = aio_loop
        self._timer: asyncio.TimerHandle | None = None
        self._soon: asyncio.Handle | None = None
        self._fd = loop.fileno()
        self.attached = True
        aio_loop.add_reader(self._fd, self._turn)
        loop._set_wakeup(self._wake)
        self._reschedule()

    def _turn(self) -> None:
        self._soon = None
        if not self.attached or self.loop.closed:
            return
        try:
            self.loop.run_once(0)
        finally:
            if self.attached and not self.loop.closed:
                self._reschedule()

    def _wake(self) -> None:
        if self._soon is None and self.attached:
            self._soon = self.aio_loop.call_soon(self._turn)

    def _reschedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        delay = self.loop.next_timeout()
        if delay is None:
            return
        if delay <= 0:
            self._wake()
        else:
            self._timer = self.aio_loop.call_later(delay, self._turn)

    def detach(self) -> None:
        """Stop driving the Loop (it stays open; it can be run or attached again)."""
        if not self.attached:
            return
        self.attached = False
        self.aio_loop.remove_reader(self._fd)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        if not self.loop.closed:
            self.loop._set_wakeup(None)


def attach_asyncio(loop: Loop, aio_loop: asyncio.AbstractEventLoop | None = None) -> AsyncioDriver:
    """Drive *loop* from *aio_loop* (default: the running asyncio loop).

    Call :meth:`AsyncioDriver.detach` before closing the Loop. Handlers run in
    the asyncio thread, inside the driver's turns.
    """
    if aio_loop is None:
        aio_loop = asyncio.get_running_loop()
    return AsyncioDriver(loop, aio_loop)


def named_stats(loop: Loop) -> dict:
    """``loop.stats()`` with the reason-code keys of ``closed_by_reason`` and
    ``errors_by_code`` turned into :class:`pushcore.Reason` names."""
    stats = loop.stats()
    for key in ("closed_by_reason", "errors_by_code"):
        stats[key] = {reason_name(code): n for code, n in stats[key].items()}
    return stats


def run_until(loop: Loop, predicate: Callable[[], bool], timeout: float = 5.0,
              step: float = 0.05) -> bool:
    """Run turns until ``predicate()`` is true or *timeout* seconds pass.
    Returns the predicate's last value (handy in tests and scripts)."""
    deadline = loop.time() + timeout
    while not predicate():
        left = deadline - loop.time()
        if left <= 0:
            return predicate()
        loop.run_once(min(step, left))
    return True


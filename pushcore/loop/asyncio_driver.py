"""Drive a C-level :class:`~pushcore.loop.Loop` from a running asyncio event loop,
without a thread (``Client.run_async``, applications on asyncio)."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._loop import Loop

__all__ = ["AsyncioDriver", "attach_asyncio"]


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

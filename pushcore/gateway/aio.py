"""The asyncio face of :class:`pushcore.Server`: ``await server.push_async(...)`` and friends.

An application built on asyncio (aiohttp, FastAPI, ...) must not call the
blocking ``push()`` from its event loop. These coroutines take the
``wait=False`` form of each call, which submits the work to the store
pipeline at once and returns a ``concurrent.futures.Future``, and await it
with :func:`asyncio.wrap_future`: the future's completion (on the store's
writer thread, once the write is durable and the delivery queued) wakes
the caller's own event loop through its thread-safe hand-over. No thread
per call, no executor; many awaits in flight share the pipeline's group
commits, so ``asyncio.gather`` of many pushes costs about what one
``push_batch`` does.

Each coroutine has its blocking twin's arguments, result and errors (bad
arguments raise at once, before anything is stored).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .results import BatchResult, FanOut

if TYPE_CHECKING:
    from .server import _BatchItem

__all__ = ["AsyncSends"]


class _Sends(Protocol):
    """What :class:`AsyncSends` needs of the server (its blocking calls' ``wait=False`` forms)."""

    def push(self, device_id: str, payload: bytes, *, wait: Literal[False], **options: Any
             ) -> concurrent.futures.Future[int]: ...
    def push_batch(self, messages: Iterable[_BatchItem], *, wait: Literal[False]
                   ) -> concurrent.futures.Future[BatchResult]: ...
    def publish(self, topic: str, payload: bytes, *, wait: Literal[False], **options: Any
                ) -> concurrent.futures.Future[FanOut]: ...
    def broadcast(self, payload: bytes, *, wait: Literal[False], **options: Any
                  ) -> concurrent.futures.Future[FanOut | int]: ...


class AsyncSends:
    """Awaitable forms of ``push``, ``push_batch``, ``publish`` and ``broadcast`` (module doc)."""

    async def push_async(
        self: _Sends,
        device_id: str,
        payload: bytes,
        *,
        priority: int | str = 1,
        ttl: float | None = None,
        collapse_key: str = "",
        topic: str = "",
        message_id: int | None = None,
        idempotency_key: str | None = None,
    ) -> int:
        """``await`` form of :meth:`Server.push`: the message's seq once it is stored and its PUSH queued."""
        return await asyncio.wrap_future(self.push(
            device_id, payload, priority=priority, ttl=ttl, collapse_key=collapse_key, topic=topic,
            message_id=message_id, idempotency_key=idempotency_key, wait=False))

    async def push_batch_async(self: _Sends, messages: Iterable[_BatchItem]) -> BatchResult:
        """``await`` form of :meth:`Server.push_batch` (one transaction, one delivery pass)."""
        return await asyncio.wrap_future(self.push_batch(messages, wait=False))

    async def publish_async(
        self: _Sends,
        topic: str,
        payload: bytes,
        *,
        priority: int | str = 1,
        ttl: float | None = None,
        collapse_key: str = "",
    ) -> FanOut:
        """``await`` form of :meth:`Server.publish`: how many subscribers it was stored for."""
        return await asyncio.wrap_future(self.publish(
            topic, payload, priority=priority, ttl=ttl, collapse_key=collapse_key, wait=False))

    async def broadcast_async(
        self: _Sends,
        payload: bytes,
        *,
        priority: int | str = 1,
        ttl: float | None = None,
        collapse_key: str = "",
        topic: str = "",
        durable: bool = False,
    ) -> FanOut | int:
        """``await`` form of :meth:`Server.broadcast`: how many connected devices it went to."""
        return await asyncio.wrap_future(self.broadcast(
            payload, priority=priority, ttl=ttl, collapse_key=collapse_key, topic=topic,
            durable=durable, wait=False))

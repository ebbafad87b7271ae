"""Share one connection loop between a Server and any number of Clients.

``pushcore._loop.Loop`` takes one set of batched callbacks (``on_frames``,
``on_open``, ``on_close``, ``on_awake``, …). :class:`LoopDispatch` installs
them once per loop and hands each event to its owner:

* a :class:`pushcore.Client` registers the cids it opens (one while
  connected, a few while probing), so client events are found with one dict
  lookup per event;
* everything else belongs to the loop's :class:`pushcore.Server`, if any,
  which gets its events as whole batches. The server keeps no per-connection
  entry here (its connections cost nothing in this table), and when no
  client shares the loop each batch is passed on untouched.

So ten thousand simulated devices fit on one loop (each Client costs one
dict entry here), and a test can run a server and its clients on one loop
in one thread.
"""
from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, overload

if TYPE_CHECKING:
    from .._frame import Frame
    from .._loop import Loop

__all__ = ["LoopDispatch", "dispatch_for"]

_X = TypeVar("_X")


class ServerSide(Protocol):
    """What a server attached to a loop receives (whole batches)."""

    def _on_frames(self, batch: list[tuple[int, Frame]]) -> None: ...
    def _on_open(self, batch: list[tuple[int, int]]) -> None: ...
    def _on_close(self, batch: list[tuple[int, int]]) -> None: ...
    def _on_awake(self, batch: list[int]) -> None: ...
    def _on_pause(self, batch: list[int]) -> None: ...
    def _on_resume(self, batch: list[int]) -> None: ...


class ClientSide(Protocol):
    """What a client receives: one call per event on one of its cids."""

    def _on_frame(self, cid: int, frame: Frame) -> None: ...
    def _on_open(self, cid: int) -> None: ...
    def _on_close(self, cid: int, reason: int) -> None: ...


# One dispatcher per loop object, forgotten with the loop (the Loop type supports
# weak references; the dispatcher itself keeps none to the loop, and the loop's
# handlers keep the dispatcher alive exactly as long as the loop).
_dispatchers: weakref.WeakKeyDictionary[Loop, LoopDispatch] = weakref.WeakKeyDictionary()


def dispatch_for(loop: Loop) -> LoopDispatch:
    """The dispatcher of *loop*, installing its handlers the first time."""
    dispatch = _dispatchers.get(loop)
    if dispatch is None:
        dispatch = _dispatchers[loop] = LoopDispatch(loop)
    return dispatch


class LoopDispatch:
    """Routes one loop's callbacks to its server and its clients (see the module doc)."""

    def __init__(self, loop: Loop) -> None:
        self.server: ServerSide | None = None
        self.clients: dict[int, ClientSide] = {}
        loop.set_handlers(
            on_frames=self._on_frames,
            on_open=self._on_open,
            on_close=self._on_close,
            on_awake=self._on_awake,
            on_pause=self._on_pause,
            on_resume=self._on_resume,
        )

    # -- membership -----------------------------------------------------------

    def set_server(self, server: ServerSide | None) -> None:
        if server is not None and self.server is not None and self.server is not server:
            raise RuntimeError("this loop already runs a Server; give each Server its own Loop")
        self.server = server

    # -- events ---------------------------------------------------------------

    def _on_frames(self, batch: list[tuple[int, Frame]]) -> None:
        clients = self.clients
        if not clients:
            if self.server is not None:
                self.server._on_frames(batch)
            return
        rest: list[tuple[int, Frame]] | None = None
        for item in batch:
            client = clients.get(item[0])
            if client is None:
                if rest is None:
                    rest = []
                rest.append(item)
            else:
                client._on_frame(item[0], item[1])
        if rest and self.server is not None:
            self.server._on_frames(rest)

    @overload
    def _split(self, batch: list[tuple[int, _X]], key_is_pair: Literal[True]
               ) -> tuple[Sequence[tuple[int, _X]], list[tuple[int, _X]]]: ...
    @overload
    def _split(self, batch: list[int], key_is_pair: Literal[False]) -> tuple[Sequence[int], list[int]]: ...

    def _split(self, batch: list[Any], key_is_pair: bool) -> tuple[Sequence[Any], list[Any]]:
        """(client items, the rest) of *batch* whose items are cids or (cid, x) pairs."""
        clients = self.clients
        if not clients:
            return (), batch
        mine: list[Any] = []
        rest: list[Any] = []
        for item in batch:
            cid = item[0] if key_is_pair else item
            (mine if cid in clients else rest).append(item)
        return mine, rest

    def _on_open(self, batch: list[tuple[int, int]]) -> None:
        mine, rest = self._split(batch, True)
        for cid, _listener in mine:
            client = self.clients.get(cid)
            if client is not None:
                client._on_open(cid)
        if rest and self.server is not None:
            self.server._on_open(rest)

    def _on_close(self, batch: list[tuple[int, int]]) -> None:
        mine, rest = self._split(batch, True)
        for cid, reason in mine:
            client = self.clients.pop(cid, None)
            if client is not None:
                client._on_close(cid, reason)
        if rest and self.server is not None:
            self.server._on_close(rest)

    def _on_awake(self, batch: list[int]) -> None:
        mine, rest = self._split(batch, False)
        if rest and self.server is not None:
            self.server._on_awake(rest)

    def _on_pause(self, batch: list[int]) -> None:
        _mine, rest = self._split(batch, False)
        if rest and self.server is not None:
            self.server._on_pause(rest)

    def _on_resume(self, batch: list[int]) -> None:
        _mine, rest = self._split(batch, False)
        if rest and self.server is not None:
            self.server._on_resume(rest)

"""The connection loop: the C-level :class:`Loop` and the Python pieces around it.

``Loop`` is the compiled class of ``ext/_loop.pyx`` (docs/LOOP.md): epoll,
per-connection C structs, pooled buffers, the timing wheel, write coalescing,
PING answered in C, handlers called in batches. This package adds what is
easier in Python:

================  ============================================================
module            job
================  ============================================================
``dispatch``      one loop shared by a Server and many Clients
``handover``      run work on the loop's thread from another (``call_on_loop``, ``submit_to_loop``)
``asyncio_driver``  drive a Loop from an asyncio event loop, without a thread
``stats``         counters with reason names
``limits``        the defaults of the abuse limits (``Loop.set_limits``)
================  ============================================================

``Loop``, ``TimerHandle`` and ``sizeof_conn`` are looked up on first use, so
that ``import pushcore`` works where the extensions are not built; using them
there raises :class:`pushcore.native.ExtensionMissing` naming the cause.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..native import require
from ..wire import Reason
from .asyncio_driver import AsyncioDriver, attach_asyncio
from .handover import LoopTimeout, LoopUnavailable, call_on_loop, run_until, submit_to_loop
from .stats import named_stats

if TYPE_CHECKING:
    from .._loop import Loop, TimerHandle, sizeof_conn

__all__ = [
    "Loop", "TimerHandle", "Reason", "AsyncioDriver", "attach_asyncio", "sizeof_conn",
    "named_stats", "run_until", "call_on_loop", "submit_to_loop", "LoopUnavailable", "LoopTimeout", "new_loop",
]

_FROM_EXTENSION = ("Loop", "TimerHandle", "sizeof_conn")


def new_loop(**options: Any) -> Loop:
    """A new C-level Loop (``Loop(**options)``), or ``ExtensionMissing`` with the cause."""
    return require("_loop", "a connection loop").Loop(**options)  # type: ignore[no-any-return]


def __getattr__(name: str) -> Any:
    if name in _FROM_EXTENSION:
        return getattr(require("_loop", f"pushcore.loop.{name}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

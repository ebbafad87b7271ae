"""The server's background purge: expired messages and empty device records, in short steps.

One timer on the loop. Each step deletes at most ``batch`` expired messages
(``Store.purge_expired(limit=batch)``, which is also where other expired
records go), and once none are left drops at most ``batch`` records of
devices that hold nothing (``Store.drop_empty_devices``; the store keeps
exactly-once through its seq floor, see :mod:`pushcore.store.base`). While
a step finds a full batch, the next one comes soon (:data:`PURGE_SOON`
seconds, so the loop serves its connections between steps); otherwise it
comes after ``interval`` seconds. The steps run in the server's store
pipeline (:mod:`pushcore.store.pipeline`), off the loop thread: the timer
submits a step and its completion sets the next timer.
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from ..store import Store, StoreUnavailable

if TYPE_CHECKING:
    from .._loop import Loop, TimerHandle
    from ..store.pipeline import StorePipeline

__all__ = ["Purger", "DEFAULT_PURGE_INTERVAL", "DEFAULT_PURGE_BATCH", "PURGE_SOON"]

log = logging.getLogger("pushcore.server")

DEFAULT_PURGE_INTERVAL = 60.0  # seconds between purges when there is little to do
DEFAULT_PURGE_BATCH = 500  # most rows one step deletes (expired messages, then empty device records)
PURGE_SOON = 0.005  # seconds to the next step while steps find full batches


class Purger:
    """Runs the purge steps of one store on one loop (everything on the loop thread)."""

    def __init__(self, store: Store, loop: Loop, *, interval: float = DEFAULT_PURGE_INTERVAL,
                 batch: int = DEFAULT_PURGE_BATCH, pipeline: StorePipeline | None = None) -> None:
        check_purge_options(interval, batch)
        self.store = store
        self.pipeline = pipeline  # the steps run there (off the loop thread) when given
        self.loop = loop
        self.interval = float(interval)
        self.batch = batch
        self.steps = 0  # steps run (for tests and curious operators)
        self._timer: TimerHandle | None = None
        self._stopped = False

    def start(self) -> None:
        """Schedule the first step, ``interval`` seconds from now."""
        if self._timer is None and not self._stopped:
            self._timer = self.loop.call_later(self.interval, self._step)

    def stop(self) -> None:
        """Cancel the next step; no step runs after this."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def step(self) -> bool:
        """One step now: True when it found a full batch (more is probably waiting)."""
        store = self.store
        batch = self.batch
        self.steps += 1
        removed = store.purge_expired(limit=batch)
        if removed >= batch:
            return True
        _dropped, more = store.drop_empty_devices(limit=batch)
        return more

    def _step(self) -> None:
        self._timer = None
        if self._stopped or self.store.closed:
            return
        if self.pipeline is not None:
            try:
                self.pipeline.submit(lambda store: self.step(), done=self._stepped)
            except Exception:  # the pipeline closed: the server is stopping
                return
            return
        try:
            more = self.step()
        except Exception as exc:
            self._stepped(None, exc)
        else:
            self._stepped(more, None)

    def _stepped(self, more: bool | None, error: BaseException | None) -> None:
        """A step ran (on the loop thread): schedule the next one."""
        if isinstance(error, StoreUnavailable):
            # A store that cannot write now (locked by another process, disk full) is
            # tried again at the slow pace; the outage itself is logged by the store.
            log.info("pushcore server: the background purge waits for the store (%s); next try in %.0f s",
                     error.cause, self.interval)
            more = False
        elif error is not None:
            log.warning("pushcore server: the background purge failed; trying again in %.0f s",
                        self.interval, exc_info=error)
            more = False
        if not self._stopped and self._timer is None:
            self._timer = self.loop.call_later(PURGE_SOON if more else self.interval, self._step)


def check_purge_options(interval: object, batch: object) -> None:
    """ValueError unless *interval* is seconds > 0 and *batch* an int >= 1."""
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval < math.inf:
        raise ValueError(f"purge_interval must be seconds > 0, got {interval!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"purge_batch must be an int >= 1, got {batch!r}")

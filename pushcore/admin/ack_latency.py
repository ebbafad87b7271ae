"""Push→ack latency: from a message's append to the store until a device's ACK covers it.

The store sees both ends of a message's life on a gateway: ``append`` gives
it a seq, and the device's cumulative ``ACK n`` removes every seq up to
``n``. :class:`PushAckTracker` keeps, per device, the append times of the
messages not acked yet (a deque of ``(seq, time)``, in seq order) and, on
each ack, observes ``now - append time`` for every message it covers into a
:class:`pushcore.admin.prometheus.Histogram`.

:func:`track_store` connects a tracker to a live store as a store observer
(:meth:`pushcore.store.Store.add_observer`): every public append and ack of
the store reports to it, so pushes, publishes, durable broadcasts and acks
of any origin are counted. Observers run under the store's lock, which also
guards the tracker's per-device state.

The latency includes the time a device was offline: it is the delivery
latency a user sees, not the network round trip. Messages removed without an
ack (cap, expiry) are forgotten when a later ack passes them, or dropped
from the tracker when a device has more than ``max_pending`` waiting.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from .prometheus import LATENCY_BUCKETS, Histogram

if TYPE_CHECKING:
    from ..store.base import Store

__all__ = ["PushAckTracker", "track_store", "store_tracker"]

_S = TypeVar("_S", bound="Store")


class PushAckTracker:
    """Pairs appends with acks per device and feeds the latencies to a histogram."""

    def __init__(
        self,
        histogram: Histogram | None = None,
        *,
        max_pending: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.histogram = histogram if histogram is not None else Histogram(
            "pushcore_push_ack_seconds",
            "Seconds from a message's append to the store until the device acked it.",
            buckets=LATENCY_BUCKETS,
        )
        self.max_pending = max_pending
        self._clock = clock
        self._pending: dict[str, deque[tuple[int, float]]] = {}
        self.appended = 0  # messages seen appended
        self.acked = 0  # messages whose ack was observed
        self.forgotten = 0  # pending entries dropped (over max_pending)

    def pushed(self, device_id: str, seq: int, when: float | None = None) -> None:
        """Message *seq* of *device_id* was stored at *when* (default: now)."""
        if when is None:
            when = self._clock()
        pending = self._pending.get(device_id)
        if pending is None:
            pending = self._pending[device_id] = deque()
        pending.append((seq, when))
        self.appended += 1
        if len(pending) > self.max_pending:
            pending.popleft()
            self.forgotten += 1

    def acked_up_to(self, device_id: str, seq: int, when: float | None = None) -> int:
        """*device_id* acked every seq up to *seq*; returns how many latencies were observed."""
        pending = self._pending.get(device_id)
        if not pending:
            return 0
        if when is None:
            when = self._clock()
        latencies = []
        while pending and pending[0][0] <= seq:
            latencies.append(when - pending.popleft()[1])
        if not pending:
            del self._pending[device_id]
        if latencies:
            self.histogram.observe_many(latencies)
            self.acked += len(latencies)
        return len(latencies)

    # -- StoreObserver (pushcore.store.base) --

    def on_stored(self, items: list[tuple[str, int]]) -> None:
        when = self._clock()
        for device_id, seq in items:
            self.pushed(device_id, seq, when)

    def on_acked(self, acks: list[tuple[str, int]]) -> None:
        when = self._clock()
        for device_id, seq in acks:
            self.acked_up_to(device_id, seq, when)

    @property
    def waiting(self) -> int:
        """Messages appended and not acked yet (as far as the tracker knows)."""
        return sum(len(p) for p in self._pending.values())


def track_store(store: _S, tracker: PushAckTracker) -> _S:
    """Make *store* (a :class:`pushcore.store.Store`) report to *tracker*; returns the store.

    The tracker becomes the store's only push→ack observer: a tracker added
    earlier is replaced (other observers stay).
    """
    for observer in store.observers:
        if isinstance(observer, PushAckTracker) and observer is not tracker:
            store.remove_observer(observer)
    store.add_observer(tracker)
    return store


def store_tracker(store: Store) -> PushAckTracker | None:
    """The :class:`PushAckTracker` observing *store*, if any."""
    for observer in store.observers:
        if isinstance(observer, PushAckTracker):
            return observer
    return None

"""Device-session writes the store could not make during an outage, kept to make later.

While the store cannot write (:class:`pushcore.store.StoreUnavailable`) a
device may still connect and read its backlog, but two writes of its session
fail: the ACK that HELLO's ``last_seq`` stands for (and its ACK frames), and,
for a store that lost the device's counter, raising that counter to the
claim. :class:`DeferredWrites` keeps them, per device, until the store heals:

* **acks** are cumulative, so one seq per device (the highest) is kept. Losing
  one is harmless: the messages stay stored until the device's next ACK or
  HELLO acks them again (it dedupes by seq), so past ``max_devices`` devices
  new ones are dropped and counted, never the connection.
* **advances** are not optional: a message appended before the counter is
  raised would get a seq the device already has and be dropped as a
  duplicate. So :class:`Delivery` makes the advances of the devices an
  append is for before that append (:meth:`flush_devices`), and the
  server's tick makes the rest in bounded steps (:meth:`flush`, advances
  first); a device whose advance cannot be kept (the table is full) is
  refused at HELLO, to come back later.

The table is changed only where store work runs (the store pipeline's
writer thread: HELLO's claim, the acks of a turn, the appends, the
server's store tick); the loop only asks whether anything is kept.
"""
from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from itertools import islice

from ..store import Store

__all__ = ["DeferredWrites", "DEFAULT_MAX_DEFERRED", "FLUSH_ACKS", "FLUSH_ADVANCES"]

DEFAULT_MAX_DEFERRED = 100_000  # devices with a kept write (about 100 bytes each)
FLUSH_ACKS = 1000  # kept acks made per transaction (per loop turn) once the store heals
FLUSH_ADVANCES = 200  # kept counter advances made per loop turn (one short transaction each)


class DeferredWrites:
    """Acks and counter advances to apply once the store can write (see the module doc)."""

    __slots__ = ("acks", "advances", "max_devices", "dropped")

    def __init__(self, max_devices: int = DEFAULT_MAX_DEFERRED) -> None:
        self.acks: dict[str, int] = {}  # device id -> highest seq acked
        self.advances: dict[str, int] = {}  # device id -> seq its counter must reach
        self.max_devices = max_devices
        self.dropped = 0  # acks not kept because the table was full

    def __bool__(self) -> bool:
        return bool(self.acks or self.advances)

    def __len__(self) -> int:
        return len(self.acks) + len(self.advances)

    def ack(self, device_id: str, seq: int) -> None:
        """Keep a cumulative ack (the highest seq per device wins)."""
        acks = self.acks
        if seq > acks.get(device_id, 0):
            if device_id not in acks and len(acks) >= self.max_devices:
                self.dropped += 1  # harmless: the next ACK or HELLO of the device acks it again
                return
            acks[device_id] = seq

    def advance(self, device_id: str, seq: int) -> bool:
        """Keep a counter advance; False when it cannot be kept (refuse the device for now)."""
        advances = self.advances
        if device_id not in advances and len(advances) >= self.max_devices:
            return False
        advances[device_id] = max(seq, advances.get(device_id, 0))
        return True

    def flush_devices(self, store: Store, device_ids: Iterable[str]) -> None:
        """Make the kept advances of *device_ids* (before an append for them); the others wait.

        Inside a store group (the pipeline's writer) the advance is only
        durable if the group commits: an advance the rollback undoes is kept
        again (``store.on_rollback``), or the device's next message would get
        a seq it already has and be dropped as a duplicate.
        """
        advances = self.advances
        for device_id in device_ids:
            seq = advances.get(device_id)
            if seq is not None:
                store.advance_seq(device_id, seq)
                del advances[device_id]
                store.on_rollback(partial(self._keep_again, device_id, seq))

    def _ack_again(self, batch: list[tuple[str, int]]) -> None:
        for device_id, seq in batch:
            self.ack(device_id, seq)

    def _keep_again(self, device_id: str, seq: int) -> None:
        advances = self.advances
        advances[device_id] = max(seq, advances.get(device_id, 0))  # past max_devices too: it was kept

    def flush(self, store: Store, max_acks: int = FLUSH_ACKS, max_advances: int = FLUSH_ADVANCES) -> bool:
        """One bounded step: at most *max_advances* advances, then at most *max_acks* acks; True when more remain.

        The acks go in one transaction per call, and a long outage's
        advances (one short transaction each) go a batch per call, so they
        do not pause the loop in one go: the server calls again on its next
        turn. Raises ``StoreUnavailable`` (keeping what was not made) while
        the store still cannot write.
        """
        advances = self.advances
        for device_id, seq in list(islice(advances.items(), max_advances)):
            store.advance_seq(device_id, seq)
            del advances[device_id]
            store.on_rollback(partial(self._keep_again, device_id, seq))
        if advances:
            return True  # the acks wait for the advances (an ack never runs ahead of a counter)
        acks = self.acks
        if acks:
            batch = list(islice(acks.items(), max_acks))
            store.ack_many(batch)  # one transaction
            for device_id, _seq in batch:
                del acks[device_id]
            store.on_rollback(lambda: self._ack_again(batch))
        return bool(acks)

"""MemoryStore: the offline store in process memory (tests, simulators, single-node demos).

Nothing survives the process: after a restart every seq counter is back at
0, so a server on a memory store should call ``advance_seq`` with the last
seq a reconnecting device reports (see :mod:`pushcore.store.base`).

Per device it keeps an ascending list of stored seqs (appends always add the
largest seq, so the list stays sorted without sorting), a dict seq → message
and a dict collapse key → seq. Expiring messages also go into one heap
ordered by expiry so :meth:`~pushcore.store.Store.purge_expired` pops only
what has expired instead of scanning every device.
"""
from __future__ import annotations

import heapq
from bisect import bisect_right

from .base import (
    DEFAULT_IDEMPOTENCY_WINDOW,
    DEFAULT_MAX_MESSAGES,
    MAX_SEQ,
    KeyHeap,
    KeyPlan,
    KeyRecord,
    MessageFields,
    SeqExhausted,
    Store,
    StoredMessage,
    plan_keys,
)

__all__ = ["MemoryStore"]

_MIN_HEAP_LIMIT = 1024


class _Device:
    """One device's counter and stored messages."""

    __slots__ = ("last_seq", "seqs", "messages", "collapse", "expiring")

    def __init__(self) -> None:
        self.last_seq = 0
        self.seqs: list[int] = []  # stored seqs, ascending
        self.messages: dict[int, StoredMessage] = {}
        self.collapse: dict[str, int] = {}  # collapse key -> seq of the one message holding it
        self.expiring = 0  # stored messages with an expiry: the cap skips its expiry scan at 0

    def remove(self, seq: int) -> StoredMessage:
        """Forget the stored message *seq* (present) everywhere but in ``seqs``."""
        message = self.messages.pop(seq)
        if message.collapse_key:
            del self.collapse[message.collapse_key]
        if message.expiry:
            self.expiring -= 1
        return message

    def remove_one(self, seq: int) -> None:
        self.remove(seq)
        del self.seqs[bisect_right(self.seqs, seq) - 1]


class MemoryStore(Store):
    """In-memory :class:`~pushcore.store.Store`; fast, not durable. Thread-safe (one lock)."""

    def __init__(
        self,
        *,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        idempotency_window: float = DEFAULT_IDEMPOTENCY_WINDOW,
    ) -> None:
        super().__init__(max_messages=max_messages, idempotency_window=idempotency_window)
        self._keys = KeyHeap()  # idempotency keys, by expiry
        self._devices: dict[str, _Device] = {}
        self._expiry_heap: list[tuple[int, str, int]] = []  # (expiry, device id, seq)
        # The heap keeps entries of messages acked or dropped since they were pushed;
        # past this size it is rebuilt from the live messages (amortised O(1)).
        self._heap_limit = _MIN_HEAP_LIMIT
        self._topic_members: dict[str, set[str]] = {}
        self._device_topics: dict[str, set[str]] = {}
        self._floor = 0  # the seq floor: highest counter of a dropped device (Store.drop_empty_devices)
        self._empty: set[str] = set()  # devices that may hold nothing: drop_empty_devices checks these

    def __repr__(self) -> str:
        return f"MemoryStore(max_messages={self.max_messages})"

    # -- messages --

    def _append(self, pairs: list[tuple[str, MessageFields]], now: float) -> list[StoredMessage]:
        keys = plan_keys(pairs, lambda key: self._keys.get(key, now))
        if keys is not None and keys.replays:
            return self._append_keyed(pairs, now, keys)
        out = self._append_new(pairs, now)
        if keys is not None:
            self._remember(pairs, out, keys.new, now)
        return out

    def _append_keyed(self, pairs: list[tuple[str, MessageFields]], now: float, keys: KeyPlan) -> list[StoredMessage]:
        """An append where some items repeat a key: only the others are stored."""
        fresh = [i for i in range(len(pairs)) if i not in keys.replays]
        stored = iter(self._append_new([pairs[i] for i in fresh], now))
        out: list[StoredMessage] = []
        for i, (_device_id, fields) in enumerate(pairs):
            out.append(keys.replayed(i, fields, out) if i in keys.replays else next(stored))
        self._remember(pairs, out, keys.new, now)
        return out

    def _remember(self, pairs: list[tuple[str, MessageFields]], out: list[StoredMessage],
                  new: dict[int, bytes], now: float) -> None:
        expires = now + self._idempotency_window
        for i, digest in new.items():
            message = out[i]
            self._keys.put(pairs[i][1].idempotency_key,
                           KeyRecord(pairs[i][0], message.seq, message.message_id, digest, now, expires))

    def _purge_keys(self, now: float, limit: int | None) -> int:
        return self._keys.purge(now, limit)

    def _append_new(self, pairs: list[tuple[str, MessageFields]], now: float) -> list[StoredMessage]:
        devices = self._devices
        boxes = []
        planned: dict[str, int] = {}  # seqs each device will take, checked before any change
        for device_id, _ in pairs:
            box = devices.get(device_id)
            if box is None:
                box = devices[device_id] = _Device()
                box.last_seq = self._floor
            planned[device_id] = planned.get(device_id, 0) + 1
            if box.last_seq > MAX_SEQ - planned[device_id]:
                raise SeqExhausted(device_id)
            boxes.append(box)
        collapsed = dropped = expired = 0
        cap = self._max_messages
        out = []
        for (device_id, fields), box in zip(pairs, boxes):
            key = fields.collapse_key
            if key:
                old = box.collapse.get(key)
                if old is not None:
                    box.remove_one(old)
                    collapsed += 1
            seq = box.last_seq = box.last_seq + 1
            message = StoredMessage(
                seq,
                fields.message_id,
                fields.payload,
                fields.priority,
                fields.expiry,
                key,
                fields.topic,
                now,
            )
            box.seqs.append(seq)
            box.messages[seq] = message
            if key:
                box.collapse[key] = seq
            if fields.expiry:
                box.expiring += 1
                heapq.heappush(self._expiry_heap, (fields.expiry, device_id, seq))
                if len(self._expiry_heap) > self._heap_limit:
                    self._rebuild_expiry_heap()
            if len(box.seqs) > cap:
                e, d = self._make_room(box, now)
                expired += e
                dropped += d
            out.append(message)
        self._collapsed += collapsed
        self._dropped_by_cap += dropped
        self._expired += expired
        return out

    def _make_room(self, box: _Device, now: float) -> tuple[int, int]:
        """Apply the cap policy to *box*: expired first, then the oldest."""
        expired = [s for s in box.seqs if box.messages[s].expired(now)] if box.expiring else []
        for seq in expired:
            box.remove(seq)
        if expired:
            box.seqs = [s for s in box.seqs if s in box.messages]
        excess = len(box.seqs) - self._max_messages
        if excess <= 0:
            return len(expired), 0
        for seq in box.seqs[:excess]:
            box.remove(seq)
        del box.seqs[:excess]
        return len(expired), excess

    def _rebuild_expiry_heap(self) -> None:
        heap = [
            (m.expiry, device_id, m.seq)
            for device_id, box in self._devices.items()
            for m in box.messages.values()
            if m.expiry
        ]
        heapq.heapify(heap)
        self._expiry_heap = heap
        self._heap_limit = max(_MIN_HEAP_LIMIT, 2 * len(heap))

    def _range(self, device_id: str, after_seq: int, limit: int, now: float) -> list[StoredMessage]:
        box = self._devices.get(device_id)
        if box is None:
            return []
        out = []
        messages = box.messages
        seqs = box.seqs
        for i in range(bisect_right(seqs, after_seq), len(seqs)):
            message = messages[seqs[i]]
            if message.expiry and message.expiry <= now:
                continue
            out.append(message)
            if len(out) == limit:
                break
        return out

    def _ack(self, device_id: str, seq: int) -> int:
        box = self._devices.get(device_id)
        if box is None:
            return 0
        cut = bisect_right(box.seqs, seq)
        for s in box.seqs[:cut]:
            box.remove(s)
        del box.seqs[:cut]
        if cut and not box.seqs:
            self._empty.add(device_id)
        return cut

    def _last_seq(self, device_id: str) -> int:
        box = self._devices.get(device_id)
        return 0 if box is None else box.last_seq

    def _advance_seq(self, device_id: str, seq: int) -> int:
        box = self._devices.get(device_id)
        if box is None:
            if seq == 0:
                return 0
            box = self._devices[device_id] = _Device()
            box.last_seq = self._floor  # a new record starts at the seq floor: no seq is handed out twice
            self._empty.add(device_id)
        if seq > box.last_seq:
            box.last_seq = seq
        return box.last_seq

    def _backlog(self, device_id: str, after_seq: int, now: float) -> int:
        box = self._devices.get(device_id)
        if box is None:
            return 0
        seqs, messages = box.seqs, box.messages
        return sum(
            1
            for i in range(bisect_right(seqs, after_seq), len(seqs))
            if not messages[seqs[i]].expired(now)
        )

    def _purge_expired(self, now: float, limit: int | None) -> int:
        heap = self._expiry_heap
        touched: dict[str, _Device] = {}
        removed = 0
        while heap and heap[0][0] <= now and (limit is None or removed < limit):
            _, device_id, seq = heapq.heappop(heap)
            box = self._devices.get(device_id)
            # the heap keeps entries of messages acked or dropped since: skip those
            if box is not None and seq in box.messages:
                box.remove(seq)
                touched[device_id] = box
                removed += 1
        for device_id, box in touched.items():
            box.seqs = [s for s in box.seqs if s in box.messages]
            if not box.seqs:
                self._empty.add(device_id)
        return removed

    def _drop_empty_devices(self, limit: int | None) -> tuple[int, bool]:
        empty = self._empty
        devices = self._devices
        dropped = 0
        # Candidates that got messages again since cost a look too: bound the looks.
        looks = len(empty) if limit is None else min(len(empty), 4 * limit)
        for _ in range(looks):
            if limit is not None and dropped == limit:
                break
            device_id = empty.pop()
            box = devices.get(device_id)
            if box is not None and not box.seqs:
                if box.last_seq > self._floor:
                    self._floor = box.last_seq
                del devices[device_id]
                dropped += 1
        return dropped, bool(empty)

    def _backlog_sizes(self, now: float) -> tuple[int, int]:
        messages, devices = self._sizes()
        # The heap's entries due by *now* sit in the subtree where every parent is due:
        # walk only that (the purge keeps it small), counting the live ones per device.
        heap = self._expiry_heap
        expired: dict[str, int] = {}
        stack = [0]
        while stack:
            i = stack.pop()
            if i >= len(heap) or heap[i][0] > now:
                continue
            _, device_id, seq = heap[i]
            box = self._devices.get(device_id)
            if box is not None and seq in box.messages:
                expired[device_id] = expired.get(device_id, 0) + 1
            stack += (2 * i + 1, 2 * i + 2)
        for device_id, n in expired.items():
            messages -= n
            if n == len(self._devices[device_id].seqs):
                devices -= 1
        return messages, devices

    def _devices_with_backlog(self, now: float) -> list[str]:
        return sorted(
            device_id
            for device_id, box in self._devices.items()
            if any(not m.expired(now) for m in box.messages.values())
        )

    def _sizes(self) -> tuple[int, int]:
        messages = devices = 0
        for box in self._devices.values():
            if box.seqs:
                messages += len(box.seqs)
                devices += 1
        return messages, devices

    # -- subscriptions --

    def _subscribe(self, device_id: str, topics: list[str]) -> int:
        mine = self._device_topics.setdefault(device_id, set())
        added = 0
        for topic in topics:
            if topic not in mine:
                mine.add(topic)
                self._topic_members.setdefault(topic, set()).add(device_id)
                added += 1
        return added

    def _unsubscribe(self, device_id: str, topics: list[str]) -> int:
        mine = self._device_topics.get(device_id)
        if not mine:
            return 0
        removed = 0
        for topic in topics:
            if topic in mine:
                mine.discard(topic)
                members = self._topic_members[topic]
                members.discard(device_id)
                if not members:
                    del self._topic_members[topic]
                removed += 1
        if not mine:
            del self._device_topics[device_id]
        return removed

    def _subscribers(self, topic: str) -> set[str]:
        return set(self._topic_members.get(topic, ()))

    def _topics(self, device_id: str) -> set[str]:
        return set(self._device_topics.get(device_id, ()))

    def _close(self) -> None:
        self._keys.clear()
        self._devices.clear()
        self._expiry_heap.clear()
        self._topic_members.clear()
        self._device_topics.clear()
        self._empty.clear()

    # -- token revocations (created on first use, so the constructor stays as it was) --

    _revocations: dict[str, float] | None = None

    def _set_revoked_before(self, device_id: str, ts: float) -> None:
        if self._revocations is None:
            self._revocations = {}
        self._revocations[device_id] = ts

    def _revoked_before(self, device_id: str) -> float | None:
        return None if self._revocations is None else self._revocations.get(device_id)

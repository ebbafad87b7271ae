"""The offline message store contract: :class:`Store`, :class:`StoredMessage`, validation.

Every backend (memory, SQLite, later Redis) subclasses :class:`Store` and
implements its ``_``-prefixed primitives; the public methods here validate
arguments, take the store's lock and call them, so every backend accepts and
refuses exactly the same input with the same errors.

Semantics (docs: the "Delivery semantics" of the design, made concrete)
-----------------------------------------------------------------------

**Sequence numbers.** Each device has a counter. :meth:`Store.append` gives a
message the device's next seq (1, 2, 3, ...). The counter is never lowered
and a seq is never handed out twice: acking, expiry, collapse and cap drops
remove messages but not the counter (the SQLite store keeps it on disk, so
this holds across restarts). :meth:`Store.advance_seq` raises it, e.g. when
a device reconnects claiming a seq the store no longer knows (a memory store
after a restart) so new messages are not taken for duplicates.

A device's counter lives in its record; :meth:`Store.drop_empty_devices`
drops the records of devices with nothing stored and keeps one number in
their place, the *seq floor* (the highest counter dropped): a device without
a record gets its next seq above it, so no seq it may hold is handed out again.

**Acknowledgement.** :meth:`Store.ack` is cumulative: it removes every stored
message of the device with ``seq <= ack``. Acks are idempotent (acking the
same or a lower seq again removes nothing), and an ack beyond
:meth:`Store.last_seq` simply removes everything stored; it never moves the
counter.

**Expiry.** ``expiry`` is Unix seconds (the PUSH frame's ``u32``); 0 = never.
A message with ``0 < expiry <= now`` is expired: :meth:`Store.range` and
:meth:`Store.backlog` skip it, and :meth:`Store.purge_expired` deletes it.

**Collapse.** Appending a message with a non-empty ``collapse_key`` first
removes every stored (not yet acked) message of that device with the same
key, so at most one message per key waits. A message already pushed but not
yet acked is removed too: the newer one replaces it either way.

**Cap (per device, ``max_messages``).** When an append leaves a device with
more than ``max_messages`` stored messages, the store first deletes that
device's expired messages, then, if still over, drops its *oldest* (lowest
seq) messages until exactly ``max_messages`` remain. The newest message is
never the one dropped: for a device that is offline for long, recent
notifications matter more than old ones. Drops are counted in
:attr:`StoreStats.dropped_by_cap`; the device sees them as a seq gap.

**Priority.** Stored with the message, not used for filtering. A low
priority message waits in the store until the device shows it is awake;
the server then sends ``range(device, after_seq=<highest seq sent>)`` in
seq order. There is deliberately no "high priority only" range: ACK is
cumulative, so pushing seq 6 ahead of a waiting low-priority seq 5 would let
the device's ``ACK 6`` delete seq 5 unseen. A high-priority push therefore
carries the waiting low-priority messages before it (the device is being
woken anyway). ``last_seq(device) > highest seq sent`` tells cheaply whether
anything waits.

**Idempotency keys.** :meth:`Store.append` and :meth:`Store.append_batch`
take an optional ``idempotency_key`` per message: 1 to 256 bytes of
printable ASCII (``0x21``-``0x7e``; a longer key is :class:`MessageTooLarge`,
any other character ``ValueError``), unique across the whole store. The key
is written in the same transaction as its message and remembered for
:attr:`Store.idempotency_window` seconds (default 24 h). Appending with a
key the store remembers stores nothing and returns a
:class:`ReplayedMessage` carrying the *original* seq and message id (also
when that message was acked or dropped since). The key names one message:
the same device, payload, priority, collapse key and topic (expiry and
message id are not compared, since a retry recomputes them). A key
remembered for another message raises :class:`IdempotencyConflict` and
stores nothing (in a batch: nothing of the batch). A key twice in one batch
is the same as a repeat. :meth:`Store.purge_expired` forgets keys past the
window (a key past it is not honoured even before a purge).

**How a server drives it** (one possible mapping of the protocol):

* publish to a device: ``m = append(...)`` (or ``append_batch`` for a loop
  turn's worth, ``append_many`` for a topic's subscribers); if the device
  is online and ``m.priority`` is high (or it is awake), push
  ``range(device, sent_upto)`` so waiting low-priority ones go first;
* HELLO with ``last_seq``: the device has everything up to it, so
  ``ack(device, last_seq)``; if ``last_seq > last_seq(device)`` the store
  lost state: ``advance_seq(device, last_seq)``. Then
  ``page = range(device, last_seq, INLINE_MAX + 1)``: push it when
  ``len(page) <= INLINE_MAX``, else NOTIFY ``last_seq(device)``;
* FETCH ``(after_seq, max_count)``: push ``range(device, after_seq, max_count)``
  (cap *max_count* at a server page size);
* ACK ``seq``: ``ack(device, seq)``; SUBSCRIBE / UNSUBSCRIBE: ``subscribe`` /
  ``unsubscribe``; a periodic ``purge_expired(limit=...)`` and
  ``drop_empty_devices(limit=...)`` in short steps (the server's background purge).

**Counters** in :meth:`Store.stats` (``dropped_by_cap``, ``collapsed``,
``expired``) count since this store object was opened (process-lifetime
counters, as Prometheus expects); ``messages`` and ``devices`` are current.

**Health.** A write the store cannot make (SQLite: the file is locked by
another process for longer than the busy timeout, a disk I/O error, the disk
full, a read-only file) raises :class:`StoreUnavailable` and marks the store
*unwritable* with the error and the time; reads go on. The next write that
succeeds marks it writable again, and so does :meth:`Store.probe` (one cheap
test write, which the server makes every few seconds while the store is
unwritable, so the state heals without traffic). :meth:`Store.health` reads
the state without any I/O. The memory store is always writable.

**Threads.** Each store has a lock held around every public call, so one
store object may be used from several threads (the server's store
pipeline, an admin API thread). Calls are short; none blocks on the network.

**Group commit.** :meth:`Store.group` runs many calls as one transaction
(one commit; a call that raises changes nothing, an outage fails the whole
group); :mod:`pushcore.store.pipeline` runs a server's store work that way,
off the loop thread. :attr:`Store.commits` counts the commits.
"""
from __future__ import annotations

import abc
import hashlib
import heapq
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, Self, TypeGuard

from ..errors import MessageTooLarge, PushcoreError
from ..wire import (
    MAX_COLLAPSE_KEY_BYTES,
    MAX_DEVICE_ID_BYTES,
    MAX_PAYLOAD_BYTES,
    MAX_TOPIC_BYTES,
    PRIORITY_HIGH,
    PRIORITY_LOW,
    topic_problem,
)

__all__ = [
    "Store",
    "StoreObserver",
    "StoredMessage",
    "NewMessage",
    "StoreStats",
    "StoreError",
    "StoreUnavailable",
    "StoreHealth",
    "SeqExhausted",
    "PRIORITY_LOW",
    "PRIORITY_HIGH",
    "DEFAULT_MAX_MESSAGES",
    "DEFAULT_RANGE_LIMIT",
    "MAX_SEQ",
    "MAX_EXPIRY",
    "MAX_MESSAGE_ID",
    "IdempotencyConflict",
    "ReplayedMessage",
    "DEFAULT_IDEMPOTENCY_WINDOW",
    "MAX_IDEMPOTENCY_KEY_BYTES",
]

log = logging.getLogger("pushcore.store")

DEFAULT_MAX_MESSAGES = 1000
DEFAULT_RANGE_LIMIT = 100
# Seqs are kept below 2**63 so every backend can store them as a signed
# 64-bit integer (SQLite INTEGER, Redis integers).
MAX_SEQ = 2**63 - 1
MAX_EXPIRY = 2**32 - 1  # PUSH carries expiry as u32le
MAX_MESSAGE_ID = 2**64 - 1  # PUSH carries message_id as u64le
DEFAULT_IDEMPOTENCY_WINDOW = 86400.0  # seconds an idempotency key is remembered (24 h)
MAX_IDEMPOTENCY_KEY_BYTES = 256


class StoreObserver(Protocol):
    """What :meth:`Store.add_observer` takes (e.g. :class:`pushcore.admin.ack_latency.PushAckTracker`)."""

    def on_stored(self, items: list[tuple[str, int]]) -> None:
        """Messages were stored: ``(device_id, seq)`` each."""

    def on_acked(self, acks: list[tuple[str, int]]) -> None:
        """Cumulative acks were applied: ``(device_id, seq)`` each."""


class StoreError(PushcoreError):
    """The store cannot do what was asked (closed, unreadable file, counter exhausted)."""


class StoreUnavailable(StoreError):
    """The store cannot write now (locked, I/O error, disk full, read-only); reads still work.

    ``cause`` is the backend's error text (e.g. ``"database is locked"``) and
    ``since`` when the store became unwritable (Unix seconds). Nothing was
    changed by the call that raised it; retry later (the admin API answers
    503 with ``Retry-After``).
    """

    def __init__(self, cause: str, since: float) -> None:
        super().__init__(f"the store cannot write: {cause} (retry later)")
        self.cause = cause
        self.since = since

    def __reduce__(self) -> tuple[type[StoreUnavailable], tuple[str, float]]:
        return (type(self), (self.cause, self.since))


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """Whether the store can write (:meth:`Store.health`).

    ``error`` is the last write error and ``since`` when the store became
    unwritable (Unix seconds); both are None while it is writable.
    """

    writable: bool
    error: str | None = None
    since: float | None = None


_HEALTHY = StoreHealth(True)


class SeqExhausted(StoreError):
    """One device's seq counter cannot go higher (2**63-1): only that device's messages fail.

    The gateway never lets a device's HELLO claim move its counter near the
    end (docs/PROTOCOL.md, "last_seq"), so this needs 2**63 - 2**53 pushes to
    one device; it is still a per-device error, so ``push_batch`` and
    ``publish`` fail only the items of that device.
    """

    def __init__(self, device_id: str) -> None:
        super().__init__(f"seq counter of device {device_id!r} is exhausted (2**63-1)")
        self.device_id = device_id


class IdempotencyConflict(PushcoreError, ValueError):
    """An idempotency key the store remembers for another message: nothing was stored.

    ``key`` is the key, ``device_id`` the device it was used for now,
    ``original_device`` the device of the message it names, ``index`` the
    batch item (None outside a batch). The admin API answers it with 409.
    """

    def __init__(self, key: str, device_id: str, original_device: str, index: int | None = None) -> None:
        where = "" if index is None else f"messages[{index}]: "
        what = ("a different message (payload, priority, collapse key or topic)"
                if device_id == original_device else f"a message for device {original_device!r}")
        super().__init__(
            f"{where}idempotency_key {key!r} was already used for {what}; "
            f"a retry must repeat the message exactly, a new message needs a new key"
        )
        self.key = key
        self.device_id = device_id
        self.original_device = original_device
        self.index = index

    def at(self, index: int | None) -> IdempotencyConflict:
        """The same conflict, naming batch item *index* (None: no batch)."""
        return IdempotencyConflict(self.key, self.device_id, self.original_device, index)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One stored message for one device.

    The first seven fields are, in order, the arguments of
    ``pushcore.encode_push(seq, message_id, payload, priority, expiry,
    collapse_key, topic)``. ``created`` is when it was appended (Unix seconds).
    """

    seq: int
    message_id: int
    payload: bytes
    priority: int
    expiry: int
    collapse_key: str
    topic: str
    created: float

    def expired(self, now: float) -> bool:
        """True when the message must no longer be delivered at *now*."""
        return self.expiry != 0 and self.expiry <= now


@dataclass(frozen=True, slots=True)
class ReplayedMessage(StoredMessage):
    """What an append returns for an idempotency key it remembers: nothing new was stored.

    ``seq`` and ``message_id`` are the original message's (it may have been
    acked since); the other fields are those of the repeated request, and
    ``created`` is when the original was stored.
    """


@dataclass(frozen=True, slots=True)
class StoreStats:
    """A snapshot for monitoring (see the module doc for the counters' lifetime)."""

    messages: int  # stored messages (acked ones are gone; expired ones stay until purged)
    devices: int  # devices with at least one stored message
    dropped_by_cap: int  # oldest messages dropped to respect max_messages
    collapsed: int  # messages replaced by a newer one with the same collapse key
    expired: int  # expired messages deleted (purge_expired, or to make room under the cap)


# ---- argument validation, shared by every backend -------------------------------------------


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def check_text(name: str, value: object, *, allow_empty: bool = True) -> str:
    """*value* if it is a ``str`` encodable as UTF-8 (non-empty unless *allow_empty*)."""
    if type(value) is not str:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be str, not {type(value).__name__}")
        value = str(value)
    if not value and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{name} is not valid Unicode text (lone surrogate)") from None
    return value


def _check_size(name: str, value: str, limit: int) -> str:
    # len(str) <= len(utf-8 bytes) <= 4 * len(str): encode only when it may matter.
    if len(value) * 4 > limit:
        size = len(value.encode("utf-8"))
        if size > limit:
            raise MessageTooLarge(name, size, limit)
    return value


def check_device_id(device_id: object) -> str:
    """A non-empty device id of at most MAX_DEVICE_ID_BYTES UTF-8 bytes."""
    return _check_size(
        "device_id", check_text("device_id", device_id, allow_empty=False), MAX_DEVICE_ID_BYTES
    )


def check_topic(topic: object, *, allow_empty: bool = False) -> str:
    """*topic* if it follows the topic-name rule (:func:`pushcore.wire.topic_problem`)."""
    value = check_text("topic", topic, allow_empty=allow_empty)
    if not value and allow_empty:
        return value
    if len(value) > MAX_TOPIC_BYTES:  # too long is MessageTooLarge (HTTP 413), whatever its characters
        raise MessageTooLarge("topic", len(value.encode("utf-8", "replace")), MAX_TOPIC_BYTES)
    problem = topic_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def check_seq(name: str, seq: object) -> int:
    if not _is_int(seq):
        raise TypeError(f"{name} must be int, not {type(seq).__name__}")
    if seq < 0:
        raise ValueError(f"{name} must be >= 0, got {seq}")
    return seq


def check_limit(limit: object) -> int:
    if not _is_int(limit):
        raise TypeError(f"limit must be int, not {type(limit).__name__}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return limit


def resolve_now(now: object) -> float:
    """*now* as Unix seconds; ``None`` means the current time."""
    if now is None:
        return time.time()
    if not isinstance(now, (int, float)) or isinstance(now, bool):
        raise TypeError(f"now must be Unix seconds (float), not {type(now).__name__}")
    if not math.isfinite(now):
        raise ValueError(f"now must be finite, got {now!r}")
    return float(now)


def check_topics(topics: object) -> list[str]:
    """*topics* (an iterable of non-empty str, not a bare str) as a de-duplicated list."""
    if isinstance(topics, (str, bytes)):
        raise TypeError("topics must be an iterable of str (e.g. a list), not a single string")
    if not isinstance(topics, Iterable):
        raise TypeError(f"topics must be an iterable of str, not {type(topics).__name__}")
    return list(dict.fromkeys(check_topic(t) for t in topics))


def check_idempotency_key(key: object) -> str:
    """*key* if it is 1 to MAX_IDEMPOTENCY_KEY_BYTES printable ASCII characters (``0x21``-``0x7e``)."""
    if not isinstance(key, str):
        raise TypeError(f"idempotency_key must be str, not {type(key).__name__}")
    if len(key) > MAX_IDEMPOTENCY_KEY_BYTES:
        raise MessageTooLarge("idempotency_key", len(key.encode("utf-8", "replace")), MAX_IDEMPOTENCY_KEY_BYTES)
    if not key or not key.isascii() or not key.isprintable() or " " in key:
        raise ValueError(
            f"idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} printable ASCII characters "
            f"without spaces (e.g. a UUID), got {key!r:.80}"
        )
    return key


def check_window(window: object) -> float:
    if not isinstance(window, (int, float)) or isinstance(window, bool):
        raise TypeError(f"idempotency_window must be seconds, not {type(window).__name__}")
    if not math.isfinite(window) or window <= 0:
        raise ValueError(f"idempotency_window must be a finite number of seconds > 0, got {window!r}")
    return float(window)


def fingerprint(device_id: str, fields: MessageFields) -> bytes:
    """What an idempotency key names: device, payload, priority, collapse key, topic (16 bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for text in (device_id, fields.collapse_key, fields.topic):
        raw = text.encode("utf-8")
        h.update(len(raw).to_bytes(4, "little"))
        h.update(raw)
    h.update(bytes((fields.priority,)))
    h.update(fields.payload)
    return h.digest()


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One remembered idempotency key (internal: what a backend keeps per key)."""

    device_id: str
    seq: int
    message_id: int
    digest: bytes
    created: float
    expires: float


@dataclass(slots=True)
class KeyPlan:
    """How one append treats its items' idempotency keys (internal: see :func:`plan_keys`).

    ``replays[i]`` is the remembered record item *i* repeats, or the index
    of the earlier item of the same batch it repeats; ``new[i]`` is the
    fingerprint of an item whose key must be remembered once it has a seq.
    """

    replays: dict[int, KeyRecord | int]
    new: dict[int, bytes]

    def replayed(self, i: int, fields: MessageFields, out: list[StoredMessage]) -> ReplayedMessage:
        """The answer for replayed item *i*; *out* holds the answers of the items before it."""
        origin = self.replays[i]
        if isinstance(origin, int):
            first = out[origin]
            seq, message_id, created = first.seq, first.message_id, first.created
        else:
            seq, message_id, created = origin.seq, origin.message_id, origin.created
        return ReplayedMessage(seq, message_id, fields.payload, fields.priority, fields.expiry,
                               fields.collapse_key, fields.topic, created)


def plan_keys(
    pairs: list[tuple[str, MessageFields]], lookup: Callable[[str], KeyRecord | None]
) -> KeyPlan | None:
    """The :class:`KeyPlan` of an append (None when no item has a key).

    *lookup(key)* is the unexpired record the backend remembers, or None.
    Raises :class:`IdempotencyConflict` (naming the item) before anything
    is stored.
    """
    plan: KeyPlan | None = None
    seen: dict[str, tuple[int, str, bytes]] = {}  # key -> (first item, its device, its fingerprint)
    for i, (device_id, fields) in enumerate(pairs):
        key = fields.idempotency_key
        if not key:
            continue
        if plan is None:
            plan = KeyPlan({}, {})
        digest = fingerprint(device_id, fields)
        earlier = seen.get(key)
        if earlier is not None:
            if earlier[2] != digest:
                raise IdempotencyConflict(key, device_id, earlier[1], i)
            first = earlier[0]
            origin = plan.replays.get(first)
            plan.replays[i] = first if origin is None else origin
            continue
        seen[key] = (i, device_id, digest)
        record = lookup(key)
        if record is None:
            plan.new[i] = digest
        elif record.digest != digest:
            raise IdempotencyConflict(key, device_id, record.device_id, i)
        else:
            plan.replays[i] = record
    return plan


class KeyHeap:
    """Remembered keys by expiry, for a backend that keeps them in memory (internal)."""

    def __init__(self) -> None:
        self.records: dict[str, KeyRecord] = {}
        self._heap: list[tuple[float, str]] = []

    def get(self, key: str, now: float) -> KeyRecord | None:
        record = self.records.get(key)
        return record if record is not None and record.expires > now else None

    def put(self, key: str, record: KeyRecord) -> None:
        self.records[key] = record
        heapq.heappush(self._heap, (record.expires, key))

    def purge(self, now: float, limit: int | None) -> int:
        heap, records = self._heap, self.records
        removed = 0
        while heap and heap[0][0] <= now and (limit is None or removed < limit):
            expires, key = heapq.heappop(heap)
            record = records.get(key)
            if record is not None and record.expires == expires:  # not replaced since
                del records[key]
                removed += 1
        return removed

    def clear(self) -> None:
        self.records.clear()
        self._heap.clear()


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to store for one device, not yet given a seq (see :meth:`Store.append_batch`)."""

    device_id: str
    message_id: int
    payload: bytes
    priority: int
    expiry: int = 0
    collapse_key: str = ""
    topic: str = ""
    idempotency_key: str | None = None  # None = none (see the module doc)


@dataclass(frozen=True, slots=True)
class MessageFields:
    """A validated message, before it has a seq (internal: backends receive this)."""

    message_id: int
    payload: bytes
    priority: int
    expiry: int
    collapse_key: str
    topic: str
    idempotency_key: str = ""  # "" = none


def check_message(
    message_id: object,
    payload: object,
    priority: object,
    expiry: object,
    collapse_key: object,
    topic: object,
    idempotency_key: object = None,
    *,
    unset_id: bool = False,
) -> MessageFields:
    """The checked fields of a message (``unset_id``: *message_id* is -1, to be given later)."""
    if not _is_int(message_id):
        raise TypeError(f"message_id must be int, not {type(message_id).__name__}")
    if not 0 <= message_id <= MAX_MESSAGE_ID and not (unset_id and message_id == -1):
        raise ValueError(f"message_id must be in 0..2**64-1 (u64), got {message_id}")
    if type(payload) is not bytes:
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MessageTooLarge("payload", len(payload), MAX_PAYLOAD_BYTES)
    if not _is_int(priority):
        raise TypeError(f"priority must be int, not {type(priority).__name__}")
    if priority not in (PRIORITY_LOW, PRIORITY_HIGH):
        raise ValueError(
            f"priority must be PRIORITY_LOW ({PRIORITY_LOW}) or PRIORITY_HIGH "
            f"({PRIORITY_HIGH}), got {priority}"
        )
    if not _is_int(expiry):
        raise TypeError(
            f"expiry must be int Unix seconds (e.g. int(time.time()) + ttl), "
            f"not {type(expiry).__name__}"
        )
    if not 0 <= expiry <= MAX_EXPIRY:
        raise ValueError(f"expiry must be 0 (never) or Unix seconds < 2**32, got {expiry}")
    return MessageFields(
        message_id,
        payload,
        int(priority),
        expiry,
        _check_size("collapse_key", check_text("collapse_key", collapse_key), MAX_COLLAPSE_KEY_BYTES),
        check_topic(topic, allow_empty=True),
        "" if idempotency_key is None else check_idempotency_key(idempotency_key),
    )


# ---- the interface --------------------------------------------------------------------------


class Store(abc.ABC):
    """Offline messages per device, ordered by seq, plus topic subscriptions.

    See the module documentation for the exact semantics every backend
    shares. Use as a context manager, or call :meth:`close`.
    """

    #: False in a backend that does not implement idempotency keys: appends with one are refused.
    keeps_idempotency_keys = True

    def __init__(
        self,
        *,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        idempotency_window: float = DEFAULT_IDEMPOTENCY_WINDOW,
    ) -> None:
        self._idempotency_window = check_window(idempotency_window)
        if not _is_int(max_messages):
            raise TypeError(f"max_messages must be int, not {type(max_messages).__name__}")
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        self._max_messages = max_messages
        self._lock = threading.RLock()
        self._closed = False
        self._observers: tuple[StoreObserver, ...] = ()
        self._dropped_by_cap = 0
        self._collapsed = 0
        self._expired = 0
        self._health = _HEALTHY
        self._commits = 0
        self._group_depth = 0  # > 0 while the thread holding the lock runs a group (one transaction)
        self._group_error: StoreUnavailable | None = None  # an outage inside the group: it rolls back
        self._group_notes: list[tuple[bool, list[tuple[str, int]]]] = []  # observer calls held to commit
        self._group_undo: list[Callable[[], object]] = []  # on_rollback callbacks of the running group

    @property
    def max_messages(self) -> int:
        """Most messages kept per device (see the cap policy in the module doc)."""
        return self._max_messages

    @property
    def idempotency_window(self) -> float:
        """Seconds an idempotency key is remembered after its message was stored (default 24 h).

        Settable; a new value applies to keys stored from then on.
        """
        return self._idempotency_window

    @idempotency_window.setter
    def idempotency_window(self, seconds: float) -> None:
        self._idempotency_window = check_window(seconds)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_keys(self, pairs: list[tuple[str, MessageFields]]) -> None:
        if not self.keeps_idempotency_keys and any(f.idempotency_key for _, f in pairs):
            raise StoreError(f"{type(self).__name__} does not keep idempotency keys")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{type(self).__name__} is closed")

    # -- health --

    def health(self) -> StoreHealth:
        """Whether the store can write now, as its last write found it (no I/O; any thread)."""
        return self._health

    def probe(self) -> StoreHealth:
        """Try one cheap write and return the health (while unwritable, it does not wait for a lock).

        A backend that can become unwritable overrides :meth:`_probe`; the
        memory store is always writable. Raises :class:`StoreError` when closed.
        """
        with self._lock:
            self._check_open()
            try:
                self._probe()
            except StoreUnavailable:
                pass
            return self._health

    def _probe(self) -> None:
        """One test write; a backend raises :class:`StoreUnavailable` (via :meth:`_unwritable`)."""
        return None  # a store that cannot become unwritable (memory) has nothing to test

    def check_writable(self) -> StoreHealth:
        """Test, from the calling thread, whether a write could be made now, without blocking writers.

        Unlike :meth:`probe` it does not take the store's lock nor use its
        connection: a backend that can become unwritable tries one write on
        a connection of its own (waiting at most its busy timeout), and marks
        the store unwritable when that fails. So an idle gateway learns of an
        outage before its next write. :class:`pushcore.Server` calls it from a
        watcher thread every ``store_watch_interval`` seconds while the store
        is writable. The memory store has nothing to test.
        """
        return self._health

    def _unwritable(self, cause: str) -> StoreUnavailable:
        """Mark the store unwritable because of *cause*; the error to raise (lock held)."""
        health = self._health
        if health.writable:
            health = StoreHealth(False, cause, time.time())
            log.warning("pushcore store %r cannot write: %s", self, cause)
        elif health.error != cause:
            health = StoreHealth(False, cause, health.since)
        self._health = health
        assert health.since is not None
        return StoreUnavailable(cause, health.since)

    def _writable(self) -> None:
        """A write succeeded: mark the store writable (lock held)."""
        if not self._health.writable:
            log.info("pushcore store %r can write again (unwritable for %.1f s)",
                        self, time.time() - (self._health.since or 0.0))
            self._health = _HEALTHY

    # -- group commit (pushcore.store.pipeline) --

    @property
    def commits(self) -> int:
        """Write transactions committed since this store was opened; a :meth:`group` counts once.

        The memory store has no transactions and counts only its groups.
        """
        return self._commits

    @property
    def in_group(self) -> bool:
        """True while the calling thread runs a :meth:`group` (the lock is held for it)."""
        return self._group_depth > 0

    @contextmanager
    def group(self) -> Iterator[Self]:
        """Run several store calls as one transaction (group commit); yields the store.

        Inside the block, every public call works as alone and sees what the
        calls before it did, but nothing is durable until the block ends, with
        one commit for all (SQLite: one ``BEGIN IMMEDIATE`` ... ``COMMIT``). A
        call that raises (:class:`IdempotencyConflict`, :class:`SeqExhausted`,
        a bad argument) changes nothing (SQLite: a savepoint per call) and the
        others go on; the caller catches its error. An outage (a write the
        store cannot make) fails the whole group: everything in it is rolled
        back and :class:`StoreUnavailable` is raised when the block ends (or
        at its start, when the transaction cannot begin), also when a call
        inside caught it. The store's lock is held throughout, so other
        threads wait for the group; keep groups short (the pipeline bounds
        them). Nested groups join the outer one.
        """
        with self._lock:
            self._check_open()
            if self._group_depth:
                self._group_depth += 1
                try:
                    yield self
                finally:
                    self._group_depth -= 1
                return
            self._group_begin()
            self._group_depth = 1
            self._group_error = None
            self._group_notes = []
            self._group_undo = []
            try:
                yield self
            except BaseException:
                self._group_depth = 0
                self._group_end(commit=False)
                self._undo_group()
                raise
            self._group_depth = 0
            error = self._group_error
            if error is not None:
                self._group_error = None
                self._group_end(commit=False)
                self._undo_group()
                raise error
            try:
                self._group_end(commit=True)
            except BaseException:
                self._undo_group()
                raise
            self._group_undo = []
            self._commits += 1
            notes, self._group_notes = self._group_notes, []
            for stored, items in notes:
                for observer in self._observers:
                    if stored:
                        observer.on_stored(items)
                    else:
                        observer.on_acked(items)

    def on_rollback(self, undo: Callable[[], object]) -> None:
        """Inside a :meth:`group` (on its thread): call *undo* if the group rolls back.

        For state kept outside the store that a call in the group consumed
        (the gateway's kept counter advances): the rollback undoes the
        store's part, *undo* puts the rest back. Outside a group the call
        already committed or failed on its own, so nothing is registered.
        """
        if self._group_depth:
            self._group_undo.append(undo)

    def _undo_group(self) -> None:
        undo, self._group_undo = self._group_undo, []
        self._group_notes = []
        for fn in reversed(undo):
            try:
                fn()
            except Exception:  # one failed undo must not keep the others from running
                logging.getLogger("pushcore.store").exception("pushcore store: a group's undo failed")

    def _group_begin(self) -> None:  # noqa: B027  # optional: the memory store has no transaction
        """Start a group's transaction (lock held); a backend raises :class:`StoreUnavailable`."""

    def _group_end(self, *, commit: bool) -> None:  # noqa: B027  # optional, as _group_begin
        """Commit (or roll back) a group's transaction; a failed commit raises :class:`StoreUnavailable`.

        The memory store applies every call at once and cannot fail, so it has nothing to do.
        """

    def append_checked(self, pairs: list[tuple[str, MessageFields]], now: float | None = None) -> list[StoredMessage]:
        """:meth:`append_batch` of items already checked (:func:`check_device_id`, :func:`check_message`).

        For the store pipeline, which checks each message on the thread that
        submits it and merges the messages of many callers into this one call.
        """
        if not pairs:
            return []
        now = resolve_now(now)
        with self._lock:
            self._check_open()
            self._check_keys(pairs)
            return self._stored(pairs, self._append(pairs, now))

    # -- observers --

    def add_observer(self, observer: StoreObserver) -> None:
        """Tell *observer* of every message stored and every ack applied, from now on.

        Its ``on_stored(items)`` gets a list of ``(device_id, seq)`` after each
        append of any kind; ``on_acked(acks)`` a list of ``(device_id, seq)``
        after each ack (cumulative, as given). Both run under the store's
        lock, on the caller's thread, and must be quick (metrics, tracing).
        Adding the same observer twice has no effect.
        """
        with self._lock:
            if observer not in self._observers:
                self._observers = self._observers + (observer,)

    def remove_observer(self, observer: StoreObserver) -> None:
        """Stop telling *observer*; unknown observers are ignored."""
        with self._lock:
            self._observers = tuple(o for o in self._observers if o is not observer)

    @property
    def observers(self) -> tuple[StoreObserver, ...]:
        return self._observers

    def _stored(self, pairs: list[tuple[str, MessageFields]], stored: list[StoredMessage]) -> list[StoredMessage]:
        # Called with the lock held after every append primitive.
        if self._observers:
            items = [(device_id, message.seq) for (device_id, _fields), message in zip(pairs, stored)
                     if not isinstance(message, ReplayedMessage)]  # a replay stored nothing
            if items:
                if self._group_depth:
                    self._group_notes.append((True, items))  # told once the group commits
                else:
                    for observer in self._observers:
                        observer.on_stored(items)
        return stored

    def _acked(self, acks: list[tuple[str, int]], removed: int) -> int:
        if self._observers:
            if self._group_depth:
                self._group_notes.append((False, list(acks)))
            else:
                for observer in self._observers:
                    observer.on_acked(acks)
        return removed

    # -- messages --

    def append(
        self,
        device_id: str,
        *,
        message_id: int,
        payload: bytes,
        priority: int,
        expiry: int = 0,
        collapse_key: str = "",
        topic: str = "",
        now: float | None = None,
        idempotency_key: str | None = None,
    ) -> StoredMessage:
        """Store a message for *device_id* under its next seq and return it.

        Applies collapse and the cap (module doc). *now* (Unix seconds,
        default the current time) becomes ``created`` and decides which
        messages count as expired when making room. With an
        *idempotency_key* the store remembers (module doc), nothing is
        stored and the original comes back as a :class:`ReplayedMessage`;
        one remembered for another message raises :class:`IdempotencyConflict`.
        """
        device_id = check_device_id(device_id)
        fields = check_message(message_id, payload, priority, expiry, collapse_key, topic, idempotency_key)
        now = resolve_now(now)
        with self._lock:
            self._check_open()
            pairs = [(device_id, fields)]
            self._check_keys(pairs)
            try:
                return self._stored(pairs, self._append(pairs, now))[0]
            except IdempotencyConflict as exc:
                raise exc.at(None) from None

    def append_many(
        self,
        device_ids: Iterable[str],
        *,
        message_id: int,
        payload: bytes,
        priority: int,
        expiry: int = 0,
        collapse_key: str = "",
        topic: str = "",
        now: float | None = None,
    ) -> list[StoredMessage]:
        """Store the same message for each device (topic or broadcast fan-out) at once.

        One transaction (SQLite) / one lock hold: all or nothing, and far
        cheaper than one :meth:`append` per device. A device listed twice
        gets the message once. Returns one :class:`StoredMessage` per
        distinct device, in the order given; each has its device's own seq.
        """
        if isinstance(device_ids, (str, bytes)):
            raise TypeError("device_ids must be an iterable of str (e.g. a list), not a string")
        devices = list(dict.fromkeys(check_device_id(d) for d in device_ids))
        fields = check_message(message_id, payload, priority, expiry, collapse_key, topic)
        now = resolve_now(now)
        if not devices:
            return []
        with self._lock:
            self._check_open()
            pairs = [(device, fields) for device in devices]
            return self._stored(pairs, self._append(pairs, now))

    def append_topic(
        self,
        topic: str,
        *,
        message_id: int,
        payload: bytes,
        priority: int,
        expiry: int = 0,
        collapse_key: str = "",
        now: float | None = None,
        keep: Callable[[str], bool] | None = None,
    ) -> tuple[int, list[str], list[int]]:
        """Store one message for every subscriber of *topic* (a publish), all or nothing.

        Returns ``(how many devices it was stored for, devices, their seqs)``
        where the last two list only the devices ``keep(device_id)`` is true
        for (all when *keep* is None): the caller names the few it will send
        to now (the connected ones), so a topic of millions costs no list of
        millions here. The message's ``topic`` field is *topic*. Raises
        :class:`SeqExhausted` (nothing stored) when a subscriber's counter
        is exhausted, as :meth:`append_many` does.
        """
        topic = check_topic(topic)
        fields = check_message(message_id, payload, priority, expiry, collapse_key, topic)
        now = resolve_now(now)
        with self._lock:
            self._check_open()
            return self._append_topic(topic, fields, now, keep)

    def append_batch(
        self, messages: Iterable[NewMessage], *, now: float | None = None
    ) -> list[StoredMessage]:
        """Store several different messages at once (group commit); return them in order.

        Each item is a :class:`NewMessage`. One transaction (SQLite) / one
        lock hold for the whole batch: all or nothing. A device may appear
        several times; its messages get consecutive seqs in the order given,
        and collapse and the cap apply in that order as with :meth:`append`.
        The server gathers the messages of one loop turn into one call: a
        commit costs far more than a row (see benchmarks/store_bench.py).
        Items with an ``idempotency_key`` the store remembers come back as
        :class:`ReplayedMessage` (nothing stored for them); a conflicting key
        raises :class:`IdempotencyConflict` naming the item, and nothing of
        the batch is stored.
        """
        if isinstance(messages, NewMessage):
            raise TypeError("messages must be an iterable of NewMessage; for one, use append()")
        pairs = []
        for item in messages:
            if not isinstance(item, NewMessage):
                raise TypeError(f"append_batch items must be NewMessage, not {type(item).__name__}")
            pairs.append(
                (
                    check_device_id(item.device_id),
                    check_message(
                        item.message_id, item.payload, item.priority, item.expiry,
                        item.collapse_key, item.topic, item.idempotency_key,
                    ),
                )
            )
        now = resolve_now(now)
        if not pairs:
            return []
        with self._lock:
            self._check_open()
            self._check_keys(pairs)
            return self._stored(pairs, self._append(pairs, now))

    def range(
        self,
        device_id: str,
        after_seq: int = 0,
        limit: int = DEFAULT_RANGE_LIMIT,
        *,
        now: float | None = None,
    ) -> list[StoredMessage]:
        """Up to *limit* unexpired stored messages with seq > *after_seq*, ascending seq.

        Serves HELLO (``after_seq`` = the device's last seq), FETCH pages and
        waking a device with waiting low-priority messages. Expired messages
        are skipped (not returned, not counted against *limit*).
        """
        device_id = check_device_id(device_id)
        after_seq = check_seq("after_seq", after_seq)
        limit = check_limit(limit)
        now = resolve_now(now)
        with self._lock:
            self._check_open()
            return self._range(device_id, min(after_seq, MAX_SEQ), limit, now)

    def ack(self, device_id: str, seq: int) -> int:
        """Remove the device's messages with seq <= *seq*; return how many were removed.

        Idempotent; an ack beyond :meth:`last_seq` removes everything stored
        and leaves the counter alone.
        """
        device_id = check_device_id(device_id)
        seq = check_seq("seq", seq)
        with self._lock:
            self._check_open()
            if seq == 0:
                return 0
            seq = min(seq, MAX_SEQ)
            return self._acked([(device_id, seq)], self._ack(device_id, seq))

    def ack_many(self, acks: Iterable[tuple[str, int]]) -> int:
        """Apply several ``(device_id, seq)`` acks at once (one loop turn's); return the total removed.

        Same rules as :meth:`ack`, in one transaction (SQLite) / one lock hold.
        """
        if isinstance(acks, (str, bytes)):
            raise TypeError("acks must be an iterable of (device_id, seq) pairs")
        pairs = []
        for item in acks:
            if not isinstance(item, tuple) or len(item) != 2:
                raise TypeError(f"each ack must be a (device_id, seq) tuple, not {item!r}")
            seq = check_seq("seq", item[1])
            if seq:
                pairs.append((check_device_id(item[0]), min(seq, MAX_SEQ)))
            else:
                check_device_id(item[0])
        with self._lock:
            self._check_open()
            return self._acked(pairs, self._ack_many(pairs)) if pairs else 0

    def last_seq(self, device_id: str) -> int:
        """The highest seq ever given to *device_id* (0 for a device never seen)."""
        device_id = check_device_id(device_id)
        with self._lock:
            self._check_open()
            return self._last_seq(device_id)

    def advance_seq(self, device_id: str, seq: int) -> int:
        """Raise the device's counter to at least *seq* (never lowers it); return it.

        For a device that reconnects with a last seq above :meth:`last_seq`
        (the store lost its state): later messages then get seqs above what
        the device has, instead of ones it would drop as already seen.
        """
        device_id = check_device_id(device_id)
        seq = check_seq("seq", seq)
        if seq > MAX_SEQ:
            raise ValueError(f"seq must be < 2**63, got {seq}")
        with self._lock:
            self._check_open()
            return self._advance_seq(device_id, seq)

    def backlog(self, device_id: str, after_seq: int = 0, *, now: float | None = None) -> int:
        """How many unexpired messages with seq > *after_seq* are stored for the device."""
        device_id = check_device_id(device_id)
        after_seq = check_seq("after_seq", after_seq)
        now = resolve_now(now)
        with self._lock:
            self._check_open()
            return self._backlog(device_id, min(after_seq, MAX_SEQ), now)

    def purge_expired(self, now: float | None = None, *, limit: int | None = None) -> int:
        """Delete expired messages, then idempotency keys past their window; at most *limit* rows.

        Returns how many rows went: expired messages plus forgotten keys
        (``stats().expired`` counts the messages alone). With a *limit* it is
        one short step of a background purge (:class:`pushcore.Server` runs
        one on its loop): call again while it returns *limit*. Messages go in
        order of expiry, and keys only with what the limit leaves.
        """
        now = resolve_now(now)
        if limit is not None:
            limit = check_limit(limit)
        with self._lock:
            self._check_open()
            removed = self._purge_expired(now, limit)
            self._expired += removed
            if limit is None:
                return removed + self._purge_keys(now, None)
            return removed + (self._purge_keys(now, limit - removed) if removed < limit else 0)

    def drop_empty_devices(self, limit: int | None = None) -> tuple[int, bool]:
        """Drop the records of devices that hold no stored message, at most *limit*; ``(dropped, more)``.

        A device's record is its seq counter (its subscriptions and
        revocation are kept apart and stay). Dropping it keeps exactly-once
        through the **seq floor**: the store keeps the highest counter of any
        record it dropped, and a device without a record gets its next seq
        above the floor. So a device that still holds its old last seq
        never takes a new message for one it has seen, and its HELLO claim
        (an ACK up to it) never removes a message it has not seen; a claim
        with no counter raises the counter as before (:meth:`advance_seq`).
        The price is a gap in the device's seqs, which the protocol allows.
        :meth:`last_seq` of a dropped device is 0 ("no counter").

        *more* is True when a later call may find more to drop (the work per
        call is bounded: a step of a background sweep).
        """
        if limit is not None:
            limit = check_limit(limit)
        with self._lock:
            self._check_open()
            return self._drop_empty_devices(limit)

    def backlog_sizes(self, now: float | None = None) -> tuple[int, int]:
        """``(unexpired stored messages, devices with at least one)``: what waits, purged or not.

        :meth:`stats` counts what is stored, expired messages included until
        they are purged; this counts what a device would still be sent, so
        it agrees with :meth:`backlog` and :meth:`devices_with_backlog`. Its
        cost grows with the expired messages not yet purged, not with the
        store's size.
        """
        now = resolve_now(now)
        with self._lock:
            self._check_open()
            return self._backlog_sizes(now)

    def devices_with_backlog(self, now: float | None = None) -> list[str]:
        """Sorted ids of the devices with at least one unexpired stored message."""
        now = resolve_now(now)
        with self._lock:
            self._check_open()
            return self._devices_with_backlog(now)

    def stats(self) -> StoreStats:
        """Current sizes and the counters since this store was opened."""
        with self._lock:
            self._check_open()
            messages, devices = self._sizes()
            return StoreStats(
                messages, devices, self._dropped_by_cap, self._collapsed, self._expired
            )

    # -- subscriptions --

    def subscribe(self, device_id: str, topics: Iterable[str]) -> int:
        """Add the device to each topic; return how many memberships are new."""
        device_id = check_device_id(device_id)
        topic_list = check_topics(topics)
        with self._lock:
            self._check_open()
            return self._subscribe(device_id, topic_list) if topic_list else 0

    def unsubscribe(self, device_id: str, topics: Iterable[str]) -> int:
        """Remove the device from each topic; return how many memberships ended."""
        device_id = check_device_id(device_id)
        topic_list = check_topics(topics)
        with self._lock:
            self._check_open()
            return self._unsubscribe(device_id, topic_list) if topic_list else 0

    def subscribers(self, topic: str) -> set[str]:
        """The ids of the devices subscribed to *topic*."""
        topic = check_text("topic", topic, allow_empty=False)
        with self._lock:
            self._check_open()
            return self._subscribers(topic)

    def topics(self, device_id: str) -> set[str]:
        """The topics *device_id* is subscribed to."""
        device_id = check_device_id(device_id)
        with self._lock:
            self._check_open()
            return self._topics(device_id)

    # -- lifetime --

    def close(self) -> None:
        """Release the store's resources; later calls raise :class:`StoreError`. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- what a backend implements (called with the lock held, arguments validated) --

    @abc.abstractmethod
    def _append(self, pairs: list[tuple[str, MessageFields]], now: float) -> list[StoredMessage]:
        """Append each ``(device id, fields)`` in order, atomically; apply collapse and cap.

        Honours ``fields.idempotency_key`` (module doc: a remembered key gives
        a :class:`ReplayedMessage`, a conflicting one raises
        :class:`IdempotencyConflict` with the item's index before anything is
        stored; a new one is remembered in the same transaction).

        Must add to ``self._collapsed``, ``self._dropped_by_cap`` and
        ``self._expired`` only once the whole batch has succeeded.
        """

    def _append_topic(self, topic: str, fields: MessageFields, now: float,
                      keep: Callable[[str], bool] | None) -> tuple[int, list[str], list[int]]:
        """:meth:`append_topic` (lock held): the subscribers listed, then one :meth:`append_many`.

        A store that can do it without listing them (SQLite) overrides this.
        """
        devices = sorted(self._subscribers(topic))
        if not devices:
            return 0, [], []
        pairs = [(device, fields) for device in devices]
        stored = self._stored(pairs, self._append(pairs, now))
        kept = [(device, message.seq) for device, message in zip(devices, stored) if keep is None or keep(device)]
        return len(stored), [device for device, _seq in kept], [seq for _device, seq in kept]

    @abc.abstractmethod
    def _range(self, device_id: str, after_seq: int, limit: int, now: float) -> list[StoredMessage]: ...

    @abc.abstractmethod
    def _ack(self, device_id: str, seq: int) -> int: ...

    def _ack_many(self, acks: list[tuple[str, int]]) -> int:
        """Apply each ack (seq >= 1); backends with transactions override this to use one."""
        return sum(self._ack(device_id, seq) for device_id, seq in acks)

    @abc.abstractmethod
    def _last_seq(self, device_id: str) -> int: ...

    @abc.abstractmethod
    def _advance_seq(self, device_id: str, seq: int) -> int: ...

    @abc.abstractmethod
    def _backlog(self, device_id: str, after_seq: int, now: float) -> int: ...

    @abc.abstractmethod
    def _purge_expired(self, now: float, limit: int | None) -> int: ...

    def _drop_empty_devices(self, limit: int | None) -> tuple[int, bool]:
        """Backends that keep a seq floor override this; the default keeps every record."""
        return 0, False

    def _backlog_sizes(self, now: float) -> tuple[int, int]:
        """Backends override this with a cheaper count; the default reads every device's backlog."""
        devices = self._devices_with_backlog(now)
        return sum(self._backlog(d, 0, now) for d in devices), len(devices)

    @abc.abstractmethod
    def _devices_with_backlog(self, now: float) -> list[str]: ...

    @abc.abstractmethod
    def _sizes(self) -> tuple[int, int]:
        """``(stored messages, devices with at least one stored message)``."""

    @abc.abstractmethod
    def _subscribe(self, device_id: str, topics: list[str]) -> int: ...

    @abc.abstractmethod
    def _unsubscribe(self, device_id: str, topics: list[str]) -> int: ...

    @abc.abstractmethod
    def _subscribers(self, topic: str) -> set[str]: ...

    @abc.abstractmethod
    def _topics(self, device_id: str) -> set[str]: ...

    @abc.abstractmethod
    def _close(self) -> None: ...

    def _purge_keys(self, now: float, limit: int | None) -> int:
        """Forget up to *limit* (None: all) idempotency keys expired at *now*; return how many."""
        return 0

    # -- token revocations (pushcore.Server.revoke); kept last so other store work merges cleanly --

    def set_revoked_before(self, device_id: str, ts: float) -> None:
        """Record that *device_id*'s tokens issued before *ts* (Unix seconds) are revoked.

        Replaces an earlier value for the device (:meth:`pushcore.Server.revoke`
        keeps the later of the two). Durable on SQLite: it survives a restart.
        """
        device_id = check_device_id(device_id)
        if not isinstance(ts, (int, float)) or isinstance(ts, bool):
            raise TypeError(f"ts must be Unix seconds, not {type(ts).__name__}")
        if not math.isfinite(ts) or ts < 0:
            raise ValueError(f"ts must be finite Unix seconds >= 0, got {ts!r}")
        with self._lock:
            self._check_open()
            self._set_revoked_before(device_id, float(ts))

    def revoked_before(self, device_id: str) -> float | None:
        """The revocation time recorded for *device_id*, or None when it has none."""
        device_id = check_device_id(device_id)
        with self._lock:
            self._check_open()
            return self._revoked_before(device_id)

    # Not abstract, so a Store subclass written before revocations existed
    # still works: it keeps none (every HELLO passes this check) and
    # Server.revoke says clearly that it cannot.
    def _set_revoked_before(self, device_id: str, ts: float) -> None:
        raise StoreError(f"{type(self).__name__} does not keep revocations (implement _set_revoked_before)")

    def _revoked_before(self, device_id: str) -> float | None:
        return None

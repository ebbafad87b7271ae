"""Server-side delivery: route table and seq-ordered sending of stored messages.

This is the "message distribution" layer of the design as one small class,
:class:`Delivery`, used by :class:`pushcore.Server`. It knows nothing of
sockets: it talks to a *transport*, which in the server is the C-level
connection loop (``pushcore._loop.Loop``), through these methods::

    send_push(cid, seq, message_id, payload, priority, expiry, collapse_key, topic)
                               encode one PUSH in C, queue it, record seq as sent (False: gone)
    sent_seq(cid)              the highest seq sent on the connection (kept in C)
    set_sent_seq(cid, seq)     set it (at HELLO: what the device says it has)
    send(cid, data)            queue encoded bytes (NOTIFY) to one connection
    send_many(cids, data)      the same bytes to many connections, one call (ephemeral broadcast)
    send_pushes(cids, seqs, message_ids, payload, ..., behind=list)
                               one PUSH per connection (its own seq), one C call (durable fan-out);
                               with *behind*, only to connections whose sent seq is seq - 1
    watch_activity(cid)        one-shot: report the connection's next frame
    set_label(cid, device_id)  keep the device id with the connection, in C (None: forget)
    label(cid)                 the device id kept with it, or None

A push that may go at once is two calls into C: ``sent_seq`` and
``send_push``. Connections are named only by their cid: nothing here knows
how the loop builds one.

The invariant that makes "no loss, no duplicate shown" hold
-------------------------------------------------------------
Every message to a device is appended to the store first, where it gets the
device's next seq. Per connection the loop keeps one integer in C, the
connection's **sent seq**: the highest seq *sent on this connection* — every
stored message of the device with a seq up to it has been sent (or the
device said it had it). ``send_push`` raises it in the same C call that
queues the frame. Messages always go out in seq order on a
connection, so the device can drop any seq it has already seen
(:class:`pushcore.device.inbox.Inbox`), and nothing is lost because nothing leaves
the store before the device ACKs it.

* Messages stored by one store call (:meth:`Delivery.push`, :meth:`Delivery.push_batch`,
  :meth:`Delivery.push_many`) take one delivery pass: per online device,
  its fresh messages in seq order, as if each had been pushed alone.
* A **high priority** message goes out at once. When the sent seq is exactly
  ``seq - 1`` that is one ``send_push``; otherwise
  something waits before it (low priority messages, see below) and the
  connection catches up from its sent seq, so the waiting messages ride along in
  order — ACK is cumulative, so sending seq 6 before a waiting seq 5 would
  let ``ACK 6`` delete seq 5 unseen.
* A **low priority** message stays in the store; the connection is watched
  (``watch_activity``) and, at its next frame of any kind — a heartbeat
  PING included — :meth:`Delivery.awake` sends what waits after the sent seq.
  Expiry is checked when it is read from the store.
* **Catching up** (HELLO, wake-up, a high push behind waiting messages):
  up to ``inline_max`` waiting messages are pushed inline; more than that
  is announced with ``NOTIFY(latest seq)`` and the device FETCHes pages.
  While a connection is fetching, new messages are only stored: each
  FETCH answer reads the store afresh, and ends with a NOTIFY that says
  whether more is waiting (NOTIFY above what the device has) or not (NOTIFY
  of the last seq sent, the "you have it all" mark), after which pushes
  stream again.
* **Pages are bounded by bytes as well as count**: an inline catch-up and a
  FETCH answer each hold at most ``page_bytes`` of encoded PUSH frames
  (default 1 MiB, well under the loop's 4 MiB slow-consumer cap), and
  always at least one message, so a backlog of any size drains at the
  device's pace: the next page goes only when the device FETCHes again.
  An inline catch-up that would pass the budget is announced with NOTIFY
  instead, like one over ``inline_max``.
* **One FETCH read in flight per connection**: a page read holds up to a
  page of messages until its answer is queued, so later FETCH frames of the
  same connection wait (in order, as two numbers each) until the one before
  is answered; a device with more than ``MAX_WAITING_FETCHES`` waiting is
  not reading its answers and is closed ``SLOW_CONSUMER`` by the server.
* **A connection whose output is over the loop's high watermark is held**
  (:meth:`Delivery.hold`, from the loop's ``on_pause``): new messages are
  only stored until its queue drains (:meth:`Delivery.release`, from
  ``on_resume``), which catches it up from its sent seq like a wake-up
  (inline, or NOTIFY when much waits). So live pushes to a device that
  reads slowly wait in the store instead of growing its queue to the cap,
  and they never pass what is queued before them.
* **HELLO's last seq** counts as an ACK (the device says it has everything
  up to it), and raises the device's counter in the store if the store has
  forgotten it (a memory store after a restart), so new messages are not
  taken for duplicates.
* **While the store cannot write** (:class:`pushcore.store.StoreUnavailable`)
  devices still connect and get what is stored: the ACKs of HELLO and of ACK
  frames are kept in :class:`pushcore.gateway.deferred.DeferredWrites` and
  made when the store heals (the server's probe calls :meth:`Delivery.flush_deferred`),
  and every push fails with the error. The sent seq does not depend on the
  store, so nothing the device has is sent again on the connection.

Broadcasts
----------
A stored message needs each device's own seq, so a durable fan-out (topic
publish, durable broadcast) appends once per device in one store
transaction (``append_many``); the connected, caught-up devices get their
PUSHes (one seq each) from one ``send_pushes`` call, which encodes them in C
and records each connection's sent seq; a device with messages waiting
before it catches up from its sent seq as after a single push. An
**ephemeral** broadcast is not stored: it carries seq 0 ("not sequenced":
shown, never acked, never deduplicated, lost if the device is offline) and
its bytes are encoded once and handed to ``send_many`` for every connected
device in one C call; it goes out at once whatever its priority.

Memory per connection (the idle budget is 300 bytes in the server process,
the loop's C struct included): one dict entry device id → cid and one entry
cid → device id (the same int and str objects), and the sent seq in C —
about 100 bytes plus the device id. Connections catching up a large backlog
are also in a set while they fetch, and connections over the high
watermark in another.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from ..codec import frames as _frames
from ..store import (
    PRIORITY_HIGH,
    IdempotencyConflict,
    NewMessage,
    ReplayedMessage,
    SeqExhausted,
    Store,
    StoredMessage,
    StoreUnavailable,
)
from ..store.base import check_device_id, check_message
from ..store.pipeline import Op, StorePipeline
from ..wire import MAX_COLLAPSE_KEY_BYTES, MAX_PAYLOAD_BYTES, MAX_TOPIC_BYTES
from .deferred import DeferredWrites
from .results import FanOut

__all__ = ["Delivery", "MessageIds", "DEFAULT_INLINE_MAX", "DEFAULT_PAGE_MAX", "DEFAULT_PAGE_BYTES",
           "MAX_WAITING_FETCHES",
           "push_frame_bytes"]

DEFAULT_INLINE_MAX = 16  # waiting messages pushed inline on HELLO / wake-up; more -> NOTIFY
DEFAULT_PAGE_MAX = 256  # most messages answered to one FETCH
DEFAULT_PAGE_BYTES = 1 << 20  # most encoded PUSH bytes in one page (inline or FETCH answer)

# Most bytes a PUSH frame spends beyond its payload, topic and collapse key:
# header 1, body length <= 5, seq <= 10, message id 8, expiry 4, two text lengths <= 2 each.
_PUSH_OVERHEAD = 32
# A page of this many messages can never pass the budget (largest payload, topic and key).
_LARGEST_PUSH = MAX_PAYLOAD_BYTES + MAX_TOPIC_BYTES + MAX_COLLAPSE_KEY_BYTES * 4 + _PUSH_OVERHEAD
log = logging.getLogger("pushcore.gateway.delivery")

#: FETCH frames of one connection that may wait behind the one being read (past it: SLOW_CONSUMER)
MAX_WAITING_FETCHES = 16
_READ_CHUNK = 64  # messages read from the store at a time while filling a page

_encode_push = _frames.encode_push


def push_frame_bytes(message: StoredMessage) -> int:
    """An upper bound of the bytes *message*'s PUSH frame takes on the wire (at most 32 over its fields)."""
    size = len(message.payload) + len(message.topic) + _PUSH_OVERHEAD
    if message.collapse_key:
        size += len(message.collapse_key.encode())
    return size


def _encode_notify(latest_seq: int) -> bytes:
    notify: bytes = _frames.Notify(latest_seq).encode()
    return notify


class Transport(Protocol):
    """What :class:`Delivery` needs of the loop (the module docstring explains each)."""

    def send_push(self, cid: int, seq: int, message_id: int, payload: bytes, priority: int = ...,
                  expiry: int = ..., collapse_key: str = ..., topic: str = ...) -> bool: ...
    def send_pushes(self, cids: Sequence[int], seqs: Sequence[int], message_ids: Sequence[int] | int,
                    payload: bytes, priority: int = ..., expiry: int = ..., collapse_key: str = ...,
                    topic: str = ..., *, behind: list[int] | None = ...) -> list[int]: ...
    def sent_seq(self, cid: int) -> int: ...
    def set_sent_seq(self, cid: int, seq: int) -> None: ...
    def send(self, cid: int, data: bytes, frames: int = ...) -> bool: ...
    def send_many(self, cids: Sequence[int], data: bytes, frames: int = ...) -> int: ...
    def watch_activity(self, cid: int) -> object: ...
    def set_label(self, cid: int, label: object) -> None: ...
    def label(self, cid: int) -> Any: ...


class _NoTransport:
    """The transport of a Delivery made before the server listens: nothing is
    connected, so nothing may be sent (messages are only stored)."""

    def __getattr__(self, name: str) -> object:
        raise RuntimeError(f"Delivery.transport.{name}: the server is not listening (no loop yet)")


class MessageIds:
    """64-bit message ids, unique per message and increasing within a process.

    Layout: milliseconds since the epoch (42 bits, good until 2109), a random
    node number (10 bits, so servers sharing devices rarely collide), a
    counter (12 bits). More than 4096 ids in one millisecond borrow from the
    following milliseconds, so ids never repeat within a process.
    """

    __slots__ = ("_node", "_last", "_clock", "_lock")

    def __init__(self, node: int | None = None, clock: Callable[[], float] = time.time) -> None:
        if node is None:
            node = int.from_bytes(os.urandom(2), "little") & 0x3FF
        if not 0 <= node <= 0x3FF:
            raise ValueError(f"node must be in 0..1023, got {node}")
        self._node = node << 12
        self._last = 0
        self._clock = clock
        self._lock = threading.Lock()  # the store's writer and the loop both take ids

    def set_node(self, node: int) -> None:
        """Use node number *node* (0..1023) from now on: a cluster hands each node its own."""
        if not 0 <= node <= 0x3FF:
            raise ValueError(f"node must be in 0..1023, got {node}")
        with self._lock:
            self._node = node << 12

    def next(self) -> int:
        """A fresh id (any thread)."""
        candidate = ((int(self._clock() * 1000) & ((1 << 42) - 1)) << 22) | self._node
        with self._lock:
            if candidate <= self._last:
                candidate = self._last + 1
            self._last = candidate
        return candidate & 0xFFFFFFFFFFFFFFFF


class Delivery:
    """The route table of one server and the seq-ordered delivery of stored messages.

    *store* is a :class:`pushcore.store.Store`; *transport* has the methods
    listed in the module docstring (the server's Loop). Store work goes
    through *pipeline* (:class:`pushcore.store.pipeline.StorePipeline`):
    the server gives one with a writer thread, so the loop never waits for
    the store and each step continues in its completion; by default it has
    none and every store call runs at once, in the caller's thread.
    The route table and per-connection state are the loop thread's; the
    ``push*`` methods may be called from any thread when the pipeline has
    a writer thread (they wait only for their own write).
    """

    def __init__(
        self,
        store: Store,
        transport: Transport | None,
        *,
        inline_max: int = DEFAULT_INLINE_MAX,
        page_max: int = DEFAULT_PAGE_MAX,
        page_bytes: int = DEFAULT_PAGE_BYTES,
        message_ids: MessageIds | None = None,
        pipeline: StorePipeline | None = None,
    ) -> None:
        if inline_max < 0:
            raise ValueError(f"inline_max must be >= 0, got {inline_max}")
        if page_max < 1:
            raise ValueError(f"page_max must be >= 1, got {page_max}")
        if not isinstance(page_bytes, int) or isinstance(page_bytes, bool) or page_bytes < 1:
            raise ValueError(f"page_bytes must be an int >= 1, got {page_bytes!r}")
        self.store = store
        #: False while the server is not listening: messages are only stored.
        self.has_transport = transport is not None
        self.transport: Transport = transport if transport is not None else _NoTransport()  # type: ignore[assignment]  # a stand-in that refuses every call
        self.inline_max = inline_max
        self.page_max = page_max
        self.page_bytes = page_bytes
        # Up to this many messages of any size fit the byte budget: no need to add up sizes.
        self._fits_any = page_bytes // _LARGEST_PUSH
        self.message_ids = message_ids or MessageIds()
        self.routes: dict[str, int] = {}  # device id -> cid of its authenticated connection
        # The reverse (cid -> device id) is the loop's per-connection label, kept in
        # the C connection table: no Python table per connection mirrors it.
        self.fetching: set[int] = set()  # cids catching up a large backlog through FETCH
        self.held: set[int] = set()  # cids whose output is over the high watermark (on_pause)
        # cid -> FETCHes (after_seq, count) waiting behind the one whose read is in flight;
        # present only while a read is in flight
        self._fetches: dict[int, deque[tuple[int, int]]] = {}
        # cid -> [read again?, its upto] while a catch-up read is in flight: one read per
        # connection at a time (a burst of pushes to a device that is behind would read a page each)
        self._catching: dict[int, list[Any]] = {}
        #: called with a cid whose store read failed (the server refuses it INTERNAL_ERROR,
        #: so the device reconnects and resumes instead of waiting for an answer)
        self.on_read_error: Callable[[int, BaseException], object] | None = None
        # In a cluster (pushcore.cluster): messages stored for devices not connected here
        # go to this, as groups of (message, [(device id, seq), ...]); None on one node.
        self.remote: Callable[[list[tuple[StoredMessage, list[tuple[str, int]]]]], object] | None = None
        # ... and the (device id, seq) of replayed pushes for devices not connected here (wake-ups)
        self.remote_wake: Callable[[list[tuple[str, int]]], object] | None = None
        #: acks and counter advances an unwritable store refused, made when it heals
        #: (touched only where store work runs: the pipeline's writer thread)
        self.deferred = DeferredWrites()
        self.pipeline = pipeline if pipeline is not None else StorePipeline(store, threaded=False)
        self.pipeline.message_ids = self.message_ids.next
        self.pipeline.before_append = self._flush_advances

    # -- routes ---------------------------------------------------------------

    def device_of(self, cid: int) -> str | None:
        """The device authenticated on *cid*, or None."""
        device_id: str | None = self.transport.label(cid)
        return device_id

    def connection_of(self, device_id: str) -> int | None:
        """The cid holding *device_id*, or None when it is offline (here)."""
        return self.routes.get(device_id)

    def connections(self) -> list[int]:
        """The cids of every authenticated connection."""
        return list(self.routes.values())

    def __len__(self) -> int:
        return len(self.routes)

    def attach(self, cid: int, device_id: str, last_seq: int, counter: int | None = None) -> int | None:
        """Record that *cid* is now *device_id*, which has every seq up to *last_seq*.

        *counter* is ``store.last_seq(device_id)`` when the caller has just
        read it (the server does, to judge the claim), saving a second read.

        Returns the cid of an older connection of the same device, now
        forgotten here (the caller says GOAWAY REPLACED to it and closes it),
        or None. Call :meth:`resume` once WELCOME is queued. While the store
        cannot write, the ack (and advance) is kept in :attr:`deferred`;
        raises :class:`~pushcore.store.StoreUnavailable` only when an advance
        cannot be kept, before anything changed.
        """
        if last_seq:
            if counter is None:
                counter = self.store.last_seq(device_id)
            self.claim_writes(device_id, last_seq, counter)
        return self.bind(cid, device_id, last_seq)

    def claim_writes(self, device_id: str, last_seq: int, counter: int) -> None:
        """The store part of :meth:`attach`: ACK *last_seq* (and raise a lost *counter* to it).

        Runs where store work runs (the pipeline's writer). While the store
        cannot write the writes are kept in :attr:`deferred`; raises
        :class:`~pushcore.store.StoreUnavailable` only when an advance
        cannot be kept (refuse the device: a push would get a used seq).
        """
        if not last_seq:
            return
        store = self.store
        try:
            if last_seq > counter:
                store.advance_seq(device_id, last_seq)
            store.ack(device_id, last_seq)
        except StoreUnavailable:
            # Kept for when the store heals; an advance that cannot be kept refuses
            # the device (before any route changed), as a push would get a used seq.
            if last_seq > counter and not self.deferred.advance(device_id, last_seq):
                raise
            self.deferred.ack(device_id, last_seq)

    def bind(self, cid: int, device_id: str, last_seq: int) -> int | None:
        """The route part of :meth:`attach` (loop thread): *cid* is now *device_id*; the older cid or None."""
        old = self.routes.get(device_id)
        if old is not None and old != cid:
            self.transport.set_label(old, None)
            self.fetching.discard(old)
            self.held.discard(old)
            self._fetches.pop(old, None)
            self._catching.pop(old, None)
        else:
            old = None
        self.routes[device_id] = cid
        self.transport.set_label(cid, device_id)
        self.transport.set_sent_seq(cid, last_seq)
        return old

    def resume(self, cid: int) -> None:
        """Send what waits after the seq given to :meth:`attach` (inline, or NOTIFY)."""
        device_id = self.device_of(cid)
        if device_id is not None:
            self._catch_up(cid, device_id, self.transport.sent_seq(cid))

    def detach(self, cid: int) -> str | None:
        """Forget *cid*; returns its device id if it was the device's current connection."""
        device_id: str | None = self.transport.label(cid)
        if device_id is None:
            return None
        self.transport.set_label(cid, None)
        self.fetching.discard(cid)
        self.held.discard(cid)
        self._fetches.pop(cid, None)
        self._catching.pop(cid, None)
        del self.routes[device_id]
        return device_id

    # -- sending --------------------------------------------------------------

    def _send_messages(self, cid: int, messages: Sequence[StoredMessage]) -> None:
        """PUSH *messages* (ascending seq) on *cid*; the loop records each seq as sent."""
        send_push = self.transport.send_push
        for m in messages:
            if not send_push(cid, m.seq, m.message_id, m.payload, m.priority, m.expiry,
                             m.collapse_key, m.topic):
                break  # closing or gone (e.g. over the write cap): the rest would not go either

    def _page(
        self, device_id: str, after_seq: int, max_count: int, upto: int | None = None
    ) -> tuple[list[StoredMessage], bool]:
        """The stored messages after *after_seq* (up to seq *upto*) that fit one page, and whether more wait.

        A page holds at most *max_count* messages and ``page_bytes`` of
        encoded PUSH frames, but always at least one message. The store is
        read in chunks, so a page of a few large messages does not read
        hundreds of them.
        """
        store = self.store
        budget = self.page_bytes
        page: list[StoredMessage] = []
        size = 0
        want = max_count + 1  # one more than fits: tells whether more wait
        count = min(want, _READ_CHUNK)
        while True:
            chunk = store.range(device_id, after_seq, count)
            for m in chunk:
                if upto is not None and m.seq > upto:
                    return page, False
                if len(page) == max_count:
                    return page, True
                size += push_frame_bytes(m)
                if page and size > budget:
                    return page, True
                page.append(m)
            if len(chunk) < count:
                return page, False  # the store has no more
            after_seq = chunk[-1].seq
            # Read about what the rest of the budget holds at the sizes seen so far (one over).
            fits = (budget - size) * len(page) // size + 2
            count = max(1, min(want - len(page), fits))

    def _catch_up(self, cid: int, device_id: str, after_seq: int, upto: int | None = None) -> None:
        """Send every waiting message after *after_seq* (up to seq *upto*), or NOTIFY when there are many.

        "Many" is more than ``inline_max`` messages or more than one page of bytes.
        One read per connection is in flight: a catch-up asked for meanwhile
        is one more read once it completed, from the sent seq then.
        """
        catching = self._catching.get(cid)
        if catching is not None:
            catching[0] = True
            if catching[1] is not None and (upto is None or upto > catching[1]):
                catching[1] = upto
            return
        self._catching[cid] = [False, upto]
        inline_max = self.inline_max

        def read(store: Store) -> tuple[list[StoredMessage], bool, int]:
            messages, more = self._page(device_id, after_seq, inline_max, upto)
            return messages, more, store.last_seq(device_id) if more else 0

        def done(result: tuple[list[StoredMessage], bool, int] | None, error: BaseException | None) -> None:
            catching = self._catching.pop(cid, None)
            if catching is None or self.transport.label(cid) != device_id:
                return  # gone or replaced since (detach forgot it)
            if result is None:
                self._read_failed(cid, error)
                return
            if cid in self.fetching or cid in self.held:
                return  # fetching or held since: the FETCH or the release sends what waits
            self._caught_up(cid, after_seq, result)
            if catching[0] and cid not in self.fetching:
                self._catch_up(cid, device_id, self.transport.sent_seq(cid), catching[1])

        self.pipeline.submit(read, done=done, read=True, urgent=True)

    def _read_failed(self, cid: int, error: BaseException | None) -> None:
        """A page read for *cid* failed (the store closed, an I/O error): nothing answers it now."""
        log.error("pushcore delivery: a store read for connection %#x failed", cid, exc_info=error)
        if self.on_read_error is not None and error is not None:
            self.on_read_error(cid, error)

    def _caught_up(self, cid: int, after_seq: int, result: tuple[list[StoredMessage], bool, int]) -> None:
        """Send a catch-up read's page (only what follows the sent seq now), or NOTIFY when much waits."""
        messages, more, latest = result
        sent = self.transport.sent_seq(cid)
        if more:
            if sent >= latest:
                # A FETCH answered since this read was submitted sent it all (and said so):
                # fetch mode now would wait for a FETCH the device has no reason to send.
                return
            self.fetching.add(cid)
            self.transport.send(cid, _encode_notify(latest))
            return
        if sent > after_seq:  # something went out meanwhile: only what follows it
            messages = [m for m in messages if m.seq > sent]
        if messages:
            self._send_messages(cid, messages)

    def _offer(self, cid: int, device_id: str, fresh: Sequence[StoredMessage]) -> None:
        """Freshly stored messages of online *device_id* (on *cid*, not fetching), ascending seq.

        *fresh* holds the device's messages of one store call (consecutive
        seqs). Everything up to the newest high priority one goes now, as if
        each had been pushed alone: a high priority message carries the ones
        waiting before it. Low priority messages after it wait for the
        device's next frame.
        """
        transport = self.transport
        last_high = len(fresh) - 1
        while last_high >= 0 and fresh[last_high].priority != PRIORITY_HIGH:
            last_high -= 1
        if last_high < 0:
            transport.watch_activity(cid)
            return
        first = fresh[0]
        sent = transport.sent_seq(cid)
        if len(fresh) == 1:
            if sent == first.seq - 1:
                transport.send_push(cid, first.seq, first.message_id, first.payload, first.priority,
                                    first.expiry, first.collapse_key, first.topic)
            else:
                self._catch_up(cid, device_id, sent)
            return
        going = fresh[: last_high + 1]
        if sent == first.seq - 1 and self._all_still_stored(fresh) and self._fits(going):
            # Nothing waits before them: encode from what append returned, no store read.
            self._send_messages(cid, going)
        else:
            # Something waits before them, the batch collapsed its own messages, or
            # they pass a page: read the store so only what is still stored goes
            # out, in order, at most a page (NOTIFY for the rest).
            self._catch_up(cid, device_id, sent, going[-1].seq)
        if last_high < len(fresh) - 1:
            transport.watch_activity(cid)

    def _fits(self, messages: Sequence[StoredMessage]) -> bool:
        """True when *messages* fit one page of bytes (a short list of any size always does)."""
        if len(messages) <= self._fits_any:
            return True
        return sum(map(push_frame_bytes, messages)) <= self.page_bytes

    def _all_still_stored(self, fresh: Sequence[StoredMessage]) -> bool:
        """False when one store call may have removed some of its own *fresh* messages.

        A later message with the same collapse key replaces an earlier one, and
        more messages than the per-device cap push the oldest out.
        """
        if len(fresh) > self.store.max_messages:
            return False
        keys = [m.collapse_key for m in fresh if m.collapse_key]
        return len(keys) == len(set(keys))

    def _deliver(self, device_ids: Sequence[str], stored: Sequence[StoredMessage], *,
                 here_only: bool = False) -> None:
        """Offer freshly stored messages (``stored[i]`` is for ``device_ids[i]``) to the devices here.

        One pass for any batch: each online device gets its messages in seq
        order through :meth:`_offer`, once per device. In a cluster the
        messages of devices not connected here go to :attr:`remote` (unless
        *here_only*: they came from another node).
        """
        routes = self.routes
        remote = None if here_only else self.remote
        if remote is not None:
            away = [(m, [(d, m.seq)]) for d, m in zip(device_ids, stored) if d not in routes]
            if away:
                remote(away)
        if not routes:
            return
        fetching = self.fetching
        held = self.held
        if len(stored) == 1:
            device_id = device_ids[0]
            cid = routes.get(device_id)
            if cid is not None and cid not in fetching and cid not in held:
                self._offer(cid, device_id, stored)
            return
        per_device: dict[str, list[StoredMessage]] = {}
        for device_id, message in zip(device_ids, stored):
            if device_id in routes:
                fresh = per_device.get(device_id)
                if fresh is None:
                    per_device[device_id] = [message]
                else:
                    fresh.append(message)
        for device_id, fresh in per_device.items():
            cid = routes[device_id]
            if cid not in fetching and cid not in held:
                self._offer(cid, device_id, fresh)

    def _deliver_fanout(self, device_ids: Sequence[str], stored: Sequence[StoredMessage]) -> None:
        """:meth:`_deliver` for one message stored once per device (``stored[i]`` for the distinct
        ``device_ids[i]``, the same fields, each its own seq): the same outcome per device, in C."""
        if stored:
            self._deliver_fanout_seqs(device_ids, [m.seq for m in stored], stored[0], stored)

    def _deliver_fanout_seqs(self, device_ids: Sequence[str], seqs: Sequence[int], first: StoredMessage,
                             stored: Sequence[StoredMessage] | None = None, *, here_only: bool = False) -> None:
        """One message (the fields of *first*) stored for each of *device_ids* with ``seqs[i]``.

        Every caught-up connection (sent seq = seq - 1) gets its PUSH in one
        ``send_pushes`` call; one that is behind catches up from its sent seq,
        as :meth:`_offer` does. Low priority, a single device, or a transport
        without ``send_pushes`` take :meth:`_deliver` (with *stored*, or
        messages made from *first* for the devices here).
        """
        routes = self.routes
        remote = None if here_only else self.remote
        if remote is not None and seqs:
            away = [(d, seq) for d, seq in zip(device_ids, seqs) if d not in routes]
            if away:
                remote([(first, away)])
        if not routes or not seqs:
            return
        send_pushes = getattr(self.transport, "send_pushes", None)
        if len(seqs) == 1 or send_pushes is None or first.priority != PRIORITY_HIGH:
            if stored is None:
                here = [i for i, device_id in enumerate(device_ids) if device_id in routes]
                device_ids = [device_ids[i] for i in here]
                stored = [replace(first, seq=seqs[i]) for i in here]
            self._deliver(device_ids, stored, here_only=True)
            return
        fetching = self.fetching
        held = self.held
        cids: list[int] = []
        out_seqs: list[int] = []
        devices: list[str] = []
        route = routes.get
        for device_id, seq in zip(device_ids, seqs):
            cid = route(device_id)
            if cid is not None and cid not in fetching and cid not in held:
                cids.append(cid)
                out_seqs.append(seq)
                devices.append(device_id)
        if not cids:
            return
        behind: list[int] = []
        send_pushes(cids, out_seqs, first.message_id, first.payload, first.priority, first.expiry,
                    first.collapse_key, first.topic, behind=behind)
        sent_seq = self.transport.sent_seq
        for i in behind:
            self._catch_up(cids[i], devices[i], sent_seq(cids[i]))

    def deliver_forwarded(self, groups: Sequence[tuple[StoredMessage, Sequence[tuple[str, int]]]]) -> None:
        """Messages another node stored and forwarded here (cluster): offered to the devices connected
        here, as if stored here; the others (moved on, or gone) get them from the store on resume.

        A connection that sent the seq already (its catch-up read found it) is skipped.
        """
        routes = self.routes
        sent_seq = self.transport.sent_seq
        for first, targets in groups:
            if len(targets) == 1:
                device_id, seq = targets[0]
                cid = routes.get(device_id)
                if cid is not None and sent_seq(cid) < seq:
                    self._deliver((device_id,), (first if first.seq == seq else replace(first, seq=seq),),
                                  here_only=True)
            else:
                self._deliver_fanout_seqs([d for d, _ in targets], [q for _, q in targets], first,
                                          here_only=True)

    def wake_replayed(self, targets: Sequence[tuple[str, int]], *, here_only: bool = False) -> None:
        """Pushes answered from the store by their idempotency key: make sure each reached its device.

        The first attempt stored the message; if the process that stored it
        stopped before delivering it (a retry is usually why a key comes
        again), nothing else would send it until the device's next catch-up.
        A connection that has not sent that seq yet catches up to it from the
        store (only what is still stored; ``sent_seq`` keeps it from going
        twice). Devices not connected here are woken where they are (cluster).
        """
        routes = self.routes
        away: list[tuple[str, int]] = []
        for device_id, seq in targets:
            cid = routes.get(device_id)
            if cid is None:
                away.append((device_id, seq))
            elif cid not in self.fetching and cid not in self.held:
                sent = self.transport.sent_seq(cid)
                if sent < seq:
                    self._catch_up(cid, device_id, sent, seq)
        if away and not here_only and self.remote_wake is not None:
            self.remote_wake(away)

    # -- storing, then delivering (store part on the pipeline, delivery in its completion) --

    def _flush_advances(self, store: Store, device_ids: Iterable[str]) -> None:
        """Before an append for *device_ids*: their counter advances kept during an outage come first.

        The other devices' advances wait for the server's store tick (bounded steps).
        """
        if self.deferred.advances:
            self.deferred.flush_devices(store, device_ids)

    def _store_batch(self, messages: list[NewMessage]) -> list[StoredMessage | SeqExhausted]:
        """The store part of :meth:`push_batch` (where store work runs)."""
        self._flush_advances(self.store, {m.device_id for m in messages})
        try:
            stored: list[StoredMessage | SeqExhausted] = list(self.store.append_batch(messages))
        except SeqExhausted:
            return self._store_batch_per_device(messages)
        return stored

    def _store_batch_per_device(self, messages: list[NewMessage]) -> list[StoredMessage | SeqExhausted]:
        # The slow path, taken only when a device's counter is exhausted: one
        # transaction per device, so a failure stays that device's own.
        by_device: dict[str, list[int]] = {}
        for i, message in enumerate(messages):
            by_device.setdefault(message.device_id, []).append(i)
        outcomes: list[StoredMessage | SeqExhausted | None] = [None] * len(messages)
        for indices in by_device.values():
            try:
                group = self.store.append_batch([messages[i] for i in indices])
            except (SeqExhausted, IdempotencyConflict) as exc:
                for i in indices:
                    outcomes[i] = exc  # type: ignore[assignment]  # str()-ed into BatchResult.errors
            else:
                for i, stored in zip(indices, group):
                    outcomes[i] = stored
        return [m for m in outcomes if m is not None]

    def _deliver_batch(self, messages: Sequence[NewMessage], outcomes: Sequence[object]) -> None:
        """The delivery part of :meth:`push_batch` (loop thread): what was stored, not replayed."""
        if all(type(m) is StoredMessage for m in outcomes):
            self._deliver([n.device_id for n in messages], outcomes)  # type: ignore[arg-type]  # all stored
            return
        done = [(n.device_id, m) for n, m in zip(messages, outcomes) if isinstance(m, StoredMessage)
                and type(m) is not ReplayedMessage]
        self._deliver([d for d, _ in done], [m for _, m in done])
        replayed = [(n.device_id, m.seq) for n, m in zip(messages, outcomes)
                    if type(m) is ReplayedMessage and m.priority == PRIORITY_HIGH]
        if replayed:
            self.wake_replayed(replayed)

    def submit_batch(
        self, messages: list[NewMessage] | Callable[[], list[NewMessage]], *, wait: bool | str = True
    ) -> Op[tuple[list[NewMessage], list[StoredMessage | SeqExhausted]]]:
        """Queue :meth:`push_batch`'s work; the op's result is ``(messages, outcomes)``.

        *messages* may be a function making them (called where store work
        runs, so message ids it takes follow store order).
        """
        def run(store: Store) -> tuple[list[NewMessage], list[StoredMessage | SeqExhausted]]:
            batch = messages() if callable(messages) else messages
            return batch, self._store_batch(batch)

        def done(result: tuple[list[NewMessage], list[object]] | None, error: BaseException | None) -> None:
            if result is not None:
                self._deliver_batch(*result)

        return self.pipeline.submit(run, done=done if self.has_transport else None, wait=wait)

    def push_batch(self, messages: list[NewMessage]) -> list[StoredMessage | SeqExhausted]:
        """Store *messages* in one store call (one transaction), then send what may go now.

        A device may appear several times: its messages get consecutive seqs
        in the order given and go out in that order, exactly as if each had
        been pushed alone with :meth:`push` (priority, collapse and catching
        up included), but with one transaction, each device's messages queued back to
        back on its connection (the loop writes them with one writev per turn).
        Returns the stored messages in the order given. When one device's
        counter is exhausted the batch is stored again one device at a time,
        so only that device's items fail: they come back as the
        :class:`SeqExhausted` error instead of a message. Items repeating an
        idempotency key come back as the store's :class:`ReplayedMessage` and
        are not sent again; a conflicting key raises
        :class:`IdempotencyConflict` and nothing is stored. With a threaded
        pipeline it returns once the write is durable; sending follows on the loop.
        """
        return self.submit_batch(messages).wait()[1]

    def submit_push(
        self,
        device_id: str,
        payload: bytes,
        *,
        priority: int = PRIORITY_HIGH,
        expiry: int = 0,
        collapse_key: str = "",
        topic: str = "",
        message_id: int | None = None,
        idempotency_key: str | None = None,
        wait: bool | str = True,
    ) -> Op[StoredMessage]:
        """Queue :meth:`push`'s work (checked here, in the caller's thread); the op's result is the message.

        Appends queued together, from any threads, share one store call and
        one commit (the pipeline merges them).
        """
        device_id = check_device_id(device_id)
        # -1 (checked as 0): the pipeline's writer gives it an id, in store order.
        fields = check_message(-1 if message_id is None else message_id, payload, priority, expiry,
                               collapse_key, topic, idempotency_key, unset_id=message_id is None)
        done = None
        if self.has_transport:
            def done(message: StoredMessage | None, error: BaseException | None) -> None:
                if message is None:
                    return
                if type(message) is ReplayedMessage:
                    if message.priority == PRIORITY_HIGH:  # a low one waits for the device's next frame
                        self.wake_replayed(((device_id, message.seq),))
                else:
                    self._deliver((device_id,), (message,))

        return self.pipeline.submit(message=(device_id, fields), done=done, wait=wait)

    def push(
        self,
        device_id: str,
        payload: bytes,
        *,
        priority: int = PRIORITY_HIGH,
        expiry: int = 0,
        collapse_key: str = "",
        topic: str = "",
        message_id: int | None = None,
        idempotency_key: str | None = None,
    ) -> StoredMessage:
        """Store a message for *device_id* and send it if the device is here and it may go now.

        The delivery pass is :meth:`push_batch`'s; the store call is one
        message's append (merged with others queued at the same time). A
        repeated *idempotency_key* returns the store's :class:`ReplayedMessage`
        and sends nothing.
        """
        return self.submit_push(
            device_id, payload, priority=priority, expiry=expiry, collapse_key=collapse_key,
            topic=topic, message_id=message_id, idempotency_key=idempotency_key,
        ).wait()

    def submit_many(
        self,
        device_ids: Iterable[str] | Callable[[Store], Iterable[str]],
        payload: bytes,
        *,
        priority: int = PRIORITY_HIGH,
        expiry: int = 0,
        collapse_key: str = "",
        topic: str = "",
        message_id: int | None = None,
        wait: bool | str = True,
    ) -> Op[FanOut]:
        """Queue :meth:`push_many`'s work; *device_ids* may be ``fn(store)`` (e.g. a topic's subscribers)."""
        fields: dict[str, Any] = dict(
            payload=payload, priority=priority, expiry=expiry, collapse_key=collapse_key, topic=topic,
        )
        reached: list[tuple[list[str], list[StoredMessage]]] = []

        def run(store: Store) -> FanOut:
            devices = list(dict.fromkeys(device_ids(store) if callable(device_ids) else device_ids))
            if not devices:
                return FanOut(0)
            fields["message_id"] = self.message_ids.next() if message_id is None else message_id
            fanout, devices, stored = self._store_many(store, devices, fields)
            reached[:] = [(devices, stored)]  # a group run again after an outage keeps its last try
            return fanout

        def done(result: FanOut | None, error: BaseException | None) -> None:
            if error is None and reached:
                self._deliver_fanout(*reached.pop())

        return self.pipeline.submit(run, done=done if self.has_transport else None, wait=wait)

    def _store_many(self, store: Store, devices: list[str], fields: dict[str, Any]
                    ) -> tuple[FanOut, list[str], list[StoredMessage]]:
        """Store one message for distinct *devices* (where store work runs): the devices it was
        stored for and their messages; an exhausted counter fails only its own device."""
        failed: dict[str, str] = {}
        self._flush_advances(store, devices)
        try:
            stored = store.append_many(devices, **fields)
        except SeqExhausted:
            # The slow path: one transaction per device, so the failure stays its own.
            stored = []
            ok = []
            for device_id in devices:
                try:
                    stored += store.append_many((device_id,), **fields)
                except SeqExhausted as exc:
                    failed[device_id] = str(exc)
                else:
                    ok.append(device_id)
            devices = ok
        return FanOut(len(stored), failed), devices, stored

    def submit_topic(
        self,
        topic: str,
        payload: bytes,
        *,
        priority: int = PRIORITY_HIGH,
        expiry: int = 0,
        collapse_key: str = "",
        wait: bool | str = True,
    ) -> Op[FanOut]:
        """Queue a publish: one message for every subscriber of *topic* (``Store.append_topic``).

        The store is asked only for the seqs of the devices connected here
        (the routes, read where the store work runs): a device that connects
        meanwhile catches up from the store on its own (its catch-up read is
        submitted after it is routed, so after this write). While counter
        advances are kept from an outage, or when a subscriber's counter is
        exhausted, the subscribers are listed and :meth:`submit_many`'s path
        stores it.
        """
        routes = self.routes
        fields: dict[str, Any] = dict(payload=payload, priority=priority, expiry=expiry, collapse_key=collapse_key)
        reached: list[tuple[list[str], list[int], StoredMessage, list[StoredMessage] | None]] = []

        def run(store: Store) -> FanOut:
            message_id = self.message_ids.next()
            if not self.deferred.advances:
                try:
                    # In a cluster every subscriber's seq is kept: the others may be on other nodes.
                    count, devices, seqs = store.append_topic(
                        topic, message_id=message_id, keep=None if self.remote else routes.__contains__, **fields)
                except SeqExhausted:
                    pass
                else:
                    reached[:] = []
                    if count:
                        first = StoredMessage(0, message_id, payload, priority, expiry, collapse_key, topic,
                                              time.time())
                        reached[:] = [(devices, seqs, first, None)]
                    return FanOut(count)
            # The per-device path: kept advances first, one device at a time if a counter is exhausted.
            listing = sorted(store.subscribers(topic))
            if not listing:
                return FanOut(0)
            fanout, stored_for, stored = self._store_many(
                store, listing, dict(fields, topic=topic, message_id=message_id))
            reached[:] = [(stored_for, [m.seq for m in stored], stored[0], stored)] if stored else []
            return fanout

        def done(result: FanOut | None, error: BaseException | None) -> None:
            if error is None and reached:
                self._deliver_fanout_seqs(*reached.pop())

        return self.pipeline.submit(run, done=done if self.has_transport else None, wait=wait)

    def push_many(
        self,
        device_ids: Iterable[str],
        payload: bytes,
        *,
        priority: int = PRIORITY_HIGH,
        expiry: int = 0,
        collapse_key: str = "",
        topic: str = "",
        message_id: int | None = None,
    ) -> FanOut:
        """Store one message (one message id) for each device, in one store call; send to those here.

        Returns how many devices it was stored for. A device whose counter is
        exhausted does not fail the others: the message is then stored one
        device at a time and that device is listed in ``FanOut.failed``.
        """
        devices = list(dict.fromkeys(device_ids))
        if not devices:
            return FanOut(0)
        return self.submit_many(
            devices, payload, priority=priority, expiry=expiry, collapse_key=collapse_key,
            topic=topic, message_id=message_id,
        ).wait()

    def broadcast_ephemeral(
        self,
        payload: bytes,
        *,
        priority: int = PRIORITY_HIGH,
        expiry: int = 0,
        collapse_key: str = "",
        topic: str = "",
        message_id: int | None = None,
    ) -> int:
        """Send one unstored PUSH (seq 0) to every connected device; returns how many."""
        cids = list(self.routes.values())
        if not cids:
            return 0
        if message_id is None:
            message_id = self.message_ids.next()
        data = _encode_push(0, message_id, payload, priority, expiry, collapse_key, topic)
        self.transport.send_many(cids, data)
        return len(cids)

    # -- frames from devices ----------------------------------------------------

    def awake(self, cids: Iterable[int]) -> None:
        """These connections showed activity: send the low priority messages waiting for them."""
        device_of = self.transport.label
        fetching = self.fetching
        held = self.held
        sent_seq = self.transport.sent_seq
        for cid in cids:
            device_id = device_of(cid)
            if device_id is None or cid in fetching or cid in held:
                continue
            self._catch_up(cid, device_id, sent_seq(cid))  # one page read: nothing waits, nothing sent

    def hold(self, cids: Iterable[int]) -> None:
        """These connections' output went over the high watermark: only store their new messages."""
        device_of = self.transport.label
        for cid in cids:
            if device_of(cid) is not None:
                self.held.add(cid)

    def release(self, cids: Iterable[int]) -> None:
        """These connections' output drained to the low watermark: send what waits (inline, or NOTIFY).

        A connection fetching a backlog gets nothing here: its next FETCH asks.
        """
        held = self.held
        released = [cid for cid in cids if cid in held]
        for cid in released:
            held.discard(cid)
        if released:
            self.awake(released)

    def ack(self, acks: dict[int, int]) -> None:
        """Cumulative ACKs of one loop turn, ``{cid: highest seq acked}``: trim the store.

        An ACK is never taken beyond what was sent on the connection, so a
        confused device cannot delete messages it never received. While the
        store cannot write the acks are kept (:attr:`deferred`), not lost.
        """
        device_of = self.transport.label
        sent_seq = self.transport.sent_seq
        trims = []
        for cid, seq in acks.items():
            device_id = device_of(cid)
            if device_id is None:
                continue
            seq = min(seq, sent_seq(cid))
            if seq > 0:
                trims.append((device_id, seq))
        if trims:
            self.pipeline.submit(lambda store: self._store_acks(trims), urgent=True)

    def _store_acks(self, trims: list[tuple[str, int]]) -> None:
        """The store part of :meth:`ack` (where store work runs): one call for the whole turn."""
        try:
            self.store.ack_many(trims)
        except StoreUnavailable:
            deferred = self.deferred
            for device_id, seq in trims:
                deferred.ack(device_id, seq)

    def flush_deferred(self) -> bool:
        """One bounded step of the writes kept during a store outage (advances, then acks).

        Called by the server's store tick once the store heals (an append
        first makes the advances of its own devices). Returns True when more
        remain (call again on a later turn).
        Raises :class:`~pushcore.store.StoreUnavailable`, keeping what is left,
        while the store still cannot write.
        """
        return self.deferred.flush(self.store)

    def fetch(self, cid: int, after_seq: int, max_count: int) -> bool:
        """Answer FETCH: one page after *after_seq*, then NOTIFY.

        A page is up to *max_count* messages (at most ``page_max``) and at
        most ``page_bytes`` of frames (always at least one message).

        The closing NOTIFY carries the store's latest seq when more is
        waiting, else the last seq this answer covers (the device then has
        everything and new messages stream again).

        FETCHes of one connection are answered in order, one page read at a
        time. Returns False, answering nothing, when ``MAX_WAITING_FETCHES``
        already wait behind the one being read: the caller closes the
        connection (``SLOW_CONSUMER``).
        """
        device_id = self.device_of(cid)
        if device_id is None:
            return True
        count = min(max_count, self.page_max)
        waiting = self._fetches.get(cid)
        if waiting is not None:
            if len(waiting) >= MAX_WAITING_FETCHES:
                return False
            waiting.append((after_seq, count))
            return True
        self._fetches[cid] = deque()
        self._read_fetch(cid, device_id, after_seq, count)
        return True

    def _read_fetch(self, cid: int, device_id: str, after_seq: int, count: int) -> None:
        def read(store: Store) -> tuple[list[StoredMessage], bool, int]:
            if count <= 0:
                return [], False, store.last_seq(device_id)
            messages, more = self._page(device_id, after_seq, count)
            return messages, more, store.last_seq(device_id) if more else 0

        def done(result: tuple[list[StoredMessage], bool, int] | None, error: BaseException | None) -> None:
            waiting = self._fetches.get(cid)
            if waiting is None or self.transport.label(cid) != device_id:
                return  # the connection is gone or someone else's now (detach forgot its FETCHes)
            if result is None:  # a read error: this FETCH gets no answer, so the device must not wait
                del self._fetches[cid]
                self._read_failed(cid, error)
                return
            self._answer_fetch(cid, after_seq, count, *result)
            if waiting:
                self._read_fetch(cid, device_id, *waiting.popleft())
            else:
                del self._fetches[cid]

        self.pipeline.submit(read, done=done, read=True, urgent=True)

    def _answer_fetch(self, cid: int, after_seq: int, count: int, messages: list[StoredMessage],
                      more: bool, latest: int) -> None:
        transport = self.transport
        if count <= 0:
            # "Up to 0 messages": none, only the NOTIFY saying what waits. While
            # something waits the device stays in fetch mode (new messages only
            # stored), as after a page with more to come.
            if latest > after_seq:
                self.fetching.add(cid)
            else:
                self.fetching.discard(cid)
            transport.send(cid, _encode_notify(max(latest, after_seq)))
            return
        if messages:
            self._send_messages(cid, messages)  # the sent seq only goes up (a re-fetch of older ones)
            last = messages[-1].seq
        else:
            last = after_seq
        if more:
            self.fetching.add(cid)
            transport.send(cid, _encode_notify(latest))
        else:
            self.fetching.discard(cid)
            transport.send(cid, _encode_notify(last))

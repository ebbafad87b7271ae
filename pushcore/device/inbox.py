"""A device's receive side: drop duplicates by seq, batch cumulative ACKs, fetch after NOTIFY.

Pure bookkeeping with no I/O, so :class:`pushcore.Client` stays a thin layer
over the loop and this logic is unit-tested on its own.

Sequence numbers (docs/PROTOCOL.md, PUSH): every stored message to a device
carries the device's next seq, strictly increasing from 1; the server sends
a device's messages in seq order on a connection, so "seq <= the highest seq
seen" means "already seen". A gap is a message that expired or was collapsed
before delivery, never one still to come. ``seq == 0`` marks an ephemeral
message (a broadcast the server did not store): it is shown, never acked and
never deduplicated.

ACKs are cumulative: one ACK of the highest seq covers every message before
it. The client sends one when :meth:`Inbox.ack_due` says so (after
``ack_every`` new messages, or when its short flush timer fires), not one
per message.

Handled, then acked. :meth:`Inbox.receive` says whether the application
should see a PUSH; the message counts as received (``last_seq``, the ACK)
only once :meth:`Inbox.handled` says the application took it. When the
application failed (:meth:`Inbox.failed`) the inbox is **held**: nothing
after ``last_seq`` is shown or acked on this connection, so the failed
message and everything after it come again, in order, once:

* on the next connection (HELLO says ``last_seq``), or
* on this one, after the client's redelivery delay: :meth:`Inbox.redeliver`
  gives a ``FETCH(last_seq, 0)``, a barrier whose answer is one NOTIFY; the
  server answers it in order after every PUSH it sent before, and stops
  streaming new messages until the device FETCHes (docs/PROTOCOL.md §5a).
  At that NOTIFY the hold ends and the normal NOTIFY → FETCH of
  ``last_seq`` brings the failed message back first. While a page FETCH is
  out the barrier waits for its NOTIFY (two answers could not be told apart).

:meth:`Inbox.accept` is receive and handled in one call (the simulator's
devices, which cannot fail).

Expiry: *now* is the caller's idea of the **server's** clock (the client
computes it from WELCOME's ``server_time``); ``now=0`` means "unknown" and
nothing is dropped for expiry (the server does not send expired messages).
"""
from __future__ import annotations

__all__ = ["Inbox"]


class Inbox:
    """Receive-side state of one device, kept across reconnects.

    ``last_seq`` is the highest seq received and handled (what HELLO sends on
    reconnect, what is acked); ``acked_seq`` the highest seq acknowledged to
    the current connection.
    """

    __slots__ = ("last_seq", "acked_seq", "ack_every", "page_size", "fetching", "duplicates",
                 "expired", "held", "deferred", "_unacked", "_barrier", "_redeliver_due")

    def reset(self, last_seq: int = 0) -> None:
        """Forget what was received: the next HELLO claims *last_seq* (after ``LAST_SEQ_AHEAD``)."""
        self.last_seq = last_seq
        self.acked_seq = last_seq
        self.fetching = False
        self._unacked = 0
        self._release()

    def __init__(self, last_seq: int = 0, *, ack_every: int = 32, page_size: int = 256) -> None:
        if last_seq < 0:
            raise ValueError(f"last_seq must be >= 0, got {last_seq!r}")
        if ack_every < 1:
            raise ValueError(f"ack_every must be >= 1, got {ack_every!r}")
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size!r}")
        self.last_seq = last_seq
        self.acked_seq = last_seq
        self.ack_every = ack_every
        self.page_size = page_size
        self.fetching = False  # a FETCH is out and its closing NOTIFY has not come back
        self.duplicates = 0  # messages dropped because their seq was already seen
        self.expired = 0  # messages dropped because their expiry had passed
        self.held = False  # the application failed a message: nothing after last_seq is shown
        self.deferred = 0  # messages not shown because the inbox was held (they come again)
        self._unacked = 0
        self._barrier = False  # the redelivery FETCH(last_seq, 0) is out
        self._redeliver_due = False  # redeliver() was asked while a page FETCH was out

    # -- connection life ------------------------------------------------------

    def connected(self) -> None:
        """A new connection was welcomed: the server resumes after :attr:`last_seq`.

        ``acked_seq`` is reset to what HELLO told the server, so whatever
        arrives is acked afresh on this connection.
        """
        self.acked_seq = self.last_seq
        self._unacked = 0
        self.fetching = False
        self._release()

    def _release(self) -> None:
        self.held = False
        self._barrier = False
        self._redeliver_due = False

    # -- messages -------------------------------------------------------------

    def receive(self, seq: int, expiry: int = 0, now: float = 0.0) -> bool:
        """A PUSH with *seq* arrived; True when the application should handle it now.

        Then call :meth:`handled` (or :meth:`failed`) with *seq*. False for a
        seq already received (a duplicate), for anything after ``last_seq``
        while the inbox is held (it comes again), and for a message whose
        *expiry* (Unix seconds, 0 = none) is before *now* (the server's
        clock; 0 = unknown, nothing expires): that one counts as received
        and is acked, never shown. ``seq == 0`` (ephemeral) is shown unless
        expired, and needs no :meth:`handled`.
        """
        expired = bool(expiry) and expiry < now
        if seq == 0:
            if expired:
                self.expired += 1
                return False
            return True
        if seq <= self.last_seq:
            self.duplicates += 1
            return False
        if self.held:
            self.deferred += 1
            return False
        if expired:
            self.expired += 1
            self.handled(seq)
            return False
        return True

    def handled(self, seq: int) -> None:
        """The application took the message *seq* (from :meth:`receive`): it may be acked."""
        if seq > self.last_seq:
            self.last_seq = seq
            self._unacked += 1

    def failed(self, seq: int) -> None:
        """The application failed on *seq*: hold until it comes again (see the module doc)."""
        if seq > self.last_seq and not self.held:
            self.held = True
            self._barrier = False
            self._redeliver_due = False

    def redeliver(self) -> tuple[int, int] | None:
        """The redelivery delay passed: ``(after_seq, 0)`` to FETCH now as the barrier, or None.

        None when nothing is held, or while a page FETCH is out (the barrier
        then goes out at that FETCH's NOTIFY: :meth:`on_notify` returns it).
        """
        if not self.held or self._barrier:
            return None
        if self.fetching:
            self._redeliver_due = True
            return None
        self._barrier = True
        return self.last_seq, 0

    def accept(self, seq: int, expiry: int = 0, now: float = 0.0) -> bool:
        """:meth:`receive` and :meth:`handled` in one: True when the application should see it.

        For a receiver whose application cannot fail (the simulator). A
        seq already seen is a duplicate (False). A message whose *expiry*
        (Unix seconds, 0 = none) is before *now* is counted and acked but
        not shown (False). ``seq == 0`` (ephemeral) is shown unless expired.
        """
        # receive() and handled() inlined: the simulator calls this once per message
        if seq == 0:
            if expiry and expiry < now:
                self.expired += 1
                return False
            return True
        if seq <= self.last_seq:
            self.duplicates += 1
            return False
        if self.held:
            self.deferred += 1
            return False
        self.last_seq = seq
        self._unacked += 1
        if expiry and expiry < now:
            self.expired += 1
            return False
        return True

    @property
    def unacked(self) -> int:
        """New messages received since the last ACK was taken."""
        return self._unacked

    def ack_due(self) -> bool:
        """True when enough messages wait for an ACK that it should go now."""
        return self._unacked >= self.ack_every

    def take_ack(self) -> int | None:
        """The seq to ACK now (cumulative), or None when nothing new was received."""
        if self.last_seq <= self.acked_seq:
            self._unacked = 0
            return None
        self.acked_seq = self.last_seq
        self._unacked = 0
        return self.last_seq

    # -- backlog --------------------------------------------------------------

    def on_notify(self, latest_seq: int) -> tuple[int, int] | None:
        """A NOTIFY arrived; returns ``(after_seq, max_count)`` to FETCH, or None.

        The server ends every answer to a FETCH with a NOTIFY, so a NOTIFY
        also means "the FETCH in flight is answered". The next page is
        fetched while ``latest_seq`` is beyond what was received. While the
        inbox is held nothing is fetched, except the redelivery barrier
        (:meth:`redeliver`) once due; the NOTIFY answering the barrier ends
        the hold and the failed message is fetched again.
        """
        self.fetching = False
        if self.held:
            if self._barrier:
                self._release()
            elif self._redeliver_due:
                self._redeliver_due = False
                self._barrier = True
                return self.last_seq, 0
            else:
                return None
        if latest_seq <= self.last_seq:
            return None
        self.fetching = True
        return self.last_seq, self.page_size

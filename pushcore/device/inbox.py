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
"""
from __future__ import annotations

__all__ = ["Inbox"]


class Inbox:
    """Receive-side state of one device, kept across reconnects.

    ``last_seq`` is the highest seq received (what HELLO sends on reconnect);
    ``acked_seq`` the highest seq acknowledged to the current connection.
    """

    __slots__ = ("last_seq", "acked_seq", "ack_every", "page_size", "fetching", "duplicates",
                 "expired", "_unacked")

    def reset(self, last_seq: int = 0) -> None:
        """Forget what was received: the next HELLO claims *last_seq* (after ``LAST_SEQ_AHEAD``)."""
        self.last_seq = last_seq
        self.acked_seq = last_seq
        self.fetching = False
        self._unacked = 0

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
        self._unacked = 0

    # -- connection life ------------------------------------------------------

    def connected(self) -> None:
        """A new connection was welcomed: the server resumes after :attr:`last_seq`.

        ``acked_seq`` is reset to what HELLO told the server, so whatever
        arrives is acked afresh on this connection.
        """
        self.acked_seq = self.last_seq
        self._unacked = 0
        self.fetching = False

    # -- messages -------------------------------------------------------------

    def accept(self, seq: int, expiry: int = 0, now: float = 0.0) -> bool:
        """Record a PUSH with *seq*; True when the application should see it.

        A seq already seen is a duplicate (False). A message whose *expiry*
        (Unix seconds, 0 = none) is before *now* is counted and acked but
        not shown (False). ``seq == 0`` (ephemeral) is shown unless expired.
        """
        if seq == 0:
            if expiry and expiry < now:
                self.expired += 1
                return False
            return True
        if seq <= self.last_seq:
            self.duplicates += 1
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
        fetched while ``latest_seq`` is beyond what was received.
        """
        self.fetching = False
        if latest_seq <= self.last_seq:
            return None
        self.fetching = True
        return self.last_seq, self.page_size

"""The client's receive-side bookkeeping: dedupe by seq, batched cumulative ACK, fetch pages."""
from __future__ import annotations

import pytest

from pushcore.device.inbox import Inbox


def test_each_seq_is_shown_once_and_old_ones_dropped():
    inbox = Inbox()
    shown = [seq for seq in (1, 2, 2, 3, 1, 5, 4, 5, 6) if inbox.accept(seq)]
    assert shown == [1, 2, 3, 5, 6]  # 4 came after 5: a gap is never filled later
    assert inbox.duplicates == 4
    assert inbox.last_seq == 6


def test_resumes_from_a_given_last_seq():
    inbox = Inbox(last_seq=10)
    assert not inbox.accept(10)
    assert inbox.accept(11)
    assert inbox.take_ack() == 11


def test_cumulative_ack_is_batched():
    inbox = Inbox(ack_every=3)
    assert inbox.take_ack() is None
    inbox.accept(1)
    inbox.accept(2)
    assert not inbox.ack_due()
    inbox.accept(3)
    assert inbox.ack_due()
    assert inbox.take_ack() == 3  # one ACK covers 1..3
    assert inbox.take_ack() is None
    inbox.accept(3)  # a duplicate does not make an ACK due
    assert inbox.take_ack() is None


def test_expired_messages_are_acked_but_not_shown():
    inbox = Inbox()
    assert not inbox.accept(1, expiry=100, now=200.0)
    assert inbox.accept(2, expiry=300, now=200.0)
    assert inbox.accept(3, expiry=0, now=200.0)
    assert inbox.expired == 1
    assert inbox.take_ack() == 3


def test_ephemeral_messages_are_shown_every_time_and_never_acked():
    inbox = Inbox(last_seq=5)
    assert inbox.accept(0)
    assert inbox.accept(0)
    assert inbox.last_seq == 5
    assert inbox.take_ack() is None
    assert not inbox.accept(0, expiry=1, now=2.0)


def test_reconnect_acks_afresh():
    inbox = Inbox()
    inbox.accept(1)
    inbox.accept(2)
    # connection lost before the ACK went out; HELLO will say last_seq=2
    inbox.connected()
    assert inbox.take_ack() is None  # the server trims up to HELLO's last_seq itself
    inbox.accept(3)
    assert inbox.take_ack() == 3


def test_fetch_pages_until_notify_says_nothing_is_left():
    inbox = Inbox(last_seq=4, page_size=10)
    assert inbox.on_notify(100) == (4, 10)
    assert inbox.fetching
    for seq in range(5, 15):
        inbox.accept(seq)
    assert inbox.on_notify(100) == (14, 10)
    for seq in range(15, 101):
        inbox.accept(seq)
    assert inbox.on_notify(100) is None
    assert not inbox.fetching


def test_notify_for_what_was_already_received_fetches_nothing():
    inbox = Inbox(last_seq=7)
    assert inbox.on_notify(7) is None
    assert inbox.on_notify(3) is None


@pytest.mark.parametrize("kwargs", [{"last_seq": -1}, {"ack_every": 0}, {"page_size": 0}])
def test_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        Inbox(**kwargs)

"""The client's receive-side bookkeeping: dedupe by seq, batched cumulative ACK, fetch pages."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


# -- handled, then acked (issue 10 item 4) -------------------------------------


def test_a_message_counts_as_received_only_once_handled():
    inbox = Inbox()
    assert inbox.receive(1)
    assert inbox.last_seq == 0 and inbox.take_ack() is None  # not handled yet: nothing to ack
    inbox.handled(1)
    assert inbox.last_seq == 1 and inbox.take_ack() == 1


def test_a_failed_message_holds_everything_after_it_until_redelivered():
    inbox = Inbox(page_size=10)
    assert inbox.receive(1)
    inbox.handled(1)
    assert inbox.receive(2)
    inbox.failed(2)
    assert inbox.held
    assert not inbox.receive(3) and not inbox.receive(4)  # later ones wait for 2
    assert inbox.deferred == 2 and inbox.duplicates == 0
    assert inbox.receive(0)  # ephemeral messages are outside the sequence: still shown
    assert inbox.take_ack() == 1  # the ACK stops before the failed seq
    assert inbox.on_notify(4) is None  # no FETCH before the delay
    assert inbox.redeliver() == (1, 0)  # the barrier: FETCH(last_seq, 0)
    assert inbox.redeliver() is None  # once
    assert not inbox.receive(3)  # sent before the barrier's answer: still held
    assert inbox.on_notify(4) == (1, 10)  # the barrier's NOTIFY: fetch again from the failed one
    assert not inbox.held
    for seq in (2, 3, 4):
        assert inbox.receive(seq)
        inbox.handled(seq)
    assert inbox.take_ack() == 4


def test_the_barrier_waits_for_a_page_fetch_in_flight():
    inbox = Inbox(page_size=10)
    assert inbox.on_notify(30) == (0, 10)  # a page FETCH is out
    assert inbox.receive(1)
    inbox.failed(1)
    assert inbox.redeliver() is None  # its NOTIFY could not be told from the barrier's
    assert inbox.on_notify(30) == (0, 0)  # the page's NOTIFY: now the barrier
    assert inbox.held
    assert inbox.on_notify(30) == (0, 10)
    assert not inbox.held


def test_a_new_connection_ends_the_hold():
    inbox = Inbox()
    inbox.receive(1)
    inbox.failed(1)
    inbox.connected()  # HELLO said last_seq 0: the server sends 1 again
    assert not inbox.held and inbox.receive(1)


def test_expiry_unknown_server_time_drops_nothing():
    inbox = Inbox()
    assert inbox.receive(1, expiry=100, now=0.0)  # now=0: the server's clock is unknown
    inbox.handled(1)
    assert not inbox.receive(2, expiry=100, now=200.0)
    assert inbox.last_seq == 2 and inbox.expired == 1  # expired: received and acked, not shown


@given(st.lists(st.tuples(st.integers(0, 20), st.sampled_from([0, 100, 300])), max_size=40))
def test_accept_is_receive_then_handled(pushes):
    one, two = Inbox(), Inbox()
    for seq, expiry in pushes:
        shown = two.receive(seq, expiry, 200.0)
        if shown:
            two.handled(seq)
        assert one.accept(seq, expiry, 200.0) == shown
        assert (one.last_seq, one.unacked, one.duplicates, one.expired) == (
            two.last_seq, two.unacked, two.duplicates, two.expired)

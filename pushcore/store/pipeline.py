"""The store pipeline: store work off the loop thread, group commit, completions in batches.

A :class:`StorePipeline` owns one writer thread for one store. Any thread
submits an operation (:meth:`StorePipeline.submit`) without waiting for it:

* an **append** of one message (already checked on the submitting thread);
  consecutive appends, from any number of threads, are merged into one
  :meth:`~pushcore.store.Store.append_checked` call;
* a **call**, ``fn(store)``, for anything else (acks, page reads, claims,
  subscriptions, purge steps), or a read (``read=True``: no write lock).

Operations arrive in two lanes. The **urgent** lane (``urgent=True``) is
for the work of device frames on the loop (HELLO's claim, catch-up and
FETCH page reads, ACKs, SUBSCRIBE): small, and a device waits on each. The
other lane holds the application's pushes, publishes and housekeeping. The
writer takes urgent work first, but never more than three quarters of a
group while the other lane waits, so a million queued pushes cannot delay
a HELLO by more than one group, and a storm of HELLOs cannot starve the
pushes. Each lane keeps its submission order; between lanes there is no
order (their submitters were concurrent).

The writer takes everything that arrived while it was busy (at most
``max_group`` operations) and runs it as **one transaction**
(:meth:`~pushcore.store.Store.group`: one ``BEGIN IMMEDIATE`` ... ``COMMIT``
on SQLite, however many pushes from however many threads it holds), in the
order submitted. Each operation's outcome is its own: one that raises
(a conflicting idempotency key, an exhausted counter) changes nothing and
the others commit. An outage (the store cannot write) fails the group; the
writer then runs each operation alone, outside a transaction, so reads still
answer and each write raises :class:`~pushcore.store.StoreUnavailable` to
its own caller, as before the pipeline.

Once the commit is durable, the writer hands the completions of the whole
group to the owner's loop in **one** wake-up (the ``schedule`` callable, e.g.
``Loop.call_soon_threadsafe``): each operation's ``done(result, error)``
runs there, in submission order. Then it wakes the submitters that wait
(:meth:`Op.wait`), each on its own lock. So delivery of a message starts only
after its write is durable, and the loop thread never waits for the store.

Without a thread (``threaded=False``, what a bare
:class:`pushcore.gateway.delivery.Delivery` uses) an operation runs at once
on the submitting thread and its ``done`` right after: the same code, no
hand-over.

The interface fits a networked store (Redis): an operation may be a round
trip and a group a pipeline of commands; the submitter only ever sees a
completion.
"""
from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .base import (
    IdempotencyConflict,
    MessageFields,
    Store,
    StoredMessage,
    StoreError,
    StoreUnavailable,
)

__all__ = ["StorePipeline", "Op", "DEFAULT_MAX_GROUP", "PipelineClosed"]

log = logging.getLogger("pushcore.store.pipeline")

T = TypeVar("T")

#: Most operations run in one transaction (bounds a group's time and memory).
DEFAULT_MAX_GROUP = 4096

_allocate_lock = threading.Lock


class PipelineClosed(StoreError):
    """The pipeline was closed: the operation was not submitted."""


class Op(Generic[T]):
    """One submitted operation: its outcome (``result`` / ``error``) once it ran."""

    __slots__ = ("fn", "message", "done", "read", "result", "error", "future", "_waiter", "_released", "_early")

    def __init__(
        self,
        fn: Callable[[Store], T] | None,
        message: tuple[str, MessageFields] | None,
        done: Callable[[Any, BaseException | None], object] | None,
        read: bool,
        wait: bool | str,
    ) -> None:
        self.fn = fn
        self.message = message
        self.done = done
        self.read = read
        self.result: T | None = None
        self.error: BaseException | None = None
        self._waiter: Any = None
        self._released = False
        self._early = wait == "durable"  # wake the waiter at the commit, not after the completion
        #: ``wait="future"``: a Future completed when a waiter would wake (nobody blocks)
        self.future: concurrent.futures.Future[T] | None = (
            concurrent.futures.Future() if wait == "future" else None)
        if wait and wait != "future":
            waiter = _allocate_lock()
            waiter.acquire()
            self._waiter = waiter

    def release(self) -> None:
        """Wake the waiter (once), or complete the future."""
        if not self._released:
            self._released = True
            if self._waiter is not None:
                self._waiter.release()
            future = self.future
            if future is not None:
                if self.error is not None:
                    future.set_exception(self.error)
                else:
                    future.set_result(self.result)  # type: ignore[arg-type]  # set when error is None

    def wait(self, timeout: float | None = None) -> T:
        """Block until the operation ran (its write durable); return its result or raise its error."""
        waiter = self._waiter
        if waiter is not None:
            if not waiter.acquire(True, -1 if timeout is None else timeout):
                raise TimeoutError(f"the store did not answer within {timeout} s")
            waiter.release()
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]  # set when error is None


class StorePipeline:
    """Store operations of one store, run by one writer thread in group commits (module doc).

    *schedule(fn, ops)* hands ``fn(ops)`` to the thread that must run the
    completions (``Loop.call_soon_threadsafe``); None runs them on the
    writer thread. *message_ids* gives the message id of an append submitted
    without one (called on the writer thread, so ids follow store order);
    *before_append(store, device_ids)* runs before the appends of a group,
    with the devices they are for (the gateway makes the counter advances it
    keeps during an outage for those devices there).
    """

    def __init__(
        self,
        store: Store,
        *,
        threaded: bool = True,
        schedule: Callable[..., object] | None = None,
        max_group: int = DEFAULT_MAX_GROUP,
        name: str = "pushcore-store",
    ) -> None:
        if max_group < 1:
            raise ValueError(f"max_group must be >= 1, got {max_group}")
        self.store = store
        self.threaded = threaded
        self.schedule = schedule
        self.max_group = max_group
        self.message_ids: Callable[[], int] | None = None
        self.before_append: Callable[[Store, list[str]], object] | None = None
        self.name = name
        #: groups run (transactions, or runs without one), operations run, and the largest group
        self.groups = 0
        self.ops = 0
        self.largest_group = 0
        self._mutex = threading.Lock()  # guards the queue and the flags below
        self._wake = _allocate_lock()  # released once to wake a sleeping writer
        self._wake.acquire()
        self._sleeping = False
        self._queue: list[Op[Any]] = []
        self._urgent: list[Op[Any]] = []  # the urgent lane (device frames' work), taken first
        self._push_turn = False  # max_group 1: whose turn it is
        self._thread: threading.Thread | None = None
        self._writer_ident: int | None = None
        self._closed = False
        self._in_flight: dict[int, list[Op[Any]]] = {}  # groups handed to the schedule, not completed yet

    def __repr__(self) -> str:
        return f"<StorePipeline {self.store!r} groups={self.groups} ops={self.ops}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def pending(self) -> int:
        """Operations submitted and not yet taken by the writer (both lanes)."""
        return len(self._queue) + len(self._urgent)

    # -- submitting (any thread) --

    def submit(
        self,
        fn: Callable[[Store], T] | None = None,
        *,
        message: tuple[str, MessageFields] | None = None,
        done: Callable[[Any, BaseException | None], object] | None = None,
        read: bool = False,
        wait: bool | str = False,
        urgent: bool = False,
    ) -> Op[T]:
        """Queue ``fn(store)`` (or the append of *message*, a checked ``(device_id, fields)``).

        *done(result, error)* runs once it ran, on the schedule's thread.
        *read*: *fn* only reads (a group of reads takes no write lock).
        *wait*: the caller will :meth:`Op.wait` for it, which returns once
        *done* ran (``True``) or once the write is durable (``"durable"``:
        for a caller on the thread that runs the completions, which must not
        wait for itself); ``"future"``: :attr:`Op.future` is completed when
        *done* ran, and nobody blocks. Never blocks, unless the pipeline has no thread
        (then it runs here, at once).
        """
        op: Op[T] = Op(fn, message, done, read, wait if self.threaded or wait == "future" else False)
        if not self.threaded:
            if self._closed:
                raise PipelineClosed("the store pipeline is closed")
            self._run([op])
            if done is not None:
                self._complete([op])
            else:
                op.release()
            return op
        if self._writer_ident == threading.get_ident():
            # An operation submitting another: run it in place (the writer would wait for itself).
            self._run([op])
            if done is not None:
                self._hand_over([op])
            else:
                op.release()
            return op
        with self._mutex:
            if self._closed:
                raise PipelineClosed("the store pipeline is closed")
            (self._urgent if urgent else self._queue).append(op)
            sleeping = self._sleeping
            self._sleeping = False
            if self._thread is None:
                self._start()
        if sleeping:
            self._wake.release()
        return op

    def call(self, fn: Callable[[Store], T], *, read: bool = False, urgent: bool = False,
             timeout: float | None = None) -> T:
        """Run ``fn(store)`` through the pipeline and wait for it: its result, or its error raised."""
        return self.submit(fn, read=read, wait=True, urgent=urgent).wait(timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Run what is queued, then stop the writer. Later submits raise :class:`PipelineClosed`."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            sleeping = self._sleeping
            self._sleeping = False
            thread = self._thread
        if sleeping:
            self._wake.release()
        if thread is not None and thread.ident != threading.get_ident():
            thread.join(timeout)
        # Completions handed to a loop that will not run them any more: wake their waiters
        # (their writes are durable; only the live delivery is lost, as on any stop).
        for ops in list(self._in_flight.values()):
            for op in ops:
                op.release()
        self._in_flight.clear()

    # -- the writer --

    def _start(self) -> None:
        thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread = thread
        thread.start()

    def _main(self) -> None:
        self._writer_ident = threading.get_ident()
        mutex = self._mutex
        while True:
            with mutex:
                ops = self._take()
                if not ops:
                    if self._closed:
                        return  # closed, and everything ran
                    self._sleeping = True
            if not ops:
                self._wake.acquire()  # until a submit (or close) releases it
                continue
            try:
                self._run(ops)
            except BaseException as exc:  # never leave a submitter waiting
                log.exception("pushcore store pipeline: a group failed")
                for op in ops:
                    if op.error is None and op.result is None:
                        op.error = exc
            completions = [op for op in ops if op.done is not None]
            if completions:
                self._hand_over(completions)  # their waiters are woken once the completion ran
            for op in ops:
                if op.done is None or op._early:
                    op.release()

    def _take(self) -> list[Op[Any]]:
        """The next group (mutex held): urgent work first, at most 3/4 of it while pushes wait."""
        urgent, queue = self._urgent, self._queue
        room = self.max_group
        if urgent:
            if not queue:
                share = room
            elif room >= 2:
                share = max(1, min(room * 3 // 4, room - 1))  # always room for one push
            else:  # groups of one: urgent and pushes take turns
                self._push_turn = not self._push_turn
                share = 0 if self._push_turn else 1
            take = min(len(urgent), share)
            if take == len(urgent):
                ops, self._urgent = urgent, []
            elif take:
                ops, self._urgent = urgent[:take], urgent[take:]
            else:
                ops = []
            room -= take
        else:
            ops = []
        if queue and room:
            if len(queue) <= room:
                if ops:
                    ops += queue
                else:
                    ops = queue
                self._queue = []
            else:
                ops += queue[:room]
                self._queue = queue[room:]
        return ops

    def _hand_over(self, ops: list[Op[Any]]) -> None:
        """One wake-up of the completions' thread for a whole group (they run in order there)."""
        schedule = self.schedule
        if schedule is None:
            self._complete(ops)
            return
        key = id(ops)
        self._in_flight[key] = ops
        try:
            schedule(self._complete, ops)
        except Exception as exc:  # the loop is closed: nothing is left to complete on it
            log.debug("pushcore store pipeline: %d completion(s) dropped: %s", len(ops), exc)
            self._in_flight.pop(key, None)
            for op in ops:
                op.release()

    def _complete(self, ops: list[Op[Any]]) -> None:
        """Run a group's completions in order (the schedule's thread), then wake their waiters.

        A waiter wakes after its completion ran, so when ``push()`` returns
        its PUSH is queued on the connection, as before the pipeline.
        """
        self._in_flight.pop(id(ops), None)
        for op in ops:
            try:
                op.done(op.result, op.error)  # type: ignore[misc]  # only ops with done are here
            except Exception:
                log.exception("pushcore store pipeline: a completion failed")
            op.release()

    def _run(self, ops: list[Op[Any]]) -> None:
        """Run *ops* in order: one group (transaction) when one of them writes, else one by one."""
        store = self.store
        self.groups += 1
        self.ops += len(ops)
        if len(ops) > self.largest_group:
            self.largest_group = len(ops)
        if len(ops) == 1 or not self.threaded or all(op.read for op in ops):
            # Alone, the store's own call is already one transaction: no group needed.
            self._execute(ops)
            return
        if all(op.message is not None for op in ops):
            # Only appends (many push() calls): one store call is one transaction already,
            # and it is all or nothing, so it needs no savepoint (each alone if it fails).
            self._append(ops)
            return
        try:
            with store.group():
                self._execute(ops)
        except StoreUnavailable:
            # The store cannot write (locked by another process, disk full, ...): run each
            # alone, outside a transaction, so reads answer and each write fails on its own.
            self._execute(ops)
        except StoreError as exc:  # closed under us
            for op in ops:
                op.result, op.error = None, exc

    def _execute(self, ops: list[Op[Any]]) -> None:
        store = self.store
        run: list[Op[Any]] = []
        for op in ops:
            if op.message is not None:
                run.append(op)
                continue
            if run:
                self._append(run)
                run = []
            fn = op.fn
            assert fn is not None
            try:
                op.result, op.error = fn(store), None
            except Exception as exc:
                op.result, op.error = None, exc
        if run:
            self._append(run)

    def _append(self, run: list[Op[Any]]) -> None:
        """The consecutive appends *run*, as one store call (each alone when that one fails)."""
        store = self.store
        try:
            if self.before_append is not None:
                self.before_append(store, [op.message[0] for op in run if op.message is not None])
            pairs = [self._with_id(op) for op in run]
            stored = store.append_checked(pairs)
        except StoreUnavailable as exc:
            for op in run:
                op.result, op.error = None, exc
            return
        except Exception:
            if len(run) == 1:
                self._append_one(run[0])
                return
            for op in run:
                self._append_one(op)
            return
        for op, message in zip(run, stored):
            op.result, op.error = message, None

    def _append_one(self, op: Op[Any]) -> None:
        try:
            message: StoredMessage = self.store.append_checked([self._with_id(op)])[0]
        except IdempotencyConflict as exc:
            op.result, op.error = None, exc.at(None)
        except Exception as exc:
            op.result, op.error = None, exc
        else:
            op.result, op.error = message, None

    def _with_id(self, op: Op[Any]) -> tuple[str, MessageFields]:
        message = op.message
        assert message is not None
        device_id, fields = message
        if fields.message_id < 0:  # "give it one": made here, in store order
            ids = self.message_ids
            assert ids is not None, "an append without a message id needs StorePipeline.message_ids"
            fields = MessageFields(ids(), fields.payload, fields.priority, fields.expiry,
                                   fields.collapse_key, fields.topic, fields.idempotency_key)
            op.message = (device_id, fields)
        return device_id, fields
